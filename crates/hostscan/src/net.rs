//! Routes and firewall rules, read from files (and on the live host from `nft list ruleset`
//! and `iptables-save`), and the question the checks ask of them: could a process on this
//! host send a packet to a given address? Nothing is ever sent.
//!
//! The parsers are hand-written: `/proc/net/route` is a fixed hex table, and no crate parses
//! nftables' *text* syntax or `iptables-save` output (the `nftables` crate speaks only the
//! JSON form, which saved `/etc/nftables.conf` files are not in). They recover just what the
//! checks need — chains, their hook and policy, and each rule's destination matches and
//! verdict — and are deliberately conservative; see `docs/scan-host.md` for what is
//! approximated.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::report::Evidence;

/// An IPv4 or IPv6 prefix: airlock's one CIDR type (`ipnet`, through `airlock_policy`).
pub use airlock_policy::endpoints::IpNet as Cidr;

/// Parses `a.b.c.d[/n]` or `x:y::z[/n]` as written in firewall rules (a trailing `,` or
/// quotes are ignored); host bits are kept as written (they are masked on use).
pub fn parse_cidr(s: &str) -> Option<Cidr> {
    let s = s.trim().trim_matches(|c| c == ',' || c == '"');
    s.parse::<Cidr>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(Cidr::from))
}

/// Whether two prefixes share an address (same family only).
pub fn overlaps(a: Cidr, b: Cidr) -> bool {
    airlock_policy::endpoints::overlaps(&a, &b)
}

/// The cloud metadata address (airlock's one table of them: `airlock_policy::endpoints`).
pub const METADATA: &str = airlock_policy::endpoints::METADATA_V4[0];
/// AWS's IPv6 metadata address (Nitro instances with the IPv6 endpoint enabled).
pub const METADATA_V6: &str = airlock_policy::endpoints::METADATA_V6[0];
/// RFC 1918 private ranges plus carrier-grade NAT, the ranges production systems live in.
pub use airlock_policy::endpoints::PRIVATE;

/// One IPv4 route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Interface.
    pub iface: String,
    /// Destination prefix.
    pub dest: Cidr,
    /// A reject/blackhole route.
    pub reject: bool,
}

/// Parses `/proc/net/route`: a header line, then `Iface Destination Gateway Flags RefCnt Use
/// Metric Mask …` with addresses as the hex of the in-memory (network order) `u32`.
pub fn parse_proc_route(text: &str) -> Vec<Route> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    let hex_ip = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| u32::from(Ipv4Addr::from(v.to_le_bytes())))
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dest), Some(mask), Ok(flags)) =
            (hex_ip(f[1]), hex_ip(f[7]), u32::from_str_radix(f[3], 16))
        else {
            continue;
        };
        if flags & RTF_UP == 0 {
            continue;
        }
        let len = u8::try_from(mask.count_ones()).unwrap_or(32);
        out.push(Route {
            iface: f[0].to_owned(),
            dest: Cidr::V4(
                airlock_policy::endpoints::Ipv4Net::new(std::net::Ipv4Addr::from(dest), len)
                    .unwrap_or_default(),
            ),
            reject: flags & RTF_REJECT != 0,
        });
    }
    out
}

/// Parses `/proc/net/ipv6_route`: `dest plen src plen next_hop metric refcnt use flags
/// iface`, addresses as 32 hex digits, lengths and flags in hex; no header line.
pub fn parse_proc_ipv6_route(text: &str) -> Vec<Route> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Ok(dest), Ok(len), Ok(flags)) = (
            u128::from_str_radix(f[0], 16),
            u8::from_str_radix(f[1], 16),
            u32::from_str_radix(f[8], 16),
        ) else {
            continue;
        };
        if flags & RTF_UP == 0 || len > 128 {
            continue;
        }
        out.push(Route {
            iface: f[9].to_owned(),
            dest: Cidr::V6(
                ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(dest), len).unwrap_or_default(),
            ),
            reject: flags & RTF_REJECT != 0,
        });
    }
    out
}

/// The routes (not loopback, not reject) a packet to `target` could take, most specific
/// first.
pub fn routes_to(routes: &[Route], target: Cidr) -> Vec<&Route> {
    let mut v: Vec<&Route> = routes
        .iter()
        .filter(|r| !r.reject && r.iface != "lo" && overlaps(r.dest, target))
        .collect();
    v.sort_by_key(|r| std::cmp::Reverse(r.dest.prefix_len()));
    v
}

/// A firewall chain, from nftables, iptables or ufw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Where it was read (`/etc/nftables.conf`, `command: nft list ruleset`, …).
    pub source: String,
    /// `nft`, `iptables` or `ufw`.
    pub backend: &'static str,
    /// Table (`inet filter`, `filter`, …).
    pub table: String,
    /// Chain name.
    pub name: String,
    /// Netfilter hook for base chains (`output`, `forward`, `input`, …).
    pub hook: Option<String>,
    /// Chain type for nft base chains (`filter`, `nat`, `route`).
    pub kind: Option<String>,
    /// Default policy of a base chain, lower case (`accept`, `drop`).
    pub policy: Option<String>,
    /// Rule texts, sets and defines substituted.
    pub rules: Vec<String>,
}

impl Chain {
    /// Whether the chain sees traffic of this address family.
    pub fn family_ok(&self, v6: bool) -> bool {
        match self.backend {
            "nft" => {
                let fam = self.table.split(' ').next().unwrap_or_default();
                fam == "inet" || fam == if v6 { "ip6" } else { "ip" }
            }
            "iptables" => !v6,
            "ip6tables" => v6,
            _ => true,
        }
    }

    fn filtering(&self) -> bool {
        match self.backend {
            "iptables" | "ip6tables" => {
                let t = self.table.as_str();
                t == "filter" || t.is_empty()
            }
            _ => self.kind.as_deref().is_none_or(|k| k == "filter"),
        }
    }
}

/// Parses nftables text syntax (`/etc/nftables.conf`, `nft list ruleset`).
pub fn parse_nft(text: &str, source: &str) -> Vec<Chain> {
    enum Ctx {
        Table(String),
        Chain(usize),
        Set(String, String),
        Other,
    }
    let mut chains: Vec<Chain> = Vec::new();
    let mut sets: HashMap<(String, String), String> = HashMap::new();
    let mut defines: HashMap<String, String> = HashMap::new();
    let mut stack: Vec<Ctx> = Vec::new();
    let mut cur = String::new();
    let mut anon = 0usize;

    let cleaned: String = text
        .lines()
        .map(|l| l.split_once('#').map_or(l, |(a, _)| a))
        .collect::<Vec<_>>()
        .join("\n");

    let table_of = |stack: &[Ctx]| -> String {
        stack
            .iter()
            .rev()
            .find_map(|c| match c {
                Ctx::Table(t) => Some(t.clone()),
                _ => None,
            })
            .unwrap_or_default()
    };

    // Handles one complete statement in the current context.
    let flush = |stmt: &str,
                 stack: &mut Vec<Ctx>,
                 chains: &mut Vec<Chain>,
                 defines: &mut HashMap<String, String>| {
        let s = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.is_empty() {
            return;
        }
        match stack.last_mut() {
            Some(Ctx::Chain(i)) => {
                let c = &mut chains[*i];
                if let Some(rest) = s.strip_prefix("type ") {
                    let w: Vec<&str> = rest.split(' ').collect();
                    c.kind = w.first().map(|k| (*k).to_owned());
                    if let Some(p) = w.iter().position(|x| *x == "hook") {
                        c.hook = w.get(p + 1).map(|h| (*h).to_owned());
                    }
                    if let Some(p) = w.iter().position(|x| *x == "policy") {
                        c.policy = w.get(p + 1).map(|h| h.to_lowercase());
                    }
                } else if let Some(p) = s.strip_prefix("policy ") {
                    c.policy = Some(p.trim().to_lowercase());
                } else if !s.starts_with("comment ") && !s.starts_with("priority ") {
                    c.rules.push(s);
                }
            }
            Some(Ctx::Set(_, body)) => {
                body.push_str(&s);
                body.push(' ');
            }
            Some(Ctx::Table(_)) | Some(Ctx::Other) => {}
            None => {
                if let Some(rest) = s.strip_prefix("define ") {
                    if let Some((k, v)) = rest.split_once('=') {
                        defines.insert(k.trim().to_owned(), v.trim().to_owned());
                    }
                } else if let Some(rest) = s
                    .strip_prefix("add rule ")
                    .or_else(|| s.strip_prefix("insert rule "))
                {
                    let w: Vec<&str> = rest.splitn(4, ' ').collect();
                    if w.len() == 4 {
                        let table = format!("{} {}", w[0], w[1]);
                        let i = chain_index(chains, source, &table, w[2]);
                        chains[i].rules.push(w[3].to_owned());
                    }
                }
            }
        }
    };

    for ch in cleaned.chars() {
        match ch {
            '{' if anon == 0 && opens_block(&cur) => {
                let header = std::mem::take(&mut cur);
                let s = header.split_whitespace().collect::<Vec<_>>();
                let s: Vec<&str> = if matches!(s.first(), Some(&"add") | Some(&"create")) {
                    s[1..].to_vec()
                } else {
                    s
                };
                match s.first().copied() {
                    Some("table") => {
                        let t = match s.len() {
                            2 => format!("ip {}", s[1]),
                            n if n >= 3 => format!("{} {}", s[1], s[2]),
                            _ => String::new(),
                        };
                        stack.push(Ctx::Table(t));
                    }
                    Some("chain") => {
                        // Inside a table: `chain NAME`; top level: `chain FAMILY TABLE NAME`.
                        let (table, name) = if s.len() >= 4 {
                            (format!("{} {}", s[1], s[2]), s[3].to_owned())
                        } else {
                            (
                                table_of(&stack),
                                s.get(1).map(|x| (*x).to_owned()).unwrap_or_default(),
                            )
                        };
                        let i = chain_index(&mut chains, source, &table, &name);
                        stack.push(Ctx::Chain(i));
                    }
                    Some("set") | Some("map") => {
                        let name = s.last().map(|x| (*x).to_owned()).unwrap_or_default();
                        stack.push(Ctx::Set(name, String::new()));
                    }
                    _ => stack.push(Ctx::Other),
                }
            }
            '{' => {
                anon += 1;
                cur.push('{');
            }
            '}' if anon > 0 => {
                anon -= 1;
                cur.push('}');
            }
            '}' => {
                let stmt = std::mem::take(&mut cur);
                flush(&stmt, &mut stack, &mut chains, &mut defines);
                if let Some(Ctx::Set(name, body)) = stack.pop() {
                    let table = table_of(&stack);
                    let elements = body
                        .split_once("elements =")
                        .map(|(_, e)| e.trim().to_owned())
                        .unwrap_or_default();
                    sets.insert((table, name), elements);
                }
            }
            '\n' | ';' if anon == 0 => {
                let stmt = std::mem::take(&mut cur);
                flush(&stmt, &mut stack, &mut chains, &mut defines);
            }
            '\n' => cur.push(' '),
            c => cur.push(c),
        }
    }
    let stmt = std::mem::take(&mut cur);
    flush(&stmt, &mut stack, &mut chains, &mut defines);

    // Substitute `@set` and `$define` so rule texts carry their addresses.
    for c in &mut chains {
        for r in &mut c.rules {
            let mut out = Vec::new();
            for w in r.split(' ') {
                if let Some(n) = w.strip_prefix('@') {
                    if let Some(e) = sets.get(&(c.table.clone(), n.to_owned())) {
                        out.push(e.clone());
                        continue;
                    }
                }
                if let Some(n) = w.strip_prefix('$') {
                    if let Some(e) = defines.get(n) {
                        out.push(e.clone());
                        continue;
                    }
                }
                out.push(w.to_owned());
            }
            *r = out.join(" ");
        }
    }
    chains
}

fn opens_block(stmt: &str) -> bool {
    let mut w = stmt.split_whitespace();
    let mut first = w.next();
    if matches!(first, Some("add") | Some("create")) {
        first = w.next();
    }
    matches!(
        first,
        Some("table") | Some("chain") | Some("set") | Some("map") | Some("flowtable")
    )
}

fn chain_index(chains: &mut Vec<Chain>, source: &str, table: &str, name: &str) -> usize {
    if let Some(i) = chains
        .iter()
        .position(|c| c.table == table && c.name == name)
    {
        return i;
    }
    chains.push(Chain {
        source: source.to_owned(),
        backend: "nft",
        table: table.to_owned(),
        name: name.to_owned(),
        hook: None,
        kind: None,
        policy: None,
        rules: Vec::new(),
    });
    chains.len() - 1
}

/// Parses `iptables-save` / `ip6tables-save` output (`/etc/iptables/rules.v4|v6`,
/// `/etc/sysconfig/iptables`, `/etc/ufw/user.rules`); `backend` is `iptables` or
/// `ip6tables`.
pub fn parse_iptables(text: &str, source: &str, backend: &'static str) -> Vec<Chain> {
    let mut chains: Vec<Chain> = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix(':') {
            let mut w = rest.split_whitespace();
            let name = w.next().unwrap_or_default().to_owned();
            let policy = w.next().filter(|p| *p != "-").map(str::to_lowercase);
            let hook = match name.as_str() {
                "INPUT" | "OUTPUT" | "FORWARD" | "PREROUTING" | "POSTROUTING" => {
                    Some(name.to_lowercase())
                }
                _ => None,
            };
            chains.push(Chain {
                source: source.to_owned(),
                backend,
                table: table.clone(),
                name,
                hook,
                kind: None,
                policy,
                rules: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (name, rule) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some(c) = chains
                .iter_mut()
                .find(|c| c.table == table && c.name == name)
            {
                c.rules.push(rule.to_owned());
            }
        }
    }
    chains
}

/// Reads ufw's `DEFAULT_*_POLICY` from `/etc/default/ufw` (only when ufw is enabled).
pub fn parse_ufw_defaults(text: &str, source: &str) -> Vec<Chain> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let hook = match k.trim() {
            "DEFAULT_OUTPUT_POLICY" => "output",
            "DEFAULT_FORWARD_POLICY" => "forward",
            "DEFAULT_INPUT_POLICY" => "input",
            _ => continue,
        };
        out.push(Chain {
            source: source.to_owned(),
            backend: "ufw",
            table: "ufw".to_owned(),
            name: hook.to_owned(),
            hook: Some(hook.to_owned()),
            kind: None,
            policy: Some(v.trim().trim_matches('"').to_lowercase()),
            rules: Vec::new(),
        });
    }
    out
}

/// What a rule does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `accept` / `-j ACCEPT`.
    Accept,
    /// `drop`, `reject`, `-j DROP`, `-j REJECT`.
    Deny,
    /// Anything else (counters, jumps, logging, NAT…).
    Other,
}

/// The verdict of a rule text.
pub fn verdict(rule: &str) -> Verdict {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let has = |w: &str| words.iter().any(|x| x.eq_ignore_ascii_case(w));
    if let Some(p) = words.iter().position(|w| *w == "-j" || *w == "--jump") {
        return match words.get(p + 1).copied() {
            Some("DROP") | Some("REJECT") => Verdict::Deny,
            Some("ACCEPT") => Verdict::Accept,
            _ => Verdict::Other,
        };
    }
    if has("drop") || has("reject") {
        Verdict::Deny
    } else if has("accept") {
        Verdict::Accept
    } else {
        Verdict::Other
    }
}

/// IPv4 destination prefixes a rule matches on (`ip daddr …`, `-d …`). `None` when the rule
/// has no destination match; negated matches (`!=`, `! -d`) also give `None` (not usable).
pub fn daddrs(rule: &str) -> Option<Vec<Cidr>> {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let mut found = None::<Vec<Cidr>>;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let is_nft = w == "daddr" && i > 0 && (words[i - 1] == "ip" || words[i - 1] == "ip6");
        let is_ipt = w == "-d" || w == "--destination";
        if is_nft || is_ipt {
            if (is_ipt && i > 0 && words[i - 1] == "!") || words.get(i + 1) == Some(&"!=") {
                return None;
            }
            let mut j = i + 1;
            let mut v = Vec::new();
            if words.get(j) == Some(&"{") || words.get(j).is_some_and(|x| x.starts_with('{')) {
                while j < words.len() {
                    let t = words[j].trim_start_matches('{').trim_end_matches('}');
                    if let Some(c) = parse_cidr(t) {
                        v.push(c);
                    }
                    if words[j].ends_with('}') {
                        break;
                    }
                    j += 1;
                }
            } else if let Some(t) = words.get(j) {
                for part in t.split(',') {
                    if let Some(c) = parse_cidr(part) {
                        v.push(c);
                    }
                }
            }
            found.get_or_insert_with(Vec::new).extend(v);
            i = j;
        }
        i += 1;
    }
    found
}

/// Whether an accept rule without a destination match is one of the usual harmless
/// ones (established/related traffic, loopback) rather than "accept everything".
fn benign_accept(rule: &str) -> bool {
    let r = rule.to_lowercase();
    [
        "established",
        "related",
        "lo ",
        "\"lo\"",
        "oif lo",
        "-o lo",
        "oifname lo",
        "icmp",
        "--sport",
        "sport",
        "dport 53",
        "udp dport",
        "ct state",
    ]
    .iter()
    .any(|k| r.contains(k))
        || r.ends_with(" lo accept")
}

/// All chains found on the host, and where they were read.
#[derive(Debug, Clone, Default)]
pub struct Firewall {
    /// Every chain.
    pub chains: Vec<Chain>,
    /// The sources read, with a one-line description each.
    pub sources: Vec<Evidence>,
}

/// How a packet to a target would fare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// An explicit drop/reject rule matches it.
    DeniedByRule(Evidence),
    /// A base chain's policy drops it and no accept rule covers it.
    DeniedByPolicy(Evidence),
    /// An accept rule matches it.
    AllowedByRule(Evidence),
    /// The egress chains' policy accepts it.
    AllowedByPolicy(Evidence),
    /// No egress chain is known.
    NoFirewall,
}

impl Reach {
    /// Whether the packet is stopped.
    pub fn denied(&self) -> bool {
        matches!(self, Reach::DeniedByRule(_) | Reach::DeniedByPolicy(_))
    }
}

impl Firewall {
    /// Base chains on the output hook that filter.
    pub fn output_chains(&self) -> impl Iterator<Item = &Chain> {
        self.chains
            .iter()
            .filter(|c| c.hook.as_deref() == Some("output") && c.filtering())
    }

    fn output_chains_for(&self, v6: bool) -> impl Iterator<Item = &Chain> {
        self.output_chains().filter(move |c| c.family_ok(v6))
    }

    /// Base chains on a hook that filter.
    pub fn hooked(&self, hook: &str) -> Vec<&Chain> {
        self.chains
            .iter()
            .filter(|c| c.hook.as_deref() == Some(hook) && c.filtering())
            .collect()
    }

    /// Chains whose rules can apply to locally generated traffic: output base chains, and
    /// chains without a hook (they may be jumped to). Input/forward/NAT chains are skipped.
    fn egress_rules(&self) -> impl Iterator<Item = (&Chain, &String)> {
        self.chains
            .iter()
            .filter(|c| c.filtering() && matches!(c.hook.as_deref(), None | Some("output")))
            .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
    }

    fn egress_rules_for(&self, v6: bool) -> impl Iterator<Item = (&Chain, &String)> {
        self.egress_rules().filter(move |(c, _)| c.family_ok(v6))
    }

    /// Would a packet from a host process to (all of) `target` leave the host?
    ///
    /// Order-insensitive approximation: a deny rule whose destination covers the target
    /// wins; otherwise a drop policy on an output base chain denies unless an accept rule
    /// covers the target or accepts without a destination match (and is not just
    /// established/loopback traffic).
    pub fn reach(&self, target: Cidr) -> Reach {
        for (c, r) in self.egress_rules_for(matches!(target, Cidr::V6(_))) {
            if verdict(r) == Verdict::Deny {
                if let Some(d) = daddrs(r) {
                    if d.iter().any(|n| n.contains(&target)) {
                        return Reach::DeniedByRule(Evidence::new(
                            &c.source,
                            format!("{} {}: {r}", c.table, c.name),
                        ));
                    }
                }
            }
        }
        let outs: Vec<&Chain> = self
            .output_chains_for(matches!(target, Cidr::V6(_)))
            .collect();
        if outs.is_empty() {
            return Reach::NoFirewall;
        }
        let dropping = outs
            .iter()
            .find(|c| matches!(c.policy.as_deref(), Some("drop") | Some("reject")));
        match dropping {
            Some(dc) => {
                for (c, r) in self.egress_rules_for(matches!(target, Cidr::V6(_))) {
                    if verdict(r) != Verdict::Accept {
                        continue;
                    }
                    let hit = match daddrs(r) {
                        Some(d) => d.iter().any(|n| overlaps(*n, target)),
                        None => !benign_accept(r),
                    };
                    if hit {
                        return Reach::AllowedByRule(Evidence::new(
                            &c.source,
                            format!("{} {}: {r}", c.table, c.name),
                        ));
                    }
                }
                Reach::DeniedByPolicy(Evidence::new(
                    &dc.source,
                    format!(
                        "{} {}: policy {}",
                        dc.table,
                        dc.name,
                        dc.policy.as_deref().unwrap_or("?")
                    ),
                ))
            }
            None => {
                let c = outs[0];
                Reach::AllowedByPolicy(Evidence::new(
                    &c.source,
                    format!(
                        "{} {}: policy {}",
                        c.table,
                        c.name,
                        c.policy.as_deref().unwrap_or("accept")
                    ),
                ))
            }
        }
    }

    /// Accept rules with a destination match in egress chains: an allow-list.
    pub fn allow_rules(&self) -> Vec<Evidence> {
        self.egress_rules()
            .filter(|(_, r)| {
                verdict(r) == Verdict::Accept && daddrs(r).is_some_and(|d| !d.is_empty())
                    || (verdict(r) == Verdict::Accept
                        && (r.contains("dport") || r.contains("--dport"))
                        && !benign_accept(r))
            })
            .map(|(c, r)| Evidence::new(&c.source, format!("{} {}: {r}", c.table, c.name)))
            .collect()
    }

    /// Rules that log packets (`log`, `-j LOG`, `-j NFLOG`).
    pub fn log_rules(&self) -> Vec<Evidence> {
        self.chains
            .iter()
            .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
            .filter(|(_, r)| {
                let w: Vec<&str> = r.split_whitespace().collect();
                w.contains(&"log")
                    || w.windows(2).any(|p| {
                        p[0] == "-j" && (p[1] == "LOG" || p[1] == "NFLOG" || p[1] == "ULOG")
                    })
            })
            .map(|(c, r)| Evidence::new(&c.source, format!("{} {}: {r}", c.table, c.name)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_route_parses_default_and_link_routes() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
                 eth0\tFEA9FEA9\t00000000\t0201\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
        let r = parse_proc_route(t);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].dest.to_string(), "0.0.0.0/0");
        assert_eq!(r[1].dest.to_string(), "192.168.2.0/24");
        assert!(r[2].reject);
        let md = parse_cidr(METADATA).expect("cidr");
        assert_eq!(routes_to(&r, md).len(), 1, "reject route is not a way out");
    }

    #[test]
    fn nft_sets_defines_and_policies() {
        let t = r#"
            #!/usr/sbin/nft -f
            flush ruleset
            define META = 169.254.169.254
            table inet filter {
                set blocked { type ipv4_addr; flags interval; elements = { 10.0.0.0/8,
                    192.168.0.0/16 } }
                chain output {
                    type filter hook output priority 0; policy accept;
                    ip daddr @blocked drop
                    ip daddr $META counter reject
                    ip daddr { 172.16.0.0/12, 100.64.0.0/10 } drop # comment
                }
            }
        "#;
        let fw = Firewall {
            chains: parse_nft(t, "/etc/nftables.conf"),
            sources: vec![],
        };
        assert_eq!(fw.chains.len(), 1);
        assert_eq!(fw.chains[0].hook.as_deref(), Some("output"));
        assert_eq!(fw.chains[0].policy.as_deref(), Some("accept"));
        for n in PRIVATE.iter().chain([METADATA].iter()) {
            let c = parse_cidr(n).expect("cidr");
            assert!(
                fw.reach(c).denied(),
                "{n} should be denied: {:?}",
                fw.chains[0].rules
            );
        }
        let public = parse_cidr("140.82.112.3").expect("cidr");
        assert!(matches!(fw.reach(public), Reach::AllowedByPolicy(_)));
    }

    #[test]
    fn policy_drop_with_accept_all_rule_is_open() {
        let t = "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n-A OUTPUT -o lo -j ACCEPT\n-A OUTPUT -m owner --uid-owner 1001 -j ACCEPT\nCOMMIT\n";
        let fw = Firewall {
            chains: parse_iptables(t, "x", "iptables"),
            sources: vec![],
        };
        let md = parse_cidr(METADATA).expect("cidr");
        assert!(matches!(fw.reach(md), Reach::AllowedByRule(_)));
        let t2 = "*filter\n:OUTPUT DROP [0:0]\n-A OUTPUT -o lo -j ACCEPT\n-A OUTPUT -d 140.82.112.0/20 -p tcp --dport 443 -j ACCEPT\nCOMMIT\n";
        let fw2 = Firewall {
            chains: parse_iptables(t2, "x", "iptables"),
            sources: vec![],
        };
        assert!(matches!(fw2.reach(md), Reach::DeniedByPolicy(_)));
        assert_eq!(fw2.allow_rules().len(), 1);
    }

    /// No token soup makes the parsers or the reachability walk panic (a cheap
    /// deterministic fuzz: xorshift over the parsers' own vocabulary).
    #[test]
    fn parsers_never_panic() {
        const WORDS: [&str; 40] = [
            "table",
            "chain",
            "set",
            "map",
            "add",
            "rule",
            "{",
            "}",
            ";",
            "\n",
            "ip",
            "daddr",
            "!=",
            "10.0.0.0/8",
            "169.254.169.254",
            "0.0.0.0/0",
            "300.1.1.1/99",
            "drop",
            "accept",
            "reject",
            "policy",
            "hook",
            "output",
            "type",
            "filter",
            "elements",
            "=",
            "@s",
            "$d",
            "define",
            "inet",
            "-A",
            "-d",
            "!",
            "*filter",
            ":OUTPUT",
            "DROP",
            "-j",
            "#",
            "/",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let targets: Vec<Cidr> = [METADATA, PRIVATE[0], "0.0.0.0/0"]
            .iter()
            .filter_map(|t| parse_cidr(t))
            .collect();
        for _ in 0..3000 {
            let n = usize::try_from(next() % 60).unwrap_or(0);
            let text: Vec<&str> = (0..n)
                .map(|_| WORDS[usize::try_from(next() % WORDS.len() as u64).unwrap_or(0)])
                .collect();
            let text = text.join(" ");
            let mut chains = parse_nft(&text, "fuzz");
            chains.extend(parse_iptables(
                &text.replace(' ', "\n"),
                "fuzz",
                "ip6tables",
            ));
            chains.extend(parse_ufw_defaults(&text, "fuzz"));
            let _ = parse_proc_route(&text);
            let fw = Firewall {
                chains,
                sources: vec![],
            };
            for t in &targets {
                let _ = fw.reach(*t);
            }
            let _ = fw.allow_rules();
            let _ = fw.log_rules();
        }
    }

    #[test]
    fn ipv6_routes_and_families() {
        let t = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                 00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        let r = parse_proc_ipv6_route(t);
        assert_eq!(
            r.len(),
            1,
            "the kernel's unreachable default on lo is not up"
        );
        assert_eq!(r[0].dest.to_string(), "::/0");
        let md6 = parse_cidr(METADATA_V6).expect("cidr");
        assert_eq!(routes_to(&r, md6).len(), 1);
        let md4 = parse_cidr(METADATA).expect("cidr");
        assert!(
            routes_to(&r, md4).is_empty(),
            "an IPv6 route does not carry IPv4"
        );

        // An ip6 table's drop policy says nothing about IPv4, an inet one covers both.
        let ip6 =
            "table ip6 f {\n chain o {\n type filter hook output priority 0; policy drop;\n }\n}\n";
        let fw = Firewall {
            chains: parse_nft(ip6, "x"),
            sources: vec![],
        };
        assert!(fw.reach(md6).denied());
        assert!(matches!(fw.reach(md4), Reach::NoFirewall));
        let inet = ip6.replace("ip6", "inet");
        let fw = Firewall {
            chains: parse_nft(&inet, "x"),
            sources: vec![],
        };
        assert!(fw.reach(md6).denied() && fw.reach(md4).denied());
        let v4rules = "*filter\n:OUTPUT DROP [0:0]\nCOMMIT\n";
        let fw = Firewall {
            chains: parse_iptables(v4rules, "x", "iptables"),
            sources: vec![],
        };
        assert!(fw.reach(md4).denied());
        assert!(matches!(fw.reach(md6), Reach::NoFirewall));
        let deny6 = "table inet f {\n chain o {\n type filter hook output priority 0; policy accept;\n ip6 daddr fd00:ec2::/32 drop\n }\n}\n";
        let fw = Firewall {
            chains: parse_nft(deny6, "x"),
            sources: vec![],
        };
        assert!(matches!(fw.reach(md6), Reach::DeniedByRule(_)));
        assert!(matches!(fw.reach(md4), Reach::AllowedByPolicy(_)));
    }

    #[test]
    fn negated_destination_is_not_a_block() {
        assert_eq!(daddrs("ip daddr != 10.0.0.0/8 drop"), None);
        assert_eq!(daddrs("! -d 10.0.0.0/8 -j DROP"), None);
        assert_eq!(
            daddrs("-d 10.0.0.0/8,192.168.0.0/16 -j DROP").map(|v| v.len()),
            Some(2)
        );
    }
}
