//! The drill's sealed world: the "outside" of the sandboxes, built in a network namespace of
//! its own behind one veth, holding every host an attack may try to reach:
//!
//! | address | what |
//! |---|---|
//! | 203.0.113.7 | the attacker: HTTP :80, TLS :443, DNS :53, TCP :4444 and the other raw ports |
//! | 203.0.113.8 | the attacker's DoH endpoint (:443) |
//! | 203.0.113.20 | `allowed.drill.test`, the one allowed host |
//! | 198.51.100.53 | the upstream resolver of the drill's policy (UDP :53) |
//! | 169.254.169.254, 168.63.129.16 | a fake cloud metadata service returning a fake secret |
//! | 192.168.77.10 | an internal host (:22, :80, :5432, …) |
//!
//! Every address listens on every port in [`crate::addrs::TCP_PORTS`], 80 and 443, so a
//! connection that gets through always lands somewhere and is recorded: the world's
//! [`Hit`]s are the ground truth for "did it get through".
//!
//! The world's namespace is anonymous: it is owned by one thread, which creates it with
//! `unshare(CLONE_NEWNET)`; when that thread ends, the kernel destroys the namespace and the
//! veth pair with it. Nothing is ever named in `/run/netns`, so nothing can be left behind,
//! even if the drill is killed with SIGKILL.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::addrs::*;

/// The world's interface name on the drill's side.
pub const DRILL_LINK: &str = "drw0";

/// Errors building the world.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// A command (`ip …`) failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed.
        stderr: String,
    },
    /// Setting up the world's thread or sockets failed.
    #[error("starting the drill's world: {0}")]
    Start(String),
    /// The world is up but does not answer as it should.
    #[error("the drill's world does not answer: {0}")]
    SelfCheck(String),
}

/// One recorded contact with the world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    /// Milliseconds since the epoch.
    pub time_ms: u128,
    /// `tcp`, `http`, `tls` or `dns`; `victim` and `victim-gateway` for the records of a
    /// sibling-job victim (a connection it accepted, a request its gateway served).
    pub service: String,
    /// The world address and port that was reached.
    pub local: SocketAddr,
    /// Who reached it.
    pub peer: SocketAddr,
    /// Host/path, SNI, query name, …
    pub detail: String,
}

impl Hit {
    /// Whether the policy of the drill allows this contact: the allowed host for its own name
    /// (an HTTP request or TLS SNI naming another host there is domain fronting), and the
    /// resolver's answers about the names the drill allows, asked one bare question at a
    /// time (anything more in a query reached the resolver on the job's behalf).
    pub fn allowed(&self) -> bool {
        let is = |n: &str, want: &str| {
            n.trim_end_matches('.')
                .eq_ignore_ascii_case(want.trim_end_matches('.'))
        };
        if self.local.ip() == IpAddr::V4(ALLOWED) {
            return match self.service.as_str() {
                "http" => self
                    .detail
                    .split_whitespace()
                    .nth(1)
                    .and_then(|h| h.strip_prefix("host="))
                    .map(|h| match h.rsplit_once(':') {
                        Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => n,
                        _ => h,
                    })
                    .is_some_and(|h| is(h, ALLOWED_NAME)),
                // A connection that carried nothing (a gateway that connected, then refused
                // what the client sent) reached no one.
                "tls" => {
                    self.detail == "not TLS (0 bytes)"
                        || self
                            .detail
                            .strip_prefix("sni=")
                            .is_some_and(|h| is(h, ALLOWED_NAME))
                }
                _ => true,
            };
        }
        self.service == "dns"
            && !self.detail.contains(SMUGGLED_TAG)
            && self
                .detail
                .split_whitespace()
                .next()
                .is_some_and(|n| POLICY_NAMES.iter().any(|p| is(n, p)))
    }
}

impl std::fmt::Display for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} from {}: {}",
            self.service, self.local, self.peer, self.detail
        )
    }
}

type Hits = Arc<Mutex<Vec<Hit>>>;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn record(hits: &Hits, service: &str, local: SocketAddr, peer: SocketAddr, detail: String) {
    if let Ok(mut h) = hits.lock() {
        h.push(Hit {
            time_ms: now_ms(),
            service: service.into(),
            local,
            peer,
            detail,
        });
    }
}

/// Runs `ip ARGS` in the calling thread's network namespace.
pub fn ip(args: &[&str]) -> Result<(), WorldError> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| WorldError::Command {
            cmd: format!("ip {}", args.join(" ")),
            stderr: e.to_string(),
        })?;
    if o.status.success() {
        Ok(())
    } else {
        Err(WorldError::Command {
            cmd: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        })
    }
}

/// The running world. Dropping it stops the servers and destroys the namespace.
pub struct World {
    hits: Hits,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl World {
    /// Builds the world behind the CALLING THREAD's network namespace (which must be the
    /// drill's private one: see [`crate::enter_private_netns`]): a new namespace owned by a
    /// new thread, a veth pair into it, the addresses, routes and servers.
    pub fn start() -> Result<World, WorldError> {
        let hits: Hits = Arc::new(Mutex::new(Vec::new()));
        // The thread that calls us is in the drill's namespace; its tid names that namespace
        // for `ip link … netns TID` (a thread id, not the process id: the process's main
        // thread may be elsewhere, e.g. in a test harness).
        let drill_tid = nix::unistd::gettid().as_raw();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let h = hits.clone();
        let thread = std::thread::Builder::new()
            .name("drill-world".into())
            .spawn(move || world_thread(drill_tid, h, ready_tx, stop_rx))
            .map_err(|e| WorldError::Start(e.to_string()))?;
        let mut world = World {
            hits,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(WorldError::Start(e)),
            Err(e) => return Err(WorldError::Start(format!("world thread: {e}"))),
        }
        let link = format!("{LINK_DRILL}/24");
        ip(&["addr", "add", &link, "dev", DRILL_LINK])?;
        ip(&["link", "set", DRILL_LINK, "up"])?;
        ip(&["route", "add", "default", "via", &LINK_OUTSIDE.to_string()])?;
        world.self_check()?;
        Ok(world)
    }

    /// How many hits so far.
    pub fn hit_count(&self) -> usize {
        self.hits.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// The hits from index `from` on.
    pub fn hits_since(&self, from: usize) -> Vec<Hit> {
        self.hits
            .lock()
            .map(|h| h.get(from..).map(<[Hit]>::to_vec).unwrap_or_default())
            .unwrap_or_default()
    }

    /// From the drill's namespace: the resolver answers the allowed name and the allowed host
    /// answers HTTP. Proves the world is wired before any sandbox runs.
    pub fn self_check(&mut self) -> Result<(), WorldError> {
        use std::io::{Read, Write};
        let mut q = Message::new();
        q.set_id(0x0d71).set_recursion_desired(true);
        let name = hickory_proto::rr::Name::from_ascii(format!("{ALLOWED_NAME}."))
            .map_err(|e| WorldError::SelfCheck(e.to_string()))?;
        q.add_query(hickory_proto::op::Query::query(name, RecordType::A));
        let raw = q
            .to_vec()
            .map_err(|e| WorldError::SelfCheck(e.to_string()))?;
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")
            .map_err(|e| WorldError::SelfCheck(e.to_string()))?;
        let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 512];
        let mut answered = None;
        for _ in 0..5 {
            let _ = sock.send_to(&raw, (RESOLVER, 53));
            if let Ok(n) = sock.recv(&mut buf) {
                answered = Message::from_vec(&buf[..n]).ok();
                break;
            }
        }
        let got = answered
            .and_then(|m| {
                m.answers().iter().find_map(|r| match r.data() {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
            })
            .ok_or_else(|| WorldError::SelfCheck(format!("resolver {RESOLVER} did not answer")))?;
        if got != ALLOWED {
            return Err(WorldError::SelfCheck(format!(
                "resolver answered {got} for {ALLOWED_NAME}"
            )));
        }
        let mut s = std::net::TcpStream::connect_timeout(
            &SocketAddr::from((ALLOWED, 80)),
            Duration::from_secs(3),
        )
        .map_err(|e| WorldError::SelfCheck(format!("connect {ALLOWED}:80: {e}")))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        s.write_all(format!("GET / HTTP/1.0\r\nHost: {ALLOWED_NAME}\r\n\r\n").as_bytes())
            .map_err(|e| WorldError::SelfCheck(e.to_string()))?;
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        if !resp.contains(WORLD_MARKER) {
            return Err(WorldError::SelfCheck(format!(
                "{ALLOWED}:80 answered {resp:?}"
            )));
        }
        Ok(())
    }

    /// Stops the servers and waits for the world's thread; the kernel then destroys the
    /// namespace and the veth pair.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn world_thread(
    drill_tid: i32,
    hits: Hits,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let setup = || -> Result<tokio::runtime::Runtime, String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
        let e = |e: WorldError| e.to_string();
        ip(&["link", "set", "lo", "up"]).map_err(e)?;
        ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            DRILL_LINK,
            "netns",
            &drill_tid.to_string(),
        ])
        .map_err(e)?;
        ip(&["addr", "add", &format!("{LINK_OUTSIDE}/24"), "dev", "eth0"]).map_err(e)?;
        for a in [
            ATTACKER,
            DOH,
            ALLOWED,
            RESOLVER,
            METADATA,
            AZURE_WIRESERVER,
            INTERNAL,
        ] {
            ip(&["addr", "add", &format!("{a}/32"), "dev", "eth0"]).map_err(e)?;
        }
        ip(&["link", "set", "eth0", "up"]).map_err(e)?;
        ip(&["route", "add", "default", "via", &LINK_DRILL.to_string()]).map_err(e)?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    };
    let rt = match setup() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        match bind_all(&hits).await {
            Ok(tasks) => {
                let _ = ready.send(Ok(()));
                let _ = stop.await;
                for t in tasks {
                    t.abort();
                }
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    });
}

async fn bind_all(hits: &Hits) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    let any = Ipv4Addr::UNSPECIFIED;
    let l = TcpListener::bind((any, 80))
        .await
        .map_err(|e| format!("bind :80: {e}"))?;
    tasks.push(tokio::spawn(accept_loop(l, hits.clone(), Service::Http)));
    let l = TcpListener::bind((any, 443))
        .await
        .map_err(|e| format!("bind :443: {e}"))?;
    tasks.push(tokio::spawn(accept_loop(l, hits.clone(), Service::Tls)));
    for p in TCP_PORTS {
        let l = TcpListener::bind((any, p))
            .await
            .map_err(|e| format!("bind :{p}: {e}"))?;
        tasks.push(tokio::spawn(accept_loop(l, hits.clone(), Service::Banner)));
    }
    for a in [RESOLVER, ATTACKER] {
        let u = UdpSocket::bind((a, 53))
            .await
            .map_err(|e| format!("bind {a}:53/udp: {e}"))?;
        tasks.push(tokio::spawn(dns_loop(u, hits.clone())));
    }
    Ok(tasks)
}

#[derive(Clone, Copy)]
enum Service {
    Http,
    Tls,
    Banner,
}

async fn accept_loop(l: TcpListener, hits: Hits, svc: Service) {
    loop {
        let Ok((s, peer)) = l.accept().await else {
            continue;
        };
        let hits = hits.clone();
        tokio::spawn(async move {
            let local = s
                .local_addr()
                .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
            let (name, r) = match svc {
                // Each request is recorded as it comes.
                Service::Http => return serve_http(s, local, peer, &hits).await,
                Service::Tls => ("tls", serve_tls(s, local).await),
                Service::Banner => ("tcp", serve_banner(s, local).await),
            };
            record(&hits, name, local, peer, r);
        });
    }
}

/// Reads until `done(buf)` or 2 s or 16 KiB.
async fn read_until(s: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut buf = Vec::new();
    read_until_into(s, &mut buf, done).await;
    buf
}

/// Reads into `buf` until `done(buf)` or 2 s or 16 KiB; false if the stream ended (or timed
/// out) before.
async fn read_until_into(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while buf.len() < 16 * 1024 && !done(buf) {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
    true
}

/// A lenient HTTP/1.x server, the kind domain fronting and request smuggling abuse: it keeps
/// HTTP/1.1 connections alive and answers every request on them, reads a chunked body whatever
/// else the head says, and ignores a Content-Length on GET and HEAD (those bytes are read as
/// the next request). Each request is recorded with the Host it named.
async fn serve_http(mut s: TcpStream, local: SocketAddr, peer: SocketAddr, hits: &Hits) {
    let mut buf = Vec::new();
    loop {
        let more =
            read_until_into(&mut s, &mut buf, |b| b.windows(4).any(|w| w == b"\r\n\r\n")).await;
        if buf.is_empty() {
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let (n, detail, keep, body) = match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                };
                // Every host a server could take the request for: the absolute-form
                // target's (it overrides Host), then each Host header.
                let mut hosts: Vec<String> = req
                    .path
                    .and_then(|p| {
                        let p = p.to_ascii_lowercase();
                        let rest = p.strip_prefix("http://").or(p.strip_prefix("https://"))?;
                        rest.split(['/', '?', '#']).next().map(str::to_owned)
                    })
                    .into_iter()
                    .collect();
                hosts.extend(
                    req.headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case("host"))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase()),
                );
                hosts.dedup();
                let host = hosts.join(",");
                let method = req.method.unwrap_or("?");
                let body = if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
                    None
                } else if ["GET", "HEAD"].contains(&method) {
                    Some(0)
                } else {
                    Some(
                        header("content-length")
                            .and_then(|l| l.parse::<usize>().ok())
                            .unwrap_or(0),
                    )
                };
                let keep =
                    req.version == Some(1) && header("connection").as_deref() != Some("close");
                (
                    n,
                    format!("{method} host={host} {}", req.path.unwrap_or("?")),
                    keep,
                    body,
                )
            }
            Ok(httparse::Status::Partial) => {
                let why = if more { "too large" } else { "incomplete" };
                record(
                    hits,
                    "http",
                    local,
                    peer,
                    format!("{why} request ({} bytes)", buf.len()),
                );
                return;
            }
            Err(e) => {
                record(
                    hits,
                    "http",
                    local,
                    peer,
                    format!("unparsable request ({} bytes): {e}", buf.len()),
                );
                return;
            }
        };
        let host = detail.split_whitespace().nth(1).unwrap_or("").to_owned();
        record(hits, "http", local, peer, detail);
        buf.drain(..n);
        match body {
            Some(len) => {
                while buf.len() < len && read_more(&mut s, &mut buf).await {}
                buf.drain(..len.min(buf.len()));
            }
            None => skip_chunked(&mut s, &mut buf).await,
        }
        let body = if [IpAddr::V4(METADATA), IpAddr::V4(AZURE_WIRESERVER)].contains(&local.ip()) {
            format!("{FAKE_SECRET} {WORLD_MARKER} metadata {local} {host}\n")
        } else {
            format!("{WORLD_MARKER} http {local} {host}\n")
        };
        let version = if keep { "1.1" } else { "1.0" };
        let resp = format!(
            "HTTP/{version} 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() || !keep {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// Reads once more into `buf` (2 s at most); false at the end of the stream.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

/// Skips a chunked body at the start of `buf` (leniently: sizes in hex up to the line end).
async fn skip_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) {
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if buf.len() > 16 * 1024 || !read_more(s, buf).await {
                buf.clear();
                return;
            }
        };
        let size = String::from_utf8_lossy(&buf[..line_end]);
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    buf.drain(..i + 2);
                    if i == 0 {
                        return;
                    }
                } else if !read_more(s, buf).await {
                    return;
                }
            }
        }
        while buf.len() < size + 2 {
            if !read_more(s, buf).await {
                buf.clear();
                return;
            }
        }
        buf.drain(..size + 2);
    }
}

async fn serve_tls(mut s: TcpStream, local: SocketAddr) -> String {
    let buf = read_until(&mut s, |b| {
        airlock_net::gateway::sni_of(b).is_some() || b.len() > 5 && tls_record_complete(b)
    })
    .await;
    let detail = match airlock_net::gateway::sni_of(&buf) {
        Some(n) => format!("sni={n}"),
        None if buf.first() == Some(&0x16) => "ClientHello without SNI".into(),
        None => format!("not TLS ({} bytes)", buf.len()),
    };
    // Not real TLS: the marker tells the attack it reached the world.
    let _ = s
        .write_all(format!("{WORLD_MARKER} tls {local}\n").as_bytes())
        .await;
    let _ = s.shutdown().await;
    detail
}

fn tls_record_complete(b: &[u8]) -> bool {
    b.len() >= 5 && b.len() >= 5 + usize::from(u16::from_be_bytes([b[3], b[4]]))
}

async fn serve_banner(mut s: TcpStream, local: SocketAddr) -> String {
    let _ = s
        .write_all(format!("{WORLD_MARKER} tcp {local}\r\n").as_bytes())
        .await;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let _ = s.shutdown().await;
    format!("connect ({n} bytes sent)")
}

async fn dns_loop(u: UdpSocket, hits: Hits) {
    let local = u
        .local_addr()
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 53)));
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = u.recv_from(&mut buf).await else {
            continue;
        };
        let (resp, detail) = dns_answer(&buf[..n]);
        record(&hits, "dns", local, peer, detail);
        if let Some(r) = resp {
            let _ = u.send_to(&r, peer).await;
        }
    }
}

/// The world resolver's answer to one query, and a line for the record.
pub fn dns_answer(raw: &[u8]) -> (Option<Vec<u8>>, String) {
    let Ok(q) = Message::from_vec(raw) else {
        return (None, format!("unparsable query ({} bytes)", raw.len()));
    };
    let Some(query) = q.queries().first() else {
        return (None, "query without a question".into());
    };
    let name = query.name().to_ascii();
    // Whatever a query carries beyond one bare question reached this resolver: note it.
    let mut extras = vec![];
    if q.queries().len() > 1 {
        let more: Vec<String> = q.queries()[1..]
            .iter()
            .map(|x| x.name().to_ascii())
            .collect();
        extras.push(format!("questions {}", more.join(",")));
    }
    for (what, n) in [
        ("answer", q.answers().len()),
        ("authority", q.name_servers().len()),
        ("additional", q.additionals().len() + q.signature().len()),
    ] {
        if n > 0 {
            extras.push(format!("{n} {what} record(s)"));
        }
    }
    if let Some(e) = q.extensions() {
        if !e.options().as_ref().is_empty() {
            extras.push(format!("{} EDNS option(s)", e.options().as_ref().len()));
        }
    }
    let tag = |mut d: String| {
        if !extras.is_empty() {
            d.push_str(&format!(" {SMUGGLED_TAG}: {}", extras.join("; ")));
        }
        d
    };
    if name
        .trim_end_matches('.')
        .eq_ignore_ascii_case(crate::addrs::SILENT_NAME)
    {
        return (
            None,
            tag(format!("{name} {} -> {SILENT_ANSWER}", query.query_type())),
        );
    }
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true);
    m.add_queries(q.queries().to_vec());
    let answers = world_lookup_all(&name);
    match (answers.is_empty(), query.query_type()) {
        (false, RecordType::A) => {
            for a in &answers {
                m.add_answer(Record::from_rdata(query.name().clone(), 5, RData::A(A(*a))));
            }
        }
        (false, _) => {}
        (true, _) => {
            m.set_response_code(ResponseCode::NXDomain);
        }
    }
    let detail = format!(
        "{name} {} -> {}",
        query.query_type(),
        if answers.is_empty() {
            "NXDOMAIN".to_owned()
        } else {
            answers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    );
    (m.to_vec().ok(), tag(detail))
}

/// What the record of a query for [`crate::addrs::SILENT_NAME`] says instead of an answer.
pub const SILENT_ANSWER: &str = "(never answered)";

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn query(name: &str) -> Vec<u8> {
        let mut q = Message::new();
        q.set_id(7);
        q.add_query(Query::query(
            Name::from_ascii(name).expect("name"),
            RecordType::A,
        ));
        q.to_vec().expect("encode")
    }

    #[test]
    fn resolver_answers_the_worlds_names_only() {
        let (r, d) = dns_answer(&query("allowed.drill.test."));
        let m = Message::from_vec(&r.expect("answer")).expect("decode");
        assert_eq!(m.id(), 7);
        assert!(matches!(m.answers()[0].data(), RData::A(a) if a.0 == ALLOWED));
        assert!(
            d.starts_with("allowed.drill.test. A -> 203.0.113.20"),
            "{d}"
        );
        let (r, _) = dns_answer(&query("x.y.t.attacker.test."));
        let m = Message::from_vec(&r.expect("answer")).expect("decode");
        assert!(matches!(m.answers()[0].data(), RData::A(a) if a.0 == ATTACKER));
        let (r, d) = dns_answer(&query("example.com."));
        let m = Message::from_vec(&r.expect("answer")).expect("decode");
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert!(d.ends_with("NXDOMAIN"));
    }

    #[test]
    fn only_the_allowed_host_and_name_are_explained() {
        let h = |service: &str, ip: Ipv4Addr, detail: &str| Hit {
            time_ms: 0,
            service: service.into(),
            local: SocketAddr::from((ip, 80)),
            peer: SocketAddr::from((LINK_DRILL, 1)),
            detail: detail.into(),
        };
        assert!(h("http", ALLOWED, "GET host=allowed.drill.test /").allowed());
        assert!(h("dns", RESOLVER, "allowed.drill.test. A -> 203.0.113.20").allowed());
        assert!(!h("dns", RESOLVER, "exfil.attacker.test. A -> 203.0.113.7").allowed());
        assert!(!h("tls", ATTACKER, "sni=allowed.drill.test").allowed());
        assert!(!h("http", METADATA, "GET host=169.254.169.254 /").allowed());
        // Fronting: the allowed host's address, another host's name.
        assert!(h("http", ALLOWED, "GET host=allowed.drill.test:80 /").allowed());
        assert!(!h("http", ALLOWED, "GET host=exfil.attacker.test /").allowed());
        assert!(!h(
            "http",
            ALLOWED,
            "GET host=allowed.drill.test:80,exfil.attacker.test /"
        )
        .allowed());
        assert!(h("tls", ALLOWED, "sni=allowed.drill.test").allowed());
        assert!(!h("tls", ALLOWED, "sni=exfil.attacker.test").allowed());
        assert!(h("tls", ALLOWED, "not TLS (0 bytes)").allowed());
        assert!(!h("tls", ALLOWED, "not TLS (12 bytes)").allowed());
        // The rebinding names are allowed names; a query carrying more is not.
        assert!(h("dns", RESOLVER, "rebind.drill.test. A -> 192.168.77.10").allowed());
        assert!(!h(
            "dns",
            RESOLVER,
            "allowed.drill.test. A -> 203.0.113.20 +smuggled: 1 EDNS option(s)"
        )
        .allowed());
    }

    #[test]
    fn the_resolver_notes_whatever_a_query_carries_beyond_one_question() {
        let plain = query("allowed.drill.test.");
        let (_, d) = dns_answer(&plain);
        assert!(!d.contains(SMUGGLED_TAG), "{d}");
        let mut m = Message::from_vec(&plain).expect("decode");
        m.add_query(Query::query(
            Name::from_ascii("loot.t.attacker.test.").expect("name"),
            RecordType::A,
        ));
        let (_, d) = dns_answer(&m.to_vec().expect("encode"));
        assert!(
            d.contains(SMUGGLED_TAG) && d.contains("loot.t.attacker.test"),
            "{d}"
        );
        let (r, d) = dns_answer(&query("rebind-mixed.drill.test."));
        let m = Message::from_vec(&r.expect("answer")).expect("decode");
        assert_eq!(m.answers().len(), 2, "{d}");
    }
}
