"""The surrogate handle: programs attached to a model, and the inputs of each call.

`attach` switches the model's attention implementation to the ``"attndsl"``
function (`attndsl.surrogates.attention`, registered on first attach), gives
each replaced layer's attention module its heads and pattern indices, and
installs a forward pre-hook that, before every model call, works out each
batch row's real tokens and token table (given, or rebuilt from the ids with
the tokenizer, growing with a KV cache) and evaluates every program on every
row onto the padded grid.  `SurrogateHandle.detach` undoes all of it.
"""
from __future__ import annotations

import weakref
from typing import Mapping, Sequence

import torch

from attndsl.errors import UserError
from attndsl.extraction.features import TokenTable
from attndsl.extraction.model_facade import (
    attention_modules, batch_from_tables, model_shape, pad_id_of, position_ids_for, tables_for_texts,
)
from attndsl.surrogates.assignment import Assignment
from attndsl.surrogates.attention import ATTENTION_NAME, _LayerState, register
from attndsl.surrogates.patterns import PatternFn, default_pattern_fn
from attndsl.surrogates.tables import _IncrementalTable

#: Keyword names under which a causal LM's forward receives its KV cache.
#: transformers 5.x renamed ``past_key_values`` to ``cache`` (and dropped
#: ``cache_position``: positions now follow from the cache's length), so a
#: hook that only read ``past_key_values`` saw every decoding step as a fresh
#: sequence.  Both names are part of the public forward signatures of the
#: releases pyproject admits.
CACHE_KWARGS = ("cache", "past_key_values")


def cached_length(kwargs: Mapping[str, object]) -> int:
    """How many positions the KV cache passed to a forward call already holds (0: none).

    Reads the cache through its public API (``Cache.get_seq_length()``), under
    either keyword name (`CACHE_KWARGS`); a legacy tuple cache
    (``((key, value), ...)`` of ``[batch, heads, positions, dim]`` tensors)
    is read off its first key tensor.
    """
    for name in CACHE_KWARGS:
        past = kwargs.get(name)
        if past is None:
            continue
        if hasattr(past, "get_seq_length"):
            return int(past.get_seq_length())
        if isinstance(past, (tuple, list)) and past and isinstance(past[0], (tuple, list)) and past[0]:
            first = past[0][0]
            if isinstance(first, torch.Tensor):
                return int(first.shape[-2])
    return 0


class SurrogateHandle:
    """Surrogate heads attached to a model; `detach` (or leaving ``with``) restores it.

    ``handle.forward(texts)`` / ``handle.forward(tables=...)`` /
    ``handle.forward(input_ids=..., attention_mask=...)`` run the model with the
    programs in place; ``handle.logits(...)`` returns only the logits;
    ``handle.generate(...)`` generates with the KV cache.  Calling the model
    directly (``model(input_ids=...)``, ``model.generate``) also works while
    attached: the features are rebuilt from the ids with the tokenizer.
    """

    def __init__(self, model, assignment: Assignment, tokenizer=None, pattern_fn: PatternFn | None = None):
        self.model = model
        self.assignment = assignment
        self.tokenizer = tokenizer
        self.pattern_fn = pattern_fn or default_pattern_fn()
        self.programs = assignment.programs()
        self.attached = False
        self.pattern_seconds = 0.0  # time spent computing program matrices (for benchmarks)
        self._patterns: torch.Tensor | None = None  # [B, P, N, N] model dtype
        self._real: torch.Tensor | None = None  # bool [B, N]
        self._all_real = True
        self._pending_tables: list[TokenTable] | None = None
        self._rows: list[_IncrementalTable] | None = None
        self._ids: torch.Tensor | None = None  # [B, N] every position seen so far
        self._hook = None
        self._modules: list[torch.nn.Module] = []
        self._saved_impl: list[tuple[object, object]] = []

    # -- attach / detach
    def _attach(self) -> "SurrogateHandle":
        model = self.model
        if getattr(model, "_attndsl_handle", None) is not None:
            raise UserError("this model already has surrogate heads attached; detach them first")
        n_layers, n_heads = model_shape(model)
        self.assignment.check(n_layers, n_heads)
        modules = attention_modules(model)
        by_layer = self.assignment.by_layer()
        missing = sorted(set(by_layer) - set(modules))
        if missing:
            raise UserError(f"cannot find the attention module of layer(s) {missing} in {type(model).__name__}")
        device = next(model.parameters()).device
        register()  # the attention function, on first attach
        configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config") and hasattr(m.config, "_attn_implementation_internal")}
        self._saved_impl = [(c, c._attn_implementation_internal) for c in configs.values()]
        for config in configs.values():
            config._attn_implementation_internal = ATTENTION_NAME
        ref = weakref.ref(self)
        for layer, (heads, patterns) in by_layer.items():
            module = modules[layer]
            module._attndsl_state = _LayerState(
                ref,
                torch.tensor(heads, dtype=torch.long, device=device),
                torch.tensor(patterns, dtype=torch.long, device=device),
            )
            self._modules.append(module)
        if len(self.assignment):
            self._hook = model.register_forward_pre_hook(self._before_forward, with_kwargs=True)
        model._attndsl_handle = self
        self.attached = True
        return self

    def detach(self) -> None:
        """Remove every trace: hooks, per-layer state, attention implementation."""
        if not self.attached:
            return
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for module in self._modules:
            module.__dict__.pop("_attndsl_state", None)
        self._modules = []
        for config, impl in self._saved_impl:
            config._attn_implementation_internal = impl
        self._saved_impl = []
        self.model.__dict__.pop("_attndsl_handle", None)
        self._patterns = self._real = self._ids = None
        self._rows = self._pending_tables = None
        self.attached = False

    def __enter__(self) -> "SurrogateHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    # -- preparing a call
    @property
    def _device(self):
        return next(self.model.parameters()).device

    @property
    def _dtype(self):
        return next(self.model.parameters()).dtype

    def _before_forward(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise UserError("surrogate heads need input_ids (the features are computed from the tokens)")
        mask = kwargs.get("attention_mask")
        past_len = cached_length(kwargs)
        batch, q_len = input_ids.shape
        if past_len == 0:
            ids = input_ids
        else:
            if self._ids is None or self._ids.shape != (batch, past_len):
                raise RuntimeError(
                    "surrogate heads: this call continues a KV cache the surrogate model did not build "
                    "(or beam search reordered it)"
                )
            ids = torch.cat([self._ids, input_ids.to(self._ids.device)], dim=1)
        total = ids.shape[1]
        if mask is None or mask.dim() != 2 or mask.shape[1] != total:
            real = torch.ones((batch, total), dtype=torch.bool, device=ids.device)
        else:
            real = mask.to(ids.device).bool()
        tables = self._tables_for(ids, real, past_len)
        self._ids = ids
        self._prepare(tables, real)

    def _tables_for(self, ids: torch.Tensor, real: torch.Tensor, past_len: int) -> list[TokenTable]:
        pending, self._pending_tables = self._pending_tables, None
        rows_ids = [ids[b][real[b]].tolist() for b in range(ids.shape[0])]
        if past_len == 0 and pending is not None:
            for b, (table, row) in enumerate(zip(pending, rows_ids)):
                if [int(i) for i in table.token_id] != row:
                    raise ValueError(f"row {b}: the token table does not match the model's input ids")
            self._rows = None
            return list(pending)
        if self.tokenizer is None:
            raise UserError("surrogate heads need a tokenizer to compute features from token ids (attach(..., tokenizer=...))")
        if past_len == 0 or self._rows is None:
            self._rows = [_IncrementalTable(self.tokenizer) for _ in rows_ids]
            return [state.extend(row) for state, row in zip(self._rows, rows_ids)]
        tables = []
        for state, row in zip(self._rows, rows_ids):
            tables.append(state.extend(row[len(state.ids) :]))
        return tables

    def _prepare(self, tables: Sequence[TokenTable], real: torch.Tensor) -> None:
        """Evaluate every program on every row and lay the matrices out on the padded grid."""
        import time

        start = time.perf_counter()
        self.assignment.check_tables(tables)
        batch, total = real.shape
        raw = self.pattern_fn(self.programs, tables)
        raw = torch.as_tensor(raw).to(device=self._device, dtype=self._dtype)
        real = real.to(self._device)
        lengths = [len(t) for t in tables]
        if all(n == total for n in lengths) and raw.shape[-1] == total:
            patterns = raw
        else:
            patterns = torch.zeros((batch, len(self.programs), total, total), dtype=self._dtype, device=self._device)
            for b, n in enumerate(lengths):
                where = torch.nonzero(real[b]).flatten()
                if len(where) != n:
                    raise ValueError(f"row {b}: {n} token features for {len(where)} real tokens")
                patterns[b][:, where[:, None], where[None, :]] = raw[b, :, :n, :n]
        self._patterns, self._real = patterns, real
        self._all_real = bool(real.all())
        self.pattern_seconds += time.perf_counter() - start

    # -- running
    def _inputs(self, texts, tables, input_ids, attention_mask, padding_side):
        if texts is not None:
            if self.tokenizer is None:
                raise UserError("running on texts needs a tokenizer (attach(..., tokenizer=...))")
            tables = tables_for_texts(self.tokenizer, [texts] if isinstance(texts, str) else list(texts))
        if tables is not None:
            if input_ids is None:
                input_ids, attention_mask = batch_from_tables(tables, pad_id_of(self.tokenizer), padding_side)
            self._pending_tables = list(tables)
        if input_ids is None:
            raise ValueError("give texts, tables or input_ids")
        input_ids = torch.as_tensor(input_ids).to(self._device)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = torch.as_tensor(attention_mask).to(self._device)
        return input_ids, attention_mask

    @torch.no_grad()
    def forward(
        self,
        texts: str | Sequence[str] | None = None,
        *,
        tables: Sequence[TokenTable] | None = None,
        input_ids=None,
        attention_mask=None,
        padding_side: str = "right",
        **model_kwargs,
    ):
        """Run the model with surrogate heads; returns the model's output object."""
        if not self.attached:
            raise RuntimeError("surrogate heads were detached")
        input_ids, attention_mask = self._inputs(texts, tables, input_ids, attention_mask, padding_side)
        model_kwargs.setdefault("position_ids", position_ids_for(attention_mask))
        model_kwargs.setdefault("use_cache", False)
        try:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **model_kwargs)
        finally:
            self._pending_tables = None

    def logits(self, texts=None, **kwargs) -> torch.Tensor:
        return self.forward(texts, **kwargs).logits

    @torch.no_grad()
    def generate(
        self,
        texts: str | Sequence[str] | None = None,
        *,
        tables: Sequence[TokenTable] | None = None,
        input_ids=None,
        attention_mask=None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """``model.generate`` with surrogate heads (prompts left-padded); returns the token ids."""
        if not self.attached:
            raise RuntimeError("surrogate heads were detached")
        if self.tokenizer is None and len(self.assignment):
            raise UserError("generation with surrogate heads needs a tokenizer (attach(..., tokenizer=...))")
        input_ids, attention_mask = self._inputs(texts, tables, input_ids, attention_mask, "left")
        generate_kwargs.setdefault("pad_token_id", pad_id_of(self.tokenizer))
        try:
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
        finally:
            self._pending_tables = None


def attach(model, assignment: Assignment, tokenizer=None, pattern_fn: PatternFn | None = None) -> SurrogateHandle:
    """Put the assignment's programs in place of its heads; returns the handle (a context manager).

    Raises `UserError` before the model runs for heads outside the model or a
    model that already has surrogates; a program that needs syntax features
    raises `UserError` at the first call whose token features carry none.
    ``pattern_fn`` defaults to `default_pattern_fn()`.
    """
    from attndsl.threads import apply_env

    apply_env()  # $ATTNDSL_THREADS sizes torch's and Numba's pools together
    return SurrogateHandle(model, assignment, tokenizer, pattern_fn)._attach()


def detach(handle: SurrogateHandle) -> None:
    handle.detach()
