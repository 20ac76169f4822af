//! The fields of the job's own records, typed: the job engine writes these structs and the
//! detectors read them back (`Record::payload`). A record from disk that does not have the
//! expected shape reads as `None` and is skipped, never an error: the log is external input.
//! (The exec listener's, the gateway's and the file scan's records have their own types:
//! `ConnRecord` here, `FileChange` in the sandbox crate.)

use std::path::PathBuf;

use airlock_policy::{EgressMode, ExecutorKind, Trust};
use serde::{Deserialize, Serialize};

use crate::{JobOutcome, Kind, TeardownFailure};

/// A record's payload type, with the kind it is written as.
pub trait Payload: Serialize {
    /// The kind of record this payload is.
    const KIND: Kind;
}

/// The job's uid and gid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUser {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
}

/// `job.requested`: written before anything of the job exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequested {
    /// The group.
    pub group: String,
    /// Its trust.
    pub trust: Trust,
    /// Its executor.
    pub executor: ExecutorKind,
    /// The command.
    pub argv: Vec<String>,
    /// Who it runs as.
    pub user: JobUser,
    /// How its egress is enforced.
    pub egress_mode: EgressMode,
    /// Names of the injected secrets (never values).
    pub secrets: Vec<String>,
    /// The policy file (`None`: the built-in policy).
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// SHA-256 of the policy's text.
    #[serde(default)]
    pub policy_sha256: String,
}

impl Payload for JobRequested {
    const KIND: Kind = Kind::JobRequested;
}

/// `job.started`: the job's init exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStarted {
    /// The init's pid on the host.
    pub pid: u64,
    /// Whether execs are recorded.
    pub process_events: bool,
    /// SHA-256 of the policy's text.
    #[serde(default)]
    pub policy_sha256: String,
}

impl Payload for JobStarted {
    const KIND: Kind = Kind::JobStarted;
}

/// `job.ended`: the job is over and torn down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEnded {
    /// How it ended.
    pub outcome: JobOutcome,
    /// Wall-clock time from request to teardown.
    pub duration_ms: u64,
    /// What teardown left.
    pub teardown_errors: Vec<TeardownFailure>,
    /// How many alerts the detectors raised.
    pub alerts: usize,
}

impl Payload for JobEnded {
    const KIND: Kind = Kind::JobEnded;
}

/// `container.created`: a container of the job exists (its sandbox is `container`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCreated {
    /// The container's own sandbox id (its exec records carry it as their job).
    pub container: String,
    /// `job`, `service:NAME` or `step`.
    pub role: String,
    /// The image as the workflow named it.
    pub image: String,
    /// The image's manifest digest.
    pub digest: String,
    /// The command it runs (empty for a job container, whose steps are recorded as execs).
    pub command: Vec<String>,
    /// Its uid.
    pub uid: u32,
}

impl Payload for ContainerCreated {
    const KIND: Kind = Kind::ContainerCreated;
}

/// `container.ended`: a container of the job is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEnded {
    /// The container's sandbox id.
    pub container: String,
    /// `job`, `service:NAME` or `step`.
    pub role: String,
    /// Its exit code (128 + signal when killed), if it ran a command to its end.
    pub exit_code: Option<i32>,
    /// Teardown failures (each also leaves the container's state for `gc`).
    pub teardown_errors: Vec<String>,
}

impl Payload for ContainerEnded {
    const KIND: Kind = Kind::ContainerEnded;
}

/// `container.refused`: a request of the job's container API was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRefused {
    /// The hook command (`prepare_job`, …).
    pub command: String,
    /// What was refused.
    pub what: String,
    /// Why.
    pub why: String,
}

impl Payload for ContainerRefused {
    const KIND: Kind = Kind::ContainerRefused;
}

/// `config.changed`: the group's policy differs from its previous job's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanged {
    /// The group.
    pub group: String,
    /// The policy file (`None`: the built-in policy).
    pub policy: Option<PathBuf>,
    /// SHA-256 of the previous policy text.
    pub previous: String,
    /// SHA-256 of the current policy text.
    pub current: String,
}

impl Payload for ConfigChanged {
    const KIND: Kind = Kind::ConfigChanged;
}

/// `job.primed`: a primed sandbox (`airlock run --late-env`) is made, its protections read
/// back, and it waits for the start that brings `late_env`; nothing of the job has run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPrimed {
    /// The names of the variables its start will bring (never values).
    pub late_env: Vec<String>,
    /// The host pid of its init (libcontainer's, waiting for the start signal).
    pub init: Option<i32>,
}

impl Payload for JobPrimed {
    const KIND: Kind = Kind::JobPrimed;
}

/// `secret.injected`: the names of the secrets put into the job's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInjected {
    /// Names only, never values.
    pub names: Vec<String>,
}

impl Payload for SecretInjected {
    const KIND: Kind = Kind::SecretInjected;
}

impl crate::Event {
    /// The event of a typed payload, happening now.
    pub fn of<P: Payload>(job: Option<&str>, payload: &P) -> Self {
        // Serialising these plain structs cannot fail; an empty object would still be a
        // record of the right kind.
        let data = serde_json::to_value(payload).unwrap_or_default();
        Self::new(P::KIND, job, data)
    }
}

impl crate::Record {
    /// The record's payload, if it is of `P`'s kind and has its shape.
    pub fn payload<P: Payload + serde::de::DeserializeOwned>(&self) -> Option<P> {
        if !self.is(P::KIND) {
            return None;
        }
        serde_json::from_value(self.data.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_from_its_record_and_not_from_another_kind() {
        let p = JobStarted {
            pid: 42,
            process_events: true,
            policy_sha256: "ab".into(),
        };
        let e = crate::Event::of(Some("j"), &p);
        let rec = crate::Record {
            seq: 1,
            time_ms: e.time_ms,
            kind: e.kind.as_str().into(),
            job: e.job.clone(),
            data: e.data.clone(),
            prev: String::new(),
        };
        assert_eq!(rec.payload::<JobStarted>(), Some(p));
        assert_eq!(rec.payload::<SecretInjected>(), None);
        // An older record without the digest still reads.
        let old = crate::Record {
            data: serde_json::json!({"pid": 7, "process_events": false}),
            ..rec
        };
        assert_eq!(old.payload::<JobStarted>().map(|s| s.pid), Some(7));
    }
}

/// `drill.completed`: an `airlock drill` ran against this host's airlock (checklist item 26,
/// read by `scan host`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillCompleted {
    /// The policy attacked (`None`: the built-in policy).
    #[serde(default)]
    pub policy: Option<String>,
    /// The group attacked.
    pub group: String,
    /// Attacks run (the control not counted).
    pub attacks: usize,
    /// Attacks that got through.
    pub got_through: usize,
    /// Rows that failed for another reason (an expected alert missing, an attack that could
    /// not run).
    pub failed: usize,
    /// Every row passed.
    pub passed: bool,
    /// Wall-clock time of the drill.
    pub duration_ms: u64,
    /// The airlock version that ran it.
    pub version: String,
}

impl Payload for DrillCompleted {
    const KIND: Kind = Kind::DrillCompleted;
}

/// `image.scanned`: an image's packages were matched against OSV data (checklist item 20,
/// read by `scan host`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageScanned {
    /// The image's name.
    pub image: String,
    /// Its manifest digest.
    pub digest: String,
    /// Packages found.
    pub packages: usize,
    /// Vulnerable packages found (after the ignore list).
    pub findings: usize,
    /// The most severe (`None`: no finding).
    #[serde(default)]
    pub max_severity: Option<String>,
    /// OSV entries read (0: the database was empty, nothing was checked).
    pub osv_entries: usize,
}

impl Payload for ImageScanned {
    const KIND: Kind = Kind::ImageScanned;
}
