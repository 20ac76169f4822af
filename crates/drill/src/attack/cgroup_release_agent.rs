//! Escape (CVE-2022-0492 style): the v1 `release_agent` runs a program as root on the host.
//! Harmless: the files are opened for writing, never written; mounting a cgroup hierarchy is
//! tried and undone.

use super::util::{errno_str, open_for_write, Step};
use super::{Attack, AttackResult, Category, Expect};

/// `cgroup-release-agent`: cgroup v1 release_agent / notify_on_release.
pub struct CgroupReleaseAgent;

impl Attack for CgroupReleaseAgent {
    fn id(&self) -> &'static str {
        "cgroup-release-agent"
    }
    fn title(&self) -> &'static str {
        "cgroup v1 release_agent / notify_on_release"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let mut s = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let p = e.path().join("release_agent");
                if p.exists() {
                    s.push(open_for_write(&p.to_string_lossy()));
                }
            }
        }
        s.push(open_for_write("/sys/fs/cgroup/release_agent"));
        s.push(open_for_write("/sys/fs/cgroup/notify_on_release"));
        let _ = std::fs::create_dir_all("/tmp/drill-cg");
        s.push(
            match nix::mount::mount(
                Some("cgroup"),
                "/tmp/drill-cg",
                Some("cgroup"),
                nix::mount::MsFlags::empty(),
                Some("memory"),
            ) {
                Ok(()) => {
                    let _ = nix::mount::umount("/tmp/drill-cg");
                    Step::ok("mount cgroup v1 (memory)", "mounted (undone)")
                }
                Err(e) => Step::failed("mount cgroup v1 (memory)", errno_str(e)),
            },
        );
        AttackResult::from_steps(self.id(), &s)
    }
}
