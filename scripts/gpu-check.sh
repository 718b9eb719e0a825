#!/usr/bin/env bash
# The GPU path in a few minutes: surrogate identity on CUDA (five tiny families in
# float32/bfloat16/float16, SmolLM2 in float32/bfloat16), extraction equal to
# output_attentions, the kernels' torch bridge on the device, and extraction /
# surrogate timings against the plain forward. Writes gpu-check.json (or $1).
#
# Needs a CUDA build of torch: the locked environment pins the CPU build, so on a
# GPU machine first run
#   .venv/bin/pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu124
# Without a GPU (or with the CPU build) it stops at once with exit status 3 and says why.
# Never a CI dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
out="${1:-gpu-check.json}"
exec timeout "${GPU_CHECK_TIMEOUT:-900}" "$PY" scripts/gpu_check.py --device "${GPU_CHECK_DEVICE:-cuda}" --json "$out"
