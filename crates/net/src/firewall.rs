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
//! 4. DNS to anywhere, HTTP(S) to any public address, and the gateway's own service ports
//!    (53, 80, 443, 3128) on the job's gateway address: redirected to the job's gateway
//!    address, on the ports its gateway bound (kernel-chosen, in the `gw_ports` map: a host
//!    service listening on 0.0.0.0 of a service port never stops a job, and is never reached
//!    by one), where the egress gateway decides by name.
//! 5. Audit mode: anything else is routed (and recorded).
//! 6. Everything else: redirected to port 9 of the job's gateway address and refused there
//!    (ICMP administratively prohibited), so a build fails at once instead of hanging on
//!    timeouts, and a scan of an internal range finds nothing open — not even the gateway's
//!    proxy ports. The first packet of each denied flow goes, with its original destination,
//!    to NFLOG group [`NFLOG_GROUP`], where airlock turns it into a record. When a flood has
//!    filled the (shared) set of reported flows, denials are still reported at a bounded rate
//!    per job address, so one job's flood cannot silence another job's records.
//! 7. A job reaches its own gateway address only (the `job_gw` pairs), never another job's
//!    (the `gateways` set, refused and recorded in every mode, audit included): another
//!    gateway's DNS or CONNECT proxy would serve it under that job's allow-list.
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
use airlock_policy::endpoints::{never, INTERNAL};

pub use crate::gateway::GatewayPorts;
use crate::nftnl::{Allowed, Element};
pub use crate::nftnl::{RULES_VERSION, RULES_VERSION_SET, TABLE};
use crate::NetError;

/// NFLOG group of dropped packets.
pub const NFLOG_GROUP: u16 = 7141;
/// Ports the gateway serves on each job's gateway address, as the job sees them (the gateway
/// itself listens on ports the kernel chose; the `gw_ports` map redirects to them).
pub const GATEWAY_TCP_PORTS: &[u16] = &[53, 80, 443, 3128];

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
  # Every job's gateway address: another job's gateway is as off limits as another job.
  set gateways {{ type ipv4_addr; }}
  set never {{ type ipv4_addr; flags interval; elements = {{ {never} }} }}
  set internal {{ type ipv4_addr; flags interval; elements = {{ {internal} }} }}
  set allowed {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval; }}
  # (job . protocol . service port) : the port its gateway listens on.
  map gw_ports {{ type ipv4_addr . inet_proto . inet_service : inet_service; }}
  set dropped {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags dynamic, timeout; timeout 60s; size 65536; }}
  # When a flood of new denied flows has filled `dropped` (it is shared by every job), each
  # job's denials are still reported, at a bounded rate per job address.
  set drop_rate {{ type ipv4_addr; flags dynamic, timeout; timeout 60s; size 65536; }}

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
    ip daddr @gateways jump record
    ip daddr @gateways return
    ip saddr . ip daddr . meta l4proto . th dport @allowed return
    udp dport 53 return
    tcp dport {{ 53, 80, 443 }} ip daddr != @internal return
    ip saddr @audit_jobs return
    jump record
  }}

  chain record {{
    ip saddr . ip daddr . meta l4proto . th dport @dropped return
    update @dropped {{ ip saddr . ip daddr . meta l4proto . th dport }} log group {NFLOG_GROUP} prefix "airlock-drop" return
    # Reached only when `dropped` is full: one job's flood must not silence the others.
    update @drop_rate {{ ip saddr limit rate 50/second burst 100 packets }} log group {NFLOG_GROUP} prefix "airlock-drop"
  }}

  # Everything a job sends lands on its gateway address: DNS and HTTP(S) at the gateway's
  # services, denied traffic at port 9, where the input chain refuses it at once. Only
  # allowed internal services (and, in audit mode, other traffic) are routed onwards.
  # A redirect to the gateway looks its port up in gw_ports; a job without an element there
  # matches nothing and falls through to port 9.
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname != "{i}*" return
    ip saddr . ip daddr @job_gw udp dport 53 redirect to : {gw}
    ip saddr . ip daddr @job_gw tcp dport {{ {ports} }} redirect to : {gw}
    ip saddr . ip daddr @job_gw return
    ip daddr @never meta l4proto {{ tcp, udp }} redirect to :9
    ip daddr @jobs meta l4proto {{ tcp, udp }} redirect to :9
    ip daddr @gateways meta l4proto {{ tcp, udp }} redirect to :9
    ip saddr . ip daddr . meta l4proto . th dport @allowed return
    udp dport 53 redirect to : {gw}
    tcp dport {{ 53, 80, 443 }} ip daddr != @internal redirect to : {gw}
    ip saddr @audit_jobs ip daddr != @never return
    meta l4proto {{ tcp, udp }} redirect to :9
  }}

  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{i}*" jump from_job_to_host
  }}

  # The gateway's ports are reached only through the redirect of a service port (never
  # dialled directly, never port 9): nothing else of the host, whatever listens on it.
  chain from_job_to_host {{
    meta nfproto ipv6 drop
    ct state established,related accept
    ip saddr . ip daddr @job_gw meta l4proto udp ct status dnat ct original proto-dst 53 udp dport != 9 accept
    ip saddr . ip daddr @job_gw meta l4proto tcp ct status dnat ct original proto-dst {{ {ports} }} tcp dport != 9 accept
    # An audit-mode job's packet reaches here with its own destination (not redirected): a
    # host address. Refused, and recorded like any denial.
    ip saddr @audit_jobs ct status ! dnat jump record
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
        never = never().join(", "),
        internal = INTERNAL.join(", "),
        gw = "ip saddr . meta l4proto . th dport map @gw_ports",
    )
}

fn nft(script: &str) -> Result<(), NetError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NetError::unavailable("cannot run nft; install nftables"))?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(script.as_bytes())
            .map_err(NetError::firewall("writing to nft"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(NetError::firewall("waiting for nft"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Firewall {
            what: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            source: None,
        })
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

/// A job's plain elements; `ports` = its gateway's ports when adding (`None` when removing:
/// the map's keys are enough).
fn single_elements(
    job: Ipv4Addr,
    gateway: Ipv4Addr,
    audit: bool,
    ports: Option<&GatewayPorts>,
) -> Vec<Element> {
    let mut v = vec![
        Element::addr("jobs", job),
        Element::pair("job_gw", job, gateway),
        Element::addr("gateways", gateway),
    ];
    if audit {
        v.push(Element::addr("audit_jobs", job));
    }
    // Any ports serve to compute the keys of a removal.
    let keys = GatewayPorts {
        dns_udp: 0,
        dns_tcp: 0,
        http: 0,
        https: 0,
        connect: 0,
    };
    for (proto, service, to) in ports.unwrap_or(&keys).entries() {
        v.push(Element::port_map(
            "gw_ports",
            job,
            proto,
            service,
            ports.map(|_| to),
        ));
    }
    v
}

/// The errno of a failed message, if any, named after what it carried.
fn first_error(codes: &[i32], items: &[Element], ignore: &[i32]) -> Option<(String, i32)> {
    codes
        .iter()
        .enumerate()
        .find(|(_, c)| **c != 0 && !ignore.contains(c))
        .map(|(i, c)| {
            let what = items
                .get(i)
                .map_or_else(|| "allowed".to_owned(), |e| e.set.to_owned());
            (what, *c)
        })
}

/// Adds a job's elements, allow rules and the redirects to its gateway's `ports` included:
/// one netlink batch, applied whole or not at all.
pub fn attach(
    job: Ipv4Addr,
    gateway: Ipv4Addr,
    audit: bool,
    allow: &[AllowRule],
    ports: &GatewayPorts,
) -> Result<(), NetError> {
    let items = single_elements(job, gateway, audit, Some(ports));
    let allowed = Allowed { job, rules: allow };
    let codes = crate::nftnl::job_elements(true, &items, Some(allowed))?;
    match first_error(&codes, &items, &[]) {
        None => Ok(()),
        Some((set, c)) => Err(NetError::firewall(format!(
            "adding the job's elements ({set})"
        ))(std::io::Error::from_raw_os_error(c))),
    }
}

/// Removes a job's elements, allow rules included; elements already gone are not errors.
pub fn detach(
    job: Ipv4Addr,
    gateway: Ipv4Addr,
    audit: bool,
    allow: &[AllowRule],
    errors: &mut Vec<crate::TeardownFailure>,
) {
    // One batch for all (each nftables commit waits for an RCU grace period); if an element
    // is already gone the batch is refused as a whole, so fall back to one batch per element:
    // a leaked `allowed` element would be inherited by the next job leasing the address.
    let items = single_elements(job, gateway, audit, None);
    let allowed = Allowed { job, rules: allow };
    if let Ok(codes) = crate::nftnl::job_elements(false, &items, Some(allowed)) {
        if codes.iter().all(|c| *c == 0) {
            return;
        }
    }
    let one_by_one = items
        .into_iter()
        .map(|e| (vec![e], None))
        .chain(allow.iter().map(|r| {
            (
                vec![],
                Some(Allowed {
                    job,
                    rules: std::slice::from_ref(r),
                }),
            )
        }));
    for (items, allowed) in one_by_one {
        // A missing element (ENOENT) must not keep the others.
        match crate::nftnl::job_elements(false, &items, allowed) {
            Ok(codes) => {
                if let Some((set, c)) = first_error(&codes, &items, &[libc::ENOENT]) {
                    let e = NetError::firewall(format!("removing {job}'s element from {set}"))(
                        std::io::Error::from_raw_os_error(c),
                    );
                    errors.push(crate::failure(&e));
                }
            }
            Err(e) => errors.push(crate::failure(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a thread of its own inside a fresh network namespace (nothing in it, no
    /// packet sent: only the namespace's own nftables tables are touched). `None` when not
    /// root or `nft` is missing.
    fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        if !nix::unistd::geteuid().is_root() || Command::new("nft").arg("-v").output().is_err() {
            eprintln!("SKIPPED: needs root and nft");
            return None;
        }
        let t = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            f()
        });
        Some(t.join().expect("thread"))
    }

    /// The elements of each job-keyed set, as `nft` prints them.
    fn sets() -> Vec<(&'static str, String)> {
        [
            "jobs",
            "job_gw",
            "gateways",
            "audit_jobs",
            "allowed",
            "gw_ports",
        ]
        .into_iter()
        .map(|s| {
            let kind = if s == "gw_ports" { "map" } else { "set" };
            let o = Command::new("nft")
                .args(["list", kind, "inet", TABLE, s])
                .output()
                .expect("nft");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let text = String::from_utf8_lossy(&o.stdout);
            let elems = text
                .split_once("elements = {")
                .map(|(_, e)| {
                    e.split('}')
                        .next()
                        .unwrap_or("")
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            (s, elems)
        })
        .collect()
    }

    const PORTS: GatewayPorts = GatewayPorts {
        dns_udp: 40001,
        dns_tcp: 40002,
        http: 40003,
        https: 40004,
        connect: 40005,
    };

    fn rule(s: &str) -> AllowRule {
        AllowRule::parse(s).expect("rule")
    }

    #[test]
    fn a_jobs_elements_come_and_go_together() {
        let r = in_fresh_netns(|| {
            ensure_table().expect("table");
            let (job, gw) = (Ipv4Addr::new(10, 213, 0, 6), Ipv4Addr::new(10, 213, 0, 5));
            let allow = [rule("10.50.0.10/32:5432"), rule("10.1.0.0/16:53/udp")];
            attach(job, gw, true, &allow, &PORTS).expect("attach");
            let with = sets();
            let mut errors = vec![];
            detach(job, gw, true, &allow, &mut errors);
            let without = sets();

            // Detach still removes everything when some elements are already gone.
            attach(job, gw, false, &allow, &PORTS).expect("attach again");
            let gone = Command::new("nft")
                .args(["delete element inet airlock jobs { 10.213.0.6 }"])
                .status()
                .expect("nft");
            assert!(gone.success());
            let mut errors2 = vec![];
            detach(job, gw, false, &allow, &mut errors2);
            (with, errors, without, errors2, sets())
        });
        let Some((with, errors, without, errors2, after_partial)) = r else {
            return;
        };
        for (set, elems) in &with {
            assert!(
                !elems.is_empty(),
                "{set} has no element after attach: {with:?}"
            );
        }
        let map = &with.iter().find(|(s, _)| *s == "gw_ports").expect("map").1;
        assert!(
            map.contains("10.213.0.6 . tcp . 80 : 40003")
                && map.contains("10.213.0.6 . udp . 53 : 40001"),
            "{map}"
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(errors2.is_empty(), "{errors2:?}");
        for sets in [&without, &after_partial] {
            for (set, elems) in sets {
                assert!(
                    elems.is_empty(),
                    "{set} kept elements after detach: {sets:?}"
                );
            }
        }
    }

    #[test]
    fn an_attach_the_kernel_refuses_adds_nothing() {
        let r = in_fresh_netns(|| {
            ensure_table().expect("table");
            let (job, gw) = (Ipv4Addr::new(10, 213, 0, 6), Ipv4Addr::new(10, 213, 0, 5));
            // Overlapping intervals of one job: the kernel refuses the `allowed` elements
            // (EEXIST), and with them, in the same batch, the job's other elements.
            let allow = [rule("10.0.0.0/8:7777"), rule("10.1.0.0/16:7777")];
            (attach(job, gw, true, &allow, &PORTS), sets())
        });
        let Some((attached, sets)) = r else {
            return;
        };
        assert!(
            attached.is_err(),
            "the kernel accepted overlapping intervals"
        );
        for (set, elems) in &sets {
            assert!(
                elems.is_empty(),
                "{set} has elements of a refused attach: {sets:?}"
            );
        }
    }
}
