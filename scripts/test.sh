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
cargo test --workspace -- --test-threads=2
