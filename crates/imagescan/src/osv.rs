//! OSV data (https://osv.dev, the open vulnerability format): loading the entries that
//! concern an inventory, and deciding whether a package version is affected.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::Read as _;
use std::path::Path;

use serde::Deserialize;

use crate::inventory::{Ecosystem, Package};
use crate::version::compare;

/// How bad a vulnerability is. `Unknown` when the entry says nothing usable (many
/// distribution advisories): it counts as `Medium` for thresholds and exit codes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Low.
    Low,
    /// Not stated.
    Unknown,
    /// Medium / moderate.
    Medium,
    /// High / important.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// From the words advisories use.
    pub fn from_word(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "low" | "negligible" => Severity::Low,
            "medium" | "moderate" => Severity::Medium,
            "high" | "important" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Unknown => "unknown",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
    /// For thresholds: unknown counts as medium.
    pub fn rank(self) -> u8 {
        match self {
            Severity::Low => 1,
            Severity::Unknown | Severity::Medium => 2,
            Severity::High => 3,
            Severity::Critical => 4,
        }
    }
}

/// One OSV entry (the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    /// `CVE-…`, `GHSA-…`, `DSA-…`.
    pub id: String,
    /// Other ids of the same vulnerability.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// One line.
    #[serde(default)]
    pub summary: Option<String>,
    /// Severity scores.
    #[serde(default)]
    pub severity: Vec<Score>,
    /// What is affected.
    #[serde(default)]
    pub affected: Vec<Affected>,
    /// Source-specific data (GitHub advisories put `severity` here).
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

/// A severity score.
#[derive(Debug, Clone, Deserialize)]
pub struct Score {
    /// `CVSS_V3`, `Ubuntu`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The vector or the word.
    pub score: String,
}

/// An affected package.
#[derive(Debug, Clone, Deserialize)]
pub struct Affected {
    /// Which.
    pub package: OsvPackage,
    /// Version ranges.
    #[serde(default)]
    pub ranges: Vec<Range>,
    /// Versions listed one by one.
    #[serde(default)]
    pub versions: Vec<String>,
    /// Source-specific data (Debian/Ubuntu put `urgency`/`severity` here).
    #[serde(default)]
    pub ecosystem_specific: Option<serde_json::Value>,
}

/// A package as OSV names it.
#[derive(Debug, Clone, Deserialize)]
pub struct OsvPackage {
    /// `Debian:12`, `Alpine:v3.19`, `npm`, …
    pub ecosystem: String,
    /// Its name.
    pub name: String,
}

/// A version range.
#[derive(Debug, Clone, Deserialize)]
pub struct Range {
    /// `ECOSYSTEM`, `SEMVER` (`GIT` ranges are skipped).
    #[serde(rename = "type")]
    pub kind: String,
    /// `introduced`, `fixed`, `last_affected`, in order.
    #[serde(default)]
    pub events: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// A package of the inventory that an entry affects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Finding {
    /// The entry's id.
    pub id: String,
    /// Its aliases.
    pub aliases: Vec<String>,
    /// Its severity.
    pub severity: Severity,
    /// One line.
    pub summary: String,
    /// The package (its ecosystem, name, installed version).
    pub package: String,
    /// The ecosystem.
    pub ecosystem: String,
    /// The installed version.
    pub version: String,
    /// The first version that fixes it, when known.
    pub fixed: Option<String>,
    /// Where the package was found.
    pub location: String,
}

/// The entries that name a package of the inventory.
#[derive(Debug, Default)]
pub struct Db {
    /// Entries kept.
    pub entries: Vec<Entry>,
    /// Entries read.
    pub read: usize,
    /// Files that could not be read, with why.
    pub errors: Vec<String>,
}

/// Largest single OSV entry read (a few KiB normally).
const MAX_ENTRY: u64 = 4 << 20;

impl Db {
    /// Loads every `*.json` entry and every entry in `*.zip` archives (OSV's `all.zip`)
    /// below `dir`, keeping those that name one of `names`.
    pub fn load(dir: &Path, names: &HashSet<String>) -> Db {
        let mut db = Db::default();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    match std::fs::File::open(&p) {
                        Ok(f) => db.add(f.take(MAX_ENTRY), names, &p.display().to_string()),
                        Err(e) => db.errors.push(format!("{}: {e}", p.display())),
                    }
                } else if p.extension().is_some_and(|x| x == "zip") {
                    db.add_zip(&p, names);
                }
            }
        }
        db
    }

    fn add_zip(&mut self, p: &Path, names: &HashSet<String>) {
        let f = match std::fs::File::open(p) {
            Ok(f) => f,
            Err(e) => return self.errors.push(format!("{}: {e}", p.display())),
        };
        let mut z = match zip::ZipArchive::new(f) {
            Ok(z) => z,
            Err(e) => return self.errors.push(format!("{}: {e}", p.display())),
        };
        for i in 0..z.len() {
            let Ok(entry) = z.by_index(i) else { continue };
            if !entry.name().ends_with(".json") {
                continue;
            }
            let what = format!("{}:{}", p.display(), entry.name());
            self.add(entry.take(MAX_ENTRY), names, &what);
        }
    }

    fn add(&mut self, r: impl std::io::Read, names: &HashSet<String>, what: &str) {
        self.read += 1;
        match serde_json::from_reader::<_, Entry>(r) {
            Ok(e) => {
                let named = |n: &str| names.contains(n) || names.contains(&pep503(n));
                if e.affected.iter().any(|a| named(&a.package.name)) {
                    self.entries.push(e);
                }
            }
            Err(err) => self.errors.push(format!("{what}: {err}")),
        }
    }

    /// Every (entry, package) where the entry affects the installed version.
    pub fn matches(&self, packages: &[Package]) -> Vec<Finding> {
        let mut out = Vec::new();
        for e in &self.entries {
            for a in &e.affected {
                for p in packages {
                    if let Some(fixed) = affects(a, p) {
                        out.push(Finding {
                            id: e.id.clone(),
                            aliases: e.aliases.clone(),
                            severity: severity(e, a),
                            summary: e.summary.clone().unwrap_or_default(),
                            package: p.name.clone(),
                            ecosystem: a.package.ecosystem.clone(),
                            version: p.version.clone(),
                            fixed,
                            location: p.location.clone(),
                        });
                    }
                }
            }
        }
        out.sort_by(|x, y| {
            y.severity
                .rank()
                .cmp(&x.severity.rank())
                .then_with(|| x.package.cmp(&y.package))
                .then_with(|| x.id.cmp(&y.id))
        });
        out.dedup_by(|x, y| x.id == y.id && x.package == y.package && x.version == y.version);
        out
    }
}

/// Whether OSV's `ecosystem` (`Debian:12`, `Ubuntu:22.04:LTS`, `Alpine:v3.19`, `npm`)
/// covers the package's.
fn same_ecosystem(osv: &str, eco: &Ecosystem) -> bool {
    let (base, release) = match osv.split_once(':') {
        Some((b, r)) => (b, Some(r)),
        None => (osv, None),
    };
    if base != eco.base() {
        return false;
    }
    match (release, eco.release()) {
        (None, _) => true,
        (Some(r), Some(mine)) => r == mine || r.starts_with(&format!("{mine}:")),
        (Some(_), None) => false,
    }
}

/// `Some(fixed version)` when `a` affects `p` (the inner `None`: no fix known).
fn affects(a: &Affected, p: &Package) -> Option<Option<String>> {
    if !same_ecosystem(&a.package.ecosystem, &p.ecosystem) {
        return None;
    }
    let named = if p.ecosystem == Ecosystem::PyPI {
        pep503(&a.package.name) == pep503(&p.name)
    } else {
        a.package.name == p.name || p.source.as_deref() == Some(&a.package.name)
    };
    if !named {
        return None;
    }
    if a.versions.iter().any(|v| v == &p.version) {
        return Some(first_fix(a));
    }
    for r in a
        .ranges
        .iter()
        .filter(|r| r.kind == "ECOSYSTEM" || r.kind == "SEMVER")
    {
        if in_range(r, &p.ecosystem, &p.version) {
            return Some(first_fix(a));
        }
    }
    None
}

/// A Python package name as PEP 503 compares them: lower case, runs of `-_.` as one `-`.
pub fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn event<'a>(e: &'a serde_json::Map<String, serde_json::Value>, k: &str) -> Option<&'a str> {
    e.get(k).and_then(|v| v.as_str())
}

/// OSV's range evaluation: events in order; `introduced` opens, `fixed` closes before it,
/// `last_affected` closes after it; `introduced: "0"` is the beginning.
fn in_range(r: &Range, eco: &Ecosystem, v: &str) -> bool {
    let mut affected = false;
    for e in &r.events {
        if let Some(i) = event(e, "introduced") {
            if i == "0" || compare(eco, v, i).is_some_and(|o| o != Ordering::Less) {
                affected = true;
            }
        } else if let Some(f) = event(e, "fixed") {
            if compare(eco, v, f).is_some_and(|o| o != Ordering::Less) {
                affected = false;
            }
        } else if let Some(l) = event(e, "last_affected") {
            if compare(eco, v, l) == Some(Ordering::Greater) {
                affected = false;
            }
        }
    }
    affected
}

fn first_fix(a: &Affected) -> Option<String> {
    a.ranges
        .iter()
        .flat_map(|r| r.events.iter())
        .find_map(|e| event(e, "fixed"))
        .map(str::to_owned)
}

/// The entry's severity: the advisory's own word (GitHub's `database_specific.severity`,
/// Debian's and Ubuntu's per-package severity/urgency, an `Ubuntu` score), else the worst
/// of its CVSS vectors scored (`cvss`: v2, v3.x, v4), else unknown.
fn severity(e: &Entry, a: &Affected) -> Severity {
    word_severity(e, a).unwrap_or_else(|| cvss_severity(e).unwrap_or(Severity::Unknown))
}

/// The worst severity of the entry's CVSS vectors (a score of 0, "none", is low here: it is
/// still an advisory about the package).
fn cvss_severity(e: &Entry) -> Option<Severity> {
    e.severity
        .iter()
        .filter(|s| s.kind.starts_with("CVSS_"))
        .filter_map(|s| s.score.parse::<cvss::Cvss>().ok())
        .map(|c| match c.severity() {
            cvss::Severity::Critical => Severity::Critical,
            cvss::Severity::High => Severity::High,
            cvss::Severity::Medium => Severity::Medium,
            _ => Severity::Low,
        })
        .max_by_key(|s| s.rank())
}

fn word_severity(e: &Entry, a: &Affected) -> Option<Severity> {
    let words = [
        e.database_specific
            .as_ref()
            .and_then(|d| d["severity"].as_str()),
        a.ecosystem_specific
            .as_ref()
            .and_then(|d| d["severity"].as_str()),
        a.ecosystem_specific
            .as_ref()
            .and_then(|d| d["urgency"].as_str()),
    ];
    words
        .into_iter()
        .flatten()
        .chain(
            e.severity
                .iter()
                .filter(|s| s.kind == "Ubuntu")
                .map(|s| s.score.as_str()),
        )
        .find_map(Severity::from_word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(eco: Ecosystem, name: &str, source: Option<&str>, v: &str) -> Package {
        Package {
            ecosystem: eco,
            name: name.into(),
            source: source.map(Into::into),
            version: v.into(),
            location: "/x".into(),
        }
    }

    fn entry(json: &str) -> Entry {
        serde_json::from_str(json).expect("entry")
    }

    #[test]
    fn ranges_versions_ecosystems_and_sources_decide() {
        let e = entry(
            r#"{"id":"DSA-1","affected":[{"package":{"ecosystem":"Debian:12","name":"openssl"},
               "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.0.11-1~deb12u2"}]}],
               "ecosystem_specific":{"urgency":"high"}}]}"#,
        );
        let db = Db {
            entries: vec![e],
            ..Db::default()
        };
        let d12 = Ecosystem::Debian("12".into());
        // The binary package of the affected source, older than the fix: affected.
        let f = db.matches(&[pkg(
            d12.clone(),
            "libssl3",
            Some("openssl"),
            "3.0.11-1~deb12u1",
        )]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].fixed.as_deref(), Some("3.0.11-1~deb12u2"));
        // Fixed, another release, another package: not affected.
        assert!(db
            .matches(&[pkg(d12, "libssl3", Some("openssl"), "3.0.11-1~deb12u2")])
            .is_empty());
        assert!(db
            .matches(&[pkg(
                Ecosystem::Debian("11".into()),
                "openssl",
                None,
                "1.1.1n-0"
            )])
            .is_empty());
        // last_affected and explicit versions.
        let e = entry(
            r#"{"id":"GHSA-1","database_specific":{"severity":"CRITICAL"},"affected":[{"package":{"ecosystem":"npm","name":"lodash"},
               "ranges":[{"type":"SEMVER","events":[{"introduced":"4.0.0"},{"last_affected":"4.17.20"}]}]},
               {"package":{"ecosystem":"PyPI","name":"jinja2"},"versions":["2.10"]}]}"#,
        );
        let db = Db {
            entries: vec![e],
            ..Db::default()
        };
        let f = db.matches(&[
            pkg(Ecosystem::Npm, "lodash", None, "4.17.20"),
            pkg(Ecosystem::Npm, "lodash", None, "4.17.21"),
            pkg(Ecosystem::Npm, "lodash", None, "3.10.0"),
            pkg(Ecosystem::PyPI, "jinja2", None, "2.10"),
        ]);
        let got: Vec<(&str, &str)> = f
            .iter()
            .map(|x| (x.package.as_str(), x.version.as_str()))
            .collect();
        assert_eq!(got, [("jinja2", "2.10"), ("lodash", "4.17.20")]);
        assert!(f.iter().all(|x| x.severity == Severity::Critical));
    }

    #[test]
    fn a_cvss_vector_gives_the_severity_when_no_word_does() {
        let e = entry(
            r#"{"id":"X","severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
               "affected":[{"package":{"ecosystem":"npm","name":"x"},"versions":["1.0.0"]}]}"#,
        );
        assert_eq!(severity(&e, &e.affected[0]), Severity::Critical);
        let e = entry(
            r#"{"id":"Y","severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"}],
               "database_specific":{"severity":"HIGH"},
               "affected":[{"package":{"ecosystem":"npm","name":"x"},"versions":["1.0.0"]}]}"#,
        );
        // The advisory's own word wins over the vector.
        assert_eq!(severity(&e, &e.affected[0]), Severity::High);
        let e =
            entry(r#"{"id":"Z","severity":[{"type":"CVSS_V3","score":"garbage"}],"affected":[]}"#);
        assert_eq!(cvss_severity(&e), None);
    }

    #[test]
    fn ubuntu_and_alpine_releases_match_as_osv_writes_them() {
        assert!(same_ecosystem(
            "Ubuntu:22.04:LTS",
            &Ecosystem::Ubuntu("22.04".into())
        ));
        assert!(!same_ecosystem(
            "Ubuntu:20.04:LTS",
            &Ecosystem::Ubuntu("22.04".into())
        ));
        assert!(same_ecosystem(
            "Alpine:v3.19",
            &Ecosystem::Alpine("v3.19".into())
        ));
        assert!(same_ecosystem("Debian", &Ecosystem::Debian("12".into())));
        assert!(!same_ecosystem("npm", &Ecosystem::PyPI));
    }
}
