//! Escalation: become root through a setuid-root binary (`sudo -n`, `su`), a setuid bit the
//! job sets on its own copy, or setuid(0). Success = any of them gives uid 0 or a setuid-root
//! binary could take effect (the mount lacks nosuid and no_new_privs is off). Harmless: `sudo -n
//! true` and `su -c true` run nothing but `true`.

use super::util::{errno_str, Step};
use super::{Attack, AttackResult, Category, Expect};

/// `setuid`: setuid escalation: setuid-root binaries, sudo, su, setuid(0).
pub struct Setuid;

impl Attack for Setuid {
    fn id(&self) -> &'static str {
        "setuid"
    }
    fn title(&self) -> &'static str {
        "setuid escalation: setuid-root binaries, sudo, su, setuid(0)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut s = Vec::new();
        s.push(match nix::unistd::setuid(nix::unistd::Uid::from_raw(0)) {
            Ok(()) => Step::ok("setuid(0)", "now root"),
            Err(e) => Step::failed("setuid(0)", errno_str(e)),
        });
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let nnp = status
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.trim_end().ends_with('1'));
        let mut suid = Vec::new();
        for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    if let Ok(m) = e.metadata() {
                        if m.uid() == 0 && m.mode() & 0o4000 != 0 {
                            suid.push(e.path());
                        }
                    }
                }
            }
        }
        let nosuid = nix::sys::statvfs::statvfs("/usr/bin")
            .map(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID))
            .unwrap_or(false);
        let what = format!("{} setuid-root binaries in /usr", suid.len());
        s.push(if !suid.is_empty() && !nosuid && !nnp {
            Step::ok(what, "usable: /usr without nosuid and no_new_privs off")
        } else {
            Step::failed(what, format!("nosuid={nosuid} no_new_privs={nnp}"))
        });
        for (what, argv) in [
            ("sudo -n true", &["sudo", "-n", "true"][..]),
            ("su -c true", &["su", "-c", "true"][..]),
        ] {
            s.push(
                match std::process::Command::new(argv[0])
                    .args(&argv[1..])
                    .stdin(std::process::Stdio::null())
                    .output()
                {
                    Ok(o) if o.status.success() => Step::ok(what, "ran as root"),
                    Ok(o) => Step::failed(
                        what,
                        format!(
                            "{}: {}",
                            o.status,
                            String::from_utf8_lossy(&o.stderr).trim()
                        ),
                    ),
                    Err(e) => Step::failed(what, e.to_string()),
                },
            );
        }
        // A setuid bit on the job's own copy of a binary: only a root-owned file would help,
        // and the job cannot chown to root.
        let copy = "/tmp/drill-suid";
        let r = std::fs::copy(super::PAYLOAD, copy)
            .or_else(|_| std::fs::copy("/proc/self/exe", copy))
            .and_then(|_| std::fs::set_permissions(copy, std::fs::Permissions::from_mode(0o4755)))
            .and_then(|_| {
                nix::unistd::chown(copy, Some(nix::unistd::Uid::from_raw(0)), None)
                    .map_err(std::io::Error::from)
            });
        s.push(match r {
            Ok(()) => Step::ok(
                "chown root + chmod u+s own copy",
                "root-owned setuid binary made",
            ),
            Err(e) => Step::failed("chown root + chmod u+s own copy", e.to_string()),
        });
        let _ = std::fs::remove_file(copy);
        AttackResult::from_steps(self.id(), &s)
    }
}
