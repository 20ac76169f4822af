//! The single-threaded helper: a re-exec of airlock (`airlock __helper …`) that drives one
//! job's executor. Forking from a multi-threaded process is unsafe (another thread may hold
//! a lock the child then waits on forever), and libcontainer forks; so it runs here, in a
//! process that never starts a thread.
//!
//! Steps, in order (docs/sandbox.md lists them with the reasons):
//! 1. die with airlock (PDEATHSIG), become a child subreaper (so runc's init is our child);
//! 2. create the container: namespaces, mounts, cgroup limits, seccomp, capabilities dropped;
//! 3. read the protections back from the kernel — cgroup limits, and where the runtime has
//!    applied them already, `NoNewPrivs`, `Seccomp`, capability sets — and stop if any is off;
//! 4. remove secret values from the bundle's config.json (the runtime has read it);
//! 5. start the command, wait for the init process, delete the container;
//! 6. write the outcome to `result.json` for airlock.

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_policy::ExecutorKind;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, Expected};
use crate::error::SandboxError;
use crate::executor;
use crate::spec;
use crate::start::{self, READY};

/// The hidden subcommand that runs the helper.
pub const SUBCOMMAND: &str = "__helper";

/// What the helper needs; passed on its command line.
#[derive(Debug, Clone)]
pub struct HelperArgs {
    /// The job's directory (the OCI bundle).
    pub job_dir: PathBuf,
    /// The job id (container id).
    pub id: String,
    /// Which executor.
    pub executor: ExecutorKind,
    /// The executor's state root.
    pub executor_root: PathBuf,
    /// Names of environment variables to remove from config.json after create.
    pub scrub: Vec<String>,
    /// A primed sandbox (crate::start): after create and the checks, report [`READY`] on
    /// the control socket and start only when the late environment arrives there.
    pub primed: bool,
}

impl HelperArgs {
    /// The command line that starts the helper from the airlock binary `exe`.
    pub fn command(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        c.arg(SUBCOMMAND)
            .arg("--job-dir")
            .arg(&self.job_dir)
            .arg("--id")
            .arg(&self.id)
            .arg("--executor")
            .arg(self.executor.as_str())
            .arg("--executor-root")
            .arg(&self.executor_root);
        for s in &self.scrub {
            c.arg("--scrub").arg(s);
        }
        if self.primed {
            c.arg("--primed");
        }
        c
    }
}

/// How the job ended, as the helper reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The command exited with this code.
    Exited(i32),
    /// The command was killed by this signal.
    Signaled(i32),
    /// The job could not be run: why, typed (helper and parent are the same binary, so the
    /// file's form never crosses versions).
    Failed(airlock_audit::Failure),
}

/// File names inside the job dir.
pub const RESULT_FILE: &str = "result.json";
/// The init pid, written as soon as the container exists.
pub const INIT_PID_FILE: &str = "init.pid";

/// What airlock writes to the helper's stdin once the job's network namespace exists: the
/// helper is started while the network is still being attached (their start-up overlaps)
/// and creates nothing before it reads this.
pub const GO: &[u8] = b"g";

/// Runs the helper; returns the process exit code.
pub fn main(args: HelperArgs) -> i32 {
    // SAFETY: prctl with these options only changes this process's own attributes.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    if nix::unistd::getppid() == Pid::from_raw(1) {
        // airlock died before PDEATHSIG was armed.
        return 3;
    }
    let Some(control) = go_ahead(args.primed) else {
        // airlock gave up on the job (its network failed, or it was stopped): nothing was
        // created, nothing to report.
        return 4;
    };
    let outcome = match run(&args, control) {
        Ok(o) => o,
        Err(e) => Outcome::Failed(airlock_audit::Failure {
            kind: e.kind(),
            message: airlock_text::ErrorChain(&e).to_string(),
        }),
    };
    let path = args.job_dir.join(RESULT_FILE);
    match serde_json::to_vec(&outcome)
        .map_err(std::io::Error::other)
        .and_then(|d| std::fs::write(&path, d))
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("airlock helper: cannot write {}: {e}", path.display());
            2
        }
    }
}

/// Waits for [`GO`] on stdin (airlock's control socket), then puts `/dev/null` there: the job
/// inherits the helper's standard streams and must not get the socket. A primed helper keeps
/// the socket on a close-on-exec descriptor of its own (`Some(Some(_))`).
fn go_ahead(primed: bool) -> Option<Option<std::fs::File>> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut b = [0u8; 1];
    let go = matches!(std::io::stdin().lock().read(&mut b), Ok(1)) && b[..] == *GO;
    if !go {
        return None;
    }
    let control = if primed {
        // SAFETY: fcntl on fd 0 of this process; the new fd is owned by the File.
        let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just returned by fcntl and nothing else owns it.
        Some(unsafe { std::fs::File::from_raw_fd(fd) })
    } else {
        None
    };
    match std::fs::File::open("/dev/null") {
        // SAFETY: dup2 onto fd 0 of this single-threaded process; the old stdin is closed.
        Ok(null) if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) >= 0 } => {
            Some(control)
        }
        _ => None,
    }
}

/// The pipe of a primed sandbox's late environment, both ends close-on-exec.
fn late_env_pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SandboxError::Io {
        what: "creating",
        path: "the late-environment pipe".into(),
        source: e.into(),
    })
}

/// A primed sandbox waits here: [`READY`] to airlock, then the late environment, which goes
/// down the pipe to the job's init. `Ok(false)`: airlock closed the socket (the sandbox is
/// retired unused).
fn await_start(
    control: &mut std::fs::File,
    pipe_write: std::os::fd::OwnedFd,
) -> Result<bool, SandboxError> {
    use std::io::Write;
    let io = |what: &'static str| {
        move |source: std::io::Error| SandboxError::Io {
            what,
            path: "the helper's control socket".into(),
            source,
        }
    };
    control.write_all(READY).map_err(io("writing"))?;
    let Some(body) = start::read_frame(control).map_err(io("reading"))? else {
        return Ok(false);
    };
    // Checked here too: a malformed frame fails the job in the helper, not in its init.
    let frame = start::encode(&start::decode(&body)?)?;
    let mut w = std::fs::File::from(pipe_write);
    start::write_frame(&mut w, &frame).map_err(io("passing on"))?;
    Ok(true)
}

fn run(args: &HelperArgs, control: Option<std::fs::File>) -> Result<Outcome, SandboxError> {
    let config = args.job_dir.join("config.json");
    let spec = oci_spec::runtime::Spec::load(&config).map_err(|e| SandboxError::Executor {
        executor: "helper",
        message: format!("cannot load {}: {e}", config.display()),
    })?;
    let expected = Expected::from_spec(&spec);
    let protected = crate::spec::protected_paths(&spec, &args.job_dir);
    let pipe = match control {
        Some(_) => Some(late_env_pipe()?),
        None => None,
    };
    let mut ex = executor::make(
        args.executor,
        &args.id,
        args.job_dir.clone(),
        args.executor_root.clone(),
        pipe.as_ref().map(|(r, w)| executor::LateEnvPipe {
            read: std::os::fd::AsRawFd::as_raw_fd(r),
            write: std::os::fd::AsRawFd::as_raw_fd(w),
        }),
    )?;
    let pid = match ex.create() {
        Ok(p) => p,
        Err(e) => {
            let _ = ex.delete();
            return Err(attribute_create_error(e));
        }
    };
    let checked = (|| {
        let pf = args.job_dir.join(INIT_PID_FILE);
        std::fs::write(&pf, pid.to_string()).map_err(SandboxError::io("writing", &pf))?;
        cgroup::verify_limits(pid, &expected)?;
        if ex.protections_in_force_after_create() {
            verify_process(pid)?;
        }
        verify_protected(args.executor, pid, &protected)?;
        // gVisor's /proc is its own: the host's OOM killer sees only the sandbox's processes,
        // whose score nothing inside can reach.
        if args.executor != ExecutorKind::Runsc {
            verify_oom_score_locked(pid)?;
        }
        scrub_secrets(&config, &args.scrub)
    })();
    if let Err(e) = checked {
        let _ = ex.delete();
        return Err(e);
    }
    if let (Some(mut control), Some((read, write))) = (control, pipe) {
        // The init holds its own copies of both ends; ours of the read end is not needed.
        drop(read);
        match await_start(&mut control, write) {
            Ok(true) => {}
            Ok(false) => {
                ex.delete()?;
                return Err(SandboxError::NotStarted);
            }
            Err(e) => {
                let _ = ex.delete();
                return Err(e);
            }
        }
    }
    if let Err(e) = ex.start() {
        let _ = ex.delete();
        return Err(e);
    }
    let outcome = wait_for(pid);
    ex.delete()?;
    Ok(outcome)
}

fn wait_for(pid: i32) -> Outcome {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, code)) => return Outcome::Exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Outcome::Signaled(sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Outcome::Failed(airlock_audit::Failure {
                    kind: airlock_audit::FailureKind::Host,
                    message: format!("waiting for the job's init process: {e}"),
                })
            }
        }
    }
}

/// Control files whose write failing means that limit cannot be applied, and the protection
/// to name. The executors report a refused write with the file's path (libcontainer: "failed
/// to write V to …/pids.max", runc: "write …/pids.max: invalid argument").
const CGROUP_FILES: &[(&str, &str)] = &[
    ("pids.max", "cgroup pids limit"),
    ("memory.max", "cgroup memory limit"),
    ("memory.limit_in_bytes", "cgroup memory limit"),
    ("memory.memsw.limit_in_bytes", "cgroup memory limit"),
    ("memory.swap.max", "cgroup memory limit"),
    ("cpu.max", "cgroup cpu limit"),
    ("cpu.cfs_quota_us", "cgroup cpu limit"),
    ("cpu.cfs_period_us", "cgroup cpu limit"),
];

/// Names the protection behind an executor's failure to create the container, where its
/// message shows which one (a refused cgroup limit); the executor's message is the reason.
pub fn attribute_create_error(e: SandboxError) -> SandboxError {
    let SandboxError::Executor { executor, message } = &e else {
        return e;
    };
    // The file name ends the path: match it whole, so memory.max is not memory.swap.max.
    let names_file = |file: &str| {
        message.match_indices(file).any(|(i, _)| {
            message[..i].ends_with('/')
                && !message[i + file.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        })
    };
    match CGROUP_FILES.iter().find(|(f, _)| names_file(f)) {
        Some((_, protection)) => SandboxError::ProtectionUnavailable {
            protection: (*protection).to_owned(),
            reason: format!("the kernel refused it ({executor}: {message})"),
        },
        None => e,
    }
}

/// Reads back that the entry's program (and any other protected one) is execute-only in the
/// job (crate::protect). The job always has one; none means the spec lost them. gVisor's
/// `/proc/PID/root` of the sandbox is not the job's root, so there it is not checked
/// (docs/sandbox.md).
fn verify_protected(
    executor: ExecutorKind,
    pid: i32,
    protected: &[String],
) -> Result<(), SandboxError> {
    if executor == ExecutorKind::Runsc {
        return Ok(());
    }
    if protected.is_empty() {
        return Err(SandboxError::ProtectionUnavailable {
            protection: crate::protect::PROTECTION.to_owned(),
            reason: "the job's spec protects no program".to_owned(),
        });
    }
    crate::protect::verify(pid, protected)
}

/// Checks that the job's init process runs with `oom_score_adj` [`spec::OOM_SCORE_ADJ`] and
/// that it cannot lower it: its `/proc` is mounted read-only (so no process of the job can
/// open any `/proc/PID/oom_score_adj` for writing, whatever its owner).
pub fn verify_oom_score_locked(pid: i32) -> Result<(), SandboxError> {
    let fail = |reason: String| SandboxError::ProtectionUnavailable {
        protection: "OOM score (the job dies first)".to_owned(),
        reason,
    };
    let p = format!("/proc/{pid}/oom_score_adj");
    let adj = std::fs::read_to_string(&p).map_err(SandboxError::io("reading", &p))?;
    if adj.trim() != spec::OOM_SCORE_ADJ.to_string() {
        return Err(fail(format!(
            "the job's init has oom_score_adj {}, not {}",
            adj.trim(),
            spec::OOM_SCORE_ADJ
        )));
    }
    let p = format!("/proc/{pid}/mountinfo");
    let info = std::fs::read_to_string(&p).map_err(SandboxError::io("reading", &p))?;
    proc_mount_read_only(&info).map_err(fail)
}

/// Whether the last mount on `/proc` in a mountinfo text is a read-only procfs.
pub fn proc_mount_read_only(mountinfo: &str) -> Result<(), String> {
    // Fields: id parent major:minor root MOUNTPOINT OPTIONS [optional…] - FSTYPE …
    let m = mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/proc"))
        .ok_or("the job has no /proc mount")?;
    let f: Vec<&str> = m.split(' ').collect();
    let fstype = f
        .iter()
        .position(|x| *x == "-")
        .and_then(|i| f.get(i + 1))
        .copied()
        .unwrap_or("");
    let opts = f.get(5).copied().unwrap_or("");
    if fstype != "proc" || !opts.split(',').any(|o| o == "ro") {
        return Err(format!(
            "the job's /proc is {fstype} mounted {opts}, not a read-only proc: the job could lower its oom_score_adj"
        ));
    }
    Ok(())
}

/// Reads the protections of a process back from `/proc/PID/status`.
pub fn verify_process(pid: i32) -> Result<(), SandboxError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(SandboxError::io("reading", &path))?;
    verify_status(&status)
}

/// Checks the text of a `/proc/PID/status`: `no_new_privs` set, a seccomp filter (mode 2)
/// installed, every capability set empty. A missing field counts as not in force.
pub fn verify_status(status: &str) -> Result<(), SandboxError> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    let fail = |protection: &str, reason: String| SandboxError::ProtectionUnavailable {
        protection: protection.to_owned(),
        reason,
    };
    if field("NoNewPrivs") != "1" {
        return Err(fail(
            "no_new_privs",
            format!("NoNewPrivs is {:?}", field("NoNewPrivs")),
        ));
    }
    if field("Seccomp") != "2" {
        return Err(fail(
            "seccomp",
            format!(
                "the job's init process has Seccomp {:?} (2 = filter); is libseccomp available?",
                field("Seccomp")
            ),
        ));
    }
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let v = field(cap);
        if u64::from_str_radix(&v, 16) != Ok(0) {
            return Err(fail("capability drop", format!("{cap} is {v}")));
        }
    }
    Ok(())
}

/// Rewrites config.json without the secrets' values. The runtime has parsed it by now; the
/// values then live only in the job's own environment.
fn scrub_secrets(config: &Path, names: &[String]) -> Result<(), SandboxError> {
    if names.is_empty() {
        return Ok(());
    }
    let data = std::fs::read(config).map_err(SandboxError::io("reading", config))?;
    let mut v: serde_json::Value = serde_json::from_slice(&data).map_err(SandboxError::Spec)?;
    if let Some(env) = v
        .get_mut("process")
        .and_then(|p| p.get_mut("env"))
        .and_then(|e| e.as_array_mut())
    {
        env.retain(|e| {
            let name = e.as_str().and_then(|s| s.split_once('=')).map(|(n, _)| n);
            !name.is_some_and(|n| names.iter().any(|s| s == n))
        });
    }
    let out = serde_json::to_vec(&v).map_err(SandboxError::Spec)?;
    let tmp = config.with_extension("json.tmp");
    std::fs::write(&tmp, out).map_err(SandboxError::io("writing", &tmp))?;
    std::fs::rename(&tmp, config).map_err(SandboxError::io("renaming", config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/proc/PID/status` excerpt with the given values.
    fn status(nnp: &str, seccomp: &str, cap_eff: &str) -> String {
        format!(
            "Name:\tsh\nUid:\t1001\t1001\t1001\t1001\nCapInh:\t0000000000000000\n\
             CapPrm:\t0000000000000000\nCapEff:\t{cap_eff}\nCapBnd:\t0000000000000000\n\
             CapAmb:\t0000000000000000\nNoNewPrivs:\t{nnp}\nSeccomp:\t{seccomp}\n\
             Seccomp_filters:\t1\n"
        )
    }

    fn refused(text: &str) -> (String, String) {
        match verify_status(text) {
            Err(SandboxError::ProtectionUnavailable { protection, reason }) => (protection, reason),
            other => panic!("must fail closed, got {other:?}"),
        }
    }

    #[test]
    fn proc_must_be_a_read_only_procfs() {
        let ro = "22 21 0:5 / /proc ro,nosuid,nodev,noexec,relatime - proc proc ro\n";
        let rw = "22 21 0:5 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n";
        let sys = "23 22 0:6 / /proc/sys ro,relatime - proc proc rw\n";
        assert!(proc_mount_read_only(&format!("{ro}{sys}")).is_ok());
        let e = proc_mount_read_only(&format!("{rw}{sys}")).expect_err("rw");
        assert!(e.contains("rw,nosuid"), "{e}");
        // The last mount on /proc is the one the job sees.
        assert!(proc_mount_read_only(&format!("{ro}{rw}")).is_err());
        assert!(proc_mount_read_only(&format!("{rw}{ro}")).is_ok());
        let tmpfs = "22 21 0:5 / /proc ro,relatime - tmpfs tmpfs ro\n";
        assert!(proc_mount_read_only(tmpfs).is_err());
        assert!(proc_mount_read_only(sys).is_err());
    }

    #[test]
    fn a_fully_protected_status_passes() {
        verify_status(&status("1", "2", "0000000000000000")).expect("all protections in force");
    }

    #[test]
    fn a_missing_seccomp_filter_is_refused_by_name() {
        let (p, r) = refused(&status("1", "0", "0000000000000000"));
        assert_eq!(p, "seccomp");
        assert!(r.contains("Seccomp \"0\""), "{r}");
        // Strict mode (1) is not the filter either, nor is a status without the field.
        assert_eq!(refused(&status("1", "1", "0000000000000000")).0, "seccomp");
        let no_field = status("1", "2", "0000000000000000").replace("Seccomp:\t2\n", "");
        assert_eq!(refused(&no_field).0, "seccomp");
    }

    #[test]
    fn a_capability_left_is_refused() {
        let (p, r) = refused(&status("1", "2", "0000000000000400"));
        assert_eq!(p, "capability drop");
        assert!(r.contains("CapEff is 0000000000000400"), "{r}");
        let bnd = status("1", "2", "0000000000000000")
            .replace("CapBnd:\t0000000000000000", "CapBnd:\t000001ffffffffff");
        assert!(refused(&bnd).1.contains("CapBnd"));
    }

    #[test]
    fn a_refused_cgroup_write_names_the_limit() {
        let lc = SandboxError::Executor {
            executor: "libcontainer",
            message: "failed to create container: intermediate process error cgroup error: io \
                      error: failed to write 99999999 to /sys/fs/cgroup/pids/airlock/j1/pids.max: \
                      Invalid argument (os error 22)"
                .into(),
        };
        let s = attribute_create_error(lc).to_string();
        assert!(
            s.contains("cgroup pids limit cannot be applied")
                && s.contains("Invalid argument")
                && s.contains("99999999"),
            "{s}"
        );
        let runc = SandboxError::Executor {
            executor: "runc",
            message:
                "unable to set memory limit: write /sys/fs/cgroup/unified/airlock/j1/memory.max: \
                      invalid argument"
                    .into(),
        };
        assert!(attribute_create_error(runc)
            .to_string()
            .contains("cgroup memory limit cannot be applied"));
        let swap = SandboxError::Executor {
            executor: "runc",
            message: "write /sys/fs/cgroup/x/memory.swap.max: invalid argument".into(),
        };
        assert!(attribute_create_error(swap)
            .to_string()
            .contains("cgroup memory limit"));
        // Anything else stays the executor's error.
        let other = SandboxError::Executor {
            executor: "runc",
            message: "exec format error".into(),
        };
        assert!(matches!(
            attribute_create_error(other),
            SandboxError::Executor { .. }
        ));
    }

    #[test]
    fn no_new_privs_unset_is_refused() {
        assert_eq!(
            refused(&status("0", "2", "0000000000000000")).0,
            "no_new_privs"
        );
    }

    #[test]
    fn an_unprotected_process_fails_verification() {
        // The test process itself has no seccomp filter and (as root) full capabilities, or
        // at least no no_new_privs: the check must refuse it.
        let e = verify_process(std::process::id() as i32).expect_err("must fail closed");
        assert!(
            matches!(e, SandboxError::ProtectionUnavailable { .. }),
            "{e}"
        );
    }

    #[test]
    fn limits_that_are_not_in_force_fail_verification() {
        let want = Expected {
            memory: Some(12_345 * 4096),
            pids: Some(77),
            cpu_quota: Some(12_345),
        };
        let e =
            cgroup::verify_limits(std::process::id() as i32, &want).expect_err("must fail closed");
        let s = e.to_string();
        assert!(
            s.contains("refusing to start the job") && s.contains("limit"),
            "{s}"
        );
    }

    #[test]
    fn scrub_removes_only_the_named_secrets() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"process":{"env":["PATH=/bin","TOKEN=v","TOKENX=keep"]}}"#,
        )
        .expect("w");
        scrub_secrets(&p, &["TOKEN".into()]).expect("scrub");
        let s = std::fs::read_to_string(&p).expect("r");
        assert!(
            !s.contains("TOKEN=v") && s.contains("TOKENX=keep") && s.contains("PATH=/bin"),
            "{s}"
        );
    }
}
