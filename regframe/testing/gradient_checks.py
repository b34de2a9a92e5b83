"""Generic central-difference gradient checker, ``check_gradient``.

Works with any callable returning ``(value, gradient)``; the metric checker
builds on it.  Relative errors follow ``|g_a - g_n| / max(|g_a|, |g_n|, floor)``.

Piecewise-smooth functions
--------------------------
An image metric is smooth only between the parameter values at which a sample
point enters or leaves the moving image (ITK's validity rule): each crossing
changes the value by about ``value / n_samples``, a jump that a central
difference over a step containing it turns into a huge "derivative" (one
crossing inside a 2e-4 mm window of a 3-D image gives a relative error of
order 1).  The analytic gradient is the derivative of the smooth piece.  Give
``branch`` (a key of the smooth piece, e.g. the number of valid samples) and
a difference whose end points lie on another piece than ``x0`` is retaken
with a step ``refine`` times smaller, up to ``max_refinements`` times.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["GradientCheckReport", "check_gradient"]


@dataclass
class GradientCheckReport:
    """Outcome of :func:`check_gradient`.

    Attributes
    ----------
    analytic, numeric : ndarray
        Analytic gradient and its central-difference estimate (only the
        checked components; ``indices`` says which).
    indices : ndarray of int
        Checked parameter indices.
    relative_errors : ndarray
        Per-component ``|a - n| / max(|a|, |n|, floor)`` where ``floor`` is a
        fraction of the gradient norm (so tiny components of a large gradient
        are judged against the gradient's scale).
    max_relative_error : float
        Largest entry of ``relative_errors``.
    direction_error : float or None
        Relative error of the directional derivative along a random unit
        direction (scaled by the steps), when requested.
    used_steps : ndarray
        Step actually used for each checked component (smaller than the
        requested one where ``branch`` made the checker refine it).
    """

    analytic: NDArray[np.float64]
    numeric: NDArray[np.float64]
    indices: NDArray[np.int64]
    relative_errors: NDArray[np.float64]
    max_relative_error: float
    direction_error: float | None = None
    rtol: float = 1e-6
    failures: list[str] = field(default_factory=list)
    used_steps: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def passed(self) -> bool:
        """True when every checked error is within ``rtol``."""
        return not self.failures

    def table(self) -> str:
        """Per-parameter error table as text."""
        rows = [f"{'k':>5} {'analytic':>14} {'numeric':>14} {'rel. error':>11}"]
        for k, a, n, e in zip(self.indices, self.analytic, self.numeric, self.relative_errors):
            rows.append(f"{int(k):>5} {a:>14.6e} {n:>14.6e} {e:>11.2e}")
        return "\n".join(rows)

    def __str__(self) -> str:
        head = (
            f"check_gradient: {'PASSED' if self.passed else 'FAILED'}; max rel. error "
            f"{self.max_relative_error:.2e} (rtol {self.rtol:.0e})"
        )
        if self.direction_error is not None:
            head += f"; random-direction rel. error {self.direction_error:.2e}"
        return "\n".join([head, self.table(), *[f"FAIL: {m}" for m in self.failures]])


def check_gradient(
    value_and_gradient: Callable[[NDArray[np.float64]], tuple[float, NDArray[np.float64]]],
    x0: ArrayLike,
    *,
    steps: ArrayLike | float = 1e-6,
    indices: ArrayLike | None = None,
    rtol: float = 1e-6,
    floor_fraction: float = 1e-3,
    random_direction: bool = True,
    seed: int = 0,
    value: Callable[[NDArray[np.float64]], float] | None = None,
    branch: Callable[[NDArray[np.float64]], Hashable] | None = None,
    refine: float = 10.0,
    max_refinements: int = 4,
    extrapolate: bool = False,
    raise_on_failure: bool = False,
) -> GradientCheckReport:
    """Compare an analytic gradient with central differences.

    Parameters
    ----------
    value_and_gradient : callable
        ``f(x) -> (value, gradient)``.
    x0 : (P,) array_like
        Point at which to check.
    steps : float or (P,) array_like
        Finite-difference step per component (use parameter scales: radians
        and millimetres differ by orders of magnitude).
    indices : array_like of int, optional
        Components to check (default all).
    rtol : float
        Tolerance on the per-component relative error.
    floor_fraction : float
        Components are compared relative to
        ``max(|a_k|, |n_k|, floor_fraction * |g|)``.
    random_direction : bool
        Also check the directional derivative along a random direction.
    seed : int
        Seed for the random direction.
    value : callable, optional
        ``f(x) -> value`` used for the differences (defaults to the first
        element of ``value_and_gradient``).
    branch : callable, optional
        ``branch(x) -> key`` of the smooth piece of a piecewise-smooth
        function (called right after ``value(x)``; e.g. a metric's number of
        valid samples).  A difference whose end points have another key than
        ``x0`` is retaken with a smaller step.
    refine : float, default 10
        Step reduction factor of one refinement.
    max_refinements : int, default 4
        Refinements per difference before giving up (the difference is then
        kept and the report says so in ``failures``).
    extrapolate : bool, default False
        Richardson extrapolation of the central differences with steps ``h``
        and ``h/2`` (truncation error ``O(h**4)`` instead of ``O(h**2)``, for
        twice the evaluations; strongly curved values such as Mattes MI on
        small images need it at ``h = 1e-4`` mm, and :func:`check_metric`
        uses it by default).
    raise_on_failure : bool
        Raise ``AssertionError`` with the report on failure.
    """
    x0 = np.array(x0, dtype=np.float64)
    n = x0.size
    h = np.broadcast_to(np.asarray(steps, dtype=np.float64), (n,)).copy()
    f = value if value is not None else (lambda x: value_and_gradient(x)[0])
    _, grad = value_and_gradient(x0.copy())
    grad = np.asarray(grad, dtype=np.float64)
    key0 = None
    if branch is not None:
        f(x0.copy())
        key0 = branch(x0.copy())
    notes: list[str] = []

    def central(direction: NDArray[np.float64], what: str) -> tuple[float, float]:
        """Derivative along ``direction`` (per unit t) and the t used."""
        t = 1.0
        for attempt in range(max_refinements + 1):
            ts = (t, t / 2) if extrapolate else (t,)
            diffs, keys = [], []
            for ti in ts:
                for sign in (1.0, -1.0):
                    x = x0 + sign * ti * direction
                    diffs.append(f(x))
                    keys.append(None if branch is None else branch(x))
            if branch is None or all(k == key0 for k in keys):
                break
            if attempt == max_refinements:
                notes.append(f"{what}: end points stay on other smooth pieces than x0 "
                             f"({sorted(set(map(repr, keys)))} vs {key0!r}) after {max_refinements} refinements")
                break
            t /= refine
        d1 = (diffs[0] - diffs[1]) / (2 * t)
        if not extrapolate:
            return d1, t
        d2 = (diffs[2] - diffs[3]) / t
        return (4.0 * d2 - d1) / 3.0, t  # Richardson: error O(t**4) instead of O(t**2)

    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
    numeric = np.empty(len(idx))
    used = np.empty(len(idx))
    for j, k in enumerate(idx):
        e = np.zeros(n)
        e[k] = h[k]
        numeric[j], t = central(e, f"component {int(k)}")
        numeric[j] /= h[k]
        used[j] = t * h[k]
    analytic = grad[idx]
    floor = max(floor_fraction * float(np.linalg.norm(grad)), 1e-300)
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    rel = np.abs(analytic - numeric) / denom
    report = GradientCheckReport(
        analytic=analytic,
        numeric=numeric,
        indices=idx,
        relative_errors=rel,
        max_relative_error=float(rel.max(initial=0.0)),
        rtol=rtol,
        used_steps=used,
    )
    if report.max_relative_error > rtol:
        report.failures.append(
            f"component {int(idx[int(np.argmax(rel))])} has rel. error {report.max_relative_error:.3e} > {rtol:.1e}"
        )
    if random_direction and n:
        u = np.random.default_rng(seed).normal(size=n) * h
        u /= np.linalg.norm(u / h)
        dn, _ = central(u, "random direction")
        da = float(grad @ u)
        report.direction_error = abs(da - dn) / max(abs(da), abs(dn), 1e-300)
        if report.direction_error > rtol:
            report.failures.append(
                f"directional derivative rel. error {report.direction_error:.3e} > {rtol:.1e}"
            )
    if report.failures:  # a difference that could not avoid a jump explains the failure
        report.failures += notes
    if raise_on_failure and not report.passed:
        raise AssertionError(str(report))
    return report
