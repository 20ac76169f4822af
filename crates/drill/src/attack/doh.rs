//! DNS over HTTPS: resolve names through the attacker's DoH endpoint, by IP and by name, which
//! would bypass airlock's DNS gateway. Success = the world's DoH server answered. Harmless:
//! the endpoint is the drill's own.

use super::util::{http, tls, Step};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::{DOH, DOH_NAME};

/// `doh`: HTTPS POST to the DoH endpoint.
pub struct Doh;

/// A DNS query for example.com, as a DoH POST body.
const QUERY: &[u8] = &[
    0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c',
    b'o', b'm', 0, 0, 1, 0, 1,
];

impl Attack for Doh {
    fn id(&self) -> &'static str {
        "doh"
    }
    fn title(&self) -> &'static str {
        "DNS over HTTPS to the attacker's resolver, by IP and by name"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::DENIED_EGRESS)
    }
    fn expect_in_audit_mode(&self) -> Expect {
        // Audit mode: DoH by name passes there; the ClientHello without SNI is refused in every mode.
        Expect::Detected(detector::DENIED_EGRESS)
    }
    fn run(&self) -> AttackResult {
        let ip = DOH.to_string();
        let post = b"POST /dns-query HTTP/1.1\r\nContent-Type: application/dns-message\r\n\r\n";
        let mut payload = post.to_vec();
        payload.extend_from_slice(QUERY);
        let s = vec![
            Step::from(
                format!("DoH to {ip}:443 without SNI"),
                tls(&ip, 443, None, &payload),
            ),
            Step::from(
                format!("DoH to {ip}:443 with SNI {DOH_NAME}"),
                tls(&ip, 443, Some(DOH_NAME), &payload),
            ),
            Step::from(
                format!("DoH to {DOH_NAME}:443"),
                tls(DOH_NAME, 443, Some(DOH_NAME), &payload),
            ),
            Step::from(
                format!("DoH over plain HTTP to {ip}"),
                http(
                    &ip,
                    80,
                    "POST",
                    &ip,
                    "/dns-query",
                    &[("Content-Type", "application/dns-message")],
                    QUERY,
                ),
            ),
        ];
        AttackResult::from_steps(self.id(), &s)
    }
}
