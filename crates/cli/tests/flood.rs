//! A job that floods airlock's own records (issue 15, item 1): denied syscalls, refused DNS
//! queries and files. airlock's memory and the job's audit volume must stay bounded, what is
//! not written one by one must be aggregated with its count (never dropped), and the flood
//! must raise an alert.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

/// airlock's peak RSS (VmHWM, KiB) while it runs `argv` as a job, and its output.
fn run_measured(w: &World, extra: &[&str], script: &str) -> (u64, std::process::Output) {
    let mut c = w.cmd();
    c.arg("run")
        .args(extra)
        .arg("-w")
        .arg(w.ws())
        .arg("--")
        .args(["/bin/sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("airlock");
    // nsenter execs airlock: the pid is airlock's.
    let status = format!("/proc/{}/status", child.id());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let poller = std::thread::spawn(move || {
        let mut hwm = 0u64;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(s) = std::fs::read_to_string(&status) {
                if let Some(v) = s
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    hwm = hwm.max(v);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        hwm
    });
    let out = child.wait_with_output().expect("wait");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (poller.join().expect("poller"), out)
}

fn count_of(out: &str, kind: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with(&format!("flood={kind} ")))
        .and_then(|l| l.split("count=").nth(1))
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count for {kind} in {out}"))
}

#[test]
fn a_record_flood_is_bounded_aggregated_and_alerted() {
    need_root!();
    let w = World::new();
    // The same airlock, idle for the same kind of job: the baseline.
    let (idle, o) = run_measured(&w, &[], "sleep 1");
    assert!(o.status.success(), "{}", stderr(&o));
    let (peak, o) = run_measured(
        &w,
        &[],
        "./airlock-probe flood syscall 3000; ./airlock-probe flood dns 3000",
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let (calls, queries) = (count_of(&out, "syscall"), count_of(&out, "dns"));
    assert!(
        calls > 20_000,
        "the flood was too slow to test anything: {out}"
    );
    assert!(queries > 2_000, "the DNS flood was too slow: {out}");

    let all = show(&w, &["--json"]);
    let job = all
        .iter()
        .rev()
        .find(|r| r["kind"] == "job.ended")
        .and_then(|r| r["job"].as_str())
        .expect("job.ended")
        .to_owned();
    let of_job: Vec<&serde_json::Value> = all.iter().filter(|r| r["job"] == job.as_str()).collect();
    // Bounded: the defaults let a key write its burst and then 20 a second; with caps for
    // the whole job. Thousands, not the hundreds of thousands the job caused.
    assert!(
        of_job.len() < 15_000,
        "{} audit records for one job",
        of_job.len()
    );
    // Aggregated, never dropped: the written acct records plus the aggregated count are
    // exactly the calls the job made.
    let written = of_job
        .iter()
        .filter(|r| r["kind"] == "syscall.denied" && r["data"]["syscall"] == "acct")
        .count() as u64;
    let aggs: Vec<&&serde_json::Value> = of_job
        .iter()
        .filter(|r| {
            r["kind"] == "audit.aggregated"
                && r["data"]["kind"] == "syscall.denied"
                && r["data"]["key"] == "acct"
        })
        .collect();
    assert!(!aggs.is_empty(), "no aggregate record for acct");
    let aggregated: u64 = aggs
        .iter()
        .map(|r| r["data"]["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        written + aggregated,
        calls,
        "written {written} + aggregated {aggregated} != calls {calls}"
    );
    for a in &aggs {
        let d = &a["data"];
        assert!(
            d["first_seq"].as_u64().is_some() && d["last_seq"].as_u64().is_some(),
            "{a}"
        );
        assert!(d["first_ms"].as_u64() <= d["last_ms"].as_u64(), "{a}");
    }
    // The DNS flood is aggregated too (at the gateway or in the log). A record of the
    // gateway slowing the job down (flag `slowed`, no query of its own) is not a query.
    let query = |r: &&&serde_json::Value| {
        r["kind"] == "net.dns"
            && !r["data"]["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "slowed"))
    };
    let dns_written = of_job.iter().filter(query).count() as u64;
    let dns_counted: u64 = of_job
        .iter()
        .filter(query)
        .map(|r| r["data"]["count"].as_u64().unwrap_or(1))
        .sum::<u64>()
        + of_job
            .iter()
            .filter(|r| r["kind"] == "audit.aggregated" && r["data"]["kind"] == "net.dns")
            .map(|r| r["data"]["count"].as_u64().unwrap_or(0))
            .sum::<u64>();
    assert!(
        dns_written < queries,
        "{dns_written} DNS records for {queries} queries"
    );
    assert!(
        dns_counted >= queries * 9 / 10 && dns_counted <= queries,
        "DNS: {dns_counted} counted for {queries} queries"
    );
    // The flood itself is an alert, naming the kind.
    let floods: Vec<&&serde_json::Value> = of_job
        .iter()
        .filter(|r| r["kind"] == "alert" && r["data"]["detector"] == "record-flood")
        .collect();
    assert!(!floods.is_empty(), "no record-flood alert");
    let summary = floods[0]["data"]["summary"].as_str().unwrap_or("");
    assert!(summary.contains("syscall.denied"), "{summary}");
    // The privileged call is still an alert of its own, counted in full.
    assert!(
        of_job
            .iter()
            .any(|r| r["kind"] == "alert" && r["data"]["detector"] == "privileged-operation"),
        "no privileged-operation alert"
    );
    // airlock's own memory: bounded, whatever the job did.
    assert!(
        peak <= idle + 64 * 1024,
        "airlock peaked at {peak} KiB, idle {idle} KiB"
    );
    w.assert_clean();
}

#[test]
fn a_million_files_scan_is_bounded_and_summarised() {
    need_root!();
    let w = World::new();
    let n = 200_000u64;
    let (idle, o) = run_measured(&w, &[], "sleep 1");
    assert!(o.status.success(), "{}", stderr(&o));
    let t = std::time::Instant::now();
    let (peak, o) = run_measured(&w, &[], &format!("./airlock-probe flood files 60000 {n}"));
    let took = t.elapsed();
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert_eq!(count_of(&out, "files"), n, "{out}");
    let job = show(&w, &["--json", "--kind", "job.ended"])
        .last()
        .and_then(|r| r["job"].as_str().map(str::to_owned))
        .expect("job");
    let changed = records(&w, "file.changed")
        .into_iter()
        .filter(|r| r["job"] == job.as_str())
        .count();
    let scans: Vec<serde_json::Value> = records(&w, "file.scan")
        .into_iter()
        .filter(|r| r["job"] == job.as_str())
        .collect();
    assert_eq!(scans.len(), 1, "{scans:?}");
    let s = &scans[0]["data"];
    // Only the first few thousand listed one by one, everything counted by category.
    assert!(changed <= 5_000, "{changed} file.changed records");
    assert_eq!(s["listed"].as_u64(), Some(changed as u64), "{s}");
    assert_eq!(s["total"], s["by_category"]["created"], "{s}");
    if s["complete"] == true {
        assert!(s["total"].as_u64().unwrap_or(0) > n, "{s}");
    } else {
        // A loaded machine (debug build) may reach the scan's time bound first: then the
        // scan says where it stopped, and that is an alert.
        assert_eq!(s["stopped"], "time", "{s}");
        assert!(s["total"].as_u64().unwrap_or(0) > 10_000, "{s}");
        assert!(
            records(&w, "alert")
                .iter()
                .any(|r| r["job"] == job.as_str() && r["data"]["detector"] == "record-flood"),
            "an incomplete scan raised no record-flood alert"
        );
    }
    assert!(
        peak <= idle + 64 * 1024,
        "airlock peaked at {peak} KiB, idle {idle} KiB"
    );
    assert!(took < Duration::from_secs(120), "took {took:?}");
    w.assert_clean();
}

#[test]
fn one_jobs_flood_of_denied_flows_does_not_silence_the_next_job() {
    need_root!();
    let w = World::new();
    // More new denied flows than the firewall's shared set of reported flows holds (65536).
    let o = w.sh(&[], "./airlock-probe flood drops 20000 100000");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(count_of(&out, "drops") >= 70_000, "{out}");
    // Within the set's 60 s, another job is refused one packet: it must still be recorded.
    let report = w.dir.path().join("b.json");
    let o = w.sh(
        &["--report", &report.to_string_lossy()],
        "python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('10.98.7.7', 4444))\"; sleep 1",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    let recorded = rep["egress"]
        .as_array()
        .map(|a| {
            a.iter()
                .any(|r| r["kind"] == "drop" && r["dialled"] == "10.98.7.7:4444")
        })
        .unwrap_or(false);
    assert!(
        recorded,
        "the second job's drop went unrecorded: {}",
        rep["egress"]
    );
    w.assert_clean();
}
