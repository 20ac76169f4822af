//! With `--policy`: a self-hosted job whose labels match no runner group of the policy.

use super::{is_github_hosted_label, routed_groups, rule, Audit, Context, Sink};
use crate::model::{Job, Workflow};
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "policy-unrouted-labels",
    Medium,
    "self-hosted job's labels match no runner group in the policy"
);

/// See the module documentation.
pub struct PolicyUnroutedLabels;

impl Audit for PolicyUnroutedLabels {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn job(&self, wf: &Workflow, job: &Job, cx: &Context<'_>, out: &mut Sink) {
        let Some(p) = cx.policy else { return };
        if job.uses.is_some() {
            return;
        }
        if let Some(g) = &job.runs_on.group {
            if !p.policy.groups.contains_key(g) {
                out.push(
                    self.finding(&wf.path, job.runs_on.pos)
                        .title(format!("job `{}` asks for runner group `{g}`, which the policy does not define", job.id))
                        .explain(UNROUTED)
                        .fix(FIX),
                );
            }
            return;
        }
        for set in &job.runs_on.label_sets {
            if set.iter().all(|l| is_github_hosted_label(l)) {
                continue;
            }
            if routed_groups(p, set).is_empty() {
                out.push(
                    self.finding(&wf.path, job.runs_on.pos)
                        .severity(Severity::Medium)
                        .confidence(Confidence::High)
                        .title(format!(
                            "job `{}` asks for labels [{}], which no policy group declares",
                            job.id,
                            set.join(", ")
                        ))
                        .explain(UNROUTED)
                        .fix(FIX),
                );
            }
        }
    }
}

const UNROUTED: &str = "The policy cannot tell which group (and so which sandbox, secrets and \
    egress) this job gets: either it waits forever for a runner, or it lands on a runner that \
    is not managed by airlock at all.";
const FIX: &str = "Add the labels to the `labels` of the group that should run the job, or \
    change `runs-on` to labels a group declares.";
