//! Escape (runc CVE-2019-5736): open the binary behind `/proc/self/exe` or another process's
//! `exe` for writing, to replace the runtime on the host. Harmless: opened for writing, never
//! written.

use super::util::open_for_write;
use super::{Attack, AttackResult, Category, Expect};

/// `proc-self-exe`: overwrite /proc/self/exe and the runtime's binary (CVE-2019-5736).
pub struct ProcSelfExe;

impl Attack for ProcSelfExe {
    fn id(&self) -> &'static str {
        "proc-self-exe"
    }
    fn title(&self) -> &'static str {
        "overwrite /proc/self/exe and the runtime's binary (CVE-2019-5736)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let mut s = vec![
            open_for_write("/proc/self/exe"),
            open_for_write("/proc/1/exe"),
        ];
        if let Ok(ppid) = std::fs::read_to_string("/proc/self/stat").map(|t| {
            t.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .unwrap_or("0")
                .to_owned()
        }) {
            if ppid != "0" {
                s.push(open_for_write(&format!("/proc/{ppid}/exe")));
            }
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
