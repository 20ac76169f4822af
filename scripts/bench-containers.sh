#!/usr/bin/env bash
# Container jobs (docs/containers.md): `prepare_job` with one job container and one service
# (with a health check), the runner's hook request to its response (Node.js start included),
# cold (both images pulled from a local registry on first use) and with the images cached;
# against a whole `airlock run` of `/bin/sh -c true` on the same image, in the same run
# (release builds, the tests' sealed namespace; nothing leaves the machine).
#
#   sudo ./scripts/bench-containers.sh [N]     # N jobs of each kind (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20}"
./scripts/setup.sh >/dev/null
cargo build --release --workspace --bins
export AIRLOCK_BENCH_N="$N"
cargo test --release -p airlock --test containers -- --ignored --test-threads 1 --nocapture bench_prepare_job 2>&1 |
  grep -oE 'BENCH .*|test result.*|panicked.*'
