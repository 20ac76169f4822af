//! 4. Egress filtering configured.
//!
//! Pass if outgoing traffic is dropped by default and accept rules name destinations (an
//! allow-list), or if airlock runs the jobs with every group in `block` or `none` mode. Fail
//! if the output policy accepts (deny rules alone are a block-list, not egress filtering) or
//! an airlock group is in `audit` mode. Unknown with no firewall source.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct EgressFiltering;

impl Check for EgressFiltering {
    fn meta(&self) -> ItemMeta {
        item(
            "egress-filtering",
            4,
            Section::Deployment,
            "Egress filtering configured",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if facts.airlock_only() {
            let modes = common::airlock_egress_modes(facts);
            let ev: Vec<Evidence> = modes
                .iter()
                .map(|(f, g, m)| Evidence::new(f, format!("group {g}: egress mode {m}")))
                .collect();
            if modes.iter().any(|(_, _, m)| m == "audit") {
                return Outcome::fail("an airlock group's egress is in audit mode (allowed and recorded, not filtered)", ev);
            }
            let mut ev = ev;
            ev.extend(common::airlock_evidence(facts));
            return Outcome::pass(
                "airlock filters each job's egress by its group's allow-list",
                ev,
            );
        }
        let fw = &facts.firewall;
        if fw.sources.is_empty() {
            return Outcome::unknown(
                "no firewall configuration could be read (nftables, iptables, ufw)",
                vec![],
            );
        }
        let outs: Vec<_> = fw.output_chains().collect();
        let deny = outs
            .iter()
            .find(|c| matches!(c.policy.as_deref(), Some("drop") | Some("reject")));
        match deny {
            Some(c) => {
                let mut ev = vec![Evidence::new(
                    &c.source,
                    format!(
                        "{} {}: policy {}",
                        c.table,
                        c.name,
                        c.policy.as_deref().unwrap_or("?")
                    ),
                )];
                ev.extend(fw.allow_rules());
                Outcome::pass("outgoing traffic is limited to an allow-list", ev)
            }
            None => {
                let mut ev: Vec<Evidence> = outs
                    .iter()
                    .map(|c| {
                        Evidence::new(
                            &c.source,
                            format!(
                                "{} {}: policy {}",
                                c.table,
                                c.name,
                                c.policy.as_deref().unwrap_or("accept")
                            ),
                        )
                    })
                    .collect();
                if ev.is_empty() {
                    ev = fw.sources.clone();
                }
                Outcome::fail(
                    "outgoing traffic is allowed by default: no egress allow-list",
                    ev,
                )
            }
        }
    }
}
