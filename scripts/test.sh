#!/usr/bin/env bash
# Set up a virtualenv (torch pinned to the CPU build by constraints.txt) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[test]'
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
if [ "$rc" -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi
exit "$rc"
