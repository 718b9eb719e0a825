"""``extract``: record every head's attention on a corpus into a run's store.

Streaming: the model runs with eager attention and a forward hook on each
attention module, which receives that layer's probabilities [batch, heads, n,
n], quantises their causal lower triangle (`attndsl.extraction.store.encode_torch`, on the
model's device) and lets them go before the next layer runs.  Only one layer's
probabilities exist at a time (``output_attentions`` would keep all layers),
plus the batch's 12-bit codes.  With the ``topmass`` codec
(``store_codec="topmass"``) the hook also zeroes the codes of the entries each
row drops (`attndsl.extraction.store.topmass_keep`, on the probabilities) and the writer
stores the rest sparsely.  Only the model's backbone runs (no LM head):
extraction needs no logits.

Resumable: sequences are fixed and written to the store first, then chunks of
``CHUNK_SIZE`` sequences are written atomically one after another; rerunning
the same command skips finished chunks, and the finished store is
byte-identical to an uninterrupted one (same batch size and device).  The
settings that decide the results are recorded in the run manifest; a rerun
with other settings is refused.

Memory: a chunk's codes are held until it is written (2 bytes per causal
entry and head, and the packed copy beside them), so long sequences get
smaller chunks: `chunk_plan` sizes the chunk (at most ``CHUNK_SIZE``) and caps
the batch from the bytes one ``max_tokens`` sequence needs, so that what
extraction holds besides the model's weights (the runtime, the forward
pass and one chunk) stays within ``memory_gb`` (default `MEMORY_GB`; the
weights are left out so that the setting means the same for every model and
short-sequence runs keep chunks of 16 whatever the model's size; at ≤ 256
tokens on SmolLM2 the chunk stays 16, at 1024 it is 2).  The chunk size
is recorded in the manifest and a resumed extraction keeps the recorded one.
"""
from __future__ import annotations

import sys

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from attndsl.extraction.corpus import TextSequence, corpus_hash, load_corpus, make_sequences
from attndsl.errors import UserError
from attndsl.extraction.model_files import check_max_tokens
from attndsl.extraction.model_facade import attention_modules, pad_ids
from attndsl.extraction.models import LoadedModel, load_model, tokenizer_settings
from attndsl.pipeline.rundir import open_run
from attndsl.extraction.store import CODEC, CODECS, STORE_DIRNAME, TOPMASS, SequenceRecord, Store, StoreWriter, check_mass, encode_torch, topmass_keep, tri_size

STAGE = "extract"
CHUNK_SIZE = 16
#: default memory setting of an extraction, in GB (``--memory-gb``)
MEMORY_GB = 3.0
#: what the Python process, torch and the tokenizer hold besides the weights (~0.5 GB measured on CPU:
#: the 256-token SmolLM2 extraction peaked at 1.5 GB with 0.54 GB of weights and 0.7 GB of chunk codes)
_RUNTIME_BYTES = 500_000_000
#: a sequence "came near" --max-tokens when it holds at least this share of it
NEAR_MAX_TOKENS = 0.75


@contextmanager
def recording(model, on_layer: Callable[[int, object], None]) -> Iterator[None]:
    """Call ``on_layer(layer, probs)`` with each layer's attention probabilities."""
    modules = attention_modules(model)
    if not modules:
        raise UserError(f"cannot find the attention modules of {type(model).__name__}")

    def make_hook(layer: int):
        def hook(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise UserError(
                    f"{type(module).__name__} returned no attention probabilities; "
                    "load the model with attn_implementation='eager'"
                )
            on_layer(layer, weights.detach())
            return (output[0], None) + tuple(output[2:])

        return hook

    handles = [module.register_forward_hook(make_hook(layer)) for layer, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def record_codes(loaded: LoadedModel, batch: Sequence[Sequence[int]], mass: float | None = None) -> list[np.ndarray]:
    """12-bit codes [n(n+1)/2, n_layers*n_heads] of each sequence's attention (one forward pass).

    With ``mass`` (the topmass codec) the entries each row drops are code 0.
    """
    import torch

    lengths = [len(ids) for ids in batch]
    n_max = max(lengths)
    device = loaded.model.device
    input_ids, mask = pad_ids([list(ids) for ids in batch])  # right padding with id 0
    width = loaded.n_layers * loaded.n_heads
    codes = [np.empty((tri_size(n), width), dtype=np.uint16) for n in lengths]
    rows, cols = torch.tril_indices(n_max, n_max, device=device)
    seen: set[int] = set()

    def on_layer(layer: int, probs) -> None:
        if probs.shape[1] != loaded.n_heads:
            raise UserError(f"layer {layer} has {probs.shape[1]} heads, expected {loaded.n_heads}")
        if mass is not None:  # padding keys have probability 0: never needed to reach the mass
            probs = torch.where(topmass_keep(probs, mass), probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
        tri = encode_torch(probs[:, :, rows, cols])  # [B, H, T]
        tri = tri.transpose(1, 2).cpu().numpy().view(np.uint16)  # [B, T, H]
        for b, n in enumerate(lengths):
            codes[b][:, layer * loaded.n_heads : (layer + 1) * loaded.n_heads] = tri[b, : tri_size(n)]
        seen.add(layer)

    backbone = getattr(loaded.model, "base_model", loaded.model)
    with torch.inference_mode(), recording(loaded.model, on_layer):
        backbone(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
    if seen != set(range(loaded.n_layers)):
        raise UserError(f"recorded attention of layers {sorted(seen)}, expected 0..{loaded.n_layers - 1}")
    return codes


def chunk_plan(max_tokens: int, n_layers: int, n_heads: int, memory_gb: float | None,
               batch_size: int) -> tuple[int, int]:
    """(sequences per chunk, batch size) so that one chunk of ``max_tokens`` sequences fits ``memory_gb``.

    Per sequence: its uint16 codes (2 bytes per causal entry and head) plus
    the packed 12-bit blob and the chunk's joined copy (1.5 + 1.5 bytes), and
    the forward pass's per-layer probabilities (a few float32 [heads, n, n]
    copies).  What is left of ``memory_gb`` after the runtime bounds a chunk
    (the weights are not counted); the chunk is at least 1 and at most ``CHUNK_SIZE``
    sequences, and a batch never holds more sequences than a chunk.  None:
    ``CHUNK_SIZE`` and ``batch_size`` as given.
    """
    if memory_gb is None:
        return CHUNK_SIZE, batch_size
    per_sequence = tri_size(max_tokens) * n_layers * n_heads * 5 + 4 * n_heads * max_tokens * max_tokens * 4
    budget = memory_gb * 1e9 - _RUNTIME_BYTES
    chunk = int(max(1, min(CHUNK_SIZE, budget // per_sequence)))
    return chunk, max(1, min(batch_size, chunk))


def _recorded_chunk_size(run_dir: str | Path) -> int | None:
    """The chunk size an earlier (interrupted) extraction of ``run_dir`` recorded, if any."""
    from attndsl.pipeline.rundir import Run

    run = Run(Path(run_dir))
    if not run.manifest_path.exists():
        return None
    recorded = run.manifest.get("stages", {}).get(STAGE) or {}
    value = recorded.get("chunk_size")
    return int(value) if value else None


def extract(
    run_dir: str | Path,
    model: str | LoadedModel = "smollm2",
    corpus: str = "builtin",
    max_sequences: int | None = None,
    max_tokens: int = 64,
    max_sentences: int | None = None,
    mix_lengths: bool = False,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "float32",
    heldout_fraction: float = 0.5,
    seed: int = 0,
    syntax: bool | object = True,
    spacy_pipeline: str | None = None,
    text_field: str = "text",
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    txt_separator: str = "auto",
    store_codec: str = CODEC,
    store_mass: float = 0.99,
    memory_gb: float | None = MEMORY_GB,
) -> Store:
    """Record the attention of ``model`` on ``corpus`` into ``run_dir``; resumable.

    ``model`` is a spec for `load_model` or an already loaded model; ``syntax``
    is True (spaCy where a pipeline is installed: ``spacy_pipeline``, else
    ``$ATTNDSL_SPACY_MODEL``, else the first English pipeline found), False, or a
    provider object (`attndsl.extraction.syntax.choose_provider`);
    ``mix_lengths`` mixes short and packed sequences (`attndsl.extraction.corpus.make_sequences`).
    ``on_chunk(chunk)`` is called after each chunk is written (tests use it to
    interrupt).  ``txt_separator`` says how a .txt corpus is cut into stories
    (`attndsl.extraction.corpus.TXT_SEPARATORS`).  ``store_codec`` is ``"log12"`` (every
    causal entry) or ``"topmass"`` (each row's top entries up to ``store_mass``;
    `attndsl.extraction.store`).  ``memory_gb`` bounds the chunk and batch
    sizes (`chunk_plan`; None: ``CHUNK_SIZE``).  Returns the finished `Store`.
    """
    from tqdm.auto import tqdm

    from attndsl.threads import apply_env

    apply_env()  # $ATTNDSL_THREADS sizes torch's and Numba's pools together
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if max_sequences is not None and max_sequences < 1:
        raise UserError("--max-sequences must be at least 1")
    if store_codec not in CODECS:
        raise UserError(f"--store-codec must be one of {', '.join(CODECS)}, not {store_codec!r}")
    mass = check_mass(store_mass) if store_codec == TOPMASS else None
    from attndsl.extraction.syntax import annotate, choose_provider

    provider, note = choose_provider(syntax, spacy_pipeline)
    if note:
        print(f"note: {note}", file=sys.stderr)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)
    check_max_tokens(loaded, max_tokens)
    sequences: list[TextSequence] = make_sequences(
        load_corpus(corpus, text_field=text_field, txt_separator=txt_separator),
        loaded.tokenizer,
        max_tokens=max_tokens,
        max_sentences=max_sentences,
        mix_lengths=mix_lengths,
        max_sequences=max_sequences,
        heldout_fraction=heldout_fraction,
        seed=seed,
    )
    tables = [s.table for s in sequences]
    if provider is not None:
        tables = [annotate(table, provider) for table in tables]
    settings = {
        "model": loaded.model_id,
        "model_hash": loaded.file_hash,
        "dtype": loaded.dtype,
        "tokenizer": tokenizer_settings(loaded.tokenizer),
        "corpus": corpus,
        "text_field": text_field,
        "txt_separator": txt_separator,
        "corpus_hash": corpus_hash(sequences),
        "n_sequences": len(sequences),
        "max_sequences": max_sequences,
        "max_tokens": max_tokens,
        "max_sentences": max_sentences,
        "heldout_fraction": heldout_fraction,
        "seed": seed,
        "syntax": provider is not None and getattr(provider, "name", type(provider).__name__),
        "codec": store_codec,
        "chunk_size": CHUNK_SIZE,  # set below from the memory setting (same key order as before)
    }
    chunk_size, batch_size = chunk_plan(max_tokens, loaded.n_layers, loaded.n_heads, memory_gb, batch_size)
    recorded = _recorded_chunk_size(run_dir)
    if recorded is not None:  # resuming: the chunks already written fix the layout
        chunk_size, batch_size = recorded, max(1, min(batch_size, recorded))
    settings["chunk_size"] = chunk_size
    if mass is not None:  # only for topmass: log12 manifests stay as they were
        settings["store_mass"] = mass
    if mix_lengths:  # only when on: manifests of single-length runs stay as they were
        settings["mix_lengths"] = True
    run = open_run(run_dir, STAGE, settings)
    records = [SequenceRecord.from_table(table, s.split) for table, s in zip(tables, sequences)]
    writer = StoreWriter(run.file(STORE_DIRNAME), loaded.n_layers, loaded.n_heads, records, chunk_size, store_codec, mass)
    missing = writer.missing_chunks()
    bar = tqdm(
        total=len(records),
        initial=len(records) - sum(len(writer.chunk_range(c)) for c in missing),
        desc="extract",
        unit="seq",
        disable=not progress,
    )
    with bar:
        for chunk in missing:
            indices = list(writer.chunk_range(chunk))
            codes: list[np.ndarray] = []
            for start in range(0, len(indices), batch_size):
                batch = [records[i].token_ids for i in indices[start : start + batch_size]]
                codes.extend(record_codes(loaded, batch, mass))
                bar.update(len(batch))
            writer.write_chunk(chunk, codes)
            if on_chunk is not None:
                on_chunk(chunk)
    store = Store(run.file(STORE_DIRNAME))
    if not run.is_complete(STAGE):
        run.mark_complete(
            STAGE,
            {
                "n_sequences": store.n_sequences,
                "n_tokens": int(sum(store.lengths)),
                "n_synthesis": len(store.synthesis_indices),
                "n_heldout": len(store.heldout_indices),
                "n_layers": store.n_layers,
                "n_heads": store.n_heads,
                "store_bytes": store.size_bytes(),
            },
        )
    return store


def length_summary(lengths: Sequence[int], max_tokens: int, max_sentences: int | None = None) -> list[str]:
    """Lines describing how long the sequences came out, and why when none came near ``max_tokens``.

    Packing never crosses a story and stops at ``max_sentences``, so a corpus
    of short stories (or a .txt file cut at every blank line) gives sequences
    far shorter than asked; the user should be told rather than find out from
    the attention maps.
    """
    if not len(lengths):
        return []
    a = np.asarray(lengths)
    near = int((a >= NEAR_MAX_TOKENS * max_tokens).sum())
    p10, median, p90 = (float(x) for x in np.percentile(a, [10, 50, 90]))
    lines = [
        f"sequence lengths: min {a.min()}, 10% {p10:g}, median {median:g}, 90% {p90:g}, max {a.max()} tokens; "
        f"{near} of {len(a)} hold at least {NEAR_MAX_TOKENS:.0%} of --max-tokens {max_tokens}"
    ]
    if near == 0:
        if max_sentences is not None:
            why = f"--max-sentences {max_sentences} ends every sequence first"
        else:
            why = (
                "packing never crosses a story and the stories are shorter; a .txt corpus without "
                "<|endoftext|> lines is cut at every blank line — --txt-separator endoftext keeps "
                "blank-line paragraphs inside one story"
            )
        lines.append(f"note: no sequence came near --max-tokens {max_tokens} (longest {a.max()}): {why}")
    return lines
