"""Program outputs as dense torch attention tensors (for surrogate heads).

The kernels produce each program's attention over the batch's causal
entries; this module scatters them into zero-padded ``[B, n_max, n_max]``
(one program) or ``[B, P, n_max, n_max]`` (several) tensors on the requested
device and dtype.  Rows of padding positions (q ≥ n_s) are all zero; the
model's own mask handles them.  Values are computed in float64 and cast once.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from attndsl.language import ir
from attndsl.extraction.batch import TokenBatch


def _scatter(values: np.ndarray, batch: TokenBatch, n_max: int) -> np.ndarray:
    """float64[P, entries] → float64[B, P, n_max, n_max] (zero padded)."""
    seq, q, k = batch.entry_index()
    out = np.zeros((len(batch), values.shape[0], n_max, n_max), dtype=np.float64)
    out[seq[:, None], np.arange(values.shape[0])[None, :], q[:, None], k[:, None]] = values.T
    return out


def attention_tensors(
    programs: ir.Program | Sequence[ir.Program],
    batch: TokenBatch,
    device=None,
    dtype=None,
    n_max: int | None = None,
):
    """Dense attention of one program (``[B, n, n]``) or several (``[B, P, n, n]``).

    ``n_max`` pads every sequence to that many positions (default: the
    longest sequence); it must be at least the longest length.
    """
    import torch

    from attndsl.kernels import evaluate_programs

    single = isinstance(programs, ir.Program)
    program_list = [programs] if single else list(programs)
    n = batch.max_length if n_max is None else int(n_max)
    if n < batch.max_length:
        raise ValueError(f"n_max={n} is shorter than the longest sequence ({batch.max_length} tokens)")
    values = evaluate_programs(program_list, batch)
    dense = torch.from_numpy(_scatter(values, batch, n))
    dense = dense.to(device=device if device is not None else "cpu", dtype=dtype if dtype is not None else torch.float32)
    return dense[:, 0] if single else dense


def values_to_tensor(values: np.ndarray, batch: TokenBatch, device=None, dtype=None, n_max: int | None = None):
    """Like `attention_tensors` for outputs already evaluated over causal entries
    (float64[entries] → [B, n, n]; float64[P, entries] → [B, P, n, n]), e.g. from
    `attndsl.kernels.combine` with fitted weights."""
    import torch

    values = np.asarray(values, dtype=np.float64)
    single = values.ndim == 1
    n = batch.max_length if n_max is None else int(n_max)
    if n < batch.max_length:
        raise ValueError(f"n_max={n} is shorter than the longest sequence ({batch.max_length} tokens)")
    dense = torch.from_numpy(_scatter(np.atleast_2d(values), batch, n))
    dense = dense.to(device=device if device is not None else "cpu", dtype=dtype if dtype is not None else torch.float32)
    return dense[:, 0] if single else dense
