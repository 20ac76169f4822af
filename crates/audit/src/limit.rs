//! Bounds on what one job can make airlock record (issue 15: a job that calls a denied
//! syscall in a loop must not be able to fill the host's memory or disk through airlock).
//!
//! Every event a job causes is keyed by its kind and a key (the syscall's name, the DNS name
//! or destination, the program); each (kind, key) has a token bucket of `burst` records
//! refilled at `records_per_second`, by the event's own time. A key beyond `max_keys` per
//! kind shares one bucket, `(other)`. The job as a whole may write `max_records` records of
//! at most `max_bytes` (their data as JSON) one by one; past either, everything it causes is
//! aggregated. An event that is not written one by one is *counted*, never dropped: the
//! count, the time span, the sequence numbers of the last records of that key that were
//! written, and a sample become one `audit.aggregated` record, written when the key is let
//! through again, every [`AGGREGATE_EVERY`] while the flood lasts (until the job's cap), and
//! at the job's end. The end also writes one `audit.flood` summary when anything was
//! aggregated, which the `record-flood` detector reads.
//!
//! Memory: buckets are bounded by kinds × (`max_keys` + 1); a sample is kept only up to
//! [`MAX_SAMPLE`] bytes. Records airlock makes about the job itself (`job.*`, `alert`,
//! `audit.*`, `secret.*`) and the file scan (`file.*`, bounded by `max_file_changes`) are
//! not limited here.

use std::collections::{BTreeMap, HashMap};

use airlock_policy::AuditLimits;
use serde_json::{json, Value};

use crate::{Event, Kind};

/// A pending aggregate is written at least this often (wall clock) while its flood lasts.
pub const AGGREGATE_EVERY_MS: u128 = 30_000;
/// The same, as a duration.
pub const AGGREGATE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest sample (JSON bytes) kept with an aggregate; a larger one is replaced by its size.
pub const MAX_SAMPLE: usize = 2048;
/// Longest key kept; longer keys are cut (on a character boundary).
pub const MAX_KEY: usize = 256;
/// The key shared by keys past `max_keys`.
pub const OTHER: &str = "(other)";

/// Kind of the aggregate records.
pub const AGGREGATED: Kind = Kind::AuditAggregated;
/// Kind of the per-job flood summary.
pub const FLOOD: Kind = Kind::AuditFlood;

/// Whether events of `kind` are limited: what a job causes at will (execs, denied calls,
/// network records); never the job's own lifecycle, alerts, the log's own records, secrets
/// or the file scan (each bounded by construction).
pub fn limited(kind: Kind) -> bool {
    use crate::Kind::*;
    match kind {
        ProcessExec | ProcessExit | ExecActual | ExecUntracked | SyscallDenied => true,
        // A job can ask its container API for containers (and refusals) as often as it likes:
        // `containers.max` bounds how many exist at a time, not how many records they make.
        ContainerRefused | ContainerCreated | ContainerEnded => true,
        k if k.is_net() => true,
        JobRequested | JobRefused | JobPrimed | JobStarted | JobEnded | SecretInjected
        | ConfigChanged | FileChanged | FileScan | Alert | AuditAggregated | AuditFlood
        | AuditCheckpoint | AuditAnchor => false,
        // serve's records are not a job's.
        _ => false,
    }
}

/// The key of an event within its kind.
pub fn key_of(kind: Kind, data: &Value) -> String {
    let s = |k: &str| data.get(k).and_then(Value::as_str);
    let key = match kind {
        Kind::SyscallDenied => s("syscall").map(str::to_owned).or_else(|| {
            data.get("nr")
                .and_then(Value::as_u64)
                .map(|n| format!("#{n}"))
        }),
        Kind::ProcessExec => s("path").map(str::to_owned),
        Kind::ContainerRefused => s("what").map(str::to_owned),
        Kind::ContainerCreated | Kind::ContainerEnded => s("role").map(str::to_owned),
        k if k.is_net() => s("name")
            .or_else(|| s("dialled"))
            .or_else(|| s("resolved"))
            .map(str::to_owned),
        _ => None,
    }
    .unwrap_or_default();
    cut(key, MAX_KEY)
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut i = max;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.truncate(i);
    }
    s
}

/// How many events one event stands for: an already-aggregated network record (the gateway
/// keeps its own bounded book) carries `count`.
pub fn weight(data: &Value) -> u64 {
    data.get("count")
        .and_then(Value::as_u64)
        .filter(|c| *c > 1)
        .unwrap_or(1)
}

/// JSON size of a value, without keeping the text.
pub fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Events of one bucket that were counted instead of written.
#[derive(Debug, Clone)]
struct Pending {
    count: u64,
    first_ms: u128,
    last_ms: u128,
    /// When (wall clock) the first of them was counted: drives [`AGGREGATE_EVERY`].
    since_ms: u128,
    sample: Value,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last_ms: u128,
    /// Records of this key written so far.
    written: u64,
    /// Records admitted but not yet given a sequence number (in the batch being built).
    unwritten: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    pending: Option<Pending>,
}

#[derive(Debug, Default)]
struct KindState {
    keys: HashMap<String, Bucket>,
}

/// What [`Limiter::admit`] decided.
#[derive(Debug)]
pub enum Admit {
    /// Write the event. `flush` is the aggregate of this key's earlier events, to be written
    /// just before it (call [`Limiter::flush`] once the key's earlier records have their
    /// sequence numbers).
    Write {
        /// The (kind, key) bucket, for [`Limiter::written`].
        key: (Kind, String),
        /// Whether a pending aggregate of this key must be written first.
        flush: bool,
    },
    /// Counted into the key's aggregate; nothing to write now.
    Aggregated,
    /// Not limited (a kind airlock makes itself): write it.
    Free,
}

/// Counts of what the limiter did for one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitStats {
    /// Events written one by one.
    pub written: u64,
    /// Events counted into aggregates (including those a producer aggregated itself).
    pub aggregated: u64,
    /// Aggregate records written.
    pub aggregates: u64,
    /// Which job-wide cap was reached, if any.
    pub capped: Option<&'static str>,
}

/// The limiter of one job.
#[derive(Debug)]
pub struct Limiter {
    cfg: AuditLimits,
    kinds: HashMap<Kind, KindState>,
    bytes: u64,
    stats: LimitStats,
    capped_at_ms: Option<u128>,
    /// Aggregated events by kind (for the flood summary).
    by_kind: BTreeMap<Kind, u64>,
    next_due_ms: u128,
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Limiter {
    /// A limiter with these bounds.
    pub fn new(cfg: AuditLimits) -> Self {
        Self {
            cfg,
            kinds: HashMap::new(),
            bytes: 0,
            stats: LimitStats::default(),
            capped_at_ms: None,
            by_kind: BTreeMap::new(),
            next_due_ms: u128::MAX,
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> &LimitStats {
        &self.stats
    }

    /// Decides about one event.
    pub fn admit(&mut self, ev: &Event) -> Admit {
        if !limited(ev.kind) {
            return Admit::Free;
        }
        let w = weight(&ev.data);
        let key = key_of(ev.kind, &ev.data);
        let (burst, rate) = (
            f64::from(self.cfg.burst.max(1)),
            f64::from(self.cfg.records_per_second.max(1)),
        );
        let max_keys = usize::try_from(self.cfg.max_keys.max(1)).unwrap_or(usize::MAX);
        let ks = self.kinds.entry(ev.kind).or_default();
        let key = if ks.keys.contains_key(&key) || ks.keys.len() < max_keys {
            key
        } else {
            OTHER.to_owned()
        };
        let b = ks.keys.entry(key.clone()).or_insert_with(|| Bucket {
            tokens: burst,
            last_ms: ev.time_ms,
            written: 0,
            unwritten: 0,
            first_seq: None,
            last_seq: None,
            pending: None,
        });
        // Refill by the event's own time (network records arrive in batches at the end).
        let dt = ev.time_ms.saturating_sub(b.last_ms);
        if dt > 0 {
            b.tokens = (b.tokens + dt as f64 * rate / 1000.0).min(burst);
            b.last_ms = ev.time_ms;
        }
        let mut write = self.stats.capped.is_none() && b.tokens >= 1.0;
        let mut size = 0;
        if write {
            size = json_len(&ev.data);
            if self.stats.written >= self.cfg.max_records {
                self.stats.capped = Some("max_records");
                write = false;
            } else if self.bytes + size > self.cfg.max_bytes.0 {
                self.stats.capped = Some("max_bytes");
                write = false;
            }
            if !write {
                self.capped_at_ms = Some(ev.time_ms);
            }
        }
        if write {
            b.tokens -= 1.0;
            b.written += 1;
            b.unwritten += 1;
            self.bytes += size;
            self.stats.written += 1;
            // A pre-aggregated record stands for `w` events, `w - 1` of them not one by one.
            if w > 1 {
                self.stats.aggregated += w - 1;
                *self.by_kind.entry(ev.kind).or_default() += w - 1;
            }
            // A pending aggregate goes out before this record only once it is due: under a
            // sustained flood every let-through record would otherwise bring one along,
            // doubling the volume.
            let flush = b
                .pending
                .as_ref()
                .is_some_and(|p| now_ms() >= p.since_ms + AGGREGATE_EVERY_MS);
            return Admit::Write {
                flush,
                key: (ev.kind, key),
            };
        }
        self.stats.aggregated += w;
        *self.by_kind.entry(ev.kind).or_default() += w;
        match &mut b.pending {
            Some(p) => {
                p.count += w;
                p.first_ms = p.first_ms.min(ev.time_ms);
                p.last_ms = p.last_ms.max(ev.time_ms);
            }
            None => {
                let sample = if json_len(&ev.data) as usize <= MAX_SAMPLE {
                    ev.data.clone()
                } else {
                    json!({ "omitted_bytes": json_len(&ev.data) })
                };
                let since = now_ms();
                self.next_due_ms = self.next_due_ms.min(since + AGGREGATE_EVERY_MS);
                b.pending = Some(Pending {
                    count: w,
                    first_ms: ev.time_ms,
                    last_ms: ev.time_ms,
                    since_ms: since,
                    sample,
                });
            }
        }
        Admit::Aggregated
    }

    /// Whether the bucket `key` still has records without a sequence number (then the batch
    /// must be written before its aggregate can name them).
    pub fn has_unwritten(&self, key: &(Kind, String)) -> bool {
        self.bucket(key).is_some_and(|b| b.unwritten > 0)
    }

    fn bucket(&self, key: &(Kind, String)) -> Option<&Bucket> {
        self.kinds.get(&key.0).and_then(|k| k.keys.get(&key.1))
    }

    /// A record of bucket `key` was written as `seq`.
    pub fn written(&mut self, key: &(Kind, String), seq: u64) {
        if let Some(b) = self
            .kinds
            .get_mut(&key.0)
            .and_then(|k| k.keys.get_mut(&key.1))
        {
            b.unwritten = b.unwritten.saturating_sub(1);
            b.first_seq.get_or_insert(seq);
            b.last_seq = Some(seq);
        }
    }

    /// The aggregate of bucket `key`'s pending events, as an event for `job` (none pending:
    /// `None`).
    pub fn flush(&mut self, job: &str, key: &(Kind, String)) -> Option<Event> {
        let b = self
            .kinds
            .get_mut(&key.0)
            .and_then(|k| k.keys.get_mut(&key.1))?;
        let p = b.pending.take()?;
        self.stats.aggregates += 1;
        Some(aggregate_event(job, key.0, &key.1, b, p))
    }

    /// Aggregates that have waited [`AGGREGATE_EVERY`] (none once the job's cap is reached:
    /// then they wait for the end, which keeps the number of records bounded).
    pub fn due(&mut self, job: &str) -> Vec<Event> {
        let now = now_ms();
        if now < self.next_due_ms || self.stats.capped.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut next = u128::MAX;
        for (kind, ks) in &mut self.kinds {
            for (key, b) in &mut ks.keys {
                let due = match &b.pending {
                    Some(p) if now >= p.since_ms + AGGREGATE_EVERY_MS => true,
                    Some(p) => {
                        next = next.min(p.since_ms + AGGREGATE_EVERY_MS);
                        false
                    }
                    None => false,
                };
                if due {
                    if let Some(p) = b.pending.take() {
                        out.push(aggregate_event(job, *kind, key, b, p));
                    }
                }
            }
        }
        self.next_due_ms = next;
        self.stats.aggregates += out.len() as u64;
        // Aggregates are records too: they count against the job's cap.
        self.stats.written += out.len() as u64;
        out
    }

    /// Every pending aggregate, and the flood summary if anything was aggregated: the job is
    /// over.
    pub fn finish(&mut self, job: &str) -> Vec<Event> {
        let mut out = Vec::new();
        let mut kinds: Vec<(&Kind, &mut KindState)> = self.kinds.iter_mut().collect();
        kinds.sort_by(|a, b| a.0.cmp(b.0));
        for (kind, ks) in kinds {
            let mut keys: Vec<(&String, &mut Bucket)> = ks.keys.iter_mut().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (key, b) in keys {
                if let Some(p) = b.pending.take() {
                    out.push(aggregate_event(job, *kind, key, b, p));
                }
            }
        }
        self.stats.aggregates += out.len() as u64;
        if self.stats.aggregated > 0 || self.stats.capped.is_some() {
            out.push(Event::new(
                FLOOD,
                Some(job),
                json!({
                    "aggregated": self.stats.aggregated,
                    "written": self.stats.written,
                    "aggregates": self.stats.aggregates,
                    "by_kind": self.by_kind,
                    "capped": self.stats.capped,
                    "capped_at_ms": self.capped_at_ms.map(|t| t as u64),
                    "flood_alert": self.cfg.flood_alert,
                    "limits": {
                        "records_per_second": self.cfg.records_per_second,
                        "burst": self.cfg.burst,
                        "max_records": self.cfg.max_records,
                        "max_bytes": self.cfg.max_bytes.0,
                        "max_keys": self.cfg.max_keys,
                    },
                }),
            ));
        }
        out
    }
}

fn aggregate_event(job: &str, kind: Kind, key: &str, b: &Bucket, p: Pending) -> Event {
    let mut e = Event::new(
        AGGREGATED,
        Some(job),
        json!({
            "kind": kind,
            "key": key,
            "count": p.count,
            "first_ms": p.first_ms as u64,
            "last_ms": p.last_ms as u64,
            // The records of this key written one by one so far: the aggregated events
            // happened after record `last_seq` (and before this record).
            "written": b.written,
            "first_seq": b.first_seq,
            "last_seq": b.last_seq,
            "sample": p.sample,
        }),
    );
    e.time_ms = p.last_ms.max(p.first_ms);
    e
}

/// A bounded book of records a producer keeps in memory until the job ends (the egress
/// gateway's report, the firewall's drop records): the first `max_records` are kept whole,
/// later ones are counted into one record per key (at most `max_keys` keys, then `(other)`),
/// which `merge` folds together. `T` is the record type.
#[derive(Debug)]
pub struct Book<T> {
    max_records: usize,
    max_keys: usize,
    kept: Vec<T>,
    folded: HashMap<String, (T, u64)>,
    other: Option<(T, u64)>,
    /// Records offered.
    pub total: u64,
}

impl<T> Book<T> {
    /// A book that keeps `max_records` records whole and `max_keys` aggregates.
    pub fn new(max_records: usize, max_keys: usize) -> Self {
        Self {
            max_records,
            max_keys: max_keys.max(1),
            kept: Vec::new(),
            folded: HashMap::new(),
            other: None,
            total: 0,
        }
    }

    /// Offers a record with its aggregation key; `merge(into, r)` folds `r` into an existing
    /// aggregate of the same key.
    pub fn add(&mut self, key: impl FnOnce(&T) -> String, r: T, merge: impl FnOnce(&mut T, T)) {
        self.total += 1;
        if self.kept.len() < self.max_records {
            self.kept.push(r);
            return;
        }
        let k = cut(key(&r), MAX_KEY);
        if let Some((agg, n)) = self.folded.get_mut(&k) {
            merge(agg, r);
            *n += 1;
        } else if self.folded.len() < self.max_keys {
            self.folded.insert(k, (r, 1));
        } else if let Some((agg, n)) = &mut self.other {
            merge(agg, r);
            *n += 1;
        } else {
            self.other = Some((r, 1));
        }
    }

    /// Everything: the kept records, then each aggregate with its count.
    pub fn into_parts(self) -> (Vec<T>, Vec<(T, u64)>) {
        let mut folded: Vec<(T, u64)> = self.folded.into_values().collect();
        folded.extend(self.other);
        (self.kept, folded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32, max_records: u64) -> AuditLimits {
        AuditLimits {
            records_per_second: rate,
            burst,
            max_records,
            ..AuditLimits::default()
        }
    }

    fn denied(t: u128, call: &str) -> Event {
        let mut e = Event::new(Kind::SyscallDenied, Some("j"), json!({ "syscall": call }));
        e.time_ms = t;
        e
    }

    /// Runs events through a limiter as the queue does; returns what would be written.
    fn run(l: &mut Limiter, evs: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::new();
        let mut seq = 0;
        for e in evs {
            match l.admit(&e) {
                Admit::Write { key, flush } => {
                    if flush {
                        out.extend(l.flush("j", &key));
                        seq += 1;
                    }
                    out.push(e);
                    seq += 1;
                    l.written(&key, seq);
                }
                Admit::Free => out.push(e),
                Admit::Aggregated => {}
            }
        }
        out.extend(l.finish("j"));
        out
    }

    fn count(evs: &[Event], kind: Kind) -> usize {
        evs.iter().filter(|e| e.kind == kind).count()
    }

    #[test]
    fn a_flood_of_one_key_is_written_up_to_its_burst_then_aggregated_with_its_count() {
        let mut l = Limiter::new(limits(10, 100, 1_000_000));
        // 100k calls within one second.
        let evs: Vec<Event> = (0..100_000u128)
            .map(|i| denied(1000 + i / 100, "acct"))
            .collect();
        let out = run(&mut l, evs);
        let written = count(&out, Kind::SyscallDenied);
        assert!((100..=112).contains(&written), "{written}");
        let aggs: Vec<&Event> = out.iter().filter(|e| e.kind == AGGREGATED).collect();
        let counted: u64 = aggs
            .iter()
            .map(|e| e.data["count"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(written as u64 + counted, 100_000, "nothing dropped");
        assert_eq!(aggs[0].data["kind"], "syscall.denied");
        assert_eq!(aggs[0].data["key"], "acct");
        assert!(aggs[0].data["last_seq"].as_u64().is_some());
        let flood = out.iter().find(|e| e.kind == FLOOD).expect("summary");
        assert_eq!(flood.data["aggregated"], counted);
        assert_eq!(flood.data["by_kind"]["syscall.denied"], counted);
    }

    #[test]
    fn what_a_job_asks_its_container_api_for_is_limited_its_own_lifecycle_is_not() {
        use crate::Kind::*;
        for k in [ContainerCreated, ContainerEnded, ContainerRefused] {
            assert!(limited(k), "{k:?}");
        }
        for k in [JobStarted, JobEnded, JobRequested] {
            assert!(!limited(k), "{k:?}");
        }
        let data = serde_json::json!({ "role": "service:db", "what": "--privileged" });
        assert_eq!(key_of(ContainerCreated, &data), "service:db");
        assert_eq!(key_of(ContainerRefused, &data), "--privileged");
    }

    #[test]
    fn other_keys_keep_their_own_budget_and_quiet_jobs_are_untouched() {
        let mut l = Limiter::new(limits(10, 5, 1_000_000));
        let mut evs: Vec<Event> = (0..1000u128).map(|i| denied(i, "acct")).collect();
        evs.push(denied(1000, "mount"));
        let out = run(&mut l, evs);
        assert!(out
            .iter()
            .any(|e| e.kind == Kind::SyscallDenied && e.data["syscall"] == "mount"));
        let mut quiet = Limiter::new(AuditLimits::default());
        let out = run(
            &mut quiet,
            (0..50u128).map(|i| denied(i * 10, "acct")).collect(),
        );
        assert_eq!(count(&out, Kind::SyscallDenied), 50);
        assert_eq!(count(&out, AGGREGATED) + count(&out, FLOOD), 0);
    }

    #[test]
    fn the_job_cap_aggregates_everything_after_it_and_is_named() {
        let mut l = Limiter::new(AuditLimits {
            max_keys: 4,
            ..limits(1000, 1000, 100)
        });
        // Distinct keys each time: past max_keys they share `(other)`.
        let evs: Vec<Event> = (0..10_000u128)
            .map(|i| denied(i, &format!("call{i}")))
            .collect();
        let out = run(&mut l, evs);
        assert_eq!(count(&out, Kind::SyscallDenied), 100);
        let aggs: Vec<&Event> = out.iter().filter(|e| e.kind == AGGREGATED).collect();
        assert!(aggs.len() <= 5, "{}", aggs.len());
        assert!(aggs.iter().any(|e| e.data["key"] == OTHER));
        let flood = out.iter().find(|e| e.kind == FLOOD).expect("summary");
        assert_eq!(flood.data["capped"], "max_records");
        assert_eq!(flood.data["aggregated"], 9_900);
    }

    #[test]
    fn big_records_hit_the_byte_cap_and_samples_stay_small() {
        let mut l = Limiter::new(AuditLimits {
            max_bytes: airlock_policy::ByteSize(64 << 10),
            ..limits(1000, 1000, 1_000_000)
        });
        let big = "x".repeat(8000);
        let evs: Vec<Event> = (0..100u128)
            .map(|i| {
                let mut e = Event::new(
                    Kind::ProcessExec,
                    Some("j"),
                    json!({ "path": "/bin/x", "argv": [big] }),
                );
                e.time_ms = i;
                e
            })
            .collect();
        let out = run(&mut l, evs);
        assert_eq!(count(&out, Kind::ProcessExec), 8);
        let agg = out.iter().find(|e| e.kind == AGGREGATED).expect("agg");
        assert!(json_len(&agg.data) < 1024, "{}", agg.data);
    }

    #[test]
    fn a_book_keeps_the_first_records_and_counts_the_rest_by_key() {
        let mut b: Book<(String, u64)> = Book::new(3, 2);
        for i in 0..100u64 {
            let name = format!("n{}", i % 4);
            b.add(|r| r.0.clone(), (name, 1), |a, r| a.1 += r.1);
        }
        assert_eq!(b.total, 100);
        let (kept, folded) = b.into_parts();
        assert_eq!(kept.len(), 3);
        assert_eq!(folded.len(), 3, "two keys and (other)");
        assert_eq!(folded.iter().map(|(_, n)| n).sum::<u64>(), 97);
    }
}
