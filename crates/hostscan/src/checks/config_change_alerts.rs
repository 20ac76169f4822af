//! 25. Alert on runner configuration changes.
//!
//! Pass if airlock runs the jobs and records each job's policy digest (`job.requested`'s
//! `policy_sha256`; a change is a `config.changed` record and a `config-changed` alert), or
//! auditd (enabled) has a watch (`-w`) on a runner directory or its `.runner`, on
//! `/etc/airlock`, or on `/etc/systemd/system`. Fail otherwise.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct ConfigChangeAlerts;

impl Check for ConfigChangeAlerts {
    fn meta(&self) -> ItemMeta {
        item(
            "config-change-alerts",
            25,
            Section::Operational,
            "Alert on runner configuration changes",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let digests = facts
            .airlock
            .audit
            .as_ref()
            .filter(|a| a.policy_digests > 0 && common::airlock_runs_jobs(facts));
        if let Some(a) = digests {
            return Outcome::pass(
                "airlock records every job's policy digest and alerts when a group's policy changes",
                vec![Evidence::new(
                    &a.dir,
                    format!(
                        "{} jobs recorded their policy's SHA-256; {} config.changed records",
                        a.policy_digests, a.config_changes
                    ),
                )],
            );
        }
        let mut targets: Vec<String> = facts.runners.iter().map(|r| r.dir.clone()).collect();
        targets.push("/etc/airlock".to_owned());
        targets.push("/etc/systemd/system".to_owned());
        let watches: Vec<Evidence> = common::audit_rules(facts)
            .into_iter()
            .filter(|(_, l)| {
                let path = l
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .trim_end_matches('/');
                l.starts_with("-w ")
                    && targets.iter().any(|t| {
                        t.trim_end_matches('/') == path
                            || path.starts_with(&format!("{}/", t.trim_end_matches('/')))
                    })
            })
            .map(|(f, l)| Evidence::new(f, l))
            .collect();
        match (common::auditd_enabled(facts), watches.is_empty()) {
            (Some(e), false) => {
                let mut ev = vec![e];
                ev.extend(watches);
                Outcome::pass("auditd watches the runner configuration", ev)
            }
            (None, false) => Outcome::fail("watch rules exist but auditd is not enabled", watches),
            (_, true) => Outcome::fail(
                "nothing watches the runner or airlock configuration for changes",
                vec![],
            ),
        }
    }
}
