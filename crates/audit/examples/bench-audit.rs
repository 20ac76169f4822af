//! Audit log throughput: append (through the queue, group commit) and verify, each against a
//! baseline measured in the same run — plain JSON lines written / parsed without the chain.
//! `cargo run --release -p airlock-audit --example bench-audit [EVENTS]`

use std::io::{BufRead, Write};
use std::time::Instant;

use airlock_audit::{AuditLog, AuditQueue, Event};
use serde_json::json;

fn event(i: u64) -> Event {
    Event::new(
        airlock_audit::Kind::ProcessExec,
        Some("j0123456789abcdef"),
        json!({ "pid": 1000 + i, "ppid": 999, "uid": 1001, "cwd": "/home/runner/work",
                "path": "/usr/bin/cc", "argv": ["cc", "-c", "x.c", "-o", "x.o"] }),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(500_000);
    let dir = tempfile::tempdir()?;

    // Baseline: the same events as plain JSON lines, one buffered file, one fsync.
    let t = Instant::now();
    let plain = dir.path().join("plain.jsonl");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&plain)?);
        for i in 0..n {
            let e = event(i);
            serde_json::to_writer(
                &mut w,
                &json!({"time_ms": e.time_ms, "kind": e.kind, "job": e.job, "data": e.data}),
            )?;
            w.write_all(b"\n")?;
        }
        w.into_inner()?.sync_all()?;
    }
    let base_append = t.elapsed().as_secs_f64();

    let log_dir = dir.path().join("audit");
    let t = Instant::now();
    let q = AuditQueue::start(AuditLog::open(&log_dir)?, 4096);
    for i in 0..n {
        q.send(event(i))?;
    }
    q.sync()?;
    q.close()?;
    let append = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut parsed = 0u64;
    for l in std::io::BufReader::new(std::fs::File::open(&plain)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&l?)?;
        parsed += u64::from(v.is_object());
    }
    let base_verify = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let v = airlock_audit::verify(&log_dir)?;
    let verify = t.elapsed().as_secs_f64();
    assert_eq!(v.records, n);
    assert!(v.problems.is_empty());
    assert_eq!(parsed, n);

    let rate = |s: f64| n as f64 / s;
    println!("events: {n}");
    println!(
        "append: {:.0}/s (plain JSON lines {:.0}/s; ratio {:.2})",
        rate(append),
        rate(base_append),
        append / base_append
    );
    println!(
        "verify: {:.0}/s (plain JSON parse {:.0}/s; ratio {:.2})",
        rate(verify),
        rate(base_verify),
        verify / base_verify
    );
    Ok(())
}
