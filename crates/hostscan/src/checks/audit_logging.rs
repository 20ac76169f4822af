//! 16. Audit logging enabled and monitored.
//!
//! Pass if airlock's audit log (`/var/lib/airlock/audit/audit.jsonl`) has records, or auditd
//! is enabled with rules (`/etc/audit/rules.d/*.rules`, `/etc/audit/audit.rules`). Fail
//! otherwise ("monitored" is a process: see access-log-review).

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct AuditLogging;

impl Check for AuditLogging {
    fn meta(&self) -> ItemMeta {
        item(
            "audit-logging",
            16,
            Section::Runtime,
            "Audit logging enabled and monitored",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let mut ev = Vec::new();
        if let Some(a) = &facts.airlock.audit {
            ev.push(Evidence::new(
                &a.dir,
                format!("airlock audit log: {} records", a.records),
            ));
        }
        let rules = common::audit_rules(facts);
        let auditd = common::auditd_enabled(facts);
        let auditd_ok = auditd.is_some() && !rules.is_empty();
        if let Some(e) = auditd {
            ev.push(e);
        }
        if let Some((f, _)) = rules.first() {
            ev.push(Evidence::new(f, format!("audit rules: {}", rules.len())));
        }
        if facts.airlock.audit.is_some() || auditd_ok {
            Outcome::pass("an audit log is being written", ev)
        } else {
            Outcome::fail(
                "neither airlock's audit log nor auditd with rules is active",
                ev,
            )
        }
    }
}
