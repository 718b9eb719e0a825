"""Fitting ``combine softmax`` programs to a head over the search's term pool.

The softmax form is log-linear: logit(q, k) = Σᵢ wᵢ·termᵢ(q, k) and each row
is a softmax over k ≤ q, so for a fixed set of terms the cross-entropy
−Σ A·log Â of the head's attention A is convex in the weights.  Per head:

1. **Sparse selection** (greedy, orthogonal-matching-pursuit style): start
   from the uniform program (all weights 0); at each step add the pool term
   whose cross-entropy gradient ``Σ (Â − A)·term`` is largest in magnitude,
   then refit every chosen weight by L-BFGS on the cross-entropy (with a
   small L2 penalty, so the problem stays strictly convex and weights stay
   finite when a term separates perfectly).
2. **Soft-IoU refinement** (optional): the chosen weights are polished by
   L-BFGS on the soft IoU itself (Σ min(A, Â), through the softmax); the
   refined weights are kept only if the IoU improves.
3. **Simplicity**: of the programs along the greedy path the shortest whose
   synthesis IoU is within ``tie`` of the best wins.
4. **Printing**: weights (times the term's scale) are rounded to three
   significant digits; terms whose rounded weight is 0 are dropped; the
   program is canonical ``.attn`` source that compiles back (its IoU is
   whatever the compiled program scores when the library re-scores it).

Everything here works on `attndsl.synthesis.search.SearchData` (term values already
evaluated once by the kernels), so fitting costs NumPy matrix–vector
products over the causal entries, not program evaluations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import minimize

from attndsl.language import ir


@dataclass(frozen=True)
class SoftmaxSettings:
    max_terms: int = 12
    l2: float = 1e-4  # per-weight penalty (the cross-entropy is a mean over rows)
    tie: float = 0.002  # IoU within this of the best counts as a tie (shorter wins)
    refine_iou: bool = True
    max_iter: int = 200


@dataclass(frozen=True)
class SoftmaxFit:
    specs: tuple[int, ...]  # indices into SearchData.specs
    weights: tuple[float, ...]  # on the scaled values
    iou: float  # mean soft IoU on the data it was fitted on
    path_iou: tuple[float, ...]  # IoU after each greedy step


class _Rows:
    """Row-wise softmax over the causal layout (rows are contiguous runs of entries)."""

    def __init__(self, row_start: np.ndarray, row_len: np.ndarray, row_seq: np.ndarray, two_n: np.ndarray):
        self.start = np.asarray(row_start, dtype=np.int64)
        self.len = np.asarray(row_len, dtype=np.int64)
        self.seq = np.asarray(row_seq, dtype=np.int64)
        self.two_n = np.asarray(two_n, dtype=np.float64)
        self.n_rows = len(self.start)

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        logits = np.clip(logits, -ir.LOGIT_BOUND, ir.LOGIT_BOUND)
        top = np.maximum.reduceat(logits, self.start)
        e = np.exp(logits - np.repeat(top, self.len))
        return e / np.repeat(np.add.reduceat(e, self.start), self.len)

    def row_sum(self, x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, self.start)

    def iou(self, A: np.ndarray, ahat: np.ndarray) -> float:
        """Mean over sequences of Σmin / (2n − Σmin) (both row-stochastic)."""
        per_row = self.row_sum(np.minimum(A, ahat))
        per_seq = np.bincount(self.seq, weights=per_row, minlength=len(self.two_n))
        return float(np.mean(per_seq / (self.two_n - per_seq)))


def _fit_ce(V: np.ndarray, A: np.ndarray, rows: _Rows, w0: np.ndarray, s: SoftmaxSettings) -> np.ndarray:
    """Weights minimising mean cross-entropy + l2·|w|² for the term values V [m, E]."""
    lam = s.l2

    def f(w):
        logits = w @ V
        clipped = np.clip(logits, -ir.LOGIT_BOUND, ir.LOGIT_BOUND)
        top = np.maximum.reduceat(clipped, rows.start)
        shifted = clipped - np.repeat(top, rows.len)
        e = np.exp(shifted)
        z = np.add.reduceat(e, rows.start)
        log_p = shifted - np.repeat(np.log(z), rows.len)
        p = e / np.repeat(z, rows.len)
        loss = -float(A @ log_p) / rows.n_rows + lam * float(w @ w)
        grad = V @ (p - A) / rows.n_rows + 2 * lam * w
        return loss, grad

    result = minimize(f, w0, jac=True, method="L-BFGS-B", options=dict(maxiter=s.max_iter))
    return result.x


def _refine_iou(V: np.ndarray, A: np.ndarray, rows: _Rows, w0: np.ndarray, s: SoftmaxSettings) -> np.ndarray:
    """Polish weights on −Σ min(A, Â) (a subgradient through the softmax)."""

    def f(w):
        p = rows.softmax(w @ V)
        loss = -float(np.minimum(A, p).sum()) / rows.n_rows
        g = -(p < A).astype(np.float64) / rows.n_rows  # d loss / d p
        dlogit = p * (g - np.repeat(rows.row_sum(p * g), rows.len))
        return loss, V @ dlogit

    result = minimize(f, w0, jac=True, method="L-BFGS-B", options=dict(maxiter=s.max_iter // 2))
    return result.x


def fit_softmax(values: np.ndarray, attention: np.ndarray, row_start, row_len, row_seq, two_n,
                settings: SoftmaxSettings = SoftmaxSettings(), candidates: Sequence[int] | None = None) -> SoftmaxFit:
    """Greedy sparse softmax fit of ``attention`` [E] from pool ``values`` [T, E]."""
    rows = _Rows(row_start, row_len, row_seq, two_n)
    A = np.asarray(attention, dtype=np.float64)
    V_all = np.asarray(values, dtype=np.float64)
    pool = np.arange(len(V_all)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    chosen: list[int] = []
    w = np.zeros(0)
    p = rows.softmax(np.zeros(len(A)))
    path: list[tuple[tuple[int, ...], np.ndarray, float]] = []
    for _ in range(settings.max_terms):
        grad = np.abs(V_all[pool] @ (p - A))
        if chosen:
            grad[np.isin(pool, chosen)] = -1.0
        best = int(np.argmax(grad))
        if grad[best] <= 1e-9:
            break
        chosen.append(int(pool[best]))
        V = V_all[chosen]
        w = _fit_ce(V, A, rows, np.append(w, 0.0), settings)
        p = rows.softmax(w @ V)
        path.append((tuple(chosen), w.copy(), rows.iou(A, p)))
    if not path:
        return SoftmaxFit((), (), rows.iou(A, p), ())
    best_iou = max(iou for _, _, iou in path)
    specs, w, iou = next(item for item in path if item[2] >= best_iou - settings.tie)
    if settings.refine_iou:
        V = V_all[list(specs)]
        refined = _refine_iou(V, A, rows, w, settings)
        refined_iou = rows.iou(A, rows.softmax(refined @ V))
        if refined_iou > iou:
            w, iou = refined, refined_iou
    return SoftmaxFit(specs, tuple(float(x) for x in w), iou, tuple(i for _, _, i in path))


def refit(values: np.ndarray, attention: np.ndarray, row_start, row_len, row_seq, two_n, fit: SoftmaxFit,
          settings: SoftmaxSettings = SoftmaxSettings()) -> SoftmaxFit:
    """The same terms, weights fitted again on other data (e.g. every synthesis sequence)."""
    if not fit.specs:
        return fit
    rows = _Rows(row_start, row_len, row_seq, two_n)
    A = np.asarray(attention, dtype=np.float64)
    V = np.asarray(values, dtype=np.float64)[list(fit.specs)]
    w = _fit_ce(V, A, rows, np.asarray(fit.weights), settings)
    iou = rows.iou(A, rows.softmax(w @ V))
    if settings.refine_iou:
        refined = _refine_iou(V, A, rows, w, settings)
        refined_iou = rows.iou(A, rows.softmax(refined @ V))
        if refined_iou > iou:
            w, iou = refined, refined_iou
    return SoftmaxFit(fit.specs, tuple(float(x) for x in w), iou, fit.path_iou)


def _round_sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}") if x else 0.0


def softmax_source(name: str, specs_text: Sequence[str], weights: Sequence[float], scales: Sequence[float]) -> str:
    """Canonical ``.attn`` source of a softmax fit (terms by decreasing |weight|)."""
    from attndsl.language.parser import parse
    from attndsl.language.printer import format_module, format_number
    from attndsl.language.validate import compile_source

    printed = [(_round_sig(w * sc), text) for w, sc, text in zip(weights, scales, specs_text)]
    printed = [(w, text) for w, text in printed if w != 0.0]
    printed.sort(key=lambda item: -abs(item[0]))
    if not printed:
        printed = [(1.0, "")]
    lines = []
    for i, (w, text) in enumerate(printed):
        body = format_number(abs(w)) + (f" * {text}" if text else "")
        sign = "-" if w < 0 else ("" if i == 0 else "+")
        lines.append(f"{sign} {body}".strip() if i else f"{sign}{body}")
    source = f"program {name} {{\n    combine softmax\n    " + "\n    ".join(lines) + "\n}\n"
    compile_source(source, f"<{name}>")  # must validate
    return format_module(parse(source, f"<{name}>"))
