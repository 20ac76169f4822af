//! 14. Temporary credentials only (no long-lived tokens).
//!
//! Looks in every runner account's home for long-lived credentials: `~/.aws/credentials`,
//! `~/.kube/config` with a token, password or client key, `~/.docker/config.json` with stored
//! auths, `~/.git-credentials`, gcloud and Azure CLI credential files. Any found fails.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct TemporaryCredentials;

impl Check for TemporaryCredentials {
    fn meta(&self) -> ItemMeta {
        item(
            "temporary-credentials",
            14,
            Section::Runtime,
            "Temporary credentials only (no long-lived tokens)",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let found = common::credential_files(facts);
        if !found.is_empty() {
            return Outcome::fail("long-lived credentials in a runner account's home", found);
        }
        let homes = facts.runner_homes();
        if homes.is_empty() {
            if facts.airlock_only() {
                return Outcome::pass(
                    "airlock jobs start from a fresh root filesystem with no stored credentials",
                    common::airlock_evidence(facts),
                );
            }
            return Outcome::unknown("no runner account found to inspect", vec![]);
        }
        let ev = homes
            .into_iter()
            .map(|(u, h)| Evidence::new(h, format!("{u}: no credential files")))
            .collect();
        Outcome::pass(
            "no long-lived credential files in runner accounts' homes",
            ev,
        )
    }
}
