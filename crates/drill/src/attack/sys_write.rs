//! Escape/tampering: kernel tunables under `/sys` (memory management, uevent helper).
//! Harmless: opened for writing, nothing written.

use super::util::open_for_write;
use super::{Attack, AttackResult, Category, Expect};

/// `sys-write`: open /sys tunables for writing.
pub struct SysWrite;

impl Attack for SysWrite {
    fn id(&self) -> &'static str {
        "sys-write"
    }
    fn title(&self) -> &'static str {
        "open /sys tunables for writing"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let s: Vec<_> = [
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "/sys/kernel/uevent_helper",
            "/sys/power/state",
            "/proc/sys/kernel/core_pattern",
        ]
        .into_iter()
        .map(open_for_write)
        .collect();
        AttackResult::from_steps(self.id(), &s)
    }
}
