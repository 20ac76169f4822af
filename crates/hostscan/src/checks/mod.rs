//! The spec's 26 checklist items, one file each, behind [`Check`], listed in checklist order
//! by [`registry`].
//!
//! A check reads the gathered [`Facts`] and returns an [`Outcome`]: pass, fail or unknown,
//! with the reason and the evidence. Items only GitHub's API can decide return unknown with
//! [`NEEDS_ORG`]; `scan org` fills them (see [`crate::org`]).

use crate::facts::Facts;
use crate::report::{ItemMeta, Outcome, Section};

mod common;

mod access_log_review;
mod anomaly_detection;
mod audit_logging;
mod config_change_alerts;
mod decommission_runners;
mod deny_by_default_firewall;
mod egress_filtering;
mod ephemeral_runners;
mod filesystem_isolation;
mod image_vulnerability_scanning;
mod incident_response_plan;
mod metadata_endpoint;
mod minimal_iam;
mod network_connection_logging;
mod network_isolation;
mod no_privileged_containers;
mod non_root_jobs;
mod os_hardening;
mod penetration_testing;
mod registration_token_rotation;
mod repository_access_restrictions;
mod runner_auto_update;
mod runner_groups_public_private;
mod secret_injection_env;
mod temporary_credentials;
mod unauthorized_registration_monitoring;

pub use common::{Attestation, ATTESTATIONS_PATH};

/// The reason given when only `scan org` can decide an item.
pub const NEEDS_ORG: &str = "only GitHub's API can tell: needs `airlock scan org`";

/// One checklist item evaluated on a host.
pub trait Check {
    /// The item's id, number, section and title.
    fn meta(&self) -> ItemMeta;

    /// Evaluates the item. Never panics on what it reads; what it cannot read is unknown.
    fn evaluate(&self, facts: &Facts<'_>) -> Outcome;
}

/// Shorthand for an [`ItemMeta`].
const fn item(id: &'static str, number: u8, section: Section, title: &'static str) -> ItemMeta {
    ItemMeta {
        id,
        number,
        section,
        title,
    }
}

/// Every check, in the spec's checklist order.
pub fn registry() -> Vec<Box<dyn Check>> {
    vec![
        // Deployment Security
        Box::new(ephemeral_runners::EphemeralRunners),
        Box::new(network_isolation::NetworkIsolation),
        Box::new(deny_by_default_firewall::DenyByDefaultFirewall),
        Box::new(egress_filtering::EgressFiltering),
        Box::new(metadata_endpoint::MetadataEndpoint),
        Box::new(minimal_iam::MinimalIam),
        Box::new(os_hardening::OsHardening),
        Box::new(runner_auto_update::RunnerAutoUpdate),
        Box::new(runner_groups_public_private::RunnerGroupsPublicPrivate),
        Box::new(repository_access_restrictions::RepositoryAccessRestrictions),
        // Runtime Security
        Box::new(non_root_jobs::NonRootJobs),
        Box::new(no_privileged_containers::NoPrivilegedContainers),
        Box::new(filesystem_isolation::FilesystemIsolation),
        Box::new(temporary_credentials::TemporaryCredentials),
        Box::new(secret_injection_env::SecretInjectionEnv),
        Box::new(audit_logging::AuditLogging),
        Box::new(network_connection_logging::NetworkConnectionLogging),
        Box::new(anomaly_detection::AnomalyDetection),
        // Operational Security
        Box::new(registration_token_rotation::RegistrationTokenRotation),
        Box::new(image_vulnerability_scanning::ImageVulnerabilityScanning),
        Box::new(incident_response_plan::IncidentResponsePlan),
        Box::new(access_log_review::AccessLogReview),
        Box::new(decommission_runners::DecommissionRunners),
        Box::new(unauthorized_registration_monitoring::UnauthorizedRegistrationMonitoring),
        Box::new(config_change_alerts::ConfigChangeAlerts),
        Box::new(penetration_testing::PenetrationTesting),
    ]
}

/// The metadata of every item, in order (for SARIF rules and the org report).
pub fn items() -> Vec<ItemMeta> {
    registry().iter().map(|c| c.meta()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_the_spec_checklist_in_order() {
        let items = items();
        assert_eq!(items.len(), 26);
        for (i, m) in items.iter().enumerate() {
            assert_eq!(usize::from(m.number), i + 1, "{} out of order", m.id);
        }
        let mut ids: Vec<_> = items.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 26, "ids must be unique");
        // The spec lives in shared/ beside the repository; skip the title check without it.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/spec/threat-model.md"
        );
        let Ok(spec) = std::fs::read_to_string(path) else {
            eprintln!("{path} not found; titles not compared");
            return;
        };
        for m in &items {
            assert!(spec.contains(m.title), "title not in the spec: {}", m.title);
        }
    }
}
