//! 8. Runner software auto-updates enabled.
//!
//! A runner configured with `--disableupdate` has `"disableUpdate": true` in `.runner`; the
//! flag on a unit's command line counts too. Any such runner fails; runners without it pass.
//! Airlock's JIT runners run the runner version of the imported image: unknown, keep the
//! image current.

use super::{item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct RunnerAutoUpdate;

impl Check for RunnerAutoUpdate {
    fn meta(&self) -> ItemMeta {
        item(
            "runner-auto-update",
            8,
            Section::Deployment,
            "Runner software auto-updates enabled",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if facts.runners.is_empty() {
            if facts.airlock_only() {
                return Outcome::unknown("airlock's runners come from the imported image: its runner version is as current as the image", vec![]);
            }
            return Outcome::unknown("no runner installation found on this host", vec![]);
        }
        let mut bad = Vec::new();
        let mut good = Vec::new();
        for r in &facts.runners {
            let cfg = r.config.as_ref().is_some_and(|c| c.disable_update);
            let unit = r
                .unit
                .as_ref()
                .filter(|u| u.exec_start.iter().any(|e| e.contains("--disableupdate")));
            if cfg {
                bad.push(Evidence::new(r.config_path(), "\"disableUpdate\": true"));
            } else if let Some(u) = unit {
                bad.push(Evidence::new(&u.path, "started with --disableupdate"));
            } else if r.config.is_some() {
                good.push(Evidence::new(r.config_path(), "no disableUpdate"));
            }
        }
        if !bad.is_empty() {
            Outcome::fail("a runner has automatic updates disabled", bad)
        } else if good.is_empty() {
            Outcome::unknown("no runner configuration (.runner) could be read", vec![])
        } else {
            Outcome::pass("runners update themselves", good)
        }
    }
}
