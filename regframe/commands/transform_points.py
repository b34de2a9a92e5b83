"""``regframe transform-points``: map physical points through a transform file."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, RegframeWarning
from .._atomic import atomic_write_text
from ._common import Output, floats, make_parent, read_image_arg

ORDER = 30


def read_points(path: str | Path, ndim: int, reference: Any = None) -> np.ndarray:
    """Points from a text file: rows of numbers, or an elastix/transformix point file.

    Elastix files start with ``point`` (physical) or ``index`` (voxel indices,
    converted with ``reference``), then the number of points, then one point
    per line.  Lines starting with ``#`` are ignored; commas count as spaces.
    """
    text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    lines = [ln.split("#", 1)[0].replace(",", " ").strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    kind = "point"
    if lines and lines[0].lower() in ("point", "index"):
        kind = lines[0].lower()
        lines = lines[2:] if len(lines) > 1 and len(lines[1].split()) == 1 else lines[1:]
    try:
        pts = np.array([[float(v) for v in ln.split()] for ln in lines], dtype=np.float64)
    except ValueError as exc:
        raise InvalidInputError(f"transform-points: '{path}' must hold numbers, one point per line: {exc}.") from exc
    if pts.size == 0:
        return np.zeros((0, ndim))
    if pts.ndim != 2 or pts.shape[1] != ndim:
        raise InvalidInputError(
            f"transform-points: expected {ndim} coordinates per line (the transform is {ndim}-D); "
            f"got rows of {pts.shape[1] if pts.ndim == 2 else 'varying'} numbers in '{path}'."
        )
    if kind == "index":
        if reference is None:
            raise InvalidInputError(
                f"transform-points: '{path}' holds voxel indices; pass --reference IMAGE (the image "
                "they index) to convert them to physical points."
            )
        outside = np.any((pts < -0.5) | (pts > np.asarray(reference.size) - 0.5), axis=1)
        if np.any(outside):
            first = int(np.argmax(outside))
            warnings.warn(
                f"transform-points: {int(outside.sum())} of {len(pts)} index points in '{path}' lie outside "
                f"the reference image (size {tuple(reference.size)}; indices are (i, j[, k]) with i along x), "
                f"e.g. point {first + 1} = {pts[first].tolist()}. They are mapped anyway; check the file "
                "and that --reference is the image the indices refer to.",
                RegframeWarning,
                stacklevel=2,
            )
        pts = reference.index_to_physical(pts)
    return pts


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``transform-points`` subparser."""
    tp = sub.add_parser("transform-points", help="map physical points through a transform file",
                        description="Map fixed-space points to moving space (the direction of a "
                                    "registration result); --inverse maps moving to fixed.")
    tp.add_argument("transform", help="transform file")
    tp.add_argument("points", nargs="?", default=None,
                    help="text file: one point per line, or an elastix point file ('point'/'index' header); "
                         "'-' reads stdin")
    tp.add_argument("-p", "--point", type=floats, action="append",
                    help="a point x,y[,z] (repeatable; negative values work: -p -75,-43,-1274)")
    tp.add_argument("-r", "--reference", default=None, help="image whose voxel indices an 'index' file uses")
    tp.add_argument("--inverse", action="store_true", help="map through the inverse transform")
    tp.add_argument("-o", "--output", default=None, help="write the mapped points here instead of stdout")
    return tp


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``regframe transform-points``."""
    from ..transforms.io import read_transform

    transform = read_transform(args.transform)
    if args.inverse:
        transform = transform.inverse()
    reference = read_image_arg(args.reference, "reference") if args.reference else None
    if args.points is None and not args.point:
        raise InvalidInputError("transform-points: give a POINTS file (or '-' for stdin) or --point x,y[,z].")
    pts = [read_points(args.points, transform.ndim, reference)] if args.points is not None else []
    for p in args.point or ():
        if len(p) != transform.ndim:
            raise InvalidInputError(
                f"transform-points: --point needs {transform.ndim} coordinates; got {len(p)}."
            )
        pts.append(np.asarray(p, dtype=np.float64)[None, :])
    points = np.concatenate(pts, axis=0)
    mapped = transform.transform_points(points) if points.size else points
    text = "\n".join(" ".join(f"{v:.10g}" for v in row) for row in mapped)
    if args.output:
        make_parent(args.output, "transform-points")
        atomic_write_text(args.output, text + ("\n" if text else ""), where="transform-points")
        out.info(f"wrote {len(mapped)} points to {args.output}")
    elif not out.json:
        out.stdout.write(text + ("\n" if text else ""))
    out.summary({"command": "transform-points", "transform": args.transform, "inverse": args.inverse,
                 "input": points, "points": mapped})
    return 0
