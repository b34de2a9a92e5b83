"""Factories and default policies shared by every registration builder.

One place for what ``register()``, ``register_bspline()`` and TOML configurations
used to write separately: component factories by name, the order of the linear
kinds (each can represent every kind before it), the default pyramids and the
sampler policies of linear and B-spline stages.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import check_choice
from ..errors import InvalidInputError
from ..image import Image
from ..metrics import FullSampler, MattesMutualInformation, MeanSquares, NormalizedCorrelation, RandomSampler
from ..metrics.base import Metric
from ..metrics.sampling import Sampler
from ..optimizers import LBFGS, LBFGSB, GradientDescent, Optimizer, RegularStepGradientDescent
from ..transforms import (
    AffineTransform,
    Euler2DTransform,
    Similarity2DTransform,
    Similarity3DTransform,
    TranslationTransform,
    VersorRigid3DTransform,
)
from ..transforms.base import Transform
from ..transforms.linear import MatrixOffsetTransformBase
from .initializers import set_translation
from .pyramid import LevelSchedule

__all__ = [
    "TRANSFORM_KINDS",
    "LINEAR_KINDS",
    "METRIC_KINDS",
    "OPTIMIZER_KINDS",
    "make_transform",
    "make_metric",
    "make_optimizer",
    "make_bspline_optimizer",
    "convert_transform",
    "linear_kind_of",
    "can_represent",
    "default_schedule",
    "linear_samplers",
    "n_voxels_at",
    "BORDER_MARGIN",
]

#: Linear kinds in order of generality: a kind can represent every kind before it.
LINEAR_KINDS = ("translation", "rigid", "similarity", "affine")
TRANSFORM_KINDS = ("translation", "rigid", "similarity", "affine", "bspline", "syn")
METRIC_KINDS = ("mattes", "mse", "ncc")
OPTIMIZER_KINDS = ("lbfgs", "lbfgsb", "regular_step")

#: The L-BFGS optimizers stop after two steps shorter than this fraction of the finest voxel.
STEP_TOLERANCE = 0.01

#: Default sample count of the finest level: every voxel up to this many, else a seeded
#: random subset (the landmark error on the lung CT grows from 0.06 to 0.10 mm at 60 000).
MAX_SAMPLES_PER_LEVEL = 100_000
#: The same for the coarser levels, which only have to bring the next level close.
COARSE_SAMPLES_PER_LEVEL = 25_000

#: Voxel layers of each level's fixed image left out of the samples at every border (the
#: samplers' ``margin``).  Content at the border of the fixed image is the first to be
#: missing from the moving image (another field of view, or a resampled image padded with a
#: constant where its content left the grid), and within one voxel of the border the
#: interpolated values mix the two: on the lung CT moved rigidly (padding -1024 HU) those
#: samples biased the affine stage (0.17 mm mean landmark error; 0.02-0.04 mm without them).
#: One voxel of every level, so the band grows with the shrink factor as the smoothing that
#: spreads the border does.  Linear stages only (a B-spline control point near the border
#: has no other data).  A global transform fitted to a large warp moves where it ends at the
#: corners: on ``bench_deformable.py``'s ``sem_large`` the affine start maps the top-left
#: corner of the fixed image 24 px off (9.5 px without the margin), 14 rows above and 2
#: columns left of the moving image, where the 2-D B-spline stage has no data: field error
#: 9.15 px at pixel (0, 0), 1829 of 640000 pixels above 2 px, mean 0.102 px (without the
#: margin 0.60 px, mean 0.090; elastix 19.6 px, mean 0.358).
BORDER_MARGIN = 1


def make_transform(kind: str, ndim: int) -> MatrixOffsetTransformBase:
    """Identity transform of a named linear kind (``"rigid"`` is Euler2D / VersorRigid3D)."""
    check_choice(kind, LINEAR_KINDS, where="make_transform()", name="transform")
    if kind == "translation":
        return TranslationTransform(ndim)
    if kind == "affine":
        return AffineTransform(ndim)
    if kind == "rigid":
        return Euler2DTransform() if ndim == 2 else VersorRigid3DTransform()
    return Similarity2DTransform() if ndim == 2 else Similarity3DTransform()


def linear_kind_of(transform: Transform) -> str | None:
    """The linear kind name of a built-in linear transform (``None`` for anything else)."""
    for kind, classes in (
        ("translation", (TranslationTransform,)),
        ("rigid", (Euler2DTransform, VersorRigid3DTransform)),
        ("similarity", (Similarity2DTransform, Similarity3DTransform)),
        ("affine", (AffineTransform,)),
    ):
        if type(transform) in classes:
            return kind
    return None


def can_represent(kind: str, other: str | None) -> bool:
    """Whether every transform of linear kind ``other`` is exactly one of ``kind``."""
    return other in LINEAR_KINDS and kind in LINEAR_KINDS and LINEAR_KINDS.index(other) <= LINEAR_KINDS.index(kind)


def make_metric(kind: str | Metric, n_samples: int | None = None, **kwargs: Any) -> Metric:
    """Metric from a name (``"mattes"``, ``"mse"``, ``"ncc"``) or pass an instance through.

    For ``"mattes"`` without an explicit ``n_bins``, the bin count follows the
    number of samples of the finest level, ``n_samples`` (50, ITK's default,
    when it is not given): see :meth:`MattesMutualInformation.auto_bin_count`.
    """
    if isinstance(kind, Metric):
        return kind
    check_choice(kind, METRIC_KINDS, where="make_metric()", name="metric")
    if kind == "mattes":
        bins = 50 if n_samples is None else MattesMutualInformation.auto_bin_count(n_samples)
        return MattesMutualInformation(**{"n_bins": bins, **kwargs})
    if kind == "mse":
        return MeanSquares(**kwargs)
    return NormalizedCorrelation(**kwargs)


def make_optimizer(kind: str | Optimizer, n_iterations: int = 200, step_tolerance: float = 0.0) -> Optimizer:
    """Default optimizer of a linear stage, with physical-shift scales (no tuning needed).

    ``step_tolerance`` (physical units, ``"lbfgs"`` and ``"lbfgsb"``): stop
    once two consecutive steps move the domain by less than this.
    """
    if isinstance(kind, Optimizer):
        return kind
    check_choice(kind, OPTIMIZER_KINDS, where="make_optimizer()", name="optimizer")
    if kind == "lbfgs":
        return LBFGS(n_iterations=n_iterations, scales="physical_shift", step_tolerance=step_tolerance)
    if kind == "lbfgsb":
        return LBFGSB(n_iterations=n_iterations, scales="physical_shift", gradient_tolerance=1e-6,
                      function_tolerance=1e-10, max_line_search=5, step_tolerance=step_tolerance)
    return RegularStepGradientDescent(
        n_iterations=n_iterations,
        scales="physical_shift",
        relaxation_factor=0.5,
        minimum_step_length=1e-4,
        gradient_tolerance=1e-8,
    )


def make_bspline_optimizer(kind: str | Optimizer, n_iterations: int) -> Optimizer:
    """Default optimizer of a B-spline stage (unit scales: coefficients are displacements)."""
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


def convert_transform(previous: MatrixOffsetTransformBase, kind: str) -> MatrixOffsetTransformBase:
    """A transform of ``kind`` (same centre) representing ``previous`` as closely as possible.

    Exact when ``kind`` can represent ``previous`` (e.g. rigid -> affine).
    """
    t = make_transform(kind, previous.ndim)
    if t.fixed_parameters.size >= t.ndim:
        fp = t.fixed_parameters
        fp[: t.ndim] = previous.center
        t.fixed_parameters = fp
        set_matrix = getattr(t, "set_matrix", None)
        if set_matrix is not None:
            set_matrix(previous.matrix)
    set_translation(t, previous.translation + previous.center - t.center)
    return t


def default_schedule(fixed: Image) -> LevelSchedule:
    """Halving shrink factors; the coarsest level keeps at least 12 voxels along the smallest axis."""
    smallest = min(fixed.size)
    coarsest = int(max(1, min(8, 2 ** int(np.floor(np.log2(max(smallest / 12.0, 1.0)))))))
    factors = []
    f = coarsest
    while f >= 1:
        factors.append(f)
        f //= 2
    sigmas = [max(0.5 * (fac - 1), 1.0) if fac > 1 else 0.0 for fac in factors]
    return LevelSchedule(tuple(factors), tuple(sigmas), sigmas_in_physical_units=False)


def n_voxels_at(fixed: Image, schedule: LevelSchedule, level: int) -> int:
    """Number of voxels of ``fixed`` at ``level`` of ``schedule``."""
    lvl = schedule.level(level, fixed.ndim)
    return int(np.prod([max(1, s // f) for s, f in zip(fixed.size, lvl.shrink_factors)]))


def linear_samplers(fixed: Image, schedule: LevelSchedule, sampling: float | None, *, jitter: bool,
                    seed: int) -> list[Sampler]:
    """Sampler per level of a linear stage.

    ``sampling`` (a fraction) draws that share of voxels at random; by default
    every voxel up to 100 000 samples at the finest level and 25 000 at the
    coarser ones, else a seeded random subset of that size.  Every sampler
    leaves out the :data:`BORDER_MARGIN` outermost voxel layers of its level.
    """
    out: list[Sampler] = []
    m = BORDER_MARGIN
    for i in range(schedule.n_levels):
        if sampling is not None:
            out.append(RandomSampler(sampling, seed=seed + i, jitter=jitter, margin=m) if sampling < 1
                       else FullSampler(jitter=jitter, seed=seed + i, margin=m))
            continue
        cap = MAX_SAMPLES_PER_LEVEL if i == schedule.n_levels - 1 else COARSE_SAMPLES_PER_LEVEL
        n_vox = n_voxels_at(fixed, schedule, i)
        out.append(FullSampler(jitter=jitter, seed=seed + i, margin=m) if n_vox <= cap
                   else RandomSampler(cap / n_vox, seed=seed + i, jitter=jitter, margin=m))
    return out


def finest_sample_count(fixed: Image, schedule: LevelSchedule, sampling: float | None) -> int:
    """Samples of the finest level (what the Mattes bin count follows)."""
    n = n_voxels_at(fixed, schedule, schedule.n_levels - 1)
    if sampling is not None and sampling < 1:
        n = int(n * sampling)
    return min(n, MAX_SAMPLES_PER_LEVEL)


def truncated(schedule: LevelSchedule, n_levels: int) -> LevelSchedule:
    """The first ``n_levels`` levels of ``schedule``."""
    n = max(1, min(int(n_levels), schedule.n_levels))
    return LevelSchedule(schedule.shrink_factors[:n], schedule.smoothing_sigmas[:n],
                         schedule.sigmas_in_physical_units)


def physical_step_tolerance(fixed: Image) -> float:
    """:data:`STEP_TOLERANCE` of the finest voxel, in physical units."""
    return STEP_TOLERANCE * float(np.min(fixed.spacing))


def isfinite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
