"""``align_stack()``: drift-free alignment of serial sections and time series.

Chaining pairwise registrations (slice ``k`` to ``k-1``, composed down the
stack) lets every pair's error accumulate into a random walk.  Here, for
``reference="previous"``, every slice is registered to its ``neighbours``
predecessors and the per-slice transforms are the least-squares solution that
agrees best with all those pairwise results at once (a pose graph, solved
linearly on the affine matrices at a grid of points, robustly reweighted,
then projected onto the transform kind), with a weak pull of the *smoothed*
poses towards the raw positions that removes the slow bend pairwise
registration builds from anatomy changing along the stack.  A pair spanning ``m`` slices constrains the walk ``m`` times
more strongly than a step, so the drift of ``neighbours=3`` is several times
smaller than a chain's.  ``"first"``, ``"mean"`` and an anchor volume (a
blockface, possibly of another contrast) need no chaining at all: each slice
registers to its own target.  All pairs are independent and run through
:func:`~regframe.registration.batch.register_many` (on a dask cluster with
``client=``).

Conventions: ``transforms[k]`` maps points of the output frame into slice
``k`` (ITK's fixed -> moving), so ``aligned[k] = resample(slice_k,
transforms[k])``; the output frame is slice 0's (``anchor="first"``), the
average pose (``anchor="mean"``) or, with an anchor stack, the anchor's (its
slice grid too).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse import linalg as splinalg

from .. import errors
from .._validation import check_choice
from ..errors import InvalidInputError, RegframeError
from ..image import Image
from ..transforms import CompositeTransform, TranslationTransform
from ..transforms.base import Transform
from .api import make_transform
from .batch import PairError, PairProgress, check_register_keywords, register_many
from .defaults import LINEAR_KINDS
from .initializers import set_translation
from .method import RegistrationResult
from .warp import StackLike, linear_parts, reference_slices, slice_image, stack_slices, warp_stack

__all__ = ["align_stack", "StackResult", "stack_pairs", "solve_consistent"]

STACK_TRANSFORMS = (*LINEAR_KINDS, "bspline")
REFERENCES = ("previous", "first", "mean")
#: Index used in :attr:`StackResult.pairs` for a target outside the stack (mean image, anchor slice).
EXTERNAL = -1


@dataclass(frozen=True)
class StackResult:
    """Result of :func:`align_stack`.

    Attributes
    ----------
    aligned : Image
        The stack resampled through ``transforms``: a 3-D image of the input's
        shape and geometry or, when ``reference`` is an anchor stack, on the
        anchor's slice grid (a 3-D anchor image's whole geometry).
    transforms : tuple of Transform
        One 2-D transform per slice, mapping output-frame points into that
        slice (ITK convention).
    metric_values : ndarray, shape (n_slices,)
        Final metric value of each slice's own registration (to its previous
        slice, the first slice, the mean or its anchor slice); NaN where there
        is none (slice 0 for ``"previous"``/``"first"``, failed pairs).
    framewise_displacement : ndarray, shape (n_slices,)
        Mean distance (physical units) over the output slice domain between
        ``transforms[k]`` and ``transforms[k - 1]``; 0 for slice 0.
    displacement : ndarray, shape (n_slices,)
        Mean distance over the output slice domain between ``transforms[k]``
        and the identity: the drift curve.
    pairs : tuple of (int, int)
        ``(fixed, moving)`` slice indices of every pairwise registration
        (``fixed == -1``: a target outside the stack, e.g. the anchor slice).
    results : tuple of RegistrationResult or PairError
        The pairwise registrations, in the order of ``pairs``.
    warnings : tuple of str
    elapsed : float
        Wall time in seconds.
    """

    aligned: Image
    transforms: tuple[Transform, ...]
    metric_values: NDArray[np.float64]
    framewise_displacement: NDArray[np.float64]
    displacement: NDArray[np.float64]
    pairs: tuple[tuple[int, int], ...] = ()
    results: tuple[RegistrationResult | PairError, ...] = field(default=(), repr=False)
    warnings: tuple[str, ...] = ()
    elapsed: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Framewise-displacement and drift summary (JSON-friendly numbers)."""
        fd = self.framewise_displacement[1:] if self.framewise_displacement.size > 1 else np.zeros(1)
        return {
            "n_slices": len(self.transforms),
            "framewise_displacement_mean": float(np.mean(fd)),
            "framewise_displacement_max": float(np.max(fd)),
            "displacement_mean": float(np.mean(self.displacement)),
            "displacement_max": float(np.max(self.displacement)),
            "n_failed_pairs": sum(isinstance(r, PairError) for r in self.results),
            "warnings": list(self.warnings),
            "elapsed": self.elapsed,
        }

    def plot(self, path: Any = None) -> Any:
        """The drift QC figure (:func:`regframe.stacks_qc.drift_figure`); saved to ``path`` if given."""
        from ..stacks_qc import drift_figure

        return drift_figure(self, path)


def stack_pairs(n_slices: int, reference: str, neighbours: int = 2) -> list[tuple[int, int]]:
    """``(fixed, moving)`` slice pairs to register for a reference mode.

    ``"previous"``: each slice ``i`` with its ``neighbours`` predecessors
    ``(i - m, i)``; ``"first"``: ``(0, i)``; ``"mean"`` or an anchor:
    ``(-1, i)`` for every slice (the target is outside the stack).
    """
    if reference == "previous":
        return [(i - m, i) for i in range(1, n_slices) for m in range(1, min(neighbours, i) + 1)]
    if reference == "first":
        return [(0, i) for i in range(1, n_slices)]
    return [(EXTERNAL, i) for i in range(n_slices)]


def _frame(template: Image) -> tuple[NDArray[np.float64], float, NDArray[np.float64]]:
    """Centre, half extent and a 5x5 grid of normalised points of the slice domain."""
    lo, hi = template.bounding_box()
    centre = 0.5 * (lo + hi)
    scale = float(max(0.5 * np.max(hi - lo), 1e-12))
    g = np.linspace(-1.0, 1.0, 5)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2) * (0.5 * (hi - lo) / scale)
    return centre, scale, grid


def _normalised(a: NDArray, o: NDArray, centre: NDArray, scale: float) -> tuple[NDArray, NDArray]:
    """``T(x) = a x + o`` in coordinates ``y = (x - centre) / scale``: ``(a, t)`` with ``T~(y) = a y + t``."""
    return a, (a @ centre + o - centre) / scale


def solve_consistent(
    measured: Sequence[tuple[int, int, NDArray[np.float64], NDArray[np.float64]]],
    n_slices: int,
    grid: NDArray[np.float64],
    *,
    anchor: str = "first",
    drift_weight: float = 0.0,
    drift_sigma: float = 0.0,
    weights: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-slice affine maps agreeing best with pairwise ones (linear least squares).

    Parameters
    ----------
    measured : sequence of (j, i, B, c)
        ``y -> B y + c`` maps slice ``j``'s points to slice ``i``'s (a
        registration with fixed ``j``, moving ``i``), in normalised coordinates.
    n_slices : int
    grid : (m, 2) ndarray
        Normalised points where the maps are compared.
    anchor : {"first", "mean"}
        Gauge: slice 0 is the identity, or the mean map is.
    drift_weight : float
        Weight (relative to one pair) pulling every ``T_k`` towards the
        identity at the grid points: slow drift that the pairs cannot see
        is removed, while the fast per-slice motion follows the pairs.
    drift_sigma : float
        The pull acts on the poses smoothed along the stack by a Gaussian of
        this width (slices; 0: on each pose): slow drift is removed, while
        fast per-slice motion is not biased at all.
    weights : (n_pairs,) ndarray, optional
        Weight of each pair's rows (default 1).

    Returns
    -------
    a : (n_slices, 2, 2) ndarray
    t : (n_slices, 2) ndarray
        ``T_k(y) = a[k] y + t[k]`` minimising ``sum |T_i(y) - P_ji(T_j(y))|^2``
        over the grid and the pairs.  Slices no pair reaches stay the identity
        (a tiny pull towards it makes the system regular).
    """
    m = grid.shape[0]
    rows, cols, vals, rhs = [], [], [], []
    row = 0

    def add(r: int, slice_k: int, comp: int, coeff: NDArray, y: NDArray) -> None:
        base = 6 * slice_k
        cols.extend([base + 2 * comp, base + 2 * comp + 1, base + 4 + comp])
        rows.extend([r] * 3)
        vals.extend([coeff * y[0], coeff * y[1], coeff])

    pair_weights = np.ones(len(measured)) if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64))
    for (j, i, b, c), pw in zip(measured, pair_weights):
        for p in range(m):
            y = grid[p]
            for r in range(2):  # component r of T_i(y) - B T_j(y) - c
                add(row, i, r, pw, y)
                for s in range(2):
                    add(row, j, s, -pw * b[r, s], y)
                rhs.append(pw * c[r])
                row += 1
    if drift_weight > 0:  # the slow part of the poses pulled towards the raw positions (fixes the mean gauge too)
        w = math.sqrt(drift_weight)
        for k, kernel in enumerate(_smoothing_rows(n_slices, drift_sigma)):
            for p in range(m):
                for r in range(2):
                    for slice_m, g in kernel:
                        add(row, slice_m, r, w * g, grid[p])
                    rhs.append(w * grid[p][r])
                    row += 1
    else:
        gauge = [0] if anchor == "first" else list(range(n_slices))
        w = 1.0 / len(gauge)
        for p in range(m):
            y = grid[p]
            for r in range(2):
                for k in gauge:
                    add(row, k, r, w, y)
                rhs.append(y[r])
                row += 1
    n = 6 * n_slices
    a_mat = sparse.csr_matrix((vals, (rows, cols)), shape=(row, n))
    eye = np.tile([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], n_slices)
    ridge = 1e-9
    normal = (a_mat.T @ a_mat + ridge * sparse.identity(n)).tocsc()
    u = splinalg.spsolve(normal, a_mat.T @ np.asarray(rhs) + ridge * eye).reshape(n_slices, 6)
    a, t = u[:, :4].reshape(n_slices, 2, 2), u[:, 4:]
    if drift_weight > 0 and anchor == "first":  # same relative poses, in slice 0's frame: T_k o T_0^-1
        g = np.linalg.inv(a[0])
        a, t = a @ g, t - (a @ g) @ t[0]
    return a, t


def _smoothing_rows(n: int, sigma: float) -> list[list[tuple[int, float]]]:
    """Normalised Gaussian weights ``[(m, g_km), ...]`` of every slice ``k`` (truncated at 3 sigma and the ends)."""
    if sigma <= 0:
        return [[(k, 1.0)] for k in range(n)]
    reach = int(math.ceil(3 * sigma))
    rows = []
    for k in range(n):
        ms = np.arange(max(0, k - reach), min(n, k + reach + 1))
        g = np.exp(-0.5 * ((ms - k) / sigma) ** 2)
        rows.append(list(zip(ms.tolist(), (g / g.sum()).tolist())))
    return rows


def _project(a: NDArray[np.float64], kind: str) -> NDArray[np.float64]:
    """Nearest matrix of a transform kind (polar decomposition for rotations)."""
    if kind == "translation":
        return np.eye(2)
    if kind == "affine":
        return a
    u, s, vt = np.linalg.svd(a)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r if kind == "rigid" else r * float(np.mean(s))


def _build(kind: str, a: NDArray, t: NDArray, centre: NDArray, scale: float) -> Transform:
    """A transform of ``kind`` centred on the slice with ``T(y) = a y + t`` in normalised coordinates."""
    if kind == "translation":
        out = TranslationTransform(2)
        out.parameters = t * scale
        return out
    out = make_transform(kind, 2)
    out.fixed_parameters = centre
    out.set_matrix(a)
    set_translation(out, t * scale)
    return out


def _mean_image(array: NDArray, template: Image) -> Image:
    return template.with_array(np.mean(array, axis=0, dtype=np.float64), copy=False)


def align_stack(
    stack: StackLike,
    transform: str = "rigid",
    reference: str | StackLike = "previous",
    *,
    metric: str | Any = "mattes",
    neighbours: int = 2,
    drift_window: float | None = 8.0,
    anchor: str = "first",
    mean_iterations: int = 2,
    interpolator: str = "linear",
    default_value: float = 0.0,
    client: Any = None,
    progress: str = "auto",
    **register_kwargs: Any,
) -> StackResult:
    """Align the slices of a stack (serial sections, a time series) without drift.

    Parameters
    ----------
    stack : Image or sequence of Image
        A 3-D image whose first numpy axis indexes the slices, or 2-D images
        of one geometry.
    transform : {"translation", "rigid", "similarity", "affine", "bspline"}
        Kind of the per-slice transforms.  ``"bspline"`` first solves an
        affine alignment, then refines every slice with a B-spline
        registration to its target (for ``"previous"``: the mean of its
        affinely aligned neighbours).
    reference : {"previous", "first", "mean"} or Image or sequence of Image
        ``"previous"``: each slice registers to its ``neighbours``
        predecessors and the transforms are solved jointly (no chaining);
        ``"first"``: each slice to slice 0; ``"mean"``: to the mean slice
        (recomputed from the aligned stack ``mean_iterations`` times); a stack
        of the same number of slices (e.g. a blockface volume, any contrast):
        slice ``k`` registers to its anchor slice ``k``, and the output frame
        is the anchor's: ``aligned`` is resampled onto the anchor's slice grid
        (:func:`~regframe.registration.warp.warp_stack` with ``reference=``).
    metric : {"mattes", "mse", "ncc"} or Metric
        Metric of the pairwise registrations (Mattes MI handles another contrast).
    neighbours : int, default 2
        Predecessors each slice registers to for ``"previous"``.
    drift_window : float or None, default 8
        ``"previous"`` only.  Pairwise registration cannot tell a slow change
        of the anatomy along the stack (oblique structures, a shape that
        grows) from motion of the slices, and integrating it bends the stack
        (the "banana" effect; on thin slices of a lung CT moved by random
        2-degree, 3-pixel motions, plain chaining drifts 3.5 pixels over 40
        slices).  The poses, smoothed along the stack by a Gaussian of
        ``drift_window / 2`` slices, are therefore also pulled towards the
        raw positions: motion changing more slowly than over about
        ``drift_window`` slices is left in place, while faster, per-slice
        motion follows the pairs unbiased (suits serial sections, placed
        independently).  None: no pull, the pose graph alone (genuine slow
        drift, e.g. stage drift in a time series, is then corrected).
    anchor : {"first", "mean"}
        Output frame of ``"previous"``: slice 0's, or the average pose.
    mean_iterations : int
        Passes of ``"mean"``.
    interpolator, default_value
        Of the aligned output (see :func:`~regframe.registration.warp.warp_stack`).
    client : dask.distributed.Client, optional
        Run the pairwise registrations on a cluster (see
        :func:`~regframe.registration.batch.register_many`).
    progress : {"auto", "bar", "lines", "none"}
        One progress bar over all pairwise registrations, on stderr.
    **register_kwargs
        Further :func:`~regframe.registration.register` keywords for every
        pair (``initialization``, ``n_iterations``, ``seed``, ...).

    Returns
    -------
    StackResult

    Raises
    ------
    InvalidInputError
        Before any registration: an unknown ``transform``, ``reference``,
        ``metric`` or ``anchor``, or :func:`~regframe.registration.register`
        keywords that every pair would reject (see
        :func:`~regframe.registration.batch.check_register_keywords`).
    RegframeError
        When every pairwise registration failed (the first error's class if it
        is a regframe error): nothing could be aligned.
    """
    started = time.perf_counter()
    check_choice(transform, STACK_TRANSFORMS, where="align_stack()", name="transform")
    check_register_keywords({"metric": metric, **register_kwargs}, "align_stack()")
    check_choice(anchor, ("first", "mean"), where="align_stack()", name="anchor")
    if int(neighbours) < 1 or int(mean_iterations) < 1:
        raise InvalidInputError(
            f"align_stack(): 'neighbours' and 'mean_iterations' must be >= 1; got {neighbours} and {mean_iterations}."
        )
    array, template = stack_slices(stack, where="align_stack()")
    n = array.shape[0]
    slices = [slice_image(array, template, k) for k in range(n)]
    anchors = _anchors(reference, n)
    mode = "anchor" if anchors is not None else reference
    if mode not in REFERENCES + ("anchor",):
        raise InvalidInputError(
            f"align_stack(): 'reference' must be one of {REFERENCES} or a stack of {n} slices; got {reference!r}."
        )
    linear_kind = "affine" if transform == "bspline" else transform
    direct_kind = transform if mode in ("first", "anchor", "mean") else linear_kind
    pairs = stack_pairs(n, "previous" if mode == "previous" else ("first" if mode == "first" else "mean"),
                        int(neighbours))
    n_runs = len(pairs) * (int(mean_iterations) if mode == "mean" else 1) + \
        (n if transform == "bspline" and mode == "previous" else 0)
    bar = PairProgress(n_runs, "align_stack", mode=progress)  # one bar over every registration
    kw = {"metric": metric, "progress": bar, "client": client, **register_kwargs}
    centre, scale, grid = _frame(template)
    warnings: list[str] = []
    if mode == "mean":
        target = _mean_image(array, template)
        for iteration in range(int(mean_iterations)):
            if iteration:
                target = _mean_aligned(stack, transforms, template)
            results = _all_failed_raises(
                register_many([(target, slices[i]) for _, i in pairs], transform=direct_kind, **kw))
            transforms = _direct_transforms(results, n, pairs, warnings if iteration == mean_iterations - 1 else [])
    else:
        if mode == "previous":
            results = _all_failed_raises(_register_previous(slices, pairs, linear_kind, kw, centre, scale))
            weight = 0.0 if drift_window is None else \
                sum(m * m for m in range(1, int(neighbours) + 1)) / float(drift_window) ** 2
            sigma = 0.0 if drift_window is None else 0.5 * float(drift_window)
            transforms = _solve(results, pairs, n, linear_kind, anchor, (weight, sigma), centre, scale, grid,
                                float(np.min(template.spacing)), warnings)
        else:
            fixed_of = (lambda j, i: anchors[i]) if mode == "anchor" else (lambda j, i: slices[j])
            results = _all_failed_raises(
                register_many([(fixed_of(j, i), slices[i]) for j, i in pairs], transform=direct_kind, **kw))
            transforms = _direct_transforms(results, n, pairs, warnings)
    if transform == "bspline" and mode == "previous":
        transforms = _refine_bspline(stack, slices, transforms, template, kw, warnings)
    bar.close()

    aligned = warp_stack(stack, transforms, interpolator=interpolator, default_value=default_value,
                         reference=reference if mode == "anchor" else None)  # the output frame's grid
    values = np.full(n, np.nan)
    for (j, i), res in zip(pairs, results):
        if isinstance(res, PairError):
            continue
        if j == EXTERNAL or j == i - 1 or mode == "first":
            values[i] = res.final_value
        warnings.extend(f"pair ({j}, {i}): {w}" for w in getattr(res, "warnings", ()))  # register()'s own
    if mode == "anchor":  # distances over the output (anchor) slice domain
        centre, scale, grid = _frame(anchors[0])
    fd, disp = _displacements(transforms, grid * scale + centre)
    return StackResult(aligned, tuple(transforms), values, fd, disp, tuple(pairs), tuple(results),
                       tuple(warnings), time.perf_counter() - started)


def _anchors(reference: Any, n: int) -> list[Image] | None:
    if isinstance(reference, str):
        return None
    array, template = reference_slices(reference, n, where="align_stack()")
    return [slice_image(array, template, k) for k in range(n)]


def _mean_aligned(stack: StackLike, transforms: list[Transform], template: Image) -> Image:
    aligned = warp_stack(stack, transforms, default_value=math.nan, dtype=np.float64).array
    inside = np.isfinite(aligned)
    count = inside.sum(axis=0)
    total = np.where(inside, aligned, 0.0).sum(axis=0)
    return template.with_array(np.where(count > 0, total / np.maximum(count, 1), 0.0), copy=False)


def _all_failed_raises(results: list[RegistrationResult | PairError]) -> list[RegistrationResult | PairError]:
    """``results``, unless every pair failed: then a typed error with the count and the first failure."""
    failed = [r for r in results if isinstance(r, PairError)]
    if not failed or len(failed) < len(results):
        return results
    kind = getattr(errors, failed[0].type, None)
    error = kind if isinstance(kind, type) and issubclass(kind, RegframeError) else RegframeError
    raise error(
        f"align_stack(): all {len(failed)} pairwise registrations failed, so no slice could be aligned; the "
        f"first error: {failed[0].type}: {failed[0].message} Fix that cause (e.g. the register() keywords, or "
        "slices without contrast) and run again."
    )


def _direct_transforms(results: Sequence[RegistrationResult | PairError], n: int,
                       pairs: Sequence[tuple[int, int]], warnings: list[str]) -> list[Transform]:
    out: list[Transform] = [TranslationTransform(2) for _ in range(n)]
    for (_, i), res in zip(pairs, results):
        if isinstance(res, PairError):
            warnings.append(f"slice {i}: registration failed ({res.type}: {res.message}); left unaligned")
        else:
            out[i] = res.transform
    return out


def _register_previous(slices: list[Image], pairs: list[tuple[int, int]], kind: str, kw: dict[str, Any],
                       centre: NDArray, scale: float) -> list[RegistrationResult | PairError]:
    """Neighbour pairs in two rounds: consecutive slices, then longer spans started from their composition.

    A span of ``m`` slices moves ``m`` times more than a step; starting it from the composed steps
    (a transform instance: no centring or search) keeps it in the capture range of the optimizer.
    """
    steps = [(j, i) for j, i in pairs if i - j == 1]
    done = dict(zip(steps, register_many([(slices[j], slices[i]) for j, i in steps], transform=kind, **kw)))
    longer = []
    for j, i in (p for p in pairs if p[1] - p[0] > 1):
        links = [done[(m, m + 1)] for m in range(j, i)]
        if any(isinstance(r, PairError) for r in links):
            longer.append(((j, i), {}))
            continue
        a, t = np.eye(2), np.zeros(2)
        for r in links:  # P_ji = P_{i-1,i} o ... o P_{j,j+1}
            b, c = _normalised(*linear_parts(r.transform), centre, scale)
            a, t = b @ a, b @ t + c
        longer.append(((j, i), {"transform": _build(kind, _project(a, kind), t, centre, scale)}))
    if longer:
        extra = register_many([(slices[j], slices[i], start) for (j, i), start in longer], transform=kind, **kw)
        done.update(zip([p for p, _ in longer], extra))
    return [done[p] for p in pairs]


#: Residual (in pixels) below which a pair keeps its full weight in the robust solve.
ROBUST_PIXELS = 1.0


def _solve(results: Sequence[RegistrationResult | PairError], pairs: Sequence[tuple[int, int]], n: int,
           kind: str, anchor: str, drift: tuple[float, float], centre: NDArray, scale: float, grid: NDArray,
           pixel: float, warnings: list[str]) -> list[Transform]:
    measured = []
    reached = {0} if anchor == "first" else set()
    for (j, i), res in zip(pairs, results):
        if isinstance(res, PairError):
            warnings.append(f"pair ({j}, {i}): registration failed ({res.type}: {res.message}); pair dropped")
            continue
        parts = linear_parts(res.transform)
        if parts is None:
            raise InvalidInputError(f"align_stack(): pair ({j}, {i}) gave a non-linear transform {res.transform!r}.")
        measured.append((j, i, *_normalised(*parts, centre, scale)))
        reached.update((j, i))
    missing = sorted(set(range(n)) - reached)
    if missing:
        warnings.append(f"slices {missing}: no successful pair; left unaligned")
    # iteratively reweighted least squares (Huber): a pair that disagrees with the others is down-weighted
    weights = np.ones(len(measured))
    for _ in range(6):
        a, t = solve_consistent(measured, n, grid, anchor=anchor, drift_weight=drift[0], drift_sigma=drift[1],
                                weights=weights)
        resid = np.array([np.sqrt(np.mean(np.sum(((grid @ a[i].T + t[i]) - ((grid @ a[j].T + t[j]) @ b.T + c)) ** 2,
                                                 axis=1))) for j, i, b, c in measured]) * scale / pixel
        cut = max(ROBUST_PIXELS, 2.0 * float(np.median(resid))) if resid.size else ROBUST_PIXELS
        weights = np.minimum(1.0, cut / np.maximum(resid, 1e-12))
    for (j, i, *_), r, w in zip(measured, resid, weights):
        if w < 0.25:
            warnings.append(f"pair ({j}, {i}) disagrees with the others by {r:.1f} pixels; down-weighted")
    return [_build(kind, _project(a[k], kind), t[k], centre, scale) for k in range(n)]


def _refine_bspline(stack: StackLike, slices: list[Image], transforms: list[Transform], template: Image,
                    kw: dict[str, Any], warnings: list[str]) -> list[Transform]:
    """B-spline refinement of each affinely aligned slice to the mean of its aligned neighbours."""
    aligned = warp_stack(stack, transforms, dtype=np.float64).array
    n = aligned.shape[0]
    targets = []
    for k in range(n):
        near = [m for m in (k - 1, k + 1) if 0 <= m < n]
        targets.append((template.with_array(np.mean(aligned[near], axis=0), copy=False),
                        template.with_array(aligned[k], copy=False)))
    results = register_many(targets, transform="bspline", **kw)
    out = []
    for k, (res, t) in enumerate(zip(results, transforms)):
        if isinstance(res, PairError):
            warnings.append(f"slice {k}: B-spline refinement failed ({res.type}: {res.message}); kept affine")
            out.append(t)
        else:
            out.append(CompositeTransform(2, [t, res.transform]))  # x -> T(D(x))
    return out


def _displacements(transforms: Sequence[Transform], points: NDArray) -> tuple[NDArray, NDArray]:
    mapped = [t.transform_points(points) for t in transforms]
    disp = np.array([np.mean(np.linalg.norm(m - points, axis=1)) for m in mapped])
    fd = np.zeros(len(mapped))
    for k in range(1, len(mapped)):
        fd[k] = np.mean(np.linalg.norm(mapped[k] - mapped[k - 1], axis=1))
    return fd, disp
