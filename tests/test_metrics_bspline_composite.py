"""Fused B-spline kernels under a linear initial transform (a B-spline stage's composite).

``CompositeTransform([linear, bspline])`` with only the B-spline optimised is evaluated by the
fused B-spline kernels, the linear part folded into the moving image's index map
(:meth:`ImageMetric._bspline_view`).  Value and gradient must equal the general
(unfused) path's, which is itself checked against central differences elsewhere.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from regframe import AffineTransform, BSplineTransform, CompositeTransform, Image
from regframe.metrics import MattesMutualInformation, MeanSquares, NormalizedCorrelation, RandomSampler
from regframe.testing.metric_checks import check_metric


def _pair(d: int, rng: np.random.Generator):
    n = 20 if d == 2 else 12
    fixed = Image(rng.random((n,) * d).cumsum(0).cumsum(1), spacing=[1.0, 1.2, 0.9][:d],
                  origin=[3.0, -2.0, 1.0][:d])
    moving = Image(1.3 * rng.random((n,) * d).cumsum(0).cumsum(1), spacing=[1.1, 0.9, 1.0][:d],
                   origin=[2.0, -1.0, 0.5][:d])
    mask = Image((rng.random((n,) * d) > 0.2).astype(np.uint8), spacing=moving.spacing, origin=moving.origin)
    return fixed, moving, mask


def _composite(fixed: Image, rng: np.random.Generator) -> CompositeTransform:
    d = fixed.ndim
    lin = AffineTransform(d)
    lin.fixed_parameters = np.full(d, 5.0)  # non-zero centre
    p = lin.parameters
    p[: d * d] += rng.normal(0.0, 0.05, d * d)
    p[d * d :] = rng.normal(0.0, 1.0, d)
    lin.parameters = p
    bs = BSplineTransform.from_domain(fixed, mesh_size=3)
    bs.parameters = rng.normal(0.0, 0.5, bs.n_parameters)
    comp = CompositeTransform(d, [lin, bs])
    comp.set_only_most_recent_transform_to_optimize()
    return comp


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("metric_cls", [MeanSquares, MattesMutualInformation, NormalizedCorrelation])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_composite_equals_general_path(d, metric_cls, masked, rng):
    fixed, moving, mask = _pair(d, rng)
    comp = _composite(fixed, rng)
    out = []
    for fused in (True, False):
        metric = metric_cls()
        metric.initialize(fixed, moving, comp, sampler=RandomSampler(0.5, seed=1),
                          moving_mask=mask if masked else None)
        metric._fused = fused
        if fused:
            assert metric._bspline_fast_path(metric._require("test"), True)
        out.append((metric.value(), *metric.value_and_gradient()))
    (v0, vg0, g0), (v1, vg1, g1) = out
    assert v0 == pytest.approx(v1, rel=1e-12, abs=1e-14) and vg0 == pytest.approx(vg1, rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(g0, g1, rtol=1e-10, atol=1e-12 * np.abs(g1).max())


def test_fused_composite_gradient_matches_central_differences(rng):
    fixed, moving, _ = _pair(2, rng)
    metric = MeanSquares().initialize(fixed, moving, _composite(fixed, rng))
    assert metric._bspline_fast_path(metric._require("test"), True)
    rep = check_metric(metric, step=1e-5, mode="both", indices=np.arange(0, metric.transform.n_parameters, 3),
                       rtol=1e-4, n_directions=2)
    assert rep.passed, str(rep)


def test_not_fused_when_the_rest_is_not_linear_or_the_linear_part_is_optimised(rng):
    fixed, moving, _ = _pair(2, rng)
    comp = _composite(fixed, rng)
    comp.set_all_transforms_to_optimize()
    metric = MeanSquares().initialize(fixed, moving, comp)
    assert not metric._bspline_fast_path(metric._require("test"), True)
    inner = BSplineTransform.from_domain(fixed, mesh_size=2)
    two = CompositeTransform(2, [inner, BSplineTransform.from_domain(fixed, mesh_size=3)])
    two.set_only_most_recent_transform_to_optimize()
    metric = MeanSquares().initialize(fixed, moving, two)
    assert not metric._bspline_fast_path(metric._require("test"), True)


def test_fused_composite_bit_identical_for_1_and_2_threads(rng):
    fixed, moving, _ = _pair(3, rng)
    comp = _composite(fixed, rng)
    results = []
    before = numba.get_num_threads()
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            metric = MattesMutualInformation().initialize(fixed, moving, comp)
            results.append(metric.value_and_gradient())
    finally:
        numba.set_num_threads(before)
    assert results[0][0] == results[1][0]
    assert results[0][1].tobytes() == results[1][1].tobytes()
