"""Tests of DisplacementFieldTransform (ITK parity, derivatives, inverse, determinism)."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regframe._parallel import SCATTER_CHUNK_SIZE
from regframe.errors import InvalidInputError, NotInvertibleError, RegframeWarning, ShapeError
from regframe.transforms.displacement import DisplacementFieldTransform

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the reference implementation")

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


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


def _reference(d: int, rng: np.random.Generator, max_size: int = 7, oblique: bool = True):
    size = [int(v) for v in rng.integers(3, max_size + 1, d)]
    img = sitk.Image(size, sitk.sitkFloat32)
    img.SetOrigin(rng.uniform(-10, 10, d).tolist())
    img.SetSpacing(rng.uniform(0.5, 3.0, d).tolist())
    if oblique:
        img.SetDirection(_rotation(d, rng).ravel().tolist())
    return img


def _make(d: int, seed: int, amplitude: float = 2.0, max_size: int = 7) -> DisplacementFieldTransform:
    rng = np.random.default_rng(seed)
    ref = _reference(d, rng, max_size)
    field = rng.uniform(-amplitude, amplitude, tuple(ref.GetSize())[::-1] + (d,))
    return DisplacementFieldTransform.from_array(field, ref)


def _index_to_point(t: DisplacementFieldTransform, ci: np.ndarray) -> np.ndarray:
    return t.origin + ci @ (t.direction @ np.diag(t.spacing)).T


def _points(t, rng, n_in, n_out=0, generic=False):
    """Points inside the buffer (optionally away from voxel planes) and around it."""
    d = t.ndim
    size = np.array(t.size, dtype=float)
    ci = rng.uniform(-0.5, size - 0.5, (n_in, d))
    if generic:  # keep clear of the kinks of the linear interpolant and of the buffer edge
        ci = np.floor(ci) + rng.uniform(0.1, 0.9, (n_in, d))
        ci = np.clip(ci, 0.1, size - 1.1)
    parts = [_index_to_point(t, ci)]
    if n_out:
        parts.append(_index_to_point(t, rng.uniform(-2.0, size + 1.0, (n_out, d))))
    return np.concatenate(parts)


def _to_sitk(t: DisplacementFieldTransform):
    img = sitk.GetImageFromArray(t.field_array(), isVector=True)
    img.SetOrigin(t.origin.tolist())
    img.SetSpacing(t.spacing.tolist())
    img.SetDirection(t.direction.ravel().tolist())
    return sitk.DisplacementFieldTransform(img)


# --------------------------------------------------------------------------- ITK parity
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_points_match_simpleitk(d, seed):
    t = _make(d, seed, amplitude=3.0)
    rng = np.random.default_rng(50 + seed)
    pts = _points(t, rng, 400, 400)
    # points in the half-voxel skirt (edge-clamped) and just beyond it
    size = np.array(t.size, dtype=float)
    ci = rng.uniform(-0.5, size - 0.5, (200, d))
    axis = rng.integers(0, d, 200)
    edge = np.where(rng.integers(0, 2, 200) == 1, size[axis] - 0.5, -0.5)
    ci[np.arange(200), axis] = edge + rng.choice([-0.2, -1e-9, 1e-9, 0.2], 200)
    pts = np.concatenate([pts, _index_to_point(t, ci)])
    ours = t.transform_points(pts)
    s = _to_sitk(t)
    assert s.GetFixedParameters() == tuple(t.fixed_parameters)
    np.testing.assert_array_equal(s.GetParameters(), t.parameters)
    ref = np.array([s.TransformPoint(p.tolist()) for p in pts])
    err = np.max(np.abs(ours - ref))
    moved = np.any(ours != pts, axis=1)
    assert 0.3 < moved.mean() < 0.95
    assert err <= 1e-9, f"max point difference vs SimpleITK {err:.3e} mm"


def test_fixed_parameters_layout_and_default():
    for d in (2, 3):
        np.testing.assert_array_equal(
            DisplacementFieldTransform(d).fixed_parameters, sitk.DisplacementFieldTransform(d).GetFixedParameters()
        )
        assert DisplacementFieldTransform(d).n_parameters == 0
    t = _make(3, 4)
    fp = t.fixed_parameters
    assert fp.size == 18
    np.testing.assert_array_equal(fp[:3], t.size)
    np.testing.assert_array_equal(fp[3:6], t.origin)
    np.testing.assert_array_equal(fp[6:9], t.spacing)
    np.testing.assert_array_equal(fp[9:], t.direction.ravel())
    # assigning fixed parameters defines the grid and resets the field (as ITK)
    u = DisplacementFieldTransform(3)
    u.fixed_parameters = fp
    assert u.n_parameters == t.n_parameters and np.all(u.parameters == 0)
    u.parameters = t.parameters
    pts = _points(t, np.random.default_rng(0), 30, 10)
    np.testing.assert_array_equal(u.transform_points(pts), t.transform_points(pts))
    with pytest.raises(ShapeError):
        u.fixed_parameters = fp[:-1]
    with pytest.raises(InvalidInputError):
        u.fixed_parameters = np.r_[3, 0, 4, fp[3:]]


def test_empty_field_is_identity():
    t = DisplacementFieldTransform(2)
    pts = np.random.default_rng(0).normal(size=(5, 2))
    np.testing.assert_array_equal(t.transform_points(pts), pts)
    assert t.jacobian(pts).shape == (5, 2, 0)
    assert t.jacobian_vjp(pts, pts).shape == (0,)


# --------------------------------------------------------------------------- derivatives
@pytest.mark.parametrize("d", [2, 3])
def test_jacobian_matches_central_differences_and_vjp(d):
    errors: list[float] = []

    @settings(max_examples=100, deadline=None)
    @given(seed=st.integers(0, 2**31 - 1))
    def check(seed):
        t = _make(d, seed, max_size=4 if d == 3 else 6)
        rng = np.random.default_rng(seed + 1)
        pts = _points(t, rng, 6, 2)
        jac = t.jacobian(pts)
        touched = np.nonzero(np.any(jac != 0, axis=(0, 1)))[0]
        columns = np.union1d(rng.choice(touched, min(30, touched.size), replace=False), rng.choice(t.n_parameters, 10, replace=False))
        fd = np.empty((pts.shape[0], d, columns.size))
        h = 1e-3
        for j, k in enumerate(columns):
            e = np.zeros(t.n_parameters)
            e[k] = h
            plus, minus = t.copy(), t.copy()
            plus.update_parameters(e)
            minus.update_parameters(-e)
            fd[:, :, j] = (plus.transform_points(pts) - minus.transform_points(pts)) / (2 * h)
        rel = np.max(np.abs(jac[:, :, columns] - fd)) / max(np.max(np.abs(fd)), 1e-12)
        errors.append(rel)
        assert rel <= 1e-6
        vec = rng.normal(size=pts.shape)
        dense = np.einsum("sik,si->k", jac, vec)
        np.testing.assert_allclose(t.jacobian_vjp(pts, vec), dense, rtol=0, atol=1e-12 * max(1.0, np.abs(dense).max()))

    check()
    assert len(errors) >= 100
    print(f"\n{d}-D displacement field: max rel. Jacobian error {max(errors):.2e}")


@pytest.mark.parametrize("d", [2, 3])
def test_position_jacobian_matches_central_differences(d):
    worst = 0.0
    for seed in range(20):
        t = _make(d, seed)
        rng = np.random.default_rng(seed)
        pts = _points(t, rng, 30, generic=True)
        jp = t.jacobian_position(pts)
        h = 1e-6
        fd = np.empty_like(jp)
        for j in range(d):
            e = np.zeros(d)
            e[j] = h
            fd[:, :, j] = (t.transform_points(pts + e) - t.transform_points(pts - e)) / (2 * h)
        worst = max(worst, np.max(np.abs(jp - fd)) / np.max(np.abs(fd)))
        far = _index_to_point(t, np.full((1, d), -3.0))
        np.testing.assert_array_equal(t.jacobian_position(far)[0], np.eye(d))
    print(f"\n{d}-D displacement field position Jacobian: max rel. error {worst:.2e}")
    assert worst <= 1e-6


def test_vjp_bit_identical_for_1_and_2_threads_and_matches_naive():
    t = _make(3, 6, max_size=6)
    rng = np.random.default_rng(4)
    pts = _points(t, rng, 2 * SCATTER_CHUNK_SIZE + 99, 1000)
    vec = rng.normal(size=pts.shape)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = t.jacobian_vjp(pts, vec)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = t.jacobian_vjp(pts, vec)
    finally:
        numba.set_num_threads(old)
    assert one.tobytes() == two.tobytes()
    idx, w, _ = t.support(pts)
    naive = np.zeros(t.n_parameters)
    for i in range(3):
        np.add.at(naive, (idx * 3 + i).ravel(), (w * vec[:, i : i + 1]).ravel())
    np.testing.assert_allclose(one, naive, rtol=1e-10, atol=1e-9)


def test_support_partition_of_unity():
    t = _make(2, 3)
    pts = _points(t, np.random.default_rng(1), 100, 100)
    idx, w, inside = t.support(pts)
    np.testing.assert_allclose(w[inside].sum(axis=1), 1.0, atol=1e-14)
    assert np.all(w[~inside] == 0)
    np.testing.assert_array_equal(inside, np.any(t.transform_points(pts) != pts, axis=1) | inside)


# --------------------------------------------------------------------------- inverse
@pytest.mark.parametrize("d", [2, 3])
def test_inverse_round_trip(d):
    rng = np.random.default_rng(11)
    ref = _reference(d, rng, max_size=12)
    size = np.array(ref.GetSize())
    spacing = np.array(ref.GetSpacing())
    # smooth moderate field vanishing at the edge of the buffer (so T is continuous there)
    grids = np.meshgrid(*[np.linspace(0, np.pi, s) for s in size[::-1]], indexing="ij")
    bump = np.prod([np.sin(g) for g in grids], axis=0)
    field = np.stack([0.25 * spacing[i] * bump * np.cos(grids[0] + i) for i in range(d)], axis=-1)
    t = DisplacementFieldTransform.from_array(field, ref)
    inv = t.inverse()
    assert isinstance(inv, DisplacementFieldTransform) and inv.size == t.size
    y = t.grid_points()
    err = np.max(np.linalg.norm(t.transform_points(inv.transform_points(y)) - y, axis=1))
    print(f"\n{d}-D field inverse: reported residual {inv.residual:.2e}, measured {err:.2e} mm")
    assert inv.residual <= 1e-8
    assert err <= 1e-8
    assert abs(err - inv.residual) <= 1e-9


def test_inverse_reports_non_convergence():
    rng = np.random.default_rng(2)
    ref = _reference(2, rng, max_size=8, oblique=False)
    field = rng.uniform(-5, 5, tuple(ref.GetSize())[::-1] + (2,)) * max(ref.GetSpacing())  # folds everywhere
    t = DisplacementFieldTransform.from_array(field, ref)
    with pytest.warns(RegframeWarning, match="did not converge") as rec:
        inv = t.inverse(max_iterations=2)
    assert rec[0].filename == __file__
    assert inv.residual > 1e-6
    with pytest.raises(NotInvertibleError):
        t.inverse(max_iterations=2, on_failure="raise")
    with pytest.raises(InvalidInputError):
        t.inverse(on_failure="maybe")


# --------------------------------------------------------------------------- constructors
def test_from_array_from_image_and_field_array():
    rng = np.random.default_rng(0)
    ref = _reference(3, rng)
    field = rng.normal(size=tuple(ref.GetSize())[::-1] + (3,))
    t = DisplacementFieldTransform.from_array(field, ref)
    np.testing.assert_array_equal(t.field_array(), field)
    np.testing.assert_array_equal(t.parameters, field.ravel())  # voxel-major, interleaved
    vec_img = sitk.GetImageFromArray(field, isVector=True)
    vec_img.CopyInformation(ref)
    u = DisplacementFieldTransform.from_image(vec_img)
    np.testing.assert_array_equal(u.parameters, t.parameters)
    np.testing.assert_array_equal(u.fixed_parameters, t.fixed_parameters)
    field_copy = field.copy()
    t.parameters = t.parameters * 2
    np.testing.assert_array_equal(field, field_copy)  # input never mutated
    with pytest.raises(ShapeError):
        DisplacementFieldTransform.from_array(field[..., :2], ref)
    with pytest.raises(InvalidInputError):
        DisplacementFieldTransform.from_array(field, object())


def test_from_regframe_images():
    image_mod = pytest.importorskip("regframe.image", reason="regframe.Image not available yet")
    rng = np.random.default_rng(1)
    comps = [image_mod.Image(rng.normal(size=(4, 5)), spacing=(0.5, 2.0), origin=(1.0, -1.0)) for _ in range(2)]
    t = DisplacementFieldTransform.from_image(comps)
    assert t.size == (5, 4)
    np.testing.assert_array_equal(t.field_array()[..., 1], comps[1].array)


def test_on_real_image_geometry():
    path = DATA / "rat_lung"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    files = sorted(p for p in path.iterdir() if p.suffix in (".mha", ".mhd", ".png"))
    if not files:
        pytest.skip(f"no image in {path}")
    img = sitk.ReadImage(str(files[0]))
    rng = np.random.default_rng(0)
    field = rng.normal(scale=0.5, size=tuple(img.GetSize())[::-1] + (img.GetDimension(),))
    t = DisplacementFieldTransform.from_array(field, img)
    pts = _points(t, rng, 500, 50)
    s = _to_sitk(t)
    ref = np.array([s.TransformPoint(p.tolist()) for p in pts])
    assert np.max(np.abs(t.transform_points(pts) - ref)) <= 1e-9


def test_flags():
    assert DisplacementFieldTransform.has_local_support and not DisplacementFieldTransform.is_linear
    assert DisplacementFieldTransform.itk_name == "DisplacementFieldTransform"
