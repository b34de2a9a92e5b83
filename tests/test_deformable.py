"""B-spline registration stage (issue 6): grid refinement, result transform, real-data accuracy."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from regframe import AffineTransform, BSplineTransform, CompositeTransform, Image
from regframe.errors import InvalidInputError
from regframe.metrics import MeanSquares
from regframe.metrics.regularized import RegularizedMetric
from regframe.quality import folding_fraction, jacobian_determinant
from regframe.registration import displacement_field, resample
from regframe.registration.deformable import (
    BSplineGridAdaptor,
    _grid_meshes,
    bspline_schedule,
    register_bspline,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"


def _data(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"test data {path} not found (expected ../shared/data beside the repository)")
    return path


def _smooth_image(n: int = 48) -> Image:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    c = (n - 1) / 2
    img = 100 * np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * (n / 5) ** 2))
    img += 60 * np.exp(-((x - c / 2) ** 2 + (y - 1.4 * c) ** 2) / (2 * (n / 10) ** 2))
    img += 40 * (((x - 1.5 * c) ** 2 + (y - c / 2) ** 2) < (n / 8) ** 2)
    return Image(img, spacing=(1.0, 1.0))


def _known_warp(fixed: Image, seed: int = 0, amplitude: float = 1.5) -> BSplineTransform:
    t = BSplineTransform.from_domain(fixed, mesh_size=3)
    rng = np.random.default_rng(seed)
    t.parameters = rng.normal(0.0, amplitude, t.n_parameters)
    return t


# ---------------------------------------------------------------- grid schedule
def test_grid_meshes_double_per_grid_level():
    assert _grid_meshes(np.array([12, 10]), 3, 3) == [(3, 3), (6, 6), (12, 12)]
    assert _grid_meshes(np.array([12, 12]), 1, 2) == [(12, 12), (12, 12)]
    # more image levels than grid levels: grid levels spread over them
    assert _grid_meshes(np.array([8, 8]), 2, 4) == [(4, 4), (4, 4), (8, 8), (8, 8)]


def test_grid_adaptor_refines_exactly():
    fixed = _smooth_image(32)
    t = _known_warp(fixed)
    adaptor = BSplineGridAdaptor([(3, 3), (6, 6), (12, 12)])
    assert adaptor(t, 0, fixed) is t
    fine = adaptor(t, 2, fixed)
    assert fine.mesh_size == (12, 12)
    pts = fixed.voxel_points()
    np.testing.assert_allclose(fine.transform_points(pts), t.transform_points(pts), atol=1e-10)
    with pytest.raises(InvalidInputError, match="integer multiple"):
        BSplineGridAdaptor([(5, 5)])(t, 0, fixed)


def test_bspline_schedule_keeps_coarsest_level_large_enough():
    sched = bspline_schedule(Image(np.zeros((40, 64))), 4)
    assert sched.shrink_factors[-1] == (1, 1) or sched.shrink_factors[-1] == 1
    assert min(40, 64) // max(np.atleast_1d(sched.shrink_factors[0])) >= 16


# ------------------------------------------------------------- registration
def test_register_bspline_recovers_known_deformation():
    """Moving = fixed warped by a known B-spline; the registration must undo most of it."""
    fixed = _smooth_image(48)
    truth = _known_warp(fixed)
    moving = resample(fixed, truth, reference=fixed, interpolator="bspline")  # moving(x) = fixed(truth(x))
    res = register_bspline(fixed, moving, "mse", linear_stage=None, mesh_size=6, n_grid_levels=2,
                           n_iterations=40)
    warped = resample(moving, res.transform, reference=fixed, interpolator="bspline")
    before = float(np.mean((moving.array - fixed.array) ** 2))
    after = float(np.mean((warped.array - fixed.array) ** 2))
    assert after < 0.1 * before, (before, after)
    # the recovered T undoes the truth where the image has structure: truth(T(x)) ~ x
    inner = fixed.voxel_points()[np.all((fixed.voxel_indices() > 8) & (fixed.voxel_indices() < 40), axis=1)]
    err = np.linalg.norm(truth.transform_points(res.transform.transform_points(inner)) - inner, axis=1)
    shift = np.linalg.norm(truth.transform_points(inner) - inner, axis=1)
    assert np.median(err) < 0.4 * np.median(shift), (np.median(err), np.median(shift))
    assert isinstance(res.transform, BSplineTransform) and res.transform.mesh_size == (6, 6)
    assert jacobian_determinant(res.transform, fixed).array.min() > 0.0
    assert len(res.iterations_per_level) == 2


def test_register_bspline_with_linear_stage_result_is_a_composite(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    from regframe import write_transform

    fixed = _smooth_image(40)
    lin = AffineTransform(2)
    lin.parameters = [1.03, 0.02, -0.01, 0.98, 1.5, -1.0]
    moving = resample(fixed, lin.inverse(), reference=fixed, interpolator="bspline")
    res = register_bspline(fixed, moving, "mse", linear_stage="translation", mesh_size=4, n_grid_levels=2,
                           n_iterations=10)
    comp = res.transform
    assert isinstance(comp, CompositeTransform) and comp.n_transforms == 2
    assert isinstance(comp[1], BSplineTransform)  # the B-spline acts first
    assert res.optimized_transform.n_parameters == comp[1].n_parameters
    assert len(res.levels) > 2  # levels of the linear and the B-spline stages
    # written as a .tfm that SimpleITK reads and maps identically
    path = tmp_path / "result.tfm"
    write_transform(comp, path)
    st = sitk.ReadTransform(str(path))
    pts = fixed.voxel_points()[::37]
    theirs = np.array([st.TransformPoint(tuple(p)) for p in pts])
    np.testing.assert_allclose(theirs, comp.transform_points(pts), atol=1e-8)
    # and converts to a dense displacement field
    field = displacement_field(comp, fixed)
    np.testing.assert_allclose(field.reshape(-1, 2), comp.transform_points(fixed.voxel_points()) - fixed.voxel_points())


def test_register_bspline_does_not_mutate_inputs_and_is_deterministic():
    fixed = _smooth_image(32)
    moving = resample(fixed, _known_warp(fixed, 3, 1.0), reference=fixed, interpolator="bspline")
    init = AffineTransform(2)
    f0, m0, p0 = fixed.array.copy(), moving.array.copy(), init.parameters.copy()
    kw = dict(linear_stage=init, mesh_size=4, n_grid_levels=2, n_iterations=8, sampling=0.5, seed=3)
    r1 = register_bspline(fixed, moving, "mse", **kw)
    r2 = register_bspline(fixed, moving, "mse", **kw)
    assert np.array_equal(r1.transform.parameters, r2.transform.parameters)
    assert np.array_equal(fixed.array, f0) and np.array_equal(moving.array, m0)
    assert np.array_equal(init.parameters, p0)


def test_register_bspline_validation():
    img = _smooth_image(16)
    with pytest.raises(InvalidInputError, match="at most one"):
        register_bspline(img, img, mesh_size=2, control_point_spacing=5.0)
    with pytest.raises(InvalidInputError, match="linear_stage"):
        register_bspline(img, img, linear_stage="bspline")
    with pytest.raises(InvalidInputError, match="regularization"):
        register_bspline(img, img, regularization=-1.0)
    with pytest.raises(InvalidInputError, match="optimizer"):
        register_bspline(img, img, "mse", linear_stage=None, mesh_size=2, optimizer="newton")
    with pytest.raises(InvalidInputError, match="Image"):
        register_bspline(img.array, img)  # type: ignore[arg-type]


def test_evaluation_memory_is_not_samples_times_parameters():
    """Peak extra memory of one cost evaluation is O(samples * 4**d + parameters), not O(samples * P)."""
    n = 40
    fixed = Image(np.random.default_rng(0).random((n, n, n)))
    t = BSplineTransform.from_domain(fixed, mesh_size=12)  # 3 * 15**3 = 10125 parameters
    cost = RegularizedMetric(MeanSquares(), weight=1.0).initialize(fixed, fixed, t)
    cost.value_and_gradient()  # compile / warm up
    tracemalloc.start()
    cost.value_and_gradient()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_samples, n_par = n**3, t.n_parameters
    dense = n_samples * 3 * n_par * 8
    assert peak < 64 * (n_samples * 3 * 8 + n_par * 8) < dense / 50, (peak, dense)


# ------------------------------------------------------------------- real data
@pytest.mark.slow
def test_rat_lung_halves_the_mse_without_folding():
    """Mean squares, default settings, no linear stage (the comparison with elastix, run beside
    regframe, is in benchmarks/bench_deformable.py)."""
    from regframe import read_image

    fixed = read_image(_data("rat_lung", "RatLungSlice1.mha"))
    moving = read_image(_data("rat_lung", "RatLungSlice2.mha"))
    res = register_bspline(fixed, moving, "mse", linear_stage=None)
    warped = resample(moving, res.transform, reference=fixed, interpolator="bspline")
    f = fixed.array.astype(np.float64)
    before = float(np.mean((f - moving.array) ** 2))
    mse = float(np.mean((f - warped.array) ** 2))
    assert mse <= 0.55 * before, (mse, before)
    assert folding_fraction(res.transform, fixed) == 0.0
    assert jacobian_determinant(res.transform, fixed).array.min() > 0.0


@pytest.mark.slow
def test_brain_multimodal_dice_improves_on_the_affine_stage():
    from regframe import read_image

    d = ("elastix_example",)
    fixed = read_image(_data(*d, "fixed.mhd"))
    moving = read_image(_data(*d, "moving.mhd"))
    fmask = read_image(_data(*d, "mask_fixed.mhd"))
    mmask = read_image(_data(*d, "mask_moving.mhd"))
    res = register_bspline(fixed, moving, "mattes")
    f = fmask.array > 0.5

    def dice(transform) -> float:
        warped = resample(mmask, transform, reference=fmask, interpolator="nearest").array > 0.5
        return float(2 * np.sum(f & warped) / (f.sum() + warped.sum()))

    assert dice(res.transform) > dice(res.transform[0]) > dice(AffineTransform(2)), (
        dice(res.transform), dice(res.transform[0]))
    assert jacobian_determinant(res.transform, fixed).array.min() > 0.0
