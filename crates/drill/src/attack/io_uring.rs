//! Escape aid: io_uring has been the vector of many kernel exploits and bypasses seccomp for
//! the operations it performs. Harmless: a ring is created and closed unused.

use super::util::syscall_step;
use super::{detector, Attack, AttackResult, Category, Expect};

/// `io-uring`: io_uring_setup (a frequent source of kernel exploits).
pub struct IoUring;

impl Attack for IoUring {
    fn id(&self) -> &'static str {
        "io-uring"
    }
    fn title(&self) -> &'static str {
        "io_uring_setup (a frequent source of kernel exploits)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        let mut params = [0u32; 30];
        // SAFETY: io_uring_setup(1 entry, zeroed io_uring_params of sufficient size).
        let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
        AttackResult::from_steps(self.id(), &[syscall_step("io_uring_setup(1)", r, true)])
    }
}
