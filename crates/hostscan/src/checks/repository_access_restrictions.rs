//! 10. Repository access restrictions configured.
//!
//! Runner group visibility lives in GitHub: unknown on a host. `scan org` fails it for
//! groups with `visibility: "all"` or `restricted_to_workflows: false`.

use super::{item, Check, NEEDS_ORG};
use crate::facts::Facts;
use crate::report::{ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct RepositoryAccessRestrictions;

impl Check for RepositoryAccessRestrictions {
    fn meta(&self) -> ItemMeta {
        item(
            "repository-access-restrictions",
            10,
            Section::Deployment,
            "Repository access restrictions configured",
        )
    }

    fn evaluate(&self, _facts: &Facts<'_>) -> Outcome {
        Outcome::unknown(NEEDS_ORG, vec![])
    }
}
