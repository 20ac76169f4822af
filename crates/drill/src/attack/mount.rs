//! Escape: mount a filesystem (tmpfs over /tmp, a fresh proc, / remounted read-write). Harmless:
//! a mount that works is undone at once and lives in the job's own mount namespace.

use super::util::{errno_str, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// `mount`: mount a tmpfs, remount / read-write, mount proc.
pub struct Mount;

impl Attack for Mount {
    fn id(&self) -> &'static str {
        "mount"
    }
    fn title(&self) -> &'static str {
        "mount a tmpfs, remount / read-write, mount proc"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        use nix::mount::{mount, umount, MsFlags};
        let _ = std::fs::create_dir_all("/tmp/drill-mnt");
        let mut s = Vec::new();
        for (what, src, target, fstype, flags) in [
            (
                "mount tmpfs on /tmp/drill-mnt",
                "tmpfs",
                "/tmp/drill-mnt",
                Some("tmpfs"),
                MsFlags::empty(),
            ),
            (
                "mount proc on /tmp/drill-mnt",
                "proc",
                "/tmp/drill-mnt",
                Some("proc"),
                MsFlags::empty(),
            ),
            (
                "remount / read-write",
                "none",
                "/",
                None,
                MsFlags::MS_REMOUNT,
            ),
        ] {
            match mount(Some(src), target, fstype, flags, None::<&str>) {
                Ok(()) => {
                    if target != "/" {
                        let _ = umount(target);
                    }
                    s.push(Step::ok(what, "mounted (undone)"));
                }
                Err(e) => s.push(Step::failed(what, errno_str(e))),
            }
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
