//! The address pool: one /30 per job (network, gateway, job, broadcast) out of a configurable
//! IPv4 range. A lease is a file created with O_EXCL, so concurrent airlock processes never
//! hand out the same block; teardown removes it; `gc` removes leases whose job is gone.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::NetError;

/// Default pool: a /16 in 10/8 that few networks use. Override with `AIRLOCK_NET_POOL`.
pub const DEFAULT_POOL: &str = "10.213.0.0/16";

/// One job's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The /30's network address.
    pub block: Ipv4Addr,
    /// Host side: the job's gateway, where the egress gateway listens.
    pub gateway: Ipv4Addr,
    /// Job side (`eth0`).
    pub job: Ipv4Addr,
}

impl Lease {
    /// The lease of the /30 starting at `block`.
    pub(crate) fn of_block(block: u32) -> Self {
        Self {
            block: Ipv4Addr::from(block),
            gateway: Ipv4Addr::from(block + 1),
            job: Ipv4Addr::from(block + 2),
        }
    }
}

/// `sweep` leaves leases younger than this alone (see there).
pub const SWEEP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// A pool of /30 blocks; displayed as its CIDR.
#[derive(Debug, Clone)]
pub struct Pool {
    net: airlock_policy::endpoints::Ipv4Net,
    dir: PathBuf,
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.net)
    }
}

impl Pool {
    /// A pool over `cidr` (e.g. `10.213.0.0/16`, at most /29) with leases under `dir`.
    pub fn new(cidr: &str, dir: impl Into<PathBuf>) -> Result<Self, NetError> {
        let bad = || {
            NetError::Config(format!(
                "invalid address pool {cidr:?}: write an IPv4 CIDR of /8 to /29"
            ))
        };
        let net = cidr
            .contains('/')
            .then(|| airlock_policy::endpoints::parse_v4(cidr))
            .flatten()
            .filter(|n| (8..=29).contains(&n.prefix_len()))
            .ok_or_else(bad)?;
        Ok(Self {
            net,
            dir: dir.into(),
        })
    }

    /// Whether `ip` is in the pool (a job's or a gateway's address).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.net.contains(&ip)
    }

    fn blocks(&self) -> u32 {
        1 << (32 - self.net.prefix_len() - 2)
    }

    fn lease_path(&self, l: &Lease) -> PathBuf {
        self.dir.join(l.block.to_string())
    }

    /// Takes a free block for `job_id`. Starts at a position derived from the id so that
    /// concurrent jobs rarely race for the same file.
    pub fn acquire(&self, job_id: &str) -> Result<Lease, NetError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(NetError::io("creating the lease directory", &self.dir))?;
        let n = self.blocks();
        let start = job_id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % n;
        // The lease is written whole to a temporary file and then linked into place: `link`
        // fails if the name exists, and the lease is never seen empty by a concurrent `sweep`.
        let tmp = self
            .dir
            .join(format!(".{job_id}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, job_id).map_err(NetError::io("writing", &tmp))?;
        let mut result = Err(NetError::PoolExhausted(n));
        for i in 0..n {
            let block = u32::from(self.net.network()) + ((start + i) % n) * 4;
            let lease = Lease::of_block(block);
            let path = self.lease_path(&lease);
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    result = Ok(lease);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    result = Err(NetError::io("leasing", &path)(e));
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Returns a lease.
    pub fn release(&self, lease: &Lease) -> Result<(), NetError> {
        let path = self.lease_path(lease);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetError::io("releasing the lease", path)(e)),
        }
    }

    /// The lease held by `job_id`, if any.
    pub fn lease_of(&self, job_id: &str) -> Option<Lease> {
        let rd = std::fs::read_dir(&self.dir).ok()?;
        for e in rd.flatten() {
            if std::fs::read_to_string(e.path()).ok()?.trim() == job_id {
                let block: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                return Some(Lease::of_block(u32::from(block)));
            }
        }
        None
    }

    /// Removes leases whose job `is_live` says is gone; returns how many. Leases younger
    /// than [`SWEEP_MIN_AGE`] are kept: a job leases its address a moment before it records
    /// its state, and a `gc` running then must not hand the address to a second job.
    pub fn sweep(&self, is_live: &dyn Fn(&str) -> bool) -> usize {
        let mut n = 0;
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                // A lease being written (`.JOB.PID.tmp`) whose writer is gone (killed while it
                // leased) is stale at once: only its writer could still link it.
                if name.ends_with(".tmp") && !writer_alive(&name) {
                    let _ = std::fs::remove_file(e.path());
                    continue;
                }
                let young = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age < SWEEP_MIN_AGE);
                if young {
                    continue;
                }
                let stale_tmp = name.ends_with(".tmp");
                let id = std::fs::read_to_string(e.path()).unwrap_or_default();
                if (stale_tmp || !is_live(id.trim())) && std::fs::remove_file(e.path()).is_ok() {
                    n += usize::from(!stale_tmp);
                }
            }
        }
        n
    }
}

/// Whether the process that named the temporary lease file `name` (`.JOB.PID.tmp`) may still
/// run: signal 0 reaches it (a zombie counts as running; the age rule then decides). A name
/// not of that form counts as running.
fn writer_alive(name: &str) -> bool {
    let Some(pid) = name
        .strip_suffix(".tmp")
        .and_then(|n| n.rsplit_once('.'))
        .and_then(|(_, pid)| pid.parse::<i32>().ok())
        .filter(|p| *p > 0)
    else {
        return true;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH)
}

/// The lease directory under a state dir.
pub fn lease_dir(state: &Path) -> PathBuf {
    state.join("net/leases")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_never_collide_under_concurrency() {
        // Removed on drop, a failing assertion included.
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().to_owned();
        let pool = Pool::new("10.213.0.0/26", &dir).expect("pool");
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    (0..4)
                        .map(|i| pool.acquire(&format!("j{t}{i}")).expect("lease"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Lease> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("join"))
            .collect();
        assert_eq!(all.len(), 16);
        all.sort_by_key(|l| u32::from(l.block));
        all.dedup();
        assert_eq!(all.len(), 16, "two jobs got the same block");
        assert!(matches!(
            pool.acquire("one-too-many"),
            Err(NetError::PoolExhausted(16))
        ));
        pool.release(&all[3]).expect("release");
        let again = pool.acquire("again").expect("lease");
        assert_eq!(again, all[3]);
        assert_eq!(pool.lease_of("again"), Some(again));
        assert_eq!(again.gateway, Ipv4Addr::from(u32::from(again.block) + 1));
        // Young leases survive a sweep (their job may be about to record its state)...
        assert_eq!(pool.sweep(&|id| id != "again"), 0);
        // ...old ones of dead jobs do not.
        let old = std::time::SystemTime::now() - 2 * SWEEP_MIN_AGE;
        for e in std::fs::read_dir(&dir).expect("dir").flatten() {
            let f = std::fs::File::options()
                .write(true)
                .open(e.path())
                .expect("open");
            f.set_modified(old).expect("age");
        }
        assert_eq!(pool.sweep(&|id| id != "again"), 1);
        assert_eq!(pool.lease_of("again"), None);
    }

    /// A lease write interrupted by its writer's death leaves `.JOB.PID.tmp`: swept at once
    /// when that process is gone, kept while it runs (it is about to link it).
    #[test]
    fn a_dead_writers_temporary_lease_is_swept_at_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().to_owned();
        let pool = Pool::new("10.213.0.0/28", &dir).expect("pool");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("reap");
        let gone = dir.join(format!(".jdead.{dead}.tmp"));
        let mine = dir.join(format!(".jmine.{}.tmp", std::process::id()));
        std::fs::write(&gone, "jdead").expect("write");
        std::fs::write(&mine, "jmine").expect("write");
        assert_eq!(pool.sweep(&|_| false), 0, "temporary files are not leases");
        assert!(!gone.exists(), "a dead writer's temporary lease stayed");
        assert!(mine.exists(), "a live writer's temporary lease was removed");
    }

    #[test]
    fn a_lease_is_never_visible_without_its_job_id() {
        // Removed on drop, a failing assertion included.
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().to_owned();
        let pool = Pool::new("10.213.0.0/28", &dir).expect("pool");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut empty = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if !name.starts_with('.')
                            && std::fs::read_to_string(e.path()).is_ok_and(|s| s.is_empty())
                        {
                            empty += 1;
                        }
                    }
                }
                empty
            })
        };
        for i in 0..300 {
            let l = pool.acquire(&format!("job{i}")).expect("lease");
            pool.release(&l).expect("release");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(watcher.join().expect("join"), 0, "a lease was seen empty");
    }
}
