"""Integrity checks on model files, before any work starts.

`attndsl.extraction.models.load_model` calls these before it hands files to
transformers, whose errors for damaged input are a `struct.error` deep in a
GGUF parser, a `SafetensorError`, or — for a directory without tokenizer
files — a tokenizer with no vocabulary that yields zero-token sequences and a
`RuntimeError` much later.  Each check here is a `UserError` naming the file
and what is wrong with it:

- `check_gguf`: the file parses with the ``gguf`` package's own reader and
  every tensor's data lies inside the file (a truncated download fails here);
- `check_model_directory`: ``config.json`` is a JSON object, tokenizer files
  are present (and ``tokenizer.json`` loads with ``tokenizers``), the weights
  are present, and every safetensors file's header is complete
  (``safetensors.safe_open`` checks that the header covers the whole file);
- `check_max_tokens`: sequences fit in the model's positions (a request for
  100,000 tokens from a model with 256 would otherwise try to allocate tens
  of GiB).
"""
from __future__ import annotations

from pathlib import Path

from attndsl.errors import UserError
from attndsl.pipeline.rundir import Map, read_json

#: files any one of which holds a tokenizer transformers can load
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model")
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
#: config attributes that bound the sequence length, most specific first
POSITION_ATTRIBUTES = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def check_gguf(path: str | Path) -> None:
    """A GGUF file that parses and holds all its tensor data; else a `UserError` naming it."""
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except Exception as error:  # noqa: BLE001 - a foreign parser: any failure means the file is unusable
        raise UserError(
            f"{path} is not a readable GGUF file (truncated or damaged? {type(error).__name__}: {error}); "
            "download it again"
        ) from error
    if not reader.tensors:
        raise UserError(f"{path} is a GGUF file without tensors (no model weights in it)")
    size = path.stat().st_size
    end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    if end > size:
        raise UserError(f"{path} is truncated: its tensors need {end} bytes, the file has {size}; download it again")


def check_model_directory(directory: str | Path) -> None:
    """A saved model directory with a config, a tokenizer and complete weights; else a `UserError`."""
    directory = Path(directory)
    read_json(directory / "config.json", dict)
    present = [name for name in TOKENIZER_FILES if (directory / name).is_file()]
    if not present:
        raise UserError(
            f"{directory} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); "
            "save the tokenizer beside the model (tokenizer.save_pretrained)"
        )
    if "tokenizer.json" in present:
        _check_tokenizer_json(directory / "tokenizer.json")
    for path in _safetensors_files(directory):
        _check_safetensors(path)


def _check_tokenizer_json(path: Path) -> None:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 - the Rust side raises a bare Exception
        raise UserError(f"{path} is damaged: the tokenizers library cannot load it ({error})") from error
    if tokenizer.get_vocab_size() == 0:
        raise UserError(f"{path} has an empty vocabulary")


def _safetensors_files(directory: Path) -> list[Path]:
    """The safetensors files the directory's weights are in (checked to exist)."""
    index = directory / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = read_json(index, {"weight_map": Map(str)})["weight_map"]
        shards = [directory / name for name in sorted(set(weight_map.values()))]
        for shard in shards:
            if not shard.is_file():
                raise UserError(f"{shard} is missing (listed in {index})")
        return shards
    if (directory / SAFETENSORS).is_file():
        return [directory / SAFETENSORS]
    if any((directory / name).is_file() for name in PYTORCH_WEIGHTS):
        return []
    raise UserError(f"{directory} holds no model weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_WEIGHTS[0]})")


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # noqa: BLE001 - SafetensorError and OS errors alike mean unusable weights
        raise UserError(f"{path} is damaged or truncated ({error}); save or download the model again") from error


def max_positions(model) -> int | None:
    """The most tokens the model takes in one sequence (from its config), or None if it does not say."""
    from attndsl.extraction.model_facade import text_config

    config = text_config(model)
    for name in POSITION_ATTRIBUTES:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_max_tokens(loaded, max_tokens: int) -> None:
    """Refuse sequences longer than the model's positions, before any sequence is made."""
    limit = max_positions(loaded.model)
    if limit is not None and max_tokens > limit:
        raise UserError(
            f"--max-tokens {max_tokens} is more than the {limit} positions of {loaded.model_id}; "
            f"use --max-tokens {limit} or less"
        )
