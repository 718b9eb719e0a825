"""Damaged run directories: every command exits 2 with the damaged file's name, never a traceback.

One small finished run (a saved tiny random GPT-2, 8 sequences, the offline
search on one head) is made once; each case copies it, damages one file in
a way that keeps it plausible (valid JSON of the wrong shape, a CSV row
with a head the model lacks, bytes that are not UTF-8, …) and runs every
command that reads that file.  The undamaged copy must still pass, so the
checks cannot simply refuse everything.
"""
from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import pytest

from attndsl.cli import main

N_SEQUENCES = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.tiny import save_tiny

    return save_tiny("gpt2", tmp_path_factory.mktemp("model") / "tiny-gpt2")


def explain_argv(model_dir: Path, out: Path) -> list[str]:
    return ["explain", "--model", str(model_dir), "--out", str(out), "--max-sequences", str(N_SEQUENCES),
            "--max-tokens", "24", "--heads", "0.1", "--fractions", "0.25", "--no-progress",
            "--search", "enumerative"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_dir):
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert main(explain_argv(model_dir, out)) == 0
    return out


COMMANDS = {
    "report": lambda run, model: ["report", str(run)],
    "score": lambda run, model: ["score", str(run), "--no-progress"],
    "replace": lambda run, model: ["replace", str(run), "--fractions", "0.25", "--no-progress"],
    "synthesize": lambda run, model: ["synthesize", str(run), "--search", "enumerative", "--heads", "0.1",
                                      "--no-progress"],
    "explain": lambda run, model: explain_argv(model, run),
}


def cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# ------------------------------------------------------------------ damage


def edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def drop(key: str):
    return lambda d: {k: v for k, v in d.items() if k != key}


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def edit_record(run: Path, change) -> None:
    """Change the first record of sequences.jsonl and make meta.json's checksum agree (a careful forger)."""
    path = run / "attention" / "sequences.jsonl"
    lines = path.read_text().split("\n")
    lines[0] = json.dumps(change(json.loads(lines[0])))
    text = "\n".join(lines)
    path.write_text(text)
    edit_json(run / "attention" / "meta.json", lambda d: {**d, "sequences_crc32": zlib.crc32(text.encode())})


def truncate_lists(d: dict) -> dict:
    return {**d, "offsets": d["offsets"][:-1], "crc32": d["crc32"][:-1]}


def shift_offsets(d: dict) -> dict:
    return {**d, "offsets": [o + 3 for o in d["offsets"]]}


CHUNK, META, SEQUENCES = "attention/chunk-00000.json", "attention/meta.json", "attention/sequences.jsonl"
MANIFEST, LIBRARY_JSON = "manifest.json", "library/library.json"
BEST, LIBRARY_ATTN, REPLACEMENT = "library/best.csv", "library/library.attn", "replace/replacement.csv"
STORE_READERS = ("report", "score", "synthesize", "explain")

#: name → (file damaged, how, commands that read it, what the message must also say)
CASES = {
    "chunk index is a list": (CHUNK, lambda r: (r / CHUNK).write_text("[1, 2]"), STORE_READERS, "must be an object"),
    "chunk index lacks offsets": (CHUNK, lambda r: edit_json(r / CHUNK, drop("offsets")), STORE_READERS, "offsets"),
    "chunk index has short lists": (CHUNK, lambda r: edit_json(r / CHUNK, truncate_lists), STORE_READERS,
                                    "7 entries for 8 sequences"),
    "chunk offsets disagree with lengths": (CHUNK, lambda r: edit_json(r / CHUNK, shift_offsets), ("report", "score"),
                                            "do not match"),
    "chunk offset is a string": (CHUNK, lambda r: edit_json(r / CHUNK, lambda d: {**d, "bytes": "28800"}),
                                 ("report",), "bytes must be an integer"),
    "meta lengths one short": (META, lambda r: edit_json(r / META, lambda d: {**d, "lengths": d["lengths"][:-1]}),
                               (*STORE_READERS, "replace"), "'lengths' has 7 entries"),
    "meta n_layers is a string": (META, lambda r: edit_json(r / META, lambda d: {**d, "n_layers": "2"}),
                                  ("report", "score", "replace"), "n_layers must be an integer"),
    "meta is a list": (META, lambda r: (r / META).write_text("[]"), ("report", "score"), "not an attention store"),
    "meta has a 5,000-digit number": (META, lambda r: (r / META).write_text('{"format": ' + "9" * 5000 + "}"),
                                      ("report", "score", "synthesize"), "4300 digits"),
    "record ids are not a list": (SEQUENCES, lambda r: edit_record(r, lambda d: {**d, "ids": 7}), ("report", "score"),
                                  "ids must be a list"),
    "record has a token too few": (SEQUENCES, lambda r: edit_record(r, lambda d: {**d, "ids": d["ids"][:-1]}),
                                   ("report",), "token lists"),
    "manifest stages is a list": (MANIFEST, lambda r: edit_json(r / MANIFEST, lambda d: {**d, "stages": []}),
                                  ("report", "replace", "synthesize", "explain"), "stages must be an object"),
    "manifest completed is a string": (MANIFEST, lambda r: edit_json(r / MANIFEST, lambda d: {**d, "completed": "x"}),
                                       ("report", "replace", "synthesize", "explain"), "completed must be an object"),
    "manifest stage settings are a number": (MANIFEST, lambda r: edit_json(
        r / MANIFEST, lambda d: {**d, "stages": {**d["stages"], "extract": 3}}), ("report", "replace", "explain"),
        "stages.extract must be an object"),
    "manifest nested 100,000 deep": (MANIFEST, lambda r: (r / MANIFEST).write_text("[" * 100_000 + "]" * 100_000),
                                     ("report", "replace", "synthesize", "explain"), "nested too deeply"),
    "library.json is a list": (LIBRARY_JSON, lambda r: (r / LIBRARY_JSON).write_text("[]"), ("report", "score"),
                               "must be an object"),
    "library.json program name is a number": (LIBRARY_JSON, lambda r: (r / LIBRARY_JSON).write_text(
        '{"programs": [{"name": 5}]}'), ("score",), "programs[0].name must be a string"),
    "best.csv is not UTF-8": (BEST, lambda r: (r / BEST).write_bytes((r / BEST).read_bytes() + b"9,\xff\xfe\n"),
                              ("report", "replace", "explain"), "not UTF-8"),
    "best.csv has layer 99": (BEST, lambda r: replace_in(r / BEST, "\n1,3,", "\n99,3,"), ("report", "replace", "explain"),
                              "head L99H3 does not exist"),
    "best.csv has a 5,000-digit layer": (BEST, lambda r: replace_in(r / BEST, "\n1,3,", "\n" + "9" * 5000 + ",3,"),
                                         ("report", "replace"), "whole number"),
    "best.csv row is short": (BEST, lambda r: replace_in(r / BEST, "\n1,3,", "\n1\n1,3,"), ("report", "replace"),
                              "1 fields"),
    "best.csv lists a head twice": (BEST, lambda r: replace_in(r / BEST, "\n1,3,", "\n1,2,"), ("report", "replace"),
                                    "listed twice"),
    "best.csv IoU is not a number": (BEST, lambda r: replace_in(r / BEST, ",0.9", ",high"), ("report", "replace"),
                                     "from 0 to 1"),
    "library.attn is not UTF-8": (LIBRARY_ATTN, lambda r: (r / LIBRARY_ATTN).write_bytes(b"\xff" + (r / LIBRARY_ATTN).read_bytes()),
                                  ("report", "score", "replace", "explain"), "UTF-8"),
    "replacement.csv is not UTF-8": (REPLACEMENT, lambda r: (r / REPLACEMENT).write_bytes(
        (r / REPLACEMENT).read_bytes() + b"\xc3\x28\n"), ("report",), "not UTF-8"),
    "report.html is a directory": ("report.html", lambda r: ((r / "report.html").unlink(), (r / "report.html").mkdir()),
                                   ("report", "explain"), "is a directory"),
}
PARAMS = [pytest.param(case, command, id=f"{case} / {command}") for case, (_, _, commands, _) in CASES.items()
          for command in commands]


@pytest.mark.parametrize("case, command", PARAMS)
def test_damaged_run_is_exit_2_naming_the_file(case, command, reference, model_dir, tmp_path, capsys):
    damaged_file, damage, _, expected = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    damage(run)
    code, err = cli(COMMANDS[command](run, model_dir), capsys)
    assert code == 2, err
    assert str(run / damaged_file) in err
    assert expected in err
    assert "Traceback" not in err


def test_the_undamaged_run_still_passes_every_check(reference, model_dir, tmp_path, capsys):
    from attndsl.extraction.store import open_store

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    open_store(run).verify()
    for command in ("report", "score", "synthesize"):
        code, err = cli(COMMANDS[command](run, model_dir), capsys)
        assert code == 0, (command, err)


def test_unwritable_output_is_a_user_error_naming_it(reference, tmp_path, capsys, monkeypatch):
    """No permission to write (faked: the tests may run as root) and a file where a directory must be."""
    import tempfile

    run = tmp_path / "run"
    shutil.copytree(reference, run)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", refuse)
        code, err = cli(["report", str(run)], capsys)
    assert code == 2 and f"cannot write {run / 'report.html'}: Permission denied" in err
    assert "Traceback" not in err

    with monkeypatch.context() as patch:  # the rename fails after the data was written: no temporary left
        def fail_replace(src, dst):
            raise PermissionError(13, "Permission denied")

        patch.setattr("os.replace", fail_replace)
        code, err = cli(["report", str(run)], capsys)
    assert code == 2 and "report.html: Permission denied" in err
    assert not list(run.glob(".report.html.*.tmp"))

    (run / "scores").write_text("a file where the scores directory goes")
    mine = tmp_path / "mine.attn"
    mine.write_text("program sink { 1 * [k == 0] }\n")
    code, err = cli(["score", str(run), "--library", str(mine), "--no-progress"], capsys)
    assert code == 2 and f"cannot write {run / 'scores' / 'mine.best.csv'}" in err
    assert "Traceback" not in err


def test_a_run_directory_that_cannot_be_created(tmp_path, capsys, model_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = cli(["extract", "--model", str(model_dir), "--out", str(blocker / "run"), "--max-sequences", "2",
                     "--no-progress"], capsys)
    assert code == 2 and str(blocker / "run") in err and "Traceback" not in err


# ------------------------------------------------------------------ the schema helper


def test_conform_names_the_place_and_the_expectation():
    from attndsl.pipeline.rundir import Choice, Int, Map, conform

    schema = {"a": [Int(0)], "b?": (str, None), "c": Map({"d": Choice(("x", "y"))})}
    assert conform({"a": [0, 3], "c": {"k": {"d": "x"}}}, schema) is None
    assert conform({"a": [0, True], "c": {}}, schema) == "a[1] must be an integer >= 0, not true"
    assert conform({"a": [], "b": 4, "c": {}}, schema) == "b must be a string or null, not 4"
    assert conform({"a": [], "c": {"k": {"d": "z"}}}, schema) == 'c.k.d must be one of "x", "y", not "z"'
    assert conform({"c": {}}, schema) == "the top level lacks the key 'a'"
    assert conform([], schema).startswith("the top level must be an object with 'a', 'c'")
    assert conform(1, float) is None and conform(True, float) is not None
    assert conform([[1, 2], [3, "4"]], [[int]]) == '[1][1] must be an integer, not "4"'


def test_read_json_and_read_csv_turn_every_problem_into_a_user_error(tmp_path):
    from attndsl.errors import UserError
    from attndsl.pipeline.rundir import read_csv, read_json

    path = tmp_path / "x.json"
    for text, message in (("{", "not valid JSON"), ("1" * 5000, "4300 digits"), ("[" * 50_000 + "]" * 50_000,
                                                                                    "nested too deeply")):
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            read_json(path)
    with pytest.raises(UserError, match="is a directory"):
        read_json(tmp_path)
    with pytest.raises(UserError, match="is missing"):
        read_json(tmp_path / "nothing.json")
    table = tmp_path / "t.csv"
    table.write_text('a,b\n1,2\n\n3,"4\n5"\n6\n')
    rows = read_csv(table, ("a",))
    assert next(rows) == (2, {"a": "1", "b": "2"})
    assert next(rows) == (5, {"a": "3", "b": "4\n5"})
    with pytest.raises(UserError, match=r"t.csv:6: 1 fields, the header has 2"):
        next(rows)
    with pytest.raises(UserError, match="lacks the columns c"):
        list(read_csv(table, ("a", "c")))
