"""The model facade (`attndsl.extraction.model_facade`) and the attention function's lazy registration."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from attndsl.extraction import model_facade
from tests import tiny


def _declared_rule(model) -> list:
    """Extraction's rule before the facade: the modules transformers records attentions from."""
    target = (getattr(model, "_can_record_outputs", None) or {}).get("attentions")
    if target is None:
        return []
    cls, layer_name = getattr(target, "target_class", target), getattr(target, "layer_name", None)
    return [m for name, m in model.named_modules()
            if isinstance(m, cls) and (layer_name is None or name.endswith(layer_name.lstrip(".")))]


def _surrogate_rule(model) -> dict:
    """The surrogate heads' rule before the facade: ``*Attention`` modules with a layer index, no cross-attention."""
    found = {}
    for name, module in model.named_modules():
        layer = getattr(module, "layer_idx", None)
        if layer is None or not type(module).__name__.endswith("Attention"):
            continue
        if getattr(module, "is_cross_attention", False) or "crossattention" in name:
            continue
        found.setdefault(int(layer), module)
    return found


@pytest.mark.parametrize("kind", sorted(tiny.FAMILIES))
def test_one_finder_agrees_with_both_old_rules(kind):
    """On every model family the tests cover, the one finder returns what extraction and the
    surrogate heads each found before (so neither changes behaviour)."""
    build, _ = tiny._KINDS[kind]
    model = build()
    modules = model_facade.attention_modules(model)
    n_layers, _ = model_facade.model_shape(model)
    assert list(modules) == list(range(n_layers))
    assert modules == _surrogate_rule(model)
    declared = _declared_rule(model)
    if declared:
        assert [m for _, m in sorted((int(m.layer_idx), m) for m in declared)] == list(modules.values())


def test_padding_and_positions():
    ids, mask = model_facade.pad_ids([[5, 6, 7], [8]], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [8, 2, 2]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = model_facade.pad_ids([[5, 6, 7], [8]], pad_id=2, padding_side="left")
    assert ids.tolist() == [[5, 6, 7], [2, 2, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert model_facade.position_ids_for(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long


def test_batch_logits_without_a_handle_is_the_plain_model():
    model, tokenizer = tiny.tiny_gpt2(), tiny.bpe_tokenizer()
    tables = model_facade.tables_for_texts(tokenizer, ["Once upon a time, a dog.", "Max ran."])
    pad = model_facade.pad_id_of(tokenizer)
    with torch.no_grad():
        ids, mask, logits = model_facade.batch_logits(model, tables, pad)
        want = model(input_ids=ids, attention_mask=mask, position_ids=model_facade.position_ids_for(mask),
                     use_cache=False).logits
    assert torch.equal(logits, want)


def test_attention_function_is_registered_on_first_attach_not_at_import():
    code = (
        "from transformers import AttentionInterface\n"
        "import attndsl.surrogates.surrogate as s\n"
        "import attndsl.surrogates.replace, attndsl.surrogates.qa\n"
        "assert s.ATTENTION_NAME not in AttentionInterface(), 'registered at import'\n"
        "from tests import tiny\n"
        "from attndsl.language.validate import compile_program\n"
        "p = compile_program('program first { 1 * [k == 0] }')\n"
        "with s.attach(tiny.tiny_gpt2(), s.Assignment.from_items([(0, 0, p)]), tiny.bpe_tokenizer()):\n"
        "    assert s.ATTENTION_NAME in AttentionInterface()\n"
        "assert s.ATTENTION_NAME in AttentionInterface()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
