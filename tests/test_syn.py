"""Symmetric diffeomorphic registration (SyN): dense metrics, field kernels, exactness, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regframe import AffineTransform, Image
from regframe.errors import EmptyMaskError, InvalidInputError, ShapeError
from regframe.metrics.dense import DenseMetric, box_sums
from regframe.quality import jacobian_determinant
from regframe.registration import resample
from regframe.registration import _syn_kernels as K
from regframe.registration.syn import SyNResult, _sample, default_syn_schedule, syn_register
from regframe.transforms import BSplineTransform

REPO = Path(__file__).resolve().parents[1]


def _smooth_random(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 1.5) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(rng.random(shape), sigma)


def _read(path: Path) -> Image:
    sitk = pytest.importorskip("SimpleITK")
    from regframe import from_sitk

    im = from_sitk(sitk.ReadImage(str(path)))
    return im.with_array(im.array.astype(np.float64))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _warp_known(image: Image, amplitude: float, seed: int) -> tuple[Image, object]:
    """``image`` resampled (by SimpleITK) through a smooth random displacement field of ``amplitude`` px."""
    sitk = pytest.importorskip("SimpleITK")
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = image.shape
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 12.0) for _ in range(image.ndim)], -1)
    field *= amplitude / np.abs(field).max()
    simg = sitk.GetImageFromArray(image.array)
    disp = sitk.GetImageFromArray(field, isVector=True)
    for s in (simg, disp):
        s.SetSpacing(tuple(image.spacing))
        s.SetOrigin(tuple(image.origin))
    tx = sitk.DisplacementFieldTransform(sitk.Cast(disp, sitk.sitkVectorFloat64))
    out = sitk.Resample(simg, simg, tx, sitk.sitkBSpline, 0.0, sitk.sitkFloat64)
    return image.with_array(sitk.GetArrayFromImage(out)), tx


# ---------------------------------------------------------------------------
# dense metrics and kernels
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ncc", "mse", "mattes"])
@pytest.mark.parametrize("shape", [(11, 13), (5, 6, 7)])
@settings(max_examples=4)
@given(seed=st.integers(0, 2**31 - 1))
def test_dense_metric_derivatives_match_central_differences(kind, shape, seed) -> None:
    rng = np.random.default_rng(seed)
    f = _smooth_random(rng, shape, 0.7)
    m = 0.6 * f + 0.4 * _smooth_random(rng, shape, 0.7)
    f = (f - f.min()) / np.ptp(f)
    m = (m - m.min()) / np.ptp(m) * 0.98 + 0.01
    w = (rng.random(shape) > 0.2).astype(float)
    size = shape[::-1]
    metric = DenseMetric(kind, radius=int(rng.integers(1, 3)))
    ev = metric.evaluate(f, m, size, w)
    eps = 1e-6
    scale = max(np.abs(ev.d_fixed).max(), np.abs(ev.d_moving).max())
    for v in rng.choice(f.size, 8, replace=False):
        for which, grad in (("f", ev.d_fixed), ("m", ev.d_moving)):
            vals = []
            for sgn in (1, -1):
                ff, mm = f.copy().ravel(), m.copy().ravel()
                (ff if which == "f" else mm)[v] += sgn * eps
                vals.append(metric.evaluate(ff, mm, size, w).value)
            fd = (vals[0] - vals[1]) / (2 * eps)
            assert abs(fd - grad[v]) <= 1e-6 * scale + 1e-9, (which, v, fd, grad[v])


@pytest.mark.parametrize("kind", ["ncc", "mse", "mattes"])
def test_displacement_gradient_matches_central_differences(kind, rng) -> None:
    """dE/du(x) = dE/dm_w(x) * d m_w(x)/du(x), with the exact interpolant derivative, vs finite differences."""
    shape = (12, 14)
    size = np.array(shape[::-1], dtype=np.int64)
    f = _smooth_random(rng, shape)
    m = np.roll(f, 1, axis=1) + 0.1 * _smooth_random(rng, shape)
    f = (f - f.min()) / np.ptp(f)
    m = (m - m.min()) / np.ptp(m)
    u = rng.uniform(-1.3, 1.3, f.size * 2)
    mat = np.array([[1.02, 0.05], [-0.03, 0.97]])
    off = np.array([0.2, -0.1])
    metric = DenseMetric(kind)

    def energy(disp: np.ndarray) -> float:
        mw = _sample(m.ravel(), 1, size, size, mat, off, disp)[0]
        return metric.evaluate(f, mw, tuple(size)).value

    mw, dmdu = _sample(m.ravel(), 1, size, size, mat, off, u, want_grad=True)
    ev = metric.evaluate(f, mw, tuple(size))
    grad = np.repeat(ev.d_moving, 2) * dmdu
    eps = 1e-7
    checked = 0
    for k in rng.choice(u.size, 30, replace=False):
        up, um = u.copy(), u.copy()
        up[k] += eps
        um[k] -= eps
        fd = (energy(up) - energy(um)) / (2 * eps)
        assert abs(fd - grad[k]) <= 1e-5 * np.abs(grad).max() + 1e-9, (k, fd, grad[k])
        checked += 1
    assert checked == 30


def test_box_sums_match_brute_force(rng) -> None:
    shape = (4, 5, 7)
    data = rng.random((2,) + shape)
    before = data.copy()
    out = box_sums(data.reshape(2, -1), np.array(shape[::-1], dtype=np.int64), 2).reshape(data.shape)
    ref = np.zeros_like(data)
    for z, y, x in np.ndindex(shape):
        ref[:, z, y, x] = data[:, max(0, z - 2) : z + 3, max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].sum(axis=(1, 2, 3))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert np.array_equal(data, before)  # input not mutated


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
def test_fast_interpolation_matches_nd_kernel_and_scipy(shape, rng) -> None:
    from scipy import ndimage

    d = len(shape)
    size = np.array(shape[::-1], dtype=np.int64)
    src = rng.random(int(np.prod(shape)) * 2)
    disp = rng.uniform(-3, 3, int(np.prod(shape)) * d)
    mat = np.eye(d) + 0.05 * rng.standard_normal((d, d))
    off = 0.3 * rng.standard_normal(d)
    fast = _sample(src, 2, size, size, mat, off, disp)[0]
    ref = np.empty_like(fast)
    K.map_interp(src, 2, size, disp, size, mat, off, ref, np.empty(0), False, 4096)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-14)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")[::-1], -1).reshape(-1, d)
    q = (idx + disp.reshape(-1, d)) @ mat.T + off
    coords = [np.clip(q[:, a], 0, size[a] - 1) for a in range(d)][::-1]
    for ch in range(2):
        img = src[ch::2].reshape(shape)
        np.testing.assert_allclose(fast[ch::2], ndimage.map_coordinates(img, coords, order=1), atol=1e-12)


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 7)])
def test_corner_jacobian_matches_numpy_over_every_stencil(shape, rng) -> None:
    """The fold check: smallest det over the 2**d one-sided difference stencils, against numpy."""
    d = len(shape)
    u = 0.3 * rng.standard_normal(int(np.prod(shape)) * d)
    out = np.empty(int(np.prod(shape)))
    K.jacobian_det(u, np.array(shape[::-1], dtype=np.int64), out, 4)
    arr = u.reshape(shape + (d,))
    fwd, bwd = [], []
    for ax in range(d):  # numpy axis d-1-ax is ITK axis ax
        npax = d - 1 - ax
        f = np.diff(arr, axis=npax, append=np.take(arr, [-1], axis=npax))
        b = np.diff(arr, axis=npax, prepend=np.take(arr, [0], axis=npax))
        last, first = [slice(None)] * (d + 1), [slice(None)] * (d + 1)
        last[npax], first[npax] = -1, 0
        f[tuple(last)] = b[tuple(last)]
        b[tuple(first)] = f[tuple(first)]
        fwd.append(f)
        bwd.append(b)
    best = np.full(shape, np.inf)
    for mm in range(1 << d):
        jac = np.stack([fwd[a] if (mm >> a) & 1 else bwd[a] for a in range(d)], -1) + np.eye(d)
        best = np.minimum(best, np.linalg.det(jac))
    np.testing.assert_allclose(out, best.reshape(-1), atol=1e-12)
    assert out.min() < 0  # the random field folds somewhere: the check is not vacuous
    fast = np.empty_like(out)  # the 2-D and 3-D fast paths give the same values
    (K.jacobian_det_2d if d == 2 else K.jacobian_det_3d)(u, np.array(shape[::-1], dtype=np.int64), fast, 4)
    np.testing.assert_array_equal(fast, out)


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 7), (1, 8)])
def test_descent_direction_is_minus_de_times_the_numpy_gradient(shape, rng) -> None:
    d = len(shape)
    values, d_energy = rng.random(shape), rng.standard_normal(int(np.prod(shape)))
    out = np.empty(values.size * d)
    K.descent_direction(d_energy, values.reshape(-1), np.array(shape[::-1], dtype=np.int64), out, 4)
    grads = [np.gradient(values, axis=ax) if n > 1 else np.zeros(shape) for ax, n in enumerate(shape)]
    ref = np.stack([grads[d - 1 - a].reshape(-1) for a in range(d)], -1) * -d_energy[:, None]
    np.testing.assert_array_equal(out.reshape(-1, d), ref)


@pytest.mark.parametrize("shape", [(24, 20), (10, 12, 9)])
def test_invert_field_kernel_matches_newton_invert(shape, rng) -> None:
    """The per-voxel Newton kernel of the final inverses against the transform layer's newton_invert."""
    from scipy import ndimage

    from regframe.transforms.displacement import DisplacementFieldTransform, newton_invert

    d = len(shape)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 2.5) for _ in range(d)], -1)
    from regframe.registration.syn import _Grid

    # zero on the border, as SyN's fields (the transform layer's field is zero beyond the grid)
    field *= _Grid(Image(np.zeros(shape))).border_weights(3.0).reshape(field.shape)
    field *= 2.0 / np.abs(field).max()  # up to 2 voxels, compressing by about half somewhere
    u = np.ascontiguousarray(field).reshape(-1)
    size = np.array(shape[::-1], dtype=np.int64)
    out, res = np.empty_like(u), np.empty(u.size // d)
    K.invert_field(u, size, -u, 1e-6, 30, out, res, 64)
    t = DisplacementFieldTransform.from_array(field, Image(np.zeros(shape)))
    y = Image(np.zeros(shape)).voxel_points()
    x, ref_res = newton_invert(t, y, initial=y - u.reshape(-1, d), tolerance=1e-6, max_iterations=30)
    assert res.max() <= 1e-6 and ref_res.max() <= 1e-6
    np.testing.assert_allclose(out.reshape(-1, d), x - y, atol=1e-5)
    assert np.abs(out).max() > 1.0  # not the identity


@pytest.mark.parametrize("shape", [(20, 17), (9, 11, 8), (130, 127), (34, 33, 30)])  # the last two: in slabs
def test_field_smoothing_equals_gaussian_filter(shape, rng) -> None:
    from scipy import ndimage

    from regframe.registration.syn import _Grid

    d = len(shape)
    u = rng.standard_normal(int(np.prod(shape)) * d)
    ref = ndimage.gaussian_filter(u.reshape(shape + (d,)), [1.7] * d + [0.0], mode="nearest").reshape(-1)
    np.testing.assert_allclose(_Grid(Image(np.zeros(shape))).smooth(u, 1.7), ref, rtol=0, atol=1e-15)


def test_fold_prevention_in_a_box_matches_the_whole_grid(rng) -> None:
    """The hold-back weights and re-composition computed in the box around the held-back voxels equal
    the same computation over the whole grid."""
    from scipy import ndimage

    from regframe.registration.syn import _HOLD_RAMP, _Grid

    shape, d = (60, 50), 2
    grid = _Grid(Image(np.zeros(shape)))
    u = 0.3 * np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 3.0) for _ in range(d)], -1)
    bump = np.zeros(shape + (d,))
    bump[20:30, 30:34, 0] = 4.0  # a local squeeze: det J leaves [0.25, 4] there only
    upd = ndimage.gaussian_filter(bump, (1.5, 1.5, 0)).reshape(-1)
    u = np.ascontiguousarray(u).reshape(-1)
    new_u = grid.compose(upd, u)
    got_upd, got_u, det = grid.limit_folding(upd, u, new_u, 0.25)
    # the whole-grid reference
    det1, det0 = grid.jacobian_det(new_u), grid.jacobian_det(u)
    bad = ((det1 < 0.25) & (det1 < det0)) | ((det1 > 4.0) & (det1 > det0))
    assert 0 < bad.sum() < 0.05 * bad.size and det is None
    frozen = ndimage.maximum_filter(bad.reshape(shape), size=5, mode="nearest")
    wide = ndimage.maximum_filter(frozen, size=2 * _HOLD_RAMP + 1, mode="nearest")
    weight = 1.0 - ndimage.gaussian_filter(wide.astype(np.float64), _HOLD_RAMP / 2.0, mode="nearest").reshape(-1)
    weight[frozen.reshape(-1)] = 0.0
    ref_upd = upd * np.repeat(np.clip(weight, 0.0, 1.0), d)
    np.testing.assert_array_equal(got_upd, ref_upd)
    np.testing.assert_allclose(got_u, grid.compose(ref_upd, u), rtol=0, atol=1e-13)
    assert np.array_equal(upd, ndimage.gaussian_filter(bump, (1.5, 1.5, 0)).reshape(-1))  # input not mutated


def test_consistent_inverse_smooths_only_where_the_pair_disagrees_between_grid_points() -> None:
    """A sharp local squeeze: its Newton inverse is exact at the grid points but not at the cell centres;
    the local smoothing brings the cell-centre error down there and leaves the field elsewhere alone."""
    from regframe.registration.syn import _CONSISTENCY_TOLERANCE, _TAPER_WIDTH, _Grid

    shape, d = (64, 64), 2
    grid = _Grid(Image(np.zeros(shape)))
    border = grid.border_weights(_TAPER_WIDTH)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
    r2 = (xx - 30.0) ** 2 + (yy - 34.0) ** 2
    field = np.zeros(shape + (d,))
    field[..., 0] = 0.75 * (xx - 30.0) * np.exp(-r2 / 8.0)  # a squeeze towards (30, 34), a few voxels wide
    field[..., 1] = 0.75 * (yy - 34.0) * np.exp(-r2 / 8.0)
    u = -np.ascontiguousarray(field).reshape(-1) * border
    assert grid.jacobian_det(u).min() > 0.1  # compressed, not folded
    v0, _ = grid.newton_inverse(u, grid.rough_inverse(u))
    before = grid.midpoint_inverse_error(u, v0)
    assert before.max() > 1.5 * _CONSISTENCY_TOLERANCE
    u2, v2, res = grid.consistent_inverse(u, border)
    after = grid.midpoint_inverse_error(u2, v2)
    assert res < 1e-2 and after.max() < 0.5 * before.max()
    far = (r2 > 20.0**2).reshape(-1)
    np.testing.assert_array_equal(u2.reshape(-1, d)[far], u.reshape(-1, d)[far])
    # consistent already: unchanged
    small = 0.2 * u
    same, _, _ = grid.consistent_inverse(small, border)
    assert same is small


# ---------------------------------------------------------------------------
# registration: exactness on real data
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rat_pair():
    from tests.conftest import data_path

    f = _read(data_path("rat_lung", "RatLungSlice1.mha"))
    m = _read(data_path("rat_lung", "RatLungSlice2.mha"))
    return f, m


@pytest.fixture(scope="module")
def rat_result(rat_pair) -> SyNResult:
    f, m = rat_pair
    return syn_register(f, m, n_iterations=(30, 30, 15))


def test_rat_lung_improves_and_inverse_is_exact(rat_pair, rat_result) -> None:
    f, m = rat_pair
    r = rat_result
    before = _ncc(f.array, m.array)
    after = _ncc(f.array, resample(m, r.forward, reference=f).array)
    after_inv = _ncc(m.array, resample(f, r.inverse, reference=m).array)
    assert after > before + 0.02 and after_inv > before + 0.02, (before, after, after_inv)
    pts = f.voxel_points()
    err = np.linalg.norm(r.inverse.transform_points(r.forward.transform_points(pts)) - pts, axis=1) / f.spacing.min()
    assert err.mean() < 0.05 and err.max() < 0.5, (err.mean(), err.max())
    err2 = np.linalg.norm(r.forward.transform_points(r.inverse.transform_points(pts)) - pts, axis=1) / f.spacing.min()
    assert err2.mean() < 0.05 and err2.max() < 0.5, (err2.mean(), err2.max())
    for t in (r.forward, r.inverse):
        assert jacobian_determinant(t, f).array.min() > 0
    assert r.inverse_residual <= 1e-3
    assert len(r.history) == r.n_iterations and r.final_value == r.history[-1]


def test_swapping_the_images_gives_the_inverse(rat_pair, rat_result) -> None:
    f, m = rat_pair
    back = syn_register(m, f, n_iterations=(30, 30, 15))
    pts = f.voxel_points()
    err = np.linalg.norm(back.forward.transform_points(rat_result.forward.transform_points(pts)) - pts, axis=1)
    assert err.mean() / f.spacing.min() < 0.1, err.mean()


def test_recovers_a_known_smooth_deformation(rat_pair) -> None:
    f, _ = rat_pair
    moving, truth = _warp_known(f, 3.0, seed=3)
    r = syn_register(f, moving, metric="mse", n_iterations=(30, 30, 20))
    pts = f.voxel_points()
    inner = np.all((f.physical_to_index(pts) > 15) & (f.physical_to_index(pts) < np.array(f.size) - 16), axis=1)
    # moving = fixed o truth, so the moving -> fixed map is truth itself
    expected = np.array([truth.TransformPoint(tuple(p)) for p in pts[inner]])
    err0 = np.linalg.norm(expected - pts[inner], axis=1).mean()
    err = np.linalg.norm(r.inverse.transform_points(pts[inner]) - expected, axis=1).mean()
    assert err < 0.35 * err0, (err, err0)


def test_affine_initial_transform_and_masks(shared_data) -> None:
    fixed = _read(shared_data("elastix_example", "fixed.mhd"))
    moving = _read(shared_data("elastix_example", "moving.mhd"))
    fmask = _read(shared_data("elastix_example", "mask_fixed.mhd"))
    mmask = _read(shared_data("elastix_example", "mask_moving.mhd"))
    aff = AffineTransform(2)
    aff.center = fixed.physical_center()
    aff.parameters = [1.0, 0.0, 0.0, 1.0, 1.5, -2.0]
    r = syn_register(fixed, moving, initial_transform=aff, metric="mattes", fixed_mask=fmask,
                     moving_mask=mmask, n_iterations=(20, 10, 0))
    assert r.forward[0].parameters.tolist() == aff.parameters.tolist()
    assert r.forward[0] is not aff
    pts = fixed.voxel_points()[::7]
    err = np.linalg.norm(r.inverse.transform_points(r.forward.transform_points(pts)) - pts, axis=1)
    assert err.mean() < 0.05
    assert r.history[-1] < r.history[0]


def test_write_transform_round_trip_through_simpleitk(rat_result, rat_pair, tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    from regframe.transforms.io import read_transform, write_transform

    f, _ = rat_pair
    pts = f.voxel_points()[::53]
    for name, t in (("fwd", rat_result.forward), ("inv", rat_result.inverse)):
        for ext in ("tfm", "h5"):
            path = tmp_path / f"{name}.{ext}"
            write_transform(t, path)
            st_t = sitk.ReadTransform(str(path))
            kinds = [st_t.GetNthTransform(i).GetName() for i in range(st_t.GetNumberOfTransforms())]
            assert "DisplacementFieldTransform" in kinds
            q = np.array([st_t.TransformPoint(tuple(p)) for p in pts])
            np.testing.assert_allclose(q, t.transform_points(pts), atol=1e-9)
            np.testing.assert_allclose(read_transform(path).transform_points(pts), t.transform_points(pts), atol=1e-12)


# ---------------------------------------------------------------------------
# determinism, schedule, errors
# ---------------------------------------------------------------------------
def test_bit_identical_for_one_and_two_threads() -> None:
    code = textwrap.dedent(
        """
        import hashlib, json, numba, numpy as np
        from scipy import ndimage
        from regframe import Image
        from regframe.registration import LevelSchedule
        from regframe.registration.syn import syn_register
        rng = np.random.default_rng(4)
        a = ndimage.gaussian_filter(rng.random((40, 36, 30)), 2)
        b = ndimage.shift(a, (0.8, -0.5, 0.6), order=1, mode="nearest") + 0.01 * rng.random(a.shape)
        out = {}
        for metric in ("ncc", "mse", "mattes"):
            rows = []
            for th in (1, 2):
                numba.set_num_threads(th)
                r = syn_register(Image(a), Image(b), metric=metric, n_iterations=(3, 2),
                                 schedule=LevelSchedule((2, 1), (1.0, 0.0)))
                rows.append([hashlib.sha256(r.forward[0].parameters.tobytes()).hexdigest(),
                             hashlib.sha256(r.inverse[0].parameters.tobytes()).hexdigest(), repr(r.history)])
            out[metric] = rows
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True, env=env)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for metric, (one, two) in out.items():
        assert one == two, metric


def test_default_schedule_adapts_to_size() -> None:
    assert default_syn_schedule(Image(np.zeros((256, 256)))).shrink_factors == (4, 2, 1)
    assert default_syn_schedule(Image(np.zeros((40, 50)))).shrink_factors == (2, 1)
    assert default_syn_schedule(Image(np.zeros((20, 50)))).shrink_factors == (1,)


def test_bad_inputs_raise_typed_errors(rng) -> None:
    a = Image(_smooth_random(rng, (20, 20)))
    with pytest.raises(InvalidInputError, match="metric"):
        syn_register(a, a, metric="nmi")
    with pytest.raises(InvalidInputError, match="linear"):
        syn_register(a, a, initial_transform=_bent(a))
    with pytest.raises(ShapeError):
        syn_register(a, Image(np.zeros((4, 4, 4))))
    with pytest.raises(InvalidInputError, match="constant"):
        syn_register(a, Image(np.ones((20, 20))))
    with pytest.raises(InvalidInputError, match="empty"):
        syn_register(a, a, fixed_mask=Image(np.zeros((20, 20))))
    with pytest.raises(InvalidInputError, match="n_iterations"):
        syn_register(a, a, n_iterations=(1, 2, 3, 4))
    with pytest.raises(InvalidInputError, match="step"):
        syn_register(a, a, step=0.0)
    with pytest.raises(EmptyMaskError):
        DenseMetric("mse").evaluate(np.zeros(4), np.zeros(4), (2, 2), np.zeros(4))
    before = a.array.copy()
    syn_register(a, a, n_iterations=1)
    assert np.array_equal(a.array, before)


def _bent(image: Image) -> BSplineTransform:
    t = BSplineTransform.from_domain(image, mesh_size=2)
    t.parameters = np.linspace(-1, 1, t.n_parameters)
    return t


def _disc_to_c(n: int = 96) -> tuple[Image, Image]:
    """Fixed: a C (a thick ring open to the right); moving: the disc it was cut from (scipy, not regframe)."""
    from scipy import ndimage

    y, x = np.mgrid[0:n, 0:n].astype(float)
    c, r = (n - 1) / 2, 0.3 * n
    disc = (x - c) ** 2 + (y - c) ** 2 <= r * r
    hole = ((x - c) ** 2 + (y - c) ** 2 <= (0.55 * r) ** 2) | ((x > c) & (np.abs(y - c) < 0.25 * r))
    return (Image(ndimage.gaussian_filter((disc & ~hole).astype(float), 1.0)),
            Image(ndimage.gaussian_filter(disc.astype(float), 1.0)))


def test_warns_when_the_fields_cannot_be_inverted() -> None:
    """A disc pulled into a C without fold prevention compresses beyond its grid: no silent failure."""
    from regframe.errors import RegframeWarning

    fixed, moving = _disc_to_c()
    with pytest.warns(RegframeWarning, match="could not be inverted"):
        res = syn_register(fixed, moving, metric="mse", n_iterations=(150, 100, 100), min_jacobian=0.0)
    assert res.inverse_residual > 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smooth = syn_register(fixed, moving, metric="mse", n_iterations=(150, 100, 100), total_sigma=1.0,
                              min_jacobian=0.0)
    assert smooth.inverse_residual <= 0.01


def test_default_fold_prevention_keeps_the_disc_to_c_invertible() -> None:
    """Defaults on the disc -> C: det J > 0 everywhere, exact inverse, and the C is still reached."""
    fixed, moving = _disc_to_c()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = syn_register(fixed, moving, metric="mse")
    assert res.inverse_residual <= 0.01
    for t in (res.forward, res.inverse):
        assert jacobian_determinant(t, fixed).array.min() > 0
    pts = fixed.voxel_points()
    err = np.linalg.norm(res.inverse.transform_points(res.forward.transform_points(pts)) - pts, axis=1)
    assert err.mean() < 0.05 and err.max() < 0.5, (err.mean(), err.max())
    ssd0 = np.mean((fixed.array - moving.array) ** 2)
    ssd = np.mean((fixed.array - resample(moving, res.forward, reference=fixed).array) ** 2)
    assert ssd < 0.9 * ssd0, (ssd, ssd0)
