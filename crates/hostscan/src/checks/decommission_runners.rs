//! 23. Decommission runners when no longer needed.
//!
//! On the host: a configured runner (`.runner` present, not ephemeral) that no enabled unit
//! starts is a registration left behind: fail. Otherwise only GitHub knows which registered
//! runners are gone: unknown, filled by `scan org` (offline runners fail).

use super::{item, Check, NEEDS_ORG};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct DecommissionRunners;

impl Check for DecommissionRunners {
    fn meta(&self) -> ItemMeta {
        item(
            "decommission-runners",
            23,
            Section::Operational,
            "Decommission runners when no longer needed",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let stale: Vec<Evidence> = facts
            .runners
            .iter()
            .filter(|r| {
                r.config.is_some() && !r.ephemeral() && !r.unit.as_ref().is_some_and(|u| u.enabled)
            })
            .map(|r| {
                Evidence::new(
                    r.config_path(),
                    "configured runner that no enabled service starts",
                )
            })
            .collect();
        if stale.is_empty() {
            Outcome::unknown(NEEDS_ORG, vec![])
        } else {
            Outcome::fail("a runner registration is left on disk unused", stale)
        }
    }
}
