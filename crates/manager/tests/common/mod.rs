//! Fakes and helpers of the manager's tests: an in-process GitHub, a process-free launcher,
//! signed webhook requests.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_manager::launcher::{LaunchError, LaunchSpec, Launcher, RunExit};
use airlock_manager::{ApiError, GitHub, JitConfig, JitRequest, RunnerInfo, Secret};
use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

pub const SECRET: &str = "It's a Secret to Everybody";

/// GitHub in memory.
#[derive(Default)]
pub struct FakeGitHub {
    pub s: Mutex<FakeState>,
}

#[derive(Default)]
pub struct FakeState {
    pub next_id: u64,
    pub runners: BTreeMap<u64, RunnerInfo>,
    pub jit_requests: Vec<JitRequest>,
    pub deleted: Vec<u64>,
    pub tokens: Vec<String>,
    pub revoked: Vec<String>,
    /// Fail the next N JIT requests with this status.
    pub fail_jit: Option<(u32, u16)>,
    /// Refuse runner listings (401), as for a wrong App id or a revoked token.
    pub fail_list: bool,
}

#[async_trait]
impl GitHub for FakeGitHub {
    async fn generate_jitconfig(&self, req: &JitRequest) -> Result<JitConfig, ApiError> {
        let mut s = self.s.lock().expect("lock");
        if let Some((n, status)) = s.fail_jit {
            if n > 0 {
                s.fail_jit = Some((n - 1, status));
                return Err(ApiError::Status {
                    endpoint: "generate-jitconfig".into(),
                    status,
                    message: "fake failure".into(),
                });
            }
        }
        if s.runners.values().any(|r| r.name == req.name) {
            return Err(ApiError::Status {
                endpoint: "generate-jitconfig".into(),
                status: 409,
                message: "Already exists".into(),
            });
        }
        s.next_id += 1;
        let id = 1000 + s.next_id;
        s.runners.insert(
            id,
            RunnerInfo {
                id,
                name: req.name.clone(),
                labels: req.labels.clone(),
                status: "offline".into(),
                busy: false,
            },
        );
        s.jit_requests.push(req.clone());
        Ok(JitConfig {
            runner_id: id,
            name: req.name.clone(),
            encoded_jit_config: Secret::new(format!("jit-for-{id}")),
        })
    }
    async fn list_runners(&self) -> Result<Vec<RunnerInfo>, ApiError> {
        if self.s.lock().expect("lock").fail_list {
            return Err(ApiError::Status {
                endpoint: "list-runners".into(),
                status: 401,
                message: "Bad credentials".into(),
            });
        }
        Ok(self
            .s
            .lock()
            .expect("lock")
            .runners
            .values()
            .cloned()
            .collect())
    }
    async fn delete_runner(&self, id: u64) -> Result<(), ApiError> {
        let mut s = self.s.lock().expect("lock");
        s.runners.remove(&id);
        s.deleted.push(id);
        Ok(())
    }
    async fn job_token(
        &self,
        repo: &str,
        permissions: &BTreeMap<String, String>,
    ) -> Result<Option<Secret>, ApiError> {
        let t = format!("ghs_{repo}_{}", permissions.len());
        self.s.lock().expect("lock").tokens.push(t.clone());
        Ok(Some(Secret::new(t)))
    }
    async fn revoke_token(&self, token: &Secret) -> Result<(), ApiError> {
        self.s
            .lock()
            .expect("lock")
            .revoked
            .push(token.expose().to_owned());
        Ok(())
    }
}

/// A launcher without processes: records each start, holds the "sandbox" for `hold`.
pub struct FakeLauncher {
    pub hold: Duration,
    pub s: Mutex<LaunchLog>,
    /// Primed sandboxes per group (set by a test: webhook groups are never primed, a scale
    /// set's may hold slots of the same host).
    pub primed: Mutex<BTreeMap<String, u32>>,
}

#[derive(Default)]
pub struct LaunchLog {
    pub started: Vec<String>,
    pub running: HashSet<String>,
    pub max_running: usize,
    pub max_by_group: BTreeMap<String, usize>,
    pub by_group_now: BTreeMap<String, usize>,
    pub tokens_seen: Vec<Option<String>>,
    pub gc_calls: u32,
    pub stopped: Vec<String>,
    /// The most sandboxes at once, running and primed.
    pub max_with_primed: usize,
    /// Runners that started in a primed sandbox.
    pub took_primed: Vec<String>,
}

impl FakeLauncher {
    pub fn new(hold: Duration) -> Arc<Self> {
        Arc::new(Self {
            hold,
            s: Mutex::new(LaunchLog::default()),
            primed: Mutex::new(BTreeMap::new()),
        })
    }
}

#[async_trait]
impl Launcher for FakeLauncher {
    async fn run(
        &self,
        spec: LaunchSpec,
        started: oneshot::Sender<()>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunExit, LaunchError> {
        assert!(
            spec.jit_config.expose().starts_with("jit-for-"),
            "the runner gets its JIT config"
        );
        {
            let mut s = self.s.lock().expect("lock");
            let mut pool = self.primed.lock().expect("lock");
            if let Some(n) = pool.get_mut(&spec.group).filter(|n| **n > 0) {
                *n -= 1;
                s.took_primed.push(spec.key.clone());
            }
            let primed: u32 = pool.values().sum();
            drop(pool);
            s.max_with_primed = s.max_with_primed.max(s.running.len() + 1 + primed as usize);
            assert!(
                s.running.insert(spec.key.clone()),
                "job {} started while already running",
                spec.key
            );
            s.started.push(spec.key.clone());
            s.tokens_seen
                .push(spec.token.as_ref().map(|t| t.expose().to_owned()));
            let n = s.running.len();
            s.max_running = s.max_running.max(n);
            let g = s.by_group_now.entry(spec.group.clone()).or_default();
            *g += 1;
            let g = *g;
            let m = s.max_by_group.entry(spec.group.clone()).or_default();
            *m = (*m).max(g);
        }
        let _ = started.send(());
        let stopped = tokio::select! {
            _ = tokio::time::sleep(self.hold) => false,
            _ = stop.wait_for(|v| *v) => true,
        };
        let mut s = self.s.lock().expect("lock");
        s.running.remove(&spec.key);
        if let Some(g) = s.by_group_now.get_mut(&spec.group) {
            *g -= 1;
        }
        if stopped {
            s.stopped.push(spec.key.clone());
        }
        Ok(RunExit {
            code: 0,
            stopped,
            sandbox_id: Some(format!("sbx-{}", spec.key)),
            failure: None,
        })
    }
    async fn gc(&self) -> Result<Vec<String>, LaunchError> {
        self.s.lock().expect("lock").gc_calls += 1;
        Ok(Vec::new())
    }

    fn prime(&self, template: LaunchSpec) -> bool {
        assert!(
            template.token.is_none() && template.jit_config.expose().is_empty(),
            "a primed sandbox gets no credentials"
        );
        let mut pool = self.primed.lock().expect("lock");
        *pool.entry(template.group).or_default() += 1;
        let primed: u32 = pool.values().sum();
        drop(pool);
        let mut s = self.s.lock().expect("lock");
        s.max_with_primed = s.max_with_primed.max(s.running.len() + primed as usize);
        true
    }

    fn primed(&self) -> BTreeMap<String, u32> {
        let mut p = self.primed.lock().expect("lock").clone();
        p.retain(|_, n| *n > 0);
        p
    }

    async fn retire_primed(&self, keep: Option<&str>, n: usize) -> usize {
        let mut done = 0;
        for (g, c) in self.primed.lock().expect("lock").iter_mut() {
            while keep != Some(g.as_str()) && *c > 0 && done < n {
                *c -= 1;
                done += 1;
            }
        }
        done
    }
}

/// A `workflow_job` payload built from the fixture with another id, labels and repository.
pub fn payload(action: &str, id: u64, labels: &[&str], repo: &str, private: bool) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../github/tests/fixtures/webhooks/workflow_job/queued.payload.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).expect("fixture")).expect("json");
    v["action"] = action.into();
    v["workflow_job"]["id"] = id.into();
    v["workflow_job"]["labels"] = labels.iter().map(|s| s.to_string()).collect();
    v["repository"]["full_name"] = repo.into();
    v["repository"]["private"] = private.into();
    v["repository"]["visibility"] = if private { "private" } else { "public" }.into();
    if action != "queued" {
        v["workflow_job"]["runner_name"] = format!("airlock-{id}").into();
    }
    v.to_string()
}

pub const POLICY: &str = r#"
version = 1
default_group = "ci"
[groups.ci]
trust = "trusted"
labels = ["airlock"]
repositories = ["octo-org/*"]
max_runners = 4
token_permissions = { contents = "read" }
[groups.pr]
trust = "untrusted"
labels = ["airlock-pr"]
repositories = ["*/*"]
max_runners = 2
"#;

pub fn policy(text: &str) -> airlock_policy::Policy {
    airlock_policy::parse(text, std::path::Path::new("policy.toml")).expect("policy")
}
