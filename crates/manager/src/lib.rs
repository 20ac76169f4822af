//! `airlock serve`: the runner manager. GitHub `workflow_job` webhooks become one
//! JIT-registered ephemeral runner per job, each started in its own sandbox by `airlock run`;
//! groups with a `scale_set` get their jobs from GitHub's runner scale sets instead (a long
//! poll from inside the network, no inbound endpoint).
//!
//! The pieces, each in its own module:
//! - [`config`]: the `serve.toml` file;
//! - [`webhook`]: signature verification and the minimal `workflow_job` model;
//! - [`github`]: the seam to GitHub's REST API (a trait; the `airlock-github` crate implements it);
//! - [`routing`]: which runner group of the policy a queued job goes to, or why none;
//! - [`state`]: the SQLite store (deliveries, jobs, runners), every transition persisted before
//!   it is acted on;
//! - [`launcher`]: the seam that starts a sandboxed runner (the real one runs `airlock run`);
//! - [`manager`]: queue, capacity, lifecycle and reconciliation;
//! - [`server`]: the axum endpoints (`/webhook`, `/healthz`, `/readyz`, `/metrics`);
//! - [`metrics`]: Prometheus metrics.
#![deny(missing_docs)]

pub mod config;
pub mod github;
pub mod launcher;
pub mod listener;
pub mod manager;
pub mod metrics;
pub mod rest;
pub mod routing;
pub mod server;
pub mod state;
pub mod webhook;

pub use airlock_secret::Secret;
pub use config::{ConfigError, ServeConfig};
pub use github::{ApiError, GitHub, JitConfig, JitRequest, RunnerInfo};
pub use launcher::{LaunchError, LaunchSpec, Launcher, ProcessLauncher, RunExit};
pub use manager::{delete_scale_set, list_scale_sets, ScaleSetOptions};
pub use manager::{Manager, ManagerError};
pub use manager::{ManagerOptions, ReconcileReport};
pub use rest::RestGitHub;
pub use server::{router, router_with, serve, serve_with, AppState};
