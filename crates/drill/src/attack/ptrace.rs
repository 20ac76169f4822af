//! Escape: attach to another process with ptrace (the way to read secrets out of, or inject
//! code into, a neighbour). Harmless: the target is this job's own child (or pid 1, the job's
//! init); an attach that works is detached at once.

use super::util::{errno_str, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// `ptrace`: ptrace another process (a forked child, pid 1).
pub struct Ptrace;

impl Attack for Ptrace {
    fn id(&self) -> &'static str {
        "ptrace"
    }
    fn title(&self) -> &'static str {
        "ptrace another process (a forked child, pid 1)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        use nix::sys::ptrace;
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::{fork, ForkResult, Pid};
        let mut s = Vec::new();
        // SAFETY: the child only sleeps and exits; it calls no async-signal-unsafe function
        // of the parent's state.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // SAFETY: pause and _exit are async-signal-safe.
                unsafe {
                    libc::pause();
                    libc::_exit(0)
                }
            }
            Ok(ForkResult::Parent { child }) => {
                match ptrace::attach(child) {
                    Ok(()) => {
                        let _ = nix::sys::wait::waitpid(child, None);
                        let _ = ptrace::detach(child, None);
                        s.push(Step::ok("PTRACE_ATTACH to a child", "attached (detached)"));
                    }
                    Err(e) => s.push(Step::failed("PTRACE_ATTACH to a child", errno_str(e))),
                }
                let _ = kill(child, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
            }
            Err(e) => s.push(Step::failed("fork", errno_str(e))),
        }
        let one = Pid::from_raw(1);
        if one != nix::unistd::getpid() {
            match ptrace::seize(one, ptrace::Options::empty()) {
                Ok(()) => {
                    let _ = ptrace::detach(one, None);
                    s.push(Step::ok("PTRACE_SEIZE pid 1", "seized (detached)"));
                }
                Err(e) => s.push(Step::failed("PTRACE_SEIZE pid 1", errno_str(e))),
            }
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
