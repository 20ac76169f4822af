//! Starting one sandbox: its root filesystem, bundle and exec listener, and the
//! single-threaded helper that drives the executor. The job engine (crate `airlock-job`)
//! decides when; this module only builds.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::SandboxError;
use crate::helper::{self, HelperArgs};
use crate::plan::JobPlan;
use crate::spec::{self, HostLayout};
use crate::state::{JobState, Paths, ProcRef, Status};
use crate::{cgroup, rootfs};

/// The job network a sandbox joins.
#[derive(Debug, Clone)]
pub struct SandboxNet {
    /// The network namespace file the runtime joins.
    pub ns_file: PathBuf,
    /// The resolver written into the sandbox's `/etc/resolv.conf` (the job's gateway).
    pub resolver: std::net::Ipv4Addr,
}

/// A started helper, waiting for its go-ahead.
pub struct Launched {
    /// The exec listener, when the policy records process events.
    pub watcher: Option<crate::watch::Watcher>,
    /// The helper process; its stdout and stderr carry the job's output.
    pub child: std::process::Child,
    /// The helper's control socket (its stdin): the go-ahead, and for a primed sandbox the
    /// helper's [`crate::start::READY`] and then the late environment.
    pub control: Option<std::os::unix::net::UnixStream>,
}

impl Launched {
    /// Lets the helper create the container (the namespace its spec names exists now). A
    /// helper that never gets it exits without creating anything when its stdin closes. A
    /// primed sandbox's socket stays open for [`Launched::start`].
    pub fn go(&mut self, primed: bool) {
        if let Some(mut c) = self.control.take() {
            if c.write_all(helper::GO).is_ok() && primed {
                self.control = Some(c);
            }
        }
    }

    /// A primed sandbox: waits until its container exists and was checked (`Ok(false)`: the
    /// helper ended first; its result says why).
    pub fn wait_ready(&mut self) -> Result<bool, SandboxError> {
        use std::io::Read;
        let Some(c) = self.control.as_mut() else {
            return Ok(false);
        };
        let mut b = [0u8; 1];
        loop {
            return match c.read(&mut b) {
                Ok(1) if b[..] == *crate::start::READY => Ok(true),
                Ok(_) => Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => Err(SandboxError::Io {
                    what: "reading",
                    path: "the helper's control socket".into(),
                    source,
                }),
            };
        }
    }

    /// A primed sandbox: hands the late environment to the helper, which starts the command
    /// with it. Dropping the socket instead retires the sandbox unused.
    pub fn start(&mut self, env: &[(String, String)]) -> Result<(), SandboxError> {
        let frame = crate::start::encode(env)?;
        let mut c = self.control.take().ok_or(SandboxError::NotStarted)?;
        crate::start::write_frame(&mut c, &frame).map_err(|source| SandboxError::Io {
            what: "writing",
            path: "the helper's control socket".into(),
            source,
        })
    }
}

/// Prepares the rootfs, the exec listener and the bundle, and starts the helper, which waits
/// for [`helper::GO`] on its stdin (see [`Launched::go`]; the job's network may still be
/// attaching meanwhile). `net` is the job's network (its namespace file and the resolver the
/// sandbox uses), `None` for a loopback-only sandbox. Everything it creates is recorded in
/// `state` before it exists, so [`crate::teardown`] (or `gc`) can undo it.
pub fn spawn(
    plan: &JobPlan,
    paths: &Paths,
    helper_exe: &Path,
    state: &mut JobState,
    net: Option<SandboxNet>,
    events: Option<airlock_audit::AuditSender>,
    phase: &dyn Fn(&str),
) -> Result<Launched, SandboxError> {
    let job_dir = paths.job_dir(&plan.id);
    // libcontainer fails late and vaguely without a cgroup hierarchy (e.g. under
    // `ip netns exec`, which mounts a fresh /sys); say so before anything exists.
    let h = cgroup::Hierarchies::detect();
    if h.v1.is_empty() && h.v2.is_none() {
        return Err(SandboxError::CgroupsNotMounted);
    }
    let layout = HostLayout::detect(Path::new("/"));
    rootfs::prepare(
        &job_dir,
        plan,
        &layout,
        &paths.base_cache(),
        net.as_ref().map(|n| n.resolver),
    )?;
    phase("rootfs ready");
    // Process and denied-call events (crate::watch). Without them (a policy choice; runsc
    // cannot deliver them) the deny list is answered in the kernel, unrecorded.
    let watcher = match (plan.process_events, events) {
        (false, _) => None,
        (true, Some(s)) => {
            let record_as = plan.record_as.as_ref().unwrap_or(&plan.id);
            Some(crate::watch::Watcher::start(
                &job_dir,
                record_as.as_str(),
                s,
            )?)
        }
        (true, None) => {
            return Err(SandboxError::Audit(airlock_audit::AuditError::Writer(
                "queue closed".into(),
            )))
        }
    };
    let socket = watcher.as_ref().map(|w| w.socket.as_path());
    write_bundle(
        plan,
        &job_dir,
        &layout,
        net.map(|n| n.ns_file).as_deref(),
        socket,
    )?;
    phase("bundle written");
    state.advance(Status::Creating, paths)?;
    let (child, control) = start_helper(plan, paths, helper_exe)?;
    state.helper = ProcRef::of(child.id() as i32);
    state.save(paths)?;
    Ok(Launched {
        watcher,
        child,
        control: Some(control),
    })
}

/// The OCI bundle's `config.json` (owner-only: it holds the job's secrets until the helper
/// scrubs them), with the entry program's memory closed to the rest of the job.
fn write_bundle(
    plan: &JobPlan,
    job_dir: &Path,
    layout: &HostLayout,
    ns_file: Option<&Path>,
    exec_socket: Option<&Path>,
) -> Result<(), SandboxError> {
    use std::os::unix::fs::OpenOptionsExt;
    let nofile_max = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    let mut spec = spec::build(plan, layout, nofile_max, ns_file, exec_socket)?;
    // The entry process's memory, closed to the rest of the job (crate::protect).
    let rootfs = rootfs::RootfsDirs::new(job_dir).rootfs;
    let protected = crate::protect::prepare(job_dir, plan, &rootfs, layout)?;
    spec::add_protected(&mut spec, &protected);
    let config = job_dir.join("config.json");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&config)
        .map_err(SandboxError::io("creating", &config))?;
    let data = serde_json::to_vec(&spec).map_err(SandboxError::Spec)?;
    f.write_all(&data)
        .map_err(SandboxError::io("writing", &config))
}

/// Spawns the helper with an empty environment, its stdin a socket carrying the go-ahead
/// (and, for a primed sandbox, the start).
fn start_helper(
    plan: &JobPlan,
    paths: &Paths,
    helper_exe: &Path,
) -> Result<(std::process::Child, std::os::unix::net::UnixStream), SandboxError> {
    let args = HelperArgs {
        job_dir: paths.job_dir(&plan.id),
        id: plan.id.to_string(),
        executor: plan.executor,
        executor_root: paths.executor_root(plan.executor),
        scrub: plan.secrets.iter().map(|(k, _)| k.clone()).collect(),
        primed: !plan.late_env.is_empty(),
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(SandboxError::io("creating", "socketpair"))?;
    let mut cmd = args.command(helper_exe);
    cmd.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        // Its own process group: a terminal's Ctrl-C reaches airlock, which then stops the
        // job in order, instead of killing the helper halfway through.
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(SandboxError::io("starting helper", helper_exe))?;
    Ok((child, ours))
}

/// The pid in a pid file the helper wrote (`None`: not there yet, or not a pid).
pub fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Whether `pid` is in the cgroup of job `id` (so a recycled pid is never killed).
pub fn in_job_cgroup(pid: i32, id: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|s| {
            s.lines()
                // `/airlock/<id>`, or a container's `/airlock/<job>-c/<id>`.
                .any(|l| {
                    l.ends_with(&format!("/{id}"))
                        && l.contains(&format!(":/{}/", spec::CGROUP_PARENT))
                })
        })
        .unwrap_or(false)
}

/// Kills every process of job `id`: those in its cgroup, and forks of its helper that are
/// not in the cgroup yet (a container whose creation was interrupted), recognised by the
/// helper's command line, which names the job.
pub fn kill_strays(id: &str, cgroup_rel: &str) {
    let mut pids = cgroup::procs(cgroup_rel);
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let mut args = cmd.split(|b| *b == 0);
            let is_helper = args.nth(1) == Some(helper::SUBCOMMAND.as_bytes());
            if is_helper && cmd.split(|b| *b == 0).any(|a| a == id.as_bytes()) {
                pids.push(pid);
            }
        }
    }
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
