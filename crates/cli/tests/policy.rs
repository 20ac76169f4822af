//! `airlock policy check|schema|default` through the real binary.

mod common;

use common::*;

fn check(w: &World, text: &str) -> std::process::Output {
    let p = w.policy(text);
    w.cmd()
        .args(["policy", "check"])
        .arg(p)
        .output()
        .expect("check")
}

#[test]
fn a_good_policy_is_ok() {
    let w = World::new();
    let o = check(
        &w,
        "version = 1\n[groups.default]\n[groups.pr]\ntrust = \"untrusted\"\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with(": ok (2 groups: default, pr)\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn every_error_is_listed_with_file_line_col_and_hint() {
    let w = World::new();
    let o = check(
        &w,
        "version = 1\n[groups.default]\nmemroy = \"1GiB\"\n[groups.x.limits]\nmemory = \"lots\"\n",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let file = w.dir.path().join("policy.toml");
    let file = file.display();
    assert!(
        err.contains(&format!("{file}:3:1: error: unknown field `memroy`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:5:10: error: invalid size \"lots\"")),
        "{err}"
    );
    assert!(err.contains("hint: unknown keys are errors"), "{err}");
    assert!(err.contains("2 errors in policy"), "{err}");
}

#[test]
fn malformed_toml_is_positioned() {
    let w = World::new();
    let o = check(&w, "version = 1\n[groups.default\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("policy.toml:2:"), "{}", stderr(&o));
}

#[test]
fn a_missing_file_is_named() {
    let w = World::new();
    let o = w
        .cmd()
        .args(["policy", "check", "/nonexistent/p.toml"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read policy file /nonexistent/p.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn schema_is_json_schema_and_the_default_policy_checks() {
    let w = World::new();
    let o = w.cmd().args(["policy", "schema"]).output().expect("schema");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(s["$schema"]
        .as_str()
        .unwrap_or("")
        .contains("json-schema.org"));
    assert_eq!(s["additionalProperties"], false);
    let o = w
        .cmd()
        .args(["policy", "default"])
        .output()
        .expect("default");
    let o = check(&w, &stdout(&o));
    assert!(o.status.success(), "{}", stderr(&o));
}
