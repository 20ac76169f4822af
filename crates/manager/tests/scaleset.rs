//! serve's scale-set mode against the fake GitHub's Actions service (real HTTP on loopback,
//! the real protocol client and REST client), with a launcher that stands in for a sandbox:
//! it runs the fake runner's protocol in-process (fetch exactly its one job with its JIT
//! config, "run" it, report it). Covers: the scale set created from the policy; 50 jobs in
//! bursts, each run exactly once by a runner that fetched exactly its job; cancellations and
//! reassignment; a second serve getting 409 and saying so; 401 mid-poll and 5xx storms; a
//! crash (the runtime dropped, like kill -9) at each step of a job's life, then a restart that
//! reconciles; warm runners hiding a 3 s runner start.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_audit::AuditLog;
use airlock_github::fake::{Endpoint, FakeConfig, FakeGitHub, Fault, JitPayload, NewJob};
use airlock_manager::config::{GitHubConfig, Level, SecretSource};
use airlock_manager::launcher::{LaunchError, LaunchSpec, Launcher, RunExit};
use airlock_manager::manager::ManagerOptions;
use airlock_manager::state::Store;
use airlock_manager::{Manager, RestGitHub, ScaleSetOptions};
use async_trait::async_trait;
use base64::Engine as _;
use tokio::sync::{oneshot, watch};

const PAT: &str = "ghp_scaleSetTestToken0123456789abcdef";
const PAT_ENV: &str = "AIRLOCK_SCALESET_TEST_PAT";
const SET: &str = "airlock-ci";
const DEADLINE: Duration = Duration::from_secs(60);

/// Stands in for `airlock run` of the fake runner: the sandbox is "up" at once, the runner
/// then spends `start` starting, asks the fake for its job with its JIT identity, holds it for
/// the number of milliseconds its script names (`sleep:N`), and reports exit 0.
struct RunnerLauncher {
    start: Duration,
    http: reqwest::Client,
    /// `(runner name, job id)` of every job a runner fetched.
    fetched: Mutex<Vec<(String, u64)>>,
    /// When each job was fetched.
    fetched_at: Mutex<BTreeMap<u64, Instant>>,
    launched: Mutex<Vec<String>>,
    /// Primed sandboxes per group (`Launcher::prime`), those runners took, those retired,
    /// sandboxes running now, and the most sandboxes (running + primed) seen at once.
    primed: Mutex<BTreeMap<String, u32>>,
    took_primed: Mutex<Vec<String>>,
    retired_primed: Mutex<u32>,
    running: Mutex<u32>,
    peak: Mutex<u32>,
}

impl RunnerLauncher {
    /// Notes how many sandboxes exist now (running + primed).
    fn note_peak(&self) {
        let total = *self.running.lock().expect("lock")
            + self.primed.lock().expect("lock").values().sum::<u32>();
        let mut p = self.peak.lock().expect("lock");
        *p = (*p).max(total);
    }

    fn new(start: Duration) -> Arc<Self> {
        Arc::new(Self {
            start,
            http: reqwest::Client::new(),
            fetched: Mutex::new(Vec::new()),
            fetched_at: Mutex::new(BTreeMap::new()),
            launched: Mutex::new(Vec::new()),
            primed: Mutex::new(BTreeMap::new()),
            took_primed: Mutex::new(Vec::new()),
            retired_primed: Mutex::new(0),
            running: Mutex::new(0),
            peak: Mutex::new(0),
        })
    }
}

fn stopped() -> Result<RunExit, LaunchError> {
    Ok(RunExit {
        code: 143,
        stopped: true,
        sandbox_id: None,
        failure: None,
    })
}

#[async_trait]
impl Launcher for RunnerLauncher {
    async fn run(
        &self,
        spec: LaunchSpec,
        started: oneshot::Sender<()>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunExit, LaunchError> {
        self.launched.lock().expect("lock").push(spec.key.clone());
        {
            let mut primed = self.primed.lock().expect("lock");
            if let Some(n) = primed.get_mut(&spec.group).filter(|n| **n > 0) {
                *n -= 1;
                self.took_primed
                    .lock()
                    .expect("lock")
                    .push(spec.key.clone());
            }
        }
        *self.running.lock().expect("lock") += 1;
        self.note_peak();
        let r = self.run_runner(spec, started, stop).await;
        *self.running.lock().expect("lock") -= 1;
        r
    }

    async fn gc(&self) -> Result<Vec<String>, LaunchError> {
        Ok(Vec::new())
    }

    fn prime(&self, template: LaunchSpec) -> bool {
        *self
            .primed
            .lock()
            .expect("lock")
            .entry(template.group)
            .or_default() += 1;
        self.note_peak();
        true
    }

    fn primed(&self) -> BTreeMap<String, u32> {
        let mut p = self.primed.lock().expect("lock").clone();
        p.retain(|_, n| *n > 0);
        p
    }

    async fn retire_primed(&self, keep: Option<&str>, n: usize) -> usize {
        let mut done = 0;
        let mut primed = self.primed.lock().expect("lock");
        for (g, c) in primed.iter_mut() {
            while keep != Some(g.as_str()) && *c > 0 && done < n {
                *c -= 1;
                done += 1;
            }
        }
        *self.retired_primed.lock().expect("lock") += u32::try_from(done).unwrap_or(0);
        done
    }
}

impl RunnerLauncher {
    async fn run_runner(
        &self,
        spec: LaunchSpec,
        started: oneshot::Sender<()>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunExit, LaunchError> {
        let p: JitPayload = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(spec.jit_config.expose())
                .expect("base64 JIT config"),
        )
        .expect("the fake's JIT payload");
        assert_eq!(p.name, spec.key, "one JIT registration per sandbox");
        let _ = started.send(());
        tokio::select! {
            _ = tokio::time::sleep(self.start) => {}
            _ = stop.changed() => return stopped(),
        }
        let auth = format!("Runner {}", p.runner_id);
        let job: serde_json::Value = loop {
            if *stop.borrow() {
                return stopped();
            }
            let r = self
                .http
                .get(format!("{}/_fake/runner/job", p.url))
                .header("authorization", &auth)
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => break r.json().await.expect("job"),
                Ok(r) if r.status() == 401 => {
                    // Deleted (retired) while waiting.
                    return Ok(RunExit {
                        code: 4,
                        stopped: false,
                        sandbox_id: None,
                        failure: None,
                    });
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.changed() => return stopped(),
            }
        };
        let id = job["job_id"].as_u64().expect("job id");
        self.fetched
            .lock()
            .expect("lock")
            .push((spec.key.clone(), id));
        self.fetched_at
            .lock()
            .expect("lock")
            .insert(id, Instant::now());
        let hold = job["script"]
            .as_str()
            .and_then(|s| s.strip_prefix("sleep:"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(hold)) => {}
            _ = stop.changed() => return stopped(),
        }
        self.http
            .post(format!("{}/_fake/runner/complete", p.url))
            .header("authorization", &auth)
            .json(&serde_json::json!({"job_id": id, "exit_code": 0}))
            .send()
            .await
            .expect("report");
        Ok(RunExit {
            code: 0,
            stopped: false,
            sandbox_id: Some(format!("sb-{}", spec.key)),
            failure: None,
        })
    }
}

fn policy(min_idle: u32, max_runners: u32) -> airlock_policy::Policy {
    let text = format!(
        r#"version = 1
[groups.ci]
repositories = ["octo-org/*"]
max_runners = {max_runners}
runner = ["/opt/runner/run"]
scale_set = {{ name = "{SET}", labels = ["gpu-free"], min_idle = {min_idle}, idle_retire = "1s" }}
"#
    );
    airlock_policy::parse(&text, std::path::Path::new("policy.toml")).expect("policy")
}

async fn start_fake(session_expiry: Option<Duration>) -> FakeGitHub {
    start_fake_with(session_expiry, false).await
}

async fn start_fake_with(session_expiry: Option<Duration>, ghes: bool) -> FakeGitHub {
    start_fake_config(FakeConfig {
        session_expiry,
        ghes,
        ..FakeConfig::default()
    })
    .await
}

/// The fake with `base`'s settings, the test's PAT and a short long poll.
async fn start_fake_config(base: FakeConfig) -> FakeGitHub {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    FakeGitHub::start(
        "127.0.0.1:0".parse().expect("addr"),
        FakeConfig {
            personal_tokens: vec![PAT.into()],
            poll_timeout: Duration::from_millis(300),
            ..base
        },
    )
    .await
    .expect("fake")
}

struct Serve {
    manager: Manager,
    launcher: Arc<RunnerLauncher>,
}

fn serve(
    fake: &FakeGitHub,
    dir: &std::path::Path,
    policy: airlock_policy::Policy,
    start: Duration,
) -> Serve {
    serve_for(fake, dir, policy, start, None)
}

/// serve at organisation level, or for repository `octo-org/<repo>`.
fn serve_for(
    fake: &FakeGitHub,
    dir: &std::path::Path,
    policy: airlock_policy::Policy,
    start: Duration,
    repo: Option<&str>,
) -> Serve {
    serve_with_capacity(fake, dir, policy, start, repo, 4)
}

fn serve_with_capacity(
    fake: &FakeGitHub,
    dir: &std::path::Path,
    policy: airlock_policy::Policy,
    start: Duration,
    repo: Option<&str>,
    max_concurrency: u32,
) -> Serve {
    std::env::set_var(PAT_ENV, PAT);
    let config = GitHubConfig {
        api_url: fake.url(),
        level: if repo.is_some() {
            Level::Repo
        } else {
            Level::Org
        },
        org: "octo-org".into(),
        repo: repo.map(str::to_owned),
        app_id: None,
        installation_id: None,
        private_key: None,
        token: Some(SecretSource::Env(PAT_ENV.into())),
        config_url: None,
    };
    let registration_url = config.registration_url();
    let gh = RestGitHub::from_config(&config).expect("github");
    let launcher = RunnerLauncher::new(start);
    let manager = Manager::new(
        Store::open(&dir.join("serve.db")).expect("db"),
        Arc::new(gh),
        launcher.clone(),
        policy,
        AuditLog::open(&dir.join("audit")).expect("audit"),
        ManagerOptions {
            runner_prefix: "airlock-".into(),
            max_concurrency,
            pickup_timeout: Duration::from_secs(600),
            repository: None,
            completed_grace: Duration::from_secs(2),
            state_retention: Duration::from_secs(30 * 24 * 3600),
            scale_sets: ScaleSetOptions {
                api_url: fake.url(),
                registration_url,
                poll_timeout: Duration::from_secs(5),
                conflict_retry: Duration::from_millis(200),
                max_backoff: Duration::from_millis(300),
                request_timeout: Duration::from_secs(2),
                ..Default::default()
            },
        },
    );
    Serve { manager, launcher }
}

/// Waits until no runner task is left, no runner is registered at the fake and every
/// message was read (a JobStarted read after its runner ended writes the job's end).
async fn settle(fake: &FakeGitHub, manager: &Manager) {
    wait_for("runners gone, messages read", || {
        let st = fake.state();
        manager.running_tasks() == 0 && st.runners.is_empty() && st.actions.messages.is_empty()
    })
    .await;
}

/// Whether every job of `ids` has a completed entry at the fake.
fn all_completed(fake: &FakeGitHub, ids: &[u64]) -> bool {
    let st = fake.state();
    ids.iter().all(|id| {
        st.jobs
            .iter()
            .any(|j| j.id == *id && j.status == "completed")
    })
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn queue(fake: &FakeGitHub, id: u64, script: &str) {
    fake.queue_job(NewJob {
        id,
        labels: vec![SET.into()],
        script: script.into(),
        repository: None,
    });
}

fn audit_kinds(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("audit")).expect("audit dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            for l in std::fs::read_to_string(&p).expect("read").lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Every job ran exactly once, by a runner that fetched only it; no runner of the scale set
/// is left registered at the fake; every message was acknowledged.
fn assert_accounted(fake: &FakeGitHub, launchers: &[&RunnerLauncher], ids: &[u64]) {
    let s = fake.state();
    for id in ids {
        let runs: Vec<_> = s.jobs.iter().filter(|j| j.id == *id).collect();
        assert!(
            runs.iter().any(|j| j.status == "completed"),
            "job {id} not completed: {runs:?}"
        );
        let fetches: u32 = runs.iter().map(|j| j.fetches).sum();
        assert_eq!(fetches, 1, "job {id} fetched {fetches} times");
    }
    let mut by_runner: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for l in launchers {
        for (r, j) in l.fetched.lock().expect("lock").iter() {
            by_runner.entry(r.clone()).or_default().push(*j);
        }
    }
    for (r, jobs) in &by_runner {
        assert_eq!(jobs.len(), 1, "runner {r} took {jobs:?}");
    }
    assert!(
        s.runners.is_empty(),
        "runners left registered at GitHub: {:?}",
        s.runners
    );
    assert!(
        s.actions.messages.is_empty(),
        "messages never acknowledged: {:?}",
        s.actions.messages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_jobs_in_bursts_run_exactly_once_and_cancellations_are_accounted() {
    let fake = start_fake(None).await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = serve(&fake, dir.path(), policy(0, 4), Duration::ZERO);
    s.manager.start(Duration::from_secs(3600)).await;
    wait_for("the scale set and its session", || s.manager.ready()).await;
    let st = fake.state();
    let set = st
        .actions
        .scale_sets
        .iter()
        .find(|x| x.name == SET)
        .expect("scale set created from the policy");
    assert_eq!(set.labels, [SET, "gpu-free"]);
    assert_eq!(set.runner_group_id, 1);

    let ids: Vec<u64> = (1..=50).collect();
    for burst in ids.chunks(10) {
        for id in burst {
            queue(&fake, *id, "sleep:30");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_for("50 jobs completed", || all_completed(&fake, &ids)).await;
    settle(&fake, &s.manager).await;
    assert_accounted(&fake, &[&s.launcher], &ids);
    let jobs = s.manager.store().ss_jobs(SET).expect("jobs");
    assert_eq!(jobs.len(), 50);
    assert!(
        jobs.iter()
            .all(|j| j.1 == "completed" && j.3.as_deref() == Some("succeeded")),
        "{jobs:?}"
    );
    // Capacity held: never more than max_runners runners at once (each fetched one job).
    assert_eq!(s.launcher.fetched.lock().expect("lock").len(), 50);

    // Cancelled before a runner took it, then assigned again: one run, two assignments.
    queue(&fake, 900, "sleep:1500");
    queue(&fake, 901, "sleep:1500");
    queue(&fake, 902, "sleep:1500");
    queue(&fake, 903, "sleep:1500");
    queue(&fake, 904, "sleep:0");
    wait_for("four jobs running", || {
        fake.state()
            .jobs
            .iter()
            .filter(|j| j.status == "in_progress")
            .count()
            == 4
    })
    .await;
    assert!(
        fake.cancel_job(904),
        "904 waits for capacity and can be cancelled"
    );
    queue(&fake, 904, "sleep:0");
    wait_for("all done", || {
        let s = fake.state();
        (900..=904).all(|id| s.jobs.iter().any(|j| j.id == id && j.status == "completed"))
            && s.jobs.iter().all(|j| j.status == "completed")
    })
    .await;
    settle(&fake, &s.manager).await;
    let jobs = s.manager.store().ss_jobs(SET).expect("jobs");
    let j904 = jobs.iter().find(|j| j.0 == "904").expect("904");
    assert_eq!(j904.4, 2, "assigned twice: {j904:?}");
    assert_eq!(j904.1, "completed");
    let a = audit_kinds(dir.path());
    assert!(a
        .iter()
        .any(|r| r["kind"] == "serve.job.cancelled" && r["data"]["github_job_id"] == "904"));
    let finished: Vec<_> = a
        .iter()
        .filter(|r| r["kind"] == "serve.job.finished")
        .collect();
    let ids: Vec<String> = finished
        .iter()
        .filter_map(|r| r["data"]["github_job_id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<u64> = (1..=50)
        .chain(900..=904)
        .filter(|i| !ids.contains(&i.to_string()))
        .collect();
    assert_eq!(
        finished.len(),
        55,
        "one finished record per job run; missing {missing:?}; runners: {:?}",
        s.manager.store().ss_runners().expect("runners")
    );
    assert!(finished
        .iter()
        .all(|r| r["data"]["source"] == "scaleset:airlock-ci" && r["data"]["status"] == "done"));
    let m = s.manager.metrics().encode();
    for want in [
        "airlock_serve_scaleset_messages_total{scale_set=\"airlock-ci\"}",
        "airlock_serve_scaleset_runner_start_seconds_count",
        "airlock_serve_jobs_finished_total{group=\"ci\",state=\"done\"} 55",
        "airlock_serve_scaleset_runners{scale_set=\"airlock-ci\",state=\"busy\"}",
    ] {
        assert!(m.contains(want), "{want} not in the metrics:\n{m}");
    }
    s.manager.shutdown(Duration::from_secs(5)).await;
    assert!(
        fake.state().actions.sessions.is_empty(),
        "the session is closed at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_serve_gets_409_and_says_so_until_the_first_closes_its_session() {
    let fake = start_fake(None).await;
    let d1 = tempfile::tempdir().expect("tmp");
    let d2 = tempfile::tempdir().expect("tmp");
    let a = serve(&fake, d1.path(), policy(0, 2), Duration::ZERO);
    a.manager.start(Duration::from_secs(3600)).await;
    wait_for("first session", || a.manager.ready()).await;
    let b = serve(&fake, d2.path(), policy(0, 2), Duration::ZERO);
    b.manager.start(Duration::from_secs(3600)).await;
    wait_for("the conflict recorded", || {
        audit_kinds(d2.path())
            .iter()
            .filter(|r| r["kind"] == "serve.scaleset.session_conflict")
            .count()
            >= 2
    })
    .await;
    assert!(!b.manager.ready(), "not ready without a session");
    a.manager.shutdown(Duration::from_secs(5)).await;
    wait_for("the second serve takes over", || b.manager.ready()).await;
    queue(&fake, 7, "sleep:0");
    wait_for("job 7 done", || {
        fake.state()
            .jobs
            .iter()
            .any(|j| j.id == 7 && j.status == "completed")
    })
    .await;
    assert_eq!(b.launcher.fetched.lock().expect("lock").len(), 1);
    b.manager.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_queue_tokens_5xx_storms_resets_and_stalls_lose_nothing() {
    let fake = start_fake(None).await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = serve(&fake, dir.path(), policy(0, 4), Duration::ZERO);
    s.manager.start(Duration::from_secs(3600)).await;
    wait_for("session", || s.manager.ready()).await;
    fake.expire_queue_tokens();
    fake.inject(Endpoint::MessageQueue, Fault::ServerError, 6);
    fake.inject(Endpoint::AcknowledgeMessage, Fault::ServerError, 4);
    fake.inject(Endpoint::ScaleSetJitConfig, Fault::ServerError, 3);
    fake.inject(Endpoint::Sessions, Fault::ServerError, 1);
    // Connections reset mid-response and calls that never complete.
    fake.inject(Endpoint::MessageQueue, Fault::Abort, 2);
    fake.inject(Endpoint::AcknowledgeMessage, Fault::Abort, 1);
    fake.inject(Endpoint::ScaleSetJitConfig, Fault::Stall, 1);
    fake.inject(Endpoint::AcknowledgeMessage, Fault::Stall, 1);
    let ids: Vec<u64> = (100..120).collect();
    for id in &ids {
        queue(&fake, *id, "sleep:20");
    }
    wait_for("20 jobs completed", || all_completed(&fake, &ids)).await;
    settle(&fake, &s.manager).await;
    wait_for("every message read", || {
        fake.state().actions.messages.is_empty()
    })
    .await;
    assert_accounted(&fake, &[&s.launcher], &ids);
    // Messages whose acknowledgement failed came again and were recognised by their id.
    let st = fake.state();
    let acked: HashSet<i64> = st.actions.acked.iter().copied().collect();
    assert_eq!(
        s.manager.store().ss_messages(SET).expect("n") as usize,
        acked.len(),
        "each message recorded once"
    );
    s.manager.shutdown(Duration::from_secs(5)).await;
}

/// Runs `f` on a runtime of its own, then drops the runtime: every task of that serve stops
/// where it is, nothing is shut down (kill -9, in-process). The fake and the database stay.
fn crash_after(
    fake_url_dir: (&FakeGitHub, &std::path::Path),
    policy: airlock_policy::Policy,
    until: impl Fn(&FakeGitHub, &Store) -> bool,
    what: &str,
) {
    let (fake, dir) = fake_url_dir;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt.block_on(async {
        let s = serve(fake, dir, policy, Duration::ZERO);
        s.manager.start(Duration::from_secs(3600)).await;
        s
    });
    let t0 = Instant::now();
    while !until(fake, s.manager.store()) {
        assert!(t0.elapsed() < DEADLINE, "never reached: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_at_each_step_then_restart_loses_nothing_and_runs_nothing_twice() {
    let fake = start_fake(Some(Duration::from_millis(800))).await;
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().to_owned();
    let fk = &fake;
    // 1. While provisioning: the JIT config keeps failing, serve dies with the runner in its
    //    database but no sandbox.
    fake.inject(Endpoint::ScaleSetJitConfig, Fault::ServerError, 1000);
    queue(&fake, 1, "sleep:0");
    tokio::task::block_in_place(|| {
        crash_after(
            (fk, &p),
            policy(0, 2),
            |_, st| {
                st.ss_alive(None)
                    .map(|a| a.iter().any(|r| r.status == "provisioning"))
                    .unwrap_or(false)
            },
            "a runner provisioning",
        )
    });
    // 2. Before the acknowledgement: committed, never acknowledged (delivered again later).
    fake.inject(Endpoint::AcknowledgeMessage, Fault::ServerError, 1000);
    queue(&fake, 2, "sleep:0");
    let acks = fake.state().calls_to(Endpoint::AcknowledgeMessage);
    tokio::task::block_in_place(|| {
        crash_after(
            (fk, &p),
            policy(0, 2),
            |f, _| f.state().calls_to(Endpoint::AcknowledgeMessage) >= acks + 2,
            "an acknowledgement failing",
        )
    });
    fake.clear_faults();
    // 3. While running: jobs 1 and 2 run and end, job 3 holds its runner; serve dies under it.
    queue(&fake, 3, "sleep:600000");
    tokio::task::block_in_place(|| {
        crash_after(
            (fk, &p),
            policy(0, 2),
            |f, _| {
                f.state()
                    .jobs
                    .iter()
                    .any(|j| j.id == 3 && j.status == "in_progress")
            },
            "job 3 running",
        )
    });
    let before = Store::open(&p.join("serve.db")).expect("db");
    let alive_at_crash = before.ss_alive(None).expect("alive");
    // The runner holding job 3 (serve may not have read its JobStarted yet: idle or busy).
    assert!(
        !alive_at_crash.is_empty(),
        "a runner was active at the crash: {alive_at_crash:?}"
    );
    drop(before);
    let s = serve(&fake, &p, policy(0, 2), Duration::ZERO);
    let report = s.manager.start(Duration::from_secs(3600)).await;
    let lost: HashSet<String> = report.lost_runners.iter().cloned().collect();
    for r in &alive_at_crash {
        assert!(
            lost.contains(&r.name),
            "{} not reconciled: {report}",
            r.name
        );
    }
    wait_for("jobs 1 and 2 done", || all_completed(&fake, &[1, 2])).await;
    wait_for("nothing of the dead serve left registered", || {
        let st = fake.state();
        st.runners
            .iter()
            .all(|r| !alive_at_crash.iter().any(|a| a.name == r.name))
            && s.manager.running_tasks() == 0
    })
    .await;
    wait_for("every message read", || {
        fake.state().actions.messages.is_empty()
    })
    .await;
    let st = fake.state();
    for id in [1u64, 2] {
        let fetches: u32 = st
            .jobs
            .iter()
            .filter(|j| j.id == id)
            .map(|j| j.fetches)
            .sum();
        assert_eq!(fetches, 1, "job {id} run {fetches} times");
    }
    // Job 3 was running when serve died: never run again (its runner is gone; GitHub fails it).
    let j3: u32 = st
        .jobs
        .iter()
        .filter(|j| j.id == 3)
        .map(|j| j.fetches)
        .sum();
    assert_eq!(j3, 1, "job 3 run again");
    // The message whose acknowledgement failed was delivered again and recognised.
    let acked: HashSet<i64> = st.actions.acked.iter().copied().collect();
    assert_eq!(
        s.manager.store().ss_messages(SET).expect("n") as usize,
        acked.len()
    );
    assert!(st.actions.messages.is_empty(), "{:?}", st.actions.messages);
    let a = audit_kinds(&p);
    assert!(a.iter().any(|r| r["kind"] == "serve.reconcile.runner_lost"));
    s.manager.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_runners_hide_the_runner_start_up() {
    const START: Duration = Duration::from_secs(3);
    for (min_idle, id) in [(2u32, 500u64), (0, 600)] {
        let fake = start_fake(None).await;
        let dir = tempfile::tempdir().expect("tmp");
        let s = serve(&fake, dir.path(), policy(min_idle, 4), START);
        s.manager.start(Duration::from_secs(3600)).await;
        wait_for("session", || s.manager.ready()).await;
        if min_idle > 0 {
            // Two warm runners, started and past their start-up, before any job.
            wait_for("warm runners", || {
                s.launcher.launched.lock().expect("lock").len() == 2
            })
            .await;
            tokio::time::sleep(START + Duration::from_millis(500)).await;
        }
        let t0 = Instant::now();
        queue(&fake, id, "sleep:0");
        wait_for("the job fetched", || {
            s.launcher
                .fetched_at
                .lock()
                .expect("lock")
                .contains_key(&id)
        })
        .await;
        let took = s.launcher.fetched_at.lock().expect("lock")[&id] - t0;
        if min_idle > 0 {
            assert!(took < Duration::from_secs(1), "warm: {took:?}");
            // Used once and replaced: min_idle warm runners again.
            wait_for("replaced", || {
                let alive = s.manager.store().ss_alive(Some(SET)).expect("alive");
                alive.len() == 2 && alive.iter().all(|r| r.job_id.is_none())
            })
            .await;
        } else {
            assert!(took >= START, "cold: {took:?}");
        }
        s.manager.shutdown(Duration::from_secs(5)).await;
        wait_for("warm runners retired at shutdown", || {
            fake.state().runners.is_empty()
        })
        .await;
    }
}

/// Primed sandboxes (`prestart`) hold slots of max_concurrency: with 2 slots, `ci` primes
/// two; a job of `other` makes serve retire one of them for its runner; afterwards `ci`
/// primes again, and its next runner starts in a primed sandbox; never more sandboxes than
/// slots; shutdown retires them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primed_sandboxes_hold_capacity_and_give_it_back() {
    let text = format!(
        r#"version = 1
default_group = "ci"
[groups.ci]
repositories = ["octo-org/*"]
max_runners = 2
prestart = 2
runner = ["/opt/runner/run"]
scale_set = {{ name = "{SET}", idle_retire = "1s" }}
[groups.other]
repositories = ["octo-org/*"]
max_runners = 2
runner = ["/opt/runner/run"]
scale_set = {{ name = "airlock-other", idle_retire = "1s" }}
"#
    );
    let policy = airlock_policy::parse(&text, std::path::Path::new("policy.toml")).expect("policy");
    let fake = start_fake(None).await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = serve_with_capacity(&fake, dir.path(), policy, Duration::ZERO, None, 2);
    s.manager.start(Duration::from_secs(3600)).await;
    wait_for("sessions", || s.manager.ready()).await;
    let primed_ci = || {
        s.launcher
            .primed
            .lock()
            .expect("lock")
            .get("ci")
            .copied()
            .unwrap_or(0)
    };
    wait_for("two primed sandboxes of ci", || primed_ci() == 2).await;
    fake.queue_job(NewJob {
        id: 900,
        labels: vec!["airlock-other".into()],
        script: "sleep:0".into(),
        repository: None,
    });
    wait_for("the other group's job done", || {
        all_completed(&fake, &[900])
    })
    .await;
    assert!(
        *s.launcher.retired_primed.lock().expect("lock") >= 1,
        "no primed sandbox gave its slot to the other group's runner"
    );
    assert!(
        s.launcher.took_primed.lock().expect("lock").is_empty(),
        "the other group's runner took a primed sandbox of ci"
    );
    // Statistics that lag behind a finished job can start a spare runner of `other`; it is
    // retired after idle_retire, and its slot goes back to ci's primed sandboxes.
    wait_for("ci primed again", || primed_ci() == 2).await;
    queue(&fake, 901, "sleep:0");
    wait_for("ci's job done", || all_completed(&fake, &[901])).await;
    assert_eq!(
        s.launcher.took_primed.lock().expect("lock").len(),
        1,
        "ci's runner did not start in a primed sandbox"
    );
    settle(&fake, &s.manager).await;
    assert!(
        *s.launcher.peak.lock().expect("lock") <= 2,
        "more sandboxes than max_concurrency at once: {}",
        s.launcher.peak.lock().expect("lock")
    );
    s.manager.shutdown(Duration::from_secs(5)).await;
    assert_eq!(primed_ci(), 0, "shutdown retires every primed sandbox");
    assert_accounted(&fake, &[&s.launcher], &[900, 901]);
}

/// Job messages do not say whether a repository is public: a trusted group's scale set is
/// never served from a runner group that admits public repositories (fail closed), and is
/// served from one that does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trusted_scale_set_is_refused_in_a_runner_group_open_to_public_repositories() {
    let mut groups = FakeConfig::default().runner_groups;
    let mut public = groups[0].clone();
    public.id = 7;
    public.name = "public-ci".into();
    public.default = false;
    public.allows_public_repositories = true;
    groups.push(public);
    let fake = start_fake_config(FakeConfig {
        runner_groups: groups,
        public_repositories: vec!["octo-org/site".into()],
        ..FakeConfig::default()
    })
    .await;
    let trusted = |runner_group: &str| {
        airlock_policy::parse(
            &format!(
                "version = 1\n[groups.ci]\ntrust = \"trusted\"\nrepositories = [\"octo-org/*\"]\nrunner = [\"/opt/runner/run\"]\nscale_set = {{ name = \"{SET}\", runner_group = \"{runner_group}\" }}\n"
            ),
            std::path::Path::new("policy.toml"),
        )
        .expect("policy")
    };
    // Open to public repositories, or not to be found: neither is served.
    for runner_group in ["public-ci", "no-such-group"] {
        let d1 = tempfile::tempdir().expect("tmp");
        let s = serve(&fake, d1.path(), trusted(runner_group), Duration::ZERO);
        s.manager.start(Duration::from_secs(3600)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let st = fake.state();
        assert!(
            !s.manager.ready(),
            "{runner_group}: not ready without its scale set"
        );
        assert!(
            st.actions.scale_sets.is_empty() && st.actions.sessions.is_empty(),
            "{runner_group}: no scale set or session: {:?}",
            st.actions
        );
        s.manager.shutdown(Duration::from_secs(2)).await;
    }

    let d2 = tempfile::tempdir().expect("tmp");
    let s = serve(&fake, d2.path(), trusted("Default"), Duration::ZERO);
    s.manager.start(Duration::from_secs(3600)).await;
    wait_for("the session in a private runner group", || {
        s.manager.ready()
    })
    .await;
    s.manager.shutdown(Duration::from_secs(2)).await;

    // Repository-level runners: the repository's own visibility decides.
    for (repo, served) in [("site", false), ("app", true)] {
        let d = tempfile::tempdir().expect("tmp");
        let s = serve_for(
            &fake,
            d.path(),
            trusted("Default"),
            Duration::ZERO,
            Some(repo),
        );
        s.manager.start(Duration::from_secs(3600)).await;
        if served {
            wait_for("the session for a private repository", || s.manager.ready()).await;
        } else {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(
                !s.manager.ready(),
                "a public repository's trusted scale set"
            );
            assert!(
                fake.state().actions.sessions.is_empty(),
                "{:?}",
                fake.state().actions
            );
        }
        s.manager.shutdown(Duration::from_secs(2)).await;
    }
}

/// GitHub Enterprise Server: jobs arrive as `JobAvailable`; serve acquires them
/// (`acquirejobs`) and they are then assigned and run, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ghes_available_jobs_are_acquired_then_run_once() {
    let fake = start_fake_with(None, true).await;
    let dir = tempfile::tempdir().expect("tmp");
    let s = serve(&fake, dir.path(), policy(0, 4), Duration::ZERO);
    s.manager.start(Duration::from_secs(3600)).await;
    wait_for("session", || s.manager.ready()).await;
    let ids: Vec<u64> = (70..78).collect();
    for id in &ids {
        queue(&fake, *id, "sleep:10");
    }
    wait_for("8 jobs completed, messages read", || {
        let st = fake.state();
        ids.iter().all(|id| {
            st.jobs
                .iter()
                .any(|j| j.id == *id && j.status == "completed")
        }) && st.actions.messages.is_empty()
            && s.manager.running_tasks() == 0
    })
    .await;
    assert_accounted(&fake, &[&s.launcher], &ids);
    let acquired: HashSet<i64> = fake.state().actions.acquired.iter().copied().collect();
    for id in &ids {
        assert!(acquired.contains(&(*id as i64)), "job {id} not acquired");
    }
    s.manager.shutdown(Duration::from_secs(2)).await;
}
