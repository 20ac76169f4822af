//! Escape: inject keystrokes into a terminal (the one airlock was started from). Harmless: the
//! target is a pseudo-terminal the attack opens itself, and the injected byte is a space.

use super::util::{syscall_step, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// `tiocsti`: TIOCSTI terminal input injection.
pub struct Tiocsti;

impl Attack for Tiocsti {
    fn id(&self) -> &'static str {
        "tiocsti"
    }
    fn title(&self) -> &'static str {
        "TIOCSTI terminal input injection"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        use std::os::fd::AsRawFd;
        let mut s = Vec::new();
        match nix::pty::openpty(None, None) {
            Ok(p) => {
                let c: u8 = b' ';
                // SAFETY: ioctl on our own pty with a pointer to one byte.
                let r = unsafe { libc::ioctl(p.slave.as_raw_fd(), libc::TIOCSTI, &c) };
                s.push(syscall_step(
                    "ioctl(own pty, TIOCSTI)",
                    libc::c_long::from(r),
                    false,
                ));
            }
            Err(e) => s.push(Step::failed("openpty", e.to_string())),
        }
        let c: u8 = b' ';
        // SAFETY: ioctl on stdin with a pointer to one byte.
        let r = unsafe { libc::ioctl(0, libc::TIOCSTI, &c) };
        s.push(syscall_step(
            "ioctl(stdin, TIOCSTI)",
            libc::c_long::from(r),
            false,
        ));
        AttackResult::from_steps(self.id(), &s)
    }
}
