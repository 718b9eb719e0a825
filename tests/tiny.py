"""Tiny offline models and tokenizers for tests (no network, about a second).

- `bpe_tokenizer()`: byte-level BPE like GPT-2 (no BOS added, ``<|endoftext|>``).
- `metaspace_tokenizer()`: SentencePiece-style Metaspace BPE like Llama (``▁``
  markers, ``<s>`` BOS added by the post-processor, ``<unk>`` for unseen chars).
- `tiny_gpt2()`, `tiny_llama_gqa()`, `tiny_mistral_sliding()`,
  `tiny_qwen2_bias()`, `tiny_gemma3()`: randomly initialised models (fixed
  seed) built from configs, vocab matching the tokenizer; `tiny_loaded(kind)` wraps one as `attndsl.extraction.models.LoadedModel`.
- `save_tiny(kind, directory)`: write one to disk so `load_model(path)` can load it.
"""
from __future__ import annotations

import functools
from pathlib import Path

TRAINING_TEXT = """\
Once upon a time, there was a little dog named Max. Max loved to run in the park.
One day, Max saw a big red ball. "Can I play?" he asked. The girl said, “Yes, you can!”
They played all day and were very happy. Mom called them home for dinner at six o'clock.
Tom and Sue went to the sea. They found a shell, a crab, and 3 shiny stones.
The sun was warm. Birds sang in the tall trees; the wind was soft and kind.
Café, naïve, jalapeño — words with accents appear too, and numbers like 42 and 2024.
"""


@functools.lru_cache(maxsize=None)
def _bpe_backend():
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    tok.train_from_iterator([TRAINING_TEXT] * 3, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    return tok._tokenizer.to_str()


def bpe_tokenizer():
    """GPT-2 style byte-level BPE, wrapped as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_bpe_backend()),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


@functools.lru_cache(maxsize=None)
def _metaspace_backend():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=1, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator([TRAINING_TEXT] * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok.to_str()


def metaspace_tokenizer():
    """Llama/SentencePiece style tokenizer with ``▁`` markers and a BOS token."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_metaspace_backend()),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def _seeded(build):
    import torch

    torch.manual_seed(0)
    model = build()
    model.eval()
    return model


def tiny_gpt2(vocab_size: int | None = None):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size or len(bpe_tokenizer()),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    return _seeded(lambda: GPT2LMHeadModel(config))


def tiny_llama_gqa(vocab_size: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size or len(metaspace_tokenizer()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )
    return _seeded(lambda: LlamaForCausalLM(config))


def tiny_mistral_sliding(vocab_size: int | None = None):
    """A model whose attention uses a sliding window of 5 tokens."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=vocab_size or len(metaspace_tokenizer()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        sliding_window=5,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )
    return _seeded(lambda: MistralForCausalLM(config))


def tiny_qwen2_bias(vocab_size: int | None = None):
    """Qwen2: biased q/k/v projections (the bias is the family's difference from Llama), GQA."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size or len(bpe_tokenizer()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )

    def build():
        model = Qwen2ForCausalLM(config)
        import torch

        with torch.no_grad():  # random init zeroes biases; make them matter
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, 0.5)
        return model

    return _seeded(build)


def tiny_gemma3(vocab_size: int | None = None):
    """Gemma-3 text model: sliding-window (4 tokens) and global layers, q/k RMS norms,
    ``query_pre_attn_scalar`` scaling (not head_dim), embedding scaling, tied head."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab_size or len(metaspace_tokenizer()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        query_pre_attn_scalar=12,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )

    def build():
        model = Gemma3ForCausalLM(config)
        import torch

        with torch.no_grad():  # q/k norm weights start at 0 (scale 1 + w); make them matter
            for layer in model.model.layers:
                layer.self_attn.q_norm.weight.normal_(0.0, 0.5)
                layer.self_attn.k_norm.weight.normal_(0.0, 0.5)
        return model

    return _seeded(build)


_KINDS = {
    "gpt2": (tiny_gpt2, bpe_tokenizer),
    "llama": (tiny_llama_gqa, metaspace_tokenizer),
    "mistral": (tiny_mistral_sliding, metaspace_tokenizer),
    "qwen2": (tiny_qwen2_bias, bpe_tokenizer),
    "gemma3": (tiny_gemma3, metaspace_tokenizer),
}

#: every model family the identity tests cover
FAMILIES = tuple(sorted(_KINDS))


def tiny_loaded(kind: str = "gpt2"):
    """A tiny model as `attndsl.extraction.models.LoadedModel` (what extraction consumes)."""
    from attndsl.extraction.models import LoadedModel

    build, make_tokenizer = _KINDS[kind]
    model, tokenizer = build(), make_tokenizer()
    config = model.config
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=f"tiny-{kind}",
        file_hash=f"tiny-{kind}-seed0",
        n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        device="cpu",
        dtype="float32",
        source=f"tiny-{kind}",
    )


def save_tiny(kind: str, directory) -> Path:
    """Save a tiny model and its tokenizer with save_pretrained; returns the directory."""
    build, make_tokenizer = _KINDS[kind]
    directory = Path(directory)
    build().save_pretrained(directory)
    make_tokenizer().save_pretrained(directory)
    return directory
