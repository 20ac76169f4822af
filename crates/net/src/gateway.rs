//! The egress gateway of one job: DNS on the job's gateway address, transparent HTTP (Host
//! header) and HTTPS (TLS SNI) proxies, and an explicit CONNECT proxy on port 3128.
//!
//! The gateway decides by name, never by the address a job dialled: it resolves the allowed
//! name itself and connects there, refuses answers inside internal or never-reachable ranges
//! (DNS rebinding) unless the group allows that CIDR:port, and splices bytes without
//! terminating TLS. It runs on the host, so it never dials the host itself — loopback, the
//! host's own interface addresses, the job address pool — whatever the group allows, audit
//! mode included. Every query and connection becomes a [`ConnRecord`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_policy::{EgressMode, EgressRules, Proto};
use tokio::net::{TcpListener, UdpSocket};

use airlock_policy::endpoints::{in_list, is_never, INTERNAL};

pub use crate::records::{RecordBook, Records, BOOK_KEYS, BOOK_RECORDS};
use crate::NetError;

/// Records live in the audit crate, which owns every record type a job produces (the job
/// report, read back by serve and the drill, holds them too).
pub use airlock_audit::ConnRecord;

mod dns;
mod hosts;
mod http;
mod tunnel;

use dns::resolve_cached;
use hosts::host_addrs;
pub use http::sni_of;
pub use tunnel::tunnelling_suspect;

/// Names refused whatever the policy says: the metadata services' (one table for the
/// firewall, the gateway and the detector).
pub use airlock_policy::endpoints::METADATA_NAMES as NEVER_NAMES;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEAD: usize = 16 * 1024;

/// What the gateway of one job needs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The job id (for records).
    pub job: String,
    /// The job's gateway address (host side of its veth).
    pub bind: Ipv4Addr,
    /// The group's egress rules.
    pub rules: EgressRules,
    /// The upstream resolver.
    pub upstream: SocketAddr,
    /// The job address pool: other jobs and their gateways, never dialled for a job.
    pub pool: crate::Pool,
}

struct Ctx {
    cfg: GatewayConfig,
    records: Records,
    /// Answers the proxies resolved, until their TTL (at most [`CACHE_MAX_TTL`]) runs out.
    cache: Mutex<std::collections::HashMap<String, (Instant, Vec<Ipv4Addr>)>>,
}

/// Longest time a resolved address is reused by the proxies, whatever the TTL says: short, so
/// a changed record (or a rebinding attempt) is seen again soon.
const CACHE_MAX_TTL: Duration = Duration::from_secs(30);

impl Ctx {
    fn record(&self, mut r: ConnRecord) {
        r.job.clone_from(&self.cfg.job);
        r.time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        tracing::debug!(job = %r.job, kind = %r.kind, name = ?r.name, verdict = %r.verdict, reason = %r.reason);
        if let Ok(mut v) = self.records.lock() {
            v.add(r);
        }
    }

    fn audit(&self) -> bool {
        self.cfg.rules.mode == EgressMode::Audit
    }

    /// Whether a name may be used: never-names never; in audit mode anything else.
    fn name_verdict(&self, name: &str) -> Result<(), String> {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        if NEVER_NAMES.iter().any(|x| *x == n) {
            return Err("never reachable (cloud metadata)".into());
        }
        if self.audit() || self.cfg.rules.allows_name(&n) {
            Ok(())
        } else {
            Err("name not in the group's allow-list".into())
        }
    }

    /// Which kind of host address `ip` is, if it is one: loopback and `0.0.0.0/8` ("this
    /// host"), the job pool (other jobs, every job's gateway), the host's interface
    /// addresses. The gateway runs on the host: dialled from here, they would reach the
    /// host's own services.
    async fn host_address(&self, ip: Ipv4Addr) -> Option<String> {
        if ip.is_loopback() || ip.octets()[0] == 0 {
            return Some("a host address (loopback)".into());
        }
        if self.cfg.pool.contains(ip) {
            return Some(format!(
                "a host address (in the job address pool {})",
                self.cfg.pool
            ));
        }
        match host_addrs().await {
            Ok(v) if v.contains(&ip) => Some("a host address (an interface of the host)".into()),
            Ok(_) => None,
            // Fail closed: without the list, any address might be the host's.
            Err(e) => Some(format!(
                "perhaps a host address (the host's addresses cannot be read: {e})"
            )),
        }
    }

    /// Whether the gateway may connect to `ip:port` (`port` `None`: whether a DNS answer may
    /// hold `ip`): never to never-reachable or host addresses, to internal ranges only through
    /// an allow rule, on any of its ports for a DNS answer (DNS rebinding guard).
    async fn addr_verdict(&self, ip: Ipv4Addr, port: Option<u16>) -> Result<(), String> {
        if is_never(ip) {
            return Err(format!("{ip} is never reachable"));
        }
        if let Some(what) = self.host_address(ip).await {
            return Err(format!("{ip} is {what}: never reachable"));
        }
        if in_list(ip, INTERNAL) {
            let allowed = self.cfg.rules.allow.iter().any(|r| match port {
                Some(p) => r.covers(ip, p, Proto::Tcp),
                None => r.covers(ip, r.port, r.proto),
            });
            if !allowed && !self.audit() {
                return Err(format!("{ip} is in an internal range (DNS rebinding?)"));
            }
        }
        Ok(())
    }
}

/// Where a job's gateway listens: for each service port a job dials (UDP 53, TCP 53, 80,
/// 443, 3128), the port its gateway bound on the job's gateway address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayPorts {
    /// DNS over UDP.
    pub dns_udp: u16,
    /// DNS over TCP.
    pub dns_tcp: u16,
    /// Transparent HTTP.
    pub http: u16,
    /// Transparent HTTPS.
    pub https: u16,
    /// The CONNECT proxy.
    pub connect: u16,
}

impl GatewayPorts {
    /// (protocol number, service port, gateway port) of each service.
    pub fn entries(&self) -> [(u8, u16, u16); 5] {
        [
            (17, 53, self.dns_udp),
            (6, 53, self.dns_tcp),
            (6, 80, self.http),
            (6, 443, self.https),
            (6, 3128, self.connect),
        ]
    }
}

/// A running gateway.
pub struct Gateway {
    records: Records,
    ports: GatewayPorts,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Binds every socket (so a failure stops the job before it starts) and serves in a thread
    /// of its own. The sockets are bound on ports the kernel picks on the job's gateway
    /// address, never on the ports a job dials (a host service on 0.0.0.0 of those would make
    /// the bind fail): the firewall redirects the job's ports to [`Gateway::ports`].
    pub fn start(cfg: GatewayConfig) -> Result<Self, NetError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("airlock-gateway")
            .enable_all()
            .build()
            .map_err(NetError::gateway("starting its runtime"))?;
        let records: Records = Arc::default();
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            records: records.clone(),
            cache: Mutex::default(),
        });
        let any = SocketAddr::V4(SocketAddrV4::new(cfg.bind, 0));
        let bound = rt.block_on(async {
            let udp = UdpSocket::bind(any).await?;
            let tcp = [
                TcpListener::bind(any).await?,
                TcpListener::bind(any).await?,
                TcpListener::bind(any).await?,
                TcpListener::bind(any).await?,
            ];
            let port = |a: std::io::Result<SocketAddr>| a.map(|a| a.port());
            let ports = GatewayPorts {
                dns_udp: port(udp.local_addr())?,
                dns_tcp: port(tcp[0].local_addr())?,
                http: port(tcp[1].local_addr())?,
                https: port(tcp[2].local_addr())?,
                connect: port(tcp[3].local_addr())?,
            };
            Ok::<_, std::io::Error>((udp, tcp, ports))
        });
        let (udp, [dns_tcp, http, https, connect], ports) =
            bound.map_err(NetError::gateway(format!("binding on {}", cfg.bind)))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("airlock-gateway".into())
            .spawn(move || {
                rt.block_on(async move {
                    let udp = Arc::new(udp);
                    tokio::spawn(dns::serve_udp(ctx.clone(), udp));
                    tokio::spawn(accept_loop(ctx.clone(), dns_tcp, Kind::DnsTcp));
                    tokio::spawn(accept_loop(ctx.clone(), http, Kind::Http));
                    tokio::spawn(accept_loop(ctx.clone(), https, Kind::Https));
                    tokio::spawn(accept_loop(ctx.clone(), connect, Kind::Connect));
                    let _ = rx.await;
                });
                // Open connections are cut with the job; nothing waits for them.
                rt.shutdown_background();
            })
            .map_err(NetError::gateway("starting its thread"))?;
        Ok(Self {
            records,
            ports,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Where it listens, for the firewall's redirects.
    pub fn ports(&self) -> GatewayPorts {
        self.ports
    }

    /// Stops serving and returns its records: every one up to [`BOOK_RECORDS`], then
    /// aggregates with their counts.
    pub fn stop(mut self) -> Vec<ConnRecord> {
        self.shutdown();
        self.records
            .lock()
            .map(|mut v| std::mem::take(&mut *v).into_records())
            .unwrap_or_default()
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Clone, Copy)]
enum Kind {
    DnsTcp,
    Http,
    Https,
    Connect,
}

async fn accept_loop(ctx: Arc<Ctx>, l: TcpListener, kind: Kind) {
    loop {
        let Ok((s, _peer)) = l.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match kind {
                Kind::DnsTcp => dns::serve_tcp(&ctx, s).await,
                Kind::Http => http::http(&ctx, s).await,
                Kind::Https => http::https(&ctx, s).await,
                Kind::Connect => http::connect(&ctx, s).await,
            }
        });
    }
}

// ---------- DNS, HTTP, HTTPS, CONNECT: see the submodules ----------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnelling_names_are_flagged() {
        assert!(!tunnelling_suspect("registry.npmjs.org"));
        assert!(!tunnelling_suspect(
            "pipelines.actions.githubusercontent.com"
        ));
        assert!(tunnelling_suspect(
            "mzxw6ytboi4dsnzqgeztcmjsgq2tsnzugy3dsmbvgu4tmnrxg4ytq.evil.example"
        ));
        assert!(tunnelling_suspect(&format!(
            "{}.evil.example",
            "a1b2c3d4e5f6".repeat(5)
        )));
    }

    #[test]
    fn every_metadata_name_is_refused_even_in_audit_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = EgressRules {
            mode: EgressMode::Audit,
            domains: Vec::new(),
            allow: Vec::new(),
            resolver: None,
        };
        let ctx = Ctx {
            cfg: GatewayConfig {
                job: "j".into(),
                bind: Ipv4Addr::LOCALHOST,
                rules,
                upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
                pool: crate::Pool::new("10.213.0.0/16", dir.path().to_owned()).expect("pool"),
            },
            records: Arc::default(),
            cache: Mutex::default(),
        };
        // The gateway and the detector read one table: the names the detector alerts on are
        // exactly the ones the gateway refuses (they disagreed before: metadata.goog).
        for n in airlock_policy::endpoints::METADATA_NAMES {
            assert!(ctx.name_verdict(n).is_err(), "{n}");
            assert!(
                ctx.name_verdict(&format!("{}.", n.to_uppercase())).is_err(),
                "{n}"
            );
        }
        assert!(
            ctx.name_verdict("example.com").is_ok(),
            "audit mode lets others through"
        );
    }
}
