//! The content-addressed image store: `airlock image import|ls|rm`.
//!
//! ```text
//! STORE/blobs/sha256/<hex>     every blob, verified against its digest and size
//! STORE/rootfs/<hex>/          the unpacked root filesystem of manifest <hex> (read-only lower)
//! STORE/refs/<name>.json       name → manifest digest (`/` and `:` of registry names encoded)
//! STORE/.lock                  shared while an import or pull writes, exclusive for blob gc
//! ```
//! Pulled images (`airlock image pull`, crate `airlock-registry`) land in the same store: their
//! blobs are written here as they arrive (verified), then [`ImageStore::install`] unpacks the
//! layers exactly as an import does.
//! Import reads an OCI image layout (a directory, or a tar / tar.gz of one), checks every
//! blob's SHA-256 and size against the descriptor that names it, and unpacks the layers in
//! order, applying whiteouts (`.wh.NAME` deletes NAME, `.wh..wh..opq` empties a directory of
//! what lower layers put there).
//!
//! A layer is hostile input, and so is every symlink an earlier layer (or an earlier entry of
//! the same layer) planted in the rootfs. No operation of `apply_layer` leaves the rootfs:
//! an entry path with `..` is refused (a leading `/` is dropped: layer paths are relative to
//! the image root), every directory above an entry is walked component by component with
//! `symlink_metadata` and the layer is refused if one of them is a symlink, the entry's own
//! last component is never followed (replaced, removed or created in place), and a hardlink's
//! target is resolved the same way. See "Images" in docs/sandbox.md.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::DirBuilderExt as _;
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
    #[error("invalid image name {0:?}: use [A-Za-z0-9._-/], an optional registry host[:port]/ and an optional :tag")]
    BadName(String),
    /// An entry of a layer would act outside the image root, or through a symlink.
    #[error("layer {digest}: entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        /// The layer.
        digest: String,
        /// The entry's path as the layer names it.
        entry: PathBuf,
        /// Why.
        reason: String,
    },
    /// A layer uses a format airlock cannot unpack.
    #[error("layer {digest}: {message}")]
    Unsupported {
        /// The layer.
        digest: String,
        /// Why.
        message: String,
    },
    /// The store cannot take one more image: it is at `[images] max_store` (or the disk is
    /// nearly full) and every image left is imported or in use by a job.
    #[error("the image store is full: it holds {usage} bytes, its bound is {max} bytes ([images] max_store; and a tenth of its filesystem, up to 4 GiB, is kept free), and every image left is imported or in use by a job; nothing was added (remove images with `airlock image gc`, or raise `[images] max_store`)")]
    StoreFull {
        /// Bytes the store takes.
        usage: u64,
        /// Its bound.
        max: u64,
    },
    /// The image is larger than the store accepts (`[images] max_size`).
    #[error("the image is too large: {what}; nothing of it was kept (raise `[images] max_size` in the policy if it is expected)")]
    TooLarge {
        /// What passed which bound.
        what: String,
    },
}

/// Default of `[images] max_size`: the most bytes one image may unpack to (and download).
pub const DEFAULT_MAX_SIZE: u64 = 16 << 30;

/// Default of `[images] max_store`: the most bytes the whole store may take of the host's
/// disk (blobs and unpacked root filesystems).
pub const DEFAULT_MAX_STORE: u64 = 64 << 30;

/// What a pull leaves free of the store's filesystem, whatever `max_store` says (a tenth of
/// it, at most [`KEEP_FREE_MAX`]): a host whose disk is smaller than the bound keeps room for
/// airlock's records and the jobs.
const KEEP_FREE_DIVISOR: u64 = 10;
/// See [`KEEP_FREE_DIVISOR`].
const KEEP_FREE_MAX: u64 = 4 << 30;

/// The smallest bound worth pulling under: less, and the store is full.
const MIN_IMAGE: u64 = 1 << 20;

/// A job's hold on an image: a shared lock on `STORE/used/<hex>` for as long as it lives (a
/// process that dies drops it), so that making room in the store never removes an image a
/// job runs on.
#[derive(Debug)]
pub struct InUse {
    _file: File,
}

/// What [`ImageStore::for_new_image`] did to make room.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Room {
    /// Bytes the store takes now.
    pub usage: u64,
    /// Pulled images removed (least recently used first), by name.
    pub evicted: Vec<String>,
}

/// The most entries (files, directories, links) one image may unpack to: a layer of millions
/// of empty files would take the store's inodes, not its bytes.
pub const MAX_ENTRIES: u64 = 2_000_000;

/// What one image's unpacking may still write.
struct Budget {
    bytes: u64,
    entries: u64,
    max_bytes: u64,
    max_entries: u64,
}

impl Budget {
    fn new(max_bytes: u64) -> Self {
        Self {
            bytes: 0,
            entries: 0,
            max_bytes,
            max_entries: MAX_ENTRIES,
        }
    }

    /// Counts one entry of `size` bytes of data; refuses past either bound.
    fn take(&mut self, size: u64) -> Result<(), ImageError> {
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(size);
        if self.entries > self.max_entries {
            return Err(ImageError::TooLarge {
                what: format!("more than {} entries", self.max_entries),
            });
        }
        if self.bytes > self.max_bytes {
            return Err(ImageError::TooLarge {
                what: format!("it unpacks to more than {} bytes", self.max_bytes),
            });
        }
        Ok(())
    }
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
    /// Unix time of import (or pull).
    pub imported: u64,
    /// The registry reference it was pulled from (`None`: imported from a layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How its signature was verified when it was pulled (`cosign key sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// Unix time a job last started on it (from `STORE/used/<hex>`; not stored in the ref).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
    /// Bytes its root filesystem unpacked to (absent for images stored before it was kept:
    /// then measured when the store's usage is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpacked: Option<u64>,
}

/// What `airlock image gc` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Pulled images not used within the bound, by name.
    pub images: Vec<String>,
    /// Blobs no image refers to (and partial downloads).
    pub blobs: usize,
    /// Bytes those blobs held.
    pub bytes: u64,
    /// Unpacked root filesystems no image names, and staging directories of killed runs.
    pub dirs: usize,
}

/// The image store rooted at a directory.
pub struct ImageStore {
    root: PathBuf,
    /// The most bytes one image may unpack to (and a pull download).
    max_size: u64,
}

/// A local name (`tiny:1`) or a registry reference without digest
/// (`registry.example:5000/team/runner:2.330`).
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && !n.starts_with(['.', '/'])
        && !n.ends_with('/')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c))
        && n.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && n.rsplit('/')
            .next()
            .is_some_and(|last| last.matches(':').count() <= 1)
}

/// `name` with `:latest` when its last path component has no tag (`host:5000/x` has none).
fn normalize_name(n: &str) -> String {
    let last = n.rsplit('/').next().unwrap_or(n);
    if last.contains(':') {
        n.to_owned()
    } else {
        format!("{n}:latest")
    }
}

impl ImageStore {
    /// The store at `root` (created on first import).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            max_size: DEFAULT_MAX_SIZE,
        }
    }

    /// The store, accepting images of at most `max_size` bytes (`[images] max_size`): a job
    /// that names an image (its `container:`, its services) must not fill the host's disk
    /// through the store, outside its own disk limit.
    pub fn with_max_size(mut self, max_size: u64) -> Self {
        self.max_size = max_size;
        self
    }

    /// The most bytes one image may take.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
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
        // One file per name, flat: `/` and `:` of registry names are encoded (`%` first, so
        // the encoding cannot collide).
        let file = name
            .replace('%', "%25")
            .replace('/', "%2F")
            .replace(':', "@");
        self.root.join("refs").join(format!("{file}.json"))
    }

    /// Takes the store's lock: shared while blobs are written and images installed, exclusive
    /// while unreferenced blobs are collected (so a pull's fresh blobs are never collected
    /// before its image names them).
    pub fn lock(&self, exclusive: bool) -> Result<File, ImageError> {
        std::fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        let p = self.root.join(".lock");
        let f = open_lock_file(&p)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        flock(&f, op).map_err(io("locking", &p))?;
        Ok(f)
    }

    /// Whether the blob `sha256:<hex>` is in the store with `size` bytes (it was verified
    /// against its digest when stored).
    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        std::fs::metadata(self.blob_path(hex)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// A file to download a blob into, in the blob directory (so storing it is a rename);
    /// named `.partial-*`: a killed pull's leftovers are collected, never taken for a blob.
    pub fn blob_partial(&self) -> Result<tempfile::NamedTempFile, ImageError> {
        let parent = self.root.join("blobs/sha256");
        std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
        tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&parent)
            .map_err(io("creating temp in", &parent))
    }

    /// Stores a downloaded blob whose digest the caller verified while it streamed; its size
    /// is checked here.
    pub fn store_blob(
        &self,
        partial: tempfile::NamedTempFile,
        digest: &str,
        size: u64,
    ) -> Result<(), ImageError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| ImageError::Verify {
                digest: digest.to_owned(),
                message: "only sha256 digests are supported".into(),
            })?;
        let got = partial
            .as_file()
            .metadata()
            .map_err(io("reading", partial.path()))?
            .len();
        if got != size {
            return Err(ImageError::Verify {
                digest: digest.to_owned(),
                message: format!("size is {got}, descriptor says {size}"),
            });
        }
        let dst = self.blob_path(hex);
        partial.persist(&dst).map_err(|e| ImageError::Io {
            what: "storing blob",
            path: dst.clone(),
            source: e.error,
        })?;
        Ok(())
    }

    /// Reads a stored blob (manifests, configs), at most 4 MiB.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let hex = digest.trim_start_matches("sha256:");
        let p = self.blob_path(hex);
        let mut f = File::open(&p).map_err(io("opening blob", &p))?;
        let mut out = Vec::new();
        (&mut f)
            .take(4 << 20)
            .read_to_end(&mut out)
            .map_err(io("reading", &p))?;
        Ok(out)
    }

    /// The configuration of a stored image (entrypoint, command, environment, working
    /// directory, user), read from its manifest's config blob.
    pub fn config(&self, digest: &str) -> Result<oci_spec::image::ImageConfiguration, ImageError> {
        let bad = |m: String| ImageError::Verify {
            digest: digest.to_owned(),
            message: m,
        };
        let manifest: ImageManifest = serde_json::from_slice(&self.read_blob(digest)?)
            .map_err(|e| bad(format!("manifest: {e}")))?;
        let cfg = manifest.config().digest().to_string();
        serde_json::from_slice(&self.read_blob(&cfg)?)
            .map_err(|e| bad(format!("config {cfg}: {e}")))
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
        let _shared = self.lock(false)?;
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
        for l in manifest.layers() {
            self.take_blob(&layout, l)?;
        }
        self.install_locked(&name, desc.digest().as_ref(), &manifest, None, None)
    }

    /// Installs an image whose manifest, config and layers are all in the store: unpacks its
    /// layers (the same hardened [`apply_layer`] as an import) into a staging directory that
    /// becomes the rootfs by one rename, then names it. Until the name is written nothing of
    /// it is visible. The caller holds [`ImageStore::lock`] (shared).
    pub fn install_locked(
        &self,
        name: &str,
        digest: &str,
        manifest: &ImageManifest,
        source: Option<&str>,
        verified: Option<&str>,
    ) -> Result<ImageRef, ImageError> {
        if !valid_name(name) {
            return Err(ImageError::BadName(name.to_owned()));
        }
        let name = normalize_name(name);
        let rootfs = self.rootfs_dir(digest);
        let mut unpacked = None;
        if !rootfs.exists() {
            let tmp_root = self.root.join("tmp");
            std::fs::create_dir_all(&tmp_root).map_err(io("creating", &tmp_root))?;
            let staging = tempfile::Builder::new()
                .prefix("unpack-")
                .tempdir_in(&tmp_root)
                .map_err(io("creating staging dir in", &tmp_root))?;
            let unpack = staging.path().join("rootfs");
            std::fs::create_dir_all(&unpack).map_err(io("creating", &unpack))?;
            // Bounded across all layers: a small, highly compressed layer can unpack to
            // anything (a gzip bomb), and a failure here drops the staging directory whole.
            let mut budget = Budget::new(self.max_size);
            for l in manifest.layers() {
                let hex = hex_of(l)?;
                apply_layer(
                    &self.blob_path(&hex),
                    &unpack,
                    l.digest().as_ref(),
                    &mut budget,
                )?;
            }
            unpacked = Some(budget.bytes);
            let parent = self.root.join("rootfs");
            std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
            match std::fs::rename(&unpack, &rootfs) {
                Ok(()) => {}
                // A concurrent install of the same image won the rename: same content.
                Err(_) if rootfs.is_dir() => {}
                Err(e) => return Err(io("storing", &rootfs)(e)),
            }
        }
        let r = ImageRef {
            name: name.clone(),
            digest: digest.to_owned(),
            size: manifest.layers().iter().map(|l| l.size()).sum(),
            layers: manifest.layers().len(),
            imported: crate::state::now(),
            source: source.map(str::to_owned),
            verified: verified.map(str::to_owned),
            last_used: None,
            unpacked,
        };
        let rp = self.ref_path(&name);
        let refs = self.root.join("refs");
        std::fs::create_dir_all(&refs).map_err(io("creating", &refs))?;
        let data = serde_json::to_vec_pretty(&r).map_err(|e| ImageError::Io {
            what: "encoding",
            path: rp.clone(),
            source: std::io::Error::other(e),
        })?;
        // Written whole, then renamed: a reader sees the old name or the new one.
        let mut tmp =
            tempfile::NamedTempFile::new_in(&refs).map_err(io("creating temp in", &refs))?;
        std::io::Write::write_all(&mut tmp, &data).map_err(io("writing", &rp))?;
        tmp.persist(&rp).map_err(|e| ImageError::Io {
            what: "writing",
            path: rp.clone(),
            source: e.error,
        })?;
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
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let data = std::fs::read(&p).map_err(io("reading", &p))?;
            if let Ok(mut r) = serde_json::from_slice::<ImageRef>(&data) {
                r.last_used = self.last_used(&r.digest);
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
            // Its last use goes with it (a claim on it may still be held: that is fine).
            let _ = std::fs::remove_file(self.used_path(&r.digest));
            self.gc_blobs()?;
        }
        Ok(r)
    }

    fn used_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("used")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Records that a job starts on the image `digest` now (its mtime is the last use) and
    /// holds it until the returned [`InUse`] is dropped: making room never removes it.
    pub fn mark_used(&self, digest: &str) -> Result<InUse, ImageError> {
        let p = self.used_path(digest);
        let dir = self.root.join("used");
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let f = open_lock_file(&p)?;
        f.set_modified(std::time::SystemTime::now())
            .map_err(io("writing", &p))?;
        flock(&f, libc::LOCK_SH).map_err(io("locking", &p))?;
        Ok(InUse { _file: f })
    }

    /// Claims the image `digest` for removal: `None` while a job holds it ([`Self::mark_used`]);
    /// the claim (if it was ever used) keeps a job from starting on it until dropped.
    fn claim(&self, digest: &str) -> Option<Option<File>> {
        match std::fs::OpenOptions::new()
            .write(true)
            .open(self.used_path(digest))
        {
            Ok(f) => flock(&f, libc::LOCK_EX | libc::LOCK_NB)
                .ok()
                .map(|()| Some(f)),
            // No marker: no job ever started on it.
            Err(_) => Some(None),
        }
    }

    /// Bytes the store takes of its disk: every blob and every unpacked root filesystem.
    pub fn usage(&self) -> Result<u64, ImageError> {
        let mut total = 0u64;
        let blobs = self.root.join("blobs/sha256");
        for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
            total = total.saturating_add(e.metadata().map_or(0, |m| m.len()));
        }
        let known: std::collections::HashMap<String, u64> = self
            .list()?
            .into_iter()
            .filter_map(|r| {
                let hex = r.digest.trim_start_matches("sha256:").to_owned();
                r.unpacked.map(|u| (hex, u))
            })
            .collect();
        let rootfs = self.root.join("rootfs");
        for e in std::fs::read_dir(&rootfs).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let size = match known.get(&n) {
                Some(u) => *u,
                None => tree_bytes(&e.path()),
            };
            total = total.saturating_add(size);
        }
        Ok(total)
    }

    /// The store, ready for one more image under `max_store`: when the store and the image
    /// (at most [`Self::max_size`] of blobs and as much unpacked) would not fit under it, or
    /// would leave less than a tenth of the filesystem free, pulled images no job holds
    /// ([`Self::mark_used`]) are removed, least recently used first (imported images never:
    /// they cannot be fetched again), after blobs no image refers to. The image's bound is
    /// then cut to what is left; below 1 MiB the store is full ([`ImageError::StoreFull`]).
    /// Two pulls at once may each count the same room: the store can pass its bound by what
    /// concurrent pulls add.
    pub fn for_new_image(&self, max_store: u64) -> Result<(ImageStore, Room), ImageError> {
        // The filesystem is read again each time: removing an image frees its space. Its free
        // space unknown, nothing is pulled (fail closed).
        let left = |usage: u64| -> Result<u64, ImageError> {
            Ok(room_left(usage, max_store, Some(fs_bytes(&self.root)?)))
        };
        let need = self.max_size.saturating_mul(2);
        let mut room = Room {
            usage: self.usage()?,
            evicted: Vec::new(),
        };
        if left(room.usage)? < need {
            // Blobs no image refers to go first (those of a refused image, say).
            self.gc_blobs()?;
            room.usage = self.usage()?;
        }
        if left(room.usage)? < need {
            let mut pulled: Vec<ImageRef> = self
                .list()?
                .into_iter()
                .filter(|r| r.source.is_some())
                .collect();
            pulled.sort_by_key(|r| r.last_used.unwrap_or(r.imported).max(r.imported));
            for r in pulled {
                if left(room.usage)? >= need {
                    break;
                }
                let Some(_claim) = self.claim(&r.digest) else {
                    continue; // a job runs on it
                };
                self.remove(&r.name)?;
                room.evicted.push(r.name);
                room.usage = self.usage()?;
            }
        }
        let left = left(room.usage)? / 2;
        if left < MIN_IMAGE {
            return Err(ImageError::StoreFull {
                usage: room.usage,
                max: max_store,
            });
        }
        let store = ImageStore {
            root: self.root.clone(),
            max_size: self.max_size.min(left),
        };
        Ok((store, room))
    }

    /// When a job last started on the image `digest` (Unix time).
    pub fn last_used(&self, digest: &str) -> Option<u64> {
        let m = std::fs::metadata(self.used_path(digest)).ok()?;
        let t = m.modified().ok()?;
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }

    /// Removes pulled images no job used within `unused_for` (imported images are kept: they
    /// cannot be fetched again), then every blob, root filesystem and staging directory no
    /// image needs. `dry_run`: only says what would go.
    pub fn gc(
        &self,
        unused_for: std::time::Duration,
        dry_run: bool,
    ) -> Result<GcReport, ImageError> {
        let mut report = GcReport::default();
        let now = crate::state::now();
        for r in self.list()? {
            let last = r.last_used.unwrap_or(r.imported).max(r.imported);
            // An image a job still runs on (longer than `unused_for`) is kept.
            if r.source.is_some()
                && now.saturating_sub(last) > unused_for.as_secs()
                && self.claim(&r.digest).is_some()
            {
                report.images.push(r.name.clone());
                if !dry_run {
                    let rp = self.ref_path(&r.name);
                    std::fs::remove_file(&rp).map_err(io("removing", &rp))?;
                }
            }
        }
        if dry_run {
            return Ok(report);
        }
        let _exclusive = self.lock(true)?;
        let live: HashSet<String> = self
            .list()?
            .iter()
            .map(|r| r.digest.trim_start_matches("sha256:").to_owned())
            .collect();
        for sub in ["rootfs", "used"] {
            let dir = self.root.join(sub);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !live.contains(&n) {
                    remove_any(&e.path()).map_err(io("removing", e.path()))?;
                    if sub == "rootfs" {
                        report.dirs += 1;
                    }
                }
            }
        }
        // Staging directories of imports and pulls that were killed (none is running:
        // the exclusive lock waits for them).
        let tmp = self.root.join("tmp");
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            remove_any(&e.path()).map_err(io("removing", e.path()))?;
            report.dirs += 1;
        }
        let (blobs, bytes) = self.gc_blobs_locked()?;
        report.blobs = blobs;
        report.bytes = bytes;
        Ok(report)
    }

    /// Removes blobs no remaining image refers to, and partial downloads of killed pulls.
    fn gc_blobs(&self) -> Result<(), ImageError> {
        let _exclusive = self.lock(true)?;
        self.gc_blobs_locked().map(|_| ())
    }

    /// [`Self::gc_blobs`] with the exclusive lock held; returns (blobs, bytes) removed.
    fn gc_blobs_locked(&self) -> Result<(usize, u64), ImageError> {
        let mut removed = (0, 0);
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
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    std::fs::remove_file(e.path()).map_err(io("removing", e.path()))?;
                    removed.0 += 1;
                    removed.1 += len;
                }
            }
        }
        Ok(removed)
    }
}

/// What the store may still take: up to `max_store`, and never the last tenth of its
/// filesystem (at most 4 GiB of it; `fs`: (total, available) bytes, when known).
fn room_left(usage: u64, max_store: u64, fs: Option<(u64, u64)>) -> u64 {
    let by_bound = max_store.saturating_sub(usage);
    match fs {
        Some((total, avail)) => {
            let keep = (total / KEEP_FREE_DIVISOR).min(KEEP_FREE_MAX);
            by_bound.min(avail.saturating_sub(keep))
        }
        None => by_bound,
    }
}

/// The size and free space of the filesystem holding `p` (its nearest existing ancestor).
fn fs_bytes(p: &Path) -> Result<(u64, u64), ImageError> {
    let at = p.ancestors().find(|a| a.exists()).unwrap_or(p);
    let st = nix::sys::statvfs::statvfs(at).map_err(|e| {
        io("reading the free space of", at)(std::io::Error::from_raw_os_error(e as i32))
    })?;
    let unit = st.fragment_size() as u64;
    Ok((
        (st.blocks() as u64).saturating_mul(unit),
        (st.blocks_available() as u64).saturating_mul(unit),
    ))
}

/// Bytes of data under `dir` (files' lengths; symbolic links not followed): the store's
/// measure of root filesystems unpacked before their size was kept, and the one the drill and
/// the tests weigh a store by from outside.
pub fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => {
                    total = total.saturating_add(e.metadata().map_or(0, |m| m.len()));
                }
                _ => {}
            }
        }
    }
    total
}

/// A file that is only ever locked, made if missing, never truncated.
fn open_lock_file(p: &Path) -> Result<File, ImageError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(io("opening", p))
}

/// `flock(2)` on `f`, again when a signal interrupts it.
fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor the caller owns; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
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
        let d = zstd::stream::read::Decoder::new(f).map_err(io("reading zstd", p))?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(BufReader::new(f)))
    }
}

/// Reads a file of an image rootfs as the image's own processes would see it: symlinks are
/// resolved with `root` as `/` (`openat2` with `RESOLVE_IN_ROOT`), so an image whose
/// `etc/passwd` links to `/etc/shadow` or `../../../../etc/shadow` reads its own (missing)
/// shadow file, never the host's. Only a regular file is read.
pub fn read_in_image(root: &Path, rel: &str) -> std::io::Result<String> {
    let mut f = open_in_image(root, rel)?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// Opens `rel` inside the directory tree `root` with `flags`: symlinks and `..` are resolved
/// inside `root` and never leave it, no magic link is followed, no mount is crossed. For trees
/// a job or an image controls (an image rootfs, a runner's root).
pub fn open_in_root(
    root: &Path,
    rel: &str,
    flags: nix::fcntl::OFlag,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{openat2, OpenHow, ResolveFlag};
    use std::os::fd::{AsRawFd as _, FromRawFd as _};

    let dir = File::open(root)?;
    let how = OpenHow::new()
        .flags(flags | nix::fcntl::OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = openat2(dir.as_raw_fd(), rel, how)?;
    // SAFETY: `openat2` just returned this descriptor; nothing else owns or closes it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Opens a regular file of an image rootfs as [`read_in_image`] reads it (symlinks resolved
/// inside `root`, never leaving it).
pub fn open_in_image(root: &Path, rel: &str) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    // O_NONBLOCK: a FIFO named like a file we read must not hang job start.
    let f = File::from(open_in_root(
        root,
        rel,
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
    )?);
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{rel} is not a regular file in the image"),
        ));
    }
    Ok(f)
}

/// A path inside a layer, made relative and checked: no `..`. A leading `/` is dropped, not
/// refused: layer paths (and hardlink targets) are relative to the image root whatever their
/// spelling.
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

/// Removes whatever is at `p` without following it: a symlink is removed, not its target.
/// `p`'s parent must already be known to be a real directory under the root.
fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        // `remove_dir_all` does not follow symlinks inside the tree it removes.
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The layer and entry being applied, to name them in a refusal.
struct At<'a> {
    digest: &'a str,
    entry: &'a Path,
}

impl At<'_> {
    fn refuse(&self, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            digest: self.digest.to_owned(),
            entry: self.entry.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Finds the directory `dir` (a [`clean_rel`] path) under `root`, one component at a time,
/// following no symlink. A component that is a symlink refuses the layer, wherever it points:
/// layers are diffs of real filesystems, so no producer writes an entry below a symlink, and
/// refusing is simpler to trust than resolving links under the root. With `create`, missing
/// directories are made (as tar does for parents a layer does not list) and a component that
/// is not a directory refuses the layer; without it (whiteouts, hardlink targets) `None` means
/// there is nothing there.
///
/// Checking a path and then using it is safe here because the rootfs being unpacked is in the
/// store's private staging directory: nothing but this function's caller changes it.
fn dir_in_root(
    root: &Path,
    dir: &Path,
    create: bool,
    at: &At<'_>,
) -> Result<Option<PathBuf>, ImageError> {
    let mut cur = root.to_path_buf();
    let mut shown = PathBuf::new();
    for c in dir.components() {
        cur.push(c);
        shown.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&cur)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(at.refuse(format!(
                    "{} is a symlink (to {to}); nothing is unpacked or removed through a symlink",
                    shown.display()
                )));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) if create => {
                return Err(at.refuse(format!("{} is not a directory", shown.display())));
            }
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .map_err(io("creating", &cur))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("inspecting", &cur)(e)),
        }
    }
    Ok(Some(cur))
}

/// Where a hardlink entry's target is: inside the root, reached without following a symlink,
/// existing and not a directory. The link itself is made with `linkat` without
/// `AT_SYMLINK_FOLLOW`, so a target that is a symlink is linked as the symlink.
fn hardlink_target(root: &Path, link: Option<&Path>, at: &At<'_>) -> Result<PathBuf, ImageError> {
    let link = link.ok_or_else(|| at.refuse("hardlink without a target"))?;
    let rel = clean_rel(link)
        .ok_or_else(|| at.refuse(format!("hardlink target {link:?} has a `..` component")))?;
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(at.refuse(format!("hardlink target {link:?} is the image root")));
    };
    let missing = || {
        at.refuse(format!(
            "hardlink target {link:?} does not exist in the image"
        ))
    };
    let dir = dir_in_root(root, parent, false, at)?.ok_or_else(missing)?;
    let target = dir.join(name);
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => Err(at.refuse(format!("hardlink target {link:?} is a directory"))),
        Ok(_) => Ok(target),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing()),
        Err(e) => Err(io("inspecting", &target)(e)),
    }
}

/// Applies one layer on top of `root`. See the module documentation for what keeps every
/// operation inside `root`.
fn apply_layer(
    blob: &Path,
    root: &Path,
    digest: &str,
    budget: &mut Budget,
) -> Result<(), ImageError> {
    let mut a = tar::Archive::new(decompressed(blob)?);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_unpack_xattrs(false);
    a.set_overwrite(true);
    // Opaque dirs are emptied once, before this layer's own entries land in them.
    let mut opaque_done: HashSet<PathBuf> = HashSet::new();
    // What this layer wrote: whiteouts only hide what lower layers put there.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in a.entries().map_err(io("reading layer", blob))? {
        let mut entry = entry.map_err(io("reading layer", blob))?;
        let path = entry
            .path()
            .map_err(io("reading layer", blob))?
            .into_owned();
        let at = At {
            digest,
            entry: &path,
        };
        let kind = entry.header().entry_type();
        // Extension headers carry no file of their own (tar skips them too); returning early
        // keeps their pseudo-names from replacing anything.
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        // Counted before anything is written: a regular file's data (the header's size), one
        // entry for everything.
        let data = if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            entry.size()
        } else {
            0
        };
        budget.take(data)?;
        let rel = clean_rel(&path).ok_or_else(|| at.refuse("the path has a `..` component"))?;
        // Old (non-ustar) headers mark a directory by a trailing slash only; `Entry::unpack`
        // makes a directory of those, so they must not replace an existing one.
        let is_dir = kind.is_dir()
            || (!kind.is_hard_link()
                && !kind.is_symlink()
                && entry.header().as_ustar().is_none()
                && entry.path_bytes().ends_with(b"/"));
        let (Some(parent), Some(fname)) = (rel.parent(), rel.file_name()) else {
            // The root itself (`./`): nothing to create, and nothing else may replace it.
            if is_dir {
                continue;
            }
            return Err(at.refuse("only a directory can stand for the image root"));
        };
        let fname_bytes = fname.as_bytes();

        if fname_bytes == b".wh..wh..opq" {
            if let Some(dir) = dir_in_root(root, parent, false, &at)? {
                if opaque_done.insert(parent.to_path_buf()) {
                    let rd = std::fs::read_dir(&dir).map_err(io("reading", &dir))?;
                    for e in rd {
                        let e = e.map_err(io("reading", &dir))?;
                        if !written.contains(&parent.join(e.file_name())) {
                            remove_any(&e.path())
                                .map_err(io("applying opaque whiteout in", &dir))?;
                        }
                    }
                }
            }
            continue;
        }
        if let Some(target) = fname_bytes.strip_prefix(b".wh.") {
            // `.wh.` alone, `.wh..` and `.wh...` would name the parent or the grandparent.
            if target.is_empty() || target == b"." || target == b".." {
                return Err(at.refuse("a whiteout must name an entry of its directory"));
            }
            let target = std::ffi::OsStr::from_bytes(target);
            if let Some(dir) = dir_in_root(root, parent, false, &at)? {
                if !written.contains(&parent.join(target)) {
                    let victim = dir.join(target);
                    remove_any(&victim).map_err(io("applying whiteout", &victim))?;
                }
            }
            continue;
        }

        let dir = dir_in_root(root, parent, true, &at)?
            .ok_or_else(|| at.refuse("its parent directory cannot be created"))?;
        let dest = dir.join(fname);
        // A later layer replaces what is there, except that a directory over a directory
        // merges. What is there is never followed: a symlink is replaced, not its target.
        match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() && is_dir => {}
            Ok(_) => remove_any(&dest).map_err(io("replacing", &dest))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspecting", &dest)(e)),
        }
        if kind.is_hard_link() {
            // `Entry::unpack` without a target base would resolve the link name against our
            // working directory; resolve it under the root ourselves.
            let link = entry.link_name().map_err(io("reading layer", blob))?;
            let target = hardlink_target(root, link.as_deref(), &at)?;
            std::fs::hard_link(&target, &dest).map_err(io("hardlinking", &dest))?;
        } else {
            // The parent is a real directory and `dest` is absent or a real directory:
            // files are created with O_EXCL, symlinks are only created (their targets are
            // resolved inside the job, never here), and ownership, mode and times land on
            // `dest` itself.
            entry.unpack(&dest).map_err(io("unpacking", &dest))?;
        }
        written.insert(rel);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staging dir holding `rootfs/` and, next to it, `outside/keep`: what an entry that
    /// climbs out of the root would hit first.
    struct Stage {
        dir: tempfile::TempDir,
    }

    impl Stage {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir_all(dir.path().join("rootfs/a/b")).expect("mkdir");
            std::fs::create_dir_all(dir.path().join("outside")).expect("mkdir");
            std::fs::write(dir.path().join("rootfs/a/b/file"), "img").expect("write");
            std::fs::write(dir.path().join("outside/keep"), "host").expect("write");
            Stage { dir }
        }
        fn root(&self) -> PathBuf {
            self.dir.path().join("rootfs")
        }
        /// Applies a layer of `(path, type, link target)` entries, owned by the caller.
        fn apply(&self, entries: &[(&str, tar::EntryType, &str)]) -> Result<(), ImageError> {
            self.apply_with(entries, &mut Budget::new(DEFAULT_MAX_SIZE))
        }
        fn apply_with(
            &self,
            entries: &[(&str, tar::EntryType, &str)],
            budget: &mut Budget,
        ) -> Result<(), ImageError> {
            let mut t = tar::Builder::new(Vec::new());
            for (path, kind, link) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o755);
                h.set_uid(nix::unistd::geteuid().as_raw().into());
                h.set_gid(nix::unistd::getegid().as_raw().into());
                h.set_entry_type(*kind);
                // `append_data` would refuse some of the paths under test; the raw name
                // field takes them as a hostile layer would carry them.
                h.as_gnu_mut().expect("gnu").name[..path.len()].copy_from_slice(path.as_bytes());
                if !link.is_empty() {
                    h.set_link_name(link).expect("link name");
                }
                h.set_cksum();
                t.append(&h, &[][..]).expect("append");
            }
            let blob = self.dir.path().join("layer.tar");
            std::fs::write(&blob, t.into_inner().expect("tar")).expect("write");
            apply_layer(&blob, &self.root(), "sha256:test", budget)
        }
        fn assert_intact(&self) {
            assert!(self.dir.path().join("outside/keep").exists());
            assert!(self.root().join("a/b/file").exists());
        }
    }

    fn refused(r: Result<(), ImageError>) -> String {
        match r {
            Err(e @ ImageError::UnsafeEntry { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    use tar::EntryType as T;

    /// A store holding images of 1 MiB unpacked each (no blobs): `(name, pulled, last used
    /// seconds ago)`.
    fn store_of(images: &[(&str, bool, Option<u64>)]) -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(dir.path()).with_max_size(1 << 20);
        std::fs::create_dir_all(dir.path().join("refs")).expect("mkdir");
        for (i, (name, pulled, used_ago)) in images.iter().enumerate() {
            let digest = format!("sha256:{i:064x}");
            let root = store.rootfs_dir(&digest);
            std::fs::create_dir_all(&root).expect("mkdir");
            std::fs::write(root.join("data"), vec![0u8; 1 << 20]).expect("write");
            let r = ImageRef {
                name: normalize_name(name),
                digest: digest.clone(),
                size: 0,
                layers: 1,
                imported: crate::state::now() - 3600,
                source: pulled.then(|| format!("registry.test/{name}")),
                verified: None,
                last_used: None,
                unpacked: Some(1 << 20),
            };
            let data = serde_json::to_vec(&r).expect("json");
            std::fs::write(store.ref_path(&r.name), data).expect("write");
            if let Some(ago) = used_ago {
                drop(store.mark_used(&digest).expect("mark"));
                let when = std::time::SystemTime::now() - std::time::Duration::from_secs(*ago);
                std::fs::File::options()
                    .write(true)
                    .open(store.used_path(&digest))
                    .and_then(|f| f.set_modified(when))
                    .expect("mtime");
            }
        }
        (dir, store)
    }

    /// Room for one more image is made by removing pulled images, least recently used first,
    /// never one a job holds nor an imported one; when nothing more can go, the store is
    /// full; the new image's bound is what is left.
    #[test]
    fn room_is_made_from_unheld_pulled_images_least_recently_used_first() {
        let (_dir, store) = store_of(&[
            ("old", true, Some(600)),
            ("recent", true, Some(60)),
            ("imported", false, Some(6000)),
        ]);
        let names = |s: &ImageStore| -> Vec<String> {
            s.list()
                .expect("list")
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(store.usage().expect("usage"), 3 << 20);
        let recent = store.resolve("recent").expect("recent");
        let hold = store.mark_used(&recent.digest).expect("hold");
        // 3 MiB held, 2 MiB (a 1 MiB image's blobs and tree) wanted under 4 MiB: one goes.
        let (bounded, room) = store.for_new_image(4 << 20).expect("room");
        assert_eq!(room.evicted, vec!["old:latest".to_owned()]);
        assert_eq!(room.usage, 2 << 20);
        assert_eq!(bounded.max_size(), 1 << 20);
        assert_eq!(names(&store), vec!["imported:latest", "recent:latest"]);
        let old = format!("sha256:{:064x}", 0);
        assert!(!store.rootfs_dir(&old).exists() && !store.used_path(&old).exists());
        // Under 3 MiB: only `recent` could go, and a job holds it: full.
        let full = store.for_new_image(3 << 20).map(|_| ());
        assert!(
            matches!(full, Err(ImageError::StoreFull { usage, max }) if usage == 2 << 20 && max == 3 << 20),
            "{full:?}"
        );
        assert_eq!(names(&store).len(), 2, "nothing removed");
        // The job ends: it can go; the imported image never does.
        drop(hold);
        let (bounded, room) = store.for_new_image(3 << 20).expect("room");
        assert_eq!(room.evicted, vec!["recent:latest".to_owned()]);
        assert_eq!(bounded.max_size(), 1 << 20);
        assert!(matches!(
            store.for_new_image(2 << 20),
            Err(ImageError::StoreFull { .. })
        ));
        assert_eq!(names(&store), vec!["imported:latest"]);
        // Enough room: nothing is removed.
        let (_, room) = store.for_new_image(8 << 20).expect("room");
        assert!(room.evicted.is_empty());
    }

    /// `image gc --unused-for` goes by last use, but never removes an image a job still runs
    /// on (one that started longer ago than the bound).
    #[test]
    fn gc_keeps_an_image_a_job_still_holds() {
        let (_dir, store) = store_of(&[("long", true, None)]);
        let digest = store.resolve("long").expect("long").digest;
        let hold = store.mark_used(&digest).expect("hold");
        let started = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        std::fs::File::options()
            .write(true)
            .open(store.used_path(&digest))
            .and_then(|f| f.set_modified(started))
            .expect("mtime");
        let unused_for = std::time::Duration::from_secs(300);
        let r = store.gc(unused_for, false).expect("gc");
        assert!(r.images.is_empty(), "{r:?}");
        assert!(store.rootfs_dir(&digest).exists());
        drop(hold);
        let r = store.gc(unused_for, false).expect("gc");
        assert_eq!(r.images, vec!["long:latest".to_owned()]);
    }

    #[test]
    fn room_left_keeps_a_tenth_of_the_disk_free_up_to_4_gib() {
        let gib = 1u64 << 30;
        assert_eq!(room_left(10, 100, None), 90);
        assert_eq!(room_left(200, 100, None), 0);
        // A 10 GiB disk with 3 GiB free: 2 GiB may be taken (1 GiB kept).
        assert_eq!(room_left(0, 64 * gib, Some((10 * gib, 3 * gib))), 2 * gib);
        // A 1 TiB disk with 100 GiB free: 4 GiB kept, the bound decides.
        assert_eq!(
            room_left(0, 64 * gib, Some((1024 * gib, 100 * gib))),
            64 * gib
        );
        assert_eq!(
            room_left(0, 640 * gib, Some((1024 * gib, 100 * gib))),
            96 * gib
        );
        // Nearly full: nothing.
        assert_eq!(room_left(0, 64 * gib, Some((10 * gib, gib / 2))), 0);
    }

    #[test]
    fn entries_past_the_budget_are_refused_across_layers() {
        let s = Stage::new();
        let mut budget = Budget::new(DEFAULT_MAX_SIZE);
        budget.max_entries = 5;
        let files: Vec<_> = (0..3).map(|i| format!("f{i}")).collect();
        let layer: Vec<_> = files.iter().map(|f| (f.as_str(), T::Regular, "")).collect();
        s.apply_with(&layer, &mut budget).expect("first layer fits");
        // The budget is the image's, not the layer's: the second layer passes it.
        let r = s.apply_with(&layer, &mut budget);
        assert!(
            matches!(&r, Err(ImageError::TooLarge { what }) if what.contains("more than 5 entries")),
            "{r:?}"
        );
    }

    #[test]
    fn a_whiteout_cannot_name_its_directory_or_above() {
        for path in [".wh...", ".wh..", "a/b/.wh...", "a/.wh.."] {
            let s = Stage::new();
            let e = refused(s.apply(&[(path, T::Regular, "")]));
            assert!(e.contains("must name an entry"), "{path}: {e}");
            s.assert_intact();
        }
    }

    #[test]
    fn the_root_is_replaced_by_nothing() {
        let s = Stage::new();
        refused(s.apply(&[(".", T::Regular, "")]));
        s.assert_intact();
        // A directory entry for the root is fine and changes nothing.
        s.apply(&[("./", T::Directory, "")]).expect("root dir");
        s.assert_intact();
    }

    #[test]
    fn entries_below_a_symlink_are_refused_even_one_pointing_inside() {
        // Layers are diffs of real filesystems and never put entries below a symlink, so
        // refusing costs nothing and needs no reasoning about where the link lands.
        let s = Stage::new();
        let e = refused(s.apply(&[("l", T::Symlink, "a"), ("l/new", T::Regular, "")]));
        assert!(e.contains("sha256:test") && e.contains("l/new"), "{e}");
        assert!(e.contains("l is a symlink (to a)"), "{e}");
        assert!(!s.root().join("a/new").exists());
    }

    #[test]
    fn an_entry_below_a_file_is_refused() {
        let s = Stage::new();
        let e = refused(s.apply(&[("a/b/file/x", T::Regular, "")]));
        assert!(e.contains("a/b/file is not a directory"), "{e}");
    }

    #[test]
    fn whiteouts_of_what_is_not_there_do_nothing() {
        let s = Stage::new();
        s.apply(&[
            ("nope/.wh.x", T::Regular, ""),
            ("a/b/file/.wh.x", T::Regular, ""),
            ("nope/.wh..wh..opq", T::Regular, ""),
            ("a/b/.wh.missing", T::Regular, ""),
        ])
        .expect("no-op whiteouts");
        s.assert_intact();
    }

    #[test]
    fn a_whiteout_does_not_hide_its_own_layer() {
        let s = Stage::new();
        s.apply(&[("a/new", T::Regular, ""), ("a/.wh.new", T::Regular, "")])
            .expect("apply");
        assert!(s.root().join("a/new").exists());
    }

    #[test]
    fn hardlink_targets_stay_in_the_root() {
        let s = Stage::new();
        // Leading `/` is the image root.
        s.apply(&[("h1", T::Link, "/a/b/file")])
            .expect("in-root link");
        assert!(s.root().join("h1").is_file());
        for (target, why) in [
            ("../outside/keep", "`..`"),
            ("a/../../outside/keep", "`..`"),
            ("outside/keep", "does not exist"),
            ("a/b", "is a directory"),
        ] {
            let e = refused(s.apply(&[("h2", T::Link, target)]));
            assert!(e.contains(why), "{target}: {e}");
            s.assert_intact();
        }
    }
}
