//! Phase 1, request → plan: the policy and group, the secrets, the image, the workspace, the
//! alert sinks and the audit log's settings. Nothing of the job exists yet; a refused group is
//! recorded (`job.refused`), every other refusal is an error to the caller.

use std::path::PathBuf;
use std::time::Duration;

use airlock_policy::{LoadedPolicy, RootfsSource, Secret};
use airlock_sandbox::image::ImageStore;
use airlock_sandbox::{JobPlan, Paths};

use crate::error::JobError;
use crate::Engine;

/// What a caller asks for: a command, in a group of a policy.
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    /// The policy file; `None` for the built-in policy.
    pub policy: Option<PathBuf>,
    /// The group; `None` for the policy's default group.
    pub group: Option<String>,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// A directory copied into the job as its workspace.
    pub workdir: Option<PathBuf>,
    /// A TOML file of secrets (`NAME = "value"`); secrets not in it come from the environment.
    pub secrets_file: Option<PathBuf>,
    /// Append the job's network records (JSON lines) to this file.
    pub egress_log: Option<PathBuf>,
    /// Variables that arrive after the sandbox exists: non-empty, the sandbox is primed
    /// (created, checked, then waiting for them; see [`Engine::run_primed`]). Their values are
    /// secrets.
    pub late_env: Vec<String>,
}

/// An accepted request: the plan, and what the engine needs to run and finish it.
pub struct Job {
    /// The plan.
    pub plan: JobPlan,
    /// The policy it came from.
    pub policy: LoadedPolicy,
    pub(crate) audit_log: airlock_audit::LogSettings,
    pub(crate) egress_log: Option<PathBuf>,
    pub(crate) sinks: airlock_audit::Sinks,
    pub(crate) shipper: airlock_audit::CheckpointShipper,
    /// The job's hold on its image: making room in the store never removes it while the job
    /// lives.
    _image_hold: Option<airlock_sandbox::image::InUse>,
}

impl Job {
    /// The wall-clock limit of the job.
    pub fn timeout(&self) -> Duration {
        self.plan.limits.timeout.0
    }
}

impl Engine {
    /// Turns a request into a job, or refuses it. `env` is airlock's own environment (the
    /// group's `env` and secrets not in the secrets file are read from it).
    pub fn prepare(
        &self,
        req: JobRequest,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Job, JobError> {
        let policy = match &req.policy {
            Some(p) => LoadedPolicy::from_file(p)?,
            None => LoadedPolicy::builtin(),
        };
        let (group_name, group) = match policy.group(req.group.as_deref()) {
            Ok(g) => g,
            Err(e) => {
                self.record_refusal(&policy, &req, &e);
                return Err(e.into());
            }
        };
        if !nix::unistd::geteuid().is_root() {
            return Err(JobError::NotRoot);
        }
        let secrets =
            airlock_policy::resolve_secrets(&group.secrets, req.secrets_file.as_deref(), env)?;
        let mut image_hold = None;
        let image = match &group.rootfs {
            RootfsSource::Host => None,
            RootfsSource::Image(r) => {
                let store = ImageStore::new(self.paths.images());
                let img = resolve_image(&store, r, &policy.policy.images)?;
                if let Some(scan) = &policy.policy.images.scan {
                    check_vulnerabilities(&store, &img, &self.paths, scan)?;
                }
                image_hold = Some(hold_image(&store, &img)?);
                let dir = store.rootfs_dir(&img.digest);
                Some((img.digest, dir))
            }
        };
        if let Some(w) = &req.workdir {
            check_workdir(w, &self.paths)?;
        }
        let mut plan = JobPlan::new(
            &group_name,
            group,
            req.command,
            req.workdir,
            env,
            secrets,
            image,
        )?;
        if !req.late_env.is_empty() {
            if group.executor != airlock_policy::ExecutorKind::Libcontainer {
                return Err(JobError::LateEnv(format!(
                    "group {group_name} runs under {}; a primed sandbox needs libcontainer",
                    group.executor.as_str()
                )));
            }
            if let Some(bad) = req
                .late_env
                .iter()
                .find(|n| !airlock_sandbox::start::valid_name(n))
            {
                return Err(JobError::LateEnv(format!(
                    "{} is not a variable name",
                    airlock_text::Escaped(bad)
                )));
            }
            plan.late_env = req.late_env.clone();
        }
        if let Some(c) = &group.containers {
            let dir = self.paths.job_dir(&plan.id);
            crate::containers::plan_runner(&mut plan, c, &dir);
        }
        // Alert sinks are opened before the job: a misconfigured sink refuses the job rather
        // than losing its alerts.
        let key = webhook_key(&policy, req.secrets_file.as_deref(), env)?;
        let sinks = airlock_audit::Sinks::from_policy(
            &policy.policy.alerts,
            key,
            &self.paths.alert_outbox(),
        )
        .map_err(JobError::Sinks)?;
        // Retention and checkpoints of the audit log; checkpoints also go to the alert sinks.
        // Without its key no checkpoint can be MAC'd: the job does not start.
        let mut audit_log =
            airlock_audit::LogSettings::from_policy(&policy.policy.audit, &self.paths.data)
                .map_err(JobError::AuditSettings)?;
        let shipper = sinks.checkpoint_shipper();
        audit_log.ship = Some(shipper.clone());
        Ok(Job {
            plan,
            policy,
            audit_log,
            egress_log: req.egress_log,
            sinks,
            shipper,
            _image_hold: image_hold,
        })
    }

    /// A refused job is on the record too (when the log can be written at all: the job is
    /// refused either way, so this is best effort).
    fn record_refusal(&self, policy: &LoadedPolicy, req: &JobRequest, e: &dyn std::fmt::Display) {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let Ok(mut log) = airlock_audit::AuditLog::open(&self.paths.audit()) else {
            return;
        };
        // Checkpointed like any other record.
        if let Ok(s) =
            airlock_audit::LogSettings::from_policy(&policy.policy.audit, &self.paths.data)
        {
            let _ = log.configure(s);
        }
        let _ = log.append(
            airlock_audit::Kind::JobRefused,
            None,
            serde_json::json!({
                "group": req.group,
                "argv": req.command,
                "reason": e.to_string(),
                "policy_sha256": policy.sha256,
            }),
        );
    }
}

/// The value of the secret that signs the policy's alert webhook, if it has one.
fn webhook_key(
    policy: &LoadedPolicy,
    secrets_file: Option<&std::path::Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, JobError> {
    let Some(w) = &policy.policy.alerts.webhook else {
        return Ok(None);
    };
    Ok(
        airlock_policy::resolve_secrets(std::slice::from_ref(&w.secret), secrets_file, env)?
            .into_iter()
            .next()
            .map(|(_, v)| v),
    )
}

/// The workspace is copied into the job: it must be a directory and must never hold the
/// checkpoint key.
fn check_workdir(w: &std::path::Path, paths: &Paths) -> Result<(), JobError> {
    if !w.is_dir() {
        return Err(JobError::WorkdirNotADirectory(w.to_owned()));
    }
    let keys = paths.data.join(airlock_audit::checkpoint::KEY_FILE);
    let keys = keys.parent().unwrap_or(&paths.data);
    if let (Ok(w), Ok(k)) = (std::fs::canonicalize(w), std::fs::canonicalize(keys)) {
        if k.starts_with(&w) {
            return Err(JobError::WorkdirHoldsKeys {
                workdir: w,
                keys: k,
            });
        }
    }
    Ok(())
}

/// The store's image for a group's `rootfs` reference, pulled first if it is a registry
/// reference the store does not have. A pinned reference (`…@sha256:…`) is only ever
/// satisfied by that digest: a tag moved in the registry since the policy pinned it cannot
/// change what runs.
pub(crate) fn resolve_image(
    store: &ImageStore,
    reference: &str,
    settings: &airlock_policy::ImageSettings,
) -> Result<airlock_sandbox::image::ImageRef, JobError> {
    if airlock_policy::registry_host(reference).is_none() {
        return Ok(store
            .resolve(reference)
            .map_err(airlock_sandbox::SandboxError::from)?);
    }
    let pinned = reference
        .split_once("@sha256:")
        .map(|(_, h)| format!("sha256:{h}"));
    let have = match &pinned {
        Some(d) => store
            .list()
            .map_err(airlock_sandbox::SandboxError::from)?
            .into_iter()
            .find(|i| &i.digest == d),
        None => airlock_registry::parse_reference(reference)
            .ok()
            .and_then(|r| store.resolve(&airlock_registry::store_name(&r)).ok()),
    };
    let key = settings.verify.as_ref().and_then(|v| v.key.clone());
    // An image pulled before the policy asked for signatures (or under another key) is
    // pulled again, which verifies it.
    let fingerprint = match &key {
        Some(k) => Some(key_fingerprint(k)?),
        None => None,
    };
    if let Some(i) = have.filter(|i| fingerprint.is_none() || i.verified == fingerprint) {
        return Ok(i);
    }
    let opts = airlock_registry::PullOptions {
        verify_key: key,
        platform: airlock_registry::Platform::default(),
        insecure: settings.insecure.clone(),
        ca_files: settings.ca_files.clone(),
        credentials: settings.credentials.clone(),
        name: None,
    };
    // The job named this image: what it may take of the host's disk is the policy's bound,
    // one image and the whole store.
    let (limited, room) = ImageStore::new(store.root())
        .with_max_size(
            settings
                .max_size
                .map_or(airlock_sandbox::image::DEFAULT_MAX_SIZE, |m| m.0),
        )
        .for_new_image(
            settings
                .max_store
                .map_or(airlock_sandbox::image::DEFAULT_MAX_STORE, |m| m.0),
        )
        .map_err(airlock_sandbox::SandboxError::from)?;
    if !room.evicted.is_empty() {
        tracing::info!(
            "made room in the image store ([images] max_store) by removing the least recently \
             used: {}",
            room.evicted
                .iter()
                .map(|n| airlock_text::Escaped(n).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let pulled = airlock_registry::pull(&limited, reference, &opts, &mut airlock_registry::Quiet)
        .map_err(JobError::Pull)?;
    Ok(pulled.image)
}

/// Marks the image used now and holds it for the job's life ([`ImageStore::mark_used`]).
/// Without the hold the store could remove the image while the job runs on it: the job does
/// not start.
pub(crate) fn hold_image(
    store: &ImageStore,
    img: &airlock_sandbox::image::ImageRef,
) -> Result<airlock_sandbox::image::InUse, JobError> {
    Ok(store
        .mark_used(&img.digest)
        .map_err(airlock_sandbox::SandboxError::from)?)
}

/// How an image verified with the key at `path` is recorded (`cosign key sha256:…`).
fn key_fingerprint(path: &std::path::Path) -> Result<String, JobError> {
    let file = |message: String| {
        JobError::Pull(airlock_registry::RegistryError::File {
            path: path.to_owned(),
            message,
        })
    };
    let pem = std::fs::read_to_string(path)
        .map_err(|e| file(format!("cannot read the verification key: {e}")))?;
    let key = airlock_registry::verify::Key::from_pem(&pem).map_err(file)?;
    Ok(format!("cosign key {}", key.fingerprint))
}

/// Refuses an image with known vulnerabilities at or above the policy's threshold. The scan
/// of a digest against one state of the OSV data is kept (`DATA/images/scans/<hex>.json`):
/// a job starts without rescanning until the image or the data changes.
fn check_vulnerabilities(
    store: &ImageStore,
    img: &airlock_sandbox::image::ImageRef,
    paths: &airlock_sandbox::Paths,
    policy: &airlock_policy::ImageScanPolicy,
) -> Result<(), JobError> {
    use airlock_imagescan::report::Ignore;
    let osv = paths.data.join("osv");
    let stamp = osv_stamp(&osv);
    let cache = store
        .root()
        .join("scans")
        .join(format!("{}.json", img.digest.trim_start_matches("sha256:")));
    let cached = std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|v| v["stamp"] == stamp.as_str())
        .and_then(|v| {
            serde_json::from_value::<Vec<airlock_imagescan::Finding>>(v["findings"].clone()).ok()
        });
    let findings = match cached {
        Some(f) => f,
        None => {
            let report = airlock_imagescan::scan(
                &img.name,
                &img.digest,
                &store.rootfs_dir(&img.digest),
                &osv,
            );
            record_scan(paths, img, &report);
            let v = serde_json::json!({ "stamp": stamp, "findings": report.findings });
            if let Some(dir) = cache.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::write(&cache, v.to_string()) {
                tracing::warn!("keeping the image's scan: {e}");
            }
            report.findings
        }
    };
    let threshold = airlock_imagescan::Severity::from_word(&policy.max_severity)
        .unwrap_or(airlock_imagescan::Severity::Critical);
    let ignore: Vec<Ignore> = policy
        .ignore
        .iter()
        .map(|i| Ignore {
            id: i.id.clone(),
            reason: i.reason.clone(),
        })
        .collect();
    let mut report = airlock_imagescan::ScanReport {
        image: img.name.clone(),
        digest: img.digest.clone(),
        os: None,
        packages: Vec::new(),
        findings,
        osv_entries_read: 0,
        notes: Vec::new(),
    };
    report.apply_ignores(&ignore);
    let over: Vec<String> = report
        .at_or_above(threshold)
        .iter()
        .take(20)
        .map(|f| {
            format!(
                "{} ({} {}, {})",
                f.id,
                f.package,
                f.version,
                f.severity.as_str()
            )
        })
        .collect();
    if over.is_empty() {
        return Ok(());
    }
    Err(JobError::Vulnerable {
        image: img.name.clone(),
        threshold: policy.max_severity.clone(),
        findings: over,
    })
}

/// A fingerprint of the OSV data's state: names, sizes and times of its files.
fn osv_stamp(dir: &std::path::Path) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![dir.to_owned()];
    let mut n = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            n += 1;
            if n > 1_000_000 {
                break;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                e.file_name().hash(&mut h);
                m.len().hash(&mut h);
                m.modified().ok().hash(&mut h);
            }
        }
    }
    format!("{:016x}", h.finish())
}

/// Records a scan made at job start in the audit log (as `airlock image scan` does).
fn record_scan(
    paths: &airlock_sandbox::Paths,
    img: &airlock_sandbox::image::ImageRef,
    report: &airlock_imagescan::ScanReport,
) {
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
        tracing::warn!("recording the image's scan: {e}");
    }
}
