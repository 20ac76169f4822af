//! 3. Deny-by-default firewall rules.
//!
//! Reads the nftables rule set (live `nft list ruleset`, else `/etc/nftables.conf`), saved
//! iptables rules and ufw's defaults. Pass if an output filter base chain's policy is drop.
//! Fail if output chains exist and all accept by default, or if no output chain exists in the
//! rules read. Unknown if no firewall source could be read at all. With airlock running the
//! jobs, the per-job firewall is deny-by-default unless a policy group uses `mode = "audit"`.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct DenyByDefaultFirewall;

impl Check for DenyByDefaultFirewall {
    fn meta(&self) -> ItemMeta {
        item(
            "deny-by-default-firewall",
            3,
            Section::Deployment,
            "Deny-by-default firewall rules",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if facts.airlock_only() {
            let audit: Vec<Evidence> = common::airlock_egress_modes(facts)
                .into_iter()
                .filter(|(_, _, m)| m == "audit")
                .map(|(f, g, m)| Evidence::new(f, format!("group {g}: egress mode {m}")))
                .collect();
            if !audit.is_empty() {
                return Outcome::fail(
                    "an airlock group's egress is in audit mode: everything is allowed",
                    audit,
                );
            }
            return Outcome::pass(
                "jobs' traffic goes through airlock's per-job firewall: refused unless allowed",
                common::airlock_evidence(facts),
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
        let ev = |c: &crate::net::Chain| {
            Evidence::new(
                &c.source,
                format!(
                    "{} {} hook {}: policy {}",
                    c.table,
                    c.name,
                    c.hook.as_deref().unwrap_or("-"),
                    c.policy.as_deref().unwrap_or("accept")
                ),
            )
        };
        if let Some(c) = outs
            .iter()
            .find(|c| matches!(c.policy.as_deref(), Some("drop") | Some("reject")))
        {
            return Outcome::pass(
                "outgoing traffic is dropped unless a rule allows it",
                vec![ev(c)],
            );
        }
        if outs.is_empty() {
            return Outcome::fail(
                "no output filter chain: outgoing traffic is not filtered",
                fw.sources.clone(),
            );
        }
        Outcome::fail(
            "the output chain's default policy accepts",
            outs.into_iter().map(ev).collect(),
        )
    }
}
