//! Executors: the OCI runtimes that turn a bundle into a running job. They are driven from the
//! single-threaded helper process (see [`crate::helper`]), never from a multi-threaded one.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use airlock_policy::ExecutorKind;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;

use crate::error::SandboxError;

/// One OCI runtime, split into the steps airlock needs between them: after `create` the job's
/// init process exists but has not run the command, so airlock can check its protections.
pub trait Executor {
    /// Short name for messages.
    fn name(&self) -> &'static str;
    /// Creates the container; returns the host pid of its init process.
    fn create(&mut self) -> Result<i32, SandboxError>;
    /// Whether seccomp, no_new_privs and capabilities are already in force after `create`
    /// (so they can be checked before the command runs).
    fn protections_in_force_after_create(&self) -> bool;
    /// Lets the init process exec the command.
    fn start(&mut self) -> Result<(), SandboxError>;
    /// Removes the container (killing it if needed).
    fn delete(&mut self) -> Result<(), SandboxError>;
}

/// youki's libcontainer, embedded.
pub struct Libcontainer {
    id: String,
    bundle: PathBuf,
    root: PathBuf,
    container: Option<Container>,
    late_env: Option<LateEnvPipe>,
}

/// The pipe a primed sandbox's init reads its late environment from (crate::start): both
/// ends are inherited by the init when libcontainer forks it; both are close-on-exec, so the
/// command never holds them.
#[derive(Debug, Clone, Copy)]
pub struct LateEnvPipe {
    /// The end the init reads.
    pub read: i32,
    /// The end the helper writes (the init closes its own copy before reading).
    pub write: i32,
}

/// libcontainer's default workload, after reading the late environment in the init process
/// (after the start signal, before exec; seccomp and every other protection are in force).
#[derive(Clone)]
struct LateEnvExecutor(LateEnvPipe);

impl libcontainer::workload::Executor for LateEnvExecutor {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        use std::os::fd::FromRawFd;
        let fail = |m: String| libcontainer::workload::ExecutorError::Other(m);
        // SAFETY: both fds were made by the helper for this process and are used only here;
        // closing our write end lets a frame cut short end in EOF instead of a hang.
        let mut r = unsafe {
            libc::close(self.0.write);
            std::fs::File::from_raw_fd(self.0.read)
        };
        let frame = crate::start::read_frame(&mut r)
            .map_err(|e| fail(format!("reading the late environment: {e}")))?
            .ok_or_else(|| fail("no late environment arrived".into()))?;
        drop(r);
        let env = crate::start::decode(&frame).map_err(|e| fail(e.to_string()))?;
        for (k, v) in env {
            // SAFETY: the init process is single-threaded (libcontainer forked it).
            unsafe { std::env::set_var(k, v) };
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

fn lc_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Executor {
        executor: "libcontainer",
        message: e.to_string(),
    }
}

impl Executor for Libcontainer {
    fn name(&self) -> &'static str {
        "libcontainer"
    }

    fn create(&mut self) -> Result<i32, SandboxError> {
        std::fs::create_dir_all(&self.root).map_err(SandboxError::io("creating", &self.root))?;
        let b = ContainerBuilder::new(self.id.clone(), SyscallType::default());
        let b = match self.late_env {
            Some(p) => b.with_executor(LateEnvExecutor(p)),
            None => b.with_executor(DefaultExecutor {}),
        };
        let c = b
            .with_root_path(&self.root)
            .map_err(lc_err)?
            .validate_id()
            .map_err(lc_err)?
            .as_init(&self.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(lc_err)?;
        let pid = c
            .pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| lc_err("no init pid"))?;
        self.container = Some(c);
        Ok(pid)
    }

    fn protections_in_force_after_create(&self) -> bool {
        // libcontainer applies seccomp (with no_new_privs) and drops capabilities before it
        // waits for the start signal.
        true
    }

    fn start(&mut self) -> Result<(), SandboxError> {
        self.container
            .as_mut()
            .ok_or_else(|| lc_err("start before create"))?
            .start()
            .map_err(lc_err)
    }

    fn delete(&mut self) -> Result<(), SandboxError> {
        let c = match self.container.as_mut() {
            Some(c) => c,
            None => {
                let dir = self.root.join(&self.id);
                if !dir.exists() {
                    return Ok(());
                }
                self.container = Some(Container::load(dir).map_err(lc_err)?);
                self.container.as_mut().ok_or_else(|| lc_err("load"))?
            }
        };
        c.delete(true).map_err(lc_err)
    }
}

/// An external OCI runtime binary (`runc`, `runsc`) driven through its CLI.
pub struct OciCli {
    bin: &'static str,
    global: Vec<String>,
    id: String,
    bundle: PathBuf,
}

impl OciCli {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin);
        c.args(&self.global).args(args);
        c
    }

    fn err(&self, message: String) -> SandboxError {
        SandboxError::Executor {
            executor: self.bin,
            message,
        }
    }

    fn check(&self, mut c: Command, what: &str) -> Result<(), SandboxError> {
        let st = c
            .status()
            .map_err(|e| self.err(format!("cannot run {} ({e}); is it installed?", self.bin)))?;
        if st.success() {
            Ok(())
        } else {
            Err(self.err(format!("`{} {what}` failed ({st})", self.bin)))
        }
    }
}

impl Executor for OciCli {
    fn name(&self) -> &'static str {
        self.bin
    }

    fn create(&mut self) -> Result<i32, SandboxError> {
        let pid_file = self.bundle.join("runtime.pid");
        let bundle = self.bundle.to_string_lossy().into_owned();
        let pf = pid_file.to_string_lossy().into_owned();
        // Stdio is inherited: with `terminal: false` the runtime passes its own stdio to the
        // job, and the helper's stdio are the pipes airlock streams from.
        let c = self.cmd(&["create", "--bundle", &bundle, "--pid-file", &pf, &self.id]);
        self.check(c, "create")?;
        let s =
            std::fs::read_to_string(&pid_file).map_err(SandboxError::io("reading", &pid_file))?;
        s.trim()
            .parse()
            .map_err(|_| self.err(format!("bad pid file content {s:?}")))
    }

    fn protections_in_force_after_create(&self) -> bool {
        // runc applies seccomp right before exec, after `start`: checked by the test suite
        // instead (docs/sandbox.md).
        false
    }

    fn start(&mut self) -> Result<(), SandboxError> {
        let mut c = self.cmd(&["start", &self.id]);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        self.check(c, "start")
    }

    fn delete(&mut self) -> Result<(), SandboxError> {
        let mut c = self.cmd(&["delete", "--force", &self.id]);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status();
        // `delete` of a container that no longer exists fails; what matters is that the
        // runtime's state for it is gone.
        let mut st = self.cmd(&["state", &self.id]);
        st.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match st.status() {
            Ok(s) if s.success() => {
                Err(self.err(format!("container {} still exists after delete", self.id)))
            }
            _ => Ok(()),
        }
    }
}

/// The executor of `kind` for job `id`, with its state under `root`. `late_env`: a primed
/// sandbox's pipe (crate::start), which only libcontainer can read in the job's init; the
/// job engine refuses primed sandboxes of other executors before anything exists.
pub fn make(
    kind: ExecutorKind,
    id: &str,
    bundle: PathBuf,
    root: PathBuf,
    late_env: Option<LateEnvPipe>,
) -> Result<Box<dyn Executor>, SandboxError> {
    let root_s = root.to_string_lossy().into_owned();
    if late_env.is_some() && kind != ExecutorKind::Libcontainer {
        return Err(SandboxError::Executor {
            executor: "helper",
            message: format!("a primed sandbox needs libcontainer, not {}", kind.as_str()),
        });
    }
    Ok(match kind {
        ExecutorKind::Libcontainer => Box::new(Libcontainer {
            id: id.to_owned(),
            bundle,
            root,
            container: None,
            late_env,
        }),
        ExecutorKind::Runc => Box::new(OciCli {
            bin: "runc",
            global: vec!["--root".into(), root_s],
            id: id.to_owned(),
            bundle,
        }),
        // Debian's gVisor build works here only with its own network stack disabled and the
        // ptrace platform (docs/sandbox.md, "Executors"): a runsc job has loopback only, no
        // per-job network and no egress gateway (the job engine skips them for runsc).
        ExecutorKind::Runsc => Box::new(OciCli {
            bin: "runsc",
            global: vec![
                "--root".into(),
                root_s,
                "--network=none".into(),
                "--platform=ptrace".into(),
                "--oci-seccomp".into(),
            ],
            id: id.to_owned(),
            bundle,
        }),
    })
}
