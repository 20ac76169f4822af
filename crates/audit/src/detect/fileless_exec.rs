//! `fileless-exec`: a program ran from no file — a memfd (`memfd_create` + `execveat(fd, "",
//! AT_EMPTY_PATH)` or `fexecve`), or a file that had no name left when it was exec'd
//! (opened, unlinked, then exec'd through its fd; `O_TMPFILE`). Droppers do this so that
//! nothing of the payload is ever on disk for a scan to find.
//!
//! Per record, so it fits any input: the exec watcher resolves every exec's real target
//! (`process.exec` `exe.memfd` / `exe.deleted`) and, after the exec, what actually ran when
//! that differs (`exec.actual`). A file deleted only *after* it ran is not fileless (builds
//! run and remove test programs all the time): it is recorded (`file.changed` with
//! `executed`), not alerted on.

use serde_json::Value;

use super::{some_of, DetectError, Detector, Evidence};
use crate::alert::{Alert, Severity, Technique};
use crate::{Kind, Record};

/// The detector.
#[derive(Debug, Default)]
pub struct FilelessExec {
    what: Vec<String>,
    ev: Evidence,
}

/// `what ran, as 'argv0'` for a fileless exec record, else `None`.
pub(crate) fn fileless(rec: &Record) -> Option<String> {
    if !rec.is(Kind::ProcessExec) && !rec.is(Kind::ExecActual) {
        return None;
    }
    // What ran, or the program the dynamic loader was asked to load (`ld.so /proc/self/fd/3`).
    let exe = ["loaded", "exe"]
        .iter()
        .filter_map(|k| rec.data.get(*k))
        .find(|e| {
            e.get("memfd").is_some() || e.get("deleted").and_then(Value::as_bool) == Some(true)
        })?;
    let memfd = exe.get("memfd").and_then(Value::as_str);
    let deleted = exe.get("deleted").and_then(Value::as_bool) == Some(true);
    if memfd.is_none() && !deleted {
        return None;
    }
    let mut what = match (memfd, exe.get("path").and_then(Value::as_str)) {
        (Some(m), _) => m.to_owned(),
        (None, Some(p)) => format!("{p} (deleted)"),
        (None, None) => "a deleted file".to_owned(),
    };
    if let Some(a0) = rec
        .data
        .get("argv")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
    {
        what.push_str(&format!(" as '{a0}'"));
    }
    Some(what)
}

impl Detector for FilelessExec {
    fn id(&self) -> &'static str {
        "fileless-exec"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        if let Some(w) = fileless(rec) {
            // A handful names the alert; a job exec'ing a million memfds must not grow this.
            if self.what.len() < 64 && !self.what.contains(&w) {
                self.what.push(w);
            }
            self.ev.add(rec);
        }
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        if self.ev.is_empty() {
            return Ok(());
        }
        let n = self.ev.len();
        let ev = std::mem::take(&mut self.ev);
        out.push(ev.alert(
            self.id(),
            Technique::new("T1620", "Reflective Code Loading"),
            Severity::High,
            format!(
                "{n} exec{} of a program with no file: {}",
                if n == 1 { "" } else { "s" },
                some_of(std::mem::take(&mut self.what), 6)
            ),
        ));
        Ok(())
    }
}
