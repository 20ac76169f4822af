//! The write path under load: producers (the exec listener, the gateway, the job loop) hand
//! events to a bounded queue; one writer thread drains whatever has accumulated and appends it
//! as one batch (one lock, one write, one fsync). When the queue is full, [`AuditQueue::send`]
//! blocks the producer — back-pressure, never a dropped event. A write error stops the writer;
//! every later `send`/`sync` returns it, so the caller can stop the job (fail closed).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::{AuditError, AuditLog, Event, Record};

/// Events the writer takes into one batch at most.
const MAX_BATCH: usize = 8192;

enum Msg {
    Event(Event),
    Sync(mpsc::Sender<Result<u64, String>>),
}

#[derive(Default)]
struct Shared {
    failed: Option<String>,
    /// Records written, by job, for the jobs being collected (detectors read them at job end).
    collected: HashMap<String, Vec<Record>>,
}

/// A bounded queue in front of an [`AuditLog`], with one writer thread.
pub struct AuditQueue {
    tx: Option<SyncSender<Msg>>,
    writer: Option<JoinHandle<AuditLog>>,
    shared: Arc<Mutex<Shared>>,
}

/// A cloneable handle for producers on other threads.
#[derive(Clone)]
pub struct AuditSender {
    tx: SyncSender<Msg>,
    shared: Arc<Mutex<Shared>>,
}

fn failed(shared: &Mutex<Shared>) -> Option<String> {
    shared.lock().ok().and_then(|s| s.failed.clone())
}

fn broken(msg: String) -> AuditError {
    AuditError::Writer(msg)
}

impl AuditSender {
    /// Queues an event; blocks while the queue is full. Fails once the writer has failed.
    pub fn send(&self, ev: Event) -> Result<(), AuditError> {
        if let Some(m) = failed(&self.shared) {
            return Err(broken(m));
        }
        self.tx
            .send(Msg::Event(ev))
            .map_err(|_| broken(failed(&self.shared).unwrap_or_else(|| "writer stopped".into())))
    }
}

impl AuditQueue {
    /// Starts the writer thread over `log` with room for `capacity` queued events.
    pub fn start(log: AuditLog, capacity: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s2 = shared.clone();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(log, rx, s2))
            .ok();
        Self {
            tx: Some(tx),
            writer,
            shared,
        }
    }

    /// A handle for producers.
    pub fn sender(&self) -> Option<AuditSender> {
        self.tx.as_ref().map(|tx| AuditSender {
            tx: tx.clone(),
            shared: self.shared.clone(),
        })
    }

    /// Queues an event (blocking while full).
    pub fn send(&self, ev: Event) -> Result<(), AuditError> {
        match self.sender() {
            Some(s) => s.send(ev),
            None => Err(broken("queue closed".into())),
        }
    }

    /// Keeps a copy of every record written for `job`, for [`AuditQueue::take`].
    pub fn collect(&self, job: &str) {
        if let Ok(mut s) = self.shared.lock() {
            s.collected.entry(job.to_owned()).or_default();
        }
    }

    /// Waits until everything queued before it is durable; returns the last sequence number.
    pub fn sync(&self) -> Result<u64, AuditError> {
        let (tx, rx) = mpsc::channel();
        let q = self
            .tx
            .as_ref()
            .ok_or_else(|| broken("queue closed".into()))?;
        q.send(Msg::Sync(tx))
            .map_err(|_| broken(failed(&self.shared).unwrap_or_else(|| "writer stopped".into())))?;
        rx.recv()
            .map_err(|_| broken("writer stopped".into()))?
            .map_err(broken)
    }

    /// The records written for `job` since [`AuditQueue::collect`] (call after `sync`).
    pub fn take(&self, job: &str) -> Vec<Record> {
        self.shared
            .lock()
            .ok()
            .and_then(|mut s| s.collected.remove(job))
            .unwrap_or_default()
    }

    /// Drains the queue, stops the writer and hands the log back.
    pub fn close(mut self) -> Result<AuditLog, AuditError> {
        self.tx = None;
        let log = self
            .writer
            .take()
            .and_then(|w| w.join().ok())
            .ok_or_else(|| broken("writer thread died".into()))?;
        match failed(&self.shared) {
            Some(m) => Err(broken(m)),
            None => Ok(log),
        }
    }
}

impl Drop for AuditQueue {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn writer(mut log: AuditLog, rx: Receiver<Msg>, shared: Arc<Mutex<Shared>>) -> AuditLog {
    let mut last = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut syncs = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Msg::Event(e) => batch.push(e),
                Msg::Sync(s) => syncs.push(s),
            }
            next = if batch.len() < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let result = if failed(&shared).is_some() {
            Err(failed(&shared).unwrap_or_default())
        } else {
            log.append_batch(batch).map_err(|e| e.to_string())
        };
        match result {
            Ok(recs) => {
                if let Some(r) = recs.last() {
                    last = r.seq;
                }
                if let Ok(mut s) = shared.lock() {
                    if !s.collected.is_empty() {
                        for r in recs {
                            if let Some(v) = r.job.as_ref().and_then(|j| s.collected.get_mut(j)) {
                                v.push(r);
                            }
                        }
                    }
                }
                for s in syncs {
                    let _ = s.send(Ok(last));
                }
            }
            Err(m) => {
                if let Ok(mut s) = shared.lock() {
                    s.failed.get_or_insert(m.clone());
                }
                for s in syncs {
                    let _ = s.send(Err(m.clone()));
                }
            }
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn many_producers_one_linear_chain_and_nothing_dropped() {
        let d = tempfile::tempdir().expect("tmp");
        let q = AuditQueue::start(AuditLog::open(d.path()).expect("open"), 16);
        q.collect("j");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = q.sender().expect("sender");
                std::thread::spawn(move || {
                    for i in 0..500 {
                        s.send(Event::new("t", Some("j"), json!({ "t": t, "i": i })))
                            .expect("send");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        assert_eq!(q.sync().expect("sync"), 2000);
        assert_eq!(q.take("j").len(), 2000);
        q.close().expect("close");
        let v = crate::verify(d.path()).expect("verify");
        assert_eq!((v.records, v.problems.len()), (2000, 0), "{:?}", v.problems);
    }

    #[test]
    fn two_processes_worth_of_logs_interleave_without_forking_the_chain() {
        // Two independent handles on one directory stand in for two airlock processes.
        let d = tempfile::tempdir().expect("tmp");
        let mut a = AuditLog::open(d.path()).expect("a");
        let mut b = AuditLog::open(d.path()).expect("b");
        let ta = std::thread::spawn(move || {
            for i in 0..200 {
                a.append("a", None, json!({ "i": i })).expect("a");
            }
            a
        });
        for i in 0..200 {
            b.append("b", None, json!({ "i": i })).expect("b");
            if i == 100 {
                b.rotate().expect("rotate");
            }
        }
        ta.join().expect("join");
        let v = crate::verify(d.path()).expect("verify");
        assert_eq!((v.records, v.problems.len()), (400, 0), "{:?}", v.problems);
    }

    #[test]
    fn a_write_failure_is_reported_to_every_later_caller() {
        let d = tempfile::tempdir().expect("tmp");
        let q = AuditQueue::start(AuditLog::open(d.path()).expect("open"), 4);
        q.send(Event::new("ok", None, json!({}))).expect("send");
        q.sync().expect("sync");
        // The head becomes a directory: the next batch cannot move it.
        std::fs::remove_file(d.path().join(crate::HEAD)).expect("rm head");
        std::fs::create_dir(d.path().join(crate::HEAD)).expect("mkdir");
        q.send(Event::new("lost?", None, json!({})))
            .expect("queued");
        assert!(q.sync().is_err());
        assert!(q.send(Event::new("after", None, json!({}))).is_err());
        assert!(q.close().is_err());
    }
}
