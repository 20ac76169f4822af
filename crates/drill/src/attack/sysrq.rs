//! Escape/DoS: `/proc/sysrq-trigger` reboots, crashes or freezes the host with one byte.
//! Harmless: the file is only OPENED for writing, never written: success means a write would
//! have been accepted.

use super::util::open_for_write;
use super::{Attack, AttackResult, Category, Expect};

/// `sysrq`: open /proc/sysrq-trigger for writing.
pub struct Sysrq;

impl Attack for Sysrq {
    fn id(&self) -> &'static str {
        "sysrq"
    }
    fn title(&self) -> &'static str {
        "open /proc/sysrq-trigger for writing"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        AttackResult::from_steps(self.id(), &[open_for_write("/proc/sysrq-trigger")])
    }
}
