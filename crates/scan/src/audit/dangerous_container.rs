//! `container:` / `services:` that give the job the host: `--privileged`, host namespaces,
//! dangerous capabilities, or the Docker socket mounted.

use marked_yaml::Node;

use super::{on_self_hosted, rule, self_hosted, Audit, Context, Sink};
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

/// Problems in a `docker create` options string. Tokenised on whitespace and `=`, so
/// `--network=host` and `--network host` read the same.
fn option_problems(opts: &str) -> Vec<&'static str> {
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
            "--privileged" => out.push("--privileged"),
            "--network" | "--net" if next_is(i, &["host"]) => out.push("host network"),
            "--pid" if next_is(i, &["host"]) => out.push("host PID namespace"),
            "--ipc" if next_is(i, &["host"]) => out.push("host IPC namespace"),
            "--userns" if next_is(i, &["host"]) => out.push("host user namespace"),
            "--cap-add"
                if next_is(
                    i,
                    &[
                        "all",
                        "sys_admin",
                        "cap_sys_admin",
                        "sys_ptrace",
                        "net_admin",
                    ],
                ) =>
            {
                out.push("a dangerous capability")
            }
            "--security-opt"
                if toks
                    .get(i + 1)
                    .is_some_and(|t| t == "seccomp" || t == "apparmor")
                    && toks.get(i + 2).is_some_and(|t| t == "unconfined") =>
            {
                out.push("seccomp/AppArmor disabled")
            }
            "--device" => out.push("a host device"),
            _ => {}
        }
        if t.contains("docker.sock") {
            out.push("the Docker socket");
        }
    }
    out.dedup();
    out
}

fn volume_problem(v: &str) -> Option<&'static str> {
    let src = v.split(':').next().unwrap_or_default().trim();
    if v.contains("docker.sock") {
        Some("the Docker socket")
    } else if src == "/"
        || src == "/proc"
        || src == "/etc"
        || src == "/root"
        || src == "/var/run"
        || src == "/run"
    {
        Some("a sensitive host directory")
    } else {
        None
    }
}

/// Problems in one container definition, each with the position of the offending key.
fn container_problems(n: &Node) -> Vec<(Pos, &'static str)> {
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

impl Audit for DangerousContainer {
    fn rule(&self) -> &'static RuleInfo {
        &RULE
    }

    fn job(&self, wf: &Workflow, job: &Job, cx: &Context<'_>, out: &mut Sink) {
        let mut found: Vec<(String, Pos, &'static str)> = Vec::new();
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
        for (what, pos, problem) in found {
            out.push(
                self.finding(&wf.path, pos)
                    .severity(on_self_hosted(sh, Severity::Critical, Severity::High))
                    .confidence(if sh.is_some() {
                        Confidence::High
                    } else {
                        Confidence::Medium
                    })
                    .title(format!("{what} of job `{}` gets {problem}", job.id))
                    .explain(
                        "A privileged container, the host's network/PID namespace or the Docker \
                         socket lets code in the container control the runner host: start \
                         containers with the host's root filesystem mounted, read other jobs' \
                         processes and reach services bound to the host. On a self-hosted runner \
                         that is the machine and everything it can reach.",
                    )
                    .fix(
                        "Remove the option or mount; build images with a rootless builder \
                         (buildah, kaniko) or in an airlock sandbox instead of the host's Docker.",
                    ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::option_problems;

    #[test]
    fn options_are_tokenised() {
        assert_eq!(
            option_problems("--cpus 1 --network=host"),
            vec!["host network"]
        );
        assert_eq!(option_problems("--network host"), vec!["host network"]);
        assert_eq!(option_problems("--network hostile"), Vec::<&str>::new());
        assert_eq!(
            option_problems("--privileged -v /var/run/docker.sock:/var/run/docker.sock"),
            vec!["--privileged", "the Docker socket"]
        );
        assert!(option_problems("--health-cmd pg_isready --health-interval 10s").is_empty());
        assert_eq!(
            option_problems("--security-opt seccomp=unconfined"),
            vec!["seccomp/AppArmor disabled"]
        );
    }
}
