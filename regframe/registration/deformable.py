"""Deformable registration: linear initialization, then a multi-level cubic B-spline stage.

Pipeline of :func:`register_bspline`:

1. **Linear stage** (``linear_stage="affine"`` by default): the existing
   :func:`~regframe.registration.register` (centring, rotation search, rigid
   then affine), or a given transform, or nothing.  It becomes the fixed
   *moving-initial* transform of the B-spline stage.
2. **B-spline stage**: a :class:`~regframe.transforms.BSplineTransform` on the
   fixed image's domain (ITK's ``BSplineTransformInitializer``), optimised
   over an image pyramid.  The control grid starts coarse and is refined by 2
   between levels with :meth:`BSplineTransform.refine` (exact: the refined
   spline maps every point as the coarse one), through the
   ``transform_adaptors`` hook of :class:`RegistrationMethod`.  The cost is
   ``metric + lambda * bending energy`` (:class:`~regframe.metrics.regularized.
   RegularizedMetric`), optionally plus a folding penalty.
3. **Result**: one transform mapping fixed points to moving points, the
   composite ``[linear, bspline]`` (the B-spline acts first, ITK's order),
   writable to ``.tfm`` and readable by SimpleITK.

Cost per evaluation: ``O(samples * 4**ndim)`` for the data term (sparse
B-spline Jacobian-transpose product) plus ``O(parameters)`` for the bending
energy; never ``O(samples * parameters)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_positive_int
from ..errors import InvalidInputError
from ..image import Image
from ..interpolators import Interpolator
from ..metrics import FullSampler, RandomSampler
from ..metrics.base import Metric
from ..metrics.regularized import BendingEnergy, FoldingPenalty, RegularizedMetric, Regularizer
from ..optimizers import LBFGS, LBFGSB, GradientDescent, Optimizer
from ..transforms.base import Transform
from ..transforms.bspline import BSplineTransform
from .api import make_metric, register
from .method import RegistrationMethod, RegistrationResult, RegistrationState
from .pyramid import LevelSchedule

__all__ = ["register_bspline", "bspline_schedule", "BSplineGridAdaptor", "LINEAR_STAGES"]

LINEAR_STAGES = ("translation", "rigid", "similarity", "affine")

#: Default final control-point spacing, in voxels of the fixed image (mean spacing).
DEFAULT_GRID_SPACING_VOXELS = 10.0

#: Default sample budget per level: at most this many voxels, or ``_SAMPLES_PER_PARAMETER``
#: per B-spline parameter if that is more (seeded random subset, fixed per level).
_MAX_SAMPLES = 1 << 14
_SAMPLES_PER_PARAMETER = 10


class BSplineGridAdaptor:
    """Transform adaptor refining a B-spline mesh between levels (exact refinement).

    ``adaptor(transform, level, fixed_level_image) -> transform``: at level
    ``level`` the mesh must be ``meshes[level]``; the transform (a
    :class:`BSplineTransform`) is refined by the integer factor
    ``meshes[level] / current mesh`` with :meth:`BSplineTransform.refine`,
    which keeps the deformation unchanged.

    Parameters
    ----------
    meshes : sequence of (d,) int tuples
        Mesh size per registration level (non-decreasing, each an integer
        multiple of the previous one).
    """

    def __init__(self, meshes: Sequence[Sequence[int]]) -> None:
        self.meshes = [tuple(int(v) for v in m) for m in meshes]

    def __call__(self, transform: Transform, level: int, fixed_level_image: Image) -> Transform:
        if not isinstance(transform, BSplineTransform):
            raise InvalidInputError(
                f"BSplineGridAdaptor: expected a BSplineTransform to refine; got {type(transform).__name__}."
            )
        target = np.array(self.meshes[min(level, len(self.meshes) - 1)])
        current = np.array(transform.mesh_size)
        if np.array_equal(target, current):
            return transform
        factor = target // current
        if np.any(factor * current != target) or np.any(factor < 1):
            raise InvalidInputError(
                f"BSplineGridAdaptor: level {level} mesh {tuple(target)} is not an integer multiple of "
                f"the current mesh {tuple(current)}."
            )
        return transform.refine(tuple(int(f) for f in factor))


def bspline_schedule(fixed: Image, n_levels: int, *, min_size: int = 16) -> LevelSchedule:
    """Default pyramid of the B-spline stage: shrink 2**k (coarsest >= ``min_size`` voxels).

    Level ``i`` of ``n_levels`` shrinks by ``2**(n_levels - 1 - i)`` (capped so
    the smallest axis keeps ``min_size`` voxels) and smooths with sigma
    ``factor / 2`` voxels (0 at full resolution).
    """
    smallest = min(fixed.size)
    cap = max(1, 2 ** int(math.floor(math.log2(max(smallest / float(min_size), 1.0)))))
    factors = [min(2 ** (n_levels - 1 - i), cap) for i in range(n_levels)]
    sigmas = [0.5 * f if f > 1 else 0.0 for f in factors]
    return LevelSchedule(tuple(factors), tuple(sigmas), sigmas_in_physical_units=False)


def _grid_meshes(final_mesh: NDArray[np.int64], n_grid_levels: int, n_levels: int) -> list[tuple[int, ...]]:
    """Mesh per registration level: coarse mesh ``ceil(final / 2**(G-1))`` doubled per grid level."""
    g = n_grid_levels
    coarse = np.maximum(1, np.ceil(final_mesh / 2 ** (g - 1))).astype(np.int64)
    meshes = []
    for i in range(n_levels):
        grid_level = round(i * (g - 1) / (n_levels - 1)) if n_levels > 1 else g - 1
        meshes.append(tuple(int(v) for v in coarse * 2**grid_level))
    return meshes


def _make_optimizer(kind: str | Optimizer, n_iterations: int) -> Optimizer:
    if isinstance(kind, Optimizer):
        return kind
    if kind == "lbfgsb":
        return LBFGSB(n_iterations=n_iterations, gradient_tolerance=1e-7, function_tolerance=1e-9,
                      max_corrections=10)
    if kind == "lbfgs":
        return LBFGS(n_iterations=n_iterations, gradient_tolerance=1e-7)
    if kind == "gradient_descent":
        return GradientDescent(n_iterations=n_iterations, estimate_learning_rate="once",
                               minimum_convergence_value=1e-7, convergence_window=10)
    raise InvalidInputError(
        f"register_bspline(): 'optimizer' must be 'lbfgsb', 'lbfgs', 'gradient_descent' or an Optimizer; "
        f"got {kind!r}."
    )


def register_bspline(
    fixed: Image,
    moving: Image,
    metric: str | Metric = "mattes",
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    *,
    control_point_spacing: float | ArrayLike | None = None,
    mesh_size: int | ArrayLike | None = None,
    n_grid_levels: int = 3,
    regularization: float | None = None,
    folding_penalty: float = 0.0,
    linear_stage: str | Transform | None = "affine",
    schedule: LevelSchedule | None = None,
    sampling: float | None = None,
    n_iterations: int = 50,
    optimizer: str | Optimizer = "lbfgsb",
    interpolator: str | Interpolator = "linear",
    seed: int = 0,
    callbacks: Sequence[Callable[[RegistrationState], Any]] = (),
) -> RegistrationResult:
    """Deformable registration: linear initialization, then a multi-level cubic B-spline.

    Parameters
    ----------
    fixed, moving : Image
    metric : {"mattes", "mse", "ncc"} or Metric, default "mattes"
        Data term (for the linear stage too).
    fixed_mask, moving_mask : Image, optional
        Binary masks in the images' physical spaces (used by every stage).
    control_point_spacing : float or (d,) array_like, optional
        Final control-point spacing in physical units.  Default: 10 voxels
        of the fixed image (mean spacing).  Exclusive with ``mesh_size``.
    mesh_size : int or (d,) array_like, optional
        Final number of B-spline intervals per axis over the fixed domain.
    n_grid_levels : int, default 3
        Grid levels: the coarsest mesh is ``ceil(final / 2**(n_grid_levels-1))``
        and is doubled (exactly refined) at each grid level, so the final mesh
        is a multiple of it (its spacing at most the requested one).
    regularization : float, optional
        Weight ``lambda`` of the normalised bending energy (``1/mm^2``).
        Default per metric (:func:`~regframe.metrics.regularized.
        default_regularization_weight`); 0 switches it off.
    folding_penalty : float, default 0.0
        Weight of :class:`~regframe.metrics.regularized.FoldingPenalty`
        (Jacobian determinants below 0.1); 0 switches it off.
    linear_stage : {"affine", "rigid", "similarity", "translation"}, Transform or None
        Initial linear registration with :func:`register`; a transform is
        used as is (fixed initial transform); None starts from the identity.
    schedule : LevelSchedule, optional
        Pyramid of the B-spline stage (default :func:`bspline_schedule` with
        ``n_grid_levels`` levels).  Grid levels are spread over its levels.
    sampling : float, optional
        Fraction of fixed voxels sampled (seeded random, fixed per level).
        Default: every voxel up to ``max(16384, 10 * parameters)`` samples per
        level, else a seeded random subset of that size.
    n_iterations : int, default 50
        Maximum iterations per level of the B-spline stage.
    optimizer : {"lbfgsb", "gradient_descent"} or Optimizer, default "lbfgsb"
        B-spline optimizer (unit scales: coefficients are displacements in mm).
    interpolator : {"linear", "bspline"} or Interpolator, default "linear"
        Moving-image interpolator of the B-spline stage.
    seed : int
        Seed of random sampling (results are bit-identical for a seed).
    callbacks : sequence of callables
        ``callback(RegistrationState) -> bool | None`` (True stops the run).

    Returns
    -------
    RegistrationResult
        ``transform``: composite ``[linear, BSplineTransform]`` (or the
        B-spline alone when ``linear_stage`` is None) mapping fixed points to
        moving points; ``optimized_transform``: the B-spline; levels,
        iterations and history of both stages; ``elapsed`` of both stages.

    Examples
    --------
    >>> from regframe.datasets import brain_pair
    >>> fixed, moving = brain_pair(2, size=48)
    >>> res = register_bspline(fixed, moving, "mse", linear_stage=None, mesh_size=4,
    ...                        n_grid_levels=1, n_iterations=5)
    >>> type(res.transform).__name__
    'BSplineTransform'
    """
    where = "register_bspline()"
    if not isinstance(fixed, Image) or not isinstance(moving, Image):
        raise InvalidInputError(
            f"{where}: 'fixed' and 'moving' must be regframe Images; got {type(fixed).__name__} and "
            f"{type(moving).__name__}. Convert SimpleITK images with regframe.from_sitk()."
        )
    if fixed.ndim != moving.ndim:
        raise InvalidInputError(
            f"{where}: fixed and moving images must have the same dimension; got {fixed.ndim}-D and "
            f"{moving.ndim}-D."
        )
    n_grid_levels = check_positive_int(n_grid_levels, where=where, name="n_grid_levels")
    n_iterations = check_positive_int(n_iterations, where=where, name="n_iterations")
    if regularization is not None and not (math.isfinite(float(regularization)) and regularization >= 0):
        raise InvalidInputError(f"{where}: 'regularization' must be a finite number >= 0 or None; got {regularization!r}.")
    if not (math.isfinite(float(folding_penalty)) and folding_penalty >= 0):
        raise InvalidInputError(f"{where}: 'folding_penalty' must be a finite number >= 0; got {folding_penalty!r}.")
    if control_point_spacing is not None and mesh_size is not None:
        raise InvalidInputError(
            f"{where}: give at most one of 'control_point_spacing' and 'mesh_size'; got both."
        )
    t_start = time.perf_counter()

    # ---------------------------------------------------------- linear stage
    stage_results: list[RegistrationResult] = []
    initial: Transform | None
    if linear_stage is None:
        initial = None
    elif isinstance(linear_stage, Transform):
        if linear_stage.ndim != fixed.ndim:
            raise InvalidInputError(
                f"{where}: 'linear_stage' transform is {linear_stage.ndim}-D but the images are {fixed.ndim}-D."
            )
        initial = linear_stage.copy()
    elif isinstance(linear_stage, str) and linear_stage in LINEAR_STAGES:
        lin = register(fixed, moving, transform=linear_stage, metric=metric, fixed_mask=fixed_mask,
                       moving_mask=moving_mask, seed=seed, callbacks=callbacks)
        stage_results.append(lin)
        initial = lin.transform
        if lin.stop_reason.name == "CALLBACK":
            return replace(lin, elapsed=time.perf_counter() - t_start)
    else:
        raise InvalidInputError(
            f"{where}: 'linear_stage' must be one of {', '.join(repr(k) for k in LINEAR_STAGES)}, a "
            f"Transform or None; got {linear_stage!r}."
        )

    # -------------------------------------------------------------- B-spline grid
    if mesh_size is None:
        cps = control_point_spacing
        if cps is None:
            cps = DEFAULT_GRID_SPACING_VOXELS * float(np.mean(fixed.spacing))
        final_mesh = np.array(BSplineTransform.from_domain(fixed, control_point_spacing=cps).mesh_size)
    else:
        final_mesh = np.array(BSplineTransform.from_domain(fixed, mesh_size=mesh_size).mesh_size)
    sched = schedule if schedule is not None else bspline_schedule(fixed, n_grid_levels)
    meshes = _grid_meshes(final_mesh, n_grid_levels, sched.n_levels)
    bspline = BSplineTransform.from_domain(fixed, mesh_size=meshes[0])

    # ---------------------------------------------------------------- cost
    data_metric = make_metric(metric)
    regs: list[Regularizer] = [BendingEnergy()]
    weights: list[float | None] = [None if regularization is None else float(regularization)]
    if folding_penalty > 0:
        regs.append(FoldingPenalty())
        weights.append(float(folding_penalty))
    cost = RegularizedMetric(data_metric, regs, weight=weights)

    def sampler_for(level_index: int):
        lvl = sched.level(level_index, fixed.ndim)
        n_vox = int(np.prod([max(1, s // f) for s, f in zip(fixed.size, lvl.shrink_factors)]))
        if sampling is not None:
            return RandomSampler(sampling, seed=seed + level_index) if sampling < 1 else FullSampler()
        budget = max(_MAX_SAMPLES, _SAMPLES_PER_PARAMETER * fixed.ndim * int(np.prod(np.array(meshes[level_index]) + 3)))
        if n_vox <= budget:
            return FullSampler()
        return RandomSampler(budget / n_vox, seed=seed + level_index)

    method = RegistrationMethod(
        metric=cost,
        optimizer=_make_optimizer(optimizer, n_iterations),
        interpolator=interpolator,
        sampler=[sampler_for(i) for i in range(sched.n_levels)],
        schedule=sched,
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
        initial_transform=initial,
        transform_adaptors=[BSplineGridAdaptor(meshes)],
        callbacks=callbacks,
    )
    res = method.run(fixed, moving, bspline)
    stage_results.append(res)
    return replace(
        res,
        iterations_per_level=tuple(n for r in stage_results for n in r.iterations_per_level),
        levels=tuple(lv for r in stage_results for lv in r.levels),
        history=tuple(h for r in stage_results for h in r.history),
        elapsed=time.perf_counter() - t_start,
    )
