"""Public conformance checker for transforms, ``check_transform``.

Users run it on their own subclasses; the test-suite runs it on every built-in.
Derivatives are compared with central differences taken *through*
:meth:`~regframe.transforms.base.Transform.update_parameters`, so transforms
whose update is not additive (versors) are checked in the coordinates the
optimizers actually use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import NotInvertibleError
from ..transforms.base import Transform

__all__ = ["TransformCheckReport", "check_transform", "transform_jacobian_fd"]


@dataclass
class TransformCheckReport:
    """Outcome of :func:`check_transform`.

    Attributes
    ----------
    name : str
        Class name of the checked transform.
    jacobian_error : float
        Largest relative error of the parameter Jacobian against central
        differences: the largest absolute difference divided by the largest
        entry of the whole Jacobian.
    vjp_error : float
        Relative difference between ``jacobian_vjp`` and the einsum of
        ``jacobian`` with random vectors.
    position_error : float or None
        Relative error of ``jacobian_position`` (None if not implemented).
    inverse_error : float or None
        Largest ``|T^-1(T(x)) - x|`` in physical units (None if no inverse).
    round_trip_error : float
        Largest point difference after re-assigning fixed parameters and
        parameters to a fresh copy.
    failures : list of str
        Human-readable description of every failed check.
    """

    name: str
    jacobian_error: float = 0.0
    vjp_error: float = 0.0
    position_error: float | None = None
    inverse_error: float | None = None
    round_trip_error: float = 0.0
    checked_parameters: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.failures

    def __str__(self) -> str:
        pos = "n/a" if self.position_error is None else f"{self.position_error:.2e}"
        inv = "n/a" if self.inverse_error is None else f"{self.inverse_error:.2e}"
        lines = [
            f"check_transform({self.name}): {'PASSED' if self.passed else 'FAILED'}",
            f"  parameter Jacobian  rel. error {self.jacobian_error:.2e} "
            f"({self.checked_parameters} parameters)",
            f"  jacobian_vjp        rel. error {self.vjp_error:.2e}",
            f"  position Jacobian   rel. error {pos}",
            f"  inverse round trip  abs. error {inv}",
            f"  parameter round trip abs. error {self.round_trip_error:.2e}",
        ]
        lines += [f"  FAIL: {msg}" for msg in self.failures]
        return "\n".join(lines)


def _rel_error(analytic: NDArray[np.float64], numeric: NDArray[np.float64], floor: float) -> float:
    scale = max(float(np.max(np.abs(numeric), initial=0.0)), float(np.max(np.abs(analytic), initial=0.0)), floor)
    return float(np.max(np.abs(analytic - numeric), initial=0.0)) / scale


def transform_jacobian_fd(
    transform: Transform, points: NDArray[np.float64], indices: NDArray[np.int64], step: float
) -> NDArray[np.float64]:
    """Central-difference parameter Jacobian through ``update_parameters``.

    Returns
    -------
    (n, ndim, len(indices)) ndarray
        Column ``j`` is ``(T(x; p (+) h e_k) - T(x; p (+) -h e_k)) / 2h`` for
        ``k = indices[j]``, where ``(+)`` is the transform's update.
    """
    n_par = transform.n_parameters
    out = np.empty((points.shape[0], transform.ndim, len(indices)))
    for j, k in enumerate(indices):
        e = np.zeros(n_par)
        e[k] = step
        plus = transform.copy()
        plus.update_parameters(e)
        minus = transform.copy()
        minus.update_parameters(-e)
        out[:, :, j] = (plus.transform_points(points) - minus.transform_points(points)) / (2 * step)
    return out


def _grid_interior_points(transform: Transform, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """Points well inside the region of a local-support transform.

    Uses the ITK grid layout of the fixed parameters (size, origin, spacing,
    direction) and, when the transform has ``support(points)``, keeps only
    points whose neighbours 0.3 grid spacings away are inside too (so the
    inverse round trip does not straddle the border of the region).
    """
    d = transform.ndim
    fp = transform.fixed_parameters
    size, origin, spacing = fp[:d], fp[d : 2 * d], fp[2 * d : 3 * d]
    direction = fp[3 * d : 3 * d + d * d].reshape(d, d)
    to_point = direction @ np.diag(spacing)
    idx = rng.uniform(0.0, 1.0, size=(40 * n, d)) * (size - 1)
    pts = origin + idx @ to_point.T
    support = getattr(transform, "support", None)
    if support is None:
        return pts[:n]
    keep = np.ones(pts.shape[0], dtype=bool)
    for offset in [np.zeros(d)] + [s * 0.3 * to_point[:, j] for j in range(d) for s in (-1.0, 1.0)]:
        res = support(pts + offset)
        inside = res.inside if hasattr(res, "inside") else res[2]
        keep &= np.asarray(inside, dtype=bool)
    return pts[keep][:n] if np.any(keep) else pts[:n]


def _default_points(transform: Transform, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    fp = transform.fixed_parameters
    d = transform.ndim
    if getattr(transform, "has_local_support", False) and fp.size >= 3 * d + d * d:
        return _grid_interior_points(transform, rng, n)
    center = None
    if getattr(transform, "is_linear", False) and fp.size >= transform.ndim:
        center = fp[: transform.ndim]
    if center is None:
        center = np.zeros(transform.ndim)
    return center + rng.uniform(-50.0, 50.0, size=(n, transform.ndim))


def check_transform(
    transform: Transform,
    points: ArrayLike | None = None,
    *,
    rtol: float = 1e-6,
    step: float = 1e-6,
    position_step: float = 1e-5,
    max_parameters: int = 64,
    check_inverse: bool = True,
    inverse_atol: float = 1e-6,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> TransformCheckReport:
    """Verify a transform's derivatives and bookkeeping.

    Checks, at the transform's current parameters:

    1. shapes of ``transform_points``, ``jacobian``, ``jacobian_vjp``;
    2. the parameter Jacobian against central differences taken through
       ``update_parameters`` (so versor-type updates are honoured);
    3. ``jacobian_vjp`` against the einsum of ``jacobian`` with random vectors;
    4. ``jacobian_position`` against central differences of the points (if
       the transform implements it);
    5. ``inverse()`` round trip ``T^-1(T(x)) = x`` (if implemented);
    6. parameter round trip: a copy given the same fixed parameters and
       parameters maps points identically, and copies are independent.

    Parameters
    ----------
    transform : Transform
        The transform to check; it is not modified.
    points : (n, ndim) array_like, optional
        Physical points; by default 20 random points within 50 mm of the
        centre (or the origin).
    rtol : float
        Tolerance on relative errors.
    step : float
        Finite-difference step in parameter (update) units.
    position_step : float
        Finite-difference step in physical units for the position Jacobian.
    max_parameters : int
        Check at most this many parameters (chosen at random, preferring
        those with a non-zero Jacobian column) - B-splines have thousands.
    check_inverse : bool
        Whether to test ``inverse()``.
    inverse_atol : float
        Tolerance of the inverse round trip in physical units.
    seed : int
        Seed of the :class:`numpy.random.Generator` used for points, vectors
        and the parameter subset.
    raise_on_failure : bool
        Raise ``AssertionError`` with the report when a check fails.

    Returns
    -------
    TransformCheckReport
    """
    rng = np.random.default_rng(seed)
    t = transform.copy()
    d = t.ndim
    pts = _default_points(t, rng, 20) if points is None else np.asarray(points, dtype=np.float64)
    report = TransformCheckReport(name=type(t).__name__)
    n_par = t.n_parameters

    mapped = t.transform_points(pts)
    if mapped.shape != pts.shape:
        report.failures.append(f"transform_points returned shape {mapped.shape}, expected {pts.shape}")
    jac = t.jacobian(pts)
    if jac.shape != (pts.shape[0], d, n_par):
        report.failures.append(f"jacobian returned shape {jac.shape}, expected {(pts.shape[0], d, n_par)}")
        if raise_on_failure:
            raise AssertionError(str(report))
        return report

    # 2. parameter Jacobian through update_parameters
    if n_par:
        col_norm = np.max(np.abs(jac), axis=(0, 1))
        nonzero = np.flatnonzero(col_norm > 0)
        zero = np.flatnonzero(col_norm == 0)
        if n_par <= max_parameters:
            idx = np.arange(n_par)
        else:
            n_nz = min(len(nonzero), max_parameters - min(4, len(zero)))
            pick = rng.choice(nonzero, size=n_nz, replace=False) if n_nz else np.zeros(0, np.int64)
            extra = rng.choice(zero, size=min(len(zero), max_parameters - n_nz), replace=False) if len(zero) else np.zeros(0, np.int64)
            idx = np.sort(np.concatenate([pick, extra]).astype(np.int64))
        fd = transform_jacobian_fd(t, pts, idx, step)
        # errors are relative to the scale of the whole Jacobian: local-support columns
        # with tiny weights would otherwise measure finite-difference rounding
        floor = max(float(np.max(np.abs(jac), initial=0.0)), 1e-12)
        errs = [_rel_error(jac[:, :, k], fd[:, :, j], floor=floor) for j, k in enumerate(idx)]
        report.jacobian_error = max(errs, default=0.0)
        report.checked_parameters = len(idx)
        if report.jacobian_error > rtol:
            worst = int(idx[int(np.argmax(errs))])
            report.failures.append(
                f"parameter Jacobian differs from central differences: rel. error "
                f"{report.jacobian_error:.3e} > {rtol:.1e} (worst parameter {worst})"
            )

        # 3. vjp
        vec = rng.normal(size=pts.shape)
        vjp = t.jacobian_vjp(pts, vec)
        ref = np.einsum("sik,si->k", jac, vec)
        report.vjp_error = _rel_error(vjp, ref, floor=1e-12)
        if vjp.shape != (n_par,) or report.vjp_error > 1e-10:
            report.failures.append(
                f"jacobian_vjp disagrees with einsum(jacobian): shape {vjp.shape}, rel. error "
                f"{report.vjp_error:.3e}"
            )

    # 4. position Jacobian
    try:
        jpos = t.jacobian_position(pts)
    except NotImplementedError:
        jpos = None
    if jpos is not None:
        fdp = np.empty((pts.shape[0], d, d))
        for j in range(d):
            e = np.zeros(d)
            e[j] = position_step
            fdp[:, :, j] = (t.transform_points(pts + e) - t.transform_points(pts - e)) / (2 * position_step)
        report.position_error = _rel_error(jpos, fdp, floor=1e-12)
        if report.position_error > max(rtol, 1e-6):
            report.failures.append(
                f"jacobian_position differs from central differences: rel. error "
                f"{report.position_error:.3e}"
            )

    # 5. inverse
    if check_inverse:
        try:
            inv = t.inverse()
        except NotInvertibleError:
            inv = None
        if inv is not None:
            back = inv.transform_points(mapped)
            report.inverse_error = float(np.max(np.abs(back - pts)))
            if report.inverse_error > inverse_atol:
                report.failures.append(
                    f"inverse round trip error {report.inverse_error:.3e} > {inverse_atol:.1e}"
                )

    # 6. parameter round trip and copy independence
    fresh = t.copy()
    fresh.fixed_parameters = t.fixed_parameters
    fresh.parameters = t.parameters
    report.round_trip_error = float(np.max(np.abs(fresh.transform_points(pts) - mapped)))
    if report.round_trip_error > 0.0:
        report.failures.append(
            f"re-assigning fixed_parameters and parameters changed the mapping by "
            f"{report.round_trip_error:.3e}"
        )
    if n_par:
        other = t.copy()
        other.update_parameters(np.full(n_par, 1e-3))
        if not np.array_equal(t.transform_points(pts), mapped):
            report.failures.append("updating a copy changed the original transform (shared state)")
    if not np.array_equal(transform.transform_points(pts), mapped):
        report.failures.append("check_transform modified the transform it was given")

    if raise_on_failure and not report.passed:
        raise AssertionError(str(report))
    return report
