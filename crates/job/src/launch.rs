//! Phase 3: the job's directory, its network attached on a thread of its own while the
//! sandbox is prepared and its helper spawned, and the go-ahead once both are ready.

use std::os::unix::fs::PermissionsExt;

use airlock_policy::{EgressMode, ExecutorKind};
use airlock_sandbox::launch::{Launched, SandboxNet};
use airlock_sandbox::state::JobState;
use airlock_sandbox::{JobPlan, SandboxError};

use crate::Engine;

/// The NFLOG listener that hands firewall denials to this job (none without a network).
pub(crate) fn nflog_listener(
    engine: &Engine,
    plan: &JobPlan,
) -> Result<Option<airlock_net::nflog::Listener>, SandboxError> {
    if plan.egress.mode == EgressMode::None {
        return Ok(None);
    }
    let paths = &engine.paths;
    airlock_net::nflog::spawn_listener(airlock_net::pool::lease_dir(&paths.state), paths.jobs())
        .map(Some)
        .map_err(|source| SandboxError::Io {
            what: "starting the NFLOG listener",
            path: "pipe".into(),
            source,
        })
}

/// Creates the job's directory and starts its sandbox on its network. `net` receives the
/// network as soon as it exists, even when the sandbox then fails, so teardown finds it.
pub(crate) fn launch(
    engine: &Engine,
    plan: &JobPlan,
    state: &mut JobState,
    net: &mut Option<airlock_net::JobNetwork>,
    audit: &airlock_audit::AuditQueue,
    containers: Option<&(airlock_policy::Containers, airlock_policy::Limits)>,
    api: &mut Option<std::os::unix::net::UnixListener>,
) -> Result<Launched, SandboxError> {
    let paths = &engine.paths;
    let job_dir = paths.job_dir(&plan.id);
    std::fs::create_dir(&job_dir).map_err(|source| SandboxError::Io {
        what: "creating",
        path: job_dir.clone(),
        source,
    })?;
    std::fs::set_permissions(&job_dir, std::fs::Permissions::from_mode(0o700)).map_err(
        |source| SandboxError::Io {
            what: "setting permissions of",
            path: job_dir.clone(),
            source,
        },
    )?;
    check_workspace(plan, paths)?;
    // The container API's directory is bound into the sandbox: it exists before the helper.
    if let Some((c, limits)) = containers {
        *api = Some(crate::containers::open_api(engine, plan, limits, c, state)?);
    }
    let t0 = std::time::Instant::now();
    let phase = |name: &str| tracing::debug!(job = %plan.id, phase = name, at_us = t0.elapsed().as_micros() as u64);
    // The network attaches on a thread of its own while the rootfs, the bundle and the
    // helper (which waits for a go-ahead on its stdin before it creates anything) get ready:
    // its ~5 ms overlap theirs instead of adding to them.
    let net_thread = start_network(engine, plan, state)?;
    let sandbox_net = state.net.as_ref().map(|n| SandboxNet {
        ns_file: airlock_net::link::ns_file(&job_dir),
        resolver: n.lease().gateway,
    });
    let launched = airlock_sandbox::launch::spawn(
        plan,
        paths,
        &engine.helper_exe,
        state,
        sandbox_net,
        audit.sender(),
        &phase,
    );
    // Whatever happened meanwhile, the network thread is joined and its result kept for
    // teardown.
    let joined = match net_thread.map(|t| t.join()) {
        None => Ok(()),
        Some(Ok(Ok(n))) => {
            *net = Some(n);
            phase("network ready");
            Ok(())
        }
        Some(Ok(Err(e))) => Err(SandboxError::Network(e)),
        Some(Err(_)) => Err(SandboxError::Network(airlock_net::NetError::Panicked(
            "network attach",
        ))),
    };
    // A helper that was started but never gets its go-ahead exits without creating anything
    // when its stdin closes (teardown also kills it).
    let mut launched = match (launched, joined) {
        (Ok(l), Ok(())) => l,
        (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
    };
    launched.go(!plan.late_env.is_empty());
    phase("helper started");
    Ok(launched)
}

type NetThread = std::thread::JoinHandle<Result<airlock_net::JobNetwork, airlock_net::NetError>>;

/// Leases the job's addresses (persisted before anything is created, so gc can undo it) and
/// attaches its network on a thread; `None` when the job has no network.
fn start_network(
    engine: &Engine,
    plan: &JobPlan,
    state: &mut JobState,
) -> Result<Option<NetThread>, SandboxError> {
    if plan.egress.mode == EgressMode::None {
        return Ok(None);
    }
    if plan.executor == ExecutorKind::Runsc {
        // Debian's runsc runs only with its own network stack off (docs/sandbox.md): the job
        // gets loopback only, which is stricter than the policy, never looser.
        tracing::warn!(job = %plan.id, "runsc jobs have no network here; egress rules unused");
        return Ok(None);
    }
    let pool = engine.pool.clone();
    let st =
        airlock_net::plan(plan.id.as_str(), &plan.egress, &pool).map_err(SandboxError::Network)?;
    state.net = Some(st.clone());
    state.save(&engine.paths)?;
    let job_dir = engine.paths.job_dir(&plan.id);
    let (id, dir, rules) = (plan.id.to_string(), job_dir.clone(), plan.egress.clone());
    let limits = plan.limits.clone();
    std::thread::Builder::new()
        .name("net-attach".into())
        .spawn(move || airlock_net::setup(&id, &dir, &st, &rules, &pool, &limits))
        .map(Some)
        .map_err(|source| SandboxError::Io {
            what: "starting the network thread for",
            path: job_dir,
            source,
        })
}

/// Copying a tree that holds airlock's own state would copy the job into itself.
fn check_workspace(plan: &JobPlan, paths: &airlock_sandbox::Paths) -> Result<(), SandboxError> {
    let Some(ws) = &plan.workspace else {
        return Ok(());
    };
    if let (Ok(ws), Ok(st)) = (
        std::fs::canonicalize(ws),
        std::fs::canonicalize(&paths.state),
    ) {
        if st.starts_with(&ws) {
            return Err(SandboxError::Config(format!(
                "--workdir {} contains airlock's state directory {}; use another state directory",
                ws.display(),
                st.display()
            )));
        }
    }
    Ok(())
}
