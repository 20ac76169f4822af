//! The audits: one per file, each a unit struct implementing [`Audit`], listed in order in
//! [`registry`]. The trait's default methods walk workflow → job → step and composite action
//! → step, so an audit overrides only the level it cares about.

use airlock_policy::{LoadedPolicy, Trust};

use crate::model::{CompositeAction, Job, Pos, Step, Workflow};
use crate::report::{Confidence, Finding, Location, RuleInfo, Severity};

mod cache_poisoning;
mod dangerous_container;
mod excessive_permissions;
mod missing_permissions;
mod persist_credentials;
mod policy_public_group;
mod policy_trusted_group;
mod policy_unrouted_labels;
mod secrets_inherit;
mod self_hosted_untrusted_trigger;
mod template_injection;
mod unpinned_action;
mod untrusted_checkout_exec;

/// Base of the documentation links.
pub const DOCS: &str = "https://github.com/airlock/airlock/blob/main/docs/scan.md";

/// Declares a `RuleInfo` constant: id, default severity, summary.
macro_rules! rule {
    ($name:ident, $id:literal, $sev:ident, $summary:literal) => {
        /// Rule metadata.
        pub const $name: $crate::report::RuleInfo = $crate::report::RuleInfo {
            id: $id,
            summary: $summary,
            default_severity: $crate::report::Severity::$sev,
            help_uri: concat!(
                "https://github.com/airlock/airlock/blob/main/docs/scan.md#",
                $id
            ),
        };
    };
}
pub(crate) use rule;

rule!(
    INVALID_YAML,
    "invalid-yaml",
    Medium,
    "file is not valid workflow YAML and could not be audited"
);

/// What every audit sees besides the file.
pub struct Context<'a> {
    /// The runner-group policy given with `--policy`.
    pub policy: Option<&'a LoadedPolicy>,
    /// The policy file's text, to locate groups in it.
    pub policy_src: Option<&'a str>,
}

/// Where findings go.
pub type Sink = Vec<Finding>;

/// One audit. Override the walk level you need; the defaults descend.
pub trait Audit: Sync {
    /// The rule this audit reports.
    fn rule(&self) -> &'static RuleInfo;

    /// Audits a workflow; by default each job.
    fn workflow(&self, wf: &Workflow, cx: &Context<'_>, out: &mut Sink) {
        for job in &wf.jobs {
            self.job(wf, job, cx, out);
        }
    }

    /// Audits a job; by default each step.
    fn job(&self, wf: &Workflow, job: &Job, cx: &Context<'_>, out: &mut Sink) {
        for step in &job.steps {
            self.step(wf, job, step, cx, out);
        }
    }

    /// Audits one step of a job.
    fn step(&self, _wf: &Workflow, _job: &Job, _step: &Step, _cx: &Context<'_>, _out: &mut Sink) {}

    /// Audits a composite action; by default each step.
    fn action(&self, a: &CompositeAction, cx: &Context<'_>, out: &mut Sink) {
        for step in &a.steps {
            self.action_step(a, step, cx, out);
        }
    }

    /// Audits one step of a composite action.
    fn action_step(&self, _a: &CompositeAction, _s: &Step, _cx: &Context<'_>, _out: &mut Sink) {}

    /// Audits the policy itself, once per scan.
    fn policy(&self, _cx: &Context<'_>, _out: &mut Sink) {}

    /// A finding of this audit's rule at `pos` in `file`.
    fn finding(&self, file: &str, pos: Pos) -> Finding {
        Finding::new(
            self.rule(),
            Location {
                file: file.to_owned(),
                line: pos.line,
                col: pos.col,
            },
        )
    }
}

/// Every audit, in the order they run.
pub fn registry() -> Vec<&'static dyn Audit> {
    vec![
        &self_hosted_untrusted_trigger::SelfHostedUntrustedTrigger,
        &untrusted_checkout_exec::UntrustedCheckoutExec,
        &template_injection::TemplateInjection,
        &excessive_permissions::ExcessivePermissions,
        &missing_permissions::MissingPermissions,
        &persist_credentials::PersistCredentials,
        &secrets_inherit::SecretsInherit,
        &dangerous_container::DangerousContainer,
        &cache_poisoning::CachePoisoning,
        &unpinned_action::UnpinnedAction,
        &policy_trusted_group::PolicyTrustedGroup,
        &policy_unrouted_labels::PolicyUnroutedLabels,
        &policy_public_group::PolicyPublicGroup,
    ]
}

/// Metadata of every rule, audits first, then `invalid-yaml`.
pub fn rules() -> Vec<RuleInfo> {
    let mut r: Vec<RuleInfo> = registry().iter().map(|a| *a.rule()).collect();
    r.push(INVALID_YAML);
    r
}

// ---------------------------------------------------------------------------------------
// Shared knowledge used by several audits.

/// Events whose runs can be started, or whose content is chosen, by people who cannot push
/// to the repository.
pub const UNTRUSTED_EVENTS: &[&str] = &[
    "pull_request",
    "pull_request_target",
    "pull_request_review",
    "pull_request_review_comment",
    "issue_comment",
    "issues",
    "discussion",
    "discussion_comment",
    "workflow_run",
];

/// Events that run with the base repository's secrets and a write token although an
/// outsider triggers them.
pub const PRIVILEGED_UNTRUSTED_EVENTS: &[&str] = &[
    "pull_request_target",
    "workflow_run",
    "issue_comment",
    "pull_request_review",
    "pull_request_review_comment",
    "discussion",
    "discussion_comment",
    "issues",
];

/// Expressions and refs that name the pull request's (attacker's) commit or branch.
pub const HEAD_REFS: &[&str] = &[
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

/// Whether `text` names the pull request's head: one of [`HEAD_REFS`], or an input that a
/// caller in the scan fills with it (`inputs.ref` of a reusable workflow).
pub fn names_pr_head(text: &str, wf: &Workflow) -> bool {
    let t = text.to_ascii_lowercase();
    HEAD_REFS.iter().any(|h| t.contains(h))
        || wf
            .head_inputs
            .iter()
            .any(|(name, _)| t.contains(&format!("inputs.{name}")))
}

/// An untrusted trigger that can reach a workflow, with where it is declared.
#[derive(Debug, Clone)]
pub struct Reach {
    /// Event name.
    pub event: String,
    /// Position of the trigger in this file (the `on:` key for inherited ones).
    pub pos: Pos,
    /// The calling workflow when inherited through `workflow_call`.
    pub via: Option<String>,
}

/// Untrusted triggers of a workflow, its own and those inherited from callers.
pub fn untrusted_reach(wf: &Workflow) -> Vec<Reach> {
    let mut out: Vec<Reach> = wf
        .triggers
        .iter()
        .filter(|t| UNTRUSTED_EVENTS.contains(&t.event.as_str()))
        .map(|t| Reach {
            event: t.event.clone(),
            pos: t.pos,
            via: None,
        })
        .collect();
    let call_pos = wf
        .triggers
        .iter()
        .find(|t| t.event == "workflow_call")
        .map(|t| t.pos)
        .unwrap_or(wf.on_pos);
    for (event, caller) in &wf.inherited {
        if UNTRUSTED_EVENTS.contains(&event.as_str()) && !out.iter().any(|r| &r.event == event) {
            out.push(Reach {
                event: event.clone(),
                pos: call_pos,
                via: Some(caller.clone()),
            });
        }
    }
    out
}

/// The untrusted triggers that can start `job`: [`untrusted_reach`] minus the events its `if:`
/// keeps outsiders out of, decided by evaluating the condition ([`crate::guard`]).
pub fn job_reach(wf: &Workflow, job: &Job) -> Vec<Reach> {
    untrusted_reach(wf)
        .into_iter()
        .filter(|r| !fork_guarded(job, &r.event))
        .collect()
}

/// Whether a job's `if:` is false for every `event` an outsider can cause (a fork's pull
/// request, an outsider's comment).
pub fn fork_guarded(job: &Job, event: &str) -> bool {
    job.cond
        .as_deref()
        .is_some_and(|c| crate::guard::keeps_outsiders_out(c, event))
}

/// A finding about a job that waits for a deployment environment: lowered one level and
/// saying why. Environments with required reviewers hold the job until someone approves it,
/// so an outsider cannot make it run alone. Whether `name` has reviewers is a repository
/// setting the workflow file cannot show, hence the caveat rather than silence.
pub fn behind_environment(f: Finding, job: &Job) -> Finding {
    let Some((_, name)) = &job.environment else {
        return f;
    };
    let severity = f.severity.lower();
    let explanation = format!(
        "{} Mitigated if the environment `{name}` requires reviewers: the job then waits for \
         an approval before it reaches a runner (a repository setting this file cannot show; \
         check Settings → Environments), so the severity is one level lower.",
        f.explanation
    );
    f.severity(severity)
        .explain(explanation.trim_start().to_owned())
}

/// Labels of GitHub-hosted runners.
pub fn is_github_hosted_label(l: &str) -> bool {
    let l = l.to_ascii_lowercase();
    ["ubuntu-", "windows-", "macos-"]
        .iter()
        .any(|p| l.starts_with(p))
}

/// Whether a job may run on a self-hosted runner, and how sure we are.
pub fn self_hosted(job: &Job, cx: &Context<'_>) -> Option<Confidence> {
    if job.uses.is_some() {
        return None;
    }
    let policy_labels = |l: &str| {
        cx.policy.is_some_and(|p| {
            p.policy
                .groups
                .values()
                .any(|g| g.labels.iter().any(|gl| gl.eq_ignore_ascii_case(l)))
        })
    };
    let mut best: Option<Confidence> = None;
    let mut raise = |c: Confidence| {
        best = Some(best.map_or(c, |b| b.max(c)));
    };
    for set in &job.runs_on.label_sets {
        if set
            .iter()
            .any(|l| l.eq_ignore_ascii_case("self-hosted") || policy_labels(l))
        {
            raise(Confidence::High);
        } else if !set.iter().all(|l| is_github_hosted_label(l)) {
            // A custom label: a self-hosted runner or a larger GitHub runner.
            raise(Confidence::Medium);
        }
    }
    if let Some(g) = &job.runs_on.group {
        let known = cx.policy.is_some_and(|p| p.policy.groups.contains_key(g));
        raise(if known {
            Confidence::High
        } else {
            Confidence::Medium
        });
    }
    if job.runs_on.dynamic {
        raise(Confidence::Low);
    }
    best
}

/// A short description of where a job runs, for messages.
pub fn describe_runner(job: &Job) -> String {
    let mut parts: Vec<String> = job
        .runs_on
        .label_sets
        .iter()
        .map(|s| format!("[{}]", s.join(", ")))
        .collect();
    if let Some(g) = &job.runs_on.group {
        parts.push(format!("group {g}"));
    }
    if job.runs_on.dynamic {
        parts.push("a runner chosen at run time".to_owned());
    }
    if parts.is_empty() {
        "no runner".to_owned()
    } else {
        parts.join(" or ")
    }
}

/// The policy groups a label set can route to, by the same label rule `airlock serve` uses
/// (the generic `self-hosted`/`linux`/`x64` never select; every other label must be among the
/// group's `labels`). Serve also checks repositories and workflows, which a workflow file
/// alone does not settle, so every group the labels allow is returned.
pub fn routed_groups<'p>(p: &'p LoadedPolicy, set: &[String]) -> Vec<(&'p str, Trust)> {
    let selecting = airlock_policy::selecting_labels(set);
    p.policy
        .groups
        .iter()
        .filter(|(_, g)| g.takes_labels(&selecting))
        .map(|(n, g)| (n.as_str(), g.trust))
        .collect()
}

/// Whether a `uses:` names a third-party action (not `actions/*`, `github/*`, local or Docker).
pub fn is_third_party(uses: &str) -> bool {
    let u = uses.to_ascii_lowercase();
    !(u.starts_with("./")
        || u.starts_with("docker://")
        || u.starts_with("actions/")
        || u.starts_with("github/"))
}

/// Severity helper: `a` on self-hosted runners, `b` elsewhere.
pub fn on_self_hosted(sh: Option<Confidence>, a: Severity, b: Severity) -> Severity {
    if sh.is_some() {
        a
    } else {
        b
    }
}
