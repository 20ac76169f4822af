//! Endpoints no job may ever reach, whatever a policy says: the cloud metadata services. One
//! table, read by the firewall (addresses), the egress gateway (names and addresses), the
//! `metadata-access` detector and `policy suggest`, so they can never disagree again.

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
    }
}
