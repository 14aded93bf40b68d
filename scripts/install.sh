#!/usr/bin/env bash
# Install everything shoal needs on a Debian 12 machine (run as root). Idempotent.
#   system packages: runc + conmon (containers), busybox-static/skopeo/umoci (building
#   local images), docker-registry (a local OCI registry), nftables (hostPort), iproute2,
#   golang-github-containers-common (the default seccomp profile, /usr/share/containers/seccomp.json).
#   a virtualenv at .venv with shoal and its test dependencies; `shoal` linked into /usr/local/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (containers, cgroups and network namespaces need it)" >&2; exit 1; fi
PKGS="python3 python3-venv python3-dev gcc runc conmon busybox-static skopeo umoci docker-registry nftables iproute2 ethtool curl ca-certificates kmod procps util-linux golang-github-containers-common"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "==> installing system packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The packaged registry service is not ours to run; shoal starts registries itself.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtualenv .venv"
  "$PY" -m venv .venv
fi
echo "==> installing shoal into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
ln -sf "$PWD/.venv/bin/shoal" /usr/local/bin/shoal
echo "==> shoal installed: $(.venv/bin/shoal --version 2>/dev/null || echo '(shoal command not ready)')"
