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


@pytest.fixture(scope="session")
def rotated_multimodal_brain():
    """The elastix example pair (T1-like fixed, PD-like moving) with the moving image rotated 70 degrees.

    Made with SimpleITK. Returns ``(fixed, moving, inverse, probe, truth, fixed_landmarks,
    moving_landmarks)``: ``inverse`` maps fixed points to the rotated moving image's points,
    ``probe`` are fixed points inside the fixed mask and ``truth`` their true images; the four
    landmarks are paired by ``inverse``.
    """
    sitk = pytest.importorskip("SimpleITK")
    import regframe as rf

    d = data_path("elastix_example")
    fixed_s = sitk.Cast(sitk.ReadImage(str(d / "fixed.mhd")), sitk.sitkFloat32)
    moving_s = sitk.Cast(sitk.ReadImage(str(d / "moving.mhd")), sitk.sitkFloat32)
    centre = fixed_s.TransformContinuousIndexToPhysicalPoint([127.5, 127.5])
    motion = sitk.Euler2DTransform(centre, np.deg2rad(70.0), (6.0, -4.0))
    moved = sitk.Resample(moving_s, moving_s, motion, sitk.sitkLinear, 0.0)
    fixed, moving = rf.from_sitk(fixed_s), rf.from_sitk(moved)
    inverse = motion.GetInverse()
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "mask_fixed.mhd"))) > 0
    probe = fixed.voxel_points()[mask.reshape(-1)][::50]
    truth = np.array([inverse.TransformPoint(tuple(p)) for p in probe])
    lm_f = np.array([[90.0, 90.0], [170.0, 100.0], [120.0, 180.0], [100.0, 140.0]])
    lm_m = np.array([inverse.TransformPoint(tuple(p)) for p in lm_f])
    return fixed, moving, inverse, probe, truth, lm_f, lm_m


@pytest.fixture(scope="session")
def sem_sections():
    """The first 4 ``lung_sem`` serial EM sections (real consecutive slices), shrunk 8x by averaging.

    SimpleITK float32 images of 100x100 pixels with unit spacing and zero origin (pixel units), values
    in [0, 255]; skips when SimpleITK or the data are absent.
    """
    sitk = pytest.importorskip("SimpleITK")
    files = sorted(data_path("lung_sem").glob("*.png"))[:4]
    out = []
    for f in files:
        small = sitk.BinShrink(sitk.ReadImage(str(f), sitk.sitkFloat32), [8, 8])
        small.SetSpacing((1.0, 1.0))
        small.SetOrigin((0.0, 0.0))
        out.append(small)
    return out
