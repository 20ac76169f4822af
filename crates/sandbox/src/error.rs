//! Errors of the sandbox component. Each names what it was doing and on what.

use std::path::PathBuf;

use airlock_audit::FailureKind;

/// Errors of the sandbox component.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// An I/O operation on a path failed.
    #[error("{what} {path}")]
    Io {
        /// What airlock was doing.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}")]
    Sys {
        /// What airlock was doing.
        what: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A protection could not be applied, so the job does not start.
    #[error("refusing to start the job: {protection} cannot be applied: {reason}")]
    ProtectionUnavailable {
        /// The protection (seccomp, memory limit, …).
        protection: String,
        /// Why.
        reason: String,
    },
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// No cgroup hierarchy is mounted in airlock's mount namespace, so no limit can be set.
    #[error("refusing to start the job: no cgroup hierarchy is mounted where airlock runs (is it under `ip netns exec`, which mounts a fresh /sys? enter only the network namespace: `nsenter --net=/run/netns/NAME airlock …`)")]
    CgroupsNotMounted,
    /// The job's network could not be set up.
    #[error("refusing to start the job: network isolation cannot be applied")]
    Network(#[source] airlock_net::NetError),
    /// The audit log cannot be written: jobs do not start without it.
    #[error("refusing to start the job: the audit log cannot be written")]
    Audit(#[source] airlock_audit::AuditError),
    /// The job has no command.
    #[error("no command given: use `airlock run -- CMD ARGS…`")]
    EmptyCommand,
    /// A job id is malformed.
    #[error("invalid job id {0:?}: expected j followed by 16 lowercase hex digits")]
    BadJobId(String),
    /// The group names an image that was not resolved.
    #[error("image {0:?} is not in the image store; import it with `airlock image import`")]
    ImageNotResolved(String),
    /// A limit does not fit the OCI field it goes to.
    #[error("{what} limit {value} is too large")]
    LimitTooLarge {
        /// The limit.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// The generated OCI spec did not validate.
    #[error("generated OCI runtime spec is invalid")]
    Spec(#[source] serde_json::Error),
    /// The workspace does not fit into the job's writable layer.
    #[error("workspace {path} does not fit into the writable layer ({limit} bytes); raise limits.disk or shrink the workspace")]
    WorkspaceTooLarge {
        /// The workspace.
        path: PathBuf,
        /// The disk limit.
        limit: u64,
    },
    /// The workspace cannot be copied within its bounds.
    #[error("workspace {path}: {reason}")]
    Workspace {
        /// The workspace.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The executor failed.
    #[error("executor {executor} failed: {message}")]
    Executor {
        /// Which executor.
        executor: &'static str,
        /// What it said.
        message: String,
    },
    /// A state file could not be read or written.
    #[error("job state {path}: {message}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A state file is not valid JSON of a job's state.
    #[error("job state {}", path.display())]
    StateFormat {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A lifecycle step out of order (a bug, refused rather than persisted).
    #[error("job {job}: cannot go from {from:?} to {to:?}")]
    Transition {
        /// The job.
        job: String,
        /// Where it is.
        from: crate::state::Status,
        /// Where it was asked to go.
        to: crate::state::Status,
    },
    /// Image store errors.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// A primed sandbox was retired before anything started in it (crate::start).
    #[error("the primed sandbox was retired before its command started")]
    NotStarted,
    /// A primed sandbox's start message could not be used.
    #[error(transparent)]
    StartFrame(#[from] crate::start::FrameError),
}

impl SandboxError {
    /// What kind of failure this is for a job that could not run (callers decide on the
    /// kind, never on the message).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Io { .. }
            | Self::Sys { .. }
            | Self::State { .. }
            | Self::StateFormat { .. }
            | Self::Transition { .. } => FailureKind::Host,
            Self::ProtectionUnavailable { .. } => FailureKind::Protection,
            Self::CgroupsNotMounted => FailureKind::Cgroups,
            Self::Config(_)
            | Self::EmptyCommand
            | Self::BadJobId(_)
            | Self::LimitTooLarge { .. }
            | Self::WorkspaceTooLarge { .. }
            | Self::Workspace { .. }
            | Self::NotStarted
            | Self::StartFrame(_) => FailureKind::Request,
            Self::Network(_) => FailureKind::Network,
            Self::Audit(_) => FailureKind::Audit,
            Self::ImageNotResolved(_) | Self::Image(_) => FailureKind::Image,
            Self::Spec(_) | Self::Executor { .. } => FailureKind::Executor,
        }
    }

    /// An I/O error on `path` while doing `what`, for `map_err`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }

    pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let what = what.into();
        move |source| Self::Sys { what, source }
    }
}
