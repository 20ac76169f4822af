//! 18. Anomaly detection configured for unusual behavior.
//!
//! Pass if airlock runs the jobs and its audit log shows its detectors at work (every job that
//! ended was read by the eight detectors; their alerts are `alert` records), or a runtime
//! detector is configured: Falco, Tetragon, Tracee or osquery (their configuration directory,
//! or an enabled unit). Unknown when airlock is set up but no job has ended yet. Fail
//! otherwise.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct AnomalyDetection;

impl Check for AnomalyDetection {
    fn meta(&self) -> ItemMeta {
        item(
            "anomaly-detection",
            18,
            Section::Runtime,
            "Anomaly detection configured for unusual behavior",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if let Some(o) = airlock_detectors(facts) {
            return o;
        }
        let found = common::enabled_unit(facts, &["falco", "tetragon", "tracee", "osqueryd"])
            .or_else(|| {
                common::first_existing(
                    facts,
                    &[
                        "/etc/falco/falco.yaml",
                        "/etc/tetragon",
                        "/etc/tracee",
                        "/etc/osquery/osquery.conf",
                    ],
                )
            });
        match found {
            Some(e) => Outcome::pass("a runtime detector is configured", vec![e]),
            None => Outcome::fail(
                "no runtime detector found (Falco, Tetragon, Tracee, osquery)",
                vec![],
            ),
        }
    }
}

/// airlock's own detectors, judged from its policy and audit log.
fn airlock_detectors(facts: &Facts<'_>) -> Option<Outcome> {
    let a = &facts.airlock;
    if !common::airlock_runs_jobs(facts) {
        return None;
    }
    let mut ev: Vec<Evidence> = a
        .policies
        .iter()
        .map(|p| {
            Evidence::new(
                p,
                "airlock policy: detectors run on every job ([detectors])",
            )
        })
        .collect();
    match a.audit.as_ref().filter(|l| l.jobs_ended > 0) {
        Some(l) => {
            ev.push(Evidence::new(
                &l.dir,
                format!(
                    "{} jobs read by airlock's detectors, {} alerts recorded",
                    l.jobs_ended, l.alerts
                ),
            ));
            Some(Outcome::pass(
                "airlock's detectors read every job's records and their alerts are in the audit log",
                ev,
            ))
        }
        None => Some(Outcome::unknown(
            "airlock is set up but no job has ended yet: its detectors have not run here",
            ev,
        )),
    }
}
