//! What a job may ask for: each container of a request becomes a [`ContainerSpec`] or a
//! [`Refused`] whose message names what was refused, why, and what to do instead.

use std::time::Duration;

use crate::hook::{ContainerInfo, Mount};
use crate::options::{self, CreateOptions};

/// A refusal the workflow's author can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("airlock refused {what}: {why}; {fix}")]
pub struct Refused {
    /// What was refused (a flag, a mount, an image).
    pub what: String,
    /// Why.
    pub why: String,
    /// What to do instead.
    pub fix: String,
}

impl Refused {
    /// A refusal.
    pub fn new(what: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }
}

/// Which container of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The job container: steps run in it.
    Job,
    /// A service, by its name (the host name the job reaches it by).
    Service(String),
    /// A step's own container (`docker://…`).
    Step,
}

impl Role {
    /// For records.
    pub fn label(&self) -> String {
        match self {
            Self::Job => "job".into(),
            Self::Service(n) => format!("service:{n}"),
            Self::Step => "step".into(),
        }
    }
}

/// A path of the runner's sandbox shared into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemMount {
    /// The path inside the runner's sandbox (resolved there, never on the host).
    pub source: String,
    /// Where it appears in the container.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
}

/// A named volume: a directory that lives and dies with the job, shared by its containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// Where it appears in the container.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
}

/// A service's health check (`--health-*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Run with `/bin/sh -c` in the service's files and network.
    pub cmd: String,
    /// Between two tries.
    pub interval: Duration,
    /// One try's time limit.
    pub timeout: Duration,
    /// Failed tries after the start period before the service is unhealthy.
    pub retries: u32,
    /// Failures in this period do not count.
    pub start_period: Duration,
}

/// A container, checked: everything the engine needs, nothing it must not do.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Which container.
    pub role: Role,
    /// Image reference (a registry reference, or a name in airlock's store).
    pub image: String,
    /// Entry point override.
    pub entrypoint: Option<String>,
    /// Arguments (the image's `Cmd` is replaced when the request has any).
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--memory`.
    pub memory: Option<u64>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// Health check.
    pub health: Option<Health>,
    /// Paths of the runner's sandbox shared with it.
    pub system_mounts: Vec<SystemMount>,
    /// Named volumes.
    pub volumes: Vec<Volume>,
    /// What was accepted but has no effect, for the job's log.
    pub notices: Vec<String>,
}

/// The shortest interval between two health checks of a service (each is a sandbox).
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// Where the runner may share its own directories into a container: its work directory,
/// its externals (the runner's Node.js for JavaScript actions), and the `/github` paths.
const SYSTEM_TARGETS: &[&str] = &["/__w", "/__e", "/__t", "/github"];

/// An environment variable name.
pub fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A clean absolute path: no `..`, `.`, empty parts or NUL.
pub fn clean_absolute(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains('\0')
        && p.len() <= 4096
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        || p == "/"
}

fn under(p: &str, dir: &str) -> bool {
    p == dir || p.starts_with(&format!("{dir}/"))
}

/// A service name usable as a host name.
fn valid_service_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !n.starts_with('-')
}

/// Checks one container of a request.
pub fn container(role: Role, c: &ContainerInfo) -> Result<ContainerSpec, Refused> {
    if let Role::Service(name) = &role {
        if !valid_service_name(name) {
            return Err(Refused::new(
                format!("service {name:?}"),
                "its name is not usable as a host name",
                "name services with letters, digits, '-' and '_'",
            ));
        }
    }
    if let Some(d) = c.dockerfile.as_deref().filter(|d| !d.is_empty()) {
        return Err(Refused::new(
            format!("the Dockerfile action {d:?}"),
            "building images needs a builder airlock does not run in a sandbox yet",
            "publish the action's image to a registry the group allows and use `uses: docker://IMAGE`",
        ));
    }
    let image = c
        .image
        .as_deref()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| Refused::new(role.label(), "no image given", "name an image"))?;
    if image.contains(char::is_whitespace) || image.contains('\0') || image.len() > 512 {
        return Err(Refused::new(
            format!("image {image:?}"),
            "not an image reference",
            "e.g. registry.example.com/team/node:22",
        ));
    }
    let opts = match &c.create_options {
        Some(s) => options::parse(s)?,
        None => CreateOptions::default(),
    };
    let mut notices = opts
        .ignored
        .iter()
        .map(|f| format!("{f} has no effect under airlock"))
        .collect::<Vec<_>>();
    if c.registry.as_ref().is_some_and(|r| !r.is_null()) {
        notices.push("the workflow's registry credentials are not used: airlock pulls with its policy's ([images] credentials)".into());
    }
    if c.port_mappings.as_ref().is_some_and(|p| !p.is_empty()) {
        notices.push("port mappings are ignored: the job reaches its services by name and on localhost, and nothing outside the job reaches them".into());
    }
    let mut env = Vec::new();
    for (k, v) in c.environment_variables.iter().flatten() {
        if !valid_env_name(k) || v.contains('\0') {
            return Err(Refused::new(
                format!("environment variable {k:?}"),
                "not a usable name or value",
                "use names of letters, digits and _",
            ));
        }
        env.push((k.clone(), v.clone()));
    }
    env.extend(opts.env.iter().cloned());
    let mut system_mounts = Vec::new();
    for m in c.system_mount_volumes.iter().flatten() {
        match system_mount(m)? {
            Some(sm) => system_mounts.push(sm),
            None => notices.push(
                "the runner's Docker socket mount is skipped: there is no Docker under airlock, which runs the job's containers itself".into(),
            ),
        }
    }
    let mut volumes = Vec::new();
    for (i, m) in c.user_mount_volumes.iter().flatten().enumerate() {
        volumes.push(user_mount(m, i)?);
    }
    let entrypoint = opts
        .entrypoint
        .clone()
        .filter(|e| !e.is_empty())
        .or_else(|| c.entry_point.clone().filter(|e| !e.is_empty()));
    let args = c.entry_point_args.clone().unwrap_or_default();
    for a in entrypoint.iter().chain(args.iter()) {
        if a.contains('\0') {
            return Err(Refused::new(
                "the entry point",
                "it holds a NUL byte",
                "remove it",
            ));
        }
    }
    let workdir = opts.workdir.clone().or_else(|| c.working_directory.clone());
    if let Some(w) = &workdir {
        if !clean_absolute(w) {
            return Err(Refused::new(
                format!("working directory {w:?}"),
                "not a clean absolute path",
                "use an absolute path without '..'",
            ));
        }
    }
    // Each try is a sandbox airlock builds: not more often than every MIN_HEALTH_INTERVAL.
    let health = opts.health_cmd.as_ref().map(|cmd| Health {
        cmd: cmd.clone(),
        interval: opts
            .health_interval
            .unwrap_or(Duration::from_secs(1))
            .max(MIN_HEALTH_INTERVAL),
        timeout: opts.health_timeout.unwrap_or(Duration::from_secs(30)),
        retries: opts.health_retries.unwrap_or(3),
        start_period: opts.health_start_period.unwrap_or(Duration::ZERO),
    });
    Ok(ContainerSpec {
        role,
        image: image.to_owned(),
        entrypoint,
        args,
        env,
        workdir,
        user: opts.user.clone(),
        memory: opts.memory,
        cpus: opts.cpus,
        health,
        system_mounts,
        volumes,
        notices,
    })
}

/// A mount the runner adds itself. The runner always asks for `/var/run/docker.sock` in its
/// job container: there is none to give, so it is skipped (`None`), not refused — refusing
/// would fail every container job for something the workflow did not ask for. Any other
/// socket path is refused.
fn system_mount(m: &Mount) -> Result<Option<SystemMount>, Refused> {
    let src = m.source_volume_path.clone().unwrap_or_default();
    let dst = m.target_volume_path.clone().unwrap_or_default();
    if src == "/var/run/docker.sock" && dst == "/var/run/docker.sock" {
        return Ok(None);
    }
    if src.contains("docker.sock") || dst.contains("docker.sock") {
        return Err(Refused::new(
            "the Docker socket",
            "it is the host's root; there is no Docker under airlock",
            "airlock runs containers itself; remove the socket mount",
        ));
    }
    let dst = &dst;
    // The runner sends paths like `//home/...`; one leading slash is meant.
    let src = format!("/{}", src.trim_start_matches('/'));
    if !clean_absolute(&src) || !clean_absolute(dst) {
        return Err(Refused::new(
            format!("the mount {src:?} → {dst:?}"),
            "not clean absolute paths",
            "paths without '..'",
        ));
    }
    if !SYSTEM_TARGETS.iter().any(|t| under(dst, t)) {
        return Err(Refused::new(
            format!("the mount {src:?} → {dst:?}"),
            "the runner shares only its work directory, tools, externals and /github paths",
            "mount named volumes instead",
        ));
    }
    Ok(Some(SystemMount {
        source: src,
        target: dst.clone(),
        readonly: m.read_only,
    }))
}

/// A volume of the workflow (`volumes:`): a name, or none (an anonymous volume, named here
/// after its place in the list); never a host path.
fn user_mount(m: &Mount, index: usize) -> Result<Volume, Refused> {
    let src = m
        .source_volume_path
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("anonymous-{index}"));
    let dst = m.target_volume_path.clone().unwrap_or_default();
    let (src, dst) = (&src, &dst);
    if src.contains("docker.sock") {
        return Err(Refused::new(
            "the Docker socket",
            "it is the host's root; there is no Docker under airlock",
            "airlock runs containers itself; remove the socket from `volumes:`",
        ));
    }
    if src.contains('/') {
        return Err(Refused::new(
            format!("the host path {src:?}"),
            "a job mounts no host path",
            "use a named volume (`name:/path`), which lives and dies with the job",
        ));
    }
    let ok_name = !src.is_empty()
        && src.len() <= 64
        && src
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !src.starts_with('.');
    if !ok_name {
        return Err(Refused::new(
            format!("the volume {src:?}"),
            "not a usable volume name",
            "letters, digits, '-', '_' and '.'",
        ));
    }
    if !clean_absolute(dst)
        || dst == "/"
        || under(dst, "/proc")
        || under(dst, "/sys")
        || under(dst, "/dev")
    {
        return Err(Refused::new(
            format!("the volume target {dst:?}"),
            "not a usable place for a volume",
            "an absolute path outside /, /proc, /sys and /dev",
        ));
    }
    Ok(Volume {
        name: src.clone(),
        target: dst.clone(),
        readonly: m.read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> ContainerInfo {
        serde_json::from_str(json).expect("info")
    }

    #[test]
    fn the_runners_docker_socket_is_skipped_and_a_workflows_is_refused() {
        let with_socket = info(
            r#"{"image":"node:22","workingDirectory":"/__w/repo/repo",
            "systemMountVolumes":[{"sourceVolumePath":"/var/run/docker.sock","targetVolumePath":"/var/run/docker.sock","readOnly":false},
              {"sourceVolumePath":"/runner/_work","targetVolumePath":"/__w","readOnly":false}]}"#,
        );
        let s = container(Role::Job, &with_socket).expect("the runner's own socket mount");
        assert_eq!(s.system_mounts.len(), 1, "the socket is not mounted");
        assert!(s
            .notices
            .iter()
            .any(|n| n.contains("Docker socket mount is skipped")));
        for json in [
            r#"{"image":"a","userMountVolumes":[{"sourceVolumePath":"/var/run/docker.sock","targetVolumePath":"/var/run/docker.sock"}]}"#,
            r#"{"image":"a","systemMountVolumes":[{"sourceVolumePath":"/run/docker.sock","targetVolumePath":"/__w/docker.sock"}]}"#,
        ] {
            let e = container(Role::Job, &info(json)).expect_err(json);
            assert!(e.to_string().contains("Docker socket"), "{e}");
        }
        // An anonymous volume (`volumes: - /cache`): the runner sends no source.
        let anon = info(
            r#"{"image":"a","userMountVolumes":[{"sourceVolumePath":null,"targetVolumePath":"/cache"}]}"#,
        );
        let s = container(Role::Job, &anon).expect("anonymous volume");
        assert_eq!(s.volumes[0].name, "anonymous-0");
        assert_eq!(s.volumes[0].target, "/cache");
        let ok = info(
            r#"{"image":"node:22","workingDirectory":"/__w/repo/repo","createOptions":"--cpus 1",
            "environmentVariables":{"NODE_ENV":"development"},
            "userMountVolumes":[{"sourceVolumePath":"my_docker_volume","targetVolumePath":"/volume_mount","readOnly":false}],
            "systemMountVolumes":[{"sourceVolumePath":"//runner/_work","targetVolumePath":"/__w","readOnly":false},
              {"sourceVolumePath":"/runner/externals","targetVolumePath":"/__e","readOnly":true}],
            "registry":{"username":"foo","password":"bar","serverUrl":"https://index.docker.io/v1"},
            "portMappings":["80:8080"]}"#,
        );
        let s = container(Role::Job, &ok).expect("accepted");
        assert_eq!(s.system_mounts[0].source, "/runner/_work");
        assert!(s.system_mounts[1].readonly);
        assert_eq!(s.volumes[0].name, "my_docker_volume");
        assert_eq!(s.cpus, Some(1.0));
        assert_eq!(s.notices.len(), 2, "{:?}", s.notices);
    }

    #[test]
    fn host_paths_dockerfiles_and_bad_names_are_refused() {
        for (role, json, says) in [
            (
                Role::Job,
                r#"{"image":"a","userMountVolumes":[{"sourceVolumePath":"/etc","targetVolumePath":"/x"}]}"#,
                "host path",
            ),
            (
                Role::Job,
                r#"{"image":"a","userMountVolumes":[{"sourceVolumePath":"v","targetVolumePath":"/proc/x"}]}"#,
                "volume target",
            ),
            (
                Role::Job,
                r#"{"image":"a","systemMountVolumes":[{"sourceVolumePath":"/etc","targetVolumePath":"/etc"}]}"#,
                "work directory",
            ),
            (
                Role::Job,
                r#"{"image":"a","systemMountVolumes":[{"sourceVolumePath":"/a/../etc","targetVolumePath":"/__w"}]}"#,
                "clean",
            ),
            (
                Role::Step,
                r#"{"image":"a","dockerfile":"Dockerfile"}"#,
                "Dockerfile",
            ),
            (Role::Service("a b".into()), r#"{"image":"a"}"#, "host name"),
            (Role::Job, r#"{"image":""}"#, "no image"),
            (
                Role::Job,
                r#"{"image":"a","createOptions":"--privileged"}"#,
                "privileged",
            ),
            (
                Role::Job,
                r#"{"image":"a","workingDirectory":"../x"}"#,
                "working directory",
            ),
            (
                Role::Job,
                r#"{"image":"a","environmentVariables":{"A=B":"x"}}"#,
                "environment",
            ),
        ] {
            let e = container(role, &info(json)).expect_err(json);
            assert!(e.to_string().contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn health_checks_are_not_run_more_often_than_the_minimum() {
        let s = container(
            Role::Service("db".into()),
            &info(r#"{"image":"a","createOptions":"--health-cmd true --health-interval 1ms"}"#),
        )
        .expect("accepted");
        assert_eq!(s.health.expect("health").interval, MIN_HEALTH_INTERVAL);
    }

    #[test]
    fn paths() {
        assert!(clean_absolute("/__w/a"));
        assert!(clean_absolute("/"));
        assert!(!clean_absolute("/a/../b"));
        assert!(!clean_absolute("a"));
        assert!(!clean_absolute("/a//b"));
        assert!(under("/__w/x", "/__w") && !under("/__wx", "/__w"));
    }
}
