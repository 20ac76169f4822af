//! `permissions: write-all`, and write scopes granted to every job of a workflow that
//! outsiders can trigger.

use marked_yaml::Node;

use super::{rule, untrusted_reach, Audit, Context, Sink};
use crate::model::{entry, Pos, Workflow};
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "excessive-permissions",
    High,
    "GITHUB_TOKEN granted more than the job needs"
);

/// See the module documentation.
pub struct ExcessivePermissions;

/// Write scopes in a `permissions:` mapping, with their positions.
fn write_scopes(n: &Node) -> Vec<(String, Pos)> {
    let Some(m) = n.as_mapping() else {
        return Vec::new();
    };
    m.iter()
        .filter(|(_, v)| v.as_scalar().is_some_and(|s| s.as_str() == "write"))
        .filter_map(|(k, _)| entry(m, k.as_str()).map(|(p, _)| (k.as_str().to_owned(), p)))
        .collect()
}

impl ExcessivePermissions {
    fn check(
        &self,
        wf: &Workflow,
        scope: &str,
        pos: Pos,
        n: &Node,
        untrusted: bool,
        out: &mut Sink,
    ) {
        if n.as_scalar().is_some_and(|s| s.as_str() == "write-all") {
            out.push(
                self.finding(&wf.path, pos)
                    .severity(if untrusted { Severity::Critical } else { Severity::High })
                    .title(format!("{scope} grants `write-all`"))
                    .explain(
                        "`write-all` gives the job's GITHUB_TOKEN write access to code, releases, \
                         packages, issues and workflows. Any code the job runs — a dependency's \
                         install script, a compromised action — can push to the repository.",
                    )
                    .fix("List only the scopes the job needs, e.g. `permissions: { contents: read }`."),
            );
            return;
        }
        if untrusted && scope == "the workflow" {
            let scopes = write_scopes(n);
            if !scopes.is_empty() {
                let names: Vec<_> = scopes.iter().map(|(s, _)| s.as_str()).collect();
                out.push(
                    self.finding(&wf.path, scopes[0].1)
                        .severity(Severity::Medium)
                        .confidence(Confidence::Medium)
                        .title(format!(
                            "workflow-level write permission ({}) in a workflow outsiders can trigger",
                            names.join(", ")
                        ))
                        .explain(
                            "Permissions at the top of the workflow apply to every job, including \
                             jobs that process untrusted input; a single injection in any of them \
                             gets a token that can write.",
                        )
                        .fix(
                            "Set `permissions: {}` (or read-only) at the top and grant write scopes \
                             only in the job that needs them.",
                        ),
                );
            }
        }
    }
}

impl Audit for ExcessivePermissions {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn workflow(&self, wf: &Workflow, _cx: &Context<'_>, out: &mut Sink) {
        let untrusted = !untrusted_reach(wf).is_empty();
        if let Some((pos, n)) = &wf.permissions {
            self.check(wf, "the workflow", *pos, n, untrusted, out);
        }
        for job in &wf.jobs {
            if let Some((pos, n)) = &job.permissions {
                self.check(wf, &format!("job `{}`", job.id), *pos, n, untrusted, out);
            }
        }
    }
}
