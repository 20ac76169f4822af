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
  procps           # tests: ps/pgrep checks; the benign corpus (ps, top, free, vmstat)
  git              # tests: the benign corpus and the offline build test
  make             # tests: the benign corpus (make -j)
  gcc              # tests: the benign corpus (a C build)
  zstd             # tests: the benign corpus (tar --zstd, zstd -T0)
  curl             # tests: network tests and the benign corpus, inside jobs
  python3          # tests: the fake hosts (fakehosts.py) and the benign corpus
  nodejs           # tests: the benign corpus (/usr/bin/node); runs the container hook
  psmisc
  postgresql-15    # tests: a PostgreSQL service container image built from the host's package
  util-linux       # unshare, mount, findmnt
  ca-certificates  # copied read-only into the sandbox's /etc/ssl
  docker-registry  # tests: a real OCI registry for `airlock image pull`
  skopeo           # tests: pushes the test images to that registry
  apache2-utils    # tests: htpasswd for the registry's basic auth
  openssl          # tests: the registry's CA and certificate
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  # Packages with daemons (postgresql-15, docker-registry) must not start them on this host:
  # the tests start their own, in namespaces of their own. A policy-rc.d for the install says
  # so to invoke-rc.d; one that exists already is left alone.
  rcd=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    rcd=/usr/sbin/policy-rc.d
    trap '$SUDO rm -f "$rcd"' EXIT
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$rcd" >/dev/null
    $SUDO chmod 755 "$rcd"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$rcd" ]; then
    $SUDO rm -f "$rcd"
    trap - EXIT
  fi
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust) is required; install it with rustup" >&2; exit 1; }
