"""Mutation fuzzer for the front end: hostile program files must end as `AttnError`.

Seeds are the standard library (whole files and single programs), programs
shaped like the search's libraries (`library_seeds`: weighted term-pool terms
with gates and word sets), a few syntax programs, and any extra ``.attn``
files given.  Each input is a seed changed by one to three mutations
(`MUTATIONS`): byte flips, odd bytes and snippets, splices of two seeds,
deep nesting and long chains near and far past the parser's limits, huge
numbers, Unicode oddities (lone-surrogate escapes, raw surrogates through
the str API, separators, BOM) and CR / LF / CRLF mixes.

`check_input` runs one input through the whole front end and classifies it:

- ``rejected``: an `AttnError` whose diagnostics have a position and render as UTF-8;
- ``accepted``: every program validated, and the module (and, for all parsed
  modules, the canonical text) round-trips: ``parse(print(m)) == m``; the
  emitted Python compiles and equals the reference interpreter on two token
  tables; the kernels' bytecode encodes and evaluates equal to it too;
- a *failure* otherwise, named ``stage: ExceptionType at file:function``.

Used by ``tests/test_fuzz.py`` (a CI-sized run) and ``python -m benchmarks
fuzz`` (the long run, which prints inputs per second, the slowest input and
every failure class).
"""
from __future__ import annotations

import random
import signal
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from attndsl import stdlib
from attndsl.extraction.batch import TokenBatch
from attndsl.commands.try_program import word_table
from attndsl.language.emit import emit_module, python_name
from attndsl.errors import AttnError
from attndsl.extraction.features import TokenTable
from attndsl.language.interpreter import evaluate
from attndsl.language.parser import MAX_DEPTH, MAX_FACTORS, decode_source, parse
from attndsl.language.printer import format_module
from attndsl.language.validate import check

#: inputs slower than this count as failures of the long run; an input's time
#: is the smaller of its wall-clock and its process CPU time, so that a busy
#: shared machine (other processes holding the cores) does not count as slow
SLOW_S = 2.0
#: an input still running after this long is stopped and counted as a failure
HANG_S = 30.0

TEXTS = (
    "The cat sat. The cat sat on the mat.",
    'Lily said, "7 dogs!"\nThe end, don\'t go?',
)


def token_tables() -> list[TokenTable]:
    """Two small tables with (made-up, deterministic) syntax annotations, so
    syntax programs evaluate too."""
    upos = ("DET", "NOUN", "VERB", "ADP", "PUNCT", "PROPN")
    deps = ("det", "nsubj", "ROOT", "prep", "punct", "obj")
    out = []
    for text in TEXTS:
        table = word_table(text)
        n = len(table)
        out.append(table.with_syntax([upos[i % 6] for i in range(n)], [deps[(3 * i) % 6] for i in range(n)],
                                     [max(i - 1, 0) if i % 4 else -1 for i in range(n)]))
    return out


# ------------------------------------------------------------------ seeds

SYNTAX_SEEDS = (
    'program syntax_subject {\n    uses syntax\n    fallback self\n'
    '    0.8 * nearest(upos(k) == "NOUN" and dep(k) in {"nsubj", "obj"})\n'
    '    + 0.2 * [head(q) == k] * [upos(q) != "PUNCT"]\n}\n',
    'program syntax_head {\n    uses syntax\n    1 * [head(k) == q] + 0.5 * first(dep(k) == "ROOT")\n}\n',
)


def _split_programs(source: str) -> list[str]:
    """The single programs of a file (text from one ``program`` to the next)."""
    starts = [i for i in range(len(source)) if source.startswith("program ", i) and (i == 0 or source[i - 1] == "\n")]
    return [source[a:b].strip() + "\n" for a, b in zip(starts, starts[1:] + [len(source)])]


def library_seeds(count: int = 40, seed: int = 0) -> list[str]:
    """Programs shaped like a search library: a few weighted term-pool terms
    (with gates, word conditions and small weights), as `program_source` writes them."""
    from attndsl.synthesis.search import GATES, gated, term_pool

    rng = random.Random(seed)
    words = ["the", "cat", "blew", "children", "could", "said", ",", "."]
    pool = term_pool()
    out = []
    for i in range(count):
        lines = []
        for _ in range(rng.randint(1, 5)):
            spec = rng.choice(pool)
            if rng.random() < 0.4:
                spec = gated(spec, rng.choice(GATES))
            weight = float(f"{rng.uniform(0.0005, 1.5):.3g}")
            lines.append(spec.text(weight))
        if rng.random() < 0.3:
            chosen = sorted(rng.sample(words, rng.randint(1, 6)))
            lines.append(f"0.0867 * [lower(k) in {{{', '.join(repr(w).replace(chr(39), chr(34)) for w in chosen)}}}]")
        fallback = rng.choice(["", "    fallback self\n", "    fallback uniform\n"])
        out.append(f"program lib_{i} {{\n{fallback}    " + "\n    + ".join(lines) + "\n}\n")
    return out


def seed_sources(extra: Iterable[str | Path] = ()) -> list[bytes]:
    texts = []
    for source in stdlib.sources().values():
        texts.append(source)
        texts.extend(_split_programs(source))
    texts.extend(library_seeds())
    texts.extend(SYNTAX_SEEDS)
    for path in extra:
        texts.append(Path(path).read_text(encoding="utf-8", errors="replace"))
    return [t.encode("utf-8") for t in texts]


# ------------------------------------------------------------------ mutations

ODD_BYTES = [b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\r", b"\r\n", b"\n", b"\t", b"\x0b", b"\x0c",
             b"\x1c", b"\x85", b"\xc2\x85", b"\xe2\x80\xa8", b'"', b"\\", b"#", b"{", b"}", b"[", b"]", b"(", b")", b",",
             b"-", b"*", b"/", b"=", b"<", b"!", b" ", b"\xf0\x9f\x98\x80", b"\xc3\xa9"]
SNIPPETS = [b" and ", b" or ", b"not ", b" * ", b" + ", b" - ", b"exp(", b"[", b"]", b"(", b")", b" in {", b"}",
            b'"\\ud800"', b'"\\udfff"', b'"\\ud83d\\ude00"', b'"\\u0000"', b'"\\q"', b'"\\', b"1e999", b"-1e999",
            b"1e-999", b"0.", b".5e+3", b"program x {", b"program {", b"uses syntax\n", b"fallback self\n",
            b"fallback nope\n", b"# comment", b"\r# cr comment\r", b"tok(k)", b"upos(k)", b"head(q)", b"nearest(",
            b"spread(", b"first(", b"same_tok(q, k)", b"sim(q, k)", b"k - 1", b"q + 99999999", b"pow(d, ",
            b"min(", b"d", b"q", b"k", b"true", b"false", b"==", b"!=", b"<=", b" in {}", b"not in {1, 2}"]
WRAPPERS = [("exp(", ")"), ("abs(", ")"), ("(", ")"), ("[", "]"), ("-", ""), ("not ", ""), ("[not ", "]"),
            ("min(d, ", ")"), ("(d + ", ")")]
CHAINS = [(" and ", "punct(k)", "[", "]"), (" or ", "k == 0", "[", "]"), (" + ", "d", "(", ")"),
          (" * ", "q", "(", ")"), (" - ", "1", "(", ")"), (" and ", "true", "[", "]"),
          (" * ", "[k <= q]", "", "")]


def _pos(rng: random.Random, data: bytes) -> int:
    return rng.randint(0, len(data))


def _depth(rng: random.Random) -> int:
    """Nesting depths near the limits, below them, and far past them."""
    choice = rng.random()
    if choice < 0.5:
        return max(1, MAX_DEPTH + rng.randint(-4, 3))
    if choice < 0.8:
        return rng.randint(1, MAX_DEPTH)
    if choice < 0.97:
        return rng.randint(MAX_DEPTH, 2 * MAX_DEPTH)
    return rng.randint(MAX_DEPTH, 3000)


def flip_bits(rng, data, seeds):
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def odd_byte(rng, data, seeds):
    i = _pos(rng, data)
    replace = rng.random() < 0.5 and i < len(data)
    return data[:i] + rng.choice(ODD_BYTES) + data[i + (1 if replace else 0):]


def snippet(rng, data, seeds):
    i = _pos(rng, data)
    return data[:i] + rng.choice(SNIPPETS) + data[i:]


def delete_span(rng, data, seeds):
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 16):]


def duplicate_span(rng, data, seeds):
    if not data:
        return data
    i = rng.randrange(len(data))
    j = min(len(data), i + rng.randint(1, 40))
    k = _pos(rng, data)
    return data[:k] + data[i:j] * rng.randint(1, 3) + data[k:]


def splice(rng, data, seeds):
    other = rng.choice(seeds)
    return data[:_pos(rng, data)] + other[_pos(rng, other):]


def nest(rng, data, seeds):
    """Wrap a stretch of the text (or ``d``) in many levels of one wrapper."""
    left, right = rng.choice(WRAPPERS)
    n = _depth(rng)
    inner = rng.choice([b"d", b"k == 0", b"true", b"tok(k)"])
    chunk = left.encode() * n + inner + right.encode() * n
    if rng.random() < 0.5:
        return f"program deep {{\n    1 * ".encode() + chunk + b"\n}\n"
    i = _pos(rng, data)
    return data[:i] + chunk + data[i:]


def chain(rng, data, seeds):
    """A long chain of one operator (operands or factors) near or past the limits."""
    op, operand, left, right = rng.choice(CHAINS)
    n = max(1, MAX_FACTORS + rng.randint(-2, 2)) if op == " * " and not left else _depth(rng)
    chunk = (left + op.join([operand] * n) + right).encode()
    if rng.random() < 0.6:
        return b"program long {\n    1 * " + chunk + b"\n}\n"
    i = _pos(rng, data)
    return data[:i] + chunk + data[i:]


def huge_number(rng, data, seeds):
    digits = [i for i, b in enumerate(data) if chr(b).isdigit()]
    number = rng.choice([
        b"1" * rng.randint(300, 5000), b"9" * 400 + b".5", b"1e999", b"1e-999", b"0." + b"0" * 400 + b"1",
        b"1e308", b"2e308", b"123456789012345678901234567890", b"1" + b"0" * 20, b"4.9e-324", b"0.0",
    ])
    if not digits:
        return data + number
    i = rng.choice(digits)
    j = i
    while j < len(data) and (chr(data[j]).isdigit() or data[j] in b".eE"):
        j += 1
    return data[:i] + number + data[j:]


def line_endings(rng, data, seeds):
    mode = rng.choice([b"\r", b"\r\n", b"mix"])
    if mode != b"mix":
        return data.replace(b"\r\n", b"\n").replace(b"\n", mode)
    parts = data.split(b"\n")
    return b"".join(p + rng.choice([b"\n", b"\r", b"\r\n"]) for p in parts[:-1]) + parts[-1]


def unicode_oddity(rng, data, seeds):
    odd = rng.choice([b'"\\ud800"', b'"\\udc00x"', b'"a\\ud83d"', b'"\\ud83d\\ude00"', b"\xe2\x80\xa8", b"\xef\xbb\xbf",
                      b"\xc2\xa0", b"\xf4\x8f\xbf\xbf", b"\xed\xb2\x80", b"\xe2\x80\x8b", b'"\xe2\x80\xa8"', b'"\x7f"'])
    i = _pos(rng, data)
    return data[:i] + odd + data[i:]


MUTATIONS: dict[str, Callable] = {f.__name__: f for f in (
    flip_bits, odd_byte, snippet, delete_span, duplicate_span, splice, nest, chain, huge_number, line_endings,
    unicode_oddity,
)}


def mutate(rng: random.Random, data: bytes, seeds: Sequence[bytes]) -> tuple[bytes, list[str]]:
    names = [rng.choice(list(MUTATIONS)) for _ in range(rng.choice([1, 1, 2, 3]))]
    for name in names:
        data = MUTATIONS[name](rng, data, seeds)
    return data, names


# ------------------------------------------------------------------ one input


class _Hang(Exception):
    pass


@dataclass
class Outcome:
    status: str  # accepted | rejected | failure
    seconds: float  # min(wall clock, process CPU time)
    failure: str = ""
    detail: str = ""
    wall_seconds: float = 0.0


class _Failure(Exception):
    """A failure of ``stage``: ``kind`` names its class, ``detail`` the instance."""

    def __init__(self, stage: str, kind: str, detail: str = ""):
        super().__init__(f"{stage}: {kind}")
        self.stage, self.kind, self.detail = stage, kind, detail


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "attndsl" in f.filename or "kernels" in f.filename] or frames
    if not ours:
        return "?"
    last = ours[-1]
    return f"{Path(last.filename).name}:{last.name}"


class Checker:
    """Runs inputs through the front end (tables and kernels prepared once)."""

    def __init__(self, kernels: bool = True):
        self.tables = token_tables()
        self.batch = TokenBatch.from_tables(self.tables)
        self.kernels = kernels
        if kernels:
            from attndsl.kernels import warmup

            warmup()

    def _stage(self, stage: str, fn, *args):
        try:
            return fn(*args)
        except (AttnError, _Failure, _Hang):
            raise
        except Exception as error:  # noqa: BLE001 - classifying is the point
            raise _Failure(stage, f"{type(error).__name__} at {_where(error)}", str(error)[:300]) from error

    def run(self, raw: bytes | str, path: str = "fuzz.attn") -> Outcome:
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            with np.errstate(all="ignore"):  # overflow is defined behaviour (non-finite -> 0)
                self._check(raw, path)
            status, failure, detail = "accepted", "", ""
        except AttnError as error:
            status, failure, detail = "rejected", "", ""
            problem = _bad_diagnostics(error)
            if problem:
                status, failure, detail = "failure", "render: bad diagnostic", problem
        except _Failure as error:
            status, failure, detail = "failure", f"{error.stage}: {error.kind}", error.detail
        except _Hang:
            status, failure, detail = "failure", f"hang: over {HANG_S:.0f} s", ""
        except RecursionError as error:  # pragma: no cover - only if a stage escaped _stage
            status, failure, detail = "failure", "RecursionError", str(error)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        return Outcome(status, min(wall, cpu), failure, detail, wall)

    def _check(self, raw: bytes | str, path: str) -> None:
        text = raw if isinstance(raw, str) else decode_source(raw, path)
        module = self._stage("parse", parse, text, path)
        canonical = self._stage("print", format_module, module)
        self._stage("print", canonical.encode, "utf-8")
        again = self._stage("reparse", parse, canonical, path)
        if again != module:
            raise _Failure("round-trip", "canonical: parse(print(m)) != m", canonical[:300])
        programs, problems = self._stage("validate", check, module, text)
        again_programs, _ = self._stage("validate", check, again, canonical)
        if again_programs != programs:
            raise _Failure("round-trip", "canonical: validated IR differs")
        if problems:
            raise AttnError(problems)
        if not programs:
            return
        source = self._stage("emit", emit_module, programs)
        self._stage("emit", source.encode, "utf-8")
        code = self._stage("compile-emitted", compile, source, "<emitted>", "exec")
        namespace: dict = {}
        self._stage("compile-emitted", exec, code, namespace)
        expected = {}
        for t, table in enumerate(self.tables):
            for program in programs:
                want = self._stage("interpreter", evaluate, program, table)
                got = self._stage("run-emitted", namespace[python_name(program)], table.records())
                if not np.allclose(got, want, rtol=1e-9, atol=1e-9):
                    raise _Failure("round-trip", f"emitted python differs from the interpreter ({program.name})")
                expected[t, program.name] = want
        if self.kernels:
            from attndsl.kernels import dense_blocks, evaluate_programs

            values = self._stage("kernels", evaluate_programs, programs, self.batch)
            for p, program in enumerate(programs):
                for t, block in enumerate(dense_blocks(values[p], self.batch)):
                    if not np.allclose(block, expected[t, program.name], rtol=1e-9, atol=1e-9):
                        raise _Failure("kernels", f"kernels differ from the interpreter ({program.name})")


def _bad_diagnostics(error: AttnError) -> str:
    if not error.diagnostics:
        return "no diagnostics"
    for d in error.diagnostics:
        if d.line < 1 or d.column < 1 or not d.path:
            return f"bad position {d.path}:{d.line}:{d.column}"
    try:
        error.render().encode("utf-8")
    except UnicodeEncodeError as problem:
        return f"diagnostic does not render as UTF-8: {problem}"
    return ""


# ------------------------------------------------------------------ a run


@dataclass
class FuzzReport:
    inputs: int = 0
    seconds: float = 0.0
    counts: Counter = field(default_factory=Counter)  # accepted / rejected / failure
    failures: dict[str, list[bytes]] = field(default_factory=dict)  # class -> first inputs
    failure_counts: Counter = field(default_factory=Counter)
    slowest_s: float = 0.0
    slowest_input: bytes = b""
    slowest_wall_s: float = 0.0
    over_slow: int = 0
    mutations: Counter = field(default_factory=Counter)

    def merge(self, other: "FuzzReport") -> "FuzzReport":
        """This report and ``other`` (a parallel worker's) as one: counts add,
        times are the larger, wall time is the longer of the two."""
        out = FuzzReport(self.inputs + other.inputs, max(self.seconds, other.seconds),
                         self.counts + other.counts, {}, self.failure_counts + other.failure_counts,
                         over_slow=self.over_slow + other.over_slow, mutations=self.mutations + other.mutations,
                         slowest_wall_s=max(self.slowest_wall_s, other.slowest_wall_s))
        for report in (self, other):
            for name, examples in report.failures.items():
                out.failures.setdefault(name, []).extend(examples[: 5 - len(out.failures.get(name, []))])
        slow = max((self, other), key=lambda r: r.slowest_s)
        out.slowest_s, out.slowest_input = slow.slowest_s, slow.slowest_input
        return out

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.inputs} inputs in {self.seconds:.1f} s ({self.rate:.0f} inputs/s); "
            f"accepted {self.counts['accepted']}, rejected with AttnError {self.counts['rejected']}, "
            f"failures {self.counts['failure']}",
            f"slowest input {self.slowest_s:.3f} s ({len(self.slowest_input)} bytes; min of wall and CPU time), "
            f"slowest wall clock {self.slowest_wall_s:.3f} s; over {SLOW_S:.0f} s: {self.over_slow}",
        ]
        if self.failure_counts:
            lines.append("failure classes:")
            for name, n in self.failure_counts.most_common():
                lines.append(f"  {n:6d}  {name}   e.g. {self.failures[name][0][:120]!r}")
        else:
            lines.append("failure classes: none")
        return "\n".join(lines)


def fuzz(inputs: int, seed: int = 0, extra: Iterable[str | Path] = (), kernels: bool = True,
         progress: Callable[[FuzzReport], None] | None = None, every: int = 5000) -> FuzzReport:
    """Run ``inputs`` mutated programs; the first pass feeds every seed unchanged."""
    rng = random.Random(seed)
    seeds = seed_sources(extra)
    checker = Checker(kernels=kernels)
    report = FuzzReport()
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _raise_hang)
    start = time.perf_counter()
    try:
        for i in range(inputs):
            if i < len(seeds):
                data, names = seeds[i], ["seed"]
            else:
                data, names = mutate(rng, rng.choice(seeds), seeds)
            raw: bytes | str = data
            if rng.random() < 0.05:  # the str API: undecodable bytes become lone surrogates
                raw = data.decode("utf-8", "surrogateescape")
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, HANG_S)
            try:
                outcome = checker.run(raw)
            finally:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            report.inputs += 1
            report.counts[outcome.status] += 1
            report.mutations.update(names)
            if outcome.seconds > report.slowest_s:
                report.slowest_s, report.slowest_input = outcome.seconds, data
            report.slowest_wall_s = max(report.slowest_wall_s, outcome.wall_seconds)
            if outcome.seconds > SLOW_S:
                report.over_slow += 1
            if outcome.status == "failure":
                report.failure_counts[outcome.failure] += 1
                report.failures.setdefault(outcome.failure, [])
                if len(report.failures[outcome.failure]) < 5:
                    report.failures[outcome.failure].append(data)
            if progress is not None and report.inputs % every == 0:
                report.seconds = time.perf_counter() - start
                progress(report)
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, previous)
    report.seconds = time.perf_counter() - start
    return report


def _raise_hang(signum, frame):
    raise _Hang()
