//! Webhook deliveries: signature verification and the typed `workflow_job` event.
//!
//! The order is fixed: [`verify_signature`] on the raw body first, then [`parse_event`].
//! Nothing of an unverified body is parsed.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Header carrying `sha256=` + hex(HMAC-SHA256(secret, body)).
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// Header naming the event (`workflow_job`, `ping`, …).
pub const EVENT_HEADER: &str = "X-GitHub-Event";
/// Header with the delivery GUID; a redelivery carries the same GUID.
pub const DELIVERY_HEADER: &str = "X-GitHub-Delivery";
/// GitHub caps webhook payloads at 25 MB; a larger body is not from GitHub.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// Why a delivery was refused. Signature variants answer 401, [`WebhookError::Parse`] 400.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The configured secret is empty: an empty HMAC key is forgeable by anyone, so every
    /// delivery is refused. A configuration error; check it at start-up.
    #[error("the webhook secret is empty; refusing every delivery")]
    EmptySecret,
    /// No `X-Hub-Signature-256` header.
    #[error("missing {SIGNATURE_HEADER} header")]
    MissingSignature,
    /// The header is not `sha256=<64 hex digits>`.
    #[error("malformed {SIGNATURE_HEADER} header (expected sha256=<hex>)")]
    MalformedSignature,
    /// The HMAC does not match the body.
    #[error("webhook signature does not match the body")]
    BadSignature,
    /// The (verified) body is not the event it claims to be.
    #[error("{event} payload does not match its schema")]
    Parse {
        /// The `X-GitHub-Event` value.
        event: String,
        /// What serde refused.
        #[source]
        source: serde_json::Error,
    },
}

impl WebhookError {
    /// True for the variants a handler answers with 401 (signature problems).
    pub fn is_unauthorized(&self) -> bool {
        !matches!(self, WebhookError::Parse { .. })
    }
}

/// Checks `X-Hub-Signature-256` against HMAC-SHA256(secret, body) in constant time
/// (`hmac`'s `verify_slice`).
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::EmptySecret);
    }
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(WebhookError::MalformedSignature)?;
    let sig = hex::decode(hex_sig).map_err(|_| WebhookError::MalformedSignature)?;
    if sig.len() != 32 {
        return Err(WebhookError::MalformedSignature);
    }
    // HMAC accepts keys of any length, so new_from_slice cannot fail; map it anyway.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| WebhookError::BadSignature)
}

/// Computes the `X-Hub-Signature-256` value for a body (for tests and the fake GitHub).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // Unreachable: HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A verified delivery, by event type.
#[derive(Debug, Clone)]
pub enum Event {
    /// `workflow_job`.
    WorkflowJob(Box<WorkflowJobEvent>),
    /// `ping`, sent when the webhook is created.
    Ping,
    /// Any other event: not handled, answered 2xx.
    Other(String),
}

/// Parses a verified body according to its `X-GitHub-Event` header.
pub fn parse_event(event: &str, body: &[u8]) -> Result<Event, WebhookError> {
    match event {
        "workflow_job" => parse_workflow_job(body).map(|e| Event::WorkflowJob(Box::new(e))),
        "ping" => Ok(Event::Ping),
        other => Ok(Event::Other(other.to_owned())),
    }
}

/// Parses a verified `workflow_job` body.
pub fn parse_workflow_job(body: &[u8]) -> Result<WorkflowJobEvent, WebhookError> {
    serde_json::from_slice(body).map_err(|source| WebhookError::Parse {
        event: "workflow_job".into(),
        source,
    })
}

/// `workflow_job` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowJobAction {
    /// The job waits for a runner.
    Queued,
    /// The job waits for a deployment protection rule.
    Waiting,
    /// A runner took the job.
    InProgress,
    /// The job finished (or was cancelled).
    Completed,
}

impl WorkflowJobAction {
    /// The name GitHub gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Waiting => "waiting",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }
}

/// `workflow_job.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a runner.
    Queued,
    /// Running.
    InProgress,
    /// Finished.
    Completed,
    /// Waiting for a protection rule.
    Waiting,
}

/// `workflow_job.conclusion` (null until completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    /// Success.
    Success,
    /// Failure.
    Failure,
    /// Cancelled.
    Cancelled,
    /// Skipped.
    Skipped,
}

/// A `workflow_job` delivery.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJobEvent {
    /// What happened.
    pub action: WorkflowJobAction,
    /// The job.
    pub workflow_job: WorkflowJob,
    /// The repository of the job.
    pub repository: Repository,
    /// The organisation, when the repository belongs to one.
    #[serde(default)]
    pub organization: Option<Organization>,
    /// The App installation, when delivered to an App.
    #[serde(default)]
    pub installation: Option<InstallationLite>,
}

impl WorkflowJobEvent {
    /// The repository-level runner scope of the job (`/repos/{owner}/{repo}/…`).
    pub fn repo_scope(&self) -> crate::RunnerScope {
        crate::RunnerScope::repo(&self.repository.owner.login, &self.repository.name)
    }

    /// The organisation: `organization.login`, else the repository owner when that is an
    /// organisation account; `None` for a user's repository.
    pub fn org_login(&self) -> Option<&str> {
        self.organization
            .as_ref()
            .map(|o| o.login.as_str())
            .or_else(|| {
                (self.repository.owner.kind.as_deref() == Some("Organization"))
                    .then_some(self.repository.owner.login.as_str())
            })
    }
}

/// The job of a `workflow_job` event.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJob {
    /// Job id.
    pub id: u64,
    /// Workflow run id.
    pub run_id: u64,
    /// Attempt number of the run.
    pub run_attempt: u32,
    /// Job name.
    pub name: String,
    /// `runs-on` labels.
    pub labels: Vec<String>,
    /// Runner that took the job (null while queued).
    pub runner_id: Option<u64>,
    /// Runner name (null while queued).
    pub runner_name: Option<String>,
    /// Runner group id (null while queued).
    pub runner_group_id: Option<u64>,
    /// Runner group name (null while queued).
    pub runner_group_name: Option<String>,
    /// Status.
    pub status: JobStatus,
    /// Conclusion (null until completed).
    pub conclusion: Option<Conclusion>,
    /// Workflow name.
    pub workflow_name: Option<String>,
    /// Branch.
    pub head_branch: Option<String>,
    /// Commit.
    pub head_sha: String,
    /// Web page of the job.
    pub html_url: String,
    /// When the job was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When the job started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When it completed.
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Repository visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Public.
    Public,
    /// Private.
    Private,
    /// Internal (enterprise).
    Internal,
}

/// The repository of an event.
#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    /// Repository id.
    pub id: u64,
    /// Short name.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Private or not.
    pub private: bool,
    /// Visibility (absent in some older payloads).
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Owner.
    pub owner: Account,
}

impl Repository {
    /// True when the repository is public (forks of it can run workflows).
    pub fn is_public(&self) -> bool {
        match self.visibility {
            Some(v) => v == Visibility::Public,
            None => !self.private,
        }
    }
}

/// A user or organisation account.
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    /// Login.
    pub login: String,
    /// Id.
    pub id: u64,
    /// `User`, `Organization` or `Bot`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// The organisation of an event.
#[derive(Debug, Clone, Deserialize)]
pub struct Organization {
    /// Login.
    pub login: String,
    /// Id.
    pub id: u64,
}

/// The installation of an event (id only).
#[derive(Debug, Clone, Deserialize)]
pub struct InstallationLite {
    /// Installation id, for [`crate::auth`] token exchange.
    pub id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_test_vector() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        verify_signature(secret, body, Some(header)).expect("GitHub's vector verifies");
        assert_eq!(sign(secret, body), header);
    }

    #[test]
    fn refusals() {
        let secret = b"It's a Secret to Everybody";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(matches!(
            verify_signature(secret, b"Hello, World!", None),
            Err(WebhookError::MissingSignature)
        ));
        assert!(matches!(
            verify_signature(secret, b"Hello, World?", Some(good)),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(
            verify_signature(b"other secret", b"Hello, World!", Some(good)),
            Err(WebhookError::BadSignature)
        ));
        let sha1 = good.replace("sha256=", "sha1=");
        assert!(matches!(
            verify_signature(secret, b"Hello, World!", Some(&sha1)),
            Err(WebhookError::MalformedSignature)
        ));
        assert!(matches!(
            verify_signature(secret, b"Hello, World!", Some("sha256=zz")),
            Err(WebhookError::MalformedSignature)
        ));
        // Truncated signature: refused, not prefix-compared.
        assert!(matches!(
            verify_signature(secret, b"Hello, World!", Some(&good[..40])),
            Err(WebhookError::MalformedSignature)
        ));
        assert!(WebhookError::BadSignature.is_unauthorized());
        // An empty secret refuses even a matching signature.
        let empty = sign(b"", b"Hello, World!");
        assert!(matches!(
            verify_signature(b"", b"Hello, World!", Some(&empty)),
            Err(WebhookError::EmptySecret)
        ));
    }

    #[test]
    fn other_events_are_not_parsed() {
        assert!(matches!(
            parse_event("push", b"not json"),
            Ok(Event::Other(e)) if e == "push"
        ));
        assert!(matches!(parse_event("ping", b"{}"), Ok(Event::Ping)));
        let err = parse_event("workflow_job", b"{}").expect_err("empty object refused");
        assert!(!err.is_unauthorized());
    }
}
