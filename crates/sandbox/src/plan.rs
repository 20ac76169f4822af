//! The plan of one job: everything the sandbox will do, as pure data, decided before any
//! resource is created. It is built from the policy's group and the request, and becomes an
//! OCI runtime spec in [`crate::spec`].

use std::path::PathBuf;

use airlock_policy::{
    EgressRules, ExecutorKind, Group, JobUser, Limits, RootfsSource, Secret, Trust,
};

use crate::error::SandboxError;

/// Where jobs start: the workspace inside the sandbox, and the job user's home.
pub const HOME: &str = "/home/runner";
/// The job's working directory; `--workdir` is copied here.
pub const WORKSPACE: &str = "/home/runner/work";
/// `PATH` inside every job.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A job id: `j` and 16 hex digits. Ids name cgroups, directories and containers, so they
/// are checked before use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct JobId(String);

impl JobId {
    /// A new random id.
    pub fn random() -> Self {
        let mut b = [0u8; 8];
        // getrandom(2) with flags 0 blocks only before the pool is initialised at boot.
        // SAFETY: the buffer is valid for b.len() bytes.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n != b.len() as isize {
            // Fall back to time and pid: ids only need to be unique on this host.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            b = ((t as u64) ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
        }
        Self(format!(
            "j{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ))
    }

    /// Parses an id given by a user or read from a state file.
    pub fn parse(s: &str) -> Result<Self, SandboxError> {
        let ok = s.len() == 17
            && s.starts_with('j')
            && s[1..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(SandboxError::BadJobId(s.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The root filesystem a job gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsPlan {
    /// Host `/usr` read-only plus a synthesized `/etc`.
    Host,
    /// Another sandbox's root filesystem, live (a container step runs on its job container's
    /// files): bind-mounted, never copied; its owner tears it down.
    Shared {
        /// The merged root of the sandbox whose files these are.
        dir: PathBuf,
    },
    /// An unpacked image from the store.
    Image {
        /// `sha256:…` of the image manifest.
        digest: String,
        /// The unpacked, read-only root filesystem of the image.
        dir: PathBuf,
    },
}

/// Everything about one job, decided before anything is created.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// The job's id.
    pub id: JobId,
    /// The runner group.
    pub group: String,
    /// Trust level of the group.
    pub trust: Trust,
    /// Which OCI runtime runs it.
    pub executor: ExecutorKind,
    /// Root filesystem.
    pub rootfs: RootfsPlan,
    /// The user it runs as.
    pub user: JobUser,
    /// Limits.
    pub limits: Limits,
    /// Environment variables (names and values) other than secrets.
    pub env: Vec<(String, String)>,
    /// Secrets: injected as environment variables, never written anywhere.
    pub secrets: Vec<(String, Secret)>,
    /// The command.
    pub argv: Vec<String>,
    /// Host directory copied into the workspace, if any.
    pub workspace: Option<PathBuf>,
    /// Egress rules of the group.
    pub egress: EgressRules,
    /// Whether execs and denied calls are recorded (crate::watch).
    pub process_events: bool,
    /// Programs (job paths) whose processes are protected like the entry's (crate::protect).
    pub protect: Vec<String>,
    /// Bounds on the records the job can cause (the group's `audit`).
    pub audit: airlock_policy::AuditLimits,
    /// Its cgroup path, relative to each hierarchy (a container's lies below its job's).
    pub cgroup: String,
    /// Directories of the host bind-mounted into the sandbox (a container's share of its
    /// job's work directory), after every other mount.
    pub binds: Vec<Bind>,
    /// Names that resolve to 127.0.0.1 in its `/etc/hosts` (a job's service containers).
    pub hosts: Vec<String>,
    /// Its working directory.
    pub cwd: String,
    /// The job whose record the sandbox's events join, when it is not its own (a container
    /// records under its job: one limiter, one set of detectors, one audit identity).
    pub record_as: Option<JobId>,
    /// Variables that arrive only after the sandbox exists (a primed sandbox, crate::start):
    /// non-empty, the sandbox is created and checked, then waits for them before its
    /// command starts. Their values are secrets.
    pub late_env: Vec<String>,
}

/// A host directory bind-mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The host path (a staging mount airlock made; never a path the job chose).
    pub source: PathBuf,
    /// Where it appears in the sandbox.
    pub dest: String,
    /// Read-only.
    pub readonly: bool,
}

impl JobPlan {
    /// Builds the plan of a job of `group`. `host_env` reads airlock's own environment (for
    /// pass-through variables); secrets are resolved by the caller.
    pub fn new(
        group_name: &str,
        group: &Group,
        argv: Vec<String>,
        workspace: Option<PathBuf>,
        host_env: &dyn Fn(&str) -> Option<String>,
        secrets: Vec<(String, Secret)>,
        image_dir: Option<(String, PathBuf)>,
    ) -> Result<Self, SandboxError> {
        if argv.is_empty() {
            return Err(SandboxError::EmptyCommand);
        }
        let rootfs = match (&group.rootfs, image_dir) {
            (RootfsSource::Host, _) => RootfsPlan::Host,
            (RootfsSource::Image(_), Some((digest, dir))) => RootfsPlan::Image { digest, dir },
            (RootfsSource::Image(r), None) => {
                return Err(SandboxError::ImageNotResolved(r.clone()));
            }
        };
        let id = JobId::random();
        let mut env = vec![
            ("PATH".to_owned(), PATH.to_owned()),
            ("HOME".to_owned(), HOME.to_owned()),
            ("USER".to_owned(), group.user.name.clone()),
            ("LOGNAME".to_owned(), group.user.name.clone()),
            ("AIRLOCK_JOB_ID".to_owned(), id.to_string()),
            ("AIRLOCK_GROUP".to_owned(), group_name.to_owned()),
        ];
        for name in &group.env {
            if env.iter().any(|(k, _)| k == name) {
                continue;
            }
            if let Some(v) = host_env(name) {
                env.push((name.clone(), v));
            }
        }
        let egress = EgressRules::from_policy(&group.egress).map_err(|e| {
            SandboxError::Config(format!("egress of group {group_name}: {}", e.join("; ")))
        })?;
        let cgroup = crate::spec::cgroup_path(id.as_str());
        Ok(Self {
            egress,
            id,
            group: group_name.to_owned(),
            trust: group.trust,
            executor: group.executor,
            rootfs,
            user: group.user.clone(),
            limits: group.limits.clone(),
            env,
            secrets,
            argv,
            workspace,
            process_events: group.process_events,
            protect: group.protect.clone(),
            audit: group.audit.clone(),
            cgroup,
            binds: Vec::new(),
            hosts: Vec::new(),
            cwd: WORKSPACE.to_owned(),
            record_as: None,
            late_env: Vec::new(),
        })
    }
}
