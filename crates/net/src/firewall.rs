//! The nftables rules: one airlock-owned table (`inet airlock`), created once; each job is a
//! handful of set elements added and removed in one batch.
//!
//! The order of decisions for a packet from a job (interfaces `alk*`):
//! 1. IPv6: dropped (IPv6 is also disabled inside the job's namespace); so is a packet whose
//!    source address is not routed back through the interface it came in on (a job forging
//!    another job's address to borrow its gateway, allow rules or audit mode).
//! 2. Never-reachable destinations (metadata endpoints, loopback) and other jobs' addresses:
//!    refused and recorded, before and regardless of anything a policy allows.
//! 3. Allowed internal CIDR:port of this job: routed there.
//! 4. DNS to anywhere, and HTTP(S) to any public address: redirected to the job's gateway
//!    address, where the egress gateway decides by name.
//! 5. Audit mode: anything else is routed (and recorded).
//! 6. Everything else: redirected to port 9 of the job's gateway address and refused there
//!    (ICMP administratively prohibited), so a build fails at once instead of hanging on
//!    timeouts, and a scan of an internal range finds nothing open — not even the gateway's
//!    proxy ports. The first packet of each denied flow goes, with its original destination,
//!    to NFLOG group [`NFLOG_GROUP`], where airlock turns it into a record.
//! 7. A job reaches its own gateway address only (the `job_gw` pairs), never another job's:
//!    another gateway's DNS or CONNECT proxy would serve it under that job's allow-list.
//! 8. Nothing enters a job's interface unless it answers the job (`ct state established`),
//!    checked before anything a job's policy allows, so no job — audit mode and broad allow
//!    rules included — ever opens a connection to another.
//!
//! Forwarding (`net.ipv4.ip_forward`) is needed only for 3 and 5; airlock turns it on when a
//! job has allow rules or runs in audit mode.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use airlock_policy::AllowRule;

use crate::link::IFACE_PREFIX;
use crate::nftnl::Element;
use crate::NetError;

/// The table's name.
pub const TABLE: &str = "airlock";
/// Marker of this version of the rules, kept as the table's comment: a table without it (an
/// older airlock) is replaced.
pub const RULES_VERSION: &str = "airlock-rules-7";
/// An empty set whose presence marks the current rules (checked over netlink on every attach).
pub const RULES_VERSION_SET: &str = "rules_v7";
/// NFLOG group of dropped packets.
pub const NFLOG_GROUP: u16 = 7141;
/// Ports the gateway serves on each job's gateway address.
pub const GATEWAY_TCP_PORTS: &[u16] = &[53, 80, 443, 3128];

/// Never reachable, whatever a policy says. `metadata.google.internal` is refused by name in
/// the DNS gateway; its address is 169.254.169.254, listed here.
pub const NEVER: &[&str] = &[
    "169.254.169.254", // AWS, GCP, Azure, OpenStack, DigitalOcean… instance metadata
    "168.63.129.16",   // Azure wireserver
    "100.100.100.200", // Alibaba Cloud metadata
    "127.0.0.0/8",     // loopback (of the host, if a packet ever got there)
];

/// Internal ranges: reachable only through an explicit allow rule.
pub const INTERNAL: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/3",
];

/// The whole table, as one nft script. Applied with `nft -f`, it replaces any older airlock
/// table atomically; per-job elements are added afterwards.
pub fn ruleset() -> String {
    let i = IFACE_PREFIX;
    let ports = GATEWAY_TCP_PORTS
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"table inet {TABLE} {{
  comment "{RULES_VERSION}"
  set {RULES_VERSION_SET} {{ type ipv4_addr; }}
  set jobs {{ type ipv4_addr; }}
  set audit_jobs {{ type ipv4_addr; }}
  # (job address . its gateway address): each job may use its own gateway only.
  set job_gw {{ type ipv4_addr . ipv4_addr; }}
  set never {{ type ipv4_addr; flags interval; elements = {{ {never} }} }}
  set internal {{ type ipv4_addr; flags interval; elements = {{ {internal} }} }}
  set allowed {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval; }}
  set dropped {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags dynamic, timeout; timeout 60s; size 65536; }}

  # Decides, before any address rewriting, whether a packet from a job is denied, and
  # reports the first packet of each denied flow with its original destination.
  chain pre_filter {{
    type filter hook prerouting priority -150; policy accept;
    iifname != "{i}*" return
    meta nfproto ipv6 drop
    fib saddr . iif oif missing drop
    ct state established,related return
    ip daddr @never jump record
    ip daddr @never return
    ip saddr . ip daddr @job_gw udp dport 53 return
    ip saddr . ip daddr @job_gw tcp dport {{ {ports} }} return
    ip saddr . ip daddr @job_gw jump record
    ip saddr . ip daddr @job_gw return
    ip daddr @jobs jump record
    ip daddr @jobs return
    ip saddr . ip daddr . meta l4proto . th dport @allowed return
    udp dport 53 return
    tcp dport {{ 53, 80, 443 }} ip daddr != @internal return
    ip saddr @audit_jobs return
    jump record
  }}

  chain record {{
    ip saddr . ip daddr . meta l4proto . th dport @dropped return
    update @dropped {{ ip saddr . ip daddr . meta l4proto . th dport }} log group {NFLOG_GROUP} prefix "airlock-drop"
  }}

  # Everything a job sends lands on its gateway address: DNS and HTTP(S) at the gateway's
  # services, denied traffic at port 9, where the input chain refuses it at once. Only
  # allowed internal services (and, in audit mode, other traffic) are routed onwards.
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname != "{i}*" return
    ip saddr . ip daddr @job_gw return
    ip daddr @never meta l4proto {{ tcp, udp }} redirect to :9
    ip daddr @jobs meta l4proto {{ tcp, udp }} redirect to :9
    ip saddr . ip daddr . meta l4proto . th dport @allowed return
    udp dport 53 redirect
    tcp dport {{ 53, 80, 443 }} ip daddr != @internal redirect
    ip saddr @audit_jobs ip daddr != @never return
    meta l4proto {{ tcp, udp }} redirect to :9
  }}

  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{i}*" jump from_job_to_host
  }}

  chain from_job_to_host {{
    meta nfproto ipv6 drop
    ct state established,related accept
    ip saddr . ip daddr @job_gw udp dport 53 accept
    ip saddr . ip daddr @job_gw tcp dport {{ {ports} }} accept
    reject with icmpx type admin-prohibited
  }}

  chain forward {{
    type filter hook forward priority filter; policy accept;
    # Towards a job only replies, decided before from_job accepts anything: whatever a job's
    # policy allows (audit mode, an allow rule whose CIDR covers the job pool), it never
    # opens a connection to another job.
    oifname "{i}*" ct state established,related accept
    oifname "{i}*" drop
    iifname "{i}*" jump from_job
  }}

  chain from_job {{
    meta nfproto ipv6 drop
    ip daddr @never drop
    ct state established,related accept
    ip saddr . ip daddr . meta l4proto . th dport @allowed accept
    ip saddr @audit_jobs ct state new log group {NFLOG_GROUP} prefix "airlock-audit" accept
    ip saddr @audit_jobs accept
    drop
  }}

  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    iifname "{i}*" oifname != "{i}*" masquerade
  }}
}}
"#,
        never = NEVER.join(", "),
        internal = INTERNAL.join(", "),
    )
}

fn nft(script: &str) -> Result<(), NetError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Unavailable(format!("cannot run nft ({e}); install nftables")))?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(script.as_bytes())
            .map_err(|e| NetError::Firewall(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Firewall(format!("nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Firewall(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

/// Installs the table if it is not there or is of another version: one netlink round trip
/// when it is current, an `nft -f` batch (atomic) otherwise.
pub fn ensure_table() -> Result<(), NetError> {
    if crate::nftnl::table_is_current()? {
        return Ok(());
    }
    // Create-or-keep, delete, recreate: one atomic batch, whatever was there before.
    nft(&format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\n{}",
        ruleset()
    ))
}

fn single_elements(job: Ipv4Addr, gateway: Ipv4Addr, audit: bool) -> Vec<Element> {
    let mut v = vec![
        Element::addr("jobs", job),
        Element::pair("job_gw", job, gateway),
    ];
    if audit {
        v.push(Element::addr("audit_jobs", job));
    }
    v
}

/// Adds a job's elements: one netlink batch, and one more for its allow rules if it has any.
pub fn attach(
    job: Ipv4Addr,
    gateway: Ipv4Addr,
    audit: bool,
    allow: &[AllowRule],
) -> Result<(), NetError> {
    let codes = crate::nftnl::job_elements(true, &single_elements(job, gateway, audit))?;
    if let Some(c) = codes.iter().find(|c| **c != 0) {
        return Err(NetError::Firewall(format!(
            "adding the job's elements: {}",
            std::io::Error::from_raw_os_error(*c)
        )));
    }
    match crate::nftnl::allowed_elements(true, job, allow)? {
        0 => Ok(()),
        c => Err(NetError::Firewall(format!(
            "adding the job's allow rules: {}",
            std::io::Error::from_raw_os_error(c)
        ))),
    }
}

/// Removes a job's elements; elements already gone are not errors.
pub fn detach(
    job: Ipv4Addr,
    gateway: Ipv4Addr,
    audit: bool,
    allow: &[AllowRule],
    errors: &mut Vec<String>,
) {
    // One batch for all (each nftables commit waits for an RCU grace period); if an element
    // is already gone the batch is refused as a whole, so fall back to one batch each.
    let items = single_elements(job, gateway, audit);
    if let Ok(codes) = crate::nftnl::job_elements(false, &items) {
        if codes.iter().all(|c| *c == 0) {
            return detach_allow(job, allow, errors);
        }
    }
    for e in items {
        // One element per batch: a missing one (ENOENT) must not keep the others.
        let set = e.set;
        match crate::nftnl::job_elements(false, std::slice::from_ref(&e)) {
            Ok(codes) => {
                if let Some(c) = codes.iter().find(|c| **c != 0 && **c != libc::ENOENT) {
                    errors.push(format!(
                        "firewall: removing {job}'s element from {set}: {}",
                        std::io::Error::from_raw_os_error(*c)
                    ));
                }
            }
            Err(e) => errors.push(format!("firewall: {e}")),
        }
    }
    detach_allow(job, allow, errors);
}

fn detach_allow(job: Ipv4Addr, allow: &[AllowRule], errors: &mut Vec<String>) {
    match crate::nftnl::allowed_elements(false, job, allow) {
        Ok(0) => {}
        Ok(c) if c == libc::ENOENT => {}
        Ok(c) => errors.push(format!(
            "firewall: removing allow rules of {job}: {}",
            std::io::Error::from_raw_os_error(c)
        )),
        Err(e) => errors.push(format!("firewall: {e}")),
    }
}
