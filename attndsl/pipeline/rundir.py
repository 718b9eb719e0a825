"""The run directory shared by all pipeline stages.

A run is a directory with a ``manifest.json``::

    {
      "format": 1,
      "versions": {"attndsl": ..., "python": ..., "torch": ..., ...},   # at creation
      "stages": {"extract": {<settings that decide the stage's results>}, ...},
      "completed": {"extract": {<its outcome, written when the stage finished>}, ...}
    }

Each stage calls ``open_run(path, stage, settings)`` before it writes: the
first call records the settings; a later call with different settings is
refused with a `UserError` that names every differing key, so a run made with
other settings is never silently mixed in.  Settings must be JSON values
(compared after a JSON round trip, so tuples equal lists).  Settings that do
not change results (device, batch size) belong elsewhere, e.g. in the
completion record (the stage's outcome).

Every write goes through ``atomic_write_*`` (temporary file in the same
directory, fsync, ``os.replace``): a reader sees the old file or the new one,
never half of one.  The manifest is re-read before each update, so stages that
run one after another never lose each other's entries.

**Reading run files.**  Whatever a run directory holds may have been damaged
or edited by hand, so every reader here turns every problem into a
`UserError` that names the file (and line, for CSV): ``read_text`` (missing,
a directory, unreadable, not UTF-8), ``read_json`` (also invalid JSON, numbers
past Python's 4,300-digit limit, nesting too deep to decode) with an optional
*schema* checked by `attndsl.pipeline.schema.conform`, and ``read_csv`` (required columns, rows with
too few or too many fields).  The schema language (`attndsl.pipeline.schema`)
is small and re-exported here.  The store, the library and the manifest each declare theirs beside
the code that owns the file.  Writers turn `OSError` (permission denied, a
directory where the file should be, a full disk) into a `UserError` naming
the path.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from attndsl.errors import UserError
from attndsl.pipeline.layout import MANIFEST  # the run layout names every file
from attndsl.pipeline.schema import Choice, Int, Map, check, conform, describe  # noqa: F401  (re-exported)

_UMASK = os.umask(0o022)
os.umask(_UMASK)
FORMAT = 1


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file.

    Any `OSError` (no permission, a directory in the way, a full disk) is a
    `UserError` naming ``path``; the temporary file is removed.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise UserError(f"cannot write {path}: {_reason(error)}") from error
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError):
            raise UserError(f"cannot write {path}: {_reason(error)}") from error
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------ reading


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file; missing, unreadable, a directory or not UTF-8 is a `UserError` naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise UserError(f"{path} is missing") from error
    except IsADirectoryError as error:
        raise UserError(f"{path} is a directory, not a file") from error
    except OSError as error:
        raise UserError(f"cannot read {path}: {_reason(error)}") from error
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {error.start}); is it the right file?") from error


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` whose every failure is a `UserError` starting with ``where``.

    Besides syntax errors that covers integers past Python's digit limit
    (`ValueError`) and nesting too deep for the decoder (`RecursionError`).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from error
    except ValueError as error:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise UserError(f"{where}: unreadable JSON ({str(error).split(';')[0]})") from error
    except RecursionError as error:
        raise UserError(f"{where}: unreadable JSON (nested too deeply)") from error


def read_json(path: str | os.PathLike, schema: Any = ...) -> Any:
    """A JSON file, checked against ``schema`` (see `conform`) when one is given.

    Every problem — missing, unreadable, not UTF-8, not JSON, wrong shape — is
    a `UserError` naming the file.
    """
    value = parse_json(read_text(path), f"{path} is corrupt")
    if schema is not ...:
        check(value, schema, path)
    return value


def read_csv(path: str | os.PathLike, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV file whose header holds the ``required`` columns.

    Blank lines are skipped.  A row with another number of fields than the
    header, or any CSV syntax problem, is a `UserError` naming the file and line.
    """
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        header = next(reader, [])
        missing = [c for c in required if c not in header]
        if missing:
            raise UserError(f"{path} lacks the columns {', '.join(missing)}")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}")
            yield reader.line_num, dict(zip(header, row))
    except csv.Error as error:
        raise UserError(f"{path}:{reader.line_num}: not valid CSV ({error})") from error


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour a run's results depend on."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("attndsl", "torch", "transformers", "tokenizers", "numpy", "numba"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


#: what every manifest holds (stage names map to JSON objects of settings / summaries)
MANIFEST_SCHEMA = {"format": int, "versions?": dict, "stages?": Map(dict), "completed?": Map(dict)}


def read_manifest(path: str | os.PathLike) -> dict:
    """A run manifest, format and structure checked (`UserError` naming the file)."""
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not an attndsl run manifest (format {FORMAT})")
    return check(manifest, MANIFEST_SCHEMA, path)


def _normalise(settings: dict) -> dict:
    return json.loads(json.dumps(settings, sort_keys=True))


@dataclass(frozen=True)
class Run:
    """An open run directory (the manifest is re-read on every access)."""

    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def manifest(self) -> dict:
        """The manifest, checked against `MANIFEST_SCHEMA` (a `UserError` naming it otherwise)."""
        return read_manifest(self.manifest_path)

    def settings(self, stage: str) -> dict | None:
        """The settings recorded for ``stage``, or None if it never ran."""
        return self.manifest.get("stages", {}).get(stage)

    def is_complete(self, stage: str) -> bool:
        return stage in self.manifest.get("completed", {})

    def completion(self, stage: str) -> dict | None:
        return self.manifest.get("completed", {}).get(stage)

    def mark_complete(self, stage: str, outcome: dict | None = None) -> None:
        """Record that ``stage`` finished, with its outcome (a JSON object saying what it did)."""
        manifest = self.manifest
        manifest.setdefault("completed", {})[stage] = _normalise(outcome or {})
        atomic_write_json(self.manifest_path, manifest)

    def clear_complete(self, stage: str) -> None:
        manifest = self.manifest
        if manifest.get("completed", {}).pop(stage, None) is not None:
            atomic_write_json(self.manifest_path, manifest)

    def file(self, *parts: str) -> Path:
        """A path inside the run directory."""
        return self.path.joinpath(*parts)


def open_run(path: str | os.PathLike, stage: str, settings: dict, create: bool = True) -> Run:
    """Open (or create) a run directory for ``stage`` with ``settings``.

    Refuses with a `UserError` if the run recorded other settings for the same
    stage, naming each key that differs and both values.
    """
    run = Run(Path(path))
    settings = _normalise(settings)
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"{run.path} exists and is not a directory")
    if not run.manifest_path.exists():
        if not create:
            raise UserError(f"{run.path} is not an attndsl run (no {MANIFEST})")
        try:
            if run.path.is_dir() and any(p.name != MANIFEST for p in run.path.iterdir()):
                raise UserError(f"{run.path} is not empty and holds no {MANIFEST}; choose a new run directory")
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create the run directory {run.path}: {_reason(error)}") from error
        atomic_write_json(
            run.manifest_path,
            {"format": FORMAT, "versions": package_versions(), "stages": {stage: settings}, "completed": {}},
        )
        return run
    manifest = run.manifest
    recorded = manifest.setdefault("stages", {}).get(stage)
    if recorded is None:
        manifest["stages"][stage] = settings
        atomic_write_json(run.manifest_path, manifest)
        return run
    if recorded != settings:
        keys = sorted(set(recorded) | set(settings))
        diffs = [
            f"{key}: run has {json.dumps(recorded.get(key))}, now {json.dumps(settings.get(key))}"
            for key in keys
            if recorded.get(key) != settings.get(key)
        ]
        raise UserError(
            f"{run.path} was made by '{stage}' with other settings; use a new run directory "
            "or the same settings. Differences: " + "; ".join(diffs)
        )
    return run
