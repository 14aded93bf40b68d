#!/usr/bin/env bash
# Static checks, run by scripts/test.sh before the tests (and on their own: bash scripts/check.sh):
#   1. import-linter: the layer contracts in pyproject.toml ([tool.importlinter]);
#   2. mypy: the ground floor (shoal.machinery), the pure planning modules, the pod worker and
#      the agent that wire the Protocol seams as real types, and tests/typecheck/seams.py (every
#      real seam and its fake against its Protocol) ([tool.mypy] in pyproject.toml).
# Exits non-zero on the first broken contract or type error.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
echo "==> layer contracts (import-linter)"
"$(dirname "$PY")/lint-imports" pyproject.toml
# mypy resolves `shoal.<folder>` from a directory holding a `shoal` link to this checkout
# (the installed package maps the folders with an import hook, which mypy does not run).
tc=$(mktemp -d)
trap 'rm -rf "$tc"' EXIT
ln -s "$PWD" "$tc/shoal"
echo "==> type check (mypy)"
MYPYPATH="$tc" "$PY" -m mypy --config-file pyproject.toml --cache-dir "${MYPY_CACHE_DIR:-.mypy_cache}" \
  -p shoal.machinery \
  -m shoal.agent.plan -m shoal.agent.restarts -m shoal.agent.status -m shoal.agent.runtime.spec \
  -m shoal.agent.registration -m shoal.agent.nodenet -m shoal.agent.logs -m shoal.agent.imagegc \
  -m shoal.agent.network.overlay -m shoal.agent.network.hostports -m shoal.agent.interfaces \
  -m shoal.agent.network.svcrules -m shoal.agent.serviceproxy -m shoal.agent.drainplan -m shoal.agent.drain \
  -m shoal.agent.network.conntrack \
  -m shoal.agent.dns -m shoal.agent.dnsrecords \
  -m shoal.controller.deployment.util -m shoal.controller.deployment.plan \
  -m shoal.controller.deployment.rolling -m shoal.controller.deployment.recreate \
  -m shoal.controller.scheduler.framework \
  -m shoal.controller.endpointslice -m shoal.controller.servicelb -m shoal.apiserver.allocation \
  -m shoal.agent.runtime.seccomp \
  -m shoal.apiserver.tables -m shoal.apiserver.openapi -m shoal.apiserver.protobuf -m shoal.apiserver.dryrun \
  -m shoal.apiserver.podsecurity -m shoal.apiserver.warnings \
  -m shoal.cli.rollout -m shoal.cli.printers -m shoal.apiserver.managedfields \
  -m shoal.agent.agent -m shoal.agent.dispatch -m shoal.agent.subpath -m shoal.agent.worker \
  -m shoal.agent.join -m shoal.apiserver.tls -m shoal.apiserver.nodecerts -m shoal.apiserver.nodeclient \
  -m shoal.apiserver.listing
# every real seam and its fake against its Protocol (a file, so a run of its own)
MYPYPATH="$tc" "$PY" -m mypy --config-file pyproject.toml --cache-dir "${MYPY_CACHE_DIR:-.mypy_cache}" \
  tests/typecheck/seams.py
