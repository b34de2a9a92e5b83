"""``RegistrationMethod``: metric + optimizer + interpolator + sampler over a pyramid.

The method never mutates what it is given: the transform to optimise and the
initial (moving) transform are copied; images are only read.  Every run returns
a frozen :class:`RegistrationResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._parallel import single_threaded_blas
from ..errors import InvalidInputError
from ..image import Image, as_mask, check_image
from ..interpolators import Interpolator
from ..metrics.base import Metric
from ..metrics.sampling import FullSampler, Sampler
from ..optimizers.base import IterationState, Optimizer, OptimizerResult, StopReason, append_state
from ..transforms.base import Transform
from ..transforms.composite import CompositeTransform
from .pyramid import ImagePyramid, LevelSchedule

__all__ = ["RegistrationMethod", "RegistrationResult", "RegistrationState", "LevelResult", "StageRecord",
           "combine_results"]

TransformAdaptor = Callable[[Transform, int, Image], Transform]


@dataclass(frozen=True)
class RegistrationState:
    """Immutable per-iteration state handed to callbacks.

    ``value`` and ``gradient_norm`` were evaluated at ``parameters`` (the
    parameters of the optimised transform *before* the step of this
    iteration), so the pair is always consistent.  In a result's ``history``
    a vector of more than
    :data:`~regframe.optimizers.base.HISTORY_PARAMETERS_LIMIT` values is kept
    by the last state only (earlier states hold an empty array).
    """

    level: int
    iteration: int
    value: float
    gradient_norm: float
    parameters: NDArray[np.float64]
    learning_rate: float = float("nan")
    step_norm: float = float("nan")
    convergence_value: float = float("nan")
    stage: int = 0


@dataclass(frozen=True)
class LevelResult:
    """Outcome of one resolution level."""

    level: int
    n_iterations: int
    final_value: float
    stop_reason: StopReason
    message: str
    elapsed: float
    n_samples: int


@dataclass(frozen=True)
class StageRecord:
    """Summary of one stage of a run (``RegistrationResult.stages``).

    ``transform`` is the stage's own part; ``kept`` is False when the never-worse
    guard dropped the stage's result because it made the data term worse.
    """

    kind: str
    transform: Transform = field(repr=False)
    final_value: float
    iterations_per_level: tuple[int, ...]
    stop_reason: StopReason | None
    message: str
    elapsed: float
    kept: bool = True


@dataclass(frozen=True)
class RegistrationResult:
    """Frozen result of :meth:`RegistrationMethod.run`.

    Attributes
    ----------
    transform : Transform
        Copy of the final mapping from fixed points to moving points
        (composite of the initial transform and the optimised one when an
        initial transform was given).
    optimized_transform : Transform
        Copy of the optimised transform alone.
    final_value : float
        Metric value at the final parameters on the last level.
    iterations_per_level : tuple of int
    stop_reason : StopReason
        Why the last level stopped (or ``CALLBACK`` if a callback stopped the run).
    message : str
        Human-readable explanation of ``stop_reason``.
    levels : tuple of LevelResult
    history : tuple of RegistrationState
    elapsed : float
        Wall time in seconds.
    warnings : tuple of str
        What the never-worse guard (or a stage) found wrong; empty when all is well.
    inverse_transform : Transform, optional
        The exact inverse of ``transform`` (moving -> fixed) when every stage built one
        (symmetric diffeomorphic stages); ``None`` otherwise.
    stages : tuple of StageRecord
        One record per stage run (kind, own transform, value, iterations, time, kept).
    """

    transform: Transform
    optimized_transform: Transform
    final_value: float
    iterations_per_level: tuple[int, ...]
    stop_reason: StopReason
    message: str
    levels: tuple[LevelResult, ...]
    history: tuple[RegistrationState, ...] = field(repr=False)
    elapsed: float = 0.0
    warnings: tuple[str, ...] = ()
    inverse_transform: Transform | None = field(default=None, repr=False)
    stages: tuple[StageRecord, ...] = field(default=(), repr=False)

    @property
    def n_iterations(self) -> int:
        """Total number of iterations over all levels."""
        return int(sum(self.iterations_per_level))


class _StopRun(Exception):
    pass


class RegistrationMethod:
    """Multi-resolution registration of a moving image to a fixed image.

    Parameters
    ----------
    metric : Metric
        Image metric (used as a template: it is re-initialised per level).
    optimizer : Optimizer
    interpolator : str or Interpolator, or a sequence of them
        Moving-image interpolator (``"linear"`` default), or one per level.
    sampler : Sampler, optional
        Sample-point strategy on the fixed grid of each level (default full).
        A single sampler is used for every level, or give one per level.
    schedule : LevelSchedule, optional
        Shrink factors and smoothing sigmas, coarse to fine (default
        ``LevelSchedule((4, 2, 1), (2, 1, 0))`` in voxels).
    fixed_mask, moving_mask : Image or array, optional
        Binary masks in the physical space of the fixed / moving image (an
        array is taken in the geometry of the full-resolution image it masks).
    initial_transform : Transform, optional
        A fixed moving-initial transform ``T0``; the result maps
        ``x -> T0(T(x))`` and only ``T`` is optimised (ITK's
        ``MovingInitialTransform``).  Never mutated.
    transform_adaptors : sequence of callables, optional
        ``adaptor(transform, level, fixed_level_image) -> transform`` called
        at the start of each level (e.g. B-spline mesh refinement).
    callbacks : sequence of callables
        ``callback(state: RegistrationState) -> bool | None``; returning True
        stops the whole run after the current iteration.
    stage : int, default 0
        Index of the stage this method runs in a pipeline (``RegistrationState.stage``).
    """

    def __init__(
        self,
        *,
        metric: Metric,
        optimizer: Optimizer,
        interpolator: str | Interpolator | Sequence[str | Interpolator] = "linear",
        sampler: Sampler | Sequence[Sampler] | None = None,
        schedule: LevelSchedule | None = None,
        fixed_mask: Image | None = None,
        moving_mask: Image | None = None,
        initial_transform: Transform | None = None,
        transform_adaptors: Sequence[TransformAdaptor] | None = None,
        callbacks: Sequence[Callable[[RegistrationState], Any]] = (),
        stage: int = 0,
    ) -> None:
        self.stage = int(stage)
        self.metric = metric
        self.optimizer = optimizer
        self.schedule = schedule if schedule is not None else LevelSchedule((4, 2, 1), (2.0, 1.0, 0.0))
        n = self.schedule.n_levels
        if isinstance(interpolator, (str, Interpolator)):
            self.interpolators = [interpolator] * self.schedule.n_levels
        else:
            self.interpolators = list(interpolator)
            if len(self.interpolators) != self.schedule.n_levels:
                raise InvalidInputError(
                    f"RegistrationMethod(): one interpolator per level expected "
                    f"({self.schedule.n_levels}); got {len(self.interpolators)}."
                )
        if sampler is None:
            self.samplers = [FullSampler()] * n
        elif isinstance(sampler, Sampler):
            self.samplers = [sampler] * n
        else:
            self.samplers = list(sampler)
            if len(self.samplers) != n:
                raise InvalidInputError(
                    f"RegistrationMethod(): one sampler per level expected ({n}); got {len(self.samplers)}."
                )
        self.fixed_mask = fixed_mask
        self.moving_mask = moving_mask
        self.initial_transform = None if initial_transform is None else initial_transform.copy()
        self.transform_adaptors = list(transform_adaptors) if transform_adaptors else []
        if self.transform_adaptors and len(self.transform_adaptors) not in (1, n):
            raise InvalidInputError(
                f"RegistrationMethod(): give one transform adaptor or one per level ({n}); "
                f"got {len(self.transform_adaptors)}."
            )
        self.callbacks = list(callbacks)

    # ------------------------------------------------------------------ helpers
    def _pyramid(self, image: Image | ImagePyramid, name: str) -> ImagePyramid:
        """The level images of ``image`` (a pyramid built elsewhere must start with this schedule's levels).

        Unlike ITK, which smooths full-resolution images and shrinks only the
        sampling grid, both images are resampled onto the shrunken grid (same
        grid geometry as ITK's ``ShrinkImageFilter``): a true pyramid.
        """
        if isinstance(image, ImagePyramid):
            n = self.schedule.n_levels
            ndim = image.ndim
            if image.schedule.n_levels < n or any(
                image.schedule.level(i, ndim) != self.schedule.level(i, ndim) for i in range(n)
            ):
                raise InvalidInputError(
                    f"RegistrationMethod.run(): the levels of the {name} pyramid must begin with the "
                    f"method's levels ({self.schedule}); got {image.schedule}."
                )
            return image
        image = check_image(image, name, "RegistrationMethod.run()", expected="a regframe Image or ImagePyramid")
        return ImagePyramid(image, self.schedule)

    def _compose(self, transform: Transform) -> Transform:
        if self.initial_transform is None:
            return transform
        comp = CompositeTransform(transform.ndim)
        comp.add_transform(self.initial_transform.copy())
        comp.add_transform(transform)
        comp.set_only_most_recent_transform_to_optimize()
        return comp

    # ---------------------------------------------------------------------- run
    @single_threaded_blas()
    def run(self, fixed: Image | ImagePyramid, moving: Image | ImagePyramid, transform: Transform) -> RegistrationResult:
        """Register ``moving`` to ``fixed`` starting from ``transform`` (copied).

        Parameters
        ----------
        fixed, moving : Image or ImagePyramid
            Full-resolution images, or pyramids of them whose schedule begins
            with this method's levels (shared between runs to smooth and
            shrink once; e.g. a first stage may stop before the finest level).
        transform : Transform

        Returns
        -------
        RegistrationResult
        """
        fixed_pyramid = self._pyramid(fixed, "fixed")
        moving_pyramid = self._pyramid(moving, "moving")
        fixed, moving = fixed_pyramid.image, moving_pyramid.image
        if fixed.ndim != moving.ndim or transform.ndim != fixed.ndim:
            raise InvalidInputError(
                f"RegistrationMethod.run(): fixed ({fixed.ndim}-D), moving ({moving.ndim}-D) and "
                f"transform ({transform.ndim}-D) must have the same dimension."
            )
        # array masks are taken in the geometry of the full-resolution image they mask
        fixed_mask = as_mask(self.fixed_mask, fixed, "fixed_mask", "RegistrationMethod.run()")
        moving_mask = as_mask(self.moving_mask, moving, "moving_mask", "RegistrationMethod.run()")
        t0 = time.perf_counter()
        current = transform.copy()
        history: list[RegistrationState] = []
        levels: list[LevelResult] = []
        user_stop = False
        final_value = float("nan")
        for index in range(self.schedule.n_levels):
            tl = time.perf_counter()
            fixed_l, moving_l = fixed_pyramid.level(index), moving_pyramid.level(index)
            if self.transform_adaptors:
                adaptor = self.transform_adaptors[index if len(self.transform_adaptors) > 1 else 0]
                current = adaptor(current, index, fixed_l)
            mapping = self._compose(current)
            self.metric.initialize(
                fixed_l,
                moving_l,
                mapping,
                interpolator=self.interpolators[index],
                sampler=self.samplers[index],
                fixed_mask=fixed_mask,
                moving_mask=moving_mask,
            )

            def on_iteration(state: IterationState, _level: int = index) -> bool:
                rs = RegistrationState(
                    level=_level,
                    iteration=state.iteration,
                    value=state.value,
                    gradient_norm=state.gradient_norm,
                    parameters=state.parameters,
                    learning_rate=state.learning_rate,
                    step_norm=state.step_norm,
                    convergence_value=state.convergence_value,
                    stage=self.stage,
                )
                append_state(history, rs)
                stop = False
                for cb in self.callbacks:
                    stop = bool(cb(rs)) or stop
                return stop

            res: OptimizerResult = self.optimizer.optimize(self.metric, callback=on_iteration)
            release = getattr(self.metric, "_release_buffers", None)
            if release is not None:  # (scratch of this level: not kept while the next one is built)
                release()
            final_value = float(res.value)
            levels.append(
                LevelResult(
                    level=index,
                    n_iterations=int(res.n_iterations),
                    final_value=final_value,
                    stop_reason=res.stop_reason,
                    message=res.message,
                    elapsed=time.perf_counter() - tl,
                    n_samples=int(getattr(self.metric, "n_samples", 0)),
                )
            )
            if res.stop_reason == StopReason.CALLBACK:
                user_stop = True
                break
        last = levels[-1]
        final_mapping = self._compose(current.copy())
        return RegistrationResult(
            transform=final_mapping.copy(),
            optimized_transform=current.copy(),
            final_value=final_value,
            iterations_per_level=tuple(lv.n_iterations for lv in levels),
            stop_reason=StopReason.CALLBACK if user_stop else last.stop_reason,
            message=last.message,
            levels=tuple(levels),
            history=tuple(history),
            elapsed=time.perf_counter() - t0,
        )


def combine_results(results: Sequence[RegistrationResult]) -> RegistrationResult:
    """One :class:`RegistrationResult` for consecutive stages (the last one's transform).

    Iterations, levels and histories are concatenated; elapsed times added.
    """
    if not results:
        raise InvalidInputError("combine_results(): at least one stage result expected; got none.")
    last = results[-1]
    if len(results) == 1:
        return last
    return replace(
        last,
        iterations_per_level=tuple(n for r in results for n in r.iterations_per_level),
        levels=tuple(lv for r in results for lv in r.levels),
        history=tuple(h for r in results for h in r.history),
        elapsed=float(sum(r.elapsed for r in results)),
    )
