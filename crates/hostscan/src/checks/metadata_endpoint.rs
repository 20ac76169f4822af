//! 5. No access to cloud metadata endpoints (or IMDSv2 enforced).
//!
//! Is 169.254.169.254 routed from the host (`/proc/net/route`), and if so, does a firewall
//! rule or a drop policy stop it? Never probed. Airlock's sandbox never lets a job reach it.
//! IMDSv2 enforcement is a cloud-side setting the host cannot show; a reachable endpoint
//! fails with that noted.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::net::{Cidr4, METADATA};
use crate::report::{ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct MetadataEndpoint;

impl Check for MetadataEndpoint {
    fn meta(&self) -> ItemMeta {
        item(
            "metadata-endpoint",
            5,
            Section::Deployment,
            "No access to cloud metadata endpoints (or IMDSv2 enforced)",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if facts.airlock_only() {
            return Outcome::pass(
                "jobs run in airlock sandboxes, where 169.254.169.254 is never reachable",
                common::airlock_evidence(facts),
            );
        }
        let Some(md) = Cidr4::parse(METADATA) else {
            return Outcome::unknown("internal: metadata address", vec![]);
        };
        match common::reachable(facts, md) {
            None => Outcome::unknown("routes could not be read (/proc/net/route)", vec![]),
            Some((false, ev)) => Outcome::pass("169.254.169.254 is not reachable from the host", ev),
            Some((true, ev)) => Outcome::fail("169.254.169.254 is routed and not blocked (IMDSv2 enforcement cannot be seen from the host)", ev),
        }
    }
}
