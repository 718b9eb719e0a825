"""The prompts of the LLM program writer, and how its answers are read.

Prompts are built for small models (a 1.5B code model with an 8k context):

- a **DSL card** instead of the long reference: the grammar in full (its
  comments stripped), a few lines of meaning and the feature vocabulary
  generated from `attndsl.language.ir` (so the card always names what the validator
  accepts);
- the **head summary** (`attndsl.synthesis.summary`), including the soft IoU of fixed
  patterns and the distance profile;
- **worked examples chosen far from the head**: each example is tagged with
  the summary statistic it would explain, and the head is shown the examples
  whose statistic is lowest for it, so a previous-token head never sees the
  previous-token program (it could only copy it);
- a **token budget** (`PromptBudget`), enforced: a request is assembled at
  the loosest trim level that fits (`TRIM_LEVELS`), trimming the least
  informative parts first — summary example pairs, then worked examples,
  then the key-token list, then the grammar — and a request that cannot fit
  is not sent (`PromptTooLong`).

Tokens are counted with a tokenizer when one is given (`TokenCounter`, any
Hugging Face tokenizer available offline), else estimated conservatively as
``ceil(chars / CHARS_PER_TOKEN)`` plus `MESSAGE_OVERHEAD_TOKENS` per message.
``CHARS_PER_TOKEN = 1.8`` is below what SmolLM2's 49k-token tokenizer
measures on these prompts (first prompts for heads on TinyStories text: 2.4
characters per token on whole messages, the lowest message 2.3; head
summaries alone, the densest part, 1.9–2.1), and larger-vocabulary
tokenizers such as Qwen2.5's use fewer tokens for the same text, so the
estimate over-counts.

Three kinds of request, all OpenAI chat messages:

- the **first request** for a head: card, examples, summary, output format;
- the **repair request**: that conversation, the programs of the model's
  answer (not its prose: echoed prompt text is not sent back), each broken
  program's diagnostics (`AttnError.render()`) and, where one is obvious, the
  nearest valid rewrite (`nearest_rewrite`);
- the **refinement request**: the first request, the best program so far
  with its synthesis IoU, and the sequences where it fits best and worst.

`split_answer` reads an answer back into one source text per program: only
fenced code blocks hold programs (or, in an answer without fences, text from
a line that starts with ``program``); prose and echoed prompt text around
them are ignored, never reported as syntax errors.

Why this module is over 400 lines: the three request kinds share the DSL card,
the trim levels of the budget and the reading of answers, which must change
together.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Callable, Sequence

from attndsl.language import ir, ops
from attndsl.errors import UserError
from attndsl.synthesis.summary import HeadSummary, show_token

REFERENCE_PACKAGE = "attndsl"
REFERENCE_PATH = "data/dsl_reference.md"

#: conservative characters per token for the estimate (see the module docstring)
CHARS_PER_TOKEN = 1.8
#: chat-template tokens per message (role markers, separators), for the estimate
MESSAGE_OVERHEAD_TOKENS = 8


# ------------------------------------------------------------------ budget and token counting


class TokenCounter:
    """Counts the tokens of chat messages: a tokenizer's count, or the documented estimate."""

    def __init__(self, encode: Callable[[str], int] | None = None, name: str = "estimate"):
        self._encode = encode
        self.name = name

    @classmethod
    def load(cls, tokenizer: str | None) -> "TokenCounter":
        """A counter from a Hugging Face tokenizer (hub id or local directory, offline only), or the estimate."""
        if not tokenizer:
            return cls()
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
        except Exception as error:  # any loading failure is the user's input being wrong
            raise UserError(f"cannot load the tokenizer '{tokenizer}' offline for the LLM prompt budget: "
                            f"{type(error).__name__}: {str(error)[:200]}") from error
        return cls(lambda text: len(tok(text, add_special_tokens=False)["input_ids"]), f"tokenizer:{tokenizer}")

    def text(self, text: str) -> int:
        if self._encode is not None:
            return int(self._encode(text))
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def messages(self, messages: Sequence[dict]) -> int:
        return sum(self.text(m.get("content") or "") + MESSAGE_OVERHEAD_TOKENS for m in messages)


@dataclass(frozen=True)
class PromptBudget:
    """How many tokens a request may hold: the context minus the room kept for the answer."""

    context_tokens: int = 8192
    answer_tokens: int = 1024
    max_prompt_tokens: int | None = None  # a tighter cap of one's own

    @property
    def prompt_tokens(self) -> int:
        room = self.context_tokens - self.answer_tokens
        return room if self.max_prompt_tokens is None else min(room, self.max_prompt_tokens)


class PromptTooLong(Exception):
    """Even the tightest trim of a request exceeds the budget (the request is not sent)."""

    def __init__(self, tokens: int, budget: int):
        super().__init__(f"the prompt needs {tokens} tokens even fully trimmed; the budget is {budget}")
        self.tokens, self.budget = tokens, budget


@dataclass(frozen=True)
class Trim:
    """One trim level: what a request shows."""

    summary_chars: int | None  # summary text budget (None: the whole summary)
    n_examples: int  # worked examples shown
    grammar: bool  # the grammar in the card
    evidence_sequences: int  # refinement: best and worst sequences shown (each)
    evidence_tokens: int  # refinement: tokens shown per sequence


#: loosest first; requests use the first level that fits the budget
TRIM_LEVELS: tuple[Trim, ...] = (
    Trim(None, 3, True, 1, 32),
    Trim(3000, 3, True, 1, 32),
    Trim(2200, 3, True, 1, 32),
    Trim(1600, 2, True, 1, 24),
    Trim(1200, 2, True, 1, 24),
    Trim(900, 1, True, 1, 16),
    Trim(700, 1, False, 1, 16),
    Trim(0, 0, False, 1, 12),
)


@dataclass(frozen=True)
class Prompt:
    """A request's messages and what they cost."""

    messages: list
    tokens: int
    budget: int
    level: int  # index into TRIM_LEVELS


def _fit(build: Callable[[Trim], list[dict]], counter: TokenCounter, budget: PromptBudget) -> Prompt:
    limit = budget.prompt_tokens
    tokens = 0
    for level, trim in enumerate(TRIM_LEVELS):
        messages = build(trim)
        tokens = counter.messages(messages)
        if tokens <= limit:
            return Prompt(messages, tokens, limit, level)
    raise PromptTooLong(tokens, limit)


# ------------------------------------------------------------------ the DSL card

#: one-line glosses for the card, from the feature table (features without a gloss are listed bare)
_GLOSS = {f.name: f.gloss for f in ops.FEATURES if f.gloss}


def _names(names: Sequence[str], arity: str) -> str:
    return ", ".join(f"{n}({arity}) {_GLOSS[n]}" if n in _GLOSS else f"{n}({arity})" for n in names)


#: Lark's tree-building notation, which means nothing to a program writer: ``-> alias`` names a tree
#: node (Qwen2.5-Coder-1.5B called ``weighted_term(…)``, ``unit_term(…)``, ``compare(… with …)`` and
#: ``mask_condition`` as if they were functions), ``?rule`` inlines a node, ``_STAR``/``_SLASH`` are
#: anonymous operator terminals.
_TREE_ALIAS = re.compile(r"\s*->\s*[A-Za-z_]+\s*$")
_ANONYMOUS_TERMINALS = {"_STAR": '"*"', "_SLASH": '"/"'}


def stripped_grammar() -> str:
    """The grammar as a program writer needs it: no comments, blank lines or Lark tree notation.

    It accepts exactly the same programs as the parser's grammar (only names
    of tree nodes and anonymous terminals are rewritten, and the lines marked
    ``// fast path``, a second way to read the same lexicons, are left out).
    """
    from attndsl.language.parser import grammar_text

    lines = []
    for line in grammar_text().splitlines():
        if "// fast path" in line:
            continue
        code = line.split("//", 1)[0].rstrip() if not line.lstrip().startswith("//") else ""
        code = _TREE_ALIAS.sub("", code)
        if re.match(r"\s*(_STAR|_SLASH)\s*:", code):
            continue
        for name, literal in _ANONYMOUS_TERMINALS.items():
            code = code.replace(name, literal)
        code = re.sub(r"^\?", "", code)
        code = re.sub(r"^(\s*)\?", r"\1", code)
        if code.strip():
            lines.append(code)
    return "\n".join(lines)


def dsl_card(grammar: bool = True, syntax_available: bool = False) -> str:
    """The compact DSL description every request carries (see the module docstring)."""
    parts = ["# The attention DSL"]
    if grammar:
        parts += ["Grammar (Lark):", "```", stripped_grammar(), "```"]
    parts += [
        "Meaning: for each query q, score(q,k) = sum of terms over keys k <= q; a term is a weight times "
        "factors joined by *, and only the first factor may be a number (write 0.5 * d, not d * 0.5). "
        "Negative scores become 0, each row is divided by its sum; an all-zero row goes to the fallback "
        f"({' | '.join(ir.FALLBACKS)}; default first = key 0). A program needs at least one term.",
        "Factors: [cond] is 1 where cond holds, else 0; nearest(cond) = 1 at the latest k where cond holds; "
        "first(cond) = 1 at the earliest; spread(cond) = 1/m over the m keys where it holds; number expressions "
        "such as d, exp(-0.5 * d), pow(d + 1, -1), len(k).",
        "Names: q, k (positions), d = q - k, true, false. Features are read at q, k or an offset "
        "(tok(k - 1), punct(q + 1)); outside the sequence they read \"\" / -1 / false.",
        "Text features (== != in {...}): " + _names(ir.STRING_FEATURES, "p") + ".",
        "Number features: " + _names(ir.NUMBER_FEATURES, "p") + ".",
        "Conditions: " + _names(ir.BOOL_FEATURES, "p") + "; "
        + _names(ir.CROSS_BOOL_FEATURES, "a, b") + ". Number: " + _names(ir.CROSS_NUMBER_FEATURES, "a, b") + ".",
        "Functions: " + ", ".join(f"{n}/{a}" for n, a in ir.FUNCTIONS.items())
        + "; comparisons == != < <= > >=; and, or, not; x in {\"a\", \"b\"}. "
        "No other names exist: call only the features and functions listed here.",
    ]
    if syntax_available:
        parts.append("Syntax (only after `uses syntax` on its own line): " + _names(ir.SYNTAX_FEATURES, "p") + ".")
    else:
        parts.append("Syntax features (" + ", ".join(ir.SYNTAX_FEATURES) + ") are NOT available in this run.")
    return "\n".join(parts)


@lru_cache(maxsize=1)
def dsl_reference() -> str:
    """The full DSL reference shipped as ``attndsl/data/dsl_reference.md`` (for people; prompts use `dsl_card`)."""
    text = resources.files(REFERENCE_PACKAGE).joinpath(REFERENCE_PATH).read_text(encoding="utf-8")
    return ops.with_feature_reference(text)


# ------------------------------------------------------------------ worked examples


@dataclass(frozen=True)
class Example:
    """A worked example: the pattern, a program that explains it, and how much a head shows that pattern."""

    pattern: str
    source: str
    resemblance: Callable[[dict], float]  # summary stats → 0..1 (high: the head looks like this example)


def _stat(stats: dict, name: str, default: float = 0.0) -> float:
    value = stats.get(name, default)
    return default if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _over_base(stats: dict, share: str, base: str) -> float:
    """How far a share exceeds its base rate, as 0..1."""
    s, b = _stat(stats, share), _stat(stats, base)
    return max(0.0, min(1.0, (s - b) / max(1e-9, 1.0 - b)))


#: every one must compile (a test checks)
EXAMPLES: tuple[Example, ...] = (
    Example("Previous-token head: most mass on k = q - 1; q = 0 falls back to itself.",
            "program previous_token {\n    fallback self\n    1 * [k == q - 1]\n}",
            lambda s: _stat(s, "mass_previous")),
    Example("Induction head: the token right after an earlier copy of the current token, else the sink.",
            "program induction {\n    0.8 * nearest(tok(k - 1) == tok(q) and k < q)\n    + 0.2 * [k == 0]\n}",
            lambda s: _stat(s, "mass_induction")),
    Example("Punctuation head: the latest sentence end, a little on the first token.",
            'program last_sentence_end {\n    0.8 * nearest(tok(k) in {".", "!", "?"} or newline(k))\n'
            "    + 0.2 * [k == 0]\n}",
            lambda s: _over_base(s, "punct_share", "punct_base_rate")),
    Example("Duplicate-token head: spread over earlier copies of the current word, a bit on itself.",
            "program duplicate_word {\n    fallback self\n    0.9 * spread(same_lower(q, k) and k < q)\n"
            "    + 0.1 * [k == q]\n}",
            lambda s: _stat(s, "mass_same_token")),
    Example("Word pieces: inside a word, the word's first token; at a word start, the sentence start.",
            "program word_then_sentence {\n    1 * [not word_start(q)] * first(same_word(q, k))\n"
            "    + 0.5 * [word_start(q)] * first(same_sent(q, k))\n}",
            lambda s: _stat(s, "mass_same_word")),
    Example("Recent content words: alphabetic tokens 1 to 4 back, nearer ones more.",
            "program recent_words {\n    fallback previous\n    1 * [alpha(k) and d >= 1 and d <= 4] * pow(d + 1, -1)\n}",
            lambda s: min(1.0, _stat(s, "dist_2") + _stat(s, "dist_3_4") + 0.5 * _stat(s, "dist_1"))),
    Example("Self and capitals: the current token, plus capitalised words earlier in the sentence.",
            "program self_and_names {\n    0.6 * [k == q]\n    + 0.4 * [cap(k) and same_sent(q, k) and k < q]\n}",
            lambda s: _stat(s, "mass_self")),
    Example("Sentence start with decay: the first token of the sentence, and distance-decayed context.",
            "program sentence_start_decay {\n    0.5 * first(same_sent(q, k))\n    + 0.5 * [k > 0] * exp(-0.3 * d)\n}",
            lambda s: min(1.0, _stat(s, "mass_first") * 0.5 + _stat(s, "dist_5_8") + _stat(s, "dist_9"))),
)

#: the examples most unlike the head are shown
N_EXAMPLES = 3


def choose_examples(summary: HeadSummary, n: int = N_EXAMPLES) -> list[Example]:
    """The ``n`` examples the head resembles least (ties: table order)."""
    ranked = sorted(range(len(EXAMPLES)), key=lambda i: (EXAMPLES[i].resemblance(summary.stats), i))
    return [EXAMPLES[i] for i in ranked[:n]]


def worked_examples(examples: Sequence[Example]) -> str:
    if not examples:
        return ""
    blocks = ["These examples only show the syntax; they are NOT this head's pattern, so do not copy them."]
    for ex in examples:
        blocks.append(f"{ex.pattern}\n```attn\n{ex.source}\n```")
    return "\n".join(blocks)


# ------------------------------------------------------------------ requests


def output_format(n_programs: int) -> str:
    return (
        f"Answer with up to {n_programs} different programs for this head, best guess first, each in its own "
        "```attn block as `program NAME { ... }` (NAME: lower-case letters, digits, _). Put a one-line `#` "
        "comment with your hypothesis on the first line inside each program. Only the ratios of weights matter. "
        "Do not repeat this prompt; text outside the blocks is ignored."
    )


SYSTEM_PROMPT = (
    "You explain what an attention head of a transformer language model does by writing short programs in a small "
    "attention DSL. A program maps a token sequence to a causal, row-stochastic attention matrix and is scored by "
    "soft IoU against the head's real attention. Write simple, general programs built on the evidence shown."
)


def _first_user(summary: HeadSummary, n_programs: int, syntax_available: bool, trim: Trim) -> str:
    examples = choose_examples(summary, trim.n_examples)
    parts = [dsl_card(trim.grammar, syntax_available)]
    if examples:
        parts += ["# Examples", worked_examples(examples)]
    parts += ["# The head to explain", summary.render(trim.summary_chars),
              "# Your task", "Write programs that reproduce this head's attention pattern. " + output_format(n_programs)]
    return "\n\n".join(parts)


def program_prompt(summary: HeadSummary, n_programs: int, syntax_available: bool = False,
                   budget: PromptBudget = PromptBudget(), counter: TokenCounter | None = None) -> Prompt:
    """The first request for one head, within the budget."""
    counter = counter or TokenCounter()
    return _fit(lambda trim: [{"role": "system", "content": SYSTEM_PROMPT},
                              {"role": "user", "content": _first_user(summary, n_programs, syntax_available, trim)}],
                counter, budget)


def program_messages(summary: HeadSummary, n_programs: int, syntax_available: bool = False,
                     budget: PromptBudget = PromptBudget(), counter: TokenCounter | None = None) -> list[dict]:
    """The messages of `program_prompt`."""
    return program_prompt(summary, n_programs, syntax_available, budget, counter).messages


@dataclass(frozen=True)
class BrokenProgram:
    """A program from an answer that did not compile, with its diagnostics and, if obvious, a valid rewrite."""

    source: str
    diagnostics: str  # AttnError.render()
    rewrite: str | None = None


def answer_programs(answer: str, limit_chars: int = 1200, max_programs: int = 8) -> str:
    """What of an answer goes back into a repair conversation: its distinct programs, fenced; else its start."""
    sources = list(dict.fromkeys(s.strip() for s in split_answer(answer)))[:max_programs]
    if sources:
        return "\n".join(f"```attn\n{s}\n```" for s in sources)
    text = answer.strip()
    return text if len(text) <= limit_chars else text[:limit_chars] + " …"


def _repair_text(answer: str, broken: Sequence[BrokenProgram], n_valid: int, n_programs: int) -> str:
    if not answer.strip():
        problem = "Your answer was empty."
    elif not broken:
        problem = "Your answer contained no program (programs go in ```attn blocks, each `program NAME { ... }`)."
    else:
        parts = [f"{len(broken)} of your programs did not compile:"]
        for item in broken:
            parts.append(f"```\n{item.diagnostics}\n```")
            if item.rewrite:
                parts.append(f"Nearest valid version (already kept; improve on it rather than repeat it):\n"
                             f"```attn\n{item.rewrite.strip()}\n```")
        problem = "\n".join(parts)
    kept = f" Your {n_valid} valid program(s) are kept; do not repeat them." if n_valid else ""
    return (f"{problem}\n\nFix these problems.{kept} Answer with corrected programs only, at most {n_programs}, "
            "each in its own ```attn block as `program NAME { ... }`. Do not send the same program again.")


def repair_prompt(summary: HeadSummary, first: Sequence[dict] | None, answer: str, broken: Sequence[BrokenProgram],
                  n_valid: int, n_programs: int, syntax_available: bool = False,
                  budget: PromptBudget = PromptBudget(), counter: TokenCounter | None = None,
                  conversation: Callable[[Trim], list[dict]] | None = None) -> Prompt:
    """The conversation (re-trimmed to fit), the answer's programs, then what was wrong with them.

    ``conversation(trim)`` rebuilds the conversation before the answer at a
    trim level (default: the first request for ``summary``); ``first`` is unused
    when it is given and kept for callers that pass the literal messages.
    """
    counter = counter or TokenCounter()
    assistant = {"role": "assistant", "content": answer_programs(answer)}
    user = {"role": "user", "content": _repair_text(answer, broken, n_valid, n_programs)}

    def build(trim: Trim) -> list[dict]:
        if conversation is not None:
            before = conversation(trim)
        else:
            before = [{"role": "system", "content": SYSTEM_PROMPT},
                      {"role": "user", "content": _first_user(summary, n_programs, syntax_available, trim)}]
        return list(before) + [assistant, user]

    return _fit(build, counter, budget)


def repair_messages(conversation: Sequence[dict], answer: str, broken: Sequence[BrokenProgram],
                    n_valid: int, n_programs: int) -> list[dict]:
    """Untrimmed repair messages after a literal conversation (kept for callers without a summary)."""
    return list(conversation) + [
        {"role": "assistant", "content": answer_programs(answer)},
        {"role": "user", "content": _repair_text(answer, broken, n_valid, n_programs)},
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


def _refine_user(summary: HeadSummary, best_source: str, best_iou: float, best: Sequence[SequenceFit],
                 worst: Sequence[SequenceFit], n_programs: int, syntax_available: bool, trim: Trim) -> str:
    n, width, rows = trim.evidence_sequences, trim.evidence_tokens, max(3, trim.evidence_tokens // 5)
    evidence = []
    if worst:
        evidence.append("Sequences where it fits worst:\n"
                        + "\n".join(_show_sequence(f, width, rows) for f in worst[:n]))
    if best:
        evidence.append("Sequences where it fits best:\n"
                        + "\n".join(_show_sequence(f, width, rows) for f in best[:n]))
    first = _first_user(summary, n_programs, syntax_available, trim)
    return "\n\n".join([
        first.rsplit("\n\n# Your task", 1)[0],
        "# The best program so far",
        f"Mean soft IoU on the synthesis sequences: {best_iou:.3f} (1 = perfect).\n```attn\n{best_source.strip()}\n```",
        *evidence,
        "# Your task",
        "Write improved programs that keep what this program gets right and fix where it fails. "
        + output_format(n_programs),
    ])


def refinement_prompt(summary: HeadSummary, best_source: str, best_iou: float,
                      best: Sequence[SequenceFit], worst: Sequence[SequenceFit], n_programs: int,
                      syntax_available: bool = False, budget: PromptBudget = PromptBudget(),
                      counter: TokenCounter | None = None) -> Prompt:
    """A fresh request: the head again, the best program so far, where it fits and fails."""
    counter = counter or TokenCounter()
    return _fit(lambda trim: refinement_conversation(summary, best_source, best_iou, best, worst, n_programs,
                                                     syntax_available, trim),
                counter, budget)


def refinement_conversation(summary, best_source, best_iou, best, worst, n_programs, syntax_available,
                            trim: Trim) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": _refine_user(summary, best_source, best_iou, best, worst, n_programs,
                                                     syntax_available, trim)}]


def refinement_messages(summary: HeadSummary, best_source: str, best_iou: float,
                        best: Sequence[SequenceFit], worst: Sequence[SequenceFit],
                        n_programs: int, syntax_available: bool = False) -> list[dict]:
    """The messages of `refinement_prompt` with the default budget."""
    return refinement_prompt(summary, best_source, best_iou, best, worst, n_programs, syntax_available).messages


def first_conversation(summary: HeadSummary, n_programs: int, syntax_available: bool, trim: Trim) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": _first_user(summary, n_programs, syntax_available, trim)}]


# ------------------------------------------------------------------ nearest valid rewrites

#: the term that puts a row where a fallback does (a program with no terms means exactly that)
_FALLBACK_TERM = {"first": "1 * [k == 0]", "self": "1 * [k == q]", "previous": "1 * [k == q - 1]", "uniform": "1"}


def nearest_rewrite(source: str, diagnostics: str, syntax_available: bool = False) -> str | None:
    """A valid program close to a broken one, where the fix is obvious; None otherwise.

    - no terms: the program means "every row on its fallback", so that is
      written out as a term (``fallback self`` → ``1 * [k == q]``);
    - unbalanced braces: the missing closing braces are added;
    - a syntax feature without ``uses syntax`` (when syntax is available):
      the declaration is added;
    - the slips a real small model made (Qwen2.5-Coder-1.5B, `benchmarks.bench_llm`):
      ``=`` for ``==`` (``[k = q - 1]``), a comparison used as a factor without
      its brackets (``0.8 * tok(q) == tok(k)`` → ``0.8 * [tok(q) == tok(k)]``)
      and a fallback name written as a term (``self`` → ``1 * [k == q]``) —
      fixed together, line by line;
    - a program body without its header (a fenced block, or terms under a
      ``# program NAME`` comment line): wrapped as ``program NAME { … }``;
    - a program with some terms that do not compile (most often an invented
      function, ``0.3 * weighted_term(…)``): the program with only the terms
      that do, if at least one does — the repair request shows it, so the
      model can restore what was dropped.
    Each rewrite is compiled before it is offered; the first that compiles wins.
    """
    from attndsl.errors import AttnError
    from attndsl.language.validate import compile_source

    candidates = []
    wrapped = _wrapped_body(source)
    if wrapped is not None:
        candidates.append(wrapped)
        slipped = _fix_slips(wrapped)
        if slipped != wrapped:
            candidates.append(slipped)
        source = slipped
    if "has no terms" in diagnostics:
        fallback = re.search(r"\bfallback\s+([A-Za-z_]+)", source)
        term = _FALLBACK_TERM.get(fallback.group(1) if fallback else "first", "1 * [k == 0]")
        end = source.rstrip().rfind("}")
        if end >= 0:
            candidates.append(source[:end].rstrip() + f"\n    {term}\n}}")
    opened, closed = source.count("{"), source.count("}")
    if opened > closed:
        candidates.append(source.rstrip() + "\n" + "}" * (opened - closed))
    slips = _fix_slips(source)
    if slips != source:
        candidates.append(slips)
    if syntax_available and "needs syntax" in diagnostics:
        header = _header(source)
        if header is not None:
            brace = source.index("{", header.end(2))
            candidates.append(source[: brace + 1] + "\n    uses syntax" + source[brace + 1:])
    salvaged = _valid_terms(slips if slips != source else source)
    if salvaged is not None:
        candidates.append(salvaged)
    for candidate in candidates:
        try:
            if len(compile_source(candidate, "<rewrite>")) == 1:
                return candidate
        except AttnError:
            continue
        except Exception:  # a rewrite must never break the writer (e.g. a front-end limit)
            continue
    return None


_DECLARATION = re.compile(r"^\s*(?:fallback|combine|mask|uses|lexicon)\b")


def _term_chunks(body: str) -> tuple[list[str], list[str]] | None:
    """A program body as (declaration lines, term chunks); a chunk is a line starting a term and its continuation lines.

    None when the body cannot be split by lines (a lexicon or a term spread
    over lines in a way this reading does not follow).
    """
    declarations, chunks, depth = [], [], 0
    for line in body.split("\n"):
        code = line.split("#", 1)[0]
        if not code.strip():
            if chunks:
                chunks[-1] += "\n" + line
            elif line.strip():
                declarations.append(line)  # the hypothesis comment stays with the program
            continue
        if depth == 0 and _DECLARATION.match(code):
            if "{" in code and "}" not in code:
                return None  # a lexicon over several lines
            declarations.append(line)
            continue
        starts_term = depth == 0 and (not chunks or code.lstrip()[:1] in "+-")
        if starts_term:
            chunks.append(line)
        elif chunks:
            chunks[-1] += "\n" + line
        else:
            return None
        depth += code.count("(") + code.count("[") + code.count("{") - code.count(")") - code.count("]") - code.count("}")
    return (declarations, chunks) if chunks else None


def _valid_terms(source: str) -> str | None:
    """``source`` without the terms that do not compile on their own (at least one kept, one dropped), or None."""
    from attndsl.language.validate import compile_source

    header = _header(source)
    if header is None:
        return None
    brace = source.find("{", header.end(2))
    end = source.rstrip().rfind("}")
    if brace < 0 or end <= brace:
        return None
    split = _term_chunks(source[brace + 1:end])
    if split is None:
        return None
    declarations, chunks = split
    head = source[: brace + 1]
    decls = "".join("\n" + d for d in declarations)

    def program(terms: Sequence[str]) -> str:
        body = "\n".join(terms).rstrip()
        return f"{head}{decls}\n{body}\n}}"

    def compiles(text: str) -> bool:
        try:
            return len(compile_source(text, "<rewrite>")) == 1
        except Exception:
            return False

    def as_first(chunk: str) -> str:
        stripped = chunk.lstrip()
        return chunk[: len(chunk) - len(stripped)] + stripped[1:].lstrip() if stripped.startswith("+") else chunk

    kept = [chunk for chunk in chunks if compiles(program([as_first(chunk)]))]
    if not kept or len(kept) == len(chunks):
        return None
    return program([as_first(kept[0])] + kept[1:])


_SINGLE_EQ = re.compile(r"(?<![=!<>])=(?![=])")
_BARE_COMPARISON = re.compile(r"^(\s*[+-]?\s*)((?:-?[0-9][0-9.eE+-]*\s*\*\s*)?)([^\[\]{}#]*?(?:==|!=|<=|>=|<|>)[^\[\]{}#]*?)\s*$")
_BARE_FALLBACK = re.compile(r"^(\s*[+-]?\s*)(?:(-?[0-9][0-9.eE+-]*)\s*\*\s*)?(first|self|previous|uniform)\s*$")


def _top_level_comparison(text: str) -> bool:
    """Whether ``text`` compares outside every parenthesis (``tok(q) == tok(k)``, not ``nearest(k < q)``)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and ch in "=!<>":
            return True
    return False


def _fix_slips(source: str) -> str:
    """`nearest_rewrite`'s line-by-line fixes of small models' slips (see there)."""
    out, depth = [], 0
    for line in source.split("\n"):
        code, hash_, comment = line.partition("#")
        stripped = code.strip()
        inside, depth = depth > 0, depth + sum(code.count(c) for c in "([") - sum(code.count(c) for c in ")]")
        if stripped.startswith(("program", "fallback", "combine", "mask", "uses", "lexicon", "}")) or not stripped:
            out.append(line)
            continue
        if '"' not in code:
            code = _SINGLE_EQ.sub("==", code)
        if inside:  # the continuation of a term begun above: only `=` is fixed here
            out.append(code + hash_ + comment)
            continue
        fallback = _BARE_FALLBACK.match(code)
        if fallback:
            weight, term = fallback.group(2), _FALLBACK_TERM[fallback.group(3)]
            code = fallback.group(1) + (term.replace("1 *", f"{weight} *", 1) if weight and term != "1" else (weight or term))
        else:
            bare = _BARE_COMPARISON.match(code)
            if bare and _top_level_comparison(bare.group(3)):
                code = f"{bare.group(1)}{bare.group(2)}[{bare.group(3).strip()}]"
        out.append(code + hash_ + comment)
    return "\n".join(out)


# ------------------------------------------------------------------ reading answers

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_HEADER_RE = re.compile(r"(?:^|(?<=\}))[ \t]*program\s+[A-Za-z_][A-Za-z0-9_]*\s*\{", re.MULTILINE)
_NAME_RE = re.compile(r"(\bprogram\s+)([A-Za-z_][A-Za-z0-9_]*)(?=\s*\{)")
#: fence tags whose blocks may hold programs (others, e.g. ```python, are someone else's code)
_PROGRAM_TAGS = {"", "attn", "attndsl", "dsl", "text", "plain", "plaintext"}
#: a block without a header that starts like a program body is shown to the validator
_BODY_START_RE = re.compile(r"^\s*(?:[-+]?\s*(?:\d|\.\d)|\[|fallback\b|uses\b|nearest\(|first\(|spread\()")


def code_blocks(answer: str) -> list[str]:
    """The fenced code of an answer that may hold programs; the whole answer when it has no fences."""
    matches = list(_FENCE_RE.finditer(answer))
    if matches:
        return [m.group(2) for m in matches if m.group(1).lower() in _PROGRAM_TAGS]
    return [answer]


def split_answer(answer: str) -> list[str]:
    """One source text per program found in an answer.

    Programs start at a line that begins with ``program NAME {`` (or right
    after the brace that closed the previous program) and end at
    the brace that closes it (braces in strings and comments do not count);
    text before, between and after programs is ignored, so prose and echoed
    prompt text never reach the validator.  A program whose braces never
    balance runs to the next header or the end of its fenced block (without
    fences: to the next blank line), so the validator reports what is wrong
    with it.  A fenced block with no header whose first code line looks like
    a program body (a weight, ``[``, ``fallback`` …) is returned whole for the
    same reason; any other header-less block is prose and ignored.  An
    answer with neither fences nor headers is read by `_commented_headers`.
    """
    fenced = bool(_FENCE_RE.search(answer))
    if not fenced and not _HEADER_RE.search(answer):
        return _commented_headers(answer)
    out = []
    for block in code_blocks(answer):
        headers = [m.start() for m in _HEADER_RE.finditer(block)]
        if not headers:
            if fenced and _body_like(block):
                out.append(block.strip())
            continue
        for i, start in enumerate(headers):
            stop = headers[i + 1] if i + 1 < len(headers) else len(block)
            if not fenced:
                blank = re.search(r"\n[ \t]*\n", block[start:stop])
                unbalanced_stop = start + blank.start() if blank else stop
            else:
                unbalanced_stop = stop
            end = _closing_brace(block, start, stop)
            if end is None:
                end = unbalanced_stop
            # keep a hypothesis comment written on the lines just above the header
            lead = _leading_comments(block, headers[i - 1] if i else 0, start)
            out.append(block[lead:end].strip())
    return [s for s in out if s]


_COMMENT_HEADER_RE = re.compile(r"^[ \t]*#[ \t]*program[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*:?[ \t]*$", re.MULTILINE)


def _commented_headers(answer: str) -> list[str]:
    """Bodies under ``# program NAME`` comment lines in an answer without fences or headers.

    Qwen2.5-Coder-1.5B answered head 7.7 of SmolLM2 this way (a comment line
    naming each program, its terms below, no braces). Each block runs from its
    comment line to the next blank line or comment header, and is kept only if
    its first code line looks like a program body; `nearest_rewrite` then
    wraps it in ``program NAME { … }``.
    """
    out = []
    matches = list(_COMMENT_HEADER_RE.finditer(answer))
    for i, match in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(answer)
        blank = re.search(r"\n[ \t]*\n", answer[match.start():stop])
        block = answer[match.start(): match.start() + blank.start() if blank else stop].strip()
        if _body_like(block):
            out.append(block)
    return out


def _wrapped_body(source: str) -> str | None:
    """A header-less program body wrapped as ``program NAME { … }`` (NAME from a ``# program NAME`` line)."""
    if _header(source) is not None or not _body_like(source):
        return None
    named = _COMMENT_HEADER_RE.search(source)
    name = named.group(1) if named else "unnamed"
    lines = [line for line in source.strip().split("\n") if not _COMMENT_HEADER_RE.fullmatch(line)]
    body = "\n".join("    " + line.strip() for line in lines)
    return f"program {name} {{\n{body}\n}}"


def _body_like(block: str) -> bool:
    for line in block.splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        return bool(_BODY_START_RE.match(text))
    return False


def _closing_brace(text: str, start: int, stop: int) -> int | None:
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
    return None


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


def rationale(source: str, limit: int = 200) -> str | None:
    """The program's one-line hypothesis: its first ``#`` comment (inside or just above it)."""
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("#"):
            text = text.lstrip("#").strip()
            if text:
                return text if len(text) <= limit else text[: limit - 1] + "…"
    return None
