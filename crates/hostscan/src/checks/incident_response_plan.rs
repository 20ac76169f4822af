//! 21. Incident response plan for runner compromise.
//!
//! A plan is a document, not host state: read from `[incident-response-plan]` in
//! `/etc/airlock/attestations.toml`. Reviewed within 365 days passes, older fails, absent is
//! unknown.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct IncidentResponsePlan;

impl Check for IncidentResponsePlan {
    fn meta(&self) -> ItemMeta {
        item(
            "incident-response-plan",
            21,
            Section::Operational,
            "Incident response plan for runner compromise",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        common::attested(
            facts,
            "incident-response-plan",
            365,
            "the incident response plan",
        )
        .unwrap_or_else(|| {
            Outcome::unknown(
                format!(
                    "not visible on a host: record it as [incident-response-plan] in {}",
                    common::ATTESTATIONS_PATH
                ),
                vec![],
            )
        })
    }
}
