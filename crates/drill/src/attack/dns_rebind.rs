//! DNS rebinding: an allowed name whose address is internal (`rebind.drill.test` →
//! 192.168.77.10), and one with a public and an internal address. A job that gets the internal
//! address from the gateway's DNS, or makes the gateway's proxies connect there (by Host,
//! SNI or CONNECT), reaches the internal network through a name the policy allows.
//!
//! Success = an internal address in a DNS answer, or the internal host's answer (the world's
//! records of a contact with it decide). Harmless: the internal host is the drill's own.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};

use super::sibling_job::own_gateway;
use super::util::{from_world, http, resolve, tls, Step, NET_TIMEOUT};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::{ALLOWED, INTERNAL, REBIND_MIXED_NAME, REBIND_NAME};

/// `dns-rebind`: allowed names that resolve into the internal network.
pub struct DnsRebind;

fn answer(name: &str) -> Step {
    let what = format!("resolve {name}");
    match resolve(name) {
        Ok(v) if v.contains(&IpAddr::V4(INTERNAL)) => {
            Step::ok(what, format!("the answer holds {INTERNAL}: {v:?}"))
        }
        Ok(v) => Step::failed(what, format!("no internal address: {v:?}")),
        Err(e) => Step::failed(what, e),
    }
}

/// CONNECT to `name:80` through the gateway's proxy, then a GET.
fn connect(name: &str) -> Result<String, String> {
    let gw = own_gateway().ok_or("no gateway address")?;
    let mut s = TcpStream::connect_timeout(&(gw, 3128).into(), NET_TIMEOUT)
        .map_err(|e| format!("connect {gw}:3128: {e}"))?;
    let _ = s.set_read_timeout(Some(NET_TIMEOUT));
    s.write_all(
        format!(
            "CONNECT {name}:80 HTTP/1.1\r\nHost: {name}:80\r\n\r\nGET / HTTP/1.0\r\nHost: {name}\r\n\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let resp = String::from_utf8_lossy(&buf).into_owned();
    if from_world(&resp) {
        Ok("the internal host answered".into())
    } else {
        Err(format!(
            "refused: {}",
            resp.lines().next().unwrap_or("(nothing)")
        ))
    }
}

impl Attack for DnsRebind {
    fn id(&self) -> &'static str {
        "dns-rebind"
    }
    fn title(&self) -> &'static str {
        "DNS rebinding: allowed names whose addresses are internal"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::DENIED_EGRESS)
    }
    fn run(&self) -> AttackResult {
        let ip = ALLOWED.to_string();
        let s = vec![
            answer(REBIND_NAME),
            answer(REBIND_MIXED_NAME),
            Step::from(
                format!("HTTP to {REBIND_NAME}"),
                http(REBIND_NAME, 80, "GET", REBIND_NAME, "/", &[], b""),
            ),
            Step::from(
                format!("HTTP to {ip} with Host {REBIND_NAME}"),
                http(&ip, 80, "GET", REBIND_NAME, "/", &[], b""),
            ),
            Step::from(
                format!("TLS to {ip} with SNI {REBIND_NAME}"),
                tls(&ip, 443, Some(REBIND_NAME), b""),
            ),
            Step::from(format!("CONNECT {REBIND_NAME}:80"), connect(REBIND_NAME)),
        ];
        AttackResult::from_steps(self.id(), &s)
    }
}
