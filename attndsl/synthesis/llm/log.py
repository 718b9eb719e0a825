"""The LLM writer's run-directory records: an append-only JSON-lines log and request identities.

`JsonlLog` appends whole, fsynced lines from any thread (``llm/requests.jsonl``);
`read_jsonl` reads every complete record back; `request_hash` is the key of
the answer cache (``llm/cache/<hash>.json``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from attndsl.synthesis.llm.config import LLMConfig

class JsonlLog:
    """Append-only JSON lines, safe across threads and crashes.

    Each record is written as one line with a single write, then flushed and
    fsynced.  If a crash left a partial last line, the next append starts on a
    fresh line, and `read_jsonl` skips the fragment.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as handle:
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        line = "\n" + line
                handle.write(line.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete record of a JSON-lines file (a torn last line is skipped)."""
    records = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def request_hash(config: LLMConfig, messages: Sequence[dict]) -> str:
    """Identity of a request: same hash, same answer from the cache."""
    key = {
        "model": config.model,
        "messages": list(messages),
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
