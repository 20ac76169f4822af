//! Scenario 1, persistent backdoor: plant a crontab, systemd units, shell rc, SSH keys,
//! `ld.so.preload`, a git hook outside the workspace and a file in the runner's directory.
//! Whether a write works inside the job does not matter (the job's own files are writable);
//! what matters is that the NEXT job sees none of it: `persistence-check` runs in a second,
//! fresh sandbox and looks for the marker. The orchestrator also checks the same paths on the
//! host. Harmless: every file holds only a comment with the marker (no command, no key).

use std::path::Path;

use super::util::Step;
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::PERSISTENCE_MARKER;

/// Every location planted, with `~` = the job user's home (`/home/runner`).
pub const PERSISTENCE_PATHS: &[&str] = &[
    "/var/spool/cron/crontabs/runner",
    "/etc/cron.d/airlock-drill",
    "~/.config/systemd/user/airlock-drill.service",
    "/etc/systemd/system/airlock-drill.service",
    "~/.bashrc",
    "~/.profile",
    "~/.ssh/authorized_keys",
    "/etc/ld.so.preload",
    "~/.config/git/hooks/pre-commit",
    "~/.gitconfig",
    "~/actions-runner/run.sh",
    "~/actions-runner/.runner",
    "/usr/local/bin/git",
    "/tmp/airlock-drill-dropper",
    "/dev/shm/airlock-drill-dropper",
];

/// `p` with `~/` replaced by the job user's home.
pub(crate) fn expand(p: &str) -> String {
    match p.strip_prefix("~/") {
        Some(rest) => {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/home/runner".into());
            format!("{home}/{rest}")
        }
        None => p.to_owned(),
    }
}

/// `persistence`: plant the marker everywhere.
pub struct Persistence;

impl Attack for Persistence {
    fn id(&self) -> &'static str {
        "persistence"
    }
    fn title(&self) -> &'static str {
        "scenario 1: cron, systemd, shell rc, ssh key, ld.so.preload, git hook, runner dir"
    }
    fn category(&self) -> Category {
        Category::Scenario
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PERSISTENCE_ATTEMPT)
    }
    fn judged_by(&self) -> Option<&'static str> {
        Some("persistence-check")
    }
    fn run(&self) -> AttackResult {
        let mut steps = Vec::new();
        for p in PERSISTENCE_PATHS {
            let path = expand(p);
            if let Some(parent) = Path::new(&path).parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let r = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| {
                    use std::io::Write;
                    writeln!(f, "# {PERSISTENCE_MARKER}")
                });
            // A write that works is expected (the job's files are its own); it is "planted",
            // not "succeeded": success is judged by persistence-check in the next job.
            steps.push(match r {
                Ok(()) => Step::failed(format!("plant {path}"), "written (judged by the next job)"),
                Err(e) => Step::failed(format!("plant {path}"), e.to_string()),
            });
        }
        AttackResult::from_steps(self.id(), &steps)
    }
}

/// `persistence-check`: run in the NEXT sandbox; succeeded = any planted marker survived.
pub struct PersistenceCheck;

impl Attack for PersistenceCheck {
    fn id(&self) -> &'static str {
        "persistence-check"
    }
    fn title(&self) -> &'static str {
        "second job: look for anything the persistence attack planted"
    }
    fn category(&self) -> Category {
        Category::Scenario
    }
    fn helper_only(&self) -> bool {
        true
    }
    fn run(&self) -> AttackResult {
        let mut found = Vec::new();
        for p in PERSISTENCE_PATHS {
            let path = expand(p);
            if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(PERSISTENCE_MARKER)) {
                found.push(path);
            }
        }
        AttackResult {
            attack: self.id().into(),
            succeeded: !found.is_empty(),
            detail: if found.is_empty() {
                format!(
                    "none of {} locations holds the marker",
                    PERSISTENCE_PATHS.len()
                )
            } else {
                format!("survived into the next job: {}", found.join(", "))
            },
        }
    }
}
