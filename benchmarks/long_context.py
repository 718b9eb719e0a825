"""How store size, extraction and scoring time grow with sequence length (64 → 256 → 1024 tokens).

``python benchmarks/long_context.py [N_SEQUENCES] [CODEC] [MASS] [LENGTHS]``
(defaults 4, log12, 0.99, 64,256,1024): SmolLM2, the
TinyStories sample's stories joined into one text (``--txt-separator
endoftext`` on a file without ``<|endoftext|>``, so packing fills every
sequence to the length asked), N sequences at each of 64, 256 and 1024
tokens (or the comma-separated LENGTHS).  CODEC ``topmass`` extracts with
``store_codec="topmass", store_mass=MASS`` (`attndsl.extraction.store`).  For each
length it prints the store's bytes (270 heads) with the codec's IoU error
bound at the longest sequence (for topmass also the largest change of a
sequence's IoU it measured against a log12 store of the same sequences, over
every program, head and sequence: ``ΔIoU``; that log12 extraction is not
timed, and the peak memory is read before it), the extraction wall time (`attndsl.extraction.extract.extract`, batch 1), the
scoring wall time of the standard library against every head
(`attndsl.synthesis.scoring.score`), and the process's peak resident memory so far
(``ru_maxrss``; lengths run in increasing order, so each peak belongs to the
longest length up to there).  Not a ``bench_`` module: minutes of CPU.
"""
from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attndsl  # noqa: F401  (thread setting first)
from benchmarks.common import load_stories


def main(n_sequences: int = 4, codec: str = "log12", mass: float = 0.99, lengths: tuple[int, ...] = (64, 256, 1024)) -> int:
    from attndsl import stdlib
    from attndsl.extraction.batch import TokenBatch
    from attndsl.extraction.extract import extract
    from attndsl.extraction.models import load_model
    from attndsl.synthesis.scoring import score

    stories = load_stories(400)
    if not stories:
        print("needs the TinyStories sample (ATTNDSL_TINYSTORIES)", file=sys.stderr)
        return 1
    loaded = load_model("smollm2")
    programs = [p for p in stdlib.programs() if not p.uses_syntax]
    print(f"codec {codec}" + (f", mass {mass}" if codec == "topmass" else ""))
    print(f"{'tokens':>6} {'seqs':>4} {'store MB':>9} {'MB/seq':>8} {'extract s':>9} {'s/seq':>7} {'score s':>8} {'peak RSS MB':>11}")
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "joined.txt"
        corpus.write_text("\n\n".join(stories) + "\n", encoding="utf-8")
        for max_tokens in lengths:
            start = time.perf_counter()
            store = extract(
                Path(scratch) / f"run{max_tokens}", loaded, str(corpus), max_sequences=n_sequences,
                max_tokens=max_tokens, batch_size=1, progress=False, txt_separator="endoftext",
                store_codec=codec, store_mass=mass,
            )
            extract_s = time.perf_counter() - start
            indices = list(range(store.n_sequences))
            batch = TokenBatch.from_tables(store.tables(indices))
            start = time.perf_counter()
            scored = score(programs, store, batch, indices, per_sequence=True)
            score_s = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the untimed reference
            measured = ""
            if codec == "topmass":
                reference = extract(
                    Path(scratch) / f"ref{max_tokens}", loaded, str(corpus), max_sequences=n_sequences,
                    max_tokens=max_tokens, batch_size=1, progress=False, txt_separator="endoftext",
                )
                exact = score(programs, reference, batch, indices, per_sequence=True)
                measured = f", ΔIoU {abs(scored.per_sequence - exact.per_sequence).max():.4f}"
                shutil.rmtree(reference.directory.parent)
            mb = store.size_bytes() / 1e6
            print(
                f"{max_tokens:>6} {store.n_sequences:>4} {mb:>9.1f} {mb / store.n_sequences:>8.2f} {extract_s:>9.1f} "
                f"{extract_s / store.n_sequences:>7.2f} {score_s:>8.2f} {peak:>11.0f}   (lengths {min(store.lengths)}–{max(store.lengths)}, {len(programs)} programs, "
                f"IoU bound {store.iou_error_bound(max(store.lengths)):.4f}{measured})"
            )
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(
        int(argv[0]) if argv else 4,
        argv[1] if len(argv) > 1 else "log12",
        float(argv[2]) if len(argv) > 2 else 0.99,
        tuple(int(x) for x in argv[3].split(",")) if len(argv) > 3 else (64, 256, 1024),
    ))
