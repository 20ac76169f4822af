//! Phase 2: the job on the audit record before anything of it exists, its record limiter and
//! streaming detectors attached, and a changed policy noticed.

use std::path::Path;

use airlock_audit::payload::{ConfigChanged, JobRequested, JobUser, SecretInjected};
use airlock_audit::{AuditQueue, Event, Redactor};
use airlock_sandbox::{JobPlan, SandboxError};

use crate::{Engine, Job};

/// The job's open record.
pub(crate) struct JobRecord {
    /// The bounded queue the job's records go through.
    pub audit: AuditQueue,
    /// Secret values → `[secret:NAME]`, for everything of the job that is recorded.
    pub redactor: Redactor,
}

/// Opens the audit log, writes `job.requested` (and `config.changed` when the group's policy
/// is not the one its previous job ran under), and attaches the job's limiter and detectors.
pub(crate) fn open(engine: &Engine, job: &Job) -> Result<JobRecord, SandboxError> {
    let plan = &job.plan;
    let paths = &engine.paths;
    let mut log = airlock_audit::AuditLog::open(&paths.audit()).map_err(SandboxError::Audit)?;
    log.configure(job.audit_log.clone())
        .map_err(SandboxError::Audit)?;
    // A secret the job puts on a command line or in a name is recorded by name, never by
    // value: in the audit log, the report and the egress log alike.
    let redactor = Redactor::new(plan.secrets.iter().map(|(k, v)| (k.as_str(), v.expose())));
    log.set_redactor(redactor.clone());
    let mut first = vec![requested(job)];
    if let Some(changed) = config_change(&paths.data, plan, &job.policy) {
        first.push(changed);
    }
    let written = log.append_batch(first).map_err(SandboxError::Audit)?;
    // From here on events go through the bounded queue (back-pressure, group commit).
    let audit = AuditQueue::start(log, 4096);
    // The job's events pass its limiter (rate limits, caps, aggregation: the group's
    // `audit`), and the detectors see each record as it is written: nothing of the job's
    // record is held in memory, whatever the job does.
    let ctx = airlock_audit::DetectContext {
        settings: job.policy.policy.detectors.clone(),
        baseline_dir: Some(paths.baselines()),
        group: Some(plan.group.clone()),
        // A name the group's allow-list names exactly is never a "new destination".
        listed_names: plan
            .egress
            .domains
            .iter()
            .filter(|d| !d.wildcard)
            .map(|d| d.name.clone())
            .collect(),
    };
    audit
        .track(plan.id.as_str(), plan.audit.clone(), &ctx, &written)
        .map_err(SandboxError::Audit)?;
    if !plan.secrets.is_empty() {
        // Names only, never values.
        let names = secret_names(plan);
        audit
            .send(Event::of(Some(plan.id.as_str()), &SecretInjected { names }))
            .map_err(SandboxError::Audit)?;
    }
    Ok(JobRecord { audit, redactor })
}

fn secret_names(plan: &JobPlan) -> Vec<String> {
    plan.secrets.iter().map(|(k, _)| k.clone()).collect()
}

fn requested(job: &Job) -> Event {
    let plan = &job.plan;
    Event::of(
        Some(plan.id.as_str()),
        &JobRequested {
            group: plan.group.clone(),
            trust: plan.trust,
            executor: plan.executor,
            argv: plan.argv.clone(),
            user: JobUser {
                uid: plan.user.uid,
                gid: plan.user.gid,
            },
            egress_mode: plan.egress.mode,
            // Names only, never values.
            secrets: secret_names(plan),
            policy: job.policy.path.clone(),
            policy_sha256: job.policy.sha256.clone(),
        },
    )
}

/// The policy a group's jobs ran under last, by group (`DATA_DIR/config/GROUP.sha256`): a
/// different one now is a `config.changed` record, which the `config-changed` detector turns
/// into an alert. Keyed by group because `serve` runs each group under its own derived
/// policy. A first job of a group records nothing; a file that cannot be written is not a
/// reason to refuse the job (the digest is on `job.requested` either way).
fn config_change(
    data: &Path,
    plan: &JobPlan,
    policy: &airlock_policy::LoadedPolicy,
) -> Option<Event> {
    let dir = data.join("config");
    // Group names are the policy author's, but never a path: anything else is replaced.
    let name: String = plan
        .group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let file = dir.join(format!("{name}.sha256"));
    let previous = std::fs::read_to_string(&file)
        .ok()
        .map(|s| s.trim().to_owned());
    if previous.as_deref() != Some(policy.sha256.as_str()) {
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&tmp, &policy.sha256))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(file = %file.display(), "cannot record the group's policy digest: {e}");
        }
    }
    let previous = previous.filter(|p| *p != policy.sha256)?;
    Some(Event::of(
        Some(plan.id.as_str()),
        &ConfigChanged {
            group: plan.group.clone(),
            policy: policy.path.clone(),
            previous,
            current: policy.sha256.clone(),
        },
    ))
}
