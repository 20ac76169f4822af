//! Access to the scanned host: every file is read under the `--root` prefix, and the few
//! things that only exist as command output (the live nftables rule set, `iptables-save`) go
//! through the [`Commands`] seam, which is only wired to real commands when the root is `/`.
//!
//! Nothing here touches the network.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Files larger than this are not read (a checklist never needs them).
const MAX_READ: u64 = 4 * 1024 * 1024;

/// Longest line [`Host::for_each_line`] hands over.
pub const MAX_LINE: usize = 1024 * 1024;

/// Source of command output on the live host.
pub trait Commands {
    /// Runs `program args…` and returns its standard output if it exited 0.
    fn output(&self, program: &str, args: &[&str]) -> Option<String>;
}

/// No commands at all: what fixture trees (`--root` other than `/`) get.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCommands;

impl Commands for NoCommands {
    fn output(&self, _program: &str, _args: &[&str]) -> Option<String> {
        None
    }
}

/// The live host's commands, run without a shell, stdin closed, stderr discarded.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveCommands;

/// How long a command may run before it is killed and treated as absent.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Commands for LiveCommands {
    fn output(&self, program: &str, args: &[&str]) -> Option<String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // Read in a thread so a large output cannot fill the pipe while we wait.
        let mut stdout = child.stdout.take()?;
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut buf).map(|_| buf)
        });
        let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                _ => {
                    // Our own child, by handle: never anything else.
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let out = reader.join().ok()?.ok()?;
        if !status?.success() {
            return None;
        }
        String::from_utf8(out).ok()
    }
}

/// File metadata the checks use, without following a final symlink.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// A directory.
    pub is_dir: bool,
    /// A symlink.
    pub is_symlink: bool,
    /// Size in bytes.
    pub len: u64,
}

/// The scanned host: a root prefix and a command source.
pub struct Host {
    root: PathBuf,
    canonical_root: PathBuf,
    commands: Box<dyn Commands>,
}

impl Host {
    /// A host rooted at `root`. Commands are only used when `root` is `/`; tests pass their
    /// own [`Commands`] through [`Host::with_commands`].
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let canonical_root = fs::canonicalize(root)?;
        if !fs::metadata(&canonical_root)?.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        let commands: Box<dyn Commands> = if canonical_root == Path::new("/") {
            Box::new(LiveCommands)
        } else {
            Box::new(NoCommands)
        };
        Ok(Self {
            root: root.to_path_buf(),
            canonical_root,
            commands,
        })
    }

    /// Replaces the command source.
    pub fn with_commands(mut self, commands: Box<dyn Commands>) -> Self {
        self.commands = commands;
        self
    }

    /// The root as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root, resolved (symlinks, `..`, relative paths).
    pub fn canonical_root(&self) -> &Path {
        &self.canonical_root
    }

    /// Whether this is the live machine (root `/`).
    pub fn is_live(&self) -> bool {
        self.canonical_root == Path::new("/")
    }

    /// Runs a command through the seam.
    pub fn command(&self, program: &str, args: &[&str]) -> Option<String> {
        self.commands.output(program, args)
    }

    /// The real path of `/abs` on the scanned host.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.canonical_root.join(abs.trim_start_matches('/'))
    }

    /// Whether the real location of `p` stays inside the root (symlinks in a fixture tree
    /// must not lead the scan onto the machine running it).
    fn inside(&self, p: &Path) -> bool {
        match fs::canonicalize(p) {
            Ok(c) => c.starts_with(&self.canonical_root),
            Err(_) => false,
        }
    }

    /// Reads `/abs` as text (lossy UTF-8, BOM stripped). `None` if missing, unreadable,
    /// too large, or leading outside the root.
    pub fn read(&self, abs: &str) -> Option<String> {
        let p = self.path(abs);
        if !self.inside(&p) {
            return None;
        }
        let md = fs::metadata(&p).ok()?;
        if !md.is_file() || md.len() > MAX_READ {
            return None;
        }
        let bytes = fs::read(&p).ok()?;
        let s = String::from_utf8_lossy(&bytes).into_owned();
        Some(s.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(s))
    }

    /// Calls `f` with each line of `/abs` (lossy UTF-8), reading at most `budget` bytes (the
    /// budget is reduced by what was read). Lines longer than [`MAX_LINE`] are skipped
    /// without being held. `false` if the file could not be opened or leads outside the root.
    /// For files that may be far larger than [`Host::read`] allows (airlock's audit log).
    pub fn for_each_line(&self, abs: &str, budget: &mut u64, mut f: impl FnMut(&str)) -> bool {
        use std::io::BufRead;
        let p = self.path(abs);
        if !self.inside(&p) || !p.is_file() {
            return false;
        }
        let Ok(file) = fs::File::open(&p) else {
            return false;
        };
        let mut r = std::io::BufReader::new(std::io::Read::take(file, *budget));
        let mut line: Vec<u8> = Vec::new();
        let mut too_long = false;
        loop {
            let buf = match r.fill_buf() {
                Ok([]) | Err(_) => break,
                Ok(b) => b,
            };
            let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..i], i + 1),
                None => (buf, buf.len()),
            };
            let ended = done > chunk.len();
            if !too_long && line.len() + chunk.len() <= MAX_LINE {
                line.extend_from_slice(chunk);
            } else {
                too_long = true;
                line.clear();
            }
            r.consume(done);
            *budget = budget.saturating_sub(done as u64);
            if ended {
                if !too_long {
                    f(&String::from_utf8_lossy(&line));
                }
                line.clear();
                too_long = false;
            }
        }
        if !line.is_empty() && !too_long {
            f(&String::from_utf8_lossy(&line));
        }
        true
    }

    /// Metadata of `/abs` (a final symlink is not followed).
    pub fn meta(&self, abs: &str) -> Option<Meta> {
        let md = fs::symlink_metadata(self.path(abs)).ok()?;
        Some(Meta {
            mode: md.permissions().mode(),
            uid: md.uid(),
            gid: md.gid(),
            is_dir: md.is_dir(),
            is_symlink: md.file_type().is_symlink(),
            len: md.len(),
        })
    }

    /// Whether `/abs` exists (a dangling symlink counts).
    pub fn exists(&self, abs: &str) -> bool {
        self.meta(abs).is_some()
    }

    /// Whether `/abs` is a directory inside the root.
    pub fn is_dir(&self, abs: &str) -> bool {
        let p = self.path(abs);
        self.inside(&p) && p.is_dir()
    }

    /// Sorted entry names of directory `/abs` (empty if it is not one).
    pub fn list(&self, abs: &str) -> Vec<String> {
        let p = self.path(abs);
        if !self.inside(&p) {
            return Vec::new();
        }
        let mut v: Vec<String> = match fs::read_dir(&p) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

/// Joins an absolute host path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}
