//! With `--policy`: a group that accepts public repositories but is not `untrusted`.

use airlock_policy::Trust;

use super::{rule, Audit, Context, Sink};
use crate::model::Pos;
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "policy-public-trusted-group",
    High,
    "runner group allows public repositories but is not `untrusted`"
);

/// See the module documentation.
pub struct PolicyPublicGroup;

/// Position of `[groups.NAME]` (or `groups.NAME.` keys) in the policy text.
fn group_pos(src: &str, name: &str) -> Pos {
    let header = format!("[groups.{name}]");
    let dotted = format!("groups.{name}.");
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with(&header) || t.starts_with(&dotted) {
            return Pos {
                line: i + 1,
                col: line.len() - t.len() + 1,
            };
        }
    }
    Pos { line: 1, col: 1 }
}

impl Audit for PolicyPublicGroup {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn policy(&self, cx: &Context<'_>, out: &mut Sink) {
        let Some(p) = cx.policy else { return };
        let file = p
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<builtin policy>".to_owned());
        for (name, g) in &p.policy.groups {
            if g.allow_public && g.trust != Trust::Untrusted {
                let pos = cx
                    .policy_src
                    .map(|s| group_pos(s, name))
                    .unwrap_or_default();
                out.push(
                    self.finding(&file, Pos { line: pos.line.max(1), col: pos.col.max(1) })
                        .severity(Severity::High)
                        .confidence(Confidence::High)
                        .title(format!("group `{name}` has `allow_public = true` but trust is not `untrusted`"))
                        .explain(
                            "Public repositories take pull requests from anyone. A group that \
                             accepts them runs outsiders' code, so it must be configured for \
                             untrusted code; a trusted group's secrets, pass-through variables \
                             and egress would be theirs.",
                        )
                        .fix("Set `trust = \"untrusted\"` on the group, or `allow_public = false` and route public repositories to an untrusted group."),
                );
            }
        }
    }
}
