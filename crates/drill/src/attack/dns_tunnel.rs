//! DNS tunnelling: data encoded in many long, random-looking subdomain queries under the
//! attacker's domain. Success = any query got an answer (the world answers every name below
//! the tunnel domain; airlock's gateway must answer none). Harmless: the queries carry random
//! bytes and go only to the job's own resolver.

use super::util::{resolve, Step};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::TUNNEL_SUFFIX;

/// `dns-tunnel`: 40 queries with 50-character high-entropy labels.
pub struct DnsTunnel;

/// A pseudo-random label of `n` base32 characters (xorshift; no randomness crate needed).
fn label(seed: &mut u64, n: usize) -> String {
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ALPHA[(*seed % 32) as usize] as char
        })
        .collect()
}

impl Attack for DnsTunnel {
    fn id(&self) -> &'static str {
        "dns-tunnel"
    }
    fn title(&self) -> &'static str {
        "DNS tunnelling: 40 long random subdomain queries"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::DNS_TUNNELLING)
    }
    fn expect_in_audit_mode(&self) -> Expect {
        // Audit mode: every name resolves there; the names still look like a data channel.
        Expect::Detected(detector::DNS_TUNNELLING)
    }
    fn run(&self) -> AttackResult {
        let mut seed = u64::from(std::process::id()) | 0x9e37_79b9_7f4a_7c15;
        let (mut answered, mut refused, mut last_err) = (0, 0, String::new());
        for i in 0..40 {
            let name = format!(
                "{}.{}.{i}.{TUNNEL_SUFFIX}",
                label(&mut seed, 50),
                label(&mut seed, 50)
            );
            match resolve(&name) {
                Ok(v) if !v.is_empty() => answered += 1,
                Ok(_) => refused += 1,
                Err(e) => {
                    refused += 1;
                    last_err = e;
                }
            }
        }
        let s = if answered > 0 {
            Step::ok("40 tunnel queries", format!("{answered} answered"))
        } else {
            Step::failed(
                "40 tunnel queries",
                format!("{refused} refused ({last_err})"),
            )
        };
        AttackResult::from_steps(self.id(), &[s])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_long_and_differ() {
        let mut s = 42u64;
        let (a, b) = (super::label(&mut s, 50), super::label(&mut s, 50));
        assert_eq!(a.len(), 50);
        assert_ne!(a, b);
    }
}
