#!/usr/bin/env bash
# Network benchmarks, in a sealed world built here (namespaces and fake hosts this script
# creates; nothing leaves the machine). Each figure is a ratio or difference against a
# baseline measured in the same run:
#   - attach + detach of a job's network: airlock (netlink + one nft batch) vs the same
#     steps with the ip/nft command-line tools;
#   - HTTPS bulk throughput through the gateway vs direct (routed by an allow rule);
#   - connection set-up (TCP + TLS) through the gateway vs direct;
#   - DNS answer latency from the gateway vs the upstream resolver asked directly.
# Writes the results into docs/BENCHMARKS.md. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-30}"
./scripts/setup.sh
cargo build --release --bins -p airlock
A="$PWD/target/release/airlock"
T="airlock-bench-$$"
work="$(mktemp -d /run/airlock-bench-net.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  AIRLOCK_STATE_DIR="$work/state" nsenter --net="/run/netns/$T" "$A" gc --force >/dev/null 2>&1 || true
  for n in "$T" "${T}inet" "${T}b"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$T"; ip -n "$T" link set lo up
ip netns add "${T}inet"; ip -n "${T}inet" link set lo up
ip -n "$T" link add fhinet type veth peer name eth0 netns "${T}inet"
ip -n "$T" addr add 198.51.100.1/24 dev fhinet; ip -n "$T" link set fhinet up
for a in 198.51.100.10/24 198.51.100.11/24 198.51.100.53/24; do ip -n "${T}inet" addr add "$a" dev eth0; done
ip -n "${T}inet" link set eth0 up; ip -n "${T}inet" route add default via 198.51.100.1
ip -n "$T" route add default via 198.51.100.10
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=allowed.test \
  -addext subjectAltName=DNS:allowed.test -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
ip netns exec "${T}inet" /usr/bin/python3 crates/cli/tests/fakehosts.py internet "$work/cert.pem" "$work/key.pem" > "$work/fake.out" &
pids+=($!)
for _ in $(seq 50); do grep -q ready "$work/fake.out" 2>/dev/null && break; sleep 0.1; done
mkdir -p "$work/ws"; cp "$work/cert.pem" "$work/ws/ca.pem"
cat > "$work/policy.toml" <<'TOML'
version = 1
[groups.default]
egress = { domains = ["allowed.test"], resolver = "198.51.100.53" }
[groups.direct]
egress = { domains = ["allowed.test"], allow = ["198.51.100.10/32:443", "198.51.100.53/32:53/udp"], resolver = "198.51.100.53" }
TOML
run() { AIRLOCK_STATE_DIR="$work/state" nsenter --net="/run/netns/$T" "$A" run -q -p "$work/policy.toml" -w "$work/ws" "$@"; }

# 1. attach + detach: from the phase timings of airlock itself vs the CLI tools.
airlock_net=(); airlock_det=()
for i in $(seq "$N"); do
  log=$(AIRLOCK_LOG=debug run -- /bin/true 2>&1 | sed 's/\x1b\[[0-9;]*m//g')
  # The network's own steps, timed from its start (it runs beside the rootfs and helper).
  airlock_net+=("$(awk '/step="gateway"/{for(i=1;i<=NF;i++) if($i ~ /^at_us=/){sub("at_us=","",$i); print $i}}' <<<"$log")")
  airlock_det+=("$(awk '{for(i=1;i<=NF;i++) if($i ~ /^net_detach_us=/){sub("net_detach_us=","",$i); print $i}}' <<<"$log")")
done
cli_net=(); cli_det=()
for i in $(seq "$N"); do
  s=$(date +%s%N)
  ip netns add "${T}b"
  ip -n "$T" link add benchh type veth peer name benchp netns "${T}b"
  ip -n "$T" addr add 10.214.0.1/30 dev benchh; ip -n "$T" link set benchh up
  ip -n "${T}b" addr add 10.214.0.2/30 dev benchp; ip -n "${T}b" link set benchp up; ip -n "${T}b" link set lo up
  ip -n "${T}b" route add default via 10.214.0.1
  nsenter --net="/run/netns/$T" nft add element inet airlock jobs '{ 10.214.0.2 }'
  m=$(date +%s%N); cli_net+=($(( (m - s) / 1000 )))
  nsenter --net="/run/netns/$T" nft delete element inet airlock jobs '{ 10.214.0.2 }'
  ip -n "$T" link del benchh; ip netns del "${T}b"
  e=$(date +%s%N); cli_det+=($(( (e - m) / 1000 )))
done

# 2-4 run inside jobs, with curl and python from the host's /usr.
probe='
import socket, struct, subprocess, sys, time, statistics
def dns(server, n):
    out = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        q = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\x07allowed\x04test\x00" + struct.pack("!HH", 1, 1)
        t = time.perf_counter(); s.sendto(q, (server, 53)); s.recv(512); out.append(time.perf_counter() - t)
    return statistics.median(out) * 1000
def curl(args):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "--cacert", "ca.pem", "-w", "%{time_appconnect} %{speed_download}"] + args, capture_output=True, text=True)
    a, s = r.stdout.split(); return float(a) * 1000, float(s)
gw = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
mode, n = sys.argv[1], int(sys.argv[2])
# Both sides skip the own name lookup of curl (--resolve), so set-up times compare the
# path only: through the gateway (which resolves the name itself) or routed directly.
res = ["--resolve", "allowed.test:443:198.51.100.10"]
hs = [curl(res + ["https://allowed.test/"])[0] for _ in range(n)]
bw = max(curl(res + ["https://allowed.test/big/256"])[1] for _ in range(3))
d = dns(gw if mode == "gateway" else "198.51.100.53", n)
print("%.3f %.0f %.3f" % (statistics.median(hs), bw, d))
'
printf '%s' "$probe" > "$work/ws/probe.py"
read -r gw_hs gw_bw gw_dns < <(run -- /usr/bin/python3 probe.py gateway "$N")
read -r d_hs d_bw d_dns < <(run -g direct -- /usr/bin/python3 probe.py direct "$N")

python3 - "$work" "${airlock_net[*]}" "${cli_net[*]}" "${airlock_det[*]}" "${cli_det[*]}" "$gw_hs" "$gw_bw" "$gw_dns" "$d_hs" "$d_bw" "$d_dns" <<'PY'
import sys, statistics, re, datetime, subprocess
_, work, a, c, ad, cd, gw_hs, gw_bw, gw_dns, d_hs, d_bw, d_dns = sys.argv
ms = lambda s: [int(x) / 1000 for x in s.split() if x]
a, c, ad, cd = ms(a), ms(c), ms(ad), ms(cd)
gw_hs, gw_bw, gw_dns, d_hs, d_bw, d_dns = map(float, (gw_hs, gw_bw, gw_dns, d_hs, d_bw, d_dns))
rows = [
  "| measure | airlock | baseline (same run) | ratio / difference | target |",
  "|---|---|---|---|---|",
  f"| network attach (netns, veth, addresses, routes, nft elements, gateway bind), median | {statistics.median(a):.1f} ms | the same steps with the ip/nft tools: {statistics.median(c):.1f} ms | {statistics.median(a)/statistics.median(c):.2f}x | — |",
  f"| network detach (nft elements, namespace released, lease returned), median | {statistics.median(ad):.1f} ms | the same with the ip/nft tools: {statistics.median(cd):.1f} ms | {statistics.median(ad)/statistics.median(cd):.2f}x | — |",
  f"| HTTPS bulk download (256 MiB), best of 3 | {gw_bw/1e6:.0f} MB/s via gateway | {d_bw/1e6:.0f} MB/s direct | {gw_bw/d_bw:.2f} | ≥ 0.8 |",
  f"| connection set-up (TCP + TLS), median | {gw_hs:.2f} ms via gateway | {d_hs:.2f} ms direct | {gw_hs-d_hs:+.2f} ms | ≤ 1 ms |",
  f"| DNS answer, median | {gw_dns:.2f} ms from gateway | {d_dns:.2f} ms from upstream | {gw_dns-d_dns:+.2f} ms | gateway ≤ 0.5 ms over upstream |",
]
table = "\n".join(rows); print(table)
path = "docs/BENCHMARKS.md"; text = open(path).read()
start, end = "<!-- bench-net:start -->", "<!-- bench-net:end -->"
stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
block = f"{start}\nMeasured {stamp}, {len(a)} runs each (`sudo ./scripts/bench-net.sh`).\n\n{table}\n{end}"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), block, text, flags=re.S)
open(path, "w").write(text)
PY
