"""The HTML report, built from a hand-made run directory.

`make_fake_run` writes what the pipeline stages leave in a run: a real
attention store (tiny random Llama on the built-in corpus, via `extract`), a
library of standard-library programs, a ``best.csv`` whose scores are the
real held-out IoU of each head's program (so numbers in the page can be
checked), and a replacement CSV in `attndsl.pipeline.records`' format.  The browser
test uses the same fixture.
"""
from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from attndsl.errors import UserError

FAKE_PROGRAMS = """\
program sink {
    1 * [k == 0]
}

program previous {
    fallback self
    1 * [k == q - 1]
}

program current {
    1 * [k == q]
}

program uniform {
    1
}

program unused_local {
    1 * [d <= 4] * exp(-0.7 * d)
}
"""
ASSIGNED = ("sink", "previous", "current", "uniform")


#: the short tier of the fake run: layer 2's heads read the sink program, the others their full one
SHORT_LAYER = 2


def make_fake_run(path: Path, n_sequences: int = 10, kind: str = "llama", with_replacement: bool = True,
                  with_short: bool = False) -> Path:
    """A run directory with a store, a library, best.csv and (optionally) a replacement CSV and a
    short tier (best.csv's short_* columns: layer `SHORT_LAYER` gets the sink program)."""
    from attndsl.pipeline.records import ReplacementRow as Row, write_replacement_csv as write_csv
    from attndsl.extraction.extract import extract
    from attndsl.pipeline.records import BEST_COLUMNS
    from attndsl.pipeline.rundir import atomic_write_json, atomic_write_text, open_run
    from attndsl.synthesis.scoring import iou_dense, iou_dense_ignore_sink
    from attndsl.language.interpreter import evaluate
    from attndsl.language.validate import compile_source
    from tests.tiny import tiny_loaded

    store = extract(path, model=tiny_loaded(kind), corpus="builtin", max_sequences=n_sequences, progress=False)
    programs = {p.name: p for p in compile_source(FAKE_PROGRAMS)}
    library = path / "library"
    atomic_write_text(library / "library.attn", FAKE_PROGRAMS)
    atomic_write_json(library / "library.json", {"programs": [{"name": n} for n in programs]})
    open_run(path, "synthesize", {"search": "fake", "heads": None})
    heldout, synthesis = store.heldout_indices, store.synthesis_indices
    dense = {i: store.dense(i) for i in range(store.n_sequences)}
    tables = dict(zip(range(store.n_sequences), store.tables(range(store.n_sequences))))
    def table(short: bool) -> str:
        rows = []
        for layer in range(store.n_layers):
            for head in range(store.n_heads):
                name = ASSIGNED[(layer * store.n_heads + head) % len(ASSIGNED)]
                if short and layer == SHORT_LAYER:
                    name = "sink"

                def mean(indices, metric):
                    return float(np.mean([metric(dense[i][layer, head], evaluate(programs[name], tables[i])) for i in indices]))

                rows.append(
                    [layer, head, name, mean(synthesis, iou_dense), mean(heldout, iou_dense), mean(heldout, iou_dense_ignore_sink),
                     len(heldout), sum(store.lengths[i] for i in heldout)]
                )
        return ",".join(BEST_COLUMNS) + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)

    full = table(short=False)
    if with_short:  # best.csv's short_* columns (attndsl.synthesis.library.SHORT_COLUMNS)
        from attndsl.synthesis.library import SHORT_COLUMNS

        short = table(short=True).splitlines()
        lines = full.splitlines()
        merged = [lines[0] + "," + ",".join(SHORT_COLUMNS)]
        for row, short_row in zip(lines[1:], short[1:]):
            name, syn, held = short_row.split(",")[2:5]
            merged.append(f"{row},{name},{syn},{held}")
        full = "\n".join(merged) + "\n"
    atomic_write_text(library / "best.csv", full)
    if with_replacement:
        n_total = store.n_layers * store.n_heads
        points = []
        for fraction, programs_ppl, uniform_ppl in ((0.25, 410.0, 470.0), (0.5, 430.0, 520.0)):
            points.append(
                Row("ranked", fraction, round(fraction * n_total), round(fraction * n_total), 400.0, programs_ppl, uniform_ppl,
                    100 * (programs_ppl / 400 - 1), 100 * (uniform_ppl / 400 - 1), 0.5, len(heldout), 123, "L0H0")
            )
        write_csv(path / "replace" / "perplexity.csv", points)
    return path


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("report") / "run")


def page_data(html_text: str) -> dict:
    """The JSON the page inlines."""
    match = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', html_text, re.S)
    assert match, "the page has no inline data"
    return json.loads(match.group(1).replace("<\\/", "</"))


def test_report_is_self_contained_and_holds_every_section(fake_run):
    from attndsl.reporting.report import build_report

    path = build_report(fake_run)
    assert path == fake_run / "report.html"
    text = path.read_text(encoding="utf-8")
    # nothing fetched from anywhere: no external scripts, styles, images or fonts
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', text)
    assert "@import" not in text and "url(http" not in text
    assert "/*@" not in text  # every template marker replaced
    for section in ("heads-section", "library-section", "perplexity-section", "layers-section", "settings-section"):
        assert f'id="{section}"' in text
    assert len(text) < 1_000_000


def test_report_data_matches_the_run(fake_run):
    from attndsl.pipeline.records import read_best_csv as read_best
    from attndsl.reporting.report import build_report
    from attndsl.extraction.store import open_store

    data = page_data(build_report(fake_run).read_text(encoding="utf-8"))
    store = open_store(fake_run)
    best = read_best(fake_run / "library" / "best.csv")
    assert (data["n_layers"], data["n_heads"]) == (store.n_layers, store.n_heads)
    assert len(data["heads"]) == store.n_layers * store.n_heads
    row = next(h for h in data["heads"] if (h["layer"], h["head"]) == (1, 2))
    expected = next(b for b in best if (b.layer, b.head) == (1, 2))
    assert row["heldout_iou"] == pytest.approx(expected.heldout_iou, abs=1e-4)
    assert row["n_sequences"] == len(store.heldout_indices)
    assert data["programs"][row["program"]]["name"] == expected.program_name
    # library: four programs are someone's best, each for 3 of the 12 heads; five in the pool
    assert sorted(p["name"] for p in data["programs"]) == sorted(ASSIGNED)
    assert all(p["n_heads"] == 3 for p in data["programs"])
    assert data["library_size"] == 5
    assert "program previous" in next(p for p in data["programs"] if p["name"] == "previous")["source"]
    # perplexity rows and settings
    assert [p["fraction"] for p in data["perplexity"]] == [0.25, 0.5]
    assert data["perplexity"][0]["ppl_model"] == 400.0
    assert data["settings"]["extract"]["model"] == "tiny-llama"
    assert data["counts"]["heldout_sequences"] == [len(store.heldout_indices)]
    assert data["notes"] == []


def test_heatmaps_hold_the_real_and_the_program_attention(fake_run):
    from attndsl.reporting.report import build_report, choose_examples, decode_weights
    from attndsl.extraction.store import open_store

    data = page_data(build_report(fake_run, examples=2, max_tokens=12).read_text(encoding="utf-8"))
    store = open_store(fake_run)
    chosen = choose_examples(store, 2)
    assert [e["seq"] for e in data["examples"]] == chosen
    assert all(store.split[i] == "heldout" for i in chosen)
    assert [e["shown"] for e in data["examples"]] == [12, 12]
    blob = np.frombuffer(base64.b64decode(data["heatmaps"]), dtype=np.uint8)
    tri = 12 * 13 // 2
    assert blob.size == len(data["heads"]) * 2 * 2 * tri
    head_row = next(i for i, h in enumerate(data["heads"]) if (h["layer"], h["head"]) == (0, 1))  # program "previous"
    block = blob[head_row * 4 * tri:(head_row + 1) * 4 * tri]
    real = decode_weights(block[:tri])
    program = decode_weights(block[tri:2 * tri])
    rows, cols = np.tril_indices(12)
    truth = store.dense(chosen[0])[0, 1, :12, :12][rows, cols]
    assert np.allclose(real, truth, atol=0.01)
    # previous-token program: one-hot on k = q - 1 (k = q on the first row)
    expected = np.where(cols == np.maximum(rows - 1, 0), 1.0, 0.0)
    assert np.array_equal(program, expected)
    tokens = store.tables([chosen[0]])[0].tok[:12]
    assert data["examples"][0]["tokens"] == list(tokens)
    assert 0 <= data["example_iou"][head_row][0] <= 1


def test_report_of_an_unfinished_run_says_what_is_missing(tmp_path, fake_run):
    import shutil

    from attndsl.reporting.report import build_report

    run = tmp_path / "partial"
    shutil.copytree(fake_run, run, ignore=shutil.ignore_patterns("library", "replace", "report.html"))
    data = page_data(build_report(run).read_text(encoding="utf-8"))
    assert data["heads"] == [] and data["perplexity"] == [] and data["heatmaps"] == ""
    assert any("attndsl synthesize" in n for n in data["notes"])
    assert any("attndsl replace" in n for n in data["notes"])


def test_missing_run_and_bad_best_csv_are_user_errors(tmp_path, fake_run):
    import shutil

    from attndsl.reporting.report import build_report

    with pytest.raises(UserError, match="not an attndsl run"):
        build_report(tmp_path / "nowhere")
    run = tmp_path / "bad"
    shutil.copytree(fake_run, run)
    (run / "library" / "best.csv").write_text("layer,head\n0,0\n", encoding="utf-8")
    with pytest.raises(UserError, match="lacks the columns"):
        build_report(run)


def test_colour_map_matches_the_page_and_has_no_nan(fake_run):
    from attndsl.reporting.report import COLOUR_STOPS, MISSING_COLOUR, iou_colour

    assert iou_colour(0.0) == COLOUR_STOPS[0]
    assert iou_colour(1.0) == COLOUR_STOPS[-1]
    assert iou_colour(float("nan")) == MISSING_COLOUR
    middle = iou_colour(0.5)
    assert all(min(a, b) <= m <= max(a, b) for a, b, m in zip(COLOUR_STOPS[4], COLOUR_STOPS[5], middle))
    from attndsl.reporting.report import build_report

    match = re.search(r'<script id="report-data" type="application/json">(.*?)</script>',
                      build_report(fake_run).read_text(encoding="utf-8"), re.S)

    def reject(constant):
        raise AssertionError(f"the page data holds {constant}, which JSON.parse rejects")

    json.loads(match.group(1), parse_constant=reject)


def test_report_size_stays_bounded_for_270_heads():
    """270 heads x 3 examples x 40 tokens fits in a few MB (the encoding's size, computed)."""
    from attndsl.reporting.report import DEFAULT_EXAMPLES, DEFAULT_MAX_TOKENS

    tri = DEFAULT_MAX_TOKENS * (DEFAULT_MAX_TOKENS + 1) // 2
    raw = 270 * DEFAULT_EXAMPLES * 2 * tri
    assert math.ceil(raw / 3) * 4 < 2_000_000


def test_report_command_rebuilds_the_report(fake_run, tmp_path, capsys):
    from attndsl.commands import report as report_command
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    report_command.register(sub)
    out = tmp_path / "elsewhere.html"
    args = parser.parse_args(["report", str(fake_run), "--out", str(out), "--examples", "1"])
    assert args.func(args) == 0
    assert out.exists() and len(page_data(out.read_text(encoding="utf-8"))["examples"]) == 1
    assert str(out) in capsys.readouterr().out


# ------------------------------------------------------- explanations in the report


def test_report_opens_on_categories_with_glosses(fake_run):
    from attndsl.explanations.categories import CATEGORIES
    from attndsl.reporting.report import build_report

    data = page_data(build_report(fake_run).read_text(encoding="utf-8"))
    assert all(h["category"] in CATEGORIES and h["gloss"] for h in data["heads"])
    by_program = {"sink": "sink", "previous": "previous", "current": "self", "uniform": "uniform"}
    for h in data["heads"]:
        assert h["category"] == by_program[data["programs"][h["program"]]["name"]]
    counts = {c["key"]: c["count"] for c in data["categories"]}
    assert counts == {"sink": 3, "self": 3, "previous": 3, "uniform": 3}
    for c in data["categories"]:
        assert sum(c["per_layer"]) == c["count"]
        best = next(h for h in data["heads"] if [h["layer"], h["head"]] == c["best"])
        assert best["category"] == c["key"]
    assert data["heatmap_mode"] == "scroll"
    text = build_report(fake_run).read_text(encoding="utf-8")
    assert text.index('id="categories"') < text.index('id="grid"')  # the overview comes first


def _hostile_run(fake_run, tmp_path, text: str):
    """The fake run with one head's program holding ``text`` as a string, and ``text`` in the corpus name."""
    import shutil

    from attndsl.language.printer import format_string
    from attndsl.pipeline.rundir import read_json, atomic_write_json

    run = tmp_path / "hostile"
    shutil.copytree(fake_run, run)
    library = run / "library"
    hostile = f"program hostile {{\n    1 * [tok(k) == {format_string(text)}]\n}}\n"
    (library / "library.attn").write_text((library / "library.attn").read_text() + "\n" + hostile)
    lines = (library / "best.csv").read_text().splitlines()
    cells = lines[1].split(",")
    cells[2] = "hostile"
    lines[1] = ",".join(cells)
    (library / "best.csv").write_text("\n".join(lines) + "\n")
    manifest = read_json(run / "manifest.json")
    manifest["stages"]["extract"]["corpus"] = f"/data/{text}/stories.txt"
    atomic_write_json(run / "manifest.json", manifest)
    return run


@pytest.mark.parametrize("text", ["/*@COLOURS@*/", "<!--<script>", "</script><script>alert(1)</script>", "/*@DATA@*/ & <b>"])
def test_no_string_breaks_the_page(fake_run, tmp_path, text):
    from html.parser import HTMLParser

    from attndsl.reporting.report import build_report

    page = build_report(_hostile_run(fake_run, tmp_path, text)).read_text(encoding="utf-8")

    class Scripts(HTMLParser):
        def __init__(self):
            super().__init__()
            self.scripts, self.current = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "script":
                self.current = [dict(attrs), ""]

        def handle_data(self, data):
            if self.current is not None:
                self.current[1] += data

        def handle_endtag(self, tag):
            if tag == "script" and self.current is not None:
                self.scripts.append(self.current)
                self.current = None

    parser = Scripts()
    parser.feed(page)
    assert len(parser.scripts) == 2  # the data and the code, nothing more, nothing swallowed
    attrs, payload = parser.scripts[0]
    assert attrs.get("id") == "report-data"
    assert "<" not in payload and ">" not in payload and "&" not in payload
    data = json.loads(payload)
    hostile = next(p for p in data["programs"] if p["name"] == "hostile")
    assert json.dumps(text)[1:-1] in hostile["source"] or text in hostile["source"]
    assert text in data["settings"]["extract"]["corpus"]
    code = parser.scripts[1][1]
    assert "const COLOURS = {" in code and "/*@" not in code  # the template's own markers were replaced
    assert len(data["heads"]) == data["n_layers"] * data["n_heads"]
