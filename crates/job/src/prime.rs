//! Phase 3½, a primed sandbox (`JobRequest::late_env`): the sandbox is created and its
//! protections read back, then the job waits on its *gate* (a Unix socket; `airlock serve`
//! holds the other end) for the variables it lacks. Nothing of the job has run meanwhile: its
//! init is libcontainer's, waiting for the start signal. The gate hears [`READY`] once the
//! sandbox exists; a start frame (airlock_sandbox::start) starts the command with it; a
//! closed gate or a signal retires the sandbox unused.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use airlock_audit::payload::{JobPrimed, SecretInjected};
use airlock_audit::{Event, JobOutcome};
use airlock_sandbox::helper::INIT_PID_FILE;
use airlock_sandbox::launch::Launched;
use airlock_sandbox::start::{self, READY};
use airlock_sandbox::{JobPlan, SandboxError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::record::JobRecord;
use crate::supervise::Signals;

/// How long a started frame may take to arrive whole.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// How a primed sandbox's wait ended.
pub(crate) enum Primed {
    /// The command started with its late environment; supervise it as any job.
    Started,
    /// The helper ended first (its result says why); supervise collects it.
    HelperEnded,
    /// Retired before anything started: the gate closed (SIGHUP) or airlock got a signal.
    Retired(JobOutcome),
}

fn gate_io(what: &'static str) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Io {
        what,
        path: "the job's gate (stdin)".into(),
        source,
    }
}

/// Which of (helper's control socket, gate) is readable or hung up within `ms`.
fn wait_readable(
    control: &UnixStream,
    gate: Option<&UnixStream>,
    ms: u16,
) -> Result<(bool, bool), SandboxError> {
    let mut fds = vec![PollFd::new(control.as_fd(), PollFlags::POLLIN)];
    if let Some(g) = gate {
        fds.push(PollFd::new(g.as_fd(), PollFlags::POLLIN));
    }
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => {
            return Err(SandboxError::Io {
                what: "waiting on",
                path: "the primed sandbox's sockets".into(),
                source: e.into(),
            })
        }
    }
    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
    Ok((ready(&fds[0]), fds.get(1).is_some_and(ready)))
}

/// Waits until the sandbox is primed, tells the gate, and starts the command when the late
/// environment arrives.
pub(crate) fn await_start(
    plan: &JobPlan,
    job_dir: &std::path::Path,
    launched: &mut Launched,
    gate: &mut UnixStream,
    signals: &Signals,
    rec: &JobRecord,
) -> Result<Primed, SandboxError> {
    use std::io::Write;
    // 1. The helper creates the container and reads its protections back. A start frame
    // that arrives early waits in the socket (the gate is then no longer polled here).
    let mut early = false;
    loop {
        if let Some(s) = signals.try_signal() {
            return Ok(Primed::Retired(JobOutcome::Interrupted(s)));
        }
        let Some(control) = launched.control.as_ref() else {
            return Ok(Primed::HelperEnded);
        };
        let (helper, readable) = wait_readable(control, (!early).then_some(&*gate), 100)?;
        if helper {
            if !launched.wait_ready()? {
                return Ok(Primed::HelperEnded);
            }
            break;
        }
        if readable {
            if gate_closed(gate) {
                return Ok(Primed::Retired(JobOutcome::Interrupted(nix::libc::SIGHUP)));
            }
            early = true;
        }
    }
    // The entry program is hashed now, not when it is exec'd: the runner's first instruction
    // does not wait for its audit (a large program takes tens of ms).
    let init = airlock_sandbox::launch::read_pid(&job_dir.join(INIT_PID_FILE));
    if let (Some(w), Some(entry), Some(pid)) = (
        launched.watcher.as_ref(),
        plan.argv.first().filter(|a| a.starts_with('/')),
        init,
    ) {
        w.prewarm(pid, entry);
    }
    // Durable on the record before the gate hears it: whoever acts on READY finds the
    // sandbox named (the wait for the disk is before the decision, not after it).
    rec.audit
        .send(Event::of(
            Some(plan.id.as_str()),
            &JobPrimed {
                late_env: plan.late_env.clone(),
                init,
            },
        ))
        .and_then(|()| rec.audit.sync().map(drop))
        .map_err(SandboxError::Audit)?;
    tracing::debug!(job = %plan.id, phase = "primed");
    if gate.write_all(READY).and_then(|_| gate.flush()).is_err() {
        return Ok(Primed::Retired(JobOutcome::Interrupted(nix::libc::SIGHUP)));
    }
    // 2. Primed: wait for the start, a retirement, or the helper's end.
    loop {
        if let Some(s) = signals.try_signal() {
            return Ok(Primed::Retired(JobOutcome::Interrupted(s)));
        }
        let Some(control) = launched.control.as_ref() else {
            return Ok(Primed::HelperEnded);
        };
        let (helper, ready) = wait_readable(control, Some(gate), 200)?;
        if helper {
            // The helper says nothing after READY: it ended.
            return Ok(Primed::HelperEnded);
        }
        if ready {
            break;
        }
    }
    gate.set_read_timeout(Some(FRAME_TIMEOUT))
        .map_err(gate_io("setting a timeout on"))?;
    let Some(body) = start::read_frame(gate).map_err(gate_io("reading"))? else {
        return Ok(Primed::Retired(JobOutcome::Interrupted(nix::libc::SIGHUP)));
    };
    let env = start::decode(&body)?;
    if let Some((k, _)) = env.iter().find(|(k, _)| !plan.late_env.contains(k)) {
        return Err(SandboxError::Config(format!(
            "the start message sets {k}, which is not one of the job's late variables ({})",
            plan.late_env.join(", ")
        )));
    }
    // Secrets from here on: redacted in every record, named (never valued) on the record.
    for (k, v) in &env {
        rec.redactor.add(k, v);
    }
    if !env.is_empty() {
        let names = env.iter().map(|(k, _)| k.clone()).collect();
        rec.audit
            .send(Event::of(Some(plan.id.as_str()), &SecretInjected { names }))
            .map_err(SandboxError::Audit)?;
    }
    launched.start(&env)?;
    tracing::debug!(job = %plan.id, phase = "started");
    Ok(Primed::Started)
}

/// Whether the gate's peer has closed (a readable socket with nothing to read).
fn gate_closed(gate: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(gate),
            &mut b,
            nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT
        ),
        Ok(0)
    )
}

/// Ends a sandbox retired before its command started: the helper, told by its closed control
/// socket, deletes the container; if it does not within a few seconds it is killed
/// (teardown's full search takes what it left).
pub(crate) fn retire(launched: Launched) {
    let Launched {
        watcher,
        mut child,
        control,
    } = launched;
    drop(control);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    if let Some(w) = watcher {
        w.stop();
    }
}
