//! Image scans of fixture root filesystems (a Debian, an Alpine and a Rocky Linux image with
//! language packages) against the fixture OSV data: the exact findings, and none on a clean
//! image.

use std::path::{Path, PathBuf};

use airlock_imagescan::{scan, Severity};

fn osv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/osv")
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn debian(root: &Path, openssl: &str) {
    write(root, "etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    write(
        root,
        "var/lib/dpkg/status",
        &format!(
            "Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: {openssl}\n\n\
             Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n\n\
             Package: zlib1g\nStatus: install ok installed\nSource: zlib\nVersion: 1:1.2.13.dfsg-1\n"
        ),
    );
    write(
        root,
        "app/package-lock.json",
        r#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/lodash":{"version":"4.17.20"},"node_modules/express":{"version":"4.19.2"}}}"#,
    );
    write(
        root,
        "usr/lib/python3/dist-packages/Jinja2-2.10.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10\n\nThe description.\n",
    );
}

fn found(r: &airlock_imagescan::ScanReport) -> Vec<(String, String, String, Severity)> {
    r.findings
        .iter()
        .map(|f| {
            (
                f.id.clone(),
                f.package.clone(),
                f.version.clone(),
                f.severity,
            )
        })
        .collect()
}

#[test]
fn a_debian_image_with_language_packages() {
    let d = tempfile::tempdir().expect("tmp");
    debian(d.path(), "3.0.11-1~deb12u1");
    let r = scan("deb:1", "sha256:x", d.path(), &osv());
    assert_eq!(r.os, Some(("debian".into(), "12".into())));
    assert_eq!(r.packages.len(), 6, "{:#?}", r.packages);
    let want: Vec<(String, String, String, Severity)> = vec![
        // Critical from its CVSS vector alone (9.8).
        (
            "AIRLOCK-TEST-PYPI-1".into(),
            "Jinja2".into(),
            "2.10".into(),
            Severity::Critical,
        ),
        (
            "AIRLOCK-TEST-GHSA-1".into(),
            "lodash".into(),
            "4.17.20".into(),
            Severity::Critical,
        ),
        (
            "AIRLOCK-TEST-DEB-1".into(),
            "libssl3".into(),
            "3.0.11-1~deb12u1".into(),
            Severity::High,
        ),
    ];
    assert_eq!(found(&r), want);
    assert_eq!(r.exit_code(), 14);
    // An ignore names the id or an alias, with a reason.
    let mut r2 = r.clone();
    let n = r2.apply_ignores(&[airlock_imagescan::report::Ignore {
        id: "CVE-2099-0001".into(),
        reason: "not reachable from the runner".into(),
    }]);
    assert_eq!(n, 1);
    assert_eq!(r2.findings.len(), 2);
    // Every package is in the SBOM, every finding among its vulnerabilities.
    let bom = r.cyclonedx();
    assert_eq!(bom["components"].as_array().map(Vec::len), Some(6));
    assert!(bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .any(|c| c["purl"] == "pkg:deb/debian/libssl3@3.0.11-1~deb12u1"));
    assert_eq!(bom["vulnerabilities"].as_array().map(Vec::len), Some(3));
    let sarif = r.sarif();
    assert_eq!(
        sarif["runs"][0]["results"].as_array().map(Vec::len),
        Some(3)
    );
}

#[test]
fn a_clean_image_has_no_findings() {
    let d = tempfile::tempdir().expect("tmp");
    debian(d.path(), "3.0.11-1~deb12u2");
    std::fs::remove_dir_all(d.path().join("app")).expect("rm");
    std::fs::remove_dir_all(d.path().join("usr")).expect("rm");
    let r = scan("deb:2", "sha256:y", d.path(), &osv());
    assert_eq!(found(&r), []);
    assert_eq!(r.exit_code(), 0);
    assert!(r.osv_entries_read >= 7, "{}", r.osv_entries_read);
}

#[test]
fn an_alpine_image() {
    let d = tempfile::tempdir().expect("tmp");
    write(d.path(), "etc/os-release", "ID=alpine\nVERSION_ID=3.19.1\n");
    write(
        d.path(),
        "lib/apk/db/installed",
        "P:busybox\nV:1.36.1-r15\no:busybox\n\nP:musl\nV:1.2.4_git20230717-r4\no:musl\n",
    );
    let r = scan("alp:1", "sha256:z", d.path(), &osv());
    assert_eq!(
        found(&r),
        [(
            "AIRLOCK-TEST-APK-1".into(),
            "busybox".into(),
            "1.36.1-r15".into(),
            Severity::Unknown
        )]
    );
}

#[test]
fn a_rocky_image_with_an_rpm_database() {
    let d = tempfile::tempdir().expect("tmp");
    write(
        d.path(),
        "etc/os-release",
        "ID=\"rocky\"\nVERSION_ID=\"9.3\"\n",
    );
    let db = d.path().join("var/lib/rpm/rpmdb.sqlite");
    std::fs::create_dir_all(db.parent().expect("parent")).expect("mkdir");
    let c = rusqlite::Connection::open(&db).expect("sqlite");
    c.execute(
        "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)",
        [],
    )
    .expect("table");
    use airlock_imagescan::inventory::tests_support::rpm_header_blob;
    for h in [
        rpm_header_blob("openssl-libs", Some(1), "3.0.7", "24.el9"),
        rpm_header_blob("bash", None, "5.1.8", "6.el9"),
        rpm_header_blob("gpg-pubkey", None, "350d275d", "6279464b"),
    ] {
        c.execute("INSERT INTO Packages (blob) VALUES (?1)", [h])
            .expect("row");
    }
    drop(c);
    let r = scan("rocky:9", "sha256:r", d.path(), &osv());
    assert_eq!(r.packages.len(), 2, "{:#?}", r.packages);
    assert_eq!(
        found(&r),
        [(
            "AIRLOCK-TEST-RPM-1".into(),
            "openssl-libs".into(),
            "1:3.0.7-24.el9".into(),
            Severity::High
        )]
    );
}

#[test]
fn a_symlinked_database_does_not_leave_the_image() {
    // An image whose dpkg status is a symlink to the host's: read inside the image (where
    // it does not exist), never the host's file.
    let d = tempfile::tempdir().expect("tmp");
    write(d.path(), "etc/os-release", "ID=debian\nVERSION_ID=12\n");
    std::fs::create_dir_all(d.path().join("var/lib/dpkg")).expect("mkdir");
    std::os::unix::fs::symlink("/var/lib/dpkg/status", d.path().join("var/lib/dpkg/status"))
        .expect("symlink");
    let r = scan("evil:1", "sha256:e", d.path(), &osv());
    assert!(
        r.packages.is_empty(),
        "read the host's packages: {}",
        r.packages.len()
    );
}

#[test]
fn without_data_the_scan_says_so() {
    let d = tempfile::tempdir().expect("tmp");
    debian(d.path(), "3.0.11-1~deb12u1");
    let empty = tempfile::tempdir().expect("tmp");
    let r = scan("deb:1", "sha256:x", d.path(), empty.path());
    assert!(r.findings.is_empty());
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("airlock image db update")),
        "{:?}",
        r.notes
    );
}
