//! Routing a queued job to a runner group of the policy.
//!
//! A group takes a job when, in this order:
//! 1. the job's labels, without the generic `self-hosted`, `linux` and `x64` (compared
//!    case-insensitively), are not empty and all among the group's `labels`;
//! 2. the job's repository matches one of the group's `repositories` globs (empty: none);
//! 3. the group's `workflows` is empty or a glob matches `owner/name/<workflow name>`;
//! 4. a public repository goes only to an `untrusted` group.
//!
//! Groups are tried in name order; the first that takes the job wins. When none does, the
//! refusal says, for each group, the first rule that failed.

use airlock_policy::{Group, Policy, Trust};
use globset::{GlobBuilder, GlobMatcher};

use crate::webhook::WorkflowJobEvent;

pub use airlock_policy::GENERIC_LABELS;

/// Why no group takes a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no runner group takes job {job_id} of {repository} with labels {labels:?}: {}", reasons.join("; "))]
pub struct Refusal {
    /// The GitHub job id.
    pub job_id: u64,
    /// `owner/name`.
    pub repository: String,
    /// The job's labels.
    pub labels: Vec<String>,
    /// One line per group (or one saying there is nothing to route on).
    pub reasons: Vec<String>,
}

/// Returns the name of the group that takes the job, or why none does.
pub fn route(policy: &Policy, ev: &WorkflowJobEvent) -> Result<String, Refusal> {
    let job = &ev.workflow_job;
    let wanted = airlock_policy::selecting_labels(&job.labels);
    let refuse = |reasons: Vec<String>| Refusal {
        job_id: job.id,
        repository: ev.repository.full_name.clone(),
        labels: job.labels.clone(),
        reasons,
    };
    if wanted.is_empty() {
        return Err(refuse(vec![
            "the job names no label besides self-hosted/linux/x64, so no group is selected"
                .to_owned(),
        ]));
    }
    let mut reasons = Vec::new();
    for (name, g) in &policy.groups {
        match check(g, ev, &wanted) {
            Ok(()) => return Ok(name.clone()),
            Err(why) => reasons.push(format!("group {name}: {why}")),
        }
    }
    if reasons.is_empty() {
        reasons.push("the policy has no groups".to_owned());
    }
    Err(refuse(reasons))
}

fn check(g: &Group, ev: &WorkflowJobEvent, wanted: &[String]) -> Result<(), String> {
    // A group served by a scale set gets its jobs from GitHub's assignment, never from a
    // webhook: taking both would start two runners for one job.
    if let Some(ss) = &g.scale_set {
        return Err(format!(
            "served by scale set {:?}, not by webhooks",
            ss.name
        ));
    }
    if !g.takes_labels(wanted) {
        let l = wanted
            .iter()
            .find(|l| !g.labels.iter().any(|gl| gl.eq_ignore_ascii_case(l)))
            .map(String::as_str)
            .unwrap_or_default();
        return Err(format!("label {l:?} is not among its labels"));
    }
    let repo = &ev.repository.full_name;
    if !g.repositories.iter().any(|p| glob_match(p, repo)) {
        return Err(format!("repository {repo} is not in its repositories"));
    }
    if !g.workflows.is_empty() {
        let wf = format!(
            "{repo}/{}",
            ev.workflow_job.workflow_name.as_deref().unwrap_or("")
        );
        if !g.workflows.iter().any(|p| glob_match(p, &wf)) {
            return Err(format!("workflow {wf:?} is not in its workflows"));
        }
    }
    if ev.repository.is_public() && g.trust != Trust::Untrusted {
        return Err(format!(
            "repository {repo} is public and the group is trusted (public code runs only in untrusted groups)"
        ));
    }
    Ok(())
}

/// Case-insensitive glob match (GitHub names are case-insensitive) where `*` does not cross
/// `/`. An invalid pattern matches nothing.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let m: Option<GlobMatcher> = GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(true)
        .build()
        .ok()
        .map(|g| g.compile_matcher());
    m.is_some_and(|m| m.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's own `queued` payload (the github component's fixture), with this job's
    /// repository, visibility, labels and workflow.
    fn ev(repo: &str, public: bool, labels: &[&str], wf: &str) -> WorkflowJobEvent {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../github/tests/fixtures/webhooks/workflow_job/queued.payload.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
        v["workflow_job"]["id"] = 42.into();
        v["workflow_job"]["labels"] = labels.iter().map(|s| s.to_string()).collect();
        v["workflow_job"]["workflow_name"] = wf.into();
        v["repository"]["full_name"] = repo.into();
        v["repository"]["private"] = (!public).into();
        v["repository"]["visibility"] = if public { "public" } else { "private" }.into();
        serde_json::from_value(v).expect("a workflow_job event")
    }

    fn policy() -> Policy {
        airlock_policy::parse(
            r#"
version = 1
default_group = "pr"
[groups.pr]
trust = "untrusted"
labels = ["airlock"]
repositories = ["*/*"]
[groups.trusted]
trust = "trusted"
labels = ["airlock-trusted", "big"]
repositories = ["octo-org/*"]
workflows = ["octo-org/*/Release"]
"#,
            std::path::Path::new("p.toml"),
        )
        .expect("policy")
    }

    #[test]
    fn routes_by_labels_repository_workflow_and_trust() {
        let p = policy();
        assert_eq!(
            route(
                &p,
                &ev("a/b", true, &["self-hosted", "Linux", "airlock"], "CI")
            ),
            Ok("pr".into())
        );
        assert_eq!(
            route(
                &p,
                &ev(
                    "octo-org/app",
                    false,
                    &["self-hosted", "airlock-trusted"],
                    "Release"
                )
            ),
            Ok("trusted".into())
        );
        // Wrong workflow.
        let r =
            route(&p, &ev("octo-org/app", false, &["airlock-trusted"], "CI")).expect_err("refused");
        assert!(r.to_string().contains("workflow"), "{r}");
        // Wrong repository.
        let r = route(&p, &ev("evil/app", false, &["airlock-trusted"], "Release"))
            .expect_err("refused");
        assert!(r.to_string().contains("repository evil/app"), "{r}");
        // Public repository never reaches a trusted group.
        let r = route(
            &p,
            &ev("octo-org/app", true, &["airlock-trusted"], "Release"),
        )
        .expect_err("refused");
        assert!(r.to_string().contains("public"), "{r}");
        // A label no group has.
        let r = route(&p, &ev("a/b", false, &["self-hosted", "gpu"], "CI")).expect_err("x");
        assert!(r.to_string().contains("\"gpu\""), "{r}");
        // Only generic labels select nothing.
        let r = route(&p, &ev("a/b", false, &["self-hosted", "linux"], "CI")).expect_err("x");
        assert!(r.to_string().contains("no label"), "{r}");
        // `*` does not cross `/`.
        assert!(!glob_match("octo-org/*", "octo-org/a/b"));
        assert!(glob_match("Octo-Org/*", "octo-org/a"));
    }

    #[test]
    fn empty_repositories_means_none() {
        let p = airlock_policy::parse(
            "version = 1\n[groups.x]\nlabels = [\"airlock\"]\n",
            std::path::Path::new("p.toml"),
        )
        .expect("policy");
        let r = route(&p, &ev("a/b", false, &["airlock"], "CI")).expect_err("refused");
        assert!(r.to_string().contains("not in its repositories"), "{r}");
    }
}
