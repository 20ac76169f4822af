//! Secret values never reach the audit log. A job may put a secret in a command line
//! (`curl -H "Authorization: $TOKEN"`), a DNS name or a file name; the exec listener and the
//! gateway record those verbatim. Before a record is hashed and written, every occurrence of a
//! known secret value in any string of it is replaced by `[secret:NAME]`: the log still shows
//! *that* (and which) secret was used or sent somewhere, never the value.

/// Values shorter than this are not redacted (replacing every `42` in a log would destroy it);
/// the policy crate refuses such secrets before a job starts.
pub use airlock_policy::MIN_SECRET_LEN;

/// Replaces known secret values in events. Clones share their list: a secret learnt late
/// ([`Redactor::add`], a primed sandbox's credentials) reaches every copy, the audit writer's
/// included.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (name, value), longest value first so a value containing another is replaced whole.
    secrets: std::sync::Arc<std::sync::RwLock<Vec<(String, String)>>>,
}

impl Redactor {
    /// A redactor for these (name, value) pairs; values under [`MIN_SECRET_LEN`] are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut secrets: Vec<(String, String)> = secrets
            .into_iter()
            .filter(|(_, v)| v.len() >= MIN_SECRET_LEN)
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.1.len()));
        Self {
            secrets: std::sync::Arc::new(std::sync::RwLock::new(secrets)),
        }
    }

    /// Adds a secret learnt after the job's record was opened (values under
    /// [`MIN_SECRET_LEN`] are ignored, as in [`Redactor::new`]).
    pub fn add(&self, name: &str, value: &str) {
        if value.len() < MIN_SECRET_LEN {
            return;
        }
        let mut s = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        s.push((name.to_owned(), value.to_owned()));
        s.sort_by_key(|s| std::cmp::Reverse(s.1.len()));
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The string with every secret value replaced, or `None` if it holds none. Matching
    /// ignores ASCII case: DNS names are case-insensitive, and the gateway records them in
    /// lower case, so a secret sent out as a name would otherwise be kept.
    pub fn redact_str(&self, s: &str) -> Option<String> {
        let mut out: Option<String> = None;
        let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        for (name, value) in secrets.iter() {
            let cur = out.as_deref().unwrap_or(s);
            // ASCII lower-casing keeps byte offsets, so matches in the lowered copy are
            // matches in `cur`.
            let (hay, needle) = (cur.to_ascii_lowercase(), value.to_ascii_lowercase());
            if !hay.contains(&needle) {
                continue;
            }
            let mut next = String::with_capacity(cur.len());
            let mut at = 0;
            for (i, _) in hay.match_indices(&needle) {
                next.push_str(&cur[at..i]);
                next.push_str(&format!("[secret:{name}]"));
                at = i + needle.len();
            }
            next.push_str(&cur[at..]);
            out = Some(next);
        }
        out
    }

    /// Redacts every string in a JSON value, in place.
    pub fn redact_value(&self, v: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match v {
            serde_json::Value::String(s) => {
                if let Some(r) = self.redact_str(s) {
                    *s = r;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| self.redact_value(x)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| self.redact_value(x)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_replaced_by_their_names_everywhere() {
        let r = Redactor::new([("TOKEN", "s3cr3t-value"), ("KEY", "s3cr3t-value-longer")]);
        let mut v = serde_json::json!({
            "argv": ["curl", "-H", "Authorization: s3cr3t-value", "x"],
            "name": "s3cr3t-value-longer.attacker.test",
            "nested": {"n": 1, "s": ["as3cr3t-valueb"]},
        });
        r.redact_value(&mut v);
        let s = v.to_string();
        assert!(!s.contains("s3cr3t"), "{s}");
        assert_eq!(v["argv"][2], "Authorization: [secret:TOKEN]");
        assert_eq!(v["name"], "[secret:KEY].attacker.test");
        assert_eq!(v["nested"]["s"][0], "a[secret:TOKEN]b");
        assert_eq!(v["nested"]["n"], 1);
    }

    #[test]
    fn values_are_found_whatever_their_ascii_case() {
        let r = Redactor::new([("TOKEN", "s3cr3t-Value")]);
        assert_eq!(
            r.redact_str("S3CR3T-value.exfil.test").as_deref(),
            Some("[secret:TOKEN].exfil.test")
        );
        assert_eq!(
            r.redact_str("é s3cr3t-value é").as_deref(),
            Some("é [secret:TOKEN] é")
        );
    }

    #[test]
    fn short_values_are_left_alone() {
        let r = Redactor::new([("PIN", "123")]);
        assert!(r.is_empty());
        assert_eq!(r.redact_str("a 123 b"), None);
    }

    #[test]
    fn a_secret_learnt_late_reaches_every_copy() {
        let r = Redactor::new([("A", "first-secret")]);
        let writer = r.clone();
        r.add("JIT", "late-secret-value");
        r.add("SHORT", "12");
        assert_eq!(
            writer
                .redact_str("x late-secret-value first-secret")
                .as_deref(),
            Some("x [secret:JIT] [secret:A]")
        );
        assert_eq!(writer.redact_str("12"), None);
    }
}
