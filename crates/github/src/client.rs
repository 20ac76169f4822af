//! The async REST client: installation-token cache, retries, typed endpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::auth::Credentials;
use crate::error::{AuthError, Error};
use crate::models::{
    InstallationToken, JitConfig, JitConfigRequest, Runner, RunnerGroup, RunnerScope, TokenRequest,
    WorkflowPermissions,
};

/// Pages followed at most per listing (100 items each): more is a loop in the `Link` headers.
const MAX_PAGES: usize = 100;
use crate::retry::RetryPolicy;
use crate::Secret;

/// The public GitHub API.
pub const DEFAULT_BASE_URL: &str = "https://api.github.com";
/// The API version every request asks for.
pub const API_VERSION: &str = "2022-11-28";

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// API root: `https://api.github.com`, `https://ghe.example/api/v3`, or a fake's URL.
    pub base_url: String,
    /// `User-Agent` (GitHub refuses requests without one).
    pub user_agent: String,
    /// Retries and deadline of each call.
    pub retry: RetryPolicy,
    /// A cached installation token is replaced this long before it expires.
    pub refresh_margin: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            user_agent: concat!("airlock/", env!("CARGO_PKG_VERSION")).to_owned(),
            retry: RetryPolicy::default(),
            refresh_margin: Duration::from_secs(300),
        }
    }
}

/// A GitHub REST client. Cheap to clone (shared state behind an `Arc`); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct GitHubClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    config: ClientConfig,
    credentials: Credentials,
    /// The installation token. Held across the refresh, so one refresh runs at a time and
    /// concurrent callers wait for its result instead of minting their own.
    cache: tokio::sync::Mutex<Option<InstallationToken>>,
}

/// A successful response.
struct Reply {
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Deserialize)]
struct GitHubMessage {
    message: String,
}

impl GitHubClient {
    /// A client for `config.base_url` with these credentials.
    pub fn new(config: ClientConfig, credentials: Credentials) -> Result<Self, Error> {
        let mut base = Url::parse(&config.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| Error::InvalidBaseUrl {
                url: config.base_url.clone(),
            })?;
        if let Ok(mut segs) = base.path_segments_mut() {
            segs.pop_if_empty();
        }
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|source| Error::Network {
                request: "building the HTTP client".into(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                config,
                credentials,
                cache: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.extend(segments);
        }
        url
    }

    /// The token for API calls: the cached installation token (refreshed `refresh_margin`
    /// before expiry), or the personal access token.
    pub async fn installation_token(&self) -> Result<Secret, Error> {
        let (key, installation_id) = match &self.inner.credentials {
            Credentials::Token(t) => return Ok(t.clone()),
            Credentials::App {
                key,
                installation_id,
            } => (key, *installation_id),
        };
        let mut cache = self.inner.cache.lock().await;
        let margin = chrono::Duration::from_std(self.inner.config.refresh_margin)
            .unwrap_or(chrono::Duration::zero());
        if let Some(tok) = cache.as_ref() {
            if tok.expires_at - margin > chrono::Utc::now() {
                return Ok(tok.token.clone());
            }
        }
        let jwt = key.jwt()?;
        let fresh = self
            .exchange(&jwt, installation_id, &TokenRequest::default())
            .await?;
        let token = fresh.token.clone();
        *cache = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached installation token (after a 401, say).
    pub async fn invalidate_token(&self) {
        *self.inner.cache.lock().await = None;
    }

    /// A call authenticated with the installation token; a 401 drops that token from the
    /// cache so the next call mints a new one.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, Error> {
        let token = self.installation_token().await?;
        let result = self.send(method, url, &token, body).await;
        if let Err(Error::Unauthorized { .. }) = &result {
            let mut cache = self.inner.cache.lock().await;
            if cache.as_ref().is_some_and(|c| c.token == token) {
                *cache = None;
            }
        }
        result
    }

    /// Mints a new installation token narrowed to `request` (per-job credentials). Not cached.
    /// Revoke it with [`GitHubClient::revoke_token`] at teardown.
    pub async fn create_scoped_token(
        &self,
        request: &TokenRequest,
    ) -> Result<InstallationToken, Error> {
        let Credentials::App {
            key,
            installation_id,
        } = &self.inner.credentials
        else {
            return Err(AuthError::NotAnApp("a per-job narrowed token").into());
        };
        let jwt = key.jwt()?;
        self.exchange(&jwt, *installation_id, request).await
    }

    async fn exchange(
        &self,
        jwt: &Secret,
        installation_id: u64,
        request: &TokenRequest,
    ) -> Result<InstallationToken, Error> {
        let id = installation_id.to_string();
        let url = self.url(&["app", "installations", &id, "access_tokens"]);
        let body = serde_json::to_value(request).map_err(|source| Error::Decode {
            request: "encoding the token request".into(),
            source,
        })?;
        let reply = self.send(Method::POST, url, jwt, Some(&body)).await?;
        decode(&reply, "POST /app/installations/{id}/access_tokens")
    }

    /// Revokes an installation token (`DELETE /installation/token`, authenticated with it).
    pub async fn revoke_token(&self, token: &Secret) -> Result<(), Error> {
        let url = self.url(&["installation", "token"]);
        self.send(Method::DELETE, url, token, None).await.map(drop)
    }

    /// Registers a just-in-time runner and returns its config blob.
    ///
    /// A retried POST after a lost reply may find the name taken (409/422): names must be
    /// unique per job, and the caller treats "already exists" as "look it up and delete it".
    pub async fn generate_jit_config(
        &self,
        scope: &RunnerScope,
        request: &JitConfigRequest,
    ) -> Result<JitConfig, Error> {
        let mut segs = scope.runners_segments();
        segs.push("generate-jitconfig");
        let url = self.url(&segs);
        let body = serde_json::to_value(request).map_err(|source| Error::Decode {
            request: "encoding the JIT request".into(),
            source,
        })?;
        let reply = self.call(Method::POST, url, Some(&body)).await?;
        decode(&reply, "POST …/actions/runners/generate-jitconfig")
    }

    /// All runners of the scope (every page).
    pub async fn list_runners(&self, scope: &RunnerScope) -> Result<Vec<Runner>, Error> {
        let url = self.url(&scope.runners_segments());
        self.paginate(url, "runners").await
    }

    /// One runner.
    pub async fn get_runner(&self, scope: &RunnerScope, id: u64) -> Result<Runner, Error> {
        let id = id.to_string();
        let mut segs = scope.runners_segments();
        segs.push(&id);
        let url = self.url(&segs);
        let reply = self.call(Method::GET, url, None).await?;
        decode(&reply, "GET …/actions/runners/{id}")
    }

    /// Deletes (de-registers) a runner.
    pub async fn delete_runner(&self, scope: &RunnerScope, id: u64) -> Result<(), Error> {
        let id = id.to_string();
        let mut segs = scope.runners_segments();
        segs.push(&id);
        let url = self.url(&segs);
        self.call(Method::DELETE, url, None).await.map(drop)
    }

    /// Cancels a workflow run (`POST /repos/{owner}/{repo}/actions/runs/{id}/cancel`; needs
    /// "Actions: write"). GitHub answers 202 and cancels asynchronously.
    pub async fn cancel_workflow_run(
        &self,
        owner: &str,
        repo: &str,
        run_id: u64,
    ) -> Result<(), Error> {
        let id = run_id.to_string();
        let url = self.url(&["repos", owner, repo, "actions", "runs", &id, "cancel"]);
        self.call(Method::POST, url, None).await.map(drop)
    }

    /// Whether repository `owner/repo` is public (`GET /repos/{owner}/{repo}`). A reply that
    /// says neither `visibility` nor `private` counts as public: the callers use this to keep
    /// public code out of trusted runners.
    pub async fn repository_is_public(&self, owner: &str, repo: &str) -> Result<bool, Error> {
        #[derive(serde::Deserialize)]
        struct Repo {
            #[serde(default)]
            visibility: Option<String>,
            #[serde(default)]
            private: Option<bool>,
        }
        let url = self.url(&["repos", owner, repo]);
        let reply = self.call(Method::GET, url, None).await?;
        let r: Repo = decode(&reply, "GET /repos/{owner}/{repo}")?;
        Ok(r.visibility
            .map(|v| v == "public")
            .or(r.private.map(|p| !p))
            .unwrap_or(true))
    }

    /// All runner groups of an organisation (every page).
    pub async fn list_runner_groups(&self, org: &str) -> Result<Vec<RunnerGroup>, Error> {
        let url = self.url(&["orgs", org, "actions", "runner-groups"]);
        self.paginate(url, "runner_groups").await
    }

    /// An organisation's default `GITHUB_TOKEN` permissions.
    pub async fn workflow_permissions(&self, org: &str) -> Result<WorkflowPermissions, Error> {
        let url = self.url(&["orgs", org, "actions", "permissions", "workflow"]);
        let reply = self.call(Method::GET, url, None).await?;
        decode(&reply, "GET /orgs/{org}/actions/permissions/workflow")
    }

    async fn paginate<T: DeserializeOwned>(&self, first: Url, key: &str) -> Result<Vec<T>, Error> {
        let first_path = first.path().to_owned();
        let mut url = first;
        url.query_pairs_mut().append_pair("per_page", "100");
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let request = format!("GET {}", url.path());
            let reply = self.call(Method::GET, url.clone(), None).await?;
            let mut page: serde_json::Value = decode(&reply, &request)?;
            let items = page
                .get_mut(key)
                .map(serde_json::Value::take)
                .unwrap_or(serde_json::Value::Array(Vec::new()));
            let items: Vec<T> = serde_json::from_value(items).map_err(|source| Error::Decode {
                request: request.clone(),
                source,
            })?;
            out.extend(items);
            let Some(next) = reply
                .headers
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link)
            else {
                return Ok(out);
            };
            // The token goes only to the configured API: a next link elsewhere is refused.
            let next_url = Url::parse(&next).ok().filter(|u| self.same_api(u));
            match next_url {
                Some(u) => url = u,
                None => return Err(Error::ForeignLink { request, url: next }),
            }
        }
        Err(Error::TooManyPages {
            request: format!("GET {}", first_path),
            max: MAX_PAGES,
        })
    }

    fn same_api(&self, url: &Url) -> bool {
        let base = &self.inner.base;
        url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default()
            && url.path().starts_with(base.path())
    }

    /// One call with retries: 5xx, network errors and rate limits are retried with back-off
    /// (rate limits wait `retry-after` up to `max_retry_after`), everything else returns at
    /// once; the whole call stops at `deadline`.
    async fn send(
        &self,
        method: Method,
        url: Url,
        token: &Secret,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, Error> {
        let policy = &self.inner.config.retry;
        let request = format!("{method} {}", url.path());
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // Never zero: the wait below is only taken when it ends before the deadline.
            let remaining = policy
                .deadline
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1));
            let result = self
                .attempt(
                    &method,
                    &url,
                    token,
                    body,
                    remaining.min(policy.attempt_timeout),
                )
                .await;
            let err = match result {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            if !err.is_retryable() || attempt >= policy.max_attempts.max(1) {
                return Err(err);
            }
            let wait = match &err {
                Error::RateLimited {
                    retry_after: Some(d),
                    ..
                } => {
                    if *d > policy.max_retry_after {
                        return Err(err);
                    }
                    *d
                }
                _ => policy.backoff(attempt),
            };
            if start.elapsed() + wait >= policy.deadline {
                return Err(Error::Deadline {
                    request,
                    attempts: attempt,
                    elapsed: start.elapsed(),
                    last: Box::new(err),
                });
            }
            tracing::debug!(%request, attempt, ?wait, error = %err, "retrying GitHub call");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        token: &Secret,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        let request = format!("{method} {}", url.path());
        let mut req = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .timeout(timeout)
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(USER_AGENT, &self.inner.config.user_agent)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        if let Some(b) = body {
            req = req.json(b);
        }
        let net = |source| Error::Network {
            request: request.clone(),
            source,
        };
        let resp = req.send().await.map_err(net)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(net)?.to_vec();
        if status.is_success() {
            return Ok(Reply { headers, body });
        }
        Err(classify(request, status, &headers, &body))
    }
}

fn decode<T: DeserializeOwned>(reply: &Reply, request: &str) -> Result<T, Error> {
    serde_json::from_slice(&reply.body).map_err(|source| Error::Decode {
        request: request.to_owned(),
        source,
    })
}

/// Maps a non-2xx answer to its error class.
fn classify(request: String, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let message = serde_json::from_slice::<GitHubMessage>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let retry_after = header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let exhausted = header("x-ratelimit-remaining").map(str::trim) == Some("0");
    let reset = header("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(|reset| {
            let secs = (reset - chrono::Utc::now().timestamp()).max(0);
            Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        });
    let code = status.as_u16();
    match code {
        429 => Error::RateLimited {
            request,
            status: code,
            retry_after: retry_after.or(reset),
        },
        403 if exhausted || retry_after.is_some() => Error::RateLimited {
            request,
            status: code,
            retry_after: retry_after.or(if exhausted { reset } else { None }),
        },
        401 => Error::Unauthorized { request, message },
        403 => Error::Forbidden { request, message },
        404 => Error::NotFound { request, message },
        422 => Error::Unprocessable { request, message },
        500..=599 => Error::Server {
            request,
            status: code,
            message,
        },
        _ => Error::Status {
            request,
            status: code,
            message,
        },
    }
}

/// The `rel="next"` target of a `Link` header.
///
/// Hand-written: GitHub's Link header is a fixed, simple subset of RFC 8288
/// (`<url>; rel="next", <url>; rel="last"`) with no quoted commas, so a dependency is not
/// worth it.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let url = target.strip_prefix('<')?.strip_suffix('>')?;
        pieces
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| url.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_checked_and_prefix_kept() {
        let cfg = |u: &str| ClientConfig {
            base_url: u.into(),
            ..ClientConfig::default()
        };
        let pat = || Credentials::Token(Secret::new("t"));
        for bad in ["not a url", "file:///etc/passwd", "ghe.example/api/v3"] {
            assert!(matches!(
                GitHubClient::new(cfg(bad), pat()),
                Err(Error::InvalidBaseUrl { .. })
            ));
        }
        let c = GitHubClient::new(cfg("https://ghe.example/api/v3/"), pat()).expect("client");
        let url = c.url(&["orgs", "o/../x", "actions", "runners"]);
        assert_eq!(
            url.as_str(),
            "https://ghe.example/api/v3/orgs/o%2F..%2Fx/actions/runners"
        );
    }

    #[test]
    fn link_header() {
        let h = r#"<https://api.github.com/orgs/o/actions/runners?per_page=2&page=2>; rel="next", <https://api.github.com/orgs/o/actions/runners?per_page=2&page=3>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.github.com/orgs/o/actions/runners?per_page=2&page=2")
        );
        let last = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
    }

    #[test]
    fn classification() {
        let mut h = HeaderMap::new();
        let e = classify(
            "GET /x".into(),
            StatusCode::FORBIDDEN,
            &h,
            br#"{"message":"Resource not accessible by integration"}"#,
        );
        assert!(
            matches!(&e, Error::Forbidden { message, .. } if message == "Resource not accessible by integration")
        );
        assert!(!e.is_retryable());
        h.insert("x-ratelimit-remaining", "0".parse().expect("header"));
        let reset = chrono::Utc::now().timestamp() + 30;
        h.insert(
            "x-ratelimit-reset",
            reset.to_string().parse().expect("header"),
        );
        let e = classify("GET /x".into(), StatusCode::FORBIDDEN, &h, b"{}");
        match e {
            Error::RateLimited {
                retry_after: Some(d),
                status: 403,
                ..
            } => {
                assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(28))
            }
            other => panic!("not rate limited: {other:?}"),
        }
        let e = classify(
            "GET /x".into(),
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>",
        );
        assert!(e.is_retryable());
        assert_eq!(e.status(), Some(502));
    }
}
