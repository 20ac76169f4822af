//! `scan host` against fixture trees, `scan org` against a local fake of GitHub's API, the
//! output formats (SARIF validated against the 2.1.0 schema), and a run on the live machine.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use airlock_hostscan::org::Token;
use airlock_hostscan::render::{render, sarif, Format};
use airlock_hostscan::{
    run_host, scan_host, scan_org, Host, HostArgs, HostScanError, Report, Status,
};
use clap::Parser;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The scan's "now" for fixtures: attestation ages stay stable.
fn now() -> SystemTime {
    humantime::parse_rfc3339("2026-11-26T00:00:00Z").unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ty = e.file_type().unwrap();
        let dest = to.join(e.file_name());
        if ty.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &dest).unwrap();
        } else if ty.is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of fixture `name` in a temporary directory, with the modes of `<name>.modes`
/// applied (git keeps only the executable bit).
fn fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join(name), tmp.path());
    if let Ok(modes) = fs::read_to_string(fixtures().join(format!("{name}.modes"))) {
        for l in modes.lines() {
            let (p, m) = l.split_once(' ').unwrap();
            let mode = u32::from_str_radix(m.trim(), 8).unwrap();
            fs::set_permissions(tmp.path().join(p), fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    tmp
}

fn scan(name: &str) -> (tempfile::TempDir, Report) {
    let dir = fixture(name);
    let host = Host::new(dir.path()).unwrap();
    let r = scan_host(&host, now());
    (dir, r)
}

fn rendered(r: &Report, root: &Path, format: Format) -> String {
    let mut out = Vec::new();
    render(r, format, false, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .replace(&root.display().to_string(), "<root>")
}

fn statuses(r: &Report) -> BTreeMap<&'static str, Status> {
    r.items.iter().map(|i| (i.id, i.status)).collect()
}

/// Items a host cannot decide (GitHub-only): unknown on every fixture.
const ORG_ONLY: [&str; 3] = [
    "runner-groups-public-private",
    "repository-access-restrictions",
    "unauthorized-registration-monitoring",
];

#[test]
fn hardened_host_passes_every_host_item() {
    let (dir, r) = scan("hardened");
    for (id, s) in statuses(&r) {
        let want = if ORG_ONLY.contains(&id) || id == "decommission-runners" {
            Status::Unknown
        } else {
            Status::Pass
        };
        assert_eq!(s, want, "{id}: {:#?}", r.items.iter().find(|i| i.id == id));
    }
    assert_eq!(r.exit_code(), 0);
    insta::assert_snapshot!("hardened_plain", rendered(&r, dir.path(), Format::Plain));
}

#[test]
fn risky_host_fails_every_host_item() {
    let (dir, r) = scan("risky");
    for (id, s) in statuses(&r) {
        let want = if ORG_ONLY.contains(&id) {
            Status::Unknown
        } else {
            Status::Fail
        };
        assert_eq!(s, want, "{id}: {:#?}", r.items.iter().find(|i| i.id == id));
    }
    assert_eq!(r.exit_code(), 1);
    insta::assert_snapshot!("risky_plain", rendered(&r, dir.path(), Format::Plain));
}

#[test]
fn airlock_managed_host() {
    // A host where airlock serves jobs, with a policy that ships alerts, a job run and a
    // recent drill in its audit log: every item a host can decide passes, from airlock's
    // own evidence where airlock provides it, except the runner's version (the image's
    // business).
    let (dir, r) = scan("airlock");
    let s = statuses(&r);
    for (id, st) in &s {
        let want = match *id {
            _ if ORG_ONLY.contains(id) || *id == "decommission-runners" => Status::Unknown,
            "runner-auto-update" => Status::Unknown,
            _ => Status::Pass,
        };
        assert_eq!(
            *st,
            want,
            "{id}: {:#?}",
            r.items.iter().find(|i| i.id == *id)
        );
    }
    let evidence = |id: &str| -> String {
        let i = r.items.iter().find(|i| i.id == id).expect("item");
        format!("{} {:?}", i.reason, i.evidence)
    };
    assert!(evidence("anomaly-detection").contains("1 jobs read by airlock's detectors, 1 alerts"));
    assert!(evidence("access-log-review").contains("webhook to siem.example.test"));
    assert!(evidence("config-change-alerts").contains("1 jobs recorded their policy's SHA-256"));
    assert!(evidence("penetration-testing").contains("airlock drill passed 3 days ago"));
    assert!(evidence("penetration-testing").contains("48 attacks, 0 got through"));
    assert!(
        evidence("image-vulnerability-scanning").contains("image ghcr.io/acme/runner:2 scanned at")
    );
    insta::assert_snapshot!("airlock_json", rendered(&r, dir.path(), Format::Json));
}

/// A drill that let something through, or that is old, does not count; neither does a
/// webhook on a host where airlock runs nothing.
#[test]
fn airlock_evidence_must_be_fresh_and_good() {
    let dir = fixture("airlock");
    let log = dir.path().join("var/lib/airlock/audit/audit.jsonl");
    let text = fs::read_to_string(&log).unwrap();
    let bad = text.replace(
        "\"got_through\":0,\"failed\":0,\"passed\":true",
        "\"got_through\":2,\"failed\":2,\"passed\":false",
    );
    fs::write(&log, &bad).unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), now());
    assert_eq!(statuses(&r)["penetration-testing"], Status::Fail);

    let old = humantime::parse_rfc3339("2027-01-20T00:00:00Z").unwrap();
    fs::write(&log, &text).unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), old);
    let i = r
        .items
        .iter()
        .find(|i| i.id == "penetration-testing")
        .unwrap();
    assert_eq!(i.status, Status::Fail, "{}", i.reason);
    assert!(i.reason.contains("more than 30"), "{}", i.reason);

    // No job has ended: the detectors have not been seen at work, and nothing is shipped
    // by a manager that does not run (no serve unit in this copy).
    fs::write(
        &log,
        text.lines()
            .filter(|l| l.contains("drill.completed"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    fs::remove_file(dir.path().join("etc/systemd/system/airlock.service")).unwrap();
    fs::remove_file(
        dir.path()
            .join("etc/systemd/system/multi-user.target.wants/airlock.service"),
    )
    .unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), now());
    let s = statuses(&r);
    assert_eq!(s["anomaly-detection"], Status::Fail);
    assert_eq!(s["access-log-review"], Status::Fail);
    assert_eq!(s["config-change-alerts"], Status::Fail);
}

#[test]
fn airlock_audit_mode_is_not_egress_filtering() {
    let dir = fixture("airlock");
    let p = dir.path().join("etc/airlock/policy.toml");
    let t = fs::read_to_string(&p)
        .unwrap()
        .replacen("mode = \"block\"", "mode = \"audit\"", 1);
    fs::write(&p, t).unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), now());
    let s = statuses(&r);
    assert_eq!(s["egress-filtering"], Status::Fail);
    assert_eq!(s["deny-by-default-firewall"], Status::Fail);
}

#[test]
fn empty_tree_is_unknown_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), now());
    let s = statuses(&r);
    assert_eq!(s["ephemeral-runners"], Status::Unknown);
    assert_eq!(s["metadata-endpoint"], Status::Unknown);
    assert_eq!(s["deny-by-default-firewall"], Status::Unknown);
    assert_eq!(r.items.len(), 26);
}

#[test]
fn symlinks_out_of_the_root_are_not_followed() {
    let dir = fixture("hardened");
    // A fixture whose passwd points at the machine's own file must not read it.
    fs::remove_file(dir.path().join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("etc/passwd")).unwrap();
    let host = Host::new(dir.path()).unwrap();
    assert_eq!(host.read("/etc/passwd"), None);
    assert!(host.read("/etc/group").is_some());
}

#[test]
fn metadata_reachable_without_a_block_rule() {
    let dir = fixture("hardened");
    // Replace the firewall with one whose output policy accepts.
    fs::write(
        dir.path().join("etc/nftables.conf"),
        "table inet filter {\n chain output {\n  type filter hook output priority 0; policy accept;\n }\n}\n",
    )
    .unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), now());
    let s = statuses(&r);
    assert_eq!(s["metadata-endpoint"], Status::Fail);
    assert_eq!(s["network-isolation"], Status::Fail);
    assert_eq!(s["deny-by-default-firewall"], Status::Fail);
    assert_eq!(s["egress-filtering"], Status::Fail);
    // A single drop rule for the metadata address fixes that item only.
    fs::write(
        dir.path().join("etc/nftables.conf"),
        "table inet filter {\n chain output {\n  type filter hook output priority 0; policy accept;\n  ip daddr 169.254.169.254 drop\n }\n}\n",
    )
    .unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), now());
    let s = statuses(&r);
    assert_eq!(
        s["metadata-endpoint"],
        Status::Fail,
        "IPv6 default route: fd00:ec2::254 is still open"
    );
    fs::write(
        dir.path().join("etc/nftables.conf"),
        "table inet filter {\n chain output {\n  type filter hook output priority 0; policy accept;\n  ip daddr 169.254.169.254 drop\n  ip6 daddr fd00:ec2::254 drop\n }\n}\n",
    )
    .unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), now());
    let s = statuses(&r);
    assert_eq!(s["metadata-endpoint"], Status::Pass);
    assert_eq!(s["network-isolation"], Status::Fail);
}

#[test]
fn iptables_rules_are_read_too() {
    let dir = fixture("hardened");
    fs::remove_file(dir.path().join("etc/nftables.conf")).unwrap();
    fs::create_dir_all(dir.path().join("etc/iptables")).unwrap();
    fs::write(
        dir.path().join("etc/iptables/rules.v4"),
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n-A OUTPUT -o lo -j ACCEPT\n-A OUTPUT -d 140.82.112.0/20 -p tcp -m tcp --dport 443 -j ACCEPT\n-A OUTPUT -j LOG --log-prefix \"out-drop \"\nCOMMIT\n",
    )
    .unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), now());
    assert_eq!(
        statuses(&r)["metadata-endpoint"],
        Status::Fail,
        "IPv4 rules say nothing about IPv6"
    );
    fs::write(
        dir.path().join("etc/iptables/rules.v6"),
        "*filter\n:OUTPUT DROP [0:0]\n-A OUTPUT -o lo -j ACCEPT\nCOMMIT\n",
    )
    .unwrap();
    let r = scan_host(&Host::new(dir.path()).unwrap(), now());
    let s = statuses(&r);
    for id in [
        "metadata-endpoint",
        "network-isolation",
        "deny-by-default-firewall",
        "egress-filtering",
        "network-connection-logging",
    ] {
        assert_eq!(s[id], Status::Pass, "{id}");
    }
}

#[test]
fn stale_attestation_fails_and_fresh_passes() {
    let dir = fixture("hardened");
    let r = scan_host(
        &Host::new(dir.path()).unwrap(),
        humantime::parse_rfc3339("2027-04-01T00:00:00Z").unwrap(),
    );
    let s = statuses(&r);
    assert_eq!(
        s["penetration-testing"],
        Status::Fail,
        "2026-03-15 is more than a year before 2027-04-01"
    );
    assert_eq!(s["incident-response-plan"], Status::Pass);
}

fn validate_sarif(v: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sarif-schema-2.1.0.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "SARIF invalid: {errors:#?}");
}

#[test]
fn sarif_validates_against_the_2_1_0_schema() {
    for name in ["hardened", "risky", "airlock"] {
        let (_dir, r) = scan(name);
        let v = sarif(&r);
        validate_sarif(&v);
        let results = v["runs"][0]["results"].as_array().unwrap();
        assert_eq!(
            results.len(),
            r.summary.fail + r.summary.unknown,
            "one result per failing or unknown item"
        );
        assert_eq!(
            v["runs"][0]["properties"]["summary"]["pass"],
            r.summary.pass
        );
        let rules = v["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
        for res in results {
            let idx = usize::try_from(res["ruleIndex"].as_u64().unwrap()).unwrap();
            assert_eq!(rules[idx]["id"], res["ruleId"]);
            let locs = res["locations"].as_array().unwrap();
            assert!(
                !locs.is_empty()
                    && locs
                        .iter()
                        .all(|l| l["physicalLocation"]["artifactLocation"]["uri"].is_string())
            );
        }
    }
    // The schema check can fail: a result without its required message is rejected.
    let (_dir, r) = scan("risky");
    let mut v = sarif(&r);
    v["runs"][0]["results"][0]
        .as_object_mut()
        .unwrap()
        .remove("message");
    let schema: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sarif-schema-2.1.0.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(!jsonschema::validator_for(&schema).unwrap().is_valid(&v));
}

#[test]
fn sarif_points_at_evidence_files() {
    let (_dir, r) = scan("risky");
    let v = sarif(&r);
    let res = v["runs"][0]["results"].as_array().unwrap();
    let eph = res
        .iter()
        .find(|r| r["ruleId"] == "ephemeral-runners")
        .unwrap();
    assert_eq!(eph["level"], "error");
    assert_eq!(eph["kind"], "fail");
    let uris: Vec<&str> = eph["locations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["physicalLocation"]["artifactLocation"]["uri"].as_str())
        .collect();
    assert!(uris.contains(&"opt/actions-runner/.runner"), "{uris:?}");
}

#[test]
fn markdown_table() {
    let (dir, r) = scan("risky");
    let md = rendered(&r, dir.path(), Format::Markdown);
    assert_eq!(
        md.lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
            .count(),
        26
    );
    insta::assert_snapshot!("risky_markdown", md);
}

#[derive(Parser)]
struct HostCli {
    #[command(flatten)]
    args: HostArgs,
}

#[test]
fn run_host_on_fixtures_sets_the_exit_code() {
    let dir = fixture("risky");
    let root = dir.path().display().to_string();
    let args = HostCli::try_parse_from(["scan", "--root", &root, "--json"])
        .unwrap()
        .args;
    assert_eq!(args.output.format(), Format::Json);
    let mut out = Vec::new();
    assert_eq!(run_host(&args, &mut out).unwrap(), 1);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["schema"], "airlock-hostscan/1");
    assert_eq!(v["items"].as_array().unwrap().len(), 26);
    assert!(v["summary"]["fail"].as_u64().unwrap() > 0);

    let dir = fixture("hardened");
    let root = dir.path().display().to_string();
    let args = HostCli::try_parse_from(["scan", "--root", &root, "--sarif"])
        .unwrap()
        .args;
    let mut out = Vec::new();
    assert_eq!(run_host(&args, &mut out).unwrap(), 0);
    validate_sarif(&serde_json::from_slice(&out).unwrap());

    assert!(HostCli::try_parse_from(["scan", "--json", "--sarif"]).is_err());
    let args = HostCli::try_parse_from(["scan", "--root", "/nonexistent/airlock-root"])
        .unwrap()
        .args;
    assert!(matches!(
        run_host(&args, &mut Vec::new()),
        Err(HostScanError::Root { .. })
    ));
}

#[test]
fn live_machine_scan_does_not_error() {
    let args = HostCli::try_parse_from(["scan", "--root", "/", "--format", "json"])
        .unwrap()
        .args;
    let mut out = Vec::new();
    let code = run_host(&args, &mut out).unwrap();
    assert!(code == 0 || code == 1);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 26);
    eprintln!("live summary: {}", v["summary"]);
}

// ---- scan org against a local fake of GitHub's REST API ----

mod fake {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;

    pub const TOKEN: &str = "test-token-0123";

    #[derive(Clone)]
    struct St {
        dir: PathBuf,
        base: String,
        /// Link to give on the first runners page (None: the server's own page 2).
        foreign_next: Option<String>,
        hits: Arc<Mutex<Vec<String>>>,
    }

    fn authed(h: &HeaderMap) -> bool {
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
            && h.get("x-github-api-version").is_some()
    }

    fn file(st: &St, name: &str) -> String {
        std::fs::read_to_string(st.dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn denied() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}"#,
        )
            .into_response()
    }

    async fn groups(
        State(st): State<St>,
        h: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        st.hits
            .lock()
            .unwrap()
            .push(format!("runner-groups per_page={:?}", q.get("per_page")));
        if !authed(&h) {
            return denied();
        }
        (
            [("content-type", "application/json")],
            file(&st, "runner-groups.json"),
        )
            .into_response()
    }

    async fn runners(
        State(st): State<St>,
        h: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        let page = q.get("page").cloned().unwrap_or_else(|| "1".to_owned());
        st.hits.lock().unwrap().push(format!("runners page={page}"));
        if !authed(&h) {
            return denied();
        }
        if page == "1" {
            let next = st.foreign_next.clone().unwrap_or_else(|| {
                format!(
                    "{}/organizations/42/actions/runners?per_page=100&page=2",
                    st.base
                )
            });
            let link = format!(
                r#"<{next}>; rel="next", <{}/organizations/42/actions/runners?per_page=100&page=2>; rel="last""#,
                st.base
            );
            (
                [
                    ("content-type", "application/json".to_owned()),
                    ("link", link),
                ],
                file(&st, "runners-1.json"),
            )
                .into_response()
        } else {
            (
                [("content-type", "application/json")],
                file(&st, "runners-2.json"),
            )
                .into_response()
        }
    }

    async fn workflow(State(st): State<St>, h: HeaderMap) -> Response {
        st.hits.lock().unwrap().push("workflow".to_owned());
        if !authed(&h) {
            return denied();
        }
        (
            [("content-type", "application/json")],
            file(&st, "workflow.json"),
        )
            .into_response()
    }

    /// Starts a fake API on 127.0.0.1:0 serving `tests/fixtures/github/<which>`; returns its
    /// base URL and the log of requests.
    pub fn start(which: &str, foreign_next: Option<String>) -> (String, Arc<Mutex<Vec<String>>>) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github")
            .join(which);
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let h2 = hits.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let base = format!("http://{}", listener.local_addr().unwrap());
                let st = St {
                    dir,
                    base: base.clone(),
                    foreign_next,
                    hits: h2,
                };
                let app = Router::new()
                    .route("/orgs/{org}/actions/runner-groups", get(groups))
                    .route("/orgs/{org}/actions/runners", get(runners))
                    .route("/organizations/{id}/actions/runners", get(runners))
                    .route("/orgs/{org}/actions/permissions/workflow", get(workflow))
                    .with_state(st);
                tx.send(base).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        (rx.recv().unwrap(), hits)
    }
}

#[test]
fn org_scan_good_org_passes() {
    let (base, hits) = fake::start("good", None);
    let r = scan_org("acme", &base, Token::new(fake::TOKEN)).unwrap();
    let s = statuses(&r);
    for id in [
        "ephemeral-runners",
        "minimal-iam",
        "runner-groups-public-private",
        "repository-access-restrictions",
        "decommission-runners",
        "unauthorized-registration-monitoring",
    ] {
        assert_eq!(
            s[id],
            Status::Pass,
            "{id}: {:#?}",
            r.items.iter().find(|i| i.id == id)
        );
    }
    assert_eq!(s["os-hardening"], Status::Unknown);
    assert_eq!(r.exit_code(), 0);
    let hits = hits.lock().unwrap().clone();
    assert_eq!(
        hits,
        vec![
            "runner-groups per_page=Some(\"100\")",
            "runners page=1",
            "runners page=2",
            "workflow"
        ],
        "pagination must follow Link to page 2"
    );
}

#[test]
fn org_scan_bad_org_fails_and_merges_into_host() {
    let (base, _) = fake::start("bad", None);
    let org = scan_org("acme", &base, Token::new(fake::TOKEN)).unwrap();
    let s = statuses(&org);
    for id in [
        "ephemeral-runners",
        "minimal-iam",
        "runner-groups-public-private",
        "repository-access-restrictions",
        "decommission-runners",
        "unauthorized-registration-monitoring",
    ] {
        assert_eq!(s[id], Status::Fail, "{id}");
    }
    // Runner 203 (page 2) is an airlock runner; 201 and 202 are not.
    let unauth = org
        .items
        .iter()
        .find(|i| i.id == "unauthorized-registration-monitoring")
        .unwrap();
    assert_eq!(unauth.evidence.len(), 2);
    insta::assert_snapshot!("bad_org_plain", {
        let mut out = Vec::new();
        render(&org, Format::Plain, false, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    });

    let (_dir, mut host) = scan("hardened");
    assert_eq!(
        statuses(&host)["repository-access-restrictions"],
        Status::Unknown
    );
    host.merge_org(&org);
    let m = statuses(&host);
    assert_eq!(m["repository-access-restrictions"], Status::Fail);
    assert_eq!(
        m["ephemeral-runners"],
        Status::Fail,
        "org evidence of a non-ephemeral runner wins over the host's pass"
    );
    assert_eq!(
        m["os-hardening"],
        Status::Pass,
        "items the org cannot decide keep the host's result"
    );
    assert!(host.summary.fail >= 6);
}

#[test]
fn org_scan_rejects_bad_token_and_foreign_links() {
    let (base, _) = fake::start("good", None);
    match scan_org("acme", &base, Token::new("wrong")) {
        Err(HostScanError::Status {
            status: 401,
            message,
            ..
        }) => assert_eq!(message, "Bad credentials"),
        other => panic!("expected 401, got {other:?}"),
    }
    let (base, hits) = fake::start("good", Some("http://127.0.0.2:9/steal?page=2".to_owned()));
    match scan_org("acme", &base, Token::new(fake::TOKEN)) {
        Err(HostScanError::ForeignLink { next, .. }) => assert!(next.contains("127.0.0.2")),
        other => panic!("expected ForeignLink, got {other:?}"),
    }
    assert!(!hits.lock().unwrap().iter().any(|h| h.contains("page=2")));
    assert!(matches!(
        scan_org("ac/me", &base, Token::new(fake::TOKEN)),
        Err(HostScanError::OrgName(_))
    ));
}

#[test]
fn run_org_reads_the_token_from_the_environment() {
    #[derive(Parser)]
    struct OrgCli {
        #[command(flatten)]
        args: airlock_hostscan::OrgArgs,
    }
    let (base, _) = fake::start("bad", None);
    let args = OrgCli::try_parse_from(["org", "acme", "--api-url", &base, "--markdown"])
        .unwrap()
        .args;
    // Only this test touches these variables.
    std::env::remove_var("AIRLOCK_GITHUB_TOKEN");
    std::env::set_var("GITHUB_TOKEN", fake::TOKEN);
    let mut out = Vec::new();
    let code = run_org(&args, &mut out).unwrap();
    // `scan host --org` merges the same answers into the host report.
    let dir = fixture("hardened");
    let root = dir.path().display().to_string();
    let host_args = HostCli::try_parse_from([
        "scan",
        "--root",
        &root,
        "--org",
        "acme",
        "--api-url",
        &base,
        "--json",
    ])
    .unwrap()
    .args;
    let mut host_out = Vec::new();
    let host_code = run_host(&host_args, &mut host_out);
    std::env::remove_var("GITHUB_TOKEN");
    assert_eq!(
        host_code.unwrap(),
        1,
        "the bad organisation fails the hardened host's org items"
    );
    let v: serde_json::Value = serde_json::from_slice(&host_out).unwrap();
    let item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "runner-groups-public-private")
        .unwrap();
    assert_eq!(item["status"], "fail");
    assert_eq!(code, 1);
    let md = String::from_utf8(out).unwrap();
    assert!(
        md.contains("| 9 | Dedicated runner groups for public vs private repos"),
        "{md}"
    );
    assert!(matches!(
        run_org(&args, &mut Vec::new()),
        Err(HostScanError::NoToken)
    ));
}

use airlock_hostscan::run_org;

/// The live-host command seam: a fake `nft` answering for a tree without nftables.conf.
struct FakeNft;

impl airlock_hostscan::Commands for FakeNft {
    fn output(&self, program: &str, args: &[&str]) -> Option<String> {
        (program == "nft" && args == ["list", "ruleset"]).then(|| {
            "table inet filter {\n\tchain output {\n\t\ttype filter hook output priority filter; policy drop;\n\t\tip daddr 140.82.112.0/20 tcp dport 443 accept\n\t}\n}\n".to_owned()
        })
    }
}

#[test]
fn live_commands_go_through_the_seam() {
    let dir = fixture("risky");
    fs::remove_file(dir.path().join("etc/nftables.conf")).unwrap();
    let host = Host::new(dir.path()).unwrap();
    assert!(!host.is_live());
    let s = statuses(&scan_host(&host, now()));
    assert_eq!(
        s["deny-by-default-firewall"],
        Status::Unknown,
        "no commands for a fixture root"
    );

    let host = Host::new(dir.path())
        .unwrap()
        .with_commands(Box::new(FakeNft));
    let r = scan_host(&host, now());
    let s = statuses(&r);
    assert_eq!(s["deny-by-default-firewall"], Status::Pass);
    assert_eq!(s["metadata-endpoint"], Status::Pass);
    let item = r.items.iter().find(|i| i.id == "egress-filtering").unwrap();
    assert!(
        item.evidence
            .iter()
            .any(|e| e.source == "command: nft list ruleset"),
        "{item:#?}"
    );
}

#[test]
fn live_commands_report_exit_status() {
    use airlock_hostscan::Commands;
    let live = airlock_hostscan::LiveCommands;
    assert_eq!(
        live.output("sh", &["-c", "echo hi"]).as_deref(),
        Some("hi\n")
    );
    assert_eq!(live.output("sh", &["-c", "echo no; exit 3"]), None);
    assert_eq!(
        live.output("/nonexistent/airlock-no-such-command", &[]),
        None
    );
}

#[test]
fn plain_output_is_coloured_only_when_asked() {
    let (_dir, r) = scan("risky");
    let mut coloured = Vec::new();
    render(&r, Format::Plain, true, &mut coloured).unwrap();
    let coloured = String::from_utf8(coloured).unwrap();
    assert!(coloured.contains("\u{1b}["), "ANSI escapes expected");
    let mut plain = Vec::new();
    render(&r, Format::Plain, false, &mut plain).unwrap();
    assert!(!String::from_utf8(plain).unwrap().contains('\u{1b}'));
}
