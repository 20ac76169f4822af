//! The seam to GitHub's REST API. `airlock serve` needs five calls; the `airlock-github` crate
//! implements them against the real API (App JWT → installation token, or a PAT). Tests use an
//! in-process fake.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Secret;

/// A request for a just-in-time runner configuration
/// (`POST /orgs/{org}/actions/runners/generate-jitconfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JitRequest {
    /// Runner name (airlock's prefix + the job key).
    pub name: String,
    /// GitHub runner group id.
    pub runner_group_id: u64,
    /// Labels of the runner (1 to 100).
    pub labels: Vec<String>,
    /// For repository-level runners: `owner/name`; `None` at organisation level.
    pub repository: Option<String>,
}

/// A generated JIT configuration.
#[derive(Debug, Clone)]
pub struct JitConfig {
    /// The registered runner's id.
    pub runner_id: u64,
    /// Its name.
    pub name: String,
    /// The opaque configuration the runner starts with; a credential.
    pub encoded_jit_config: Secret,
}

/// A registered self-hosted runner (`GET /orgs/{org}/actions/runners`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInfo {
    /// Runner id.
    pub id: u64,
    /// Runner name.
    pub name: String,
    /// Label names.
    pub labels: Vec<String>,
    /// `online` or `offline`.
    pub status: String,
    /// Whether it runs a job now.
    pub busy: bool,
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// GitHub answered with an error status.
    #[error("GitHub API {endpoint}: HTTP {status}: {message}")]
    Status {
        /// Which call.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// GitHub could not be reached.
    #[error("GitHub API {endpoint}: {message}")]
    Transport {
        /// Which call.
        endpoint: String,
        /// What happened.
        message: String,
    },
}

/// The calls `airlock serve` makes. Implementations retry transient failures themselves.
#[async_trait]
pub trait GitHub: Send + Sync + 'static {
    /// Registers a JIT runner and returns its configuration.
    async fn generate_jitconfig(&self, req: &JitRequest) -> Result<JitConfig, ApiError>;
    /// Lists the registered self-hosted runners (all pages).
    async fn list_runners(&self) -> Result<Vec<RunnerInfo>, ApiError>;
    /// Deletes a runner; a runner that is already gone (404) is success.
    async fn delete_runner(&self, id: u64) -> Result<(), ApiError>;
    /// Mints an installation token narrowed to `repo` and `permissions`; `None` when the
    /// configured authentication cannot mint tokens (a PAT).
    async fn job_token(
        &self,
        repo: &str,
        permissions: &BTreeMap<String, String>,
    ) -> Result<Option<Secret>, ApiError>;
    /// Revokes a token minted by [`GitHub::job_token`].
    async fn revoke_token(&self, token: &Secret) -> Result<(), ApiError>;

    /// A runner registration token for the scope (`POST …/actions/runners/registration-token`):
    /// what opens the Actions service connection of scale sets. The default: unsupported.
    async fn registration_token(&self) -> Result<Secret, ApiError> {
        Err(ApiError::Transport {
            endpoint: "registration-token".into(),
            message: "this GitHub connection does not support scale sets".into(),
        })
    }

    /// Whether public code can reach runners of runner group `name`: at organisation level,
    /// the group's "Allow public repositories" setting (a group that cannot be found is an
    /// error); at repository level, whether the repository is public. `Ok(None)`: the
    /// implementation has no such call (tests' in-process fakes).
    async fn runner_group_allows_public(&self, name: &str) -> Result<Option<bool>, ApiError> {
        let _ = name;
        Ok(None)
    }

    /// Cancels workflow run `run_id` of `repo` (`owner/name`). The default: unsupported.
    async fn cancel_run(&self, repo: &str, run_id: u64) -> Result<(), ApiError> {
        let _ = (repo, run_id);
        Err(ApiError::Transport {
            endpoint: "cancel run".into(),
            message: "this GitHub connection cannot cancel runs".into(),
        })
    }
}
