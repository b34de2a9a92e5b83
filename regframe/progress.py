"""Progress reporting for registrations: one bar per resolution level.

:class:`ProgressReporter` is a :class:`~regframe.registration.RegistrationMethod`
callback (``callbacks=[reporter]``, also accepted by :func:`regframe.registration.register`).
With ``tqdm`` installed (``pip install 'regframe[progress]'``) and a terminal on
the output stream it draws one bar per resolution level showing the iteration
and the metric value; otherwise (no tqdm, output redirected to a file or a
pipe, CI logs) it degrades to plain, grep-friendly lines::

    [rigid level 1/3] iteration   10  metric -0.412345
    [rigid level 1/3] done: 17 iterations, metric -0.431120
    [bspline level 2/2] iteration    0  metric -0.52

Every line is labelled ``[<stage kind> level i/n]``: the kind announced by
:meth:`ProgressReporter.start_stage`, the level counted from 1 within the stage
and ``n`` the stage's own level count (the QC metric curve's legend counts the
same way).  A stage nobody announced is called ``stage k``.

The reporter never stops a run (it always returns ``None``) and never touches
the state it is given.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Literal, TextIO

from ._validation import check_choice
from .errors import InvalidInputError

__all__ = ["ProgressReporter", "ProgressMode"]

ProgressMode = Literal["auto", "bar", "lines", "none"]
_MODES = ("auto", "bar", "lines", "none")


def _tqdm_class() -> Any | None:
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return tqdm


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # closed stream
        return False


class ProgressReporter:
    """Per-level progress of a registration, usable as a callback.

    Parameters
    ----------
    n_iterations : int, optional
        Maximum iterations per level (the length of each bar).  Without it the
        bars count up without a total.
    n_levels : int, optional
        Number of levels per stage (shown as ``level i/n``).
    stream : text stream, optional
        Where to write (default ``sys.stderr``, so that ``stdout`` stays free
        for results and ``--json`` output).
    mode : {"auto", "bar", "lines", "none"}
        ``"auto"``: tqdm bars when tqdm is installed and ``stream`` is a
        terminal, plain lines otherwise.  ``"bar"`` falls back to lines when
        tqdm is missing.  ``"none"`` records but prints nothing.
    every : int, default 10
        In line mode, print every ``every``-th iteration (and each level's
        first and last).
    verbose : bool, default False
        Also show the gradient norm and step length (and, in line mode, print
        every iteration).

    Attributes
    ----------
    levels : list of dict
        One record per finished level: ``stage`` (1-based count of stages
        seen), ``kind``, ``part``, ``level`` (0-based), ``iterations``,
        ``first_value``, ``last_value``.

    Notes
    -----
    Stages are announced with :meth:`start_stage` (the pipeline runner, a
    TOML configuration and the demo do so).  A change of
    ``RegistrationState.stage`` without an announcement starts a ``stage k``;
    when the level number goes back within one stage without an
    announcement, the lines are labelled ``part 2``, ``part 3``, ...
    """

    def __init__(
        self,
        n_iterations: int | None = None,
        *,
        n_levels: int | None = None,
        stream: TextIO | None = None,
        mode: ProgressMode = "auto",
        every: int = 10,
        verbose: bool = False,
    ) -> None:
        check_choice(mode, _MODES, where="ProgressReporter()", name="mode")
        if every < 1:
            raise InvalidInputError(f"ProgressReporter(): 'every' must be >= 1; got {every}.")
        self.n_iterations = None if n_iterations is None else int(n_iterations)
        self.n_levels = None if n_levels is None else int(n_levels)
        self._default_levels = self.n_levels
        self.stream = stream if stream is not None else sys.stderr
        self.every = int(every)
        self.verbose = bool(verbose)
        tqdm = _tqdm_class()
        if mode == "auto":
            mode = "bar" if (tqdm is not None and _is_tty(self.stream)) else "lines"
        elif mode == "bar" and tqdm is None:
            mode = "lines"
        self.mode: str = mode
        self._tqdm = tqdm
        self._bar: Any = None
        self._stage = 0
        self._part = 0
        self._stage_name: str | None = None
        self._stage_index: int | None = None
        self._announced = False
        self._state_stage: int | None = None
        self._level: int | None = None
        self._count = 0
        self._first = math.nan
        self._last = math.nan
        self._last_iteration = -1
        self.levels: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- public
    def start_stage(self, index: int | str | None = None, kind: str | None = None,
                    n_levels: int | None = None, n_iterations: int | None = None) -> None:
        """Announce a new stage (closes the current level's bar).

        The pipeline runner calls ``callback.start_stage(index, kind, n_levels,
        n_iterations)`` before each stage.

        Parameters
        ----------
        index : int, optional
            The stage's index in the pipeline (0-based; informational).  A
            string here is taken as ``kind`` (the older ``start_stage(label,
            n_levels=..., n_iterations=...)`` form).
        kind : str, optional
            What the stage does: ``"rigid"``, ``"affine"``, ``"bspline"``, ...;
            the label of its lines.  Without it the stage is ``stage k``.
        n_levels : int, optional
            The stage's number of resolution levels (the ``n`` of ``level i/n``;
            default: the reporter's ``n_levels``).
        n_iterations : int, optional
            Maximum iterations per level (the length of the bars).
        """
        if isinstance(index, str):
            index, kind = None, index if kind is None else kind
        self._finish_level()
        self._stage += 1
        self._part = 1
        self._stage_name = kind
        self._stage_index = None if index is None else int(index)
        self._announced = True
        self._level = None
        self.n_levels = self._default_levels if n_levels is None else int(n_levels)
        if n_iterations is not None:
            self.n_iterations = int(n_iterations)

    def __call__(self, state: Any) -> None:
        """Record one :class:`~regframe.registration.RegistrationState`."""
        level = int(state.level)
        iteration = int(state.iteration)
        stage = getattr(state, "stage", None)
        if self._announced:  # the first state of an announced stage tells its index
            self._announced = False
            self._state_stage = stage
        elif stage is not None and self._state_stage is not None and stage != self._state_stage:
            self.start_stage(None, None)  # a stage nobody announced: "stage k"
            self._announced = False
            self._state_stage = stage
        elif self._state_stage is None:
            self._state_stage = stage
        if self._level is None or level != self._level or iteration < self._last_iteration:
            new_part = self._level is not None and (level < self._level or
                                                    (level == self._level and iteration < self._last_iteration))
            self._finish_level()
            if self._stage == 0:
                self._stage, self._part = 1, 1
            elif new_part:
                self._part += 1  # e.g. register("affine") without stage announcements: rigid, then affine
            self._start_level(level)
        self._count += 1
        self._last_iteration = iteration
        value = float(state.value)
        if self._count == 1:
            self._first = value
        self._last = value
        if self.mode == "bar":
            post = {"metric": f"{value:.6g}"}
            if self.verbose:
                post["|g|"] = f"{float(state.gradient_norm):.3g}"
                step = float(getattr(state, "step_norm", math.nan))
                if math.isfinite(step):
                    post["step"] = f"{step:.3g}"
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(1)
        elif self.mode == "lines":
            if self.verbose or self._count == 1 or self._count % self.every == 0:
                extra = ""
                if self.verbose:
                    extra = f"  |grad| {float(state.gradient_norm):.4g}"
                    step = float(getattr(state, "step_norm", math.nan))
                    if math.isfinite(step):
                        extra += f"  step {step:.4g}"
                self._write(f"{self._prefix()} iteration {iteration:4d}  metric {value:.6g}{extra}")
        return None

    def close(self) -> None:
        """Finish the current level (close its bar / print its last line)."""
        self._finish_level()

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- helpers
    def _prefix(self) -> str:
        lv = "?" if self._level is None else str(self._level + 1)
        # a level beyond the announced count means the announcement does not describe it: no "/n"
        fits = self.n_levels and (self._level is None or self._level < self.n_levels)
        of = f"/{self.n_levels}" if fits else ""
        stage = self._stage_name if self._stage_name else f"stage {self._stage}"
        part = f" part {self._part}" if self._part > 1 else ""
        return f"[{stage}{part} level {lv}{of}]"

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()

    def _start_level(self, level: int) -> None:
        self._level = level
        self._count = 0
        self._first = self._last = math.nan
        self._last_iteration = -1
        if self.mode == "bar":
            self._bar = self._tqdm(
                total=self.n_iterations,
                desc=self._prefix().strip("[]"),
                unit="it",
                file=self.stream,
                leave=True,
                dynamic_ncols=True,
            )

    def _finish_level(self) -> None:
        if self._level is None or self._count == 0:
            return
        self.levels.append(
            {
                "stage": self._stage,
                "kind": self._stage_name,
                "part": self._part,
                "level": self._level,
                "iterations": self._count,
                "first_value": self._first,
                "last_value": self._last,
            }
        )
        if self.mode == "bar" and self._bar is not None:
            self._bar.total = self._count  # converged early: show the bar as complete
            self._bar.refresh()
            self._bar.close()
            self._bar = None
        elif self.mode == "lines":
            self._write(f"{self._prefix()} done: {self._count} iterations, metric {self._last:.6g}")
        self._count = 0  # keep self._level: a following level/stage change is detected
