"""Scales estimators against hand-computed ITK formulas (itk_design 5.8)."""

from __future__ import annotations

import itertools
import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regframe.errors import InvalidInputError
from regframe.image import Image
from regframe.optimizers import IndexShiftScales, JacobianScales, PhysicalShiftScales
from regframe.optimizers.scales import domain_sample_points
from regframe.transforms import (
    AffineTransform,
    Euler2DTransform,
    Transform,
    TranslationTransform,
    VersorRigid3DTransform,
)

DELTA = 0.01
_f = {"allow_nan": False, "allow_infinity": False}


@pytest.fixture(autouse=True, scope="module")
def _one_numba_thread():
    # Tiny point sets: a parallel launch costs more than the work (see test_optimizers.py).
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


def _rotated_domain(ndim: int) -> Image:
    """Anisotropic grid with a rotated direction and a non-zero origin."""
    size = (7, 5, 4)[:ndim]
    spacing = (1.5, 2.0, 3.0)[:ndim]
    origin = (-4.0, 2.5, 1.0)[:ndim]
    if ndim == 2:
        a = 0.3
        direction = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    else:
        a = 0.3
        direction = [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]]
    return Image(np.zeros(size[::-1]), spacing=spacing, origin=origin, direction=direction)


def _corners_by_hand(img: Image) -> np.ndarray:
    """Corner voxel centres: origin + D diag(s) idx for idx in {0, size-1}^d."""
    d = img.ndim
    m = np.asarray(img.direction) @ np.diag(img.spacing)
    out = []
    for idx in itertools.product(*[(0, n - 1) for n in img.size]):
        out.append(np.asarray(img.origin) + m @ np.asarray(idx, float))
    return np.array(out).reshape(-1, d)


@pytest.mark.parametrize("ndim", [2, 3])
def test_physical_shift_affine_matches_corner_formula(ndim):
    img = _rotated_domain(ndim)
    t = AffineTransform(ndim)
    t.fixed_parameters = [1.0, -2.0, 0.5][:ndim]
    corners = _corners_by_hand(img)
    rel = corners - t.fixed_parameters
    # Matrix entry (i, j) moves corner x by delta |x_j - c_j| along axis i: s = max (x_j - c_j)^2.
    expected = np.r_[np.tile(np.max(rel**2, axis=0), ndim), np.ones(ndim)]
    scales = PhysicalShiftScales().estimate(t, img)
    np.testing.assert_allclose(scales, expected, rtol=1e-9)
    np.testing.assert_allclose(domain_sample_points(img, "corners"), corners, rtol=1e-14, atol=1e-13)


@settings(max_examples=25, deadline=None)
@given(
    matrix=st.lists(st.floats(-1.5, 1.5, **_f), min_size=4, max_size=4),
    translation=st.lists(st.floats(-50, 50, **_f), min_size=2, max_size=2),
    offset=st.lists(st.floats(-30, 30, **_f), min_size=2, max_size=2),
)
def test_affine_scales_independent_of_current_parameters_and_follow_a_shift(matrix, translation, offset):
    img = _rotated_domain(2)
    t = AffineTransform(2)
    t.parameters = np.r_[matrix, translation]
    params_before = t.parameters
    scales = PhysicalShiftScales().estimate(t, img)
    np.testing.assert_allclose(scales, PhysicalShiftScales().estimate(AffineTransform(2), img), rtol=1e-6)
    np.testing.assert_array_equal(t.parameters, params_before)  # never mutated
    # Shifting domain and centre by the same offset changes nothing.
    moved = Image(np.zeros((5, 7)), spacing=img.spacing, origin=np.asarray(img.origin) + offset,
                  direction=img.direction)
    t2 = AffineTransform(2)
    t2.fixed_parameters = offset
    np.testing.assert_allclose(PhysicalShiftScales().estimate(t2, moved), scales, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    angle=st.floats(-3.0, 3.0, **_f),
    translation=st.lists(st.floats(-50, 50, **_f), min_size=2, max_size=2),
    center=st.lists(st.floats(-20, 20, **_f), min_size=2, max_size=2),
)
def test_euler2d_rotation_scale_is_chord_over_delta_squared(angle, translation, center):
    img = _rotated_domain(2)
    t = Euler2DTransform()
    t.fixed_parameters = center
    t.parameters = [angle, *translation]
    r_max = np.max(np.linalg.norm(_corners_by_hand(img) - center, axis=1))
    expected = [(2.0 * r_max * math.sin(DELTA / 2) / DELTA) ** 2, 1.0, 1.0]
    np.testing.assert_allclose(PhysicalShiftScales().estimate(t, img), expected, rtol=1e-8)


def _unit_versor(axis, angle):
    axis = np.asarray(axis, float)
    return math.sin(angle / 2) * axis / np.linalg.norm(axis)


@settings(max_examples=20, deadline=None)
@given(
    axis=st.lists(st.floats(-1, 1, **_f), min_size=3, max_size=3).filter(lambda a: np.linalg.norm(a) > 0.1),
    angle=st.floats(-2.5, 2.5, **_f),
    translation=st.lists(st.floats(-20, 20, **_f), min_size=3, max_size=3),
)
def test_versor_scales_use_composition_and_do_not_depend_on_current_rotation(axis, angle, translation):
    img = _rotated_domain(3)
    t = VersorRigid3DTransform()
    center = np.array([1.0, 2.0, -1.0])
    t.fixed_parameters = center
    t.parameters = np.r_[_unit_versor(axis, angle), translation]
    rel = _corners_by_hand(img) - center
    # Rotating by delta about body axis e_i moves x by 2 sin(delta/2) * (distance of x - c from e_i).
    rho = np.array([np.max(np.linalg.norm(np.delete(rel, i, axis=1), axis=1)) for i in range(3)])
    expected = np.r_[(2.0 * math.sin(DELTA / 2) * rho / DELTA) ** 2, np.ones(3)]
    np.testing.assert_allclose(PhysicalShiftScales().estimate(t, img), expected, rtol=1e-7)


def test_index_shift_divides_by_spacing_in_image_axes():
    img = _rotated_domain(2)
    t = TranslationTransform(2)
    m_inv = np.linalg.inv(np.asarray(img.direction) @ np.diag(img.spacing))
    expected = [np.sum(m_inv[:, 0] ** 2), np.sum(m_inv[:, 1] ** 2)]  # |M^-1 e_k|^2
    np.testing.assert_allclose(IndexShiftScales().estimate(t, img), expected, rtol=1e-9)
    # An explicit moving grid replaces the virtual one.
    moving = Image(np.zeros((3, 3)), spacing=[0.5, 4.0])
    np.testing.assert_allclose(IndexShiftScales(moving=moving).estimate(t, img), [4.0, 1.0 / 16.0], rtol=1e-9)
    with pytest.raises(InvalidInputError, match="moving"):
        IndexShiftScales().estimate(t, np.zeros((4, 2)))


@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_scales_and_step_scale(ndim):
    img = _rotated_domain(ndim)
    t = AffineTransform(ndim)
    t.fixed_parameters = [0.5] * ndim
    rel = _corners_by_hand(img) - 0.5
    expected = np.r_[np.tile(np.mean(rel**2, axis=0), ndim), np.ones(ndim)]
    est = JacobianScales()
    np.testing.assert_allclose(est.estimate(t, img), expected, rtol=1e-12)
    step = np.random.default_rng(2).normal(size=t.n_parameters)
    d_a = step[: ndim * ndim].reshape(ndim, ndim)
    moved = rel @ d_a.T + step[ndim * ndim :]
    assert est.estimate_step_scale(t, step, img) == pytest.approx(np.mean(np.linalg.norm(moved, axis=1)), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(step=st.lists(st.floats(-10, 10, **_f), min_size=6, max_size=6).filter(lambda s: max(map(abs, s)) > 1e-3))
def test_physical_step_scale_is_max_corner_displacement(step):
    img = _rotated_domain(2)
    t = AffineTransform(2)
    t.parameters = [1.1, 0.2, -0.1, 0.9, 3.0, -4.0]
    step = np.asarray(step)
    rel = _corners_by_hand(img)
    moved = rel @ step[:4].reshape(2, 2).T + step[4:]
    expected = np.max(np.linalg.norm(moved, axis=1))
    assert PhysicalShiftScales().estimate_step_scale(t, step, img) == pytest.approx(expected, rel=1e-8)
    assert PhysicalShiftScales().estimate_step_scale(t, np.zeros(6), img) == 0.0


def test_maximum_step_size():
    img = _rotated_domain(3)
    assert PhysicalShiftScales().estimate_maximum_step_size(img) == 1.5
    pts = np.array([[0.0, 0.0], [30.0, 5.0], [10.0, -20.0]])
    assert PhysicalShiftScales().estimate_maximum_step_size(pts) == pytest.approx(0.3)
    assert PhysicalShiftScales(points=pts).estimate_maximum_step_size() == pytest.approx(0.3)


def test_user_points_override_domain_and_zero_shifts_take_min_nonzero():
    t = AffineTransform(2)
    t.fixed_parameters = [3.0, 4.0]
    # One point at the centre: matrix entries move nothing, translations move it by delta.
    est = PhysicalShiftScales(points=[[3.0, 4.0]])
    np.testing.assert_allclose(est.estimate(t, _rotated_domain(2)), np.ones(6), rtol=1e-9)
    pts = np.array([[3.0, 4.0], [5.0, 1.0]])
    est = PhysicalShiftScales(points=pts)
    np.testing.assert_allclose(est.estimate(t), [4.0, 9.0, 4.0, 9.0, 1.0, 1.0], rtol=1e-9)
    np.testing.assert_array_equal(pts, [[3.0, 4.0], [5.0, 1.0]])
    with pytest.raises(InvalidInputError, match="domain"):
        PhysicalShiftScales().estimate(t, None)


def test_bspline_scales_are_the_smallest_nonzero_shift_of_the_central_region():
    BSplineTransform = pytest.importorskip("regframe.transforms.bspline").BSplineTransform
    img = Image(np.zeros((30, 40)), spacing=[1.0, 1.0])
    t = BSplineTransform.from_domain(img, mesh_size=4)
    t.parameters = np.random.default_rng(0).normal(scale=0.5, size=t.n_parameters)
    region = domain_sample_points(img, "central_region")
    assert region.shape == (11 * 11, 2)
    np.testing.assert_allclose(np.mean(region, axis=0), [19.0, 14.0])  # centre index (size-1)//2
    # Independent route: shift of delta * e_k is delta * |w_k(x)| (the Jacobian column).
    jac = t.jacobian(region)
    col = np.max(np.linalg.norm(jac, axis=1), axis=0)
    expected = DELTA * np.min(col[col > 0])
    scales = PhysicalShiftScales().estimate(t, img)
    np.testing.assert_allclose(scales, np.full(t.n_parameters, expected), rtol=1e-9)
    # Step scale of a local-support transform: the max shift of the step itself, over the domain.
    step = np.zeros(t.n_parameters)
    step[5] = 0.3
    full = img.voxel_points()
    expected_step = np.max(np.linalg.norm(t.jacobian(full) @ step, axis=1))
    assert PhysicalShiftScales().estimate_step_scale(t, step, img) == pytest.approx(expected_step, rel=1e-9)


class _Bend(Transform):
    """T(x) = x + p0 * x_0^2 e_1 + p1 e_0: neither linear nor local-support."""

    def __init__(self) -> None:
        super().__init__(2)
        self._p = np.zeros(2)

    def _get_parameters(self):
        return self._p

    def _set_parameters(self, parameters):
        self._p = np.array(parameters, dtype=np.float64)

    def _get_fixed_parameters(self):
        return np.zeros(0)

    def _set_fixed_parameters(self, fixed_parameters):
        pass

    def _transform_points(self, points):
        out = points.copy()
        out[:, 1] += self._p[0] * points[:, 0] ** 2
        out[:, 0] += self._p[1]
        return out

    def _jacobian(self, points):
        jac = np.zeros((points.shape[0], 2, 2))
        jac[:, 1, 0] = points[:, 0] ** 2
        jac[:, 0, 1] = 1.0
        return jac


def test_random_sampling_is_seeded_and_on_voxel_centres():
    img = Image(np.zeros((50, 60)), spacing=[0.5, 2.0], origin=[1.0, -3.0])
    t = _Bend()
    a = PhysicalShiftScales().sample_points(t, img)
    b = PhysicalShiftScales().sample_points(t, img)
    c = PhysicalShiftScales(seed=5).sample_points(t, img)
    assert a.shape == (1000, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    idx = img.physical_to_index(a)
    np.testing.assert_allclose(idx, np.round(idx), atol=1e-9)
    assert np.all(idx >= 0) and np.all(idx <= np.array(img.size) - 1)
    x0 = np.max(a[:, 0] ** 2)
    np.testing.assert_allclose(PhysicalShiftScales().estimate(t, img), [x0**2, 1.0], rtol=1e-9)
