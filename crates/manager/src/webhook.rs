//! Webhook signature verification and the minimal `workflow_job` model.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("malformed X-Hub-Signature-256 header")]
    Malformed,
    /// The HMAC does not match.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks `X-Hub-Signature-256` (`sha256=` + hex HMAC-SHA256 of the raw body under the
/// webhook secret). The comparison is constant time (`hmac`'s `verify_slice`).
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let sig = hex::decode(hex_sig.trim()).map_err(|_| SignatureError::Malformed)?;
    if sig.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

/// `sha256=` + hex HMAC-SHA256 of `body`: what GitHub sends (used by tests and the benchmark).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // An HMAC accepts keys of any length: this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `workflow_job` webhook payload: only the fields airlock uses. Unknown fields are
/// ignored (GitHub adds fields); a missing or mistyped used field is a schema mismatch.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJobEvent {
    /// `queued`, `waiting`, `in_progress` or `completed`.
    pub action: String,
    /// The job.
    pub workflow_job: WorkflowJob,
    /// The repository the job belongs to.
    pub repository: Repository,
}

/// The job part of the payload.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJob {
    /// Job id (unique across GitHub).
    pub id: u64,
    /// Workflow run id.
    pub run_id: u64,
    /// Job name.
    pub name: String,
    /// `runs-on` labels.
    pub labels: Vec<String>,
    /// The workflow's display name (absent in old payloads).
    #[serde(default)]
    pub workflow_name: Option<String>,
    /// Branch of the run.
    #[serde(default)]
    pub head_branch: Option<String>,
    /// The runner that took the job (in_progress/completed).
    #[serde(default)]
    pub runner_id: Option<u64>,
    /// Its name.
    #[serde(default)]
    pub runner_name: Option<String>,
    /// `success`, `failure`, ... once completed.
    #[serde(default)]
    pub conclusion: Option<String>,
}

/// The repository part of the payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: String,
    /// Whether the repository is private.
    pub private: bool,
    /// `public`, `private` or `internal` (absent in old payloads).
    #[serde(default)]
    pub visibility: Option<String>,
}

impl Repository {
    /// Public repositories run code from anyone who can open a pull request.
    pub fn is_public(&self) -> bool {
        !self.private || self.visibility.as_deref() == Some("public")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_test_vector() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), want);
        assert_eq!(verify_signature(secret, body, Some(want)), Ok(()));
        assert_eq!(
            verify_signature(secret, b"Hello, World?", Some(want)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"other", body, Some(want)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(secret, body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(secret, body, Some("sha1=abcd")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(secret, body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(secret, body, Some(&want[..want.len() - 2])),
            Err(SignatureError::Malformed)
        );
    }

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../github/tests/fixtures/webhooks/workflow_job")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn fixtures_parse() {
        for name in [
            "queued.payload.json",
            "queued.with-deployment.payload.json",
            "waiting.payload.json",
            "in_progress.payload.json",
            "in_progress.with-queued-steps.payload.json",
            "completed.success.with-organization.payload.json",
            "completed.failure.with-organization.payload.json",
        ] {
            let ev: WorkflowJobEvent =
                serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(ev.workflow_job.id > 0, "{name}");
            assert!(ev.repository.full_name.contains('/'), "{name}");
        }
        let q: WorkflowJobEvent =
            serde_json::from_str(&fixture("queued.payload.json")).expect("queued");
        assert_eq!(q.action, "queued");
        assert_eq!(q.workflow_job.labels, vec!["ubuntu-latest"]);
        assert_eq!(q.repository.full_name, "Codertocat/Hello-World");
        assert!(q.repository.is_public());
        let c: WorkflowJobEvent =
            serde_json::from_str(&fixture("completed.failure.with-organization.payload.json"))
                .expect("completed");
        assert_eq!(c.action, "completed");
        assert_eq!(c.workflow_job.conclusion.as_deref(), Some("failure"));
    }

    #[test]
    fn schema_mismatch_is_an_error() {
        let bad = r#"{"action":"queued","workflow_job":{"id":"x"},"repository":{}}"#;
        assert!(serde_json::from_str::<WorkflowJobEvent>(bad).is_err());
    }
}
