//! Alerts: what a detector reports about one job, and the stderr summary.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How urgent an alert is. The numbers are OCSF's `severity_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; no action needed.
    Info = 1,
    /// Someone should look when convenient.
    Low = 2,
    /// Someone should look.
    Medium = 3,
    /// Action is needed now.
    High = 4,
    /// Action is needed now and the attack reaches beyond the job.
    Critical = 5,
}

impl Severity {
    /// OCSF `severity_id`.
    pub fn ocsf_id(self) -> u8 {
        self as u8
    }
    /// OCSF `severity` caption.
    pub fn ocsf_name(self) -> &'static str {
        match self {
            Self::Info => "Informational",
            Self::Low => "Low",
            Self::Medium => "Medium",
            Self::High => "High",
            Self::Critical => "Critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "INFO",
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
            Self::Critical => "CRITICAL",
        })
    }
}

/// A MITRE ATT&CK technique.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Technique {
    /// The ATT&CK id, e.g. `T1552.005`.
    pub id: String,
    /// The ATT&CK name, e.g. `Cloud Instance Metadata API`.
    pub name: String,
}

impl Technique {
    /// A technique from its id and name.
    pub fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for Technique {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id, self.name)
    }
}

/// One alert: a detector's finding about one job, with the records that prove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The detector's id, e.g. `metadata-access`.
    pub detector: String,
    /// The ATT&CK technique the behaviour matches.
    pub technique: Technique,
    /// How urgent.
    pub severity: Severity,
    /// The job (empty if the records named none).
    pub job: String,
    /// One line for people.
    pub summary: String,
    /// Sequence numbers of the evidence records in the audit log, ascending.
    pub evidence: Vec<u64>,
    /// Unix time in milliseconds of the latest evidence record.
    pub time_ms: u128,
}

impl Alert {
    /// A stable id: the SHA-256 (hex, first 32 digits) of detector, technique, job and
    /// evidence. Running the detectors again over the same records gives the same id, so a
    /// receiver can drop duplicates (the webhook delivers at least once).
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.detector.as_bytes());
        h.update([0]);
        h.update(self.technique.id.as_bytes());
        h.update([0]);
        h.update(self.job.as_bytes());
        for e in &self.evidence {
            h.update([0]);
            h.update(e.to_string().as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// At most this many evidence sequence numbers are printed per alert in [`summary`].
const SHOWN_EVIDENCE: usize = 8;

/// The alerts of a job as a few lines for stderr at job end, most severe first; an empty
/// string when there are none (a clean job prints nothing).
pub fn summary(alerts: &[Alert]) -> String {
    if alerts.is_empty() {
        return String::new();
    }
    let mut sorted: Vec<&Alert> = alerts.iter().collect();
    sorted.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.detector.cmp(&b.detector))
    });
    let jobs: std::collections::BTreeSet<&str> = alerts.iter().map(|a| a.job.as_str()).collect();
    let mut s = format!(
        "airlock: {} alert{} for job {}\n",
        alerts.len(),
        if alerts.len() == 1 { "" } else { "s" },
        airlock_text::escape(&jobs.into_iter().collect::<Vec<_>>().join(", "))
    );
    for a in sorted {
        let mut ev: Vec<String> = a
            .evidence
            .iter()
            .take(SHOWN_EVIDENCE)
            .map(u64::to_string)
            .collect();
        if a.evidence.len() > SHOWN_EVIDENCE {
            ev.push(format!("… {} more", a.evidence.len() - SHOWN_EVIDENCE));
        }
        s.push_str(&format!(
            "  {:<8} {:<20} {}: {}\n           evidence: records {}\n",
            a.severity.to_string(),
            a.detector,
            a.technique,
            // The summary quotes what the job did (file names, command lines, DNS names).
            airlock_text::Escaped(&a.summary),
            ev.join(", ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(detector: &str, severity: Severity, evidence: Vec<u64>) -> Alert {
        Alert {
            detector: detector.into(),
            technique: Technique::new("T1046", "Network Service Discovery"),
            severity,
            job: "j1".into(),
            summary: "something".into(),
            evidence,
            time_ms: 0,
        }
    }

    #[test]
    fn summary_is_empty_without_alerts_and_sorted_by_severity() {
        assert_eq!(summary(&[]), "");
        let s = summary(&[
            alert("denied-egress", Severity::Medium, vec![1, 2]),
            alert("rogue-runner", Severity::Critical, (1..=10).collect()),
        ]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "airlock: 2 alerts for job j1");
        assert!(
            lines[1].trim_start().starts_with("CRITICAL rogue-runner"),
            "{s}"
        );
        assert!(
            lines[2].ends_with("records 1, 2, 3, 4, 5, 6, 7, 8, … 2 more"),
            "{s}"
        );
        assert!(
            lines[3].trim_start().starts_with("MEDIUM   denied-egress"),
            "{s}"
        );
    }

    #[test]
    fn summary_escapes_what_the_job_chose() {
        let mut a = alert("persistence-attempt", Severity::High, vec![7]);
        a.summary =
            "1 persistence written: /etc/cron.d/x\u{1b}[2K\r\nairlock: all clear\u{202e}".into();
        let s = summary(&[a]);
        assert_eq!(s.lines().count(), 3, "{s:?}");
        assert!(
            !s.chars()
                .any(|c| c != '\n' && (c.is_control() || c == '\u{202e}')),
            "{s:?}"
        );
        assert!(
            s.contains("x\\e[2K\\r\\nairlock: all clear\\u{202e}"),
            "{s:?}"
        );
    }

    #[test]
    fn id_is_stable_and_depends_on_evidence() {
        let a = alert("x", Severity::Low, vec![1, 2]);
        assert_eq!(a.id(), a.clone().id());
        assert_eq!(a.id().len(), 32);
        assert_ne!(a.id(), alert("x", Severity::Low, vec![1, 3]).id());
        assert_ne!(a.id(), alert("x", Severity::Low, vec![12]).id());
    }
}
