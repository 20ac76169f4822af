//! A light, position-keeping view of workflows and composite actions over `marked-yaml`
//! nodes. Only what the audits read is modelled; anything of an unexpected shape is treated
//! as absent (GitHub itself would reject the file, and the scanner must never panic).

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::Node;
use serde_json::Value;

use crate::expr;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line.
    pub line: usize,
    /// Column.
    pub col: usize,
}

fn pos_of_span(span: &marked_yaml::Span) -> Pos {
    span.start()
        .map(|m| Pos {
            line: m.line(),
            col: m.column(),
        })
        .unwrap_or(Pos { line: 1, col: 1 })
}

/// Position of a node's start.
pub fn pos_of(n: &Node) -> Pos {
    pos_of_span(n.span())
}

fn pos_of_scalar(n: &MarkedScalarNode) -> Pos {
    pos_of_span(n.span())
}

/// Looks a key up in a mapping, returning the key's position and the value.
pub fn entry<'a>(m: &'a MarkedMappingNode, key: &str) -> Option<(Pos, &'a Node)> {
    m.iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(k, v)| (pos_of_scalar(k), v))
}

/// A scalar value of a mapping key, with the key's position.
pub fn scalar<'a>(m: &'a MarkedMappingNode, key: &str) -> Option<(Pos, &'a str)> {
    entry(m, key).and_then(|(p, v)| v.as_scalar().map(|s| (p, s.as_str())))
}

/// Converts a node to JSON (scalars stay strings except plain booleans and numbers).
pub fn to_json(n: &Node) -> Value {
    match n {
        Node::Scalar(s) => {
            if s.may_coerce() {
                if let Some(b) = s.as_bool() {
                    return Value::Bool(b);
                }
                if let Ok(i) = s.as_str().parse::<i64>() {
                    return Value::from(i);
                }
                if s.as_str() == "~" || s.as_str() == "null" {
                    return Value::Null;
                }
            }
            Value::String(s.as_str().to_owned())
        }
        Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

/// A trigger of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Event name, e.g. `pull_request_target`.
    pub event: String,
    /// Position of the event's key.
    pub pos: Pos,
    /// The event's configuration (`branches`, `types`, …), if any.
    pub config: Option<Node>,
}

/// A step of a job or a composite action.
#[derive(Debug, Clone)]
pub struct Step {
    /// 0-based index in the step list.
    pub index: usize,
    /// Position of the step (its first key).
    pub pos: Pos,
    /// `name:` or `id:` or a description of the step.
    pub name: String,
    /// `uses:` value and its key's position.
    pub uses: Option<(Pos, String)>,
    /// `run:` value and its key's position.
    pub run: Option<(Pos, String)>,
    /// `with:` inputs: key, key position, value (scalars only).
    pub with: Vec<(String, Pos, String)>,
    /// `if:` condition.
    pub cond: Option<String>,
}

impl Step {
    fn from_node(index: usize, n: &Node) -> Option<Step> {
        let m = n.as_mapping()?;
        let uses = scalar(m, "uses").map(|(p, s)| (p, s.to_owned()));
        let run = scalar(m, "run").map(|(p, s)| (p, s.to_owned()));
        let with = with_of(m);
        let name = scalar(m, "name")
            .or_else(|| scalar(m, "id"))
            .map(|(_, s)| s.to_owned())
            .unwrap_or_else(|| format!("step {}", index + 1));
        Some(Step {
            index,
            pos: pos_of(n),
            name,
            uses,
            run,
            with,
            cond: scalar(m, "if").map(|(_, s)| s.to_owned()),
        })
    }

    /// A `with:` input by name.
    pub fn input(&self, key: &str) -> Option<(Pos, &str)> {
        self.with
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, p, v)| (*p, v.as_str()))
    }

    /// The action a step uses, without the `@ref`, lower-cased (`actions/checkout`).
    pub fn action(&self) -> Option<String> {
        self.uses
            .as_ref()
            .map(|(_, u)| u.split('@').next().unwrap_or_default().to_ascii_lowercase())
    }
}

/// A step's or a reusable-workflow call's `with:` inputs: key, key position, value (scalars).
fn with_of(m: &MarkedMappingNode) -> Vec<(String, Pos, String)> {
    entry(m, "with")
        .and_then(|(_, w)| w.as_mapping())
        .map(|w| {
            w.iter()
                .filter_map(|(k, v)| {
                    v.as_scalar().map(|s| {
                        (
                            k.as_str().to_owned(),
                            pos_of_scalar(k),
                            s.as_str().to_owned(),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn steps_of(n: Option<&Node>) -> Vec<Step> {
    n.and_then(Node::as_sequence)
        .map(|seq| {
            seq.iter()
                .enumerate()
                .filter_map(|(i, s)| Step::from_node(i, s))
                .collect()
        })
        .unwrap_or_default()
}

/// Where a job can run: every label set it can ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunsOn {
    /// Position of the `runs-on` key (or the job's key when absent).
    pub pos: Pos,
    /// Each label set the job can request (one per resolved matrix combination/alternative).
    pub label_sets: Vec<Vec<String>>,
    /// `runs-on: { group: … }`.
    pub group: Option<String>,
    /// Some alternative could not be resolved statically (inputs, vars, dynamic matrix).
    pub dynamic: bool,
    /// The raw `runs-on` text was built from a matrix.
    pub from_matrix: bool,
}

/// Maximum matrix combinations expanded.
const MAX_COMBINATIONS: usize = 256;

/// Expands `strategy.matrix` into its combinations. `None` means the matrix is dynamic (built
/// from an expression) and cannot be expanded.
pub fn expand_matrix(matrix: &Value) -> Option<Vec<Value>> {
    let m = match matrix {
        Value::Object(m) => m,
        Value::Null => return Some(vec![Value::Object(Default::default())]),
        _ => return None,
    };
    let mut combos: Vec<serde_json::Map<String, Value>> = vec![Default::default()];
    let mut base_keys = Vec::new();
    for (k, v) in m {
        if k == "include" || k == "exclude" {
            continue;
        }
        let Value::Array(vals) = v else { return None };
        base_keys.push(k.clone());
        let mut next = Vec::new();
        for c in &combos {
            for val in vals {
                let mut c = c.clone();
                c.insert(k.clone(), val.clone());
                next.push(c);
                if next.len() >= MAX_COMBINATIONS {
                    break;
                }
            }
        }
        combos = next;
    }
    if base_keys.is_empty() {
        combos.clear();
    }
    // A partial object matches when every key it names has the same value.
    let matches = |c: &serde_json::Map<String, Value>, p: &serde_json::Map<String, Value>| {
        p.iter().all(|(k, v)| c.get(k) == Some(v))
    };
    match m.get("exclude") {
        Some(Value::Array(ex)) => {
            for e in ex {
                if let Value::Object(e) = e {
                    combos.retain(|c| !matches(c, e));
                }
            }
        }
        Some(Value::String(_)) => return None,
        _ => {}
    }
    match m.get("include") {
        Some(Value::Array(inc)) => {
            let originals = combos.len();
            for i in inc {
                let Value::Object(i) = i else { continue };
                // Added to every original combination whose original values it does not
                // overwrite; otherwise it becomes a combination of its own.
                let mut added = false;
                for c in combos.iter_mut().take(originals) {
                    let compatible = i
                        .iter()
                        .all(|(k, v)| !base_keys.contains(k) || c.get(k) == Some(v));
                    if compatible {
                        for (k, v) in i {
                            c.insert(k.clone(), v.clone());
                        }
                        added = true;
                    }
                }
                if !added && combos.len() < MAX_COMBINATIONS {
                    combos.push(i.clone());
                }
            }
        }
        Some(Value::String(_)) => return None,
        _ => {}
    }
    if combos.is_empty() {
        combos.push(Default::default());
    }
    Some(combos.into_iter().map(Value::Object).collect())
}

fn labels_of(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.trim().to_owned()]),
        Value::Array(a) => Some(
            a.iter()
                .map(|x| expr::to_text(x).trim().to_owned())
                .collect(),
        ),
        _ => None,
    }
}

fn resolve_runs_on(runs_on: Option<(Pos, &Node)>, job_pos: Pos, matrix: Option<&Node>) -> RunsOn {
    let mut r = RunsOn {
        pos: runs_on.map(|(p, _)| p).unwrap_or(job_pos),
        ..RunsOn::default()
    };
    let Some((_, node)) = runs_on else {
        return r;
    };
    let raw = to_json(node);
    let raw_text = raw.to_string();
    let uses_matrix = raw_text.contains("matrix");
    let combos = if uses_matrix {
        r.from_matrix = true;
        match matrix.map(to_json) {
            None => vec![Value::Object(Default::default())],
            Some(Value::String(_)) => {
                r.dynamic = true;
                return r;
            }
            Some(m) => match expand_matrix(&m) {
                Some(c) => c,
                None => {
                    r.dynamic = true;
                    return r;
                }
            },
        }
    } else {
        vec![Value::Object(Default::default())]
    };
    let push = |r: &mut RunsOn, set: Vec<String>| {
        let set: Vec<String> = set.into_iter().filter(|s| !s.is_empty()).collect();
        if !set.is_empty() && !r.label_sets.contains(&set) {
            r.label_sets.push(set);
        }
    };
    for combo in &combos {
        // Evaluates one string that may hold expressions into label alternatives.
        let eval_str = |s: &str, r: &mut RunsOn| -> Vec<Vec<String>> {
            let mut out = Vec::new();
            for p in expr::eval_template(s, combo) {
                match p {
                    expr::Possible::Known(v) => match labels_of(&v) {
                        Some(l) => out.push(l),
                        None => r.dynamic = true,
                    },
                    expr::Possible::Unknown => r.dynamic = true,
                }
            }
            out
        };
        match &raw {
            Value::String(s) => {
                for set in eval_str(s, &mut r) {
                    push(&mut r, set);
                }
            }
            Value::Array(items) => {
                // Each item may itself have alternatives; take the product (bounded).
                let mut sets: Vec<Vec<String>> = vec![Vec::new()];
                for it in items {
                    let alts = eval_str(&expr::to_text(it), &mut r);
                    let mut next = Vec::new();
                    for s in &sets {
                        for a in &alts {
                            let mut s = s.clone();
                            s.extend(a.iter().cloned());
                            next.push(s);
                        }
                    }
                    next.truncate(64);
                    sets = next;
                }
                for s in sets {
                    push(&mut r, s);
                }
            }
            Value::Object(o) => {
                if let Some(g) = o.get("group") {
                    let gs = eval_str(&expr::to_text(g), &mut r);
                    if let Some(first) = gs.into_iter().next().and_then(|v| v.into_iter().next()) {
                        r.group = Some(first);
                    }
                }
                match o.get("labels") {
                    Some(Value::String(s)) => {
                        for set in eval_str(s, &mut r) {
                            push(&mut r, set);
                        }
                    }
                    Some(Value::Array(items)) => {
                        let set: Vec<String> = items
                            .iter()
                            .flat_map(|i| eval_str(&expr::to_text(i), &mut r).into_iter().flatten())
                            .collect();
                        push(&mut r, set);
                    }
                    _ => {}
                }
            }
            _ => r.dynamic = true,
        }
    }
    r
}

/// A job of a workflow.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id.
    pub id: String,
    /// Position of the job's key.
    pub pos: Pos,
    /// Where it runs (empty for reusable-workflow calls).
    pub runs_on: RunsOn,
    /// `if:` condition.
    pub cond: Option<String>,
    /// `permissions:` value and its key's position.
    pub permissions: Option<(Pos, Node)>,
    /// `uses:` of a reusable-workflow call.
    pub uses: Option<(Pos, String)>,
    /// `secrets:` of a reusable-workflow call (the raw node) and its key's position.
    pub secrets: Option<(Pos, Node)>,
    /// `with:` inputs of a reusable-workflow call: key, key position, value (scalars).
    pub with: Vec<(String, Pos, String)>,
    /// `container:` value and its key's position.
    pub container: Option<(Pos, Node)>,
    /// `services:` value and its key's position.
    pub services: Option<(Pos, Node)>,
    /// `environment:` name (a scalar, or the mapping's `name:`) and its key's position.
    pub environment: Option<(Pos, String)>,
    /// Steps.
    pub steps: Vec<Step>,
}

/// A parsed workflow.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Display path.
    pub path: String,
    /// Triggers declared in `on:`.
    pub triggers: Vec<Trigger>,
    /// Position of the `on:` key (1:1 when missing).
    pub on_pos: Pos,
    /// Top-level `permissions:` value and its key's position.
    pub permissions: Option<(Pos, Node)>,
    /// Jobs in file order.
    pub jobs: Vec<Job>,
    /// Triggers inherited from workflows in the scan that call this one (for
    /// `workflow_call` workflows), as (event, caller path).
    pub inherited: Vec<(String, String)>,
    /// Inputs (`inputs.NAME`) that a caller in the scan fills with the pull request's head,
    /// as (input name, caller path).
    pub head_inputs: Vec<(String, String)>,
}

impl Workflow {
    /// Builds the view from the document's root mapping.
    pub fn from_root(path: &str, root: &MarkedMappingNode) -> Workflow {
        let (on_pos, on) = match entry(root, "on") {
            Some((p, n)) => (p, Some(n)),
            None => (Pos { line: 1, col: 1 }, None),
        };
        let mut triggers = Vec::new();
        match on {
            Some(Node::Scalar(s)) => triggers.push(Trigger {
                event: s.as_str().to_owned(),
                pos: pos_of_scalar(s),
                config: None,
            }),
            Some(Node::Sequence(seq)) => {
                for n in seq.iter() {
                    if let Some(s) = n.as_scalar() {
                        triggers.push(Trigger {
                            event: s.as_str().to_owned(),
                            pos: pos_of_scalar(s),
                            config: None,
                        });
                    }
                }
            }
            Some(Node::Mapping(m)) => {
                for (k, v) in m.iter() {
                    triggers.push(Trigger {
                        event: k.as_str().to_owned(),
                        pos: pos_of_scalar(k),
                        config: Some(v.clone()),
                    });
                }
            }
            None => {}
        }
        let mut jobs = Vec::new();
        if let Some(jm) = entry(root, "jobs").and_then(|(_, n)| n.as_mapping()) {
            for (k, v) in jm.iter() {
                let Some(m) = v.as_mapping() else { continue };
                let pos = pos_of_scalar(k);
                let owned = |key: &str| entry(m, key).map(|(p, n)| (p, n.clone()));
                let matrix = entry(m, "strategy")
                    .and_then(|(_, s)| s.as_mapping())
                    .and_then(|s| entry(s, "matrix"))
                    .map(|(_, n)| n);
                jobs.push(Job {
                    id: k.as_str().to_owned(),
                    pos,
                    runs_on: resolve_runs_on(entry(m, "runs-on"), pos, matrix),
                    cond: scalar(m, "if").map(|(_, s)| s.to_owned()),
                    permissions: owned("permissions"),
                    uses: scalar(m, "uses").map(|(p, s)| (p, s.to_owned())),
                    secrets: owned("secrets"),
                    with: with_of(m),
                    container: owned("container"),
                    services: owned("services"),
                    environment: entry(m, "environment").and_then(|(p, n)| match n {
                        Node::Scalar(s) => Some((p, s.as_str().to_owned())),
                        Node::Mapping(e) => scalar(e, "name").map(|(_, s)| (p, s.to_owned())),
                        Node::Sequence(_) => None,
                    }),
                    steps: steps_of(entry(m, "steps").map(|(_, n)| n)),
                });
            }
        }
        Workflow {
            path: path.to_owned(),
            triggers,
            on_pos,
            permissions: entry(root, "permissions").map(|(p, n)| (p, n.clone())),
            jobs,
            inherited: Vec::new(),
            head_inputs: Vec::new(),
        }
    }

    /// Whether the workflow declares `event`.
    pub fn has_trigger(&self, event: &str) -> bool {
        self.triggers.iter().any(|t| t.event == event)
    }
}

/// A composite action (`action.yml` with `runs.using: composite`).
#[derive(Debug, Clone)]
pub struct CompositeAction {
    /// Display path.
    pub path: String,
    /// Steps under `runs.steps`.
    pub steps: Vec<Step>,
}

impl CompositeAction {
    /// Builds the view; `None` when the action is not composite (JavaScript and Docker
    /// actions have no steps to audit).
    pub fn from_root(path: &str, root: &MarkedMappingNode) -> Option<CompositeAction> {
        let runs = entry(root, "runs")?.1.as_mapping()?;
        let using = scalar(runs, "using")?.1;
        if !using.eq_ignore_ascii_case("composite") {
            return None;
        }
        Some(CompositeAction {
            path: path.to_owned(),
            steps: steps_of(entry(runs, "steps").map(|(_, n)| n)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matrix_include_exclude() {
        let m = json!({
            "os": ["a", "b"], "v": [1, 2],
            "exclude": [{"os": "b", "v": 2}],
            "include": [{"os": "a", "extra": "x"}, {"os": "c", "v": 9}]
        });
        let c = expand_matrix(&m).expect("static");
        assert_eq!(
            c,
            vec![
                json!({"os": "a", "v": 1, "extra": "x"}),
                json!({"os": "a", "v": 2, "extra": "x"}),
                json!({"os": "b", "v": 1}),
                json!({"os": "c", "v": 9}),
            ]
        );
        assert_eq!(
            expand_matrix(&json!({"include": [{"runner": "self-hosted"}]})),
            Some(vec![json!({"runner": "self-hosted"})])
        );
        assert_eq!(
            expand_matrix(&json!({"os": "${{ fromJSON(inputs.x) }}"})),
            None
        );
    }
}
