//! 5. No access to cloud metadata endpoints (or IMDSv2 enforced).
//!
//! Is 169.254.169.254 routed from the host (`/proc/net/route`), and if so, does a firewall
//! rule or a drop policy stop it? The same for AWS's IPv6 endpoint fd00:ec2::254 when
//! `/proc/net/ipv6_route` is readable. Never probed. Airlock's sandbox never lets a job reach it.
//! IMDSv2 enforcement is a cloud-side setting the host cannot show; a reachable endpoint
//! fails with that noted.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::net::{parse_cidr, METADATA, METADATA_V6};
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
        let (Some(md), Some(md6)) = (parse_cidr(METADATA), parse_cidr(METADATA_V6)) else {
            return Outcome::unknown("internal: metadata address", vec![]);
        };
        let Some((open4, mut ev)) = common::reachable(facts, md) else {
            return Outcome::unknown("routes could not be read (/proc/net/route)", vec![]);
        };
        // IPv6 (AWS fd00:ec2::254) only when the IPv6 routing table is readable.
        let open6 = match common::reachable(facts, md6) {
            Some((open6, ev6)) => {
                ev.extend(ev6);
                open6
            }
            None => false,
        };
        match (open4, open6) {
            (false, false) => Outcome::pass("the metadata endpoint is not reachable from the host", ev),
            (true, _) => Outcome::fail(
                "169.254.169.254 is routed and not blocked (IMDSv2 enforcement cannot be seen from the host)",
                ev,
            ),
            (false, true) => Outcome::fail("fd00:ec2::254 (IPv6 metadata) is routed and not blocked", ev),
        }
    }
}
