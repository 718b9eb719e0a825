"""lm-evaluation-harness adapter: benchmark a model whose heads are programs.

Users who can reach the Hugging Face hub can run ARC-Easy, PIQA, SciQ,
HellaSwag … on a model with surrogate heads::

    from attndsl.surrogates.lm_eval_adapter import make_lm
    import lm_eval

    lm = make_lm(model, tokenizer, assignment)         # an lm_eval.api.model.LM
    lm_eval.simple_evaluate(model=lm, tasks=["arc_easy", "piqa", "sciq", "hellaswag"])

``lm-eval`` is an optional extra (``pip install attndsl[eval]``), imported only
by `make_lm`.  The work is done by `SurrogateLMCore`, a plain class (tested
without lm-eval) whose methods take plain tuples: log-likelihoods come from
`attndsl.surrogates.qa.ContinuationScorer` (the same scoring the local QA uses; the
harness's ``acc_norm`` divides by length itself), rolling log-likelihoods score
the whole text after a BOS/EOS prefix token, and generation runs
`SurrogateHandle.generate` greedily and cuts at the first stop string.
"""
from __future__ import annotations

from typing import Sequence

from attndsl.errors import UserError
from attndsl.surrogates.qa import ContinuationScorer
from attndsl.extraction.model_facade import tables_for_texts
from attndsl.surrogates.assignment import Assignment
from attndsl.surrogates.handle import attach
from attndsl.surrogates.patterns import PatternFn


class SurrogateLMCore:
    """The harness's three request types over plain Python values."""

    def __init__(self, model, tokenizer, assignment: Assignment | None = None, batch_size: int = 8, pattern_fn: PatternFn | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.assignment = assignment or Assignment()
        self.scorer = ContinuationScorer(model, tokenizer, self.assignment, batch_size, pattern_fn)
        self.pattern_fn = pattern_fn

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is the continuation the greedy decode) per pair."""
        return [(s.logprob, s.is_greedy) for s in self.scorer.score(list(pairs))]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """log p(text) after a BOS/EOS prefix token (the text must fit the model's context)."""
        limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config, "n_positions", None)
        out = []
        for text in texts:
            table, first = self.scorer.table("", text)
            if limit is not None and len(table) > limit:
                raise UserError(f"a text of {len(table)} tokens exceeds the model's context of {limit}")
            out.append(self.scorer.score([("", text)])[0].logprob)
        return out

    def generate_until(self, requests: Sequence[tuple[str, dict]]) -> list[str]:
        """Greedy continuation of each context, cut at the first of ``until`` (default: EOS only)."""
        out = []
        with attach(self.model, self.assignment, self.tokenizer, self.pattern_fn) as handle:
            for context, options in requests:
                options = dict(options or {})
                until = options.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_new = int(options.get("max_gen_toks", 256))
                prompt = tables_for_texts(self.tokenizer, [context])
                ids = handle.generate(tables=prompt, max_new_tokens=max_new, do_sample=False)
                new_ids = ids[0, len(prompt[0]) :].tolist()
                out.append(_cut(self.tokenizer.decode(new_ids, skip_special_tokens=True), until))
        return out


def _cut(text: str, until: Sequence[str]) -> str:
    cut = len(text)
    for stop in until:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def make_lm(model, tokenizer, assignment: Assignment | None = None, batch_size: int = 8, pattern_fn: PatternFn | None = None):
    """An ``lm_eval.api.model.LM`` that runs ``model`` with the assignment's surrogate heads."""
    try:
        from lm_eval.api.model import LM
    except ImportError as error:
        raise UserError(
            "the lm-evaluation-harness is not installed; install the extra with `pip install 'attndsl[eval]'` "
            "(or `pip install lm-eval`)"
        ) from error

    core = SurrogateLMCore(model, tokenizer, assignment, batch_size, pattern_fn)

    class SurrogateLM(LM):
        """lm-eval model: requests' ``args`` tuples go to `SurrogateLMCore`."""

        def __init__(self):
            super().__init__()
            self.core = core

        def loglikelihood(self, requests):
            return self.core.loglikelihood([tuple(r.args) for r in requests])

        def loglikelihood_rolling(self, requests):
            return self.core.loglikelihood_rolling([r.args[0] for r in requests])

        def generate_until(self, requests):
            return self.core.generate_until([(r.args[0], r.args[1]) for r in requests])

    return SurrogateLM()
