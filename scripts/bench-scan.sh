#!/usr/bin/env bash
# `airlock scan workflows` against zizmor on the same corpus, in one hyperfine run.
#
# Corpus (≥200 files): the starter-workflows corpus (../shared/corpora/starter-workflows)
# plus variations of the scanner's own valid fixtures (each copied with its job ids renamed),
# laid out as one repository's .github/workflows so both tools read exactly the same files.
# zizmor runs with --offline (no GitHub API) and its default persona.
#
# Needs: hyperfine (apt), zizmor (pip install zizmor), jq or python3.
# Writes the "scan workflows" section of docs/BENCHMARKS.md (between markers).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-10}"
CORPUS_SRC="${CORPUS_SRC:-../shared/corpora/starter-workflows}"
[ -d "$CORPUS_SRC" ] || CORPUS_SRC=/work/shared/corpora/starter-workflows
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p airlock-scan --example scan-workflows
BIN="$CARGO_TARGET_DIR/release/examples/scan-workflows"
command -v zizmor >/dev/null || { echo "zizmor not found: pip install zizmor" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine not found: apt-get install hyperfine" >&2; exit 1; }

work="$(mktemp -d /tmp/airlock-bench-scan.XXXXXX)"
trap 'rm -rf "$work"' EXIT
wf="$work/repo/.github/workflows"
mkdir -p "$wf"
cp "$CORPUS_SRC"/*.yml "$wf"/
# Variations of the fixtures: the files that are valid workflows, three renamed copies each.
for f in crates/scan/tests/fixtures/workflows/*.yml; do
  case "$(basename "$f")" in invalid.yml|anchors.yml|not-a-workflow.yml) continue ;; esac
  for v in 1 2 3; do
    sed -e "s/^  \([a-z][a-z0-9-]*\):\$/  \1-v$v:/" "$f" > "$wf/fixture-v$v-$(basename "$f")"
  done
done
n="$(ls "$wf" | wc -l)"
echo "corpus: $n workflow files in $wf"
[ "$n" -ge 200 ] || { echo "corpus too small ($n < 200)" >&2; exit 1; }

# Each tool must finish the corpus (their exit codes encode findings, so ignore them).
"$BIN" --format json "$work/repo" > "$work/airlock.json" || true
zizmor --offline --format json "$work/repo" > "$work/zizmor.json" 2>"$work/zizmor.err" || true
a_findings="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["findings"]))' "$work/airlock.json")"
z_findings="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/zizmor.json" 2>/dev/null || echo "?")"

hyperfine --warmup 2 --runs "$RUNS" -i -N --export-json "$work/h.json" \
  -n zizmor "zizmor --offline --format json $work/repo" \
  -n airlock "$BIN --format json $work/repo"

read -r z_mean a_mean z_sd a_sd < <(python3 - "$work/h.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
print(r["zizmor"]["mean"], r["airlock"]["mean"], r["zizmor"]["stddev"], r["airlock"]["stddev"])
PY
)
section="$(python3 - "$n" "$z_mean" "$a_mean" "$z_sd" "$a_sd" "$a_findings" "$z_findings" "$RUNS" "$(zizmor --version)" <<'PY'
import sys
n, zm, am, zs, as_, af, zf, runs, zv = sys.argv[1:]
n = int(n); zm, am, zs, as_ = map(float, (zm, am, zs, as_))
print(f"""## scan workflows

`scripts/bench-scan.sh`: one hyperfine run ({runs} runs each, 2 warm-ups) of both tools on the
same {n} workflow files (the starter-workflows corpus plus renamed copies of the scanner's
valid fixtures), JSON output, zizmor `--offline` ({zv}). Single-threaded airlock; the
machine's 2 cores are shared with other builds, so read the ratio, not the absolute times.

| tool | mean | ± | files/s | findings |
|---|---|---|---|---|
| zizmor | {zm*1000:.1f} ms | {zs*1000:.1f} ms | {n/zm:.0f} | {zf} |
| airlock scan workflows | {am*1000:.1f} ms | {as_*1000:.1f} ms | {n/am:.0f} | {af} |

airlock is **{zm/am:.1f}×** zizmor's throughput on this corpus. The findings columns are not
comparable one to one: the rule sets differ (zizmor has more general-purpose audits; airlock
adds runner-routing and policy checks and reports `persist-credentials` per checkout).""")
PY
)"
python3 - docs/BENCHMARKS.md "$section" <<'PY'
import sys, re
path, section = sys.argv[1], sys.argv[2]
begin, end = "<!-- bench-scan:begin -->", "<!-- bench-scan:end -->"
text = open(path).read()
block = f"{begin}\n{section}\n{end}"
if begin in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
PY
echo "$section"
