//! The job report: what `airlock run --report FILE` writes and what `airlock serve` and
//! `airlock drill` read back. One type, serialised and deserialised here, so a renamed field is
//! a compile error in every reader rather than a silent `None` in one of them.
//!
//! It lives in the audit crate (with the records it carries) rather than in the job engine so
//! that its readers need not link the sandbox and the network stack.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Alert, ConnRecord};

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum JobOutcome {
    /// The command exited with a code.
    Exited(i32),
    /// The command was killed by a signal (OOM kills show as signal 9).
    Signaled(i32),
    /// The wall-clock timeout expired and the job was killed.
    TimedOut,
    /// airlock received this signal and stopped the job.
    Interrupted(i32),
    /// The job could not be run.
    Failed(Failure),
}

impl JobOutcome {
    /// airlock's exit code for this outcome: the command's, or 128+signal, 124 on timeout (as
    /// timeout(1)), 125 when the job could not be run.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Exited(c) => *c,
            Self::Signaled(s) | Self::Interrupted(s) => 128 + s,
            Self::TimedOut => 124,
            Self::Failed(_) => 125,
        }
    }
}

/// Why a job could not be run: a kind to decide on, and the message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure (callers decide on this, never on the message).
    pub kind: FailureKind,
    /// The whole error chain, for people.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The request itself: the command, the workspace, a limit that does not fit.
    Request,
    /// The group's image is not in the image store or cannot be used.
    Image,
    /// The audit log cannot be written (no job runs unrecorded).
    Audit,
    /// Network isolation cannot be applied.
    Network,
    /// A protection the policy asks for cannot be applied (seccomp, a limit, a read-only
    /// `/proc`, the memory of the entry program).
    Protection,
    /// The cgroup hierarchy is not visible to airlock (typically: started under
    /// `ip netns exec`, which mounts a fresh `/sys`). [`FailureKind::hint`] says what to do.
    Cgroups,
    /// The OCI runtime failed to create or start the container.
    Executor,
    /// airlock's own state directory or a system call on the host failed.
    Host,
}

impl FailureKind {
    /// What an operator can do about it, when there is one thing to say.
    pub fn hint(self) -> Option<&'static str> {
        match self {
            Self::Cgroups => Some(
                "the cgroup hierarchy is not mounted where airlock runs: if it was started with \
                 `ip netns exec`, enter only the network namespace instead \
                 (`nsenter --net=/run/netns/NAME airlock …`)",
            ),
            Self::Audit => Some("check the audit log directory (airlock's data dir) and its disk"),
            Self::Image => Some("list the imported images with `airlock image ls`"),
            Self::Network => Some("see docs/network.md, \"What fails closed\""),
            _ => None,
        }
    }
}

/// One step of a teardown that left something behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeardownFailure {
    /// Which step.
    pub step: TeardownStep,
    /// What is left and why, for people.
    pub message: String,
}

impl TeardownFailure {
    /// A failure of `step`.
    pub fn new(step: TeardownStep, message: impl fmt::Display) -> Self {
        Self {
            step,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for TeardownFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step.as_str(), self.message)
    }
}

/// The steps of a job's teardown and end, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeardownStep {
    /// Persisting that a teardown is under way, or removing the job's state file.
    State,
    /// Ending the job's processes.
    Processes,
    /// Removing the job's cgroups.
    Cgroup,
    /// Removing the OCI runtime's record of the container.
    Executor,
    /// Removing the job's network (firewall elements, namespace, address lease).
    Network,
    /// Unmounting and removing the job's root filesystem and directory.
    Rootfs,
    /// Writing the job's records to the audit log.
    Audit,
    /// A detector failed on the job's records.
    Detector,
    /// Appending to the `--egress-log` file.
    EgressLog,
}

impl TeardownStep {
    /// The name used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Processes => "processes",
            Self::Cgroup => "cgroup",
            Self::Executor => "executor",
            Self::Network => "network",
            Self::Rootfs => "rootfs",
            Self::Audit => "audit",
            Self::Detector => "detector",
            Self::EgressLog => "egress log",
        }
    }

    /// Whether `airlock gc` can finish what this step left (it can for the job's resources;
    /// it cannot repair an audit log, a detector or an output file).
    pub fn gc_can_retry(self) -> bool {
        matches!(
            self,
            Self::State
                | Self::Processes
                | Self::Cgroup
                | Self::Executor
                | Self::Network
                | Self::Rootfs
        )
    }
}

/// What a job did, as `airlock run --report` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// The job's id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Wall-clock time from request to teardown.
    pub duration_ms: u64,
    /// What teardown (and the job's end on the record) left behind; empty when everything of
    /// the job was removed and recorded.
    #[serde(default)]
    pub teardown_errors: Vec<TeardownFailure>,
    /// Every DNS query and connection the egress gateway saw, and every dropped packet.
    #[serde(default)]
    pub egress: Vec<ConnRecord>,
    /// What the detectors found (docs/audit.md), also on the audit record as `alert`.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// A report file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file cannot be read.
    #[error("reading job report {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a job report.
    #[error("job report {path} is not valid")]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl JobReport {
    /// airlock's exit code for this job: the outcome's, or 125 when the job ran cleanly but
    /// its teardown or its record is incomplete (a caller must not read that as success).
    pub fn exit_code(&self) -> i32 {
        match self.outcome.exit_code() {
            0 if !self.teardown_errors.is_empty() => 125,
            c => c,
        }
    }

    /// The report of a request refused before it became a job (no id yet, nothing ran).
    pub fn refused(group: Option<&str>, failure: Failure) -> Self {
        Self {
            id: String::new(),
            group: group.unwrap_or_default().to_owned(),
            outcome: JobOutcome::Failed(failure),
            duration_ms: 0,
            teardown_errors: Vec::new(),
            egress: Vec::new(),
            alerts: Vec::new(),
        }
    }

    /// Reads a report written by `airlock run --report`.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let data = std::fs::read(path).map_err(|source| ReportError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|source| ReportError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// What `airlock gc` did (`--json` prints it; serve reads it back).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    /// Jobs torn down.
    pub removed: Vec<String>,
    /// Jobs skipped because the airlock that runs them is alive.
    pub skipped_live: Vec<String>,
    /// Failures, each naming the job and what is left.
    pub errors: Vec<GcError>,
}

/// What `gc` could not remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcError {
    /// The job (`None`: a state file too broken to name one).
    pub job: Option<String>,
    /// The step and what is left.
    #[serde(flatten)]
    pub failure: TeardownFailure,
}

impl std::fmt::Display for GcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.job {
            Some(j) => write!(f, "job {j}: {}", self.failure),
            None => write!(f, "{}", self.failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: JobOutcome) -> JobReport {
        JobReport {
            id: "j0123456789abcdef".into(),
            group: "untrusted".into(),
            outcome,
            duration_ms: 61,
            teardown_errors: Vec::new(),
            egress: Vec::new(),
            alerts: Vec::new(),
        }
    }

    #[test]
    fn every_outcome_reads_back_as_written() {
        for o in [
            JobOutcome::Exited(3),
            JobOutcome::Signaled(9),
            JobOutcome::TimedOut,
            JobOutcome::Interrupted(15),
            JobOutcome::Failed(Failure {
                kind: FailureKind::Cgroups,
                message: "no cgroup".into(),
            }),
        ] {
            let mut r = report(o);
            r.teardown_errors
                .push(TeardownFailure::new(TeardownStep::Network, "lease kept"));
            let json = serde_json::to_string(&r).expect("serialise");
            let back: JobReport = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, r);
        }
    }

    #[test]
    fn exit_codes_follow_the_outcome_and_an_unclean_end_is_never_zero() {
        assert_eq!(report(JobOutcome::Exited(3)).exit_code(), 3);
        assert_eq!(report(JobOutcome::Signaled(9)).exit_code(), 137);
        assert_eq!(report(JobOutcome::TimedOut).exit_code(), 124);
        let failed = JobOutcome::Failed(Failure {
            kind: FailureKind::Executor,
            message: "x".into(),
        });
        assert_eq!(report(failed).exit_code(), 125);
        let mut r = report(JobOutcome::Exited(0));
        r.teardown_errors
            .push(TeardownFailure::new(TeardownStep::Audit, "disk full"));
        assert_eq!(r.exit_code(), 125);
        assert!(!TeardownStep::Audit.gc_can_retry());
        assert!(TeardownStep::Network.gc_can_retry());
    }

    #[test]
    fn the_wire_form_is_stable() {
        // serve and the drill of an older or newer airlock read these names.
        let v = serde_json::to_value(report(JobOutcome::Failed(Failure {
            kind: FailureKind::Cgroups,
            message: "m".into(),
        })))
        .expect("serialise");
        assert_eq!(v["outcome"]["kind"], "failed");
        assert_eq!(v["outcome"]["value"]["kind"], "cgroups");
        let v = serde_json::to_value(report(JobOutcome::Exited(1))).expect("serialise");
        assert_eq!(
            v["outcome"],
            serde_json::json!({"kind": "exited", "value": 1})
        );
    }
}
