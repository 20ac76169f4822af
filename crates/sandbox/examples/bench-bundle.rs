//! Benchmark baseline: the same job as `airlock run -- /bin/true`, minus airlock.
//!
//! `bench-bundle prepare DIR` writes an OCI bundle (airlock's own spec and base layer, on a
//! plain directory instead of a per-job overlay) once. `bench-bundle run DIR` runs it with
//! libcontainer directly: create, start, wait, delete, in this single-threaded process. The
//! same bundle serves `runc run`. scripts/bench.sh compares all of them with hyperfine.

use std::path::Path;

use airlock_policy::Group;
use airlock_sandbox::plan::JobPlan;
use airlock_sandbox::rootfs::{build_base, write_job_etc};
use airlock_sandbox::spec::{self, HostLayout};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::sys::wait::{waitpid, WaitPidFlag};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (cmd, dir) = match (args.get(1), args.get(2)) {
        (Some(c), Some(d)) => (c.as_str(), Path::new(d)),
        _ => return Err("usage: bench-bundle prepare|run DIR".into()),
    };
    match cmd {
        "prepare" => {
            let plan = JobPlan::new(
                "bench",
                &Group::default(),
                vec!["/bin/true".into()],
                None,
                &|_| None,
                vec![],
                None,
            )?;
            let layout = HostLayout::detect(Path::new("/"));
            build_base(&dir.join("rootfs"), &plan, &layout)?;
            write_job_etc(&dir.join("rootfs"), &plan, None)?;
            let spec = spec::build(&plan, &layout, 1024, None, None)?;
            std::fs::write(dir.join("config.json"), serde_json::to_vec(&spec)?)?;
        }
        "run" => {
            let id = format!("bench{}", std::process::id());
            let mut c = ContainerBuilder::new(id, SyscallType::default())
                .with_executor(DefaultExecutor {})
                .with_root_path(dir.join("state"))?
                .as_init(dir)
                .with_systemd(false)
                .with_detach(true)
                .build()?;
            let pid = c.pid().ok_or("no pid")?;
            c.start()?;
            waitpid(pid, Some(WaitPidFlag::__WALL))?;
            c.delete(true)?;
        }
        _ => return Err("usage: bench-bundle prepare|run DIR".into()),
    }
    Ok(())
}
