//! Shared helpers of the integration tests: they drive the real `airlock` binary, each test
//! in its own state and data directories, and check that nothing of a job is left behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Skips a test that needs root (mounts, cgroups, namespaces) with a clear message.
#[macro_export]
macro_rules! need_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "SKIPPED {}: needs root (mounts, cgroups, namespaces); run the tests as root",
                module_path!()
            );
            return;
        }
    };
}

pub const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");
pub const PROBE: &str = env!("CARGO_BIN_EXE_airlock-probe");

pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("airlock-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("ws")).expect("ws");
        std::fs::copy(PROBE, dir.path().join("ws/airlock-probe")).expect("copy probe");
        World { dir }
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
        let mut c = Command::new(AIRLOCK);
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
