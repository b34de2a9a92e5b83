"""A linear stage: one multi-resolution :class:`RegistrationMethod` of a parametric transform."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


from ...interpolators import Interpolator
from ...metrics.base import Metric
from ...optimizers import Optimizer
from ...transforms.base import Transform
from ..defaults import (
    default_schedule,
    finest_sample_count,
    linear_samplers,
    make_metric,
    make_optimizer,
    make_transform,
    physical_step_tolerance,
    truncated,
)
from ..initializers import centered_initializer
from ..method import RegistrationMethod
from ..pipeline.base import RegistrationInputs, Stage, StageContext, StageInfo, StageResult
from ..pipeline.chain import Link, TransformChain
from ..pyramid import LevelSchedule

__all__ = ["LinearStage", "shared_metric"]


def shared_metric(ctx: StageContext, metric: str | Metric, schedule: LevelSchedule, sampling: float | None) -> Metric:
    """The run's metric object for a name or template (shared so level samples are drawn once)."""
    fixed = ctx.inputs.fixed
    assert fixed is not None
    if isinstance(metric, Metric):
        return ctx.cache.memo(("metric", id(metric)), lambda: Stage.template(metric))
    n = finest_sample_count(fixed, schedule, sampling)
    return ctx.cache.memo(("metric", metric, n), lambda: make_metric(metric, n_samples=n))


def run_schedule(ctx: StageContext, schedule: LevelSchedule | None) -> LevelSchedule:
    """The run's pyramid: the given one or the default of the fixed image."""
    assert ctx.inputs.fixed is not None
    return schedule if schedule is not None else ctx.cache.memo(
        "default_schedule", lambda: default_schedule(ctx.inputs.fixed))  # type: ignore[arg-type]


@dataclass(frozen=True)
class LinearStage(Stage):
    """Optimise a linear transform (or a given parametric one) over an image pyramid.

    Parameters
    ----------
    transform : {"translation", "rigid", "similarity", "affine"} or None
        Kind optimised; ``None`` optimises the chain's last link as it is
        (``register(transform=<instance>)``).  The stage takes over the last
        link when its kind can represent it exactly, else composes on the chain.
    metric : str or Metric
    schedule : LevelSchedule, optional
        Default: :func:`~regframe.registration.defaults.default_schedule`.
    skip_finest : bool
        Stop before the finest level (a stage that only prepares the next one).
    sampling, n_iterations, optimizer, interpolator, jitter
        As in :func:`~regframe.registration.register`.
    check : bool
        Judge the stage on its own (see :meth:`checked`); otherwise only the whole-run guard does.
    """

    kind: ClassVar[str] = "linear"
    #: Linear stages optimise jittered samples and are judged by the whole-run guard only
    #: (a per-stage check on other samples would drop results for rounding-level differences).
    guarded: ClassVar[bool] = False
    transform: str | None = "rigid"
    metric: str | Metric = "mattes"
    schedule: LevelSchedule | None = None
    skip_finest: bool = False
    sampling: float | None = None
    n_iterations: int = 200
    optimizer: str | Optimizer = "lbfgs"
    interpolator: str | Interpolator | Sequence[str | Interpolator] = "linear"
    jitter: bool = True
    check: bool = False

    def checked(self) -> bool:
        """``check=True``: the runner drops the stage when it makes the data term worse (the last
        linear stage before a deformable one, which would hide a bad linear result from the
        whole-run guard)."""
        return self.check

    @property
    def label(self) -> str:
        return self.transform or "transform"

    def levels(self, inputs: RegistrationInputs) -> LevelSchedule:
        sched = self.schedule if self.schedule is not None else default_schedule(inputs.fixed)  # type: ignore[arg-type]
        return truncated(sched, sched.n_levels - 1) if self.skip_finest else sched

    def describe(self, inputs: RegistrationInputs) -> StageInfo:
        return StageInfo(self.label, self.levels(inputs).n_levels, self.n_iterations)

    def start(self, ctx: StageContext, chain: TransformChain) -> tuple[Transform, bool]:
        """The transform to optimise and whether it takes over the chain's last link."""
        taken = chain.absorbable(self.transform)
        if taken is not None:
            return taken, True
        assert self.transform is not None, "a stage of the given transform needs it as the chain's last link"
        fixed = ctx.inputs.fixed
        assert fixed is not None
        # the identity, rotating about the fixed image's centre
        return centered_initializer(fixed, fixed, make_transform(self.transform, fixed.ndim), mode="geometry"), False

    def run(self, ctx: StageContext, chain: TransformChain) -> StageResult:
        inputs = ctx.inputs
        fixed = inputs.fixed
        assert fixed is not None and inputs.moving is not None
        full = run_schedule(ctx, self.schedule)
        sched = truncated(full, full.n_levels - 1) if self.skip_finest else full
        n = sched.n_levels
        metric = shared_metric(ctx, self.metric, full, self.sampling)
        samplers = ctx.cache.memo(("linear_samplers", id(full), self.sampling, self.jitter, ctx.seed),
                                  lambda: linear_samplers(fixed, full, self.sampling, jitter=self.jitter,
                                                          seed=ctx.seed))
        interp = (self.interpolator if isinstance(self.interpolator, (str, Interpolator))
                  else list(self.interpolator)[:n])
        current, absorbs = self.start(ctx, chain)
        method = RegistrationMethod(
            metric=metric,
            optimizer=make_optimizer(self.template(self.optimizer) if isinstance(self.optimizer, Optimizer)
                                     else self.optimizer, self.n_iterations, physical_step_tolerance(fixed)),
            interpolator=interp,
            sampler=samplers[:n],
            schedule=sched,
            fixed_mask=inputs.fixed_mask,
            moving_mask=inputs.moving_mask,
            initial_transform=chain.base(absorbs),
            callbacks=ctx.callbacks,
            stage=ctx.index,
        )
        res = method.run(ctx.cache.pyramid(fixed, full), ctx.cache.pyramid(inputs.moving, full), current)
        part = res.optimized_transform
        return StageResult(self.label, part, res, absorbs=absorbs)

    def link(self, result: StageResult) -> Link:
        return Link(result.kind, result.part)


