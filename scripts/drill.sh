#!/usr/bin/env bash
# The main job, on a fresh machine: set up, build, and run `airlock drill` with the built-in
# default policy — every attack of the spec against fresh sandboxes, in a sealed world of fake
# hosts inside private network namespaces (no packet leaves the machine). Needs root.
# Exit code: the drill's (0 all blocked and detected, 1 something got through or went unseen).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --bins -p airlock -p airlock-drill
exec target/release/airlock drill "$@"
