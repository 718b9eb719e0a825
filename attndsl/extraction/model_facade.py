"""One view of a causal language model, shared by every stage that runs one.

Extraction (`attndsl.extraction.extract`), the surrogate heads
(`attndsl.surrogates.handle`), perplexity (`attndsl.surrogates.perplexity`) and
question answering (`attndsl.surrogates.qa`) all need the same few facts and
inputs; they are defined once here:

- **shape**: `model_shape` (layers, heads per layer), `model_dims` (with the
  key/value heads), read from the text config (`text_config`);
- **attention modules**: `attention_modules`, layer → self-attention module,
  the one finder both the recording hooks and the surrogate attention use;
- **inputs**: `tables_for_texts` (token features, as extraction builds them),
  `pad_ids` / `batch_from_tables` (padded ids and 2-D mask), `position_ids_for`
  (positions over real tokens only), `pad_id_of`;
- **logits**: `batch_logits`, one batch of token tables through the model,
  with the programs of an attached surrogate handle in place when one is given.

torch and transformers are imported lazily, so the extraction package stays
importable without them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from attndsl.errors import UserError
from attndsl.extraction.features import TokenTable

if TYPE_CHECKING:
    import torch


# --------------------------------------------------------------- shape


def text_config(model):
    """The config that describes the language model (the text part of a multimodal config)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_shape(model) -> tuple[int, int]:
    """(layers, heads per layer) of a causal LM."""
    config = text_config(model)
    n_layers = int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer"))
    n_heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head"))
    return n_layers, n_heads


def model_dims(model) -> tuple[int, int, int]:
    """(layers, heads per layer, key/value heads per layer) of a causal LM."""
    n_layers, n_heads = model_shape(model)
    n_kv = int(getattr(text_config(model), "num_key_value_heads", None) or n_heads)
    return n_layers, n_heads, n_kv


def model_device(model):
    """The device of the model's (first) parameters."""
    return next(model.parameters()).device


# --------------------------------------------------------------- attention modules


def attention_modules(model) -> dict:
    """layer index → self-attention module, in layer order.

    Uses the model's ``_can_record_outputs["attentions"]`` declaration (what
    transformers itself hooks for ``output_attentions``: the modules whose
    second output is the attention probabilities, i.e. the ones that call the
    attention function); falls back to modules whose class name ends in
    ``Attention`` and that carry a ``layer_idx``, cross-attention excluded.
    The first module found for a layer is that layer's.
    """
    declared = getattr(model, "_can_record_outputs", None) or {}
    target = declared.get("attentions")
    found = []
    if target is not None:
        target_class = getattr(target, "target_class", target)
        layer_name = getattr(target, "layer_name", None)
        for name, module in model.named_modules():
            if isinstance(module, target_class) and (layer_name is None or name.endswith(layer_name.lstrip("."))):
                found.append(module)
    if not found:
        for name, module in model.named_modules():
            if getattr(module, "layer_idx", None) is None or not type(module).__name__.endswith("Attention"):
                continue
            if getattr(module, "is_cross_attention", False) or "crossattention" in name:
                continue
            found.append(module)
    layered: dict = {}
    for i, module in enumerate(found):
        layered.setdefault(int(getattr(module, "layer_idx", i)), module)
    return dict(sorted(layered.items()))


# --------------------------------------------------------------- inputs


def tables_for_texts(tokenizer, texts: Sequence[str]) -> list[TokenTable]:
    """Feature tables (and so token ids) for texts, as extraction builds them."""
    from attndsl.extraction.tokens import token_table

    return [token_table(tokenizer, text) for text in texts]


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int = 0, padding_side: str = "right") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Padded input_ids and 2-D attention mask (int64 [B, n]) from token-id rows."""
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    n = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), n), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for b, row in enumerate(rows):
        m = len(row)
        cols = slice(0, m) if padding_side == "right" else slice(n - m, n)
        ids[b, cols] = torch.as_tensor(np.asarray(row), dtype=torch.long)
        mask[b, cols] = 1
    return ids, mask


def batch_from_tables(
    tables: Sequence[TokenTable], pad_id: int = 0, padding_side: str = "right"
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Padded input_ids and 2-D attention mask (int64 [B, n]) from tables' token ids."""
    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    if any(len(t) == 0 for t in tables):
        raise UserError("cannot run the model on an empty sequence")
    return pad_ids([t.token_id for t in tables], pad_id, padding_side)


def position_ids_for(mask: "torch.Tensor") -> "torch.Tensor":
    """Positions counted over real tokens only (so left padding does not shift them)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def pad_id_of(tokenizer) -> int:
    """The id padding positions get: the tokenizer's pad, else EOS, else UNK token (0 without one)."""
    if tokenizer is None:
        return 0
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


# --------------------------------------------------------------- logits


def batch_logits(model, tables: Sequence[TokenTable], pad_id: int, handle=None):
    """(input_ids, attention_mask, logits) of one right-padded batch of token tables.

    With ``handle`` (an attached `attndsl.surrogates.handle.SurrogateHandle`)
    the handle runs the model with its programs in place; without, the model
    runs as it is, with positions over real tokens and no KV cache.  The ids
    and mask stay on the CPU; the logits are on the model's device.
    """
    ids, mask = batch_from_tables(tables, pad_id)
    if handle is not None:
        return ids, mask, handle.logits(tables=list(tables))
    device = model_device(model)
    ids_d, mask_d = ids.to(device), mask.to(device)
    logits = model(input_ids=ids_d, attention_mask=mask_d, position_ids=position_ids_for(mask_d), use_cache=False).logits
    return ids, mask, logits
