//! 24. Monitor for unauthorized runner registration.
//!
//! Registered runners are listed only by GitHub: unknown on a host. `scan org` fails it for
//! runners not created by airlock (name prefix `airlock-` or label `airlock`).

use super::{item, Check, NEEDS_ORG};
use crate::facts::Facts;
use crate::report::{ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct UnauthorizedRegistrationMonitoring;

impl Check for UnauthorizedRegistrationMonitoring {
    fn meta(&self) -> ItemMeta {
        item(
            "unauthorized-registration-monitoring",
            24,
            Section::Operational,
            "Monitor for unauthorized runner registration",
        )
    }

    fn evaluate(&self, _facts: &Facts<'_>) -> Outcome {
        Outcome::unknown(NEEDS_ORG, vec![])
    }
}
