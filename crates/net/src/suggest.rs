//! `airlock policy suggest`: the minimal egress allow-list that would have let the recorded
//! traffic through (typically recorded in `audit` mode), never including a never-reachable
//! target.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use airlock_audit::ConnRecord;
use airlock_policy::endpoints::{is_never as in_never, METADATA_NAMES as NEVER_NAMES};

/// How many names under one parent domain collapse into `*.parent`.
pub const COLLAPSE_AT: usize = 3;

/// The result.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// Domain patterns.
    pub domains: Vec<String>,
    /// `CIDR:PORT[/udp]` rules for internal addresses.
    pub allow: Vec<String>,
    /// Traffic the model cannot express (public addresses on ports other than 80/443), and
    /// never-reachable targets that were seen: reported, not suggested.
    pub notes: Vec<String>,
    /// Records read.
    pub records: usize,
}

fn is_internal(ip: std::net::Ipv4Addr) -> bool {
    airlock_policy::endpoints::is_internal(ip)
}

/// The parent a name collapses into: the name without its first label, as long as that is
/// still the registrable domain or below it. Never a public suffix: the Public Suffix List
/// (`psl`, private section included) keeps `*.github.io`, `*.s3.amazonaws.com` or `*.co.uk`
/// from ever being suggested, since anyone can host a name under those.
fn parent(name: &str) -> Option<String> {
    let (_, p) = name.split_once('.')?;
    let registrable = psl::domain_str(name)?;
    (p.len() >= registrable.len()).then(|| p.to_owned())
}

/// A DNS host name as a policy can allow it: dot-separated labels of letters, digits, `-` and
/// `_` (service labels), each 1 to 63 bytes, 253 in all, an optional trailing dot.
fn is_host_name(n: &str) -> bool {
    let n = n.strip_suffix('.').unwrap_or(n);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Builds the suggestion from records. Addresses in `pool` (jobs and their gateways) are
/// never suggested.
pub fn suggest(records: &[ConnRecord], pool: Option<&crate::Pool>) -> Suggestion {
    let mut s = Suggestion {
        records: records.len(),
        ..Suggestion::default()
    };
    let mut names = BTreeSet::new();
    let mut allow = BTreeSet::new();
    let mut notes = BTreeSet::new();
    for r in records {
        let never_name = r.name.as_deref().is_some_and(|n| NEVER_NAMES.contains(&n));
        let never_addr = matches!(r.resolved, Some(IpAddr::V4(ip)) if in_never(ip))
            || matches!(r.dialled, Some(SocketAddr::V4(a)) if in_never(*a.ip()));
        if never_name || never_addr || r.reason.contains("never reachable") {
            notes.insert(format!(
                "never reachable, not suggested: {}",
                r.name
                    .clone()
                    .or(r.dialled.map(|d| d.to_string()))
                    .unwrap_or_default()
            ));
            continue;
        }
        match r.kind.as_str() {
            "dns" | "http" | "https" | "connect" => {
                if let Some(n) = &r.name {
                    if n.parse::<IpAddr>().is_err() && !n.is_empty() && !is_host_name(n) {
                        // The job chose this name: it never reaches the policy text (a quote
                        // or a line break would write TOML of the job's choosing).
                        notes.insert(format!("not a host name, not suggested: {n}"));
                    } else if n.parse::<IpAddr>().is_err() && !n.is_empty() {
                        names.insert(n.trim_end_matches('.').to_ascii_lowercase());
                    } else if !n.is_empty() {
                        notes.insert(format!(
                            "connection by address, not expressible as a name: {n}:{}",
                            r.port
                        ));
                    }
                }
            }
            "drop" | "flow" => {
                if let Some(SocketAddr::V4(a)) = r.dialled {
                    let udp = r.qtype.as_deref() == Some("udp");
                    if pool.is_some_and(|p| p.contains(*a.ip())) {
                        notes.insert(format!(
                            "job address pool (another job or a gateway), not suggested: {a}"
                        ));
                    } else if is_internal(*a.ip()) {
                        allow.insert(format!(
                            "{}/32:{}{}",
                            a.ip(),
                            a.port(),
                            if udp { "/udp" } else { "" }
                        ));
                    } else {
                        notes.insert(format!(
                            "public {} traffic to {a} cannot be allowed by name; route it through a name on port 80/443 or an internal mirror",
                            if udp { "udp" } else { "tcp" }
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    // Collapse siblings: three or more names under one parent become `*.parent` (plus the
    // parent itself if it was used).
    let mut by_parent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &names {
        if let Some(p) = parent(n) {
            by_parent.entry(p).or_default().push(n.clone());
        }
    }
    let mut out = BTreeSet::new();
    for n in &names {
        match parent(n) {
            Some(p) if by_parent.get(&p).is_some_and(|v| v.len() >= COLLAPSE_AT) => {
                out.insert(format!("*.{p}"));
            }
            _ => {
                out.insert(n.clone());
            }
        }
    }
    s.domains = out.into_iter().collect();
    s.allow = allow.into_iter().collect();
    s.notes = notes.into_iter().collect();
    s
}

impl Suggestion {
    /// The suggestion as a policy fragment for group `group`.
    pub fn to_toml(&self, group: &str) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "[]".to_owned()
            } else {
                format!(
                    "[\n{}\n]",
                    v.iter()
                        .map(|x| format!("  \"{x}\","))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            }
        };
        let mut t = format!(
            "# suggested by `airlock policy suggest` from {} records\n[groups.{group}.egress]\nmode = \"block\"\ndomains = {}\nallow = {}\n",
            self.records,
            list(&self.domains),
            list(&self.allow)
        );
        for n in &self.notes {
            // Notes quote job-chosen names: escaped, so a line break cannot end the comment.
            t.push_str(&format!("# {}\n", airlock_text::escape(n)));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_chosen_name_cannot_write_policy_text() {
        let evil = "x.example.com\",\n]\nmode = \"audit\"\n#";
        let recs = vec![
            rec("dns", Some(evil), None, Some("A")),
            rec("dns", Some("ok.example.com"), None, Some("A")),
        ];
        let t = suggest(&recs, None).to_toml("g");
        let parsed: toml::Table = toml::from_str(&t).expect("still valid TOML");
        let eg = &parsed["groups"]["g"]["egress"];
        assert_eq!(eg["mode"].as_str(), Some("block"), "{t}");
        assert_eq!(
            eg["domains"].as_array().map(Vec::len),
            Some(1),
            "only the real host name: {t}"
        );
        assert!(t.contains("not a host name"), "{t}");
    }

    fn rec(
        kind: &str,
        name: Option<&str>,
        dialled: Option<&str>,
        qtype: Option<&str>,
    ) -> ConnRecord {
        ConnRecord {
            time_ms: 0,
            job: "j".into(),
            kind: kind.into(),
            name: name.map(str::to_owned),
            qtype: qtype.map(str::to_owned),
            resolved: None,
            dialled: dialled.map(|d| d.parse().expect("addr")),
            answers: vec![],
            port: 443,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            verdict: "allow".into(),
            reason: "audit mode".into(),
            allowed_but_failed: false,
            flags: vec![],
            count: 1,
            last_ms: 0,
        }
    }

    #[test]
    fn collapses_siblings_keeps_singles_and_never_suggests_metadata() {
        let rs = vec![
            rec("dns", Some("a.pkg.example.com"), None, Some("A")),
            rec("https", Some("b.pkg.example.com"), None, None),
            rec("https", Some("c.pkg.example.com"), None, None),
            rec("https", Some("github.com"), None, None),
            rec("http", Some("deb.debian.org"), None, None),
            rec("dns", Some("metadata.google.internal"), None, Some("A")),
            rec("drop", None, Some("169.254.169.254:80"), Some("tcp")),
            rec("flow", None, Some("10.1.2.3:5432"), Some("tcp")),
            rec("flow", None, Some("10.1.2.53:53"), Some("udp")),
            rec("flow", None, Some("203.0.113.9:22"), Some("tcp")),
        ];
        let s = suggest(&rs, None);
        assert_eq!(
            s.domains,
            vec!["*.pkg.example.com", "deb.debian.org", "github.com"]
        );
        assert_eq!(s.allow, vec!["10.1.2.3/32:5432", "10.1.2.53/32:53/udp"]);
        for line in s
            .to_toml("g")
            .lines()
            .filter(|l| l.contains("169.254") || l.contains("metadata"))
        {
            assert!(
                line.starts_with('#'),
                "never-reachable target suggested: {line}"
            );
        }
        assert!(s.domains.iter().all(|d| !d.contains("metadata")));
        assert!(s.notes.iter().any(|n| n.contains("203.0.113.9:22")));
        // The output parses as a policy group.
        let toml = format!("version = 1\n{}", s.to_toml("g"));
        airlock_policy::parse(&toml, std::path::Path::new("s.toml")).expect("valid policy");
    }

    #[test]
    fn never_collapses_into_a_public_suffix_or_above_the_registrable_domain() {
        let names = [
            // Three Azure blobs: collapse to their own parent, not `*.windows.net`.
            "a.blob.core.windows.net",
            "b.blob.core.windows.net",
            "c.blob.core.windows.net",
            // Three GitHub Pages sites of different owners: `github.io` is a public suffix.
            "alice.github.io",
            "bob.github.io",
            "carol.github.io",
            // Three names directly under a registrable domain: `*.example.co.uk`.
            "x.example.co.uk",
            "y.example.co.uk",
            "z.example.co.uk",
        ];
        let rs: Vec<_> = names
            .iter()
            .map(|n| rec("https", Some(n), None, None))
            .collect();
        let s = suggest(&rs, None);
        assert!(
            !s.domains.iter().any(|d| d == "*.windows.net"
                || d == "*.core.windows.net"
                || d == "*.github.io"
                || d == "*.co.uk"),
            "{:?}",
            s.domains
        );
        for n in ["alice.github.io", "bob.github.io", "carol.github.io"] {
            assert!(s.domains.iter().any(|d| d == n), "{:?}", s.domains);
        }
        assert!(
            s.domains.iter().any(|d| d == "*.example.co.uk"),
            "{:?}",
            s.domains
        );
    }

    #[test]
    fn job_pool_addresses_are_never_suggested() {
        let pool = crate::Pool::new("10.213.0.0/16", "/nonexistent").expect("pool");
        let rs = vec![
            rec("drop", None, Some("10.213.0.6:22"), Some("tcp")),
            rec("drop", None, Some("10.213.4.1:3128"), Some("tcp")),
            rec("flow", None, Some("10.1.2.3:5432"), Some("tcp")),
        ];
        let s = suggest(&rs, Some(&pool));
        assert_eq!(s.allow, vec!["10.1.2.3/32:5432"]);
        assert!(
            s.notes.iter().any(|n| n.contains("10.213.0.6:22")),
            "{:?}",
            s.notes
        );
    }
}
