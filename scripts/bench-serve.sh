#!/usr/bin/env bash
# airlock serve benchmark (issue 6), with its baseline measured in the same run:
#  - webhook received → runner process exec'd inside its sandbox, through serve (testbed
#    binary: the real server, SQLite state and launcher; GitHub faked in a file, no network),
#    one job at a time, median and p95;
#  - baseline: the same runner command started with `airlock run` directly (spawn → exec);
#  - sustained webhooks per second accepted (4 parallel clients, HMAC-signed, each a queued
#    job no group takes) with every delivery accounted for in the database.
# Everything runs in a fresh network namespace with loopback only. Needs root.
# Writes the results into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-30}"
WEBHOOKS="${WEBHOOKS:-4000}"
[ "$(id -u)" = 0 ] || { echo "bench-serve: needs root (sandboxes)" >&2; exit 1; }
cargo build --release --bins -p airlock
out="$(BENCH_JOBS="$JOBS" BENCH_WEBHOOKS="$WEBHOOKS" \
  cargo test --release -p airlock-manager --test process bench_serve -- --ignored --nocapture 2>&1)" \
  || { echo "$out" >&2; exit 1; }
line="$(printf '%s\n' "$out" | grep '^BENCH ' | tail -1 | cut -d' ' -f2-)"
[ -n "$line" ] || { echo "$out" >&2; echo "bench-serve: no result (not root?)" >&2; exit 1; }
python3 - "$line" <<'PY'
import json, sys, datetime, subprocess, re
d = json.loads(sys.argv[1])
stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
b, s = d["baseline_run_ms"], d["serve_ms"]
table = f"""Measured {stamp}, kernel {kernel}, release build, {d['jobs']} jobs each, one at a time.

| path | median | p95 |
|---|---|---|
| webhook received → runner exec'd in its sandbox (`airlock serve`) | {s['median']:.0f} ms | {s['p95']:.0f} ms |
| baseline: `airlock run` spawned → same command exec'd | {b['median']:.0f} ms | {b['p95']:.0f} ms |
| serve's own share (median difference) | {s['median'] - b['median']:.0f} ms | |

Sustained: {d['webhooks_per_s']:.0f} webhooks/s accepted ({d['webhooks']} signed deliveries from {d['clients']} parallel clients, one connection each, every one recorded in SQLite; none lost).

The serve path includes: signature check, SQLite commit of the delivery and job, dispatcher
wake-up, routing, the (fake, in-file) JIT registration and its SQLite record, the derived policy
file, and then everything `airlock run` does (the baseline). Times come from the serve
database (receipt) and the sandbox's `process.exec` audit record (the runner's exec)."""
print(table)
path = "docs/BENCHMARKS.md"
text = open(path).read()
start, end = "<!-- bench-serve:start -->", "<!-- bench-serve:end -->"
block = f"{start}\n{table}\n{end}"
if start in text:
    text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda m: block, text, flags=re.S)
else:
    text += f"\n## Runner manager: webhook to runner (issue 6)\n\n`sudo ./scripts/bench-serve.sh`\n\n{block}\n"
open(path, "w").write(text)
PY
