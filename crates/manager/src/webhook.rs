//! Webhook signature verification and the `workflow_job` model serve uses: both the github
//! component's.

// One implementation of the signature check, in the github component (constant time; an
// empty secret refuses everything).
pub use airlock_github::webhook::{sign, verify_signature, WebhookError as SignatureError};

// One model of the `workflow_job` payload, in the github component: a payload GitHub's
// schema refuses (an unknown action, a mistyped field) is refused here too.
pub use airlock_github::webhook::{Repository, WorkflowJob, WorkflowJobAction, WorkflowJobEvent};

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
        assert_eq!(q.action, WorkflowJobAction::Queued);
        assert_eq!(q.workflow_job.labels, vec!["ubuntu-latest"]);
        assert_eq!(q.repository.full_name, "Codertocat/Hello-World");
        assert!(q.repository.is_public());
        let c: WorkflowJobEvent =
            serde_json::from_str(&fixture("completed.failure.with-organization.payload.json"))
                .expect("completed");
        assert_eq!(c.action, WorkflowJobAction::Completed);
        assert_eq!(
            c.workflow_job.conclusion,
            Some(airlock_github::webhook::Conclusion::Failure)
        );
    }

    #[test]
    fn schema_mismatch_is_an_error() {
        let bad = r#"{"action":"queued","workflow_job":{"id":"x"},"repository":{}}"#;
        assert!(serde_json::from_str::<WorkflowJobEvent>(bad).is_err());
    }
}
