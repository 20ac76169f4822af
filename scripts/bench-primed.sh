#!/usr/bin/env bash
# A primed sandbox's start against a plain `airlock run` and bare libcontainer's whole run, in
# one run (ratios only), release builds, in a sealed network namespace of the tests' own:
#
#   sudo ./scripts/bench-primed.sh [RUNS]
#
# primed: `airlock run --late-env` of /bin/true, made and checked, then the start frame sent
# -> its first exec on the audit record; plain: `airlock run -- /bin/true` spawned -> its
# first exec; bare: `bench-bundle run` (create, start, wait, delete of the same spec).
set -euo pipefail
cd "$(dirname "$0")/.."
export AIRLOCK_BENCH_RUNS="${1:-100}"
./scripts/setup.sh >/dev/null
cargo build --release -p airlock --bins
cargo build --release --example bench-bundle -p airlock-sandbox
export AIRLOCK_BENCH_BUNDLE="$PWD/target/release/examples/bench-bundle"
cargo test --release -p airlock --test primed -- --ignored --nocapture bench_primed_start 2>&1 |
  grep -oE 'BENCH .*|test result.*|panicked.*'
