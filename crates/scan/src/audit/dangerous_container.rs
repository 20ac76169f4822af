//! `container:` / `services:` that give the job the host: `--privileged`, host namespaces,
//! dangerous capabilities, or the Docker socket mounted.

use marked_yaml::Node;

use super::{behind_environment, job_reach, rule, self_hosted, Audit, Context, Sink};
use crate::model::{entry, Job, Pos, Workflow};
use crate::report::{Confidence, RuleInfo, Severity};

rule!(
    RULE,
    "dangerous-container",
    Critical,
    "job container or service can take over the runner host"
);

/// See the module documentation.
pub struct DangerousContainer;

/// What an option opens, which sets the finding's severity before reach is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opens {
    /// The host itself: root on it, its disks or memory, its Docker. Critical on a
    /// self-hosted runner whoever can trigger the job.
    Host,
    /// A way toward the host or its network (host network, a debugging or network
    /// capability, confinement off).
    Toward,
    /// A shared resource that jobs use for real work (GPUs, host IPC for NCCL): a risk on a
    /// machine that keeps state, not a takeover by itself.
    Shares,
}

impl Opens {
    fn severity(self) -> Severity {
        match self {
            Opens::Host => Severity::Critical,
            Opens::Toward => Severity::High,
            Opens::Shares => Severity::Medium,
        }
    }
}

/// One problem: what the container gets and what that opens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    what: String,
    opens: Opens,
}

fn problem(what: impl Into<String>, opens: Opens) -> Problem {
    Problem {
        what: what.into(),
        opens,
    }
}

/// What a `--device` gives: raw memory and block devices are the host; GPUs, FUSE, TUN and
/// other character devices are shared hardware.
fn device_problem(dev: &str) -> Problem {
    let path = dev.split(':').next().unwrap_or_default();
    let raw = [
        "/dev/mem",
        "/dev/kmem",
        "/dev/port",
        "/dev/disk",
        "/dev/mapper",
    ];
    let block = [
        "/dev/sd",
        "/dev/nvme",
        "/dev/vd",
        "/dev/xvd",
        "/dev/hd",
        "/dev/loop",
        "/dev/dm-",
    ];
    if raw.contains(&path) || block.iter().any(|b| path.starts_with(b)) {
        problem(
            format!("the host's raw memory or disk ({path})"),
            Opens::Host,
        )
    } else if path.is_empty() {
        problem("a host device", Opens::Shares)
    } else {
        problem(format!("a host device ({path})"), Opens::Shares)
    }
}

/// Problems in a `docker create` options string. Tokenised on whitespace and `=`, so
/// `--network=host` and `--network host` read the same.
fn option_problems(opts: &str) -> Vec<Problem> {
    let toks: Vec<String> = opts
        .split(|c: char| c.is_whitespace() || c == '=')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.trim_matches(|c| c == '"' || c == '\'')
                .to_ascii_lowercase()
        })
        .collect();
    let mut out = Vec::new();
    let next_is = |i: usize, v: &[&str]| toks.get(i + 1).is_some_and(|t| v.iter().any(|x| t == x));
    for (i, t) in toks.iter().enumerate() {
        match t.as_str() {
            "--privileged" => out.push(problem("--privileged", Opens::Host)),
            "--network" | "--net" if next_is(i, &["host"]) => {
                out.push(problem("the host network", Opens::Toward))
            }
            "--pid" if next_is(i, &["host"]) => {
                out.push(problem("the host PID namespace", Opens::Host))
            }
            "--ipc" if next_is(i, &["host"]) => {
                out.push(problem("the host IPC namespace", Opens::Shares))
            }
            "--userns" if next_is(i, &["host"]) => {
                out.push(problem("the host user namespace", Opens::Toward))
            }
            "--cap-add" if next_is(i, &["all", "sys_admin", "cap_sys_admin"]) => {
                out.push(problem("CAP_SYS_ADMIN", Opens::Host))
            }
            "--cap-add"
                if next_is(
                    i,
                    &[
                        "sys_ptrace",
                        "cap_sys_ptrace",
                        "net_admin",
                        "cap_net_admin",
                        "sys_module",
                        "cap_sys_module",
                    ],
                ) =>
            {
                let cap = toks[i + 1].trim_start_matches("cap_").to_ascii_uppercase();
                let opens = if cap == "SYS_MODULE" {
                    Opens::Host
                } else {
                    Opens::Toward
                };
                out.push(problem(format!("CAP_{cap}"), opens))
            }
            "--security-opt"
                if toks
                    .get(i + 1)
                    .is_some_and(|t| t == "seccomp" || t == "apparmor")
                    && toks.get(i + 2).is_some_and(|t| t == "unconfined") =>
            {
                out.push(problem("seccomp/AppArmor disabled", Opens::Toward))
            }
            "--device" => out.push(device_problem(toks.get(i + 1).map_or("", |s| s.as_str()))),
            _ => {}
        }
        if t.contains("docker.sock") {
            out.push(problem("the Docker socket", Opens::Host));
        }
    }
    out.dedup();
    out
}

fn volume_problem(v: &str) -> Option<Problem> {
    let src = v.split(':').next().unwrap_or_default().trim();
    if v.contains("docker.sock") {
        Some(problem("the Docker socket", Opens::Host))
    } else if [
        "/", "/proc", "/etc", "/root", "/var/run", "/run", "/sys", "/boot", "/dev",
    ]
    .contains(&src)
    {
        Some(problem(format!("the host's {src}"), Opens::Host))
    } else {
        None
    }
}

/// Problems in one container definition, each with the position of the offending key.
fn container_problems(n: &Node) -> Vec<(Pos, Problem)> {
    let Some(m) = n.as_mapping() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some((p, o)) = entry(m, "options") {
        if let Some(s) = o.as_scalar() {
            out.extend(option_problems(s.as_str()).into_iter().map(|w| (p, w)));
        }
    }
    if let Some((p, vols)) = entry(m, "volumes") {
        if let Some(seq) = vols.as_sequence() {
            out.extend(
                seq.iter()
                    .filter_map(|v| v.as_scalar())
                    .filter_map(|v| volume_problem(v.as_str()))
                    .map(|w| (p, w)),
            );
        }
    }
    out
}

/// A problem's severity: what it opens, one level less on a GitHub-hosted runner (a VM
/// thrown away after the job) and one less again when no outsider can start the job —
/// except the host itself, which stays at its level on a self-hosted runner whoever
/// triggers the job.
fn graded(opens: Opens, self_hosted: bool, outsiders: bool) -> Severity {
    let mut s = opens.severity();
    if !self_hosted {
        s = s.lower();
    }
    let stays = self_hosted && opens == Opens::Host;
    if !(outsiders || stays) {
        s = s.lower();
    }
    s
}

impl Audit for DangerousContainer {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn job(&self, wf: &Workflow, job: &Job, cx: &Context<'_>, out: &mut Sink) {
        let mut found: Vec<(String, Pos, Problem)> = Vec::new();
        if let Some((_, c)) = &job.container {
            for (p, w) in container_problems(c) {
                found.push(("job container".to_owned(), p, w));
            }
        }
        if let Some(m) = job.services.as_ref().and_then(|(_, s)| s.as_mapping()) {
            for (name, svc) in m.iter() {
                for (p, w) in container_problems(svc) {
                    found.push((format!("service `{}`", name.as_str()), p, w));
                }
            }
        }
        let sh = self_hosted(job, cx);
        let reach = job_reach(wf, job);
        let outsiders = !reach.is_empty();
        let who = if outsiders {
            let events: Vec<&str> = reach.iter().map(|r| r.event.as_str()).collect();
            format!("outsiders can start it ({})", events.join(", "))
        } else {
            "only people with write access can start it".to_owned()
        };
        for (what, pos, problem) in found {
            let f = self
                .finding(&wf.path, pos)
                .severity(graded(problem.opens, sh.is_some(), outsiders))
                .confidence(if sh.is_some() {
                    Confidence::High
                } else {
                    Confidence::Medium
                })
                .title(format!("{what} of job `{}` gets {}", job.id, problem.what))
                .explain(format!("{} Here {who}.", explanation(problem.opens)))
                .fix(
                    "Remove the option or mount; build images with a rootless builder \
                     (buildah, kaniko) or in an airlock sandbox instead of the host's Docker. \
                     For GPUs, run the job in an airlock group that passes only the GPU's device \
                     nodes and keeps the runner ephemeral.",
                );
            out.push(behind_environment(f, job));
        }
    }
}

fn explanation(opens: Opens) -> &'static str {
    match opens {
        Opens::Host => {
            "A privileged container, the host's PID namespace, CAP_SYS_ADMIN, a raw disk or the \
             Docker socket lets code in the container control the runner host: start containers \
             with the host's root filesystem mounted, read other jobs' processes and reach what \
             the host reaches. On a self-hosted runner that is the machine and everything it can \
             reach."
        }
        Opens::Toward => {
            "The host network, a debugging or network-administration capability, or disabled \
             confinement gives the container a way toward the host: services bound to the \
             host's loopback, the internal network, other processes, kernel interfaces."
        }
        Opens::Shares => {
            "A host device or the host's IPC namespace is shared with the host and with later \
             jobs: how GPU jobs work, and also a path to the driver's kernel interface and to \
             what a previous job left in the device or in shared memory."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{graded, option_problems, Opens};
    use crate::report::Severity;

    fn whats(opts: &str) -> Vec<(String, Opens)> {
        option_problems(opts)
            .into_iter()
            .map(|p| (p.what, p.opens))
            .collect()
    }

    #[test]
    fn options_are_tokenised_and_graded_by_what_they_open() {
        assert_eq!(
            whats("--cpus 1 --network=host"),
            [("the host network".to_owned(), Opens::Toward)]
        );
        assert_eq!(whats("--network host").len(), 1);
        assert!(whats("--network hostile").is_empty());
        assert_eq!(
            whats("--privileged -v /var/run/docker.sock:/var/run/docker.sock"),
            [
                ("--privileged".to_owned(), Opens::Host),
                ("the Docker socket".to_owned(), Opens::Host)
            ]
        );
        assert!(whats("--health-cmd pg_isready --health-interval 10s").is_empty());
        assert_eq!(
            whats("--security-opt seccomp=unconfined"),
            [("seccomp/AppArmor disabled".to_owned(), Opens::Toward)]
        );
        // GPU jobs: shared hardware, not a takeover; a raw disk is the host.
        assert_eq!(
            whats("--device /dev/kfd --device=/dev/dri --ipc=host --group-add video"),
            [
                ("a host device (/dev/kfd)".to_owned(), Opens::Shares),
                ("a host device (/dev/dri)".to_owned(), Opens::Shares),
                ("the host IPC namespace".to_owned(), Opens::Shares)
            ]
        );
        assert_eq!(whats("--device /dev/sda:/dev/xvda")[0].1, Opens::Host);
        assert_eq!(whats("--cap-add SYS_PTRACE")[0].1, Opens::Toward);
        assert_eq!(whats("--cap-add=sys_admin")[0].1, Opens::Host);
    }

    #[test]
    fn severity_follows_what_is_opened_where_and_by_whom() {
        // The host on a self-hosted runner is critical whoever triggers the job.
        assert_eq!(graded(Opens::Host, true, true), Severity::Critical);
        assert_eq!(graded(Opens::Host, true, false), Severity::Critical);
        assert_eq!(graded(Opens::Host, false, true), Severity::High);
        assert_eq!(graded(Opens::Shares, true, true), Severity::Medium);
        assert_eq!(graded(Opens::Shares, true, false), Severity::Low);
        assert_eq!(graded(Opens::Toward, false, false), Severity::Low);
    }
}
