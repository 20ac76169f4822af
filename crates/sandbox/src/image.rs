//! The content-addressed image store: `airlock image import|ls|rm`.
//!
//! ```text
//! STORE/blobs/sha256/<hex>     every blob, verified against its digest and size
//! STORE/rootfs/<hex>/          the unpacked root filesystem of manifest <hex> (read-only lower)
//! STORE/refs/<name>.json       name → manifest digest
//! ```
//! Import reads an OCI image layout (a directory, or a tar / tar.gz of one), checks every
//! blob's SHA-256 and size against the descriptor that names it, and unpacks the layers in
//! order, applying whiteouts (`.wh.NAME` deletes NAME, `.wh..wh..opq` empties a directory of
//! what lower layers put there). Unpacking goes through the `tar` crate's `unpack_in`, which
//! refuses entries that would land outside the target (`..`, absolute paths, symlinked
//! parents).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// I/O on a path failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The input is not a valid OCI image layout.
    #[error("{path} is not a valid OCI image layout: {message}")]
    Layout {
        /// The input.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A blob does not match its descriptor.
    #[error("blob {digest} failed verification: {message}")]
    Verify {
        /// The digest the descriptor names.
        digest: String,
        /// What differs.
        message: String,
    },
    /// No image of that name or digest is in the store.
    #[error("no image {0:?} in the store; see `airlock image ls`")]
    NotFound(String),
    /// A name is not acceptable.
    #[error("invalid image name {0:?}: use [A-Za-z0-9._-] and an optional :tag")]
    BadName(String),
    /// A layer uses a format airlock cannot unpack.
    #[error("layer {digest}: {message}")]
    Unsupported {
        /// The layer.
        digest: String,
        /// Why.
        message: String,
    },
}

fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.into();
    move |source| ImageError::Io { what, path, source }
}

/// One image in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRef {
    /// Its name (`name:tag`).
    pub name: String,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// Total size of its layers (compressed), in bytes.
    pub size: u64,
    /// Number of layers.
    pub layers: usize,
    /// Unix time of import.
    pub imported: u64,
}

/// The image store rooted at a directory.
pub struct ImageStore {
    root: PathBuf,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
        && n.matches(':').count() <= 1
}

fn normalize_name(n: &str) -> String {
    if n.contains(':') {
        n.to_owned()
    } else {
        format!("{n}:latest")
    }
}

impl ImageStore {
    /// The store at `root` (created on first import).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }
    /// The unpacked root filesystem of a manifest digest (`sha256:<hex>`).
    pub fn rootfs_dir(&self, digest: &str) -> PathBuf {
        self.root
            .join("rootfs")
            .join(digest.trim_start_matches("sha256:"))
    }
    fn ref_path(&self, name: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{}.json", name.replace(':', "@")))
    }

    /// Imports an OCI image layout directory or archive under `name` (default: the layout's
    /// `org.opencontainers.image.ref.name` annotation, else the file name).
    pub fn import(&self, src: &Path, name: Option<&str>) -> Result<ImageRef, ImageError> {
        let r = self.import_inner(src, name);
        if r.is_err() {
            // Blobs verified before the failure belong to no image: drop them.
            let _ = self.gc_blobs();
        }
        r
    }

    fn import_inner(&self, src: &Path, name: Option<&str>) -> Result<ImageRef, ImageError> {
        let meta = std::fs::metadata(src).map_err(io("reading", src))?;
        let tmp_root = self.root.join("tmp");
        std::fs::create_dir_all(&tmp_root).map_err(io("creating", &tmp_root))?;
        let staging = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&tmp_root)
            .map_err(io("creating staging dir in", &tmp_root))?;
        let layout = if meta.is_dir() {
            src.to_owned()
        } else {
            let dir = staging.path().join("layout");
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            let mut a = tar::Archive::new(decompressed(src)?);
            a.unpack(&dir).map_err(io("unpacking archive", src))?;
            dir
        };
        let bad = |m: &str| ImageError::Layout {
            path: src.to_owned(),
            message: m.to_owned(),
        };
        let oci_layout = std::fs::read_to_string(layout.join("oci-layout"))
            .map_err(|_| bad("missing oci-layout file"))?;
        if !oci_layout.contains("imageLayoutVersion") {
            return Err(bad("oci-layout has no imageLayoutVersion"));
        }
        let index: ImageIndex = serde_json::from_slice(
            &std::fs::read(layout.join("index.json")).map_err(|_| bad("missing index.json"))?,
        )
        .map_err(|e| bad(&format!("index.json: {e}")))?;
        let desc = pick_manifest(&layout, &index, src)?;
        let annotated = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name").cloned());
        let name = match name.map(str::to_owned).or(annotated) {
            Some(n) => n,
            None => src
                .file_name()
                .map(|f| {
                    f.to_string_lossy()
                        .split('.')
                        .next()
                        .unwrap_or("image")
                        .to_owned()
                })
                .unwrap_or_else(|| "image".into()),
        };
        if !valid_name(&name) {
            return Err(ImageError::BadName(name));
        }
        let name = normalize_name(&name);

        let manifest_bytes = self.take_blob(&layout, &desc)?;
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| bad(&format!("manifest {}: {e}", desc.digest())))?;
        self.take_blob(&layout, manifest.config())?;
        let mut size = 0;
        for l in manifest.layers() {
            self.take_blob(&layout, l)?;
            size += l.size();
        }
        let digest = desc.digest().to_string();
        let rootfs = self.rootfs_dir(&digest);
        if !rootfs.exists() {
            let unpack = staging.path().join("rootfs");
            std::fs::create_dir_all(&unpack).map_err(io("creating", &unpack))?;
            for l in manifest.layers() {
                let hex = hex_of(l)?;
                apply_layer(&self.blob_path(&hex), &unpack, l.digest().as_ref())?;
            }
            let parent = self.root.join("rootfs");
            std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
            std::fs::rename(&unpack, &rootfs).map_err(io("storing", &rootfs))?;
        }
        let r = ImageRef {
            name: name.clone(),
            digest,
            size,
            layers: manifest.layers().len(),
            imported: crate::state::now(),
        };
        let rp = self.ref_path(&name);
        std::fs::create_dir_all(self.root.join("refs")).map_err(io("creating", &self.root))?;
        let data = serde_json::to_vec_pretty(&r).map_err(|e| bad(&e.to_string()))?;
        std::fs::write(&rp, data).map_err(io("writing", &rp))?;
        Ok(r)
    }

    /// Copies a blob into the store, verifying its size and SHA-256; returns its bytes if it
    /// is small (manifests), else an empty vector.
    fn take_blob(&self, layout: &Path, d: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let hex = hex_of(d)?;
        let src = layout.join("blobs/sha256").join(&hex);
        let mut f = File::open(&src).map_err(io("opening blob", &src))?;
        let dst = self.blob_path(&hex);
        let parent = self.root.join("blobs/sha256");
        std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&parent).map_err(io("creating temp in", &parent))?;
        let mut hasher = Sha256::new();
        let mut small = Vec::new();
        let mut n: u64 = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = f.read(&mut buf).map_err(io("reading", &src))?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            std::io::Write::write_all(&mut tmp, &buf[..k]).map_err(io("writing", &dst))?;
            if n < (4 << 20) {
                small.extend_from_slice(&buf[..k]);
            }
            n += k as u64;
        }
        let got = hex_string(&hasher.finalize());
        if got != hex {
            return Err(ImageError::Verify {
                digest: d.digest().to_string(),
                message: format!("content hashes to sha256:{got}"),
            });
        }
        if n != d.size() {
            return Err(ImageError::Verify {
                digest: d.digest().to_string(),
                message: format!("size is {n}, descriptor says {}", d.size()),
            });
        }
        tmp.persist(&dst).map_err(|e| ImageError::Io {
            what: "storing blob",
            path: dst.clone(),
            source: e.error,
        })?;
        Ok(small)
    }

    /// Every image in the store.
    pub fn list(&self) -> Result<Vec<ImageRef>, ImageError> {
        let dir = self.root.join("refs");
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("reading", &dir)(e)),
        };
        for e in rd.flatten() {
            let p = e.path();
            let data = std::fs::read(&p).map_err(io("reading", &p))?;
            if let Ok(r) = serde_json::from_slice::<ImageRef>(&data) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Finds an image by `name[:tag]`, `sha256:<hex>` or a unique digest prefix.
    pub fn resolve(&self, reference: &str) -> Result<ImageRef, ImageError> {
        let all = self.list()?;
        let want = normalize_name(reference);
        if let Some(r) = all.iter().find(|r| r.name == want || r.name == reference) {
            return Ok(r.clone());
        }
        let hex = reference.trim_start_matches("sha256:");
        let m: Vec<_> = all
            .iter()
            .filter(|r| hex.len() >= 12 && r.digest.trim_start_matches("sha256:").starts_with(hex))
            .collect();
        match m.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(ImageError::NotFound(reference.to_owned())),
        }
    }

    /// Removes an image's name; its blobs and rootfs go when no other name uses them.
    pub fn remove(&self, reference: &str) -> Result<ImageRef, ImageError> {
        let r = self.resolve(reference)?;
        let rp = self.ref_path(&r.name);
        std::fs::remove_file(&rp).map_err(io("removing", &rp))?;
        let still_used = self.list()?.iter().any(|o| o.digest == r.digest);
        if !still_used {
            let dir = self.rootfs_dir(&r.digest);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
            }
            self.gc_blobs()?;
        }
        Ok(r)
    }

    /// Removes blobs no remaining image refers to.
    fn gc_blobs(&self) -> Result<(), ImageError> {
        let mut keep = HashSet::new();
        for r in self.list()? {
            let hex = r.digest.trim_start_matches("sha256:").to_owned();
            let p = self.blob_path(&hex);
            if let Ok(data) = std::fs::read(&p) {
                if let Ok(m) = serde_json::from_slice::<ImageManifest>(&data) {
                    keep.insert(m.config().digest().digest().to_owned());
                    keep.extend(m.layers().iter().map(|l| l.digest().digest().to_owned()));
                }
            }
            keep.insert(hex);
        }
        let dir = self.root.join("blobs/sha256");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&n) {
                    std::fs::remove_file(e.path()).map_err(io("removing", e.path()))?;
                }
            }
        }
        Ok(())
    }
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_of(d: &Descriptor) -> Result<String, ImageError> {
    let digest = d.digest();
    if digest.algorithm().as_ref() != "sha256" {
        return Err(ImageError::Verify {
            digest: digest.to_string(),
            message: "only sha256 digests are supported".into(),
        });
    }
    Ok(digest.digest().to_owned())
}

/// Picks the image manifest: the only one, or the linux/amd64 one of a (nested) index.
fn pick_manifest(layout: &Path, index: &ImageIndex, src: &Path) -> Result<Descriptor, ImageError> {
    let bad = |m: String| ImageError::Layout {
        path: src.to_owned(),
        message: m,
    };
    let ms = index.manifests();
    let linux_amd64 = |d: &&Descriptor| {
        d.platform().as_ref().is_none_or(|p| {
            p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
        })
    };
    let d = ms
        .iter()
        .find(linux_amd64)
        .ok_or_else(|| bad("index.json lists no linux/amd64 manifest".into()))?;
    let is_index = d.media_type().to_string().contains("index")
        || d.media_type().to_string().contains("manifest.list");
    if is_index {
        let hex = hex_of(d)?;
        let p = layout.join("blobs/sha256").join(hex);
        let data = std::fs::read(&p).map_err(io("reading", &p))?;
        let got = hex_string(&Sha256::digest(&data));
        if got != d.digest().digest() {
            return Err(ImageError::Verify {
                digest: d.digest().to_string(),
                message: format!("content hashes to sha256:{got}"),
            });
        }
        let nested: ImageIndex =
            serde_json::from_slice(&data).map_err(|e| bad(format!("nested index: {e}")))?;
        return pick_manifest(layout, &nested, src);
    }
    Ok(d.clone())
}

fn decompressed(p: &Path) -> Result<Box<dyn Read>, ImageError> {
    let mut f = File::open(p).map_err(io("opening", p))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io("reading", p))?;
    f.rewind().map_err(io("reading", p))?;
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(BufReader::new(f))))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Err(ImageError::Unsupported {
            digest: p.display().to_string(),
            message: "zstd-compressed layers are not supported yet; re-export with gzip".into(),
        })
    } else {
        Ok(Box::new(BufReader::new(f)))
    }
}

/// A path inside a layer, made relative and checked: no `..`, nothing absolute.
fn clean_rel(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies one layer on top of `root`.
fn apply_layer(blob: &Path, root: &Path, digest: &str) -> Result<(), ImageError> {
    let unsupported = |m: String| ImageError::Unsupported {
        digest: digest.to_owned(),
        message: m,
    };
    let mut a = tar::Archive::new(decompressed(blob)?);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_unpack_xattrs(false);
    a.set_overwrite(true);
    // Opaque dirs are emptied once, before this layer's own entries land in them.
    let mut opaque_done: HashSet<PathBuf> = HashSet::new();
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in a.entries().map_err(io("reading layer", blob))? {
        let mut entry = entry.map_err(io("reading layer", blob))?;
        let path = entry
            .path()
            .map_err(io("reading layer", blob))?
            .into_owned();
        let rel = clean_rel(&path)
            .ok_or_else(|| unsupported(format!("entry {path:?} escapes the root")))?;
        let fname = rel
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if fname == ".wh..wh..opq" {
            if opaque_done.insert(parent.clone()) {
                let dir = root.join(&parent);
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    for e in rd.flatten() {
                        if !written.contains(&parent.join(e.file_name())) {
                            remove_any(&e.path())
                                .map_err(io("applying opaque whiteout in", &dir))?;
                        }
                    }
                }
            }
            continue;
        }
        if let Some(target) = fname.strip_prefix(".wh.") {
            let victim = root.join(&parent).join(target);
            remove_any(&victim).map_err(io("applying whiteout", &victim))?;
            continue;
        }
        // A later layer may replace a directory with a file or the other way round.
        let dest = root.join(&rel);
        if let Ok(m) = std::fs::symlink_metadata(&dest) {
            let etype = entry.header().entry_type();
            if m.is_dir() != etype.is_dir() {
                remove_any(&dest).map_err(io("replacing", &dest))?;
            }
        }
        entry.unpack_in(root).map_err(io("unpacking into", root))?;
        written.insert(rel);
    }
    Ok(())
}
