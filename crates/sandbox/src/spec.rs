//! Plan → OCI runtime spec. The spec is the contract between the plan and every executor;
//! this module is pure and unit-tested without root.
//!
//! The spec is written as JSON and parsed into `oci_spec::runtime::Spec`, so every field is
//! checked against the OCI types; the JSON form reads like the documents it mirrors.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::error::SandboxError;
use crate::plan::{JobPlan, RootfsPlan};
use crate::seccomp;

/// Parent of every job's cgroup, on v1 (per controller) and v2 alike.
pub const CGROUP_PARENT: &str = "airlock";
/// The job's `oom_score_adj`: the highest, so that under host memory pressure the job dies
/// first. The job cannot lower it: its `/proc` is read-only (checked before it starts).
pub const OOM_SCORE_ADJ: i32 = 1000;
/// CFS period used for the CPU quota.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Top-level host directories that on a merged-/usr system are symlinks into `/usr`. Each is
/// recreated as the same symlink, or bind-mounted read-only where it is a real directory.
pub const USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// How the host's top-level directories look: decided once per job from `/` (or a test's
/// fake), so that the spec itself stays a pure function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLayout {
    /// `(name, target)` for each of [`USR_LINKS`] that is a symlink on the host.
    pub symlinks: Vec<(String, String)>,
    /// Names of [`USR_LINKS`] that are real directories on the host.
    pub dirs: Vec<String>,
}

impl HostLayout {
    /// Reads the layout of the host rooted at `root`.
    pub fn detect(root: &Path) -> Self {
        let mut l = Self::default();
        for name in USR_LINKS {
            let p = root.join(name);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(t) = std::fs::read_link(&p) {
                        l.symlinks
                            .push(((*name).to_owned(), t.to_string_lossy().into_owned()));
                    }
                }
                Ok(m) if m.is_dir() => l.dirs.push((*name).to_owned()),
                _ => {}
            }
        }
        l
    }
}

/// The cgroup path of a job, relative to each hierarchy's root.
pub fn cgroup_path(plan_id: &str) -> String {
    format!("/{CGROUP_PARENT}/{plan_id}")
}

fn ro_bind(source: &str, dest: &str) -> Value {
    json!({
        "destination": dest, "type": "bind", "source": source,
        "options": ["rbind", "ro", "nosuid", "nodev"]
    })
}

/// The job's mounts: kernel filesystems (its `/proc` read-only), and for a host-rootfs job
/// the host's `/usr` and its symlinked top directories, read-only.
fn mounts(plan: &JobPlan, host: &HostLayout) -> Vec<serde_json::Value> {
    let mut mounts = vec![
        // Read-only: a job must not write its own (or its pid 1's) /proc files. Above all
        // `oom_score_adj`, which it could otherwise lower from 1000 ("the job dies first")
        // to its floor — raised to 1000 itself only with CAP_SYS_RESOURCE, which not every
        // host gives root (docs/sandbox.md).
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=755", "size=16m"]}),
    ];
    if plan.rootfs == RootfsPlan::Host {
        mounts.push(ro_bind("/usr", "/usr"));
        for d in &host.dirs {
            mounts.push(ro_bind(&format!("/{d}"), &format!("/{d}")));
        }
        mounts.push(ro_bind("/etc/ssl/certs", "/etc/ssl/certs"));
    }
    for b in &plan.binds {
        let mut options = vec!["rbind", "nosuid", "nodev"];
        if b.readonly {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": b.dest, "type": "bind",
            "source": b.source.to_string_lossy(), "options": options
        }));
    }
    mounts
}

/// Builds the OCI runtime spec of a job. `rlimit_nofile_max` is the hard RLIMIT_NOFILE airlock
/// itself runs with: hard limits cannot be raised here (no CAP_SYS_RESOURCE), so the job's
/// limit is the policy's value or that ceiling, whichever is lower.
pub fn build(
    plan: &JobPlan,
    host: &HostLayout,
    rlimit_nofile_max: u64,
    netns: Option<&Path>,
    seccomp_listener: Option<&Path>,
) -> Result<Spec, SandboxError> {
    let mut env: Vec<String> = plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(
        plan.secrets
            .iter()
            .map(|(k, v)| format!("{k}={}", v.expose())),
    );
    let nofile = plan.limits.nofile.min(rlimit_nofile_max);

    let mounts = mounts(plan, host);

    let cpus = plan.limits.cpus;
    let quota = ((cpus * CPU_PERIOD_US as f64).round() as i64).max(1000);
    let mem = i64::try_from(plan.limits.memory.0).map_err(|_| SandboxError::LimitTooLarge {
        what: "memory",
        value: plan.limits.memory.0,
    })?;

    // The job's prepared network namespace, or a fresh one with loopback only.
    let net_ns = match netns {
        Some(p) => json!({"type": "network", "path": p}),
        None => json!({"type": "network"}),
    };
    let doc = json!({
        "ociVersion": "1.0.2",
        "hostname": format!("airlock-{}", &plan.id.as_str()[1..9]),
        "root": { "path": "rootfs", "readonly": false },
        "process": {
            "terminal": false,
            "user": { "uid": plan.user.uid, "gid": plan.user.gid, "additionalGids": [] },
            "args": plan.argv,
            "env": env,
            "cwd": plan.cwd,
            "capabilities": { "bounding": [], "effective": [], "inheritable": [],
                              "permitted": [], "ambient": [] },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile },
                { "type": "RLIMIT_CORE", "hard": 0, "soft": 0 }
            ],
            "noNewPrivileges": true,
            "oomScoreAdj": OOM_SCORE_ADJ
        },
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                {"type": "uts"}, net_ns, {"type": "cgroup"}
            ],
            "cgroupsPath": plan.cgroup,
            "resources": {
                "devices": [ {"allow": false, "access": "rwm"} ],
                "memory": { "limit": mem },
                "pids": { "limit": i64::from(plan.limits.pids) },
                "cpu": { "quota": quota, "period": CPU_PERIOD_US }
            },
            "maskedPaths": masked_paths(),
            "readonlyPaths": oci_spec::runtime::get_default_readonly_paths(),
            "seccomp": seccomp::oci_profile(seccomp_listener, plan.executor)
        }
    });
    serde_json::from_value(doc).map_err(SandboxError::Spec)
}

/// Bind-mounts each protected program's execute-only copy over its path in the job
/// (crate::protect), after every other mount so that a path below `/usr` lands on the host's
/// `/usr` bind. Read-only: the job cannot chmod or replace it.
pub fn add_protected(spec: &mut Spec, protected: &[crate::protect::Protected]) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for p in protected {
        mounts.push(
            oci_spec::runtime::MountBuilder::default()
                .destination(&p.path)
                .typ("bind")
                .source(&p.copy)
                .options(
                    ["bind", "ro", "nosuid", "nodev"]
                        .map(str::to_owned)
                        .to_vec(),
                )
                .build()
                .expect("every field of a bind mount is set"),
        );
    }
    spec.set_mounts(Some(mounts));
}

/// The job paths of the protected programs in a spec: the destinations of the mounts whose
/// source is in `job_dir`'s protect directory.
pub fn protected_paths(spec: &Spec, job_dir: &Path) -> Vec<String> {
    let dir = job_dir.join(crate::protect::DIR);
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| m.source().as_deref().is_some_and(|s| s.starts_with(&dir)))
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect()
}

/// OCI's default masked paths plus the few that the OCI list predates.
fn masked_paths() -> Vec<String> {
    let mut m = oci_spec::runtime::get_default_maskedpaths();
    m.extend(
        [
            "/sys/devices/virtual/powercap",
            "/proc/kallsyms",
            "/sys/kernel/debug",
        ]
        .map(str::to_owned),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_policy::{Group, Secret};

    fn plan() -> JobPlan {
        JobPlan::new(
            "default",
            &Group::default(),
            vec!["id".into()],
            None,
            &|_| None,
            vec![("TOKEN".into(), Secret::new("s3cret"))],
            None,
        )
        .expect("plan")
    }

    #[test]
    fn spec_drops_everything() {
        let layout = HostLayout {
            symlinks: vec![("bin".into(), "usr/bin".into())],
            dirs: vec!["lib64".into()],
        };
        let s = build(&plan(), &layout, 4096, None, None).expect("spec");
        let p = s.process().as_ref().expect("process");
        assert!(p.no_new_privileges().unwrap_or(false));
        let caps = p.capabilities().as_ref().expect("caps");
        assert!(caps.bounding().as_ref().is_none_or(|c| c.is_empty()));
        assert!(caps.effective().as_ref().is_none_or(|c| c.is_empty()));
        assert_eq!(p.user().uid(), 1001);
        let env = p.env().as_ref().expect("env");
        assert!(env.contains(&"TOKEN=s3cret".to_owned()));
        assert!(env.iter().all(|e| !e.starts_with("SSH_AUTH_SOCK")));
        let linux = s.linux().as_ref().expect("linux");
        assert_eq!(linux.namespaces().as_ref().map(|n| n.len()), Some(6));
        assert!(linux.seccomp().is_some());
        let mounts = s.mounts().as_ref().expect("mounts");
        let usr = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/usr"))
            .expect("/usr");
        assert!(usr
            .options()
            .as_ref()
            .expect("opts")
            .contains(&"ro".to_owned()));
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new("/lib64")));
        assert!(mounts
            .iter()
            .all(|m| m.source().as_deref() != Some(Path::new("/var/run/docker.sock"))));
        let r = linux.resources().as_ref().expect("resources");
        assert_eq!(r.pids().as_ref().map(|p| p.limit()), Some(512));
        let proc = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/proc"))
            .expect("/proc");
        assert!(proc
            .options()
            .as_ref()
            .expect("opts")
            .contains(&"ro".to_owned()));
        assert_eq!(p.oom_score_adj(), Some(OOM_SCORE_ADJ));
    }

    #[test]
    fn oci_default_read_only_and_masked_paths_are_kept() {
        let s = build(&plan(), &HostLayout::default(), 4096, None, None).expect("spec");
        let linux = s.linux().as_ref().expect("linux");
        // The OCI runtime spec's defaults, written out: a change to them here is deliberate.
        assert_eq!(
            linux.readonly_paths().as_deref(),
            Some(
                &[
                    "/proc/bus",
                    "/proc/fs",
                    "/proc/irq",
                    "/proc/sys",
                    "/proc/sysrq-trigger"
                ]
                .map(str::to_owned)[..]
            )
        );
        let masked = linux.masked_paths().as_ref().expect("masked paths");
        for p in [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
            "/proc/kallsyms",
            "/sys/kernel/debug",
            "/sys/devices/virtual/powercap",
        ] {
            assert!(masked.iter().any(|m| m == p), "{p} is not masked");
        }
    }

    #[test]
    fn nofile_is_capped_by_the_hard_limit() {
        let s = build(&plan(), &HostLayout::default(), 64, None, None).expect("spec");
        let rl = s
            .process()
            .as_ref()
            .and_then(|p| p.rlimits().clone())
            .expect("rlimits");
        assert_eq!(rl[0].hard(), 64);
        assert_eq!(rl[0].soft(), 64);
    }
}
