//! `denied-egress`: the job tried to reach something its group's egress policy does not
//! allow (exfiltration to a non-allowed domain, a hard-coded IP, DNS-over-HTTPS, …).
//!
//! Decision: one alert per job, listing every policy-denied network record that no earlier
//! detector (`metadata-access`, `network-scan`, `dns-tunnelling`) has already explained, so
//! an attack is reported once under its most specific name. Upstream failures of allowed
//! destinations (resolver down, connect refused) are not denials and are ignored.

use std::collections::{BTreeSet, HashSet};

use super::{insert_capped, net, some_of, DetectError, Detector, Evidence, MAX_TRACE};
use crate::alert::{Alert, Severity, Technique};
use crate::Record;

/// The detector.
#[derive(Debug, Default)]
pub struct DeniedEgress {
    /// (destination index in `dests`, or none past the cap; sequence number; time), at most
    /// [`MAX_TRACE`].
    denied: Vec<(Option<u32>, u64, u128)>,
    dests: Vec<String>,
    index: std::collections::HashMap<String, u32>,
    job: String,
}

impl Detector for DeniedEgress {
    fn id(&self) -> &'static str {
        "denied-egress"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        if let Some(n) = net(rec) {
            if n.policy_denied() && self.denied.len() < MAX_TRACE {
                let d = n.destination();
                let id = match self.index.get(&d) {
                    Some(i) => Some(*i),
                    None if self.dests.len() < super::MAX_DISTINCT => {
                        let i = u32::try_from(self.dests.len()).unwrap_or(u32::MAX);
                        self.index.insert(d.clone(), i);
                        self.dests.push(d);
                        Some(i)
                    }
                    None => None,
                };
                self.denied.push((id, rec.seq, n.time_ms));
                if self.job.is_empty() {
                    if let Some(j) = &rec.job {
                        self.job.clone_from(j);
                    }
                }
            }
        }
    }

    fn finish(&mut self, earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        let explained: HashSet<u64> = earlier
            .iter()
            .flat_map(|a| a.evidence.iter().copied())
            .collect();
        let mut ev = Evidence::default();
        let mut dests = BTreeSet::new();
        let mut unnamed = false;
        for (d, seq, t) in &self.denied {
            if !explained.contains(seq) {
                ev.add_parts(*seq, *t, &self.job);
                match d.and_then(|i| self.dests.get(i as usize)) {
                    Some(d) => {
                        insert_capped(&mut dests, d.clone());
                    }
                    None => unnamed = true,
                }
            }
        }
        if unnamed {
            dests.insert("(more)".to_owned());
        }
        if ev.is_empty() {
            return Ok(());
        }
        let n = dests.len();
        out.push(ev.alert(
            self.id(),
            Technique::new("T1041", "Exfiltration Over C2 Channel"),
            Severity::Medium,
            format!(
                "egress to {n} destination{} outside the group's allow-list was refused: {}",
                if n == 1 { "" } else { "s" },
                some_of(dests.into_iter(), 6)
            ),
        ));
        Ok(())
    }
}
