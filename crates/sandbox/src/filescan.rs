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

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::plan::{HOME, WORKSPACE};

/// At most this many changes are reported one by one; the rest is counted.
pub const MAX_EVENTS: usize = 20_000;

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
}

/// The result of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanResult {
    /// The changes, up to [`MAX_EVENTS`], persistence locations first.
    pub changes: Vec<FileChange>,
    /// All changes, including those not listed.
    pub total: usize,
}

/// Scans `upper` (an overlay upper dir) against `lowers` (its lower dirs, top first).
/// `path_dirs` are the directories on the job's PATH.
pub fn scan(upper: &Path, lowers: &[PathBuf], path_dirs: &[String]) -> ScanResult {
    let mut all = Vec::new();
    walk(upper, upper, lowers, path_dirs, &mut all);
    let total = all.len();
    // Persistence first, so a flood of build output cannot push it past the limit.
    all.sort_by_key(|c| (c.persistence.is_none(), c.path.clone()));
    all.truncate(MAX_EVENTS);
    ScanResult {
        changes: all,
        total,
    }
}

fn walk(
    dir: &Path,
    upper: &Path,
    lowers: &[PathBuf],
    path_dirs: &[String],
    out: &mut Vec<FileChange>,
) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let Ok(rel) = p.strip_prefix(upper) else {
            continue;
        };
        let job_path = format!("/{}", rel.to_string_lossy());
        let ft = md.file_type();
        // overlayfs marks a deleted lower file with a 0/0 character device.
        if ft.is_char_device() && md.rdev() == 0 {
            out.push(FileChange {
                persistence: classify(&job_path, path_dirs),
                path: job_path,
                change: "deleted",
                size: 0,
                mode: String::new(),
            });
            continue;
        }
        let existed = lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok());
        if ft.is_dir() {
            // A directory in upper is either new or the copied-up parent of a change; only a
            // new one is a change in itself.
            if !existed {
                out.push(change(&job_path, "created", &md, path_dirs));
            }
            walk(&p, upper, lowers, path_dirs, out);
            continue;
        }
        let kind = if existed { "modified" } else { "created" };
        out.push(change(&job_path, kind, &md, path_dirs));
    }
}

fn change(
    path: &str,
    kind: &'static str,
    md: &std::fs::Metadata,
    path_dirs: &[String],
) -> FileChange {
    FileChange {
        path: path.to_owned(),
        change: kind,
        size: md.len(),
        mode: format!("{:o}", md.mode()),
        persistence: classify(path, path_dirs),
    }
}

fn under(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// The persistence location `path` (as the job saw it) is, if any. The table is the list of
/// places that survive a job on a persistent runner, by technique (MITRE ATT&CK T1053 cron,
/// T1543 systemd, T1546.004 shell start-up, T1098.004 SSH keys, T1574.006 ld.so.preload, …).
pub fn classify(path: &str, path_dirs: &[String]) -> Option<&'static str> {
    let home = HOME;
    let name = path.rsplit('/').next().unwrap_or("");
    let in_home = |rel: &str| under(path, &format!("{home}/{rel}"));
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
        || path.contains("/.config/systemd/")
        || path.ends_with("/.config/systemd")
    {
        return Some("systemd-unit");
    }
    if path.contains("/.ssh/") && (name.starts_with("authorized_keys") || name == "rc")
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
        || path.contains("/.config/autostart")
        || under(path, "/etc/rc.local")
        || under(path, "/etc/init.d")
        || under(path, "/etc/update-motd.d")
    {
        return Some("autostart");
    }
    let in_ws = under(path, WORKSPACE);
    if !in_ws
        && (path.contains("/.git/hooks/")
            || name == ".gitconfig"
            || path == "/etc/gitconfig"
            || path.contains("/git-core/templates/"))
    {
        return Some("git-hook");
    }
    if !in_ws
        && (path
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
}
