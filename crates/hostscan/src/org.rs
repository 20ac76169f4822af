//! `scan org`: the checklist items only GitHub can answer, read through its REST API.
//!
//! Endpoints (all `GET`, `Accept: application/vnd.github+json`,
//! `X-GitHub-Api-Version: 2022-11-28`, paginated with `per_page=100` and the `Link` header):
//!
//! - `/orgs/{org}/actions/runner-groups` → `{total_count, runner_groups: [{id, name,
//!   visibility, default, allows_public_repositories, restricted_to_workflows, …}]}`
//! - `/orgs/{org}/actions/runners` → `{total_count, runners: [{id, name, os, status, busy,
//!   labels: [{name}], ephemeral?}]}` — `ephemeral` is only in newer API versions; a runner
//!   without it is reported as unknown for item 1, never guessed.
//! - `/orgs/{org}/actions/permissions/workflow` → `{default_workflow_permissions,
//!   can_approve_pull_request_reviews}`
//!
//! Read through airlock's one GitHub client (`airlock_github::GitHubClient`, with the token as
//! a PAT credential): the token is sent only to the API base URL, a `Link` pointing elsewhere
//! is refused, a listing stops after 100 pages.

use crate::checks;
use crate::error::HostScanError;
use crate::report::{Evidence, ItemResult, Outcome, Report, ReportKind};

/// A GitHub token: airlock's one secret type. Read from `GITHUB_TOKEN`, then
/// `AIRLOCK_GITHUB_TOKEN` ([`token_from_env`]).
pub use airlock_secret::Secret as Token;

/// Reads `GITHUB_TOKEN`, then `AIRLOCK_GITHUB_TOKEN`.
pub fn token_from_env() -> Option<Token> {
    Token::from_env(&["GITHUB_TOKEN", "AIRLOCK_GITHUB_TOKEN"])
}

pub use airlock_github::models::{Runner, RunnerGroup, WorkflowPermissions};

/// Created by airlock: name prefix `airlock-` or label `airlock`.
pub fn by_airlock(r: &Runner) -> bool {
    r.name.starts_with("airlock-") || r.label_names().any(|l| l == "airlock")
}

/// Everything read from the organisation.
#[derive(Debug, Clone)]
pub struct OrgData {
    /// Organisation login.
    pub org: String,
    /// Runner groups.
    pub groups: Vec<RunnerGroup>,
    /// Runners.
    pub runners: Vec<Runner>,
    /// Default workflow permissions.
    pub workflow: WorkflowPermissions,
}

/// The organisation's API, read-only.
pub struct Client {
    github: airlock_github::GitHubClient,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client for `base` (e.g. `https://api.github.com`).
    pub fn new(base: &str, token: Token) -> Result<Self, HostScanError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(HostScanError::ApiUrl(base));
        }
        let config = airlock_github::ClientConfig {
            base_url: base.clone(),
            user_agent: "airlock-hostscan".into(),
            ..airlock_github::ClientConfig::default()
        };
        let github =
            airlock_github::GitHubClient::new(config, airlock_github::Credentials::Token(token))
                .map_err(|_| HostScanError::ApiUrl(base))?;
        // The scan is synchronous; one small runtime for its few calls.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HostScanError::Runtime)?;
        Ok(Self { github, runtime })
    }

    /// Reads the organisation's runner groups, runners and workflow permissions.
    pub fn fetch(&self, org: &str) -> Result<OrgData, HostScanError> {
        if org.is_empty()
            || !org
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(HostScanError::OrgName(org.to_owned()));
        }
        let gh = &self.github;
        let scope = airlock_github::models::RunnerScope::org(org);
        let (groups, runners, workflow) = self.runtime.block_on(async {
            let groups = gh.list_runner_groups(org).await?;
            let runners = gh.list_runners(&scope).await?;
            let workflow = gh.workflow_permissions(org).await?;
            Ok::<_, airlock_github::error::Error>((groups, runners, workflow))
        })?;
        Ok(OrgData {
            org: org.to_owned(),
            groups,
            runners,
            workflow,
        })
    }
}

/// Evaluates the org-level checks into a report over all 26 items (the ones the org cannot
/// decide are unknown).
pub fn evaluate(data: &OrgData) -> Report {
    let src = |p: &str| format!("api: GET /orgs/{}/actions/{p}", data.org);
    let mut outcomes: Vec<(&'static str, Outcome)> = Vec::new();

    // 1. Ephemeral runners.
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    for r in &data.runners {
        match r.ephemeral {
            Some(false) => bad.push(Evidence::new(
                src("runners"),
                format!("{} (id {}): not ephemeral", r.name, r.id),
            )),
            None => unknown.push(Evidence::new(
                src("runners"),
                format!("{} (id {}): no `ephemeral` field", r.name, r.id),
            )),
            Some(true) => {}
        }
    }
    outcomes.push((
        "ephemeral-runners",
        if !bad.is_empty() {
            Outcome::fail("registered runners that are not ephemeral", bad)
        } else if !unknown.is_empty() {
            Outcome::unknown(
                "the API did not say whether these runners are ephemeral",
                unknown,
            )
        } else {
            Outcome::pass(
                format!(
                    "all {} registered runner(s) are ephemeral",
                    data.runners.len()
                ),
                vec![],
            )
        },
    ));

    // 6. Default GITHUB_TOKEN permissions.
    let w = &data.workflow;
    let ev = vec![Evidence::new(
        src("permissions/workflow"),
        format!(
            "default_workflow_permissions: {}, can_approve_pull_request_reviews: {}",
            w.default_workflow_permissions, w.can_approve_pull_request_reviews
        ),
    )];
    outcomes.push((
        "minimal-iam",
        if w.default_workflow_permissions == "read" && !w.can_approve_pull_request_reviews {
            Outcome::pass("workflows' GITHUB_TOKEN is read-only by default", ev)
        } else {
            Outcome::fail("workflows' GITHUB_TOKEN gets write access (or may approve pull requests) by default", ev)
        },
    ));

    // 9. Public repositories on runner groups.
    let public: Vec<Evidence> = data
        .groups
        .iter()
        .filter(|g| g.allows_public_repositories)
        .map(|g| {
            Evidence::new(
                src("runner-groups"),
                format!(
                    "group {:?} (id {}) allows public repositories",
                    g.name, g.id
                ),
            )
        })
        .collect();
    outcomes.push((
        "runner-groups-public-private",
        if public.is_empty() {
            Outcome::pass(
                format!(
                    "none of {} runner group(s) allows public repositories",
                    data.groups.len()
                ),
                vec![],
            )
        } else {
            Outcome::fail(
                "a runner group accepts jobs from public repositories",
                public,
            )
        },
    ));

    // 10. Repository / workflow restrictions.
    let mut open = Vec::new();
    for g in &data.groups {
        if g.visibility == "all" {
            open.push(Evidence::new(
                src("runner-groups"),
                format!(
                    "group {:?} (id {}) is visible to all repositories",
                    g.name, g.id
                ),
            ));
        }
        if !g.restricted_to_workflows {
            open.push(Evidence::new(
                src("runner-groups"),
                format!(
                    "group {:?} (id {}) is not restricted to selected workflows",
                    g.name, g.id
                ),
            ));
        }
    }
    outcomes.push((
        "repository-access-restrictions",
        if open.is_empty() {
            Outcome::pass(
                "every runner group is limited to selected repositories and workflows",
                vec![],
            )
        } else {
            Outcome::fail("runner groups open to every repository or workflow", open)
        },
    ));

    // 23. Offline runners.
    let offline: Vec<Evidence> = data
        .runners
        .iter()
        .filter(|r| r.status.as_deref() != Some("online"))
        .map(|r| {
            Evidence::new(
                src("runners"),
                format!(
                    "{} (id {}): {}",
                    r.name,
                    r.id,
                    r.status.as_deref().unwrap_or("no status")
                ),
            )
        })
        .collect();
    outcomes.push((
        "decommission-runners",
        if offline.is_empty() {
            Outcome::pass("no offline runner is registered", vec![])
        } else {
            Outcome::fail("offline runners are still registered", offline)
        },
    ));

    // 24. Runners not created by airlock.
    let foreign: Vec<Evidence> = data
        .runners
        .iter()
        .filter(|r| !by_airlock(r))
        .map(|r| {
            Evidence::new(
                src("runners"),
                format!(
                    "{} (id {}): not created by airlock (no airlock- prefix or airlock label)",
                    r.name, r.id
                ),
            )
        })
        .collect();
    outcomes.push((
        "unauthorized-registration-monitoring",
        if foreign.is_empty() {
            Outcome::pass("every registered runner was created by airlock", vec![])
        } else {
            Outcome::fail("runners registered outside airlock", foreign)
        },
    ));

    let items = checks::items()
        .into_iter()
        .map(|m| {
            let o = outcomes
                .iter()
                .find(|(id, _)| *id == m.id)
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| {
                    Outcome::unknown(
                        "not decided by the organisation's settings: see `airlock scan host`",
                        vec![],
                    )
                });
            ItemResult::new(m, o)
        })
        .collect();
    Report::new(ReportKind::Org, data.org.clone(), items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_never_printed() {
        let t = Token::new("ghp_secret");
        assert_eq!(format!("{t} {t:?}"), "*** ***");
    }
}
