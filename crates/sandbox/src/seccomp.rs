//! The seccomp profile every job runs under, as data: each denied syscall says why.
//!
//! The profile is a deny list on top of a default of "allow": the job already has no
//! capabilities and `no_new_privs`, so the kernel refuses most of these calls anyway; the
//! filter removes the kernel attack surface behind them (a bug in `keyctl` or `bpf` is
//! reachable without privileges) and makes every attempt visible as EPERM.
//! Only the native architecture is listed: libseccomp kills a thread that makes a syscall
//! through another ABI (32-bit `int 0x80`, x32), so the list cannot be bypassed that way.
//! See docs/sandbox.md for the limits of a deny list.

use airlock_policy::ExecutorKind;
use serde_json::{json, Value};

/// `(syscall, why it is denied)`. Each is answered with EPERM.
pub const DENIED: &[(&str, &str)] = &[
    ("mount", "mounting is how most container escapes start"),
    ("umount2", "unmounting could expose what a mount hides"),
    ("umount", "legacy unmount"),
    (
        "pivot_root",
        "changing the root is a runtime's job, never a job's",
    ),
    ("chroot", "no use in CI; part of classic escapes"),
    ("fsopen", "new mount API"),
    ("fsconfig", "new mount API"),
    ("fsmount", "new mount API"),
    ("fspick", "new mount API"),
    ("move_mount", "new mount API"),
    ("open_tree", "new mount API"),
    ("mount_setattr", "new mount API"),
    (
        "unshare",
        "new namespaces (user namespaces above all) widen the kernel surface",
    ),
    ("setns", "joining another namespace is an escape"),
    ("ptrace", "reading or steering other processes"),
    ("process_vm_readv", "reading another process's memory"),
    ("process_vm_writev", "writing another process's memory"),
    (
        "kcmp",
        "compares kernel objects of other processes; an info leak",
    ),
    (
        "pidfd_getfd",
        "steals file descriptors from other processes",
    ),
    ("kexec_load", "replacing the running kernel"),
    ("kexec_file_load", "replacing the running kernel"),
    ("init_module", "loading kernel code"),
    ("finit_module", "loading kernel code"),
    ("delete_module", "unloading kernel code"),
    ("create_module", "legacy module loading"),
    ("bpf", "eBPF is a large, often-exploited kernel surface"),
    (
        "perf_event_open",
        "side channels and a history of kernel bugs",
    ),
    ("keyctl", "the kernel keyring is not namespaced"),
    ("add_key", "the kernel keyring is not namespaced"),
    ("request_key", "the kernel keyring is not namespaced"),
    ("userfaultfd", "a staple of kernel exploits (race widening)"),
    (
        "open_by_handle_at",
        "opens host files by handle, bypassing the mount tree (shocker)",
    ),
    ("name_to_handle_at", "companion of open_by_handle_at"),
    ("reboot", "rebooting the host"),
    ("swapon", "host swap configuration"),
    ("swapoff", "host swap configuration"),
    ("acct", "host process accounting"),
    (
        "syslog",
        "reads the kernel log (addresses, other jobs' traces)",
    ),
    ("clock_settime", "the clock is not namespaced"),
    ("clock_adjtime", "the clock is not namespaced"),
    ("settimeofday", "the clock is not namespaced"),
    ("adjtimex", "the clock is not namespaced"),
    ("iopl", "raw I/O port access"),
    ("ioperm", "raw I/O port access"),
    ("quotactl", "host filesystem quotas"),
    ("lookup_dcookie", "kernel profiling interface"),
    ("nfsservctl", "kernel NFS server control"),
    ("uselib", "legacy, unused, exploited before"),
    ("ustat", "legacy"),
    ("sysfs", "legacy"),
    ("_sysctl", "legacy sysctl interface"),
    ("vhangup", "hangs up the controlling terminal"),
    (
        "io_uring_setup",
        "io_uring bypasses seccomp for the operations it performs",
    ),
    (
        "io_uring_enter",
        "io_uring bypasses seccomp for the operations it performs",
    ),
    (
        "io_uring_register",
        "io_uring bypasses seccomp for the operations it performs",
    ),
];

/// Refused in the kernel with EPERM, sent to no listener and never recorded: the NUMA
/// memory-policy calls. Ordinary software makes them all the time — `ps` and `top` (procps asks
/// libnuma which node a process runs on), the JVM, hwloc, OpenMP and PyTorch runtimes — and
/// copes with EPERM, which is what Docker's and containerd's default profiles answer without
/// `CAP_SYS_NICE`: libnuma's `numa_available()` fails on `get_mempolicy`, so the rest is never
/// asked. They act only on the caller's memory placement (or, `migrate_pages`/`move_pages`,
/// on processes the caller could ptrace: inside the job), so a refusal is worth neither an
/// alert nor a record; they stay refused because the mempolicy code has had kernel bugs
/// (CVE-2018-10675, CVE-2023-4611) and a job has no need of NUMA placement.
pub const REFUSED_QUIETLY: &[(&str, &str)] = &[
    ("get_mempolicy", "NUMA probe (libnuma's numa_available)"),
    ("set_mempolicy", "NUMA policy of the caller's memory"),
    (
        "set_mempolicy_home_node",
        "NUMA policy of the caller's memory",
    ),
    ("mbind", "NUMA policy of a range of the caller's memory"),
    (
        "migrate_pages",
        "moves another process's pages between NUMA nodes",
    ),
    ("move_pages", "moves or queries pages' NUMA nodes"),
];

/// Namespace flags a job may not pass to `clone`: creating namespaces is `unshare` by
/// another name.
pub const CLONE_NAMESPACE_FLAGS: &[(u64, &str)] = &[
    (libc::CLONE_NEWNS as u64, "CLONE_NEWNS"),
    (libc::CLONE_NEWCGROUP as u64, "CLONE_NEWCGROUP"),
    (libc::CLONE_NEWUTS as u64, "CLONE_NEWUTS"),
    (libc::CLONE_NEWIPC as u64, "CLONE_NEWIPC"),
    (libc::CLONE_NEWUSER as u64, "CLONE_NEWUSER"),
    (libc::CLONE_NEWPID as u64, "CLONE_NEWPID"),
    (libc::CLONE_NEWNET as u64, "CLONE_NEWNET"),
    (0x80, "CLONE_NEWTIME"),
];

/// The arguments the rules compare are all 32-bit (`int`, `unsigned int`) to the kernel: it
/// reads only the lower half of the 64-bit register (`ioctl`'s request is `unsigned int`;
/// `clone` keeps `lower_32_bits(flags)`). Seccomp sees the whole register, so every comparison
/// masks it to these 32 bits: `ioctl(fd, 0x1_0000_5412)` is TIOCSTI to the kernel and must be
/// to the filter too.
pub const ARG32: u64 = 0xffff_ffff;

/// ioctls on terminals that inject input into, or take over, a terminal the job may share.
pub const DENIED_IOCTLS: &[(u64, &str)] = &[
    (0x5412, "TIOCSTI: pushes keystrokes into a terminal's input"),
    (
        0x541C,
        "TIOCLINUX: console control, includes selection paste",
    ),
];

/// Why a call that reached the listener was denied (the entry of the tables above).
pub fn reason(syscall: &str, args: &[u64; 6]) -> String {
    if syscall == "clone" {
        let names: Vec<&str> = CLONE_NAMESPACE_FLAGS
            .iter()
            .filter(|(f, _)| args[0] & ARG32 & f == *f)
            .map(|(_, n)| *n)
            .collect();
        return format!("clone with {}: new namespaces", names.join("|"));
    }
    if syscall == "ioctl" {
        if let Some((_, why)) = DENIED_IOCTLS.iter().find(|(r, _)| *r == args[1] & ARG32) {
            return (*why).to_owned();
        }
    }
    DENIED
        .iter()
        .find(|(n, _)| *n == syscall)
        .map(|(_, why)| (*why).to_owned())
        .unwrap_or_else(|| "on the deny list".to_owned())
}

/// The profile in OCI runtime-spec form (`linux.seccomp`).
///
/// With a `listener` (the job's [`crate::watch`] socket), `execve`/`execveat` and every denied
/// call are sent to airlock instead of being answered in the kernel: execs are recorded and let
/// through, denied calls recorded and answered EPERM. Should the listener be gone, the kernel
/// answers ENOSYS: still denied, and no exec goes unrecorded.
pub fn oci_profile(listener: Option<&std::path::Path>, executor: ExecutorKind) -> Value {
    let eperm = libc::EPERM as u32;
    let deny = |extra: Value| {
        let mut r = match listener {
            Some(_) => json!({ "action": "SCMP_ACT_NOTIFY" }),
            None => json!({ "action": "SCMP_ACT_ERRNO", "errnoRet": eperm }),
        };
        if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
            r.extend(extra.clone());
        }
        r
    };
    let mut syscalls = vec![deny(json!({
        "names": DENIED.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
    }))];
    // Ordinary software's NUMA probes: answered in the kernel, no listener, no record.
    syscalls.push(json!({
        "names": REFUSED_QUIETLY.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": eperm,
    }));
    // clone3 passes its flags in memory, where seccomp cannot look: answer ENOSYS so that
    // libc falls back to clone(2), whose flags are filtered below. Not recorded: every new
    // thread tries clone3 first.
    syscalls.push(json!({
        "names": ["clone3"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": libc::ENOSYS as u32,
    }));
    // Rules for one syscall are ORed; the conditions within a rule are ANDed. One rule per
    // flag therefore denies a clone that carries any of them. Mask and value are the flag
    // itself, a bit below 2^32: the upper half of the register is never compared.
    for (flag, _) in CLONE_NAMESPACE_FLAGS {
        syscalls.push(deny(json!({
            "names": ["clone"],
            "args": [{ "index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ" }],
        })));
    }
    for (req, _) in DENIED_IOCTLS {
        let arg = masked_eq32(1, *req, value_is_mask(executor));
        syscalls.push(deny(json!({ "names": ["ioctl"], "args": [arg] })));
    }
    let mut profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": syscalls,
    });
    if let Some(l) = listener {
        if let Some(list) = profile["syscalls"].as_array_mut() {
            list.push(json!({ "names": ["execve", "execveat"], "action": "SCMP_ACT_NOTIFY" }));
        }
        profile["listenerPath"] = l.to_string_lossy().into_owned().into();
    }
    profile
}

/// Whether `executor` reads the OCI `value` of `SCMP_CMP_MASKED_EQ` as the mask (runc and
/// gVisor, through libseccomp-golang's `MakeCondition(arg, op, mask, datum)`) or `valueTwo`
/// (youki's libcontainer 0.7). The two readings cannot be served by one rule written both
/// ways: libseccomp stores the datum already masked (`datum & mask`), so the "impossible"
/// copy `(arg & req) == (0xffffffff & req)` matches every request that has all of `req`'s
/// bits — FIONREAD, TIOCGWINSZ, … — and refused ordinary ioctls. One rule, per executor.
pub fn value_is_mask(executor: ExecutorKind) -> bool {
    !matches!(executor, ExecutorKind::Libcontainer)
}

/// `(argument & 0xffffffff) == value`, as one OCI rule argument for an executor that reads
/// the mask from `value` (`value_is_mask`) or from `valueTwo`.
fn masked_eq32(index: u32, value: u64, value_is_mask: bool) -> Value {
    let (v, v2) = if value_is_mask {
        (ARG32, value)
    } else {
        (value, ARG32)
    };
    json!({ "index": index, "value": v, "valueTwo": v2, "op": "SCMP_CMP_MASKED_EQ" })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether rule argument `a` matches `arg`, reading `SCMP_CMP_MASKED_EQ` the way runc
    /// does (`value` is the mask) or libcontainer does (`valueTwo` is the mask).
    fn matches(a: &Value, arg: u64, value_is_mask: bool) -> bool {
        let v = a["value"].as_u64().unwrap_or(0);
        let v2 = a["valueTwo"].as_u64().unwrap_or(0);
        match a["op"].as_str() {
            // libseccomp stores the datum masked: `(arg & mask) == (datum & mask)`.
            Some("SCMP_CMP_MASKED_EQ") if value_is_mask => arg & v == v2 & v,
            Some("SCMP_CMP_MASKED_EQ") => arg & v2 == v & v2,
            Some("SCMP_CMP_EQ") => arg == v,
            op => panic!("unexpected op {op:?}"),
        }
    }

    /// Whether a `name` call with argument `index` = `arg` hits a deny rule.
    fn denied(p: &Value, name: &str, index: u64, arg: u64, value_is_mask: bool) -> bool {
        p["syscalls"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|x| x == name))
            })
            .filter_map(|r| r["args"].as_array())
            .any(|args| {
                args.iter()
                    .all(|a| a["index"] == index && matches(a, arg, value_is_mask))
            })
    }

    #[test]
    fn argument_rules_ignore_the_upper_32_bits_under_either_mask_reading() {
        for executor in [
            ExecutorKind::Libcontainer,
            ExecutorKind::Runc,
            ExecutorKind::Runsc,
        ] {
            let p = oci_profile(None, executor);
            let value_is_mask = value_is_mask(executor);
            for high in [0, 1u64 << 32, 0xdead_beef_u64 << 32, 0xffff_ffff_u64 << 32] {
                for (req, why) in DENIED_IOCTLS {
                    assert!(
                        denied(&p, "ioctl", 1, high | req, value_is_mask),
                        "{why} with high bits {high:#x} passes (value_is_mask {value_is_mask})"
                    );
                    assert!(reason("ioctl", &[0, high | req, 0, 0, 0, 0]) == *why);
                }
                for (flag, name) in CLONE_NAMESPACE_FLAGS {
                    let flags = high | flag | libc::SIGCHLD as u64;
                    assert!(
                        denied(&p, "clone", 0, flags, value_is_mask),
                        "{name} {high:#x}"
                    );
                    assert!(reason("clone", &[flags, 0, 0, 0, 0, 0]).contains(name));
                }
                // Ordinary calls stay allowed: TCGETS, FIONREAD and TIOCGWINSZ (which share
                // bits with TIOCSTI), FIONBIO, a plain fork-like clone.
                for ok in [0x5401u64, 0x541B, 0x5413, 0x5421, 0x5410, 0x5416] {
                    assert!(
                        !denied(&p, "ioctl", 1, high | ok, value_is_mask),
                        "{executor:?}: ordinary ioctl {ok:#x} refused"
                    );
                }
                assert!(!denied(&p, "clone", 0, high | 0x11, value_is_mask));
            }
        }
        // Every comparison masks to 32 bits: no EQ on a whole register, no mask above 2^32.
        let p = oci_profile(None, ExecutorKind::Runc);
        for r in p["syscalls"].as_array().expect("rules") {
            for a in r["args"].as_array().into_iter().flatten() {
                assert_eq!(a["op"], "SCMP_CMP_MASKED_EQ", "{r}");
                let (v, v2) = (a["value"].as_u64(), a["valueTwo"].as_u64());
                assert!(
                    v.is_some_and(|v| v <= ARG32) && v2.is_some_and(|v| v <= ARG32),
                    "{r}"
                );
            }
        }
    }

    #[test]
    fn issue_minimum_is_denied() {
        let required = [
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "open_by_handle_at",
            "reboot",
            "swapon",
            "swapoff",
            "acct",
            "syslog",
            "clock_settime",
            "iopl",
            "ioperm",
        ];
        for r in required {
            assert!(DENIED.iter().any(|(n, _)| *n == r), "{r} must be denied");
        }
        let p = oci_profile(None, ExecutorKind::Libcontainer);
        let s: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(p).expect("valid OCI seccomp section");
        let rules = s.syscalls().as_ref().expect("rules");
        assert!(rules.iter().any(|r| r.names() == &["clone3".to_owned()]));
        let clone_rules = rules
            .iter()
            .filter(|r| r.names() == &["clone".to_owned()])
            .count();
        assert_eq!(clone_rules, CLONE_NAMESPACE_FLAGS.len());
    }

    #[test]
    fn with_a_listener_denials_and_execs_are_notified() {
        let p = oci_profile(
            Some(std::path::Path::new("/run/x.sock")),
            ExecutorKind::Libcontainer,
        );
        let s: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(p).expect("valid OCI seccomp section");
        assert_eq!(
            s.listener_path().as_deref(),
            Some(std::path::Path::new("/run/x.sock"))
        );
        let rules = s.syscalls().as_ref().expect("rules");
        let action = |name: &str| {
            rules
                .iter()
                .filter(|r| r.names().iter().any(|n| n == name))
                .map(|r| r.action())
                .collect::<Vec<_>>()
        };
        use oci_spec::runtime::LinuxSeccompAction::*;
        assert_eq!(action("execve"), [ScmpActNotify]);
        assert_eq!(action("mount"), [ScmpActNotify]);
        assert!(action("clone").iter().all(|a| *a == ScmpActNotify));
        assert_eq!(action("clone3"), [ScmpActErrno]);
        assert!(
            reason("clone", &[libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]).contains("CLONE_NEWUSER")
        );
        assert!(reason("keyctl", &[0; 6]).contains("keyring"));
    }

    #[test]
    fn numa_probes_are_refused_in_the_kernel_unrecorded() {
        let p = oci_profile(
            Some(std::path::Path::new("/run/x.sock")),
            ExecutorKind::Libcontainer,
        );
        let s: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(p).expect("valid OCI seccomp section");
        let rules = s.syscalls().as_ref().expect("rules");
        use oci_spec::runtime::LinuxSeccompAction::*;
        for name in [
            "get_mempolicy",
            "set_mempolicy",
            "mbind",
            "migrate_pages",
            "move_pages",
        ] {
            let r: Vec<_> = rules
                .iter()
                .filter(|r| r.names().iter().any(|n| n == name))
                .collect();
            assert_eq!(r.len(), 1, "{name}: {r:?}");
            assert_eq!(
                r[0].action(),
                ScmpActErrno,
                "{name} must not reach the listener"
            );
            assert_eq!(r[0].errno_ret(), Some(libc::EPERM as u32), "{name}");
            assert!(
                !DENIED.iter().any(|(n, _)| *n == name),
                "{name} in both lists"
            );
        }
    }

    #[test]
    fn no_duplicates() {
        let mut names: Vec<_> = DENIED
            .iter()
            .chain(REFUSED_QUIETLY)
            .map(|(n, _)| *n)
            .collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
