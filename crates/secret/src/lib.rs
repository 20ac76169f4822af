//! The one type airlock keeps a credential or a secret value in: a job's secrets, GitHub
//! tokens and App keys, webhook secrets, the alert webhook's key. `Debug` and `Display` print
//! `***`, so a `Secret` can sit in any struct that is logged or printed without leaking; the
//! value is read with [`Secret::expose`] only where it leaves the process (a job's
//! environment, an HTTP header, an HMAC). Its own crate because every floor of airlock holds
//! secrets and none of them should own the others' (the policy, the GitHub client and the
//! host scanner each had their own copy).
#![deny(missing_docs)]

use std::fmt;

/// A credential or secret value that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call only where it leaves the process.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first of the environment variables `names` that is set and not blank, trimmed.
    pub fn from_env(names: &[&str]) -> Option<Self> {
        names
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .find(|v| !v.trim().is_empty())
            .map(|v| Self(v.trim().to_owned()))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_however_it_is_held() {
        let s = Secret::new("ghs_supersecret");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
            list: Vec<(String, Secret)>,
        }
        let h = Holder {
            token: s.clone(),
            list: vec![("NPM_TOKEN".into(), s.clone())],
        };
        assert!(!format!("{h:?}").contains("supersecret"));
        assert!(!format!("{h:#?}").contains("supersecret"));
        assert_eq!(s.expose(), "ghs_supersecret");
        let back: Secret = serde_json::from_str("\"v4lue\"").expect("a string");
        assert_eq!(back.expose(), "v4lue");
    }
}
