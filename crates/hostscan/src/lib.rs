//! `airlock scan host` and `airlock scan org`: grade a self-hosted runner machine, and a
//! GitHub organisation's runner settings, against the spec's 26-item "Runner Security
//! Checklist".
//!
//! - [`run_host`] evaluates every item on the machine (or on a filesystem tree given by
//!   `--root`) as pass, fail or unknown, with the reason and the evidence read. It never
//!   sends a packet: reachability is worked out from routes and firewall rules.
//! - [`run_org`] reads runner groups, runners and the default workflow permissions through
//!   GitHub's REST API; its results fill the items a host cannot answer
//!   ([`Report::merge_org`], or `scan host --org ORG`).
//!
//! Exit code: 0 when no item fails (pass and unknown only), 1 when any item fails. Errors
//! that stop a scan are [`HostScanError`]s (the CLI maps them to 2).

#![deny(missing_docs)]

pub mod checks;
mod error;
pub mod facts;
pub mod host;
pub mod net;
pub mod org;
pub mod render;
pub mod report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::SystemTime;

pub use error::HostScanError;
pub use host::{Commands, Host, LiveCommands, NoCommands};
pub use render::Format;
pub use report::{Evidence, ItemResult, Outcome, Report, ReportKind, Status, Summary};

/// When to colour plain output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// When standard output is a terminal.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Output options shared by `scan host` and `scan org`.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub format: Format,
    /// Shorthand for --format json.
    #[arg(long, conflicts_with_all = ["sarif", "markdown"])]
    pub json: bool,
    /// Shorthand for --format sarif.
    #[arg(long, conflicts_with = "markdown")]
    pub sarif: bool,
    /// Shorthand for --format markdown.
    #[arg(long)]
    pub markdown: bool,
    /// Colour plain output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

impl Default for OutputArgs {
    fn default() -> Self {
        Self {
            format: Format::Plain,
            json: false,
            sarif: false,
            markdown: false,
            color: ColorChoice::Never,
        }
    }
}

impl OutputArgs {
    /// The format chosen, shorthands first.
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else if self.sarif {
            Format::Sarif
        } else if self.markdown {
            Format::Markdown
        } else {
            self.format
        }
    }

    /// Whether to colour (auto: standard output is a terminal and `NO_COLOR` is unset).
    pub fn color(&self) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// The default GitHub API URL.
pub const GITHUB_API: &str = "https://api.github.com";

/// `airlock scan host`.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Scan this filesystem tree instead of the live machine; every file is read under it and
    /// no command is run.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Also read this GitHub organisation's runner settings (token from GITHUB_TOKEN or
    /// AIRLOCK_GITHUB_TOKEN) and fill the items only the API can answer.
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// GitHub REST API base URL (GitHub Enterprise Server: https://HOST/api/v3).
    #[arg(long, value_name = "URL", default_value = GITHUB_API)]
    pub api_url: String,
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `airlock scan org ORG`.
#[derive(Debug, Clone, clap::Args)]
pub struct OrgArgs {
    /// The organisation's login.
    pub org: String,
    /// GitHub REST API base URL (GitHub Enterprise Server: https://HOST/api/v3).
    #[arg(long, value_name = "URL", default_value = GITHUB_API)]
    pub api_url: String,
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Evaluates every checklist item on `host` as of `now`.
pub fn scan_host(host: &Host, now: SystemTime) -> Report {
    let facts = facts::Facts::gather(host, now);
    let items = checks::registry()
        .iter()
        .map(|c| ItemResult::new(c.meta(), c.evaluate(&facts)))
        .collect();
    Report::new(
        ReportKind::Host,
        host.canonical_root().display().to_string(),
        items,
    )
}

/// Reads `org` through the API at `api_url` and evaluates the org-level items.
pub fn scan_org(org: &str, api_url: &str, token: org::Token) -> Result<Report, HostScanError> {
    let client = org::Client::new(api_url, token)?;
    let data = client.fetch(org)?;
    Ok(org::evaluate(&data))
}

/// Runs `airlock scan host`: writes the report to `out`, returns the exit code (0 or 1).
pub fn run_host(args: &HostArgs, out: &mut dyn std::io::Write) -> Result<i32, HostScanError> {
    let host = Host::new(&args.root).map_err(|source| HostScanError::Root {
        path: args.root.clone(),
        source,
    })?;
    let mut report = scan_host(&host, SystemTime::now());
    if let Some(org) = &args.org {
        let token = org::token_from_env().ok_or(HostScanError::NoToken)?;
        report.merge_org(&scan_org(org, &args.api_url, token)?);
    }
    render::render(&report, args.output.format(), args.output.color(), out)
        .map_err(HostScanError::Write)?;
    Ok(report.exit_code())
}

/// Runs `airlock scan org`: writes the report to `out`, returns the exit code (0 or 1).
pub fn run_org(args: &OrgArgs, out: &mut dyn std::io::Write) -> Result<i32, HostScanError> {
    let token = org::token_from_env().ok_or(HostScanError::NoToken)?;
    let report = scan_org(&args.org, &args.api_url, token)?;
    render::render(&report, args.output.format(), args.output.color(), out)
        .map_err(HostScanError::Write)?;
    Ok(report.exit_code())
}
