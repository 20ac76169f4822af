//! 26. Periodic penetration testing of runner infrastructure.
//!
//! The newest `airlock drill` in airlock's audit log (`drill.completed`): passed within
//! [`DRILL_MAX_DAYS`] days passes; one that let an attack through, or older, fails. Without
//! one, `[penetration-testing]` in `/etc/airlock/attestations.toml`: within 365 days passes,
//! older fails, absent is unknown.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// A drill older than this no longer says anything about today's airlock and policy.
pub const DRILL_MAX_DAYS: u64 = 30;

/// See the module documentation.
pub struct PenetrationTesting;

impl Check for PenetrationTesting {
    fn meta(&self) -> ItemMeta {
        item(
            "penetration-testing",
            26,
            Section::Operational,
            "Periodic penetration testing of runner infrastructure",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if let Some(o) = drilled(facts) {
            return o;
        }
        common::attested(
            facts,
            "penetration-testing",
            365,
            "the last penetration test",
        )
        .unwrap_or_else(|| {
            Outcome::unknown(
                format!(
                    "not visible on a host: record it as [penetration-testing] in {}",
                    common::ATTESTATIONS_PATH
                ),
                vec![],
            )
        })
    }
}

/// The item judged from the newest drill in the audit log.
fn drilled(facts: &Facts<'_>) -> Option<Outcome> {
    let a = facts.airlock.audit.as_ref()?;
    let (at_ms, d) = a.last_drill.as_ref()?;
    let now_ms = facts
        .now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let age_days = (now_ms.saturating_sub(*at_ms) / 86_400_000) as u64;
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(*at_ms as u64),
    );
    let ev = vec![Evidence::new(
        &a.dir,
        format!(
            "airlock drill at {when} against group {}: {} attacks, {} got through, {} rows failed",
            d.group, d.attacks, d.got_through, d.failed
        ),
    )];
    Some(if !d.passed {
        Outcome::fail(
            format!("the last airlock drill ({age_days} days ago) did not pass"),
            ev,
        )
    } else if age_days > DRILL_MAX_DAYS {
        Outcome::fail(
            format!(
                "the last airlock drill passed {age_days} days ago, more than {DRILL_MAX_DAYS}"
            ),
            ev,
        )
    } else {
        Outcome::pass(
            format!("airlock drill passed {age_days} days ago (at most {DRILL_MAX_DAYS})"),
            ev,
        )
    })
}
