"""Tests of BSplineTransform (ITK parity, derivatives, refinement, determinism)."""

from __future__ import annotations

import warnings

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regframe._parallel import SCATTER_CHUNK_SIZE
from regframe.errors import InvalidInputError, NotInvertibleError, RegframeWarning, ShapeError
from regframe.transforms.bspline import BSplineTransform, IterativeInverseTransform
from regframe.transforms.displacement import DisplacementFieldTransform

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the reference implementation")


# --------------------------------------------------------------------------- helpers
def _rotation(d: int, rng: np.random.Generator, max_angle: float = 0.6) -> np.ndarray:
    if d == 2:
        a = rng.uniform(-max_angle, max_angle)
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    q, r = np.linalg.qr(np.eye(3) + rng.uniform(-max_angle, max_angle, (3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _make(d: int, seed: int, max_mesh: int = 3, amplitude: float = 2.0, oblique: bool = True) -> BSplineTransform:
    rng = np.random.default_rng(seed)
    t = BSplineTransform(d)
    t.set_transform_domain(
        origin=rng.uniform(-20, 20, d),
        physical_dimensions=rng.uniform(20, 60, d),
        mesh_size=rng.integers(1, max_mesh + 1, d),
        direction=_rotation(d, rng) if oblique else None,
    )
    t.parameters = rng.uniform(-amplitude, amplitude, t.n_parameters)
    return t


def _index_to_point(t: BSplineTransform, ci: np.ndarray) -> np.ndarray:
    return t.grid_origin + ci @ (t.grid_direction @ np.diag(t.grid_spacing)).T


def _points(t: BSplineTransform, rng: np.random.Generator, n_in: int, n_out: int = 0, n_border: int = 0) -> np.ndarray:
    d = t.ndim
    gs = np.array(t.grid_size, dtype=float)
    parts = [_index_to_point(t, rng.uniform(1.0, gs - 2.0, (n_in, d)))]
    if n_out:
        parts.append(_index_to_point(t, rng.uniform(-1.0, gs + 1.0, (n_out, d))))
    if n_border:
        ci = rng.uniform(1.0, gs - 2.0, (n_border, d))
        axis = rng.integers(0, d, n_border)
        side = rng.integers(0, 2, n_border)
        # points exactly on the limit are knife-edge cases: ITK's continuous index comes
        # from an SVD-based matrix inverse and differs from any other by a few ulp
        eps = rng.choice([1e-11, -1e-11, 1e-9, -1e-9], n_border)
        ci[np.arange(n_border), axis] = np.where(side == 1, gs[axis] - 2.0, 1.0) + eps
        parts.append(_index_to_point(t, ci))
    return np.concatenate(parts)


def _to_sitk(t: BSplineTransform):
    s = sitk.BSplineTransform(t.ndim, 3)
    s.SetFixedParameters(t.fixed_parameters.tolist())
    s.SetParameters(t.parameters.tolist())
    return s


def _fd_jacobian(t: BSplineTransform, pts: np.ndarray, step: float, columns: np.ndarray) -> np.ndarray:
    out = np.empty((pts.shape[0], t.ndim, columns.size))
    for j, k in enumerate(columns):
        e = np.zeros(t.n_parameters)
        e[k] = step
        plus, minus = t.copy(), t.copy()
        plus.update_parameters(e)
        minus.update_parameters(-e)
        out[:, :, j] = (plus.transform_points(pts) - minus.transform_points(pts)) / (2 * step)
    return out


# --------------------------------------------------------------------------- ITK parity
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_points_match_simpleitk(d, seed):
    t = _make(d, seed, amplitude=5.0)
    rng = np.random.default_rng(100 + seed)
    pts = _points(t, rng, n_in=300, n_out=300, n_border=200)
    ours = t.transform_points(pts)
    s = _to_sitk(t)
    ref = np.array([s.TransformPoint(p.tolist()) for p in pts])
    err = np.max(np.abs(ours - ref))
    moved = np.any(ours != pts, axis=1)
    # the sample really covers both regions
    assert 0.3 < moved.mean() < 0.95
    assert err <= 1e-9, f"max point difference vs SimpleITK {err:.3e} mm"


@pytest.mark.parametrize("d", [2, 3])
def test_upper_limit_nudge_matches_simpleitk(d):
    # axis-aligned unit grid: continuous indices are exact, so points exactly on the
    # upper limit of the valid region exercise ITK's 4-ulp nudge rule
    t = BSplineTransform(d)
    t.set_transform_domain(np.zeros(d), np.full(d, 3.0), np.full(d, 3))
    rng = np.random.default_rng(5)
    t.parameters = rng.uniform(-1, 1, t.n_parameters)
    limit = t.grid_size[0] - 2.0 + t.grid_origin[0]  # physical position of ci = grid_size - 2
    pts = rng.uniform(0.0, 3.0, (40, d))
    pts[:, 0] = np.concatenate([np.full(10, limit), np.nextafter(np.full(10, limit), 10), np.nextafter(np.full(10, limit), -10), np.full(10, limit + 1e-6)])
    pts[:20, 1] = 0.0  # lower limit of axis 1 (ci = 1), inside
    ours = t.transform_points(pts)
    s = _to_sitk(t)
    ref = np.array([s.TransformPoint(p.tolist()) for p in pts])
    assert np.all(ours[:30] != pts[:30]) and np.all(ours[30:] == pts[30:])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_fixed_parameters_match_simpleitk_transform_domain(d):
    rng = np.random.default_rng(7)
    origin, dims, mesh, direction = rng.normal(size=d), rng.uniform(5, 9, d), rng.integers(1, 6, d), _rotation(d, rng)
    t = BSplineTransform(d)
    t.set_transform_domain(origin, dims, mesh, direction)
    s = sitk.BSplineTransform(d, 3)
    s.SetTransformDomainOrigin(origin.tolist())
    s.SetTransformDomainPhysicalDimensions(dims.tolist())
    s.SetTransformDomainDirection(direction.ravel().tolist())
    s.SetTransformDomainMeshSize([int(m) for m in mesh])
    np.testing.assert_allclose(t.fixed_parameters, s.GetFixedParameters(), rtol=0, atol=1e-12)
    assert t.n_parameters == s.GetNumberOfParameters()
    np.testing.assert_allclose(t.transform_domain_origin, origin, atol=1e-12)
    np.testing.assert_allclose(t.transform_domain_physical_dimensions, dims, atol=1e-12)
    assert t.mesh_size == tuple(int(m) for m in mesh)


def test_default_fixed_parameters_match_simpleitk():
    for d in (2, 3):
        np.testing.assert_array_equal(BSplineTransform(d).fixed_parameters, sitk.BSplineTransform(d, 3).GetFixedParameters())


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("angle", [0.0, 0.3, 2.0])
def test_from_domain_matches_simpleitk_initializer(d, angle):
    size = [10, 12, 7][:d]
    img = sitk.Image(size, sitk.sitkFloat32)
    img.SetSpacing([1.5, 0.7, 2.0][:d])
    img.SetOrigin([3.0, -2.0, 5.0][:d])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]]) if d == 2 else np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    img.SetDirection(rot.ravel().tolist())
    mesh = [4, 3, 2][:d]
    ours = BSplineTransform.from_domain(img, mesh_size=mesh)
    ref = sitk.BSplineTransformInitializer(img, mesh)
    # SimpleITK 2.5 computes the corners in float32, hence the 1e-6 tolerance
    np.testing.assert_allclose(ours.fixed_parameters, ref.GetFixedParameters(), rtol=1e-6, atol=1e-6)
    # exact domain: (size + 1/4) voxels along each image axis
    np.testing.assert_allclose(
        np.sort(ours.transform_domain_physical_dimensions),
        np.sort((np.array(size) + 0.25) * np.array(img.GetSpacing())),
        rtol=1e-13,
    )


def test_from_domain_accepts_regframe_image():
    image_mod = pytest.importorskip("regframe.image", reason="regframe.Image not available yet")
    c, s = np.cos(0.3), np.sin(0.3)
    img = image_mod.Image(np.zeros((12, 10)), spacing=(1.5, 0.7), origin=(3.0, -2.0), direction=[[c, -s], [s, c]])
    ours = BSplineTransform.from_domain(img, mesh_size=(4, 3))
    simg = sitk.Image([10, 12], sitk.sitkFloat32)
    simg.SetSpacing([1.5, 0.7])
    simg.SetOrigin([3.0, -2.0])
    simg.SetDirection([c, -s, s, c])
    np.testing.assert_allclose(ours.fixed_parameters, BSplineTransform.from_domain(simg, mesh_size=(4, 3)).fixed_parameters, atol=1e-12)


def test_from_domain_control_point_spacing_and_dict():
    img = sitk.Image([40, 20], sitk.sitkFloat32)
    t = BSplineTransform.from_domain(img, control_point_spacing=10.0)
    assert t.mesh_size == (4, 2)
    t2 = BSplineTransform.from_domain({"origin": [0, 0], "physical_dimensions": [30, 10]}, mesh_size=3)
    assert t2.mesh_size == (3, 3)
    np.testing.assert_allclose(t2.grid_spacing, [10.0, 10.0 / 3.0])
    with pytest.raises(InvalidInputError, match="exactly one"):
        BSplineTransform.from_domain(img)


# --------------------------------------------------------------------------- derivatives
def _hyp_case(d: int):
    return st.tuples(st.integers(0, 2**31 - 1), st.integers(1, 2 if d == 3 else 3))


@pytest.mark.parametrize("d", [2, 3])
def test_jacobian_matches_central_differences_and_vjp(d):
    errors: list[float] = []
    vjp_errors: list[float] = []

    @settings(max_examples=100, deadline=None)
    @given(case=_hyp_case(d))
    def check(case):
        seed, max_mesh = case
        t = _make(d, seed, max_mesh=max_mesh)
        rng = np.random.default_rng(seed + 1)
        pts = _points(t, rng, n_in=6, n_out=2)
        jac = t.jacobian(pts)
        # T is linear in the parameters: check a random sample of the columns the points
        # touch plus random (mostly zero) columns
        touched = np.nonzero(np.any(jac != 0, axis=(0, 1)))[0]
        columns = np.union1d(
            rng.choice(touched, min(40, touched.size), replace=False),
            rng.choice(t.n_parameters, 12, replace=False),
        )
        fd = _fd_jacobian(t, pts, 1e-3, columns)
        rel = np.max(np.abs(jac[:, :, columns] - fd)) / max(np.max(np.abs(fd)), 1e-12)
        errors.append(rel)
        assert rel <= 1e-6
        vec = rng.normal(size=pts.shape)
        dense = np.einsum("sik,si->k", jac, vec)
        vjp = t.jacobian_vjp(pts, vec)
        verr = np.max(np.abs(vjp - dense)) / max(np.max(np.abs(dense)), 1e-12)
        vjp_errors.append(verr)
        assert verr <= 1e-12

    check()
    assert len(errors) >= 100
    print(f"\n{d}-D B-spline: max rel. Jacobian error {max(errors):.2e}, max rel. vjp error {max(vjp_errors):.2e}")


@pytest.mark.parametrize("d", [2, 3])
def test_position_jacobian_matches_central_differences(d):
    worst = 0.0
    for seed in range(20):
        t = _make(d, seed, amplitude=4.0)
        rng = np.random.default_rng(seed)
        pts = _points(t, rng, n_in=20, n_out=5)
        jp = t.jacobian_position(pts)
        h = 1e-5
        fd = np.empty_like(jp)
        for j in range(d):
            e = np.zeros(d)
            e[j] = h
            fd[:, :, j] = (t.transform_points(pts + e) - t.transform_points(pts - e)) / (2 * h)
        inside = t.support(pts).inside
        assert np.all(jp[~inside] == np.eye(d))
        rel = np.max(np.abs(jp - fd)) / np.max(np.abs(fd))
        worst = max(worst, rel)
    print(f"\n{d}-D B-spline position Jacobian: max rel. error {worst:.2e}")
    assert worst <= 1e-6


def test_support_structure():
    t = _make(3, 5)
    rng = np.random.default_rng(0)
    pts = _points(t, rng, n_in=50, n_out=50)
    sup = t.support(pts)
    assert sup.indices.shape == (100, 64) and sup.weights.shape == (100, 64)
    np.testing.assert_allclose(sup.weights[sup.inside].sum(axis=1), 1.0, atol=1e-14)
    assert np.all(sup.weights[~sup.inside] == 0)
    jac = t.jacobian(pts)
    n_grid = t.n_control_points
    for s in range(0, 100, 7):
        for c in range(3):
            rebuilt = np.zeros(t.n_parameters)
            np.add.at(rebuilt, c * n_grid + sup.indices[s], sup.weights[s])
            np.testing.assert_array_equal(rebuilt, jac[s, c])
    # displacement = sum of weights times coefficients (ITK's formula)
    coeffs = t.parameters.reshape(3, n_grid)
    disp = np.einsum("sm,csm->sc", sup.weights, coeffs[:, sup.indices])
    np.testing.assert_allclose(t.transform_points(pts) - pts, disp, atol=1e-12)


# --------------------------------------------------------------------------- sparse product
def test_vjp_matches_naive_scatter_over_several_chunks_and_blocks():
    t = _make(2, 11, max_mesh=4)
    rng = np.random.default_rng(3)
    n = SCATTER_CHUNK_SIZE * 9 + 123  # more than one block of chunks, ragged last chunk
    pts = _points(t, rng, n_in=n - 1000, n_out=1000)
    vec = rng.normal(size=pts.shape)
    sup = t.support(pts)
    naive = np.zeros(t.n_parameters)
    for c in range(2):
        np.add.at(naive, c * t.n_control_points + sup.indices.ravel(), (sup.weights * vec[:, c : c + 1]).ravel())
    got = t.jacobian_vjp(pts, vec)
    np.testing.assert_allclose(got, naive, rtol=1e-10, atol=1e-9)


def test_vjp_bit_identical_for_1_and_2_threads():
    t = _make(3, 4, max_mesh=3)
    rng = np.random.default_rng(9)
    pts = _points(t, rng, n_in=3 * SCATTER_CHUNK_SIZE + 17)
    vec = rng.normal(size=pts.shape)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = t.jacobian_vjp(pts, vec)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = t.jacobian_vjp(pts, vec)
    finally:
        numba.set_num_threads(old)
    assert np.any(one != 0)
    assert one.tobytes() == two.tobytes()


def test_vjp_does_not_modify_inputs():
    t = _make(2, 1)
    pts = _points(t, np.random.default_rng(0), 30)
    vec = np.ones_like(pts)
    p0, v0 = pts.copy(), vec.copy()
    t.jacobian_vjp(pts, vec)
    np.testing.assert_array_equal(pts, p0)
    np.testing.assert_array_equal(vec, v0)


# --------------------------------------------------------------------------- refinement
@pytest.mark.parametrize("d,factor", [(2, 2), (2, 3), (2, (2, 1)), (3, 2), (3, (1, 2, 3))])
def test_refine_is_exact(d, factor):
    t = _make(d, 21, max_mesh=3, amplitude=5.0)
    fine = t.refine(factor)
    fac = np.broadcast_to(np.asarray(factor), (d,))
    assert fine.mesh_size == tuple(int(m) for m in np.array(t.mesh_size) * fac)
    np.testing.assert_allclose(fine.transform_domain_origin, t.transform_domain_origin, atol=1e-12)
    np.testing.assert_allclose(fine.transform_domain_physical_dimensions, t.transform_domain_physical_dimensions, atol=1e-12)
    rng = np.random.default_rng(0)
    pts = _points(t, rng, n_in=2000, n_out=500)
    diff = np.max(np.abs(fine.transform_points(pts) - t.transform_points(pts)))
    print(f"\nrefine({factor}) {d}-D: max point difference {diff:.2e}")
    assert diff <= 1e-11
    # the original is untouched and the refinement is a real change of parameters
    assert fine.n_parameters > t.n_parameters or np.all(fac == 1)


def test_refine_rejects_bad_factor():
    with pytest.raises(InvalidInputError):
        BSplineTransform(2).refine(0)
    with pytest.raises(InvalidInputError):
        BSplineTransform(2).refine(1.5)


# --------------------------------------------------------------------------- inverse
@pytest.mark.parametrize("d", [2, 3])
def test_inverse_round_trip(d):
    t = _make(d, 3, amplitude=0.0)
    t.set_transform_domain(t.transform_domain_origin, t.transform_domain_physical_dimensions, [6] * d, t.grid_direction)
    rng = np.random.default_rng(1)
    # smooth moderate deformation: coefficients well below the control-point spacing, and
    # zero on the three outer control-point layers so that T is continuous (= identity) across
    # the edge of the valid region; otherwise points near the edge have two preimages
    imgs = []
    for c in range(d):
        img = np.zeros(t.grid_size[::-1])
        inner = tuple(slice(3, -3) for _ in range(d))
        img[inner] = rng.uniform(-0.15, 0.15, img[inner].shape) * t.grid_spacing[c]
        imgs.append(img)
    t.coefficient_images = imgs
    inv = t.inverse()
    assert isinstance(inv, IterativeInverseTransform)
    pts = _points(t, rng, n_in=500, n_out=100)
    back = inv.transform_points(t.transform_points(pts))
    err = np.max(np.abs(back - pts))
    print(f"\n{d}-D B-spline inverse: residual {inv.residual:.2e} mm, round trip {err:.2e} mm")
    assert inv.residual <= 1e-8
    assert err <= 1e-6
    # position Jacobian of the inverse is the inverse matrix of the forward one
    y = t.transform_points(pts[:20])
    np.testing.assert_allclose(inv.jacobian_position(y) @ t.jacobian_position(pts[:20]), np.broadcast_to(np.eye(d), (20, d, d)), atol=1e-7)
    assert isinstance(inv.inverse(), BSplineTransform)


def test_inverse_reports_non_convergence():
    t = _make(2, 3, max_mesh=2, amplitude=0.0)
    rng = np.random.default_rng(2)
    t.parameters = rng.uniform(-3, 3, t.n_parameters) * np.repeat(t.grid_spacing, t.n_control_points)  # folds
    pts = _points(t, rng, n_in=400)
    y = t.transform_points(pts)
    with pytest.warns(RegframeWarning, match="did not converge") as rec:
        t.inverse(max_iterations=3).transform_points(y)
    assert rec[0].filename == __file__  # the warning points at the caller
    with pytest.raises(NotInvertibleError):
        t.inverse(max_iterations=3, on_failure="raise").transform_points(y)


# --------------------------------------------------------------------------- conversions and state
def test_to_displacement_field_matches_at_voxels():
    t = _make(2, 8)
    ref = sitk.Image([15, 11], sitk.sitkFloat32)
    ref.SetSpacing([3.0, 4.0])
    ref.SetOrigin((t.transform_domain_origin - 5).tolist())
    field = t.to_displacement_field(ref)
    assert isinstance(field, DisplacementFieldTransform)
    pts = field.grid_points()
    np.testing.assert_allclose(field.transform_points(pts), t.transform_points(pts), atol=1e-12)
    assert np.any(field.field_array() != 0)


def test_coefficient_images_round_trip():
    t = _make(3, 2)
    imgs = t.coefficient_images
    assert len(imgs) == 3 and imgs[0].shape == tuple(t.grid_size[::-1])
    # x-fastest raster order: numpy's last axis is x
    np.testing.assert_array_equal(imgs[1].ravel(), t.parameters[t.n_control_points : 2 * t.n_control_points])
    other = BSplineTransform(3)
    other.fixed_parameters = t.fixed_parameters
    other.coefficient_images = imgs
    np.testing.assert_array_equal(other.parameters, t.parameters)
    with pytest.raises(ShapeError):
        other.coefficient_images = imgs[:2]


def test_fixed_parameters_round_trip_and_validation():
    t = _make(2, 4)
    u = BSplineTransform(2)
    u.fixed_parameters = t.fixed_parameters
    u.parameters = t.parameters
    pts = _points(t, np.random.default_rng(0), 50, 20)
    np.testing.assert_array_equal(u.transform_points(pts), t.transform_points(pts))
    with pytest.raises(ShapeError, match="expected 10 values"):
        u.fixed_parameters = np.zeros(9)
    with pytest.raises(InvalidInputError, match="grid size"):
        u.fixed_parameters = np.r_[3, 4, 0, 0, 1, 1, 1, 0, 0, 1]
    with pytest.raises(InvalidInputError, match="order"):
        BSplineTransform(2, order=2)
    with pytest.raises(ShapeError):
        u.parameters = np.zeros(3)


def test_flags():
    assert BSplineTransform.has_local_support and not BSplineTransform.is_linear
    assert BSplineTransform.itk_name == "BSplineTransform"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repr(BSplineTransform(2))


# --------------------------------------------------------------------------- bending energy
def _numeric_bending_energy(t: BSplineTransform, h: float = 1e-4) -> float:
    """Gauss quadrature over every knot cell of the Frobenius norm of the Hessian of T.

    The Hessian comes from central differences of the analytic position
    Jacobian, which is piecewise quadratic: the differences are exact inside a
    cell (the Gauss nodes stay away from the knots).
    """
    d = t.ndim
    xg, wg = np.polynomial.legendre.leggauss(4)
    cells = np.stack(np.meshgrid(*[np.arange(1, g - 2) for g in t.grid_size], indexing="ij"), -1).reshape(-1, d)
    nodes = np.stack(np.meshgrid(*[0.5 * (xg + 1)] * d, indexing="ij"), -1).reshape(-1, d)
    weights = np.prod(np.stack(np.meshgrid(*[0.5 * wg] * d, indexing="ij"), -1).reshape(-1, d), axis=1)
    ci = (cells[:, None, :] + nodes[None, :, :]).reshape(-1, d)
    w = np.tile(weights, cells.shape[0])
    i2p = t.grid_direction @ np.diag(t.grid_spacing)
    pts = _index_to_point(t, ci)
    hess = np.empty((pts.shape[0], d, d, d))  # [s, i, a, b] = d2 T_i / dx_a dx_b
    for b in range(d):
        e = np.zeros(d)
        e[b] = h
        hess[:, :, :, b] = (t.jacobian_position(pts + e) - t.jacobian_position(pts - e)) / (2 * h)
    return float(np.sum(w * np.sum(hess**2, axis=(1, 2, 3))) * abs(np.linalg.det(i2p)))


@pytest.mark.parametrize("d", [2, 3])
def test_bending_energy_matches_quadrature_and_gradient_matches_fd(d):
    t = _make(d, 31, max_mesh=2, amplitude=3.0)
    e_closed = t.bending_energy(normalize=False)
    e_num = _numeric_bending_energy(t)
    rel = abs(e_closed - e_num) / e_num
    volume = float(np.prod(t.transform_domain_physical_dimensions))
    np.testing.assert_allclose(t.bending_energy(), e_closed / volume, rtol=1e-12)
    energy, grad = t.bending_energy_and_gradient(normalize=True)
    rng = np.random.default_rng(0)
    cols = rng.choice(t.n_parameters, 30, replace=False)
    h = 1e-3
    fd = np.empty(cols.size)
    for j, k in enumerate(cols):
        e = np.zeros(t.n_parameters)
        e[k] = h
        plus, minus = t.copy(), t.copy()
        plus.update_parameters(e)
        minus.update_parameters(-e)
        fd[j] = (plus.bending_energy() - minus.bending_energy()) / (2 * h)
    grel = np.max(np.abs(grad[cols] - fd)) / np.max(np.abs(fd))
    print(f"\n{d}-D bending energy: closed form vs quadrature rel. {rel:.2e}; gradient vs FD rel. {grel:.2e}")
    assert rel <= 1e-6
    assert grel <= 1e-6


def test_bending_energy_of_affine_deformation_is_zero():
    t = _make(3, 2, max_mesh=3, amplitude=0.0)
    a = np.random.default_rng(0).uniform(-0.2, 0.2, (3, 3))
    nodes = np.stack(np.meshgrid(*[np.arange(g) for g in t.grid_size[::-1]], indexing="ij")[::-1], -1).reshape(-1, 3)
    cp = _index_to_point(t, nodes.astype(float))
    disp = cp @ a.T + 1.0  # B-splines reproduce affine maps exactly
    t.parameters = disp.T.ravel()
    pts = _points(t, np.random.default_rng(1), 50)
    np.testing.assert_allclose(t.transform_points(pts), pts + pts @ a.T + 1.0, atol=1e-10)
    energy, grad = t.bending_energy_and_gradient()
    assert abs(energy) <= 1e-20 + 1e-12 * np.sum(a**2)
    assert np.max(np.abs(grad)) <= 1e-10
