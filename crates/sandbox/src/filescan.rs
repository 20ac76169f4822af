//! What the job left on its filesystem: at teardown, before the overlay is dropped, its upper
//! dir holds exactly the files the job created, changed or deleted (whiteouts). Each becomes a
//! `file.changed` event; places where a backdoor would survive into a later job on a
//! non-ephemeral runner (cron, systemd, shell start-up files, SSH keys, git hooks, the dynamic
//! linker, the runner's own files, directories on PATH …) are classified, so the
//! `persistence-attempt` detector can name them.
//!
//! In airlock the next job never sees these files (the upper dir is discarded); the record is
//! what tells an operator that a job *tried*, which on any runner that is not airlock's would
//! have worked.
//!
//! Not seen: files written to the separate tmpfs mounts `/run`, `/dev/shm` and `/dev` (they are
//! not part of the overlay), and files written and removed again before the end of the job.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::dir::{Dir, OwningIter};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use serde::Serialize;

use crate::plan::{HOME, WORKSPACE};

/// At most this many changes are reported one by one by [`scan`]; the rest is counted.
pub const MAX_EVENTS: usize = 5_000;
/// Paths longer than this are recorded cut (with `path_truncated`): a job can make paths of
/// 4 KiB, and a listing of them must stay small.
pub const MAX_PATH: usize = 1024;

/// Bounds of one scan: whatever the job left, the scan ends in bounded time and memory.
#[derive(Debug, Clone)]
pub struct ScanLimits {
    /// Changes listed one by one (persistence locations first); the rest are counted.
    pub listed: usize,
    /// Directory entries examined at most.
    pub entries: u64,
    /// Time spent at most.
    pub time: Duration,
    /// Directory depth descended at most (one open directory per level).
    pub depth: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            listed: MAX_EVENTS,
            entries: 5_000_000,
            time: Duration::from_secs(30),
            depth: 256,
        }
    }
}

/// One file the job created, changed or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// The path as the job saw it.
    pub path: String,
    /// `created`, `modified` or `deleted`.
    pub change: &'static str,
    /// Size in bytes (0 for a deletion).
    pub size: u64,
    /// Mode bits, octal as a string (`100644`).
    pub mode: String,
    /// The persistence location this path is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence: Option<&'static str>,
    /// The path was longer than [`MAX_PATH`] and is cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
}

/// The result of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanResult {
    /// The changes listed one by one, persistence locations first.
    pub changes: Vec<FileChange>,
    /// All changes found, including those not listed.
    pub total: usize,
    /// Changes by category: `created`, `modified`, `deleted`, and each persistence class.
    pub by_category: BTreeMap<&'static str, u64>,
    /// Directory entries examined.
    pub entries: u64,
    /// Whether the scan saw everything (false: it stopped at a bound).
    pub complete: bool,
    /// The bound it stopped at: `entries`, `time` or `depth`.
    pub stopped: Option<&'static str>,
    /// Directories not descended into because they were too deep.
    pub too_deep: u64,
}

impl ScanResult {
    /// The `file.scan` summary record's data.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "total": self.total,
            "listed": self.changes.len(),
            "entries": self.entries,
            "by_category": self.by_category,
            "complete": self.complete,
            "stopped": self.stopped,
            "too_deep": self.too_deep,
        })
    }
}

/// Scans `upper` (an overlay upper dir) against `lowers` (its lower dirs, top first).
/// `path_dirs` are the directories on the job's PATH.
pub fn scan(upper: &Path, lowers: &[PathBuf], path_dirs: &[String]) -> ScanResult {
    scan_bounded(upper, lowers, path_dirs, &ScanLimits::default())
}

/// What the walk collects, within its bounds.
struct Collect<'a> {
    limits: &'a ScanLimits,
    persist: Vec<FileChange>,
    other: Vec<FileChange>,
    r: ScanResult,
}

impl Collect<'_> {
    fn note(&mut self, c: FileChange) {
        self.r.total += 1;
        *self.r.by_category.entry(c.change).or_default() += 1;
        if let Some(p) = c.persistence {
            *self.r.by_category.entry(p).or_default() += 1;
        }
        let full = self.persist.len() + self.other.len() >= self.limits.listed;
        // Persistence first, so a flood of build output cannot push it out of the listing.
        if c.persistence.is_some() {
            if self.persist.len() < self.limits.listed {
                if full {
                    self.other.pop();
                }
                self.persist.push(c);
            }
        } else if !full {
            self.other.push(c);
        }
    }
}

/// One open directory of the walk.
struct Frame {
    it: OwningIter,
    fd: RawFd,
    /// The directory as the job saw it (`""` for `/`).
    path: String,
    /// Whether it exists in a lower layer (if not, nothing below it can).
    in_lower: bool,
    /// Whether its path can make the search-anywhere classification rules match.
    deep: bool,
}

/// [`might_hide`] of a directory's path, for one more component `name`.
fn name_hides(name: &str) -> bool {
    name.starts_with('.')
        || name.contains("git-core")
        || name.contains("actions-runner")
        || name.contains("_diag")
}

fn open_dir(at: Option<RawFd>, name: &std::ffi::CStr) -> Option<(OwningIter, RawFd)> {
    let d = Dir::openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = d.as_raw_fd();
    Some((d.into_iter(), fd))
}

/// Scans within `limits`: a streaming walk (one open directory per level, entries examined
/// relative to their directory's descriptor, never a list of all paths), which lists at most
/// `limits.listed` changes and counts the rest by category.
pub fn scan_bounded(
    upper: &Path,
    lowers: &[PathBuf],
    path_dirs: &[String],
    limits: &ScanLimits,
) -> ScanResult {
    let mut c = Collect {
        limits,
        persist: Vec::new(),
        other: Vec::new(),
        r: ScanResult {
            complete: true,
            ..ScanResult::default()
        },
    };
    let started = Instant::now();
    let Ok(root) = std::ffi::CString::new(upper.as_os_str().as_encoded_bytes()) else {
        return c.r;
    };
    let Some((it, fd)) = open_dir(None, &root) else {
        return c.r;
    };
    let mut stack = vec![Frame {
        it,
        fd,
        path: String::new(),
        in_lower: true,
        deep: false,
    }];
    'walk: while let Some(top) = stack.last_mut() {
        let Some(entry) = top.it.next() else {
            stack.pop();
            continue;
        };
        let Ok(entry) = entry else {
            stack.pop();
            continue;
        };
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        c.r.entries += 1;
        if c.r.entries.is_multiple_of(4096) && started.elapsed() > limits.time {
            c.r.stopped = Some("time");
            break 'walk;
        }
        if c.r.entries > limits.entries {
            c.r.stopped = Some("entries");
            break 'walk;
        }
        let Ok(st) = fstatat(Some(top.fd), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let name_str = name.to_string_lossy();
        let deep = top.deep || name_hides(&name_str);
        let job_path = format!("{}/{}", top.path, name_str);
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        // overlayfs marks a deleted lower file with a 0/0 character device.
        if kind == SFlag::S_IFCHR && st.st_rdev == 0 {
            c.note(FileChange {
                persistence: classify_in(&job_path, path_dirs, deep),
                path: job_path,
                change: "deleted",
                size: 0,
                mode: String::new(),
                path_truncated: false,
            });
            continue;
        }
        let existed = top.in_lower
            && lowers.iter().any(|l| {
                std::fs::symlink_metadata(l.join(job_path.trim_start_matches('/'))).is_ok()
            });
        if kind == SFlag::S_IFDIR {
            // A directory in upper is either new or the copied-up parent of a change; only a
            // new one is a change in itself.
            if !existed {
                c.note(change(&job_path, "created", &st, path_dirs, deep));
            }
            let fd = top.fd;
            if stack.len() >= limits.depth {
                c.r.too_deep += 1;
                c.r.stopped.get_or_insert("depth");
                continue;
            }
            if let Some((it, fd)) = open_dir(Some(fd), name) {
                stack.push(Frame {
                    it,
                    fd,
                    path: job_path,
                    in_lower: existed,
                    deep,
                });
            }
            continue;
        }
        let kind = if existed { "modified" } else { "created" };
        c.note(change(&job_path, kind, &st, path_dirs, deep));
    }
    c.r.complete = c.r.stopped.is_none();
    c.persist.sort_by(|a, b| a.path.cmp(&b.path));
    c.other.sort_by(|a, b| a.path.cmp(&b.path));
    c.r.changes = c.persist;
    c.r.changes.append(&mut c.other);
    c.r
}

fn change(
    path: &str,
    kind: &'static str,
    st: &FileStat,
    path_dirs: &[String],
    deep: bool,
) -> FileChange {
    let mut p = path.to_owned();
    let cut = p.len() > MAX_PATH;
    if cut {
        let mut i = MAX_PATH;
        while !p.is_char_boundary(i) {
            i -= 1;
        }
        p.truncate(i);
    }
    FileChange {
        persistence: classify_in(path, path_dirs, deep),
        path: p,
        change: kind,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mode: format!("{:o}", st.st_mode),
        path_truncated: cut,
    }
}

fn under(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// The persistence location `path` (as the job saw it) is, if any. The table is the list of
/// places that survive a job on a persistent runner, by technique (MITRE ATT&CK T1053 cron,
/// T1543 systemd, T1546.004 shell start-up, T1098.004 SSH keys, T1574.006 ld.so.preload, …).
pub fn classify(path: &str, path_dirs: &[String]) -> Option<&'static str> {
    classify_in(path, path_dirs, might_hide(path))
}

/// Whether a path (or a directory's path) has a component the search-anywhere rules below
/// look for (a dot-directory, `git-core`, `actions-runner`, `_diag`). When a directory has
/// none, none of its entries can match those rules except by their own name: the scan
/// decides this once per directory instead of searching every long path.
fn might_hide(path: &str) -> bool {
    path.contains("/.")
        || path.contains("git-core")
        || path.contains("actions-runner")
        || path.contains("_diag")
}

/// [`classify`], told whether the search-anywhere rules can match (`deep`).
fn classify_in(path: &str, path_dirs: &[String], deep: bool) -> Option<&'static str> {
    let home = HOME;
    let name = path.rsplit('/').next().unwrap_or("");
    // Without building `{home}/{rel}` for every file: the scan calls this for each entry.
    let below_home = path.strip_prefix(home).and_then(|r| r.strip_prefix('/'));
    let in_home = |rel: &str| below_home.is_some_and(|r| under(r, rel));
    if under(path, "/var/spool/cron")
        || under(path, "/etc/crontab")
        || [
            "/etc/cron.d",
            "/etc/cron.hourly",
            "/etc/cron.daily",
            "/etc/cron.weekly",
            "/etc/cron.monthly",
        ]
        .iter()
        .any(|d| under(path, d))
        || under(path, "/var/spool/anacron")
        || under(path, "/etc/anacrontab")
    {
        return Some("crontab");
    }
    if under(path, "/etc/systemd")
        || under(path, "/lib/systemd")
        || under(path, "/usr/lib/systemd")
        || deep && (path.contains("/.config/systemd/") || path.ends_with("/.config/systemd"))
    {
        return Some("systemd-unit");
    }
    if deep && path.contains("/.ssh/") && (name.starts_with("authorized_keys") || name == "rc")
        || under(path, "/etc/ssh")
    {
        return Some("authorized-keys");
    }
    if under(path, "/etc/ld.so.preload")
        || under(path, "/etc/ld.so.conf")
        || under(path, "/etc/ld.so.conf.d")
    {
        return Some("ld-preload");
    }
    if under(path, "/etc/sudoers") || under(path, "/etc/sudoers.d") {
        return Some("sudoers");
    }
    if ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"].contains(&path) {
        return Some("account");
    }
    const RC: &[&str] = &[
        ".bashrc",
        ".bash_profile",
        ".bash_login",
        ".bash_logout",
        ".profile",
        ".zshrc",
        ".zshenv",
        ".zprofile",
        ".zlogin",
        ".config/fish",
        ".pam_environment",
    ];
    if RC.iter().any(|f| in_home(f))
        || path.starts_with("/root/") && RC.iter().any(|f| under(path, &format!("/root/{f}")))
        || [
            "/etc/profile",
            "/etc/profile.d",
            "/etc/bash.bashrc",
            "/etc/environment",
            "/etc/zsh",
        ]
        .iter()
        .any(|d| under(path, d))
    {
        return Some("shell-rc");
    }
    if under(path, "/etc/xdg/autostart")
        || deep && path.contains("/.config/autostart")
        || under(path, "/etc/rc.local")
        || under(path, "/etc/init.d")
        || under(path, "/etc/update-motd.d")
    {
        return Some("autostart");
    }
    let in_ws = under(path, WORKSPACE);
    if !in_ws
        && (deep && path.contains("/.git/hooks/")
            || name == ".gitconfig"
            || path == "/etc/gitconfig"
            || deep && path.contains("/git-core/templates/"))
    {
        return Some("git-hook");
    }
    if !in_ws
        && (deep
            && path
                .split('/')
                .any(|c| c == "actions-runner" || c == "_diag")
            || [
                ".runner",
                ".credentials",
                ".credentials_rsaparams",
                "Runner.Listener",
                "Runner.Worker",
            ]
            .contains(&name))
    {
        return Some("runner-dir");
    }
    // A new or changed program in a directory the job's (or the next job's) shell searches.
    if let Some(parent) = path.rsplit_once('/').map(|(p, _)| p) {
        let parent = if parent.is_empty() { "/" } else { parent };
        if path_dirs.iter().any(|d| d.trim_end_matches('/') == parent) && !in_ws {
            return Some("path-dir");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_dirs() -> Vec<String> {
        [
            "/usr/local/bin",
            "/usr/bin",
            "/bin",
            "/home/runner/.local/bin",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn persistence_locations_are_classified() {
        let cases = [
            ("/var/spool/cron/crontabs/runner", Some("crontab")),
            ("/etc/cron.d/backdoor", Some("crontab")),
            (
                "/home/runner/.config/systemd/user/x.service",
                Some("systemd-unit"),
            ),
            ("/etc/systemd/system/x.service", Some("systemd-unit")),
            ("/home/runner/.bashrc", Some("shell-rc")),
            ("/etc/profile.d/x.sh", Some("shell-rc")),
            ("/home/runner/.ssh/authorized_keys", Some("authorized-keys")),
            ("/etc/ld.so.preload", Some("ld-preload")),
            ("/home/runner/.gitconfig", Some("git-hook")),
            ("/home/runner/other/.git/hooks/pre-commit", Some("git-hook")),
            ("/home/runner/work/repo/.git/hooks/pre-commit", None),
            ("/home/runner/actions-runner/run.sh", Some("runner-dir")),
            ("/usr/local/bin/git", Some("path-dir")),
            ("/home/runner/.local/bin/cargo", Some("path-dir")),
            ("/etc/sudoers.d/runner", Some("sudoers")),
            ("/etc/passwd", Some("account")),
            ("/home/runner/work/target/debug/app", None),
            ("/home/runner/.cargo/registry/cache/x.crate", None),
            ("/tmp/build.log", None),
        ];
        for (p, want) in cases {
            assert_eq!(classify(p, &path_dirs()), want, "{p}");
        }
    }

    #[test]
    fn the_per_directory_shortcut_classifies_like_the_full_rules() {
        let d = tempfile::tempdir().expect("tmp");
        let upper = d.path().join("upper");
        let paths = [
            "home/runner/.ssh/authorized_keys",
            "home/runner/.config/systemd/user/x.service",
            "home/runner/.config/autostart/x.desktop",
            "home/runner/src/.git/hooks/pre-commit",
            "usr/share/git-core/templates/hooks/x",
            "opt/actions-runner/run.sh",
            "opt/x/_diag/log",
            "home/runner/.gitconfig",
            "opt/plain/file",
        ];
        for p in paths {
            let f = upper.join(p);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mk");
            std::fs::write(&f, "x").expect("w");
        }
        let r = scan(&upper, &[], &path_dirs());
        assert!(r.complete);
        for c in &r.changes {
            assert_eq!(c.persistence, classify(&c.path, &path_dirs()), "{}", c.path);
        }
        let classes: Vec<&str> = r.changes.iter().filter_map(|c| c.persistence).collect();
        for want in [
            "authorized-keys",
            "systemd-unit",
            "autostart",
            "git-hook",
            "runner-dir",
        ] {
            assert!(classes.contains(&want), "{want} missing: {classes:?}");
        }
    }

    #[test]
    fn created_modified_and_deleted_are_told_apart() {
        let d = tempfile::tempdir().expect("tmp");
        let (upper, lower) = (d.path().join("upper"), d.path().join("lower"));
        std::fs::create_dir_all(lower.join("home/runner")).expect("mk");
        std::fs::write(lower.join("home/runner/.bashrc"), "x").expect("w");
        std::fs::write(lower.join("home/runner/gone"), "x").expect("w");
        std::fs::create_dir_all(upper.join("home/runner/.ssh")).expect("mk");
        std::fs::write(upper.join("home/runner/.bashrc"), "evil").expect("w");
        std::fs::write(upper.join("home/runner/.ssh/authorized_keys"), "k").expect("w");
        nix::sys::stat::mknod(
            &upper.join("home/runner/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .ok();
        let r = scan(&upper, &[lower], &path_dirs());
        let by = |p: &str| r.changes.iter().find(|c| c.path == p).cloned();
        let rc = by("/home/runner/.bashrc").expect("bashrc");
        assert_eq!((rc.change, rc.persistence), ("modified", Some("shell-rc")));
        assert_eq!(rc.size, 4);
        let k = by("/home/runner/.ssh/authorized_keys").expect("keys");
        assert_eq!(
            (k.change, k.persistence),
            ("created", Some("authorized-keys"))
        );
        assert!(by("/home/runner/.ssh").is_some_and(|c| c.change == "created"));
        assert!(
            by("/home/runner").is_none(),
            "a copied-up parent is not a change"
        );
        if nix::unistd::geteuid().is_root() {
            assert_eq!(by("/home/runner/gone").map(|c| c.change), Some("deleted"));
        }
        assert!(r.changes[0].persistence.is_some(), "persistence first");
    }

    #[test]
    fn a_flood_of_files_is_counted_in_bounded_memory_and_persistence_stays_listed() {
        let d = tempfile::tempdir().expect("tmp");
        let upper = d.path().join("upper");
        let deep = upper
            .join("tmp/flood")
            .join("d".repeat(200))
            .join("e".repeat(200));
        let n = 200_000;
        for b in 0..(n / 1000) {
            let dir = deep.join(format!("{b:04}"));
            std::fs::create_dir_all(&dir).expect("mk");
            for i in 0..1000 {
                std::fs::File::create(dir.join(format!("{i:04}-{}", "f".repeat(60)))).expect("f");
            }
        }
        std::fs::create_dir_all(upper.join("etc/cron.d")).expect("mk");
        std::fs::write(upper.join("etc/cron.d/zz-backdoor"), "* * * * * x").expect("w");
        let limits = ScanLimits {
            listed: 100,
            ..ScanLimits::default()
        };
        let r = scan_bounded(&upper, &[], &path_dirs(), &limits);
        assert!(r.complete, "{:?}", r.stopped);
        assert_eq!(r.changes.len(), 100);
        assert!(r.total > n, "{}", r.total);
        assert!(r.by_category["created"] > n as u64);
        assert_eq!(
            r.by_category.get("crontab"),
            Some(&2),
            "{:?}",
            r.by_category
        );
        assert_eq!(r.changes[0].path, "/etc/cron.d", "persistence first");
        assert!(r
            .changes
            .iter()
            .any(|c| c.path == "/etc/cron.d/zz-backdoor"));
        let summary = r.summary();
        assert_eq!(summary["listed"], 100);
        // Bounds hold: a scan told to stop early says so.
        let r = scan_bounded(
            &upper,
            &[],
            &path_dirs(),
            &ScanLimits {
                entries: 1000,
                ..limits.clone()
            },
        );
        assert_eq!((r.complete, r.stopped), (false, Some("entries")));
        let r = scan_bounded(
            &upper,
            &[],
            &path_dirs(),
            &ScanLimits { depth: 2, ..limits },
        );
        assert_eq!((r.complete, r.stopped), (false, Some("depth")));
        assert!(r.too_deep > 0);
    }
}
