"""The attention store: every head's causal attention, compact and streamable.

Layout (a directory, ``<run>/attention/``)::

    meta.json            format, codec, n_layers, n_heads, chunk size, lengths, split
    sequences.jsonl      per sequence: text, token ids, spans, special-token literals,
                         split, optional syntax — token tables are rebuilt from these
    chunk-00000.bin      packed codes of sequences [0, chunk_size), then the next chunk ...
    chunk-00000.json     byte offset and CRC-32 of each sequence in the chunk

A chunk is complete when its ``.json`` exists (both files are written
atomically, the ``.bin`` first), which is what makes extraction resumable.

Every file is checked when read, structure and types as well as checksums
(`META_SCHEMA`, `CHUNK_SCHEMA`, `RECORD_SCHEMA` with `attndsl.pipeline.rundir.check`,
plus the cross-checks JSON schemas cannot say: as many splits as lengths, as
many records as lengths with as many ids, spans and special entries as each
length, a chunk's offsets exactly where the lengths put them).  Any mismatch
is a `UserError` naming the file, never an exception from deep inside.

**Codec (``log12``).**  For each sequence of n tokens the store keeps the causal
lower triangle, entry ``q*(q+1)//2 + k`` for k ≤ q, as rows of ``n_layers *
n_heads`` columns (head index ``layer * n_heads + head``).  Each probability
``a`` becomes a 12-bit code: 0 for ``a < FLOOR/2`` (FLOOR = 1e-6), otherwise
``1 + round(ln(max(a, FLOOR)/FLOOR) / STEP)`` with STEP = ln(1/FLOOR)/4094, so
code 4095 is exactly 1.  Two codes are packed into three bytes: 1.5 bytes per
entry, 842,400 bytes for a 64-token sequence and 270 heads (≤ 1 MB).

**Error bound.**  Decoding gives ``a'`` with ``|a' − a| ≤ δ·a`` for ``a ≥ FLOOR``
(δ = exp(STEP/2) − 1 = 0.00169; float32 encoding and decoding add < 0.1% to it,
hence ``ENTRY_RELATIVE_ERROR`` = 1.001·δ) and ``|a' − a| ≤ FLOOR/2`` below it.  A row of
length m (≤ n) therefore has L1 error ε ≤ δ + n·FLOOR/2 (0.00172 for n = 64).
For any row-stochastic prediction P, Σmin(A', P) moves by at most n·ε, and
IoU = Σmin / (2n − Σmin) (or Σmin/Σmax computed directly) moves by at most
``2ε / (1 − ε)²`` — 0.0035 for n = 64, within the 0.005 required for every
head; `iou_error_bound(n)` returns it.  Tests check the per-entry bound
against ``output_attentions`` and the IoU bound on real heads.

**Codec (``topmass``, for long sequences).**  ``attndsl extract --store-codec
topmass --store-mass m`` (0 < m < 1) keeps, for each head and query row, the
fewest largest probabilities whose sum reaches m (ties broken by key order;
always at least the row's largest entry, which is ≥ 1/n and never codes to 0)
and drops the rest (`topmass_keep`).  Kept entries get exactly their log12
code, so a topmass store is the log12 store with the dropped entries set to
0.  A sequence is stored sparsely (`pack_sparse`): a bitmap of the kept
(non-zero) codes over its causal entries × heads, then the kept codes packed
12-bit as for log12 — 1/8 byte per causal entry plus 1.5 bytes per kept one
instead of 1.5 bytes per causal entry.  Each chunk index also records the
entry count of every sequence (`TOPMASS_CHUNK_SCHEMA`), from which the offsets
are checked as for log12.  ``meta.json`` records ``{"name": "topmass",
"mass": m, ...}``.

*No renormalisation*: decoded rows sum to the kept mass (≥ m up to the log12
error), not to 1.  Renormalising would scale every kept entry by up to 1/m and
its error is no smaller in the worst case; soft IoU compares entrywise min and
max, so it needs no normalised rows.

*Error bound.*  A row loses at most 1 − m of mass by dropping (the kept mass
is ≥ m by construction; selection is in float64 on the model's probabilities)
and the kept entries carry the log12 error (≤ δ·kept + n·FLOOR/2), so its L1
error is ε ≤ (1 − m) + δ + n·FLOOR/2 and, by the same argument as above, a
sequence's IoU against any row-stochastic prediction moves by at most
``2ε / (1 − ε)²``: 0.0240 for m = 0.99 and n = 64, 0.0250 at n = 1024
(`iou_error_bound(n, mass)`, `Store.iou_error_bound(n)`).  Against the log12
store of the same attention the L1 difference is only the decoded dropped
mass, ≤ (1 + δ)(1 − m) + n·FLOOR/2, below the same ε, so the bound also holds
between the two stores (what the tests measure on real tiny-model heads).

Why this module is over 400 lines: both codecs, the writer and the checked
readers share one on-disk layout, and keeping them together keeps each format
decision in one file.
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from attndsl.errors import UserError
from attndsl.pipeline.layout import STORE_DIR
from attndsl.extraction.features import TokenTable, table_from_spans
from attndsl.extraction.layout import tri_size, tril
from attndsl.pipeline.rundir import Choice, Int, atomic_write_bytes, atomic_write_json, atomic_write_text, check, parse_json, read_json, read_text

FORMAT = 1
CODEC = "log12"  # the default codec
TOPMASS = "topmass"
CODECS = (CODEC, TOPMASS)
FLOOR = 1e-6
N_CODES = 4096
STEP = math.log(1.0 / FLOOR) / (N_CODES - 2)
RELATIVE_ERROR = math.exp(STEP / 2) - 1  # δ: per-entry relative error above FLOOR (exact arithmetic)
ENTRY_RELATIVE_ERROR = RELATIVE_ERROR * 1.001  # with float32 rounding in encode/decode
STORE_DIRNAME = STORE_DIR  # `attndsl.pipeline.layout` names every path of a run
SPLITS = ("synthesis", "heldout")

#: ``meta.json`` (format and codec are checked first, for a clearer message)
META_SCHEMA = {
    "format": int,
    "codec": {"name": str},
    "n_layers": Int(1),
    "n_heads": Int(1),
    "chunk_size": Int(1),
    "lengths": [Int(1)],
    "split": [Choice(SPLITS)],
    "sequences_crc32": Int(0),
}
#: ``chunk-NNNNN.json``: sequences [start, stop), byte offset and CRC-32 of each, total bytes
CHUNK_SCHEMA = {"sequences": [Int(0)], "offsets": [Int(0)], "crc32": [Int(0)], "bytes": Int(0)}
#: a topmass chunk's index also holds the number of stored entries of each sequence
TOPMASS_CHUNK_SCHEMA = {**CHUNK_SCHEMA, "entries": [Int(0)]}
#: ``meta.json``'s codec of a topmass store
TOPMASS_CODEC_SCHEMA = {"name": Choice((TOPMASS,)), "floor": float, "codes": Int(2), "mass": float}
#: one line of ``sequences.jsonl``
RECORD_SCHEMA = {
    "text": str,
    "ids": [Int(0)],
    "spans": [[Int(0)]],
    "special": [(str, None)],
    "split": Choice(SPLITS),
    "syntax?": (None, {"upos": [str], "dep": [str], "head": [Int(-1)]}),  # -1: no word
}

#: decoded value of every code (float64 for the bound; float32 copy for reading)
_DECODE64 = np.concatenate([[0.0], np.exp(math.log(FLOOR) + STEP * np.arange(N_CODES - 1))])
_DECODE64[-1] = 1.0
_DECODE = _DECODE64.astype(np.float32)


def iou_error_bound(n: int, mass: float = 1.0) -> float:
    """Largest change of a sequence's IoU that the codec can cause (n tokens).

    ``mass`` is the topmass codec's kept mass per row (1.0: log12, nothing dropped).
    """
    eps = (1.0 - mass) + ENTRY_RELATIVE_ERROR + n * FLOOR / 2
    return 2 * eps / (1 - eps) ** 2


def check_mass(mass: float) -> float:
    """The topmass codec's ``mass``, checked (a `UserError` unless 0 < mass < 1)."""
    if not isinstance(mass, (int, float)) or isinstance(mass, bool) or not 0.0 < float(mass) < 1.0:
        raise UserError(f"--store-mass must be a number in (0, 1), not {mass!r}")
    return float(mass)


def topmass_keep(probs, mass: float):
    """Bool torch mask (same shape) of the entries the topmass codec keeps in each last-axis row.

    The fewest largest entries whose sum reaches ``mass`` (an entry is kept when
    the mass of the larger ones before it, in float64, is still below ``mass``);
    the largest is always kept.  Ties go to the lower key (stable sort).
    """
    import torch

    values, order = torch.sort(probs.double(), dim=-1, descending=True, stable=True)
    before = torch.cumsum(values, dim=-1) - values
    keep = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device)
    return keep.scatter_(-1, order, before < mass)


def pack_sparse(codes: np.ndarray, n: int) -> tuple[bytes, int]:
    """Sparse topmass bytes of dense codes [tri(n), width] (zeros are not stored), and the entry count.

    A bitmap of the non-zero codes over the [tri(n), width] array (C order,
    ``np.packbits`` little-endian), then those codes packed 12-bit in the same order.
    """
    kept = np.ascontiguousarray(codes) != 0
    values = codes[kept]
    return np.packbits(kept.ravel(), bitorder="little").tobytes() + pack12(values), int(values.size)


def sparse_size(n: int, width: int, entries: int) -> int:
    return (tri_size(n) * width + 7) // 8 + packed_size(entries)


def unpack_sparse(blob: bytes, n: int, width: int) -> np.ndarray:
    """Dense codes [tri(n), width] of `pack_sparse` bytes (dropped entries are code 0)."""
    size = tri_size(n) * width
    bitmap = (size + 7) // 8
    kept = np.unpackbits(np.frombuffer(blob, dtype=np.uint8, count=bitmap), count=size, bitorder="little").astype(bool)
    count = int(kept.sum())
    if len(blob) != bitmap + packed_size(count):
        raise ValueError("the bitmap does not match the number of stored codes")
    out = np.zeros(size, dtype=np.uint16)
    out[kept] = unpack12(blob[bitmap:], count)
    return out.reshape(tri_size(n), width)


def encode_torch(probs):
    """Codes (int16 tensor, same shape) of attention probabilities (a torch tensor)."""
    import torch

    a = probs.float()
    codes = torch.round(torch.log(a.clamp(min=FLOOR) / FLOOR) / STEP) + 1
    codes = torch.where(a < FLOOR / 2, torch.zeros_like(codes), codes.clamp(1, N_CODES - 1))
    return codes.to(torch.int16)


def encode(probs: np.ndarray) -> np.ndarray:
    """Codes (uint16) of attention probabilities (NumPy version of `encode_torch`)."""
    a = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        codes = np.rint(np.log(np.maximum(a, FLOOR) / FLOOR) / STEP) + 1
    codes = np.where(a < FLOOR / 2, 0, np.clip(codes, 1, N_CODES - 1))
    return codes.astype(np.uint16)


def decode(codes: np.ndarray) -> np.ndarray:
    return _DECODE[codes]


def pack12(codes: np.ndarray) -> bytes:
    """Pack 12-bit codes two to three bytes (an odd count is padded with a 0 code)."""
    flat = np.ascontiguousarray(codes, dtype=np.uint16).ravel()
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint16)])
    a, b = flat[0::2], flat[1::2]
    out = np.empty((a.size, 3), dtype=np.uint8)
    out[:, 0] = a & 0xFF
    out[:, 1] = (a >> 8) | ((b & 0xF) << 4)
    out[:, 2] = b >> 4
    return out.tobytes()


def unpack12(data: bytes | memoryview, count: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.uint16)
    out = np.empty(raw.shape[0] * 2, dtype=np.uint16)
    out[0::2] = raw[:, 0] | ((raw[:, 1] & 0xF) << 8)
    out[1::2] = (raw[:, 1] >> 4) | (raw[:, 2] << 4)
    return out[:count]


def packed_size(n_entries: int) -> int:
    return (n_entries + 1) // 2 * 3


@dataclass(frozen=True)
class SequenceRecord:
    """What the store keeps about one sequence besides its attention."""

    text: str
    token_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    special: tuple[str | None, ...]  # literal text of special tokens (BOS), else None
    split: str  # "synthesis" or "heldout"
    syntax: dict | None = None  # {"upos": [...], "dep": [...], "head": [...]}

    @classmethod
    def from_table(cls, table: TokenTable, split: str) -> "SequenceRecord":
        # a special token is the only kind with an empty span and non-empty text
        special = tuple(
            tok if (s == e and tok != "") else None
            for tok, s, e in zip(table.tok, table.start.tolist(), table.end.tolist())
        )
        syntax = None
        if table.has_syntax:
            syntax = {"upos": list(table.upos), "dep": list(table.dep), "head": [int(h) for h in table.head]}
        return cls(
            text=table.text,
            token_ids=tuple(int(i) for i in table.token_id),
            spans=tuple(zip(table.start.tolist(), table.end.tolist())),
            special=special,
            split=split,
            syntax=syntax,
        )

    def table(self) -> TokenTable:
        table = table_from_spans(self.text, list(self.token_ids), list(self.spans), list(self.special))
        if self.syntax is not None:
            table = table.with_syntax(self.syntax["upos"], self.syntax["dep"], self.syntax["head"])
        return table

    def to_json(self) -> str:
        record = {
            "text": self.text,
            "ids": list(self.token_ids),
            "spans": [list(s) for s in self.spans],
            "special": list(self.special),
            "split": self.split,
        }
        if self.syntax is not None:
            record["syntax"] = self.syntax
        return json.dumps(record, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> "SequenceRecord":
        r = json.loads(line)
        return cls(
            text=r["text"],
            token_ids=tuple(r["ids"]),
            spans=tuple(tuple(s) for s in r["spans"]),
            special=tuple(r["special"]),
            split=r["split"],
            syntax=r.get("syntax"),
        )


class StoreWriter:
    """Creates a store and writes it chunk by chunk (each chunk atomically)."""

    def __init__(self, directory: Path, n_layers: int, n_heads: int, records: Sequence[SequenceRecord], chunk_size: int,
                 codec: str = CODEC, mass: float | None = None):
        self.directory = Path(directory)
        self.n_layers, self.n_heads, self.chunk_size = n_layers, n_heads, chunk_size
        self.records = list(records)
        if codec not in CODECS:
            raise UserError(f"unknown store codec {codec!r} (choose {', '.join(CODECS)})")
        self.codec = codec
        codec_meta = {"name": CODEC, "floor": FLOOR, "codes": N_CODES}
        if codec == TOPMASS:
            codec_meta = {"name": TOPMASS, "floor": FLOOR, "codes": N_CODES, "mass": check_mass(mass)}
        meta = {
            "format": FORMAT,
            "codec": codec_meta,
            "n_layers": n_layers,
            "n_heads": n_heads,
            "chunk_size": chunk_size,
            "lengths": [len(r.token_ids) for r in self.records],
            "split": [r.split for r in self.records],
        }
        sequences = "".join(r.to_json() + "\n" for r in self.records)
        meta["sequences_crc32"] = zlib.crc32(sequences.encode("utf-8"))
        meta_path = self.directory / "meta.json"
        if meta_path.exists():
            existing = read_json(meta_path)
            if existing != json.loads(json.dumps(meta)):
                raise UserError(
                    f"{meta_path} describes other sequences or another shape than this extraction "
                    "(or was edited); use a new run directory"
                )
            if not (self.directory / "sequences.jsonl").exists():
                atomic_write_text(self.directory / "sequences.jsonl", sequences)
        else:
            atomic_write_text(self.directory / "sequences.jsonl", sequences)
            atomic_write_json(meta_path, meta)

    @property
    def n_chunks(self) -> int:
        return (len(self.records) + self.chunk_size - 1) // self.chunk_size

    def chunk_range(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, len(self.records)))

    def missing_chunks(self) -> list[int]:
        """Chunks not yet written (a chunk with a damaged file is a UserError)."""
        missing = []
        for chunk in range(self.n_chunks):
            if not (self.directory / _chunk_name(chunk, "json")).exists():
                missing.append(chunk)
            else:
                lengths = [len(r.token_ids) for r in self.records]
                index = _read_chunk_index(self.directory, chunk, self.chunk_size, lengths, self.n_layers * self.n_heads,
                                          self.codec)
                _check_chunk_file(self.directory, chunk, index)
        return missing

    def write_chunk(self, chunk: int, codes: Sequence[np.ndarray]) -> None:
        """Write one chunk: ``codes[i]`` is uint16 [tri(n_i), n_layers*n_heads] for its i-th sequence.

        For topmass the dropped entries must already be code 0 (`topmass_keep`);
        only non-zero codes are stored.
        """
        seqs = self.chunk_range(chunk)
        if len(codes) != len(seqs):
            raise ValueError("one code array per sequence of the chunk is required")
        width = self.n_layers * self.n_heads
        parts, offsets, crcs, entries, pos = [], [], [], [], 0
        for index, array in zip(seqs, codes):
            n = len(self.records[index].token_ids)
            if array.shape != (tri_size(n), width):
                raise ValueError(f"sequence {index}: codes of shape {array.shape}, expected {(tri_size(n), width)}")
            if self.codec == TOPMASS:
                blob, count = pack_sparse(array, n)
                entries.append(count)
            else:
                blob = pack12(array)
            parts.append(blob)
            offsets.append(pos)
            crcs.append(zlib.crc32(blob))
            pos += len(blob)
        index = {"sequences": [seqs.start, seqs.stop], "offsets": offsets, "crc32": crcs, "bytes": pos}
        if self.codec == TOPMASS:
            index["entries"] = entries
        atomic_write_bytes(self.directory / _chunk_name(chunk, "bin"), b"".join(parts))
        atomic_write_json(self.directory / _chunk_name(chunk, "json"), index)


def _chunk_name(chunk: int, ext: str) -> str:
    return f"chunk-{chunk:05d}.{ext}"


def _read_chunk_index(directory: Path, chunk: int, chunk_size: int, lengths: Sequence[int], width: int,
                      codec: str = CODEC) -> dict:
    """A chunk's ``.json`` index, checked against `CHUNK_SCHEMA` (`TOPMASS_CHUNK_SCHEMA`) and the lengths in meta.json."""
    path = directory / _chunk_name(chunk, "json")
    index = read_json(path, TOPMASS_CHUNK_SCHEMA if codec == TOPMASS else CHUNK_SCHEMA)
    start, stop = chunk * chunk_size, min((chunk + 1) * chunk_size, len(lengths))
    if index["sequences"] != [start, stop]:
        raise UserError(f"{path} is damaged: it holds sequences {index['sequences']}, expected [{start}, {stop}]")
    for key in ("offsets", "crc32") + (("entries",) if codec == TOPMASS else ()):
        if len(index[key]) != stop - start:
            raise UserError(f"{path} is damaged: {key!r} has {len(index[key])} entries for {stop - start} sequences")
    offsets, position = [], 0
    for i in range(start, stop):
        offsets.append(position)
        n = lengths[i]
        if codec == TOPMASS:
            count = index["entries"][i - start]
            if not n * width <= count <= tri_size(n) * width:  # every row keeps its largest entry
                raise UserError(f"{path} is damaged: sequence {i} has {count} entries, "
                                f"expected {n * width} to {tri_size(n) * width}")
            position += sparse_size(n, width, count)
        else:
            position += packed_size(tri_size(n) * width)
    if index["offsets"] != offsets or index["bytes"] != position:
        raise UserError(f"{path} is damaged: its offsets do not match the sequence lengths in meta.json")
    return index


def _check_chunk_file(directory: Path, chunk: int, index: dict) -> None:
    path = directory / _chunk_name(chunk, "bin")
    if not path.exists():
        raise UserError(f"attention store is damaged: {path} is missing; delete {path.with_suffix('.json')} and rerun extract")
    size = path.stat().st_size
    if size != index.get("bytes"):
        raise UserError(
            f"attention store is damaged: {path} has {size} bytes, expected {index.get('bytes')} (truncated?); "
            f"delete it and {path.with_suffix('.json').name}, then rerun extract to redo that chunk"
        )


class Store:
    """Read access to a finished attention store (implements the scorer's AttentionSource).

    Reading streams: `causal_block` reads only the requested sequences from
    their chunk files; nothing else is kept in memory except the small index.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / "meta.json").exists():
            raise UserError(f"no attention store in {self.directory} (run `attndsl extract` first)")
        meta_path = self.directory / "meta.json"
        meta = read_json(meta_path)
        codec = meta.get("codec") if isinstance(meta, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(codec, dict) \
                or codec.get("name") not in CODECS:
            raise UserError(f"{meta_path}: not an attention store of format {FORMAT} with codec {' or '.join(CODECS)}")
        check(meta, META_SCHEMA, meta_path)
        self._codec = codec["name"]
        self._mass = 1.0
        if self._codec == TOPMASS:
            check(codec, TOPMASS_CODEC_SCHEMA, meta_path, "codec")
            if not 0.0 < codec["mass"] < 1.0:
                raise UserError(f"{meta_path} is damaged: codec mass {codec['mass']!r} is not in (0, 1)")
            self._mass = float(codec["mass"])
        if len(meta["split"]) != len(meta["lengths"]):
            raise UserError(f"{meta_path} is damaged: 'lengths' has {len(meta['lengths'])} entries "
                            f"but 'split' has {len(meta['split'])}")
        self._n_layers = meta["n_layers"]
        self._n_heads = meta["n_heads"]
        self._chunk_size = meta["chunk_size"]
        self._lengths = list(meta["lengths"])
        self._split = tuple(meta["split"])
        self._sequences_crc = meta["sequences_crc32"]
        self._records: list[SequenceRecord] | None = None
        self._index: dict[int, dict] = {}

    # --- AttentionSource protocol -------------------------------------------------
    @property
    def lengths(self) -> list[int]:
        return list(self._lengths)

    @property
    def n_layers(self) -> int:
        return self._n_layers

    @property
    def n_heads(self) -> int:
        return self._n_heads

    def causal_block(self, seq_indices: Sequence[int]) -> np.ndarray:
        """float32 [Σ n(n+1)/2, n_layers*n_heads] for the sequences, in request order."""
        return decode(np.concatenate([self.codes(int(i)) for i in seq_indices], axis=0)) if len(seq_indices) else np.zeros((0, self.n_layers * self.n_heads), np.float32)

    # --- more ----------------------------------------------------------------------
    @property
    def codec(self) -> str:
        """``"log12"`` or ``"topmass"``."""
        return self._codec

    @property
    def mass(self) -> float:
        """Mass kept per row (1.0 for log12, which drops nothing)."""
        return self._mass

    def iou_error_bound(self, n: int) -> float:
        """Largest change of an n-token sequence's IoU this store's codec can cause (module docstring)."""
        return iou_error_bound(n, self._mass)

    @property
    def n_sequences(self) -> int:
        return len(self._lengths)

    @property
    def split(self) -> tuple[str, ...]:
        """``"synthesis"`` or ``"heldout"`` for every sequence."""
        return self._split

    @property
    def synthesis_indices(self) -> list[int]:
        return [i for i, s in enumerate(self._split) if s == "synthesis"]

    @property
    def heldout_indices(self) -> list[int]:
        return [i for i, s in enumerate(self._split) if s == "heldout"]

    def records(self) -> list[SequenceRecord]:
        if self._records is None:
            path = self.directory / "sequences.jsonl"
            if not path.exists():
                raise UserError(f"attention store is damaged: {path} is missing")
            data = read_text(path)
            if zlib.crc32(data.encode("utf-8")) != self._sequences_crc:
                raise UserError(f"attention store is damaged: {path} does not match meta.json (edited or truncated)")
            self._records = _parse_records(path, data, self._lengths, self._split)
        return self._records

    def tables(self, seq_indices: Iterable[int]) -> list[TokenTable]:
        records = self.records()
        return [records[int(i)].table() for i in seq_indices]

    def texts(self, seq_indices: Iterable[int]) -> list[str]:
        records = self.records()
        return [records[int(i)].text for i in seq_indices]

    def _chunk_index(self, chunk: int) -> dict:
        if chunk not in self._index:
            path = self.directory / _chunk_name(chunk, "json")
            if not path.exists():
                raise UserError(
                    f"attention store in {self.directory} is incomplete: {path.name} is missing; "
                    "rerun `attndsl extract` with the same arguments to finish it"
                )
            index = _read_chunk_index(self.directory, chunk, self._chunk_size, self._lengths, self.n_layers * self.n_heads,
                                     self._codec)
            _check_chunk_file(self.directory, chunk, index)
            self._index[chunk] = index
        return self._index[chunk]

    def codes(self, seq_index: int) -> np.ndarray:
        """uint16 codes [n(n+1)/2, n_layers*n_heads] of one sequence (CRC-checked)."""
        if not 0 <= seq_index < self.n_sequences:
            raise IndexError(f"sequence {seq_index} out of range (store has {self.n_sequences})")
        chunk = seq_index // self._chunk_size
        index = self._chunk_index(chunk)
        position = seq_index - chunk * self._chunk_size
        n = self._lengths[seq_index]
        width = self.n_layers * self.n_heads
        if self._codec == TOPMASS:
            size = sparse_size(n, width, index["entries"][position])
        else:
            size = packed_size(tri_size(n) * width)
        path = self.directory / _chunk_name(chunk, "bin")
        with open(path, "rb") as handle:
            handle.seek(index["offsets"][position])
            blob = handle.read(size)
        if len(blob) != size or zlib.crc32(blob) != index["crc32"][position]:
            raise UserError(
                f"attention store is damaged: sequence {seq_index} in {path} fails its checksum; "
                f"delete {path.name} and {path.with_suffix('.json').name}, then rerun extract"
            )
        if self._codec == TOPMASS:
            try:
                return unpack_sparse(blob, n, width)
            except ValueError as error:  # only a forged checksum gets here
                raise UserError(f"attention store is damaged: sequence {seq_index} in {path}: {error}") from None
        return unpack12(blob, tri_size(n) * width).reshape(tri_size(n), width)

    def dense(self, seq_index: int) -> np.ndarray:
        """float32 [n_layers, n_heads, n, n] attention of one sequence (zeros above the diagonal)."""
        n = self._lengths[seq_index]
        values = decode(self.codes(seq_index))  # [tri, L*H]
        rows, cols = tril(n)
        out = np.zeros((self.n_layers * self.n_heads, n, n), dtype=np.float32)
        out[:, rows, cols] = values.T
        return out.reshape(self.n_layers, self.n_heads, n, n)

    def iter_blocks(self, seq_indices: Sequence[int], max_entries: int = 1 << 20) -> Iterator[tuple[list[int], np.ndarray]]:
        """Stream `causal_block` in groups of sequences of at most ``max_entries`` rows."""
        group: list[int] = []
        size = 0
        for i in seq_indices:
            t = tri_size(self._lengths[int(i)])
            if group and size + t > max_entries:
                yield group, self.causal_block(group)
                group, size = [], 0
            group.append(int(i))
            size += t
        if group:
            yield group, self.causal_block(group)

    def verify(self) -> None:
        """Check every chunk and sequence record; UserError on the first problem."""
        self.records()
        for chunk in range((self.n_sequences + self._chunk_size - 1) // self._chunk_size):
            self._chunk_index(chunk)
        for i in range(self.n_sequences):
            self.codes(i)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def files_complete(self) -> bool:
        """Whether every chunk is present with the size its index records (no full read).

        False for what rerunning extract finishes (a missing or truncated chunk);
        a chunk index that is damaged is a `UserError` naming it.
        """
        if not (self.directory / "sequences.jsonl").is_file():
            return False
        width = self.n_layers * self.n_heads
        for chunk in range((self.n_sequences + self._chunk_size - 1) // self._chunk_size):
            index_path, data_path = self.directory / _chunk_name(chunk, "json"), self.directory / _chunk_name(chunk, "bin")
            if not index_path.is_file() or not data_path.is_file():
                return False
            index = _read_chunk_index(self.directory, chunk, self._chunk_size, self._lengths, width, self._codec)
            if data_path.stat().st_size != index["bytes"]:
                return False
        return True


def _parse_records(path: Path, data: str, lengths: Sequence[int], splits: Sequence[str]) -> list[SequenceRecord]:
    """The records of ``sequences.jsonl``, each checked against `RECORD_SCHEMA` and its meta.json entries."""
    lines = [(number, line) for number, line in enumerate(data.split("\n"), 1) if line]
    if len(lines) != len(lengths):
        raise UserError(f"{path} is damaged: {len(lines)} sequences, but meta.json lists {len(lengths)}")
    records = []
    for (number, line), n, split in zip(lines, lengths, splits):
        where = f"{path}:{number}"
        r = check(parse_json(line, where), RECORD_SCHEMA, where)
        if r["split"] != split:
            raise UserError(f"{where} is damaged: split {r['split']!r}, but meta.json says {split!r}")
        syntax = r.get("syntax")
        sizes = [len(r["ids"]), len(r["spans"]), len(r["special"])]
        sizes += [len(syntax[k]) for k in ("upos", "dep", "head")] if syntax else []
        if any(size != n for size in sizes):
            raise UserError(f"{where} is damaged: its token lists do not all have the {n} tokens meta.json gives")
        if any(len(span) != 2 or not span[0] <= span[1] <= len(r["text"]) for span in r["spans"]):
            raise UserError(f"{where} is damaged: a token span is not [start, end] within the text")
        records.append(SequenceRecord(r["text"], tuple(r["ids"]), tuple(tuple(s) for s in r["spans"]),
                                      tuple(r["special"]), r["split"], syntax))
    return records


def open_store(run_dir: str | Path) -> Store:
    """The attention store of a run directory."""
    return Store(Path(run_dir) / STORE_DIRNAME)
