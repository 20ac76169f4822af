//! What an untrusted job (or whoever writes its workspace) tried against airlock's own walls
//! in issue 15: a workspace raced into reading host files (item 2), seccomp argument rules
//! passed with the upper 32 bits set (item 7), the OOM score lowered from inside (item 9).
//! Runs as root, each test in its own sealed world.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

const MARKER: &str = "ROOT-ONLY-HOST-FILE-e2e-41c9";

/// Item 2, end to end: while `airlock run --workdir` copies the workspace, a writer keeps
/// swapping its entries with symlinks to a root-only host file and a host directory
/// (`renameat2(RENAME_EXCHANGE)`). The job then searches its whole workspace for the file's
/// content: never found. (The copy itself is raced 200 times in
/// `rootfs::tests::a_racing_writer_never_gets_a_host_file_into_the_copy`.)
#[test]
fn a_racing_workspace_writer_gets_no_host_file_into_the_job() {
    need_root!();
    let w = World::new();
    let outside = w.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("dir")).expect("outside");
    let secret = outside.join("secret");
    std::fs::write(&secret, MARKER).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("0600");
    // A copy that walks `dN` by path while it becomes a symlink reads these from then on.
    const DIR_FILES: usize = 64;
    for j in 0..DIR_FILES {
        std::fs::write(outside.join(format!("dir/n{j}")), MARKER).expect("host dir file");
    }
    const PAIRS: usize = 16;
    let ws = w.ws();
    for i in 0..PAIRS {
        std::fs::write(ws.join(format!("f{i}")), "ok").expect("f");
        std::os::unix::fs::symlink(&secret, ws.join(format!("l{i}"))).expect("l");
        std::fs::create_dir(ws.join(format!("d{i}"))).expect("d");
        for j in 0..DIR_FILES {
            std::fs::write(ws.join(format!("d{i}/n{j}")), "ok").expect("n");
        }
        std::os::unix::fs::symlink(outside.join("dir"), ws.join(format!("m{i}"))).expect("m");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swappers: Vec<_> = [("f", "l"), ("d", "m")]
        .into_iter()
        .map(|(a, b)| {
            let (ws, stop) = (ws.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..PAIRS {
                        let _ = nix::fcntl::renameat2(
                            None,
                            &ws.join(format!("{a}{i}")),
                            None,
                            &ws.join(format!("{b}{i}")),
                            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                        );
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut outputs = Vec::new();
    for _ in 0..3 {
        let o = w.sh(
            &[],
            &format!("grep -rl '{MARKER}' . 2>/dev/null | sed 's/^/LEAK /'; echo searched"),
        );
        outputs.push(o);
    }
    stop.store(true, Ordering::Relaxed);
    let swaps: u64 = swappers.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    assert!(swaps > 1000, "the swapper barely ran ({swaps})");
    for o in &outputs {
        assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
        assert!(stdout(o).contains("searched"), "{}", stdout(o));
        assert!(
            !stdout(o).contains("LEAK"),
            "host file in the job:\n{}",
            stdout(o)
        );
        assert_job_gone(o);
    }
    w.assert_clean();
}

/// Item 7: every call an argument rule denies, made with the upper 32 bits of the compared
/// argument set (the kernel ignores them), is denied with EPERM and recorded by the filter,
/// under libcontainer and runc (they read the OCI form of a masked comparison differently).
#[test]
fn argument_rules_hold_with_the_upper_32_bits_set() {
    need_root!();
    for executor in ["libcontainer", "runc"] {
        let w = World::new();
        let p = w.policy(&format!(
            "version = 1\n[groups.default]\nexecutor = \"{executor}\"\n"
        ));
        // The profile's own argument rules, handed to the probe.
        let mut cmd = vec!["./airlock-probe".to_owned(), "high-bits".to_owned()];
        for (req, why) in airlock_sandbox::seccomp::DENIED_IOCTLS {
            let name = why.split(':').next().unwrap_or("ioctl");
            cmd.push(format!("ioctl:{req:#x}:{name}"));
        }
        for (flag, name) in airlock_sandbox::seccomp::CLONE_NAMESPACE_FLAGS {
            cmd.push(format!("clone:{flag:#x}:{name}"));
        }
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let o = w.run(&["-p", &p.to_string_lossy()], &cmd);
        assert!(o.status.success(), "{executor}: {}", stderr(&o));
        let id = assert_job_gone(&o);
        let out = stdout(&o);
        let line = out.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line).expect("probe json");
        let v = v.as_object().expect("object");
        assert!(
            v.len() >= 2 * 10,
            "{executor}: probe covered only {} calls",
            v.len()
        );
        let denied: Vec<serde_json::Value> = records(&w, "syscall.denied")
            .into_iter()
            .filter(|r| r["job"] == id.as_str())
            .collect();
        let mut problems = Vec::new();
        for (name, r) in v {
            let (syscall, index, arg) = (&r["syscall"], &r["index"], &r["arg"]);
            if r["errno"] != 1 {
                problems.push(format!("{name}: errno {} (want EPERM)", r["errno"]));
            }
            let i = index.as_u64().unwrap_or(9) as usize;
            if !denied
                .iter()
                .any(|d| d["data"]["syscall"] == *syscall && d["data"]["args"][i] == *arg)
            {
                problems.push(format!(
                    "{name}: no syscall.denied record: the filter let it through"
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "{executor}:\n{}\n{out}",
            problems.join("\n")
        );
        // The reason names the request, high bits or not.
        assert!(denied.iter().any(|d| d["data"]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("TIOCSTI")));
        assert!(denied.iter().any(|d| d["data"]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("TIOCLINUX")));
        w.assert_clean();
    }
}

/// Item 9: the job runs with `oom_score_adj` 1000 (it dies first) and cannot lower it, for
/// itself, for its pid 1, or through the legacy `oom_adj`; writes to its own files through
/// `/proc/self/fd` still work. Under libcontainer and runc.
#[test]
fn a_job_cannot_lower_its_oom_score() {
    need_root!();
    const SCRIPT: &str = r#"
echo "self_before=$(cat /proc/self/oom_score_adj)"
echo "pid1_before=$(cat /proc/1/oom_score_adj)"
for t in self 1 $$; do
  for v in 0 -1000 999; do
    (echo $v > /proc/$t/oom_score_adj) 2>/dev/null && echo "LOWERED $t to $v"
  done
  (echo 0 > /proc/$t/oom_adj) 2>/dev/null && echo "LOWERED $t oom_adj"
done
python3 - <<'EOF'
import os
for t in ("self", "1"):
    try:
        fd = os.open(f"/proc/{t}/oom_score_adj", os.O_WRONLY)
        os.write(fd, b"0")
        print(f"LOWERED {t} via python")
    except OSError as e:
        print(f"python {t}: errno {e.errno}")
EOF
echo "self_after=$(cat /proc/self/oom_score_adj)"
echo "pid1_after=$(cat /proc/1/oom_score_adj)"
exec 3>/tmp/fdtest && echo via-fd > /proc/self/fd/3 && echo "fd_write=ok"
"#;
    for executor in ["libcontainer", "runc"] {
        let w = World::new();
        let p = w.policy(&format!(
            "version = 1\n[groups.default]\nexecutor = \"{executor}\"\n"
        ));
        let o = w.sh(&["-p", &p.to_string_lossy()], SCRIPT);
        let out = stdout(&o);
        assert!(o.status.success(), "{executor}: {out}\n{}", stderr(&o));
        for k in ["self_before", "pid1_before", "self_after", "pid1_after"] {
            assert!(
                out.contains(&format!("{k}=1000\n")),
                "{executor}: {k} is not 1000:\n{out}"
            );
        }
        assert!(!out.contains("LOWERED"), "{executor}:\n{out}");
        assert!(out.contains("python self: errno"), "{executor}:\n{out}");
        assert!(out.contains("fd_write=ok"), "{executor}:\n{out}");
        assert_job_gone(&o);
        w.assert_clean();
    }
}
