"""``register()``: one call, defaults that need no tuning.

``register()`` builds a list of stages (:mod:`regframe.registration.presets`) and
hands it to the one runner (:func:`~regframe.registration.pipeline.run_pipeline`):

1. **Initialization** (``initialization="auto"``): candidate starts - intensity
   moments and image centres, FFT phase correlation for large shifts and
   textures, Fourier-Mellin rotation and scale in 2-D, rotation and scale
   grids in 3-D - each refined with the same budget at the coarsest level and
   ranked by the metric on the same samples.
2. **Stages**: translation | rigid | similarity | (similarity, then affine),
   each a multi-resolution :class:`~regframe.registration.RegistrationMethod`
   taking over the previous stage's result; ``"bspline"`` adds a B-spline stage.
3. **Never silently worse**: the result is scored against the start on one
   sample set at full resolution; a worse result is retried from the next
   candidates, and if still worse the start is returned with
   ``result.warnings`` set and a :class:`~regframe.errors.RegistrationWarning`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._validation import check_sampling
from ..errors import InvalidInputError
from ..interpolators import Interpolator
from ..metrics.base import Metric
from ..metrics.combined import landmark_objective
from ..optimizers import Optimizer
from ..transforms.base import Transform
from . import presets
from .defaults import (
    LINEAR_KINDS,
    METRIC_KINDS,
    OPTIMIZER_KINDS,
    TRANSFORM_KINDS,
    convert_transform,
    make_metric,
    make_optimizer,
    make_transform,
)
from .method import RegistrationResult, RegistrationState
from .pipeline import RegistrationInputs, run_pipeline
from .pyramid import LevelSchedule

__all__ = ["register", "make_transform", "make_metric", "make_optimizer", "convert_transform", "TRANSFORM_KINDS",
           "METRIC_KINDS", "OPTIMIZER_KINDS"]


def register(
    fixed: Any,
    moving: Any,
    transform: str | Transform = "rigid",
    metric: str | Metric | None = None,
    fixed_mask: Any = None,
    moving_mask: Any = None,
    *,
    initial_transform: Transform | None = None,
    initialization: str | None = "auto",
    rotation_search: bool | None = None,
    schedule: LevelSchedule | None = None,
    sampling: float | None = None,
    n_iterations: int = 200,
    optimizer: str | Optimizer = "lbfgs",
    interpolator: str | Sequence[str] | Interpolator = "linear",
    jitter: bool = True,
    seed: int = 0,
    callbacks: Sequence[Callable[[RegistrationState], Any]] = (),
    fixed_landmarks: Any = None,
    moving_landmarks: Any = None,
    landmark_weight: float | None = None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with defaults that need no tuning.

    Parameters
    ----------
    fixed, moving : Image
    transform : {"translation", "rigid", "similarity", "affine", "bspline", "syn"} or Transform
        Kind of the result ("rigid" is Euler2D in 2-D and VersorRigid3D in
        3-D; "bspline" runs the affine stages and then a multi-level cubic
        B-spline stage, see :func:`~regframe.registration.deformable.register_bspline`;
        "syn" the affine stages and then a symmetric diffeomorphic stage whose exact
        inverse is ``result.inverse_transform``, see :func:`~regframe.registration.syn.syn_register`;
        further kinds registered with :func:`~regframe.registration.presets.register_preset`),
        or a transform instance to start from (copied; used as is, with no centring).
    metric : {"mattes", "mse", "ncc"} or Metric, optional
        Default ``"mattes"`` (``"ncc"``, local normalized correlation in the SyN stage,
        for ``transform="syn"``).
    fixed_mask, moving_mask : Image or ndarray, optional
        Masks in the images' physical spaces; an array is taken in its image's geometry.
    initial_transform : Transform, optional
        Fixed moving-initial transform; the result maps ``x -> T0(T(x))``.
    initialization : {"auto", "moments", "geometry", "phase", None}
        How the first stage starts: ``"auto"`` ranks every candidate (centres,
        phase correlation, rotation and scale searches) by the refined metric;
        the others use one generator (``None``: the identity).
    rotation_search : bool, optional
        Add a coarse rotation grid to the candidates (default: on for rigid-type kinds).
    schedule : LevelSchedule, optional
        Default: shrink factors halving down to 1 (at most 8) with at least 12
        voxels along the smallest axis at the coarsest level; sigmas in voxels.
        A stage that only prepares the next one stops before the finest level.
    sampling : float, optional
        Fraction of voxels sampled at random (seeded); default: all voxels up
        to 100 000 samples at the finest level and 25 000 at coarser ones,
        else a random subset of that size.  Either way the linear stages leave
        out the outermost voxel layer of each level
        (:data:`~regframe.registration.defaults.BORDER_MARGIN`: content at the
        border is the first to be missing from the moving image).
    n_iterations : int
        Maximum iterations per level of the linear stages.
    optimizer : {"lbfgs", "lbfgsb", "regular_step"} or Optimizer, default "lbfgs"
        :class:`~regframe.optimizers.LBFGS` with physical-shift scales, stopping
        once two steps move the domain by less than 1 % of the finest voxel.
        Like ``n_iterations``, it applies to the linear stages; a deformable
        stage ("bspline", "syn") keeps its own optimizer (L-BFGS-B for the
        B-spline, see :func:`~regframe.registration.deformable.register_bspline`).
    interpolator : str or sequence of str
        Moving-image interpolator, or one per level.
    jitter : bool, default True
        Move every sample point by a seeded random offset within its voxel (as ITK).
    seed : int
        Seed of the random sampling and jitter (results are bit-identical for a seed).
    callbacks : sequence of callables
        ``callback(RegistrationState) -> bool | None``; True stops the run.
    fixed_landmarks, moving_landmarks : (n, ndim) array_like, optional
        Paired physical points (ground control points), ``T(fixed_landmarks[i]) ~
        moving_landmarks[i]``: every stage minimises ``metric + landmark_weight *
        mean squared landmark distance`` (:func:`~regframe.metrics.landmark_objective`),
        and their least-squares fit is one more initialization candidate.
    landmark_weight : float, optional
        Default: chosen from the two terms' gradients at the start so that the landmarks
        decide the way while they are off by more than about a voxel (see
        :func:`~regframe.metrics.landmark_objective`).

    Returns
    -------
    RegistrationResult
        ``result.transform`` maps fixed points to moving points; ``result.warnings``
        is empty unless the never-worse guard intervened.
    """
    inputs = RegistrationInputs.for_images(fixed, moving, fixed_mask, moving_mask,
                                           fixed_landmarks=fixed_landmarks, moving_landmarks=moving_landmarks)
    if (fixed_landmarks is None) != (moving_landmarks is None):
        raise InvalidInputError("register(): give both 'fixed_landmarks' and 'moving_landmarks', or neither.")
    if metric is None:
        metric = presets.DEFAULT_METRICS.get(transform if isinstance(transform, str) else "", "mattes")
    if fixed_landmarks is not None:
        metric = landmark_objective(make_metric(metric), inputs.fixed_landmarks, inputs.moving_landmarks,
                                    landmark_weight)
    sampling = check_sampling(sampling, "register()")
    if initial_transform is not None and initial_transform.ndim != inputs.ndim:
        raise InvalidInputError(
            f"register(): 'initial_transform' is {initial_transform.ndim}-D but the images are {inputs.ndim}-D."
        )
    common = dict(metric=metric, schedule=schedule, sampling=sampling, n_iterations=n_iterations,
                  optimizer=optimizer, interpolator=interpolator, jitter=jitter)
    if isinstance(transform, Transform) or transform in LINEAR_KINDS:
        stages = presets.linear(transform, initialization=initialization, rotation_search=rotation_search,
                                **common)
    else:
        stages = presets.preset(transform)(
            metric=metric, initialization=initialization, rotation_search=rotation_search,
            linear_options=dict(n_iterations=n_iterations, jitter=jitter, optimizer=optimizer),
            schedule=schedule, sampling=sampling, interpolator=interpolator)
    return run_pipeline(stages, inputs, initial_transform=initial_transform, seed=seed,
                        callbacks=callbacks).result
