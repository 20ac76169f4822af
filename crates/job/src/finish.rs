//! Phase 7: the job's end on the record — its network records and file changes, what the
//! detectors found, `job.ended` — the egress log, the report; then the alerts to the
//! policy's sinks ([`crate::Engine::deliver`]).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use airlock_audit::payload::JobEnded;
use airlock_audit::{
    AuditQueue, ConnRecord, Event, JobOutcome, JobReport, Kind, TeardownFailure, TeardownStep,
};

use crate::collect::Collected;
use crate::record::JobRecord;
use crate::{Engine, Job};

/// Writes the job's end to the audit log and builds its report. A failure here is a
/// teardown failure (the job has already run).
pub(crate) fn finish(
    job: &Job,
    rec: JobRecord,
    outcome: JobOutcome,
    collected: Collected,
    mut failures: Vec<TeardownFailure>,
    started: Instant,
) -> JobReport {
    let plan = &job.plan;
    let detection = record_end(
        rec,
        plan.id.as_str(),
        &outcome,
        &collected,
        &mut failures,
        started,
    );
    if let Some(log) = &job.egress_log {
        if let Err(e) = append_records(log, &collected.egress) {
            failures.push(TeardownFailure::new(
                TeardownStep::EgressLog,
                format!("writing {}: {e}", log.display()),
            ));
        }
    }
    JobReport {
        id: plan.id.to_string(),
        group: plan.group.clone(),
        outcome,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        teardown_errors: failures,
        egress: collected.egress,
        alerts: detection.alerts,
    }
}

/// The job's end on the record: its leftovers, the detectors' results and alerts, and
/// `job.ended` (synced). What cannot be written is added to `failures`.
fn record_end(
    rec: JobRecord,
    job: &str,
    outcome: &JobOutcome,
    collected: &Collected,
    failures: &mut Vec<TeardownFailure>,
    started: Instant,
) -> airlock_audit::Detection {
    let audit = rec.audit;
    let mut audit_errors = Vec::new();
    if let Err(e) = record_leftovers(&audit, job, collected) {
        audit_errors.push(e);
    }
    // The job's pending aggregates and flood summary are written, then the detectors, which
    // have seen every record of the job as it was written (with its sequence number, so each
    // alert names its evidence), finish; their alerts go on the record before the job's end.
    let detection = match audit.finish(job) {
        Ok(j) => j.detection,
        Err(e) => {
            audit_errors.push(e);
            airlock_audit::Detection::default()
        }
    };
    failures.extend(
        detection
            .errors
            .iter()
            .map(|e| TeardownFailure::new(TeardownStep::Detector, airlock_text::ErrorChain(e))),
    );
    for a in &detection.alerts {
        let mut data = serde_json::to_value(a).unwrap_or_default();
        data["id"] = a.id().into();
        if let Err(e) = audit.send(Event::new(Kind::Alert, Some(job), data)) {
            audit_errors.push(e);
            break;
        }
    }
    let ended = Event::of(
        Some(job),
        &JobEnded {
            outcome: outcome.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            teardown_errors: failures.clone(),
            alerts: detection.alerts.len(),
        },
    );
    if let Err(e) = audit.send(ended).and_then(|()| audit.sync()) {
        audit_errors.push(e);
    }
    drop(audit);
    // One broken log fails every later write the same way: report it once.
    let mut messages: Vec<String> = audit_errors
        .iter()
        .map(|e| airlock_text::ErrorChain(e).to_string())
        .collect();
    messages.dedup();
    failures.extend(
        messages
            .into_iter()
            .map(|m| TeardownFailure::new(TeardownStep::Audit, m)),
    );
    detection
}

/// The job's network records and file changes, sent one by one (the queue is bounded),
/// never gathered into one more copy.
fn record_leftovers(
    audit: &AuditQueue,
    job: &str,
    collected: &Collected,
) -> Result<(), airlock_audit::AuditError> {
    let job = Some(job);
    for r in &collected.egress {
        let mut e = Event::new(
            Kind::net(&r.kind),
            job,
            serde_json::to_value(r).unwrap_or_default(),
        );
        e.time_ms = r.time_ms;
        audit.send(e)?;
    }
    if let Some(f) = &collected.files {
        for c in &f.changes {
            let data = serde_json::to_value(c).unwrap_or_default();
            audit.send(Event::new(airlock_audit::Kind::FileChanged, job, data))?;
        }
        audit.send(Event::new(airlock_audit::Kind::FileScan, job, f.summary()))?;
    }
    Ok(())
}

fn append_records(path: &Path, records: &[ConnRecord]) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut w = std::io::BufWriter::new(f);
    for r in records {
        serde_json::to_writer(&mut w, r).map_err(std::io::Error::other)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// What became of a job's alerts and the audit checkpoints shipped during it.
#[derive(Debug, Default)]
pub struct Delivery {
    /// What a sink refused, sink by sink.
    pub errors: Vec<String>,
    /// Alerts the webhook could not deliver yet (kept in the outbox for the next run).
    pub pending: usize,
}

impl Engine {
    /// Hands the job's alerts to the policy's sinks and waits up to `wait` for the webhook;
    /// what it cannot deliver stays in the outbox (`DATA_DIR/alerts/outbox`).
    pub fn deliver(&self, job: Job, report: &JobReport, wait: Duration) -> Delivery {
        let mut d = Delivery::default();
        d.errors.extend(
            job.sinks
                .deliver(&report.alerts)
                .iter()
                .map(|e| airlock_text::ErrorChain(e).to_string()),
        );
        d.errors.extend(job.shipper.take_errors());
        if let Some(r) = job.sinks.flush(Instant::now() + wait) {
            d.pending = r.pending;
        }
        d
    }
}
