"""Helpers shared by the subcommands: argument types, output, image reading."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..progress import ProgressReporter
from ._interrupt import raise_if_interrupted

__all__ = ["Output", "floats", "ints", "fraction", "pixel_type", "make_parent", "jsonable", "read_image_arg", "save_resampled",
           "add_common_options"]


def floats(text: str) -> tuple[float, ...]:
    """argparse type: numbers separated by commas (or spaces)."""
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas; got {text!r}") from None


def ints(text: str) -> tuple[int, ...]:
    """argparse type: integers >= 1 separated by commas."""
    vals = floats(text)
    if not vals or any(v != int(v) or v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected integers >= 1 separated by commas (e.g. 4,2,1); got {text!r}")
    return tuple(int(v) for v in vals)


def fraction(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; got {text!r}")
    return v


def pixel_type(text: str) -> np.dtype:
    """argparse type: a numeric numpy pixel type name such as float32, uint8, int16."""
    try:
        dt = np.dtype(text)
    except TypeError:
        dt = None
    if dt is None or not (np.issubdtype(dt, np.number) or dt == np.bool_) or np.issubdtype(dt, np.complexfloating):
        raise argparse.ArgumentTypeError(
            f"expected a numeric pixel type (uint8, int16, uint16, int32, float32, float64); got {text!r}"
        )
    return dt


def make_parent(path: str | Path, where: str) -> None:
    """Create the folder of output ``path`` (a clear :class:`OutputError` when impossible)."""
    from ..errors import OutputError

    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{where}: cannot create the output folder '{parent}': {exc.strerror or exc}; choose a "
            "writable place for the outputs."
        ) from exc


def jsonable(value: Any) -> Any:
    """``value`` with numpy types, paths and non-finite floats made JSON-friendly."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


class Output:
    """Where a command's results go, honouring --quiet and --json."""

    def __init__(self, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> None:
        self.quiet = bool(args.quiet)
        self.json = bool(args.json)
        self.verbose = bool(args.verbose)
        self.stdout = stdout
        self.stderr = stderr
        self._warned: set[str] = set()

    def info(self, text: str) -> None:
        """Human-readable result text (suppressed by --quiet and --json)."""
        if not self.quiet and not self.json:
            self.stdout.write(text + "\n")

    def note(self, text: str) -> None:
        """A progress note on stderr (suppressed by --quiet)."""
        if not self.quiet:
            self.stderr.write(text + "\n")
            self.stderr.flush()

    def compile_notice(self) -> None:
        """Say "compiling kernels, first run only" when numba's cache lacks the main kernels."""
        from .._numba_cache import kernels_cached

        if not kernels_cached():
            self.note("compiling kernels, first run only (numba caches them for later runs) ...")

    def warn(self, text: str) -> None:
        """A warning on stderr (always shown; each text once)."""
        if text in self._warned:
            return
        self._warned.add(text)
        self.stderr.write(f"warning: {text}\n")

    def summary(self, data: dict[str, Any]) -> None:
        """The --json summary (printed even with --quiet)."""
        if self.json:
            self.stdout.write(json.dumps(jsonable(data), indent=2) + "\n")

    def reporter(self, n_iterations: int | None = None, n_levels: int | None = None) -> Any:
        """A progress reporter writing to stderr (silent with --quiet)."""
        return _InterruptibleReporter(
            n_iterations, n_levels=n_levels, stream=self.stderr,
            mode="none" if self.quiet else "auto", verbose=self.verbose,
        )


class _InterruptibleReporter(ProgressReporter):
    """A progress reporter that raises a deferred Ctrl-C at every iteration."""

    def __call__(self, state: Any) -> None:
        raise_if_interrupted()
        super().__call__(state)


def read_image_arg(path: str | Path, what: str, pixel_type: str | None = None) -> Any:
    """Read an image named on the command line (``what`` names it in errors)."""
    from ..io import read_image

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} image '{p}' does not exist.")
    return read_image(p, pixel_type=pixel_type)


def save_resampled(image: Any, dtype: Any, path: Path) -> None:
    """Write ``image`` with pixel type ``dtype`` (integers rounded and clipped)."""
    from ..image import cast_pixels
    from ..io import write_image

    write_image(image.with_array(cast_pixels(image.array, dtype), copy=False), path)


def add_common_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The global --quiet/--verbose/--json options (``suppress``: subcommand copies)."""
    d = argparse.SUPPRESS if suppress else False
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", default=d, help="no progress and no summary")
    g.add_argument("-v", "--verbose", action="store_true", default=d,
                   help="more progress detail; tracebacks on errors")
    p.add_argument("--json", action="store_true", default=d, help="print a machine-readable JSON summary")
