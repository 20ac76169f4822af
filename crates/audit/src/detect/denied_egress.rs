//! `denied-egress`: the job tried to reach something its group's egress policy does not
//! allow (exfiltration to a non-allowed domain, a hard-coded IP, DNS-over-HTTPS, …).
//!
//! Decision: one alert per job, listing every policy-denied network record that no earlier
//! detector (`metadata-access`, `network-scan`, `dns-tunnelling`) has already explained, so
//! an attack is reported once under its most specific name. Upstream failures of allowed
//! destinations (resolver down, connect refused) are not denials and are ignored.
//!
//! In an `audit`-mode group nothing outside the never-reachable targets is denied, yet a
//! connection to a hard-coded address is still what this detector is for: the same alert
//! lists every connection let through by audit mode to an address no DNS answer of the job
//! had named before (a routed flow to such an address, or HTTP/TLS/CONNECT with an address as
//! the name; an answer that comes later does not make an earlier connection looked-up).
//! Names that audit mode let through are `new-destination`'s business; a flow to an address
//! the job resolved (`ssh` to a host it looked up) is not hard-coded.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use super::{insert_capped, net, some_of, DetectError, Detector, Evidence, MAX_TRACE};
use crate::alert::{Alert, Severity, Technique};
use crate::{Kind, Record};

/// The detector.
#[derive(Debug, Default)]
pub struct DeniedEgress {
    /// (destination index in `dests`, or none past the cap; sequence number; time), at most
    /// [`MAX_TRACE`].
    denied: Vec<(Option<u32>, u64, u128)>,
    dests: Vec<String>,
    index: std::collections::HashMap<String, u32>,
    job: String,
    /// Let through by audit mode: (event time, destination, dialled or named address,
    /// sequence number), at most [`MAX_TRACE`].
    let_through: Vec<(u128, String, Option<IpAddr>, u64)>,
    /// Every address a DNS answer (or the gateway's own resolution of a name) gave the job,
    /// and when it first did; at most [`super::MAX_DISTINCT`] addresses.
    answered: HashMap<IpAddr, u128>,
    /// The job's group is in `audit` egress mode.
    audit: bool,
}

impl Detector for DeniedEgress {
    fn id(&self) -> &'static str {
        "denied-egress"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        if rec.is(Kind::JobRequested) {
            self.audit = super::audit_mode(rec);
        }
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
            } else if n.let_through_by_audit(self.audit) && !n.policy_denied() {
                if self.let_through.len() < MAX_TRACE {
                    let addr = n.ip_name().or(n.dialled.map(|d| d.ip()));
                    self.let_through
                        .push((n.time_ms, n.destination(), addr, rec.seq));
                }
            } else if !n.denied && n.ip_name().is_none() {
                for a in &n.answers {
                    if self.answered.len() >= super::MAX_DISTINCT && !self.answered.contains_key(a)
                    {
                        break;
                    }
                    let t = self.answered.entry(*a).or_insert(n.time_ms);
                    *t = (*t).min(n.time_ms);
                }
            }
            if self.job.is_empty() {
                if let Some(j) = &rec.job {
                    self.job.clone_from(j);
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
        let mut raw = BTreeSet::new();
        for (t, d, addr, seq) in &self.let_through {
            let named = addr
                .and_then(|a| self.answered.get(&a))
                .is_some_and(|first| first <= t);
            if !named && !explained.contains(seq) {
                ev.add_parts(*seq, *t, &self.job);
                insert_capped(&mut raw, d.clone());
            }
        }
        if ev.is_empty() {
            return Ok(());
        }
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let mut parts = Vec::new();
        if !dests.is_empty() {
            let n = dests.len();
            parts.push(format!(
                "egress to {n} destination{} outside the group's allow-list was refused: {}",
                plural(n),
                some_of(dests.into_iter(), 6)
            ));
        }
        if !raw.is_empty() {
            let n = raw.len();
            parts.push(format!(
                "{n} connection{} to a hard-coded address (no DNS answer named it) let through by audit mode: {}",
                plural(n),
                some_of(raw.into_iter(), 6)
            ));
        }
        out.push(ev.alert(
            self.id(),
            Technique::new("T1041", "Exfiltration Over C2 Channel"),
            Severity::Medium,
            parts.join("; "),
        ));
        Ok(())
    }
}
