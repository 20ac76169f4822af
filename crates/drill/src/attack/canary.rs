//! The positive control: fetch the one allowed host. It MUST succeed; if it does not, the
//! drill's world (or the sandbox's network) is broken and "blocked" would mean nothing.

use super::util::{answered_by_allowed, http_raw, Step};
use super::{Attack, AttackResult, Category, Expect};
use crate::addrs::ALLOWED_NAME;

/// `canary`: `GET http://allowed.drill.test/`.
pub struct Canary;

impl Attack for Canary {
    fn id(&self) -> &'static str {
        "canary"
    }
    fn title(&self) -> &'static str {
        "positive control: fetch the allowed host"
    }
    fn category(&self) -> Category {
        Category::Control
    }
    fn expect(&self) -> Expect {
        Expect::Succeeds
    }
    fn run(&self) -> AttackResult {
        let r = http_raw(ALLOWED_NAME, 80, "GET", ALLOWED_NAME, "/", &[], b"").and_then(|resp| {
            if answered_by_allowed(&resp) {
                Ok("the allowed host answered".to_owned())
            } else {
                Err(format!(
                    "unexpected answer: {}",
                    resp.lines().next().unwrap_or("")
                ))
            }
        });
        let s = Step::from(format!("GET http://{ALLOWED_NAME}/"), r);
        AttackResult::from_steps(self.id(), &[s])
    }
}
