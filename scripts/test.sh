#!/usr/bin/env bash
# Install everything, check the layer contracts and types (scripts/check.sh), then run the whole
# test suite: unit, integration and e2e (root). Fails if either the checks or a test fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
set +e
bash scripts/check.sh
checks=$?
.venv/bin/python -m pytest tests -p no:cacheprovider "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "test.sh: pytest collected no tests: that is a failure" >&2; exit 1; fi
if [ $checks -ne 0 ]; then echo "test.sh: scripts/check.sh failed (layer contracts or type check): see above" >&2; exit 1; fi
exit $rc
