//! The fake's Actions service for runner scale sets (`../shared/spec/scaleset-protocol.md`):
//! registration token, `actions/runner-registration`, runner groups, scale sets, JIT configs
//! whose runner takes its job from the fake's job service, message sessions (409 on a second
//! one), the long-poll queue (202 when nothing arrives in time, 401 on an expired token,
//! redelivery until acknowledged, at most 50 job messages per response), `acquirejobs`, and
//! fault injection on every call. Bodies start with a UTF-8 byte-order mark, as the service's
//! do. Jobs queued with a scale set's name among their labels become `JobAssigned` messages;
//! the runner's fetch and completion add `JobStarted` and `JobCompleted`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::handlers::{authorize, fault_response};
use super::{Endpoint, FakeJob, FakeRunner, JitPayload, Shared};

type S = State<Arc<Shared>>;

/// A scale set of the fake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FakeScaleSet {
    /// Id.
    pub id: i64,
    /// Name (its `runs-on` label).
    pub name: String,
    /// Runner group.
    pub runner_group_id: i64,
    /// Labels.
    pub labels: Vec<String>,
}

/// A message session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FakeSession {
    /// Its scale set.
    pub scale_set_id: i64,
    /// Its id.
    pub session_id: String,
    /// The queue token now valid.
    pub token: String,
    /// Unix ms of its last use (opening, refresh, poll): a session unused for
    /// `FakeConfig::session_expiry` is gone, as GitHub expires a dead manager's session.
    #[serde(default)]
    pub last_used_ms: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Forgets sessions unused for longer than the configured expiry.
fn expire_sessions(shared: &Shared) {
    let Some(ttl) = shared.config.session_expiry else {
        return;
    };
    let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let now = now_ms();
    shared
        .state()
        .actions
        .sessions
        .retain(|s| now - s.last_used_ms <= ttl);
}

/// A message waiting in a scale set's queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FakeMessage {
    /// Its scale set.
    pub scale_set_id: i64,
    /// Message id.
    pub id: i64,
    /// The job messages (as JSON values; sent as a string-encoded array).
    pub jobs: Vec<serde_json::Value>,
    /// Sent at least once (job events are added to a message only until it is sent, as the
    /// service gathers what happened between two polls into one message).
    #[serde(default)]
    pub delivered: bool,
}

/// What the Actions service knows (part of `GET /_fake/state`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActionsState {
    /// Scale sets.
    pub scale_sets: Vec<FakeScaleSet>,
    /// Scale sets deleted.
    pub deleted_scale_sets: Vec<i64>,
    /// Open sessions.
    pub sessions: Vec<FakeSession>,
    /// Messages not yet acknowledged.
    pub messages: Vec<FakeMessage>,
    /// Messages acknowledged, in order.
    pub acked: Vec<i64>,
    /// `runnerRequestId`s acquired.
    pub acquired: Vec<i64>,
    /// Admin tokens issued.
    pub admin_tokens: Vec<String>,
    /// Registration tokens issued.
    pub registration_tokens: Vec<String>,
    /// Scale set of each runner made by `generatejitconfig`.
    pub runner_scale_set: HashMap<u64, i64>,
    /// The runner scope of `runner-registration`'s config URL (`org:NAME` or
    /// `repo:OWNER/NAME`).
    pub org: String,
    next_message: i64,
}

const BOM: &[u8] = b"\xef\xbb\xbf";

fn bom(v: serde_json::Value) -> Response {
    let mut body = BOM.to_vec();
    body.extend(v.to_string().into_bytes());
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

fn service_error(status: StatusCode, type_name: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "typeName": type_name, "message": message })),
    )
        .into_response()
}

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/orgs/{org}/actions/runners/registration-token",
            post(registration_token),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runners/registration-token",
            post(registration_token),
        )
        .route("/repos/{owner}/{repo}", get(repository))
        .route("/actions/runner-registration", post(runner_registration))
        .route("/_actions/_apis/runtime/runnergroups/", get(runner_groups))
        .route(
            "/_actions/_apis/runtime/runnerscalesets",
            get(list_scale_sets).post(create_scale_set),
        )
        .route(
            "/_actions/_apis/runtime/runnerscalesets/{id}",
            get(get_scale_set)
                .delete(delete_scale_set)
                .patch(update_scale_set),
        )
        .route(
            "/_actions/_apis/runtime/runnerscalesets/{id}/sessions",
            post(create_session),
        )
        .route(
            "/_actions/_apis/runtime/runnerscalesets/{id}/sessions/{sid}",
            patch(refresh_session).delete(delete_session),
        )
        .route(
            "/_actions/_apis/runtime/runnerscalesets/{id}/generatejitconfig",
            post(jit_config),
        )
        .route(
            "/_actions/_apis/runtime/runnerscalesets/{id}/acquirejobs",
            post(acquire_jobs),
        )
        .route("/_actions/queue/{id}", get(poll))
        .route(
            "/_actions/queue/{id}/{mid}",
            axum::routing::delete(acknowledge),
        )
}

/// The service's own address as the caller reached it (the `Host` it used), as a real
/// service names itself: a manager that reached the fake by IP gets IP URLs, while JIT
/// configs keep the public URL the runners use.
fn origin(shared: &Shared, headers: &HeaderMap) -> String {
    match headers.get("host").and_then(|h| h.to_str().ok()) {
        Some(h) if !h.is_empty() => format!("http://{h}"),
        _ => shared.base_url.clone(),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn random(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

async fn registration_token(State(shared): S, headers: HeaderMap) -> Response {
    if let Some(f) = shared.enter(Endpoint::RegistrationToken) {
        return fault_response(f);
    }
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let token = random("AREG");
    shared
        .state()
        .actions
        .registration_tokens
        .push(token.clone());
    (
        StatusCode::CREATED,
        Json(json!({ "token": token, "expires_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339() })),
    )
        .into_response()
}

/// `GET /repos/{owner}/{repo}`: the fields airlock reads (visibility).
async fn repository(
    State(shared): S,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let full = format!("{owner}/{repo}");
    let public = shared.config.public_repositories.contains(&full);
    Json(json!({
        "full_name": full, "private": !public,
        "visibility": if public { "public" } else { "private" },
    }))
    .into_response()
}

#[derive(Deserialize)]
struct Registration {
    url: String,
    runner_event: String,
}

async fn runner_registration(
    State(shared): S,
    headers: HeaderMap,
    Json(r): Json<Registration>,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::RunnerRegistration) {
        return fault_response(f);
    }
    let token = header(&headers, "authorization")
        .strip_prefix("RemoteAuth ")
        .unwrap_or("")
        .to_owned();
    let mut state = shared.state();
    if !state.actions.registration_tokens.contains(&token) || r.runner_event != "register" {
        return service_error(StatusCode::UNAUTHORIZED, "", "bad registration token");
    }
    // `https://github.com/{org}` or `https://github.com/{owner}/{repo}`: the scope of the
    // runners its scale sets register.
    let path: Vec<&str> = r
        .url
        .trim_end_matches('/')
        .splitn(4, '/')
        .nth(3)
        .unwrap_or("")
        .split('/')
        .collect();
    state.actions.org = match path.as_slice() {
        [owner, repo] => format!("repo:{owner}/{repo}"),
        [org, ..] => format!("org:{org}"),
        [] => String::new(),
    };
    let admin = random("admin-");
    state.actions.admin_tokens.push(admin.clone());
    Json(json!({ "url": format!("{}/_actions/", origin(&shared, &headers)), "token": admin }))
        .into_response()
}

/// The admin token check of the service's management calls.
fn admin(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let t = header(headers, "authorization")
        .strip_prefix("Bearer ")
        .unwrap_or("");
    if shared.state().actions.admin_tokens.iter().any(|a| a == t) {
        Ok(())
    } else {
        Err(Box::new(service_error(
            StatusCode::UNAUTHORIZED,
            "",
            "bad admin token",
        )))
    }
}

macro_rules! enter {
    ($shared:expr, $endpoint:expr, $headers:expr) => {
        if let Some(f) = $shared.enter($endpoint) {
            return fault_response(f);
        }
        if let Err(r) = admin(&$shared, &$headers) {
            return *r;
        }
    };
}

async fn runner_groups(
    State(shared): S,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    enter!(shared, Endpoint::ScaleSets, headers);
    let want = q.get("groupName").cloned().unwrap_or_default();
    let groups: Vec<_> = shared
        .config
        .runner_groups
        .iter()
        .filter(|g| want.is_empty() || g.name == want)
        .map(|g| json!({ "id": g.id, "name": g.name, "size": 0, "isDefaultGroup": g.default }))
        .collect();
    bom(json!({ "count": groups.len(), "value": groups }))
}

fn statistics(shared: &Shared, s: &FakeScaleSet) -> serde_json::Value {
    let state = shared.state();
    let mine = |j: &&FakeJob| j.labels.contains(&s.name);
    let ghes = shared.config.ghes;
    let assigned = state
        .jobs
        .iter()
        .filter(mine)
        .filter(|j| !ghes || j.acquired)
        .filter(|j| j.status == "queued" || j.status == "in_progress")
        .count();
    let available = state
        .jobs
        .iter()
        .filter(mine)
        .filter(|j| ghes && !j.acquired && j.status == "queued")
        .count();
    let running = state
        .jobs
        .iter()
        .filter(mine)
        .filter(|j| j.status == "in_progress")
        .count();
    let registered: Vec<&FakeRunner> = state
        .runners
        .iter()
        .filter(|r| state.actions.runner_scale_set.get(&r.id) == Some(&s.id))
        .collect();
    let busy = registered.iter().filter(|r| r.busy).count();
    json!({
        "totalAvailableJobs": available, "totalAcquiredJobs": assigned,
        "totalAssignedJobs": assigned, "totalRunningJobs": running,
        "totalRegisteredRunners": registered.len(), "totalBusyRunners": busy,
        "totalIdleRunners": registered.len() - busy,
    })
}

fn scale_set_json(s: &FakeScaleSet) -> serde_json::Value {
    json!({
        "id": s.id, "name": s.name, "runnerGroupId": s.runner_group_id,
        "labels": s.labels.iter().map(|l| json!({ "type": "System", "name": l })).collect::<Vec<_>>(),
        "RunnerSetting": {},
    })
}

async fn list_scale_sets(
    State(shared): S,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    enter!(shared, Endpoint::ScaleSets, headers);
    let sets: Vec<_> = shared
        .state()
        .actions
        .scale_sets
        .iter()
        .filter(|s| q.get("name").is_none_or(|n| *n == s.name))
        .filter(|s| {
            q.get("runnerGroupId")
                .is_none_or(|g| *g == s.runner_group_id.to_string())
        })
        .map(scale_set_json)
        .collect();
    bom(json!({ "count": sets.len(), "value": sets }))
}

async fn get_scale_set(State(shared): S, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    enter!(shared, Endpoint::ScaleSets, headers);
    let found = shared
        .state()
        .actions
        .scale_sets
        .iter()
        .find(|s| s.id == id)
        .cloned();
    match found {
        Some(s) => bom(scale_set_json(&s)),
        None => service_error(StatusCode::NOT_FOUND, "", "no such scale set"),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewScaleSet {
    name: String,
    runner_group_id: i64,
    #[serde(default)]
    labels: Vec<serde_json::Value>,
}

impl NewScaleSet {
    /// The label names asked for, the scale set's own name first.
    fn label_names(&self) -> Vec<String> {
        let mut labels: Vec<String> = self
            .labels
            .iter()
            .filter_map(|l| l["name"].as_str().map(str::to_owned))
            .collect();
        if !labels.contains(&self.name) {
            labels.insert(0, self.name.clone());
        }
        labels
    }
}

async fn create_scale_set(
    State(shared): S,
    headers: HeaderMap,
    Json(n): Json<NewScaleSet>,
) -> Response {
    enter!(shared, Endpoint::ScaleSets, headers);
    let id = shared.id() as i64;
    let mut state = shared.state();
    if state.actions.scale_sets.iter().any(|s| s.name == n.name) {
        return service_error(
            StatusCode::BAD_REQUEST,
            "RunnerScaleSetExistsException",
            "a scale set of that name exists",
        );
    }
    let labels = n.label_names();
    let s = FakeScaleSet {
        id,
        name: n.name,
        runner_group_id: n.runner_group_id,
        labels,
    };
    state.actions.scale_sets.push(s.clone());
    drop(state);
    bom(scale_set_json(&s))
}

async fn update_scale_set(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(n): Json<NewScaleSet>,
) -> Response {
    enter!(shared, Endpoint::ScaleSets, headers);
    let mut state = shared.state();
    let Some(s) = state.actions.scale_sets.iter_mut().find(|s| s.id == id) else {
        return service_error(StatusCode::NOT_FOUND, "", "no such scale set");
    };
    let labels = n.label_names();
    s.name = n.name;
    s.runner_group_id = n.runner_group_id;
    s.labels = labels;
    let s = s.clone();
    drop(state);
    bom(scale_set_json(&s))
}

async fn delete_scale_set(State(shared): S, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    enter!(shared, Endpoint::ScaleSets, headers);
    let mut state = shared.state();
    state.actions.scale_sets.retain(|s| s.id != id);
    state.actions.sessions.retain(|s| s.scale_set_id != id);
    state.actions.deleted_scale_sets.push(id);
    StatusCode::NO_CONTENT.into_response()
}

fn session_json(
    shared: &Shared,
    headers: &HeaderMap,
    s: &FakeSession,
    set: &FakeScaleSet,
) -> serde_json::Value {
    json!({
        "sessionId": s.session_id, "ownerName": "fake",
        "runnerScaleSet": scale_set_json(set),
        "messageQueueUrl": format!("{}/_actions/queue/{}?sessionId={}", origin(shared, headers), s.scale_set_id, s.session_id),
        "messageQueueAccessToken": s.token,
        "statistics": statistics(shared, set),
    })
}

fn scale_set(shared: &Shared, id: i64) -> Option<FakeScaleSet> {
    shared
        .state()
        .actions
        .scale_sets
        .iter()
        .find(|s| s.id == id)
        .cloned()
}

async fn create_session(State(shared): S, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    enter!(shared, Endpoint::Sessions, headers);
    let Some(set) = scale_set(&shared, id) else {
        return service_error(StatusCode::NOT_FOUND, "", "no such scale set");
    };
    expire_sessions(&shared);
    let session = {
        let mut state = shared.state();
        if state.actions.sessions.iter().any(|s| s.scale_set_id == id) {
            return service_error(
                StatusCode::CONFLICT,
                "TaskAgentSessionConflictException",
                "a session for this scale set is already open",
            );
        }
        let s = FakeSession {
            scale_set_id: id,
            session_id: random("session-"),
            token: random("queue-"),
            last_used_ms: now_ms(),
        };
        state.actions.sessions.push(s.clone());
        s
    };
    bom(session_json(&shared, &headers, &session, &set))
}

async fn refresh_session(
    State(shared): S,
    headers: HeaderMap,
    Path((id, sid)): Path<(i64, String)>,
) -> Response {
    enter!(shared, Endpoint::Sessions, headers);
    let Some(set) = scale_set(&shared, id) else {
        return service_error(StatusCode::NOT_FOUND, "", "no such scale set");
    };
    let session = {
        let mut state = shared.state();
        let Some(s) = state
            .actions
            .sessions
            .iter_mut()
            .find(|s| s.scale_set_id == id && s.session_id == sid)
        else {
            return service_error(StatusCode::NOT_FOUND, "", "no such session");
        };
        s.token = random("queue-");
        s.last_used_ms = now_ms();
        s.clone()
    };
    bom(session_json(&shared, &headers, &session, &set))
}

async fn delete_session(
    State(shared): S,
    headers: HeaderMap,
    Path((id, sid)): Path<(i64, String)>,
) -> Response {
    enter!(shared, Endpoint::Sessions, headers);
    shared
        .state()
        .actions
        .sessions
        .retain(|s| !(s.scale_set_id == id && s.session_id == sid));
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JitRequest {
    name: String,
}

async fn jit_config(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(req): Json<JitRequest>,
) -> Response {
    enter!(shared, Endpoint::ScaleSetJitConfig, headers);
    let Some(set) = scale_set(&shared, id) else {
        return service_error(StatusCode::NOT_FOUND, "", "no such scale set");
    };
    let rid = shared.id();
    {
        let mut state = shared.state();
        if state.runners.iter().any(|r| r.name == req.name) {
            return service_error(
                StatusCode::CONFLICT,
                "AgentExistsException",
                "a runner of that name exists",
            );
        }
        let scope = state.actions.org.clone();
        state.runners.push(FakeRunner {
            id: rid,
            name: req.name.clone(),
            scope,
            labels: set.labels.clone(),
            runner_group_id: u64::try_from(set.runner_group_id).unwrap_or(0),
            status: "offline".into(),
            busy: false,
            job_id: None,
        });
        state.actions.runner_scale_set.insert(rid, id);
    }
    let payload = JitPayload {
        runner_id: rid,
        name: req.name.clone(),
        url: shared.base_url.clone(),
    };
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&payload).unwrap_or_default());
    bom(json!({
        "runner": { "id": rid, "name": req.name, "runnerScaleSetId": id },
        "encodedJITConfig": encoded,
    }))
}

fn queue_token_ok(shared: &Shared, headers: &HeaderMap, id: i64) -> bool {
    let t = header(headers, "authorization")
        .strip_prefix("Bearer ")
        .unwrap_or("");
    let mut state = shared.state();
    match state
        .actions
        .sessions
        .iter_mut()
        .find(|s| s.scale_set_id == id && s.token == t)
    {
        Some(s) => {
            s.last_used_ms = now_ms();
            true
        }
        None => false,
    }
}

async fn acquire_jobs(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(ids): Json<Vec<i64>>,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::AcquireJobs) {
        return fault_response(f);
    }
    if !queue_token_ok(&shared, &headers, id) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if !shared.config.ghes {
        // github.com assigns jobs itself; the call only records what was asked.
        shared.state().actions.acquired.extend(ids.iter().copied());
        return bom(json!({ "count": ids.len(), "value": ids }));
    }
    let Some(set) = scale_set(&shared, id) else {
        return service_error(StatusCode::NOT_FOUND, "", "no such scale set");
    };
    // Each available job of this scale set is acquired once; acquired jobs are assigned.
    let got: Vec<FakeJob> = {
        let mut state = shared.state();
        let got: Vec<FakeJob> = state
            .jobs
            .iter_mut()
            .filter(|j| {
                j.status == "queued"
                    && !j.acquired
                    && j.labels.contains(&set.name)
                    && ids.contains(&i64::try_from(j.id).unwrap_or(-1))
            })
            .map(|j| {
                j.acquired = true;
                j.clone()
            })
            .collect();
        state
            .actions
            .acquired
            .extend(got.iter().map(|j| i64::try_from(j.id).unwrap_or(-1)));
        got
    };
    for j in &got {
        job_event(&shared, "JobAssigned", j, json!({}));
    }
    let value: Vec<i64> = got
        .iter()
        .map(|j| i64::try_from(j.id).unwrap_or(-1))
        .collect();
    bom(json!({ "count": value.len(), "value": value }))
}

/// Job messages per response at most, as the service sends.
const MAX_JOBS_PER_MESSAGE: usize = 50;

async fn poll(State(shared): S, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    if let Some(f) = shared.enter(Endpoint::MessageQueue) {
        return fault_response(f);
    }
    if !queue_token_ok(&shared, &headers, id) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if headers.get("x-scalesetmaxcapacity").is_none() {
        return service_error(
            StatusCode::BAD_REQUEST,
            "",
            "X-ScaleSetMaxCapacity is required",
        );
    }
    let deadline = tokio::time::Instant::now() + shared.config.poll_timeout;
    loop {
        let wake = shared.poll_wake.notified();
        // Marked sent under the same lock as it is read: an event added after this goes to
        // a new message, never into one whose acknowledgement would drop it unseen.
        let first = shared
            .state()
            .actions
            .messages
            .iter_mut()
            .find(|m| m.scale_set_id == id)
            .map(|m| {
                m.delivered = true;
                m.clone()
            });
        if let Some(m) = first {
            let Some(set) = scale_set(&shared, id) else {
                return service_error(StatusCode::NOT_FOUND, "", "no such scale set");
            };
            let jobs: Vec<_> = m.jobs.iter().take(MAX_JOBS_PER_MESSAGE).cloned().collect();
            return bom(json!({
                "messageId": m.id,
                "messageType": "RunnerScaleSetJobMessages",
                "body": serde_json::Value::Array(jobs).to_string(),
                "statistics": statistics(&shared, &set),
            }));
        }
        if tokio::time::timeout_at(deadline, wake).await.is_err() {
            return StatusCode::ACCEPTED.into_response();
        }
    }
}

async fn acknowledge(
    State(shared): S,
    headers: HeaderMap,
    Path((id, mid)): Path<(i64, i64)>,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::AcknowledgeMessage) {
        return fault_response(f);
    }
    if !queue_token_ok(&shared, &headers, id) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut state = shared.state();
    state
        .actions
        .messages
        .retain(|m| !(m.scale_set_id == id && m.id == mid));
    state.actions.acked.push(mid);
    StatusCode::NO_CONTENT.into_response()
}

/// Adds a job message of `kind` for `job` to the queue of every scale set whose name is
/// among the job's labels, and wakes the long polls.
pub(super) fn job_event(shared: &Shared, kind: &str, job: &FakeJob, extra: serde_json::Value) {
    {
        let mut state = shared.state();
        let sets: Vec<i64> = state
            .actions
            .scale_sets
            .iter()
            .filter(|s| job.labels.contains(&s.name))
            .map(|s| s.id)
            .collect();
        let (owner, name) = job
            .repository
            .split_once('/')
            .unwrap_or(("octo-org", job.repository.as_str()));
        for set in sets {
            let mut m = json!({
                "messageType": kind,
                "runnerRequestId": job.id,
                "repositoryName": name, "ownerName": owner,
                "jobId": job.id.to_string(),
                "jobDisplayName": format!("job {}", job.id),
                "jobWorkflowRef": format!("{}/.github/workflows/ci.yml@refs/heads/main", job.repository),
                "workflowRunId": job.id,
                "eventName": "push",
                "requestLabels": job.labels,
            });
            if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    o.insert(k.clone(), v.clone());
                }
            }
            // Gathered into the newest message not yet sent, up to the service's limit.
            if let Some(last) = state
                .actions
                .messages
                .iter_mut()
                .rev()
                .find(|x| x.scale_set_id == set)
                .filter(|x| !x.delivered && x.jobs.len() < MAX_JOBS_PER_MESSAGE)
            {
                last.jobs.push(m);
                continue;
            }
            state.actions.next_message += 1;
            let id = state.actions.next_message;
            state.actions.messages.push(super::actions::FakeMessage {
                scale_set_id: set,
                id,
                jobs: vec![m],
                delivered: false,
            });
        }
    }
    shared.poll_wake.notify_waiters();
}
