"""Point files: ITK/elastix point files, CSV and plain text (read), written atomically.

Formats read by :func:`read_points` (detected from the content):

* elastix / transformix input files: a first line ``point`` (physical
  coordinates) or ``index`` (voxel indices, converted to physical points with
  a reference image), then the number of points, then one point per line;
* CSV: comma-separated rows, optionally under a header row of names
  (``x,y,z``); extra columns beyond ``ndim`` are an error;
* plain text: whitespace-separated rows.

Lines starting with ``#`` (and the rest of a line after ``#``) are comments.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_choice
from ..errors import InvalidInputError, ShapeError
from ..image import Image

__all__ = ["read_points", "write_points", "parse_points"]

PathLike = str | os.PathLike


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_points(
    text: str, *, ndim: int | None = None, reference: Image | None = None, source: str = "<string>"
) -> NDArray[np.float64]:
    """Points from the text of a point file (see the module notes for the formats).

    Parameters
    ----------
    text : str
    ndim : {2, 3}, optional
        Expected dimension (default: the number of columns).
    reference : Image, optional
        Converts an ``index`` file's voxel indices (x, y[, z] order) to
        physical points; required for ``index`` files.
    source : str
        Name used in error messages.

    Returns
    -------
    (n, ndim) ndarray of float64
    """
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    kind = "point"
    if lines and lines[0].lower() in ("point", "index"):
        kind = lines[0].lower()
        lines = lines[1:]
        if lines and len(lines[0].split()) == 1 and _is_number(lines[0]):
            count = float(lines[0])
            lines = lines[1:]
            if count != len(lines):
                raise InvalidInputError(
                    f"read_points(): '{source}' announces {count:g} points but holds {len(lines)}; fix the "
                    "count on the second line."
                )
    rows = [ln.replace(",", " ").replace(";", " ").split() for ln in lines]
    if rows and not any(_is_number(v) for v in rows[0]):  # a CSV header row (names only)
        rows = rows[1:]
    try:
        pts = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise InvalidInputError(f"read_points(): '{source}' must hold numbers, one point per line: {exc}.") from exc
    if pts.size == 0:
        return np.zeros((0, ndim or 3))
    if pts.ndim != 2 or pts.shape[1] not in (2, 3) or (ndim is not None and pts.shape[1] != ndim):
        cols = pts.shape[1] if pts.ndim == 2 else "a varying number of"
        want = ndim if ndim is not None else "2 or 3"
        raise ShapeError(f"read_points(): expected {want} coordinates per point in '{source}'; got {cols} columns.")
    if not np.all(np.isfinite(pts)):
        raise InvalidInputError(f"read_points(): '{source}' holds non-finite coordinates.")
    if kind == "index":
        if reference is None:
            raise InvalidInputError(
                f"read_points(): '{source}' holds voxel indices ('index' header); pass reference=IMAGE "
                "(the image they index) to convert them to physical points."
            )
        if reference.ndim != pts.shape[1]:
            raise ShapeError(
                f"read_points(): '{source}' holds {pts.shape[1]}-D indices but the reference image is "
                f"{reference.ndim}-D."
            )
        pts = reference.index_to_physical(pts)
    return pts


def read_points(path: PathLike, *, ndim: int | None = None, reference: Image | None = None) -> NDArray[np.float64]:
    """Read a point file (elastix ``point``/``index``, CSV or plain text).

    See :func:`parse_points` for the parameters.

    Raises
    ------
    FileNotFoundError
    InvalidInputError, ShapeError
        Unreadable content, wrong column count, or an ``index`` file without
        ``reference``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"read_points(): point file '{p}' does not exist.")
    return parse_points(p.read_text(), ndim=ndim, reference=reference, source=str(p))


def write_points(path: PathLike, points: ArrayLike, *, format: str | None = None) -> None:
    """Write points atomically (a temporary file in the same folder, then a rename).

    Parameters
    ----------
    path : str or PathLike
    points : (n, 2) or (n, 3) array_like
    format : {"text", "csv", "elastix"}, optional
        Default: ``"csv"`` for a ``.csv`` suffix, else ``"elastix"`` (a
        ``point`` header and the count, readable by transformix and
        :func:`read_points`).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ShapeError(f"write_points(): 'points' must be an (n, 2) or (n, 3) array; got shape {pts.shape}.")
    p = Path(path)
    fmt = format or ("csv" if p.suffix.lower() == ".csv" else "elastix")
    check_choice(fmt, ("text", "csv", "elastix"), where="write_points()", name="format")
    sep = "," if fmt == "csv" else " "
    body = [sep.join(repr(float(v)) for v in row) for row in pts]
    head = {"csv": [",".join("xyz"[: pts.shape[1]])], "elastix": ["point", str(pts.shape[0])], "text": []}[fmt]
    text = "\n".join(head + body) + "\n"
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
