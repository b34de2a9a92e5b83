"""CompositeTransform: ITK order, chain-rule Jacobians, sparse VJP, inverse, flatten, SimpleITK parity."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regframe.errors import InvalidInputError, ShapeError
from regframe.transforms import (
    AffineTransform,
    CompositeTransform,
    Euler2DTransform,
    Euler3DTransform,
    Similarity2DTransform,
    Similarity3DTransform,
    TranslationTransform,
    VersorRigid3DTransform,
)
from regframe.transforms.io import to_sitk_transform

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the oracle for point mapping")

JAC_TOL = 1e-6
_f = dict(allow_nan=False, allow_infinity=False)


@pytest.fixture(autouse=True, scope="module")
def _one_numba_thread():
    """Tiny batches mapped thousands of times: avoid OpenMP launch overhead
    (results are thread-count independent by contract)."""
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


def _random_member(ndim: int, kind: int, rng: np.random.Generator):
    """One of several linear members at random parameters with a non-zero centre."""
    c = rng.uniform(-40, 40, ndim)
    t = rng.uniform(-20, 20, ndim)
    if ndim == 2:
        kind %= 4
        if kind == 0:
            m = Euler2DTransform(center=c, angle=rng.uniform(-np.pi, np.pi), translation=t)
        elif kind == 1:
            m = Similarity2DTransform(center=c, scale=rng.uniform(0.6, 1.6), angle=rng.uniform(-3, 3), translation=t)
        elif kind == 2:
            m = AffineTransform(2)
            m.fixed_parameters = c
            m.parameters = np.r_[(np.eye(2) + rng.uniform(-0.3, 0.3, (2, 2))).ravel(), t]
        else:
            m = TranslationTransform(2)
            m.parameters = t
        return m
    kind %= 5
    if kind == 0:
        m = Euler3DTransform(center=c, angles=rng.uniform(-np.pi, np.pi, 3), translation=t, compute_zyx=bool(rng.integers(2)))
    elif kind == 1:
        m = VersorRigid3DTransform(center=c, translation=t)
        m.set_rotation(rng.standard_normal(3), rng.uniform(-3, 3))
    elif kind == 2:
        m = Similarity3DTransform(center=c, translation=t, scale=rng.uniform(0.6, 1.6))
        m.set_rotation(rng.standard_normal(3), rng.uniform(-3, 3))
    elif kind == 3:
        m = AffineTransform(3)
        m.fixed_parameters = c
        m.parameters = np.r_[(np.eye(3) + rng.uniform(-0.3, 0.3, (3, 3))).ravel(), t]
    else:
        m = TranslationTransform(3)
        m.parameters = t
    return m


def composites(ndim: int) -> st.SearchStrategy:
    """Composite of 1-4 random linear members with random optimisation flags (>= 1 optimised)."""

    def make(args):
        kinds, flags, seed = args
        rng = np.random.default_rng(seed)
        comp = CompositeTransform(ndim)
        for k in kinds:
            comp.add_transform(_random_member(ndim, k, rng))
        flags = list(flags[: len(kinds)])
        if not any(flags):
            flags[rng.integers(len(flags))] = True
        for i, f in enumerate(flags):
            comp.set_optimize(i, f)
        return comp, seed

    return st.tuples(
        st.lists(st.integers(0, 9), min_size=1, max_size=4),
        st.lists(st.booleans(), min_size=4, max_size=4),
        st.integers(0, 2**32 - 1),
    ).map(make)


def _points(ndim, seed, n=12):
    return np.random.default_rng(seed + 7).uniform(-80, 80, (n, ndim))


def fd_jacobian_through_update(t, pts, h=1e-6):
    jac = np.zeros((pts.shape[0], t.ndim, t.n_parameters))
    for k in range(t.n_parameters):
        step = np.zeros(t.n_parameters)
        step[k] = h
        plus, minus = t.copy(), t.copy()
        plus.update_parameters(step)
        minus.update_parameters(-step)
        jac[:, :, k] = (plus.transform_points(pts) - minus.transform_points(pts)) / (2 * h)
    return jac


def rel_error(a, n):
    return float(np.max(np.abs(a - n)) / max(float(np.max(np.abs(a))), 1.0))


# ----------------------------------------------------------------- mapping order
def test_mapping_order_is_itk(rng) -> None:
    a = Euler2DTransform(center=[1.0, 2.0], angle=0.3, translation=[4.0, 5.0])
    b = TranslationTransform(2)
    b.parameters = [1.0, 2.0]
    comp = CompositeTransform(2, [a, b])
    pts = rng.uniform(-10, 10, (5, 2))
    np.testing.assert_allclose(comp.transform_points(pts), a.transform_points(b.transform_points(pts)), atol=1e-13)
    s = sitk.CompositeTransform([to_sitk_transform(a), to_sitk_transform(b)])
    ref = np.array([s.TransformPoint(p) for p in pts.tolist()])
    np.testing.assert_allclose(comp.transform_points(pts), ref, atol=1e-9)


@pytest.mark.parametrize("ndim", [2, 3])
def test_points_match_simpleitk_composite(ndim: int) -> None:
    worst = []

    @settings(max_examples=25, deadline=None)
    @given(composites(ndim))
    def check(case):
        comp, seed = case
        pts = _points(ndim, seed, n=6)
        s = to_sitk_transform(comp)
        ref = np.array([s.TransformPoint(p) for p in pts.tolist()])
        worst.append(float(np.max(np.abs(comp.transform_points(pts) - ref))))
        assert worst[-1] <= 1e-9

    check()


def test_parameter_layout_last_added_first() -> None:
    a = Euler2DTransform(angle=0.1, translation=[1.0, 2.0])
    b = Similarity2DTransform(center=[5.0, 6.0], scale=1.5, angle=0.2, translation=[3.0, 4.0])
    comp = CompositeTransform(2, [a, b])
    np.testing.assert_array_equal(comp.parameters, np.r_[b.parameters, a.parameters])
    np.testing.assert_array_equal(comp.fixed_parameters, np.r_[b.fixed_parameters, a.fixed_parameters])
    assert comp.n_parameters == 7
    comp.set_only_most_recent_transform_to_optimize()
    assert comp.optimize_flags == (False, True)
    np.testing.assert_array_equal(comp.parameters, b.parameters)
    comp.set_optimize(0, True)
    comp.set_optimize(1, False)
    np.testing.assert_array_equal(comp.parameters, a.parameters)
    comp.parameters = [0.5, 7.0, 8.0]
    np.testing.assert_array_equal(a.parameters, [0.5, 7.0, 8.0])  # members are held by reference
    comp.set_all_transforms_to_optimize()
    comp.fixed_parameters = [1.0, 1.0, 2.0, 2.0]
    np.testing.assert_array_equal(b.fixed_parameters, [1.0, 1.0])
    np.testing.assert_array_equal(a.fixed_parameters, [2.0, 2.0])
    with pytest.raises(ShapeError, match="last-added first"):
        comp.fixed_parameters = [1.0]
    with pytest.raises(InvalidInputError, match="index"):
        comp.set_optimize(5, True)
    with pytest.raises(InvalidInputError, match="3-D"):
        comp.add_transform(Euler3DTransform())


# ------------------------------------------------------------------ derivatives
@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_matches_central_differences_through_update(ndim: int) -> None:
    @settings(max_examples=100, deadline=None)
    @given(composites(ndim))
    def check(case):
        comp, seed = case
        pts = _points(ndim, seed)
        jac = comp.jacobian(pts)
        assert jac.shape == (pts.shape[0], ndim, comp.n_parameters)
        assert rel_error(jac, fd_jacobian_through_update(comp, pts)) <= JAC_TOL

    check()


@pytest.mark.parametrize("ndim", [2, 3])
def test_vjp_and_position_jacobian(ndim: int) -> None:
    @settings(max_examples=100, deadline=None)
    @given(composites(ndim))
    def check(case):
        comp, seed = case
        pts = _points(ndim, seed)
        vec = np.random.default_rng(seed).standard_normal(pts.shape)
        np.testing.assert_allclose(
            comp.jacobian_vjp(pts, vec), np.einsum("sik,si->k", comp.jacobian(pts), vec), rtol=1e-10, atol=1e-8
        )
        h = 1e-5
        fd = np.stack(
            [(comp.transform_points(pts + h * e) - comp.transform_points(pts - h * e)) / (2 * h) for e in np.eye(ndim)],
            axis=2,
        )
        assert rel_error(comp.jacobian_position(pts), fd) <= JAC_TOL

    check()


def test_vjp_never_builds_dense_jacobian_of_members(rng) -> None:
    """Members' jacobian() is never called by jacobian_vjp (sparse members stay sparse)."""
    a = Euler3DTransform(center=[1.0, 2.0, 3.0], angles=[0.1, 0.2, 0.3])
    b = Similarity3DTransform(center=[-1.0, 0.0, 2.0], scale=1.2, versor=[0.1, 0.0, 0.2])
    c = VersorRigid3DTransform(versor=[0.0, 0.3, 0.1], translation=[1.0, 2.0, 3.0])
    comp = CompositeTransform(3, [a, b, c])
    pts = rng.uniform(-20, 20, (30, 3))
    vec = rng.standard_normal((30, 3))
    expected = np.einsum("sik,si->k", comp.jacobian(pts), vec)

    def forbidden(points):
        raise AssertionError("dense member Jacobian built inside jacobian_vjp")

    for m in (a, b, c):
        m._jacobian = forbidden  # type: ignore[method-assign]
    np.testing.assert_allclose(comp.jacobian_vjp(pts, vec), expected, rtol=1e-12, atol=1e-9)


def test_sparse_member_in_composite(rng) -> None:
    """A displacement field after an optimised rigid member: chain rule through its position Jacobian."""
    disp = pytest.importorskip("regframe.transforms.displacement", reason="DisplacementFieldTransform not available")
    field = disp.DisplacementFieldTransform(2)
    field.fixed_parameters = np.r_[[9, 8], [-20.0, -20.0], [5.0, 5.0], np.eye(2).ravel()]
    field.parameters = rng.uniform(-1, 1, field.n_parameters)
    rigid = Euler2DTransform(center=[1.0, 2.0], angle=0.2, translation=[1.0, -1.0])
    comp = CompositeTransform(2, [field, rigid])  # rigid acts first, then the field
    pts = rng.uniform(-12, 12, (40, 2))
    vec = rng.standard_normal((40, 2))
    grad = comp.jacobian_vjp(pts, vec)
    dense = comp.jacobian(pts)
    np.testing.assert_allclose(grad, np.einsum("sik,si->k", dense, vec), rtol=1e-10, atol=1e-9)
    # rigid block (first 3 parameters, last added) against central differences
    comp.set_only_most_recent_transform_to_optimize()
    fd = fd_jacobian_through_update(comp, pts, h=1e-7)
    inside = np.all(np.abs(comp.jacobian(pts) - fd) < 1e-4, axis=(1, 2))  # away from the field's kinks
    assert inside.mean() > 0.8
    assert rel_error(comp.jacobian(pts)[inside], fd[inside]) <= JAC_TOL


# --------------------------------------------------------------------- structure
@pytest.mark.parametrize("ndim", [2, 3])
def test_inverse_round_trip(ndim: int) -> None:
    @settings(max_examples=30, deadline=None)
    @given(composites(ndim))
    def check(case):
        comp, seed = case
        pts = _points(ndim, seed)
        inv = comp.inverse()
        assert isinstance(inv, CompositeTransform) and len(inv) == len(comp)
        assert inv.optimize_flags == comp.optimize_flags[::-1]
        np.testing.assert_allclose(inv.transform_points(comp.transform_points(pts)), pts, atol=1e-8)

    check()


def test_flatten_copy_and_nesting(rng) -> None:
    a = Euler3DTransform(angles=[0.1, 0.2, 0.3], translation=[1.0, 2.0, 3.0])
    b = VersorRigid3DTransform(versor=[0.1, 0.2, 0.0])
    c = TranslationTransform(3)
    c.parameters = [5.0, 6.0, 7.0]
    inner = CompositeTransform(3, [b, c])
    inner.set_optimize(0, False)
    outer = CompositeTransform(3, [a, inner])
    pts = rng.uniform(-10, 10, (6, 3))
    expected = a.transform_points(b.transform_points(c.transform_points(pts)))
    np.testing.assert_allclose(outer.transform_points(pts), expected, atol=1e-12)
    flat = outer.flatten()
    assert [type(t).__name__ for t in flat.transforms] == ["Euler3DTransform", "VersorRigid3DTransform", "TranslationTransform"]
    assert flat.optimize_flags == (True, False, True)
    np.testing.assert_allclose(flat.transform_points(pts), expected, atol=1e-12)
    # deep copy independence
    dup = outer.copy()
    dup.update_parameters(np.ones(dup.n_parameters) * 0.01)
    np.testing.assert_allclose(outer.transform_points(pts), expected, atol=1e-12)
    assert not np.allclose(dup.transform_points(pts), expected)
    # empty composite is the identity
    empty = CompositeTransform(3)
    np.testing.assert_array_equal(empty.transform_points(pts), pts)
    assert empty.n_parameters == 0 and empty.jacobian(pts).shape == (6, 3, 0)
    assert empty.is_linear and not empty.has_local_support
    assert outer.is_linear
    assert outer.pop_transform() is inner and len(outer) == 1
