//! The HTTP side: `/webhook`, `/healthz`, `/readyz`, `/metrics`, and [`serve`], which runs it
//! all until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airlock_audit::AuditLog;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use tracing::{info, warn};

use crate::config::{Level, ServeConfig};
use crate::github::GitHub;
use crate::launcher::{Launcher, ProcessLauncher};
use crate::manager::{Manager, ManagerError, ManagerOptions};
use crate::state::{Ingest, Store};
use crate::webhook::{verify_signature, WorkflowJobEvent};
use crate::Secret;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The manager.
    pub manager: Manager,
    /// The webhook secret; `None`: no webhook endpoint (scale sets only).
    pub secret: Option<Arc<Secret>>,
}

/// The router. `max_body` bytes is the largest body read (larger: 413).
pub fn router(state: AppState, max_body: usize) -> Router {
    router_with(state, max_body, BODY_TIME)
}

/// [`router`] whose webhook bodies must arrive within `body_time` (else 408).
pub fn router_with(state: AppState, max_body: usize, body_time: Duration) -> Router {
    Router::new()
        .route(
            "/webhook",
            post(move |s, h, b| webhook(s, h, b, max_body, body_time)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// How much of an oversized body is read and thrown away before the 413, and for how long.
/// A client that sends its whole body before reading the answer (no `Expect: 100-continue`)
/// would otherwise have the connection reset under it while it is still sending, and the
/// reset discards the 413 it had not read yet: it sees an aborted upload, not a refusal.
/// GitHub's own deliveries are at most 25 MB; beyond these bounds the connection is closed.
const DRAIN_BYTES: u64 = 32 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);
/// Longest time a webhook body may take to arrive (a trickled body would hold its connection
/// and task for as long as its sender likes): then 408.
const BODY_TIME: Duration = Duration::from_secs(30);

/// Why a body was not read.
enum BodyRefused {
    TooLarge,
    TooSlow,
    Unreadable(String),
}

/// Reads a request body of at most `max` bytes without ever holding more than that.
///
/// Hand-written instead of axum's `DefaultBodyLimit` because that one reads (and answers
/// `100 Continue` to) an announced oversized body before refusing it, and closes the
/// connection without draining, which loses the 413 (see [`DRAIN_BYTES`]).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    body_time: Duration,
) -> Result<Bytes, BodyRefused> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let waits_for_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let max64 = u64::try_from(max).unwrap_or(u64::MAX);
    if announced.is_some_and(|n| n > max64) {
        // A client waiting for `100 Continue` has sent nothing yet: answer at once (the body
        // is never polled, so hyper never sends the 100 and the client sends nothing).
        if !waits_for_continue {
            drain(body).await;
        }
        return Err(BodyRefused::TooLarge);
    }
    let mut body = body;
    let mut buf = Vec::with_capacity(announced.map_or(0, |n| n as usize));
    let deadline = tokio::time::Instant::now() + body_time;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyRefused::TooSlow),
            Ok(None) => break,
            Ok(Some(f)) => f.map_err(|e| BodyRefused::Unreadable(e.to_string()))?,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len() + data.len() > max {
            drain(body).await;
            return Err(BodyRefused::TooLarge);
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards what is left of a refused body, within [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`]; memory stays at one frame.
async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                seen += d.len() as u64;
            }
            if seen > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.manager.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.manager.metrics().encode(),
    )
}

/// The webhook: the signature is checked before anything is parsed; the work is only
/// recorded and queued.
async fn webhook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
    max_body: usize,
    body_time: Duration,
) -> Response {
    let m = &s.manager;
    // A body refused before it was all read (too large, too slow) is not kept; the answer
    // closes the connection. Counted like every other outcome.
    let closing = |outcome: &str, status: StatusCode, text: &'static str| {
        m.metrics().webhook(outcome);
        (status, [(header::CONNECTION, "close")], text).into_response()
    };
    let body = match read_body(&headers, body, max_body, body_time).await {
        Ok(b) => b,
        Err(BodyRefused::TooLarge) => {
            return closing(
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large\n",
            )
        }
        Err(BodyRefused::TooSlow) => {
            return closing("too_slow", StatusCode::REQUEST_TIMEOUT, "body too slow\n")
        }
        Err(BodyRefused::Unreadable(e)) => {
            m.metrics().webhook("bad_payload");
            warn!("webhook body unreadable: {}", airlock_text::escape(&e));
            return (StatusCode::BAD_REQUEST, "unreadable body\n").into_response();
        }
    };
    handle_webhook(&s, &headers, &body).into_response()
}

/// The webhook once its body is read.
fn handle_webhook(s: &AppState, headers: &HeaderMap, body: &[u8]) -> (StatusCode, &'static str) {
    let m = &s.manager;
    let Some(secret) = &s.secret else {
        m.metrics().webhook("not_configured");
        return (
            StatusCode::NOT_FOUND,
            "no webhook endpoint: serve.toml sets no webhook_secret\n",
        );
    };
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = verify_signature(secret.expose().as_bytes(), body, sig) {
        m.metrics().webhook_verification_failures.inc();
        m.metrics().webhook("bad_signature");
        warn!("webhook refused: {e}");
        return (StatusCode::UNAUTHORIZED, "bad signature\n");
    }
    if !m.accepting() {
        m.metrics().webhook("shutting_down");
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    let Some(delivery) = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .filter(|d| !d.is_empty() && d.len() <= 100)
    else {
        m.metrics().webhook("bad_payload");
        return (StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery\n");
    };
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if event != "workflow_job" {
        m.metrics().webhook("ignored");
        return (StatusCode::ACCEPTED, "ignored\n");
    }
    let Ok(raw) = std::str::from_utf8(body) else {
        m.metrics().webhook("bad_payload");
        return (StatusCode::BAD_REQUEST, "body is not UTF-8\n");
    };
    let ev: WorkflowJobEvent = match serde_json::from_str(raw) {
        Ok(e) => e,
        Err(e) => {
            m.metrics().webhook("bad_payload");
            warn!("webhook {delivery}: not a workflow_job payload: {e}");
            return (StatusCode::BAD_REQUEST, "not a workflow_job payload\n");
        }
    };
    match m.ingest(delivery, &ev, raw) {
        Ok(Ingest::Duplicate) => {
            m.metrics().webhook("duplicate");
            (StatusCode::OK, "duplicate delivery\n")
        }
        Ok(Ingest::Enqueued(_)) => {
            m.metrics().webhook("enqueued");
            (StatusCode::ACCEPTED, "queued\n")
        }
        Ok(Ingest::Recorded) => {
            m.metrics().webhook("recorded");
            (StatusCode::ACCEPTED, "recorded\n")
        }
        Err(e) => {
            warn!("webhook {delivery}: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "state error\n")
        }
    }
}

/// Runs `airlock serve` until SIGTERM or SIGINT: opens the state, reconciles, listens, and on
/// the signal stops accepting and shuts down gracefully. `airlock` is the binary the
/// sandboxes are started with.
pub async fn serve(
    config: ServeConfig,
    policy: airlock_policy::Policy,
    github: Arc<dyn GitHub>,
    airlock: PathBuf,
) -> Result<(), ManagerError> {
    let launcher: Arc<dyn Launcher> = Arc::new(ProcessLauncher {
        airlock,
        state_dir: config.state_dir.clone(),
        data_dir: config.data_dir.clone(),
        net_pool: config.net_pool.clone(),
        work_dir: config.state_dir.join("serve"),
        wrapper: Vec::new(),
        primed: Default::default(),
        keep_output: config.state_retention,
        max_output: config.max_output.0,
    });
    serve_with(config, policy, github, launcher).await
}

/// [`serve`] with a launcher of the caller's choice.
pub async fn serve_with(
    config: ServeConfig,
    policy: airlock_policy::Policy,
    github: Arc<dyn GitHub>,
    launcher: Arc<dyn Launcher>,
) -> Result<(), ManagerError> {
    let secret = match &config.webhook_secret {
        Some(src) => Some(Arc::new(src.read("webhook_secret")?)),
        None => None,
    };
    let serve_dir = config.data_dir.join("serve");
    std::fs::create_dir_all(&serve_dir).map_err(|source| ManagerError::Listen {
        addr: config.listen,
        source,
    })?;
    let store = Store::open(&serve_dir.join("serve.db"))?;
    let mut audit = AuditLog::open(&config.data_dir.join("audit"))?;
    // The policy's retention and checkpoints apply to serve's own records too, and its
    // checkpoints go to the policy's sinks. Best effort here: each job's `airlock run` opens
    // the sinks itself and refuses the job if they cannot work.
    let mut log_settings =
        airlock_audit::LogSettings::from_policy(&policy.audit, &config.data_dir)?;
    let sink_key = policy
        .alerts
        .webhook
        .as_ref()
        .and_then(|w| std::env::var(&w.secret).ok())
        .map(airlock_policy::Secret::new);
    let sinks = match airlock_audit::Sinks::from_policy(
        &policy.alerts,
        sink_key,
        &config.data_dir.join("alerts").join("outbox"),
    ) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("serve's own audit checkpoints go to the local file only: {e}");
            None
        }
    };
    log_settings.ship = sinks.as_ref().map(airlock_audit::Sinks::checkpoint_shipper);
    audit.configure(log_settings)?;
    let repository = (config.github.level == Level::Repo).then(|| {
        format!(
            "{}/{}",
            config.github.org,
            config.github.repo.clone().unwrap_or_default()
        )
    });
    let manager = Manager::new(
        store,
        github,
        launcher,
        policy,
        audit,
        ManagerOptions {
            runner_prefix: config.runner_prefix.clone(),
            max_concurrency: config.max_concurrency,
            pickup_timeout: config.pickup_timeout,
            repository,
            completed_grace: crate::manager::COMPLETED_GRACE,
            state_retention: config.state_retention,
            scale_sets: crate::manager::ScaleSetOptions {
                api_url: config.github.api_url.clone(),
                registration_url: config.github.registration_url(),
                poll_timeout: config.scale_sets.poll_timeout,
                conflict_retry: config.scale_sets.conflict_retry,
                max_backoff: config.scale_sets.max_backoff,
                request_timeout: config.scale_sets.request_timeout,
                ..Default::default()
            },
        },
    );
    let first = manager.start(config.reconcile_interval).await;
    info!("reconciled at start: {first}");
    let app = router(
        AppState {
            manager: manager.clone(),
            secret,
        },
        config.max_body_bytes,
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ManagerError::Listen {
            addr: config.listen,
            source,
        })?;
    info!("airlock serve listening on {}", config.listen);
    let listener = crate::listener::BoundedListener::new(
        listener,
        config.http_max_connections,
        config.http_idle_timeout,
    );
    let m2 = manager.clone();
    let grace = config.shutdown_grace;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            info!("shutting down: no new jobs; running jobs get {grace:?}");
            // Stop taking jobs at once, but keep answering while running jobs drain: webhooks
            // get 503 (GitHub records a failed delivery that can be redelivered) and
            // `/readyz` 503 (a load balancer sees not-ready); `/healthz` and `/metrics` go on.
            m2.shutdown_begin();
            m2.shutdown(grace).await;
            info!("drained; closing the listener");
        })
        .await
        .map_err(|source| ManagerError::Listen {
            addr: config.listen,
            source,
        })?;
    // Every job is over by now (the drain ran inside the shutdown above); this only confirms.
    manager.shutdown(Duration::ZERO).await;
    if let Some(s) = sinks {
        // What is not delivered by then stays in the outbox for the next run.
        let _ = tokio::task::spawn_blocking(move || {
            s.flush(std::time::Instant::now() + Duration::from_secs(5))
        })
        .await;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// How long a test or the benchmark waits for serve to answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
