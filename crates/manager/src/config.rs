//! `serve.toml`: how `airlock serve` listens, authenticates to GitHub and runs jobs.
//! Secrets are never written in this file: it names an environment variable or a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Secret;

/// The whole `serve.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address the webhook endpoint listens on (plain HTTP; put a TLS-terminating reverse
    /// proxy in front, docs/serve.md).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the webhook secret comes from. Absent: no webhook endpoint (every group is
    /// served by a scale set, or none is served).
    #[serde(default)]
    pub webhook_secret: Option<SecretSource>,
    /// GitHub settings.
    pub github: GitHubConfig,
    /// Name prefix of the runners airlock registers; runners without it are never deleted.
    #[serde(default = "default_prefix")]
    pub runner_prefix: String,
    /// At most this many runners at a time, all groups together.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    /// airlock's runtime state directory (the `--state-dir` of the `airlock run` children).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// airlock's data directory (image store, audit log, `serve.db`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The IPv4 range jobs' addresses come from (`airlock run --net-pool`); `None`: airlock's
    /// default, or `AIRLOCK_NET_POOL` in serve's environment.
    #[serde(default)]
    pub net_pool: Option<String>,
    /// The runner-group policy.
    pub policy: PathBuf,
    /// Largest webhook body accepted, in bytes (GitHub caps payloads at 25 MB; a
    /// `workflow_job` is a few KiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How often reconciliation runs, e.g. `"60s"`.
    #[serde(default = "default_reconcile", with = "humantime_serde_compat")]
    pub reconcile_interval: Duration,
    /// On SIGTERM, how long running jobs may go on before they are torn down.
    #[serde(default = "default_grace", with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// A job that is not `running` this long after it was queued is given up (its runner
    /// never picked a job up).
    #[serde(default = "default_pickup", with = "humantime_serde_compat")]
    pub pickup_timeout: Duration,
    /// Finished jobs, deliveries, runners and scale-set messages older than this are deleted
    /// from serve's database at each reconciliation (active ones never), e.g. `"30d"`.
    #[serde(default = "default_retention", with = "humantime_serde_compat")]
    pub state_retention: Duration,
    /// How scale-set listeners talk to GitHub's Actions service.
    #[serde(default)]
    pub scale_sets: ScaleSetSettings,
    /// Most of a runner's output (stdout and stderr together) kept in its work directory
    /// (`airlock run --max-output`); the rest is dropped and counted, so that a job printing
    /// without end cannot fill serve's state directory. E.g. `"16MiB"`.
    #[serde(default = "default_max_output")]
    pub max_output: airlock_policy::ByteSize,
    /// Most HTTP connections served at once (webhooks, health, metrics); more wait in the
    /// kernel's backlog.
    #[serde(default = "default_http_connections")]
    pub http_max_connections: usize,
    /// An HTTP connection on which nothing arrives this long is closed (half-sent requests,
    /// idle keep-alive), e.g. `"60s"`.
    #[serde(default = "default_http_idle", with = "humantime_serde_compat")]
    pub http_idle_timeout: Duration,
}

/// `[scale_sets]` of serve.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleSetSettings {
    /// Longest wait for one long poll (GitHub answers within about 50 s).
    #[serde(default = "default_ss_poll", with = "humantime_serde_compat")]
    pub poll_timeout: Duration,
    /// While another session holds a scale set (409), try again this often.
    #[serde(default = "default_ss_conflict", with = "humantime_serde_compat")]
    pub conflict_retry: Duration,
    /// Longest back-off after 5xx and network errors (jittered, doubling from 250 ms).
    #[serde(default = "default_ss_backoff", with = "humantime_serde_compat")]
    pub max_backoff: Duration,
    /// Longest wait for any call but the long poll.
    #[serde(default = "default_ss_request", with = "humantime_serde_compat")]
    pub request_timeout: Duration,
}

impl Default for ScaleSetSettings {
    fn default() -> Self {
        Self {
            poll_timeout: default_ss_poll(),
            conflict_retry: default_ss_conflict(),
            max_backoff: default_ss_backoff(),
            request_timeout: default_ss_request(),
        }
    }
}

fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_ss_poll() -> Duration {
    Duration::from_secs(70)
}
fn default_ss_conflict() -> Duration {
    Duration::from_secs(30)
}
fn default_ss_request() -> Duration {
    Duration::from_secs(30)
}
fn default_ss_backoff() -> Duration {
    Duration::from_secs(30)
}

/// Where a secret value comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretSource {
    /// An environment variable of `airlock serve` (e.g. set by systemd's `LoadCredential`).
    Env(String),
    /// A file (trailing newline removed); should be mode 0600 or 0400.
    File(PathBuf),
}

/// Whether runners are registered for the organisation or a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `/orgs/{org}/actions/runners/...` (needs "Self-hosted runners: write" on the org).
    Org,
    /// `/repos/{owner}/{repo}/actions/runners/...` (needs "Administration: write").
    Repo,
}

/// GitHub settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    /// REST API base URL.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// `org` or `repo`.
    #[serde(default = "default_level")]
    pub level: Level,
    /// The organisation (level `org`) or the owner (level `repo`).
    pub org: String,
    /// The repository name (level `repo` only).
    #[serde(default)]
    pub repo: Option<String>,
    /// GitHub App id (or client id): `123456` or `"123456"` (or `"Iv1.…"`).
    #[serde(default, deserialize_with = "string_or_number")]
    pub app_id: Option<String>,
    /// The App's installation id: `7890123` or `"7890123"`.
    #[serde(default, deserialize_with = "number_or_string")]
    pub installation_id: Option<u64>,
    /// The App's private key (PEM).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// Fallback: a personal access token from this source (no per-job tokens then).
    #[serde(default)]
    pub token: Option<SecretSource>,
    /// The web URL of the organisation or repository that scale sets register for (default:
    /// derived from `api_url`: `https://github.com/{org}`, or the GHES host).
    #[serde(default)]
    pub config_url: Option<String>,
}

impl GitHubConfig {
    /// The web URL scale sets register for: `config_url`, else `https://github.com/{org}`
    /// (or `/{org}/{repo}`), with the GHES host when `api_url` ends in `/api/v3`.
    pub fn registration_url(&self) -> String {
        if let Some(u) = &self.config_url {
            return u.trim_end_matches('/').to_owned();
        }
        let api = self.api_url.trim_end_matches('/');
        let web = if api == "https://api.github.com" {
            "https://github.com".to_owned()
        } else if let Some(h) = api.strip_suffix("/api/v3") {
            h.to_owned()
        } else {
            api.to_owned()
        };
        match (self.level, &self.repo) {
            (Level::Repo, Some(r)) => format!("{web}/{}/{r}", self.org),
            _ => format!("{web}/{}", self.org),
        }
    }
}

/// `serve.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A secret could not be read.
    #[error("secret {what}: {message}")]
    Secret {
        /// Which secret (never its value).
        what: String,
        /// Why.
        message: String,
    },
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8780))
}
fn default_prefix() -> String {
    "airlock-".to_owned()
}
fn default_concurrency() -> u32 {
    4
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/run/airlock")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/airlock")
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_http_connections() -> usize {
    256
}
fn default_http_idle() -> Duration {
    Duration::from_secs(60)
}
fn default_max_output() -> airlock_policy::ByteSize {
    airlock_policy::ByteSize(16 << 20)
}
fn default_reconcile() -> Duration {
    Duration::from_secs(60)
}
fn default_grace() -> Duration {
    Duration::from_secs(300)
}
fn default_pickup() -> Duration {
    Duration::from_secs(600)
}
fn default_api_url() -> String {
    "https://api.github.com".to_owned()
}
fn default_level() -> Level {
    Level::Org
}

/// Durations written for people (`"60s"`, `"5m"`).
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration {s:?} ({e}); write e.g. \"60s\""))
        })
    }
}

impl ServeConfig {
    /// Reads and checks a `serve.toml`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&src, path)
    }

    /// Parses and checks the text of a `serve.toml` (`path` names it in errors).
    pub fn parse(src: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let c: ServeConfig = toml::from_str(src).map_err(|e| invalid(e.to_string()))?;
        if c.max_concurrency == 0 {
            return Err(invalid("max_concurrency must be at least 1".into()));
        }
        if c.http_max_connections == 0 || c.http_idle_timeout.is_zero() {
            return Err(invalid(
                "http_max_connections and http_idle_timeout must be more than 0".into(),
            ));
        }
        if c.runner_prefix.len() < 3 {
            return Err(invalid(
                "runner_prefix must be at least 3 characters: it is how airlock recognises its own runners".into(),
            ));
        }
        if c.github.level == Level::Repo && c.github.repo.is_none() {
            return Err(invalid("github.level = \"repo\" needs github.repo".into()));
        }
        let app = c.github.app_id.is_some()
            && c.github.installation_id.is_some()
            && c.github.private_key.is_some();
        if !app && c.github.token.is_none() {
            return Err(invalid(
                "GitHub authentication: set github.app_id, github.installation_id and github.private_key, or github.token".into(),
            ));
        }
        Ok(c)
    }
}

impl SecretSource {
    /// Reads the value; `what` names it in errors.
    pub fn read(&self, what: &str) -> Result<Secret, ConfigError> {
        let err = |message: String| ConfigError::Secret {
            what: what.to_owned(),
            message,
        };
        let v = match self {
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| err(format!("environment variable {name} is not set")))?,
            SecretSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| err(format!("cannot read {}: {e}", p.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        };
        if v.is_empty() {
            return Err(err("empty".into()));
        }
        Ok(Secret::new(v))
    }
}

/// An id GitHub shows as a number, written either way in serve.toml.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Number(u64),
    Text(String),
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Id>::deserialize(d)?.map(|id| match id {
        Id::Number(n) => n.to_string(),
        Id::Text(t) => t,
    }))
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Id>::deserialize(d)? {
        None => Ok(None),
        Some(Id::Number(n)) => Ok(Some(n)),
        Some(Id::Text(t)) => t.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("installation_id {t:?} is not a number"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_checks() {
        let c = ServeConfig::parse(
            r#"
policy = "/etc/airlock/policy.toml"
webhook_secret = { env = "AIRLOCK_WEBHOOK_SECRET" }
[github]
org = "octo-org"
token = { file = "/etc/airlock/pat" }
"#,
            Path::new("serve.toml"),
        )
        .expect("valid");
        assert_eq!(c.runner_prefix, "airlock-");
        assert_eq!(c.max_concurrency, 4);
        assert_eq!(c.github.level, Level::Org);
        assert_eq!(c.listen.port(), 8780);
        assert_eq!(c.reconcile_interval, Duration::from_secs(60));
        let e = ServeConfig::parse(
            "policy = \"p\"\nwebhook_secret = { env = \"X\" }\n[github]\norg = \"o\"\n",
            Path::new("serve.toml"),
        )
        .expect_err("no auth");
        assert!(e.to_string().contains("authentication"), "{e}");
        let e = ServeConfig::parse(
            "policy = \"p\"\nwebhook_secret = \"inline\"\n[github]\norg = \"o\"\n",
            Path::new("serve.toml"),
        )
        .expect_err("inline secret refused");
        assert!(e.to_string().contains("serve.toml"), "{e}");
        // The listener's bounds cannot be switched off.
        for bad in ["http_max_connections = 0", "http_idle_timeout = \"0s\""] {
            let e = ServeConfig::parse(
                &format!(
                    "policy = \"p\"\n{bad}\n[github]\norg = \"o\"\ntoken = {{ env = \"T\" }}\n"
                ),
                Path::new("serve.toml"),
            )
            .expect_err(bad);
            assert!(e.to_string().contains("more than 0"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_config_without_webhook_secret_and_registration_urls() {
        let c = ServeConfig::parse(
            "policy = \"p\"\n[github]\norg = \"o\"\ntoken = { env = \"T\" }\n",
            Path::new("serve.toml"),
        )
        .expect("valid");
        assert!(c.webhook_secret.is_none());
        assert_eq!(c.github.registration_url(), "https://github.com/o");
        let mut g = c.github.clone();
        g.api_url = "https://ghe.example.com/api/v3".into();
        assert_eq!(g.registration_url(), "https://ghe.example.com/o");
        g.level = Level::Repo;
        g.repo = Some("r".into());
        assert_eq!(g.registration_url(), "https://ghe.example.com/o/r");
        g.config_url = Some("https://x.test/o/".into());
        assert_eq!(g.registration_url(), "https://x.test/o");
    }

    #[test]
    fn ids_are_accepted_as_numbers_or_strings() {
        for (app, inst) in [("123", "456"), ("\"123\"", "\"456\"")] {
            let c = ServeConfig::parse(
                &format!(
                    "policy = \"p\"\nwebhook_secret = {{ file = \"s\" }}\n[github]\norg = \"o\"\napp_id = {app}\ninstallation_id = {inst}\nprivate_key = \"k.pem\"\n"
                ),
                Path::new("serve.toml"),
            )
            .expect("valid");
            assert_eq!(c.github.app_id.as_deref(), Some("123"));
            assert_eq!(c.github.installation_id, Some(456));
        }
        let e = ServeConfig::parse(
            "policy = \"p\"\nwebhook_secret = { file = \"s\" }\n[github]\norg = \"o\"\napp_id = 1\ninstallation_id = \"x\"\nprivate_key = \"k.pem\"\n",
            Path::new("serve.toml"),
        )
        .expect_err("not a number");
        assert!(e.to_string().contains("installation_id"), "{e}");
    }

    #[test]
    fn the_packaged_example_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/serve.toml");
        let c = ServeConfig::from_file(&p).expect("packaging/serve.toml");
        assert_eq!(c.github.installation_id, Some(7890123));
        assert_eq!(c.shutdown_grace, Duration::from_secs(300));
        assert!(matches!(c.webhook_secret, Some(SecretSource::File(_))));
    }

    #[test]
    fn secret_from_file_and_env() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("s");
        std::fs::write(&f, "abc\n").expect("write");
        let s = SecretSource::File(f).read("webhook").expect("read");
        assert_eq!(s.expose(), "abc");
        assert_eq!(format!("{s:?}"), "***");
        let e = SecretSource::Env("AIRLOCK_TEST_SURELY_UNSET_VAR".into())
            .read("webhook")
            .expect_err("unset");
        assert!(e.to_string().contains("not set"));
    }
}
