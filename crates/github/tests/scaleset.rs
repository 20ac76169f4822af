//! The scale-set protocol client against a small in-test Actions service on loopback:
//! bootstrap, scale set by name and creation, a session and a second one refused (409), the
//! long poll (202, a BOM-prefixed message, redelivery until acknowledged), an expired queue
//! token (401) and a refreshed session, `acquirejobs`, JIT configs, the service's typed errors.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use airlock_github::scaleset::{
    registration_token, ActionsService, JobMessage, Label, Poll, Queue, RunnerScaleSet,
    ScaleSetError,
};
use airlock_github::Secret;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};

#[derive(Default)]
struct Fake {
    base: String,
    scale_sets: Vec<serde_json::Value>,
    session_open: bool,
    queue: VecDeque<(i64, String)>,
    queue_token: String,
    acked: Vec<i64>,
}

type S = Arc<Mutex<Fake>>;

fn bom(v: serde_json::Value) -> Response {
    let mut body = b"\xef\xbb\xbf".to_vec();
    body.extend(v.to_string().into_bytes());
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

fn bearer(h: &HeaderMap) -> String {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn reg_token(h: HeaderMap) -> Response {
    if bearer(&h) != "Bearer ghs_install" {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(serde_json::json!({ "token": "AREG1", "expires_at": "2099-01-01T00:00:00Z" }))
        .into_response()
}

async fn registration(
    State(s): State<S>,
    h: HeaderMap,
    Json(b): Json<serde_json::Value>,
) -> Response {
    if bearer(&h) != "RemoteAuth AREG1" || b["runner_event"] != "register" {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let base = s.lock().expect("lock").base.clone();
    Json(serde_json::json!({ "url": format!("{base}/svc/"), "token": "admin-jwt" })).into_response()
}

fn admin(h: &HeaderMap) -> bool {
    bearer(h) == "Bearer admin-jwt"
}

async fn groups(h: HeaderMap) -> Response {
    if !admin(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    bom(
        serde_json::json!({ "count": 1, "value": [{ "id": 3, "name": "airlock", "size": 0, "isDefaultGroup": false }] }),
    )
}

async fn list_sets(State(s): State<S>) -> Response {
    let sets = s.lock().expect("lock").scale_sets.clone();
    bom(serde_json::json!({ "count": sets.len(), "value": sets }))
}

async fn create_set(State(s): State<S>, Json(mut b): Json<serde_json::Value>) -> Response {
    let mut f = s.lock().expect("lock");
    if f.scale_sets.iter().any(|x| x["name"] == b["name"]) {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "typeName": "RunnerScaleSetExistsException", "message": "exists" })),
        )
            .into_response();
    }
    b["id"] = serde_json::json!(42);
    f.scale_sets.push(b.clone());
    bom(b)
}

fn session_body(f: &Fake) -> serde_json::Value {
    serde_json::json!({
        "sessionId": "5d0e0f00-0000-4000-8000-000000000001",
        "ownerName": "airlock-test",
        "messageQueueUrl": format!("{}/svc/queue?sessionId=1", f.base),
        "messageQueueAccessToken": f.queue_token,
        "statistics": { "totalAssignedJobs": 0 },
    })
}

async fn open_session(State(s): State<S>, Path(id): Path<i64>) -> Response {
    let mut f = s.lock().expect("lock");
    if id != 42 {
        return StatusCode::NOT_FOUND.into_response();
    }
    if f.session_open {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "typeName": "TaskAgentSessionConflictException", "message": "session exists" })),
        )
            .into_response();
    }
    f.session_open = true;
    f.queue_token = "queue-1".into();
    bom(session_body(&f))
}

async fn refresh_session(State(s): State<S>) -> Response {
    let mut f = s.lock().expect("lock");
    f.queue_token = "queue-2".into();
    bom(session_body(&f))
}

async fn close_session(State(s): State<S>) -> StatusCode {
    s.lock().expect("lock").session_open = false;
    StatusCode::NO_CONTENT
}

async fn poll(State(s): State<S>, h: HeaderMap) -> Response {
    let f = s.lock().expect("lock");
    if bearer(&h) != format!("Bearer {}", f.queue_token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if h.get("x-scalesetmaxcapacity").is_none() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    match f.queue.front() {
        None => StatusCode::ACCEPTED.into_response(),
        Some((id, body)) => bom(serde_json::json!({
            "messageId": id, "messageType": "RunnerScaleSetJobMessages", "body": body,
            "statistics": { "totalAssignedJobs": 2, "totalRunningJobs": 1 },
        })),
    }
}

async fn ack(State(s): State<S>, Path(id): Path<i64>) -> StatusCode {
    let mut f = s.lock().expect("lock");
    f.queue.retain(|(m, _)| *m != id);
    f.acked.push(id);
    StatusCode::NO_CONTENT
}

async fn acquire(Json(ids): Json<Vec<i64>>) -> Response {
    bom(serde_json::json!({ "count": ids.len(), "value": ids }))
}

async fn jit(Json(b): Json<serde_json::Value>) -> Response {
    bom(serde_json::json!({
        "runner": { "id": 7, "name": b["name"], "runnerScaleSetId": 42 },
        "encodedJITConfig": "ZW5jb2RlZA==",
    }))
}

async fn start() -> (String, S) {
    let s: S = Arc::new(Mutex::new(Fake::default()));
    let app = Router::new()
        .route(
            "/api/orgs/octo/actions/runners/registration-token",
            post(reg_token),
        )
        .route("/api/actions/runner-registration", post(registration))
        .route("/svc/_apis/runtime/runnergroups/", get(groups))
        .route(
            "/svc/_apis/runtime/runnerscalesets",
            get(list_sets).post(create_set),
        )
        .route(
            "/svc/_apis/runtime/runnerscalesets/{id}/sessions",
            post(open_session),
        )
        .route(
            "/svc/_apis/runtime/runnerscalesets/{id}/sessions/{sid}",
            patch(refresh_session).delete(close_session),
        )
        .route(
            "/svc/_apis/runtime/runnerscalesets/{id}/acquirejobs",
            post(acquire),
        )
        .route(
            "/svc/_apis/runtime/runnerscalesets/{id}/generatejitconfig",
            post(jit),
        )
        .route("/svc/queue", get(poll))
        .route("/svc/queue/{mid}", delete(ack))
        .with_state(s.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    s.lock().expect("lock").base = base.clone();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (base, s)
}

fn job_body(kind: &str, request: i64) -> String {
    serde_json::json!([{ "messageType": kind, "runnerRequestId": request, "jobId": format!("job-{request}"),
        "repositoryName": "app", "ownerName": "octo", "requestLabels": ["airlock-untrusted"] }])
    .to_string()
}

#[tokio::test]
async fn the_protocol_end_to_end_against_a_fake_service() {
    let (base, fake) = start().await;
    let http = reqwest::Client::new();
    let api = format!("{base}/api");
    let reg = registration_token(&http, &api, "orgs/octo", &Secret::new("ghs_install"))
        .await
        .expect("registration token");
    let svc = ActionsService::connect(http.clone(), &api, "https://github.com/octo", &reg)
        .await
        .expect("connect");
    assert_eq!(svc.url(), format!("{base}/svc"));

    // The scale set by name, created when missing, found afterwards; creating it twice is the
    // service's typed error.
    let group = svc
        .runner_group("airlock")
        .await
        .expect("group")
        .expect("exists");
    assert_eq!(group.id, 3);
    assert!(svc
        .scale_set(3, "airlock-untrusted")
        .await
        .expect("list")
        .is_none());
    let want = RunnerScaleSet {
        name: "airlock-untrusted".into(),
        runner_group_id: 3,
        labels: vec![Label {
            kind: "System".into(),
            name: "airlock-untrusted".into(),
        }],
        ..RunnerScaleSet::default()
    };
    let created = svc.create_scale_set(&want).await.expect("create");
    assert_eq!(created.id, Some(42));
    assert_eq!(
        svc.scale_set(3, "airlock-untrusted")
            .await
            .expect("list")
            .and_then(|s| s.id),
        Some(42)
    );
    match svc.create_scale_set(&want).await {
        Err(ScaleSetError::Status {
            status: 400,
            type_name,
            ..
        }) => {
            assert_eq!(type_name, "RunnerScaleSetExistsException")
        }
        other => panic!("{other:?}"),
    }

    // One session; a second is a conflict, said as such.
    let session = svc
        .create_session(42, "airlock-test")
        .await
        .expect("session");
    let e = svc
        .create_session(42, "airlock-test")
        .await
        .expect_err("conflict");
    assert!(
        matches!(e, ScaleSetError::SessionConflict { scale_set: 42 }),
        "{e:?}"
    );
    assert!(e.to_string().contains("another session"), "{e}");

    // The long poll: nothing (202), then a message; unacknowledged it comes again; after the
    // acknowledgement it is gone.
    let q = Queue::of(http.clone(), &session);
    let t = std::time::Duration::from_secs(5);
    assert!(matches!(
        q.poll(None, 4, t).await.expect("poll"),
        Poll::Empty
    ));
    fake.lock()
        .expect("lock")
        .queue
        .push_back((1, job_body("JobAssigned", 11)));
    let Poll::Message(m) = q.poll(None, 4, t).await.expect("poll") else {
        panic!("no message")
    };
    assert_eq!(m.message_id, 1);
    assert_eq!(m.statistics.map(|s| s.total_assigned_jobs), Some(2));
    let jobs = m.jobs().expect("jobs");
    assert!(
        matches!(&jobs[0], JobMessage::Assigned(j) if j.runner_request_id == 11 && j.request_labels == ["airlock-untrusted"])
    );
    assert!(
        matches!(q.poll(Some(0), 4, t).await.expect("poll"), Poll::Message(ref again) if again.message_id == 1)
    );
    q.ack(1).await.expect("ack");
    assert_eq!(fake.lock().expect("lock").acked, [1]);
    assert!(matches!(
        q.poll(Some(1), 4, t).await.expect("poll"),
        Poll::Empty
    ));

    // The queue token expires: 401 is typed; a refreshed session polls again.
    fake.lock().expect("lock").queue_token = "queue-rotated".into();
    let e = q.poll(Some(1), 4, t).await.expect_err("expired");
    assert!(matches!(e, ScaleSetError::QueueTokenExpired), "{e:?}");
    let session = svc
        .refresh_session(42, &session.session_id)
        .await
        .expect("refresh");
    let q = Queue::of(http.clone(), &session);
    assert!(matches!(
        q.poll(Some(1), 4, t).await.expect("poll"),
        Poll::Empty
    ));

    // acquirejobs and a JIT config for one runner.
    let got = svc
        .acquire_jobs(42, &session.message_queue_access_token, &[11, 12])
        .await
        .expect("acquire");
    assert_eq!(got, [11, 12]);
    let jit = svc
        .generate_jit_config(42, "airlock-r1", "_work")
        .await
        .expect("jit");
    assert_eq!(jit.runner.name, "airlock-r1");
    assert_eq!(jit.encoded_jit_config.expose(), "ZW5jb2RlZA==");
    // The JIT config is a secret: its Debug form does not show it.
    assert!(!format!("{jit:?}").contains("ZW5jb2RlZA"));

    // Closing the session lets a new one open.
    svc.delete_session(42, &session.session_id)
        .await
        .expect("close");
    svc.create_session(42, "airlock-test")
        .await
        .expect("reopen");
}
