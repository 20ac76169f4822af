//! 7. OS hardening applied (CIS benchmarks).
//!
//! A few CIS controls that files show: sshd refuses root logins and passwords
//! (`/etc/ssh/sshd_config` and `sshd_config.d/*.conf`, first value wins as in sshd; OpenSSH's
//! default for `PasswordAuthentication` is yes), and security updates install automatically
//! (`APT::Periodic::Unattended-Upgrade "1"`, or an enabled `dnf-automatic` timer). Any control
//! missing fails; all present pass; nothing readable is unknown. Not a full CIS audit.

use super::{common, item, Check};
use crate::facts::Facts;
use crate::host::join;
use crate::report::{Evidence, ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct OsHardening;

fn sshd_value(facts: &Facts<'_>, key: &str) -> Option<(String, String)> {
    let mut files: Vec<String> = facts
        .host
        .list("/etc/ssh/sshd_config.d")
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .map(|n| join("/etc/ssh/sshd_config.d", &n))
        .collect();
    // sshd reads the Include (conventionally at the top) before the rest of the main file.
    files.push("/etc/ssh/sshd_config".to_owned());
    for f in files {
        let Some(t) = facts.host.read(&f) else {
            continue;
        };
        for l in t.lines() {
            let mut w = l.split_whitespace();
            if w.next().is_some_and(|k| k.eq_ignore_ascii_case(key)) {
                if let Some(v) = w.next() {
                    return Some((f, v.to_lowercase()));
                }
            }
        }
    }
    None
}

impl Check for OsHardening {
    fn meta(&self) -> ItemMeta {
        item(
            "os-hardening",
            7,
            Section::Deployment,
            "OS hardening applied (CIS benchmarks)",
        )
    }

    fn evaluate(&self, facts: &Facts<'_>) -> Outcome {
        let mut bad = Vec::new();
        let mut good = Vec::new();
        let sshd = facts.host.exists("/etc/ssh/sshd_config");
        if sshd {
            match sshd_value(facts, "PermitRootLogin") {
                Some((f, v)) if v == "yes" => bad.push(Evidence::new(f, "PermitRootLogin yes")),
                Some((f, v)) => good.push(Evidence::new(f, format!("PermitRootLogin {v}"))),
                None => good.push(Evidence::new(
                    "/etc/ssh/sshd_config",
                    "PermitRootLogin default (prohibit-password)",
                )),
            }
            match sshd_value(facts, "PasswordAuthentication") {
                Some((f, v)) if v == "no" => {
                    good.push(Evidence::new(f, "PasswordAuthentication no"))
                }
                Some((f, v)) => bad.push(Evidence::new(f, format!("PasswordAuthentication {v}"))),
                None => bad.push(Evidence::new(
                    "/etc/ssh/sshd_config",
                    "PasswordAuthentication not set (OpenSSH default: yes)",
                )),
            }
        }
        let apt = facts.host.read("/etc/apt/apt.conf.d/20auto-upgrades");
        let apt_on = apt.as_deref().is_some_and(|t| {
            t.lines()
                .any(|l| l.contains("Unattended-Upgrade") && l.contains("\"1\""))
        });
        let dnf = common::enabled_unit(facts, &["dnf-automatic"]);
        if apt_on {
            good.push(Evidence::new(
                "/etc/apt/apt.conf.d/20auto-upgrades",
                "unattended upgrades on",
            ));
        } else if let Some(e) = dnf {
            good.push(e);
        } else if apt.is_some() || facts.host.exists("/etc/apt") || facts.host.exists("/etc/dnf") {
            bad.push(Evidence::new(
                "/etc/apt/apt.conf.d/20auto-upgrades",
                "automatic security updates not enabled",
            ));
        }
        if bad.is_empty() && good.is_empty() {
            return Outcome::unknown(
                "neither sshd nor a package manager's configuration could be read",
                vec![],
            );
        }
        if bad.is_empty() {
            Outcome::pass(
                "the hardening controls checked are in place (sshd, automatic updates)",
                good,
            )
        } else {
            bad.extend(good);
            Outcome::fail("hardening controls missing", bad)
        }
    }
}
