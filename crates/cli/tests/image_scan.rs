//! `airlock image db update` and `airlock image scan` through the binary: OSV data fetched
//! from a loopback mirror in the test's sealed namespace, an imported Debian-like image
//! scanned against it, the SBOM written and the scan recorded for `scan host`.

mod common;

use std::process::Stdio;

use common::oci::*;
use common::*;

const OSV_FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../imagescan/tests/fixtures/osv"
);

#[test]
fn db_update_and_scan_an_image() {
    need_root!();
    let w = World::new();
    // The mirror: OSV's layout (<ecosystem>/all.zip), made from the fixture entries.
    let mirror = w.dir.path().join("mirror");
    std::fs::create_dir_all(mirror.join("Debian")).expect("mirror");
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile, pathlib\nz = zipfile.ZipFile(sys.argv[2], 'w')\nfor p in pathlib.Path(sys.argv[1]).glob('*.json'): z.write(p, p.name)\nz.close()",
        ])
        .arg(format!("{OSV_FIXTURES}/Debian"))
        .arg(mirror.join("Debian/all.zip"))
        .output()
        .expect("zip");
    assert!(o.status.success(), "{}", stderr(&o));
    let mut server = w
        .in_netns(&[
            "python3",
            "-m",
            "http.server",
            "8999",
            "--bind",
            "127.0.0.1",
            "--directory",
            &mirror.to_string_lossy(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("http.server");
    let mut up = false;
    for _ in 0..100 {
        let o = w
            .in_netns(&[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:8999/",
            ])
            .output()
            .expect("curl");
        if String::from_utf8_lossy(&o.stdout) == "200" {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up, "the mirror did not start");
    let o = w
        .cmd()
        .args([
            "image",
            "db",
            "update",
            "--source",
            "http://127.0.0.1:8999",
            "--ecosystem",
            "Debian",
        ])
        .output()
        .expect("db update");
    let _ = server.kill();
    let _ = server.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Debian: 3 entries"), "{}", stdout(&o));
    // A remote plain-http source is refused.
    let o = w
        .cmd()
        .args([
            "image",
            "db",
            "update",
            "--source",
            "http://osv.example",
            "--ecosystem",
            "Debian",
        ])
        .output()
        .expect("db update");
    assert_ne!(o.status.code(), Some(0));

    let l = w.dir.path().join("deb");
    debian_layout(&l, "deb:1");
    let o = w
        .cmd()
        .args(["image", "import"])
        .arg(&l)
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", stderr(&o));
    let sbom = w.dir.path().join("sbom.json");
    let o = w
        .cmd()
        .args(["image", "scan", "deb:1", "--format", "json", "--sbom"])
        .arg(&sbom)
        .output()
        .expect("scan");
    // High is the worst finding: exit 13.
    assert_eq!(o.status.code(), Some(13), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let ids: Vec<&str> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(ids, ["AIRLOCK-TEST-DEB-1"], "{v:#}");
    let bom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sbom).expect("sbom")).expect("sbom json");
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["components"].as_array().map(Vec::len), Some(2));
    // SARIF and plain render the same finding.
    let o = w
        .cmd()
        .args(["image", "scan", "deb:1", "--format", "sarif"])
        .output()
        .expect("scan");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sarif");
    assert_eq!(s["runs"][0]["results"][0]["ruleId"], "AIRLOCK-TEST-DEB-1");
    let o = w
        .cmd()
        .args(["image", "scan", "deb:1"])
        .output()
        .expect("scan");
    assert!(stdout(&o).contains("AIRLOCK-TEST-DEB-1") && stdout(&o).contains("3.0.11-1~deb12u2"));
    // Each scan is in the audit log, for `scan host`.
    assert_eq!(records(&w, "image.scanned").len(), 3);
}

#[test]
fn the_policy_refuses_images_with_findings_at_its_threshold() {
    need_root!();
    let w = World::new();
    // OSV data where `airlock image db update` puts it (the fixture entries).
    let osv = w.data().join("osv/Debian");
    std::fs::create_dir_all(&osv).expect("osv");
    for e in std::fs::read_dir(format!("{OSV_FIXTURES}/Debian"))
        .expect("fixtures")
        .flatten()
    {
        std::fs::copy(e.path(), osv.join(e.file_name())).expect("copy");
    }
    let l = w.dir.path().join("deb");
    common::oci::debian_layout(&l, "deb:1");
    let o = w
        .cmd()
        .args(["image", "import"])
        .arg(&l)
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", stderr(&o));
    let run = |policy: &str| {
        let p = w.policy(policy);
        w.cmd()
            .args(["run", "-q", "-p"])
            .arg(&p)
            .args(["--", "/nonexistent"])
            .output()
            .expect("run")
    };
    let base = "version = 1\n[groups.default]\nrootfs = { image = \"deb:1\" }\n[images]\n";
    // High finding, threshold high: refused before the job exists, with the finding named.
    let o = run(&format!("{base}scan = {{ max_severity = \"high\" }}\n"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("known vulnerabilities at or above high")
            && stderr(&o).contains("AIRLOCK-TEST-DEB-1 (libssl3 3.0.11-1~deb12u1, high)"),
        "{}",
        stderr(&o)
    );
    assert!(records(&w, "job.requested").is_empty());
    assert_eq!(records(&w, "image.scanned").len(), 1);
    // Ignored by an alias, with a reason: the job gets past the check (and fails on its
    // command, which the image does not have: exit 125, not the refusal's 2).
    let o = run(&format!(
        "{base}scan = {{ max_severity = \"high\", ignore = [{{ id = \"CVE-2099-0001\", reason = \"TLS is not used by these jobs\" }}] }}\n"
    ));
    assert_ne!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("known vulnerabilities"),
        "{}",
        stderr(&o)
    );
    // A higher threshold lets it through too; the cached scan is reused (no new record).
    let o = run(&format!("{base}scan = {{ max_severity = \"critical\" }}\n"));
    assert!(
        !stderr(&o).contains("known vulnerabilities"),
        "{}",
        stderr(&o)
    );
    assert_eq!(records(&w, "image.scanned").len(), 1);
    // An ignore without a reason is refused by the policy.
    let p = w.policy(&format!(
        "{base}scan = {{ max_severity = \"high\", ignore = [{{ id = \"CVE-2099-0001\", reason = \"\" }}] }}\n"
    ));
    let o = w
        .cmd()
        .args(["policy", "check"])
        .arg(&p)
        .output()
        .expect("check");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("needs an id and a reason"),
        "{}",
        stderr(&o)
    );
    w.assert_clean();
}
