"""What every stage shares: the inputs, a per-run cache, the context and the Stage contract."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from ...errors import InvalidInputError
from ...image import Image, as_mask, check_image
from ...transforms.base import Transform
from ..method import RegistrationResult, RegistrationState
from ..pyramid import ImagePyramid, LevelSchedule

__all__ = ["RegistrationInputs", "StageCache", "StageContext", "StageResult", "Stage", "StageInfo"]

T = TypeVar("T")


@dataclass(frozen=True)
class RegistrationInputs:
    """The data of one registration; every field is optional, stages say what they need.

    Masks given as arrays are taken in their image's geometry (see :func:`~regframe.image.as_mask`).
    """

    fixed: Image | None = None
    moving: Image | None = None
    fixed_mask: Image | None = None
    moving_mask: Image | None = None
    fixed_landmarks: NDArray[np.float64] | None = None
    moving_landmarks: NDArray[np.float64] | None = None
    fixed_points: NDArray[np.float64] | None = None
    moving_points: NDArray[np.float64] | None = None

    @classmethod
    def for_images(cls, fixed: Any, moving: Any, fixed_mask: Any = None, moving_mask: Any = None, *,
                   where: str = "register()", **points: Any) -> RegistrationInputs:
        """Checked inputs of an image registration (typed errors for anything else)."""
        fixed = check_image(fixed, "fixed", where)
        moving = check_image(moving, "moving", where)
        if fixed.ndim != moving.ndim:
            raise InvalidInputError(
                f"{where}: fixed and moving images must have the same dimension; got {fixed.ndim}-D and "
                f"{moving.ndim}-D."
            )
        fm = None if fixed_mask is None else as_mask(fixed_mask, fixed, name="fixed_mask", where=where)
        mm = None if moving_mask is None else as_mask(moving_mask, moving, name="moving_mask", where=where)
        pts = {k: None if v is None else np.asarray(v, dtype=np.float64) for k, v in points.items()}
        return cls(fixed, moving, fm, mm, **pts)

    @property
    def ndim(self) -> int:
        for v in (self.fixed, self.fixed_points, self.fixed_landmarks):
            if v is not None:
                return int(v.ndim if isinstance(v, Image) else v.shape[1])
        raise InvalidInputError("RegistrationInputs: no fixed image or points given.")


class StageCache:
    """Per-run memory shared by the stages: image pyramids, metrics, samples, FFTs.

    Pyramids are kept per (image, schedule): stages with the same schedule smooth
    and shrink once; a stage running only the first levels of a schedule uses the
    pyramid of the full schedule.
    """

    def __init__(self) -> None:
        self._memo: dict[Hashable, Any] = {}
        self._pyramids: list[tuple[Image, ImagePyramid]] = []

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()`` once per key."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def pyramid(self, image: Image, schedule: LevelSchedule) -> ImagePyramid:
        """A pyramid of ``image`` whose levels begin with ``schedule``'s."""
        ndim = image.ndim
        for img, pyr in self._pyramids:
            if img is image and pyr.schedule.n_levels >= schedule.n_levels and all(
                pyr.schedule.level(i, ndim) == schedule.level(i, ndim) for i in range(schedule.n_levels)
            ):
                return pyr
        pyr = ImagePyramid(image, schedule)
        self._pyramids.append((image, pyr))
        return pyr


@dataclass
class StageContext:
    """What a stage may use besides its own options."""

    inputs: RegistrationInputs
    cache: StageCache
    seed: int = 0
    callbacks: Sequence[Callable[[RegistrationState], Any]] = ()
    index: int = 0


@dataclass(frozen=True)
class StageInfo:
    """How a stage announces itself to progress reporters."""

    label: str
    n_levels: int | None = None
    n_iterations: int | None = None


@dataclass(frozen=True)
class StageResult:
    """Outcome of one stage.

    Attributes
    ----------
    kind : str
    part : Transform
        The stage's own transform (it maps after the chain it started from).
    result : RegistrationResult
        Levels, history, final value and stop reason of the stage; its
        ``transform`` is the whole mapping after the stage.
    absorbs : bool
        The stage replaced the chain's last link (it started from it).
    inverse : Transform, optional
        Exact inverse of ``part`` when the stage builds one.
    candidates : tuple of Transform
        Ranked alternatives (initialization stages; the runner restarts from them).
    warnings : tuple of str
    """

    kind: str
    part: Transform
    result: RegistrationResult
    absorbs: bool = False
    inverse: Transform | None = None
    candidates: tuple[Transform, ...] = ()
    warnings: tuple[str, ...] = ()
    kept: bool = True


class Stage(ABC):
    """One step of a registration: an initializer, a linear, B-spline, SyN or point-set stage.

    Concrete stages are frozen dataclasses of plain options: a stage list is
    printable, picklable and reusable across many pairs.  ``run`` never mutates
    the chain or the inputs.
    """

    kind: ClassVar[str] = "stage"
    #: Inputs the stage needs (names of :class:`RegistrationInputs` fields).
    requires: ClassVar[frozenset[str]] = frozenset({"fixed", "moving"})
    #: Whether the runner may drop the stage's result when it makes the data term worse.
    guarded: ClassVar[bool] = True
    #: Whether the stage is an initializer (its candidates serve the whole-run guard's restarts).
    initializer: ClassVar[bool] = False

    def checked(self) -> bool:
        """Whether the runner compares this stage's data term before and after it (default: ``guarded``)."""
        return self.guarded

    def judged_jittered(self, inputs: RegistrationInputs) -> bool:
        """Whether the guard scores the stage on jittered samples, the kind it optimises (default: no)."""
        return False

    @abstractmethod
    def run(self, ctx: StageContext, chain: Any) -> StageResult:
        """Run the stage from ``chain`` (a :class:`~regframe.registration.pipeline.chain.TransformChain`)."""

    def describe(self, inputs: RegistrationInputs) -> StageInfo:
        """Label, levels and iterations for progress output."""
        return StageInfo(self.kind)

    def with_options(self, **options: Any) -> Stage:
        """A copy with some options replaced (stages are frozen)."""
        return replace(self, **options)  # type: ignore[type-var]

    @staticmethod
    def template(obj: T) -> T:
        """A private copy of a component instance given as an option (metrics, optimizers)."""
        return copy.deepcopy(obj)


def check_requires(stage: Stage, inputs: RegistrationInputs) -> None:
    """Typed error when a stage misses an input it needs."""
    missing = sorted(k for k in stage.requires if getattr(inputs, k) is None)
    if missing:
        raise InvalidInputError(
            f"{type(stage).__name__} ({stage.kind!r}) needs {missing}; they were not given."
        )


def stage_field(default: Any = None) -> Any:
    """A dataclass field compared by identity-free equality (for options holding instances)."""
    return field(default=default, compare=False)
