//! Detectors: each one reads a job's audit records in log order and reports alerts.
//!
//! One detector per file, behind the [`Detector`] trait, listed in the explicit, ordered
//! [`registry`]. [`detect`] runs them all over one job's records. The order matters once:
//! `denied-egress` runs after `metadata-access`, `network-scan` and `dns-tunnelling` and
//! reports only the denied records none of them has already explained, so one attack gives
//! one alert, not three.
//!
//! The record kinds and `data` fields read here are the contract written in `docs/audit.md`.
//! Records that do not have the expected fields are skipped, never an error: the log is
//! external input.

mod config_changed;
mod denied_egress;
mod dns_tunnelling;
mod fileless_exec;
mod metadata_access;
mod network_scan;
mod new_destination;
mod persistence_attempt;
mod privileged_operation;
mod record_flood;
mod rogue_runner;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_json::Value;

use crate::alert::{Alert, Severity, Technique};
use crate::Record;

pub use config_changed::ConfigChanged;
pub use denied_egress::DeniedEgress;
pub use dns_tunnelling::{parent_domain, DnsTunnelling};
pub use fileless_exec::FilelessExec;
pub use metadata_access::{MetadataAccess, METADATA_NAMES};
pub use network_scan::NetworkScan;
pub use new_destination::{Baseline, NewDestination};
pub use persistence_attempt::PersistenceAttempt;
pub use privileged_operation::PrivilegedOperation;
pub use record_flood::RecordFlood;
pub use rogue_runner::RogueRunner;

/// Errors of the detectors. Detection itself never fails; only the learned baseline of
/// `new-destination` touches the file system.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The baseline file of a group could not be read or written.
    #[error("new-destination baseline {path}")]
    Baseline {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The baseline file of a group is not valid JSON of the expected shape.
    #[error("new-destination baseline {path} is corrupt")]
    BaselineCorrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// What the detectors need besides the records.
#[derive(Debug, Clone, Default)]
pub struct DetectContext {
    /// Thresholds, from the policy's `[detectors]`.
    pub settings: airlock_policy::Detectors,
    /// Directory of the learned per-group baselines of `new-destination` (one
    /// `<group>.json` each); `None` turns that detector off.
    pub baseline_dir: Option<PathBuf>,
    /// The job's group; when `None`, taken from the job's `job.requested` record.
    pub group: Option<String>,
    /// Names the group's allow-list names exactly (presets expanded, no wildcards): the
    /// policy's author named them, so `new-destination` never calls them new.
    pub listed_names: Vec<String>,
}

impl DetectContext {
    /// The policy's thresholds, and where `new-destination` keeps its baselines (`None`:
    /// that detector is off).
    pub fn new(policy: &airlock_policy::Policy, baseline_dir: Option<PathBuf>) -> Self {
        Self {
            settings: policy.detectors.clone(),
            baseline_dir,
            group: None,
            listed_names: Vec::new(),
        }
    }
}

/// One detector. Implementations override what they need; both hooks default to nothing.
pub trait Detector {
    /// The detector's id, e.g. `metadata-access`.
    fn id(&self) -> &'static str;

    /// Sees one record, in log order.
    fn observe(&mut self, _rec: &Record, _out: &mut Vec<Alert>) {}

    /// Called once after the last record. `earlier` holds every alert raised so far by this
    /// and the detectors before it in the registry.
    fn finish(&mut self, _earlier: &[Alert], _out: &mut Vec<Alert>) -> Result<(), DetectError> {
        Ok(())
    }
}

/// The ids of every detector, in registry order.
pub const DETECTORS: &[&str] = &[
    "metadata-access",
    "network-scan",
    "dns-tunnelling",
    "denied-egress",
    "persistence-attempt",
    "privileged-operation",
    "rogue-runner",
    "fileless-exec",
    "record-flood",
    "config-changed",
    "new-destination",
];

/// Every detector, fresh, in the order they run.
pub fn registry(ctx: &DetectContext) -> Vec<Box<dyn Detector + Send>> {
    let s = &ctx.settings;
    let mut v: Vec<Box<dyn Detector + Send>> = vec![
        Box::new(MetadataAccess::default()),
        Box::new(NetworkScan::new(
            s.network_scan.destinations,
            s.network_scan.window.0,
        )),
        Box::new(DnsTunnelling::new(s.dns_tunnelling.subdomains)),
        Box::new(DeniedEgress::default()),
        Box::new(PersistenceAttempt::default()),
        Box::new(PrivilegedOperation::default()),
        Box::new(RogueRunner::default()),
        Box::new(FilelessExec::default()),
        Box::new(RecordFlood::default()),
        Box::new(ConfigChanged::default()),
    ];
    if let (true, Some(dir)) = (s.new_destination, &ctx.baseline_dir) {
        v.push(Box::new(
            NewDestination::new(dir.clone(), ctx.group.clone())
                .listing(ctx.listed_names.iter().cloned()),
        ));
    }
    v
}

/// The result of [`detect_report`].
#[derive(Debug, Default)]
pub struct Detection {
    /// Every alert, in registry order.
    pub alerts: Vec<Alert>,
    /// Problems that kept a detector from doing all its work (the baseline file).
    pub errors: Vec<DetectError>,
}

/// The detectors of one job, fed one record at a time as the records are written (the audit
/// queue does this), so no job's records are ever held in memory: each detector keeps only
/// a bounded summary of what it has seen.
pub struct Stream {
    dets: Vec<Box<dyn Detector + Send>>,
    observed: Vec<Vec<Alert>>,
}

impl Stream {
    /// Fresh detectors for one job.
    pub fn new(ctx: &DetectContext) -> Self {
        let dets = registry(ctx);
        let observed = dets.iter().map(|_| Vec::new()).collect();
        Self { dets, observed }
    }

    /// Shows one record (of the job, in log order) to every detector.
    pub fn observe(&mut self, r: &Record) {
        for (d, out) in self.dets.iter_mut().zip(self.observed.iter_mut()) {
            d.observe(r, out);
        }
    }

    /// The job is over: every detector's findings, in registry order.
    pub fn finish(self) -> Detection {
        let mut d = Detection::default();
        for (mut det, mut observed) in self.dets.into_iter().zip(self.observed) {
            d.alerts.append(&mut observed);
            let mut out = Vec::new();
            if let Err(e) = det.finish(&d.alerts, &mut out) {
                d.errors.push(e);
            }
            d.alerts.append(&mut out);
        }
        d
    }
}

/// Runs every detector over one job's records; problems with the baseline are returned
/// beside the alerts.
pub fn detect_report(records: &[Record], ctx: &DetectContext) -> Detection {
    let mut s = Stream::new(ctx);
    for r in records {
        s.observe(r);
    }
    s.finish()
}

/// Runs every detector over one job's records (the records of one job, in log order).
/// Problems with the `new-destination` baseline are dropped; use [`detect_report`] to see
/// them.
pub fn detect(records: &[Record], ctx: &DetectContext) -> Vec<Alert> {
    detect_report(records, ctx).alerts
}

/// Runs [`detect_report`] over the records of each job in a log (records without a job are
/// skipped), jobs in order of first appearance.
pub fn detect_jobs(records: &[Record], ctx: &DetectContext) -> Detection {
    let mut order: Vec<&str> = Vec::new();
    let mut by_job: BTreeMap<&str, Vec<Record>> = BTreeMap::new();
    for r in records {
        if let Some(j) = r.job.as_deref() {
            let e = by_job.entry(j).or_default();
            if e.is_empty() {
                order.push(j);
            }
            e.push(r.clone());
        }
    }
    let mut all = Detection::default();
    for j in order {
        let mut d = detect_report(by_job.get(j).map(Vec::as_slice).unwrap_or(&[]), ctx);
        all.alerts.append(&mut d.alerts);
        all.errors.append(&mut d.errors);
    }
    all
}

/// At most this many evidence records are named per alert (the rest are counted): an alert
/// about a flood must not be a flood itself.
pub const MAX_EVIDENCE: usize = 1000;

/// At most this many distinct things (destinations, names, paths) a detector remembers for
/// one summary; past it, it counts.
pub(crate) const MAX_DISTINCT: usize = 4096;

/// The records behind one alert.
#[derive(Debug, Default, Clone)]
pub(crate) struct Evidence {
    seqs: Vec<u64>,
    /// Evidence records past [`MAX_EVIDENCE`].
    more: u64,
    time_ms: u128,
    job: String,
}

impl Evidence {
    pub(crate) fn add(&mut self, r: &Record) {
        if self.seqs.len() < MAX_EVIDENCE {
            self.seqs.push(r.seq);
        } else {
            self.more += 1;
        }
        self.time_ms = self.time_ms.max(r.time_ms);
        if self.job.is_empty() {
            if let Some(j) = &r.job {
                self.job.clone_from(j);
            }
        }
    }

    /// Adds a record known by its parts (detectors that keep only these).
    pub(crate) fn add_parts(&mut self, seq: u64, time_ms: u128, job: &str) {
        if self.seqs.len() < MAX_EVIDENCE {
            self.seqs.push(seq);
        } else {
            self.more += 1;
        }
        self.time_ms = self.time_ms.max(time_ms);
        if self.job.is_empty() {
            job.clone_into(&mut self.job);
        }
    }

    pub(crate) fn merge(&mut self, other: Evidence) {
        let room = MAX_EVIDENCE.saturating_sub(self.seqs.len());
        self.more += other.more + other.seqs.len().saturating_sub(room) as u64;
        self.seqs.extend(other.seqs.into_iter().take(room));
        self.time_ms = self.time_ms.max(other.time_ms);
        if self.job.is_empty() {
            self.job = other.job;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Records behind the alert, those past [`MAX_EVIDENCE`] included.
    pub(crate) fn len(&self) -> u64 {
        self.seqs.len() as u64 + self.more
    }

    pub(crate) fn alert(
        mut self,
        detector: &str,
        technique: Technique,
        severity: Severity,
        summary: String,
    ) -> Alert {
        self.seqs.sort_unstable();
        self.seqs.dedup();
        Alert {
            detector: detector.to_owned(),
            technique,
            severity,
            job: self.job,
            summary,
            evidence: self.seqs,
            time_ms: self.time_ms,
        }
    }
}

/// A network record (`net.*`) as the detectors read it: the fields of the gateway's
/// `ConnRecord`.
#[derive(Debug, Clone)]
pub(crate) struct Net<'a> {
    /// `dns`, `http`, `https`, `connect`, `drop` or `flow`.
    pub kind: &'a str,
    /// The name asked for or connected to, lower case, without a trailing dot.
    pub name: Option<String>,
    /// The address the gateway resolved.
    pub resolved: Option<IpAddr>,
    /// The address the job dialled.
    pub dialled: Option<SocketAddr>,
    /// Every address of a DNS answer (`answers`, and `resolved`).
    pub answers: Vec<IpAddr>,
    /// Destination port.
    pub port: u16,
    /// The verdict was `deny`.
    pub denied: bool,
    /// An allowed destination whose upstream failed (`ConnRecord::allowed_but_failed`).
    pub allowed_but_failed: bool,
    /// Detector hints.
    pub flags: Vec<&'a str>,
    /// When it happened: the record's own `time_ms` (the gateway's clock at the event),
    /// else the audit record's (which, for network records, is the time of teardown).
    pub time_ms: u128,
}

impl Net<'_> {
    /// Denied by policy (not an upstream failure of an allowed destination).
    pub fn policy_denied(&self) -> bool {
        self.denied && !self.allowed_but_failed
    }

    /// The name (HTTP `Host`, TLS SNI, `CONNECT` target) is an IP address, not a name.
    pub fn ip_name(&self) -> Option<IpAddr> {
        self.name.as_deref().and_then(|n| n.parse().ok())
    }

    /// Let through only because the job's group is in `audit` mode (`audit`: from its
    /// `job.requested`), where a `block` policy would refuse it whatever its allow-list: a
    /// routed flow (the firewall records a flow only for an audit-mode job, and only traffic
    /// no allow rule covers and the gateway does not serve), or a gateway connection to an
    /// address written as the name. Audit mode lets traffic pass; it must not stop seeing.
    pub fn let_through_by_audit(&self, audit: bool) -> bool {
        audit
            && !self.denied
            && (self.kind == "flow"
                || (matches!(self.kind, "http" | "https" | "connect") && self.ip_name().is_some()))
    }

    /// The destination as people write it: `name:port`, `ip:port` or `name`.
    pub fn destination(&self) -> String {
        match (&self.dialled, &self.name) {
            (_, Some(n)) if self.kind == "dns" => n.clone(),
            (_, Some(n)) => format!("{n}:{}", self.port),
            (Some(d), None) => d.to_string(),
            (None, None) => match self.resolved {
                Some(ip) => SocketAddr::new(ip, self.port).to_string(),
                None => format!("?:{}", self.port),
            },
        }
    }
}

/// Whether `rec` is the `job.requested` of a job whose group is in `audit` egress mode.
pub(crate) fn audit_mode(rec: &Record) -> bool {
    rec.payload::<crate::payload::JobRequested>()
        .is_some_and(|r| r.egress_mode == airlock_policy::EgressMode::Audit)
}

/// A 64-bit hash of a string: detectors count distinct destinations by it instead of keeping
/// every string.
pub(crate) fn hash64(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Inserts into a set that stops growing at [`MAX_DISTINCT`]; returns whether it is full.
pub(crate) fn insert_capped<T: Ord>(set: &mut BTreeSet<T>, v: T) -> bool {
    if set.len() < MAX_DISTINCT {
        set.insert(v);
        false
    } else {
        true
    }
}

/// At most this many records a detector keeps a trace of (sequence number, time, hash) for
/// an end-of-job decision; the audit limiter keeps a job far below it.
pub(crate) const MAX_TRACE: usize = 200_000;

/// Lower case, no trailing dot.
pub(crate) fn normalize_name(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

/// Reads a `net.*` record; `None` for any other kind.
pub(crate) fn net(rec: &Record) -> Option<Net<'_>> {
    let kind = rec
        .known_kind()
        .filter(|k| k.is_net())?
        .as_str()
        .strip_prefix("net.")?;
    let d = &rec.data;
    let s = |k: &str| d.get(k).and_then(Value::as_str);
    let dialled: Option<SocketAddr> = s("dialled").and_then(|v| v.parse().ok());
    let resolved: Option<IpAddr> = s("resolved").and_then(|v| v.parse().ok());
    Some(Net {
        kind,
        name: s("name").map(normalize_name),
        resolved,
        dialled,
        answers: strings(d, "answers")
            .into_iter()
            .filter_map(|a| a.parse().ok())
            .chain(resolved)
            .collect(),
        port: d
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .or(dialled.map(|a| a.port()))
            .unwrap_or(0),
        denied: s("verdict") == Some("deny"),
        allowed_but_failed: d
            .get("allowed_but_failed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        flags: d
            .get("flags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        time_ms: d
            .get("time_ms")
            .and_then(Value::as_u64)
            .map(u128::from)
            .filter(|t| *t > 0)
            .unwrap_or(rec.time_ms),
    })
}

/// The strings of a JSON array field.
pub(crate) fn strings<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Up to `n` items joined with `, `, and how many more there are.
pub(crate) fn some_of<I: IntoIterator<Item = String>>(items: I, n: usize) -> String {
    let all: Vec<String> = items.into_iter().collect();
    let mut s = all.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if all.len() > n {
        s.push_str(&format!(" and {} more", all.len() - n));
    }
    s
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
