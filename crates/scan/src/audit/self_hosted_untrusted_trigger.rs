//! A job that can run on a self-hosted runner in a workflow that outsiders can trigger.

use super::{
    behind_environment, describe_runner, job_reach, rule, self_hosted, Audit, Context, Sink,
};
use crate::model::{Job, Workflow};
use crate::report::{RuleInfo, Severity};

rule!(
    RULE,
    "self-hosted-untrusted-trigger",
    Critical,
    "self-hosted runner reachable from an untrusted trigger"
);

/// See the module documentation.
pub struct SelfHostedUntrustedTrigger;

impl Audit for SelfHostedUntrustedTrigger {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn job(&self, wf: &Workflow, job: &Job, cx: &Context<'_>, out: &mut Sink) {
        let Some(conf) = self_hosted(job, cx) else {
            return;
        };
        let reach = job_reach(wf, job);
        let events: Vec<&str> = reach.iter().map(|r| r.event.as_str()).collect();
        if events.is_empty() {
            return;
        }
        // Fork pull requests run the attacker's own code on the runner; the other events run
        // the base branch's code but with input, timing and often checkouts chosen by them.
        let severity = if events.contains(&"pull_request") {
            Severity::Critical
        } else {
            Severity::High
        };
        let via: Vec<String> = reach
            .iter()
            .filter_map(|r| {
                r.via
                    .as_ref()
                    .map(|v| format!("{} (called from {v})", r.event))
            })
            .collect();
        let trigger_text = if via.is_empty() {
            events.join(", ")
        } else {
            via.join(", ")
        };
        let f = self
            .finding(&wf.path, job.runs_on.pos)
                .severity(severity)
                .confidence(conf)
                .title(format!(
                    "job `{}` runs on {} and is triggered by {}",
                    job.id,
                    describe_runner(job),
                    trigger_text
                ))
                .explain(
                    "Anyone who can open a pull request, comment or start these events can make \
                     this job run on a self-hosted runner. A non-ephemeral runner keeps whatever \
                     the job leaves behind (processes, caches, tool installs, credentials), reaches \
                     the runner's network and can be used to attack the next job or the host.",
                )
                .fix(
                    "Run jobs from untrusted triggers on GitHub-hosted runners, or on an \
                     airlock `untrusted` group (ephemeral sandbox, closed network). If only \
                     same-repository pull requests should reach it, add \
                     `if: github.event.pull_request.head.repo.full_name == github.repository`.",
            );
        out.push(behind_environment(f, job));
    }
}
