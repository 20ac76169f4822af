//! Checkpoints: the log's head (sequence number and hash of a record, and the time) MAC'd with
//! HMAC-SHA256 under a key jobs can never reach, appended to a file outside the log directory
//! and shipped to the alert sinks. A copy kept where the host cannot rewrite it (a webhook
//! receiver, a JSON-lines file on another machine) lets `airlock audit verify --checkpoint`
//! find a log that was truncated or rewritten up to the newest checkpoint, even when the
//! unkeyed head was recomputed to match.
//!
//! The retention anchor (`audit.anchor`) is a checkpoint too: it names the last record that
//! retention removed, so the retained chain must start right after it and chain from its hash.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AuditError;

/// The `event` of every checkpoint line (sink copies mix them with alerts).
pub const EVENT: &str = crate::Kind::AuditCheckpoint.as_str();
/// The anchor file in the log directory.
pub const ANCHOR: &str = crate::Kind::AuditAnchor.as_str();
/// The key file, relative to airlock's data directory.
pub const KEY_FILE: &str = "keys/audit.key";
/// airlock's own checkpoint file, relative to the data directory (outside the log directory).
pub const CHECKPOINT_FILE: &str = "audit.checkpoints.jsonl";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The checkpoint MAC key: 32 random bytes, stored as hex in a root-only 0600 file.
#[derive(Clone)]
pub struct Key {
    bytes: Vec<u8>,
    id: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Key {
    /// A key from raw bytes (tests, or a key copied to a verifying machine).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"airlock-audit-key-id\n");
        h.update(bytes);
        Self {
            bytes: bytes.to_vec(),
            id: hex::encode(&h.finalize()[..8]),
        }
    }

    /// The key's public id (a hash of it): which key MAC'd a checkpoint.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads the key file. Refuses a key another user owns, or others than its owner could
    /// read or write: its MACs would prove nothing.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let mut f = std::fs::File::open(path).map_err(io(path))?;
        let m = f.metadata().map_err(io(path))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if m.uid() != me {
            return Err(io(path)(std::io::Error::other(format!(
                "the checkpoint key is owned by uid {}, not by this user ({me})",
                m.uid()
            ))));
        }
        if m.mode() & 0o077 != 0 {
            return Err(io(path)(std::io::Error::other(format!(
                "the checkpoint key is accessible to others (mode {:o}); chmod 600 it",
                m.mode() & 0o7777
            ))));
        }
        let mut s = String::new();
        f.read_to_string(&mut s).map_err(io(path))?;
        let bytes = hex::decode(s.trim()).map_err(|e| io(path)(std::io::Error::other(e)))?;
        if bytes.len() < 16 {
            return Err(io(path)(std::io::Error::other(
                "the checkpoint key is too short",
            )));
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// Reads the key file, creating it (32 random bytes, mode 0600, its directory 0700) on
    /// first use. Concurrent first uses agree on one key: it is created under a temporary
    /// name and hard-linked into place, and a loser reads the winner's.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        match Self::load(path) {
            Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            other => return other,
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let mut bytes = [0u8; 32];
        let mut got = 0;
        while got < bytes.len() {
            // SAFETY: writes at most the remaining length into our own buffer.
            let n =
                unsafe { libc::getrandom(bytes[got..].as_mut_ptr().cast(), bytes.len() - got, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io(path)(e));
            }
            got += usize::try_from(n).unwrap_or(0);
        }
        let tmp = dir.join(format!(".audit.key.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(format!("{}\n", hex::encode(bytes)).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp))?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Self::from_bytes(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io(path)(e)),
        }
    }

    fn mac(&self, msg: &[u8]) -> String {
        // HMAC takes keys of any length; this cannot fail.
        match Hmac::<Sha256>::new_from_slice(&self.bytes) {
            Ok(mut m) => {
                m.update(msg);
                hex::encode(m.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    fn check(&self, msg: &[u8], mac_hex: &str) -> bool {
        let Ok(want) = hex::decode(mac_hex) else {
            return false;
        };
        match Hmac::<Sha256>::new_from_slice(&self.bytes) {
            Ok(mut m) => {
                m.update(msg);
                m.verify_slice(&want).is_ok()
            }
            Err(_) => false,
        }
    }
}

/// One checkpoint: "record `seq` of the log has hash `head`", at `time_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`EVENT`].
    pub event: String,
    /// Format version (1).
    pub v: u32,
    /// Sequence number of the record.
    pub seq: u64,
    /// SHA-256 (hex) of that record's line.
    pub head: String,
    /// Unix time in milliseconds when the checkpoint was made.
    pub time_ms: u64,
    /// Why: `job.ended`, `records`, `interval`, `close`, `manual` or `retention` (an anchor).
    pub reason: String,
    /// The job whose end triggered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// [`Key::id`] of the key that MAC'd it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Hex HMAC-SHA256 of [`Checkpoint::message`] (absent when airlock had no key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What a MAC check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MacCheck {
    /// The MAC verifies under the key.
    Valid,
    /// It does not (forged, altered, or another key's).
    Invalid,
    /// The checkpoint has no MAC.
    Missing,
    /// No key was available: not checked.
    NotChecked,
}

impl Checkpoint {
    /// A checkpoint of record `seq` with hash `head`, made now, MAC'd when there is a key.
    pub fn new(key: Option<&Key>, seq: u64, head: &str, reason: &str, job: Option<&str>) -> Self {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut c = Self {
            event: EVENT.to_owned(),
            v: 1,
            seq,
            head: head.to_owned(),
            time_ms,
            reason: reason.to_owned(),
            job: job.map(str::to_owned),
            key_id: key.map(|k| k.id().to_owned()),
            mac: None,
        };
        c.mac = key.map(|k| k.mac(&c.message()));
        c
    }

    /// The exact bytes the MAC covers: one field per line, in this order (a receiver can
    /// recompute it): `airlock-audit-checkpoint v1`, seq, head, time_ms, reason, job (or
    /// empty). No field may contain a newline.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "airlock-audit-checkpoint v{}\n{}\n{}\n{}\n{}\n{}\n",
            self.v,
            self.seq,
            self.head,
            self.time_ms,
            self.reason,
            self.job.as_deref().unwrap_or("")
        )
        .into_bytes()
    }

    /// Checks the MAC under `key` (if any).
    pub fn check(&self, key: Option<&Key>) -> MacCheck {
        let Some(key) = key else {
            return MacCheck::NotChecked;
        };
        let Some(mac) = &self.mac else {
            return MacCheck::Missing;
        };
        let clean = !self.reason.contains('\n')
            && !self.head.contains('\n')
            && !self.job.as_deref().unwrap_or("").contains('\n');
        if self.v == 1 && clean && key.check(&self.message(), mac) {
            MacCheck::Valid
        } else {
            MacCheck::Invalid
        }
    }

    /// An id for the sinks (the webhook's `X-Airlock-Alert-Id`; receivers drop duplicates).
    pub fn id(&self) -> String {
        format!(
            "ckpt-{}-{}-{}",
            self.seq,
            self.reason,
            &self.head[..self.head.len().min(16)]
        )
    }

    /// The line written to files and sinks: the checkpoint plus its `id`.
    pub fn to_line(&self) -> Result<Vec<u8>, AuditError> {
        let mut v = serde_json::to_value(self)?;
        v["id"] = self.id().into();
        Ok(serde_json::to_vec(&v)?)
    }
}

/// Appends one checkpoint line to `path` (created with its directory) and syncs it.
pub fn append(path: &Path, c: &Checkpoint) -> Result<(), AuditError> {
    let mut line = c.to_line()?;
    line.push(b'\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(&line).map_err(io(path))?;
    f.sync_data().map_err(io(path))
}

/// A checkpoint and its 1-based line number.
pub type Numbered = (usize, Checkpoint);

/// A line of a checkpoint file that claims to be a checkpoint but is not: (line, why).
pub type BadLine = (usize, String);

/// The checkpoints in a file of JSON lines: airlock's own checkpoint file, or a sink's copy
/// (alert lines are skipped). A line that says it is a checkpoint but does not parse is
/// returned as an error message with its line number.
pub fn read(path: &Path) -> Result<(Vec<Checkpoint>, Vec<BadLine>), AuditError> {
    let (cs, bad) = read_numbered(path)?;
    Ok((cs.into_iter().map(|(_, c)| c).collect(), bad))
}

/// [`read`], each checkpoint with its 1-based line number.
pub fn read_numbered(path: &Path) -> Result<(Vec<Numbered>, Vec<BadLine>), AuditError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
        let line = line.map_err(io(path))?;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            if !line.iter().all(u8::is_ascii_whitespace) && contains(&line, EVENT.as_bytes()) {
                bad.push((i + 1, "unreadable checkpoint line".to_owned()));
            }
            continue;
        };
        if v.get("event").and_then(|e| e.as_str()) != Some(EVENT) {
            continue;
        }
        match serde_json::from_value::<Checkpoint>(v) {
            Ok(c) => out.push((i + 1, c)),
            Err(e) => bad.push((i + 1, format!("malformed checkpoint: {e}"))),
        }
    }
    Ok((out, bad))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The anchor of the log in `dir`, if retention has removed records.
pub fn read_anchor(dir: &Path) -> Result<Option<Checkpoint>, AuditError> {
    let p = dir.join(ANCHOR);
    match std::fs::read(&p) {
        Ok(d) => Ok(Some(serde_json::from_slice(&d)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&p)(e)),
    }
}

/// Replaces the anchor atomically (write, fsync, rename, fsync the directory).
pub(crate) fn write_anchor(dir: &Path, c: &Checkpoint) -> Result<(), AuditError> {
    let p = dir.join(ANCHOR);
    let tmp = dir.join(format!("{ANCHOR}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&serde_json::to_vec(c)?)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(io(&p))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Where the key and airlock's own checkpoint file live for a data directory.
pub fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join(KEY_FILE), data_dir.join(CHECKPOINT_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_under_its_key_and_unaltered() {
        let k = Key::from_bytes(b"0123456789abcdef0123456789abcdef");
        let c = Checkpoint::new(Some(&k), 7, &"a".repeat(64), "job.ended", Some("j-1"));
        assert_eq!(c.check(Some(&k)), MacCheck::Valid);
        assert_eq!(c.check(None), MacCheck::NotChecked);
        let other = Key::from_bytes(b"another key, another host.......");
        assert_eq!(c.check(Some(&other)), MacCheck::Invalid);
        for alter in [
            |c: &mut Checkpoint| c.seq += 1,
            |c: &mut Checkpoint| c.head = "b".repeat(64),
            |c: &mut Checkpoint| c.time_ms += 1,
            |c: &mut Checkpoint| c.reason = "close".into(),
            |c: &mut Checkpoint| c.job = None,
        ] {
            let mut x = c.clone();
            alter(&mut x);
            assert_eq!(x.check(Some(&k)), MacCheck::Invalid, "{x:?}");
        }
        let mut unsigned = c.clone();
        unsigned.mac = None;
        assert_eq!(unsigned.check(Some(&k)), MacCheck::Missing);
    }

    #[test]
    fn the_key_is_created_once_root_only_and_refused_when_others_can_read_it() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("keys/audit.key");
        let a = Key::load_or_create(&p).expect("create");
        let b = Key::load_or_create(&p).expect("load");
        assert_eq!(a.id(), b.id());
        let mode = std::fs::metadata(&p).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(p.parent().expect("dir"))
            .expect("meta")
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(Key::load(&p).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&p, Some(65534), None).expect("chown");
            assert!(Key::load(&p).is_err(), "a key someone else owns");
        }
    }

    #[test]
    fn checkpoints_are_read_from_a_sink_copy_among_alerts() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("sink.jsonl");
        std::fs::write(&p, "{\"id\":\"a1\",\"detector\":\"x\"}\n").expect("alert");
        let c = Checkpoint::new(None, 3, &"c".repeat(64), "records", None);
        append(&p, &c).expect("append");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .and_then(|mut f| f.write_all(b"{\"event\":\"audit.checkpoint\",\"seq\":\"x\"}\n"))
            .expect("bad");
        let (cs, bad) = read(&p).expect("read");
        assert_eq!(cs, vec![c]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 3);
    }
}
