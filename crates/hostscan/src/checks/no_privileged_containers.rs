//! 12. No privileged container mode.
//!
//! A job can start a `--privileged` container whenever it can talk to the Docker daemon:
//! fail if the Docker socket (`/var/run/docker.sock`, `/run/docker.sock`) is writable by
//! everyone, or a runner account is in the `docker` group. Pass if neither (or no Docker).
//! Airlock's sandboxes have no container daemon and no capabilities: pass.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct NoPrivilegedContainers;

impl Check for NoPrivilegedContainers {
    fn meta(&self) -> ItemMeta {
        item(
            "no-privileged-containers",
            12,
            Section::Runtime,
            "No privileged container mode",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let mut bad = Vec::new();
        let mut good = Vec::new();
        for s in ["/var/run/docker.sock", "/run/docker.sock"] {
            if let Some(m) = facts.host.meta(s) {
                if m.is_symlink {
                    continue;
                }
                if m.mode & 0o002 != 0 {
                    bad.push(Evidence::new(
                        s,
                        format!(
                            "mode {:o}: any local user can drive the Docker daemon",
                            m.mode & 0o7777
                        ),
                    ));
                } else {
                    good.push(Evidence::new(s, format!("mode {:o}", m.mode & 0o7777)));
                }
            }
        }
        let users = facts.runner_users();
        for (name, _) in &users {
            if let Some(u) = facts.user(name) {
                if u.groups.iter().any(|g| g == "docker") {
                    bad.push(Evidence::new(
                        "/etc/group",
                        format!("{name} is in group docker: jobs can run --privileged containers"),
                    ));
                }
            }
        }
        if !bad.is_empty() {
            return Outcome::fail(
                "jobs can reach the Docker daemon and start privileged containers",
                bad,
            );
        }
        if users.is_empty() {
            if facts.airlock_only() {
                return Outcome::pass(
                    "airlock sandboxes have no container daemon and no capabilities",
                    common::airlock_evidence(facts),
                );
            }
            return Outcome::unknown(
                "no runner installation (or its account) found on this host",
                good,
            );
        }
        good.push(Evidence::new(
            "/etc/group",
            format!(
                "runner accounts not in group docker: {}",
                users
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        Outcome::pass("runner accounts cannot reach a container daemon", good)
    }
}
