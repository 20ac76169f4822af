//! Webhook signature verification and the minimal `workflow_job` model.

use serde::Deserialize;

// One implementation of the signature check, in the github component (constant time; an
// empty secret refuses everything).
pub use airlock_github::webhook::{sign, verify_signature, WebhookError as SignatureError};

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
        assert!(verify_signature(secret, body, Some(want)).is_ok());
        for (secret, body, header) in [
            (&secret[..], &b"Hello, World?"[..], Some(want)),
            (b"other", body, Some(want)),
            (secret, body, None),
            (secret, body, Some("sha1=abcd")),
            (secret, body, Some("sha256=zz")),
            (b"", body, Some(want)),
        ] {
            let e = verify_signature(secret, body, header).expect_err("refused");
            assert!(e.is_unauthorized(), "{e}");
        }
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
