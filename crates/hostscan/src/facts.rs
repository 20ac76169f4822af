//! Everything the checks look at, gathered once per scan: accounts, systemd units, runner
//! installations, routes, firewall rules, and airlock's own footprint.

use std::collections::BTreeSet;

use crate::host::{join, Host};
use crate::net::{self, Firewall, Route};
use crate::report::Evidence;

/// A local account from `/etc/passwd`, with its groups from `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric id.
    pub uid: u32,
    /// Home directory.
    pub home: String,
    /// Primary and supplementary group names.
    pub groups: Vec<String>,
}

/// A systemd unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// File name (`actions.runner.org.name.service`).
    pub name: String,
    /// Host path of the file.
    pub path: String,
    /// `User=`, if set.
    pub user: Option<String>,
    /// `WorkingDirectory=`, if set.
    pub working_dir: Option<String>,
    /// `ExecStart=` lines.
    pub exec_start: Vec<String>,
    /// Linked from a `*.wants` directory under `/etc/systemd/system`.
    pub enabled: bool,
}

/// What the runner's `.runner` file says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunnerConfig {
    /// `agentName`.
    pub name: Option<String>,
    /// `isEphemeral` (configured with `--ephemeral`).
    pub ephemeral: bool,
    /// `disableUpdate` (configured with `--disableupdate`).
    pub disable_update: bool,
    /// `workFolder` (default `_work`).
    pub work_folder: Option<String>,
}

/// One actions/runner installation found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInstall {
    /// Host path of the runner directory.
    pub dir: String,
    /// Its systemd unit, if one points at it.
    pub unit: Option<Unit>,
    /// Its `.runner` file, parsed; `None` if absent.
    pub config: Option<RunnerConfig>,
    /// The `.runner` file exists but is not the expected JSON.
    pub config_error: Option<String>,
    /// Entries of the work folder other than the runner's own (`_temp`, `_actions`, …):
    /// checkouts left behind by earlier jobs.
    pub leftover_work: Vec<String>,
    /// `.credentials` / `.credentials_rsaparams` present: a long-lived registration.
    pub stored_credentials: Vec<String>,
    /// The account the runner runs as (unit `User=`, default root; without a unit the home
    /// directory it lives in).
    pub user: Option<String>,
    /// `.env` entries that look like secrets (names only).
    pub env_secrets: Vec<String>,
}

impl RunnerInstall {
    /// Ephemeral: `.runner` says so, or the unit starts it with `--ephemeral`/`--jitconfig`.
    pub fn ephemeral(&self) -> bool {
        self.config.as_ref().is_some_and(|c| c.ephemeral)
            || self.unit.as_ref().is_some_and(|u| {
                u.exec_start
                    .iter()
                    .any(|e| e.contains("--ephemeral") || e.contains("--jitconfig"))
            })
    }

    /// Host path of the `.runner` file.
    pub fn config_path(&self) -> String {
        join(&self.dir, ".runner")
    }
}

/// Airlock's own footprint on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Airlock {
    /// Evidence that airlock is installed.
    pub installed: Vec<Evidence>,
    /// An enabled `airlock*.service` unit (the runner manager, `airlock serve`).
    pub serve_unit: Option<Unit>,
    /// What airlock's audit log shows, if it has records.
    pub audit: Option<AuditSummary>,
    /// Policy files under `/etc/airlock`.
    pub policies: Vec<String>,
}

/// What `scan host` reads from airlock's audit log: counts, and the newest drill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSummary {
    /// The log's directory.
    pub dir: String,
    /// Records read.
    pub records: usize,
    /// Network records (`net.*`).
    pub net_records: usize,
    /// Jobs that ended (`job.ended`): the detectors ran on each.
    pub jobs_ended: usize,
    /// Alerts the detectors raised (`alert` records).
    pub alerts: usize,
    /// Jobs that recorded their policy's SHA-256 (`job.requested` with `policy_sha256`).
    pub policy_digests: usize,
    /// `config.changed` records.
    pub config_changes: usize,
    /// The newest `drill.completed`: when (ms since the epoch) and what it found.
    pub last_drill: Option<(u128, airlock_audit::payload::DrillCompleted)>,
    /// The newest `image.scanned` per image digest (at most 50 images): when and what.
    pub image_scans: Vec<(u128, airlock_audit::payload::ImageScanned)>,
    /// Every segment was read (false when the byte budget ran out first).
    pub complete: bool,
}

/// Bytes of audit log `scan host` reads at most (newest segments first).
const AUDIT_BUDGET: u64 = 2 << 30;

impl AuditSummary {
    fn add(&mut self, line: &str) {
        use airlock_audit::{payload::DrillCompleted, Kind, Record};
        if line.trim().is_empty() {
            return;
        }
        self.records += 1;
        // Most records are network and process records: only the few kinds read here are
        // parsed whole.
        if line.contains("\"kind\":\"net.") {
            self.net_records += 1;
            return;
        }
        let wanted = [
            Kind::JobEnded,
            Kind::Alert,
            Kind::JobRequested,
            Kind::ConfigChanged,
            Kind::DrillCompleted,
            Kind::ImageScanned,
        ];
        if !wanted
            .iter()
            .any(|k| line.contains(&format!("\"kind\":\"{}\"", k.as_str())))
        {
            return;
        }
        let Ok(r) = serde_json::from_str::<Record>(line) else {
            return;
        };
        match r.known_kind() {
            Some(Kind::JobEnded) => self.jobs_ended += 1,
            Some(Kind::Alert) => self.alerts += 1,
            Some(Kind::ConfigChanged) => self.config_changes += 1,
            Some(Kind::JobRequested)
                if r.data["policy_sha256"]
                    .as_str()
                    .is_some_and(|s| s.len() == 64) =>
            {
                self.policy_digests += 1;
            }
            Some(Kind::ImageScanned) => {
                if let Some(s) = r.payload::<airlock_audit::payload::ImageScanned>() {
                    let at = self
                        .image_scans
                        .iter()
                        .position(|(_, x)| x.digest == s.digest);
                    match at {
                        Some(i) if self.image_scans[i].0 <= r.time_ms => {
                            self.image_scans[i] = (r.time_ms, s)
                        }
                        Some(_) => {}
                        None if self.image_scans.len() < 50 => {
                            self.image_scans.push((r.time_ms, s))
                        }
                        None => {}
                    }
                }
            }
            Some(Kind::DrillCompleted) => {
                if let Some(d) = r.payload::<DrillCompleted>() {
                    if self
                        .last_drill
                        .as_ref()
                        .is_none_or(|(t, _)| r.time_ms >= *t)
                    {
                        self.last_drill = Some((r.time_ms, d));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Everything gathered.
pub struct Facts<'h> {
    /// The host, for checks that read more.
    pub host: &'h Host,
    /// Accounts.
    pub users: Vec<User>,
    /// Systemd units (system directories).
    pub units: Vec<Unit>,
    /// Runner installations.
    pub runners: Vec<RunnerInstall>,
    /// IPv4 routes; `None` if `/proc/net/route` could not be read.
    pub routes: Option<Vec<Route>>,
    /// IPv6 routes; `None` if `/proc/net/ipv6_route` could not be read.
    pub routes6: Option<Vec<Route>>,
    /// Firewall chains.
    pub firewall: Firewall,
    /// Airlock.
    pub airlock: Airlock,
    /// The scan's notion of now (seconds since the epoch), for attestation ages.
    pub now: std::time::SystemTime,
}

/// Unit directories, most specific first.
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// Where runners are commonly installed, besides the `WorkingDirectory=` of their units.
/// Each is searched two levels deep for a directory holding `.runner` or `config.sh`.
const RUNNER_BASES: [&str; 5] = ["/home", "/opt", "/srv", "/root", "/var/lib"];

/// Work-folder entries the runner itself keeps; anything else is a job's leftover.
const RUNNER_OWN: [&str; 6] = [
    "_temp",
    "_actions",
    "_tool",
    "_PipelineMapping",
    "_update",
    "_diag",
];

impl<'h> Facts<'h> {
    /// Gathers facts from `host`.
    pub fn gather(host: &'h Host, now: std::time::SystemTime) -> Self {
        let users = read_users(host);
        let units = read_units(host);
        let runners = find_runners(host, &units, &users);
        let routes = host
            .read("/proc/net/route")
            .map(|t| net::parse_proc_route(&t));
        let routes6 = host
            .read("/proc/net/ipv6_route")
            .map(|t| net::parse_proc_ipv6_route(&t));
        let firewall = read_firewall(host);
        let airlock = read_airlock(host, &units);
        Self {
            host,
            users,
            units,
            runners,
            routes,
            routes6,
            firewall,
            airlock,
            now,
        }
    }

    /// The account named `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Distinct accounts runners run as, with their runner directories.
    pub fn runner_users(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.runners {
            let Some(u) = &r.user else { continue };
            match out.iter_mut().find(|(n, _)| n == u) {
                Some((_, dirs)) => dirs.push(r.dir.clone()),
                None => out.push((u.clone(), vec![r.dir.clone()])),
            }
        }
        out
    }

    /// Whether jobs on this host are run by airlock rather than by a runner service on the
    /// host: an enabled airlock unit and no `actions.runner.*` installation.
    pub fn airlock_only(&self) -> bool {
        self.airlock.serve_unit.is_some() && self.runners.is_empty()
    }

    /// Home directories of runner accounts (deduplicated).
    pub fn runner_homes(&self) -> Vec<(String, String)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (u, _) in self.runner_users() {
            if let Some(acct) = self.user(&u) {
                if seen.insert(acct.home.clone()) {
                    out.push((u.clone(), acct.home.clone()));
                }
            }
        }
        out
    }
}

fn read_users(host: &Host) -> Vec<User> {
    let mut users = Vec::new();
    let groups_text = host.read("/etc/group").unwrap_or_default();
    // name:x:gid:member,member
    let groups: Vec<(String, u32, Vec<String>)> = groups_text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then(|| {
                (
                    f[0].to_owned(),
                    f[2].parse().unwrap_or(u32::MAX),
                    f[3].split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            })
        })
        .collect();
    for l in host.read("/etc/passwd").unwrap_or_default().lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
            continue;
        };
        let name = f[0].to_owned();
        let mut gs: Vec<String> = groups
            .iter()
            .filter(|(_, id, members)| *id == gid || members.contains(&name))
            .map(|(g, _, _)| g.clone())
            .collect();
        gs.dedup();
        users.push(User {
            name,
            uid,
            home: f[5].to_owned(),
            groups: gs,
        });
    }
    users
}

fn parse_unit(host: &Host, dir: &str, name: &str, enabled: &BTreeSet<String>) -> Option<Unit> {
    let path = join(dir, name);
    let text = host.read(&path)?;
    let mut u = Unit {
        name: name.to_owned(),
        path,
        user: None,
        working_dir: None,
        exec_start: Vec::new(),
        enabled: enabled.contains(name),
    };
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().to_owned();
        match k.trim() {
            "User" => u.user = Some(v),
            "WorkingDirectory" => u.working_dir = Some(v.trim_start_matches('-').to_owned()),
            "ExecStart" => u.exec_start.push(v),
            _ => {}
        }
    }
    Some(u)
}

fn read_units(host: &Host) -> Vec<Unit> {
    let mut enabled = BTreeSet::new();
    for d in host.list("/etc/systemd/system") {
        if d.ends_with(".wants") {
            for n in host.list(&join("/etc/systemd/system", &d)) {
                enabled.insert(n);
            }
        }
    }
    let mut units: Vec<Unit> = Vec::new();
    for dir in UNIT_DIRS {
        for name in host.list(dir) {
            if !name.ends_with(".service") || units.iter().any(|u| u.name == name) {
                continue;
            }
            let p = join(dir, &name);
            if host.meta(&p).is_some_and(|m| m.is_symlink || m.is_dir) {
                continue;
            }
            if let Some(u) = parse_unit(host, dir, &name, &enabled) {
                units.push(u);
            }
        }
    }
    units
}

fn parse_runner_config(text: &str) -> Result<RunnerConfig, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    // The runner writes camelCase keys; older versions differed in case, so match loosely.
    let get = |k: &str| {
        obj.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
    };
    let flag = |k: &str| {
        get(k).is_some_and(|v| {
            v.as_bool().unwrap_or(false)
                || v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
        })
    };
    Ok(RunnerConfig {
        name: get("agentName").and_then(|v| v.as_str()).map(str::to_owned),
        ephemeral: flag("isEphemeral") || flag("ephemeral"),
        disable_update: flag("disableUpdate"),
        work_folder: get("workFolder")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    })
}

fn is_runner_dir(host: &Host, dir: &str) -> bool {
    host.exists(&join(dir, ".runner"))
        || (host.exists(&join(dir, "config.sh")) && host.exists(&join(dir, "run.sh")))
}

fn find_runners(host: &Host, units: &[Unit], users: &[User]) -> Vec<RunnerInstall> {
    let mut dirs: Vec<(String, Option<Unit>)> = Vec::new();
    for u in units
        .iter()
        .filter(|u| u.name.starts_with("actions.runner."))
    {
        let dir = u.working_dir.clone().or_else(|| {
            u.exec_start
                .first()
                .and_then(|e| e.split_whitespace().next())
                .and_then(|p| p.rsplit_once('/').map(|(d, _)| d.to_owned()))
        });
        match dir {
            Some(d) => dirs.push((d, Some(u.clone()))),
            None => dirs.push((
                format!("(unknown directory of {})", u.name),
                Some(u.clone()),
            )),
        }
    }
    for base in RUNNER_BASES {
        for a in host.list(base) {
            let d1 = join(base, &a);
            if !host.is_dir(&d1) {
                continue;
            }
            let mut cands = vec![d1.clone()];
            for b in host.list(&d1) {
                let d2 = join(&d1, &b);
                if host.is_dir(&d2) && !b.starts_with('.') {
                    cands.push(d2);
                }
            }
            for c in cands {
                if is_runner_dir(host, &c)
                    && !dirs.iter().any(|(d, _)| d.trim_end_matches('/') == c)
                {
                    dirs.push((c, None));
                }
            }
        }
    }
    dirs.into_iter()
        .map(|(dir, unit)| {
            let text = host.read(&join(&dir, ".runner"));
            let (config, config_error) = match text.as_deref().map(parse_runner_config) {
                Some(Ok(c)) => (Some(c), None),
                Some(Err(e)) => (None, Some(e)),
                None => (None, None),
            };
            let wf = config
                .as_ref()
                .and_then(|c| c.work_folder.clone())
                .unwrap_or_else(|| "_work".to_owned());
            let work = if wf.starts_with('/') {
                wf
            } else {
                join(&dir, &wf)
            };
            let leftover_work = host
                .list(&work)
                .into_iter()
                .filter(|n| !RUNNER_OWN.contains(&n.as_str()))
                .map(|n| join(&work, &n))
                .collect();
            let stored_credentials = [".credentials", ".credentials_rsaparams"]
                .iter()
                .map(|f| join(&dir, f))
                .filter(|p| host.exists(p))
                .collect();
            let user = match &unit {
                Some(u) => Some(u.user.clone().unwrap_or_else(|| "root".to_owned())),
                None => users
                    .iter()
                    .filter(|u| {
                        u.home.len() > 1
                            && dir.starts_with(&format!("{}/", u.home.trim_end_matches('/')))
                    })
                    .max_by_key(|u| u.home.len())
                    .map(|u| u.name.clone())
                    .or_else(|| {
                        let uid = host.meta(&dir)?.uid;
                        users.iter().find(|u| u.uid == uid).map(|u| u.name.clone())
                    }),
            };
            let env_secrets = host
                .read(&join(&dir, ".env"))
                .map(|t| secret_names(&t))
                .unwrap_or_default();
            RunnerInstall {
                dir,
                unit,
                config,
                config_error,
                leftover_work,
                stored_credentials,
                user,
                env_secrets,
            }
        })
        .collect()
}

/// Names of `KEY=value` lines whose key looks like a secret and whose value is not empty.
pub fn secret_names(text: &str) -> Vec<String> {
    const MARKERS: [&str; 7] = [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "PRIVATE_KEY",
        "ACCESS_KEY",
    ];
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("export ");
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            let up = k.to_uppercase();
            (!k.starts_with('#')
                && !v.trim().trim_matches('"').is_empty()
                && MARKERS.iter().any(|m| up.contains(m)))
            .then(|| k.to_owned())
        })
        .collect()
}

fn read_firewall(host: &Host) -> Firewall {
    let mut fw = Firewall::default();
    let live = host
        .command("nft", &["list", "ruleset"])
        .map(|t| ("command: nft list ruleset".to_owned(), t));
    let nft = live.or_else(|| {
        ["/etc/nftables.conf", "/etc/sysconfig/nftables.conf"]
            .iter()
            .find_map(|p| host.read(p).map(|t| ((*p).to_owned(), t)))
    });
    if let Some((src, text)) = nft {
        let chains = net::parse_nft(&text, &src);
        fw.sources.push(Evidence::new(
            &src,
            format!("nftables: {} chains", chains.len()),
        ));
        fw.chains.extend(chains);
    }
    let sets: [(&str, &'static str, [&str; 3]); 2] = [
        (
            "iptables-save",
            "iptables",
            [
                "/etc/iptables/rules.v4",
                "/etc/sysconfig/iptables",
                "/etc/iptables.rules",
            ],
        ),
        (
            "ip6tables-save",
            "ip6tables",
            [
                "/etc/iptables/rules.v6",
                "/etc/sysconfig/ip6tables",
                "/etc/ip6tables.rules",
            ],
        ),
    ];
    for (cmd, backend, files) in sets {
        let found = host
            .command(cmd, &[])
            .filter(|t| t.contains('*'))
            .map(|t| (format!("command: {cmd}"), t))
            .or_else(|| {
                files
                    .iter()
                    .find_map(|p| host.read(p).map(|t| ((*p).to_owned(), t)))
            });
        if let Some((src, text)) = found {
            let chains = net::parse_iptables(&text, &src, backend);
            fw.sources.push(Evidence::new(
                &src,
                format!("{backend}: {} chains", chains.len()),
            ));
            fw.chains.extend(chains);
        }
    }
    let ufw_on = host.read("/etc/ufw/ufw.conf").is_some_and(|t| {
        t.lines()
            .any(|l| l.trim().eq_ignore_ascii_case("ENABLED=yes"))
    });
    if ufw_on {
        if let Some(t) = host.read("/etc/default/ufw") {
            let chains = net::parse_ufw_defaults(&t, "/etc/default/ufw");
            fw.sources.push(Evidence::new(
                "/etc/default/ufw",
                "ufw enabled; default policies",
            ));
            fw.chains.extend(chains);
        }
        if let Some(t) = host.read("/etc/ufw/user.rules") {
            fw.chains
                .extend(net::parse_iptables(&t, "/etc/ufw/user.rules", "iptables"));
        }
    }
    fw
}

/// Where airlock keeps its audit log by default.
pub const AUDIT_LOG: &str = "/var/lib/airlock/audit/audit.jsonl";
/// The audit log's directory (the current segment and the rotated ones).
pub const AUDIT_DIR: &str = "/var/lib/airlock/audit";

/// Reads airlock's audit log, every segment, newest first, within [`AUDIT_BUDGET`] bytes.
fn read_audit(host: &Host) -> Option<AuditSummary> {
    let mut segs: Vec<String> = host
        .list(AUDIT_DIR)
        .into_iter()
        .filter(|n| n.starts_with("audit.jsonl."))
        .collect();
    segs.sort();
    segs.push("audit.jsonl".to_owned());
    let mut sum = AuditSummary {
        dir: AUDIT_DIR.to_owned(),
        complete: true,
        ..AuditSummary::default()
    };
    let mut budget = AUDIT_BUDGET;
    for name in segs.iter().rev() {
        if budget == 0 {
            sum.complete = false;
            break;
        }
        host.for_each_line(&join(AUDIT_DIR, name), &mut budget, |l| sum.add(l));
    }
    (sum.records > 0).then_some(sum)
}

fn read_airlock(host: &Host, units: &[Unit]) -> Airlock {
    let mut a = Airlock::default();
    for p in [
        "/usr/local/bin/airlock",
        "/usr/bin/airlock",
        "/var/lib/airlock",
    ] {
        if host.exists(p) {
            a.installed.push(Evidence::new(p, "present"));
        }
    }
    a.serve_unit = units
        .iter()
        .find(|u| {
            u.name.starts_with("airlock")
                && u.enabled
                && u.exec_start.iter().any(|e| e.contains("serve"))
        })
        .cloned();
    if let Some(u) = &a.serve_unit {
        a.installed
            .push(Evidence::new(&u.path, "enabled airlock serve unit"));
    }
    a.audit = read_audit(host);
    a.policies = host
        .list("/etc/airlock")
        .into_iter()
        // attestations.toml is the operators' record for `scan host`, not a policy.
        .filter(|n| n.ends_with(".toml") && n != "attestations.toml")
        .map(|n| join("/etc/airlock", &n))
        .collect();
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_config_flags() {
        let c = parse_runner_config(r#"{"agentId":7,"agentName":"r1","isEphemeral":true,"disableUpdate":true,"workFolder":"_work"}"#)
            .expect("parses");
        assert!(c.ephemeral && c.disable_update);
        let c = parse_runner_config(r#"{"agentName":"r1"}"#).expect("parses");
        assert!(!c.ephemeral && !c.disable_update);
        assert!(parse_runner_config("[1]").is_err());
    }

    #[test]
    fn env_secret_names() {
        let t = "LANG=C\nNPM_TOKEN=abc\nexport AWS_SECRET_ACCESS_KEY=\"x\"\nEMPTY_TOKEN=\n";
        assert_eq!(secret_names(t), vec!["NPM_TOKEN", "AWS_SECRET_ACCESS_KEY"]);
    }
}
