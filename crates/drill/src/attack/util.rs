//! Small tools the attacks share: the record of one attempt, errno formatting, and minimal
//! network clients.
//!
//! The clients are hand-written on purpose: an attack must control every byte it sends
//! (a Host header that disagrees with the address dialled, a ClientHello with a chosen SNI or
//! none, a request to a raw IP) and must not pull in a TLS stack that would refuse to talk to
//! the fake servers. They speak just enough HTTP/1.0 and TLS to be recognised.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::addrs::{ALLOWED, FAKE_SECRET, WORLD_MARKER};

/// How long any network attempt may take.
pub const NET_TIMEOUT: Duration = Duration::from_secs(3);

/// One attempt of an attack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What was tried.
    pub what: String,
    /// Whether it worked (from the attacker's point of view).
    pub succeeded: bool,
    /// What happened (errno, bytes read, …).
    pub how: String,
}

impl Step {
    /// A successful attempt.
    pub fn ok(what: impl Into<String>, how: impl Into<String>) -> Self {
        Step {
            what: what.into(),
            succeeded: true,
            how: how.into(),
        }
    }
    /// A failed attempt.
    pub fn failed(what: impl Into<String>, how: impl Into<String>) -> Self {
        Step {
            what: what.into(),
            succeeded: false,
            how: how.into(),
        }
    }
    /// From a result: `Ok(how)` succeeded, `Err(how)` failed.
    pub fn from(what: impl Into<String>, r: Result<String, String>) -> Self {
        match r {
            Ok(h) => Step::ok(what, h),
            Err(h) => Step::failed(what, h),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.succeeded {
            write!(f, "{}: OK {}", self.what, self.how)
        } else {
            write!(f, "{}: {}", self.what, self.how)
        }
    }
}

/// The current errno as `ENAME (text)`.
pub fn errno() -> String {
    errno_str(nix::errno::Errno::last())
}

/// An errno as `ENAME (text)`.
pub fn errno_str(e: nix::errno::Errno) -> String {
    format!("{e:?} ({})", e.desc())
}

/// A raw syscall's return value as a step: a non-negative return is success; the returned fd
/// (if `is_fd`) is closed.
pub fn syscall_step(what: &str, ret: libc::c_long, is_fd: bool) -> Step {
    if ret < 0 {
        Step::failed(what, errno())
    } else {
        if is_fd {
            if let Ok(fd) = i32::try_from(ret) {
                // SAFETY: the kernel just returned this fd to us; nothing else owns it.
                unsafe { libc::close(fd) };
            }
        }
        Step::ok(what, format!("returned {ret}"))
    }
}

/// Opens `path` for writing WITHOUT writing anything (O_WRONLY, no O_CREAT, no O_TRUNC) and
/// closes it: success means the kernel would have accepted a write.
pub fn open_for_write(path: &str) -> Step {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => Step::ok(
            format!("open {path} for writing"),
            "opened (nothing written)",
        ),
        Err(e) => Step::failed(format!("open {path} for writing"), e.to_string()),
    }
}

/// Resolves `name` through the job's resolver (getaddrinfo).
pub fn resolve(name: &str) -> Result<Vec<IpAddr>, String> {
    (name, 0u16)
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).collect())
        .map_err(|e| e.to_string())
}

/// A name resolution as a step: resolving counts as success.
pub fn resolve_step(name: &str) -> Step {
    Step::from(
        format!("resolve {name}"),
        resolve(name).map(|v| format!("{v:?}")),
    )
}

fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("resolve: {e}"))?
            .collect(),
    };
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, NET_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(NET_TIMEOUT));
                let _ = s.set_write_timeout(Some(NET_TIMEOUT));
                return Ok(s);
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    Err(last)
}

/// Plain TCP connect; success = the three-way handshake completed.
pub fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, String> {
    connect(host, port)
}

fn read_some(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() < 64 * 1024 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Whether a response came from the drill's world (not from airlock's gateway) AND from a
/// host other than the allowed one: the gateway sends a request with an allowed Host or SNI
/// to the allowed host whatever address was dialled, which is not a success for the attacker.
pub fn from_world(resp: &str) -> bool {
    (resp.contains(WORLD_MARKER) || resp.contains(FAKE_SECRET)) && !answered_by_allowed(resp)
}

/// Whether the allowed host answered (the world's servers name the address they answer on).
pub fn answered_by_allowed(resp: &str) -> bool {
    resp.contains(WORLD_MARKER) && resp.contains(&format!(" {ALLOWED}:"))
}

/// Sends one HTTP/1.0 request to `host:port` (`host` an IP or a name) with the given Host
/// header and extra headers. `Ok` only if the answer came from the world, from a host other
/// than the allowed one (the attack got through); anything else is an `Err`.
pub fn http(
    host: &str,
    port: u16,
    method: &str,
    host_header: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<String, String> {
    let resp = http_raw(host, port, method, host_header, path, headers, body)?;
    let first = resp.lines().next().unwrap_or("(no answer)").to_owned();
    if from_world(&resp) {
        Ok(format!("reached the world: {first}"))
    } else if answered_by_allowed(&resp) {
        Err("re-routed to the allowed host by the gateway".into())
    } else {
        Err(format!("refused: {first}"))
    }
}

/// Sends one HTTP/1.0 request and returns the whole response, whoever answered.
pub fn http_raw(
    host: &str,
    port: u16,
    method: &str,
    host_header: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<String, String> {
    let mut s = connect(host, port)?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host_header}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    Ok(read_some(&mut s))
}

/// A minimal TLS 1.2 ClientHello, with an SNI extension when `sni` is given.
pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        let name_len = n.len() as u16;
        // server_name extension: type 0, list (len), entry type 0 (host_name), name (len).
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&(name_len + 5).to_be_bytes());
        ext.extend_from_slice(&(name_len + 3).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&name_len.to_be_bytes());
        ext.extend_from_slice(n);
    }
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0, 4, 0x13, 0x01, 0x00, 0x2f]); // cipher suites
    hello.extend_from_slice(&[1, 0]); // compression: null
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    let l = hello.len() as u32;
    hs.extend_from_slice(&l.to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Opens a TLS-looking connection: sends a ClientHello (with `sni`), then `payload`, and
/// reads the answer. `Ok` only if the world's TLS server answered.
pub fn tls(host: &str, port: u16, sni: Option<&str>, payload: &[u8]) -> Result<String, String> {
    let mut s = connect(host, port)?;
    s.write_all(&client_hello(sni))
        .and_then(|_| s.write_all(payload))
        .map_err(|e| format!("send: {e}"))?;
    let resp = read_some(&mut s);
    if from_world(&resp) {
        Ok("reached the world's TLS server".into())
    } else if answered_by_allowed(&resp) {
        Err("re-routed to the allowed host by the gateway".into())
    } else if resp.is_empty() {
        Err("closed without an answer".into())
    } else {
        Err(format!("answer not from the world ({} bytes)", resp.len()))
    }
}

/// A DNS query (type A, recursion desired) for `name`, as bytes for a UDP socket.
pub fn dns_a_query(id: u16, name: &str) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut q = Message::new();
    q.set_id(id).set_recursion_desired(true);
    q.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    q.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_carries_the_sni() {
        let h = client_hello(Some("doh.attacker.test"));
        assert_eq!(
            airlock_net::gateway::sni_of(&h).as_deref(),
            Some("doh.attacker.test")
        );
        assert_eq!(airlock_net::gateway::sni_of(&client_hello(None)), None);
    }
}
