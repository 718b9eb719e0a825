"""Benchmark harness: ``python -m benchmarks [--quick] [--json PATH] [NAME ...]``.

Discovers every ``benchmarks/bench_*.py`` module; each exposes
``run(quick: bool) -> list[dict]`` returning rows with the keys ``name``,
``baseline``, ``baseline_s``, ``attndsl_s``, ``ratio`` (= baseline_s /
attndsl_s) and ``n`` (amount of work), plus any extra keys.  A module whose
``run`` also takes ``inputs`` gets ``--inputs N`` (``fuzz --inputs 100000``).  Rows are
printed as a table; ``--json PATH`` also writes them (atomically) as a JSON
list so later runs can be compared.  ``NAME`` restricts the run to the named
modules (``kernels`` for ``bench_kernels``).

``python -m benchmarks llm --url URL --model NAME --heads N …`` is the LLM
benchmark (`benchmarks.bench_llm`): it needs an endpoint and takes its own
flags, so it is dispatched to that module's ``main``; in a plain run of the
harness it adds no rows.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import pkgutil
import sys
import time
from pathlib import Path

REQUIRED = ("name", "baseline", "baseline_s", "attndsl_s", "ratio", "n")


def discover() -> list[str]:
    folder = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name.startswith("bench_"))


def _fmt(value, width: int) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return text[:width].ljust(width)


def print_table(rows: list[dict], out=sys.stdout) -> None:
    cols = [("module", 10), ("name", 58), ("baseline", 38), ("baseline_s", 10), ("attndsl_s", 10), ("ratio", 8), ("n", 11)]
    print("  ".join(_fmt(c, w) for c, w in cols), file=out)
    print("  ".join("-" * w for _, w in cols), file=out)
    for r in rows:
        print("  ".join(_fmt(r.get(c, ""), w) for c, w in cols), file=out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("llm", "bench_llm"):
        from benchmarks import bench_llm

        return bench_llm.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (each module well under a minute)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as a JSON list")
    parser.add_argument("--inputs", type=int, metavar="N", help="inputs for modules that take a count (fuzz)")
    parser.add_argument("names", nargs="*", help="only these modules (e.g. kernels scoring)")
    args = parser.parse_args(argv)

    modules = discover()
    if args.names:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.names}
        unknown = wanted - set(modules)
        if unknown:
            print(f"unknown benchmark module(s): {', '.join(sorted(unknown))}; have {', '.join(modules)}", file=sys.stderr)
            return 2
        modules = [m for m in modules if m in wanted]
    rows: list[dict] = []
    for name in modules:
        module = importlib.import_module(f"benchmarks.{name}")
        start = time.perf_counter()
        extra = {"inputs": args.inputs} if args.inputs and "inputs" in inspect.signature(module.run).parameters else {}
        produced = module.run(args.quick, **extra)
        elapsed = time.perf_counter() - start
        for r in produced:
            missing = [k for k in REQUIRED if k not in r]
            if missing:
                raise ValueError(f"{name}: row {r.get('name')!r} lacks {', '.join(missing)}")
            rows.append({"module": name.removeprefix("bench_"), **r})
        print(f"[{name}] {len(produced)} rows in {elapsed:.1f} s", file=sys.stderr)
    print_table(rows)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(rows, indent=2, default=float) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
