//! The transparent HTTP (80) and HTTPS (443) proxies and the CONNECT proxy (3128).
//!
//! One client connection gets one upstream connection, bound to the one host it was judged
//! for. Every request on it — kept alive, pipelined, or inside a CONNECT tunnel to port 80 —
//! is parsed, checked against that host and rebuilt before it is forwarded; its body is
//! forwarded by its own framing. A request for another host, or one two parsers could read
//! differently, is refused and recorded, and nothing the client sends after it is forwarded.
//! No byte that was not parsed as part of a request, or of a body whose length the request
//! stated, reaches the upstream of a plain-HTTP connection.
//!
//! HTTPS and CONNECT to 443 are judged by the TLS SNI and spliced without terminating TLS:
//! what a client sends inside TLS (another Host included) cannot be seen (docs/network.md).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::{resolve_cached, ConnRecord, Ctx, IO_TIMEOUT, MAX_HEAD};

/// How long a refused request waits for the responses to the requests before it (so its
/// refusal is the answer the client reads in order) before the connection is cut.
const DRAIN: Duration = Duration::from_secs(10);
/// Most headers a request may have.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// The destination the job dialled, before the redirect (conntrack's SO_ORIGINAL_DST).
pub(super) fn original_dst(s: &TcpStream) -> Option<SocketAddr> {
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

// ---------- request heads ----------

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// None.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head that passed every check, rebuilt from what was parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// The head as it is forwarded: request line and headers as parsed, CRLF line ends.
    pub bytes: Vec<u8>,
    /// The Host, lower case, without port or trailing dot.
    pub host: String,
    /// Its body.
    pub body: Body,
}

/// A request refused before it was forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// 400 (malformed or ambiguous) or 403.
    pub status: u16,
    /// Why, for the record and the client.
    pub reason: String,
    /// The Host, when one could be read.
    pub host: Option<String>,
}

fn bad(reason: impl Into<String>, host: Option<&str>) -> Refused {
    Refused {
        status: 400,
        reason: reason.into(),
        host: host.map(str::to_owned),
    }
}

/// The host name of a `Host` value or an authority (`name[:port]`): lower case, without port
/// or trailing dot; `None` unless it is plainly a DNS name or an IPv4 address (no user info,
/// no IPv6 literal, no percent-encoding, no empty port).
pub(crate) fn host_name(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?.trim_matches([' ', '\t']);
    let h = match s.rsplit_once(':') {
        Some((h, p)) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            h
        }
        None => s,
    };
    let h = h.strip_suffix('.').unwrap_or(h);
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then(|| h.to_ascii_lowercase())
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete,
/// otherwise the head (rebuilt) and the number of bytes it took, or why it is refused. Refused:
/// anything httparse rejects (obs-fold, bare CR, bad tokens…), no Host or several, an
/// absolute-form target naming another host, other target forms, CONNECT, several
/// Content-Length or Transfer-Encoding headers, both, a Transfer-Encoding other than
/// `chunked`, a body on a method servers may read none for, and protocol upgrades.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Refused> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("malformed request head ({e})"), None)),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad("malformed request line", None));
    };
    let named = |n: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(n))
            .map(|h| h.value)
            .collect::<Vec<_>>()
    };
    let hosts = named("host");
    let host = match hosts.as_slice() {
        [] => {
            return Err(Refused {
                status: 403,
                reason: "no Host header".into(),
                host: None,
            })
        }
        [h] => host_name(h).ok_or_else(|| {
            bad(
                format!(
                    "malformed request: Host {:?} is not a host name",
                    String::from_utf8_lossy(h)
                ),
                None,
            )
        })?,
        _ => {
            return Err(bad(
                format!("ambiguous request: {} Host headers", hosts.len()),
                None,
            ))
        }
    };
    let h = Some(host.as_str());
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(bad("CONNECT is served on port 3128 only", h));
    }
    if target == "*" {
        if method != "OPTIONS" {
            return Err(bad(format!("malformed request: target * of {method}"), h));
        }
    } else if !target.starts_with('/') {
        let lower = target.to_ascii_lowercase();
        let Some(rest) = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"))
        else {
            return Err(bad(
                format!("malformed request: request target {target:?}"),
                h,
            ));
        };
        // The absolute form overrides Host for the server: it must name the same host.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') || host_name(authority.as_bytes()).as_deref() != h {
            return Err(bad(
                format!(
                    "ambiguous request: the target {target:?} names another host than Host {host}"
                ),
                h,
            ));
        }
    }
    if !named("upgrade").is_empty() {
        return Err(bad(
            "protocol upgrade (h2c, WebSocket) on plain HTTP: the upgraded traffic could not be checked",
            h,
        ));
    }
    let te = named("transfer-encoding");
    let cl = named("content-length");
    let body = match (te.as_slice(), cl.as_slice()) {
        ([], []) => Body::Empty,
        ([_, _, ..], _) => {
            return Err(bad(
                "ambiguous request: several Transfer-Encoding headers",
                h,
            ))
        }
        (_, [_, _, ..]) => return Err(bad("ambiguous request: several Content-Length headers", h)),
        ([_], [_]) => {
            return Err(bad(
                "ambiguous request: both Transfer-Encoding and Content-Length",
                h,
            ))
        }
        ([t], []) => {
            let chunked = std::str::from_utf8(t)
                .is_ok_and(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case("chunked"));
            if !chunked || version == 0 {
                return Err(bad(
                    format!(
                        "ambiguous request: Transfer-Encoding {:?} in HTTP/1.{version} (only chunked, in HTTP/1.1, is forwarded)",
                        String::from_utf8_lossy(t)
                    ),
                    h,
                ));
            }
            Body::Chunked
        }
        ([], [l]) => {
            let n = std::str::from_utf8(l)
                .ok()
                .map(|l| l.trim_matches([' ', '\t']))
                .filter(|l| !l.is_empty() && l.len() <= 18 && l.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|l| l.parse::<u64>().ok())
                .ok_or_else(|| {
                    bad(
                        format!(
                            "ambiguous request: Content-Length {:?}",
                            String::from_utf8_lossy(l)
                        ),
                        h,
                    )
                })?;
            if n == 0 {
                Body::Empty
            } else {
                Body::Length(n)
            }
        }
    };
    // Servers commonly ignore a body on these: its bytes would be read as the next request.
    if body != Body::Empty && ["GET", "HEAD", "OPTIONS", "TRACE"].contains(&method) {
        return Err(bad(
            format!(
                "ambiguous request: a body on {method} (a server may read it as the next request)"
            ),
            h,
        ));
    }
    let mut bytes = Vec::with_capacity(n);
    bytes.extend_from_slice(format!("{method} {target} HTTP/1.{version}\r\n").as_bytes());
    for hd in req.headers.iter() {
        bytes.extend_from_slice(hd.name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(hd.value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    Ok(Some((Head { bytes, host, body }, n)))
}

// ---------- the client side ----------

/// What a client sent and was not yet consumed, and the rest of its stream.
struct ClientIn {
    r: OwnedReadHalf,
    buf: Vec<u8>,
}

enum BodyError {
    /// The client's framing is broken: refused.
    Framing(String),
    /// One side closed or failed.
    Io,
}

impl ClientIn {
    /// Reads more; `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.r.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next request head. `first`: the connection's first request, whose head must come
    /// whole within [`IO_TIMEOUT`]; later ones may wait, but once begun must also be complete
    /// within [`IO_TIMEOUT`]. `Ok(None)`: the client closed between requests.
    async fn head(&mut self, first: bool) -> Result<Option<Head>, Refused> {
        let mut deadline = (first || !self.buf.is_empty()).then(|| Instant::now() + IO_TIMEOUT);
        loop {
            if !self.buf.is_empty() {
                if let Some((head, n)) = parse_head(&self.buf)? {
                    self.buf.drain(..n);
                    return Ok(Some(head));
                }
                if self.buf.len() >= MAX_HEAD {
                    return Err(bad("request head too large", None));
                }
            }
            let read = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, self.fill()).await {
                        Ok(r) => r,
                        Err(_) => return Err(bad("incomplete request head (timed out)", None)),
                    }
                }
                None => self.fill().await,
            };
            match read {
                Ok(0) | Err(_) if self.buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(bad("incomplete request head", None)),
                Ok(_) => {
                    deadline.get_or_insert_with(|| Instant::now() + IO_TIMEOUT);
                }
            }
        }
    }

    /// Copies exactly `n` bytes to `w`.
    async fn copy_exact<W: AsyncWrite + Unpin>(
        &mut self,
        mut n: u64,
        w: &mut W,
        count: &AtomicU64,
    ) -> Result<(), BodyError> {
        while n > 0 {
            if self.buf.is_empty() && self.fill().await.map_err(|_| BodyError::Io)? == 0 {
                return Err(BodyError::Framing("body shorter than announced".into()));
            }
            let k = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
            w.write_all(&self.buf[..k])
                .await
                .map_err(|_| BodyError::Io)?;
            self.buf.drain(..k);
            count.fetch_add(k as u64, Relaxed);
            n -= k as u64;
        }
        Ok(())
    }

    /// One CRLF-terminated line (without the CRLF), at most `max` bytes.
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, BodyError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                if i == 0 || self.buf[i - 1] != b'\r' || i - 1 > max {
                    return Err(BodyError::Framing(
                        "malformed chunked body (line end)".into(),
                    ));
                }
                let line = self.buf[..i - 1].to_vec();
                self.buf.drain(..=i);
                if line.contains(&b'\r') {
                    return Err(BodyError::Framing(
                        "malformed chunked body (bare CR)".into(),
                    ));
                }
                return Ok(line);
            }
            if self.buf.len() > max + 2 {
                return Err(BodyError::Framing(
                    "malformed chunked body (long line)".into(),
                ));
            }
            if self.fill().await.map_err(|_| BodyError::Io)? == 0 {
                return Err(BodyError::Framing("chunked body cut short".into()));
            }
        }
    }

    /// Forwards a body by its framing; a chunked body is rebuilt (chunk extensions and
    /// trailers dropped).
    async fn body<W: AsyncWrite + Unpin>(
        &mut self,
        body: Body,
        w: &mut W,
        count: &AtomicU64,
    ) -> Result<(), BodyError> {
        match body {
            Body::Empty => Ok(()),
            Body::Length(n) => self.copy_exact(n, w, count).await,
            Body::Chunked => loop {
                let line = self.line(MAX_CHUNK_LINE).await?;
                let size = line.split(|b| *b == b';').next().unwrap_or(&[]);
                let size = std::str::from_utf8(size)
                    .ok()
                    .map(|s| s.trim_end_matches([' ', '\t']))
                    .filter(|s| {
                        !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_hexdigit())
                    })
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or_else(|| BodyError::Framing("malformed chunk size".into()))?;
                let l = format!("{size:x}\r\n");
                w.write_all(l.as_bytes()).await.map_err(|_| BodyError::Io)?;
                count.fetch_add(l.len() as u64, Relaxed);
                if size == 0 {
                    let mut trailers = 0;
                    loop {
                        let t = self.line(MAX_HEAD).await?;
                        if t.is_empty() {
                            break;
                        }
                        trailers += t.len();
                        if trailers > MAX_HEAD {
                            return Err(BodyError::Framing("trailers too large".into()));
                        }
                    }
                    w.write_all(b"\r\n").await.map_err(|_| BodyError::Io)?;
                    count.fetch_add(2, Relaxed);
                    return Ok(());
                }
                self.copy_exact(size, w, count).await?;
                if !self.line(0).await?.is_empty() {
                    return Err(BodyError::Framing("chunk longer than its size".into()));
                }
                w.write_all(b"\r\n").await.map_err(|_| BodyError::Io)?;
                count.fetch_add(2, Relaxed);
            },
        }
    }
}

async fn deny_http<W: AsyncWrite + Unpin>(w: &mut W, status: u16, msg: &str) {
    let body = format!("airlock: {msg}\n");
    let text = if status == 400 {
        "Bad Request"
    } else {
        "Forbidden"
    };
    let resp = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = w.write_all(resp.as_bytes()).await;
    let _ = w.shutdown().await;
}

// ---------- connecting ----------

/// Resolves `name`, checks its addresses and connects to the first one allowed. Fills
/// `rec.resolved`; on failure returns the reason.
async fn dial(ctx: &Ctx, name: &str, port: u16, rec: &mut ConnRecord) -> Result<TcpStream, String> {
    // Upstream trouble (no answer, no connection) of an allowed name is marked on the record:
    // it is not an egress attempt. A refused address is the policy's decision.
    let addrs = resolve_cached(ctx, name).await.map_err(|e| {
        rec.allowed_but_failed = true;
        format!("cannot resolve: {e}")
    })?;
    let mut why = String::from("no address");
    let mut chosen = None;
    for a in &addrs {
        match ctx.addr_verdict(*a, Some(port)).await {
            Ok(()) => {
                chosen = Some(*a);
                break;
            }
            Err(reason) => why = reason,
        }
    }
    let Some(ip) = chosen else {
        rec.resolved = addrs.first().map(|a| IpAddr::V4(*a));
        return Err(why);
    };
    rec.resolved = Some(IpAddr::V4(ip));
    let r = match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect((ip, port))).await {
        Ok(Ok(u)) => Ok(u),
        Ok(Err(e)) => Err(format!("connect {ip}:{port}: {e}")),
        Err(_) => Err(format!("connect {ip}:{port}: timed out")),
    };
    rec.allowed_but_failed = r.is_err();
    r
}

fn allowed(ctx: &Ctx, rec: &mut ConnRecord) {
    rec.verdict = "allow".into();
    rec.reason = if ctx.audit() {
        "audit mode".into()
    } else {
        "allow-listed".into()
    };
}

/// Sends `first` upstream, then splices both ways until either side is done.
async fn splice(client: TcpStream, mut upstream: TcpStream, first: &[u8]) -> (u64, u64) {
    if !first.is_empty() && upstream.write_all(first).await.is_err() {
        return (0, 0);
    }
    let mut client = client;
    // 64 KiB buffers: the default 8 KiB costs a third of bulk throughput.
    let (up, down) =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 1 << 16, 1 << 16)
            .await
            .unwrap_or((0, 0));
    (up + first.len() as u64, down)
}

/// Copies everything from `r` to `w`, counting.
async fn copy_counted<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    count: &AtomicU64,
) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
        count.fetch_add(n as u64, Relaxed);
    }
}

/// What [`relay`] did.
struct Relayed {
    up: u64,
    down: u64,
    requests: u64,
}

/// Relays the requests of one client connection to `upstream`, which serves `bound` only:
/// every request head (the first one possibly already read: `first`) is parsed and must name
/// `bound`; it is forwarded rebuilt, then its body by its framing. Responses are copied back
/// as they come; the upstream's write side is closed only when the client's is (a server
/// behind a reverse proxy may take an early end for an aborted request). A refused request is
/// recorded (`kind`), answered after the responses to the requests before it, and ends the
/// connection: nothing after it is forwarded.
#[allow(clippy::too_many_arguments)]
async fn relay(
    ctx: &Ctx,
    kind: &str,
    mut cin: ClientIn,
    mut cw: OwnedWriteHalf,
    first: Option<Head>,
    upstream: TcpStream,
    bound: &str,
    port: u16,
    dialled: Option<SocketAddr>,
) -> Relayed {
    let (mut ur, mut uw) = upstream.into_split();
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let requests = AtomicU64::new(0);
    let refuse = |host: Option<String>, status: u16, reason: String| {
        let mut r = conn_record(kind, host.clone(), port, dialled);
        let msg = format!("{}: {reason}", host.as_deref().unwrap_or("request"));
        r.reason = reason;
        ctx.record(r);
        Some((status, msg))
    };
    let up = async {
        let mut next = first;
        let refusal = loop {
            let head = match next.take() {
                Some(h) => h,
                None => match cin.head(false).await {
                    Ok(Some(h)) => h,
                    Ok(None) => break None,
                    Err(r) => break refuse(r.host, r.status, r.reason),
                },
            };
            if head.host != bound {
                let reason = format!(
                    "Host {} differs from {bound}, the host this connection was opened for (one host per connection)",
                    head.host
                );
                break refuse(Some(head.host), 403, reason);
            }
            if uw.write_all(&head.bytes).await.is_err() {
                break None;
            }
            up_bytes.fetch_add(head.bytes.len() as u64, Relaxed);
            requests.fetch_add(1, Relaxed);
            match cin.body(head.body, &mut uw, &up_bytes).await {
                Ok(()) => {}
                Err(BodyError::Io) => break None,
                Err(BodyError::Framing(e)) => {
                    break refuse(Some(head.host), 400, format!("malformed request body: {e}"))
                }
            }
        };
        // The server answers what it got, then sees the end.
        let _ = uw.shutdown().await;
        refusal
    };
    let mut refusal = None;
    let mut drained = false;
    {
        let down = copy_counted(&mut ur, &mut cw, &down_bytes);
        tokio::pin!(up);
        tokio::pin!(down);
        let mut up_done = false;
        let mut deadline = tokio::time::Instant::now() + DRAIN;
        loop {
            tokio::select! {
                r = &mut up, if !up_done => {
                    up_done = true;
                    refusal = r;
                    deadline = tokio::time::Instant::now() + DRAIN;
                }
                () = &mut down => {
                    drained = true;
                    break;
                }
                () = tokio::time::sleep_until(deadline), if up_done && refusal.is_some() => break,
            }
        }
    }
    if let (Some((status, msg)), true) = (&refusal, drained) {
        deny_http(&mut cw, *status, msg).await;
    }
    let _ = cw.shutdown().await;
    Relayed {
        up: up_bytes.load(Relaxed),
        down: down_bytes.load(Relaxed),
        requests: requests.load(Relaxed),
    }
}

fn with_requests(reason: &mut String, requests: u64, name: &str) {
    if requests > 1 {
        reason.push_str(&format!("; {requests} requests, each for {name}"));
    }
}

// ---------- the three services ----------

/// Transparent HTTP (port 80).
pub(super) async fn http(ctx: &Ctx, s: TcpStream) {
    let started = Instant::now();
    let dialled = original_dst(&s);
    let port = dialled.map_or(80, |d| d.port());
    let (r, mut cw) = s.into_split();
    let mut cin = ClientIn { r, buf: Vec::new() };
    let head = match cin.head(true).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            let mut r = conn_record("http", None, port, dialled);
            r.reason = "no complete request head".into();
            ctx.record(r);
            return;
        }
        Err(refused) => {
            let mut r = conn_record("http", refused.host.clone(), port, dialled);
            r.reason.clone_from(&refused.reason);
            ctx.record(r);
            let msg = match refused.host {
                Some(h) => format!("{h}: {}", refused.reason),
                None if refused.reason == "no Host header" => {
                    "requests need a Host header".to_owned()
                }
                None => refused.reason,
            };
            return deny_http(&mut cw, refused.status, &msg).await;
        }
    };
    let name = head.host.clone();
    let mut rec = conn_record("http", Some(name.clone()), port, dialled);
    if let Err(reason) = ctx.name_verdict(&name) {
        rec.reason.clone_from(&reason);
        ctx.record(rec);
        return deny_http(&mut cw, 403, &format!("{name}: {reason}")).await;
    }
    let upstream = match dial(ctx, &name, port, &mut rec).await {
        Ok(u) => u,
        Err(reason) => {
            rec.reason.clone_from(&reason);
            ctx.record(rec);
            return deny_http(&mut cw, 403, &format!("{name}: {reason}")).await;
        }
    };
    allowed(ctx, &mut rec);
    let done = relay(
        ctx,
        "http",
        cin,
        cw,
        Some(head),
        upstream,
        &name,
        port,
        dialled,
    )
    .await;
    rec.bytes_up = done.up;
    rec.bytes_down = done.down;
    with_requests(&mut rec.reason, done.requests, &name);
    rec.duration_ms = started.elapsed().as_millis() as u64;
    ctx.record(rec);
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

/// Reads until a whole TLS record is in `cin.buf`, within [`IO_TIMEOUT`] and [`MAX_HEAD`].
async fn read_hello(cin: &mut ClientIn) -> bool {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !tls_record_complete(&cin.buf) {
        if cin.buf.len() >= MAX_HEAD {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, cin.fill()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
    true
}

/// Transparent HTTPS (port 443): judged by the SNI.
pub(super) async fn https(ctx: &Ctx, s: TcpStream) {
    let started = Instant::now();
    let dialled = original_dst(&s);
    let port = dialled.map_or(443, |d| d.port());
    let (r, cw) = s.into_split();
    let mut cin = ClientIn { r, buf: Vec::new() };
    if !read_hello(&mut cin).await {
        let mut r = conn_record("https", None, port, dialled);
        r.reason = "no complete TLS ClientHello".into();
        ctx.record(r);
        return;
    }
    let name = sni_of(&cin.buf);
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
    let upstream = match dial(ctx, &name, port, &mut rec).await {
        Ok(u) => u,
        Err(reason) => {
            rec.reason = reason;
            ctx.record(rec);
            return;
        }
    };
    allowed(ctx, &mut rec);
    let Ok(client) = cin.r.reunite(cw) else {
        return;
    };
    let (up, down) = splice(client, upstream, &cin.buf).await;
    rec.bytes_up = up;
    rec.bytes_down = down;
    rec.duration_ms = started.elapsed().as_millis() as u64;
    ctx.record(rec);
}

/// The target of a CONNECT request head: `(host, port, bytes taken)`, or why it is refused.
pub(crate) fn parse_connect(buf: &[u8]) -> Result<Option<(String, u16, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed request head ({e})")),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err("malformed request line".into());
    };
    if !method.eq_ignore_ascii_case("CONNECT") {
        return Err(format!("method {method} on the CONNECT proxy"));
    }
    let port = target
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| "CONNECT needs host:port".to_owned())?;
    let host = host_name(target.as_bytes())
        .ok_or_else(|| format!("malformed CONNECT target {target:?}"))?;
    let hosts: Vec<_> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .collect();
    match hosts.as_slice() {
        [] => {}
        [h] if host_name(h.value).as_deref() == Some(host.as_str()) => {}
        _ => {
            return Err(format!(
                "ambiguous request: the Host header disagrees with the CONNECT target {host}"
            ))
        }
    }
    Ok(Some((host, port, n)))
}

/// The CONNECT proxy (port 3128): the destination is resolved, judged and connected to
/// before the client gets its `200`; inside, port 80 carries HTTP whose every request must
/// name the target, port 443 a TLS ClientHello whose SNI must be the target.
pub(super) async fn connect(ctx: &Ctx, s: TcpStream) {
    let started = Instant::now();
    let (r, mut cw) = s.into_split();
    let mut cin = ClientIn { r, buf: Vec::new() };
    let deadline = Instant::now() + IO_TIMEOUT;
    let (host, port) = loop {
        match parse_connect(&cin.buf) {
            Ok(Some((h, p, n))) => {
                cin.buf.drain(..n);
                break (h, p);
            }
            Ok(None) if cin.buf.len() < MAX_HEAD => {}
            Ok(None) => return deny_http(&mut cw, 400, "request head too large").await,
            Err(reason) => {
                let mut r = conn_record("connect", None, 0, None);
                r.reason.clone_from(&reason);
                ctx.record(r);
                return deny_http(&mut cw, 400, &reason).await;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, cin.fill()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };
    let mut rec = conn_record("connect", Some(host.clone()), port, None);
    if port != 443 && port != 80 && !ctx.audit() {
        rec.reason = format!("port {port} is not proxied (80 and 443 only)");
        ctx.record(rec);
        return deny_http(&mut cw, 403, "only ports 80 and 443").await;
    }
    if let Err(reason) = ctx.name_verdict(&host) {
        rec.reason.clone_from(&reason);
        ctx.record(rec);
        return deny_http(&mut cw, 403, &format!("{host}: {reason}")).await;
    }
    let upstream = match dial(ctx, &host, port, &mut rec).await {
        Ok(u) => u,
        Err(reason) => {
            rec.reason.clone_from(&reason);
            ctx.record(rec);
            return deny_http(&mut cw, 403, &format!("{host}: {reason}")).await;
        }
    };
    if cw
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    allowed(ctx, &mut rec);
    let (up, down) = if port == 80 {
        let done = relay(ctx, "connect", cin, cw, None, upstream, &host, port, None).await;
        with_requests(&mut rec.reason, done.requests, &host);
        (done.up, done.down)
    } else {
        if port == 443 {
            if !read_hello(&mut cin).await {
                rec.verdict = "deny".into();
                rec.reason = "no complete TLS ClientHello inside the tunnel".into();
                ctx.record(rec);
                return;
            }
            let sni = sni_of(&cin.buf);
            let refused = match &sni {
                Some(s) if *s != host => Some(format!(
                    "SNI {s} differs from the CONNECT target {host} (one host per connection)"
                )),
                None if !ctx.audit() => {
                    Some("no SNI in the ClientHello inside the tunnel".to_owned())
                }
                _ => None,
            };
            if let Some(reason) = refused {
                let mut r = conn_record("connect", sni.or(Some(host)), port, None);
                r.resolved = rec.resolved;
                r.reason = reason;
                ctx.record(r);
                return;
            }
        }
        let Ok(client) = cin.r.reunite(cw) else {
            return;
        };
        splice(client, upstream, &cin.buf).await
    };
    rec.bytes_up = up;
    rec.bytes_down = down;
    rec.duration_ms = started.elapsed().as_millis() as u64;
    ctx.record(rec);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(b: &[u8]) -> Result<Option<(Head, usize)>, Refused> {
        parse_head(b)
    }

    fn refused(b: &[u8]) -> String {
        match head(b) {
            Err(r) => r.reason,
            Ok(h) => panic!("accepted {:?}: {h:?}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn a_head_is_rebuilt_with_its_host() {
        let (h, n) = head(b"GET /x HTTP/1.1\nHost: Example.COM.:8080\nAccept:  */*\n\nrest")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.host, "example.com");
        assert_eq!(n, 54);
        assert_eq!(
            String::from_utf8_lossy(&h.bytes),
            "GET /x HTTP/1.1\r\nHost: Example.COM.:8080\r\nAccept: */*\r\n\r\n"
        );
        assert_eq!(h.body, Body::Empty);
        assert_eq!(head(b"GET / HTTP/1.1\r\nHost: a"), Ok(None));
        let (h, _) = head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.body, Body::Length(5));
        let (h, _) = head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.body, Body::Chunked);
        let (h, _) = head(b"GET http://A.test:80/p HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.host, "a.test");
    }

    #[test]
    fn ambiguous_heads_are_refused() {
        for (req, why) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..], "2 Host"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", "malformed"),
            (b"GET / HTTP/1.0\r\n\r\n", "no Host"),
            (b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", "another host"),
            (b"GET http://a@b/ HTTP/1.1\r\nHost: a\r\n\r\n", "another host"),
            (b"GET b:80 HTTP/1.1\r\nHost: a\r\n\r\n", "request target"),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                "several Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "several Transfer-Encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                "HTTP/1.0",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
                "Content-Length",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\n\r\n",
                "a body on GET",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
                "upgrade",
            ),
            (b"CONNECT a:80 HTTP/1.1\r\nHost: a\r\n\r\n", "CONNECT"),
            (b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", "not a host name"),
            (b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n", "not a host name"),
            (b"GET / HTTP/1.1\r\nHost: a%2eb\r\n\r\n", "not a host name"),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "malformed"),
        ] {
            let r = refused(req);
            assert!(r.contains(why), "{:?}: {r}", String::from_utf8_lossy(req));
        }
    }

    #[test]
    fn connect_targets_are_read_strictly() {
        assert_eq!(
            parse_connect(b"CONNECT A.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\nx"),
            Ok(Some(("a.test".into(), 443, 49)))
        );
        assert_eq!(
            parse_connect(b"CONNECT a.test:443 HTTP/1.1\r\n\r\n"),
            Ok(Some(("a.test".into(), 443, 31)))
        );
        assert!(
            parse_connect(b"CONNECT a.test:443 HTTP/1.1\r\nHost: b.test\r\n\r\n")
                .is_err_and(|e| e.contains("disagrees"))
        );
        assert!(parse_connect(b"CONNECT a.test HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_connect(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
        assert_eq!(parse_connect(b"CONNECT a.test:443 HTTP/1.1\r\n"), Ok(None));
    }
}
