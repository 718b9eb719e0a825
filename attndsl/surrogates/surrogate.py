"""Surrogate heads: put programs in place of attention heads inside the model.

A program replaces a head by substituting its matrix for the head's attention
*probabilities* before they multiply V (DESIGN.md, "Surrogate heads").  The
substitution goes through transformers' attention interface: the first
`attach` registers an attention function named ``"attndsl"`` with
`transformers.AttentionInterface` and the eager mask builder under the same
name with `transformers.AttentionMaskInterface` (importing attndsl registers
nothing), and `attach` switches the model's attention implementation to it
(`detach` switches back).

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

The pieces live in their own modules, re-exported here (the public surface):
`attndsl.surrogates.assignment` (which heads, which programs),
`attndsl.surrogates.patterns` (program matrices on token tables),
`attndsl.surrogates.attention` (the attention function and its registration),
`attndsl.surrogates.tables` (token tables of id sequences),
`attndsl.surrogates.handle` (attach / detach and the pre-hook), and the model
facade `attndsl.extraction.model_facade` (shape, inputs, attention modules).
"""
from __future__ import annotations

from attndsl.extraction.model_facade import batch_from_tables, model_shape, pad_id_of, position_ids_for, tables_for_texts
from attndsl.surrogates.assignment import UNIFORM_SOURCE, Assignment, compile_assignment, uniform_program
from attndsl.surrogates.attention import ATTENTION_NAME, register, surrogate_attention
from attndsl.surrogates.handle import CACHE_KWARGS, SurrogateHandle, attach, cached_length, detach
from attndsl.surrogates.patterns import PatternFn, default_pattern_fn, interpreter_patterns, kernel_patterns
from attndsl.surrogates.tables import table_for_ids

__all__ = [
    "ATTENTION_NAME", "Assignment", "CACHE_KWARGS", "PatternFn", "SurrogateHandle", "UNIFORM_SOURCE",
    "attach", "batch_from_tables", "cached_length", "compile_assignment", "default_pattern_fn", "detach",
    "interpreter_patterns", "kernel_patterns", "model_shape", "pad_id_of", "position_ids_for", "register",
    "surrogate_attention", "table_for_ids", "tables_for_texts", "uniform_program",
]
