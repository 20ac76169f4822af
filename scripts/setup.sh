#!/usr/bin/env bash
# Installs what airlock and its tests need on a fresh Debian machine. Idempotent: apt runs only
# when a package is missing, and `apt-get update` at most once.
set -euo pipefail

PACKAGES=(
  libseccomp-dev   # libcontainer's seccomp support (airlock refuses to run jobs without it)
  pkg-config       # finds libseccomp at build time
  runc             # the second executor, and a benchmark baseline
  nftables         # per-job firewall rules (docs/network.md)
  runsc            # gVisor: the third executor (docs/sandbox.md for its limits here)
  bubblewrap       # benchmark baseline only
  hyperfine        # benchmarks
  iproute2         # tests: network namespaces
  procps           # tests: ps/pgrep checks
  psmisc
  util-linux       # unshare, mount, findmnt
  ca-certificates  # copied read-only into the sandbox's /etc/ssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust) is required; install it with rustup" >&2; exit 1; }
