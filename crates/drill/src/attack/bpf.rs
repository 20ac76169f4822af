//! Escape: eBPF is a large kernel attack surface (and can read kernel memory when
//! privileged). Harmless: the map is a 1-entry array owned by this process; the program is
//! `return 0` as a socket filter, never attached.

use super::util::syscall_step;
use super::{detector, Attack, AttackResult, Category, Expect};

/// `bpf`: bpf(BPF_MAP_CREATE) and BPF_PROG_LOAD.
pub struct Bpf;

impl Attack for Bpf {
    fn id(&self) -> &'static str {
        "bpf"
    }
    fn title(&self) -> &'static str {
        "bpf(BPF_MAP_CREATE) and BPF_PROG_LOAD"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
        let mut attr = [0u32; 32];
        attr[0] = 2; // BPF_MAP_TYPE_ARRAY
        attr[1] = 4;
        attr[2] = 4;
        attr[3] = 1;
        // SAFETY: attr is a zeroed buffer larger than the map-create part of bpf_attr.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), 128) };
        let a = syscall_step("bpf(BPF_MAP_CREATE)", r, true);
        // mov r0, 0; exit
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let mut pattr = [0u64; 16];
        pattr[0] = 1 | (2u64 << 32); // prog_type = SOCKET_FILTER, insn_cnt = 2
        pattr[1] = insns.as_ptr() as u64;
        pattr[2] = license.as_ptr() as u64;
        // SAFETY: pattr points at live instruction and license buffers for the call.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 5, pattr.as_ptr(), 128) };
        let b = syscall_step("bpf(BPF_PROG_LOAD, return 0)", r, true);
        AttackResult::from_steps(self.id(), &[a, b])
    }
}
