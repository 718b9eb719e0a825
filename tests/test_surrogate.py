"""Surrogate heads: substitution inside the model through the attention interface.

The identity tests inject each head's own recorded eager probabilities as the
"program" and demand bit-identical logits; other tests check that programs
really change the computation where (and only where) they should.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attndsl.surrogates import surrogate
from attndsl.errors import UserError
from attndsl.language.interpreter import evaluate
from attndsl.surrogates.surrogate import Assignment, attach, batch_from_tables, position_ids_for
from attndsl.language.validate import compile_program
from tests import tiny

TEXTS = [
    "Once upon a time, there was a little dog named Max.",
    "Max loved to run in the park.",
    "One day, Max saw a big red ball. \"Can I play?\" he asked.",
]

PREV = compile_program("program prev { fallback self\n 1 * [k == q - 1] }")
FIRST = compile_program("program first { 1 * [k == 0] }")

#: the five families: GPT-2 (fused c_attn), Llama (GQA), Mistral (sliding window),
#: Qwen2 (biased projections), Gemma-3 (sliding + global layers, q/k norms, query_pre_attn_scalar)
MODELS = {kind: tiny._KINDS[kind] for kind in tiny.FAMILIES}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_and_tokenizer(request):
    build, make_tokenizer = MODELS[request.param]
    return build(), make_tokenizer()


def _tables(tokenizer, texts=TEXTS):
    return surrogate.tables_for_texts(tokenizer, texts)


def _eager_run(model, ids, mask, **kwargs):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask), use_cache=False, **kwargs)


def _own_attention_pattern_fn(attentions, real):
    """pattern_fn that returns each head's recorded eager probabilities (program name = L_H)."""

    def fn(programs, tables):
        m = max(len(t) for t in tables)
        out = torch.zeros((len(tables), len(programs), m, m), dtype=attentions[0].dtype)
        for p, program in enumerate(programs):
            layer, head = (int(x) for x in program.name.split("_")[1:])
            for b, table in enumerate(tables):
                where = torch.nonzero(real[b]).flatten()
                n = len(where)
                assert n == len(table)
                out[b, p, :n, :n] = attentions[layer][b, head][where[:, None], where[None, :]]
        return out

    return fn


def _own_assignment(model, layers_heads):
    items = [(l, h, compile_program(f"program own_{l}_{h} {{ 1 }}")) for l, h in layers_heads]
    return Assignment.from_items(items)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_identity_own_attention_reproduces_logits_exactly(model_and_tokenizer, padding_side):
    model, tokenizer = model_and_tokenizer
    tables = _tables(tokenizer)
    ids, mask = batch_from_tables(tables, surrogate.pad_id_of(tokenizer), padding_side)
    reference = _eager_run(model, ids, mask, output_attentions=True)
    n_layers, n_heads = surrogate.model_shape(model)
    every_head = [(l, h) for l in range(n_layers) for h in range(n_heads)]
    fn = _own_attention_pattern_fn(reference.attentions, mask.bool())
    with attach(model, _own_assignment(model, every_head), tokenizer, pattern_fn=fn) as handle:
        logits = handle.logits(tables=tables, padding_side=padding_side)
    assert torch.equal(logits, reference.logits)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_identity_holds_in_half_precision(model_and_tokenizer, dtype):
    """bf16/fp16 models (the GPU path's dtypes): own attention substituted is still bit-identical."""
    import copy

    model, tokenizer = model_and_tokenizer
    model = copy.deepcopy(model).to(dtype)
    tables = _tables(tokenizer)
    ids, mask = batch_from_tables(tables, surrogate.pad_id_of(tokenizer), "left")
    reference = _eager_run(model, ids, mask, output_attentions=True)
    assert reference.logits.dtype == dtype
    n_layers, n_heads = surrogate.model_shape(model)
    every_head = [(l, h) for l in range(n_layers) for h in range(n_heads)]
    fn = _own_attention_pattern_fn(reference.attentions, mask.bool())
    with attach(model, _own_assignment(model, every_head), tokenizer, pattern_fn=fn) as handle:
        assert torch.equal(handle.logits(tables=tables, padding_side="left"), reference.logits)
    with attach(model, Assignment.from_items([(0, 0, PREV)]), tokenizer) as handle:  # programs cast to the model dtype
        assert handle.logits(tables=tables).dtype == dtype and handle._patterns.dtype == dtype


def test_empty_assignment_is_bit_identical_to_eager(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    tables = _tables(tokenizer)
    ids, mask = batch_from_tables(tables, surrogate.pad_id_of(tokenizer))
    reference = _eager_run(model, ids, mask).logits
    with attach(model, Assignment(), tokenizer) as handle:
        assert model.config._attn_implementation == surrogate.ATTENTION_NAME
        logits = handle.logits(tables=tables)
    assert torch.equal(logits, reference)


def test_detach_restores_model_exactly(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    tables = _tables(tokenizer)
    ids, mask = batch_from_tables(tables, surrogate.pad_id_of(tokenizer))
    before_impl = model.config._attn_implementation
    reference = _eager_run(model, ids, mask).logits
    handle = attach(model, Assignment.from_items([(0, 1, PREV)]), tokenizer)
    changed = handle.logits(tables=tables)
    handle.detach()
    assert not torch.equal(changed, reference)
    assert model.config._attn_implementation == before_impl
    assert not any("_attndsl_state" in m.__dict__ for m in model.modules())
    assert not model._forward_pre_hooks
    assert torch.equal(_eager_run(model, ids, mask).logits, reference)


def test_program_replaces_only_its_head(model_and_tokenizer):
    """The layer's returned probabilities: the replaced head equals the program on real tokens,
    every other head equals eager."""
    model, tokenizer = model_and_tokenizer
    tables = _tables(tokenizer)
    ids, mask = batch_from_tables(tables, surrogate.pad_id_of(tokenizer), "left")
    reference = _eager_run(model, ids, mask, output_attentions=True)
    with attach(model, Assignment.from_items([(0, 1, PREV)]), tokenizer) as handle:
        out = handle.forward(tables=tables, padding_side="left", output_attentions=True)
    got, want = out.attentions[0], reference.attentions[0]
    n_heads = got.shape[1]
    others = [h for h in range(n_heads) if h != 1]
    assert torch.equal(got[:, others], want[:, others])
    for b, table in enumerate(tables):
        where = torch.nonzero(mask[b]).flatten()
        sub = got[b, 1][where[:, None], where[None, :]].double().numpy()
        np.testing.assert_allclose(sub, evaluate(PREV, table), atol=1e-6)
    # layers after the replaced one see a different residual stream
    assert not torch.allclose(out.logits, reference.logits)


def test_padding_does_not_change_real_token_logits(model_and_tokenizer):
    """Per-sequence runs and left/right-padded batches agree on real tokens."""
    model, tokenizer = model_and_tokenizer
    tables = _tables(tokenizer)
    assignment = Assignment.from_items([(0, 0, PREV), (1, 2, FIRST)])
    with attach(model, assignment, tokenizer) as handle:
        singles = [handle.logits(tables=[t])[0] for t in tables]
        for side in ("left", "right"):
            _, mask = batch_from_tables(tables, 0, side)
            batched = handle.logits(tables=tables, padding_side=side)
            for b, single in enumerate(singles):
                real = batched[b][mask[b].bool()]
                torch.testing.assert_close(real, single, atol=1e-5, rtol=1e-5)


def test_texts_and_raw_ids_give_same_logits_as_tables(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    tables = _tables(tokenizer, TEXTS[:1])
    with attach(model, Assignment.from_items([(0, 0, PREV)]), tokenizer) as handle:
        from_tables = handle.logits(tables=tables)
        from_texts = handle.logits(TEXTS[:1])
        ids = torch.as_tensor(tables[0].token_id)[None]
        with torch.no_grad():
            from_model = model(input_ids=ids).logits  # raw call: features rebuilt from ids
    assert torch.equal(from_tables, from_texts)
    assert torch.equal(from_tables, from_model)


def test_generation_with_kv_cache_matches_full_forward(model_and_tokenizer):
    """Greedy decoding with the cache equals re-running the whole sequence each step."""
    model, tokenizer = model_and_tokenizer
    assignment = Assignment.from_items([(0, 0, PREV), (1, 1, FIRST)])
    prompts = TEXTS[:2]
    with attach(model, assignment, tokenizer) as handle:
        out = handle.generate(prompts, max_new_tokens=5, do_sample=False)
        prompt_tables = _tables(tokenizer, prompts)
        width = max(len(t) for t in prompt_tables)
        for b, table in enumerate(prompt_tables):
            ids = [int(i) for i in table.token_id]
            for _ in range(5):
                logits = handle.logits(input_ids=torch.tensor([ids]))
                ids.append(int(logits[0, -1].argmax()))
            assert out[b, width:].tolist() == ids[len(table) :]


def test_uniform_assignment_and_bad_heads(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    n_layers, n_heads = surrogate.model_shape(model)
    uniform = Assignment.uniform([(0, 0), (1, 1)])
    assert uniform.programs() == [surrogate.uniform_program()]
    assert uniform.by_layer() == {0: ([0], [0]), 1: ([1], [0])}
    with pytest.raises(UserError, match="does not exist"):
        attach(model, Assignment.from_items([(n_layers, 0, PREV)]), tokenizer)
    with pytest.raises(UserError, match="does not exist"):
        attach(model, Assignment.from_items([(0, n_heads, PREV)]), tokenizer)
    assert model.config._attn_implementation == "eager"  # nothing was attached
    with attach(model, uniform, tokenizer):
        with pytest.raises(UserError, match="already has surrogate heads"):
            attach(model, uniform, tokenizer)


def test_compile_assignment_reports_every_bad_program():
    library = {"prev": PREV}
    good = surrogate.compile_assignment([(0, 0, "prev"), (0, 1, "program f { 1 * [k == 0] }")], library)
    assert good.heads == [(0, 0), (0, 1)]
    with pytest.raises(UserError) as error:
        surrogate.compile_assignment([(0, 0, "program broken { 1 * [nosuch(k)] }"), (1, 2, "program x {")])
    assert "L0H0" in str(error.value) and "L1H2" in str(error.value)
    with pytest.raises(UserError, match="assigned twice"):
        Assignment.from_items([(0, 0, PREV), (0, 0, FIRST)])


def test_table_for_ids_matches_token_table():
    for tokenizer in (tiny.bpe_tokenizer(), tiny.metaspace_tokenizer()):
        for text in TEXTS + ["Café, naïve — 42!"]:
            table = surrogate.tables_for_texts(tokenizer, [text])[0]
            rebuilt = surrogate.table_for_ids(tokenizer, table.token_id.tolist())
            assert rebuilt.tok == table.tok
            assert np.array_equal(rebuilt.word_start, table.word_start)
            assert np.array_equal(rebuilt.sent, table.sent)


@pytest.mark.slow
def test_smollm2_identity_and_generation():
    """The real model: own attention in every head reproduces the logits exactly (left-padded batch)."""
    from attndsl.extraction.models import load_model

    try:
        loaded = load_model("smollm2")
    except UserError as error:
        pytest.skip(f"SmolLM2 not available: {error}")
    model, tokenizer = loaded.model, loaded.tokenizer
    tables = _tables(tokenizer, TEXTS[:2])
    ids, mask = batch_from_tables(tables, surrogate.pad_id_of(tokenizer), "left")
    reference = _eager_run(model, ids, mask, output_attentions=True)
    every_head = [(l, h) for l in range(loaded.n_layers) for h in range(loaded.n_heads)]
    fn = _own_attention_pattern_fn(reference.attentions, mask.bool())
    with attach(model, _own_assignment(model, every_head), tokenizer, pattern_fn=fn) as handle:
        assert torch.equal(handle.logits(tables=tables, padding_side="left"), reference.logits)
    assert torch.equal(_eager_run(model, ids, mask).logits, reference.logits)
    with attach(model, Assignment.uniform(every_head[:60]), tokenizer) as handle:
        out = handle.generate(TEXTS[:1], max_new_tokens=4, do_sample=False)
        ids_full = out[0].tolist()
        again = handle.logits(input_ids=torch.tensor([ids_full[:-1]]))
        assert int(again[0, -1].argmax()) == ids_full[-1]


def test_kernel_pattern_fn_equals_interpreter():
    pytest.importorskip("attndsl.surrogates.torch_bridge")
    from attndsl import stdlib

    tokenizer = tiny.bpe_tokenizer()
    tables = _tables(tokenizer)
    programs = [p for p in stdlib.programs() if not p.uses_syntax] + [PREV, surrogate.uniform_program()]
    want = surrogate.interpreter_patterns(programs, tables)
    got = torch.as_tensor(surrogate.kernel_patterns(programs, tables)).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert surrogate.default_pattern_fn() is surrogate.kernel_patterns


def test_cached_length_reads_either_cache_keyword():
    """transformers ≥ 5.24 passes the KV cache as ``cache``; earlier releases as ``past_key_values``."""
    from transformers import DynamicCache

    cache = DynamicCache()
    key = torch.zeros(1, 2, 7, 4)
    cache.update(key, key.clone(), 0)
    assert surrogate.cached_length({"cache": cache}) == 7
    assert surrogate.cached_length({"past_key_values": cache}) == 7
    assert surrogate.cached_length({"past_key_values": ((key, key),)}) == 7
    assert surrogate.cached_length({"cache": None, "input_ids": key}) == 0
    assert surrogate.cached_length({}) == 0
