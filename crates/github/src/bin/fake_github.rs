//! `airlock-fake-github`: serves the fake GitHub of `airlock_github::fake` for tests.
//! Prints `listening on http://<addr>` once bound, then serves until killed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use airlock_github::fake::{FakeConfig, FakeGitHub, WebhookTarget};
use anyhow::Context as _;
use clap::Parser;

/// A fake GitHub API, runner job service and webhook sender, for tests only.
#[derive(Debug, Parser)]
#[command(name = "airlock-fake-github", version)]
struct Args {
    /// Address to bind (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// URL written into JIT configs, when runners reach the fake by another name.
    #[arg(long)]
    public_url: Option<String>,
    /// App id expected in JWTs.
    #[arg(long, default_value = "12345")]
    app_id: String,
    /// The installation that exists.
    #[arg(long, default_value_t = 42)]
    installation_id: u64,
    /// The App's public key (PEM); without it JWT signatures are not checked.
    #[arg(long)]
    app_public_key: Option<PathBuf>,
    /// A personal access token to accept (repeatable).
    #[arg(long = "pat")]
    pats: Vec<String>,
    /// Lifetime of installation tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime_secs: u64,
    /// Largest page size served.
    #[arg(long, default_value_t = 100)]
    max_per_page: usize,
    /// Keep a JIT runner registered after its job (GitHub removes it).
    #[arg(long)]
    keep_runners_after_job: bool,
    /// Send workflow_job webhooks here.
    #[arg(long, requires = "webhook_secret_file")]
    webhook_url: Option<String>,
    /// File holding the webhook secret.
    #[arg(long)]
    webhook_secret_file: Option<PathBuf>,
    /// How long the scale-set message queue holds a poll before 202, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    poll_timeout_ms: u64,
    /// A scale-set session unused this long (ms) expires, as GitHub's do; 0: never.
    #[arg(long, default_value_t = 0)]
    session_expiry_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app_public_key_pem = match &args.app_public_key {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let webhook = match (&args.webhook_url, &args.webhook_secret_file) {
        (Some(url), Some(file)) => Some(WebhookTarget {
            url: url.clone(),
            secret: std::fs::read(file)
                .with_context(|| format!("reading {}", file.display()))?
                .trim_ascii()
                .to_vec(),
        }),
        _ => None,
    };
    let config = FakeConfig {
        app_id: args.app_id,
        installation_id: args.installation_id,
        app_public_key_pem,
        personal_tokens: args.pats,
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        max_per_page: args.max_per_page,
        public_url: args.public_url,
        remove_runner_after_job: !args.keep_runners_after_job,
        poll_timeout: Duration::from_millis(args.poll_timeout_ms),
        session_expiry: (args.session_expiry_ms > 0)
            .then(|| Duration::from_millis(args.session_expiry_ms)),
        webhook,
        ..FakeConfig::default()
    };
    let fake = FakeGitHub::start(args.listen, config)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", fake.url())?;
    out.flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
