"""Stage lists for the named registration kinds: what ``register()``, ``register_bspline()``
and TOML configurations run.  Each preset is written once; a new kind is a new stage class and
one entry here, not a branch in ``register()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..errors import InvalidInputError
from ..transforms.base import Transform
from .defaults import LINEAR_KINDS
from .pipeline.base import Stage
from .stages.bspline import BSplineStage
from .stages.initialize import InitializeStage
from .stages.linear import LinearStage
from .stages.syn import SyNStage

__all__ = ["linear", "bspline", "syn", "continuation", "PRESETS", "STAGE_CLASSES", "DEFAULT_METRICS", "register_preset", "preset"]

#: Options of LinearStage that every linear stage of a preset shares.
_LINEAR_OPTIONS = ("metric", "schedule", "sampling", "n_iterations", "optimizer", "interpolator", "jitter")


def _linear_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in _LINEAR_OPTIONS if k in options}


def linear(kind: str | Transform, *, initialization: str | None = "auto", rotation_search: bool | None = None,
           **options: Any) -> list[Stage]:
    """Initialization, then the linear stages of ``kind``.

    ``"translation"`` and ``"rigid"`` run one stage; ``"similarity"`` one
    similarity stage; ``"affine"`` a similarity stage that stops before the
    finest level, then the affine stage.  A transform instance is optimised as
    it is (no centring; searched only with ``rotation_search=True``).
    """
    common = _linear_options(options)
    init = dict(metric=common.get("metric", "mattes"), schedule=common.get("schedule"))
    if isinstance(kind, Transform):
        return [InitializeStage(target=None, mode=None, search=bool(rotation_search), start=kind.copy(), **init),
                LinearStage(None, **common)]
    if kind not in LINEAR_KINDS:
        raise InvalidInputError(f"linear(): 'kind' must be one of {LINEAR_KINDS}; got {kind!r}.")
    first = {"translation": "translation", "rigid": "rigid"}.get(kind, "similarity")
    stages: list[Stage] = [InitializeStage(target=first, mode=initialization, search=rotation_search,
                                           anisotropic=kind == "affine", **init)]
    if kind == "affine":
        stages.append(LinearStage("similarity", skip_finest=True, **common))
    return [*stages, LinearStage(kind, **common)]


def continuation(kind: str, **options: Any) -> list[Stage]:
    """A stage that continues a chain (no initialization): linear kinds absorb, others compose."""
    if kind in LINEAR_KINDS:
        return [LinearStage(kind, **_linear_options(options))]
    return PRESETS[kind](linear_stage=None, **options)


def bspline(*, linear_stage: str | None = "affine", initialization: str | None = "auto",
            rotation_search: bool | None = None, linear_options: dict[str, Any] | None = None,
            **options: Any) -> list[Stage]:
    """The linear stages of ``linear_stage`` (none for ``None``), then a :class:`BSplineStage`."""
    pre: list[Stage] = []
    if linear_stage is not None:
        lin = {"metric": options.get("metric", "mattes"), **(linear_options or {})}
        pre = linear(linear_stage, initialization=initialization, rotation_search=rotation_search, **lin)
    return [*_checked_last(pre), BSplineStage(**options)]


def _checked_last(pre: list[Stage]) -> list[Stage]:
    """The linear stages before a deformable one, the last of them checked on its own.

    A deformable stage recovers from almost any start, so the whole-run guard cannot see a
    linear stage that went wrong (the affine stage leaving a good similarity start on the
    multi-modal brain pair: NCC 0.23 after SyN instead of 0.41; Dice 0.926 after the B-spline).
    """
    if pre and isinstance(pre[-1], LinearStage):
        pre[-1] = replace(pre[-1], check=True)
    return pre


def syn(*, linear_stage: str | None = "affine", initialization: str | None = "auto",
        rotation_search: bool | None = None, linear_options: dict[str, Any] | None = None,
        sampling: float | None = None, optimizer: Any = "lbfgs", interpolator: Any = "linear",
        **options: Any) -> list[Stage]:
    """The linear stages of ``linear_stage`` (none for ``None``), then a :class:`SyNStage`.

    The linear stages stop before the finest level, as ANTs' SyN preset does: SyN takes up
    the residual there.  The last linear stage is checked by the never-worse guard on its own
    (kept only when it does not make the data term worse).  ``sampling``, ``optimizer`` and ``interpolator`` apply to the linear stages (SyN
    works on every voxel with its own update rule).
    """
    options.setdefault("metric", "ncc")
    pre: list[Stage] = []
    if linear_stage is not None:
        lin = {"metric": options["metric"], "sampling": sampling, "optimizer": optimizer,
               "interpolator": interpolator, **(linear_options or {})}
        pre = linear(linear_stage, initialization=initialization, rotation_search=rotation_search, **lin)
        # as ANTs' SyN preset (affine iterations 2100x1200x1200x0): the linear stages stop before the finest
        # level, whose residual misalignment SyN takes up with the rest
        pre = [replace(s, skip_finest=True) if isinstance(s, LinearStage) else s for s in pre]
    return [*_checked_last(pre), SyNStage(**options)]


#: Preset of every non-linear kind by name (``register(transform=name)``).
PRESETS: dict[str, Callable[..., list[Stage]]] = {"bspline": bspline, "syn": syn}

#: The stage class each non-linear kind's preset ends with (its options are the kind's options).
STAGE_CLASSES: dict[str, type[Stage]] = {"bspline": BSplineStage, "syn": SyNStage}

#: The metric a kind uses when ``register()`` is given none.
DEFAULT_METRICS: dict[str, str] = {"syn": "ncc"}


def register_preset(name: str, builder: Callable[..., list[Stage]], stage_class: type[Stage] | None = None) -> None:
    """Make ``register(transform=name)`` run ``builder(**options)`` (a list of stages).

    ``stage_class`` (the class of the kind's own stage) lets TOML stages of this kind take its options.
    """
    PRESETS[name] = builder
    if stage_class is not None:
        STAGE_CLASSES[name] = stage_class


def preset(name: str) -> Callable[..., list[Stage]]:
    """The builder of a registered kind (typed error naming the known ones)."""
    if name not in PRESETS:
        raise InvalidInputError(
            f"register(): 'transform' must be one of {(*LINEAR_KINDS, *PRESETS)} or a Transform; got {name!r}."
        )
    return PRESETS[name]
