//! Operator-terminal injection: the job names files in persistence locations (so the teardown
//! scan raises an alert that quotes the names) with an ESC sequence that erases the line, a CR
//! and LF followed by a forged "all clear" line, a C1 CSI and a bidi override. If airlock
//! printed any of that raw on its stderr summary, the job would hide the HIGH alert line and
//! print its own. The orchestrator judges by airlock's own stderr (see
//! [`Attack::judges_operator_output`]); the files live and die with the job.

use std::path::Path;

use super::util::Step;
use super::{detector, Attack, AttackResult, Category, Expect};

/// The forged line the names try to print on a line of its own.
pub const FORGED_LINE: &str = "airlock: job finished, 0 alerts, all clear";

/// Names that carry terminal controls (each also a persistence location, so an alert quotes it).
fn names(home: &str) -> Vec<String> {
    vec![
        format!("{home}/.config/autostart/a\u{1b}[2K\u{1b}[1A\r\n{FORGED_LINE}\n.desktop"),
        format!("/etc/cron.d/b\u{9b}2K\r{FORGED_LINE}\u{202e}bat.exe"),
        format!("{home}/.config/autostart/c\u{1b}]0;pwned\u{7}\u{1b}[8m.desktop"),
    ]
}

/// `terminal-inject`.
pub struct TerminalInject;

impl Attack for TerminalInject {
    fn id(&self) -> &'static str {
        "terminal-inject"
    }
    fn title(&self) -> &'static str {
        "file names with ESC/CR/LF/C1/bidi controls quoted in airlock's alert summary"
    }
    fn category(&self) -> Category {
        Category::Scenario
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PERSISTENCE_ATTEMPT)
    }
    fn judges_operator_output(&self) -> bool {
        true
    }
    fn run(&self) -> AttackResult {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/home/runner".into());
        let mut steps = Vec::new();
        for n in names(&home) {
            if let Some(parent) = Path::new(&n).parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            // Planting works (the job's files are its own): whether it got through is decided
            // by what airlock printed, outside the job.
            let what = format!("plant {n}");
            steps.push(match std::fs::write(&n, b"# airlock drill\n") {
                Ok(()) => Step::failed(what, "written (judged by airlock's stderr)"),
                Err(e) => Step::failed(what, e.to_string()),
            });
        }
        AttackResult::from_steps(self.id(), &steps)
    }
}

/// What in airlock's stderr shows a job-chosen control reached the operator's terminal:
/// a raw control character (other than airlock's own line breaks), an invisible format
/// character, or the forged line standing on a line of its own.
pub fn raw_controls(stderr: &str) -> Option<String> {
    if let Some(c) = stderr
        .chars()
        .find(|&c| c != '\n' && airlock_text::is_unsafe(c) && c != '\\')
    {
        return Some(format!("raw {:?} on airlock's stderr", c));
    }
    if stderr
        .lines()
        .any(|l| l.trim_start().starts_with(FORGED_LINE))
    {
        return Some("the forged line stands on a line of its own".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_controls_are_found_and_escaped_text_passes() {
        assert!(raw_controls("ok\u{1b}[2K").is_some());
        assert!(raw_controls(&format!("x\n{FORGED_LINE}")).is_some());
        assert!(raw_controls("a\u{202e}b").is_some());
        let escaped = airlock_text::escape(&names("/home/runner").join(" ")).into_owned();
        assert_eq!(
            raw_controls(&format!("airlock: 1 alert\n  {escaped}\n")),
            None
        );
    }
}
