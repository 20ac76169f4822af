//! Alert sinks besides the stderr [`summary`](crate::summary): a JSON-lines file and an
//! HMAC-signed HTTP(S) webhook.
//!
//! The webhook never blocks the job. [`WebhookSink::send`] writes the alert to the outbox
//! directory (one file per alert, named by [`Alert::id`]) and hands it to a background
//! thread through a bounded channel without waiting; if the channel is full the alert is
//! still in the outbox. The thread POSTs each alert, retrying with exponential back-off, and
//! deletes its outbox file once a 2xx answer came. [`WebhookSink::flush`] gives it until a
//! deadline and returns by then whatever happens. Whatever was not delivered stays in the
//! outbox and is sent first by the next sink started on the same directory: delivery is at
//! least once, and receivers drop duplicates by `id`.
//!
//! Each POST carries `X-Airlock-Signature-256: sha256=<hex HMAC-SHA256 of the body>` under
//! the key named by the policy's `alerts.webhook.secret`, and `X-Airlock-Alert-Id`.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_policy::Secret;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::alert::Alert;

/// Errors of the sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file or directory of a sink could not be written.
    #[error("alert sink {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An alert could not be encoded.
    #[error("encoding an alert: {0}")]
    Encode(#[from] serde_json::Error),
    /// The background thread could not be started.
    #[error("starting the webhook thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A webhook is configured but its HMAC key was not given.
    #[error("alerts.webhook needs the value of secret {name:?} (its HMAC key)")]
    MissingKey {
        /// The secret's name.
        name: String,
    },
}

/// The sinks a policy's `[alerts]` table asks for (stderr is the caller's: [`crate::summary`]).
pub struct Sinks {
    file: Option<JsonlSink>,
    webhook: Option<WebhookSink>,
}

impl Sinks {
    /// Opens the sinks of `alerts`. `key` is the value of the secret `alerts.webhook.secret`
    /// names (resolve it like the group's secrets, with `airlock_policy::resolve_secrets`);
    /// `outbox` is the webhook's outbox directory, e.g. `DATA_DIR/alerts/outbox`.
    pub fn from_policy(
        alerts: &airlock_policy::Alerts,
        key: Option<Secret>,
        outbox: &Path,
    ) -> Result<Self, SinkError> {
        let webhook = match &alerts.webhook {
            None => None,
            Some(w) => {
                let key = key.ok_or_else(|| SinkError::MissingKey {
                    name: w.secret.clone(),
                })?;
                Some(WebhookSink::start(WebhookConfig::from_policy(
                    w,
                    key,
                    outbox.to_owned(),
                ))?)
            }
        };
        Ok(Self {
            file: alerts.file.as_ref().map(JsonlSink::new),
            webhook,
        })
    }

    /// Hands `alerts` to every sink without waiting for the network; returns what went
    /// wrong, sink by sink (one failing sink does not stop the others).
    pub fn deliver(&self, alerts: &[Alert]) -> Vec<SinkError> {
        let mut errors = Vec::new();
        if let Some(f) = &self.file {
            if let Err(e) = f.append(alerts) {
                errors.push(e);
            }
        }
        if let Some(w) = &self.webhook {
            errors.extend(alerts.iter().filter_map(|a| w.send(a).err()));
        }
        errors
    }

    /// A handle that ships checkpoints (see [`crate::checkpoint`]) to the same sinks, from
    /// any thread (the audit writer's), without waiting for the network.
    pub fn checkpoint_shipper(&self) -> CheckpointShipper {
        CheckpointShipper {
            file: self.file.clone(),
            webhook: self
                .webhook
                .as_ref()
                .map(|w| (w.tx.clone(), w.outbox.clone())),
            errors: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Flushes the webhook until `deadline` (see [`WebhookSink::flush`]); `None` without
    /// a webhook.
    pub fn flush(self, deadline: Instant) -> Option<FlushReport> {
        self.webhook.map(|w| w.flush(deadline))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Appends alerts to a JSON-lines file, one alert a line.
#[derive(Debug, Clone)]
pub struct JsonlSink {
    path: PathBuf,
}

impl JsonlSink {
    /// A sink writing to `path` (created on first append, parent directories too).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Appends `alerts` with one `write` (so lines of concurrent jobs do not interleave) and
    /// syncs the file.
    pub fn append(&self, alerts: &[Alert]) -> Result<(), SinkError> {
        let mut lines = Vec::with_capacity(alerts.len());
        for a in alerts {
            lines.push(serde_json::to_vec(&Envelope::of(a))?);
        }
        self.append_lines(&lines)
    }

    /// Appends JSON lines (without their newline) with one `write`, and syncs the file.
    fn append_lines(&self, lines: &[Vec<u8>]) -> Result<(), SinkError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for l in lines {
            buf.extend_from_slice(l);
            buf.push(b'\n');
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        f.write_all(&buf).map_err(io(&self.path))?;
        f.sync_data().map_err(io(&self.path))
    }
}

/// Ships checkpoints to the sinks: a line in the JSON-lines file, a signed POST to the
/// webhook (through its outbox, like an alert). Cheap to clone; holds no sender of its own,
/// so [`Sinks::flush`] still ends the webhook thread.
#[derive(Clone)]
pub struct CheckpointShipper {
    file: Option<JsonlSink>,
    webhook: Option<(SharedTx, PathBuf)>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for CheckpointShipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointShipper")
            .field("file", &self.file)
            .field("webhook", &self.webhook.as_ref().map(|w| &w.1))
            .finish()
    }
}

impl CheckpointShipper {
    /// Hands `c` to every sink; what fails is kept for [`CheckpointShipper::take_errors`]
    /// (a sink that is down must not stop the log).
    pub fn ship(&self, c: &crate::Checkpoint) {
        let mut errs = Vec::new();
        match c.to_line() {
            Err(e) => errs.push(format!("checkpoint: {e}")),
            Ok(body) => {
                if let Some(f) = &self.file {
                    if let Err(e) = f.append_lines(std::slice::from_ref(&body)) {
                        errs.push(format!("checkpoint to {}: {e}", f.path.display()));
                    }
                }
                if let Some((tx, outbox)) = &self.webhook {
                    if let Err(e) = enqueue(tx, outbox, c.id(), body) {
                        errs.push(format!("checkpoint to the webhook: {e}"));
                    }
                }
            }
        }
        if !errs.is_empty() {
            if let Ok(mut v) = self.errors.lock() {
                // Bounded: a sink down for a long time repeats the same error.
                if v.len() < 16 {
                    v.extend(errs);
                }
            }
        }
    }

    /// The shipping errors since the last call.
    pub fn take_errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// The webhook's sender, shared with checkpoint shippers; `None` once flushed.
type SharedTx = Arc<Mutex<Option<SyncSender<Item>>>>;

/// Writes `body` to the outbox as `<id>.json`, then offers it to the thread without waiting.
fn enqueue(tx: &SharedTx, outbox: &Path, id: String, body: Vec<u8>) -> Result<(), SinkError> {
    let path = outbox.join(format!("{id}.json"));
    let tmp = outbox.join(format!(".{id}.tmp"));
    std::fs::write(&tmp, &body).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Some(tx) = tx.lock().ok().as_ref().and_then(|t| t.as_ref()) {
        match tx.try_send(Item {
            id,
            body,
            attempts: 0,
            next_try: Instant::now(),
        }) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
    Ok(())
}

/// What the file and webhook sinks write: the alert and its id.
#[derive(Serialize)]
struct Envelope<'a> {
    id: String,
    #[serde(flatten)]
    alert: &'a Alert,
}

impl<'a> Envelope<'a> {
    fn of(alert: &'a Alert) -> Self {
        Self {
            id: alert.id(),
            alert,
        }
    }
}

/// The signature header value of `body` under `key`: `sha256=<hex HMAC-SHA256>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Settings of the webhook sink.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// The HMAC key.
    pub key: Secret,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts after the first, per alert and per sink lifetime.
    pub retries: u32,
    /// Delay before the first retry; it doubles with each further one.
    pub backoff: Duration,
    /// Longest delay between two attempts.
    pub max_backoff: Duration,
    /// The outbox directory.
    pub outbox: PathBuf,
    /// Capacity of the channel to the background thread.
    pub queue: usize,
}

impl WebhookConfig {
    /// From the policy's `[alerts.webhook]`, the resolved key and an outbox directory.
    pub fn from_policy(w: &airlock_policy::Webhook, key: Secret, outbox: PathBuf) -> Self {
        Self {
            url: w.url.clone(),
            key,
            timeout: w.timeout.0,
            retries: w.retries,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            outbox,
            queue: 256,
        }
    }
}

/// What [`WebhookSink::flush`] achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Alerts delivered during the sink's life (old outbox entries included).
    pub delivered: usize,
    /// Alerts left in the outbox for the next run.
    pub pending: usize,
    /// Whether the thread finished before the deadline (if not, `pending` counts the files
    /// in the outbox at the deadline).
    pub finished: bool,
}

struct Item {
    id: String,
    body: Vec<u8>,
    attempts: u32,
    next_try: Instant,
}

#[derive(Default)]
struct Shared {
    /// Set by flush: finish by then.
    deadline: Option<Instant>,
}

/// The webhook sink: a background thread fed by a bounded channel.
pub struct WebhookSink {
    tx: SharedTx,
    outbox: PathBuf,
    shared: Arc<Mutex<Shared>>,
    done: Receiver<FlushReport>,
    thread: Option<JoinHandle<()>>,
}

impl WebhookSink {
    /// Creates the outbox directory and starts the thread, which first re-sends what an
    /// earlier run left in the outbox.
    pub fn start(cfg: WebhookConfig) -> Result<Self, SinkError> {
        std::fs::create_dir_all(&cfg.outbox).map_err(io(&cfg.outbox))?;
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let (done_tx, done) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let outbox = cfg.outbox.clone();
        let worker = Worker {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(cfg.timeout))
                .max_redirects(0)
                .http_status_as_error(false)
                .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
                .build()
                .into(),
            cfg,
            shared: shared.clone(),
            pending: VecDeque::new(),
            delivered: 0,
        };
        let thread = std::thread::Builder::new()
            .name("airlock-webhook".into())
            .spawn(move || {
                let report = worker.run(rx);
                let _ = done_tx.send(report);
            })
            .map_err(SinkError::Thread)?;
        Ok(Self {
            tx: Arc::new(Mutex::new(Some(tx))),
            outbox,
            shared,
            done,
            thread: Some(thread),
        })
    }

    /// Queues an alert without waiting: it is written to the outbox (a small local file),
    /// then offered to the thread; a full queue leaves it for the next run.
    pub fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&Envelope::of(alert))?;
        enqueue(&self.tx, &self.outbox, alert.id(), body)
    }

    /// Drops the sender: the thread sees the channel close once the queue is drained.
    fn close(&self) -> bool {
        self.tx
            .lock()
            .map(|mut t| t.take().is_some())
            .unwrap_or(false)
    }

    /// Lets the thread deliver until `deadline`, then returns (at the deadline at the
    /// latest, plus a few milliseconds). Undelivered alerts stay in the outbox.
    pub fn flush(mut self, deadline: Instant) -> FlushReport {
        self.set_deadline(deadline);
        self.close();
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.done.recv_timeout(wait + Duration::from_millis(20)) {
            Ok(r) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                r
            }
            // The thread is still in an attempt; it stops at the deadline on its own. The
            // process may exit now: everything undelivered is in the outbox.
            Err(_) => FlushReport {
                delivered: 0,
                pending: outbox_files(&self.outbox).len(),
                finished: false,
            },
        }
    }

    fn set_deadline(&self, deadline: Instant) {
        if let Ok(mut s) = self.shared.lock() {
            s.deadline = Some(deadline);
        }
    }
}

impl Drop for WebhookSink {
    /// Without a flush, the thread stops at once; nothing is lost (the outbox keeps it).
    fn drop(&mut self) {
        if self.close() {
            self.set_deadline(Instant::now());
        }
    }
}

fn outbox_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

struct Worker {
    agent: ureq::Agent,
    cfg: WebhookConfig,
    shared: Arc<Mutex<Shared>>,
    pending: VecDeque<Item>,
    delivered: usize,
}

impl Worker {
    fn deadline(&self) -> Option<Instant> {
        self.shared.lock().ok().and_then(|s| s.deadline)
    }

    fn add(&mut self, item: Item) {
        if !self.pending.iter().any(|p| p.id == item.id) {
            self.pending.push_back(item);
        }
    }

    fn run(mut self, rx: Receiver<Item>) -> FlushReport {
        // What earlier runs could not deliver goes first.
        for p in outbox_files(&self.cfg.outbox) {
            let (Some(id), Ok(body)) = (
                p.file_stem().and_then(|s| s.to_str()).map(str::to_owned),
                std::fs::read(&p),
            ) else {
                continue;
            };
            self.add(Item {
                id,
                body,
                attempts: 0,
                next_try: Instant::now(),
            });
        }
        let mut open = true;
        loop {
            let now = Instant::now();
            let deadline = self.deadline();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            let next = self.pending.iter().map(|p| p.next_try).min();
            if !open && next.is_none() {
                break;
            }
            // Nothing more can be done before the deadline.
            if let (false, Some(n), Some(d)) = (open, next, deadline) {
                if n >= d {
                    break;
                }
            }
            if next.is_none_or(|n| n > now) {
                let until = [next, deadline].into_iter().flatten().min();
                let wait = until
                    .map(|u| u.saturating_duration_since(now))
                    .unwrap_or(Duration::from_secs(3600));
                if open {
                    match rx.recv_timeout(wait) {
                        Ok(item) => self.add(item),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => open = false,
                    }
                } else {
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                }
                continue;
            }
            // Drain what has queued meanwhile, then attempt the due items.
            while let Ok(item) = rx.try_recv() {
                self.add(item);
            }
            self.attempt_due(deadline);
        }
        FlushReport {
            delivered: self.delivered,
            pending: outbox_files(&self.cfg.outbox).len(),
            finished: true,
        }
    }

    fn attempt_due(&mut self, deadline: Option<Instant>) {
        let now = Instant::now();
        let mut keep = VecDeque::new();
        while let Some(mut item) = self.pending.pop_front() {
            if item.next_try > now {
                keep.push_back(item);
                continue;
            }
            let mut timeout = self.cfg.timeout;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    keep.push_back(item);
                    continue;
                }
                timeout = timeout.min(left);
            }
            if self.post(&item, timeout) {
                self.delivered += 1;
                let _ = std::fs::remove_file(self.cfg.outbox.join(format!("{}.json", item.id)));
                continue;
            }
            item.attempts += 1;
            if item.attempts > self.cfg.retries {
                // Given up for this run; the outbox keeps it for the next.
                continue;
            }
            let exp = item.attempts.saturating_sub(1).min(20);
            let delay = self
                .cfg
                .backoff
                .saturating_mul(1u32 << exp)
                .min(self.cfg.max_backoff);
            item.next_try = Instant::now() + delay;
            keep.push_back(item);
        }
        self.pending = keep;
    }

    /// One delivery attempt; true on a 2xx answer.
    fn post(&self, item: &Item, timeout: Duration) -> bool {
        self.agent
            .post(&self.cfg.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "application/json")
            .header("X-Airlock-Alert-Id", &item.id)
            .header(
                "X-Airlock-Signature-256",
                &signature(self.cfg.key.expose().as_bytes(), &item.body),
            )
            .send(&item.body[..])
            .is_ok_and(|r| r.status().is_success())
    }
}

#[cfg(test)]
mod tests;
