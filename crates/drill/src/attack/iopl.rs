//! Escape: I/O port access reaches hardware directly. Harmless: no port is read or written;
//! a granted level is dropped again.

use super::util::syscall_step;
use super::{detector, Attack, AttackResult, Category, Expect};

/// `iopl`: iopl / ioperm (raw I/O port access).
pub struct Iopl;

impl Attack for Iopl {
    fn id(&self) -> &'static str {
        "iopl"
    }
    fn title(&self) -> &'static str {
        "iopl / ioperm (raw I/O port access)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        // SAFETY: iopl/ioperm with integer arguments; no port access follows.
        let r = unsafe { libc::syscall(libc::SYS_iopl, 3) };
        let a = syscall_step("iopl(3)", r, false);
        if a.succeeded {
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_iopl, 0) };
        }
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_ioperm, 0x80, 1, 1) };
        let b = syscall_step("ioperm(0x80)", r, false);
        if b.succeeded {
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_ioperm, 0x80, 1, 0) };
        }
        AttackResult::from_steps(self.id(), &[a, b])
    }
}
