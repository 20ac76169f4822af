//! 22. Regular review of runner access logs.
//!
//! Logs can only be reviewed regularly where they are collected: pass if the host ships logs
//! (rsyslog forwarding `@host`/`@@host`/`omfwd`, systemd-journal-upload, or a Vector,
//! Fluent Bit, Promtail, Filebeat or OpenTelemetry collector configuration), or an attestation
//! `[access-log-review]` is at most 90 days old, or airlock runs the jobs and its policy ships
//! alerts and the audit log's signed checkpoints to a webhook (`[alerts] webhook`): what the
//! jobs did is then reviewed off the host, and a rewritten log no longer matches what was
//! shipped. Fail otherwise (a stale attestation too).

use super::{common, item, Check};
use crate::facts::Facts;
use crate::host::join;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct AccessLogReview;

fn forwarding(facts: &Facts<'_>) -> Option<Evidence> {
    let mut files = vec!["/etc/rsyslog.conf".to_owned()];
    files.extend(
        facts
            .host
            .list("/etc/rsyslog.d")
            .into_iter()
            .map(|n| join("/etc/rsyslog.d", &n)),
    );
    for f in files {
        if let Some(t) = facts.host.read(&f) {
            let hit = t.lines().map(str::trim).find(|l| {
                !l.starts_with('#')
                    && (l.contains("omfwd")
                        || l.split_whitespace()
                            .nth(1)
                            .is_some_and(|a| a.starts_with('@')))
            });
            if let Some(l) = hit {
                return Some(Evidence::new(f, format!("forwards logs: {l}")));
            }
        }
    }
    common::enabled_unit(
        facts,
        &[
            "systemd-journal-upload",
            "vector",
            "fluent-bit",
            "td-agent-bit",
            "promtail",
            "filebeat",
            "otelcol",
        ],
    )
    .or_else(|| {
        common::first_existing(
            facts,
            &[
                "/etc/vector/vector.yaml",
                "/etc/vector/vector.toml",
                "/etc/fluent-bit/fluent-bit.conf",
                "/etc/promtail/config.yml",
                "/etc/filebeat/filebeat.yml",
                "/etc/otelcol/config.yaml",
            ],
        )
    })
}

impl Check for AccessLogReview {
    fn meta(&self) -> ItemMeta {
        item(
            "access-log-review",
            22,
            Section::Operational,
            "Regular review of runner access logs",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        if let Some(e) = forwarding(facts) {
            return Outcome::pass("logs leave the host for central review", vec![e]);
        }
        let hooks: Vec<Evidence> = common::airlock_alert_sinks(facts)
            .into_iter()
            .filter(|(_, sink, _)| *sink == "webhook")
            .map(|(f, _, host)| {
                Evidence::new(
                    f,
                    format!("[alerts] webhook to {host}: alerts and audit checkpoints"),
                )
            })
            .collect();
        if !hooks.is_empty() && common::airlock_runs_jobs(facts) {
            return Outcome::pass(
                "airlock ships every alert and its audit log's signed checkpoints off the host",
                hooks,
            );
        }
        common::attested(facts, "access-log-review", 90, "access log review").unwrap_or_else(|| {
            Outcome::fail(
                "logs are not shipped anywhere and no review is attested",
                vec![],
            )
        })
    }
}
