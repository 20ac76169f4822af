//! airlock's sandbox: a fresh, locked-down root filesystem and container per job, executors
//! behind one trait, limits read back from the kernel, and teardown on every path.
#![deny(missing_docs)]

pub mod cgroup;
pub mod error;
pub mod exe;
pub mod executor;
pub mod filescan;
pub mod helper;
pub mod image;
pub mod job;
pub mod plan;
pub mod protect;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod watch;

pub use error::SandboxError;
pub use job::{gc, run, GcReport, JobOutcome, JobReport, RunOptions};
pub use plan::{JobId, JobPlan, RootfsPlan};
pub use state::Paths;
