"""The fused B-spline metric paths equal the general engine path.

``MeanSquares``, ``MattesMutualInformation`` and ``NormalizedCorrelation``
with exactly a :class:`BSplineTransform`, the linear interpolator and exact
gradients run fused kernels (:mod:`regframe.metrics._bspline_kernels`, and
the separable :mod:`regframe.metrics._bspline_grid_kernels` for voxel-centre
samples on an aligned grid) instead of ``transform_points`` -> interpolator
-> ``jacobian_vjp``.  These tests switch the fused path off
(``metric._fused = False``) to get the general path and compare: values to
1e-12 and gradients to 1e-10 (relative), in 2-D and 3-D, with masks and
random sampling, on oblique and aligned grids; the fused point map is
bit-identical to ``BSplineTransform.transform_points``; the separable
kernels equal the per-sample ones; results are bit-identical for 1 and 2
numba threads.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from regframe import Image
from regframe.metrics import (
    FullSampler,
    MattesMutualInformation,
    MeanSquares,
    NormalizedCorrelation,
    RandomSampler,
)
from regframe.metrics import _bspline_map_kernels as _k
from regframe.testing.strategies import smooth_arrays
from regframe.transforms.bspline import BSplineTransform


class _SubBSpline(BSplineTransform):
    """A subclass: must not take the fused path (it may override the maths)."""


def _problem(ndim: int, seed: int, *, amplitude: float = 0.8, cls: type = BSplineTransform,
             oblique: bool = True):
    """Fixed and moving images and a B-spline on the fixed domain (oblique or axis-aligned grid)."""
    shape = (26, 30) if ndim == 2 else (12, 14, 16)
    rng = np.random.default_rng(seed)
    theta = 0.2 if oblique else 0.0
    if ndim == 2:
        direction = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        spacing, origin = (0.9, 1.2), (-3.0, 2.0)
    else:
        direction = np.array(
            [[np.cos(theta), -np.sin(theta), 0.0], [np.sin(theta), np.cos(theta), 0.0], [0.0, 0.0, 1.0]]
        )
        spacing, origin = (1.1, 0.9, 1.3), (2.0, -1.0, 0.5)
    fixed = Image(smooth_arrays(shape, seed), spacing=spacing, origin=origin, direction=direction)
    moving = Image(
        smooth_arrays(shape, seed + 7), spacing=spacing, origin=np.asarray(origin) + 0.4,
        direction=direction,
    )
    proto = BSplineTransform.from_domain(fixed, mesh_size=[4] * ndim)
    t = cls(ndim)
    t.fixed_parameters = proto.fixed_parameters
    t.parameters = amplitude * rng.standard_normal(t.n_parameters)
    return fixed, moving, t


def _masks(fixed: Image, moving: Image, seed: int):
    rng = np.random.default_rng(seed)
    fm = rng.random(fixed.shape) > 0.2
    mm = np.ones(moving.shape, dtype=bool)
    mm[tuple(slice(0, s // 3) for s in moving.shape)] = False
    return fm, mm


def _both_paths(metric):
    assert metric._bspline_fast_path(metric._state, True)
    v_f, g_f = metric.value_and_gradient()
    n_f = metric.n_valid
    val_f = metric.value()
    metric._fused = False
    v_g, g_g = metric.value_and_gradient()
    n_g = metric.n_valid
    val_g = metric.value()
    metric._fused = True
    return (v_f, g_f, n_f, val_f), (v_g, g_g, n_g, val_g)


def _assert_close(fused, general):
    (v_f, g_f, n_f, val_f), (v_g, g_g, n_g, val_g) = fused, general
    assert n_f == n_g
    assert abs(v_f - v_g) <= 1e-12 * abs(v_g)
    assert abs(val_f - val_g) <= 1e-12 * abs(val_g)
    assert abs(val_f - v_f) <= 1e-12 * abs(v_g)
    scale = np.max(np.abs(g_g))
    assert scale > 0.0
    assert np.max(np.abs(g_f - g_g)) <= 1e-10 * scale


@pytest.mark.parametrize("metric_cls", [MeanSquares, MattesMutualInformation, NormalizedCorrelation])
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("case", ["full", "random", "masks", "random+masks", "jitter"])
@pytest.mark.parametrize("grid", ["oblique", "aligned"])
def test_fused_equals_general(metric_cls, ndim: int, case: str, grid: str) -> None:
    fixed, moving, t = _problem(ndim, seed=3 + ndim, oblique=grid == "oblique")
    sampler = FullSampler()
    if "random" in case:
        sampler = RandomSampler(0.5, seed=11)
    elif case == "jitter":
        sampler = RandomSampler(0.4, seed=5, jitter=True)
    fm = mm = None
    if "masks" in case:
        fm, mm = _masks(fixed, moving, seed=ndim)
    metric = metric_cls().initialize(fixed, moving, t, sampler=sampler, fixed_mask=fm, moving_mask=mm)
    # an axis-aligned grid and voxel-centre samples take the separable (table) kernels
    separable = grid == "aligned" and case != "jitter"
    assert (metric._grid_support(metric._state) is not None) == separable
    fused, general = _both_paths(metric)
    # Some samples must fall outside the moving image / mask for the test to mean something.
    assert fused[2] < metric.n_samples
    _assert_close(fused, general)


@pytest.mark.parametrize("ndim", [2, 3])
def test_fused_point_map_bit_identical(ndim: int) -> None:
    fixed, _, t = _problem(ndim, seed=ndim)
    rng = np.random.default_rng(ndim)
    pts = fixed.voxel_points()
    # Include points outside the B-spline region (identity there).
    extra = pts[: 50] + 40.0 * rng.standard_normal((50, ndim))
    pts = np.ascontiguousarray(np.vstack([pts, extra]))
    ours = _k.bspline_transform_points(pts, t.parameters, t.n_control_points, *t._kernel_grid(), 4096)
    ref = t.transform_points(pts)
    np.testing.assert_array_equal(ours, ref)


def test_fast_path_selection() -> None:
    fixed, moving, t = _problem(2, seed=1)
    m = MeanSquares().initialize(fixed, moving, t)
    assert m._bspline_fast_path(m._state, True)
    cd = MeanSquares(gradient="central_difference").initialize(fixed, moving, t)
    assert not cd._bspline_fast_path(cd._state, True)
    bs = MeanSquares().initialize(fixed, moving, t, interpolator="bspline")
    assert not bs._bspline_fast_path(bs._state, True)
    _, _, sub = _problem(2, seed=1, cls=_SubBSpline)
    ms = MeanSquares().initialize(fixed, moving, sub)
    assert not ms._bspline_fast_path(ms._state, True)
    # The subclass (general path) and the exact class (fused path) agree.
    _assert_close(
        (*m.value_and_gradient(), m.n_valid, m.value()),
        (*ms.value_and_gradient(), ms.n_valid, ms.value()),
    )


@pytest.mark.parametrize("metric_cls", [MeanSquares, MattesMutualInformation, NormalizedCorrelation])
@pytest.mark.parametrize("oblique", [True, False])
def test_gradient_matches_finite_differences(metric_cls, oblique: bool) -> None:
    fixed, moving, t = _problem(2, seed=9, amplitude=0.3, oblique=oblique)
    metric = metric_cls().initialize(fixed, moving, t)
    assert (metric._grid_support(metric._state) is None) == oblique
    _, grad = metric.value_and_gradient()
    scale = np.max(np.abs(grad))
    assert scale > 0.0
    p0 = t.parameters.copy()
    rng = np.random.default_rng(2)
    for k in rng.choice(t.n_parameters, 6, replace=False):
        h = 1e-6
        p = p0.copy()
        p[k] += h
        t.parameters = p
        up = metric.value()
        p[k] -= 2 * h
        t.parameters = p
        dn = metric.value()
        t.parameters = p0
        fd = (up - dn) / (2 * h)
        assert abs(fd - grad[k]) <= 1e-5 * scale


def test_bit_identical_across_threads() -> None:
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 numba threads")
    shape = (300, 260)  # 78 000 samples: 19 scatter chunks (162 parameters), 10 histogram chunks
    fixed = Image(smooth_arrays(shape, 1), spacing=(0.8, 1.0))
    moving = Image(smooth_arrays(shape, 2), spacing=(0.8, 1.0), origin=(0.5, -0.3))
    t = BSplineTransform.from_domain(fixed, mesh_size=[6, 6])
    t.parameters = 1.5 * np.random.default_rng(0).standard_normal(t.n_parameters)
    # separable kernels: full sampling (row-wise transpose), sparse samples (per-sample scatter);
    # jitter: per-sample supports
    samplers = (None, RandomSampler(0.01, seed=3), RandomSampler(0.3, seed=3, jitter=True))
    metrics = [cls().initialize(fixed, moving, t, moving_mask=mask, sampler=sampler)
               for cls in (MeanSquares, MattesMutualInformation, NormalizedCorrelation)
               for mask in (np.ones(shape, dtype=bool), None)
               for sampler in samplers]
    supports = [m._grid_support(m._state) for m in metrics[:3]]
    assert supports[0].rowwise and not supports[1].rowwise and supports[2] is None
    before = numba.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            row = []
            for metric in metrics:
                v, g = metric.value_and_gradient()
                row += [v, g.tobytes(), metric.value()]
            out.append(row)
    finally:
        numba.set_num_threads(before)
    assert out[0] == out[1]


def test_mattes_support_cache_and_relocation_give_identical_gradients(monkeypatch) -> None:
    """Pass 2 reads the supports pass 1 stored, or locates them again above the memory budget."""
    import regframe.metrics.mattes as mattes_module

    fixed, moving, t = _problem(3, 5)
    metric = MattesMutualInformation().initialize(fixed, moving, t, sampler=RandomSampler(0.7, seed=2))
    cached = metric.value_and_gradient()
    monkeypatch.setattr(mattes_module, "_SUPPORT_CACHE_LIMIT", 0)
    relocated = metric.value_and_gradient()
    assert cached[0] == relocated[0]
    assert cached[1].tobytes() == relocated[1].tobytes()


@pytest.mark.parametrize("metric_cls", [MeanSquares, MattesMutualInformation, NormalizedCorrelation])
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sampler", [None, RandomSampler(0.5, seed=4), RandomSampler(0.04, seed=4)])
def test_separable_kernels_equal_per_sample_kernels(monkeypatch, metric_cls, ndim, sampler) -> None:
    """Same mapped points (value bit-identical); gradient from either transpose equal to 1e-12."""
    import dataclasses

    from regframe.metrics.base import ImageMetric

    fixed, moving, t = _problem(ndim, seed=20 + ndim, oblique=False)
    _, mm = _masks(fixed, moving, seed=ndim)
    metric = metric_cls().initialize(fixed, moving, t, sampler=sampler, moving_mask=mm)
    support = metric._grid_support(metric._state)
    assert support is not None
    results = {}
    for rowwise in (True, False):
        metric._grid_cache = (metric._state.points, metric._grid_cache[1],
                              dataclasses.replace(support, rowwise=rowwise))
        results[rowwise] = (*metric.value_and_gradient(), metric.value(), metric.n_valid)
    monkeypatch.setattr(ImageMetric, "_grid_support", lambda self, st: None)
    per_sample = (*metric.value_and_gradient(), metric.value(), metric.n_valid)
    assert 0 < per_sample[3] < metric.n_samples
    scale = np.max(np.abs(per_sample[1]))
    for res in results.values():
        assert res[0] == per_sample[0] and res[2] == per_sample[2] and res[3] == per_sample[3]
        assert np.max(np.abs(res[1] - per_sample[1])) <= 1e-12 * scale


def test_separable_support_tables_match_per_sample_supports() -> None:
    """The tables hold, per axis, the support the per-sample locate computes, bit for bit."""
    from regframe.metrics._bspline_grid import grid_support

    fixed, _, t = _problem(3, seed=2, oblique=False)
    t = BSplineTransform.from_domain(fixed, mesh_size=[3, 4, 2])
    samples = FullSampler().sample(fixed)
    support = grid_support(samples, fixed.size, t)
    origin, gp2i, grid_size, max_limit, band_lo, band_hi, nudged = t._kernel_grid()
    wa, wb, wc = np.empty(4), np.empty(4), np.ones(4)
    gx, gxy = int(grid_size[0]), int(grid_size[0] * grid_size[1])
    n_inside = 0
    for s in range(0, samples.n_samples, 7):
        x = samples.points[s]
        inside, base = _k._bspline_locate(x[0], x[1], x[2], 3, *origin, gp2i, gx, gxy, max_limit,
                                          band_lo, band_hi, nudged, wa, wb, wc)
        i, j, k = support.index[s]
        assert inside == (support.ok[0, i] and support.ok[1, j] and support.ok[2, k])
        if inside:
            n_inside += 1
            assert base == support.start[0, i] + support.start[1, j] * gx + support.start[2, k] * gxy
            for a, (w, idx) in enumerate(((wa, i), (wb, j), (wc, k))):
                assert w.tobytes() == support.weights[a, idx].tobytes()
    assert n_inside > 0
    # an oblique grid has no separable supports: the kernels fall back to per-sample supports
    oblique_fixed, _, oblique_t = _problem(3, seed=2, oblique=True)
    assert grid_support(FullSampler().sample(oblique_fixed), oblique_fixed.size, oblique_t) is None
