//! Escape aid: userfaultfd lets an exploit stall the kernel mid-copy at will. Harmless: the
//! fd is closed unused.

use super::util::syscall_step;
use super::{detector, Attack, AttackResult, Category, Expect};

/// `userfaultfd`: userfaultfd (race-window widening for kernel exploits).
pub struct Userfaultfd;

impl Attack for Userfaultfd {
    fn id(&self) -> &'static str {
        "userfaultfd"
    }
    fn title(&self) -> &'static str {
        "userfaultfd (race-window widening for kernel exploits)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        // SAFETY: userfaultfd(O_CLOEXEC), no pointers.
        let r = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
        AttackResult::from_steps(self.id(), &[syscall_step("userfaultfd", r, true)])
    }
}
