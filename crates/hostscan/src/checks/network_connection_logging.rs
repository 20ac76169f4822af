//! 17. Network connections logged and analyzed.
//!
//! Pass if airlock's audit log holds network records (`net.*`: every DNS query, connection
//! and refused packet of its jobs) or a firewall rule logs packets (nft `log`, iptables
//! `-j LOG`/`NFLOG`). Fail otherwise.

use super::{item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct NetworkConnectionLogging;

impl Check for NetworkConnectionLogging {
    fn meta(&self) -> ItemMeta {
        item(
            "network-connection-logging",
            17,
            Section::Runtime,
            "Network connections logged and analyzed",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let mut ev = Vec::new();
        if let Some(a) = facts.airlock.audit.as_ref().filter(|a| a.net_records > 0) {
            ev.push(Evidence::new(
                &a.dir,
                format!("{} network records", a.net_records),
            ));
        }
        ev.extend(facts.firewall.log_rules());
        if ev.is_empty() {
            Outcome::fail(
                "no network records in airlock's audit log and no firewall logging rule",
                facts.firewall.sources.clone(),
            )
        } else {
            Outcome::pass("connections (or refused packets) are recorded", ev)
        }
    }
}
