//! The benign corpus: ordinary CI work must raise no alert and must not fail.
//!
//! An alert on a tool every CI job runs (`ps` once raised a HIGH "Escape to Host": procps asks
//! libnuma about NUMA, and `set_mempolicy` was on the deny list) trains people to ignore
//! alerts. Each piece of ordinary work below runs as a job of its own, under a group like the
//! built-in one (host rootfs: the host's `/usr` read-only, so the host's tools are the job's),
//! and every job must succeed with an empty `alerts` list in its report.
//!
//! Sealed world (../shared/ENVIRONMENT.md): the test's own network namespace holds airlock,
//! its jobs and gateway; a fake "internet" (198.51.100.10 serving allowed.test, a DNS server
//! on .53) lives in a namespace the test creates behind it, as in `network.rs`. Nothing here
//! can send a packet off the machine.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use common::*;

struct Net {
    w: World,
    hosts: Vec<String>,
    procs: Vec<Child>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", h]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

/// A group like the built-in one, with the fake internet's resolver and one allowed name.
const POLICY: &str = r#"version = 1
[groups.ci]
egress = { domains = ["allowed.test"], resolver = "198.51.100.53" }
"#;

/// The test's namespace, and behind it the fake internet (network.rs's `inet` host).
fn world() -> Net {
    let w = World::new();
    let t = w.netns.clone().expect("root test has a netns");
    let mut net = Net {
        w,
        hosts: vec![],
        procs: vec![],
    };
    let ns = format!("{t}inet");
    ip(&["netns", "add", &ns]);
    net.hosts.push(ns.clone());
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&[
        "-n", &t, "link", "add", "fhinet", "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ]);
    ip(&["-n", &t, "addr", "add", "198.51.100.1/24", "dev", "fhinet"]);
    ip(&["-n", &t, "link", "set", "fhinet", "up"]);
    for a in ["198.51.100.10/24", "198.51.100.11/24", "198.51.100.53/24"] {
        ip(&["-n", &ns, "addr", "add", a, "dev", "eth0"]);
    }
    ip(&["-n", &ns, "link", "set", "eth0", "up"]);
    ip(&["-n", &ns, "route", "add", "default", "via", "198.51.100.1"]);
    ip(&["-n", &t, "route", "add", "default", "via", "198.51.100.10"]);

    let dir = net.w.dir.path().to_owned();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=allowed.test",
            "-addext",
            "subjectAltName=DNS:allowed.test,DNS:blocked.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakehosts.py");
    let mut c = Command::new("ip")
        .args(["netns", "exec", &ns, "/usr/bin/python3", script, "internet"])
        .arg(&cert)
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("fake host");
    let mut line = String::new();
    let out = c.stdout.take().expect("stdout");
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready", "fake internet did not start");
    net.procs.push(c);
    std::fs::copy(&cert, net.w.ws().join("ca.pem")).expect("ca");
    net
}

const PY_WORK: &str = r#"
import concurrent.futures, hashlib, multiprocessing, os, queue, threading

def digest(n):
    h = hashlib.sha256()
    for i in range(2000):
        h.update(f"{n}:{i}".encode())
    return h.hexdigest()

def worker(q, out):
    while True:
        try:
            n = q.get_nowait()
        except queue.Empty:
            return
        out.append(digest(n))

if __name__ == "__main__":
    q = queue.Queue()
    for n in range(64):
        q.put(n)
    out = []
    ts = [threading.Thread(target=worker, args=(q, out)) for _ in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert len(out) == 64
    for method in ("fork", "spawn", "forkserver"):
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(4) as p:
            assert p.map(digest, range(16)) == [digest(n) for n in range(16)]
        lock, val = ctx.Lock(), ctx.Value("i", 0)
        ps = [ctx.Process(target=os.getpid) for _ in range(3)]
        for x in ps: x.start()
        for x in ps: x.join(); assert x.exitcode == 0
    with concurrent.futures.ProcessPoolExecutor(3) as ex:
        assert len(list(ex.map(digest, range(9)))) == 9
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        assert len(list(ex.map(digest, range(9)))) == 9
    print("python ok", os.cpu_count(), len(os.sched_getaffinity(0)))
"#;

const NODE_WORK: &str = r#"
const { Worker, isMainThread, parentPort } = require('worker_threads');
const cp = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const fsp = require('fs/promises');
const http = require('http');
const os = require('os');
const path = require('path');
const zlib = require('zlib');

if (!isMainThread) {
  let h = crypto.createHash('sha256');
  for (let i = 0; i < 20000; i++) h.update(String(i));
  parentPort.postMessage(h.digest('hex'));
  return;
}
(async () => {
  const ws = await Promise.all([0, 1, 2, 3].map(() => new Promise((res, rej) => {
    const w = new Worker(__filename);
    w.on('message', res); w.on('error', rej);
  })));
  if (new Set(ws).size !== 1) throw new Error('workers disagree');
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'node-'));
  await Promise.all([...Array(50).keys()].map(i =>
    fsp.writeFile(path.join(dir, `f${i}`), crypto.randomBytes(4096))));
  const names = await fsp.readdir(dir);
  await Promise.all(names.map(n => fsp.readFile(path.join(dir, n))));
  const gz = zlib.gzipSync(fs.readFileSync(path.join(dir, 'f0')));
  zlib.gunzipSync(gz);
  await new Promise((res) => crypto.pbkdf2('pw', 'salt', 1000, 32, 'sha256', res));
  const out = cp.execFileSync('/bin/sh', ['-c', 'echo child']).toString().trim();
  if (out !== 'child') throw new Error('child_process');
  await new Promise((res) => cp.exec('ls /', res));
  const server = http.createServer((q, r) => r.end('pong'));
  await new Promise(res => server.listen(0, '127.0.0.1', res));
  const body = await new Promise((res, rej) => http.get(
    `http://127.0.0.1:${server.address().port}/`,
    r => { let b = ''; r.on('data', d => b += d); r.on('end', () => res(b)); }).on('error', rej));
  server.close();
  if (body !== 'pong') throw new Error('http');
  await fsp.rm(dir, { recursive: true });
  console.log('node ok', process.version, os.cpus().length);
})().catch(e => { console.error(e); process.exit(1); });
"#;

const PROC_WORK: &str = r#"
import glob, os
n = 0
for pat in ["/proc/[0-9]*/status", "/proc/[0-9]*/stat", "/proc/[0-9]*/cmdline",
            "/proc/[0-9]*/environ", "/proc/[0-9]*/io", "/proc/[0-9]*/limits",
            "/proc/[0-9]*/maps", "/proc/[0-9]*/smaps_rollup", "/proc/[0-9]*/cgroup",
            "/proc/[0-9]*/fd/*", "/proc/[0-9]*/task/*/stat", "/proc/self/*",
            "/proc/thread-self/*", "/proc/*", "/proc/sys/kernel/*", "/proc/sys/vm/*",
            "/proc/net/*", "/proc/self/net/*", "/proc/pressure/*"]:
    for p in glob.glob(pat):
        try:
            if os.path.islink(p):
                os.readlink(p)
            if os.path.isdir(p):
                os.listdir(p)
                continue
            with open(p, "rb") as f:
                f.read(1 << 16)
            n += 1
        except OSError:
            pass
print("proc ok", n)
"#;

/// One piece of ordinary work: `(name, workspace files as (path, contents), script)`.
type Work = (&'static str, Vec<(String, String)>, String);

/// Ordinary work, one job each. Each script ends with `echo CORPUS-OK`, under `set -e`.
fn corpus() -> Vec<Work> {
    let mut c_files: Vec<(String, String)> = (0..16)
        .map(|i| {
            (
                format!("cbuild/m{i}.c"),
                format!("#include <string.h>\nint f{i}(int x) {{ return (int)strlen(\"abc\") * x + {i}; }}\n"),
            )
        })
        .collect();
    let decls: String = (0..16).map(|i| format!("int f{i}(int);\n")).collect();
    let calls: String = (0..16).map(|i| format!("s += f{i}(s); ")).collect();
    c_files.push((
        "cbuild/main.c".into(),
        format!("#include <stdio.h>\n#include <pthread.h>\n{decls}static void *t(void *a) {{ return a; }}\nint main(void) {{ int s = 1; pthread_t th; pthread_create(&th, 0, t, 0); pthread_join(th, 0); {calls} printf(\"%d\\n\", s); return 0; }}\n"),
    ));
    c_files.push((
        "cbuild/Makefile".into(),
        "OBJ := $(patsubst %.c,%.o,$(filter m%.c,$(wildcard *.c)))\n\
         app: main.o libm.a\n\tgcc -pthread -o $@ main.o libm.a\n\
         libm.a: $(OBJ)\n\tar rcs $@ $^\n\
         %.o: %.c\n\tgcc -O2 -g -Wall -c $< -o $@\n\
         check: app\n\t./app\n\
         clean:\n\trm -f *.o *.a app\n"
            .into(),
    ));
    vec![
        (
            "ps",
            vec![],
            "ps aux >/dev/null; ps -eLf >/dev/null; ps -eo pid,ppid,numa,psr,rss,cmd >/dev/null; \
             ps -ef --forest >/dev/null; pgrep -a bash >/dev/null"
                .into(),
        ),
        (
            "top",
            vec![],
            "top -b -n1 >/dev/null; top -b -n2 -d 0.2 -H >/dev/null".into(),
        ),
        (
            "system-info",
            vec![],
            "free -m >/dev/null; uptime >/dev/null; nproc >/dev/null; df -h >/dev/null 2>&1 || true; \
             uname -a >/dev/null; id >/dev/null; env >/dev/null; vmstat 1 2 >/dev/null; \
             cat /proc/cpuinfo /proc/meminfo >/dev/null"
                .into(),
        ),
        (
            "python",
            vec![("work.py".into(), PY_WORK.into())],
            "/usr/bin/python3 work.py".into(),
        ),
        (
            "node",
            vec![("work.js".into(), NODE_WORK.into())],
            "/usr/bin/node work.js".into(),
        ),
        (
            "make-gcc",
            c_files,
            "cd cbuild && make -j4 >/dev/null && make check >/dev/null && make clean >/dev/null \
             && make -j >/dev/null && ./app >/dev/null"
                .into(),
        ),
        (
            "git",
            vec![("repo/README".into(), "hello\n".into())],
            "export GIT_AUTHOR_NAME=ci GIT_AUTHOR_EMAIL=ci@example.com \
             GIT_COMMITTER_NAME=ci GIT_COMMITTER_EMAIL=ci@example.com; \
             cd repo && git init -q -b main . && git add -A && git commit -qm init \
             && for i in 1 2 3; do echo $i >> README; git commit -qam \"change $i\"; done \
             && git log --oneline >/dev/null && git log -p --stat >/dev/null \
             && git branch feature && git tag v1 && git gc -q && git fsck -q \
             && cd .. && git clone -q repo clone1 && git clone -q --no-local file://$PWD/repo clone2 \
             && git -C clone2 log --oneline >/dev/null && git -C clone1 pull -q \
             && git -C clone1 status --short >/dev/null && git -C clone2 describe --tags >/dev/null"
                .into(),
        ),
        (
            "archives",
            vec![],
            "mkdir -p tree/a/b tree/c; for i in $(seq 1 200); do head -c 2048 /dev/urandom > tree/a/b/f$i; \
             seq 1 500 > tree/c/t$i; done; \
             tar cf t.tar tree && tar czf t.tgz tree && tar --zstd -cf t.tzst tree \
             && gzip -9 -k t.tar && zstd -q -T0 -19 t.tar -o t.tar.zst && zstd -q -T2 -d t.tar.zst -o u.tar \
             && cmp t.tar u.tar && gunzip -c t.tar.gz | cmp - t.tar \
             && mkdir x && tar xzf t.tgz -C x && tar --zstd -xf t.tzst -C x && diff -r tree x/tree"
                .into(),
        ),
        (
            "curl",
            vec![],
            "curl -fsS -m 10 http://allowed.test/ >/dev/null \
             && curl -fsS -m 10 --cacert ca.pem https://allowed.test/ >/dev/null \
             && curl -fsS -m 10 --cacert ca.pem -o /dev/null -w '%{http_code}' https://allowed.test/x | grep -q 200"
                .into(),
        ),
        (
            "proc-reader",
            vec![("proc.py".into(), PROC_WORK.into())],
            "/usr/bin/python3 proc.py >/dev/null; \
             for f in /proc/[0-9]*/status /proc/self/*; do head -c 4096 \"$f\" >/dev/null 2>&1 || true; done; \
             cat /proc/self/mountinfo /proc/self/cgroup /proc/loadavg /proc/stat >/dev/null; true"
                .into(),
        ),
    ]
}

/// Every piece of ordinary work runs to completion and raises no alert.
#[test]
fn ordinary_work_raises_no_alert() {
    need_root!();
    let net = world();
    let policy = net.w.policy(POLICY);
    let mut failures = Vec::new();
    for (name, files, script) in corpus() {
        // A workspace of its own, holding the CA of the fake internet.
        let ws = net.w.dir.path().join(format!("ws-{name}"));
        std::fs::create_dir_all(&ws).expect("ws");
        std::fs::copy(net.w.ws().join("ca.pem"), ws.join("ca.pem")).expect("ca");
        for (p, body) in files {
            let p = ws.join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            std::fs::write(p, body).expect("file");
        }
        let rep = net.w.dir.path().join(format!("{name}.json"));
        let o = net
            .w
            .cmd()
            .args(["run", "-q", "-p"])
            .arg(&policy)
            .args(["-g", "ci", "--report"])
            .arg(&rep)
            .arg("-w")
            .arg(&ws)
            .args([
                "--",
                "/bin/bash",
                "-c",
                &format!("set -e; {script}; echo CORPUS-OK"),
            ])
            .output()
            .expect("run");
        let (out, err) = (stdout(&o), stderr(&o));
        if !o.status.success() || !out.contains("CORPUS-OK") {
            failures.push(format!("{name}: job failed ({}): {out}\n{err}", o.status));
        }
        let report: serde_json::Value = match std::fs::read(&rep) {
            Ok(b) => serde_json::from_slice(&b).expect("report json"),
            Err(e) => {
                failures.push(format!("{name}: no report ({e}): {err}"));
                continue;
            }
        };
        for a in report["alerts"].as_array().expect("alerts in the report") {
            failures.push(format!(
                "{name}: alert {} ({}): {}",
                a["detector"], a["severity"], a["summary"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "ordinary work failed or raised alerts:\n{}",
        failures.join("\n")
    );
    net.w.assert_clean();
}
