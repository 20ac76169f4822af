//! A fake GitHub for tests (feature `fake`): the REST endpoints the client uses, with state,
//! fault injection, a minimal job service for `airlock-fake-runner`, and optional
//! `workflow_job` webhooks sent to a URL the test owns.
//!
//! Routes (all answer like GitHub's docs; errors carry `{"message": …}`):
//! - `POST /app/installations/{id}/access_tokens` (JWT checked: RS256, `iss`, `exp`)
//! - `DELETE /installation/token`
//! - `POST /orgs/{org}/actions/runners/generate-jitconfig`, `…/repos/{o}/{r}/…` likewise
//! - `GET …/actions/runners` (paginated with `Link`), `GET|DELETE …/actions/runners/{id}`
//! - `GET /orgs/{org}/actions/runner-groups`
//! - `POST /_fake/jobs` `{id, labels, script, repository?}`, `GET /_fake/runner/job` and
//!   `POST /_fake/runner/complete` `{job_id, exit_code}` (header `Authorization: Runner <id>`),
//!   `GET /_fake/state`, `POST /_fake/faults` `{endpoint, fault, times}`,
//!   `POST /_fake/deliveries/{id}/redeliver`.
//!
//! The JIT config it hands out is base64 of JSON [`JitPayload`].
//!
//! And the Actions service of runner scale sets (module `actions`): `POST
//! /orgs/{org}/actions/runners/registration-token`, `POST /actions/runner-registration`, and
//! under `/_actions/`: runner groups, scale sets, sessions, JIT configs, `acquirejobs` and the
//! long-poll message queue (`/_actions/queue/{scale set}`).

mod actions;
mod handlers;

pub use actions::{ActionsState, FakeMessage, FakeScaleSet, FakeSession};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::models::RunnerGroup;

/// What the fake's JIT config decodes to (base64 of this JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JitPayload {
    /// Runner id.
    pub runner_id: u64,
    /// Runner name.
    pub name: String,
    /// Base URL of the fake, where the runner fetches its job.
    pub url: String,
}

/// Where the fake sends `workflow_job` webhooks.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// The receiver's URL (a server the test started).
    pub url: String,
    /// The webhook secret used for `X-Hub-Signature-256`.
    pub secret: Vec<u8>,
}

/// Fake settings.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// App id expected as the JWT `iss`.
    pub app_id: String,
    /// The installation that exists.
    pub installation_id: u64,
    /// The App's public key (PEM); when set the JWT signature is verified.
    pub app_public_key_pem: Option<Vec<u8>>,
    /// Personal access tokens accepted as they are.
    pub personal_tokens: Vec<String>,
    /// Lifetime of issued installation tokens.
    pub token_lifetime: Duration,
    /// Runner groups of every organisation.
    pub runner_groups: Vec<RunnerGroup>,
    /// Largest page size served (GitHub: 100); lower it to test pagination.
    pub max_per_page: usize,
    /// URL written into JIT configs (default: the bound address).
    pub public_url: Option<String>,
    /// GitHub removes a JIT runner once its job completes; set false to keep it registered.
    pub remove_runner_after_job: bool,
    /// Send `workflow_job` webhooks for queued / in_progress / completed.
    pub webhook: Option<WebhookTarget>,
    /// How long the scale-set message queue holds a poll before answering 202 (GitHub: ~50 s).
    pub poll_timeout: Duration,
    /// A session not used (polled, refreshed) for this long is gone (GitHub expires a crashed
    /// manager's session after a few minutes). `None`: never.
    pub session_expiry: Option<Duration>,
    /// GitHub Enterprise Server behaviour: a queued job is first `JobAvailable`; only once a
    /// scale set acquires it (`acquirejobs`) is it `JobAssigned` and can a runner take it.
    pub ghes: bool,
    /// Repositories (`owner/name`) that are public; every other one is private.
    pub public_repositories: Vec<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            app_id: "12345".into(),
            installation_id: 42,
            app_public_key_pem: None,
            personal_tokens: Vec::new(),
            token_lifetime: Duration::from_secs(3600),
            runner_groups: vec![RunnerGroup {
                id: 1,
                name: "Default".into(),
                visibility: "all".into(),
                default: true,
                inherited: false,
                allows_public_repositories: false,
                restricted_to_workflows: false,
                selected_workflows: Vec::new(),
            }],
            max_per_page: 100,
            public_url: None,
            remove_runner_after_job: true,
            webhook: None,
            poll_timeout: Duration::from_secs(2),
            session_expiry: None,
            ghes: false,
            public_repositories: Vec::new(),
        }
    }
}

/// Endpoints that faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /app/installations/{id}/access_tokens`.
    AccessTokens,
    /// `DELETE /installation/token`.
    RevokeToken,
    /// `POST …/generate-jitconfig`.
    GenerateJitConfig,
    /// `GET …/actions/runners`.
    ListRunners,
    /// `GET …/actions/runners/{id}`.
    GetRunner,
    /// `DELETE …/actions/runners/{id}`.
    DeleteRunner,
    /// `GET /orgs/{org}/actions/runner-groups`.
    ListRunnerGroups,
    /// `POST /orgs/{org}/actions/runners/registration-token`.
    RegistrationToken,
    /// `POST /actions/runner-registration`.
    RunnerRegistration,
    /// Runner groups and scale sets of the Actions service.
    ScaleSets,
    /// Message sessions (open, refresh, close).
    Sessions,
    /// The long-poll message queue.
    MessageQueue,
    /// Acknowledging a message.
    AcknowledgeMessage,
    /// `acquirejobs`.
    AcquireJobs,
    /// A scale set's `generatejitconfig`.
    ScaleSetJitConfig,
    /// `POST /repos/{owner}/{repo}/actions/runs/{id}/cancel`.
    CancelRun,
}

/// An injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// 500.
    ServerError,
    /// 403 with `x-ratelimit-remaining: 0`, `x-ratelimit-reset` and `retry-after`.
    RateLimited {
        /// Seconds in `retry-after`.
        retry_after_secs: u64,
    },
    /// 429 with `retry-after`.
    TooManyRequests {
        /// Seconds in `retry-after`.
        retry_after_secs: u64,
    },
    /// 403 (permission), not a rate limit.
    Forbidden,
    /// 404.
    NotFound,
    /// 422.
    Unprocessable,
    /// 200 with a 32 MiB body and no length (a client must stop reading).
    HugeBody,
    /// The connection is dropped in the middle of the response (a reset).
    Abort,
    /// The response never completes (only the client's timeout ends the call).
    Stall,
}

/// An installation token the fake issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The token.
    pub token: String,
    /// Repositories it is narrowed to (empty: all).
    pub repositories: Vec<String>,
    /// Permissions it was narrowed to (empty: the App's).
    pub permissions: BTreeMap<String, String>,
    /// Expiry (RFC 3339).
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Revoked with `DELETE /installation/token`.
    pub revoked: bool,
}

/// A runner registered with the fake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FakeRunner {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `org:<org>` or `repo:<owner>/<repo>`.
    pub scope: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Group.
    pub runner_group_id: u64,
    /// `offline` until it fetched a job, then `online`.
    pub status: String,
    /// Holding a job.
    pub busy: bool,
    /// The job it took.
    pub job_id: Option<u64>,
}

/// A job of the job service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FakeJob {
    /// Job id.
    pub id: u64,
    /// `runs-on` labels; a runner takes the job when it has all of them.
    pub labels: Vec<String>,
    /// Shell script the runner runs.
    pub script: String,
    /// `owner/name`.
    pub repository: String,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// The runner that took it.
    pub runner_id: Option<u64>,
    /// Its name.
    pub runner_name: Option<String>,
    /// Exit code reported.
    pub exit_code: Option<i32>,
    /// Times a runner fetched it (must stay ≤ 1).
    pub fetches: u32,
    /// Unix ms when it was queued.
    #[serde(default)]
    pub queued_ms: i64,
    /// Unix ms when a runner fetched it.
    #[serde(default)]
    pub fetched_ms: Option<i64>,
    /// GitHub Enterprise Server mode: acquired by a scale set (`acquirejobs`), so a runner
    /// may take it.
    #[serde(default)]
    pub acquired: bool,
}

/// A webhook delivery the fake made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// `queued`, `in_progress` or `completed`.
    pub action: String,
    /// Job id.
    pub job_id: u64,
    /// Receiver's status, or `None` when it could not be reached.
    pub status: Option<u16>,
}

/// Everything the fake knows, as `GET /_fake/state` returns it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FakeState {
    /// Tokens issued (revoked ones included).
    pub tokens: Vec<IssuedToken>,
    /// Runners registered now.
    pub runners: Vec<FakeRunner>,
    /// Runners deleted through the API.
    pub deleted_runners: Vec<FakeRunner>,
    /// Runners GitHub removed after their job (JIT runners are single-use).
    pub finished_runners: Vec<FakeRunner>,
    /// Jobs, in queue order.
    pub jobs: Vec<FakeJob>,
    /// Calls per endpoint (faulted calls included).
    pub calls: BTreeMap<String, u32>,
    /// Webhooks sent.
    pub deliveries: Vec<Delivery>,
    /// The Actions service (scale sets, sessions, messages).
    #[serde(default)]
    pub actions: ActionsState,
    /// Workflow runs cancelled through the REST API.
    #[serde(default)]
    pub cancelled_runs: Vec<u64>,
}

impl FakeState {
    /// Calls made to `endpoint`.
    pub fn calls_to(&self, endpoint: Endpoint) -> u32 {
        self.calls
            .get(&endpoint_key(endpoint))
            .copied()
            .unwrap_or(0)
    }
}

fn endpoint_key(e: Endpoint) -> String {
    serde_json::to_value(e)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A job to queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    /// Job id.
    pub id: u64,
    /// Labels.
    pub labels: Vec<String>,
    /// Script.
    pub script: String,
    /// `owner/name` (default `octo-org/octo-repo`).
    #[serde(default)]
    pub repository: Option<String>,
}

/// Work for the webhook sender.
pub(crate) enum Outgoing {
    /// A new delivery for a job event.
    New { action: String, job_id: u64 },
    /// The same body and delivery id again (GitHub's "Redeliver").
    Redeliver(String),
}

pub(crate) struct Shared {
    pub(crate) config: FakeConfig,
    pub(crate) base_url: String,
    pub(crate) state: Mutex<FakeState>,
    faults: Mutex<HashMap<Endpoint, VecDeque<Fault>>>,
    pub(crate) next_id: Mutex<u64>,
    pub(crate) webhooks: Option<tokio::sync::mpsc::UnboundedSender<Outgoing>>,
    /// Bodies of deliveries made, by delivery id, for redelivery.
    pub(crate) sent: Mutex<HashMap<String, Vec<u8>>>,
    /// Wakes long polls of the message queue when a message is added.
    pub(crate) poll_wake: tokio::sync::Notify,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, FakeState> {
        // A panicking handler must not wedge the fake for the rest of a test.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn id(&self) -> u64 {
        let mut n = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        *n
    }

    /// Counts the call and returns the fault to answer with, if one is pending.
    pub(crate) fn enter(&self, e: Endpoint) -> Option<Fault> {
        *self.state().calls.entry(endpoint_key(e)).or_insert(0) += 1;
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.get_mut(&e).and_then(VecDeque::pop_front)
    }

    pub(crate) fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub(crate) fn inject(&self, e: Endpoint, fault: Fault, times: u32) {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let q = faults.entry(e).or_default();
        for _ in 0..times {
            q.push_back(fault);
        }
    }

    pub(crate) fn webhook(&self, action: &str, job_id: u64) {
        if let Some(tx) = &self.webhooks {
            let _ = tx.send(Outgoing::New {
                action: action.to_owned(),
                job_id,
            });
        }
    }
}

/// A running fake GitHub. Dropping it stops the server.
pub struct FakeGitHub {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeGitHub {
    /// Binds `addr` (use `127.0.0.1:0`) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr, config: FakeConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let webhooks = config.webhook.clone().map(|_| tx);
        let shared = Arc::new(Shared {
            config,
            base_url,
            state: Mutex::new(FakeState::default()),
            faults: Mutex::new(HashMap::new()),
            next_id: Mutex::new(1000),
            webhooks,
            sent: Mutex::new(HashMap::new()),
            poll_wake: tokio::sync::Notify::new(),
        });
        if shared.config.webhook.is_some() {
            tokio::spawn(handlers::webhook_sender(Arc::clone(&shared), rx));
        }
        let app = handlers::router(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            shared,
            addr,
            shutdown: Some(stop),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`: the client's `base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `times` calls to `endpoint` answer with `fault`.
    pub fn inject(&self, endpoint: Endpoint, fault: Fault, times: u32) {
        self.shared.inject(endpoint, fault, times);
    }

    /// Queues a job for the job service.
    pub fn queue_job(&self, job: NewJob) {
        handlers::queue_job(&self.shared, job);
    }

    /// A copy of the state.
    pub fn state(&self) -> FakeState {
        self.shared.state().clone()
    }

    /// Sends delivery `id` again, same body and same `X-GitHub-Delivery` (as GitHub's
    /// "Redeliver" does). False when no such delivery was made.
    pub fn redeliver(&self, id: &str) -> bool {
        handlers::redeliver(&self.shared, id)
    }

    /// Expires every message-queue token (the next poll answers 401 until the session is
    /// refreshed).
    pub fn expire_queue_tokens(&self) {
        for s in &mut self.shared.state().actions.sessions {
            s.token = format!("{}-expired", s.token);
        }
    }

    /// Cancels a queued job: it is completed with result `canceled` (a `JobCompleted`
    /// message for its scale set). False when no such queued job exists.
    pub fn cancel_job(&self, id: u64) -> bool {
        handlers::cancel_job(&self.shared, id)
    }

    /// Drops every pending injected fault.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Registers a runner directly (as if someone outside airlock had), returning its id.
    pub fn register_foreign_runner(&self, scope: &str, name: &str, labels: &[&str]) -> u64 {
        let id = self.shared.id();
        self.shared.state().runners.push(FakeRunner {
            id,
            name: name.into(),
            scope: scope.into(),
            labels: labels.iter().map(|s| (*s).to_owned()).collect(),
            runner_group_id: 1,
            status: "online".into(),
            busy: false,
            job_id: None,
        });
        id
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}
