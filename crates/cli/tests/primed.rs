//! `airlock run --late-env`, a primed sandbox, end to end with the real binary as root: it is
//! created and checked, says so on its gate, runs nothing until the late variables arrive,
//! then starts with them (redacted, on no disk); a closed gate retires it unused; what does
//! not fit is refused before anything exists.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

/// A value long enough to be redacted, distinctive enough to be searched for.
const SECRET: &str = "late-secret-0f9a1c7e5d3b";

/// Starts `airlock run --late-env NAME… -- argv…` with its stdin a socket; returns the child
/// and the gate.
fn primed(w: &World, names: &[&str], argv: &[&str]) -> (Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut c = w.cmd();
    c.args(["run", "--report"])
        .arg(w.dir.path().join("report.json"))
        .args(names.iter().flat_map(|n| ["--late-env", n]))
        .arg("-w")
        .arg(w.ws())
        .arg("--")
        .args(argv)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("airlock run");
    ours.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    (child, ours)
}

fn await_ready(gate: &mut UnixStream) {
    let mut b = [0u8; 1];
    gate.read_exact(&mut b)
        .expect("the sandbox says it is ready");
    assert_eq!(&b, b"r");
}

fn frame(env: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in env {
        body.extend_from_slice(format!("{k}={v}").as_bytes());
        body.push(0);
    }
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend(body);
    f
}

/// Every record of the audit log, straight from its file (what `audit show` reads).
fn all_records(w: &World) -> Vec<serde_json::Value> {
    std::fs::read_to_string(w.data().join("audit/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The job directory of the one sandbox in this world's state.
fn only_job_dir(w: &World) -> std::path::PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(w.state().join("jobs"))
        .expect("jobs dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

#[test]
fn a_primed_sandbox_runs_nothing_until_its_late_variables_arrive() {
    need_root!();
    let w = World::new();
    let (child, mut gate) = primed(
        &w,
        &["LATE_SECRET"],
        &[
            "/bin/sh",
            "-c",
            "echo \"got=$LATE_SECRET\"; /bin/echo \"argv $LATE_SECRET\" >/dev/null",
        ],
    );
    await_ready(&mut gate);
    // Primed: the container exists, its init is still airlock's helper, nothing is on the
    // record but the request, and the value is nowhere (it does not exist yet).
    let dir = only_job_dir(&w);
    let id = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let pid = std::fs::read_to_string(dir.join("init.pid")).expect("init.pid");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("__helper"),
        "the init exec'd before its start: {}",
        String::from_utf8_lossy(&cmdline)
    );
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<_> = all_records(&w)
        .into_iter()
        .filter(|r| r["job"] == id.as_str())
        .map(|r| r["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(before, ["job.requested", "job.primed"], "{before:?}");
    let primed_rec = all_records(&w)
        .into_iter()
        .find(|r| r["job"] == id.as_str() && r["kind"] == "job.primed")
        .expect("job.primed");
    assert_eq!(primed_rec["data"]["late_env"][0], "LATE_SECRET");
    assert_eq!(
        primed_rec["data"]["init"].as_i64().map(|p| p.to_string()),
        Some(pid.trim().to_owned()),
        "{primed_rec:#}"
    );
    // Start it.
    gate.write_all(&frame(&[("LATE_SECRET", SECRET)]))
        .expect("start");
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("got={SECRET}")),
        "{}",
        stdout(&o)
    );
    let recs: Vec<_> = all_records(&w)
        .into_iter()
        .filter(|r| r["job"] == id.as_str())
        .collect();
    let kinds: Vec<&str> = recs.iter().filter_map(|r| r["kind"].as_str()).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).expect(k);
    // The start (its variables named) comes before anything runs; `job.started` and the
    // first exec are written by two threads, in either order.
    assert!(
        at("secret.injected") < at("job.started") && at("secret.injected") < at("process.exec"),
        "{kinds:?}"
    );
    let injected = recs
        .iter()
        .find(|r| r["kind"] == "secret.injected")
        .expect("injected");
    assert_eq!(injected["data"]["names"][0], "LATE_SECRET");
    // The entry program was hashed while the sandbox waited: its exec record still carries
    // the hash (from the job's own cache).
    let first = recs
        .iter()
        .find(|r| r["kind"] == "process.exec")
        .expect("exec");
    assert_eq!(first["data"]["path"], "/bin/sh", "{first:#}");
    assert!(
        first["data"]["exe"]["sha256"]
            .as_str()
            .is_some_and(|h| h.len() == 64),
        "{first:#}"
    );
    // Redacted where the job put it on a command line; on no disk at all.
    let text = serde_json::to_string(&recs).expect("json");
    assert!(text.contains("argv [secret:LATE_SECRET]"), "{text}");
    for d in [w.state(), w.data()] {
        let mut stack = vec![d];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(b) = std::fs::read(&p) {
                    assert!(
                        !b.windows(SECRET.len()).any(|x| x == SECRET.as_bytes()),
                        "the late value is on disk in {}",
                        p.display()
                    );
                }
            }
        }
    }
    w.assert_clean();
}

#[test]
fn a_closed_gate_retires_the_sandbox_and_a_wrong_start_is_refused() {
    need_root!();
    let w = World::new();
    // Closed before the start: torn down, never started, outcome interrupted (SIGHUP).
    let (child, mut gate) = primed(&w, &["LATE_SECRET"], &["/bin/echo", "ran"]);
    await_ready(&mut gate);
    drop(gate);
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(129), "{}", stderr(&o));
    assert!(!stdout(&o).contains("ran"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.dir.path().join("report.json")).expect("report"))
            .expect("json");
    assert_eq!(report["outcome"]["kind"], "interrupted", "{report:#}");
    let id = report["id"].as_str().expect("id").to_owned();
    assert!(
        !all_records(&w).iter().any(|r| r["job"] == id.as_str()
            && (r["kind"] == "job.started" || r["kind"] == "process.exec")),
        "a retired primed sandbox ran something"
    );
    w.assert_clean();

    // A start that sets a variable not named with --late-env: refused, nothing ran.
    let (child, mut gate) = primed(&w, &["LATE_SECRET"], &["/bin/echo", "ran"]);
    await_ready(&mut gate);
    gate.write_all(&frame(&[("PATH", "/tmp/evil")]))
        .expect("start");
    let o = child.wait_with_output().expect("wait");
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("ran"));
    assert!(
        stderr(&o).contains("not one of the job's late variables"),
        "{}",
        stderr(&o)
    );
    w.assert_clean();

    // A malformed frame: refused, nothing ran.
    let (child, mut gate) = primed(&w, &["LATE_SECRET"], &["/bin/echo", "ran"]);
    await_ready(&mut gate);
    gate.write_all(&[5, 0, 0, 0, b'x', b'y', b'z', 0, 0])
        .expect("start");
    let o = child.wait_with_output().expect("wait");
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("ran"));
    w.assert_clean();
}

#[test]
fn what_cannot_be_primed_is_refused_before_anything_exists() {
    need_root!();
    let w = World::new();
    // stdin not a socket.
    let o = w.run(&["--late-env", "X"], &["/bin/true"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("stdin must be a Unix socket"),
        "{}",
        stderr(&o)
    );
    // Not a variable name.
    let (child, _gate) = primed(&w, &["1BAD"], &["/bin/true"]);
    let o = child.wait_with_output().expect("wait");
    assert!(
        stderr(&o).contains("1BAD is not a variable name"),
        "{}",
        stderr(&o)
    );
    // Another executor than libcontainer.
    let p = w.policy("version = 1\n[groups.default]\nexecutor = \"runc\"\n");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let o = w
        .cmd()
        .arg("run")
        .arg("--policy")
        .arg(&p)
        .args(["--late-env", "X", "--", "/bin/true"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .output()
        .expect("run");
    drop(ours);
    assert!(
        stderr(&o).contains("a primed sandbox needs libcontainer"),
        "{}",
        stderr(&o)
    );
    w.assert_clean();
    assert!(
        std::fs::read_dir(w.state().join("jobs"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "something was created"
    );
}

/// Milliseconds since the epoch, on the audit log's clock.
fn now_ms_f() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The sandbox's first instruction after the decision to run it, without serve: a primed
/// `airlock run --late-env` of `/bin/true` (start frame sent → its first exec on the record)
/// and a plain `airlock run` (spawned → its first exec), against bare libcontainer's whole
/// run of the same spec (`AIRLOCK_BENCH_BUNDLE`, scripts/bench-primed.sh), interleaved in one
/// run. The audit clock has millisecond resolution.
#[test]
#[ignore = "benchmark: scripts/bench-primed.sh"]
fn bench_primed_start() {
    need_root!();
    let n: usize = std::env::var("AIRLOCK_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let bundle_bin = std::env::var("AIRLOCK_BENCH_BUNDLE").expect("AIRLOCK_BENCH_BUNDLE");
    let w = World::new();
    let bundle = w.dir.path().join("bundle");
    assert!(std::process::Command::new(&bundle_bin)
        .arg("prepare")
        .arg(&bundle)
        .status()
        .is_ok_and(|s| s.success()));
    let first_exec = |w: &World, job: &str| -> f64 {
        all_records(w)
            .iter()
            .filter(|r| r["job"] == job && r["kind"] == "process.exec")
            .filter_map(|r| r["time_ms"].as_f64())
            .fold(f64::MAX, f64::min)
    };
    let report_id = |w: &World| -> String {
        let r: serde_json::Value = serde_json::from_slice(
            &std::fs::read(w.dir.path().join("report.json")).expect("report"),
        )
        .expect("json");
        r["id"].as_str().expect("id").to_owned()
    };
    let (mut primed_ms, mut run_ms, mut bare_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        // Bare libcontainer: create, start, wait, delete.
        let t = std::time::Instant::now();
        assert!(std::process::Command::new(&bundle_bin)
            .arg("run")
            .arg(&bundle)
            .status()
            .is_ok_and(|s| s.success()));
        bare_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        // Primed: ready, then the start frame.
        let (child, mut gate) = primed(&w, &["LATE_SECRET"], &["/bin/true"]);
        await_ready(&mut gate);
        let sent = now_ms_f();
        gate.write_all(&frame(&[("LATE_SECRET", SECRET)]))
            .expect("start");
        assert!(child.wait_with_output().expect("wait").status.success());
        primed_ms.push(first_exec(&w, &report_id(&w)) - sent);
        // Plain airlock run.
        let t0 = now_ms_f();
        let o = w
            .cmd()
            .args(["run", "-q", "--report"])
            .arg(w.dir.path().join("report.json"))
            .args(["--", "/bin/true"])
            .output()
            .expect("run");
        assert!(o.status.success());
        run_ms.push(first_exec(&w, &report_id(&w)) - t0);
    }
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[(v.len() * 95 / 100).min(v.len() - 1)])
    };
    let (bm, bp) = stat(&mut bare_ms);
    println!("BENCH sandbox start, {n} runs each, ms (median / p95 / median vs bare libcontainer's whole run):");
    println!(
        "BENCH | bare libcontainer: create, start, wait, delete | {bm:.1} | {bp:.1} | 1.00x |"
    );
    for (name, v) in [
        ("airlock run: spawned -> first exec", &mut run_ms),
        (
            "primed airlock run: start frame sent -> first exec",
            &mut primed_ms,
        ),
    ] {
        let (m, p) = stat(v);
        println!("BENCH | {name} | {m:.1} | {p:.1} | {:.2}x |", m / bm);
    }
    w.assert_clean();
}
