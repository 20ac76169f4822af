//! `pull_request_target` / `workflow_run` / comment-triggered jobs that check out the
//! pull request's code (by `actions/checkout`, `gh pr checkout`, a fetched `pull/N/head`, an
//! input a caller fills with the head SHA) or run a pull request run's artifacts, and then
//! execute them with the base repository's privileges.

use super::{
    behind_environment, names_pr_head, on_self_hosted, rule, self_hosted, Audit, Context, Sink,
    PRIVILEGED_UNTRUSTED_EVENTS,
};
use crate::model::{Job, Pos, Step, Workflow};
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "untrusted-checkout-exec",
    Critical,
    "untrusted pull request code checked out and executed in a privileged context"
);

/// See the module documentation.
pub struct UntrustedCheckoutExec;

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

/// Git commands that move the work tree to another commit.
const SWITCH_VERBS: &[&str] = &[
    "git checkout",
    "git switch",
    "git reset",
    "git merge",
    "git pull",
    "git rebase",
    "git cherry-pick",
    "git worktree add",
];

/// First words of a command that run code: interpreters, package managers and builders.
const RUNNERS: &[&str] = &[
    "bash", "sh", "zsh", "source", ".", "node", "python", "python3", "ruby", "perl", "php", "pwsh",
    "deno", "bun", "npm", "npx", "yarn", "pnpm", "make", "cmake", "pip", "pip3", "go", "cargo",
    "mvn", "gradle", "dotnet", "java", "bundle", "rake", "composer", "pytest", "tox",
];

/// Where and how a job takes the pull request's code.
struct Taken {
    /// Index of the step that takes it.
    step: usize,
    /// Where the finding points.
    pos: Pos,
    /// What takes it, for the title.
    how: String,
    /// The rest of that step's script, which runs after it.
    rest: String,
    /// How sure the reading is.
    confidence: Confidence,
}

/// A shortened, single-line quote of a command for a title.
fn quote(cmd: &str) -> String {
    let c: String = cmd.trim().chars().take(80).collect();
    format!("`{c}`")
}

/// The part of a script after line `i`'s first command that contains `verb`.
fn after(lines: &[&str], i: usize, verb: &str) -> String {
    let line = lines[i].to_ascii_lowercase();
    let tail = line
        .find(verb)
        .map(|at| &lines[i][at..])
        .and_then(|t| t.find("&&").or_else(|| t.find(';')).map(|j| &t[j + 1..]))
        .unwrap_or("");
    let mut rest = tail.trim_start_matches(['&', ';', ' ']).to_owned();
    for l in &lines[i + 1..] {
        rest.push('\n');
        rest.push_str(l);
    }
    rest
}

fn checkout_action(step: &Step, wf: &Workflow) -> Option<Taken> {
    if step.action().as_deref() != Some("actions/checkout") {
        return None;
    }
    let (pos, r) = step.input("ref")?;
    names_pr_head(r, wf).then(|| Taken {
        step: step.index,
        pos,
        how: format!("checks out {}", quote(r)),
        rest: String::new(),
        confidence: Confidence::High,
    })
}

/// A script that checks out the pull request: `gh pr checkout`, or a git command that moves
/// to the head (named, or fetched from `pull/N/head` before).
fn checkout_script(step: &Step, wf: &Workflow, fetched: &mut bool) -> Option<Taken> {
    let (pos, run) = step.run.as_ref()?;
    let lines: Vec<&str> = run.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let cmd = l.to_ascii_lowercase();
        let taken = |verb: &str, confidence| Taken {
            step: step.index,
            pos: *pos,
            how: format!("runs {}", quote(l)),
            rest: after(&lines, i, verb),
            confidence,
        };
        for verb in ["gh pr checkout", "hub pr checkout"] {
            if cmd.contains(verb) {
                return Some(taken(verb, Confidence::High));
            }
        }
        if cmd.contains("git fetch") && (cmd.contains("pull/") || names_pr_head(&cmd, wf)) {
            *fetched = true;
        }
        let Some(verb) = SWITCH_VERBS.iter().find(|v| cmd.contains(*v)) else {
            continue;
        };
        let names_head = names_pr_head(&cmd, wf) || cmd.contains("pull/");
        if names_head || cmd.contains("fetch_head") {
            return Some(taken(verb, Confidence::High));
        }
        if *fetched {
            return Some(taken(verb, Confidence::Medium));
        }
    }
    None
}

/// Where the job first takes the pull request's code.
fn takes_head(job: &Job, wf: &Workflow) -> Option<Taken> {
    let mut fetched = false;
    job.steps
        .iter()
        .find_map(|s| checkout_action(s, wf).or_else(|| checkout_script(s, wf, &mut fetched)))
}

/// A step that downloads the artifacts of the run that triggered a `workflow_run`
/// workflow: whoever opened the pull request chose their content.
fn downloads_run_artifact(step: &Step) -> Option<Taken> {
    let input = |k: &str| step.input(k).map(|(_, v)| v.to_ascii_lowercase());
    let hit = match step.action().as_deref() {
        Some("actions/download-artifact") => {
            input("run-id").is_some_and(|v| v.contains("workflow_run"))
        }
        Some("dawidd6/action-download-artifact") => true,
        Some("actions/github-script") => input("script").is_some_and(|v| {
            v.contains("workflow_run") && (v.contains("artifact") || v.contains("download"))
        }),
        _ => step.run.as_ref().is_some_and(|(_, r)| {
            let r = r.to_ascii_lowercase();
            r.contains("gh run download") && r.contains("workflow_run")
        }),
    };
    hit.then(|| Taken {
        step: step.index,
        pos: step
            .uses
            .as_ref()
            .or(step.run.as_ref())
            .map_or(step.pos, |(p, _)| *p),
        how: "downloads the triggering run's artifacts".to_owned(),
        rest: String::new(),
        confidence: Confidence::Medium,
    })
}

/// Whether a script runs code it did not write: a command whose first word is an
/// interpreter or builder, or a path (`./x`). Stricter than [`executes`]: reading an
/// artifact (`cat`, `unzip ./pr.zip`, `gh pr comment`) is not running it.
fn runs_code(script: &str) -> bool {
    script
        .split(['\n', ';', '|'])
        .flat_map(|l| l.split("&&"))
        .any(|c| {
            let first = c
                .split_whitespace()
                .find(|w| !w.contains('=') && *w != "sudo" && *w != "env" && *w != "exec")
                .unwrap_or("");
            first.starts_with("./") || RUNNERS.contains(&first)
        })
}

/// The first step after `taken` that executes what it took (or the rest of its own script).
fn executed_after<'a>(job: &'a Job, taken: &Taken, strict: bool) -> Option<(String, usize)> {
    let exec = |s: &Step| {
        if strict {
            s.run.as_ref().is_some_and(|(_, r)| runs_code(r))
                || s.action().is_some_and(|a| a.starts_with("./"))
        } else {
            executes(s)
        }
    };
    let own = if strict {
        runs_code(&taken.rest)
    } else {
        executes_text(&taken.rest)
    };
    if own {
        let s = job.steps.get(taken.step)?;
        return Some((s.name.clone(), taken.pos.line));
    }
    let s: &'a Step = job.steps.iter().find(|s| s.index > taken.step && exec(s))?;
    let line = s
        .run
        .as_ref()
        .map(|(p, _)| p.line)
        .or(s.uses.as_ref().map(|(p, _)| p.line))
        .unwrap_or(s.pos.line);
    Some((s.name.clone(), line))
}

fn executes_text(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    EXEC_MARKERS.iter().any(|m| {
        lower.lines().any(|l| {
            l.trim_start().starts_with(m)
                || l.contains(&format!(" {m}"))
                || l.contains(&format!("&& {m}"))
        })
    })
}

fn executes(step: &Step) -> bool {
    if let Some((_, run)) = &step.run {
        return executes_text(run);
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
        let sh = self_hosted(job, cx);
        if let Some(t) = takes_head(job, wf) {
            if let Some((step, line)) = executed_after(job, &t, false) {
                let f = self.checkout_finding(wf, job, &events, &t, sh, &step, line);
                out.push(behind_environment(f, job));
                return;
            }
        }
        if wf.has_trigger("workflow_run") {
            let taken = job.steps.iter().find_map(downloads_run_artifact);
            if let Some(t) = taken {
                if let Some((step, line)) = executed_after(job, &t, true) {
                    let f = self.artifact_finding(wf, job, &t, sh, &step, line);
                    out.push(behind_environment(f, job));
                }
            }
        }
    }
}

impl UntrustedCheckoutExec {
    #[allow(clippy::too_many_arguments)]
    fn checkout_finding(
        &self,
        wf: &Workflow,
        job: &Job,
        events: &[&str],
        t: &Taken,
        sh: Option<Confidence>,
        step: &str,
        line: usize,
    ) -> crate::report::Finding {
        let via = wf
            .head_inputs
            .first()
            .filter(|(name, _)| {
                t.how
                    .to_ascii_lowercase()
                    .contains(&format!("inputs.{name}"))
            })
            .map(|(name, caller)| {
                format!(" (input `{name}` is the pull request's head in {caller})")
            })
            .unwrap_or_default();
        self.finding(&wf.path, t.pos)
            .severity(on_self_hosted(sh, Severity::Critical, Severity::High))
            .confidence(t.confidence)
            .title(format!(
                "job `{}` ({}) {}{} and executes the pull request's code in step `{}` (line {})",
                job.id,
                events.join(", "),
                t.how,
                via,
                step,
                line
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
            )
    }

    fn artifact_finding(
        &self,
        wf: &Workflow,
        job: &Job,
        t: &Taken,
        sh: Option<Confidence>,
        step: &str,
        line: usize,
    ) -> crate::report::Finding {
        self.finding(&wf.path, t.pos)
            .severity(on_self_hosted(sh, Severity::Critical, Severity::High))
            .confidence(t.confidence)
            .title(format!(
                "job `{}` (workflow_run) {} and runs code in step `{}` (line {})",
                job.id, t.how, step, line
            ))
            .explain(
                "A workflow_run job runs with the base repository's secrets and a write token, \
                 but the artifacts of the run that triggered it were made by that run: for a \
                 pull request, by the pull request's code. Running anything from them (or \
                 running a build in a workspace they were unpacked into) runs the outsider's \
                 code with those privileges.",
            )
            .fix(
                "Treat the artifact as data: unpack it outside the workspace, read only the \
                 values you need (validate them), and never execute or build from it.",
            )
    }
}
