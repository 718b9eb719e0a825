"""One causal layout and one soft-IoU definition, bit-identical to the formulas they replaced."""
import numpy as np
import pytest

from attndsl.extraction import layout
from attndsl.synthesis import scoring


def _old_chunk_iou(lengths, min_k1, min_k0, hat_k0, attn_k1):
    n = lengths.astype(np.float64)[:, None, None]
    total_min = min_k1 + min_k0
    iou = total_min / (2.0 * n - total_min)
    hat_k1 = n[:, :, 0] - hat_k0
    denom = attn_k1[:, None, :] + hat_k1[:, :, None] - min_k1
    iou0 = np.where(denom > 0, min_k1 / np.where(denom > 0, denom, 1.0), 1.0)
    return iou, iou0


@pytest.mark.parametrize("seed", range(5))
def test_chunk_iou_is_bit_identical(seed):
    rng = np.random.default_rng(seed)
    S, P, H = 7, 5, 3
    lengths = rng.integers(1, 40, size=S)
    min_k1, min_k0 = rng.random((S, P, H)) * 3, rng.random((S, P, H))
    hat_k0, attn_k1 = rng.random((S, P)), rng.random((S, H)) * 5
    min_k1[0, 0, 0] = attn_k1[0, 0] = 0.0
    hat_k0[0, 0] = lengths[0]  # an empty k >= 1 part
    new = scoring._chunk_iou(lengths, min_k1, min_k0, hat_k0, attn_k1, True)
    old = _old_chunk_iou(lengths, min_k1, min_k0, hat_k0, attn_k1)
    for a, b in zip(new, old):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("seed", range(5))
def test_dense_iou_is_bit_identical(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random((6, 6)), rng.random((6, 6))
    if seed == 0:
        a[:, 1:] = b[:, 1:] = 0.0
    old = float(np.minimum(a, b).sum() / np.maximum(a, b).sum())
    assert scoring.iou_dense(a, b) == old
    a1, b1 = a[..., 1:], b[..., 1:]
    denom = np.maximum(a1, b1).sum()
    old0 = float(np.minimum(a1, b1).sum() / denom) if denom > 0 else 1.0
    assert scoring.iou_dense_ignore_sink(a, b) == old0


def test_layout_helpers():
    lengths = np.array([3, 0, 5, 1])
    tri = layout.causal_layout(lengths)
    assert tri.tolist() == [0, 6, 6, 21, 22]
    seq, q, k = layout.causal_entries(lengths)
    for e in range(len(seq)):
        assert tri[seq[e]] + layout.row_start(q[e]) + k[e] == e and k[e] <= q[e]
    for n in range(12):
        assert layout.tri_size(n) == layout.tri_size_jit(n) == n * (n + 1) // 2
        assert layout.row_start_jit(n) == layout.row_start(n)
        qq, kk = layout.tril(n)
        assert len(qq) == layout.tri_size(n)
    m = np.arange(1, 7, dtype=np.float32)
    dense = layout.to_dense(m, 3)
    assert dense.dtype == np.float32 and dense.tolist() == [[1, 0, 0], [2, 3, 0], [4, 5, 6]]
