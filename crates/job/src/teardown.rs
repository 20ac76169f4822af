//! Phase 6: removing everything of a job, and `gc` for jobs whose airlock is gone.
//!
//! The order is fixed: persist that a teardown is under way, end the processes, remove the
//! cgroups, the executor's record, the network (after the processes: nothing holds the
//! namespace any more; before the job dir: the namespace is pinned by a file in it), the
//! root filesystem, and finally the state file — only if nothing failed, so `gc` can try
//! again. Every step runs whatever the others did. The kernel-facing steps are behind
//! [`Host`], so the order and the failure paths are unit-tested with a fake.

pub use airlock_audit::report::{GcError, GcReport};
use airlock_audit::{TeardownFailure, TeardownStep};
use airlock_sandbox::plan::JobId;
use airlock_sandbox::state::{JobState, Paths, Status};
use airlock_sandbox::teardown as sandbox;

use crate::Engine;

/// The steps of a teardown, as the host carries them out.
pub trait Host {
    /// Persists `state` (marked as tearing down).
    fn save_state(&self, state: &JobState) -> Result<(), String>;
    /// Ends the job's processes (`thorough`: also searches for forks of its helper).
    fn end_processes(&self, state: &JobState, thorough: bool);
    /// Removes the job's cgroups.
    fn remove_cgroups(&self, state: &JobState, errors: &mut Vec<TeardownFailure>);
    /// Removes the executor's record of the container.
    fn remove_executor_state(&self, state: &JobState, errors: &mut Vec<TeardownFailure>);
    /// Removes the job's network, if it had one.
    fn remove_network(&self, state: &JobState, thorough: bool, errors: &mut Vec<TeardownFailure>);
    /// Unmounts and removes the job's root filesystem and directory.
    fn remove_rootfs(&self, state: &JobState, errors: &mut Vec<TeardownFailure>);
    /// Removes the job's state file (a missing one is not an error).
    fn remove_state(&self, id: &JobId) -> Result<(), String>;
    /// Asks the job's live airlock to end it (SIGTERM: it tears its job down and records
    /// why) and waits, bounded, for it to exit. Returns whether it did.
    fn stop_owner(&self, state: &JobState) -> bool;
    /// Whether the job's state file is still there.
    fn state_exists(&self, id: &JobId) -> bool;
}

/// How long `gc --force` waits for a live airlock to tear its own job down.
const OWNER_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// Removes everything of a job. `thorough` also searches all processes for forks of the
/// job's helper (needed when the helper did not finish normally). Never stops at the first
/// failure; returns all of them. The state file stays if anything failed.
pub fn teardown(host: &dyn Host, state: &JobState, thorough: bool) -> Vec<TeardownFailure> {
    let mut errors = Vec::new();
    // Persisted before acting, like every other step (gc then knows a teardown was under way).
    let mut marked = state.clone();
    marked.status = Status::TearingDown;
    debug_assert!(state.status.can_become(Status::TearingDown));
    if let Err(e) = host.save_state(&marked) {
        errors.push(TeardownFailure::new(
            TeardownStep::State,
            format!("recording teardown: {e}"),
        ));
    }
    host.end_processes(state, thorough);
    // Every process of the job is in its cgroup: what is left there is killed with it.
    host.remove_cgroups(state, &mut errors);
    host.remove_executor_state(state, &mut errors);
    host.remove_network(state, thorough, &mut errors);
    host.remove_rootfs(state, &mut errors);
    if errors.is_empty() {
        if let Err(e) = host.remove_state(&state.id) {
            errors.push(TeardownFailure::new(TeardownStep::State, e));
        }
    }
    errors
}

/// The real host: the sandbox crate's steps and the job's network.
pub struct Kernel<'a> {
    engine: &'a Engine,
}

impl<'a> Kernel<'a> {
    /// Teardown on this machine, with `engine`'s paths and pool.
    pub fn new(engine: &'a Engine) -> Self {
        Self { engine }
    }
    fn paths(&self) -> &Paths {
        &self.engine.paths
    }
}

impl Host for Kernel<'_> {
    fn save_state(&self, state: &JobState) -> Result<(), String> {
        state
            .save(self.paths())
            .map_err(|e| airlock_text::ErrorChain(&e).to_string())
    }
    fn end_processes(&self, state: &JobState, thorough: bool) {
        sandbox::end_processes(self.paths(), state, thorough);
    }
    fn remove_cgroups(&self, state: &JobState, errors: &mut Vec<TeardownFailure>) {
        sandbox::remove_cgroups(state, errors);
    }
    fn remove_executor_state(&self, state: &JobState, errors: &mut Vec<TeardownFailure>) {
        sandbox::remove_executor_state(self.paths(), state, errors);
    }
    fn remove_network(&self, state: &JobState, thorough: bool, errors: &mut Vec<TeardownFailure>) {
        let Some(st) = &state.net else {
            // An airlock killed between leasing the job's addresses and recording them left
            // only the lease (nothing of the network is made before it is recorded). Only gc
            // looks: it is a scan of the lease directory.
            if let Some(lease) = thorough
                .then(|| self.engine.pool.lease_of(state.id.as_str()))
                .flatten()
            {
                if let Err(e) = self.engine.pool.release(&lease) {
                    errors.push(TeardownFailure::new(
                        TeardownStep::Network,
                        airlock_text::ErrorChain(&e),
                    ));
                }
            }
            return;
        };
        let t = std::time::Instant::now();
        let ns_file = airlock_net::link::ns_file(&self.paths().job_dir(&state.id));
        airlock_net::undo(st, &ns_file, &self.engine.pool, thorough, errors);
        // scripts/bench-net.sh reads this.
        tracing::debug!(
            job = state.id.as_str(),
            net_detach_us = t.elapsed().as_micros() as u64
        );
    }
    fn remove_rootfs(&self, state: &JobState, errors: &mut Vec<TeardownFailure>) {
        sandbox::remove_rootfs(self.paths(), state, errors);
    }
    fn remove_state(&self, id: &JobId) -> Result<(), String> {
        let sf = self.paths().state_file(id);
        match std::fs::remove_file(&sf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", sf.display())),
        }
    }
    fn stop_owner(&self, state: &JobState) -> bool {
        if !state.owner.alive() {
            return true;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(state.owner.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + OWNER_GRACE;
        while state.owner.alive() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }
    fn state_exists(&self, id: &JobId) -> bool {
        self.paths().state_file(id).exists()
    }
}

/// Tears down every job whose owning airlock is gone (or every job, with `force`).
pub fn gc(engine: &Engine, force: bool) -> GcReport {
    let paths = &engine.paths;
    let (states, bad) = JobState::list(paths);
    let mut r = collect_garbage(&Kernel::new(engine), states, force);
    r.errors.extend(bad.iter().map(|e| GcError {
        job: None,
        failure: TeardownFailure::new(TeardownStep::State, airlock_text::ErrorChain(e)),
    }));
    // Address leases of jobs that have no state (a crash between leasing and saving).
    let live = |id: &str| JobId::parse(id).is_ok_and(|id| paths.state_file(&id).exists());
    engine.pool.sweep(&live);
    // Leftover temporary state files from an interrupted save.
    if let Ok(rd) = std::fs::read_dir(paths.jobs()) {
        for e in rd.flatten() {
            if e.path().to_string_lossy().ends_with(".json.tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    r
}

/// The decisions of `gc` over the jobs' states: a job whose airlock is alive is left alone
/// unless `force`, which first asks that airlock to end it (it tears down and records the
/// job's end itself) and tears down whatever is left; every other job is torn down
/// thoroughly.
fn collect_garbage(host: &dyn Host, mut states: Vec<JobState>, force: bool) -> GcReport {
    let mut r = GcReport::default();
    // A job's containers first: their cgroups lie in the job's container budget, which goes
    // with the job.
    states.sort_by_key(|s| s.parent.is_none());
    // Each live airlock is asked (and waited for) once, whatever number of states it owns
    // (a job and its containers): one that did not end is not waited for again.
    let mut asked = Vec::new();
    for s in states {
        if s.owner.alive() {
            if !force {
                r.skipped_live.push(s.id.to_string());
                continue;
            }
            // Not a teardown under a running airlock: it is asked to end first.
            if !asked.contains(&s.owner) {
                asked.push(s.owner);
                if host.stop_owner(&s) && !host.state_exists(&s.id) {
                    r.removed.push(s.id.to_string());
                    continue;
                }
            }
        } else if !host.state_exists(&s.id) {
            // Its airlock (stopped for an earlier state, e.g. its job's container) took it.
            r.removed.push(s.id.to_string());
            continue;
        }
        let errs = teardown(host, &s, true);
        if errs.is_empty() {
            r.removed.push(s.id.to_string());
        } else {
            r.errors.extend(errs.into_iter().map(|failure| GcError {
                job: Some(s.id.to_string()),
                failure,
            }));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    use airlock_policy::ExecutorKind;
    use airlock_sandbox::state::ProcRef;

    /// Records the steps it is asked to take and fails the ones it is told to.
    #[derive(Default)]
    struct Fake {
        steps: RefCell<Vec<String>>,
        failing: Vec<TeardownStep>,
        /// A live owner asked to stop does, and takes its job's state with it.
        owner_ends: bool,
    }

    impl Fake {
        fn failing(steps: &[TeardownStep]) -> Self {
            Self {
                failing: steps.to_vec(),
                ..Self::default()
            }
        }
        fn step(&self, name: &str, step: TeardownStep, errors: &mut Vec<TeardownFailure>) {
            self.steps.borrow_mut().push(name.to_owned());
            if self.failing.contains(&step) {
                errors.push(TeardownFailure::new(step, format!("{name} failed")));
            }
        }
        fn steps(&self) -> Vec<String> {
            self.steps.borrow().clone()
        }
    }

    impl Host for Fake {
        fn save_state(&self, state: &JobState) -> Result<(), String> {
            self.steps
                .borrow_mut()
                .push(format!("save {:?}", state.status));
            Ok(())
        }
        fn end_processes(&self, _: &JobState, thorough: bool) {
            self.steps
                .borrow_mut()
                .push(format!("kill thorough={thorough}"));
        }
        fn remove_cgroups(&self, _: &JobState, e: &mut Vec<TeardownFailure>) {
            self.step("cgroups", TeardownStep::Cgroup, e);
        }
        fn remove_executor_state(&self, _: &JobState, e: &mut Vec<TeardownFailure>) {
            self.step("executor", TeardownStep::Executor, e);
        }
        fn remove_network(&self, _: &JobState, _: bool, e: &mut Vec<TeardownFailure>) {
            self.step("network", TeardownStep::Network, e);
        }
        fn remove_rootfs(&self, _: &JobState, e: &mut Vec<TeardownFailure>) {
            self.step("rootfs", TeardownStep::Rootfs, e);
        }
        fn remove_state(&self, _: &JobId) -> Result<(), String> {
            self.steps.borrow_mut().push("remove state".into());
            Ok(())
        }
        fn stop_owner(&self, _: &JobState) -> bool {
            self.steps.borrow_mut().push("stop owner".into());
            self.owner_ends
        }
        fn state_exists(&self, _: &JobId) -> bool {
            !self.owner_ends
        }
    }

    fn state(owner: ProcRef) -> JobState {
        JobState {
            id: JobId::random(),
            group: "g".into(),
            executor: ExecutorKind::Libcontainer,
            status: Status::Running,
            owner,
            helper: None,
            init: None,
            cgroup: "airlock/x".into(),
            created: 0,
            net: None,
            parent: None,
            extra_cgroups: Vec::new(),
        }
    }

    #[test]
    fn gc_removes_a_jobs_containers_before_the_job() {
        let job = state(dead_owner());
        let mut child = state(dead_owner());
        child.parent = Some(job.id.clone());
        let f = Fake::default();
        let r = collect_garbage(&f, vec![job.clone(), child.clone()], false);
        assert_eq!(r.removed, [child.id.to_string(), job.id.to_string()]);
    }

    fn dead_owner() -> ProcRef {
        // No process has start time 0 (the kernel counts from boot, and pid 1 started first).
        ProcRef {
            pid: i32::MAX,
            start_time: 0,
        }
    }

    #[test]
    fn every_step_runs_in_order_and_the_state_goes_last() {
        let f = Fake::default();
        let errors = teardown(&f, &state(dead_owner()), false);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            f.steps(),
            [
                "save TearingDown",
                "kill thorough=false",
                "cgroups",
                "executor",
                "network",
                "rootfs",
                "remove state"
            ]
        );
    }

    #[test]
    fn a_failed_step_stops_nothing_and_keeps_the_state_for_gc() {
        let f = Fake::failing(&[TeardownStep::Cgroup, TeardownStep::Network]);
        let errors = teardown(&f, &state(dead_owner()), true);
        let steps: Vec<_> = errors.iter().map(|e| e.step).collect();
        assert_eq!(steps, [TeardownStep::Cgroup, TeardownStep::Network]);
        assert!(errors.iter().all(|e| e.step.gc_can_retry()));
        let done = f.steps();
        assert!(done.contains(&"rootfs".to_owned()), "{done:?}");
        assert!(!done.contains(&"remove state".to_owned()), "{done:?}");
    }

    #[test]
    fn gc_leaves_jobs_of_a_live_airlock_alone_unless_forced() {
        let me = ProcRef::of(std::process::id() as i32).expect("own start time");
        let (live, dead) = (state(me), state(dead_owner()));
        let f = Fake::default();
        let r = collect_garbage(&f, vec![live.clone(), dead.clone()], false);
        assert_eq!(r.skipped_live, [live.id.to_string()]);
        assert_eq!(r.removed, [dead.id.to_string()]);
        assert!(f.steps().contains(&"kill thorough=true".to_owned()));

        // Forced, with a live airlock that does not end (or leaves its state): asked first,
        // then torn down here; a failure is reported.
        let f = Fake::failing(&[TeardownStep::Rootfs]);
        let r = collect_garbage(&f, vec![live.clone()], true);
        assert_eq!(f.steps().first().map(String::as_str), Some("stop owner"));
        assert!(r.removed.is_empty() && r.skipped_live.is_empty());
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].job, Some(live.id.to_string()));
        assert_eq!(r.errors[0].failure.step, TeardownStep::Rootfs);

        // Forced, with a live airlock that ends its job itself: nothing is torn down under it.
        let f = Fake {
            owner_ends: true,
            ..Fake::default()
        };
        let r = collect_garbage(&f, vec![live.clone()], true);
        assert_eq!(f.steps(), ["stop owner"]);
        assert_eq!(r.removed, [live.id.to_string()]);

        // A live airlock that owns several states and does not end is asked once.
        let mut container = state(me);
        container.parent = Some(live.id.clone());
        let f = Fake::default();
        let r = collect_garbage(&f, vec![live.clone(), container], true);
        let asked = f.steps().iter().filter(|s| *s == "stop owner").count();
        assert_eq!(asked, 1, "{:?}", f.steps());
        assert_eq!(r.removed.len(), 2, "{r:?}");
    }
}
