//! Scenario 3, internal network reconnaissance: a TCP connect scan of the world's internal
//! subnet on common ports, internal DNS names, and a default-credential login. A port counts
//! as open only if the WORLD's banner comes back (airlock's gateway accepts connections on 80
//! and 443 itself, to refuse them with a reason). Harmless: the subnet exists only in the
//! drill's namespaces; every connection is bounded by a short timeout.

use std::io::{Read, Write};
use std::time::Duration;

use super::util::{from_world, http, resolve_step, Step};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::{INTERNAL, INTERNAL_NAME, INTERNAL_NET};

/// Ports tried on every host.
const PORTS: [u16; 8] = [22, 80, 443, 3306, 5432, 6379, 8080, 9200];

/// `recon`: scan, resolve, log in.
pub struct Recon;

fn probe(host: std::net::Ipv4Addr, port: u16) -> bool {
    let a = std::net::SocketAddr::from((host, port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&a, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if port == 80 || port == 8080 {
        let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: scan\r\n\r\n");
    }
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(n) => from_world(&String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

impl Attack for Recon {
    fn id(&self) -> &'static str {
        "recon"
    }
    fn title(&self) -> &'static str {
        "scenario 3: TCP scan of the internal subnet, internal names, default credentials"
    }
    fn category(&self) -> Category {
        Category::Scenario
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::NETWORK_SCAN)
    }
    fn expect_in_audit_mode(&self) -> Expect {
        // Audit mode: the probes of the internal range are routed flows there; the scan is still a scan.
        Expect::Detected(detector::NETWORK_SCAN)
    }
    fn run(&self) -> AttackResult {
        let [a, b, c] = INTERNAL_NET;
        let handles: Vec<_> = (1u8..=16)
            .map(|d| {
                std::thread::spawn(move || {
                    let host = std::net::Ipv4Addr::new(a, b, c, d);
                    PORTS
                        .iter()
                        .filter(|p| probe(host, **p))
                        .map(|p| format!("{host}:{p}"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let open: Vec<String> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        let mut s = vec![if open.is_empty() {
            Step::failed(
                format!("scan {a}.{b}.{c}.1-16 x {} ports", PORTS.len()),
                "nothing open",
            )
        } else {
            Step::ok(
                format!("scan {a}.{b}.{c}.1-16 x {} ports", PORTS.len()),
                format!("open: {}", open.join(" ")),
            )
        }];
        for n in [INTERNAL_NAME, "git.corp.internal", "jenkins.corp.internal"] {
            s.push(resolve_step(n));
        }
        let ip = INTERNAL.to_string();
        // admin:admin, the classic default.
        s.push(Step::from(
            "default credentials admin:admin by IP",
            http(
                &ip,
                80,
                "GET",
                &ip,
                "/login",
                &[("Authorization", "Basic YWRtaW46YWRtaW4=")],
                b"",
            ),
        ));
        s.push(Step::from(
            "default credentials admin:admin by name",
            http(
                INTERNAL_NAME,
                80,
                "GET",
                INTERNAL_NAME,
                "/login",
                &[("Authorization", "Basic YWRtaW46YWRtaW4=")],
                b"",
            ),
        ));
        AttackResult::from_steps(self.id(), &s)
    }
}
