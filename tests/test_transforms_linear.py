"""Linear transforms: Euler, similarity, versor (and the lead's affine/translation).

Checks, per transform type, 2-D and 3-D, non-zero centres:

* Jacobian == central differences taken *through update_parameters*
  (<= 1e-6 relative, 100 hypothesis cases per type);
* position Jacobian == central differences in x;
* ``jacobian_vjp`` == einsum of ``jacobian``;
* same parameters -> same points as SimpleITK (<= 1e-9 mm);
* inverse round trip and class, parameter round trip, identity default;
* versor update = ITK composition ``R_new = R @ R_u``; ITK's |v| >= 1 rescaling;
* Euler3D decomposition (``set_matrix``) including gimbal lock.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regframe.errors import InvalidInputError, ShapeError
from regframe.transforms import (
    AffineTransform,
    Euler2DTransform,
    Euler3DTransform,
    Similarity2DTransform,
    Similarity3DTransform,
    TranslationTransform,
    VersorRigid3DTransform,
    VersorTransform,
)

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the oracle for point mapping")



@pytest.fixture(autouse=True, scope="module")
def _one_numba_thread():
    """These tests map a few points thousands of times; with several OpenMP threads
    each kernel launch costs ~0.5 ms of spinning CPU.  Results do not depend on the
    thread count (determinism contract), so run single-threaded and restore."""
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


FD_STEP = 1e-6
JAC_TOL = 1e-6

_f = dict(allow_nan=False, allow_infinity=False)


def _vec(n: int, lo: float, hi: float) -> st.SearchStrategy[np.ndarray]:
    return st.lists(st.floats(lo, hi, **_f), min_size=n, max_size=n).map(np.array)


def _rotvec_to_versor(r: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(r))
    if angle == 0.0:
        return np.zeros(3)
    return np.sin(angle / 2.0) * r / angle


# kind -> (factory, strategy of (fixed, params))
def _cases() -> dict[str, tuple]:
    c2, c3 = _vec(2, -60.0, 60.0), _vec(3, -60.0, 60.0)
    t2, t3 = _vec(2, -30.0, 30.0), _vec(3, -30.0, 30.0)
    ang = st.floats(-np.pi, np.pi, **_f)
    scale = st.floats(0.5, 2.0, **_f)
    # rotation vectors of angle < pi (|v| < 1), w > 0
    rotvec = _vec(3, -1.7, 1.7)
    return {
        "euler2d": (Euler2DTransform, st.tuples(c2, ang, t2).map(lambda a: (a[0], np.r_[a[1], a[2]]))),
        "similarity2d": (
            Similarity2DTransform,
            st.tuples(c2, scale, ang, t2).map(lambda a: (a[0], np.r_[a[1], a[2], a[3]])),
        ),
        "euler3d_zxy": (
            Euler3DTransform,
            st.tuples(c3, _vec(3, -np.pi, np.pi), t3).map(lambda a: (np.r_[a[0], 0.0], np.r_[a[1], a[2]])),
        ),
        "euler3d_zyx": (
            Euler3DTransform,
            st.tuples(c3, _vec(3, -np.pi, np.pi), t3).map(lambda a: (np.r_[a[0], 1.0], np.r_[a[1], a[2]])),
        ),
        "versorrigid3d": (
            VersorRigid3DTransform,
            st.tuples(c3, rotvec, t3).map(lambda a: (a[0], np.r_[_rotvec_to_versor(a[1]), a[2]])),
        ),
        "versor3d": (VersorTransform, st.tuples(c3, rotvec).map(lambda a: (a[0], _rotvec_to_versor(a[1])))),
        "similarity3d": (
            Similarity3DTransform,
            st.tuples(c3, rotvec, t3, scale).map(lambda a: (a[0], np.r_[_rotvec_to_versor(a[1]), a[2], a[3]])),
        ),
        "affine2d": (
            lambda: AffineTransform(2),
            st.tuples(c2, _vec(4, -1.5, 1.5), t2).map(lambda a: (a[0], np.r_[a[1], a[2]])),
        ),
        "affine3d": (
            lambda: AffineTransform(3),
            st.tuples(c3, _vec(9, -1.5, 1.5), t3).map(lambda a: (a[0], np.r_[a[1], a[2]])),
        ),
        "translation2d": (lambda: TranslationTransform(2), t2.map(lambda p: (np.zeros(0), p))),
        "translation3d": (lambda: TranslationTransform(3), t3.map(lambda p: (np.zeros(0), p))),
    }


CASES = _cases()
KINDS = sorted(CASES)
OWN_KINDS = [k for k in KINDS if not k.startswith(("affine", "translation"))]
SEEDS = st.integers(0, 2**32 - 1)


def _make(kind: str, fixed: np.ndarray, params: np.ndarray):
    t = CASES[kind][0]()
    t.fixed_parameters = fixed
    t.parameters = params
    return t


def _points(ndim: int, seed: int, n: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-100.0, 100.0, size=(n, ndim))


def fd_jacobian_through_update(t, pts: np.ndarray, h: float = FD_STEP) -> np.ndarray:
    """Central differences of T(x) for steps applied with update_parameters."""
    jac = np.zeros((pts.shape[0], t.ndim, t.n_parameters))
    for k in range(t.n_parameters):
        step = np.zeros(t.n_parameters)
        step[k] = h
        plus, minus = t.copy(), t.copy()
        plus.update_parameters(step)
        minus.update_parameters(-step)
        jac[:, :, k] = (plus.transform_points(pts) - minus.transform_points(pts)) / (2 * h)
    return jac


def fd_jacobian_position(t, pts: np.ndarray, h: float = 1e-5) -> np.ndarray:
    jac = np.zeros((pts.shape[0], t.ndim, t.ndim))
    for j in range(t.ndim):
        e = np.zeros(t.ndim)
        e[j] = h
        jac[:, :, j] = (t.transform_points(pts + e) - t.transform_points(pts - e)) / (2 * h)
    return jac


def rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """max |a - n| relative to max(|a|, 1) (translation columns are 1)."""
    return float(np.max(np.abs(analytic - numeric)) / max(float(np.max(np.abs(analytic))), 1.0))


def _case_strategy(kind: str) -> st.SearchStrategy:
    return st.tuples(CASES[kind][1], SEEDS)


# --------------------------------------------------------------------- Jacobians
@pytest.mark.parametrize("kind", KINDS)
def test_jacobian_matches_central_differences_through_update(kind: str) -> None:
    @settings(max_examples=100, deadline=None)
    @given(_case_strategy(kind))
    def check(case):
        (fixed, params), seed = case
        t = _make(kind, fixed, params)
        pts = _points(t.ndim, seed)
        jac = t.jacobian(pts)
        assert jac.shape == (pts.shape[0], t.ndim, t.n_parameters)
        assert rel_error(jac, fd_jacobian_through_update(t, pts)) <= JAC_TOL

    check()


@pytest.mark.parametrize("kind", KINDS)
def test_position_jacobian_matches_central_differences(kind: str) -> None:
    @settings(max_examples=100, deadline=None)
    @given(_case_strategy(kind))
    def check(case):
        (fixed, params), seed = case
        t = _make(kind, fixed, params)
        pts = _points(t.ndim, seed)
        assert rel_error(t.jacobian_position(pts), fd_jacobian_position(t, pts)) <= JAC_TOL

    check()


@pytest.mark.parametrize("kind", KINDS)
def test_jacobian_vjp_equals_einsum_of_jacobian(kind: str) -> None:
    @settings(max_examples=100, deadline=None)
    @given(_case_strategy(kind))
    def check(case):
        (fixed, params), seed = case
        t = _make(kind, fixed, params)
        pts = _points(t.ndim, seed)
        vec = np.random.default_rng(seed + 1).standard_normal(pts.shape)
        expected = np.einsum("sik,si->k", t.jacobian(pts), vec)
        np.testing.assert_allclose(t.jacobian_vjp(pts, vec), expected, rtol=1e-11, atol=1e-9)

    check()


# ------------------------------------------------------------------- SimpleITK
def _sitk_transform(t):
    s = getattr(sitk, t.itk_name)() if t.itk_name not in ("AffineTransform", "TranslationTransform") else getattr(
        sitk, t.itk_name
    )(t.ndim)
    s.SetFixedParameters([float(v) for v in t.fixed_parameters])
    s.SetParameters([float(v) for v in t.parameters])
    return s


@pytest.mark.parametrize("kind", KINDS)
def test_points_match_simpleitk(kind: str) -> None:
    worst = []

    @settings(max_examples=30, deadline=None)
    @given(_case_strategy(kind))
    def check(case):
        (fixed, params), seed = case
        t = _make(kind, fixed, params)
        pts = _points(t.ndim, seed, n=8)
        s = _sitk_transform(t)
        ref = np.array([s.TransformPoint(p) for p in pts.tolist()])
        err = float(np.max(np.abs(t.transform_points(pts) - ref)))
        worst.append(err)
        assert err <= 1e-9
        # SimpleITK agrees on the stored parameters too
        np.testing.assert_array_equal(np.array(s.GetParameters()), t.parameters)

    check()
    assert max(worst) <= 1e-9


# ------------------------------------------------------------ inverse, round trip
@pytest.mark.parametrize("kind", KINDS)
def test_inverse_round_trip_and_class(kind: str) -> None:
    @settings(max_examples=50, deadline=None)
    @given(_case_strategy(kind))
    def check(case):
        (fixed, params), seed = case
        t = _make(kind, fixed, params)
        if kind.startswith("affine") and abs(np.linalg.det(t.matrix)) < 1e-3:
            return  # (near-)singular random matrix: no meaningful inverse
        pts = _points(t.ndim, seed)
        inv = t.inverse()
        if kind in OWN_KINDS or kind.startswith("translation"):
            assert type(inv) is type(t)
        scale = max(1.0, float(np.linalg.cond(t.matrix)))
        assert np.max(np.abs(inv.transform_points(t.transform_points(pts)) - pts)) <= 1e-10 * scale * 100
        assert np.max(np.abs(t.transform_points(inv.transform_points(pts)) - pts)) <= 1e-10 * scale * 100

    check()


@pytest.mark.parametrize("kind", OWN_KINDS)
def test_parameter_round_trip_and_identity_default(kind: str, rng) -> None:
    fresh = CASES[kind][0]()
    pts = rng.uniform(-50, 50, (5, fresh.ndim))
    np.testing.assert_array_equal(fresh.transform_points(pts), pts)
    t = _make(kind, *_fixed_example(kind))
    other = CASES[kind][0]()
    other.fixed_parameters = t.fixed_parameters
    other.parameters = t.parameters
    np.testing.assert_array_equal(other.parameters, t.parameters)
    np.testing.assert_array_equal(other.fixed_parameters, t.fixed_parameters)
    np.testing.assert_array_equal(other.transform_points(pts), t.transform_points(pts))
    # getters return copies
    p = t.parameters
    p[:] = 123.0
    assert not np.any(t.parameters == 123.0)


def _fixed_example(kind: str) -> tuple[np.ndarray, np.ndarray]:
    table = {
        "euler2d": ([3.0, -4.0], [0.4, 1.0, 2.0]),
        "similarity2d": ([3.0, -4.0], [1.3, 0.4, 1.0, 2.0]),
        "euler3d_zxy": ([3.0, -4.0, 5.0, 0.0], [0.1, -0.2, 0.3, 1.0, 2.0, 3.0]),
        "euler3d_zyx": ([3.0, -4.0, 5.0, 1.0], [0.1, -0.2, 0.3, 1.0, 2.0, 3.0]),
        "versorrigid3d": ([3.0, -4.0, 5.0], [0.1, -0.2, 0.3, 1.0, 2.0, 3.0]),
        "versor3d": ([3.0, -4.0, 5.0], [0.1, -0.2, 0.3]),
        "similarity3d": ([3.0, -4.0, 5.0], [0.1, -0.2, 0.3, 1.0, 2.0, 3.0, 0.8]),
    }
    fixed, params = table[kind]
    return np.array(fixed), np.array(params)


def test_inputs_are_not_mutated(rng) -> None:
    t = _make("similarity3d", *_fixed_example("similarity3d"))
    pts = rng.uniform(-5, 5, (4, 3))
    vec = rng.standard_normal((4, 3))
    step = rng.standard_normal(7) * 0.01
    copies = pts.copy(), vec.copy(), step.copy()
    t.transform_points(pts)
    t.jacobian(pts)
    t.jacobian_vjp(pts, vec)
    t.update_parameters(step)
    for a, b in zip((pts, vec, step), copies):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------- versors
def _rotvec_matrix(r: np.ndarray) -> np.ndarray:
    """Rodrigues' formula (independent of the quaternion code; any angle)."""
    angle = float(np.linalg.norm(r))
    if angle == 0.0:
        return np.eye(3)
    k = r / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * kx @ kx


@settings(max_examples=100, deadline=None)
@given(_vec(3, -3.0, 3.0), _vec(3, -3.0, 3.0), st.floats(-2.0, 2.0, **_f))
def test_versor_update_composes_on_the_right(r0: np.ndarray, u: np.ndarray, factor: float) -> None:
    """R_new = R_current @ R(factor * u), also across the w < 0 boundary (angles up to ~2pi)."""
    t = VersorRigid3DTransform(center=[1.0, 2.0, 3.0], translation=[4.0, 5.0, 6.0])
    if np.linalg.norm(r0) > 0:
        t.set_rotation(r0, float(np.linalg.norm(r0)))
    before = t.rotation_matrix
    step = np.r_[u, 0.5, -0.5, 0.25]
    t.update_parameters(step, factor)
    expected = before @ _rotvec_matrix(factor * u)
    np.testing.assert_allclose(t.rotation_matrix, expected, atol=1e-12)
    np.testing.assert_allclose(t.translation, np.array([4.0, 5.0, 6.0]) + factor * step[3:], atol=1e-12)
    assert t.versor[3] >= 0.0
    assert np.linalg.norm(t.parameters[:3]) < 1.0


def test_versor_jacobian_is_rotation_vector_not_itk_component() -> None:
    """At the identity ITK's versor-component Jacobian is twice ours: make sure we return ours."""
    t = VersorRigid3DTransform(center=[1.0, -2.0, 0.5])
    x = np.array([[3.0, 1.0, -2.0]])
    jac = t.jacobian(x)[0, :, :3]
    d = x[0] - t.center
    expected = np.stack([np.cross(e, d) for e in np.eye(3)], axis=1)
    np.testing.assert_allclose(jac, expected, atol=1e-14)


def test_versor_transform_rescales_too() -> None:
    """ITK's VersorTransform throws for |v| > 1; regframe rescales as for VersorRigid3D."""
    t = VersorTransform()
    t.parameters = [0.8, 0.6, 0.3]
    assert np.linalg.norm(t.parameters) < 1.0
    np.testing.assert_allclose(t.parameters / np.linalg.norm(t.parameters), np.array([0.8, 0.6, 0.3]) / np.sqrt(1.09))


@pytest.mark.parametrize("cls", [VersorRigid3DTransform, Similarity3DTransform])
def test_versor_norm_rescaled_like_itk(cls) -> None:
    t = cls()
    params = t.parameters
    params[:3] = [0.8, 0.6, 0.3]  # |v| > 1
    t.parameters = params
    s = getattr(sitk, cls.__name__)()
    s.SetParameters([float(v) for v in params])
    np.testing.assert_allclose(t.parameters, np.array(s.GetParameters()), rtol=0, atol=1e-15)
    assert np.linalg.norm(t.parameters[:3]) < 1.0
    pts = np.array([[1.0, 2.0, 3.0], [-4.0, 0.5, 2.0]])
    ref = np.array([s.TransformPoint(p) for p in pts.tolist()])
    np.testing.assert_allclose(t.transform_points(pts), ref, atol=1e-9)


def test_versor_convenience_setters() -> None:
    t = VersorRigid3DTransform()
    t.set_rotation([0.0, 0.0, 2.0], np.pi / 2)
    np.testing.assert_allclose(t.transform_point([1.0, 0.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-15)
    assert t.angle == pytest.approx(np.pi / 2)
    np.testing.assert_allclose(t.axis, [0.0, 0.0, 1.0])
    q = t.versor
    t2 = VersorRigid3DTransform(versor=-q)  # full quaternion, negative w accepted
    np.testing.assert_allclose(t2.rotation_matrix, t.rotation_matrix, atol=1e-15)
    t3 = VersorRigid3DTransform()
    t3.set_matrix(t.rotation_matrix)
    np.testing.assert_allclose(t3.parameters, t.parameters, atol=1e-15)
    with pytest.raises(InvalidInputError, match="proper rotation"):
        t3.set_matrix(np.diag([1.0, 1.0, -1.0]))


@settings(max_examples=100, deadline=None)
@given(_vec(3, -3.1, 3.1), st.floats(0.5, 2.0, **_f))
def test_similarity3d_set_matrix_round_trip(r: np.ndarray, scale: float) -> None:
    t = Similarity3DTransform()
    t.set_matrix(scale * _rotvec_matrix(r))
    np.testing.assert_allclose(t.matrix, scale * _rotvec_matrix(r), atol=1e-12)
    assert t.scale == pytest.approx(scale, rel=1e-13)


# --------------------------------------------------------------------- Euler
@pytest.mark.parametrize("zyx", [False, True])
def test_euler3d_set_matrix_round_trip(zyx: bool) -> None:
    @settings(max_examples=100, deadline=None)
    @given(_vec(3, -np.pi, np.pi))
    def check(angles):
        t = Euler3DTransform(angles=angles, compute_zyx=zyx)
        u = Euler3DTransform(compute_zyx=zyx)
        u.set_matrix(t.matrix)
        np.testing.assert_allclose(u.matrix, t.matrix, atol=1e-13)

    check()


@pytest.mark.parametrize("zyx", [False, True])
@pytest.mark.parametrize("pole", [np.pi / 2, -np.pi / 2, np.pi / 2 - 1e-6, -np.pi / 2 + 3e-5, np.pi / 2 + 1e-9])
def test_euler3d_set_matrix_gimbal_lock(zyx: bool, pole: float) -> None:
    """At (and near) gimbal lock the middle angle is +-pi/2; the matrix must still be reproduced."""
    angles = [0.7, pole, -0.4] if zyx else [pole, 0.7, -0.4]
    t = Euler3DTransform(angles=angles, compute_zyx=zyx)
    u = Euler3DTransform(compute_zyx=zyx)
    u.set_matrix(t.matrix)
    np.testing.assert_allclose(u.matrix, t.matrix, atol=1e-12)


def test_euler3d_fixed_parameters_layout() -> None:
    t = Euler3DTransform()
    np.testing.assert_array_equal(t.fixed_parameters, [0.0, 0.0, 0.0, 0.0])
    t.fixed_parameters = [1.0, 2.0, 3.0, 1.0]
    assert t.compute_zyx
    t.fixed_parameters = [4.0, 5.0, 6.0]  # 3 values: centre only, flag kept
    assert t.compute_zyx
    np.testing.assert_array_equal(t.fixed_parameters, [4.0, 5.0, 6.0, 1.0])
    assert Euler3DTransform(compute_zyx=True).fixed_parameters[3] == 1.0
    with pytest.raises(ShapeError, match="3 or 4 values"):
        t.fixed_parameters = [1.0, 2.0]
    # ZXY default: R = Rz Rx Ry
    a = Euler3DTransform(angles=[0.3, 0.0, 0.0]).matrix @ np.eye(3)
    b = Euler3DTransform(angles=[0.0, 0.2, 0.0]).matrix
    c = Euler3DTransform(angles=[0.0, 0.0, 0.1]).matrix
    np.testing.assert_allclose(Euler3DTransform(angles=[0.3, 0.2, 0.1]).matrix, c @ a @ b, atol=1e-15)
    np.testing.assert_allclose(
        Euler3DTransform(angles=[0.3, 0.2, 0.1], compute_zyx=True).matrix, c @ b @ a, atol=1e-15
    )


def test_2d_convenience_and_set_matrix() -> None:
    t = Euler2DTransform(center=[1.0, 2.0], angle=0.5, translation=[3.0, 4.0])
    np.testing.assert_array_equal(t.parameters, [0.5, 3.0, 4.0])
    np.testing.assert_array_equal(t.fixed_parameters, [1.0, 2.0])
    u = Euler2DTransform()
    u.set_matrix(t.matrix)
    assert u.angle == pytest.approx(0.5, abs=1e-15)
    s = Similarity2DTransform(center=[1.0, 2.0], scale=1.7, angle=-2.5, translation=[3.0, 4.0])
    np.testing.assert_array_equal(s.parameters, [1.7, -2.5, 3.0, 4.0])
    v = Similarity2DTransform()
    v.set_matrix(s.matrix)
    np.testing.assert_allclose(v.parameters[:2], [1.7, -2.5], atol=1e-14)
    with pytest.raises(InvalidInputError, match="scale times a rotation"):
        v.set_matrix([[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(InvalidInputError, match="proper rotation"):
        u.set_matrix([[1.0, 0.0], [0.0, -1.0]])


def test_wrong_parameter_length_raises() -> None:
    with pytest.raises(ShapeError, match="7 values"):
        Similarity3DTransform().parameters = np.zeros(6)
    with pytest.raises(ShapeError):
        Euler2DTransform().fixed_parameters = np.zeros(3)
