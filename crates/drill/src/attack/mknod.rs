//! Escape: create a device node for the host's disk (8:0, 253:0) and read it raw.
//! Harmless: the node is created in /tmp, opened read-only, never read, and removed.

use super::util::{errno_str, Step};
use super::{Attack, AttackResult, Category, Expect};

/// `mknod`: mknod a block device (the host's disk) and open it.
pub struct Mknod;

impl Attack for Mknod {
    fn id(&self) -> &'static str {
        "mknod"
    }
    fn title(&self) -> &'static str {
        "mknod a block device (the host's disk) and open it"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let mut s = Vec::new();
        for (name, major, minor) in [("sda", 8, 0), ("vda", 253, 0)] {
            let path = format!("/tmp/drill-{name}");
            let what = format!("mknod {path} b {major} {minor}");
            match nix::sys::stat::mknod(
                path.as_str(),
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(major, minor),
            ) {
                Ok(()) => {
                    let opened = std::fs::File::open(&path).is_ok();
                    let _ = std::fs::remove_file(&path);
                    s.push(Step::ok(
                        what,
                        if opened {
                            "created and opened"
                        } else {
                            "created (open failed)"
                        },
                    ));
                }
                Err(e) => s.push(Step::failed(what, errno_str(e))),
            }
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
