//! 18. Anomaly detection configured for unusual behavior.
//!
//! Pass if a runtime detector is configured: Falco, Tetragon, Tracee or osquery (their
//! configuration directory, or an enabled unit). Fail otherwise.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{ItemMeta, Outcome, Section};

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
