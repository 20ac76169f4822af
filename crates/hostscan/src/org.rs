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
//! The token is sent only to the API base URL: a `Link` pointing elsewhere is refused, and
//! redirects never carry it (ureq's default).

use std::time::Duration;

use serde::Deserialize;

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

/// A runner group, as GitHub documents it (fields the checks use).
#[derive(Debug, Clone, Deserialize)]
pub struct RunnerGroup {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `all`, `selected` or `private`.
    #[serde(default)]
    pub visibility: String,
    /// The organisation's default group.
    #[serde(default)]
    pub default: bool,
    /// Public repositories may use it.
    #[serde(default)]
    pub allows_public_repositories: bool,
    /// Limited to `selected_workflows`.
    #[serde(default)]
    pub restricted_to_workflows: bool,
}

/// A runner label.
#[derive(Debug, Clone, Deserialize)]
pub struct Label {
    /// Label name.
    pub name: String,
}

/// A registered self-hosted runner.
#[derive(Debug, Clone, Deserialize)]
pub struct Runner {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `online` or `offline`.
    #[serde(default)]
    pub status: String,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<Label>,
    /// Ephemeral (newer API versions only).
    #[serde(default)]
    pub ephemeral: Option<bool>,
}

impl Runner {
    /// Created by airlock: name prefix `airlock-` or label `airlock`.
    pub fn by_airlock(&self) -> bool {
        self.name.starts_with("airlock-") || self.labels.iter().any(|l| l.name == "airlock")
    }
}

/// The organisation's default `GITHUB_TOKEN` permissions.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowPermissions {
    /// `read` or `write`.
    pub default_workflow_permissions: String,
    /// Whether Actions may approve pull requests.
    #[serde(default)]
    pub can_approve_pull_request_reviews: bool,
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

#[derive(Deserialize)]
struct GroupsPage {
    runner_groups: Vec<RunnerGroup>,
}

#[derive(Deserialize)]
struct RunnersPage {
    runners: Vec<Runner>,
}

/// Pages followed at most per listing (100 per page).
const MAX_PAGES: usize = 100;

/// A minimal GitHub REST client.
pub struct Client {
    base: String,
    token: Token,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `base` (e.g. `https://api.github.com`).
    pub fn new(base: &str, token: Token) -> Result<Self, HostScanError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(HostScanError::ApiUrl(base));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent("airlock-hostscan")
            .build()
            .into();
        Ok(Self { base, token, agent })
    }

    fn get(&self, url: &str) -> Result<(String, Option<String>), HostScanError> {
        let mut resp = self
            .agent
            .get(url)
            .header("Authorization", &format!("Bearer {}", self.token.expose()))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .call()
            .map_err(|e| HostScanError::Http {
                url: url.to_owned(),
                source: Box::new(e),
            })?;
        let status = resp.status().as_u16();
        let link = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| HostScanError::Http {
                url: url.to_owned(),
                source: Box::new(e),
            })?;
        if status != 200 {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(HostScanError::Status {
                url: url.to_owned(),
                status,
                message,
            });
        }
        Ok((body, link.and_then(|l| next_link(&l))))
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, HostScanError> {
        let url = format!("{}{path}", self.base);
        let (body, _) = self.get(&url)?;
        serde_json::from_str(&body).map_err(|source| HostScanError::Body { url, source })
    }

    /// Fetches every page of a listing and returns the pages' bodies parsed.
    fn pages<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, HostScanError> {
        let first = format!("{}{path}?per_page=100", self.base);
        let mut url = first.clone();
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (body, next) = self.get(&url)?;
            out.push(
                serde_json::from_str(&body).map_err(|source| HostScanError::Body {
                    url: url.clone(),
                    source,
                })?,
            );
            match next {
                None => return Ok(out),
                Some(n) => {
                    if !n.starts_with(&format!("{}/", self.base)) {
                        return Err(HostScanError::ForeignLink { url, next: n });
                    }
                    url = n;
                }
            }
        }
        Err(HostScanError::TooManyPages {
            url: first,
            max: MAX_PAGES,
        })
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
        let groups = self
            .pages::<GroupsPage>(&format!("/orgs/{org}/actions/runner-groups"))?
            .into_iter()
            .flat_map(|p| p.runner_groups)
            .collect();
        let runners = self
            .pages::<RunnersPage>(&format!("/orgs/{org}/actions/runners"))?
            .into_iter()
            .flat_map(|p| p.runners)
            .collect();
        let workflow = self.get_json(&format!("/orgs/{org}/actions/permissions/workflow"))?;
        Ok(OrgData {
            org: org.to_owned(),
            groups,
            runners,
            workflow,
        })
    }
}

/// The `rel="next"` URL of a `Link` header.
///
/// Hand-written: the header is a comma-separated list of `<url>; rel="…"` and GitHub's URLs
/// contain no commas; a full RFC 8288 parser would add a dependency for one lookup.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| url.to_owned())
    })
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
        .filter(|r| r.status != "online")
        .map(|r| {
            Evidence::new(
                src("runners"),
                format!("{} (id {}): {}", r.name, r.id, r.status),
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
        .filter(|r| !r.by_airlock())
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
    fn link_header_next() {
        let h = r#"<https://api.github.com/organizations/1/actions/runners?per_page=100&page=2>; rel="next", <https://api.github.com/organizations/1/actions/runners?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.github.com/organizations/1/actions/runners?per_page=100&page=2")
        );
        assert_eq!(next_link(r#"<https://x/y?page=1>; rel="prev""#), None);
    }

    #[test]
    fn token_is_never_printed() {
        let t = Token::new("ghp_secret");
        assert_eq!(format!("{t} {t:?}"), "*** ***");
    }
}
