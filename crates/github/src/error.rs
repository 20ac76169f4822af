//! Typed errors of the REST client and of App authentication.

use std::path::PathBuf;
use std::time::Duration;

/// An error from a GitHub API call. Every variant names the request (`METHOD path`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401: the credential was refused.
    #[error("{request}: 401 unauthorized: {message}")]
    Unauthorized {
        /// `METHOD path`.
        request: String,
        /// GitHub's `message`.
        message: String,
    },
    /// 403 that is not a rate limit: the credential lacks a permission.
    #[error("{request}: 403 forbidden: {message}")]
    Forbidden {
        /// `METHOD path`.
        request: String,
        /// GitHub's `message`.
        message: String,
    },
    /// 404: no such resource, or not visible to this credential.
    #[error("{request}: 404 not found: {message}")]
    NotFound {
        /// `METHOD path`.
        request: String,
        /// GitHub's `message`.
        message: String,
    },
    /// 422: the request was refused as invalid.
    #[error("{request}: 422 unprocessable: {message}")]
    Unprocessable {
        /// `METHOD path`.
        request: String,
        /// GitHub's `message`.
        message: String,
    },
    /// 429, or 403 with `x-ratelimit-remaining: 0` or `retry-after`.
    #[error("{request}: rate limited (status {status}, retry after {retry_after:?})")]
    RateLimited {
        /// `METHOD path`.
        request: String,
        /// 403 or 429.
        status: u16,
        /// From `retry-after`, else from `x-ratelimit-reset`.
        retry_after: Option<Duration>,
    },
    /// 5xx.
    #[error("{request}: server error {status}: {message}")]
    Server {
        /// `METHOD path`.
        request: String,
        /// The status.
        status: u16,
        /// GitHub's `message`, or the body.
        message: String,
    },
    /// Any other unexpected status.
    #[error("{request}: unexpected status {status}: {message}")]
    Status {
        /// `METHOD path`.
        request: String,
        /// The status.
        status: u16,
        /// GitHub's `message`, or the body.
        message: String,
    },
    /// Connection, TLS or timeout failure.
    #[error("{request}: network error")]
    Network {
        /// `METHOD path`.
        request: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx body that is not the documented shape.
    #[error("{request}: unexpected response body")]
    Decode {
        /// `METHOD path`.
        request: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The per-call deadline ran out; `last` is the last failure.
    #[error("{request}: gave up after {attempts} attempts ({elapsed:?})")]
    Deadline {
        /// `METHOD path`.
        request: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last failure.
        #[source]
        last: Box<Error>,
    },
    /// More pages than any listing has (a loop in the `Link` headers).
    #[error("{request}: more than {max} pages; stopping")]
    TooManyPages {
        /// `METHOD path` of the first page.
        request: String,
        /// The page limit.
        max: usize,
    },
    /// A `Link: rel="next"` pointing outside the configured base URL (the token is not sent).
    #[error("{request}: pagination link {url} leaves the API base URL")]
    ForeignLink {
        /// `METHOD path`.
        request: String,
        /// The link.
        url: String,
    },
    /// `ClientConfig::base_url` is not an absolute http(s) URL.
    #[error("the GitHub API base URL {url:?} is not an absolute http(s) URL")]
    InvalidBaseUrl {
        /// The configured value.
        url: String,
    },
    /// An App credential problem.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl Error {
    /// True when a retry may succeed: 5xx, network errors and rate limits.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Server { .. } | Error::Network { .. } | Error::RateLimited { .. }
        )
    }

    /// The HTTP status behind the error, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::Unprocessable { .. } => Some(422),
            Error::RateLimited { status, .. }
            | Error::Server { status, .. }
            | Error::Status { status, .. } => Some(*status),
            Error::Deadline { last, .. } => last.status(),
            _ => None,
        }
    }
}

/// A GitHub App credential problem.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The private key file could not be read.
    #[error("cannot read the GitHub App private key {path}")]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The private key is not an RSA PEM key. (The error never contains the key.)
    #[error("the GitHub App private key {path} is not an RSA PEM key")]
    BadKey {
        /// The file, or `<memory>`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Signing the JWT failed.
    #[error("cannot sign the GitHub App JWT")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The operation needs App credentials, not a personal access token.
    #[error("{0} needs GitHub App credentials; a personal access token cannot do it")]
    NotAnApp(&'static str),
}
