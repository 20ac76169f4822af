//! Route handlers of the fake GitHub.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::{
    Delivery, Endpoint, FakeJob, FakeRunner, Fault, IssuedToken, JitPayload, NewJob, Outgoing,
    Shared,
};
use crate::auth::AppClaims;
use crate::models::{JitConfigRequest, TokenRequest};

type S = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/app/installations/{id}/access_tokens", post(access_tokens))
        .route("/installation/token", axum::routing::delete(revoke))
        .route("/orgs/{org}/actions/runners/generate-jitconfig", post(jit))
        .route(
            "/repos/{owner}/{repo}/actions/runners/generate-jitconfig",
            post(jit),
        )
        .route("/orgs/{org}/actions/runners", get(list_runners))
        .route("/repos/{owner}/{repo}/actions/runners", get(list_runners))
        .route(
            "/orgs/{org}/actions/runners/{id}",
            get(get_runner).delete(delete_runner),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runners/{id}",
            get(get_runner).delete(delete_runner),
        )
        .route("/orgs/{org}/actions/runner-groups", get(list_groups))
        .route("/_fake/jobs", post(post_job))
        .route("/_fake/jobs/bulk", post(post_jobs))
        .route("/_fake/runner/job", get(runner_job))
        .route("/_fake/runner/complete", post(runner_complete))
        .route("/_fake/state", get(dump_state))
        .route("/_fake/faults", post(post_fault).delete(clear_faults))
        .route("/_fake/deliveries/{id}/redeliver", post(post_redeliver))
        .route("/_fake/jobs/{id}/cancel", post(post_cancel))
        .route("/_fake/actions/expire-queue-tokens", post(post_expire))
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run}/cancel",
            post(cancel_run),
        )
        .merge(super::actions::routes())
        .with_state(shared)
}

fn gh_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

pub(super) fn fault_response(fault: Fault) -> Response {
    let rate_limited = |status: StatusCode, secs: u64, remaining_zero: bool| {
        let mut r = gh_error(status, "API rate limit exceeded");
        let h = r.headers_mut();
        h.insert("retry-after", HeaderValue::from(secs));
        if remaining_zero {
            let reset = chrono::Utc::now().timestamp() + i64::try_from(secs).unwrap_or(0);
            h.insert("x-ratelimit-limit", HeaderValue::from(5000));
            h.insert("x-ratelimit-remaining", HeaderValue::from(0));
            h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        }
        r
    };
    match fault {
        Fault::ServerError => gh_error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error"),
        Fault::RateLimited { retry_after_secs } => {
            rate_limited(StatusCode::FORBIDDEN, retry_after_secs, true)
        }
        Fault::TooManyRequests { retry_after_secs } => {
            rate_limited(StatusCode::TOO_MANY_REQUESTS, retry_after_secs, false)
        }
        Fault::Forbidden => gh_error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        ),
        Fault::NotFound => gh_error(StatusCode::NOT_FOUND, "Not Found"),
        Fault::Unprocessable => gh_error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed"),
        Fault::Abort => {
            // Headers, then the connection dies mid-body (a reset, as the client sees it).
            let stream = futures_util::stream::iter([Err::<axum::body::Bytes, _>(
                std::io::Error::other("connection aborted by the fake"),
            )]);
            (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response()
        }
        Fault::Stall => {
            // Headers, then nothing, ever: only the client's timeout ends it.
            let stream =
                futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
            (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response()
        }
        Fault::HugeBody => {
            // 200 with a body far beyond any real answer, streamed without a length.
            let chunk = axum::body::Bytes::from(vec![b' '; 1 << 20]);
            let stream = futures_util::stream::iter(
                (0..32).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response()
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("token "))
        .map(str::trim)
}

/// Accepts a configured PAT or an issued, unrevoked, unexpired installation token.
pub(super) fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<Option<IssuedToken>, Box<Response>> {
    let bad = || Box::new(gh_error(StatusCode::UNAUTHORIZED, "Bad credentials"));
    let token = bearer(headers).ok_or_else(bad)?;
    if shared.config.personal_tokens.iter().any(|t| t == token) {
        return Ok(None);
    }
    let state = shared.state();
    state
        .tokens
        .iter()
        .find(|t| t.token == token && !t.revoked && t.expires_at > chrono::Utc::now())
        .cloned()
        .map(Some)
        .ok_or_else(bad)
}

fn random_token() -> String {
    let bytes: [u8; 18] = rand::random();
    format!("ghs_{}", hex::encode(bytes))
}

async fn access_tokens(
    State(shared): S,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Option<Json<TokenRequest>>,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::AccessTokens) {
        return fault_response(f);
    }
    let Some(jwt) = bearer(&headers) else {
        return gh_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[shared.config.app_id.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let key = match &shared.config.app_public_key_pem {
        Some(pem) => match jsonwebtoken::DecodingKey::from_rsa_pem(pem) {
            Ok(k) => k,
            Err(_) => return gh_error(StatusCode::INTERNAL_SERVER_ERROR, "bad fake key"),
        },
        None => {
            validation.insecure_disable_signature_validation();
            jsonwebtoken::DecodingKey::from_secret(b"")
        }
    };
    let claims = match jsonwebtoken::decode::<AppClaims>(jwt, &key, &validation) {
        Ok(d) => d.claims,
        Err(_) => {
            return gh_error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            )
        }
    };
    // GitHub: exp at most 10 minutes ahead.
    if claims.exp > chrono::Utc::now().timestamp() + 600 || claims.iat > claims.exp {
        return gh_error(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') is too far in the future",
        );
    }
    if id != shared.config.installation_id {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let lifetime = chrono::Duration::from_std(shared.config.token_lifetime)
        .unwrap_or(chrono::Duration::hours(1));
    let issued = IssuedToken {
        token: random_token(),
        repositories: req.repositories.clone(),
        permissions: req.permissions.clone(),
        expires_at: chrono::Utc::now() + lifetime,
        revoked: false,
    };
    shared.state().tokens.push(issued.clone());
    let selection = if req.repositories.is_empty() {
        "all"
    } else {
        "selected"
    };
    (
        StatusCode::CREATED,
        Json(json!({
            "token": issued.token,
            "expires_at": issued.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": issued.permissions,
            "repository_selection": selection,
        })),
    )
        .into_response()
}

async fn revoke(State(shared): S, headers: HeaderMap) -> Response {
    if let Some(f) = shared.enter(Endpoint::RevokeToken) {
        return fault_response(f);
    }
    let token = match authorize(&shared, &headers) {
        Ok(Some(t)) => t,
        Ok(None) => return gh_error(StatusCode::FORBIDDEN, "not an installation token"),
        Err(r) => return *r,
    };
    let mut state = shared.state();
    for t in state.tokens.iter_mut().filter(|t| t.token == token.token) {
        t.revoked = true;
    }
    StatusCode::NO_CONTENT.into_response()
}

fn scope_of(params: &HashMap<String, String>) -> String {
    match (params.get("org"), params.get("owner"), params.get("repo")) {
        (Some(org), _, _) => format!("org:{org}"),
        (None, Some(o), Some(r)) => format!("repo:{o}/{r}"),
        _ => String::new(),
    }
}

fn runner_json(r: &FakeRunner) -> serde_json::Value {
    let labels: Vec<_> = r
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| json!({"id": i + 1, "name": l, "type": "custom"}))
        .collect();
    json!({
        "id": r.id,
        "name": r.name,
        "os": "linux",
        "status": r.status,
        "busy": r.busy,
        "ephemeral": true,
        "runner_group_id": r.runner_group_id,
        "labels": labels,
    })
}

async fn jit(
    State(shared): S,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    Json(req): Json<JitConfigRequest>,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::GenerateJitConfig) {
        return fault_response(f);
    }
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    if req.labels.is_empty() || req.labels.len() > 100 {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request: labels must have 1 to 100 items",
        );
    }
    let scope = scope_of(&params);
    if scope.starts_with("org:")
        && !shared
            .config
            .runner_groups
            .iter()
            .any(|g| g.id == req.runner_group_id)
    {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let id = shared.id();
    let runner = FakeRunner {
        id,
        name: req.name.clone(),
        scope: scope.clone(),
        labels: req.labels.clone(),
        runner_group_id: req.runner_group_id,
        status: "offline".into(),
        busy: false,
        job_id: None,
    };
    {
        let mut state = shared.state();
        if state
            .runners
            .iter()
            .any(|r| r.scope == scope && r.name == req.name)
        {
            return gh_error(
                StatusCode::CONFLICT,
                "Already exists - A runner with the same name already exists.",
            );
        }
        state.runners.push(runner.clone());
    }
    let payload = JitPayload {
        runner_id: id,
        name: req.name,
        url: shared.base_url.clone(),
    };
    let blob = serde_json::to_vec(&payload).unwrap_or_default();
    let encoded = base64::engine::general_purpose::STANDARD.encode(blob);
    (
        StatusCode::CREATED,
        Json(json!({"runner": runner_json(&runner), "encoded_jit_config": encoded})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

/// Serves one page of `items` under `key`, with GitHub's `Link` header.
fn page(
    shared: &Shared,
    uri: &Uri,
    q: &PageQuery,
    key: &str,
    items: Vec<serde_json::Value>,
) -> Response {
    let per_page = q
        .per_page
        .unwrap_or(30)
        .clamp(1, shared.config.max_per_page.max(1));
    let page = q.page.unwrap_or(1).max(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let chunk: Vec<_> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let link = |p: usize, rel: &str| {
        format!(
            "<{}{}?per_page={per_page}&page={p}>; rel=\"{rel}\"",
            shared.base_url,
            uri.path()
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
        links.push(link(1, "first"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    let mut resp = Json(json!({"total_count": total, key: chunk})).into_response();
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        if !links.is_empty() {
            resp.headers_mut().insert("link", v);
        }
    }
    resp
}

async fn list_runners(
    State(shared): S,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<PageQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::ListRunners) {
        return fault_response(f);
    }
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let scope = scope_of(&params);
    let items: Vec<_> = shared
        .state()
        .runners
        .iter()
        .filter(|r| r.scope == scope)
        .map(runner_json)
        .collect();
    page(&shared, &uri, &q, "runners", items)
}

fn runner_id(params: &HashMap<String, String>) -> Option<u64> {
    params.get("id").and_then(|s| s.parse().ok())
}

async fn get_runner(
    State(shared): S,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::GetRunner) {
        return fault_response(f);
    }
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let scope = scope_of(&params);
    let id = runner_id(&params);
    let state = shared.state();
    match state
        .runners
        .iter()
        .find(|r| Some(r.id) == id && r.scope == scope)
    {
        Some(r) => Json(runner_json(r)).into_response(),
        None => gh_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn delete_runner(
    State(shared): S,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::DeleteRunner) {
        return fault_response(f);
    }
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let scope = scope_of(&params);
    let id = runner_id(&params);
    let mut state = shared.state();
    match state
        .runners
        .iter()
        .position(|r| Some(r.id) == id && r.scope == scope)
    {
        Some(i) => {
            let r = state.runners.remove(i);
            // A runner removed while it holds a job: GitHub fails the job (the runner lost
            // communication); it is never given to another runner.
            let failed = r.job_id.and_then(|jid| {
                let j = state
                    .jobs
                    .iter_mut()
                    .find(|j| j.id == jid && j.status == "in_progress")?;
                j.status = "completed".into();
                Some(j.clone())
            });
            let name = r.name.clone();
            let rid = r.id;
            state.deleted_runners.push(r);
            drop(state);
            if let Some(job) = failed {
                shared.webhook("completed", job.id);
                super::actions::job_event(
                    &shared,
                    "JobCompleted",
                    &job,
                    json!({ "result": "failed", "runnerId": rid, "runnerName": name }),
                );
            }
            StatusCode::NO_CONTENT.into_response()
        }
        None => gh_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn list_groups(
    State(shared): S,
    Query(q): Query<PageQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::ListRunnerGroups) {
        return fault_response(f);
    }
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let items: Vec<_> = shared
        .config
        .runner_groups
        .iter()
        .filter_map(|g| serde_json::to_value(g).ok())
        .collect();
    page(&shared, &uri, &q, "runner_groups", items)
}

pub(super) fn queue_job(shared: &Shared, job: NewJob) -> FakeJob {
    let job = FakeJob {
        id: job.id,
        labels: job.labels,
        script: job.script,
        repository: job
            .repository
            .unwrap_or_else(|| "octo-org/octo-repo".into()),
        status: "queued".into(),
        runner_id: None,
        runner_name: None,
        exit_code: None,
        fetches: 0,
        queued_ms: chrono::Utc::now().timestamp_millis(),
        fetched_ms: None,
        acquired: false,
    };
    shared.state().jobs.push(job.clone());
    shared.webhook("queued", job.id);
    if shared.config.ghes {
        let url = format!("{}/_actions/acquire/{}", shared.base_url, job.id);
        super::actions::job_event(
            shared,
            "JobAvailable",
            &job,
            json!({ "acquireJobUrl": url }),
        );
    } else {
        super::actions::job_event(shared, "JobAssigned", &job, json!({}));
    }
    job
}

pub(super) fn cancel_job(shared: &Shared, id: u64) -> bool {
    let job = {
        let mut state = shared.state();
        let Some(j) = state
            .jobs
            .iter_mut()
            .find(|j| j.id == id && j.status == "queued")
        else {
            return false;
        };
        j.status = "completed".into();
        j.clone()
    };
    shared.webhook("completed", id);
    super::actions::job_event(
        shared,
        "JobCompleted",
        &job,
        json!({ "result": "canceled", "runnerId": 0, "runnerName": "" }),
    );
    true
}

/// Queues many jobs in one call (a burst "at once").
async fn post_jobs(State(shared): S, Json(jobs): Json<Vec<NewJob>>) -> Response {
    let n = jobs.len();
    for j in jobs {
        queue_job(&shared, j);
    }
    (StatusCode::CREATED, Json(json!({ "queued": n }))).into_response()
}

async fn post_cancel(State(shared): S, Path(id): Path<u64>) -> Response {
    if cancel_job(&shared, id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gh_error(StatusCode::NOT_FOUND, "no such queued job")
    }
}

async fn post_expire(State(shared): S) -> Response {
    for s in &mut shared.state().actions.sessions {
        s.token = format!("{}-expired", s.token);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /repos/{owner}/{repo}/actions/runs/{run}/cancel`: the fake's workflow run ids are
/// its job ids; a queued job of that run is cancelled (202, as GitHub answers).
async fn cancel_run(
    State(shared): S,
    Path((owner, repo, run)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(f) = shared.enter(Endpoint::CancelRun) {
        return fault_response(f);
    }
    if let Err(r) = authorize(&shared, &headers) {
        return *r;
    }
    let full = format!("{owner}/{repo}");
    let known = shared
        .state()
        .jobs
        .iter()
        .any(|j| j.id == run && j.repository == full);
    if !known {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    }
    cancel_job(&shared, run);
    shared.state().cancelled_runs.push(run);
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

async fn post_job(State(shared): S, Json(job): Json<NewJob>) -> Response {
    let job = queue_job(&shared, job);
    (StatusCode::CREATED, Json(job)).into_response()
}

fn runner_auth(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Runner ")?
        .trim()
        .parse()
        .ok()
}

async fn runner_job(State(shared): S, headers: HeaderMap) -> Response {
    let Some(rid) = runner_auth(&headers) else {
        return gh_error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Runner <id>",
        );
    };
    let taken = {
        let mut state = shared.state();
        let state = &mut *state;
        let Some(runner) = state.runners.iter_mut().find(|r| r.id == rid) else {
            return gh_error(StatusCode::UNAUTHORIZED, "unknown or removed runner");
        };
        runner.status = "online".into();
        if runner.job_id.is_some() {
            return gh_error(StatusCode::CONFLICT, "a JIT runner takes one job only");
        }
        let ghes = shared.config.ghes;
        let Some(job) = state.jobs.iter_mut().find(|j| {
            j.status == "queued"
                && (!ghes || j.acquired)
                && j.labels.iter().all(|l| runner.labels.contains(l))
        }) else {
            return StatusCode::NO_CONTENT.into_response();
        };
        job.status = "in_progress".into();
        job.runner_id = Some(rid);
        job.runner_name = Some(runner.name.clone());
        job.fetches += 1;
        job.fetched_ms = Some(chrono::Utc::now().timestamp_millis());
        runner.busy = true;
        runner.job_id = Some(job.id);
        (job.id, job.script.clone(), job.clone(), runner.name.clone())
    };
    shared.webhook("in_progress", taken.0);
    super::actions::job_event(
        &shared,
        "JobStarted",
        &taken.2,
        json!({ "runnerId": rid, "runnerName": taken.3 }),
    );
    Json(json!({"job_id": taken.0, "script": taken.1})).into_response()
}

#[derive(Deserialize)]
struct Completion {
    job_id: u64,
    exit_code: i32,
}

async fn runner_complete(
    State(shared): S,
    headers: HeaderMap,
    Json(done): Json<Completion>,
) -> Response {
    let Some(rid) = runner_auth(&headers) else {
        return gh_error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Runner <id>",
        );
    };
    let mut finished = None;
    {
        let mut state = shared.state();
        let Some(pos) = state
            .runners
            .iter()
            .position(|r| r.id == rid && r.job_id == Some(done.job_id))
        else {
            return gh_error(StatusCode::CONFLICT, "this runner does not hold that job");
        };
        // The entry this runner holds (a job cancelled and queued again has two).
        if let Some(job) = state
            .jobs
            .iter_mut()
            .find(|j| j.id == done.job_id && j.runner_id == Some(rid))
        {
            job.status = "completed".into();
            job.exit_code = Some(done.exit_code);
            finished = Some((job.clone(), state.runners[pos].name.clone()));
        }
        if shared.config.remove_runner_after_job {
            let mut r = state.runners.remove(pos);
            r.busy = false;
            state.finished_runners.push(r);
        } else if let Some(r) = state.runners.get_mut(pos) {
            r.busy = false;
        }
    }
    shared.webhook("completed", done.job_id);
    if let Some((job, runner_name)) = finished {
        let result = if done.exit_code == 0 {
            "succeeded"
        } else {
            "failed"
        };
        super::actions::job_event(
            &shared,
            "JobCompleted",
            &job,
            json!({ "result": result, "runnerId": rid, "runnerName": runner_name }),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn dump_state(State(shared): S) -> Response {
    Json(shared.state().clone()).into_response()
}

#[derive(Deserialize)]
struct FaultRequest {
    endpoint: Endpoint,
    fault: Fault,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

async fn clear_faults(State(shared): S) -> Response {
    shared.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn post_fault(State(shared): S, Json(f): Json<FaultRequest>) -> Response {
    shared.inject(f.endpoint, f.fault, f.times);
    StatusCode::NO_CONTENT.into_response()
}

/// A `workflow_job` payload shaped like GitHub's (fields the schema requires included).
pub(super) fn workflow_job_payload(
    shared: &Shared,
    action: &str,
    job: &FakeJob,
) -> serde_json::Value {
    let (owner, name) = job
        .repository
        .split_once('/')
        .unwrap_or(("octo-org", job.repository.as_str()));
    let status = match action {
        "queued" => "queued",
        "in_progress" => "in_progress",
        _ => "completed",
    };
    let conclusion = match (action, job.exit_code) {
        ("completed", Some(0)) => json!("success"),
        ("completed", _) => json!("failure"),
        _ => serde_json::Value::Null,
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let api = "https://api.github.com";
    let (runner_id, runner_name, group_id, group_name) = match (action, job.runner_id) {
        ("queued", _) | (_, None) => (json!(null), json!(null), json!(null), json!(null)),
        (_, Some(id)) => (
            json!(id),
            json!(job.runner_name),
            json!(1),
            json!("Default"),
        ),
    };
    json!({
        "action": action,
        "workflow_job": {
            "id": job.id,
            "run_id": job.id + 1_000_000,
            "run_attempt": 1,
            "run_url": format!("{api}/repos/{owner}/{name}/actions/runs/{}", job.id + 1_000_000),
            "node_id": format!("FAKE_{}", job.id),
            "head_sha": "3484a3fb816e0859fd6e1cea078d76385ff50625",
            "head_branch": "main",
            "url": format!("{api}/repos/{owner}/{name}/actions/jobs/{}", job.id),
            "html_url": format!("https://github.com/{owner}/{name}/runs/{}", job.id),
            "check_run_url": format!("{api}/repos/{owner}/{name}/check-runs/{}", job.id),
            "status": status,
            "conclusion": conclusion,
            "started_at": now,
            "created_at": now,
            "completed_at": if status == "completed" { json!(now) } else { json!(null) },
            "name": format!("job-{}", job.id),
            "steps": [],
            "labels": job.labels,
            "runner_id": runner_id,
            "runner_name": runner_name,
            "runner_group_id": group_id,
            "runner_group_name": group_name,
            "workflow_name": "CI",
        },
        "repository": {
            "id": 186853002,
            "name": name,
            "full_name": job.repository,
            "private": true,
            "visibility": "private",
            "owner": {"login": owner, "id": 38302899, "type": "Organization"},
        },
        "organization": {"login": owner, "id": 38302899},
        "installation": {"id": shared.config.installation_id},
        "sender": {"login": "octocat", "id": 1, "type": "User"},
    })
}

pub(super) fn redeliver(shared: &Shared, id: &str) -> bool {
    let known = shared
        .sent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(id);
    if let (true, Some(tx)) = (known, &shared.webhooks) {
        return tx.send(Outgoing::Redeliver(id.to_owned())).is_ok();
    }
    false
}

async fn post_redeliver(State(shared): S, Path(id): Path<String>) -> Response {
    if redeliver(&shared, &id) {
        StatusCode::ACCEPTED.into_response()
    } else {
        gh_error(StatusCode::NOT_FOUND, "Not Found")
    }
}

pub(super) async fn webhook_sender(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
) {
    let Some(target) = shared.config.webhook.clone() else {
        return;
    };
    let http = reqwest::Client::new();
    // One at a time, in order: deliveries of a job arrive queued → in_progress → completed.
    while let Some(work) = rx.recv().await {
        let (id, action, job_id, body) = match work {
            Outgoing::New { action, job_id } => {
                let job = shared.state().jobs.iter().find(|j| j.id == job_id).cloned();
                let Some(job) = job else { continue };
                let body = serde_json::to_vec(&workflow_job_payload(&shared, &action, &job))
                    .unwrap_or_default();
                let g: [u8; 16] = rand::random();
                let h = hex::encode(g);
                let id = format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                );
                shared
                    .sent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), body.clone());
                (id, action, job_id, body)
            }
            Outgoing::Redeliver(id) => {
                let body = shared
                    .sent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .cloned();
                let Some(body) = body else { continue };
                let (action, job_id) = shared
                    .state()
                    .deliveries
                    .iter()
                    .find(|d| d.id == id)
                    .map(|d| (d.action.clone(), d.job_id))
                    .unwrap_or_default();
                (id, action, job_id, body)
            }
        };
        let status = http
            .post(&target.url)
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", &id)
            .header(
                "x-hub-signature-256",
                crate::webhook::sign(&target.secret, &body),
            )
            .body(body)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        shared.state().deliveries.push(Delivery {
            id,
            action,
            job_id,
            status,
        });
    }
}
