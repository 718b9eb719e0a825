"""The attention store: codec bound, layout, run directory, damage detection."""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attndsl.errors import UserError
from attndsl.extraction.features import table_from_words
from attndsl.pipeline.rundir import atomic_write_bytes, open_run
from attndsl.extraction.store import FLOOR, RELATIVE_ERROR, SequenceRecord, Store, StoreWriter, decode, encode, iou_error_bound, pack12, packed_size, tri_size, unpack12


@given(st.lists(st.integers(0, 4095), max_size=50))
def test_pack12_roundtrip(codes):
    codes = np.array(codes, dtype=np.uint16)
    blob = pack12(codes)
    assert len(blob) == packed_size(len(codes))
    assert np.array_equal(unpack12(blob, len(codes)), codes)


def test_codec_error_bound_per_entry():
    rng = np.random.default_rng(0)
    values = np.concatenate([[0.0, 1.0, FLOOR, FLOOR / 2, FLOOR / 3], 10 ** rng.uniform(-9, 0, 100_000)])
    decoded = decode(encode(values)).astype(np.float64)
    err = np.abs(decoded - values)
    big = values >= FLOOR
    assert np.all(err[big] <= RELATIVE_ERROR * values[big] * (1 + 1e-5) + 1e-9)
    assert np.all(err[~big] <= FLOOR / 2 + 1e-12)
    assert decoded[1] == 1.0 and decoded[0] == 0.0


def _iou(a, b):
    return np.minimum(a, b).sum() / np.maximum(a, b).sum()


@pytest.mark.parametrize("n", [8, 64])
def test_iou_error_stays_within_the_documented_bound(n):
    rng = np.random.default_rng(n)
    assert iou_error_bound(64) < 0.005
    for concentration in (0.05, 1.0, 20.0):
        for _ in range(20):
            a = np.tril(rng.dirichlet([concentration] * n, size=n))
            a = a / a.sum(1, keepdims=True)
            p = np.tril(rng.dirichlet([concentration] * n, size=n))
            p = p / p.sum(1, keepdims=True)
            stored = decode(encode(a)).astype(np.float64)
            assert abs(_iou(stored, p) - _iou(a, p)) <= iou_error_bound(n)
            assert np.abs(stored - a).sum(1).max() <= RELATIVE_ERROR + n * FLOOR / 2


def test_a_64_token_sequence_of_270_heads_fits_in_a_megabyte():
    assert packed_size(tri_size(64) * 270) <= 1_000_000


def _records(lengths):
    return [
        SequenceRecord.from_table(table_from_words([f"w{i}" for i in range(n)]), "heldout" if n % 2 else "synthesis")
        for n in lengths
    ]


def _write_store(directory, lengths=(3, 5, 4, 2, 6), n_layers=2, n_heads=3, chunk_size=2, seed=0):
    rng = np.random.default_rng(seed)
    records = _records(lengths)
    writer = StoreWriter(directory, n_layers, n_heads, records, chunk_size)
    all_codes = [rng.integers(0, 4096, size=(tri_size(n), n_layers * n_heads)).astype(np.uint16) for n in lengths]
    for chunk in writer.missing_chunks():
        writer.write_chunk(chunk, [all_codes[i] for i in writer.chunk_range(chunk)])
    return Store(directory), all_codes


def test_store_layout_matches_the_attention_source_protocol(tmp_path):
    store, codes = _write_store(tmp_path / "s")
    assert store.lengths == [3, 5, 4, 2, 6] and store.n_layers == 2 and store.n_heads == 3
    request = [4, 0, 2]
    block = store.causal_block(request)
    tri_offsets = np.concatenate([[0], np.cumsum([tri_size(store.lengths[s]) for s in request])])
    assert block.shape == (tri_offsets[-1], 6) and block.dtype == np.float32
    for position, s in enumerate(request):
        dense = store.dense(s)
        n = store.lengths[s]
        for layer in range(2):
            for head in range(3):
                for q in range(n):
                    for k in range(q + 1):
                        entry = tri_offsets[position] + q * (q + 1) // 2 + k
                        assert block[entry, layer * 3 + head] == dense[layer, head, q, k]
                        assert block[entry, layer * 3 + head] == decode(codes[s][q * (q + 1) // 2 + k, layer * 3 + head])
        assert np.all(np.triu(dense, 1) == 0)
    assert store.split == ("heldout", "heldout", "synthesis", "synthesis", "synthesis")
    assert store.heldout_indices == [0, 1] and store.synthesis_indices == [2, 3, 4]
    assert store.tables([1])[0] == table_from_words([f"w{i}" for i in range(5)])
    streamed = list(store.iter_blocks(range(5), max_entries=20))
    assert sum(len(g) for g, _ in streamed) == 5
    assert np.array_equal(np.concatenate([b for _, b in streamed]), store.causal_block(range(5)))


def test_truncated_or_corrupt_store_is_a_clear_error(tmp_path):
    store, _ = _write_store(tmp_path / "s")
    chunk = tmp_path / "s" / "chunk-00001.bin"
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-7])
    with pytest.raises(UserError, match="truncated"):
        Store(tmp_path / "s").causal_block([2])
    chunk.write_bytes(data[:10] + bytes([data[10] ^ 0xFF]) + data[11:])
    with pytest.raises(UserError, match="checksum"):
        Store(tmp_path / "s").causal_block([2])
    Store(tmp_path / "s").causal_block([0, 1, 4])  # other chunks still read
    (tmp_path / "s" / "chunk-00002.json").unlink()
    with pytest.raises(UserError, match="incomplete"):
        Store(tmp_path / "s").dense(4)
    (tmp_path / "s" / "meta.json").write_text('{"format": 1, "codec"')
    with pytest.raises(UserError, match="corrupt"):
        Store(tmp_path / "s")
    with pytest.raises(UserError, match="no attention store"):
        Store(tmp_path / "nothing")


def test_edited_sequences_file_is_detected(tmp_path):
    _write_store(tmp_path / "s")
    path = tmp_path / "s" / "sequences.jsonl"
    path.write_text(path.read_text().replace("w1", "wX"))
    with pytest.raises(UserError, match="does not match"):
        Store(tmp_path / "s").tables([0])


def test_open_run_refuses_other_settings_and_names_them(tmp_path):
    run = open_run(tmp_path / "run", "extract", {"model": "a", "max_tokens": 64, "seed": 0})
    assert run.settings("extract") == {"model": "a", "max_tokens": 64, "seed": 0}
    open_run(tmp_path / "run", "extract", {"model": "a", "max_tokens": 64, "seed": 0})
    open_run(tmp_path / "run", "score", {"k": [1, 2]})
    before = (tmp_path / "run" / "manifest.json").read_bytes()
    with pytest.raises(UserError) as error:
        open_run(tmp_path / "run", "extract", {"model": "b", "max_tokens": 64, "seed": 1})
    assert "model" in str(error.value) and "seed" in str(error.value) and "max_tokens" not in str(error.value)
    assert (tmp_path / "run" / "manifest.json").read_bytes() == before
    run.mark_complete("extract", {"n": 3})
    assert run.is_complete("extract") and run.completion("extract") == {"n": 3}
    assert run.settings("score") == {"k": [1, 2]}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {"python", "torch", "transformers"} <= set(manifest["versions"])


def test_open_run_refuses_a_foreign_directory_and_corrupt_manifest(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        open_run(tmp_path / "other", "extract", {})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    with pytest.raises(UserError, match="corrupt"):
        open_run(tmp_path / "bad", "extract", {})


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(path, object())  # fails mid-write
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
