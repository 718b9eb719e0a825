"""attndsl: explain attention heads with programs.

The one-call pipeline is `attndsl.explain(...)` (extract → synthesise →
score → replace → report); each stage also has its own module and command.
"""
from .explain import ExplainResult, explain

__all__ = ["ExplainResult", "explain"]
__version__ = "0.1.0"
