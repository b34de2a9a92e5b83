"""Point-set metrics, CombinedMetric and landmark_objective (gradients, contract, use in RegistrationMethod)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import regframe as rf
from regframe.errors import InvalidInputError, NotInitializedError, ShapeError
from regframe.metrics import (
    ClosestPointDistance,
    CombinedMetric,
    LandmarkDistance,
    MeanSquares,
    landmark_objective,
)
from regframe.optimizers import LBFGS
from regframe.registration import LevelSchedule, RegistrationMethod, affine_from_points
from regframe.testing import check_metric
from regframe.testing.strategies import bspline_transforms, linear_transforms, smooth_arrays

RTOL = 1e-6


def _clouds(seed: int, ndim: int, n: int = 40, m: int = 300):
    rng = np.random.default_rng(seed)
    fixed = rng.uniform(-30, 30, (n, ndim))
    moving = rng.uniform(-40, 40, (m, ndim))
    return fixed, moving


def _inside(transform, points):
    """Move points into a B-spline's support region (unchanged for other transforms)."""
    if not isinstance(transform, rf.BSplineTransform):
        return points
    d = transform.ndim
    fp = transform.fixed_parameters
    size, origin, spacing = fp[:d], fp[d : 2 * d], fp[2 * d : 3 * d]
    direction = fp[3 * d :].reshape(d, d)
    u = (points - points.min(0)) / np.ptp(points, axis=0)
    return origin + (spacing * (1.0 + u * (size - 3))) @ direction.T


def _check(metric_factory, transform, fixed, moving):
    metric = metric_factory(_inside(transform, fixed), moving)
    metric.initialize(None, None, transform)
    n = transform.n_parameters
    idx = np.random.default_rng(n).choice(n, size=min(n, 24), replace=False)
    rep = check_metric(metric, step=1e-4, mode="both", indices=idx, rtol=RTOL, n_directions=2)
    assert rep.passed, str(rep)
    _, grad = metric.value_and_gradient()
    assert np.linalg.norm(grad) > 0  # the check compared a non-trivial gradient


def _transforms(ndim: int):
    return st.one_of(linear_transforms(ndim), bspline_transforms(ndim, max_mesh=2))


@settings(max_examples=12)
@given(ndim=st.sampled_from([2, 3]), data=st.data(), seed=st.integers(0, 2**16))
def test_landmark_distance_gradient(ndim, data, seed):
    t = data.draw(_transforms(ndim))
    f, _ = _clouds(seed, ndim)
    shift = np.random.default_rng(seed + 1).normal(0, 3.0, f.shape)
    _check(lambda fp, _m: LandmarkDistance(fp, fp + shift), t, f, None)


@settings(max_examples=12)
@given(ndim=st.sampled_from([2, 3]), data=st.data(), seed=st.integers(0, 2**16))
def test_closest_point_distance_gradient(ndim, data, seed):
    t = data.draw(_transforms(ndim))
    f, m = _clouds(seed, ndim)
    _check(ClosestPointDistance, t, f, m)


@settings(max_examples=8)
@given(ndim=st.sampled_from([2, 3]), data=st.data(), seed=st.integers(0, 2**16),
       w=st.floats(0.01, 10.0))
def test_combined_point_metrics_gradient(ndim, data, seed, w):
    t = data.draw(_transforms(ndim))
    f, m = _clouds(seed, ndim)
    f = _inside(t, f)
    holder = []

    def make(fp, mp):
        holder.append(CombinedMetric([(LandmarkDistance(fp, fp + 2.0), 1.0), (ClosestPointDistance(fp, mp), w)]))
        return holder[-1]

    _check(make, t, f, m)
    combo = holder[0]
    v = combo.value()
    assert v == pytest.approx(combo.last_values[0] + w * combo.last_values[1], rel=1e-12)


@pytest.mark.parametrize("kind", ["translation", "rigid", "affine", "bspline"])
def test_combined_image_and_landmarks_gradient(kind):
    """Image metric + landmarks: the sum's gradient is still the true gradient (non-zero centre)."""
    fixed = rf.Image(smooth_arrays((24, 26), 1), spacing=(1.1, 0.9), origin=(3.0, -2.0))
    moving = rf.Image(smooth_arrays((24, 26), 2), spacing=(1.1, 0.9), origin=(3.5, -1.5))
    if kind == "bspline":
        t = rf.BSplineTransform.from_domain(fixed, mesh_size=3)
        t.parameters = 0.3 * np.random.default_rng(0).standard_normal(t.n_parameters)
    else:
        t = {"translation": rf.TranslationTransform(2), "rigid": rf.Euler2DTransform(),
             "affine": rf.AffineTransform(2)}[kind]
        if kind != "translation":
            t.center = fixed.physical_center() + np.array([2.0, -3.0])
        p = t.parameters
        p[:] += 0.05 * np.random.default_rng(1).standard_normal(p.size)
        t.parameters = p
    lm_f = np.array([[8.0, 5.0], [20.0, 8.0], [12.0, 18.0]])
    obj = landmark_objective(MeanSquares(), lm_f, lm_f + [1.0, -0.5])
    obj.initialize(fixed, moving, t, interpolator="bspline")
    rep = check_metric(obj, step=1e-4, mode="both", rtol=1e-5, n_directions=2)
    assert rep.passed, str(rep)


def test_landmark_objective_default_weight_balances_gradients():
    fixed = rf.Image(smooth_arrays((24, 26), 1))
    moving = rf.Image(smooth_arrays((24, 26), 2))
    t = rf.Euler2DTransform()
    t.center = fixed.physical_center()
    lm_f = np.array([[5.0, 5.0], [18.0, 6.0], [10.0, 20.0]])
    obj = landmark_objective(MeanSquares(), lm_f, lm_f + [3.0, 1.0])
    assert obj.weights is None
    obj.initialize(fixed, moving, t)
    g_data = MeanSquares().initialize(fixed, moving, t).value_and_gradient()[1]
    g_lm = LandmarkDistance(lm_f, lm_f + [3.0, 1.0]).initialize(fixed, moving, t).value_and_gradient()[1]
    w = obj.weights[1]
    rms = np.sqrt(10.0)  # every landmark is off by (3, 1) at the start
    assert w == pytest.approx(np.linalg.norm(g_data) / np.linalg.norm(g_lm) * rms / 1.0, rel=1e-12)
    # with the landmarks off by one voxel (spacing 1) they pull as hard as the image did at the start
    assert np.linalg.norm(w * g_lm / rms) == pytest.approx(np.linalg.norm(g_data), rel=1e-12)
    balanced = CombinedMetric([(MeanSquares(), 1.0), (LandmarkDistance(lm_f, lm_f + [3.0, 1.0]), None)])
    balanced.initialize(fixed, moving, t)
    assert balanced.weights[1] == pytest.approx(np.linalg.norm(g_data) / np.linalg.norm(g_lm), rel=1e-12)
    explicit = landmark_objective(MeanSquares(), lm_f, lm_f, weight=2.5)
    assert explicit.weights == (1.0, 2.5)


def test_landmarks_alone_reproduce_least_squares_affine_fit():
    """RegistrationMethod + LandmarkDistance alone converges to affine_from_points."""
    rng = np.random.default_rng(3)
    fixed = rf.Image(np.zeros((40, 50)), spacing=(1.2, 0.8), origin=(-10.0, 5.0))
    f = rng.uniform(-5, 40, (9, 2))
    a_true = np.array([[1.1, 0.2], [-0.15, 0.9]])
    m = f @ a_true.T + [4.0, -3.0] + rng.normal(0, 0.7, f.shape)  # inexact: a genuine least-squares fit
    a_ls, o_ls = affine_from_points(f, m)
    t = rf.AffineTransform(2)
    t.center = [12.0, 20.0]
    method = RegistrationMethod(
        metric=LandmarkDistance(f, m), optimizer=LBFGS(n_iterations=200, scales="physical_shift"),
        schedule=LevelSchedule((1,), (0.0,)),
    )
    res = method.run(fixed, fixed, t)
    assert np.allclose(res.transform.compute_matrix(), a_ls, atol=1e-6)
    assert np.allclose(res.transform.offset, o_ls, atol=1e-4)


def test_image_and_landmarks_rescue_a_far_start(shared_data):
    """Multi-modal pair rotated 70 degrees (SimpleITK): Mattes alone fails, four landmarks rescue it."""
    sitk = pytest.importorskip("SimpleITK")
    d = shared_data("elastix_example")
    fixed_s = sitk.Cast(sitk.ReadImage(str(d / "fixed.mhd")), sitk.sitkFloat32)
    moving_s = sitk.Cast(sitk.ReadImage(str(d / "moving.mhd")), sitk.sitkFloat32)
    centre = fixed_s.TransformContinuousIndexToPhysicalPoint([127.5, 127.5])
    motion = sitk.Euler2DTransform(centre, np.deg2rad(70.0), (6.0, -4.0))
    moved = sitk.Resample(moving_s, moving_s, motion, sitk.sitkLinear, 0.0)
    fixed, moving = rf.from_sitk(fixed_s), rf.from_sitk(moved)
    inverse = motion.GetInverse()  # the registration maps fixed points to moved-moving points
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "mask_fixed.mhd"))) > 0
    probe = fixed.voxel_points()[mask.reshape(-1)][::50]
    truth = np.array([inverse.TransformPoint(tuple(p)) for p in probe])
    lm_f = np.array([[90.0, 90.0], [170.0, 100.0], [120.0, 180.0], [100.0, 140.0]])
    lm_m = np.array([inverse.TransformPoint(tuple(p)) for p in lm_f])

    def error(metric):
        t = rf.Euler2DTransform()
        t.center = fixed.physical_center()
        method = RegistrationMethod(
            metric=metric, optimizer=LBFGS(n_iterations=100, scales="physical_shift", step_tolerance=0.01),
            sampler=rf.RandomSampler(0.25, seed=0), schedule=LevelSchedule((4, 2), (2.0, 1.0)),
        )
        res = method.run(fixed, moving, t)
        return float(np.mean(np.linalg.norm(res.transform.transform_points(probe) - truth, axis=1)))

    alone = error(rf.MattesMutualInformation(n_bins=32))
    rescued = error(landmark_objective(rf.MattesMutualInformation(n_bins=32), lm_f, lm_m))
    assert alone > 20.0  # the image term alone ends in a wrong optimum
    assert rescued < 3.0  # (the pair also differs by a deformation of ~1-2 mm)


def test_point_metrics_contract_errors():
    f = np.zeros((3, 2))
    with pytest.raises(ShapeError):
        LandmarkDistance(f, np.zeros((4, 2)))
    with pytest.raises(ShapeError):
        ClosestPointDistance(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ShapeError):
        LandmarkDistance(np.zeros((0, 2)), np.zeros((0, 2)))
    metric = LandmarkDistance(f, f)
    with pytest.raises(NotInitializedError):
        metric.value()
    with pytest.raises(ShapeError):
        metric.initialize(None, None, rf.AffineTransform(3))
    with pytest.raises(InvalidInputError):
        CombinedMetric([])
    with pytest.raises(InvalidInputError):
        CombinedMetric([(metric, -1.0)])
    with pytest.raises(InvalidInputError):
        CombinedMetric([(metric, None)])
    with pytest.raises(InvalidInputError):
        CombinedMetric([("mse", 1.0)])
    with pytest.raises(NotInitializedError):
        CombinedMetric([(metric, 1.0)]).value()


def test_point_metrics_copy_their_inputs():
    f = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    keep = f.copy()
    metric = LandmarkDistance(f, f)
    f[0, 0] = 99.0
    assert np.array_equal(metric.fixed_points, keep)
    metric.initialize(None, None, rf.TranslationTransform(2))
    metric.value_and_gradient()
    assert np.array_equal(metric.fixed_points, keep)
