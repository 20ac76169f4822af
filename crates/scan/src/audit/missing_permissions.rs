//! Jobs that do not say what their token may do, so they get the repository's default.

use super::{rule, self_hosted, untrusted_reach, Audit, Context, Sink};
use crate::model::Workflow;
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "missing-permissions",
    Low,
    "no `permissions:` block: the token gets the repository default"
);

/// See the module documentation.
pub struct MissingPermissions;

impl Audit for MissingPermissions {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn workflow(&self, wf: &Workflow, cx: &Context<'_>, out: &mut Sink) {
        if wf.permissions.is_some() {
            return;
        }
        let bare: Vec<_> = wf
            .jobs
            .iter()
            .filter(|j| j.permissions.is_none() && j.uses.is_none())
            .collect();
        if bare.is_empty() {
            return;
        }
        let exposed =
            !untrusted_reach(wf).is_empty() || bare.iter().any(|j| self_hosted(j, cx).is_some());
        for job in bare {
            out.push(
                self.finding(&wf.path, job.pos)
                    .severity(if exposed {
                        Severity::Medium
                    } else {
                        Severity::Low
                    })
                    .confidence(Confidence::Medium)
                    .title(format!(
                        "job `{}` has no `permissions:` and neither has the workflow",
                        job.id
                    ))
                    .explain(
                        "Without a permissions block the GITHUB_TOKEN gets the repository's or \
                         organisation's default, which is read-write for many repositories. A job \
                         that does not need to write should not hold a token that can.",
                    )
                    .fix(
                        "Add `permissions: { contents: read }` (or `{}`) at the top of the \
                         workflow and grant more only where needed.",
                    ),
            );
        }
    }
}
