//! The manager end to end with an in-process fake GitHub and a process-free launcher: the
//! webhook endpoint through the real router (no sockets), the queue, capacity, lifecycle,
//! reconciliation and the audit trail.

mod common;

use std::sync::Arc;
use std::time::Duration;

use airlock_audit::AuditLog;
use airlock_manager::manager::ManagerOptions;
use airlock_manager::state::{JobStatus, Store};
use airlock_manager::webhook::sign;
use airlock_manager::{router, AppState, Manager, Secret};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Harness {
    dir: tempfile::TempDir,
    gh: Arc<FakeGitHub>,
    launcher: Arc<FakeLauncher>,
    manager: Manager,
    app: axum::Router,
}

impl Harness {
    fn new(policy_text: &str, max_concurrency: u32, hold: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        Self::in_dir(
            dir,
            policy_text,
            max_concurrency,
            hold,
            Arc::new(FakeGitHub::default()),
        )
    }

    fn in_dir(
        dir: tempfile::TempDir,
        policy_text: &str,
        max_concurrency: u32,
        hold: Duration,
        gh: Arc<FakeGitHub>,
    ) -> Self {
        Self::build(
            dir,
            policy_text,
            max_concurrency,
            hold,
            gh,
            Duration::from_secs(600),
        )
    }

    fn build(
        dir: tempfile::TempDir,
        policy_text: &str,
        max_concurrency: u32,
        hold: Duration,
        gh: Arc<FakeGitHub>,
        pickup_timeout: Duration,
    ) -> Self {
        let launcher = FakeLauncher::new(hold);
        let store = Store::open(&dir.path().join("serve.db")).expect("db");
        let audit = AuditLog::open(&dir.path().join("audit")).expect("audit");
        let manager = Manager::new(
            store,
            gh.clone(),
            launcher.clone(),
            policy(policy_text),
            audit,
            ManagerOptions {
                runner_prefix: "airlock-".into(),
                max_concurrency,
                pickup_timeout,
                repository: None,
                completed_grace: Duration::from_millis(200),
                state_retention: Duration::from_secs(30 * 24 * 3600),
                scale_sets: Default::default(),
            },
        );
        let app = router(
            AppState {
                manager: manager.clone(),
                secret: Some(Arc::new(Secret::new(SECRET))),
            },
            64 * 1024,
        );
        Self {
            dir,
            gh,
            launcher,
            manager,
            app,
        }
    }

    async fn post(
        &self,
        event: &str,
        delivery: &str,
        body: &str,
        sig: Option<String>,
    ) -> (StatusCode, String) {
        let mut req = Request::post("/webhook")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("content-type", "application/json");
        if let Some(s) = sig {
            req = req.header("x-hub-signature-256", s);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let text = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&text).into_owned())
    }

    async fn deliver(&self, event: &str, delivery: &str, body: &str) -> (StatusCode, String) {
        self.post(
            event,
            delivery,
            body,
            Some(sign(SECRET.as_bytes(), body.as_bytes())),
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let text = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&text).into_owned())
    }

    /// Waits until no job is queued or active.
    async fn settle(&self) {
        for _ in 0..2000 {
            let st = self.manager.store();
            if st.queued().expect("q").is_empty()
                && st.active().expect("a").is_empty()
                && self.manager.running_tasks() == 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("jobs did not settle");
    }

    fn audit(&self) -> Vec<airlock_audit::Record> {
        airlock_audit::read_all(&self.dir.path().join("audit")).expect("audit")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_with_audit_trail() {
    let h = Harness::new(POLICY, 4, Duration::from_millis(20));
    assert_eq!(h.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    h.manager.start(Duration::from_secs(3600)).await;
    assert_eq!(h.get("/readyz").await.0, StatusCode::OK);
    assert_eq!(h.get("/healthz").await.0, StatusCode::OK);
    let body = payload(
        "queued",
        555,
        &["self-hosted", "airlock"],
        "octo-org/app",
        true,
    );
    let (st, _) = h.deliver("workflow_job", "d-1", &body).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    h.settle().await;
    // GitHub's side of the job: in_progress and completed are recorded.
    for (i, a) in ["in_progress", "completed"].iter().enumerate() {
        let b = payload(a, 555, &["self-hosted", "airlock"], "octo-org/app", true);
        assert_eq!(
            h.deliver("workflow_job", &format!("d-x{i}"), &b).await.0,
            StatusCode::ACCEPTED
        );
    }
    let jobs = h.manager.store().all().expect("jobs");
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(j.status, JobStatus::Done, "{j:?}");
    assert_eq!(j.group.as_deref(), Some("ci"));
    assert_eq!(j.exit_code, Some(0));
    assert_eq!(j.gh_action.as_deref(), Some("completed"));
    assert_eq!(j.runner_name.as_deref(), Some("airlock-555"));
    {
        let g = h.gh.s.lock().expect("lock");
        assert_eq!(g.jit_requests.len(), 1);
        let req = &g.jit_requests[0];
        assert_eq!(req.name, "airlock-555");
        assert_eq!(req.labels, vec!["self-hosted", "linux", "x64", "airlock"]);
        assert_eq!(req.runner_group_id, 1);
        assert!(g.runners.is_empty(), "runner deleted after the job");
        assert_eq!(g.deleted, vec![1001]);
        assert_eq!(g.tokens, vec!["ghs_octo-org/app_1"]);
        assert_eq!(g.revoked, g.tokens, "per-job token revoked");
    }
    assert_eq!(
        h.launcher.s.lock().expect("lock").tokens_seen,
        vec![Some("ghs_octo-org/app_1".to_owned())]
    );
    let trail: Vec<String> = h
        .audit()
        .into_iter()
        .filter(|r| r.job.as_deref() == Some("gh-555"))
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        trail,
        vec![
            "serve.job.provisioning",
            "serve.job.started",
            "serve.job.finished"
        ]
    );
    let fin = h
        .audit()
        .into_iter()
        .find(|r| r.kind == "serve.job.finished")
        .expect("finished");
    assert_eq!(fin.data["runner_deleted"], true);
    assert_eq!(fin.data["token_revoked"], true);
    assert_eq!(fin.data["sandbox"], "sbx-gh-555");
    // Neither secret reaches the audit log.
    let all = std::fs::read_to_string(h.dir.path().join("audit/audit.jsonl")).expect("log");
    assert!(
        !all.contains("jit-for-") && !all.contains("ghs_"),
        "secret in the audit log"
    );
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("airlock_serve_provisioning_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("airlock_serve_jobs_finished_total{group=\"ci\",state=\"done\"} 1"),
        "{metrics}"
    );
    for state in ["provisioning", "starting", "running"] {
        let line = format!("airlock_serve_sandboxes{{group=\"ci\",state=\"{state}\"}} 0");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused() {
    let h = Harness::new(POLICY, 4, Duration::from_millis(1));
    h.manager.start(Duration::from_secs(3600)).await;
    let body = payload("queued", 7, &["airlock"], "octo-org/app", true);
    // Missing and wrong signatures: 401, nothing recorded.
    assert_eq!(
        h.post("workflow_job", "d-a", &body, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let wrong = sign(b"not the secret", body.as_bytes());
    assert_eq!(
        h.post("workflow_job", "d-b", &body, Some(wrong)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A signature of another body.
    let other = sign(SECRET.as_bytes(), b"{}");
    assert_eq!(
        h.post("workflow_job", "d-c", &body, Some(other)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.manager.store().deliveries().expect("n"), 0);
    // Oversized: 413 (the limit is 64 KiB here).
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    assert_eq!(
        h.deliver("workflow_job", "d-d", &big).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Valid signature, not a workflow_job: 400.
    let (st, _) = h
        .deliver(
            "workflow_job",
            "d-e",
            r#"{"action":"queued","workflow_job":{"id":"seven"}}"#,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Another event: accepted and ignored.
    assert_eq!(h.deliver("push", "d-f", "{}").await.0, StatusCode::ACCEPTED);
    // The real one, then its redelivery (same GUID): provisioned once.
    assert_eq!(
        h.deliver("workflow_job", "d-g", &body).await.0,
        StatusCode::ACCEPTED
    );
    h.settle().await;
    let (st, text) = h.deliver("workflow_job", "d-g", &body).await;
    assert_eq!(
        (st, text.as_str()),
        (StatusCode::OK, "duplicate delivery\n")
    );
    h.settle().await;
    assert_eq!(h.launcher.s.lock().expect("lock").started, vec!["gh-7"]);
    assert_eq!(h.gh.s.lock().expect("lock").jit_requests.len(), 1);
    let (_, m) = h.get("/metrics").await;
    assert!(
        m.contains("airlock_serve_webhook_verification_failures_total 3"),
        "{m}"
    );
    // Every answer is counted by its outcome, the 413 of the body limit included.
    assert!(
        m.contains("airlock_serve_webhooks_total{outcome=\"too_large\"} 1"),
        "{m}"
    );
}

/// Ready means serve can reach GitHub with its credentials: with the runner listing refused
/// (a wrong App id, a revoked token), `/readyz` says 503 while `/healthz` stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_github_reachability() {
    let h = Harness::new(POLICY, 4, Duration::from_secs(3600));
    h.gh.s.lock().expect("lock").fail_list = true;
    h.manager.start(Duration::from_secs(3600)).await;
    assert_eq!(h.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.get("/healthz").await.0, StatusCode::OK);
    h.gh.s.lock().expect("lock").fail_list = false;
    h.manager.reconcile().await;
    assert_eq!(h.get("/readyz").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_job_is_audited() {
    let h = Harness::new(POLICY, 4, Duration::from_millis(1));
    h.manager.start(Duration::from_secs(3600)).await;
    // A public repository asking for the trusted group's label.
    let body = payload(
        "queued",
        9,
        &["self-hosted", "airlock"],
        "stranger/fork",
        false,
    );
    assert_eq!(
        h.deliver("workflow_job", "d-1", &body).await.0,
        StatusCode::ACCEPTED
    );
    h.settle().await;
    let j = &h.manager.store().all().expect("jobs")[0];
    assert_eq!(j.status, JobStatus::Refused);
    assert!(h.launcher.s.lock().expect("lock").started.is_empty());
    assert!(h.gh.s.lock().expect("lock").jit_requests.is_empty());
    // The refusal is committed before its record is appended: wait for the record.
    let mut rec = None;
    for _ in 0..500 {
        rec = h
            .audit()
            .into_iter()
            .find(|r| r.kind == "serve.job.refused");
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rec = rec.expect("refusal audited");
    let reasons = rec.data["reasons"].to_string();
    assert!(
        reasons.contains("stranger/fork is not in its repositories"),
        "{reasons}"
    );
    assert!(
        reasons.contains("airlock\\\" is not among its labels"),
        "{reasons}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_jobs_capacity_four_in_order() {
    let h = Harness::new(POLICY, 4, Duration::from_millis(20));
    // Half the jobs arrive before the dispatcher runs, half while it works.
    for i in 0..100u64 {
        if i == 50 {
            h.manager.start(Duration::from_secs(3600)).await;
        }
        let body = payload("queued", 10_000 + i, &["airlock"], "octo-org/app", true);
        let (st, _) = h.deliver("workflow_job", &format!("d-{i}"), &body).await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    h.settle().await;
    let l = h.launcher.s.lock().expect("lock");
    let want: Vec<String> = (0..100u64).map(|i| format!("gh-{}", 10_000 + i)).collect();
    // Capacity is granted strictly in arrival order...
    let granted: Vec<String> = h
        .manager
        .store()
        .grant_order()
        .expect("order")
        .iter()
        .map(|j| format!("gh-{}", j.gh_job_id))
        .collect();
    assert_eq!(granted, want, "capacity granted in order");
    // ...and each job runs exactly once; sandboxes of jobs granted together may start in
    // any order among themselves (their JIT registrations run concurrently), never more
    // than the capacity apart.
    let mut sorted = l.started.clone();
    sorted.sort();
    assert_eq!(sorted, want, "all ran, once each");
    for (pos, k) in l.started.iter().enumerate() {
        let idx = want.iter().position(|w| w == k).expect("known");
        assert!(
            pos.abs_diff(idx) < 4,
            "{k} started at {pos}, queued at {idx}"
        );
    }
    assert_eq!(l.max_running, 4, "capacity used and never exceeded");
    let jobs = h.manager.store().all().expect("jobs");
    assert!(jobs.iter().all(|j| j.status == JobStatus::Done));
    let g = h.gh.s.lock().expect("lock");
    assert_eq!(g.jit_requests.len(), 100);
    assert!(g.runners.is_empty(), "every runner deleted");
}

/// A webhook group with `prestart`: a primed sandbox is made before any job, the job's runner
/// starts in it, and another is made; never more sandboxes than `max_concurrency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_runners_start_in_primed_sandboxes() {
    let policy = POLICY.replace("max_runners = 2\n", "max_runners = 2\nprestart = 1\n");
    let h = Harness::new(&policy, 3, Duration::from_millis(30));
    h.manager.start(Duration::from_secs(3600)).await;
    let primed = |h: &Harness| h.launcher.primed.lock().expect("lock").get("pr").copied();
    for _ in 0..500 {
        if primed(&h) == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(primed(&h), Some(1), "a primed sandbox before any job");
    let body = payload("queued", 400, &["airlock-pr"], "someone/pub", false);
    h.deliver("workflow_job", "p-400", &body).await;
    h.settle().await;
    for _ in 0..500 {
        if primed(&h) == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(primed(&h), Some(1), "refilled");
    let l = h.launcher.s.lock().expect("lock");
    assert_eq!(
        l.took_primed,
        ["gh-400"],
        "the runner started in the primed sandbox"
    );
    assert!(l.max_with_primed <= 3, "{}", l.max_with_primed);
}

/// Primed sandboxes (another group's `prestart`) hold slots of the same host: a webhook job
/// that finds the host full of them gets a slot back and runs; never more sandboxes than
/// `max_concurrency` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_jobs_get_the_slots_primed_sandboxes_hold() {
    let h = Harness::new(POLICY, 2, Duration::from_millis(30));
    h.launcher
        .primed
        .lock()
        .expect("lock")
        .insert("elsewhere".into(), 2);
    for i in 0..3u64 {
        let body = payload("queued", 300 + i, &["airlock-pr"], "someone/pub", false);
        h.deliver("workflow_job", &format!("w-{i}"), &body).await;
    }
    h.manager.start(Duration::from_secs(3600)).await;
    h.settle().await;
    let l = h.launcher.s.lock().expect("lock");
    assert_eq!(l.started.len(), 3, "every webhook job ran");
    assert!(
        l.max_with_primed <= 2,
        "{} sandboxes at once with max_concurrency 2",
        l.max_with_primed
    );
    assert_eq!(
        h.launcher.primed.lock().expect("lock")["elsewhere"],
        0,
        "both primed sandboxes gave their slots back (pr may run 2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_group_limit_does_not_block_other_groups() {
    let h = Harness::new(POLICY, 10, Duration::from_millis(30));
    // Everything is queued before the dispatcher starts, so timing cannot reorder arrivals.
    for i in 0..6u64 {
        let body = payload("queued", 100 + i, &["airlock-pr"], "someone/pub", false);
        h.deliver("workflow_job", &format!("p-{i}"), &body).await;
    }
    for i in 0..3u64 {
        let body = payload("queued", 200 + i, &["airlock"], "octo-org/app", true);
        h.deliver("workflow_job", &format!("c-{i}"), &body).await;
    }
    h.manager.start(Duration::from_secs(3600)).await;
    h.settle().await;
    let l = h.launcher.s.lock().expect("lock");
    assert_eq!(l.max_by_group["pr"], 2, "pr's max_runners");
    assert_eq!(l.started.len(), 9);
    let granted: Vec<u64> = h
        .manager
        .store()
        .grant_order()
        .expect("order")
        .iter()
        .map(|j| j.gh_job_id)
        .collect();
    let pr: Vec<u64> = granted.iter().copied().filter(|k| *k < 200).collect();
    assert_eq!(
        pr,
        vec![100, 101, 102, 103, 104, 105],
        "FIFO within the group"
    );
    // The ci jobs did not wait for the six pr jobs.
    let first_ci = granted.iter().position(|k| *k == 200).expect("ci ran");
    assert_eq!(first_ci, 2, "ci waited behind pr: {granted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_after_crash_and_unauthorized_runner() {
    let dir = tempfile::tempdir().expect("tmp");
    let gh = Arc::new(FakeGitHub::default());
    // A serve that "crashed" with a job provisioned and its runner registered.
    {
        let store = Store::open(&dir.path().join("serve.db")).expect("db");
        let body = payload("queued", 77, &["airlock"], "octo-org/app", true);
        store
            .ingest(
                "d-77",
                "workflow_job",
                Some("queued"),
                Some(airlock_manager::state::NewJob {
                    gh_job_id: 77,
                    repo: "octo-org/app",
                    payload: &body,
                }),
            )
            .expect("ingest");
        store.provision(1, "ci", "airlock-77").expect("provision");
        store
            .runner_registered(1, 5001, "airlock-77")
            .expect("runner");
        store.starting(1).expect("starting");
        store.running(1).expect("running");
    }
    {
        let mut s = gh.s.lock().expect("lock");
        for (id, name) in [
            (5001u64, "airlock-77"),
            (5002, "airlock-stale"),
            (6000, "someones-runner"),
        ] {
            s.runners.insert(
                id,
                airlock_manager::RunnerInfo {
                    id,
                    name: name.into(),
                    labels: vec!["self-hosted".into()],
                    status: "online".into(),
                    busy: false,
                },
            );
        }
    }
    let h = Harness::in_dir(dir, POLICY, 4, Duration::from_millis(1), gh);
    let r = h.manager.start(Duration::from_secs(3600)).await;
    assert_eq!(r.lost_jobs, vec![1]);
    assert_eq!(r.runners_deleted, vec![5001, 5002]);
    assert_eq!(r.unauthorized_runners, vec![6000]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(h.launcher.s.lock().expect("lock").gc_calls, 1);
    {
        let g = h.gh.s.lock().expect("lock");
        assert!(
            g.runners.contains_key(&6000),
            "a runner airlock did not create is never deleted"
        );
        assert_eq!(g.runners.len(), 1);
    }
    let j = h.manager.store().job(1).expect("job");
    assert_eq!(j.status, JobStatus::Lost);
    // Its redelivery does not run it again.
    let body = payload("queued", 77, &["airlock"], "octo-org/app", true);
    h.deliver("workflow_job", "d-77", &body).await;
    h.deliver("workflow_job", "d-77-again", &body).await;
    h.settle().await;
    assert!(
        h.launcher.s.lock().expect("lock").started.is_empty(),
        "no job run twice"
    );
    let audit = h.audit();
    let alert = audit
        .iter()
        .find(|r| r.kind == "alert")
        .expect("alert record");
    assert_eq!(alert.data["detector"], "unauthorized-runner");
    assert_eq!(alert.data["runner_id"], 6000);
    assert!(audit.iter().any(|r| r.kind == "serve.reconcile.job_lost"));
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.kind == "serve.reconcile.runner_deleted")
            .count(),
        2
    );
    // A second pass alerts once only.
    let r2 = h.manager.reconcile().await;
    assert!(r2.unauthorized_runners.is_empty() && r2.runners_deleted.is_empty());
    let (_, m) = h.get("/metrics").await;
    assert!(
        m.contains("airlock_serve_alerts_total{kind=\"unauthorized-runner\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_error_fails_the_job_cleanly() {
    let h = Harness::new(POLICY, 4, Duration::from_millis(1));
    h.gh.s.lock().expect("lock").fail_jit = Some((1, 422));
    h.manager.start(Duration::from_secs(3600)).await;
    let body = payload("queued", 31, &["airlock"], "octo-org/app", true);
    h.deliver("workflow_job", "d-1", &body).await;
    h.settle().await;
    let j = h.manager.store().job(1).expect("job");
    assert_eq!(j.status, JobStatus::Failed);
    assert!(j.detail.as_deref().unwrap_or("").contains("422"), "{j:?}");
    assert!(h.launcher.s.lock().expect("lock").started.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_running_jobs_after_grace() {
    let h = Harness::new(POLICY, 4, Duration::from_secs(3600));
    h.manager.start(Duration::from_secs(3600)).await;
    let body = payload("queued", 41, &["airlock"], "octo-org/app", true);
    h.deliver("workflow_job", "d-1", &body).await;
    for _ in 0..200 {
        if h.manager.store().job(1).expect("job").status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = std::time::Instant::now();
    h.manager.shutdown(Duration::from_millis(200)).await;
    assert!(t.elapsed() >= Duration::from_millis(200), "grace honoured");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(h.launcher.s.lock().expect("lock").stopped, vec!["gh-41"]);
    let j = h.manager.store().job(1).expect("job");
    // Stopped before it finished: failed, and why (it used to say "done").
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(
        j.detail.as_deref(),
        Some("stopped by serve: shut down before the job finished")
    );
    assert!(h.gh.s.lock().expect("lock").runners.is_empty());
    // No new jobs after shutdown.
    assert_eq!(
        h.deliver(
            "workflow_job",
            "d-2",
            &payload("queued", 42, &["airlock"], "octo-org/app", true)
        )
        .await
        .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(h.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_job_is_torn_down_by_reconcile() {
    let text = POLICY.replace(
        "[groups.pr]",
        "[groups.ci.limits]\ntimeout = \"1s\"\n[groups.pr]",
    );
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::build(
        dir,
        &text,
        4,
        Duration::from_secs(3600),
        Arc::new(FakeGitHub::default()),
        Duration::ZERO,
    );
    h.manager.start(Duration::from_secs(3600)).await;
    let body = payload("queued", 51, &["airlock"], "octo-org/app", true);
    h.deliver("workflow_job", "d-1", &body).await;
    for _ in 0..200 {
        if h.manager.store().job(1).expect("job").status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = h.manager.reconcile().await;
    assert!(r.stuck_jobs.is_empty(), "not past its timeout yet");
    assert_eq!(
        h.manager.store().job(1).expect("job").status,
        JobStatus::Running
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = h.manager.reconcile().await;
    assert_eq!(r.stuck_jobs, vec![1]);
    // What the log says names GitHub's job id, not serve's row number.
    assert_eq!(r.stuck_github_jobs, vec![51]);
    assert!(r.to_string().contains("1 stuck job(s) [51]"), "{r}");
    h.settle().await;
    let j = h.manager.store().job(1).expect("job");
    assert_eq!(
        (j.status, j.detail.as_deref()),
        (
            JobStatus::Failed,
            Some("stopped by serve: past the group's timeout")
        )
    );
    assert_eq!(h.launcher.s.lock().expect("lock").stopped, vec!["gh-51"]);
    assert!(
        h.gh.s.lock().expect("lock").runners.is_empty(),
        "its runner deleted"
    );
    assert!(h
        .audit()
        .iter()
        .any(|r| r.kind == "serve.reconcile.job_stuck"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_on_github_stops_the_runner_and_cancels_a_waiting_job() {
    // Capacity 1: job 61 runs (and would run for an hour), job 62 waits behind it.
    let h = Harness::new(POLICY, 1, Duration::from_secs(3600));
    h.manager.start(Duration::from_secs(3600)).await;
    h.deliver(
        "workflow_job",
        "d-1",
        &payload("queued", 61, &["airlock"], "octo-org/app", true),
    )
    .await;
    h.deliver(
        "workflow_job",
        "d-2",
        &payload("queued", 62, &["airlock"], "octo-org/app", true),
    )
    .await;
    for _ in 0..500 {
        if h.manager.store().job(1).expect("job").status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.manager.store().job(1).expect("job").status,
        JobStatus::Running
    );
    // GitHub cancels 62 before any runner took it: it must never get one.
    let mut cancelled = serde_json::from_str::<serde_json::Value>(&payload(
        "completed",
        62,
        &["airlock"],
        "octo-org/app",
        true,
    ))
    .expect("json");
    cancelled["workflow_job"]["runner_name"] = serde_json::Value::Null;
    h.deliver("workflow_job", "d-3", &cancelled.to_string())
        .await;
    let j = h.manager.store().job(2).expect("job");
    assert_eq!(j.status, JobStatus::Refused);
    // 61 completes on GitHub, but its runner does not exit: serve stops it after the grace.
    h.deliver(
        "workflow_job",
        "d-4",
        &payload("completed", 61, &["airlock"], "octo-org/app", true),
    )
    .await;
    h.settle().await;
    assert_eq!(h.launcher.s.lock().expect("lock").stopped, vec!["gh-61"]);
    assert_eq!(
        h.manager.store().job(1).expect("job").status,
        JobStatus::Done
    );
    assert!(
        h.gh.s.lock().expect("lock").runners.is_empty(),
        "runner deleted"
    );
    let kinds: Vec<String> = h.audit().into_iter().map(|r| r.kind).collect();
    assert!(
        kinds.iter().any(|k| k == "serve.job.cancelled"),
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .any(|k| k == "serve.job.stopped_after_completed"),
        "{kinds:?}"
    );
    // Only one sandbox was ever started.
    assert_eq!(h.launcher.s.lock().expect("lock").started.len(), 1);
}

/// What a raw HTTP client sees when it sends an oversized webhook over a real socket (the
/// limit is 64 KiB here): a 413 it can read, whether it announced the body's length and waits
/// for `100 Continue`, announced it and sends it all before reading (curl, most HTTP
/// libraries), or streams it in chunks. A body far beyond any real delivery gets its
/// connection closed instead of being read to the end. Before, a client that sent its whole
/// body had the connection reset under it and lost the 413 (CI saw curl report `100`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_a_413_the_client_can_read() {
    use std::io::{Read, Write};

    let h = Harness::new(POLICY, 4, Duration::from_millis(1));
    h.manager.start(Duration::from_secs(3600)).await;
    // Loopback in this process's own namespace, on a port the kernel chose: nothing leaves.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = h.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    fn head(extra: &str) -> String {
        format!(
            "POST /webhook HTTP/1.1\r\nhost: airlock\r\nx-github-event: workflow_job\r\n\
             x-github-delivery: big\r\ncontent-type: application/json\r\n{extra}\r\n"
        )
    }
    /// Writes `head`, then `len` bytes of body in `chunk`-sized pieces (each wrapped by
    /// `wrap`), then `tail`; then reads the answer. Returns the bytes written and the answer.
    fn exchange(
        addr: std::net::SocketAddr,
        head: String,
        len: usize,
        wrap: fn(&[u8]) -> Vec<u8>,
        tail: &[u8],
    ) -> (usize, String) {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s.set_write_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s.write_all(head.as_bytes()).expect("head");
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < len {
            let n = chunk.len().min(len - sent);
            if s.write_all(&wrap(&chunk[..n])).is_err() {
                break;
            }
            sent += n;
        }
        let _ = s.write_all(tail);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        (sent, String::from_utf8_lossy(&answer).into_owned())
    }
    fn plain(b: &[u8]) -> Vec<u8> {
        b.to_vec()
    }
    fn chunked(b: &[u8]) -> Vec<u8> {
        let mut v = format!("{:x}\r\n", b.len()).into_bytes();
        v.extend_from_slice(b);
        v.extend_from_slice(b"\r\n");
        v
    }
    let big = 4 << 20;
    let cases = tokio::task::spawn_blocking(move || {
        [
            // Announced, then sent in full before reading.
            exchange(
                addr,
                head(&format!("content-length: {big}\r\n")),
                big,
                plain,
                b"",
            ),
            // Announced with `Expect: 100-continue`: nothing sent until told.
            exchange(
                addr,
                head(&format!(
                    "content-length: {big}\r\nexpect: 100-continue\r\n"
                )),
                0,
                plain,
                b"",
            ),
            // Not announced: streamed in chunks.
            exchange(
                addr,
                head("transfer-encoding: chunked\r\n"),
                big,
                chunked,
                b"0\r\n\r\n",
            ),
        ]
    })
    .await
    .expect("client");
    for (i, (sent, answer)) in cases.iter().enumerate() {
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "case {i}: sent {sent} bytes, got {answer:?}"
        );
        assert!(!answer.contains("100 Continue"), "case {i}: {answer:?}");
    }
    // A body announced at 1 GiB is read at most to the drain bound, then its connection is
    // closed: the sender is stopped long before its end.
    let (sent, _) = tokio::task::spawn_blocking(move || {
        exchange(
            addr,
            head("content-length: 1073741824\r\n"),
            1 << 30,
            plain,
            b"",
        )
    })
    .await
    .expect("client");
    assert!(
        sent < 256 << 20,
        "serve read {sent} bytes of a refused body"
    );
    // serve is unharmed, nothing was recorded, and every refusal was counted.
    assert_eq!(h.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(h.manager.store().deliveries().expect("n"), 0);
    let (_, m) = h.get("/metrics").await;
    assert!(
        m.contains("airlock_serve_webhooks_total{outcome=\"too_large\"} 4"),
        "{m}"
    );
    server.abort();
}

/// serve's listener bounds what its peers cost it: at most `max` connections are served at
/// once (the next waits in the kernel's backlog until one ends), a connection on which
/// nothing arrives for the idle time is closed (slowloris, idle keep-alive), and a webhook
/// body that does not arrive in time is answered 408. Loopback, kernel-chosen port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_bounds_connections_idle_peers_and_slow_bodies() {
    use airlock_manager::listener::BoundedListener;
    use std::io::{Read, Write};

    let h = Harness::new(POLICY, 4, Duration::from_millis(1));
    h.manager.start(Duration::from_secs(3600)).await;
    let app = airlock_manager::router_with(
        AppState {
            manager: h.manager.clone(),
            secret: Some(Arc::new(Secret::new(SECRET))),
        },
        64 * 1024,
        Duration::from_secs(1),
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let listener = BoundedListener::new(tcp, 2, Duration::from_secs(2));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let result = tokio::task::spawn_blocking(move || {
        let connect = || {
            let s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s
        };
        // Two silent peers take both places.
        let mut silent: Vec<_> = (0..2).map(|_| connect()).collect();
        std::thread::sleep(Duration::from_millis(200));
        // A third, with a whole request: not served while they hold the places.
        let mut third = connect();
        third
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: serve\r\nconnection: close\r\n\r\n")
            .expect("write");
        third
            .set_read_timeout(Some(Duration::from_millis(700)))
            .expect("timeout");
        let mut b = [0u8; 64];
        let early = third.read(&mut b);
        assert!(
            matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
            "served past the limit: {early:?}"
        );
        // The silent ones are closed after the idle time; then the third is answered.
        let t = std::time::Instant::now();
        for s in &mut silent {
            let mut b = [0u8; 1];
            let r = s.read(&mut b);
            assert!(matches!(r, Ok(0) | Err(_)), "a silent peer was kept: {r:?}");
        }
        let closed_after = t.elapsed();
        third
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = String::new();
        let _ = third.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        // A webhook body announced at 100 bytes of which 10 arrive (a trickle that stalls,
        // well within the idle time): 408 once the body's time is up. Nothing more is sent,
        // so the answer is never lost to a reset.
        let mut slow = connect();
        slow.write_all(
            b"POST /webhook HTTP/1.1\r\nhost: serve\r\nx-github-event: workflow_job\r\n\
              x-github-delivery: slow\r\ncontent-length: 100\r\n\r\nxxxxxxxxxx",
        )
        .expect("write");
        let t = std::time::Instant::now();
        let mut answer = Vec::new();
        let _ = slow.read_to_end(&mut answer);
        (closed_after, String::from_utf8_lossy(&answer).into_owned(), t.elapsed())
    })
    .await
    .expect("client");
    let (closed_after, slow_answer, slow_took) = result;
    assert!(closed_after < Duration::from_secs(8), "{closed_after:?}");
    assert!(slow_answer.starts_with("HTTP/1.1 408"), "{slow_answer:?}");
    assert!(slow_took < Duration::from_secs(8), "{slow_took:?}");
    let (_, m) = h.get("/metrics").await;
    assert!(
        m.contains("airlock_serve_webhooks_total{outcome=\"too_slow\"} 1"),
        "{m}"
    );
    assert_eq!(h.manager.store().deliveries().expect("n"), 0);
    server.abort();
}
