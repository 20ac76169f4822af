#!/usr/bin/env bash
# Job start + /bin/true + teardown of this tree's airlock against another airlock binary (an
# older build), in one hyperfine run (these machines are noisy: only ratios within
# one run mean anything). Used to show that a change to the job path is no slower.
#
#   sudo ./scripts/bench-engine.sh /path/to/old/airlock [RUNS]
#
# Build the old binary from the commit to compare with, e.g.
#   git worktree add /tmp/old <rev> && (cd /tmp/old && cargo build --release -p airlock --bin airlock)
# Needs root. No network is touched: each runs in a namespace of our own with only loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="${1:?usage: bench-engine.sh OLD_AIRLOCK [RUNS]}"
RUNS="${2:-${RUNS:-100}}"
./scripts/setup.sh >/dev/null
cargo build --release -p airlock --bin airlock
NEW="$PWD/target/release/airlock"

work="$(mktemp -d /run/airlock-bench-engine.XXXXXX)"
# One namespace per binary: their firewall tables differ in version, and each would replace
# the other's at every job start in a shared one.
NS_OLD="airlock-bench-old-$$"; NS_NEW="airlock-bench-new-$$"
for ns in "$NS_OLD" "$NS_NEW"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
cleanup() {
  AIRLOCK_STATE_DIR="$work/old/state" AIRLOCK_DATA_DIR="$work/old/data" \
    nsenter --net="/run/netns/$NS_OLD" "$OLD" gc --force >/dev/null 2>&1 || true
  AIRLOCK_STATE_DIR="$work/new/state" AIRLOCK_DATA_DIR="$work/new/data" \
    nsenter --net="/run/netns/$NS_NEW" "$NEW" gc --force >/dev/null 2>&1 || true
  ip netns del "$NS_OLD" 2>/dev/null || true
  ip netns del "$NS_NEW" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Each binary gets its own state and data dirs. The runs alternate (old, new, new, old, …)
# rather than one block after the other, so drift of this machine's load hits both alike.
python3 - "$OLD" "$NEW" "$work" "$RUNS" "$NS_OLD" "$NS_NEW" <<'PY'
import os, subprocess, sys, time
old, new, work, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ns = {"old": sys.argv[5], "new": sys.argv[6]}
def once(tag, binary):
    env = dict(os.environ, AIRLOCK_STATE_DIR=f"{work}/{tag}/state", AIRLOCK_DATA_DIR=f"{work}/{tag}/data")
    argv = ["nsenter", f"--net=/run/netns/{ns[tag]}", binary, "run", "-q", "--", "/bin/true"]
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t
for _ in range(5):  # warm-up: base layers, firewall table, page cache
    once("old", old); once("new", new)
times = {"old": [], "new": []}
for i in range(runs):
    order = [("old", old), ("new", new)] if i % 2 == 0 else [("new", new), ("old", old)]
    for tag, b in order:
        times[tag].append(once(tag, b))
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
for name, p in (("median", 0.5), ("p95", 0.95)):
    o, n = q(times["old"], p), q(times["new"], p)
    print(f"{name}: before {o*1000:.1f} ms, after {n*1000:.1f} ms, after/before {n/o:.3f} ({runs} runs each, alternating)")
PY
