//! `denied-egress`: the job tried to reach something its group's egress policy does not
//! allow (exfiltration to a non-allowed domain, a hard-coded IP, DNS-over-HTTPS, …).
//!
//! Decision: one alert per job, listing every policy-denied network record that no earlier
//! detector (`metadata-access`, `network-scan`, `dns-tunnelling`) has already explained, so
//! an attack is reported once under its most specific name. Upstream failures of allowed
//! destinations (resolver down, connect refused) are not denials and are ignored.

use std::collections::{BTreeSet, HashSet};

use super::{net, some_of, DetectError, Detector, Evidence};
use crate::alert::{Alert, Severity, Technique};
use crate::Record;

/// The detector.
#[derive(Debug, Default)]
pub struct DeniedEgress {
    denied: Vec<(String, Record)>,
}

impl Detector for DeniedEgress {
    fn id(&self) -> &'static str {
        "denied-egress"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        if let Some(n) = net(rec) {
            if n.policy_denied() {
                self.denied.push((n.destination(), rec.clone()));
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
        for (d, r) in &self.denied {
            if !explained.contains(&r.seq) {
                ev.add(r);
                dests.insert(d.clone());
            }
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
