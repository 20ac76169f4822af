//! Recon/escape: with the host's pid namespace the job sees (and can signal, and read the
//! environment of) every host process. Success = more than 20 processes visible, or a pid 1 that
//! is not the job's own. Harmless: reads /proc only.

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// `host-pids`: host PID visibility: count pids, read pid 1's cmdline.
pub struct HostPids;

impl Attack for HostPids {
    fn id(&self) -> &'static str {
        "host-pids"
    }
    fn title(&self) -> &'static str {
        "host PID visibility: count pids, read pid 1's cmdline"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let pids: Vec<u32> = std::fs::read_dir("/proc")
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let one = std::fs::read("/proc/1/cmdline")
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default();
        let hostish = [
            "systemd",
            "/sbin/init",
            "init ",
            "containerd",
            "dockerd",
            "sshd",
            "kthreadd",
        ]
        .iter()
        .any(|k| one.contains(k) || one == "init");
        let what = format!("{} pids visible, pid 1 = {one:?}", pids.len());
        let s = if pids.len() > 20 || hostish {
            Step::ok(what, "host processes visible")
        } else {
            Step::failed(what, "only the job's own processes")
        };
        AttackResult::from_steps(self.id(), &[s])
    }
}
