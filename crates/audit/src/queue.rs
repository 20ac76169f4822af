//! The write path under load: producers (the exec listener, the gateway, the job loop) hand
//! events to a bounded queue; one writer thread drains whatever has accumulated and appends it
//! as one batch (one lock, one write, one fsync). When the queue is full, [`AuditQueue::send`]
//! blocks the producer — back-pressure, never a dropped event. A write error stops the writer;
//! every later `send`/`sync` returns it, so the caller can stop the job (fail closed).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::detect::{DetectContext, Detection, Stream};
use crate::limit::{Admit, LimitStats, Limiter};
use crate::{AuditError, AuditLog, Event, Kind, Record};

/// Events the writer takes into one batch at most.
const MAX_BATCH: usize = 8192;

enum Msg {
    Event(Event),
    Sync(mpsc::Sender<Result<u64, String>>),
    Track(String, Box<Tracked>),
    Finish(String, mpsc::Sender<Result<JobAudit, String>>),
}

/// What the writer keeps for a job it tracks: bounded whatever the job does (the limiter's
/// buckets and the detectors' summaries, never the records themselves).
struct Tracked {
    limiter: Limiter,
    stream: Stream,
}

/// What [`AuditQueue::finish`] returns for a tracked job.
#[derive(Debug, Default)]
pub struct JobAudit {
    /// The detectors' findings over every record written for the job.
    pub detection: Detection,
    /// What the limiter wrote, aggregated and capped.
    pub limits: LimitStats,
}

#[derive(Default)]
struct Shared {
    failed: Option<String>,
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

    fn post(&self, m: Msg) -> Result<(), AuditError> {
        let q = self
            .tx
            .as_ref()
            .ok_or_else(|| broken("queue closed".into()))?;
        q.send(m)
            .map_err(|_| broken(failed(&self.shared).unwrap_or_else(|| "writer stopped".into())))
    }

    /// From now on, `job`'s events pass its limiter (`limits`: rate limits and caps, see
    /// [`crate::limit`]) and every record written for it is shown to the detectors as it is
    /// written; `seed` are its records written before (its `job.requested`). Nothing of
    /// the records is kept: [`AuditQueue::finish`] returns the detectors' findings.
    pub fn track(
        &self,
        job: &str,
        limits: airlock_policy::AuditLimits,
        ctx: &DetectContext,
        seed: &[Record],
    ) -> Result<(), AuditError> {
        let mut stream = Stream::new(ctx);
        for r in seed {
            stream.observe(r);
        }
        self.post(Msg::Track(
            job.to_owned(),
            Box::new(Tracked {
                limiter: Limiter::new(limits),
                stream,
            }),
        ))
    }

    /// Ends the tracking of `job` after everything queued before: writes its pending
    /// aggregates and flood summary, then runs the detectors' end of job.
    pub fn finish(&self, job: &str) -> Result<JobAudit, AuditError> {
        let (tx, rx) = mpsc::channel();
        self.post(Msg::Finish(job.to_owned(), tx))?;
        rx.recv()
            .map_err(|_| broken("writer stopped".into()))?
            .map_err(broken)
    }

    /// Waits until everything queued before it is durable; returns the last sequence number.
    pub fn sync(&self) -> Result<u64, AuditError> {
        let (tx, rx) = mpsc::channel();
        self.post(Msg::Sync(tx))?;
        rx.recv()
            .map_err(|_| broken("writer stopped".into()))?
            .map_err(broken)
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

/// The writer's state: the log, the batch being built and the tracked jobs.
struct Writer {
    log: AuditLog,
    shared: Arc<Mutex<Shared>>,
    batch: Vec<Event>,
    /// For each event of the batch, the limiter bucket it was admitted through.
    slots: Vec<Option<(Kind, String)>>,
    tracked: HashMap<String, Tracked>,
    last: u64,
}

impl Writer {
    fn push(&mut self, e: Event, slot: Option<(Kind, String)>) {
        self.batch.push(e);
        self.slots.push(slot);
    }

    /// Writes the batch; records of tracked jobs go to their detectors and name their
    /// limiter bucket's sequence numbers.
    fn commit(&mut self) -> Result<(), String> {
        // Once failed, nothing more is written and everyone is told.
        if let Some(m) = failed(&self.shared) {
            return Err(m);
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let slots = std::mem::take(&mut self.slots);
        let recs = self.log.append_batch(batch).map_err(|e| e.to_string())?;
        if let Some(r) = recs.last() {
            self.last = r.seq;
        }
        if !self.tracked.is_empty() {
            for (r, slot) in recs.iter().zip(slots) {
                if let Some(t) = r.job.as_ref().and_then(|j| self.tracked.get_mut(j)) {
                    if let Some(k) = slot {
                        t.limiter.written(&k, r.seq);
                    }
                    t.stream.observe(r);
                }
            }
        }
        Ok(())
    }

    fn event(&mut self, e: Event) -> Result<(), String> {
        let Some(job) = e.job.clone().filter(|j| self.tracked.contains_key(j)) else {
            self.push(e, None);
            return Ok(());
        };
        let admit = match self.tracked.get_mut(&job) {
            Some(t) => t.limiter.admit(&e),
            None => Admit::Free,
        };
        match admit {
            Admit::Free => self.push(e, None),
            Admit::Aggregated => {}
            Admit::Write { key, flush } => {
                if flush {
                    // The aggregate names the key's last written record: it needs its number.
                    if self
                        .tracked
                        .get(&job)
                        .is_some_and(|t| t.limiter.has_unwritten(&key))
                    {
                        self.commit()?;
                    }
                    if let Some(a) = self
                        .tracked
                        .get_mut(&job)
                        .and_then(|t| t.limiter.flush(&job, &key))
                    {
                        self.push(a, None);
                    }
                }
                self.push(e, Some(key));
            }
        }
        Ok(())
    }

    fn due(&mut self) {
        let mut due = Vec::new();
        for (job, t) in &mut self.tracked {
            due.extend(t.limiter.due(job));
        }
        for e in due {
            self.push(e, None);
        }
    }

    fn finish(&mut self, job: &str) -> Result<JobAudit, String> {
        self.commit()?;
        let Some(mut t) = self.tracked.remove(job) else {
            return Ok(JobAudit::default());
        };
        let end = t.limiter.finish(job);
        let limits = t.limiter.stats().clone();
        // Written while still tracked, so the detectors see the aggregates and the summary.
        self.tracked.insert(job.to_owned(), t);
        for e in end {
            self.push(e, None);
        }
        let r = self.commit();
        let t = self.tracked.remove(job);
        r?;
        Ok(JobAudit {
            detection: t.map(|t| t.stream.finish()).unwrap_or_default(),
            limits,
        })
    }

    fn fail(&mut self, m: &str) {
        if let Ok(mut s) = self.shared.lock() {
            s.failed.get_or_insert(m.to_owned());
        }
        self.batch.clear();
        self.slots.clear();
    }
}

fn writer(log: AuditLog, rx: Receiver<Msg>, shared: Arc<Mutex<Shared>>) -> AuditLog {
    let mut w = Writer {
        log,
        shared,
        batch: Vec::new(),
        slots: Vec::new(),
        tracked: HashMap::new(),
        last: 0,
    };
    while let Ok(first) = rx.recv() {
        let mut syncs = Vec::new();
        let mut next = Some(first);
        let mut taken = 0usize;
        let mut result: Result<(), String> = Ok(());
        while let Some(m) = next {
            match m {
                Msg::Event(e) => {
                    taken += 1;
                    if result.is_ok() {
                        result = w.event(e);
                    }
                }
                Msg::Sync(s) => syncs.push(s),
                Msg::Track(job, t) => {
                    w.tracked.insert(job, *t);
                }
                Msg::Finish(job, reply) => {
                    let r = match &result {
                        Ok(()) => w.finish(&job),
                        Err(m) => Err(m.clone()),
                    };
                    if let Err(m) = &r {
                        result = Err(m.clone());
                    }
                    let _ = reply.send(r);
                }
            }
            next = if taken < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if result.is_ok() {
            w.due();
            result = w.commit();
        }
        match result {
            Ok(()) => {
                for s in syncs {
                    let _ = s.send(Ok(w.last));
                }
            }
            Err(m) => {
                w.fail(&m);
                for s in syncs {
                    let _ = s.send(Err(m.clone()));
                }
            }
        }
    }
    w.log
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn many_producers_one_linear_chain_and_nothing_dropped() {
        let d = tempfile::tempdir().expect("tmp");
        let q = AuditQueue::start(AuditLog::open(d.path()).expect("open"), 16);
        q.track(
            "j",
            airlock_policy::AuditLimits {
                records_per_second: 1_000_000,
                burst: 1_000_000,
                ..Default::default()
            },
            &DetectContext::default(),
            &[],
        )
        .expect("track");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = q.sender().expect("sender");
                std::thread::spawn(move || {
                    for i in 0..500 {
                        s.send(Event::new(
                            Kind::ProcessExit,
                            Some("j"),
                            json!({ "t": t, "i": i }),
                        ))
                        .expect("send");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        assert_eq!(q.sync().expect("sync"), 2000);
        let done = q.finish("j").expect("finish");
        assert_eq!((done.limits.written, done.limits.aggregated), (2000, 0));
        q.close().expect("close");
        let v = crate::verify(d.path()).expect("verify");
        assert_eq!((v.records, v.problems.len()), (2000, 0), "{:?}", v.problems);
    }

    #[test]
    fn a_tracked_flood_is_aggregated_detected_and_never_kept_in_memory() {
        let d = tempfile::tempdir().expect("tmp");
        let q = AuditQueue::start(AuditLog::open(d.path()).expect("open"), 64);
        let limits = airlock_policy::AuditLimits {
            records_per_second: 10,
            burst: 50,
            flood_alert: 1000,
            ..Default::default()
        };
        q.track("j", limits, &DetectContext::default(), &[])
            .expect("track");
        let n = 50_000u64;
        for i in 0..n {
            let mut e = Event::new(
                Kind::SyscallDenied,
                Some("j"),
                json!({ "syscall": "acct", "nr": 163, "i": i }),
            );
            // All within two seconds of job time.
            e.time_ms = 1_000_000 + u128::from(i / 25);
            q.send(e).expect("send");
        }
        // Another job's events are not this job's business.
        q.send(Event::new(
            Kind::SyscallDenied,
            Some("k"),
            json!({ "syscall": "acct" }),
        ))
        .expect("send");
        let done = q.finish("j").expect("finish");
        assert_eq!(done.limits.written + done.limits.aggregated, n);
        assert!(done.limits.written < 100, "{:?}", done.limits);
        let ids: Vec<&str> = done
            .detection
            .alerts
            .iter()
            .map(|a| a.detector.as_str())
            .collect();
        assert!(ids.contains(&"record-flood"), "{ids:?}");
        let flood = done
            .detection
            .alerts
            .iter()
            .find(|a| a.detector == "record-flood")
            .expect("flood");
        assert!(
            flood.summary.contains("syscall.denied"),
            "{}",
            flood.summary
        );
        let priv_op = done
            .detection
            .alerts
            .iter()
            .find(|a| a.detector == "privileged-operation")
            .expect("privileged-operation");
        assert!(
            priv_op
                .summary
                .contains(&format!("refused {n} privileged calls")),
            "{}",
            priv_op.summary
        );
        q.close().expect("close");
        let recs = crate::read_all(d.path()).expect("read");
        let of_j = recs
            .iter()
            .filter(|r| r.job.as_deref() == Some("j"))
            .count();
        assert!(of_j < 100, "{of_j} records written");
        let agg = recs
            .iter()
            .find(|r| r.kind == crate::limit::AGGREGATED)
            .expect("aggregate");
        assert_eq!(agg.data["key"], "acct");
        assert!(agg.data["last_seq"].as_u64().is_some(), "{}", agg.data);
        assert!(crate::verify(d.path()).expect("verify").problems.is_empty());
    }

    #[test]
    fn two_processes_worth_of_logs_interleave_without_forking_the_chain() {
        // Two independent handles on one directory stand in for two airlock processes.
        let d = tempfile::tempdir().expect("tmp");
        let mut a = AuditLog::open(d.path()).expect("a");
        let mut b = AuditLog::open(d.path()).expect("b");
        let ta = std::thread::spawn(move || {
            for i in 0..200 {
                a.append(Kind::ProcessExit, None, json!({ "i": i }))
                    .expect("a");
            }
            a
        });
        for i in 0..200 {
            b.append(Kind::ProcessExit, None, json!({ "i": i }))
                .expect("b");
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
        q.send(Event::new(Kind::ProcessExit, None, json!({})))
            .expect("send");
        q.sync().expect("sync");
        // The head becomes a directory: the next batch cannot move it.
        std::fs::remove_file(d.path().join(crate::HEAD)).expect("rm head");
        std::fs::create_dir(d.path().join(crate::HEAD)).expect("mkdir");
        q.send(Event::new(Kind::ProcessExit, None, json!({})))
            .expect("queued");
        assert!(q.sync().is_err());
        assert!(q
            .send(Event::new(Kind::ProcessExit, None, json!({})))
            .is_err());
        assert!(q.close().is_err());
    }
}
