"""The topmass store codec: dropped mass, IoU bound on real heads, round trip, resume, damage, downstream."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attndsl import cli
from attndsl.errors import UserError
from attndsl.extraction.extract import extract
from attndsl.pipeline.rundir import Run
from attndsl.extraction.store import ENTRY_RELATIVE_ERROR, FLOOR, Store, StoreWriter, decode, iou_error_bound, pack_sparse, sparse_size, topmass_keep, tri_size, unpack_sparse
from tests.test_store import _records
from tests.tiny import tiny_loaded

MASS = 0.9  # far from 1 so that the tiny random heads (near uniform) actually drop entries


@given(st.integers(1, 9), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_sparse_pack_roundtrip(n, width, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4096, size=(tri_size(n), width)).astype(np.uint16)
    codes[rng.random(codes.shape) < 0.6] = 0
    blob, entries = pack_sparse(codes, n)
    assert entries == np.count_nonzero(codes) and len(blob) == sparse_size(n, width, entries)
    assert np.array_equal(unpack_sparse(blob, n, width), codes)


@pytest.mark.parametrize("mass", [0.5, 0.9, 0.99])
def test_kept_entries_are_the_fewest_largest_reaching_the_mass(mass):
    rng = np.random.default_rng(1)
    for concentration in (0.05, 1.0, 20.0):
        probs = torch.tensor(rng.dirichlet([concentration] * 30, size=200))
        keep = topmass_keep(probs, mass)
        kept = (probs * keep).sum(-1)
        assert torch.all(keep.sum(-1) >= 1)
        assert torch.all(1 - kept <= 1 - mass + 1e-12)  # (a) dropped mass <= 1 - m
        # fewest: without its smallest kept entry a row no longer reaches the mass
        smallest = torch.where(keep, probs, torch.full_like(probs, 2.0)).min(-1).values
        assert torch.all((kept - smallest < mass) | (keep.sum(-1) == 1))
        # largest: every dropped entry is no larger than every kept one
        dropped_max = torch.where(keep, torch.zeros_like(probs), probs).max(-1).values
        assert torch.all(dropped_max <= smallest)


def test_bound_formula():
    assert iou_error_bound(64, 0.99) == pytest.approx(0.0240, abs=1e-4)
    assert iou_error_bound(1024, 0.99) == pytest.approx(0.0250, abs=1e-4)
    assert iou_error_bound(64, 1.0) == iou_error_bound(64) < 0.005


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    loaded = tiny_loaded("llama")
    root = tmp_path_factory.mktemp("topmass")
    args = dict(max_sequences=10, max_tokens=40, batch_size=4, progress=False)
    log12 = extract(root / "log12", loaded, "builtin", **args)
    top = extract(root / "top", loaded, "builtin", store_codec="topmass", store_mass=MASS, **args)
    return loaded, log12, top


def _iou(a, b):
    return np.minimum(a, b).sum() / np.maximum(a, b).sum()


def test_real_heads_drop_at_most_1_minus_m_and_keep_log12_codes(stores):
    loaded, log12, top = stores
    assert top.codec == "topmass" and top.mass == MASS and log12.codec == "log12"
    meta = json.loads((top.directory / "meta.json").read_text())
    assert meta["codec"] == {"name": "topmass", "floor": FLOOR, "codes": 4096, "mass": MASS}
    settings = Run(top.directory.parent).settings("extract")
    assert settings["codec"] == "topmass" and settings["store_mass"] == MASS
    assert "store_mass" not in Run(log12.directory.parent).settings("extract")
    dropped_any = False
    for i in range(top.n_sequences):
        full, kept = log12.codes(i), top.codes(i)
        assert np.all((kept == full) | (kept == 0))  # kept entries carry exactly their log12 code
        ids = top.tables([i])[0].token_id
        with torch.no_grad():
            exact = torch.stack(loaded.model(torch.as_tensor(ids)[None], output_attentions=True).attentions)[:, 0]
        exact = exact.double().numpy()  # [L, H, n, n]
        stored = top.dense(i).astype(np.float64)
        kept_mask = stored > 0
        dropped = (exact * ~kept_mask).sum(-1)
        assert np.all(dropped <= 1 - MASS + 1e-6)  # (a) on the model's own probabilities
        dropped_any |= bool(np.any(~kept_mask & (np.tril(np.ones(exact.shape[-2:])) > 0)))
        bound = np.where(exact >= FLOOR, ENTRY_RELATIVE_ERROR * exact, FLOOR / 2)
        assert np.all(np.abs(stored - exact)[kept_mask] <= bound[kept_mask])
    assert dropped_any


def test_iou_error_on_real_heads_is_within_the_stated_bound(stores):
    _, log12, top = stores
    rng = np.random.default_rng(0)
    worst = 0.0
    for i in range(top.n_sequences):
        n = top.lengths[i]
        a, b = log12.dense(i).astype(np.float64), top.dense(i).astype(np.float64)
        predictions = [np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None], np.eye(n)]
        for c in (0.1, 1.0):
            p = np.tril(rng.dirichlet([c] * n, size=n))
            predictions.append(p / p.sum(1, keepdims=True))
        for layer in range(top.n_layers):
            for head in range(top.n_heads):
                for p in predictions:
                    worst = max(worst, abs(_iou(a[layer, head], p) - _iou(b[layer, head], p)))
        assert worst <= top.iou_error_bound(n)
    assert worst > 0  # the check measured something


def _write(directory, lengths=(3, 5, 4, 2, 6), width=6, chunk_size=2, seed=0):
    rng = np.random.default_rng(seed)
    writer = StoreWriter(directory, 2, 3, _records(lengths), chunk_size, "topmass", 0.95)
    codes = []
    for n in lengths:
        c = rng.integers(1, 4096, size=(tri_size(n), width)).astype(np.uint16)
        c[rng.random(c.shape) < 0.5] = 0
        diagonal = np.arange(n) * (np.arange(n) + 1) // 2 + np.arange(n)
        c[diagonal] = 4095  # every row keeps an entry, as topmass_keep guarantees
        codes.append(c)
    return writer, codes


def test_store_roundtrip_resume_and_damage(tmp_path):
    writer, codes = _write(tmp_path / "s")
    assert writer.missing_chunks() == [0, 1, 2]
    writer.write_chunk(0, [codes[i] for i in writer.chunk_range(0)])
    writer, _ = _write(tmp_path / "s")  # resume: only the other chunks are missing
    assert writer.missing_chunks() == [1, 2]
    for chunk in writer.missing_chunks():
        writer.write_chunk(chunk, [codes[i] for i in writer.chunk_range(chunk)])
    store = Store(tmp_path / "s")
    store.verify()
    assert store.files_complete()
    for i, c in enumerate(codes):
        assert np.array_equal(store.codes(i), c)
        assert np.array_equal(store.causal_block([i]), decode(c))
    with pytest.raises(UserError, match="describes other"):
        StoreWriter(tmp_path / "s", 2, 3, _records((3, 5, 4, 2, 6)), 2, "topmass", 0.9)
    with pytest.raises(UserError, match="describes other"):
        StoreWriter(tmp_path / "s", 2, 3, _records((3, 5, 4, 2, 6)), 2)
    index_path = tmp_path / "s" / "chunk-00001.json"
    index = json.loads(index_path.read_text())
    for damage, message in (
        ({"entries": index["entries"][:1]}, "'entries' has 1"),
        ({"entries": [index["entries"][0] + 2, index["entries"][1]]}, "offsets do not match"),
        ({"entries": [1, index["entries"][1]]}, "has 1 entries"),
        ({"entries": "x"}, "entries"),
    ):
        index_path.write_text(json.dumps({**index, **damage}))
        with pytest.raises(UserError, match=message):
            Store(tmp_path / "s").codes(2)
    del index["entries"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(UserError, match="entries"):
        Store(tmp_path / "s").codes(2)
    meta_path = tmp_path / "s" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for codec, message in (({**meta["codec"], "mass": 1.5}, "not in"), ({**meta["codec"], "mass": "x"}, "mass"),
                           ({"name": "zip"}, "codec")):
        meta_path.write_text(json.dumps({**meta, "codec": codec}))
        with pytest.raises(UserError, match=message):
            Store(tmp_path / "s")


def test_bad_codec_or_mass_is_a_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="store-mass"):
        StoreWriter(tmp_path / "a", 1, 1, _records((2,)), 1, "topmass", 1.0)
    with pytest.raises(UserError, match="codec"):
        StoreWriter(tmp_path / "b", 1, 1, _records((2,)), 1, "gzip")
    assert cli.main(["extract", "--out", str(tmp_path / "c"), "--store-codec", "topmass", "--store-mass", "1"]) == 2
    assert "--store-mass" in capsys.readouterr().err


def test_synthesize_score_and_report_work_on_a_topmass_store(stores, tmp_path, capsys, monkeypatch):
    import shutil

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ATTNDSL_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    _, _, top = stores
    run = tmp_path / "run"
    shutil.copytree(top.directory.parent, run)
    assert cli.main(["synthesize", str(run), "--no-progress", "--screen-sequences", "6", "--max-terms", "3"]) == 0
    assert "mean held-out IoU" in capsys.readouterr().out
    with open(run / "library" / "best.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 4 and all(0.0 <= float(r["heldout_iou"]) <= 1.0 for r in rows)
    assert cli.main(["score", str(run), "--no-progress"]) == 0
    assert cli.main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 0


def test_cli_extract_topmass_reports_its_bound(tmp_path, capsys):
    from tests.tiny import save_tiny

    model = save_tiny("gpt2", tmp_path / "tiny-gpt2")
    args = ["extract", "--model", str(model), "--out", str(tmp_path / "run"), "--max-sequences", "3", "--no-progress",
            "--store-codec", "topmass", "--store-mass", "0.95"]
    assert cli.main(args) == 0
    store = Store(tmp_path / "run" / "attention")
    bound = store.iou_error_bound(max(store.lengths))
    assert f"IoU error at most {bound:.4f}" in capsys.readouterr().out and store.mass == 0.95
    assert cli.main(args[:-1] + ["0.9"]) == 2  # another mass is another extraction
    assert "other settings" in capsys.readouterr().err


def test_interrupted_topmass_extraction_resumes_to_the_same_store(tmp_path):
    loaded = tiny_loaded("gpt2")
    args = dict(max_sequences=34, max_tokens=24, batch_size=5, progress=False, store_codec="topmass", store_mass=MASS)
    extract(tmp_path / "full", loaded, "builtin", **args)

    def interrupt(chunk):
        if chunk == 1:
            raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        extract(tmp_path / "part", loaded, "builtin", on_chunk=interrupt, **args)
    resumed = []
    extract(tmp_path / "part", loaded, "builtin", on_chunk=resumed.append, **args)
    assert resumed == [2]

    def files(run):
        return {p.name: p.read_bytes() for p in sorted((run / "attention").iterdir())}

    assert files(tmp_path / "part") == files(tmp_path / "full")
