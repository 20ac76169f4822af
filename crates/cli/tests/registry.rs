//! `airlock image pull` against a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry) started by the test inside the test's sealed network namespace, on
//! its loopback, with images the test builds and pushes with `skopeo`. Once over plain HTTP
//! and anonymous, once with TLS from a CA the test makes and htpasswd (basic) auth.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::oci::*;
use common::registry::*;
use common::*;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// Layers pushed as they are: skopeo compresses uncompressed layers on the way to a
/// registry, which would change the manifest the test compares with.
const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `airlock image pull ARGS` in the world.
fn pull(w: &World, args: &[&str]) -> Output {
    w.cmd()
        .args(["image", "pull", "--json"])
        .args(args)
        .env_remove("DOCKER_CONFIG")
        .env("HOME", w.dir.path())
        .output()
        .expect("pull")
}

/// Pushes the layout's image `1` over plain HTTP to `t/REPO` (`name:tag`) in the registry.
fn push_plain(w: &World, reg: &Registry, layout: &Path, repo: &str) {
    let to = format!("{}/t/{repo}", reg.addr);
    push(w, layout, "1", &to, &["--dest-tls-verify=false"], false);
}

/// `airlock run -q -p POLICY -- /bin/sh -c SCRIPT` in the world.
fn run_sh(w: &World, policy: &Path, script: &str) -> Output {
    w.cmd()
        .args(["run", "-q", "-p"])
        .arg(policy)
        .args(["--", "/bin/sh", "-c", script])
        .output()
        .expect("run")
}

fn pulled(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("json")
}

fn image_names(w: &World) -> Vec<String> {
    let o = w
        .cmd()
        .args(["image", "ls", "--json"])
        .output()
        .expect("ls");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A single-platform image: dash (gzip) and a marker layer compressed as `marker_media`.
fn tiny(layout: &Path, name: &str, marker: &str, zstd_marker: bool) -> serde_json::Value {
    new_layout(layout);
    let l1 = gzip(&tar_of(dash_layer));
    let l2 = tar_of(|t| add_file(t, "marker", marker.as_bytes(), 0o644));
    let (media, l2) = if zstd_marker {
        (format!("{LAYER}+zstd"), zstd(&l2))
    } else {
        (format!("{LAYER}+gzip"), gzip(&l2))
    };
    let dm = write_manifest(
        layout,
        "amd64",
        &[(&format!("{LAYER}+gzip"), l1), (&media, l2)],
    );
    write_index_json(layout, name, &dm);
    dm
}

#[test]
fn pull_verifies_shares_blobs_and_runs_a_job() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let reg = start_registry(&w, 5000, None, None);
    let insecure = ["--insecure-registry", "127.0.0.1:5000"];
    let plain = ["--dest-tls-verify=false"];

    // A gzip + zstd image: pulled, every blob fetched, the pinned digest printed.
    let la = w.dir.path().join("a");
    tiny(&la, "1", "from-the-registry\n", true);
    push_plain(&w, &reg, &la, "tiny:1");
    let v = pulled(&pull(
        &w,
        &[&insecure[..], &["127.0.0.1:5000/t/tiny:1"]].concat(),
    ));
    assert_eq!(v["fetched"], 3, "{v}");
    assert_eq!(v["reused"], 0, "{v}");
    let digest = v["image"]["digest"].as_str().expect("digest").to_owned();
    assert_eq!(
        v["pinned"].as_str(),
        Some(format!("127.0.0.1:5000/t/tiny@{digest}").as_str())
    );
    assert_eq!(v["image"]["name"], "127.0.0.1:5000/t/tiny:1");

    // A job runs in it.
    let policy = w.policy(
        "version = 1\n[groups.default]\nrootfs = { image = \"127.0.0.1:5000/t/tiny:1\" }\n",
    );
    let o = run_sh(&w, &policy, "read m < /marker; echo \"$m\"");
    assert_eq!(stdout(&o).trim(), "from-the-registry", "{}", stderr(&o));

    // A second tag sharing the dash layer fetches only what is new.
    let lb = w.dir.path().join("b");
    tiny(&lb, "2", "second\n", false);
    push(
        &w,
        &lb,
        "2",
        &format!("{}/t/tiny:2", reg.addr),
        &plain,
        false,
    );
    let v = pulled(&pull(
        &w,
        &[&insecure[..], &["127.0.0.1:5000/t/tiny:2"]].concat(),
    ));
    assert_eq!(
        (v["fetched"].as_u64(), v["reused"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );

    // Pulling by digest gives the same image; a digest the registry's content does not have
    // is refused.
    let by_digest = format!("127.0.0.1:5000/t/tiny@{digest}");
    let v = pulled(&pull(&w, &[&insecure[..], &[&by_digest[..]]].concat()));
    assert_eq!(v["image"]["digest"].as_str(), Some(digest.as_str()));
    assert_eq!(v["fetched"], 0, "{v}");
    w.assert_clean();
}

#[test]
fn an_index_is_resolved_by_platform() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let reg = start_registry(&w, 5000, None, None);
    let l = w.dir.path().join("multi");
    new_layout(&l);
    let amd = write_manifest(
        &l,
        "amd64",
        &[(
            GZ,
            gzip(&tar_of(|t| add_file(t, "arch", b"amd64\n", 0o644))),
        )],
    );
    let arm = write_manifest(
        &l,
        "arm64",
        &[(
            GZ,
            gzip(&tar_of(|t| add_file(t, "arch", b"arm64\n", 0o644))),
        )],
    );
    write_multi(&l, "m", &[amd.clone(), arm.clone()]);
    push(
        &w,
        &l,
        "m",
        &format!("{}/t/multi:1", reg.addr),
        &["--dest-tls-verify=false"],
        true,
    );
    let insecure = ["--insecure-registry", "127.0.0.1:5000"];
    let v = pulled(&pull(
        &w,
        &[&insecure[..], &["127.0.0.1:5000/t/multi:1"]].concat(),
    ));
    assert_eq!(v["image"]["digest"], amd["digest"], "{v}");
    let v = pulled(&pull(
        &w,
        &[
            &insecure[..],
            &[
                "--platform",
                "linux/arm64",
                "--name",
                "multi-arm:1",
                "127.0.0.1:5000/t/multi:1",
            ],
        ]
        .concat(),
    ));
    assert_eq!(v["image"]["digest"], arm["digest"], "{v}");
    let o = pull(
        &w,
        &[
            &insecure[..],
            &["--platform", "linux/s390x", "127.0.0.1:5000/t/multi:1"],
        ]
        .concat(),
    );
    assert_ne!(o.status.code(), Some(0));
    let e = stderr(&o);
    assert!(
        e.contains("no image for linux/s390x") && e.contains("linux/arm64"),
        "{e}"
    );
}

#[test]
fn tampered_blobs_and_hostile_layers_leave_no_image() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let reg = start_registry(&w, 5000, None, None);
    let insecure = ["--insecure-registry", "127.0.0.1:5000"];

    // A blob altered in the registry's storage: refused, nothing visible, nothing left.
    let la = w.dir.path().join("a");
    let dm = tiny(&la, "1", "original\n", false);
    push_plain(&w, &reg, &la, "tampered:1");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            la.join("blobs/sha256").join(
                dm["digest"]
                    .as_str()
                    .expect("d")
                    .trim_start_matches("sha256:"),
            ),
        )
        .expect("manifest"),
    )
    .expect("json");
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .expect("layer")
        .trim_start_matches("sha256:")
        .to_owned();
    let data = reg
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[..2])
        .join(&layer)
        .join("data");
    let mut bytes = std::fs::read(&data).expect("stored blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).expect("tamper");
    let o = pull(
        &w,
        &[&insecure[..], &["127.0.0.1:5000/t/tampered:1"]].concat(),
    );
    assert_ne!(o.status.code(), Some(0), "a tampered blob was accepted");
    assert!(image_names(&w).is_empty(), "{:?}", image_names(&w));
    let rootfs = w.data().join("images/rootfs");
    assert_eq!(
        std::fs::read_dir(&rootfs).map(|r| r.count()).unwrap_or(0),
        0
    );

    // A hostile layer (an entry climbing out of the image) is refused after a pull exactly
    // as after an import.
    let lh = w.dir.path().join("h");
    new_layout(&lh);
    let evil = tar_of(|t| {
        add_link(t, "x", "/etc");
        add_file(t, "x/airlock-pwned", b"owned\n", 0o644);
    });
    let dm = write_manifest(&lh, "amd64", &[(GZ, gzip(&evil))]);
    write_index_json(&lh, "1", &dm);
    push_plain(&w, &reg, &lh, "hostile:1");
    let o = pull(
        &w,
        &[&insecure[..], &["127.0.0.1:5000/t/hostile:1"]].concat(),
    );
    assert_ne!(o.status.code(), Some(0), "a hostile layer was accepted");
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
    assert!(!Path::new("/etc/airlock-pwned").exists());
    assert!(image_names(&w).is_empty(), "{:?}", image_names(&w));
}

#[test]
fn concurrent_and_killed_pulls_stay_consistent() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let reg = start_registry(&w, 5000, None, None);
    let plain = ["--dest-tls-verify=false"];
    // 24 MiB of incompressible data, so a pull takes long enough to be killed midway.
    let mut big = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let l = w.dir.path().join("big");
    new_layout(&l);
    let layer = tar_of(|t| {
        dash_layer(t);
        add_file(t, "big", &big, 0o644);
    });
    let dm = write_manifest(&l, "amd64", &[(GZ, gzip(&layer))]);
    write_index_json(&l, "1", &dm);
    push(&w, &l, "1", &format!("{}/t/big:1", reg.addr), &plain, false);
    let args = [
        "--insecure-registry",
        "127.0.0.1:5000",
        "127.0.0.1:5000/t/big:1",
    ];

    // Killed midway: no image is visible; the next pull succeeds.
    let mut c = w
        .cmd()
        .args(["image", "pull", "--json"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pull");
    std::thread::sleep(std::time::Duration::from_millis(150));
    let _ = c.kill();
    let status = c.wait().expect("wait");
    if !status.success() {
        assert!(image_names(&w).is_empty(), "{:?}", image_names(&w));
    }
    let v = pulled(&pull(&w, &args));
    assert_eq!(v["image"]["digest"], dm["digest"]);
    let o = w
        .cmd()
        .args(["image", "rm", "127.0.0.1:5000/t/big:1"])
        .output()
        .expect("rm");
    assert!(o.status.success(), "{}", stderr(&o));
    let blobs = w.data().join("images/blobs/sha256");
    let left: Vec<_> = std::fs::read_dir(&blobs)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "blobs (or partial downloads) left: {left:?}"
    );

    // Two pulls at once: both succeed with the same image, the blobs fetched once.
    let spawn = || {
        w.cmd()
            .args(["image", "pull", "--json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pull")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    let (a, b) = (pulled(&a), pulled(&b));
    assert_eq!(a["image"]["digest"], b["image"]["digest"]);
    assert_eq!(
        a["fetched"].as_u64().unwrap_or(0) + b["fetched"].as_u64().unwrap_or(0),
        2,
        "config and layer fetched once: {a} {b}"
    );
}

/// A CA and a certificate for 127.0.0.1 made with openssl; returns (ca.crt, cert, key).
fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    };
    std::fs::create_dir_all(dir).expect("tls dir");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=airlock test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

#[test]
fn tls_and_basic_auth() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let tls = w.dir.path().join("tls");
    let (ca, cert, key) = make_tls(&tls);
    let htpasswd = w.dir.path().join("htpasswd");
    let o = std::process::Command::new("htpasswd")
        .args(["-Bbc"])
        .arg(&htpasswd)
        .args(["ci", "pull-pass-7d2f"])
        .output()
        .expect("htpasswd");
    assert!(o.status.success(), "{}", stderr(&o));
    let reg = start_registry(&w, 5443, Some((&cert, &key)), Some(&htpasswd));
    // skopeo trusts the CA from a certs directory.
    let certs = w.dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).expect("certs");
    std::fs::copy(&ca, certs.join("ca.crt")).expect("ca");
    let l = w.dir.path().join("a");
    tiny(&l, "1", "behind-auth\n", false);
    let cert_dir = format!("--dest-cert-dir={}", certs.display());
    push(
        &w,
        &l,
        "1",
        &format!("{}/t/private:1", reg.addr),
        &[&cert_dir, "--dest-creds=ci:pull-pass-7d2f"],
        false,
    );
    let ca_arg = ca.to_string_lossy().into_owned();
    let image = "127.0.0.1:5443/t/private:1";

    // Without the CA: the certificate is not trusted.
    let o = pull(&w, &[image]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "an untrusted certificate was accepted"
    );
    // With the CA but no credentials: refused by the registry.
    let o = pull(&w, &["--ca-file", &ca_arg, image]);
    assert_ne!(o.status.code(), Some(0), "pulled without credentials");
    // With a credentials file: pulled; the password is never printed.
    let auth = w.dir.path().join("auth.json");
    std::fs::write(
        &auth,
        r#"{"auths":{"127.0.0.1:5443":{"username":"ci","password":"pull-pass-7d2f"}}}"#,
    )
    .expect("auth");
    let o = pull(
        &w,
        &[
            "--ca-file",
            &ca_arg,
            "--credentials",
            &auth.to_string_lossy(),
            image,
        ],
    );
    let v = pulled(&o);
    assert_eq!(v["image"]["name"], image);
    assert!(!stdout(&o).contains("pull-pass") && !stderr(&o).contains("pull-pass"));
    // A wrong password: refused, and not echoed either.
    std::fs::write(
        &auth,
        r#"{"auths":{"127.0.0.1:5443":{"username":"ci","password":"wrong-pass-0000"}}}"#,
    )
    .expect("auth");
    let o = pull(
        &w,
        &[
            "--ca-file",
            &ca_arg,
            "--credentials",
            &auth.to_string_lossy(),
            "--name",
            "again:1",
            image,
        ],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(!stderr(&o).contains("wrong-pass"), "{}", stderr(&o));
}

#[test]
fn a_pinned_policy_pulls_on_first_use_and_a_moved_tag_changes_nothing() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let reg = start_registry(&w, 5000, None, None);
    let la = w.dir.path().join("a");
    let dm = tiny(&la, "1", "first\n", false);
    let digest = dm["digest"].as_str().expect("digest").to_owned();
    push_plain(&w, &reg, &la, "runner:1");

    // A trusted group must pin: a bare tag is refused by `policy check`.
    let bare = w.policy(
        "version = 1\n[images]\ninsecure = [\"127.0.0.1:5000\"]\n[groups.default]\ntrust = \"trusted\"\nrootfs = { image = \"127.0.0.1:5000/t/runner:1\" }\n",
    );
    let o = w
        .cmd()
        .args(["policy", "check"])
        .arg(&bare)
        .output()
        .expect("check");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("has no digest"), "{}", stderr(&o));

    // Pinned: the first job pulls it (nothing was pulled by hand) and runs in it.
    let policy = w.policy(&format!(
        "version = 1\n[images]\ninsecure = [\"127.0.0.1:5000\"]\n[groups.default]\ntrust = \"trusted\"\nrootfs = {{ image = \"127.0.0.1:5000/t/runner:1@{digest}\" }}\n"
    ));
    let o = w
        .cmd()
        .args(["policy", "check"])
        .arg(&policy)
        .output()
        .expect("check");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let job = |w: &World| run_sh(w, &policy, "read m < /marker; echo \"$m\"");
    let o = job(&w);
    assert_eq!(stdout(&o).trim(), "first", "{}", stderr(&o));

    // The tag moves to other content: the pinned policy still runs what it pinned.
    let lb = w.dir.path().join("b");
    let moved = tiny(&lb, "1", "moved\n", false);
    assert_ne!(moved["digest"], dm["digest"]);
    push_plain(&w, &reg, &lb, "runner:1");
    let o = job(&w);
    assert_eq!(stdout(&o).trim(), "first", "{}", stderr(&o));

    // An untrusted group with the bare tag: accepted with a warning, and it gets the moved
    // content only when pulled anew (here: a store without it).
    let warned = w.policy(
        "version = 1\n[images]\ninsecure = [\"127.0.0.1:5000\"]\n[groups.default]\nrootfs = { image = \"127.0.0.1:5000/t/runner:1\" }\n",
    );
    let o = w
        .cmd()
        .args(["policy", "check"])
        .arg(&warned)
        .output()
        .expect("check");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("without a digest"), "{}", stderr(&o));

    // A registry that cannot be reached refuses the job before it exists (as a missing
    // image does: exit 2), nothing runs.
    let gone = w.policy(
        "version = 1\n[images]\ninsecure = [\"127.0.0.1:5999\"]\n[groups.default]\nrootfs = { image = \"127.0.0.1:5999/t/none:1\" }\n",
    );
    let o = run_sh(&w, &gone, "echo ran");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stdout(&o).contains("ran"));
    assert!(
        stderr(&o).contains("pulling the group's image"),
        "{}",
        stderr(&o)
    );
    w.assert_clean();
}

/// Signs `digest` for `docker_ref` with the openssl key `key` and pushes the cosign signature
/// manifest (tag `sha256-<hex>.sig`) next to the image.
fn push_signature(w: &World, key: &Path, repo: &str, digest: &str) {
    let dir = w.dir.path().join(format!("sig-{}", &digest[7..19]));
    new_layout(&dir);
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    std::fs::write(dir.join("payload.json"), &payload).expect("payload");
    let o = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg("-out")
        .arg(dir.join("sig.der"))
        .arg(dir.join("payload.json"))
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", stderr(&o));
    let sig = std::fs::read(dir.join("sig.der")).expect("sig");
    let o = std::process::Command::new("base64")
        .args(["-w0"])
        .arg(dir.join("sig.der"))
        .output()
        .expect("base64");
    let sig_b64 = String::from_utf8(o.stdout).expect("b64");
    assert!(!sig.is_empty());
    let mut layer = blob(
        &dir,
        "application/vnd.dev.cosign.simplesigning.v1+json",
        payload.as_bytes(),
    );
    layer["annotations"] = serde_json::json!({ "dev.cosignproject.cosign/signature": sig_b64 });
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [layer["digest"].clone()] },
        "config": {}
    });
    let dc = blob(
        &dir,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dc, "layers": [layer]
    });
    let dm = blob(
        &dir,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    write_index_json(&dir, "sig", &dm);
    let tag = format!("{}.sig", digest.replace(':', "-"));
    push(
        w,
        &dir,
        "sig",
        &format!("{repo}:{tag}"),
        &["--dest-tls-verify=false", "--preserve-digests"],
        false,
    );
}

fn ec_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let run = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run(&[
        "ecparam".as_ref(),
        "-name".as_ref(),
        "prime256v1".as_ref(),
        "-genkey".as_ref(),
        "-noout".as_ref(),
        "-out".as_ref(),
        key.as_os_str(),
    ]);
    run(&[
        "ec".as_ref(),
        "-in".as_ref(),
        key.as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        public.as_os_str(),
    ]);
    (key, public)
}

#[test]
fn signatures_are_verified_with_the_policy_key() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let reg = start_registry(&w, 5000, None, None);
    let plain = ["--dest-tls-verify=false"];
    let (key, public) = ec_key(w.dir.path(), "cosign");
    let (other_key, _) = ec_key(w.dir.path(), "other");
    let repo = format!("{}/t/signed", reg.addr);

    let l = w.dir.path().join("a");
    let dm = tiny(&l, "1", "signed\n", false);
    let digest = dm["digest"].as_str().expect("digest").to_owned();
    push(&w, &l, "1", &format!("{repo}:1"), &plain, false);
    let pub_arg = public.to_string_lossy().into_owned();
    let insecure = ["--insecure-registry", "127.0.0.1:5000"];

    // Not signed yet: refused, nothing visible.
    let o = pull(
        &w,
        &[
            &insecure[..],
            &["--verify-key", &pub_arg, &format!("{repo}:1")],
        ]
        .concat(),
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("no signature found"), "{}", stderr(&o));
    assert!(image_names(&w).is_empty());

    // Signed by another key: refused.
    push_signature(&w, &other_key, &repo, &digest);
    let o = pull(
        &w,
        &[
            &insecure[..],
            &["--verify-key", &pub_arg, &format!("{repo}:1")],
        ]
        .concat(),
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("not the key's"), "{}", stderr(&o));
    assert!(image_names(&w).is_empty());

    // Signed by the key: pulled and recorded as verified.
    push_signature(&w, &key, &repo, &digest);
    let v = pulled(&pull(
        &w,
        &[
            &insecure[..],
            &["--verify-key", &pub_arg, &format!("{repo}:1")],
        ]
        .concat(),
    ));
    assert!(
        v["image"]["verified"]
            .as_str()
            .is_some_and(|s| s.starts_with("cosign key sha256:")),
        "{v}"
    );

    // The policy asks for the key: a job pulls and verifies on first use (a fresh store);
    // keyless verification is refused rather than pretended.
    let w2 = World::new();
    let reg2 = start_registry(&w2, 5000, None, None);
    push(
        &w2,
        &l,
        "1",
        &format!("{}/t/signed:1", reg2.addr),
        &plain,
        false,
    );
    push_signature(&w2, &key, &format!("{}/t/signed", reg2.addr), &digest);
    let policy = w2.policy(&format!(
        "version = 1\n[images]\ninsecure = [\"127.0.0.1:5000\"]\nverify = {{ key = \"{pub_arg}\" }}\n[groups.default]\nrootfs = {{ image = \"127.0.0.1:5000/t/signed:1@{digest}\" }}\n"
    ));
    let o = run_sh(&w2, &policy, "read m < /marker; echo \"$m\"");
    assert_eq!(stdout(&o).trim(), "signed", "{}", stderr(&o));
    let keyless = w2.policy(
        "version = 1\n[images]\nverify = { issuer = \"https://token.actions.githubusercontent.com\", identity = \"x\" }\n[groups.default]\n",
    );
    let o = w2
        .cmd()
        .args(["policy", "check"])
        .arg(&keyless)
        .output()
        .expect("check");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("keyless verification"),
        "{}",
        stderr(&o)
    );
    w2.assert_clean();
}

#[test]
fn ls_shows_use_and_gc_removes_only_unused_pulled_images() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let reg = start_registry(&w, 5000, None, None);
    let l = w.dir.path().join("a");
    tiny(&l, "1", "gc\n", false);
    push(
        &w,
        &l,
        "1",
        &format!("{}/t/gc:1", reg.addr),
        &["--dest-tls-verify=false"],
        false,
    );
    pulled(&pull(
        &w,
        &[
            "--insecure-registry",
            "127.0.0.1:5000",
            "127.0.0.1:5000/t/gc:1",
        ],
    ));
    // The same layout imported under a local name: never removed by age.
    let o = w
        .cmd()
        .args(["image", "import", "--name", "local:1"])
        .arg(&l)
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", stderr(&o));
    let policy =
        w.policy("version = 1\n[groups.default]\nrootfs = { image = \"127.0.0.1:5000/t/gc:1\" }\n");
    let o = run_sh(&w, &policy, "exit 0");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w
        .cmd()
        .args(["image", "ls", "--json"])
        .output()
        .expect("ls");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let pulled_img = v
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "127.0.0.1:5000/t/gc:1"))
        .expect("listed");
    assert!(pulled_img["last_used"].as_u64().is_some(), "{pulled_img}");
    assert!(pulled_img["source"].as_str().is_some(), "{pulled_img}");
    // What it unpacked to is kept (the store's usage counts it).
    assert!(
        pulled_img["unpacked"].as_u64().is_some_and(|u| u > 100_000),
        "{pulled_img}"
    );
    let o = w.cmd().args(["image", "ls"]).output().expect("ls");
    assert!(
        stdout(&o).contains("LAST USED") && stdout(&o).contains("UNPACKED"),
        "{}",
        stdout(&o)
    );

    // Used just now: a 1h bound keeps it.
    let o = w
        .cmd()
        .args(["image", "gc", "--json", "--unused-for", "1h"])
        .output()
        .expect("gc");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r["images"], serde_json::json!([]), "{r}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let o = w
        .cmd()
        .args(["image", "gc", "--json", "--dry-run", "--unused-for", "1s"])
        .output()
        .expect("gc");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        r["images"],
        serde_json::json!(["127.0.0.1:5000/t/gc:1"]),
        "{r}"
    );
    assert_eq!(image_names(&w).len(), 2, "a dry run removed something");
    let o = w
        .cmd()
        .args(["image", "gc", "--json", "--unused-for", "1s"])
        .output()
        .expect("gc");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(image_names(&w), ["local:1"]);
    // The imported image still runs (its blobs and rootfs were kept).
    let local = w.policy("version = 1\n[groups.default]\nrootfs = { image = \"local:1\" }\n");
    let o = run_sh(&w, &local, "read m < /marker; echo \"$m\"");
    assert_eq!(stdout(&o).trim(), "gc", "{}", stderr(&o));
    w.assert_clean();
}

/// A job names its images (`container:`, services, a group's image): what one image may take
/// of the host's disk is bounded (`[images] max_size`, `--max-size`). An image whose blobs
/// are declared larger is refused before anything is fetched; a small layer that unpacks to
/// more (a gzip bomb) is refused while it unpacks, and nothing of either is left: no image, no
/// root filesystem, no staging directory.
#[test]
fn an_image_larger_than_max_size_is_refused_and_leaves_nothing() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let reg = start_registry(&w, 5000, None, None);
    let insecure = ["--insecure-registry", "127.0.0.1:5000"];
    let store_is_empty = |w: &World| {
        assert!(image_names(w).is_empty(), "{:?}", image_names(w));
        for d in ["images/rootfs", "images/tmp"] {
            let n = std::fs::read_dir(w.data().join(d)).map_or(0, |r| r.count());
            assert_eq!(n, 0, "{d} is not empty");
        }
    };

    // Pushes a one-layer image `t/NAME:1` and pulls it with `--max-size MAX`.
    let publish_and_pull = |name: &str, layer: Vec<u8>, max: &str| {
        let layout = w.dir.path().join(name);
        new_layout(&layout);
        let dm = write_manifest(&layout, "amd64", &[(GZ, layer)]);
        write_index_json(&layout, "1", &dm);
        push_plain(&w, &reg, &layout, &format!("{name}:1"));
        let reference = format!("127.0.0.1:5000/t/{name}:1");
        pull(
            &w,
            &[&insecure[..], &["--max-size", max, &reference]].concat(),
        )
    };

    // The bomb: 8 MiB of zeros in one file, a few kB compressed.
    let bomb = gzip(&tar_of(|t| {
        add_file(t, "zeros", &vec![0u8; 8 << 20], 0o644)
    }));
    assert!(bomb.len() < 256 << 10, "{} bytes compressed", bomb.len());
    let o = publish_and_pull("bomb", bomb, "4MiB");
    assert_ne!(o.status.code(), Some(0), "the bomb was unpacked");
    assert!(
        stderr(&o).contains("too large") && stderr(&o).contains("unpacks to more than 4194304"),
        "{}",
        stderr(&o)
    );
    store_is_empty(&w);

    // Declared larger than the bound: refused before a blob is fetched.
    let mut noise = vec![0u8; 2 << 20];
    let mut x = 0x9e37_79b9_u32;
    for b in noise.iter_mut() {
        // xorshift: incompressible bytes, so the layer really is 2 MiB on the wire.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let big = gzip(&tar_of(|t| add_file(t, "noise", &noise, 0o644)));
    // The bomb's blobs (within the bound) stay until `airlock image gc`, as any pull's do.
    let count_blobs = |w: &World| {
        std::fs::read_dir(w.data().join("images/blobs/sha256")).map_or(0, |r| r.count())
    };
    let blobs_before = count_blobs(&w);
    let o = publish_and_pull("big", big, "1MiB");
    assert_ne!(o.status.code(), Some(0), "the big image was pulled");
    assert!(stderr(&o).contains("its blobs are"), "{}", stderr(&o));
    store_is_empty(&w);
    assert_eq!(count_blobs(&w), blobs_before, "blobs were fetched");

    // A job that names the bomb gets the policy's bound, and is refused before it runs.
    let policy = w.policy(
        "version = 1\n[images]\ninsecure = [\"127.0.0.1:5000\"]\nmax_size = \"4MiB\"\n[groups.default]\nrootfs = { image = \"127.0.0.1:5000/t/bomb:1\" }\nrequire_digest = false\n",
    );
    let o = run_sh(&w, &policy, "echo ran");
    assert_ne!(o.status.code(), Some(0));
    assert!(!stdout(&o).contains("ran"));
    assert!(stderr(&o).contains("too large"), "{}", stderr(&o));
    store_is_empty(&w);
    w.assert_clean();
    drop(reg);
}

/// Bytes the store under `data` takes, weighed from outside (not by its own count): the
/// length of every blob and every file of every unpacked root filesystem.
fn store_bytes(data: &Path) -> u64 {
    use airlock_sandbox::image::tree_bytes;
    tree_bytes(&data.join("images/blobs/sha256")) + tree_bytes(&data.join("images/rootfs"))
}

/// Jobs pull many images, each within `max_size`: the store as a whole stays under
/// `[images] max_store`. Room is made by removing pulled images no job runs on, least
/// recently used first; an image a running job holds is never removed, and when nothing can
/// go the job is refused before it runs, with nothing of its image kept. Real registry, real
/// jobs.
#[test]
fn the_store_stays_under_max_store_and_never_loses_an_image_a_job_runs_on() {
    need_root!();
    need_registry_tools!();
    let w = World::new();
    let reg = start_registry(&w, 5000, None, None);
    for name in ["a", "b", "c"] {
        let layout = w.dir.path().join(name);
        tiny(&layout, "1", &format!("{name}\n"), false);
        push_plain(&w, &reg, &layout, &format!("{name}:1"));
    }
    let policy = |image: &str, max_store: u64| {
        w.policy(&format!(
            "version = 1\n[images]\ninsecure = [\"127.0.0.1:5000\"]\nmax_size = \"4MiB\"\nmax_store = \"{max_store}B\"\n[groups.default]\nrootfs = {{ image = \"127.0.0.1:5000/t/{image}:1\" }}\nrequire_digest = false\n"
        ))
    };
    let marker = "read m < /marker; echo \"$m\"";
    let mib = 1u64 << 20;

    // The first image, with room to spare.
    let o = run_sh(&w, &policy("a", 100 * mib), marker);
    assert_eq!(stdout(&o).trim(), "a", "{}", stderr(&o));
    let one = store_bytes(&w.data());
    assert!(one > mib && one < 4 * mib, "one image takes {one} bytes");

    // The second would pass the bound (its room: 4 MiB of blobs and 4 of tree): the first,
    // no job on it, goes.
    let o = run_sh(&w, &policy("b", one + 8 * mib - 1), marker);
    assert_eq!(stdout(&o).trim(), "b", "{}", stderr(&o));
    assert_eq!(image_names(&w), vec!["127.0.0.1:5000/t/b:1"]);
    assert!(store_bytes(&w.data()) < one + 8 * mib);

    // A job runs on `b`; a third image under a bound that only removing `b` could meet:
    // refused before it runs, `b` kept, nothing of `c` kept.
    let mut running = w
        .cmd()
        .args(["run", "-q", "-p"])
        .arg(policy("b", 100 * mib))
        // (No `sleep` in the image: dash alone. The job spins until it is stopped.)
        .args(["--", "/bin/sh", "-c", "echo up; while :; do :; done"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut up = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(running.stdout.as_mut().expect("stdout")),
        &mut up,
    )
    .expect("read");
    assert_eq!(up.trim(), "up");
    let tight = policy("c", one + 3 * mib / 2);
    let o = run_sh(&w, &tight, "echo ran");
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains("ran"));
    assert!(
        stderr(&o).contains("the image store is full"),
        "{}",
        stderr(&o)
    );
    assert_eq!(image_names(&w), vec!["127.0.0.1:5000/t/b:1"]);
    assert!(
        running.try_wait().expect("wait").is_none(),
        "the job on b ended before the check"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop the job");
    // (Stopped, it is torn down whole: `assert_clean` below.)
    running.wait().expect("wait");

    // The job on `b` has ended: now it can go.
    let o = run_sh(&w, &policy("c", one + 6 * mib), marker);
    assert_eq!(stdout(&o).trim(), "c", "{}", stderr(&o));
    assert_eq!(image_names(&w), vec!["127.0.0.1:5000/t/c:1"]);
    w.assert_clean();
    drop(reg);
}
