"""Multi-stage registrations described in a TOML file.

A configuration is a list of stages run one after the other, each started from
the previous stage's result (e.g. rigid, then affine, then a deformable
stage).  Keys of ``[defaults]`` apply to every stage unless the stage sets
them; ``[input]`` and ``[output]`` are optional and used by the command line
(paths are relative to the configuration file)::

    # rigid_then_affine.toml
    [input]                       # optional; the CLI's FIXED/MOVING override these
    fixed = "fixed.mha"
    moving = "moving.mha"
    fixed_mask = "mask_fixed.mhd"

    [output]
    prefix = "out/result"         # writes out/result.tfm, _resampled.mha, _qc.png

    [defaults]
    metric = "mattes"
    n_iterations = 150
    seed = 0

    [[stage]]
    transform = "rigid"
    levels = [4, 2]               # shrink factors, coarse to fine
    sigmas = [2.0, 1.0]           # smoothing sigmas (voxels unless sigmas_in_mm = true)

    [[stage]]
    transform = "affine"
    levels = [2, 1]
    sigmas = [1.0, 0.0]
    sampling = 0.25               # fraction of voxels, seeded random subset

Load it with :func:`load_config` and run it with :meth:`RegistrationConfig.run`::

    config = regframe.config.load_config("rigid_then_affine.toml")
    result = config.run(fixed, moving)

How stages are chained: when the next stage's transform kind can represent
the previous result exactly (translation -> rigid -> similarity -> affine),
the result is converted and optimised further, so the final transform is a
single transform of the last kind.  Otherwise (e.g. a ``"bspline"`` stage
after an affine one) the previous result becomes the fixed *initial
transform* (for B-spline stages: the linear part) of the next stage, and the
final transform is their composite.  B-spline stages also take the options
of :func:`~regframe.registration.deformable.register_bspline`
(``control_point_spacing``, ``n_grid_levels``, ``regularization``, ...).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InvalidInputError
from .image import Image
from .registration import presets
from .registration.api import register
from .registration.defaults import LINEAR_KINDS
from .registration.deformable import register_bspline
from .registration.method import RegistrationResult, RegistrationState, combine_results
from .registration.pipeline import RegistrationInputs, run_pipeline
from .registration.pipeline.base import Stage as PipelineStage
from .registration.pipeline.runner import PipelineRun
from .registration.pyramid import LevelSchedule
from .registration.stages import LinearStage
from .transforms.base import Transform

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None  # type: ignore[assignment]

__all__ = ["Stage", "RegistrationConfig", "load_config", "parse_config", "combine_results"]



@dataclass(frozen=True)
class Stage:
    """One stage of a multi-stage registration (arguments of :func:`~regframe.registration.register`).

    Attributes
    ----------
    transform : str
        ``"translation"``, ``"rigid"``, ``"similarity"``, ``"affine"`` or
        ``"bspline"`` (a deformable stage, run by
        :func:`~regframe.registration.deformable.register_bspline` with the
        previous stage's result - or the initial transform - as its linear
        part; first in a run it starts with its own affine stage).
    metric : str
        ``"mattes"``, ``"mse"`` or ``"ncc"``.
    n_iterations : int, optional
        Maximum iterations per level (default: that of the registration
        function, 200 for linear kinds).
    levels, sigmas : tuple, optional
        Shrink factors and smoothing sigmas per level, coarse to fine
        (default: :func:`register`'s automatic schedule).
    sigmas_in_mm : bool
        Sigmas in physical units instead of voxels.
    sampling : float, optional
        Fraction of voxels sampled (seeded).
    optimizer : str, optional
        ``"lbfgs"``, ``"lbfgsb"`` or ``"regular_step"`` (linear stages) /
        ``"lbfgs"``, ``"lbfgsb"`` or ``"gradient_descent"`` (B-spline stages);
        default: the stage kind's default (``register()``'s / ``register_bspline()``'s).
    initialization : str or None
        ``"auto"``, ``"moments"``, ``"geometry"``, ``"phase"`` or ``"none"`` (first stage only;
        see :func:`~regframe.registration.register`).
    rotation_search : bool, optional
        Coarse rotation search (first stage only; default: on for rigid kinds).
    seed : int
        Seed of the random sampling.
    name : str, optional
        Label shown in progress output.
    options : dict
        Further keyword arguments passed to ``register()`` unchanged (for
        options added by newer versions, e.g. B-spline grid settings).
    """

    transform: str = "rigid"
    metric: str = "mattes"
    n_iterations: int | None = None
    levels: tuple[int, ...] | None = None
    sigmas: tuple[float, ...] | None = None
    sigmas_in_mm: bool = False
    sampling: float | None = None
    optimizer: str | None = None
    initialization: str | None = "auto"
    rotation_search: bool | None = None
    seed: int = 0
    name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kinds = (*LINEAR_KINDS, *presets.PRESETS)
        if self.transform not in kinds:
            raise InvalidInputError(
                f"registration stage {self.label!r}: 'transform' must be one of {', '.join(repr(k) for k in kinds)}; "
                f"got {self.transform!r}."
            )

    def schedule(self) -> LevelSchedule | None:
        """The stage's :class:`LevelSchedule` (``None``: automatic)."""
        if self.levels is None and self.sigmas is None:
            return None
        levels = self.levels
        sigmas = self.sigmas
        if levels is None:
            raise InvalidInputError(
                f"stage {self.label!r}: 'sigmas' given without 'levels'; add e.g. levels = [4, 2, 1]."
            )
        if sigmas is None:
            sigmas = tuple(0.5 * (f - 1) if f > 1 else 0.0 for f in levels)
        return LevelSchedule(tuple(levels), tuple(float(s) for s in sigmas),
                             sigmas_in_physical_units=self.sigmas_in_mm)

    @property
    def label(self) -> str:
        """Name shown in progress output (``name`` or the transform kind)."""
        return self.name or self.transform


_STAGE_KEYS = {f.name for f in fields(Stage)} - {"options"}
#: register() arguments a configuration file must not set (they come from the caller).
_RESERVED = {"fixed", "moving", "fixed_mask", "moving_mask", "initial_transform", "callbacks",
             "schedule", "transform"}


_LINEAR_FIELDS = {f.name for f in fields(LinearStage)}


def _stage_fields(kind: str) -> set[str]:
    """Option names of the stage class that a non-linear kind's preset ends with."""
    return {f.name for f in fields(presets.STAGE_CLASSES[kind])}


def _coerce_stage(raw: Mapping[str, Any], where: str) -> Stage:
    data = dict(raw)
    options = dict(data.pop("options", {}) or {})
    kw: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _STAGE_KEYS:
            options[key] = value
            continue
        kw[key] = value
    accepted = set(inspect.signature(register).parameters) - _RESERVED
    if kw.get("transform") == "bspline":
        accepted |= set(inspect.signature(register_bspline).parameters) - _RESERVED - {"linear_stage"}
    elif kw.get("transform") in presets.STAGE_CLASSES:
        accepted |= _stage_fields(kw["transform"])
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InvalidInputError(
            f"{where}: unknown keys {unknown}; a stage takes {sorted(_STAGE_KEYS)} or other "
            f"keyword arguments of register(): {sorted(accepted - _STAGE_KEYS)}."
        )
    if "transform" not in kw:
        raise InvalidInputError(f"{where}: every stage needs a 'transform' (e.g. transform = \"rigid\").")
    for key in ("levels", "sigmas"):
        if key in kw and kw[key] is not None:
            if not isinstance(kw[key], (list, tuple)) or not kw[key]:
                raise InvalidInputError(f"{where}: '{key}' must be a non-empty list; got {kw[key]!r}.")
            kw[key] = tuple(kw[key])
    if kw.get("initialization") in ("none", "None", False):
        kw["initialization"] = None
    if "n_iterations" in kw:
        n = kw["n_iterations"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInputError(f"{where}: 'n_iterations' must be an integer >= 1; got {n!r}.")
    if "sampling" in kw and kw["sampling"] is not None:
        s = kw["sampling"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1:
            raise InvalidInputError(f"{where}: 'sampling' must be a fraction in (0, 1]; got {s!r}.")
    stage = Stage(**kw, options=options)
    stage.schedule()  # validate the schedule early
    return stage


@dataclass(frozen=True)
class RegistrationConfig:
    """A run of registration stages (what :func:`load_config` returns).

    Attributes
    ----------
    stages : tuple of Stage
    fixed, moving, fixed_mask, moving_mask, initial_transform : Path, optional
        Input files named in the ``[input]`` table (resolved against the
        configuration file's folder).
    output : Path, optional
        Output prefix from ``[output] prefix``.
    source : Path, optional
        The file the configuration was read from.
    """

    stages: tuple[Stage, ...]
    fixed: Path | None = None
    moving: Path | None = None
    fixed_mask: Path | None = None
    moving_mask: Path | None = None
    initial_transform: Path | None = None
    output: Path | None = None
    source: Path | None = None

    def run(
        self,
        fixed: Image,
        moving: Image,
        *,
        fixed_mask: Image | None = None,
        moving_mask: Image | None = None,
        initial_transform: Transform | None = None,
        callbacks: Sequence[Callable[[RegistrationState], Any]] = (),
    ) -> RegistrationResult:
        """Run every stage; returns one result (histories concatenated, warnings of the guard).

        ``result.transform`` maps fixed points to moving points through all
        stages (and ``initial_transform``, when given).
        """
        return self._run(fixed, moving, fixed_mask, moving_mask, initial_transform, callbacks).result

    def run_stages(
        self,
        fixed: Image,
        moving: Image,
        *,
        fixed_mask: Image | None = None,
        moving_mask: Image | None = None,
        initial_transform: Transform | None = None,
        callbacks: Sequence[Callable[[RegistrationState], Any]] = (),
    ) -> list[RegistrationResult]:
        """Run every stage and return the result of each (the last one holds the final mapping)."""
        run = self._run(fixed, moving, fixed_mask, moving_mask, initial_transform, callbacks)
        rows: dict[int, list[RegistrationResult]] = {}
        for (row, stage), out in zip(self._rows(initial_transform is not None), run.stages):
            if not stage.initializer:
                rows.setdefault(row, []).append(out.result)
        return [combine_results(rows[k]) for k in sorted(rows)]

    def pipeline(self, has_initial: bool = False) -> list[PipelineStage]:
        """The stages of every row (built by the same presets as ``register()``)."""
        return [stage for _, stage in self._rows(has_initial)]

    def _rows(self, has_initial: bool) -> list[tuple[int, PipelineStage]]:
        out: list[tuple[int, PipelineStage]] = []
        for index, row in enumerate(self.stages):
            linear = {k: v for k, v in dict(row.options).items() if k in _LINEAR_FIELDS}
            linear.update(metric=row.metric, schedule=row.schedule(), sampling=row.sampling)
            if row.n_iterations is not None:
                linear["n_iterations"] = row.n_iterations
            if row.optimizer is not None:
                linear["optimizer"] = row.optimizer
            if row.transform in LINEAR_KINDS:
                built = (presets.linear(row.transform, initialization=row.initialization,
                                        rotation_search=row.rotation_search, **linear)
                         if index == 0 else presets.continuation(row.transform, **linear))
            else:
                fields_of = _stage_fields(row.transform)
                options = {k: v for k, v in dict(row.options).items() if k in fields_of}
                options.update({k: linear[k] for k in ("metric", "schedule", "sampling", "n_iterations",
                                                       "optimizer") if k in linear and k in fields_of})
                first = index == 0 and not has_initial
                built = presets.preset(row.transform)(
                    linear_stage="affine" if first else None, initialization=row.initialization,
                    rotation_search=row.rotation_search, **options)
            out += [(index, st) for st in built]
        return out

    def _run(self, fixed: Image, moving: Image, fixed_mask: Any, moving_mask: Any,
             initial_transform: Transform | None, callbacks: Sequence[Callable[[RegistrationState], Any]]) -> PipelineRun:
        inputs = RegistrationInputs.for_images(fixed, moving, fixed_mask, moving_mask, where="configuration run")
        try:
            return run_pipeline(self.pipeline(initial_transform is not None), inputs,
                                initial_transform=initial_transform, seed=self.stages[0].seed, callbacks=callbacks)
        finally:
            for cb in callbacks:
                if hasattr(cb, "start_stage") and hasattr(cb, "close"):
                    cb.close()


def parse_config(data: Mapping[str, Any] | str, *, base_dir: str | os.PathLike[str] | None = None,
                 source: Path | None = None) -> RegistrationConfig:
    """Build a :class:`RegistrationConfig` from TOML text or an already parsed mapping.

    Parameters
    ----------
    data : str or mapping
        TOML text, or the dict ``tomllib.loads`` would return.
    base_dir : path-like, optional
        Folder that relative paths in ``[input]``/``[output]`` refer to
        (default: the current directory).

    Raises
    ------
    InvalidInputError
        Invalid TOML, no ``[[stage]]``, unknown sections, or a bad value.
    """
    where = f"configuration {str(source)!r}" if source is not None else "configuration"
    if isinstance(data, str):
        if tomllib is None:  # pragma: no cover
            raise InvalidInputError(
                "reading TOML on Python < 3.11 needs the 'tomli' package; install it with "
                "pip install 'regframe[all]'."
            )
        try:
            data = tomllib.loads(data)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError(f"{where}: invalid TOML: {exc}.") from exc
    data = dict(data)
    allowed = {"stage", "defaults", "input", "output"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidInputError(
            f"{where}: unknown top-level keys {unknown}; expected only {sorted(allowed)} "
            "(stages are written as [[stage]] tables)."
        )
    raw_stages = data.get("stage")
    if not raw_stages or not isinstance(raw_stages, list):
        raise InvalidInputError(
            f"{where}: at least one [[stage]] table expected, e.g.\n[[stage]]\ntransform = \"rigid\""
        )
    defaults = dict(data.get("defaults", {}))
    if "transform" in defaults:
        raise InvalidInputError(f"{where}: 'transform' belongs in each [[stage]], not in [defaults].")
    stages = tuple(
        _coerce_stage({**defaults, **dict(s)}, f"{where}, stage {i + 1}") for i, s in enumerate(raw_stages)
    )
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    def path_of(table: Mapping[str, Any], key: str) -> Path | None:
        v = table.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise InvalidInputError(f"{where}: '{key}' must be a path string; got {v!r}.")
        p = Path(v).expanduser()
        return p if p.is_absolute() else base / p

    inp = dict(data.get("input", {}))
    bad = sorted(set(inp) - {"fixed", "moving", "fixed_mask", "moving_mask", "initial_transform"})
    if bad:
        raise InvalidInputError(
            f"{where}: unknown [input] keys {bad}; allowed: fixed, moving, fixed_mask, moving_mask, "
            "initial_transform."
        )
    out = dict(data.get("output", {}))
    if set(out) - {"prefix"}:
        raise InvalidInputError(f"{where}: [output] takes only 'prefix'; got {sorted(out)}.")
    return RegistrationConfig(
        stages=stages,
        fixed=path_of(inp, "fixed"),
        moving=path_of(inp, "moving"),
        fixed_mask=path_of(inp, "fixed_mask"),
        moving_mask=path_of(inp, "moving_mask"),
        initial_transform=path_of(inp, "initial_transform"),
        output=path_of(out, "prefix"),
        source=source,
    )


def load_config(path: str | os.PathLike[str]) -> RegistrationConfig:
    """Read a TOML registration configuration (see the module docstring for the format).

    Returns
    -------
    RegistrationConfig
        The stages, ready to :meth:`~RegistrationConfig.run`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    InvalidInputError
        The file is not valid TOML or not a valid configuration.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"load_config(): no such configuration file: '{p}'.")
    return parse_config(p.read_text(encoding="utf-8"), base_dir=p.resolve().parent, source=p)
