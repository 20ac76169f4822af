//! Container jobs through the runner's container hook (docs/containers.md), end to end: a
//! job of a group with `containers` runs the hook airlock ships with Node.js, as the runner
//! does, with requests in the runner's shapes (the public examples of
//! actions/runner-container-hooks, pointed at this test's image); airlock's per-job container
//! API creates the job container and two services in sandboxes of their own, runs steps in the
//! job container and a container step, refuses what would open the host, and leaves nothing.

mod common;

use common::oci::{
    add_dir, add_file, dash_layer, gzip, new_layout, tar_of, write_index_json, write_manifest,
};
use common::*;
use serde_json::json;

/// An image with `/bin/sh` and the probe at `/bin/probe` (a TCP service and client), in an OCI
/// layout; returns the layout.
fn build_image(w: &World) -> std::path::PathBuf {
    let layout = w.dir.path().join("ctr-layout");
    let probe = std::fs::read(probe_bin()).expect("probe");
    common::oci::probe_image_layout(&layout, "ctr:1", &probe);
    layout
}

/// A world whose store holds the test image (`ctr:1`). The runner's Node.js runs the hook;
/// scripts/setup.sh installs it.
fn world_with_image() -> World {
    assert!(
        std::path::Path::new("/usr/bin/node").exists(),
        "node is not installed"
    );
    let w = World::new();
    import_image(&w);
    w
}

/// The image, imported into airlock's store as `ctr:1`.
fn import_image(w: &World) {
    let layout = build_image(w);
    let o = w
        .cmd()
        .args(["image", "import"])
        .arg(&layout)
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", stderr(&o));
}

const POLICY: &str = r#"version = 1
[groups.c]
limits = { memory = "512MiB", pids = 256, timeout = "120s" }
egress = { mode = "none" }
process_events = true
containers = { max = 4, health_timeout = "20s" }
"#;

/// Writes the requests into the workspace and runs `script` as the job (its `$H` is the hook).
fn run_job(
    w: &World,
    requests: &[(&str, serde_json::Value)],
    script: &str,
) -> std::process::Output {
    run_job_with(w, POLICY, requests, script)
}

fn run_job_with(
    w: &World,
    policy: &str,
    requests: &[(&str, serde_json::Value)],
    script: &str,
) -> std::process::Output {
    for (name, body) in requests {
        std::fs::write(w.ws().join(name), body.to_string()).expect("request");
    }
    let p = w.policy(policy);
    let ps = p.to_string_lossy().into_owned();
    w.sh(
        &["-p", &ps, "-g", "c"],
        &format!("H=$ACTIONS_RUNNER_CONTAINER_HOOKS\n{script}"),
    )
}

fn work_mounts() -> serde_json::Value {
    json!([
        { "sourceVolumePath": "/home/runner/work", "targetVolumePath": "/__w", "readOnly": false },
        { "sourceVolumePath": "/home/runner/work", "targetVolumePath": "/github/workflow", "readOnly": true }
    ])
}

/// What today's runner sends for a job container (actions/runner `ContainerInfo.cs`,
/// `MountWellKnownDirectories`): its Docker socket, and the work, temp, actions, tool,
/// externals and home directories.
fn runner_job_mounts() -> serde_json::Value {
    json!([
        { "sourceVolumePath": "/var/run/docker.sock", "targetVolumePath": "/var/run/docker.sock", "readOnly": false, "userProvidedValue": null },
        { "sourceVolumePath": "/home/runner/work", "targetVolumePath": "/__w", "readOnly": false },
        { "sourceVolumePath": "/home/runner/work/_temp", "targetVolumePath": "/__w/_temp", "readOnly": false },
        { "sourceVolumePath": "/home/runner/work/_actions", "targetVolumePath": "/__w/_actions", "readOnly": false },
        { "sourceVolumePath": "/home/runner/work/_tool", "targetVolumePath": "/__w/_tool", "readOnly": false },
        { "sourceVolumePath": "/home/runner/externals", "targetVolumePath": "/__e", "readOnly": true },
        { "sourceVolumePath": "/home/runner/work/_temp/_github_home", "targetVolumePath": "/github/home", "readOnly": false },
        { "sourceVolumePath": "/home/runner/work/_temp/_github_workflow", "targetVolumePath": "/github/workflow", "readOnly": false }
    ])
}

#[test]
fn container_job_with_services_steps_and_a_container_step() {
    need_root!();
    let w = world_with_image();
    // The db service's image comes from a registry, pulled on first use by the API.
    for t in ["docker-registry", "skopeo"] {
        assert!(
            common::registry::have(t),
            "{t} is not installed (scripts/setup.sh)"
        );
    }
    let reg = common::registry::start_registry(&w, 5000, None, None);
    let layout = build_image(&w);
    common::registry::push(
        &w,
        &layout,
        "ctr:1",
        &format!("{}/ci/ctr:1", reg.addr),
        &["--dest-tls-verify=false"],
        false,
    );
    let policy = format!(
        "{POLICY}[images]\nregistries = [\"{0}\"]\ninsecure = [\"{0}\"]\n",
        reg.addr
    );
    let db_image = format!("{}/ci/ctr:1", reg.addr);
    let prepare = json!({
        "command": "prepare_job", "responseFile": "/tmp/prepare.json", "state": {},
        "args": {
            "container": {
                "image": "ctr:1", "workingDirectory": "/__w",
                "createOptions": "--cpus 1 --env FROM_OPTS=yes",
                "environmentVariables": { "NODE_ENV": "development" },
                "userMountVolumes": [{ "sourceVolumePath": "shared_vol", "targetVolumePath": "/vol", "readOnly": false }],
                "systemMountVolumes": runner_job_mounts(),
                "registry": { "username": "foo", "password": "bar", "serverUrl": "https://index.docker.io/v1" },
                "portMappings": ["80:8080"]
            },
            "services": [
                { "contextName": "web", "image": "ctr:1", "entryPoint": "/bin/probe",
                  "entryPointArgs": ["serve", "8080", "hello-from-web"],
                  "createOptions": "--health-cmd '/bin/probe get web 8080' --health-interval 200ms --health-retries 20",
                  "environmentVariables": {}, "portMappings": ["8080:8080"] },
                { "contextName": "db", "image": db_image, "entrypoint": "/bin/probe",
                  "entryPointArgs": ["serve", "5432", "hello-from-db"], "environmentVariables": {},
                  "userMountVolumes": [{ "sourceVolumePath": "shared_vol", "targetVolumePath": "/vol", "readOnly": false }] }
            ]
        }
    });
    let step = |script: &str, env: serde_json::Value| {
        json!({
            "command": "run_script_step", "responseFile": null,
            "state": { "network": "x", "container": "forged-id", "services": { "web": "forged" } },
            "args": { "entryPoint": "/bin/sh", "entryPointArgs": ["-e", "-c", script],
                      "environmentVariables": env, "prependPath": ["/opt/tool/bin", "/opt/last/bin"],
                      "workingDirectory": "/__w" }
        })
    };
    let step1 = step(
        "probe get web 8080; probe get localhost 5432; probe get db 5432; echo written > /__w/from-step.txt; echo in-vol > /vol/v; echo \"env=$NODE_ENV,$FROM_OPTS,$FOO\"; echo \"path=$PATH\"; echo \"uid=$(pwd):$AIRLOCK_JOB_ID\"; probe syscalls >/dev/null 2>&1 || true",
        json!({ "FOO": "bar" }),
    );
    let step2 = step(
        "read v < /vol/v; echo \"read=$v\"; echo to-stderr >&2; exit 7",
        json!({}),
    );
    let step3 = step("probe alloc 400", json!({}));
    let cstep = json!({
        "command": "run_container_step", "responseFile": null, "state": {},
        "args": { "image": "ctr:1", "dockerfile": null, "entryPoint": "/bin/sh",
                  "entryPointArgs": ["-c", "read f < /__w/from-step.txt; echo \"container-step=$f\"; probe get db 5432"],
                  "workingDirectory": "/__w", "createOptions": null, "environmentVariables": {},
                  "prependPath": [], "userMountVolumes": [], "systemMountVolumes": work_mounts(),
                  "registry": null, "portMappings": [] }
    });
    let cleanup =
        json!({ "command": "cleanup_job", "responseFile": null, "state": {}, "args": {} });
    let o = run_job_with(
        &w,
        &policy,
        &[
            ("prepare.json", prepare),
            ("step1.json", step1),
            ("step2.json", step2),
            ("step3.json", step3),
            ("cstep.json", cstep),
            ("cleanup.json", cleanup),
        ],
        r#"mkdir -p _temp/_github_home _temp/_github_workflow _actions _tool ../externals
touch /tmp/prepare.json
node $H < prepare.json; echo "prepare=$?"
echo "response=$(cat /tmp/prepare.json)"
node $H < step1.json; echo "step1=$?"
node $H < step2.json; echo "step2=$?"
node $H < step3.json; echo "step3=$?"
node $H < cstep.json; echo "cstep=$?"
read f < from-step.txt; echo "runner-sees=$f"
node $H < cleanup.json; echo "cleanup=$?"
"#,
    );
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for want in [
        "prepare=0",
        "hello-from-web",
        "hello-from-db",
        "env=development,yes,bar",
        "path=/opt/tool/bin:/opt/last/bin:",
        "uid=/__w:",
        "step1=0",
        "read=in-vol",
        "step2=7",
        "container-step=written",
        "cstep=0",
        "runner-sees=written",
        "cleanup=0",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}\n{err}");
    }
    assert_eq!(out.matches("hello-from-db").count(), 3, "{out}");
    assert!(err.contains("to-stderr"), "{err}");
    assert!(err.contains("port mappings are ignored"), "{err}");
    assert!(err.contains("Docker socket mount is skipped"), "{err}");
    assert!(err.contains("registry credentials are not used"), "{err}");
    assert!(err.contains("service:web is healthy"), "{err}");
    // The step that allocates more than the containers' budget (half of 512 MiB) is killed.
    assert!(!out.contains("step3=0"), "{out}");
    // The response the runner reads.
    let resp_line = out
        .lines()
        .find_map(|l| l.strip_prefix("response="))
        .expect("response");
    let resp: serde_json::Value = serde_json::from_str(resp_line).expect("response json");
    let cid = resp["state"]["container"].as_str().expect("container id");
    assert_eq!(resp["context"]["container"]["id"], cid);
    assert!(resp["context"]["services"][0]["id"].is_string(), "{resp}");
    assert!(
        resp["context"]["services"][1]["ports"].is_object(),
        "{resp}"
    );
    assert_eq!(resp["isAlpine"], false);
    let net = resp["context"]["container"]["network"]
        .as_str()
        .expect("network");
    assert_eq!(
        resp["context"]["services"][0]["network"], net,
        "one network"
    );
    assert_eq!(
        resp["state"]["services"]["web"],
        resp["context"]["services"][0]["id"]
    );
    // On the record: each container created and ended, the services' commands, the steps'
    // execs attributed to their sandboxes.
    let created = records(&w, "container.created");
    let roles: Vec<_> = created
        .iter()
        .map(|r| r["data"]["role"].as_str().unwrap_or("").to_owned())
        .collect();
    for role in ["job", "service:web", "service:db", "step"] {
        assert!(
            roles.iter().any(|r| r == role),
            "{role} not recorded: {roles:?}"
        );
    }
    assert!(created.iter().all(|r| r["data"]["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:"))));
    let ended = records(&w, "container.ended");
    assert!(ended.len() >= 4, "{ended:?}");
    // The containers' records are the job's (one limiter, one set of detectors) and name
    // the sandbox that made them.
    let job = job_id(&o).expect("job id");
    let execs = records(&w, "process.exec");
    let probe_execs: Vec<_> = execs
        .iter()
        .filter(|r| r["data"]["path"].as_str() == Some("/bin/probe"))
        .collect();
    assert!(
        !probe_execs.is_empty(),
        "the containers' execs are recorded"
    );
    for r in &probe_execs {
        assert_eq!(r["job"], job.as_str(), "{r}");
        let sb = r["data"]["sandbox"].as_str().unwrap_or_default();
        // A step's or a service's own sandbox, never the runner's.
        assert!(sb.starts_with('j') && sb != job, "{r}");
    }
    let alerts = records(&w, "alert");
    assert!(
        alerts
            .iter()
            .any(|a| a["job"] == job.as_str() && a.to_string().contains("privileged-operation")),
        "the job's detectors saw the step's denied calls: {alerts:?}"
    );
    w.assert_clean();
}

#[test]
fn what_would_open_the_host_is_refused_with_a_reason() {
    need_root!();
    let w = world_with_image();
    let prep = |container: serde_json::Value, services: serde_json::Value| {
        json!({ "command": "prepare_job", "responseFile": "/tmp/r.json", "state": {},
                "args": { "container": container, "services": services } })
    };
    let base = |extra: serde_json::Value| {
        let mut c = json!({ "image": "ctr:1", "workingDirectory": "/__w", "systemMountVolumes": work_mounts() });
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    };
    let cases = [
        (
            "privileged",
            prep(base(json!({ "createOptions": "--privileged" })), json!([])),
        ),
        (
            "capadd",
            prep(
                base(json!({ "createOptions": "--cap-add=SYS_ADMIN" })),
                json!([]),
            ),
        ),
        (
            "nethost",
            prep(
                base(json!({ "createOptions": "--network host" })),
                json!([]),
            ),
        ),
        (
            "pidhost",
            prep(base(json!({ "createOptions": "--pid=host" })), json!([])),
        ),
        (
            "device",
            prep(
                base(json!({ "createOptions": "--device /dev/kvm" })),
                json!([]),
            ),
        ),
        (
            "sock",
            prep(
                base(
                    json!({ "userMountVolumes": [{ "sourceVolumePath": "/var/run/docker.sock", "targetVolumePath": "/var/run/docker.sock" }] }),
                ),
                json!([]),
            ),
        ),
        (
            "hostpath",
            prep(
                base(
                    json!({ "userMountVolumes": [{ "sourceVolumePath": "/etc", "targetVolumePath": "/host-etc" }] }),
                ),
                json!([]),
            ),
        ),
        (
            "escape",
            prep(
                base(
                    json!({ "systemMountVolumes": [{ "sourceVolumePath": "/home/runner/work/link", "targetVolumePath": "/__w" }] }),
                ),
                json!([]),
            ),
        ),
        (
            "registry",
            prep(base(json!({ "image": "evil.example.com/x:1" })), json!([])),
        ),
        (
            "root",
            prep(base(json!({ "createOptions": "--user 0" })), json!([])),
        ),
        (
            "rootname",
            prep(base(json!({ "createOptions": "--user root" })), json!([])),
        ),
        (
            "unknown",
            prep(base(json!({ "createOptions": "--gpus all" })), json!([])),
        ),
        (
            "toomany",
            prep(
                base(json!({})),
                json!([
                    { "contextName": "a", "image": "ctr:1", "entryPoint": "/bin/probe", "entryPointArgs": ["serve", "1"] },
                    { "contextName": "b", "image": "ctr:1", "entryPoint": "/bin/probe", "entryPointArgs": ["serve", "2"] },
                    { "contextName": "c", "image": "ctr:1", "entryPoint": "/bin/probe", "entryPointArgs": ["serve", "3"] },
                    { "contextName": "d", "image": "ctr:1", "entryPoint": "/bin/probe", "entryPointArgs": ["serve", "4"] }
                ]),
            ),
        ),
        (
            "dockerfile",
            json!({ "command": "run_container_step", "responseFile": null, "state": {},
            "args": { "image": "ctr:1", "dockerfile": "Dockerfile", "workingDirectory": "/__w", "systemMountVolumes": [] } }),
        ),
        (
            "nojob",
            json!({ "command": "run_script_step", "responseFile": null,
            "state": { "container": "someone-elses" },
            "args": { "entryPoint": "/bin/sh", "entryPointArgs": ["-c", "true"], "workingDirectory": "/" } }),
        ),
    ];
    let mut script = String::from("ln -s /proc/self/root link\n");
    for (name, _) in &cases {
        script.push_str(&format!("node $H < {name}.json; echo \"{name}=$?\"\n"));
    }
    // Garbage and a request that is not the protocol's.
    script.push_str("echo 'not json' | node $H; echo \"garbage=$?\"\n");
    let reqs: Vec<(String, serde_json::Value)> = cases
        .iter()
        .map(|(n, v)| (format!("{n}.json"), v.clone()))
        .collect();
    let reqs: Vec<(&str, serde_json::Value)> =
        reqs.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let o = run_job(&w, &reqs, &script);
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for (name, _) in &cases {
        assert!(
            out.contains(&format!("{name}=1")),
            "{name} was not refused:\n{out}\n{err}"
        );
    }
    assert!(out.contains("garbage=1"), "{out}");
    for says in [
        "--privileged is refused: a privileged container is the host's root",
        "--cap-add is refused",
        "--network is refused",
        "--pid is refused",
        "--device is refused",
        "the Docker socket",
        "a job mounts no host path",
        "registry evil.example.com is not one the policy allows",
        "runs containers as an unprivileged user",
        "--gpus is not on airlock's allow-list",
        "the group allows 4 per job",
        "Dockerfile",
        "the job has no job container",
        "it cannot be shared",
    ] {
        assert!(err.contains(says), "no {says:?} in\n{err}");
    }
    let refused = records(&w, "container.refused");
    assert!(refused.len() >= 10, "{refused:?}");
    assert!(
        records(&w, "container.created").is_empty(),
        "nothing was created"
    );
    w.assert_clean();
}

/// The runner's job id, its containers' ids, from the state files.
fn job_states(w: &World) -> (Option<String>, Vec<String>) {
    let mut runner = None;
    let mut children = Vec::new();
    for e in std::fs::read_dir(w.state().join("jobs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            let Ok(v) =
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p).unwrap_or_default())
            else {
                continue;
            };
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            if v.get("parent").is_some_and(|p| p.is_string()) {
                children.push(id);
            } else {
                runner = Some(id);
            }
        }
    }
    (runner, children)
}

#[test]
fn containers_end_with_their_runner_and_after_kill_9_with_gc() {
    need_root!();
    let w = world_with_image();
    let prepare = json!({
        "command": "prepare_job", "responseFile": "/tmp/r.json", "state": {},
        "args": {
            "container": { "image": "ctr:1", "workingDirectory": "/__w", "systemMountVolumes": work_mounts() },
            "services": [{ "contextName": "web", "image": "ctr:1", "entryPoint": "/bin/probe",
                           "entryPointArgs": ["serve", "8080", "hi"] }]
        }
    });
    // 1. The runner ends without cleanup_job: its containers go with it.
    let o = run_job(
        &w,
        &[("prepare.json", prepare.clone())],
        "touch /tmp/r.json; node $H < prepare.json; echo \"prepare=$?\"",
    );
    assert!(
        stdout(&o).contains("prepare=0"),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    w.assert_clean();
    assert_eq!(records(&w, "container.ended").len(), 2);

    // 2. airlock is killed (-9) while the containers run; gc removes everything.
    std::fs::write(w.ws().join("prepare.json"), prepare.to_string()).expect("request");
    let p = w.policy(POLICY);
    let mut c = w.cmd();
    c.args(["run", "-p"])
        .arg(&p)
        .args(["-g", "c", "-w"])
        .arg(w.ws())
        .args([
            "--",
            "/bin/sh",
            "-c",
            "touch /tmp/r.json; node $ACTIONS_RUNNER_CONTAINER_HOOKS < prepare.json; echo prepared; sleep 60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let runner = loop {
        let (runner, children) = job_states(&w);
        // The service and the job container exist.
        if children.len() >= 2 && records(&w, "container.created").len() >= 4 {
            break runner.expect("runner state");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the containers never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // The API answers only the job's runner: a connection from the host gets nothing.
    let sock = w
        .state()
        .join("jobs")
        .join(&runner)
        .join("api/containers.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    let req = json!({ "request": json!({ "command": "cleanup_job", "args": {} }).to_string() });
    let _ = std::io::Write::write_all(&mut s, format!("{req}\n").as_bytes());
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut answer);
    assert!(
        answer.is_empty(),
        "a peer outside the runner was answered: {answer}"
    );
    assert!(
        job_states(&w).1.len() >= 2,
        "the containers are still there"
    );
    // The budget holds half of the group's limits (512 MiB, 256 pids, 1 CPU); the runner
    // keeps the other half.
    let budget = cgroups_of(&format!("{runner}-c"));
    assert!(!budget.is_empty(), "the containers' budget exists");
    let read = |file: &str| {
        budget
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .map(|s| s.trim().to_owned())
    };
    if let Some(mem) = read("memory.limit_in_bytes") {
        assert_eq!(mem, (256u64 << 20).to_string());
        assert_eq!(read("pids.max").as_deref(), Some("128"));
        assert_eq!(read("cpu.cfs_quota_us").as_deref(), Some("50000"));
    } else {
        assert_eq!(read("memory.max"), Some((256u64 << 20).to_string()));
        assert_eq!(read("cpu.max").as_deref(), Some("50000 100000"));
    }
    let runner_mem = cgroups_of(&runner)
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("memory.limit_in_bytes")).ok())
        .map(|s| s.trim().to_owned());
    if let Some(m) = runner_mem {
        assert_eq!(m, (256u64 << 20).to_string(), "the runner keeps the rest");
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let o = w.cmd().arg("gc").output().expect("gc");
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    w.assert_clean();
    assert!(
        cgroups_of(&format!("{runner}-c")).is_empty(),
        "the containers' budget cgroup left"
    );
}

fn median_p95(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95))
}

/// `prepare_job` with one job container and one service, hook request to response, cold
/// (both images pulled from a registry on first use) and with the images cached; against
/// `airlock run` of `/bin/true` on the same image in the same run. Run by
/// scripts/bench-containers.sh.
#[test]
#[ignore = "benchmark: scripts/bench-containers.sh"]
fn bench_prepare_job() {
    need_root!();
    let n: usize = std::env::var("AIRLOCK_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let w = World::new();
    let reg = common::registry::start_registry(&w, 5000, None, None);
    let layout = build_image(&w);
    let image = format!("{}/ci/ctr:1", reg.addr);
    common::registry::push(
        &w,
        &layout,
        "ctr:1",
        &image,
        &["--dest-tls-verify=false"],
        false,
    );
    let policy = format!(
        "default_group = \"c\"\n{POLICY}[groups.img]\nrootfs = {{ image = \"{image}\" }}\negress = {{ mode = \"none\" }}\n[images]\nregistries = [\"{0}\"]\ninsecure = [\"{0}\"]\n",
        reg.addr
    );
    let prepare = json!({
        "command": "prepare_job", "responseFile": "/tmp/r.json", "state": {},
        "args": {
            "container": { "image": image, "workingDirectory": "/__w", "systemMountVolumes": work_mounts() },
            "services": [{ "contextName": "web", "image": image, "entryPoint": "/bin/probe",
                           "entryPointArgs": ["serve", "8080", "hi"],
                           "createOptions": "--health-cmd '/bin/probe get localhost 8080' --health-interval 20ms" }]
        }
    });
    let cleanup =
        json!({ "command": "cleanup_job", "responseFile": null, "state": {}, "args": {} });
    // In the job: the hook's whole round trip (Node.js start included), and Node.js alone.
    let script = r#"touch /tmp/r.json
t0=$(date +%s%N); node -e 0; t1=$(date +%s%N)
node $H < prepare.json >/dev/null 2>&1 || echo FAILED
t2=$(date +%s%N)
node $H < cleanup.json >/dev/null 2>&1 || echo FAILED
t3=$(date +%s%N)
echo "BENCHROW node=$(( (t1-t0)/1000 )) prepare=$(( (t2-t1)/1000 )) cleanup=$(( (t3-t2)/1000 ))""#;
    let mut rows: Vec<(bool, f64, f64, f64)> = Vec::new();
    let mut runs = Vec::new();
    let p = w.policy(&policy);
    let ps = p.to_string_lossy().into_owned();
    for i in 0..2 * n {
        let cold = i % 2 == 0;
        if cold {
            let _ = w.cmd().args(["image", "rm", &image]).output();
            let o = w
                .cmd()
                .args(["image", "gc", "--unused-for", "0s"])
                .output()
                .expect("gc");
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = run_job_with(
            &w,
            &policy,
            &[
                ("prepare.json", prepare.clone()),
                ("cleanup.json", cleanup.clone()),
            ],
            script,
        );
        let out = stdout(&o);
        assert!(
            !out.contains("FAILED") && o.status.success(),
            "{out}\n{}",
            stderr(&o)
        );
        let row = out
            .lines()
            .find_map(|l| l.strip_prefix("BENCHROW "))
            .expect("row");
        let v: Vec<f64> = row
            .split(' ')
            .filter_map(|kv| kv.split_once('=').and_then(|(_, v)| v.parse::<f64>().ok()))
            .map(|us| us / 1000.0)
            .collect();
        rows.push((cold, v[0], v[1], v[2]));
        // The baseline: a whole `airlock run` of the same image, in the same run.
        let t = std::time::Instant::now();
        let o = w
            .cmd()
            .args([
                "run", "-q", "-p", &ps, "-g", "img", "--", "/bin/sh", "-c", "true",
            ])
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", stderr(&o));
        runs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let pick = |cold: bool, f: fn(&(bool, f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().filter(|r| r.0 == cold).map(f).collect();
        median_p95(&mut v)
    };
    let (run_m, run_p) = median_p95(&mut runs);
    let (node_m, _) = pick(false, |r| r.1);
    for (label, cold) in [("cold", true), ("cached", false)] {
        let (pm, pp) = pick(cold, |r| r.2);
        let (cm, cp) = pick(cold, |r| r.3);
        println!(
            "BENCH prepare_job {label}: median {pm:.0} ms p95 {pp:.0} ms ({:.2}x airlock run); cleanup_job median {cm:.0} ms p95 {cp:.0} ms",
            pm / run_m
        );
    }
    println!("BENCH baseline airlock run (same image, /bin/true): median {run_m:.0} ms p95 {run_p:.0} ms; node -e 0 in the job: median {node_m:.0} ms");
    w.assert_clean();
}

/// Shared libraries `bin` needs, as `ldd` lists them (resolved paths).
fn libs_of(bin: &str) -> Vec<String> {
    let o = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .expect("ldd");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            l.split("=>")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .or_else(|| l.split_whitespace().next().filter(|p| p.starts_with('/')))
                .map(str::to_owned)
        })
        .collect()
}

/// An image of Debian's PostgreSQL 15 (server, initdb, pg_isready, psql) and `/bin/sh`, built
/// from the host's package.
fn import_postgres_image(w: &World) {
    let bin = "/usr/lib/postgresql/15/bin";
    let progs = ["postgres", "initdb", "pg_isready", "psql"];
    let mut files: std::collections::BTreeSet<String> =
        progs.iter().map(|p| format!("{bin}/{p}")).collect();
    for p in progs {
        files.extend(libs_of(&format!("{bin}/{p}")));
    }
    // `$libdir`: the server's own modules (text search, PL/pgSQL, encodings); not the JIT,
    // which would bring LLVM.
    for e in std::fs::read_dir("/usr/lib/postgresql/15/lib")
        .expect("libdir")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".so") && !name.starts_with("llvmjit") {
            files.insert(e.path().to_string_lossy().into_owned());
        }
    }
    let layout = w.dir.path().join("pg-layout");
    new_layout(&layout);
    let layer = tar_of(|t| {
        dash_layer(t);
        let mut dirs = std::collections::BTreeSet::new();
        for f in &files {
            let rel = f.trim_start_matches('/');
            let mut d = std::path::Path::new(rel).parent();
            while let Some(p) = d.filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(p.to_string_lossy().into_owned());
                d = p.parent();
            }
        }
        for d in dirs
            .iter()
            .filter(|d| !["bin", "lib", "lib/x86_64-linux-gnu", "lib64"].contains(&d.as_str()))
        {
            add_dir(t, d);
        }
        for f in &files {
            let data = std::fs::read(std::fs::canonicalize(f).expect("canonical")).expect("read");
            add_file(t, f.trim_start_matches('/'), &data, 0o755);
        }
        for d in ["usr/share", "usr/share/zoneinfo"] {
            add_dir(t, d);
        }
        t.append_dir_all("usr/share/postgresql/15", "/usr/share/postgresql/15")
            .expect("share");
        let utc = std::fs::read("/usr/share/zoneinfo/Etc/UTC").expect("tzdata");
        add_file(t, "usr/share/zoneinfo/UTC", &utc, 0o644);
        // The probe: the job's small HTTP service and its client.
        let probe = std::fs::read(probe_bin()).expect("probe");
        add_file(t, "bin/probe", &probe, 0o755);
    });
    let dm = write_manifest(
        &layout,
        "amd64",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&layer))],
    );
    write_index_json(&layout, "postgres:15", &dm);
    let o = w
        .cmd()
        .args(["image", "import"])
        .arg(&layout)
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_postgres_service_from_debian_answers_the_job_container_by_name() {
    need_root!();
    assert!(
        std::path::Path::new("/usr/bin/node").exists(),
        "node is not installed"
    );
    assert!(
        std::path::Path::new("/usr/lib/postgresql/15/bin/postgres").exists(),
        "PostgreSQL 15 is not installed (scripts/setup.sh installs postgresql-15)"
    );
    let w = World::new();
    import_postgres_image(&w);
    let pg_env =
        json!({ "PATH": "/usr/lib/postgresql/15/bin:/usr/bin:/bin", "TZ": "UTC", "PGTZ": "UTC" });
    let prepare = json!({
        "command": "prepare_job", "responseFile": "/tmp/r.json", "state": {},
        "args": {
            "container": { "image": "postgres:15", "workingDirectory": "/__w",
                           "environmentVariables": pg_env, "systemMountVolumes": work_mounts() },
            "services": [{
                "contextName": "postgres", "image": "postgres:15", "entryPoint": "/bin/sh",
                "entryPointArgs": ["-c", "initdb -D /tmp/pg -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/tmp/initdb.log 2>&1 || { while read -r l; do echo \"$l\"; done < /tmp/initdb.log; exit 1; }; exec postgres -D /tmp/pg -k /tmp -c listen_addresses=127.0.0.1 -c shared_buffers=16MB -c dynamic_shared_memory_type=mmap -c fsync=off"],
                "environmentVariables": pg_env,
                "createOptions": "--health-cmd 'pg_isready -h localhost -p 5432' --health-interval 300ms --health-retries 100",
                "portMappings": ["5432:5432"]
            }, {
                "contextName": "web", "image": "postgres:15", "entryPoint": "/bin/probe",
                "entryPointArgs": ["serve", "8080", "hello-from-web"], "environmentVariables": {}
            }]
        }
    });
    let step = json!({
        "command": "run_script_step", "responseFile": null, "state": {},
        "args": { "entryPoint": "/bin/sh",
                  "entryPointArgs": ["-e", "-c", "echo \"by-name=$(psql -h postgres -U postgres -Atc 'select 40+2')\"; echo \"by-localhost=$(psql -h localhost -U postgres -Atc 'select current_user')\"; probe get web 8080; probe get localhost 8080"],
                  "environmentVariables": {}, "workingDirectory": "/__w" }
    });
    let cleanup =
        json!({ "command": "cleanup_job", "responseFile": null, "state": {}, "args": {} });
    let o = run_job(
        &w,
        &[("prepare.json", prepare), ("step.json", step), ("cleanup.json", cleanup)],
        "touch /tmp/r.json\nnode $H < prepare.json; echo \"prepare=$?\"\nnode $H < step.json; echo \"step=$?\"\nnode $H < cleanup.json; echo \"cleanup=$?\"",
    );
    let (out, err) = (stdout(&o), stderr(&o));
    for want in [
        "prepare=0",
        "hello-from-web",
        "by-name=42",
        "by-localhost=postgres",
        "step=0",
        "cleanup=0",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}\n{err}");
    }
    assert!(err.contains("service:postgres is healthy"), "{err}");
    w.assert_clean();
}

#[test]
fn root_in_a_container_is_allowed_only_by_the_policy_and_has_no_capabilities() {
    need_root!();
    let w = world_with_image();
    let policy = POLICY.replace(
        "containers = { max = 4, health_timeout = \"20s\" }",
        "containers = { max = 4, health_timeout = \"20s\", allow_root = true }",
    );
    let step = |user: &str| {
        json!({
            "command": "run_container_step", "responseFile": null, "state": {},
            "args": { "image": "ctr:1", "entryPoint": "/bin/sh", "workingDirectory": "/",
                      "createOptions": format!("--user {user}"),
                      "entryPointArgs": ["-c", "while read k v rest; do case $k in Uid:|CapEff:|CapBnd:|NoNewPrivs:) echo \"$k$v\";; esac; done < /proc/self/status"],
                      "systemMountVolumes": [], "environmentVariables": {} }
        })
    };
    let o = run_job_with(
        &w,
        &policy,
        &[("root.json", step("root")), ("uid.json", step("4242:4242"))],
        "node $H < root.json; echo \"root=$?\"; node $H < uid.json; echo \"uid=$?\"",
    );
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        out.contains("root=0") && out.contains("uid=0"),
        "{out}\n{err}"
    );
    assert!(out.contains("Uid:0"), "{out}");
    assert!(out.contains("Uid:4242"), "{out}");
    assert_eq!(out.matches("CapEff:0000000000000000").count(), 2, "{out}");
    assert_eq!(out.matches("CapBnd:0000000000000000").count(), 2, "{out}");
    assert_eq!(out.matches("NoNewPrivs:1").count(), 2, "{out}");
    w.assert_clean();
}

/// The runner names the host paths of its system mounts, and a job controls the runner's
/// files: a symlink in the work directory to a host directory (absolute, relative, through
/// `..` in the requested path itself, or swapped in while airlock resolves it) must resolve
/// inside the runner's own root. A marker directory on the host must never appear in a
/// container; whatever is refused is refused with a reason.
#[test]
fn runner_paths_that_point_out_of_the_runner_resolve_inside_it() {
    need_root!();
    let w = world_with_image();
    let host = w.dir.path().join("host-only");
    std::fs::create_dir_all(&host).expect("host dir");
    const MARK: &str = "HOST-ONLY-MARKER-5d1e";
    std::fs::write(host.join("marker"), MARK).expect("marker");
    let host_s = host.to_string_lossy().into_owned();
    let step = |source: &str| {
        json!({
            "command": "run_container_step", "responseFile": null, "state": {},
            "args": { "image": "ctr:1", "entryPoint": "/bin/sh", "workingDirectory": "/",
                      "entryPointArgs": ["-c", "cat /__w/x/marker 2>/dev/null; for f in /__w/x/*; do echo \"listed: $f\"; done"],
                      "systemMountVolumes": [
                          { "sourceVolumePath": source, "targetVolumePath": "/__w/x", "readOnly": true }
                      ],
                      "environmentVariables": {} }
        })
    };
    let up = "../".repeat(12);
    let cases = [
        ("abs", step("/home/runner/work/abs")),
        ("rel", step("/home/runner/work/rel")),
        (
            "dotdot",
            step(&format!(
                "/home/runner/work/{up}{}",
                host_s.trim_start_matches('/')
            )),
        ),
        ("swapped", step("/home/runner/work/swapped")),
    ];
    let mut script = format!(
        "ln -s {host_s} abs\nln -s {up}{} rel\nmkdir -p swapped.d\n",
        host_s.trim_start_matches('/')
    );
    // `swapped` flips between a plain directory and a symlink to the host directory while
    // airlock resolves it, many times.
    script.push_str(&format!(
        "( while [ ! -e swaps.done ]; do ln -sfn {host_s} swapped.tmp; mv -T swapped.tmp swapped; ln -sfn swapped.d swapped.tmp; mv -T swapped.tmp swapped; done ) &\n"
    ));
    for (name, _) in &cases {
        script.push_str(&format!("node $H < {name}.json; echo \"{name}=$?\"\n"));
    }
    for _ in 0..10 {
        script.push_str("node $H < swapped.json; echo \"swapped=$?\"\n");
    }
    script.push_str("touch swaps.done; wait\n");
    let reqs: Vec<(String, serde_json::Value)> = cases
        .iter()
        .map(|(n, v)| (format!("{n}.json"), v.clone()))
        .collect();
    let reqs: Vec<(&str, serde_json::Value)> =
        reqs.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let o = run_job(&w, &reqs, &script);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        !out.contains(MARK) && !out.contains("listed: /__w/x/marker"),
        "a container saw the host's directory:\n{out}\n{err}"
    );
    for (name, _) in &cases {
        assert!(out.contains(&format!("{name}=")), "{name} not run:\n{out}");
    }
    // What was refused says why.
    let refused = records(&w, "container.refused");
    for r in &refused {
        assert!(
            r["data"]["why"].as_str().is_some_and(|s| !s.is_empty()),
            "{r}"
        );
    }
    w.assert_clean();
}
