//! Escape: join another process's namespaces through `/proc/1/ns/*` (on a host without a pid
//! namespace, pid 1 is the host's init). Harmless: joining changes only this process.

use super::util::{errno_str, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// `setns`: setns into /proc/1/ns/* (mnt, net, pid, user).
pub struct Setns;

impl Attack for Setns {
    fn id(&self) -> &'static str {
        "setns"
    }
    fn title(&self) -> &'static str {
        "setns into /proc/1/ns/* (mnt, net, pid, user)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        let mut s = Vec::new();
        for ns in ["mnt", "net", "pid", "user", "cgroup"] {
            let path = format!("/proc/1/ns/{ns}");
            let what = format!("setns {path}");
            match std::fs::File::open(&path) {
                Ok(f) => match nix::sched::setns(f, nix::sched::CloneFlags::empty()) {
                    Ok(()) => s.push(Step::ok(what, "joined")),
                    Err(e) => s.push(Step::failed(what, errno_str(e))),
                },
                Err(e) => s.push(Step::failed(what, format!("open: {e}"))),
            }
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
