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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
/// How long the gateway waits for the upstream resolver, per try (two tries).
pub const DNS_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEAD: usize = 16 * 1024;

/// Most DNS queries over UDP in flight at once (each may hold a socket to the upstream for
/// [`DNS_TIMEOUT`]); more are dropped, as a resolver under a flood does, and recorded. A
/// job's stub resolver asks again.
pub const DNS_IN_FLIGHT: usize = 256;

/// Open files airlock keeps for everything but the gateway's connections (the audit log,
/// the exec listener, the helper, the runtime; under 100 in practice): the headroom
/// [`fd_budget`] asks for.
const FD_RESERVE: u64 = 512;

/// The fewest connections a gateway is worth running with when airlock's open-file limit is
/// too low for the group's `limits.connections`: below it the job is refused.
const MIN_CONNECTIONS: usize = 64;

/// Longest name a record keeps (a host name is at most 253 bytes; anything longer was never
/// one), and longest reason.
const MAX_RECORD_NAME: usize = 253;
const MAX_RECORD_REASON: usize = 512;

/// How long an accept loop waits after the kernel refused an accept (out of open files or
/// memory) before it tries again, instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open files a gateway of `max_connections` may need at most: two per connection (the
/// job's and the upstream), one per DNS query in flight, and airlock's own reserve.
pub fn fd_need(max_connections: usize) -> u64 {
    2 * max_connections as u64 + DNS_IN_FLIGHT as u64 + FD_RESERVE
}

/// Makes sure this process may open the files a gateway needs, and returns how many
/// connections it may hold: raises the soft `RLIMIT_NOFILE` to the hard limit if it has to
/// (what a server does at start). If even the hard limit is too low for `max_connections`,
/// the gateway holds fewer (what fits, said in a warning): stricter for the job, never a
/// gateway that runs airlock out of files. Below [`MIN_CONNECTIONS`] the job is refused.
pub fn fd_budget(max_connections: usize) -> Result<usize, NetError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let need = fd_need(max_connections);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| NetError::Config(format!("reading airlock's open-file limit: {e}")))?;
    if soft >= need {
        return Ok(max_connections);
    }
    let fits = hard.saturating_sub(DNS_IN_FLIGHT as u64 + FD_RESERVE) / 2;
    if fits < MIN_CONNECTIONS as u64 {
        return Err(NetError::Config(format!(
            "airlock's open-file limit (hard {hard}) is too low for its egress gateway: \
             {need} are needed for the group's limits.connections = {max_connections}, and \
             {} for the fewest it runs with ({MIN_CONNECTIONS}); raise airlock's limit \
             (LimitNOFILE= in its systemd unit, `ulimit -Hn`)",
            fd_need(MIN_CONNECTIONS)
        )));
    }
    let raised = hard.min(need);
    setrlimit(Resource::RLIMIT_NOFILE, raised.max(soft), hard).map_err(|e| {
        NetError::Config(format!(
            "raising airlock's open-file limit from {soft} to {raised} for the gateway: {e}"
        ))
    })?;
    if (fits as usize) < max_connections {
        tracing::warn!(
            "the egress gateway holds at most {fits} connections, not the group's \
             limits.connections = {max_connections}: airlock's open-file limit is {hard} (it \
             needs {need}; raise LimitNOFILE= or `ulimit -Hn`)"
        );
        return Ok(fits as usize);
    }
    Ok(max_connections)
}

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
    /// Most connections held open at once (the group's `limits.connections`).
    pub max_connections: usize,
    /// New flows (connections accepted, DNS queries over UDP or TCP: all ports together) taken in
    /// a second, in bursts of up to twice as many (the group's `limits.flow_rate`). The
    /// gateway runs in airlock's process, outside the job's cgroup: without a rate a job could
    /// make it accept, parse and record at line rate on airlock's CPU. Past it nothing is
    /// refused: new flows wait in the kernel (a handshake in the listen backlog, a query in
    /// the socket buffer) until their turn.
    pub flow_rate: u32,
}

struct Ctx {
    cfg: GatewayConfig,
    records: Records,
    /// One permit per connection held open; none left: the next one is closed at once.
    conns: Arc<tokio::sync::Semaphore>,
    /// One permit per DNS query over UDP being answered.
    dns: Arc<tokio::sync::Semaphore>,
    /// New flows taken in per second ([`GatewayConfig::flow_rate`]).
    flows: governor::DefaultDirectRateLimiter,
    /// When the gateway last recorded that it made new flows wait (at most once a second).
    slowed: Mutex<Option<std::time::Instant>>,
    /// Answers the proxies resolved, until their TTL (at most [`CACHE_MAX_TTL`]) runs out.
    cache: Mutex<dns::Cache>,
}

/// Longest time a resolved address is reused by the proxies, whatever the TTL says: short, so
/// a changed record (or a rebinding attempt) is seen again soon.
const CACHE_MAX_TTL: Duration = Duration::from_secs(30);

impl Ctx {
    fn new(cfg: GatewayConfig, records: Records) -> Self {
        Self {
            conns: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1))),
            dns: Arc::new(tokio::sync::Semaphore::new(DNS_IN_FLIGHT)),
            flows: governor::RateLimiter::direct(flows_quota(cfg.flow_rate)),
            slowed: Mutex::new(None),
            cfg,
            records,
            cache: Mutex::default(),
        }
    }

    /// Records what the gateway refused for lack of room, not by the policy: the detectors
    /// of refused egress skip it (the destination was never judged); a flood of them is
    /// aggregated like any other.
    fn record_over_limit(&self, kind: &str, port: u16, dialled: Option<SocketAddr>, what: String) {
        self.record(over_limit(kind, port, dialled, what));
    }

    /// Waits for the turn of the next new flow. Waiting is recorded (over the limit, as
    /// above; at most once a second), so the report says the job was slowed; the wait costs
    /// airlock nothing per flow: the flows wait in the kernel (a connection in the listen
    /// backlog, a query in the socket buffer), not in airlock.
    async fn next_flow(&self, kind: &str, port: u16) {
        if self.flows.check().is_ok() {
            return;
        }
        let say = self.slowed.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        });
        if say {
            // Not a flow of its own: flagged so that no count of queries or connections
            // takes it for one.
            let mut r = over_limit(
                kind,
                port,
                None,
                format!(
                    "new connections and DNS queries slowed to {} a second \
                     (limits.flow_rate)",
                    self.cfg.flow_rate
                ),
            );
            r.flags.push(SLOWED_FLAG.to_owned());
            self.record(r);
        }
        self.flows.until_ready().await;
    }

    fn record(&self, mut r: ConnRecord) {
        // A name or reason can carry what the job sent (an SNI, a request target, up to a
        // whole request head): bounded here, the one way in, so that the records kept whole
        // (up to [`BOOK_RECORDS`]) cost airlock a bounded amount of memory and report.
        if let Some(n) = r.name.as_mut() {
            airlock_text::clamp(n, MAX_RECORD_NAME);
        }
        airlock_text::clamp(&mut r.reason, MAX_RECORD_REASON);
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
    pub fn start(mut cfg: GatewayConfig) -> Result<Self, NetError> {
        cfg.max_connections = fd_budget(cfg.max_connections)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("airlock-gateway")
            .enable_all()
            .build()
            .map_err(NetError::gateway("starting its runtime"))?;
        let records: Records = Arc::default();
        let ctx = Arc::new(Ctx::new(cfg.clone(), records.clone()));
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

/// The flag of a record of something refused for lack of room (connections, DNS queries in
/// flight), not by the policy.
pub const OVER_LIMIT_FLAG: &str = "over-limit";

/// The flag (with [`OVER_LIMIT_FLAG`]) of the record that the gateway slowed the job's new
/// flows to `limits.flow_rate`: it stands for no query or connection of its own.
pub const SLOWED_FLAG: &str = "slowed";

/// A record of something refused for lack of room ([`OVER_LIMIT_FLAG`]): never judged by the
/// policy, so not refused egress.
fn over_limit(kind: &str, port: u16, dialled: Option<SocketAddr>, what: String) -> ConnRecord {
    ConnRecord {
        dialled,
        reason: what,
        allowed_but_failed: true,
        flags: vec![OVER_LIMIT_FLAG.to_owned()],
        ..ConnRecord::new(kind, port)
    }
}

impl Kind {
    /// The record kind and the port the job dialled.
    fn name_port(self) -> (&'static str, u16) {
        match self {
            Kind::DnsTcp => ("dns", 53),
            Kind::Http => ("http", 80),
            Kind::Https => ("https", 443),
            Kind::Connect => ("connect", 3128),
        }
    }
}

/// A gateway's quota of new flows: `rate` a second, bursts of twice as many.
fn flows_quota(rate: u32) -> governor::Quota {
    let n = |v: u32| std::num::NonZeroU32::new(v).unwrap_or(std::num::NonZeroU32::MIN);
    governor::Quota::per_second(n(rate)).allow_burst(n(rate.saturating_mul(2)))
}

async fn accept_loop(ctx: Arc<Ctx>, l: TcpListener, kind: Kind) {
    let (k, port) = kind.name_port();
    loop {
        ctx.next_flow(k, port).await;
        let s = match l.accept().await {
            Ok((s, _peer)) => s,
            Err(e) => {
                // Out of open files or memory (or a connection reset before it was
                // accepted): wait instead of spinning on the error.
                tracing::debug!(job = %ctx.cfg.job, "gateway accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = ctx.conns.clone().try_acquire_owned() else {
            // Over the limit: closed at once, with a reset (no lingering close state kept
            // for a job's flood); nothing of it is read.
            let dialled = http::original_dst(&s);
            let _ = s.set_zero_linger();
            drop(s);
            ctx.record_over_limit(
                k,
                dialled.map_or(port, |d| d.port()),
                dialled,
                format!(
                    "too many connections at once: at most {} (limits.connections)",
                    ctx.cfg.max_connections
                ),
            );
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
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

    /// A gateway's settings on loopback, its pool's leases in `dir`.
    fn config(
        rules: EgressRules,
        upstream: SocketAddr,
        max_connections: usize,
        dir: &std::path::Path,
    ) -> GatewayConfig {
        GatewayConfig {
            job: "j".into(),
            bind: Ipv4Addr::LOCALHOST,
            rules,
            upstream,
            pool: crate::Pool::new("10.213.0.0/16", dir.to_owned()).expect("pool"),
            max_connections,
            flow_rate: airlock_policy::Limits::default().flow_rate,
        }
    }

    fn block(domains: &[&str]) -> EgressRules {
        EgressRules {
            mode: EgressMode::Block,
            domains: domains
                .iter()
                .map(|d| airlock_policy::DomainPattern::parse(d).expect("domain"))
                .collect(),
            allow: vec![],
            resolver: None,
        }
    }

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
        let ctx = Ctx::new(
            config(
                rules,
                SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
                8,
                dir.path(),
            ),
            Arc::default(),
        );
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

    /// Whatever a job sends, what a record keeps of it is bounded: an SNI or request target
    /// of 16 KiB becomes a name of 253 bytes and a reason of 512 (plus the length it had).
    #[test]
    fn a_record_keeps_a_bounded_part_of_what_the_job_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = Ctx::new(
            config(
                block(&[]),
                SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
                8,
                dir.path(),
            ),
            Arc::default(),
        );
        let long = "a".repeat(16 * 1024);
        ctx.record(ConnRecord {
            name: Some(long.clone()),
            reason: format!("malformed CONNECT target {long:?}"),
            ..ConnRecord::new("https", 443)
        });
        let book = std::mem::take(&mut *ctx.records.lock().expect("records"));
        let r = &book.into_records()[0];
        let name = r.name.as_deref().unwrap_or("");
        assert!(
            name.len() < 300 && name.ends_with("…[16384 bytes]"),
            "{name}"
        );
        assert!(
            r.reason.len() < 560 && r.reason.ends_with("bytes]"),
            "{}",
            r.reason
        );
    }

    fn loopback_gateway(
        rules: EgressRules,
        upstream: SocketAddr,
        max: usize,
    ) -> (Gateway, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = Gateway::start(config(rules, upstream, max, dir.path())).expect("gateway");
        (g, dir)
    }

    /// A gateway refusing every name, taking in `rate` new flows a second.
    fn rated_gateway(rate: u32) -> (Gateway, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(
            block(&[]),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
            64,
            dir.path(),
        );
        c.flow_rate = rate;
        (Gateway::start(c).expect("gateway"), dir)
    }

    fn over_limit(records: &[ConnRecord], kind: &str) -> u64 {
        records
            .iter()
            .filter(|r| r.kind == kind && r.flags.iter().any(|f| f == OVER_LIMIT_FLAG))
            .map(|r| r.count)
            .sum()
    }

    /// Whether the gateway still holds a connection: nothing to read within `wait` (it waits
    /// for the request) means open; end of stream or a reset means closed.
    fn held(s: &mut std::net::TcpStream, wait: Duration) -> bool {
        use std::io::Read;
        s.set_read_timeout(Some(wait)).expect("timeout");
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    }

    /// A job that opens connection after connection to its gateway (and never sends a
    /// request) gets `limits.connections` of them held; each one more is reset at once and
    /// recorded as over the limit, not as refused egress. What airlock holds for it stays
    /// bounded, and a freed place is used again. Loopback only, on ports the kernel chose.
    #[test]
    fn connections_beyond_the_limit_are_reset_at_once() {
        let (g, _dir) = loopback_gateway(block(&[]), SocketAddr::from((Ipv4Addr::LOCALHOST, 9)), 8);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, g.ports().http));
        let mut open: Vec<_> = (0..8)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        // Each of the eight is accepted and held (the gateway waits for its request).
        std::thread::sleep(Duration::from_millis(200));
        for (i, s) in open.iter_mut().enumerate() {
            assert!(
                held(s, Duration::from_millis(50)),
                "connection {i} was closed"
            );
        }
        for i in 0..20 {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            assert!(
                !held(&mut s, Duration::from_secs(5)),
                "connection {} beyond the limit was held",
                8 + i
            );
        }
        // A place freed is taken again.
        drop(open.pop());
        let t = std::time::Instant::now();
        let mut again = loop {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            if held(&mut s, Duration::from_millis(100)) {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the freed place was never given again"
            );
        };
        assert!(held(&mut again, Duration::from_millis(50)));
        drop(open);
        drop(again);
        let records = g.stop();
        assert!(over_limit(&records, "http") >= 20, "{records:#?}");
        assert!(
            records
                .iter()
                .filter(|r| r.flags.iter().any(|f| f == OVER_LIMIT_FLAG))
                .all(
                    |r| r.allowed_but_failed && r.reason.contains("at most 8 (limits.connections)")
                ),
            "{records:#?}"
        );
    }

    /// A job that opens and closes connections as fast as it can makes the gateway take in
    /// at most twice `flow_rate` at once and `flow_rate` a second after that (airlock's CPU
    /// is not the job's to spend); the rest wait in the kernel, nothing is refused, and the
    /// slowing is recorded, at most once a second. Loopback only, on ports the kernel chose.
    #[test]
    fn new_flows_are_taken_in_at_the_gateways_rate() {
        // Low, so that even a slow machine's flood outruns it many times over.
        let rate = 20;
        let (g, _dir) = rated_gateway(rate);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, g.ports().http));
        let t = std::time::Instant::now();
        // A fixed number (fewer than the listen backlog holds, so none is refused by the
        // kernel and the backlog drains in seconds), as fast as two threads can.
        let opened: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    sc.spawn(|| {
                        (0..4 * rate)
                            .filter(|_| {
                                std::net::TcpStream::connect_timeout(
                                    &addr,
                                    Duration::from_millis(200),
                                )
                                .is_ok()
                            })
                            .count()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        let flood = t.elapsed();
        // A connection made now is still served (refused by the policy, with an answer), after
        // the flood still waiting in the backlog: slowed, never dropped.
        let answer = {
            use std::io::{Read, Write};
            let mut late = std::net::TcpStream::connect(addr).expect("connect");
            late.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            late.write_all(b"GET / HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n")
                .expect("write");
            let mut b = [0u8; 12];
            let _ = late.read_exact(&mut b);
            String::from_utf8_lossy(&b).into_owned()
        };
        assert_eq!(answer, "HTTP/1.1 403", "the connection after the flood");
        let took = t.elapsed();
        let records = g.stop();
        let taken: u64 = records
            .iter()
            .filter(|r| r.kind == "http" && !r.flags.iter().any(|f| f == OVER_LIMIT_FLAG))
            .map(|r| r.count)
            .sum();
        // (+10: the gateway started a moment before `t`; the late connection.)
        let bound = f64::from(2 * rate) + f64::from(rate) * took.as_secs_f64() + 10.0;
        assert!(
            (taken as f64) <= bound,
            "{taken} connections taken in over {took:?} ({opened} opened): at most {bound}"
        );
        // Said, at most once a second; at least once when the flood outran the rate (a
        // machine too slow to outrun it cannot be asked to see it slowed).
        let slowed: u64 = records
            .iter()
            .filter(|r| r.flags.iter().any(|f| f == SLOWED_FLAG))
            .map(|r| r.count)
            .sum();
        let outran = opened as f64 > f64::from(2 * rate) + f64::from(rate) * flood.as_secs_f64();
        assert!(
            (slowed >= 1 || !outran) && slowed as f64 <= took.as_secs_f64() + 1.0,
            "{opened} opened in {flood:?}, {taken} taken in, slowing said {slowed} times in {took:?}"
        );
    }

    /// DNS queries over TCP are flows too: one connection carrying query after query is held
    /// to the same rate as many connections.
    #[test]
    fn queries_on_one_tcp_connection_are_taken_in_at_the_rate() {
        use std::io::{Read, Write};
        let rate = 100;
        let (g, _dir) = rated_gateway(rate);
        let mut s = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, g.ports().dns_tcp))
            .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut m = hickory_proto::op::Message::new();
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("refused.test.").expect("name"),
            hickory_proto::rr::RecordType::A,
        ));
        let q = m.to_vec().expect("encode");
        let n = 3 * rate as usize;
        let t = std::time::Instant::now();
        let mut wire = Vec::new();
        for _ in 0..n {
            wire.extend_from_slice(&(q.len() as u16).to_be_bytes());
            wire.extend_from_slice(&q);
        }
        s.write_all(&wire).expect("write");
        for i in 0..n {
            let mut len = [0u8; 2];
            s.read_exact(&mut len)
                .unwrap_or_else(|e| panic!("answer {i}: {e}"));
            let mut a = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut a).expect("answer");
        }
        // Twice the rate at once, then the rate: 300 queries take at least one second.
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "{n} answered in {took:?}"
        );
        drop(s);
        let records = g.stop();
        assert!(
            records
                .iter()
                .any(|r| r.flags.iter().any(|f| f == SLOWED_FLAG)),
            "{records:#?}"
        );
    }

    /// A flood of DNS queries for an allowed name whose upstream never answers: at most
    /// [`DNS_IN_FLIGHT`] are waited on at once, the rest are dropped and recorded.
    ///
    /// Judged at the upstream, not by counting drops: each query the gateway forwards holds
    /// its own upstream socket (one source port) for at least twice [`DNS_TIMEOUT`], so the
    /// ports first seen within any window shorter than that were all in flight together. A
    /// loaded machine may deliver the flood slowly or drop some of it in the kernel; neither
    /// can make this fail while the bound holds, and without the bound it fails every time.
    #[test]
    fn dns_queries_in_flight_are_bounded() {
        use std::sync::atomic::{AtomicBool, Ordering};
        // An upstream that takes queries and never answers; it notes when each of the
        // gateway's upstream sockets first asked.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        silent
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let upstream = silent.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let listener = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut first = std::collections::HashMap::new();
                let mut b = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = silent.recv_from(&mut b) {
                        first
                            .entry(from.port())
                            .or_insert_with(std::time::Instant::now);
                    }
                }
                let mut seen: Vec<_> = first.into_values().collect();
                seen.sort();
                seen
            })
        };
        let (g, _dir) = loopback_gateway(block(&["allowed.test"]), upstream, 8);
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, g.ports().dns_udp));
        let c = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut m = hickory_proto::op::Message::new();
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("allowed.test.").expect("name"),
            hickory_proto::rr::RecordType::A,
        ));
        // Twice the bound, then more until one is dropped (the first ones hold their places
        // for seconds): a loaded machine's kernel may drop some of the flood itself.
        let t = std::time::Instant::now();
        let mut sent = 0usize;
        while sent < 2 * DNS_IN_FLIGHT
            || (g.records.lock().map(|b| b.total()).unwrap_or(0) == 0
                && t.elapsed() < Duration::from_secs(3))
        {
            m.set_id(sent as u16);
            c.send_to(&m.to_vec().expect("encode"), to).expect("send");
            sent += 1;
            if sent.is_multiple_of(16) {
                // Paced, so that the kernel's socket buffer drops few of them.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Until the flood has been taken in: nothing new for a while.
        let mut last = (0, std::time::Instant::now());
        while last.1.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(50));
            let n = g.records.lock().map(|b| b.total()).unwrap_or(0);
            if n != last.0 {
                last = (n, std::time::Instant::now());
            }
        }
        stop.store(true, Ordering::Relaxed);
        let seen = listener.join().expect("listener");
        let records = g.stop();
        let window = DNS_TIMEOUT;
        let most = (0..seen.len())
            .map(|i| {
                seen[i..]
                    .iter()
                    .take_while(|t| t.duration_since(seen[i]) < window)
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(
            most <= DNS_IN_FLIGHT,
            "{most} queries were waited on at once (at most {DNS_IN_FLIGHT})"
        );
        let dropped = over_limit(&records, "dns");
        assert!(
            dropped > 0,
            "none of the flood of {sent} was dropped; at most {most} waited on at once"
        );
    }
}
