//! Typed REST models (request and response bodies), shaped after GitHub's REST docs.

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Where runners are registered: an organisation or one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum RunnerScope {
    /// `/orgs/{org}/actions/runners…` (App permission: organisation "Self-hosted runners").
    Org {
        /// Organisation login.
        org: String,
    },
    /// `/repos/{owner}/{repo}/actions/runners…` (App permission: repository "Administration").
    Repo {
        /// Owner login.
        owner: String,
        /// Repository name.
        repo: String,
    },
}

impl RunnerScope {
    /// Organisation scope.
    pub fn org(org: impl Into<String>) -> Self {
        RunnerScope::Org { org: org.into() }
    }

    /// Repository scope.
    pub fn repo(owner: impl Into<String>, repo: impl Into<String>) -> Self {
        RunnerScope::Repo {
            owner: owner.into(),
            repo: repo.into(),
        }
    }

    /// Path segments of `…/actions/runners`.
    pub(crate) fn runners_segments(&self) -> Vec<&str> {
        match self {
            RunnerScope::Org { org } => vec!["orgs", org, "actions", "runners"],
            RunnerScope::Repo { owner, repo } => vec!["repos", owner, repo, "actions", "runners"],
        }
    }
}

/// Body of `POST …/actions/runners/generate-jitconfig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JitConfigRequest {
    /// Runner name (unique among the scope's runners).
    pub name: String,
    /// Runner group; mandatory (GitHub answers 422 without it). Repo level: use 1.
    pub runner_group_id: u64,
    /// Labels, 1 to 100.
    pub labels: Vec<String>,
    /// Work folder relative to the runner directory (default `_work`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_folder: Option<String>,
}

/// Response of generate-jitconfig (201).
#[derive(Debug, Clone, Deserialize)]
pub struct JitConfig {
    /// The registered runner.
    pub runner: Runner,
    /// The blob for `run.sh --jitconfig`; a credential.
    pub encoded_jit_config: Secret,
}

/// A label of a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerLabel {
    /// Label id.
    #[serde(default)]
    pub id: Option<u64>,
    /// Label name.
    pub name: String,
    /// `read-only` or `custom`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// A self-hosted runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    /// Runner id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// OS (`linux`, …).
    #[serde(default)]
    pub os: Option<String>,
    /// `online` or `offline`.
    #[serde(default)]
    pub status: Option<String>,
    /// Running a job.
    #[serde(default)]
    pub busy: bool,
    /// Ephemeral (JIT runners are).
    #[serde(default)]
    pub ephemeral: Option<bool>,
    /// Runner group.
    #[serde(default)]
    pub runner_group_id: Option<u64>,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<RunnerLabel>,
}

impl Runner {
    /// Label names.
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|l| l.name.as_str())
    }
}

/// A runner group of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerGroup {
    /// Group id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `all`, `selected` or `private`.
    pub visibility: String,
    /// The default group.
    #[serde(default)]
    pub default: bool,
    /// Inherited from the enterprise.
    #[serde(default)]
    pub inherited: bool,
    /// Public repositories may use it.
    #[serde(default)]
    pub allows_public_repositories: bool,
    /// Restricted to `selected_workflows`.
    #[serde(default)]
    pub restricted_to_workflows: bool,
    /// Workflows allowed (`owner/repo/.github/workflows/x.yml@ref`).
    #[serde(default)]
    pub selected_workflows: Vec<String>,
}

/// An organisation's default `GITHUB_TOKEN` permissions
/// (`GET /orgs/{org}/actions/permissions/workflow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowPermissions {
    /// `read` or `write`.
    pub default_workflow_permissions: String,
    /// Whether Actions may approve pull requests.
    #[serde(default)]
    pub can_approve_pull_request_reviews: bool,
}

/// Body of `POST /app/installations/{id}/access_tokens` narrowing the token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenRequest {
    /// Repository names (without owner) the token may access.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// Permissions, e.g. `{"contents": "read"}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub permissions: std::collections::BTreeMap<String, String>,
}

/// An installation access token.
#[derive(Debug, Clone, Deserialize)]
pub struct InstallationToken {
    /// The token.
    pub token: Secret,
    /// Expiry.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}
