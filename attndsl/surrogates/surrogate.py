"""Surrogate heads: put programs in place of attention heads inside the model.

A program replaces a head by substituting its matrix for the head's attention
*probabilities* before they multiply V (DESIGN.md, "Surrogate heads").  The
substitution goes through transformers' attention interface: this module
registers an attention function named ``"attndsl"`` with
`transformers.AttentionInterface` and the eager mask builder under the same
name with `transformers.AttentionMaskInterface`, and `attach` switches the
model's attention implementation to it (`detach` switches back).

What the attention function does, per attention module call:

- a layer with no replaced head calls the model's own eager attention function
  (``eager_attention_forward`` of the model's modeling module) and returns its
  result untouched, so those layers are bit-identical to eager and pay only a
  dictionary lookup;
- a layer with replaced heads calls the same eager function (which computes
  ``softmax(QKᵀ·scale + mask)`` with grouped-query attention through
  ``repeat_kv``, rotary embeddings already applied by the model, sliding
  windows and padding coming in through the mask), overwrites the chosen
  heads' probability rows with the program's matrix, and multiplies the
  probabilities by the repeated V again exactly as eager does.  Substituting a
  head's own probabilities therefore reproduces the logits bit for bit.

Which matrix: an `Assignment` maps (layer, head) to an `ir.Program`.  Before
each model call a forward pre-hook on the model works out the token sequence
of every batch row (its real tokens: the 2-D attention mask says which
positions are padding, left or right), the rows' `TokenTable`s (given
explicitly, or rebuilt from the token ids with the tokenizer), and evaluates
every distinct program on every row with ``pattern_fn(programs, tables)``
(default: the compiled kernels' torch bridge when it is installed, else the
reference interpreter).  The per-row matrices are scattered onto the padded
layout (real query rows × real keys; padding rows keep the model's own
probabilities, padding keys get 0) as one tensor on the model's device and in
its dtype.  With a KV cache (``model.generate``) the hook extends each row's
token ids with the new tokens, rebuilds the features from the decoded text as
it grows, and the attention function takes the program rows of the new query
positions against all keys.

Limits (documented rather than guessed): the substitution assumes the model's
eager attention output is ``probabilities @ V`` (true for GPT-2, Llama, Mistral,
Qwen, Gemma families; not for attention sinks with extra logits); dropout is
not applied to substituted heads (use eval mode); beam search reorders cache
rows behind the hook's back and is not supported (greedy and sampling are).
"""
from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from attndsl.language import ir
from attndsl.errors import AttnError, UserError
from attndsl.extraction.features import TokenTable

ATTENTION_NAME = "attndsl"

#: pattern_fn(programs, tables) -> array/tensor [B, P, m, m] (m = longest table; shorter
#: tables top-left aligned), row-stochastic causal matrices of each program on each table
PatternFn = Callable[[Sequence[ir.Program], Sequence[TokenTable]], "np.ndarray | torch.Tensor"]

UNIFORM_SOURCE = "program uniform {\n    fallback uniform\n    1\n}\n"


def uniform_program() -> ir.Program:
    """The uniform causal pattern (1/(q+1) on every k ≤ q): the baseline of the paper."""
    from attndsl.language.validate import compile_program

    return compile_program(UNIFORM_SOURCE, "<uniform>")


# --------------------------------------------------------------- assignments


@dataclass(frozen=True)
class Assignment:
    """Which heads are replaced and by which program: (layer, head) → program.

    Build with `Assignment.of({(layer, head): program, ...})` or
    `Assignment.from_items([(layer, head, program), ...])`.  Distinct programs
    are evaluated once per batch however many heads share them.
    """

    items: tuple[tuple[int, int, ir.Program], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[tuple[int, int], ir.Program]) -> "Assignment":
        return cls.from_items((layer, head, program) for (layer, head), program in mapping.items())

    @classmethod
    def from_items(cls, items: Iterable[tuple[int, int, ir.Program]]) -> "Assignment":
        seen: dict[tuple[int, int], ir.Program] = {}
        for layer, head, program in items:
            if not isinstance(program, ir.Program):
                raise UserError(f"head L{layer}H{head}: expected a compiled program, got {type(program).__name__}")
            key = (int(layer), int(head))
            if key in seen:
                raise UserError(f"head L{layer}H{head} is assigned twice")
            seen[key] = program
        return cls(tuple((layer, head, program) for (layer, head), program in sorted(seen.items())))

    @classmethod
    def uniform(cls, heads: Iterable[tuple[int, int]]) -> "Assignment":
        """The uniform causal baseline in the given heads."""
        program = uniform_program()
        return cls.from_items((layer, head, program) for layer, head in heads)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def heads(self) -> list[tuple[int, int]]:
        return [(layer, head) for layer, head, _ in self.items]

    def programs(self) -> list[ir.Program]:
        """Distinct programs in first-use order (their index is the pattern index)."""
        index = self._program_index()
        return list(index)

    def _program_index(self) -> dict[ir.Program, int]:
        index: dict[ir.Program, int] = {}
        for _, _, program in self.items:
            index.setdefault(program, len(index))
        return index

    def check_tables(self, tables: Sequence[TokenTable]) -> None:
        """Raise `UserError` if a program needs syntax features the tables do not carry."""
        needs = sorted({p.name for _, _, p in self.items if p.uses_syntax})
        if needs and not all(t.has_syntax for t in tables):
            raise UserError(
                f"program(s) {', '.join(needs)} use syntax features but the token features of this input "
                "have none (extract the run with --syntax; text generated on the fly has no syntax)"
            )

    def by_layer(self) -> dict[int, tuple[list[int], list[int]]]:
        """layer → (head indices, pattern indices) of that layer's replaced heads."""
        index = self._program_index()
        out: dict[int, tuple[list[int], list[int]]] = {}
        for layer, head, program in self.items:
            heads, patterns = out.setdefault(layer, ([], []))
            heads.append(head)
            patterns.append(index[program])
        return out

    def check(self, n_layers: int, n_heads: int) -> None:
        """Raise `UserError` for heads outside the model."""
        problems = [
            f"head L{layer}H{head} does not exist (the model has {n_layers} layers × {n_heads} heads)"
            for layer, head, _ in self.items
            if not (0 <= layer < n_layers and 0 <= head < n_heads)
        ]
        if problems:
            shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
            raise UserError("bad head assignment:\n  " + "\n  ".join(shown))


def compile_assignment(entries: Iterable[tuple[int, int, str]], library: Mapping[str, ir.Program] | None = None) -> Assignment:
    """An assignment from (layer, head, program source or library name).

    A name found in ``library`` is taken from it; anything else is compiled as
    DSL source.  Every failure (unknown name, program that does not compile)
    is collected and raised as one `UserError` before any model runs.
    """
    from attndsl.language.validate import compile_program

    items, problems = [], []
    for layer, head, text in entries:
        if library is not None and text in library:
            items.append((layer, head, library[text]))
            continue
        try:
            items.append((layer, head, compile_program(text, f"<L{layer}H{head}>")))
        except AttnError as error:
            problems.append(f"head L{layer}H{head}: program does not compile:\n{error.render()}")
    if problems:
        raise UserError("bad head assignment:\n" + "\n".join(problems))
    return Assignment.from_items(items)


# --------------------------------------------------------------- patterns


def interpreter_patterns(programs: Sequence[ir.Program], tables: Sequence[TokenTable]) -> np.ndarray:
    """Reference pattern_fn: `attndsl.language.interpreter.evaluate` per program and table."""
    from attndsl.language.interpreter import evaluate

    m = max((len(t) for t in tables), default=0)
    out = np.zeros((len(tables), len(programs), m, m), dtype=np.float32)
    for b, table in enumerate(tables):
        n = len(table)
        for p, program in enumerate(programs):
            out[b, p, :n, :n] = evaluate(program, table)
    return out


def kernel_patterns(programs: Sequence[ir.Program], tables: Sequence[TokenTable]) -> "torch.Tensor":
    """pattern_fn on the compiled kernels (`attndsl.surrogates.torch_bridge.attention_tensors`)."""
    from attndsl.extraction.batch import TokenBatch
    from attndsl.surrogates.torch_bridge import attention_tensors

    return attention_tensors(list(programs), TokenBatch.from_tables(list(tables)))


def default_pattern_fn() -> PatternFn:
    """The kernels' torch bridge when it is installed, else the reference interpreter.

    Imported lazily, so surrogate heads work (slower) without the kernels.
    """
    try:
        from attndsl.surrogates import torch_bridge  # noqa: F401
        from attndsl.kernels import evaluate_programs  # noqa: F401
    except ImportError:
        return interpreter_patterns
    return kernel_patterns


# --------------------------------------------------------------- token tables


def table_for_ids(tokenizer, ids: Sequence[int]) -> TokenTable:
    """Features of a token-id sequence, from its decoded text.

    Used where only ids exist (generation, raw ``model(input_ids)`` calls): each
    token's span is where its text ends up in the decoded prefix; special
    tokens (BOS) get their literal text and an empty span, as in
    `attndsl.extraction.tokens.token_table`.
    """
    return _IncrementalTable(tokenizer).extend(ids)


class _IncrementalTable:
    """Decoded text and token spans of a growing id sequence (one decode per new token)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.ids: list[int] = []
        self.ordinary: list[int] = []
        self.text = ""
        self.offsets: list[tuple[int, int]] = []
        self.special: list[int] = []

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def extend(self, new_ids: Sequence[int]) -> TokenTable:
        from attndsl.extraction.tokens import table_from_ids

        changed = False
        for token in (int(i) for i in new_ids):
            self.ids.append(token)
            if token in self.special_ids:
                self.offsets.append((len(self.text), len(self.text)))
                self.special.append(1)
                continue
            self.ordinary.append(token)
            text = self._decode(self.ordinary)
            changed = changed or not text.startswith(self.text)
            self.offsets.append((min(len(self.text), len(text)), len(text)))
            self.special.append(0)
            self.text = text
        if changed:
            return self._rebuild()
        return table_from_ids(self.tokenizer, self.text, self.ids, self.offsets, self.special)

    def _rebuild(self) -> TokenTable:
        """Decoding changed earlier text (a multi-byte character completed): redo all spans."""
        ids = list(self.ids)
        self.__init__(self.tokenizer)
        # decode prefix by prefix; a span may only grow monotonically
        for token in ids:
            self.ids.append(token)
            if token in self.special_ids:
                self.offsets.append((len(self.text), len(self.text)))
                self.special.append(1)
                continue
            self.ordinary.append(token)
            text = self._decode(self.ordinary)
            common = _common_prefix(self.text, text)
            start = min(common, len(self.text))
            if start < len(self.text):  # earlier tokens' text changed: they share this token's span
                self.offsets = [(min(s, start), min(e, len(text))) for s, e in self.offsets]
            self.offsets.append((start, len(text)))
            self.special.append(0)
            self.text = text
        from attndsl.extraction.tokens import table_from_ids

        return table_from_ids(self.tokenizer, self.text, self.ids, self.offsets, self.special)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def tables_for_texts(tokenizer, texts: Sequence[str]) -> list[TokenTable]:
    """Feature tables (and so token ids) for texts, as extraction builds them."""
    from attndsl.extraction.tokens import token_table

    return [token_table(tokenizer, text) for text in texts]


def batch_from_tables(
    tables: Sequence[TokenTable], pad_id: int = 0, padding_side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded input_ids and 2-D attention mask (int64 [B, n]) from tables' token ids."""
    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    n = max((len(t) for t in tables), default=0)
    ids = torch.full((len(tables), n), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(tables), n), dtype=torch.long)
    for b, table in enumerate(tables):
        m = len(table)
        if m == 0:
            raise UserError("cannot run the model on an empty sequence")
        cols = slice(0, m) if padding_side == "right" else slice(n - m, n)
        ids[b, cols] = torch.as_tensor(np.asarray(table.token_id), dtype=torch.long)
        mask[b, cols] = 1
    return ids, mask


def position_ids_for(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (so left padding does not shift them)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def pad_id_of(tokenizer) -> int:
    if tokenizer is None:
        return 0
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


# --------------------------------------------------------------- attention function


@dataclass(eq=False)
class _LayerState:
    handle: "weakref.ref[SurrogateHandle]"
    heads: torch.Tensor  # long [h]
    patterns: torch.Tensor  # long [h], index into the handle's pattern tensor


_EAGER_CACHE: dict[type, Callable] = {}


def _eager_function(module) -> Callable:
    """The model's own eager attention function (its modeling module's ``eager_attention_forward``)."""
    cls = type(module)
    fn = _EAGER_CACHE.get(cls)
    if fn is None:
        fn = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None)
        if fn is None:
            from transformers.models.llama.modeling_llama import eager_attention_forward as fn
        _EAGER_CACHE[cls] = fn
    return fn


def surrogate_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The ``"attndsl"`` attention implementation (see the module docstring)."""
    eager = _eager_function(module)
    state: _LayerState | None = module.__dict__.get("_attndsl_state")
    if state is None:
        return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    handle = state.handle()
    if handle is None or handle._patterns is None:
        raise RuntimeError("surrogate heads are attached but no token features were prepared for this call")
    output, weights = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    patterns, real = handle._patterns, handle._real
    total = patterns.shape[-1]
    q_len, kv_len = query.shape[-2], key.shape[-2]
    if weights.shape[0] != patterns.shape[0] or kv_len > total:
        raise RuntimeError(
            f"surrogate heads: attention call of shape {tuple(weights.shape)} does not match the prepared "
            f"batch ({patterns.shape[0]} rows, {total} positions)"
        )
    block = patterns[:, state.patterns, total - q_len :, total - kv_len :].to(weights.dtype)
    windowed = kwargs.get("sliding_window") is not None or getattr(module, "sliding_window", None) is not None
    if windowed or kv_len < total:
        block = _restrict_to_mask(block, patterns, state.patterns, attention_mask, total, q_len, kv_len)
    if handle._all_real:
        replaced = block
    else:  # padding query rows keep the model's own probabilities
        replaced = torch.where(real[:, None, total - q_len :, None], block, weights[:, state.heads])
    # only the replaced heads are recomputed: probabilities @ their (grouped) V, as eager does per head
    group = query.shape[1] // value.shape[1]
    replaced_output = torch.matmul(replaced, value[:, state.heads // group])
    if torch.is_grad_enabled():  # keep eager's tensors intact for autograd
        weights, output = weights.clone(), output.clone()
    weights[:, state.heads] = replaced
    output[:, :, state.heads] = replaced_output.transpose(1, 2)
    return output, weights


def _restrict_to_mask(block, patterns, index, attention_mask, total, q_len, kv_len):
    """Keep a program row inside what the layer may see (sliding windows, cache windows).

    A program attends over every k ≤ q; a sliding-window layer only sees the
    last keys (the mask says which, and a sliding cache holds only those).
    Mass the program puts outside is dropped and the row renormalised; a row
    left empty attends to the query itself.  Rows entirely inside are not
    touched, so a head's own attention passes through bit for bit.  Called only
    for windowed layers (``sliding_window`` set) or when the cache holds fewer
    keys than the sequence: in a plain causal layer padding and future keys
    already get 0.
    """
    if attention_mask is not None and attention_mask.dim() == 4:
        mask = attention_mask[..., -kv_len:]
        if mask.dtype == torch.bool:
            allowed = mask
        else:
            allowed = mask > torch.finfo(mask.dtype).min / 2
        kept = block * allowed
        lost = (block - kept).sum(-1)
    else:
        kept, lost = block, torch.zeros(block.shape[:-1], dtype=block.dtype, device=block.device)
    if kv_len < total:  # keys that fell out of a sliding cache
        lost = lost + patterns[:, index, total - q_len :, : total - kv_len].sum(-1).to(block.dtype)
    fix = lost > 0
    if not bool(fix.any()):
        return block
    sums = kept.sum(-1, keepdim=True)
    own = torch.zeros_like(block)
    own[..., torch.arange(q_len, device=block.device), torch.arange(kv_len - q_len, kv_len, device=block.device)] = 1.0
    renormalised = torch.where(sums > 0, kept / sums.clamp_min(torch.finfo(block.dtype).tiny), own)
    return torch.where(fix[..., None], renormalised, block)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_NAME, surrogate_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


_register()


# --------------------------------------------------------------- the handle

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



def _attention_modules(model) -> dict[int, torch.nn.Module]:
    """layer index → self-attention module (modules carrying ``layer_idx`` and projections)."""
    found: dict[int, torch.nn.Module] = {}
    for name, module in model.named_modules():
        layer = getattr(module, "layer_idx", None)
        if layer is None or not type(module).__name__.endswith("Attention"):
            continue
        if getattr(module, "is_cross_attention", False) or "crossattention" in name:
            continue
        found.setdefault(int(layer), module)
    return found


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_shape(model) -> tuple[int, int]:
    """(layers, heads per layer) of a causal LM."""
    config = _text_config(model)
    n_layers = int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer"))
    n_heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head"))
    return n_layers, n_heads


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
        modules = _attention_modules(model)
        by_layer = self.assignment.by_layer()
        missing = sorted(set(by_layer) - set(modules))
        if missing:
            raise UserError(f"cannot find the attention module of layer(s) {missing} in {type(model).__name__}")
        device = next(model.parameters()).device
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
