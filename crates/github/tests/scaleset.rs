//! The scale-set protocol client against the fake GitHub's Actions service: bootstrap, scale
//! set by name and creation, a session and a second one refused (409), the long poll (202, a
//! BOM-prefixed message, redelivery until acknowledged), job messages from the job service
//! (assigned, started and completed by a runner made from the scale set's JIT config,
//! cancelled), an expired queue token (401) and a refreshed session, `acquirejobs`, injected
//! faults and the service's typed errors.

mod common;

use std::time::Duration;

use airlock_github::fake::{Endpoint, FakeConfig, Fault, JitPayload, NewJob};
use airlock_github::scaleset::{
    registration_token, ActionsService, JobMessage, Label, Poll, Queue, RunnerScaleSet,
    ScaleSetError,
};
use airlock_github::Secret;
use base64::Engine as _;
use common::*;

const WAIT: Duration = Duration::from_secs(5);

fn poll_config() -> FakeConfig {
    FakeConfig {
        poll_timeout: Duration::from_millis(300),
        ..config()
    }
}

async fn next(q: &Queue, last: Option<i64>) -> airlock_github::scaleset::Message {
    match q.poll(last, 4, WAIT).await.expect("poll") {
        Poll::Message(m) => m,
        Poll::Empty => panic!("no message"),
    }
}

#[tokio::test]
async fn the_protocol_end_to_end_against_the_fake_service() {
    let fake = fake(poll_config()).await;
    let http = reqwest::Client::new();
    let api = fake.url();
    let reg = registration_token(&http, &api, "orgs/octo-org", &Secret::new(PAT))
        .await
        .expect("registration token");
    let svc = ActionsService::connect(http.clone(), &api, "https://github.com/octo-org", &reg)
        .await
        .expect("connect");
    assert_eq!(svc.url(), format!("{api}/_actions"));

    // The scale set by name, created when missing, found afterwards; a second creation is the
    // service's typed error.
    let group = svc
        .runner_group("Default")
        .await
        .expect("group")
        .expect("exists");
    assert!(svc
        .scale_set(group.id, "airlock-untrusted")
        .await
        .expect("list")
        .is_none());
    let want = RunnerScaleSet {
        name: "airlock-untrusted".into(),
        runner_group_id: group.id,
        labels: vec![Label {
            kind: "System".into(),
            name: "airlock-untrusted".into(),
        }],
        ..RunnerScaleSet::default()
    };
    let id = svc
        .create_scale_set(&want)
        .await
        .expect("create")
        .id
        .expect("id");
    let found = svc
        .scale_set(group.id, "airlock-untrusted")
        .await
        .expect("list")
        .and_then(|s| s.id);
    assert_eq!(found, Some(id));
    match svc.create_scale_set(&want).await {
        Err(ScaleSetError::Status {
            status: 400,
            type_name,
            ..
        }) => assert_eq!(type_name, "RunnerScaleSetExistsException"),
        other => panic!("{other:?}"),
    }

    // One session; a second is a conflict, said as such.
    let session = svc
        .create_session(id, "airlock-test")
        .await
        .expect("session");
    let e = svc
        .create_session(id, "airlock-test")
        .await
        .expect_err("conflict");
    assert!(
        matches!(e, ScaleSetError::SessionConflict { scale_set } if scale_set == id),
        "{e:?}"
    );

    // The long poll holds, then answers 202; a queued job becomes JobAssigned, delivered
    // again until acknowledged.
    let q = Queue::of(http.clone(), &session);
    let t0 = std::time::Instant::now();
    assert!(matches!(
        q.poll(None, 4, WAIT).await.expect("poll"),
        Poll::Empty
    ));
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "the poll did not hold"
    );
    fake.queue_job(NewJob {
        id: 501,
        labels: vec!["airlock-untrusted".into()],
        script: "echo hi".into(),
        repository: None,
    });
    let m = next(&q, None).await;
    assert_eq!(m.statistics.map(|s| s.total_assigned_jobs), Some(1));
    let jobs = m.jobs().expect("jobs");
    assert!(
        matches!(&jobs[0], JobMessage::Assigned(j) if j.runner_request_id == 501 && j.request_labels == ["airlock-untrusted"]),
        "{jobs:?}"
    );
    assert_eq!(next(&q, None).await.message_id, m.message_id, "redelivered");
    q.ack(m.message_id).await.expect("ack");
    assert!(matches!(
        q.poll(Some(m.message_id), 4, WAIT).await.expect("poll"),
        Poll::Empty
    ));

    // A runner from the scale set's JIT config takes exactly that job: JobStarted, then
    // JobCompleted with its result.
    let jit = svc
        .generate_jit_config(id, "airlock-r1", "_work")
        .await
        .expect("jit");
    assert!(!format!("{jit:?}").contains(jit.encoded_jit_config.expose()));
    let payload: JitPayload = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(jit.encoded_jit_config.expose())
            .expect("base64"),
    )
    .expect("payload");
    let job: serde_json::Value = http
        .get(format!("{api}/_fake/runner/job"))
        .header("authorization", format!("Runner {}", payload.runner_id))
        .send()
        .await
        .expect("fetch")
        .json()
        .await
        .expect("job");
    assert_eq!(job["job_id"], 501);
    let m = next(&q, None).await;
    assert!(
        matches!(&m.jobs().expect("jobs")[0], JobMessage::Started { runner_name, .. } if runner_name == "airlock-r1")
    );
    q.ack(m.message_id).await.expect("ack");
    let done = http
        .post(format!("{api}/_fake/runner/complete"))
        .header("authorization", format!("Runner {}", payload.runner_id))
        .json(&serde_json::json!({ "job_id": 501, "exit_code": 0 }))
        .send()
        .await
        .expect("complete");
    assert!(done.status().is_success());
    let m = next(&q, None).await;
    assert!(
        matches!(&m.jobs().expect("jobs")[0], JobMessage::Completed { result, .. } if result == "succeeded")
    );
    q.ack(m.message_id).await.expect("ack");

    // A cancelled job: JobCompleted with `canceled` and no runner.
    fake.queue_job(NewJob {
        id: 502,
        labels: vec!["airlock-untrusted".into()],
        script: "true".into(),
        repository: None,
    });
    let m = next(&q, None).await;
    q.ack(m.message_id).await.expect("ack");
    assert!(fake.cancel_job(502));
    let m = next(&q, None).await;
    assert!(
        matches!(&m.jobs().expect("jobs")[0], JobMessage::Completed { result, runner_id: 0, .. } if result == "canceled")
    );
    q.ack(m.message_id).await.expect("ack");

    // The queue token expires: 401 is typed; a refreshed session polls again.
    fake.expire_queue_tokens();
    let e = q.poll(None, 4, WAIT).await.expect_err("expired");
    assert!(matches!(e, ScaleSetError::QueueTokenExpired), "{e:?}");
    let session = svc
        .refresh_session(id, &session.session_id)
        .await
        .expect("refresh");
    let q = Queue::of(http.clone(), &session);
    assert!(matches!(
        q.poll(None, 4, WAIT).await.expect("poll"),
        Poll::Empty
    ));

    // acquirejobs with the queue token.
    let got = svc
        .acquire_jobs(id, &session.message_queue_access_token, &[11, 12])
        .await
        .expect("acquire");
    assert_eq!(got, [11, 12]);

    // Injected faults: a 500 on the queue is a transient error; the next poll works.
    fake.inject(Endpoint::MessageQueue, Fault::ServerError, 1);
    let e = q.poll(None, 4, WAIT).await.expect_err("fault");
    assert!(e.is_transient(), "{e:?}");
    assert!(matches!(
        q.poll(None, 4, WAIT).await.expect("poll"),
        Poll::Empty
    ));
    // A body far beyond any real answer is refused, not held in memory.
    fake.inject(Endpoint::MessageQueue, Fault::HugeBody, 1);
    let e = q.poll(None, 4, WAIT).await.expect_err("huge body");
    assert!(matches!(e, ScaleSetError::TooLarge { .. }), "{e:?}");

    // Closing the session lets a new one open; deleting the scale set removes it.
    svc.delete_session(id, &session.session_id)
        .await
        .expect("close");
    svc.create_session(id, "airlock-test")
        .await
        .expect("reopen");
    svc.delete_scale_set(id).await.expect("delete");
    assert!(svc
        .scale_set(group.id, "airlock-untrusted")
        .await
        .expect("list")
        .is_none());
    let s = fake.state();
    assert_eq!(s.actions.acked.len(), 5, "{:?}", s.actions.acked);
    assert_eq!(
        s.jobs.iter().find(|j| j.id == 501).map(|j| j.fetches),
        Some(1)
    );
}
