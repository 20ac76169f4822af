//! `airlock image import|ls|rm` and jobs on an image rootfs. The test builds its own OCI image
//! layout from host binaries (dash and its libraries), in two layers, the second with a
//! whiteout and an opaque directory.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use sha2::{Digest, Sha256};

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn add_file(t: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    t.append_data(&mut h, path, data).expect("append");
}

fn add_dir(t: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Directory);
    t.append_data(&mut h, path, &[][..]).expect("dir");
}

fn add_link(t: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Symlink);
    t.append_link(&mut h, path, target).expect("link");
}

/// Writes a blob into the layout; returns its descriptor JSON.
fn blob(layout: &Path, media: &str, data: &[u8]) -> serde_json::Value {
    let h = hex(data);
    std::fs::write(layout.join("blobs/sha256").join(&h), data).expect("blob");
    serde_json::json!({ "mediaType": media, "digest": format!("sha256:{h}"), "size": data.len() })
}

/// Builds a two-layer OCI image layout; returns (dir, path of the first layer blob).
fn build_layout(root: &Path) -> (PathBuf, PathBuf) {
    let layout = root.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");

    let mut l1 = tar::Builder::new(Vec::new());
    for d in [
        "bin",
        "etc",
        "lib",
        "lib/x86_64-linux-gnu",
        "lib64",
        "opq",
        "tmp",
    ] {
        add_dir(&mut l1, d);
    }
    let sh = std::fs::read("/usr/bin/dash").expect("dash");
    add_file(&mut l1, "bin/sh", &sh, 0o755);
    for (src, dst) in [
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libc.so.6",
        ),
        ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
    ] {
        let data = std::fs::read(std::fs::canonicalize(src).expect("lib")).expect("read lib");
        add_file(&mut l1, dst, &data, 0o755);
    }
    add_file(&mut l1, "etc/removed-by-whiteout", b"old\n", 0o644);
    add_file(&mut l1, "opq/old", b"old\n", 0o644);
    add_link(&mut l1, "bin/dash", "sh");
    let l1 = l1.into_inner().expect("tar");
    // The second layer is gzip-compressed, as registries ship them.
    let mut l2 = tar::Builder::new(Vec::new());
    add_file(&mut l2, "etc/.wh.removed-by-whiteout", b"", 0o644);
    add_file(&mut l2, "opq/.wh..wh..opq", b"", 0o644);
    add_file(&mut l2, "opq/new", b"new\n", 0o644);
    add_file(&mut l2, "layer2-marker", b"from-layer-2\n", 0o644);
    let l2 = l2.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &l2).expect("gz");
    let l2 = gz.finish().expect("gz");

    let d1 = blob(&layout, "application/vnd.oci.image.layer.v1.tar", &l1);
    let d2 = blob(&layout, "application/vnd.oci.image.layer.v1.tar+gzip", &l2);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", hex(&l1)), format!("sha256:{}", hex(&l2))] },
        "config": {}
    });
    let dc = blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dc, "layers": [d1.clone(), d2]
    });
    let mut dm = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    dm["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": "tiny:1" });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [dm] });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    let l1_path = layout.join("blobs/sha256").join(
        d1["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:"),
    );
    (layout, l1_path)
}

#[test]
fn import_run_and_remove_an_image() {
    need_root!();
    let w = World::new();
    let (layout, _) = build_layout(w.dir.path());
    let o = w
        .cmd()
        .args(["image", "import"])
        .arg(&layout)
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("imported tiny:1 sha256:"),
        "{}",
        stdout(&o)
    );

    let o = w
        .cmd()
        .args(["image", "ls", "--json"])
        .output()
        .expect("ls");
    let ls: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(ls[0]["name"], "tiny:1");
    assert_eq!(ls[0]["layers"], 2);

    let p = w.policy("version = 1\n[groups.default]\nrootfs = { image = \"tiny:1\" }\n");
    let script = r#"
for f in /etc/removed-by-whiteout /usr/bin/python3 /usr/bin/env /root /home/runner; do
  [ -e "$f" ] && echo "exists=$f"
done
for f in /opq/*; do echo "opq=$f"; done
read m < /layer2-marker; echo "marker=$m"
echo "me=$(id -u 2>/dev/null)"
while read l; do case "$l" in runner:*) echo "passwd=$l";; esac; done < /etc/passwd
echo hello > /tmp/w && echo writable
"#;
    let mut c = w.cmd();
    c.args(["run", "-p"])
        .arg(&p)
        .args(["--", "/bin/sh", "-c", script]);
    let o = c.output().expect("run");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("exists=/home/runner"), "{out}");
    assert!(
        !out.contains("exists=/etc/removed-by-whiteout"),
        "whiteout not applied: {out}"
    );
    assert!(
        !out.contains("exists=/usr/bin"),
        "host /usr leaked into an image job: {out}"
    );
    assert!(!out.contains("exists=/root"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("opq="))
            .collect::<Vec<_>>(),
        vec!["opq=/opq/new"],
        "opaque whiteout not applied: {out}"
    );
    assert!(out.contains("marker=from-layer-2"), "{out}");
    assert!(out.contains("passwd=runner:x:1001:1001"), "{out}");
    assert!(out.contains("writable"), "{out}");
    w.assert_clean();

    // The same image from an archive is stored once (same digest).
    let tarball = w.dir.path().join("tiny.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    let o = w
        .cmd()
        .args(["image", "import", "--name", "tiny:copy"])
        .arg(&tarball)
        .output()
        .expect("import tar");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w
        .cmd()
        .args(["image", "rm", "tiny:1"])
        .output()
        .expect("rm");
    assert!(o.status.success(), "{}", stderr(&o));
    let rootfs_dirs = std::fs::read_dir(w.data().join("images/rootfs"))
        .expect("rootfs")
        .count();
    assert_eq!(rootfs_dirs, 1, "rootfs still used by tiny:copy must stay");
    let o = w
        .cmd()
        .args(["image", "rm", "tiny:copy"])
        .output()
        .expect("rm");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(w.data().join("images/rootfs"))
            .expect("rootfs")
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(w.data().join("images/blobs/sha256"))
            .expect("blobs")
            .count(),
        0
    );
    let o = w.cmd().args(["image", "ls"]).output().expect("ls");
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "only the header: {}",
        stdout(&o)
    );
}

#[test]
fn a_tampered_blob_is_refused() {
    need_root!();
    let w = World::new();
    let (layout, l1) = build_layout(w.dir.path());
    let mut data = std::fs::read(&l1).expect("read");
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&l1, data).expect("write");
    let o = w
        .cmd()
        .args(["image", "import"])
        .arg(&layout)
        .output()
        .expect("import");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("failed verification"), "{}", stderr(&o));
    let o = w
        .cmd()
        .args(["image", "ls", "--json"])
        .output()
        .expect("ls");
    assert_eq!(stdout(&o).trim(), "[]");
}

#[test]
fn a_job_whose_image_is_missing_does_not_start() {
    need_root!();
    let w = World::new();
    let p = w.policy("version = 1\n[groups.default]\nrootfs = { image = \"nope:1\" }\n");
    let o = w.run(&["-p", &p.to_string_lossy()], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no image \"nope:1\""), "{}", stderr(&o));
    w.assert_clean();
}

#[test]
fn a_job_whose_image_rootfs_is_gone_does_not_start() {
    need_root!();
    let w = World::new();
    let (layout, _) = build_layout(w.dir.path());
    let o = w
        .cmd()
        .args(["image", "import"])
        .arg(&layout)
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", stderr(&o));
    // The store loses the unpacked rootfs (deleted by hand); the image is still listed.
    let rootfs: Vec<PathBuf> = std::fs::read_dir(w.data().join("images/rootfs"))
        .expect("rootfs")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(rootfs.len(), 1, "{rootfs:?}");
    std::fs::remove_dir_all(&rootfs[0]).expect("remove rootfs");

    let p = w.policy("version = 1\n[groups.default]\nrootfs = { image = \"tiny:1\" }\n");
    let o = w.run(
        &["-p", &p.to_string_lossy()],
        &["/bin/sh", "-c", "echo should-not-run"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(!stdout(&o).contains("should-not-run"));
    assert!(
        err.contains("image rootfs cannot be applied")
            && err.contains(&rootfs[0].to_string_lossy().into_owned())
            && err.contains("incomplete"),
        "the error names the protection and the missing rootfs: {err}"
    );
    let id = job_id(&o).expect("job id in the error");
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
    w.assert_clean();
}
