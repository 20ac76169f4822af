//! The SQLite store of `airlock serve` (WAL): deliveries, jobs and runners. Every transition
//! is written before it is acted on, so a restarted serve knows what a crash interrupted.
//!
//! `synchronous = NORMAL` in WAL mode: a commit survives a crash of serve (the case that
//! matters: kill -9); the last commits may be lost on power failure, which loses at most a
//! few deliveries that GitHub then shows as failed and can redeliver.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

mod scaleset;
pub use scaleset::{SsApplied, SsEvent, SsJobRef, SsRunner, SS_ALIVE};

/// Where a job is in its lifecycle. Active states are those a crash can interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Received, waiting for a group and capacity.
    Queued,
    /// No group takes it (terminal).
    Refused,
    /// Capacity taken; the JIT runner is being registered.
    Provisioning,
    /// The sandbox is being started.
    Starting,
    /// The runner runs in its sandbox.
    Running,
    /// The sandbox exited and everything was cleaned up (terminal).
    Done,
    /// Provisioning or the sandbox failed (terminal).
    Failed,
    /// Serve stopped while the job was active; reconciliation cleaned up (terminal; a job is
    /// never run twice).
    Lost,
}

impl JobStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Refused => "refused",
            JobStatus::Provisioning => "provisioning",
            JobStatus::Starting => "starting",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Lost => "lost",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "refused" => JobStatus::Refused,
            "provisioning" => JobStatus::Provisioning,
            "starting" => JobStatus::Starting,
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            "lost" => JobStatus::Lost,
            _ => return None,
        })
    }
    /// Holds capacity and may own a runner and a sandbox.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobStatus::Provisioning | JobStatus::Starting | JobStatus::Running
        )
    }
    /// Guard: whether moving from `self` to `to` is allowed.
    pub fn can_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        match to {
            Refused | Provisioning => self == Queued,
            Starting => self == Provisioning,
            Running => self == Starting,
            Done | Failed | Lost => self.is_active(),
            Queued => false,
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("serve state database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A transition its guard refuses.
    #[error("job {seq}: cannot go from {from} to {to}")]
    Transition {
        /// The job.
        seq: i64,
        /// Current status.
        from: &'static str,
        /// Requested status.
        to: &'static str,
    },
    /// No such job.
    #[error("job {0} is not in the database")]
    NoJob(i64),
    /// A status the code does not know (a newer database?).
    #[error("job {seq}: unknown status {status:?} in the database")]
    BadStatus {
        /// The job.
        seq: i64,
        /// What was stored.
        status: String,
    },
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// Queue order (and airlock's id of the job).
    pub seq: i64,
    /// GitHub's job id.
    pub gh_job_id: u64,
    /// `owner/name`.
    pub repo: String,
    /// The raw `workflow_job` payload (used for routing).
    pub payload: String,
    /// The group it was routed to.
    pub group: Option<String>,
    /// Lifecycle status.
    pub status: JobStatus,
    /// Name of its runner (fixed before registration).
    pub runner_name: Option<String>,
    /// GitHub id of its runner, once registered.
    pub runner_id: Option<u64>,
    /// Unix ms when queued.
    pub queued_ms: i64,
    /// Unix ms when capacity was given to it.
    pub provisioned_ms: Option<i64>,
    /// Exit code of the sandbox.
    pub exit_code: Option<i64>,
    /// Why it failed or was refused.
    pub detail: Option<String>,
    /// Last `workflow_job` action seen for this job id (`in_progress`, `completed`).
    pub gh_action: Option<String>,
}

/// What [`Store::prune`] deleted, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Deliveries.
    pub deliveries: usize,
    /// Jobs.
    pub jobs: usize,
    /// Runners.
    pub runners: usize,
    /// Scale-set messages.
    pub ss_messages: usize,
    /// Scale-set jobs.
    pub ss_jobs: usize,
    /// Scale-set runners.
    pub ss_runners: usize,
}

impl PruneReport {
    /// Rows deleted in all.
    pub fn total(&self) -> usize {
        self.deliveries
            + self.jobs
            + self.runners
            + self.ss_messages
            + self.ss_jobs
            + self.ss_runners
    }
}

/// What [`Store::ingest`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// The delivery id was seen before: nothing done.
    Duplicate,
    /// Recorded; nothing to run.
    Recorded,
    /// A new queued job, with its sequence number.
    Enqueued(i64),
}

/// The store. One connection behind a mutex: every operation is a short transaction.
pub struct Store {
    conn: Mutex<Connection>,
}

/// What a new queued job carries.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// GitHub's job id.
    pub gh_job_id: u64,
    /// `owner/name`.
    pub repo: &'a str,
    /// The raw payload.
    pub payload: &'a str,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
  id TEXT PRIMARY KEY,
  event TEXT NOT NULL,
  action TEXT,
  received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  gh_job_id INTEGER NOT NULL UNIQUE,
  repo TEXT NOT NULL,
  payload TEXT NOT NULL,
  grp TEXT,
  status TEXT NOT NULL,
  runner_name TEXT,
  runner_id INTEGER,
  queued_ms INTEGER NOT NULL,
  provisioned_ms INTEGER,
  finished_ms INTEGER,
  exit_code INTEGER,
  detail TEXT,
  gh_action TEXT,
  grant_no INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS runners (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  job_seq INTEGER NOT NULL,
  registered_ms INTEGER NOT NULL,
  deleted_ms INTEGER
);
";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const COLS: &str = "seq, gh_job_id, repo, payload, grp, status, runner_name, runner_id, queued_ms, provisioned_ms, exit_code, detail, gh_action";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(JobRow, String)> {
    let status: String = r.get(5)?;
    Ok((
        JobRow {
            seq: r.get(0)?,
            gh_job_id: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
            repo: r.get(2)?,
            payload: r.get(3)?,
            group: r.get(4)?,
            status: JobStatus::Queued,
            runner_name: r.get(6)?,
            runner_id: r.get::<_, Option<i64>>(7)?.and_then(|v| v.try_into().ok()),
            queued_ms: r.get(8)?,
            provisioned_ms: r.get(9)?,
            exit_code: r.get(10)?,
            detail: r.get(11)?,
            gh_action: r.get(12)?,
        },
        status,
    ))
}

fn finish_row((mut j, s): (JobRow, String)) -> Result<JobRow, StateError> {
    j.status = JobStatus::parse(&s).ok_or(StateError::BadStatus {
        seq: j.seq,
        status: s,
    })?;
    Ok(j)
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        Self::init(Connection::open(path)?)
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StateError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StateError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(scaleset::SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a delivery and, for a queued job, the job — in one transaction, so a crash
    /// cannot keep one without the other. A delivery id seen before is a no-op.
    pub fn ingest(
        &self,
        delivery: &str,
        event: &str,
        action: Option<&str>,
        job: Option<NewJob<'_>>,
    ) -> Result<Ingest, StateError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let now = now_ms();
        let n = tx.execute(
            "INSERT OR IGNORE INTO deliveries (id, event, action, received_ms) VALUES (?1, ?2, ?3, ?4)",
            params![delivery, event, action, now],
        )?;
        if n == 0 {
            return Ok(Ingest::Duplicate);
        }
        let mut out = Ingest::Recorded;
        if let Some(j) = job {
            let gh = i64::try_from(j.gh_job_id).unwrap_or(i64::MAX);
            let n = tx.execute(
                "INSERT OR IGNORE INTO jobs (gh_job_id, repo, payload, status, queued_ms) VALUES (?1, ?2, ?3, 'queued', ?4)",
                params![gh, j.repo, j.payload, now],
            )?;
            if n == 1 {
                out = Ingest::Enqueued(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Records what GitHub says about a job (`in_progress`, `completed`) and which runner
    /// took it.
    pub fn github_action(
        &self,
        gh_job_id: u64,
        action: &str,
        runner_name: Option<&str>,
    ) -> Result<(), StateError> {
        let gh = i64::try_from(gh_job_id).unwrap_or(i64::MAX);
        self.lock().execute(
            "UPDATE jobs SET gh_action = ?2 WHERE gh_job_id = ?1",
            params![gh, action],
        )?;
        if let Some(r) = runner_name {
            // Our runner took another job than the one it was registered for (GitHub gives
            // a JIT runner any job its labels match): note it on the registering job.
            self.lock().execute(
                "UPDATE jobs SET gh_action = ?2 WHERE runner_name = ?1 AND gh_job_id != ?3",
                params![r, format!("runner:{action}"), gh],
            )?;
        }
        Ok(())
    }

    /// One job.
    pub fn job(&self, seq: i64) -> Result<JobRow, StateError> {
        let c = self.lock();
        let r = c
            .query_row(
                &format!("SELECT {COLS} FROM jobs WHERE seq = ?1"),
                [seq],
                row,
            )
            .optional()?
            .ok_or(StateError::NoJob(seq))?;
        finish_row(r)
    }

    fn select(&self, filter: &str) -> Result<Vec<JobRow>, StateError> {
        let c = self.lock();
        let mut st = c.prepare(&format!("SELECT {COLS} FROM jobs {filter} ORDER BY seq"))?;
        let rows = st.query_map([], row)?;
        rows.map(|r| finish_row(r?)).collect()
    }

    /// Queued jobs, oldest first.
    pub fn queued(&self) -> Result<Vec<JobRow>, StateError> {
        self.select("WHERE status = 'queued'")
    }

    /// Jobs that hold capacity (provisioning, starting, running), oldest first.
    pub fn active(&self) -> Result<Vec<JobRow>, StateError> {
        self.select("WHERE status IN ('provisioning', 'starting', 'running')")
    }

    /// Jobs in the order they were given capacity.
    pub fn grant_order(&self) -> Result<Vec<JobRow>, StateError> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {COLS} FROM jobs WHERE grant_no IS NOT NULL ORDER BY grant_no"
        ))?;
        let rows = st.query_map([], row)?;
        rows.map(|r| finish_row(r?)).collect()
    }

    /// Every job, oldest first.
    pub fn all(&self) -> Result<Vec<JobRow>, StateError> {
        self.select("")
    }

    /// Moves a job to `to` if its guard allows, in one transaction; `apply` sets other
    /// columns in the same transaction.
    fn transition_with(
        &self,
        seq: i64,
        to: JobStatus,
        extra: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<(), StateError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let cur: String = tx
            .query_row("SELECT status FROM jobs WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or(StateError::NoJob(seq))?;
        let from = JobStatus::parse(&cur).ok_or(StateError::BadStatus {
            seq,
            status: cur.clone(),
        })?;
        if !from.can_become(to) {
            return Err(StateError::Transition {
                seq,
                from: from.as_str(),
                to: to.as_str(),
            });
        }
        let to_s = to.as_str();
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&seq, &to_s];
        all.extend_from_slice(args);
        tx.execute(
            &format!("UPDATE jobs SET status = ?2{extra} WHERE seq = ?1"),
            all.as_slice(),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remembers the group a queued job was routed to (it stays queued).
    pub fn set_group(&self, seq: i64, group: &str) -> Result<(), StateError> {
        self.lock().execute(
            "UPDATE jobs SET grp = ?2 WHERE seq = ?1 AND status = 'queued'",
            params![seq, group],
        )?;
        Ok(())
    }

    /// Queued → refused, with the reason.
    pub fn refuse(&self, seq: i64, why: &str) -> Result<(), StateError> {
        self.transition_with(seq, JobStatus::Refused, ", detail = ?3", &[&why])
    }

    /// Queued → provisioning: capacity is taken and the runner name fixed.
    pub fn provision(&self, seq: i64, group: &str, runner_name: &str) -> Result<(), StateError> {
        let now = now_ms();
        self.transition_with(
            seq,
            JobStatus::Provisioning,
            ", grp = ?3, runner_name = ?4, provisioned_ms = ?5, \
             grant_no = (SELECT COALESCE(MAX(grant_no), 0) + 1 FROM jobs)",
            &[&group, &runner_name, &now],
        )
    }

    /// Records a registered runner (before it is used).
    pub fn runner_registered(&self, seq: i64, id: u64, name: &str) -> Result<(), StateError> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        let mut c = self.lock();
        let tx = c.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO runners (id, name, job_seq, registered_ms) VALUES (?1, ?2, ?3, ?4)",
            params![id, name, seq, now_ms()],
        )?;
        tx.execute(
            "UPDATE jobs SET runner_id = ?2 WHERE seq = ?1",
            params![seq, id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records that a runner is gone from GitHub.
    pub fn runner_deleted(&self, id: u64) -> Result<(), StateError> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        self.lock().execute(
            "UPDATE runners SET deleted_ms = ?2 WHERE id = ?1",
            params![id, now_ms()],
        )?;
        Ok(())
    }

    /// Runners registered and not known to be deleted: `(id, name, job seq)`.
    pub fn live_runners(&self) -> Result<Vec<(u64, String, i64)>, StateError> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT id, name, job_seq FROM runners WHERE deleted_ms IS NULL ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                r.get(1)?,
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Provisioning → starting (before the sandbox is started).
    pub fn starting(&self, seq: i64) -> Result<(), StateError> {
        self.transition_with(seq, JobStatus::Starting, "", &[])
    }

    /// Starting → running (the runner process started).
    pub fn running(&self, seq: i64) -> Result<(), StateError> {
        self.transition_with(seq, JobStatus::Running, "", &[])
    }

    /// Active → done / failed / lost.
    pub fn finish(
        &self,
        seq: i64,
        to: JobStatus,
        exit_code: Option<i64>,
        detail: Option<&str>,
    ) -> Result<(), StateError> {
        let now = now_ms();
        self.transition_with(
            seq,
            to,
            ", finished_ms = ?3, exit_code = ?4, detail = ?5",
            &[&now, &exit_code, &detail],
        )
    }

    /// Deletes what serve no longer needs, older than `cutoff_ms` (Unix ms): deliveries
    /// (their ids only dedupe GitHub's redeliveries, which come within days), jobs in a
    /// terminal state, runners known deleted, and the scale-set rows of the same kinds
    /// (messages, completed jobs, ended runners whose registration is gone). Active rows are
    /// never deleted. Keeps serve's database bounded on a busy host.
    pub fn prune(&self, cutoff_ms: i64) -> Result<PruneReport, StateError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let r = PruneReport {
            deliveries: tx.execute(
                "DELETE FROM deliveries WHERE received_ms < ?1",
                params![cutoff_ms],
            )?,
            jobs: tx.execute(
                "DELETE FROM jobs WHERE status IN ('refused', 'done', 'failed', 'lost') AND COALESCE(finished_ms, queued_ms) < ?1",
                params![cutoff_ms],
            )?,
            runners: tx.execute(
                "DELETE FROM runners WHERE deleted_ms IS NOT NULL AND deleted_ms < ?1",
                params![cutoff_ms],
            )?,
            ss_messages: tx.execute(
                "DELETE FROM ss_messages WHERE received_ms < ?1",
                params![cutoff_ms],
            )?,
            ss_jobs: tx.execute(
                "DELETE FROM ss_jobs WHERE status = 'completed' AND completed_ms < ?1",
                params![cutoff_ms],
            )?,
            ss_runners: tx.execute(
                "DELETE FROM ss_runners WHERE status NOT IN ('provisioning', 'starting', 'idle', 'busy') AND deleted_ms IS NOT NULL AND COALESCE(finished_ms, created_ms) < ?1",
                params![cutoff_ms],
            )?,
        };
        tx.commit()?;
        Ok(r)
    }

    /// Number of recorded deliveries.
    pub fn deliveries(&self) -> Result<u64, StateError> {
        let n: i64 = self
            .lock()
            .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_deletes_old_finished_rows_and_never_active_ones() {
        let st = Store::open_in_memory().expect("db");
        let job = |id: u64| NewJob {
            gh_job_id: id,
            repo: "o/r",
            payload: "{}",
        };
        // An old finished job, an old active one, a recent finished one.
        for id in [1u64, 2, 3] {
            assert!(matches!(
                st.ingest(
                    &format!("d{id}"),
                    "workflow_job",
                    Some("queued"),
                    Some(job(id))
                )
                .expect("ingest"),
                Ingest::Enqueued(_)
            ));
        }
        for seq in [1i64, 2, 3] {
            st.provision(seq, "g", &format!("airlock-{seq}"))
                .expect("prov");
        }
        st.finish(1, JobStatus::Failed, Some(1), None)
            .expect("finish");
        st.finish(3, JobStatus::Done, Some(0), None)
            .expect("finish");
        let r1 = st.ss_runner_new("s", "g", "airlock-s-1").expect("r");
        st.ss_runner_finished(r1, "done", Some(0), None)
            .expect("fin");
        st.ss_runner_deleted(r1).expect("del");
        let r2 = st.ss_runner_new("s", "g", "airlock-s-2").expect("r");
        st.ss_apply("s", 1, &[]).expect("msg");
        {
            let c = st.lock();
            c.execute(
                "UPDATE jobs SET queued_ms = 0, finished_ms = 0 WHERE seq IN (1, 2)",
                [],
            )
            .expect("age");
            c.execute(
                "UPDATE deliveries SET received_ms = 0 WHERE id IN ('d1', 'd2')",
                [],
            )
            .expect("age");
            c.execute("UPDATE ss_runners SET created_ms = 0, finished_ms = 0", [])
                .expect("age");
            c.execute("UPDATE ss_messages SET received_ms = 0", [])
                .expect("age");
        }
        let r = st.prune(1_000).expect("prune");
        assert_eq!(r.deliveries, 2);
        assert_eq!(r.jobs, 1, "only the old finished job");
        assert_eq!(r.ss_runners, 1, "only the ended, deleted runner");
        assert_eq!(r.ss_messages, 1);
        assert_eq!(
            st.job(2).expect("active job kept").status,
            JobStatus::Provisioning
        );
        assert!(st.job(3).is_ok(), "recent job kept");
        assert!(st.ss_runner(r2).expect("q").is_some(), "active runner kept");
    }

    fn job(id: u64) -> NewJob<'static> {
        NewJob {
            gh_job_id: id,
            repo: "o/r",
            payload: "{}",
        }
    }

    #[test]
    fn dedupes_deliveries_and_jobs() {
        let s = Store::open_in_memory().expect("db");
        assert_eq!(
            s.ingest("d1", "workflow_job", Some("queued"), Some(job(7)))
                .expect("ok"),
            Ingest::Enqueued(1)
        );
        assert_eq!(
            s.ingest("d1", "workflow_job", Some("queued"), Some(job(7)))
                .expect("ok"),
            Ingest::Duplicate
        );
        // Another delivery of the same job (GitHub re-sent it under a new id): no second job.
        assert_eq!(
            s.ingest("d2", "workflow_job", Some("queued"), Some(job(7)))
                .expect("ok"),
            Ingest::Recorded
        );
        assert_eq!(s.queued().expect("q").len(), 1);
        assert_eq!(s.deliveries().expect("n"), 2);
    }

    #[test]
    fn guards_refuse_wrong_transitions() {
        let s = Store::open_in_memory().expect("db");
        s.ingest("d", "workflow_job", None, Some(job(1)))
            .expect("ok");
        assert!(matches!(
            s.running(1),
            Err(StateError::Transition {
                from: "queued",
                to: "running",
                ..
            })
        ));
        s.provision(1, "g", "airlock-1").expect("provision");
        assert!(s.provision(1, "g", "airlock-1").is_err(), "twice");
        s.runner_registered(1, 99, "airlock-1").expect("runner");
        s.starting(1).expect("starting");
        s.running(1).expect("running");
        assert_eq!(s.active().expect("a").len(), 1);
        s.finish(1, JobStatus::Done, Some(0), None).expect("done");
        assert!(
            s.finish(1, JobStatus::Lost, None, None).is_err(),
            "terminal"
        );
        let j = s.job(1).expect("job");
        assert_eq!(
            (j.status, j.runner_id, j.exit_code),
            (JobStatus::Done, Some(99), Some(0))
        );
        assert_eq!(s.live_runners().expect("r").len(), 1);
        s.runner_deleted(99).expect("del");
        assert!(s.live_runners().expect("r").is_empty());
    }

    #[test]
    fn survives_reopen() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("serve.db");
        {
            let s = Store::open(&p).expect("db");
            s.ingest("d", "workflow_job", None, Some(job(1)))
                .expect("ok");
            s.provision(1, "g", "airlock-1").expect("p");
        }
        let s = Store::open(&p).expect("reopen");
        assert_eq!(s.active().expect("a")[0].status, JobStatus::Provisioning);
        assert_eq!(
            s.ingest("d", "workflow_job", None, Some(job(1)))
                .expect("ok"),
            Ingest::Duplicate
        );
    }
}
