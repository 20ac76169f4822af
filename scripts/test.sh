#!/usr/bin/env bash
# Sets up the machine and runs every check CI runs: formatting, lints, and all tests.
# Tests that need root (namespaces, mounts, cgroups) run when this is run as root and print a
# skip message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# A clean checkout gains nothing from incremental caches; they doubled the build's size on disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# The fake GitHub and fake runner of the serve end-to-end tests (feature-gated test doubles).
cargo build -p airlock-github --features fake --bins
# As root (CI), nothing may skip: tests that need root or the fake binaries fail instead of
# skipping when something is missing. A non-root developer gets skip messages.
if [ "$(id -u)" = 0 ]; then
  export AIRLOCK_TEST_STRICT=1
fi
cargo test --workspace -- --test-threads=2
