//! `airlock drill`: adversary emulation against airlock's own sandboxes.
//!
//! Three parts:
//! - [`attack`]: the attack programs. The `airlock-attack` binary runs INSIDE a sandbox as the
//!   unprivileged job user and performs one attack per invocation, printing one JSON line
//!   ([`attack::AttackResult`]). One attack per file, behind the [`attack::Attack`] trait, in
//!   an explicit ordered registry ([`attack::registry`]).
//! - [`world`]: the drill's sealed world. The drill moves itself into a fresh network
//!   namespace, then builds the "outside" (attacker, DoH endpoint, fake metadata service,
//!   internal subnet, allowed host, upstream resolver) in another namespace behind a veth. Every
//!   server records every hit: the world's records are the ground truth for "did it get
//!   through". Nothing can leave the machine: the namespaces have no other interface.
//! - [`orchestrator`]: runs each attack in a fresh sandbox through the airlock binary itself,
//!   reads the job report and the world's records, and compares them with the expected
//!   outcome (blocked, detected, or both).
#![deny(missing_docs)]

pub mod addrs;
pub mod attack;
pub mod orchestrator;
mod victim;
pub mod world;

pub use orchestrator::{
    drill, effective_policy, enter_private_netns, DrillError, DrillOptions, DrillReport, Observed,
    Progress, Quiet, Row,
};
