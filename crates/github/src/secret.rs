//! A credential that never prints: airlock's one secret type (crate `airlock-secret`).

pub use airlock_secret::Secret;
