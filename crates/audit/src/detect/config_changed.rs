//! `config-changed`: a group's jobs now run under a different policy than its previous job
//! did. A security tool whose configuration changes unseen is a tool an attacker can turn
//! off (checklist item 25: the configuration is watched); the job engine writes a
//! `config.changed` record (previous and current SHA-256 of the policy text) when it notices,
//! and this detector raises it as an alert, so it reaches the sinks like any other.

use serde_json::Value;

use super::{DetectError, Detector, Evidence};
use crate::alert::{Alert, Severity, Technique};
use crate::{Kind, Record};

/// The detector.
#[derive(Debug, Default)]
pub struct ConfigChanged {
    ev: Evidence,
    change: Option<(String, String, String)>,
}

impl Detector for ConfigChanged {
    fn id(&self) -> &'static str {
        "config-changed"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        if !rec.is(Kind::ConfigChanged) {
            return;
        }
        let s = |k: &str| {
            rec.data
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        self.ev.add(rec);
        self.change = Some((s("group"), s("previous"), s("current")));
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        let Some((group, previous, current)) = self.change.take() else {
            return Ok(());
        };
        let short = |h: &str| h.chars().take(12).collect::<String>();
        out.push(std::mem::take(&mut self.ev).alert(
            self.id(),
            Technique::new("T1562.001", "Impair Defenses: Disable or Modify Tools"),
            Severity::Medium,
            format!(
                "the policy of group {group} changed since its previous job (sha256 {} → {}); check that the change was intended",
                short(&previous),
                short(&current)
            ),
        ));
        Ok(())
    }
}
