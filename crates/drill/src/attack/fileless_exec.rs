//! Evasion (MITRE T1620 Reflective Code Loading): run a program from no file, under a kernel
//! thread's name, so that the exec record says nothing useful and no scan ever finds the
//! payload:
//! - a memfd holding `/bin/true`, exec'd through its fd (`execveat(fd, "", AT_EMPTY_PATH)`)
//!   with argv `[kworker/0:1]`;
//! - `/tmp/.h/make` exec'd relative to a directory fd, then deleted;
//! - `/tmp/.h/sshd` opened relative to that directory fd, unlinked, then exec'd through its fd.
//!
//! From inside the job the exec always works; whether airlock saw through it is judged by the
//! `fileless-exec` alert, which must name the memfd and the deleted file's real path.
//! Harmless: the payload is `/bin/true`, in the job's own memory and `/tmp`.

use std::ffi::CString;

use super::util::{errno, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// The memfd's name.
pub const MEMFD_NAME: &str = "airlock-drill-payload";

/// `fileless-exec`.
pub struct FilelessExec;

/// forks; the child runs `execveat(dirfd, path, argv, {}, flags)`; waits for it.
fn exec_in_child(what: &str, dirfd: i32, path: &str, argv: &[&str], flags: i32) -> Step {
    let (Ok(p), Ok(args)) = (
        CString::new(path),
        argv.iter()
            .map(|a| CString::new(*a))
            .collect::<Result<Vec<_>, _>>(),
    ) else {
        return Step::failed(what, "bad argument");
    };
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: the child only calls execveat and _exit (async-signal-safe), on memory prepared
    // before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Step::failed(what, format!("fork: {}", errno()));
    }
    if pid == 0 {
        // SAFETY: valid NUL-terminated strings and NULL-terminated arrays.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                dirfd,
                p.as_ptr(),
                ptrs.as_ptr(),
                env.as_ptr(),
                flags,
            );
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let code = libc::WEXITSTATUS(status);
    if libc::WIFEXITED(status) && code == 0 {
        Step::failed(what, "ran (judged by the fileless-exec alert)")
    } else {
        Step::failed(what, format!("exec failed (status {status})"))
    }
}

fn run_all() -> Vec<Step> {
    let mut steps = Vec::new();
    let payload = match std::fs::read("/bin/true") {
        Ok(b) => b,
        Err(e) => return vec![Step::failed("read /bin/true", e.to_string())],
    };
    // 1. memfd.
    let Ok(name) = CString::new(MEMFD_NAME) else {
        return steps;
    };
    // SAFETY: a valid name; no MFD_CLOEXEC, the child execs the fd itself.
    let m = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if m < 0 {
        steps.push(Step::failed("memfd_create", errno()));
    } else {
        // SAFETY: our own fd and buffer.
        let n = unsafe { libc::write(m, payload.as_ptr().cast(), payload.len()) };
        if n == payload.len() as isize {
            steps.push(exec_in_child(
                "execveat(memfd, \"\", AT_EMPTY_PATH) as [kworker/0:1]",
                m,
                "",
                &["[kworker/0:1]"],
                libc::AT_EMPTY_PATH,
            ));
        } else {
            steps.push(Step::failed("write memfd", errno()));
        }
        // SAFETY: our own fd.
        unsafe { libc::close(m) };
    }
    // 2. Relative to a directory fd, deleted afterwards.
    let _ = std::fs::create_dir_all("/tmp/.h");
    for f in ["make", "sshd"] {
        let p = format!("/tmp/.h/{f}");
        if let Err(e) = std::fs::write(&p, &payload).and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
        }) {
            steps.push(Step::failed(format!("write {p}"), e.to_string()));
            return steps;
        }
    }
    let Ok(dir) = std::fs::File::open("/tmp/.h") else {
        steps.push(Step::failed("open /tmp/.h", errno()));
        return steps;
    };
    use std::os::fd::AsRawFd;
    let d = dir.as_raw_fd();
    steps.push(exec_in_child(
        "execveat(dirfd /tmp/.h, \"make\")",
        d,
        "make",
        &["make"],
        0,
    ));
    let _ = std::fs::remove_file("/tmp/.h/make");
    // 3. Opened relative to the directory fd, unlinked, exec'd through its fd.
    let Ok(sshd) = CString::new("sshd") else {
        return steps;
    };
    // SAFETY: valid dirfd and name.
    let f = unsafe { libc::openat(d, sshd.as_ptr(), libc::O_RDONLY) };
    if f < 0 {
        steps.push(Step::failed("openat /tmp/.h/sshd", errno()));
        return steps;
    }
    // SAFETY: valid dirfd and name.
    unsafe { libc::unlinkat(d, sshd.as_ptr(), 0) };
    steps.push(exec_in_child(
        "unlink /tmp/.h/sshd, execveat(its fd, \"\", AT_EMPTY_PATH)",
        f,
        "",
        &["sshd"],
        libc::AT_EMPTY_PATH,
    ));
    // SAFETY: our own fd.
    unsafe { libc::close(f) };
    steps
}

impl Attack for FilelessExec {
    fn id(&self) -> &'static str {
        "fileless-exec"
    }
    fn title(&self) -> &'static str {
        "run a memfd and a deleted binary (execveat AT_EMPTY_PATH, dirfd) as [kworker/0:1]"
    }
    fn category(&self) -> Category {
        Category::Evasion
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::FILELESS_EXEC)
    }
    fn alert_names(&self) -> &'static [&'static str] {
        &["memfd:airlock-drill-payload", "/tmp/.h/sshd (deleted)"]
    }
    fn run(&self) -> AttackResult {
        AttackResult::from_steps(self.id(), &run_all())
    }
}
