//! `new-destination`: a job of a group used a domain no earlier job of that group used — an
//! allowed but unusual destination (a wildcard rule reaching somewhere new, or anything at
//! all in an `audit`-mode group).
//!
//! The baseline is learned: one JSON file per group, `<baseline_dir>/<group>.json`.
//! Decisions:
//! - The first job of a `block`-mode group (no baseline file yet) only learns: its domains
//!   become the baseline and it raises no alert (its allow-list vouched for them). Seed the
//!   baseline from a run you trust. In an `audit`-mode group nothing vouches for any name —
//!   that is where users start, and where a first job's exfiltration would otherwise be
//!   learned in silence — so the first job alerts too.
//! - A name the group's allow-list names exactly (`DetectContext::listed_names`) is never
//!   new: the policy's author wrote it down. Only names reached through a wildcard (or, in
//!   audit mode, anything not listed) are.
//! - Later jobs alert on each domain not in the baseline, once: the domain is added to the
//!   baseline with the alert, so the next job using it is quiet.
//! - Only allowed traffic counts (DNS answers, HTTP Host, TLS SNI, CONNECT names); refused
//!   names are `denied-egress`'s business and never enter the baseline. IP literals are not
//!   domains and are ignored.
//! - Concurrent jobs of one group may race on the file (read, merge, rename): the loser's
//!   additions are lost and alert once more later. The file is always whole (written to a
//!   temporary file, then renamed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{net, normalize_name, some_of, DetectError, Detector, Evidence};
use crate::alert::{Alert, Severity, Technique};
use crate::payload::JobRequested;
use crate::{Kind, Record};

/// What a group's baseline remembers of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Unix time in milliseconds of the first record that used it.
    pub first_seen_ms: u128,
    /// The job that first used it.
    pub first_job: String,
}

/// A group's learned baseline.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Baseline {
    /// Format version (1).
    pub version: u32,
    /// Jobs that have contributed.
    pub jobs: u64,
    /// Domains used so far.
    pub domains: BTreeMap<String, Seen>,
}

impl Baseline {
    /// The file of `group` in `dir`.
    pub fn path(dir: &Path, group: &str) -> PathBuf {
        dir.join(format!("{group}.json"))
    }

    /// Reads a baseline; `None` if the file does not exist yet.
    pub fn load(path: &Path) -> Result<Option<Self>, DetectError> {
        match std::fs::read(path) {
            Ok(d) => serde_json::from_slice(&d).map(Some).map_err(|source| {
                DetectError::BaselineCorrupt {
                    path: path.to_owned(),
                    source,
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DetectError::Baseline {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes a baseline whole (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), DetectError> {
        let io = |source| DetectError::Baseline {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(&tmp, body).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Group names become file names: only the policy's `[A-Za-z0-9_-]{1,64}`.
fn safe_group(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= 64
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The detector.
#[derive(Debug)]
pub struct NewDestination {
    dir: PathBuf,
    group: Option<String>,
    /// domain → (first use time, its records).
    used: BTreeMap<String, (u128, Evidence)>,
    job: String,
    /// Names the allow-list names exactly.
    listed: BTreeSet<String>,
    /// The job's group is in `audit` egress mode (from `job.requested`).
    audit: bool,
}

impl NewDestination {
    /// Baselines live in `dir`; `group` overrides the one of `job.requested`.
    pub fn new(dir: PathBuf, group: Option<String>) -> Self {
        Self {
            dir,
            group,
            used: BTreeMap::new(),
            job: String::new(),
            listed: BTreeSet::new(),
            audit: false,
        }
    }

    /// Names the group's allow-list names exactly: never new.
    pub fn listing(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.listed = names.into_iter().map(|n| normalize_name(&n)).collect();
        self
    }
}

impl Detector for NewDestination {
    fn id(&self) -> &'static str {
        "new-destination"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        if self.job.is_empty() {
            if let Some(j) = &rec.job {
                self.job.clone_from(j);
            }
        }
        if rec.is(Kind::JobRequested) {
            self.audit = super::audit_mode(rec);
            if self.group.is_none() {
                self.group = rec.payload::<JobRequested>().map(|r| r.group);
            }
        }
        let Some(n) = net(rec) else { return };
        if n.denied || !matches!(n.kind, "dns" | "http" | "https" | "connect") {
            return;
        }
        let Some(name) = n
            .name
            .filter(|x| !x.is_empty() && x.parse::<IpAddr>().is_err() && !self.listed.contains(x))
        else {
            return;
        };
        if !self.used.contains_key(&name) && self.used.len() >= super::MAX_DISTINCT {
            // Bounded: past this many new domains in one job, the rest wait for a later job.
            return;
        }
        let e = self
            .used
            .entry(name)
            .or_insert_with(|| (n.time_ms, Evidence::default()));
        e.0 = e.0.min(n.time_ms);
        e.1.add(rec);
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        let Some(group) = self.group.clone().filter(|g| safe_group(g)) else {
            return Ok(());
        };
        let path = Baseline::path(&self.dir, &group);
        let (mut base, learning) = match Baseline::load(&path)? {
            Some(b) => (b, false),
            None => (
                Baseline {
                    version: 1,
                    ..Baseline::default()
                },
                !self.audit,
            ),
        };
        let mut ev = Evidence::default();
        let mut fresh = BTreeSet::new();
        for (domain, (t, e)) in std::mem::take(&mut self.used) {
            if base.domains.contains_key(&domain) {
                continue;
            }
            base.domains.insert(
                domain.clone(),
                Seen {
                    first_seen_ms: t,
                    first_job: self.job.clone(),
                },
            );
            if !learning {
                ev.merge(e);
                fresh.insert(domain);
            }
        }
        base.jobs += 1;
        base.save(&path)?;
        if ev.is_empty() {
            return Ok(());
        }
        let n = fresh.len();
        out.push(ev.alert(
            self.id(),
            Technique::new("T1071.001", "Application Layer Protocol: Web Protocols"),
            Severity::Low,
            format!(
                "{n} domain{} never used before by group {group}{}: {}",
                if n == 1 { "" } else { "s" },
                if self.audit {
                    " (audit mode: let through, nothing allow-listed vouches for it)"
                } else {
                    ""
                },
                some_of(fresh.into_iter(), 6)
            ),
        ));
        Ok(())
    }
}
