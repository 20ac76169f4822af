//! `airlock image pull`: an OCI image from a registry into airlock's image store.
//!
//! The distribution protocol (the `WWW-Authenticate` challenge, bearer tokens, basic auth,
//! manifests and blobs, digest checks while blobs stream) is `oci-client`'s; this crate chooses
//! the platform, reads credentials, keeps the store consistent and hands the layers to the
//! store's own hardened unpacking ([`ImageStore::install_locked`]), the same as an import.
//!
//! What a pull guarantees:
//! - every blob is verified against its digest as it streams (`oci-client`) and its size
//!   against the descriptor (the store); a manifest against the digest it was asked by;
//! - blobs already in the store are not fetched again (a second tag sharing layers fetches
//!   only what is new; an interrupted pull resumes at the first blob it had not stored);
//! - nothing is visible until the layers are unpacked and the name is written last;
//! - two pulls of one name run one after the other (a lock per name), the second finding
//!   everything in place.
//!
//! Credentials come from a `~/.docker/config.json`-style file (`auths.HOST.auth` =
//! base64(user:password), or `username`/`password`); they are never printed or logged.

pub mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use airlock_sandbox::image::{ImageError, ImageRef, ImageStore};
use airlock_secret::Secret;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("{reference:?} is not an image reference: {message}")]
    BadReference {
        /// What was given.
        reference: String,
        /// Why.
        message: String,
    },
    /// The registry refused, failed or could not be reached.
    #[error("pulling {reference}: {source}")]
    Registry {
        /// The reference.
        reference: String,
        /// What the protocol layer said.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// The image index has no manifest for the platform.
    #[error("{reference} has no image for {platform} (it has: {available})")]
    NoPlatform {
        /// The reference.
        reference: String,
        /// The platform asked for.
        platform: String,
        /// The platforms it has.
        available: String,
    },
    /// What the registry sent is not what was asked for.
    #[error("{reference}: {message}")]
    Verify {
        /// The reference.
        reference: String,
        /// What differs.
        message: String,
    },
    /// A manifest airlock cannot use.
    #[error("{reference}: {message}")]
    Unsupported {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// The image is not signed by the key the policy names.
    #[error("{reference}: signature verification failed: {message}")]
    Signature {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// A credentials or CA file could not be used.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The image store refused (a hostile layer, a full disk).
    #[error(transparent)]
    Store(#[from] ImageError),
    /// The async runtime could not start.
    #[error("starting the pull's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// An OS/architecture pair (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub arch: String,
    /// `v8`, … when the index names one.
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut it = s.split('/');
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
                Ok(Self {
                    os: os.into(),
                    arch: arch.into(),
                    variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
                })
            }
            _ => Err(format!("{s:?} is not OS/ARCH[/VARIANT], e.g. linux/amd64")),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What a pull reports as it goes.
pub trait Progress {
    /// A blob is needed: `reused` when the store had it.
    fn blob(&mut self, _index: usize, _total: usize, _digest: &str, _size: u64, _reused: bool) {}
}

/// A [`Progress`] that says nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Which image of an index.
    pub platform: Platform,
    /// Registries (`host:port`) spoken to over plain HTTP (loopback test registries).
    pub insecure: Vec<String>,
    /// PEM files of CAs trusted besides the system's.
    pub ca_files: Vec<PathBuf>,
    /// A `config.json`-style credentials file.
    pub credentials: Option<PathBuf>,
    /// The name to store it under (default: the reference without its digest).
    pub name: Option<String>,
    /// A cosign public key (PEM) the image must be signed with.
    pub verify_key: Option<PathBuf>,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pulled {
    /// The image as stored.
    pub image: ImageRef,
    /// The reference pinned to what was pulled: `registry/repo@sha256:…` of the manifest.
    pub pinned: String,
    /// Blobs fetched from the registry.
    pub fetched: usize,
    /// Bytes fetched.
    pub fetched_bytes: u64,
    /// Blobs the store already had.
    pub reused: usize,
}

/// Accepted manifest media types: OCI and Docker v2 schema 2, images and indexes.
const ACCEPT: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// Parses a reference (`ghcr.io/actions/actions-runner:2.330.0`, `…@sha256:…`; Docker Hub
/// names are completed as Docker does).
pub fn parse_reference(reference: &str) -> Result<Reference, RegistryError> {
    reference
        .parse::<Reference>()
        .map_err(|e| RegistryError::BadReference {
            reference: reference.to_owned(),
            message: e.to_string(),
        })
}

/// Whether `s` names a registry image rather than an image of the local store: it has a
/// registry host (a first component with a `.` or `:`, or `localhost`) or a digest.
pub fn is_registry_reference(s: &str) -> bool {
    let first = s.split('/').next().unwrap_or("");
    (s.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost"))
        || (s.contains("@sha256:") && s.contains('/'))
}

/// The store name of a reference: `registry/repository:tag` (a digest-only reference gets
/// `:sha256-<12 hex>` as its tag).
pub fn store_name(r: &Reference) -> String {
    let tag = match (r.tag(), r.digest()) {
        (Some(t), _) => t.to_owned(),
        (None, Some(d)) => format!(
            "sha256-{}",
            d.trim_start_matches("sha256:").get(..12).unwrap_or("")
        ),
        (None, None) => "latest".to_owned(),
    };
    format!("{}/{}:{tag}", r.registry(), r.repository())
}

/// Pulls `reference` into `store` (blocking; runs its own single-threaded runtime).
pub fn pull(
    store: &ImageStore,
    reference: &str,
    opts: &PullOptions,
    progress: &mut dyn Progress,
) -> Result<Pulled, RegistryError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)?;
    rt.block_on(pull_async(store, reference, opts, progress))
}

fn client(opts: &PullOptions) -> Result<Client, RegistryError> {
    let mut certs = Vec::new();
    for p in &opts.ca_files {
        let data = std::fs::read(p).map_err(|e| RegistryError::File {
            path: p.clone(),
            message: format!("cannot read the CA file: {e}"),
        })?;
        certs.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let config = ClientConfig {
        protocol: if opts.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(opts.insecure.clone())
        },
        extra_root_certificates: certs,
        // The platform is chosen here, from the raw index, so the choice is explained.
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(300)),
        ..ClientConfig::default()
    };
    Ok(Client::new(config))
}

fn sha256_of(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for x in h {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Holds a name's pull lock until dropped.
struct NameLock(#[allow(dead_code)] std::fs::File);

fn lock_name(store_root: &Path, name: &str) -> Result<NameLock, RegistryError> {
    use std::os::fd::AsRawFd;
    let dir = store_root.join("locks");
    let file_err = |p: &Path, e: std::io::Error| RegistryError::File {
        path: p.to_owned(),
        message: format!("cannot take the pull lock: {e}"),
    };
    std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
    let p = dir.join(format!("{}.lock", &sha256_of(name.as_bytes())[7..23]));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| file_err(&p, e))?;
    loop {
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(NameLock(f));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(file_err(&p, e));
        }
    }
}

async fn pull_async(
    store: &ImageStore,
    reference: &str,
    opts: &PullOptions,
    progress: &mut dyn Progress,
) -> Result<Pulled, RegistryError> {
    let r = parse_reference(reference)?;
    let name = opts.name.clone().unwrap_or_else(|| store_name(&r));
    let client = client(opts)?;
    let auth = credentials_for(opts.credentials.as_deref(), r.resolve_registry())?;
    let reg_err = |source| RegistryError::Registry {
        reference: reference.to_owned(),
        source,
    };
    let _name_lock = lock_name(store.root(), &name)?;
    let _shared = store.lock(false)?;

    let (top, top_digest) = client
        .pull_manifest_raw(&r, &auth, ACCEPT)
        .await
        .map_err(reg_err)?;
    check_digest(reference, &top, &top_digest, r.digest())?;
    let (manifest_bytes, manifest_digest) = if is_index(&top) {
        let want = choose_platform(reference, &top, &opts.platform)?;
        let pinned = Reference::with_digest(
            r.registry().to_owned(),
            r.repository().to_owned(),
            want.clone(),
        );
        let (m, d) = client
            .pull_manifest_raw(&pinned, &auth, ACCEPT)
            .await
            .map_err(reg_err)?;
        check_digest(reference, &m, &d, Some(&want))?;
        (m, want)
    } else {
        (top, top_digest.clone())
    };
    // Signatures name what the reference names (an index's digest for a multi-platform
    // image): checked before anything is stored.
    let verified = match &opts.verify_key {
        Some(k) => Some(verify_signature(&client, &auth, &r, reference, &top_digest, k).await?),
        None => None,
    };
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| RegistryError::Unsupported {
            reference: reference.to_owned(),
            message: format!("manifest {manifest_digest}: {e}"),
        })?;

    let mut out = Pulled {
        image: ImageRef {
            name: String::new(),
            digest: String::new(),
            size: 0,
            layers: 0,
            imported: 0,
            source: None,
            verified: None,
            last_used: None,
            unpacked: None,
        },
        pinned: format!("{}/{}@{manifest_digest}", r.registry(), r.repository()),
        fetched: 0,
        fetched_bytes: 0,
        reused: 0,
    };
    // What the image declares is checked before anything is fetched (each blob is then held
    // to its declared size and digest); what it unpacks to is bounded by the store itself.
    let declared = manifest
        .layers()
        .iter()
        .chain(std::iter::once(manifest.config()))
        .map(|d| d.size())
        .fold(0u64, u64::saturating_add);
    if declared > store.max_size() {
        return Err(RegistryError::Store(ImageError::TooLarge {
            what: format!(
                "its blobs are {declared} bytes, more than the {} bytes allowed",
                store.max_size()
            ),
        }));
    }
    // The manifest itself is a blob of the store (gc reads it to know what it keeps).
    if !store.has_blob(&manifest_digest, manifest_bytes.len() as u64) {
        let mut partial = store.blob_partial()?;
        std::io::Write::write_all(&mut partial, &manifest_bytes).map_err(|e| {
            RegistryError::Store(ImageError::Io {
                what: "writing",
                path: partial.path().to_owned(),
                source: e,
            })
        })?;
        store.store_blob(partial, &manifest_digest, manifest_bytes.len() as u64)?;
    }
    let mut wanted = vec![manifest.config().clone()];
    wanted.extend(manifest.layers().iter().cloned());
    let total = wanted.len();
    let mut fetch = Vec::new();
    for (i, d) in wanted.iter().enumerate() {
        let digest = d.digest().to_string();
        if store.has_blob(&digest, d.size()) {
            out.reused += 1;
            progress.blob(i + 1, total, &digest, d.size(), true);
        } else {
            progress.blob(i + 1, total, &digest, d.size(), false);
            fetch.push((digest, d.size()));
        }
    }
    // A few blobs at a time, as registries and other clients expect.
    use futures_util::stream::{StreamExt as _, TryStreamExt as _};
    let fetched: Vec<u64> = futures_util::stream::iter(fetch.into_iter().map(|(digest, size)| {
        let (client, r) = (&client, &r);
        async move {
            let partial = store.blob_partial()?;
            let file = partial.reopen().map_err(|e| {
                RegistryError::Store(ImageError::Io {
                    what: "opening",
                    path: partial.path().to_owned(),
                    source: e,
                })
            })?;
            // oci-client hashes the stream and refuses a blob that is not its digest.
            client
                .pull_blob(r, digest.as_str(), SyncWriter { file, left: size })
                .await
                .map_err(|source| RegistryError::Registry {
                    reference: reference.to_owned(),
                    source,
                })?;
            store.store_blob(partial, &digest, size)?;
            Ok::<u64, RegistryError>(size)
        }
    }))
    .buffer_unordered(4)
    .try_collect()
    .await?;
    out.fetched = fetched.len();
    out.fetched_bytes = fetched.iter().sum();
    out.image = store.install_locked(
        &name,
        &manifest_digest,
        &manifest,
        Some(&out.pinned),
        verified.as_deref(),
    )?;
    Ok(out)
}

/// Finds a signature of `digest` by the key at `key_path` in the image's repository; returns
/// how the image is recorded as verified (`cosign key sha256:<fingerprint>`).
async fn verify_signature(
    client: &Client,
    auth: &RegistryAuth,
    r: &Reference,
    reference: &str,
    digest: &str,
    key_path: &Path,
) -> Result<String, RegistryError> {
    let fail = |message: String| RegistryError::Signature {
        reference: reference.to_owned(),
        message,
    };
    let pem = std::fs::read_to_string(key_path).map_err(|e| RegistryError::File {
        path: key_path.to_owned(),
        message: format!("cannot read the verification key: {e}"),
    })?;
    let key = verify::Key::from_pem(&pem).map_err(|message| RegistryError::File {
        path: key_path.to_owned(),
        message,
    })?;
    let tag = verify::signature_tag(digest);
    let sig_ref = Reference::with_tag(
        r.registry().to_owned(),
        r.repository().to_owned(),
        tag.clone(),
    );
    let (body, _) = client
        .pull_manifest_raw(
            &sig_ref,
            auth,
            &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE],
        )
        .await
        .map_err(|e| fail(format!("no signature found (tag {tag}): {e}")))?;
    let m: ImageManifest = serde_json::from_slice(&body)
        .map_err(|e| fail(format!("the signature manifest does not parse: {e}")))?;
    let mut reasons = Vec::new();
    for layer in m.layers() {
        let Some(sig) = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(verify::SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        if layer.size() > (1 << 20) {
            reasons.push("a payload over 1 MiB".to_owned());
            continue;
        }
        let mut payload: Vec<u8> = Vec::new();
        let d = layer.digest().to_string();
        if let Err(e) = client.pull_blob(r, d.as_str(), &mut payload).await {
            reasons.push(format!("payload {d}: {e}"));
            continue;
        }
        match key.check(&payload, sig, digest) {
            Ok(()) => return Ok(format!("cosign key {}", key.fingerprint)),
            Err(why) => reasons.push(why),
        }
    }
    if reasons.is_empty() {
        reasons.push("the signature manifest holds no signature".to_owned());
    }
    Err(fail(format!(
        "no signature by key {} for {digest}: {}",
        key.fingerprint,
        reasons.join("; ")
    )))
}

/// Writes a blob's chunks to its partial file as they arrive, refusing a byte past the size
/// its descriptor declared (a registry that streams more would otherwise fill the disk before
/// the digest check at the end refuses the blob). A plain file write does not block long, and
/// going through tokio's blocking pool for every chunk (what `tokio::fs::File` does) cost
/// more than the write itself.
struct SyncWriter {
    file: std::fs::File,
    left: u64,
}

impl tokio::io::AsyncWrite for SyncWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if buf.len() as u64 > self.left {
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "the registry sent more than the blob's declared size",
            )));
        }
        let r = std::io::Write::write(&mut self.file, buf);
        if let Ok(n) = &r {
            self.left -= *n as u64;
        }
        std::task::Poll::Ready(r)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A manifest must be what its digest says, and what the reference pinned.
fn check_digest(
    reference: &str,
    body: &[u8],
    got: &str,
    wanted: Option<&str>,
) -> Result<(), RegistryError> {
    let actual = sha256_of(body);
    if actual != got || wanted.is_some_and(|w| w != actual) {
        return Err(RegistryError::Verify {
            reference: reference.to_owned(),
            message: format!(
                "the manifest hashes to {actual}, not {}",
                wanted.unwrap_or(got)
            ),
        });
    }
    Ok(())
}

fn is_index(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| {
        p.manifests.is_some()
            || p.media_type.is_some_and(|m| {
                m == OCI_IMAGE_INDEX_MEDIA_TYPE || m == IMAGE_MANIFEST_LIST_MEDIA_TYPE
            })
    })
}

/// The digest of the index entry for `platform`.
fn choose_platform(
    reference: &str,
    body: &[u8],
    platform: &Platform,
) -> Result<String, RegistryError> {
    let index: ImageIndex =
        serde_json::from_slice(body).map_err(|e| RegistryError::Unsupported {
            reference: reference.to_owned(),
            message: format!("image index: {e}"),
        })?;
    let mut available = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        let variant = p.variant().clone();
        available.push(match &variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
        let variant_ok = platform.variant.is_none() || platform.variant == variant;
        if os == platform.os && arch == platform.arch && variant_ok {
            return Ok(m.digest().to_string());
        }
    }
    Err(RegistryError::NoPlatform {
        reference: reference.to_owned(),
        platform: platform.to_string(),
        available: available.join(", "),
    })
}

/// One registry's login from a credentials file.
struct Login {
    user: String,
    password: Secret,
}

/// Reads a `config.json`-style file: `{"auths": {"HOST": {"auth": "base64(user:pw)"}}}` or
/// `{"auths": {"HOST": {"username": …, "password": …}}}`.
fn read_logins(path: &Path) -> Result<HashMap<String, Login>, RegistryError> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        auths: HashMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let bad = |message: String| RegistryError::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    // Errors name the line and column, never the content (it holds passwords).
    let f: File = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "not a credentials file (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let mut out = HashMap::new();
    for (host, e) in f.auths {
        let (user, password) = match (e.auth, e.username, e.password) {
            (Some(a), _, _) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|_| bad(format!("auths.{host}.auth is not base64")))?;
                let s = String::from_utf8(raw)
                    .map_err(|_| bad(format!("auths.{host}.auth is not UTF-8")))?;
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| bad(format!("auths.{host}.auth is not user:password")))?;
                (u.to_owned(), p.to_owned())
            }
            (None, Some(u), Some(p)) => (u, p),
            _ => continue,
        };
        // Docker writes Docker Hub as https://index.docker.io/v1/; keys may carry a scheme.
        let key = host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_owned();
        out.insert(
            key,
            Login {
                user,
                password: Secret::new(password),
            },
        );
    }
    Ok(out)
}

/// The credentials file used when none is named: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`, when it exists.
pub fn default_credentials() -> Option<PathBuf> {
    let p = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    p.is_file().then_some(p)
}

fn credentials_for(path: Option<&Path>, registry: &str) -> Result<RegistryAuth, RegistryError> {
    let Some(path) = path else {
        return Ok(RegistryAuth::Anonymous);
    };
    let logins = read_logins(path)?;
    let hub = registry == "index.docker.io" || registry == "registry-1.docker.io";
    let login = logins.get(registry).or_else(|| {
        hub.then(|| logins.get("index.docker.io").or(logins.get("docker.io")))
            .flatten()
    });
    Ok(match login {
        Some(l) => RegistryAuth::Basic(l.user.clone(), l.password.expose().to_owned()),
        None => RegistryAuth::Anonymous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_print() {
        let p: Platform = "linux/arm64/v8".parse().expect("platform");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
    }

    #[test]
    fn registry_references_are_told_from_store_names() {
        assert!(is_registry_reference(
            "ghcr.io/actions/actions-runner:2.330.0"
        ));
        assert!(is_registry_reference("127.0.0.1:5000/t/tiny:1"));
        assert!(is_registry_reference("localhost/x"));
        assert!(!is_registry_reference("tiny:1"));
        assert!(!is_registry_reference("sha256:abcdef012345"));
        let r = parse_reference("127.0.0.1:5000/t/tiny:1").expect("ref");
        assert_eq!(store_name(&r), "127.0.0.1:5000/t/tiny:1");
        let r = parse_reference(
            "127.0.0.1:5000/t/tiny@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .expect("ref");
        assert_eq!(store_name(&r), "127.0.0.1:5000/t/tiny:sha256-0123456789ab");
    }

    #[test]
    fn credentials_files_are_read_and_never_echoed() {
        use base64::Engine as _;
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret-pw");
        std::fs::write(
            &p,
            format!(r#"{{"auths":{{"https://reg.example:5000/":{{"auth":"{auth}"}},"other.example":{{"username":"u","password":"p"}}}}}}"#),
        )
        .expect("write");
        let a = credentials_for(Some(&p), "reg.example:5000").expect("auth");
        assert_eq!(a, RegistryAuth::Basic("ci".into(), "s3cret-pw".into()));
        assert_eq!(
            credentials_for(Some(&p), "nowhere.example").expect("anon"),
            RegistryAuth::Anonymous
        );
        std::fs::write(&p, "{\"auths\": {\"x\": {\"auth\": \"s3cret-pw\"").expect("write");
        let e = credentials_for(Some(&p), "x")
            .expect_err("error")
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn manifests_are_checked_against_their_digest() {
        let body = br#"{"schemaVersion":2}"#;
        let d = sha256_of(body);
        assert!(check_digest("r", body, &d, None).is_ok());
        assert!(check_digest("r", body, &d, Some(&d)).is_ok());
        assert!(check_digest("r", b"{}", &d, None).is_err());
        let other = sha256_of(b"x");
        assert!(check_digest("r", body, &d, Some(&other)).is_err());
    }
}
