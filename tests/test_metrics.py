"""Metric engine and built-in metrics: gradients, definitions, fused vs general path, errors.

Gradients are checked against central differences (through ``update_parameters``)
with :func:`regframe.testing.metric_checks.check_metric`: MeanSquares and
NormalizedCorrelation to 1e-6 relative, Mattes to 1e-4, on smooth asymmetric
images (B-spline interpolation, or linear interpolation with steps far below a
voxel at generic sample positions).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regframe import AffineTransform, CompositeTransform, Euler2DTransform, Image, TranslationTransform
from regframe import VersorRigid3DTransform
from regframe.errors import (
    ConstantImageError,
    EmptyMaskError,
    InvalidInputError,
    NoOverlapError,
    NonFiniteError,
    ShapeError,
)
from regframe.interpolators import NotInitializedError
from regframe.metrics import (
    FullSampler,
    MattesMutualInformation,
    MeanSquares,
    NormalizedCorrelation,
    PointwiseMetric,
    RandomSampler,
    RegularSampler,
)
from regframe.testing.metric_checks import check_metric
from regframe.testing.strategies import smooth_arrays
from regframe.transforms.bspline import BSplineTransform

REPO = Path(__file__).resolve().parents[1]
TOL = {"MeanSquares": 1e-6, "NormalizedCorrelation": 1e-6, "MattesMutualInformation": 1e-4}


def make_metric(name: str, **kw):
    if name == "MattesMutualInformation":
        return MattesMutualInformation(n_bins=24, **kw)
    return {"MeanSquares": MeanSquares, "NormalizedCorrelation": NormalizedCorrelation}[name](**kw)


def image_pair(ndim: int, seed: int = 3, oblique: bool = True, pad: int = 4):
    """Smooth asymmetric fixed/moving pair; the moving image is larger than the fixed one.

    Two far corner voxels of the moving image hold its extreme intensities, so
    Mattes' moving range is never reached by the (interior) samples and no
    sample is rejected discontinuously while differencing.
    """
    shape = (14, 15, 16)[:ndim] if ndim == 3 else (22, 25)
    big = tuple(s + 2 * pad for s in shape)
    a = smooth_arrays(big, seed)
    b = 0.6 * smooth_arrays(big, seed + 1, n_blobs=3) + 0.4 * a
    b[(0,) * ndim] = 1.5 * b.max()
    b[(-1,) * ndim] = b.min() - 0.5 * np.ptp(b)
    spacing = np.array([1.1, 0.9, 1.3][:ndim])
    direction = np.eye(ndim)
    if oblique:
        c, s = np.cos(0.15), np.sin(0.15)
        direction[:2, :2] = [[c, -s], [s, c]]
    fixed = Image(a[tuple(slice(pad, -pad) for _ in shape)], spacing=spacing,
                  origin=direction @ (pad * spacing), direction=direction)
    moving = Image(b, spacing=spacing, direction=direction)
    return fixed, moving


def make_transform(kind: str, fixed: Image, rng: np.random.Generator):
    d = fixed.ndim
    c = fixed.physical_center()
    if kind == "translation":
        t = TranslationTransform(d)
        t.parameters = 0.4 * rng.standard_normal(d)
        return t
    if kind == "affine":
        t = AffineTransform(d)
        t.center = c
        t.parameters = np.r_[(np.eye(d) + 0.03 * rng.standard_normal((d, d))).ravel(), 0.4 * rng.standard_normal(d)]
        return t
    if kind == "rigid":
        if d == 2:
            t = Euler2DTransform()
            t.fixed_parameters = c
            t.parameters = [0.05, 0.3, -0.4]
        else:
            t = VersorRigid3DTransform()
            t.fixed_parameters = c
            t.parameters = [0.02, -0.03, 0.04, 0.3, -0.2, 0.4]
        return t
    if kind == "bspline":
        t = BSplineTransform.from_domain(fixed, mesh_size=2)
        t.parameters = 0.3 * rng.standard_normal(t.n_parameters)
        return t
    if kind == "composite":
        outer = AffineTransform(d)
        outer.center = c
        outer.parameters = np.r_[(1.01 * np.eye(d)).ravel(), np.full(d, 0.2)]
        comp = CompositeTransform(d)
        comp.add_transform(outer)
        comp.add_transform(make_transform("affine", fixed, rng))
        return comp
    raise ValueError(kind)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", ["translation", "affine", "rigid", "bspline", "composite"])
@pytest.mark.parametrize("name", list(TOL))
def test_gradient_matches_central_differences_bspline_interpolation(ndim, kind, name):
    fixed, moving = image_pair(ndim)
    transform = make_transform(kind, fixed, np.random.default_rng(7))
    metric = make_metric(name).initialize(fixed, moving, transform, interpolator="bspline")
    p0 = transform.parameters
    indices = None
    if kind == "bspline":  # a subset of the (many) coefficients; random directions cover all
        _, grad = metric.value_and_gradient()
        indices = np.argsort(-np.abs(grad))[:12]
    report = check_metric(metric, indices=indices, n_directions=2, rtol=TOL[name])
    assert report.passed, str(report)
    assert metric.n_valid == metric.n_samples  # the moving image covers every sample
    np.testing.assert_array_equal(transform.parameters, p0)  # the checker restores them


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", list(TOL))
@pytest.mark.parametrize("gradient", ["exact", "central_difference"])
def test_fused_linear_path_gradient(ndim, name, gradient):
    """Linear interpolation and the fused kernels: exact gradient = derivative of the value.

    The linear interpolant is smooth between voxel centres, so the steps are
    chosen smaller than the distance of every mapped sample to the nearest
    grid line: central differences then never cross a kink.  The
    central-difference mode is ITK's approximation and only needs to point
    the same way (it differs from the derivative by O(spacing^2)).  With such
    tiny steps the rounding noise of the summed value (~1e-11 relative)
    limits the differences, so components below 1 % of the gradient norm are
    judged against 1 % of the norm (``floor_fraction=1e-2``).
    """
    fixed, moving = image_pair(ndim)
    transform = make_transform("affine", fixed, np.random.default_rng(11))
    metric = make_metric(name, gradient=gradient).initialize(fixed, moving, transform)
    assert metric._linear_fast_path(metric._state)
    ci = moving.physical_to_index(transform.transform_points(fixed.voxel_points()))
    margin = float(np.min(np.abs(ci - np.round(ci))))
    step = 0.4 * margin * float(np.min(moving.spacing)) / np.sqrt(transform.n_parameters)
    assert step > 1e-8
    if gradient == "exact":
        report = check_metric(metric, step=step, rtol=TOL[name], floor_fraction=1e-2)
        assert report.passed, str(report)
    else:
        report = check_metric(metric, step=step, rtol=1.0, mode="coordinate")
        _, grad = metric.value_and_gradient()
        cosine = grad @ report.numeric / (np.linalg.norm(grad) * np.linalg.norm(report.numeric))
        assert cosine > 0.9


SETTINGS = settings(max_examples=8, deadline=None)


@SETTINGS
@given(
    ndim=st.sampled_from([2, 3]),
    name=st.sampled_from(list(TOL)),
    seed=st.integers(0, 10_000),
    scale=st.floats(0.0, 0.05),
    shift=st.floats(-0.8, 0.8),
)
def test_gradient_hypothesis_affine(ndim, name, seed, scale, shift):
    """Random asymmetric smooth images and random affine transforms (B-spline interpolation)."""
    fixed, moving = image_pair(ndim, seed=seed, oblique=bool(seed % 2))
    rng = np.random.default_rng(seed)
    t = AffineTransform(ndim)
    t.center = fixed.physical_center() + rng.uniform(-3, 3, ndim)
    t.parameters = np.r_[(np.eye(ndim) + scale * rng.standard_normal((ndim, ndim))).ravel(), shift * rng.standard_normal(ndim)]
    metric = make_metric(name).initialize(fixed, moving, t, interpolator="bspline")
    report = check_metric(metric, rtol=TOL[name], seed=seed)
    assert report.passed, str(report)


@SETTINGS
@given(ndim=st.sampled_from([2, 3]), name=st.sampled_from(list(TOL)), seed=st.integers(0, 10_000))
def test_gradient_hypothesis_bspline_transform(ndim, name, seed):
    fixed, moving = image_pair(ndim, seed=seed)
    rng = np.random.default_rng(seed)
    t = BSplineTransform.from_domain(fixed, mesh_size=int(rng.integers(1, 3)))
    t.parameters = 0.4 * rng.standard_normal(t.n_parameters)
    metric = make_metric(name).initialize(fixed, moving, t, interpolator="bspline")
    report = check_metric(metric, mode="random", n_directions=3, rtol=TOL[name], seed=seed)
    assert report.passed, str(report)


def test_check_metric_detects_a_wrong_gradient():
    class WrongDerivative(PointwiseMetric):
        def pointwise_value(self, f, m):
            return (m - f) ** 2

        def pointwise_derivative(self, f, m):
            return 2.1 * (m - f)  # 5 % too large

    fixed, moving = image_pair(2)
    t = make_transform("affine", fixed, np.random.default_rng(1))
    report = check_metric(WrongDerivative().initialize(fixed, moving, t, interpolator="bspline"))
    assert not report.passed
    assert 0.03 < report.max_relative_error < 0.1
    assert report.direction_error is not None and report.direction_error > 0.03
    with pytest.raises(AssertionError):
        check_metric(WrongDerivative().initialize(fixed, moving, t, interpolator="bspline"), raise_on_failure=True)


def test_check_metric_scales_set_the_steps():
    fixed, moving = image_pair(2)
    t = make_transform("affine", fixed, np.random.default_rng(1))
    metric = MeanSquares().initialize(fixed, moving, t, interpolator="bspline")
    scales = np.array([400.0, 400.0, 400.0, 400.0, 1.0, 1.0])
    report = check_metric(metric, scales=scales, step=1e-4)
    np.testing.assert_allclose(report.steps, 1e-4 / np.sqrt(scales))
    assert report.passed, str(report)


# --------------------------------------------------------------------------- definitions


def naive_metrics(f, m, grad_m, jac, n_bins, m_range, f_range):
    """Direct numpy formulas (itk_design.md 3.1, 3.2, 3.4) on valid samples; true gradients."""
    gj = np.einsum("sd,sdp->sp", grad_m, jac)
    n = len(f)
    out = {"MeanSquares": (np.mean((f - m) ** 2), 2.0 * (m - f) @ gj / n)}
    f1, m1 = f - f.mean(), m - m.mean()
    fm, f2, m2 = f1 @ m1, f1 @ f1, m1 @ m1
    out["NormalizedCorrelation"] = (-fm * fm / (f2 * m2), -2 * fm / (f2 * m2) * (f1 - fm / m2 * m1) @ gj)
    b = n_bins
    bsf = (f_range[1] - f_range[0]) / (b - 4)
    bsm = (m_range[1] - m_range[0]) / (b - 4)
    tf = f / bsf - (f_range[0] / bsf - 2)
    tm = m / bsm - (m_range[0] / bsm - 2)
    i_f = np.clip(np.trunc(tf).astype(int), 2, b - 3)
    i_m = np.clip(np.trunc(tm).astype(int), 2, b - 3)

    def b3(u):
        a = np.abs(u)
        return np.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))

    def db3(u, h=1e-6):
        return (b3(u + h) - b3(u - h)) / (2 * h)

    joint = np.zeros((b, b))
    for k in range(-1, 3):
        np.add.at(joint, (i_f, i_m + k), b3(i_m + k - tm))
    p = joint / joint.sum()
    pf = np.bincount(i_f, minlength=b) / joint.sum()
    pm = p.sum(axis=0)
    eps = np.finfo(float).eps
    ok = (p > eps) & (pm[None] > eps) & (pf[:, None] > eps)
    r = np.zeros((b, b))
    r[ok] = np.log(p[ok] / np.broadcast_to(pm[None], p.shape)[ok])
    mi = np.sum(p[ok] * (r[ok] - np.log(np.broadcast_to(pf[:, None], p.shape)[ok])))
    w = sum(db3(i_m + k - tm) * r[i_f, i_m + k] for k in range(-1, 3))
    out["MattesMutualInformation"] = (-mi, (w @ gj) / (bsm * n))
    return out


@pytest.mark.parametrize("ndim", [2, 3])
def test_values_and_gradients_match_naive_formulas(ndim):
    from regframe.interpolators import LinearInterpolator

    fixed, moving = image_pair(ndim)
    t = make_transform("affine", fixed, np.random.default_rng(5))
    x = fixed.voxel_points()
    y = t.transform_points(x)
    m, g, inside = LinearInterpolator().set_image(moving).evaluate_with_gradient(y)
    assert inside.all()
    f = np.asarray(fixed.array, float).ravel()
    ref = naive_metrics(f, m, g, t.jacobian(x), 24, (moving.array.min(), moving.array.max()), (f.min(), f.max()))
    for name in TOL:
        metric = make_metric(name).initialize(fixed, moving, t)
        value, grad = metric.value_and_gradient()
        v_ref, g_ref = ref[name]
        assert value == pytest.approx(v_ref, rel=1e-12, abs=1e-14)
        tol = 1e-6 if name == "MattesMutualInformation" else 1e-10  # numeric B3' in the naive code
        np.testing.assert_allclose(grad, g_ref, rtol=tol, atol=tol * np.abs(g_ref).max())
        np.testing.assert_array_equal(metric.itk_derivative(), -grad)


@pytest.mark.parametrize("name", list(TOL))
def test_identical_images_are_optimal(name):
    fixed, _ = image_pair(2)
    metric = make_metric(name).initialize(fixed, fixed, TranslationTransform(2))
    value, grad = metric.value_and_gradient()
    expected = {"MeanSquares": 0.0, "NormalizedCorrelation": -1.0}.get(name)
    if expected is not None:
        assert value == pytest.approx(expected, abs=1e-12)
    else:  # Mattes: -MI equals minus the (Parzen) entropy of the fixed marginal at best
        assert value < 0
    if name == "MeanSquares":  # zero up to the rounding of the grid-index map
        assert np.abs(grad).max() < 1e-9 * np.abs(fixed.array).max()


def test_correlation_is_invariant_to_positive_affine_intensity_maps():
    fixed, moving = image_pair(3)
    t = make_transform("affine", fixed, np.random.default_rng(2))
    a = NormalizedCorrelation().initialize(fixed, moving, t).value_and_gradient()
    moved = moving.with_array(3.5 * np.asarray(moving.array) - 40.0)
    b = NormalizedCorrelation().initialize(fixed, moved, t).value_and_gradient()
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-9, atol=1e-12 * np.abs(a[1]).max())


# --------------------------------------------------------------------------- fused vs general


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("gradient", ["exact", "central_difference"])
@pytest.mark.parametrize(
    "sampler", [FullSampler(), RandomSampler(0.4, seed=3), RegularSampler(0.3, jitter=True, seed=4)],
    ids=["full", "random", "regular-jitter"],
)
@pytest.mark.parametrize("masked", [False, True])
def test_fused_path_equals_general_path(ndim, gradient, sampler, masked):
    """The fused linear-transform kernels compute what the general engine computes.

    The general path uses ``transform.transform_points``, the metric's own
    sampling kernel and ``transform.jacobian_vjp``; value() must equal the
    value of value_and_gradient().
    """
    fixed, moving = image_pair(ndim)
    t = make_transform("affine", fixed, np.random.default_rng(4))
    mask = None
    if masked:
        mask = np.zeros(moving.shape, bool)
        mask[tuple(slice(5, s - 6) for s in moving.shape)] = True
    for name in TOL:
        metric = make_metric(name, gradient=gradient).initialize(fixed, moving, t, sampler=sampler, moving_mask=mask)
        v1, g1 = metric.value_and_gradient()
        assert metric.value() == v1
        n1 = metric.n_valid
        metric._fused = False
        v2, g2 = metric.value_and_gradient()
        assert metric.n_valid == n1
        assert v1 == pytest.approx(v2, rel=1e-12, abs=1e-14)
        np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-11 * np.abs(g2).max())
        if masked:
            assert n1 < metric.n_samples


@pytest.mark.parametrize("ndim", [2, 3])
def test_moving_mask_on_its_own_grid_fast_path_equals_the_physical_path(ndim):
    """A moving mask on a coarser, shifted and turned grid: the fast path's folded mask index (exact gradient)
    selects the samples the physical path's physical-point test (central differences) selects, so both give one
    value over the same valid samples."""
    fixed, moving = image_pair(ndim)
    t = make_transform("affine", fixed, np.random.default_rng(5))
    turn = np.eye(ndim)
    turn[-2:, -2:] = [[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]
    turn = turn @ moving.direction
    shape = tuple(s // 2 + 1 for s in moving.shape)  # ITK order = numpy order reversed; square enough
    values = np.zeros(shape)
    values[tuple(slice(1, s - 2) for s in shape)] = 1.0
    values[(slice(3, 6),) * ndim] = 0.0  # a hole the samples must see through the mask's own map
    spacing = 1.7 * np.asarray(moving.spacing)
    origin = moving.physical_center() - turn @ (spacing * (np.asarray(shape[::-1]) - 1) / 2) + 0.3
    mask = Image(values, spacing=spacing, origin=origin, direction=turn)
    for name in TOL:
        fast = make_metric(name).initialize(fixed, moving, t, sampler=FullSampler(), moving_mask=mask)
        physical = make_metric(name, gradient="central_difference").initialize(
            fixed, moving, t, sampler=FullSampler(), moving_mask=mask)
        assert fast.value() == pytest.approx(physical.value(), rel=1e-12, abs=1e-14)
        assert fast.n_valid == physical.n_valid < fast.n_samples
        unmasked = make_metric(name).initialize(fixed, moving, t, sampler=FullSampler())
        unmasked.value()
        assert fast.n_valid < unmasked.n_valid


def test_linear_interpolator_kernel_matches_the_interpolator_object():
    """The metric's own linear sampling equals LinearInterpolator (values and exact gradients)."""
    from regframe.interpolators import LinearInterpolator

    class Sub(LinearInterpolator):  # a subclass is evaluated through the object API
        pass

    fixed, moving = image_pair(3)
    t = make_transform("affine", fixed, np.random.default_rng(9))
    for name in TOL:
        a = make_metric(name).initialize(fixed, moving, t)
        b = make_metric(name).initialize(fixed, moving, t, interpolator=Sub())
        assert b._state.interpolator is not None
        va, ga = a.value_and_gradient()
        vb, gb = b.value_and_gradient()
        assert va == pytest.approx(vb, rel=1e-12)
        np.testing.assert_allclose(ga, gb, rtol=1e-10, atol=1e-11 * np.abs(gb).max())


# --------------------------------------------------------------------------- errors


def test_constant_images_raise():
    fixed, moving = image_pair(2)
    flat = fixed.with_array(np.full(fixed.shape, 7.0))
    for metric in (NormalizedCorrelation(), MattesMutualInformation()):
        with pytest.raises(ConstantImageError, match="constant intensity 7"):
            metric.initialize(flat, moving, TranslationTransform(2))
        with pytest.raises(ConstantImageError, match="moving image must vary"):
            metric.initialize(fixed, moving.with_array(np.zeros(moving.shape)), TranslationTransform(2))
    # MeanSquares is defined on constant images
    assert MeanSquares().initialize(flat, moving, TranslationTransform(2)).value() > 0


def test_empty_masks_raise():
    fixed, moving = image_pair(2)
    with pytest.raises(EmptyMaskError, match="at least one voxel"):
        MeanSquares().initialize(fixed, moving, TranslationTransform(2), fixed_mask=np.zeros(fixed.shape))
    with pytest.raises(EmptyMaskError):
        MeanSquares().initialize(fixed, moving, TranslationTransform(2), moving_mask=np.zeros(moving.shape, bool))
    far = Image(np.ones((4, 4)), origin=(500.0, 500.0))  # a mask that misses the image
    with pytest.raises(EmptyMaskError, match="mask geometry"):
        MeanSquares().initialize(fixed, moving, TranslationTransform(2), fixed_mask=far)


@pytest.mark.parametrize("name", list(TOL))
def test_no_overlap_raises_with_fraction_and_hint(name):
    fixed, moving = image_pair(2)
    t = TranslationTransform(2)
    metric = make_metric(name).initialize(fixed, moving, t)
    t.parameters = [1000.0, 0.0]
    for call in (metric.value, metric.value_and_gradient):
        with pytest.raises(NoOverlapError, match="initializer") as info:
            call()
        assert info.value.n_valid == 0 and info.value.n_samples == metric.n_samples
        assert info.value.overlap_fraction == 0.0
    t.parameters = [28.0, 0.0]  # a sliver of overlap
    metric_low = make_metric(name, min_overlap=0.0).initialize(fixed, moving, t)
    metric_low.value()
    frac = metric_low.n_valid / metric_low.n_samples
    assert 0 < frac < 0.3
    strict = make_metric(name, min_overlap=0.5).initialize(fixed, moving, t)
    with pytest.raises(NoOverlapError, match=f"{frac:.2%}"):
        strict.value()


def test_non_finite_images_raise():
    fixed, moving = image_pair(2)
    bad = np.array(moving.array, dtype=float)
    bad[3, 4] = np.nan
    with pytest.raises(NonFiniteError, match="1 NaN/inf"):
        MeanSquares().initialize(fixed, moving.with_array(bad), TranslationTransform(2))
    badf = np.array(fixed.array, dtype=float)
    badf[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="fixed_mask"):
        MeanSquares().initialize(fixed.with_array(badf), moving, TranslationTransform(2))
    mask = np.ones(fixed.shape, bool)
    mask[0, 0] = False  # masking the bad voxel out makes it usable
    assert np.isfinite(MeanSquares().initialize(fixed.with_array(badf), moving, TranslationTransform(2), fixed_mask=mask).value())


def test_argument_errors():
    fixed, moving = image_pair(2)
    with pytest.raises(NotInitializedError, match="initialize"):
        MeanSquares().value()
    with pytest.raises(InvalidInputError, match="'gradient' must be one of"):
        MeanSquares(gradient="sobel")
    with pytest.raises(InvalidInputError, match="n_bins"):
        MattesMutualInformation(n_bins=3)
    with pytest.raises(ShapeError, match="same dimension"):
        MeanSquares().initialize(fixed, moving, TranslationTransform(3))
    with pytest.raises(TypeError, match="regframe.Image"):
        MeanSquares().initialize(np.zeros((4, 4)), moving, TranslationTransform(2))
    with pytest.raises(ShapeError, match="shape"):
        MeanSquares().initialize(fixed, moving, TranslationTransform(2), fixed_mask=np.ones((3, 3)))


def test_inputs_are_not_modified():
    fixed, moving = image_pair(2)
    t = make_transform("affine", fixed, np.random.default_rng(3))
    p0, f0 = t.parameters, t.fixed_parameters
    arr_f, arr_m = np.array(fixed.array), np.array(moving.array)
    metric = MattesMutualInformation().initialize(fixed, moving, t)
    metric.value_and_gradient()
    np.testing.assert_array_equal(t.parameters, p0)
    np.testing.assert_array_equal(t.fixed_parameters, f0)
    np.testing.assert_array_equal(fixed.array, arr_f)
    np.testing.assert_array_equal(moving.array, arr_m)


def test_metrics_on_one_image_share_its_float64_values():
    # a registration initialises several metrics on the same image (guard, stages, a
    # regularized metric's data term): one float64 copy between them, none for a float64
    # image (the pyramid levels), and values equal to the image's (issue 12, memory)
    fixed, moving = image_pair(3)
    moving32 = moving.with_array(moving.array.astype(np.float32))
    t = TranslationTransform(3)
    packs = []
    for m in (moving32, moving):
        a = MeanSquares().initialize(fixed, m, t)
        b = MattesMutualInformation().initialize(fixed, m, t)
        data_a, data_b = a._state.moving_pack.data, b._state.moving_pack.data
        assert data_a is data_b and not data_a.flags.writeable
        np.testing.assert_array_equal(data_a, np.ravel(m.array).astype(np.float64))
        assert a.value() == MeanSquares().initialize(fixed, m.copy(), t).value()
        packs.append(data_a)
    assert not np.shares_memory(packs[0], moving32.array)
    assert np.shares_memory(packs[1], moving.array)  # float64: no copy at all


def test_released_scratch_buffers_are_rebuilt_with_the_same_results():
    # RegistrationMethod drops a finished level's scratch (Mattes keeps 40 bytes per sample
    # between evaluations) so it does not add to the next pyramid level's memory (issue 12)
    fixed, moving = image_pair(3)
    t = make_transform("affine", fixed, np.random.default_rng(2))
    metric = MattesMutualInformation().initialize(fixed, moving, t)
    v0, g0 = metric.value_and_gradient()
    assert metric._caches is not None
    metric._release_buffers()
    assert metric._caches is None
    v1, g1 = metric.value_and_gradient()
    assert v1 == v0 and g1.tobytes() == g0.tobytes()


def test_metric_follows_the_transform_parameters():
    fixed, moving = image_pair(2)
    t = TranslationTransform(2)
    metric = MeanSquares().initialize(fixed, moving, t)
    v0 = metric.value()
    t.parameters = [0.7, -0.3]
    assert metric.value() != v0


# --------------------------------------------------------------------------- example


def test_custom_metric_example():
    spec = importlib.util.spec_from_file_location("custom_metric", REPO / "examples" / "custom_metric.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    errors = module.main()
    assert set(errors) == {"HuberDifference", "CorrelationRatio"}
    assert max(errors.values()) < 1e-6


def test_virtual_domain_is_the_fixed_image_so_scales_come_from_its_corners():
    from regframe.optimizers import PhysicalShiftScales
    from regframe.optimizers.base import _domain_of

    fixed, moving = image_pair(3)
    t = AffineTransform(3)
    t.center = fixed.physical_center()
    metric = make_metric("MeanSquares").initialize(fixed, moving, t, sampler=RandomSampler(0.2, seed=1))
    assert metric.virtual_domain is fixed
    assert _domain_of(metric) is fixed
    estimator = PhysicalShiftScales()
    corners = np.array([[hi if (c >> d) & 1 else 0 for d, hi in enumerate(np.subtract(fixed.size, 1))]
                        for c in range(8)], dtype=float)
    np.testing.assert_array_equal(estimator.estimate(t, fixed),
                                  PhysicalShiftScales(points=fixed.index_to_physical(corners)).estimate(t))
