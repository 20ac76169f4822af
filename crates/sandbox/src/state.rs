//! Where airlock keeps its state, and the persisted lifecycle of a job.
//!
//! The state file of a job is written before each resource is created and removed only after
//! teardown finished, so `airlock gc` can always finish what a killed airlock started.

use std::io::Write;
use std::path::{Path, PathBuf};

use airlock_policy::ExecutorKind;
use serde::{Deserialize, Serialize};

use crate::error::SandboxError;
use crate::plan::JobId;

/// airlock's directories.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Runtime state: job dirs, executor state. The CLI's default is `/run/airlock` (tmpfs: a
    /// reboot clears it, as it clears every mount and process it describes).
    pub state: PathBuf,
    /// Persistent data: the image store and the audit log (CLI default `/var/lib/airlock`).
    pub data: PathBuf,
}

impl Paths {
    /// Directory holding each job's directory and state file.
    pub fn jobs(&self) -> PathBuf {
        self.state.join("jobs")
    }
    /// A job's directory (bundle, mounts).
    pub fn job_dir(&self, id: &JobId) -> PathBuf {
        self.jobs().join(id.as_str())
    }
    /// A job's state file.
    pub fn state_file(&self, id: &JobId) -> PathBuf {
        self.jobs().join(format!("{id}.json"))
    }
    /// The state root of an executor.
    pub fn executor_root(&self, e: ExecutorKind) -> PathBuf {
        self.state.join(e.as_str())
    }
    /// Shared, read-only base layers of `host` jobs.
    pub fn base_cache(&self) -> PathBuf {
        self.state.join("base")
    }
    /// The address pool of `range` (`AIRLOCK_NET_POOL`), its leases kept in the state dir.
    pub fn pool(&self, range: &str) -> Result<airlock_net::Pool, SandboxError> {
        airlock_net::Pool::new(range, airlock_net::pool::lease_dir(&self.state))
            .map_err(SandboxError::Network)
    }
    /// The audit log directory.
    pub fn audit(&self) -> PathBuf {
        self.data.join("audit")
    }
    /// Learned per-group baselines of the `new-destination` detector.
    pub fn baselines(&self) -> PathBuf {
        self.data.join("baselines")
    }
    /// Alerts the webhook sink could not deliver yet.
    pub fn alert_outbox(&self) -> PathBuf {
        self.data.join("alerts").join("outbox")
    }
    /// The image store.
    pub fn images(&self) -> PathBuf {
        self.data.join("images")
    }

    /// Creates the state directories, owner-only: job bundles can hold secrets briefly.
    pub fn ensure(&self) -> Result<(), SandboxError> {
        use std::os::unix::fs::DirBuilderExt;
        for d in [self.state.clone(), self.jobs()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(SandboxError::io("creating state directory", &d))?;
        }
        Ok(())
    }
}

/// Where a job is in its life. Each value is persisted before the step it names is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Directories and mounts are being created.
    Preparing,
    /// The executor is creating the container.
    Creating,
    /// The job's command runs.
    Running,
    /// Teardown is under way.
    TearingDown,
}

impl Status {
    /// Guard: whether a job may move from `self` to `to`. A job only moves forward; teardown
    /// may start from anywhere (and again, when gc finishes one a crash interrupted).
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match to {
            Preparing => false,
            Creating => self == Preparing,
            Running => self == Creating,
            TearingDown => true,
        }
    }
}

/// A process, identified so that a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    /// Host pid.
    pub pid: i32,
    /// Start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
}

impl ProcRef {
    /// Identifies a live process.
    pub fn of(pid: i32) -> Option<Self> {
        proc_start_time(pid).map(|start_time| Self { pid, start_time })
    }
    /// Whether this very process still runs (not merely its pid; a zombie does not count).
    pub fn alive(&self) -> bool {
        proc_stat(self.pid)
            .is_some_and(|(state, t)| t == self.start_time && state != 'Z' && state != 'X')
    }
}

fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// (state, start time) of a process.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// The persisted state of one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobState {
    /// The job.
    pub id: JobId,
    /// Its group.
    pub group: String,
    /// Its executor.
    pub executor: ExecutorKind,
    /// Where it is.
    pub status: Status,
    /// The airlock process that owns it.
    pub owner: ProcRef,
    /// The single-threaded helper that drives the executor.
    pub helper: Option<ProcRef>,
    /// The job's init process (pid 1 of its pid namespace).
    pub init: Option<ProcRef>,
    /// Its cgroup path (relative to each hierarchy).
    pub cgroup: String,
    /// Unix time of creation.
    pub created: u64,
    /// The job's network, once its addresses are leased.
    #[serde(default)]
    pub net: Option<airlock_net::NetState>,
    /// The job this sandbox is a container of (its network and budget are that job's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobId>,
    /// Cgroups of the job besides its own (its containers' shared budget), removed after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_cgroups: Vec<String>,
}

impl JobState {
    /// The state of a sandbox of `plan` about to be prepared, owned by this process; `parent`
    /// is the job it is a container of.
    pub fn new(plan: &crate::JobPlan, parent: Option<JobId>) -> Result<Self, SandboxError> {
        let owner = ProcRef::of(std::process::id() as i32).ok_or_else(|| SandboxError::State {
            path: "/proc/self".into(),
            message: "cannot read own start time".into(),
        })?;
        Ok(Self {
            id: plan.id.clone(),
            group: plan.group.clone(),
            executor: plan.executor,
            status: Status::Preparing,
            owner,
            helper: None,
            init: None,
            cgroup: plan.cgroup.clone(),
            created: now(),
            net: None,
            parent,
            extra_cgroups: Vec::new(),
        })
    }

    /// Writes the state atomically (temporary file, rename). No fsync: the state describes
    /// mounts, processes and cgroups, which a power loss removes as well; what must hold is
    /// that another process (gc) never reads a half-written file, and rename gives that.
    pub fn save(&self, paths: &Paths) -> Result<(), SandboxError> {
        let path = paths.state_file(&self.id);
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(self).map_err(|source| SandboxError::StateFormat {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(SandboxError::io("writing", &tmp))?;
        f.write_all(&data)
            .map_err(SandboxError::io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(SandboxError::io("renaming", &path))
    }

    /// Moves the job to `to` (refused by [`Status::can_become`] unless it is the next step)
    /// and persists it before the step is taken.
    pub fn advance(&mut self, to: Status, paths: &Paths) -> Result<(), SandboxError> {
        if !self.status.can_become(to) {
            return Err(SandboxError::Transition {
                job: self.id.to_string(),
                from: self.status,
                to,
            });
        }
        self.status = to;
        self.save(paths)
    }

    /// Reads a state file.
    pub fn load(path: &Path) -> Result<Self, SandboxError> {
        let data = std::fs::read(path).map_err(SandboxError::io("reading", path))?;
        serde_json::from_slice(&data).map_err(|source| SandboxError::StateFormat {
            path: path.to_owned(),
            source,
        })
    }

    /// Every job state under `paths`, with the files that could not be read.
    pub fn list(paths: &Paths) -> (Vec<JobState>, Vec<SandboxError>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let Ok(rd) = std::fs::read_dir(paths.jobs()) else {
            return (ok, bad);
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                match Self::load(&p) {
                    Ok(s) => ok.push(s),
                    Err(err) => bad.push(err),
                }
            }
        }
        (ok, bad)
    }
}

/// Unix time now, in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_only_moves_forward_and_teardown_is_always_allowed() {
        use Status::*;
        let all = [Preparing, Creating, Running, TearingDown];
        for from in all {
            assert!(from.can_become(TearingDown), "{from:?}");
            assert!(!from.can_become(Preparing), "{from:?}");
        }
        assert!(Preparing.can_become(Creating) && Creating.can_become(Running));
        assert!(!Preparing.can_become(Running) && !Running.can_become(Creating));
        assert!(!TearingDown.can_become(Running) && !Running.can_become(Running));
    }

    #[test]
    fn a_refused_step_is_not_persisted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = Paths {
            state: dir.path().to_owned(),
            data: dir.path().to_owned(),
        };
        paths.ensure().expect("dirs");
        let mut st = JobState {
            id: JobId::random(),
            group: "g".into(),
            executor: ExecutorKind::Libcontainer,
            status: Status::Preparing,
            owner: ProcRef::of(std::process::id() as i32).expect("own start time"),
            helper: None,
            init: None,
            cgroup: "airlock/x".into(),
            created: 0,
            net: None,
            parent: None,
            extra_cgroups: Vec::new(),
        };
        assert!(matches!(
            st.advance(Status::Running, &paths),
            Err(SandboxError::Transition { .. })
        ));
        assert!(!paths.state_file(&st.id).exists());
        st.advance(Status::Creating, &paths).expect("next step");
        let back = JobState::load(&paths.state_file(&st.id)).expect("saved");
        assert_eq!(back.status, Status::Creating);
    }
}
