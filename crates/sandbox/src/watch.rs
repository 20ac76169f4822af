//! Process and privileged-operation events from inside the sandbox, through seccomp user
//! notification.
//!
//! The job's seccomp filter sends `execve`/`execveat` and every denied syscall to a listener
//! (OCI `listenerPath`): the runtime hands the filter's notification fd to this module over a
//! unix socket in the job directory. For each notification the calling thread is stopped in the
//! kernel until we answer, which is what makes the record complete:
//! - `execve`: argv and the path are read from the stopped process's memory, uid, parent and
//!   cwd from `/proc`; the record is queued (blocking if the audit queue is full: back-pressure
//!   reaches the job, never a lost event); then the call is let through (`CONTINUE`). Even a
//!   `/bin/true` that lives for a millisecond is on the record before it runs.
//! - a denied syscall: recorded as `syscall.denied` and answered with EPERM (ENOSYS if the
//!   listener is gone: the kernel's answer, still a denial).
//!
//! Why this and not the alternatives (docs/audit.md has the long form): the proc connector and
//! Linux audit are bound to the initial network namespace and see the whole host, needing
//! attribution and filtering after the fact, and argv read from `/proc` after an exec event is
//! already gone for short-lived processes. The notification sees only this sandbox's processes,
//! by construction, and sees them before they run.
//!
//! Limits: `CONTINUE` is for observation only — a second thread of the caller could change the
//! argv memory between our read and the kernel's (the kernel documents this); the record is
//! what the process showed us, which is what an audit needs, and no decision depends on it.
//! Process exits are seen through pidfds of the processes that exec'd; the exit code is read
//! while the process is a zombie and is missing when its parent reaps it first.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use airlock_audit::{AuditSender, Event};
use libseccomp::{notify_id_valid, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::SandboxError;
use crate::exe;
use crate::seccomp;

/// Socket name in the job directory.
pub const SOCKET: &str = "seccomp.sock";
/// At most this many argv entries are recorded (the rest is counted).
const MAX_ARGS: usize = 512;
/// At most this many bytes of one string are recorded.
const MAX_STR: usize = 4096;
/// While an exec waits for its confirmation, /proc/PID/exe is looked at this often (ms) ...
const CONFIRM_EVERY_MS: u16 = 10;
/// ... for at most this long (a failed exec leaves the old program running).
const CONFIRM_FOR: std::time::Duration = std::time::Duration::from_secs(2);
/// Execs waiting for confirmation, at most (more are not confirmed).
const MAX_PENDING: usize = 1024;
/// Distinct executables remembered for the end-of-job check, at most ...
const MAX_RAN: usize = 256;
/// ... of which at most this many are held open (`O_PATH`) to see whether they are deleted.
const MAX_HELD: usize = 64;

/// A running listener; [`Watcher::stop`] ends it.
pub struct Watcher {
    stop: OwnedFd,
    thread: Option<JoinHandle<Stats>>,
    /// The job's program hashes, shared with the listener thread.
    cache: crate::exe::HashCache,
    /// Where the runtime connects.
    pub socket: PathBuf,
}

/// What the listener saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Whether the runtime delivered the notification fd.
    pub connected: bool,
    /// exec events recorded.
    pub execs: u64,
    /// Denied calls recorded.
    pub denied: u64,
    /// Events that could not be recorded (the audit log failed); the calls were refused.
    pub unrecorded: u64,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SandboxError::io("creating", "a pipe")(std::io::Error::from(e)))
}

impl Watcher {
    /// Binds the socket in `job_dir` and starts listening for `job`'s notifications.
    pub fn start(job_dir: &Path, job: &str, audit: AuditSender) -> Result<Self, SandboxError> {
        let socket = job_dir.join(SOCKET);
        let listener = UnixListener::bind(&socket).map_err(SandboxError::io("binding", &socket))?;
        listener
            .set_nonblocking(true)
            .map_err(SandboxError::io("configuring", &socket))?;
        let (rd, wr) = pipe()?;
        let job = job.to_owned();
        // A container's sandbox records under its job: its exec records name the sandbox.
        let sandbox = job_dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .filter(|s| *s != job);
        let cache = crate::exe::HashCache::default();
        let shared = cache.clone();
        let thread = std::thread::Builder::new()
            .name("exec-watch".into())
            .spawn(move || listen(listener, rd, &job, sandbox, shared, &audit))
            .map_err(SandboxError::io("starting the exec listener for", &socket))?;
        Ok(Self {
            stop: wr,
            thread: Some(thread),
            cache,
            socket,
        })
    }

    /// Hashes the program `path` (absolute) as the job's process `pid` would exec it (its
    /// root, and a script's interpreter too) into the job's cache, so that exec does not wait
    /// for the hash. A primed sandbox does this before its start: nothing of the job has run,
    /// and the cache key (device, inode, size, mtime, ctime) misses if the file changes.
    pub fn prewarm(&self, pid: i32, path: &str) {
        let mut r = crate::exe::Resolver::with_cache(self.cache.clone());
        let _ = r.resolve(pid, crate::exe::Call::Execve { path });
    }

    /// Stops the listener and returns what it saw.
    pub fn stop(mut self) -> Stats {
        self.halt()
    }

    fn halt(&mut self) -> Stats {
        let _ = nix::unistd::write(&self.stop, b"x");
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

fn readable(fd: BorrowedFd<'_>) -> PollFd<'_> {
    PollFd::new(fd, PollFlags::POLLIN)
}

fn listen(
    listener: UnixListener,
    stop: OwnedFd,
    job: &str,
    sandbox: Option<String>,
    cache: crate::exe::HashCache,
    audit: &AuditSender,
) -> Stats {
    let mut stats = Stats::default();
    // 1. Wait for the runtime to hand over the filter's notification fd.
    let notify = loop {
        let mut fds = [readable(listener.as_fd()), readable(stop.as_fd())];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        if fds[1].any().unwrap_or(false) {
            return stats;
        }
        match listener.accept() {
            Ok((conn, _)) => match receive_fd(conn.as_raw_fd()) {
                Ok(fd) => break fd,
                Err(e) => tracing::warn!(job, "seccomp listener: {e}"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::warn!(job, "seccomp listener: {e}"),
        }
    };
    stats.connected = true;
    drop(listener);
    // 2. Answer notifications; follow exec'd processes to their exit.
    let mut live: HashMap<i32, OwnedFd> = HashMap::new();
    let mut execs = Execs {
        sandbox,
        resolver: exe::Resolver::with_cache(cache),
        ..Execs::default()
    };
    loop {
        let pids: Vec<i32> = live.keys().copied().collect();
        let (mut hup, mut stopped, mut ready, mut exited) = (false, false, false, Vec::new());
        {
            let mut fds = vec![readable(notify.as_fd()), readable(stop.as_fd())];
            fds.extend(
                pids.iter()
                    .filter_map(|p| live.get(p))
                    .map(|f| readable(f.as_fd())),
            );
            // While an exec waits for its confirmation, look again every few milliseconds.
            let timeout = if execs.pending.is_empty() {
                PollTimeout::NONE
            } else {
                PollTimeout::from(CONFIRM_EVERY_MS)
            };
            if poll(&mut fds, timeout).is_err() {
                continue;
            }
            let rev = |f: &PollFd| f.revents().unwrap_or(PollFlags::empty());
            if rev(&fds[0]).contains(PollFlags::POLLIN) {
                ready = true;
            } else if rev(&fds[0]).intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                hup = true;
            }
            if !rev(&fds[1]).is_empty() {
                stopped = true;
            }
            for (i, f) in fds.iter().enumerate().skip(2) {
                if !rev(f).is_empty() {
                    exited.push(pids[i - 2]);
                }
            }
        }
        // Before anything else: a process that stopped at its next call (or is running) has
        // finished its previous exec, and /proc/PID/exe says what that exec ran.
        execs.confirm(job, audit, &live);
        for pid in exited {
            live.remove(&pid);
            execs.pending.remove(&pid);
            let (code, signal) = exit_status(pid);
            let mut data = serde_json::json!({ "pid": pid });
            if let Some(c) = code {
                data["exit_code"] = c.into();
            }
            if let Some(s) = signal {
                data["signal"] = s.into();
            }
            let _ = audit.send(Event::new(
                airlock_audit::Kind::ProcessExit,
                Some(job),
                data,
            ));
        }
        if ready {
            handle(
                notify.as_raw_fd(),
                job,
                audit,
                &mut stats,
                &mut live,
                &mut execs,
            );
        }
        // Every process that holds the filter is gone, or the job is over.
        if hup || stopped {
            execs.report_gone(job, audit);
            return stats;
        }
    }
}

/// Receives the fd (SCM_RIGHTS) and the container state the runtime sends with it.
fn receive_fd(conn: RawFd) -> Result<OwnedFd, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(conn, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| format!("receiving the notification fd: {e}"))?;
    let mut got = None;
    for c in msg
        .cmsgs()
        .map_err(|e| format!("reading control data: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                got.get_or_insert(owned);
            }
        }
    }
    got.ok_or_else(|| "the runtime sent no notification fd".to_owned())
}

fn handle(
    fd: RawFd,
    job: &str,
    audit: &AuditSender,
    stats: &mut Stats,
    live: &mut HashMap<i32, OwnedFd>,
    execs: &mut Execs,
) {
    let req = match ScmpNotifReq::receive(fd) {
        Ok(r) => r,
        // The caller went away (killed) between the wake-up and the read.
        Err(_) => return,
    };
    let name = req.data.syscall.get_name().unwrap_or_default();
    let pid = req.pid as i32;
    let respond = |r: ScmpNotifResp| {
        let _ = r.respond(fd);
    };
    let deny = || ScmpNotifResp::new_error(req.id, -libc::EPERM, ScmpNotifRespFlags::empty());
    if name == "execve" || name == "execveat" {
        let (path_at, argv_at) = if name == "execve" {
            (req.data.args[0], req.data.args[1])
        } else {
            (req.data.args[1], req.data.args[2])
        };
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok();
        let (path, argv, truncated) = match &mem {
            Some(m) => {
                let path = read_str(m, path_at).unwrap_or_default();
                let (argv, truncated) = read_argv(m, argv_at);
                (path, argv, truncated)
            }
            None => (String::new(), Vec::new(), false),
        };
        let info = ProcInfo::read(pid);
        // The caller's previous exec is over: settle it before this one replaces it.
        execs.check_now(info.tgid.unwrap_or(pid), job, audit, live);
        // What the exec will run, resolved from the caller's own fd table, cwd and root while
        // it is stopped. TOCTOU: the kernel resolves the path again after we answer, so a job
        // can swap the file (or the fd, from another thread) in between; the record names what
        // was there at notification, and `Execs::confirm` compares it with /proc/PID/exe once
        // the exec has happened, recording `exec.actual` when they differ.
        let call = if name == "execve" {
            exe::Call::Execve { path: &path }
        } else {
            exe::Call::Execveat {
                // The kernel reads these as ints: only the low 32 bits count.
                dirfd: req.data.args[0] as u32 as i32,
                path: &path,
                flags: req.data.args[4] as u32 as i32,
            }
        };
        let target = execs.resolver.resolve(pid, call);
        // The dynamic loader run as a program (`ld-linux-x86-64.so.2 /proc/self/fd/3`) maps
        // the real program itself: resolve that one too.
        let mut loaded = exe::loader_program(&target, &argv)
            .map(|p| execs.resolver.resolve(pid, exe::Call::Execve { path: &p }));
        let before = exe_key(pid);
        // The pid could have been reused if the caller died meanwhile: only a still-pending
        // notification proves that what we read belongs to it.
        if notify_id_valid(fd, req.id).is_err() {
            return;
        }
        let mismatch = exe::argv0_mismatch(argv.first().map(String::as_str), &target.names(&path));
        let mut data = serde_json::json!({
            "pid": pid,
            "ppid": info.ppid,
            "uid": info.uid,
            "ns_pid": info.ns_pid,
            "cwd": info.cwd,
            "path": path,
            "argv": argv,
            "exe": target,
        });
        if truncated {
            data["argv_truncated"] = true.into();
        }
        if mismatch {
            data["argv0_mismatch"] = true.into();
        }
        if let Some(s) = &execs.sandbox {
            data["sandbox"] = s.clone().into();
        }
        if let Some(l) = &loaded {
            data["loaded"] = serde_json::to_value(l).unwrap_or_default();
        }
        match audit.send(Event::new(
            airlock_audit::Kind::ProcessExec,
            Some(job),
            data,
        )) {
            Ok(()) => {
                stats.execs += 1;
                let tgid = info.tgid.unwrap_or(pid);
                execs.expect(tgid, before, target);
                if let Some(l) = loaded.as_mut() {
                    execs.remember(l);
                }
                if let std::collections::hash_map::Entry::Vacant(e) = live.entry(pid) {
                    if let Some(p) = pidfd_open(pid) {
                        e.insert(p);
                    }
                }
                respond(ScmpNotifResp::new_continue(
                    req.id,
                    ScmpNotifRespFlags::CONTINUE,
                ));
            }
            Err(_) => {
                // No record, no exec: fail closed.
                stats.unrecorded += 1;
                respond(deny());
            }
        }
        return;
    }
    // Everything else that reaches us is on the deny list.
    let reason = seccomp::reason(&name, &req.data.args);
    let data = serde_json::json!({
        "pid": pid,
        "syscall": name,
        "nr": req.data.syscall.as_raw_syscall(),
        "args": req.data.args,
        "reason": reason,
    });
    if audit
        .send(Event::new(
            airlock_audit::Kind::SyscallDenied,
            Some(job),
            data,
        ))
        .is_ok()
    {
        stats.denied += 1;
    } else {
        stats.unrecorded += 1;
    }
    respond(deny());
}

/// (device, inode) of what a process runs now.
fn exe_key(pid: i32) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Whether the file lives on a read-only mount.
fn read_only(f: &OwnedFd) -> bool {
    // SAFETY: statvfs is plain data, filled by the kernel.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd (O_PATH is enough for fstatvfs) and out pointer.
    let ok = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) } == 0;
    ok && st.f_flag & libc::ST_RDONLY != 0
}

/// An exec let through, waiting to be seen in /proc/PID/exe.
struct Pending {
    /// What the process ran before the exec.
    before: Option<(u64, u64)>,
    /// What the record says it will run (and, for a script, its interpreter: what
    /// /proc/PID/exe shows then).
    expect: Option<(u64, u64)>,
    interpreter: Option<(u64, u64)>,
    /// The record's path, for the `exec.actual` record.
    recorded: Option<String>,
    since: std::time::Instant,
    /// When to look next: 10 ms after the exec, then backing off (20, 40, … ms), so that
    /// many execs that failed cost a few looks each, not one every 10 ms for 2 s.
    next: std::time::Instant,
    step: std::time::Duration,
}

impl Pending {
    /// `None`: look again later; `Some(differs)`: settled.
    fn verdict(&self, tgid: i32, live: &HashMap<i32, OwnedFd>) -> Option<bool> {
        // A pidfd that polls readable: the process is gone and its pid may be reused.
        let gone = live.get(&tgid).is_some_and(|f| {
            let mut fds = [readable(f.as_fd())];
            poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) > 0
        });
        let now_runs = if gone { None } else { exe_key(tgid) };
        match now_runs {
            None => Some(false),
            Some(k) if Some(k) == self.expect || Some(k) == self.interpreter => Some(false),
            Some(k) if Some(k) == self.before => {
                (self.since.elapsed() > CONFIRM_FOR).then_some(false)
            }
            Some(_) => Some(true),
        }
    }
}

/// An executable that ran, for the end-of-job check.
struct Ran {
    data: serde_json::Value,
    /// Fileless when it ran (memfd, deleted): gone by definition.
    fileless: bool,
    /// Held `O_PATH`, to see at the end whether it still has a name.
    file: Option<OwnedFd>,
}

/// The exec bookkeeping of one job: resolution (and its hash cache and budget), execs waiting
/// for confirmation, and the executables that ran. Every part is bounded.
#[derive(Default)]
struct Execs {
    /// The sandbox, when it is not the job's own (a container of the job).
    sandbox: Option<String>,
    resolver: exe::Resolver,
    /// By thread-group id: a process has at most one exec in flight.
    pending: HashMap<i32, Pending>,
    ran: HashMap<(u64, u64), Ran>,
    held: usize,
    untracked: u64,
}

impl Execs {
    /// Remembers an exec let through: for the confirmation and the end-of-job check.
    fn expect(&mut self, tgid: i32, before: Option<(u64, u64)>, mut target: exe::Exe) {
        if self.pending.len() < MAX_PENDING || self.pending.contains_key(&tgid) {
            self.pending.insert(
                tgid,
                Pending {
                    before,
                    expect: target.key,
                    interpreter: target.interpreter_key,
                    recorded: target.path.clone(),
                    since: std::time::Instant::now(),
                    next: std::time::Instant::now()
                        + std::time::Duration::from_millis(CONFIRM_EVERY_MS.into()),
                    step: std::time::Duration::from_millis(CONFIRM_EVERY_MS.into()),
                },
            );
        }
        self.remember(&mut target);
    }

    fn remember(&mut self, target: &mut exe::Exe) {
        let Some(key) = target.key else { return };
        if self.ran.contains_key(&key) {
            return;
        }
        // A file on a read-only mount (the image, the host's /usr) cannot be deleted by the
        // job: nothing to follow.
        if !target.fileless() && target.file.as_ref().is_some_and(read_only) {
            return;
        }
        if self.ran.len() >= MAX_RAN {
            self.untracked += 1;
            return;
        }
        let fileless = target.fileless();
        let file = match target.file.take() {
            Some(f) if !fileless && self.held < MAX_HELD => {
                self.held += 1;
                Some(f)
            }
            _ => None,
        };
        let mut data = serde_json::json!({
            "path": target.path,
            "change": "deleted",
            "executed": true,
            "size": target.size,
            "mode": format!("{:o}", target.mode),
            "dev": target.dev,
            "ino": target.ino,
        });
        if let Some(h) = &target.sha256 {
            data["sha256"] = h.clone().into();
        }
        if let Some(m) = &target.memfd {
            data["memfd"] = m.clone().into();
        }
        self.ran.insert(
            key,
            Ran {
                data,
                fileless,
                file,
            },
        );
    }

    /// Compares each pending exec with what its process runs now: the same as recorded (or
    /// the exec failed and the old program still runs) is the normal case and leaves no
    /// trace; anything else is recorded as `exec.actual`, described like the record's `exe`.
    fn confirm(&mut self, job: &str, audit: &AuditSender, live: &HashMap<i32, OwnedFd>) {
        if self.pending.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let mut done = Vec::new();
        for (&tgid, p) in &mut self.pending {
            if now < p.next {
                continue;
            }
            match p.verdict(tgid, live) {
                Some(differs) => done.push((tgid, differs)),
                None => {
                    p.step *= 2;
                    p.next = now + p.step;
                }
            }
        }
        self.settle(done, job, audit);
    }

    /// Settles the pending exec of `tgid` now, whatever its schedule: called when the process
    /// stops at its next exec, before that one is let through.
    fn check_now(
        &mut self,
        tgid: i32,
        job: &str,
        audit: &AuditSender,
        live: &HashMap<i32, OwnedFd>,
    ) {
        let v = self.pending.get(&tgid).and_then(|p| p.verdict(tgid, live));
        if let Some(differs) = v {
            self.settle(vec![(tgid, differs)], job, audit);
        }
    }

    fn settle(&mut self, done: Vec<(i32, bool)>, job: &str, audit: &AuditSender) {
        for (tgid, differs) in done {
            let Some(p) = self.pending.remove(&tgid) else {
                continue;
            };
            if !differs {
                continue;
            }
            let Some(mut actual) = self.resolver.running(tgid) else {
                continue;
            };
            let data = serde_json::json!({
                "pid": tgid,
                "recorded": p.recorded,
                "exe": &actual,
            });
            let _ = audit.send(Event::new(airlock_audit::Kind::ExecActual, Some(job), data));
            self.remember(&mut actual);
        }
    }

    /// At the end of the job: every executable that ran and has no name left (deleted
    /// afterwards, or fileless from the start) becomes a `file.changed` record — the file
    /// scan cannot see a file that was created and removed again.
    fn report_gone(&mut self, job: &str, audit: &AuditSender) {
        for (_, r) in std::mem::take(&mut self.ran) {
            let gone = r.fileless
                || r.file
                    .as_ref()
                    .and_then(|f| exe::fstat(f.as_raw_fd()).ok())
                    .is_some_and(|st| st.st_nlink == 0);
            if gone {
                let _ = audit.send(Event::new(
                    airlock_audit::Kind::FileChanged,
                    Some(job),
                    r.data,
                ));
            }
        }
        if self.untracked > 0 {
            let _ = audit.send(Event::new(
                airlock_audit::Kind::ExecUntracked,
                Some(job),
                serde_json::json!({ "executables": self.untracked, "tracked": MAX_RAN }),
            ));
        }
    }
}

fn read_str(mem: &std::fs::File, mut at: u64) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while out.len() < MAX_STR {
        // Stay within one page per read: a string may end just before an unmapped page.
        let room = (4096 - (at % 4096)) as usize;
        let n = mem.read_at(&mut buf[..room.min(256)], at).ok()?;
        if n == 0 {
            break;
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    out.truncate(MAX_STR);
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn read_argv(mem: &std::fs::File, at: u64) -> (Vec<String>, bool) {
    let mut argv = Vec::new();
    if at == 0 {
        return (argv, false);
    }
    for i in 0..=MAX_ARGS as u64 {
        let mut p = [0u8; 8];
        if mem.read_exact_at(&mut p, at + i * 8).is_err() {
            break;
        }
        let ptr = u64::from_ne_bytes(p);
        if ptr == 0 {
            return (argv, false);
        }
        if argv.len() == MAX_ARGS {
            return (argv, true);
        }
        argv.push(read_str(mem, ptr).unwrap_or_default());
    }
    (argv, false)
}

#[derive(Default)]
struct ProcInfo {
    tgid: Option<i32>,
    ppid: Option<i32>,
    uid: Option<u32>,
    ns_pid: Option<i32>,
    cwd: Option<String>,
}

impl ProcInfo {
    fn read(pid: i32) -> Self {
        let mut i = Self::default();
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for l in s.lines() {
                if let Some(v) = l.strip_prefix("Tgid:") {
                    i.tgid = v.trim().parse().ok();
                } else if let Some(v) = l.strip_prefix("PPid:") {
                    i.ppid = v.trim().parse().ok();
                } else if let Some(v) = l.strip_prefix("Uid:") {
                    // real, effective, saved, fs: the effective one decides.
                    i.uid = v.split_whitespace().nth(1).and_then(|x| x.parse().ok());
                } else if let Some(v) = l.strip_prefix("NSpid:") {
                    i.ns_pid = v.split_whitespace().last().and_then(|x| x.parse().ok());
                }
            }
        }
        i.cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        i
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments; a returned fd is ours to own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return None;
    }
    // SAFETY: the kernel returned a fresh descriptor.
    Some(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Exit code or signal from `/proc/PID/stat` while the process is a zombie.
fn exit_status(pid: i32) -> (Option<i32>, Option<i32>) {
    let mut s = String::new();
    if std::fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read_to_string(&mut s))
        .is_err()
    {
        return (None, None);
    }
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = match s.rfind(')') {
        Some(i) => &s[i + 1..],
        None => return (None, None),
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); exit_code is field 52.
    if f.first() != Some(&"Z") {
        return (None, None);
    }
    match f.get(49).and_then(|x| x.parse::<i32>().ok()) {
        Some(w) if w & 0x7f == 0 => (Some((w >> 8) & 0xff), None),
        Some(w) => (None, Some(w & 0x7f)),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_and_strings_are_read_from_process_memory() {
        let me = std::fs::File::open("/proc/self/mem").expect("mem");
        let a = std::ffi::CString::new("first").expect("c");
        let b = std::ffi::CString::new("second arg").expect("c");
        let ptrs = [a.as_ptr() as u64, b.as_ptr() as u64, 0u64];
        let (argv, truncated) = read_argv(&me, ptrs.as_ptr() as u64);
        assert_eq!(argv, ["first", "second arg"]);
        assert!(!truncated);
        assert_eq!(read_argv(&me, 0).0, Vec::<String>::new());
    }

    #[test]
    fn exit_status_of_a_zombie() {
        let mut c = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .spawn()
            .expect("spawn");
        let pid = c.id() as i32;
        let fd = pidfd_open(pid).expect("pidfd");
        let mut fds = [readable(fd.as_fd())];
        poll(&mut fds, PollTimeout::from(5000u16)).expect("poll");
        assert_eq!(exit_status(pid), (Some(7), None));
        c.wait().expect("reap");
    }
}
