//! Escape/secret theft: the kernel keyrings are shared with the host (keys of other users and
//! services). Harmless: the one key it tries to add is a dummy in its own process keyring.

use super::util::syscall_step;
use super::{detector, Attack, AttackResult, Category, Expect};

/// `keyctl`: add_key / keyctl (kernel keyrings).
pub struct Keyctl;

impl Attack for Keyctl {
    fn id(&self) -> &'static str {
        "keyctl"
    }
    fn title(&self) -> &'static str {
        "add_key / keyctl (kernel keyrings)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        let kind = c"user";
        let desc = c"airlock-drill";
        let payload = b"drill";
        // SAFETY: NUL-terminated strings, a valid payload buffer; KEY_SPEC_PROCESS_KEYRING.
        let r = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                kind.as_ptr(),
                desc.as_ptr(),
                payload.as_ptr(),
                payload.len(),
                -2i32,
            )
        };
        let a = syscall_step("add_key(user, process keyring)", r, false);
        // KEYCTL_GET_KEYRING_ID (0) of the session keyring (-3).
        // SAFETY: keyctl with integer arguments only.
        let r = unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i32, 0) };
        let b = syscall_step("keyctl(GET_KEYRING_ID, session)", r, false);
        AttackResult::from_steps(self.id(), &[a, b])
    }
}
