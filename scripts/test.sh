#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, slow integration tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HYPOTHESIS_PROFILE=ci
python -m pytest -q "$@"
