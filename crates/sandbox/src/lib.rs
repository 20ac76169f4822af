//! airlock's sandbox: a fresh, locked-down root filesystem and container, executors behind
//! one trait, limits read back from the kernel, and the steps that destroy it again. When a
//! sandbox is built and destroyed, its network and its audit trail are the job engine's
//! (crate `airlock-job`).
#![deny(missing_docs)]

pub mod cgroup;
pub mod error;
pub mod exe;
pub mod executor;
pub mod filescan;
pub mod helper;
pub mod image;
pub mod launch;
pub mod plan;
pub mod protect;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
/// The start frame of a primed sandbox (crate `airlock-gate`).
pub use airlock_gate as start;
pub mod state;
pub mod teardown;
pub mod watch;

pub use error::SandboxError;
pub use plan::{JobId, JobPlan, RootfsPlan};
pub use state::Paths;
