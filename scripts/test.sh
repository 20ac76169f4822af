#!/usr/bin/env bash
# Sets up the machine and runs every check CI runs: formatting, lints, and all tests.
# Tests that need root (namespaces, mounts, cgroups) run when this is run as root and print a
# skip message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# The fake GitHub and fake runner of the serve end-to-end tests (feature-gated test doubles).
cargo build -p airlock-github --features fake --bins
# Tests that depend on those binaries fail instead of skipping when they are missing.
export AIRLOCK_TEST_STRICT=1
cargo test --workspace -- --test-threads=2
