//! Phase 5: what the job left behind, read before teardown drops it: the gateway's and the
//! firewall's records (merged, in time order, with secret values replaced) and the file scan
//! of its writable layer.

use std::path::{Path, PathBuf};
use std::time::Instant;

use airlock_audit::{ConnRecord, Redactor};
use airlock_sandbox::filescan::{self, ScanResult};
use airlock_sandbox::{rootfs, JobPlan};

use crate::Engine;

/// What [`collect`] gathered.
pub(crate) struct Collected {
    /// Every query, connection and dropped packet of the job, in time order, redacted.
    pub egress: Vec<ConnRecord>,
    /// What the job left on its filesystem (`None` when it never had one).
    pub files: Option<ScanResult>,
}

/// Stops the job's gateway (the rest of its network goes in teardown) and the NFLOG
/// listener, merges their records, and scans the job's files.
pub(crate) fn collect(
    engine: &Engine,
    plan: &JobPlan,
    net: Option<airlock_net::JobNetwork>,
    nflog: Option<airlock_net::nflog::Listener>,
    redactor: &Redactor,
) -> Collected {
    let mut egress = net
        .map(airlock_net::JobNetwork::stop_gateway)
        .unwrap_or_default();
    if let Some(l) = nflog {
        l.stop();
    }
    let job_dir = engine.paths.job_dir(&plan.id);
    egress.extend(airlock_net::nflog::take_records(&job_dir));
    egress.sort_by_key(|r| r.time_ms);
    redact(&mut egress, redactor);
    let t = Instant::now();
    let files = scan_files(plan, &job_dir);
    tracing::debug!(job = %plan.id, scan_us = t.elapsed().as_micros() as u64, entries = files.as_ref().map(|f| f.entries).unwrap_or(0));
    Collected { egress, files }
}

/// Every string of every record, whatever fields a record has: through its JSON form.
fn redact(records: &mut [ConnRecord], redactor: &Redactor) {
    if redactor.is_empty() {
        return;
    }
    for r in records {
        let red = serde_json::to_value(&*r).and_then(|mut v| {
            redactor.redact_value(&mut v);
            serde_json::from_value(v)
        });
        match red {
            Ok(red) => *r = red,
            // Never keep what could not be checked.
            Err(_) => {
                r.name = None;
                r.reason = "[not recorded: redaction failed]".into();
            }
        }
    }
}

fn scan_files(plan: &JobPlan, job_dir: &Path) -> Option<ScanResult> {
    let dirs = rootfs::RootfsDirs::new(job_dir);
    let upper = dirs.upper();
    if !upper.is_dir() {
        return None;
    }
    let lowers: Vec<PathBuf> = std::fs::read(job_dir.join(rootfs::LOWERS_FILE))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    let path = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(airlock_sandbox::plan::PATH);
    let path_dirs: Vec<String> = path.split(':').map(str::to_owned).collect();
    let limits = filescan::ScanLimits {
        listed: usize::try_from(plan.audit.max_file_changes).unwrap_or(usize::MAX),
        ..filescan::ScanLimits::default()
    };
    Some(filescan::scan_bounded(&upper, &lowers, &path_dirs, &limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_in_any_field_of_a_record_is_replaced_by_its_name() {
        let secret = "hunter2-very-secret";
        let red = Redactor::new([("TOKEN", secret)]);
        let mut r = ConnRecord::new("dns", 53);
        r.name = Some(format!("{secret}.evil.test"));
        r.reason = format!("refused {secret}");
        r.flags = vec![secret.to_owned()];
        let mut v = vec![r];
        redact(&mut v, &red);
        let json = serde_json::to_string(&v).expect("serialise");
        assert!(!json.contains(secret), "{json}");
        assert!(json.contains("[secret:TOKEN]"), "{json}");
    }
}
