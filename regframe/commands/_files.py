"""Atomic output files and stack input for the command modules."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import InvalidInputError
from ..image import Image

__all__ = ["atomic_write", "read_stack", "write_stack", "TIFF_SUFFIXES"]

TIFF_SUFFIXES = (".tif", ".tiff")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffix), then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_stack(path: str | os.PathLike[str]) -> Image:
    """A stack from a multi-page TIFF, a folder of 2-D images (sorted by name) or a 3-D image file."""
    from ..io import read_image

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"stack '{p}' does not exist.")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise InvalidInputError(f"stack folder '{p}' holds no image files.")
        slices = [_read_2d(f, read_image) for f in files]
        shapes = {s.shape for s in slices}
        if len(shapes) != 1:
            raise InvalidInputError(
                f"stack folder '{p}': every image must have one size; got sizes {sorted(shapes)}. "
                "Crop or pad the sections to one size first."
            )
        return Image(np.stack([s.array for s in slices]), (*slices[0].spacing, 1.0), (*slices[0].origin, 0.0))
    if p.suffix.lower() in TIFF_SUFFIXES:
        tifffile = require("tifffile", "reading TIFF stacks")
        arr = np.asarray(tifffile.imread(str(p)))
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise InvalidInputError(
                f"TIFF stack '{p}': expected pages of 2-D grey images (a (slices, rows, columns) array); "
                f"got an array of shape {arr.shape}. Convert colour pages to grey first."
            )
        return Image(arr)
    image = read_image(p)
    if image.ndim != 3:
        raise InvalidInputError(f"stack '{p}': expected a 3-D image (slices along z); got a {image.ndim}-D image.")
    return image


def _read_2d(path: Path, read_image: Callable[[Path], Image]) -> Image:
    image = read_image(path)
    if image.ndim == 3 and image.shape[0] == 1:
        image = Image(image.array[0], image.spacing[:2], image.origin[:2], image.direction[:2, :2])
    if image.ndim != 2:
        raise InvalidInputError(f"stack slice '{path}': expected a 2-D grey image; got a {image.ndim}-D image.")
    return image


def write_stack(image: Image, path: str | os.PathLike[str]) -> Path:
    """Write a stack atomically: multi-page TIFF for ``.tif``/``.tiff``, else any format SimpleITK writes."""
    from ..io import write_image

    if Path(path).suffix.lower() in TIFF_SUFFIXES:
        tifffile = require("tifffile", "writing TIFF stacks")
        return atomic_write(path, lambda tmp: tifffile.imwrite(str(tmp), np.asarray(image.array), photometric="minisblack"))
    return atomic_write(path, lambda tmp: write_image(image, tmp))
