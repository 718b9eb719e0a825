"""The reference interpreter: the definition of what a program means.

`evaluate(program, table)` returns the n×n attention matrix of a program on
one token sequence, computed the obvious way with NumPy on the full grid of
(q, k) pairs in float64:

1. every factor is evaluated pointwise; every arithmetic result that is not
   finite (overflow, division by zero, log of 0 …) becomes 0;
2. a term is ``weight × factor₁ × factor₂ × …`` (left to right, same rule);
3. the score is the sum of the terms in order (same rule), kept for k ≤ q;
   every score is therefore a finite number;
4. a key is *admissible* when k ≤ q and every ``mask`` of the program is
   non-zero there (``mask [c]``: c holds; ``mask nearest(c)``: the key the
   selection picks); without masks every k ≤ q is admissible;
5. ``combine linear`` (the default): scores of keys that are not admissible
   and scores below 0 become 0; each row is divided by its sum; a row whose
   sum is 0 (or not finite) takes the fallback.
   ``combine softmax``: the score, clamped to ±`ir.LOGIT_BOUND` (10⁴), is
   the logit s, and Â[q,k] = exp(s(q,k) − m) / Σⱼ exp(s(q,j) − m) over the
   admissible keys j, m the largest admissible logit of the row; keys that
   are not admissible get 0 (their logit is −∞).  Logits are finite (step 3;
   a non-finite intermediate counts as 0), so the largest key gets
   exp(0) = 1 and a row with an admissible key is never empty.  The clamp
   changes nothing a softmax can distinguish below 10⁴ and keeps one-ulp
   differences between math libraries from being amplified.  A row with no
   admissible key takes the fallback;
6. the fallback puts the row's mass on ``first`` → k = 0, ``self`` → k = q,
   ``previous`` → k = q − 1 (k = 0 for q = 0), ``uniform`` → 1/(q+1) on every
   k ≤ q (masks do not restrict the fallback).

Selections mean the same in both forms: ``nearest(c)`` / ``first(c)`` are 1
at the largest / smallest k ≤ q where c holds and 0 elsewhere; ``spread(c)``
is 1/m at each of the m such keys.  As softmax terms they are indicator
features: ``w * nearest(c)`` adds w to the logit of the selected key;
``w * spread(c)`` adds w/m to each of its m keys (a flat +w is ``w * [c]``).

A feature read outside the sequence (``tok(k-1)`` at k = 0) gives the
padding value: "" for text, -1 for numbers, false for conditions; cross
features with a position outside give false / 0.  A lexicon read
``name(p)`` is the lexicon's weight of ``lower(p)``: 0 for text the lexicon
does not hold and outside the sequence.

Every other evaluator (Numba kernels, emitted Python, torch) must equal this.
"""
from __future__ import annotations

import numpy as np

from attndsl.language import ir, ops
from attndsl.extraction.features import TokenTable, charset_mask

_PAD_STR = -1  # string id of the padding value "" when "" is not otherwise interned


def _fin(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, 0.0)


class _Grid:
    """Per-sequence evaluation context over the n×n (q, k) grid."""

    def __init__(self, program: ir.Program, table: TokenTable):
        self.table = table
        self.n = n = len(table)
        self.Q, self.K = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        self.strings: dict[str, int] = {ir.PAD_STRING: _PAD_STR}
        if program.uses_syntax and not table.has_syntax:
            raise ValueError(f"program '{program.name}' uses syntax features but the token table has none")

    # -- positions and gathers
    def index(self, at: ir.At) -> tuple[np.ndarray, np.ndarray]:
        base = self.Q if at.var == "q" else self.K
        idx = base + at.offset
        valid = (idx >= 0) & (idx < self.n)
        return np.clip(idx, 0, max(self.n - 1, 0)), valid

    def intern(self, value: str) -> int:
        return self.strings.setdefault(value, len(self.strings))

    def string_column(self, name: str) -> np.ndarray:
        return np.array([self.intern(v) for v in self.table.column(name)], dtype=np.int64)

    def number_column(self, name: str) -> np.ndarray:
        return np.asarray(self.table.column(name)).astype(np.float64)

    def bool_column(self, name: str) -> np.ndarray:
        return np.asarray(self.table.column(name)).astype(bool)

    def key_column(self, name: str) -> np.ndarray:
        """What the cross feature ``name`` compares (text as interned ids)."""
        key = ops.FEATURE[ops.FEATURE[name].column]
        return self.string_column(key.name) if key.type == ops.TEXT else self.table.column(key.name)

    def gather(self, column: np.ndarray, at: ir.At, pad):
        if self.n == 0:
            return np.zeros((0, 0), dtype=column.dtype)
        idx, valid = self.index(at)
        return np.where(valid, column[idx], pad)

    # -- numbers
    def num(self, node: ir.Num) -> np.ndarray:
        match node:
            case ir.Const(value=v):
                return np.full((self.n, self.n), float(v))
            case ir.Dist():
                return (self.Q - self.K).astype(np.float64)
            case ir.Position(var=var):
                return (self.Q if var == "q" else self.K).astype(np.float64)
            case ir.NumFeature(name=name, at=at):
                return self.gather(self.number_column(name), at, ir.PAD_NUMBER).astype(np.float64)
            case ir.Similarity(a=a, b=b):
                masks = [charset_mask(s) for s in self.table.lower]
                ia, va = self.index(a)
                ib, vb = self.index(b)
                out = np.zeros((self.n, self.n))
                for q in range(self.n):
                    for k in range(self.n):
                        if va[q, k] and vb[q, k]:
                            ma, mb = masks[ia[q, k]], masks[ib[q, k]]
                            union = ma | mb
                            out[q, k] = bin(ma & mb).count("1") / bin(union).count("1") if union else 0.0
                return out
            case ir.Arith(op=op, left=left, right=right):
                x, y = self.num(left), self.num(right)
                with np.errstate(all="ignore"):
                    r = ops.ARITH[op].reference(x, y)
                return _fin(r)
            case ir.Negate(operand=operand):
                return _fin(-self.num(operand))
            case ir.Func(name=name, args=args):
                values = [self.num(a) for a in args]
                with np.errstate(all="ignore"):
                    r = ops.FUNCTION[name].reference(*values)
                return _fin(r)
            case ir.Indicator(condition=c):
                return self.cond(c).astype(np.float64)
            case ir.LexiconRead(lexicon=lexicon, at=at):
                weight_of = {self.intern(key): float(w) for key, w in lexicon.entries}
                ids = self.gather(self.string_column("lower"), at, _PAD_STR)
                return np.array([[weight_of.get(int(i), 0.0) for i in row] for row in ids],
                                dtype=np.float64).reshape(self.n, self.n)
        raise AssertionError(f"unhandled number node {node!r}")

    # -- strings (as interned integer ids)
    def text(self, node: ir.Str) -> np.ndarray:
        match node:
            case ir.StrLit(value=v):
                return np.full((self.n, self.n), self.intern(v), dtype=np.int64)
            case ir.StrFeature(name=name, at=at):
                return self.gather(self.string_column(name), at, _PAD_STR)
        raise AssertionError(f"unhandled text node {node!r}")

    # -- conditions
    def cond(self, node: ir.Bool) -> np.ndarray:
        match node:
            case ir.BoolConst(value=v):
                return np.full((self.n, self.n), bool(v))
            case ir.BoolFeature(name=name, at=at):
                return self.gather(self.bool_column(name), at, False).astype(bool)
            case ir.Same(name=name, a=a, b=b):
                column = self.key_column(name)
                ia, va = self.index(a)
                ib, vb = self.index(b)
                if self.n == 0:
                    return np.zeros((0, 0), dtype=bool)
                return va & vb & (column[ia] == column[ib])
            case ir.NumCompare(op=op, left=left, right=right):
                x, y = self.num(left), self.num(right)
                return ops.COMPARE[op].reference(x, y)
            case ir.StrEquals(left=left, right=right, negated=negated):
                eq = self.text(left) == self.text(right)
                return ~eq if negated else eq
            case ir.BoolEquals(left=left, right=right, negated=negated):
                eq = self.cond(left) == self.cond(right)
                return ~eq if negated else eq
            case ir.NumIn(operand=operand, values=values, negated=negated):
                x = self.num(operand)
                hit = np.isin(x, np.array(values, dtype=np.float64)) if values else np.zeros(x.shape, dtype=bool)
                return ~hit if negated else hit
            case ir.StrIn(operand=operand, values=values, negated=negated):
                x = self.text(operand)
                ids = np.array([self.intern(v) for v in values], dtype=np.int64)
                hit = np.isin(x, ids) if len(ids) else np.zeros(x.shape, dtype=bool)
                return ~hit if negated else hit
            case ir.AndB(left=left, right=right):
                return self.cond(left) & self.cond(right)
            case ir.OrB(left=left, right=right):
                return self.cond(left) | self.cond(right)
            case ir.NotB(operand=operand):
                return ~self.cond(operand)
        raise AssertionError(f"unhandled condition node {node!r}")

    # -- selections
    def select(self, node: ir.Select) -> np.ndarray:
        causal = self.K <= self.Q
        hits = self.cond(node.condition) & causal
        out = np.zeros((self.n, self.n))
        for q in range(self.n):
            keys = np.flatnonzero(hits[q])
            if len(keys) == 0:
                continue
            match ops.SELECTION[node.kind].code:
                case ops.SELECT_NEAREST:
                    out[q, keys[-1]] = 1.0
                case ops.SELECT_FIRST:
                    out[q, keys[0]] = 1.0
                case ops.SELECT_SPREAD:
                    out[q, keys] = 1.0 / len(keys)
        return out

    def factor(self, node: ir.Factor) -> np.ndarray:
        if isinstance(node, ir.Select):
            return self.select(node)
        return self.num(node)


def _parts(program: ir.Program, table: TokenTable) -> tuple[np.ndarray, np.ndarray]:
    """(scores, admissible): steps 1–4 on one grid."""
    grid = _Grid(program, table)
    n = grid.n
    total = np.zeros((n, n))
    with np.errstate(all="ignore"):
        for term in program.terms:
            value = np.full((n, n), float(term.weight))
            for factor in term.factors:
                value = _fin(value * grid.factor(factor))
            total = _fin(total + value)
        causal = grid.K <= grid.Q
        admissible = causal.copy()
        for mask in program.masks:
            admissible &= grid.factor(mask) != 0
    return np.where(causal, total, 0.0), admissible


def scores(program: ir.Program, table: TokenTable) -> np.ndarray:
    """Unnormalised scores (after the sum, before clipping), zero above the diagonal;
    the logits of a softmax program."""
    return _parts(program, table)[0]


def admissible(program: ir.Program, table: TokenTable) -> np.ndarray:
    """Which keys may get mass (k ≤ q and every mask non-zero), bool n×n."""
    return _parts(program, table)[1]


def _fallback_row(out: np.ndarray, q: int, fallback: str) -> None:
    """Step 6 on row q: the fallback's statement (`ops.Fallback`) on ``out[q, :q+1]``."""
    ops.FALLBACK[fallback].fill(out[q, : q + 1], q)


def normalise(total: np.ndarray, fallback: str, form: str = "linear", allowed: np.ndarray | None = None) -> np.ndarray:
    """Step 5–6: linear (clip, row-normalise) or softmax over the admissible keys
    (``allowed``; default every k ≤ q), with the fallback for empty rows."""
    n = total.shape[0]
    if allowed is None:
        allowed = np.tri(n, dtype=bool)
    out = np.zeros((n, n))
    if form == "softmax":
        with np.errstate(all="ignore"):
            for q in range(n):
                keys = np.flatnonzero(allowed[q, : q + 1])
                if len(keys) == 0:
                    _fallback_row(out, q, fallback)
                    continue
                logits = np.clip(total[q, keys], -ir.LOGIT_BOUND, ir.LOGIT_BOUND)
                e = np.exp(logits - logits.max())
                out[q, keys] = e / e.sum()
        return out
    if form != "linear":
        raise AssertionError(form)
    clipped = np.maximum(np.where(allowed, total, 0.0), 0.0)
    sums = clipped.sum(axis=1)
    for q in range(n):
        s = sums[q]
        if s > 0 and np.isfinite(s):
            out[q, : q + 1] = clipped[q, : q + 1] / s
        else:
            _fallback_row(out, q, fallback)
    return out


def evaluate(program: ir.Program, table: TokenTable) -> np.ndarray:
    """The program's n×n causal, row-stochastic attention matrix (float64)."""
    total, allowed = _parts(program, table)
    return normalise(total, program.fallback, program.form, allowed)


def empty_rows(program: ir.Program, table: TokenTable) -> np.ndarray:
    """Which rows fell back: linear — the clipped admissible score sum was 0 or
    not finite; softmax — no key was admissible."""
    total, allowed = _parts(program, table)
    if program.form == "softmax":
        return ~allowed.any(axis=1)
    sums = np.maximum(np.where(allowed, total, 0.0), 0.0).sum(axis=1)
    return ~((sums > 0) & np.isfinite(sums))
