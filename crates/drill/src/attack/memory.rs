//! Exhaustion: allocate and touch memory until stopped. Success = 8 GiB touched (no memory
//! limit). Usually the job is OOM-killed (signal 9): that counts as blocked. Harmless: bounded
//! at 8 GiB, in 64 MiB steps.

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// `memory`: memory exhaustion (bounded at 8 GiB).
pub struct Memory;

impl Attack for Memory {
    fn id(&self) -> &'static str {
        "memory"
    }
    fn title(&self) -> &'static str {
        "memory exhaustion (bounded at 8 GiB)"
    }
    fn category(&self) -> Category {
        Category::Exhaustion
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        const STEP: usize = 64 << 20;
        let mut held: Vec<Vec<u8>> = Vec::new();
        while held.len() * STEP < (8usize << 30) {
            let mut v: Vec<u8> = Vec::new();
            if v.try_reserve_exact(STEP).is_err() {
                break;
            }
            // Touch every page (memset: fast even in a debug build).
            // SAFETY: the capacity is at least STEP bytes; every byte is written before
            // set_len makes it part of the vector.
            unsafe {
                std::ptr::write_bytes(v.as_mut_ptr(), 1, STEP);
                v.set_len(STEP);
            }
            held.push(v);
        }
        let got = held.len() * STEP;
        let s = if got >= (8usize << 30) {
            Step::ok("allocate 8 GiB", "no memory limit")
        } else {
            Step::failed(
                "allocate 8 GiB",
                format!("allocation refused at {} MiB", got >> 20),
            )
        };
        AttackResult::from_steps(self.id(), &[s])
    }
}
