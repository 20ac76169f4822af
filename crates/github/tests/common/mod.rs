//! Shared test helpers: a fake GitHub on 127.0.0.1:0 and clients for it.
#![allow(dead_code)]

use std::time::Duration;

use airlock_github::fake::{FakeConfig, FakeGitHub};
use serde_json::Value;

use airlock_github::{AppKey, ClientConfig, Credentials, GitHubClient, RetryPolicy, Secret};

/// Test-only key pair, generated for this repository's tests; never used anywhere else.
pub const TEST_KEY: &[u8] = include_bytes!("../fixtures/TEST-ONLY-app-private-key.pem");
/// Its public half, given to the fake so it verifies JWT signatures.
pub const TEST_PUBLIC_KEY: &[u8] = include_bytes!("../fixtures/TEST-ONLY-app-public-key.pem");

pub const APP_ID: &str = "12345";
pub const INSTALLATION: u64 = 42;
pub const PAT: &str = "ghp_test_personal_access_token";

pub fn config() -> FakeConfig {
    FakeConfig {
        app_id: APP_ID.into(),
        installation_id: INSTALLATION,
        app_public_key_pem: Some(TEST_PUBLIC_KEY.to_vec()),
        personal_tokens: vec![PAT.into()],
        ..FakeConfig::default()
    }
}

pub async fn fake(config: FakeConfig) -> FakeGitHub {
    FakeGitHub::start("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("fake GitHub binds")
}

/// Short back-offs so the tests run fast but still measurably wait.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(3),
        deadline: Duration::from_secs(10),
        attempt_timeout: Duration::from_secs(5),
    }
}

pub fn client_with(url: &str, credentials: Credentials, retry: RetryPolicy) -> GitHubClient {
    GitHubClient::new(
        ClientConfig {
            base_url: url.to_owned(),
            retry,
            ..ClientConfig::default()
        },
        credentials,
    )
    .expect("client")
}

pub fn app_credentials() -> Credentials {
    Credentials::App {
        key: AppKey::from_pem(APP_ID, TEST_KEY).expect("test key"),
        installation_id: INSTALLATION,
    }
}

pub fn app_client(fake: &FakeGitHub) -> GitHubClient {
    client_with(&fake.url(), app_credentials(), fast_retry())
}

pub fn pat_client(fake: &FakeGitHub) -> GitHubClient {
    client_with(
        &fake.url(),
        Credentials::Token(Secret::new(PAT)),
        fast_retry(),
    )
}

fn read_json_file(p: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The schemas' relative `$ref`s resolve under `json-schema:///`. The fixtures ship
/// `common/workflow-job` (the part airlock relies on); the other common schemas (user,
/// repository, organization, installation-lite, deployment, workflow-step) are not in the
/// fixture set and are registered as the empty schema, which accepts anything.
pub fn validator(action: &str) -> jsonschema::Validator {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks/schemas");
    let schema = read_json_file(&dir.join(format!("workflow_job__{action}.schema.json")));
    let mut workflow_job = read_json_file(&dir.join("common__workflow-job.schema.json"));
    // Its `$id` is relative ("common/workflow-job.schema.json"); made absolute so the
    // `$ref` to workflow-step inside it has a base to resolve against.
    workflow_job["$id"] = "json-schema:///common/workflow-job.schema.json".into();
    let resource = |v: Value| jsonschema::Resource::from_contents(v).expect("resource");
    let mut opts = jsonschema::options().with_resource(
        "json-schema:///common/workflow-job.schema.json",
        resource(workflow_job),
    );
    for missing in [
        "organization",
        "installation-lite",
        "repository",
        "user",
        "deployment",
        "workflow-step",
    ] {
        opts = opts.with_resource(
            format!("json-schema:///common/{missing}.schema.json"),
            resource(serde_json::json!({})),
        );
    }
    opts.build(&schema)
        .unwrap_or_else(|e| panic!("schema {action}: {e}"))
}
