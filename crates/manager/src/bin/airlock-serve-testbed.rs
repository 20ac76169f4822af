//! Test harness only (not installed with airlock): runs `airlock serve`'s server with a
//! GitHub fake kept in a JSON file, so a test can kill -9 it, restart it, and inspect what
//! "GitHub" saw. Usage: `airlock-serve-testbed SERVE_TOML AIRLOCK_BINARY GITHUB_JSON`.
//!
//! The JSON file: `{"next_id": N, "runners": [RunnerInfo…], "deleted": [id…],
//! "jit": [name…], "tokens": [..], "revoked": [..]}`; every change is written under an
//! exclusive flock on `GITHUB_JSON.lock` (the test reads it the same way).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_manager::{ApiError, GitHub, JitConfig, JitRequest, RunnerInfo, Secret, ServeConfig};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct World {
    next_id: u64,
    runners: Vec<RunnerInfo>,
    deleted: Vec<u64>,
    jit: Vec<String>,
    tokens: Vec<String>,
    revoked: Vec<String>,
}

struct FileGitHub {
    path: PathBuf,
}

impl FileGitHub {
    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> Result<T, ApiError> {
        let err = |e: String| ApiError::Transport {
            endpoint: "file".into(),
            message: e,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .map_err(|e| err(e.to_string()))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is closed.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        let mut w: World = match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| err(e.to_string()))?,
            Err(_) => World::default(),
        };
        let out = f(&mut w);
        let tmp = self.path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(&w).map_err(|e| err(e.to_string()))?,
        )
        .map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(e.to_string()))?;
        Ok(out)
    }
}

#[async_trait]
impl GitHub for FileGitHub {
    async fn generate_jitconfig(&self, req: &JitRequest) -> Result<JitConfig, ApiError> {
        let id = self.with(|w| {
            w.next_id += 1;
            let id = 1000 + w.next_id;
            w.runners.push(RunnerInfo {
                id,
                name: req.name.clone(),
                labels: req.labels.clone(),
                status: "offline".into(),
                busy: false,
            });
            w.jit.push(req.name.clone());
            id
        })?;
        Ok(JitConfig {
            runner_id: id,
            name: req.name.clone(),
            encoded_jit_config: Secret::new(format!("jit-for-{id}")),
        })
    }
    async fn list_runners(&self) -> Result<Vec<RunnerInfo>, ApiError> {
        self.with(|w| w.runners.clone())
    }
    async fn delete_runner(&self, id: u64) -> Result<(), ApiError> {
        self.with(|w| {
            w.runners.retain(|r| r.id != id);
            w.deleted.push(id);
        })
    }
    async fn job_token(
        &self,
        repo: &str,
        _permissions: &BTreeMap<String, String>,
    ) -> Result<Option<Secret>, ApiError> {
        let t = format!("ghs_fake_{repo}");
        self.with(|w| w.tokens.push(t.clone()))?;
        Ok(Some(Secret::new(t)))
    }
    async fn revoke_token(&self, token: &Secret) -> Result<(), ApiError> {
        self.with(|w| w.revoked.push(token.expose().to_owned()))
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: airlock-serve-testbed SERVE_TOML AIRLOCK_BINARY GITHUB_JSON");
        return std::process::ExitCode::from(2);
    }
    tracing_subscriber_init();
    let config = match ServeConfig::from_file(std::path::Path::new(&args[1])) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("testbed: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let policy = match airlock_policy::LoadedPolicy::from_file(&config.policy) {
        Ok(p) => p.policy,
        Err(e) => {
            eprintln!("testbed: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let gh: Arc<dyn GitHub> = Arc::new(FileGitHub {
        path: PathBuf::from(&args[3]),
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("testbed: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(airlock_manager::serve(
        config,
        policy,
        gh,
        PathBuf::from(&args[2]),
    )) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testbed: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn tracing_subscriber_init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
