//! Lateral movement between jobs: a job attacks a SIBLING job running at the same time on the
//! same host (same group, same policy). The drill starts the victim ([`SiblingVictim`]) in a
//! second sandbox before the attack and stops it afterwards; the attacker is told nothing
//! about it and finds it the way a real attacker would:
//!
//! 1. its own address and gateway, from `/proc/net/route` (or `/etc/resolv.conf`) and the
//!    socket address the kernel picks towards the gateway;
//! 2. a TCP connect sweep of the /24 its address is in, every other /30 block (airlock gives
//!    each job one): the block's `.1`, a job gateway, on the gateway's ports (DNS, HTTP, HTTPS,
//!    the CONNECT proxy) and its `.2`, a job, on common service ports; an HTTP `CONNECT`
//!    through any neighbour proxy that accepts;
//! 3. a UDP DNS query to every neighbour gateway, compared with its own gateway's answer.
//!
//! It succeeds if any connection to another block's address is accepted, a neighbour's proxy
//! says 200, or a neighbour's DNS answer differs from its own gateway's (the firewall sends
//! DNS to any address to the job's own gateway, so an identical answer proves nothing either
//! way; the victim gateway's own records decide). Harmless: the victim is the drill's own
//! listener, every address lies in the drill's private namespaces, each probe is bounded
//! (500 ms) and the sweep is a few hundred connects.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::Message;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::util::Step;
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::{ALLOWED_NAME, VICTIM_PORTS};

/// A job gateway's ports (airlock_net::firewall::GATEWAY_TCP_PORTS).
pub const GATEWAY_PORTS: [u16; 4] = [53, 80, 443, 3128];
/// Ports tried on every neighbour job address.
pub const JOB_PORTS: [u16; 7] = [22, 80, 2222, 3306, 5432, 7777, 8080];
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Probes in flight at once.
const PARALLEL: usize = 128;

/// The orchestrator's liveness check: `CHECK <nonce>` on a victim port is answered `ALIVE`.
pub const VICTIM_CHECK: &str = "DRILL-VICTIM-CHECK";
/// The victim's answer to a check.
pub const VICTIM_ALIVE: &str = "DRILL-VICTIM-ALIVE";
/// `STOP <nonce>`: the victim prints its record and exits.
pub const VICTIM_STOP: &str = "DRILL-VICTIM-STOP";
/// What the victim answers anyone else (so an attacker that got through sees it did).
pub const VICTIM_BANNER: &str = "DRILL-VICTIM";

/// `sibling-job`: find and attack another job.
pub struct SiblingJob;
/// `sibling-victim` (helper): the job the drill runs next to `sibling-job`.
pub struct SiblingVictim;

/// The victim's first line: where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VictimReady {
    /// Its job address.
    pub victim_address: Ipv4Addr,
    /// Its gateway (the nameserver of its resolv.conf).
    pub gateway: Ipv4Addr,
    /// The ports it listens on (all addresses).
    pub ports: Vec<u16>,
}

/// One connection the victim accepted from someone who did not know the drill's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intrusion {
    /// Who connected.
    pub peer: SocketAddr,
    /// On which port.
    pub port: u16,
    /// The first bytes it sent (lossy UTF-8, at most 128).
    pub first_bytes: String,
}

/// The victim's last line: what it saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VictimLog {
    /// Ports on which the orchestrator's liveness checks arrived, one entry per check.
    pub checks: Vec<u16>,
    /// Every other accepted connection.
    pub intrusions: Vec<Intrusion>,
}

/// The job's gateway: the default route of `/proc/net/route`, else the resolv.conf nameserver.
pub fn own_gateway() -> Option<Ipv4Addr> {
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let from_route = route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) != Some(&"00000000") {
            return None;
        }
        // The kernel prints the big-endian address as a host-order number.
        let v = u32::from_str_radix(f.get(2)?, 16).ok()?;
        Some(Ipv4Addr::from(v.to_ne_bytes())).filter(|a| !a.is_unspecified())
    });
    from_route.or_else(|| {
        std::fs::read_to_string("/etc/resolv.conf")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("nameserver")?.trim().parse().ok())
    })
}

/// The job's own address: the source the kernel picks towards `gateway` (a UDP "connect"
/// sends nothing).
pub fn own_address(gateway: Ipv4Addr) -> Option<Ipv4Addr> {
    let u = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    u.connect((gateway, 9)).ok()?;
    match u.local_addr().ok()? {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(_) => None,
    }
}

/// The /30 blocks of the /24 around `me`, except `me`'s own: (gateway, job) addresses.
pub fn neighbours(me: Ipv4Addr) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let me = u32::from(me);
    let base = me & 0xffff_ff00;
    (0..64u32)
        .map(|i| base + i * 4)
        .filter(|b| *b != me & !3)
        .map(|b| (Ipv4Addr::from(b + 1), Ipv4Addr::from(b + 2)))
        .collect()
}

#[derive(Debug)]
enum Probe {
    Accepted(String),
    Refused,
    TimedOut,
}

async fn tcp_probe(addr: SocketAddrV4, connect_to: Option<Ipv4Addr>) -> Probe {
    let s = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await;
    let mut s = match s {
        Err(_) => return Probe::TimedOut,
        Ok(Err(_)) => return Probe::Refused,
        Ok(Ok(s)) => s,
    };
    if let Some(target) = connect_to {
        let req = format!("CONNECT {target}:7777 HTTP/1.1\r\nHost: {target}:7777\r\n\r\n");
        let _ = s.write_all(req.as_bytes()).await;
    }
    let mut buf = [0u8; 128];
    let n = tokio::time::timeout(PROBE_TIMEOUT, s.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let said = String::from_utf8_lossy(&buf[..n]);
    Probe::Accepted(said.lines().next().unwrap_or("").to_owned())
}

/// The answer of `server` to an A query for the allowed name: `rcode answers`, or `None`.
async fn dns_probe(server: Ipv4Addr, id: u16) -> Option<String> {
    let raw = super::util::dns_a_query(id, &format!("{ALLOWED_NAME}."))?;
    let u = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    u.send_to(&raw, (server, 53)).await.ok()?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(PROBE_TIMEOUT, u.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    let answers: Vec<String> = m.answers().iter().map(|r| r.data().to_string()).collect();
    Some(format!("{} {}", m.response_code(), answers.join(",")))
}

async fn sweep(me: Ipv4Addr, gw: Ipv4Addr) -> Vec<Step> {
    let blocks = neighbours(me);
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for (g, j) in &blocks {
        let targets = GATEWAY_PORTS
            .iter()
            .map(|p| (*g, *p, (*p == 3128).then_some(*j)))
            .chain(JOB_PORTS.iter().map(|p| (*j, *p, None)));
        for (ip, port, connect_to) in targets {
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let a = SocketAddrV4::new(ip, port);
                (a, tcp_probe(a, connect_to).await)
            });
        }
    }
    let (mut refused, mut timed_out, mut open) = (0usize, 0usize, Vec::new());
    let total = set.len();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((a, Probe::Accepted(said))) => open.push(format!("{a} said {said:?}")),
            Ok((_, Probe::Refused)) => refused += 1,
            Ok((_, Probe::TimedOut)) => timed_out += 1,
            Err(_) => {}
        }
    }
    let net = Ipv4Addr::from(u32::from(me) & 0xffff_ff00);
    let what = format!(
        "TCP sweep of {net}/24 from {me} ({} other /30 blocks, {total} probes: .1 x {GATEWAY_PORTS:?} incl. CONNECT, .2 x {JOB_PORTS:?})",
        blocks.len()
    );
    let mut steps = vec![if open.is_empty() {
        Step::failed(
            what,
            format!("nothing accepted ({refused} refused, {timed_out} timed out)"),
        )
    } else {
        open.sort();
        Step::ok(what, format!("ACCEPTED: {}", open.join(" | ")))
    }];

    // DNS: the own gateway's answer first (three tries), then every neighbour gateway's.
    let mut own = None;
    for id in 1..=3 {
        own = dns_probe(gw, id).await;
        if own.is_some() {
            break;
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, (g, _)) in blocks.iter().enumerate() {
        let g = *g;
        let id = 100 + u16::try_from(i).unwrap_or(0);
        set.spawn(async move { (g, dns_probe(g, id).await) });
    }
    let (mut same, mut silent, mut different) = (0usize, 0usize, Vec::new());
    while let Some(r) = set.join_next().await {
        match r {
            Ok((_, None)) => silent += 1,
            Ok((_, Some(a))) if Some(&a) == own.as_ref() => same += 1,
            Ok((g, Some(a))) => different.push(format!("{g} answered {a:?}")),
            Err(_) => {}
        }
    }
    let what = format!(
        "DNS {ALLOWED_NAME} A to {} neighbour gateways (own gateway {gw} answered {})",
        blocks.len(),
        own.as_deref().unwrap_or("nothing")
    );
    steps.push(if different.is_empty() {
        Step::failed(
            what,
            format!(
                "{same} answers identical to the own gateway's (redirected to it), {silent} silent"
            ),
        )
    } else {
        Step::ok(
            what,
            format!("ANSWERED DIFFERENTLY: {}", different.join(" | ")),
        )
    });
    steps
}

impl Attack for SiblingJob {
    fn id(&self) -> &'static str {
        "sibling-job"
    }
    fn title(&self) -> &'static str {
        "lateral movement: sweep the job pool for a sibling job, its gateway, DNS and CONNECT proxy"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::NETWORK_SCAN)
    }
    fn victim(&self) -> Option<&'static str> {
        Some("sibling-victim")
    }
    fn run(&self) -> AttackResult {
        let Some(gw) = own_gateway() else {
            return AttackResult::from_steps(
                self.id(),
                &[Step::failed(
                    "find own gateway",
                    "no default route, no nameserver",
                )],
            );
        };
        let Some(me) = own_address(gw) else {
            return AttackResult::from_steps(
                self.id(),
                &[Step::failed(
                    "find own address",
                    format!("no route to {gw}"),
                )],
            );
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                return AttackResult::from_steps(
                    self.id(),
                    &[Step::failed("start a runtime", e.to_string())],
                )
            }
        };
        let steps = rt.block_on(sweep(me, gw));
        AttackResult::from_steps(self.id(), &steps)
    }
}

/// The victim side of the drill's protocol (see `crate::victim`): listens on every victim
/// port, answers the orchestrator's checks, records every other connection, prints the
/// [`VictimReady`] line. Returns the log and a receiver that gets the orchestrator's STOP.
/// Shared by every helper the drill runs as a victim.
#[allow(clippy::type_complexity)]
pub(crate) fn listen_as_victim(
    nonce: &str,
) -> Result<(Arc<Mutex<VictimLog>>, mpsc::Receiver<()>), (String, String)> {
    let gateway = own_gateway().ok_or_else(|| {
        (
            "find own gateway".to_owned(),
            "no default route, no nameserver".to_owned(),
        )
    })?;
    let victim_address = own_address(gateway).ok_or_else(|| {
        (
            "find own address".to_owned(),
            format!("no route to {gateway}"),
        )
    })?;
    let mut listeners = Vec::new();
    for p in VICTIM_PORTS {
        match TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)) {
            Ok(l) => listeners.push((p, l)),
            Err(e) => return Err((format!("listen on :{p}"), e.to_string())),
        }
    }
    let log = Arc::new(Mutex::new(VictimLog::default()));
    let (stop_tx, stop_rx) = mpsc::channel();
    for (port, l) in listeners {
        let (log, stop_tx, nonce) = (log.clone(), stop_tx.clone(), nonce.to_owned());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (log, stop_tx, nonce) = (log.clone(), stop_tx.clone(), nonce.clone());
                std::thread::spawn(move || serve(s, port, &nonce, &log, &stop_tx));
            }
        });
    }
    let ready = VictimReady {
        victim_address,
        gateway,
        ports: VICTIM_PORTS.to_vec(),
    };
    let line = serde_json::to_string(&ready)
        .map_err(|e| ("print the ready line".to_owned(), e.to_string()))?;
    println!("{line}");
    let _ = std::io::stdout().flush();
    Ok((log, stop_rx))
}

/// The late variable a primed victim's nonce arrives in (`airlock run --late-env`).
pub const LATE_NONCE: &str = "AIRLOCK_DRILL_NONCE";

/// A helper the drill runs as a victim (`airlock-attack ID NONCE`): listens as a victim until
/// the orchestrator's STOP (at most 300 s). Returns the log and whether STOP came, or the
/// failed result to print.
pub(crate) fn victim_until_stopped(
    id: &str,
) -> Result<(Arc<Mutex<VictimLog>>, bool), AttackResult> {
    let fail = |what: &str, how: String| AttackResult::from_steps(id, &[Step::failed(what, how)]);
    // A primed victim gets its nonce only when it starts, in its late environment.
    let Some(nonce) = std::env::args()
        .nth(2)
        .or_else(|| std::env::var(LATE_NONCE).ok())
        .filter(|n| n.len() >= 16)
    else {
        return Err(fail(
            "read the nonce",
            format!("usage: airlock-attack {id} NONCE"),
        ));
    };
    let (log, stop_rx) = listen_as_victim(&nonce).map_err(|(what, how)| fail(&what, how))?;
    let stopped = stop_rx.recv_timeout(Duration::from_secs(300)).is_ok();
    Ok((log, stopped))
}

/// Prints the victim's log line (what the orchestrator reads) and returns it.
pub(crate) fn print_victim_log(log: &Mutex<VictimLog>) -> VictimLog {
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    if let Ok(l) = serde_json::to_string(&log) {
        println!("{l}");
    }
    log
}

/// Handles one connection to the victim: the orchestrator's check or stop (with the nonce), or
/// an intrusion.
fn serve(
    mut s: TcpStream,
    port: u16,
    nonce: &str,
    log: &Mutex<VictimLog>,
    stop: &mpsc::Sender<()>,
) {
    let peer = s
        .peer_addr()
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 128];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let said = String::from_utf8_lossy(&buf[..n]).into_owned();
    let line = said.lines().next().unwrap_or("").trim();
    let Ok(mut l) = log.lock() else { return };
    if line == format!("{VICTIM_CHECK} {nonce}") {
        l.checks.push(port);
        drop(l);
        let _ = s.write_all(format!("{VICTIM_ALIVE} {port}\n").as_bytes());
    } else if line == format!("{VICTIM_STOP} {nonce}") {
        drop(l);
        let _ = stop.send(());
    } else {
        if l.intrusions.len() < 1000 {
            l.intrusions.push(Intrusion {
                peer,
                port,
                first_bytes: said,
            });
        }
        drop(l);
        let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let _ = s.write_all(format!("{VICTIM_BANNER} {local}\n").as_bytes());
    }
}

impl Attack for SiblingVictim {
    fn id(&self) -> &'static str {
        "sibling-victim"
    }
    fn title(&self) -> &'static str {
        "the sibling job's victim: listens and records who connects (run by the drill)"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn helper_only(&self) -> bool {
        true
    }
    /// `airlock-attack sibling-victim NONCE`: prints [`VictimReady`], serves until the
    /// orchestrator's `STOP NONCE` (or 5 minutes), prints [`VictimLog`], then its result:
    /// "succeeded" = someone without the nonce connected.
    fn run(&self) -> AttackResult {
        let (log, stopped) = match victim_until_stopped(self.id()) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let log = print_victim_log(&log);
        let mut steps = vec![Step::failed(
            "stopped by the drill",
            if stopped {
                "yes"
            } else {
                "no: gave up after 300 s"
            },
        )];
        steps.push(Step::failed(
            "liveness checks answered",
            format!("{} on ports {:?}", log.checks.len(), log.checks),
        ));
        steps.push(if log.intrusions.is_empty() {
            Step::failed("connections from anyone else", "none")
        } else {
            Step::ok(
                "connections from anyone else",
                log.intrusions
                    .iter()
                    .map(|i| format!("{} -> :{}", i.peer, i.port))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        });
        AttackResult::from_steps(self.id(), &steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_the_other_blocks_of_the_24() {
        let n = neighbours(Ipv4Addr::new(10, 213, 0, 22));
        assert_eq!(n.len(), 63);
        assert_eq!(
            n[0],
            (Ipv4Addr::new(10, 213, 0, 1), Ipv4Addr::new(10, 213, 0, 2))
        );
        assert!(!n.contains(&(Ipv4Addr::new(10, 213, 0, 21), Ipv4Addr::new(10, 213, 0, 22))));
        assert_eq!(
            n[62],
            (
                Ipv4Addr::new(10, 213, 0, 253),
                Ipv4Addr::new(10, 213, 0, 254)
            )
        );
    }

    #[test]
    fn the_victims_lines_round_trip() {
        let r = VictimReady {
            victim_address: Ipv4Addr::new(10, 213, 0, 6),
            gateway: Ipv4Addr::new(10, 213, 0, 5),
            ports: VICTIM_PORTS.to_vec(),
        };
        let line = serde_json::to_string(&r).expect("json");
        assert_eq!(
            serde_json::from_str::<VictimReady>(&line).expect("parse"),
            r
        );
        // The log is not mistaken for the ready line, nor for an attack result.
        let log = serde_json::to_string(&VictimLog::default()).expect("json");
        assert!(serde_json::from_str::<VictimReady>(&log).is_err());
        assert!(serde_json::from_str::<AttackResult>(&log).is_err());
    }
}
