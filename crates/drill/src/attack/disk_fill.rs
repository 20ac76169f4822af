//! Exhaustion: fill the disk (the host's, if the job's writes reached it). Success = 8 GiB
//! written. Harmless: bounded at 8 GiB, written to the job's own /tmp (its writable layer),
//! removed afterwards.

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// `disk-fill`: disk fill (bounded at 8 GiB).
pub struct DiskFill;

impl Attack for DiskFill {
    fn id(&self) -> &'static str {
        "disk-fill"
    }
    fn title(&self) -> &'static str {
        "disk fill (bounded at 8 GiB)"
    }
    fn category(&self) -> Category {
        Category::Exhaustion
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        use std::io::Write;
        let path = "/tmp/drill-fill";
        let chunk = vec![0x5au8; 1 << 20];
        let mut written: u64 = 0;
        let mut err = String::new();
        match std::fs::File::create(path) {
            Ok(mut f) => {
                while written < (8u64 << 30) {
                    match f.write_all(&chunk) {
                        Ok(()) => written += chunk.len() as u64,
                        Err(e) => {
                            err = e.to_string();
                            break;
                        }
                    }
                }
            }
            Err(e) => err = e.to_string(),
        }
        let _ = std::fs::remove_file(path);
        let s = if written >= (8u64 << 30) {
            Step::ok("write 8 GiB", "no disk limit")
        } else {
            Step::failed(
                "write 8 GiB",
                format!("stopped at {} MiB: {err}", written >> 20),
            )
        };
        AttackResult::from_steps(self.id(), &[s])
    }
}
