//! The REST client against the fake GitHub on loopback: App auth and caching, narrowed
//! tokens, endpoints, pagination, each error class, retries and back-off.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use airlock_github::fake::{Endpoint, FakeConfig, Fault};
use airlock_github::{
    AppKey, AuthError, Credentials, Error, JitConfigRequest, RetryPolicy, RunnerScope, TokenRequest,
};
use base64::Engine as _;
use common::*;

fn jit_request(name: &str) -> JitConfigRequest {
    JitConfigRequest {
        name: name.into(),
        runner_group_id: 1,
        labels: vec!["self-hosted".into(), "airlock".into()],
        work_folder: None,
    }
}

#[tokio::test]
async fn app_jwt_exchange_is_cached() {
    let fake = fake(config()).await;
    let client = app_client(&fake);
    let a = client.installation_token().await.expect("token");
    let b = client.installation_token().await.expect("token");
    assert_eq!(a.expose(), b.expose());
    assert_eq!(fake.state().calls_to(Endpoint::AccessTokens), 1);
    assert!(a.expose().starts_with("ghs_"));

    // Concurrent callers on a fresh client share one refresh.
    let fresh = app_client(&fake);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = fresh.clone();
            tokio::spawn(async move { c.installation_token().await.map(|t| t.expose().to_owned()) })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.expect("join").expect("token"));
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "one token for all");
    assert_eq!(fake.state().calls_to(Endpoint::AccessTokens), 2);
}

#[tokio::test]
async fn token_close_to_expiry_is_refreshed() {
    // Tokens live 4 minutes: inside the 5-minute margin, so every call refreshes.
    let fake = fake(FakeConfig {
        token_lifetime: Duration::from_secs(240),
        ..config()
    })
    .await;
    let client = app_client(&fake);
    let a = client.installation_token().await.expect("token");
    let b = client.installation_token().await.expect("token");
    assert_ne!(a.expose(), b.expose());
    assert_eq!(fake.state().calls_to(Endpoint::AccessTokens), 2);
}

#[tokio::test]
async fn jwt_claims_and_wrong_app_refused() {
    let key = AppKey::from_pem(APP_ID, TEST_KEY).expect("key");
    let jwt = key.jwt_at(1_700_000_000).expect("jwt");
    let claims_b64 = jwt.expose().split('.').nth(1).expect("claims part");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims_b64)
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(claims["iat"], 1_700_000_000 - 60);
    assert_eq!(claims["exp"], 1_700_000_000 + 540);
    assert_eq!(claims["iss"], APP_ID);
    assert!(!format!("{key:?}").contains("PRIVATE"));

    let fake = fake(config()).await;
    let other = Credentials::App {
        key: AppKey::from_pem("999", TEST_KEY).expect("key"),
        installation_id: INSTALLATION,
    };
    let client = client_with(&fake.url(), other, fast_retry());
    let err = client.installation_token().await.expect_err("wrong iss");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");

    let missing = std::path::Path::new("/nonexistent/key.pem");
    assert!(matches!(
        AppKey::from_pem_file(APP_ID, missing),
        Err(AuthError::ReadKey { .. })
    ));
    let err = AppKey::from_pem(APP_ID, b"not a key").expect_err("bad key");
    assert!(matches!(err, AuthError::BadKey { .. }));
}

#[tokio::test]
async fn narrowed_token_and_revoke() {
    let fake = fake(config()).await;
    let client = app_client(&fake);
    let req = TokenRequest {
        repositories: vec!["octo-repo".into()],
        permissions: BTreeMap::from([("contents".into(), "read".into())]),
    };
    let tok = client
        .create_scoped_token(&req)
        .await
        .expect("scoped token");
    assert!(tok.expires_at > chrono::Utc::now());
    let state = fake.state();
    let issued = state
        .tokens
        .iter()
        .find(|t| t.token == tok.token.expose())
        .expect("issued");
    assert_eq!(issued.repositories, ["octo-repo"]);
    assert_eq!(
        issued.permissions.get("contents").map(String::as_str),
        Some("read")
    );
    assert!(!issued.revoked);

    client.revoke_token(&tok.token).await.expect("revoke");
    let state = fake.state();
    assert!(state
        .tokens
        .iter()
        .any(|t| t.token == tok.token.expose() && t.revoked));
    // A revoked token is dead.
    let again = client
        .revoke_token(&tok.token)
        .await
        .expect_err("already revoked");
    assert!(matches!(again, Error::Unauthorized { .. }), "{again:?}");
    // The narrowed token is not the cached one.
    let cached = client.installation_token().await.expect("token");
    assert_ne!(cached.expose(), tok.token.expose());
}

#[tokio::test]
async fn revoked_cached_token_is_replaced_after_401() {
    let fake = fake(config()).await;
    let client = app_client(&fake);
    let t = client.installation_token().await.expect("token");
    client.revoke_token(&t).await.expect("revoke");
    let err = client
        .list_runner_groups("octo-org")
        .await
        .expect_err("401");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    let groups = client
        .list_runner_groups("octo-org")
        .await
        .expect("new token");
    assert_eq!(groups.len(), 1);
    assert_eq!(fake.state().calls_to(Endpoint::AccessTokens), 2);
}

#[tokio::test]
async fn personal_access_token_fallback() {
    let fake = fake(config()).await;
    let client = pat_client(&fake);
    let groups = client.list_runner_groups("octo-org").await.expect("groups");
    assert_eq!(groups[0].name, "Default");
    assert!(groups[0].default);
    assert_eq!(fake.state().calls_to(Endpoint::AccessTokens), 0);
    let err = client
        .create_scoped_token(&TokenRequest::default())
        .await
        .expect_err("PAT cannot narrow");
    assert!(matches!(err, Error::Auth(AuthError::NotAnApp(_))));
}

#[tokio::test]
async fn jit_get_list_delete_org_and_repo() {
    let fake = fake(config()).await;
    let client = app_client(&fake);
    for scope in [
        RunnerScope::org("octo-org"),
        RunnerScope::repo("octo-org", "octo-repo"),
    ] {
        let jit = client
            .generate_jit_config(&scope, &jit_request("airlock-job-1"))
            .await
            .expect("jit");
        assert_eq!(jit.runner.name, "airlock-job-1");
        assert_eq!(
            jit.runner.label_names().collect::<Vec<_>>(),
            ["self-hosted", "airlock"]
        );
        assert_eq!(format!("{:?}", jit.encoded_jit_config), "***");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(jit.encoded_jit_config.expose())
            .expect("base64");
        let payload: airlock_github::fake::JitPayload =
            serde_json::from_slice(&decoded).expect("payload");
        assert_eq!(payload.runner_id, jit.runner.id);
        assert_eq!(payload.url, fake.url());

        // Same name again in the same scope: refused by GitHub (409).
        let dup = client
            .generate_jit_config(&scope, &jit_request("airlock-job-1"))
            .await
            .expect_err("duplicate");
        assert_eq!(dup.status(), Some(409));

        let got = client.get_runner(&scope, jit.runner.id).await.expect("get");
        assert_eq!(got, jit.runner);
        let all = client.list_runners(&scope).await.expect("list");
        assert_eq!(all.len(), 1);
        client
            .delete_runner(&scope, jit.runner.id)
            .await
            .expect("delete");
        let gone = client
            .get_runner(&scope, jit.runner.id)
            .await
            .expect_err("gone");
        assert!(matches!(gone, Error::NotFound { .. }), "{gone:?}");
    }
    let state = fake.state();
    assert_eq!(state.deleted_runners.len(), 2);
    assert!(state.runners.is_empty());
    // Empty labels: 422 with GitHub's message, no retry.
    let mut bad = jit_request("x");
    bad.labels.clear();
    let err = client
        .generate_jit_config(&RunnerScope::org("octo-org"), &bad)
        .await
        .expect_err("422");
    match err {
        Error::Unprocessable { message, .. } => assert!(message.contains("labels")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pagination_follows_link_headers() {
    let fake = fake(FakeConfig {
        max_per_page: 2,
        ..config()
    })
    .await;
    for i in 0..5 {
        fake.register_foreign_runner("org:octo-org", &format!("r{i}"), &["self-hosted"]);
    }
    fake.register_foreign_runner("org:other-org", "elsewhere", &["self-hosted"]);
    let client = app_client(&fake);
    let runners = client
        .list_runners(&RunnerScope::org("octo-org"))
        .await
        .expect("list");
    let names: Vec<_> = runners.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(fake.state().calls_to(Endpoint::ListRunners), 3);
}

#[tokio::test]
async fn pagination_link_to_another_host_is_refused() {
    let fake = fake(FakeConfig {
        max_per_page: 1,
        public_url: Some("http://attacker.invalid".into()),
        ..config()
    })
    .await;
    fake.register_foreign_runner("org:octo-org", "a", &["x"]);
    fake.register_foreign_runner("org:octo-org", "b", &["x"]);
    let err = app_client(&fake)
        .list_runners(&RunnerScope::org("octo-org"))
        .await
        .expect_err("foreign link");
    assert!(matches!(err, Error::ForeignLink { .. }), "{err:?}");
}

#[tokio::test]
async fn client_errors_are_typed_and_not_retried() {
    let fake = fake(config()).await;
    let client = app_client(&fake);
    let scope = RunnerScope::org("octo-org");
    client.installation_token().await.expect("warm the cache");

    fake.inject(Endpoint::GenerateJitConfig, Fault::Unprocessable, 1);
    let err = client
        .generate_jit_config(&scope, &jit_request("a"))
        .await
        .expect_err("422");
    assert!(matches!(&err, Error::Unprocessable { message, .. } if message == "Validation Failed"));
    assert_eq!(fake.state().calls_to(Endpoint::GenerateJitConfig), 1);

    fake.inject(Endpoint::ListRunnerGroups, Fault::Forbidden, 1);
    let err = client
        .list_runner_groups("octo-org")
        .await
        .expect_err("403");
    assert!(
        matches!(&err, Error::Forbidden { message, .. } if message == "Resource not accessible by integration"),
        "{err:?}"
    );
    assert_eq!(fake.state().calls_to(Endpoint::ListRunnerGroups), 1);

    fake.inject(Endpoint::DeleteRunner, Fault::NotFound, 1);
    let err = client.delete_runner(&scope, 7).await.expect_err("404");
    assert!(matches!(err, Error::NotFound { .. }));
    assert_eq!(fake.state().calls_to(Endpoint::DeleteRunner), 1);
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let fake = fake(config()).await;
    let client = app_client(&fake);
    client.installation_token().await.expect("warm the cache");
    fake.inject(Endpoint::ListRunnerGroups, Fault::ServerError, 2);
    let start = Instant::now();
    let groups = client
        .list_runner_groups("octo-org")
        .await
        .expect("third try succeeds");
    let elapsed = start.elapsed();
    assert_eq!(groups.len(), 1);
    assert_eq!(fake.state().calls_to(Endpoint::ListRunnerGroups), 3);
    // Equal jitter: at least half of 20 ms, then half of 40 ms.
    assert!(elapsed >= Duration::from_millis(30), "waited {elapsed:?}");

    // Persistent 5xx: exactly max_attempts calls, then the 5xx error.
    fake.inject(Endpoint::GetRunner, Fault::ServerError, 10);
    let err = client
        .get_runner(&RunnerScope::org("octo-org"), 1)
        .await
        .expect_err("5xx");
    assert!(matches!(err, Error::Server { status: 500, .. }), "{err:?}");
    assert_eq!(fake.state().calls_to(Endpoint::GetRunner), 4);
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let fake = fake(config()).await;
    let client = app_client(&fake);
    client.installation_token().await.expect("warm the cache");

    fake.inject(
        Endpoint::ListRunnerGroups,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        1,
    );
    let start = Instant::now();
    client
        .list_runner_groups("octo-org")
        .await
        .expect("after the wait");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fake.state().calls_to(Endpoint::ListRunnerGroups), 2);

    fake.inject(
        Endpoint::ListRunners,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    let start = Instant::now();
    client
        .list_runners(&RunnerScope::org("octo-org"))
        .await
        .expect("after the wait");
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(fake.state().calls_to(Endpoint::ListRunners), 2);

    // Beyond the cap (3 s): returned at once so the caller can requeue.
    fake.inject(
        Endpoint::GetRunner,
        Fault::RateLimited {
            retry_after_secs: 120,
        },
        1,
    );
    let start = Instant::now();
    let err = client
        .get_runner(&RunnerScope::org("octo-org"), 1)
        .await
        .expect_err("capped");
    assert!(start.elapsed() < Duration::from_secs(1));
    match err {
        Error::RateLimited {
            status: 403,
            retry_after: Some(d),
            ..
        } => {
            assert_eq!(d, Duration::from_secs(120))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.state().calls_to(Endpoint::GetRunner), 1);
}

#[tokio::test]
async fn deadline_bounds_a_call() {
    let fake = fake(config()).await;
    let retry = RetryPolicy {
        max_attempts: 100,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
        deadline: Duration::from_millis(500),
        ..fast_retry()
    };
    let client = client_with(&fake.url(), app_credentials(), retry);
    client.installation_token().await.expect("warm the cache");
    fake.inject(Endpoint::ListRunnerGroups, Fault::ServerError, 100);
    let start = Instant::now();
    let err = client
        .list_runner_groups("octo-org")
        .await
        .expect_err("deadline");
    // Without the deadline, 100 attempts backing off up to 2 s would take minutes; the
    // margin over 500 ms is for a loaded CI machine, not for the client.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    match err {
        Error::Deadline { attempts, last, .. } => {
            assert!(attempts >= 2);
            assert!(matches!(*last, Error::Server { .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn network_errors_are_retried() {
    // A port that was free a moment ago: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = client_with(
        &format!("http://{addr}"),
        Credentials::Token(airlock_github::Secret::new(PAT)),
        fast_retry(),
    );
    let start = Instant::now();
    let err = client
        .list_runner_groups("octo-org")
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    assert!(err.is_retryable());
    // Three back-offs of at least 10, 20 and 40 ms.
    assert!(start.elapsed() >= Duration::from_millis(70));
}

#[test]
fn errors_and_secrets_never_print_credentials() {
    let creds = app_credentials();
    let shown = format!("{creds:?}");
    assert!(!shown.contains("BEGIN"), "{shown}");
    let pat = Credentials::Token(airlock_github::Secret::new(PAT));
    assert!(!format!("{pat:?}").contains(PAT));
}
