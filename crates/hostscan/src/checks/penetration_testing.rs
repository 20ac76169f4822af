//! 26. Periodic penetration testing of runner infrastructure.
//!
//! Read from `[penetration-testing]` in `/etc/airlock/attestations.toml` (`airlock drill`
//! runs count when recorded there): within 365 days passes, older fails, absent is unknown.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{ItemMeta, Outcome, Section};

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
