//! Escape/side channel: perf events are a kernel attack surface and leak information about
//! other processes. Harmless: a CPU-clock counter on this process, closed at once.

use super::util::syscall_step;
use super::{detector, Attack, AttackResult, Category, Expect};

/// `perf-event`: perf_event_open (a software counter on itself).
pub struct PerfEvent;

impl Attack for PerfEvent {
    fn id(&self) -> &'static str {
        "perf-event"
    }
    fn title(&self) -> &'static str {
        "perf_event_open (a software counter on itself)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        // struct perf_event_attr: type (u32), size (u32), config (u64), ...
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
        attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&0u64.to_ne_bytes()); // PERF_COUNT_SW_CPU_CLOCK
                                                          // SAFETY: attr is a zeroed perf_event_attr of the declared size; pid 0 = self.
        let r = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
        AttackResult::from_steps(
            self.id(),
            &[syscall_step("perf_event_open(self, cpu-clock)", r, true)],
        )
    }
}
