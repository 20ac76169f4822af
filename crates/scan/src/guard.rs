//! Whether a job's `if:` keeps an outsider's event out, decided by evaluating the expression
//! (not by looking for text in it): the job is guarded when no fork-originated event can make
//! its condition true.
//!
//! The condition is evaluated in three-valued logic against what is known of such an event:
//! the head repository is a fork (`head.repo.fork` is true, `head.repo.full_name` is never the
//! repository's own name), the actor is an outsider (not a login an allow-list names, an
//! `author_association` of `NONE`, `CONTRIBUTOR`, `FIRST_TIMER` or `FIRST_TIME_CONTRIBUTOR`),
//! the pull request is not merged (merged code is not the fork's head), and `event_name` is the
//! event considered. Everything else (labels, the title, inputs) is unknown — the outsider or
//! a maintainer may make it either way. Only a condition that is *false* for every such event
//! guards: `!(head.repo.full_name == github.repository)` runs only for forks, and
//! `… == github.repository || contains(labels, 'x')` runs for a labelled fork.

use serde_json::Value;

use crate::expr::{parse, BinOp, CmpOp, Expr, Seg};

/// Three-valued truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    T,
    F,
    U,
}

impl Tri {
    fn not(self) -> Tri {
        match self {
            Tri::T => Tri::F,
            Tri::F => Tri::T,
            Tri::U => Tri::U,
        }
    }
}

/// A value as far as it is known for an outsider's event.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Known(Value),
    /// The repository's own `owner/name` (the same on both sides of a comparison).
    Repository,
    /// The head repository's `owner/name`: never the repository's, never a literal the
    /// workflow's author wrote (an outsider's fork).
    ForkName,
    /// The actor: an outsider, never a login the workflow names.
    Outsider,
    /// An outsider's `author_association`.
    OutsiderAssociation,
    Unknown,
}

const OUTSIDER_ASSOCIATIONS: &[&str] = &[
    "NONE",
    "CONTRIBUTOR",
    "FIRST_TIMER",
    "FIRST_TIME_CONTRIBUTOR",
    "MANNEQUIN",
];

fn path(h: &str, segs: &[Seg]) -> Option<String> {
    let mut p = h.to_ascii_lowercase();
    for s in segs {
        match s {
            Seg::Key(k) => {
                p.push('.');
                p.push_str(&k.to_ascii_lowercase());
            }
            _ => return None,
        }
    }
    Some(p)
}

fn value(e: &Expr, event: &str) -> V {
    match e {
        Expr::Lit(v) => V::Known(v.clone()),
        Expr::Ctx(h, segs) => {
            let Some(p) = path(h, segs) else {
                return V::Unknown;
            };
            let p = p.strip_prefix("github.").unwrap_or(&p).to_owned();
            match p.as_str() {
                "repository" | "event.repository.full_name" => V::Repository,
                "event.pull_request.head.repo.full_name" => V::ForkName,
                "event.pull_request.head.repo.fork" => V::Known(Value::Bool(true)),
                "event.pull_request.merged" => V::Known(Value::Bool(false)),
                "event_name" => V::Known(Value::String(event.to_owned())),
                "actor"
                | "triggering_actor"
                | "event.sender.login"
                | "event.pull_request.user.login"
                | "event.comment.user.login" => V::Outsider,
                "event.pull_request.author_association"
                | "event.comment.author_association"
                | "event.issue.author_association" => V::OutsiderAssociation,
                _ => V::Unknown,
            }
        }
        _ => V::Unknown,
    }
}

fn lower(v: &Value) -> Option<String> {
    v.as_str().map(str::to_ascii_lowercase)
}

/// `a == b` for an outsider's event.
fn equal(a: &V, b: &V) -> Tri {
    use V::*;
    match (a, b) {
        (Known(x), Known(y)) => {
            // Expressions compare strings case-insensitively.
            let same = match (lower(x), lower(y)) {
                (Some(x), Some(y)) => x == y,
                _ => x == y,
            };
            if same {
                Tri::T
            } else {
                Tri::F
            }
        }
        (Repository, Repository) => Tri::T,
        (ForkName, Repository) | (Repository, ForkName) => Tri::F,
        (ForkName, Known(_)) | (Known(_), ForkName) => Tri::F,
        (Outsider, Known(_)) | (Known(_), Outsider) => Tri::F,
        (OutsiderAssociation, Known(v)) | (Known(v), OutsiderAssociation) => match v.as_str() {
            Some(s)
                if OUTSIDER_ASSOCIATIONS
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(s)) =>
            {
                Tri::U
            }
            Some(_) => Tri::F,
            None => Tri::U,
        },
        _ => Tri::U,
    }
}

fn truth(v: &V) -> Tri {
    match v {
        V::Known(Value::Bool(b)) => {
            if *b {
                Tri::T
            } else {
                Tri::F
            }
        }
        V::Known(Value::Null) => Tri::F,
        V::Known(Value::String(s)) => {
            if s.is_empty() {
                Tri::F
            } else {
                Tri::T
            }
        }
        V::Known(Value::Number(n)) => {
            if n.as_f64() == Some(0.0) {
                Tri::F
            } else {
                Tri::T
            }
        }
        V::Known(_) => Tri::T,
        V::Repository | V::ForkName | V::Outsider | V::OutsiderAssociation => Tri::T,
        V::Unknown => Tri::U,
    }
}

fn eval(e: &Expr, event: &str) -> Tri {
    match e {
        Expr::Not(inner) => eval(inner, event).not(),
        Expr::Bin(BinOp::And, a, b) => match (eval(a, event), eval(b, event)) {
            (Tri::F, _) | (_, Tri::F) => Tri::F,
            (Tri::T, Tri::T) => Tri::T,
            _ => Tri::U,
        },
        Expr::Bin(BinOp::Or, a, b) => match (eval(a, event), eval(b, event)) {
            (Tri::T, _) | (_, Tri::T) => Tri::T,
            (Tri::F, Tri::F) => Tri::F,
            _ => Tri::U,
        },
        Expr::Bin(BinOp::Cmp(CmpOp::Eq), a, b) => equal(&value(a, event), &value(b, event)),
        Expr::Bin(BinOp::Cmp(CmpOp::Ne), a, b) => equal(&value(a, event), &value(b, event)).not(),
        Expr::Bin(BinOp::Cmp(CmpOp::Order), ..) => Tri::U,
        // `contains(fromJSON('["OWNER","MEMBER"]'), …author_association)`: a list of roles an
        // outsider does not have.
        Expr::Call(name, args) if name == "contains" => match args.as_slice() {
            [Expr::Call(f, list), who] if f == "fromjson" => {
                let roles: Option<Vec<String>> = match list.as_slice() {
                    [Expr::Lit(Value::String(s))] => serde_json::from_str::<Vec<String>>(s).ok(),
                    _ => None,
                };
                match (roles, value(who, event)) {
                    (Some(r), V::OutsiderAssociation) => {
                        if r.iter().any(|x| {
                            OUTSIDER_ASSOCIATIONS
                                .iter()
                                .any(|o| o.eq_ignore_ascii_case(x))
                        }) {
                            Tri::U
                        } else {
                            Tri::F
                        }
                    }
                    (Some(_), V::Outsider) => Tri::F,
                    _ => Tri::U,
                }
            }
            _ => Tri::U,
        },
        other => truth(&value(other, event)),
    }
}

/// Whether `cond` (a job's `if:`) keeps every `event` an outsider can cause from running the
/// job. A condition that does not parse guards nothing.
pub fn keeps_outsiders_out(cond: &str, event: &str) -> bool {
    let c = cond.trim();
    let c = c
        .strip_prefix("${{")
        .and_then(|c| c.strip_suffix("}}"))
        .unwrap_or(c);
    match parse(c) {
        Ok(e) => eval(&e, event) == Tri::F,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::keeps_outsiders_out as guarded;

    #[test]
    fn the_usual_fork_guards_guard() {
        for c in [
            "github.event.pull_request.head.repo.full_name == github.repository",
            "${{ github.repository == github.event.pull_request.head.repo.full_name }}",
            "github.event.pull_request.head.repo.fork == false",
            "!github.event.pull_request.head.repo.fork",
            "github.event.pull_request.head.repo.full_name == 'octo-org/app'",
            "github.actor == 'alice' || github.actor == 'bob'",
            "contains(fromJSON('[\"OWNER\", \"MEMBER\"]'), github.event.comment.author_association)",
            "github.event.comment.author_association == 'MEMBER'",
            "github.event.pull_request.merged == true",
            "github.event_name == 'push'",
        ] {
            assert!(guarded(c, "pull_request"), "{c}");
        }
    }

    #[test]
    fn conditions_a_fork_can_satisfy_do_not_guard() {
        for c in [
            // Runs *only* for forks.
            "!(github.event.pull_request.head.repo.full_name == github.repository)",
            "github.event.pull_request.head.repo.full_name != github.repository",
            // A maintainer's label (set after the code was read) lets a fork in.
            "github.event.pull_request.head.repo.full_name == github.repository || contains(github.event.pull_request.labels.*.name, 'safe')",
            "github.actor != 'dependabot[bot]'",
            "github.event.pull_request.author_association != 'OWNER'",
            "github.event_name == 'pull_request'",
            "always()",
            "success() && github.event.pull_request.draft == false",
            "this is ( not an expression",
        ] {
            assert!(!guarded(c, "pull_request"), "{c}");
        }
    }
}
