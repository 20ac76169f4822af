//! Prometheus metrics of `airlock serve` (`/metrics`, OpenMetrics text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of per-group, per-state series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupState {
    /// Runner group.
    pub group: String,
    /// `provisioning`, `starting` or `running`.
    pub state: String,
}

/// Label of an alert series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertKind {
    /// The detector, e.g. `unauthorized-runner`.
    pub kind: String,
}

/// Label of webhook outcome series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `enqueued`, `duplicate`, `ignored`, `bad_signature`, `too_large`, `too_slow`, `bad_payload`.
    pub outcome: String,
}

/// Label of per-scale-set series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleSetLabel {
    /// The scale set's name.
    pub scale_set: String,
}

/// Labels of per-scale-set, per-state runner series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleSetState {
    /// The scale set's name.
    pub scale_set: String,
    /// `provisioning`, `starting`, `idle` or `busy`.
    pub state: String,
}

/// All metrics.
pub struct Metrics {
    registry: Registry,
    /// Jobs waiting for a group or capacity.
    pub queue_depth: Gauge,
    /// Seconds from webhook receipt to the sandbox process running.
    pub provisioning_seconds: Histogram,
    /// Active sandboxes by group and state.
    pub sandboxes: Family<GroupState, Gauge>,
    /// Deliveries whose signature was missing or wrong.
    pub webhook_verification_failures: Counter,
    /// Webhook deliveries by outcome.
    pub webhooks: Family<Outcome, Counter>,
    /// Alerts raised, by kind.
    pub alerts: Family<AlertKind, Counter>,
    /// Jobs finished, by group and final state.
    pub jobs_finished: Family<GroupState, Counter>,
    /// `totalAssignedJobs` of each scale set's latest statistics.
    pub scaleset_assigned_jobs: Family<ScaleSetLabel, Gauge>,
    /// Runners of each scale set by state.
    pub scaleset_runners: Family<ScaleSetState, Gauge>,
    /// Messages committed, by scale set.
    pub scaleset_messages: Family<ScaleSetLabel, Counter>,
    /// 409s when opening a session, by scale set.
    pub scaleset_session_conflicts: Family<ScaleSetLabel, Counter>,
    /// Seconds from serve deciding to start a scale-set runner to its sandbox running.
    pub scaleset_runner_start_seconds: Histogram,
    /// Primed sandboxes (ready or being made) of each scale set's group.
    pub scaleset_primed: Family<ScaleSetLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("airlock_serve");
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Jobs waiting for a runner group or capacity",
            queue_depth.clone(),
        );
        let provisioning_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "provisioning_seconds",
            "Webhook received to sandbox process started",
            provisioning_seconds.clone(),
        );
        let sandboxes = Family::<GroupState, Gauge>::default();
        registry.register(
            "sandboxes",
            "Active sandboxes by group and state",
            sandboxes.clone(),
        );
        let webhook_verification_failures = Counter::default();
        registry.register(
            "webhook_verification_failures",
            "Webhook deliveries with a missing or wrong signature",
            webhook_verification_failures.clone(),
        );
        let webhooks = Family::<Outcome, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries by outcome",
            webhooks.clone(),
        );
        let alerts = Family::<AlertKind, Counter>::default();
        registry.register("alerts", "Alerts raised, by kind", alerts.clone());
        let jobs_finished = Family::<GroupState, Counter>::default();
        registry.register(
            "jobs_finished",
            "Jobs finished, by group and final state",
            jobs_finished.clone(),
        );
        let scaleset_assigned_jobs = Family::<ScaleSetLabel, Gauge>::default();
        registry.register(
            "scaleset_assigned_jobs",
            "totalAssignedJobs of the scale set's latest statistics (waiting or running)",
            scaleset_assigned_jobs.clone(),
        );
        let scaleset_runners = Family::<ScaleSetState, Gauge>::default();
        registry.register(
            "scaleset_runners",
            "Runners of the scale set by state (idle = warm, waiting for a job)",
            scaleset_runners.clone(),
        );
        let scaleset_messages = Family::<ScaleSetLabel, Counter>::default();
        registry.register(
            "scaleset_messages",
            "Scale-set messages committed",
            scaleset_messages.clone(),
        );
        let scaleset_session_conflicts = Family::<ScaleSetLabel, Counter>::default();
        registry.register(
            "scaleset_session_conflicts",
            "409s opening the scale set's message session (another serve holds it)",
            scaleset_session_conflicts.clone(),
        );
        let scaleset_runner_start_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "scaleset_runner_start_seconds",
            "Decision to start a scale-set runner to its sandbox running",
            scaleset_runner_start_seconds.clone(),
        );
        let scaleset_primed = Family::<ScaleSetLabel, Gauge>::default();
        registry.register(
            "scaleset_primed_sandboxes",
            "Primed sandboxes of the scale set's group (prestart), ready or being made",
            scaleset_primed.clone(),
        );
        Self {
            registry,
            scaleset_primed,
            scaleset_assigned_jobs,
            scaleset_runners,
            scaleset_messages,
            scaleset_session_conflicts,
            scaleset_runner_start_seconds,
            queue_depth,
            provisioning_seconds,
            sandboxes,
            webhook_verification_failures,
            webhooks,
            alerts,
            jobs_finished,
        }
    }

    /// Counts a webhook outcome.
    pub fn webhook(&self, outcome: &str) {
        self.webhooks
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Moves one sandbox of `group` from state `from` to `to` (either may be empty).
    pub fn sandbox_state(&self, group: &str, from: &str, to: &str) {
        for (s, d) in [(from, -1i64), (to, 1)] {
            if !s.is_empty() {
                self.sandboxes
                    .get_or_create(&GroupState {
                        group: group.to_owned(),
                        state: s.to_owned(),
                    })
                    .inc_by(d);
            }
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}
