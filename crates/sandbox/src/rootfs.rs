//! The job's root filesystem: a fresh overlay per job, on a size-limited tmpfs.
//!
//! ```text
//! STATE/base/KEY     synthesized base: /etc, /home/runner, /tmp, mountpoints; shared by all
//!                    `host` jobs of one user (read-only layer)
//! JOB/mnt            tmpfs, size = limits.disk: the whole writable budget of the job
//! JOB/mnt/job        the job's own /etc/hostname, hosts, resolv.conf (for images: the base too)
//! JOB/mnt/ws         the workspace copy (read-only layer; the job's changes go to upper)
//! JOB/mnt/upper      everything the job writes; scanned, then discarded at teardown
//! JOB/rootfs         overlay(lower = ws:job:base or ws:job:image, upper) = the job's `/`
//! ```
//! Host paths enter only as read-only bind mounts named in the OCI spec (`/usr`, CA
//! certificates). Putting `/tmp` and `/home/runner` inside the overlay (not separate tmpfs
//! mounts) makes every write of the job land in one upper dir under one size limit.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::SandboxError;
use crate::plan::{JobPlan, RootfsPlan, HOME, WORKSPACE};
use crate::spec::HostLayout;

/// The overlay's lower dirs (JSON list, top first), in the job dir.
pub const LOWERS_FILE: &str = "lowers.json";

/// Mount points and paths of one job's rootfs.
#[derive(Debug, Clone)]
pub struct RootfsDirs {
    /// The size-limited tmpfs.
    pub mnt: PathBuf,
    /// The overlay's merged view, the job's `/`.
    pub rootfs: PathBuf,
}

impl RootfsDirs {
    /// Paths of the job rooted at `job_dir`.
    pub fn new(job_dir: &Path) -> Self {
        Self {
            mnt: job_dir.join("mnt"),
            rootfs: job_dir.join("rootfs"),
        }
    }
    /// The overlay's upper dir: what the job wrote.
    pub fn upper(&self) -> PathBuf {
        self.mnt.join("upper")
    }
}

fn mkdir(p: &Path, mode: u32) -> Result<(), SandboxError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(SandboxError::io("creating directory", p))?;
    // DirBuilder's mode is filtered by the umask; set it exactly.
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(SandboxError::io("setting permissions of", p))
}

fn write(p: &Path, content: &str) -> Result<(), SandboxError> {
    std::fs::write(p, content).map_err(SandboxError::io("writing", p))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
        .map_err(SandboxError::io("setting permissions of", p))
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), SandboxError> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(SandboxError::io("chown", p))
}

/// Creates the job's tmpfs, base layer, workspace copy and overlay. For `host` jobs the base
/// layer is shared: built once per (job user, host layout) under `base_cache` and reused
/// read-only by every job, which only adds its own `/etc/hostname` and `/etc/hosts`.
pub fn prepare(
    job_dir: &Path,
    plan: &JobPlan,
    host: &HostLayout,
    base_cache: &Path,
    resolver: Option<std::net::Ipv4Addr>,
) -> Result<RootfsDirs, SandboxError> {
    if let RootfsPlan::Image { digest, dir } = &plan.rootfs {
        check_image_rootfs(digest, dir)?;
    }
    let d = RootfsDirs::new(job_dir);
    mkdir(&d.mnt, 0o700)?;
    mkdir(&d.rootfs, 0o755)?;
    let opts = format!("size={},mode=0755,uid=0,gid=0", plan.limits.disk.0);
    mount(
        Some("airlock-job"),
        &d.mnt,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(SandboxError::sys(format!(
        "mounting the job's tmpfs on {}",
        d.mnt.display()
    )))?;

    let job_layer = d.mnt.join("job");
    let mut lowers = vec![];
    if let Some(ws) = &plan.workspace {
        let ws_layer = d.mnt.join("ws");
        let target = ws_layer.join(WORKSPACE.trim_start_matches('/'));
        mkdir(&target, 0o755)?;
        chown(&target, plan.user.uid, plan.user.gid)?;
        // This layer lies above the base: its copy of the home directory hides the base's, so
        // it must be the job user's too, or $HOME becomes read-only for the job.
        chown(
            &ws_layer.join(HOME.trim_start_matches('/')),
            plan.user.uid,
            plan.user.gid,
        )?;
        copy_workspace(
            ws,
            &target,
            plan.user.uid,
            plan.user.gid,
            plan.limits.disk.0,
        )?;
        lowers.push(ws_layer);
    }
    match &plan.rootfs {
        RootfsPlan::Host => {
            let base = cached_host_base(base_cache, plan, host)?;
            write_job_etc(&job_layer, plan, resolver)?;
            lowers.push(job_layer);
            lowers.push(base);
        }
        RootfsPlan::Image { dir, .. } => {
            build_base(&job_layer, plan, host)?;
            write_job_etc(&job_layer, plan, resolver)?;
            lowers.push(job_layer);
            lowers.push(dir.clone());
        }
    }
    // Kept for the teardown scan, which tells a created file from a changed one.
    let lp = job_dir.join(LOWERS_FILE);
    std::fs::write(
        &lp,
        serde_json::to_vec(&lowers).map_err(|e| SandboxError::io("encoding", &lp)(e.into()))?,
    )
    .map_err(SandboxError::io("writing", &lp))?;
    let upper = d.upper();
    let work = d.mnt.join("work");
    mkdir(&upper, 0o755)?;
    mkdir(&work, 0o700)?;
    let lowerdir = lowers
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("airlock-rootfs"),
        &d.rootfs,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(SandboxError::sys(format!(
        "mounting the job's overlay on {}",
        d.rootfs.display()
    )))?;
    Ok(d)
}

/// Fails closed when an image's unpacked rootfs is gone from the store (deleted by hand, a
/// store restored without it): the overlay would otherwise be mounted without its image
/// layer, or fail with a bare ENOENT that names no image.
fn check_image_rootfs(digest: &str, dir: &Path) -> Result<(), SandboxError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(image_rootfs_unavailable(digest, dir, "is not a directory")),
        Err(e) => Err(image_rootfs_unavailable(digest, dir, &e.to_string())),
    }
}

fn image_rootfs_unavailable(digest: &str, dir: &Path, why: &str) -> SandboxError {
    SandboxError::ProtectionUnavailable {
        protection: "image rootfs".to_owned(),
        reason: format!(
            "the unpacked rootfs {} of image {digest} is incomplete ({why}); remove the image and import it again",
            dir.display()
        ),
    }
}

/// The files that differ between jobs: `/etc/hostname`, `/etc/hosts`, and `/etc/resolv.conf`
/// pointing at the job's gateway when it has a network.
pub fn write_job_etc(
    layer: &Path,
    plan: &JobPlan,
    resolver: Option<std::net::Ipv4Addr>,
) -> Result<(), SandboxError> {
    let etc = layer.join("etc");
    mkdir(&etc, 0o755)?;
    let hostname = format!("airlock-{}", &plan.id.as_str()[1..9]);
    write(&etc.join("hostname"), &format!("{hostname}\n"))?;
    if let Some(r) = resolver {
        write(
            &etc.join("resolv.conf"),
            &format!("nameserver {r}\noptions ndots:0 attempts:2 timeout:2\n"),
        )?;
    }
    write(
        &etc.join("hosts"),
        &format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
    )
}

/// The shared host base layer for this job's user, built on first use. The key covers
/// everything the layer is made from (the job user, the host's top-level layout, and the
/// modification times of the host files copied in), so a changed host gets a new layer.
fn cached_host_base(
    cache: &Path,
    plan: &JobPlan,
    host: &HostLayout,
) -> Result<PathBuf, SandboxError> {
    use sha2::Digest;
    let mtime = |p: &str| {
        std::fs::symlink_metadata(p)
            .map(|m| (m.mtime(), m.mtime_nsec()))
            .unwrap_or((0, 0))
    };
    let key_src = format!(
        "v1|{:?}|{:?}|{:?}|{:?}|{:?}",
        plan.user,
        host,
        mtime("/etc/ld.so.cache"),
        mtime("/etc/alternatives"),
        mtime("/etc/localtime"),
    );
    let key: String = sha2::Sha256::digest(key_src.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache.join(&key);
    if dir.is_dir() {
        return Ok(dir);
    }
    mkdir(cache, 0o700)?;
    let tmp = cache.join(format!(".{key}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    build_base(&tmp, plan, host)?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another job built it first: use theirs.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(SandboxError::io("storing base layer", &dir)(e)),
    }
}

/// The synthesized base layer: the only `/etc` a job sees, its home, and the mountpoints the
/// OCI spec needs.
pub fn build_base(lower: &Path, plan: &JobPlan, host: &HostLayout) -> Result<(), SandboxError> {
    let u = &plan.user;
    mkdir(lower, 0o755)?;
    for dir in ["etc", "proc", "sys", "dev", "run", "home", "var"] {
        mkdir(&lower.join(dir), 0o755)?;
    }
    mkdir(&lower.join("tmp"), 0o1777)?;
    mkdir(&lower.join("var/tmp"), 0o1777)?;
    let home = lower.join(HOME.trim_start_matches('/'));
    let work = lower.join(WORKSPACE.trim_start_matches('/'));
    mkdir(&work, 0o755)?;
    chown(&home, u.uid, u.gid)?;
    chown(&work, u.uid, u.gid)?;

    let etc = lower.join("etc");
    // Jobs with a network get their gateway as resolver in their own layer; this default (for
    // `egress.mode = "none"`) points at nothing, and never at the host's resolver.
    write(
        &etc.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions ndots:0\n",
    )?;
    write(
        &etc.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
    )?;
    let (passwd, group) = match &plan.rootfs {
        RootfsPlan::Host => (
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n{n}:x:{uid}:{gid}:airlock job user:{HOME}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                n = u.name, uid = u.uid, gid = u.gid
            ),
            format!("root:x:0:\n{n}:x:{gid}:\nnogroup:x:65534:\n", n = u.name, gid = u.gid),
        ),
        RootfsPlan::Image { dir, .. } => {
            // Keep the image's own users and add the job user if it is missing. Read inside the
            // image: its `etc/passwd` may be a symlink meant for the job's `/`, not the host's.
            let mut p = crate::image::read_in_image(dir, "etc/passwd").unwrap_or_default();
            let mut g = crate::image::read_in_image(dir, "etc/group").unwrap_or_default();
            if !p.lines().any(|l| l.split(':').nth(2) == Some(&u.uid.to_string())) {
                if !p.is_empty() && !p.ends_with('\n') {
                    p.push('\n');
                }
                p.push_str(&format!("{}:x:{}:{}::{HOME}:/bin/sh\n", u.name, u.uid, u.gid));
            }
            if !g.lines().any(|l| l.split(':').nth(2) == Some(&u.gid.to_string())) {
                if !g.is_empty() && !g.ends_with('\n') {
                    g.push('\n');
                }
                g.push_str(&format!("{}:x:{}:\n", u.name, u.gid));
            }
            (p, g)
        }
    };
    write(&etc.join("passwd"), &passwd)?;
    write(&etc.join("group"), &group)?;

    if plan.rootfs == RootfsPlan::Host {
        mkdir(&lower.join("usr"), 0o755)?;
        for (name, target) in &host.symlinks {
            let p = lower.join(name);
            std::os::unix::fs::symlink(target, &p).map_err(SandboxError::io("symlinking", &p))?;
        }
        for name in &host.dirs {
            mkdir(&lower.join(name), 0o755)?;
        }
        mkdir(&etc.join("ssl/certs"), 0o755)?;
        // Non-secret files that programs from /usr expect; symlinks are recreated as they
        // are (they point into /usr), regular files are copied.
        for name in [
            "ld.so.cache",
            "localtime",
            "os-release",
            "ld.so.conf",
            "mime.types",
        ] {
            copy_host_etc(&etc, name)?;
        }
        copy_host_alternatives(&etc)?;
    }
    Ok(())
}

fn copy_host_etc(etc: &Path, name: &str) -> Result<(), SandboxError> {
    let src = Path::new("/etc").join(name);
    let dst = etc.join(name);
    match std::fs::symlink_metadata(&src) {
        Ok(m) if m.file_type().is_symlink() => {
            let t = std::fs::read_link(&src).map_err(SandboxError::io("reading link", &src))?;
            std::os::unix::fs::symlink(t, &dst).map_err(SandboxError::io("symlinking", &dst))
        }
        Ok(m) if m.is_file() && m.len() < (1 << 20) => {
            std::fs::copy(&src, &dst).map_err(SandboxError::io("copying", &src))?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644))
                .map_err(SandboxError::io("setting permissions of", &dst))
        }
        _ => Ok(()),
    }
}

/// Debian's `/etc/alternatives` holds the symlinks behind `/usr/bin/awk` and friends; they
/// point back into `/usr`, so recreating them reveals nothing.
fn copy_host_alternatives(etc: &Path) -> Result<(), SandboxError> {
    let src = Path::new("/etc/alternatives");
    let Ok(rd) = std::fs::read_dir(src) else {
        return Ok(());
    };
    let dst = etc.join("alternatives");
    mkdir(&dst, 0o755)?;
    for e in rd.flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            if t.starts_with("/usr") {
                let d = dst.join(e.file_name());
                std::os::unix::fs::symlink(t, &d).map_err(SandboxError::io("symlinking", &d))?;
            }
        }
    }
    Ok(())
}

/// Copies the workspace into the job's layer, owned by the job user. Device nodes, sockets
/// and fifos are skipped: a workspace must not smuggle a device into the sandbox.
fn copy_workspace(
    src: &Path,
    dst: &Path,
    uid: u32,
    gid: u32,
    limit: u64,
) -> Result<(), SandboxError> {
    let total = tree_size(src)?;
    if total > limit {
        return Err(SandboxError::WorkspaceTooLarge {
            path: src.to_owned(),
            limit,
        });
    }
    copy_tree(src, dst, uid, gid)
}

fn tree_size(p: &Path) -> Result<u64, SandboxError> {
    let m = std::fs::symlink_metadata(p).map_err(SandboxError::io("reading workspace", p))?;
    if !m.is_dir() {
        return Ok(m.len());
    }
    let mut n = 4096;
    for e in std::fs::read_dir(p).map_err(SandboxError::io("reading workspace", p))? {
        let e = e.map_err(SandboxError::io("reading workspace", p))?;
        n += tree_size(&e.path())?;
    }
    Ok(n)
}

fn copy_tree(src: &Path, dst: &Path, uid: u32, gid: u32) -> Result<(), SandboxError> {
    for e in std::fs::read_dir(src).map_err(SandboxError::io("reading workspace", src))? {
        let e = e.map_err(SandboxError::io("reading workspace", src))?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let m = std::fs::symlink_metadata(&from).map_err(SandboxError::io("reading", &from))?;
        let ft = m.file_type();
        if ft.is_symlink() {
            let t = std::fs::read_link(&from).map_err(SandboxError::io("reading link", &from))?;
            std::os::unix::fs::symlink(t, &to).map_err(SandboxError::io("symlinking", &to))?;
        } else if ft.is_dir() {
            mkdir(&to, m.mode() & 0o777)?;
            copy_tree(&from, &to, uid, gid)?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to).map_err(SandboxError::io("copying", &from))?;
            // No setuid/setgid bits: the copy belongs to the job user.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(m.mode() & 0o777))
                .map_err(SandboxError::io("setting permissions of", &to))?;
        } else {
            continue;
        }
        chown(&to, uid, gid)?;
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(n) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything under the job dir and removes it. Every failure is collected; the
/// directory is removed only once nothing is mounted below it, so a failed unmount can never
/// turn into deleting files through a mount.
pub fn teardown(job_dir: &Path, errors: &mut Vec<String>) {
    for m in mounts_under(job_dir) {
        if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
            errors.push(format!("unmounting {}: {e}", m.display()));
        }
    }
    let left = mounts_under(job_dir);
    if !left.is_empty() {
        errors.push(format!(
            "still mounted, not removing {}: {:?}",
            job_dir.display(),
            left
        ));
        return;
    }
    match std::fs::remove_dir_all(job_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("removing {}: {e}", job_dir.display())),
    }
}
