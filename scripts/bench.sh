#!/usr/bin/env bash
# Start + /bin/true + teardown: airlock run vs bare libcontainer vs runc vs bubblewrap, measured
# in one hyperfine run (these machines are noisy: only ratios within one run mean anything).
# Writes the table into docs/BENCHMARKS.md. Needs root. No network is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-200}"
./scripts/setup.sh
cargo build --release --bins --example bench-bundle -p airlock -p airlock-sandbox

# State on tmpfs under /run, as airlock's default /run/airlock.
work="$(mktemp -d /run/airlock-bench.XXXXXX)"
# Jobs get networks: everything runs in a namespace of our own with nothing but loopback
# (the sealed-world rule), so a failed block could only hit nothing.
NS="airlock-bench-$$"
ip netns add "$NS"; ip -n "$NS" link set lo up
in_ns() { nsenter --net="/run/netns/$NS" "$@"; }
cleanup() {
  runc --root "$work/runc" delete -f bench-runc >/dev/null 2>&1 || true
  AIRLOCK_STATE_DIR="$work/state" in_ns target/release/airlock gc --force >/dev/null 2>&1 || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

target/release/examples/bench-bundle prepare "$work/bundle"
bwrap_cmd="bwrap --unshare-all --die-with-parent --new-session --uid 1001 --gid 1001 \
  --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
  --symlink usr/sbin /sbin --proc /proc --dev /dev --tmpfs /tmp --cap-drop ALL /bin/true"

in_ns hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$work/bench.json" \
  -n "airlock run" "env AIRLOCK_STATE_DIR=$work/state target/release/airlock run -q -- /bin/true" \
  -n "bare libcontainer" "target/release/examples/bench-bundle run $work/bundle" \
  -n "runc" "runc --root $work/runc run -b $work/bundle bench-runc" \
  -n "bubblewrap" "$bwrap_cmd"

python3 - "$work/bench.json" <<'PY'
import json, sys, datetime, subprocess, re
d = json.load(open(sys.argv[1]))
rows = {}
for r in d["results"]:
    t = sorted(r["times"])
    med = t[len(t) // 2]
    p95 = t[min(len(t) - 1, int(round(0.95 * (len(t) - 1))))]
    rows[r["command"]] = (med, p95)
base = rows["bare libcontainer"][0]
lines = [
    "| executor | median | p95 | median vs bare libcontainer |",
    "|---|---|---|---|",
]
for name, (med, p95) in rows.items():
    lines.append(f"| {name} | {med*1000:.1f} ms | {p95*1000:.1f} ms | {med/base:.2f}x |")
table = "\n".join(lines)
print(table)
path = "docs/BENCHMARKS.md"
text = open(path).read()
start, end = "<!-- bench:start -->", "<!-- bench:end -->"
stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
block = f"{start}\nMeasured {stamp}, kernel {kernel}, {len(d['results'][0]['times'])} runs each.\n\n{table}\n{end}"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), block, text, flags=re.S)
open(path, "w").write(text)
PY
