//! 15. Secret injection via environment variables (not filesystem).
//!
//! Fail when secrets sit in files a job can read: secret-looking entries in a runner's `.env`
//! (names with TOKEN, SECRET, PASSWORD, API_KEY…), `~/.netrc`, `~/.npmrc` with an auth token,
//! `~/.pypirc` with a password, in runner accounts' homes. None: pass.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::host::join;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct SecretInjectionEnv;

impl Check for SecretInjectionEnv {
    fn meta(&self) -> ItemMeta {
        item(
            "secret-injection-env",
            15,
            Section::Runtime,
            "Secret injection via environment variables (not filesystem)",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let mut bad = Vec::new();
        for r in &facts.runners {
            if !r.env_secrets.is_empty() {
                bad.push(Evidence::new(
                    join(&r.dir, ".env"),
                    format!(
                        "secrets stored in the runner's .env: {}",
                        r.env_secrets.join(", ")
                    ),
                ));
            }
        }
        let homes = facts.runner_homes();
        for (u, h) in &homes {
            let p = join(h, ".netrc");
            if facts.host.read(&p).is_some_and(|t| t.contains("password")) {
                bad.push(Evidence::new(p, format!("{u}: password in .netrc")));
            }
            let p = join(h, ".npmrc");
            if facts.host.read(&p).is_some_and(|t| {
                t.contains("_authToken") || t.contains("_auth=") || t.contains("_password")
            }) {
                bad.push(Evidence::new(p, format!("{u}: registry token in .npmrc")));
            }
            let p = join(h, ".pypirc");
            if facts.host.read(&p).is_some_and(|t| t.contains("password")) {
                bad.push(Evidence::new(p, format!("{u}: password in .pypirc")));
            }
        }
        if !bad.is_empty() {
            return Outcome::fail("secrets are stored in files jobs can read", bad);
        }
        if homes.is_empty() && facts.runners.is_empty() {
            if facts.airlock_only() {
                return Outcome::pass("airlock passes a job only its environment; no secret files on its fresh filesystem", common::airlock_evidence(facts));
            }
            return Outcome::unknown("no runner installation found on this host", vec![]);
        }
        Outcome::pass("no secret files in runner directories or homes", vec![])
    }
}
