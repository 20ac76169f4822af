//! With `--policy`: a job outsiders can trigger whose labels route it to a `trusted` group.

use airlock_policy::Trust;

use super::{job_reach, routed_groups, rule, Audit, Context, Sink};
use crate::model::{Job, Workflow};
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "policy-trusted-group",
    Critical,
    "job reachable from forks routes to a trusted runner group"
);

/// See the module documentation.
pub struct PolicyTrustedGroup;

impl Audit for PolicyTrustedGroup {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn job(&self, wf: &Workflow, job: &Job, cx: &Context<'_>, out: &mut Sink) {
        let Some(p) = cx.policy else { return };
        if job.uses.is_some() {
            return;
        }
        let events: Vec<String> = job_reach(wf, job).into_iter().map(|r| r.event).collect();
        if events.is_empty() {
            return;
        }
        let mut trusted: Vec<&str> = Vec::new();
        for set in &job.runs_on.label_sets {
            for (name, trust) in routed_groups(p, set) {
                if trust == Trust::Trusted && !trusted.contains(&name) {
                    trusted.push(name);
                }
            }
        }
        if let Some(g) = &job.runs_on.group {
            if p.policy
                .groups
                .get(g)
                .is_some_and(|gr| gr.trust == Trust::Trusted)
                && !trusted.contains(&g.as_str())
            {
                trusted.push(g);
            }
        }
        if trusted.is_empty() {
            return;
        }
        out.push(
            self.finding(&wf.path, job.runs_on.pos)
                .severity(Severity::Critical)
                .confidence(Confidence::High)
                .title(format!(
                    "job `{}` ({}) routes to trusted group{} {}",
                    job.id,
                    events.join(", "),
                    if trusted.len() == 1 { "" } else { "s" },
                    trusted.join(", ")
                ))
                .explain(
                    "The policy marks this group `trusted`: its jobs get the group's secrets, \
                     pass-through environment and egress, on the assumption that only the \
                     organisation's writers choose the code. This job can be started by outsiders, \
                     so their code would run with all of that.",
                )
                .fix(
                    "Give the job labels that route to an `untrusted` group, or restrict it to \
                     trusted events (push, workflow_dispatch) or same-repository pull requests.",
                ),
        );
    }
}
