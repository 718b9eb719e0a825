"""One thread setting for torch and Numba (attndsl.threads)."""
import json
import os
import subprocess
import sys

import pytest

from attndsl import threads
from attndsl.cli import main
from attndsl.errors import UserError


def test_resolve_order_and_refusals(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve() == threads.available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve() == 3  # a count given to OpenMP directly is kept
    monkeypatch.setenv(threads.ENV, "5")
    assert threads.resolve() == 5 and threads.resolve(2) == 2 and threads.resolve("0") == threads.available_cores()
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(UserError, match="ATTNDSL_THREADS must be a positive whole number"):
        threads.resolve()
    with pytest.raises(UserError, match="--threads must be"):
        threads.resolve(-1)


def test_configure_sizes_both_pools_together(monkeypatch):
    import numba
    import torch

    before = torch.get_num_threads(), numba.get_num_threads()
    try:
        assert threads.configure(1) == 1
        assert threads.current() == {"torch": 1, "numba": 1}
        monkeypatch.delenv(threads.ENV, raising=False)
        assert threads.apply_env() is None and threads.current() == {"torch": 1, "numba": 1}  # unset: untouched
        monkeypatch.setenv(threads.ENV, "2")
        assert threads.apply_env() == 2
        cap = int(numba.config.NUMBA_NUM_THREADS)
        assert threads.current() == {"torch": 2, "numba": min(2, cap)}
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def _fresh(code, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", threads.ENV)}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_attndsl_first_sets_the_wait_policy_and_pool_sizes():
    code = (
        "import json, os, attndsl, torch, numba; "
        "print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads(), numba.get_num_threads()]))"
    )
    policy, torch_n, numba_n = _fresh(code)
    assert policy == "PASSIVE" and torch_n == numba_n == threads.available_cores()
    assert _fresh(code, ATTNDSL_THREADS="1") == ["PASSIVE", 1, 1]
    assert _fresh(code, OMP_WAIT_POLICY="ACTIVE")[0] == "ACTIVE"  # the user's choice wins
    late = "import json, os, torch, attndsl; print(json.dumps([os.environ.get('OMP_WAIT_POLICY')]))"
    assert _fresh(late) == [None]  # too late once torch has loaded OpenMP: left alone


def test_cli_threads_option(capsys, tmp_path):
    program = tmp_path / "p.attn"
    program.write_text("program p { 1 * [k == 0] }\n")
    assert main(["--threads", "zero", "compile", str(program)]) == 2
    assert "--threads must be a positive whole number" in capsys.readouterr().err
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["--threads", "1", "compile", str(program)]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
