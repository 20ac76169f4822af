//! 11. Jobs execute as non-root user.
//!
//! For every account a runner runs as (unit `User=`, root when unset; else the home the
//! runner lives in): fail if its uid is 0, if it is in a group that is root in all but name
//! (`docker`, `sudo`, `wheel`, `admin`, `lxd`, `libvirt`), or if a sudoers rule grants it (or
//! one of its groups) commands. Airlock's jobs run unprivileged in a user namespace: pass.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::host::join;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct NonRootJobs;

/// Groups whose members can become root.
const ROOTISH: [&str; 6] = ["docker", "sudo", "wheel", "admin", "lxd", "libvirt"];

fn sudoers_lines(facts: &Facts<'_>) -> Vec<(String, String)> {
    let mut files = vec!["/etc/sudoers".to_owned()];
    files.extend(
        facts
            .host
            .list("/etc/sudoers.d")
            .into_iter()
            .map(|n| join("/etc/sudoers.d", &n)),
    );
    let mut out = Vec::new();
    for f in files {
        let Some(t) = facts.host.read(&f) else {
            continue;
        };
        for l in t.lines().map(str::trim) {
            if !l.is_empty() && !l.starts_with('#') && !l.starts_with("Defaults") && l.contains('=')
            {
                out.push((f.clone(), l.to_owned()));
            }
        }
    }
    out
}

impl Check for NonRootJobs {
    fn meta(&self) -> ItemMeta {
        item(
            "non-root-jobs",
            11,
            Section::Runtime,
            "Jobs execute as non-root user",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let users = facts.runner_users();
        if users.is_empty() {
            if facts.airlock_only() {
                return Outcome::pass(
                    "airlock runs jobs unprivileged inside a user namespace",
                    common::airlock_evidence(facts),
                );
            }
            return Outcome::unknown(
                "no runner installation (or its account) found on this host",
                vec![],
            );
        }
        let sudo = sudoers_lines(facts);
        let mut bad = Vec::new();
        let mut good = Vec::new();
        for (name, dirs) in users {
            let src = facts
                .runners
                .iter()
                .find(|r| r.user.as_deref() == Some(name.as_str()))
                .and_then(|r| r.unit.as_ref().map(|u| u.path.clone()))
                .unwrap_or_else(|| dirs.first().cloned().unwrap_or_default());
            let Some(acct) = facts.user(&name) else {
                if name == "root" {
                    bad.push(Evidence::new(src, "runs as root (no User= in the unit)"));
                } else {
                    bad.push(Evidence::new(
                        "/etc/passwd",
                        format!("runner account {name} not found"),
                    ));
                }
                continue;
            };
            let before = bad.len();
            if acct.uid == 0 {
                bad.push(Evidence::new(
                    src.clone(),
                    format!("runs as {name} (uid 0)"),
                ));
            }
            for g in acct.groups.iter().filter(|g| ROOTISH.contains(&g.as_str())) {
                bad.push(Evidence::new(
                    "/etc/group",
                    format!("{name} is in group {g} (root-equivalent)"),
                ));
            }
            for (f, l) in &sudo {
                let who = l.split_whitespace().next().unwrap_or_default();
                let hit = who == name
                    || who
                        .strip_prefix('%')
                        .is_some_and(|g| acct.groups.iter().any(|x| x == g));
                if hit && !(who.starts_with('%') && ROOTISH.contains(&who.trim_start_matches('%')))
                {
                    bad.push(Evidence::new(
                        f.clone(),
                        format!("sudo rule for {name}: {l}"),
                    ));
                }
            }
            if bad.len() == before {
                good.push(Evidence::new(
                    "/etc/passwd",
                    format!("{name}: uid {}, groups {}", acct.uid, acct.groups.join(",")),
                ));
            }
        }
        if bad.is_empty() {
            Outcome::pass("runner accounts are unprivileged", good)
        } else {
            Outcome::fail("a runner account is root or can become root", bad)
        }
    }
}
