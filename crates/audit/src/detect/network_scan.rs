//! `network-scan`: many distinct denied destinations (address or name, and port) within a
//! short window — a job probing the internal network or sweeping ports.
//!
//! In an `audit`-mode group the probes are let through, not denied: there the destinations
//! that count are those a `block` policy would refuse whatever its allow-list (routed flows,
//! connections to an address written as the name; `Net::let_through_by_audit`). Allowed
//! connections by name through the gateway never count, in any mode: a link checker talking
//! to fifty web sites is not scanning.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::{hash64, insert_capped, net, some_of, DetectError, Detector, Evidence, MAX_TRACE};
use crate::alert::{Alert, Severity, Technique};
use crate::{Kind, Record};

/// The detector.
#[derive(Debug)]
pub struct NetworkScan {
    threshold: usize,
    window_ms: u128,
    /// Denied connection attempts: (event time, hash of the destination, sequence number),
    /// at most [`MAX_TRACE`].
    seen: Vec<(u128, u64, u64)>,
    /// Destination names for the summary (bounded).
    names: BTreeMap<u64, String>,
    job: String,
    /// The job's group is in `audit` egress mode.
    audit: bool,
}

impl NetworkScan {
    /// Fires on `destinations` distinct denied destinations within `window`.
    pub fn new(destinations: u32, window: Duration) -> Self {
        Self {
            threshold: usize::try_from(destinations).unwrap_or(usize::MAX).max(1),
            window_ms: window.as_millis(),
            seen: Vec::new(),
            audit: false,
            names: BTreeMap::new(),
            job: String::new(),
        }
    }
}

impl Detector for NetworkScan {
    fn id(&self) -> &'static str {
        "network-scan"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        // DNS denials are names, not probes of hosts and ports: they are left to
        // `denied-egress` and `dns-tunnelling`.
        if rec.is(Kind::JobRequested) {
            self.audit = super::audit_mode(rec);
        }
        if let Some(n) = net(rec) {
            if n.kind != "dns"
                && (n.policy_denied() || n.let_through_by_audit(self.audit))
                && self.seen.len() < MAX_TRACE
            {
                let d = n.destination();
                let h = hash64(&d);
                if self.names.len() < super::MAX_DISTINCT {
                    self.names.entry(h).or_insert(d);
                }
                self.seen.push((n.time_ms, h, rec.seq));
                if self.job.is_empty() {
                    if let Some(j) = &rec.job {
                        self.job.clone_from(j);
                    }
                }
            }
        }
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        // Network records reach the log in batches at teardown, firewall drops and gateway
        // records separately: order them by their own event time first.
        self.seen.sort_by_key(|(t, _, seq)| (*t, *seq));
        let mut window: VecDeque<usize> = VecDeque::new();
        let mut counts: HashMap<u64, usize> = HashMap::new();
        let mut fired_at = None;
        for (i, (t, dest, _)) in self.seen.iter().enumerate() {
            window.push_back(i);
            *counts.entry(*dest).or_default() += 1;
            while let Some(&first) = window.front() {
                let (ft, fdest, _) = &self.seen[first];
                if t.saturating_sub(*ft) <= self.window_ms {
                    break;
                }
                if let Some(c) = counts.get_mut(fdest) {
                    *c -= 1;
                    if *c == 0 {
                        counts.remove(fdest);
                    }
                }
                window.pop_front();
            }
            if counts.len() >= self.threshold {
                fired_at = window.front().copied();
                break;
            }
        }
        let Some(start) = fired_at else {
            return Ok(());
        };
        // Everything from the start of the first window that crossed the threshold to the
        // end of the job is one scan: one alert, all of it as evidence.
        let mut ev = Evidence::default();
        let mut distinct = std::collections::HashSet::new();
        let mut dests = BTreeSet::new();
        for (t, d, seq) in &self.seen[start..] {
            ev.add_parts(*seq, *t, &self.job);
            distinct.insert(*d);
            if let Some(n) = self.names.get(d) {
                insert_capped(&mut dests, n.clone());
            }
        }
        let n_dests = distinct.len();
        out.push(ev.alert(
            self.id(),
            Technique::new("T1046", "Network Service Discovery"),
            Severity::High,
            format!(
                "{} distinct {} destinations, at least {} of them within {} ms: {}",
                n_dests,
                if self.audit {
                    "denied or (audit mode) let-through"
                } else {
                    "denied"
                },
                self.threshold,
                self.window_ms,
                some_of(dests.into_iter(), 6)
            ),
        ));
        Ok(())
    }
}
