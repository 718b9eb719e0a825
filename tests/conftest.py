"""Shared test configuration.

Hypothesis runs with a fixed seed (derandomize) so CI is deterministic; set
HYPOTHESIS_PROFILE=dev for random exploration on a workstation.
"""
import os
import sys

# Test helpers import each other both as `tests.x` and as plain `x`.
sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one thread (no thread hand-offs); restored afterwards.

    Modules of many tiny-model runs use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
