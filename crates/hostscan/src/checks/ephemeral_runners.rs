//! 1. Runners are ephemeral (fresh state per job).
//!
//! Each runner installation: ephemeral if its `.runner` has `isEphemeral: true` or its unit
//! starts it with `--ephemeral`/`--jitconfig`. A non-ephemeral runner fails, and so does one
//! whose work folder still holds earlier jobs' checkouts. With no installation but an enabled
//! `airlock serve` unit, jobs get one JIT runner each: pass.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct EphemeralRunners;

impl Check for EphemeralRunners {
    fn meta(&self) -> ItemMeta {
        item(
            "ephemeral-runners",
            1,
            Section::Deployment,
            "Runners are ephemeral (fresh state per job)",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if facts.runners.is_empty() {
            if facts.airlock_only() {
                return Outcome::pass(
                    "no persistent runner; jobs get one JIT runner each from `airlock serve`",
                    common::airlock_evidence(facts),
                );
            }
            return Outcome::unknown("no runner installation found on this host", vec![]);
        }
        let mut bad = Vec::new();
        let mut good = Vec::new();
        for r in &facts.runners {
            if r.ephemeral() {
                good.push(Evidence::new(r.config_path(), "ephemeral"));
            } else {
                let how = match (&r.config, &r.config_error) {
                    (Some(_), _) => "`.runner` has no \"isEphemeral\": true".to_owned(),
                    (None, Some(e)) => format!("`.runner` unreadable: {e}"),
                    (None, None) => "no `.runner` and no --ephemeral/--jitconfig".to_owned(),
                };
                bad.push(Evidence::new(r.config_path(), how));
                if let Some(u) = r.unit.as_ref().filter(|u| u.enabled) {
                    bad.push(Evidence::new(
                        &u.path,
                        "installed as a persistent, enabled systemd service",
                    ));
                }
            }
            for w in &r.leftover_work {
                bad.push(Evidence::new(w, "work directory left by an earlier job"));
            }
        }
        if bad.is_empty() {
            Outcome::pass(
                format!("all {} runner(s) are ephemeral", facts.runners.len()),
                good,
            )
        } else {
            Outcome::fail("a runner keeps state between jobs", bad)
        }
    }
}
