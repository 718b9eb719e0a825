"""Programs as standalone Python: the human-facing explanation.

`emit_python(program)` returns the source of a module that defines
``program_<name>(tokens)``: given a list of token records (dicts keyed by
feature name, as `TokenTable.records()` makes them) it returns the n×n
attention matrix, computed one (q, k) pair at a time with plain Python and
NumPy only.  It is also the slow per-sequence baseline that benchmarks
compare the kernels against (the way the paper ran its programs).

The code follows the reference interpreter step for step: every ``*``, ``/``
and function result that is not finite becomes 0, terms are summed left to
right, negative scores clip to 0, rows are normalised, empty rows fall back;
``combine softmax`` programs take the softmax of the scores over the keys
their masks admit; lexicons become dicts keyed by lower-cased text.
"""
from __future__ import annotations

from attndsl.language import ir, ops
from attndsl.language.printer import format_number, format_string

_HEADER = '''\
import numpy as np

_PAD_TEXT, _PAD_NUMBER = "", -1.0


def _fin(x):
    """Arithmetic that overflows or is undefined counts as 0."""
    x = float(x)
    return x if np.isfinite(x) else 0.0


def _mul(a, b):
    return _fin(np.float64(a) * np.float64(b))


def _div(a, b):
    return _fin(np.float64(a) / np.float64(b))


def _add(a, b):
    return _fin(np.float64(a) + np.float64(b))


def _call(f, *args):
    return _fin(f(*(np.float64(a) for a in args)))


def _read(tokens, i, name, pad):
    """Feature `name` of token i, or the padding value outside the sequence."""
    return tokens[i][name] if 0 <= i < len(tokens) else pad


def _same(tokens, a, b, name):
    return 0 <= a < len(tokens) and 0 <= b < len(tokens) and tokens[a][name] == tokens[b][name]


def _sim(tokens, a, b):
    """Jaccard overlap of the two tokens' character buckets."""
    if not (0 <= a < len(tokens) and 0 <= b < len(tokens)):
        return 0.0
    x, y = tokens[a]["charset"], tokens[b]["charset"]
    union = bin(x | y).count("1")
    return bin(x & y).count("1") / union if union else 0.0


def _fallback_row(q, fallback):
    out = np.zeros(q + 1)
{fallbacks}
    return out


def _normalise(row, q, fallback):
    clipped = np.maximum(row, 0.0)
    total = clipped.sum()
    if total > 0 and np.isfinite(total):
        return clipped / total
    return _fallback_row(q, fallback)
'''

#: helpers only programs with ``combine softmax`` or masks need (linear programs
#: without masks do not carry them)
_SOFTMAX_HEADER = f'''

_LOGIT_BOUND = {ir.LOGIT_BOUND!r}  # softmax logits are clamped to +-this

def _softmax(row, allowed, q, fallback):
    """Softmax of the (clamped) logits over the admissible keys; no admissible key: the fallback."""
    if not allowed.any():
        return _fallback_row(q, fallback)
    row = np.clip(row, -_LOGIT_BOUND, _LOGIT_BOUND)
    top = row[allowed].max()
    weights = np.where(allowed, np.exp(row - top), 0.0)
    return weights / weights.sum()
'''



def _fallback_chain() -> str:
    """``if fallback == "first": …`` over the table's fallbacks (the last is the ``else``)."""
    lines = []
    for i, fb in enumerate(ops.FALLBACKS):
        head = "else:" if i == len(ops.FALLBACKS) - 1 else f"{'if' if i == 0 else 'elif'} fallback == {fb.name!r}:"
        head = head.replace("'", '"')
        lines += [f"    {head}", f"        {fb.statement}"]
    return "\n".join(lines)


_HEADER = _HEADER.replace("{fallbacks}", _fallback_chain())


def _pos(at: ir.At) -> str:
    if at.offset == 0:
        return at.var
    return f"{at.var} {'+' if at.offset > 0 else '-'} {abs(at.offset)}"


def _membership(operand: str, items: list[str], negated: bool) -> str:
    """``(x in (a, b))`` with a one-element tuple written ``(a,)``."""
    inside = ", ".join(items) + ("," if len(items) == 1 else "")
    return f"({operand} {'not in' if negated else 'in'} ({inside}))"


class _Emitter:
    def __init__(self) -> None:
        self.selections: list[tuple[str, ir.Select]] = []
        self.lexicons: list[tuple[str, ir.Lexicon]] = []

    def num(self, node: ir.Num) -> str:
        match node:
            case ir.Const(value=v):
                return format_number(float(v))
            case ir.Dist():
                return "(q - k)"
            case ir.Position(var=var):
                return var
            case ir.NumFeature(name=name, at=at):
                return f"_read(tokens, {_pos(at)}, {name!r}, _PAD_NUMBER)"
            case ir.Similarity(a=a, b=b):
                return f"_sim(tokens, {_pos(a)}, {_pos(b)})"
            case ir.Arith(op=op, left=left, right=right):
                return ops.ARITH[op].emit.format(self.num(left), self.num(right))
            case ir.Negate(operand=operand):
                return f"(-{self.num(operand)})"
            case ir.Func(name=name, args=args):
                return ops.FUNCTION[name].emit.format(*(self.num(a) for a in args))
            case ir.Indicator(condition=c):
                return f"(1.0 if {self.cond(c)} else 0.0)"
            case ir.LexiconRead(lexicon=lexicon, at=at):
                return f"{self.lexicon(lexicon)}.get(_read(tokens, {_pos(at)}, 'lower', _PAD_TEXT), 0.0)"
        raise AssertionError(f"unhandled number node {node!r}")

    def lexicon(self, lexicon: ir.Lexicon) -> str:
        """The local name of a lexicon's dict (one per distinct table)."""
        for name, known in self.lexicons:
            if known == lexicon:
                return name
        name = f"lexicon_{lexicon.name}" + (f"_{len(self.lexicons)}" if any(
            k.name == lexicon.name for _, k in self.lexicons) else "")
        self.lexicons.append((name, lexicon))
        return name

    def text(self, node: ir.Str) -> str:
        match node:
            case ir.StrLit(value=v):
                return format_string(v)
            case ir.StrFeature(name=name, at=at):
                return f"_read(tokens, {_pos(at)}, {name!r}, _PAD_TEXT)"
        raise AssertionError(f"unhandled text node {node!r}")

    def cond(self, node: ir.Bool) -> str:
        match node:
            case ir.BoolConst(value=v):
                return "True" if v else "False"
            case ir.BoolFeature(name=name, at=at):
                return f"bool(_read(tokens, {_pos(at)}, {name!r}, False))"
            case ir.Same(name=name, a=a, b=b):
                return f"_same(tokens, {_pos(a)}, {_pos(b)}, {ops.FEATURE[name].column!r})"
            case ir.NumCompare(op=op, left=left, right=right):
                return ops.COMPARE[op].emit.format(self.num(left), self.num(right))
            case ir.StrEquals(left=left, right=right, negated=negated):
                return f"({self.text(left)} {'!=' if negated else '=='} {self.text(right)})"
            case ir.BoolEquals(left=left, right=right, negated=negated):
                return f"({self.cond(left)} {'!=' if negated else '=='} {self.cond(right)})"
            case ir.NumIn(operand=operand, values=values, negated=negated):
                return _membership(self.num(operand), [repr(float(v)) for v in values], negated)
            case ir.StrIn(operand=operand, values=values, negated=negated):
                return _membership(self.text(operand), [format_string(v) for v in values], negated)
            case ir.AndB(left=left, right=right):
                return f"({self.cond(left)} and {self.cond(right)})"
            case ir.OrB(left=left, right=right):
                return f"({self.cond(left)} or {self.cond(right)})"
            case ir.NotB(operand=operand):
                return f"(not {self.cond(operand)})"
        raise AssertionError(f"unhandled condition node {node!r}")

    def factor(self, node: ir.Factor) -> str:
        if isinstance(node, ir.Select):
            name = f"keys_{len(self.selections)}"
            self.selections.append((name, node))
            return ops.SELECTION[node.kind].emit.format(name)
        return self.num(node)


def python_name(program: ir.Program) -> str:
    return f"program_{program.name}"


def needs_softmax_helpers(program: ir.Program) -> bool:
    return program.form == "softmax" or bool(program.masks)


def emit_python(program: ir.Program, source: str | None = None, header: bool = True) -> str:
    """Source of a standalone module defining ``program_<name>(tokens)``."""
    emitter = _Emitter()
    term_lines = []
    for term in program.terms:
        expr = repr(float(term.weight))
        for factor in term.factors:
            expr = f"_mul({expr}, {emitter.factor(factor)})"
        term_lines.append(f"            score = _add(score, {expr})")
    mask_tests = [f"not {emitter.cond(m.condition)}" if isinstance(m, ir.Indicator) else f"{emitter.factor(m)} == 0.0"
                  for m in program.masks]
    mask_lines = [f"                if {test}:\n                    allowed[k] = False" for test in mask_tests]
    # render selection conditions now, so every lexicon they read is known before the dicts are written
    selection_lines = [f"            {name} = [k for k in range(q + 1) if {emitter.cond(select.condition)}]"
                       for name, select in emitter.selections]
    comment = [f"# attndsl program '{program.name}'"]
    if source:
        comment += ["#   " + line for line in source.strip().splitlines()]
    lines = comment + [
        f"def {python_name(program)}(tokens):",
        f'    """Attention matrix (n x n) of program {program.name!r} for a list of token records."""',
        "    n = len(tokens)",
        "    attention = np.zeros((n, n))",
    ]
    for name, lexicon in emitter.lexicons:
        inside = ", ".join(f"{format_string(key)}: {float(w)!r}" for key, w in lexicon.entries)
        lines.append(f"    {name} = {{{inside}}}  # lexicon {lexicon.name}: lower-cased text -> weight")
    lines += [
        "    with np.errstate(all='ignore'):",
        "        for q in range(n):",
    ]
    lines += selection_lines
    lines += ["            row = np.zeros(q + 1)"]
    if mask_lines:
        lines += ["            allowed = np.ones(q + 1, dtype=bool)  # keys every mask admits"]
    lines += [
        "            for k in range(q + 1):",
        "                score = 0.0",
    ]
    lines += mask_lines
    lines += ["    " + line for line in term_lines]
    lines += ["                row[k] = score"]
    if program.form == "softmax":
        allowed = "allowed" if mask_lines else "np.ones(q + 1, dtype=bool)"
        lines += [f"            attention[q, : q + 1] = _softmax(row, {allowed}, q, {program.fallback!r})"]
    elif mask_lines:
        lines += [f"            attention[q, : q + 1] = _normalise(np.where(allowed, row, 0.0), q, {program.fallback!r})"]
    else:
        lines += [f"            attention[q, : q + 1] = _normalise(row, q, {program.fallback!r})"]
    lines += ["    return attention"]
    body = "\n".join(lines) + "\n"
    if not header:
        return body
    helpers = _HEADER + (_SOFTMAX_HEADER if needs_softmax_helpers(program) else "")
    return helpers + "\n\n" + body


def emit_module(programs: list[ir.Program]) -> str:
    """One module holding every program's function (shared helpers once)."""
    helpers = _HEADER + (_SOFTMAX_HEADER if any(needs_softmax_helpers(p) for p in programs) else "")
    return helpers + "".join("\n\n" + emit_python(p, header=False) for p in programs)


def load_function(program: ir.Program):
    """Compile the emitted source and return the function (for tests and benchmarks)."""
    namespace: dict = {}
    exec(compile(emit_python(program), f"<attndsl:{program.name}>", "exec"), namespace)
    return namespace[python_name(program)]
