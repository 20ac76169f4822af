#!/usr/bin/env bash
# Audit benchmarks (issue 4), each against a baseline measured in the same run:
#  1. log append and verify throughput vs plain JSON lines (crates/audit/examples/bench-audit.rs);
#  2. exec-capture overhead: a job running 10,000 short processes with process events on, vs the
#     same job in a group with process_events = false, in one hyperfine run.
# Writes the results into docs/BENCHMARKS.md. Needs root. No network is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-10}"
EVENTS="${EVENTS:-500000}"
./scripts/setup.sh
cargo build --release --bins -p airlock
cargo build --release -p airlock-audit --example bench-audit

work="$(mktemp -d /run/airlock-bench-audit.XXXXXX)"
NS="airlock-bench-audit-$$"
ip netns add "$NS"; ip -n "$NS" link set lo up
in_ns() { nsenter --net="/run/netns/$NS" "$@"; }
cleanup() {
  AIRLOCK_STATE_DIR="$work/state" in_ns target/release/airlock gc --force >/dev/null 2>&1 || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

log="$(target/release/examples/bench-audit "$EVENTS")"
echo "$log"

cat > "$work/policy.toml" <<'TOML'
version = 1
[groups.default]
egress = { mode = "none" }
[groups.nocapture]
egress = { mode = "none" }
process_events = false
TOML
job='for i in $(seq 10000); do /bin/true; done'
common="env AIRLOCK_STATE_DIR=$work/state AIRLOCK_DATA_DIR=$work/data target/release/airlock run -q -p $work/policy.toml"
in_ns hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$work/exec.json" \
  -n "capture on" "$common -g default -- /bin/sh -c '$job'" \
  -n "capture off" "$common -g nocapture -- /bin/sh -c '$job'"
count="$(target/release/airlock --data-dir "$work/data" audit show --kind process.exec --json | grep -c '"/bin/true"' || true)"

python3 - "$work/exec.json" "$log" "$count" "$RUNS" <<'PY'
import json, sys, datetime, subprocess, re
d = json.load(open(sys.argv[1]))
med = {r["command"]: sorted(r["times"])[len(r["times"]) // 2] for r in d["results"]}
on, off = med["capture on"], med["capture off"]
runs = int(sys.argv[4])
stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
log = "\n".join("    " + l for l in sys.argv[2].splitlines())
table = f"""Measured {stamp}, kernel {kernel}.

Audit log (release build, `cargo run --release -p airlock-audit --example bench-audit`):

{log}

Exec capture, a job running 10,000 `/bin/true` ({runs} runs each, medians):

| job | median | vs capture off |
|---|---|---|
| capture on (seccomp notification) | {on*1000:.0f} ms | {on/off:.2f}x |
| capture off (`process_events = false`) | {off*1000:.0f} ms | 1.00x |

Per exec: {(on-off)/10000*1e6:.0f} µs added. `/bin/true` execs recorded during the benchmark: {sys.argv[3]} (10,000 per captured run, warm-up included)."""
print(table)
path = "docs/BENCHMARKS.md"
text = open(path).read()
start, end = "<!-- bench-audit:start -->", "<!-- bench-audit:end -->"
block = f"{start}\n{table}\n{end}"
if start in text:
    text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda m: block, text, flags=re.S)
else:
    text += f"\n## Audit: log throughput and exec capture (issue 4)\n\n`sudo ./scripts/bench-audit.sh`\n\n{block}\n"
open(path, "w").write(text)
PY
