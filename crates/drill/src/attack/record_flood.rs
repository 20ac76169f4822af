//! Exhaustion of airlock itself: flood its records. Every denied syscall, DNS query, dropped
//! packet and file becomes a record; a job that makes hundreds of thousands of them would,
//! if airlock kept or wrote each one, exhaust the host's memory or disk outside the job's own
//! limits (issue 15). The attack calls the denied `acct(0)` in a loop, asks refused DNS
//! names, sends packets to a non-allowed address, leaves thousands of files and sends TLS
//! ClientHellos whose SNI is 15,000 bytes long, each for a bounded time. Harmless: every call is refused, every packet goes to an address inside the
//! drill's sealed world, the files are in the job's own discarded layer.
//!
//! From inside, the job cannot see whether airlock held: the orchestrator judges it by the
//! job's records in the audit log (bounded: [`RECORD_BOUND`]) and the `record-flood` alert.

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// The job's records in the audit log must stay below this (the built-in bounds let each key
/// write its burst and then 20 a second, and aggregate the rest).
pub const RECORD_BOUND: u64 = 15_000;

/// How long each flood runs.
const FLOOD_MS: u64 = 1500;

/// `record-flood`: flood airlock's records (denied syscalls, DNS, drops, files).
pub struct RecordFlood;

fn resolver() -> Option<std::net::SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .find_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, 53))
}

fn until(ms: u64) -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_millis(ms)
}

impl Attack for RecordFlood {
    fn id(&self) -> &'static str {
        "record-flood"
    }
    fn title(&self) -> &'static str {
        "flood airlock's own records (denied syscalls, DNS, drops, files)"
    }
    fn category(&self) -> Category {
        Category::Exhaustion
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(super::detector::RECORD_FLOOD)
    }
    fn record_bound(&self) -> Option<u64> {
        Some(RECORD_BOUND)
    }
    fn run(&self) -> AttackResult {
        let mut steps = Vec::new();
        // 1. A denied syscall in a loop.
        let (end, mut calls) = (until(FLOOD_MS), 0u64);
        while std::time::Instant::now() < end {
            for _ in 0..64 {
                // SAFETY: acct(NULL) only turns accounting off; seccomp refuses it anyway.
                unsafe { libc::syscall(libc::SYS_acct, 0) };
                calls += 1;
            }
        }
        steps.push(Step::failed("acct(0) flood", format!("{calls} calls")));
        // 2. Refused DNS names, and 3. packets to a non-allowed address of the world.
        let (mut queries, mut packets) = (0u64, 0u64);
        match (resolver(), std::net::UdpSocket::bind("0.0.0.0:0")) {
            (Some(to), Ok(sock)) => {
                let _ = sock.set_read_timeout(Some(std::time::Duration::from_millis(100)));
                let mut buf = [0u8; 512];
                let end = until(FLOOD_MS);
                while std::time::Instant::now() < end {
                    let name = format!("n{}.flood.invalid", queries % 8);
                    let Some(q) = super::util::dns_a_query(queries as u16, &name) else {
                        break;
                    };
                    if sock.send_to(&q, to).is_ok() {
                        queries += 1;
                        let _ = sock.recv(&mut buf);
                    }
                }
                // The world's internal host, on ports nothing listens on: denied, dropped by
                // the firewall, each new port a new flow and a record.
                let end = until(FLOOD_MS / 3);
                let mut port = 20_000u16;
                while std::time::Instant::now() < end {
                    let dst = std::net::SocketAddr::from(([192, 168, 77, 10], port));
                    if sock.send_to(b"x", dst).is_ok() {
                        packets += 1;
                    }
                    port = if port >= 60_000 { 20_000 } else { port + 1 };
                }
            }
            _ => steps.push(Step::failed("dns flood", "no resolver or socket")),
        }
        steps.push(Step::failed(
            "dns + packet flood",
            format!("{queries} queries, {packets} packets"),
        ));
        // 4. Files: thousands in the job's own layer.
        let mut files = 0u64;
        let dir = std::path::Path::new("/tmp/record-flood");
        if std::fs::create_dir_all(dir).is_ok() {
            let end = until(FLOOD_MS);
            while files < 20_000 && std::time::Instant::now() < end {
                if std::fs::File::create(dir.join(format!("f{files:06}"))).is_err() {
                    break;
                }
                files += 1;
            }
        }
        steps.push(Step::failed("file flood", format!("{files} files")));
        // 5. Long names: TLS ClientHellos whose SNI is 15,000 bytes, each a new one, to the
        // gateway (refused: not allowed). A record that kept whatever the job sent would
        // make each of them a 15 kB record kept whole.
        let (end, mut hellos) = (until(FLOOD_MS), 0u64);
        let pad = "x".repeat(15_000);
        while std::time::Instant::now() < end {
            let Ok(mut s) = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([203, 0, 113, 7], 443)),
                std::time::Duration::from_millis(500),
            ) else {
                break;
            };
            let sni = format!("h{hellos}.{pad}");
            if std::io::Write::write_all(&mut s, &super::util::client_hello(Some(&sni))).is_ok() {
                hellos += 1;
            }
            let mut b = [0u8; 16];
            let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(200)));
            let _ = std::io::Read::read(&mut s, &mut b);
        }
        steps.push(Step::failed(
            "long-name flood",
            format!("{hellos} ClientHellos with a 15,000-byte SNI"),
        ));
        // Whether airlock held is judged outside (the audit log and the alert).
        AttackResult::from_steps(self.id(), &steps)
    }
}
