"""Deformable registration: linear initialization, then a multi-level cubic B-spline stage.

:func:`register_bspline` is a builder of stages (:func:`regframe.registration.presets.bspline`)
run by the one pipeline runner:

1. **Linear stages** (``linear_stage="affine"`` by default): the same
   initialization and linear stages as :func:`~regframe.registration.register`,
   or a given transform, or nothing.  The chain so far becomes the fixed
   *moving-initial* transform of the B-spline stage.
2. **B-spline stage** (:class:`~regframe.registration.stages.BSplineStage`): a
   :class:`~regframe.transforms.BSplineTransform` on the fixed image's domain,
   optimised over an image pyramid with a control grid refined by 2 between
   levels; cost ``metric + lambda * bending energy`` (optionally a folding penalty).
3. **Result**: one transform mapping fixed points to moving points, the
   composite ``[linear, bspline]`` (the B-spline acts first, ITK's order),
   writable to ``.tfm`` and readable by SimpleITK.

Cost per evaluation: ``O(samples * 4**ndim)`` for the data term (sparse
B-spline Jacobian-transpose product) plus ``O(parameters)`` for the bending
energy; never ``O(samples * parameters)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from numpy.typing import ArrayLike

from .._validation import check_positive_int
from ..errors import InvalidInputError
from ..interpolators import Interpolator
from ..metrics.base import Metric
from ..optimizers import Optimizer
from ..transforms.base import Transform
from . import presets
from .defaults import LINEAR_KINDS
from .method import RegistrationResult, RegistrationState
from .pipeline import RegistrationInputs, run_pipeline
from .pyramid import LevelSchedule
from .stages.bspline import BSplineGridAdaptor, bspline_schedule, grid_meshes

__all__ = ["register_bspline", "bspline_schedule", "BSplineGridAdaptor", "LINEAR_STAGES"]

LINEAR_STAGES = LINEAR_KINDS
_grid_meshes = grid_meshes  # earlier name, kept importable


def register_bspline(
    fixed: Any,
    moving: Any,
    metric: str | Metric = "mattes",
    fixed_mask: Any = None,
    moving_mask: Any = None,
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
        Default: scaled at every level to the data term's curvature there
        (:func:`~regframe.metrics.regularized.default_regularization_weight`),
        so a pair the linear stage aligned is not moved by noise; 0 switches
        it off.
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
        Default: every voxel up to ``min(max(16384, 10 * parameters), 32768)``
        samples per level in 2-D (65536 in 3-D), else a seeded random subset of that
        size; jittered in 3-D (:meth:`~regframe.registration.stages.bspline.BSplineStage.jittered`).
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
    inputs = RegistrationInputs.for_images(fixed, moving, fixed_mask, moving_mask, where=where)
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
    initial: Transform | None = None
    if isinstance(linear_stage, Transform):
        if linear_stage.ndim != inputs.ndim:
            raise InvalidInputError(
                f"{where}: 'linear_stage' transform is {linear_stage.ndim}-D but the images are {inputs.ndim}-D."
            )
        initial, linear_stage = linear_stage, None
    elif linear_stage is not None and linear_stage not in LINEAR_STAGES:
        raise InvalidInputError(
            f"{where}: 'linear_stage' must be one of {', '.join(repr(k) for k in LINEAR_STAGES)}, a "
            f"Transform or None; got {linear_stage!r}."
        )
    stages = presets.bspline(
        linear_stage=linear_stage, metric=metric, control_point_spacing=control_point_spacing,
        mesh_size=mesh_size, n_grid_levels=n_grid_levels, regularization=regularization,
        folding_penalty=folding_penalty, schedule=schedule, sampling=sampling, n_iterations=n_iterations,
        optimizer=optimizer, interpolator=interpolator)
    return run_pipeline(stages, inputs, initial_transform=initial, seed=seed, callbacks=callbacks).result
