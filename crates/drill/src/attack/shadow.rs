//! Secret theft: host credentials. Harmless: reads only (nothing is printed but the outcome).

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// `shadow`: read the host's /etc/shadow, SSH host keys, root's files.
pub struct Shadow;

impl Attack for Shadow {
    fn id(&self) -> &'static str {
        "shadow"
    }
    fn title(&self) -> &'static str {
        "read the host's /etc/shadow, SSH host keys, root's files"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let s: Vec<Step> = [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/ssh/ssh_host_ed25519_key",
            "/root/.ssh/id_rsa",
            "/root/.bash_history",
            "/var/lib/airlock",
        ]
        .into_iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Step::ok(format!("list {p}"), "visible"),
            Ok(_) => match std::fs::read(p) {
                Ok(b) => Step::ok(format!("read {p}"), format!("{} bytes", b.len())),
                Err(e) => Step::failed(format!("read {p}"), e.to_string()),
            },
            Err(e) => Step::failed(format!("read {p}"), e.to_string()),
        })
        .collect();
        AttackResult::from_steps(self.id(), &s)
    }
}
