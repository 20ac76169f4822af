//! The audit log: append-only JSON lines in which every record carries its sequence number and
//! the SHA-256 of the previous record's line, plus a checkpointed head (the last sequence
//! number and hash, replaced atomically after each append).
//!
//! What [`verify`] detects, and how:
//! - an edited record: its hash no longer matches the next record's `prev`, or (for the last
//!   record) the head's hash;
//! - a deleted, inserted or reordered record: the sequence numbers are not consecutive, or the
//!   `prev` chain breaks;
//! - a truncated tail: the last record is not the one the head names;
//! - a rotated-away segment: each segment's first record chains to the last of the one before.
//!
//! The head cannot protect against someone who truncates or rewrites the log *and* recomputes
//! the head: [`checkpoint`]s (MAC'd heads, written outside the log directory and shipped to the
//! alert sinks) can, up to the newest checkpoint checked ([`verify_with`]). Retention removes
//! whole old segments and leaves a MAC'd anchor naming where the retained chain starts.
#![deny(missing_docs)]

pub mod alert;
pub mod checkpoint;
pub mod detect;
pub mod kind;
pub mod ocsf;
pub mod payload;
pub mod record;
pub mod report;
pub mod sink;

pub use alert::{summary, Alert, Severity, Technique};
pub use checkpoint::{Checkpoint, Key, MacCheck};
pub use detect::{
    detect, detect_jobs, detect_report, DetectContext, DetectError, Detection, Detector,
};
pub use kind::Kind;
pub use ocsf::{alert_to_ocsf, to_ocsf};
pub use record::ConnRecord;
pub use report::{Failure, FailureKind, JobOutcome, JobReport, TeardownFailure, TeardownStep};
pub use sink::{
    signature, CheckpointShipper, FlushReport, JsonlSink, SinkError, Sinks, WebhookConfig,
    WebhookSink,
};

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod limit;
pub mod queue;
pub mod redact;
pub use queue::{AuditQueue, AuditSender, JobAudit};
pub use redact::Redactor;
use sha2::{Digest, Sha256};

/// The `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Log file name in the audit directory.
pub const LOG: &str = "audit.jsonl";
/// Head checkpoint file name.
pub const HEAD: &str = "audit.head";
/// Lock file that serialises writers.
pub const LOCK: &str = "audit.lock";
/// The current segment is rotated before a batch that would find it larger than this.
pub const ROTATE_BYTES: u64 = 256 << 20;

/// Errors of the audit component.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log could not be read or written.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("encoding an audit record: {0}")]
    Encode(#[from] serde_json::Error),
    /// The writer thread failed earlier; nothing more can be recorded.
    #[error("the audit log cannot be written: {0}")]
    Writer(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, from 1, across rotations.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: u128,
    /// Event kind, e.g. `job.started`.
    pub kind: String,
    /// The job it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Event fields.
    #[serde(default)]
    pub data: serde_json::Value,
    /// SHA-256 (hex) of the previous record's line.
    pub prev: String,
}

impl Record {
    /// Whether this record is of kind `k`.
    pub fn is(&self, k: Kind) -> bool {
        self.kind == k.as_str()
    }

    /// Its kind, if it is one this airlock writes (the log is external input: `None` for
    /// anything else, which readers skip).
    pub fn known_kind(&self) -> Option<Kind> {
        Kind::parse(&self.kind)
    }
}

/// The checkpointed head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Sequence number of the last record.
    pub seq: u64,
    /// SHA-256 (hex) of the last record's line.
    pub hash: String,
}

fn hash(line: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(line);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// An event waiting to be appended: a record without its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unix time in milliseconds, taken when the event happened (not when it was written).
    pub time_ms: u128,
    /// Event kind.
    pub kind: Kind,
    /// The job it concerns.
    pub job: Option<String>,
    /// Event fields.
    pub data: serde_json::Value,
}

impl Event {
    /// An event that happens now.
    pub fn new(kind: Kind, job: Option<&str>, data: serde_json::Value) -> Self {
        Self {
            time_ms: now_ms(),
            kind,
            job: job.map(str::to_owned),
            data,
        }
    }
}

/// An open audit log. Several processes (concurrent `airlock run`s, `serve`) may append to the
/// same log: every batch is written under an exclusive `flock` on `audit.lock`, continuing from
/// the head on disk, so the chain stays linear whoever writes.
pub struct AuditLog {
    dir: PathBuf,
    lock: File,
    rotate_bytes: u64,
    redactor: Redactor,
    settings: LogSettings,
    /// Records this handle appended since its last checkpoint.
    ck_since: u64,
    ck_last: std::time::Instant,
    /// When this handle last shipped a checkpoint to the sinks.
    ship_last: Option<std::time::Instant>,
    /// The head after this handle's last batch.
    last_head: Option<Head>,
    /// (inode, time of the first record) of the current segment, for age rotation.
    cur_first: Option<(u64, u128)>,
}

/// How much of the log is kept (see [`LogSettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// All segments together, in bytes; the oldest closed segments are deleted beyond it.
    pub max_bytes: u64,
    /// Closed segments whose newest record is older than this are deleted.
    pub max_age: std::time::Duration,
}

impl Retention {
    /// The current segment is closed once its first record is this old, so that age
    /// retention can remove it later: a quarter of `max_age`, at most a day.
    pub fn rotate_age(&self) -> std::time::Duration {
        (self.max_age / 4).min(std::time::Duration::from_secs(86400))
    }
}

/// Retention and checkpoints of a log (the policy's `[audit]`); the default is neither
/// (every segment kept, no checkpoints).
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Segment size (default [`ROTATE_BYTES`]).
    pub segment_bytes: u64,
    /// What to keep; `None` keeps everything.
    pub retention: Option<Retention>,
    /// The key that MACs checkpoints and the retention anchor.
    pub key: Option<Key>,
    /// airlock's own checkpoint file (outside the log directory).
    pub checkpoint_file: Option<PathBuf>,
    /// A checkpoint at least every this many records this handle appends.
    pub checkpoint_records: u64,
    /// A checkpoint at the first append this long after the previous one.
    pub checkpoint_interval: std::time::Duration,
    /// Where checkpoints are shipped besides the file (the policy's alert sinks).
    pub ship: Option<CheckpointShipper>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            segment_bytes: ROTATE_BYTES,
            retention: None,
            key: None,
            checkpoint_file: None,
            checkpoint_records: 1000,
            checkpoint_interval: std::time::Duration::from_secs(60),
            ship: None,
        }
    }
}

impl LogSettings {
    /// From the policy's `[audit]`, with the key (created on first use) and checkpoint file
    /// of airlock's data directory ([`checkpoint::paths`]).
    pub fn from_policy(
        a: &airlock_policy::AuditLogSettings,
        data_dir: &Path,
    ) -> Result<Self, AuditError> {
        let (key, file) = checkpoint::paths(data_dir);
        Ok(Self {
            segment_bytes: a.segment_bytes(),
            retention: Some(Retention {
                max_bytes: a.max_bytes.0,
                max_age: a.max_age.0,
            }),
            key: Some(Key::load_or_create(&key)?),
            checkpoint_file: Some(file),
            checkpoint_records: a.checkpoint_records.max(1),
            checkpoint_interval: a.checkpoint_interval.0,
            ship: None,
        })
    }

    fn checkpoints(&self) -> bool {
        self.checkpoint_file.is_some() || self.ship.is_some()
    }
}

/// Holds the log's lock until dropped. Keeps the descriptor, not a borrow of the file, so
/// the log can be changed while it is held; the file lives as long as the log.
struct Locked(std::os::fd::RawFd);

impl Locked {
    fn take(f: &File, path: &Path) -> Result<Self, AuditError> {
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let r = unsafe { libc::flock(fd, libc::LOCK_EX) };
            if r == 0 {
                return Ok(Self(fd));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io(path)(e));
            }
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: as in `take`; closing the file would release it too.
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}

impl Drop for AuditLog {
    /// Records appended since the last checkpoint get one now (`close`), so a process that
    /// ends (serve's shutdown, a refused job) leaves its records covered.
    fn drop(&mut self) {
        if self.ck_since > 0 && self.settings.checkpoints() {
            if let Some(h) = self.last_head.clone() {
                let _ = self.write_checkpoint(&h, "close", None);
            }
        }
    }
}

#[derive(Deserialize)]
struct TimeOnly {
    time_ms: u128,
}

/// The last complete line of `path` (without its newline); `None` when the file is missing,
/// empty or ends in a torn write. Reads only the tail.
fn last_line(path: &Path) -> Result<Option<Vec<u8>>, AuditError> {
    use std::io::{Seek, SeekFrom};
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let len = f.metadata().map_err(io(path))?.len();
    if len == 0 {
        return Ok(None);
    }
    // Read backwards in growing chunks until the last line is whole.
    let mut chunk = 4096u64;
    loop {
        let start = len.saturating_sub(chunk);
        f.seek(SeekFrom::Start(start)).map_err(io(path))?;
        let mut buf = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
        Read::by_ref(&mut f)
            .take(len - start)
            .read_to_end(&mut buf)
            .map_err(io(path))?;
        if buf.last() != Some(&b'\n') {
            // A torn write: nothing a head could name; left to `verify`.
            return Ok(None);
        }
        let body = &buf[..buf.len() - 1];
        match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => return Ok(Some(body[i + 1..].to_vec())),
            None if start == 0 => return Ok(Some(body.to_vec())),
            None => chunk = chunk.saturating_mul(4),
        }
    }
}

/// The first line of `path`, if it has a complete one.
fn first_line(path: &Path) -> Result<Option<Vec<u8>>, AuditError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let mut line = Vec::new();
    BufReader::new(f)
        .read_until(b'\n', &mut line)
        .map_err(io(path))?;
    Ok((line.pop() == Some(b'\n')).then_some(line))
}

/// The number in a closed segment's name: the first sequence number of the segment after it.
fn segment_next(p: &Path) -> Option<u64> {
    p.file_name()?
        .to_str()?
        .strip_prefix(&format!("{LOG}."))?
        .parse()
        .ok()
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`. Fails unless the log can be written.
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lp = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lp)
            .map_err(io(&lp))?;
        let log = dir.join(LOG);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(&log))?;
        let me = Self {
            dir: dir.to_owned(),
            lock,
            rotate_bytes: ROTATE_BYTES,
            redactor: Redactor::default(),
            settings: LogSettings::default(),
            ck_since: 0,
            ck_last: std::time::Instant::now(),
            ship_last: None,
            last_head: None,
            cur_first: None,
        };
        me.head()?;
        Ok(me)
    }

    /// Applies retention and checkpoint settings, and applies retention at once (a log that
    /// grew under other settings is brought within the bounds).
    pub fn configure(&mut self, settings: LogSettings) -> Result<(), AuditError> {
        self.rotate_bytes = settings.segment_bytes.max(1);
        self.settings = settings;
        if self.settings.retention.is_some() {
            let lp = self.dir.join(LOCK);
            let _g = Locked::take(&self.lock, &lp)?;
            self.prune_locked()?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the head as it is on disk now (`airlock audit checkpoint`).
    pub fn checkpoint_now(&mut self, reason: &str) -> Result<Checkpoint, AuditError> {
        let lp = self.dir.join(LOCK);
        let _g = Locked::take(&self.lock, &lp)?;
        let mut head = self.head()?;
        self.recover_head(&mut head)?;
        self.write_checkpoint(&head, reason, None)
    }

    /// Errors of shipping checkpoints to the sinks since the last call (the local file is
    /// written or the append fails).
    pub fn take_ship_errors(&mut self) -> Vec<String> {
        self.settings
            .ship
            .as_ref()
            .map(CheckpointShipper::take_errors)
            .unwrap_or_default()
    }

    fn write_checkpoint(
        &mut self,
        head: &Head,
        reason: &str,
        job: Option<&str>,
    ) -> Result<Checkpoint, AuditError> {
        let c = Checkpoint::new(
            self.settings.key.as_ref(),
            head.seq,
            &head.hash,
            reason,
            job,
        );
        if let Some(f) = &self.settings.checkpoint_file {
            checkpoint::append(f, &c)?;
        }
        // A job flooding records must not become a flood of POSTs and outbox files: the
        // count-driven checkpoints reach the sinks at most once per interval; a job's end,
        // a close and a manual checkpoint always do.
        let throttled = reason == "records"
            && self
                .ship_last
                .is_some_and(|t| t.elapsed() < self.settings.checkpoint_interval);
        if let (Some(s), false) = (&self.settings.ship, throttled) {
            s.ship(&c);
            self.ship_last = Some(std::time::Instant::now());
        }
        self.ck_since = 0;
        self.ck_last = std::time::Instant::now();
        Ok(c)
    }

    /// Whether the current segment's first record is older than retention's rotation age.
    fn current_too_old(&mut self, log: &Path, ino: u64) -> bool {
        let Some(r) = self.settings.retention else {
            return false;
        };
        let first = match self.cur_first {
            Some((i, t)) if i == ino => Some(t),
            _ => {
                let t = first_line(log)
                    .ok()
                    .flatten()
                    .and_then(|l| serde_json::from_slice::<TimeOnly>(&l).ok())
                    .map(|t| t.time_ms);
                if let Some(t) = t {
                    self.cur_first = Some((ino, t));
                }
                t
            }
        };
        first.is_some_and(|t| now_ms().saturating_sub(t) > r.rotate_age().as_millis())
    }

    /// Deletes the oldest closed segments beyond the retention bounds; the caller holds the
    /// lock. Only a prefix of the chain is ever removed, and the anchor naming the last
    /// removed record is written (and checkpointed) *before* anything is deleted, so a crash
    /// in between leaves segments older than the anchor, which `verify` skips and the next
    /// prune removes.
    fn prune_locked(&self) -> Result<(), AuditError> {
        let Some(r) = self.settings.retention else {
            return Ok(());
        };
        let anchor = checkpoint::read_anchor(&self.dir)?;
        let cur = std::fs::metadata(self.dir.join(LOG))
            .map(|m| m.len())
            .unwrap_or(0);
        let mut closed: Vec<(PathBuf, u64)> = Vec::new();
        for p in segments(&self.dir) {
            if p.file_name().and_then(|n| n.to_str()) == Some(LOG) {
                continue;
            }
            let len = std::fs::metadata(&p).map_err(io(&p))?.len();
            closed.push((p, len));
        }
        let mut total: u64 = cur + closed.iter().map(|(_, l)| l).sum::<u64>();
        let now = now_ms();
        let mut remove = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        for (p, len) in &closed {
            // Left over from an interrupted prune: already behind the anchor.
            if let (Some(a), Some(n)) = (&anchor, segment_next(p)) {
                if n <= a.seq + 1 {
                    std::fs::remove_file(p).map_err(io(p))?;
                    total = total.saturating_sub(*len);
                    continue;
                }
            }
            let line = last_line(p)?;
            let newest = line
                .as_deref()
                .and_then(|l| serde_json::from_slice::<TimeOnly>(l).ok())
                .map(|t| t.time_ms);
            let too_old = newest.is_some_and(|t| now.saturating_sub(t) > r.max_age.as_millis());
            if total <= r.max_bytes && !too_old {
                break;
            }
            // A segment whose last line is not a record cannot be anchored: keep it (and
            // everything after it) for `verify` to report.
            let Some(line) = line else { break };
            if serde_json::from_slice::<TimeOnly>(&line).is_err() {
                break;
            }
            total = total.saturating_sub(*len);
            remove.push(p.clone());
            last = Some(line);
        }
        let Some(line) = last else {
            return Ok(());
        };
        #[derive(Deserialize)]
        struct Seq {
            seq: u64,
        }
        let seq = serde_json::from_slice::<Seq>(&line)?.seq;
        let head = Head {
            seq,
            hash: hash(&line),
        };
        let c = Checkpoint::new(
            self.settings.key.as_ref(),
            head.seq,
            &head.hash,
            "retention",
            None,
        );
        checkpoint::write_anchor(&self.dir, &c)?;
        if let Some(f) = &self.settings.checkpoint_file {
            checkpoint::append(f, &c)?;
        }
        if let Some(s) = &self.settings.ship {
            s.ship(&c);
        }
        for p in remove {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        Ok(())
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The head as it is on disk now.
    pub fn head(&self) -> Result<Head, AuditError> {
        let head_path = self.dir.join(HEAD);
        match std::fs::read(&head_path) {
            Ok(d) => Ok(serde_json::from_slice(&d)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Head {
                seq: 0,
                hash: GENESIS.to_owned(),
            }),
            Err(e) => Err(io(&head_path)(e)),
        }
    }

    /// Appends a record and moves the head; returns its sequence number. Durable when it
    /// returns (the record is fsynced before the head names it).
    pub fn append(
        &mut self,
        kind: Kind,
        job: Option<&str>,
        data: serde_json::Value,
    ) -> Result<u64, AuditError> {
        let recs = self.append_batch(vec![Event::new(kind, job, data)])?;
        Ok(recs.last().map(|r| r.seq).unwrap_or(0))
    }

    /// Appends events in order as one write and one fsync (group commit), and returns the
    /// records as written. Durable when it returns.
    pub fn append_batch(&mut self, events: Vec<Event>) -> Result<Vec<Record>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let lp = self.dir.join(LOCK);
        let _g = Locked::take(&self.lock, &lp)?;
        let mut head = self.head()?;
        self.recover_head(&mut head)?;
        let mut buf = Vec::with_capacity(events.len() * 256);
        let mut out = Vec::with_capacity(events.len());
        for mut ev in events {
            self.redactor.redact_value(&mut ev.data);
            let rec = Record {
                seq: head.seq + 1,
                time_ms: ev.time_ms,
                kind: ev.kind.as_str().to_owned(),
                job: ev.job,
                data: ev.data,
                prev: std::mem::take(&mut head.hash),
            };
            let start = buf.len();
            serde_json::to_writer(&mut buf, &rec)?;
            head = Head {
                seq: rec.seq,
                hash: hash(&buf[start..]),
            };
            buf.push(b'\n');
            out.push(rec);
        }
        // Opened per batch: another process may have rotated the file since.
        let log = self.dir.join(LOG);
        let rotate = match std::fs::metadata(&log) {
            Ok(m) if m.len() > 0 => {
                use std::os::unix::fs::MetadataExt;
                m.len() >= self.rotate_bytes || self.current_too_old(&log, m.ino())
            }
            _ => false,
        };
        if rotate {
            self.rotate_locked(out.first().map(|r| r.seq).unwrap_or(head.seq + 1))?;
            self.cur_first = None;
            self.prune_locked()?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(&log))?;
        f.write_all(&buf).map_err(io(&log))?;
        f.sync_data().map_err(io(&log))?;
        let tmp = self.dir.join(format!("{HEAD}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&head)?).map_err(io(&tmp))?;
        let hp = self.dir.join(HEAD);
        std::fs::rename(&tmp, &hp).map_err(io(&hp))?;
        if self.settings.checkpoints() {
            self.ck_since += out.len() as u64;
            // A job's end is checkpointed at once: its records are then covered.
            let ended = out.iter().rev().find(|r| r.is(Kind::JobEnded));
            let reason = if ended.is_some() {
                Some(Kind::JobEnded.as_str())
            } else if self.ck_since >= self.settings.checkpoint_records {
                Some("records")
            } else if self.ck_last.elapsed() >= self.settings.checkpoint_interval {
                Some("interval")
            } else {
                None
            };
            if let Some(reason) = reason {
                let job = ended.and_then(|r| r.job.clone());
                self.write_checkpoint(&head, reason, job.as_deref())?;
            }
        }
        self.last_head = Some(head);
        Ok(out)
    }

    /// A writer killed between appending its records and moving the head (kill -9 of a
    /// process that writes the log) leaves complete records the head does not name. Taking
    /// the head as it is would fork the chain (the next record would repeat a sequence number
    /// and chain to the wrong record), so the head is moved to the log's last record first.
    /// Called under the lock. Reads only the tail of the log.
    fn recover_head(&self, head: &mut Head) -> Result<(), AuditError> {
        let Some(line) = last_line(&self.dir.join(LOG))? else {
            return Ok(());
        };
        #[derive(Deserialize)]
        struct Seq {
            seq: u64,
        }
        if let Ok(last) = serde_json::from_slice::<Seq>(&line) {
            if last.seq > head.seq {
                *head = Head {
                    seq: last.seq,
                    hash: hash(&line),
                };
            }
        }
        Ok(())
    }

    /// Starts a new segment: the current log becomes `audit.jsonl.<first seq of the next>`; the
    /// chain continues across the boundary.
    pub fn rotate(&mut self) -> Result<PathBuf, AuditError> {
        let lp = self.dir.join(LOCK);
        let _g = Locked::take(&self.lock, &lp)?;
        let mut head = self.head()?;
        self.recover_head(&mut head)?;
        self.rotate_and_prune(head.seq + 1)
    }

    /// Replaces these secrets' values in every event appended from now on (see [`redact`]).
    pub fn set_redactor(&mut self, redactor: Redactor) {
        self.redactor = redactor;
    }

    /// Rotates the segment when it has reached `bytes` (default [`ROTATE_BYTES`]).
    pub fn set_rotate_bytes(&mut self, bytes: u64) {
        self.rotate_bytes = bytes.max(1);
    }

    /// The rotation itself, then retention (`airlock audit rotate`).
    fn rotate_and_prune(&mut self, next: u64) -> Result<PathBuf, AuditError> {
        let p = self.rotate_locked(next)?;
        self.cur_first = None;
        self.prune_locked()?;
        Ok(p)
    }

    /// The rotation itself; the caller holds the lock. `next` is the first sequence number
    /// of the new segment.
    fn rotate_locked(&self, next: u64) -> Result<PathBuf, AuditError> {
        let log = self.dir.join(LOG);
        let rotated = self.dir.join(format!("{LOG}.{next:020}"));
        // An empty segment is not rotated (its name would be the previous segment's), and an
        // existing segment is never overwritten.
        if std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) == 0 {
            return Err(io(&log)(std::io::Error::other(
                "nothing to rotate: the segment is empty",
            )));
        }
        if rotated.exists() {
            return Err(io(&rotated)(std::io::Error::from(
                std::io::ErrorKind::AlreadyExists,
            )));
        }
        std::fs::rename(&log, &rotated).map_err(io(&log))?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(&log))?;
        Ok(rotated)
    }
}

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The segment file.
    pub file: PathBuf,
    /// 1-based line in it (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The result of [`verify`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// Records read.
    pub records: u64,
    /// Everything wrong; empty means the log is intact.
    pub problems: Vec<Problem>,
    /// Sequence number the retained chain starts at (1 unless retention removed records).
    pub first_seq: u64,
    /// Sequence number of the last record read (`first_seq - 1` when there is none).
    pub last_seq: u64,
    /// No records and no anchor (or no directory): allowed only with `allow_empty`.
    pub empty: bool,
    /// The retention anchor, when retention has removed records.
    pub anchor: Option<AnchorReport>,
    /// Closed segments older than the anchor (left by an interrupted retention), skipped.
    pub stale_segments: usize,
    /// What the checkpoints showed.
    pub checkpoints: CheckpointReport,
    /// [`Key::id`] of the key MACs were checked with; `None`: MACs were not checked.
    pub key_id: Option<String>,
}

/// The retention anchor as [`verify`] found it.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorReport {
    /// The last record retention removed; the retained chain starts after it.
    pub seq: u64,
    /// When it was removed.
    pub time_ms: u64,
    /// Its MAC.
    pub mac: MacCheck,
}

/// What [`verify`] did with the checkpoints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointReport {
    /// The files they were read from.
    pub files: Vec<PathBuf>,
    /// Checkpoints read.
    pub read: usize,
    /// Checkpoints whose record was found with the hash they name.
    pub matched: usize,
    /// Checkpoints of records retention has removed (not checkable).
    pub before_retention: usize,
    /// Checkpoints whose MAC verified under the key.
    pub mac_valid: usize,
    /// The newest record a checkpoint names.
    pub newest_seq: Option<u64>,
    /// When that checkpoint was made.
    pub newest_time_ms: Option<u64>,
    /// Records after the newest checkpoint: a truncation among them is not detectable.
    pub uncovered: u64,
}

/// How to [`verify_with`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The checkpoint key: MACs of checkpoints and the anchor are checked with it.
    pub key: Option<Key>,
    /// Files of checkpoint lines (airlock's own, or a sink's copy) to check the log against.
    pub checkpoint_files: Vec<PathBuf>,
    /// A missing or empty log is not a problem (it is still reported as `empty`).
    pub allow_empty: bool,
}

/// The segments of the log in `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{LOG}.")))
                })
                .collect()
        })
        .unwrap_or_default();
    rotated.sort();
    let cur = dir.join(LOG);
    if cur.exists() {
        rotated.push(cur);
    }
    rotated
}

/// Reads every record of the log in `dir` (for `audit show`), skipping lines that do not parse.
pub fn read_all(dir: &Path) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    for seg in segments(dir) {
        let f = File::open(&seg).map_err(io(&seg))?;
        for line in BufReader::new(f).lines() {
            let line = line.map_err(io(&seg))?;
            if let Ok(r) = serde_json::from_str(&line) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// What [`verify`] needs of a line; everything else is skipped without being built.
#[derive(Deserialize)]
struct Link<'a> {
    seq: u64,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    prev: std::borrow::Cow<'a, str>,
}

/// Bytes read and checked per parallel block.
const VERIFY_CHUNK: usize = 16 << 20;

/// `(seq, prev)` of a line or why it is not a record, and the line's hash.
type LinkResult = (Result<(u64, String), String>, String);

/// Parses and hashes one line.
fn link_of(line: &[u8]) -> LinkResult {
    let parsed = match serde_json::from_slice::<Link<'_>>(line) {
        Ok(l) if !l.kind.is_empty() => Ok((l.seq, l.prev.into_owned())),
        Ok(_) => Err("not a record: empty kind".to_owned()),
        Err(e) => Err(format!("not a record: {e}")),
    };
    (parsed, hash(line))
}

/// Checks the chain of every segment and the head. Lines are parsed and hashed in parallel
/// blocks; the chain itself is then walked in order.
pub fn verify(dir: &Path) -> Result<Verification, AuditError> {
    verify_with(dir, &VerifyOptions::default())
}

/// [`verify`] with a key, checkpoint files, and a choice about empty logs. On top of the
/// chain and head it checks the retention anchor (the chain must start right after the
/// record it names and chain from its hash; its MAC with the key) and every checkpoint (the
/// record it names must be in the log with the hash it names; its MAC with the key).
pub fn verify_with(dir: &Path, opts: &VerifyOptions) -> Result<Verification, AuditError> {
    let mut v = Verification {
        key_id: opts.key.as_ref().map(|k| k.id().to_owned()),
        ..Verification::default()
    };
    let key = opts.key.as_ref();
    if !dir.is_dir() {
        v.empty = true;
        if !opts.allow_empty {
            v.problems.push(Problem {
                file: dir.to_owned(),
                line: 0,
                message: "no audit log here: the directory does not exist".to_owned(),
            });
        }
        return Ok(v);
    }
    let mut expect_seq = 1u64;
    let mut prev = GENESIS.to_owned();
    let anchor = checkpoint::read_anchor(dir);
    let anchor = match anchor {
        Ok(a) => a,
        Err(e) => {
            v.problems.push(Problem {
                file: dir.join(checkpoint::ANCHOR),
                line: 0,
                message: format!("unreadable retention anchor: {e}"),
            });
            None
        }
    };
    if let Some(a) = &anchor {
        let mac = a.check(key);
        match mac {
            MacCheck::Invalid | MacCheck::Missing => v.problems.push(Problem {
                file: dir.join(checkpoint::ANCHOR),
                line: 0,
                message: format!(
                    "the retention anchor's MAC does not verify ({}): records before {} were removed by someone other than airlock's retention",
                    if mac == MacCheck::Missing { "no MAC" } else { "forged or altered" },
                    a.seq + 1
                ),
            }),
            MacCheck::Valid | MacCheck::NotChecked => {}
        }
        v.anchor = Some(AnchorReport {
            seq: a.seq,
            time_ms: a.time_ms,
            mac,
        });
        expect_seq = a.seq + 1;
        prev = a.head.clone();
    }
    v.first_seq = expect_seq;
    // Checkpoints, by the sequence number they name.
    let mut cps: Vec<(PathBuf, usize, Checkpoint, bool)> = Vec::new();
    for f in &opts.checkpoint_files {
        v.checkpoints.files.push(f.clone());
        match checkpoint::read_numbered(f) {
            Ok((cs, bad)) => {
                for (line, m) in bad {
                    v.problems.push(Problem {
                        file: f.clone(),
                        line,
                        message: m,
                    });
                }
                // A file given to check against that holds nothing checks nothing: emptied,
                // or the wrong file. Either way the log is not verified against it.
                if cs.is_empty() {
                    v.problems.push(Problem {
                        file: f.clone(),
                        line: 0,
                        message: "no checkpoint in this file (emptied, or not a checkpoint file)"
                            .to_owned(),
                    });
                }
                cps.extend(cs.into_iter().map(|(line, c)| (f.clone(), line, c, false)));
            }
            Err(e) => v.problems.push(Problem {
                file: f.clone(),
                line: 0,
                message: format!("checkpoints unreadable: {e}"),
            }),
        }
    }
    v.checkpoints.read = cps.len();
    let mut by_seq: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
    for (i, (file, n, c, _)) in cps.iter().enumerate() {
        match c.check(key) {
            MacCheck::Valid => v.checkpoints.mac_valid += 1,
            MacCheck::NotChecked => {}
            m => v.problems.push(Problem {
                file: file.clone(),
                line: *n,
                message: format!(
                    "checkpoint on line {} (record {}, reason {}): {} under key {}: forged or altered, or made with another host's key",
                    n,
                    c.seq,
                    c.reason,
                    if m == MacCheck::Missing { "no MAC" } else { "the MAC does not verify" },
                    key.map(Key::id).unwrap_or_default()
                ),
            }),
        }
        by_seq.entry(c.seq).or_default().push(i);
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    for seg in segments(dir) {
        if let (Some(a), Some(n)) = (&anchor, segment_next(&seg)) {
            if n <= a.seq + 1 {
                v.stale_segments += 1;
                continue;
            }
        }
        let mut f = File::open(&seg).map_err(io(&seg))?;
        let mut lineno = 0usize;
        // Read in large chunks cut at a newline; lines are slices of the chunk (no copy).
        let mut carry: Vec<u8> = Vec::new();
        let mut eof = false;
        while !eof {
            let mut buf = std::mem::take(&mut carry);
            let start = buf.len();
            buf.resize(start + VERIFY_CHUNK, 0);
            let mut filled = start;
            while filled < buf.len() {
                match f.read(&mut buf[filled..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io(&seg)(e)),
                }
            }
            buf.truncate(filled);
            if !eof {
                match buf.iter().rposition(|b| *b == b'\n') {
                    Some(i) => carry = buf.split_off(i + 1),
                    // One line longer than a chunk: read on.
                    None => {
                        carry = buf;
                        continue;
                    }
                }
            }
            let mut block: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
            if buf.last() == Some(&b'\n') {
                block.pop();
            }
            if block.is_empty() {
                continue;
            }
            let per = block.len().div_ceil(threads);
            let results: Vec<LinkResult> = std::thread::scope(|sc| {
                let hs: Vec<_> = block
                    .chunks(per)
                    .map(|c| sc.spawn(move || c.iter().map(|l| link_of(l)).collect::<Vec<_>>()))
                    .collect();
                hs.into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            for (line, (parsed, h)) in block.iter().zip(results) {
                lineno += 1;
                if line.is_empty() {
                    continue;
                }
                let mut problem = |m: String| {
                    v.problems.push(Problem {
                        file: seg.clone(),
                        line: lineno,
                        message: m,
                    })
                };
                match parsed {
                    Err(m) => problem(m),
                    Ok((seq, p)) => {
                        for &i in by_seq.get(&seq).map(Vec::as_slice).unwrap_or(&[]) {
                            let (f, n, c, seen) = &mut cps[i];
                            *seen = true;
                            if c.head != h {
                                problem(format!(
                                    "record {seq} is not the one the checkpoint at {}:{} names: the log was rewritten",
                                    f.display(),
                                    *n
                                ));
                            }
                        }
                        if seq != expect_seq {
                            problem(format!(
                                "sequence {seq} where {expect_seq} was due (a record was deleted, inserted or moved)"
                            ));
                        }
                        if p != prev {
                            problem(format!(
                                "record {seq} does not chain to the one before it (edited, deleted, inserted or reordered)"
                            ));
                        }
                        expect_seq = seq + 1;
                    }
                }
                prev = h;
                v.records += 1;
            }
        }
    }
    let hp = dir.join(HEAD);
    match std::fs::read(&hp) {
        Ok(d) => match serde_json::from_slice::<Head>(&d) {
            Ok(h) => {
                if h.seq != expect_seq - 1 || h.hash != prev {
                    v.problems.push(Problem {
                        file: hp.clone(),
                        line: 0,
                        message: format!(
                            "the head names record {} but the log ends at record {} (truncated tail, or the last record was edited)",
                            h.seq,
                            expect_seq - 1
                        ),
                    });
                }
            }
            Err(e) => v.problems.push(Problem {
                file: hp.clone(),
                line: 0,
                message: format!("unreadable head: {e}"),
            }),
        },
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && v.records == 0 && anchor.is_none() => {}
        Err(e) => v.problems.push(Problem {
            file: hp.clone(),
            line: 0,
            message: format!("head missing: {e}"),
        }),
    }
    v.last_seq = expect_seq - 1;
    if v.records == 0 && anchor.is_none() {
        v.empty = true;
        if !opts.allow_empty {
            v.problems.push(Problem {
                file: dir.to_owned(),
                line: 0,
                message: "the audit log is empty: no records (a deleted log looks like this)"
                    .to_owned(),
            });
        }
    }
    // Checkpoints whose record was not met in the walk.
    for (file, n, c, seen) in &cps {
        if *seen {
            v.checkpoints.matched += 1;
            continue;
        }
        let mut problem = |m: String| {
            v.problems.push(Problem {
                file: file.clone(),
                line: *n,
                message: m,
            })
        };
        if c.seq < v.first_seq {
            match &anchor {
                Some(a) if a.seq == c.seq => {
                    if a.head != c.head {
                        problem(format!(
                            "checkpoint on line {} names record {} differently from the retention anchor",
                            n,
                            c.seq
                        ));
                    } else {
                        v.checkpoints.matched += 1;
                    }
                }
                Some(_) => v.checkpoints.before_retention += 1,
                None if c.seq == 0 && c.head == GENESIS => v.checkpoints.matched += 1,
                None => problem(format!(
                    "checkpoint on line {} names record {} but the log starts at {}",
                    n, c.seq, v.first_seq
                )),
            }
        } else if c.seq > v.last_seq {
            problem(format!(
                "checkpoint on line {} ({}) names record {} but the log ends at record {}: the tail was truncated (or the log replaced) after it",
                n,
                c.reason,
                c.seq,
                v.last_seq
            ));
        } else {
            problem(format!(
                "record {} named by checkpoint on line {} is not in the log",
                c.seq,
                n + 1
            ));
        }
    }
    if let Some((_, _, c, _)) = cps.iter().max_by_key(|(_, _, c, _)| c.seq) {
        v.checkpoints.newest_seq = Some(c.seq);
        v.checkpoints.newest_time_ms = Some(c.time_ms);
    }
    v.checkpoints.uncovered = v
        .last_seq
        .saturating_sub(v.checkpoints.newest_seq.unwrap_or(0).max(v.first_seq - 1));
    Ok(v)
}

#[cfg(test)]
mod recover_tests {
    use super::*;

    #[test]
    fn a_writer_killed_before_moving_the_head_does_not_fork_the_chain() {
        let d = tempfile::tempdir().expect("tmp");
        let mut log = AuditLog::open(d.path()).expect("open");
        log.append(Kind::ProcessExit, None, serde_json::json!({}))
            .expect("a");
        let stale = std::fs::read(d.path().join(HEAD)).expect("head");
        log.append(
            Kind::ProcessExit,
            None,
            serde_json::json!({"x": "y".repeat(9000)}),
        )
        .expect("b");
        // The crash: record b is in the log, the head still names a.
        std::fs::write(d.path().join(HEAD), stale).expect("restore");
        let mut other = AuditLog::open(d.path()).expect("reopen");
        other
            .append(Kind::ProcessExit, None, serde_json::json!({}))
            .expect("c");
        let v = verify(d.path()).expect("verify");
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.records, 3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log_with(n: u64) -> (tempfile::TempDir, AuditLog) {
        let d = tempfile::tempdir().expect("tmp");
        let mut l = AuditLog::open(d.path()).expect("open");
        for i in 0..n {
            l.append(Kind::ProcessExit, Some("j1"), json!({ "i": i }))
                .expect("append");
        }
        (d, l)
    }

    fn lines(d: &Path) -> Vec<String> {
        std::fs::read_to_string(d.join(LOG))
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write(d: &Path, l: &[String]) {
        std::fs::write(
            d.join(LOG),
            l.iter().map(|x| format!("{x}\n")).collect::<String>(),
        )
        .expect("write");
    }

    #[test]
    fn an_intact_log_verifies_and_continues_after_reopen() {
        let (d, l) = log_with(5);
        drop(l);
        let mut l = AuditLog::open(d.path()).expect("reopen");
        assert_eq!(
            l.append(Kind::ProcessExit, None, json!({}))
                .expect("append"),
            6
        );
        let v = verify(d.path()).expect("verify");
        assert_eq!((v.records, v.problems.len()), (6, 0), "{:?}", v.problems);
    }

    #[test]
    fn edits_deletions_insertions_reorders_and_truncation_are_detected() {
        type Tamper = Box<dyn Fn(&mut Vec<String>)>;
        let cases: Vec<(&str, Tamper)> = vec![
            (
                "edit",
                Box::new(|l: &mut Vec<String>| l[2] = l[2].replace("\"i\":2", "\"i\":9")),
            ),
            (
                "delete",
                Box::new(|l: &mut Vec<String>| {
                    l.remove(2);
                }),
            ),
            (
                "insert",
                Box::new(|l: &mut Vec<String>| {
                    let x = l[1].clone();
                    l.insert(2, x);
                }),
            ),
            ("reorder", Box::new(|l: &mut Vec<String>| l.swap(1, 2))),
            (
                "truncate",
                Box::new(|l: &mut Vec<String>| {
                    l.pop();
                }),
            ),
            (
                "edit last",
                Box::new(|l: &mut Vec<String>| {
                    let n = l.len() - 1;
                    l[n] = l[n].replace("process.exit", "process.exiT");
                }),
            ),
        ];
        for (name, tamper) in cases {
            let (d, _l) = log_with(5);
            let mut ls = lines(d.path());
            tamper(&mut ls);
            write(d.path(), &ls);
            let v = verify(d.path()).expect("verify");
            assert!(!v.problems.is_empty(), "{name} went unnoticed");
        }
    }

    #[test]
    fn segments_rotate_by_size_and_an_empty_one_is_not_rotated() {
        let (d, mut l) = log_with(0);
        assert!(l.rotate().is_err(), "nothing to rotate");
        l.set_rotate_bytes(600);
        for i in 0..40 {
            l.append(Kind::ProcessExit, Some("j1"), json!({ "i": i }))
                .expect("append");
        }
        let segs = segments(d.path());
        assert!(segs.len() > 3, "{segs:?}");
        let v = verify(d.path()).expect("verify");
        assert_eq!((v.records, v.problems.len()), (40, 0), "{:?}", v.problems);
        let r = l.rotate().expect("rotate");
        assert!(
            l.rotate().is_err(),
            "a second rotation finds an empty segment"
        );
        assert!(r.exists());
        assert_eq!(verify(d.path()).expect("verify").problems.len(), 0);
    }

    #[test]
    fn rotation_keeps_the_chain_and_a_missing_segment_is_detected() {
        let (d, mut l) = log_with(3);
        let rotated = l.rotate().expect("rotate");
        l.append(Kind::ProcessExit, None, json!({}))
            .expect("append");
        let v = verify(d.path()).expect("verify");
        assert_eq!((v.records, v.problems.len()), (4, 0), "{:?}", v.problems);
        std::fs::remove_file(rotated).expect("rm");
        assert!(!verify(d.path()).expect("verify").problems.is_empty());
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use serde_json::json;

    fn key() -> Key {
        Key::from_bytes(b"test key, never a real one......")
    }

    /// A log with retention and checkpoints under `d` (the log in `d/audit`).
    fn open(d: &Path, r: Option<Retention>, segment: u64) -> AuditLog {
        let mut l = AuditLog::open(&d.join("audit")).expect("open");
        l.configure(LogSettings {
            segment_bytes: segment,
            retention: r,
            key: Some(key()),
            checkpoint_file: Some(d.join("ck.jsonl")),
            checkpoint_records: 1_000_000,
            checkpoint_interval: std::time::Duration::from_secs(3600),
            ship: None,
        })
        .expect("configure");
        l
    }

    fn opts(d: &Path) -> VerifyOptions {
        VerifyOptions {
            key: Some(key()),
            checkpoint_files: vec![d.join("ck.jsonl")],
            allow_empty: false,
        }
    }

    fn closed(dir: &Path) -> Vec<PathBuf> {
        segments(dir)
            .into_iter()
            .filter(|p| segment_next(p).is_some())
            .collect()
    }

    fn job(l: &mut AuditLog, n: usize, time_ms: Option<u128>) {
        let mut evs: Vec<Event> = (0..n)
            .map(|i| {
                Event::new(
                    Kind::ProcessExec,
                    Some("j"),
                    json!({ "i": i, "pad": "x".repeat(200) }),
                )
            })
            .collect();
        evs.push(Event::new(Kind::JobEnded, Some("j"), json!({})));
        if let Some(t) = time_ms {
            for e in &mut evs {
                e.time_ms = t;
            }
        }
        l.append_batch(evs).expect("append");
    }

    #[test]
    fn a_missing_or_empty_log_fails_unless_allowed() {
        let d = tempfile::tempdir().expect("tmp");
        let missing = d.path().join("nope");
        let v = verify(&missing).expect("verify");
        assert!(v.empty && !v.problems.is_empty());
        let v = verify_with(
            &missing,
            &VerifyOptions {
                allow_empty: true,
                ..VerifyOptions::default()
            },
        )
        .expect("verify");
        assert!(v.empty && v.problems.is_empty());
        // What AuditLog::open leaves (lock, empty segment) is an empty log.
        drop(AuditLog::open(&d.path().join("a")).expect("open"));
        let v = verify(&d.path().join("a")).expect("verify");
        assert!(v.empty && !v.problems.is_empty(), "{v:?}");
    }

    #[test]
    fn a_truncated_tail_with_a_recomputed_head_fails_only_against_checkpoints() {
        let d = tempfile::tempdir().expect("tmp");
        let mut l = open(d.path(), None, ROTATE_BYTES);
        job(&mut l, 3, None);
        job(&mut l, 3, None);
        drop(l);
        let dir = d.path().join("audit");
        assert!(verify_with(&dir, &opts(d.path()))
            .expect("v")
            .problems
            .is_empty());
        // Cut the second job and recompute the unkeyed head.
        let raw = std::fs::read_to_string(dir.join(LOG)).expect("log");
        let keep: Vec<&str> = raw.lines().take(4).collect();
        std::fs::write(
            dir.join(LOG),
            keep.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .expect("cut");
        let last = keep[3];
        std::fs::write(
            dir.join(HEAD),
            serde_json::to_vec(&Head {
                seq: 4,
                hash: hash(last.as_bytes()),
            })
            .expect("json"),
        )
        .expect("head");
        let plain = verify(&dir).expect("verify");
        assert!(plain.problems.is_empty(), "the chain alone cannot see it");
        let v = verify_with(&dir, &opts(d.path())).expect("verify");
        assert!(
            v.problems.iter().any(|p| p.message.contains("truncated")),
            "{:?}",
            v.problems
        );
        // Rewriting the cut records instead (same count, different content) fails too.
        let mut l = AuditLog::open(&dir).expect("reopen");
        for _ in 0..4 {
            l.append(Kind::ProcessExit, Some("j"), json!({}))
                .expect("append");
        }
        let v = verify_with(&dir, &opts(d.path())).expect("verify");
        assert!(
            v.problems.iter().any(|p| p.message.contains("rewritten")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_forged_checkpoint_fails() {
        let d = tempfile::tempdir().expect("tmp");
        let mut l = open(d.path(), None, ROTATE_BYTES);
        job(&mut l, 2, None);
        drop(l);
        let dir = d.path().join("audit");
        let head: Head =
            serde_json::from_slice(&std::fs::read(dir.join(HEAD)).expect("h")).expect("h");
        // Names a real record, but MAC'd with another key.
        let other = Key::from_bytes(b"the attacker's own key..........");
        let forged = Checkpoint::new(Some(&other), head.seq, &head.hash, "job.ended", None);
        checkpoint::append(&d.path().join("ck.jsonl"), &forged).expect("append");
        let v = verify_with(&dir, &opts(d.path())).expect("verify");
        assert!(
            v.problems.iter().any(|p| p.message.contains("MAC")),
            "{:?}",
            v.problems
        );
        // A checkpoint file with nothing in it checks nothing: a problem, not a pass.
        std::fs::write(d.path().join("empty.jsonl"), "{\"id\":\"an alert\"}\n").expect("w");
        let mut o = opts(d.path());
        o.checkpoint_files.push(d.path().join("empty.jsonl"));
        o.checkpoint_files.remove(0);
        let v = verify_with(&dir, &o).expect("verify");
        assert!(
            v.problems
                .iter()
                .any(|p| p.message.contains("no checkpoint")),
            "{:?}",
            v.problems
        );
        // Without the key the MAC is not checked, and the result says so.
        let mut o = opts(d.path());
        o.key = None;
        let v = verify_with(&dir, &o).expect("verify");
        assert!(
            v.problems.is_empty() && v.key_id.is_none(),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn retention_by_size_keeps_verify_ok_and_honours_the_anchor() {
        let d = tempfile::tempdir().expect("tmp");
        let r = Retention {
            max_bytes: 8192,
            max_age: std::time::Duration::from_secs(86400 * 365),
        };
        let mut l = open(d.path(), Some(r), 2048);
        for _ in 0..20 {
            job(&mut l, 4, None);
        }
        let dir = d.path().join("audit");
        let total: u64 = segments(&dir)
            .iter()
            .map(|p| std::fs::metadata(p).expect("m").len())
            .sum();
        assert!(total <= 8192 + 2048, "{total}");
        let v = verify_with(&dir, &opts(d.path())).expect("verify");
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let a = v.anchor.expect("records were removed");
        assert_eq!(a.mac, MacCheck::Valid);
        assert_eq!(v.first_seq, a.seq + 1);
        assert!(v.checkpoints.before_retention > 0 && v.checkpoints.matched > 0);
        // The oldest retained segment removed without a new anchor: fails.
        let segs = closed(&dir);
        assert!(segs.len() >= 2, "{segs:?}");
        let saved = std::fs::read(&segs[0]).expect("read");
        std::fs::remove_file(&segs[0]).expect("rm");
        let v = verify_with(&dir, &opts(d.path())).expect("verify");
        assert!(
            !v.problems.is_empty(),
            "oldest retained segment deleted unnoticed"
        );
        std::fs::write(&segs[0], &saved).expect("restore");
        // A middle segment removed: fails.
        std::fs::remove_file(&segs[1]).expect("rm");
        assert!(!verify_with(&dir, &opts(d.path()))
            .expect("v")
            .problems
            .is_empty());
    }

    #[test]
    fn an_anchor_forged_without_the_key_fails() {
        let d = tempfile::tempdir().expect("tmp");
        let mut l = open(d.path(), None, 1024);
        for _ in 0..10 {
            job(&mut l, 3, None);
        }
        drop(l);
        let dir = d.path().join("audit");
        let segs = closed(&dir);
        // Delete the oldest segment and write the anchor retention would have written,
        // but without the key.
        let last = last_line(&segs[0]).expect("read").expect("line");
        let seq = segment_next(&segs[0]).expect("n") - 1;
        std::fs::remove_file(&segs[0]).expect("rm");
        let forged = Checkpoint::new(None, seq, &hash(&last), "retention", None);
        checkpoint::write_anchor(&dir, &forged).expect("anchor");
        let v = verify_with(&dir, &opts(d.path())).expect("verify");
        assert!(
            v.problems.iter().any(|p| p.message.contains("anchor")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn retention_by_age_removes_old_segments_and_verify_stays_ok() {
        let d = tempfile::tempdir().expect("tmp");
        let r = Retention {
            max_bytes: 1 << 30,
            max_age: std::time::Duration::from_secs(86400),
        };
        let mut l = open(d.path(), Some(r), 1 << 20);
        let old = now_ms() - 3 * 86_400_000;
        // Old records: the current segment is too old, so each batch starts a new one.
        for _ in 0..3 {
            job(&mut l, 2, Some(old));
        }
        for _ in 0..3 {
            job(&mut l, 2, None);
        }
        let dir = d.path().join("audit");
        let v = verify_with(&dir, &opts(d.path())).expect("verify");
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let a = v.anchor.expect("old segments removed");
        assert_eq!(a.seq, 9, "the three old jobs are gone, nothing newer");
        for r in read_all(&dir).expect("read") {
            assert!(r.time_ms > old, "an old record survived: {r:?}");
        }
        // A crash between writing the anchor and deleting: a segment older than the anchor
        // is left. verify skips it; the next prune removes it.
        let stale = dir.join(format!("{LOG}.{:020}", 4));
        std::fs::write(&stale, "{}\n").expect("stale");
        let v = verify_with(&dir, &opts(d.path())).expect("verify");
        assert!(v.problems.is_empty() && v.stale_segments == 1, "{v:?}");
        drop(l);
        let _l = open(d.path(), Some(r), 1 << 20);
        assert!(!stale.exists());
    }
}
