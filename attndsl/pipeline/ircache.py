"""A program file's compiled IR beside it, so that the stages after synthesis need not parse it again.

A library of 960 softmax programs with their word tables is 17.5 MB of text, and parsing it takes
minutes and gigabytes (103 s and 2.4 GB on the packed run's library); ``attndsl replace``, the report
and the explanations read it whole.  The synthesis stage holds every program's IR and canonical source
when it writes ``library.attn``, so it also writes ``library.ir.json`` beside it: the SHA-256 of the
text they came from, a fingerprint of the front end (grammar, parser, validator, IR) and the programs.
`load` returns them only when both match — the same text, compiled by the same front end — and None
otherwise, and also for a cache it cannot read or that is malformed in any way, so `read_attn` parses
as it always did: the cache is never the source of truth.  JSON rather than pickle, so a run directory
received from someone else cannot run code; only `attndsl.language.ir` dataclasses are built from it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from attndsl.language import ir

FORMAT = 2
SUFFIX = ".ir.json"


def cache_path(attn_path: str | Path) -> Path:
    """``library.attn`` → ``library.ir.json``."""
    path = Path(attn_path)
    return path.with_name(path.stem + SUFFIX)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def front_end() -> str | None:
    """A fingerprint of the code that turns text into IR (None where those files cannot be read)."""
    from attndsl.language import ast, ops, parser, validate

    digest = hashlib.sha256()
    try:
        for module in (ast, ir, ops, parser, validate):
            digest.update(Path(module.__file__).read_bytes())
        digest.update(parser.grammar_text().encode("utf-8"))
    except (OSError, TypeError):
        return None
    return digest.hexdigest()


_CLASSES = {name: cls for name, cls in vars(ir).items()
            if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == ir.__name__}


#: each IR class's field names, in order
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES.values()}


def _key(value):
    """A hashable, exact stand-in for an encoded value (0.0 and −0.0 stay apart; NaN equals NaN)."""
    if isinstance(value, dict):
        return ("#", value["#"])
    if isinstance(value, list):
        return tuple(_key(item) for item in value)
    if isinstance(value, float) and (value == 0.0 or value != value):
        return ("f", repr(value))
    return value


class _Encoder:
    """IR as a table of distinct nodes, children first: each node is ``[class name, field values …]``,
    where a node-valued field is ``{"#": index}`` of an earlier entry, a tuple a list, anything else
    itself.  Equal nodes are written once (a library's terms share most of their factors, and
    reads carry word tables by value), and come back as one shared object."""

    def __init__(self) -> None:
        self.nodes: list[list] = []
        self.index: dict[tuple, int] = {}
        self.seen: dict[int, tuple[object, int]] = {}  # id(node) -> (node, index): the same object again

    def value(self, node):
        if type(node) in _FIELDS:
            return {"#": self.node(node)}
        if isinstance(node, tuple):
            return [self.value(item) for item in node]
        if node is None or isinstance(node, (str, bool, int, float)):
            return node
        raise TypeError(f"cannot cache a {type(node).__name__} of the IR")

    def node(self, node) -> int:
        known = self.seen.get(id(node))
        if known is not None and known[0] is node:
            return known[1]
        cls = type(node)
        values = [self.value(getattr(node, name)) for name in _FIELDS[cls]]
        key = (cls.__name__,) + tuple(_key(v) for v in values)
        at = self.index.get(key)
        if at is None:
            at = self.index[key] = len(self.nodes)
            self.nodes.append([cls.__name__] + values)
        self.seen[id(node)] = (node, at)
        return at


def _decode_nodes(entries: list) -> list:
    nodes: list = []

    def value(item):
        if isinstance(item, list):
            return tuple(value(x) for x in item)
        if isinstance(item, dict):
            return nodes[item["#"]]
        return item

    for entry in entries:
        cls = _CLASSES[entry[0]]
        names = _FIELDS[cls]
        if len(entry) - 1 != len(names):
            raise ValueError("a node with the wrong number of fields")
        nodes.append(cls(**{name: value(item) for name, item in zip(names, entry[1:])}))
    return nodes


def write(attn_path: str | Path, text: str, programs: Sequence[ir.Program], sources: Sequence[str]) -> None:
    """Write the cache of ``text`` (what ``attn_path`` holds): its programs in file order and each
    one's canonical source (``format_program``), atomically.  Nothing is written, and an old cache is
    removed, where the front end cannot be fingerprinted."""
    from attndsl.pipeline.rundir import atomic_write_text

    target = cache_path(attn_path)
    fingerprint = front_end()
    if fingerprint is None or len({p.name for p in programs}) != len(programs):
        target.unlink(missing_ok=True)
        return
    encoder = _Encoder()
    roots = [encoder.node(program) for program in programs]
    payload = {"format": FORMAT, "text_sha256": text_hash(text), "front_end": fingerprint,
               "nodes": encoder.nodes, "programs": roots, "sources": list(sources)}
    atomic_write_text(target, json.dumps(payload, separators=(",", ":")))


def load(attn_path: str | Path, text: str) -> tuple[tuple[ir.Program, ...], dict[str, str]] | None:
    """(programs, name → canonical source) of ``text`` from the cache beside ``attn_path``; None when
    there is none, it is for other text or another front end, or it cannot be read."""
    target = cache_path(attn_path)
    try:
        if not target.is_file():
            return None
        fingerprint = front_end()
        if fingerprint is None:
            return None
        payload = json.loads(target.read_text(encoding="utf-8"))
        if (payload.get("format") != FORMAT or payload.get("text_sha256") != text_hash(text)
                or payload.get("front_end") != fingerprint):
            return None
        nodes = _decode_nodes(payload["nodes"])
        programs = tuple(nodes[i] for i in payload["programs"])
        sources = [str(source) for source in payload["sources"]]
        if len(sources) != len(programs) or not all(isinstance(p, ir.Program) for p in programs):
            return None
        return programs, {p.name: source for p, source in zip(programs, sources)}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
        return None
