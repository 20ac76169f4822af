//! `airlock scan workflows`: static analysis of GitHub Actions workflows and composite
//! actions for self-hosted-runner risk, optionally cross-checked against airlock's
//! runner-group policy; and [`report`], the finding type and renderers every scanner shares.
//!
//! The CLI calls [`run_workflows`] with a [`WorkflowsArgs`]; tests and other tools can call
//! [`scan_workflows`] for the [`report::Report`] itself.
#![deny(missing_docs)]

pub mod audit;
pub mod config;
pub mod expr;
pub mod guard;
pub mod model;
pub mod report;
pub mod yaml;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use airlock_policy::{LoadedPolicy, PolicyError};
use marked_yaml::loader::LoadError;

use audit::{Context, INVALID_YAML};
use config::{inline_ignores, Config, CONFIG_FILE};
use model::{CompositeAction, Workflow};
use report::{Finding, Format, Location, Related, Report, Severity};

/// Errors that stop a scan (problems *in* scanned files are findings, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A path given on the command line does not exist.
    #[error("no such file or directory: {path}")]
    NoSuchPath {
        /// The path.
        path: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The policy given with `--policy` is invalid.
    #[error("invalid policy {path}")]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// The policy's errors.
        #[source]
        source: PolicyError,
    },
    /// The scan config file is invalid.
    #[error("invalid scan config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing the output failed.
    #[error("cannot write the report")]
    Write(#[source] std::io::Error),
}

/// When to colour plain output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// When standard output is a terminal and `NO_COLOR` is unset.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// `airlock scan workflows`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkflowsArgs {
    /// Repositories, directories or files to scan. A directory is searched for
    /// `.github/workflows/*.yml|yaml` and `action.yml|yaml`; a directory without
    /// `.github/workflows` has its own `*.yml|yaml` read as workflows.
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
    /// Runner-group policy to cross-check jobs against (labels → groups, trust).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub format: Format,
    /// Scan config with `[ignore]` rules (default: `airlock-scan.toml` in the first
    /// directory scanned, if present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Report only findings of at least this severity.
    #[arg(long, value_enum, default_value_t = Severity::Info)]
    pub min_severity: Severity,
    /// Colour plain output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

impl Default for WorkflowsArgs {
    fn default() -> Self {
        Self {
            paths: vec![PathBuf::from(".")],
            policy: None,
            format: Format::Plain,
            config: None,
            min_severity: Severity::Info,
            color: ColorChoice::Never,
        }
    }
}

/// Runs the scan and writes the report; returns the exit code (see docs/scan.md: 0 when
/// nothing above `info` was found, else 11 low, 12 medium, 13 high, 14 critical).
pub fn run_workflows(args: &WorkflowsArgs, out: &mut dyn Write) -> Result<i32, ScanError> {
    let report = scan_workflows(args)?;
    if report.files_scanned == 0 {
        // Pointed at a folder that has files but no workflows (a typo, the wrong level): a
        // clean result would mislead, so say it where a person sees it even with --format json.
        for p in &args.paths {
            let non_empty = std::fs::read_dir(p).is_ok_and(|mut rd| rd.next().is_some());
            if non_empty {
                eprintln!(
                    "airlock: warning: 0 files scanned in {}, which is not empty: no .github/workflows/*.yml|yaml or action.yml|yaml below it",
                    airlock_text::escape(&p.display().to_string())
                );
            }
        }
    }
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let rules = audit::rules();
    match report::render(&report, args.format, &rules, color, out) {
        Ok(()) => {}
        // A closed pipe (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(ScanError::Write(e)),
    }
    Ok(report.exit_code())
}

/// What kind of file a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Workflow,
    Action,
}

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yml") | Some("yaml")
    )
}

fn is_action_file(p: &Path) -> bool {
    matches!(
        p.file_name().and_then(|n| n.to_str()),
        Some("action.yml") | Some("action.yaml")
    )
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, ScanError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ScanError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Directories never descended into when looking for workflows and `action.yml`.
const SKIP_DIRS: &[&str] = &[".git", "node_modules", "target", "vendor", ".venv"];

fn find_actions(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, Kind)>) -> Result<(), ScanError> {
    if depth > 8 {
        return Ok(());
    }
    for p in read_dir_sorted(dir)? {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_dir() {
            if p.ends_with(".github/workflows") {
                // Another repository's workflows below the scanned directory (a monorepo, a
                // folder of checkouts): scanned too.
                for w in read_dir_sorted(&p)? {
                    if w.is_file() && is_yaml(&w) {
                        out.push((w, Kind::Workflow));
                    }
                }
            } else if !SKIP_DIRS.contains(&name) {
                find_actions(&p, depth + 1, out)?;
            }
        } else if is_action_file(&p) {
            out.push((p, Kind::Action));
        }
    }
    Ok(())
}

/// The files a scan of `paths` reads, in order.
fn discover(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Kind)>, ScanError> {
    let mut out = Vec::new();
    for root in paths {
        if !root.exists() {
            return Err(ScanError::NoSuchPath { path: root.clone() });
        }
        if root.is_file() {
            let k = if is_action_file(root) {
                Kind::Action
            } else {
                Kind::Workflow
            };
            out.push((root.clone(), k));
            continue;
        }
        let wf_dir = root.join(".github").join("workflows");
        if wf_dir.is_dir() {
            for p in read_dir_sorted(&wf_dir)? {
                if p.is_file() && is_yaml(&p) {
                    out.push((p, Kind::Workflow));
                }
            }
        } else {
            for p in read_dir_sorted(root)? {
                if p.is_file() && is_yaml(&p) && !is_action_file(&p) {
                    out.push((p, Kind::Workflow));
                }
            }
        }
        find_actions(root, 0, &mut out)?;
    }
    // A file found twice (the root's own workflows, again by the walk) is scanned once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|(p, _)| seen.insert(p.clone()));
    Ok(out)
}

/// A finding for a file that does not parse.
fn invalid_yaml(file: &str, text: &str, e: &yaml::YamlError) -> Finding {
    let e = match e {
        yaml::YamlError::Load(e) => e,
        yaml::YamlError::AliasBomb(m) => {
            return invalid_at(
                file,
                m.line().max(1),
                m.column().max(1),
                format!(
                    "its aliases expand past {} nodes (an alias bomb?); the file was not expanded",
                    yaml::MAX_NODES
                ),
            )
        }
    };
    let (marker, what) = match e {
        LoadError::TopLevelMustBeMapping(m) => (m, "the top level must be a mapping".to_owned()),
        LoadError::TopLevelMustBeSequence(m) => (m, "the top level must be a sequence".to_owned()),
        LoadError::UnexpectedAnchor(m) => (m, "an alias to an unknown anchor".to_owned()),
        LoadError::MappingKeyMustBeScalar(m) => (
            m,
            "mapping keys must be plain scalars (GitHub rejects this too)".to_owned(),
        ),
        LoadError::UnexpectedTag(m) => (
            m,
            "explicit YAML tags are not allowed in workflows".to_owned(),
        ),
        LoadError::ScanError(m, se) => (m, se.info().to_owned()),
        LoadError::DuplicateKey(d) => (
            d.key.span().start().unwrap_or_else(|| unreachable_marker()),
            format!("duplicate key {:?}", d.key.as_str()),
        ),
    };
    let _ = text;
    invalid_at(file, marker.line().max(1), marker.column().max(1), what)
}

fn invalid_at(file: &str, line: usize, col: usize, what: String) -> Finding {
    Finding::new(
        &INVALID_YAML,
        Location {
            file: file.to_owned(),
            line,
            col,
        },
    )
    .title(format!("invalid YAML: {what}"))
    .explain(
        "GitHub refuses to run a workflow it cannot parse, and airlock could not audit this \
         file: none of its jobs were checked.",
    )
    .fix("Fix the syntax at the given position (e.g. with `actionlint` or `yamllint`).")
}

fn unreachable_marker() -> &'static marked_yaml::Marker {
    static M: std::sync::OnceLock<marked_yaml::Marker> = std::sync::OnceLock::new();
    M.get_or_init(|| marked_yaml::Marker::new(0, 0, 1, 1))
}

/// A parsed input file.
enum Parsed {
    Workflow(Box<Workflow>),
    Action(CompositeAction),
    Other,
}

/// Parses one file's text. Never panics; malformed input yields an `invalid-yaml` finding.
pub fn parse_file(
    display: &str,
    text: &str,
    action: bool,
) -> Result<Option<FileModel>, Box<Finding>> {
    match parse(
        display,
        text,
        if action { Kind::Action } else { Kind::Workflow },
    ) {
        Ok(Parsed::Workflow(w)) => Ok(Some(FileModel::Workflow(w))),
        Ok(Parsed::Action(a)) => Ok(Some(FileModel::Action(a))),
        Ok(Parsed::Other) => Ok(None),
        Err(f) => Err(f),
    }
}

/// The model of a parsed file.
#[derive(Debug, Clone)]
pub enum FileModel {
    /// A workflow.
    Workflow(Box<Workflow>),
    /// A composite action.
    Action(CompositeAction),
}

fn parse(display: &str, text: &str, kind: Kind) -> Result<Parsed, Box<Finding>> {
    parse_doc(display, text, kind).map(|(p, _)| p)
}

/// As [`parse`], with the aliases the file used.
fn parse_doc(
    display: &str,
    text: &str,
    kind: Kind,
) -> Result<(Parsed, Vec<yaml::AliasUse>), Box<Finding>> {
    let doc = yaml::load_doc(text).map_err(|e| Box::new(invalid_yaml(display, text, &e)))?;
    let parsed = parse_root(display, &doc.root, kind);
    Ok((parsed, doc.aliases))
}

/// Most aliases named by one finding about an anchor.
const MAX_RELATED: usize = 5;

/// Adds to each finding the other end of the aliases on its line: the anchor an alias there
/// expands, or the aliases that expand an anchor whose content holds the line. A finding in
/// an expanded anchor is about every place it is used, and the file says so in two places.
fn relate(findings: &mut [Finding], aliases: &BTreeMap<String, Vec<yaml::AliasUse>>) {
    for f in findings {
        let Some(uses) = aliases.get(&f.location.file) else {
            continue;
        };
        let line = f.location.line;
        let mut related: Vec<Related> = Vec::new();
        for u in uses.iter().filter(|u| u.alias.0 == line) {
            related.push(Related {
                line: u.anchor.0,
                col: u.anchor.1,
                message: format!("the anchor &{} that *{} expands", u.name, u.name),
            });
        }
        if related.is_empty() {
            for u in uses
                .iter()
                .filter(|u| (u.anchor_lines.0..=u.anchor_lines.1).contains(&line))
                .take(MAX_RELATED)
            {
                related.push(Related {
                    line: u.alias.0,
                    col: u.alias.1,
                    message: format!("used here too, by the alias *{}", u.name),
                });
            }
        }
        related.dedup();
        f.related = related;
    }
}

fn parse_root(display: &str, root: &marked_yaml::Node, kind: Kind) -> Parsed {
    let Some(m) = root.as_mapping() else {
        return Parsed::Other;
    };
    let looks_like_action = model::entry(m, "runs").is_some() && model::entry(m, "jobs").is_none();
    if kind == Kind::Action || looks_like_action {
        return match CompositeAction::from_root(display, m) {
            Some(a) => Parsed::Action(a),
            None => Parsed::Other,
        };
    }
    Parsed::Workflow(Box::new(Workflow::from_root(display, m)))
}

/// Makes `workflow_call` workflows inherit the triggers of the workflows in the scan that
/// call them with `uses: ./.github/workflows/x.yml`, and the inputs those callers fill with
/// the pull request's head (a head SHA handed to a reusable workflow that checks it out).
fn link_reusable(workflows: &mut [Workflow]) {
    /// (callee, (event, caller) triggers, input names carrying the head, caller path).
    type Edge = (usize, Vec<(String, String)>, Vec<String>, String);
    for _round in 0..5 {
        let mut changed = false;
        let mut edges: Vec<Edge> = Vec::new();
        for w in workflows.iter() {
            let mut triggers: Vec<(String, String)> = w
                .triggers
                .iter()
                .map(|t| (t.event.clone(), w.path.clone()))
                .collect();
            triggers.extend(w.inherited.iter().cloned());
            for job in &w.jobs {
                let Some((_, uses)) = &job.uses else { continue };
                let Some(rel) = uses.strip_prefix("./") else {
                    continue;
                };
                let rel = rel.split('@').next().unwrap_or(rel);
                // The callee lives in the caller's repository: `<root>/<rel>`.
                let caller_path = w.path.replace('\\', "/");
                let root = caller_path
                    .rfind(".github/workflows/")
                    .map(|i| &caller_path[..i])
                    .unwrap_or("");
                let expected = format!("{root}{rel}");
                let heads: Vec<String> = job
                    .with
                    .iter()
                    .filter(|(_, _, v)| audit::names_pr_head(v, w))
                    .map(|(k, _, _)| k.to_ascii_lowercase())
                    .collect();
                for (i, callee) in workflows.iter().enumerate() {
                    if callee.path.replace('\\', "/") == expected
                        && callee.has_trigger("workflow_call")
                    {
                        edges.push((i, triggers.clone(), heads.clone(), w.path.clone()));
                    }
                }
            }
        }
        for (i, ts, heads, caller) in edges {
            let w = &mut workflows[i];
            for (event, from) in ts {
                if event == "workflow_call" {
                    continue;
                }
                if !w.inherited.iter().any(|(e, _)| e == &event) {
                    w.inherited.push((event, from));
                    changed = true;
                }
            }
            for h in heads {
                if !w.head_inputs.iter().any(|(x, _)| x == &h) {
                    w.head_inputs.push((h, caller.clone()));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
}

/// Runs the scan and returns the report, without rendering it.
pub fn scan_workflows(args: &WorkflowsArgs) -> Result<Report, ScanError> {
    let rules = audit::rules();
    let known: Vec<&str> = rules.iter().map(|r| r.id).collect();
    let config_path = match &args.config {
        Some(p) => Some(p.clone()),
        None => args
            .paths
            .first()
            .filter(|p| p.is_dir())
            .map(|p| p.join(CONFIG_FILE))
            .filter(|p| p.is_file()),
    };
    let config = match &config_path {
        Some(p) => Config::load(p, &known)?,
        None => Config::default(),
    };
    let (policy, policy_src) = match &args.policy {
        Some(p) => {
            let lp = LoadedPolicy::from_file(p).map_err(|source| ScanError::Policy {
                path: p.clone(),
                source,
            })?;
            let src = std::fs::read_to_string(p).ok();
            (Some(lp), src)
        }
        None => (None, None),
    };

    let files = discover(&args.paths)?;
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let mut findings = Vec::new();
    let mut workflows = Vec::new();
    let mut actions = Vec::new();
    let mut aliases: BTreeMap<String, Vec<yaml::AliasUse>> = BTreeMap::new();
    for (path, kind) in &files {
        let bytes = std::fs::read(path).map_err(|source| ScanError::Read {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let display = path.display().to_string();
        match parse_doc(&display, &text, *kind) {
            Ok((parsed, uses)) => {
                match parsed {
                    Parsed::Workflow(w) => workflows.push(*w),
                    Parsed::Action(a) => actions.push(a),
                    Parsed::Other => {}
                }
                if !uses.is_empty() {
                    aliases.insert(display.clone(), uses);
                }
            }
            Err(f) => findings.push(*f),
        }
        sources.insert(display, text);
    }
    if let (Some(p), Some(src)) = (&args.policy, &policy_src) {
        sources.insert(p.display().to_string(), src.clone());
    }
    link_reusable(&mut workflows);

    let cx = Context {
        policy: policy.as_ref(),
        policy_src: policy_src.as_deref(),
    };
    for a in audit::registry() {
        for w in &workflows {
            a.workflow(w, &cx, &mut findings);
        }
        for act in &actions {
            a.action(act, &cx, &mut findings);
        }
        a.policy(&cx, &mut findings);
    }
    relate(&mut findings, &aliases);

    let mut report = Report {
        scan: "workflows".to_owned(),
        files_scanned: files.len(),
        ..Report::default()
    };
    if files.is_empty() {
        let shown: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
        report.notes.push(format!(
            "no workflows or actions found in {} (looked for .github/workflows/*.yml|yaml and action.yml|yaml)",
            shown.join(", ")
        ));
    }
    for f in findings {
        let suppressed_inline = sources.get(&f.location.file).is_some_and(|src| {
            let mut lines = src.lines().skip(f.location.line.saturating_sub(2));
            // The line above counts only when it is a comment line of its own.
            let above = if f.location.line >= 2 {
                lines.next()
            } else {
                None
            }
            .filter(|l| l.trim_start().starts_with('#'));
            let here = lines.next();
            [above, here]
                .into_iter()
                .flatten()
                .any(|l| inline_ignores(l).iter().any(|r| *r == f.rule || *r == "*"))
        });
        if suppressed_inline {
            report.suppressed.inline += 1;
        } else if config.ignores(f.rule, &f.location.file) {
            report.suppressed.config += 1;
        } else if f.severity < args.min_severity {
            report.suppressed.below_min_severity += 1;
        } else {
            report.findings.push(f);
        }
    }
    report.sort();
    Ok(report)
}

/// Scans one file's text through every audit, as a scan of that file alone would (no
/// reusable-workflow linking, no suppression). For fuzzing and embedding.
pub fn scan_source(
    display: &str,
    text: &str,
    action: bool,
    policy: Option<&LoadedPolicy>,
) -> Vec<Finding> {
    let cx = Context {
        policy,
        policy_src: None,
    };
    let mut out = Vec::new();
    let kind = if action { Kind::Action } else { Kind::Workflow };
    match parse_doc(display, text, kind) {
        Err(f) => out.push(*f),
        Ok((parsed, uses)) => {
            match parsed {
                Parsed::Other => {}
                Parsed::Workflow(w) => {
                    for a in audit::registry() {
                        a.workflow(&w, &cx, &mut out);
                    }
                }
                Parsed::Action(act) => {
                    for a in audit::registry() {
                        a.action(&act, &cx, &mut out);
                    }
                }
            }
            relate(&mut out, &BTreeMap::from([(display.to_owned(), uses)]));
        }
    }
    out
}
