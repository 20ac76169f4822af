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
        .env("AIRLOCK_TEST_PAT", "ghp_not_a_real_token")
        .env_remove("AIRLOCK_STATE_DIR")
        .env_remove("AIRLOCK_DATA_DIR")
        .env_remove("AIRLOCK_NET_POOL")
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
    assert!(
        out.contains("state dir /run/airlock (serve.toml or default), data dir /var/lib/airlock (serve.toml or default)"),
        "{out}"
    );
    assert!(
        !out.contains("ghp_not_a_real_token"),
        "the token is never printed"
    );
}

/// `--check` tries what it can without side effects: an unset token variable, a group's
/// image that is not imported and a listen address on every interface are reported; the
/// global directories override serve.toml's and the summary says which ones serve will use.
#[test]
fn serve_check_finds_what_would_stop_serve() {
    let d = setup();
    let policy = d.path().join("policy.toml");
    let mut text = std::fs::read_to_string(&policy).expect("policy");
    text.push_str("rootfs = { image = \"missing:1\" }\n");
    std::fs::write(&policy, text).expect("policy");
    let conf = d.path().join("serve.toml");
    let text = std::fs::read_to_string(&conf).expect("serve.toml");
    std::fs::write(&conf, format!("listen = \"0.0.0.0:8780\"\n{text}")).expect("serve.toml");
    let data = d.path().join("data");
    let o = Command::new(AIRLOCK)
        .args(["serve", "--check", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&conf)
        .env_remove("AIRLOCK_TEST_PAT")
        .env_remove("AIRLOCK_STATE_DIR")
        .env_remove("AIRLOCK_DATA_DIR")
        .output()
        .expect("run");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("error: GitHub credentials"),
        "unset token: {out}"
    );
    assert!(
        out.contains("AIRLOCK_TEST_PAT"),
        "names the variable: {out}"
    );
    assert!(
        out.contains("error: group ci: image \"missing:1\""),
        "{out}"
    );
    assert!(out.contains("warning: listen 0.0.0.0:8780"), "{out}");
    assert!(
        out.contains(&format!(
            "data dir {} (--flag or environment)",
            data.display()
        )),
        "{out}"
    );
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
