"""The run directory shared by all pipeline stages.

A run is a directory with a ``manifest.json``::

    {
      "format": 1,
      "versions": {"attndsl": ..., "python": ..., "torch": ..., ...},   # at creation
      "stages": {"extract": {<settings that decide the stage's results>}, ...},
      "completed": {"extract": {<summary written when the stage finished>}, ...}
    }

Each stage calls ``open_run(path, stage, settings)`` before it writes: the
first call records the settings; a later call with different settings is
refused with a `UserError` that names every differing key, so a run made with
other settings is never silently mixed in.  Settings must be JSON values
(compared after a JSON round trip, so tuples equal lists).  Settings that do
not change results (device, batch size) belong elsewhere, e.g. in the
completion summary.

Every write goes through ``atomic_write_*`` (temporary file in the same
directory, fsync, ``os.replace``): a reader sees the old file or the new one,
never half of one.  The manifest is re-read before each update, so stages that
run one after another never lose each other's entries.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

MANIFEST = "manifest.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FORMAT = 1


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or unreadable file is a `UserError` naming it."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise UserError(f"{path} is missing") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is corrupt (not valid JSON: {error})") from error


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
        manifest = read_json(self.manifest_path)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise UserError(f"{self.manifest_path} is not an attndsl run manifest (format {FORMAT})")
        return manifest

    def settings(self, stage: str) -> dict | None:
        """The settings recorded for ``stage``, or None if it never ran."""
        return self.manifest.get("stages", {}).get(stage)

    def is_complete(self, stage: str) -> bool:
        return stage in self.manifest.get("completed", {})

    def completion(self, stage: str) -> dict | None:
        return self.manifest.get("completed", {}).get(stage)

    def mark_complete(self, stage: str, summary: dict | None = None) -> None:
        """Record that ``stage`` finished (with a JSON summary of what it did)."""
        manifest = self.manifest
        manifest.setdefault("completed", {})[stage] = _normalise(summary or {})
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
        if run.path.is_dir() and any(p.name != MANIFEST for p in run.path.iterdir()):
            raise UserError(f"{run.path} is not empty and holds no {MANIFEST}; choose a new run directory")
        run.path.mkdir(parents=True, exist_ok=True)
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
