//! Caches written by untrusted runs and read by trusted ones.

use super::{rule, self_hosted, Audit, Context, Sink, PRIVILEGED_UNTRUSTED_EVENTS};
use crate::model::{Job, Step, Workflow};
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "cache-poisoning",
    High,
    "cache shared between untrusted and trusted runs"
);

/// See the module documentation.
pub struct CachePoisoning;

/// Setup actions whose `cache:` input enables a dependency cache.
const SETUP_WITH_CACHE: &[&str] = &[
    "actions/setup-node",
    "actions/setup-python",
    "actions/setup-go",
    "actions/setup-java",
    "actions/setup-dotnet",
    "gradle/actions/setup-gradle",
    "astral-sh/setup-uv",
    "swatinem/rust-cache",
];

/// Whether the step restores/saves a cache.
fn caches(step: &Step) -> bool {
    let Some(a) = step.action() else { return false };
    if a == "actions/cache" || a == "actions/cache/restore" || a == "swatinem/rust-cache" {
        return true;
    }
    if a == "actions/setup-go" {
        // setup-go caches unless told not to.
        return step.input("cache").is_none_or(|(_, v)| v.trim() != "false");
    }
    SETUP_WITH_CACHE.contains(&a.as_str())
        && step
            .input("cache")
            .or_else(|| step.input("enable-cache"))
            .is_some_and(|(_, v)| !v.trim().is_empty() && v.trim() != "false")
}

const TRUSTED_EVENTS: &[&str] = &[
    "push",
    "release",
    "schedule",
    "workflow_dispatch",
    "merge_group",
];

impl Audit for CachePoisoning {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn job(&self, wf: &Workflow, job: &Job, cx: &Context<'_>, out: &mut Sink) {
        let Some(step) = job.steps.iter().find(|s| caches(s)) else {
            return;
        };
        let pos = step.uses.as_ref().map(|(p, _)| *p).unwrap_or(step.pos);
        let privileged: Vec<&str> = wf
            .triggers
            .iter()
            .map(|t| t.event.as_str())
            .filter(|e| PRIVILEGED_UNTRUSTED_EVENTS.contains(e))
            .collect();
        let untrusted_pr = wf.has_trigger("pull_request");
        let trusted: Vec<&str> = wf
            .triggers
            .iter()
            .map(|t| t.event.as_str())
            .filter(|e| TRUSTED_EVENTS.contains(e))
            .collect();
        if !privileged.is_empty() {
            out.push(
                self.finding(&wf.path, pos)
                    .severity(Severity::High)
                    .title(format!(
                        "job `{}` uses a cache in a workflow triggered by {}",
                        job.id,
                        privileged.join(", ")
                    ))
                    .explain(
                        "These events run in the base branch's cache scope, so anything an \
                         outsider's run puts into the cache is restored by later trusted runs \
                         (pushes, releases): a poisoned dependency cache becomes code in your \
                         release build.",
                    )
                    .fix("Do not use caches in workflows triggered by untrusted events, or key them so trusted runs never restore them."),
            );
        } else if untrusted_pr && !trusted.is_empty() && self_hosted(job, cx).is_some() {
            out.push(
                self.finding(&wf.path, pos)
                    .severity(Severity::Medium)
                    .confidence(Confidence::Medium)
                    .title(format!(
                        "job `{}` shares one cache between pull_request and {}",
                        job.id,
                        trusted.join(", ")
                    ))
                    .explain(
                        "The same self-hosted job runs for pull requests and for trusted events. \
                         A persistent runner keeps its local caches and tool directories (npm, \
                         pip, Go module and setup-* caches under the runner's home and `_tool`) \
                         between jobs, so a pull request's run can seed what the trusted run \
                         restores.",
                    )
                    .fix("Use ephemeral runners (an airlock sandbox per job), or keep pull requests and trusted events on different runner groups."),
            );
        }
    }
}
