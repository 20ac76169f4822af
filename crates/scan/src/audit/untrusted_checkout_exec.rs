//! `pull_request_target` / `workflow_run` / comment-triggered jobs that check out the
//! pull request's code and then execute it with the base repository's privileges.

use super::{on_self_hosted, rule, self_hosted, Audit, Context, Sink, PRIVILEGED_UNTRUSTED_EVENTS};
use crate::model::{Job, Step, Workflow};
use crate::report::{RuleInfo, Severity};

rule!(
    RULE,
    "untrusted-checkout-exec",
    Critical,
    "untrusted pull request code checked out and executed in a privileged context"
);

/// See the module documentation.
pub struct UntrustedCheckoutExec;

/// Expressions that name the pull request's (attacker's) commit or branch.
const HEAD_REFS: &[&str] = &[
    "github.event.pull_request.head.sha",
    "github.event.pull_request.head.ref",
    "github.event.pull_request.merge_commit_sha",
    "github.event.pull_request.number",
    "github.head_ref",
    "github.event.workflow_run.head_sha",
    "github.event.workflow_run.head_branch",
    "github.event.workflow_run.head_commit.id",
    "github.event.issue.number",
    "refs/pull/",
    "steps.",
];

/// Commands that run code from the checked-out tree (build scripts, package hooks, tests).
const EXEC_MARKERS: &[&str] = &[
    "npm ",
    "npx ",
    "yarn",
    "pnpm ",
    "make",
    "cmake",
    "pip install",
    "python ",
    "python3 ",
    "pytest",
    "tox",
    "poetry ",
    "go build",
    "go test",
    "go run",
    "go generate",
    "cargo ",
    "mvn",
    "./mvnw",
    "gradle",
    "./gradlew",
    "bundle ",
    "rake",
    "composer ",
    "dotnet ",
    "./",
    "bash ",
    "sh ",
    "node ",
    "deno ",
    "bun ",
    "docker build",
    "docker compose",
    "pre-commit",
    "ant ",
    "sbt ",
    "mix ",
    "swift ",
    "meson",
    "ninja",
    "tsc",
];

/// Actions that execute the checked-out project.
const EXEC_ACTIONS: &[&str] = &[
    "docker/build-push-action",
    "goreleaser/goreleaser-action",
    "gradle/gradle-build-action",
    "gradle/actions/setup-gradle",
    "pre-commit/action",
    "cypress-io/github-action",
    "actions/github-script",
];

fn checks_out_head(step: &Step) -> Option<crate::model::Pos> {
    if step.action().as_deref() != Some("actions/checkout") {
        return None;
    }
    let (pos, r) = step.input("ref")?;
    let r = r.to_ascii_lowercase();
    HEAD_REFS.iter().any(|h| r.contains(h)).then_some(pos)
}

fn executes(step: &Step) -> bool {
    if let Some((_, run)) = &step.run {
        let lower = run.to_ascii_lowercase();
        return EXEC_MARKERS.iter().any(|m| {
            lower.lines().any(|l| {
                l.trim_start().starts_with(m)
                    || l.contains(&format!(" {m}"))
                    || l.contains(&format!("&& {m}"))
            })
        });
    }
    match step.action() {
        Some(a) => a.starts_with("./") || EXEC_ACTIONS.contains(&a.as_str()),
        None => false,
    }
}

impl Audit for UntrustedCheckoutExec {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn job(&self, wf: &Workflow, job: &Job, cx: &Context<'_>, out: &mut Sink) {
        let events: Vec<&str> = wf
            .triggers
            .iter()
            .map(|t| t.event.as_str())
            .chain(wf.inherited.iter().map(|(e, _)| e.as_str()))
            .filter(|e| PRIVILEGED_UNTRUSTED_EVENTS.contains(e))
            .collect();
        if events.is_empty() {
            return;
        }
        let Some((ci, cpos)) = job
            .steps
            .iter()
            .find_map(|s| checks_out_head(s).map(|p| (s.index, p)))
        else {
            return;
        };
        let Some(exec) = job.steps.iter().find(|s| s.index > ci && executes(s)) else {
            return;
        };
        let sh = self_hosted(job, cx);
        let exec_line = exec
            .run
            .as_ref()
            .map(|(p, _)| p.line)
            .or(exec.uses.as_ref().map(|(p, _)| p.line))
            .unwrap_or(exec.pos.line);
        out.push(
            self.finding(&wf.path, cpos)
                .severity(on_self_hosted(sh, Severity::Critical, Severity::High))
                .title(format!(
                    "job `{}` ({}) checks out the pull request's code and executes it in step `{}` (line {})",
                    job.id,
                    events.join(", "),
                    exec.name,
                    exec_line
                ))
                .explain(
                    "These triggers run with the base repository's secrets and a token that can \
                     write, yet the checked-out ref is chosen by whoever opened the pull request. \
                     Build scripts, package install hooks, Makefiles and test suites from that \
                     ref then run with those privileges (a \"pwn request\"); on a self-hosted \
                     runner they also persist on the machine.",
                )
                .fix(
                    "Do not build untrusted code under pull_request_target/workflow_run: use \
                     `pull_request` (no secrets) for the build and pass results as artifacts to a \
                     privileged workflow that only reads them, or check out the base ref only.",
                ),
        );
    }
}
