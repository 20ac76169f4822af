//! Secret values: read from a secrets file (TOML `NAME = "value"`) or airlock's environment,
//! held in a type that never prints its value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use airlock_secret::Secret;

/// Shorter values are refused: the audit log replaces secret values by their names
/// (docs/audit.md), and a value this short cannot be told apart from ordinary text.
pub const MIN_SECRET_LEN: usize = 4;

/// Errors while resolving secrets. They name secrets, never values.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The secrets file could not be read.
    #[error("cannot read secrets file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secrets file is not a flat TOML table of strings.
    #[error("secrets file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (never contains a value).
        message: String,
    },
    /// A secret's value is too short to be kept out of the audit log.
    #[error("secret {name:?} is shorter than {MIN_SECRET_LEN} bytes: airlock could not keep it out of the audit log (values are redacted by matching them)")]
    TooShort {
        /// The secret's name.
        name: String,
    },
    /// A secret the group needs has no value anywhere.
    #[error("secret {name:?} is required by the group but is neither in the secrets file nor in airlock's environment")]
    Missing {
        /// The secret's name.
        name: String,
    },
}

/// Resolves each name from the secrets file first, then from `env`. Every listed secret must
/// resolve: a job never starts without a secret its group declares.
pub fn resolve_secrets(
    names: &[String],
    secrets_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Secret)>, SecretsError> {
    let from_file: BTreeMap<String, String> = match secrets_file {
        None => BTreeMap::new(),
        Some(path) => {
            let src = std::fs::read_to_string(path).map_err(|source| SecretsError::Read {
                path: path.to_owned(),
                source,
            })?;
            // The parser's message may quote the offending text, which could be a value:
            // report only the position.
            toml::from_str(&src).map_err(|e: toml::de::Error| SecretsError::Parse {
                path: path.to_owned(),
                message: format!(
                    "expected NAME = \"value\" lines (error at byte {})",
                    e.span().map(|s| s.start).unwrap_or(0)
                ),
            })?
        }
    };
    names
        .iter()
        .map(|n| {
            from_file
                .get(n)
                .cloned()
                .or_else(|| env(n))
                .ok_or_else(|| SecretsError::Missing { name: n.clone() })
                .and_then(|v| {
                    if v.len() < MIN_SECRET_LEN {
                        Err(SecretsError::TooShort { name: n.clone() })
                    } else {
                        Ok((n.clone(), Secret::new(v)))
                    }
                })
        })
        .collect()
}
