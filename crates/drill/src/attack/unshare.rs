//! Escape: create new namespaces (user first: inside a new user namespace the job would be
//! "root" and could try everything again). Harmless: a namespace that is created belongs to
//! this process only and dies with it.

use super::util::{errno_str, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// `unshare`: unshare user, mount and network namespaces.
pub struct Unshare;

impl Attack for Unshare {
    fn id(&self) -> &'static str {
        "unshare"
    }
    fn title(&self) -> &'static str {
        "unshare user, mount and network namespaces"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        use nix::sched::{unshare, CloneFlags};
        let s: Vec<Step> = [
            ("unshare(CLONE_NEWUSER)", CloneFlags::CLONE_NEWUSER),
            ("unshare(CLONE_NEWNS)", CloneFlags::CLONE_NEWNS),
            ("unshare(CLONE_NEWNET)", CloneFlags::CLONE_NEWNET),
            ("unshare(CLONE_NEWPID)", CloneFlags::CLONE_NEWPID),
        ]
        .into_iter()
        .map(|(what, f)| match unshare(f) {
            Ok(()) => Step::ok(what, "created"),
            Err(e) => Step::failed(what, errno_str(e)),
        })
        .collect();
        AttackResult::from_steps(self.id(), &s)
    }
}
