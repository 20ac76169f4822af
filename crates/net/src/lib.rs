//! airlock's per-job networking: a network namespace and veth per job, an address from a
//! pool, nftables rules that deny by default and never reach metadata endpoints, and the
//! egress gateway that allows only listed names and records every query and connection.
//! See docs/network.md.
//!
//! A job's network has three calls: [`plan`] (lease, persisted by the caller), [`setup`]
//! (namespace, veth, firewall elements, gateway; all or nothing) and, at the end,
//! [`JobNetwork::stop_gateway`] (its records) then [`undo`] (everything else, from the
//! persisted [`NetState`], also after a crash). Netlink timing — batching, the RCU wait of
//! closing nf_tables sockets — stays inside.
//!
//! Modules, each depending only on those below it (no cycles):
//! - `firewall` (the nftables table and a job's elements) → `gateway` (for the ports it
//!   maps), `link`, `nftnl`;
//! - `nflog` (dropped packets → records) → `firewall`, `records`;
//! - `gateway` (DNS in `gateway/dns.rs`, HTTP/TLS/CONNECT in `gateway/http.rs`, the host's
//!   addresses in `gateway/hosts.rs`, the tunnelling heuristic in `gateway/tunnel.rs`) →
//!   `records`;
//! - `link` (namespace and veth over rtnetlink) → `pool` (address leases);
//! - `nftnl` (netlink encoding of nf_tables messages), `records` (bounded record book),
//!   `suggest` (policy from records): leaves.
//!
//! Address ranges (metadata, internal, never-reachable) and the CIDR type come from
//! `airlock_policy::endpoints`; record types from `airlock_audit`.
#![deny(missing_docs)]

pub mod firewall;
pub mod gateway;
pub mod link;
pub mod nflog;
mod nftnl;
pub mod pool;
mod records;
pub mod suggest;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use airlock_policy::{AllowRule, EgressMode, EgressRules};
use serde::{Deserialize, Serialize};

pub use airlock_audit::{TeardownFailure, TeardownStep};
pub use gateway::{ConnRecord, Gateway, GatewayConfig};
pub use pool::{Lease, Pool};

/// The cause of a [`NetError`]: whatever the kernel, netlink or a tool reported.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the network component. Each says what airlock was doing; the cause is the
/// error's source (print the chain, e.g. with `{:#}` through anyhow, to see both).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink operation failed (links, addresses, the namespace).
    #[error("netlink: {what}")]
    Netlink {
        /// What airlock was doing.
        what: String,
        /// The cause, when there is one beyond `what`.
        #[source]
        source: Option<Cause>,
    },
    /// nftables refused the rules or could not be reached.
    #[error("nftables: {what}")]
    Firewall {
        /// What airlock was doing.
        what: String,
        /// The cause, when there is one beyond `what`.
        #[source]
        source: Option<Cause>,
    },
    /// A required tool or kernel feature is missing.
    #[error("network isolation unavailable: {what}")]
    Unavailable {
        /// What is missing.
        what: String,
        /// The cause.
        #[source]
        source: Option<Cause>,
    },
    /// Configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The pool has no free block.
    #[error("address pool exhausted ({0} blocks in use)")]
    PoolExhausted(u32),
    /// The gateway could not start.
    #[error("egress gateway: {what}")]
    Gateway {
        /// What airlock was doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file of the network's state could not be used.
    #[error("{what} {}", path.display())]
    Io {
        /// What airlock was doing.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A thread of the network setup panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

impl NetError {
    pub(crate) fn netlink<E: Into<Cause>>(what: impl Into<String>) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |e| Self::Netlink {
            what,
            source: Some(e.into()),
        }
    }
    /// A netlink answer that was not what the kernel should have said (no cause beyond it).
    pub(crate) fn netlink_state(what: impl Into<String>) -> Self {
        Self::Netlink {
            what: what.into(),
            source: None,
        }
    }
    pub(crate) fn firewall<E: Into<Cause>>(what: impl Into<String>) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |e| Self::Firewall {
            what,
            source: Some(e.into()),
        }
    }
    pub(crate) fn unavailable<E: Into<Cause>>(what: impl Into<String>) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |e| Self::Unavailable {
            what,
            source: Some(e.into()),
        }
    }
    pub(crate) fn gateway(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Gateway { what, source }
    }
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}

/// What must be persisted (in the job's state file) to undo a job's network after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// The /30 block leased.
    pub block: Ipv4Addr,
    /// Host-side interface.
    pub iface: String,
    /// Whether the job was in audit mode.
    pub audit: bool,
    /// Allow rules added to the firewall (`CIDR:PORT[/udp]`).
    pub allow: Vec<String>,
}

impl NetState {
    /// The job's addresses.
    pub fn lease(&self) -> Lease {
        Lease::of_block(u32::from(self.block))
    }
    fn rules(&self) -> Vec<AllowRule> {
        self.allow
            .iter()
            .filter_map(|a| AllowRule::parse(a).ok())
            .collect()
    }
}

/// The host's resolver: the first `nameserver` in `/etc/resolv.conf`.
pub fn host_resolver() -> Option<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()?
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

/// A job's network while it exists.
pub struct JobNetwork {
    /// Persisted description.
    pub state: NetState,
    /// Its addresses.
    pub lease: Lease,
    /// The namespace file the runtime joins.
    pub ns_file: PathBuf,
    gateway: Option<Gateway>,
    pool: Pool,
}

/// Plans a job's network: leases its addresses. Call [`setup`] once the lease is persisted.
pub fn plan(job_id: &str, rules: &EgressRules, pool: &Pool) -> Result<NetState, NetError> {
    let lease = pool.acquire(job_id)?;
    Ok(NetState {
        block: lease.block,
        iface: link::host_iface(job_id),
        audit: rules.mode == EgressMode::Audit,
        allow: rules.allow.iter().map(ToString::to_string).collect(),
    })
}

/// Builds the planned network: namespace, veth, firewall elements, gateway. On failure,
/// everything already made is removed again and the error returned (the job must not start).
pub fn setup(
    job_id: &str,
    job_dir: &Path,
    st: &NetState,
    rules: &EgressRules,
    pool: &Pool,
    limits: &airlock_policy::Limits,
) -> Result<JobNetwork, NetError> {
    let upstream = rules.resolver.or_else(host_resolver).ok_or_else(|| {
        NetError::Config("no upstream resolver: set egress.resolver in the policy".into())
    })?;
    let lease = st.lease();
    let ns_file = link::ns_file(job_dir);
    let mut net = JobNetwork {
        state: st.clone(),
        lease,
        ns_file: ns_file.clone(),
        gateway: None,
        pool: pool.clone(),
    };
    let t0 = std::time::Instant::now();
    let step = |name: &str| {
        tracing::debug!(
            job = job_id,
            step = name,
            at_us = t0.elapsed().as_micros() as u64
        )
    };
    let r = (|| {
        firewall::ensure_table()?;
        step("table");
        link::attach(&ns_file, &st.iface, &lease)?;
        step("links");
        // The gateway binds first, on ports the kernel picks on the job's gateway address (a
        // host service on 0.0.0.0:53/80/443/3128 cannot stop it); the firewall elements then
        // redirect the job's service ports there.
        let gateway = Gateway::start(GatewayConfig {
            job: job_id.to_owned(),
            bind: lease.gateway,
            rules: rules.clone(),
            upstream,
            pool: pool.clone(),
            max_connections: limits.connections as usize,
            flow_rate: limits.flow_rate,
        })?;
        let ports = gateway.ports();
        net.gateway = Some(gateway);
        step("gateway");
        firewall::attach(lease.job, lease.gateway, st.audit, &st.rules(), &ports)?;
        step("elements");
        if st.audit || !st.allow.is_empty() {
            // Allowed internal services and audit mode are routed, not proxied: the host must
            // forward. The firewall's forward chain decides what may pass.
            std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1")
                .map_err(NetError::unavailable("enabling IPv4 forwarding"))?;
        }
        Ok(())
    })();
    match r {
        Ok(()) => Ok(net),
        Err(e) => {
            // The setup's own error is the one that matters; its cleanup is best effort and
            // anything it leaves is found by gc (the lease is persisted).
            let mut ignored = Vec::new();
            net.teardown_thorough(&mut ignored);
            Err(e)
        }
    }
}

impl JobNetwork {
    /// Stops the gateway, removes firewall elements, veth and namespace, returns the lease.
    /// Returns the gateway's records; failures are appended to `errors`.
    fn teardown_thorough(mut self, errors: &mut Vec<TeardownFailure>) {
        if let Some(g) = self.gateway.take() {
            g.stop();
        }
        undo(&self.state, &self.ns_file, &self.pool, true, errors);
    }

    /// Stops the gateway and returns its records. The rest (firewall, veth, namespace,
    /// lease) is undone by [`undo`] from the persisted [`NetState`].
    pub fn stop_gateway(mut self) -> Vec<ConnRecord> {
        self.gateway.take().map(Gateway::stop).unwrap_or_default()
    }
}

/// Undoes a job's network from its persisted state (teardown and `gc`; `thorough` for gc and
/// abnormal ends, see [`link::detach`]).
pub fn undo(
    st: &NetState,
    ns_file: &Path,
    pool: &Pool,
    thorough: bool,
    errors: &mut Vec<TeardownFailure>,
) {
    let lease = st.lease();
    firewall::detach(lease.job, lease.gateway, st.audit, &st.rules(), errors);
    link::detach(ns_file, &st.iface, thorough, errors);
    if let Err(e) = pool.release(&lease) {
        errors.push(failure(&e));
    }
    // The sockets that deleted the job's elements are closed by a short-lived child, so the
    // RCU grace period their close waits for is nobody's wait (nftnl::DEFERRED).
    nftnl::release_deferred();
}

/// A teardown failure of the network step, with the error's whole chain.
pub(crate) fn failure(e: &(dyn std::error::Error + 'static)) -> TeardownFailure {
    TeardownFailure::new(TeardownStep::Network, airlock_text::ErrorChain(e))
}
