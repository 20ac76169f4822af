//! The policy's data model. Every struct denies unknown fields: a typo in a policy must be an
//! error, never a silently ignored (and therefore weakened) setting.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole policy file: a set of runner groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Format version of the policy file. Only `1` exists.
    pub version: u32,
    /// The group used when a job does not name one. Defaults to the group named `default` if
    /// there is one, else the only group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_group: Option<String>,
    /// Runner groups by name.
    pub groups: BTreeMap<String, Group>,
    /// Detector thresholds; defaults when absent.
    #[serde(default)]
    pub detectors: Detectors,
    /// Alert sinks besides stderr; none when absent.
    #[serde(default)]
    pub alerts: Alerts,
    /// The audit log as a whole: retention and checkpoints (`[audit]`); defaults when absent.
    #[serde(default)]
    pub audit: AuditLogSettings,
    /// Where registry images of the groups may come from and how to reach them (`[images]`).
    #[serde(default)]
    pub images: ImageSettings,
}

/// `[images]`: registries images are pulled from on first use (docs/images.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// Registries (`host[:port]`) images may be pulled from. Empty: only the registries the
    /// groups' `rootfs` images name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<String>,
    /// A `config.json`-style credentials file (`{"auths": {"HOST": {"auth": …}}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<std::path::PathBuf>,
    /// Registries spoken to over plain HTTP (loopback mirrors only; never a remote one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure: Vec<String>,
    /// PEM files of CAs trusted for registries besides the system's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_files: Vec<std::path::PathBuf>,
    /// Signatures every registry image must carry (cosign); absent: none checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<ImageVerify>,
    /// Known vulnerabilities that refuse an image (`airlock image scan` before a job starts
    /// on it); absent: images are not scanned at job start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ImageScanPolicy>,
    /// The most one image may take in the store, downloaded and unpacked (a job names its
    /// images: they must not fill the host's disk); absent: 16 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    /// The most the whole store may take (blobs and unpacked images): before a job's pull,
    /// pulled images no job runs on are removed, least recently used first, to keep it under
    /// this and a tenth of its filesystem free; absent: 64 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_store: Option<ByteSize>,
}

/// `[images] scan = { max_severity = "high", ignore = [...] }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageScanPolicy {
    /// Findings at or above this (`low`, `medium`, `high`, `critical`; advisories without a
    /// severity count as `medium`) refuse the image.
    pub max_severity: String,
    /// Accepted vulnerabilities, each with its reason.
    #[serde(default)]
    pub ignore: Vec<IgnoredVulnerability>,
}

/// One accepted vulnerability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IgnoredVulnerability {
    /// `CVE-…`, `GHSA-…`, an OSV id or alias.
    pub id: String,
    /// Why it does not matter here.
    pub reason: String,
}

/// How registry images are verified (`[images] verify = { key = "…" }`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageVerify {
    /// A cosign public key (PEM, ECDSA P-256) the images must be signed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
    /// Keyless: the OIDC issuer of the signer's certificate. Not supported yet (it needs
    /// Fulcio and Rekor); a policy naming it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Keyless: the signer's identity. Not supported yet, as `issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// The registry host of an image reference (`ghcr.io/x/y:1` → `ghcr.io`), or `None` for a
/// name of the local store (`tiny:1`, `sha256:…`). As Docker reads it: the first component
/// is a registry when it has a `.` or `:` or is `localhost`.
pub fn registry_host(reference: &str) -> Option<&str> {
    let (first, rest) = reference.split_once('/')?;
    (!rest.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost"))
        .then_some(first)
}

/// How far the code that runs in a group is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Code from outside the repository's writers (public pull requests). The default.
    Untrusted,
    /// Code from the organisation's own writers.
    Trusted,
}

/// Where the job's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RootfsSource {
    /// The host's `/usr` read-only and a synthesized `/etc`; nothing else of the host.
    Host,
    /// An image of the store, named by `name[:tag]` or `sha256:<digest>`, or a registry
    /// reference (`registry/repo:tag`, `…@sha256:…`) pulled on first use.
    Image(String),
}

/// Which OCI runtime runs the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// youki's libcontainer, embedded in airlock (default).
    Libcontainer,
    /// The `runc` binary, through an OCI bundle.
    Runc,
    /// gVisor's `runsc`, through an OCI bundle (see docs/sandbox.md, "Executors", for its
    /// limits).
    Runsc,
}

impl ExecutorKind {
    /// Every executor, in the order the docs list them.
    pub const ALL: [ExecutorKind; 3] = [Self::Libcontainer, Self::Runc, Self::Runsc];

    /// The name written in policies, on the helper's command line, in state files and records
    /// (the one place it is spelled).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Libcontainer => "libcontainer",
            Self::Runc => "runc",
            Self::Runsc => "runsc",
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an executor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown executor {0:?}: expected libcontainer, runc or runsc")]
pub struct UnknownExecutor(pub String);

impl FromStr for ExecutorKind {
    type Err = UnknownExecutor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownExecutor(s.to_owned()))
    }
}

/// The unprivileged user a job runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobUser {
    /// Login name written to the sandbox's `/etc/passwd`.
    #[serde(default = "default_user_name")]
    pub name: String,
    /// Numeric uid; 0 (root) is refused.
    #[serde(default = "default_uid")]
    pub uid: u32,
    /// Numeric gid; 0 (root) is refused.
    #[serde(default = "default_uid")]
    pub gid: u32,
}

fn default_user_name() -> String {
    "runner".to_owned()
}
fn default_uid() -> u32 {
    1001
}

impl Default for JobUser {
    fn default() -> Self {
        Self {
            name: default_user_name(),
            uid: default_uid(),
            gid: default_uid(),
        }
    }
}

/// Resource limits of one job. All of them are always applied; there is no "unlimited".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory (cgroup memory limit, swap included where the kernel allows), e.g. `"2GiB"`.
    #[serde(default = "Limits::default_memory")]
    pub memory: ByteSize,
    /// Maximum number of processes and threads (cgroup pids limit).
    #[serde(default = "Limits::default_pids")]
    pub pids: u32,
    /// CPU time as a number of CPUs (cgroup CPU quota), e.g. `1.5`.
    #[serde(default = "Limits::default_cpus")]
    pub cpus: f64,
    /// Size of the writable layer: everything the job writes (`/`, `/tmp`, `/home/runner`,
    /// the workspace copy) shares this budget.
    #[serde(default = "Limits::default_disk")]
    pub disk: ByteSize,
    /// Wall-clock timeout, e.g. `"30m"`; the whole process tree is killed when it expires.
    #[serde(default = "Limits::default_timeout")]
    pub timeout: HumanDuration,
    /// Maximum open files per process (RLIMIT_NOFILE, soft = hard).
    #[serde(default = "Limits::default_nofile")]
    pub nofile: u64,
    /// Most connections the job's egress gateway holds open at once (DNS over TCP, HTTP,
    /// HTTPS and CONNECT together); one more is closed as soon as it is accepted. The gateway
    /// runs in airlock's own process, outside the job's cgroup: this bounds what a job's
    /// connections cost airlock (memory, open files).
    #[serde(default = "Limits::default_connections")]
    pub connections: u32,
    /// New flows per second the job's egress gateway takes in (connections accepted and DNS
    /// queries over UDP or TCP, all ports together), in bursts of up to twice as many; more wait in
    /// the kernel until their turn (slowed, not refused). Bounds the CPU a job's floods cost
    /// airlock, whose gateway runs outside the job's cgroup.
    #[serde(default = "Limits::default_flow_rate")]
    pub flow_rate: u32,
}

impl Limits {
    fn default_memory() -> ByteSize {
        ByteSize(2 << 30)
    }
    fn default_pids() -> u32 {
        512
    }
    fn default_cpus() -> f64 {
        1.0
    }
    fn default_disk() -> ByteSize {
        ByteSize(2 << 30)
    }
    fn default_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(3600))
    }
    fn default_nofile() -> u64 {
        1024
    }
    fn default_connections() -> u32 {
        1024
    }
    fn default_flow_rate() -> u32 {
        2000
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: Self::default_memory(),
            pids: Self::default_pids(),
            cpus: Self::default_cpus(),
            disk: Self::default_disk(),
            timeout: Self::default_timeout(),
            nofile: Self::default_nofile(),
            connections: Self::default_connections(),
            flow_rate: Self::default_flow_rate(),
        }
    }
}

/// One runner group: the trust level and everything a job of the group gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Trust level of the code that runs in this group.
    #[serde(default = "default_trust")]
    pub trust: Trust,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Root filesystem source: `"host"` or `{ image = "name:tag" }`.
    #[serde(default = "default_rootfs")]
    pub rootfs: RootfsSource,
    /// OCI runtime for this group's jobs.
    #[serde(default = "default_executor")]
    pub executor: ExecutorKind,
    /// The user jobs run as.
    #[serde(default)]
    pub user: JobUser,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Names of airlock's environment variables passed through to the job (explicit names
    /// only; no patterns). Everything else is removed.
    #[serde(default)]
    pub env: Vec<String>,
    /// Names of secrets injected into the job as environment variables. Values come from the
    /// secrets file (`--secrets`) or, failing that, airlock's own environment.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Network egress of the group's jobs.
    #[serde(default)]
    pub egress: Egress,
    /// Record every exec and every denied privileged call of the group's jobs in the audit
    /// log (seccomp user notification; docs/audit.md). Turning it off removes the records,
    /// not the denials. `runsc` cannot deliver these events and needs `false`.
    #[serde(default = "default_true")]
    pub process_events: bool,
    /// Programs (absolute paths inside the job) whose processes no other process of the job
    /// may read or write the memory of, like the job's entry process, which is always
    /// protected (docs/sandbox.md): e.g. the runner's `bin/Runner.Listener` and
    /// `bin/Runner.Worker`. A path that does not exist in the job refuses the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect: Vec<String>,
    /// Runner labels that route jobs to this group (what a workflow's `runs-on` names).
    /// `airlock serve` routes a queued job here only if every one of its labels, besides the
    /// generic `self-hosted`, `linux` and `x64`, is in this list; `airlock scan workflows
    /// --policy` uses the same list to tell which group a job lands in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Whether the group accepts jobs from public repositories (and so from forks' pull
    /// requests). Only an `untrusted` group should; `airlock scan workflows --policy` reports
    /// a trusted group that does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_public: bool,
    /// Repositories (`owner/name` globs, e.g. `octo-org/*`) whose jobs `airlock serve` may
    /// run in this group. Empty means none: a group serves no repository until it names one
    /// (`*/*` for all).
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Workflows allowed in this group (globs). The `workflow_job` webhook names a job's
    /// workflow only by its display name, so they are matched against
    /// `owner/name/<workflow name>`; GitHub's own runner-group `selected_workflows` is the
    /// authoritative check (docs/serve.md). Empty means any.
    #[serde(default)]
    pub workflows: Vec<String>,
    /// At most this many of the group's runners at a time under `airlock serve`.
    #[serde(default = "default_max_runners")]
    pub max_runners: u32,
    /// `airlock serve`: sandboxes kept *primed* for the group's next runners (webhook or
    /// scale set): created, checked and waiting, with no runner registered and nothing run in
    /// them. A new runner starts in one within milliseconds of serve's decision instead of
    /// paying the sandbox's start-up. Each holds a slot of serve's `max_concurrency` until it
    /// becomes a runner or is retired (a runner of another group that finds no free slot
    /// retires one). Libcontainer only; not with `token_permissions`. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prestart: u32,
    /// The runner command `airlock serve` runs in the group's sandbox. It reads its JIT
    /// configuration from the environment variable `ACTIONS_RUNNER_INPUT_JITCONFIG`.
    #[serde(default = "default_runner")]
    pub runner: Vec<String>,
    /// GitHub runner group (its numeric id) the group's runners are registered in.
    #[serde(default = "default_runner_group_id")]
    pub runner_group_id: u64,
    /// Permissions of the per-job installation token (`contents = "read"`, ...), narrowed to
    /// the job's repository and revoked when the job ends. Absent: no per-job token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_permissions: Option<BTreeMap<String, String>>,
    /// Bounds on what one job can make airlock record (docs/audit.md, "Floods"): rate limits
    /// per kind and key, caps per job, after which records are aggregated with their count.
    #[serde(default)]
    pub audit: AuditLimits,
    /// A registry `rootfs` image must be pinned by digest (`…@sha256:…`). Default: true for
    /// `trust = "trusted"`, false otherwise (`policy check` then warns on a bare tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_digest: Option<bool>,
    /// Serve this group through a GitHub runner scale set instead of webhooks (docs/serve.md,
    /// "Scale sets"): `airlock serve` long-polls GitHub for the set's jobs, no inbound
    /// endpoint needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_set: Option<ScaleSet>,
    /// Container jobs (`container:`, `services:`, `docker://` steps) through the runner's
    /// container hooks, each container in its own sandbox of this group (docs/containers.md).
    /// Absent: the runner gets no container API, and such jobs fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Containers>,
}

/// `containers = { … }` in a group: what a job may ask of its container API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Containers {
    /// Containers (job container, services, container steps) one job may have at a time; a
    /// script step or a health check is a transient sandbox besides them, one at a time.
    #[serde(default = "Containers::default_max")]
    pub max: u32,
    /// The part of the group's memory, pids and CPU limits the job's containers share; the
    /// runner keeps the rest. A job and its containers together never exceed the group's limits.
    #[serde(default = "Containers::default_share")]
    pub share: f64,
    /// Whether a container may run as root (uid 0) when its image or `--user` asks for it.
    /// Even then it has no capabilities and `no_new_privs`. Default: every container runs as
    /// the group's user.
    #[serde(default)]
    pub allow_root: bool,
    /// How long `prepare_job` waits for a service's health check to pass.
    #[serde(default = "Containers::default_health_timeout")]
    pub health_timeout: HumanDuration,
    /// The runner refuses jobs without `container:` (`ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER`),
    /// so every step of the group runs in a container of its own image.
    #[serde(default)]
    pub require_job_container: bool,
}

impl Containers {
    fn default_max() -> u32 {
        8
    }
    fn default_share() -> f64 {
        0.5
    }
    fn default_health_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(120))
    }
}

/// A runner scale set serving a group (`scale_set = { name = "airlock-ci" }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleSet {
    /// The scale set's name: the label workflows put in `runs-on`.
    pub name: String,
    /// More labels of the scale set (github.com allows several).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The GitHub runner group (by name) the scale set lives in.
    #[serde(default = "ScaleSet::default_runner_group")]
    pub runner_group: String,
    /// Runners kept started and waiting for a job (warm), each in its own fresh sandbox; a
    /// job then does not wait for the runner's own start-up. Counted in `max_runners`.
    #[serde(default)]
    pub min_idle: u32,
    /// Idle runners beyond what is needed (assigned jobs + `min_idle`) are retired after
    /// this long, e.g. `"5m"`.
    #[serde(default = "ScaleSet::default_idle_retire")]
    pub idle_retire: HumanDuration,
}

impl ScaleSet {
    fn default_runner_group() -> String {
        "Default".to_owned()
    }
    fn default_idle_retire() -> HumanDuration {
        HumanDuration(Duration::from_secs(300))
    }
}

impl Group {
    /// Whether a registry image of this group must carry a digest.
    pub fn requires_digest(&self) -> bool {
        self.require_digest.unwrap_or(self.trust == Trust::Trusted)
    }
}

/// Bounds on the records one job can cause (`audit = { … }` in a group). A job decides how
/// many denied calls, DNS queries, dropped packets, processes and files it makes; these keep
/// airlock's memory and the audit log bounded whatever it does. Past a bound, records are
/// aggregated (`audit.aggregated`: kind, key, count, time span), never dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLimits {
    /// Sustained records per second written one by one for one kind and key (a syscall
    /// name, a DNS name, a destination, a program): a token bucket refilled at this rate.
    #[serde(default = "AuditLimits::default_records_per_second")]
    pub records_per_second: u32,
    /// Records of one kind and key written one by one before the rate applies (the bucket's
    /// size).
    #[serde(default = "AuditLimits::default_burst")]
    pub burst: u32,
    /// Records written one by one for one job, all kinds together; past it everything the
    /// job causes is aggregated.
    #[serde(default = "AuditLimits::default_max_records")]
    pub max_records: u64,
    /// Bytes of records written one by one for one job (their data, as JSON), e.g. `"32MiB"`.
    #[serde(default = "AuditLimits::default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Distinct keys tracked per kind; further keys share one bucket, `(other)`.
    #[serde(default = "AuditLimits::default_max_keys")]
    pub max_keys: u32,
    /// Files the teardown scan lists one by one (persistence locations first); the rest are
    /// counted by category in the `file.scan` summary.
    #[serde(default = "AuditLimits::default_max_file_changes")]
    pub max_file_changes: u32,
    /// Aggregated records in one job that raise the `record-flood` alert (reaching
    /// `max_records` or `max_bytes` always does).
    #[serde(default = "AuditLimits::default_flood_alert")]
    pub flood_alert: u64,
}

impl AuditLimits {
    fn default_records_per_second() -> u32 {
        20
    }
    fn default_burst() -> u32 {
        500
    }
    fn default_max_records() -> u64 {
        50_000
    }
    fn default_max_bytes() -> ByteSize {
        ByteSize(32 << 20)
    }
    fn default_max_keys() -> u32 {
        256
    }
    fn default_max_file_changes() -> u32 {
        5_000
    }
    fn default_flood_alert() -> u64 {
        10_000
    }
}

impl Default for AuditLimits {
    fn default() -> Self {
        Self {
            records_per_second: Self::default_records_per_second(),
            burst: Self::default_burst(),
            max_records: Self::default_max_records(),
            max_bytes: Self::default_max_bytes(),
            max_keys: Self::default_max_keys(),
            max_file_changes: Self::default_max_file_changes(),
            flood_alert: Self::default_flood_alert(),
        }
    }
}

fn default_max_runners() -> u32 {
    4
}
fn default_runner() -> Vec<String> {
    vec!["/home/runner/actions-runner/run.sh".to_owned()]
}
fn default_runner_group_id() -> u64 {
    1
}

fn default_true() -> bool {
    true
}

/// How a group's egress is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// Only allow-listed names and CIDR:ports are reachable (default).
    #[default]
    Block,
    /// Everything but the never-reachable targets is allowed, and everything is recorded:
    /// run a group this way to learn its allow-list with `airlock policy suggest`.
    Audit,
    /// No network at all: the job's namespace has loopback only.
    None,
}

/// Egress rules of a group. Whatever the policy says, the cloud metadata endpoints, the host's
/// loopback and the host's own addresses are never reachable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// `block`, `audit` or `none`.
    #[serde(default)]
    pub mode: EgressMode,
    /// Domain patterns reachable over HTTP(S) and resolvable: `example.com` (exactly that
    /// name) or `*.example.com` (any name below it, not the name itself).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Named sets of domains: `github`, `package-registries`.
    #[serde(default)]
    pub presets: Vec<String>,
    /// Internal services reachable directly: `"CIDR:PORT"` or `"CIDR:PORT/udp"` (TCP by
    /// default), e.g. `"10.1.2.3/32:5432"`. The only way into RFC1918, CGNAT, link-local or
    /// ULA space.
    #[serde(default)]
    pub allow: Vec<String>,
    /// The upstream DNS resolver the gateway asks (`IP` or `IP:PORT`); default: the first
    /// `nameserver` of the host's /etc/resolv.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
}

fn default_trust() -> Trust {
    Trust::Untrusted
}
fn default_rootfs() -> RootfsSource {
    RootfsSource::Host
}
fn default_executor() -> ExecutorKind {
    ExecutorKind::Libcontainer
}

impl Default for Group {
    fn default() -> Self {
        Self {
            trust: default_trust(),
            description: None,
            rootfs: default_rootfs(),
            executor: default_executor(),
            user: JobUser::default(),
            limits: Limits::default(),
            env: Vec::new(),
            secrets: Vec::new(),
            egress: Egress::default(),
            process_events: true,
            protect: Vec::new(),
            labels: Vec::new(),
            allow_public: false,
            repositories: Vec::new(),
            workflows: Vec::new(),
            max_runners: default_max_runners(),
            prestart: 0,
            runner: default_runner(),
            runner_group_id: default_runner_group_id(),
            token_permissions: None,
            audit: AuditLimits::default(),
            require_digest: None,
            scale_set: None,
            containers: None,
        }
    }
}

/// A size in bytes, written as `"512MiB"`, `"2GB"` or a plain integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| ByteSize(b.as_u64()))
            .map_err(|e| format!("invalid size {s:?} ({e}); write it like \"512MiB\" or \"2GiB\""))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a size such as \"512MiB\" or an integer of bytes")
        })? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: an integer of bytes or a string such as \"512MiB\" or \"2GB\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9.]+\\s*[A-Za-z]*\\s*$" }
            ]
        })
    }
}

/// A duration written for people: `"90s"`, `"30m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); write it like \"90s\", \"30m\" or \"1h 30m\""
                ))
            })
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration such as \"90s\", \"30m\" or \"1h 30m\".",
            "type": "string"
        })
    }
}

/// Thresholds of the detectors that run over each job's audit records (`[detectors]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Detectors {
    /// `network-scan`: how many distinct denied destinations within how long make a scan.
    #[serde(default)]
    pub network_scan: NetworkScan,
    /// `dns-tunnelling`: how many distinct names below one parent domain in one job.
    #[serde(default)]
    pub dns_tunnelling: DnsTunnelling,
    /// `new-destination`: alert on domains a group has never used before (learned baseline).
    #[serde(default = "yes")]
    pub new_destination: bool,
}

fn yes() -> bool {
    true
}

impl Default for Detectors {
    fn default() -> Self {
        Self {
            network_scan: NetworkScan::default(),
            dns_tunnelling: DnsTunnelling::default(),
            new_destination: true,
        }
    }
}

/// Thresholds of the `network-scan` detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkScan {
    /// Distinct denied destinations (address or name, and port) that make a scan.
    #[serde(default = "NetworkScan::default_destinations")]
    pub destinations: u32,
    /// The sliding window they must fall in, e.g. `"10s"`.
    #[serde(default = "NetworkScan::default_window")]
    pub window: HumanDuration,
}

impl NetworkScan {
    fn default_destinations() -> u32 {
        10
    }
    fn default_window() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
}

impl Default for NetworkScan {
    fn default() -> Self {
        Self {
            destinations: Self::default_destinations(),
            window: Self::default_window(),
        }
    }
}

/// Thresholds of the `dns-tunnelling` detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsTunnelling {
    /// Distinct names queried below one parent domain in one job that make a tunnel.
    #[serde(default = "DnsTunnelling::default_subdomains")]
    pub subdomains: u32,
}

impl DnsTunnelling {
    fn default_subdomains() -> u32 {
        20
    }
}

impl Default for DnsTunnelling {
    fn default() -> Self {
        Self {
            subdomains: Self::default_subdomains(),
        }
    }
}

/// Where alerts go besides the summary on stderr (`[alerts]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// A JSON-lines file every alert is appended to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<std::path::PathBuf>,
    /// An HTTP(S) endpoint every alert is POSTed to, signed with HMAC-SHA256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// The webhook alert sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `https://…` (plain `http://` only to a loopback address).
    pub url: String,
    /// Name of the secret (secrets file or airlock's environment) holding the HMAC key.
    pub secret: String,
    /// Timeout of one delivery attempt.
    #[serde(default = "Webhook::default_timeout")]
    pub timeout: HumanDuration,
    /// Attempts after the first one, with exponential back-off.
    #[serde(default = "Webhook::default_retries")]
    pub retries: u32,
}

impl Webhook {
    fn default_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    fn default_retries() -> u32 {
        5
    }
}

/// The audit log as a whole (`[audit]`): how much of it is kept, and how often its head is
/// checkpointed (docs/audit.md, "Retention" and "Checkpoints").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSettings {
    /// All segments together; the oldest closed segments are deleted beyond it.
    #[serde(default = "AuditLogSettings::default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Closed segments whose newest record is older than this are deleted.
    #[serde(default = "AuditLogSettings::default_max_age")]
    pub max_age: HumanDuration,
    /// The current segment is closed at this size (default: the smaller of 256 MiB and a
    /// quarter of `max_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<ByteSize>,
    /// A checkpoint at least every this many records (and at every job end).
    #[serde(default = "AuditLogSettings::default_checkpoint_records")]
    pub checkpoint_records: u64,
    /// A checkpoint at the first append this long after the previous one.
    #[serde(default = "AuditLogSettings::default_checkpoint_interval")]
    pub checkpoint_interval: HumanDuration,
}

impl AuditLogSettings {
    fn default_max_bytes() -> ByteSize {
        ByteSize(4 << 30)
    }
    fn default_max_age() -> HumanDuration {
        HumanDuration(Duration::from_secs(90 * 86400))
    }
    fn default_checkpoint_records() -> u64 {
        1000
    }
    fn default_checkpoint_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    /// The size at which the current segment is closed.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
            .map(|b| b.0)
            .unwrap_or_else(|| (256 << 20).min(self.max_bytes.0 / 4))
            .max(1)
    }
}

impl Default for AuditLogSettings {
    fn default() -> Self {
        Self {
            max_bytes: Self::default_max_bytes(),
            max_age: Self::default_max_age(),
            segment_bytes: None,
            checkpoint_records: Self::default_checkpoint_records(),
            checkpoint_interval: Self::default_checkpoint_interval(),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
