//! The seam that starts a runner in a sandbox. [`ProcessLauncher`] runs the airlock binary
//! itself as a child (`airlock run`), so the sandbox is set up by a single-threaded process
//! and never forked from serve's multi-threaded runtime.

use std::collections::BTreeMap;
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
}

impl ProcessLauncher {
    /// The policy the child runs with: only this group, with the runner's credentials added
    /// to its `secrets`, so `airlock run` passes them from its environment into the job (and
    /// nothing else of serve's environment).
    fn derived_policy(spec: &LaunchSpec) -> Policy {
        let mut g = spec.policy.clone();
        g.secrets.push(JITCONFIG_ENV.to_owned());
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

    fn command(&self, dir: &std::path::Path, spec: &LaunchSpec) -> tokio::process::Command {
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
        c.env(JITCONFIG_ENV, spec.jit_config.expose());
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

#[async_trait]
impl Launcher for ProcessLauncher {
    async fn run(
        &self,
        spec: LaunchSpec,
        started: oneshot::Sender<()>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunExit, LaunchError> {
        let io = |what: &str| {
            let key = spec.key.clone();
            let what = what.to_owned();
            move |source| LaunchError::Io { key, what, source }
        };
        let dir = self.work_dir.join(&spec.key);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating its work directory"))?;
        let policy =
            toml::to_string(&Self::derived_policy(&spec)).map_err(|e| LaunchError::Io {
                key: spec.key.clone(),
                what: "writing its policy".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        std::fs::write(dir.join("policy.toml"), policy).map_err(io("writing its policy"))?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("output.log"))
            .map_err(io("opening its output log"))?;
        let err = out.try_clone().map_err(io("opening its output log"))?;
        let mut cmd = self.command(&dir, &spec);
        cmd.stdout(out).stderr(err);
        let mut child = cmd.spawn().map_err(io("starting airlock run"))?;
        let _ = started.send(());
        let mut stopped = false;
        let status = loop {
            tokio::select! {
                s = child.wait() => break s.map_err(io("waiting for airlock run"))?,
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
        // Keep the output of failed runs for people; the rest goes.
        if code == 0 {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            let _ = std::fs::remove_file(dir.join("policy.toml"));
        }
        Ok(RunExit {
            code,
            stopped,
            sandbox_id,
            failure,
        })
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
        Ok(r.removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let p = ProcessLauncher::derived_policy(&spec);
        assert_eq!(p.groups["ci"].containers, group.containers);
        assert_eq!(p.images, images);
        // And it survives the file the child reads.
        let text = toml::to_string(&p).expect("toml");
        let back = airlock_policy::parse(&text, std::path::Path::new("derived.toml"))
            .expect("the derived policy parses");
        assert_eq!(back.groups["ci"].containers, group.containers);
    }
}
