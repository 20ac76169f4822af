//! The addresses and names of the drill's world. Attacks (inside the sandbox) and the world
//! (outside) share them; they exist only in the namespaces the drill creates.

use std::net::Ipv4Addr;

/// The attacker's server: HTTP :80, TLS :443, DNS :53, raw TCP on [`ATTACKER_TCP_PORT`].
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// The attacker's DNS-over-HTTPS endpoint (:443).
pub const DOH: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 8);
/// The one host the drill's policy allows (`allowed.drill.test`).
pub const ALLOWED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// The world's upstream DNS resolver.
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
/// The cloud metadata service (AWS, GCP, Azure IMDS).
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Azure's wireserver.
pub const AZURE_WIRESERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
/// A host of the "internal" corporate subnet (:22, :80, :5432, …).
pub const INTERNAL: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
/// The internal subnet scanned by the recon attack.
pub const INTERNAL_NET: [u8; 3] = [192, 168, 77];
/// The drill namespace's end of the veth to the outside.
pub const LINK_DRILL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The outside namespace's end of the veth.
pub const LINK_OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The attacker's high TCP port (a hard-coded C2 channel).
pub const ATTACKER_TCP_PORT: u16 = 4444;
/// TCP ports the world listens on besides 80 and 443 (on every world address).
pub const TCP_PORTS: [u16; 7] = [22, 53, 3306, 5432, 6379, 8080, ATTACKER_TCP_PORT];

/// The allowed name, added to the drill group's egress domains.
pub const ALLOWED_NAME: &str = "allowed.drill.test";
/// The exfiltration target (not allowed).
pub const EXFIL_NAME: &str = "exfil.attacker.test";
/// The DoH endpoint's name (not allowed).
pub const DOH_NAME: &str = "doh.attacker.test";
/// Parent of the DNS tunnelling names; the world answers every name below it.
pub const TUNNEL_SUFFIX: &str = "t.attacker.test";
/// An internal name (resolves to [`INTERNAL`] at the world's resolver).
pub const INTERNAL_NAME: &str = "db.corp.internal";
/// GCP's metadata name (resolves to [`METADATA`] at the world's resolver).
pub const GCP_METADATA_NAME: &str = "metadata.google.internal";
/// An allowed name whose address is internal ([`INTERNAL`]): DNS rebinding. Added to the drill
/// group's egress domains, like [`ALLOWED_NAME`].
pub const REBIND_NAME: &str = "rebind.drill.test";
/// An allowed name with one public ([`ALLOWED`]) and one internal ([`INTERNAL`]) address.
pub const REBIND_MIXED_NAME: &str = "rebind-mixed.drill.test";
/// An allowed name the world's resolver never answers: every query the gateway forwards for
/// it waits out its time upstream (`gateway-flood` fills the gateway's DNS queries in flight
/// with it). Added to the group's egress domains.
pub const SILENT_NAME: &str = "silent.drill.test";
/// Every name the drill adds to the group's egress domains.
pub const POLICY_NAMES: [&str; 4] = [ALLOWED_NAME, REBIND_NAME, REBIND_MIXED_NAME, SILENT_NAME];
/// What the world's resolver appends to a query's record when the query carried more than
/// one bare question (more questions, EDNS options, records in its other sections).
pub const SMUGGLED_TAG: &str = "+smuggled";

/// What the world's resolver answers: exact names and names below a suffix.
pub fn world_lookup(name: &str) -> Option<Ipv4Addr> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    match n.as_str() {
        ALLOWED_NAME => Some(ALLOWED),
        EXFIL_NAME | "attacker.test" | "api.github.com" | "github.com" => Some(ATTACKER),
        DOH_NAME => Some(DOH),
        GCP_METADATA_NAME | "instance-data.ec2.internal" => Some(METADATA),
        INTERNAL_NAME | "git.corp.internal" | "jenkins.corp.internal" | REBIND_NAME => {
            Some(INTERNAL)
        }
        REBIND_MIXED_NAME => Some(ALLOWED),
        _ if n.ends_with(&format!(".{TUNNEL_SUFFIX}")) => Some(ATTACKER),
        _ => None,
    }
}

/// Every address the world's resolver answers for `name`.
pub fn world_lookup_all(name: &str) -> Vec<Ipv4Addr> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    if n == REBIND_MIXED_NAME {
        return vec![ALLOWED, INTERNAL];
    }
    world_lookup(&n).into_iter().collect()
}

/// The marker every world server puts in its answers: an attack that reads it reached the
/// world, not airlock's gateway.
pub const WORLD_MARKER: &str = "DRILL-WORLD";
/// The fake secret the fake metadata service returns.
pub const FAKE_SECRET: &str = "DRILL-FAKE-SECRET-AKIADRILLDRILLDRILL";
/// The text persistence attacks plant; the check looks for it.
pub const PERSISTENCE_MARKER: &str = "AIRLOCK-DRILL-PERSISTENCE-MARKER";

/// The content of the root-only host file the drill's swapper tries to race into the
/// `workspace-race` job's workspace copy.
pub const WORKSPACE_SECRET_MARKER: &str = "AIRLOCK-DRILL-ROOT-ONLY-HOST-FILE";

/// The address pool of the drill's jobs (`airlock --net-pool`): one /24, 64 blocks of /30, so
/// that a sibling job is somewhere in the /24 the `sibling-job` attack sweeps, as it would be
/// on a runner host with a small pool. The firewall's rules do not depend on the pool.
pub const DRILL_POOL: &str = "10.213.0.0/24";
/// Ports the `sibling-job` victim listens on, on its own job address (unprivileged ports: the
/// job user cannot bind below 1024).
pub const VICTIM_PORTS: [u16; 4] = [2222, 3306, 7777, 8080];
