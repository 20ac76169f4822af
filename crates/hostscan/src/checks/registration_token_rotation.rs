//! 19. Runner registration tokens rotated regularly.
//!
//! A runner registered once with `config.sh` keeps its credentials (`.credentials`,
//! `.credentials_rsaparams`) for as long as it lives: they never rotate. Fail for any
//! non-ephemeral runner holding them; pass when every runner is ephemeral or JIT (a fresh
//! registration per job), as with `airlock serve`.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct RegistrationTokenRotation;

impl Check for RegistrationTokenRotation {
    fn meta(&self) -> ItemMeta {
        item(
            "registration-token-rotation",
            19,
            Section::Operational,
            "Runner registration tokens rotated regularly",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if facts.runners.is_empty() {
            if facts.airlock_only() {
                return Outcome::pass(
                    "airlock registers a JIT runner per job; nothing long-lived is stored",
                    common::airlock_evidence(facts),
                );
            }
            return Outcome::unknown("no runner installation found on this host", vec![]);
        }
        let mut bad = Vec::new();
        for r in facts.runners.iter().filter(|r| !r.ephemeral()) {
            for c in &r.stored_credentials {
                bad.push(Evidence::new(
                    c,
                    "long-lived runner registration credentials (never rotated)",
                ));
            }
        }
        if bad.is_empty() {
            Outcome::pass("no long-lived runner registration on this host", vec![])
        } else {
            Outcome::fail(
                "a persistent runner keeps the credentials of a one-time registration",
                bad,
            )
        }
    }
}
