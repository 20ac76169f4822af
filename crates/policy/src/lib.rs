//! airlock's runner-group policy: the TOML format, its validation (every error with
//! file:line:col and a hint), the built-in default policy, the JSON Schema, and secret
//! resolution.
#![deny(missing_docs)]

mod egress;
mod secrets;
mod types;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub mod endpoints;
pub use egress::{AllowRule, DomainPattern, EgressRules, Proto, PRESETS};
pub use secrets::{resolve_secrets, Secret, SecretsError, MIN_SECRET_LEN};
pub use types::*;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// Name of the group in the built-in policy.
pub const BUILTIN_GROUP: &str = "default";

/// The most primed sandboxes a group may keep (`prestart`).
pub const MAX_PRESTART: u32 = 8;

/// Most concurrent gateway connections a group may allow (`limits.connections`): each costs
/// airlock two open files and some memory, outside the job's own limits.
pub const MAX_CONNECTIONS: u32 = 65_536;

/// Bounds of `limits.flow_rate` (new gateway flows a second): below ten a job's own stub
/// resolver would time out; above a million it bounds nothing.
pub const MIN_FLOW_RATE: u32 = 10;
/// See [`MIN_FLOW_RATE`].
pub const MAX_FLOW_RATE: u32 = 1_000_000;

/// One problem in a policy file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The policy file (or `<builtin>`).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, where we can say.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Errors of the policy component.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read policy file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The policy file has errors; all of them are listed.
    #[error("{}", display_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
    /// A job asked for a group the policy does not have.
    #[error("no runner group named {name:?} in {source_name}; groups: {}", .available.join(", "))]
    NoSuchGroup {
        /// The group asked for.
        name: String,
        /// Where the policy came from.
        source_name: String,
        /// The groups there are.
        available: Vec<String>,
    },
}

fn display_diagnostics(d: &[Diagnostic]) -> String {
    let mut s = d
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    s.push_str(&format!(
        "\n{} error{} in policy",
        d.len(),
        if d.len() == 1 { "" } else { "s" }
    ));
    s
}

/// A policy together with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// The policy.
    pub policy: Policy,
    /// The file it was read from, or `None` for the built-in policy.
    pub path: Option<PathBuf>,
    /// SHA-256 (hex) of the policy's text: the file's bytes as read, or what
    /// `airlock policy default` prints. Recorded with every job, so a changed policy shows.
    pub sha256: String,
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

impl LoadedPolicy {
    /// The built-in policy: one group, `default`, the most restrictive settings airlock has.
    pub fn builtin() -> Self {
        let policy = builtin_policy();
        // A builtin policy that cannot be printed cannot happen (its types all serialise);
        // the empty text's digest would still name it consistently.
        let text = toml::to_string(&policy).unwrap_or_default();
        Self {
            policy,
            path: None,
            sha256: sha256_hex(text.as_bytes()),
        }
    }

    /// Reads and validates a policy file.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let src = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let policy = parse(&src, path)?;
        Ok(Self {
            policy,
            path: Some(path.to_owned()),
            sha256: sha256_hex(src.as_bytes()),
        })
    }

    fn source_name(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "the built-in policy".to_owned(),
        }
    }

    /// Resolves the group a job runs in: the named one, or the policy's default.
    pub fn group(&self, name: Option<&str>) -> Result<(String, &Group), PolicyError> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => self.policy.default_group_name().unwrap_or_default(),
        };
        self.policy
            .groups
            .get(&name)
            .map(|g| (name.clone(), g))
            .ok_or_else(|| PolicyError::NoSuchGroup {
                name,
                source_name: self.source_name(),
                available: self.policy.groups.keys().cloned().collect(),
            })
    }
}

/// Labels every airlock runner carries; they never select a group (`airlock serve` and
/// `airlock scan workflows --policy` both route with [`selecting_labels`] and
/// [`Group::takes_labels`], so the scanner predicts exactly what serve does).
pub const GENERIC_LABELS: &[&str] = &["self-hosted", "linux", "x64"];

/// The labels of a job's `runs-on` that select a runner group: all but [`GENERIC_LABELS`].
pub fn selecting_labels<S: AsRef<str>>(labels: &[S]) -> Vec<String> {
    labels
        .iter()
        .map(AsRef::as_ref)
        .filter(|l| !GENERIC_LABELS.iter().any(|g| g.eq_ignore_ascii_case(l)))
        .map(str::to_owned)
        .collect()
}

impl Group {
    /// Whether the group takes a job with these selecting labels: there is at least one, and
    /// every one is among the group's `labels` (case-insensitive, as GitHub compares them).
    pub fn takes_labels<S: AsRef<str>>(&self, selecting: &[S]) -> bool {
        !selecting.is_empty()
            && selecting.iter().all(|l| {
                self.labels
                    .iter()
                    .any(|gl| gl.eq_ignore_ascii_case(l.as_ref()))
            })
    }
}

impl Policy {
    /// The name of the group used when a job names none.
    pub fn default_group_name(&self) -> Option<String> {
        if let Some(d) = &self.default_group {
            return Some(d.clone());
        }
        if self.groups.contains_key(BUILTIN_GROUP) {
            return Some(BUILTIN_GROUP.to_owned());
        }
        if self.groups.len() == 1 {
            return self.groups.keys().next().cloned();
        }
        None
    }
}

/// The built-in policy (also written out in `docs/policy.md`).
pub fn builtin_policy() -> Policy {
    let mut groups = BTreeMap::new();
    groups.insert(
        BUILTIN_GROUP.to_owned(),
        Group {
            description: Some("built-in: untrusted, no pass-through, no secrets".to_owned()),
            limits: Limits {
                memory: ByteSize(1 << 30),
                pids: 256,
                cpus: 1.0,
                disk: ByteSize(1 << 30),
                timeout: HumanDuration(std::time::Duration::from_secs(30 * 60)),
                nofile: 1024,
                connections: 1024,
                flow_rate: 2000,
            },
            ..Group::default()
        },
    );
    Policy {
        version: 1,
        default_group: Some(BUILTIN_GROUP.to_owned()),
        groups,
        detectors: Detectors::default(),
        alerts: Alerts::default(),
        audit: AuditLogSettings::default(),
        images: ImageSettings::default(),
    }
}

/// The JSON Schema of the policy format.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Policy)).unwrap_or(serde_json::Value::Null)
}

/// Top level without `groups`, which are deserialized one by one so that every group's errors
/// are reported, not only the first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    version: Option<Spanned<u32>>,
    default_group: Option<Spanned<String>>,
    detectors: Option<Spanned<Detectors>>,
    alerts: Option<Spanned<Alerts>>,
    audit: Option<Spanned<AuditLogSettings>>,
    images: Option<Spanned<ImageSettings>>,
}

struct Collector<'a> {
    src: &'a str,
    file: &'a Path,
    diags: Vec<Diagnostic>,
}

impl Collector<'_> {
    fn push(&mut self, span: Option<Range<usize>>, message: impl Into<String>, hint: Option<&str>) {
        let (line, col) = line_col(self.src, span.map(|s| s.start).unwrap_or(0));
        self.diags.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            col,
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }

    fn push_toml(&mut self, e: &toml::de::Error) {
        let msg = e.message().trim().to_owned();
        let hint = hint_for(&msg);
        self.push(e.span(), msg, hint);
    }
}

fn hint_for(msg: &str) -> Option<&'static str> {
    if msg.contains("unknown field") {
        Some("unknown keys are errors so that a typo never weakens a policy; check the spelling against `airlock policy schema`")
    } else if msg.contains("invalid size") || msg.contains("expected a size") {
        Some("sizes take binary or decimal units: \"512MiB\", \"2GiB\", \"1GB\"")
    } else if msg.contains("invalid duration") {
        Some("durations look like \"90s\", \"30m\", \"1h 30m\"")
    } else if msg.contains("unknown variant") {
        Some("see `airlock policy schema` for the allowed values")
    } else if msg.contains("missing field") {
        Some("add the field; see `airlock policy schema`")
    } else {
        None
    }
}

/// 1-based line and character column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Parses and validates a policy. `file` is used only for error positions.
pub fn parse(src: &str, file: &Path) -> Result<Policy, PolicyError> {
    let mut c = Collector {
        src,
        file,
        diags: Vec::new(),
    };
    let (doc, errors) = DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        for e in &errors {
            c.push_toml(e);
        }
        return Err(PolicyError::Invalid(c.diags));
    }
    let doc_span = doc.span();
    let mut top = DeTable::new();
    let mut groups_value: Option<Spanned<DeValue<'_>>> = None;
    for (k, v) in doc.into_inner() {
        if k.get_ref().as_ref() == "groups" {
            groups_value = Some(v);
        } else {
            top.insert(k, v);
        }
    }
    let top: Option<TopLevel> = match TopLevel::deserialize(toml::de::Deserializer::from(
        Spanned::new(doc_span.clone(), top),
    )) {
        Ok(t) => Some(t),
        Err(e) => {
            c.push_toml(&e);
            None
        }
    };

    let mut groups = BTreeMap::new();
    // Every group name, parsed or not, so a broken group does not also make
    // `default_group` look dangling.
    let mut all_names = Vec::new();
    match groups_value {
        None => c.push(
            Some(doc_span.start..doc_span.start),
            "missing table `groups`",
            Some("a policy needs at least one group, e.g. [groups.default]"),
        ),
        Some(gv) => {
            let span = gv.span();
            match gv.into_inner() {
                DeValue::Table(t) => {
                    for (name, value) in t {
                        let name_span = name.span();
                        let name = name.into_inner().into_owned();
                        check_name(&mut c, &name, name_span.clone(), "group");
                        all_names.push(name.clone());
                        let audit_at = audit_spans(&value);
                        match Group::deserialize(ValueDeserializer::from(value)) {
                            Ok(g) => {
                                validate_group(&mut c, &name, &g, name_span.clone());
                                validate_audit(&mut c, &name, &g.audit, &audit_at, &name_span);
                                groups.insert(name, g);
                            }
                            Err(e) => c.push_toml(&e),
                        }
                    }
                    if all_names.is_empty() {
                        c.push(
                            Some(span),
                            "`groups` is empty",
                            Some("define at least one group, e.g. [groups.default]"),
                        );
                    }
                }
                other => c.push(
                    Some(span),
                    format!("`groups` must be a table, found {}", other.type_str()),
                    Some("write groups as [groups.NAME] tables"),
                ),
            }
        }
    }

    let mut default_group = None;
    let mut detectors = Detectors::default();
    let mut alerts = Alerts::default();
    let mut audit = AuditLogSettings::default();
    let mut images = ImageSettings::default();
    let mut images_span = doc_span.start..doc_span.start;
    if let Some(top) = top {
        if let Some(i) = top.images {
            images_span = i.span();
            images = i.into_inner();
        }
        if let Some(a) = top.audit {
            validate_audit_log(&mut c, a.get_ref(), a.span());
            audit = a.into_inner();
        }
        if let Some(d) = top.detectors {
            validate_detectors(&mut c, d.get_ref(), d.span());
            detectors = d.into_inner();
        }
        if let Some(a) = top.alerts {
            validate_alerts(&mut c, a.get_ref(), a.span());
            alerts = a.into_inner();
        }
        match top.version {
            None => c.push(
                Some(doc_span.start..doc_span.start),
                "missing key `version`",
                Some("add `version = 1` at the top of the file"),
            ),
            Some(v) if *v.get_ref() != 1 => c.push(
                Some(v.span()),
                format!("unsupported policy version {}", v.get_ref()),
                Some("this airlock reads `version = 1`"),
            ),
            Some(_) => {}
        }
        if let Some(d) = top.default_group {
            if !all_names.is_empty() && !all_names.contains(d.get_ref()) {
                let known = all_names.join(", ");
                c.push(
                    Some(d.span()),
                    format!(
                        "default_group {:?} is not a group of this policy",
                        d.get_ref()
                    ),
                    Some(&format!("known groups: {known}")),
                );
            }
            default_group = Some(d.into_inner());
        }
    }
    if default_group.is_none()
        && all_names.len() > 1
        && !all_names.iter().any(|n| n == BUILTIN_GROUP)
    {
        c.push(
            Some(doc_span.start..doc_span.start),
            "several groups and no `default_group`",
            Some("set `default_group = \"NAME\"` or name one group `default`"),
        );
    }
    validate_images(&mut c, &groups, &images, images_span);
    if !c.diags.is_empty() {
        c.diags.sort_by_key(|d| (d.line, d.col));
        return Err(PolicyError::Invalid(c.diags));
    }
    Ok(Policy {
        version: 1,
        default_group,
        groups,
        detectors,
        alerts,
        audit,
        images,
    })
}

/// Registry images: a digest where the group requires one, a registry the allow-list has.
fn validate_images(
    c: &mut Collector<'_>,
    groups: &BTreeMap<String, Group>,
    images: &ImageSettings,
    span: Range<usize>,
) {
    for (name, g) in groups {
        let RootfsSource::Image(r) = &g.rootfs else {
            continue;
        };
        let Some(host) = registry_host(r) else {
            continue;
        };
        if g.requires_digest() && !r.contains("@sha256:") {
            c.push(
                Some(span.clone()),
                format!("group {name}: image {r:?} has no digest, and the group requires one"),
                Some("pin it: `airlock image pull REF` prints `…@sha256:…`; or set `require_digest = false`"),
            );
        }
        if !images.registries.is_empty() && !images.registries.iter().any(|a| a == host) {
            c.push(
                Some(span.clone()),
                format!("group {name}: registry {host} is not in images.registries"),
                Some("add it to `[images] registries`, or use an image from an allowed registry"),
            );
        }
    }
    if let Some(v) = &images.verify {
        if v.issuer.is_some() || v.identity.is_some() {
            c.push(
                Some(span.clone()),
                "images.verify: keyless verification (issuer, identity) is not supported",
                Some("verify with a key: `verify = { key = \"/etc/airlock/cosign.pub\" }` (docs/images.md)"),
            );
        } else if v.key.is_none() {
            c.push(
                Some(span.clone()),
                "images.verify has no key",
                Some("`verify = { key = \"/etc/airlock/cosign.pub\" }`"),
            );
        }
    }
    if let Some(s) = &images.scan {
        if !matches!(
            s.max_severity.as_str(),
            "low" | "medium" | "high" | "critical"
        ) {
            c.push(
                Some(span.clone()),
                format!(
                    "images.scan.max_severity {:?} is not a severity",
                    s.max_severity
                ),
                Some("one of \"low\", \"medium\", \"high\", \"critical\""),
            );
        }
        for i in &s.ignore {
            if i.id.trim().is_empty() || i.reason.trim().is_empty() {
                c.push(
                    Some(span.clone()),
                    format!("images.scan.ignore: {:?} needs an id and a reason", i.id),
                    Some("`{ id = \"CVE-…\", reason = \"why it does not matter here\" }`"),
                );
            }
        }
    }
    for i in &images.insecure {
        let h = i.split(':').next().unwrap_or("");
        if h != "127.0.0.1" && h != "localhost" && h != "[::1]" {
            c.push(
                Some(span.clone()),
                format!("images.insecure: {i:?} is not a loopback registry"),
                Some("plain HTTP only to a registry on this machine; give a remote one a CA (`ca_files`)"),
            );
        }
    }
    if images.max_size.is_some_and(|m| m.0 < 1 << 20) {
        c.push(
            Some(span.clone()),
            "images.max_size must be at least 1MiB".to_owned(),
            Some("e.g. max_size = \"16GiB\""),
        );
    }
    if images.max_store.is_some_and(|m| m.0 < 2 << 20) {
        c.push(
            Some(span.clone()),
            "images.max_store must be at least 2MiB".to_owned(),
            Some("e.g. max_store = \"64GiB\""),
        );
    }
}

impl LoadedPolicy {
    /// Things a valid policy does that an operator should know: registry images named by a
    /// tag alone (the image can change under the policy).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, g) in &self.policy.groups {
            if let RootfsSource::Image(r) = &g.rootfs {
                if registry_host(r).is_some() && !r.contains("@sha256:") {
                    out.push(format!(
                        "group {name}: image {r:?} is a tag without a digest: what runs can change without the policy changing; pin it with @sha256:… (`airlock image pull` prints it)"
                    ));
                }
            }
        }
        out
    }
}

/// Bounds of `[audit]` that keep retention meaningful and checkpoints frequent enough.
fn validate_audit_log(c: &mut Collector<'_>, a: &AuditLogSettings, span: Range<usize>) {
    let mut err = |msg: String, hint: &str| c.push(Some(span.clone()), msg, Some(hint));
    let seg = a.segment_bytes();
    if seg < 4096 {
        err(
            format!("audit.segment_bytes must be at least 4KiB, got {seg}"),
            "the default is the smaller of 256MiB and max_bytes / 4",
        );
    }
    if a.max_bytes.0 < seg.saturating_mul(2) {
        err(
            format!(
                "audit.max_bytes ({}) must be at least twice segment_bytes ({seg})",
                a.max_bytes
            ),
            "retention deletes whole closed segments; the current one is never deleted",
        );
    }
    if a.max_age.0 < std::time::Duration::from_secs(3600) {
        err(
            "audit.max_age must be at least 1h".to_owned(),
            "the default is \"90days\"",
        );
    }
    if !(1..=1_000_000).contains(&a.checkpoint_records) {
        err(
            "audit.checkpoint_records must be between 1 and 1000000".to_owned(),
            "the default is 1000",
        );
    }
    let iv = a.checkpoint_interval.0;
    if iv < std::time::Duration::from_secs(1) || iv > std::time::Duration::from_secs(86400) {
        err(
            "audit.checkpoint_interval must be between 1s and 1day".to_owned(),
            "the default is \"60s\"",
        );
    }
}

fn check_name(c: &mut Collector<'_>, name: &str, span: Range<usize>, what: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
    if !ok {
        c.push(
            Some(span),
            format!("invalid {what} name {name:?}"),
            Some("use 1 to 64 characters of [A-Za-z0-9_-]"),
        );
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Semantic checks the types cannot express. Positions point at the group's name, since the
/// typed value no longer carries spans of its fields.
fn validate_group(c: &mut Collector<'_>, name: &str, g: &Group, span: Range<usize>) {
    let mut err = |msg: String, hint: &str| c.push(Some(span.clone()), msg, Some(hint));
    if g.user.uid == 0 || g.user.gid == 0 {
        err(
            format!("group {name}: jobs never run as root (uid/gid 0)"),
            "pick an unprivileged uid and gid, e.g. 1001",
        );
    }
    if g.user.name.is_empty()
        || g.user.name == "root"
        || !g
            .user
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        err(
            format!("group {name}: invalid user name {:?}", g.user.name),
            "use a plain login name such as \"runner\"",
        );
    }
    if g.executor == ExecutorKind::Runsc && g.process_events {
        err(
            format!("group {name}: the runsc executor cannot report process events"),
            "set process_events = false for this group, or use libcontainer or runc",
        );
    }
    for label in &g.labels {
        if label.trim().is_empty() || label.trim() != label || label.contains(',') {
            err(
                format!("group {name}: invalid runner label {label:?}"),
                "labels are single words as written in `runs-on`, e.g. \"self-hosted\", \"linux-pr\"",
            );
        }
    }
    let l = &g.limits;
    if l.memory.0 < (16 << 20) {
        err(
            format!("group {name}: memory limit {} is below 16MiB", l.memory),
            "a job needs at least 16MiB",
        );
    }
    if l.disk.0 < (1 << 20) {
        err(
            format!("group {name}: disk limit {} is below 1MiB", l.disk),
            "the writable layer needs at least 1MiB",
        );
    }
    if l.pids == 0 {
        err(
            format!("group {name}: pids limit must be at least 1"),
            "typical values are 256 to 4096",
        );
    }
    if !(l.cpus.is_finite() && l.cpus >= 0.01 && l.cpus <= 1024.0) {
        err(
            format!(
                "group {name}: cpus must be between 0.01 and 1024, got {}",
                l.cpus
            ),
            "e.g. cpus = 2.0",
        );
    }
    if l.timeout.0.as_secs() == 0 || l.timeout.0.as_secs() > 7 * 24 * 3600 {
        err(
            format!("group {name}: timeout must be between 1s and 7 days"),
            "e.g. timeout = \"1h\"",
        );
    }
    if l.nofile < 16 {
        err(
            format!("group {name}: nofile must be at least 16"),
            "e.g. nofile = 1024",
        );
    }
    if !(1..=MAX_CONNECTIONS).contains(&l.connections) {
        err(
            format!(
                "group {name}: connections must be between 1 and {MAX_CONNECTIONS}, got {}",
                l.connections
            ),
            "e.g. connections = 1024",
        );
    }
    if !(MIN_FLOW_RATE..=MAX_FLOW_RATE).contains(&l.flow_rate) {
        err(
            format!(
                "group {name}: flow_rate must be between {MIN_FLOW_RATE} and {MAX_FLOW_RATE} \
                 new connections and DNS queries a second, got {}",
                l.flow_rate
            ),
            "e.g. flow_rate = 2000",
        );
    }
    for e in &g.env {
        if !is_env_name(e) {
            err(
                format!("group {name}: env entry {e:?} is not a variable name"),
                "list explicit names such as \"CI\"; patterns are not allowed",
            );
        }
    }
    for s in &g.secrets {
        if !is_env_name(s) {
            err(
                format!("group {name}: secret {s:?} is not a variable name"),
                "secret names become environment variable names",
            );
        }
        if g.env.contains(s) {
            err(
                format!("group {name}: {s:?} is both a pass-through variable and a secret"),
                "list it under `secrets` only",
            );
        }
    }
    if let Err(list) = EgressRules::from_policy(&g.egress) {
        for m in list {
            err(
                format!("group {name}: egress: {m}"),
                "see docs/network.md for egress rules",
            );
        }
    }
    if g.prestart > MAX_PRESTART {
        err(
            format!(
                "group {name}: prestart {} is more than {MAX_PRESTART}",
                g.prestart
            ),
            "a few primed sandboxes are enough: each one that becomes a runner is replaced at once",
        );
    }
    if g.prestart > 0 && g.executor != ExecutorKind::Libcontainer {
        err(
            format!(
                "group {name}: prestart needs the libcontainer executor, not {}",
                g.executor.as_str()
            ),
            "only libcontainer lets airlock hand a created sandbox its runner's credentials before it starts; set prestart = 0",
        );
    }
    if g.prestart > 0 && g.token_permissions.is_some() {
        err(
            format!("group {name}: prestart cannot be used with token_permissions"),
            "a job's token exists only once its repository is known, after the sandbox would have been made; remove one of them",
        );
    }
    if g.max_runners == 0 {
        err(
            format!("group {name}: max_runners must be at least 1"),
            "e.g. max_runners = 4",
        );
    }
    if let Some(c) = &g.containers {
        if c.max == 0 || c.max > 64 {
            err(
                format!("group {name}: containers.max must be 1 to 64"),
                "e.g. containers = { max = 8 }",
            );
        }
        if !(c.share > 0.0 && c.share < 1.0) {
            err(
                format!("group {name}: containers.share must be between 0 and 1"),
                "the part of the group's memory and pids the containers share, e.g. 0.5",
            );
        }
        if g.executor == ExecutorKind::Runsc {
            err(
                format!("group {name}: containers cannot be used with executor runsc"),
                "runsc jobs have no network to share with their containers here; use libcontainer",
            );
        }
    }
    if let Some(ss) = &g.scale_set {
        let ok_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 45
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        };
        if !ok_name(&ss.name) {
            err(
                format!("group {name}: scale set name {:?} is not usable", ss.name),
                "1 to 45 letters, digits, '-', '_' or '.'; it is the runs-on label",
            );
        }
        for l in &ss.labels {
            if l.trim().is_empty() || l.len() > 100 {
                err(
                    format!("group {name}: invalid scale set label {l:?}"),
                    "labels are 1 to 100 characters",
                );
            }
        }
        if ss.runner_group.trim().is_empty() {
            err(
                format!("group {name}: scale set runner_group is empty"),
                "name a GitHub runner group, e.g. runner_group = \"Default\"",
            );
        }
        if !g.workflows.is_empty() {
            err(
                format!("group {name}: workflows cannot be enforced by airlock for a scale set"),
                "scale-set job messages name no workflow: restrict the runner group's selected workflows at GitHub and remove `workflows` here, or serve the group by webhooks",
            );
        }
        if g.token_permissions.is_some() {
            err(
                format!("group {name}: token_permissions cannot be used with a scale set"),
                "a scale-set runner starts before its job's repository is known, so no per-job token can be narrowed to it; remove token_permissions or serve the group by webhooks",
            );
        }
        if ss.min_idle > g.max_runners {
            err(
                format!(
                    "group {name}: scale set min_idle {} is more than max_runners {}",
                    ss.min_idle, g.max_runners
                ),
                "warm runners count in max_runners",
            );
        }
    }
    if g.runner.is_empty() || g.runner[0].trim().is_empty() {
        err(
            format!("group {name}: runner command is empty"),
            "e.g. runner = [\"/home/runner/actions-runner/run.sh\"]",
        );
    }
    for r in &g.repositories {
        if r.split('/').count() != 2 || r.split('/').any(str::is_empty) {
            err(
                format!("group {name}: repository {r:?} is not an owner/name glob"),
                "write \"octo-org/octo-repo\", \"octo-org/*\" or \"*/*\"",
            );
        }
    }
    for l in &g.labels {
        if l.trim().is_empty() || l.len() > 100 {
            err(
                format!("group {name}: invalid runner label {l:?}"),
                "labels are 1 to 100 characters",
            );
        }
    }
    if let RootfsSource::Image(r) = &g.rootfs {
        if r.trim().is_empty() {
            err(
                format!("group {name}: empty image reference"),
                "name an image from `airlock image ls`",
            );
        }
    }
}

/// Where the keys of a group's `audit = { … }` are (key → span of its value; `""` → the
/// table itself), so each bound's error points at the bound.
fn audit_spans(group: &Spanned<DeValue<'_>>) -> BTreeMap<String, Range<usize>> {
    let mut out = BTreeMap::new();
    let DeValue::Table(t) = group.get_ref() else {
        return out;
    };
    for (k, v) in t.iter() {
        if k.get_ref().as_ref() != "audit" {
            continue;
        }
        out.insert(String::new(), v.span());
        if let DeValue::Table(a) = v.get_ref() {
            for (ak, av) in a.iter() {
                out.insert(ak.get_ref().to_string(), av.span());
            }
        }
    }
    out
}

/// Semantic checks of a group's `audit` bounds: each must be a bound (no zero that would
/// mean "nothing recorded", no value so large that it means "unbounded").
fn validate_audit(
    c: &mut Collector<'_>,
    name: &str,
    a: &AuditLimits,
    at: &BTreeMap<String, Range<usize>>,
    group_span: &Range<usize>,
) {
    let span = |k: &str| {
        at.get(k)
            .or_else(|| at.get(""))
            .cloned()
            .unwrap_or_else(|| group_span.clone())
    };
    let mut check = |key: &str, ok: bool, msg: String, hint: &str| {
        if !ok {
            c.push(
                Some(span(key)),
                format!("group {name}: audit.{key} {msg}"),
                Some(hint),
            );
        }
    };
    check(
        "records_per_second",
        (1..=1_000_000).contains(&a.records_per_second),
        format!(
            "must be between 1 and 1000000, got {}",
            a.records_per_second
        ),
        "the default is 20 records a second per kind and key",
    );
    check(
        "burst",
        (1..=1_000_000).contains(&a.burst),
        format!("must be between 1 and 1000000, got {}", a.burst),
        "the default is 500",
    );
    check(
        "max_records",
        (100..=10_000_000).contains(&a.max_records),
        format!("must be between 100 and 10000000, got {}", a.max_records),
        "the default is 50000 records per job",
    );
    check(
        "max_bytes",
        ((64 << 10)..=(4 << 30)).contains(&a.max_bytes.0),
        format!("must be between 64KiB and 4GiB, got {}", a.max_bytes),
        "the default is \"32MiB\" per job",
    );
    check(
        "max_keys",
        (1..=65_536).contains(&a.max_keys),
        format!("must be between 1 and 65536, got {}", a.max_keys),
        "the default is 256 keys per kind",
    );
    check(
        "max_file_changes",
        a.max_file_changes <= 1_000_000,
        format!("must be at most 1000000, got {}", a.max_file_changes),
        "the default is 5000 files listed one by one",
    );
    check(
        "flood_alert",
        a.flood_alert >= 1,
        "must be at least 1".to_owned(),
        "the default is 10000 aggregated records",
    );
}

/// Semantic checks of `[detectors]`; positions point at the table.
fn validate_detectors(c: &mut Collector<'_>, d: &Detectors, span: Range<usize>) {
    let mut err = |msg: String, hint: &str| c.push(Some(span.clone()), msg, Some(hint));
    let ns = &d.network_scan;
    if !(2..=65535).contains(&ns.destinations) {
        err(
            format!(
                "detectors.network_scan.destinations must be between 2 and 65535, got {}",
                ns.destinations
            ),
            "the default is 10",
        );
    }
    if ns.window.0 < std::time::Duration::from_secs(1) || ns.window.0.as_secs() > 3600 {
        err(
            "detectors.network_scan.window must be between 1s and 1h".to_owned(),
            "the default is \"10s\"",
        );
    }
    if d.dns_tunnelling.subdomains < 2 {
        err(
            format!(
                "detectors.dns_tunnelling.subdomains must be at least 2, got {}",
                d.dns_tunnelling.subdomains
            ),
            "the default is 20",
        );
    }
}

/// Whether a webhook URL is acceptable: HTTPS, or plain HTTP to this machine's loopback (for
/// a local relay or a test receiver). Alerts and their signatures never cross a network in
/// clear text.
fn webhook_url_problem(raw: &str) -> Option<String> {
    let u = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return Some(format!("alerts.webhook.url {raw:?} is not a URL: {e}")),
    };
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => return Some(format!("alerts.webhook.url {raw:?} has no host")),
    };
    match u.scheme() {
        "https" => None,
        "http" if loopback => None,
        s => Some(format!(
            "alerts.webhook.url must be https:// (plain http only to loopback), got {s}://"
        )),
    }
}

/// Semantic checks of `[alerts]`; positions point at the table.
fn validate_alerts(c: &mut Collector<'_>, a: &Alerts, span: Range<usize>) {
    let mut err = |msg: String, hint: &str| c.push(Some(span.clone()), msg, Some(hint));
    if a.file.as_ref().is_some_and(|f| !f.is_absolute()) {
        err(
            "alerts.file must be an absolute path".to_owned(),
            "e.g. file = \"/var/log/airlock/alerts.jsonl\"",
        );
    }
    if let Some(w) = &a.webhook {
        if let Some(p) = webhook_url_problem(&w.url) {
            err(p, "e.g. url = \"https://alerts.example.com/airlock\"");
        }
        if !is_env_name(&w.secret) {
            err(
                format!(
                    "alerts.webhook.secret {:?} is not a secret name",
                    w.secret
                ),
                "name the secret (secrets file or environment variable) that holds the HMAC key, never the key itself",
            );
        }
        if w.timeout.0 < std::time::Duration::from_secs(1) || w.timeout.0.as_secs() > 120 {
            err(
                "alerts.webhook.timeout must be between 1s and 2m".to_owned(),
                "the default is \"5s\"",
            );
        }
        if w.retries > 20 {
            err(
                format!(
                    "alerts.webhook.retries must be at most 20, got {}",
                    w.retries
                ),
                "the default is 5; undelivered alerts stay in the outbox anyway",
            );
        }
    }
}

#[cfg(test)]
mod tests;
