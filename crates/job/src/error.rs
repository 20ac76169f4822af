//! Why a job request is refused before anything of the job exists.

use std::path::PathBuf;

use airlock_sandbox::SandboxError;

/// Errors of [`crate::Engine::prepare`]: the request cannot become a job. Nothing of the job
/// exists yet; the refusal of a group is on the audit record (`job.refused`).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The policy file cannot be read or is invalid, or it has no such group.
    #[error(transparent)]
    Policy(#[from] airlock_policy::PolicyError),
    /// A secret the group names cannot be found.
    #[error(transparent)]
    Secrets(#[from] airlock_policy::SecretsError),
    /// The plan cannot be made (image, command, workspace, limits).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The group's registry image could not be pulled.
    #[error("pulling the group's image")]
    Pull(#[source] airlock_registry::RegistryError),
    /// The image has known vulnerabilities at or above the policy's `max_severity`.
    #[error("image {image} has known vulnerabilities at or above {threshold} ([images] scan): {}", findings.join(", "))]
    Vulnerable {
        /// The image.
        image: String,
        /// The threshold.
        threshold: String,
        /// `ID (package version, severity)`, at most 20.
        findings: Vec<String>,
    },
    /// The policy's alert sinks cannot be opened: the job is refused rather than its alerts
    /// lost.
    #[error("opening the alert sinks of the policy's [alerts]")]
    Sinks(#[source] airlock_audit::SinkError),
    /// The audit log's settings cannot be applied (its checkpoint key).
    #[error("the audit log cannot be written: its checkpoint key (policy [audit])")]
    AuditSettings(#[source] airlock_audit::AuditError),
    /// Jobs need root.
    #[error(
        "airlock run needs root (it creates mounts, cgroups and namespaces); run it with sudo"
    )]
    NotRoot,
    /// The workspace is not a directory.
    #[error("--workdir {} is not a directory", .0.display())]
    WorkdirNotADirectory(PathBuf),
    /// airlock's own binary cannot be located (it is the sandboxes' helper).
    #[error("locating the airlock binary")]
    HelperExe(#[source] std::io::Error),
    /// The workspace would copy airlock's checkpoint key into the job.
    #[error("--workdir {} contains airlock's key directory {}; use another data directory", workdir.display(), keys.display())]
    WorkdirHoldsKeys {
        /// The workspace.
        workdir: PathBuf,
        /// The key directory.
        keys: PathBuf,
    },
    /// A primed sandbox that cannot be made as asked (`--late-env`).
    #[error("--late-env: {0}")]
    LateEnv(String),
}

impl JobError {
    /// What kind of failure this is, for a report of a job that could not run.
    pub fn kind(&self) -> airlock_audit::FailureKind {
        use airlock_audit::FailureKind;
        match self {
            Self::Policy(_)
            | Self::Secrets(_)
            | Self::WorkdirNotADirectory(_)
            | Self::WorkdirHoldsKeys { .. }
            | Self::LateEnv(_) => FailureKind::Request,
            Self::Sandbox(e) => e.kind(),
            Self::Pull(_) | Self::Vulnerable { .. } => FailureKind::Image,
            Self::Sinks(_) | Self::AuditSettings(_) => FailureKind::Audit,
            Self::NotRoot | Self::HelperExe(_) => FailureKind::Host,
        }
    }
}
