use crate::Kind;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::Sender;

use hmac::Mac;

use super::*;
use crate::alert::{Severity, Technique};

fn alert(n: u64) -> Alert {
    Alert {
        detector: "denied-egress".into(),
        technique: Technique::new("T1041", "Exfiltration Over C2 Channel"),
        severity: Severity::Medium,
        job: "j1".into(),
        summary: format!("alert {n}"),
        evidence: vec![n, n + 1],
        time_ms: 1_700_000_000_000,
    }
}

/// One request as the test server received it.
#[derive(Debug)]
struct Req {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 request. Hand-written: the test needs only the head and a
/// Content-Length body, and an HTTP server crate would be a dependency for this alone.
fn read_request(s: &TcpStream) -> Option<Req> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Req { headers, body })
}

/// A server on 127.0.0.1:0 answering requests with the given statuses in turn (200 after
/// the list runs out) and reporting each request.
fn server(statuses: Vec<u16>, seen: Sender<Req>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for s in l.incoming().flatten() {
            let Some(req) = read_request(&s) else {
                continue;
            };
            let code = statuses.next().unwrap_or(200);
            // Recorded before the answer: the sink may report delivery (and the test read
            // what the server saw) as soon as it has the answer.
            let _ = seen.send(req);
            let _ = (&s).write_all(
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    format!("http://{addr}/hook")
}

/// A server that accepts and never answers.
fn black_hole() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    format!("http://{addr}/hook")
}

fn config(url: String, outbox: &Path) -> WebhookConfig {
    WebhookConfig {
        url,
        key: Secret::new("k3y"),
        timeout: Duration::from_secs(5),
        retries: 5,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        outbox: outbox.to_owned(),
        queue: 16,
    }
}

fn verify(req: &Req, key: &[u8]) {
    let sig = req
        .header("x-airlock-signature-256")
        .expect("signature header");
    let hex_sig = sig.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(&req.body);
    mac.verify_slice(&hex::decode(hex_sig).expect("hex"))
        .expect("the signature is the HMAC of the body");
}

#[test]
fn jsonl_sink_appends_one_line_per_alert() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("sub/alerts.jsonl");
    let s = JsonlSink::new(&path);
    s.append(&[alert(1), alert(2)]).expect("append");
    s.append(&[]).expect("nothing");
    s.append(&[alert(3)]).expect("append");
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["summary"], "alert 3");
    assert_eq!(lines[0]["id"], alert(1).id());
    assert_eq!(lines[1]["evidence"], serde_json::json!([2, 3]));
    let back: Alert = serde_json::from_value(lines[0].clone()).expect("an alert again");
    assert_eq!(back, alert(1));
}

#[test]
fn webhook_signs_and_retries_until_it_gets_through() {
    let dir = tempfile::tempdir().expect("tmp");
    let (tx, rx) = mpsc::channel();
    let url = server(vec![500, 503], tx);
    let sink = WebhookSink::start(config(url, dir.path())).expect("start");
    sink.send(&alert(7)).expect("send");
    let r = sink.flush(Instant::now() + Duration::from_secs(10));
    assert_eq!(
        r,
        FlushReport {
            delivered: 1,
            pending: 0,
            finished: true
        }
    );
    let reqs: Vec<Req> = rx.try_iter().collect();
    assert_eq!(reqs.len(), 3, "two failures, then success");
    for q in &reqs {
        verify(q, b"k3y");
        assert_eq!(q.body, reqs[0].body);
        assert_eq!(q.header("x-airlock-alert-id"), Some(alert(7).id().as_str()));
        assert_eq!(q.header("content-type"), Some("application/json"));
    }
    let body: serde_json::Value = serde_json::from_slice(&reqs[0].body).expect("json");
    assert_eq!(body["summary"], "alert 7");
    assert!(
        outbox_files(dir.path()).is_empty(),
        "delivered alerts leave the outbox"
    );
    // A wrong key does not verify.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"other").expect("key");
    mac.update(&reqs[0].body);
    let sig = signature(b"k3y", &reqs[0].body);
    assert!(mac
        .verify_slice(&hex::decode(&sig["sha256=".len()..]).expect("hex"))
        .is_err());
}

#[test]
fn a_dead_server_never_blocks_past_the_deadline_and_the_outbox_is_retried_next_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let sink = WebhookSink::start(config(black_hole(), dir.path())).expect("start");
    let t = Instant::now();
    for i in 0..40 {
        sink.send(&alert(i * 10)).expect("send");
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "send never waits: {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let r = sink.flush(Instant::now() + Duration::from_millis(300));
    let took = t.elapsed();
    assert!(took < Duration::from_millis(900), "flush took {took:?}");
    assert_eq!(r.pending, 40, "{r:?}");
    assert_eq!(r.delivered, 0);
    assert_eq!(outbox_files(dir.path()).len(), 40);

    // Next run, a live receiver: the outbox goes out first and empties.
    let (tx, rx) = mpsc::channel();
    let sink = WebhookSink::start(config(server(vec![], tx), dir.path())).expect("start");
    let r = sink.flush(Instant::now() + Duration::from_secs(20));
    assert_eq!((r.delivered, r.pending, r.finished), (40, 0, true));
    let reqs: Vec<Req> = rx.try_iter().collect();
    assert_eq!(reqs.len(), 40);
    reqs.iter().for_each(|q| verify(q, b"k3y"));
}

#[test]
fn a_refusing_server_gives_up_after_the_retries_and_keeps_the_alert() {
    // Bind and drop: nothing listens on the port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(format!("http://127.0.0.1:{port}/"), dir.path());
    cfg.retries = 2;
    let sink = WebhookSink::start(cfg).expect("start");
    sink.send(&alert(1)).expect("send");
    let r = sink.flush(Instant::now() + Duration::from_secs(10));
    assert_eq!((r.delivered, r.pending, r.finished), (0, 1, true));
    assert!(dir.path().join(format!("{}.json", alert(1).id())).exists());
}

#[test]
fn dropping_a_sink_without_flush_returns_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Instant::now();
    {
        let sink = WebhookSink::start(config(black_hole(), dir.path())).expect("start");
        sink.send(&alert(1)).expect("send");
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(outbox_files(dir.path()).len(), 1);
}

#[test]
fn sinks_from_policy_write_the_file_and_post_the_webhook() {
    let dir = tempfile::tempdir().expect("tmp");
    let (tx, rx) = mpsc::channel();
    let alerts = airlock_policy::Alerts {
        file: Some(dir.path().join("alerts.jsonl")),
        webhook: Some(airlock_policy::Webhook {
            url: server(vec![], tx),
            secret: "HOOK_KEY".into(),
            timeout: airlock_policy::HumanDuration(Duration::from_secs(2)),
            retries: 1,
        }),
    };
    let outbox = dir.path().join("outbox");
    assert!(matches!(
        Sinks::from_policy(&alerts, None, &outbox),
        Err(SinkError::MissingKey { name }) if name == "HOOK_KEY"
    ));
    let sinks = Sinks::from_policy(&alerts, Some(Secret::new("s3cret")), &outbox).expect("sinks");
    assert!(sinks.deliver(&[alert(1), alert(5)]).is_empty());
    let r = sinks
        .flush(Instant::now() + Duration::from_secs(10))
        .expect("webhook");
    assert_eq!((r.delivered, r.pending), (2, 0));
    let reqs: Vec<Req> = rx.try_iter().collect();
    assert_eq!(reqs.len(), 2);
    reqs.iter().for_each(|q| verify(q, b"s3cret"));
    let text = std::fs::read_to_string(dir.path().join("alerts.jsonl")).expect("file");
    assert_eq!(text.lines().count(), 2);
    // No sinks configured: nothing to flush.
    let none = Sinks::from_policy(&airlock_policy::Alerts::default(), None, &outbox).expect("none");
    assert!(none.deliver(&[alert(1)]).is_empty());
    assert!(none.flush(Instant::now()).is_none());
}

#[test]
fn checkpoints_of_the_log_reach_the_file_and_the_signed_webhook_and_flush_still_ends() {
    let dir = tempfile::tempdir().expect("tmp");
    let (tx, rx) = mpsc::channel();
    let alerts = airlock_policy::Alerts {
        file: Some(dir.path().join("alerts.jsonl")),
        webhook: Some(airlock_policy::Webhook {
            url: server(vec![], tx),
            secret: "HOOK_KEY".into(),
            timeout: airlock_policy::HumanDuration(Duration::from_secs(2)),
            retries: 1,
        }),
    };
    let sinks = Sinks::from_policy(
        &alerts,
        Some(Secret::new("s3cret")),
        &dir.path().join("outbox"),
    )
    .expect("sinks");
    let key = crate::Key::from_bytes(b"checkpoint key for this test....");
    let mut log = crate::AuditLog::open(&dir.path().join("audit")).expect("open");
    log.configure(crate::LogSettings {
        key: Some(key.clone()),
        ship: Some(sinks.checkpoint_shipper()),
        ..crate::LogSettings::default()
    })
    .expect("configure");
    log.append(Kind::JobEnded, Some("j1"), serde_json::json!({}))
        .expect("append");
    // The log keeps its shipper (as a job's writer thread would): flush must not wait for it.
    let t = Instant::now();
    let r = sinks
        .flush(Instant::now() + Duration::from_secs(10))
        .expect("webhook");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!((r.delivered, r.pending), (1, 0));
    let reqs: Vec<Req> = rx.try_iter().collect();
    assert_eq!(reqs.len(), 1);
    verify(&reqs[0], b"s3cret");
    let c: crate::Checkpoint = serde_json::from_slice(&reqs[0].body).expect("checkpoint");
    assert_eq!((c.seq, c.reason.as_str()), (1, "job.ended"));
    assert_eq!(c.check(Some(&key)), crate::MacCheck::Valid);
    assert_eq!(reqs[0].header("X-Airlock-Alert-Id"), Some(c.id().as_str()));
    let (cs, bad) = crate::checkpoint::read(&dir.path().join("alerts.jsonl")).expect("read");
    assert_eq!((cs, bad.len()), (vec![c], 0));
    assert!(log.take_ship_errors().is_empty());
}

#[test]
fn a_record_flood_does_not_flood_the_sinks_with_checkpoints() {
    let dir = tempfile::tempdir().expect("tmp");
    let alerts = airlock_policy::Alerts {
        file: Some(dir.path().join("alerts.jsonl")),
        webhook: None,
    };
    let sinks = Sinks::from_policy(&alerts, None, &dir.path().join("outbox")).expect("sinks");
    let mut log = crate::AuditLog::open(&dir.path().join("audit")).expect("open");
    log.configure(crate::LogSettings {
        checkpoint_file: Some(dir.path().join("ck.jsonl")),
        checkpoint_records: 10,
        ship: Some(sinks.checkpoint_shipper()),
        ..crate::LogSettings::default()
    })
    .expect("configure");
    for i in 0..1000 {
        log.append(
            Kind::SyscallDenied,
            Some("j"),
            serde_json::json!({ "i": i }),
        )
        .expect("append");
    }
    log.append(Kind::JobEnded, Some("j"), serde_json::json!({}))
        .expect("end");
    let local = crate::checkpoint::read(&dir.path().join("ck.jsonl")).expect("local");
    let shipped = crate::checkpoint::read(&dir.path().join("alerts.jsonl")).expect("sink");
    assert_eq!(local.0.len(), 101, "every 10 records, and the job's end");
    assert_eq!(
        shipped.0.len(),
        2,
        "the first, then only the job's end within the interval"
    );
    assert_eq!(shipped.0[1].reason, "job.ended");
}
