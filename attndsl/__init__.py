"""attndsl: explain attention heads with programs.

The one-call pipeline is `attndsl.explain(...)` (extract → synthesise →
score → replace → report); each stage also has its own module and command.
`attndsl.open_run(path)` reads a finished run back: every head with its
category, gloss, programs and scores (HTML in Jupyter).
"""
from attndsl import threads as _threads

_threads.prepare_environment()  # before torch or Numba load their OpenMP runtimes (attndsl.threads)

from attndsl.pipeline.explain import ExplainResult, explain  # noqa: E402
from attndsl.explanations.reading import open_run  # noqa: E402

__all__ = ["ExplainResult", "explain", "open_run"]
__version__ = "0.1.0"
