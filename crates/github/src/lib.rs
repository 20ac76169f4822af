//! The GitHub side of `airlock serve`.
//!
//! - [`webhook`]: `X-Hub-Signature-256` verification (constant time) and the typed
//!   `workflow_job` event.
//! - [`auth`] and [`GitHubClient`]: GitHub App JWT → cached installation token (or a
//!   personal access token), per-job narrowed tokens and their revocation, JIT runner
//!   configs, runners and runner groups, with typed errors and retries ([`RetryPolicy`]).
//! - `fake` (feature `fake`): an in-process fake GitHub with fault injection and a minimal job
//!   service, served by the `airlock-fake-github` binary; `airlock-fake-runner` plays the
//!   runner.
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod models;
pub mod retry;
pub mod scaleset;
mod secret;
pub mod webhook;

pub use auth::{AppKey, Credentials};
pub use client::{ClientConfig, GitHubClient};
pub use error::{AuthError, Error};
pub use models::{
    InstallationToken, JitConfig, JitConfigRequest, Runner, RunnerGroup, RunnerLabel, RunnerScope,
    TokenRequest,
};
pub use retry::RetryPolicy;
pub use secret::Secret;
