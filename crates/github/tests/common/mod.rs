//! Shared test helpers: a fake GitHub on 127.0.0.1:0 and clients for it.
#![allow(dead_code)]

use std::time::Duration;

use airlock_github::fake::{FakeConfig, FakeGitHub};
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
