//! Shared helpers of the integration tests: they drive the real `airlock` binary, each test
//! in its own state and data directories, and check that nothing of a job is left behind.
#![allow(dead_code)]

pub mod oci;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Skips a test that needs root (mounts, cgroups, namespaces) with a clear message; fails it
/// instead under `AIRLOCK_TEST_STRICT` (set by scripts/test.sh), where a skip would hide it.
#[macro_export]
macro_rules! need_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            // scripts/test.sh (and so CI) sets AIRLOCK_TEST_STRICT: there a test that needs
            // root fails instead of passing as a silent skip.
            assert!(
                std::env::var_os("AIRLOCK_TEST_STRICT").is_none(),
                "{} needs root (mounts, cgroups, namespaces) and AIRLOCK_TEST_STRICT forbids skipping it: run the tests as root",
                module_path!()
            );
            eprintln!(
                "SKIPPED {}: needs root (mounts, cgroups, namespaces); run the tests as root",
                module_path!()
            );
            return;
        }
    };
}

/// The firewall's sets whose elements belong to one job (crates/net/src/firewall.rs).
pub const JOB_SETS: &[&str] = &[
    "jobs",
    "job_gw",
    "gateways",
    "audit_jobs",
    "allowed",
    "gw_ports",
];

pub const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");
pub const PROBE: &str = env!("CARGO_BIN_EXE_airlock-probe");

/// The airlock binary the tests drive: `AIRLOCK_BIN` if set (a copy taken right after the
/// build, when several worktrees share one target directory and overwrite its binaries),
/// else cargo's.
pub fn airlock_bin() -> String {
    std::env::var("AIRLOCK_BIN").unwrap_or_else(|_| AIRLOCK.to_owned())
}

/// The probe copied into each workspace: `AIRLOCK_PROBE_BIN` if set, else cargo's.
pub fn probe_bin() -> String {
    std::env::var("AIRLOCK_PROBE_BIN").unwrap_or_else(|_| PROBE.to_owned())
}

/// One test's world: its own state and data directories and, as root, its own network
/// namespace with nothing but loopback, in which every airlock command runs (the sealed-world
/// rule of ../shared/ENVIRONMENT.md: a failed block can only hit nothing).
pub struct World {
    pub dir: tempfile::TempDir,
    pub netns: Option<String>,
}

impl Drop for World {
    fn drop(&mut self) {
        // A test that failed may have left sandboxes (its assertions stop before their
        // teardown): airlock gc removes them, inside this world's namespace (their veths and
        // firewall elements are there). Then the directory goes only if nothing is mounted
        // under it: removing it through a live mount would delete what the mount shows.
        let root = nix::unistd::geteuid().is_root();
        // Their airlock runs first (SIGTERM: each tears its job down and exits), found by
        // their state files and checked by their environment naming this world's state.
        let mine = format!("AIRLOCK_STATE_DIR={}", self.state().display());
        let owners: Vec<i32> = std::fs::read_dir(self.state().join("jobs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter_map(|v| v["owner"]["pid"].as_i64())
            .filter_map(|p| i32::try_from(p).ok())
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == mine.as_bytes()))
            })
            .collect();
        for p in &owners {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for _ in 0..100 {
            // Gone, or a zombie (the test may hold its Child unreaped).
            let gone = |p: &i32| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| {
                    s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))
                })
            };
            if owners.iter().all(gone) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if root && self.state().join("jobs").exists() {
            let _ = self
                .cmd()
                .args(["gc", "--force", "--json"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mounted = || {
            std::fs::read_to_string("/proc/self/mountinfo")
                .map(|m| m.lines().any(|l| l.contains(&format!("{dir}/"))))
                .unwrap_or(false)
        };
        // A job's own airlock run may still be tearing down what gc did not take.
        for _ in 0..50 {
            if !mounted() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if mounted() {
            eprintln!(
                "mounts are left under {dir}: it is kept (airlock gc --state-dir {dir}/state)"
            );
            self.dir.disable_cleanup(true);
        }
    }
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("airlock-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("ws")).expect("ws");
        std::fs::copy(probe_bin(), dir.path().join("ws/airlock-probe")).expect("copy probe");
        let netns = nix::unistd::geteuid().is_root().then(|| {
            let name = format!(
                "airlock-t{}",
                dir.path()
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )
            .replace(['.', '-'], "");
            let ok = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .map(|s| s.success());
            assert!(
                matches!(ok, Ok(true)),
                "cannot create network namespace {name}"
            );
            let _ = Command::new("ip")
                .args(["-n", &name, "link", "set", "lo", "up"])
                .status();
            name
        });
        World { dir, netns }
    }

    /// Runs `argv` inside this world's network namespace.
    pub fn in_netns(&self, argv: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--");
                c.args(argv);
                c
            }
            None => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        c.stdin(Stdio::null());
        c
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    /// A workspace directory holding the probe binary.
    pub fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    pub fn policy(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("policy.toml");
        std::fs::write(&p, text).expect("write policy");
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = self.in_netns(&[&airlock_bin()]);
        c.env("AIRLOCK_STATE_DIR", self.state())
            .env("AIRLOCK_DATA_DIR", self.data())
            .env_remove("AIRLOCK_POLICY")
            .stdin(Stdio::null());
        c
    }

    /// `airlock run [extra…] -w WS -- argv…`
    pub fn run(&self, extra: &[&str], argv: &[&str]) -> Output {
        let mut c = self.cmd();
        c.arg("run")
            .args(extra)
            .arg("-w")
            .arg(self.ws())
            .arg("--")
            .args(argv);
        c.output().expect("run airlock")
    }

    /// Runs a shell script as a job.
    pub fn sh(&self, extra: &[&str], script: &str) -> Output {
        self.run(extra, &["/bin/sh", "-c", script])
    }

    /// Asserts that no job state, mount, cgroup or executor state is left.
    pub fn assert_clean(&self) {
        let jobs = self.state().join("jobs");
        let left: Vec<_> = std::fs::read_dir(&jobs)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "job state left behind: {left:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let state = self.state();
        let state = state.to_string_lossy();
        assert!(
            !mounts.contains(state.as_ref()),
            "mounts left under {state}:\n{}",
            mounts
                .lines()
                .filter(|l| l.contains(state.as_ref()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let leases: Vec<_> = std::fs::read_dir(self.state().join("net/leases"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(leases.is_empty(), "address leases left: {leases:?}");
        if self.netns.is_some() {
            // The kernel destroys an unpinned namespace, and the veth pair with it, in the
            // background: give it a moment.
            let mut links = String::new();
            for _ in 0..100 {
                let o = self
                    .in_netns(&["ip", "-o", "link"])
                    .output()
                    .expect("ip link");
                links = String::from_utf8_lossy(&o.stdout).into_owned();
                if !links.contains(": alk") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
            assert!(!links.contains(": alk"), "job veths left:\n{links}");
            // Every set keyed by a job's address: an element left behind (an allow rule, audit
            // mode) would be inherited by the next job that leases the same address.
            let table = self
                .in_netns(&["nft", "list", "table", "inet", "airlock"])
                .output()
                .expect("nft")
                .status
                .success();
            // No table: this world never started a job's network.
            for name in JOB_SETS.iter().filter(|_| table) {
                // gw_ports is a map (job's service port : its gateway's port).
                let kind = if *name == "gw_ports" { "map" } else { "set" };
                let o = self
                    .in_netns(&["nft", "list", kind, "inet", "airlock", name])
                    .output()
                    .expect("nft");
                let set = String::from_utf8_lossy(&o.stdout).into_owned();
                assert!(
                    o.status.success(),
                    "nft list set {name}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                assert!(
                    !set.contains("elements"),
                    "firewall elements left in {name}:\n{set}"
                );
            }
        }
        for ex in ["libcontainer", "runc", "runsc"] {
            let d = self.state().join(ex);
            let left: Vec<_> = std::fs::read_dir(&d)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{ex} state left: {left:?}");
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every cgroup directory named after job `id`, in any hierarchy.
pub fn cgroups_of(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let roots = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
    for r in roots {
        let Ok(rd) = std::fs::read_dir(r) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path().join("airlock").join(id);
            if p.exists() {
                out.push(p);
            }
        }
        let p = Path::new(r).join("airlock").join(id);
        if p.exists() {
            out.push(p);
        }
    }
    out
}

/// The job id in airlock's summary line.
pub fn job_id(o: &Output) -> Option<String> {
    let e = stderr(o);
    let i = e.find("job j")?;
    Some(e[i + 4..i + 21].to_owned())
}

/// Asserts that airlock's output names its job and that no cgroup of that job is left, in
/// any hierarchy; returns the job id.
pub fn assert_job_gone(o: &Output) -> String {
    let id = job_id(o).unwrap_or_else(|| panic!("no job id in airlock's output: {}", stderr(o)));
    let left = cgroups_of(&id);
    assert!(left.is_empty(), "cgroups of job {id} left: {left:?}");
    id
}

/// `airlock audit show ARGS` in world `w`, one JSON value per line.
pub fn show(w: &World, args: &[&str]) -> Vec<serde_json::Value> {
    let o = w
        .cmd()
        .args(["audit", "show"])
        .args(args)
        .output()
        .expect("show");
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// The audit records of one kind (`--kind` matches a prefix: `job` is every `job.*`).
pub fn records(w: &World, kind: &str) -> Vec<serde_json::Value> {
    show(w, &["--json", "--kind", kind])
}
