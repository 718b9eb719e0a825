#!/usr/bin/env bash
# Canary: surrogate heads, KV-cache generation and the lm-evaluation-harness
# adapter on the newest transformers the registry serves (not the locked one).
#
# Builds .venv-newest from requirements.lock with transformers and the packages
# it pins tightly (huggingface-hub, tokenizers, safetensors) left free and
# upgraded, then runs the surrogate and QA tests there.  .ci/run calls it after
# the main suite; it never changes .venv or the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
FREE='^(transformers|huggingface-hub|huggingface_hub|tokenizers|safetensors|hf-xet)=='
if [ ! -x .venv-newest/bin/python ]; then
    "$PYTHON" -m venv .venv-newest
fi
. .venv-newest/bin/activate
python -m pip install -q --disable-pip-version-check "$(grep -i '^pip==' requirements.lock)"
grep -v -i -E "$FREE" requirements.lock > .venv-newest/pinned.txt
pip install -q --no-deps -r .venv-newest/pinned.txt
pip install -q --upgrade transformers huggingface-hub tokenizers safetensors
pip install -q --no-deps --no-build-isolation -e .
echo "newest transformers: $(python -c 'import transformers; print(transformers.__version__)') (locked: $(grep -i '^transformers==' requirements.lock))"
export HYPOTHESIS_PROFILE=ci
python -m pytest -q -p no:cacheprovider tests/test_surrogate.py tests/test_qa.py "$@"
