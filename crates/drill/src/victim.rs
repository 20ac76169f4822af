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

/// A running victim.
pub(crate) struct Victim {
    child: Option<Child>,
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
    pub(crate) fn start(mut cmd: Command, report: PathBuf, nonce: String) -> Result<Self, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting airlock run: {e}"))?;
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
        let mut v = Victim {
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
