"""Malformed programs: exact messages, and nothing but `AttnError`."""
from __future__ import annotations

import pytest

from attndsl.cli import main
from attndsl.errors import AttnError
from attndsl.language.validate import compile_source

from .golden_errors import GOLDEN


def test_at_least_25_golden_cases():
    assert len(GOLDEN) >= 25


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_message(name):
    source, expected = GOLDEN[name]
    with pytest.raises(AttnError) as caught:
        compile_source(source, f"{name}.attn")
    assert caught.value.render() == expected


def test_validator_reports_every_problem_at_once():
    _, expected = GOLDEN["several_problems"]
    assert expected.count("several_problems.attn:") == 4


def test_diagnostics_are_data():
    with pytest.raises(AttnError) as caught:
        compile_source(GOLDEN["unknown_feature"][0], "x.attn")
    (diag,) = caught.value.diagnostics
    assert (diag.path, diag.line, diag.column) == ("x.attn", 2, 10)
    assert diag.as_dict()["expected"] == "did you mean tok?"


@pytest.mark.parametrize("name", ["missing_brace", "string_vs_number", "duplicate_names", "bad_string_escape"])
def test_cli_compile_reports_errors_with_exit_2(name, tmp_path, capsys):
    source, expected = GOLDEN[name]
    path = tmp_path / f"{name}.attn"
    path.write_text(source)
    assert main(["compile", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected.replace(f"{name}.attn", str(path)) in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe\x00garbage", b"   \n# only a comment\n"],
    ids=["empty", "binary", "comment-only"],
)
def test_cli_compile_rejects_files_without_programs(content, tmp_path, capsys):
    path = tmp_path / "x.attn"
    path.write_bytes(content)
    assert main(["compile", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1:" in err and "Traceback" not in err


def test_cli_compile_missing_file(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "nope.attn")]) == 2
    assert "cannot read file" in capsys.readouterr().err
