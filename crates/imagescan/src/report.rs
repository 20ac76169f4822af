//! The result of an image scan and how it is shown: plain text (escaped: package names and
//! summaries come from the image and the database), JSON, SARIF 2.1.0, CycloneDX 1.5 JSON.

use std::io::Write;

use airlock_text::Escaped;
use serde_json::json;

use crate::inventory::Package;
use crate::osv::{Finding, Severity};

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScanReport {
    /// The image's name.
    pub image: String,
    /// Its manifest digest.
    pub digest: String,
    /// `ID` and `VERSION_ID` of its os-release.
    pub os: Option<(String, String)>,
    /// Every package found.
    pub packages: Vec<Package>,
    /// Vulnerable packages, most severe first.
    pub findings: Vec<Finding>,
    /// OSV entries read.
    pub osv_entries_read: usize,
    /// What could not be read or checked.
    pub notes: Vec<String>,
}

/// An accepted finding: the vulnerability id (or alias) and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Ignore {
    /// `CVE-…`, `GHSA-…`: matches an entry's id or one of its aliases.
    pub id: String,
    /// Why it does not matter here (required: an ignore without a reason is refused).
    pub reason: String,
}

impl ScanReport {
    /// Drops the findings `ignore` names; returns how many.
    pub fn apply_ignores(&mut self, ignore: &[Ignore]) -> usize {
        let before = self.findings.len();
        self.findings.retain(|f| {
            !ignore
                .iter()
                .any(|i| i.id == f.id || f.aliases.contains(&i.id))
        });
        before - self.findings.len()
    }

    /// The most severe finding.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max_by_key(|s| s.rank())
    }

    /// 0 without findings, else 10 + the highest rank (11 low … 14 critical), like
    /// `airlock scan workflows`.
    pub fn exit_code(&self) -> u8 {
        self.max_severity().map_or(0, |s| 10 + s.rank())
    }

    /// Findings at or above `threshold`.
    pub fn at_or_above(&self, threshold: Severity) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity.rank() >= threshold.rank())
            .collect()
    }

    /// Plain text.
    pub fn render_plain(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let os = self
            .os
            .as_ref()
            .map(|(i, v)| format!("{i} {v}"))
            .unwrap_or_else(|| "unknown OS".into());
        writeln!(
            out,
            "{} {} ({}): {} packages, {} vulnerable",
            Escaped(&self.image),
            self.digest,
            Escaped(&os),
            self.packages.len(),
            self.findings.len()
        )?;
        for f in &self.findings {
            writeln!(
                out,
                "  {:<8} {:<20} {} {} (fixed in {}) {}",
                f.severity.as_str(),
                Escaped(&f.id),
                Escaped(&f.package),
                Escaped(&f.version),
                Escaped(f.fixed.as_deref().unwrap_or("no fix yet")),
                Escaped(&f.summary)
            )?;
        }
        for n in &self.notes {
            writeln!(out, "note: {}", Escaped(n))?;
        }
        Ok(())
    }

    /// JSON.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "version": 1,
            "image": self.image,
            "digest": self.digest,
            "os": self.os.as_ref().map(|(i, v)| json!({"id": i, "version_id": v})),
            "packages": self.packages.len(),
            "osv_entries_read": self.osv_entries_read,
            "findings": self.findings,
            "summary": {
                "max_severity": self.max_severity().map(Severity::as_str),
                "exit_code": self.exit_code(),
            },
            "notes": self.notes,
        })
    }

    /// SARIF 2.1.0: one result per finding, located at the package database in the image.
    pub fn sarif(&self) -> serde_json::Value {
        let level = |s: Severity| match s {
            Severity::Critical | Severity::High => "error",
            Severity::Medium | Severity::Unknown => "warning",
            Severity::Low => "note",
        };
        let results: Vec<_> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "ruleId": f.id,
                    "level": level(f.severity),
                    "message": { "text": format!("{} {} is affected by {} (fixed in {}): {}",
                        f.package, f.version, f.id, f.fixed.as_deref().unwrap_or("no fix yet"), f.summary) },
                    "locations": [{ "physicalLocation": {
                        "artifactLocation": { "uri": f.location.trim_start_matches('/') },
                    }}],
                    "properties": { "severity": f.severity.as_str(), "image": self.image, "digest": self.digest },
                })
            })
            .collect();
        json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": { "driver": { "name": "airlock image scan", "semanticVersion": env!("CARGO_PKG_VERSION") } },
                "results": results,
            }],
        })
    }

    /// CycloneDX 1.5 JSON: every package as a component with its purl, and the findings
    /// as vulnerabilities.
    pub fn cyclonedx(&self) -> serde_json::Value {
        let purl = |p: &Package| {
            let ns = match &p.ecosystem {
                crate::Ecosystem::Debian(_) => "debian/",
                crate::Ecosystem::Ubuntu(_) => "ubuntu/",
                crate::Ecosystem::Alpine(_) => "alpine/",
                _ => "",
            };
            format!(
                "pkg:{}/{ns}{}@{}",
                p.ecosystem.purl_type(),
                p.name,
                p.version
            )
        };
        let components: Vec<_> = self
            .packages
            .iter()
            .map(|p| {
                json!({
                    "type": "library",
                    "bom-ref": purl(p),
                    "name": p.name,
                    "version": p.version,
                    "purl": purl(p),
                    "properties": [{ "name": "airlock:location", "value": p.location }],
                })
            })
            .collect();
        let vulns: Vec<_> = self
            .findings
            .iter()
            .map(|f| {
                let affects: Vec<_> = self
                    .packages
                    .iter()
                    .filter(|p| p.name == f.package && p.version == f.version)
                    .map(|p| json!({ "ref": purl(p) }))
                    .collect();
                json!({
                    "id": f.id,
                    "source": { "name": "OSV", "url": format!("https://osv.dev/vulnerability/{}", f.id) },
                    "ratings": [{ "severity": f.severity.as_str() }],
                    "description": f.summary,
                    "affects": affects,
                })
            })
            .collect();
        json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "version": 1,
            "metadata": {
                "tools": [{ "name": "airlock", "version": env!("CARGO_PKG_VERSION") }],
                "component": { "type": "container", "name": self.image, "version": self.digest },
            },
            "components": components,
            "vulnerabilities": vulns,
        })
    }
}
