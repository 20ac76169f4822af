//! Container jobs (`container:`, `services:`, `docker://` steps) without Docker: the GitHub
//! Actions runner's container-hook protocol, what a job may ask of airlock's per-job container
//! API, and the hook script airlock ships (docs/containers.md).
//!
//! The runner runs the hook (`ACTIONS_RUNNER_CONTAINER_HOOKS`) with one JSON request on
//! stdin. airlock's hook ([`HOOK_JS`]) only relays it over the job's container-API socket and
//! relays the answer back ([`wire`]); every decision is taken on the host, by this crate
//! ([`check`]: refusals and the allow-list of `createOptions` in [`options`]) and by the job
//! engine (crate `airlock-job`), which runs each container in a sandbox of its own.
#![deny(missing_docs)]

pub mod check;
pub mod hook;
pub mod options;
pub mod wire;

pub use check::{ContainerSpec, Health, Refused, Role, SystemMount, Volume};
pub use hook::{Command, HookData};

/// The hook the runner runs: it reads the request from stdin, hands it to the container API
/// and relays the answer (output, exit code, the response file). Deliberately minimal: no
/// decision is taken in JavaScript.
pub const HOOK_JS: &str = include_str!("../hook/index.js");

/// Where the container API appears inside the runner's sandbox.
pub const API_DIR: &str = "/run/airlock";
/// The socket, inside [`API_DIR`].
pub const SOCKET: &str = "containers.sock";
/// The hook, relative to [`API_DIR`].
pub const HOOK_PATH: &str = "hook/index.js";
