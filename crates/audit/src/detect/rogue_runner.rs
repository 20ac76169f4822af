//! `rogue-runner`: a GitHub Actions runner that airlock did not start — runner-on-runner,
//! where a job registers the machine as a runner of the attacker's repository and so keeps
//! a remote shell on it.
//!
//! airlock starts a runner only when the job's command (`job.requested` argv) is a runner's
//! `run.sh`. Then that `run.sh` and what descends from it are expected: `run-helper.sh`, one
//! `Runner.Listener` at a time (a new one after the previous exited is a self-update
//! restart), and `Runner.Worker`s started directly by an expected Listener. Everything else is an alert:
//! any `config.sh` (or `Runner.Listener configure`), a second concurrent Listener, a Listener
//! or Worker outside that tree, a runner's `run.sh` when airlock started none, and the
//! download or unpacking of an `actions-runner-*` tarball.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::{some_of, strings, DetectError, Detector, Evidence};
use crate::alert::{Alert, Severity, Technique};
use crate::payload::{JobRequested, JobStarted};
use crate::{Kind, Record};

const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "busybox", "env"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// `config.sh`, or the Listener in `configure`/`remove` mode.
    Config,
    /// `run.sh` or `run-helper.sh`.
    RunScript,
    /// `Runner.Listener`.
    Listener,
    /// `Runner.Worker` or `Runner.PluginHost`.
    Worker,
    /// Fetching or unpacking an `actions-runner-*` release.
    Tarball,
}

#[derive(Debug, Clone)]
struct Exec {
    pid: u64,
    ppid: u64,
    /// Candidate program paths (absolute where the cwd allows), most specific first.
    programs: Vec<PathBuf>,
    argv: Vec<String>,
    rec: Record,
}

fn base(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn absolute(cwd: &str, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_owned()
    } else {
        Path::new(cwd).join(p)
    };
    // Lexical clean-up of `.` and `..`, so `./config.sh` and `bin/../run.sh` name a
    // directory that can be compared.
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl Exec {
    fn of(rec: &Record) -> Option<Self> {
        if !rec.is(Kind::ProcessExec) {
            return None;
        }
        let d = &rec.data;
        let cwd = d.get("cwd").and_then(Value::as_str).unwrap_or("/");
        let argv: Vec<String> = strings(d, "argv").into_iter().map(str::to_owned).collect();
        let mut programs = Vec::new();
        if let Some(p) = d.get("path").and_then(Value::as_str) {
            programs.push(absolute(cwd, p));
        }
        // What the exec really ran (an execveat relative to a directory fd names only a
        // basename in `path`).
        if let Some(p) = d
            .get("exe")
            .and_then(|e| e.get("path"))
            .and_then(Value::as_str)
            .filter(|p| p.starts_with('/'))
        {
            programs.push(PathBuf::from(p));
        }
        if let Some(a0) = argv.first() {
            programs.push(absolute(cwd, a0));
        }
        // A script run through its interpreter: `bash ./config.sh …`.
        if programs.iter().any(|p| SHELLS.contains(&base(p))) {
            if let Some(script) = argv.iter().skip(1).find(|a| !a.starts_with('-')) {
                programs.insert(0, absolute(cwd, script));
            }
        }
        Some(Self {
            pid: d.get("pid").and_then(Value::as_u64).unwrap_or(0),
            ppid: d.get("ppid").and_then(Value::as_u64).unwrap_or(0),
            programs,
            argv,
            rec: rec.clone(),
        })
    }

    fn named(&self, names: &[&str]) -> Option<&Path> {
        self.programs
            .iter()
            .find(|p| names.contains(&base(p)))
            .map(PathBuf::as_path)
    }
}

/// Whether `job.requested`'s argv starts a runner: `run.sh`, directly or through a shell.
fn starts_runner(argv: &[&str]) -> bool {
    let b = |s: &str| base(Path::new(s)).to_owned();
    match argv {
        [first, ..] if b(first) == "run.sh" => true,
        [first, rest @ ..] if SHELLS.contains(&b(first).as_str()) => rest
            .iter()
            .find(|a| !a.starts_with('-'))
            .is_some_and(|a| b(a) == "run.sh"),
        _ => false,
    }
}

/// The detector.
#[derive(Debug, Default)]
pub struct RogueRunner {
    airlock_started_one: bool,
    init_pid: Option<u64>,
    execs: Vec<Exec>,
    exited: HashMap<u64, u64>,
    /// pid → ppid of every exec.
    parent: HashMap<u64, u64>,
}

/// Names a runner's programs have.
const RUNNER_NAMES: &[&str] = &[
    "Runner.Listener",
    "Runner.Worker",
    "Runner.PluginHost",
    "config.sh",
    "run.sh",
    "run-helper.sh",
];

/// A cheap first look at an exec: does any of path and argv mention a runner's program or
/// release? Most execs of a job (compilers, shells) are dropped here.
fn might_be_runner(d: &Value) -> bool {
    let mention =
        |s: &str| RUNNER_NAMES.iter().any(|n| s.ends_with(n)) || s.contains("actions-runner-");
    d.get("path").and_then(Value::as_str).is_some_and(mention)
        || d.get("exe")
            .and_then(|e| e.get("path"))
            .and_then(Value::as_str)
            .is_some_and(mention)
        || strings(d, "argv").into_iter().any(mention)
}

impl RogueRunner {
    /// Directories that are runner installs: the parent of a Listener's or Worker's `bin/`,
    /// any directory named `actions-runner*`, and the directory of a `config.sh` given
    /// registration flags.
    fn runner_dirs(&self) -> HashSet<PathBuf> {
        let mut dirs = HashSet::new();
        for e in &self.execs {
            if let Some(p) = e.named(&["Runner.Listener", "Runner.Worker", "Runner.PluginHost"]) {
                if let Some(d) = p.parent().and_then(Path::parent) {
                    dirs.insert(d.to_owned());
                }
            }
            if let Some(p) = e.named(&["config.sh"]) {
                let registering = e
                    .argv
                    .iter()
                    .any(|a| matches!(a.as_str(), "--url" | "--token" | "--unattended" | "remove"));
                if registering {
                    if let Some(d) = p.parent() {
                        dirs.insert(d.to_owned());
                    }
                }
            }
        }
        dirs
    }

    fn classify(&self, e: &Exec, runner_dirs: &HashSet<PathBuf>) -> Option<Part> {
        // The script's own directory, not any ancestor: a repository's `run.sh` checked out
        // under the runner's `actions-runner/_work/` is not the runner's.
        let in_runner_dir = |p: &Path| {
            p.parent()
                .is_some_and(|d| runner_dirs.contains(d) || base(d).starts_with("actions-runner"))
        };
        if e.argv
            .iter()
            .any(|a| a.contains("actions-runner-linux") || a.contains("actions-runner-osx"))
        {
            return Some(Part::Tarball);
        }
        if e.named(&["Runner.Listener"]).is_some() {
            let configuring = e
                .argv
                .iter()
                .skip(1)
                .any(|a| a == "configure" || a == "remove");
            return Some(if configuring {
                Part::Config
            } else {
                Part::Listener
            });
        }
        if e.named(&["Runner.Worker", "Runner.PluginHost"]).is_some() {
            return Some(Part::Worker);
        }
        if let Some(p) = e.named(&["config.sh"]) {
            if in_runner_dir(p) {
                return Some(Part::Config);
            }
        }
        if let Some(p) = e.named(&["run.sh", "run-helper.sh"]) {
            if in_runner_dir(p) {
                return Some(Part::RunScript);
            }
        }
        None
    }
}

impl Detector for RogueRunner {
    fn id(&self) -> &'static str {
        "rogue-runner"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        match rec.known_kind() {
            Some(Kind::JobRequested) => {
                let argv = rec
                    .payload::<JobRequested>()
                    .map(|r| r.argv)
                    .unwrap_or_default();
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                self.airlock_started_one = starts_runner(&argv);
            }
            Some(Kind::JobStarted) => self.init_pid = rec.payload::<JobStarted>().map(|s| s.pid),
            Some(Kind::ProcessExit) => {
                if let Some(pid) = rec.data.get("pid").and_then(Value::as_u64) {
                    self.exited.insert(pid, rec.seq);
                }
            }
            Some(Kind::ProcessExec) => {
                let d = &rec.data;
                let pid = d.get("pid").and_then(Value::as_u64).unwrap_or(0);
                let ppid = d.get("ppid").and_then(Value::as_u64).unwrap_or(0);
                self.parent.insert(pid, ppid);
                // Only execs that can be part of a runner are kept whole.
                if might_be_runner(d) && self.execs.len() < super::MAX_TRACE {
                    if let Some(e) = Exec::of(rec) {
                        self.execs.push(e);
                    }
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        let dirs = self.runner_dirs();
        let parent = &self.parent;
        let descends = |pid: u64, roots: &HashSet<u64>| {
            let mut p = pid;
            for _ in 0..64 {
                if roots.contains(&p) {
                    return true;
                }
                match parent.get(&p) {
                    Some(&pp) if pp != p => p = pp,
                    _ => return false,
                }
            }
            false
        };
        // The root of the expected runner: the first run.sh exec, else the job's init.
        let first_run_sh = self
            .execs
            .iter()
            .find(|e| {
                self.classify(e, &dirs) == Some(Part::RunScript) && e.named(&["run.sh"]).is_some()
            })
            .map(|e| e.rec.seq);
        let roots: HashSet<u64> = match first_run_sh {
            Some(seq) => self
                .execs
                .iter()
                .filter(|e| e.rec.seq == seq)
                .map(|e| e.pid)
                .collect(),
            None => self.init_pid.into_iter().collect(),
        };
        // Listeners airlock expects, and the seq of the exec that started each.
        let mut listeners: HashSet<u64> = HashSet::new();
        let mut live_listener: Option<(u64, u64)> = None;
        let mut ev = Evidence::default();
        let mut what = BTreeSet::new();
        for e in &self.execs {
            let Some(part) = self.classify(e, &dirs) else {
                continue;
            };
            let program = e
                .programs
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let expected = self.airlock_started_one
                && match part {
                    Part::RunScript => {
                        Some(e.rec.seq) == first_run_sh
                            || (e.named(&["run-helper.sh"]).is_some() && descends(e.pid, &roots))
                    }
                    Part::Listener => {
                        // A previous Listener that has exited (before this exec) makes
                        // this one a restart, not a second runner.
                        let previous_gone = live_listener.is_none_or(|(pid, _)| {
                            self.exited.get(&pid).is_some_and(|s| *s < e.rec.seq)
                        });
                        let ok = descends(e.pid, &roots) && previous_gone;
                        if ok {
                            listeners.insert(e.pid);
                            live_listener = Some((e.pid, e.rec.seq));
                        }
                        ok
                    }
                    // The Listener spawns its Workers itself: a direct child only.
                    Part::Worker => listeners.contains(&e.ppid),
                    Part::Config | Part::Tarball => false,
                };
            if !expected {
                ev.add(&e.rec);
                what.insert(match part {
                    Part::Config => format!("registration ({program})"),
                    Part::RunScript => format!("runner start ({program})"),
                    Part::Listener => format!("Runner.Listener ({program})"),
                    Part::Worker => format!("Runner.Worker ({program})"),
                    Part::Tarball => "runner release download/unpack".to_owned(),
                });
            }
        }
        if ev.is_empty() {
            return Ok(());
        }
        out.push(ev.alert(
            self.id(),
            Technique::new("T1219", "Remote Access Software"),
            Severity::Critical,
            format!(
                "a GitHub Actions runner airlock did not start: {}",
                some_of(what.into_iter(), 4)
            ),
        ));
        Ok(())
    }
}
