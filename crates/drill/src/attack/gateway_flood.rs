//! Exhaustion of airlock itself: flood the job's egress gateway with connections. The gateway
//! runs in airlock's own process, outside the job's cgroup, so every connection it holds costs
//! airlock an open file and memory, and a job may open pids × nofile of them; out of open
//! files, airlock loses its own records and every other connection of the job. The attack
//! opens connections from several processes to the ports the gateway serves (HTTP, HTTPS,
//! DNS over TCP, CONNECT) and holds them without ever sending a request. Harmless: every one
//! of them goes to the job's own gateway (the world's addresses on those ports are redirected
//! there) and ends with the job.
//!
//! Before that, it churns: DNS queries over UDP and connections opened and closed at once, as
//! fast as it can, so that the gateway would accept, parse and record at line rate on
//! airlock's CPU; and queries for an allowed name whose resolver never answers, each of which
//! the gateway would wait on (a task and a socket) for seconds.
//!
//! From inside, the job cannot see airlock's open files or CPU: the orchestrator counts its
//! open files while the attack runs and judges by the bound the group's `limits.connections`
//! gives ([`airlock_net::gateway::fd_need`]), and counts the flows the gateway took in (its
//! records) against the group's `limits.flow_rate`, and, from the world's resolver, how many
//! of the gateway's queries it waited on at once.

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
/// How long the churn lasts (and then the queries to a resolver that never answers), and how
/// many processes open and close connections (one more sends DNS queries for a refused
/// name).
const CHURN: Duration = Duration::from_secs(2);
const CHURN_PROCS: usize = 2;

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

/// The name the churn asks for: refused by the policy, so the gateway answers it without
/// asking anyone (and records each query as it answers it; the drill judges those records).
pub const CHURN_NAME: &str = "flood.attacker.test";

/// A DNS query (one bare question, type A) for `name`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(40);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root; A, IN
    q
}

/// One churning process: DNS queries over UDP to the resolver for `dns` (a name), or
/// connections to the allowed host opened and closed at once, for [`CHURN`]; returns how many
/// it sent or opened.
fn churn_one(dns: Option<&str>) -> usize {
    let start = std::time::Instant::now();
    let mut n = 0usize;
    if let Some(name) = dns {
        let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0") else {
            return 0;
        };
        let _ = s.set_nonblocking(true);
        let Ok(to) = "198.51.100.53:53".parse::<SocketAddr>() else {
            return 0;
        };
        while start.elapsed() < CHURN {
            for _ in 0..64 {
                if s.send_to(&query(name, n as u16), to).is_ok() {
                    n += 1;
                }
            }
            // Answers are not waited for; read what came so the socket never fills.
            let mut b = [0u8; 512];
            while s.recv_from(&mut b).is_ok() {}
        }
    } else if let Ok(to) = "203.0.113.20:80".parse::<SocketAddr>() {
        while start.elapsed() < CHURN {
            if TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// Runs `f(i)` in `procs` child processes at once; returns the lines they wrote back (in the
/// order they finished) and how many were started.
fn in_children(procs: usize, f: impl Fn(usize) -> String) -> (Vec<String>, usize) {
    use nix::unistd::{fork, pipe, ForkResult};
    let Ok((rx, tx)) = pipe() else {
        return (Vec::new(), 0);
    };
    let mut kids = Vec::new();
    for i in 0..procs {
        // SAFETY: the attack is single-threaded here; the child runs its share and exits.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let line = f(i);
                if let Ok(t) = tx.try_clone() {
                    let _ = writeln!(std::fs::File::from(t), "{line}");
                }
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { child }) => kids.push(child),
            Err(_) => break,
        }
    }
    drop(tx);
    let mut out = String::new();
    let _ = std::fs::File::from(rx).read_to_string(&mut out);
    for k in &kids {
        let _ = nix::sys::wait::waitpid(*k, None);
    }
    (out.lines().map(str::to_owned).collect(), kids.len())
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
        // The churn (one process of queries, the rest connections), then the queries the
        // gateway must wait on: one after the other, because those fill its DNS queries in
        // flight and would crowd out the churn's queries the drill counts.
        let (churned, _) = in_children(CHURN_PROCS + 1, |i| {
            let dns = (i == 0).then_some(CHURN_NAME);
            format!("{} {}", dns.is_some(), churn_one(dns))
        });
        let (silent, _) = in_children(1, |_| {
            churn_one(Some(crate::addrs::SILENT_NAME)).to_string()
        });
        let silent: usize = silent.iter().filter_map(|l| l.parse::<usize>().ok()).sum();
        let (mut queries, mut cycled) = (0usize, 0usize);
        for l in &churned {
            match l
                .split_once(' ')
                .map(|(d, n)| (d, n.parse::<usize>().unwrap_or(0)))
            {
                Some(("true", n)) => queries += n,
                Some((_, n)) => cycled += n,
                None => {}
            }
        }
        let targets = targets();
        let (counts, procs) = in_children(PROCS, |_| {
            let (opened, held) = flood_one(&targets);
            format!("{opened} {held}")
        });
        let (mut opened, mut held) = (0usize, 0usize);
        for l in &counts {
            let mut it = l.split_whitespace().filter_map(|n| n.parse::<usize>().ok());
            opened += it.next().unwrap_or(0);
            held += it.next().unwrap_or(0);
        }
        // Whether airlock held up is judged from the host (its open files, the flows its
        // gateway took in); from here the attack only says what it did and what it saw.
        AttackResult::from_steps(
            self.id(),
            &[
                Step::failed(
                    format!("churn for {}s", CHURN.as_secs()),
                    format!(
                        "{queries} DNS queries sent, {cycled} connections opened and closed, \
                         then {silent} queries to a resolver that never answers"
                    ),
                ),
                Step::failed(
                    format!("{procs} processes opening {PER_PROC} connections each"),
                    format!("{opened} opened, {held} held by the gateway after 1 s"),
                ),
            ],
        )
    }
}
