//! `airlock image import|ls|rm` and jobs on an image rootfs. The test builds its own OCI image
//! layout from host binaries (dash and its libraries), in two layers, the second with a
//! whiteout and an opaque directory.

mod common;

use std::path::{Path, PathBuf};

use common::oci::*;
use common::*;

/// Builds a two-layer OCI image layout; returns (dir, path of the first layer blob).
fn build_layout(root: &Path) -> (PathBuf, PathBuf) {
    let layout = root.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");

    let l1 = tar_of(|l1| {
        dash_layer(l1);
        add_file(l1, "etc/removed-by-whiteout", b"old\n", 0o644);
        add_file(l1, "opq/old", b"old\n", 0o644);
    });
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

    let d = write_image(
        &layout,
        "tiny:1",
        &[
            ("application/vnd.oci.image.layer.v1.tar", l1),
            ("application/vnd.oci.image.layer.v1.tar+gzip", l2),
        ],
    );
    let l1_path = layout.join("blobs/sha256").join(
        d[0]["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:"),
    );
    (layout, l1_path)
}

/// Writes config, manifest and index of an image of `layers` (media type, blob) into an OCI
/// layout whose `oci-layout` and `blobs/sha256` exist; returns the layers' descriptors.
fn write_image(layout: &Path, name: &str, layers: &[(&str, Vec<u8>)]) -> Vec<serde_json::Value> {
    let dm = write_manifest(layout, "amd64", layers);
    write_index_json(layout, name, &dm);
    layers
        .iter()
        .map(|(media, data)| blob(layout, media, data))
        .collect()
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

/// A directory outside every image root, with a file and a directory holding a file: what a
/// hostile layer would try to delete, replace or link to.
struct Victim {
    dir: PathBuf,
}

impl Victim {
    fn new(w: &World, name: &str) -> Self {
        let dir = w.dir.path().join(name);
        std::fs::create_dir_all(dir.join("dir")).expect("victim");
        std::fs::create_dir_all(dir.join("sub")).expect("victim");
        std::fs::write(dir.join("file"), "host\n").expect("victim");
        std::fs::write(dir.join("dir/inner"), "host\n").expect("victim");
        std::fs::write(dir.join("sub/keep"), "host\n").expect("victim");
        Victim { dir }
    }

    /// The victim's path as a symlink target: absolute, or relative with enough `..` to climb
    /// out of any image root (`..` stops at `/`).
    fn target(&self, relative: bool) -> String {
        let abs = self.dir.to_string_lossy().into_owned();
        if relative {
            format!("{}{}", "../".repeat(32), abs.trim_start_matches('/'))
        } else {
            abs
        }
    }

    /// Asserts that the victim is exactly as created: nothing removed, replaced, added or
    /// hardlinked.
    fn assert_intact(&self, case: &str) {
        use std::os::unix::fs::MetadataExt;
        for f in ["file", "dir/inner", "sub/keep"] {
            let m = std::fs::symlink_metadata(self.dir.join(f))
                .unwrap_or_else(|e| panic!("{case}: host file {f} is gone: {e}"));
            assert!(m.is_file(), "{case}: host {f} was replaced");
            assert_eq!(
                m.nlink(),
                1,
                "{case}: host {f} was hardlinked into the image"
            );
        }
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .expect("victim")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["dir", "file", "sub"],
            "{case}: the host dir changed"
        );
        for d in ["dir", "sub"] {
            assert_eq!(
                std::fs::read_dir(self.dir.join(d)).expect("victim").count(),
                1,
                "{case}: host {d}/ changed"
            );
        }
    }
}

/// Imports an image of `layers` (uncompressed tars) from a fresh layout dir.
fn import_layers(w: &World, case: &str, layers: Vec<Vec<u8>>) -> std::process::Output {
    let layout = w.dir.path().join(format!("layout-{case}"));
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let layers: Vec<_> = layers
        .into_iter()
        .map(|l| ("application/vnd.oci.image.layer.v1.tar", l))
        .collect();
    write_image(&layout, &format!("{case}:1"), &layers);
    w.cmd()
        .args(["image", "import"])
        .arg(&layout)
        .output()
        .expect("import")
}

/// The import was refused with the layer and entry named, and left no image behind.
fn assert_refused(w: &World, case: &str, o: &std::process::Output, entry: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{case}: not refused: {err}");
    assert!(
        err.contains("layer sha256:") && err.contains("refused") && err.contains(entry),
        "{case}: the refusal does not name the layer and entry {entry:?}: {err}"
    );
    let o = w
        .cmd()
        .args(["image", "ls", "--json"])
        .output()
        .expect("ls");
    assert_eq!(stdout(&o).trim(), "[]", "{case}");
    let rootfs = w.data().join("images/rootfs");
    assert_eq!(
        std::fs::read_dir(&rootfs).map(|rd| rd.count()).unwrap_or(0),
        0,
        "{case}: a refused image left a rootfs"
    );
}

/// The reviewer's repro: layer 1 plants `x -> <host dir>`, layer 2 whites out `x/file` and
/// makes `x/dir` opaque. Neither may touch the host, whether the symlink is absolute or
/// climbs out with `..`, and whether it comes from a lower layer or earlier in the same one.
#[test]
fn whiteouts_never_follow_a_symlink_out_of_the_image() {
    need_root!();
    let w = World::new();
    for relative in [false, true] {
        for same_layer in [false, true] {
            let case = format!("wh-rel{}-same{}", relative as u8, same_layer as u8);
            let v = Victim::new(&w, &format!("victim-{case}"));
            let plant = |t: &mut tar::Builder<Vec<u8>>| add_link(t, "x", &v.target(relative));
            let hit = |t: &mut tar::Builder<Vec<u8>>| {
                add_file(t, "x/.wh.file", b"", 0o644);
                add_file(t, "x/dir/.wh..wh..opq", b"", 0o644);
            };
            let layers = if same_layer {
                vec![
                    tar_of(|t| add_dir(t, "etc")),
                    tar_of(|t| {
                        plant(t);
                        hit(t);
                    }),
                ]
            } else {
                vec![tar_of(plant), tar_of(hit)]
            };
            let o = import_layers(&w, &case, layers);
            v.assert_intact(&case);
            assert_refused(&w, &case, &o, "x/.wh.file");
        }
    }
}

/// A later layer's file, directory or symlink at `x/NAME` where `x` is a symlink out of the
/// image: nothing outside may be replaced (the old dir<->file replacement removed the host's
/// `sub/` or `file`) or created.
#[test]
fn replacing_an_entry_never_follows_a_symlink_out_of_the_image() {
    need_root!();
    let w = World::new();
    type Entry = fn(&mut tar::Builder<Vec<u8>>);
    let cases: [(&str, &str, Entry); 5] = [
        ("file-over-dir", "x/sub", |t| {
            add_file(t, "x/sub", b"img\n", 0o644)
        }),
        ("dir-over-file", "x/file", |t| add_dir(t, "x/file")),
        ("new-file", "x/new", |t| {
            add_file(t, "x/new", b"img\n", 0o644)
        }),
        ("new-symlink", "x/new", |t| {
            add_link(t, "x/new", "/etc/passwd")
        }),
        ("deep-new-dir", "x/sub/deeper", |t| {
            add_dir(t, "x/sub/deeper")
        }),
    ];
    for relative in [false, true] {
        for (name, entry, add) in cases {
            let case = format!("{name}-rel{}", relative as u8);
            let v = Victim::new(&w, &format!("victim-{case}"));
            let layers = vec![
                tar_of(|t| add_link(t, "x", &v.target(relative))),
                tar_of(add),
            ];
            let o = import_layers(&w, &case, layers);
            v.assert_intact(&case);
            assert_refused(&w, &case, &o, entry);
        }
    }
}

/// A hardlink may neither be made at a path through a symlink out of the image nor link to a
/// file outside it, however its target is spelled.
#[test]
fn a_hardlink_never_leaves_the_image() {
    need_root!();
    let w = World::new();
    let v = Victim::new(&w, "victim-hardlink");
    let abs = format!("{}/file", v.dir.display());
    let climb = format!("{}/file", v.target(true));
    let cases: [(&str, &str, String); 5] = [
        // The link's own path goes through the symlink, over the host's `sub/` directory.
        ("link-path", "x/sub", "etc/hostname".into()),
        // Its target goes through the symlink.
        ("target-via-symlink", "h", "x/file".into()),
        // Its target climbs out with `..`.
        ("target-with-dotdot", "h", climb),
        // An absolute target is a path in the image, where nothing of that name exists.
        ("target-absolute", "h", abs),
        ("target-missing", "h", "etc/nope".into()),
    ];
    for (case, entry, target) in cases {
        let layers = vec![
            tar_of(|t| {
                add_dir(t, "etc");
                add_file(t, "etc/hostname", b"img\n", 0o644);
                add_link(t, "x", &v.target(false));
            }),
            tar_of(|t| add_hardlink(t, entry, &target)),
        ];
        let o = import_layers(&w, case, layers);
        v.assert_intact(case);
        assert_refused(&w, case, &o, entry);
    }
}

/// Hardlinks resolve in the image: `/bin/sh` means the image's, a hardlink replaces a lower
/// layer's file, and a hardlink to a symlink links the symlink, not the host file it names.
/// Whiteouts and opaque dirs keep working on real directories.
#[test]
fn hardlinks_and_whiteouts_resolve_inside_the_image() {
    need_root!();
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    let layers = vec![
        tar_of(|t| {
            add_dir(t, "bin");
            add_dir(t, "etc");
            add_dir(t, "opq");
            add_file(t, "bin/sh", b"#!sh\n", 0o755);
            add_file(t, "etc/old", b"old\n", 0o644);
            add_file(t, "etc/gone", b"old\n", 0o644);
            add_file(t, "opq/old", b"old\n", 0o644);
            add_link(t, "etc/pw", "/etc/passwd");
        }),
        tar_of(|t| {
            add_hardlink(t, "bin/sh-abs", "/bin/sh");
            add_hardlink(t, "etc/old", "bin/sh");
            add_hardlink(t, "etc/pw-link", "etc/pw");
            add_file(t, "etc/.wh.gone", b"", 0o644);
            add_file(t, "opq/new", b"new\n", 0o644);
            add_file(t, "opq/.wh..wh..opq", b"", 0o644);
        }),
    ];
    let o = import_layers(&w, "links", layers);
    assert!(o.status.success(), "{}", stderr(&o));
    let rootfs = std::fs::read_dir(w.data().join("images/rootfs"))
        .expect("rootfs")
        .flatten()
        .next()
        .expect("one rootfs")
        .path();
    let ino = |p: &str| {
        std::fs::symlink_metadata(rootfs.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .ino()
    };
    assert_eq!(ino("bin/sh-abs"), ino("bin/sh"));
    assert_eq!(ino("etc/old"), ino("bin/sh"));
    assert_eq!(ino("etc/pw-link"), ino("etc/pw"));
    assert_eq!(
        std::fs::read_link(rootfs.join("etc/pw-link")).expect("symlink"),
        Path::new("/etc/passwd")
    );
    assert!(!rootfs.join("etc/gone").exists());
    let mut opq: Vec<_> = std::fs::read_dir(rootfs.join("opq"))
        .expect("opq")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    opq.sort();
    assert_eq!(
        opq,
        ["new"],
        "the opaque dir keeps what its own layer wrote"
    );
}

/// The image's `etc/passwd` and `etc/group` are read at job start to add the job user; as
/// symlinks to host files (absolute, or climbing out with `..`) they must be resolved inside
/// the image, and the host files must not reach the job.
#[test]
fn an_image_symlink_does_not_bring_host_files_into_the_job() {
    need_root!();
    let w = World::new();
    let secret = w.dir.path().join("host-secret");
    std::fs::write(&secret, "host-secret-line:x:4242:4242::/:/bin/sh\n").expect("secret");
    let abs = secret.to_string_lossy().into_owned();
    let climb = format!("{}{}", "../".repeat(32), abs.trim_start_matches('/'));
    let layers = vec![
        tar_of(dash_layer),
        tar_of(|t| {
            add_link(t, "etc/passwd", &abs);
            add_link(t, "etc/group", &climb);
        }),
    ];
    let o = import_layers(&w, "leak", layers);
    assert!(o.status.success(), "{}", stderr(&o));
    let p = w.policy("version = 1\n[groups.default]\nrootfs = { image = \"leak:1\" }\n");
    let script = "while read l; do echo \"passwd=$l\"; done < /etc/passwd
while read l; do echo \"group=$l\"; done < /etc/group";
    let mut c = w.cmd();
    c.args(["run", "-p"])
        .arg(&p)
        .args(["--", "/bin/sh", "-c", script]);
    let o = c.output().expect("run");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(
        !out.contains("host-secret"),
        "a host file reached the job: {out}"
    );
    assert!(out.contains("passwd=runner:x:1001:1001"), "{out}");
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
