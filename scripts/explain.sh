#!/usr/bin/env bash
# Set up (idempotent) and explain every head of the embedded default model
# (SmolLM2-135M-Instruct) on the built-in corpus; the report lands in runs/default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
attndsl explain --out runs/default "$@"
