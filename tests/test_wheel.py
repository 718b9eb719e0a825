"""The wheel carries the grammar, kernels and standard library: build it,
install it into a fresh virtual environment and use it from there."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    (found,) = out.glob("attndsl-*.whl")
    return found


def test_wheel_installs_and_parses_in_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # dependencies come from this interpreter's site-packages (no network, no
    # rebuild); attndsl itself only from the wheel.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    script = (
        "import attndsl, attndsl.kernels, attndsl.grammar, pathlib, sys\n"
        "assert pathlib.Path(attndsl.__file__).is_relative_to(pathlib.Path(sys.prefix)), attndsl.__file__\n"
        "from attndsl.language.parser import parse, grammar_text\n"
        "from attndsl import stdlib\n"
        "assert 'program' in grammar_text()\n"
        "m = parse('program p { 0.5 * [k == q - 1] + 0.5 * nearest(punct(k)) }')\n"
        "assert m.programs[0].terms[0].weight == 0.5\n"
        "assert len(stdlib.programs()) >= 10\n"
        "print('ok', attndsl.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
    cli = subprocess.run([str(env_dir / "bin" / "attndsl"), "compile", "-"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr


def test_the_repository_root_adds_no_import_name_but_attndsl_benchmarks_and_tests():
    """pytest and ``python -m`` put the repository root on ``sys.path``, so every package folder there is
    importable by its bare name.  A top-level ``kernels`` folder hid Hugging Face's ``kernels`` library,
    which transformers 5.25 imports when it is installed (``from kernels import CUDAProperties`` failed);
    the kernels and the grammar live inside ``attndsl``."""
    importable = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert importable == {"attndsl", "benchmarks", "tests"}
    # from the root (``-c`` puts the working directory first on sys.path), `kernels` is either absent or an
    # installed distribution, never a regular package of this repository (a leftover folder holding only
    # __pycache__ is a namespace portion, which an installed package still wins over)
    probe = "import importlib.util; s = importlib.util.find_spec('kernels'); print(s.origin if s and s.origin else '')"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    shown = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    origin = shown.stdout.strip()
    assert not origin or not Path(origin).resolve().is_relative_to(ROOT), origin
