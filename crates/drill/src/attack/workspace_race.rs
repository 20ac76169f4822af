//! Read a host file through the workspace copy. Whoever can write inside the `--workdir`
//! directory (another user, an earlier process of the same checkout) swaps its entries with
//! symlinks to a root-only host file and a host directory (`renameat2(RENAME_EXCHANGE)`) while
//! airlock copies it, hoping the copy checks one object and copies another. The swapper runs
//! on the host side, in the drill itself (a job cannot race its own copy: it starts after it);
//! this attack, inside the job, looks for the host file's content in its workspace.
//! Harmless: the "host file" is the drill's own bait, holding only a marker.

use super::util::Step;
use super::{Attack, AttackResult, Category};
use crate::addrs::WORKSPACE_SECRET_MARKER;

/// `workspace-race`: the drill races the workspace copy; the job looks for the bait.
pub struct WorkspaceRace;

/// Regular files under `dir` (never through a symlink) holding the marker; `seen` counts
/// the entries walked.
fn search(dir: &std::path::Path, seen: &mut usize, found: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        *seen += 1;
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            search(&p, seen, found);
        } else if m.is_file() && m.len() < (1 << 20) {
            if let Ok(b) = std::fs::read(&p) {
                if String::from_utf8_lossy(&b).contains(WORKSPACE_SECRET_MARKER) {
                    found.push(p.display().to_string());
                }
            }
        }
    }
}

impl Attack for WorkspaceRace {
    fn id(&self) -> &'static str {
        "workspace-race"
    }
    fn title(&self) -> &'static str {
        "race the workspace copy into copying a root-only host file (RENAME_EXCHANGE swapper)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn races_workspace(&self) -> bool {
        true
    }
    fn run(&self) -> AttackResult {
        let (mut seen, mut found) = (0, Vec::new());
        search(std::path::Path::new("."), &mut seen, &mut found);
        let what = format!("search the workspace ({seen} entries) for the host file's content");
        let step = if found.is_empty() {
            Step::failed(what, "not found")
        } else {
            found.truncate(5);
            Step::ok(what, format!("found in {}", found.join(", ")))
        };
        AttackResult::from_steps(self.id(), &[step])
    }
}
