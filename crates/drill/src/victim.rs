//! The victim of an attack on a sibling job: a second `airlock run` of the same group, started
//! before the attack and stopped after it, running `airlock-attack sibling-victim NONCE`.
//!
//! The victim is part of the drill's world, so like the world it must be shown alive, or
//! "blocked" could be faked by a victim that never listened. The proof does not depend on the
//! attacker: the orchestrator itself — in the drill's namespace, which is airlock's host
//! side, the one place the firewall lets connect to a job — connects to every victim port
//! before the attack and again after it, and sends `CHECK NONCE`; the victim answers `ALIVE`
//! and counts the check in its log. A victim that did not answer before the attack stops the
//! drill (like a failed control); one that stopped answering, or whose log does not hold all
//! the checks, makes the row inconclusive. The nonce is on the victim's command line only,
//! which no other job can read (own pid namespace), so nothing the attacker sends is counted
//! as a check: every other accepted connection is an intrusion.
//!
//! Ground truth, besides the attack's own account: the victim's log of intrusions, and its
//! job report's `egress` — everything ITS gateway served. The victim sends nothing itself, so
//! any record there is someone else using the victim's gateway.

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use airlock_audit::JobReport;

use crate::attack::sibling_job::{VictimLog, VictimReady, VICTIM_ALIVE, VICTIM_CHECK, VICTIM_STOP};
use crate::attack::AttackResult;
use crate::world::Hit;

/// How long the victim may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the victim may take to exit after `STOP`.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What the drill saw of a primed victim before it started (`Attack::victim_primed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrimedProof {
    /// Nothing ran in it: the evidence.
    Untouched(String),
    /// Something ran in it before its start: what.
    Touched(String),
    /// It could not be looked at: why.
    Unknown(String),
}

/// Where a primed victim is looked at from the host: the drill's job directories and audit
/// log.
pub(crate) struct PrimedProbe {
    pub jobs: PathBuf,
    pub audit: PathBuf,
}

impl PrimedProbe {
    /// The primed sandbox (the only job of the drill's state while it waits) has run nothing:
    /// its init is still airlock's helper (libcontainer's init waits for the start signal
    /// before it execs anything) and the audit log holds no exec of it.
    fn look(&self) -> PrimedProof {
        let dirs: Vec<PathBuf> = std::fs::read_dir(&self.jobs)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.join("init.pid").exists())
                    .collect()
            })
            .unwrap_or_default();
        let [dir] = dirs.as_slice() else {
            return PrimedProof::Unknown(format!(
                "{} created sandboxes in the drill's state, expected the primed one alone",
                dirs.len()
            ));
        };
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(pid) = std::fs::read_to_string(dir.join("init.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            return PrimedProof::Unknown(format!("sandbox {id}: no init pid"));
        };
        let cmdline = match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(c) => String::from_utf8_lossy(&c).replace('\0', " "),
            Err(e) => return PrimedProof::Unknown(format!("sandbox {id}: its init {pid}: {e}")),
        };
        if !cmdline.contains("__helper") {
            return PrimedProof::Touched(format!(
                "{id} had exec'd {:?} before its start",
                cmdline.trim()
            ));
        }
        let mut execs = 0;
        for e in std::fs::read_dir(&self.audit)
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            execs += text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|r| r["job"] == id.as_str() && r["kind"] == "process.exec")
                .count();
        }
        if execs > 0 {
            return PrimedProof::Touched(format!(
                "{id} has {execs} exec(s) on the record before its start"
            ));
        }
        PrimedProof::Untouched(format!(
            "primed sandbox {id} before its start: its init (pid {pid}) still airlock's helper, no exec on the record; its nonce came only with the start"
        ))
    }
}

/// A running victim.
pub(crate) struct Victim {
    child: Option<Child>,
    primed: Option<PrimedProof>,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    ready: VictimReady,
    nonce: String,
    report: PathBuf,
}

/// What the victim left.
#[derive(Debug, Clone)]
pub(crate) struct VictimRun {
    pub ready: VictimReady,
    /// Its last line, if it printed it.
    pub log: Option<VictimLog>,
    /// The orchestrator's check after the attack.
    pub alive_after: Result<(), String>,
    /// Its own result line.
    pub result: Option<AttackResult>,
    /// Its job report.
    pub report: Option<JobReport>,
    /// What its airlock printed on stderr.
    pub stderr: String,
    /// A primed victim: what the drill saw before its start.
    pub primed: Option<PrimedProof>,
}

/// 16 random bytes as hex.
pub(crate) fn nonce() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        // SIGTERM first: airlock tears its job down on it.
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Connects to `addr`, sends `line`, returns the first line of the answer.
fn say(addr: SocketAddr, line: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut r = String::new();
    let _ = std::io::BufReader::new(s).read_line(&mut r);
    Ok(r.trim().to_owned())
}

impl Victim {
    /// Starts `cmd` (an `airlock run … -- ./airlock-attack sibling-victim NONCE`), waits for
    /// its ready line and checks every port. On error the victim is already stopped.
    /// `primed`: the victim is a primed sandbox (`cmd` has `--late-env`): it is looked at
    /// from the host once it is ready, then started with its nonce.
    pub(crate) fn start(
        mut cmd: Command,
        report: PathBuf,
        nonce: String,
        primed: Option<PrimedProbe>,
    ) -> Result<Self, String> {
        let mut gate = None;
        match &primed {
            Some(_) => {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                    .map_err(|e| format!("socketpair: {e}"))?;
                cmd.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
                gate = Some(ours);
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting airlock run: {e}"))?;
        drop(cmd);
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            })
        });
        // A primed victim: ready, looked at, then started with its nonce.
        let mut proof = None;
        if let (Some(probe), Some(mut g)) = (primed, gate) {
            let mut b = [0u8; 1];
            let _ = g.set_read_timeout(Some(START_TIMEOUT));
            let ready = matches!(g.read(&mut b), Ok(1)) && b[..] == *airlock_gate::READY;
            if !ready {
                terminate(&mut child);
                return Err("the primed victim never said it was ready".into());
            }
            proof = Some(probe.look());
            let frame = airlock_gate::encode(&[(
                crate::attack::sibling_job::LATE_NONCE.to_owned(),
                nonce.clone(),
            )])
            .map_err(|e| e.to_string())?;
            if let Err(e) = g.write_all(&frame) {
                terminate(&mut child);
                return Err(format!("starting the primed victim: {e}"));
            }
            // The gate stays open while the victim runs (closing it after the start changes
            // nothing; dropping it here would be as good).
            drop(g);
        }
        let mut v = Victim {
            primed: proof,
            child: Some(child),
            lines,
            stderr,
            ready: VictimReady {
                victim_address: Ipv4Addr::UNSPECIFIED,
                gateway: Ipv4Addr::UNSPECIFIED,
                ports: Vec::new(),
            },
            nonce,
            report,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut said = Vec::new();
        let ready = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match v.lines.recv_timeout(left) {
                Ok(l) => match serde_json::from_str::<VictimReady>(&l) {
                    Ok(r) => break Ok(r),
                    Err(_) => said.push(l),
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break Err(format!(
                        "did not listen within {} s",
                        START_TIMEOUT.as_secs()
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err("ended before it listened".to_owned())
                }
            }
        };
        let ready = match ready {
            Ok(r) => r,
            Err(why) => {
                let run = v.finish(Err(why.clone()));
                return Err(format!(
                    "the victim job {why}; it printed {:?}; airlock: {}",
                    said.join(" / "),
                    run.stderr.trim()
                ));
            }
        };
        v.ready = ready;
        if v.ready.ports.is_empty() {
            v.finish(Err("no ports".into()));
            return Err("the victim listens on no port".into());
        }
        if let Err(e) = v.check() {
            let run = v.finish(Err(e.clone()));
            return Err(format!(
                "the victim job ({}) does not answer its liveness check: {e}; airlock: {}",
                run.ready.victim_address,
                run.stderr.trim()
            ));
        }
        Ok(v)
    }

    /// The orchestrator's liveness check: every port answers `ALIVE port` to `CHECK nonce`.
    fn check(&self) -> Result<(), String> {
        for p in &self.ready.ports {
            let a = SocketAddr::from((self.ready.victim_address, *p));
            let r = say(a, &format!("{VICTIM_CHECK} {}", self.nonce))?;
            if r != format!("{VICTIM_ALIVE} {p}") {
                return Err(format!("{a} answered {r:?}"));
            }
        }
        Ok(())
    }

    /// Checks the victim once more, stops it and collects what it recorded.
    pub(crate) fn stop(mut self) -> VictimRun {
        let alive_after = self.check();
        if let Some(p) = self.ready.ports.first() {
            let a = SocketAddr::from((self.ready.victim_address, *p));
            let _ = say(a, &format!("{VICTIM_STOP} {}", self.nonce));
        }
        self.finish(alive_after)
    }

    fn finish(&mut self, alive_after: Result<(), String>) -> VictimRun {
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            terminate(&mut c);
        }
        // The child is gone: its stdout closes, the reader thread ends the channel.
        let mut log = None;
        let mut result = None;
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if let Ok(x) = serde_json::from_str::<VictimLog>(&l) {
                log = Some(x);
            } else if let Ok(x) = serde_json::from_str::<AttackResult>(&l) {
                result = Some(x);
            }
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        VictimRun {
            ready: self.ready.clone(),
            log,
            alive_after,
            result,
            report: JobReport::read(&self.report).ok(),
            stderr,
            primed: self.primed.clone(),
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }
}

impl VictimRun {
    /// The victim's records as world hits: every connection it accepted from someone without
    /// the nonce, and everything its gateway served (the victim itself sends nothing).
    pub(crate) fn hits(&self) -> Vec<Hit> {
        let mut hits = Vec::new();
        let unknown = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        for i in self.log.iter().flat_map(|l| l.intrusions.iter()) {
            hits.push(Hit {
                time_ms: 0,
                service: "victim".into(),
                local: SocketAddr::from((self.ready.victim_address, i.port)),
                peer: i.peer,
                detail: format!("accepted a connection; it sent {:?}", i.first_bytes),
            });
        }
        let egress = self.report.iter().flat_map(|r| &r.egress);
        for r in egress.filter(|r| r.kind != "drop") {
            hits.push(Hit {
                time_ms: 0,
                service: "victim-gateway".into(),
                local: SocketAddr::from((self.ready.gateway, r.port)),
                peer: unknown,
                detail: format!(
                    "served {} {} ({} {})",
                    r.kind,
                    r.name.as_deref().unwrap_or(""),
                    r.verdict,
                    r.reason
                ),
            });
        }
        hits
    }

    /// Why the victim's silence cannot be trusted, if it cannot: it stopped answering, or
    /// its log is missing or lacks the orchestrator's checks (before and after the attack,
    /// on every port), so the listener that recorded is not shown to be the one checked.
    pub(crate) fn unsound(&self) -> Option<String> {
        if let Err(e) = &self.alive_after {
            return Some(format!(
                "the victim stopped answering during the attack: {e}"
            ));
        }
        let Some(log) = &self.log else {
            return Some(format!(
                "the victim printed no record ({}); airlock: {}",
                self.result
                    .as_ref()
                    .map_or("no result either", |r| r.detail.as_str()),
                self.stderr.trim()
            ));
        };
        for p in &self.ready.ports {
            let n = log.checks.iter().filter(|c| *c == p).count();
            if n < 2 {
                return Some(format!(
                    "the victim recorded {n} of the 2 liveness checks on port {p}"
                ));
            }
        }
        None
    }

    /// One line for the row's evidence.
    pub(crate) fn summary(&self) -> String {
        let intrusions = self.log.as_ref().map_or(0, |l| l.intrusions.len());
        let served = self.hits().len() - intrusions;
        format!(
            "victim job {} (gateway {}) listened on {:?}: {} liveness checks answered, {intrusions} other connections, its gateway served {served}",
            self.ready.victim_address,
            self.ready.gateway,
            self.ready.ports,
            self.log.as_ref().map_or(0, |l| l.checks.len()),
        )
    }

    /// The victim's job id.
    pub(crate) fn job_id(&self) -> Option<String> {
        self.report.as_ref().map(|r| r.id.clone())
    }
}
