"""The ``"attndsl"`` attention function: program matrices in place of heads' probabilities.

See `attndsl.surrogates.surrogate` for what it does per attention call.
`register` adds it to transformers' `AttentionInterface` (and the eager mask
builder under the same name to `AttentionMaskInterface`); the handle calls it
on first attach, so importing attndsl changes nothing in transformers until
surrogate heads are used.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    import weakref

    from attndsl.surrogates.handle import SurrogateHandle

ATTENTION_NAME = "attndsl"

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


_registered = False


def register() -> None:
    """Register the attention function and its mask builder as ``"attndsl"`` (once per process)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_NAME, surrogate_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
    _registered = True
