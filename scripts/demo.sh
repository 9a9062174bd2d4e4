#!/usr/bin/env bash
# Set up a virtualenv (torch pinned to the CPU build by constraints.txt) and run `tether demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e .
.venv/bin/tether demo --out runs/demo "$@"
