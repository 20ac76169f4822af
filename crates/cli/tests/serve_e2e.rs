//! `airlock serve` end to end against a fake GitHub, in a sealed world (issue 6, "Tests").
//!
//! The test's own network namespace holds `airlock serve`, its `airlock run` children and
//! their egress gateways. Behind it, one more namespace the test creates is the "internet":
//! the fake GitHub (`airlock-fake-github`) on 198.51.100.20:80 and a DNS server on
//! 198.51.100.53 that answers `api.github.test` with the fake's address. The fake sends
//! signed `workflow_job` webhooks to serve (198.51.100.1:8780); serve, through the real REST
//! client, asks it for a JIT config and starts the group's runner — `airlock-fake-runner`, in
//! an OCI image the test builds from host files and pushes (skopeo) to a real registry
//! (`docker-registry` on the test namespace's loopback), which each job's `airlock run` pulls
//! on first use —
//! which fetches its job from `http://api.github.test` through the egress gateway, runs the
//! script and reports back. Nothing here can send a packet off the machine.
//!
//! The fake binaries are built by `cargo build -p airlock-github --features fake --bins`
//! (CI's `cargo build --workspace --bins` does it); without them, or without root, the
//! tests skip with a message.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const FAKE_IP: &str = "198.51.100.20";
const DNS_IP: &str = "198.51.100.53";
const SERVE_ADDR: &str = "198.51.100.1:8780";
const PAT: &str = "ghp_e2eFakePersonalAccessToken0123456789";
const SECRET: &str = "e2e-webhook-secret-5b1d";
const IMAGE: &str = "1";
/// Where the runner image is served from: a registry in the test's own namespace.
const REGISTRY: &str = "127.0.0.1:5000";
const RUNNER: &str = "/opt/runner/airlock-fake-runner";
/// Generous: a debug build on a loaded two-core machine.
const DEADLINE: Duration = Duration::from_secs(180);

/// The fake GitHub binaries, next to the airlock binary in the target directory.
fn fake_bin(name: &str) -> Option<PathBuf> {
    let p = Path::new(AIRLOCK).parent()?.join(name);
    p.is_file().then_some(p)
}

macro_rules! need_fakes {
    () => {
        if fake_bin("airlock-fake-github").is_none() || fake_bin("airlock-fake-runner").is_none()
        {
            // scripts/test.sh (and so CI) builds the fakes and sets this: there a missing fake
            // is a failure, never a silent skip.
            assert!(
                std::env::var_os("AIRLOCK_TEST_STRICT").is_none(),
                "the fake GitHub binaries are missing: cargo build -p airlock-github --features fake --bins"
            );
            eprintln!(
                "SKIPPED {}: build the fakes first: cargo build -p airlock-github --features fake --bins",
                module_path!()
            );
            return;
        }
    };
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

// ---------------------------------------------------------------------------------------
// The runner image: dash as /bin/sh, the fake runner, and the libraries both need.

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn tar_header(size: usize, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h
}

/// The shared libraries `bin` loads, from `ldd`. Hand-parsed: ldd's output is two fixed line
/// shapes (`name => /path (addr)` and `/path (addr)`), and no crate reads ELF dependencies
/// with the host's search path the way the dynamic loader does.
fn libs_of(bin: &Path) -> Vec<String> {
    let o = Command::new("ldd").arg(bin).output().expect("ldd");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

/// Builds a one-layer OCI image layout holding the fake runner at [`RUNNER`].
fn build_runner_image(root: &Path, runner: &Path) -> PathBuf {
    let layout = root.join("runner-image");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "bin/sh".into(),
            std::fs::read("/usr/bin/dash").expect("dash"),
        ),
        (
            "bin/sleep".into(),
            std::fs::read("/usr/bin/sleep").expect("sleep"),
        ),
        (
            RUNNER.trim_start_matches('/').into(),
            std::fs::read(runner).expect("fake runner"),
        ),
    ];
    let mut libs = libs_of(Path::new("/usr/bin/dash"));
    libs.extend(libs_of(Path::new("/usr/bin/sleep")));
    libs.extend(libs_of(runner));
    libs.sort();
    libs.dedup();
    assert!(
        libs.iter().any(|l| l.contains("libc.so")),
        "ldd found no libc: {libs:?}"
    );
    for l in libs {
        let data = std::fs::read(std::fs::canonicalize(&l).expect("lib")).expect("read lib");
        files.push((l.trim_start_matches('/').to_owned(), data));
    }
    let mut dirs = std::collections::BTreeSet::from(["etc".to_owned(), "tmp".to_owned()]);
    for (p, _) in &files {
        let mut d = Path::new(p).parent();
        while let Some(x) = d.filter(|x| !x.as_os_str().is_empty()) {
            dirs.insert(x.to_string_lossy().into_owned());
            d = x.parent();
        }
    }
    let mut t = tar::Builder::new(Vec::new());
    for d in &dirs {
        let mut h = tar_header(0, 0o755, tar::EntryType::Directory);
        t.append_data(&mut h, d, &[][..]).expect("dir");
    }
    for (p, data) in &files {
        let mut h = tar_header(data.len(), 0o755, tar::EntryType::Regular);
        t.append_data(&mut h, p, &data[..]).expect("file");
    }
    let layer = t.into_inner().expect("tar");
    let blob = |media: &str, data: &[u8]| {
        let h = hex(data);
        std::fs::write(layout.join("blobs/sha256").join(&h), data).expect("blob");
        serde_json::json!({ "mediaType": media, "digest": format!("sha256:{h}"), "size": data.len() })
    };
    let dl = blob("application/vnd.oci.image.layer.v1.tar", &layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", hex(&layer))] },
        "config": {}
    });
    let dc = blob(
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dc, "layers": [dl]
    });
    let mut dm = blob(
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    dm["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": IMAGE });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [dm] });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    layout
}

// ---------------------------------------------------------------------------------------
// The world.

struct E2e {
    /// The runner image's registry; dropped (killed) with the world.
    registry: Option<common::registry::Registry>,
    w: World,
    inet: String,
    fakes: Vec<Child>,
    serve: Option<Child>,
    serve_log: PathBuf,
}

impl Drop for E2e {
    fn drop(&mut self) {
        self.stop_serve();
        for p in &mut self.fakes {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.inet])
            .status();
    }
}

const POLICY: &str = r#"version = 1
default_group = "ci"
[images]
insecure = ["127.0.0.1:5000"]
[groups.ci]
labels = ["e2e"]
repositories = ["octo-org/*"]
rootfs = { image = "127.0.0.1:5000/e2e/fakerunner:1" }
runner = ["/opt/runner/airlock-fake-runner"]
egress = { domains = ["api.github.test"], resolver = "198.51.100.53" }
limits = { timeout = "3m" }
# A runner that exits non-zero at once.
[groups.broken]
labels = ["e2e-broken"]
repositories = ["octo-org/*"]
rootfs = { image = "127.0.0.1:5000/e2e/fakerunner:1" }
runner = ["/bin/sh", "-c", "exit 3"]
egress = { domains = ["api.github.test"], resolver = "198.51.100.53" }
# A sandbox that cannot start: a program to protect that the image does not have.
[groups.nostart]
labels = ["e2e-nostart"]
repositories = ["octo-org/*"]
rootfs = { image = "127.0.0.1:5000/e2e/fakerunner:1" }
runner = ["/opt/runner/airlock-fake-runner"]
protect = ["/opt/runner/not-there"]
egress = { domains = ["api.github.test"], resolver = "198.51.100.53" }
"#;

/// How serve gets its jobs in a world.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Signed `workflow_job` webhooks from the fake.
    Webhook,
    /// Runner scale sets: serve long-polls the fake's Actions service; no webhook endpoint.
    ScaleSet,
}

/// The policy of the scale-set world: `ss` (two runners at most, cold) and `warm` (one warm
/// runner whose start-up takes 2 s).
const POLICY_SS: &str = r#"version = 1
default_group = "ss"
[images]
insecure = ["127.0.0.1:5000"]
[groups.ss]
repositories = ["octo-org/*"]
rootfs = { image = "127.0.0.1:5000/e2e/fakerunner:1" }
runner = ["/opt/runner/airlock-fake-runner", "--wait-secs", "600"]
egress = { domains = ["api.github.test"], resolver = "198.51.100.53" }
limits = { timeout = "3m" }
max_runners = 2
scale_set = { name = "airlock-e2e" }
[groups.warm]
repositories = ["octo-org/*"]
rootfs = { image = "127.0.0.1:5000/e2e/fakerunner:1" }
runner = ["/opt/runner/airlock-fake-runner", "--wait-secs", "600", "--start-ms", "2000"]
egress = { domains = ["api.github.test"], resolver = "198.51.100.53" }
limits = { timeout = "3m" }
max_runners = 2
scale_set = { name = "airlock-warm", min_idle = 1, idle_retire = "1h" }
"#;

fn world() -> E2e {
    world_with(Mode::Webhook)
}

fn world_with(mode: Mode) -> E2e {
    world_custom(mode, None, None)
}

/// A world with another policy and global capacity (benchmarks).
fn world_custom(mode: Mode, policy_text: Option<&str>, concurrency: Option<u32>) -> E2e {
    let w = World::new();
    let t = w.netns.clone().expect("root test has a netns");
    let inet = format!("{t}inet");
    ip(&["netns", "add", &inet]);
    let mut e = E2e {
        registry: None,
        serve_log: w.dir.path().join("serve.log"),
        w,
        inet: inet.clone(),
        fakes: vec![],
        serve: None,
    };
    ip(&["-n", &inet, "link", "set", "lo", "up"]);
    ip(&[
        "-n", &t, "link", "add", "fhinet", "type", "veth", "peer", "name", "eth0", "netns", &inet,
    ]);
    ip(&["-n", &t, "addr", "add", "198.51.100.1/24", "dev", "fhinet"]);
    ip(&["-n", &t, "link", "set", "fhinet", "up"]);
    for a in [FAKE_IP, DNS_IP] {
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{a}/24"),
            "dev",
            "eth0",
        ]);
    }
    ip(&["-n", &inet, "link", "set", "eth0", "up"]);
    ip(&[
        "-n",
        &inet,
        "route",
        "add",
        "default",
        "via",
        "198.51.100.1",
    ]);
    ip(&["-n", &t, "route", "add", "default", "via", FAKE_IP]);

    let dir = e.w.dir.path().to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakehosts.py");
    let dns = e.spawn_in_inet(
        &[
            "/usr/bin/python3",
            script,
            "dns",
            DNS_IP,
            &format!("api.github.test={FAKE_IP}"),
        ],
        "ready",
    );
    e.fakes.push(dns);
    std::fs::write(dir.join("webhook-secret"), SECRET).expect("secret");
    let fake = fake_bin("airlock-fake-github").expect("fake github");
    let fake = fake.to_string_lossy().into_owned();
    let secret_file = dir.join("webhook-secret").display().to_string();
    let listen = format!("{FAKE_IP}:80");
    let hook = format!("http://{SERVE_ADDR}/webhook");
    let mut argv = vec![
        fake.as_str(),
        "--listen",
        &listen,
        "--public-url",
        "http://api.github.test",
        "--pat",
        PAT,
    ];
    match mode {
        Mode::Webhook => argv.extend_from_slice(&[
            // serve, not the fake, must delete each runner after its job.
            "--keep-runners-after-job",
            "--webhook-url",
            &hook,
            "--webhook-secret-file",
            &secret_file,
        ]),
        // GitHub removes a JIT runner after its job; a crashed serve's session expires.
        Mode::ScaleSet => {
            argv.extend_from_slice(&["--poll-timeout-ms", "1000", "--session-expiry-ms", "4000"])
        }
    }
    let gh = e.spawn_in_inet(&argv, "listening on");
    e.fakes.push(gh);

    // The runner image, in a registry: each job's `airlock run` pulls it on first use.
    let runner = fake_bin("airlock-fake-runner").expect("fake runner");
    let layout = build_runner_image(&dir, &runner);
    let reg = common::registry::start_registry(&e.w, 5000, None, None);
    common::registry::push(
        &e.w,
        &layout,
        IMAGE,
        &format!("{REGISTRY}/e2e/fakerunner:1"),
        &["--dest-tls-verify=false"],
        false,
    );
    e.registry = Some(reg);

    let (policy, hook_line) = match mode {
        Mode::Webhook => (
            POLICY,
            format!("webhook_secret = {{ file = \"{secret_file}\" }}"),
        ),
        Mode::ScaleSet => (POLICY_SS, String::new()),
    };
    let policy = policy_text.unwrap_or(policy);
    std::fs::write(dir.join("serve-policy.toml"), policy).expect("policy");
    std::fs::write(
        dir.join("serve.toml"),
        format!(
            r#"listen = "{SERVE_ADDR}"
{hook_line}
policy = "{d}/serve-policy.toml"
runner_prefix = "airlock-"
max_concurrency = {conc}
state_dir = "{state}"
data_dir = "{data}"
reconcile_interval = "1h"
shutdown_grace = "20s"
[github]
api_url = "http://{FAKE_IP}"
org = "octo-org"
token = {{ env = "AIRLOCK_E2E_PAT" }}
config_url = "https://github.com/octo-org"
[scale_sets]
conflict_retry = "1s"
max_backoff = "2s"
"#,
            d = dir.display(),
            conc = concurrency.unwrap_or(if mode == Mode::ScaleSet { 4 } else { 2 }),
            state = e.w.state().display(),
            data = e.w.data().display(),
        ),
    )
    .expect("serve.toml");
    e.start_serve();
    e
}

impl E2e {
    /// Starts `argv` in the internet namespace with an empty environment (no proxy variables
    /// can send it elsewhere) and waits for its first line to start with `ready`.
    fn spawn_in_inet(&self, argv: &[&str], ready: &str) -> Child {
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.inet])
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fake host");
        let mut line = String::new();
        let out = c.stdout.take().expect("stdout");
        let mut out = std::io::BufReader::new(out);
        out.read_line(&mut line).expect("ready");
        assert!(line.starts_with(ready), "{argv:?} did not start: {line:?}");
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        c
    }

    fn start_serve(&mut self) {
        let log = std::fs::File::create(&self.serve_log).expect("serve log");
        let mut c = self.w.in_netns(&[AIRLOCK, "serve", "--config"]);
        c.arg(self.w.dir.path().join("serve.toml"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env(
                "AIRLOCK_LOG",
                std::env::var("AIRLOCK_E2E_SERVE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("AIRLOCK_E2E_PAT", PAT)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.serve = Some(c.spawn().expect("airlock serve"));
        let t0 = Instant::now();
        while self.curl(&[&format!("http://{SERVE_ADDR}/readyz")]).0 != 200 {
            if let Some(Ok(Some(st))) = self.serve.as_mut().map(Child::try_wait) {
                panic!("airlock serve exited {st}:\n{}", self.log());
            }
            assert!(t0.elapsed() < DEADLINE, "serve not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGTERM to serve (graceful: finish jobs, tear down) and wait for it.
    fn stop_serve(&mut self) {
        let Some(mut s) = self.serve.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(s.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = s.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = s.kill();
        let _ = s.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.serve_log).unwrap_or_default()
    }

    /// curl inside the test's namespace; returns (status, body). No proxy, empty environment.
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let mut argv = vec![
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "-m",
            "30",
            "-w",
            "\n%{http_code}",
        ];
        argv.extend_from_slice(args);
        let o = self
            .w
            .in_netns(&argv)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .expect("curl");
        let out = stdout(&o);
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn fake_post(&self, path: &str, body: &Value) -> u16 {
        self.curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body.to_string(),
            &format!("http://{FAKE_IP}{path}"),
        ])
        .0
    }

    fn state(&self) -> Value {
        let (code, body) = self.curl(&[&format!("http://{FAKE_IP}/_fake/state")]);
        assert_eq!(code, 200, "fake state: {body}");
        serde_json::from_str(&body).expect("state json")
    }

    fn job(state: &Value, id: u64) -> &Value {
        state["jobs"]
            .as_array()
            .and_then(|j| j.iter().find(|j| j["id"] == id))
            .unwrap_or(&Value::Null)
    }

    fn calls(state: &Value, endpoint: &str) -> u64 {
        state["calls"][endpoint].as_u64().unwrap_or(0)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.w.data().join("audit/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn finished(&self, gh_job: u64) -> Option<Value> {
        let key = format!("gh-{gh_job}");
        self.audit()
            .into_iter()
            .find(|r| r["kind"] == "serve.job.finished" && r["job"] == key.as_str())
    }

    /// Polls `ok` until it holds or [`DEADLINE`] passes (then fails with serve's log).
    fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !ok() {
            assert!(
                t0.elapsed() < DEADLINE,
                "timed out waiting for {what}; serve's log:\n{}\nfake state: {}",
                self.log(),
                self.curl(&[&format!("http://{FAKE_IP}/_fake/state")]).1
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn queue_job(&self, id: u64, script: &str) {
        self.queue_job_labelled(id, &["self-hosted", "e2e"], script);
    }

    fn queue_job_labelled(&self, id: u64, labels: &[&str], script: &str) {
        let code = self.fake_post(
            "/_fake/jobs",
            &serde_json::json!({"id": id, "labels": labels, "script": script,
                                "repository": "octo-org/app"}),
        );
        assert_eq!(code, 201, "queueing job {id}");
    }

    /// Waits until serve finished `id` and the fake knows its runner is gone; returns
    /// serve's `serve.job.finished` record.
    fn wait_finished(&self, id: u64) -> Value {
        self.wait_for(&format!("serve to finish job {id}"), || {
            self.finished(id).is_some()
        });
        self.finished(id).expect("finished")
    }

    /// Delivers `body` to serve's webhook with the given signature header (None: none).
    fn webhook(&self, body: &str, sig: Option<&str>, delivery: &str) -> u16 {
        let url = format!("http://{SERVE_ADDR}/webhook");
        let h_event = "x-github-event: workflow_job".to_owned();
        let h_del = format!("x-github-delivery: {delivery}");
        let h_sig = sig.map(|s| format!("x-hub-signature-256: {s}"));
        let mut args = vec![
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            &h_event,
            "-H",
            &h_del,
        ];
        if let Some(h) = &h_sig {
            args.extend_from_slice(&["-H", h]);
        }
        args.extend_from_slice(&["--data-binary", body, &url]);
        self.curl(&args).0
    }

    /// Like [`E2e::webhook`], for a body too large for an argument.
    fn webhook_file(&self, body: &str, sig: &str, delivery: &str) -> u16 {
        let f = self.w.dir.path().join("body.json");
        std::fs::write(&f, body).expect("body");
        let url = format!("http://{SERVE_ADDR}/webhook");
        let h_del = format!("x-github-delivery: {delivery}");
        let h_sig = format!("x-hub-signature-256: {sig}");
        let data = format!("@{}", f.display());
        self.curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            "x-github-event: workflow_job",
            "-H",
            &h_del,
            "-H",
            &h_sig,
            "--data-binary",
            &data,
            &url,
        ])
        .0
    }

    /// Asserts that nothing of any job is left: airlock's own checks plus serve's per-job
    /// work directories, of which only those of `kept_logs` may stay, holding nothing but the
    /// runner's `output.log` and airlock's report (kept for people after a failed or lost run;
    /// never the derived policy).
    fn assert_clean(&self, kept_logs: &[&str]) {
        self.w.assert_clean();
        let mut left = Vec::new();
        for d in std::fs::read_dir(self.w.state().join("serve"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.as_deref().is_some_and(|n| kept_logs.contains(&n)) {
                let mut files: Vec<_> = std::fs::read_dir(&d)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                files.retain(|f| f != "report.json");
                assert_eq!(
                    files,
                    ["output.log"],
                    "only the runner's output (and airlock's report) may stay in {}",
                    d.display()
                );
            } else {
                left.push(d);
            }
        }
        assert!(left.is_empty(), "serve work directories left: {left:?}");
    }
}

/// `X-Hub-Signature-256` of `body` with the test's webhook secret.
fn sign(body: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    m.update(body.as_bytes());
    let tag = m.finalize().into_bytes();
    format!(
        "sha256={}",
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(b) = std::fs::read(&p) {
                    if b.windows(needle.len()).any(|w| w == needle) {
                        hits.push(p);
                    }
                }
            }
        }
    }
    hits
}

/// The JIT config the fake hands out for a runner: base64 of its `JitPayload` JSON
/// (docs/github.md), rebuilt here to look for it on disk.
fn jit_config_of(runner_id: u64, name: &str) -> String {
    base64_encode(
        format!(r#"{{"runner_id":{runner_id},"name":"{name}","url":"http://api.github.test"}}"#)
            .as_bytes(),
    )
}

/// Standard base64 with padding. Hand-written: twelve lines do not justify a new
/// dev-dependency of the CLI crate for one test helper.
fn base64_encode(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------

#[test]
fn base64_helper_matches_the_rfc_vectors() {
    for (i, o) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64_encode(i.as_bytes()), o);
    }
}

#[test]
fn a_webhook_job_runs_end_to_end_through_the_egress_gateway() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let mut e = world();
    e.queue_job(101, "echo hello from job 101; exit 3");
    let fin = e.wait_finished(101);

    // The runner image was pulled from the registry by the job, on first use.
    let o =
        e.w.cmd()
            .args(["image", "ls", "--json"])
            .output()
            .expect("ls");
    let imgs: Value = serde_json::from_slice(&o.stdout).expect("image ls");
    let img = imgs
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|i| i["name"] == "127.0.0.1:5000/e2e/fakerunner:1")
        })
        .unwrap_or_else(|| panic!("runner image not pulled: {imgs:#}"));
    assert!(
        img["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:5000/e2e/fakerunner@sha256:")),
        "{img:#}"
    );

    // The fake GitHub: job run once, by the runner serve registered, exit code reported,
    // and the runner deleted by serve.
    let s = e.state();
    let job = E2e::job(&s, 101);
    assert_eq!(job["status"], "completed", "{s:#}");
    assert_eq!(job["exit_code"], 3, "{s:#}");
    assert_eq!(job["fetches"], 1, "{s:#}");
    assert_eq!(job["runner_name"], "airlock-101", "{s:#}");
    let runner_id = job["runner_id"].as_u64().expect("runner id");
    assert!(
        s["runners"].as_array().is_some_and(|r| r.is_empty()),
        "runner still registered: {s:#}"
    );
    assert!(
        s["deleted_runners"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == runner_id)),
        "serve did not delete the runner: {s:#}"
    );
    assert_eq!(E2e::calls(&s, "generate_jit_config"), 1, "{s:#}");
    let jit_labels = s["deleted_runners"][0]["labels"].clone();
    assert_eq!(
        jit_labels,
        serde_json::json!(["self-hosted", "linux", "x64", "e2e"]),
        "{s:#}"
    );

    // serve's own record of the job.
    assert_eq!(fin["data"]["status"], "done", "{fin:#}\n{}", e.log());
    assert_eq!(fin["data"]["exit_code"], 0, "the runner exits 0: {fin:#}");
    assert_eq!(fin["data"]["runner_deleted"], true, "{fin:#}");
    assert_eq!(fin["data"]["runner_id"], runner_id, "{fin:#}");
    let sandbox = fin["data"]["sandbox"]
        .as_str()
        .expect("sandbox id")
        .to_owned();

    // 2. A redelivery of the queued webhook is acknowledged and provisions nothing.
    let queued = s["deliveries"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|d| d["action"] == "queued" && d["job_id"] == 101)
        })
        .expect("queued delivery")
        .clone();
    assert_eq!(queued["status"], 202, "first delivery queued: {queued}");
    let id = queued["id"].as_str().expect("delivery id").to_owned();
    let code = e.fake_post(
        &format!("/_fake/deliveries/{id}/redeliver"),
        &serde_json::json!({}),
    );
    assert_eq!(code, 202);
    e.wait_for("the redelivery", || {
        e.state()["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().filter(|d| d["id"] == id.as_str()).count() == 2)
    });
    let s = e.state();
    let again = s["deliveries"]
        .as_array()
        .and_then(|d| d.iter().rfind(|d| d["id"] == id.as_str()))
        .expect("redelivery");
    assert_eq!(again["status"], 200, "duplicate delivery: {again}");

    // A forged delivery: same body shape, wrong or missing signature → 401, nothing queued.
    let forged = r#"{"action":"queued","workflow_job":{"id":666}}"#;
    assert_eq!(
        e.webhook(
            forged,
            Some("sha256=0000000000000000000000000000000000000000000000000000000000000000"),
            "forged-1"
        ),
        401
    );
    assert_eq!(e.webhook(forged, None, "forged-2"), 401);
    // Correctly signed, but not a workflow_job payload: 400. Over max_body_bytes: 413.
    let bad = r#"{"action":"queued","workflow_job":{"id":"not a number"}}"#;
    assert_eq!(e.webhook(bad, Some(&sign(bad)), "bad-schema-1"), 400);
    let big = format!(r#"{{"action":"queued","pad":"{}"}}"#, "x".repeat(2 << 20));
    assert_eq!(e.webhook_file(&big, &sign(&big), "oversized-1"), 413);
    // Give a wrongly accepted job every chance to show up before checking.
    std::thread::sleep(Duration::from_secs(2));
    let s = e.state();
    assert_eq!(
        E2e::calls(&s, "generate_jit_config"),
        1,
        "a redelivered or forged webhook provisioned a runner: {s:#}"
    );
    assert_eq!(E2e::job(&s, 101)["fetches"], 1, "{s:#}");

    let (code, metrics) = e.curl(&[&format!("http://{SERVE_ADDR}/metrics")]);
    assert_eq!(code, 200);
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("airlock_serve_webhook_verification_failures_total "))
        .map(str::trim);
    assert_eq!(failures, Some("2"), "{metrics}");
    // A measurement, not an assertion: webhook received → sandbox process started.
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("airlock_serve_provisioning_seconds_"))
        .filter(|l| l.contains("_sum") || l.contains("_count"))
    {
        eprintln!("measured: {l}");
    }

    e.stop_serve();
    let log = e.log();
    assert!(
        cgroups_of(&sandbox).is_empty(),
        "cgroups of {sandbox} left: {:?}",
        cgroups_of(&sandbox)
    );

    // The audit log verifies and holds the job's story.
    let o =
        e.w.cmd()
            .args(["audit", "verify"])
            .output()
            .expect("verify");
    assert!(
        o.status.success(),
        "audit verify: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let recs = e.audit();
    let serve_kinds: Vec<&str> = recs
        .iter()
        .filter(|r| r["job"] == "gh-101")
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(
        serve_kinds,
        [
            "serve.job.provisioning",
            "serve.job.started",
            "serve.job.finished"
        ],
        "{recs:#?}"
    );
    let mine: Vec<&Value> = recs
        .iter()
        .filter(|r| r["job"] == sandbox.as_str())
        .collect();
    let kinds: Vec<&str> = mine.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"job.requested"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"job.ended"), "{kinds:?}");
    assert!(
        mine.iter()
            .any(|r| r["kind"] == "process.exec" && r["data"]["path"] == RUNNER),
        "the runner's exec is on the record: {mine:#?}"
    );
    assert!(
        mine.iter().any(|r| r["kind"] == "process.exec"
            && r["data"]["argv"].as_array().is_some_and(|a| a
                .iter()
                .any(|x| x.as_str().is_some_and(|x| x.contains("hello from job 101"))))),
        "the job's script, run by the runner, is on the record: {mine:#?}"
    );
    let net: Vec<&&Value> = mine
        .iter()
        .filter(|r| r["kind"].as_str().is_some_and(|k| k.starts_with("net.")))
        .collect();
    assert!(
        net.iter().any(|r| r["kind"] == "net.dns"
            && r["data"]["name"] == "api.github.test"
            && r["data"]["verdict"] == "allow"),
        "{net:#?}"
    );
    assert!(
        net.iter().any(|r| r["kind"] == "net.http"
            && r["data"]["name"] == "api.github.test"
            && r["data"]["verdict"] == "allow"
            && r["data"]["resolved"] == FAKE_IP),
        "{net:#?}"
    );
    assert!(
        net.iter().all(|r| r["data"]["verdict"] != "deny"),
        "the runner needed nothing but api.github.test: {net:#?}"
    );

    // No JIT config and no token anywhere on disk or in serve's log.
    let jit = jit_config_of(runner_id, "airlock-101");
    for needle in [jit.as_str(), PAT, SECRET] {
        for d in [e.w.state(), e.w.data()] {
            let hits = files_containing(&d, needle.as_bytes());
            assert!(hits.is_empty(), "a secret is on disk in {hits:?}");
        }
        assert!(!log.contains(needle), "a secret is in serve's log:\n{log}");
    }
    e.assert_clean(&[]);
}

#[test]
fn github_api_errors_are_retried_or_refuse_the_job_cleanly() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let mut e = world();

    // Two 500s on generate-jitconfig: the client retries, the job runs once.
    assert_eq!(
        e.fake_post(
            "/_fake/faults",
            &serde_json::json!({"endpoint": "generate_jit_config",
                                "fault": {"kind": "server_error"}, "times": 2}),
        ),
        204
    );
    e.queue_job(201, "exit 0");
    let fin = e.wait_finished(201);
    assert_eq!(fin["data"]["status"], "done", "{fin:#}\n{}", e.log());
    let s = e.state();
    assert_eq!(E2e::calls(&s, "generate_jit_config"), 3, "{s:#}");
    let job = E2e::job(&s, 201);
    assert_eq!(job["status"], "completed", "{s:#}");
    assert_eq!(job["exit_code"], 0, "{s:#}");
    assert_eq!(job["fetches"], 1, "{s:#}");
    assert_eq!(
        s["deleted_runners"].as_array().map(Vec::len),
        Some(1),
        "{s:#}"
    );

    // A rate limit (429 with retry-after: 1): waited out, the job runs once.
    assert_eq!(
        e.fake_post(
            "/_fake/faults",
            &serde_json::json!({"endpoint": "generate_jit_config",
                                "fault": {"kind": "too_many_requests", "retry_after_secs": 1},
                                "times": 1}),
        ),
        204
    );
    e.queue_job(203, "exit 0");
    let fin = e.wait_finished(203);
    assert_eq!(fin["data"]["status"], "done", "{fin:#}\n{}", e.log());
    let s = e.state();
    assert_eq!(E2e::calls(&s, "generate_jit_config"), 5, "{s:#}");
    assert_eq!(E2e::job(&s, 203)["status"], "completed", "{s:#}");
    assert_eq!(E2e::job(&s, 203)["fetches"], 1, "{s:#}");

    // A 422 and a 403 (permission, not a rate limit): not retried; each job fails in serve
    // without a runner or a sandbox. (The jobs that fail come last: a later runner would
    // take a job they leave queued.)
    for (n, (id, fault, status)) in [(202, "unprocessable", "422"), (204, "forbidden", "403")]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            e.fake_post(
                "/_fake/faults",
                &serde_json::json!({"endpoint": "generate_jit_config",
                                    "fault": {"kind": fault}, "times": 1}),
            ),
            204
        );
        e.queue_job(id, "echo must not run; exit 9");
        let fin = e.wait_finished(id);
        assert_eq!(fin["data"]["status"], "failed", "{fin:#}");
        assert!(
            fin["data"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains(status)),
            "{fin:#}"
        );
        assert_eq!(fin["data"]["sandbox"], Value::Null, "{fin:#}");
        assert_eq!(fin["data"]["runner_id"], Value::Null, "{fin:#}");
        let s = e.state();
        assert_eq!(
            E2e::calls(&s, "generate_jit_config"),
            6 + n as u64,
            "{fault} is not retried: {s:#}"
        );
        let job = E2e::job(&s, id);
        assert_eq!(job["status"], "queued", "no runner ever took it: {s:#}");
        assert_eq!(job["fetches"], 0, "{s:#}");
        assert!(
            s["runners"].as_array().is_some_and(|r| r.is_empty()),
            "{s:#}"
        );
    }

    e.stop_serve();
    let recs = e.audit();
    let sandboxes = recs.iter().filter(|r| r["kind"] == "job.requested").count();
    assert_eq!(
        sandboxes, 2,
        "only jobs 201 and 203 got a sandbox: {recs:#?}"
    );
    let o =
        e.w.cmd()
            .args(["audit", "verify"])
            .output()
            .expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
    e.assert_clean(&[]);
}

#[test]
fn kill_9_of_serve_mid_job_then_a_restart_reconciles_everything() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let mut e = world();
    e.queue_job(301, "sleep 600");
    e.wait_for("the runner to take job 301", || {
        E2e::job(&e.state(), 301)["status"] == "in_progress"
    });
    let s = e.state();
    let runner_id = E2e::job(&s, 301)["runner_id"].as_u64().expect("runner id");
    let sandbox = e
        .audit()
        .iter()
        .find(|r| r["kind"] == "job.requested")
        .and_then(|r| r["job"].as_str().map(str::to_owned))
        .expect("the runner's sandbox");

    // kill -9: no graceful anything. Each `airlock run` child gets SIGTERM from the kernel
    // (PR_SET_PDEATHSIG) and tears its sandbox down.
    let mut serve = e.serve.take().expect("serve");
    serve.kill().expect("kill -9");
    serve.wait().expect("reap");

    e.start_serve();
    e.wait_for("reconciliation of job 301 and its runner", || {
        let lost = e
            .audit()
            .iter()
            .any(|r| r["kind"] == "serve.reconcile.job_lost" && r["job"] == "gh-301");
        let s = e.state();
        lost && s["runners"].as_array().is_some_and(|r| r.is_empty())
    });
    let s = e.state();
    assert!(
        s["deleted_runners"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == runner_id)),
        "the orphaned runner was not deleted: {s:#}"
    );
    assert_eq!(
        E2e::calls(&s, "generate_jit_config"),
        1,
        "the job was provisioned again: {s:#}"
    );
    let job = E2e::job(&s, 301);
    assert_eq!(job["fetches"], 1, "the job ran twice: {s:#}");
    // GitHub fails the job of a runner deleted under it (no exit code reported): over, and
    // never run again.
    assert_eq!(job["status"], "completed", "{s:#}");
    assert!(job["exit_code"].is_null(), "{s:#}");
    let recs = e.audit();
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "serve.reconcile.runner_deleted"),
        "{recs:#?}"
    );

    e.stop_serve();
    e.wait_for("the orphaned sandbox's teardown", || {
        std::fs::read_dir(e.w.state().join("jobs"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    });
    let recs = e.audit();
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "job.ended" && r["job"] == sandbox.as_str()),
        "the orphaned sandbox's end is on the record: {recs:#?}"
    );
    let o =
        e.w.cmd()
            .args(["audit", "verify"])
            .output()
            .expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        cgroups_of(&sandbox).is_empty(),
        "cgroups of {sandbox} left: {:?}",
        cgroups_of(&sandbox)
    );
    e.assert_clean(&["gh-301"]);
}

/// serve tells the truth about a runner that failed: one whose command exits non-zero and one
/// whose sandbox cannot start are `failed`, with the reason, in the audit record, the log and
/// the metrics. Then SIGTERM: while the running job drains, webhooks and `/readyz` answer 503
/// (GitHub can redeliver; a load balancer sees not-ready) and `/healthz` still answers.
#[test]
fn failed_runners_are_failed_with_their_reason_and_a_drain_answers_503() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let mut e = world();

    e.queue_job_labelled(301, &["self-hosted", "e2e-broken"], "exit 0");
    let fin = e.wait_finished(301);
    assert_eq!(fin["data"]["status"], "failed", "{fin:#}\n{}", e.log());
    assert_eq!(fin["data"]["exit_code"], 3, "{fin:#}");
    let why = fin["data"]["detail"].as_str().unwrap_or_default();
    assert!(why.contains("exited 3"), "{fin:#}");

    e.queue_job_labelled(302, &["self-hosted", "e2e-nostart"], "exit 0");
    let fin = e.wait_finished(302);
    assert_eq!(fin["data"]["status"], "failed", "{fin:#}\n{}", e.log());
    assert_eq!(fin["data"]["exit_code"], 125, "{fin:#}");
    let why = fin["data"]["detail"].as_str().unwrap_or_default();
    assert!(
        why.contains("did not start") && why.contains("not-there"),
        "the reason names what could not be applied: {fin:#}"
    );
    assert!(e.log().contains("failed:"), "{}", e.log());
    // serve's log is a file here: plain text, no terminal colour codes.
    assert!(
        !e.log().contains('\x1b'),
        "ANSI codes in a log file: {:?}",
        e.log()
    );
    let (code, metrics) = e.curl(&[&format!("http://{SERVE_ADDR}/metrics")]);
    assert_eq!(code, 200);
    let failed = metrics
        .lines()
        .find(|l| {
            l.starts_with("airlock_serve_jobs_finished_total") && l.contains("state=\"failed\"")
        })
        .unwrap_or_else(|| panic!("no failed jobs counted:\n{metrics}"));
    assert!(
        failed.contains("group=\"broken\"") || metrics.contains("group=\"nostart\""),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("airlock_serve_jobs_finished_total")
                && l.contains("state=\"done\"")),
        "nothing here is done: {metrics}"
    );

    // A job that runs for a while, then SIGTERM to serve mid-job.
    e.queue_job(303, "sleep 12; exit 0");
    e.wait_for("job 303 to be taken by its runner", || {
        E2e::job(&e.state(), 303)["status"] == "in_progress"
    });
    let serve = e.serve.as_ref().expect("serve runs");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(serve.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let body = serde_json::json!({"zen": "drain"}).to_string();
    e.wait_for("the webhook to answer 503 during the drain", || {
        e.webhook(&body, Some(&sign(&body)), "drain-1") == 503
    });
    assert_eq!(e.curl(&[&format!("http://{SERVE_ADDR}/readyz")]).0, 503);
    assert_eq!(e.curl(&[&format!("http://{SERVE_ADDR}/healthz")]).0, 200);
    let (_, metrics) = e.curl(&[&format!("http://{SERVE_ADDR}/metrics")]);
    assert!(metrics.contains("outcome=\"shutting_down\""), "{metrics}");
    // The running job finishes within the grace; then serve exits.
    let fin = e.wait_finished(303);
    assert_eq!(fin["data"]["status"], "done", "{fin:#}\n{}", e.log());
    e.stop_serve();
    e.assert_clean(&["gh-301", "gh-302"]);

    // The kept output goes once nothing in it changed for `state_retention`: a restart with
    // 1 s reconciles at once (before it is ready) and removes it.
    let conf = e.w.dir.path().join("serve.toml");
    let text = std::fs::read_to_string(&conf).expect("serve.toml");
    let text = text.replace(
        "shutdown_grace = \"20s\"",
        "shutdown_grace = \"20s\"\nstate_retention = \"1s\"",
    );
    std::fs::write(&conf, text).expect("serve.toml");
    std::thread::sleep(Duration::from_millis(1500));
    e.start_serve();
    for kept in ["gh-301", "gh-302"] {
        let d = e.w.state().join("serve").join(kept);
        assert!(!d.exists(), "{} outlived state_retention", d.display());
    }
    // And serve says what it removed.
    let log = e.log();
    assert!(
        log.lines().any(|l| l.contains("removed 2 work directories")
            && l.contains("gh-301")
            && l.contains("gh-302")),
        "{log}"
    );
    e.stop_serve();
}

// ---------------------------------------------------------------------------------------
// Runner scale sets (issue 12).

impl E2e {
    /// After serve stopped: every runner gone at the fake, every sandbox torn down, nothing
    /// of any job left on the host.
    fn assert_scale_set_gone(&self) {
        self.wait_for("every runner gone at the fake", || {
            self.state()["runners"]
                .as_array()
                .is_some_and(|a| a.is_empty())
        });
        self.wait_for("every sandbox torn down", || {
            std::fs::read_dir(self.w.state().join("jobs"))
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
        });
        self.w.assert_clean();
    }

    fn jobs_labelled(&self, ids: impl IntoIterator<Item = u64>, label: &str, script: &str) {
        for id in ids {
            self.queue_job_labelled(id, &[label], script);
        }
    }

    fn runners_named(state: &Value, prefix: &str) -> Vec<Value> {
        state["runners"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// serve with two scale sets and no webhook endpoint, the real binary, real sandboxes: scale
/// sets made from the policy; a warm runner waiting (its runner start takes 2 s) takes the
/// first job of its set and is replaced; six jobs on the other set, each run once in its own
/// sandbox by a runner that fetched exactly it; a second serve against the same scale sets
/// gets 409 and says so; kill -9 while a job runs, then a restart reconciles (runner lost and
/// deleted, job never run again, the sandbox torn down) and serves again; SIGTERM closes the
/// sessions, retires the warm runner and leaves nothing behind.
#[test]
fn scale_sets_serve_jobs_without_a_webhook_and_reconcile_after_kill_9() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let mut e = world_with(Mode::ScaleSet);
    let s = e.state();
    let sets: Vec<&str> = s["actions"]["scale_sets"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        sets.contains(&"airlock-e2e") && sets.contains(&"airlock-warm"),
        "scale sets from the policy: {s:#}"
    );
    // No webhook endpoint in this mode.
    assert_eq!(e.webhook("{}", Some("sha256=00"), "d-1"), 404);

    // A warm runner of airlock-warm is up and polling before any job exists.
    e.wait_for("a warm runner polling", || {
        E2e::runners_named(&e.state(), "airlock-airlock-warm-")
            .iter()
            .any(|r| r["status"] == "online")
    });
    let warm = E2e::runners_named(&e.state(), "airlock-airlock-warm-")[0]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    e.jobs_labelled([401], "airlock-warm", "echo warm");
    e.wait_for("job 401 done", || {
        E2e::job(&e.state(), 401)["status"] == "completed"
    });
    let s = e.state();
    assert_eq!(
        E2e::job(&s, 401)["runner_name"],
        warm.as_str(),
        "the warm runner took the job: {s:#}"
    );
    e.wait_for("a new warm runner", || {
        E2e::runners_named(&e.state(), "airlock-airlock-warm-")
            .iter()
            .any(|r| r["name"] != warm.as_str() && r["status"] == "online")
    });

    // Six jobs on airlock-e2e (two runners at most): each run once, by its own runner.
    e.jobs_labelled(201..=206, "airlock-e2e", "echo ok from $0");
    e.wait_for("six jobs completed", || {
        let s = e.state();
        (201..=206).all(|id| E2e::job(&s, id)["status"] == "completed")
    });
    let s = e.state();
    let mut runners = std::collections::HashSet::new();
    for id in 201..=206u64 {
        let j = E2e::job(&s, id);
        assert_eq!(j["fetches"], 1, "job {id}: {s:#}");
        assert_eq!(j["exit_code"], 0, "job {id}: {s:#}");
        let r = j["runner_name"].as_str().expect("runner").to_owned();
        assert!(r.starts_with("airlock-airlock-e2e-"), "{r}");
        assert!(runners.insert(r), "a runner took two jobs: {s:#}");
    }
    e.wait_for("serve's records of the six jobs", || {
        let recs = e.audit();
        (201..=206).all(|id| {
            recs.iter().any(|r| {
                r["kind"] == "serve.job.finished"
                    && r["job"] == format!("ss-airlock-e2e-{id}").as_str()
                    && r["data"]["source"] == "scaleset:airlock-e2e"
                    && r["data"]["status"] == "done"
            })
        })
    });

    // A second serve against the same scale sets: 409, said plainly, and retried.
    let dir = e.w.dir.path().to_owned();
    let conf = std::fs::read_to_string(dir.join("serve.toml")).expect("serve.toml");
    let second = dir.join("second");
    std::fs::create_dir_all(second.join("state")).expect("dir");
    let conf2 = conf
        .replace(SERVE_ADDR, "198.51.100.1:8781")
        .replace(
            &e.w.state().display().to_string(),
            &second.join("state").display().to_string(),
        )
        .replace(
            &e.w.data().display().to_string(),
            &second.join("data").display().to_string(),
        );
    std::fs::write(dir.join("serve2.toml"), conf2).expect("serve2.toml");
    let log2 = dir.join("serve2.log");
    let f = std::fs::File::create(&log2).expect("log");
    let mut c = e.w.in_netns(&[AIRLOCK, "serve", "--config"]);
    c.arg(dir.join("serve2.toml"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("AIRLOCK_LOG", "info")
        .env("AIRLOCK_E2E_PAT", PAT)
        .stdout(f.try_clone().expect("log"))
        .stderr(f);
    let mut two = c.spawn().expect("second serve");
    e.wait_for("the second serve to report the conflict", || {
        std::fs::read_to_string(&log2)
            .unwrap_or_default()
            .contains("another session is already open")
    });
    if let Ok(pid) = i32::try_from(two.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = two.wait();
    let s = e.state();
    assert!(
        (201..=206).all(|id| E2e::job(&s, id)["fetches"] == 1),
        "the second serve ran something: {s:#}"
    );

    // kill -9 while a job runs.
    e.jobs_labelled([210], "airlock-e2e", "sleep 600");
    e.wait_for("job 210 running", || {
        E2e::job(&e.state(), 210)["status"] == "in_progress"
    });
    let s = e.state();
    let runner = E2e::job(&s, 210)["runner_name"]
        .as_str()
        .expect("runner")
        .to_owned();
    let mut serve = e.serve.take().expect("serve");
    serve.kill().expect("kill -9");
    serve.wait().expect("reap");
    // The restarted serve waits out the dead one's session (409, retried), then reconciles.
    e.start_serve();
    e.wait_for("reconciliation of the runner of job 210", || {
        let lost = e
            .audit()
            .iter()
            .any(|r| r["kind"] == "serve.reconcile.runner_lost" && r["job"] == runner.as_str());
        let s = e.state();
        lost && !s["runners"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["name"] == runner.as_str()))
    });
    let s = e.state();
    let j = E2e::job(&s, 210);
    assert_eq!(j["fetches"], 1, "job 210 ran again: {s:#}");
    assert_eq!(
        j["status"], "completed",
        "GitHub fails the job of a deleted runner: {s:#}"
    );
    // And it serves again.
    e.jobs_labelled([211], "airlock-e2e", "echo after the crash");
    e.wait_for("job 211 done", || {
        E2e::job(&e.state(), 211)["status"] == "completed"
    });

    // SIGTERM: sessions closed, the warm runner retired, every runner gone, nothing left.
    e.stop_serve();
    let s = e.state();
    assert!(
        s["actions"]["sessions"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "sessions left open: {s:#}"
    );
    e.assert_scale_set_gone();
    // serve's work directories: only output logs and reports may stay (for people), never
    // a derived policy or a JIT configuration.
    for d in std::fs::read_dir(e.w.state().join("serve"))
        .map(|rd| rd.flatten().map(|x| x.path()).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        for f in std::fs::read_dir(&d).expect("dir").flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            assert!(
                n == "output.log" || n == "report.json",
                "{} left in {}",
                n,
                d.display()
            );
        }
    }
    let o =
        e.w.cmd()
            .args(["audit", "verify"])
            .output()
            .expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
}

/// The ids of the primed sandboxes of group `ss` (or `group`) that are ready and have not started: a
/// `job.requested` with neither `job.started` nor `job.ended`, whose helper has created the
/// container (its init's pid is written).
/// The scale-set world with one primed sandbox for group `ss` (`prestart = 1`).
fn primed_world() -> E2e {
    let policy = POLICY_SS.replace(
        "scale_set = { name = \"airlock-e2e\" }",
        "prestart = 1\nscale_set = { name = \"airlock-e2e\" }",
    );
    world_custom(Mode::ScaleSet, Some(&policy), None)
}

fn primed_ready(e: &E2e) -> Vec<String> {
    primed_ready_in(e, "ss")
}

fn primed_ready_in(e: &E2e, group: &str) -> Vec<String> {
    let recs = e.audit();
    let of_group = |id: &str| {
        recs.iter()
            .any(|r| r["kind"] == "job.requested" && r["job"] == id && r["data"]["group"] == group)
    };
    // `job.primed` is written before airlock run tells serve it is ready.
    recs.iter()
        .filter(|r| r["kind"] == "job.primed")
        .filter_map(|r| r["job"].as_str())
        .filter(|id| of_group(id))
        .filter(|id| {
            !recs.iter().any(|x| {
                x["job"] == *id && (x["kind"] == "job.started" || x["kind"] == "job.ended")
            })
        })
        // One whose airlock run was killed ends with no record: its state is what says.
        .filter(|id| e.w.state().join("jobs").join(format!("{id}.json")).exists())
        .map(String::from)
        .collect()
}

/// Primed sandboxes (`prestart = 1`): one is made before any job, with no runner registered
/// and nothing run in it (its init is still airlock's helper, no exec on the record); a job's
/// runner starts in it (the JIT config arrives late, named on the record, in no file) and the
/// pool is refilled; a primed `airlock run` killed -9 is noticed, cleaned up and replaced;
/// kill -9 of serve retires the primed sandbox (its airlock run ends with
/// serve), a restart primes again, SIGTERM retires that one, and nothing is left.
#[test]
fn primed_sandboxes_take_runners_and_leave_nothing() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let mut e = primed_world();
    e.wait_for("a primed sandbox", || primed_ready(&e).len() == 1);
    let p1 = primed_ready(&e).remove(0);
    // Nothing registered at GitHub for it, nothing run in it.
    assert!(
        E2e::runners_named(&e.state(), "airlock-airlock-e2e-").is_empty(),
        "a primed sandbox registers no runner"
    );
    let pid: i32 = std::fs::read_to_string(e.w.state().join("jobs").join(&p1).join("init.pid"))
        .expect("init.pid")
        .trim()
        .parse()
        .expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("init's cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("__helper"),
        "the primed sandbox's init has exec'd something: {}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(
        !e.audit()
            .iter()
            .any(|r| r["job"] == p1.as_str() && r["kind"] == "process.exec"),
        "an exec in a primed sandbox"
    );

    // A job: its runner starts in the primed sandbox.
    e.jobs_labelled([301], "airlock-e2e", "echo primed");
    e.wait_for("job 301 done", || {
        E2e::job(&e.state(), 301)["status"] == "completed"
    });
    let s = e.state();
    let j = E2e::job(&s, 301);
    assert_eq!(j["fetches"], 1, "{s:#}");
    assert_eq!(j["exit_code"], 0, "{s:#}");
    let name = j["runner_name"].as_str().expect("runner").to_owned();
    let runner_id = j["runner_id"].as_u64().expect("runner id");
    e.wait_for("serve's record of job 301", || {
        e.audit()
            .iter()
            .any(|r| r["kind"] == "serve.job.finished" && r["job"] == "ss-airlock-e2e-301")
    });
    let recs = e.audit();
    let fin = recs
        .iter()
        .find(|r| r["kind"] == "serve.job.finished" && r["job"] == "ss-airlock-e2e-301")
        .expect("finished");
    assert_eq!(
        fin["data"]["sandbox"],
        p1.as_str(),
        "the runner did not start in the primed sandbox: {fin:#}"
    );
    // On its record: the JIT config named (never valued) before the first exec.
    let seq = |kind: &str| {
        recs.iter()
            .filter(|r| r["job"] == p1.as_str() && r["kind"] == kind)
            .filter_map(|r| r["seq"].as_u64())
            .min()
    };
    let injected = seq("secret.injected").expect("secret.injected");
    assert!(
        recs.iter().any(|r| r["job"] == p1.as_str()
            && r["kind"] == "secret.injected"
            && r["data"]["names"][0] == "ACTIONS_RUNNER_INPUT_JITCONFIG"),
        "the late JIT config is named on the record"
    );
    let first_exec = seq("process.exec").expect("the runner's exec");
    assert!(
        injected < first_exec && seq("job.started").is_some_and(|s| s > injected),
        "something ran before the start"
    );
    // The JIT config is in no file: not the derived policy, not config.json, not the log.
    let jit = jit_config_of(runner_id, &name);
    for d in [e.w.state(), e.w.data()] {
        let hits = files_containing(&d, jit.as_bytes());
        assert!(hits.is_empty(), "the JIT config is on disk: {hits:?}");
    }
    // Refilled.
    e.wait_for("a new primed sandbox", || {
        primed_ready(&e).iter().any(|p| *p != p1)
    });
    let dead = primed_ready(&e).remove(0);
    // Its airlock run killed (-9): serve stops counting it, removes what it left (airlock
    // gc) and primes another.
    let state: Value = serde_json::from_slice(
        &std::fs::read(e.w.state().join("jobs").join(format!("{dead}.json"))).expect("state"),
    )
    .expect("json");
    let owner = state["owner"]["pid"].as_i64().expect("owner pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(owner).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the primed airlock run");
    e.wait_for("the dead primed sandbox removed and another primed", || {
        let jobs = e.w.state().join("jobs");
        !jobs.join(&dead).exists()
            && !jobs.join(format!("{dead}.json")).exists()
            && primed_ready(&e).iter().any(|p| *p != dead && *p != p1)
    });
    let p2 = primed_ready(&e).remove(0);

    // kill -9 of serve: the primed sandbox's airlock run ends with it and takes it down.
    let mut serve = e.serve.take().expect("serve");
    serve.kill().expect("kill -9");
    serve.wait().expect("reap");
    e.wait_for("the orphaned primed sandbox retired", || {
        e.audit()
            .iter()
            .any(|r| r["job"] == p2.as_str() && r["kind"] == "job.ended")
    });
    assert!(
        !e.audit()
            .iter()
            .any(|r| r["job"] == p2.as_str() && r["kind"] == "process.exec"),
        "the retired primed sandbox ran something"
    );
    e.start_serve();
    e.wait_for("primed again after the restart", || {
        primed_ready(&e).iter().any(|p| *p != p2)
    });
    let p3 = primed_ready(&e).remove(0);
    e.stop_serve();
    let ended = e
        .audit()
        .into_iter()
        .find(|r| r["job"] == p3.as_str() && r["kind"] == "job.ended")
        .expect("SIGTERM retires the primed sandbox");
    assert_eq!(ended["data"]["outcome"]["kind"], "interrupted", "{ended:#}");
    e.assert_scale_set_gone();
    // No primed sandbox's work directory is left (the orphaned one went at the restart);
    // runners' directories may keep only their output and report, for people.
    for d in std::fs::read_dir(e.w.state().join("serve"))
        .map(|rd| rd.flatten().map(|x| x.path()).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let n = d.file_name().map(|n| n.to_string_lossy().into_owned());
        assert!(
            !n.as_deref().is_some_and(|n| n.starts_with("primed-")),
            "{} left",
            d.display()
        );
        for f in std::fs::read_dir(&d).expect("dir").flatten() {
            let f = f.file_name().to_string_lossy().into_owned();
            assert!(
                f == "output.log" || f == "report.json",
                "{f} left in {}",
                d.display()
            );
        }
    }
}

/// A primed `airlock run` killed -9 while it makes its sandbox, before it is ready: serve
/// says so, removes what it left (`airlock gc`: the sandbox, its cgroups, mounts, address),
/// keeps its output under `failed-primed-…`, and nothing of it is left.
#[test]
fn a_priming_killed_before_it_is_ready_leaves_nothing() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let mut e = primed_world();
    let jobs = e.w.state().join("jobs");
    let primed_on_record = |e: &E2e, id: &str| {
        e.audit()
            .iter()
            .any(|r| r["job"] == id && r["kind"] == "job.primed")
    };
    // A sandbox's state is written first thing: its airlock run is stopped there (SIGSTOP),
    // and killed if it has not said it is ready (no `job.primed` on the record). One that already had is killed too (serve
    // then primes the next at once) and the next is tried.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut seen: Vec<String> = Vec::new();
    let victim = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no priming caught before it was ready; serve's log:\n{}",
            e.log()
        );
        let fresh = std::fs::read_dir(&jobs)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| {
                let n = d.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".json").map(str::to_owned)
            })
            .find(|id| !seen.contains(id));
        let Some(id) = fresh else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let Some(st) = std::fs::read(jobs.join(format!("{id}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            continue;
        };
        seen.push(id.clone());
        // Only group ss primes (the warm group's runner is a plain `airlock run`).
        let Some(owner) = st["owner"]["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|_| st["group"] == "ss")
        else {
            continue;
        };
        let pid = nix::unistd::Pid::from_raw(owner);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
        // Every thread stopped: `job.primed` is durable before READY is written, so its
        // absence now means serve has not been told.
        for _ in 0..1000 {
            let all_stopped = std::fs::read_dir(format!("/proc/{owner}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .all(|t| {
                    std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                        s.rsplit_once(") ")
                            .is_some_and(|(_, r)| r.starts_with('T') || r.starts_with('t'))
                    })
                });
            if all_stopped {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let was_ready = primed_on_record(&e, &id);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        if !was_ready {
            break id;
        }
    };
    e.wait_for(
        "serve to report the failed priming and remove its sandbox",
        || {
            let log = e.log();
            log.contains("did not get the sandbox ready")
                && log.contains(&format!("removed what it left: {victim}"))
                && !jobs.join(&victim).exists()
                && !jobs.join(format!("{victim}.json")).exists()
        },
    );
    assert!(
        !primed_on_record(&e, &victim),
        "the victim said it was ready after all"
    );
    e.stop_serve();
    e.w.assert_clean();
    let serve_dirs: Vec<String> = std::fs::read_dir(e.w.state().join("serve"))
        .map(|rd| {
            rd.flatten()
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !serve_dirs.iter().any(|n| n.starts_with("primed-")),
        "{serve_dirs:?}"
    );
    let failed: Vec<&String> = serve_dirs
        .iter()
        .filter(|n| n.starts_with("failed-primed-"))
        .collect();
    assert!(
        !failed.is_empty(),
        "its output was not kept: {serve_dirs:?}"
    );
    for f in failed {
        let files: Vec<String> = std::fs::read_dir(e.w.state().join("serve").join(f))
            .expect("dir")
            .flatten()
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, ["output.log"], "{f}");
    }
}

// ---------------------------------------------------------------------------------------
// Benchmarks (ignored; `scripts/bench-scaleset.sh` runs them on a release build).

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn percentile(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn bench_jobs() -> usize {
    std::env::var("AIRLOCK_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

impl E2e {
    /// The time of the scale-set message that assigned `id`.
    fn message_ms(&self, id: u64) -> Option<i64> {
        let want = id.to_string();
        self.audit().into_iter().find_map(|r| {
            (r["kind"] == "serve.scaleset.message"
                && r["data"]["assigned_jobs"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|j| j == want.as_str())))
            .then(|| r["time_ms"].as_i64())
            .flatten()
        })
    }

    /// The first `process.exec` recorded after `t` (any job).
    fn first_exec_after(&self, t: i64) -> Option<i64> {
        self.audit()
            .into_iter()
            .filter(|r| r["kind"] == "process.exec")
            .filter_map(|r| r["time_ms"].as_i64())
            .filter(|x| *x >= t)
            .min()
    }

    fn alive_runners(&self, prefix: &str) -> usize {
        E2e::runners_named(&self.state(), prefix).len()
    }
}

/// Message received → the runner's first exec in its sandbox (cold) and → the job fetched
/// (cold and warm), one job at a time; against `airlock run` of the runner image (spawn →
/// first exec) in the same run.
#[test]
#[ignore = "benchmark: scripts/bench-scaleset.sh"]
fn bench_scale_set_start_latency() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let n = bench_jobs();
    // A third scale set whose runners start in primed sandboxes (`prestart = 1`).
    let policy = format!(
        "{POLICY_SS}[groups.primed]\nrepositories = [\"octo-org/*\"]\nrootfs = {{ image = \"127.0.0.1:5000/e2e/fakerunner:1\" }}\nrunner = [\"/opt/runner/airlock-fake-runner\", \"--wait-secs\", \"600\"]\negress = {{ domains = [\"api.github.test\"], resolver = \"198.51.100.53\" }}\nlimits = {{ timeout = \"3m\" }}\nmax_runners = 2\nprestart = 1\nscale_set = {{ name = \"airlock-primed\" }}\n"
    );
    let mut e = world_custom(Mode::ScaleSet, Some(&policy), None);
    // Bare libcontainer's whole run (create, start, wait, delete of airlock's own spec on a
    // prepared directory; scripts/bench.sh's baseline), sampled between the primed jobs.
    let bundle_bin = std::env::var("AIRLOCK_BENCH_BUNDLE").ok();
    let bundle = e.w.dir.path().join("bare-bundle");
    if let Some(b) = &bundle_bin {
        let ok = Command::new(b)
            .arg("prepare")
            .arg(&bundle)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "bench-bundle prepare");
    }
    let (mut cold_exec, mut cold_fetch, mut warm_fetch, mut run_exec) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cold_decided, mut primed_decided, mut primed_fetch, mut bare_us) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Decision (serve's `serve.runner.provisioning` of the job's runner) → the first exec in
    // the sandbox that ran it (serve's `serve.job.finished` names it); one audit clock, ms.
    let decided_to_exec = |e: &E2e, set: &str, id: u64| -> Option<i64> {
        let s = e.state();
        let runner = E2e::job(&s, id)["runner_name"].as_str()?.to_owned();
        let key = format!("ss-{set}-{id}");
        let mut fin = None;
        e.wait_for("serve's record of the job", || {
            fin = e
                .audit()
                .into_iter()
                .find(|r| r["kind"] == "serve.job.finished" && r["job"] == key.as_str());
            fin.is_some()
        });
        let sandbox = fin?["data"]["sandbox"].as_str()?.to_owned();
        let recs = e.audit();
        let decided = recs.iter().find_map(|r| {
            (r["kind"] == "serve.runner.provisioning" && r["job"] == runner.as_str())
                .then(|| r["time_ms"].as_i64())
                .flatten()
        })?;
        let exec = recs
            .iter()
            .filter(|r| r["kind"] == "process.exec" && r["job"] == sandbox.as_str())
            .filter_map(|r| r["time_ms"].as_i64())
            .min()?;
        Some(exec - decided)
    };
    for i in 0..n as u64 {
        let id = 10_000 + i;
        e.jobs_labelled([id], "airlock-e2e", "true");
        e.wait_for("the cold job", || {
            E2e::job(&e.state(), id)["status"] == "completed"
        });
        e.wait_for("its runner gone", || {
            e.alive_runners("airlock-airlock-e2e-") == 0
        });
        let t = e.message_ms(id).expect("message");
        let fetched = E2e::job(&e.state(), id)["fetched_ms"]
            .as_i64()
            .expect("fetched");
        cold_fetch.push(fetched - t);
        if let Some(x) = e.first_exec_after(t) {
            cold_exec.push(x - t);
        }
        if let Some(x) = decided_to_exec(&e, "airlock-e2e", id) {
            cold_decided.push(x);
        }
    }
    for i in 0..n as u64 {
        let id = 30_000 + i;
        e.wait_for("a primed sandbox", || {
            !primed_ready_in(&e, "primed").is_empty()
        });
        if let Some(b) = &bundle_bin {
            let t0 = Instant::now();
            let ok = Command::new(b)
                .arg("run")
                .arg(&bundle)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "bench-bundle run");
            bare_us.push(t0.elapsed().as_micros() as i64);
        }
        e.jobs_labelled([id], "airlock-primed", "true");
        e.wait_for("the primed job", || {
            E2e::job(&e.state(), id)["status"] == "completed"
        });
        let t = e.message_ms(id).expect("message");
        let fetched = E2e::job(&e.state(), id)["fetched_ms"]
            .as_i64()
            .expect("fetched");
        primed_fetch.push(fetched - t);
        if let Some(x) = decided_to_exec(&e, "airlock-primed", id) {
            primed_decided.push(x);
        }
    }
    for i in 0..n as u64 {
        let id = 20_000 + i;
        e.wait_for("a warm runner polling", || {
            E2e::runners_named(&e.state(), "airlock-airlock-warm-")
                .iter()
                .any(|r| r["status"] == "online" && r["busy"] == false)
        });
        e.jobs_labelled([id], "airlock-warm", "true");
        e.wait_for("the warm job", || {
            E2e::job(&e.state(), id)["status"] == "completed"
        });
        let t = e.message_ms(id).expect("message");
        let fetched = E2e::job(&e.state(), id)["fetched_ms"]
            .as_i64()
            .expect("fetched");
        warm_fetch.push(fetched - t);
    }
    // serve's own phases of the cold path, from its debug log (scripts/bench-scaleset.sh
    // sets AIRLOCK_E2E_SERVE_LOG=info,airlock_manager=debug).
    let log = e.log();
    let phase = |needle: &str| -> Vec<i64> {
        log.lines()
            .filter(|l| l.contains("airlock-airlock-e2e-"))
            .filter_map(|l| l.split(needle).nth(1))
            .filter_map(|d| debug_duration_ms(d.trim()))
            .collect()
    };
    let (mut jit, mut spawned) = (
        phase("JIT config after "),
        phase("sandbox process running after "),
    );
    e.stop_serve();
    // `airlock run` of the runner image under the same policy and group as serve's runners
    // (same egress rules and resolver), same machine, same run.
    let pol = e.w.dir.path().join("serve-policy.toml");
    for _ in 0..n {
        let t0 = now_ms();
        let o =
            e.w.cmd()
                .arg("run")
                .arg("--policy")
                .arg(&pol)
                .args(["--group", "ss", "-q", "--", RUNNER, "--help"])
                .output()
                .expect("airlock run");
        assert!(o.status.success(), "{}", stderr(&o));
        if let Some(x) = e.first_exec_after(t0) {
            run_exec.push(x - t0);
        }
    }
    let med = |v: &mut Vec<i64>| percentile(v, 0.5);
    let p95 = |v: &mut Vec<i64>| percentile(v, 0.95);
    let base = med(&mut run_exec).max(1) as f64;
    println!("BENCH scale-set start, {n} jobs each, ms (median / p95 / median vs airlock run):");
    for (name, v) in [
        ("airlock run: spawn -> first exec", &mut run_exec),
        ("cold: message -> runner exec'd", &mut cold_exec),
        ("cold: message -> job fetched", &mut cold_fetch),
        ("warm: message -> job fetched", &mut warm_fetch),
    ] {
        let (m, p) = (med(v), p95(v));
        println!("BENCH | {name} | {m} | {p} | {:.2}x |", m as f64 / base);
    }
    if !bare_us.is_empty() {
        let bare = percentile(&mut bare_us, 0.5).max(1) as f64 / 1000.0;
        println!("BENCH decision -> runner's first exec, ms (median / p95 / median vs bare libcontainer's whole run):");
        println!(
            "BENCH | bare libcontainer: create, start, wait, delete | {:.1} | {:.1} | 1.00x |",
            bare,
            percentile(&mut bare_us, 0.95) as f64 / 1000.0
        );
        for (name, v) in [
            ("cold: decision -> first exec", &mut cold_decided),
            ("primed: decision -> first exec", &mut primed_decided),
        ] {
            let (m, p) = (med(v), p95(v));
            println!("BENCH | {name} | {m} | {p} | {:.2}x |", m as f64 / bare);
        }
        let (m, p) = (med(&mut primed_fetch), p95(&mut primed_fetch));
        println!(
            "BENCH | primed: message -> job fetched | {m} | {p} | {:.2}x of airlock run |",
            m as f64 / base
        );
    }
    if !jit.is_empty() {
        println!(
            "BENCH | serve, cold: decision -> JIT config | {} | {} | |",
            med(&mut jit),
            p95(&mut jit)
        );
        println!(
            "BENCH | serve, cold: decision -> airlock run spawned | {} | {} | |",
            med(&mut spawned),
            p95(&mut spawned)
        );
    }
}

/// Milliseconds of a `Debug`-printed `Duration` (`12.3ms`, `950.1µs`, `1.2s`).
fn debug_duration_ms(s: &str) -> Option<i64> {
    let s = s.split_whitespace().next()?;
    let (num, scale) = if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("µs") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ns") {
        (v, 0.000_001)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    let v: f64 = num.parse().ok()?;
    Some((v * scale).round() as i64)
}

/// 1,000 jobs assigned at once with capacity 8: all complete, none lost or run twice; total
/// time and serve's peak RSS.
#[test]
#[ignore = "benchmark: scripts/bench-scaleset.sh"]
fn bench_scale_set_thousand_jobs() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let n: u64 = std::env::var("AIRLOCK_BENCH_BURST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let policy = POLICY_SS
        .replace(
            "max_runners = 2\nscale_set = { name = \"airlock-e2e\" }",
            "max_runners = 8\nscale_set = { name = \"airlock-e2e\" }",
        )
        .replace("min_idle = 1", "min_idle = 0");
    let mut e = world_custom(Mode::ScaleSet, Some(&policy), Some(8));
    let t0 = Instant::now();
    // All queued at once, in one call (the fake gathers them into messages of at most 50).
    let jobs: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"id": 100_000 + i, "labels": ["airlock-e2e"], "script": "true", "repository": "octo-org/app"}))
        .collect();
    let f = e.w.dir.path().join("burst.json");
    std::fs::write(&f, Value::Array(jobs).to_string()).expect("burst");
    let (code, body) = e.curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("@{}", f.display()),
        &format!("http://{FAKE_IP}/_fake/jobs/bulk"),
    ]);
    assert_eq!(code, 201, "{body}");
    let queued = t0.elapsed();
    let mut peak_kib = 0u64;
    let pid = e.serve.as_ref().map(|c| c.id()).expect("serve");
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let s = e.state();
        let done = (0..n)
            .filter(|i| E2e::job(&s, 100_000 + i)["status"] == "completed")
            .count() as u64;
        let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmHWM:").map(|v| {
                    v.trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0)
                })
            })
            .unwrap_or(0);
        peak_kib = peak_kib.max(hwm);
        if done == n {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {n} done");
        std::thread::sleep(Duration::from_millis(500));
    }
    let total = t0.elapsed();
    let s = e.state();
    let twice: Vec<u64> = (0..n)
        .filter(|i| E2e::job(&s, 100_000 + i)["fetches"] != 1)
        .collect();
    assert!(twice.is_empty(), "jobs not run exactly once: {twice:?}");
    e.stop_serve();
    println!(
        "BENCH | {n} jobs assigned at once, capacity 8 | queued in {:.1} s | all done in {:.1} s | {:.1} jobs/s | serve peak RSS {:.1} MiB |",
        queued.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        peak_kib as f64 / 1024.0
    );
}

/// The real binary through a storm: 50 jobs in bursts while the queue token expires and the
/// Actions service answers 5xx on polls, acknowledgements, JIT configs and sessions; a job
/// cancelled while it waits and assigned again; then kill -9 of serve while a runner is being
/// provisioned and a message is committed but not acknowledged, and a restart. Every job runs
/// exactly once, every runner is gone at the end, nothing is left on the host.
#[test]
fn scale_set_storms_bursts_cancellations_and_a_crash_before_the_ack() {
    need_root!();
    need_fakes!();
    need_registry_tools!();
    let mut e = world_with(Mode::ScaleSet);
    let fault = |e: &E2e, endpoint: &str, times: u32| {
        let code = e.fake_post(
            "/_fake/faults",
            &serde_json::json!({"endpoint": endpoint, "fault": {"kind": "server_error"}, "times": times}),
        );
        assert_eq!(code, 204, "inject {endpoint}");
    };
    for burst in 0..5u64 {
        e.jobs_labelled((0..10).map(|i| 500 + burst * 10 + i), "airlock-e2e", "true");
        match burst {
            1 => {
                assert_eq!(
                    e.fake_post("/_fake/actions/expire-queue-tokens", &Value::Null),
                    204
                );
                fault(&e, "message_queue", 5);
            }
            2 => {
                fault(&e, "acknowledge_message", 3);
                fault(&e, "scale_set_jit_config", 2);
                fault(&e, "sessions", 1);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // The last job waits behind 49 others with two runners: cancel it, then assign it again.
    assert_eq!(e.fake_post("/_fake/jobs/549/cancel", &Value::Null), 204);
    e.jobs_labelled([549], "airlock-e2e", "true");
    e.wait_for("50 jobs completed", || {
        let s = e.state();
        (500..550).all(|id| {
            s["jobs"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|j| j["id"] == id && j["status"] == "completed" && j["fetches"] == 1)
            })
        })
    });
    let s = e.state();
    for id in 500..550u64 {
        let fetches: u64 = s["jobs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|j| j["id"] == id)
                    .map(|j| j["fetches"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        assert_eq!(fetches, 1, "job {id} ran {fetches} times: {s:#}");
    }
    e.wait_for("serve's records of the 50 jobs and the cancel", || {
        let recs = e.audit();
        let finished = recs
            .iter()
            .filter(|r| {
                r["kind"] == "serve.job.finished" && r["data"]["source"] == "scaleset:airlock-e2e"
            })
            .count();
        let cancelled = recs
            .iter()
            .any(|r| r["kind"] == "serve.job.cancelled" && r["job"] == "ss-airlock-e2e-549");
        finished == 50 && cancelled
    });

    // kill -9 while a runner is provisioned (JIT configs fail) and a message is committed but
    // its acknowledgement fails.
    fault(&e, "scale_set_jit_config", 10_000);
    fault(&e, "acknowledge_message", 10_000);
    let acks = E2e::calls(&e.state(), "acknowledge_message");
    e.jobs_labelled([600], "airlock-e2e", "echo once");
    e.wait_for("a failing acknowledgement and a failing JIT config", || {
        let s = e.state();
        E2e::calls(&s, "acknowledge_message") >= acks + 2
            && E2e::calls(&s, "scale_set_jit_config") >= 1
    });
    let mut serve = e.serve.take().expect("serve");
    serve.kill().expect("kill -9");
    serve.wait().expect("reap");
    assert_eq!(
        e.curl(&["-X", "DELETE", &format!("http://{FAKE_IP}/_fake/faults")])
            .0,
        204
    );
    e.start_serve();
    e.wait_for("job 600 done after the restart", || {
        E2e::job(&e.state(), 600)["status"] == "completed"
    });
    let s = e.state();
    assert_eq!(E2e::job(&s, 600)["fetches"], 1, "{s:#}");
    assert!(
        e.audit()
            .iter()
            .any(|r| r["kind"] == "serve.reconcile.runner_lost"),
        "the runner being provisioned at the crash was reconciled"
    );
    e.stop_serve();
    e.assert_scale_set_gone();
}
