"""Interpolators: values vs SimpleITK/scipy, exact gradients vs finite differences, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.transform import Rotation

from regframe import Image
from regframe.errors import InvalidInputError, NonFiniteError, ShapeError
from regframe.interpolators import (
    BSplineInterpolator,
    Interpolator,
    LinearInterpolator,
    NearestNeighborInterpolator,
    NotInitializedError,
    central_difference_gradient,
    make_interpolator,
)
from regframe.interpolators import _kernels

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the oracle of these tests")


# ----------------------------------------------------------------- helpers
def _direction(ndim: int, rng: np.random.Generator) -> np.ndarray:
    if ndim == 2:
        a = rng.uniform(-np.pi, np.pi)
        d = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    elif ndim == 3:
        d = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    else:
        d = np.linalg.qr(rng.normal(size=(ndim, ndim)))[0]
    if rng.random() < 0.3:  # improper (reflection) directions occur in real data
        d[:, 0] = -d[:, 0]
    return d


def _random_image(rng: np.random.Generator, shape: tuple[int, ...], oblique: bool = True) -> Image:
    ndim = len(shape)
    return Image(
        rng.normal(size=shape) * 50.0 + 10.0,
        spacing=rng.uniform(0.4, 2.5, ndim),
        origin=rng.normal(size=ndim) * 20.0,
        direction=_direction(ndim, rng) if oblique else None,
    )


def _sitk_image(image: Image):
    out = sitk.GetImageFromArray(np.asarray(image.array, dtype=np.float64))
    out.SetSpacing(image.spacing.tolist())
    out.SetOrigin(image.origin.tolist())
    out.SetDirection(image.direction.ravel().tolist())
    return out


def _reference_grid(image: Image, rng: np.random.Generator, size: tuple[int, ...]):
    """A SimpleITK reference image centred on ``image``, oblique, a bit larger."""
    ndim = image.ndim
    ref = sitk.Image(list(size), sitk.sitkFloat64)
    spacing = rng.uniform(0.6, 1.6, ndim) * float(np.max(image.size * image.spacing)) / max(size)
    ref.SetSpacing(spacing.tolist())
    d = _direction(ndim, rng)
    ref.SetDirection(d.ravel().tolist())
    centre = image.physical_center()
    ref.SetOrigin((centre - d @ np.diag(spacing) @ ((np.array(size) - 1) / 2.0)).tolist())
    ref_image = Image(np.zeros(size[::-1]), spacing, ref.GetOrigin(), d)
    return ref, ref_image


def _sitk_transform(kind: str, ndim: int, rng: np.random.Generator, centre: np.ndarray):
    if kind == "translation":
        return sitk.TranslationTransform(ndim, rng.normal(size=ndim).tolist())
    tx = sitk.AffineTransform(ndim)
    tx.SetMatrix((np.eye(ndim) + rng.normal(size=(ndim, ndim)) * 0.15).ravel().tolist())
    tx.SetTranslation(rng.normal(size=ndim).tolist())
    tx.SetCenter(centre.tolist())
    return tx


def _resample_oracle(image, kind, interpolator, rng, ref_size):
    """SimpleITK resampled values at reference voxels and the mapped points."""
    ref, ref_image = _reference_grid(image, rng, ref_size)
    tx = _sitk_transform(kind, image.ndim, rng, image.physical_center())
    out = sitk.Resample(_sitk_image(image), ref, tx, interpolator, float("nan"), sitk.sitkFloat64)
    expected = sitk.GetArrayFromImage(out).ravel()
    points = np.array([tx.TransformPoint(tuple(p)) for p in ref_image.voxel_points()])
    return points, expected


# --------------------------------------------------- values vs SimpleITK
@pytest.mark.parametrize("shape", [(23, 31), (9, 12, 14)])
@pytest.mark.parametrize("kind", ["translation", "affine"])
def test_linear_matches_sitk_resample(shape, kind):
    rng = np.random.default_rng(sum(shape) + len(kind))
    image = _random_image(rng, shape)
    ref_size = (40, 37) if len(shape) == 2 else (16, 15, 13)
    points, expected = _resample_oracle(image, kind, sitk.sitkLinear, rng, ref_size)
    values, inside = LinearInterpolator(default_value=-7.0).set_image(image).evaluate(points)
    itk_inside = ~np.isnan(expected)
    # the grid must test both sides of the inside rule
    assert 0.05 < itk_inside.mean() < 0.95
    np.testing.assert_array_equal(inside, itk_inside)
    scale = np.max(np.abs(expected[itk_inside]))
    rel = np.max(np.abs(values[inside] - expected[inside])) / scale
    assert rel <= 1e-9, rel
    assert np.all(values[~inside] == -7.0)


@pytest.mark.parametrize("shape", [(23, 31), (9, 12, 14)])
def test_nearest_matches_sitk_resample(shape):
    rng = np.random.default_rng(7 + len(shape))
    image = _random_image(rng, shape)
    ref_size = (40, 37) if len(shape) == 2 else (16, 15, 13)
    points, expected = _resample_oracle(image, "affine", sitk.sitkNearestNeighbor, rng, ref_size)
    values, grads, inside = NearestNeighborInterpolator().set_image(image).evaluate_with_gradient(points)
    np.testing.assert_array_equal(inside, ~np.isnan(expected))
    np.testing.assert_array_equal(values[inside], expected[inside])
    assert np.all(grads == 0.0)


@pytest.mark.parametrize("shape", [(23, 31), (9, 12, 14)])
def test_bspline_matches_sitk_resample(shape):
    """ITK's BSplineInterpolateImageFunction (order 3, mirror boundary) on the same points."""
    rng = np.random.default_rng(11 + len(shape))
    image = _random_image(rng, shape)
    ref_size = (40, 37) if len(shape) == 2 else (16, 15, 13)
    points, expected = _resample_oracle(image, "affine", sitk.sitkBSpline, rng, ref_size)
    values, inside = BSplineInterpolator().set_image(image).evaluate(points)
    np.testing.assert_array_equal(inside, ~np.isnan(expected))
    rel = np.max(np.abs(values[inside] - expected[inside])) / np.max(np.abs(expected[inside]))
    assert rel <= 1e-9, rel


@pytest.mark.parametrize("shape", [(1, 9), (7, 1), (13, 17), (6, 1, 5), (5, 8, 11), (3, 4, 5, 6)])
def test_bspline_matches_scipy_map_coordinates(shape):
    rng = np.random.default_rng(len(shape) * 31 + shape[0])
    image = _random_image(rng, shape)
    size = np.array(image.size, dtype=float)
    ci = rng.uniform(-0.5, size - 0.5, size=(400, image.ndim))
    values, inside = BSplineInterpolator().set_image(image).evaluate(image.index_to_physical(ci))
    expected = ndimage.map_coordinates(
        np.asarray(image.array, dtype=float), ci[:, ::-1].T, order=3, mode="mirror"
    )
    assert inside.all()
    rel = np.max(np.abs(values - expected)) / np.max(np.abs(expected))
    assert rel <= 1e-12, rel


@pytest.mark.parametrize("shape", [(1, 9), (13, 17), (6, 1, 5), (5, 8, 11), (3, 4, 5, 6)])
def test_linear_matches_scipy_edge_clamped(shape):
    """Multilinear with edge clamping in the skirt == map_coordinates(order=1, mode='nearest')."""
    rng = np.random.default_rng(len(shape) * 17 + shape[0])
    image = _random_image(rng, shape)
    size = np.array(image.size, dtype=float)
    ci = rng.uniform(-0.5, size - 0.5, size=(500, image.ndim))
    values, inside = LinearInterpolator().set_image(image).evaluate(image.index_to_physical(ci))
    expected = ndimage.map_coordinates(
        np.asarray(image.array, dtype=float), ci[:, ::-1].T, order=1, mode="nearest"
    )
    assert inside.all()
    rel = np.max(np.abs(values - expected)) / np.max(np.abs(expected))
    assert rel <= 1e-12, rel


@pytest.mark.parametrize("shape", [(13, 17), (1, 6), (5, 8, 11), (1, 4, 6)])
def test_specialised_linear_kernels_equal_nd_kernel(shape):
    rng = np.random.default_rng(5)
    image = _random_image(rng, shape)
    interp = LinearInterpolator().set_image(image)
    size = np.array(image.size, dtype=float)
    ci = rng.uniform(-0.8, size - 0.2, size=(3000, image.ndim))
    ci[:500] = np.round(ci[:500] * 2.0) / 2.0  # grid lines and half-voxel boundaries
    points = image.index_to_physical(ci)
    v, g, inside = interp.evaluate_with_gradient(points)
    v_nd, g_nd, inside_nd = _kernels.linear_values_gradients(
        points, interp._data, interp._size, interp._p2i, interp._origin, 0.0, 64
    )
    np.testing.assert_array_equal(v, v_nd)
    np.testing.assert_array_equal(g, g_nd)
    np.testing.assert_array_equal(inside, inside_nd)
    v2, inside2 = interp.evaluate(points)
    np.testing.assert_array_equal(v, v2)
    np.testing.assert_array_equal(inside, inside2)


# ------------------------------------------------------------- inside rule
@pytest.mark.parametrize("cls", [NearestNeighborInterpolator, LinearInterpolator, BSplineInterpolator])
def test_inside_rule_is_half_open_half_voxel_box(cls):
    image = Image(np.arange(12.0).reshape(3, 4), spacing=(2.0, 0.5), origin=(1.0, -1.0))
    ci = np.array([[-0.5, 0.0], [0.0, -0.5], [3.5, 0.0], [0.0, 2.5], [3.4999, 2.4999],
                   [-0.5001, 1.0], [1.0, 2.5001], [-0.5, -0.5]])
    expected = [True, True, False, False, True, False, False, True]
    points = image.index_to_physical(ci)
    values, grads, inside = cls(default_value=np.pi).set_image(image).evaluate_with_gradient(points)
    assert inside.tolist() == expected
    np.testing.assert_array_equal(inside, image.is_inside(points))
    assert np.all(values[~inside] == np.pi)
    assert np.all(grads[~inside] == 0.0)


def test_nearest_rounds_half_up():
    image = Image(np.arange(5.0)[None, :])
    values, _ = NearestNeighborInterpolator().set_image(image).evaluate(
        [[0.5, 0.0], [1.5, 0.0], [1.4999, 0.0], [-0.5, 0.0], [4.4999, 0.0]]
    )
    assert values.tolist() == [1.0, 2.0, 1.0, 0.0, 4.0]


# --------------------------------------------- exact gradients (hypothesis)
def _geometry_case(data_seed: int, ndim: int, small: bool):
    rng = np.random.default_rng(data_seed)
    shape = tuple(int(v) for v in rng.integers(2 if small else 3, 7 if small else 9, ndim))
    return rng, _random_image(rng, shape)


def _central_difference(interp: Interpolator, points: np.ndarray, h: float) -> np.ndarray:
    """Central differences of ``interp`` along world axes with step ``h``."""
    n, d = points.shape
    out = np.empty((n, d))
    for a in range(d):
        step = np.zeros(d)
        step[a] = h
        plus, _ = interp.evaluate(points + step)
        minus, _ = interp.evaluate(points - step)
        out[:, a] = (plus - minus) / (2.0 * h)
    return out


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ndim=st.sampled_from([2, 3]), small=st.booleans())
def test_linear_gradient_matches_central_differences(seed, ndim, small):
    rng, image = _geometry_case(seed, ndim, small)
    interp = LinearInterpolator().set_image(image)
    size = np.array(image.size, dtype=float)
    ci = rng.uniform(-0.45, size - 0.55, size=(60, ndim))
    # non-grid points: keep away from cell faces (where the gradient jumps)
    frac = ci - np.floor(ci)
    ci = ci[np.all((frac > 1e-3) & (frac < 1 - 1e-3), axis=1)]
    points = image.index_to_physical(ci)
    h = 1e-6 * float(np.min(image.spacing))
    values, grads, inside = interp.evaluate_with_gradient(points)
    assert inside.all()
    fd = _central_difference(interp, points, h)
    scale = np.max(np.abs(image.array)) / float(np.min(image.spacing))
    err = np.max(np.abs(grads - fd), initial=0.0) / scale
    assert err <= 1e-6, err


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ndim=st.sampled_from([2, 3]), small=st.booleans())
def test_bspline_gradient_matches_central_differences(seed, ndim, small):
    rng, image = _geometry_case(seed, ndim, small)
    interp = BSplineInterpolator().set_image(image)
    size = np.array(image.size, dtype=float)
    # everywhere, including grid lines and the skirt (probes must stay inside)
    ci = rng.uniform(-0.49, size - 0.51, size=(60, ndim))
    ci[:10] = np.clip(np.round(ci[:10]), 0, size - 1)
    points = image.index_to_physical(ci)
    h = 1e-5 * float(np.min(image.spacing))
    values, grads, inside = interp.evaluate_with_gradient(points)
    assert inside.all()
    v2, _ = interp.evaluate(points)
    np.testing.assert_array_equal(values, v2)
    fd = _central_difference(interp, points, h)
    scale = np.max(np.abs(image.array)) / float(np.min(image.spacing))
    err = np.max(np.abs(grads - fd)) / scale
    assert err <= 1e-6, err


def test_linear_gradient_in_skirt_and_on_grid_lines():
    # 1-D profile along x (ny = 1): values 0, 1, 4, 9
    image = Image(np.array([[0.0, 1.0, 4.0, 9.0]]), spacing=(0.5, 1.0))
    interp = LinearInterpolator().set_image(image)
    x = np.array([-0.2, 0.0, 0.25, 0.5, 1.0, 1.5, 1.8])  # physical = 0.5 * index
    values, grads, inside = interp.evaluate_with_gradient(np.c_[x, np.zeros_like(x)])
    assert inside.tolist() == [True] * 6 + [False]
    # skirt (index -0.4): constant; grid lines: right-sided slope of the value's cell
    np.testing.assert_allclose(values[:6], [0.0, 0.0, 0.5, 1.0, 4.0, 9.0])
    np.testing.assert_allclose(grads[:6, 0], [0.0, 2.0, 2.0, 6.0, 10.0, 0.0])
    assert np.all(grads[:, 1] == 0.0)  # single-voxel axis


def test_gradient_is_physical_covariant_vector():
    """For a linear ramp ``f(x) = a . x`` the linear interpolant's gradient is ``a``.

    (Not for the B-spline: its mirror boundary bends a ramp near the edges;
    its covariance is covered by the finite-difference tests on oblique
    geometries.)
    """
    rng = np.random.default_rng(2)
    a = np.array([0.3, -1.2, 2.0])
    probe = Image(np.zeros((6, 7, 8)), spacing=(0.7, 1.3, 2.1), origin=(1, 2, 3),
                  direction=Rotation.from_rotvec([0.3, -0.5, 0.9]).as_matrix())
    image = probe.with_array((probe.voxel_points() @ a).reshape(probe.array.shape))
    ci = rng.uniform(0.0, np.array(image.size) - 1.0, size=(50, 3))
    points = image.index_to_physical(ci)
    values, grads, _ = LinearInterpolator().set_image(image).evaluate_with_gradient(points)
    np.testing.assert_allclose(values, points @ a, rtol=0, atol=1e-9)
    np.testing.assert_allclose(grads, np.broadcast_to(a, grads.shape), rtol=0, atol=1e-9)


# ----------------------------------------------- ITK central differences
def _itk_central_difference_reference(image: Image, points: np.ndarray) -> np.ndarray:
    """Plain-Python transcription of ITK CentralDifferenceImageFunction::Evaluate(point)."""
    interp = LinearInterpolator().set_image(image)
    out = np.zeros_like(points)
    for s, p in enumerate(points):
        for a in range(image.ndim):
            offset = 0.5 * image.spacing[a]
            lo = p.copy()
            lo[a] = p[a] - offset
            if not image.is_inside(lo[None])[0]:
                continue
            hi = p.copy()
            hi[a] = p[a] + offset
            if not image.is_inside(hi[None])[0]:
                continue
            delta = hi[a] - lo[a]
            if delta > 10 * np.finfo(float).eps:
                out[s, a] = (interp.evaluate(hi[None])[0][0] - interp.evaluate(lo[None])[0][0]) / delta
    return out


@pytest.mark.parametrize("shape", [(11, 13), (6, 7, 9)])
def test_central_difference_gradient_matches_itk_rule(shape):
    rng = np.random.default_rng(3)
    image = _random_image(rng, shape)
    size = np.array(image.size, dtype=float)
    ci = rng.uniform(-0.5, size - 0.5, size=(150, image.ndim))  # many probes fall outside
    points = image.index_to_physical(ci)
    got = central_difference_gradient(image, points)
    expected = _itk_central_difference_reference(image, points)
    np.testing.assert_array_equal(got, expected)
    assert np.mean(got == 0.0) > 0.05  # the outside-probe rule was exercised
    interp = LinearInterpolator().set_image(image)
    np.testing.assert_array_equal(central_difference_gradient(interp, points), got)


# ------------------------------------------------------- API and errors
def test_make_interpolator():
    assert isinstance(make_interpolator("linear"), LinearInterpolator)
    assert isinstance(make_interpolator("nearest"), NearestNeighborInterpolator)
    b = make_interpolator("bspline", default_value=3.0)
    assert isinstance(b, BSplineInterpolator) and b.default_value == 3.0
    inst = LinearInterpolator()
    assert make_interpolator(inst) is inst
    with pytest.raises(InvalidInputError, match="'linear'"):
        make_interpolator("cubic")


@pytest.mark.parametrize("cls", [NearestNeighborInterpolator, LinearInterpolator, BSplineInterpolator])
def test_errors_and_copy(cls):
    interp = cls()
    with pytest.raises(NotInitializedError, match="set_image"):
        interp.evaluate([[0.0, 0.0]])
    with pytest.raises(NotInitializedError):
        interp.evaluate_with_gradient([[0.0, 0.0]])
    with pytest.raises(TypeError, match="regframe.Image"):
        interp.set_image(np.zeros((3, 3)))
    image = _random_image(np.random.default_rng(0), (5, 6))
    assert interp.set_image(image) is interp
    with pytest.raises(ShapeError, match=r"\(n, 2\)"):
        interp.evaluate(np.zeros((4, 3)))
    with pytest.raises(ShapeError):
        interp.evaluate_with_gradient(np.zeros((2, 2, 2)))
    with pytest.raises(NonFiniteError):
        interp.evaluate([[0.0, np.nan]])
    with pytest.raises(NonFiniteError):
        interp.evaluate_with_gradient([[np.inf, 0.0]])
    points = image.index_to_physical([[1.2, 2.7], [3.1, 0.4]])
    points.flags.writeable = False  # inputs are never written to
    before = points.copy()
    dup = interp.copy()
    np.testing.assert_array_equal(dup.evaluate_with_gradient(points)[1], interp.evaluate_with_gradient(points)[1])
    dup.set_image(image.with_array(np.zeros(image.array.shape)))
    assert np.any(interp.evaluate(points)[0] != 0.0)
    np.testing.assert_array_equal(points, before)
    single, inside = interp.evaluate(points[0])  # one point of shape (ndim,)
    assert single.shape == (1,) and inside.shape == (1,)
    assert "size=(6, 5)" in repr(interp)


def test_bspline_order_validation_and_default_value_type():
    with pytest.raises(InvalidInputError, match="order"):
        BSplineInterpolator(order=2)
    with pytest.raises(InvalidInputError, match="default_value"):
        LinearInterpolator(default_value="zero")


def test_integer_and_boolean_images_are_interpolated_as_float():
    arr = np.array([[0, 10], [20, 30]], dtype=np.uint8)
    for a in (arr, arr > 15):
        image = Image(a)
        v, _ = LinearInterpolator().set_image(image).evaluate([[0.5, 0.5]])
        assert v[0] == pytest.approx(np.mean(a.astype(float)))


@pytest.mark.slow
def test_linear_kernel_speed_2m_points():
    import time

    rng = np.random.default_rng(0)
    image = _random_image(rng, (64, 64, 64))
    interp = LinearInterpolator().set_image(image)
    points = image.index_to_physical(rng.uniform(-1, 64, size=(2_000_000, 3)))
    interp.evaluate_with_gradient(points[:10])
    best = min(
        (lambda t0: (interp.evaluate_with_gradient(points), time.perf_counter() - t0)[1])(time.perf_counter())
        for _ in range(3)
    )
    assert best < 0.5, best  # tens of ms on an idle 2-core machine
