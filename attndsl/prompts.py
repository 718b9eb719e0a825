"""The prompts of the LLM program writer, and how its answers are read.

Three kinds of request, all OpenAI chat messages:

- the **first request** for a head: the full DSL reference, worked examples
  (programs with the attention patterns they explain), the head summary and
  the output format (programs in ```attn fenced blocks, each
  ``program NAME { ... }``, at most N per answer);
- the **repair request**: the conversation so far, the model's answer, each
  broken program with its rendered diagnostics (`AttnError.render()`, the same
  text a user sees) and "fix these";
- the **refinement request**: the best program so far with its synthesis IoU,
  and the sequences where it fits best and worst (tokens, and for the rows
  where they disagree, the head's top key beside the program's).

`split_answer` reads an answer back into one source text per program, so that
one broken program cannot sink the others: it tolerates prose around the
fences, several blocks, a missing closing fence and no fences at all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Sequence

from . import ir
from .summary import HeadSummary, show_token

REFERENCE_PACKAGE = "attndsl"
REFERENCE_PATH = "data/dsl_reference.md"

#: (the pattern a head shows, a program that explains it); every one must compile
WORKED_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Previous-token head: almost all mass on k = q-1 (mass on the previous token near 1, "
        "top pairs all at d=1); q = 0 has no previous token, so the row falls back to itself.",
        "program previous_token {\n    fallback self\n    1 * [k == q - 1]\n}",
    ),
    (
        "Attention sink with a little local attention: most mass on key 0, the rest decaying with distance.",
        "program sink_and_recent {\n    0.7 * [k == 0]\n    + 0.3 * exp(-0.5 * d)\n}",
    ),
    (
        "Induction head: attends to the token right after an earlier occurrence of the current token "
        "(high mass on tok(k-1) == tok(q)); otherwise to the sink.",
        "program induction {\n    fallback first\n    0.8 * nearest(tok(k - 1) == tok(q))\n    + 0.2 * [k == 0]\n}",
    ),
    (
        "Punctuation head: attends to the most recent sentence-ending punctuation or newline, "
        "some mass on the first token.",
        'program last_sentence_end {\n    0.8 * nearest(tok(k) in {".", "!", "?"} or newline(k))\n    + 0.2 * [k == 0]\n}',
    ),
    (
        "Duplicate-token head: spreads its mass over earlier copies of the current token (same lower-case text); "
        "a bit on itself.",
        "program duplicate_token {\n    fallback self\n    0.9 * spread(same_lower(q, k) and k < q)\n    + 0.1 * [k == q]\n}",
    ),
    (
        "Word/sentence structure: attends to the first token of the current word when the query continues a word, "
        "and to the start of the current sentence otherwise.",
        "program word_then_sentence_start {\n    1 * [not word_start(q)] * first(same_word(q, k))\n"
        "    + 0.5 * [word_start(q)] * first(same_sent(q, k))\n    + 0.05 * [k == 0]\n}",
    ),
    (
        "Local window over content words: uniform over the last few alphabetic tokens, decaying by 1/(d+1).",
        "program recent_words {\n    fallback previous\n    1 * [alpha(k) and d >= 1 and d <= 4] * pow(d + 1, -1)\n}",
    ),
)


@lru_cache(maxsize=1)
def dsl_reference() -> str:
    """The full DSL reference shipped as ``attndsl/data/dsl_reference.md``.

    Until that file exists (or in a build without it) the reference is put
    together from the grammar, the vocabulary in `attndsl.ir` and the
    normative docstrings of the interpreter and the feature tables.
    """
    try:
        text = resources.files(REFERENCE_PACKAGE).joinpath(REFERENCE_PATH).read_text(encoding="utf-8")
        if text.strip():
            return text
    except (FileNotFoundError, OSError, ModuleNotFoundError):
        pass
    return _fallback_reference()


def _fallback_reference() -> str:
    from . import features, interpreter
    from .parser import grammar_text

    vocabulary = [
        f"- text features (compare with == != or `in {{...}}`): {', '.join(f'{n}(p)' for n in ir.STRING_FEATURES)}",
        f"- number features: {', '.join(f'{n}(p)' for n in ir.NUMBER_FEATURES)}",
        f"- condition features: {', '.join(f'{n}(p)' for n in ir.BOOL_FEATURES)}",
        f"- cross conditions: {', '.join(f'{n}(a, b)' for n in ir.CROSS_BOOL_FEATURES)}; "
        f"cross number: {', '.join(f'{n}(a, b)' for n in ir.CROSS_NUMBER_FEATURES)}",
        f"- syntax features (only with `uses syntax`): {', '.join(f'{n}(p)' for n in ir.SYNTAX_FEATURES)}",
        f"- functions: {', '.join(f'{n}/{a}' for n, a in ir.FUNCTIONS.items())}",
        f"- selections (a whole factor of a term): {', '.join(f'{n}(condition)' for n in ir.SELECTIONS)}",
        f"- fallbacks: {', '.join(ir.FALLBACKS)}",
        "- names: q (query position), k (key position), d (= q - k), true, false.",
        "- a position p is q or k plus or minus a whole number: tok(k-1), pos(q+1). Reads outside the sequence give "
        '"" / -1 / false.',
        "- [condition] is 1 where the condition holds, else 0.",
    ]
    return "\n".join(
        [
            "# The attention DSL",
            "",
            "## Grammar (Lark)",
            "```",
            grammar_text().strip(),
            "```",
            "",
            "## Vocabulary",
            *vocabulary,
            "",
            "## Meaning",
            (interpreter.__doc__ or "").strip(),
            "",
            "## Token features",
            (features.__doc__ or "").split("Definitions (normative; the DSL reference repeats them):")[-1].strip(),
        ]
    )


def worked_examples() -> str:
    blocks = []
    for pattern, source in WORKED_EXAMPLES:
        blocks.append(f"Pattern: {pattern}\n```attn\n{source}\n```")
    return "\n\n".join(blocks)


def output_format(n_programs: int) -> str:
    return (
        f"Answer with up to {n_programs} different programs that could explain this head, best guess first. "
        "Put each program in its own fenced block that starts with ```attn, and write each one as "
        "`program NAME { ... }` with a unique NAME made of lower-case letters, digits and underscores. "
        "Start each program with a `#` comment giving your hypothesis in one line. "
        "Weights are plain numbers; the row is normalised for you, so only their ratios matter. "
        "Text outside the fenced blocks is ignored."
    )


SYSTEM_PROMPT = (
    "You are an interpretability researcher. You explain what an attention head of a transformer language model "
    "does by writing short programs in a small attention DSL. A program maps a token sequence to a causal, "
    "row-stochastic attention matrix; it is scored by soft IoU against the head's real attention on held-out text. "
    "Write programs that are simple, general and readable: they are explanations, not memorised data."
)


def program_messages(summary: HeadSummary, n_programs: int, syntax_available: bool = False) -> list[dict]:
    """The first request for one head."""
    syntax = (
        "Syntax features (upos, dep, head) are available if a program declares `uses syntax`."
        if syntax_available
        else "Syntax features (upos, dep, head) are NOT available in this run: do not use them."
    )
    user = "\n\n".join(
        [
            "# DSL reference",
            dsl_reference(),
            "# Worked examples",
            worked_examples(),
            "# The head to explain",
            summary.text,
            "# Your task",
            f"Write programs that reproduce this head's attention pattern. {syntax}",
            output_format(n_programs),
        ]
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class BrokenProgram:
    """A program from an answer that did not compile, with its diagnostics."""

    source: str
    diagnostics: str  # AttnError.render()


def repair_messages(conversation: Sequence[dict], answer: str, broken: Sequence[BrokenProgram],
                    n_valid: int, n_programs: int) -> list[dict]:
    """The conversation, the model's answer, then what was wrong with it."""
    if not answer.strip():
        problem = "Your answer was empty."
    elif not broken:
        problem = "Your answer contained no program."
    else:
        parts = [f"{len(broken)} of your programs did not compile:"]
        for i, item in enumerate(broken, 1):
            parts.append(f"## Broken program {i}\n```attn\n{item.source.strip()}\n```\nErrors:\n```\n{item.diagnostics}\n```")
        problem = "\n\n".join(parts)
    kept = f" Your {n_valid} valid program(s) are kept; do not repeat them." if n_valid else ""
    request = (
        f"{problem}\n\nFix these problems.{kept} Answer with the corrected programs only, "
        f"at most {n_programs}, in the same format: each in its own ```attn block as `program NAME {{ ... }}`."
    )
    return list(conversation) + [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": request},
    ]


@dataclass(frozen=True)
class RowFit:
    """One query row: the head's strongest key and the program's."""

    query: int
    real_key: int
    real_weight: float
    program_key: int
    program_weight: float


@dataclass(frozen=True)
class SequenceFit:
    """How one program fits the head on one synthesis sequence."""

    sequence: int
    iou: float
    tokens: tuple[str, ...]
    rows: tuple[RowFit, ...]


def _show_sequence(fit: SequenceFit, max_tokens: int = 48, max_rows: int = 10) -> str:
    toks = fit.tokens
    shown = " ".join(f"{i}:{show_token(t, 10)[1:-1]}" for i, t in enumerate(toks[:max_tokens]))
    if len(toks) > max_tokens:
        shown += f" … ({len(toks)} tokens)"
    differ = [r for r in fit.rows if r.real_key != r.program_key]
    visible = [r for r in differ if r.query < max_tokens]
    visible.sort(key=lambda r: (-(r.real_weight - r.program_weight), r.query))
    lines = [f"Sequence {fit.sequence} (IoU {fit.iou:.3f}): {shown}"]
    if not differ:
        lines.append("  the top key agrees on every row.")
    elif not visible:
        lines.append(f"  the top keys differ on {len(differ)} of {len(fit.rows)} rows, all after the tokens shown.")
    else:
        lines.append(f"  the top keys differ on {len(differ)} of {len(fit.rows)} rows; among the tokens shown "
                     "(strongest disagreements):")
        for r in sorted(visible[:max_rows], key=lambda r: r.query):
            lines.append(
                f"  q={r.query} {show_token(toks[r.query])}: head -> k={r.real_key} {show_token(toks[r.real_key])} "
                f"({r.real_weight:.2f}); program -> k={r.program_key} {show_token(toks[r.program_key])} "
                f"({r.program_weight:.2f})"
            )
    return "\n".join(lines)


def refinement_messages(summary: HeadSummary, best_source: str, best_iou: float,
                        best: Sequence[SequenceFit], worst: Sequence[SequenceFit],
                        n_programs: int, syntax_available: bool = False) -> list[dict]:
    """A fresh request: the head again, the best program so far, where it fits and fails."""
    first = program_messages(summary, n_programs, syntax_available)
    evidence = []
    if worst:
        evidence.append("Sequences where it fits worst:\n" + "\n".join(_show_sequence(f) for f in worst))
    if best:
        evidence.append("Sequences where it fits best:\n" + "\n".join(_show_sequence(f) for f in best))
    user = "\n\n".join(
        [
            first[1]["content"],
            "# The best program so far",
            f"Mean soft IoU on the synthesis sequences: {best_iou:.3f} (1 = perfect).\n```attn\n{best_source.strip()}\n```",
            *evidence,
            "# Refine",
            "Write improved programs that keep what this program gets right and fix where it fails. "
            + output_format(n_programs),
        ]
    )
    return [first[0], {"role": "user", "content": user}]


# ------------------------------------------------------------------ reading answers

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_HEADER_RE = re.compile(r"\bprogram\s+[A-Za-z_][A-Za-z0-9_]*\s*\{")
_NAME_RE = re.compile(r"(\bprogram\s+)([A-Za-z_][A-Za-z0-9_]*)(?=\s*\{)")


def code_blocks(answer: str) -> list[str]:
    """The fenced code of an answer; the whole answer when it has no fences."""
    blocks = [m.group(2) for m in _FENCE_RE.finditer(answer)]
    if blocks:
        return blocks
    return [answer]


def split_answer(answer: str) -> list[str]:
    """One source text per program found in an answer.

    Programs are cut at their ``program NAME {`` header and end at the brace
    that closes it (braces in strings and comments do not count).  A program
    whose braces never balance runs to the next header or the end of its
    block, so the validator reports what is wrong with it.  A fenced block
    with code but no header is returned whole, for the same reason.
    """
    fenced = bool(_FENCE_RE.search(answer))
    out = []
    for block in code_blocks(answer):
        headers = [m.start() for m in _HEADER_RE.finditer(block)]
        if not headers:
            if fenced and _code_like(block):
                out.append(block.strip())
            continue
        for i, start in enumerate(headers):
            stop = headers[i + 1] if i + 1 < len(headers) else len(block)
            end = _closing_brace(block, start, stop)
            # keep a hypothesis comment written on the lines just above the header
            lead = _leading_comments(block, headers[i - 1] if i else 0, start)
            out.append(block[lead:end].strip())
    return [s for s in out if s]


def _code_like(block: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in block.splitlines())


def _closing_brace(text: str, start: int, stop: int) -> int:
    depth, i = 0, text.index("{", start)
    in_string = False
    while i < stop:
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"' or ch == "\n":
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "#":
            nl = text.find("\n", i)
            i = stop if nl < 0 else nl
            continue
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return stop


def _leading_comments(text: str, floor: int, start: int) -> int:
    """Start of the run of ``#`` comment lines directly above ``start``."""
    line_start = max(text.rfind("\n", floor, start) + 1, floor)
    if text[line_start:start].strip():
        return start
    begin = line_start
    while begin > floor:
        prev_end = begin - 1  # the newline that ends the line above
        prev_start = max(text.rfind("\n", floor, prev_end) + 1, floor)
        if not text[prev_start:prev_end].strip().startswith("#"):
            break
        begin = prev_start
    return begin


def _header(source: str):
    """The first ``program NAME {`` header that is not inside a comment."""
    for match in _NAME_RE.finditer(source):
        line_start = source.rfind("\n", 0, match.start()) + 1
        if "#" not in source[line_start:match.start()]:
            return match
    return None


def rename_program(source: str, new_name: str) -> str:
    """The same program source with its header's name replaced."""
    match = _header(source)
    if match is None:
        return source
    return source[: match.start(2)] + new_name + source[match.end(2):]


def program_name(source: str) -> str | None:
    match = _header(source)
    return match.group(2) if match else None
