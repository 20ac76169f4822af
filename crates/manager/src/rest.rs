//! The real [`GitHub`]: `airlock-github`'s REST client (App JWT → installation tokens, or a
//! PAT; retries, back-off and rate limits live there) behind the manager's five-call seam.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::config::{ConfigError, GitHubConfig, Level};
use crate::github::{ApiError, GitHub, JitConfig, JitRequest, RunnerInfo};
use crate::Secret;

/// GitHub through its REST API, at the organisation or repository level of `serve.toml`.
pub struct RestGitHub {
    client: airlock_github::GitHubClient,
    http: reqwest::Client,
    api_url: String,
    scope: airlock_github::RunnerScope,
    app: bool,
}

fn api(endpoint: &str) -> impl FnOnce(airlock_github::Error) -> ApiError + '_ {
    move |e| match e.status() {
        Some(status) => ApiError::Status {
            endpoint: endpoint.to_owned(),
            status,
            message: e.to_string(),
        },
        None => ApiError::Transport {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        },
    }
}

impl RestGitHub {
    /// A client from `serve.toml`'s `[github]`: the App's key and installation when given,
    /// else the PAT.
    pub fn from_config(c: &GitHubConfig) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Secret {
            what: "github".into(),
            message,
        };
        let credentials = match (&c.app_id, c.installation_id, &c.private_key, &c.token) {
            (Some(app), Some(inst), Some(key), _) => airlock_github::Credentials::App {
                key: airlock_github::AppKey::from_pem_file(app.clone(), key)
                    .map_err(|e| invalid(format!("private key {}: {e}", key.display())))?,
                installation_id: inst,
            },
            (_, _, _, Some(t)) => airlock_github::Credentials::Token(airlock_github::Secret::new(
                t.read("github.token")?.expose(),
            )),
            _ => {
                return Err(invalid(
                    "set app_id, installation_id and private_key, or token".into(),
                ))
            }
        };
        let app = matches!(credentials, airlock_github::Credentials::App { .. });
        let config = airlock_github::ClientConfig {
            base_url: c.api_url.clone(),
            ..Default::default()
        };
        let client = airlock_github::GitHubClient::new(config, credentials)
            .map_err(|e| invalid(e.to_string()))?;
        let scope = match (c.level, &c.repo) {
            (Level::Repo, Some(r)) => airlock_github::RunnerScope::repo(c.org.clone(), r.clone()),
            _ => airlock_github::RunnerScope::org(c.org.clone()),
        };
        Ok(Self {
            client,
            scope,
            app,
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| invalid(e.to_string()))?,
            api_url: c.api_url.clone(),
        })
    }
}

#[async_trait]
impl GitHub for RestGitHub {
    async fn generate_jitconfig(&self, req: &JitRequest) -> Result<JitConfig, ApiError> {
        let r = self
            .client
            .generate_jit_config(
                &self.scope,
                &airlock_github::JitConfigRequest {
                    name: req.name.clone(),
                    runner_group_id: req.runner_group_id,
                    labels: req.labels.clone(),
                    work_folder: None,
                },
            )
            .await
            .map_err(api("generate-jitconfig"))?;
        Ok(JitConfig {
            runner_id: r.runner.id,
            name: r.runner.name,
            encoded_jit_config: Secret::new(r.encoded_jit_config.expose()),
        })
    }

    async fn list_runners(&self) -> Result<Vec<RunnerInfo>, ApiError> {
        let rs = self
            .client
            .list_runners(&self.scope)
            .await
            .map_err(api("list runners"))?;
        Ok(rs
            .into_iter()
            .map(|r| RunnerInfo {
                id: r.id,
                name: r.name,
                labels: r.labels.into_iter().map(|l| l.name).collect(),
                status: r.status.unwrap_or_default(),
                busy: r.busy,
            })
            .collect())
    }

    async fn delete_runner(&self, id: u64) -> Result<(), ApiError> {
        match self.client.delete_runner(&self.scope, id).await {
            Ok(()) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(api("delete runner")(e)),
        }
    }

    async fn job_token(
        &self,
        repo: &str,
        permissions: &BTreeMap<String, String>,
    ) -> Result<Option<Secret>, ApiError> {
        if !self.app {
            // A PAT cannot be narrowed; the job gets no token rather than the PAT.
            return Ok(None);
        }
        let name = repo.rsplit('/').next().unwrap_or(repo).to_owned();
        let t = self
            .client
            .create_scoped_token(&airlock_github::TokenRequest {
                repositories: vec![name],
                permissions: permissions.clone(),
            })
            .await
            .map_err(api("installation token"))?;
        Ok(Some(Secret::new(t.token.expose())))
    }

    async fn registration_token(&self) -> Result<Secret, ApiError> {
        let token = self
            .client
            .installation_token()
            .await
            .map_err(api("installation token"))?;
        let path = match &self.scope {
            airlock_github::RunnerScope::Org { org } => format!("orgs/{org}"),
            airlock_github::RunnerScope::Repo { owner, repo } => format!("repos/{owner}/{repo}"),
        };
        airlock_github::scaleset::registration_token(&self.http, &self.api_url, &path, &token)
            .await
            .map(|t| Secret::new(t.expose()))
            .map_err(|e| ApiError::Transport {
                endpoint: "registration-token".into(),
                message: e.to_string(),
            })
    }

    async fn runner_group_allows_public(&self, name: &str) -> Result<Option<bool>, ApiError> {
        let org = match &self.scope {
            airlock_github::RunnerScope::Org { org } => org,
            // Repository-level runners serve that one repository: it is public or not.
            airlock_github::RunnerScope::Repo { owner, repo } => {
                return self
                    .client
                    .repository_is_public(owner, repo)
                    .await
                    .map(Some)
                    .map_err(api("get repository"));
            }
        };
        let groups = self
            .client
            .list_runner_groups(org)
            .await
            .map_err(api("list runner groups"))?;
        // A group serve cannot see is not assumed private: fail closed.
        match groups.into_iter().find(|g| g.name == name) {
            Some(g) => Ok(Some(g.allows_public_repositories)),
            None => Err(ApiError::Status {
                endpoint: "list runner groups".into(),
                status: 404,
                message: format!("no runner group {name:?} is visible to serve's credentials"),
            }),
        }
    }

    async fn cancel_run(&self, repo: &str, run_id: u64) -> Result<(), ApiError> {
        let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
        self.client
            .cancel_workflow_run(owner, name, run_id)
            .await
            .map_err(api("cancel run"))
    }

    async fn revoke_token(&self, token: &Secret) -> Result<(), ApiError> {
        self.client
            .revoke_token(&airlock_github::Secret::new(token.expose()))
            .await
            .map_err(api("revoke token"))
    }
}
