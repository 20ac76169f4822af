//! The egress gateway of one job: DNS on the job's gateway address, transparent HTTP (Host
//! header) and HTTPS (TLS SNI) proxies, and an explicit CONNECT proxy on port 3128.
//!
//! The gateway decides by name, never by the address a job dialled: it resolves the allowed
//! name itself and connects there, refuses answers inside internal or never-reachable ranges
//! (DNS rebinding) unless the group allows that CIDR:port, and splices bytes without
//! terminating TLS. It runs on the host, so it never dials the host itself — loopback, the
//! host's own interface addresses, the job address pool — whatever the group allows, audit
//! mode included. Every query and connection becomes a [`ConnRecord`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_policy::{EgressMode, EgressRules, Proto};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::firewall::{INTERNAL, NEVER};
use crate::NetError;

/// Names refused whatever the policy says.
pub const NEVER_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata",
    "instance-data.ec2.internal",
];

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEAD: usize = 16 * 1024;

/// One query or connection as the gateway saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnRecord {
    /// Unix time in milliseconds.
    pub time_ms: u128,
    /// The job.
    pub job: String,
    /// `dns`, `http`, `https`, `connect` or `drop` (a packet the firewall dropped).
    pub kind: String,
    /// The name asked for or connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// DNS query type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qtype: Option<String>,
    /// The address the gateway resolved and used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<IpAddr>,
    /// The address the job dialled (transparent proxies; informational only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialled: Option<SocketAddr>,
    /// Destination port.
    pub port: u16,
    /// Bytes from job to destination.
    pub bytes_up: u64,
    /// Bytes from destination to job.
    pub bytes_down: u64,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// `allow` or `deny`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// Detector hints, e.g. `dns-tunnelling-suspect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// How many queries or connections this record stands for: more than 1 for an aggregate
    /// of a flood (then `time_ms` is the first, `last_ms` the last, bytes are summed).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
    /// Unix time in milliseconds of the last event of an aggregate.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_ms: u128,
}

fn one() -> u64 {
    1
}
fn is_one(n: &u64) -> bool {
    *n == 1
}
fn is_zero(n: &u128) -> bool {
    *n == 0
}

impl ConnRecord {
    /// The key records of a flood are aggregated under: kind, verdict and destination.
    pub fn flood_key(&self) -> String {
        let dest = match (&self.name, &self.dialled, &self.resolved) {
            (Some(n), _, _) => n.clone(),
            (None, Some(d), _) => d.ip().to_string(),
            (None, None, Some(r)) => r.to_string(),
            (None, None, None) => String::new(),
        };
        format!("{} {} {dest}:{}", self.kind, self.verdict, self.port)
    }

    /// Folds `other` (same key) into this aggregate.
    pub fn absorb(&mut self, other: ConnRecord) {
        self.count += other.count;
        self.time_ms = self.time_ms.min(other.time_ms);
        self.last_ms = self
            .last_ms
            .max(other.last_ms)
            .max(other.time_ms)
            .max(self.time_ms);
        self.bytes_up = self.bytes_up.saturating_add(other.bytes_up);
        self.bytes_down = self.bytes_down.saturating_add(other.bytes_down);
        self.duration_ms = self.duration_ms.max(other.duration_ms);
        for f in other.flags {
            if !self.flags.contains(&f) && self.flags.len() < 8 {
                self.flags.push(f);
            }
        }
    }
}

/// Records kept whole per job until it ends (the report, the audit log); later ones are
/// aggregated by [`ConnRecord::flood_key`] into at most [`BOOK_KEYS`] records with a count.
/// With the limits of the audit log on top (crates/audit/src/limit.rs), a job that asks a
/// million refused names costs airlock a few MiB, not gigabytes.
pub const BOOK_RECORDS: usize = 20_000;
/// Aggregates kept per job (then one `(other)` aggregate takes the rest).
pub const BOOK_KEYS: usize = 1024;

/// A bounded book of one job's records (see [`BOOK_RECORDS`]).
#[derive(Debug)]
pub struct RecordBook(airlock_audit::limit::Book<ConnRecord>);

impl Default for RecordBook {
    fn default() -> Self {
        Self::new(BOOK_RECORDS, BOOK_KEYS)
    }
}

impl RecordBook {
    /// A book keeping `records` whole and `keys` aggregates.
    pub fn new(records: usize, keys: usize) -> Self {
        Self(airlock_audit::limit::Book::new(records, keys))
    }

    /// Adds one record.
    pub fn add(&mut self, r: ConnRecord) {
        self.0.add(ConnRecord::flood_key, r, ConnRecord::absorb);
    }

    /// Records offered so far.
    pub fn total(&self) -> u64 {
        self.0.total
    }

    /// The kept records, then the aggregates (each with its `count`).
    pub fn into_records(self) -> Vec<ConnRecord> {
        let (mut kept, folded) = self.0.into_parts();
        kept.extend(folded.into_iter().map(|(mut r, n)| {
            if n > 1 && r.last_ms == 0 {
                r.last_ms = r.time_ms;
            }
            r
        }));
        kept
    }
}

impl ConnRecord {
    /// An empty record of `kind` on `port`: verdict `deny` until something allows it; job and
    /// time are filled in when it is recorded.
    pub fn new(kind: &str, port: u16) -> Self {
        Self {
            time_ms: 0,
            job: String::new(),
            kind: kind.into(),
            name: None,
            qtype: None,
            resolved: None,
            dialled: None,
            port,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            verdict: "deny".into(),
            reason: String::new(),
            flags: vec![],
            count: 1,
            last_ms: 0,
        }
    }
}

/// Where records go: a bounded book, whatever the job does.
pub type Records = Arc<Mutex<RecordBook>>;

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

    /// Whether the gateway may connect to `ip:port`: never to never-reachable or host
    /// addresses, to internal ranges only through an allow rule (DNS rebinding guard).
    async fn addr_verdict(&self, ip: Ipv4Addr, port: u16) -> Result<(), String> {
        if in_list(ip, NEVER) {
            return Err(format!("{ip} is never reachable"));
        }
        if let Some(what) = self.host_address(ip).await {
            return Err(format!("{ip} is {what}: never reachable"));
        }
        if in_list(ip, INTERNAL) {
            let allowed = self
                .cfg
                .rules
                .allow
                .iter()
                .any(|r| r.covers(ip, port, Proto::Tcp));
            if !allowed && !self.audit() {
                return Err(format!("{ip} is in an internal range (DNS rebinding?)"));
            }
        }
        Ok(())
    }
}

/// Whether `ip` is never reachable.
pub fn in_never(ip: Ipv4Addr) -> bool {
    in_list(ip, NEVER)
}

/// Whether `ip` falls in one of the CIDRs of `list`.
pub(crate) fn in_list(ip: Ipv4Addr, list: &[&str]) -> bool {
    list.iter().any(|c| {
        let (a, p) = c.split_once('/').unwrap_or((c, "32"));
        let (Ok(a), Ok(p)) = (a.parse::<Ipv4Addr>(), p.parse::<u32>()) else {
            return false;
        };
        in_cidr(ip, a, p)
    })
}

pub(crate) fn in_cidr(ip: Ipv4Addr, net: Ipv4Addr, prefix: u32) -> bool {
    let mask = match prefix {
        0 => 0,
        p => u32::MAX.checked_shl(32 - p.min(32)).unwrap_or(0),
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// How long the host's interface addresses are reused before they are read again.
const HOST_ADDRS_TTL: Duration = Duration::from_secs(2);

/// The host's IPv4 interface addresses, read over netlink at most every [`HOST_ADDRS_TTL`]
/// (shared by every gateway of the process: they all run in the host's namespace).
static HOST_ADDRS: Mutex<Option<(Instant, Arc<Vec<Ipv4Addr>>)>> = Mutex::new(None);

/// The host's addresses; after a failed read the last list read, if there is one.
async fn host_addrs() -> Result<Arc<Vec<Ipv4Addr>>, String> {
    if let Ok(c) = HOST_ADDRS.lock() {
        if let Some((at, v)) = c.as_ref() {
            if at.elapsed() < HOST_ADDRS_TTL {
                return Ok(v.clone());
            }
        }
    }
    let v = match read_host_addrs().await {
        Ok(v) => Arc::new(v),
        Err(e) => {
            tracing::warn!("reading the host's addresses: {e}");
            return HOST_ADDRS
                .lock()
                .ok()
                .and_then(|c| c.as_ref().map(|(_, v)| v.clone()))
                .ok_or(e);
        }
    };
    if let Ok(mut c) = HOST_ADDRS.lock() {
        *c = Some((Instant::now(), v.clone()));
    }
    Ok(v)
}

async fn read_host_addrs() -> Result<Vec<Ipv4Addr>, String> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::address::AddressAttribute;
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let mut out = Vec::new();
    let mut addrs = handle.address().get().execute();
    let r = loop {
        match addrs.try_next().await {
            Ok(Some(m)) => {
                for a in m.attributes {
                    if let AddressAttribute::Address(IpAddr::V4(ip))
                    | AddressAttribute::Local(IpAddr::V4(ip)) = a
                    {
                        if !out.contains(&ip) {
                            out.push(ip);
                        }
                    }
                }
            }
            Ok(None) => break Ok(out),
            Err(e) => break Err(e.to_string()),
        }
    };
    conn.abort();
    r
}

/// Shannon entropy, in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Flags a name that looks like data smuggled through DNS: very long, a very long label, or a
/// long label of high entropy.
pub fn tunnelling_suspect(name: &str) -> bool {
    let n = name.trim_end_matches('.');
    n.len() > 120
        || n.split('.')
            .any(|l| l.len() > 52 || (l.len() >= 24 && entropy(l) > 3.8))
}

/// A running gateway.
pub struct Gateway {
    records: Records,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Binds every socket (so a failure stops the job before it starts) and serves in a thread
    /// of its own.
    pub fn start(cfg: GatewayConfig) -> Result<Self, NetError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("airlock-gateway")
            .enable_all()
            .build()
            .map_err(|e| NetError::Gateway(format!("runtime: {e}")))?;
        let records: Records = Arc::default();
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            records: records.clone(),
            cache: Mutex::default(),
        });
        let bind = |port| SocketAddr::V4(SocketAddrV4::new(cfg.bind, port));
        let (udp, dns_tcp, http, https, connect) = rt
            .block_on(async {
                Ok::<_, std::io::Error>((
                    UdpSocket::bind(bind(53)).await?,
                    TcpListener::bind(bind(53)).await?,
                    TcpListener::bind(bind(80)).await?,
                    TcpListener::bind(bind(443)).await?,
                    TcpListener::bind(bind(3128)).await?,
                ))
            })
            .map_err(|e| NetError::Gateway(format!("binding the gateway on {}: {e}", cfg.bind)))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("airlock-gateway".into())
            .spawn(move || {
                rt.block_on(async move {
                    let udp = Arc::new(udp);
                    tokio::spawn(serve_dns_udp(ctx.clone(), udp));
                    tokio::spawn(accept_loop(ctx.clone(), dns_tcp, Kind::DnsTcp));
                    tokio::spawn(accept_loop(ctx.clone(), http, Kind::Http));
                    tokio::spawn(accept_loop(ctx.clone(), https, Kind::Https));
                    tokio::spawn(accept_loop(ctx.clone(), connect, Kind::Connect));
                    let _ = rx.await;
                });
                // Open connections are cut with the job; nothing waits for them.
                rt.shutdown_background();
            })
            .map_err(|e| NetError::Gateway(format!("gateway thread: {e}")))?;
        Ok(Self {
            records,
            stop: Some(tx),
            thread: Some(thread),
        })
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
                Kind::DnsTcp => dns_tcp(ctx, s).await,
                Kind::Http => http(ctx, s).await,
                Kind::Https => https(ctx, s).await,
                Kind::Connect => connect(ctx, s).await,
            }
        });
    }
}

// ---------- DNS ----------

async fn serve_dns_udp(ctx: Arc<Ctx>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let q = buf[..n].to_vec();
        let ctx = ctx.clone();
        let sock = sock.clone();
        tokio::spawn(async move {
            if let Some(resp) = answer(&ctx, &q).await {
                let _ = sock.send_to(&resp, peer).await;
            }
        });
    }
}

async fn dns_tcp(ctx: Arc<Ctx>, mut s: TcpStream) {
    loop {
        let mut len = [0u8; 2];
        if tokio::time::timeout(IO_TIMEOUT, s.read_exact(&mut len))
            .await
            .is_err()
        {
            return;
        }
        let n = usize::from(u16::from_be_bytes(len));
        let mut q = vec![0u8; n];
        match tokio::time::timeout(IO_TIMEOUT, s.read_exact(&mut q)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(resp) = answer(&ctx, &q).await else {
            return;
        };
        let Ok(l) = u16::try_from(resp.len()) else {
            return;
        };
        if s.write_all(&l.to_be_bytes()).await.is_err() || s.write_all(&resp).await.is_err() {
            return;
        }
    }
}

fn reply(q: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    m.add_queries(q.queries().to_vec());
    m.to_vec().ok()
}

fn dns_record(
    name: &str,
    qtype: RecordType,
    verdict: &str,
    reason: &str,
    resolved: Option<IpAddr>,
) -> ConnRecord {
    let mut flags = vec![];
    if tunnelling_suspect(name) {
        flags.push("dns-tunnelling-suspect".to_owned());
    }
    ConnRecord {
        name: Some(name.to_owned()),
        qtype: Some(qtype.to_string()),
        resolved,
        verdict: verdict.into(),
        reason: reason.into(),
        flags,
        ..ConnRecord::new("dns", 53)
    }
}

/// Answers one DNS query (wire format), or `None` to stay silent on garbage.
async fn answer(ctx: &Ctx, raw: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(raw).ok()?;
    if q.message_type() != MessageType::Query || q.op_code() != OpCode::Query {
        return reply(&q, ResponseCode::NotImp);
    }
    let Some(query) = q.queries().first() else {
        return reply(&q, ResponseCode::FormErr);
    };
    let name = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let qtype = query.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::ANY) {
        ctx.record(dns_record(
            &name,
            qtype,
            "deny",
            "zone transfers and ANY are refused",
            None,
        ));
        return reply(&q, ResponseCode::Refused);
    }
    if let Err(reason) = ctx.name_verdict(&name) {
        ctx.record(dns_record(&name, qtype, "deny", &reason, None));
        return reply(&q, ResponseCode::NXDomain);
    }
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        ctx.record(dns_record(
            &name,
            qtype,
            "deny",
            "only A and AAAA are answered",
            None,
        ));
        return reply(&q, ResponseCode::Refused);
    }
    if qtype == RecordType::AAAA {
        // IPv6 is disabled inside jobs: an empty answer makes clients use IPv4 at once.
        ctx.record(dns_record(
            &name,
            qtype,
            "allow",
            "no IPv6 in jobs: empty answer",
            None,
        ));
        return reply(&q, ResponseCode::NoError);
    }
    match upstream_query(ctx.cfg.upstream, raw).await {
        Ok(resp) => {
            let parsed = Message::from_vec(&resp).ok();
            let addrs: Vec<Ipv4Addr> = parsed
                .as_ref()
                .map(|m| {
                    m.answers()
                        .iter()
                        .filter_map(|r| match r.data() {
                            RData::A(a) => Some(a.0),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(bad) = addrs.iter().find(|a| in_list(**a, NEVER)) {
                ctx.record(dns_record(
                    &name,
                    qtype,
                    "deny",
                    &format!("resolves to {bad}: never reachable"),
                    Some(IpAddr::V4(*bad)),
                ));
                return reply(&q, ResponseCode::NXDomain);
            }
            for a in &addrs {
                if let Some(what) = ctx.host_address(*a).await {
                    ctx.record(dns_record(
                        &name,
                        qtype,
                        "deny",
                        &format!("resolves to {a}, {what}: never reachable"),
                        Some(IpAddr::V4(*a)),
                    ));
                    return reply(&q, ResponseCode::NXDomain);
                }
            }
            ctx.record(dns_record(
                &name,
                qtype,
                "allow",
                "allow-listed",
                addrs.first().map(|a| IpAddr::V4(*a)),
            ));
            Some(resp)
        }
        Err(e) => {
            ctx.record(dns_record(
                &name,
                qtype,
                "deny",
                &format!("upstream resolver failed: {e}"),
                None,
            ));
            reply(&q, ResponseCode::ServFail)
        }
    }
}

async fn upstream_query(upstream: SocketAddr, raw: &[u8]) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| "bad local address".to_owned())?;
    let s = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    s.connect(upstream).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        s.send(raw).await.map_err(|e| e.to_string())?;
        if let Ok(Ok(n)) = tokio::time::timeout(DNS_TIMEOUT, s.recv(&mut buf)).await {
            buf.truncate(n);
            return Ok(buf);
        }
    }
    Err(format!("no answer from {upstream}"))
}

/// Resolves through the cache of the proxies.
async fn resolve_cached(ctx: &Ctx, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let key = name.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(c) = ctx.cache.lock() {
        if let Some((until, v)) = c.get(&key) {
            if Instant::now() < *until {
                return Ok(v.clone());
            }
        }
    }
    let (v, ttl) = resolve(ctx.cfg.upstream, &key).await?;
    if let Ok(mut c) = ctx.cache.lock() {
        c.insert(key, (Instant::now() + ttl.min(CACHE_MAX_TTL), v.clone()));
    }
    Ok(v)
}

/// Resolves `name` to IPv4 addresses through the upstream resolver; also returns the smallest
/// TTL of the answers.
async fn resolve(upstream: SocketAddr, name: &str) -> Result<(Vec<Ipv4Addr>, Duration), String> {
    let n =
        Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).map_err(|e| e.to_string())?;
    let mut m = Message::new();
    m.set_id(rand_id()).set_recursion_desired(true);
    m.add_query(Query::query(n, RecordType::A));
    let raw = m.to_vec().map_err(|e| e.to_string())?;
    let resp =
        Message::from_vec(&upstream_query(upstream, &raw).await?).map_err(|e| e.to_string())?;
    if resp.id() != m.id() {
        return Err("answer id mismatch".into());
    }
    let v: Vec<Ipv4Addr> = resp
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    let ttl = resp.answers().iter().map(|r| r.ttl()).min().unwrap_or(0);
    if v.is_empty() {
        Err(format!(
            "{name} has no IPv4 address ({})",
            resp.response_code()
        ))
    } else {
        Ok((v, Duration::from_secs(u64::from(ttl))))
    }
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: the buffer is valid for 2 bytes.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 2, 0) };
    u16::from_ne_bytes(b)
}

// ---------- HTTP, HTTPS, CONNECT ----------

/// The destination the job dialled, before the redirect (conntrack's SO_ORIGINAL_DST).
fn original_dst(s: &TcpStream) -> Option<SocketAddr> {
    use std::os::fd::AsRawFd;
    // SAFETY: sockaddr_in is plain data, zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `addr`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            80, // SO_ORIGINAL_DST
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    (r == 0).then(|| {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u16::from_be(addr.sin_port),
        ))
    })
}

fn conn_record(
    kind: &str,
    name: Option<String>,
    port: u16,
    dialled: Option<SocketAddr>,
) -> ConnRecord {
    ConnRecord {
        name,
        dialled,
        ..ConnRecord::new(kind, port)
    }
}

/// Reads until `done(buf)` says a complete head is there, within limits.
async fn read_head(s: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + IO_TIMEOUT;
    while !done(&buf) {
        if buf.len() >= MAX_HEAD {
            return None;
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        let n = tokio::time::timeout(left, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

/// Resolves, checks and connects; on success splices and fills the record. A refusal is
/// recorded and, for plain HTTP (`http_errors`), explained to the client with a 403.
#[allow(clippy::too_many_arguments)]
async fn forward(
    ctx: &Ctx,
    mut rec: ConnRecord,
    client: TcpStream,
    name: &str,
    port: u16,
    first: &[u8],
    started: Instant,
    http_errors: bool,
) {
    let refuse = |rec: ConnRecord, client: TcpStream| async move {
        let msg = format!("{name}: {}", rec.reason);
        ctx.record(rec);
        if http_errors {
            deny_http(client, &msg).await;
        }
    };
    let addrs = match resolve_cached(ctx, name).await {
        Ok(a) => a,
        Err(e) => {
            rec.reason = format!("cannot resolve: {e}");
            return refuse(rec, client).await;
        }
    };
    let mut chosen = None;
    for a in &addrs {
        match ctx.addr_verdict(*a, port).await {
            Ok(()) => {
                chosen = Some(*a);
                break;
            }
            Err(reason) => rec.reason = reason,
        }
    }
    let Some(ip) = chosen else {
        rec.resolved = addrs.first().map(|a| IpAddr::V4(*a));
        return refuse(rec, client).await;
    };
    rec.resolved = Some(IpAddr::V4(ip));
    let mut upstream = match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect((ip, port))).await
    {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            rec.reason = format!("connect {ip}:{port}: {e}");
            return refuse(rec, client).await;
        }
        Err(_) => {
            rec.reason = format!("connect {ip}:{port}: timed out");
            return refuse(rec, client).await;
        }
    };
    if !first.is_empty() && upstream.write_all(first).await.is_err() {
        rec.reason = "upstream closed".into();
        return refuse(rec, client).await;
    }
    rec.verdict = "allow".into();
    rec.reason = if ctx.audit() {
        "audit mode".into()
    } else {
        "allow-listed".into()
    };
    let mut client = client;
    // 64 KiB buffers: the default 8 KiB costs a third of bulk throughput.
    let (up, down) =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 1 << 16, 1 << 16)
            .await
            .unwrap_or((0, 0));
    rec.bytes_up = up + first.len() as u64;
    rec.bytes_down = down;
    rec.duration_ms = started.elapsed().as_millis() as u64;
    ctx.record(rec);
}

fn host_of(head: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))?;
    let host = std::str::from_utf8(host.value).ok()?.trim();
    // Strip a port; IPv6 literals are not served.
    let name = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    Some(name.to_ascii_lowercase())
}

async fn deny_http(mut s: TcpStream, msg: &str) {
    let body = format!("airlock: {msg}\n");
    let resp = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn http(ctx: Arc<Ctx>, mut s: TcpStream) {
    let started = Instant::now();
    let dialled = original_dst(&s);
    let port = dialled.map_or(80, |d| d.port());
    let Some(head) = read_head(&mut s, |b| b.windows(4).any(|w| w == b"\r\n\r\n")).await else {
        let mut r = conn_record("http", None, port, dialled);
        r.reason = "no complete request head".into();
        ctx.record(r);
        return;
    };
    let name = host_of(&head);
    let mut rec = conn_record("http", name.clone(), port, dialled);
    let Some(name) = name else {
        rec.reason = "no Host header".into();
        ctx.record(rec);
        return deny_http(s, "requests need a Host header").await;
    };
    if let Err(reason) = ctx.name_verdict(&name) {
        rec.reason = reason.clone();
        ctx.record(rec);
        return deny_http(s, &format!("{name}: {reason}")).await;
    }
    forward(&ctx, rec, s, &name, port, &head, started, true).await;
}

/// The SNI of a TLS ClientHello, if the buffer holds a complete one.
pub fn sni_of(buf: &[u8]) -> Option<String> {
    use tls_parser::{
        parse_tls_extensions, parse_tls_plaintext, TlsExtension, TlsMessage, TlsMessageHandshake,
    };
    let (_, rec) = parse_tls_plaintext(buf).ok()?;
    for m in rec.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = m {
            let (_, exts) = parse_tls_extensions(ch.ext?).ok()?;
            for e in exts {
                if let TlsExtension::SNI(names) = e {
                    for (_, n) in names {
                        if let Ok(s) = std::str::from_utf8(n) {
                            return Some(s.to_ascii_lowercase());
                        }
                    }
                }
            }
        }
    }
    None
}

fn tls_record_complete(b: &[u8]) -> bool {
    b.len() >= 5 && b.len() >= 5 + usize::from(u16::from_be_bytes([b[3], b[4]]))
}

async fn https(ctx: Arc<Ctx>, mut s: TcpStream) {
    let started = Instant::now();
    let dialled = original_dst(&s);
    let port = dialled.map_or(443, |d| d.port());
    let Some(hello) = read_head(&mut s, tls_record_complete).await else {
        let mut r = conn_record("https", None, port, dialled);
        r.reason = "no complete TLS ClientHello".into();
        ctx.record(r);
        return;
    };
    let name = sni_of(&hello);
    let mut rec = conn_record("https", name.clone(), port, dialled);
    let Some(name) = name else {
        rec.reason = "no SNI in the ClientHello".into();
        ctx.record(rec);
        return;
    };
    if let Err(reason) = ctx.name_verdict(&name) {
        rec.reason = reason;
        ctx.record(rec);
        return;
    }
    forward(&ctx, rec, s, &name, port, &hello, started, false).await;
}

async fn connect(ctx: Arc<Ctx>, mut s: TcpStream) {
    let started = Instant::now();
    let Some(head) = read_head(&mut s, |b| b.windows(4).any(|w| w == b"\r\n\r\n")).await else {
        return;
    };
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return deny_http(s, "bad request").await;
    };
    let (host, port) = match target.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((h, Ok(p))) => (h.to_ascii_lowercase(), p),
        _ => return deny_http(s, "CONNECT needs host:port").await,
    };
    let mut rec = conn_record("connect", Some(host.clone()), port, None);
    if !method.eq_ignore_ascii_case("CONNECT") {
        rec.reason = format!("method {method} on the CONNECT proxy");
        ctx.record(rec);
        return deny_http(s, "only CONNECT is served here").await;
    }
    if port != 443 && port != 80 && !ctx.audit() {
        rec.reason = format!("port {port} is not proxied (80 and 443 only)");
        ctx.record(rec);
        return deny_http(s, "only ports 80 and 443").await;
    }
    if let Err(reason) = ctx.name_verdict(&host) {
        rec.reason = reason.clone();
        ctx.record(rec);
        return deny_http(s, &format!("{host}: {reason}")).await;
    }
    if s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    forward(&ctx, rec, s, &host, port, &[], started, false).await;
}

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
    fn internal_and_never_lists_match() {
        assert!(in_list("169.254.169.254".parse().expect("ip"), NEVER));
        assert!(in_list("10.9.8.7".parse().expect("ip"), INTERNAL));
        assert!(in_list("100.64.1.1".parse().expect("ip"), INTERNAL));
        assert!(!in_list("198.51.100.10".parse().expect("ip"), INTERNAL));
    }

    #[test]
    fn cidrs_match() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert!(in_cidr(ip("10.213.7.2"), ip("10.213.0.0"), 16));
        assert!(!in_cidr(ip("10.214.0.1"), ip("10.213.0.0"), 16));
        assert!(in_cidr(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        assert!(in_cidr(ip("1.2.3.4"), ip("1.2.3.4"), 32));
        assert!(!in_cidr(ip("1.2.3.5"), ip("1.2.3.4"), 32));
    }

    #[test]
    fn host_header_is_read_without_port() {
        let h = b"GET / HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n";
        assert_eq!(host_of(h).as_deref(), Some("example.com"));
        assert_eq!(host_of(b"GET / HTTP/1.1\r\n\r\n"), None);
    }
}
