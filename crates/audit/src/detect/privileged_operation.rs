//! `privileged-operation`: seccomp refused a privileged system call — the job tried to
//! mount, unshare, load a module, ptrace, … (the escape battery's territory).
//!
//! One alert per technique: the calls are grouped by what they are for.
//!
//! Not every refused call is an attack. Calls that ordinary software makes to read something
//! (`dmesg` reads the kernel log with `syslog`, NTP tools and exporters read the clock's state
//! with `adjtimex`, quota tools query with `quotactl`, legacy binaries call `ustat`/`sysfs`)
//! stay refused and on the record, but raise no alert: see [`RECORD_ONLY`] and the decision
//! table in docs/audit.md. (The NUMA calls of `ps`, `top`, the JVM never reach the record at
//! all: the seccomp profile answers them in the kernel.)

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{some_of, DetectError, Detector, Evidence};
use crate::alert::{Alert, Severity, Technique};
use crate::{Kind, Record};

/// Refused calls that are recorded but raise no alert: ordinary software makes them to read
/// state (and copes with the refusal), or they are legacy calls that change nothing outside
/// the caller. Each with why.
pub const RECORD_ONLY: &[(&str, &str)] = &[
    ("syslog", "`dmesg` reads the kernel log this way; a diagnostic step of many CI jobs"),
    ("adjtimex", "read-only clock status queries (modes 0) by NTP tools and exporters"),
    ("clock_adjtime", "read-only clock status queries, as adjtimex"),
    ("quotactl", "quota tools query a user's disk quota"),
    ("name_to_handle_at", "systemd and util-linux tools use it to identify mount points; harmless without open_by_handle_at"),
    ("ustat", "legacy file system statistics, read only"),
    ("sysfs", "legacy file system type query, read only"),
    ("_sysctl", "legacy sysctl reads"),
    ("lookup_dcookie", "profiling interface; needs CAP_SYS_ADMIN, so it fails anyway"),
    ("nfsservctl", "removed from the kernel in 3.1: ENOSYS everywhere"),
    ("vhangup", "login programs hang up their own terminal"),
];

/// The technique (id, name) a refused system call belongs to.
fn technique_of(syscall: &str) -> (&'static str, &'static str) {
    match syscall {
        "ptrace" | "process_vm_writev" | "process_vm_readv" | "pidfd_getfd" => {
            ("T1055", "Process Injection")
        }
        "init_module" | "finit_module" | "delete_module" | "kexec_load" | "kexec_file_load" => (
            "T1547.006",
            "Boot or Logon Autostart Execution: Kernel Modules and Extensions",
        ),
        "setuid" | "setgid" | "setresuid" | "setresgid" | "setreuid" | "setregid" | "capset" => (
            "T1548.001",
            "Abuse Elevation Control Mechanism: Setuid and Setgid",
        ),
        "keyctl" | "add_key" | "request_key" => ("T1555", "Credentials from Password Stores"),
        "reboot" | "swapoff" | "swapon" => ("T1529", "System Shutdown/Reboot"),
        // mount, umount2, unshare, setns, pivot_root, chroot, bpf, perf_event_open,
        // open_by_handle_at, mknod, userfaultfd, … : breaking out of the sandbox.
        _ => ("T1611", "Escape to Host"),
    }
}

/// The detector.
#[derive(Debug, Default)]
pub struct PrivilegedOperation {
    /// technique → (the calls, their records, how many calls: aggregated records count
    /// every call they stand for).
    by_technique: BTreeMap<(&'static str, &'static str), (BTreeSet<String>, Evidence, u64)>,
}

impl Detector for PrivilegedOperation {
    fn id(&self) -> &'static str {
        "privileged-operation"
    }

    fn observe(&mut self, rec: &Record, _out: &mut Vec<Alert>) {
        // A flood of one call is aggregated (crate::limit): the aggregate names the call
        // (its key) and how many there were.
        if rec.kind == crate::limit::AGGREGATED
            && rec.data.get("kind").and_then(Value::as_str) == Some(Kind::SyscallDenied.as_str())
        {
            let name = rec
                .data
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("unknown syscall")
                .to_owned();
            let n = rec.data.get("count").and_then(Value::as_u64).unwrap_or(1);
            let e = self.by_technique.entry(technique_of(&name)).or_default();
            e.0.insert(name);
            e.1.add(rec);
            e.2 += n;
            return;
        }
        if !rec.is(Kind::SyscallDenied) {
            return;
        }
        let name = match rec.data.get("syscall").and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None => match rec.data.get("nr").and_then(Value::as_u64) {
                Some(nr) => format!("syscall #{nr}"),
                None => "unknown syscall".to_owned(),
            },
        };
        if RECORD_ONLY.iter().any(|(n, _)| *n == name) {
            return;
        }
        let e = self.by_technique.entry(technique_of(&name)).or_default();
        e.0.insert(name);
        e.1.add(rec);
        e.2 += 1;
    }

    fn finish(&mut self, _earlier: &[Alert], out: &mut Vec<Alert>) -> Result<(), DetectError> {
        for ((id, name), (calls, ev, n)) in std::mem::take(&mut self.by_technique) {
            out.push(ev.alert(
                self.id(),
                Technique::new(id, name),
                Severity::High,
                format!(
                    "seccomp refused {n} privileged call{}: {}",
                    if n == 1 { "" } else { "s" },
                    some_of(calls.into_iter(), 6)
                ),
            ));
        }
        Ok(())
    }
}
