//! Credential access: read the runner's memory. The attack process is the job's entry process
//! — the place of the runner (`Runner.Worker`) — and holds a secret in its memory, in an open
//! (unlinked) file and, like every process airlock starts, in its environment. It then starts
//! steps, as the runner does, that try to take the secret: `/proc/PID/mem` (and through a
//! thread's `task/TID/mem`), `/proc/PID/environ`, the victim's open file through
//! `/proc/PID/fd/N`, its `/proc/PID/maps`, `process_vm_readv`, and writing its memory
//! (`/proc/PID/mem` opened for writing, nothing written; `process_vm_writev` into a scratch
//! buffer the victim never reads). Both steps are ordinary, dumpable processes of the job: a
//! re-exec of this program that makes itself dumpable again, and `/bin/sh` with `cat`.
//!
//! Harmless if it works: nothing is written to the victim except into its scratch buffer,
//! and the secret is random and dies with the job. What is observable: `process_vm_*` is
//! refused by seccomp and recorded (an alert); a refused open of a `/proc` file is not seen
//! by anything airlock runs (docs/sandbox.md).

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use super::util::{errno, Step};
use super::{detector, Attack, AttackResult, Category, Expect};

/// What the victim tells its attackers (environment variables of the step).
const TARGET: &str = "PROCMEM_TARGET";
const ADDR: &str = "PROCMEM_ADDR";
const LEN: &str = "PROCMEM_LEN";
const HASH: &str = "PROCMEM_HASH";
const FD: &str = "PROCMEM_FD";
const SCRATCH: &str = "PROCMEM_SCRATCH";

/// FNV-1a: the attacker proves it read the secret without being given it.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `proc-mem-read`: the victim (the job's entry process).
pub struct ProcMemRead;

impl Attack for ProcMemRead {
    fn id(&self) -> &'static str {
        "proc-mem-read"
    }
    fn title(&self) -> &'static str {
        "a step reads the runner's memory, environment and open files (/proc/PID/mem, environ, fd; process_vm_readv)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        // The refused process_vm_readv/process_vm_writev are seccomp denials, recorded.
        Expect::BlockedAndDetected(detector::PRIVILEGED_OPERATION)
    }
    fn run(&self) -> AttackResult {
        let mut s = Vec::new();
        let secret = match crate::victim::nonce() {
            Ok(n) => format!("proc-mem-secret-{n}"),
            Err(e) => {
                s.push(Step::failed("make a secret", e.to_string()));
                return AttackResult::from_steps(self.id(), &s);
            }
        };
        let held = secret.clone().into_bytes();
        let scratch = vec![0u8; 64];
        let file = std::env::temp_dir().join(format!("procmem-{}", std::process::id()));
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&file)
        {
            Ok(f) => f,
            Err(e) => {
                s.push(Step::failed("create the secret file", e.to_string()));
                return AttackResult::from_steps(self.id(), &s);
            }
        };
        let _ = std::fs::remove_file(&file);
        let _ = f.write_all(&held);
        let me = std::process::id().to_string();
        let env = [
            (TARGET, me.clone()),
            (ADDR, (held.as_ptr() as usize).to_string()),
            (LEN, held.len().to_string()),
            (HASH, fnv(&held).to_string()),
            (FD, f.as_raw_fd().to_string()),
            (SCRATCH, (scratch.as_ptr() as usize).to_string()),
        ];
        // Step 1: this program again, as a helper; its result line carries its steps.
        let out = Command::new("/proc/self/exe")
            .arg(ATTACKER)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output();
        match out {
            Ok(o) => match String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| serde_json::from_str::<AttackResult>(l).ok())
            {
                Some(r) => s.push(Step {
                    what: "a step reading the victim".into(),
                    succeeded: r.succeeded,
                    how: format!("[{}]", r.detail),
                }),
                None => s.push(Step::failed("a step reading the victim", "no result")),
            },
            Err(e) => s.push(Step::failed("start a step", e.to_string())),
        }
        // Step 2: a shell, as a workflow step would be.
        if std::path::Path::new("/bin/sh").exists() {
            let script = "cat /proc/$0/environ | wc -c; cat /proc/$0/fd/$1 | wc -c";
            match Command::new("/bin/sh")
                .args(["-c", script, &me, &f.as_raw_fd().to_string()])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
            {
                Ok(o) => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    let n: Vec<u64> = text
                        .split_whitespace()
                        .filter_map(|w| w.parse().ok())
                        .collect();
                    let step = |what: &str, i: usize| match n.get(i) {
                        Some(&b) if b > 0 => Step::ok(what, format!("{b} bytes")),
                        _ => Step::failed(what, "nothing read"),
                    };
                    s.push(step("sh: cat /proc/VICTIM/environ", 0));
                    s.push(step("sh: cat /proc/VICTIM/fd/N (the secret file)", 1));
                }
                Err(e) => s.push(Step::failed("start /bin/sh", e.to_string())),
            }
        }
        // Keep what the attackers were after alive until they are done.
        std::hint::black_box((&held, &scratch, &f));
        AttackResult::from_steps(self.id(), &s)
    }
}

const ATTACKER: &str = "proc-mem-read-step";

/// `proc-mem-read-step`: the attacking step (helper only).
pub struct ProcMemReadStep;

fn env_num(k: &str) -> Option<u64> {
    std::env::var(k).ok()?.parse().ok()
}

/// Reads `len` bytes at `addr` from the open memory file `path`.
fn read_mem(path: &str, addr: u64, len: usize, hash: u64) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("open: {e}"))?;
    f.seek(SeekFrom::Start(addr))
        .map_err(|e| format!("seek: {e}"))?;
    let mut b = vec![0u8; len];
    f.read_exact(&mut b).map_err(|e| format!("read: {e}"))?;
    Ok(if fnv(&b) == hash {
        "read the secret".to_owned()
    } else {
        format!("read {len} bytes (not the secret)")
    })
}

impl Attack for ProcMemReadStep {
    fn id(&self) -> &'static str {
        ATTACKER
    }
    fn title(&self) -> &'static str {
        "helper of proc-mem-read: the step that reads the victim"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn helper_only(&self) -> bool {
        true
    }
    fn run(&self) -> AttackResult {
        // A step is an ordinary process: undo what running this (protected) program did.
        // SAFETY: prctl(PR_SET_DUMPABLE) changes only this process.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        let mut s = Vec::new();
        let (Some(pid), Some(addr), Some(len), Some(hash), Some(fd), Some(scratch)) = (
            env_num(TARGET),
            env_num(ADDR),
            env_num(LEN),
            env_num(HASH),
            env_num(FD),
            env_num(SCRATCH),
        ) else {
            s.push(Step::failed("read the victim's description", "missing"));
            return AttackResult::from_steps(self.id(), &s);
        };
        let len = usize::try_from(len).unwrap_or(0).min(4096);
        // The channel itself works on an ordinary process: its own memory.
        let marker = b"own-memory-marker".to_vec();
        let own = read_mem(
            "/proc/self/mem",
            marker.as_ptr() as u64,
            marker.len(),
            fnv(&marker),
        );
        if own.as_deref() != Ok("read the secret") {
            // Without the control the block proves nothing: count it as not shown blocked.
            s.push(Step::ok(
                "control: read its own /proc/self/mem (inconclusive without it)",
                format!("{own:?}"),
            ));
        }
        let mut targets = vec![pid];
        if pid != 1 {
            targets.push(1);
        }
        for t in targets {
            s.push(Step::from(
                format!("read /proc/{t}/mem at the secret"),
                read_mem(&format!("/proc/{t}/mem"), addr, len, hash),
            ));
            s.push(Step::from(
                format!("read /proc/{t}/task/{t}/mem"),
                read_mem(&format!("/proc/{t}/task/{t}/mem"), addr, len, hash),
            ));
            for what in ["environ", "maps"] {
                let p = format!("/proc/{t}/{what}");
                s.push(Step::from(
                    format!("read {p}"),
                    std::fs::read(&p)
                        .map(|b| format!("{} bytes", b.len()))
                        .map_err(|e| e.to_string()),
                ));
            }
            s.push(super::util::open_for_write(&format!("/proc/{t}/mem")));
        }
        let p = format!("/proc/{pid}/fd/{fd}");
        s.push(Step::from(
            format!("read the victim's open secret file through {p}"),
            std::fs::read(&p)
                .map_err(|e| e.to_string())
                .map(|b| match fnv(&b) == hash {
                    true => "read the secret".to_owned(),
                    false => format!("{} bytes", b.len()),
                }),
        ));
        // process_vm_readv / process_vm_writev (the write goes into the scratch buffer).
        let mut buf = vec![0u8; len];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        let Ok(pid_t) = libc::pid_t::try_from(pid) else {
            return AttackResult::from_steps(self.id(), &s);
        };
        // SAFETY: the local iovec points into `buf`, which lives across the call.
        let n = unsafe { libc::process_vm_readv(pid_t, &local, 1, &remote, 1, 0) };
        s.push(if n < 0 {
            Step::failed("process_vm_readv of the secret", errno())
        } else {
            Step::ok("process_vm_readv of the secret", format!("{n} bytes"))
        });
        let zeros = [0u8; 8];
        let local = libc::iovec {
            iov_base: zeros.as_ptr() as *mut libc::c_void,
            iov_len: zeros.len(),
        };
        let remote = libc::iovec {
            iov_base: scratch as *mut libc::c_void,
            iov_len: zeros.len(),
        };
        // SAFETY: the local iovec points into `zeros`, only read by the kernel.
        let n = unsafe { libc::process_vm_writev(pid_t, &local, 1, &remote, 1, 0) };
        s.push(if n < 0 {
            Step::failed(
                "process_vm_writev into the victim's scratch buffer",
                errno(),
            )
        } else {
            Step::ok(
                "process_vm_writev into the victim's scratch buffer",
                format!("{n} bytes"),
            )
        });
        AttackResult::from_steps(self.id(), &s)
    }
}
