//! One job from plan to teardown, and `gc` for jobs a crashed airlock left behind.
//!
//! This side runs in airlock's own (possibly multi-threaded) process: it prepares the rootfs
//! and bundle, starts the single-threaded helper that drives the executor, streams output,
//! enforces the wall-clock timeout, reacts to SIGINT/SIGTERM, and tears everything down on
//! every path.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use airlock_policy::{EgressMode, ExecutorKind};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::error::SandboxError;
use crate::helper::{self, HelperArgs, Outcome, INIT_PID_FILE, RESULT_FILE};
use crate::plan::{JobId, JobPlan};
use crate::spec::{self, HostLayout};
use crate::state::{now, JobState, Paths, ProcRef, Status};
use crate::{cgroup, rootfs};

/// How long the helper gets to delete the container after its init process was killed.
const HELPER_GRACE: Duration = Duration::from_secs(10);

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum JobOutcome {
    /// The command exited with a code.
    Exited(i32),
    /// The command was killed by a signal (OOM kills show as signal 9).
    Signaled(i32),
    /// The wall-clock timeout expired and the job was killed.
    TimedOut,
    /// airlock received this signal and stopped the job.
    Interrupted(i32),
    /// The job could not be run.
    Failed(String),
}

/// What `run` reports.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The job.
    pub id: JobId,
    /// Its group.
    pub group: String,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Wall-clock time from request to teardown.
    pub duration_ms: u128,
    /// Problems during teardown (empty when everything was removed).
    pub teardown_errors: Vec<String>,
    /// Every DNS query and connection the egress gateway saw.
    pub egress: Vec<airlock_net::ConnRecord>,
    /// What the detectors found (docs/audit.md), also on the audit record as `alert`.
    pub alerts: Vec<airlock_audit::Alert>,
}

impl JobReport {
    /// airlock's exit code for this job: the command's, or 128+signal, 124 on timeout
    /// (as timeout(1)), 125 when the job could not be run.
    pub fn exit_code(&self) -> i32 {
        match &self.outcome {
            JobOutcome::Exited(c) => *c,
            JobOutcome::Signaled(s) | JobOutcome::Interrupted(s) => 128 + s,
            JobOutcome::TimedOut => 124,
            JobOutcome::Failed(_) => 125,
        }
    }
}

/// Where output goes and which binary is the helper.
pub struct RunOptions {
    /// State and data directories.
    pub paths: Paths,
    /// The airlock binary to re-exec as helper (normally `/proc/self/exe`).
    pub helper_exe: PathBuf,
    /// Append the job's egress records (JSON lines) to this file.
    pub egress_log: Option<PathBuf>,
    /// Detector thresholds (the policy's `[detectors]`).
    pub detectors: airlock_policy::Detectors,
    /// Retention and checkpoints of the audit log (the policy's `[audit]`).
    pub audit_log: airlock_audit::LogSettings,
}

enum Event {
    HelperExited,
    Signal(i32),
}

/// Runs a job to completion and tears it down. Output of the job is copied to `out` / `err`
/// as it arrives.
pub fn run(
    plan: &JobPlan,
    opts: &RunOptions,
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
) -> Result<JobReport, SandboxError> {
    let started = Instant::now();
    let paths = &opts.paths;
    paths.ensure()?;
    // Every job is on the record before anything of it exists; no log, no job.
    let mut log = airlock_audit::AuditLog::open(&paths.audit()).map_err(SandboxError::Audit)?;
    log.configure(opts.audit_log.clone())
        .map_err(SandboxError::Audit)?;
    // A secret the job puts on a command line or in a name is recorded by name, never by
    // value: in the audit log, the report and the egress log alike.
    let redactor =
        airlock_audit::Redactor::new(plan.secrets.iter().map(|(k, v)| (k.as_str(), v.expose())));
    log.set_redactor(redactor.clone());
    let requested = log
        .append_batch(vec![airlock_audit::Event::new(
            "job.requested",
            Some(plan.id.as_str()),
            serde_json::json!({
                "group": plan.group,
                "trust": plan.trust,
                "executor": plan.executor,
                "argv": plan.argv,
                "user": { "uid": plan.user.uid, "gid": plan.user.gid },
                "egress_mode": plan.egress.mode,
                // Names only, never values.
                "secrets": plan.secrets.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            }),
        )])
        .map_err(SandboxError::Audit)?;
    // From here on events go through the bounded queue (back-pressure, group commit).
    let audit = airlock_audit::AuditQueue::start(log, 4096);
    // The job's events pass its limiter (rate limits, caps, aggregation: the group's
    // `audit`), and the detectors see each record as it is written: nothing of the job's
    // record is held in memory, whatever the job does.
    let ctx = airlock_audit::DetectContext {
        settings: opts.detectors.clone(),
        baseline_dir: Some(paths.baselines()),
        group: Some(plan.group.clone()),
        // A name the group's allow-list names exactly is never a "new destination".
        listed_names: plan
            .egress
            .domains
            .iter()
            .filter(|d| !d.wildcard)
            .map(|d| d.name.clone())
            .collect(),
    };
    audit
        .track(plan.id.as_str(), plan.audit.clone(), &ctx, &requested)
        .map_err(SandboxError::Audit)?;
    if !plan.secrets.is_empty() {
        // Names only, never values.
        audit
            .send(airlock_audit::Event::new(
                "secret.injected",
                Some(plan.id.as_str()),
                serde_json::json!({ "names": plan.secrets.iter().map(|(k, _)| k).collect::<Vec<_>>() }),
            ))
            .map_err(SandboxError::Audit)?;
    }
    let owner = ProcRef::of(std::process::id() as i32).ok_or_else(|| SandboxError::State {
        path: "/proc/self".into(),
        message: "cannot read own start time".into(),
    })?;
    let mut state = JobState {
        id: plan.id.clone(),
        group: plan.group.clone(),
        executor: plan.executor,
        status: Status::Preparing,
        owner,
        helper: None,
        init: None,
        cgroup: spec::cgroup_path(plan.id.as_str()),
        created: now(),
        net: None,
    };
    // Firewall denials reach airlock through NFLOG; see airlock_net::nflog for who listens.
    let nflog = if plan.egress.mode == airlock_policy::EgressMode::None {
        None
    } else {
        Some(
            airlock_net::nflog::spawn_listener(
                airlock_net::pool::lease_dir(&paths.state),
                paths.jobs(),
            )
            .map_err(SandboxError::io("starting the NFLOG listener", "pipe"))?,
        )
    };
    // Persisted before anything exists, so gc can always find what follows.
    state.save(paths)?;

    let (tx, rx) = mpsc::channel::<Event>();
    let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(
        SandboxError::io("installing signal handlers for", "SIGINT/SIGTERM/SIGHUP"),
    )?;
    let sig_handle = signals.handle();
    let sig_tx = tx.clone();
    let sig_thread = std::thread::spawn(move || {
        let mut signals = signals;
        for s in signals.forever() {
            if sig_tx.send(Event::Signal(s)).is_err() {
                break;
            }
        }
    });

    let mut net: Option<airlock_net::JobNetwork> = None;
    let result = run_inner(
        plan,
        opts,
        &mut state,
        &mut net,
        &audit,
        (tx, &rx),
        (out, err),
    );
    sig_handle.close();
    let _ = sig_thread.join();
    // The gateway stops with the job; the rest of the network goes in the common teardown.
    let mut egress = net
        .map(airlock_net::JobNetwork::stop_gateway)
        .unwrap_or_default();
    if let Some(l) = nflog {
        l.stop();
    }
    egress.extend(airlock_net::nflog::take_records(&paths.job_dir(&plan.id)));
    egress.sort_by_key(|r| r.time_ms);
    if !redactor.is_empty() {
        // Every string of every record, whatever fields a record has: through its JSON form.
        for r in &mut egress {
            let red = serde_json::to_value(&*r).and_then(|mut v| {
                redactor.redact_value(&mut v);
                serde_json::from_value(v)
            });
            match red {
                Ok(red) => *r = red,
                // Never keep what could not be checked.
                Err(_) => {
                    r.name = None;
                    r.reason = "[not recorded: redaction failed]".into();
                }
            }
        }
    }

    // What the job left on its filesystem, read before teardown drops it.
    let t = Instant::now();
    let files = scan_files(plan, &paths.job_dir(&plan.id));
    tracing::debug!(job = %plan.id, scan_us = t.elapsed().as_micros() as u64, entries = files.as_ref().map(|f| f.entries).unwrap_or(0));
    let t = Instant::now();
    // After a clean exit the helper has deleted the container; anything else gets the full
    // search for stray processes.
    let clean = matches!(result, Ok(JobOutcome::Exited(_) | JobOutcome::Signaled(_)));
    let mut teardown_errors = teardown(paths, &state, !clean);
    tracing::debug!(job = %plan.id, teardown_us = t.elapsed().as_micros() as u64);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            // A failure to start still gets a full teardown; report both.
            if !teardown_errors.is_empty() {
                teardown_errors.insert(0, format!("after: {}", helper::ErrChain(&e)));
            }
            JobOutcome::Failed(helper::ErrChain(&e).to_string())
        }
    };
    // The job's network records and its end go into the audit log; a failure here is a
    // teardown error (the job has already run). Sent one by one (the queue is bounded), never
    // gathered into one more copy.
    let mut audit_errors = Vec::new();
    let job = Some(plan.id.as_str());
    let net_events = egress.iter().map(|r| {
        let mut e = airlock_audit::Event::new(
            &format!("net.{}", r.kind),
            job,
            serde_json::to_value(r).unwrap_or_default(),
        );
        e.time_ms = r.time_ms;
        e
    });
    let file_events = files.iter().flat_map(|f| {
        f.changes
            .iter()
            .map(|c| {
                airlock_audit::Event::new(
                    "file.changed",
                    job,
                    serde_json::to_value(c).unwrap_or_default(),
                )
            })
            .chain(std::iter::once(airlock_audit::Event::new(
                "file.scan",
                job,
                f.summary(),
            )))
    });
    for e in net_events.chain(file_events) {
        if let Err(e) = audit.send(e) {
            audit_errors.push(e.to_string());
            break;
        }
    }
    // The job's pending aggregates and flood summary are written, then the detectors, which
    // have seen every record of the job as it was written (with its sequence number, so each
    // alert names its evidence), finish; their alerts go on the record before the job's end.
    let detection = match audit.finish(plan.id.as_str()) {
        Ok(j) => j.detection,
        Err(e) => {
            audit_errors.push(e.to_string());
            airlock_audit::Detection::default()
        }
    };
    teardown_errors.extend(detection.errors.iter().map(|e| format!("detector: {e}")));
    for a in &detection.alerts {
        let mut data = serde_json::to_value(a).unwrap_or_default();
        data["id"] = a.id().into();
        if let Err(e) = audit.send(airlock_audit::Event::new("alert", job, data)) {
            audit_errors.push(e.to_string());
            break;
        }
    }
    if let Err(e) = audit.send(airlock_audit::Event::new(
        "job.ended",
        job,
        serde_json::json!({
            "outcome": outcome,
            "duration_ms": started.elapsed().as_millis() as u64,
            "teardown_errors": teardown_errors,
            "alerts": detection.alerts.len(),
        }),
    )) {
        audit_errors.push(e.to_string());
    }
    if let Err(e) = audit.sync() {
        audit_errors.push(e.to_string());
    }
    drop(audit);
    // One broken log fails every later write the same way: report it once.
    audit_errors.dedup();
    teardown_errors.extend(audit_errors.into_iter().map(|e| format!("audit: {e}")));
    if let Some(log) = &opts.egress_log {
        if let Err(e) = append_records(log, &egress) {
            teardown_errors.push(format!("writing egress log {}: {e}", log.display()));
        }
    }
    let t = Instant::now();
    airlock_net::release_deferred();
    tracing::debug!(job = %plan.id, release_us = t.elapsed().as_micros() as u64);
    Ok(JobReport {
        id: plan.id.clone(),
        group: plan.group.clone(),
        outcome,
        duration_ms: started.elapsed().as_millis(),
        teardown_errors,
        egress,
        alerts: detection.alerts,
    })
}

fn scan_files(plan: &JobPlan, job_dir: &Path) -> Option<crate::filescan::ScanResult> {
    let dirs = rootfs::RootfsDirs::new(job_dir);
    let upper = dirs.upper();
    if !upper.is_dir() {
        return None;
    }
    let lowers: Vec<PathBuf> = std::fs::read(job_dir.join(rootfs::LOWERS_FILE))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    let path = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(crate::plan::PATH);
    let path_dirs: Vec<String> = path.split(':').map(str::to_owned).collect();
    let limits = crate::filescan::ScanLimits {
        listed: usize::try_from(plan.audit.max_file_changes).unwrap_or(usize::MAX),
        ..crate::filescan::ScanLimits::default()
    };
    Some(crate::filescan::scan_bounded(
        &upper, &lowers, &path_dirs, &limits,
    ))
}

fn append_records(path: &Path, records: &[airlock_net::ConnRecord]) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut w = std::io::BufWriter::new(f);
    for r in records {
        serde_json::to_writer(&mut w, r).map_err(std::io::Error::other)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

fn pump(mut from: impl Read, mut to: Box<dyn Write + Send>) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // A closed stdout (airlock piped into `head`) must not stall the job: keep
                // draining, drop what cannot be written.
                let _ = to.write_all(&buf[..n]).and_then(|_| to.flush());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}

fn run_inner(
    plan: &JobPlan,
    opts: &RunOptions,
    state: &mut JobState,
    net: &mut Option<airlock_net::JobNetwork>,
    audit: &airlock_audit::AuditQueue,
    (tx, rx): (mpsc::Sender<Event>, &mpsc::Receiver<Event>),
    (out, err): (Box<dyn Write + Send>, Box<dyn Write + Send>),
) -> Result<JobOutcome, SandboxError> {
    let paths = &opts.paths;
    let job_dir = paths.job_dir(&plan.id);
    std::fs::create_dir(&job_dir).map_err(SandboxError::io("creating", &job_dir))?;
    std::fs::set_permissions(&job_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(SandboxError::io("setting permissions of", &job_dir))?;

    if let Some(ws) = &plan.workspace {
        // Copying a tree that holds airlock's own state would copy the job into itself.
        let (ws, st) = (
            std::fs::canonicalize(ws),
            std::fs::canonicalize(&paths.state),
        );
        if let (Ok(ws), Ok(st)) = (ws, st) {
            if st.starts_with(&ws) {
                return Err(SandboxError::Config(format!(
                    "--workdir {} contains airlock's state directory {}; use another state directory",
                    ws.display(),
                    st.display()
                )));
            }
        }
    }
    let t0 = Instant::now();
    let phase = |name: &str| tracing::debug!(job = %plan.id, phase = name, at_us = t0.elapsed().as_micros() as u64);
    // The network is attached on a thread of its own while the rootfs, the bundle and the
    // helper (which waits for a go-ahead on its stdin before it creates anything) get ready:
    // its ~5 ms overlap theirs instead of adding to them.
    let mut net_thread = None;
    if plan.egress.mode != EgressMode::None {
        if plan.executor == ExecutorKind::Runsc {
            // Debian's runsc runs only with its own network stack off (docs/sandbox.md): the
            // job gets loopback only, which is stricter than the policy, never looser.
            tracing::warn!(job = %plan.id, "runsc jobs have no network here; egress rules unused");
        } else {
            let pool = paths.pool()?;
            // Leased and persisted before anything is created, so gc can undo it.
            let st = airlock_net::plan(plan.id.as_str(), &plan.egress, &pool)
                .map_err(SandboxError::Network)?;
            state.net = Some(st.clone());
            state.save(paths)?;
            let (id, dir, rules) = (plan.id.to_string(), job_dir.clone(), plan.egress.clone());
            net_thread = Some(
                std::thread::Builder::new()
                    .name("net-attach".into())
                    .spawn(move || airlock_net::setup(&id, &dir, &st, &rules, &pool))
                    .map_err(SandboxError::io(
                        "starting the network thread for",
                        &job_dir,
                    ))?,
            );
        }
    }
    let prepared = prepare_and_spawn(plan, opts, state, &job_dir, audit, &phase);
    // Whatever happened meanwhile, the network thread is joined and its result kept for
    // teardown.
    let joined = match net_thread.map(|t| t.join()) {
        None => Ok(()),
        Some(Ok(Ok(n))) => {
            *net = Some(n);
            phase("network ready");
            Ok(())
        }
        Some(Ok(Err(e))) => Err(SandboxError::Network(e)),
        Some(Err(_)) => Err(SandboxError::Network(airlock_net::NetError::Unavailable(
            "the network thread panicked".into(),
        ))),
    };
    let (watcher, mut child) = match (prepared, joined) {
        (Ok(p), Ok(())) => p,
        (Err(e), _) | (Ok(_), Err(e)) => {
            // A helper that was started never gets its go-ahead: its stdin closes and it
            // exits without creating anything (teardown also kills it).
            return Err(e);
        }
    };
    // The go-ahead: the namespace the spec names exists now.
    if let Some(mut go) = child.stdin.take() {
        let _ = go.write_all(helper::GO);
    }
    phase("helper started");

    let pumps: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| std::thread::spawn(move || pump(s, out))),
        child
            .stderr
            .take()
            .map(|s| std::thread::spawn(move || pump(s, err))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let helper_pid = child.id() as i32;
    let waiter = std::thread::spawn(move || {
        let st = child.wait();
        let _ = tx.send(Event::HelperExited);
        st
    });

    let deadline = Instant::now() + plan.limits.timeout.0;
    let init_file = job_dir.join(INIT_PID_FILE);
    let id = plan.id.as_str();
    // Why the job is being stopped, and since when.
    let mut stop: Option<(JobOutcome, Instant)> = None;
    let mut killed_init = false;
    let mut started_logged = false;
    loop {
        let now = Instant::now();
        if now >= deadline && stop.is_none() {
            stop = Some((JobOutcome::TimedOut, now));
        }
        if state.init.is_none() {
            if let Some(pid) = read_pid(&init_file) {
                state.init = ProcRef::of(pid);
                state.status = Status::Running;
                state.save(paths)?;
                // Once, even if the init process is already gone (`state.init` stays empty
                // then and this branch runs again).
                if !started_logged {
                    started_logged = true;
                    let _ = audit.send(airlock_audit::Event::new(
                        "job.started",
                        Some(id),
                        serde_json::json!({
                            "pid": pid,
                            "process_events": watcher.is_some(),
                        }),
                    ));
                }
            }
        }
        if let Some((_, since)) = &stop {
            // Killing the init process takes the whole pid namespace with it. Before it
            // exists the helper is mid-create: killing the helper then could orphan a
            // half-made container, so give it time to finish first.
            if !killed_init {
                if let Some(pid) = read_pid(&init_file).filter(|p| in_job_cgroup(*p, id)) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    killed_init = true;
                }
            }
            if now >= *since + HELPER_GRACE {
                let _ = kill(Pid::from_raw(helper_pid), Signal::SIGKILL);
            }
        }
        let wait = if state.init.is_none() || (stop.is_some() && !killed_init) {
            Duration::from_millis(20)
        } else if stop.is_some() {
            Duration::from_millis(200)
        } else {
            deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1))
        };
        match rx.recv_timeout(wait) {
            Ok(Event::HelperExited) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Event::Signal(s)) => {
                if stop.is_none() {
                    stop = Some((JobOutcome::Interrupted(s), Instant::now()));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    // After an interruption or a helper that died without a result, parts of the job may be
    // left, holding the output pipes open: end them before waiting for the pumps to drain.
    phase("helper exited");
    if let Some(w) = watcher {
        let st = w.stop();
        tracing::debug!(job = %plan.id, execs = st.execs, denied = st.denied, "exec listener");
    }
    let abnormal = stop.is_some() || !job_dir.join(RESULT_FILE).exists();
    if abnormal {
        kill_strays(id, &state.cgroup);
    }
    let _ = waiter.join();
    for p in pumps {
        let _ = p.join();
    }
    phase("output drained");
    if let Some((s, _)) = stop {
        return Ok(s);
    }
    let result = job_dir.join(RESULT_FILE);
    let outcome: Outcome = std::fs::read(&result)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_else(|| Outcome::Failed("the helper ended without reporting a result".into()));
    Ok(match outcome {
        Outcome::Exited(c) => JobOutcome::Exited(c),
        Outcome::Signaled(s) => JobOutcome::Signaled(s),
        Outcome::Failed(m) => JobOutcome::Failed(m),
    })
}

/// Prepares the rootfs, the exec listener and the bundle, and starts the helper, which waits
/// for [`helper::GO`] on its stdin (the network may still be attaching meanwhile).
fn prepare_and_spawn(
    plan: &JobPlan,
    opts: &RunOptions,
    state: &mut JobState,
    job_dir: &Path,
    audit: &airlock_audit::AuditQueue,
    phase: &dyn Fn(&str),
) -> Result<(Option<crate::watch::Watcher>, std::process::Child), SandboxError> {
    let paths = &opts.paths;
    let resolver = state.net.as_ref().map(|n| n.lease().gateway);
    let ns_file = state
        .net
        .as_ref()
        .map(|_| airlock_net::link::ns_file(job_dir));
    let layout = HostLayout::detect(Path::new("/"));
    rootfs::prepare(job_dir, plan, &layout, &paths.base_cache(), resolver)?;
    phase("rootfs ready");
    let nofile_max = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    // Process and denied-call events (crate::watch). Without them (a policy choice; runsc
    // cannot deliver them) the deny list is answered in the kernel, unrecorded.
    let watcher = match (plan.process_events, audit.sender()) {
        (false, _) => None,
        (true, Some(s)) => Some(crate::watch::Watcher::start(job_dir, plan.id.as_str(), s)?),
        (true, None) => {
            return Err(SandboxError::Audit(airlock_audit::AuditError::Writer(
                "queue closed".into(),
            )))
        }
    };
    let mut spec = spec::build(
        plan,
        &layout,
        nofile_max,
        ns_file.as_deref(),
        watcher.as_ref().map(|w| w.socket.as_path()),
    )?;
    // The entry process's memory, closed to the rest of the job (crate::protect).
    let protected = crate::protect::prepare(
        job_dir,
        plan,
        &rootfs::RootfsDirs::new(job_dir).rootfs,
        &layout,
    )?;
    spec::add_protected(&mut spec, &protected);
    let config = job_dir.join("config.json");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config)
            .map_err(SandboxError::io("creating", &config))?;
        let data = serde_json::to_vec(&spec).map_err(SandboxError::Spec)?;
        let mut f = f;
        f.write_all(&data)
            .map_err(SandboxError::io("writing", &config))?;
    }

    phase("bundle written");
    state.status = Status::Creating;
    state.save(paths)?;
    let args = HelperArgs {
        job_dir: job_dir.to_owned(),
        id: plan.id.to_string(),
        executor: plan.executor,
        executor_root: paths.executor_root(plan.executor),
        scrub: plan.secrets.iter().map(|(k, _)| k.clone()).collect(),
    };
    let mut cmd = args.command(&opts.helper_exe);
    // stdin carries the go-ahead (helper::GO) once the network is attached.
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        // Its own process group: a terminal's Ctrl-C reaches airlock, which then stops the
        // job in order, instead of killing the helper halfway through.
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(SandboxError::io("starting helper", &opts.helper_exe))?;
    state.helper = ProcRef::of(child.id() as i32);
    state.save(paths)?;
    Ok((watcher, child))
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Whether `pid` is in the cgroup of job `id` (so a recycled pid is never killed).
fn in_job_cgroup(pid: i32, id: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|s| {
            s.lines()
                .any(|l| l.ends_with(&format!("/{}/{id}", spec::CGROUP_PARENT)))
        })
        .unwrap_or(false)
}

/// Kills every process of job `id`: those in its cgroup, and forks of its helper that are
/// not in the cgroup yet (a container whose creation was interrupted), recognised by the
/// helper's command line, which names the job.
fn kill_strays(id: &str, cgroup_rel: &str) {
    let mut pids = cgroup::procs(cgroup_rel);
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let mut args = cmd.split(|b| *b == 0);
            let is_helper = args.nth(1) == Some(helper::SUBCOMMAND.as_bytes());
            if is_helper && cmd.split(|b| *b == 0).any(|a| a == id.as_bytes()) {
                pids.push(pid);
            }
        }
    }
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Removes everything of a job: processes, executor state, cgroups, mounts, directories,
/// and finally its state file. `thorough` also searches all processes for forks of the
/// job's helper (needed when the helper did not finish normally). Never stops at the first error; returns all of them. The
/// state file stays if anything failed, so `gc` can try again.
pub fn teardown(paths: &Paths, state: &JobState, thorough: bool) -> Vec<String> {
    let mut errors = Vec::new();
    // Persisted before acting, like every other step (gc then knows a teardown was under way).
    let mut marked = state.clone();
    marked.status = Status::TearingDown;
    if let Err(e) = marked.save(paths) {
        errors.push(format!("recording teardown: {e}"));
    }
    let id = state.id.as_str();
    let job_dir = paths.job_dir(&state.id);
    if let Some(h) = state.helper.filter(|h| h.alive()) {
        let _ = kill(Pid::from_raw(h.pid), Signal::SIGKILL);
    }
    let init = state
        .init
        .map(|i| i.pid)
        .or_else(|| read_pid(&job_dir.join(INIT_PID_FILE)));
    if let Some(pid) = init.filter(|p| in_job_cgroup(*p, id)) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if thorough {
        kill_strays(id, &state.cgroup);
    }
    // Every process of the job is in its cgroup: kill what is left there and remove it.
    cgroup::remove(&state.cgroup, &mut errors);
    let root = paths.executor_root(state.executor);
    match state.executor {
        ExecutorKind::Libcontainer => {}
        ExecutorKind::Runc | ExecutorKind::Runsc => {
            let bin = if state.executor == ExecutorKind::Runc {
                "runc"
            } else {
                "runsc"
            };
            let _ = std::process::Command::new(bin)
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    // The executor's own record of the container (the helper normally removed it).
    let ex_dir = root.join(id);
    if ex_dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&ex_dir) {
            errors.push(format!("removing {}: {e}", ex_dir.display()));
        }
    }
    // The network after the processes (nothing holds the namespace any more), before the
    // job dir (the namespace is pinned by a file in it).
    if let Some(st) = &state.net {
        let t = Instant::now();
        match paths.pool() {
            Ok(pool) => airlock_net::undo(
                st,
                &airlock_net::link::ns_file(&job_dir),
                &pool,
                thorough,
                &mut errors,
            ),
            Err(e) => errors.push(e.to_string()),
        }
        // scripts/bench-net.sh reads this.
        tracing::debug!(job = id, net_detach_us = t.elapsed().as_micros() as u64);
    }
    rootfs::teardown(&job_dir, &mut errors);
    if errors.is_empty() {
        let sf = paths.state_file(&state.id);
        if let Err(e) = std::fs::remove_file(&sf) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(format!("removing {}: {e}", sf.display()));
            }
        }
    }
    errors
}

/// What `gc` did.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Jobs torn down.
    pub removed: Vec<String>,
    /// Jobs skipped because the airlock that runs them is alive.
    pub skipped_live: Vec<String>,
    /// Failures, each naming the job and what is left.
    pub errors: Vec<String>,
}

/// Tears down every job whose owning airlock is gone (or every job, with `force`).
pub fn gc(paths: &Paths, force: bool) -> GcReport {
    let mut r = GcReport::default();
    let (states, bad) = JobState::list(paths);
    r.errors
        .extend(bad.iter().map(|e| helper::ErrChain(e).to_string()));
    for s in states {
        if s.owner.alive() && !force {
            r.skipped_live.push(s.id.to_string());
            continue;
        }
        let errs = teardown(paths, &s, true);
        if errs.is_empty() {
            r.removed.push(s.id.to_string());
        } else {
            r.errors
                .extend(errs.into_iter().map(|e| format!("job {}: {e}", s.id)));
        }
    }
    // Address leases of jobs that have no state (a crash between leasing and saving).
    if let Ok(pool) = paths.pool() {
        let live = |id: &str| JobId::parse(id).is_ok_and(|id| paths.state_file(&id).exists());
        pool.sweep(&live);
    }
    airlock_net::release_deferred();
    // Leftover temporary state files from an interrupted save.
    if let Ok(rd) = std::fs::read_dir(paths.jobs()) {
        for e in rd.flatten() {
            if e.path().to_string_lossy().ends_with(".json.tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    r
}
