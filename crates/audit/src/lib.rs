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
//! The head cannot protect against someone who rewrites the log *and* the head consistently;
//! that needs the head (or a periodic checkpoint) copied somewhere the host cannot write — a
//! later issue ships it to the alert sinks.
#![deny(missing_docs)]

pub mod alert;
pub mod detect;
pub mod ocsf;
pub mod sink;

pub use alert::{summary, Alert, Severity, Technique};
pub use detect::{
    detect, detect_jobs, detect_report, DetectContext, DetectError, Detection, Detector,
};
pub use ocsf::{alert_to_ocsf, to_ocsf};
pub use sink::{signature, FlushReport, JsonlSink, SinkError, Sinks, WebhookConfig, WebhookSink};

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
    /// Event kind, e.g. `process.exec`.
    pub kind: String,
    /// The job it concerns.
    pub job: Option<String>,
    /// Event fields.
    pub data: serde_json::Value,
}

impl Event {
    /// An event that happens now.
    pub fn new(kind: &str, job: Option<&str>, data: serde_json::Value) -> Self {
        Self {
            time_ms: now_ms(),
            kind: kind.to_owned(),
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
}

/// Holds the log's lock until dropped.
struct Locked<'a>(&'a File);

impl<'a> Locked<'a> {
    fn take(f: &'a File, path: &Path) -> Result<Self, AuditError> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(Self(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io(path)(e));
            }
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in `take`; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
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
        };
        me.head()?;
        Ok(me)
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
        kind: &str,
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
                kind: ev.kind,
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
        if std::fs::metadata(&log).is_ok_and(|m| m.len() >= self.rotate_bytes) {
            self.rotate_locked(out.first().map(|r| r.seq).unwrap_or(head.seq + 1))?;
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
        Ok(out)
    }

    /// A writer killed between appending its records and moving the head (kill -9 of a
    /// process that writes the log) leaves complete records the head does not name. Taking
    /// the head as it is would fork the chain (the next record would repeat a sequence number
    /// and chain to the wrong record), so the head is moved to the log's last record first.
    /// Called under the lock. Reads only the tail of the log.
    fn recover_head(&self, head: &mut Head) -> Result<(), AuditError> {
        use std::io::{Seek, SeekFrom};
        let log = self.dir.join(LOG);
        let mut f = match File::open(&log) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&log)(e)),
        };
        let len = f.metadata().map_err(io(&log))?.len();
        if len == 0 {
            return Ok(());
        }
        // Read backwards in growing chunks until the last line is whole.
        let mut chunk = 4096u64;
        let line = loop {
            let start = len.saturating_sub(chunk);
            f.seek(SeekFrom::Start(start)).map_err(io(&log))?;
            let mut buf = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
            Read::by_ref(&mut f)
                .take(len - start)
                .read_to_end(&mut buf)
                .map_err(io(&log))?;
            if buf.last() != Some(&b'\n') {
                // A torn write: nothing the head could name; leave it to `verify`.
                return Ok(());
            }
            let body = &buf[..buf.len() - 1];
            match body.iter().rposition(|&b| b == b'\n') {
                Some(i) => break body[i + 1..].to_vec(),
                None if start == 0 => break body.to_vec(),
                None => chunk = chunk.saturating_mul(4),
            }
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
        self.rotate_locked(head.seq + 1)
    }

    /// Replaces these secrets' values in every event appended from now on (see [`redact`]).
    pub fn set_redactor(&mut self, redactor: Redactor) {
        self.redactor = redactor;
    }

    /// Rotates the segment when it has reached `bytes` (default [`ROTATE_BYTES`]).
    pub fn set_rotate_bytes(&mut self, bytes: u64) {
        self.rotate_bytes = bytes.max(1);
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
    let mut v = Verification::default();
    let mut expect_seq = 1u64;
    let mut prev = GENESIS.to_owned();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    for seg in segments(dir) {
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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && v.records == 0 => {}
        Err(e) => v.problems.push(Problem {
            file: hp.clone(),
            line: 0,
            message: format!("head missing: {e}"),
        }),
    }
    Ok(v)
}

#[cfg(test)]
mod recover_tests {
    use super::*;

    #[test]
    fn a_writer_killed_before_moving_the_head_does_not_fork_the_chain() {
        let d = tempfile::tempdir().expect("tmp");
        let mut log = AuditLog::open(d.path()).expect("open");
        log.append("a", None, serde_json::json!({})).expect("a");
        let stale = std::fs::read(d.path().join(HEAD)).expect("head");
        log.append("b", None, serde_json::json!({"x": "y".repeat(9000)}))
            .expect("b");
        // The crash: record b is in the log, the head still names a.
        std::fs::write(d.path().join(HEAD), stale).expect("restore");
        let mut other = AuditLog::open(d.path()).expect("reopen");
        other.append("c", None, serde_json::json!({})).expect("c");
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
            l.append("test.event", Some("j1"), json!({ "i": i }))
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
        assert_eq!(l.append("x", None, json!({})).expect("append"), 6);
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
                    l[n] = l[n].replace("test.event", "test.evenT");
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
            l.append("test.event", Some("j1"), json!({ "i": i }))
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
        l.append("after", None, json!({})).expect("append");
        let v = verify(d.path()).expect("verify");
        assert_eq!((v.records, v.problems.len()), (4, 0), "{:?}", v.problems);
        std::fs::remove_file(rotated).expect("rm");
        assert!(!verify(d.path()).expect("verify").problems.is_empty());
    }
}
