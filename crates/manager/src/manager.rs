//! Queue, capacity, lifecycle and reconciliation.
//!
//! One dispatcher task owns capacity: it walks the queued jobs oldest first, routes each to a
//! group (or refuses it), and gives it capacity if both the group's `max_runners` and the
//! global limit allow. Jobs wait in order within their group; a full group does not hold up
//! another group's jobs. Each job with capacity gets a lifecycle task:
//! provisioning (JIT runner registered) → starting (sandbox) → running → done/failed, then the
//! runner is deleted at GitHub and the per-job token revoked. Every step is persisted before
//! it is acted on; a job active at a crash is marked `lost` by reconciliation and never run
//! again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_audit::AuditLog;
use airlock_policy::Policy;
use serde_json::json;
use tokio::sync::{oneshot, watch, Notify};
use tracing::{info, warn};

use crate::github::{GitHub, JitRequest};
use crate::launcher::{LaunchSpec, Launcher};
use crate::metrics::{AlertKind, GroupState, Metrics};
use crate::routing::{self, GENERIC_LABELS};
use crate::state::{Ingest, JobRow, JobStatus, NewJob, StateError, Store};
use crate::webhook::{WorkflowJobAction, WorkflowJobEvent};
use crate::Secret;

mod scaleset;
pub use scaleset::{delete_scale_set, list_scale_sets, ScaleSetOptions};

/// The `ss_starved` entry of webhook jobs waiting for slots that primed sandboxes hold.
const WEBHOOK_STARVED: &str = "\u{0}webhook";

/// Settings of the manager (from `serve.toml`).
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Name prefix of airlock's runners.
    pub runner_prefix: String,
    /// Global concurrency.
    pub max_concurrency: u32,
    /// Extra time past the group's timeout before an active job is torn down.
    pub pickup_timeout: Duration,
    /// `Some(owner/name)` for repository-level runners.
    pub repository: Option<String>,
    /// After GitHub reports a job `completed`, how long the runner that ran it may take to
    /// exit on its own before serve tears its sandbox down.
    pub completed_grace: Duration,
    /// Scale-set listeners.
    pub scale_sets: ScaleSetOptions,
    /// Finished rows older than this are pruned at each reconciliation.
    pub state_retention: Duration,
}

/// Default of [`ManagerOptions::completed_grace`].
pub const COMPLETED_GRACE: Duration = Duration::from_secs(30);

/// Errors of the manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The audit log failed (serve refuses to run jobs it cannot record).
    #[error(transparent)]
    Audit(#[from] airlock_audit::AuditError),
    /// The configuration (or a secret it names) is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// serve's own directories could not be created.
    #[error("creating {path}: {source}")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Listening failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What one reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Jobs that were active without a task (serve crashed): now `lost`.
    pub lost_jobs: Vec<i64>,
    /// Sandboxes removed by `airlock gc`.
    pub sandboxes_removed: Vec<String>,
    /// airlock runners deleted at GitHub because nothing owns them.
    pub runners_deleted: Vec<u64>,
    /// Runners without airlock's prefix (alerted once each).
    pub unauthorized_runners: Vec<u64>,
    /// Jobs torn down for running past their timeout.
    pub stuck_jobs: Vec<i64>,
    /// GitHub's ids of `lost_jobs` (what people look up).
    pub lost_github_jobs: Vec<u64>,
    /// GitHub's ids of `stuck_jobs`.
    pub stuck_github_jobs: Vec<u64>,
    /// Scale-set runners that were active when serve stopped: now `lost`.
    pub lost_runners: Vec<String>,
    /// Everything that failed (reconciliation goes on after a failure).
    pub errors: Vec<String>,
}

impl std::fmt::Display for ReconcileReport {
    /// For the log: GitHub's job ids and runner ids, never serve's internal row numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lost job(s) {:?}, {} lost scale-set runner(s) {:?}, {} stuck job(s) {:?}, {} sandbox(es) removed, {} runner(s) deleted {:?}, {} unauthorized runner(s) {:?}, {} error(s)",
            self.lost_github_jobs.len(),
            self.lost_github_jobs,
            self.lost_runners.len(),
            self.lost_runners,
            self.stuck_github_jobs.len(),
            self.stuck_github_jobs,
            self.sandboxes_removed.len(),
            self.runners_deleted.len(),
            self.runners_deleted,
            self.unauthorized_runners.len(),
            self.unauthorized_runners,
            self.errors.len()
        )
    }
}

/// What the webhook handler's call did.
pub use crate::state::Ingest as IngestOutcome;

struct Inner {
    store: Store,
    github: Arc<dyn GitHub>,
    launcher: Arc<dyn Launcher>,
    policy: Policy,
    audit: Mutex<AuditLog>,
    metrics: Metrics,
    opts: ManagerOptions,
    wake: Notify,
    idle: Notify,
    accepting: AtomicBool,
    ready: AtomicBool,
    /// The last reconcile could read GitHub with serve's credentials.
    github_ok: AtomicBool,
    tasks: Mutex<HashMap<i64, watch::Sender<bool>>>,
    /// Why serve stopped a job's sandbox (set before the stop is sent).
    stop_reasons: Mutex<HashMap<i64, StopReason>>,
    received: Mutex<HashMap<i64, Instant>>,
    alerted: Mutex<HashSet<u64>>,
    /// Held while capacity is given (dispatcher) and while jobs without a task are declared
    /// lost (reconcile), so reconcile never sees a job between `provisioning` and its task.
    capacity: Mutex<()>,
    /// Scale sets served.
    sets: Mutex<Vec<Arc<scaleset::SetRt>>>,
    /// Listener tasks (awaited at shutdown: they close their sessions).
    listeners: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Scale-set runner tasks, by runner seq.
    ss_tasks: Mutex<HashMap<i64, watch::Sender<bool>>>,
    /// Why serve stopped a scale-set runner.
    ss_stop: Mutex<HashMap<i64, StopReason>>,
    /// Scale sets (and webhook jobs, [`WEBHOOK_STARVED`]) whose runners wait for a slot that
    /// primed sandboxes hold: while any does, no other scale set primes (the slot given back
    /// goes to the runner).
    ss_starved: Mutex<std::collections::HashSet<String>>,
    /// Becomes true when serve begins to shut down (wakes long polls and back-offs).
    shutdown: watch::Sender<bool>,
    /// HTTP client of the Actions service.
    http: reqwest::Client,
    ss_opts: ScaleSetOptions,
}

/// The runner manager. Cheap to clone.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Manager {
    /// A manager over its store, GitHub, launcher, policy and audit log.
    pub fn new(
        store: Store,
        github: Arc<dyn GitHub>,
        launcher: Arc<dyn Launcher>,
        policy: Policy,
        audit: AuditLog,
        opts: ManagerOptions,
    ) -> Self {
        let ss_opts = opts.scale_sets.clone();
        Self {
            inner: Arc::new(Inner {
                store,
                github,
                launcher,
                policy,
                audit: Mutex::new(audit),
                metrics: Metrics::new(),
                opts,
                wake: Notify::new(),
                idle: Notify::new(),
                accepting: AtomicBool::new(true),
                ready: AtomicBool::new(false),
                github_ok: AtomicBool::new(false),
                tasks: Mutex::new(HashMap::new()),
                stop_reasons: Mutex::new(HashMap::new()),
                received: Mutex::new(HashMap::new()),
                alerted: Mutex::new(HashSet::new()),
                capacity: Mutex::new(()),
                sets: Mutex::new(Vec::new()),
                listeners: Mutex::new(Vec::new()),
                ss_tasks: Mutex::new(HashMap::new()),
                ss_stop: Mutex::new(HashMap::new()),
                ss_starved: Mutex::new(std::collections::HashSet::new()),
                shutdown: watch::channel(false).0,
                // Every call but the long poll (which sets its own) is bounded: a stalled
                // connection becomes a retried network error, never a stuck listener.
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(ss_opts.request_timeout)
                    .build()
                    .unwrap_or_default(),
                ss_opts,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether serve takes new jobs (reconciled at start and not shutting down).
    pub fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
            && self.inner.accepting.load(Ordering::SeqCst)
            && self.inner.github_ok.load(Ordering::SeqCst)
            && self.scale_sets_live()
    }

    /// Number of jobs (and scale-set runners) with a lifecycle task.
    pub fn running_tasks(&self) -> usize {
        lock(&self.inner.tasks).len() + lock(&self.inner.ss_tasks).len()
    }

    /// What a runner of `group` is started with: webhook runners, scale-set runners, and
    /// the template of a primed sandbox (whose JIT config arrives at its start, so `jit` is
    /// unused there).
    fn runner_spec(
        &self,
        group: &str,
        g: &airlock_policy::Group,
        key: &str,
        jit: crate::Secret,
        token: Option<crate::Secret>,
    ) -> LaunchSpec {
        LaunchSpec {
            key: key.to_owned(),
            group: group.to_owned(),
            policy: g.clone(),
            detectors: self.inner.policy.detectors.clone(),
            alerts: self.inner.policy.alerts.clone(),
            audit: self.inner.policy.audit.clone(),
            images: self.inner.policy.images.clone(),
            command: g.runner.clone(),
            jit_config: jit,
            token,
        }
    }

    fn audit(&self, kind: airlock_audit::Kind, job: Option<&str>, data: serde_json::Value) {
        if let Err(e) = lock(&self.inner.audit).append(kind, job, data) {
            warn!("audit log: {e}");
        }
    }

    /// Records a verified `workflow_job` delivery. Only stores and wakes the dispatcher: the
    /// webhook handler never does the work itself.
    pub fn ingest(
        &self,
        delivery: &str,
        ev: &WorkflowJobEvent,
        raw: &str,
    ) -> Result<Ingest, StateError> {
        let job = (ev.action == WorkflowJobAction::Queued).then(|| NewJob {
            gh_job_id: ev.workflow_job.id,
            repo: &ev.repository.full_name,
            payload: raw,
        });
        let r = self
            .inner
            .store
            .ingest(delivery, "workflow_job", Some(ev.action.as_str()), job)?;
        match r {
            Ingest::Enqueued(seq) => {
                lock(&self.inner.received).insert(seq, Instant::now());
                self.inner.metrics.queue_depth.inc();
                self.inner.wake.notify_one();
            }
            Ingest::Recorded => {
                if ev.action != WorkflowJobAction::Queued {
                    self.inner.store.github_action(
                        ev.workflow_job.id,
                        ev.action.as_str(),
                        ev.workflow_job.runner_name.as_deref(),
                    )?;
                }
                if ev.action == WorkflowJobAction::Completed {
                    self.on_completed(ev)?;
                }
            }
            Ingest::Duplicate => {}
        }
        Ok(r)
    }

    /// GitHub says a job is over: a job still waiting here will never need a runner (it was
    /// cancelled, or another runner took it), and the sandbox of the runner that ran it gets
    /// `completed_grace` to exit on its own before it is torn down.
    fn on_completed(&self, ev: &WorkflowJobEvent) -> Result<(), StateError> {
        let st = &self.inner.store;
        for j in st.queued()? {
            if j.gh_job_id == ev.workflow_job.id {
                let why = "completed on GitHub before a runner was started";
                st.refuse(j.seq, why)?;
                self.inner.metrics.queue_depth.dec();
                self.audit(
                    airlock_audit::Kind::ServeJobCancelled,
                    Some(&format!("gh-{}", j.gh_job_id)),
                    json!({"github_job_id": j.gh_job_id, "reason": why}),
                );
            }
        }
        let Some(runner) = ev.workflow_job.runner_name.clone() else {
            return Ok(());
        };
        for j in st.active()? {
            if j.runner_name.as_deref() != Some(runner.as_str()) {
                continue;
            }
            let me = self.clone();
            let (seq, key, runner) = (j.seq, format!("gh-{}", j.gh_job_id), runner.clone());
            let grace = self.inner.opts.completed_grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let tx = lock(&me.inner.tasks).get(&seq).cloned();
                if let Some(tx) = tx {
                    me.audit(
                        airlock_audit::Kind::ServeJobStoppedAfterCompleted,
                        Some(&key),
                        json!({"runner": runner, "grace_ms": grace.as_millis() as u64}),
                    );
                    lock(&me.inner.stop_reasons).insert(seq, StopReason::CompletedOnGitHub);
                    let _ = tx.send(true);
                }
            });
        }
        Ok(())
    }

    /// Records a delivery of an event serve does not act on (for deduplication only).
    pub fn ingest_other(&self, delivery: &str, event: &str) -> Result<Ingest, StateError> {
        self.inner.store.ingest(delivery, event, None, None)
    }

    /// Reconciles, then starts the dispatcher and the periodic reconciliation.
    pub async fn start(&self, reconcile_every: Duration) -> ReconcileReport {
        let first = self.reconcile().await;
        self.inner.ready.store(true, Ordering::SeqCst);
        let me = self.clone();
        tokio::spawn(async move { me.dispatch_loop().await });
        self.start_scale_sets();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(reconcile_every).await;
                if !me.inner.accepting.load(Ordering::SeqCst) {
                    break;
                }
                me.reconcile().await;
            }
        });
        first
    }

    async fn dispatch_loop(&self) {
        while self.inner.accepting.load(Ordering::SeqCst) {
            if let Err(e) = self.dispatch_once() {
                warn!("dispatcher: {e}");
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One pass over the queue: route, refuse, or give capacity, oldest first.
    fn dispatch_once(&self) -> Result<(), StateError> {
        let _cap = lock(&self.inner.capacity);
        let st = &self.inner.store;
        let queued = st.queued()?;
        let mut per_group: BTreeMap<String, u32> = BTreeMap::new();
        let mut total = 0u32;
        for j in st.active()? {
            total += 1;
            *per_group.entry(j.group.unwrap_or_default()).or_default() += 1;
        }
        // Scale-set runners share the global capacity, and so do primed sandboxes (webhook
        // runners never start in one: they hold slots only).
        total += u32::try_from(st.ss_alive(None)?.len()).unwrap_or(u32::MAX);
        let primed: u32 = self.inner.launcher.primed().values().sum();
        total = total.saturating_add(primed);
        let mut make_room = 0u32;
        let mut waiting = 0i64;
        for job in queued {
            if !self.inner.accepting.load(Ordering::SeqCst) {
                return Ok(());
            }
            let key = format!("gh-{}", job.gh_job_id);
            let ev: WorkflowJobEvent = match serde_json::from_str(&job.payload) {
                Ok(e) => e,
                Err(e) => {
                    st.refuse(job.seq, &format!("unreadable payload: {e}"))?;
                    continue;
                }
            };
            // Routed once; a job waiting for capacity keeps its group (unless the group
            // is gone from the policy since, after a restart).
            let known = job
                .group
                .clone()
                .filter(|g| self.inner.policy.groups.contains_key(g));
            let routed = match known {
                Some(g) => Ok(g),
                None => routing::route(&self.inner.policy, &ev).inspect(|g| {
                    if let Err(e) = st.set_group(job.seq, g) {
                        warn!("job {key}: {e}");
                    }
                }),
            };
            let group = match routed {
                Ok(g) => g,
                Err(refusal) => {
                    warn!("refusing job {}: {refusal}", job.gh_job_id);
                    st.refuse(job.seq, &refusal.to_string())?;
                    lock(&self.inner.received).remove(&job.seq);
                    self.audit(
                        airlock_audit::Kind::ServeJobRefused,
                        Some(&key),
                        json!({"github_job_id": job.gh_job_id, "repository": job.repo,
                               "labels": refusal.labels, "reasons": refusal.reasons}),
                    );
                    continue;
                }
            };
            let Some(g) = self.inner.policy.groups.get(&group) else {
                continue;
            };
            let used = per_group.get(&group).copied().unwrap_or(0);
            if total >= self.inner.opts.max_concurrency || used >= g.max_runners {
                // Held only by primed sandboxes: they give the slot back to the runner.
                if used < g.max_runners && make_room < primed {
                    make_room += 1;
                }
                waiting += 1;
                continue;
            }
            let runner_name = format!("{}{}", self.inner.opts.runner_prefix, job.gh_job_id);
            st.provision(job.seq, &group, &runner_name)?;
            total += 1;
            *per_group.entry(group.clone()).or_default() += 1;
            self.inner
                .metrics
                .sandbox_state(&group, "", JobStatus::Provisioning.as_str());
            let (stop_tx, stop_rx) = watch::channel(false);
            lock(&self.inner.tasks).insert(job.seq, stop_tx);
            let me = self.clone();
            let job = st.job(job.seq)?;
            tokio::spawn(async move { me.lifecycle(job, ev, group, stop_rx).await });
        }
        self.inner.metrics.queue_depth.set(waiting);
        if make_room > 0 {
            lock(&self.inner.ss_starved).insert(WEBHOOK_STARVED.to_owned());
        } else {
            lock(&self.inner.ss_starved).remove(WEBHOOK_STARVED);
        }
        self.prime_round(total);
        // While webhook jobs wait for slots that primed sandboxes hold, nothing primes (the
        // slots go to the runners); the next pass starts them.
        if make_room > 0 {
            let me = self.clone();
            tokio::spawn(async move {
                me.inner
                    .launcher
                    .retire_primed(None, make_room as usize)
                    .await;
                me.inner.wake.notify_one();
            });
        }
        Ok(())
    }

    /// Primed sandboxes for the groups with `prestart`, while slots are free (`held`: the
    /// slots taken now, primed ones included) and no runner waits for a slot primed
    /// sandboxes hold. Called with the capacity lock held. A runner that takes its group's
    /// primed sandbox frees nothing: the pool refills on a later pass.
    fn prime_round(&self, mut held: u32) {
        if !lock(&self.inner.ss_starved).is_empty() || !self.inner.accepting.load(Ordering::SeqCst)
        {
            return;
        }
        let primed = self.inner.launcher.primed();
        for (name, g) in &self.inner.policy.groups {
            let mut have = primed.get(name).copied().unwrap_or(0);
            while have < g.prestart && held < self.inner.opts.max_concurrency {
                let key = format!(
                    "{}{name}-{}",
                    crate::launcher::PRIMED_PREFIX,
                    random_suffix()
                );
                let template = self.runner_spec(name, g, &key, Secret::new(""), None);
                if !self.inner.launcher.prime(template) {
                    break;
                }
                have += 1;
                held += 1;
            }
        }
    }

    async fn lifecycle(
        &self,
        job: JobRow,
        ev: WorkflowJobEvent,
        group: String,
        stop: watch::Receiver<bool>,
    ) {
        let key = format!("gh-{}", job.gh_job_id);
        let seq = job.seq;
        let m = &self.inner.metrics;
        let mut state = JobStatus::Provisioning.as_str();
        let outcome = self
            .provision_and_run(&job, &ev, &group, stop, &mut state)
            .await;
        let st = &self.inner.store;
        let mut errors = Vec::new();
        let (final_status, code, detail, sandbox) = match &outcome.result {
            Ok(exit) => {
                let stopped_because = lock(&self.inner.stop_reasons).remove(&seq);
                let (status, why) = judge(exit, stopped_because);
                (
                    status,
                    Some(i64::from(exit.code)),
                    why,
                    exit.sandbox_id.clone(),
                )
            }
            Err(e) => (JobStatus::Failed, None, Some(e.clone()), None),
        };
        if let Err(e) = st.finish(seq, final_status, code, detail.as_deref()) {
            errors.push(e.to_string());
        }
        m.sandbox_state(&group, state, "");
        m.jobs_finished
            .get_or_create(&GroupState {
                group: group.clone(),
                state: final_status.as_str().to_owned(),
            })
            .inc();
        // Teardown goes on after a failure and reports every error; what was done is known
        // from the steps' results, never read back from the error text.
        let mut runner_deleted = false;
        if let Some(id) = outcome.runner_id {
            match self.inner.github.delete_runner(id).await {
                Ok(()) => {
                    runner_deleted = true;
                    if let Err(e) = st.runner_deleted(id) {
                        errors.push(e.to_string());
                    }
                }
                Err(e) => errors.push(format!("deleting runner {id}: {e}")),
            }
        }
        let mut token_revoked = false;
        if let Some(t) = &outcome.token {
            match self.inner.github.revoke_token(t).await {
                Ok(()) => token_revoked = true,
                Err(e) => errors.push(format!("revoking the job token: {e}")),
            }
        }
        for e in &errors {
            warn!("job {key}: teardown: {e}");
        }
        self.audit(
            airlock_audit::Kind::ServeJobFinished,
            Some(&key),
            json!({"github_job_id": job.gh_job_id, "group": group, "status": final_status.as_str(),
                   "exit_code": code, "detail": detail, "sandbox": sandbox,
                   "runner_id": outcome.runner_id, "runner_deleted": runner_deleted,
                   "token_revoked": token_revoked,
                   "teardown_errors": errors}),
        );
        match &detail {
            Some(why) if final_status == JobStatus::Failed => {
                warn!("job {key} ({group}): failed: {why}");
                if outcome.runner_id.is_some() {
                    // A JIT runner takes any queued job with its labels: the job this runner
                    // was made for may have gone to another runner, and one may stay queued.
                    warn!(
                        "job {key}: GitHub may have given this job to another runner of the group; a job left queued gets a runner from its next webhook or the reconcile (docs/serve.md)"
                    );
                }
            }
            _ => info!("job {key} ({group}): {}", final_status.as_str()),
        }
        lock(&self.inner.tasks).remove(&seq);
        self.inner.wake.notify_one();
        self.inner.idle.notify_waiters();
    }

    async fn provision_and_run(
        &self,
        job: &JobRow,
        ev: &WorkflowJobEvent,
        group: &str,
        stop: watch::Receiver<bool>,
        state: &mut &'static str,
    ) -> Outcome {
        let key = format!("gh-{}", job.gh_job_id);
        let mut out = Outcome {
            runner_id: None,
            token: None,
            result: Err(String::new()),
        };
        let Some(g) = self.inner.policy.groups.get(group) else {
            out.result = Err(format!("group {group} vanished from the policy"));
            return out;
        };
        let name = job.runner_name.clone().unwrap_or_default();
        let mut labels: Vec<String> = GENERIC_LABELS.iter().map(|s| s.to_string()).collect();
        labels.extend(g.labels.iter().cloned());
        self.audit(
            airlock_audit::Kind::ServeJobProvisioning,
            Some(&key),
            json!({"github_job_id": job.gh_job_id, "repository": job.repo, "group": group,
                   "runner": name, "labels": labels, "workflow": ev.workflow_job.workflow_name,
                   "job_name": ev.workflow_job.name}),
        );
        let req = JitRequest {
            name: name.clone(),
            runner_group_id: g.runner_group_id,
            labels,
            repository: self.inner.opts.repository.clone(),
        };
        let jit = match self.inner.github.generate_jitconfig(&req).await {
            Ok(j) => j,
            Err(e) => {
                out.result = Err(format!("generating the JIT runner config: {e}"));
                return out;
            }
        };
        out.runner_id = Some(jit.runner_id);
        if let Err(e) = self
            .inner
            .store
            .runner_registered(job.seq, jit.runner_id, &jit.name)
        {
            out.result = Err(e.to_string());
            return out;
        }
        if let Some(perms) = &g.token_permissions {
            match self.inner.github.job_token(&job.repo, perms).await {
                Ok(t) => out.token = t,
                Err(e) => {
                    out.result = Err(format!("minting the job token: {e}"));
                    return out;
                }
            }
        }
        if let Err(e) = self.inner.store.starting(job.seq) {
            out.result = Err(e.to_string());
            return out;
        }
        self.inner.metrics.sandbox_state(group, state, "starting");
        *state = "starting";
        let spec = self.runner_spec(group, g, &key, jit.encoded_jit_config, out.token.clone());
        let (started_tx, started_rx) = oneshot::channel();
        let launcher = self.inner.launcher.clone();
        let handle = tokio::spawn(async move { launcher.run(spec, started_tx, stop).await });
        if started_rx.await.is_ok() {
            let t0 = lock(&self.inner.received).remove(&job.seq);
            if let Some(t0) = t0 {
                self.inner
                    .metrics
                    .provisioning_seconds
                    .observe(t0.elapsed().as_secs_f64());
            }
            match self.inner.store.running(job.seq) {
                Ok(()) => {
                    self.inner.metrics.sandbox_state(group, state, "running");
                    *state = "running";
                }
                Err(e) => warn!("job {key}: {e}"),
            }
            self.audit(
                airlock_audit::Kind::ServeJobStarted,
                Some(&key),
                json!({"github_job_id": job.gh_job_id, "group": group, "runner_id": jit.runner_id}),
            );
        }
        out.result = match handle.await {
            Ok(Ok(exit)) => Ok(exit),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("sandbox task failed: {e}")),
        };
        out
    }

    /// Reconciles state with the world: jobs active without a task become `lost`, sandboxes
    /// no `airlock run` owns are collected, airlock runners nothing owns are deleted, runners
    /// airlock did not create raise an alert, jobs past their timeout are torn down. Each with
    /// an audit event; a failure does not stop the rest.
    pub async fn reconcile(&self) -> ReconcileReport {
        let mut r = ReconcileReport::default();
        let st = &self.inner.store;
        let prefix = &self.inner.opts.runner_prefix;
        let cap = lock(&self.inner.capacity);
        let active = match st.active() {
            Ok(a) => a,
            Err(e) => {
                r.errors.push(e.to_string());
                Vec::new()
            }
        };
        let tasks: HashSet<i64> = lock(&self.inner.tasks).keys().copied().collect();
        let mut owned: HashSet<String> = HashSet::new();
        for j in &active {
            let key = format!("gh-{}", j.gh_job_id);
            if tasks.contains(&j.seq) {
                if let Some(n) = &j.runner_name {
                    owned.insert(n.clone());
                }
                // Stuck: past the group's timeout plus the pick-up allowance.
                let limit = j
                    .group
                    .as_ref()
                    .and_then(|g| self.inner.policy.groups.get(g))
                    .map(|g| g.limits.timeout.0)
                    .unwrap_or(Duration::from_secs(3600))
                    + self.inner.opts.pickup_timeout;
                let since = j.provisioned_ms.unwrap_or(j.queued_ms);
                let age = now_ms().saturating_sub(since);
                if u128::try_from(age).unwrap_or(0) > limit.as_millis() {
                    if let Some(tx) = lock(&self.inner.tasks).get(&j.seq) {
                        lock(&self.inner.stop_reasons).insert(j.seq, StopReason::Stuck);
                        let _ = tx.send(true);
                    }
                    r.stuck_jobs.push(j.seq);
                    r.stuck_github_jobs.push(j.gh_job_id);
                    self.audit(
                        airlock_audit::Kind::ServeReconcileJobStuck,
                        Some(&key),
                        json!({"github_job_id": j.gh_job_id, "age_ms": age, "limit_ms": limit.as_millis()}),
                    );
                }
                continue;
            }
            let detail = "serve stopped while the job was active; not run again";
            match st.finish(j.seq, JobStatus::Lost, None, Some(detail)) {
                Ok(()) => {}
                // Its task finished it between the two reads above: nothing to do.
                Err(StateError::Transition { .. }) => continue,
                Err(e) => {
                    r.errors.push(e.to_string());
                    continue;
                }
            }
            r.lost_jobs.push(j.seq);
            r.lost_github_jobs.push(j.gh_job_id);
            self.inner.launcher.forget(&key);
            self.audit(
                airlock_audit::Kind::ServeReconcileJobLost,
                Some(&key),
                json!({"github_job_id": j.gh_job_id, "status_was": j.status.as_str(), "runner_id": j.runner_id}),
            );
        }
        // Scale-set runners active in the database without a task: serve stopped under them.
        // Each is lost (its job, if it had one, is never run again by airlock; GitHub fails
        // it when the runner does not come back); its registration is deleted below.
        let ss_tasks: HashSet<i64> = lock(&self.inner.ss_tasks).keys().copied().collect();
        match st.ss_alive(None) {
            Ok(alive) => {
                for ru in alive.into_iter().filter(|ru| !ss_tasks.contains(&ru.seq)) {
                    let detail = "serve stopped while the runner was active; not run again";
                    if let Err(e) = st.ss_runner_finished(ru.seq, "lost", None, Some(detail)) {
                        r.errors.push(e.to_string());
                        continue;
                    }
                    self.inner.launcher.forget(&ru.name);
                    r.lost_runners.push(ru.name.clone());
                    self.audit(
                        airlock_audit::Kind::ServeReconcileRunnerLost,
                        Some(&ru.name),
                        json!({"scale_set": ru.scale_set, "runner": ru.name,
                               "runner_id": ru.runner_id, "status_was": ru.status,
                               "github_job_id": ru.job_id}),
                    );
                }
            }
            Err(e) => r.errors.push(e.to_string()),
        }
        owned.extend(self.ss_owned());
        drop(cap);
        match self.inner.launcher.gc().await {
            Ok(removed) => {
                for id in removed {
                    self.audit(
                        airlock_audit::Kind::ServeReconcileSandboxRemoved,
                        None,
                        json!({"sandbox": id}),
                    );
                    r.sandboxes_removed.push(id);
                }
            }
            Err(e) => r.errors.push(e.to_string()),
        }
        let listed = self.inner.github.list_runners().await;
        // Ready only while GitHub answers serve's credentials (a wrong App id or a revoked
        // token makes every job fail: a load balancer must see that).
        self.inner.github_ok.store(listed.is_ok(), Ordering::SeqCst);
        match listed {
            Ok(runners) => {
                let listed_names: HashSet<String> =
                    runners.iter().map(|ru| ru.name.clone()).collect();
                for ru in runners {
                    if ru.name.starts_with(prefix.as_str()) {
                        if owned.contains(&ru.name) {
                            continue;
                        }
                        match self.inner.github.delete_runner(ru.id).await {
                            Ok(()) => {
                                let _ = st.runner_deleted(ru.id);
                                r.runners_deleted.push(ru.id);
                                self.audit(
                                    airlock_audit::Kind::ServeReconcileRunnerDeleted,
                                    None,
                                    json!({"runner_id": ru.id, "name": ru.name, "status": ru.status, "busy": ru.busy}),
                                );
                            }
                            Err(e) => r.errors.push(format!("deleting runner {}: {e}", ru.id)),
                        }
                    } else if lock(&self.inner.alerted).insert(ru.id) {
                        r.unauthorized_runners.push(ru.id);
                        warn!(
                            "runner {} ({}) was not registered by airlock",
                            ru.name, ru.id
                        );
                        self.inner
                            .metrics
                            .alerts
                            .get_or_create(&AlertKind {
                                kind: "unauthorized-runner".into(),
                            })
                            .inc();
                        self.audit(
                            airlock_audit::Kind::Alert,
                            None,
                            json!({"detector": "unauthorized-runner", "severity": "high",
                                   "runner_id": ru.id, "name": ru.name, "labels": ru.labels,
                                   "message": "a self-hosted runner that airlock did not register is in the organisation"}),
                        );
                    }
                }
                // Scale-set runners over whose registration is gone (deleted now, or
                // removed by GitHub after their job).
                if let Ok(over) = st.ss_undeleted() {
                    for ru in over {
                        let listed = listed_names.contains(&ru.name);
                        let deleted_now = ru
                            .runner_id
                            .is_some_and(|id| r.runners_deleted.contains(&id));
                        if !listed || deleted_now {
                            let _ = st.ss_runner_deleted(ru.seq);
                        }
                    }
                }
                // Runners gone from GitHub that the database still lists.
                if let Ok(live) = st.live_runners() {
                    for (id, name, _) in live {
                        if !owned.contains(&name) && !r.runners_deleted.contains(&id) {
                            let _ = st.runner_deleted(id);
                        }
                    }
                }
            }
            Err(e) => r.errors.push(format!("listing runners: {e}")),
        }
        // serve's database stays bounded on a busy host.
        let cutoff = now_ms().saturating_sub(
            i64::try_from(self.inner.opts.state_retention.as_millis()).unwrap_or(i64::MAX),
        );
        match st.prune(cutoff) {
            Ok(p) if p.total() > 0 => info!("pruned serve's database: {p:?}"),
            Ok(_) => {}
            Err(e) => r.errors.push(format!("pruning: {e}")),
        }
        for e in &r.errors {
            warn!("reconcile: {e}");
        }
        r
    }

    /// Graceful shutdown: stop taking jobs, let running ones finish for up to `grace`, then
    /// tear the rest down and wait for their teardown.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown_begin();
        // Listeners close their sessions (GitHub then assigns no more jobs here); warm
        // runners hold no job and go at once.
        let listeners: Vec<_> = std::mem::take(&mut *lock(&self.inner.listeners));
        for h in listeners {
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }
        self.ss_retire_idle().await;
        let deadline = Instant::now() + grace;
        while self.running_tasks() > 0 && Instant::now() < deadline {
            tokio::select! {
                _ = self.inner.idle.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let left: Vec<(i64, watch::Sender<bool>)> = lock(&self.inner.tasks)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (seq, tx) in left {
            lock(&self.inner.stop_reasons)
                .entry(seq)
                .or_insert(StopReason::Shutdown);
            let _ = tx.send(true);
        }
        let left: Vec<(i64, watch::Sender<bool>)> = lock(&self.inner.ss_tasks)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (seq, tx) in left {
            lock(&self.inner.ss_stop)
                .entry(seq)
                .or_insert(StopReason::Shutdown);
            let _ = tx.send(true);
        }
        while self.running_tasks() > 0 {
            tokio::select! {
                _ = self.inner.idle.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Stops taking new jobs (the first step of shutdown).
    pub fn shutdown_begin(&self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
        self.inner.shutdown.send_replace(true);
        self.inner.wake.notify_one();
    }

    /// Whether serve still takes jobs.
    pub fn accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::SeqCst)
    }
}

/// What became of a job whose sandbox ran: done only when `airlock run` exited 0 and serve did
/// not stop it; otherwise failed, with the reason (typed from airlock's report where it has
/// one, else from the exit code).
fn judge(
    exit: &crate::launcher::RunExit,
    stopped_because: Option<StopReason>,
) -> (JobStatus, Option<String>) {
    if exit.stopped {
        return match stopped_because {
            // GitHub says the job is over; its runner only failed to exit.
            Some(StopReason::CompletedOnGitHub) => (
                JobStatus::Done,
                Some("stopped by serve after GitHub completed the job".into()),
            ),
            Some(StopReason::Stuck) => (
                JobStatus::Failed,
                Some("stopped by serve: past the group's timeout".into()),
            ),
            Some(StopReason::Retired) => {
                (JobStatus::Done, Some("retired by serve while idle".into()))
            }
            Some(StopReason::Shutdown) | None => (
                JobStatus::Failed,
                Some("stopped by serve: shut down before the job finished".into()),
            ),
        };
    }
    if let Some(f) = &exit.failure {
        let hint = f.kind.hint().map(|h| format!("; {h}")).unwrap_or_default();
        let why = format!(
            "the runner's sandbox did not start ({:?}): {}{hint}",
            f.kind, f.message
        );
        return (
            JobStatus::Failed,
            Some(airlock_text::escape(&why).into_owned()),
        );
    }
    let why = match exit.code {
        0 => return (JobStatus::Done, None),
        2 => "airlock run refused the job (bad policy or request; see its output.log)".to_owned(),
        124 => "the runner hit the group's wall-clock timeout".to_owned(),
        125 => {
            "the runner's sandbox could not be set up or torn down (see its output.log)".to_owned()
        }
        c if c > 128 => format!("the runner was killed by signal {}", c - 128),
        c => format!("the runner exited {c}"),
    };
    (JobStatus::Failed, Some(why))
}

/// Why serve stopped a job's sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// GitHub completed the job and its runner did not exit within the grace.
    CompletedOnGitHub,
    /// The job ran past its group's timeout (reconcile).
    Stuck,
    /// serve shut down and the grace ran out.
    Shutdown,
    /// An idle scale-set runner beyond need, or at shutdown.
    Retired,
}

struct Outcome {
    runner_id: Option<u64>,
    token: Option<Secret>,
    result: Result<crate::launcher::RunExit, String>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Eight hex digits, for names serve makes (runners, primed sandboxes) unique.
pub(crate) fn random_suffix() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}
