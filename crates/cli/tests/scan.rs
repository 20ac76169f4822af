//! `airlock scan` through the real binary: the subcommands are wired, formats reach the
//! output, and exit codes carry the result. The scanners' own tests live in crates/scan and
//! crates/hostscan; these only check what the CLI adds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn airlock() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
}

fn fixtures(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("tests/fixtures")
}

#[test]
fn scan_workflows_exit_code_is_the_highest_severity_and_sarif_is_json() {
    let wf = fixtures("scan").join("workflows");
    let o = airlock()
        .args(["scan", "workflows"])
        .arg(wf.join("sh-pr.yml"))
        .output()
        .expect("run");
    let code = o.status.code().expect("code");
    assert!(
        (11..=14).contains(&code),
        "code {code}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("self-hosted-untrusted-trigger"));

    let o = airlock()
        .args(["scan", "workflows", "--format", "sarif"])
        .arg(wf.join("sh-pr.yml"))
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("SARIF is JSON");
    assert_eq!(v["version"], "2.1.0");

    let o = airlock()
        .args(["scan", "workflows"])
        .arg(wf.join("permissions-ok.yml"))
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    let o = airlock()
        .args(["scan", "workflows", "--policy", "/nonexistent/policy.toml"])
        .arg(&wf)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/policy.toml"));
}

#[test]
fn scan_host_grades_fixture_trees() {
    let f = fixtures("hostscan");
    let o = airlock()
        .args(["scan", "host", "--json", "--root"])
        .arg(f.join("hardened"))
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v.is_object());
    let o = airlock()
        .args(["scan", "host", "--root"])
        .arg(f.join("risky"))
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    let o = airlock()
        .args(["scan", "org", "bad org name!"])
        .env_remove("GITHUB_TOKEN")
        .env_remove("AIRLOCK_GITHUB_TOKEN")
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A directory with files but no workflow anywhere below it: exit 0, but a warning on stderr
/// (with `--format json` too), so a wrong path is not read as a clean result.
#[test]
fn scanning_a_non_empty_directory_without_workflows_warns() {
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(d.path().join("README.md"), "hello\n").expect("file");
    let o = airlock()
        .args(["scan", "workflows", "--format", "json"])
        .arg(d.path())
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning: 0 files scanned"), "{err}");
}
