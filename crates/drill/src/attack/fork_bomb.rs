//! Exhaustion: fork until the pid limit. Success = 5000 processes existed at once (no
//! meaningful pids limit). Harmless: bounded at 5000 and 5 s; every child only sleeps and dies
//! with the job's pid namespace.

use super::util::{errno_str, Step};
use super::{Attack, AttackResult, Category, Expect};

/// `fork-bomb`: fork bomb (bounded at 5000 processes, 5 s).
pub struct ForkBomb;

impl Attack for ForkBomb {
    fn id(&self) -> &'static str {
        "fork-bomb"
    }
    fn title(&self) -> &'static str {
        "fork bomb (bounded at 5000 processes, 5 s)"
    }
    fn category(&self) -> Category {
        Category::Exhaustion
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        use nix::unistd::{fork, ForkResult};
        let start = std::time::Instant::now();
        let mut n = 0u32;
        let mut err = String::new();
        let mut kids = Vec::new();
        while n < 5000 && start.elapsed() < std::time::Duration::from_secs(5) {
            // SAFETY: the child only sleeps and exits (async-signal-safe calls).
            match unsafe { fork() } {
                Ok(ForkResult::Child) => unsafe {
                    // SAFETY: sleep and _exit are async-signal-safe.
                    libc::sleep(10);
                    libc::_exit(0)
                },
                Ok(ForkResult::Parent { child }) => {
                    kids.push(child);
                    n += 1;
                }
                Err(e) => {
                    err = errno_str(e);
                    break;
                }
            }
        }
        for k in &kids {
            let _ = nix::sys::signal::kill(*k, nix::sys::signal::Signal::SIGKILL);
        }
        for k in &kids {
            let _ = nix::sys::wait::waitpid(*k, None);
        }
        let what = "fork until refused".to_owned();
        let s = if n >= 5000 {
            Step::ok(what, "5000 processes: no pids limit")
        } else {
            Step::failed(what, format!("stopped at {n}: {err}"))
        };
        AttackResult::from_steps(self.id(), &[s])
    }
}
