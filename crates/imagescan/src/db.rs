//! `airlock image db update`: OSV's per-ecosystem archives (`<source>/<ecosystem>/all.zip`,
//! by default from OSV's public bucket) into `DATA/osv/<ecosystem>/all.zip`, each replaced
//! whole (written beside, then renamed) so a scan never reads half an archive.

use std::path::{Path, PathBuf};

/// Where OSV publishes its data.
pub const DEFAULT_SOURCE: &str = "https://osv-vulnerabilities.storage.googleapis.com";

/// Ecosystems fetched when none are named: those the inventory reads.
pub const DEFAULT_ECOSYSTEMS: &[&str] = &[
    "Debian",
    "Ubuntu",
    "Alpine",
    "Rocky Linux",
    "AlmaLinux",
    "Red Hat",
    "npm",
    "PyPI",
];

/// Largest archive accepted (OSV's biggest, npm and PyPI, are far below).
const MAX_ARCHIVE: u64 = 2 << 30;

/// Why an update failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The source URL is not acceptable.
    #[error("source {0:?}: use https:// (plain http only to a loopback address)")]
    Source(String),
    /// A download failed.
    #[error("{url}: {message}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// Writing the data failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One ecosystem fetched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fetched {
    /// The ecosystem.
    pub ecosystem: String,
    /// Bytes of its archive.
    pub bytes: u64,
    /// Entries in it.
    pub entries: usize,
}

fn source_ok(source: &str) -> bool {
    if source.starts_with("https://") {
        return true;
    }
    let Some(rest) = source.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "127.0.0.1" || host == "localhost"
}

/// Fetches `ecosystems` from `source` into `dir`.
pub fn update(dir: &Path, source: &str, ecosystems: &[String]) -> Result<Vec<Fetched>, DbError> {
    if !source_ok(source) {
        return Err(DbError::Source(source.to_owned()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| DbError::Io {
            path: dir.to_owned(),
            source,
        })?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| DbError::Fetch {
                url: source.to_owned(),
                message: e.to_string(),
            })?;
        let mut out = Vec::new();
        for eco in ecosystems {
            out.push(fetch_one(&client, dir, source, eco).await?);
        }
        Ok(out)
    })
}

async fn fetch_one(
    client: &reqwest::Client,
    dir: &Path,
    source: &str,
    eco: &str,
) -> Result<Fetched, DbError> {
    let url = format!(
        "{}/{}/all.zip",
        source.trim_end_matches('/'),
        eco.replace(' ', "%20")
    );
    let fail = |message: String| DbError::Fetch {
        url: url.clone(),
        message,
    };
    let mut resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let target_dir = dir.join(eco);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DbError::Io { path, source }
    };
    std::fs::create_dir_all(&target_dir).map_err(io(&target_dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&target_dir).map_err(io(&target_dir))?;
    let mut bytes = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
        bytes += chunk.len() as u64;
        if bytes > MAX_ARCHIVE {
            return Err(fail(format!("larger than {MAX_ARCHIVE} bytes")));
        }
        std::io::Write::write_all(&mut tmp, &chunk).map_err(io(tmp.path()))?;
    }
    // Only a readable archive replaces the previous one.
    let entries = zip::ZipArchive::new(tmp.reopen().map_err(io(tmp.path()))?)
        .map_err(|e| fail(format!("not a zip archive: {e}")))?
        .len();
    let dst = target_dir.join("all.zip");
    tmp.persist(&dst).map_err(|e| DbError::Io {
        path: dst.clone(),
        source: e.error,
    })?;
    Ok(Fetched {
        ecosystem: eco.to_owned(),
        bytes,
        entries,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sources_are_https_or_loopback() {
        assert!(super::source_ok(
            "https://osv-vulnerabilities.storage.googleapis.com"
        ));
        assert!(super::source_ok("http://127.0.0.1:8999"));
        assert!(!super::source_ok("http://mirror.example"));
        assert!(!super::source_ok("ftp://x"));
    }
}
