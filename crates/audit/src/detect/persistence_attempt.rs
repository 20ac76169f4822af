//! `persistence-attempt`: the teardown scan found the job writing somewhere that would run
//! code later — a crontab, a systemd unit, a shell rc file, authorized_keys, … The sandbox's
//! writable layer is thrown away, so the attempt failed; it is still an attack.
//!
//! One alert per persistence class, each with the ATT&CK technique of that class.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{some_of, DetectError, Detector, Evidence};
use crate::alert::{Alert, Severity, Technique};
use crate::{Kind, Record};

/// The technique (id, name) and severity of a `persistence` class of `file.changed`.
fn class(c: &str) -> (&'static str, &'static str, Severity) {
    match c {
        "crontab" => ("T1053.003", "Scheduled Task/Job: Cron", Severity::High),
        "systemd-unit" => (
            "T1543.002",
            "Create or Modify System Process: Systemd Service",
            Severity::High,
        ),
        "shell-rc" => (
            "T1546.004",
            "Event Triggered Execution: Unix Shell Configuration Modification",
            Severity::Medium,
        ),
        "authorized-keys" => (
            "T1098.004",
            "Account Manipulation: SSH Authorized Keys",
            Severity::High,
        ),
        "git-hook" => ("T1546", "Event Triggered Execution", Severity::Medium),
        "ld-preload" => (
            "T1574.006",
            "Hijack Execution Flow: Dynamic Linker Hijacking",
            Severity::High,
        ),
        "runner-dir" => (
            "T1554",
            "Compromise Host Software Binary",
            Severity::Critical,
        ),
        "path-dir" => (
            "T1574.007",
            "Hijack Execution Flow: Path Interception by PATH Environment Variable",
            Severity::Medium,
        ),
        "autostart" => (
            "T1547.013",
            "Boot or Logon Autostart Execution: XDG Autostart Entries",
            Severity::Medium,
        ),
        "sudoers" => (
            "T1548.003",
            "Abuse Elevation Control Mechanism: Sudo and Sudo Caching",
            Severity::High,
        ),
        "account" => ("T1136.001", "Create Account: Local Account", Severity::High),
        _ => (
            "T1547",
            "Boot or Logon Autostart Execution",
            Severity::Medium,
        ),
    }
}

/// The detector.
#[derive(Debug, Default)]
pub struct PersistenceAttempt {
    by_class: BTreeMap<String, (Vec<String>, Evidence)>,
}

impl Detector for PersistenceAttempt {
    fn id(&self) -> &'static str {
        "persistence-attempt"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        if !rec.is(Kind::FileChanged) {
            return;
        }
        let Some(c) = rec.data.get("persistence").and_then(Value::as_str) else {
            return;
        };
        let path = rec.data.get("path").and_then(Value::as_str).unwrap_or("?");
        let change = rec
            .data
            .get("change")
            .and_then(Value::as_str)
            .unwrap_or("changed");
        let e = self.by_class.entry(c.to_owned()).or_default();
        if e.0.len() < 100 {
            e.0.push(format!("{path} ({change})"));
        }
        e.1.add(rec);
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        for (c, (paths, ev)) in std::mem::take(&mut self.by_class) {
            let (id, name, severity) = class(&c);
            out.push(ev.alert(
                self.id(),
                Technique::new(id, name),
                severity,
                format!("{c} persistence written: {}", some_of(paths, 20)),
            ));
        }
        Ok(())
    }
}
