//! `dns-tunnelling`: data smuggled out in DNS names. Two signs, one alert per job: names the
//! gateway flagged (`dns-tunnelling-suspect`: very long, or long high-entropy labels), and
//! many distinct names queried below one parent domain.

use std::collections::{BTreeMap, BTreeSet};

use super::{hash64, insert_capped, net, some_of, DetectError, Detector, Evidence, MAX_DISTINCT};
use crate::alert::{Alert, Severity, Technique};
use crate::Record;

/// Two-label suffixes under which registrations happen at the third label (`example.co.uk`).
/// Hand-written instead of the Public Suffix List: grouping only needs to be close, and a
/// wrong guess here groups *more* names under one parent, which errs towards alerting.
const SECOND_LEVEL: &[&str] = &[
    "co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go",
];

/// The domain a name's subdomains are counted under: its last two labels, or three when the
/// second-to-last is a generic second level under a two-letter country code (`co.uk`).
pub fn parent_domain(name: &str) -> String {
    let labels: Vec<&str> = name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
        .collect();
    let n = labels.len();
    let keep = if n >= 3
        && labels[n - 1].len() == 2
        && SECOND_LEVEL.contains(&labels[n - 2].to_ascii_lowercase().as_str())
    {
        3
    } else {
        2
    };
    labels[n.saturating_sub(keep)..]
        .join(".")
        .to_ascii_lowercase()
}

/// The detector.
#[derive(Debug)]
pub struct DnsTunnelling {
    threshold: usize,
    flagged: Evidence,
    flagged_names: BTreeSet<String>,
    /// parent → (distinct names by hash, their records): at most [`MAX_DISTINCT`] parents
    /// of at most [`MAX_DISTINCT`] names each (a parent past that is a tunnel anyway).
    below: BTreeMap<String, (BTreeSet<u64>, Evidence)>,
}

impl DnsTunnelling {
    /// Fires on a flagged name, or on `subdomains` distinct names below one parent.
    pub fn new(subdomains: u32) -> Self {
        Self {
            threshold: usize::try_from(subdomains).unwrap_or(usize::MAX).max(1),
            flagged: Evidence::default(),
            flagged_names: BTreeSet::new(),
            below: BTreeMap::new(),
        }
    }
}

impl Detector for DnsTunnelling {
    fn id(&self) -> &'static str {
        "dns-tunnelling"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        let Some(n) = net(rec) else { return };
        if n.kind != "dns" {
            return;
        }
        let Some(name) = n.name.as_deref() else {
            return;
        };
        if n.flags.contains(&"dns-tunnelling-suspect") {
            self.flagged.add(rec);
            insert_capped(&mut self.flagged_names, name.to_owned());
        }
        let parent = parent_domain(name);
        if parent != name {
            if !self.below.contains_key(&parent) && self.below.len() >= MAX_DISTINCT {
                // Full: parents with a single name cannot be a tunnel yet; make room.
                self.below.retain(|_, (names, _)| names.len() > 1);
                if self.below.len() >= MAX_DISTINCT {
                    return;
                }
            }
            let e = self.below.entry(parent).or_default();
            insert_capped(&mut e.0, hash64(name));
            e.1.add(rec);
        }
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        let mut ev = std::mem::take(&mut self.flagged);
        let mut why = Vec::new();
        if !self.flagged_names.is_empty() {
            why.push(format!(
                "{} suspicious name{} ({})",
                self.flagged_names.len(),
                if self.flagged_names.len() == 1 {
                    ""
                } else {
                    "s"
                },
                some_of(
                    self.flagged_names
                        .iter()
                        .map(|n| n.chars().take(60).collect::<String>()),
                    2
                )
            ));
        }
        for (parent, (names, e)) in std::mem::take(&mut self.below) {
            if names.len() >= self.threshold {
                why.push(format!("{} distinct names below {parent}", names.len()));
                ev.merge(e);
            }
        }
        if ev.is_empty() {
            return Ok(());
        }
        out.push(ev.alert(
            self.id(),
            Technique::new("T1071.004", "Application Layer Protocol: DNS"),
            Severity::High,
            format!("DNS looks like a data channel: {}", why.join("; ")),
        ));
        Ok(())
    }
}
