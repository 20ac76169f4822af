//! Escape: the classic chroot break-out (chroot into a subdirectory while keeping a handle on
//! the old root, then `..` up). Needs CAP_SYS_CHROOT. Harmless: it only changes this process's
//! root.

use super::util::{errno_str, Step};
use super::{Attack, AttackResult, Category, Expect};

/// `chroot`: chroot escape (chroot into a subdir, walk up).
pub struct Chroot;

impl Attack for Chroot {
    fn id(&self) -> &'static str {
        "chroot"
    }
    fn title(&self) -> &'static str {
        "chroot escape (chroot into a subdir, walk up)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let _ = std::fs::create_dir_all("/tmp/drill-chroot");
        let s = match nix::unistd::chroot("/tmp/drill-chroot") {
            Ok(()) => {
                for _ in 0..32 {
                    let _ = std::env::set_current_dir("..");
                }
                Step::ok("chroot /tmp/drill-chroot", "changed root")
            }
            Err(e) => Step::failed("chroot /tmp/drill-chroot", errno_str(e)),
        };
        AttackResult::from_steps(self.id(), &[s])
    }
}
