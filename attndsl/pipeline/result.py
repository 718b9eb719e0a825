"""What ``attndsl explain`` returns: a finished explanation, read back from its run directory.

`load_result` reads the files the stages wrote (so a result is the same
whether the stages ran now or in an earlier, interrupted call).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from attndsl.pipeline.layout import RunLayout
from attndsl.pipeline.records import HeadChoice, ReplacementRow, find_replacement_csv, read_best_csv, read_replacement_csv
from attndsl.pipeline.attnfile import read_attn

#: held-out IoU from which the summary counts a head as well explained
GOOD_IOU = 0.75


@dataclass(frozen=True)
class StageRecord:
    """What happened to one stage in this call."""

    name: str
    status: str  # "ran" | "skipped"
    seconds: float


@dataclass(frozen=True)
class ExplainResult:
    """A finished explanation, read from its run directory (`load_result`)."""

    run_dir: Path
    report: Path | None
    n_layers: int
    n_heads: int
    heads: tuple[HeadChoice, ...]  # one per head with a program, by layer and head
    library_size: int
    perplexity: tuple[ReplacementRow, ...]
    stages: tuple[StageRecord, ...] = ()

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def n_explained(self) -> int:
        """Heads that have a program."""
        return len(self.heads)

    @property
    def n_good(self) -> int:
        """Heads whose program reaches `GOOD_IOU` held-out IoU."""
        return sum(1 for h in self.heads if h.heldout_iou >= GOOD_IOU)

    @property
    def mean_heldout_iou(self) -> float:
        return _mean([h.heldout_iou for h in self.heads])

    @property
    def mean_heldout_iou_no_sink(self) -> float:
        return _mean([h.heldout_iou_no_sink for h in self.heads])

    @property
    def n_heldout_sequences(self) -> int:
        return max((h.n_heldout_sequences for h in self.heads), default=0)

    @property
    def n_heldout_tokens(self) -> int:
        return max((h.n_heldout_tokens for h in self.heads), default=0)

    def head(self, layer: int, head: int) -> HeadChoice | None:
        return next((h for h in self.heads if (h.layer, h.head) == (layer, head)), None)

    def perplexity_at(self, fraction: float, variant: str = "ranked") -> ReplacementRow | None:
        """The replacement row for ``fraction`` of all heads (None if not measured)."""
        return next(
            (p for p in self.perplexity if p.variant == variant and math.isclose(p.fraction, fraction, abs_tol=1e-9)),
            None,
        )

    def summary(self) -> str:
        """The short text `attndsl explain` prints at the end."""
        lines = [
            f"heads explained:   {self.n_explained}/{self.n_total_heads} have a program, "
            f"{self.n_good} with held-out IoU >= {GOOD_IOU}",
            f"mean held-out IoU: {_fmt(self.mean_heldout_iou)} (ignoring key 0: {_fmt(self.mean_heldout_iou_no_sink)}; "
            f"{self.n_heldout_sequences} held-out sequences, {self.n_heldout_tokens} tokens)",
            f"library:           {self.library_size} programs",
        ]
        for fraction in (0.25, 0.5):
            point = self.perplexity_at(fraction)
            if point is None:
                continue
            lines.append(
                f"perplexity {fraction:>4.0%}:   {point.ppl_programs:.3f} with programs ({point.increase_programs_pct:+.1f}%), "
                f"{point.ppl_uniform:.3f} uniform ({point.increase_uniform_pct:+.1f}%), {point.ppl_model:.3f} unmodified "
                f"[{point.n_replaced} heads, {point.n_sequences} held-out sequences]"
            )
        if self.report is not None:
            lines.append(f"report:            {self.report}")
        return "\n".join(lines)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _fmt(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3f}"


def load_result(run_dir: str | Path, stages: Sequence[StageRecord] = ()) -> ExplainResult:
    """The `ExplainResult` of a run directory (whatever stages have finished)."""
    layout = RunLayout(Path(run_dir))
    n_layers = n_heads = 0
    if layout.has_store():
        from attndsl.extraction.store import open_store

        store = open_store(layout.root)
        n_layers, n_heads = store.n_layers, store.n_heads
    shape = (n_layers, n_heads) if n_layers else None
    heads = tuple(sorted(read_best_csv(layout.best_csv, shape), key=lambda h: (h.layer, h.head))) if layout.best_csv.exists() else ()
    library_size = len(read_attn(layout.library_attn).sources()) if layout.library_attn.exists() else 0
    csv_path = find_replacement_csv(layout.root)
    return ExplainResult(
        run_dir=layout.root,
        report=layout.report if layout.report.exists() else None,
        n_layers=n_layers,
        n_heads=n_heads,
        heads=heads,
        library_size=library_size,
        perplexity=tuple(read_replacement_csv(csv_path)) if csv_path is not None else (),
        stages=tuple(stages),
    )
