//! The result model shared by `scan host`, `scan org` and the renderers.
//!
//! JSON schema (version 1) — what `--format json` prints:
//!
//! ```text
//! {
//!   "schema": "airlock-hostscan/1",
//!   "kind": "host" | "org",
//!   "target": "/" | "<root>" | "<org>",
//!   "summary": { "pass": N, "fail": N, "unknown": N },
//!   "items": [ {
//!       "id": "ephemeral-runners",          // stable rule id, also the SARIF ruleId
//!       "number": 1,                        // position in the spec's checklist (1..=26)
//!       "section": "deployment" | "runtime" | "operational",
//!       "title": "Runners are ephemeral (fresh state per job)",
//!       "status": "pass" | "fail" | "unknown",
//!       "reason": "one sentence",
//!       "evidence": [ { "source": "/etc/… | command: … | api: GET …", "detail": "…" } ]
//!   } ]
//! }
//! ```

use serde::Serialize;

/// The three outcomes of a checklist item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The evidence shows the item is met.
    Pass,
    /// The evidence shows the item is not met.
    Fail,
    /// Nothing conclusive could be read (or only GitHub's API can tell).
    Unknown,
}

impl Status {
    /// Lower-case name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        }
    }
}

/// The spec's three checklist sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// "Deployment Security".
    Deployment,
    /// "Runtime Security".
    Runtime,
    /// "Operational Security".
    Operational,
}

/// One piece of evidence: where it was read and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// A path as seen on the scanned host (`/etc/...`), `command: ...` or `api: GET ...`.
    pub source: String,
    /// What was found there.
    pub detail: String,
}

impl Evidence {
    /// Evidence read at `source`.
    pub fn new(source: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            detail: detail.into(),
        }
    }
}

/// What a check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Pass, fail or unknown.
    pub status: Status,
    /// One sentence saying why.
    pub reason: String,
    /// What was read to decide.
    pub evidence: Vec<Evidence>,
}

impl Outcome {
    /// A passing outcome.
    pub fn pass(reason: impl Into<String>, evidence: Vec<Evidence>) -> Self {
        Self {
            status: Status::Pass,
            reason: reason.into(),
            evidence,
        }
    }
    /// A failing outcome.
    pub fn fail(reason: impl Into<String>, evidence: Vec<Evidence>) -> Self {
        Self {
            status: Status::Fail,
            reason: reason.into(),
            evidence,
        }
    }
    /// An inconclusive outcome.
    pub fn unknown(reason: impl Into<String>, evidence: Vec<Evidence>) -> Self {
        Self {
            status: Status::Unknown,
            reason: reason.into(),
            evidence,
        }
    }
}

/// Static description of a checklist item.
#[derive(Debug, Clone, Copy)]
pub struct ItemMeta {
    /// Stable id (kebab case); the SARIF rule id.
    pub id: &'static str,
    /// Position in the spec's checklist, 1-based.
    pub number: u8,
    /// Checklist section.
    pub section: Section,
    /// The checklist line, as in the spec.
    pub title: &'static str,
}

/// One evaluated checklist item.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    /// Stable id.
    pub id: &'static str,
    /// Position in the checklist.
    pub number: u8,
    /// Section.
    pub section: Section,
    /// Checklist line.
    pub title: &'static str,
    /// Outcome.
    pub status: Status,
    /// Why.
    pub reason: String,
    /// What was read.
    pub evidence: Vec<Evidence>,
}

impl ItemResult {
    /// Joins an item's description with its outcome.
    /// Repeated evidence (same source and detail) is kept once.
    pub fn new(meta: ItemMeta, outcome: Outcome) -> Self {
        let mut evidence: Vec<Evidence> = Vec::with_capacity(outcome.evidence.len());
        for e in outcome.evidence {
            if !evidence.contains(&e) {
                evidence.push(e);
            }
        }
        Self {
            id: meta.id,
            number: meta.number,
            section: meta.section,
            title: meta.title,
            status: outcome.status,
            reason: outcome.reason,
            evidence,
        }
    }
}

/// Which scan produced a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    /// `scan host`.
    Host,
    /// `scan org`.
    Org,
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Items that pass.
    pub pass: usize,
    /// Items that fail.
    pub fail: usize,
    /// Items that could not be decided.
    pub unknown: usize,
}

/// The whole result of a scan.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `airlock-hostscan/1`.
    pub schema: &'static str,
    /// Host or org.
    pub kind: ReportKind,
    /// The root scanned, or the organisation.
    pub target: String,
    /// Counts.
    pub summary: Summary,
    /// One entry per item, in checklist order.
    pub items: Vec<ItemResult>,
}

/// The JSON schema identifier.
pub const SCHEMA: &str = "airlock-hostscan/1";

impl Report {
    /// A report over `items`, counting them.
    pub fn new(kind: ReportKind, target: impl Into<String>, items: Vec<ItemResult>) -> Self {
        let mut r = Self {
            schema: SCHEMA,
            kind,
            target: target.into(),
            summary: Summary::default(),
            items,
        };
        r.recount();
        r
    }

    fn recount(&mut self) {
        let mut s = Summary::default();
        for i in &self.items {
            match i.status {
                Status::Pass => s.pass += 1,
                Status::Fail => s.fail += 1,
                Status::Unknown => s.unknown += 1,
            }
        }
        self.summary = s;
    }

    /// The process exit code: 1 if any item fails, else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.summary.fail > 0)
    }

    /// Fills this (host) report's items with an org report's results.
    ///
    /// For every item the org report decided (pass or fail), the result here becomes the
    /// worse of the two (fail beats pass beats unknown) and the evidence of both is kept, the
    /// reasons joined. Items the org scan left unknown are untouched.
    pub fn merge_org(&mut self, org: &Report) {
        for o in &org.items {
            if o.status == Status::Unknown {
                continue;
            }
            let Some(h) = self.items.iter_mut().find(|h| h.id == o.id) else {
                continue;
            };
            let rank = |s: Status| match s {
                Status::Unknown => 0,
                Status::Pass => 1,
                Status::Fail => 2,
            };
            if h.status == Status::Unknown {
                h.reason = o.reason.clone();
            } else {
                h.reason = format!("{} Org: {}", h.reason, o.reason);
            }
            if rank(o.status) > rank(h.status) {
                h.status = o.status;
            }
            for e in &o.evidence {
                if !h.evidence.contains(e) {
                    h.evidence.push(e.clone());
                }
            }
        }
        self.recount();
    }
}
