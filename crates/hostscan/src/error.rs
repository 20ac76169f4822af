//! Errors of `scan host` and `scan org`.
//!
//! A check never fails the scan: what it cannot read becomes an `unknown` result with the
//! reason. These errors are for what stops a whole scan: an unusable `--root`, a missing token,
//! GitHub answering with an error, or the output not being writable.

use std::path::PathBuf;

/// Why a scan could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum HostScanError {
    /// `--root` is not a directory.
    #[error("--root {path}: not a readable directory")]
    Root {
        /// The root given.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// Neither `GITHUB_TOKEN` nor `AIRLOCK_GITHUB_TOKEN` is set.
    #[error("no GitHub token: set GITHUB_TOKEN or AIRLOCK_GITHUB_TOKEN (see docs/scan-host.md for the permissions it needs)")]
    NoToken,
    /// The organisation name cannot be used in a URL path.
    #[error("invalid organisation name {0:?}")]
    OrgName(String),
    /// `--api-url` is not an http(s) URL.
    #[error("invalid --api-url {0:?}: expected http:// or https://")]
    ApiUrl(String),
    /// The request did not get an HTTP answer (DNS, connect, TLS, timeout), or another
    /// failure of the GitHub client.
    #[error("GitHub API")]
    GitHub {
        /// What went wrong.
        #[source]
        source: Box<airlock_github::error::Error>,
    },
    /// The scan's runtime for the GitHub client could not start.
    #[error("starting the runtime of the GitHub client")]
    Runtime(#[source] std::io::Error),
    /// GitHub answered with a status other than 200.
    #[error("GET {url}: HTTP {status}: {message}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// GitHub's `message`, or the start of the body.
        message: String,
    },
    /// GitHub's answer is not the documented JSON.
    #[error("GET {url}: unexpected response body")]
    Body {
        /// The URL requested.
        url: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A `Link: rel="next"` pointed outside the API base URL; the token is never sent there.
    #[error("GET {url}: pagination link {next:?} leaves the API base URL; refusing to follow it")]
    ForeignLink {
        /// The URL requested.
        url: String,
        /// The link GitHub gave.
        next: String,
    },
    /// More pages than any organisation has (a loop in the `Link` headers).
    #[error("GET {url}: more than {max} pages; stopping")]
    TooManyPages {
        /// The first URL of the listing.
        url: String,
        /// The page limit.
        max: usize,
    },
    /// Writing the report failed.
    #[error("writing the report")]
    Write(#[source] std::io::Error),
}

impl From<airlock_github::error::Error> for HostScanError {
    /// GitHub's answers keep their status and message (the checks and people read them);
    /// everything else keeps the client's error as its source.
    fn from(e: airlock_github::error::Error) -> Self {
        use airlock_github::error::Error as E;
        let status = |request: String, status: u16, message: String| HostScanError::Status {
            url: request,
            status,
            message,
        };
        match e {
            E::Unauthorized { request, message } => status(request, 401, message),
            E::Forbidden { request, message } => status(request, 403, message),
            E::NotFound { request, message } => status(request, 404, message),
            E::Unprocessable { request, message } => status(request, 422, message),
            E::Server {
                request,
                status: s,
                message,
            }
            | E::Status {
                request,
                status: s,
                message,
            } => status(request, s, message),
            E::ForeignLink { request, url } => HostScanError::ForeignLink {
                url: request,
                next: url,
            },
            E::TooManyPages { request, max } => HostScanError::TooManyPages { url: request, max },
            other => HostScanError::GitHub {
                source: Box::new(other),
            },
        }
    }
}
