//! Warm runners (`airlock serve` with `min_idle`): a runner's sandbox is started before its
//! job exists and waits while other jobs run. It must be exactly as fresh as a cold one: what
//! any job did before, or while it waited, must be invisible to it.
//!
//! The drill starts `warm-waiter` first, in its own sandbox of the group (the way serve
//! starts a warm runner: the same `airlock run`, the same policy), and lets it wait. Then
//! `warm-runner` — the job that came before — leaves everything it can behind: the
//! persistence locations, `/tmp`, `/var/tmp`, `/dev/shm`, its home and workspace, a process
//! detached into its own session that outlives its parent, an abstract Unix socket, a SysV
//! shared-memory segment and message queue. Then the drill wakes the waiter (its `STOP`),
//! which looks for every one of them from inside, and for any process in its sandbox that is
//! not its own: got through if it finds anything. Harmless: every planted file holds only a
//! comment with the marker; the detached process only sleeps and dies with its job.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::Duration;

use super::persistence::expand;
use super::util::Step;
use super::{Attack, AttackResult, Category, PERSISTENCE_PATHS};

/// What every planted thing carries.
pub const WARM_MARKER: &str = "AIRLOCK-DRILL-WARM-RESIDUE";
/// SysV IPC key of the planted segment and queue ("ARLW").
const IPC_KEY: libc::key_t = 0x4152_4c57;
/// Name of the planted abstract socket.
const ABSTRACT: &str = "airlock-drill-warm-residue";
/// Scratch locations a job can write, besides the persistence paths.
const SCRATCH: &[&str] = &[
    "/tmp/airlock-drill-warm",
    "/var/tmp/airlock-drill-warm",
    "/dev/shm/airlock-drill-warm",
    "~/airlock-drill-warm",
];

fn all_paths() -> Vec<String> {
    PERSISTENCE_PATHS
        .iter()
        .chain(SCRATCH)
        .map(|p| expand(p))
        .chain(
            std::env::current_dir()
                .ok()
                .map(|d| d.join("airlock-drill-warm").to_string_lossy().into_owned()),
        )
        .collect()
}

/// `warm-runner`: the job before a warm runner's job, leaving all it can behind.
pub struct WarmRunner;
/// `primed-runner`: the same, for a primed sandbox (made before this job, started after it).
pub struct PrimedRunner;
/// `warm-waiter` (helper): the warm runner; judges what it can see.
pub struct WarmWaiter;

impl Attack for WarmRunner {
    fn id(&self) -> &'static str {
        "warm-runner"
    }
    fn title(&self) -> &'static str {
        "a job leaves files, a detached process, IPC objects and sockets for the warm runner waiting next to it"
    }
    fn category(&self) -> Category {
        Category::Scenario
    }
    fn victim(&self) -> Option<&'static str> {
        Some("warm-waiter")
    }
    fn victim_judges(&self) -> bool {
        true
    }
    fn run(&self) -> AttackResult {
        plant(self.id())
    }
}

impl Attack for PrimedRunner {
    fn id(&self) -> &'static str {
        "primed-runner"
    }
    fn title(&self) -> &'static str {
        "a primed sandbox (serve's prestart) runs nothing before its start, gets its variable only then, and sees nothing of the job before"
    }
    fn category(&self) -> Category {
        Category::Scenario
    }
    fn victim(&self) -> Option<&'static str> {
        Some("warm-waiter")
    }
    fn victim_judges(&self) -> bool {
        true
    }
    fn victim_primed(&self) -> bool {
        true
    }
    fn run(&self) -> AttackResult {
        plant(self.id())
    }
}

/// Plants everything a job can leave behind (`id`: the attack, for its lingering process).
fn plant(id: &str) -> AttackResult {
    {
        if std::env::args().nth(2).as_deref() == Some("--linger") {
            // The detached process: holds its abstract socket and sleeps; dies with the job.
            let _l = abstract_listener();
            std::thread::sleep(Duration::from_secs(120));
            return AttackResult::from_steps(id, &[]);
        }
        let mut planted = Vec::new();
        for p in all_paths() {
            let path = Path::new(&p);
            if let Some(d) = path.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            let r = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "# {WARM_MARKER}"));
            planted.push(Step::failed(
                format!("plant {p}"),
                match r {
                    Ok(()) => "written (in this job's own files)".to_owned(),
                    Err(e) => e.to_string(),
                },
            ));
        }
        // A process in a session of its own, reparented when this one exits.
        let linger = std::env::current_exe().and_then(|exe| {
            let mut c = std::process::Command::new(exe);
            c.args([id, "--linger", WARM_MARKER])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            c.spawn()
        });
        planted.push(Step::failed(
            "detach a lingering process",
            match linger {
                Ok(ch) => format!("pid {}", ch.id()),
                Err(e) => e.to_string(),
            },
        ));
        // SAFETY: plain SysV IPC calls with constant arguments; the objects belong to the
        // job's IPC namespace.
        let shm = unsafe { libc::shmget(IPC_KEY, 4096, libc::IPC_CREAT | 0o666) };
        // SAFETY: as above.
        let msq = unsafe { libc::msgget(IPC_KEY, libc::IPC_CREAT | 0o666) };
        planted.push(Step::failed(
            "SysV shared memory and message queue",
            format!("shmget {shm}, msgget {msq}"),
        ));
        // Give the lingering process time to bind its socket before this job ends.
        std::thread::sleep(Duration::from_millis(300));
        AttackResult::from_steps(id, &planted)
    }
}

fn abstract_addr() -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    std::os::unix::net::SocketAddr::from_abstract_name(ABSTRACT.as_bytes()).ok()
}

fn abstract_listener() -> Option<std::os::unix::net::UnixListener> {
    std::os::unix::net::UnixListener::bind_addr(&abstract_addr()?).ok()
}

/// Every process in this sandbox that is not this one or an ancestor of it, with its command.
fn foreign_processes() -> Vec<String> {
    let me = std::process::id();
    let mut mine = vec![me];
    // Ancestors (the sandbox's init and whatever started us).
    let mut pid = me;
    for _ in 0..16 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        if ppid == 0 {
            break;
        }
        mine.push(ppid);
        pid = ppid;
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if mine.contains(&pid) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push(format!("{pid}: {}", cmd.trim()));
    }
    out
}

/// What of another job is visible from here: files under `paths` holding the marker, any
/// process that is not this one or an ancestor, the planted abstract socket, the SysV
/// objects.
fn residue(paths: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    for p in paths {
        if std::fs::read_to_string(p).is_ok_and(|t| t.contains(WARM_MARKER)) {
            seen.push(format!("file {p}"));
        }
    }
    for p in foreign_processes() {
        seen.push(format!("process {p}"));
    }
    if let Some(a) = abstract_addr() {
        if std::os::unix::net::UnixStream::connect_addr(&a).is_ok() {
            seen.push(format!("abstract socket @{ABSTRACT}"));
        }
    }
    // SAFETY: lookups only (no IPC_CREAT): nothing is created.
    if unsafe { libc::shmget(IPC_KEY, 0, 0) } >= 0 {
        seen.push(format!("SysV shared memory key {IPC_KEY:#x}"));
    }
    // SAFETY: as above.
    if unsafe { libc::msgget(IPC_KEY, 0) } >= 0 {
        seen.push(format!("SysV message queue key {IPC_KEY:#x}"));
    }
    seen
}

impl Attack for WarmWaiter {
    fn id(&self) -> &'static str {
        "warm-waiter"
    }
    fn title(&self) -> &'static str {
        "the warm runner: waits, then looks for anything another job left (run by the drill)"
    }
    fn category(&self) -> Category {
        Category::Scenario
    }
    fn helper_only(&self) -> bool {
        true
    }
    /// `airlock-attack warm-waiter NONCE`: the drill's victim protocol; on `STOP`, looks for
    /// residue. "Succeeded" = it saw something of another job.
    fn run(&self) -> AttackResult {
        let (log, stopped) = match super::sibling_job::victim_until_stopped(self.id()) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let mut steps = vec![Step::failed(
            "woken by the drill after the other job",
            if stopped {
                "yes"
            } else {
                "no: gave up after 300 s"
            },
        )];
        let seen = residue(&all_paths());
        steps.push(if seen.is_empty() {
            Step::failed(
                "anything of another job (files, processes, sockets, IPC)",
                format!(
                    "none; {} location(s) checked, only its own processes (pid {})",
                    all_paths().len(),
                    std::process::id()
                ),
            )
        } else {
            Step::ok(
                "anything of another job (files, processes, sockets, IPC)",
                seen.join(", "),
            )
        });
        super::sibling_job::print_victim_log(&log);
        AttackResult::from_steps(self.id(), &steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waiter's eyes work: a marked file, a process that is not its own and the abstract
    /// socket are each reported (run outside any sandbox, in the test's own namespaces).
    #[test]
    fn residue_is_seen_when_it_is_there() {
        let d = tempfile::tempdir().expect("tmp");
        let clean = d.path().join("clean").to_string_lossy().into_owned();
        let marked = d.path().join("marked").to_string_lossy().into_owned();
        std::fs::write(&clean, "nothing\n").expect("write");
        std::fs::write(&marked, format!("# {WARM_MARKER}\n")).expect("write");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let listener = abstract_listener();
        let seen = residue(&[clean.clone(), marked.clone()]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen.contains(&format!("file {marked}")), "{seen:?}");
        assert!(!seen.iter().any(|s| s.contains(&clean)), "{seen:?}");
        assert!(
            seen.iter()
                .any(|s| s.starts_with(&format!("process {}:", child.id()))),
            "{seen:?}"
        );
        if listener.is_some() {
            assert!(
                seen.iter().any(|s| s.starts_with("abstract socket")),
                "{seen:?}"
            );
        }
    }
}
