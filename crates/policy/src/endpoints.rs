//! Address ranges airlock decides by, in one place: the cloud metadata services no job may
//! ever reach, and the internal ranges a job reaches only through an explicit allow rule. Read
//! by the firewall, the egress gateway, the `metadata-access` detector, `policy suggest` and
//! `scan host`, so they can never disagree again.
//!
//! One CIDR type everywhere: `ipnet`'s (`Ipv4Net`, `IpNet`): a well-kept crate with parsing,
//! containment and truncation, instead of three hand-written copies of the mask arithmetic.

use std::net::{IpAddr, Ipv4Addr};

pub use ipnet::{IpNet, Ipv4Net};

/// IPv4 addresses of metadata services.
pub const METADATA_V4: &[&str] = &[
    "169.254.169.254", // AWS, GCP, Azure, OpenStack, DigitalOcean… instance metadata
    "168.63.129.16",   // Azure wireserver
    "100.100.100.200", // Alibaba Cloud metadata
    "169.254.170.2",   // AWS ECS task metadata and credentials
];

/// IPv6 addresses of metadata services (jobs have no IPv6; the detector still looks).
pub const METADATA_V6: &[&str] = &["fd00:ec2::254"];

/// Names of metadata services (refused by the DNS gateway and the proxies).
pub const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Every metadata address, IPv4 and IPv6.
pub fn metadata_addrs() -> impl Iterator<Item = &'static str> {
    METADATA_V4.iter().chain(METADATA_V6).copied()
}

/// Internal ranges: reachable from a job only through an explicit allow rule (RFC 1918,
/// carrier-grade NAT, loopback, link-local, "this network", benchmarking, multicast and
/// reserved).
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

/// The private ranges production systems live in (RFC 1918 and carrier-grade NAT): what
/// `scan host` asks a runner not to reach.
pub const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
];

/// Never reachable, whatever a policy says: the IPv4 metadata services, and loopback (of the
/// host, if a packet ever got there).
pub fn never() -> Vec<&'static str> {
    let mut v = METADATA_V4.to_vec();
    v.push("127.0.0.0/8");
    v
}

/// Parses `a.b.c.d/n`, or a bare address as its /32; host bits are cleared. `None` for
/// anything else.
pub fn parse_v4(s: &str) -> Option<Ipv4Net> {
    let net = match s.parse::<Ipv4Net>() {
        Ok(n) => n,
        Err(_) => Ipv4Net::from(s.parse::<Ipv4Addr>().ok()?),
    };
    Some(net.trunc())
}

/// Parses a CIDR of either family, or a bare address as its host prefix; host bits cleared.
pub fn parse(s: &str) -> Option<IpNet> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    Some(net.trunc())
}

/// Whether `ip` is in one of the CIDRs of `list` (entries that do not parse match nothing).
pub fn in_list(ip: Ipv4Addr, list: &[&str]) -> bool {
    list.iter()
        .filter_map(|c| parse_v4(c))
        .any(|n| n.contains(&ip))
}

/// Whether `ip` is never reachable (see [`never`]).
pub fn is_never(ip: Ipv4Addr) -> bool {
    in_list(ip, &never())
}

/// Whether `ip` is internal (see [`INTERNAL`]).
pub fn is_internal(ip: Ipv4Addr) -> bool {
    in_list(ip, INTERNAL)
}

/// Whether two networks share an address (CIDRs are nested or disjoint).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_parses_and_the_families_are_right() {
        for a in METADATA_V4 {
            assert!(a.parse::<std::net::Ipv4Addr>().is_ok(), "{a}");
        }
        for a in METADATA_V6 {
            assert!(a.parse::<std::net::Ipv6Addr>().is_ok(), "{a}");
        }
        assert_eq!(
            metadata_addrs().count(),
            METADATA_V4.len() + METADATA_V6.len()
        );
        for c in INTERNAL.iter().chain(PRIVATE).chain(&never()) {
            assert!(parse_v4(c).is_some(), "{c}");
        }
    }

    #[test]
    fn ranges_contain_what_they_should_and_edges_hold() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert!(is_never(ip("169.254.169.254")) && is_never(ip("169.254.170.2")));
        assert!(is_never(ip("127.8.9.10")) && !is_never(ip("169.254.1.1")));
        assert!(is_internal(ip("10.9.8.7")) && is_internal(ip("100.64.1.1")));
        assert!(!is_internal(ip("198.51.100.10")) && !is_internal(ip("100.128.0.1")));
        // Host bits are cleared; a bare address is its /32; /0 holds everything.
        let shown = parse_v4("10.1.2.3/16").map(|n| n.to_string());
        assert_eq!(shown.as_deref(), Some("10.1.0.0/16"));
        assert_eq!(parse_v4("10.1.2.3").map(|n| n.prefix_len()), Some(32));
        assert!(parse_v4("0.0.0.0/0").is_some_and(|n| n.contains(&ip("203.0.113.9"))));
        assert!(parse_v4("10.1.2.3/33").is_none() && parse_v4("nope").is_none());
        let n = |s: &str| parse(s).expect("cidr");
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.1.0.0/16")));
        assert!(!overlaps(&n("10.0.0.0/16"), &n("10.1.0.0/16")));
        assert!(n("fd00:ec2::/64").contains(&n("fd00:ec2::254")));
        assert!(!overlaps(&n("10.0.0.0/8"), &n("fd00::/8")));
    }

    proptest::proptest! {
        /// The mask arithmetic the three copies did by hand: `ip` is in `net/len` exactly
        /// when their first `len` bits agree.
        #[test]
        fn containment_is_prefix_agreement(
            net in proptest::prelude::any::<u32>(),
            ip in proptest::prelude::any::<u32>(),
            len in 0u8..=32,
        ) {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let cidr = Ipv4Net::new(Ipv4Addr::from(net), len).expect("len <= 32").trunc();
            proptest::prop_assert_eq!(cidr.contains(&Ipv4Addr::from(ip)), (net & mask) == (ip & mask));
        }
    }
}
