//! What an exec actually runs, as opposed to what its caller says.
//!
//! The path and argv of an `execve` are the caller's words: an `execveat(fd, "", AT_EMPTY_PATH)`
//! of a memfd has no path at all, an `execveat(dirfd, "make", 0)` names a file in a directory
//! the record does not show, and argv[0] is whatever the caller likes (`[kworker/0:1]`). Here
//! the exec's target is resolved the way the kernel will resolve it, from the stopped caller's
//! own fd table, cwd and root (`/proc/TID/fd/N`, `/proc/TID/cwd`, `/proc/TID/root`), and
//! described by what it is: its path as the job sees it, whether it is a memfd (and its name),
//! whether it is deleted, device, inode, size and a SHA-256 of its content.
//!
//! Resolution never leaves the job's view of the file system: absolute paths (and relative ones
//! joined to the job-view path of their directory) are opened with `openat2(RESOLVE_IN_ROOT)`
//! below the caller's root, so a symlink planted by the job (`/tmp/x -> /etc/shadow`) resolves
//! inside the job, never on the host. `/proc/<self|thread-self|pid>/{fd/N,cwd,root,exe}` and
//! `/dev/fd/N`, `/dev/std{in,out,err}` are followed explicitly (the kernel would follow those
//! magic links for the caller; `RESOLVE_IN_ROOT` refuses them for us). A path that reaches a
//! magic link any other way is left unresolved (`error`); what ran is then still caught after
//! the exec by the watcher's `/proc/PID/exe` check (crate::watch).
//!
//! Cost is bounded whatever the job does: at most [`MAX_HASH`] bytes of one file are hashed,
//! hashes are cached by (device, inode, size, mtime, ctime) — ctime cannot be set by the job,
//! so rewriting a file and resetting its mtime still misses the cache — and a per-job byte
//! budget refilled at [`HASH_RATE`] per second caps the reading a job can cause by exec'ing
//! large or changing files in a loop (`hash_skipped: "budget"` then).

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// At most this many bytes of one executable are hashed (`hash_partial` beyond).
pub const MAX_HASH: u64 = 64 << 20;
/// Hashing budget: refilled at this many bytes per second ...
pub const HASH_RATE: u64 = 64 << 20;
/// ... up to this many.
pub const HASH_BURST: u64 = 256 << 20;
/// Reading one file for its hash stops after this long (`hash_partial`).
const HASH_TIME: Duration = Duration::from_secs(2);
/// Cached hashes; the cache is emptied when full.
const CACHE_MAX: usize = 4096;
/// Magic links followed for one path, at most.
const MAX_HOPS: usize = 8;
/// `statfs` type of hugetlbfs (memfds made with `MFD_HUGETLB` live there).
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// One exec as the kernel will see it.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// `execve(path, …)`
    Execve {
        /// The path argument.
        path: &'a str,
    },
    /// `execveat(dirfd, path, …, flags)`
    Execveat {
        /// The directory fd (or the file itself with `AT_EMPTY_PATH`).
        dirfd: i32,
        /// The path argument.
        path: &'a str,
        /// `AT_EMPTY_PATH`, `AT_SYMLINK_NOFOLLOW`.
        flags: i32,
    },
}

/// What an exec's target is. Serialized as the `exe` object of a `process.exec` record.
#[derive(Debug, Default, Serialize)]
pub struct Exe {
    /// The path as the job sees it (` (deleted)` removed: see `deleted`); `memfd:NAME` for a
    /// memfd. Missing when the target could not be resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How the target was named: `path` (absolute), `cwd` (relative to the working
    /// directory), `dirfd` (relative to an `execveat` directory fd), `fd` (the fd itself:
    /// `AT_EMPTY_PATH`, `fexecve`, `/proc/self/fd/N`).
    pub via: &'static str,
    /// The caller's fd, for `via = fd`/`dirfd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// `memfd:NAME` when the target is a memfd (no file at all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memfd: Option<String>,
    /// The target has no name left in any directory (unlinked, `O_TMPFILE`, memfd).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Device, `MAJOR:MINOR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Inode number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of the content (of the first `hashed_bytes` when `hash_partial`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Bytes hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashed_bytes: Option<u64>,
    /// Only a prefix was hashed (the file is larger than the cap, or reading took too long).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hash_partial: bool,
    /// Why there is no hash: `not a regular file`, `budget`, `unreadable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_skipped: Option<&'static str>,
    /// Why the target could not be resolved (the exec itself will most often fail the same
    /// way, e.g. a `PATH` search trying directories in turn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The interpreter a `#!` script names (resolved in the job's root when possible).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// (device, inode), for the watcher's bookkeeping.
    #[serde(skip)]
    pub key: Option<(u64, u64)>,
    /// (device, inode) of the interpreter.
    #[serde(skip)]
    pub interpreter_key: Option<(u64, u64)>,
    /// Mode bits.
    #[serde(skip)]
    pub mode: u32,
    /// The target, opened `O_PATH` (no access, no side effects).
    #[serde(skip)]
    pub file: Option<OwnedFd>,
}

impl Exe {
    /// Whether the target is fileless: a memfd, or a file with no name left.
    pub fn fileless(&self) -> bool {
        self.memfd.is_some() || self.deleted
    }

    /// Names a correct argv[0] may carry: the basename of the path the caller gave (the
    /// symlink's name: `python3`, a busybox applet) and of what it resolved to
    /// (`python3.11`), or the memfd's name.
    pub fn names<'a>(&'a self, given: &'a str) -> Vec<&'a str> {
        let mut v = Vec::new();
        if !given.is_empty() {
            v.push(basename(given));
        }
        if let Some(p) = &self.path {
            v.push(basename(p));
        }
        if let Some(m) = &self.memfd {
            v.push(m.strip_prefix("memfd:").unwrap_or(m));
        }
        v
    }
}

/// The last component of a path (the whole string when it has no `/`).
pub fn basename(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

/// Whether argv[0] disagrees with every name of the executable. A login shell's leading `-`
/// (`-bash`) is ignored; a missing or empty argv[0] always disagrees. Recorded, not alerted
/// on: `exec -a`, multi-call binaries and wrappers have legitimate reasons.
pub fn argv0_mismatch(argv0: Option<&str>, names: &[&str]) -> bool {
    let Some(a) = argv0 else { return true };
    let b = basename(a).trim_start_matches('-');
    if b.is_empty() {
        return true;
    }
    !names
        .iter()
        .map(|n| n.trim_start_matches('-'))
        .any(|n| !n.is_empty() && n == b)
}

/// A `/proc` (or `/dev/fd`) path the kernel resolves through a magic link of a process.
#[derive(Debug, PartialEq, Eq)]
enum Magic<'a> {
    /// `/proc/<who>/<link>`, then `rest` (components) below it.
    Proc {
        who: Who,
        link: String,
        rest: Vec<&'a str>,
    },
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Who {
    /// `self`, `thread-self`, `/dev/fd`: the caller.
    Caller,
    /// A pid in the job's pid namespace.
    Pid(u32),
}

/// The components of an absolute path, `.` and empty ones dropped (`..` kept: only the
/// kernel knows what it means after a symlink).
fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Recognises `/proc/{self,thread-self,N}/{fd/N,cwd,root,exe}[/rest]`, `/dev/fd/N[/rest]`
/// and `/dev/std{in,out,err}`.
fn magic(path: &str) -> Option<Magic<'_>> {
    let c = components(path);
    let num = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty();
    match c.as_slice() {
        ["dev", "fd", n, rest @ ..] if num(n) => Some(Magic::Proc {
            who: Who::Caller,
            link: format!("fd/{n}"),
            rest: rest.to_vec(),
        }),
        ["dev", s @ ("stdin" | "stdout" | "stderr"), rest @ ..] => Some(Magic::Proc {
            who: Who::Caller,
            link: format!(
                "fd/{}",
                match *s {
                    "stdin" => 0,
                    "stdout" => 1,
                    _ => 2,
                }
            ),
            rest: rest.to_vec(),
        }),
        ["proc", who, tail @ ..] => {
            let who = match *who {
                "self" | "thread-self" => Who::Caller,
                n if num(n) => Who::Pid(n.parse().ok()?),
                _ => return None,
            };
            // `/proc/self/task/N/...` names the same tables: skip the task level.
            let tail = match tail {
                ["task", t, more @ ..] if num(t) => more,
                _ => tail,
            };
            match tail {
                ["fd", n, rest @ ..] if num(n) => Some(Magic::Proc {
                    who,
                    link: format!("fd/{n}"),
                    rest: rest.to_vec(),
                }),
                [l @ ("cwd" | "root" | "exe"), rest @ ..] => Some(Magic::Proc {
                    who,
                    link: (*l).to_owned(),
                    rest: rest.to_vec(),
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

fn cstr(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn openat(dir: RawFd, path: &str, flags: i32) -> std::io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: a valid NUL-terminated path; a returned fd is fresh and ours.
    let r = unsafe { libc::openat(dir, p.as_ptr(), flags | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(last_err());
    }
    // SAFETY: the kernel returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// `openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: `path` resolved as
/// if `root` were `/`, symlinks included.
fn open_in_root(root: RawFd, path: &str, flags: i32) -> std::io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: open_how is plain data; zero is valid for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid pointers to a path and an open_how of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            p.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        return Err(last_err());
    }
    // SAFETY: the kernel returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

fn readlink(path: &str) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// `fstat(2)`.
pub(crate) fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out pointer.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(last_err());
    }
    Ok(st)
}

/// Where a path starts.
struct Start {
    via: &'static str,
    fd: Option<i32>,
    /// The job-view path to resolve, or the file itself already open.
    what: Either,
}

enum Either {
    Path(String),
    Open(OwnedFd),
}

/// A job's cache of program hashes, by (device, inode, size, mtime, ctime): shared between
/// its exec listener and the primed sandbox's wait, which hashes the entry program before
/// the start ([`crate::watch::Watcher::prewarm`]) so the runner's first exec does not wait
/// for it. Never shared between jobs.
pub type HashCache = std::sync::Arc<std::sync::Mutex<HashMap<[i64; 7], (String, u64, bool)>>>;

fn lock_cache(c: &HashCache) -> std::sync::MutexGuard<'_, HashMap<[i64; 7], (String, u64, bool)>> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves and describes exec targets for one job; keeps the hash cache and budget.
pub struct Resolver {
    cache: HashCache,
    tokens: u64,
    refilled: Instant,
    memfd_dev: Option<u64>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    /// A resolver with a full budget.
    pub fn new() -> Self {
        Self::with_cache(HashCache::default())
    }

    /// A resolver with a full budget and the job's `cache`.
    pub fn with_cache(cache: HashCache) -> Self {
        Self {
            cache,
            tokens: HASH_BURST,
            refilled: Instant::now(),
            memfd_dev: memfd_dev(),
        }
    }

    /// Resolves the target of `call` made by thread `tid` (a host tid, stopped in the kernel).
    /// For a `#!` script, its interpreter is resolved too (what `/proc/PID/exe` will show).
    pub fn resolve(&mut self, tid: i32, call: Call<'_>) -> Exe {
        let mut exe = self.resolve_one(tid, call);
        if let Some(i) = exe.file.as_ref().and_then(|f| shebang(f, exe.mode)) {
            let ie = self.resolve_one(tid, Call::Execve { path: &i });
            exe.interpreter = Some(ie.path.unwrap_or(i));
            exe.interpreter_key = ie.key;
        }
        exe
    }

    fn resolve_one(&mut self, tid: i32, call: Call<'_>) -> Exe {
        let proc = format!("/proc/{tid}");
        let (path, dirfd, flags) = match call {
            Call::Execve { path } => (path, libc::AT_FDCWD, 0),
            Call::Execveat { dirfd, path, flags } => (path, dirfd, flags),
        };
        let nofollow = flags & libc::AT_SYMLINK_NOFOLLOW != 0;
        let start = if path.is_empty() {
            if flags & libc::AT_EMPTY_PATH == 0 {
                return Exe {
                    via: "path",
                    error: Some("empty path".into()),
                    ..Exe::default()
                };
            }
            let (via, link, fd) = if dirfd == libc::AT_FDCWD {
                ("cwd", "cwd".to_owned(), None)
            } else {
                ("fd", format!("fd/{dirfd}"), Some(dirfd))
            };
            match openat(libc::AT_FDCWD, &format!("{proc}/{link}"), libc::O_PATH) {
                Ok(f) => Start {
                    via,
                    fd,
                    what: Either::Open(f),
                },
                Err(e) => {
                    return Exe {
                        via,
                        fd,
                        error: Some(format!("fd {dirfd}: {e}")),
                        ..Exe::default()
                    }
                }
            }
        } else if path.starts_with('/') {
            Start {
                via: "path",
                fd: None,
                what: Either::Path(path.to_owned()),
            }
        } else {
            let (via, fd, link) = if dirfd == libc::AT_FDCWD {
                ("cwd", None, "cwd".to_owned())
            } else {
                ("dirfd", Some(dirfd), format!("fd/{dirfd}"))
            };
            match self.dir_path(&format!("{proc}/{link}")) {
                Ok(base) => Start {
                    via,
                    fd,
                    what: Either::Path(join(&base, path)),
                },
                Err(e) => {
                    return Exe {
                        via,
                        fd,
                        error: Some(e),
                        ..Exe::default()
                    }
                }
            }
        };
        let mut exe = Exe {
            via: start.via,
            fd: start.fd,
            ..Exe::default()
        };
        let file = match start.what {
            Either::Open(f) => Ok(f),
            Either::Path(p) => self.open_path(tid, &p, nofollow, &mut exe),
        };
        match file {
            Ok(f) => self.describe(f, &mut exe),
            Err(e) => exe.error = Some(e),
        }
        exe
    }

    /// Describes the executable behind `/proc/TGID/exe` (after an exec).
    pub fn running(&mut self, tgid: i32) -> Option<Exe> {
        let f = openat(libc::AT_FDCWD, &format!("/proc/{tgid}/exe"), libc::O_PATH).ok()?;
        let mut exe = Exe {
            via: "exe",
            ..Exe::default()
        };
        self.describe(f, &mut exe);
        Some(exe)
    }

    /// The job-view path of a directory behind a `/proc` link; an error when it is gone.
    fn dir_path(&self, link: &str) -> Result<String, String> {
        let f = openat(libc::AT_FDCWD, link, libc::O_PATH).map_err(|e| format!("{link}: {e}"))?;
        let st = fstat(f.as_raw_fd()).map_err(|e| format!("{link}: {e}"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err("the directory fd is not a directory".into());
        }
        if st.st_nlink == 0 {
            return Err("the directory was removed".into());
        }
        readlink(&format!("/proc/self/fd/{}", f.as_raw_fd()))
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| format!("{link}: unreadable"))
    }

    /// Opens a job-view absolute path `O_PATH` the way the caller would, magic links of
    /// `/proc` included.
    fn open_path(
        &self,
        tid: i32,
        path: &str,
        nofollow: bool,
        exe: &mut Exe,
    ) -> Result<OwnedFd, String> {
        let mut path = path.to_owned();
        for _ in 0..MAX_HOPS {
            let Some(Magic::Proc { who, link, rest }) = magic(&path) else {
                let root = openat(
                    libc::AT_FDCWD,
                    &format!("/proc/{tid}/root"),
                    libc::O_PATH | libc::O_DIRECTORY,
                )
                .map_err(|e| format!("root: {e}"))?;
                let flags = libc::O_PATH | if nofollow { libc::O_NOFOLLOW } else { 0 };
                return open_in_root(root.as_raw_fd(), &path, flags).map_err(|e| {
                    if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EXDEV)) {
                        format!("{path}: {e} (a /proc magic link airlock does not follow)")
                    } else {
                        format!("{path}: {e}")
                    }
                });
            };
            // The directory holding the link: the caller's own /proc entry, or another
            // process's as the job's /proc shows it.
            let dir = match who {
                Who::Caller => openat(
                    libc::AT_FDCWD,
                    &format!("/proc/{tid}"),
                    libc::O_PATH | libc::O_DIRECTORY,
                ),
                Who::Pid(n) => openat(
                    libc::AT_FDCWD,
                    &format!("/proc/{tid}/root"),
                    libc::O_PATH | libc::O_DIRECTORY,
                )
                .and_then(|r| {
                    open_in_root(
                        r.as_raw_fd(),
                        &format!("/proc/{n}"),
                        libc::O_PATH | libc::O_DIRECTORY,
                    )
                }),
            }
            .map_err(|e| format!("{path}: {e}"))?;
            if link.starts_with("fd/") && rest.is_empty() && exe.via == "path" {
                exe.via = "fd";
                exe.fd = link[3..].parse().ok();
            }
            // A plain openat follows the magic link, as the kernel does for the caller.
            let f =
                openat(dir.as_raw_fd(), &link, libc::O_PATH).map_err(|e| format!("{path}: {e}"))?;
            if rest.is_empty() {
                return Ok(f);
            }
            let st = fstat(f.as_raw_fd()).map_err(|e| format!("{path}: {e}"))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_nlink == 0 {
                return Err(format!("{path}: not a directory"));
            }
            let base = readlink(&format!("/proc/self/fd/{}", f.as_raw_fd()))
                .ok_or_else(|| format!("{path}: unreadable"))?;
            path = join(&base, &rest.join("/"));
        }
        Err(format!("{path}: too many /proc links"))
    }

    /// Fills in what the open target is.
    fn describe(&mut self, f: OwnedFd, exe: &mut Exe) {
        let st = match fstat(f.as_raw_fd()) {
            Ok(s) => s,
            Err(e) => {
                exe.error = Some(format!("fstat: {e}"));
                return;
            }
        };
        let dev = st.st_dev;
        exe.dev = Some(format!("{}:{}", libc::major(dev), libc::minor(dev)));
        exe.ino = Some(st.st_ino);
        exe.size = Some(st.st_size as u64);
        exe.mode = st.st_mode;
        exe.key = Some((dev, st.st_ino));
        exe.deleted = st.st_nlink == 0;
        let mut name = readlink(&format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap_or_default();
        if exe.deleted {
            if let Some(n) = name.strip_suffix(" (deleted)") {
                name = n.to_owned();
            }
        }
        if exe.deleted && name.starts_with("/memfd:") && self.is_memfd_fs(&f, dev) {
            name.remove(0);
            exe.memfd = Some(name.clone());
        }
        if !name.is_empty() {
            exe.path = Some(name);
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            self.hash(&f, &st, exe);
        } else {
            exe.hash_skipped = Some("not a regular file");
        }
        exe.file = Some(f);
    }

    fn is_memfd_fs(&self, f: &OwnedFd, dev: u64) -> bool {
        if self.memfd_dev == Some(dev) {
            return true;
        }
        // SAFETY: statfs is plain data, filled by the kernel.
        let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and out pointer.
        let ok = unsafe { libc::fstatfs(f.as_raw_fd(), &mut sfs) } == 0;
        ok && sfs.f_type as i64 == HUGETLBFS_MAGIC
    }

    fn hash(&mut self, f: &OwnedFd, st: &libc::stat, exe: &mut Exe) {
        let key = [
            st.st_dev as i64,
            st.st_ino as i64,
            st.st_size,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_ctime,
            st.st_ctime_nsec,
        ];
        if let Some((h, n, partial)) = lock_cache(&self.cache).get(&key).cloned() {
            exe.sha256 = Some(h);
            exe.hashed_bytes = Some(n);
            exe.hash_partial = partial;
            return;
        }
        let want = (st.st_size.max(0) as u64).min(MAX_HASH);
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_millis() as u64 * (HASH_RATE / 1000);
        self.tokens = (self.tokens.saturating_add(refill)).min(HASH_BURST);
        self.refilled = now;
        if want > self.tokens {
            exe.hash_skipped = Some("budget");
            return;
        }
        // Reopened for reading through our own O_PATH fd: the very file resolved, even when
        // it is deleted or a memfd. Non-blocking, so nothing can make the read wait.
        let Ok(mut r) = openat(
            libc::AT_FDCWD,
            &format!("/proc/self/fd/{}", f.as_raw_fd()),
            libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
        )
        .map(std::fs::File::from) else {
            exe.hash_skipped = Some("unreadable");
            return;
        };
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        let mut partial = st.st_size.max(0) as u64 > MAX_HASH;
        while n < want {
            if now.elapsed() > HASH_TIME {
                partial = true;
                break;
            }
            let room = (want - n).min(buf.len() as u64) as usize;
            match r.read(&mut buf[..room]) {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    partial = true;
                    break;
                }
            }
        }
        self.tokens = self.tokens.saturating_sub(n);
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        {
            let mut c = lock_cache(&self.cache);
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(key, (hex.clone(), n, partial));
        }
        exe.sha256 = Some(hex);
        exe.hashed_bytes = Some(n);
        exe.hash_partial = partial;
    }
}

/// When `target` is the dynamic loader (`ld-linux-x86-64.so.2`, `ld.so`, `ld-musl-*.so.1`)
/// run as a program, the program it will load: the first argument after its options.
pub fn loader_program(target: &Exe, argv: &[String]) -> Option<String> {
    let name = basename(target.path.as_deref()?);
    let loader = name == "ld.so"
        || (name.starts_with("ld-") && name.contains(".so"))
        || name.starts_with("ld64.so");
    if !loader {
        return None;
    }
    // glibc's and musl's options that take a value.
    const WITH_VALUE: &[&str] = &[
        "--library-path",
        "--inhibit-rpath",
        "--audit",
        "--preload",
        "--argv0",
        "--glibc-hwcaps-prepend",
        "--glibc-hwcaps-mask",
    ];
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            return it.next().cloned();
        }
        if WITH_VALUE.contains(&a.as_str()) {
            it.next();
            continue;
        }
        if a.starts_with("--") {
            continue;
        }
        return Some(a.clone());
    }
    None
}

/// The interpreter path of a `#!` script (the kernel reads at most 256 bytes of that line).
fn shebang(f: &OwnedFd, mode: u32) -> Option<String> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let mut r = openat(
        libc::AT_FDCWD,
        &format!("/proc/self/fd/{}", f.as_raw_fd()),
        libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
    )
    .map(std::fs::File::from)
    .ok()?;
    let mut buf = [0u8; 256];
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let line = buf[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.split([' ', '\t'])
        .find(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The device of the kernel's internal memfd mount, from a memfd of our own.
fn memfd_dev() -> Option<u64> {
    let name = cstr("airlock-probe").ok()?;
    // SAFETY: a valid name; a returned fd is ours.
    let r = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if r < 0 {
        return None;
    }
    // SAFETY: fresh descriptor.
    let f = unsafe { OwnedFd::from_raw_fd(r) };
    std::fs::File::from(f).metadata().ok().map(|m| m.dev())
}

/// `base` (a job-view directory) joined with a relative path.
fn join(base: &str, rel: &str) -> String {
    if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::IntoRawFd;

    fn tid() -> i32 {
        // SAFETY: plain syscall.
        unsafe { libc::gettid() }
    }

    #[test]
    fn proc_and_dev_fd_paths_are_recognised() {
        let p = |who, link: &str, rest: Vec<&'static str>| {
            Some(Magic::Proc {
                who,
                link: link.into(),
                rest,
            })
        };
        assert_eq!(magic("/proc/self/fd/3"), p(Who::Caller, "fd/3", vec![]));
        assert_eq!(magic("/proc//./self/fd/3"), p(Who::Caller, "fd/3", vec![]));
        assert_eq!(
            magic("/proc/thread-self/cwd/x/y"),
            p(Who::Caller, "cwd", vec!["x", "y"])
        );
        assert_eq!(
            magic("/proc/42/root/bin/sh"),
            p(Who::Pid(42), "root", vec!["bin", "sh"])
        );
        assert_eq!(
            magic("/proc/self/task/7/fd/9"),
            p(Who::Caller, "fd/9", vec![])
        );
        assert_eq!(magic("/dev/fd/4"), p(Who::Caller, "fd/4", vec![]));
        assert_eq!(magic("/dev/stdin"), p(Who::Caller, "fd/0", vec![]));
        assert_eq!(magic("/proc/self/status"), None);
        assert_eq!(magic("/proc/sys/x"), None);
        assert_eq!(magic("/usr/bin/make"), None);
    }

    #[test]
    fn argv0_is_compared_with_every_name_of_the_executable() {
        assert!(!argv0_mismatch(Some("make"), &["make", "make"]));
        assert!(!argv0_mismatch(
            Some("/usr/bin/python3"),
            &["python3", "python3.11"]
        ));
        assert!(!argv0_mismatch(
            Some("python3.11"),
            &["python3", "python3.11"]
        ));
        assert!(!argv0_mismatch(Some("-bash"), &["bash"]), "login shell");
        assert!(
            !argv0_mismatch(Some("ls"), &["ls", "busybox"]),
            "multi-call"
        );
        assert!(argv0_mismatch(Some("[kworker/0:1]"), &["payload"]));
        assert!(argv0_mismatch(Some("sshd"), &["make"]));
        assert!(argv0_mismatch(Some(""), &["make"]));
        assert!(argv0_mismatch(None, &["make"]));
    }

    #[test]
    fn a_memfd_exec_resolves_to_its_name_and_hash() {
        let name = cstr("payload").expect("name");
        // SAFETY: valid name.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: fresh fd.
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        f.write_all(b"hello").expect("write");
        let mut r = Resolver::new();
        let exe = r.resolve(
            tid(),
            Call::Execveat {
                dirfd: fd,
                path: "",
                flags: libc::AT_EMPTY_PATH,
            },
        );
        assert_eq!(exe.error, None);
        assert_eq!(exe.memfd.as_deref(), Some("memfd:payload"));
        assert_eq!(exe.path.as_deref(), Some("memfd:payload"));
        assert!(exe.deleted && exe.fileless());
        assert_eq!((exe.via, exe.fd), ("fd", Some(fd)));
        assert_eq!(
            exe.sha256.as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert_eq!(exe.size, Some(5));
        // The same file through /proc/self/fd/N and /dev/fd/N.
        for p in [format!("/proc/self/fd/{fd}"), format!("/dev/fd/{fd}")] {
            let e = r.resolve(tid(), Call::Execve { path: &p });
            assert_eq!(e.memfd.as_deref(), Some("memfd:payload"), "{p}");
            assert_eq!((e.via, e.fd), ("fd", Some(fd)), "{p}");
        }
        assert!(argv0_mismatch(Some("[kworker/0:1]"), &exe.names("")));
        assert!(!argv0_mismatch(Some("payload"), &exe.names("")));
    }

    #[test]
    fn a_dirfd_relative_exec_resolves_to_the_real_path_and_sees_deletion() {
        let d = tempfile::tempdir().expect("tmp");
        let h = d.path().join(".h");
        std::fs::create_dir(&h).expect("mkdir");
        std::fs::write(h.join("make"), b"#!/bin/sh\n").expect("write");
        std::os::unix::fs::symlink("make", h.join("link")).expect("symlink");
        let dirfd = std::fs::File::open(&h).expect("open").into_raw_fd();
        let mut r = Resolver::new();
        let exe = r.resolve(
            tid(),
            Call::Execveat {
                dirfd,
                path: "make",
                flags: 0,
            },
        );
        let real = h.join("make").to_string_lossy().into_owned();
        assert_eq!(exe.path.as_deref(), Some(real.as_str()));
        assert_eq!((exe.via, exe.fd), ("dirfd", Some(dirfd)));
        assert!(!exe.deleted && exe.memfd.is_none());
        let ino = std::fs::metadata(&real).expect("stat").ino();
        assert_eq!(exe.ino, Some(ino));
        // `..` and symlinks are resolved as the kernel does, from the job's root.
        let up = r.resolve(
            tid(),
            Call::Execveat {
                dirfd,
                path: "../.h/link",
                flags: 0,
            },
        );
        assert_eq!(up.path.as_deref(), Some(real.as_str()));
        assert!(!argv0_mismatch(Some("link"), &up.names("../.h/link")));
        assert!(!argv0_mismatch(Some("make"), &up.names("../.h/link")));
        assert!(argv0_mismatch(Some("sshd"), &up.names("../.h/link")));
        // The file opened, then unlinked: what an fexecve of it runs is deleted.
        let f = std::fs::File::open(&real).expect("open");
        std::fs::remove_file(&real).expect("rm");
        let gone = r.resolve(
            tid(),
            Call::Execveat {
                dirfd: f.as_raw_fd(),
                path: "",
                flags: libc::AT_EMPTY_PATH,
            },
        );
        assert_eq!(gone.path.as_deref(), Some(real.as_str()));
        assert!(gone.deleted && gone.memfd.is_none() && gone.fileless());
        assert_eq!(gone.ino, Some(ino));
        // The held O_PATH fd sees the deletion of a file that existed at exec time.
        let held = exe.file.as_ref().expect("held");
        assert_eq!(fstat(held.as_raw_fd()).expect("fstat").st_nlink, 0);
        // SAFETY: we own dirfd.
        drop(unsafe { OwnedFd::from_raw_fd(dirfd) });
    }

    #[test]
    fn relative_paths_resolve_against_the_cwd_and_missing_ones_say_why() {
        let mut r = Resolver::new();
        let cwd = std::env::current_dir().expect("cwd");
        std::fs::write(cwd.join("exe-test-probe"), b"x").expect("write");
        let e = r.resolve(
            tid(),
            Call::Execve {
                path: "./exe-test-probe",
            },
        );
        let _ = std::fs::remove_file(cwd.join("exe-test-probe"));
        assert_eq!(e.via, "cwd");
        assert_eq!(
            e.path.as_deref(),
            Some(cwd.join("exe-test-probe").to_string_lossy().as_ref())
        );
        let missing = r.resolve(
            tid(),
            Call::Execve {
                path: "/no/such/exe",
            },
        );
        assert!(missing.path.is_none());
        assert!(missing
            .error
            .as_deref()
            .is_some_and(|e| e.contains("/no/such/exe")));
        let bin = r.resolve(tid(), Call::Execve { path: "/bin/sh" });
        assert!(bin.sha256.is_some() && bin.ino.is_some(), "{bin:?}");
    }

    #[test]
    fn the_program_of_the_dynamic_loader_is_found() {
        let ld = Exe {
            path: Some("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()),
            ..Exe::default()
        };
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            loader_program(
                &ld,
                &v(&[
                    "ld.so",
                    "--library-path",
                    "/x",
                    "--argv0",
                    "k",
                    "/proc/self/fd/3",
                    "-a"
                ])
            ),
            Some("/proc/self/fd/3".into())
        );
        assert_eq!(loader_program(&ld, &v(&["ld.so", "--list"])), None);
        let sh = Exe {
            path: Some("/usr/bin/dash".into()),
            ..Exe::default()
        };
        assert_eq!(loader_program(&sh, &v(&["sh", "x"])), None);
    }

    #[test]
    fn a_script_names_its_interpreter() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("s.sh");
        std::fs::write(&p, b"#!/bin/sh -e\necho hi\n").expect("write");
        let mut r = Resolver::new();
        let path = p.to_string_lossy().into_owned();
        let e = r.resolve(tid(), Call::Execve { path: &path });
        let sh = std::fs::canonicalize("/bin/sh").expect("sh");
        assert_eq!(
            e.interpreter.as_deref(),
            Some(sh.to_string_lossy().as_ref())
        );
        let m = std::fs::metadata(&sh).expect("stat");
        assert_eq!(e.interpreter_key, Some((m.dev(), m.ino())));
        let bin = r.resolve(tid(), Call::Execve { path: "/bin/sh" });
        assert_eq!(bin.interpreter, None);
    }

    /// A primed sandbox's prewarm: a hash computed by one resolver of the job is found by the
    /// job's listener (same cache) without reading the file again; another job's resolver
    /// (its own cache) hashes it itself.
    #[test]
    fn a_prewarmed_hash_is_the_listeners_and_only_its_jobs() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        std::fs::write(&p, vec![9u8; 1 << 20]).expect("write");
        let path = p.to_string_lossy().into_owned();
        let cache = HashCache::default();
        let a = Resolver::with_cache(cache.clone()).resolve(tid(), Call::Execve { path: &path });
        let mut listener = Resolver::with_cache(cache);
        let before = listener.tokens;
        let b = listener.resolve(tid(), Call::Execve { path: &path });
        assert_eq!(a.sha256, b.sha256);
        assert!(a.sha256.is_some());
        assert_eq!(
            listener.tokens, before,
            "the prewarmed hash cost the listener nothing"
        );
        let mut other = Resolver::new();
        let c = other.resolve(tid(), Call::Execve { path: &path });
        assert_eq!(c.sha256, a.sha256);
        assert!(other.tokens < before, "another job hashes for itself");
    }

    #[test]
    fn hashing_is_cached_capped_and_budgeted() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        std::fs::write(&p, vec![7u8; 1 << 20]).expect("write");
        let mut r = Resolver::new();
        let path = p.to_string_lossy().into_owned();
        let a = r.resolve(tid(), Call::Execve { path: &path });
        assert_eq!(a.hashed_bytes, Some(1 << 20));
        let left = r.tokens;
        let b = r.resolve(tid(), Call::Execve { path: &path });
        assert_eq!(a.sha256, b.sha256);
        assert!(r.tokens >= left, "a cached hash costs nothing");
        // Rewritten with the same size and its mtime put back: ctime still changes.
        let m = std::fs::metadata(&p).expect("stat");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, vec![8u8; 1 << 20]).expect("write");
        let t = std::fs::FileTimes::new().set_modified(m.modified().expect("mtime"));
        std::fs::File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_times(t))
            .expect("times");
        let c = r.resolve(tid(), Call::Execve { path: &path });
        assert_ne!(
            a.sha256, c.sha256,
            "the cache is not fooled by a restored mtime"
        );
        r.tokens = 0;
        r.refilled = Instant::now();
        lock_cache(&r.cache).clear();
        let e = r.resolve(tid(), Call::Execve { path: &path });
        assert_eq!(e.hash_skipped, Some("budget"));
        assert!(e.ino.is_some(), "still described");
    }
}
