//! `airlock serve` as a process (the testbed binary: the real server, state and launcher,
//! with GitHub faked in a JSON file): the JIT config reaches the runner through the
//! environment only; kill -9 while jobs run, restart, everything reconciled and no job run
//! twice.
//!
//! As root with the airlock binary built (`cargo build -p airlock`), the sandboxes are real
//! (`airlock run` children) and everything runs inside the test's own network namespace; the
//! leak checks are those of `crates/cli/tests/common/mod.rs::World::assert_clean`. Otherwise a
//! stand-in script plays `airlock` (it execs the runner command), which still exercises the
//! process plumbing: environment, PR_SET_PDEATHSIG, reports.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_manager::state::{JobStatus, Store};
use airlock_manager::webhook::sign;

const TESTBED: &str = env!("CARGO_BIN_EXE_airlock-serve-testbed");
const SECRET: &str = "testbed secret";

struct Bed {
    dir: tempfile::TempDir,
    netns: Option<String>,
    real: bool,
    port: u16,
    child: Option<Child>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The airlock binary next to this test's target directory, when it was built.
fn real_airlock() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/debug/deps/process-xxxx → target/debug/airlock
    let p = exe.parent()?.parent()?.join("airlock");
    p.is_file().then_some(p)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Bed {
    /// `runner_sh` is the runner's shell script (run with /bin/sh -c).
    fn new(runner_sh: &str, max_concurrency: u32) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("airlock-serve-test-")
            .tempdir()
            .expect("tmp");
        let d = dir.path();
        let real = is_root() && real_airlock().is_some();
        let netns = real.then(|| {
            let name = format!(
                "alserve{}",
                d.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )
            .replace(['.', '-', '_'], "");
            let ok = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "cannot create netns {name}");
            let _ = Command::new("ip")
                .args(["-n", &name, "link", "set", "lo", "up"])
                .status();
            name
        });
        let airlock = match real_airlock().filter(|_| real) {
            Some(p) => p,
            None => {
                // Stand-in for `airlock`: `... run ... --report R -- CMD…` execs CMD;
                // `... gc --json` reports nothing to collect.
                let p = d.join("fake-airlock");
                std::fs::write(
                    &p,
                    "#!/bin/sh\nreport=\nwhile [ $# -gt 0 ]; do\n  case \"$1\" in\n    gc) echo '{\"removed\":[],\"skipped_live\":[],\"errors\":[]}'; exit 0;;\n    --report) shift; report=$1;;\n    --) shift; break;;\n  esac\n  shift\ndone\necho \"{\\\"id\\\":\\\"fake-$$\\\"}\" > \"$report\"\nexec \"$@\"\n",
                )
                .expect("write");
                chmod_x(&p);
                p
            }
        };
        std::fs::write(d.join("airlock-path"), airlock.to_string_lossy().as_bytes())
            .expect("write");
        std::fs::write(d.join("secret"), SECRET).expect("secret");
        std::fs::write(d.join("pat"), "unused").expect("pat");
        let runner = serde_json::to_string(&vec!["/bin/sh", "-c", runner_sh]).expect("json");
        std::fs::write(
            d.join("policy.toml"),
            format!(
                "version = 1\ndefault_group = \"ci\"\n[groups.ci]\nlabels = [\"airlock\"]\nrepositories = [\"octo-org/*\"]\nmax_runners = {max_concurrency}\nrunner = {runner}\negress = {{ mode = \"none\" }}\n[groups.ci.limits]\ntimeout = \"60s\"\n"
            ),
        )
        .expect("policy");
        let port = free_port(netns.as_deref());
        std::fs::write(
            d.join("serve.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\npolicy = \"{p}/policy.toml\"\nwebhook_secret = {{ file = \"{p}/secret\" }}\nstate_dir = \"{p}/state\"\ndata_dir = \"{p}/data\"\nmax_concurrency = {max_concurrency}\nshutdown_grace = \"1s\"\n[github]\norg = \"octo-org\"\ntoken = {{ file = \"{p}/pat\" }}\n",
                p = d.display()
            ),
        )
        .expect("serve.toml");
        Bed {
            dir,
            netns,
            real,
            port,
            child: None,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start(&mut self) {
        let d = self.dir.path();
        let airlock = std::fs::read_to_string(d.join("airlock-path")).expect("path");
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(TESTBED);
                c
            }
            None => Command::new(TESTBED),
        };
        c.arg(d.join("serve.toml"))
            .arg(airlock)
            .arg(d.join("github.json"))
            .stdin(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(d.join("serve.log"))
                    .expect("log"),
            );
        self.child = Some(c.spawn().expect("start testbed"));
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok((200, _)) = self.http("GET", "/readyz", &[], b"") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not become ready:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("serve.log")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        // nsenter execs the testbed, so the pid is serve's.
        c.kill().expect("kill -9");
        let _ = c.wait();
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = i32::try_from(c.id()).expect("pid");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        c.wait().expect("wait")
    }

    /// Minimal HTTP/1.1 client (one request per connection, `Connection: close`): enough for
    /// a loopback test and no client crate to pull in. As root it connects from inside the
    /// test's network namespace.
    fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        )
        .into_bytes();
        for (k, v) in headers {
            req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        let port = self.port;
        in_netns(self.netns.as_deref(), move || http_raw(port, &req))
    }

    fn deliver(&self, delivery: &str, job_id: u64) -> u16 {
        let body = payload(job_id);
        let (st, _) = self
            .http(
                "POST",
                "/webhook",
                &[
                    ("X-GitHub-Event", "workflow_job".into()),
                    ("X-GitHub-Delivery", delivery.into()),
                    (
                        "X-Hub-Signature-256",
                        sign(SECRET.as_bytes(), body.as_bytes()),
                    ),
                    ("Content-Type", "application/json".into()),
                ],
                body.as_bytes(),
            )
            .expect("deliver");
        st
    }

    fn store(&self) -> Store {
        Store::open(&self.path("data/serve/serve.db")).expect("db")
    }

    fn github(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path("github.json")).unwrap_or_default())
            .unwrap_or(serde_json::Value::Null)
    }

    fn wait_for(&self, what: &str, f: impl FnMut() -> bool) {
        self.wait_within(what, Duration::from_secs(60), f)
    }

    fn wait_within(&self, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}\n{}", self.log());
    }

    fn statuses(&self) -> Vec<JobStatus> {
        self.store()
            .all()
            .expect("jobs")
            .iter()
            .map(|j| j.status)
            .collect()
    }

    /// The checks of `World::assert_clean` (cli tests) on this bed's state directory.
    fn assert_clean(&self) {
        let state = self.path("state");
        let ls = |p: PathBuf| -> Vec<PathBuf> {
            std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        assert!(ls(state.join("jobs")).is_empty(), "job state left behind");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let s = state.to_string_lossy();
        assert!(!mounts.contains(s.as_ref()), "mounts left under {s}");
        assert!(
            ls(state.join("net/leases")).is_empty(),
            "address leases left"
        );
        for ex in ["libcontainer", "runc", "runsc"] {
            assert!(ls(state.join(ex)).is_empty(), "{ex} state left");
        }
        if let Some(ns) = &self.netns {
            let mut links = String::new();
            for _ in 0..100 {
                let o = Command::new("ip")
                    .args(["-n", ns, "-o", "link"])
                    .output()
                    .expect("ip");
                links = String::from_utf8_lossy(&o.stdout).into_owned();
                if !links.contains(": alk") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            assert!(!links.contains(": alk"), "job veths left:\n{links}");
            let o = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{ns}"))
                .args(["--", "nft", "list", "set", "inet", "airlock", "jobs"])
                .output()
                .expect("nft");
            let set = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(!set.contains("elements"), "firewall elements left:\n{set}");
        }
    }
}

fn http_raw(port: u16, req: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((status, body))
}

fn webhook_request(delivery: &str, body: &str) -> Vec<u8> {
    let sig = sign(SECRET.as_bytes(), body.as_bytes());
    format!(
        "POST /webhook HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\nX-GitHub-Event: workflow_job\r\nX-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: {sig}\r\nContent-Type: application/json\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn chmod_x(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn in_netns<T: Send + 'static>(
    netns: Option<&str>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let ns = netns.map(|n| format!("/run/netns/{n}"));
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            let fd = std::fs::File::open(&ns)?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this (fresh, short-lived) thread only; the fd is valid.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("client thread panicked"))?
}

fn free_port(netns: Option<&str>) -> u16 {
    in_netns(netns, || {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(l.local_addr()?.port())
    })
    .expect("port")
}

fn payload(id: u64) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../github/tests/fixtures/webhooks/workflow_job/queued.payload.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).expect("fixture")).expect("json");
    v["workflow_job"]["id"] = id.into();
    v["workflow_job"]["labels"] = serde_json::json!(["self-hosted", "airlock"]);
    v["repository"]["full_name"] = "octo-org/app".into();
    v["repository"]["private"] = true.into();
    v["repository"]["visibility"] = "private".into();
    v.to_string()
}

#[test]
fn jit_config_reaches_the_runner_in_its_environment_only() {
    // Exit 0 only if the variable is set, looks like the fake's config, and is in no argv.
    let mut bed = Bed::new(
        "case \"$ACTIONS_RUNNER_INPUT_JITCONFIG\" in jit-for-*) ;; *) exit 3;; esac; \
         for a in \"$0\" \"$@\"; do case \"$a\" in *jit-for-*) exit 4;; esac; done; \
         if grep -q 'jit-for[-]' /proc/self/cmdline /proc/$PPID/cmdline 2>/dev/null; then exit 5; fi; \
         exit 0",
        2,
    );
    eprintln!("real sandboxes: {}", bed.real);
    bed.start();
    assert_eq!(bed.deliver("d-1", 501), 202);
    bed.wait_for("the job to finish", || {
        bed.statuses() == vec![JobStatus::Done]
    });
    let j = bed.store().job(1).expect("job");
    assert_eq!(
        j.exit_code,
        Some(0),
        "runner check failed: {j:?}\n{}",
        bed.log()
    );
    let gh = bed.github();
    assert_eq!(gh["jit"], serde_json::json!(["airlock-501"]));
    assert_eq!(gh["runners"], serde_json::json!([]), "runner deleted");
    assert_eq!(bed.sigterm().code(), Some(0), "graceful exit");
    // The JIT config's value (the fake's is `jit-for-<runner id>`; the script's own text
    // holds only the pattern) was never written to a file: state, audit log, reports, logs.
    let leaked = Command::new("grep")
        .args(["-rl", "jit-for-1001"])
        .arg(bed.path("state"))
        .arg(bed.path("data"))
        .output()
        .expect("grep");
    assert!(
        String::from_utf8_lossy(&leaked.stdout).trim().is_empty(),
        "JIT config found in {}",
        String::from_utf8_lossy(&leaked.stdout)
    );
    if bed.real {
        bed.assert_clean();
    }
}

#[test]
fn kill9_then_restart_reconciles_and_runs_nothing_twice() {
    let mut bed = Bed::new("sleep 4; exit 0", 2);
    eprintln!("real sandboxes: {}", bed.real);
    bed.start();
    for (i, id) in [601u64, 602, 603].iter().enumerate() {
        assert_eq!(bed.deliver(&format!("d-{i}"), *id), 202);
    }
    bed.wait_for("two jobs running", || {
        bed.statuses() == vec![JobStatus::Running, JobStatus::Running, JobStatus::Queued]
    });
    bed.kill9();
    // PR_SET_PDEATHSIG: the sandboxes get SIGTERM and tear themselves down — well before
    // their runners' 4 s would have ended them.
    bed.wait_within(
        "the orphaned sandboxes to end",
        Duration::from_millis(2500),
        || {
            let o = Command::new("pgrep")
                .args(["-f", &bed.path("").to_string_lossy()])
                .output()
                .expect("pgrep");
            String::from_utf8_lossy(&o.stdout).trim().is_empty()
        },
    );
    bed.start();
    bed.wait_for("everything settled", || {
        bed.statuses() == vec![JobStatus::Lost, JobStatus::Lost, JobStatus::Done]
    });
    // The redelivery of a lost job does not run it again.
    assert_eq!(bed.deliver("d-0", 601), 200);
    assert_eq!(bed.deliver("d-new", 601), 202);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(bed.sigterm().code(), Some(0));
    let gh = bed.github();
    let mut jit: Vec<String> = serde_json::from_value(gh["jit"].clone()).expect("jit");
    jit.sort();
    assert_eq!(
        jit,
        vec!["airlock-601", "airlock-602", "airlock-603"],
        "every job registered once"
    );
    assert_eq!(
        gh["runners"],
        serde_json::json!([]),
        "no runner left at GitHub"
    );
    let audit = airlock_audit::read_all(&bed.path("data/audit")).expect("audit");
    let lost = audit
        .iter()
        .filter(|r| r.kind == "serve.reconcile.job_lost")
        .count();
    assert_eq!(lost, 2);
    let v = airlock_audit::verify(&bed.path("data/audit")).expect("verify");
    assert!(
        v.problems.is_empty(),
        "audit log broken: {:?}\n{}",
        v.problems,
        std::fs::read_to_string(bed.path("data/audit/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| &l[..l.len().min(300)])
            .collect::<Vec<_>>()
            .join("\n")
    );
    if bed.real {
        bed.assert_clean();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Time of the first `process.exec` of sandbox `id` in the audit log.
fn exec_ms(audit: &[airlock_audit::Record], id: &str) -> Option<u128> {
    audit
        .iter()
        .find(|r| r.kind == "process.exec" && r.job.as_deref() == Some(id))
        .map(|r| r.time_ms)
}

/// scripts/bench-serve.sh runs this (release build, root). Prints one `BENCH {json}` line:
/// webhook received → runner process exec'd in its sandbox (serve path, from the serve
/// database's receive time to the sandbox's `process.exec` audit record), against the same
/// command started by `airlock run` directly (baseline: spawn → `process.exec`), and the
/// sustained rate of accepted webhooks with no delivery lost.
#[test]
#[ignore = "benchmark: scripts/bench-serve.sh"]
fn bench_serve() {
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let hooks: usize = std::env::var("BENCH_WEBHOOKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let clients = 4usize;
    let mut bed = Bed::new("exit 0", 4);
    if !bed.real {
        eprintln!("SKIPPED bench_serve: needs root and the airlock binary");
        return;
    }
    let airlock = real_airlock().expect("airlock");
    let ns = bed.netns.clone().expect("netns");
    // Baseline: `airlock run` of the same command, one after another.
    let mut base = Vec::new();
    for i in 0..jobs {
        let report = bed.path(&format!("base-{i}.json"));
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis();
        let st = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(&airlock)
            .arg("--state-dir")
            .arg(bed.path("state"))
            .arg("--data-dir")
            .arg(bed.path("data"))
            .args(["run", "-q", "--policy"])
            .arg(bed.path("policy.toml"))
            .args(["--group", "ci", "--report"])
            .arg(&report)
            .args(["--", "/bin/sh", "-c", "exit 0"])
            .stdin(Stdio::null())
            .status()
            .expect("airlock run");
        assert!(st.success());
        let id: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
        let id = id["id"].as_str().expect("id").to_owned();
        let audit = airlock_audit::read_all(&bed.path("data/audit")).expect("audit");
        let t1 = exec_ms(&audit, &id).expect("exec record");
        base.push((t1 - t0) as f64);
    }
    // Through serve: one webhook at a time, each job to its end.
    bed.start();
    let mut lat = Vec::new();
    for i in 0..jobs {
        let gh_id = 90_000 + i as u64;
        assert_eq!(bed.deliver(&format!("b-{i}"), gh_id), 202);
        // The finished record comes after the database says done (the runner is deleted
        // in between).
        let key = format!("gh-{gh_id}");
        bed.wait_for("the job to finish", || {
            airlock_audit::read_all(&bed.path("data/audit"))
                .expect("audit")
                .iter()
                .any(|r| r.kind == "serve.job.finished" && r.job.as_deref() == Some(&key))
        });
        let j = bed.store().all().expect("jobs").pop().expect("job");
        assert_eq!(j.status, JobStatus::Done);
        let audit = airlock_audit::read_all(&bed.path("data/audit")).expect("audit");
        let sandbox = audit
            .iter()
            .find(|r| {
                r.kind == "serve.job.finished" && r.job.as_deref() == Some(&format!("gh-{gh_id}"))
            })
            .and_then(|r| r.data["sandbox"].as_str().map(str::to_owned))
            .expect("sandbox id");
        let t1 = exec_ms(&audit, &sandbox).expect("exec record");
        lat.push((t1 as i64 - j.queued_ms) as f64);
    }
    // Sustained acceptance: `clients` connections in parallel, each delivery a job no group
    // takes (refused by the dispatcher, so no sandbox work competes with the measurement).
    let before = bed.store().deliveries().expect("n");
    let t = Instant::now();
    let port = bed.port;
    let per = hooks / clients;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                in_netns(Some(&ns), move || {
                    let mut bad = 0usize;
                    for i in 0..per {
                        let id = 1_000_000 + (c * per + i) as u64;
                        let mut v: serde_json::Value =
                            serde_json::from_str(&payload(id)).expect("payload");
                        v["workflow_job"]["labels"] = serde_json::json!(["no-such-group"]);
                        let req = webhook_request(&format!("t-{id}"), &v.to_string());
                        match http_raw(port, &req) {
                            Ok((202, _)) => {}
                            _ => bad += 1,
                        }
                    }
                    Ok(bad)
                })
                .expect("client")
            })
        })
        .collect();
    let bad: usize = threads.into_iter().map(|h| h.join().expect("join")).sum();
    let secs = t.elapsed().as_secs_f64();
    let after = bed.store().deliveries().expect("n");
    let accepted = (after - before) as usize;
    assert_eq!(bad, 0, "deliveries refused");
    assert_eq!(accepted, per * clients, "deliveries lost");
    assert_eq!(bed.sigterm().code(), Some(0));
    bed.assert_clean();
    base.sort_by(f64::total_cmp);
    lat.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "jobs": jobs,
        "baseline_run_ms": {"median": percentile(&base, 0.5), "p95": percentile(&base, 0.95)},
        "serve_ms": {"median": percentile(&lat, 0.5), "p95": percentile(&lat, 0.95)},
        "webhooks": accepted,
        "clients": clients,
        "webhooks_per_s": (accepted as f64 / secs).round(),
    });
    println!("BENCH {out}");
}
