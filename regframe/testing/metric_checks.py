"""``check_metric``: a metric's analytic gradient against central differences.

Differences are taken *through* ``transform.update_parameters`` (so versor-type
transforms with a composing update are checked in their own update
coordinates), with one step per parameter derived from parameter scales or,
by default, from the physical shift each parameter causes (as ITK's
physical-shift scales estimator).  Built on :func:`check_gradient`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_float_vector, check_choice
from ..errors import InvalidInputError
from .gradient_checks import GradientCheckReport, check_gradient

__all__ = ["MetricCheckReport", "check_metric", "physical_shift_steps"]


@dataclass
class MetricCheckReport(GradientCheckReport):
    """Outcome of :func:`check_metric` (a :class:`GradientCheckReport` plus context).

    Attributes
    ----------
    value : float
        Metric value at the checked parameters.
    steps : ndarray
        Finite-difference step used for every parameter (update coordinates).
    direction_errors : list of float
        Relative error of the directional derivative for each random
        direction (``direction_error`` is their maximum).
    metric : str
        ``repr`` of the metric.
    """

    value: float = float("nan")
    steps: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    direction_errors: list[float] = field(default_factory=list)
    metric: str = ""

    def __str__(self) -> str:
        return f"check_metric({self.metric}): value {self.value:.10g}\n" + super().__str__()


def physical_shift_steps(
    transform: Any, points: ArrayLike, shift: float = 1e-3, *, probe: float = 1e-4
) -> NDArray[np.float64]:
    """Per-parameter steps that move the points by about ``shift`` (physical units).

    For each parameter ``k`` the transform (a copy) is updated by ``probe``
    along ``e_k`` through ``update_parameters``; the largest displacement of
    ``points`` per unit parameter gives the sensitivity ``s_k`` and the step
    is ``shift / s_k`` (``shift`` where ``s_k`` is 0, e.g. a B-spline
    coefficient with no point in its support).
    """
    pts = np.asarray(points, dtype=np.float64)
    t = transform.copy()
    p0 = t.parameters
    base = t.transform_points(pts)
    steps = np.full(t.n_parameters, float(shift))
    e = np.zeros(t.n_parameters)
    for k in range(t.n_parameters):
        e[k] = probe
        t.parameters = p0
        t.update_parameters(e)
        moved = np.sqrt(np.max(np.sum((t.transform_points(pts) - base) ** 2, axis=1), initial=0.0))
        sens = moved / probe
        if sens > 0:
            steps[k] = shift / sens
        e[k] = 0.0
    return steps


def check_metric(
    metric: Any,
    *,
    scales: ArrayLike | None = None,
    step: float = 1e-4,
    steps: ArrayLike | None = None,
    mode: Literal["coordinate", "random", "both"] = "both",
    indices: ArrayLike | None = None,
    n_directions: int = 1,
    rtol: float = 1e-6,
    floor_fraction: float = 1e-3,
    seed: int = 0,
    extrapolate: bool = True,
    raise_on_failure: bool = False,
) -> MetricCheckReport:
    """Compare ``metric.value_and_gradient()`` with central differences of ``metric.value()``.

    Parameters
    ----------
    metric : Metric
        An *initialised* metric (``metric.transform`` is the transform it
        evaluates).  The transform's parameters are restored on return.
    scales : (P,) array_like, optional
        Parameter scales in ITK's estimator convention (squared physical
        shift per unit parameter); the step of parameter ``k`` is
        ``step / sqrt(scales[k])``.  Default: sensitivities measured on the
        metric's sample points (:func:`physical_shift_steps`), i.e. every
        step moves the samples by about ``step`` mm.
    step : float, default 1e-4
        Physical shift of one step (mm).
    steps : (P,) array_like, optional
        Explicit per-parameter steps (override ``scales`` and ``step``).
    mode : {"coordinate", "random", "both"}, default "both"
        Check every (or every selected) parameter, only directional
        derivatives along random directions (cheap for many parameters), or
        both.
    indices : array_like of int, optional
        Parameters to check in coordinate mode (default all).
    n_directions : int, default 1
        Random directions in "random"/"both" modes.
    rtol : float, default 1e-6
        Tolerance on every relative error.
    floor_fraction : float, default 1e-3
        Components are compared relative to ``max(|a_k|, |n_k|,
        floor_fraction * |gradient|)``.
    seed : int, default 0
        Seed of the random directions.
    extrapolate : bool, default True
        Richardson-extrapolated differences (steps ``h`` and ``h/2``): Mattes
        MI on a 20-voxel phantom is curved enough that a plain central
        difference at 1e-4 mm is off by 1e-5 relative.
    raise_on_failure : bool, default False
        Raise ``AssertionError`` with the report when a check fails.

    Returns
    -------
    MetricCheckReport
        Per-parameter relative errors (``relative_errors``), their maximum,
        directional errors and ``passed``.

    Notes
    -----
    Use smooth images or B-spline interpolation: linear interpolation is
    piecewise linear, and a difference step that crosses a voxel boundary is
    not a derivative.

    The value jumps where a sample point enters or leaves the moving image
    (by about ``value / n_samples``); the gradient is the derivative between
    the jumps.  A difference whose end points have another number of valid
    samples than the checked point is therefore retaken with a 10x smaller
    step (up to 4 times; ``used_steps`` in the report shows the steps
    taken).  Without this, a 3-D rigid check on a 48-voxel phantom reported
    relative errors up to 1.4 for a correct gradient.
    """
    mode = check_choice(mode, ("coordinate", "random", "both"), where="check_metric()", name="mode")
    transform = metric.transform
    n = transform.n_parameters
    p0 = transform.parameters
    if steps is not None:
        h = as_float_vector(steps, n, where="check_metric()", name="steps")
    elif scales is not None:
        s = as_float_vector(scales, n, where="check_metric()", name="scales")
        if np.any(s <= 0):
            raise InvalidInputError(f"check_metric(): 'scales' must be > 0; got {s.tolist()}.")
        h = step / np.sqrt(s)
    else:
        pts = np.asarray(metric.sample_points)
        stride = max(1, pts.shape[0] // 2000)
        h = physical_shift_steps(transform, pts[::stride], step)
    if np.any(h <= 0) or not np.all(np.isfinite(h)):
        raise InvalidInputError(f"check_metric(): steps must be finite and > 0; got {h.tolist()}.")

    def at(delta: NDArray[np.float64]) -> None:
        transform.parameters = p0
        if np.any(delta):
            transform.update_parameters(delta)

    def value(delta: NDArray[np.float64]) -> float:
        at(delta)
        return float(metric.value())

    def value_and_gradient(delta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        at(delta)
        return metric.value_and_gradient()

    def valid_samples(delta: NDArray[np.float64]) -> int | None:
        # the smooth piece: samples entering or leaving the moving image make the value jump
        return getattr(metric, "n_valid", None)

    try:
        value0, _ = value_and_gradient(np.zeros(n))
        idx = (np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64))
        if mode == "random":
            idx = np.zeros(0, dtype=np.int64)
        report = check_gradient(
            value_and_gradient, np.zeros(n), steps=h, indices=idx, rtol=rtol,
            floor_fraction=floor_fraction, random_direction=False, value=value, branch=valid_samples,
            extrapolate=extrapolate,
        )
        direction_errors: list[float] = []
        failures = list(report.failures)
        if mode in ("random", "both"):
            for j in range(int(n_directions)):
                r = check_gradient(
                    value_and_gradient, np.zeros(n), steps=h, indices=np.zeros(0, dtype=np.int64),
                    rtol=rtol, random_direction=True, seed=seed + j, value=value, branch=valid_samples,
                    extrapolate=extrapolate,
                )
                direction_errors.append(float(r.direction_error))
                failures += r.failures
    finally:
        transform.parameters = p0
    base = {f.name: getattr(report, f.name) for f in fields(GradientCheckReport)}
    base["failures"] = failures
    base["direction_error"] = max(direction_errors) if direction_errors else None
    out = MetricCheckReport(
        **base, value=float(value0), steps=h, direction_errors=direction_errors, metric=repr(metric)
    )
    if raise_on_failure and not out.passed:
        raise AssertionError(str(out))
    return out
