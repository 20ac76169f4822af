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
        let c = ContainerBuilder::new(self.id.clone(), SyscallType::default())
            .with_executor(DefaultExecutor {})
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

/// The executor of `kind` for job `id`, with its state under `root`.
pub fn make(kind: ExecutorKind, id: &str, bundle: PathBuf, root: PathBuf) -> Box<dyn Executor> {
    let root_s = root.to_string_lossy().into_owned();
    match kind {
        ExecutorKind::Libcontainer => Box::new(Libcontainer {
            id: id.to_owned(),
            bundle,
            root,
            container: None,
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
    }
}
