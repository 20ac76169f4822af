//! `airlock scan host` credits airlock's own evidence from a live run: a real job and a real
//! drill write the audit log of a host tree (the tests' sealed world: the job and the drill
//! run in namespaces with nothing but loopback), then `scan host --root` grades that tree.

mod common;

use std::path::Path;

use common::*;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read fixture").flatten() {
        let dest = to.join(e.file_name());
        let ty = e.file_type().expect("type");
        if ty.is_symlink() {
            let target = std::fs::read_link(e.path()).expect("link");
            std::os::unix::fs::symlink(target, &dest).expect("symlink");
        } else if ty.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if ty.is_file() {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

#[test]
fn a_live_airlock_host_passes_every_item_it_can_decide() {
    need_root!();
    let w = World::new();
    // The host tree: the airlock fixture's system files, but its own policy and an audit log
    // written only by what runs below.
    let root = w.dir.path().join("host");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hostscan/tests/fixtures/airlock");
    copy_tree(&fixture, &root);
    std::fs::remove_dir_all(root.join("var/lib/airlock/audit")).expect("fixture log");
    let data = root.join("var/lib/airlock");
    let policy = root.join("etc/airlock/policy.toml");
    // Alerts go to a webhook on the sealed namespace's loopback (nothing listens: a delivery
    // fails at once and is kept; no packet leaves the namespace).
    std::fs::write(
        &policy,
        "version = 1\ndefault_group = \"pr\"\n[groups.pr.egress]\nmode = \"block\"\n\
         [alerts]\nwebhook = { url = \"http://127.0.0.1:9/alerts\", secret = \"AIRLOCK_TEST_ALERT_KEY\", retries = 0, timeout = \"2s\" }\n",
    )
    .expect("policy");

    let o = w
        .cmd()
        .env("AIRLOCK_DATA_DIR", &data)
        .env("AIRLOCK_TEST_ALERT_KEY", "k3y-for-the-live-scan-test")
        .args(["run", "-q", "-p"])
        .arg(&policy)
        .arg("-w")
        .arg(w.ws())
        // One refused lookup, through the job's gateway, so the log holds a network record.
        .args([
            "--",
            "/bin/sh",
            "-c",
            "getent hosts not-allowed.example.org || true",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let tmp = w.dir.path().join("drill-tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let o = w
        .cmd()
        .env("AIRLOCK_DATA_DIR", &data)
        .env("TMPDIR", &tmp)
        .args(["drill", "--only", "recon"])
        .output()
        .expect("drill");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // An image imported and scanned against OSV data (the fixture entries, copied where
    // `airlock image db update` puts them).
    let osv = data.join("osv/Debian");
    std::fs::create_dir_all(&osv).expect("osv");
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../imagescan/tests/fixtures/osv/Debian");
    for e in std::fs::read_dir(&fixtures).expect("fixtures").flatten() {
        std::fs::copy(e.path(), osv.join(e.file_name())).expect("copy");
    }
    let layout = w.dir.path().join("deb");
    common::oci::debian_layout(&layout, "deb:1");
    let o = w
        .cmd()
        .env("AIRLOCK_DATA_DIR", &data)
        .args(["image", "import"])
        .arg(&layout)
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w
        .cmd()
        .env("AIRLOCK_DATA_DIR", &data)
        .args(["image", "scan", "deb:1"])
        .output()
        .expect("image scan");
    assert_eq!(o.status.code(), Some(13), "{}", stderr(&o));

    let o = std::process::Command::new(airlock_bin())
        .args(["scan", "host", "--json", "--root"])
        .arg(&root)
        .output()
        .expect("scan host");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", stderr(&o)));
    let items = v["items"].as_array().expect("items");
    for i in items {
        let id = i["id"].as_str().unwrap_or_default();
        let want = match id {
            "runner-groups-public-private"
            | "repository-access-restrictions"
            | "unauthorized-registration-monitoring"
            | "decommission-runners"
            | "runner-auto-update" => "unknown",
            _ => "pass",
        };
        assert_eq!(i["status"], want, "{id}: {i:#}");
    }
    let reason = |id: &str| -> String {
        items
            .iter()
            .find(|i| i["id"] == id)
            .map(|i| i.to_string())
            .unwrap_or_default()
    };
    assert!(reason("anomaly-detection").contains("1 jobs read by airlock's detectors"));
    assert!(reason("config-change-alerts").contains("1 jobs recorded their policy's SHA-256"));
    assert!(reason("penetration-testing").contains("airlock drill passed 0 days ago"));
    assert!(reason("access-log-review").contains("webhook to 127.0.0.1:9"));
    assert!(reason("image-vulnerability-scanning").contains("image deb:1 scanned at"));
    w.assert_clean();
}
