//! `metadata-access`: a job reached for a cloud instance metadata service, where a runner's
//! cloud credentials live (the spec's first scenario).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{
    insert_capped, net, normalize_name, some_of, strings, DetectError, Detector, Evidence,
};
use crate::alert::{Alert, Severity, Technique};
use crate::{Kind, Record};

pub use airlock_policy::endpoints::METADATA_NAMES;

fn is_metadata_ip(ip: IpAddr) -> bool {
    airlock_policy::endpoints::metadata_addrs().any(|a| a.parse::<IpAddr>().is_ok_and(|m| m == ip))
}

fn is_metadata_name(n: &str) -> bool {
    let n = normalize_name(n);
    METADATA_NAMES.contains(&n.as_str())
        || n.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(is_metadata_ip)
        // A Host header with a port: `169.254.169.254:80`, `[fd00:ec2::254]:80`.
        || n.parse::<std::net::SocketAddr>()
            .is_ok_and(|a| is_metadata_ip(a.ip()))
        || n.rsplit_once(':')
            .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && METADATA_NAMES.contains(&h))
}

/// Whether a process argument names a metadata endpoint. Only the addresses and the fully
/// qualified names count: a bare `metadata` argument is everyday (`cargo metadata`).
fn arg_names_metadata(arg: &str) -> bool {
    // Every address and qualified name has a dot or a colon.
    if !arg.contains(['.', ':']) {
        return false;
    }
    let lower = arg.to_ascii_lowercase();
    airlock_policy::endpoints::metadata_addrs().any(|a| lower.contains(a))
        || METADATA_NAMES
            .iter()
            .filter(|n| n.contains('.'))
            .any(|n| lower.contains(n))
}

/// Whether a record is metadata access (also used by `denied-egress` documentation).
pub(crate) fn is_metadata_record(rec: &Record) -> Option<(String, bool)> {
    if let Some(n) = net(rec) {
        let hit = n.name.as_deref().is_some_and(is_metadata_name)
            || n.dialled.is_some_and(|d| is_metadata_ip(d.ip()))
            || n.resolved.is_some_and(is_metadata_ip);
        return hit.then(|| (n.destination(), !n.denied));
    }
    if rec.is(Kind::ProcessExec) {
        let argv = strings(&rec.data, "argv");
        if let Some(a) = argv.iter().find(|a| arg_names_metadata(a)) {
            return Some((format!("exec {a}"), false));
        }
    }
    None
}

/// The detector.
#[derive(Debug, Default)]
pub struct MetadataAccess {
    ev: Evidence,
    targets: BTreeSet<String>,
    reached: bool,
}

impl Detector for MetadataAccess {
    fn id(&self) -> &'static str {
        "metadata-access"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        if let Some((target, allowed)) = is_metadata_record(rec) {
            self.ev.add(rec);
            insert_capped(&mut self.targets, target);
            self.reached |= allowed;
        }
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        if self.ev.is_empty() {
            return Ok(());
        }
        let (severity, how) = if self.reached {
            (Severity::Critical, "and was let through")
        } else {
            (Severity::High, "(blocked)")
        };
        out.push(std::mem::take(&mut self.ev).alert(
            self.id(),
            Technique::new("T1552.005", "Cloud Instance Metadata API"),
            severity,
            format!(
                "the job reached for the cloud metadata service {how}: {}",
                some_of(self.targets.iter().cloned(), 5)
            ),
        ));
        Ok(())
    }
}
