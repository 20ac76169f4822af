//! 13. Filesystem isolation between jobs.
//!
//! Fail if a runner is not ephemeral (its work folder and home persist from job to job), if
//! earlier jobs' checkouts remain in a work folder, or if several runners share one account
//! (and so one home). Pass if every runner is ephemeral with an empty work folder under its
//! own account, or airlock runs the jobs (a fresh root filesystem per job).

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct FilesystemIsolation;

impl Check for FilesystemIsolation {
    fn meta(&self) -> ItemMeta {
        item(
            "filesystem-isolation",
            13,
            Section::Runtime,
            "Filesystem isolation between jobs",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if facts.runners.is_empty() {
            if facts.airlock_only() {
                return Outcome::pass(
                    "each airlock job gets a fresh root filesystem, destroyed afterwards",
                    common::airlock_evidence(facts),
                );
            }
            return Outcome::unknown("no runner installation found on this host", vec![]);
        }
        let mut bad = Vec::new();
        for r in &facts.runners {
            if !r.ephemeral() {
                bad.push(Evidence::new(
                    r.config_path(),
                    "not ephemeral: work folder and home are reused by the next job",
                ));
            }
            for w in &r.leftover_work {
                bad.push(Evidence::new(w, "left by an earlier job"));
            }
        }
        for (user, dirs) in facts.runner_users() {
            if dirs.len() > 1 {
                bad.push(Evidence::new(
                    dirs.join(", "),
                    format!("{} runners share account {user} and its home", dirs.len()),
                ));
            }
        }
        if bad.is_empty() {
            Outcome::pass("runners are ephemeral, each under its own account, with nothing left in their work folders", vec![])
        } else {
            Outcome::fail("jobs can see files earlier jobs left", bad)
        }
    }
}
