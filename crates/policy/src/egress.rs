//! Egress rules in checked form: domain patterns, presets, internal CIDR:port allowances.

use std::net::{Ipv4Addr, SocketAddr};

use crate::{Egress, EgressMode};

/// The hosts GitHub documents for self-hosted runners (the "communicating with self-hosted
/// runners" page), and the package registries most builds need.
pub const PRESETS: &[(&str, &[&str])] = &[
    (
        "github",
        &[
            "github.com",
            "api.github.com",
            "codeload.github.com",
            "*.actions.githubusercontent.com",
            "results-receiver.actions.githubusercontent.com",
            "*.blob.core.windows.net",
            "objects.githubusercontent.com",
            "objects-origin.githubusercontent.com",
            "github-releases.githubusercontent.com",
            "github-registry-files.githubusercontent.com",
            "raw.githubusercontent.com",
            "pkg.actions.githubusercontent.com",
            "ghcr.io",
            "*.pkg.github.com",
            "pkg-containers.githubusercontent.com",
            "github-cloud.githubusercontent.com",
            "github-cloud.s3.amazonaws.com",
            "dependabot-actions.githubapp.com",
        ],
    ),
    (
        "package-registries",
        &[
            "crates.io",
            "index.crates.io",
            "static.crates.io",
            "static.rust-lang.org",
            "pypi.org",
            "files.pythonhosted.org",
            "registry.npmjs.org",
            "registry.yarnpkg.com",
            "deb.debian.org",
            "security.debian.org",
            "repo.maven.apache.org",
            "repo1.maven.org",
            "proxy.golang.org",
            "sum.golang.org",
            "rubygems.org",
            "index.rubygems.org",
        ],
    ),
];

/// A checked domain pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPattern {
    /// Lower-case name without the `*.`.
    pub name: String,
    /// `*.name`: names below `name`, not `name` itself.
    pub wildcard: bool,
}

impl DomainPattern {
    /// Parses `name` or `*.name`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, s.clone()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "invalid domain pattern {s:?}: use name.example or *.name.example"
            ));
        }
        Ok(Self { name, wildcard })
    }

    /// Whether `host` (any case, optional trailing dot) matches.
    pub fn matches(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard {
            h.len() > self.name.len() + 1
                && h.ends_with(&self.name)
                && h.as_bytes()[h.len() - self.name.len() - 1] == b'.'
        } else {
            h == self.name
        }
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// Transport of an allow rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// `CIDR:PORT[/udp]`: an internal service a group may reach directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowRule {
    /// The network (host bits cleared).
    pub net: crate::endpoints::Ipv4Net,
    /// Port.
    pub port: u16,
    /// Transport.
    pub proto: Proto,
}

impl AllowRule {
    /// Parses `10.1.2.3/32:5432`, `10.1.0.0/16:53/udp` or `10.1.2.3:5432` (= /32).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid allow rule {s:?}: write CIDR:PORT, e.g. \"10.1.2.3/32:5432\" or \"10.1.0.0/16:53/udp\"")
        };
        let (body, proto) = match s.trim().rsplit_once('/') {
            Some((b, "udp")) => (b, Proto::Udp),
            Some((b, "tcp")) => (b, Proto::Tcp),
            _ => (s.trim(), Proto::Tcp),
        };
        let (net, port) = body.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        let net = crate::endpoints::parse_v4(net).ok_or_else(bad)?;
        Ok(Self { net, port, proto })
    }

    /// Whether both rules cover some same address, port and transport (CIDRs are either
    /// nested or disjoint, so it is enough to test one network inside the other).
    pub fn overlaps(&self, other: &AllowRule) -> bool {
        (self.net.contains(&other.net) || other.net.contains(&self.net))
            && self.port == other.port
            && self.proto == other.proto
    }

    /// Whether `ip:port` over `proto` falls under this rule.
    pub fn covers(&self, ip: Ipv4Addr, port: u16, proto: Proto) -> bool {
        proto == self.proto && port == self.port && self.net.contains(&ip)
    }
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.net, self.port)?;
        if self.proto == Proto::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

/// A group's egress in checked form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRules {
    /// The mode.
    pub mode: EgressMode,
    /// Domain patterns, presets expanded.
    pub domains: Vec<DomainPattern>,
    /// Internal allowances.
    pub allow: Vec<AllowRule>,
    /// The upstream resolver, if the policy names one.
    pub resolver: Option<SocketAddr>,
}

impl EgressRules {
    /// Checks and expands a group's `egress`; every problem is returned.
    pub fn from_policy(e: &Egress) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut domains = Vec::new();
        for d in &e.domains {
            match DomainPattern::parse(d) {
                Ok(p) => domains.push(p),
                Err(m) => errors.push(m),
            }
        }
        for p in &e.presets {
            match PRESETS.iter().find(|(n, _)| n == p) {
                Some((_, list)) => {
                    domains.extend(list.iter().filter_map(|d| DomainPattern::parse(d).ok()))
                }
                None => errors.push(format!(
                    "unknown preset {p:?}; presets: {}",
                    PRESETS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        let mut allow: Vec<AllowRule> = Vec::new();
        for a in &e.allow {
            match AllowRule::parse(a) {
                Ok(r) => {
                    // The firewall keeps allow rules in an interval set, which refuses
                    // overlapping elements: the job would fail to start. Say so here.
                    if let Some(o) = allow.iter().find(|o| o.overlaps(&r)) {
                        errors.push(format!(
                            "allow rules \"{o}\" and \"{r}\" overlap (same port, one network inside the other); keep only the wider one"
                        ));
                    } else {
                        allow.push(r);
                    }
                }
                Err(m) => errors.push(m),
            }
        }
        let resolver = match &e.resolver {
            None => None,
            Some(r) => match r.parse::<SocketAddr>().or_else(|_| {
                r.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            }) {
                Ok(a) => Some(a),
                Err(_) => {
                    errors.push(format!("invalid resolver {r:?}: write an IP or IP:PORT"));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(Self {
                mode: e.mode,
                domains,
                allow,
                resolver,
            })
        } else {
            Err(errors)
        }
    }

    /// Whether a name is allowed by the domain patterns.
    pub fn allows_name(&self, host: &str) -> bool {
        self.domains.iter().any(|d| d.matches(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly_or_below() {
        let p = DomainPattern::parse("*.Example.com").expect("ok");
        assert!(p.matches("a.example.com") && p.matches("x.y.EXAMPLE.com."));
        assert!(!p.matches("example.com") && !p.matches("badexample.com"));
        let e = DomainPattern::parse("example.com").expect("ok");
        assert!(e.matches("example.com") && !e.matches("a.example.com"));
        assert!(DomainPattern::parse("exa mple.com").is_err());
        assert!(DomainPattern::parse("*.").is_err());
    }

    #[test]
    fn allow_rules_parse_and_cover() {
        let r = AllowRule::parse("10.1.2.3/24:5432").expect("ok");
        assert_eq!(r.to_string(), "10.1.2.0/24:5432");
        assert!(r.covers("10.1.2.77".parse().expect("ip"), 5432, Proto::Tcp));
        assert!(!r.covers("10.1.3.1".parse().expect("ip"), 5432, Proto::Tcp));
        assert!(!r.covers("10.1.2.1".parse().expect("ip"), 5432, Proto::Udp));
        assert_eq!(
            AllowRule::parse("10.0.0.53:53/udp").expect("ok").proto,
            Proto::Udp
        );
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33:1",
            "x:1",
            "10.0.0.1:0",
            "10.0.0.1:99999",
        ] {
            assert!(AllowRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn presets_expand_and_unknown_ones_are_errors() {
        let e = Egress {
            presets: vec!["github".into()],
            ..Egress::default()
        };
        let r = EgressRules::from_policy(&e).expect("ok");
        assert!(
            r.allows_name("api.github.com")
                && r.allows_name("pipelines.actions.githubusercontent.com")
        );
        assert!(!r.allows_name("evil.com"));
        let e = Egress {
            presets: vec!["gihtub".into()],
            allow: vec!["nope".into()],
            ..Egress::default()
        };
        assert_eq!(EgressRules::from_policy(&e).expect_err("bad").len(), 2);
    }

    #[test]
    fn overlapping_allow_rules_are_refused_by_name() {
        let rules = |v: &[&str]| Egress {
            allow: v.iter().map(|s| s.to_string()).collect(),
            ..Egress::default()
        };
        let e = EgressRules::from_policy(&rules(&["10.0.0.0/8:443", "10.1.2.3/32:443"]))
            .expect_err("overlap");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("10.0.0.0/8:443") && e[0].contains("10.1.2.3/32:443"),
            "{e:?}"
        );
        assert!(EgressRules::from_policy(&rules(&["10.1.2.3:5432", "10.1.2.3/32:5432"])).is_err());
        // Other port, other transport, disjoint networks: fine.
        let ok = EgressRules::from_policy(&rules(&[
            "10.0.0.0/8:443",
            "10.1.2.3/32:5432",
            "10.0.0.0/8:443/udp",
            "192.168.0.0/16:443",
        ]))
        .expect("no overlap");
        assert_eq!(ok.allow.len(), 4);
    }

    #[test]
    fn package_registries_preset_covers_each_ecosystem_and_nothing_else() {
        let e = Egress {
            presets: vec!["package-registries".into()],
            ..Egress::default()
        };
        let r = EgressRules::from_policy(&e).expect("ok");
        // crates.io, PyPI, npm, Debian, Maven Central, the Go module proxy, RubyGems.
        for host in [
            "index.crates.io",
            "static.crates.io",
            "pypi.org",
            "files.pythonhosted.org",
            "registry.npmjs.org",
            "deb.debian.org",
            "security.debian.org",
            "repo1.maven.org",
            "repo.maven.apache.org",
            "proxy.golang.org",
            "sum.golang.org",
            "rubygems.org",
            "index.rubygems.org",
        ] {
            assert!(r.allows_name(host), "{host} not in package-registries");
        }
        for host in [
            "github.com",
            "evil.pythonhosted.org.attacker.test",
            "npmjs.org.evil",
        ] {
            assert!(!r.allows_name(host), "{host} allowed by package-registries");
        }
    }
}
