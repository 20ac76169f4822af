//! Exhaustion of airlock itself: flood the job's egress gateway with connections. The gateway
//! runs in airlock's own process, outside the job's cgroup, so every connection it holds costs
//! airlock an open file and memory, and a job may open pids × nofile of them; out of open
//! files, airlock loses its own records and every other connection of the job. The attack
//! opens connections from several processes to the ports the gateway serves (HTTP, HTTPS,
//! DNS over TCP, CONNECT) and holds them without ever sending a request. Harmless: every one
//! of them goes to the job's own gateway (the world's addresses on those ports are redirected
//! there) and ends with the job.
//!
//! From inside, the job cannot see airlock's open files: the orchestrator counts them while
//! the attack runs and judges by the bound the group's `limits.connections` gives
//! ([`airlock_net::gateway::fd_need`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// Processes that open connections, and connections each tries: 7,200 in all, more than
/// twice the open files a gateway of the default 1,024 connections may use.
const PROCS: usize = 8;
const PER_PROC: usize = 900;
/// How long each process holds what it opened.
const HOLD: Duration = Duration::from_secs(3);

/// `gateway-flood`: flood the egress gateway with connections that never send a request.
pub struct GatewayFlood;

fn targets() -> Vec<SocketAddr> {
    // The allowed host and the attacker on HTTP and HTTPS and the resolver over TCP (every
    // such connection is redirected to the job's own gateway), and the gateway's CONNECT
    // proxy.
    let mut v: Vec<SocketAddr> = ["203.0.113.20:80", "203.0.113.7:443", "198.51.100.53:53"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    if let Some(gw) = super::sibling_job::own_gateway() {
        v.push(SocketAddr::from((gw, 3128)));
    }
    v
}

/// One process's share: opens up to [`PER_PROC`] connections, holds them, and counts how
/// many the gateway still held after a second (nothing to read yet) and how many it closed.
fn flood_one(targets: &[SocketAddr]) -> (usize, usize) {
    let mut open = Vec::new();
    for i in 0..PER_PROC {
        let to = targets[i % targets.len()];
        match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(s) => open.push(s),
            Err(_) => {
                if open.is_empty() && i >= 8 {
                    break; // no gateway at all (egress `none`)
                }
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut held = 0;
    for s in &mut open {
        let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
        {
            held += 1;
        }
    }
    std::thread::sleep(HOLD);
    (open.len(), held)
}

impl Attack for GatewayFlood {
    fn id(&self) -> &'static str {
        "gateway-flood"
    }
    fn title(&self) -> &'static str {
        "flood airlock's egress gateway with connections that never send a request"
    }
    fn category(&self) -> Category {
        Category::Exhaustion
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn gateway_files_bound(&self) -> bool {
        true
    }
    fn run(&self) -> AttackResult {
        use nix::unistd::{fork, pipe, ForkResult};
        let targets = targets();
        let Ok((rx, tx)) = pipe() else {
            return AttackResult::from_steps(
                self.id(),
                &[Step::failed("pipe", "no pipe for the children's counts")],
            );
        };
        let mut kids = Vec::new();
        for _ in 0..PROCS {
            // SAFETY: the attack is single-threaded here; the child runs its share and exits.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    let (opened, held) = flood_one(&targets);
                    let mut w = std::fs::File::from(tx);
                    let _ = writeln!(w, "{opened} {held}");
                    // SAFETY: ends the child without running the parent's destructors.
                    unsafe { libc::_exit(0) }
                }
                Ok(ForkResult::Parent { child }) => kids.push(child),
                Err(_) => break,
            }
        }
        drop(tx);
        let mut counts = String::new();
        let _ = std::fs::File::from(rx).read_to_string(&mut counts);
        for k in &kids {
            let _ = nix::sys::wait::waitpid(*k, None);
        }
        let (mut opened, mut held) = (0usize, 0usize);
        for l in counts.lines() {
            let mut it = l.split_whitespace().filter_map(|n| n.parse::<usize>().ok());
            opened += it.next().unwrap_or(0);
            held += it.next().unwrap_or(0);
        }
        // Whether airlock held up is judged from the host (its open files); from here the
        // attack only says what it did and what the gateway kept.
        AttackResult::from_steps(
            self.id(),
            &[Step::failed(
                format!(
                    "{} processes opening {PER_PROC} connections each",
                    kids.len()
                ),
                format!("{opened} opened, {held} held by the gateway after 1 s"),
            )],
        )
    }
}
