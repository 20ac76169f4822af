//! The DNS gateway (UDP and TCP 53 of the job's gateway address) and the resolver the proxies
//! use.
//!
//! Nothing a job chose reaches the upstream resolver except one name it may ask for: a query
//! is parsed, refused unless it is exactly one question (class IN) with no records in its
//! other sections (EDNS apart), and answered from a query airlock builds itself — a fresh id,
//! that one question of type A, EDNS without options. From the answer only A and CNAME
//! records come back to the job, minus every address the job may not reach (never-reachable,
//! host, job pool, internal ranges not covered by an allow rule): DNS rebinding.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{tunnelling_suspect, ConnRecord, Ctx, CACHE_MAX_TTL, DNS_TIMEOUT, IO_TIMEOUT};

/// The EDNS payload size airlock offers: the DNS flag day's safe value.
const EDNS_PAYLOAD: u16 = 1232;

pub(super) async fn serve_udp(ctx: Arc<Ctx>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 4096];
    loop {
        ctx.next_flow("dns", 53).await;
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(_) => {
                // Not a query's fault (out of memory, say): wait instead of spinning.
                tokio::time::sleep(super::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = ctx.dns.clone().try_acquire_owned() else {
            // A flood of queries: dropped (and counted) while the ones in flight are
            // answered, so the tasks and upstream sockets a job can make airlock hold stay
            // bounded.
            ctx.record_over_limit(
                "dns",
                53,
                None,
                format!(
                    "too many DNS queries in flight: at most {} at once",
                    super::DNS_IN_FLIGHT
                ),
            );
            continue;
        };
        let q = buf[..n].to_vec();
        let ctx = ctx.clone();
        let sock = sock.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(resp) = answer(&ctx, &q, true).await {
                let _ = sock.send_to(&resp, peer).await;
            }
        });
    }
}

pub(super) async fn serve_tcp(ctx: &Ctx, mut s: TcpStream) {
    let mut first = true;
    loop {
        // Each query after the first (counted when the connection was accepted) is a new
        // flow: one connection must not carry more than the rate allows.
        if !std::mem::take(&mut first) {
            ctx.next_flow("dns", 53).await;
        }
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
        let Some(resp) = answer(ctx, &q, false).await else {
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

/// FORMERR for a query that does not parse: its header, echoed with no section.
fn formerr_raw(raw: &[u8]) -> Option<Vec<u8>> {
    // Never answer a response (no reflection loops), nor less than a header.
    if raw.len() < 12 || raw[2] & 0x80 != 0 {
        return None;
    }
    let mut r = vec![0u8; 12];
    r[..2].copy_from_slice(&raw[..2]);
    r[2] = 0x80 | (raw[2] & 0x79); // QR, the opcode and RD of the query
    r[3] = 0x80 | ResponseCode::FormErr.low(); // RA, FORMERR
    Some(r)
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

fn name_of(q: &Query) -> String {
    q.name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Why a parsed query is refused as malformed (FORMERR): anything but one question and, EDNS
/// apart, empty answer, authority and additional sections.
fn malformed(q: &Message) -> Option<String> {
    let n = q.queries().len();
    if n != 1 {
        let names: Vec<String> = q.queries().iter().take(8).map(name_of).collect();
        return Some(format!(
            "{n} questions in one query (one per query is answered): {}",
            names.join(", ")
        ));
    }
    let sections = [
        ("answer", q.answers().len()),
        ("authority", q.name_servers().len()),
        ("additional", q.additionals().len() + q.signature().len()),
    ];
    sections
        .iter()
        .find(|(_, n)| *n > 0)
        .map(|(what, n)| format!("a query carrying {n} {what} record(s) (not forwarded)"))
}

/// Answers one DNS query (wire format), or `None` to stay silent (a response, a runt).
pub(super) async fn answer(ctx: &Ctx, raw: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = match Message::from_vec(raw) {
        Ok(q) => q,
        Err(e) => {
            let resp = formerr_raw(raw)?;
            let mut r = ConnRecord::new("dns", 53);
            r.reason = format!("malformed query ({} bytes): {e}", raw.len());
            ctx.record(r);
            return Some(resp);
        }
    };
    if q.message_type() != MessageType::Query {
        return None;
    }
    let first = q.queries().first();
    let refuse = |reason: &str, code: ResponseCode| {
        let mut r = ConnRecord::new("dns", 53);
        if let Some(f) = first {
            r = dns_record(&name_of(f), f.query_type(), "deny", reason, None);
        } else {
            r.reason = reason.to_owned();
        }
        ctx.record(r);
        reply(&q, code)
    };
    if q.op_code() != OpCode::Query {
        return refuse(
            &format!("opcode {:?} is not served", q.op_code()),
            ResponseCode::NotImp,
        );
    }
    if let Some(why) = malformed(&q) {
        // Nothing of a malformed query is echoed.
        refuse(&why, ResponseCode::FormErr);
        let mut bare = Message::new();
        bare.set_id(q.id())
            .set_recursion_desired(q.recursion_desired());
        return reply(&bare, ResponseCode::FormErr);
    }
    let query = first?;
    let name = name_of(query);
    let qtype = query.query_type();
    if query.query_class() != DNSClass::IN {
        return refuse(
            &format!("class {} is not served (IN only)", query.query_class()),
            ResponseCode::Refused,
        );
    }
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::ANY) {
        return refuse("zone transfers and ANY are refused", ResponseCode::Refused);
    }
    if let Err(reason) = ctx.name_verdict(&name) {
        return refuse(&reason, ResponseCode::NXDomain);
    }
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        // An allowed name, a query type the gateway does not serve: not an egress attempt.
        let mut r = dns_record(&name, qtype, "deny", "only A and AAAA are answered", None);
        r.allowed_but_failed = true;
        ctx.record(r);
        return reply(&q, ResponseCode::Refused);
    }
    let mut flags = vec![];
    if q.extensions()
        .as_ref()
        .is_some_and(|e| !e.options().as_ref().is_empty())
    {
        flags.push("dns-edns-options-dropped".to_owned());
    }
    // `answers`: every address the job gets back (`resolved` is the first); the detectors tell
    // a connection to a looked-up address from a hard-coded one by these.
    let record = |verdict: &str, reason: &str, answers: &[Ipv4Addr], extra: &[String]| {
        let resolved = answers.first().map(|a| IpAddr::V4(*a));
        let mut r = dns_record(&name, qtype, verdict, reason, resolved);
        r.answers = answers.iter().map(|a| IpAddr::V4(*a)).collect();
        r.flags.extend(flags.iter().chain(extra).cloned());
        ctx.record(r);
    };
    if qtype == RecordType::AAAA {
        // IPv6 is disabled inside jobs: an empty answer makes clients use IPv4 at once.
        record("allow", "no IPv6 in jobs: empty answer", &[], &[]);
        return build(&q, query, ResponseCode::NoError, vec![], udp);
    }
    let asked = query.name().to_lowercase();
    let resp = match lookup(ctx.cfg.upstream, &asked).await {
        Ok(r) => r,
        Err(e) => {
            // An allowed name whose upstream did not answer: not an egress attempt.
            let reason = format!("upstream resolver failed: {e}");
            let mut r = dns_record(&name, qtype, "deny", &reason, None);
            r.allowed_but_failed = true;
            r.flags.extend(flags.iter().cloned());
            ctx.record(r);
            return reply(&q, ResponseCode::ServFail);
        }
    };
    let code = match resp.response_code() {
        c @ (ResponseCode::NoError | ResponseCode::NXDomain | ResponseCode::Refused) => c,
        _ => ResponseCode::ServFail,
    };
    let (mut kept, mut addrs, mut removed) = (vec![], vec![], vec![]);
    for r in resp.answers() {
        match r.data() {
            RData::A(a) => match ctx.addr_verdict(a.0, None).await {
                Ok(()) => {
                    addrs.push(a.0);
                    kept.push(r.clone());
                }
                Err(why) => removed.push(why),
            },
            RData::CNAME(_) => kept.push(r.clone()),
            // Nothing else belongs in the answer to an A question.
            _ => {}
        }
    }
    if removed.is_empty() {
        record("allow", "allow-listed", &addrs, &[]);
        return build(&q, query, code, kept, udp);
    }
    let removed = removed.join("; ");
    let filtered = ["dns-answer-filtered".to_owned()];
    if addrs.is_empty() {
        record(
            "deny",
            &format!("answer removed: {removed}"),
            &[],
            &filtered,
        );
        return reply(&q, ResponseCode::NXDomain);
    }
    record(
        "allow",
        &format!("allow-listed; removed from the answer: {removed}"),
        &addrs,
        &filtered,
    );
    build(&q, query, code, kept, udp)
}

/// The response to `q`: its question, `answers`, nothing else. Over UDP, an answer larger than
/// the job's resolver accepts is truncated (TC) so it asks again over TCP.
fn build(
    q: &Message,
    query: &Query,
    code: ResponseCode,
    answers: Vec<hickory_proto::rr::Record>,
    udp: bool,
) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    m.add_query(query.clone());
    m.add_answers(answers);
    if q.extensions().is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD).set_version(0);
        m.set_edns(e);
    }
    let bytes = m.to_vec().ok()?;
    let limit = match q.extensions() {
        _ if !udp => usize::from(u16::MAX),
        Some(e) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
        None => 512,
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    m.take_answers();
    m.set_truncated(true);
    m.to_vec().ok()
}

async fn upstream_udp(upstream: SocketAddr, raw: &[u8]) -> Result<Vec<u8>, String> {
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

async fn upstream_tcp(upstream: SocketAddr, raw: &[u8]) -> Result<Vec<u8>, String> {
    let exchange = async {
        let mut s = TcpStream::connect(upstream).await?;
        let l = u16::try_from(raw.len()).map_err(std::io::Error::other)?;
        s.write_all(&l.to_be_bytes()).await?;
        s.write_all(raw).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(DNS_TIMEOUT, exchange).await {
        Ok(r) => r.map_err(|e| format!("{upstream} over TCP: {e}")),
        Err(_) => Err(format!("no answer from {upstream} over TCP")),
    }
}

/// Asks the upstream resolver for the A records of `name` in a query airlock builds: a fresh
/// id, one question, recursion desired, EDNS without options. The response must echo the id
/// and the question; a truncated one is asked again over TCP.
async fn lookup(upstream: SocketAddr, name: &Name) -> Result<Message, String> {
    let question = Query::query(name.clone(), RecordType::A);
    let mut m = Message::new();
    m.set_id(rand_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(question.clone());
    let mut e = Edns::new();
    e.set_max_payload(EDNS_PAYLOAD).set_version(0);
    m.set_edns(e);
    let raw = m.to_vec().map_err(|e| e.to_string())?;
    let mut resp =
        Message::from_vec(&upstream_udp(upstream, &raw).await?).map_err(|e| e.to_string())?;
    if resp.truncated() {
        resp =
            Message::from_vec(&upstream_tcp(upstream, &raw).await?).map_err(|e| e.to_string())?;
    }
    if resp.id() != m.id() || resp.message_type() != MessageType::Response {
        return Err("answer id mismatch".into());
    }
    if resp.queries() != [question] {
        return Err("the answer is for another question".into());
    }
    Ok(resp)
}

/// Resolves through the cache of the proxies.
pub(super) async fn resolve_cached(ctx: &Ctx, name: &str) -> Result<Vec<Ipv4Addr>, String> {
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
        cache_insert(
            &mut c,
            key,
            (Instant::now() + ttl.min(CACHE_MAX_TTL), v.clone()),
        );
    }
    Ok(v)
}

/// Most names the proxies' cache holds. A job may name as many different allowed names as it
/// likes (a wildcard domain whose zone answers every name): the cache lives in airlock's
/// process and must not grow with them.
pub(super) const CACHE_MAX_NAMES: usize = 4096;

/// The proxies' resolved names: addresses and until when they may be used.
pub(super) type Cache = std::collections::HashMap<String, (Instant, Vec<Ipv4Addr>)>;

/// Inserts into the cache, keeping it at most [`CACHE_MAX_NAMES`]: expired entries go first;
/// if every entry is still fresh, the new name is simply not cached (it is resolved again
/// next time, which costs a lookup, never correctness).
fn cache_insert(c: &mut Cache, key: String, entry: (Instant, Vec<Ipv4Addr>)) {
    if c.len() >= CACHE_MAX_NAMES && !c.contains_key(&key) {
        let now = Instant::now();
        c.retain(|_, (until, _)| now < *until);
        if c.len() >= CACHE_MAX_NAMES {
            return;
        }
    }
    c.insert(key, entry);
}

/// Resolves `name` to IPv4 addresses through the upstream resolver; also returns the smallest
/// TTL of the answers.
async fn resolve(upstream: SocketAddr, name: &str) -> Result<(Vec<Ipv4Addr>, Duration), String> {
    let n =
        Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).map_err(|e| e.to_string())?;
    let resp = lookup(upstream, &n).await?;
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

#[cfg(test)]
mod tests {

    #[test]
    fn the_proxies_cache_stays_bounded() {
        let mut c = Cache::new();
        let fresh = Instant::now() + Duration::from_secs(30);
        for i in 0..CACHE_MAX_NAMES + 100 {
            cache_insert(&mut c, format!("n{i}.wild.test"), (fresh, vec![]));
        }
        assert_eq!(c.len(), CACHE_MAX_NAMES);
        // A name already cached is refreshed; expired names make room.
        cache_insert(
            &mut c,
            "n0.wild.test".into(),
            (fresh, vec![Ipv4Addr::LOCALHOST]),
        );
        assert_eq!(c["n0.wild.test"].1, vec![Ipv4Addr::LOCALHOST]);
        let gone = Instant::now();
        for (until, _) in c.values_mut().take(10) {
            *until = gone;
        }
        cache_insert(&mut c, "new.wild.test".into(), (fresh, vec![]));
        assert!(c.contains_key("new.wild.test"));
        assert!(c.len() <= CACHE_MAX_NAMES);
    }
    use super::*;
    use hickory_proto::rr::{rdata::A, Record};

    fn query(build: impl FnOnce(&mut Message)) -> Message {
        let mut m = Message::new();
        m.set_id(7).set_recursion_desired(true);
        build(&mut m);
        m
    }

    fn q(name: &str) -> Query {
        Query::query(Name::from_ascii(name).expect("name"), RecordType::A)
    }

    #[test]
    fn only_one_bare_question_is_well_formed() {
        assert_eq!(
            malformed(&query(|m| {
                m.add_query(q("a.test."));
            })),
            None
        );
        let with_edns = query(|m| {
            m.add_query(q("a.test."));
            let mut e = Edns::new();
            e.options_mut()
                .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                    65001,
                    b"x".to_vec(),
                ));
            m.set_edns(e);
        });
        let parsed = Message::from_vec(&with_edns.to_vec().expect("encode")).expect("decode");
        assert_eq!(malformed(&parsed), None);
        let two = query(|m| {
            m.add_query(q("a.test."));
            m.add_query(q("b.test."));
        });
        assert!(malformed(&two).is_some_and(|w| w.contains("2 questions") && w.contains("b.test")));
        assert!(malformed(&query(|_| {})).is_some());
        let rr = Record::from_rdata(
            Name::from_ascii("x.test.").expect("name"),
            60,
            RData::A(A::new(1, 2, 3, 4)),
        );
        for (what, m) in [
            (
                "answer",
                query(|m| {
                    m.add_query(q("a.test."));
                    m.add_answer(rr.clone());
                }),
            ),
            (
                "authority",
                query(|m| {
                    m.add_query(q("a.test."));
                    m.add_name_server(rr.clone());
                }),
            ),
            (
                "additional",
                query(|m| {
                    m.add_query(q("a.test."));
                    m.add_additional(rr.clone());
                }),
            ),
        ] {
            let parsed = Message::from_vec(&m.to_vec().expect("encode")).expect("decode");
            assert!(
                malformed(&parsed).is_some_and(|w| w.contains(what)),
                "{what}"
            );
        }
    }

    #[test]
    fn garbage_gets_a_formerr_header_and_responses_nothing() {
        let mut raw = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        let r = formerr_raw(&raw).expect("formerr");
        assert_eq!(&r[..4], &[0x12, 0x34, 0x81, 0x81]);
        raw[2] |= 0x80;
        assert_eq!(formerr_raw(&raw), None);
        assert_eq!(formerr_raw(&raw[..5]), None);
    }

    #[test]
    fn a_large_answer_over_udp_is_truncated() {
        let ask = query(|m| {
            m.add_query(q("a.test."));
        });
        let answers: Vec<Record> = (0..60u8)
            .map(|i| {
                Record::from_rdata(
                    Name::from_ascii("a.test.").expect("name"),
                    60,
                    RData::A(A::new(198, 51, 100, i)),
                )
            })
            .collect();
        let query = ask.queries()[0].clone();
        let udp = build(&ask, &query, ResponseCode::NoError, answers.clone(), true).expect("udp");
        let m = Message::from_vec(&udp).expect("decode");
        assert!(m.truncated() && m.answers().is_empty() && udp.len() <= 512);
        let tcp = build(&ask, &query, ResponseCode::NoError, answers, false).expect("tcp");
        assert_eq!(Message::from_vec(&tcp).expect("decode").answers().len(), 60);
    }
}
