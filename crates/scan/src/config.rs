//! `airlock-scan.toml`: rule → path globs to ignore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::ScanError;

/// The file name looked for in the first scanned directory when `--config` is not given.
pub const CONFIG_FILE: &str = "airlock-scan.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// Rule id (or `"*"` for every rule) → globs of paths whose findings are ignored.
    #[serde(default)]
    ignore: BTreeMap<String, Vec<String>>,
}

/// Compiled ignores.
#[derive(Debug, Default)]
pub struct Config {
    ignores: Vec<(String, GlobSet)>,
    /// Directory of the config file: globs are relative to it.
    base: Option<PathBuf>,
}

impl Config {
    /// Reads and compiles a config file; `known` are the valid rule ids.
    pub fn load(path: &Path, known: &[&str]) -> Result<Config, ScanError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScanError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, known)
    }

    /// Parses config text; `path` is for messages.
    pub fn parse(text: &str, path: &Path, known: &[&str]) -> Result<Config, ScanError> {
        let bad = |message: String| ScanError::Config {
            path: PathBuf::from(path),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut ignores = Vec::new();
        for (rule, globs) in raw.ignore {
            if rule != "*" && !known.contains(&rule.as_str()) {
                return Err(bad(format!(
                    "unknown rule {rule:?} in [ignore]; rules: {}",
                    known.join(", ")
                )));
            }
            let mut b = GlobSetBuilder::new();
            for g in globs {
                let glob = Glob::new(&g).map_err(|e| bad(format!("invalid glob {g:?}: {e}")))?;
                b.add(glob);
            }
            let set = b.build().map_err(|e| bad(e.to_string()))?;
            ignores.push((rule, set));
        }
        Ok(Config {
            ignores,
            base: path.parent().map(Path::to_path_buf),
        })
    }

    /// Whether findings of `rule` in `file` are ignored. Globs are matched against the path
    /// relative to the config file's directory, the path as displayed (without a leading
    /// `./`) and the file name alone.
    pub fn ignores(&self, rule: &str, file: &str) -> bool {
        let p = file.strip_prefix("./").unwrap_or(file);
        let name = Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = self
            .base
            .as_deref()
            .and_then(|b| Path::new(file).strip_prefix(b).ok())
            .map(|r| r.to_string_lossy().into_owned());
        self.ignores.iter().any(|(r, set)| {
            (r == "*" || r == rule)
                && (set.is_match(p)
                    || set.is_match(&name)
                    || rel.as_deref().is_some_and(|r| set.is_match(r)))
        })
    }
}

/// Rules an inline comment on `line` suppresses: `# airlock: ignore[rule-a, rule-b]`.
pub fn inline_ignores(line: &str) -> Vec<&str> {
    let Some(i) = line.find("airlock: ignore[") else {
        return Vec::new();
    };
    // Only inside a comment.
    if !line[..i].contains('#') {
        return Vec::new();
    }
    let rest = &line[i + "airlock: ignore[".len()..];
    let Some(end) = rest.find(']') else {
        return Vec::new();
    };
    rest[..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_comment_forms() {
        assert_eq!(
            inline_ignores("  run: x # airlock: ignore[template-injection]"),
            vec!["template-injection"]
        );
        assert_eq!(inline_ignores("# airlock: ignore[a, b]"), vec!["a", "b"]);
        assert!(inline_ignores("run: echo 'airlock: ignore[a]'").is_empty());
        assert!(inline_ignores("# airlock: ignore[a").is_empty());
    }

    #[test]
    fn globs_and_unknown_rules() {
        let c = Config::parse(
            "[ignore]\nunpinned-action = [\"vendor/**\", \"release.yml\"]\n\"*\" = [\"legacy/*.yml\"]\n",
            Path::new("c.toml"),
            &["unpinned-action", "x"],
        )
        .expect("valid");
        assert!(c.ignores("unpinned-action", "./vendor/a/b.yml"));
        assert!(c.ignores("unpinned-action", "x/.github/workflows/release.yml"));
        assert!(!c.ignores("x", "x/.github/workflows/release.yml"));
        assert!(c.ignores("x", "legacy/a.yml"));
        let e = Config::parse("[ignore]\nnope = []\n", Path::new("c.toml"), &["x"]);
        assert!(matches!(e, Err(ScanError::Config { .. })));
        let e = Config::parse("[ignor]\n", Path::new("c.toml"), &["x"]);
        assert!(matches!(e, Err(ScanError::Config { .. })));
    }
}
