//! What an image holds: OS packages (dpkg, apk, rpm) and language packages (npm lock files,
//! Python `*.dist-info`), read from its unpacked root filesystem.
//!
//! The rootfs is hostile input: every file is opened with `open_in_image` (symlinks resolved
//! inside the image, never leaving it), the walk for language manifests does not follow
//! symlinks and is bounded, and every file read is bounded in size.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use airlock_sandbox::image::open_in_image;

/// A package ecosystem, as OSV names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Ecosystem {
    /// Debian (dpkg); with the release (`12`).
    Debian(String),
    /// Ubuntu (dpkg); with the release (`22.04`).
    Ubuntu(String),
    /// Alpine (apk); with the release (`v3.19`).
    Alpine(String),
    /// An RPM distribution, by OSV's name (`Rocky Linux`, `AlmaLinux`, `Red Hat`, …); with
    /// its release (`9`).
    Rpm(String, String),
    /// npm.
    Npm,
    /// PyPI.
    PyPI,
}

impl Ecosystem {
    /// OSV's ecosystem string without the release (`Debian`, `npm`).
    pub fn base(&self) -> &str {
        match self {
            Ecosystem::Debian(_) => "Debian",
            Ecosystem::Ubuntu(_) => "Ubuntu",
            Ecosystem::Alpine(_) => "Alpine",
            Ecosystem::Rpm(name, _) => name,
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "PyPI",
        }
    }

    /// The release, for OS ecosystems.
    pub fn release(&self) -> Option<&str> {
        match self {
            Ecosystem::Debian(r) | Ecosystem::Ubuntu(r) | Ecosystem::Alpine(r) => Some(r),
            Ecosystem::Rpm(_, r) => Some(r),
            Ecosystem::Npm | Ecosystem::PyPI => None,
        }
    }

    /// The CycloneDX/purl type.
    pub fn purl_type(&self) -> &'static str {
        match self {
            Ecosystem::Debian(_) | Ecosystem::Ubuntu(_) => "deb",
            Ecosystem::Alpine(_) => "apk",
            Ecosystem::Rpm(..) => "rpm",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "pypi",
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    /// Its ecosystem.
    pub ecosystem: Ecosystem,
    /// Its name (the binary package's).
    pub name: String,
    /// The source package, when it differs (Debian and Alpine advisories name sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Its installed version.
    pub version: String,
    /// Where it was found in the image.
    pub location: String,
}

/// What an image holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Inventory {
    /// `ID` and `VERSION_ID` of `/etc/os-release` (or `/usr/lib/os-release`).
    pub os: Option<(String, String)>,
    /// Packages, OS ones first.
    pub packages: Vec<Package>,
    /// What could not be read, or was cut short.
    pub notes: Vec<String>,
}

/// Largest file read for an inventory (a dpkg status of a big image is a few MB).
const MAX_FILE: u64 = 64 << 20;
/// Directory entries the walk for language manifests visits at most.
const MAX_WALK: usize = 500_000;

fn read(root: &Path, rel: &str) -> Option<String> {
    let f = open_in_image(root, rel).ok()?;
    let mut s = String::new();
    f.take(MAX_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Reads the inventory of the rootfs at `root`.
pub fn inventory(root: &Path) -> Inventory {
    let mut inv = Inventory {
        os: os_release(root),
        ..Inventory::default()
    };
    let (id, ver) = inv.os.clone().unwrap_or_default();
    if let Some(t) = read(root, "var/lib/dpkg/status") {
        let eco = if id == "ubuntu" {
            Ecosystem::Ubuntu(ver.clone())
        } else {
            Ecosystem::Debian(ver.split('.').next().unwrap_or("").to_owned())
        };
        inv.packages.extend(dpkg(&t, &eco));
    }
    if let Some(t) = read(root, "lib/apk/db/installed") {
        let minor: Vec<&str> = ver.split('.').take(2).collect();
        let eco = Ecosystem::Alpine(format!("v{}", minor.join(".")));
        inv.packages.extend(apk(&t, &eco));
    }
    for db in [
        "var/lib/rpm/rpmdb.sqlite",
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
    ] {
        if let Ok(f) = open_in_image(root, db) {
            let eco = Ecosystem::Rpm(
                rpm_distro(&id).to_owned(),
                ver.split('.').next().unwrap_or("").to_owned(),
            );
            match rpm(&f, &eco, db) {
                Ok(p) => inv.packages.extend(p),
                Err(e) => inv.notes.push(format!("/{db}: {e}")),
            }
            break;
        }
    }
    walk_languages(root, &mut inv);
    inv
}

fn os_release(root: &Path) -> Option<(String, String)> {
    let t = read(root, "etc/os-release").or_else(|| read(root, "usr/lib/os-release"))?;
    let get = |k: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim().trim_matches('"').to_owned())
    };
    Some((get("ID")?, get("VERSION_ID").unwrap_or_default()))
}

/// OSV's name of an RPM distribution, from `os-release`'s `ID`.
fn rpm_distro(id: &str) -> &'static str {
    match id {
        "rocky" => "Rocky Linux",
        "almalinux" => "AlmaLinux",
        "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" => "openSUSE",
        "sles" => "SUSE",
        "mariner" | "azurelinux" => "Azure Linux",
        _ => "Red Hat",
    }
}

/// Installed packages of a dpkg `status` file.
pub fn dpkg(text: &str, eco: &Ecosystem) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .map(str::trim)
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            continue;
        };
        if !field("Status").is_some_and(|s| s.ends_with(" installed")) {
            continue;
        }
        // `Source: name (version)` when the source's version differs.
        let source = field("Source")
            .and_then(|s| s.split_whitespace().next())
            .filter(|s| *s != name)
            .map(str::to_owned);
        out.push(Package {
            ecosystem: eco.clone(),
            name: name.to_owned(),
            source,
            version: version.to_owned(),
            location: "/var/lib/dpkg/status".to_owned(),
        });
    }
    out
}

/// Installed packages of an apk `installed` database (`P:` name, `V:` version, `o:` origin).
pub fn apk(text: &str, eco: &Ecosystem) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .map(str::trim)
        };
        let (Some(name), Some(version)) = (field("P"), field("V")) else {
            continue;
        };
        out.push(Package {
            ecosystem: eco.clone(),
            name: name.to_owned(),
            source: field("o").filter(|o| *o != name).map(str::to_owned),
            version: version.to_owned(),
            location: "/lib/apk/db/installed".to_owned(),
        });
    }
    out
}

/// Packages of an rpm sqlite database: each row of `Packages` is an RPM header blob.
fn rpm(f: &std::fs::File, eco: &Ecosystem, rel: &str) -> Result<Vec<Package>, String> {
    use std::os::fd::AsRawFd as _;
    // The descriptor was opened safely inside the image; sqlite reads it through /proc.
    let uri = format!("file:/proc/self/fd/{}?immutable=1", f.as_raw_fd());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let db = rusqlite::Connection::open_with_flags(uri, flags).map_err(|e| e.to_string())?;
    let mut st = db
        .prepare("SELECT blob FROM Packages")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for blob in rows.flatten() {
        if let Some((name, version)) = rpm_header(&blob) {
            if name == "gpg-pubkey" {
                continue;
            }
            out.push(Package {
                ecosystem: eco.clone(),
                name,
                source: None,
                version,
                location: format!("/{rel}"),
            });
        }
    }
    Ok(out)
}

/// Name and `[epoch:]version-release` of an RPM header blob as rpmdb stores it: two
/// big-endian u32 (index entries, data size), 16-byte entries (tag, type, offset, count),
/// then the data. Hand-written: the rpm crates parse package files, not database headers,
/// and these three tags are all that is needed.
pub fn rpm_header(b: &[u8]) -> Option<(String, String)> {
    let u32_at =
        |i: usize| -> Option<u32> { Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    let n = usize::try_from(u32_at(0)?).ok()?;
    let dsize = usize::try_from(u32_at(4)?).ok()?;
    let data_start = 8usize.checked_add(n.checked_mul(16)?)?;
    let data = b.get(data_start..data_start.checked_add(dsize)?)?;
    let (mut name, mut version, mut release, mut epoch) = (None, None, None, None);
    for i in 0..n {
        let e = 8 + i * 16;
        let (tag, ty, off) = (
            u32_at(e)?,
            u32_at(e + 4)?,
            usize::try_from(u32_at(e + 8)?).ok()?,
        );
        let string = || -> Option<String> {
            let s = data.get(off..)?;
            let end = s.iter().position(|c| *c == 0)?;
            Some(String::from_utf8_lossy(&s[..end]).into_owned())
        };
        match (tag, ty) {
            (1000, 6) => name = string(),
            (1001, 6) => version = string(),
            (1002, 6) => release = string(),
            (1003, 4) => {
                epoch = data
                    .get(off..off + 4)
                    .and_then(|x| x.try_into().ok())
                    .map(u32::from_be_bytes)
            }
            _ => {}
        }
    }
    let v = format!("{}-{}", version?, release?);
    let v = match epoch {
        Some(e) if e > 0 => format!("{e}:{v}"),
        _ => v,
    };
    Some((name?, v))
}

/// Walks the image (no symlinks followed, bounded) for npm lock files and Python
/// `*.dist-info/METADATA`.
fn walk_languages(root: &Path, inv: &mut Inventory) {
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    let mut seen = 0usize;
    while let Some((rel, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                inv.notes.push(format!(
                    "stopped looking for language packages after {MAX_WALK} entries"
                ));
                return;
            }
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            let child = rel.join(&name);
            if ft.is_dir() {
                if depth < 24 && !matches!(name.as_str(), "proc" | "sys" | "dev") {
                    if name.ends_with(".dist-info") {
                        python_dist(root, &child, inv);
                    } else {
                        stack.push((child, depth + 1));
                    }
                }
            } else if ft.is_file() && name == "package-lock.json" {
                npm_lock(root, &child, inv);
            }
        }
    }
}

fn python_dist(root: &Path, dir: &Path, inv: &mut Inventory) {
    let meta = dir.join("METADATA");
    let Some(t) = read(root, &meta.to_string_lossy()) else {
        return;
    };
    let field = |k: &str| {
        t.lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .map(str::trim)
    };
    if let (Some(name), Some(version)) = (field("Name"), field("Version")) {
        inv.packages.push(Package {
            ecosystem: Ecosystem::PyPI,
            name: name.to_owned(),
            source: None,
            version: version.to_owned(),
            location: format!("/{}", dir.display()),
        });
    }
}

fn npm_lock(root: &Path, file: &Path, inv: &mut Inventory) {
    let Some(t) = read(root, &file.to_string_lossy()) else {
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else {
        inv.notes.push(format!("/{}: not JSON", file.display()));
        return;
    };
    // lockfileVersion 2 and 3: "packages" keyed by path ("" is the project itself).
    let Some(pkgs) = v["packages"].as_object() else {
        return;
    };
    for (path, p) in pkgs {
        let Some(name) = path
            .rsplit("node_modules/")
            .next()
            .filter(|_| !path.is_empty())
        else {
            continue;
        };
        if let Some(version) = p["version"].as_str() {
            inv.packages.push(Package {
                ecosystem: Ecosystem::Npm,
                name: name.to_owned(),
                source: None,
                version: version.to_owned(),
                location: format!("/{}", file.display()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_lists_installed_packages_with_their_sources() {
        let t = "Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: 3.0.11-1~deb12u1\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n";
        let p = dpkg(t, &Ecosystem::Debian("12".into()));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].source.as_deref(), Some("openssl"));
        assert_eq!(p[1].name, "bash");
    }

    #[test]
    fn apk_database_lists_packages_and_origins() {
        let t =
            "C:Q1abc=\nP:libcrypto3\nV:3.1.4-r0\no:openssl\n\nP:busybox\nV:1.36.1-r15\no:busybox\n";
        let p = apk(t, &Ecosystem::Alpine("v3.19".into()));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].source.as_deref(), Some("openssl"));
        assert_eq!(p[1].source, None);
    }

    #[test]
    fn rpm_headers_are_read_and_bounded() {
        let h = super::tests_support::rpm_header_blob("openssl-libs", Some(1), "3.0.7", "24.el9");
        assert_eq!(
            rpm_header(&h),
            Some(("openssl-libs".into(), "1:3.0.7-24.el9".into()))
        );
        // Truncated or lying headers are refused, never read past.
        assert_eq!(rpm_header(&h[..20]), None);
        let mut lying = h.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(rpm_header(&lying), None);
    }
}

/// Builds RPM header blobs for tests (here and in the crate's integration tests).
#[doc(hidden)]
pub mod tests_support {
    /// A header with NAME, VERSION, RELEASE and (optionally) EPOCH.
    pub fn rpm_header_blob(
        name: &str,
        epoch: Option<u32>,
        version: &str,
        release: &str,
    ) -> Vec<u8> {
        let mut data = Vec::new();
        let mut entries: Vec<(u32, u32, u32)> = Vec::new();
        for (tag, s) in [(1000, name), (1001, version), (1002, release)] {
            entries.push((tag, 6, data.len() as u32));
            data.extend_from_slice(s.as_bytes());
            data.push(0);
        }
        if let Some(e) = epoch {
            while data.len() % 4 != 0 {
                data.push(0);
            }
            entries.push((1003, 4, data.len() as u32));
            data.extend_from_slice(&e.to_be_bytes());
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        for (tag, ty, off) in entries {
            for x in [tag, ty, off, 1] {
                out.extend_from_slice(&x.to_be_bytes());
            }
        }
        out.extend_from_slice(&data);
        out
    }
}
