//! Escape: raw devices (physical memory, kernel log, disks, KVM). Harmless: opened read-only
//! and closed unread.

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// `dev-mem`: open /dev/mem, /dev/kmsg, host disks, /dev/kvm.
pub struct DevMem;

impl Attack for DevMem {
    fn id(&self) -> &'static str {
        "dev-mem"
    }
    fn title(&self) -> &'static str {
        "open /dev/mem, /dev/kmsg, host disks, /dev/kvm"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let s: Vec<Step> = [
            "/dev/mem",
            "/dev/kmem",
            "/dev/port",
            "/dev/kmsg",
            "/dev/sda",
            "/dev/vda",
            "/dev/nvme0n1",
            "/dev/kvm",
        ]
        .into_iter()
        .map(|p| match std::fs::File::open(p) {
            Ok(_) => Step::ok(format!("open {p}"), "opened (not read)"),
            Err(e) => Step::failed(format!("open {p}"), e.to_string()),
        })
        .collect();
        AttackResult::from_steps(self.id(), &s)
    }
}
