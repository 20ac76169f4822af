//! Escape ("shocker", 2014): open a host file by inode handle, bypassing the mount namespace.
//! Harmless: tries read-only on the root inode and closes it.

use super::util::{syscall_step, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// `open-by-handle`: open_by_handle_at (shocker).
pub struct OpenByHandle;

impl Attack for OpenByHandle {
    fn id(&self) -> &'static str {
        "open-by-handle"
    }
    fn title(&self) -> &'static str {
        "open_by_handle_at (shocker)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        use std::os::fd::AsRawFd;
        let mut s = Vec::new();
        let root = match std::fs::File::open("/") {
            Ok(f) => f,
            Err(e) => {
                return AttackResult::from_steps(
                    self.id(),
                    &[Step::failed("open /", e.to_string())],
                )
            }
        };
        // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[8] }:
        // FILEID_INO32_GEN (1), inode 2, generation 0 = the root of most filesystems.
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&8u32.to_ne_bytes());
        h[4..8].copy_from_slice(&1i32.to_ne_bytes());
        h[8..12].copy_from_slice(&2u32.to_ne_bytes());
        // SAFETY: a valid mount fd and a file_handle buffer of the declared size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                root.as_raw_fd(),
                h.as_mut_ptr(),
                libc::O_RDONLY,
            )
        };
        s.push(syscall_step("open_by_handle_at(inode 2)", r, true));
        let mut h2 = [0u8; 136];
        h2[0..4].copy_from_slice(&128u32.to_ne_bytes());
        let mut mount_id: i32 = 0;
        let path = c"/";
        // SAFETY: valid path, handle buffer of 128 bytes, mount id out-pointer.
        let r = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                libc::AT_FDCWD,
                path.as_ptr(),
                h2.as_mut_ptr(),
                &mut mount_id,
                0,
            )
        };
        s.push(syscall_step("name_to_handle_at(/)", r, false));
        // A handle for the job's own / is harmless by itself; only opening matters.
        if let Some(last) = s.last_mut() {
            last.succeeded = false;
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
