//! airlock's job engine: one job from request to teardown, in phases a reader can follow, and
//! `gc` for jobs a killed airlock left behind (docs/sandbox.md, "The job engine").
//!
//! [`Engine::prepare`] and [`Engine::run`] take a job through these phases, each in its own
//! module:
//!
//! 1. **request** (`request.rs`): policy, group, secrets, image, workspace checks, alert
//!    sinks, audit settings → a [`Job`] with its plan. Nothing exists yet.
//! 2. **record** (`record.rs`): the job on the audit record before anything of it exists
//!    (`job.requested`), its record limiter and streaming detectors attached.
//! 3. **launch** (`launch.rs`): the state file, then the job's network attached on a thread
//!    of its own while the sandbox's rootfs and bundle are prepared and its helper spawned;
//!    the go-ahead once both are ready.
//! 4. **supervise** (`supervise.rs`): output streamed, the wall-clock limit, signals to
//!    airlock, the job's init recorded; a pure [`supervise::Supervisor`] decides what to kill
//!    when.
//! 5. **collect** (`collect.rs`): the gateway's and firewall's records merged and redacted,
//!    the file scan of what the job left.
//! 6. **teardown** (`teardown.rs`): processes, cgroups, executor state, network, rootfs,
//!    state file. Every step runs whatever the others did; failures are typed
//!    ([`airlock_audit::TeardownFailure`]), and the state file stays for `gc` if any failed.
//! 7. **finish** (`finish.rs`): records, detector results and alerts, `job.ended`, the egress
//!    log, the [`airlock_audit::JobReport`]; then [`Engine::deliver`] hands the alerts to the
//!    policy's sinks.
//!
//! The engine owns the job's network and its audit trail; the sandbox crate builds and
//! destroys sandboxes. A job has one sandbox today; the network, the record and the teardown
//! are the job's, so a job with several sandboxes (a runner and its containers sharing one
//! network) adds sandboxes to a job rather than jobs to a network. The engine keeps no state
//! between jobs but its paths and pool, so one engine can serve many jobs in a long-lived
//! process; it must not fork from a multi-threaded runtime, which is why `airlock serve` and
//! `airlock drill` run it in an `airlock run` child and read its report.
#![deny(missing_docs)]

mod collect;
mod containers;
pub mod error;
mod finish;
mod launch;
pub mod output;
mod prime;
mod record;
mod request;
pub mod supervise;
pub mod teardown;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

pub use airlock_audit::{
    Failure, FailureKind, JobOutcome, JobReport, TeardownFailure, TeardownStep,
};
use airlock_sandbox::state::JobState;
use airlock_sandbox::{Paths, SandboxError};
pub use error::JobError;
pub use finish::Delivery;
pub use output::OutputBudget;
pub use request::{Job, JobRequest};
pub use teardown::{gc, GcReport};

/// What every job of one airlock shares: its directories, its address pool, and the binary
/// re-executed as each sandbox's helper.
#[derive(Debug, Clone)]
pub struct Engine {
    /// State and data directories.
    pub paths: Paths,
    /// The address pool jobs' networks are leased from.
    pub pool: airlock_net::Pool,
    /// The airlock binary re-executed as helper (normally `/proc/self/exe`).
    pub helper_exe: PathBuf,
}

impl Engine {
    /// An engine on `paths` and `pool`, with this binary as the helper.
    pub fn new(paths: Paths, pool: airlock_net::Pool) -> Result<Self, SandboxError> {
        let helper_exe = std::env::current_exe().map_err(|source| SandboxError::Io {
            what: "locating the airlock binary",
            path: "/proc/self/exe".into(),
            source,
        })?;
        Ok(Self {
            paths,
            pool,
            helper_exe,
        })
    }

    /// Runs a job to completion and tears it down; the job's output is copied to `out` and
    /// `err` as it arrives. An error means the job was never recorded (its audit log or state
    /// directory could not be written); every failure after that is in the report.
    pub fn run(
        &self,
        job: &Job,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> Result<JobReport, SandboxError> {
        self.run_gated(job, out, err, None)
    }

    /// [`Engine::run`] of a primed sandbox (a job whose request named `late_env`): the
    /// sandbox is created and checked, [`airlock_sandbox::start::READY`] is written to `gate`,
    /// and the command starts when a start frame with the late variables arrives there. A
    /// gate closed first (or a signal) retires the sandbox unused: outcome `Interrupted`.
    pub fn run_primed(
        &self,
        job: &Job,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
        gate: std::os::unix::net::UnixStream,
    ) -> Result<JobReport, SandboxError> {
        self.run_gated(job, out, err, Some(gate))
    }

    fn run_gated(
        &self,
        job: &Job,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
        mut gate: Option<std::os::unix::net::UnixStream>,
    ) -> Result<JobReport, SandboxError> {
        let started = Instant::now();
        if job.plan.late_env.is_empty() != gate.is_none() {
            return Err(SandboxError::Config(
                "a primed sandbox needs both its late variables and its gate".into(),
            ));
        }
        let plan = &job.plan;
        self.paths.ensure()?;
        // Every job is on the record before anything of it exists; no log, no job.
        let rec = record::open(self, job)?;
        let mut state = JobState::new(plan, None)?;
        // Firewall denials reach airlock through NFLOG; see airlock_net::nflog for who listens.
        let nflog = launch::nflog_listener(self, plan)?;
        // Persisted before anything exists, so gc can always find what follows.
        state.save(&self.paths)?;
        let mut net = None;
        // A group with containers gets its job's container API (containers.rs).
        let with_containers = job
            .policy
            .group(Some(&plan.group))
            .ok()
            .and_then(|(_, g)| g.containers.clone().map(|c| (c, g.limits.clone())));
        let mut api = None;
        let mut api_failures = Vec::new();
        let result = supervise::Signals::install().and_then(|signals| {
            let r = launch::launch(
                self,
                plan,
                &mut state,
                &mut net,
                &rec.audit,
                with_containers.as_ref(),
                &mut api,
            )
            .and_then(|mut launched| {
                if let Some(g) = gate.as_mut() {
                    let dir = self.paths.job_dir(&plan.id);
                    match prime::await_start(plan, &dir, &mut launched, g, &signals, &rec) {
                        Ok(prime::Primed::Started | prime::Primed::HelperEnded) => {}
                        Ok(prime::Primed::Retired(o)) => {
                            prime::retire(launched);
                            return Ok(o);
                        }
                        Err(e) => {
                            prime::retire(launched);
                            return Err(e);
                        }
                    }
                }
                let server = api
                    .take()
                    .zip(with_containers.clone())
                    .map(|(listener, (c, l))| {
                        containers::Server::start(
                            containers::JobContext {
                                engine: self.clone(),
                                runner: plan.clone(),
                                policy: c,
                                images: job.policy.policy.images.clone(),
                                group_limits: l,
                                audit: rec.audit.sender(),
                            },
                            listener,
                        )
                    });
                let r = supervise::supervise(
                    self,
                    job,
                    &mut state,
                    launched,
                    &rec.audit,
                    &signals,
                    (out, err),
                );
                // The job's containers end with its runner, on every path.
                if let Some(s) = server {
                    api_failures = s.shutdown();
                }
                r
            });
            signals.close();
            r
        });
        let collected = collect::collect(self, plan, net, nflog, &rec.redactor);
        // After a clean exit the helper has deleted the container; anything else gets the
        // full search for stray processes.
        let clean = matches!(result, Ok(JobOutcome::Exited(_) | JobOutcome::Signaled(_)));
        let t = Instant::now();
        let mut failures = api_failures;
        failures.extend(teardown::teardown(
            &teardown::Kernel::new(self),
            &state,
            !clean,
        ));
        tracing::debug!(job = %plan.id, teardown_us = t.elapsed().as_micros() as u64);
        let outcome = result.unwrap_or_else(|e| {
            JobOutcome::Failed(Failure {
                kind: e.kind(),
                message: airlock_text::ErrorChain(&e).to_string(),
            })
        });
        Ok(finish::finish(
            job, rec, outcome, collected, failures, started,
        ))
    }
}
