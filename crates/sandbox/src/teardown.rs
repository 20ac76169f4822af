//! Destroying one sandbox, step by step. The job engine (crate `airlock-job`) runs these in
//! order, with the job's network between the executor and the root filesystem (the network
//! namespace is pinned by a file in the job dir); each step collects its failures and never
//! stops the next one.

use std::process::Stdio;

use airlock_audit::{TeardownFailure, TeardownStep};
use airlock_policy::ExecutorKind;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::helper::INIT_PID_FILE;
use crate::launch::{in_job_cgroup, kill_strays, read_pid};
use crate::state::{JobState, Paths};
use crate::{cgroup, rootfs};

/// Ends the sandbox's processes: its helper, its init (which takes the pid namespace with
/// it), and with `thorough` also forks of the helper found by a search of all processes
/// (needed when the helper did not finish normally).
pub fn end_processes(paths: &Paths, state: &JobState, thorough: bool) {
    let id = state.id.as_str();
    if let Some(h) = state.helper.filter(|h| h.alive()) {
        let _ = kill(Pid::from_raw(h.pid), Signal::SIGKILL);
    }
    let init = state
        .init
        .map(|i| i.pid)
        .or_else(|| read_pid(&paths.job_dir(&state.id).join(INIT_PID_FILE)));
    if let Some(pid) = init.filter(|p| in_job_cgroup(*p, id)) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if thorough {
        kill_strays(id, &state.cgroup);
    }
}

/// Kills what is left in the sandbox's cgroups (every process of it is there) and removes
/// them.
pub fn remove_cgroups(state: &JobState, errors: &mut Vec<TeardownFailure>) {
    cgroup::remove(&state.cgroup, errors);
    // Parents after children: a container budget's cgroup holds the containers' own.
    for c in &state.extra_cgroups {
        cgroup::remove(c, errors);
    }
}

/// Removes the OCI runtime's record of the container (the helper normally did).
pub fn remove_executor_state(paths: &Paths, state: &JobState, errors: &mut Vec<TeardownFailure>) {
    let id = state.id.as_str();
    let root = paths.executor_root(state.executor);
    match state.executor {
        ExecutorKind::Libcontainer => {}
        ExecutorKind::Runc | ExecutorKind::Runsc => {
            // Best effort: the directory removal below is what is checked.
            let _ = std::process::Command::new(state.executor.as_str())
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let ex_dir = root.join(id);
    if ex_dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&ex_dir) {
            errors.push(TeardownFailure::new(
                TeardownStep::Executor,
                format!("removing {}: {e}", ex_dir.display()),
            ));
        }
    }
}

/// Unmounts and removes the sandbox's root filesystem and the job dir (never through a
/// mount that is still there).
pub fn remove_rootfs(paths: &Paths, state: &JobState, errors: &mut Vec<TeardownFailure>) {
    rootfs::teardown(&paths.job_dir(&state.id), errors);
}
