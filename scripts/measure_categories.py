"""Do the program categories agree with the heads' own attention statistics?

    .venv/bin/python scripts/measure_categories.py RUN

For every head of a finished run, computes from the attention store (all
sequences, rows q >= 2 so that the previous token is not the first token):

- first-token score: mean attention on k = 0;
- previous-token score: mean attention on k = q - 1;
- induction score: over rows whose token occurred earlier, the mean
  attention on the token after its most recent earlier copy;
- duplicate score: over the same rows, the mean attention on the most recent
  earlier copy itself;

then prints the strongest head of each statistic with the category its
program gets (`attndsl.explanations.reading.explain_run`), the category counts, and
checks that every head has a category and a gloss.  Exit status 1 when a
strongest head is not in its category or fewer than 6 categories occur.
"""
from __future__ import annotations

import sys

import numpy as np


def head_statistics(store) -> dict[str, np.ndarray]:
    """Each statistic of the module docstring as float[L, H]."""
    L, H = store.n_layers, store.n_heads
    sums = {name: np.zeros((L, H)) for name in ("first", "previous", "induction", "duplicate")}
    rows = 0
    repeat_rows = 0
    for index, table in zip(range(store.n_sequences), store.tables(range(store.n_sequences))):
        a = store.dense(index).astype(np.float64)  # [L, H, n, n]
        n = a.shape[-1]
        if n < 3:
            continue
        q = np.arange(2, n)
        sums["first"] += a[:, :, q, 0].sum(-1)
        sums["previous"] += a[:, :, q, q - 1].sum(-1)
        rows += len(q)
        last: dict[int, int] = {}
        ids = list(table.token_id)
        for position, token in enumerate(ids):
            earlier = last.get(token)
            if earlier is not None and position >= 2 and earlier + 1 < position:
                sums["induction"] += a[:, :, position, earlier + 1]
                sums["duplicate"] += a[:, :, position, earlier]
                repeat_rows += 1
            last[token] = position
    out = {"first": sums["first"] / rows, "previous": sums["previous"] / rows}
    out["induction"] = sums["induction"] / max(repeat_rows, 1)
    out["duplicate"] = sums["duplicate"] / max(repeat_rows, 1)
    out["_rows"] = np.array([rows, repeat_rows])
    return out


EXPECTED = {"first": {"sink"}, "previous": {"previous"}, "induction": {"induction", "duplicate"},
            "duplicate": {"induction", "duplicate"}}


def main(argv: list[str]) -> int:
    from attndsl.explanations.reading import explain_run
    from attndsl.extraction.store import open_store

    run_dir = argv[0]
    store = open_store(run_dir)
    stats = head_statistics(store)
    explained = explain_run(run_dir)
    rows, repeat_rows = stats.pop("_rows")
    print(f"{store.n_sequences} sequences, {rows} rows (q >= 2), {repeat_rows} rows with an earlier copy")
    ok = True
    copy = max(("induction", "duplicate"), key=lambda s: stats[s].max())
    for name in ("first", "previous", copy):
        layer, head = np.unravel_index(int(np.argmax(stats[name])), stats[name].shape)
        h = explained.head(int(layer), int(head))
        good = h.category.key in EXPECTED[name]
        ok &= good
        print(f"strongest {name} head: L{layer}H{head} score {stats[name][layer, head]:.3f} -> category "
              f"{h.category.key} (purity {h.category.purity:.2f}) {'OK' if good else 'MISMATCH'}; "
              f"program {h.short.name}: {h.gloss}")
    counts = explained.category_counts()
    missing = [(h.layer, h.head) for h in explained.heads if not h.category.key or not h.gloss]
    print(f"heads: {len(explained.heads)} of {store.n_layers * store.n_heads}; without category or gloss: {len(missing)}")
    print(f"categories: {len(counts)} distinct: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    ok &= not missing and len(counts) >= 6 and len(explained.heads) == store.n_layers * store.n_heads
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
