//! Reusable-workflow calls that pass every secret with `secrets: inherit`.

use super::{rule, Audit, Context, Sink};
use crate::model::{Job, Workflow};
use crate::report::{RuleInfo, Severity};

rule!(
    RULE,
    "secrets-inherit",
    Medium,
    "`secrets: inherit` passes every secret to the called workflow"
);

/// See the module documentation.
pub struct SecretsInherit;

impl Audit for SecretsInherit {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn job(&self, wf: &Workflow, job: &Job, _cx: &Context<'_>, out: &mut Sink) {
        let (Some((_, uses)), Some((pos, secrets))) = (&job.uses, &job.secrets) else {
            return;
        };
        if secrets.as_scalar().is_none_or(|s| s.as_str() != "inherit") {
            return;
        }
        let external = !uses.starts_with("./");
        out.push(
            self.finding(&wf.path, *pos)
                .severity(if external { Severity::High } else { Severity::Medium })
                .title(format!("job `{}` passes all secrets to `{uses}`", job.id))
                .explain(
                    "`secrets: inherit` hands the called workflow every repository, environment \
                     and organisation secret the caller can see, not the few it uses. Anything \
                     that workflow runs — on whatever runner it picks — can read them all.",
                )
                .fix("Pass only the secrets the workflow declares: `secrets: { NAME: ${{ secrets.NAME }} }`."),
        );
    }
}
