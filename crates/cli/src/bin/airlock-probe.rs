//! airlock-probe: runs inside a sandbox and tries what an attacker would, reporting what the
//! kernel answered. Used by the test suite (and the drills to come); never run it outside a
//! sandbox.
//!
//! `airlock-probe high-bits` makes every call an argument rule of the seccomp profile denies
//! (each denied ioctl request, `clone` with each namespace flag) with the upper 32 bits of the
//! compared argument set, which the kernel ignores: one JSON object, `{attempt: {errno,
//! syscall, index, arg}}`.
//!
//! `airlock-probe syscalls` prints one JSON object: for each attempted call, the errno it got
//! (0 = it succeeded) and whether the arguments were chosen so that, without the seccomp
//! filter, the kernel would have answered something other than EPERM ("discriminating").
//! Those calls prove the filter, not merely missing capabilities, stopped them.
//!
//! Each entry also names the syscall it made (`"syscall"`), so a test can find the filter's
//! record of it in the audit log.
//!
//! `airlock-probe alloc MIB` allocates and touches MIB mebibytes, printing progress.
//!
//! `airlock-probe spin MS` burns CPU for MS milliseconds of wall time and prints
//! `wall_ms=… cpu_ms=…`.
//!
//! `airlock-probe flood KIND MS [N]` floods airlock's records for MS milliseconds: `syscall`
//! calls the denied `acct(0)` in a loop, `dns` sends DNS queries for names outside any
//! allow-list to the job's resolver, `drops` sends UDP packets to ports of 10.99.0.1 (which
//! the firewall drops; sealed worlds only), `files` creates up to N files with long paths.
//! Prints `flood=KIND count=…` (how many it made).

use std::ffi::CString;

fn errno_of(r: libc::c_long) -> i32 {
    if r == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

macro_rules! sc {
    ($($a:expr),* $(,)?) => {{
        // SAFETY: every call below passes null or dangling-free arguments that the kernel
        // validates; a call that got through would fail on them or be harmless.
        errno_of(unsafe { libc::syscall($($a as libc::c_long),*) })
    }};
}

fn syscalls() {
    let empty = CString::default();
    let tmp = CString::new("/tmp").unwrap_or_default();
    let tmpfs = CString::new("tmpfs").unwrap_or_default();
    let dot = CString::new(".").unwrap_or_default();
    let nul = std::ptr::null::<libc::c_void>();
    // (name, errno, discriminating)
    let results: Vec<(&str, i32, bool)> = vec![
        (
            "mount",
            sc!(
                libc::SYS_mount,
                tmpfs.as_ptr(),
                tmp.as_ptr(),
                tmpfs.as_ptr(),
                0,
                nul
            ),
            false,
        ),
        ("umount2", sc!(libc::SYS_umount2, tmp.as_ptr(), 0), false),
        (
            "pivot_root",
            sc!(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()),
            false,
        ),
        // unshare(0) is a no-op that succeeds for anyone.
        ("unshare", sc!(libc::SYS_unshare, 0), true),
        // Unprivileged user namespaces are enabled on the host: this would succeed.
        (
            "unshare_user",
            sc!(libc::SYS_unshare, libc::CLONE_NEWUSER),
            true,
        ),
        // setns on fd -1 is EBADF without the filter.
        ("setns", sc!(libc::SYS_setns, -1, 0), true),
        // PEEKDATA on a pid that does not exist is ESRCH without the filter.
        (
            "ptrace",
            sc!(libc::SYS_ptrace, libc::PTRACE_PEEKDATA, 999_999, 0, 0),
            true,
        ),
        // Reading zero bytes of one's own memory succeeds without the filter.
        (
            "process_vm_readv",
            sc!(
                libc::SYS_process_vm_readv,
                std::process::id(),
                nul,
                0,
                nul,
                0,
                0
            ),
            true,
        ),
        (
            "process_vm_writev",
            sc!(
                libc::SYS_process_vm_writev,
                std::process::id(),
                nul,
                0,
                nul,
                0,
                0
            ),
            true,
        ),
        ("kexec_load", sc!(libc::SYS_kexec_load, 0, 0, nul, 0), false),
        (
            "kexec_file_load",
            sc!(libc::SYS_kexec_file_load, -1, -1, 0, nul, 0),
            false,
        ),
        (
            "init_module",
            sc!(libc::SYS_init_module, nul, 0, empty.as_ptr()),
            false,
        ),
        (
            "finit_module",
            sc!(libc::SYS_finit_module, -1, empty.as_ptr(), 0),
            false,
        ),
        (
            "delete_module",
            sc!(libc::SYS_delete_module, empty.as_ptr(), 0),
            false,
        ),
        ("bpf", sc!(libc::SYS_bpf, 0, nul, 0), false),
        // A null attribute pointer is EFAULT without the filter.
        (
            "perf_event_open",
            sc!(libc::SYS_perf_event_open, nul, 0, -1, -1, 0),
            true,
        ),
        // KEYCTL_GET_KEYRING_ID of the session keyring succeeds without the filter.
        ("keyctl", sc!(libc::SYS_keyctl, 0, -3, 0), true),
        ("add_key", sc!(libc::SYS_add_key, nul, nul, nul, 0, 0), true),
        (
            "request_key",
            sc!(libc::SYS_request_key, nul, nul, nul, 0),
            true,
        ),
        ("userfaultfd", sc!(libc::SYS_userfaultfd, 0), false),
        (
            "open_by_handle_at",
            sc!(libc::SYS_open_by_handle_at, -1, nul, 0),
            false,
        ),
        ("reboot", sc!(libc::SYS_reboot, 0, 0, 0, nul), false),
        ("swapon", sc!(libc::SYS_swapon, nul, 0), false),
        ("swapoff", sc!(libc::SYS_swapoff, nul), false),
        ("acct", sc!(libc::SYS_acct, nul), false),
        // SYSLOG_ACTION_SIZE_BUFFER (10) is allowed to anyone when dmesg is unrestricted;
        // EPERM otherwise, so not discriminating.
        ("syslog", sc!(libc::SYS_syslog, 10, nul, 0), false),
        // An unknown clock id is EINVAL without the filter.
        (
            "clock_settime",
            sc!(libc::SYS_clock_settime, 9999, nul),
            true,
        ),
        // iopl(0) keeps the current level and succeeds without the filter.
        ("iopl", sc!(libc::SYS_iopl, 0), true),
        // Turning permissions off succeeds without the filter.
        ("ioperm", sc!(libc::SYS_ioperm, 0, 0, 0), true),
        // clone3 answers ENOSYS (so libc falls back to the filtered clone).
        ("clone3", sc!(libc::SYS_clone3, nul, 0), true),
        (
            "io_uring_setup",
            sc!(libc::SYS_io_uring_setup, 0, nul),
            true,
        ),
        (
            "name_to_handle_at",
            sc!(libc::SYS_name_to_handle_at, -1, nul, nul, nul, 0),
            true,
        ),
        ("mbind", sc!(libc::SYS_mbind, 0, 0, 0, nul, 0, 0), true),
        ("chroot", sc!(libc::SYS_chroot, dot.as_ptr()), false),
    ];
    let mut out = serde_json::Map::new();
    for (name, errno, disc) in results {
        out.insert(
            name.to_owned(),
            serde_json::json!({ "errno": errno, "discriminating": disc }),
        );
    }
    // clone with a namespace flag, through the raw syscall. CLONE_NEWUTS needs
    // CAP_SYS_ADMIN, so only the filter's record tells who refused it; CLONE_NEWUSER needs
    // nothing (unprivileged user namespaces are enabled), so without the filter it succeeds.
    for (name, flag, disc) in [
        ("clone_newuts", libc::CLONE_NEWUTS, false),
        ("clone_newuser", libc::CLONE_NEWUSER, true),
    ] {
        out.insert(
            name.to_owned(),
            serde_json::json!({ "errno": clone_with(flag), "discriminating": disc }),
        );
    }
    // A plain fork must still work.
    // SAFETY: fork in a single-threaded program; the child exits at once.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child.
        unsafe { libc::_exit(0) };
    }
    if pid > 0 {
        let mut st = 0;
        // SAFETY: waits for the child just created.
        unsafe { libc::waitpid(pid, &mut st, 0) };
    }
    out.insert(
        "fork".to_owned(),
        serde_json::json!({ "errno": if pid > 0 { 0 } else { -1 }, "discriminating": false }),
    );
    for (name, r) in out.iter_mut() {
        r["syscall"] = syscall_of(name).into();
    }
    println!("{}", serde_json::Value::Object(out));
}

/// The syscall an attempt makes (`unshare_user` is `unshare` with CLONE_NEWUSER, …).
fn syscall_of(attempt: &str) -> &str {
    match attempt {
        "unshare_user" => "unshare",
        "fork" => "fork",
        a if a.starts_with("clone_") => "clone",
        a => a,
    }
}

/// `clone(flags | SIGCHLD)` through the raw syscall, fork-like: the child exits at once.
/// Returns the errno (0: the clone succeeded).
fn clone_with(flags: libc::c_int) -> i32 {
    // SAFETY: raw clone with SIGCHLD and a namespace flag, no new stack (fork semantics); the
    // child calls _exit at once.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if r == 0 {
        // SAFETY: in the child; leave without running any Rust destructors.
        unsafe { libc::_exit(0) };
    }
    let errno = errno_of(r);
    if r > 0 {
        let mut st = 0;
        // SAFETY: waits for the child just created.
        unsafe { libc::waitpid(r as i32, &mut st, 0) };
    }
    errno
}

/// Busy-loops for `ms` milliseconds of wall-clock time, then prints the wall time and the CPU
/// time (user + system) it got, in milliseconds: under a CPU quota the second is a fraction of
/// the first.
fn spin(ms: u64) {
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(ms) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    let wall = start.elapsed().as_millis();
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage of this process.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ms_of = |t: libc::timeval| t.tv_sec * 1000 + t.tv_usec / 1000;
    println!(
        "wall_ms={wall} cpu_ms={}",
        ms_of(ru.ru_utime) + ms_of(ru.ru_stime)
    );
}

fn alloc(mib: usize) {
    let mut v: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        v.push(vec![1u8; 1 << 20]);
        if i % 64 == 0 {
            println!("allocated {i} MiB");
        }
    }
    println!("allocated all {mib} MiB");
}

/// The job's resolver: the first `nameserver` of /etc/resolv.conf.
fn resolver() -> Option<std::net::SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .find_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, 53))
}

/// A DNS query for `name` (type A, recursion desired).
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn flood(kind: &str, ms: u64, n: u64) {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let mut count = 0u64;
    match kind {
        "syscall" => {
            while std::time::Instant::now() < until {
                for _ in 0..64 {
                    let _ = sc!(libc::SYS_acct, 0);
                    count += 1;
                }
            }
        }
        "dns" => {
            let Some(to) = resolver() else {
                println!("flood=dns error=no-resolver");
                return;
            };
            let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") else {
                println!("flood=dns error=bind");
                return;
            };
            let _ = sock.set_read_timeout(Some(std::time::Duration::from_millis(200)));
            let mut buf = [0u8; 512];
            while std::time::Instant::now() < until {
                // Ten distinct names and one repeated one: both kinds of key.
                let name = if count.is_multiple_of(2) {
                    format!("n{}.flood.test", count % 10)
                } else {
                    "refused.flood.test".to_owned()
                };
                if sock.send_to(&dns_query(count as u16, &name), to).is_ok() {
                    count += 1;
                    let _ = sock.recv(&mut buf);
                }
            }
        }
        "drops" => {
            // UDP to ports of an address no policy allows: each new port is a new flow the
            // firewall drops and reports. Run only inside a sealed network namespace.
            let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") else {
                println!("flood=drops error=bind");
                return;
            };
            let (mut port, mut host) = (1024u16, 1u8);
            while std::time::Instant::now() < until && count < n {
                let to = std::net::SocketAddr::from(([10, 99, 0, host], port));
                if sock.send_to(b"x", to).is_ok() {
                    count += 1;
                }
                if port == u16::MAX {
                    port = 1024;
                    host = host % 8 + 1;
                } else {
                    port += 1;
                }
            }
        }
        "files" => {
            // Deep directories make long paths (a few KiB each), the costly case.
            let seg = "d".repeat(200);
            let mut dir = std::path::PathBuf::from("/tmp/flood");
            for _ in 0..12 {
                dir.push(&seg);
            }
            if std::fs::create_dir_all(&dir).is_err() {
                println!("flood=files error=mkdir");
                return;
            }
            'outer: for d in 0.. {
                let sub = dir.join(format!("{d:05}"));
                if std::fs::create_dir(&sub).is_err() {
                    break;
                }
                for i in 0..1000 {
                    if count >= n || std::time::Instant::now() >= until {
                        break 'outer;
                    }
                    if std::fs::File::create(sub.join(format!("{i:04}-{}", "f".repeat(100))))
                        .is_err()
                    {
                        break 'outer;
                    }
                    count += 1;
                }
            }
        }
        _ => {
            eprintln!("flood: unknown kind {kind}");
            std::process::exit(2);
        }
    }
    println!("flood={kind} count={count}");
}

/// See the module doc: every argument-filtered rule, with garbage in the upper 32 bits.
/// The rules come on the command line as `ioctl:REQ:NAME` and `clone:FLAG:NAME` (hex or
/// decimal), from the test that knows the profile: linking the sandbox crate into the probe
/// would make it too big for the workspace of a small job.
fn high_bits(rules: &[String]) {
    use std::os::fd::AsRawFd;
    let parse = |v: &str| match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    };
    let (mut ioctls, mut clones) = (Vec::new(), Vec::new());
    for r in rules {
        let mut it = r.splitn(3, ':');
        match (it.next(), it.next().and_then(parse), it.next()) {
            (Some("ioctl"), Some(v), Some(n)) => ioctls.push((v, n.to_owned())),
            (Some("clone"), Some(v), Some(n)) => clones.push((v, n.to_owned())),
            _ => {
                eprintln!(
                    "airlock-probe high-bits: bad rule {r:?} (ioctl:REQ:NAME | clone:FLAG:NAME)"
                );
                std::process::exit(2);
            }
        }
    }
    let mut out = serde_json::Map::new();
    let mut put = |name: String, syscall: &str, index: u32, arg: u64, errno: i32| {
        out.insert(
            name,
            serde_json::json!({ "errno": errno, "syscall": syscall, "index": index, "arg": arg }),
        );
    };
    // A terminal of the job's own: a request that got through acts on it, nothing else.
    let pty = nix::pty::openpty(None, None).ok();
    let fd = pty.as_ref().map_or(0, |p| p.slave.as_raw_fd());
    for high in [1u64 << 32, 0xdead_beef_u64 << 32] {
        for (req, name) in &ioctls {
            let arg = high | req;
            let c: u8 = b' ';
            put(
                format!("ioctl_{name}_{arg:#x}"),
                "ioctl",
                1,
                arg,
                sc!(libc::SYS_ioctl, fd, arg, &c as *const u8),
            );
        }
        for (flag, name) in &clones {
            let arg = high | flag | libc::SIGCHLD as u64;
            put(
                format!("clone_{name}_{arg:#x}"),
                "clone",
                0,
                arg,
                clone_raw(arg),
            );
        }
    }
    println!("{}", serde_json::Value::Object(out));
}

/// `clone(flags)` through the raw syscall with the whole 64-bit register as given; the child
/// (if any) exits at once. Returns the errno (0: the clone succeeded).
fn clone_raw(flags: u64) -> i32 {
    // SAFETY: raw clone with fork semantics (no new stack); the child calls _exit at once.
    let r = unsafe { libc::syscall(libc::SYS_clone, flags, 0u64, 0u64, 0u64, 0u64) };
    if r == 0 {
        // SAFETY: in the child; leave without running any Rust destructors.
        unsafe { libc::_exit(0) };
    }
    let errno = errno_of(r);
    if r > 0 {
        let mut st = 0;
        // SAFETY: waits for the child just created.
        unsafe { libc::waitpid(r as i32, &mut st, 0) };
    }
    errno
}

/// A tiny HTTP service: every connection gets `text` and a newline as a 200 response (the
/// container tests' services).
fn serve(port: u16, text: &str) {
    let l = match std::net::TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("serving on {port}");
    for c in l.incoming().flatten() {
        let mut c = c;
        // An HTTP/1.0 answer, sent at once: curl (which sends its request first) and `get`
        // (which sends nothing) both read it.
        let body = format!("{text}\n");
        let _ = std::io::Write::write_all(
            &mut c,
            format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
}

/// Connects to `host:port` and prints what it says (exit 1 if it cannot).
fn get(host: &str, port: u16) {
    use std::io::Read;
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(host, port));
    let Some(addr) = addrs.ok().and_then(|mut a| a.next()) else {
        eprintln!("cannot resolve {host}");
        std::process::exit(1);
    };
    match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)) {
        Ok(mut c) => {
            let mut s = String::new();
            let _ = c.read_to_string(&mut s);
            print!("{s}");
        }
        Err(e) => {
            eprintln!("connect {host}:{port}: {e}");
            std::process::exit(1);
        }
    }
}

/// `GET url` over plain HTTP/1.0 with its Host header; prints the status line and the body;
/// exit 0 on a 2xx answer, 1 otherwise (the container tests' egress client).
fn http(url: &str) {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("http:// URLs only");
        std::process::exit(2);
    };
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let (host, port) = hostport
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h, p)))
        .unwrap_or((hostport, 80));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut a| a.next());
    let Some(addr) = addr else {
        eprintln!("cannot resolve {host}");
        std::process::exit(1);
    };
    let mut c = match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect {addr}: {e}");
            std::process::exit(1);
        }
    };
    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = c.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes());
    let mut s = Vec::new();
    let _ = c.read_to_end(&mut s);
    let s = String::from_utf8_lossy(&s);
    let status = s.lines().next().unwrap_or("").to_owned();
    println!("{status}");
    if let Some((_, body)) = s.split_once("\r\n\r\n") {
        print!("{body}");
    }
    let ok = status.split(' ').nth(1).is_some_and(|c| c.starts_with('2'));
    std::process::exit(if ok { 0 } else { 1 });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("flood") => flood(
            args.get(2).map(String::as_str).unwrap_or("syscall"),
            args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3000),
            args.get(4).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX),
        ),
        Some("syscalls") => syscalls(),
        Some("high-bits") => high_bits(&args[2..]),
        Some("alloc") => alloc(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024)),
        Some("spin") => spin(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000)),
        Some("serve") => serve(
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8080),
            args.get(3).map(String::as_str).unwrap_or("hello"),
        ),
        Some("http") => http(
            args.get(2)
                .map(String::as_str)
                .unwrap_or("http://localhost/"),
        ),
        Some("get") => get(
            args.get(2).map(String::as_str).unwrap_or("localhost"),
            args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8080),
        ),
        _ => {
            eprintln!("usage: airlock-probe syscalls | high-bits | alloc MIB | spin MS | flood KIND MS [N] | serve PORT TEXT | get HOST PORT | http URL");
            std::process::exit(2);
        }
    }
}
