//! Reading back and cleaning up job cgroups, on cgroup v1, hybrid and pure v2 layouts.
//!
//! The executors write the limits; airlock reads them back from the kernel before the job's
//! command starts, so a limit that silently did not apply stops the job (fail closed).

use std::path::{Path, PathBuf};

use crate::error::SandboxError;

/// The limits a job's cgroups must show, taken from its OCI spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Pids limit.
    pub pids: Option<i64>,
    /// CFS quota in microseconds per period.
    pub cpu_quota: Option<i64>,
}

impl Expected {
    /// What the spec's `linux.resources` asks for.
    pub fn from_spec(spec: &oci_spec::runtime::Spec) -> Self {
        let r = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        Self {
            memory: r.and_then(|r| r.memory().as_ref()).and_then(|m| m.limit()),
            pids: r.and_then(|r| r.pids().as_ref()).map(|p| p.limit()),
            cpu_quota: r.and_then(|r| r.cpu().as_ref()).and_then(|c| c.quota()),
        }
    }
}

/// The cgroup hierarchies mounted on this host.
#[derive(Debug, Default, Clone)]
pub struct Hierarchies {
    /// v1 hierarchies: (controllers or `name=…`, mountpoint).
    pub v1: Vec<(Vec<String>, PathBuf)>,
    /// The cgroup2 mount, if any (`/sys/fs/cgroup` or, on hybrid hosts, `…/unified`).
    pub v2: Option<PathBuf>,
}

impl Hierarchies {
    /// Reads the mounts of this process's mount namespace.
    pub fn detect() -> Self {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::parse(&info)
    }

    fn parse(info: &str) -> Self {
        let mut h = Self::default();
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mp) = left.split(' ').nth(4) else {
                continue;
            };
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let _source = r.next();
            let opts = r.next().unwrap_or("");
            match fstype {
                "cgroup2" => h.v2 = h.v2.or(Some(PathBuf::from(mp))),
                "cgroup" => {
                    let ctrls = opts
                        .split(',')
                        .filter(|o| {
                            !matches!(*o, "rw" | "ro") && !o.contains('=') || o.starts_with("name=")
                        })
                        .map(str::to_owned)
                        .collect();
                    h.v1.push((ctrls, PathBuf::from(mp)));
                }
                _ => {}
            }
        }
        h
    }

    fn v1_mount(&self, ctrl: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == ctrl))
            .map(|(_, p)| p.as_path())
    }

    /// Every directory that `rel` names in any hierarchy.
    pub fn dirs_of(&self, rel: &str) -> Vec<PathBuf> {
        let rel = rel.trim_start_matches('/');
        self.v1
            .iter()
            .map(|(_, p)| p.join(rel))
            .chain(self.v2.iter().map(|p| p.join(rel)))
            .collect()
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// Where each controller of `pid` lives: (controller, directory).
fn controller_dirs(h: &Hierarchies, pid: i32) -> Vec<(String, PathBuf)> {
    let data = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut out = Vec::new();
    for line in data.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if ctrls.is_empty() {
            if let Some(v2) = &h.v2 {
                let dir = v2.join(rel);
                let enabled = read_trim(&dir.join("cgroup.controllers")).unwrap_or_default();
                for c in enabled.split(' ').filter(|c| !c.is_empty()) {
                    out.push((c.to_owned(), dir.clone()));
                }
            }
        } else {
            for c in ctrls.split(',') {
                if let Some(m) = h.v1_mount(c) {
                    out.push((c.to_owned(), m.join(rel)));
                }
            }
        }
    }
    out
}

/// Reads back the memory, pids and CPU limits of `pid`'s cgroups and fails if any of them is
/// missing or differs from the policy.
pub fn verify_limits(pid: i32, want: &Expected) -> Result<(), SandboxError> {
    let h = Hierarchies::detect();
    let dirs = controller_dirs(&h, pid);
    let dir = |c: &str| dirs.iter().find(|(n, _)| n == c).map(|(_, d)| d.clone());
    let unavailable = |what: &str, reason: String| SandboxError::ProtectionUnavailable {
        protection: format!("cgroup {what} limit"),
        reason,
    };

    // Memory: the kernel rounds the limit down to whole pages.
    if let Some(mem) = want.memory {
        let want_mem = (mem.max(0) as u64) / 4096 * 4096;
        let d = dir("memory").ok_or_else(|| {
            unavailable("memory", "no memory controller for the job's cgroup".into())
        })?;
        let got = read_trim(&d.join("memory.max"))
            .or_else(|| read_trim(&d.join("memory.limit_in_bytes")));
        match got.as_deref().map(str::parse::<u64>) {
            Some(Ok(v)) if v == want_mem => {}
            other => {
                return Err(unavailable(
                    "memory",
                    format!("{} reads {other:?}, expected {want_mem}", d.display()),
                ))
            }
        }
    }

    if let Some(pids) = want.pids {
        let d = dir("pids")
            .ok_or_else(|| unavailable("pids", "no pids controller for the job's cgroup".into()))?;
        match read_trim(&d.join("pids.max"))
            .as_deref()
            .map(str::parse::<u64>)
        {
            Some(Ok(v)) if v as i64 == pids => {}
            other => {
                return Err(unavailable(
                    "pids",
                    format!("{} reads {other:?}, expected {pids}", d.display()),
                ))
            }
        }
    }

    if let Some(want_quota) = want.cpu_quota {
        let d = dir("cpu")
            .ok_or_else(|| unavailable("cpu", "no cpu controller for the job's cgroup".into()))?;
        let quota = read_trim(&d.join("cpu.max"))
            .and_then(|s| s.split(' ').next().map(str::to_owned))
            .or_else(|| read_trim(&d.join("cpu.cfs_quota_us")));
        match quota.as_deref().map(str::parse::<i64>) {
            Some(Ok(v)) if v == want_quota => {}
            other => {
                return Err(unavailable(
                    "cpu",
                    format!(
                        "{} reads quota {other:?}, expected {want_quota}",
                        d.display()
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Creates the cgroup `rel` as a budget that sandboxes below it share: at most `memory`
/// bytes, `pids` processes and `cpu_quota_us` of CPU time per 100 ms for all of them
/// together. The limits are read back: a budget the kernel did not take is an error (fail
/// closed).
pub fn create_budget(
    rel: &str,
    memory: u64,
    pids: u32,
    cpu_quota_us: u64,
) -> Result<(), SandboxError> {
    let h = Hierarchies::detect();
    let rel = rel.trim_start_matches('/');
    let set = |dir: &Path, file: &str, value: String| -> Result<(), SandboxError> {
        std::fs::create_dir_all(dir).map_err(SandboxError::io("creating cgroup", dir))?;
        let p = dir.join(file);
        std::fs::write(&p, &value).map_err(SandboxError::io("writing", &p))?;
        let back = read_trim(&p).unwrap_or_default();
        if back != value {
            return Err(SandboxError::ProtectionUnavailable {
                protection: format!("container budget {file}"),
                reason: format!("wrote {value}, the kernel shows {back:?}"),
            });
        }
        Ok(())
    };
    let period = crate::spec::CPU_PERIOD_US;
    match (h.v1_mount("memory"), h.v1_mount("pids"), &h.v2) {
        (Some(m), Some(p), _) => {
            set(&m.join(rel), "memory.limit_in_bytes", memory.to_string())?;
            set(&p.join(rel), "pids.max", pids.to_string())?;
            let c = h
                .v1_mount("cpu")
                .ok_or_else(|| SandboxError::ProtectionUnavailable {
                    protection: "container budget".into(),
                    reason: "no cpu cgroup controller found".into(),
                })?;
            set(&c.join(rel), "cpu.cfs_period_us", period.to_string())?;
            set(&c.join(rel), "cpu.cfs_quota_us", cpu_quota_us.to_string())?;
        }
        (None, None, Some(v2)) => {
            let dir = v2.join(rel);
            std::fs::create_dir_all(&dir).map_err(SandboxError::io("creating cgroup", &dir))?;
            // Children get the controllers only when the budget hands them down.
            let sc = dir.join("cgroup.subtree_control");
            std::fs::write(&sc, "+memory +pids +cpu").map_err(SandboxError::io("writing", &sc))?;
            set(&dir, "memory.max", memory.to_string())?;
            set(&dir, "pids.max", pids.to_string())?;
            set(&dir, "cpu.max", format!("{cpu_quota_us} {period}"))?;
        }
        _ => {
            return Err(SandboxError::ProtectionUnavailable {
                protection: "container budget".into(),
                reason: "no memory and pids cgroup controllers found".into(),
            })
        }
    }
    Ok(())
}

/// Pids in the cgroup `rel` of any hierarchy.
pub fn procs(rel: &str) -> Vec<i32> {
    let mut out: Vec<i32> = Hierarchies::detect()
        .dirs_of(rel)
        .iter()
        .filter_map(|d| read_trim(&d.join("cgroup.procs")))
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Kills whatever is left in the job's cgroups and removes them. Errors are collected.
pub fn remove(rel: &str, errors: &mut Vec<airlock_audit::TeardownFailure>) {
    let h = Hierarchies::detect();
    for dir in h.dirs_of(rel) {
        if !dir.exists() {
            continue;
        }
        let mut removed = false;
        for attempt in 0..50 {
            if let Some(procs) = read_trim(&dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => {
                    removed = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    removed = true;
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2 + attempt)),
            }
        }
        if !removed {
            errors.push(airlock_audit::TeardownFailure::new(
                airlock_audit::TeardownStep::Cgroup,
                format!("cannot remove cgroup {}", dir.display()),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_layout() {
        let info = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/memory rw shared:14 - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/systemd rw shared:16 - cgroup cgroup rw,xattr,name=systemd";
        let h = Hierarchies::parse(info);
        assert_eq!(h.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            h.v1_mount("memory"),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            h.v1_mount("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            h.v1_mount("name=systemd"),
            Some(Path::new("/sys/fs/cgroup/systemd"))
        );
        assert_eq!(h.dirs_of("/airlock/x").len(), 4);
    }

    #[test]
    fn parses_pure_v2_layout() {
        let info = "25 1 0:22 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate";
        let h = Hierarchies::parse(info);
        assert_eq!(h.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert!(h.v1.is_empty());
    }
}
