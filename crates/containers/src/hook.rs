//! The runner's container-hook request, as the runner sends it (the public interface of
//! `actions/runner-container-hooks`, `packages/hooklib/src/interfaces.ts`; written here from
//! that description). Fields the runner may send as `null` are optional; unknown fields are
//! ignored, as the reference implementations do.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The four commands of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Create the job container and the services.
    PrepareJob,
    /// Remove everything of the job.
    CleanupJob,
    /// Run a step's script in the job container.
    RunScriptStep,
    /// Run a step in a container of its own (`docker://…`, Dockerfile actions).
    RunContainerStep,
}

impl Command {
    /// The protocol's name of the command.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PrepareJob => "prepare_job",
            Self::CleanupJob => "cleanup_job",
            Self::RunScriptStep => "run_script_step",
            Self::RunContainerStep => "run_container_step",
        }
    }
}

/// One request of the runner.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookData {
    /// What to do.
    pub command: Command,
    /// Where the hook writes its response (inside the runner's sandbox; the hook writes it).
    #[serde(default)]
    pub response_file: Option<String>,
    /// The command's arguments.
    #[serde(default)]
    pub args: Option<serde_json::Value>,
    /// What `prepare_job` answered as `state`, passed back with every later command.
    #[serde(default)]
    pub state: Option<serde_json::Value>,
}

/// `prepare_job`'s arguments.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareJobArgs {
    /// The job container.
    #[serde(default)]
    pub container: Option<ContainerInfo>,
    /// The services.
    #[serde(default)]
    pub services: Option<Vec<ContainerInfo>>,
}

/// `run_script_step`'s arguments.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunScriptStepArgs {
    /// The program.
    pub entry_point: String,
    /// Its arguments.
    #[serde(default)]
    pub entry_point_args: Option<Vec<String>>,
    /// Environment of the step.
    #[serde(default)]
    pub environment_variables: Option<BTreeMap<String, String>>,
    /// Directories put in front of `PATH` (a list; older runners sent one `:`-joined string).
    #[serde(default)]
    pub prepend_path: Option<PathList>,
    /// Working directory inside the job container.
    #[serde(default)]
    pub working_directory: Option<String>,
}

/// A container the runner asks for (job container, service, or a step's container).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    /// Image reference.
    #[serde(default)]
    pub image: Option<String>,
    /// Entry point (the runner has sent both spellings).
    #[serde(default, alias = "entrypoint")]
    pub entry_point: Option<String>,
    /// Arguments of the entry point.
    #[serde(default)]
    pub entry_point_args: Option<Vec<String>>,
    /// Docker `create` options, as one string.
    #[serde(default)]
    pub create_options: Option<String>,
    /// Environment.
    #[serde(default)]
    pub environment_variables: Option<BTreeMap<String, String>>,
    /// Volumes the workflow asked for.
    #[serde(default)]
    pub user_mount_volumes: Option<Vec<Mount>>,
    /// Volumes the runner adds (its work directory, externals, …).
    #[serde(default)]
    pub system_mount_volumes: Option<Vec<Mount>>,
    /// Registry credentials of the workflow.
    #[serde(default)]
    pub registry: Option<serde_json::Value>,
    /// `host:container` port mappings.
    #[serde(default)]
    pub port_mappings: Option<Vec<String>>,
    /// A service's name (its host name for the job).
    #[serde(default)]
    pub context_name: Option<String>,
    /// Working directory.
    #[serde(default)]
    pub working_directory: Option<String>,
    /// A Dockerfile to build (container steps of Dockerfile actions).
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Directories put in front of `PATH` (container steps).
    #[serde(default)]
    pub prepend_path: Option<PathList>,
}

/// `prependPath`: a list of directories, most recent first (the runner sends them reversed),
/// or, from older runners, one string joined with `:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PathList {
    /// One `:`-joined string.
    Joined(String),
    /// A list.
    List(Vec<String>),
}

impl PathList {
    /// The directories, in the order they go in front of `PATH`.
    pub fn dirs(&self) -> Vec<String> {
        match self {
            Self::Joined(s) => s
                .split(':')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect(),
            Self::List(v) => v.iter().filter(|d| !d.is_empty()).cloned().collect(),
        }
    }
}

/// One volume of a request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// A path (in the runner's sandbox) or a volume name; absent for an anonymous volume
    /// (`volumes: - /cache`).
    #[serde(default)]
    pub source_volume_path: Option<String>,
    /// Where it appears in the container.
    #[serde(default)]
    pub target_volume_path: Option<String>,
    /// Read-only.
    #[serde(default)]
    pub read_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The public examples' shapes (`examples/*.json` of actions/runner-container-hooks),
    /// reduced to what they exercise.
    #[test]
    fn reads_the_example_shapes() {
        let prepare = r#"{"command":"prepare_job","responseFile":"/r.json","state":{},
          "args":{"container":{"image":"node:22","workingDirectory":"/__w/repo/repo",
            "createOptions":"--cpus 1","environmentVariables":{"NODE_ENV":"development"},
            "userMountVolumes":[{"sourceVolumePath":"my_docker_volume","targetVolumePath":"/volume_mount","readOnly":false}],
            "systemMountVolumes":[{"sourceVolumePath":"/runner/_work","targetVolumePath":"/__w","readOnly":false}],
            "registry":{"username":"foo","password":"bar","serverUrl":"https://index.docker.io/v1"},
            "portMappings":["80:8080"]},
          "services":[{"contextName":"redis","image":"redis","createOptions":"--cpus 1",
            "entrypoint":null,"entryPointArgs":[],"environmentVariables":{},"portMappings":["8080:80"]}]}}"#;
        let h: HookData = serde_json::from_str(prepare).expect("prepare");
        assert_eq!(h.command, Command::PrepareJob);
        let a: PrepareJobArgs = serde_json::from_value(h.args.expect("args")).expect("args");
        let c = a.container.expect("container");
        assert_eq!(c.image.as_deref(), Some("node:22"));
        assert_eq!(
            c.system_mount_volumes.expect("sys")[0]
                .target_volume_path
                .as_deref(),
            Some("/__w")
        );
        let s = &a.services.expect("services")[0];
        assert_eq!(s.context_name.as_deref(), Some("redis"));
        assert!(s.entry_point.is_none());

        let step = r#"{"command":"run_script_step","responseFile":null,
          "state":{"network":"n","container":"c","services":{"redis":"r"}},
          "args":{"entryPointArgs":["-e","example-script.sh"],"entryPoint":"bash",
            "environmentVariables":{"NODE_ENV":"development"},"prependPath":["/foo/bar","bar/foo"],
            "workingDirectory":"/__w/repo/repo"}}"#;
        let h: HookData = serde_json::from_str(step).expect("step");
        assert_eq!(h.command, Command::RunScriptStep);
        let a: RunScriptStepArgs = serde_json::from_value(h.args.expect("args")).expect("args");
        assert_eq!(a.entry_point, "bash");
        assert_eq!(
            a.prepend_path.expect("path").dirs(),
            ["/foo/bar", "bar/foo"]
        );
        // What the runner sends today (HookInput.cs): docker.sock among the job container's
        // system mounts, an anonymous user volume with a null source, a joined prependPath
        // from older runners.
        let m: Mount = serde_json::from_str(
            r#"{"sourceVolumePath":null,"targetVolumePath":"/cache","readOnly":false,"userProvidedValue":"/cache"}"#,
        )
        .expect("anonymous volume");
        assert!(m.source_volume_path.is_none());
        let p: PathList = serde_json::from_str(r#""/a/bin:/b/bin""#).expect("joined");
        assert_eq!(p.dirs(), ["/a/bin", "/b/bin"]);
    }
}
