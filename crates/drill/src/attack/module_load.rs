//! Escape: load a kernel module. Harmless: the "module" is 64 zero bytes (not an ELF
//! object); even a kernel that let the call through would reject it before loading anything.

use super::util::{syscall_step, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// `module-load`: init_module / finit_module.
pub struct ModuleLoad;

impl Attack for ModuleLoad {
    fn id(&self) -> &'static str {
        "module-load"
    }
    fn title(&self) -> &'static str {
        "init_module / finit_module"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        let image = [0u8; 64];
        let params = c"";
        // SAFETY: a valid buffer and length and a NUL-terminated parameter string.
        let r = unsafe {
            libc::syscall(
                libc::SYS_init_module,
                image.as_ptr(),
                image.len(),
                params.as_ptr(),
            )
        };
        let mut s = vec![syscall_step("init_module(64 zero bytes)", r, false)];
        // Any readable file will do (the running program is execute-only in the job).
        match std::fs::File::open(super::PAYLOAD).or_else(|_| std::fs::File::open("/proc/self/exe"))
        {
            Ok(f) => {
                use std::os::fd::AsRawFd;
                // SAFETY: a valid fd and a NUL-terminated parameter string.
                let r = unsafe {
                    libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0)
                };
                s.push(syscall_step("finit_module(not a module)", r, false));
            }
            Err(e) => s.push(Step::failed("open /proc/self/exe", e.to_string())),
        }
        // Reaching the module loader at all (anything but EPERM) is already too much.
        for st in &mut s {
            if !st.succeeded && !st.how.starts_with("EPERM") && !st.what.starts_with("open") {
                st.succeeded = true;
                st.how = format!("reached the module loader: {}", st.how);
            }
        }
        AttackResult::from_steps(self.id(), &s)
    }
}
