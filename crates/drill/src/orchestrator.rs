//! The orchestrator: builds the drill's world, writes the drill's effective policy, runs each
//! attack in a fresh sandbox through the airlock binary itself, and compares what happened —
//! the attack's own report, the job report's alerts, and above all the world's records —
//! with what must happen.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_audit::{JobOutcome, JobReport};
use airlock_policy::{EgressMode, HumanDuration, LoadedPolicy};
use serde::Serialize;

use crate::addrs::{
    ALLOWED_NAME, DRILL_POOL, PERSISTENCE_MARKER, POLICY_NAMES, RESOLVER, WORKSPACE_SECRET_MARKER,
};
use crate::attack::{self, Attack, AttackResult, Category, Expect};
use crate::victim::{Victim, VictimRun};
use crate::world::{Hit, World, WorldError};

/// The longest any one attack's sandbox may live (the group's timeout is lowered to this).
pub const ATTACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What `airlock drill` is asked to do.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The airlock binary (the CLI passes `std::env::current_exe()`).
    pub airlock_exe: PathBuf,
    /// The `airlock-attack` binary, copied into each job's workspace.
    pub attack_exe: PathBuf,
    /// Policy file; `None` = the built-in policy.
    pub policy: Option<PathBuf>,
    /// Runner group; `None` = the policy's default group.
    pub group: Option<String>,
    /// Run only these attacks (ids); empty = all. The control always runs.
    pub only: Vec<String>,
    /// Keep the drill's directory (policy, reports, job state) for inspection.
    pub keep: bool,
}

impl DrillOptions {
    /// Options with `airlock-attack` looked up next to the airlock binary.
    pub fn new(airlock_exe: PathBuf) -> Self {
        let attack_exe = airlock_exe.with_file_name("airlock-attack");
        DrillOptions {
            airlock_exe,
            attack_exe,
            policy: None,
            group: None,
            only: Vec::new(),
            keep: false,
        }
    }
}

/// Errors that stop a drill (an attack that gets through is not an error: it is a row).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// Not root.
    #[error("airlock drill needs root (it creates namespaces, mounts and cgroups)")]
    NotRoot,
    /// The policy could not be loaded or has no such group.
    #[error(transparent)]
    Policy(#[from] airlock_policy::PolicyError),
    /// `--only` named an attack that does not exist.
    #[error("unknown attack {0} (`airlock-attack --list` shows them)")]
    UnknownAttack(String),
    /// A binary the drill needs is missing.
    #[error("{what} not found at {} (build it with `cargo build -p airlock -p airlock-drill`; airlock-attack must sit next to airlock)", path.display())]
    Missing {
        /// Which binary.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Leaving the host's network namespace failed.
    #[error("entering a private network namespace: {0}")]
    Netns(#[source] nix::Error),
    /// The world could not be built.
    #[error(transparent)]
    World(#[from] WorldError),
    /// The positive control failed: "blocked" would mean nothing.
    #[error("the drill's world is broken: the control attack (fetch http://{ALLOWED_NAME}/ from a sandbox) failed: {0}")]
    WorldBroken(String),
    /// The victim of an attack on a sibling job did not start or did not answer: "blocked"
    /// would mean nothing.
    #[error("the drill's world is broken: the victim job of {attack} is not alive: {reason}")]
    VictimBroken {
        /// The attack that needed it.
        attack: String,
        /// What went wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the effective policy failed.
    #[error("writing the drill's policy: {0}")]
    PolicyWrite(#[from] toml::ser::Error),
    /// Interrupted by SIGINT/SIGTERM (everything was cleaned up).
    #[error("interrupted")]
    Interrupted,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DrillError + 'a {
    move |source| DrillError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// What was observed for one attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Observed {
    /// It did not get through.
    Blocked,
    /// It got through.
    Succeeded,
    /// No verdict (the attack printed no result and was not stopped by a limit).
    Inconclusive,
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Observed::Blocked => "blocked",
            Observed::Succeeded => "SUCCEEDED",
            Observed::Inconclusive => "INCONCLUSIVE",
        })
    }
}

/// One line of the drill's table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Attack id.
    pub attack: String,
    /// What it does.
    pub title: String,
    /// Its group.
    pub category: Category,
    /// What must happen.
    pub expected: String,
    /// What happened.
    pub observed: Observed,
    /// The detector that must fire, if any.
    pub expected_alert: Option<String>,
    /// Whether it fired: `None` when no alert is expected, or when this airlock's job
    /// reports carry no `alerts` at all (detectors not available).
    pub alert_found: Option<bool>,
    /// Detectors that fired for this attack's job(s).
    pub alerts: Vec<String>,
    /// Whether the row matches the expectation.
    pub passed: bool,
    /// Why: the attack's own account, the job outcome, the world's unexplained hits.
    pub evidence: String,
    /// World hits not explained by the policy (each one is a packet that got through).
    pub world_hits: Vec<Hit>,
    /// The job id(s).
    pub jobs: Vec<String>,
    /// Wall-clock time of the attack's job(s).
    pub duration_ms: u64,
}

/// The drill's result.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The policy file, or `built-in`.
    pub policy: String,
    /// The group attacked.
    pub group: String,
    /// Whether job reports carried `alerts` (detectors present in this airlock).
    pub detection_available: bool,
    /// One row per attack, in order.
    pub rows: Vec<Row>,
    /// Every row passed.
    pub passed: bool,
    /// Wall-clock time of the whole drill.
    pub duration_ms: u64,
    /// The drill's directory, when `--keep` was given.
    pub kept: Option<PathBuf>,
}

impl DrillReport {
    /// Attacks that got through.
    pub fn succeeded(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.observed == Observed::Succeeded && r.category != Category::Control)
            .collect()
    }

    /// The table for people: attack, expected, observed, evidence.
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "{:<4} {:<20} {:<34} {:<34} {}\n",
            "", "ATTACK", "EXPECTED", "OBSERVED", "EVIDENCE"
        );
        for r in &self.rows {
            let mut obs = r.observed.to_string();
            match (&r.expected_alert, r.alert_found) {
                (Some(d), Some(true)) => obs.push_str(&format!(" + {d}")),
                (Some(d), Some(false)) => obs.push_str(&format!(", NO {d} ALERT")),
                (Some(_), None) => obs.push_str(", no detectors"),
                _ => {}
            }
            let mark = if r.passed { "ok  " } else { "FAIL" };
            // Evidence quotes what the job printed and the fake hosts received: escaped
            // before it is cut, so a cut never leaves a raw control character behind.
            let mut ev = airlock_text::escape(&r.evidence).into_owned();
            if ev.len() > 160 {
                let mut cut = 157;
                while !ev.is_char_boundary(cut) {
                    cut -= 1;
                }
                ev.truncate(cut);
                ev.push_str("...");
            }
            out.push_str(&format!(
                "{mark} {:<20} {:<34} {:<34} {ev}\n",
                r.attack, r.expected, obs
            ));
        }
        let failed = self.rows.iter().filter(|r| !r.passed).count();
        let by_design = self.succeeded().iter().filter(|r| r.passed).count();
        out.push_str(&format!(
            "\n{} attacks against group {} ({}): {} got through{}, {} rows failed, {:.1} s{}\n",
            self.rows.len(),
            self.group,
            self.policy,
            self.succeeded().len(),
            if by_design > 0 {
                format!(" ({by_design} let through by the group's audit mode, as expected there)")
            } else {
                String::new()
            },
            failed,
            self.duration_ms as f64 / 1000.0,
            if self.detection_available {
                ""
            } else {
                "; job reports carry no alerts (detectors not available): every expected alert counts as missing"
            }
        ));
        out
    }
}

/// Called while the drill runs.
pub trait Progress {
    /// Attack `index` (0-based) of `total` starts.
    fn started(&mut self, index: usize, total: usize, attack: &str);
    /// It finished.
    fn finished(&mut self, index: usize, total: usize, row: &Row);
}

/// A [`Progress`] that says nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn started(&mut self, _: usize, _: usize, _: &str) {}
    fn finished(&mut self, _: usize, _: usize, _: &Row) {}
}

/// Moves the CALLING THREAD (and every thread and process it creates afterwards) into a fresh
/// network namespace holding only `lo`. Call it before any other thread exists (before any
/// tokio runtime): threads created earlier stay in the host's namespace.
pub fn enter_private_netns() -> Result<(), DrillError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(DrillError::Netns)?;
    crate::world::ip(&["link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes the drill's directory and anything jobs left, whatever happened.
struct Scratch {
    dir: Option<tempfile::TempDir>,
    airlock: PathBuf,
}

impl Scratch {
    fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }
    fn state(&self) -> PathBuf {
        self.path().join("state")
    }
    fn data(&self) -> PathBuf {
        self.path().join("data")
    }
    fn gc(&self) {
        let jobs = self.state().join("jobs");
        let any = std::fs::read_dir(&jobs).is_ok_and(|mut d| d.next().is_some());
        if any {
            let _ = Command::new(&self.airlock)
                .arg("--state-dir")
                .arg(self.state())
                .arg("--data-dir")
                .arg(self.data())
                .args(["--net-pool", DRILL_POOL])
                .args(["gc", "--force"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    fn keep(mut self) -> PathBuf {
        self.gc();
        self.dir.take().map(|d| d.keep()).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.gc();
    }
}

/// One sandbox run.
struct JobRun {
    result: Option<AttackResult>,
    report: Option<JobReport>,
    /// Whether the job's detectors ran (a report exists; the unit tests model an airlock
    /// without detectors by clearing it).
    detected: bool,
    stderr: String,
    hits: Vec<Hit>,
    /// The job's records in the audit log (counted for attacks on airlock's records).
    audit_records: Option<u64>,
    /// The size of the job's report in bytes (measured for attacks on airlock's records).
    report_bytes: Option<u64>,
    /// The most open files its `airlock run` had while it ran, and the bound the group's
    /// `limits.connections` gives (counted for attacks on the gateway).
    airlock_files: Option<(usize, u64)>,
    /// The flows the job's gateway took in (counted for attacks on the gateway).
    gateway_flows: Option<GatewayFlows>,
}

/// What a job's gateway took in, against what the group's `limits.flow_rate` allows over the
/// job's run.
#[derive(Debug, Clone, Copy)]
struct GatewayFlows {
    /// Connections accepted and DNS queries read: the sum of the counts of its records.
    taken: u64,
    /// Twice `flow_rate` (a burst) plus `flow_rate` a second of the run.
    bound: u64,
    /// The churn's DNS queries answered (each recorded as it is answered, so its records'
    /// times are when it was taken in), and the bound over the time they span: tighter than
    /// the run's, which a gateway without a rate could stay under on a slow machine.
    churn: (u64, u64),
    /// Of the queries for the name the world's resolver never answers: how many the gateway
    /// asked (one upstream socket each) and the most it waited on at once (first asked within
    /// one upstream timeout of each other; each is waited on for twice that).
    silent: (usize, usize),
    /// CPU time of the gateway's threads, as last seen.
    cpu: Duration,
}

impl GatewayFlows {
    /// From the job's records, the world's hits during the job and the run's wall time.
    fn of(report: &JobReport, hits: &[Hit], flow_rate: u32, run: Duration) -> Self {
        let flows = || {
            report
                .egress
                .iter()
                .filter(|r| matches!(r.kind.as_str(), "dns" | "http" | "https" | "connect"))
                .filter(|r| {
                    !r.flags
                        .iter()
                        .any(|f| f == airlock_net::gateway::SLOWED_FLAG)
                })
        };
        let rate = f64::from(flow_rate);
        let bound = |secs: f64| (2.0 * rate + rate * secs).ceil() as u64;
        let churn: Vec<_> = flows()
            .filter(|r| r.name.as_deref() == Some(crate::attack::gateway_flood::CHURN_NAME))
            .collect();
        let first = churn.iter().map(|r| r.time_ms).min().unwrap_or(0);
        let last = churn
            .iter()
            .map(|r| r.time_ms.max(r.last_ms))
            .max()
            .unwrap_or(0);
        // (+2 s: a record's time is taken when the query is answered, which a loaded gateway
        // may do later than it took the query in, bunching the records; never a false "got
        // through" for that. A gateway without a rate still passes this many times over.)
        let span = (last.saturating_sub(first) as f64 + 2000.0) / 1000.0;
        Self {
            taken: flows().map(|r| r.count).sum(),
            bound: bound(run.as_secs_f64()),
            churn: (churn.iter().map(|r| r.count).sum(), bound(span)),
            silent: silent_in_flight(hits),
            cpu: Duration::ZERO,
        }
    }
}

/// How many of the gateway's upstream sockets asked the world's resolver for the silent name,
/// and the most first seen within one upstream timeout of each other: all of those were
/// waited on together.
fn silent_in_flight(hits: &[Hit]) -> (usize, usize) {
    let mut first = std::collections::HashMap::new();
    for h in hits {
        if h.service == "dns" && h.detail.contains(crate::world::SILENT_ANSWER) {
            first.entry(h.peer).or_insert(h.time_ms);
        }
    }
    let mut t: Vec<u128> = first.into_values().collect();
    t.sort_unstable();
    let window = airlock_net::gateway::DNS_TIMEOUT.as_millis();
    let most = (0..t.len())
        .map(|i| t[i..].iter().take_while(|x| **x - t[i] < window).count())
        .max()
        .unwrap_or(0);
    (t.len(), most)
}

/// What [`run_sampled`] saw of a running `airlock run`.
#[derive(Debug, Default, Clone, Copy)]
struct Sampled {
    /// The most open files it had at once.
    files: usize,
    /// The CPU time of its gateway's threads when last seen (they end before it does).
    gateway_cpu: Duration,
}

/// CPU time of the threads of `pid` named after the gateway (`airlock-gateway`, cut to the
/// kernel's 15 characters), from `/proc/PID/task/*/stat`.
fn gateway_cpu(pid: u32) -> Duration {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let mut ticks = 0u64;
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state …`: comm may hold anything, so fields count from its last `)`.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.contains("(airlock-gatewa") {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the comm.
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks += n(11) + n(12);
    }
    Duration::from_millis(ticks * 1000 / tick)
}

/// Runs `cmd` to its end, its output captured, sampling its process every 20 ms: its open
/// files and its gateway's CPU time.
fn run_sampled(mut cmd: Command) -> std::io::Result<(std::process::Output, Sampled)> {
    use std::io::Read;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut s = Sampled::default();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(d) = std::fs::read_dir(&fd_dir) {
                    s.files = s.files.max(d.count());
                }
                s.gateway_cpu = s.gateway_cpu.max(gateway_cpu(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            s
        })
    };
    fn drain<R: Read + Send + 'static>(p: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut b);
            }
            b
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    // The sampler stops before the child is reaped: until then its pid (and `/proc` entry)
    // cannot be another process's, so a recycled pid's files are never counted.
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let sampled = sampler.join().unwrap_or_default();
    let status = child.wait()?;
    Ok((
        std::process::Output {
            status,
            stdout,
            stderr,
        },
        sampled,
    ))
}

/// Bytes an image store takes, weighed from outside (not by its own count, which is under
/// test): the length of every blob and of every file of every unpacked root filesystem.
fn store_bytes(store: &Path) -> u64 {
    use airlock_sandbox::image::tree_bytes;
    tree_bytes(&store.join("blobs/sha256")) + tree_bytes(&store.join("rootfs"))
}

/// How many records of job `job` the audit log in `dir` holds (every segment), read line by
/// line.
fn count_job_records(dir: &Path, job: &str) -> Option<u64> {
    use std::io::BufRead;
    let needle = format!("\"job\":\"{job}\"");
    let mut n = 0u64;
    let mut any = false;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("audit.jsonl") {
            continue;
        }
        any = true;
        let f = std::fs::File::open(e.path()).ok()?;
        for line in std::io::BufReader::new(f).lines() {
            if line.ok()?.contains(&needle) {
                n += 1;
            }
        }
    }
    any.then_some(n)
}

impl JobRun {
    fn outcome(&self) -> (String, bool) {
        let Some(r) = &self.report else {
            return ("no job report".into(), false);
        };
        let stopped_by_limit = matches!(r.outcome, JobOutcome::Signaled(_) | JobOutcome::TimedOut);
        let text = match &r.outcome {
            JobOutcome::Exited(c) => format!("exited {c}"),
            JobOutcome::Signaled(s) => format!("signaled {s}"),
            JobOutcome::TimedOut => "timed_out".into(),
            JobOutcome::Interrupted(s) => format!("interrupted {s}"),
            JobOutcome::Failed(f) => format!("failed {:?}", f.message),
        };
        (text, stopped_by_limit)
    }
    fn job_id(&self) -> Option<String> {
        self.report.as_ref().map(|r| r.id.clone())
    }
    /// `detector: evidence seqs` of each alert.
    fn alert_evidence(&self) -> Vec<String> {
        let Some(r) = &self.report else {
            return Vec::new();
        };
        r.alerts
            .iter()
            .map(|x| {
                let seqs: Vec<String> = x.evidence.iter().map(ToString::to_string).collect();
                // A scan's alert can cite hundreds of records: the range is enough here.
                let seqs = match seqs.as_slice() {
                    [first, .., last] if seqs.len() > 8 => {
                        format!("{first}..{last}, {} records", seqs.len())
                    }
                    _ => seqs.join(","),
                };
                format!("alert {} (evidence seq {seqs})", x.detector)
            })
            .collect()
    }
    /// The summaries of this job's alerts of `detector`.
    fn alert_summaries(&self, detector: &str) -> Vec<String> {
        self.report
            .iter()
            .flat_map(|r| &r.alerts)
            .filter(|x| x.detector == detector)
            .map(|x| x.summary.clone())
            .collect()
    }
    /// `None` when this job's detectors did not run.
    fn alerts(&self) -> Option<Vec<String>> {
        let r = self.report.as_ref().filter(|_| self.detected)?;
        Some(r.alerts.iter().map(|x| x.detector.clone()).collect())
    }
}

struct Runner<'a> {
    opts: &'a DrillOptions,
    scratch: &'a Scratch,
    policy: PathBuf,
    group: String,
    world: &'a World,
    /// The group's egress is in `audit` mode: attacks expect [`Attack::expect_in_audit_mode`].
    audit: bool,
    /// The group's limits (`connections` and `flow_rate` bound what its gateway may cost).
    limits: airlock_policy::Limits,
}

impl Runner<'_> {
    /// `airlock run` of `./airlock-attack ID` in workspace `ws`, its report to `report`.
    fn command(&self, id: &str, ws: &Path, report: &Path) -> Command {
        self.command_late(id, ws, report, &[])
    }

    /// [`Runner::command`] of a primed sandbox waiting for `late` (`--late-env`).
    fn command_late(&self, id: &str, ws: &Path, report: &Path, late: &[&str]) -> Command {
        let mut c = Command::new(&self.opts.airlock_exe);
        c.arg("--state-dir")
            .arg(self.scratch.state())
            .arg("--data-dir")
            .arg(self.scratch.data())
            .args(["--net-pool", DRILL_POOL])
            .args(["run", "-q", "--policy"])
            .arg(&self.policy)
            .args(["--group", &self.group, "--report"])
            .arg(report)
            .arg("-w")
            .arg(ws)
            .args(late.iter().flat_map(|n| ["--late-env", n]))
            .args(["--", "./airlock-attack", id])
            .env_remove("AIRLOCK_POLICY");
        c
    }

    fn run(&self, id: &str) -> Result<JobRun, DrillError> {
        self.run_in(id, &self.scratch.path().join("ws"))
    }

    /// `run` with workspace `ws`.
    fn run_in(&self, id: &str, ws: &Path) -> Result<JobRun, DrillError> {
        let dir = self.scratch.path();
        let report = dir.join("reports").join(format!("{id}.json"));
        let _ = std::fs::remove_file(&report);
        let before = self.world.hit_count();
        let mut cmd = self.command(id, ws, &report);
        cmd.stdin(Stdio::null());
        let files_bound = attack::find(id).is_some_and(|a| a.gateway_files_bound());
        let started = Instant::now();
        let (out, sampled) = if files_bound {
            run_sampled(cmd).map_err(io("running", &self.opts.airlock_exe))?
        } else {
            let out = cmd
                .output()
                .map_err(io("running", &self.opts.airlock_exe))?;
            (out, Sampled::default())
        };
        let took = started.elapsed();
        // Let the world's servers finish recording connections the job just closed.
        std::thread::sleep(Duration::from_millis(100));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<AttackResult>(l).ok());
        let report_bytes = std::fs::metadata(&report).ok().map(|m| m.len());
        let report = JobReport::read(&report).ok();
        let mut run = JobRun {
            result,
            detected: report.is_some(),
            report,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            hits: self.world.hits_since(before),
            audit_records: None,
            report_bytes: None,
            airlock_files: files_bound.then(|| {
                (
                    sampled.files,
                    airlock_net::gateway::fd_need(self.limits.connections as usize),
                )
            }),
            gateway_flows: None,
        };
        if files_bound {
            run.gateway_flows = run.report.as_ref().map(|r| GatewayFlows {
                cpu: sampled.gateway_cpu,
                ..GatewayFlows::of(r, &run.hits, self.limits.flow_rate, took)
            });
        }
        if attack::find(id).is_some_and(|a| a.record_bound().is_some()) {
            run.report_bytes = report_bytes;
            run.audit_records = run
                .job_id()
                .and_then(|j| count_job_records(&self.scratch.data().join("audit"), &j));
        }
        Ok(run)
    }

    /// Starts the victim helper `id` for attack `attack` in a sandbox of its own (own
    /// workspace, same group and policy) and proves it alive (see [`crate::victim`]).
    fn start_victim(&self, attack: &str, id: &str, primed: bool) -> Result<Victim, DrillError> {
        let dir = self.scratch.path();
        let ws = dir.join("ws-victim");
        std::fs::create_dir_all(&ws).map_err(io("creating", &ws))?;
        let exe = ws.join("airlock-attack");
        if !exe.is_file() {
            std::fs::copy(dir.join("ws/airlock-attack"), &exe).map_err(io("copying", &exe))?;
        }
        let report = dir.join("reports").join(format!("{id}.json"));
        let _ = std::fs::remove_file(&report);
        let nonce = crate::victim::nonce().map_err(io("reading", Path::new("/dev/urandom")))?;
        // A primed victim gets its nonce only with its start (never on its command line).
        let (cmd, probe) = if primed {
            let late = [crate::attack::sibling_job::LATE_NONCE];
            let probe = crate::victim::PrimedProbe {
                jobs: self.scratch.state().join("jobs"),
                audit: self.scratch.data().join("audit"),
            };
            (self.command_late(id, &ws, &report, &late), Some(probe))
        } else {
            let mut cmd = self.command(id, &ws, &report);
            cmd.arg(&nonce);
            (cmd, None)
        };
        Victim::start(cmd, report, nonce, probe).map_err(|reason| DrillError::VictimBroken {
            attack: attack.to_owned(),
            reason,
        })
    }

    fn attack(&self, a: &dyn Attack) -> Result<Row, DrillError> {
        let start = Instant::now();
        if a.host_side_image() {
            return self.hostile_images(a, start);
        }
        // The victim (if any) lives for the whole attack; dropped on an error, it is stopped.
        let victim = match a.victim() {
            Some(v) => Some(self.start_victim(a.id(), v, a.victim_primed())?),
            None => None,
        };
        // An attack on the workspace copy runs in a bait workspace that a host-side thread
        // keeps swapping for the whole job (the copy happens at its start).
        let (first, swaps) = if a.races_workspace() {
            let ws = race_workspace(self.scratch.path())?;
            let racer = Racer::start(&ws);
            let run = self.run_in(a.id(), &ws);
            (run?, Some(racer.stop()))
        } else {
            (self.run(a.id())?, None)
        };
        let victim = victim.map(Victim::stop);
        let mut runs = vec![first];
        if let Some(judge) = a.judged_by() {
            runs.push(self.run(judge)?);
        }
        let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let expect = if self.audit {
            a.expect_in_audit_mode()
        } else {
            a.expect()
        };
        let mut row = judge_as(a, expect, &runs, victim.as_ref(), duration_ms);
        if let Some(n) = swaps {
            row.evidence.push_str(&format!(
                "; host-side swapper: {n} exchanges during the job"
            ));
            // A swapper that never ran cannot vouch for "blocked".
            if n == 0 && row.observed == Observed::Blocked {
                row.observed = Observed::Inconclusive;
                row.passed = false;
            }
        }
        Ok(row)
    }
}

impl Runner<'_> {
    /// `hostile-image`: imports each hostile image with the airlock binary into the drill's
    /// own store and judges by the host side only: a file planted in the bait directory, the
    /// bait deleted, or the bait file's inode inside an unpacked image.
    fn hostile_images(&self, a: &dyn Attack, start: Instant) -> Result<Row, DrillError> {
        use std::os::unix::fs::MetadataExt as _;
        let dir = self.scratch.path().join("hostile-image");
        let bait_dir = dir.join("bait");
        let bait_file = dir.join("bait-secret");
        std::fs::create_dir_all(&bait_dir).map_err(io("creating", &bait_dir))?;
        std::fs::write(bait_dir.join("victim"), "bait\n").map_err(io("writing", &bait_dir))?;
        std::fs::write(&bait_file, "bait\n").map_err(io("writing", &bait_file))?;
        let secret_ino = std::fs::metadata(&bait_file)
            .map_err(io("reading", &bait_file))?
            .ino();
        let mut notes = Vec::new();
        let mut through = Vec::new();
        for (i, v) in attack::hostile_image::variants(&bait_dir, &bait_file)
            .iter()
            .enumerate()
        {
            let name = format!("drill-hostile-{i}:1");
            if let (Some(size), Some(bound)) = (v.max_size, v.max_store) {
                let mut said = Vec::new();
                for copy in ["a", "b"] {
                    // Two images, not one twice (the store would share it): each has a
                    // layer naming itself.
                    let mut layers = v.layers.clone();
                    layers.push(attack::hostile_image::layer(|t| {
                        attack::hostile_image::raw_entry(
                            t,
                            copy,
                            tar::EntryType::Regular,
                            None,
                            copy.as_bytes(),
                        )
                    }));
                    let layout = dir.join(format!("layout-{i}{copy}"));
                    write_layout(&layout, &layers)?;
                    let out = self
                        .airlock()
                        .args(["image", "import", "--name", &format!("{name}{copy}")])
                        .args(["--max-size", size, "--max-store", bound])
                        .arg(&layout)
                        .stdin(Stdio::null())
                        .output()
                        .map_err(io("running", &self.opts.airlock_exe))?;
                    said.push(if out.status.success() {
                        "imported"
                    } else {
                        "refused"
                    });
                }
                let used = store_bytes(&self.scratch.data().join("images"));
                let max = bound.parse::<airlock_policy::ByteSize>().map_or(0, |b| b.0);
                let what = format!(
                    "{}: {}, the store {used} bytes (--max-store {bound})",
                    v.name,
                    said.join(" then ")
                );
                if used > max {
                    through.push(what);
                } else {
                    notes.push(what);
                }
                for copy in ["a", "b"] {
                    let _ = self
                        .airlock()
                        .args(["image", "rm", &format!("{name}{copy}")])
                        .output();
                }
                continue;
            }
            let layout = dir.join(format!("layout-{i}"));
            let digest = write_layout(&layout, &v.layers)?;
            let out = self
                .airlock()
                .args(["image", "import", "--name", &name])
                .args(v.max_size.iter().flat_map(|m| ["--max-size", m]))
                .arg(&layout)
                .stdin(Stdio::null())
                .output()
                .map_err(io("running", &self.opts.airlock_exe))?;
            if let Some(m) = v.max_size {
                let staging = std::fs::read_dir(self.scratch.data().join("images/tmp"))
                    .map_or(0, |d| d.count());
                if out.status.success() {
                    through.push(format!("{}: imported past --max-size {m}", v.name));
                    let _ = self.airlock().args(["image", "rm", &name]).output();
                } else if staging > 0 {
                    through.push(format!("{}: refused, but its staging was left", v.name));
                } else {
                    notes.push(format!("{}: refused, nothing left", v.name));
                }
                continue;
            }
            if out.status.success() {
                let linked = walk_inodes(&self.scratch.data().join("images/rootfs").join(&digest))
                    .contains(&secret_ino);
                if linked {
                    through.push(format!("{}: the host file is inside the image", v.name));
                }
                notes.push(format!("{}: imported, contained", v.name));
                let _ = self.airlock().args(["image", "rm", &name]).output();
            } else {
                let why = String::from_utf8_lossy(&out.stderr);
                let why = why
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(160)
                    .collect::<String>();
                notes.push(format!(
                    "{}: refused ({})",
                    v.name,
                    airlock_text::escape(&why)
                ));
            }
        }
        let planted: Vec<String> = std::fs::read_dir(&bait_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "victim")
                    .collect()
            })
            .unwrap_or_default();
        if !planted.is_empty() {
            through.push(format!("planted next to the bait: {}", planted.join(", ")));
        }
        if !bait_dir.join("victim").exists() {
            through.push("the bait was deleted".to_owned());
        }
        let observed = if through.is_empty() {
            Observed::Blocked
        } else {
            Observed::Succeeded
        };
        let mut evidence = notes.join("; ");
        if !through.is_empty() {
            evidence = format!("GOT THROUGH: {}; {evidence}", through.join("; "));
        }
        Ok(Row {
            attack: a.id().to_owned(),
            title: a.title().to_owned(),
            category: a.category(),
            expected: a.expect().to_string(),
            observed,
            expected_alert: None,
            alert_found: None,
            alerts: Vec::new(),
            passed: observed == Observed::Blocked,
            evidence,
            world_hits: Vec::new(),
            jobs: Vec::new(),
            duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The airlock binary with the drill's state and data directories.
    fn airlock(&self) -> Command {
        let mut c = Command::new(&self.opts.airlock_exe);
        c.arg("--state-dir")
            .arg(self.scratch.state())
            .arg("--data-dir")
            .arg(self.scratch.data());
        c
    }
}

/// Writes an OCI layout of one image with `layers` (uncompressed); returns the manifest's
/// hex digest.
fn write_layout(dir: &Path, layers: &[Vec<u8>]) -> Result<String, DrillError> {
    use sha2::{Digest as _, Sha256};
    let hex = |b: &[u8]| -> String {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io("creating", &blobs))?;
    let put = |media: &str, data: &[u8]| -> Result<serde_json::Value, DrillError> {
        let h = hex(data);
        let p = blobs.join(&h);
        std::fs::write(&p, data).map_err(io("writing", &p))?;
        Ok(
            serde_json::json!({ "mediaType": media, "digest": format!("sha256:{h}"), "size": data.len() }),
        )
    };
    let mut descs = Vec::new();
    for l in layers {
        descs.push(put("application/vnd.oci.image.layer.v1.tar", l)?);
    }
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", hex(l)))
        .collect();
    let config = serde_json::json!({ "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids } });
    let dc = put(
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    )?;
    let manifest = serde_json::json!({ "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": dc, "layers": descs });
    let mbytes = manifest.to_string().into_bytes();
    let dm = put("application/vnd.oci.image.manifest.v1+json", &mbytes)?;
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [dm] });
    let p = dir.join("index.json");
    std::fs::write(&p, index.to_string()).map_err(io("writing", &p))?;
    let p = dir.join("oci-layout");
    std::fs::write(&p, r#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io("writing", &p))?;
    Ok(hex(&mbytes))
}

/// Inodes of the regular files below `root` (no symlink followed; bounded).
fn walk_inodes(root: &Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten().take(10_000) {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                out.push(m.ino());
            }
        }
    }
    out
}

/// Bait pairs of the `workspace-race` workspace: `fN` (a file) ↔ `lN` (a symlink to the
/// root-only host file) and `dN` (a directory) ↔ `mN` (a symlink to a host directory).
const RACE_PAIRS: usize = 16;
/// Files in each bait directory, and in the host directory under the same names: a copy that
/// walks `dN` by path while `dN` becomes a symlink reads the host's files from then on, so
/// the race window is the whole copy of the directory, not one syscall.
const RACE_DIR_FILES: usize = 128;

/// Builds the `workspace-race` workspace under `dir` (the drill's 0700 directory): the bait
/// pairs and `airlock-attack`, and outside it the root-only host file (mode 0600) and host
/// directory their symlinks point at, every file holding [`WORKSPACE_SECRET_MARKER`].
fn race_workspace(dir: &Path) -> Result<PathBuf, DrillError> {
    use std::os::unix::fs::PermissionsExt;
    let (ws, host) = (dir.join("ws-race"), dir.join("race-host"));
    // A previous run's swapper may have left any pair exchanged: start afresh.
    let _ = std::fs::remove_dir_all(&ws);
    for d in [&ws, &host.join("dir")] {
        std::fs::create_dir_all(d).map_err(io("creating", d))?;
    }
    let secret = host.join("secret");
    let host_files = (0..RACE_DIR_FILES).map(|j| host.join(format!("dir/n{j}")));
    for f in std::iter::once(secret.clone()).chain(host_files) {
        std::fs::write(&f, WORKSPACE_SECRET_MARKER).map_err(io("writing", &f))?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
            .map_err(io("setting permissions of", &f))?;
    }
    let exe = ws.join("airlock-attack");
    std::fs::copy(dir.join("ws/airlock-attack"), &exe).map_err(io("copying", &exe))?;
    for i in 0..RACE_PAIRS {
        let (f, d) = (ws.join(format!("f{i}")), ws.join(format!("d{i}")));
        std::fs::write(&f, "bait").map_err(io("writing", &f))?;
        std::fs::create_dir(&d).map_err(io("creating", &d))?;
        for j in 0..RACE_DIR_FILES {
            let n = d.join(format!("n{j}"));
            std::fs::write(&n, "bait").map_err(io("writing", &n))?;
        }
        for (link, target) in [("l", &secret), ("m", &host.join("dir"))] {
            let l = ws.join(format!("{link}{i}"));
            std::os::unix::fs::symlink(target, &l).map_err(io("symlinking", &l))?;
        }
    }
    Ok(ws)
}

/// The host-side swapper of `workspace-race`: two threads exchanging every bait pair with
/// `renameat2(RENAME_EXCHANGE)` as fast as they can, until stopped.
struct Racer {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Racer {
    fn start(ws: &Path) -> Racer {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [("f", "l"), ("d", "m")]
            .into_iter()
            .map(|(a, b)| {
                let (ws, stop) = (ws.to_owned(), stop.clone());
                std::thread::spawn(move || {
                    let pairs: Vec<(PathBuf, PathBuf)> = (0..RACE_PAIRS)
                        .map(|i| (ws.join(format!("{a}{i}")), ws.join(format!("{b}{i}"))))
                        .collect();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for (x, y) in &pairs {
                            if nix::fcntl::renameat2(
                                None,
                                x,
                                None,
                                y,
                                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                            )
                            .is_ok()
                            {
                                n += 1;
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        Racer { stop, threads }
    }

    /// Stops the threads; the number of exchanges they made.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.drain(..).map(|t| t.join().unwrap_or(0)).sum()
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Host paths a persistence attack would have reached if it escaped (`~` = /home/runner and
/// /root). Only read.
fn planted_on_host() -> Vec<String> {
    let mut found = Vec::new();
    for p in attack::PERSISTENCE_PATHS {
        let paths: Vec<String> = match p.strip_prefix("~/") {
            Some(rest) => vec![format!("/home/runner/{rest}"), format!("/root/{rest}")],
            None => vec![(*p).to_owned()],
        };
        for path in paths {
            if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(PERSISTENCE_MARKER)) {
                found.push(path);
            }
        }
    }
    found
}

/// Compares what happened with what must happen. `victim`: the sibling job an attack on
/// another job was aimed at; its records count as the world's.
#[cfg(test)]
fn judge(a: &dyn Attack, runs: &[JobRun], victim: Option<&VictimRun>, duration_ms: u64) -> Row {
    judge_as(a, a.expect(), runs, victim, duration_ms)
}

/// [`judge`] against `expect` (the attack's own expectation for the group's egress mode).
fn judge_as(
    a: &dyn Attack,
    expect: Expect,
    runs: &[JobRun],
    victim: Option<&VictimRun>,
    duration_ms: u64,
) -> Row {
    let first = &runs[0];
    let last = &runs[runs.len() - 1];
    let world_hits: Vec<Hit> = runs
        .iter()
        .flat_map(|r| r.hits.iter().cloned())
        .chain(victim.iter().flat_map(|v| v.hits()))
        .filter(|h| !h.allowed())
        .collect();
    let mut evidence = Vec::new();
    let (outcome, stopped_by_limit) = first.outcome();
    // The verdict of the attack itself: for a judged attack, the judge's.
    let verdict_run = last;
    let observed = match (&verdict_run.result, expect) {
        (Some(r), Expect::Succeeds) => {
            evidence.push(r.detail.clone());
            let reached = runs
                .iter()
                .flat_map(|r| r.hits.iter())
                .any(|h| h.allowed() && h.service == "http");
            if r.succeeded && reached {
                Observed::Succeeded
            } else {
                Observed::Blocked
            }
        }
        (Some(r), _) => {
            if runs.len() > 1 {
                if let Some(f) = &first.result {
                    evidence.push(format!("planted: {}", summarize(&f.detail)));
                }
            }
            evidence.push(r.detail.clone());
            if r.succeeded || !world_hits.is_empty() {
                Observed::Succeeded
            } else {
                Observed::Blocked
            }
        }
        (None, _) if stopped_by_limit && runs.len() == 1 => {
            evidence.push(format!("job stopped by a limit: {outcome}"));
            if world_hits.is_empty() {
                Observed::Blocked
            } else {
                Observed::Succeeded
            }
        }
        (None, _) => {
            evidence.push(format!(
                "no result from the attack ({outcome}); stderr: {}",
                summarize(&verdict_run.stderr)
            ));
            if world_hits.is_empty() {
                Observed::Inconclusive
            } else {
                Observed::Succeeded
            }
        }
    };
    let mut observed = observed;
    // An attack on airlock's own records got through if the job's records were not bounded.
    if let Some(bound) = a.record_bound() {
        // What airlock keeps of each record is bounded too: the report holds the job's
        // network records whole (up to the gateway's book), so its size shows it.
        match first.report_bytes {
            Some(n) if n > attack::REPORT_BOUND => {
                evidence.push(format!(
                    "the job's report is {n} bytes, bound {}",
                    attack::REPORT_BOUND
                ));
                observed = Observed::Succeeded;
            }
            Some(n) => evidence.push(format!(
                "the job's report is {} KiB (bound {} KiB)",
                n / 1024,
                attack::REPORT_BOUND / 1024
            )),
            None => evidence.push("the job's report has no size".to_owned()),
        }
        match first.audit_records {
            Some(n) if n > bound => {
                evidence.push(format!("{n} audit records for the job, bound {bound}"));
                observed = Observed::Succeeded;
            }
            Some(n) => evidence.push(format!("{n} audit records for the job (bound {bound})")),
            None => {
                evidence.push("the job's audit records could not be counted".to_owned());
                if observed == Observed::Blocked {
                    observed = Observed::Inconclusive;
                }
            }
        }
    }
    // An attack on airlock's gateway got through if airlock's own open files were not bounded.
    if a.gateway_files_bound() {
        match first.airlock_files {
            Some((peak, bound)) if peak as u64 > bound => {
                evidence.push(format!(
                    "airlock held {peak} open files during the flood, bound {bound}"
                ));
                observed = Observed::Succeeded;
            }
            Some((peak, bound)) if peak > 0 => evidence.push(format!(
                "airlock held at most {peak} open files (bound {bound})"
            )),
            _ => {
                evidence.push("airlock's open files could not be counted".to_owned());
                if observed == Observed::Blocked {
                    observed = Observed::Inconclusive;
                }
            }
        }
        // And its CPU: the flows the gateway took in, by its records, within the rate.
        match first.gateway_flows {
            Some(f) if f.taken > f.bound || f.churn.0 > f.churn.1 => {
                evidence.push(format!(
                    "airlock's gateway took in {} new flows (bound {}), {} DNS queries of the \
                     churn (bound {}): over limits.flow_rate; its threads used {:.1}s of CPU",
                    f.taken,
                    f.bound,
                    f.churn.0,
                    f.churn.1,
                    f.cpu.as_secs_f64()
                ));
                observed = Observed::Succeeded;
            }
            Some(f) if f.taken > 0 && f.churn.0 > 0 => evidence.push(format!(
                "the gateway took in {} new flows (bound {}), {} DNS queries of the churn \
                 (bound {}); its threads used {:.1}s of CPU",
                f.taken,
                f.bound,
                f.churn.0,
                f.churn.1,
                f.cpu.as_secs_f64()
            )),
            _ => {
                evidence.push("the flows the gateway took in could not be counted".to_owned());
                if observed == Observed::Blocked {
                    observed = Observed::Inconclusive;
                }
            }
        }
        // And what it waits on: queries for a name whose resolver never answers.
        let bound = airlock_net::gateway::DNS_IN_FLIGHT;
        match first.gateway_flows.map(|f| f.silent) {
            Some((_, most)) if most > bound => {
                evidence.push(format!(
                    "the gateway waited on {most} DNS queries at once for a resolver that \
                     never answers (bound {bound})"
                ));
                observed = Observed::Succeeded;
            }
            Some((asked, most)) if asked > 0 => evidence.push(format!(
                "{asked} queries asked of a resolver that never answers, at most {most} at once \
                 (bound {bound})"
            )),
            // Nothing forwarded (egress `none`): nothing to judge.
            _ => evidence.push("no query reached the silent resolver".to_owned()),
        }
    }
    if let (Some(v), true) = (victim, a.victim_judges()) {
        match &v.result {
            Some(r) if r.succeeded => {
                evidence.push(format!("GOT THROUGH to the waiting sandbox: {}", r.detail));
                observed = Observed::Succeeded;
            }
            Some(r) => evidence.push(format!("the waiting sandbox: {}", r.detail)),
            None => {
                evidence.push("the waiting sandbox gave no verdict".to_owned());
                if observed == Observed::Blocked {
                    observed = Observed::Inconclusive;
                }
            }
        }
    }
    match victim.and_then(|v| v.primed.as_ref()) {
        Some(crate::victim::PrimedProof::Untouched(e)) => evidence.push(e.clone()),
        Some(crate::victim::PrimedProof::Touched(e)) => {
            evidence.insert(0, format!("GOT THROUGH: primed sandbox {e}"));
            observed = Observed::Succeeded;
        }
        Some(crate::victim::PrimedProof::Unknown(e)) => {
            evidence.push(format!("NO VERDICT on the primed sandbox: {e}"));
            if observed == Observed::Blocked {
                observed = Observed::Inconclusive;
            }
        }
        None => {}
    }
    if let Some(v) = victim {
        evidence.push(v.summary());
        // A victim that was not listening the whole time cannot vouch for "blocked".
        if let (Observed::Blocked, Some(why)) = (observed, v.unsound()) {
            evidence.push(format!("NO VERDICT: {why}"));
            observed = Observed::Inconclusive;
        }
    }
    if a.judges_operator_output() {
        for r in runs {
            if let Some(why) = attack::terminal_inject::raw_controls(&r.stderr) {
                evidence.insert(0, format!("OPERATOR'S TERMINAL: {why}"));
                observed = Observed::Succeeded;
            }
        }
    }
    if a.judged_by().is_some() {
        let host = planted_on_host();
        if !host.is_empty() {
            evidence.push(format!("ON THE HOST: {}", host.join(", ")));
            observed = Observed::Succeeded;
        }
    }
    if !world_hits.is_empty() {
        // The world's records are the ground truth: they come first.
        evidence.insert(
            0,
            format!(
                "world saw {}: {}",
                world_hits.len(),
                world_hits
                    .iter()
                    .take(3)
                    .map(Hit::to_string)
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        );
    }
    // Alerts: persistence alerts come from the first job's teardown scan; any job counts.
    let available = runs.iter().all(|r| r.alerts().is_some());
    let alerts: Vec<String> = runs.iter().filter_map(JobRun::alerts).flatten().collect();
    let expected_alert = expect.detector();
    let alert_found = expected_alert.and_then(|d| available.then(|| alerts.iter().any(|x| x == d)));
    // The alert must also have seen through to what the attack hid (its summary names it).
    let summaries: Vec<String> = expected_alert
        .map(|d| runs.iter().flat_map(|r| r.alert_summaries(d)).collect())
        .unwrap_or_default();
    let unnamed: Vec<&str> = a
        .alert_names()
        .iter()
        .copied()
        .filter(|n| !summaries.iter().any(|s| s.contains(n)))
        .collect();
    if alert_found == Some(true) && !unnamed.is_empty() {
        evidence.push(format!("the alert does not name {}", unnamed.join(", ")));
    }
    let alert_found = alert_found.map(|f| f && unnamed.is_empty());
    if let Some(d) = expected_alert {
        evidence.extend(
            runs.iter()
                .flat_map(JobRun::alert_evidence)
                .filter(|e| e.starts_with(&format!("alert {d} "))),
        );
    }
    let passed = match expect {
        Expect::Succeeds => observed == Observed::Succeeded,
        Expect::Blocked => observed == Observed::Blocked,
        Expect::BlockedAndDetected(_) => observed == Observed::Blocked && alert_found == Some(true),
        // Let through by design or not, it must have been seen.
        Expect::Detected(_) => observed != Observed::Inconclusive && alert_found == Some(true),
    };
    let mut alerts = alerts;
    alerts.sort();
    alerts.dedup();
    Row {
        attack: a.id().into(),
        title: a.title().into(),
        category: a.category(),
        expected: expect.to_string(),
        observed,
        expected_alert: expected_alert.map(str::to_owned),
        alert_found,
        alerts,
        passed,
        evidence: evidence.join("; "),
        world_hits,
        jobs: runs
            .iter()
            .filter_map(JobRun::job_id)
            .chain(victim.and_then(VictimRun::job_id))
            .collect(),
        duration_ms,
    }
}

fn summarize(s: &str) -> String {
    let s = s.replace('\n', " ");
    if s.len() <= 200 {
        return s;
    }
    let mut cut = 200;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &s[..cut])
}

/// Writes the drill's effective policy: the group's resolver is the world's, the allowed name
/// is added to its domains, and its timeout is capped at [`ATTACK_TIMEOUT`]. Returns the
/// group's name and the policy text.
pub fn effective_policy(
    lp: &LoadedPolicy,
    group: Option<&str>,
) -> Result<(String, String), DrillError> {
    let (name, _) = lp.group(group)?;
    let mut policy = lp.policy.clone();
    if let Some(g) = policy.groups.get_mut(&name) {
        g.egress.resolver = Some(RESOLVER.to_string());
        // The allowed host, and the allowed names whose answers are internal (dns-rebind).
        for name in POLICY_NAMES {
            if !g.egress.domains.iter().any(|d| d == name) {
                g.egress.domains.push(name.to_owned());
            }
        }
        if g.limits.timeout.0 > ATTACK_TIMEOUT {
            g.limits.timeout = HumanDuration(ATTACK_TIMEOUT);
        }
    }
    policy.default_group = Some(name.clone());
    Ok((name, toml::to_string(&policy)?))
}

/// Runs the drill. Needs root. Moves the calling thread into a private network namespace
/// first (see [`enter_private_netns`]): call it from a thread that has nothing else to do in
/// the host's namespace (the CLI's main thread, before any runtime starts).
pub fn drill(opts: &DrillOptions, progress: &mut dyn Progress) -> Result<DrillReport, DrillError> {
    let start = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        return Err(DrillError::NotRoot);
    }
    for (what, path) in [
        ("the airlock binary", &opts.airlock_exe),
        ("the airlock-attack binary", &opts.attack_exe),
    ] {
        if !path.is_file() {
            return Err(DrillError::Missing {
                what,
                path: path.clone(),
            });
        }
    }
    let lp = match &opts.policy {
        Some(p) => LoadedPolicy::from_file(p)?,
        None => LoadedPolicy::builtin(),
    };
    let (group, policy_text) = effective_policy(&lp, opts.group.as_deref())?;
    let egress_audit = lp
        .policy
        .groups
        .get(&group)
        .is_some_and(|g| g.egress.mode == EgressMode::Audit);
    let egress_none = lp
        .policy
        .groups
        .get(&group)
        .is_some_and(|g| g.egress.mode == EgressMode::None);
    let limits = lp
        .policy
        .groups
        .get(&group)
        .map(|g| g.limits.clone())
        .unwrap_or_default();
    let mut selected: Vec<&'static dyn Attack> = Vec::new();
    for id in &opts.only {
        if attack::find(id).is_none_or(|a| a.helper_only()) {
            return Err(DrillError::UnknownAttack(id.clone()));
        }
    }
    for a in attack::registry() {
        if a.helper_only() {
            continue;
        }
        let control = a.expect() == Expect::Succeeds;
        if control && egress_none {
            // A group without egress cannot reach even the allowed host; the world's own
            // self-check still proves the world is up.
            continue;
        }
        if control || opts.only.is_empty() || opts.only.iter().any(|o| o == a.id()) {
            selected.push(*a);
        }
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    let sigs: Vec<_> = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
        .into_iter()
        .filter_map(|s| signal_hook::flag::register(s, interrupted.clone()).ok())
        .collect();
    let result = (|| {
        let scratch = Scratch {
            dir: Some(
                tempfile::Builder::new()
                    .prefix("airlock-drill-")
                    .tempdir()
                    .map_err(io("creating", &std::env::temp_dir()))?,
            ),
            airlock: opts.airlock_exe.clone(),
        };
        let dir = scratch.path().to_owned();
        for d in ["ws", "reports", "state", "data"] {
            std::fs::create_dir_all(dir.join(d)).map_err(io("creating", &dir.join(d)))?;
        }
        let attack_copy = dir.join("ws/airlock-attack");
        std::fs::copy(&opts.attack_exe, &attack_copy).map_err(io("copying", &opts.attack_exe))?;
        // A second, readable copy: in the job the entry's program is execute-only
        // (docs/sandbox.md), and an attack that plants a copy of itself reads this one.
        let payload = dir.join("ws").join(crate::attack::PAYLOAD);
        std::fs::copy(&opts.attack_exe, &payload).map_err(io("copying", &opts.attack_exe))?;
        let policy = dir.join("policy.toml");
        std::fs::write(&policy, &policy_text).map_err(io("writing", &policy))?;

        enter_private_netns()?;
        let world = World::start()?;
        let runner = Runner {
            opts,
            scratch: &scratch,
            policy,
            group: group.clone(),
            world: &world,
            audit: egress_audit,
            limits,
        };
        let mut rows = Vec::new();
        let total = selected.len();
        for (i, a) in selected.iter().enumerate() {
            if interrupted.load(Ordering::SeqCst) {
                return Err(DrillError::Interrupted);
            }
            progress.started(i, total, a.id());
            let row = runner.attack(*a)?;
            if interrupted.load(Ordering::SeqCst) {
                // The job was stopped by the signal too: its row would mean nothing.
                return Err(DrillError::Interrupted);
            }
            progress.finished(i, total, &row);
            if a.expect() == Expect::Succeeds && !row.passed {
                return Err(DrillError::WorldBroken(row.evidence));
            }
            rows.push(row);
        }
        if interrupted.load(Ordering::SeqCst) {
            return Err(DrillError::Interrupted);
        }
        world.stop();
        let detection_available = !rows.is_empty()
            && rows
                .iter()
                .all(|r| r.expected_alert.is_none() || r.alert_found.is_some());
        let kept = opts.keep.then(|| scratch.keep());
        Ok(DrillReport {
            policy: opts
                .policy
                .as_ref()
                .map_or("built-in".into(), |p| p.display().to_string()),
            group: group.clone(),
            detection_available,
            // What got through fails the drill even where the group lets it through by
            // design (audit mode): the exit code says whether this group stops attacks.
            passed: rows.iter().all(|r| r.passed)
                && rows
                    .iter()
                    .all(|r| r.category == Category::Control || r.observed != Observed::Succeeded),
            rows,
            duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            kept,
        })
    })();
    for s in sigs {
        signal_hook::low_level::unregister(s);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrs::{ALLOWED, ATTACKER, LINK_DRILL, RESOLVER};
    use std::net::SocketAddr;

    fn hit(service: &str, ip: std::net::Ipv4Addr, detail: &str) -> Hit {
        Hit {
            time_ms: 0,
            service: service.into(),
            local: SocketAddr::from((ip, 80)),
            peer: SocketAddr::from((LINK_DRILL, 40000)),
            detail: detail.into(),
        }
    }

    fn run(
        result: Option<(&str, bool)>,
        outcome: serde_json::Value,
        alerts: Option<&[&str]>,
        hits: Vec<Hit>,
    ) -> JobRun {
        let report = JobReport {
            id: "j1".into(),
            group: "g".into(),
            outcome: serde_json::from_value(outcome).expect("an outcome"),
            duration_ms: 0,
            teardown_errors: Vec::new(),
            egress: Vec::new(),
            alerts: alerts
                .unwrap_or_default()
                .iter()
                .map(|d| alert(d, "s", &[1]))
                .collect(),
        };
        JobRun {
            detected: alerts.is_some(),
            result: result.map(|(attack, succeeded)| AttackResult {
                attack: attack.into(),
                succeeded,
                detail: "d".into(),
            }),
            report: Some(report),
            stderr: String::new(),
            hits,
            audit_records: None,
            report_bytes: None,
            airlock_files: None,
            gateway_flows: None,
        }
    }

    fn alert(detector: &str, summary: &str, evidence: &[u64]) -> airlock_audit::Alert {
        airlock_audit::Alert {
            detector: detector.into(),
            technique: airlock_audit::Technique::new("T0000", "t"),
            severity: airlock_audit::Severity::High,
            job: "j1".into(),
            summary: summary.into(),
            evidence: evidence.to_vec(),
            time_ms: 0,
        }
    }

    fn exited(c: i32) -> serde_json::Value {
        serde_json::json!({ "kind": "exited", "value": c })
    }

    #[test]
    fn world_hits_overrule_the_attacks_own_account() {
        let a = attack::find("hardcoded-ip").expect("attack");
        let r = judge(
            a,
            &[run(
                Some(("hardcoded-ip", false)),
                exited(0),
                Some(&["denied-egress"]),
                vec![hit("tcp", ATTACKER, "connect")],
            )],
            None,
            1,
        );
        assert_eq!(r.observed, Observed::Succeeded);
        assert!(!r.passed);
        assert_eq!(r.world_hits.len(), 1);
    }

    #[test]
    fn an_alert_must_name_what_the_attack_hid() {
        let a = attack::find("fileless-exec").expect("attack");
        // An exec record that only says "[kworker/0:1]" with an empty path: not seen through.
        let blind = judge(
            a,
            &[run(
                Some(("fileless-exec", false)),
                exited(0),
                Some(&["fileless-exec"]),
                vec![],
            )],
            None,
            1,
        );
        assert_eq!((blind.alert_found, blind.passed), (Some(false), false));
        assert!(
            blind.evidence.contains("does not name"),
            "{}",
            blind.evidence
        );
        let mut seen = run(Some(("fileless-exec", false)), exited(0), Some(&[]), vec![]);
        if let Some(r) = seen.report.as_mut() {
            r.alerts = vec![alert(
                "fileless-exec",
                "2 execs of a program with no file: memfd:airlock-drill-payload as '[kworker/0:1]', /tmp/.h/sshd (deleted) as 'sshd'",
                &[3, 4],
            )];
        }
        let ok = judge(a, &[seen], None, 1);
        assert_eq!(
            (ok.observed, ok.alert_found, ok.passed),
            (Observed::Blocked, Some(true), true)
        );
    }

    #[test]
    fn a_record_flood_is_judged_by_the_jobs_audit_volume() {
        let a = attack::find("record-flood").expect("attack");
        let judged = |records: Option<u64>, report_bytes: Option<u64>| {
            let mut r = run(
                Some(("record-flood", false)),
                exited(0),
                Some(&["record-flood"]),
                vec![],
            );
            r.audit_records = records;
            r.report_bytes = report_bytes;
            judge(a, &[r], None, 1)
        };
        let row = judged(Some(3_000), None);
        assert!(row.passed, "{row:?}");
        let row = judged(Some(600_000), None);
        assert_eq!(row.observed, Observed::Succeeded, "{row:?}");
        assert!(
            row.evidence.contains("600000 audit records"),
            "{}",
            row.evidence
        );
        let r = run(Some(("record-flood", false)), exited(0), Some(&[]), vec![]);
        let row = judge(a, &[r], None, 1);
        assert!(!row.passed, "uncounted is not blocked: {row:?}");
        // Few records, but a report grown by what each record kept: got through.
        let row = judged(Some(3_000), Some(80 << 20));
        assert_eq!(row.observed, Observed::Succeeded, "{row:?}");
        assert!(
            row.evidence.contains("report is 83886080 bytes"),
            "{}",
            row.evidence
        );
    }

    /// The most queries for the silent name first asked within one upstream timeout, by
    /// distinct upstream socket (a retry from the same socket is the same query).
    #[test]
    fn queries_waited_on_at_once_are_counted_by_socket_within_one_timeout() {
        let hit = |port: u16, ms: u128| Hit {
            time_ms: ms,
            service: "dns".into(),
            local: SocketAddr::from((RESOLVER, 53)),
            peer: SocketAddr::from(([10, 213, 0, 1], port)),
            detail: format!("silent.drill.test. A -> {}", crate::world::SILENT_ANSWER),
        };
        // Three at once, a retry of the first, two more after the first three's window.
        let hits = [
            hit(1, 0),
            hit(2, 10),
            hit(3, 20),
            hit(1, 2_000),
            hit(4, 2_500),
            hit(5, 2_600),
        ];
        assert_eq!(silent_in_flight(&hits), (5, 3));
        assert_eq!(silent_in_flight(&[]), (0, 0));
    }

    #[test]
    fn a_gateway_flood_is_judged_by_airlocks_open_files_and_its_gateways_flows() {
        let a = attack::find("gateway-flood").expect("attack");
        let flows = |taken| GatewayFlows {
            taken,
            bound: 20_000,
            churn: (taken / 2, 9_000),
            silent: (900, 256),
            cpu: Duration::from_millis(300),
        };
        let judged = |files, f: Option<GatewayFlows>| {
            let mut r = run(Some(("gateway-flood", false)), exited(0), Some(&[]), vec![]);
            r.airlock_files = files;
            r.gateway_flows = f;
            judge(a, &[r], None, 1)
        };
        let row = judged(Some((1_054, 3_328)), Some(flows(15_000)));
        assert!(row.passed, "{row:?}");
        assert!(
            row.evidence
                .contains("took in 15000 new flows (bound 20000), 7500 DNS queries of the churn (bound 9000); its threads used 0.3s"),
            "{}",
            row.evidence
        );
        // Files within their bound, flows `f`: got through, and the evidence says `why`.
        let through = |f: GatewayFlows, why: &str| {
            let row = judged(Some((1_054, 3_328)), Some(f));
            assert_eq!(row.observed, Observed::Succeeded, "{row:?}");
            assert!(row.evidence.contains(why), "{}", row.evidence);
        };
        through(
            flows(90_000),
            "took in 90000 new flows (bound 20000), 45000 DNS queries",
        );
        // More waited on at once than the bound.
        through(
            GatewayFlows {
                silent: (2_000, 700),
                ..flows(15_000)
            },
            "waited on 700 DNS queries at once",
        );
        // Within the run's bound, over the churn's.
        through(
            GatewayFlows {
                churn: (12_000, 9_000),
                ..flows(15_000)
            },
            "12000 DNS queries of the churn (bound 9000): over limits.flow_rate",
        );
        // Flows not counted: no verdict.
        assert!(!judged(Some((1_054, 3_328)), None).passed);
        let judged = |files| judged(files, Some(flows(15_000)));
        let row = judged(Some((1_054, 3_328)));
        assert!(row.passed, "{row:?}");
        assert!(
            row.evidence
                .contains("at most 1054 open files (bound 3328)"),
            "{}",
            row.evidence
        );
        let row = judged(Some((6_410, 3_328)));
        assert_eq!(row.observed, Observed::Succeeded, "{row:?}");
        assert!(
            row.evidence.contains("6410 open files during the flood"),
            "{}",
            row.evidence
        );
        // Not counted (or nothing seen): no verdict, never "blocked".
        assert!(!judged(None).passed);
        assert!(!judged(Some((0, 3_328))).passed);
    }

    #[test]
    fn blocked_and_detected_needs_the_alert() {
        let a = attack::find("metadata").expect("attack");
        let ok = judge(
            a,
            &[run(
                Some(("metadata", false)),
                exited(0),
                Some(&["metadata-access"]),
                vec![],
            )],
            None,
            1,
        );
        assert_eq!(
            (ok.observed, ok.alert_found, ok.passed),
            (Observed::Blocked, Some(true), true)
        );
        assert!(
            ok.evidence
                .contains("alert metadata-access (evidence seq 1)"),
            "{}",
            ok.evidence
        );
        let missing = judge(
            a,
            &[run(
                Some(("metadata", false)),
                exited(0),
                Some(&["denied-egress"]),
                vec![],
            )],
            None,
            1,
        );
        assert_eq!((missing.alert_found, missing.passed), (Some(false), false));
        let unavailable = judge(
            a,
            &[run(Some(("metadata", false)), exited(0), None, vec![])],
            None,
            1,
        );
        assert_eq!((unavailable.alert_found, unavailable.passed), (None, false));
    }

    #[test]
    fn in_audit_mode_what_gets_through_must_still_be_detected() {
        for (id, detector) in [
            ("recon", "network-scan"),
            ("exfil", "new-destination"),
            ("hardcoded-ip", "denied-egress"),
        ] {
            let a = attack::find(id).expect("attack");
            let expect = a.expect_in_audit_mode();
            assert_eq!(expect, Expect::Detected(detector), "{id}");
            let through = |alerts: &[&str]| {
                judge_as(
                    a,
                    expect,
                    &[run(Some((id, true)), exited(0), Some(alerts), vec![])],
                    None,
                    1,
                )
            };
            let seen = through(&[detector]);
            assert_eq!(
                (seen.observed, seen.alert_found, seen.passed),
                (Observed::Succeeded, Some(true), true),
                "{id}"
            );
            assert!(
                seen.expected.starts_with("through (audit)"),
                "{}",
                seen.expected
            );
            let unseen = through(&[]);
            assert_eq!(
                (unseen.alert_found, unseen.passed),
                (Some(false), false),
                "{id}"
            );
        }
        // What only never-reachable targets stop is blocked in audit mode too.
        let m = attack::find("metadata").expect("attack");
        assert_eq!(m.expect_in_audit_mode(), m.expect());
        let s = attack::find("sibling-job").expect("attack");
        assert_eq!(s.expect_in_audit_mode(), s.expect());
    }

    #[test]
    fn allowed_traffic_is_not_a_breach_and_the_control_needs_it() {
        let canary = attack::find("canary").expect("canary");
        let allowed = vec![
            hit("dns", RESOLVER, "allowed.drill.test. A -> 203.0.113.20"),
            hit("http", ALLOWED, "GET host=allowed.drill.test /"),
        ];
        let r = judge(
            canary,
            &[run(Some(("canary", true)), exited(0), None, allowed)],
            None,
            1,
        );
        assert!(r.passed && r.world_hits.is_empty());
        // The attack claims success but the world saw nothing: the control fails.
        let r = judge(
            canary,
            &[run(Some(("canary", true)), exited(0), None, vec![])],
            None,
            1,
        );
        assert!(!r.passed);
    }

    #[test]
    fn a_job_killed_by_a_limit_is_blocked_but_silence_is_inconclusive() {
        let mem = attack::find("memory").expect("memory");
        let killed = serde_json::json!({ "kind": "signaled", "value": 9 });
        let r = judge(mem, &[run(None, killed, None, vec![])], None, 1);
        assert_eq!(r.observed, Observed::Blocked);
        assert!(r.passed);
        let r = judge(mem, &[run(None, exited(1), None, vec![])], None, 1);
        assert_eq!(r.observed, Observed::Inconclusive);
        assert!(!r.passed);
    }

    #[test]
    fn persistence_is_judged_by_the_second_job() {
        let p = attack::find("persistence").expect("persistence");
        let planted = run(
            Some(("persistence", false)),
            exited(0),
            Some(&["persistence-attempt"]),
            vec![],
        );
        let clean = run(
            Some(("persistence-check", false)),
            exited(0),
            Some(&[]),
            vec![],
        );
        let r = judge(p, &[planted, clean], None, 1);
        assert!(r.passed, "{r:?}");
        let planted = run(
            Some(("persistence", false)),
            exited(0),
            Some(&["persistence-attempt"]),
            vec![],
        );
        let found = run(
            Some(("persistence-check", true)),
            exited(0),
            Some(&[]),
            vec![],
        );
        let r = judge(p, &[planted, found], None, 1);
        assert_eq!(r.observed, Observed::Succeeded);
    }

    fn victim(intrusions: usize, checks: usize, egress: &[&str], alive: bool) -> VictimRun {
        use crate::addrs::VICTIM_PORTS;
        use crate::attack::sibling_job::{Intrusion, VictimLog, VictimReady};
        let attacker = std::net::Ipv4Addr::new(10, 213, 0, 10);
        VictimRun {
            ready: VictimReady {
                victim_address: std::net::Ipv4Addr::new(10, 213, 0, 6),
                gateway: std::net::Ipv4Addr::new(10, 213, 0, 5),
                ports: VICTIM_PORTS.to_vec(),
            },
            log: Some(VictimLog {
                checks: VICTIM_PORTS
                    .iter()
                    .flat_map(|p| std::iter::repeat_n(*p, checks))
                    .collect(),
                intrusions: (0..intrusions)
                    .map(|_| Intrusion {
                        peer: SocketAddr::from((attacker, 40000)),
                        port: 7777,
                        first_bytes: String::new(),
                    })
                    .collect(),
            }),
            alive_after: if alive {
                Ok(())
            } else {
                Err("connect 10.213.0.6:7777: refused".into())
            },
            result: None,
            report: Some(JobReport {
                id: "victim1".into(),
                group: "g".into(),
                outcome: JobOutcome::Exited(0),
                duration_ms: 0,
                teardown_errors: Vec::new(),
                egress: egress
                    .iter()
                    .map(|k| {
                        let mut r = airlock_audit::ConnRecord::new(k, 53);
                        r.name = Some("allowed.drill.test".into());
                        r.verdict = "allow".into();
                        r.reason = "r".into();
                        r
                    })
                    .collect(),
                alerts: Vec::new(),
            }),
            stderr: String::new(),
            primed: None,
        }
    }

    /// A primed victim that had run something before its start is a breach whatever it saw
    /// afterwards; one that could not be looked at gives no verdict.
    #[test]
    fn a_primed_victim_is_judged_by_what_ran_before_its_start() {
        use crate::victim::PrimedProof;
        let a = attack::find("primed-runner").expect("attack");
        assert!(a.victim_primed() && a.victim_judges());
        let attacker = || run(Some(("primed-runner", false)), exited(0), None, vec![]);
        let with = |p: PrimedProof| {
            let mut v = victim(0, 2, &[], true);
            v.result = Some(AttackResult {
                attack: "warm-waiter".into(),
                succeeded: false,
                detail: "nothing of another job".into(),
            });
            v.primed = Some(p);
            judge(a, &[attacker()], Some(&v), 1)
        };
        let r = with(PrimedProof::Untouched("init still the helper".into()));
        assert_eq!((r.observed, r.passed), (Observed::Blocked, true), "{r:?}");
        assert!(
            r.evidence.contains("init still the helper"),
            "{}",
            r.evidence
        );
        let r = with(PrimedProof::Touched("j1 had exec'd \"sh\"".into()));
        assert_eq!(
            (r.observed, r.passed),
            (Observed::Succeeded, false),
            "{r:?}"
        );
        assert!(
            r.evidence.starts_with("GOT THROUGH: primed sandbox"),
            "{}",
            r.evidence
        );
        let r = with(PrimedProof::Unknown("2 created sandboxes".into()));
        assert_eq!(r.observed, Observed::Inconclusive, "{r:?}");
    }

    #[test]
    fn a_sibling_attack_is_judged_by_the_victims_records() {
        let a = attack::find("sibling-job").expect("attack");
        let attacker = || {
            run(
                Some(("sibling-job", false)),
                exited(0),
                Some(&["network-scan"]),
                vec![],
            )
        };
        // A live victim that saw nothing, the scan detected: blocked, passed.
        let r = judge(a, &[attacker()], Some(&victim(0, 2, &["drop"], true)), 1);
        assert_eq!((r.observed, r.passed), (Observed::Blocked, true), "{r:?}");
        assert_eq!(r.jobs, ["j1", "victim1"]);
        assert!(
            r.evidence.contains("victim job 10.213.0.6"),
            "{}",
            r.evidence
        );
        // The victim accepted a connection the attack did not notice: it got through.
        let r = judge(a, &[attacker()], Some(&victim(1, 2, &[], true)), 1);
        assert_eq!(r.observed, Observed::Succeeded);
        assert!(
            r.evidence.starts_with("world saw 1: victim"),
            "{}",
            r.evidence
        );
        // The victim's gateway served someone (the victim itself sends nothing).
        let r = judge(a, &[attacker()], Some(&victim(0, 2, &["dns"], true)), 1);
        assert_eq!(r.observed, Observed::Succeeded);
        assert_eq!(r.world_hits[0].service, "victim-gateway");
        // A victim that died, or whose log lacks the checks, cannot vouch for "blocked".
        let r = judge(a, &[attacker()], Some(&victim(0, 2, &[], false)), 1);
        assert_eq!((r.observed, r.passed), (Observed::Inconclusive, false));
        let r = judge(a, &[attacker()], Some(&victim(0, 1, &[], true)), 1);
        assert_eq!(r.observed, Observed::Inconclusive);
        assert!(
            r.evidence.contains("1 of the 2 liveness checks"),
            "{}",
            r.evidence
        );
        let mut silent = victim(0, 2, &[], true);
        silent.log = None;
        let r = judge(a, &[attacker()], Some(&silent), 1);
        assert_eq!(r.observed, Observed::Inconclusive);
        // But a breach stays a breach whatever became of the victim.
        let r = judge(a, &[attacker()], Some(&victim(1, 0, &[], false)), 1);
        assert_eq!(r.observed, Observed::Succeeded);
    }

    #[test]
    fn effective_policy_points_the_group_at_the_world() {
        let lp = LoadedPolicy::builtin();
        let (g, text) = effective_policy(&lp, None).expect("policy");
        assert_eq!(g, "default");
        let p = airlock_policy::parse(&text, Path::new("drill.toml")).expect("reparse");
        let grp = &p.groups["default"];
        assert_eq!(grp.egress.resolver.as_deref(), Some("198.51.100.53"));
        assert!(grp.egress.domains.iter().any(|d| d == ALLOWED_NAME));
        assert!(grp.limits.timeout.0 <= ATTACK_TIMEOUT);
        assert_eq!(grp.egress.mode, EgressMode::Block);
        assert!(effective_policy(&lp, Some("nope")).is_err());
    }
}
