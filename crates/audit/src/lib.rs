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
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Log file name in the audit directory.
pub const LOG: &str = "audit.jsonl";
/// Head checkpoint file name.
pub const HEAD: &str = "audit.head";

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
    Sha256::digest(line)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An open audit log.
pub struct AuditLog {
    dir: PathBuf,
    file: File,
    head: Head,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, continuing its chain.
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let head_path = dir.join(HEAD);
        let head = match std::fs::read(&head_path) {
            Ok(d) => serde_json::from_slice(&d)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Head {
                seq: 0,
                hash: GENESIS.to_owned(),
            },
            Err(e) => return Err(io(&head_path)(e)),
        };
        let log = dir.join(LOG);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(&log))?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            head,
        })
    }

    /// Appends a record and moves the head; returns its sequence number. Durable when it
    /// returns (the record is fsynced before the head names it).
    pub fn append(
        &mut self,
        kind: &str,
        job: Option<&str>,
        data: serde_json::Value,
    ) -> Result<u64, AuditError> {
        let rec = Record {
            seq: self.head.seq + 1,
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            kind: kind.to_owned(),
            job: job.map(str::to_owned),
            data,
            prev: self.head.hash.clone(),
        };
        let mut line = serde_json::to_vec(&rec)?;
        let h = hash(&line);
        line.push(b'\n');
        let log = self.dir.join(LOG);
        self.file.write_all(&line).map_err(io(&log))?;
        self.file.sync_data().map_err(io(&log))?;
        let head = Head {
            seq: rec.seq,
            hash: h,
        };
        let tmp = self.dir.join("audit.head.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&head)?).map_err(io(&tmp))?;
        let hp = self.dir.join(HEAD);
        std::fs::rename(&tmp, &hp).map_err(io(&hp))?;
        self.head = head;
        Ok(rec.seq)
    }

    /// Starts a new segment: the current log becomes `audit.jsonl.<first seq of the next>`; the
    /// chain continues across the boundary.
    pub fn rotate(&mut self) -> Result<PathBuf, AuditError> {
        let log = self.dir.join(LOG);
        let rotated = self.dir.join(format!("{LOG}.{:020}", self.head.seq + 1));
        std::fs::rename(&log, &rotated).map_err(io(&log))?;
        self.file = OpenOptions::new()
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

/// Checks the chain of every segment and the head.
pub fn verify(dir: &Path) -> Result<Verification, AuditError> {
    let mut v = Verification::default();
    let mut expect_seq = 1u64;
    let mut prev = GENESIS.to_owned();
    for seg in segments(dir) {
        let f = File::open(&seg).map_err(io(&seg))?;
        for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
            let line = line.map_err(io(&seg))?;
            if line.is_empty() {
                continue;
            }
            let mut problem = |m: String| {
                v.problems.push(Problem {
                    file: seg.clone(),
                    line: i + 1,
                    message: m,
                })
            };
            match serde_json::from_slice::<Record>(&line) {
                Err(e) => problem(format!("not a record: {e}")),
                Ok(r) => {
                    if r.seq != expect_seq {
                        problem(format!(
                            "sequence {} where {expect_seq} was due (a record was deleted, inserted or moved)",
                            r.seq
                        ));
                    }
                    if r.prev != prev {
                        problem(format!(
                            "record {} does not chain to the one before it (edited, deleted, inserted or reordered)",
                            r.seq
                        ));
                    }
                    expect_seq = r.seq + 1;
                }
            }
            prev = hash(&line);
            v.records += 1;
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
