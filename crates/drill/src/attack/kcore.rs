//! Escape/secret theft: `/proc/kcore` is the host's physical memory. Harmless: reads at most
//! one byte (or one line of kallsyms).

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// `kcore`: read /proc/kcore, /proc/kallsyms addresses.
pub struct Kcore;

impl Attack for Kcore {
    fn id(&self) -> &'static str {
        "kcore"
    }
    fn title(&self) -> &'static str {
        "read /proc/kcore, /proc/kallsyms addresses"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        use std::io::Read;
        let mut s = Vec::new();
        s.push(
            match std::fs::File::open("/proc/kcore").and_then(|mut f| {
                let mut b = [0u8; 1];
                f.read(&mut b)
            }) {
                Ok(n) if n > 0 => Step::ok("read /proc/kcore", "read host memory"),
                Ok(_) => Step::failed("read /proc/kcore", "empty (masked)"),
                Err(e) => Step::failed("read /proc/kcore", e.to_string()),
            },
        );
        s.push(match std::fs::read_to_string("/proc/kallsyms") {
            Ok(t) => match t.lines().next() {
                Some(l) if !l.starts_with("0000000000000000") => {
                    Step::ok("read /proc/kallsyms", "kernel addresses visible")
                }
                _ => Step::failed("read /proc/kallsyms", "addresses hidden or empty"),
            },
            Err(e) => Step::failed("read /proc/kallsyms", e.to_string()),
        });
        AttackResult::from_steps(self.id(), &s)
    }
}
