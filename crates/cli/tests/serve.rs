//! `airlock serve --check`: the configuration, the policy and the webhook secret are checked
//! and summarised; nothing listens.

use std::process::Command;

const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(
        d.path().join("policy.toml"),
        "version = 1\ndefault_group = \"ci\"\n[groups.ci]\nlabels = [\"airlock\"]\nrepositories = [\"octo-org/*\"]\nmax_runners = 3\n",
    )
    .expect("policy");
    std::fs::write(d.path().join("secret"), "s3cret-value\n").expect("secret");
    std::fs::write(
        d.path().join("serve.toml"),
        format!(
            "policy = \"{p}/policy.toml\"\nwebhook_secret = {{ file = \"{p}/secret\" }}\n[github]\norg = \"octo-org\"\ntoken = {{ env = \"AIRLOCK_TEST_PAT\" }}\n",
            p = d.path().display()
        ),
    )
    .expect("serve.toml");
    d
}

#[test]
fn serve_check_summarises_a_good_configuration() {
    let d = setup();
    let o = Command::new(AIRLOCK)
        .args(["serve", "--check", "--config"])
        .arg(d.path().join("serve.toml"))
        .output()
        .expect("run");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("ok: listen 127.0.0.1:8780"), "{out}");
    assert!(
        out.contains("group ci: Untrusted, labels [\"airlock\"], repositories [\"octo-org/*\"], max 3 runners"),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "the secret is never printed");
}

#[test]
fn serve_check_refuses_a_bad_configuration() {
    let d = setup();
    std::fs::remove_file(d.path().join("secret")).expect("rm");
    let o = Command::new(AIRLOCK)
        .args(["serve", "--check", "--config"])
        .arg(d.path().join("serve.toml"))
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("secret webhook_secret: cannot read"), "{err}");
    std::fs::write(d.path().join("serve.toml"), "policy = \"x\"\nlisten = 5\n").expect("w");
    let o = Command::new(AIRLOCK)
        .args(["serve", "--check", "--config"])
        .arg(d.path().join("serve.toml"))
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("serve.toml"));
}
