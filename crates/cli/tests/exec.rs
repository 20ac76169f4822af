//! Exec records name what actually ran, not what the caller said: fileless execs (memfd,
//! an unlinked file's fd), execs relative to a directory fd, `/proc/self/fd/N` paths, and a
//! spoofed argv[0] (issue 15, item 5).

mod common;

use common::*;
use sha2::{Digest, Sha256};

fn sha256_of(path: &str) -> String {
    let b = std::fs::read(path).expect("read");
    Sha256::digest(&b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Runs in the job as its user. Every exec happens in a child, so the script sees them all.
const SCRIPT: &str = r#"
import ctypes, os, shutil, time
libc = ctypes.CDLL(None, use_errno=True)
def child(run):
    pid = os.fork()
    if pid == 0:
        try:
            run()
        finally:
            os._exit(127)
    os.waitpid(pid, 0)
def execveat(dirfd, path, argv, flags):
    a = (ctypes.c_char_p * (len(argv) + 1))(*[x.encode() for x in argv], None)
    e = (ctypes.c_char_p * 1)(None)
    libc.syscall(322, dirfd, path.encode(), a, e, flags)
true = open('/bin/true', 'rb').read()
# 1. memfd + fexecve (execveat(fd, "", AT_EMPTY_PATH)), argv[0] a kernel thread's name.
m = os.memfd_create('payload', 0)
os.write(m, true)
child(lambda: os.execve(m, ['[kworker/0:1]'], {}))
# 2. The same through /proc/self/fd/N.
child(lambda: os.execv('/proc/self/fd/%d' % m, ['[kworker/0:2]']))
# 3. execveat relative to a directory fd, the binary deleted afterwards.
os.makedirs('/tmp/.h', exist_ok=True)
shutil.copy('/bin/true', '/tmp/.h/make')
d = os.open('/tmp/.h', os.O_RDONLY | os.O_DIRECTORY)
child(lambda: execveat(d, 'make', ['make'], 0))
os.unlink('/tmp/.h/make')
# 4. A file opened, unlinked, then exec'd through its fd.
shutil.copy('/bin/true', '/tmp/.h/gone')
g = os.open('/tmp/.h/gone', os.O_RDONLY)
os.unlink('/tmp/.h/gone')
child(lambda: execveat(g, '', ['gone'], 0x1000))
# 5. argv[0] spoofing of a plain binary.
child(lambda: os.execv('/bin/true', ['sshd: root@pts/0']))
# 6. A path airlock cannot resolve before the exec (a symlink into /proc/self): what ran is
#    found after the exec, in /proc/PID/exe.
s = os.memfd_create('hidden', 0)
os.write(s, open('/bin/sleep', 'rb').read())
os.symlink('/proc/self/fd', '/tmp/.h/fds')
child(lambda: os.execv('/tmp/.h/fds/%d' % s, ['sleep', '0.5']))
# 8. The dynamic loader asked to load the memfd.
child(lambda: os.execv('/lib64/ld-linux-x86-64.so.2', ['ld.so', '/proc/self/fd/%d' % m]))
# 7. A script: /proc/PID/exe shows its interpreter, which is no surprise.
open('/tmp/.h/s.sh', 'w').write('#!/bin/sh\nsleep 0.3\n')
os.chmod('/tmp/.h/s.sh', 0o755)
child(lambda: os.execv('/tmp/.h/s.sh', ['s.sh']))
"#;

#[test]
fn exec_records_name_what_actually_ran() {
    need_root!();
    let w = World::new();
    let rep = w.dir.path().join("exec.json");
    let o = w
        .cmd()
        .args(["run", "-q", "--report"])
        .arg(&rep)
        .args(["--", "/usr/bin/python3", "-c", SCRIPT])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let execs = records(&w, "process.exec");
    let by_argv0 = |a0: &str| {
        execs
            .iter()
            .find(|r| r["data"]["argv"][0] == a0)
            .unwrap_or_else(|| panic!("no exec with argv[0] {a0}: {execs:#?}"))
            .clone()
    };
    let true_hash = sha256_of("/usr/bin/true");

    // The job's own python3 (a symlink to python3.11): no mismatch.
    let py = &execs[0]["data"];
    assert_eq!(py["path"], "/usr/bin/python3");
    assert!(py["exe"]["path"]
        .as_str()
        .is_some_and(|p| p.starts_with("/usr/bin/python3")));
    assert!(py.get("argv0_mismatch").is_none(), "{py}");

    // 1. memfd through its fd.
    let m = by_argv0("[kworker/0:1]");
    let e = &m["data"]["exe"];
    assert_eq!(e["memfd"], "memfd:payload", "{m}");
    assert_eq!(e["path"], "memfd:payload");
    assert_eq!(e["deleted"], true);
    assert_eq!(e["via"], "fd");
    assert_eq!(e["sha256"], true_hash.as_str());
    assert!(e["dev"].is_string() && e["ino"].is_u64(), "{e}");
    assert_eq!(m["data"]["argv0_mismatch"], true);
    // 2. The same memfd through /proc/self/fd/N.
    let p = by_argv0("[kworker/0:2]");
    assert_eq!(p["data"]["exe"]["memfd"], "memfd:payload", "{p}");
    assert_eq!(p["data"]["exe"]["ino"], e["ino"]);
    // 3. Relative to a directory fd: the real path, not the cwd.
    let d = by_argv0("make");
    assert_eq!(d["data"]["path"], "make");
    assert_eq!(d["data"]["exe"]["path"], "/tmp/.h/make", "{d}");
    assert_eq!(d["data"]["exe"]["via"], "dirfd");
    assert_eq!(d["data"]["exe"]["sha256"], true_hash.as_str());
    assert!(d["data"]["exe"].get("deleted").is_none());
    assert!(d["data"].get("argv0_mismatch").is_none());
    // 4. An unlinked file through its fd.
    let g = by_argv0("gone");
    assert_eq!(g["data"]["exe"]["path"], "/tmp/.h/gone", "{g}");
    assert_eq!(g["data"]["exe"]["deleted"], true);
    assert!(g["data"]["exe"].get("memfd").is_none());
    // 5. A spoofed argv[0] of a real binary.
    let s = by_argv0("sshd: root@pts/0");
    assert_eq!(s["data"]["argv0_mismatch"], true, "{s}");
    assert_eq!(s["data"]["exe"]["path"], "/usr/bin/true");
    // 6. Unresolvable before, found after the exec.
    let h = by_argv0("sleep");
    assert!(h["data"]["exe"]["error"].is_string(), "{h}");
    let actual = records(&w, "exec.actual");
    assert!(
        actual
            .iter()
            .any(|r| r["data"]["exe"]["memfd"] == "memfd:hidden"
                && r["data"]["pid"] == h["data"]["pid"]),
        "{actual:#?}"
    );

    // 8. The dynamic loader's program.
    let ld = by_argv0("ld.so");
    assert_eq!(ld["data"]["loaded"]["memfd"], "memfd:payload", "{ld}");
    assert!(ld["data"]["exe"]["path"]
        .as_str()
        .is_some_and(|p| p.contains("ld-linux")));
    // 7. A script names its interpreter; running it is not a surprise.
    let sc = by_argv0("s.sh");
    let sh = std::fs::canonicalize("/bin/sh").expect("sh");
    assert_eq!(
        sc["data"]["exe"]["interpreter"],
        sh.to_string_lossy().as_ref(),
        "{sc}"
    );
    assert!(
        !actual.iter().any(|r| r["data"]["pid"] == sc["data"]["pid"]),
        "{actual:#?}"
    );
    assert_eq!(
        actual.len(),
        1,
        "only the hidden memfd was a surprise: {actual:#?}"
    );

    // The deleted binary that ran is part of the job's file record, with its hash.
    let files = records(&w, "file.changed");
    let f = files
        .iter()
        .find(|r| r["data"]["path"] == "/tmp/.h/make")
        .unwrap_or_else(|| panic!("the deleted /tmp/.h/make is not on the record: {files:#?}"));
    assert_eq!(f["data"]["change"], "deleted");
    assert_eq!(f["data"]["executed"], true);
    assert_eq!(f["data"]["sha256"], true_hash.as_str());
    assert!(files
        .iter()
        .any(|r| r["data"]["memfd"] == "memfd:payload" && r["data"]["executed"] == true));

    // One fileless-exec alert naming them.
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rep).expect("report")).expect("json");
    let alerts: Vec<&serde_json::Value> = r["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["detector"] == "fileless-exec")
        .collect();
    assert_eq!(alerts.len(), 1, "{r:#}");
    let sum = alerts[0]["summary"].as_str().expect("summary");
    for want in [
        "memfd:payload as '[kworker/0:1]'",
        "memfd:payload as 'ld.so'",
        "/tmp/.h/gone (deleted)",
        "memfd:hidden",
    ] {
        assert!(sum.contains(want), "{want}: {sum}");
    }
    assert_eq!(alerts[0]["technique"]["id"], "T1620");
    w.assert_clean();
}
