"""Shared test configuration: hypothesis profiles, data location, seeded RNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "deterministic",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci",
    derandomize=False,
    database=None,
    deadline=None,
    max_examples=500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("REGFRAME_HYPOTHESIS_PROFILE", "deterministic"))

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("REGFRAME_DATA", REPO_ROOT.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """Path of a file in ../shared/data; skips the test when it is absent."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"test data {path} not found (expected ../shared/data beside the repository)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator (tests never use numpy's global random state)."""
    return np.random.default_rng(20261123)


@pytest.fixture
def shared_data():
    """Callable returning paths in ../shared/data, skipping when absent."""
    return data_path


class Uphill:
    """Factory of an optimizer that certainly makes a registration worse (one big uphill step).

    ``Uphill.make(step)`` returns a :class:`regframe.optimizers.Optimizer`; tests of the
    never-worse guard use it where failure must be certain.
    """

    @staticmethod
    def make(step: float = 8.0):
        from regframe.optimizers import Optimizer
        from regframe.optimizers.base import StopReason

        class _Uphill(Optimizer):
            def __init__(self) -> None:
                super().__init__(scales="physical_shift")

            def _run(self, cost, scales, recorder):
                _, grad = cost.value_and_gradient()
                direction = grad / scales
                direction = direction / max(float(np.linalg.norm(direction)), 1e-300)
                cost.transform.update_parameters(direction * step)
                return cost.transform.parameters, cost.value(), 1, StopReason.MAX_ITERATIONS, "uphill on purpose"

        return _Uphill()
