//! Escape: pass the seccomp filter's argument rules with the upper 32 bits of the argument set.
//! The kernel reads `ioctl`'s request and `clone`'s flags as 32-bit values, so
//! `ioctl(fd, 0x1_0000_5412)` is TIOCSTI to it; a filter that compares the whole 64-bit
//! register lets it through unrecorded. Harmless: the terminal is a pseudo-terminal the attack
//! opens itself (the injected byte is a space), and a new user namespace dies with its child.

use super::util::{errno_str, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// Upper halves tried.
const HIGH: [u64; 2] = [1 << 32, 0xdead_beef << 32];
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

/// `ioctl-high-bits`: TIOCSTI, TIOCLINUX and `clone(CLONE_NEWUSER)` with high bits set.
pub struct IoctlHighBits;

/// A denied call is answered EPERM by the filter (ENOSYS if airlock's listener is gone); any
/// other answer came from the kernel's own handler: the call got past the filter.
fn judged(what: String, ret: libc::c_long, errno: nix::errno::Errno) -> Step {
    use nix::errno::Errno;
    if ret >= 0 {
        Step::ok(what, format!("returned {ret}"))
    } else if matches!(errno, Errno::EPERM | Errno::ENOSYS) {
        Step::failed(what, errno_str(errno))
    } else {
        Step::ok(
            what,
            format!("past the filter: the kernel answered {}", errno_str(errno)),
        )
    }
}

/// TIOCSTI `req` on a fresh pty made the controlling terminal of a new session (so that the
/// kernel itself would accept it), in a child; returns (ret, errno).
fn tiocsti_as_ctty(req: u64) -> Result<(libc::c_long, nix::errno::Errno), String> {
    use nix::unistd::{fork, ForkResult};
    use std::os::fd::AsRawFd;
    let pty = nix::pty::openpty(None, None).map_err(errno_str)?;
    // SAFETY: the child makes a few raw syscalls and leaves with _exit.
    match unsafe { fork() }.map_err(errno_str)? {
        ForkResult::Child => {
            let c: u8 = b' ';
            // SAFETY: setsid, ioctl on our own pty, _exit: no shared state touched.
            unsafe {
                libc::setsid();
                libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCSCTTY, 0);
                let r = libc::syscall(libc::SYS_ioctl, pty.slave.as_raw_fd(), req, &c);
                let code = if r >= 0 {
                    0
                } else {
                    nix::errno::Errno::last_raw().clamp(1, 254)
                };
                libc::_exit(code)
            }
        }
        ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => {
                Ok((0, nix::errno::Errno::UnknownErrno))
            }
            Ok(nix::sys::wait::WaitStatus::Exited(_, e)) => {
                Ok((-1, nix::errno::Errno::from_raw(e)))
            }
            Ok(s) => Err(format!("child ended {s:?}")),
            Err(e) => Err(errno_str(e)),
        },
    }
}

impl Attack for IoctlHighBits {
    fn id(&self) -> &'static str {
        "ioctl-high-bits"
    }
    fn title(&self) -> &'static str {
        "seccomp argument rules with the upper 32 bits set (TIOCSTI, TIOCLINUX, clone)"
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
        for high in HIGH {
            let req = high | TIOCSTI;
            let what = format!("ioctl(own pty as ctty, {req:#x} = TIOCSTI)");
            match tiocsti_as_ctty(req) {
                Ok((r, e)) => s.push(judged(what, r, e)),
                Err(e) => s.push(Step::failed(what, e)),
            }
            match nix::pty::openpty(None, None) {
                Ok(p) => {
                    let req = high | TIOCLINUX;
                    let c: u8 = 0;
                    // SAFETY: ioctl on our own pty with a pointer to one byte.
                    let r = unsafe { libc::syscall(libc::SYS_ioctl, p.slave.as_raw_fd(), req, &c) };
                    s.push(judged(
                        format!("ioctl(own pty, {req:#x} = TIOCLINUX)"),
                        r,
                        nix::errno::Errno::last(),
                    ));
                }
                Err(e) => s.push(Step::failed("openpty", errno_str(e))),
            }
            let flags = high | libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64;
            // SAFETY: fork-like raw clone (no new stack); the child leaves with _exit at once.
            let r = unsafe { libc::syscall(libc::SYS_clone, flags, 0u64, 0u64, 0u64, 0u64) };
            if r == 0 {
                // SAFETY: in the child.
                unsafe { libc::_exit(0) };
            }
            let e = nix::errno::Errno::last();
            if r > 0 {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(r as i32), None);
            }
            s.push(judged(format!("clone({flags:#x} = CLONE_NEWUSER)"), r, e));
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
