//! 6. Minimal IAM permissions scoped to runner needs.
//!
//! A host cannot list a cloud role's permissions. What it can show: long-lived cloud
//! credential files in runner accounts' homes (fail: jobs inherit a standing identity; use
//! OIDC per job), or a reachable metadata endpoint (unknown: the instance role's scope is not
//! visible). Neither: pass, no cloud identity is available to jobs. `scan org` adds the
//! organisation's default `GITHUB_TOKEN` permissions (`write` fails).

use super::{common, item, Check};
use crate::facts::Facts;
use crate::net::{parse_cidr, METADATA};
use crate::report::{ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct MinimalIam;

impl Check for MinimalIam {
    fn meta(&self) -> ItemMeta {
        item(
            "minimal-iam",
            6,
            Section::Deployment,
            "Minimal IAM permissions scoped to runner needs",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let creds: Vec<_> = common::credential_files(facts)
            .into_iter()
            .filter(|e| {
                !e.source.ends_with(".git-credentials") && !e.source.ends_with("config.json")
            })
            .collect();
        if !creds.is_empty() {
            return Outcome::fail(
                "cloud credentials in a runner account give every job a standing identity",
                creds,
            );
        }
        if facts.airlock_only() {
            return Outcome::pass(
                "no cloud identity reachable: airlock jobs cannot reach the metadata endpoint",
                common::airlock_evidence(facts),
            );
        }
        if facts.runners.is_empty() {
            return Outcome::unknown("no runner installation found on this host", vec![]);
        }
        let Some(md) = parse_cidr(METADATA) else {
            return Outcome::unknown("internal: metadata address", vec![]);
        };
        match common::reachable(facts, md) {
            None => Outcome::unknown("routes could not be read (/proc/net/route)", vec![]),
            Some((true, ev)) => Outcome::unknown("the metadata endpoint is reachable: the instance role's permissions cannot be seen from the host", ev),
            Some((false, ev)) => Outcome::pass("no cloud credentials in runner accounts and no metadata endpoint reachable", ev),
        }
    }
}
