//! Runner scale sets (`../shared/spec/scaleset-protocol.md`): serve long-polls GitHub's
//! Actions service for the jobs assigned to each scale set of the policy, so no inbound
//! endpoint is needed.
//!
//! Per scale set there are two tasks. The **listener** bootstraps (registration token →
//! Actions service URL and admin token), creates or updates the scale set by name, opens the
//! message session (409: another session is live — said clearly and retried), long-polls with
//! `X-ScaleSetMaxCapacity` = the capacity airlock really has for it, commits what a message
//! means to SQLite and only then acknowledges it, and closes the session on shutdown. The
//! **scaler** keeps `statistics.totalAssignedJobs` (never a count of messages) plus `min_idle`
//! runners alive, capped by the group's `max_runners` and serve's global capacity, and retires
//! idle runners beyond that after `idle_retire`. Each runner is one JIT registration in one
//! fresh sandbox, used for one job.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_github::scaleset::{
    ActionsService, JobInfo, JobMessage, Label, Poll, Queue, RunnerScaleSet, ScaleSetError,
    Session, Statistics,
};
use airlock_policy::ScaleSet;
use serde_json::json;
use tokio::sync::{oneshot, watch, Notify};
use tracing::{debug, info, warn};

use super::{judge, lock, Manager, StopReason};
use crate::metrics::{GroupState, ScaleSetLabel, ScaleSetState};
use crate::state::{SsEvent, SsJobRef};
use crate::Secret;

/// Settings of the scale-set listeners.
#[derive(Debug, Clone)]
pub struct ScaleSetOptions {
    /// REST API base (`https://api.github.com`).
    pub api_url: String,
    /// The web URL the scale sets register for (`https://github.com/{org}`).
    pub registration_url: String,
    /// How long one long poll may take before serve gives up on it (GitHub holds ~50 s).
    pub poll_timeout: Duration,
    /// Wait between attempts to open a session while another one is live (409).
    pub conflict_retry: Duration,
    /// Longest back-off after 5xx and network errors.
    pub max_backoff: Duration,
    /// The admin token is renewed this often (GitHub's lasts about an hour).
    pub reconnect_every: Duration,
    /// Longest wait for any call but the long poll (a stalled connection is then a network
    /// error, retried).
    pub request_timeout: Duration,
}

impl Default for ScaleSetOptions {
    fn default() -> Self {
        Self {
            api_url: "https://api.github.com".into(),
            registration_url: String::new(),
            poll_timeout: Duration::from_secs(70),
            conflict_retry: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            reconnect_every: Duration::from_secs(45 * 60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// One scale set at run time.
pub(super) struct SetRt {
    pub(super) name: String,
    pub(super) group: String,
    spec: ScaleSet,
    id: AtomicI64,
    svc: tokio::sync::RwLock<Option<(ActionsService, Instant)>>,
    stats: Mutex<Statistics>,
    kick: Notify,
    /// A session is open and polled (part of `/readyz`).
    pub(super) live: AtomicBool,
}

/// Exponential back-off with jitter (0.5–1.5×), capped.
fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(1u32 << attempt.min(8));
    let jitter: f64 = 0.5 + rand::random::<f64>();
    base.min(cap).mul_f64(jitter)
}

fn job_ref(j: &JobInfo) -> SsJobRef {
    let repo = if j.repository_name.contains('/') || j.owner_name.is_empty() {
        j.repository_name.clone()
    } else {
        format!("{}/{}", j.owner_name, j.repository_name)
    };
    SsJobRef {
        job_id: if j.job_id.is_empty() {
            format!("request-{}", j.runner_request_id)
        } else {
            j.job_id.clone()
        },
        request_id: j.runner_request_id,
        repo,
        run_id: j.workflow_run_id,
        workflow_ref: j.job_workflow_ref.clone(),
    }
}

impl Manager {
    /// Starts a listener and a scaler for every group of the policy with a `scale_set`.
    pub(super) fn start_scale_sets(&self) {
        let mut sets = Vec::new();
        for (group, g) in &self.inner.policy.groups {
            let Some(spec) = &g.scale_set else { continue };
            let rt = Arc::new(SetRt {
                name: spec.name.clone(),
                group: group.clone(),
                spec: spec.clone(),
                id: AtomicI64::new(0),
                svc: tokio::sync::RwLock::new(None),
                stats: Mutex::new(Statistics::default()),
                kick: Notify::new(),
                live: AtomicBool::new(false),
            });
            sets.push(rt);
        }
        for rt in sets {
            lock(&self.inner.sets).push(rt.clone());
            let me = self.clone();
            let r = rt.clone();
            let h = tokio::spawn(async move { me.ss_listen(r).await });
            lock(&self.inner.listeners).push(h);
            let me = self.clone();
            tokio::spawn(async move { me.ss_scaler(rt).await });
        }
    }

    /// Whether every scale set has a live session.
    pub(super) fn scale_sets_live(&self) -> bool {
        lock(&self.inner.sets)
            .iter()
            .all(|s| s.live.load(Ordering::SeqCst))
    }

    fn stopping(&self) -> bool {
        !self.inner.accepting.load(Ordering::SeqCst)
    }

    /// Sleeps `d`, or less when serve begins to shut down.
    async fn pause(&self, d: Duration) {
        let mut rx = self.inner.shutdown.subscribe();
        if *rx.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = rx.changed() => {}
        }
    }

    /// The Actions service connection, made (or renewed) when missing or old.
    async fn ss_service(&self, rt: &SetRt, renew: bool) -> Result<ActionsService, String> {
        let o = &self.inner.ss_opts;
        {
            let cur = rt.svc.read().await;
            if let Some((svc, at)) = cur.as_ref() {
                if !renew && at.elapsed() < o.reconnect_every {
                    return Ok(svc.clone());
                }
            }
        }
        let mut w = rt.svc.write().await;
        let reg = self
            .inner
            .github
            .registration_token()
            .await
            .map_err(|e| format!("registration token: {e}"))?;
        let svc = ActionsService::connect(
            self.inner.http.clone(),
            &o.api_url,
            &o.registration_url,
            &airlock_github::Secret::new(reg.expose()),
        )
        .await
        .map_err(|e| format!("connecting to the Actions service: {e}"))?;
        *w = Some((svc.clone(), Instant::now()));
        Ok(svc)
    }

    /// Finds the scale set by name in its runner group, creating it (or putting back the
    /// policy's labels) as needed. Returns its id.
    async fn ss_ensure(&self, rt: &SetRt, svc: &ActionsService) -> Result<i64, String> {
        // Job messages do not say whether a repository is public, so the policy's "public
        // code runs only in untrusted groups" rests on the runner group's setting: a scale
        // set of any other group is not served from a runner group that admits public
        // repositories (fail closed).
        let trust = self
            .inner
            .policy
            .groups
            .get(&rt.group)
            .map(|g| g.trust)
            .unwrap_or(airlock_policy::Trust::Trusted);
        if trust != airlock_policy::Trust::Untrusted {
            match self
                .inner
                .github
                .runner_group_allows_public(&rt.spec.runner_group)
                .await
            {
                Ok(Some(true)) => {
                    return Err(format!(
                        "public repositories can reach runner group {:?} (its \"Allow public repositories\" setting, or a public repository for repository-level runners), and group {} is {:?}: public code runs only in untrusted groups. Turn the setting off, or serve this scale set from another runner group",
                        rt.spec.runner_group, rt.group, trust
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "checking runner group {:?} for public repositories: {e}",
                        rt.spec.runner_group
                    ))
                }
            }
        }
        let group = svc
            .runner_group(&rt.spec.runner_group)
            .await
            .map_err(|e| format!("runner group {:?}: {e}", rt.spec.runner_group))?
            .ok_or_else(|| {
                format!(
                    "the GitHub runner group {:?} does not exist (create it, or set scale_set.runner_group)",
                    rt.spec.runner_group
                )
            })?;
        let mut names = vec![rt.name.clone()];
        for l in &rt.spec.labels {
            if !names.contains(l) {
                names.push(l.clone());
            }
        }
        let want = RunnerScaleSet {
            name: rt.name.clone(),
            runner_group_id: group.id,
            labels: names
                .iter()
                .map(|n| Label {
                    kind: "System".into(),
                    name: n.clone(),
                })
                .collect(),
            runner_setting: airlock_github::scaleset::RunnerSetting {
                disable_update: true,
                ..Default::default()
            },
            ..RunnerScaleSet::default()
        };
        let found = svc
            .scale_set(group.id, &rt.name)
            .await
            .map_err(|e| format!("looking up scale set {:?}: {e}", rt.name))?;
        let (set, how) = match found {
            None => (
                svc.create_scale_set(&want)
                    .await
                    .map_err(|e| format!("creating scale set {:?}: {e}", rt.name))?,
                "created",
            ),
            Some(s) => {
                let mut have: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
                have.sort_unstable();
                let mut need: Vec<&str> = names.iter().map(String::as_str).collect();
                need.sort_unstable();
                if have == need {
                    (s, "found")
                } else {
                    let id = s.id.unwrap_or(0);
                    (
                        svc.update_scale_set(id, &want)
                            .await
                            .map_err(|e| format!("updating scale set {:?}: {e}", rt.name))?,
                        "updated",
                    )
                }
            }
        };
        let id = set
            .id
            .ok_or_else(|| format!("scale set {:?}: the service gave no id", rt.name))?;
        if rt.id.swap(id, Ordering::SeqCst) != id {
            info!(
                "scale set {} ({how}, id {id}) in runner group {:?} serves group {}",
                airlock_text::escape(&rt.name),
                rt.spec.runner_group,
                rt.group
            );
            self.audit(
                airlock_audit::Kind::ServeScaleSetReady,
                None,
                json!({"scale_set": rt.name, "id": id, "group": rt.group, "how": how,
                       "runner_group": rt.spec.runner_group, "labels": names}),
            );
        }
        Ok(id)
    }

    /// Opens the session, retrying 409 (said each time) and transient errors; `None` when
    /// serve shuts down first.
    async fn ss_session(&self, rt: &SetRt) -> Option<(ActionsService, i64, Session)> {
        let o = self.inner.ss_opts.clone();
        let owner = format!(
            "airlock-{}-{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            std::process::id()
        );
        let mut attempt = 0u32;
        let mut renew = false;
        while !self.stopping() {
            let step = async {
                let svc = self.ss_service(rt, renew).await?;
                let id = self.ss_ensure(rt, &svc).await?;
                match svc.create_session(id, &owner).await {
                    Ok(s) => Ok((svc, id, s)),
                    Err(e @ ScaleSetError::SessionConflict { .. }) => Err(format!("CONFLICT {e}")),
                    Err(e) => Err(format!("opening the message session: {e}")),
                }
            };
            match step.await {
                Ok(x) => return Some(x),
                Err(e) if e.starts_with("CONFLICT ") => {
                    let e = e.trim_start_matches("CONFLICT ");
                    warn!(
                        "scale set {}: {e}; stop the other serve (or wait for GitHub to expire its session); retrying in {:?}",
                        airlock_text::escape(&rt.name),
                        o.conflict_retry
                    );
                    self.inner
                        .metrics
                        .scaleset_session_conflicts
                        .get_or_create(&ScaleSetLabel {
                            scale_set: rt.name.clone(),
                        })
                        .inc();
                    self.audit(
                        airlock_audit::Kind::ServeScaleSetConflict,
                        None,
                        json!({"scale_set": rt.name, "retry_ms": o.conflict_retry.as_millis() as u64}),
                    );
                    self.pause(o.conflict_retry).await;
                }
                Err(e) => {
                    let d = backoff(attempt, o.max_backoff);
                    warn!(
                        "scale set {}: {}; retrying in {d:.1?}",
                        airlock_text::escape(&rt.name),
                        airlock_text::escape(&e)
                    );
                    attempt += 1;
                    renew = true;
                    self.pause(d).await;
                }
            }
        }
        None
    }

    async fn ss_listen(&self, rt: Arc<SetRt>) {
        let o = self.inner.ss_opts.clone();
        'session: while !self.stopping() {
            let Some((svc, id, session)) = self.ss_session(&rt).await else {
                break;
            };
            if let Some(s) = session.statistics {
                *lock(&rt.stats) = s;
                rt.kick.notify_one();
            }
            let mut queue = Queue::of(self.inner.http.clone(), &session);
            let mut session_id = session.session_id.clone();
            rt.live.store(true, Ordering::SeqCst);
            info!(
                "scale set {}: session open, polling for jobs",
                airlock_text::escape(&rt.name)
            );
            let mut last: Option<i64> = None;
            let mut attempt = 0u32;
            let mut shutdown = self.inner.shutdown.subscribe();
            loop {
                if self.stopping() {
                    break;
                }
                let cap = self.ss_capacity(&rt);
                let polled = tokio::select! {
                    r = queue.poll(last, cap, o.poll_timeout) => r,
                    _ = shutdown.changed() => break,
                };
                match polled {
                    Ok(Poll::Message(m)) => {
                        attempt = 0;
                        if let Err(e) = self.ss_message(&rt, &svc, id, &queue, &m).await {
                            // Not acknowledged: GitHub delivers it again.
                            warn!(
                                "scale set {}: message {}: {}",
                                airlock_text::escape(&rt.name),
                                m.message_id,
                                airlock_text::escape(&e)
                            );
                            self.pause(backoff(1, o.max_backoff)).await;
                            continue;
                        }
                        last = Some(m.message_id);
                    }
                    Ok(Poll::Empty) => {
                        attempt = 0;
                        rt.kick.notify_one();
                    }
                    Err(ScaleSetError::QueueTokenExpired) => {
                        info!(
                            "scale set {}: queue token expired; refreshing the session",
                            airlock_text::escape(&rt.name)
                        );
                        match svc.refresh_session(id, &session_id).await {
                            Ok(s) => {
                                session_id = s.session_id.clone();
                                queue = Queue::of(self.inner.http.clone(), &s);
                            }
                            Err(e) => {
                                warn!(
                                    "scale set {}: refreshing the session: {e}; opening a new one",
                                    airlock_text::escape(&rt.name)
                                );
                                let _ = svc.delete_session(id, &session_id).await;
                                rt.live.store(false, Ordering::SeqCst);
                                continue 'session;
                            }
                        }
                    }
                    Err(ScaleSetError::Status { status: 404, .. }) => {
                        // The scale set (or session) is gone: GitHub deletes a scale set whose
                        // manager was away for about a day. Made again by name.
                        warn!(
                            "scale set {}: gone at GitHub; creating it again",
                            airlock_text::escape(&rt.name)
                        );
                        rt.live.store(false, Ordering::SeqCst);
                        continue 'session;
                    }
                    Err(e) => {
                        let d = backoff(attempt, o.max_backoff);
                        attempt += 1;
                        warn!(
                            "scale set {}: polling: {e}; retrying in {d:.1?}",
                            airlock_text::escape(&rt.name)
                        );
                        self.pause(d).await;
                    }
                }
            }
            rt.live.store(false, Ordering::SeqCst);
            match svc.delete_session(id, &session_id).await {
                Ok(()) => info!(
                    "scale set {}: session closed",
                    airlock_text::escape(&rt.name)
                ),
                Err(e) => warn!(
                    "scale set {}: closing the session: {e}",
                    airlock_text::escape(&rt.name)
                ),
            }
            break;
        }
    }

    /// `X-ScaleSetMaxCapacity`: how many jobs this scale set can have at once — its group's
    /// `max_runners`, less what serve's global capacity lacks because of other work.
    fn ss_capacity(&self, rt: &SetRt) -> u32 {
        let max = self
            .inner
            .policy
            .groups
            .get(&rt.group)
            .map(|g| g.max_runners)
            .unwrap_or(0);
        let st = &self.inner.store;
        let others = st.active().map(|a| a.len()).unwrap_or(0)
            + st.ss_alive(None)
                .map(|a| a.iter().filter(|r| r.scale_set != rt.name).count())
                .unwrap_or(0);
        let others = u32::try_from(others).unwrap_or(u32::MAX);
        max.min(self.inner.opts.max_concurrency.saturating_sub(others))
    }

    /// Why the group refuses a job assigned to its scale set (the same repository rule as
    /// webhook routing; labels are the scale set's own by construction).
    fn ss_refusal(&self, rt: &SetRt, j: &SsJobRef) -> Option<String> {
        let g = self.inner.policy.groups.get(&rt.group)?;
        if !g
            .repositories
            .iter()
            .any(|p| crate::routing::glob_match(p, &j.repo))
        {
            return Some(format!(
                "group {}: repository {} is not in its repositories",
                rt.group, j.repo
            ));
        }
        None
    }

    /// Commits what message `m` means, acquires GHES jobs, then acknowledges it.
    async fn ss_message(
        &self,
        rt: &Arc<SetRt>,
        svc: &ActionsService,
        id: i64,
        queue: &Queue,
        m: &airlock_github::scaleset::Message,
    ) -> Result<(), String> {
        let mut events = Vec::new();
        let mut acquire = Vec::new();
        match m.jobs() {
            Ok(jobs) => {
                for j in jobs {
                    match j {
                        JobMessage::Available { job, .. } => acquire.push(job.runner_request_id),
                        JobMessage::Assigned(job) => {
                            let r = job_ref(&job);
                            let refusal = self.ss_refusal(rt, &r);
                            events.push(SsEvent::Assigned { job: r, refusal });
                        }
                        JobMessage::Started {
                            runner_name, job, ..
                        } => events.push(SsEvent::Started {
                            job: job_ref(&job),
                            runner: runner_name,
                        }),
                        JobMessage::Completed {
                            result,
                            runner_name,
                            job,
                            ..
                        } => events.push(SsEvent::Completed {
                            job: job_ref(&job),
                            result,
                            runner: runner_name,
                        }),
                        JobMessage::Other(kind) => warn!(
                            "scale set {}: message {}: job message of unknown type {}",
                            airlock_text::escape(&rt.name),
                            m.message_id,
                            airlock_text::escape(&kind)
                        ),
                    }
                }
            }
            // Recorded and acknowledged all the same: a message that cannot be read would
            // otherwise come back forever.
            Err(e) => warn!(
                "scale set {}: message {} has an unreadable body ({e}); acknowledged without effect",
                airlock_text::escape(&rt.name),
                m.message_id
            ),
        }
        if !acquire.is_empty() {
            let got = svc
                .acquire_jobs(id, queue_token(queue), &acquire)
                .await
                .map_err(|e| format!("acquiring jobs: {e}"))?;
            info!(
                "scale set {}: acquired {} of {} available job(s)",
                airlock_text::escape(&rt.name),
                got.len(),
                acquire.len()
            );
        }
        let applied = self
            .inner
            .store
            .ss_apply(&rt.name, m.message_id, &events)
            .map_err(|e| e.to_string())?;
        if let Some(s) = m.statistics {
            *lock(&rt.stats) = s;
        }
        if !applied.duplicate {
            self.ss_effects(rt, m.message_id, applied);
        }
        // Committed (and recorded): now it may be acknowledged. A failed acknowledgement is
        // harmless (the message comes again and is recognised by its id).
        if let Err(e) = queue.ack(m.message_id).await {
            warn!(
                "scale set {}: acknowledging message {}: {e}",
                airlock_text::escape(&rt.name),
                m.message_id
            );
        }
        rt.kick.notify_one();
        Ok(())
    }

    /// Audit records and reactions to a committed message.
    fn ss_effects(&self, rt: &Arc<SetRt>, message_id: i64, a: crate::state::SsApplied) {
        let source = format!("scaleset:{}", rt.name);
        let stats = *lock(&rt.stats);
        let label = ScaleSetLabel {
            scale_set: rt.name.clone(),
        };
        self.inner
            .metrics
            .scaleset_messages
            .get_or_create(&label)
            .inc();
        self.inner
            .metrics
            .scaleset_assigned_jobs
            .get_or_create(&label)
            .set(stats.total_assigned_jobs);
        self.audit(
            airlock_audit::Kind::ServeScaleSetMessage,
            None,
            json!({"scale_set": rt.name, "message_id": message_id,
                   "assigned": a.assigned.len(), "refused": a.refused.len(),
                   "started": a.started.len(), "completed": a.completed.len(),
                   // At most 50 job messages per message: bounded.
                   "assigned_jobs": a.assigned.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(),
                   "statistics": stats}),
        );
        for (j, why) in a.refused {
            warn!(
                "scale set {}: refusing job {} of {}: {}",
                airlock_text::escape(&rt.name),
                airlock_text::escape(&j.job_id),
                airlock_text::escape(&j.repo),
                airlock_text::escape(&why)
            );
            self.audit(
                airlock_audit::Kind::ServeJobRefused,
                Some(&format!("ss-{}-{}", rt.name, j.job_id)),
                json!({"source": source, "github_job_id": j.job_id, "repository": j.repo,
                       "workflow_ref": j.workflow_ref, "reasons": [why],
                       "action": "workflow run cancelled"}),
            );
            // A runner of the scale set could still take it: cancel its run at GitHub.
            let gh = self.inner.github.clone();
            let (repo, run) = (j.repo.clone(), u64::try_from(j.run_id).unwrap_or(0));
            tokio::spawn(async move {
                if let Err(e) = gh.cancel_run(&repo, run).await {
                    warn!("cancelling refused run {run} of {repo}: {e}");
                }
            });
        }
        for (j, runner, ours, ended) in a.started {
            if !ours {
                warn!(
                    "scale set {}: job {} started on runner {} that airlock did not start",
                    airlock_text::escape(&rt.name),
                    airlock_text::escape(&j.job_id),
                    airlock_text::escape(&runner)
                );
            }
            self.audit(
                airlock_audit::Kind::ServeJobStarted,
                Some(&format!("ss-{}-{}", rt.name, j.job_id)),
                json!({"source": source, "github_job_id": j.job_id, "repository": j.repo,
                       "group": rt.group, "runner": runner, "airlock_runner": ours,
                       "sandbox_key": if ours { Some(runner.clone()) } else { None }}),
            );
            // The runner ran it and ended before this message was read: its end is the
            // job's end.
            if let Some((status, code)) = ended {
                self.inner
                    .metrics
                    .jobs_finished
                    .get_or_create(&GroupState {
                        group: rt.group.clone(),
                        state: status.clone(),
                    })
                    .inc();
                self.audit(
                    airlock_audit::Kind::ServeJobFinished,
                    Some(&format!("ss-{}-{}", rt.name, j.job_id)),
                    json!({"source": source, "github_job_id": j.job_id, "group": rt.group,
                           "status": status, "exit_code": code, "runner": runner}),
                );
            }
        }
        for (j, result, runner) in a.completed {
            if result.eq_ignore_ascii_case("canceled") && runner.is_empty() {
                self.audit(
                    airlock_audit::Kind::ServeJobCancelled,
                    Some(&format!("ss-{}-{}", rt.name, j.job_id)),
                    json!({"source": source, "github_job_id": j.job_id,
                           "reason": "cancelled before a runner took it"}),
                );
            }
            if runner.is_empty() {
                continue;
            }
            // The runner that ran it gets `completed_grace` to exit on its own.
            let alive = self
                .inner
                .store
                .ss_alive(Some(&rt.name))
                .unwrap_or_default()
                .into_iter()
                .find(|r| r.name == runner);
            if let Some(r) = alive {
                let me = self.clone();
                let grace = self.inner.opts.completed_grace;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let tx = lock(&me.inner.ss_tasks).get(&r.seq).cloned();
                    if let Some(tx) = tx {
                        me.audit(
                            airlock_audit::Kind::ServeJobStoppedAfterCompleted,
                            Some(&r.name),
                            json!({"runner": r.name, "grace_ms": grace.as_millis() as u64}),
                        );
                        lock(&me.inner.ss_stop).insert(r.seq, StopReason::CompletedOnGitHub);
                        let _ = tx.send(true);
                    }
                });
            }
        }
    }

    async fn ss_scaler(&self, rt: Arc<SetRt>) {
        while !self.stopping() {
            tokio::select! {
                _ = rt.kick.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.stopping() || rt.id.load(Ordering::SeqCst) == 0 {
                continue;
            }
            if let Err(e) = self.ss_scale(&rt).await {
                warn!(
                    "scale set {}: scaling: {}",
                    airlock_text::escape(&rt.name),
                    airlock_text::escape(&e)
                );
            }
        }
    }

    /// Brings the scale set's runners to `assigned + min_idle` (capped): starts runners, or
    /// retires idle ones that waited longer than `idle_retire`.
    async fn ss_scale(&self, rt: &Arc<SetRt>) -> Result<(), String> {
        let Some(g) = self.inner.policy.groups.get(&rt.group) else {
            return Ok(());
        };
        let mut retire = Vec::new();
        let mut make_room = 0usize;
        let mut started = 0u32;
        {
            let _cap = lock(&self.inner.capacity);
            let st = &self.inner.store;
            let e = |e: crate::state::StateError| e.to_string();
            let alive = st.ss_alive(Some(&rt.name)).map_err(e)?;
            let stats = *lock(&rt.stats);
            for state in crate::state::SS_ALIVE {
                let n = alive.iter().filter(|r| r.status == state).count();
                self.inner
                    .metrics
                    .scaleset_runners
                    .get_or_create(&ScaleSetState {
                        scale_set: rt.name.clone(),
                        state: state.to_owned(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            // Jobs refused here need no runner; jobs whose runner already ended (the
            // completion is on its way) need no new one.
            let not_needing = st.ss_open_refused(&rt.name).map_err(e)?
                + st.ss_started_by_ended(&rt.name).map_err(e)?;
            let needed =
                u32::try_from((stats.total_assigned_jobs - not_needing).max(0)).unwrap_or(u32::MAX);
            let target = needed.saturating_add(rt.spec.min_idle).min(g.max_runners);
            let n = u32::try_from(alive.len()).unwrap_or(u32::MAX);
            // Primed sandboxes hold slots of max_concurrency; this group's own become its
            // runners without taking another.
            let primed = self.inner.launcher.primed();
            let primed_all: u32 = primed.values().sum();
            let primed_here = primed.get(&rt.group).copied().unwrap_or(0);
            self.inner
                .metrics
                .scaleset_primed
                .get_or_create(&ScaleSetLabel {
                    scale_set: rt.name.clone(),
                })
                .set(i64::from(primed_here));
            let used = st.active().map_err(e)?.len() + st.ss_alive(None).map_err(e)?.len();
            let used = u32::try_from(used).unwrap_or(u32::MAX);
            let max = self.inner.opts.max_concurrency;
            if n < target {
                let free = max
                    .saturating_sub(used.saturating_add(primed_all))
                    .saturating_add(primed_here);
                let short = (target - n).saturating_sub(free);
                if short > 0 && primed_all > primed_here {
                    // Runners come first: other groups' primed sandboxes give their slots
                    // back (the next round starts the runners), and no group primes until
                    // they have.
                    make_room = short.min(primed_all - primed_here) as usize;
                    lock(&self.inner.ss_starved).insert(rt.name.clone());
                } else {
                    lock(&self.inner.ss_starved).remove(&rt.name);
                }
                for _ in 0..(target - n).min(free) {
                    let name = format!(
                        "{}{}-{}",
                        self.inner.opts.runner_prefix,
                        rt.name,
                        super::random_suffix()
                    );
                    let seq = st.ss_runner_new(&rt.name, &rt.group, &name).map_err(e)?;
                    let (tx, rx) = watch::channel(false);
                    lock(&self.inner.ss_tasks).insert(seq, tx);
                    let me = self.clone();
                    let r = rt.clone();
                    tokio::spawn(async move { me.ss_runner(r, seq, name, rx).await });
                    started += 1;
                }
            } else if n > target {
                let now = super::now_ms();
                let limit = i64::try_from(rt.spec.idle_retire.0.as_millis()).unwrap_or(i64::MAX);
                let retiring = lock(&self.inner.ss_stop).clone();
                retire = alive
                    .into_iter()
                    .filter(|r| r.status == "idle" && !retiring.contains_key(&r.seq))
                    .filter(|r| now - r.ready_ms.unwrap_or(now) >= limit)
                    .take((n - target) as usize)
                    .collect();
            }
            if n >= target {
                lock(&self.inner.ss_starved).remove(&rt.name);
            }
        }
        if make_room > 0 {
            self.inner
                .launcher
                .retire_primed(Some(&rt.group), make_room)
                .await;
            rt.kick.notify_one();
        }
        if started > 0 {
            // The dispatcher refills primed sandboxes (and sees these runners).
            self.inner.wake.notify_one();
        }
        for r in retire {
            self.ss_retire(&r).await;
        }
        Ok(())
    }

    /// Retires an idle runner: its registration first (so GitHub cannot hand it a job),
    /// then its sandbox.
    async fn ss_retire(&self, r: &crate::state::SsRunner) {
        if let Some(id) = r.runner_id {
            if let Err(e) = self.inner.github.delete_runner(id).await {
                // GitHub refuses to delete a runner that took a job meanwhile: it stays.
                warn!(
                    "retiring runner {}: {e}; left running",
                    airlock_text::escape(&r.name)
                );
                return;
            }
            let _ = self.inner.store.ss_runner_deleted(r.seq);
        }
        // The reason is kept only for a runner whose task is still there to take it back.
        let tx = lock(&self.inner.ss_tasks).get(&r.seq).cloned();
        if let Some(tx) = tx {
            lock(&self.inner.ss_stop).insert(r.seq, StopReason::Retired);
            let _ = tx.send(true);
        }
    }

    /// Retires every idle runner and every primed sandbox (shutdown: they hold no job).
    pub(super) async fn ss_retire_idle(&self) {
        let n = self.inner.launcher.retire_primed(None, usize::MAX).await;
        if n > 0 {
            debug!("retired {n} primed sandbox(es)");
        }
        // Those still being made retire themselves once ready (bounded: a priming that hangs
        // is left to its airlock run, which ends with serve).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.inner.launcher.primed().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let idle: Vec<_> = self
            .inner
            .store
            .ss_alive(None)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| matches!(r.status.as_str(), "idle" | "starting" | "provisioning"))
            .collect();
        for r in idle {
            self.ss_retire(&r).await;
        }
    }

    /// One runner of a scale set: JIT registration, its own fresh sandbox, one job, teardown.
    async fn ss_runner(&self, rt: Arc<SetRt>, seq: i64, name: String, stop: watch::Receiver<bool>) {
        let decided = Instant::now();
        let st = &self.inner.store;
        let group = rt.group.clone();
        let g = self.inner.policy.groups.get(&group).cloned();
        self.audit(
            airlock_audit::Kind::ServeRunnerProvisioning,
            Some(&name),
            json!({"source": format!("scaleset:{}", rt.name), "scale_set": rt.name,
                   "group": group, "runner": name, "warm": rt.spec.min_idle > 0}),
        );
        let mut runner_id = None;
        let result: Result<crate::launcher::RunExit, String> = async {
            let g = g.ok_or_else(|| format!("group {group} vanished from the policy"))?;
            let mut jit = None;
            let mut last = String::new();
            for attempt in 0..4u32 {
                let svc = self
                    .ss_service(&rt, attempt > 0 && last.contains("401"))
                    .await?;
                match svc
                    .generate_jit_config(rt.id.load(Ordering::SeqCst), &name, "_work")
                    .await
                {
                    Ok(j) => {
                        jit = Some(j);
                        break;
                    }
                    Err(e) => {
                        last = e.to_string();
                        if !(e.is_transient() || last.contains("401")) || self.stopping() {
                            break;
                        }
                        self.pause(backoff(attempt, self.inner.ss_opts.max_backoff))
                            .await;
                    }
                }
            }
            let jit = jit.ok_or_else(|| format!("generating the JIT config: {last}"))?;
            debug!(
                "runner {}: JIT config after {:?}",
                airlock_text::escape(&name),
                decided.elapsed()
            );
            let id = u64::try_from(jit.runner.id).unwrap_or(0);
            runner_id = Some(id);
            st.ss_runner_registered(seq, id)
                .map_err(|e| e.to_string())?;
            let spec = self.runner_spec(
                &group,
                &g,
                &name,
                Secret::new(jit.encoded_jit_config.expose()),
                None,
            );
            let (started_tx, started_rx) = oneshot::channel();
            let launcher = self.inner.launcher.clone();
            let handle = tokio::spawn(async move { launcher.run(spec, started_tx, stop).await });
            if started_rx.await.is_ok() {
                debug!(
                    "runner {}: sandbox process running after {:?}",
                    airlock_text::escape(&name),
                    decided.elapsed()
                );
                self.inner
                    .metrics
                    .scaleset_runner_start_seconds
                    .observe(decided.elapsed().as_secs_f64());
                if let Err(e) = st.ss_runner_ready(seq) {
                    warn!("runner {}: {e}", airlock_text::escape(&name));
                }
                self.audit(
                    airlock_audit::Kind::ServeRunnerReady,
                    Some(&name),
                    json!({"scale_set": rt.name, "runner": name, "runner_id": id}),
                );
                rt.kick.notify_one();
            }
            match handle.await {
                Ok(Ok(exit)) => Ok(exit),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("sandbox task failed: {e}")),
            }
        }
        .await;
        let why_stopped = lock(&self.inner.ss_stop).remove(&seq);
        let bound = st
            .ss_runner(seq)
            .ok()
            .flatten()
            .and_then(|r| r.job_id)
            .is_some();
        let (status, code, detail, sandbox) = match &result {
            Ok(exit) if why_stopped == Some(StopReason::Retired) && !bound => (
                "retired",
                Some(i64::from(exit.code)),
                None,
                exit.sandbox_id.clone(),
            ),
            Ok(exit) => {
                let (s, why) = judge(exit, why_stopped);
                let s = if s == crate::state::JobStatus::Done {
                    "done"
                } else {
                    "failed"
                };
                (s, Some(i64::from(exit.code)), why, exit.sandbox_id.clone())
            }
            Err(e) => ("failed", None, Some(e.clone()), None),
        };
        let job = match st.ss_runner_finished(seq, status, code, detail.as_deref()) {
            Ok(j) => j,
            Err(e) => {
                warn!("runner {}: {e}", airlock_text::escape(&name));
                None
            }
        };
        // JIT runners are removed by GitHub after their job; one that never took a job (or
        // whose removal is slow) is deleted here. Already gone (404) counts as deleted.
        let mut deleted = false;
        if let Some(id) = runner_id {
            match self.inner.github.delete_runner(id).await {
                Ok(()) => {
                    deleted = true;
                    let _ = st.ss_runner_deleted(seq);
                }
                Err(e) => warn!(
                    "runner {}: deleting it at GitHub: {e} (the next reconcile tries again)",
                    airlock_text::escape(&name)
                ),
            }
        }
        let source = format!("scaleset:{}", rt.name);
        if job.is_some() {
            self.inner
                .metrics
                .jobs_finished
                .get_or_create(&GroupState {
                    group: group.clone(),
                    state: status.to_owned(),
                })
                .inc();
        }
        match &job {
            Some(j) => self.audit(
                airlock_audit::Kind::ServeJobFinished,
                Some(&format!("ss-{}-{j}", rt.name)),
                json!({"source": source, "github_job_id": j, "group": group,
                       "status": status, "exit_code": code, "detail": detail,
                       "sandbox": sandbox, "runner": name, "runner_id": runner_id,
                       "runner_deleted": deleted}),
            ),
            None => self.audit(
                airlock_audit::Kind::ServeRunnerFinished,
                Some(&name),
                json!({"source": source, "runner": name, "status": status,
                       "exit_code": code, "detail": detail, "sandbox": sandbox,
                       "runner_id": runner_id, "runner_deleted": deleted}),
            ),
        }
        match (status, &detail) {
            ("failed", Some(why)) => warn!(
                "runner {} ({}): failed: {}",
                airlock_text::escape(&name),
                group,
                airlock_text::escape(why)
            ),
            _ => info!("runner {} ({group}): {status}", airlock_text::escape(&name)),
        }
        lock(&self.inner.ss_tasks).remove(&seq);
        rt.kick.notify_one();
        self.inner.idle.notify_waiters();
    }

    /// Names of scale-set runners that a task of this serve owns.
    pub(super) fn ss_owned(&self) -> HashSet<String> {
        let tasks: HashSet<i64> = lock(&self.inner.ss_tasks).keys().copied().collect();
        self.inner
            .store
            .ss_alive(None)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| tasks.contains(&r.seq))
            .map(|r| r.name)
            .collect()
    }
}

/// The queue's current token (for `acquirejobs`).
fn queue_token(q: &Queue) -> &airlock_github::Secret {
    q.token()
}

/// Deletes scale set `name` at GitHub (found in `runner_group`); `Ok(None)` when there is
/// none. For `airlock serve scaleset delete`: GitHub removes its runners with it.
pub async fn delete_scale_set(
    github: &dyn crate::github::GitHub,
    opts: &ScaleSetOptions,
    runner_group: &str,
    name: &str,
) -> Result<Option<i64>, String> {
    let svc = connect(github, opts).await?;
    let group = svc
        .runner_group(runner_group)
        .await
        .map_err(|e| format!("runner group {runner_group:?}: {e}"))?
        .ok_or_else(|| format!("the GitHub runner group {runner_group:?} does not exist"))?;
    let Some(set) = svc
        .scale_set(group.id, name)
        .await
        .map_err(|e| format!("looking up scale set {name:?}: {e}"))?
    else {
        return Ok(None);
    };
    let id = set.id.unwrap_or(0);
    svc.delete_scale_set(id)
        .await
        .map_err(|e| format!("deleting scale set {name:?}: {e}"))?;
    Ok(Some(id))
}

/// Lists the scale sets named `names` as GitHub has them: `(name, id or None, statistics)`.
pub async fn list_scale_sets(
    github: &dyn crate::github::GitHub,
    opts: &ScaleSetOptions,
    sets: &[(String, String)],
) -> Result<Vec<(String, Option<i64>, Option<Statistics>)>, String> {
    let svc = connect(github, opts).await?;
    let mut out = Vec::new();
    for (group_name, name) in sets {
        let group = svc
            .runner_group(group_name)
            .await
            .map_err(|e| format!("runner group {group_name:?}: {e}"))?;
        let g = group.ok_or_else(|| {
            format!("scale set {name:?}: the GitHub runner group {group_name:?} does not exist")
        })?;
        let found = svc
            .scale_set(g.id, name)
            .await
            .map_err(|e| format!("looking up scale set {name:?}: {e}"))?;
        out.push((
            name.clone(),
            found.as_ref().and_then(|s| s.id),
            found.and_then(|s| s.statistics),
        ));
    }
    Ok(out)
}

async fn connect(
    github: &dyn crate::github::GitHub,
    opts: &ScaleSetOptions,
) -> Result<ActionsService, String> {
    let reg = github
        .registration_token()
        .await
        .map_err(|e| format!("registration token: {e}"))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(opts.request_timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    ActionsService::connect(
        http,
        &opts.api_url,
        &opts.registration_url,
        &airlock_github::Secret::new(reg.expose()),
    )
    .await
    .map_err(|e| format!("connecting to the Actions service: {e}"))
}
