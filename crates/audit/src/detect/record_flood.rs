//! `record-flood`: the job caused so many records that airlock aggregated them instead of
//! writing them one by one (crate::limit), or its teardown file scan had to stop early. A job
//! that calls a denied syscall a million times, asks a million refused DNS names or leaves
//! millions of files is either broken or trying to exhaust the host through airlock's own
//! records, or to bury something in the noise: worth an alert of its own, naming the kinds and
//! the counts. The records it aggregated still reach the other detectors (as written records
//! and as `audit.aggregated` records).
//!
//! Fires on the job's `audit.flood` summary when the aggregated count reaches the group's
//! `flood_alert`, or a job-wide cap (`max_records`, `max_bytes`) was reached; and on a
//! `file.scan` summary that says the scan stopped before the end.

use serde_json::Value;

use super::{DetectError, Detector, Evidence};
use crate::alert::{Alert, Severity, Technique};
use crate::{Kind, Record};

/// The detector.
#[derive(Debug, Default)]
pub struct RecordFlood {
    ev: Evidence,
    why: Vec<String>,
    capped: bool,
    fired: bool,
}

impl Detector for RecordFlood {
    fn id(&self) -> &'static str {
        "record-flood"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        let d = &rec.data;
        match rec.known_kind() {
            Some(Kind::AuditAggregated) => self.ev.add(rec),
            Some(Kind::AuditFlood) => {
                let n = d.get("aggregated").and_then(Value::as_u64).unwrap_or(0);
                let threshold = d
                    .get("flood_alert")
                    .and_then(Value::as_u64)
                    .unwrap_or(10_000);
                let capped = d.get("capped").and_then(Value::as_str);
                if n < threshold && capped.is_none() {
                    return;
                }
                self.fired = true;
                self.ev.add(rec);
                let mut kinds: Vec<(String, u64)> = d
                    .get("by_kind")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                            .collect()
                    })
                    .unwrap_or_default();
                kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
                let list = kinds
                    .iter()
                    .take(6)
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.why.push(format!(
                    "{n} records aggregated instead of written ({list})"
                ));
                if let Some(c) = capped {
                    self.capped = true;
                    self.why.push(format!(
                        "the job reached its audit cap {c}; everything after it was only counted"
                    ));
                }
            }
            Some(Kind::FileScan) if d.get("complete").and_then(Value::as_bool) == Some(false) => {
                self.fired = true;
                self.capped = true;
                self.ev.add(rec);
                let seen = d.get("entries").and_then(Value::as_u64).unwrap_or(0);
                let why = d.get("stopped").and_then(Value::as_str).unwrap_or("a");
                self.why.push(format!(
                    "the teardown file scan stopped at its {why} bound after {seen} entries: files past it were not examined"
                ));
            }
            _ => {}
        }
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        if !self.fired {
            return Ok(());
        }
        out.push(std::mem::take(&mut self.ev).alert(
            self.id(),
            Technique::new("T1499", "Endpoint Denial of Service"),
            if self.capped {
                Severity::High
            } else {
                Severity::Medium
            },
            format!("record flood: {}", self.why.join("; ")),
        ));
        Ok(())
    }
}
