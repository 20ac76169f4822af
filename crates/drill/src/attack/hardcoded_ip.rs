//! A hard-coded IP: a C2 channel straight to the attacker's address on a high port, bypassing
//! DNS (and so any name-based allow-list). Success = the world's banner came back. Harmless:
//! the attacker is the drill's own listener.

use std::io::Read;

use super::util::{from_world, tcp_connect, Step};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::{ATTACKER, ATTACKER_TCP_PORT};

/// `hardcoded-ip`: TCP to 203.0.113.7:4444 and :22.
pub struct HardcodedIp;

fn c2(port: u16) -> Step {
    let what = format!("TCP {ATTACKER}:{port}");
    match tcp_connect(&ATTACKER.to_string(), port) {
        Ok(mut s) => {
            let mut buf = [0u8; 128];
            let n = s.read(&mut buf).unwrap_or(0);
            if from_world(&String::from_utf8_lossy(&buf[..n])) {
                Step::ok(what, "attacker's banner received")
            } else {
                Step::failed(what, "connected but no banner (not the attacker)")
            }
        }
        Err(e) => Step::failed(what, e),
    }
}

impl Attack for HardcodedIp {
    fn id(&self) -> &'static str {
        "hardcoded-ip"
    }
    fn title(&self) -> &'static str {
        "hard-coded IP: TCP straight to the attacker, no DNS"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::DENIED_EGRESS)
    }
    fn expect_in_audit_mode(&self) -> Expect {
        // Audit mode: the connection is let through there; an address no DNS answer named is still hard-coded.
        Expect::Detected(detector::DENIED_EGRESS)
    }
    fn run(&self) -> AttackResult {
        AttackResult::from_steps(self.id(), &[c2(ATTACKER_TCP_PORT), c2(22)])
    }
}
