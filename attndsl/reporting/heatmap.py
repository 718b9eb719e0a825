"""Attention matrices as readable terminal heatmaps with token labels."""
from __future__ import annotations

import numpy as np

_SHADES = " ·░▒▓█"


def token_label(text: str, width: int = 10) -> str:
    """A token's text made printable and cut to ``width`` characters."""
    shown = text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if not shown:
        shown = "∅"
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def shade(value: float) -> str:
    if value <= 0:
        return _SHADES[0]
    index = 1 + int(min(value, 1.0) * (len(_SHADES) - 2) + 0.5)
    return _SHADES[min(index, len(_SHADES) - 1)]


def render_heatmap(matrix: np.ndarray, labels: list[str], title: str = "", max_tokens: int = 48) -> str:
    """Rows are queries, columns keys; each cell is two characters of shade.

    Shows at most ``max_tokens`` tokens (the first ones) so it fits a terminal.
    """
    n = min(len(labels), matrix.shape[0], max_tokens)
    names = [token_label(t) for t in labels[:n]]
    width = max((len(x) for x in names), default=1)
    out = []
    if title:
        out.append(title)
    header_digits = [f"{k:>2}"[-2:] for k in range(n)]
    out.append(" " * (width + 6) + "".join(header_digits))
    for q in range(n):
        cells = "".join(shade(float(matrix[q, k])) * 2 for k in range(n))
        top = int(np.argmax(matrix[q, : q + 1])) if q < matrix.shape[1] else 0
        out.append(f"{q:>3} {names[q]:>{width}} │{cells}│ → {top}:{names[top]} {matrix[q, top]:.2f}")
    if len(labels) > n:
        out.append(f"… {len(labels) - n} more tokens not shown")
    out.append(f"scale: ' '=0 '·'<0.1 '░' '▒' '▓' '█'=1   (row = query, column = key)")
    return "\n".join(out)
