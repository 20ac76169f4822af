//! 2. Network isolation from production systems.
//!
//! For each private range (10/8, 172.16/12, 192.168/16, 100.64/10): is there a route to it
//! from the host (`/proc/net/route`), and does no firewall rule or drop policy stop it? Any
//! reachable range fails. With airlock running the jobs, its per-job firewall keeps internal
//! ranges unreachable except through explicit `allow` rules: pass.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::net::{parse_cidr, PRIVATE};
use crate::report::{ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct NetworkIsolation;

impl Check for NetworkIsolation {
    fn meta(&self) -> ItemMeta {
        item(
            "network-isolation",
            2,
            Section::Deployment,
            "Network isolation from production systems",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if facts.airlock_only() {
            return Outcome::pass("jobs run in airlock sandboxes: internal ranges only through the policy's `allow` rules", common::airlock_evidence(facts));
        }
        let mut open = Vec::new();
        let mut closed = Vec::new();
        for p in PRIVATE {
            let Some(c) = parse_cidr(p) else { continue };
            let Some((reach, ev)) = common::reachable(facts, c) else {
                return Outcome::unknown("routes could not be read (/proc/net/route)", vec![]);
            };
            if reach {
                open.extend(ev);
            } else {
                closed.extend(ev);
            }
        }
        if open.is_empty() {
            Outcome::pass("no private range is reachable from the host", closed)
        } else {
            Outcome::fail("jobs on this host can reach private ranges", open)
        }
    }
}
