//! The scale-set side of serve's store: messages seen (by id, so a message redelivered after a
//! crash is recognised), jobs GitHub assigned to a scale set, and the runners airlock started
//! for it. What a message means is committed here, in one transaction, before the message is
//! acknowledged.

use rusqlite::{params, OptionalExtension};

use super::{now_ms, StateError, Store};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ss_messages (
  scale_set TEXT NOT NULL,
  message_id INTEGER NOT NULL,
  received_ms INTEGER NOT NULL,
  jobs INTEGER NOT NULL,
  PRIMARY KEY (scale_set, message_id)
);
CREATE TABLE IF NOT EXISTS ss_jobs (
  scale_set TEXT NOT NULL,
  job_id TEXT NOT NULL,
  request_id INTEGER NOT NULL,
  repo TEXT NOT NULL,
  run_id INTEGER NOT NULL,
  workflow_ref TEXT NOT NULL,
  status TEXT NOT NULL,
  detail TEXT,
  runner_name TEXT,
  result TEXT,
  assignments INTEGER NOT NULL,
  assigned_ms INTEGER NOT NULL,
  started_ms INTEGER,
  completed_ms INTEGER,
  PRIMARY KEY (scale_set, job_id)
);
CREATE TABLE IF NOT EXISTS ss_runners (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  scale_set TEXT NOT NULL,
  grp TEXT NOT NULL,
  name TEXT NOT NULL UNIQUE,
  runner_id INTEGER,
  status TEXT NOT NULL,
  job_id TEXT,
  created_ms INTEGER NOT NULL,
  ready_ms INTEGER,
  busy_ms INTEGER,
  finished_ms INTEGER,
  exit_code INTEGER,
  detail TEXT,
  deleted_ms INTEGER
);
CREATE INDEX IF NOT EXISTS ss_runners_status ON ss_runners(status);
";

/// A job message to record (the listener's reading of one element of a message body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsEvent {
    /// Assigned to the scale set; `refusal` when the group's rules refuse it.
    Assigned {
        /// The job.
        job: SsJobRef,
        /// Why the group refuses it, if it does.
        refusal: Option<String>,
    },
    /// A runner started it.
    Started {
        /// The job.
        job: SsJobRef,
        /// The runner's name.
        runner: String,
    },
    /// It ended.
    Completed {
        /// The job.
        job: SsJobRef,
        /// `succeeded`, `failed`, `canceled`, …
        result: String,
        /// The runner's name (empty when none ran it).
        runner: String,
    },
}

/// What identifies a job in a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SsJobRef {
    /// GitHub's job id.
    pub job_id: String,
    /// The runner request id.
    pub request_id: i64,
    /// `owner/name`.
    pub repo: String,
    /// The workflow run.
    pub run_id: i64,
    /// The workflow's ref.
    pub workflow_ref: String,
}

/// What recording a message did, for the audit log and the scaler (read after commit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsApplied {
    /// The message id was seen before: nothing was changed.
    pub duplicate: bool,
    /// Jobs newly assigned (or reassigned after a cancel).
    pub assigned: Vec<SsJobRef>,
    /// Jobs refused, with the reason.
    pub refused: Vec<(SsJobRef, String)>,
    /// `(job, runner name, whether the runner is airlock's, its end if it already ended:
    /// (status, exit code))` bound by `JobStarted`.
    #[allow(clippy::type_complexity)]
    pub started: Vec<(SsJobRef, String, bool, Option<(String, Option<i64>)>)>,
    /// `(job, result, runner name)`.
    pub completed: Vec<(SsJobRef, String, String)>,
}

/// A runner of a scale set as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsRunner {
    /// airlock's number of it.
    pub seq: i64,
    /// Its scale set.
    pub scale_set: String,
    /// Its policy group.
    pub group: String,
    /// Its name (fixed before registration).
    pub name: String,
    /// GitHub's id, once registered.
    pub runner_id: Option<u64>,
    /// `provisioning`, `starting`, `idle`, `busy` (alive); `done`, `failed`, `retired`,
    /// `lost` (over).
    pub status: String,
    /// The job it ran.
    pub job_id: Option<String>,
    /// Unix ms.
    pub created_ms: i64,
    /// When its sandbox was up (Unix ms).
    pub ready_ms: Option<i64>,
}

/// Statuses of a runner that hold capacity.
pub const SS_ALIVE: [&str; 4] = ["provisioning", "starting", "idle", "busy"];

fn runner_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SsRunner> {
    Ok(SsRunner {
        seq: r.get(0)?,
        scale_set: r.get(1)?,
        group: r.get(2)?,
        name: r.get(3)?,
        runner_id: r
            .get::<_, Option<i64>>(4)?
            .and_then(|v| u64::try_from(v).ok()),
        status: r.get(5)?,
        job_id: r.get(6)?,
        created_ms: r.get(7)?,
        ready_ms: r.get(8)?,
    })
}

const RCOLS: &str = "seq, scale_set, grp, name, runner_id, status, job_id, created_ms, ready_ms";

impl Store {
    /// Records message `message_id` of `scale_set` and what its job messages mean, in one
    /// transaction. A message id seen before changes nothing (`duplicate`).
    pub fn ss_apply(
        &self,
        scale_set: &str,
        message_id: i64,
        events: &[SsEvent],
    ) -> Result<SsApplied, StateError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let now = now_ms();
        let mut out = SsApplied::default();
        let n = tx.execute(
            "INSERT OR IGNORE INTO ss_messages (scale_set, message_id, received_ms, jobs) VALUES (?1, ?2, ?3, ?4)",
            params![scale_set, message_id, now, events.len() as i64],
        )?;
        if n == 0 {
            out.duplicate = true;
            return Ok(out);
        }
        for ev in events {
            match ev {
                SsEvent::Assigned { job, refusal } => {
                    let status = if refusal.is_some() {
                        "refused"
                    } else {
                        "assigned"
                    };
                    let prev: Option<String> = tx
                        .query_row(
                            "SELECT status FROM ss_jobs WHERE scale_set = ?1 AND job_id = ?2",
                            params![scale_set, job.job_id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    match prev.as_deref() {
                        None => {
                            tx.execute(
                                "INSERT INTO ss_jobs (scale_set, job_id, request_id, repo, run_id, workflow_ref, status, detail, assignments, assigned_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9)",
                                params![scale_set, job.job_id, job.request_id, job.repo, job.run_id, job.workflow_ref, status, refusal, now],
                            )?;
                        }
                        // Cancelled and assigned again: a new assignment of the same job.
                        Some("completed") => {
                            tx.execute(
                                "UPDATE ss_jobs SET status = ?3, detail = ?4, request_id = ?5, result = NULL, runner_name = NULL, assignments = assignments + 1, assigned_ms = ?6, completed_ms = NULL WHERE scale_set = ?1 AND job_id = ?2",
                                params![scale_set, job.job_id, status, refusal, job.request_id, now],
                            )?;
                        }
                        // Already known (assigned, refused or started): nothing new.
                        Some(_) => continue,
                    }
                    match refusal {
                        Some(why) => out.refused.push((job.clone(), why.clone())),
                        None => out.assigned.push(job.clone()),
                    }
                }
                SsEvent::Started { job, runner } => {
                    let n = tx.execute(
                        "UPDATE ss_jobs SET status = 'started', runner_name = ?3, started_ms = ?4 WHERE scale_set = ?1 AND job_id = ?2 AND status IN ('assigned', 'refused')",
                        params![scale_set, job.job_id, runner, now],
                    )?;
                    if n == 0 {
                        // Started without our seeing the assignment (a message acknowledged
                        // by an earlier serve whose database was lost): record it now.
                        tx.execute(
                            "INSERT OR IGNORE INTO ss_jobs (scale_set, job_id, request_id, repo, run_id, workflow_ref, status, runner_name, assignments, assigned_ms, started_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'started', ?7, 1, ?8, ?8)",
                            params![scale_set, job.job_id, job.request_id, job.repo, job.run_id, job.workflow_ref, runner, now],
                        )?;
                    }
                    // Bound to the runner, whatever its state: its sandbox may already have
                    // ended when the message is read (the runner is fast, the poll is not).
                    tx.execute(
                        "UPDATE ss_runners SET job_id = COALESCE(job_id, ?2), busy_ms = COALESCE(busy_ms, ?3), status = CASE WHEN status IN ('provisioning', 'starting', 'idle') THEN 'busy' ELSE status END WHERE name = ?1",
                        params![runner, job.job_id, now],
                    )?;
                    let row: Option<(String, Option<i64>)> = tx
                        .query_row(
                            "SELECT status, exit_code FROM ss_runners WHERE name = ?1",
                            params![runner],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    let ended = row.clone().filter(|(s, _)| !SS_ALIVE.contains(&s.as_str()));
                    out.started
                        .push((job.clone(), runner.clone(), row.is_some(), ended));
                }
                SsEvent::Completed {
                    job,
                    result,
                    runner,
                } => {
                    let n = tx.execute(
                        "UPDATE ss_jobs SET status = 'completed', result = ?3, completed_ms = ?4, runner_name = COALESCE(NULLIF(?5, ''), runner_name) WHERE scale_set = ?1 AND job_id = ?2 AND status != 'completed'",
                        params![scale_set, job.job_id, result, now, runner],
                    )?;
                    if n == 0 {
                        let known = tx
                            .query_row(
                                "SELECT 1 FROM ss_jobs WHERE scale_set = ?1 AND job_id = ?2",
                                params![scale_set, job.job_id],
                                |_| Ok(()),
                            )
                            .optional()?
                            .is_some();
                        if known {
                            continue;
                        }
                        tx.execute(
                            "INSERT INTO ss_jobs (scale_set, job_id, request_id, repo, run_id, workflow_ref, status, runner_name, result, assignments, assigned_ms, completed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'completed', ?7, ?8, 1, ?9, ?9)",
                            params![scale_set, job.job_id, job.request_id, job.repo, job.run_id, job.workflow_ref, runner, result, now],
                        )?;
                    }
                    out.completed
                        .push((job.clone(), result.clone(), runner.clone()));
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// A new runner of `scale_set` (group `group`) named `name`, `provisioning`.
    pub fn ss_runner_new(
        &self,
        scale_set: &str,
        group: &str,
        name: &str,
    ) -> Result<i64, StateError> {
        let c = self.lock();
        c.execute(
            "INSERT INTO ss_runners (scale_set, grp, name, status, created_ms) VALUES (?1, ?2, ?3, 'provisioning', ?4)",
            params![scale_set, group, name, now_ms()],
        )?;
        Ok(c.last_insert_rowid())
    }

    /// The runner was registered at GitHub with `id`; its sandbox is being started.
    pub fn ss_runner_registered(&self, seq: i64, id: u64) -> Result<(), StateError> {
        self.lock().execute(
            "UPDATE ss_runners SET runner_id = ?2, status = 'starting' WHERE seq = ?1 AND status = 'provisioning'",
            params![seq, i64::try_from(id).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    /// The runner's sandbox is up: idle (warm) unless a job already bound it.
    pub fn ss_runner_ready(&self, seq: i64) -> Result<(), StateError> {
        self.lock().execute(
            "UPDATE ss_runners SET ready_ms = ?2, status = CASE status WHEN 'starting' THEN 'idle' ELSE status END WHERE seq = ?1",
            params![seq, now_ms()],
        )?;
        Ok(())
    }

    /// The runner is over (`done`, `failed`, `retired`, `lost`). Returns the job bound to it
    /// at that moment, read under the same lock as the update: a `JobStarted` recorded later
    /// finds the runner ended (and reports the job's end itself), never both or neither.
    pub fn ss_runner_finished(
        &self,
        seq: i64,
        status: &str,
        exit_code: Option<i64>,
        detail: Option<&str>,
    ) -> Result<Option<String>, StateError> {
        let c = self.lock();
        c.execute(
            "UPDATE ss_runners SET status = ?2, exit_code = ?3, detail = ?4, finished_ms = ?5 WHERE seq = ?1",
            params![seq, status, exit_code, detail, now_ms()],
        )?;
        Ok(c.query_row(
            "SELECT job_id FROM ss_runners WHERE seq = ?1",
            params![seq],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
    }

    /// The runner is gone from GitHub.
    pub fn ss_runner_deleted(&self, seq: i64) -> Result<(), StateError> {
        self.lock().execute(
            "UPDATE ss_runners SET deleted_ms = ?2 WHERE seq = ?1",
            params![seq, now_ms()],
        )?;
        Ok(())
    }

    /// One runner.
    pub fn ss_runner(&self, seq: i64) -> Result<Option<SsRunner>, StateError> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {RCOLS} FROM ss_runners WHERE seq = ?1"),
                params![seq],
                runner_row,
            )
            .optional()?)
    }

    /// Runners that hold capacity, of every scale set (`None`) or one.
    pub fn ss_alive(&self, scale_set: Option<&str>) -> Result<Vec<SsRunner>, StateError> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {RCOLS} FROM ss_runners WHERE status IN ('provisioning', 'starting', 'idle', 'busy') AND (?1 IS NULL OR scale_set = ?1) ORDER BY seq"
        ))?;
        let rows = st.query_map(params![scale_set], runner_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runners over whose GitHub registration is not known to be deleted.
    pub fn ss_undeleted(&self) -> Result<Vec<SsRunner>, StateError> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {RCOLS} FROM ss_runners WHERE deleted_ms IS NULL AND status NOT IN ('provisioning', 'starting', 'idle', 'busy') ORDER BY seq"
        ))?;
        let rows = st.query_map([], runner_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every runner (tests, `serve status`).
    pub fn ss_runners(&self) -> Result<Vec<SsRunner>, StateError> {
        let c = self.lock();
        let mut st = c.prepare(&format!("SELECT {RCOLS} FROM ss_runners ORDER BY seq"))?;
        let rows = st.query_map([], runner_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Jobs of `scale_set` refused and not yet completed (they do not need a runner).
    pub fn ss_open_refused(&self, scale_set: &str) -> Result<i64, StateError> {
        Ok(self.lock().query_row(
            "SELECT COUNT(*) FROM ss_jobs WHERE scale_set = ?1 AND status = 'refused'",
            params![scale_set],
            |r| r.get(0),
        )?)
    }

    /// Jobs of `scale_set` started by a runner of airlock's that has already ended (their
    /// completion is on its way; they need no new runner).
    pub fn ss_started_by_ended(&self, scale_set: &str) -> Result<i64, StateError> {
        Ok(self.lock().query_row(
            "SELECT COUNT(*) FROM ss_jobs j JOIN ss_runners r ON r.name = j.runner_name WHERE j.scale_set = ?1 AND j.status = 'started' AND r.status NOT IN ('provisioning', 'starting', 'idle', 'busy')",
            params![scale_set],
            |r| r.get(0),
        )?)
    }

    /// `(job id, status, runner name, result, assignments)` of every job of `scale_set`.
    #[allow(clippy::type_complexity)]
    pub fn ss_jobs(
        &self,
        scale_set: &str,
    ) -> Result<Vec<(String, String, Option<String>, Option<String>, i64)>, StateError> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT job_id, status, runner_name, result, assignments FROM ss_jobs WHERE scale_set = ?1 ORDER BY assigned_ms, job_id",
        )?;
        let rows = st.query_map(params![scale_set], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Messages recorded for `scale_set`.
    pub fn ss_messages(&self, scale_set: &str) -> Result<i64, StateError> {
        Ok(self.lock().query_row(
            "SELECT COUNT(*) FROM ss_messages WHERE scale_set = ?1",
            params![scale_set],
            |r| r.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> SsJobRef {
        SsJobRef {
            job_id: id.into(),
            request_id: 1,
            repo: "o/r".into(),
            run_id: 9,
            workflow_ref: "o/r/.github/workflows/ci.yml@refs/heads/main".into(),
        }
    }

    #[test]
    fn a_message_is_applied_once_and_cancel_then_reassign_counts() {
        let st = Store::open_in_memory().expect("db");
        let seq = st.ss_runner_new("s", "g", "airlock-s-1").expect("runner");
        st.ss_runner_registered(seq, 77).expect("reg");
        st.ss_runner_ready(seq).expect("ready");
        let a = st
            .ss_apply(
                "s",
                1,
                &[SsEvent::Assigned {
                    job: job("j1"),
                    refusal: None,
                }],
            )
            .expect("apply");
        assert_eq!(a.assigned.len(), 1);
        // Redelivered after a crash: recognised by its id.
        let again = st
            .ss_apply(
                "s",
                1,
                &[SsEvent::Assigned {
                    job: job("j1"),
                    refusal: None,
                }],
            )
            .expect("apply");
        assert!(again.duplicate);
        // Cancelled, then assigned again.
        st.ss_apply(
            "s",
            2,
            &[SsEvent::Completed {
                job: job("j1"),
                result: "canceled".into(),
                runner: String::new(),
            }],
        )
        .expect("cancel");
        let r = st
            .ss_apply(
                "s",
                3,
                &[SsEvent::Assigned {
                    job: job("j1"),
                    refusal: None,
                }],
            )
            .expect("reassign");
        assert_eq!(r.assigned.len(), 1);
        let s = st
            .ss_apply(
                "s",
                4,
                &[SsEvent::Started {
                    job: job("j1"),
                    runner: "airlock-s-1".into(),
                }],
            )
            .expect("start");
        assert_eq!(
            s.started,
            vec![(job("j1"), "airlock-s-1".into(), true, None)]
        );
        let jobs = st.ss_jobs("s").expect("jobs");
        assert_eq!(jobs[0].1, "started");
        assert_eq!(jobs[0].4, 2, "two assignments");
        let alive = st.ss_alive(Some("s")).expect("alive");
        assert_eq!(alive[0].status, "busy");
        assert_eq!(alive[0].job_id.as_deref(), Some("j1"));
        // A runner airlock does not know.
        let f = st
            .ss_apply(
                "s",
                5,
                &[SsEvent::Started {
                    job: job("j2"),
                    runner: "someone-else".into(),
                }],
            )
            .expect("foreign");
        assert!(!f.started[0].2);
        assert_eq!(st.ss_messages("s").expect("n"), 5);
    }
}
