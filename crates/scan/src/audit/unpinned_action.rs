//! Third-party actions and reusable workflows not pinned to a full commit SHA.

use super::{is_third_party, rule, self_hosted, Audit, Context, Sink};
use crate::model::{CompositeAction, Job, Pos, Step, Workflow};
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "unpinned-action",
    Medium,
    "third-party action not pinned to a full commit SHA"
);

/// See the module documentation.
pub struct UnpinnedAction;

/// Whether `uses` is mutable: a tag/branch ref, no ref, or a Docker image without digest.
fn unpinned(uses: &str) -> bool {
    if let Some(img) = uses.strip_prefix("docker://") {
        return !img.contains("@sha256:");
    }
    if uses.starts_with("./") || !is_third_party(uses) {
        return false;
    }
    match uses.rsplit_once('@') {
        Some((_, r)) => !(r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit())),
        None => true,
    }
}

const WHY: &str = "A tag or branch can be moved by whoever controls the action's repository \
    (or steals its credentials); the next run executes the new code with this job's token and \
    secrets. On a self-hosted runner it also runs on your machine, inside your network.";
const FIX: &str = "Pin to the full 40-character commit SHA and keep the tag as a comment \
    (`uses: owner/action@<sha> # v1.2.3`); let Dependabot or Renovate update it.";

impl UnpinnedAction {
    fn emit(
        &self,
        file: &str,
        pos: Pos,
        uses: &str,
        sev: Severity,
        conf: Confidence,
        out: &mut Sink,
    ) {
        out.push(
            self.finding(file, pos)
                .severity(sev)
                .confidence(conf)
                .title(format!("`{uses}` is not pinned to a commit SHA"))
                .explain(WHY)
                .fix(FIX),
        );
    }
}

impl Audit for UnpinnedAction {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn job(&self, wf: &Workflow, job: &Job, cx: &Context<'_>, out: &mut Sink) {
        if let Some((pos, uses)) = &job.uses {
            if !uses.starts_with("./") && unpinned(uses) {
                self.emit(
                    &wf.path,
                    *pos,
                    uses,
                    Severity::Medium,
                    Confidence::High,
                    out,
                );
            }
            return;
        }
        let Some(conf) = self_hosted(job, cx) else {
            return;
        };
        for step in &job.steps {
            if let Some((pos, uses)) = &step.uses {
                if unpinned(uses) {
                    self.emit(&wf.path, *pos, uses, Severity::Medium, conf, out);
                }
            }
        }
    }

    fn action_step(&self, a: &CompositeAction, step: &Step, _cx: &Context<'_>, out: &mut Sink) {
        if let Some((pos, uses)) = &step.uses {
            if unpinned(uses) {
                // The runner is the caller's; we cannot tell if it is self-hosted.
                self.emit(&a.path, *pos, uses, Severity::Low, Confidence::Medium, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unpinned;

    #[test]
    fn pins() {
        assert!(unpinned("someone/action@v1"));
        assert!(unpinned("someone/action"));
        assert!(unpinned("someone/repo/.github/workflows/x.yml@main"));
        assert!(!unpinned(
            "someone/action@0123456789abcdef0123456789abcdef01234567"
        ));
        assert!(!unpinned("actions/checkout@v4"));
        assert!(!unpinned("./local"));
        assert!(unpinned("docker://alpine:3"));
        assert!(!unpinned("docker://alpine@sha256:abcd"));
    }
}
