//! The seam that starts a runner in a sandbox. [`ProcessLauncher`] runs the airlock binary
//! itself as a child (`airlock run`), so the sandbox is set up by a single-threaded process
//! and never forked from serve's multi-threaded runtime.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::Stdio;

use airlock_audit::report::{GcReport, JobReport};
use airlock_policy::{Group, Policy};
use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use crate::Secret;

/// The environment variable the runner reads its JIT configuration from (the runner maps
/// `ACTIONS_RUNNER_INPUT_<ARG>` to its `--<arg>` option).
pub const JITCONFIG_ENV: &str = "ACTIONS_RUNNER_INPUT_JITCONFIG";
/// The environment variable that carries the per-job installation token, when the group has
/// `token_permissions`.
pub const JOB_TOKEN_ENV: &str = "AIRLOCK_JOB_TOKEN";

/// Everything needed to start one runner.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// airlock's job key (`job-<seq>`), unique per serve database.
    pub key: String,
    /// Group name.
    pub group: String,
    /// The group's policy.
    pub policy: Group,
    /// The policy's detector thresholds, for the job's detectors.
    pub detectors: airlock_policy::Detectors,
    /// The policy's alert sinks, for the job's alerts.
    pub alerts: airlock_policy::Alerts,
    /// The policy's `[audit]` (retention, checkpoints) for the job's `airlock run`.
    pub audit: airlock_policy::AuditLogSettings,
    /// The policy's `[images]` (registries, credentials) for a first-use pull.
    pub images: airlock_policy::ImageSettings,
    /// The runner command.
    pub command: Vec<String>,
    /// The JIT configuration.
    pub jit_config: Secret,
    /// The per-job token, if any.
    pub token: Option<Secret>,
}

/// How a sandbox ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunExit {
    /// The exit code of `airlock run` (the job's, 124 on timeout, 125 if it did not start).
    pub code: i32,
    /// `true` when it was stopped by serve (shutdown or stuck job).
    pub stopped: bool,
    /// airlock's job id of the sandbox, from its report.
    pub sandbox_id: Option<String>,
    /// Why the sandbox did not run, from its report (typed), when it says.
    pub failure: Option<airlock_audit::Failure>,
}

/// Why a sandbox could not be run.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Preparing or spawning failed.
    #[error("job {key}: {what}")]
    Io {
        /// The job.
        key: String,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `airlock gc` failed.
    #[error("airlock gc: {0}")]
    Gc(String),
}

/// Starts runners in sandboxes.
#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Runs the runner to its end. `started` is sent once the sandbox process runs; when
    /// `stop` becomes `true` the sandbox is torn down.
    async fn run(
        &self,
        spec: LaunchSpec,
        started: oneshot::Sender<()>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunExit, LaunchError>;

    /// Removes sandboxes that no running `airlock run` owns; returns what it removed.
    async fn gc(&self) -> Result<Vec<String>, LaunchError>;

    /// Cleans up after job `key`, whose `run` never returned (serve died under it): what a
    /// finished `run` would have removed. The default does nothing.
    fn forget(&self, key: &str) {
        let _ = key;
    }

    /// Starts making a primed sandbox for `template`'s group (its `jit_config` unused): a
    /// later [`Launcher::run`] of that group starts its runner in it. `false`: not made (not
    /// supported, or the group's last priming failed moments ago). The default makes none.
    fn prime(&self, template: LaunchSpec) -> bool {
        let _ = template;
        false
    }

    /// Primed sandboxes per group, ready or being made.
    fn primed(&self) -> BTreeMap<String, u32> {
        BTreeMap::new()
    }

    /// Retires up to `n` ready primed sandboxes of every group but `keep` (`None`: of every
    /// group); returns how many. `(None, usize::MAX)` is serve's shutdown: nothing is primed
    /// after it, and sandboxes still being primed are retired as soon as they are ready.
    async fn retire_primed(&self, keep: Option<&str>, n: usize) -> usize {
        let _ = (keep, n);
        0
    }
}

/// The runner's own long-lived programs when the command is the GitHub runner's `run.sh`:
/// `Runner.Listener` (holds the runner's credentials) and `Runner.Worker` (holds the job's
/// secrets and token), started by the runner itself, so not the sandbox's entry process.
/// Listed in the job's `protect`, no step can read their memory or environment
/// (docs/sandbox.md); a runner image without them refuses the job.
pub fn runner_programs(command: &[String]) -> Vec<String> {
    let Some(dir) = command
        .first()
        .and_then(|c| c.strip_suffix("/run.sh"))
        .filter(|d| d.starts_with('/'))
    else {
        return Vec::new();
    };
    ["Runner.Listener", "Runner.Worker"]
        .iter()
        .map(|b| format!("{dir}/bin/{b}"))
        .collect()
}

/// Runs `airlock run` children.
#[derive(Debug, Clone)]
pub struct ProcessLauncher {
    /// The airlock binary.
    pub airlock: PathBuf,
    /// `--state-dir` of the children.
    pub state_dir: PathBuf,
    /// `--data-dir` of the children.
    pub data_dir: PathBuf,
    /// `--net-pool` of the children (`None`: theirs, or `AIRLOCK_NET_POOL` passed through).
    pub net_pool: Option<String>,
    /// Where per-job files (derived policy, report, runner output) go; 0700.
    pub work_dir: PathBuf,
    /// Command prefix run before airlock, e.g. `nsenter --net=…` in tests (empty normally).
    pub wrapper: Vec<String>,
    /// Primed sandboxes (groups' `prestart`), shared by clones.
    pub primed: std::sync::Arc<std::sync::Mutex<PrimedPool>>,
    /// How long the output of a failed run (or priming) is kept in `work_dir`
    /// (serve.toml's `state_retention`): every reconciliation removes older ones.
    pub keep_output: std::time::Duration,
    /// Most bytes of a runner's output kept in its `output.log` (`airlock run --max-output`).
    pub max_output: u64,
}

impl ProcessLauncher {
    /// The policy the child runs with: only this group, with the runner's credentials added
    /// to its `secrets`, so `airlock run` passes them from its environment into the job (and
    /// nothing else of serve's environment).
    fn derived_policy(spec: &LaunchSpec, primed: bool) -> Policy {
        let mut g = spec.policy.clone();
        // A primed sandbox gets the JIT config late, through its gate (`--late-env`).
        if !primed {
            g.secrets.push(JITCONFIG_ENV.to_owned());
        }
        for p in runner_programs(&spec.command) {
            if !g.protect.contains(&p) {
                g.protect.push(p);
            }
        }
        if spec.token.is_some() {
            g.secrets.push(JOB_TOKEN_ENV.to_owned());
        }
        Policy {
            version: 1,
            default_group: Some(spec.group.clone()),
            groups: BTreeMap::from([(spec.group.clone(), g)]),
            detectors: spec.detectors.clone(),
            alerts: spec.alerts.clone(),
            audit: spec.audit.clone(),
            images: spec.images.clone(),
        }
    }

    fn command(
        &self,
        dir: &std::path::Path,
        spec: &LaunchSpec,
        primed: bool,
    ) -> tokio::process::Command {
        let mut argv: Vec<std::ffi::OsString> = self.wrapper.iter().map(Into::into).collect();
        argv.push(self.airlock.clone().into());
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(
                self.net_pool
                    .iter()
                    .flat_map(|p| ["--net-pool", p.as_str()]),
            )
            .arg("run")
            .arg("--policy")
            .arg(dir.join("policy.toml"))
            .arg("--group")
            .arg(&spec.group)
            .arg("--report")
            .arg(dir.join("report.json"))
            .arg("--max-output")
            .arg(self.max_output.to_string())
            .args(
                primed
                    .then_some(["--late-env", JITCONFIG_ENV])
                    .into_iter()
                    .flatten(),
            )
            .arg("--")
            .args(&spec.command);
        c.env_clear();
        for v in ["PATH", "AIRLOCK_LOG", "AIRLOCK_NET_POOL"] {
            if let Ok(x) = std::env::var(v) {
                c.env(v, x);
            }
        }
        // The group's own pass-through and secret names come from serve's environment.
        for n in spec.policy.env.iter().chain(&spec.policy.secrets) {
            if let Ok(x) = std::env::var(n) {
                c.env(n, x);
            }
        }
        if !primed {
            c.env(JITCONFIG_ENV, spec.jit_config.expose());
        }
        if let Some(t) = &spec.token {
            c.env(JOB_TOKEN_ENV, t.expose());
        }
        c.stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only calls prctl and
        // getppid, both async-signal-safe; it touches no memory of the parent.
        unsafe {
            c.pre_exec(|| {
                // The child is signalled when the thread that forked it ends: serve spawns
                // from its runtime's worker threads, which live as long as serve.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // serve died between fork and prctl: do not run an orphan.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        c
    }
}

/// A primed sandbox: `airlock run --late-env` with its sandbox created and checked, waiting
/// on its gate for the runner's JIT config (docs/serve.md, "Primed sandboxes").
struct Primed {
    /// Its work directory (derived policy, report, output).
    dir: PathBuf,
    /// The derived policy text and the command it was made for: a runner of another shape
    /// (the policy changed) does not take it.
    policy: String,
    command: Vec<String>,
    child: tokio::process::Child,
    gate: tokio::net::UnixStream,
}

/// Primed sandboxes by group: those ready, those being made, and when making one last failed
/// (a group whose sandboxes cannot be made is not retried in a loop).
#[derive(Default)]
pub struct PrimedPool {
    ready: HashMap<String, Vec<Primed>>,
    pending: HashMap<String, u32>,
    /// Work directories of the sandboxes being made.
    making: std::collections::HashSet<PathBuf>,
    /// Shutting down: nothing more is primed, and what finishes priming is retired.
    closed: bool,
    failed_at: HashMap<String, std::time::Instant>,
}

impl std::fmt::Debug for PrimedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimedPool")
            .field(
                "ready",
                &self
                    .ready
                    .iter()
                    .map(|(g, v)| (g, v.len()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("pending", &self.pending)
            .finish()
    }
}

/// Work keys of primed sandboxes start with this.
pub const PRIMED_PREFIX: &str = "primed-";

/// After a failed priming, the group is not primed again for this long.
const PRIME_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a sandbox may take to be primed (a first use may pull its image).
const PRIME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

fn lock_pool(m: &std::sync::Mutex<PrimedPool>) -> std::sync::MutexGuard<'_, PrimedPool> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The last `max` bytes of a file (read from there: the file itself is never read whole).
fn output_tail(path: &std::path::Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut b = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_ok() {
        let _ = f.take(max).read_to_end(&mut b);
    }
    String::from_utf8_lossy(&b).trim().to_owned()
}

/// Clears `work_dir` of what no run needs: directories of primed sandboxes not in `live`
/// (an earlier serve died; their airlock run retired them on its death: a derived policy and
/// airlock's output), and the output kept from failed runs and primings once nothing in it
/// has changed for `keep`. A directory holding a derived policy (`policy.toml`) belongs to a
/// run that is still going and is never touched. Returns what it removed.
fn sweep_work_dir(
    work_dir: &std::path::Path,
    live: &[PathBuf],
    keep: std::time::Duration,
    now: std::time::SystemTime,
) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for d in std::fs::read_dir(work_dir).into_iter().flatten().flatten() {
        let path = d.path();
        if live.contains(&path) || !d.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let stale = if d.file_name().to_string_lossy().starts_with(PRIMED_PREFIX) {
            true
        } else if path.join("policy.toml").exists() {
            false
        } else {
            // The newest change to the directory or a file in it (an airlock run that
            // outlived serve still appends to its output).
            let newest = std::fs::read_dir(&path)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| f.metadata().and_then(|m| m.modified()).ok())
                .chain(d.metadata().and_then(|m| m.modified()).ok())
                .max();
            newest.is_some_and(|t| now.duration_since(t).is_ok_and(|age| age > keep))
        };
        if stale && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Closes a primed `airlock run`'s gate (it then deletes its sandbox and exits) and waits for
/// it to end, killing it if it has not within a few seconds.
async fn close_gate(gate: tokio::net::UnixStream, mut child: tokio::process::Child) {
    drop(gate);
    if tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Retires a primed sandbox and removes its work directory.
async fn retire(p: Primed) {
    close_gate(p.gate, p.child).await;
    let _ = std::fs::remove_dir_all(&p.dir);
}

impl ProcessLauncher {
    fn work_dir_for(&self, key: &str) -> Result<PathBuf, LaunchError> {
        let dir = self.work_dir.join(key);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| LaunchError::Io {
                key: key.to_owned(),
                what: "creating its work directory".into(),
                source,
            })?;
        Ok(dir)
    }

    fn policy_text(spec: &LaunchSpec, primed: bool) -> Result<String, LaunchError> {
        toml::to_string(&Self::derived_policy(spec, primed)).map_err(|e| LaunchError::Io {
            key: spec.key.clone(),
            what: "writing its policy".into(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    fn output_log(dir: &std::path::Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("output.log"))?;
        let err = out.try_clone()?;
        Ok((out, err))
    }

    /// Makes one primed sandbox of `template`'s group and adds it to the pool once it is
    /// ready.
    async fn make_primed(self, template: LaunchSpec) -> Result<(), String> {
        let dir = self
            .work_dir_for(&template.key)
            .map_err(|e| e.to_string())?;
        let policy = Self::policy_text(&template, true).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("policy.toml"), &policy).map_err(|e| e.to_string())?;
        let (out, err) = Self::output_log(&dir).map_err(|e| e.to_string())?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
        ours.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut gate = tokio::net::UnixStream::from_std(ours).map_err(|e| e.to_string())?;
        let mut cmd = self.command(&dir, &template, true);
        cmd.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(out)
            .stderr(err);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting airlock run: {e}"))?;
        drop(cmd);
        let mut b = [0u8; 1];
        let mut why = String::new();
        let ready = tokio::select! {
            r = tokio::time::timeout(PRIME_TIMEOUT, tokio::io::AsyncReadExt::read(&mut gate, &mut b)) => {
                let ok = matches!(r, Ok(Ok(1))) && b[..] == *airlock_gate::READY;
                if !ok {
                    why = match r {
                        Err(_) => "no answer in time".into(),
                        Ok(Ok(0)) => "it closed its gate".into(),
                        Ok(Ok(_)) => "it said something else".into(),
                        Ok(Err(e)) => format!("its gate: {e}"),
                    };
                }
                ok
            }
            st = child.wait() => {
                why = match st {
                    Ok(st) => format!("it ended ({st})"),
                    Err(e) => format!("waiting for it: {e}"),
                };
                false
            }
        };
        if !ready {
            close_gate(gate, child).await;
            // Its output stays for people (the warning names it), under a name `gc` leaves
            // alone for `state_retention` (a primed one's dir goes once its airlock run is
            // gone); only the policy goes.
            let _ = std::fs::remove_file(dir.join("policy.toml"));
            let kept = dir.with_file_name(format!(
                "failed-{}",
                dir.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            let kept = match std::fs::rename(&dir, &kept) {
                Ok(()) => kept,
                Err(_) => dir.clone(),
            };
            // What airlock run said last (its output log is bounded by `max_output`; only the
            // tail is read).
            let said = output_tail(&kept.join("output.log"), 2048);
            // An airlock run that was killed while it made the sandbox could not tear it
            // down: `airlock gc` removes sandboxes whose owner is gone.
            let removed = match Launcher::gc(&self).await {
                Ok(r) if !r.is_empty() => format!("; removed what it left: {}", r.join(", ")),
                Ok(_) => String::new(),
                Err(e) => format!("; removing what it left failed: {e}"),
            };
            return Err(format!(
                "its airlock run did not get the sandbox ready: {why}; it said: {said} (output: {}){removed}",
                kept.display()
            ));
        }
        let primed = Primed {
            dir,
            policy,
            command: template.command.clone(),
            child,
            gate,
        };
        let late = {
            let mut pool = lock_pool(&self.primed);
            if pool.closed {
                Some(primed)
            } else {
                pool.ready
                    .entry(template.group.clone())
                    .or_default()
                    .push(primed);
                None
            }
        };
        // Made while serve shut down: retired at once.
        if let Some(p) = late {
            retire(p).await;
        }
        Ok(())
    }

    /// A live primed sandbox for this runner, if the pool has one; stale ones (dead, or made
    /// for another policy) are retired on the way.
    fn take_primed(&self, spec: &LaunchSpec, policy: &str) -> Option<Primed> {
        let mut stale = Vec::new();
        let found = {
            let mut pool = lock_pool(&self.primed);
            let list = pool.ready.get_mut(&spec.group)?;
            let mut found = None;
            while let Some(mut p) = list.pop() {
                let alive = matches!(p.child.try_wait(), Ok(None));
                if alive && p.policy == policy && p.command == spec.command {
                    found = Some(p);
                    break;
                }
                stale.push(p);
            }
            found
        };
        for p in stale {
            tokio::spawn(retire(p));
        }
        found
    }

    /// Waits for a started `airlock run` to end (SIGTERM to it when `stop` says so) and
    /// reads its report.
    async fn finish(
        &self,
        key: &str,
        dir: &std::path::Path,
        mut child: tokio::process::Child,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunExit, LaunchError> {
        let mut stopped = false;
        let status = loop {
            tokio::select! {
                s = child.wait() => break s.map_err(|source| LaunchError::Io {
                    key: key.to_owned(),
                    what: "waiting for airlock run".into(),
                    source,
                })?,
                r = stop.changed(), if !stopped => {
                    if r.is_err() || *stop.borrow() {
                        stopped = true;
                        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                            // SAFETY: signalling our own child, which has not been reaped.
                            unsafe { libc::kill(pid, libc::SIGTERM) };
                        }
                    }
                }
            }
        };
        let report = JobReport::read(&dir.join("report.json")).ok();
        let failure = report.as_ref().and_then(|r| match &r.outcome {
            airlock_audit::JobOutcome::Failed(f) => Some(f.clone()),
            _ => None,
        });
        let sandbox_id = report.map(|r| r.id).filter(|id| !id.is_empty());
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        // Keep the output of failed runs for people, under the job's key; the rest goes.
        if code == 0 {
            let _ = std::fs::remove_dir_all(dir);
        } else {
            let _ = std::fs::remove_file(dir.join("policy.toml"));
            let keyed = self.work_dir.join(key);
            if dir != keyed {
                let _ = std::fs::rename(dir, &keyed);
            }
        }
        Ok(RunExit {
            code,
            stopped,
            sandbox_id,
            failure,
        })
    }
}

#[async_trait]
impl Launcher for ProcessLauncher {
    async fn run(
        &self,
        spec: LaunchSpec,
        started: oneshot::Sender<()>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunExit, LaunchError> {
        // A primed sandbox of the group, if there is one: the JIT config is all it lacks.
        if spec.token.is_none() {
            let policy = Self::policy_text(&spec, true)?;
            if let Some(mut p) = self.take_primed(&spec, &policy) {
                let frame = airlock_gate::encode(&[(
                    JITCONFIG_ENV.to_owned(),
                    spec.jit_config.expose().to_owned(),
                )]);
                let sent = match frame {
                    Ok(f) => tokio::io::AsyncWriteExt::write_all(&mut p.gate, &f)
                        .await
                        .is_ok(),
                    Err(_) => false,
                };
                if sent {
                    let _ = started.send(());
                    let Primed {
                        dir, child, gate, ..
                    } = p;
                    // The gate stays open while the job runs: closing it means nothing
                    // after the start, and keeping it keeps the fd accounting simple.
                    let r = self.finish(&spec.key, &dir, child, stop).await;
                    drop(gate);
                    return r;
                }
                tracing::warn!(
                    "runner {}: its primed sandbox did not take the start; starting a new one",
                    airlock_text::escape(&spec.key)
                );
                tokio::spawn(retire(p));
            }
        }
        let io = |what: &str| {
            let key = spec.key.clone();
            let what = what.to_owned();
            move |source| LaunchError::Io { key, what, source }
        };
        let dir = self.work_dir_for(&spec.key)?;
        let policy = Self::policy_text(&spec, false)?;
        std::fs::write(dir.join("policy.toml"), policy).map_err(io("writing its policy"))?;
        let (out, err) = Self::output_log(&dir).map_err(io("opening its output log"))?;
        let mut cmd = self.command(&dir, &spec, false);
        cmd.stdout(out).stderr(err);
        let child = cmd.spawn().map_err(io("starting airlock run"))?;
        let _ = started.send(());
        self.finish(&spec.key, &dir, child, stop).await
    }

    fn prime(&self, template: LaunchSpec) -> bool {
        let group = template.group.clone();
        {
            let mut pool = lock_pool(&self.primed);
            if pool.closed
                || pool
                    .failed_at
                    .get(&group)
                    .is_some_and(|t| t.elapsed() < PRIME_RETRY)
            {
                return false;
            }
            *pool.pending.entry(group.clone()).or_default() += 1;
            pool.making.insert(self.work_dir.join(&template.key));
        }
        let me = self.clone();
        tokio::spawn(async move {
            let key = template.key.clone();
            let r = me.clone().make_primed(template).await;
            let mut pool = lock_pool(&me.primed);
            if let Some(n) = pool.pending.get_mut(&group) {
                *n = n.saturating_sub(1);
            }
            pool.making.remove(&me.work_dir.join(&key));
            if let Err(e) = r {
                tracing::warn!(
                    "priming a sandbox for group {} ({}): {}",
                    airlock_text::escape(&group),
                    airlock_text::escape(&key),
                    airlock_text::escape(&e)
                );
                pool.failed_at.insert(group, std::time::Instant::now());
            }
        });
        true
    }

    fn primed(&self) -> BTreeMap<String, u32> {
        let mut pool = lock_pool(&self.primed);
        // A primed `airlock run` that ended by itself (killed, or its sandbox failed while it
        // waited) holds no slot: it is not counted, and its remains are cleared.
        let mut dead = Vec::new();
        for list in pool.ready.values_mut() {
            let mut i = 0;
            while i < list.len() {
                if matches!(list[i].child.try_wait(), Ok(None)) {
                    i += 1;
                } else {
                    dead.push(list.swap_remove(i));
                }
            }
        }
        if let (false, Ok(rt)) = (dead.is_empty(), tokio::runtime::Handle::try_current()) {
            let me = self.clone();
            rt.spawn(async move {
                for p in dead {
                    retire(p).await;
                }
                // What its airlock run could not tear down (it was killed): `airlock gc`
                // removes sandboxes whose owner is gone.
                match Launcher::gc(&me).await {
                    Ok(removed) if !removed.is_empty() => tracing::warn!(
                        "primed sandbox(es) {} ended unused; removed",
                        airlock_text::escape(&removed.join(", "))
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        "removing a primed sandbox that ended unused: {}",
                        airlock_text::escape(&e.to_string())
                    ),
                }
            });
        }
        let mut out: BTreeMap<String, u32> = pool
            .ready
            .iter()
            .map(|(g, v)| (g.clone(), u32::try_from(v.len()).unwrap_or(u32::MAX)))
            .collect();
        for (g, n) in &pool.pending {
            *out.entry(g.clone()).or_default() += n;
        }
        out.retain(|_, n| *n > 0);
        out
    }

    async fn retire_primed(&self, keep: Option<&str>, n: usize) -> usize {
        let taken: Vec<Primed> = {
            let mut pool = lock_pool(&self.primed);
            // Every group's, all of them: serve is shutting down.
            if keep.is_none() && n == usize::MAX {
                pool.closed = true;
            }
            let mut taken = Vec::new();
            for (g, list) in pool.ready.iter_mut() {
                if keep == Some(g.as_str()) {
                    continue;
                }
                while taken.len() < n {
                    match list.pop() {
                        Some(p) => taken.push(p),
                        None => break,
                    }
                }
            }
            taken
        };
        let count = taken.len();
        for p in taken {
            retire(p).await;
        }
        count
    }

    /// Removes the derived policy of a job whose `airlock run` outlived serve; its
    /// `output.log` (and report, once written) stay for people, as after a failed run.
    fn forget(&self, key: &str) {
        let _ = std::fs::remove_file(self.work_dir.join(key).join("policy.toml"));
    }

    async fn gc(&self) -> Result<Vec<String>, LaunchError> {
        let mut argv: Vec<std::ffi::OsString> = self.wrapper.iter().map(Into::into).collect();
        argv.push(self.airlock.clone().into());
        let out = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["gc", "--json"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| LaunchError::Gc(e.to_string()))?;
        let r: GcReport = serde_json::from_slice(&out.stdout).map_err(|e| {
            LaunchError::Gc(format!(
                "unreadable output ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })?;
        if !r.errors.is_empty() {
            let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
            return Err(LaunchError::Gc(errors.join("; ")));
        }
        let live: Vec<PathBuf> = {
            let pool = lock_pool(&self.primed);
            pool.ready
                .values()
                .flatten()
                .map(|p| p.dir.clone())
                .chain(pool.making.iter().cloned())
                .collect()
        };
        let swept = sweep_work_dir(
            &self.work_dir,
            &live,
            self.keep_output,
            std::time::SystemTime::now(),
        );
        if !swept.is_empty() {
            // Names serve made itself (runner and primed keys); escaped all the same.
            let names: Vec<String> = swept
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| airlock_text::escape(&n.to_string_lossy()).into_owned())
                .collect();
            tracing::info!(
                "removed {} work directories from {}: {}",
                names.len(),
                self.work_dir.display(),
                names.join(", ")
            );
        }
        Ok(r.removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `gc` clears from serve's work directory: dead primed sandboxes' directories at
    /// once, kept output once it is older than the retention, never a live run's.
    #[test]
    fn the_work_dir_keeps_output_for_its_retention_and_live_runs_always() {
        let d = tempfile::tempdir().expect("tmp");
        let w = d.path();
        let mk = |name: &str, files: &[&str]| {
            let p = w.join(name);
            std::fs::create_dir_all(&p).expect("dir");
            for f in files {
                std::fs::write(p.join(f), b"x").expect("file");
            }
            p
        };
        let dead_primed = mk("primed-ci-1", &["policy.toml", "output.log"]);
        let live_primed = mk("primed-ci-2", &["policy.toml", "output.log"]);
        let running = mk("airlock-ci-3", &["policy.toml", "output.log"]);
        let failed = mk("airlock-ci-4", &["output.log", "report.json"]);
        let failed_priming = mk("failed-primed-ci-5", &["output.log"]);
        std::fs::write(w.join("stray-file"), b"x").expect("file");
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        // Within the retention: only the dead primed sandbox goes.
        let r = sweep_work_dir(w, std::slice::from_ref(&live_primed), day, now);
        assert_eq!(r, vec![dead_primed.clone()]);
        // Two days later: the kept output goes too; the live primed sandbox, the running
        // run and a plain file stay.
        let later = now + 2 * day;
        let mut r = sweep_work_dir(w, std::slice::from_ref(&live_primed), day, later);
        r.sort();
        assert_eq!(r, vec![failed.clone(), failed_priming.clone()]);
        assert!(live_primed.exists() && running.exists() && w.join("stray-file").exists());
        // A kept output still being written (its airlock run outlived serve) is not stale.
        let busy = mk("airlock-ci-6", &["output.log"]);
        let soon = now + std::time::Duration::from_secs(60);
        assert!(sweep_work_dir(w, std::slice::from_ref(&live_primed), day, soon).is_empty());
        assert!(busy.exists());
    }

    #[test]
    fn a_failed_primings_output_is_read_from_its_tail_only() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("output.log");
        let mut text = "x".repeat(1 << 20);
        text.push_str("\nthe last word");
        std::fs::write(&p, &text).expect("write");
        let t = output_tail(&p, 64);
        assert!(t.len() <= 64 && t.ends_with("the last word"), "{t}");
        assert_eq!(output_tail(&d.path().join("missing"), 64), "");
    }

    #[test]
    fn the_runner_programs_are_protected_when_the_command_is_run_sh() {
        let cmd = vec!["/home/runner/actions-runner/run.sh".to_owned()];
        assert_eq!(
            runner_programs(&cmd),
            [
                "/home/runner/actions-runner/bin/Runner.Listener",
                "/home/runner/actions-runner/bin/Runner.Worker"
            ]
        );
        assert!(runner_programs(&["/usr/bin/airlock-fake-runner".to_owned()]).is_empty());
        assert!(runner_programs(&["run.sh".to_owned()]).is_empty());
    }

    #[test]
    fn the_derived_policy_keeps_container_jobs_and_where_images_come_from() {
        let group = Group {
            containers: Some(airlock_policy::Containers {
                max: 3,
                share: 0.25,
                allow_root: false,
                health_timeout: airlock_policy::HumanDuration(std::time::Duration::from_secs(9)),
                require_job_container: true,
            }),
            ..Group::default()
        };
        let images = airlock_policy::ImageSettings {
            registries: vec!["registry.acme.internal".into()],
            ..Default::default()
        };
        let spec = LaunchSpec {
            key: "job-1".into(),
            group: "ci".into(),
            policy: group.clone(),
            detectors: Default::default(),
            alerts: Default::default(),
            audit: Default::default(),
            images: images.clone(),
            command: vec!["/home/runner/actions-runner/run.sh".into()],
            jit_config: Secret::new("jit"),
            token: None,
        };
        let p = ProcessLauncher::derived_policy(&spec, false);
        assert_eq!(p.groups["ci"].containers, group.containers);
        assert_eq!(p.images, images);
        // And it survives the file the child reads.
        let text = toml::to_string(&p).expect("toml");
        let back = airlock_policy::parse(&text, std::path::Path::new("derived.toml"))
            .expect("the derived policy parses");
        assert_eq!(back.groups["ci"].containers, group.containers);
    }
}
