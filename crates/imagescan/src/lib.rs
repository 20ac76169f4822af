//! `airlock image scan`: what an image holds, matched against OSV vulnerability data, with
//! an SBOM (CycloneDX JSON) of it.
//!
//! - [`inventory`]: packages of the unpacked rootfs (dpkg, apk, rpm sqlite, npm lock files,
//!   Python dist-info), read safely from hostile images.
//! - [`version`]: version order per ecosystem.
//! - [`osv`]: OSV entries, ranges, severities.
//! - [`report`]: the scan result and its renderings (plain, JSON, SARIF, CycloneDX).

pub mod inventory;
pub mod osv;
pub mod report;
pub mod version;

use std::collections::HashSet;
use std::path::Path;

pub use inventory::{Ecosystem, Inventory, Package};
pub use osv::{Finding, Severity};
pub use report::ScanReport;

/// Scans the rootfs at `root` against the OSV data in `db_dir`.
pub fn scan(image: &str, digest: &str, root: &Path, db_dir: &Path) -> ScanReport {
    let inv = inventory::inventory(root);
    let names: HashSet<String> = inv
        .packages
        .iter()
        .flat_map(|p| {
            let normalized = (p.ecosystem == Ecosystem::PyPI).then(|| osv::pep503(&p.name));
            std::iter::once(p.name.clone())
                .chain(p.source.clone())
                .chain(normalized)
        })
        .collect();
    let db = osv::Db::load(db_dir, &names);
    let findings = db.matches(&inv.packages);
    let mut notes = inv.notes.clone();
    if db.read == 0 {
        notes.push(format!(
            "no OSV data in {}: run `airlock image db update` (every package is reported as not checked)",
            db_dir.display()
        ));
    }
    notes.extend(db.errors.iter().take(20).cloned());
    ScanReport {
        image: image.to_owned(),
        digest: digest.to_owned(),
        os: inv.os.clone(),
        packages: inv.packages,
        findings,
        osv_entries_read: db.read,
        notes,
    }
}

pub mod db;
