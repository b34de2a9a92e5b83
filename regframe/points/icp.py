"""Robust ICP with global initialization: :func:`register_points`.

Conventions (ITK): the returned transform maps *fixed* points into *moving*
space, ``T(fixed_i) ~ moving_j``; no correspondence by order is assumed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from .._validation import as_points, check_choice, check_positive_int
from ..errors import InvalidInputError, ShapeError
from ..optimizers.base import StopReason
from ..registration.initializers import set_translation
from ..transforms.base import Transform
from ..transforms.linear import MatrixOffsetTransformBase
from . import _search
from ._fit import KINDS, Map, apply, fit_point_to_point, step_point_to_plane
from .normals import NormalCache

__all__ = ["register_points", "PointRegistrationResult", "robust_weights"]

METHODS = ("point_to_point", "point_to_plane")
ROBUST = ("tukey", "huber", "trimmed", "none")
INITIALIZATIONS = ("global", "centroids", "none")
#: Fixed points per level before the full set (coarse to fine, seeded nested subsamples).
LEVEL_SIZES = (2048, 8192)
#: Median of the distance ``|e|`` of isotropic standard normal noise ``e`` in 2-D and 3-D
#: (chi distribution): median distance / this = the noise's standard deviation.
_MEDIAN_CHI = {2: 1.1774100225154747, 3: 1.5381722544550522}
#: Tukey / Huber tuning constants (95 % efficiency under Gaussian noise).
_TUKEY, _HUBER = 4.685, 1.345


@dataclass(frozen=True)
class PointRegistrationResult:
    """Frozen result of :func:`register_points`.

    Attributes
    ----------
    transform : Transform
        Maps fixed points into moving space (ITK convention); its centre is the
        fixed centroid.  A TranslationTransform, Euler2DTransform /
        VersorRigid3DTransform, Similarity2D/3DTransform or AffineTransform.
    final_value : float
        Weighted mean squared residual of the final correspondences (squared
        closest-point distances, or squared point-to-plane distances) over all
        fixed points, with the robust weights.  The final correspondences are
        those of the last iteration when it converged on the full set (the
        map then moved less than the tolerance), else those of the final
        transform.
    rms : float
        Root mean square closest-point distance of the inliers of the final
        correspondences.
    inlier_fraction : float
        Fraction of the fixed points whose correspondence has a non-zero
        robust weight (within ``max_distance``).
    n_iterations : int
        ICP iterations over all levels (the global search not counted).
    stop_reason : StopReason
        ``CONVERGED`` (the map moved less than the tolerance) or
        ``MAX_ITERATIONS`` (on the finest level).
    message : str
    elapsed : float
        Wall time in seconds.
    warnings : tuple of str
    """

    transform: Transform
    final_value: float
    rms: float
    inlier_fraction: float
    n_iterations: int
    stop_reason: StopReason
    message: str
    elapsed: float
    warnings: tuple[str, ...] = ()


def robust_weights(
    distances: NDArray[np.float64], robust: str, *, ndim: int = 3, trim_fraction: float = 0.7,
    floor: float = 0.0,
) -> NDArray[np.float64]:
    """Per-correspondence weights from closest-point distances (inf = no partner).

    ``"tukey"``: biweight ``(1 - (d/c)^2)^2`` for ``d < c = 4.685 s``;
    ``"huber"``: ``min(1, 1.345 s / d)``.  The scale ``s`` is the noise
    standard deviation that explains the median distance under isotropic
    Gaussian noise, ``s = median(d) / median(chi_ndim)`` (1.538 in 3-D, 1.177
    in 2-D; at least ``floor``), so ``c`` is about 3 median distances.  It is
    re-estimated from the current distances at every call, so early
    iterations use every point and outliers and unmatched parts lose their
    weight as the clouds align.  (Distances are norms, not signed residuals:
    ``1.4826 median`` would overestimate the noise by half and let points of
    the non-overlapping parts pull.)  ``"trimmed"``: 1 for the
    ``trim_fraction`` smallest distances.  ``"none"``: 1.  Infinite distances
    always weigh 0.
    """
    finite = np.isfinite(distances)
    d = np.where(finite, distances, 0.0)
    if robust == "none" or not finite.any():
        return finite.astype(np.float64)
    if robust == "trimmed":
        k = max(1, int(trim_fraction * distances.shape[0]))
        thr = np.partition(np.where(finite, distances, np.inf), k - 1)[k - 1]
        return (finite & (distances <= thr)).astype(np.float64)
    s = max(float(np.median(np.where(finite, distances, np.inf))), 0.0)
    if not np.isfinite(s):  # most points unmatched: the scale of the matched ones
        s = float(np.median(d[finite]))
    s = max(s / _MEDIAN_CHI[ndim], floor)
    if robust == "huber":
        k = _HUBER * s
        return np.where(finite, np.minimum(1.0, k / np.maximum(d, k)), 0.0)
    c = _TUKEY * s
    u = np.minimum(d / c, 1.0)
    return np.where(finite, (1.0 - u * u) ** 2, 0.0)


def _linear_map(transform: Transform, ndim: int) -> Map:
    if not isinstance(transform, MatrixOffsetTransformBase) or transform.ndim != ndim:
        raise InvalidInputError(
            f"register_points(): 'initial_transform' must be a {ndim}-D linear transform "
            f"(MatrixOffsetTransformBase); got {type(transform).__name__} ({transform.ndim}-D)."
        )
    return np.asarray(transform.compute_matrix(), dtype=np.float64), np.asarray(transform.offset, dtype=np.float64)


def _to_transform(kind: str, a: NDArray, o: NDArray, center: NDArray) -> Transform:
    from ..registration.api import make_transform

    t = make_transform(kind, center.shape[0])
    t.center = center
    if kind == "rigid":  # strip the rounding of repeated rotation products
        u, _, vt = np.linalg.svd(a)
        a = u @ vt
    if kind != "translation":
        t.set_matrix(a)
    set_translation(t, o + a @ center - center)
    return t


class _Correspondences:
    """Closest moving points of mapped fixed points, their weights and residuals."""

    def __init__(self, tree: cKDTree, moving: NDArray, normals: NormalCache | None, robust: str,
                 trim_fraction: float, max_distance: float, floor: float, workers: int) -> None:
        self.tree, self.moving, self.normals = tree, moving, normals
        self.robust, self.trim, self.max_distance, self.floor = robust, trim_fraction, max_distance, floor
        self.workers = workers

    def __call__(self, mapped: NDArray) -> tuple[NDArray, NDArray, NDArray, NDArray | None, NDArray]:
        """``(distances, weights, matched, normals, residuals)``; unmatched rows weigh 0."""
        dist, idx = self.tree.query(mapped, workers=self.workers, distance_upper_bound=self.max_distance)
        weights = robust_weights(dist, self.robust, ndim=mapped.shape[1], trim_fraction=self.trim, floor=self.floor)
        idx = np.minimum(idx, self.moving.shape[0] - 1)  # misses (weight 0) point anywhere
        matched = self.moving[idx]
        if self.normals is None:
            return dist, weights, matched, None, np.where(np.isfinite(dist), dist, 0.0)
        normals = self.normals.get(idx)
        return dist, weights, matched, normals, np.einsum("ni,ni->n", normals, mapped - matched)


def _motion(m0: Map, m1: Map, probes: NDArray) -> float:
    """Largest displacement of the probe points between two maps."""
    diff = apply(m1, probes) - apply(m0, probes)
    return float(np.sqrt(np.max(np.einsum("ni,ni->n", diff, diff))))


def register_points(
    fixed_points: ArrayLike,
    moving_points: ArrayLike,
    transform: str = "rigid",
    *,
    method: str = "point_to_point",
    robust: str = "tukey",
    initialization: str = "global",
    initial_transform: Transform | None = None,
    n_iterations: int = 50,
    tolerance: float = 1e-5,
    max_distance: float | None = None,
    trim_fraction: float = 0.7,
    n_neighbors: int = 10,
    seed: int = 0,
    workers: int = -1,
) -> PointRegistrationResult:
    """Register two point clouds with robust ICP after a global initialization.

    Parameters
    ----------
    fixed_points, moving_points : (n, ndim) and (m, ndim) array_like
        Physical points (2-D or 3-D), unordered and of any sizes (at least
        ``ndim + 1`` each).  Never modified.
    transform : {"rigid", "translation", "similarity", "affine"}, default "rigid"
    method : {"point_to_point", "point_to_plane"}, default "point_to_point"
        Point-to-point: each iteration fits the map in closed form to the
        closest points (Kabsch / Umeyama / weighted least squares).
        Point-to-plane: a Gauss-Newton step on the distances to the tangent
        planes of the moving cloud, with normals estimated from the
        ``n_neighbors`` nearest moving points; better on sampled surfaces.
    robust : {"tukey", "huber", "trimmed", "none"}, default "tukey"
        Weighting of the correspondences (see :func:`robust_weights`); the
        scale is re-estimated from the closest-point distances at every
        iteration, so outliers and the parts of either cloud that have no
        counterpart do not pull.
    initialization : {"global", "centroids", "none"}, default "global"
        ``"global"``: a multi-start over rotations about the centroids
        (principal axes with every sign, and a 30-degree grid covering
        rotations up to 90 degrees about any axis), plus the input pose and
        ``initial_transform``, each refined briefly and compared on the same
        trimmed cost (see :mod:`regframe.points._search`).  ``"centroids"``:
        align the centroids, keep the matrix of ``initial_transform`` (or the
        identity).  ``"none"``: start from ``initial_transform`` (or the
        identity).
    initial_transform : Transform, optional
        A linear transform (fixed to moving) to start from.
    n_iterations : int, default 50
        Maximum ICP iterations per level.  Levels are nested seeded
        subsamples of the fixed points (2048, 8192, then all), each ending
        when the map moves less than the tolerance.
    tolerance : float, default 1e-5
        Convergence: the largest displacement of the fixed bounding-box
        corners between iterations, relative to the RMS radius of the fixed
        cloud.
    max_distance : float, optional
        Closest points farther than this (physical units) are never matched.
    trim_fraction : float, default 0.7
        Fraction kept by ``robust="trimmed"``.
    n_neighbors : int, default 10
        Neighbours for the point-to-plane normals.
    seed : int, default 0
        Seed of the subsamples (results are deterministic for a seed).
    workers : int, default -1
        Threads of the k-d tree queries (-1: all cores); the results do not
        depend on it (every query is independent).

    Returns
    -------
    PointRegistrationResult

    Raises
    ------
    ShapeError
        Point arrays that are not ``(n, 2)`` / ``(n, 3)``, differ in
        dimension, or have too few points.
    NonFiniteError
        NaN or inf coordinates.
    InvalidInputError
        Unknown option values.
    """
    t0 = time.perf_counter()
    where = "register_points()"
    fixed_arr = np.asarray(fixed_points, dtype=np.float64)
    ndim = fixed_arr.shape[1] if fixed_arr.ndim == 2 else -1
    if ndim not in (2, 3):
        raise ShapeError(f"{where}: 'fixed_points' must be an (n, 2) or (n, 3) array; got shape {fixed_arr.shape}.")
    fixed = as_points(fixed_arr, ndim, where=where, name="fixed_points")
    moving = as_points(moving_points, ndim, where=where, name="moving_points")
    for name, arr in (("fixed_points", fixed), ("moving_points", moving)):
        if arr.shape[0] < ndim + 1:
            raise ShapeError(f"{where}: '{name}' needs at least {ndim + 1} points; got {arr.shape[0]}.")
    kind = check_choice(transform, KINDS, where=where, name="transform")
    method = check_choice(method, METHODS, where=where, name="method")
    robust = check_choice(robust, ROBUST, where=where, name="robust")
    initialization = check_choice(initialization, INITIALIZATIONS, where=where, name="initialization")
    n_iterations = check_positive_int(n_iterations, where=where, name="n_iterations")
    n_neighbors = check_positive_int(n_neighbors, where=where, name="n_neighbors", minimum=ndim)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or not (workers == -1 or workers >= 1):
        raise InvalidInputError(f"{where}: 'workers' must be -1 (all cores) or an integer >= 1; got {workers!r}.")
    if not 0.0 < float(trim_fraction) <= 1.0:
        raise InvalidInputError(f"{where}: 'trim_fraction' must be in (0, 1]; got {trim_fraction!r}.")
    if not (float(tolerance) >= 0.0):
        raise InvalidInputError(f"{where}: 'tolerance' must be >= 0; got {tolerance!r}.")
    bound = math.inf if max_distance is None else float(max_distance)
    if not bound > 0:
        raise InvalidInputError(f"{where}: 'max_distance' must be > 0 (or None); got {max_distance!r}.")

    # work about the centroids (well-conditioned sums); map back at the end
    cf, cm = fixed.mean(axis=0), moving.mean(axis=0)
    p, q = fixed - cf, moving - cm
    radius = float(np.sqrt(np.einsum("ni,ni->", p, p) / p.shape[0])) or 1.0
    tree = cKDTree(q)
    rng = np.random.default_rng(seed)

    a0, o0 = (np.eye(ndim), np.zeros(ndim)) if initial_transform is None else _linear_map(initial_transform, ndim)
    given = (a0, a0 @ cf + o0 - cm)  # the start pose in centred coordinates
    notes: list[str] = []
    if initialization == "none":
        start = given
    elif initialization == "centroids" or kind == "translation":
        start = (a0 if kind != "translation" else np.eye(ndim), np.zeros(ndim))
        if initialization == "global":  # translations: the centroids or the input pose, on one cost
            probe = p[rng.permutation(p.shape[0])[: _search.N_SCORE]]
            costs = [_search.trimmed_cost(tree.query(apply(m, probe), workers=workers)[0][None])[0]
                     for m in (start, given)]
            start = given if costs[1] < costs[0] else start
    else:
        scale = 1.0
        if kind in ("similarity", "affine"):
            scale = float(np.sqrt(np.einsum("ni,ni->", q, q) / q.shape[0])) / radius
        start, _ = _search.global_start(p, q, tree, scale=scale, extra=[given], rng=rng, workers=workers)

    normals = NormalCache(q, tree, n_neighbors, workers) if method == "point_to_plane" else None
    match = _Correspondences(tree, q, normals, robust, float(trim_fraction), bound, 1e-9 * radius, workers)
    order = rng.permutation(p.shape[0])
    sizes = [s for s in LEVEL_SIZES if s < p.shape[0]] + [p.shape[0]]
    corners = np.stack(np.meshgrid(*[[lo, hi] for lo, hi in zip(p.min(0), p.max(0))], indexing="ij"), -1).reshape(-1, ndim)
    tol = float(tolerance) * radius
    current, total = start, 0
    stop = StopReason.MAX_ITERATIONS
    # affine maps start with a similarity pass on the coarsest level (rotation and scale first)
    stages = [(sizes[0], "similarity")] if kind == "affine" and initialization == "global" else []
    for size, fit_kind in stages + [(s, kind) for s in sizes]:
        sample = p if size == p.shape[0] else p[np.sort(order[:size])]
        stop = StopReason.MAX_ITERATIONS
        for _ in range(n_iterations):
            mapped = apply(current, sample)
            last = match(mapped)
            dist, w, matched, nrm, res = last
            if not w.sum() > 0:
                raise InvalidInputError(
                    f"{where}: no fixed point has a moving point within max_distance={max_distance}; "
                    "increase 'max_distance' or give a closer 'initial_transform'."
                )
            if nrm is None:
                new = fit_point_to_point(fit_kind, sample, matched, w)
            else:
                new = step_point_to_plane(fit_kind, current, sample, matched, nrm, w)
            moved = _motion(current, new, corners)
            current = new
            total += 1
            if moved <= tol:
                stop = StopReason.CONVERGED
                break

    if not (stop == StopReason.CONVERGED and sample.shape[0] == p.shape[0]):
        last = match(apply(current, p))
    # (converged on the full set: the last correspondences, from which the map moved < tolerance)
    dist, w, _, _, res = last
    inliers = w > 0
    wsum = float(w.sum())
    final_value = float(np.einsum("n,n,n->", w, res, res) / wsum) if wsum > 0 else math.inf
    rms = float(np.sqrt(np.mean(dist[inliers] ** 2))) if inliers.any() else math.inf
    inlier_fraction = float(inliers.mean())
    if inlier_fraction < 0.3:
        notes.append(
            f"only {inlier_fraction:.0%} of the fixed points have a weighted partner: the clouds may "
            "overlap little or the result may be a wrong local optimum"
        )
    a, o = current
    result_transform = _to_transform(kind, a, o + cm - a @ cf, cf)
    message = (
        f"{stop.value} after {total} iterations ({method}, {kind}, robust={robust}); "
        f"rms {rms:.4g}, inliers {inlier_fraction:.1%}"
    )
    return PointRegistrationResult(
        transform=result_transform,
        final_value=final_value,
        rms=rms,
        inlier_fraction=inlier_fraction,
        n_iterations=total,
        stop_reason=stop,
        message=message,
        elapsed=time.perf_counter() - t0,
        warnings=tuple(notes),
    )
