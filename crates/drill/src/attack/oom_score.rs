//! Exhaustion: undo "the job dies first". airlock starts every job with `oom_score_adj` 1000,
//! so that under host memory pressure the kernel kills the job before anything of the host;
//! a job that lowers it (its own, its pid 1's) makes a host process the OOM killer's choice.
//! Harmless: only the job's own processes are touched, and they die with the job.

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// `oom-score-lower`: lower the OOM score of itself and of the job's pid 1.
pub struct OomScoreLower;

fn read_adj(pid: &str) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Opens `path` for writing and writes `value`.
fn write(path: &str, value: &str) -> Step {
    use std::io::Write;
    let what = format!("write {value} to {path}");
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(mut f) => match f.write_all(value.as_bytes()) {
            Ok(()) => Step::ok(what, "written"),
            Err(e) => Step::failed(what, format!("write: {e}")),
        },
        Err(e) => Step::failed(what, format!("open: {e}")),
    }
}

impl Attack for OomScoreLower {
    fn id(&self) -> &'static str {
        "oom-score-lower"
    }
    fn title(&self) -> &'static str {
        "lower the job's OOM score (its own, its pid 1's)"
    }
    fn category(&self) -> Category {
        Category::Exhaustion
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let me = std::process::id().to_string();
        let before = read_adj("self");
        let mut s = Vec::new();
        for pid in ["self", "thread-self", &me, "1"] {
            for value in ["0", "999"] {
                s.push(write(&format!("/proc/{pid}/oom_score_adj"), value));
            }
            s.push(write(&format!("/proc/{pid}/oom_adj"), "0"));
        }
        // Whatever the writes said, the score itself decides.
        for pid in ["self", "1"] {
            let what = format!("oom_score_adj of {pid} now");
            match read_adj(pid) {
                Some(v) if v < 1000 => {
                    s.push(Step::ok(what, format!("{v} (was {before:?})")));
                }
                Some(v) => s.push(Step::failed(what, v.to_string())),
                None => s.push(Step::failed(what, "unreadable")),
            }
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
