//! Helpers shared by several checks.

use crate::facts::Facts;
use crate::host::join;
use crate::net::{routes_to, Cidr, Reach};
use crate::report::{Evidence, Outcome};

/// Where operators record the process items a host cannot show (incident response plan,
/// penetration tests, log reviews…). TOML, one table per checklist id:
///
/// ```toml
/// [incident-response-plan]
/// reviewed = "2026-06-01"                 # date of the last review (YYYY-MM-DD)
/// reference = "https://wiki.example/ir"   # where it lives
/// ```
pub const ATTESTATIONS_PATH: &str = "/etc/airlock/attestations.toml";

/// One attestation entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The date given.
    pub reviewed: String,
    /// Its age in days, if the date parsed.
    pub age_days: Option<u64>,
    /// The reference, if any.
    pub reference: Option<String>,
}

/// Reads the attestation for `id`.
pub fn attestation(facts: &Facts<'_>, id: &str) -> Option<Attestation> {
    let text = facts.host.read(ATTESTATIONS_PATH)?;
    let v: toml::Table = text.parse().ok()?;
    let t = v.get(id)?.as_table()?;
    let reviewed = match t.get("reviewed")? {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => return None,
    };
    let day = reviewed.get(..10).unwrap_or(&reviewed);
    let age_days = humantime::parse_rfc3339_weak(&format!("{day} 00:00:00"))
        .ok()
        .and_then(|t| facts.now.duration_since(t).ok())
        .map(|d| d.as_secs() / 86_400);
    Some(Attestation {
        reviewed,
        age_days,
        reference: t
            .get("reference")
            .and_then(|r| r.as_str())
            .map(str::to_owned),
    })
}

/// Pass/fail from an attestation no older than `max_days`; `None` without one.
pub fn attested(facts: &Facts<'_>, id: &str, max_days: u64, what: &str) -> Option<Outcome> {
    let a = attestation(facts, id)?;
    let detail = format!(
        "[{id}] reviewed = {}{}",
        a.reviewed,
        a.reference
            .as_deref()
            .map(|r| format!(", reference = {r}"))
            .unwrap_or_default()
    );
    let ev = vec![Evidence::new(ATTESTATIONS_PATH, detail)];
    Some(match a.age_days {
        Some(d) if d <= max_days => Outcome::pass(
            format!("{what} attested {d} days ago (at most {max_days})"),
            ev,
        ),
        Some(d) => Outcome::fail(
            format!("{what} last attested {d} days ago, more than {max_days}"),
            ev,
        ),
        None => Outcome::fail(
            format!("{what} attestation has an unreadable date (want YYYY-MM-DD)"),
            ev,
        ),
    })
}

/// Whether a host process can reach `target`, with the evidence: `None` when the routes
/// of its address family are unknown.
pub fn reachable(facts: &Facts<'_>, target: Cidr) -> Option<(bool, Vec<Evidence>)> {
    let (routes, file) = if matches!(target, crate::net::Cidr::V6(_)) {
        (facts.routes6.as_ref()?, "/proc/net/ipv6_route")
    } else {
        (facts.routes.as_ref()?, "/proc/net/route")
    };
    let via = routes_to(routes, target);
    if via.is_empty() {
        return Some((
            false,
            vec![Evidence::new(file, format!("no route to {target}"))],
        ));
    }
    let r = via[0];
    let mut ev = vec![Evidence::new(
        file,
        format!("{target} routed via {} ({})", r.iface, r.dest),
    )];
    let reach = facts.firewall.reach(target);
    let open = match reach {
        Reach::DeniedByRule(e) | Reach::DeniedByPolicy(e) => {
            ev.push(e);
            false
        }
        Reach::AllowedByRule(e) | Reach::AllowedByPolicy(e) => {
            ev.push(e);
            true
        }
        Reach::NoFirewall => {
            ev.push(Evidence::new("(firewall)", "no output filter chain found"));
            true
        }
    };
    Some((open, ev))
}

/// Evidence that airlock runs the jobs (for items airlock's sandbox satisfies).
pub fn airlock_evidence(facts: &Facts<'_>) -> Vec<Evidence> {
    facts
        .airlock
        .serve_unit
        .iter()
        .map(|u| Evidence::new(&u.path, "jobs run by `airlock serve`, one sandbox per job"))
        .collect()
}

/// Alert sinks of airlock's policies (`[alerts]`): (file, sink, target) with sink `webhook`
/// (target: the URL's host) or `file` (target: the path).
pub fn airlock_alert_sinks(facts: &Facts<'_>) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for p in &facts.airlock.policies {
        let Some(t) = facts.host.read(p) else {
            continue;
        };
        let Ok(v) = t.parse::<toml::Table>() else {
            continue;
        };
        let Some(alerts) = v.get("alerts") else {
            continue;
        };
        if let Some(url) = alerts
            .get("webhook")
            .and_then(|w| w.get("url"))
            .and_then(|u| u.as_str())
        {
            let host = url
                .split("://")
                .nth(1)
                .and_then(|r| r.split(['/', '?']).next())
                .unwrap_or(url);
            out.push((p.clone(), "webhook", host.to_owned()));
        }
        if let Some(f) = alerts.get("file").and_then(|f| f.as_str()) {
            out.push((p.clone(), "file", f.to_owned()));
        }
    }
    out
}

/// Whether airlock runs jobs here: a serve unit, or a policy and an audit log with jobs.
pub fn airlock_runs_jobs(facts: &Facts<'_>) -> bool {
    facts.airlock.serve_unit.is_some()
        || (!facts.airlock.policies.is_empty()
            && facts
                .airlock
                .audit
                .as_ref()
                .is_some_and(|a| a.jobs_ended > 0))
}

/// Egress modes of every group in airlock's policies: (file, group, mode).
pub fn airlock_egress_modes(facts: &Facts<'_>) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in &facts.airlock.policies {
        let Some(t) = facts.host.read(p) else {
            continue;
        };
        let Ok(v) = t.parse::<toml::Table>() else {
            continue;
        };
        let Some(groups) = v.get("groups").and_then(|g| g.as_table()) else {
            continue;
        };
        for (name, g) in groups {
            let mode = g
                .get("egress")
                .and_then(|e| e.get("mode"))
                .and_then(|m| m.as_str())
                .unwrap_or("block");
            out.push((p.clone(), name.clone(), mode.to_owned()));
        }
    }
    out
}

/// Credential files that give a long-lived identity, in runner users' homes.
pub fn credential_files(facts: &Facts<'_>) -> Vec<Evidence> {
    let mut out = Vec::new();
    for (user, home) in facts.runner_homes() {
        let h = |rel: &str| join(&home, rel);
        let host = facts.host;
        if let Some(t) = host.read(&h(".aws/credentials")) {
            let long = t.lines().any(|l| {
                let l = l.trim();
                l.starts_with("aws_access_key_id") && l.contains("AKIA")
            });
            let detail = if long {
                "long-lived IAM user key (AKIA…)"
            } else {
                "AWS credentials file"
            };
            out.push(Evidence::new(
                h(".aws/credentials"),
                format!("{user}: {detail}"),
            ));
        }
        if let Some(t) = host.read(&h(".kube/config")) {
            if t.contains("token:") || t.contains("client-key-data") || t.contains("password:") {
                out.push(Evidence::new(
                    h(".kube/config"),
                    format!("{user}: static cluster credentials"),
                ));
            }
        }
        if let Some(t) = host.read(&h(".docker/config.json")) {
            if t.contains("\"auth\"") || t.contains("identitytoken") {
                out.push(Evidence::new(
                    h(".docker/config.json"),
                    format!("{user}: registry auth stored"),
                ));
            }
        }
        if host.exists(&h(".git-credentials")) {
            out.push(Evidence::new(
                h(".git-credentials"),
                format!("{user}: git credentials stored"),
            ));
        }
        for f in [
            ".config/gcloud/application_default_credentials.json",
            ".config/gcloud/credentials.db",
            ".azure/accessTokens.json",
            ".azure/msal_token_cache.json",
        ] {
            if host.exists(&h(f)) {
                out.push(Evidence::new(
                    h(f),
                    format!("{user}: cloud CLI credentials"),
                ));
            }
        }
    }
    out
}

/// auditd's rules (`/etc/audit/rules.d/*.rules`, `/etc/audit/audit.rules`): (file, line).
pub fn audit_rules(facts: &Facts<'_>) -> Vec<(String, String)> {
    let mut files: Vec<String> = facts
        .host
        .list("/etc/audit/rules.d")
        .into_iter()
        .filter(|n| n.ends_with(".rules"))
        .map(|n| join("/etc/audit/rules.d", &n))
        .collect();
    files.push("/etc/audit/audit.rules".to_owned());
    let mut out = Vec::new();
    for f in files {
        let Some(t) = facts.host.read(&f) else {
            continue;
        };
        for l in t.lines().map(str::trim) {
            if l.starts_with("-w ") || l.starts_with("-a ") {
                out.push((f.clone(), l.to_owned()));
            }
        }
    }
    out
}

/// auditd's unit, if enabled (or active on the live host).
pub fn auditd_enabled(facts: &Facts<'_>) -> Option<Evidence> {
    if let Some(u) = facts
        .units
        .iter()
        .find(|u| u.name == "auditd.service" && u.enabled)
    {
        return Some(Evidence::new(&u.path, "auditd.service enabled"));
    }
    facts
        .host
        .command("systemctl", &["is-active", "auditd"])
        .filter(|s| s.trim() == "active")
        .map(|_| Evidence::new("command: systemctl is-active auditd", "active"))
}

/// An enabled unit whose name starts with one of `prefixes`.
pub fn enabled_unit(facts: &Facts<'_>, prefixes: &[&str]) -> Option<Evidence> {
    facts
        .units
        .iter()
        .find(|u| u.enabled && prefixes.iter().any(|p| u.name.starts_with(p)))
        .map(|u| Evidence::new(&u.path, format!("{} enabled", u.name)))
}

/// The first existing path of `paths`.
pub fn first_existing(facts: &Facts<'_>, paths: &[&str]) -> Option<Evidence> {
    paths
        .iter()
        .find(|p| facts.host.exists(p))
        .map(|p| Evidence::new(*p, "present"))
}
