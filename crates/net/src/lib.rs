//! airlock's per-job networking: a network namespace and veth per job, an address from a
//! pool, nftables rules that deny by default and never reach metadata endpoints, and the
//! egress gateway that allows only listed names and records every query and connection.
//! See docs/network.md.
#![deny(missing_docs)]

pub mod firewall;
pub mod gateway;
pub mod link;
pub mod nflog;
mod nftnl;
pub mod pool;
pub mod suggest;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use airlock_policy::{AllowRule, EgressMode, EgressRules};
use serde::{Deserialize, Serialize};

pub use gateway::{ConnRecord, Gateway, GatewayConfig};
pub use pool::{Lease, Pool};

/// Closes the netlink sockets that removed jobs' firewall elements. Call once a teardown's
/// other work is done: the close waits for an RCU grace period (see `nftnl::DEFERRED`).
pub fn release_deferred() {
    nftnl::release_deferred();
}

/// Errors of the network component.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink operation failed.
    #[error("netlink: {0}")]
    Netlink(String),
    /// nftables refused the rules.
    #[error("nftables: {0}")]
    Firewall(String),
    /// A required tool or kernel feature is missing.
    #[error("network isolation unavailable: {0}")]
    Unavailable(String),
    /// Configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The pool has no free block.
    #[error("address pool exhausted ({0} blocks in use)")]
    PoolExhausted(u32),
    /// The gateway could not start.
    #[error("egress gateway: {0}")]
    Gateway(String),
    /// Filesystem error.
    #[error("{0}")]
    Io(String),
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
                .map_err(|e| NetError::Unavailable(format!("enabling IPv4 forwarding: {e}")))?;
        }
        Ok(())
    })();
    match r {
        Ok(()) => Ok(net),
        Err(e) => {
            let mut ignored = Vec::new();
            net.teardown_thorough(&mut ignored);
            Err(e)
        }
    }
}

impl JobNetwork {
    /// Stops the gateway, removes firewall elements, veth and namespace, returns the lease.
    /// Returns the gateway's records; failures are appended to `errors`.
    fn teardown_thorough(mut self, errors: &mut Vec<String>) {
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
pub fn undo(st: &NetState, ns_file: &Path, pool: &Pool, thorough: bool, errors: &mut Vec<String>) {
    let lease = st.lease();
    firewall::detach(lease.job, lease.gateway, st.audit, &st.rules(), errors);
    link::detach(ns_file, &st.iface, thorough, errors);
    if let Err(e) = pool.release(&lease) {
        errors.push(e.to_string());
    }
}
