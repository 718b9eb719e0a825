"""Bad command lines, damaged model files and hostile corpora: exit 2 naming the input, never a traceback.

Numbers and paths are refused by argparse ``type=`` checks
(`attndsl.commands.args`) before any work starts, so most cases need no run
at all; ranges that depend on the model (positions) and model-file integrity
(`attndsl.extraction.model_files`) use a saved tiny random GPT-2 and a tiny GGUF file
written with the ``gguf`` package.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attndsl.cli import main

COPYING = Path(__file__).resolve().parent.parent / "attndsl" / "stdlib" / "copying.attn"
BIG = "9" * 5000


def cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.tiny import save_tiny

    return save_tiny("gpt2", tmp_path_factory.mktemp("model") / "tiny-gpt2")


@pytest.fixture
def places(tmp_path):
    """Paths the command lines name: a fake run, a directory, a file, a file below a file."""
    run = tmp_path / "run"
    (run / "replace").mkdir(parents=True)
    (run / "replace" / "replacement.csv").write_text("the results of an earlier call\n")
    data = tmp_path / "items.jsonl"
    data.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    (tmp_path / "a-file").write_text("x")
    return {"RUN": str(run), "DIR": str(tmp_path), "DATA": str(data), "UNDER_FILE": str(tmp_path / "a-file" / "r.html"),
            "MISSING": str(tmp_path / "missing.attn"), "FILE": str(COPYING)}


#: (command line with placeholders, what stderr must say besides the flag)
BAD_LINES = [
    ("replace RUN --max-sequences -3", "--max-sequences"),
    ("replace RUN --max-sequences 0", "--max-sequences"),
    ("replace RUN --fractions 0.5,2", "--fractions"),
    ("replace RUN --fractions nan", "--fractions"),
    ("replace RUN --fractions ,", "--fractions"),
    ("replace RUN --max-head-cost -1", "--max-head-cost"),
    ("replace RUN --batch-size 0", "--batch-size"),
    ("run FILE --text a --max-tokens -1", "--max-tokens"),
    ("run FILE --text a --max-tokens 0", "--max-tokens"),
    (f"run FILE --text a --max-tokens {BIG}", "--max-tokens"),
    (f"extract --out RUN --max-sequences {BIG}", "--max-sequences"),
    ("extract --out RUN --max-sequences 1e3", "--max-sequences"),
    ("extract --out RUN --heldout-fraction nan", "--heldout-fraction"),
    ("extract --out RUN --heldout-fraction 1.5", "--heldout-fraction"),
    ("extract --out RUN --max-tokens 1", "--max-tokens"),
    ("extract --out RUN --batch-size -2", "--batch-size"),
    ("extract --out RUN --max-sentences 0", "--max-sentences"),
    (f"explain --out RUN --heads {BIG}.1", "--heads"),
    ("explain --out RUN --heads 1.2.3", "--heads"),
    ("explain --out RUN --heldout-fraction 1", "--heldout-fraction"),
    ("explain --out RUN --max-sequences -1", "--max-sequences"),
    ("explain --out RUN --fractions 0", "--fractions"),
    ("explain --out RUN --report-examples -1", "--report-examples"),
    ("explain --out RUN --batch-size 0", "--batch-size"),
    ("explain --out RUN --llm-model m --llm-concurrency 0", "--llm-concurrency"),
    (f"synthesize RUN --heads {BIG}.1", "--heads"),
    ("synthesize RUN --heads ,", "--heads"),
    ("synthesize RUN --heads 3.-1", "--heads"),
    ("synthesize RUN --seed -1", "--seed"),
    ("synthesize RUN --library-cap 0", "--library-cap"),
    ("synthesize RUN --max-terms 0", "--max-terms"),
    ("synthesize RUN --min-gain inf", "--min-gain"),
    ("synthesize RUN --screen-sequences 0", "--screen-sequences"),
    ("synthesize RUN --llm-concurrency 0", "--llm-concurrency"),
    ("synthesize RUN --llm-timeout nan", "--llm-timeout"),
    ("synthesize RUN --llm-max-tokens -5", "--llm-max-tokens"),
    ("score RUN --top-k 0", "--top-k"),
    ("score RUN --library DIR", "DIR is a directory"),
    ("score RUN --library MISSING", "MISSING does not exist"),
    ("qa RUN --data DIR", "DIR is a directory"),
    ("qa RUN --data DATA --fraction 0", "--fraction"),
    ("qa RUN --data DATA --fraction 1.5", "--fraction"),
    ("qa RUN --data DATA --fraction nan", "--fraction"),
    ("qa RUN --data DATA --batch-size 0", "--batch-size"),
    ("report RUN --out DIR", "DIR is a directory"),
    ("report RUN --out UNDER_FILE", "is not a directory"),
    ("report RUN --examples -1", "--examples"),
    ("report RUN --max-tokens 1", "--max-tokens"),
]


def fill(line: str, places: dict) -> list[str]:
    return [places.get(word, word) for word in line.split()]


@pytest.mark.parametrize("line, expected", BAD_LINES, ids=[line[:60] for line, _ in BAD_LINES])
def test_bad_command_line_is_exit_2_naming_the_input(line, expected, places, capsys):
    code, err = cli(fill(line, places), capsys)
    assert code == 2, err
    for name, value in places.items():
        expected = expected.replace(name, value)
    assert expected in err
    assert "Traceback" not in err
    assert (Path(places["RUN"]) / "replace" / "replacement.csv").read_text() == "the results of an earlier call\n"


def test_good_values_still_pass_the_checks():
    from attndsl.commands.args import fraction_list, head_spec, integer, number

    assert integer(1)("3") == 3 and integer()("-4") == -4
    assert number(0.0, 1.0)("0") == 0.0 and number(0.0, 1.0, low_open=True)("1") == 1.0
    assert fraction_list("0.1, 0.25,1") == (0.1, 0.25, 1.0)
    assert head_spec(" 3.4, 7.*") == "3.4,7.*"


def test_the_installed_entry_point_prints_no_traceback(places):
    """The real process: argparse's message on stderr, exit 2, replacement.csv untouched."""
    result = subprocess.run([sys.executable, "-m", "attndsl.cli", "replace", places["RUN"], "--max-sequences", "-3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "argument --max-sequences: must be an integer >= 1, not '-3'" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ ranges against the model


def test_max_tokens_beyond_the_model_positions_is_refused_before_work(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli(["extract", "--model", str(model_dir), "--out", str(out), "--max-tokens", "100000",
                     "--no-progress"], capsys)
    assert code == 2 and "--max-tokens 100000 is more than the 256 positions" in err
    assert not out.exists()


def test_max_positions_reads_either_config_spelling():
    from attndsl.extraction.model_files import max_positions
    from tests.tiny import tiny_gpt2, tiny_llama_gqa

    assert max_positions(tiny_gpt2()) == 256  # n_positions
    assert max_positions(tiny_llama_gqa()) == 256  # max_position_embeddings


@pytest.fixture(scope="module")
def extracted(model_dir, tmp_path_factory):
    from attndsl.extraction.extract import extract

    run = tmp_path_factory.mktemp("extracted") / "run"
    extract(run, model=str(model_dir), corpus="builtin", max_sequences=6, max_tokens=16, progress=False)
    return run


def test_score_library_that_is_a_binary_file(extracted, tmp_path, capsys):
    binary = tmp_path / "weights.attn"
    binary.write_bytes(bytes(range(256)) * 8)
    code, err = cli(["score", str(extracted), "--library", str(binary), "--no-progress"], capsys)
    assert code == 2 and str(binary) in err and "not UTF-8" in err and "Traceback" not in err


# ------------------------------------------------------------------ model files


def write_tiny_gguf(path: Path) -> Path:
    """A 1 MiB GGUF file (two float32 tensors) written by the gguf package."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_tensor("token_embd.weight", np.zeros((256, 512), np.float32))
    writer.add_tensor("output.weight", np.ones((256, 512), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def truncate(path: Path, size: int) -> None:
    data = path.read_bytes()
    assert size < len(data)
    path.write_bytes(data[:size])


def test_gguf_checks(tmp_path):
    from attndsl.errors import UserError
    from attndsl.extraction.model_files import check_gguf

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    check_gguf(path)  # complete: passes
    for size in (2**20, 4096, 10):
        truncate(path, size)
        with pytest.raises(UserError, match="not a readable GGUF file"):
            check_gguf(path)


def break_gguf_to_1mb(tmp: Path) -> Path:
    path = write_tiny_gguf(tmp / "tiny.gguf")
    truncate(path, 2**20)
    return path


def no_gguf_magic(tmp: Path) -> Path:
    path = tmp / "random.gguf"
    path.write_bytes(b"not a gguf file at all" * 100)
    return path


def model_copy(model_dir: Path, tmp: Path) -> Path:
    target = tmp / "model"
    shutil.copytree(model_dir, target)
    return target


def without_tokenizer(model_dir, tmp):
    target = model_copy(model_dir, tmp)
    for path in target.glob("tokenizer*"):
        path.unlink()
    return target


def truncated_safetensors(model_dir, tmp):
    target = model_copy(model_dir, tmp)
    weights = target / "model.safetensors"
    truncate(weights, weights.stat().st_size // 2)
    return target


def without_weights(model_dir, tmp):
    target = model_copy(model_dir, tmp)
    (target / "model.safetensors").unlink()
    return target


def missing_shard(model_dir, tmp):
    target = model_copy(model_dir, tmp)
    (target / "model.safetensors").rename(target / "model-00001-of-00002.safetensors")
    (target / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    return target


def truncated_tokenizer(model_dir, tmp):
    target = model_copy(model_dir, tmp)
    truncate(target / "tokenizer.json", 200)
    return target


#: name → (make the damaged model from the tiny one, path the message names (relative), what it says)
MODELS = {
    "gguf truncated to 1 MB": (lambda m, t: break_gguf_to_1mb(t), "tiny.gguf", "not a readable GGUF file"),
    "gguf without the magic": (lambda m, t: no_gguf_magic(t), "random.gguf", "not a readable GGUF file"),
    "directory without tokenizer files": (without_tokenizer, "model", "no tokenizer files"),
    "truncated safetensors": (truncated_safetensors, "model/model.safetensors", "damaged or truncated"),
    "directory without weights": (without_weights, "model", "no model weights"),
    "index names a missing shard": (missing_shard, "model/model-00002-of-00002.safetensors", "is missing"),
    "truncated tokenizer.json": (truncated_tokenizer, "model/tokenizer.json", "cannot load it"),
}


@pytest.mark.parametrize("case", MODELS)
def test_damaged_model_is_exit_2_naming_the_file(case, model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a GGUF would be converted into it
    make, named, expected = MODELS[case]
    spec = make(model_dir, tmp_path)
    code, err = cli(["try", str(COPYING), "--program", "induction", "--text", "the cat the cat",
                     "--model", str(spec)], capsys)
    assert code == 2, err
    assert str(tmp_path / named) in err and expected in err
    assert "Traceback" not in err


def test_the_intact_tiny_model_loads(model_dir, capsys):
    code, err = cli(["try", str(COPYING), "--program", "induction", "--text", "the cat the cat",
                     "--model", str(model_dir)], capsys)
    assert code == 0, err


# ------------------------------------------------------------------ corpora


@pytest.mark.parametrize("line, expected", [
    ('{"text": "a", "n": ' + BIG + "}", "4300 digits"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
], ids=["5,000-digit number", "100,000-deep nesting"])
def test_hostile_jsonl_corpus_line_is_exit_2_with_file_and_line(line, expected, model_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "The cat sat."}\n' + line + "\n")
    code, err = cli(["extract", "--model", str(model_dir), "--corpus", str(corpus), "--out", str(tmp_path / "run"),
                     "--no-progress"], capsys)
    assert code == 2 and f"{corpus}:2:" in err and expected in err
    assert "Traceback" not in err
