//! The `airlock` command: argument parsing and printing only. The work is done by the
//! library crates.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use airlock_job::{Engine, JobOutcome, JobReport, JobRequest};
use airlock_policy::LoadedPolicy;
use airlock_sandbox::helper::{self, HelperArgs};
use airlock_sandbox::image::ImageStore;
use airlock_sandbox::Paths;
use airlock_text::Escaped;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

/// airlock runs every self-hosted GitHub Actions job in a fresh, locked-down sandbox that is
/// destroyed afterwards.
#[derive(Parser)]
#[command(name = "airlock", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Global {
    /// Runtime state (job directories, executor state) [default: /run/airlock; for serve:
    /// serve.toml's `state_dir`, which this overrides].
    #[arg(long, global = true, env = "AIRLOCK_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Persistent data: the image store, the audit log, learned baselines, undelivered alerts
    /// [default: /var/lib/airlock; for serve: serve.toml's `data_dir`, which this overrides].
    #[arg(long, global = true, env = "AIRLOCK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// IPv4 range jobs' addresses come from, one /30 per job [default: 10.213.0.0/16; for
    /// serve: serve.toml's `net_pool`, which this overrides].
    #[arg(long, global = true, env = "AIRLOCK_NET_POOL")]
    net_pool: Option<String>,
}

const DEFAULT_STATE_DIR: &str = "/run/airlock";
const DEFAULT_DATA_DIR: &str = "/var/lib/airlock";
const DEFAULT_NET_POOL: &str = "10.213.0.0/16";

#[derive(Subcommand)]
enum Cmd {
    /// Run one command as a job in a fresh sandbox under a runner group's policy.
    ///
    /// The job's exit code becomes airlock's (124 on timeout, 125 if the job could not start,
    /// 128+N if killed by signal N). Output streams live.
    Run(RunArgs),
    /// Validate a policy, print its JSON Schema.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Import, list and remove root filesystem images (OCI image layouts).
    #[command(subcommand)]
    Image(ImageCmd),
    /// Verify and read the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// The runner manager: one JIT-registered ephemeral runner per job, each in its own
    /// sandbox, from GitHub runner scale sets (a long poll, no public endpoint) or
    /// `workflow_job` webhooks (docs/serve.md).
    Serve(ServeArgs),
    /// Remove everything crashed or killed airlock runs left behind (processes, mounts,
    /// cgroups, directories).
    Gc {
        /// Also end jobs whose airlock is still running: that airlock is asked to end its job
        /// (SIGTERM; it tears down and records the end itself, waited for up to 15 s), then
        /// whatever is left is torn down.
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attack fresh sandboxes with the spec's threat scenarios and an escape battery, in a
    /// sealed world of fake hosts; print what was blocked and detected.
    ///
    /// Exit code 0 if every attack was blocked (and detected where expected), 1 if any got
    /// through or an expected alert is missing, 2 if the drill could not run.
    Drill(DrillArgs),
    /// Check workflows, this host and a GitHub organisation against the security checklist.
    #[command(subcommand)]
    Scan(ScanCmd),
    /// Internal: the single-threaded helper that drives an executor.
    #[command(name = helper::SUBCOMMAND, hide = true)]
    Helper(HelperCli),
}

#[derive(Subcommand)]
enum ScanCmd {
    /// Audit GitHub Actions workflows and composite actions for self-hosted-runner risk,
    /// cross-checked against the runner-group policy with --policy.
    ///
    /// Exit code 0 if nothing above info was found, 11 low, 12 medium, 13 high, 14 critical
    /// (the highest severity found), 1 if the scan could not run.
    Workflows(airlock_scan::WorkflowsArgs),
    /// Evaluate the spec's runner-security checklist on this machine (or a tree under
    /// --root): each item pass, fail or unknown, with its evidence. Never probes the network.
    ///
    /// Exit code 0 if no item fails, 1 if any fails, 2 if the scan could not run.
    Host(airlock_hostscan::HostArgs),
    /// Audit a GitHub organisation's runner groups, runners and default token permissions
    /// (token from GITHUB_TOKEN or AIRLOCK_GITHUB_TOKEN).
    ///
    /// Exit code 0 if no item fails, 1 if any fails, 2 if the scan could not run.
    Org(airlock_hostscan::OrgArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Policy file (TOML). Without it, the built-in policy: one untrusted group, no
    /// pass-through variables, no secrets.
    #[arg(long, short = 'p', env = "AIRLOCK_POLICY")]
    policy: Option<PathBuf>,
    /// Runner group (default: the policy's default group).
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Directory copied into the job's workspace (/home/runner/work); the job's changes to it
    /// are discarded.
    #[arg(long, short = 'w')]
    workdir: Option<PathBuf>,
    /// TOML file of secret values (NAME = "value"); secrets not found there are read from
    /// airlock's environment.
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// Write the job report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Append every DNS query and connection of the job (JSON lines) to this file; the input
    /// of `airlock policy suggest`.
    #[arg(long)]
    egress_log: Option<PathBuf>,
    /// Do not print the one-line summary on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Copy at most this much of the job's output (stdout and stderr together, e.g. `16MiB`);
    /// the rest is drained, dropped and counted, and airlock says so. For a file that must
    /// not grow with whatever the job prints (airlock serve passes its `max_output`).
    /// Default: no limit (the output goes where you sent it).
    #[arg(long, value_name = "SIZE")]
    max_output: Option<airlock_policy::ByteSize>,
    /// Prime the sandbox: create it and read its protections back, then wait for these
    /// variables before the command starts. stdin must be a Unix socket (airlock serve holds
    /// the other end): airlock writes `r` there once the sandbox is ready and starts the
    /// command when a start frame with the values arrives; closing the socket retires the
    /// sandbox unused. The values are secrets (redacted, never in config.json). Libcontainer
    /// only; docs/serve.md, "Primed sandboxes".
    #[arg(long, value_name = "NAME")]
    late_env: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Args)]
struct DrillArgs {
    /// Policy file (TOML). Without it, the built-in policy.
    #[arg(long, short = 'p', env = "AIRLOCK_POLICY")]
    policy: Option<PathBuf>,
    /// Runner group to attack (default: the policy's default group).
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Run only these attacks (the positive control always runs).
    #[arg(long, num_args = 1.., value_name = "ATTACK")]
    only: Vec<String>,
    /// Keep the drill's directory (effective policy, job reports) and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// The serve configuration (docs/serve.md).
    #[arg(
        long,
        short = 'c',
        env = "AIRLOCK_SERVE_CONFIG",
        default_value = "/etc/airlock/serve.toml"
    )]
    config: PathBuf,
    /// Check everything serve needs without side effects — the configuration, the policy, the
    /// webhook secret, the GitHub credentials (App key parsed, token variable set), every
    /// group's image in the image store, the listen address — print a summary, and exit 1 if
    /// serve could not work.
    #[arg(long)]
    check: bool,
    /// With --check: also make one authenticated read call to GitHub (list the runners).
    #[arg(long, requires = "check")]
    online: bool,
    #[command(subcommand)]
    cmd: Option<ServeCmd>,
}

#[derive(Subcommand)]
enum ServeCmd {
    /// The runner scale sets of serve.toml's policy, at GitHub (docs/serve.md, "Scale sets").
    #[command(subcommand)]
    Scaleset(ScalesetCmd),
}

#[derive(Subcommand)]
enum ScalesetCmd {
    /// List the policy's scale sets as GitHub has them (id and statistics, or missing).
    Ls,
    /// Delete a scale set at GitHub; its runners go with it. Stop `airlock serve` first, or
    /// it creates the scale set again.
    Delete {
        /// The scale set's name (its `runs-on` label), as in the policy.
        name: String,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Check a policy file: prints "ok", or every error with file:line:col and a hint.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the policy format.
    Schema,
    /// Print the built-in policy as TOML.
    Default,
    /// Turn recorded egress (`airlock run --egress-log FILE`, best in `audit` mode) into the
    /// minimal allow-list for a group.
    Suggest {
        /// The egress log (JSON lines).
        #[arg(long = "from", value_name = "LOG")]
        from: PathBuf,
        /// Group name for the printed fragment.
        #[arg(long, default_value = "default")]
        group: String,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain and the head: detects edited, deleted, inserted or reordered
    /// records and a truncated tail. Exit 1 if anything is wrong.
    ///
    /// Also checks the retention anchor (records removed by retention are reported, not
    /// flagged) and checkpoints: airlock's own checkpoint file (DATA_DIR/audit.checkpoints.jsonl,
    /// when --log is not given) and every --checkpoint FILE. A missing or empty log fails
    /// unless --allow-empty. docs/audit.md says exactly what is and is not detected.
    Verify {
        /// Audit directory (default: DATA_DIR/audit).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// A file of checkpoint lines to check the log against: a sink's copy (the alerts
        /// JSON-lines file, or the webhook receiver's bodies one per line). Repeatable.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// The checkpoint key (default: DATA_DIR/keys/audit.key, if readable). Without a key
        /// MACs are not checked, and the output says so.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// A missing or empty log is not a failure (a fresh installation).
        #[arg(long)]
        allow_empty: bool,
    },
    /// Write a checkpoint of the current head to DATA_DIR/audit.checkpoints.jsonl now, and
    /// print it (e.g. from cron, to copy it somewhere the host cannot rewrite).
    Checkpoint {
        /// Audit directory (default: DATA_DIR/audit).
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Close the current segment (it becomes `audit.jsonl.<first sequence number of the
    /// next>`); the chain continues across it. Segments also rotate by themselves (policy
    /// `[audit] segment_bytes`, default 256 MiB).
    Rotate {
        /// Audit directory (default: DATA_DIR/audit).
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Print records, oldest first.
    Show {
        /// Audit directory (default: DATA_DIR/audit).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Only this job's records.
        #[arg(long)]
        job: Option<String>,
        /// Only records of this kind, or of kinds starting with it followed by a dot
        /// (`net` matches `net.dns`).
        #[arg(long)]
        kind: Option<String>,
        /// One JSON record per line.
        #[arg(long)]
        json: bool,
        /// One OCSF 1.4 event per line (Process, Network, DNS, HTTP, File System Activity,
        /// Detection Finding; records without an OCSF class are left out). docs/audit.md.
        #[arg(long, conflicts_with = "json")]
        ocsf: bool,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Import an OCI image layout (directory, .tar or .tar.gz); every blob is verified.
    Import {
        /// The layout directory or archive.
        source: PathBuf,
        /// Name to store it under (default: the layout's ref.name annotation).
        #[arg(long)]
        name: Option<String>,
        /// Refuse an image that unpacks to more than this (a job's images follow the
        /// policy's `[images] max_size`).
        #[arg(long, value_name = "SIZE", default_value = "16GiB")]
        max_size: airlock_policy::ByteSize,
        /// Keep the whole store under this (and a tenth of its filesystem free): pulled
        /// images no job runs on are removed first, least recently used first; if that is not
        /// enough the image is refused (a job's pulls follow `[images] max_store`).
        #[arg(long, value_name = "SIZE", default_value = "64GiB")]
        max_store: airlock_policy::ByteSize,
    },
    /// Pull an image from a registry (OCI distribution; anonymous, bearer-token or basic
    /// auth). Prints the pinned reference (`registry/repo@sha256:…`) to put in a policy.
    ///
    /// Every blob is verified against its digest while it streams; blobs the store has are
    /// not fetched again; nothing is visible until the layers are unpacked (with the same
    /// checks as `import`). Credentials: `--credentials FILE`, else `$DOCKER_CONFIG/config.json`
    /// or `~/.docker/config.json` (the `auths` of `docker login`); never on the command line.
    Pull {
        /// Image reference, e.g. `ghcr.io/actions/actions-runner:2.330.0` or `…@sha256:…`.
        reference: String,
        /// Platform to take from an image index.
        #[arg(long, default_value = "linux/amd64")]
        platform: airlock_registry::Platform,
        /// Name to store it under (default: the reference without its digest).
        #[arg(long)]
        name: Option<String>,
        /// A `config.json`-style credentials file (`{"auths": {"HOST": {"auth": …}}}`).
        #[arg(long, env = "AIRLOCK_REGISTRY_AUTH_FILE")]
        credentials: Option<PathBuf>,
        /// A registry (`host:port`) to speak plain HTTP to (a loopback test registry).
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure: Vec<String>,
        /// A PEM file of a CA to trust besides the system's (repeatable).
        #[arg(long = "ca-file", value_name = "PEM")]
        ca_files: Vec<PathBuf>,
        /// Refuse the image unless it carries a cosign signature by this public key (PEM).
        #[arg(long = "verify-key", value_name = "PEM")]
        verify_key: Option<PathBuf>,
        /// Refuse an image whose blobs, or what it unpacks to, are larger than this (a job's
        /// images follow the policy's `[images] max_size`).
        #[arg(long, value_name = "SIZE", default_value = "16GiB")]
        max_size: airlock_policy::ByteSize,
        /// Keep the whole store under this (and a tenth of its filesystem free): pulled
        /// images no job runs on are removed first, least recently used first; if that is not
        /// enough the image is refused (a job's pulls follow `[images] max_store`).
        #[arg(long, value_name = "SIZE", default_value = "64GiB")]
        max_store: airlock_policy::ByteSize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Scan an image for known vulnerabilities: its packages (dpkg, apk, rpm, npm lock
    /// files, Python) matched against the OSV data of `airlock image db update`.
    ///
    /// Exit code by the highest severity: 0 none, 11 low, 12 medium (and unknown), 13 high,
    /// 14 critical; 1 if the scan could not run. The result is recorded in the audit log
    /// (`image.scanned`), which `airlock scan host` reads.
    Scan {
        /// Image name or digest (`airlock image ls`).
        reference: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "plain")]
        format: ImageScanFormat,
        /// Also write a CycloneDX 1.5 JSON SBOM of the image to this file.
        #[arg(long, value_name = "FILE")]
        sbom: Option<PathBuf>,
    },
    /// The vulnerability data `image scan` reads (OSV, per ecosystem).
    #[command(subcommand)]
    Db(ImageDbCmd),
    /// List imported images.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove pulled images no job used for a while, and every blob, unpacked root
    /// filesystem and leftover of a killed pull or import that no image needs.
    ///
    /// Imported images are never removed by age (they cannot be fetched again); remove them
    /// with `airlock image rm`.
    Gc {
        /// Pulled images whose last job (or pull) is older than this go, e.g. `30d`.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        unused_for: std::time::Duration,
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image by name or digest.
    Rm {
        /// Name (`name:tag`) or digest.
        reference: String,
    },
}

/// Output of `airlock image scan`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ImageScanFormat {
    Plain,
    Json,
    Sarif,
}

#[derive(Subcommand)]
enum ImageDbCmd {
    /// Fetch OSV's archives (`<source>/<ecosystem>/all.zip`) into DATA/osv.
    Update {
        /// Where to fetch from (https://, or http:// to a loopback mirror).
        #[arg(long, default_value = airlock_imagescan::db::DEFAULT_SOURCE)]
        source: String,
        /// An ecosystem to fetch (repeatable); default: Debian, Ubuntu, Alpine, Rocky Linux,
        /// AlmaLinux, Red Hat, npm, PyPI.
        #[arg(long = "ecosystem")]
        ecosystems: Vec<String>,
    },
}

#[derive(Args)]
struct HelperCli {
    #[arg(long)]
    job_dir: PathBuf,
    #[arg(long)]
    id: String,
    #[arg(long)]
    executor: String,
    #[arg(long)]
    executor_root: PathBuf,
    #[arg(long)]
    scrub: Vec<String>,
    #[arg(long)]
    primed: bool,
}

fn main() -> ExitCode {
    // The helper must stay single-threaded: dispatch to it before anything else runs.
    let cli = Cli::parse();
    if let Cmd::Helper(h) = cli.cmd {
        return ExitCode::from(run_helper(h) as u8);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file (serve under systemd, `2>serve.log`) gets
        // plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // serve logs names that webhooks and jobs chose: every field value is escaped.
        .fmt_fields(airlock_text::log::escaped_fields())
        .init();
    match real_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed stdout (`airlock … | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // Errors can quote hostile input (an image entry, a workdir file name, a policy value).
            eprintln!("airlock: error: {}", Escaped(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

fn run_helper(h: HelperCli) -> i32 {
    let executor = match h.executor.parse::<airlock_policy::ExecutorKind>() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("airlock helper: {}", Escaped(&e.to_string()));
            return 2;
        }
    };
    helper::main(HelperArgs {
        job_dir: h.job_dir,
        id: h.id,
        executor,
        executor_root: h.executor_root,
        scrub: h.scrub,
        primed: h.primed,
    })
}

fn real_main(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    let paths = Paths {
        state: g
            .state_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        data: g
            .data_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
    };
    let net_pool = g
        .net_pool
        .clone()
        .unwrap_or_else(|| DEFAULT_NET_POOL.into());
    match cli.cmd {
        Cmd::Run(a) => cmd_run(a, paths, &net_pool),
        Cmd::Policy(p) => cmd_policy(p, &paths, &net_pool),
        Cmd::Image(i) => cmd_image(i, paths),
        Cmd::Audit(a) => cmd_audit(a, paths),
        Cmd::Drill(d) => cmd_drill(d, &paths),
        Cmd::Scan(s) => cmd_scan(s),
        Cmd::Serve(a) => cmd_serve(a, &cli.global),
        Cmd::Gc { force, json } => {
            let pool = paths.pool(&net_pool)?;
            let r = airlock_job::gc(&Engine::new(paths, pool)?, force);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for id in &r.removed {
                    println!("removed job {id}");
                }
                for id in &r.skipped_live {
                    println!("skipped job {id}: its airlock is still running (use --force)");
                }
                for e in &r.errors {
                    eprintln!("airlock: gc: {}", Escaped(&e.to_string()));
                }
                if r.removed.is_empty() && r.errors.is_empty() && r.skipped_live.is_empty() {
                    println!("nothing to collect");
                }
            }
            Ok(if r.errors.is_empty() { 0 } else { 1 })
        }
        Cmd::Helper(_) => unreachable!("dispatched in main"),
    }
}

fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (it creates mounts, cgroups and namespaces); run it with sudo");
    }
    Ok(())
}

/// stdin as the Unix socket a primed sandbox's gate is (`run --late-env`).
fn stdin_socket() -> Result<std::os::unix::net::UnixStream> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("--late-env: duplicating stdin")?;
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .context("--late-env: inspecting stdin")?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
        bail!(
            "--late-env: stdin must be a Unix socket (airlock serve's end of the sandbox's gate)"
        );
    }
    Ok(std::os::unix::net::UnixStream::from(fd))
}

fn cmd_run(a: RunArgs, paths: Paths, net_pool: &str) -> Result<u8> {
    let pool = paths.pool(net_pool)?;
    let engine = Engine::new(paths, pool)?;
    let request = JobRequest {
        policy: a.policy,
        group: a.group,
        command: a.command,
        workdir: a.workdir,
        secrets_file: a.secrets,
        egress_log: a.egress_log,
        late_env: a.late_env.clone(),
    };
    // The gate of a primed sandbox is stdin, which must be a socket (checked before the job
    // is recorded: a wrong invocation creates nothing).
    let gate = if a.late_env.is_empty() {
        None
    } else {
        Some(stdin_socket()?)
    };
    let group = request.group.clone();
    let job = match engine.prepare(request, &|n| std::env::var(n).ok()) {
        Ok(j) => j,
        Err(e) => {
            // A caller reading the report (serve, the drill) learns why, by kind.
            if let Some(p) = &a.report {
                let failure = airlock_job::Failure {
                    kind: e.kind(),
                    message: airlock_text::ErrorChain(&e).to_string(),
                };
                let report = JobReport::refused(group.as_deref(), failure);
                std::fs::write(p, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing report {}", p.display()))?;
            }
            return Err(e.into());
        }
    };
    let timeout = job.timeout();
    let (mut out, mut err): (Box<dyn Write + Send>, Box<dyn Write + Send>) =
        (Box::new(std::io::stdout()), Box::new(std::io::stderr()));
    let budget = a.max_output.map(|m| airlock_job::OutputBudget::new(m.0));
    if let Some(b) = &budget {
        out = b.writer(out);
        err = b.writer(err);
    }
    let report = match gate {
        Some(g) => engine.run_primed(&job, out, err, g)?,
        None => engine.run(&job, out, err)?,
    };
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing report {}", p.display()))?;
    }
    let mut err = std::io::stderr().lock();
    if std::io::IsTerminal::is_terminal(&err) {
        // The job's own output went to this terminal raw (colours, progress bars): whatever
        // state it left (hidden text, scroll region, alternate screen) must not hide what
        // airlock says next. Soft reset, leave the alternate screen, start a fresh line.
        let _ = write!(err, "\x1b[!p\x1b[?1049l\r\n");
    }
    print_outcome(&mut err, &report, timeout, a.quiet);
    if let Some(b) = budget.filter(|b| b.dropped() > 0) {
        let _ = writeln!(
            err,
            "airlock: the job's output was cut at {} bytes (--max-output); {} bytes dropped",
            b.limit(),
            b.dropped()
        );
    }
    for e in &report.teardown_errors {
        // What gc can retry (processes, mounts, cgroups, network) gets the hint; a broken
        // audit log or alert sink does not.
        let hint = if e.step.gc_can_retry() {
            " (run `airlock gc` to retry)"
        } else {
            ""
        };
        let _ = writeln!(err, "airlock: teardown: {}{hint}", Escaped(&e.to_string()));
    }
    // Alerts: a summary here, then the policy's sinks (the webhook gets a bounded time; what
    // it cannot deliver stays in the outbox for the next run).
    let _ = write!(err, "{}", airlock_audit::summary(&report.alerts));
    let outbox = engine.paths.alert_outbox();
    let delivery = engine.deliver(job, &report, ALERT_FLUSH);
    for e in &delivery.errors {
        let _ = writeln!(err, "airlock: alert sink: {}", Escaped(e));
    }
    if delivery.pending > 0 {
        let _ = writeln!(
            err,
            "airlock: {} alert(s) not delivered yet; kept in {}",
            delivery.pending,
            outbox.display()
        );
    }
    Ok(u8::try_from(report.exit_code().clamp(0, 255)).unwrap_or(125))
}

/// One line on how the job ended (with `quiet`, only when it did not end by itself).
fn print_outcome(
    err: &mut impl Write,
    report: &JobReport,
    timeout: std::time::Duration,
    quiet: bool,
) {
    let id = &report.id;
    let _ = match &report.outcome {
        JobOutcome::Failed(f) => {
            let hint = f
                .kind
                .hint()
                .map(|h| format!("\nairlock: hint: {h}"))
                .unwrap_or_default();
            writeln!(
                err,
                "airlock: job {id} did not run: {}{hint}",
                Escaped(&f.message)
            )
        }
        JobOutcome::TimedOut => writeln!(
            err,
            "airlock: job {id} killed: wall-clock timeout of {} expired",
            humantime::format_duration(timeout)
        ),
        JobOutcome::Interrupted(s) => writeln!(err, "airlock: job {id} stopped on signal {s}"),
        JobOutcome::Signaled(s) if !quiet => writeln!(
            err,
            "airlock: job {id} (group {}) killed by signal {s}{} in {} ms",
            report.group,
            if *s == 9 {
                " (memory limit or kill)"
            } else {
                ""
            },
            report.duration_ms
        ),
        JobOutcome::Exited(c) if !quiet => writeln!(
            err,
            "airlock: job {id} (group {}) exited {c} in {} ms",
            report.group, report.duration_ms
        ),
        _ => Ok(()),
    };
}

fn cmd_scan(s: ScanCmd) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    let (code, failed) = match s {
        ScanCmd::Workflows(a) => (
            airlock_scan::run_workflows(&a, &mut out).map_err(anyhow::Error::from),
            1,
        ),
        ScanCmd::Host(a) => (
            airlock_hostscan::run_host(&a, &mut out).map_err(anyhow::Error::from),
            2,
        ),
        ScanCmd::Org(a) => (
            airlock_hostscan::run_org(&a, &mut out).map_err(anyhow::Error::from),
            2,
        ),
    };
    match code {
        Ok(c) => Ok(u8::try_from(c.clamp(0, 255)).unwrap_or(failed)),
        Err(e) => {
            eprintln!("airlock: scan: {}", Escaped(&format!("{e:#}")));
            Ok(failed)
        }
    }
}

/// How long `airlock run` waits for the webhook sink after the job.
const ALERT_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Prints one progress line per attack on stderr.
struct DrillProgress {
    /// A line was started and not finished.
    open: bool,
}

impl airlock_drill::Progress for DrillProgress {
    fn started(&mut self, index: usize, total: usize, attack: &str) {
        self.open = true;
        eprint!("[{:>2}/{total}] {attack:<22} ", index + 1);
    }
    fn finished(&mut self, _: usize, _: usize, row: &airlock_drill::Row) {
        self.open = false;
        eprintln!(
            "{}{} ({:.1} s)",
            row.observed,
            if row.passed { "" } else { "  <- FAIL" },
            row.duration_ms as f64 / 1000.0
        );
    }
}

fn cmd_drill(d: DrillArgs, paths: &Paths) -> Result<u8> {
    // The drill moves this (still single-threaded) process into its own network namespace
    // before anything else starts.
    let mut opts =
        airlock_drill::DrillOptions::new(std::env::current_exe().context("locating airlock")?);
    opts.policy = d.policy;
    opts.group = d.group;
    opts.only = d.only;
    opts.keep = d.keep;
    let mut progress = DrillProgress { open: false };
    let result = airlock_drill::drill(&opts, &mut progress);
    if progress.open {
        eprintln!();
    }
    let report = match result {
        Ok(r) => r,
        Err(airlock_drill::DrillError::Interrupted) => {
            eprintln!("airlock: drill interrupted; everything it created was removed");
            return Ok(130);
        }
        Err(e) => return Err(e.into()),
    };
    if d.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("\n{}", report.render_table());
    }
    if let Some(k) = &report.kept {
        eprintln!("airlock: drill directory kept at {}", k.display());
    }
    // The host's audit log keeps the drill's result: `scan host` credits checklist item 26
    // from it. A drill that could not be recorded still reports what it found.
    if let Err(e) = record_drill(&report, paths) {
        eprintln!(
            "airlock: the drill's result was not written to the audit log in {}: {}",
            paths.audit().display(),
            Escaped(&e.to_string())
        );
    }
    Ok(if report.passed { 0 } else { 1 })
}

fn record_drill(r: &airlock_drill::DrillReport, paths: &Paths) -> Result<()> {
    use airlock_audit::payload::DrillCompleted;
    let attacks: Vec<&airlock_drill::Row> = r
        .rows
        .iter()
        .filter(|x| x.category != airlock_drill::attack::Category::Control)
        .collect();
    let got_through = r.succeeded().len();
    let payload = DrillCompleted {
        policy: (r.policy != "built-in").then(|| r.policy.clone()),
        group: r.group.clone(),
        attacks: attacks.len(),
        got_through,
        failed: r.rows.iter().filter(|x| !x.passed).count(),
        passed: r.passed,
        duration_ms: r.duration_ms,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut log = airlock_audit::AuditLog::open(&paths.audit())?;
    log.append_batch(vec![airlock_audit::Event::of(None, &payload)])?;
    Ok(())
}

fn cmd_serve(a: ServeArgs, g: &Global) -> Result<u8> {
    let mut config = airlock_manager::ServeConfig::from_file(&a.config)?;
    // The command line and the environment win over serve.toml, which wins over the defaults.
    let from = |given: bool| {
        if given {
            "--flag or environment"
        } else {
            "serve.toml or default"
        }
    };
    if let Some(d) = &g.state_dir {
        config.state_dir.clone_from(d);
    }
    if let Some(d) = &g.data_dir {
        config.data_dir.clone_from(d);
    }
    if let Some(p) = &g.net_pool {
        config.net_pool = Some(p.clone());
    }
    let policy = LoadedPolicy::from_file(&config.policy)?;
    if let Some(cmd) = a.cmd {
        return cmd_serve_scaleset(cmd, &config, &policy);
    }
    if let Some(s) = &config.webhook_secret {
        s.read("webhook_secret")?;
    }
    let mut seen = std::collections::BTreeMap::new();
    for (name, gr) in &policy.policy.groups {
        if let Some(ss) = &gr.scale_set {
            if let Some(other) = seen.insert(ss.name.clone(), name.clone()) {
                anyhow::bail!(
                    "{}: groups {other} and {name} both name scale set {:?}",
                    config.policy.display(),
                    ss.name
                );
            }
        }
    }
    if config.webhook_secret.is_none() && seen.is_empty() {
        anyhow::bail!(
            "{}: nothing to serve: set webhook_secret (webhook mode), or give a group of the policy a scale_set (docs/serve.md)",
            a.config.display()
        );
    }
    println!(
        "{}: ok: listen {}, GitHub {} ({:?} level, org {}), runner prefix {:?}, {} at a time",
        a.config.display(),
        config.listen,
        config.github.api_url,
        config.github.level,
        config.github.org,
        config.runner_prefix,
        config.max_concurrency
    );
    println!(
        "  state dir {} ({}), data dir {} ({}), address pool {} ({})",
        config.state_dir.display(),
        from(g.state_dir.is_some()),
        config.data_dir.display(),
        from(g.data_dir.is_some()),
        config.net_pool.as_deref().unwrap_or(DEFAULT_NET_POOL),
        from(g.net_pool.is_some()),
    );
    println!(
        "  webhooks: {}",
        if config.webhook_secret.is_some() {
            "on (POST /webhook)"
        } else {
            "off (no webhook_secret)"
        }
    );
    for (name, gr) in &policy.policy.groups {
        match &gr.scale_set {
            Some(ss) => println!(
                "  group {name}: {:?}, scale set {} in runner group {} (labels {:?}, {} warm, idle retired after {}, {} primed), repositories {:?}, max {} runners",
                gr.trust,
                Escaped(&ss.name),
                Escaped(&ss.runner_group),
                ss.labels,
                ss.min_idle,
                humantime::format_duration(ss.idle_retire.0),
                gr.prestart,
                gr.repositories,
                gr.max_runners
            ),
            None => println!(
                "  group {name}: {:?}, labels {:?}, repositories {:?}, max {} runners, {} primed",
                gr.trust, gr.labels, gr.repositories, gr.max_runners, gr.prestart
            ),
        }
    }
    let github = airlock_manager::RestGitHub::from_config(&config.github);
    if a.check {
        return check_serve(&config, &policy, github, a.online);
    }
    require_root("airlock serve")?;
    let github = github?;
    let exe = std::env::current_exe().context("locating the airlock binary")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(airlock_manager::serve(
        config,
        policy.policy,
        std::sync::Arc::new(github),
        exe,
    ))?;
    Ok(0)
}

/// `airlock serve scaleset ls|delete`.
fn cmd_serve_scaleset(
    cmd: ServeCmd,
    config: &airlock_manager::ServeConfig,
    policy: &LoadedPolicy,
) -> Result<u8> {
    let ServeCmd::Scaleset(cmd) = cmd;
    let github = airlock_manager::RestGitHub::from_config(&config.github)?;
    let opts = airlock_manager::ScaleSetOptions {
        api_url: config.github.api_url.clone(),
        registration_url: config.github.registration_url(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let sets: Vec<(String, String)> = policy
        .policy
        .groups
        .values()
        .filter_map(|g| g.scale_set.as_ref())
        .map(|s| (s.runner_group.clone(), s.name.clone()))
        .collect();
    match cmd {
        ScalesetCmd::Ls => {
            let list = rt
                .block_on(airlock_manager::list_scale_sets(&github, &opts, &sets))
                .map_err(|e| anyhow::anyhow!(e))?;
            if list.is_empty() {
                println!("the policy names no scale sets");
            }
            for (name, id, stats) in list {
                match id {
                    Some(id) => println!(
                        "{}\tid {id}\tassigned {}\trunning {}\trunners {}",
                        Escaped(&name),
                        stats.map(|s| s.total_assigned_jobs).unwrap_or(0),
                        stats.map(|s| s.total_running_jobs).unwrap_or(0),
                        stats.map(|s| s.total_registered_runners).unwrap_or(0)
                    ),
                    None => println!("{}\tmissing (airlock serve creates it)", Escaped(&name)),
                }
            }
            Ok(0)
        }
        ScalesetCmd::Delete { name } => {
            let group = sets
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(g, _)| g.clone())
                .unwrap_or_else(|| "Default".to_owned());
            match rt
                .block_on(airlock_manager::delete_scale_set(
                    &github, &opts, &group, &name,
                ))
                .map_err(|e| anyhow::anyhow!(e))?
            {
                Some(id) => {
                    println!("deleted scale set {} (id {id})", Escaped(&name));
                    Ok(0)
                }
                None => {
                    eprintln!(
                        "no scale set {} in runner group {}",
                        Escaped(&name),
                        Escaped(&group)
                    );
                    Ok(1)
                }
            }
        }
    }
}

/// The rest of `serve --check`: every problem is printed, then exit 1 if there was one.
fn check_serve(
    config: &airlock_manager::ServeConfig,
    policy: &LoadedPolicy,
    github: Result<airlock_manager::RestGitHub, airlock_manager::ConfigError>,
    online: bool,
) -> Result<u8> {
    let mut problems = Vec::new();
    if config.listen.ip().is_unspecified() {
        println!(
            "  warning: listen {} takes connections on every interface; docs/serve.md puts serve on loopback behind a TLS proxy",
            config.listen
        );
    }
    let store = ImageStore::new(config.data_dir.join("images"));
    for (name, g) in &policy.policy.groups {
        if let Some(c) = &g.containers {
            println!(
                "  group {name}: container jobs through the runner's container hooks (at most {} containers, {:.0}% of the limits; docs/containers.md)",
                c.max,
                c.share * 100.0
            );
        }
    }
    for (name, g) in &policy.policy.groups {
        if let airlock_policy::RootfsSource::Image(r) = &g.rootfs {
            if airlock_policy::registry_host(r).is_some() {
                // Pulled by the job's `airlock run` on first use (its start time counts it).
                if store.resolve(r).is_err() {
                    println!(
                        "  group {name}: image {} is pulled on first use",
                        Escaped(r)
                    );
                }
            } else if let Err(e) = store.resolve(r) {
                problems.push(format!("group {name}: image {r:?}: {e:#}"));
            }
        }
    }
    match github {
        Err(e) => problems.push(format!("GitHub credentials: {:#}", anyhow::Error::from(e))),
        Ok(gh) if online => {
            use airlock_manager::GitHub as _;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            match rt.block_on(gh.list_runners()) {
                Ok(r) => println!(
                    "  GitHub: reachable with these credentials ({} runners listed)",
                    r.len()
                ),
                Err(e) => problems.push(format!("GitHub: {e}")),
            }
        }
        Ok(_) => println!("  GitHub credentials: read (add --online to try them)"),
    }
    let sets: Vec<(String, String)> = policy
        .policy
        .groups
        .values()
        .filter_map(|g| g.scale_set.as_ref())
        .map(|s| (s.runner_group.clone(), s.name.clone()))
        .collect();
    if online && !sets.is_empty() {
        if let Ok(gh) = airlock_manager::RestGitHub::from_config(&config.github) {
            let opts = airlock_manager::ScaleSetOptions {
                api_url: config.github.api_url.clone(),
                registration_url: config.github.registration_url(),
                ..Default::default()
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            match rt.block_on(airlock_manager::list_scale_sets(&gh, &opts, &sets)) {
                Ok(list) => {
                    for (name, id, _) in list {
                        match id {
                            Some(id) => {
                                println!("  scale set {}: exists (id {id})", Escaped(&name))
                            }
                            None => println!(
                                "  scale set {}: missing; serve creates it at start",
                                Escaped(&name)
                            ),
                        }
                    }
                }
                Err(e) => problems.push(format!("scale sets: {e}")),
            }
        }
    }
    for p in &problems {
        println!("  error: {}", Escaped(p));
    }
    Ok(u8::from(!problems.is_empty()))
}

fn cmd_policy(p: PolicyCmd, paths: &Paths, net_pool: &str) -> Result<u8> {
    match p {
        PolicyCmd::Check { file } => match LoadedPolicy::from_file(&file) {
            Ok(lp) => {
                println!(
                    "{}: ok ({} group{}: {})",
                    file.display(),
                    lp.policy.groups.len(),
                    if lp.policy.groups.len() == 1 { "" } else { "s" },
                    lp.policy
                        .groups
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for w in lp.warnings() {
                    eprintln!("warning: {}", Escaped(&w));
                }
                Ok(0)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(1)
            }
        },
        PolicyCmd::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&airlock_policy::json_schema())?
            );
            Ok(0)
        }
        PolicyCmd::Suggest { from, group } => {
            let text = std::fs::read_to_string(&from)
                .with_context(|| format!("reading egress log {}", from.display()))?;
            let mut records = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let r: airlock_net::ConnRecord = serde_json::from_str(line).with_context(|| {
                    format!("{}:{}: not an egress record", from.display(), i + 1)
                })?;
                records.push(r);
            }
            print!(
                "{}",
                airlock_net::suggest::suggest(&records, Some(&paths.pool(net_pool)?))
                    .to_toml(&group)
            );
            Ok(0)
        }
        PolicyCmd::Default => {
            print!("{}", toml::to_string(&airlock_policy::builtin_policy())?);
            Ok(0)
        }
    }
}

fn cmd_audit(a: AuditCmd, paths: Paths) -> Result<u8> {
    match a {
        AuditCmd::Verify {
            log,
            json,
            checkpoints,
            key,
            allow_empty,
        } => cmd_verify(&paths, log, json, checkpoints, key, allow_empty),
        AuditCmd::Checkpoint { log } => {
            let dir = log.unwrap_or_else(|| paths.audit());
            let (key, file) = airlock_audit::checkpoint::paths(&paths.data);
            let mut l = airlock_audit::AuditLog::open(&dir)?;
            l.configure(airlock_audit::LogSettings {
                key: Some(airlock_audit::Key::load_or_create(&key)?),
                checkpoint_file: Some(file),
                ..airlock_audit::LogSettings::default()
            })?;
            let c = l.checkpoint_now("manual")?;
            println!("{}", String::from_utf8_lossy(&c.to_line()?));
            Ok(0)
        }
        AuditCmd::Rotate { log } => {
            let dir = log.unwrap_or_else(|| paths.audit());
            let mut l = airlock_audit::AuditLog::open(&dir)?;
            let seg = l.rotate()?;
            println!("{}: closed segment {}", dir.display(), seg.display());
            Ok(0)
        }
        AuditCmd::Show {
            log,
            job,
            kind,
            json,
            ocsf,
        } => {
            let dir = log.unwrap_or_else(|| paths.audit());
            let mut out = std::io::stdout().lock();
            for r in airlock_audit::read_all(&dir)? {
                if job.as_deref().is_some_and(|j| r.job.as_deref() != Some(j)) {
                    continue;
                }
                if let Some(k) = &kind {
                    if r.kind != *k && !r.kind.starts_with(&format!("{k}.")) {
                        continue;
                    }
                }
                if ocsf {
                    if let Some(ev) = airlock_audit::to_ocsf(&r) {
                        writeln!(out, "{}", serde_json::to_string(&ev)?)?;
                    }
                } else if json {
                    writeln!(out, "{}", serde_json::to_string(&r)?)?;
                } else {
                    // JSON escapes control characters but not bidi or zero-width ones: the
                    // whole line goes through the one escaping function.
                    writeln!(
                        out,
                        "{:>6} {} {:<18} {:<17} {}",
                        r.seq,
                        r.time_ms,
                        Escaped(&r.kind),
                        Escaped(r.job.as_deref().unwrap_or("-")),
                        Escaped(&r.data.to_string())
                    )?;
                }
            }
            Ok(0)
        }
    }
}

fn ms_to_utc(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn cmd_verify(
    paths: &Paths,
    log: Option<PathBuf>,
    json: bool,
    mut checkpoints: Vec<PathBuf>,
    key: Option<PathBuf>,
    allow_empty: bool,
) -> Result<u8> {
    let own_log = log.is_none();
    let dir = log.unwrap_or_else(|| paths.audit());
    let (default_key, own_file) = airlock_audit::checkpoint::paths(&paths.data);
    // airlock's own checkpoint file describes the data directory's log only. Once airlock
    // has a key it has been checkpointing: a missing file then means a deleted one (checked
    // below, when the log turns out not to be empty).
    let own_missing = own_log && !own_file.exists() && default_key.exists();
    if own_log && own_file.exists() && !checkpoints.contains(&own_file) {
        checkpoints.insert(0, own_file.clone());
    }
    let mut notes = Vec::new();
    let key = match key {
        Some(k) => Some(
            airlock_audit::Key::load(&k)
                .with_context(|| format!("reading the checkpoint key {}", k.display()))?,
        ),
        None if default_key.exists() => match airlock_audit::Key::load(&default_key) {
            Ok(k) => Some(k),
            Err(e) => {
                notes.push(format!("key not used: {e}"));
                None
            }
        },
        None => None,
    };
    let v = airlock_audit::verify_with(
        &dir,
        &airlock_audit::VerifyOptions {
            key,
            checkpoint_files: checkpoints,
            allow_empty,
        },
    )?;
    let mut v = v;
    if own_missing && !v.empty {
        v.problems.push(airlock_audit::Problem {
            file: own_file,
            line: 0,
            message: "airlock's checkpoint file is missing although its key exists: deleted?"
                .to_owned(),
        });
    }
    let ok = v.problems.is_empty();
    if json {
        println!(
            "{}",
            serde_json::json!({ "log": dir, "ok": ok, "records": v.records, "problems": v.problems, "verification": v, "notes": notes })
        );
        return Ok(if ok { 0 } else { 1 });
    }
    let d = dir.display();
    if v.empty && ok {
        println!("{d}: EMPTY: no audit records (accepted because of --allow-empty)");
    } else if ok {
        println!("{d}: ok ({} records, chain and head intact)", v.records);
    } else {
        println!("{d}: TAMPERED or NOT VERIFIED ({} records read)", v.records);
        for p in &v.problems {
            // Problems quote what the log holds (a job's strings): escaped.
            println!(
                "  {}:{}: {}",
                Escaped(&p.file.display().to_string()),
                p.line,
                Escaped(&p.message)
            );
        }
    }
    // What was checked, and what was not.
    if v.records > 0 {
        println!("  records {}..{}", v.first_seq, v.last_seq);
    }
    match &v.anchor {
        Some(a) => println!(
            "  retention: records 1..{} were removed by retention on {} (anchor MAC {})",
            a.seq,
            ms_to_utc(a.time_ms),
            match a.mac {
                airlock_audit::MacCheck::Valid => "verified",
                airlock_audit::MacCheck::NotChecked => "NOT checked: no key",
                _ => "INVALID",
            }
        ),
        None if v.records > 0 => {
            println!("  retention: nothing removed (the chain starts at record 1)")
        }
        None => {}
    }
    if v.stale_segments > 0 {
        println!(
            "  {} segment(s) older than the anchor skipped (an interrupted retention; removed at the next rotation)",
            v.stale_segments
        );
    }
    let c = &v.checkpoints;
    if c.files.is_empty() {
        println!(
            "  checkpoints: no checkpoint file given: a truncated tail with a recomputed head is NOT detectable (use --checkpoint FILE)"
        );
    } else {
        println!(
            "  checkpoints: {} read from {}; {} match the log, {} predate retention",
            c.read,
            c.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            c.matched,
            c.before_retention
        );
        match &v.key_id {
            Some(k) => println!("  MACs checked with key {k}: {} valid", c.mac_valid),
            None => {
                println!("  MACs NOT checked: no key (the checkpoints' own content was trusted)")
            }
        }
        match (c.newest_seq, c.newest_time_ms) {
            (Some(s), Some(t)) => println!(
                "  newest checkpoint: record {s} at {}; {} record(s) after it are covered by no checkpoint",
                ms_to_utc(t),
                c.uncovered
            ),
            _ => println!("  no checkpoint in the files: truncation is NOT detectable"),
        }
    }
    for n in notes {
        println!("  {n}");
    }
    Ok(if ok { 0 } else { 1 })
}

fn image_scan(
    store: &ImageStore,
    paths: &Paths,
    reference: &str,
    format: ImageScanFormat,
    sbom: Option<&Path>,
) -> Result<u8> {
    let img = store.resolve(reference)?;
    let root = store.rootfs_dir(&img.digest);
    let report = airlock_imagescan::scan(&img.name, &img.digest, &root, &paths.data.join("osv"));
    if let Some(p) = sbom {
        std::fs::write(p, serde_json::to_vec_pretty(&report.cyclonedx())?)
            .with_context(|| format!("writing the SBOM to {}", p.display()))?;
    }
    match format {
        ImageScanFormat::Plain => report.render_plain(&mut std::io::stdout())?,
        ImageScanFormat::Json => println!("{}", serde_json::to_string_pretty(&report.json())?),
        ImageScanFormat::Sarif => println!("{}", serde_json::to_string_pretty(&report.sarif())?),
    }
    let record = airlock_audit::payload::ImageScanned {
        image: img.name.clone(),
        digest: img.digest.clone(),
        packages: report.packages.len(),
        findings: report.findings.len(),
        max_severity: report.max_severity().map(|s| s.as_str().to_owned()),
        osv_entries: report.osv_entries_read,
    };
    let written = airlock_audit::AuditLog::open(&paths.audit())
        .and_then(|mut log| log.append_batch(vec![airlock_audit::Event::of(None, &record)]));
    if let Err(e) = written {
        eprintln!(
            "airlock: the scan was not recorded in the audit log: {}",
            Escaped(&e.to_string())
        );
    }
    Ok(report.exit_code())
}

/// Pull progress on a terminal: one line per blob, on stderr.
struct PullProgress {
    on: bool,
}

impl airlock_registry::Progress for PullProgress {
    fn blob(&mut self, index: usize, total: usize, digest: &str, size: u64, reused: bool) {
        if self.on {
            let short = digest.get(..19).unwrap_or(digest);
            let what = if reused { "already here" } else { "fetching" };
            eprintln!("[{index}/{total}] {short} {size} bytes: {what}");
        }
    }
}

/// `store` bounded for one more image of at most `max_size` under `max_store`, room made
/// first (each image removed for it is named on stderr).
fn room_for(store: ImageStore, max_size: u64, max_store: u64) -> Result<ImageStore> {
    let (store, room) = store.with_max_size(max_size).for_new_image(max_store)?;
    for n in &room.evicted {
        eprintln!(
            "airlock: removed {} from the image store to keep it under {max_store} bytes \
             (least recently used)",
            Escaped(n)
        );
    }
    Ok(store)
}

fn cmd_image(i: ImageCmd, paths: Paths) -> Result<u8> {
    let store = ImageStore::new(paths.images());
    match i {
        ImageCmd::Import {
            source,
            name,
            max_size,
            max_store,
        } => {
            require_root("airlock image import")?;
            let r = room_for(store, max_size.0, max_store.0)?.import(&source, name.as_deref())?;
            println!(
                "imported {} {} ({} layers)",
                Escaped(&r.name),
                r.digest,
                r.layers
            );
        }
        ImageCmd::Pull {
            reference,
            platform,
            name,
            credentials,
            insecure,
            ca_files,
            verify_key,
            max_size,
            max_store,
            json,
        } => {
            require_root("airlock image pull")?;
            let store = room_for(store, max_size.0, max_store.0)?;
            let opts = airlock_registry::PullOptions {
                platform,
                insecure,
                ca_files,
                credentials: credentials.or_else(airlock_registry::default_credentials),
                name,
                verify_key,
            };
            let mut progress = PullProgress {
                on: std::io::IsTerminal::is_terminal(&std::io::stderr()) && !json,
            };
            let p = airlock_registry::pull(&store, &reference, &opts, &mut progress)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                println!(
                    "pulled {} {} ({} layers, {} blobs fetched, {} bytes; {} already here)",
                    Escaped(&p.image.name),
                    p.image.digest,
                    p.image.layers,
                    p.fetched,
                    p.fetched_bytes,
                    p.reused
                );
                println!("pinned: {}", Escaped(&p.pinned));
            }
        }
        ImageCmd::Scan {
            reference,
            format,
            sbom,
        } => return image_scan(&store, &paths, &reference, format, sbom.as_deref()),
        ImageCmd::Db(ImageDbCmd::Update { source, ecosystems }) => {
            let ecosystems = if ecosystems.is_empty() {
                airlock_imagescan::db::DEFAULT_ECOSYSTEMS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            } else {
                ecosystems
            };
            for f in airlock_imagescan::db::update(&paths.data.join("osv"), &source, &ecosystems)? {
                println!(
                    "{}: {} entries ({} bytes)",
                    Escaped(&f.ecosystem),
                    f.entries,
                    f.bytes
                );
            }
        }
        ImageCmd::Ls { json } => {
            let all = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let when = |t: Option<u64>| match t {
                    Some(t) if t > 0 => humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
                    )
                    .to_string(),
                    _ => "never".to_owned(),
                };
                println!(
                    "{:<40} {:<20} {:>7} {:>12} {:>12} {:<20} {:<20} SIGNED",
                    "NAME", "DIGEST", "LAYERS", "SIZE", "UNPACKED", "PULLED/IMPORTED", "LAST USED"
                );
                for r in all {
                    println!(
                        "{:<40} {:<20} {:>7} {:>12} {:>12} {:<20} {:<20} {}",
                        // An image's name can come from its own index annotations.
                        Escaped(&r.name),
                        &r.digest[..r.digest.len().min(19)],
                        r.layers,
                        r.size,
                        r.unpacked.map_or("-".to_owned(), |u| u.to_string()),
                        when(Some(r.imported)),
                        when(r.last_used),
                        if r.verified.is_some() { "yes" } else { "-" }
                    );
                }
            }
        }
        ImageCmd::Gc {
            unused_for,
            dry_run,
            json,
        } => {
            let r = store.gc(unused_for, dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                for n in &r.images {
                    println!("{verb} {}", Escaped(n));
                }
                if !dry_run {
                    println!(
                        "removed {} blobs ({} bytes) and {} directories",
                        r.blobs, r.bytes, r.dirs
                    );
                }
            }
        }
        ImageCmd::Rm { reference } => {
            let r = store.remove(&reference)?;
            println!("removed {} {}", Escaped(&r.name), r.digest);
        }
    }
    Ok(0)
}
