//! Record streams for the detector tests: a builder and a realistic benign job.

use serde_json::{json, Value};

use crate::Record;

/// Builds one job's records with increasing sequence numbers and times.
pub(crate) struct Log {
    pub recs: Vec<Record>,
    job: String,
    /// Current time, ms.
    pub t: u128,
    seq: u64,
}

impl Log {
    pub fn new(job: &str) -> Self {
        Self {
            recs: Vec::new(),
            job: job.to_owned(),
            t: 1_700_000_000_000,
            seq: 0,
        }
    }

    /// Continues another job's sequence numbers (one log, several jobs).
    pub fn after(job: &str, other: &Log) -> Self {
        let mut l = Self::new(job);
        l.seq = other.seq;
        l.t = other.t;
        l
    }

    pub fn push(&mut self, kind: &str, data: Value) -> u64 {
        self.seq += 1;
        self.t += 3;
        self.recs.push(Record {
            seq: self.seq,
            time_ms: self.t,
            kind: kind.to_owned(),
            job: Some(self.job.clone()),
            data,
            prev: String::new(),
        });
        self.seq
    }

    pub fn requested(&mut self, group: &str, argv: &[&str], egress: &str) -> u64 {
        self.push(
            "job.requested",
            json!({"group": group, "trust": "untrusted", "executor": "libcontainer",
                   "argv": argv, "user": {"uid": 1001, "gid": 1001},
                   "egress_mode": egress, "secrets": []}),
        )
    }

    pub fn exec(&mut self, pid: u64, ppid: u64, cwd: &str, path: &str, argv: &[&str]) -> u64 {
        self.push(
            "process.exec",
            json!({"pid": pid, "ppid": ppid, "uid": 1001, "cwd": cwd, "path": path, "argv": argv}),
        )
    }

    pub fn exit(&mut self, pid: u64, code: i64) -> u64 {
        self.push("process.exit", json!({"pid": pid, "exit_code": code}))
    }

    /// A gateway record; `time_ms` inside is the event time.
    pub fn net(&mut self, kind: &str, fields: Value) -> u64 {
        let mut d = json!({"time_ms": self.t, "job": self.job, "kind": kind, "port": 0,
                           "bytes_up": 0, "bytes_down": 0, "duration_ms": 1,
                           "verdict": "allow", "reason": "allow-listed"});
        if let (Some(o), Some(f)) = (d.as_object_mut(), fields.as_object()) {
            for (k, v) in f {
                o.insert(k.clone(), v.clone());
            }
        }
        self.push(&format!("net.{kind}"), d)
    }

    pub fn dns_ok(&mut self, name: &str) -> u64 {
        self.net(
            "dns",
            json!({"name": name, "qtype": "A", "resolved": "203.0.113.10", "port": 53}),
        )
    }

    pub fn https_ok(&mut self, name: &str) -> u64 {
        self.net(
            "https",
            json!({"name": name, "resolved": "203.0.113.10", "port": 443,
                   "bytes_up": 2_000, "bytes_down": 900_000}),
        )
    }

    pub fn drop(&mut self, dialled: &str) -> u64 {
        let port: u16 = dialled
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        self.net(
            "drop",
            json!({"qtype": "tcp", "dialled": dialled, "port": port, "verdict": "deny",
                   "reason": format!("tcp to {dialled} is not allowed")}),
        )
    }

    pub fn file(&mut self, path: &str, change: &str, persistence: Option<&str>) -> u64 {
        let mut d = json!({"path": path, "change": change, "size": 120, "mode": 0o644});
        if let (Some(p), Some(o)) = (persistence, d.as_object_mut()) {
            o.insert("persistence".into(), json!(p));
        }
        self.push("file.changed", d)
    }

    pub fn ended(&mut self) -> u64 {
        self.push(
            "job.ended",
            json!({"outcome": "exited 0", "duration_ms": 61_000, "teardown_errors": []}),
        )
    }
}

/// A `cargo build` of a crate with a few dependencies: crates.io and static.crates.io
/// allowed, rustc/cc/ld run many times, files written only in the workspace, ~/.cargo and
/// /tmp, and the things a build does that look odd but are not attacks (`cargo metadata`, a
/// refused HTTPS-RR DNS query for an allowed name, an AAAA answered empty).
pub(crate) fn benign_build(job: &str, group: &str) -> Log {
    let mut l = Log::new(job);
    l.requested(group, &["cargo", "build", "--release", "--locked"], "block");
    l.push("job.started", json!({"pid": 4000}));
    let ws = "/home/runner/work/app/app";
    l.exec(
        4000,
        3990,
        ws,
        "/usr/bin/cargo",
        &["cargo", "build", "--release", "--locked"],
    );
    l.exec(
        4001,
        4000,
        ws,
        "/usr/bin/cargo",
        &["cargo", "metadata", "--format-version", "1"],
    );
    l.exit(4001, 0);
    for host in ["index.crates.io", "static.crates.io", "crates.io"] {
        l.dns_ok(host);
        l.net(
            "dns",
            json!({"name": host, "qtype": "AAAA", "port": 53, "reason": "no IPv6 in jobs: empty answer"}),
        );
        l.net(
            "dns",
            json!({"name": host, "qtype": "HTTPS", "port": 53, "verdict": "deny",
                   "reason": "only A and AAAA are answered", "allowed_but_failed": true}),
        );
    }
    for _ in 0..30 {
        l.https_ok("static.crates.io");
    }
    l.https_ok("index.crates.io");
    let mut pid = 4100;
    for krate in 0..60 {
        pid += 1;
        let rustc = pid;
        l.exec(
            rustc,
            4000,
            ws,
            "/usr/bin/rustc",
            &[
                "rustc",
                "--crate-name",
                &format!("dep{krate}"),
                "--edition=2021",
                "src/lib.rs",
            ],
        );
        if krate % 10 == 0 {
            pid += 1;
            l.exec(
                pid,
                rustc,
                ws,
                "/usr/bin/cc",
                &["cc", "-c", "-O2", "build/foo.c", "-o", "/tmp/foo.o"],
            );
            l.exit(pid, 0);
            pid += 1;
            l.exec(
                pid,
                rustc,
                "/tmp",
                "/usr/bin/ld",
                &["ld", "-o", "/tmp/build-script", "/tmp/foo.o"],
            );
            l.exit(pid, 0);
            pid += 1;
            l.exec(
                pid,
                4000,
                ws,
                &format!("{ws}/target/release/build/dep{krate}-1234/build-script-build"),
                &["build-script-build"],
            );
            l.exit(pid, 0);
        }
        l.exit(rustc, 0);
    }
    l.exit(4000, 0);
    l.file(&format!("{ws}/target/release/app"), "created", None);
    l.file(
        &format!("{ws}/target/release/deps/libdep1.rlib"),
        "created",
        None,
    );
    l.file(
        "/home/runner/.cargo/registry/index/index.crates.io-6f17d22bba15001f/.cache/se/rd/serde",
        "created",
        None,
    );
    l.file(
        "/home/runner/.cargo/registry/cache/index.crates.io-6f17d22bba15001f/serde-1.0.200.crate",
        "created",
        None,
    );
    l.file("/home/runner/.cargo/.package-cache", "created", None);
    l.file("/tmp/foo.o", "created", None);
    l.ended();
    l
}
