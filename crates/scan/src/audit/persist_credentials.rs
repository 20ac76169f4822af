//! `actions/checkout` leaving the token in `.git/config`.

use super::{rule, self_hosted, Audit, Context, Sink};
use crate::model::{CompositeAction, Job, Step, Workflow};
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "persist-credentials",
    Medium,
    "`actions/checkout` keeps the token in the workspace's git config"
);

/// See the module documentation.
pub struct PersistCredentials;

fn leaves_token(step: &Step) -> bool {
    step.action().as_deref() == Some("actions/checkout")
        && !step
            .input("persist-credentials")
            .is_some_and(|(_, v)| v.trim().eq_ignore_ascii_case("false"))
}

const WHY: &str = "By default `actions/checkout` writes the job's token into `.git/config` for \
    the rest of the job. Every later step, action and build script can read it, and an \
    uploaded artifact or a workspace that survives the job (non-ephemeral self-hosted runners \
    keep `_work`) leaks it.";
const FIX: &str = "Add `with: { persist-credentials: false }` to the checkout step and pass a \
    token explicitly to the one step that pushes.";

impl Audit for PersistCredentials {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn step(&self, wf: &Workflow, job: &Job, step: &Step, cx: &Context<'_>, out: &mut Sink) {
        if !leaves_token(step) {
            return;
        }
        let sh = self_hosted(job, cx);
        let pos = step.uses.as_ref().map(|(p, _)| *p).unwrap_or(step.pos);
        out.push(
            self.finding(&wf.path, pos)
                .severity(if sh.is_some() {
                    Severity::Medium
                } else {
                    Severity::Low
                })
                .title(format!("checkout in job `{}` persists the token", job.id))
                .explain(WHY)
                .fix(FIX),
        );
    }

    fn action_step(&self, a: &CompositeAction, step: &Step, _cx: &Context<'_>, out: &mut Sink) {
        if leaves_token(step) {
            let pos = step.uses.as_ref().map(|(p, _)| *p).unwrap_or(step.pos);
            out.push(
                self.finding(&a.path, pos)
                    .severity(Severity::Low)
                    .confidence(Confidence::Medium)
                    .title("checkout in a composite action persists the token")
                    .explain(WHY)
                    .fix(FIX),
            );
        }
    }
}
