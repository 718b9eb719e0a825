"""`attndsl compile --emit …` and `attndsl try` (and its old name `attndsl run`): outputs a user relies on."""
from __future__ import annotations

import numpy as np

from attndsl import stdlib
from attndsl.cli import main
from attndsl.commands.try_program import word_table
from attndsl.language.interpreter import evaluate
from attndsl.language.parser import parse_file
from attndsl.language.validate import compile_source

COPYING = next(p for p in stdlib.paths() if p.name == "copying.attn")


def test_emit_canonical_round_trips(capsys, tmp_path):
    assert main(["compile", str(COPYING), "--emit", "canonical"]) == 0
    canonical = capsys.readouterr().out
    path = tmp_path / "c.attn"
    path.write_text(canonical)
    assert parse_file(str(path)) == parse_file(str(COPYING))


def test_emit_python_is_standalone_and_equal(capsys):
    assert main(["compile", str(COPYING), "--emit", "python"]) == 0
    source = capsys.readouterr().out
    assert "import attndsl" not in source and "from attndsl" not in source
    namespace: dict = {}
    exec(compile(source, "emitted", "exec"), namespace)
    table = word_table("The cat sat. The cat sat on the mat.")
    for program in compile_source(COPYING.read_text()):
        got = namespace[f"program_{program.name}"](table.records())
        np.testing.assert_allclose(got, evaluate(program, table), atol=1e-12)


def test_emit_ast(capsys):
    assert main(["compile", str(COPYING), "--emit", "ast"]) == 0
    assert "Program(name='induction'" in capsys.readouterr().out


def test_run_prints_labelled_heatmap(capsys):
    assert main(["try", str(COPYING), "--program", "induction", "--text", "The cat sat. The cat ran."]) == 0
    out = capsys.readouterr().out
    assert "program induction" in out
    lines = [line for line in out.splitlines() if "│" in line]
    assert len(lines) == 8  # one row per token: The cat sat . The cat ran .
    assert lines[4].split()[1] == "The" and lines[4].rstrip().endswith("1:cat 1.00")


def test_run_is_a_hidden_alias_of_try_with_a_deprecation_note(capsys):
    from attndsl.cli import build_parser

    assert main(["run", str(COPYING), "--program", "induction", "--text", "The cat sat."]) == 0
    captured = capsys.readouterr()
    assert "program induction" in captured.out
    assert captured.err.strip() == "attndsl: 'attndsl run FILE.attn' is now 'attndsl try FILE.attn'; 'run' will be removed"
    listing = build_parser().format_help()
    assert "try        show a program's attention" in listing and "    run " not in listing


def test_run_unknown_program_is_a_clear_error(capsys):
    assert main(["try", str(COPYING), "--program", "nope", "--text", "hi"]) == 2
    assert "no program named 'nope'" in capsys.readouterr().err


def test_run_with_a_model_tokenizer(tmp_path, capsys):
    from tests.tiny import save_tiny

    model_dir = save_tiny("llama", tmp_path / "tiny-llama")
    assert main(["try", str(COPYING), "--program", "duplicate", "--model", str(model_dir), "--text", "the cat the cat"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "│" in line]
    assert rows and "program duplicate" in out
