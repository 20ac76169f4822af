//! 9. Dedicated runner groups for public vs private repos.
//!
//! Runner groups exist only in GitHub: unknown on a host. `scan org` fails it for any group
//! with `allows_public_repositories: true`.

use super::{item, Check, NEEDS_ORG};
use crate::facts::Facts;
use crate::report::{ItemMeta, Outcome, Section};

/// See the module documentation.
pub struct RunnerGroupsPublicPrivate;

impl Check for RunnerGroupsPublicPrivate {
    fn meta(&self) -> ItemMeta {
        item(
            "runner-groups-public-private",
            9,
            Section::Deployment,
            "Dedicated runner groups for public vs private repos",
        )
    }

    fn evaluate(&self, _facts: &Facts<'_>) -> Outcome {
        Outcome::unknown(NEEDS_ORG, vec![])
    }
}
