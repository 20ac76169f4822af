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

use airlock_audit::{TeardownFailure, TeardownStep};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
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
    if let RootfsPlan::Shared { dir } = &plan.rootfs {
        // The owner's live root, bound (not copied): what one step writes the next one sees.
        mkdir(&d.rootfs, 0o755)?;
        mount(
            Some(dir.as_path()),
            &d.rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(SandboxError::sys(format!(
            "binding the shared root {} on {}",
            dir.display(),
            d.rootfs.display()
        )))?;
        return Ok(d);
    }
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
    let mut lowers = vec![];
    if let Some(ws) = &plan.workspace {
        lowers.push(workspace_layer(&d, ws, plan)?);
    }
    let job_layer = d.mnt.join("job");
    let base = match &plan.rootfs {
        RootfsPlan::Host => cached_host_base(base_cache, plan, host)?,
        RootfsPlan::Image { dir, .. } => {
            build_base(&job_layer, plan, host)?;
            dir.clone()
        }
        RootfsPlan::Shared { .. } => unreachable!("returned above"),
    };
    write_job_etc(&job_layer, plan, resolver)?;
    lowers.push(job_layer);
    lowers.push(base);
    // Kept for the teardown scan, which tells a created file from a changed one.
    let lp = job_dir.join(LOWERS_FILE);
    std::fs::write(
        &lp,
        serde_json::to_vec(&lowers).map_err(|e| SandboxError::io("encoding", &lp)(e.into()))?,
    )
    .map_err(SandboxError::io("writing", &lp))?;
    mount_overlay(&d, &lowers)?;
    Ok(d)
}

/// The workspace's layer: the copy at `WORKSPACE`, owned by the job user.
fn workspace_layer(d: &RootfsDirs, ws: &Path, plan: &JobPlan) -> Result<PathBuf, SandboxError> {
    let ws_layer = d.mnt.join("ws");
    let target = ws_layer.join(WORKSPACE.trim_start_matches('/'));
    mkdir(&target, 0o755)?;
    chown(&target, plan.user.uid, plan.user.gid)?;
    // This layer lies above the base: its copy of the home directory hides the base's, so it
    // must be the job user's too, or $HOME becomes read-only for the job.
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
    Ok(ws_layer)
}

/// The job's root: `lowers` read-only (first on top), the writable upper on the job's tmpfs.
fn mount_overlay(d: &RootfsDirs, lowers: &[PathBuf]) -> Result<(), SandboxError> {
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
    )))
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
    let mut hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    // A job's services share its network namespace: each is on loopback by its name.
    for h in &plan.hosts {
        hosts.push_str(&format!("127.0.0.1\t{h}\n"));
    }
    write(&etc.join("hosts"), &hosts)
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
    let (passwd, group) = users(plan);
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

/// The job's `/etc/passwd` and `/etc/group`: root, the job user and nobody on a host rootfs;
/// an image's own, with the job user added when missing.
fn users(plan: &JobPlan) -> (String, String) {
    let u = &plan.user;
    match &plan.rootfs {
        RootfsPlan::Host => (
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n{n}:x:{uid}:{gid}:airlock job user:{HOME}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                n = u.name, uid = u.uid, gid = u.gid
            ),
            format!("root:x:0:\n{n}:x:{gid}:\nnogroup:x:65534:\n", n = u.name, gid = u.gid),
        ),
        RootfsPlan::Image { dir, .. } | RootfsPlan::Shared { dir } => {
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
    }
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

/// Deepest directory nesting copied from a workspace; deeper refuses the job. Each level holds
/// two descriptors (source and copy) while its subtree is copied.
pub const WORKSPACE_MAX_DEPTH: usize = 128;
/// Most entries (files, directories, symlinks, skipped specials) copied from a workspace; more
/// refuses the job. Every entry is an inode on the job's tmpfs, which its size limit does not
/// count.
pub const WORKSPACE_MAX_ENTRIES: u64 = 1_000_000;
/// What a directory costs against `limits.disk` besides its entries.
const DIR_COST: u64 = 4096;

/// Copies the workspace into the job's layer, owned by the job user, without ever following a
/// symlink inside it. Whoever can write inside the workspace may change it during the copy
/// (swap an entry for a symlink to a host file with `renameat2(RENAME_EXCHANGE)`): so every
/// entry is opened relative to its parent's descriptor with `openat2(RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS)`, its type is taken from `fstat` of that descriptor, and what is
/// copied is read from it. Symlinks are copied as symlinks; device nodes, sockets and fifos
/// are skipped, never opened. An entry that changes between the two opens is skipped.
/// The size is counted as the copy goes (no separate walk a racer could fool), against
/// `limit`, with [`WORKSPACE_MAX_DEPTH`] and [`WORKSPACE_MAX_ENTRIES`].
pub(crate) fn copy_workspace(
    src: &Path,
    dst: &Path,
    uid: u32,
    gid: u32,
    limit: u64,
) -> Result<(), SandboxError> {
    copy_workspace_bounded(
        src,
        dst,
        (uid, gid),
        limit,
        (WORKSPACE_MAX_DEPTH, WORKSPACE_MAX_ENTRIES),
    )
}

fn copy_workspace_bounded(
    src: &Path,
    dst: &Path,
    (uid, gid): (u32, u32),
    limit: u64,
    (max_depth, max_entries): (usize, u64),
) -> Result<(), SandboxError> {
    use nix::fcntl::OFlag;
    // The workspace directory itself is the operator's choice: its own path may go through
    // symlinks. Nothing below it is followed.
    let src_fd = open_fd(
        None,
        src,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
    )
    .map_err(|e| SandboxError::io("opening workspace", src)(e.into()))?;
    let dst_fd = open_fd(
        None,
        dst,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
    )
    .map_err(|e| SandboxError::io("opening", dst)(e.into()))?;
    let mut c = WsCopy {
        root: src,
        uid,
        gid,
        limit,
        max_depth,
        max_entries,
        used: DIR_COST,
        entries: 0,
        skipped: Vec::new(),
        skipped_count: 0,
    };
    c.dir(src_fd, &dst_fd, Path::new(""), 0)?;
    if c.skipped_count > 0 {
        tracing::warn!(
            workspace = %src.display(),
            skipped = c.skipped_count,
            first = ?c.skipped,
            "workspace entries not copied (special files, or changed during the copy)"
        );
    }
    Ok(())
}

fn open_fd(
    dir: Option<std::os::fd::RawFd>,
    p: &Path,
    flags: nix::fcntl::OFlag,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = nix::fcntl::openat(
        dir,
        p,
        flags,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    // SAFETY: `openat` just returned this descriptor; nothing else owns or closes it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `name` in the directory `parent`, never through a symlink or a magic link, never outside.
fn open_beneath(
    parent: std::os::fd::RawFd,
    name: &std::ffi::OsStr,
    flags: nix::fcntl::OFlag,
) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    use std::os::fd::FromRawFd;
    let how = OpenHow::new()
        .flags(flags | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = nix::fcntl::openat2(parent, name, how)?;
    // SAFETY: `openat2` just returned this descriptor; nothing else owns or closes it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// One workspace copy in progress.
struct WsCopy<'a> {
    root: &'a Path,
    uid: u32,
    gid: u32,
    limit: u64,
    max_depth: usize,
    max_entries: u64,
    used: u64,
    entries: u64,
    /// The first few entries not copied, for the warning.
    skipped: Vec<String>,
    skipped_count: u64,
}

impl WsCopy<'_> {
    fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn err(&self, rel: &Path, what: &'static str) -> impl FnOnce(nix::Error) -> SandboxError {
        let path = self.path(rel);
        move |e| SandboxError::io(what, path)(e.into())
    }

    fn charge(&mut self, bytes: u64) -> Result<(), SandboxError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(SandboxError::WorkspaceTooLarge {
                path: self.root.to_owned(),
                limit: self.limit,
            });
        }
        Ok(())
    }

    fn skip(&mut self, rel: &Path, why: &str) {
        self.skipped_count += 1;
        if self.skipped.len() < 8 {
            self.skipped.push(format!("{} ({why})", rel.display()));
        }
    }

    /// Copies the entries of the directory `src` into `dst`.
    fn dir(
        &mut self,
        src: std::os::fd::OwnedFd,
        dst: &std::os::fd::OwnedFd,
        rel: &Path,
        depth: usize,
    ) -> Result<(), SandboxError> {
        use std::os::fd::{AsRawFd, IntoRawFd};
        use std::os::unix::ffi::OsStrExt;
        let mut dir =
            nix::dir::Dir::from_fd(src.into_raw_fd()).map_err(self.err(rel, "reading"))?;
        let mut names = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(self.err(rel, "reading"))?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            self.entries += 1;
            if self.entries > self.max_entries {
                return Err(SandboxError::Workspace {
                    path: self.root.to_owned(),
                    reason: format!(
                        "more than {} entries; shrink the workspace",
                        self.max_entries
                    ),
                });
            }
            names.push(std::ffi::OsStr::from_bytes(name).to_owned());
        }
        for name in names {
            self.entry(dir.as_raw_fd(), dst, &name, &rel.join(&name), depth)?;
        }
        Ok(())
    }

    /// Copies one entry of the directory `parent` into `dst`, by descriptor only: opened
    /// `O_PATH` beneath `parent`, judged by `fstat` of that descriptor, reopened for reading
    /// only if it is still the same object.
    fn entry(
        &mut self,
        parent: RawFd,
        dst: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        depth: usize,
    ) -> Result<(), SandboxError> {
        use nix::fcntl::OFlag;
        use nix::sys::stat::{fstat, SFlag};
        // O_PATH opens nothing: no device is touched, no fifo blocks; a symlink is itself.
        let p = match open_beneath(parent, name, OFlag::O_PATH) {
            Ok(p) => p,
            Err(nix::errno::Errno::ENOENT) => {
                self.skip(rel, "removed during the copy");
                return Ok(());
            }
            Err(e) => return Err(self.err(rel, "opening")(e)),
        };
        let st = fstat(p.as_raw_fd()).map_err(self.err(rel, "reading"))?;
        let e = Entry {
            parent,
            name,
            rel,
            st,
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            self.copy_link(&p, dst, &e)
        } else if kind == SFlag::S_IFDIR {
            self.copy_dir(dst, &e, depth)
        } else if kind == SFlag::S_IFREG {
            self.copy_file(dst, &e)
        } else {
            // Device nodes, sockets and fifos: a workspace must not smuggle a device into the
            // sandbox, and opening a fifo would block the copy.
            self.skip(rel, "not a regular file, directory or symlink");
            Ok(())
        }
    }

    fn owner(&self) -> (Option<nix::unistd::Uid>, Option<nix::unistd::Gid>) {
        (
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )
    }

    /// The link the O_PATH descriptor `p` holds, whatever the name points at now.
    fn copy_link(&mut self, p: &OwnedFd, dst: &OwnedFd, e: &Entry) -> Result<(), SandboxError> {
        let (uid, gid) = self.owner();
        let target = nix::fcntl::readlinkat(Some(p.as_raw_fd()), "")
            .map_err(self.err(e.rel, "reading link"))?;
        self.charge(target.len() as u64)?;
        nix::unistd::symlinkat(target.as_os_str(), Some(dst.as_raw_fd()), e.name)
            .map_err(self.err(e.rel, "symlinking"))?;
        nix::unistd::fchownat(
            Some(dst.as_raw_fd()),
            e.name,
            uid,
            gid,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(self.err(e.rel, "chown"))
    }

    fn copy_dir(&mut self, dst: &OwnedFd, e: &Entry, depth: usize) -> Result<(), SandboxError> {
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        let (uid, gid) = self.owner();
        if depth + 1 > self.max_depth {
            return Err(SandboxError::Workspace {
                path: self.root.to_owned(),
                reason: format!(
                    "{} is nested deeper than {} directories",
                    e.rel.display(),
                    self.max_depth
                ),
            });
        }
        let Some(d) = e
            .reopen(OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(self.err(e.rel, "opening"))?
        else {
            self.skip(e.rel, "changed during the copy");
            return Ok(());
        };
        self.charge(DIR_COST)?;
        nix::sys::stat::mkdirat(Some(dst.as_raw_fd()), e.name, Mode::S_IRWXU)
            .map_err(self.err(e.rel, "creating directory for"))?;
        let nd = open_fd(
            Some(dst.as_raw_fd()),
            Path::new(e.name),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        )
        .map_err(self.err(e.rel, "opening the copy of"))?;
        self.dir(d, &nd, e.rel, depth + 1)?;
        nix::unistd::fchown(nd.as_raw_fd(), uid, gid).map_err(self.err(e.rel, "chown"))?;
        nix::sys::stat::fchmod(nd.as_raw_fd(), e.mode()).map_err(self.err(e.rel, "chmod"))
    }

    fn copy_file(&mut self, dst: &OwnedFd, e: &Entry) -> Result<(), SandboxError> {
        use nix::fcntl::OFlag;
        let (uid, gid) = self.owner();
        let Some(f) = e
            .reopen(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
            .map_err(self.err(e.rel, "opening"))?
        else {
            self.skip(e.rel, "changed during the copy");
            return Ok(());
        };
        let out = open_fd(
            Some(dst.as_raw_fd()),
            Path::new(e.name),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        )
        .map_err(self.err(e.rel, "creating the copy of"))?;
        let (src, mut out) = (std::fs::File::from(f), std::fs::File::from(out));
        // One byte more than the room left: a file that grows past it is caught.
        let room = self.limit.saturating_sub(self.used);
        let n = match std::io::copy(&mut std::io::Read::take(&src, room + 1), &mut out) {
            Ok(n) => n,
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => u64::MAX,
            Err(err) => return Err(SandboxError::io("copying", self.path(e.rel))(err)),
        };
        self.charge(n)?;
        // No setuid/setgid bits: the copy belongs to the job user.
        nix::unistd::fchown(out.as_raw_fd(), uid, gid).map_err(self.err(e.rel, "chown"))?;
        nix::sys::stat::fchmod(out.as_raw_fd(), e.mode()).map_err(self.err(e.rel, "chmod"))
    }
}

/// One workspace entry being copied: where it is, and what `fstat` of its `O_PATH`
/// descriptor said it was.
struct Entry<'a> {
    parent: RawFd,
    name: &'a OsStr,
    rel: &'a Path,
    st: nix::sys::stat::FileStat,
}

impl Entry<'_> {
    fn mode(&self) -> nix::sys::stat::Mode {
        nix::sys::stat::Mode::from_bits_truncate(self.st.st_mode & 0o777)
    }

    /// Reopens the entry for reading; `None` if it is no longer the object `st` describes.
    fn reopen(&self, flags: nix::fcntl::OFlag) -> Result<Option<OwnedFd>, nix::Error> {
        use nix::errno::Errno;
        match open_beneath(self.parent, self.name, flags) {
            Ok(fd) => {
                let now = nix::sys::stat::fstat(fd.as_raw_fd())?;
                Ok((now.st_dev == self.st.st_dev && now.st_ino == self.st.st_ino).then_some(fd))
            }
            // Swapped since the O_PATH open: a symlink now (ELOOP), gone (ENOENT), a file where
            // a directory was (ENOTDIR), or a path out of the tree (EXDEV).
            Err(Errno::ELOOP | Errno::ENOENT | Errno::ENOTDIR | Errno::EXDEV) => Ok(None),
            Err(e) => Err(e),
        }
    }
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
pub fn teardown(job_dir: &Path, errors: &mut Vec<TeardownFailure>) {
    let fail = |m: String| TeardownFailure::new(TeardownStep::Rootfs, m);
    for m in mounts_under(job_dir) {
        if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
            errors.push(fail(format!("unmounting {}: {e}", m.display())));
        }
    }
    let left = mounts_under(job_dir);
    if !left.is_empty() {
        errors.push(fail(format!(
            "still mounted, not removing {}: {:?}",
            job_dir.display(),
            left
        )));
        return;
    }
    match std::fs::remove_dir_all(job_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(fail(format!("removing {}: {e}", job_dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const MARKER: &str = "ROOT-ONLY-HOST-SECRET-7f3a";

    /// Every regular file under `dir` (never following a symlink) that holds the marker.
    fn leaked(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(dir) else {
            return out;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                out.extend(leaked(&p));
            } else if m.is_file()
                && std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(MARKER))
            {
                out.push(p);
            }
        }
        out
    }

    /// A workspace whose writer swaps files and directories with symlinks to a root-only
    /// file and a directory outside it (`renameat2(RENAME_EXCHANGE)`, as fast as it can)
    /// while the copy runs: nothing outside the workspace may ever be copied.
    #[test]
    fn a_racing_writer_never_gets_a_host_file_into_the_copy() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root (chown to the job user)");
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let outside = t.path().join("outside");
        let ws = t.path().join("ws");
        std::fs::create_dir_all(outside.join("secretdir")).expect("outside");
        std::fs::create_dir_all(&ws).expect("ws");
        let secret = outside.join("secret");
        std::fs::write(&secret, MARKER).expect("secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("0600");
        std::fs::write(outside.join("secretdir/inner"), MARKER).expect("inner");
        const PAIRS: usize = 8;
        for i in 0..PAIRS {
            std::fs::write(ws.join(format!("f{i}")), "ok").expect("f");
            std::os::unix::fs::symlink(&secret, ws.join(format!("l{i}"))).expect("l");
            std::fs::create_dir(ws.join(format!("d{i}"))).expect("d");
            std::fs::write(ws.join(format!("d{i}/x")), "ok").expect("x");
            std::os::unix::fs::symlink(outside.join("secretdir"), ws.join(format!("m{i}")))
                .expect("m");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let swappers: Vec<_> = [("f", "l"), ("d", "m")]
            .into_iter()
            .map(|(a, b)| {
                let (ws, stop) = (ws.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut swaps = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..PAIRS {
                            let _ = nix::fcntl::renameat2(
                                None,
                                &ws.join(format!("{a}{i}")),
                                None,
                                &ws.join(format!("{b}{i}")),
                                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                            );
                            swaps += 1;
                        }
                    }
                    swaps
                })
            })
            .collect();
        let mut leaks = Vec::new();
        let mut copied = 0;
        for n in 0..200 {
            let dst = t.path().join(format!("copy{n}"));
            std::fs::create_dir(&dst).expect("dst");
            if copy_workspace(&ws, &dst, 1001, 1001, 1 << 30).is_ok() {
                copied += 1;
            }
            leaks.extend(leaked(&dst));
            let _ = std::fs::remove_dir_all(&dst);
        }
        stop.store(true, Ordering::Relaxed);
        let swaps: u64 = swappers.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert!(swaps > 1000, "the swapper barely ran ({swaps} swaps)");
        assert!(
            leaks.is_empty(),
            "{} host files leaked into 200 copies ({copied} completed): {:?}",
            leaks.len(),
            &leaks[..leaks.len().min(5)]
        );
        assert!(copied > 0, "no copy ever completed under the race");
    }

    /// What is copied, and how: symlinks as symlinks (never followed, even to a file in the
    /// workspace), specials skipped without being opened (a fifo would block), no setuid bit,
    /// everything owned by the job user; the size counts as the copy goes.
    #[test]
    fn copies_links_as_links_skips_specials_and_counts_the_size() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root (chown to the job user)");
            return;
        }
        use std::os::unix::fs::FileTypeExt;
        let t = tempfile::tempdir().expect("tempdir");
        let ws = t.path().join("ws");
        std::fs::create_dir_all(ws.join("sub/deeper")).expect("ws");
        std::fs::write(ws.join("sub/deeper/file"), "data").expect("file");
        std::fs::write(ws.join("suid"), "x").expect("suid");
        std::fs::set_permissions(ws.join("suid"), std::fs::Permissions::from_mode(0o4755))
            .expect("chmod");
        std::os::unix::fs::symlink("/etc/shadow", ws.join("abs")).expect("abs");
        std::os::unix::fs::symlink("sub/deeper/file", ws.join("rel")).expect("rel");
        nix::unistd::mkfifo(&ws.join("fifo"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        let _sock = std::os::unix::net::UnixListener::bind(ws.join("sock")).expect("sock");
        let dst = t.path().join("dst");
        std::fs::create_dir(&dst).expect("dst");
        copy_workspace(&ws, &dst, 1001, 1002, 1 << 20).expect("copy");
        assert_eq!(
            std::fs::read_link(dst.join("abs")).expect("abs"),
            Path::new("/etc/shadow")
        );
        assert_eq!(
            std::fs::read_link(dst.join("rel")).expect("rel"),
            Path::new("sub/deeper/file")
        );
        assert_eq!(
            std::fs::read_to_string(dst.join("sub/deeper/file")).expect("file"),
            "data"
        );
        let m = std::fs::symlink_metadata(dst.join("suid")).expect("suid");
        assert_eq!(m.mode() & 0o7777, 0o755, "setuid dropped");
        for p in ["abs", "sub", "sub/deeper", "sub/deeper/file", "suid"] {
            let m = std::fs::symlink_metadata(dst.join(p)).expect("copied");
            assert_eq!(
                (m.uid(), m.gid()),
                (1001, 1002),
                "{p} owned by the job user"
            );
        }
        for p in ["fifo", "sock"] {
            assert!(!dst.join(p).exists(), "{p} must not be copied");
        }
        assert!(std::fs::symlink_metadata(ws.join("fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo());

        // The workspace needs 3 directories, 26 bytes of link targets and 5 bytes of files.
        let small = t.path().join("small");
        std::fs::create_dir(&small).expect("small");
        let e = copy_workspace(&ws, &small, 1001, 1001, 3 * DIR_COST + 10).expect_err("too big");
        assert!(e.to_string().contains("does not fit"), "{e}");
        // Bounds: depth and entry count refuse with the reason.
        for (bounds, needle) in [((1, 100), "nested deeper than 1"), ((10, 3), "more than 3")] {
            let d = tempfile::tempdir_in(t.path()).expect("dst");
            let e = copy_workspace_bounded(&ws, d.path(), (1001, 1001), 1 << 20, bounds)
                .expect_err("bounded");
            assert!(e.to_string().contains(needle), "{e}");
        }
        // A symlink to a directory is not entered, even when it is the workspace's own.
        std::os::unix::fs::symlink("/", ws.join("root")).expect("root link");
        let d = tempfile::tempdir_in(t.path()).expect("dst");
        copy_workspace(&ws, d.path(), 1001, 1001, 1 << 20).expect("copy with a link to /");
        assert!(std::fs::symlink_metadata(d.path().join("root"))
            .expect("root")
            .file_type()
            .is_symlink());
    }
}
