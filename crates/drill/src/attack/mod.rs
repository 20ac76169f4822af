//! The attack programs. Each attack is one file: a unit struct implementing [`Attack`]. The
//! `airlock-attack` binary runs one of them inside a sandbox and prints its
//! [`AttackResult`] as one JSON line.
//!
//! Every attack must be harmless if it unexpectedly succeeds: writes go only to the job's own
//! (discarded) files; dangerous kernel interfaces are *opened for writing* and closed without a
//! byte written; objects an attack manages to create (a key, a BPF map, a namespace) belong to
//! the job and die with it; resource attacks stop themselves at a fixed bound.

use serde::{Deserialize, Serialize};

pub mod util;

mod bpf;
mod canary;
mod cgroup_release_agent;
mod chroot;
mod container_api;
mod dev_mem;
mod disk_fill;
mod dns_rebind;
mod dns_smuggle;
mod dns_tunnel;
mod docker_socket;
mod doh;
mod exfil;
mod fileless_exec;
mod fork_bomb;
pub(crate) mod gateway_flood;
mod hardcoded_ip;
mod host_pids;
pub mod hostile_image;
mod http_fronting;
mod io_uring;
mod ioctl_high_bits;
mod iopl;
mod kcore;
mod keyctl;
mod memory;
mod metadata;
mod mknod;
mod module_load;
mod mount;
mod oom_score;
mod open_by_handle;
mod perf_event;
mod persistence;
mod proc_mem;
mod proc_self_exe;
mod ptrace;
mod raw_socket;
mod recon;
mod record_flood;
mod rogue_runner;
mod setns;
mod setuid;
mod shadow;
pub mod sibling_job;
mod sys_write;
mod sysrq;
pub mod terminal_inject;
mod tiocsti;
mod unshare;
mod userfaultfd;
pub mod warm_runner;
mod workspace_race;

pub use persistence::PERSISTENCE_PATHS;

/// A readable copy of `airlock-attack` in the job's workspace (the one the job runs is
/// execute-only there: docs/sandbox.md), for attacks that plant a copy of themselves.
pub const PAYLOAD: &str = "airlock-attack.payload";

/// Detector names (the `detector` field of a report's alerts).
pub mod detector {
    /// A request to a cloud metadata endpoint.
    pub const METADATA_ACCESS: &str = "metadata-access";
    /// Many distinct denied destinations or ports in a window.
    pub const NETWORK_SCAN: &str = "network-scan";
    /// Any denied egress.
    pub const DENIED_EGRESS: &str = "denied-egress";
    /// A persistence location written (teardown scan).
    pub const PERSISTENCE_ATTEMPT: &str = "persistence-attempt";
    /// A privileged operation refused (seccomp denial).
    pub const PRIVILEGED_OPERATION: &str = "privileged-operation";
    /// Exec of a GitHub runner binary airlock did not start.
    pub const ROGUE_RUNNER: &str = "rogue-runner";
    /// DNS tunnelling suspected.
    pub const DNS_TUNNELLING: &str = "dns-tunnelling";
    /// A program exec'd from a memfd or a deleted file.
    pub const FILELESS_EXEC: &str = "fileless-exec";
    /// A domain the group never used before (learned baseline).
    pub const NEW_DESTINATION: &str = "new-destination";
    /// The job flooded airlock's records (aggregated past the group's audit bounds).
    pub const RECORD_FLOOD: &str = "record-flood";
}

/// The group an attack belongs to (for the table and the docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// The positive control: must succeed.
    Control,
    /// One of the spec's three threat scenarios.
    Scenario,
    /// Network abuse beyond the scenarios (exfiltration, tunnelling, DoH, …).
    Network,
    /// Sandbox escape technique.
    Escape,
    /// Resource exhaustion.
    Exhaustion,
    /// Hiding what the job runs from airlock's records.
    Evasion,
}

/// What must happen to an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The positive control: it must get through, or the drill's world is broken.
    Succeeds,
    /// It must fail.
    Blocked,
    /// It must fail and this detector must raise an alert.
    BlockedAndDetected(&'static str),
    /// The group lets it through by design (egress `audit` mode: everything but the
    /// never-reachable targets passes), so getting through is expected — and still counted
    /// as got through — but this detector must raise an alert: audit mode must not stop
    /// seeing.
    Detected(&'static str),
}

impl Expect {
    /// The detector that must fire, if any.
    pub fn detector(self) -> Option<&'static str> {
        match self {
            Expect::BlockedAndDetected(d) | Expect::Detected(d) => Some(d),
            _ => None,
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Succeeds => f.write_str("succeeds (control)"),
            Expect::Blocked => f.write_str("blocked"),
            Expect::BlockedAndDetected(d) => write!(f, "blocked + {d}"),
            Expect::Detected(d) => write!(f, "through (audit) + {d}"),
        }
    }
}

/// What an attack reports from inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackResult {
    /// The attack id.
    pub attack: String,
    /// Whether the attack achieved its goal, as far as it can tell from inside.
    pub succeeded: bool,
    /// What happened, step by step (errno of each attempt).
    pub detail: String,
}

impl AttackResult {
    /// Builds a result from the attempts of one attack: it succeeded if any attempt did.
    pub fn from_steps(attack: &str, steps: &[util::Step]) -> Self {
        AttackResult {
            attack: attack.to_owned(),
            succeeded: steps.iter().any(|s| s.succeeded),
            detail: steps
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// One attack.
pub trait Attack: Sync {
    /// Stable id, the argument of `airlock-attack`.
    fn id(&self) -> &'static str;
    /// One line for people.
    fn title(&self) -> &'static str;
    /// Its group.
    fn category(&self) -> Category;
    /// What must happen.
    fn expect(&self) -> Expect {
        Expect::Blocked
    }
    /// What must happen when the group's egress is in `audit` mode. Attacks that only the
    /// egress allow-list stops get through there by design and say which alert must still
    /// fire ([`Expect::Detected`]); the rest expect the same as in `block` mode.
    fn expect_in_audit_mode(&self) -> Expect {
        self.expect()
    }
    /// Performs the attack (inside the sandbox).
    fn run(&self) -> AttackResult;
    /// An attack whose success is judged by running another attack in a SECOND, fresh
    /// sandbox afterwards (persistence: the second run looks for what the first planted).
    fn judged_by(&self) -> Option<&'static str> {
        None
    }
    /// An attack on a SIBLING job: the drill runs this helper (a helper-only attack) in a
    /// second sandbox of the same group for the whole time the attack runs, checks that it
    /// is alive before and after, and judges by its records (see docs/drill.md).
    fn victim(&self) -> Option<&'static str> {
        None
    }
    /// The victim's own result is the verdict (it looks for what the attack left): got
    /// through if it says it succeeded, no verdict if it printed none.
    fn victim_judges(&self) -> bool {
        false
    }
    /// The victim is a *primed* sandbox (`airlock run --late-env`, as `airlock serve` makes
    /// them with `prestart`): the drill checks from the host that nothing ran in it before
    /// its start, and its nonce arrives only through the start (see docs/drill.md).
    fn victim_primed(&self) -> bool {
        false
    }
    /// Whether the attack aims at the operator's terminal: the drill then also judges it by
    /// airlock's own stderr (a raw control character there means it got through).
    fn judges_operator_output(&self) -> bool {
        false
    }
    /// Strings the expected alert's summary must contain (what the alert must have seen
    /// through to, e.g. a memfd's name); an alert that fires without them does not count.
    fn alert_names(&self) -> &'static [&'static str] {
        &[]
    }
    /// An attack on the workspace copy: the drill runs it in a workspace of bait entries
    /// that a host-side thread keeps swapping with symlinks to a root-only host file while
    /// airlock copies it (see docs/drill.md).
    fn races_workspace(&self) -> bool {
        false
    }
    /// An attack through an image's layers: the drill builds hostile images on the host side
    /// and imports them with the airlock binary (no job runs), then checks its bait.
    fn host_side_image(&self) -> bool {
        false
    }
    /// Helpers run only on behalf of another attack are not listed in the drill.
    fn helper_only(&self) -> bool {
        false
    }
    /// An attack on airlock's own records: the job's records in the audit log must stay
    /// below this many, or the attack got through (the drill counts them).
    fn record_bound(&self) -> Option<u64> {
        None
    }
    /// An attack on airlock's egress gateway: the drill counts the open files of the job's
    /// `airlock run` while it runs, and the flows its gateway took in (its records); more
    /// files than the group's `limits.connections` allow ([`airlock_net::gateway::fd_need`])
    /// or more flows than its `limits.flow_rate` allows over the run, and the attack got
    /// through.
    fn gateway_files_bound(&self) -> bool {
        false
    }
}

/// The largest job report an attack on airlock's records may leave (it holds the job's
/// network records whole, up to the gateway's book of 20,000): each record keeps a bounded
/// part of what the job sent, so the report stays well below this.
pub const REPORT_BOUND: u64 = 32 << 20;

/// Every attack, in the order the drill runs them. The control comes first: if it fails, the
/// world is broken and nothing else means anything.
pub fn registry() -> &'static [&'static dyn Attack] {
    static ALL: &[&dyn Attack] = &[
        &canary::Canary,
        // The spec's three scenarios.
        &persistence::Persistence,
        &persistence::PersistenceCheck,
        &terminal_inject::TerminalInject,
        &metadata::Metadata,
        &recon::Recon,
        // Network abuse.
        &exfil::Exfil,
        &dns_tunnel::DnsTunnel,
        &hardcoded_ip::HardcodedIp,
        &doh::Doh,
        &http_fronting::HttpFronting,
        &dns_smuggle::DnsSmuggle,
        &dns_rebind::DnsRebind,
        &rogue_runner::RogueRunner,
        &sibling_job::SiblingJob,
        &sibling_job::SiblingVictim,
        &warm_runner::WarmRunner,
        &warm_runner::WarmWaiter,
        &warm_runner::PrimedRunner,
        // Escape battery.
        &mount::Mount,
        &unshare::Unshare,
        &setns::Setns,
        &ptrace::Ptrace,
        &proc_mem::ProcMemRead,
        &proc_mem::ProcMemReadStep,
        &module_load::ModuleLoad,
        &raw_socket::RawSocket,
        &sysrq::Sysrq,
        &sys_write::SysWrite,
        &keyctl::Keyctl,
        &bpf::Bpf,
        &mknod::Mknod,
        &chroot::Chroot,
        &setuid::Setuid,
        &host_pids::HostPids,
        &docker_socket::DockerSocket,
        &container_api::ContainerApi,
        &cgroup_release_agent::CgroupReleaseAgent,
        &proc_self_exe::ProcSelfExe,
        &kcore::Kcore,
        &shadow::Shadow,
        &dev_mem::DevMem,
        &perf_event::PerfEvent,
        &userfaultfd::Userfaultfd,
        &open_by_handle::OpenByHandle,
        &tiocsti::Tiocsti,
        &ioctl_high_bits::IoctlHighBits,
        &io_uring::IoUring,
        &iopl::Iopl,
        // Evasion.
        &fileless_exec::FilelessExec,
        &workspace_race::WorkspaceRace,
        &hostile_image::HostileImage,
        // Exhaustion (last: slowest).
        &fork_bomb::ForkBomb,
        &memory::Memory,
        &disk_fill::DiskFill,
        &record_flood::RecordFlood,
        &gateway_flood::GatewayFlood,
        &oom_score::OomScoreLower,
    ];
    ALL
}

/// The attack with this id.
pub fn find(id: &str) -> Option<&'static dyn Attack> {
    registry().iter().copied().find(|a| a.id() == id)
}

/// Entry point of the `airlock-attack` binary: `airlock-attack <attack-id>` (or `--list`).
/// Returns the process exit code: 0 when the attack ran (whatever its result), 2 on usage
/// errors.
pub fn main_with_args(args: &[String]) -> i32 {
    // The fake runner the rogue-runner attack plants is this binary under another name.
    if let Some(code) = rogue_runner::as_fake_runner(args) {
        return code;
    }
    match args.get(1).map(String::as_str) {
        Some("--list") => {
            for a in registry() {
                println!("{}\t{}", a.id(), a.title());
            }
            0
        }
        Some(id) => match find(id) {
            Some(a) => {
                let r = a.run();
                match serde_json::to_string(&r) {
                    Ok(line) => {
                        println!("{line}");
                        0
                    }
                    Err(e) => {
                        eprintln!("airlock-attack: {e}");
                        2
                    }
                }
            }
            None => {
                eprintln!("airlock-attack: unknown attack {id} (--list shows them)");
                2
            }
        },
        None => {
            eprintln!("usage: airlock-attack <attack-id> | --list");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_judges_exist() {
        let mut seen = std::collections::BTreeSet::new();
        for a in registry() {
            assert!(seen.insert(a.id()), "duplicate id {}", a.id());
            if let Some(j) = a.judged_by() {
                let judge = find(j).expect("judge registered");
                assert!(judge.helper_only(), "{j} must be helper-only");
            }
            if let Some(v) = a.victim() {
                let victim = find(v).expect("victim registered");
                assert!(victim.helper_only(), "{v} must be helper-only");
            }
        }
        assert_eq!(registry()[0].expect(), Expect::Succeeds, "control first");
        let escapes = registry()
            .iter()
            .filter(|a| a.category() == Category::Escape)
            .count();
        assert!(escapes >= 20, "escape battery has {escapes} techniques");
    }

    #[test]
    fn from_steps_succeeds_if_any_step_did() {
        let s = [
            util::Step::failed("a", "EPERM"),
            util::Step::ok("b", "opened"),
        ];
        let r = AttackResult::from_steps("x", &s);
        assert!(r.succeeded);
        assert_eq!(r.detail, "a: EPERM; b: OK opened");
        let r = AttackResult::from_steps("x", &s[..1]);
        assert!(!r.succeeded);
    }
}
