//! Building OCI images in tests: tar layers from host binaries, blobs, manifests, indexes.

use std::path::Path;

use sha2::{Digest, Sha256};

pub fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h
}

pub fn add_file(t: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
    t.append_data(&mut h, path, data).expect("append");
}

pub fn add_dir(t: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    t.append_data(&mut h, path, &[][..]).expect("dir");
}

pub fn add_hardlink(t: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Link, 0, 0o644);
    t.append_link(&mut h, path, target).expect("hardlink");
}

pub fn add_link(t: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
    t.append_link(&mut h, path, target).expect("link");
}

pub fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    build(&mut t);
    t.into_inner().expect("tar")
}

/// A layer with `/bin/sh` (the host's dash) and the libraries it needs.
pub fn dash_layer(t: &mut tar::Builder<Vec<u8>>) {
    for d in [
        "bin",
        "etc",
        "lib",
        "lib/x86_64-linux-gnu",
        "lib64",
        "opq",
        "tmp",
    ] {
        add_dir(t, d);
    }
    let sh = std::fs::read("/usr/bin/dash").expect("dash");
    add_file(t, "bin/sh", &sh, 0o755);
    for (src, dst) in [
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libc.so.6",
        ),
        ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
    ] {
        let data = std::fs::read(std::fs::canonicalize(src).expect("lib")).expect("read lib");
        add_file(t, dst, &data, 0o755);
    }
    add_link(t, "bin/dash", "sh");
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, data).expect("gz");
    gz.finish().expect("gz")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).expect("zstd")
}

/// Writes a blob into the layout; returns its descriptor JSON.
pub fn blob(layout: &Path, media: &str, data: &[u8]) -> serde_json::Value {
    let h = hex(data);
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("blobs");
    std::fs::write(layout.join("blobs/sha256").join(&h), data).expect("blob");
    serde_json::json!({ "mediaType": media, "digest": format!("sha256:{h}"), "size": data.len() })
}

/// Creates an empty OCI layout directory.
pub fn new_layout(layout: &Path) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
}

/// Writes config and manifest of an image of `layers` (media type, blob) for `arch`;
/// returns the manifest's descriptor (with its platform).
pub fn write_manifest(layout: &Path, arch: &str, layers: &[(&str, Vec<u8>)]) -> serde_json::Value {
    let descs: Vec<_> = layers
        .iter()
        .map(|(media, data)| blob(layout, media, data))
        .collect();
    // diff_ids name the uncompressed layers.
    let diff_ids: Vec<_> = layers
        .iter()
        .map(|(media, data)| {
            let raw = if media.ends_with("+gzip") {
                let mut raw = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut raw)
                    .expect("gunzip");
                raw
            } else if media.ends_with("+zstd") {
                zstd::stream::decode_all(&data[..]).expect("unzstd")
            } else {
                data.clone()
            };
            format!("sha256:{}", hex(&raw))
        })
        .collect();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "config": {}
    });
    let dc = blob(
        layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dc, "layers": descs
    });
    let mut dm = blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    dm["platform"] = serde_json::json!({ "os": "linux", "architecture": arch });
    dm
}

/// Writes the layout's `index.json` naming one image `name` (its manifest descriptor `dm`).
pub fn write_index_json(layout: &Path, name: &str, dm: &serde_json::Value) {
    let mut dm = dm.clone();
    dm["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": name });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [dm] });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
}

/// Writes an image index blob over `manifests` and names it `name` in `index.json` (a
/// multi-platform image).
pub fn write_multi(layout: &Path, name: &str, manifests: &[serde_json::Value]) {
    let idx = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let di = blob(
        layout,
        "application/vnd.oci.image.index.v1+json",
        idx.to_string().as_bytes(),
    );
    let mut di = di;
    di["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": name });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [di] });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
}

/// A layout whose rootfs says Debian 12 with a vulnerable libssl3 (source openssl).
pub fn debian_layout(dir: &Path, name: &str) {
    new_layout(dir);
    let layer = tar_of(|t| {
        add_dir(t, "etc");
        add_file(
            t,
            "etc/os-release",
            b"ID=debian\nVERSION_ID=\"12\"\n",
            0o644,
        );
        for d in ["var", "var/lib", "var/lib/dpkg"] {
            add_dir(t, d);
        }
        add_file(
            t,
            "var/lib/dpkg/status",
            b"Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: 3.0.11-1~deb12u1\n\nPackage: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n",
            0o644,
        );
    });
    let dm = write_manifest(
        dir,
        "amd64",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&layer))],
    );
    write_index_json(dir, name, &dm);
}

/// A layout holding one image `name`: `/bin/sh` (dash), the probe at `/bin/probe` (a small HTTP
/// service and client) and an empty `/data` (the container tests' image).
pub fn probe_image_layout(layout: &Path, name: &str, probe: &[u8]) {
    new_layout(layout);
    let libgcc = std::fs::read(
        std::fs::canonicalize("/lib/x86_64-linux-gnu/libgcc_s.so.1").expect("libgcc"),
    )
    .expect("read libgcc");
    let layer = tar_of(|t| {
        dash_layer(t);
        add_file(t, "bin/probe", probe, 0o755);
        add_file(t, "lib/x86_64-linux-gnu/libgcc_s.so.1", &libgcc, 0o755);
        add_dir(t, "data");
    });
    let dm = write_manifest(
        layout,
        "amd64",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&layer))],
    );
    write_index_json(layout, name, &dm);
}
