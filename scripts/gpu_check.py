"""The GPU path, checked in a few minutes: ``python scripts/gpu_check.py [--device cuda] [--json PATH]``.

What it checks (each a line of output and an entry of the JSON report):

1. surrogate identity on the device: for the five tiny model families (GPT-2,
   Llama, Mistral, Qwen2, Gemma-3) in float32, bfloat16 and float16, every
   head's own attention substituted gives bit-identical logits, left and
   right padding; and the same for SmolLM2 (float32, bfloat16) when the
   embedded model is installed;
2. extraction on the device equals ``output_attentions`` within the 12-bit
   codec's bound (tiny families, float32);
3. the kernels' torch bridge on the device: ``attention_tensors(…, device,
   dtype)`` equals the CPU result cast to that dtype;
4. timings (SmolLM2, when installed): plain forward vs extraction
   (`attndsl.extraction.extract.record_codes`) vs the forward with 25 % of heads replaced,
   at 16 × 64 and 4 × 256 tokens, per dtype.

Exit status: 0 when every check passes, 1 when one fails, 3 when the device
is not there (no CUDA device, or a CPU-only torch build) — with a message
saying which.  ``--device cpu`` runs the same checks on the CPU (the test
suite does, on the tiny models only, so the script cannot rot); ``--tiny-only``
skips SmolLM2.  Never a CI dependency on a GPU.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import attndsl  # noqa: E402,F401  (thread setting before torch loads)

DTYPES = ("float32", "bfloat16", "float16")
TEXTS = [
    "Once upon a time, there was a little dog named Max.",
    "Max loved to run in the park.",
    "One day, Max saw a big red ball. \"Can I play?\" he asked.",
]


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used (None: it can)."""
    import torch

    if device == "cpu":
        return None
    if not device.startswith("cuda"):
        return f"unknown device {device!r} (use cuda or cpu)"
    if torch.version.cuda is None:
        return (
            f"torch {torch.__version__} is a CPU-only build; on a GPU machine install a CUDA build first, e.g. "
            "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu124"
        )
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False; check the driver and CUDA_VISIBLE_DEVICES)"
    return None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _own_pattern_fn(attentions, real):
    import torch

    def fn(programs, tables):
        m = max(len(t) for t in tables)
        out = torch.zeros((len(tables), len(programs), m, m), dtype=attentions[0].dtype, device=attentions[0].device)
        for p, program in enumerate(programs):
            layer, head = (int(x) for x in program.name.split("_")[1:])
            for b in range(len(tables)):
                where = torch.nonzero(real[b]).flatten()
                out[b, p, : len(where), : len(where)] = attentions[layer][b, head][where[:, None], where[None, :]]
        return out

    return fn


def identity(model, tokenizer, device: str, texts=TEXTS) -> dict:
    """Own attention in every head, left and right padding: are the logits bit-identical?"""
    import torch

    from attndsl.surrogates import surrogate
    from attndsl.language.validate import compile_program

    tables = surrogate.tables_for_texts(tokenizer, texts)
    n_layers, n_heads = surrogate.model_shape(model)
    items = [(l, h, compile_program(f"program own_{l}_{h} {{ 1 }}")) for l in range(n_layers) for h in range(n_heads)]
    assignment = surrogate.Assignment.from_items(items)
    result = {}
    for side in ("right", "left"):
        ids, mask = surrogate.batch_from_tables(tables, surrogate.pad_id_of(tokenizer), side)
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask, position_ids=surrogate.position_ids_for(mask),
                        use_cache=False, output_attentions=True)
        fn = _own_pattern_fn(ref.attentions, mask.bool())
        with surrogate.attach(model, assignment, tokenizer, pattern_fn=fn) as handle:
            logits = handle.logits(tables=tables, padding_side=side)
        result[side] = {
            "identical": bool(torch.equal(logits, ref.logits)),
            "max_abs_diff": float((logits.float() - ref.logits.float()).abs().max()),
        }
    return result


def check_tiny(device: str, report: dict) -> bool:
    import numpy as np
    import torch

    from tests import tiny

    ok = True
    for dtype in DTYPES:
        for kind in tiny.FAMILIES:
            build, make_tokenizer = tiny._KINDS[kind]
            model = build().to(device=device, dtype=getattr(torch, dtype))
            got = identity(model, make_tokenizer(), device)
            passed = all(v["identical"] for v in got.values())
            ok &= passed
            report.setdefault("identity", []).append({"model": f"tiny-{kind}", "dtype": dtype, **got, "pass": passed})
            print(f"identity   tiny-{kind:8s} {dtype:9s} {'ok' if passed else 'FAIL'} {got}")
    # extraction equals output_attentions (float32) within the codec's bound
    from attndsl.extraction.extract import record_codes
    from attndsl.extraction.store import ENTRY_RELATIVE_ERROR, FLOOR, decode

    for kind in tiny.FAMILIES:
        loaded = tiny.tiny_loaded(kind)
        loaded.model.to(device)
        ids_list = [[int(i) for i in t.token_id] for t in __import__("attndsl.surrogates.surrogate").surrogates.surrogate.tables_for_texts(loaded.tokenizer, TEXTS)]
        codes = record_codes(loaded, ids_list)
        worst = 0.0  # largest |stored - exact| / the codec's per-entry bound
        for ids, code in zip(ids_list, codes):
            with torch.no_grad():
                out = loaded.model(torch.tensor([ids], device=device), output_attentions=True)
            exact = torch.stack(out.attentions)[:, 0].double().cpu().numpy()  # [L, H, n, n]
            n = len(ids)
            rows, cols = np.tril_indices(n)
            want = exact[:, :, rows, cols].reshape(-1, len(rows)).T  # [T, L*H]
            stored = decode(code).astype(np.float64)
            bound = np.where(want >= FLOOR, ENTRY_RELATIVE_ERROR * want, FLOOR / 2)
            worst = max(worst, float((np.abs(stored - want) / bound).max()))
        passed = worst <= 1.0
        ok &= passed
        report.setdefault("extraction", []).append({"model": f"tiny-{kind}", "error_over_bound": worst, "pass": passed})
        print(f"extraction tiny-{kind:8s} float32   {'ok' if passed else 'FAIL'} (largest error / codec bound {worst:.3f})")
    return ok


def check_bridge(device: str, report: dict) -> bool:
    import torch

    from attndsl import stdlib
    from attndsl.surrogates import surrogate
    from attndsl.extraction.batch import TokenBatch
    from attndsl.surrogates.torch_bridge import attention_tensors
    from tests import tiny

    tables = surrogate.tables_for_texts(tiny.bpe_tokenizer(), TEXTS)
    programs = [p for p in stdlib.programs() if not p.uses_syntax]
    batch = TokenBatch.from_tables(tables)
    cpu = attention_tensors(programs, batch, dtype=torch.float64)
    ok = True
    for dtype in DTYPES:
        t = getattr(torch, dtype)
        on_device = attention_tensors(programs, batch, device=device, dtype=t)
        passed = on_device.device.type == torch.device(device).type and on_device.dtype == t and torch.equal(
            on_device.cpu(), cpu.to(t)
        )
        ok &= passed
        report.setdefault("bridge", []).append({"dtype": dtype, "programs": len(programs), "pass": passed})
        print(f"bridge     {len(programs)} programs {dtype:9s} on {device}: {'ok' if passed else 'FAIL'}")
    return ok


def _median_time(fn, device: str, repeats: int) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_smollm2(device: str, report: dict, corpus: str | None) -> bool:
    import torch

    from attndsl import stdlib
    from attndsl.surrogates import surrogate
    from attndsl.extraction.corpus import Corpus, load_corpus, make_sequences
    from attndsl.errors import UserError
    from attndsl.extraction.extract import record_codes
    from attndsl.extraction.models import load_model

    ok = True
    for dtype in ("float32", "bfloat16"):
        try:
            loaded = load_model("smollm2", device=device, dtype=dtype)
        except UserError as error:
            print(f"smollm2: skipped ({error})")
            report["smollm2"] = f"skipped: {error}"
            return True
        got = identity(loaded.model, loaded.tokenizer, device, TEXTS[:2])
        passed = all(v["identical"] for v in got.values())
        ok &= passed
        report.setdefault("identity", []).append({"model": "smollm2", "dtype": dtype, **got, "pass": passed})
        print(f"identity   smollm2       {dtype:9s} {'ok' if passed else 'FAIL'} {got}")
        heads = [(l, h) for l in range(loaded.n_layers) for h in range(loaded.n_heads)]
        random.Random(0).shuffle(heads)
        programs = [p for p in stdlib.programs() if not p.uses_syntax]
        assignment = surrogate.Assignment.from_items(
            (l, h, programs[i % len(programs)]) for i, (l, h) in enumerate(heads[: len(heads) // 4])
        )
        # the stories joined into one text, so packing fills every sequence to the length asked
        stories = list((load_corpus(corpus) if corpus else load_corpus("builtin")).documents)
        source = Corpus("joined", ["\n\n".join(stories)])
        for max_tokens, count in ((64, 16), (256, 4)):
            sequences = make_sequences(source, loaded.tokenizer, max_tokens=max_tokens, max_sequences=count * 10)
            tables = sorted((s.table for s in sequences), key=len, reverse=True)[:count]
            ids, mask = surrogate.batch_from_tables(tables, surrogate.pad_id_of(loaded.tokenizer))
            ids, mask = ids.to(device), mask.to(device)
            positions = surrogate.position_ids_for(mask)

            def plain():
                with torch.no_grad():
                    loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)

            def extraction():
                record_codes(loaded, [[int(i) for i in t.token_id] for t in tables])

            plain_s = _median_time(plain, device, 3)
            extract_s = _median_time(extraction, device, 3)
            handle = surrogate.attach(loaded.model, assignment, loaded.tokenizer)
            try:
                surrogate_s = _median_time(lambda: handle.logits(tables=tables), device, 3)
                handle.pattern_seconds = 0.0
                handle.logits(tables=tables)
                pattern_s = handle.pattern_seconds
            finally:
                handle.detach()
            row = {
                "dtype": dtype, "batch": f"{len(tables)}x{ids.shape[1]}", "plain_s": plain_s, "extract_s": extract_s,
                "surrogate_s": surrogate_s, "pattern_s": pattern_s, "heads_replaced": len(assignment),
                "extract_vs_plain": extract_s / plain_s, "surrogate_vs_plain": surrogate_s / plain_s,
            }
            report.setdefault("timings", []).append(row)
            print(
                f"timing     smollm2 {dtype:9s} {row['batch']:7s}: plain {plain_s * 1e3:.1f} ms, extraction "
                f"{extract_s * 1e3:.1f} ms ({row['extract_vs_plain']:.2f}x), {len(assignment)} heads replaced "
                f"{surrogate_s * 1e3:.1f} ms ({row['surrogate_vs_plain']:.2f}x; programs {pattern_s * 1e3:.1f} ms)"
            )
        del loaded
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    parser.add_argument("--tiny-only", action="store_true", help="skip the SmolLM2 identity and timings")
    parser.add_argument("--corpus", default=None, help="text for the timings (default: the built-in stories)")
    args = parser.parse_args(argv)
    problem = device_problem(args.device)
    if problem:
        print(f"gpu-check: cannot run on {args.device}: {problem}", file=sys.stderr)
        return 3
    import torch

    report: dict = {"device": args.device, "torch": torch.__version__, "cuda": torch.version.cuda}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(args.device)
    print(f"gpu-check on {args.device} ({report.get('gpu', 'cpu')}), torch {torch.__version__}")
    start = time.perf_counter()
    ok = check_tiny(args.device, report)
    ok &= check_bridge(args.device, report)
    if not args.tiny_only:
        ok &= check_smollm2(args.device, report, args.corpus)
    report["pass"] = bool(ok)
    report["seconds"] = time.perf_counter() - start
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu-check: {'all checks passed' if ok else 'SOME CHECKS FAILED'} in {report['seconds']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
