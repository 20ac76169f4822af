#!/usr/bin/env bash
# airlock serve with runner scale sets, against the fake GitHub, in the serve tests' sealed
# world (release builds; nothing leaves the machine). One run, ratios within it:
#
#   sudo ./scripts/bench-scaleset.sh [JOBS] [BURST]
#
# 1. JOBS jobs one at a time on a cold scale set: message received by serve -> the runner's
#    first exec in its new sandbox, and -> the job fetched by the runner; JOBS jobs on a scale
#    set with one warm runner (its start-up takes 2 s): message -> job fetched; JOBS jobs on a
#    scale set with a primed sandbox (prestart = 1): serve's decision -> the runner's first
#    exec, against bare libcontainer's whole run sampled between them; JOBS plain
#    `airlock run` of the runner image: spawn -> first exec. Median and p95.
# 2. BURST jobs assigned at once with capacity 8: all complete, each exactly once; total
#    time and serve's peak RSS (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${1:-100}"
BURST="${2:-1000}"
./scripts/setup.sh >/dev/null
cargo build --release --workspace --bins
cargo build --release -p airlock-github --features fake --bins
# Bare libcontainer's whole run (scripts/bench.sh's baseline), sampled in the same run.
cargo build --release --example bench-bundle -p airlock-sandbox
export AIRLOCK_BENCH_BUNDLE="$PWD/target/release/examples/bench-bundle"
export AIRLOCK_BENCH_JOBS="$JOBS" AIRLOCK_BENCH_BURST="$BURST"
# serve's phase timings (decision -> JIT config -> airlock run spawned) come from its log.
export AIRLOCK_E2E_SERVE_LOG="info,airlock_manager=debug"
cargo test --release -p airlock --test serve_e2e -- --ignored --test-threads 1 --nocapture bench_scale_set 2>&1 |
  grep -oE 'BENCH .*|test result.*|panicked.*'
