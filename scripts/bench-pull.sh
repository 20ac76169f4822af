#!/usr/bin/env bash
# `airlock image pull` against `skopeo copy` to an OCI layout, from the same local registry,
# in one run (these machines are noisy: only ratios within one run mean anything).
#
#   sudo ./scripts/bench-pull.sh [RUNS] [MB]
#
# The registry (Debian's docker-registry) listens on the loopback of a namespace of our own;
# nothing leaves the machine. The image: MB megabytes of incompressible data in 5 gzip layers
# plus a small one. Reported: median wall time of a cold pull (empty store / empty layout) of
# each tool, alternating, their ratio, and what a second tag sharing all but one layer costs
# airlock (blobs fetched, time). airlock also unpacks the layers into a root filesystem;
# skopeo only stores blobs: the comparison favours skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-${RUNS:-5}}"
MB="${2:-100}"
./scripts/setup.sh >/dev/null
cargo build --release -p airlock --bin airlock
AIRLOCK="$PWD/target/release/airlock"

work="$(mktemp -d /var/tmp/airlock-bench-pull.XXXXXX)"
NS="airlock-bench-pull-$$"
ip netns add "$NS"; ip -n "$NS" link set lo up
REG_PID=""
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
inns() { nsenter --net="/run/netns/$NS" -- "$@"; }

mkdir -p "$work/registry"
cat > "$work/registry.yml" <<YML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/registry } }
http: { addr: 127.0.0.1:5000 }
YML
inns docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
  [ "$(inns curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/)" = 200 ] && break
  sleep 0.1
done

# Two OCI layouts: tag 1 (5 big layers + a small one) and tag 2 (the same big layers, another
# small one).
python3 - "$work" "$MB" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
work, mb = sys.argv[1], int(sys.argv[2])
def blob(layout, media, data):
    h = hashlib.sha256(data).hexdigest()
    os.makedirs(f"{layout}/blobs/sha256", exist_ok=True)
    open(f"{layout}/blobs/sha256/{h}", "wb").write(data)
    return {"mediaType": media, "digest": f"sha256:{h}", "size": len(data)}
def layer(files):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as t:
        for name, data in files:
            ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
    raw = b.getvalue()
    return raw, gzip.compress(raw, compresslevel=1)
big = [layer([(f"data/part{i}", os.urandom(mb * 1024 * 1024 // 5))]) for i in range(5)]
for tag in ("1", "2"):
    layout = f"{work}/layout{tag}"
    os.makedirs(layout, exist_ok=True)
    open(f"{layout}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
    layers = big + [layer([("tag", f"{tag}\n".encode())])]
    descs = [blob(layout, "application/vnd.oci.image.layer.v1.tar+gzip", gz) for _, gz in layers]
    cfg = {"architecture": "amd64", "os": "linux", "config": {},
           "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest() for raw, _ in layers]}}
    dc = blob(layout, "application/vnd.oci.image.config.v1+json", json.dumps(cfg).encode())
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": dc, "layers": descs}
    dm = blob(layout, "application/vnd.oci.image.manifest.v1+json", json.dumps(m).encode())
    dm["annotations"] = {"org.opencontainers.image.ref.name": tag}
    json.dump({"schemaVersion": 2, "manifests": [dm]}, open(f"{layout}/index.json", "w"))
PY
for tag in 1 2; do
  inns skopeo --insecure-policy copy -q --dest-tls-verify=false \
    "oci:$work/layout$tag:$tag" "docker://127.0.0.1:5000/bench/img:$tag"
done

python3 - "$AIRLOCK" "$work" "$RUNS" "$NS" <<'PY'
import json, os, shutil, statistics, subprocess, sys, time
airlock, work, runs, ns = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
inns = ["nsenter", f"--net=/run/netns/{ns}", "--"]
def pull_airlock(data, tag):
    env = dict(os.environ, AIRLOCK_DATA_DIR=data, AIRLOCK_STATE_DIR=data + "/state")
    t = time.monotonic()
    o = subprocess.run(inns + [airlock, "image", "pull", "--json", "--insecure-registry", "127.0.0.1:5000",
                               f"127.0.0.1:5000/bench/img:{tag}"], env=env, capture_output=True, check=True)
    return time.monotonic() - t, json.loads(o.stdout)
def pull_skopeo(dest):
    t = time.monotonic()
    subprocess.run(inns + ["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                           "docker://127.0.0.1:5000/bench/img:1", f"oci:{dest}:1"], check=True)
    return time.monotonic() - t
a, s, second = [], [], []
for i in range(runs):
    order = ["airlock", "skopeo"] if i % 2 == 0 else ["skopeo", "airlock"]
    for who in order:
        d = f"{work}/run-{who}-{i}"
        if who == "airlock":
            dt, _ = pull_airlock(d, "1")
            a.append(dt)
            dt2, p2 = pull_airlock(d, "2")
            second.append((dt2, p2["fetched"], p2["reused"], p2["fetched_bytes"]))
        else:
            s.append(pull_skopeo(d))
        shutil.rmtree(d, ignore_errors=True)
ma, ms = statistics.median(a), statistics.median(s)
print(f"cold pull, median of {runs}: airlock {ma:.2f} s (pull + verify + unpack), skopeo {ms:.2f} s (blobs to an OCI layout)")
print(f"ratio airlock/skopeo: {ma / ms:.2f}")
t2 = statistics.median(x[0] for x in second)
f = second[0]
print(f"second tag sharing 5 of 6 layers: median {t2:.2f} s, fetched {f[1]} blobs ({f[3]} bytes), reused {f[2]}; ratio to a cold pull {t2 / ma:.2f}")
PY
