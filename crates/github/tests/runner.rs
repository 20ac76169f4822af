//! The fake runner binary and the job service: JIT config → runner fetches its one job →
//! runs it → reports; webhooks for the job's life, signed; the fake GitHub binary.

mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_github::fake::{FakeConfig, FakeGitHub, NewJob, WebhookTarget};
use airlock_github::webhook::{parse_event, verify_signature, Event, WorkflowJobAction};
use airlock_github::{JitConfigRequest, RunnerScope, Secret};
use axum::body::Bytes;
use axum::http::HeaderMap;
use common::*;

const RUNNER: &str = env!("CARGO_BIN_EXE_airlock-fake-runner");

async fn jit(fake: &FakeGitHub, name: &str, labels: &[&str]) -> Secret {
    app_client(fake)
        .generate_jit_config(
            &RunnerScope::org("octo-org"),
            &JitConfigRequest {
                name: name.into(),
                runner_group_id: 1,
                labels: labels.iter().map(|s| (*s).to_owned()).collect(),
                work_folder: None,
            },
        )
        .await
        .expect("jit")
        .encoded_jit_config
}

async fn run_runner(args: Vec<String>, envs: Vec<(String, String)>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(RUNNER)
            .args(args)
            .env_remove("ACTIONS_RUNNER_INPUT_JITCONFIG")
            .envs(envs)
            .output()
            .expect("run the fake runner")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_fetches_runs_and_completes_its_job() {
    let fake = fake(config()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("ran");
    fake.queue_job(NewJob {
        id: 7,
        labels: vec!["self-hosted".into(), "airlock".into()],
        script: format!("echo job-output > {}; exit 3", out.display()),
        repository: None,
    });
    let blob = jit(&fake, "airlock-7", &["self-hosted", "airlock", "linux"]).await;
    let output = run_runner(vec!["--jitconfig".into(), blob.expose().into()], vec![]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&out).expect("script ran"),
        "job-output\n"
    );
    let state = fake.state();
    let job = &state.jobs[0];
    assert_eq!(job.status, "completed");
    assert_eq!(job.exit_code, Some(3));
    assert_eq!(job.fetches, 1);
    assert_eq!(job.runner_name.as_deref(), Some("airlock-7"));
    // GitHub removes a JIT runner after its job.
    assert!(state.runners.is_empty());
    assert_eq!(state.finished_runners.len(), 1);

    // A second start with the same config cannot take another job.
    fake.queue_job(NewJob {
        id: 8,
        labels: vec!["self-hosted".into()],
        script: "true".into(),
        repository: None,
    });
    let again = run_runner(vec![format!("--jitconfig={}", blob.expose())], vec![]).await;
    assert_eq!(again.status.code(), Some(4));
    assert_eq!(fake.state().jobs[1].status, "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_reads_env_and_waits_for_matching_labels() {
    let fake = fake(config()).await;
    let blob = jit(&fake, "airlock-9", &["self-hosted", "gpu"]).await;
    // Not for this runner (labels): it waits, then gives up.
    fake.queue_job(NewJob {
        id: 1,
        labels: vec!["self-hosted".into(), "arm64".into()],
        script: "true".into(),
        repository: None,
    });
    let output = run_runner(
        vec![],
        vec![
            (
                "ACTIONS_RUNNER_INPUT_JITCONFIG".into(),
                blob.expose().into(),
            ),
            ("AIRLOCK_FAKE_RUNNER_WAIT_SECS".into(), "1".into()),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(fake.state().jobs[0].status, "queued");

    // A job it matches, queued while it polls.
    let fake_job = NewJob {
        id: 2,
        labels: vec!["gpu".into()],
        script: "exit 0".into(),
        repository: None,
    };
    let env = vec![(
        "ACTIONS_RUNNER_INPUT_JITCONFIG".to_owned(),
        blob.expose().to_owned(),
    )];
    let handle = tokio::spawn(run_runner(vec![], env));
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.queue_job(fake_job);
    let output = handle.await.expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let state = fake.state();
    assert_eq!(state.jobs[1].status, "completed");
    assert_eq!(state.jobs[1].exit_code, Some(0));
    assert_eq!(state.jobs[0].status, "queued");

    let bad = run_runner(vec!["--jitconfig".into(), "bm90IGpzb24=".into()], vec![]).await;
    assert_eq!(bad.status.code(), Some(2));
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_follow_the_job_signed_and_in_order() {
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().expect("lock").push((headers, body));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let secret = b"test webhook secret".to_vec();
    let fake = fake(FakeConfig {
        webhook: Some(WebhookTarget {
            url: format!("http://{hook_addr}/webhook"),
            secret: secret.clone(),
        }),
        ..config()
    })
    .await;
    fake.queue_job(NewJob {
        id: 55,
        labels: vec!["self-hosted".into()],
        script: "exit 1".into(),
        repository: Some("octo-org/app".into()),
    });
    let blob = jit(&fake, "airlock-55", &["self-hosted"]).await;
    let output = run_runner(vec!["--jitconfig".into(), blob.expose().into()], vec![]).await;
    assert!(output.status.success());

    let start = Instant::now();
    while received.lock().expect("lock").len() < 3 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 3);
    let mut actions = Vec::new();
    let mut ids = Vec::new();
    for (headers, body) in &got {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        verify_signature(&secret, body, h("x-hub-signature-256").as_deref()).expect("signed");
        assert!(verify_signature(b"wrong", body, h("x-hub-signature-256").as_deref()).is_err());
        ids.push(h("x-github-delivery").expect("delivery id"));
        // The fake's payloads satisfy GitHub's schema for their action.
        let value: serde_json::Value = serde_json::from_slice(body).expect("json");
        let action = value["action"].as_str().expect("action");
        let errors: Vec<String> = validator(action)
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{action}: {errors:?}");
        match parse_event(&h("x-github-event").expect("event"), body).expect("parses") {
            Event::WorkflowJob(ev) => {
                assert_eq!(ev.workflow_job.id, 55);
                assert_eq!(ev.repository.full_name, "octo-org/app");
                assert_eq!(ev.installation.as_ref().map(|i| i.id), Some(INSTALLATION));
                actions.push(ev.action);
                if ev.action == WorkflowJobAction::Completed {
                    assert_eq!(
                        ev.workflow_job.conclusion,
                        Some(airlock_github::webhook::Conclusion::Failure)
                    );
                    assert_eq!(ev.workflow_job.runner_name.as_deref(), Some("airlock-55"));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        actions,
        [
            WorkflowJobAction::Queued,
            WorkflowJobAction::InProgress,
            WorkflowJobAction::Completed
        ]
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct delivery ids");
    let deliveries = fake.state().deliveries;
    assert!(deliveries.iter().all(|d| d.status == Some(202)));

    // Redelivery: same delivery id, same body.
    assert!(fake.redeliver(&deliveries[0].id));
    assert!(!fake.redeliver("no-such-delivery"));
    let start = Instant::now();
    while received.lock().expect("lock").len() < 4 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].1, got[0].1, "same body");
    assert_eq!(
        got[3].0.get("x-github-delivery"),
        got[0].0.get("x-github-delivery")
    );
    assert_eq!(fake.state().deliveries.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_github_binary_serves_and_takes_faults() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock-fake-github"))
        .args(["--listen", "127.0.0.1:0", "--pat", PAT])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the fake");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .expect("join")
    .expect("read");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("banner")
        .to_owned();

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url}/_fake/faults"))
        .json(&serde_json::json!({"endpoint": "list_runner_groups", "fault": {"kind": "not_found"}, "times": 1}))
        .send()
        .await
        .expect("fault");
    assert_eq!(r.status().as_u16(), 204);
    let client = client_with(
        &url,
        airlock_github::Credentials::Token(Secret::new(PAT)),
        fast_retry(),
    );
    let err = client
        .list_runner_groups("o")
        .await
        .expect_err("injected 404");
    assert_eq!(err.status(), Some(404));
    assert_eq!(
        client.list_runner_groups("o").await.expect("then ok").len(),
        1
    );
    let state: serde_json::Value = http
        .get(format!("{url}/_fake/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["calls"]["list_runner_groups"], 2);
    child.kill().expect("kill the fake we started");
    let _ = child.wait();
}

/// Measurement, not a check: JIT config generated → fake runner started → job fetched, run
/// and reported, over loopback. `cargo test -p airlock-github --test runner -- --ignored
/// --nocapture measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_jit_to_completion() {
    let fake = fake(config()).await;
    let client = app_client(&fake);
    let mut samples = Vec::new();
    for i in 0..30u64 {
        fake.queue_job(NewJob {
            id: i,
            labels: vec!["m".into()],
            script: "true".into(),
            repository: None,
        });
        let start = Instant::now();
        let blob = client
            .generate_jit_config(
                &RunnerScope::org("octo-org"),
                &JitConfigRequest {
                    name: format!("m-{i}"),
                    runner_group_id: 1,
                    labels: vec!["m".into()],
                    work_folder: None,
                },
            )
            .await
            .expect("jit")
            .encoded_jit_config;
        let jit_done = start.elapsed();
        let out = run_runner(vec!["--jitconfig".into(), blob.expose().into()], vec![]).await;
        assert!(out.status.success());
        samples.push((jit_done, start.elapsed()));
    }
    let mut jit: Vec<_> = samples.iter().map(|s| s.0).collect();
    let mut total: Vec<_> = samples.iter().map(|s| s.1).collect();
    jit.sort();
    total.sort();
    println!(
        "generate-jitconfig median {:?} p95 {:?}; JIT → job completed median {:?} p95 {:?} (n={})",
        jit[jit.len() / 2],
        jit[jit.len() * 95 / 100],
        total[total.len() / 2],
        total[total.len() * 95 / 100],
        total.len()
    );
    assert!(fake
        .state()
        .jobs
        .iter()
        .all(|j| j.status == "completed" && j.fetches == 1));
}

/// A person trying the fake runner by hand gets its usage, not an error about a missing
/// config.
#[test]
fn the_fake_runner_explains_itself() {
    let o = std::process::Command::new(RUNNER)
        .arg("--help")
        .output()
        .expect("run");
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Usage: airlock-fake-runner"), "{out}");
    assert!(out.contains("ACTIONS_RUNNER_INPUT_JITCONFIG"), "{out}");
}
