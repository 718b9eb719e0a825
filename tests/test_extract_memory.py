"""Extraction within a memory setting: chunk and batch sizes, and resuming with the recorded chunk."""
import json

import pytest

from attndsl.extraction.extract import CHUNK_SIZE, chunk_plan, extract
from tests.test_extract import _store_bytes
from tests.tiny import tiny_loaded


def test_chunk_plan_keeps_short_runs_and_shrinks_long_ones():
    # SmolLM2's 30 x 9 heads: default runs (<= 256 tokens) keep chunks of 16 and the batch
    for n in (16, 64, 256):
        assert chunk_plan(n, 30, 9, 3.0, 8) == (CHUNK_SIZE, 8)
    chunk, batch = chunk_plan(1024, 30, 9, 3.0, 8)
    assert 1 <= chunk < CHUNK_SIZE and batch <= chunk
    per_sequence = 1024 * 1025 // 2 * 270 * 5
    assert chunk * per_sequence <= 3e9
    assert chunk_plan(4096, 30, 9, 3.0, 8) == (1, 1)  # never below one sequence
    assert chunk_plan(1024, 30, 9, None, 8) == (CHUNK_SIZE, 8)


def test_small_memory_setting_gives_small_chunks_and_resumes_with_the_recorded_one(tmp_path):
    loaded = tiny_loaded("gpt2")
    args = dict(max_sequences=12, max_tokens=24, batch_size=4, progress=False)
    width = loaded.n_layers * loaded.n_heads
    per_sequence = 24 * 25 // 2 * width * 5 + 4 * loaded.n_heads * 24 * 24 * 4
    memory = (500_000_000 + 3 * per_sequence) / 1e9  # room for three sequences after the runtime
    full = extract(tmp_path / "full", loaded, "builtin", memory_gb=memory, **args)
    manifest = json.loads((tmp_path / "full" / "manifest.json").read_text())
    assert manifest["stages"]["extract"]["chunk_size"] == 3
    assert full.n_sequences == 12

    def interrupt(chunk):
        if chunk == 1:
            raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        extract(tmp_path / "part", loaded, "builtin", memory_gb=memory, on_chunk=interrupt, **args)
    # resumed with another memory setting: the recorded chunk size is kept, the store is the same
    extract(tmp_path / "part", loaded, "builtin", memory_gb=memory * 10, **args)
    assert _store_bytes(tmp_path / "part") == _store_bytes(tmp_path / "full")
