//! Memory protection of the job's entry process (the runner) from the rest of the job.
//!
//! Every process of a job runs as the same uid, and the kernel lets a process read and write
//! the memory of another process of its own uid through `/proc/PID/mem` (and its environment
//! through `/proc/PID/environ`, its open files through `/proc/PID/fd`) unless an LSM such as
//! Yama says otherwise. seccomp cannot help: these are files. What the kernel does honour,
//! whatever the LSMs, is *dumpability*: `ptrace_may_access` refuses a process whose mm is not
//! dumpable to anyone without `CAP_SYS_PTRACE` (which no job process has), and procfs then
//! shows that process's `/proc/PID/*` as root's, so `environ` and `fd` are closed too.
//!
//! Dumpability is recomputed at every `execve`: the new program is dumpable unless the file
//! executed is not readable by the process (`would_dump` in fs/exec.c), which is exactly the
//! property we can give a file: mode 0111, owned by root. So airlock copies the job's entry
//! executable — `argv[0]` as the runtime resolves it in the job's `PATH`, through `#!`
//! interpreters to the ELF that actually runs — to an execute-only file and bind-mounts it
//! over the original path in the job. The entry process (and any other process of the job
//! that executes that program, or another listed in the group's `protect`) is non-dumpable
//! from its first instruction; a child that executes any other program is dumpable as usual
//! and keeps full access to its own memory. docs/sandbox.md weighs the alternatives.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::SandboxError;
use crate::plan::{JobPlan, RootfsPlan, PATH, WORKSPACE};
use crate::spec::HostLayout;

/// The protection's name in refusals.
pub const PROTECTION: &str = "memory protection of the entry process";

/// Directory (in the job dir) of the execute-only copies.
pub const DIR: &str = "protect";

/// The mode bits a copy keeps: the original's execute bits, nothing else (no read, no
/// write, no setuid: a copy never lets anyone run what they could not run before).
pub const EXEC_ONLY: u32 = 0o111;

/// Symlinks followed while resolving one path (the kernel's own limit).
const MAX_LINKS: usize = 40;
/// `#!` interpreters followed (the kernel allows 4 rewrites after the first program).
const MAX_INTERPRETERS: usize = 5;

/// One executable made execute-only inside the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// Absolute path inside the job, symlink-free (a bind mount's destination).
    pub path: String,
    /// The execute-only copy on the host (the bind mount's source).
    pub copy: PathBuf,
}

fn unavailable(reason: String) -> SandboxError {
    SandboxError::ProtectionUnavailable {
        protection: PROTECTION.to_owned(),
        reason,
    }
}

/// How paths of the job map to host paths before the container exists: the overlay root,
/// plus (for host-rootfs jobs) the host directories the spec bind-mounts at the same place.
pub struct View {
    rootfs: PathBuf,
    host_binds: Vec<String>,
}

impl View {
    /// The view of a job whose overlay is mounted at `rootfs`.
    pub fn new(plan: &JobPlan, rootfs: &Path, host: &HostLayout) -> Self {
        let host_binds = match plan.rootfs {
            RootfsPlan::Host => {
                let mut b = vec!["/usr".to_owned(), "/etc/ssl/certs".to_owned()];
                b.extend(host.dirs.iter().map(|d| format!("/{d}")));
                b
            }
            RootfsPlan::Image { .. } | RootfsPlan::Shared { .. } => Vec::new(),
        };
        Self {
            rootfs: rootfs.to_owned(),
            host_binds,
        }
    }

    /// The host path of an absolute, normalized job path.
    fn host(&self, path: &str) -> PathBuf {
        let bound = self.host_binds.iter().any(|b| {
            path == b
                || path
                    .strip_prefix(b.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        });
        if bound {
            PathBuf::from(path)
        } else {
            self.rootfs.join(path.trim_start_matches('/'))
        }
    }

    /// Resolves `path` (absolute, or relative to `cwd`) as the job will see it: every symlink
    /// followed inside the job's view, never out of it. Returns the symlink-free job path.
    pub fn resolve(&self, path: &str, cwd: &str) -> Result<String, String> {
        let full = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("{cwd}/{path}")
        };
        let mut todo: Vec<String> = full.split('/').rev().map(str::to_owned).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            let p = format!("/{}", cur.join("/"));
            let host = self.host(&p);
            let m = std::fs::symlink_metadata(&host).map_err(|e| format!("{p}: {e}"))?;
            if m.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!("{path}: too many symbolic links"));
                }
                let t = std::fs::read_link(&host).map_err(|e| format!("{p}: {e}"))?;
                let t = t.to_string_lossy().into_owned();
                cur.pop();
                if t.starts_with('/') {
                    cur.clear();
                }
                todo.extend(t.split('/').rev().map(str::to_owned));
            }
        }
        Ok(format!("/{}", cur.join("/")))
    }

    /// Whether the job path is a regular file with an execute bit.
    fn is_executable(&self, path: &str) -> bool {
        std::fs::metadata(self.host(path))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }

    /// The program the runtime executes for `argv0`: looked up in the job's `PATH` when it
    /// has no `/` (as `execvp` does), relative to the working directory otherwise.
    pub fn entry(&self, argv0: &str) -> Result<String, String> {
        if argv0.contains('/') {
            return self.resolve(argv0, WORKSPACE);
        }
        for dir in PATH.split(':') {
            if let Ok(p) = self.resolve(&format!("{dir}/{argv0}"), WORKSPACE) {
                if self.is_executable(&p) {
                    return Ok(p);
                }
            }
        }
        Err(format!("{argv0}: not found in the job's PATH ({PATH})"))
    }

    /// Follows `#!` lines from the job path `exe` to the ELF the kernel finally runs (the
    /// process's program); a file that is neither is run by `execvp` with `/bin/sh`.
    pub fn final_program(&self, exe: &str) -> Result<String, String> {
        let mut exe = exe.to_owned();
        for _ in 0..MAX_INTERPRETERS {
            let mut head = [0u8; 256];
            let n = std::fs::File::open(self.host(&exe))
                .and_then(|mut f| f.read(&mut head))
                .map_err(|e| format!("{exe}: {e}"))?;
            let head = &head[..n];
            if head.starts_with(b"\x7fELF") {
                return Ok(exe);
            }
            let interp = match head.strip_prefix(b"#!") {
                Some(rest) => {
                    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
                    let line = String::from_utf8_lossy(line);
                    match line.split_whitespace().next() {
                        Some(i) => i.to_owned(),
                        None => return Err(format!("{exe}: empty #! line")),
                    }
                }
                None => "/bin/sh".to_owned(),
            };
            exe = self.resolve(&interp, WORKSPACE)?;
        }
        Err(format!("{exe}: too many levels of #! interpreters"))
    }
}

/// Decides which programs of the job are protected — the entry's program and the group's
/// `protect` list — and makes their execute-only copies under `job_dir/protect`. Any program
/// that cannot be found or copied refuses the job.
pub fn prepare(
    job_dir: &Path,
    plan: &JobPlan,
    rootfs: &Path,
    host: &HostLayout,
) -> Result<Vec<Protected>, SandboxError> {
    if plan.executor == airlock_policy::ExecutorKind::Runsc {
        // gVisor's own kernel refuses to load a program its user cannot read, and applies
        // Yama's "relational" ptrace scope itself: a job process there can reach only its
        // descendants (docs/sandbox.md; tested).
        return Ok(Vec::new());
    }
    let view = View::new(plan, rootfs, host);
    let argv0 = plan.argv.first().ok_or(SandboxError::EmptyCommand)?;
    let mut programs = vec![view
        .entry(argv0)
        .and_then(|e| view.final_program(&e))
        .map_err(|e| unavailable(format!("cannot resolve the job's command: {e}")))?];
    for p in &plan.protect {
        if !p.starts_with('/') {
            return Err(unavailable(format!(
                "protect: {p:?} is not an absolute path"
            )));
        }
        let r = view
            .resolve(p, WORKSPACE)
            .and_then(|e| view.final_program(&e))
            .map_err(|e| unavailable(format!("protect: {p}: {e}")))?;
        if !programs.contains(&r) {
            programs.push(r);
        }
    }
    let dir = job_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(SandboxError::io("creating", &dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(SandboxError::io("chmod", &dir))?;
    programs
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let copy = dir.join(i.to_string());
            copy_exec_only(&view.host(&path), &copy)?;
            Ok(Protected { path, copy })
        })
        .collect()
}

/// Copies the regular file `from` to a new file `to` with only its execute bits, owned by airlock
/// (root). The source is opened without following a symlink and checked on the open file.
fn copy_exec_only(from: &Path, to: &Path) -> Result<(), SandboxError> {
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(SandboxError::io("opening", from))?;
    let m = src.metadata().map_err(SandboxError::io("stat", from))?;
    if !m.is_file() || m.mode() & EXEC_ONLY == 0 {
        return Err(unavailable(format!(
            "{} is not an executable regular file",
            from.display()
        )));
    }
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(SandboxError::io("creating", to))?;
    std::io::copy(&mut src, &mut dst).map_err(SandboxError::io("copying to", to))?;
    dst.flush().map_err(SandboxError::io("writing", to))?;
    dst.set_permissions(std::fs::Permissions::from_mode(m.mode() & EXEC_ONLY))
        .map_err(SandboxError::io("chmod", to))
}

/// Reads back, through the job's init process (created, not started), that each protected
/// path is the execute-only copy in the job's mount namespace: a regular file, root's, with
/// execute bits only (no read, write or set-id bit). Anything else refuses the job.
pub fn verify(init_pid: i32, paths: &[String]) -> Result<(), SandboxError> {
    for p in paths {
        let host = format!("/proc/{init_pid}/root{p}");
        let m = std::fs::symlink_metadata(&host)
            .map_err(|e| unavailable(format!("{p} in the job: {e}")))?;
        let mode = m.mode() & 0o7777;
        if !m.is_file() || m.uid() != 0 || mode & !EXEC_ONLY != 0 || mode == 0 {
            return Err(unavailable(format!(
                "{p} in the job is not execute-only (mode {mode:o}, uid {}): its processes \
                 would be readable by every process of the job",
                m.uid()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn view(root: &Path) -> View {
        View {
            rootfs: root.to_owned(),
            host_binds: Vec::new(),
        }
    }

    #[test]
    fn resolves_symlinks_inside_the_job_and_scripts_to_their_interpreter() {
        let d = tempfile::tempdir().expect("tmp");
        let r = d.path();
        for p in ["usr/bin", "home/runner/work", "opt"] {
            std::fs::create_dir_all(r.join(p)).expect("mkdir");
        }
        symlink("usr/bin", r.join("bin")).expect("ln");
        std::fs::write(r.join("usr/bin/dash"), b"\x7fELF....").expect("w");
        std::fs::set_permissions(r.join("usr/bin/dash"), PermissionsExt::from_mode(0o755))
            .expect("chmod");
        symlink("dash", r.join("usr/bin/sh")).expect("ln");
        // An absolute symlink resolves in the job, never on the host.
        symlink("/bin/sh", r.join("opt/shell")).expect("ln");
        std::fs::write(r.join("home/runner/work/run.sh"), "#!/opt/shell -e\necho\n").expect("w");
        std::fs::write(r.join("home/runner/work/plain"), "echo hi\n").expect("w");
        let v = view(r);
        assert_eq!(v.entry("sh").as_deref(), Ok("/usr/bin/dash"));
        assert_eq!(v.resolve("/bin/sh", "/").as_deref(), Ok("/usr/bin/dash"));
        assert_eq!(
            v.final_program("/usr/bin/dash").as_deref(),
            Ok("/usr/bin/dash")
        );
        let run = v.entry("./run.sh").expect("entry");
        assert_eq!(run, "/home/runner/work/run.sh");
        assert_eq!(v.final_program(&run).as_deref(), Ok("/usr/bin/dash"));
        assert_eq!(
            v.final_program("/home/runner/work/plain").as_deref(),
            Ok("/usr/bin/dash")
        );
        assert!(v.entry("nonexistent").is_err());
        symlink("loop", r.join("loop")).expect("ln");
        assert!(v.resolve("/loop", "/").is_err());
    }

    #[test]
    fn copies_are_execute_only_and_root_owned() {
        let d = tempfile::tempdir().expect("tmp");
        let from = d.path().join("prog");
        std::fs::write(&from, b"\x7fELF-bytes").expect("w");
        std::fs::set_permissions(&from, PermissionsExt::from_mode(0o4755)).expect("chmod");
        let to = d.path().join("copy");
        copy_exec_only(&from, &to).expect("copy");
        let m = std::fs::metadata(&to).expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o111);
        // Execute bits are kept, never added: a program the job could not run stays so.
        std::fs::set_permissions(&from, PermissionsExt::from_mode(0o700)).expect("chmod");
        copy_exec_only(&from, &d.path().join("c0")).expect("copy");
        let m = std::fs::metadata(d.path().join("c0")).expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o100);
        std::fs::set_permissions(&from, PermissionsExt::from_mode(0o644)).expect("chmod");
        assert!(copy_exec_only(&from, &d.path().join("c1")).is_err());
        // A symlink is never copied through.
        symlink(&from, d.path().join("link")).expect("ln");
        assert!(copy_exec_only(&d.path().join("link"), &d.path().join("c2")).is_err());
    }

    #[test]
    fn a_readable_program_fails_verification() {
        // Our own executable, seen through our own /proc/PID/root, is readable.
        let me = std::fs::read_link("/proc/self/exe").expect("exe");
        let e = verify(
            std::process::id() as i32,
            &[me.to_string_lossy().into_owned()],
        )
        .expect_err("must fail closed");
        assert!(e.to_string().contains("not execute-only"), "{e}");
    }
}
