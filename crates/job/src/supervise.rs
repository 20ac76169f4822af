//! Phase 4: the running job. Output is streamed, the job's init is recorded, and the
//! wall-clock limit and airlock's own signals stop the job in order. What to kill when is
//! decided by [`Supervisor`], which touches nothing, so its rules have unit tests; this
//! module's other half carries the decisions out.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use airlock_audit::JobOutcome;
use airlock_sandbox::helper::{Outcome, INIT_PID_FILE, RESULT_FILE};
use airlock_sandbox::launch::{in_job_cgroup, kill_strays, read_pid, Launched};
use airlock_sandbox::state::{JobState, ProcRef, Status};
use airlock_sandbox::SandboxError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::{Engine, Job};

/// How long the helper gets to delete the container after its init process was killed.
pub const HELPER_GRACE: Duration = Duration::from_secs(10);

/// What the supervising loop waits for.
pub(crate) enum Event {
    HelperExited,
    Signal(i32),
}

/// SIGINT, SIGTERM and SIGHUP to airlock, delivered as [`Event::Signal`] while a job runs
/// (airlock then stops the job in order instead of dying halfway through).
pub(crate) struct Signals {
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
}

impl Signals {
    pub(crate) fn install() -> Result<Self, SandboxError> {
        let (tx, rx) = mpsc::channel::<Event>();
        let signals =
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|source| {
                SandboxError::Io {
                    what: "installing signal handlers for",
                    path: "SIGINT/SIGTERM/SIGHUP".into(),
                    source,
                }
            })?;
        let handle = signals.handle();
        let sig_tx = tx.clone();
        let thread = std::thread::spawn(move || {
            let mut signals = signals;
            for s in signals.forever() {
                if sig_tx.send(Event::Signal(s)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            tx,
            rx,
            handle,
            thread,
        })
    }

    /// A signal received meanwhile, if any (before the job is supervised: a primed sandbox's
    /// wait, when only signals can arrive).
    pub(crate) fn try_signal(&self) -> Option<i32> {
        match self.rx.try_recv() {
            Ok(Event::Signal(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn close(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

/// Why a job is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The wall-clock limit expired.
    TimedOut,
    /// airlock received this signal.
    Interrupted(i32),
}

impl From<Stop> for JobOutcome {
    fn from(s: Stop) -> Self {
        match s {
            Stop::TimedOut => JobOutcome::TimedOut,
            Stop::Interrupted(s) => JobOutcome::Interrupted(s),
        }
    }
}

/// What the supervisor wants done now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Actions {
    /// Kill the job's init (which takes its whole pid namespace with it).
    pub kill_init: bool,
    /// Kill the helper (it had its grace period to delete the container).
    pub kill_helper: bool,
}

/// The rules of a running job's end, without side effects: the first reason to stop wins;
/// the init is killed once, as soon as it is known; the helper gets [`HELPER_GRACE`] to
/// delete the container before it is killed too (killing it mid-create could orphan a
/// half-made container).
#[derive(Debug)]
pub struct Supervisor {
    deadline: Instant,
    stop: Option<(Stop, Instant)>,
    killed_init: bool,
}

impl Supervisor {
    /// A job that must end by `deadline`.
    pub fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            stop: None,
            killed_init: false,
        }
    }

    /// Whether the job is being stopped at `now` (or will be at the next [`Self::tick`]).
    pub fn stopping(&self, now: Instant) -> bool {
        self.stop.is_some() || now >= self.deadline
    }

    /// Why the job is being stopped, if it is.
    pub fn stop(&self) -> Option<Stop> {
        self.stop.map(|(s, _)| s)
    }

    /// airlock received signal `s`.
    pub fn signal(&mut self, s: i32, now: Instant) {
        self.stop.get_or_insert((Stop::Interrupted(s), now));
    }

    /// What to do at `now`; `init_running` says whether the job's init is known and alive
    /// in the job's cgroup.
    pub fn tick(&mut self, now: Instant, init_running: bool) -> Actions {
        if now >= self.deadline {
            self.stop.get_or_insert((Stop::TimedOut, now));
        }
        let Some((_, since)) = self.stop else {
            return Actions::default();
        };
        let kill_init = !self.killed_init && init_running;
        self.killed_init |= kill_init;
        Actions {
            kill_init,
            kill_helper: now >= since + HELPER_GRACE,
        }
    }

    /// How long to wait for the next event: short while the init is not known yet (its pid
    /// is polled) or must still be killed, longer while stopping, else until the deadline.
    pub fn wait(&self, now: Instant, init_known: bool) -> Duration {
        if !init_known || (self.stop.is_some() && !self.killed_init) {
            Duration::from_millis(20)
        } else if self.stop.is_some() {
            Duration::from_millis(200)
        } else {
            self.deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1))
        }
    }
}

/// Streams the job's output, waits for its helper, and stops the job when the supervisor
/// says so; returns how the job ended.
pub(crate) fn supervise(
    engine: &Engine,
    job: &Job,
    state: &mut JobState,
    launched: Launched,
    audit: &airlock_audit::AuditQueue,
    signals: &Signals,
    (out, err): (Box<dyn Write + Send>, Box<dyn Write + Send>),
) -> Result<JobOutcome, SandboxError> {
    let plan = &job.plan;
    let Launched {
        watcher, mut child, ..
    } = launched;
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
    let tx = signals.tx.clone();
    let waiter = std::thread::spawn(move || {
        let st = child.wait();
        let _ = tx.send(Event::HelperExited);
        st
    });
    let job_dir = engine.paths.job_dir(&plan.id);
    let watched = watch(
        engine,
        job,
        state,
        audit,
        signals,
        helper_pid,
        watcher.is_some(),
    );
    // After an interruption or a helper that died without a result, parts of the job may be
    // left, holding the output pipes open: end them before waiting for the pumps to drain.
    if let Some(w) = watcher {
        let st = w.stop();
        tracing::debug!(job = %plan.id, execs = st.execs, denied = st.denied, "exec listener");
    }
    let stop = match &watched {
        Ok(s) => *s,
        Err(_) => None,
    };
    if stop.is_some() || watched.is_err() || !job_dir.join(RESULT_FILE).exists() {
        kill_strays(plan.id.as_str(), &state.cgroup);
    }
    let _ = waiter.join();
    for p in pumps {
        let _ = p.join();
    }
    tracing::debug!(job = %plan.id, phase = "output drained");
    if let Some(s) = watched? {
        return Ok(s.into());
    }
    let outcome: Outcome = std::fs::read(job_dir.join(RESULT_FILE))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_else(|| {
            Outcome::Failed(airlock_audit::Failure {
                kind: airlock_audit::FailureKind::Executor,
                message: "the helper ended without reporting a result".into(),
            })
        });
    Ok(match outcome {
        Outcome::Exited(c) => JobOutcome::Exited(c),
        Outcome::Signaled(s) => JobOutcome::Signaled(s),
        Outcome::Failed(f) => JobOutcome::Failed(f),
    })
}

/// The loop: until the helper exits, record the job's init once it exists and carry out the
/// supervisor's decisions. Returns why the job was stopped, if it was.
fn watch(
    engine: &Engine,
    job: &Job,
    state: &mut JobState,
    audit: &airlock_audit::AuditQueue,
    signals: &Signals,
    helper_pid: i32,
    process_events: bool,
) -> Result<Option<Stop>, SandboxError> {
    let plan = &job.plan;
    let init_file = engine.paths.job_dir(&plan.id).join(INIT_PID_FILE);
    let id = plan.id.as_str();
    let mut sup = Supervisor::new(Instant::now() + plan.limits.timeout.0);
    let mut started_logged = false;
    // `job.started`, once, even if the init process is already gone: a job that ends before
    // the loop first looks still gets its record after the loop.
    let mut log_started = |pid: i32| {
        if !std::mem::replace(&mut started_logged, true) {
            let started = airlock_audit::payload::JobStarted {
                pid: u64::try_from(pid).unwrap_or_default(),
                process_events,
                // What the job runs under, for `scan host`'s config item.
                policy_sha256: job.policy.sha256.clone(),
            };
            let _ = audit.send(airlock_audit::Event::of(Some(id), &started));
        }
    };
    loop {
        let now = Instant::now();
        if state.init.is_none() {
            if let Some(pid) = read_pid(&init_file) {
                state.init = ProcRef::of(pid);
                // Again (only the pid's start time) when the init was gone before it could
                // be read the first time.
                if state.status == Status::Running {
                    state.save(&engine.paths)?;
                } else {
                    state.advance(Status::Running, &engine.paths)?;
                }
                log_started(pid);
            }
        }
        // Only a job being stopped needs its init's pid checked against its cgroup.
        let init = sup
            .stopping(now)
            .then(|| read_pid(&init_file).filter(|p| in_job_cgroup(*p, id)))
            .flatten();
        let act = sup.tick(now, init.is_some());
        if let (true, Some(pid)) = (act.kill_init, init) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if act.kill_helper {
            let _ = kill(Pid::from_raw(helper_pid), Signal::SIGKILL);
        }
        match signals.rx.recv_timeout(sup.wait(now, state.init.is_some())) {
            Ok(Event::HelperExited) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Event::Signal(s)) => sup.signal(s, Instant::now()),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    if let Some(pid) = read_pid(&init_file) {
        log_started(pid);
    }
    tracing::debug!(job = %plan.id, phase = "helper exited");
    Ok(sup.stop())
}

/// Copies one output stream of the job until it closes.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_happens_before_the_deadline_without_a_signal() {
        let t = Instant::now();
        let mut s = Supervisor::new(t + Duration::from_secs(60));
        assert_eq!(s.tick(t, true), Actions::default());
        assert_eq!(s.stop(), None);
        // Waits until the deadline once the init is known; polls for it before.
        assert_eq!(s.wait(t, true), Duration::from_secs(60));
        assert_eq!(s.wait(t, false), Duration::from_millis(20));
    }

    #[test]
    fn the_deadline_kills_the_init_once_and_the_helper_after_its_grace() {
        let t = Instant::now();
        let mut s = Supervisor::new(t + Duration::from_secs(1));
        let late = t + Duration::from_secs(1);
        assert_eq!(
            s.tick(late, true),
            Actions {
                kill_init: true,
                kill_helper: false
            }
        );
        assert_eq!(s.stop(), Some(Stop::TimedOut));
        assert!(!s.tick(late, true).kill_init, "the init is killed once");
        assert_eq!(s.wait(late, true), Duration::from_millis(200));
        assert!(s.tick(late + HELPER_GRACE, true).kill_helper);
    }

    #[test]
    fn an_init_not_there_yet_is_killed_as_soon_as_it_appears() {
        let t = Instant::now();
        let mut s = Supervisor::new(t + Duration::from_secs(60));
        s.signal(15, t);
        assert_eq!(s.tick(t, false), Actions::default());
        assert_eq!(s.wait(t, false), Duration::from_millis(20));
        assert!(s.tick(t, true).kill_init);
    }

    #[test]
    fn the_first_reason_to_stop_is_the_one_reported() {
        let t = Instant::now();
        let mut s = Supervisor::new(t + Duration::from_secs(1));
        s.signal(2, t);
        s.tick(t + Duration::from_secs(5), true);
        s.signal(15, t + Duration::from_secs(6));
        assert_eq!(s.stop(), Some(Stop::Interrupted(2)));
        assert_eq!(
            JobOutcome::from(Stop::Interrupted(2)),
            JobOutcome::Interrupted(2)
        );

        let mut s = Supervisor::new(t);
        s.tick(t, false);
        s.signal(15, t);
        assert_eq!(s.stop(), Some(Stop::TimedOut));
    }
}
