//! The per-job container API (docs/containers.md): a Unix socket that only this job's runner
//! sandbox sees (bind-mounted at `/run/airlock`), through which the runner's container hook
//! asks for the job's containers. Every container is a sandbox of its own, from an image,
//! with the group's hardening, joined to the job's network namespace (so the job's egress
//! policy is theirs, services are on localhost and by name, and nothing outside the job
//! reaches them), below one cgroup budget that all of them share. Requests name only this
//! job's containers: the API knows no other.
//!
//! What runs where:
//! - the job container is a root filesystem (image + overlay), prepared once; each
//!   `run_script_step` is a fresh sandbox on that live root (what one step writes the next
//!   sees), so every step's execs are on the record like any job's;
//! - a service is a long-running sandbox; its health check runs the same way as a step;
//! - `run_container_step` is a sandbox from its image that runs to its end.
//!
//! One request at a time: the runner never runs two hook commands at once, and a job that
//! opens many connections only waits.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_audit::payload::{ContainerCreated, ContainerEnded, ContainerRefused};
use airlock_audit::{AuditSender, Event, TeardownFailure, TeardownStep};
use airlock_containers::check::{self, ContainerSpec, Refused, Role};
use airlock_containers::hook::{Command, HookData, PrepareJobArgs, RunScriptStepArgs};
use airlock_containers::wire::{Frame, Request, MAX_REQUEST};
use airlock_policy::{Containers, ImageSettings, JobUser};
use airlock_sandbox::helper::{Outcome, RESULT_FILE};
use airlock_sandbox::launch::SandboxNet;
use airlock_sandbox::plan::{Bind, JobId, RootfsPlan};
use airlock_sandbox::spec::HostLayout;
use airlock_sandbox::state::{JobState, ProcRef};
use airlock_sandbox::{JobPlan, SandboxError};

use crate::teardown::{teardown, Kernel};
use crate::Engine;

/// The API's directory in the job dir (bind-mounted read-only at `/run/airlock`).
pub(crate) const API_DIR: &str = "api";
/// Named volumes, on the runner's size-limited tmpfs.
const VOLUMES_DIR: &str = "mnt/volumes";
/// Staged binds of the runner's directories, one per container mount.
const STAGE_DIR: &str = "stage";
/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A service's output kept for its health-check failure message.
const SERVICE_LOG: usize = 16 << 10;

/// The cgroup that all containers of job `id` share.
pub(crate) fn budget_cgroup(id: &JobId) -> String {
    format!("/{}/{id}-c", airlock_sandbox::spec::CGROUP_PARENT)
}

/// Adjusts the runner's plan of a group with containers: its share of the limits, the API's
/// directory bound at `/run/airlock`, and the hook named for the runner.
pub(crate) fn plan_runner(plan: &mut JobPlan, c: &Containers, job_dir: &Path) {
    let keep = 1.0 - c.share;
    plan.limits.memory.0 = page_align((plan.limits.memory.0 as f64 * keep) as u64);
    plan.limits.pids = ((f64::from(plan.limits.pids) * keep) as u32).max(16);
    plan.limits.cpus = (plan.limits.cpus * keep).max(MIN_CPUS);
    plan.binds.push(Bind {
        source: job_dir.join(API_DIR),
        dest: airlock_containers::API_DIR.to_owned(),
        readonly: true,
    });
    if c.require_job_container {
        plan.env.push((
            "ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER".to_owned(),
            "true".to_owned(),
        ));
    }
    plan.env.push((
        "ACTIONS_RUNNER_CONTAINER_HOOKS".to_owned(),
        format!(
            "{}/{}",
            airlock_containers::API_DIR,
            airlock_containers::HOOK_PATH
        ),
    ));
}

/// The smallest CPU share a runner or the containers' budget gets (the spec's minimum quota).
const MIN_CPUS: f64 = 0.01;

fn page_align(b: u64) -> u64 {
    (b / 4096).max(1) * 4096
}

/// The budget the containers share: what the runner's plan did not keep (memory, pids,
/// CPUs).
fn budget(group_limits: &airlock_policy::Limits, c: &Containers) -> (u64, u32, f64) {
    let mem = page_align((group_limits.memory.0 as f64 * c.share) as u64);
    let pids = ((f64::from(group_limits.pids) * c.share) as u32).max(16);
    let cpus = (group_limits.cpus * c.share).max(MIN_CPUS);
    (mem, pids, cpus)
}

/// Creates the API directory (hook and socket) in the job dir and the containers' cgroup
/// budget; the budget is on the runner's state before it exists, so teardown and gc remove it.
pub(crate) fn open_api(
    engine: &Engine,
    plan: &JobPlan,
    group_limits: &airlock_policy::Limits,
    c: &Containers,
    state: &mut JobState,
) -> Result<UnixListener, SandboxError> {
    let dir = engine.paths.job_dir(&plan.id).join(API_DIR);
    let hook = dir.join(airlock_containers::HOOK_PATH);
    let hook_dir = hook.parent().unwrap_or(&dir).to_owned();
    std::fs::create_dir_all(&hook_dir).map_err(SandboxError::io("creating", &hook_dir))?;
    for d in [&dir, &hook_dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(SandboxError::io("chmod", d))?;
    }
    std::fs::write(&hook, airlock_containers::HOOK_JS)
        .map_err(SandboxError::io("writing", &hook))?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o444))
        .map_err(SandboxError::io("chmod", &hook))?;
    let sock = dir.join(airlock_containers::SOCKET);
    let listener = UnixListener::bind(&sock).map_err(SandboxError::io("binding", &sock))?;
    // The job user connects; only this job's sandbox can reach the path (the job dir is
    // root's, 0700, on the host).
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666))
        .map_err(SandboxError::io("chmod", &sock))?;
    listener
        .set_nonblocking(true)
        .map_err(SandboxError::io("configuring", &sock))?;
    let rel = budget_cgroup(&plan.id);
    state.extra_cgroups.push(rel.clone());
    state.save(&engine.paths)?;
    let (mem, pids, cpus) = budget(group_limits, c);
    let quota = (cpus * airlock_sandbox::spec::CPU_PERIOD_US as f64).round() as u64;
    airlock_sandbox::cgroup::create_budget(&rel, mem, pids, quota.max(1000))?;
    Ok(listener)
}

/// What the API needs of its job.
pub(crate) struct JobContext {
    pub engine: Engine,
    pub runner: JobPlan,
    pub policy: Containers,
    pub images: ImageSettings,
    pub group_limits: airlock_policy::Limits,
    pub audit: Option<AuditSender>,
}

/// The running API; [`Server::shutdown`] ends it and tears down every container.
pub(crate) struct Server {
    stop: Arc<AtomicBool>,
    registry: Arc<Mutex<Registry>>,
    thread: Option<std::thread::JoinHandle<()>>,
    ctx: Arc<JobContext>,
}

/// Every container of the job that exists, by its sandbox id.
#[derive(Default)]
struct Registry {
    containers: BTreeMap<String, Container>,
    /// The job container's id.
    job: Option<String>,
    /// Services by name.
    services: BTreeMap<String, String>,
    /// Set at shutdown: nothing new is created.
    closed: bool,
    /// Holds on the images the job's containers run on, by digest, for the job's life:
    /// making room in the store never removes them.
    images: BTreeMap<String, airlock_sandbox::image::InUse>,
}

struct Container {
    state: JobState,
    role: Role,
    /// Its image's root (the job container's, for steps) and env, for steps.
    rootfs: PathBuf,
    env: Vec<(String, String)>,
    binds: Vec<Bind>,
    user: JobUser,
    workdir: Option<String>,
    /// A long-running sandbox's helper (services).
    helper: Option<std::process::Child>,
    watcher: Option<airlock_sandbox::watch::Watcher>,
    log: Arc<Mutex<Vec<u8>>>,
    /// Counts towards `containers.max`: not a script step or a health check, which are
    /// transient (the API runs one at a time).
    counted: bool,
}

impl Container {
    fn new(state: JobState, role: Role, user: JobUser, counted: bool) -> Self {
        Self {
            state,
            role,
            rootfs: PathBuf::new(),
            env: Vec::new(),
            binds: Vec::new(),
            user,
            workdir: None,
            helper: None,
            watcher: None,
            log: Arc::new(Mutex::new(Vec::new())),
            counted,
        }
    }
}

impl Registry {
    /// Containers that count towards `containers.max`.
    fn counted(&self) -> usize {
        self.containers.values().filter(|c| c.counted).count()
    }

    /// Takes `c` in before anything of it exists: refused while the job ends or past
    /// `containers.max`, and its state saved first, so teardown and gc find whatever follows.
    fn admit(&mut self, ctx: &JobContext, c: Container) -> Result<(), Failed> {
        if self.closed {
            return Err(Failed::Error("the job is ending".into()));
        }
        if c.counted && self.counted() >= ctx.policy.max as usize {
            return Err(Refused::new(
                "another container",
                format!("the group allows {} per job", ctx.policy.max),
                "raise containers.max in the policy",
            )
            .into());
        }
        c.state.save(&ctx.engine.paths)?;
        self.containers.insert(c.state.id.to_string(), c);
        Ok(())
    }
}

impl Server {
    /// Starts serving `listener` for the job of `ctx`.
    pub(crate) fn start(ctx: JobContext, listener: UnixListener) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let registry = Arc::new(Mutex::new(Registry::default()));
        let ctx = Arc::new(ctx);
        let (s, r, c) = (stop.clone(), registry.clone(), ctx.clone());
        let thread = std::thread::Builder::new()
            .name("container-api".into())
            .spawn(move || accept_loop(&c, &listener, &s, &r))
            .ok();
        Self {
            stop,
            registry,
            thread,
            ctx,
        }
    }

    /// Stops accepting, ends a step that is running, and tears down every container. The
    /// failures are returned (and the containers' states stay for gc).
    pub(crate) fn shutdown(mut self) -> Vec<TeardownFailure> {
        self.stop.store(true, Ordering::SeqCst);
        // A running step or health check is ended through its processes: the request
        // thread then returns.
        let ids: Vec<JobState> = match self.registry.lock() {
            Ok(mut r) => {
                r.closed = true;
                r.containers.values().map(|c| c.state.clone()).collect()
            }
            Err(_) => Vec::new(),
        };
        for st in &ids {
            airlock_sandbox::teardown::end_processes(&self.ctx.engine.paths, st, true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut reg = match self.registry.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        remove_all(&self.ctx, &mut reg)
    }
}

fn accept_loop(
    ctx: &JobContext,
    listener: &UnixListener,
    stop: &AtomicBool,
    registry: &Mutex<Registry>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                if let Err(e) = handle(ctx, conn, stop, registry) {
                    tracing::debug!(job = %ctx.runner.id, "container API connection: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(job = %ctx.runner.id, "container API: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Where the answer of one request goes.
struct Reply {
    conn: UnixStream,
}

impl Reply {
    fn send(&mut self, f: &Frame) {
        // A hook that went away must not stop the step: its output is dropped.
        let _ = self.conn.write_all(&f.line());
    }
    fn out(&mut self, b: &[u8]) {
        self.send(&Frame::Out(b.to_vec()));
    }
    fn err(&mut self, s: &str) {
        self.send(&Frame::Err(format!("{s}\n").into_bytes()));
    }
}

fn handle(
    ctx: &JobContext,
    conn: UnixStream,
    stop: &AtomicBool,
    registry: &Mutex<Registry>,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    // Only the runner's sandbox sees the socket; a peer outside its cgroup is refused anyway.
    let peer = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::other)?;
    if !airlock_sandbox::launch::in_job_cgroup(peer.pid(), ctx.runner.id.as_str()) {
        return Err(std::io::Error::other(format!(
            "peer pid {} is not in the job's runner",
            peer.pid()
        )));
    }
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = Vec::new();
    BufReader::new((&conn).take(MAX_REQUEST as u64 + 1)).read_until(b'\n', &mut line)?;
    conn.set_read_timeout(None)?;
    let mut reply = Reply {
        conn: conn.try_clone()?,
    };
    let parsed = serde_json::from_slice::<Request>(&line)
        .ok()
        .and_then(|r| serde_json::from_str::<HookData>(&r.request).ok());
    let Some(data) = parsed.filter(|_| line.len() <= MAX_REQUEST) else {
        reply.err("airlock: the request is not a runner container-hook request");
        reply.send(&Frame::Exit {
            code: 1,
            response: None,
        });
        return Ok(());
    };
    let (code, response) = match dispatch(ctx, &data, &mut reply, stop, registry) {
        Ok(r) => r,
        Err(Failed::Refused(r)) => {
            record(
                ctx,
                &ContainerRefused {
                    command: data.command.as_str().to_owned(),
                    what: r.what.clone(),
                    why: r.why.clone(),
                },
            );
            reply.err(&r.to_string());
            (1, None)
        }
        Err(Failed::Error(m)) => {
            reply.err(&format!("airlock: {m}"));
            (1, None)
        }
    };
    reply.send(&Frame::Exit { code, response });
    Ok(())
}

enum Failed {
    Refused(Refused),
    Error(String),
}

impl From<Refused> for Failed {
    fn from(r: Refused) -> Self {
        Self::Refused(r)
    }
}

impl From<SandboxError> for Failed {
    fn from(e: SandboxError) -> Self {
        Self::Error(airlock_text::ErrorChain(&e).to_string())
    }
}

fn record<P: airlock_audit::payload::Payload>(ctx: &JobContext, p: &P) {
    if let Some(a) = &ctx.audit {
        let _ = a.send(Event::of(Some(ctx.runner.id.as_str()), p));
    }
}

type Answer = Result<(i32, Option<serde_json::Value>), Failed>;

fn dispatch(
    ctx: &JobContext,
    data: &HookData,
    reply: &mut Reply,
    stop: &AtomicBool,
    registry: &Mutex<Registry>,
) -> Answer {
    let args = data.args.clone().unwrap_or(serde_json::Value::Null);
    let bad_args = |e: serde_json::Error| {
        Failed::Refused(Refused::new(
            format!("{} arguments", data.command.as_str()),
            format!("not in the runner's format ({e})"),
            "this hook speaks the runner's container-hook protocol",
        ))
    };
    match data.command {
        Command::PrepareJob => {
            let a: PrepareJobArgs = serde_json::from_value(args).map_err(bad_args)?;
            prepare_job(ctx, &a, reply, stop, registry)
        }
        Command::RunScriptStep => {
            let a: RunScriptStepArgs = serde_json::from_value(args).map_err(bad_args)?;
            run_script_step(ctx, &a, reply, registry)
        }
        Command::RunContainerStep => {
            let a: airlock_containers::hook::ContainerInfo =
                serde_json::from_value(args).map_err(bad_args)?;
            run_container_step(ctx, &a, reply, registry)
        }
        Command::CleanupJob => {
            let mut reg = match registry.lock() {
                Ok(mut r) => std::mem::take(&mut *r),
                Err(_) => return Err(Failed::Error("container registry poisoned".into())),
            };
            let failures = remove_all(ctx, &mut reg);
            for f in &failures {
                reply.err(&format!("airlock: teardown: {}", f.message));
            }
            Ok((i32::from(!failures.is_empty()), None))
        }
    }
}

fn prepare_job(
    ctx: &JobContext,
    a: &PrepareJobArgs,
    reply: &mut Reply,
    stop: &AtomicBool,
    registry: &Mutex<Registry>,
) -> Answer {
    // Everything is checked before anything is created.
    let job = a
        .container
        .as_ref()
        .filter(|c| c.image.as_deref().is_some_and(|i| !i.is_empty()))
        .map(|c| check::container(Role::Job, c))
        .transpose()?;
    let mut services = Vec::new();
    for s in a.services.iter().flatten() {
        let name = s.context_name.clone().unwrap_or_default();
        services.push(check::container(Role::Service(name), s)?);
    }
    let mut names = std::collections::BTreeSet::new();
    for s in &services {
        if let Role::Service(n) = &s.role {
            if !names.insert(n.clone()) {
                return Err(Refused::new(
                    format!("service {n:?}"),
                    "named twice",
                    "give each service its own name",
                )
                .into());
            }
        }
    }
    {
        let reg = lock(registry)?;
        if reg.job.is_some() || !reg.services.is_empty() {
            return Err(Refused::new(
                "prepare_job",
                "the job's containers exist already",
                "a job prepares its containers once",
            )
            .into());
        }
        let wanted = services.len() + usize::from(job.is_some());
        if reg.counted() + wanted > ctx.policy.max as usize {
            return Err(Refused::new(
                format!("{wanted} containers"),
                format!("the group allows {} per job", ctx.policy.max),
                "ask for fewer services, or raise containers.max in the policy",
            )
            .into());
        }
    }
    for s in job.iter().chain(services.iter()) {
        for n in &s.notices {
            reply.err(&format!("airlock: {}: {n}", s.role.label()));
        }
    }
    let hosts: Vec<String> = names.iter().cloned().collect();
    // A list in the request's order: the runner matches them by position (ResponseContext).
    let mut context_services = Vec::new();
    let mut state_services = serde_json::Map::new();
    let mut healthy = Vec::new();
    for s in &services {
        let id = create(ctx, s, &hosts, registry, true)?;
        if let Role::Service(n) = &s.role {
            lock(registry)?.services.insert(n.clone(), id.clone());
            state_services.insert(n.clone(), id.clone().into());
            context_services
                .push(serde_json::json!({ "id": id, "network": network_name(ctx), "ports": {} }));
        }
        if s.health.is_some() {
            healthy.push((s.clone(), id));
        }
    }
    let mut response = serde_json::json!({
        "state": { "network": network_name(ctx), "services": state_services },
        "context": { "services": context_services },
        "isAlpine": false,
        "alpine": false,
    });
    if let Some(j) = &job {
        let id = create(ctx, j, &hosts, registry, false)?;
        let alpine = {
            let reg = lock(registry)?;
            reg.containers
                .get(&id)
                .is_some_and(|c| c.rootfs.join("etc/alpine-release").exists())
        };
        lock(registry)?.job = Some(id.clone());
        response["state"]["container"] = id.clone().into();
        response["context"]["container"] =
            serde_json::json!({ "id": id, "network": network_name(ctx), "ports": {} });
        response["isAlpine"] = alpine.into();
        response["alpine"] = alpine.into();
    }
    for (s, id) in healthy {
        wait_healthy(ctx, &s, &id, reply, stop, registry)?;
    }
    Ok((0, Some(response)))
}

fn network_name(ctx: &JobContext) -> String {
    format!("airlock-{}", ctx.runner.id)
}

fn lock(r: &Mutex<Registry>) -> Result<std::sync::MutexGuard<'_, Registry>, Failed> {
    r.lock()
        .map_err(|_| Failed::Error("container registry poisoned".into()))
}

/// The image's store entry (pulled on first use, through the policy's `[images]`).
fn resolve(
    ctx: &JobContext,
    image: &str,
    registry: &Mutex<Registry>,
) -> Result<(String, PathBuf), Failed> {
    let store = airlock_sandbox::image::ImageStore::new(ctx.engine.paths.images());
    if let Some(host) = airlock_policy::registry_host(image) {
        if !ctx.images.registries.iter().any(|r| r == host) {
            return Err(Refused::new(
                format!("image {image:?}"),
                format!("registry {host} is not one the policy allows"),
                "use an image from a registry in `[images] registries`, or add it there",
            )
            .into());
        }
    }
    let img = crate::request::resolve_image(&store, image, &ctx.images)
        .map_err(|e| Failed::Error(format!("image {image}: {}", airlock_text::ErrorChain(&e))))?;
    let mut r = lock(registry)?;
    if !r.images.contains_key(&img.digest) {
        let hold = crate::request::hold_image(&store, &img).map_err(|e| {
            Failed::Error(format!("image {image}: {}", airlock_text::ErrorChain(&e)))
        })?;
        r.images.insert(img.digest.clone(), hold);
    }
    let dir = store.rootfs_dir(&img.digest);
    Ok((img.digest, dir))
}

/// The user a container runs as: the group's, or `--user` (numeric) when the policy allows it.
fn user_of(ctx: &JobContext, s: &ContainerSpec) -> Result<JobUser, Failed> {
    let Some(u) = &s.user else {
        return Ok(ctx.runner.user.clone());
    };
    // Numbers, or `root` (workflows say `--user root` to install packages in a container).
    let id = |s: &str| match s {
        "root" => Some(0),
        n => n.parse::<u32>().ok(),
    };
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (id(a), id(b)),
        None => (id(u), id(u)),
    };
    let (Some(uid), Some(gid)) = (uid, gid) else {
        return Err(Refused::new(
            format!("--user {u}"),
            "only numeric users (and root) are supported",
            "use --user UID[:GID]",
        )
        .into());
    };
    if (uid == 0 || gid == 0) && !ctx.policy.allow_root {
        return Err(Refused::new(
            format!("--user {u}"),
            "the group runs containers as an unprivileged user",
            "drop --user, or set containers.allow_root = true in the policy (root without capabilities)",
        )
        .into());
    }
    Ok(JobUser {
        name: if uid == 0 {
            "root".into()
        } else {
            "container".into()
        },
        uid,
        gid,
    })
}

/// A child plan of the runner's: its own id and cgroup below the budget, the job's network.
fn child_plan(
    ctx: &JobContext,
    rootfs: RootfsPlan,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    user: JobUser,
    cwd: String,
    (memory, cpus): (Option<u64>, Option<f64>),
) -> JobPlan {
    let mut p = ctx.runner.clone();
    p.id = JobId::random();
    // Its records are the job's: the job's limiter bounds them, its detectors read them.
    p.record_as = Some(ctx.runner.id.clone());
    p.cgroup = format!("{}/{}", budget_cgroup(&ctx.runner.id), p.id);
    p.rootfs = rootfs;
    p.argv = argv;
    p.env = env;
    p.secrets = Vec::new();
    p.user = user;
    p.cwd = cwd;
    p.workspace = None;
    p.binds = Vec::new();
    p.hosts = Vec::new();
    p.protect = Vec::new();
    p.late_env = Vec::new();
    // Never more than the budget: a child's CPU quota above its parent's is refused by the
    // kernel (cgroup v1), and the budget caps them all anyway.
    let (mem, pids, budget_cpus) = budget(&ctx.group_limits, &ctx.policy);
    p.limits.memory.0 = memory.map_or(mem, |m| page_align(m.min(mem)));
    p.limits.pids = pids;
    p.limits.cpus = cpus.map_or(budget_cpus, |c| c.min(budget_cpus).max(MIN_CPUS));
    p
}

/// The image's environment, the container's, and a PATH.
fn image_env(
    ctx: &JobContext,
    digest: &str,
    s: &ContainerSpec,
) -> (Vec<(String, String)>, Vec<String>, Option<String>) {
    let store = airlock_sandbox::image::ImageStore::new(ctx.engine.paths.images());
    let cfg = store.config(digest).ok();
    let c = cfg.as_ref().and_then(|c| c.config().as_ref());
    let mut env: Vec<(String, String)> = c
        .and_then(|c| c.env().as_ref())
        .map(|e| {
            e.iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), airlock_sandbox::plan::PATH.into()));
    }
    for (k, v) in &s.env {
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.clone()));
    }
    env.push(("AIRLOCK_JOB_ID".into(), ctx.runner.id.to_string()));
    let mut argv: Vec<String> = match &s.entrypoint {
        Some(e) => vec![e.clone()],
        None => c.and_then(|c| c.entrypoint().clone()).unwrap_or_default(),
    };
    if !s.args.is_empty() {
        argv.extend(s.args.iter().cloned());
    } else if s.entrypoint.is_none() {
        argv.extend(c.and_then(|c| c.cmd().clone()).unwrap_or_default());
    }
    let workdir = s.workdir.clone().or_else(|| {
        c.and_then(|c| c.working_dir().clone())
            .filter(|w| !w.is_empty())
    });
    (env, argv, workdir)
}

/// The binds of a container: the runner's directories it asked for, staged so that the
/// sandbox mounts exactly what was resolved inside the runner's root, and its volumes.
fn binds_of(ctx: &JobContext, s: &ContainerSpec, child_dir: &Path) -> Result<Vec<Bind>, Failed> {
    let runner_dir = ctx.engine.paths.job_dir(&ctx.runner.id);
    let runner_root = airlock_sandbox::rootfs::RootfsDirs::new(&runner_dir).rootfs;
    let mut binds = Vec::new();
    let stage = child_dir.join(STAGE_DIR);
    for (i, m) in s.system_mounts.iter().enumerate() {
        let target = stage.join(i.to_string());
        stage_in_root(&runner_root, &m.source, &target).map_err(|e| {
            Failed::Refused(Refused::new(
                format!("the runner path {:?}", m.source),
                format!("it cannot be shared ({e})"),
                "share directories of the runner's work directory",
            ))
        })?;
        binds.push(Bind {
            source: target,
            dest: m.target.clone(),
            readonly: m.readonly,
        });
    }
    for v in &s.volumes {
        let dir = runner_dir.join(VOLUMES_DIR).join(&v.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failed::Error(format!("volume {}: {e}", v.name)))?;
        let _ =
            std::os::unix::fs::chown(&dir, Some(ctx.runner.user.uid), Some(ctx.runner.user.gid));
        binds.push(Bind {
            source: dir,
            dest: v.target.clone(),
            readonly: v.readonly,
        });
    }
    Ok(binds)
}

/// Bind-mounts the directory `path` of the root `root` (resolved inside it: symlinks and
/// `..` cannot leave it) on `target`, through the opened directory itself, so a path the job
/// swaps afterwards changes nothing.
fn stage_in_root(root: &Path, path: &str, target: &Path) -> Result<(), String> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let fd = airlock_sandbox::image::open_in_root(root, rel, OFlag::O_PATH | OFlag::O_DIRECTORY)
        .map_err(|e| format!("not a directory of the runner: {e}"))?;
    std::fs::create_dir_all(target).map_err(|e| e.to_string())?;
    let src = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(
        Some(src.as_str()),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding: {e}"))
}

/// Creates one container: a service (started, `run = true`) or the job container (its root
/// only). Returns its id; it is in the registry from before anything of it exists.
fn create(
    ctx: &JobContext,
    s: &ContainerSpec,
    hosts: &[String],
    registry: &Mutex<Registry>,
    run: bool,
) -> Result<String, Failed> {
    let (digest, dir) = resolve(ctx, &s.image, registry)?;
    let user = user_of(ctx, s)?;
    let (env, argv, workdir) = image_env(ctx, &digest, s);
    if run && argv.is_empty() {
        return Err(Refused::new(
            format!("service {:?}", s.role.label()),
            format!("image {} names no command", s.image),
            "give the service an entrypoint (`options: --entrypoint …`)",
        )
        .into());
    }
    let mut plan = child_plan(
        ctx,
        RootfsPlan::Image {
            digest: digest.clone(),
            dir,
        },
        if run {
            argv.clone()
        } else {
            vec!["/bin/true".into()]
        },
        env.clone(),
        user.clone(),
        workdir.clone().unwrap_or_else(|| "/".into()),
        (s.memory, s.cpus),
    );
    plan.hosts = hosts.to_vec();
    let id = plan.id.to_string();
    let paths = &ctx.engine.paths;
    let child_dir = paths.job_dir(&plan.id);
    let state = new_child_state(ctx, &plan)?;
    {
        let mut c = Container::new(state.clone(), s.role.clone(), user.clone(), true);
        c.rootfs = airlock_sandbox::rootfs::RootfsDirs::new(&child_dir).rootfs;
        c.env = env;
        c.workdir = workdir;
        lock(registry)?.admit(ctx, c)?;
    }
    make_dir(&child_dir)?;
    let binds = binds_of(ctx, s, &child_dir)?;
    plan.binds = binds.clone();
    if let Some(c) = lock(registry)?.containers.get_mut(&id) {
        c.binds = binds;
    }
    record(
        ctx,
        &ContainerCreated {
            container: id.clone(),
            role: s.role.label(),
            image: s.image.clone(),
            digest,
            command: if run { argv } else { Vec::new() },
            uid: user.uid,
        },
    );
    if run {
        let (launched, st) = start(ctx, &plan, state)?;
        let log = lock(registry)?
            .containers
            .get(&id)
            .map(|c| c.log.clone())
            .unwrap_or_default();
        let airlock_sandbox::launch::Launched {
            watcher, mut child, ..
        } = launched;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || keep_tail(stream, &log));
        }
        let mut reg = lock(registry)?;
        if let Some(c) = reg.containers.get_mut(&id) {
            c.state = st;
            c.helper = Some(child);
            c.watcher = watcher;
        }
    } else {
        let layout = HostLayout::detect(Path::new("/"));
        airlock_sandbox::rootfs::prepare(
            &child_dir,
            &plan,
            &layout,
            &paths.base_cache(),
            ctx.runner_resolver(),
        )?;
    }
    Ok(id)
}

impl JobContext {
    /// The resolver of the job's network (its gateway), if it has one.
    fn runner_resolver(&self) -> Option<std::net::Ipv4Addr> {
        let st = JobState::load(&self.engine.paths.state_file(&self.runner.id)).ok()?;
        st.net.map(|n| n.lease().gateway)
    }

    /// The job's network namespace: its pinned file, or its runner's init's.
    fn netns(&self) -> Result<SandboxNet, Failed> {
        let dir = self.engine.paths.job_dir(&self.runner.id);
        let st = JobState::load(&self.engine.paths.state_file(&self.runner.id))?;
        if let Some(n) = st.net {
            return Ok(SandboxNet {
                ns_file: airlock_net::link::ns_file(&dir),
                resolver: n.lease().gateway,
            });
        }
        let init = st
            .init
            .filter(ProcRef::alive)
            .ok_or_else(|| Failed::Error("the job's runner is not running".into()))?;
        let ns_file = PathBuf::from(format!("/proc/{}/ns/net", init.pid));
        // Without a network of its own the job's namespace has lo down; its containers
        // need it (services on localhost).
        airlock_net::link::loopback_up(&ns_file).map_err(|e| {
            Failed::Error(format!(
                "loopback of the job: {}",
                airlock_text::ErrorChain(&e)
            ))
        })?;
        Ok(SandboxNet {
            ns_file,
            resolver: std::net::Ipv4Addr::LOCALHOST,
        })
    }
}

fn make_dir(d: &Path) -> Result<(), Failed> {
    std::fs::create_dir(d).map_err(|e| Failed::Error(format!("creating {}: {e}", d.display())))?;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Failed::Error(format!("chmod {}: {e}", d.display())))
}

fn new_child_state(ctx: &JobContext, plan: &JobPlan) -> Result<JobState, Failed> {
    Ok(JobState::new(plan, Some(ctx.runner.id.clone()))?)
}

/// Starts a sandbox of `plan` on the job's network.
fn start(
    ctx: &JobContext,
    plan: &JobPlan,
    mut state: JobState,
) -> Result<(airlock_sandbox::launch::Launched, JobState), Failed> {
    let net = ctx.netns()?;
    let mut launched = airlock_sandbox::launch::spawn(
        plan,
        &ctx.engine.paths,
        &ctx.engine.helper_exe,
        &mut state,
        Some(net),
        ctx.audit.clone(),
        &|_| {},
    )?;
    launched.go(false);
    Ok((launched, state))
}

fn keep_tail(mut from: Box<dyn Read + Send>, log: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Ok(mut l) = log.lock() {
            l.extend_from_slice(&buf[..n]);
            let over = l.len().saturating_sub(SERVICE_LOG);
            l.drain(..over);
        }
    }
}

/// Runs a sandbox of `plan` to its end, its output to `out` (or kept), within `limit`;
/// tears it down. Returns its exit code (128 + signal when killed).
fn run_to_end(
    ctx: &JobContext,
    plan: &JobPlan,
    role: &Role,
    registry: &Mutex<Registry>,
    mut out: Option<&mut Reply>,
    limit: Duration,
    counted: bool,
) -> Result<i32, Failed> {
    let id = plan.id.to_string();
    let paths = &ctx.engine.paths;
    let state = new_child_state(ctx, plan)?;
    lock(registry)?.admit(
        ctx,
        Container::new(state.clone(), role.clone(), plan.user.clone(), counted),
    )?;
    let result = make_dir(&paths.job_dir(&plan.id))
        .and_then(|()| start(ctx, plan, state.clone()))
        .map(|(launched, st)| {
            if let Ok(mut reg) = registry.lock() {
                if let Some(c) = reg.containers.get_mut(&id) {
                    c.state = st.clone();
                }
            }
            let airlock_sandbox::launch::Launched {
                watcher, mut child, ..
            } = launched;
            // Bounded: a hook that does not read its output stalls the step, never airlock's memory.
            let (tx, rx) = std::sync::mpsc::sync_channel::<(bool, Vec<u8>)>(16);
            let pumps: Vec<_> = [
                child
                    .stdout
                    .take()
                    .map(|s| (false, Box::new(s) as Box<dyn Read + Send>)),
                child
                    .stderr
                    .take()
                    .map(|s| (true, Box::new(s) as Box<dyn Read + Send>)),
            ]
            .into_iter()
            .flatten()
            .map(|(is_err, mut s)| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || tx.send((is_err, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
            drop(tx);
            let deadline = Instant::now() + limit;
            let mut timed_out = false;
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok((is_err, b)) => {
                        if let Some(r) = out.as_deref_mut() {
                            if is_err {
                                r.send(&Frame::Err(b));
                            } else {
                                r.out(&b);
                            }
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                }
                if Instant::now() >= deadline && !timed_out {
                    timed_out = true;
                    airlock_sandbox::teardown::end_processes(paths, &st, true);
                    airlock_sandbox::launch::kill_strays(&id, &st.cgroup);
                }
            }
            let _ = child.wait();
            for p in pumps {
                let _ = p.join();
            }
            if let Some(w) = watcher {
                w.stop();
            }
            let outcome: Option<Outcome> = std::fs::read(paths.job_dir(&plan.id).join(RESULT_FILE))
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok());
            match (timed_out, outcome) {
                (true, _) => Err(Failed::Error(format!(
                    "{} timed out after {limit:?}",
                    role.label()
                ))),
                (false, Some(Outcome::Exited(c))) => Ok(c),
                (false, Some(Outcome::Signaled(s))) => Ok(128 + s),
                (false, Some(Outcome::Failed(f))) => Err(Failed::Error(f.message)),
                (false, None) => Err(Failed::Error("the sandbox ended without a result".into())),
            }
        })
        .and_then(|r| r);
    let removed = lock(registry)?.containers.remove(&id);
    let failures = match removed {
        Some(c) => remove_one(ctx, c, result.as_ref().ok().copied()),
        None => Vec::new(),
    };
    if !failures.is_empty() {
        return Err(Failed::Error(format!(
            "teardown of {}: {}",
            role.label(),
            failures
                .iter()
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    result
}

/// A step's sandbox run to its end, its output to the hook, within the group's timeout.
fn run_step(
    ctx: &JobContext,
    plan: &JobPlan,
    registry: &Mutex<Registry>,
    reply: &mut Reply,
    counted: bool,
) -> Result<i32, Failed> {
    let limit = ctx.group_limits.timeout.0;
    run_to_end(
        ctx,
        plan,
        &Role::Step,
        registry,
        Some(reply),
        limit,
        counted,
    )
}

fn run_script_step(
    ctx: &JobContext,
    a: &RunScriptStepArgs,
    reply: &mut Reply,
    registry: &Mutex<Registry>,
) -> Answer {
    let (rootfs, mut env, binds, user, workdir) = {
        let reg = lock(registry)?;
        let c = reg
            .job
            .as_ref()
            .and_then(|j| reg.containers.get(j))
            .ok_or_else(|| {
                Failed::Refused(Refused::new(
                    "run_script_step",
                    "the job has no job container",
                    "steps without `container:` run in the runner itself",
                ))
            })?;
        (
            c.rootfs.clone(),
            c.env.clone(),
            c.binds.clone(),
            c.user.clone(),
            c.workdir.clone(),
        )
    };
    let step = check::container(
        Role::Step,
        &airlock_containers::hook::ContainerInfo {
            image: Some("job-container".into()),
            entry_point: Some(a.entry_point.clone()),
            entry_point_args: a.entry_point_args.clone(),
            environment_variables: a.environment_variables.clone(),
            working_directory: a.working_directory.clone(),
            ..Default::default()
        },
    )?;
    for (k, v) in &step.env {
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.clone()));
    }
    prepend_path(&mut env, a.prepend_path.as_ref());
    let mut argv = vec![a.entry_point.clone()];
    argv.extend(step.args.iter().cloned());
    let mut plan = child_plan(
        ctx,
        RootfsPlan::Shared { dir: rootfs },
        argv,
        env,
        user,
        step.workdir.or(workdir).unwrap_or_else(|| "/".into()),
        (None, None),
    );
    plan.binds = binds;
    // A script step is transient: it does not count towards `containers.max`.
    let code = run_step(ctx, &plan, registry, reply, false)?;
    Ok((code, None))
}

/// Puts the runner's `prependPath` directories in front of the step's `PATH`.
fn prepend_path(
    env: &mut Vec<(String, String)>,
    dirs: Option<&airlock_containers::hook::PathList>,
) {
    let dirs = dirs.map(|p| p.dirs()).unwrap_or_default();
    if dirs.is_empty() {
        return;
    }
    let old = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| airlock_sandbox::plan::PATH.into());
    // The runner sends them in PATH order already (most recent first: HookInput.cs reverses
    // its own list).
    let mut parts = dirs;
    parts.push(old);
    env.retain(|(k, _)| k != "PATH");
    env.push(("PATH".into(), parts.join(":")));
}

fn run_container_step(
    ctx: &JobContext,
    a: &airlock_containers::hook::ContainerInfo,
    reply: &mut Reply,
    registry: &Mutex<Registry>,
) -> Answer {
    let s = check::container(Role::Step, a)?;
    for n in &s.notices {
        reply.err(&format!("airlock: step: {n}"));
    }
    let (digest, dir) = resolve(ctx, &s.image, registry)?;
    let user = user_of(ctx, &s)?;
    let (mut env, argv, workdir) = image_env(ctx, &digest, &s);
    prepend_path(&mut env, a.prepend_path.as_ref());
    if argv.is_empty() {
        return Err(Refused::new(
            format!("image {}", s.image),
            "it names no command",
            "give the step an entrypoint",
        )
        .into());
    }
    let hosts: Vec<String> = lock(registry)?.services.keys().cloned().collect();
    let mut plan = child_plan(
        ctx,
        RootfsPlan::Image {
            digest: digest.clone(),
            dir,
        },
        argv.clone(),
        env,
        user.clone(),
        workdir.unwrap_or_else(|| "/".into()),
        (s.memory, s.cpus),
    );
    plan.hosts = hosts;
    record(
        ctx,
        &ContainerCreated {
            container: plan.id.to_string(),
            role: s.role.label(),
            image: s.image.clone(),
            digest,
            command: argv,
            uid: user.uid,
        },
    );
    // Staged before the step's dir exists, in the runner's dir; torn down with the step.
    plan.binds = staged_binds(ctx, &s, &plan.id)?;
    let code = run_step(ctx, &plan, registry, reply, true)?;
    Ok((code, None))
}

/// Binds of a container step, staged under the runner's job dir (torn down with the step's
/// own state: they are unmounted when the step's `stage` dir is).
fn staged_binds(ctx: &JobContext, s: &ContainerSpec, id: &JobId) -> Result<Vec<Bind>, Failed> {
    let dir = ctx
        .engine
        .paths
        .job_dir(&ctx.runner.id)
        .join(STAGE_DIR)
        .join(id.as_str());
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failed::Error(format!("creating {}: {e}", dir.display())))?;
    binds_of(ctx, s, &dir)
}

fn wait_healthy(
    ctx: &JobContext,
    s: &ContainerSpec,
    id: &str,
    reply: &mut Reply,
    stop: &AtomicBool,
    registry: &Mutex<Registry>,
) -> Result<(), Failed> {
    let Some(h) = &s.health else {
        return Ok(());
    };
    let (rootfs, env, binds, user) = {
        let reg = lock(registry)?;
        let c = reg
            .containers
            .get(id)
            .ok_or_else(|| Failed::Error("the service is gone".into()))?;
        (
            c.rootfs.clone(),
            c.env.clone(),
            c.binds.clone(),
            c.user.clone(),
        )
    };
    let started = Instant::now();
    let deadline = started + ctx.policy.health_timeout.0;
    let mut failures = 0u32;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(Failed::Error("the job is ending".into()));
        }
        let mut plan = child_plan(
            ctx,
            RootfsPlan::Shared {
                dir: rootfs.clone(),
            },
            vec!["/bin/sh".into(), "-c".into(), h.cmd.clone()],
            env.clone(),
            user.clone(),
            "/".into(),
            (None, None),
        );
        plan.binds = binds.clone();
        let code = run_to_end(ctx, &plan, &s.role, registry, None, h.timeout, false).unwrap_or(1);
        if code == 0 {
            reply.err(&format!("airlock: {} is healthy", s.role.label()));
            return Ok(());
        }
        if started.elapsed() >= h.start_period {
            failures += 1;
        }
        if failures >= h.retries.max(1) && Instant::now() + h.interval >= deadline
            || Instant::now() >= deadline
        {
            let log = lock(registry)?
                .containers
                .get(id)
                .and_then(|c| {
                    c.log
                        .lock()
                        .ok()
                        .map(|l| String::from_utf8_lossy(&l).into_owned())
                })
                .unwrap_or_default();
            return Err(Failed::Error(format!(
                "{} did not become healthy within {:?} (last check exit code {code}); its last output:\n{}",
                s.role.label(),
                ctx.policy.health_timeout.0,
                airlock_text::escape_lines(&log)
            )));
        }
        std::thread::sleep(h.interval);
    }
}

/// Tears down every container: steps and services first, the job container last.
fn remove_all(ctx: &JobContext, reg: &mut Registry) -> Vec<TeardownFailure> {
    reg.closed = true;
    let mut all: Vec<Container> = std::mem::take(&mut reg.containers).into_values().collect();
    all.sort_by_key(|c| c.role == Role::Job);
    reg.job = None;
    reg.services.clear();
    all.into_iter()
        .flat_map(|c| remove_one(ctx, c, None))
        .collect()
}

fn remove_one(ctx: &JobContext, mut c: Container, exit_code: Option<i32>) -> Vec<TeardownFailure> {
    if let Some(mut h) = c.helper.take() {
        airlock_sandbox::teardown::end_processes(&ctx.engine.paths, &c.state, true);
        let _ = h.kill();
        let _ = h.wait();
    }
    if let Some(w) = c.watcher.take() {
        w.stop();
    }
    let mut failures = teardown(&Kernel::new(&ctx.engine), &c.state, true);
    // A container step's staged binds live in the runner's dir.
    let staged = ctx
        .engine
        .paths
        .job_dir(&ctx.runner.id)
        .join(STAGE_DIR)
        .join(c.state.id.as_str());
    if staged.exists() {
        airlock_sandbox::rootfs::teardown(&staged, &mut failures);
    }
    record(
        ctx,
        &ContainerEnded {
            container: c.state.id.to_string(),
            role: c.role.label(),
            exit_code,
            teardown_errors: failures.iter().map(|f| f.message.clone()).collect(),
        },
    );
    if !failures.is_empty() {
        failures.push(TeardownFailure::new(
            TeardownStep::State,
            format!("container {} left for gc", c.state.id),
        ));
    }
    failures
}
