"""The spellings of a head's name: one named function per spelling, and where each is used.

A head is a pair (layer, head), both 0-based.  Four spellings exist, and all
four reach files or messages people already rely on, so none can be merged
into another without changing outputs; what this module gives is one place
that says which spelling goes where:

================  ===================  ==============================================
function          spelling             used for
================  ===================  ==============================================
`head_spec`       ``3.1``              what people type: ``--heads 3.1,4.*`` and the
                                       ``explain`` manifest's ``heads`` setting
`head_label`      ``L3H1``             text about a head: the ``heads`` / ``skipped``
                                       columns of the replacement CSV, error messages
`head_file_stem`  ``L3_H1``            per-head files of a run
                                       (``synthesis/heads/L3_H1.json``,
                                       ``programs/L3_H1.attn``) and the default name
                                       of a program the search writes for the head
`llm_name_prefix` ``l3_h1_``           the prefix of a program name the LLM writer
                                       gives (names must be DSL identifiers, which
                                       the library keeps as written)
================  ===================  ==============================================

The parse functions read back the spellings that appear in files
(`parse_head_label`, `parse_head_file_stem`); `head_spec` items are parsed
by the CLI checks (`attndsl.commands.args.head_spec`) and the synthesis
stage, which also accept ``LAYER.*``.
"""
from __future__ import annotations

import re

_LABEL = re.compile(r"L(\d+)H(\d+)")
_STEM = re.compile(r"L(\d+)_H(\d+)")


def head_spec(layer: int, head: int) -> str:
    """``3.1``: a head as written on the command line and in the ``explain`` settings."""
    return f"{layer}.{head}"


def head_label(layer: int, head: int) -> str:
    """``L3H1``: a head in text (replacement CSV columns, messages)."""
    return f"L{layer}H{head}"


def head_file_stem(layer: int, head: int) -> str:
    """``L3_H1``: the stem of a head's own files in a run (and the search's default program name)."""
    return f"L{layer}_H{head}"


def llm_name_prefix(layer: int, head: int) -> str:
    """``l3_h1_``: the prefix of the names of programs the LLM writer gives for the head."""
    return f"l{layer}_h{head}_"


def heads_text(heads) -> str:
    """Heads (objects with ``layer`` and ``head``) as `head_label`s separated by spaces."""
    return " ".join(head_label(h.layer, h.head) for h in heads)


def parse_head_label(text: str) -> tuple[int, int]:
    """(layer, head) of a `head_label`; ValueError for anything else."""
    match = _LABEL.fullmatch(text)
    if not match:
        raise ValueError(f"not a head label (L<layer>H<head>): {text!r}")
    return int(match[1]), int(match[2])


def parse_head_file_stem(text: str) -> tuple[int, int]:
    """(layer, head) of a `head_file_stem`; ValueError for anything else."""
    match = _STEM.fullmatch(text)
    if not match:
        raise ValueError(f"not a head file stem (L<layer>_H<head>): {text!r}")
    return int(match[1]), int(match[2])
