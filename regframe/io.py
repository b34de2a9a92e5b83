"""Image I/O through SimpleITK (optional extra ``io``).

Every format SimpleITK reads and writes works: MetaImage (``.mha``/``.mhd``),
NIfTI (``.nii``/``.nii.gz``), NRRD, PNG, TIFF, ... and DICOM series (pass the
directory).  Geometry is carried over verbatim (ITK order); the array is
SimpleITK's ``GetArrayFromImage`` (numpy order), see :class:`regframe.Image`.
Only scalar images are supported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ._optional import require
from .errors import InvalidInputError
from .image import Image

__all__ = ["read_image", "write_image", "from_sitk", "to_sitk"]


def _sitk() -> Any:
    return require("SimpleITK", "Image I/O")


def from_sitk(sitk_image: Any) -> Image:
    """Convert a ``SimpleITK.Image`` to a :class:`regframe.Image` (copies the pixels).

    Raises
    ------
    InvalidInputError
        The image has more than one component per pixel, or is not 2-D/3-D/4-D.
    """
    sitk = _sitk()
    if not isinstance(sitk_image, sitk.Image):
        raise TypeError(
            f"from_sitk(): 'sitk_image' must be a SimpleITK.Image; got {type(sitk_image).__name__}."
        )
    ncomp = sitk_image.GetNumberOfComponentsPerPixel()
    if ncomp != 1:
        raise InvalidInputError(
            f"from_sitk(): only scalar images are supported; got {ncomp} components per pixel "
            f"({sitk_image.GetPixelIDTypeAsString()}). Convert first, e.g. to grey scale with "
            "SimpleITK.VectorIndexSelectionCast(image, 0) or a weighted sum of the channels."
        )
    ndim = sitk_image.GetDimension()
    array = sitk.GetArrayFromImage(sitk_image)  # a copy, numpy order
    return Image(
        array,
        spacing=sitk_image.GetSpacing(),
        origin=sitk_image.GetOrigin(),
        direction=np.asarray(sitk_image.GetDirection(), dtype=np.float64).reshape(ndim, ndim),
        copy=False,
    )


def to_sitk(image: Image) -> Any:
    """Convert a :class:`regframe.Image` to a ``SimpleITK.Image`` (copies the pixels).

    Boolean images become ``uint8`` and ``float16`` becomes ``float32``
    (SimpleITK has no such pixel types).
    """
    sitk = _sitk()
    if not isinstance(image, Image):
        raise TypeError(f"to_sitk(): 'image' must be a regframe.Image; got {type(image).__name__}.")
    array = image.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    out.SetSpacing([float(v) for v in image.spacing])
    out.SetOrigin([float(v) for v in image.origin])
    out.SetDirection([float(v) for v in image.direction.reshape(-1)])
    return out


def read_image(
    path: str | os.PathLike[str], *, dtype: DTypeLike | None = None, series_id: str | None = None
) -> Image:
    """Read a scalar image file, or a DICOM series from a directory.

    Parameters
    ----------
    path : str or path-like
        An image file in any format SimpleITK reads, or a directory holding
        one DICOM series (read with ``ImageSeriesReader``).
    dtype : dtype, optional
        Convert the pixels to this numpy dtype (e.g. ``np.float32``).
        Default: keep the file's pixel type.
    series_id : str, optional
        DICOM series instance UID to read when the directory holds several.

    Returns
    -------
    Image

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    InvalidInputError
        The file cannot be read, holds a multi-component image, or the
        directory holds no (or several, without ``series_id``) DICOM series.
    """
    sitk = _sitk()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"read_image(): no such file or directory: '{p}'.")
    if p.is_dir():
        reader = sitk.ImageSeriesReader()
        ids = list(reader.GetGDCMSeriesIDs(str(p)))
        if not ids:
            raise InvalidInputError(
                f"read_image(): directory '{p}' must hold a DICOM series; none was found. "
                "Pass a file path to read a single image."
            )
        if series_id is None:
            if len(ids) > 1:
                raise InvalidInputError(
                    f"read_image(): directory '{p}' holds {len(ids)} DICOM series {ids}; "
                    "choose one with series_id=..."
                )
            series_id = ids[0]
        elif series_id not in ids:
            raise InvalidInputError(
                f"read_image(): 'series_id' must be one of {ids}; got {series_id!r}."
            )
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(p), series_id))
        try:
            simg = reader.Execute()
        except RuntimeError as exc:
            raise InvalidInputError(f"read_image(): cannot read DICOM series in '{p}': {exc}") from exc
    else:
        try:
            simg = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise InvalidInputError(
                f"read_image(): cannot read '{p}' with SimpleITK (unsupported or corrupt file): "
                f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"
            ) from exc
    image = from_sitk(simg)
    if dtype is not None:
        image = image.with_array(np.asarray(image.array, dtype=dtype), copy=False)
    return image


def write_image(image: Image, path: str | os.PathLike[str], *, compress: bool = False) -> None:
    """Write ``image`` to ``path``; the format follows the file extension.

    Parameters
    ----------
    image : Image
    path : str or path-like
        E.g. ``out.mha``, ``out.nii.gz``, ``out.nrrd``, ``out.png`` (PNG needs
        an integer pixel type and a 2-D image).
    compress : bool, default False
        Ask SimpleITK to compress (formats that support it).

    Raises
    ------
    InvalidInputError
        SimpleITK cannot write this image in this format.
    """
    sitk = _sitk()
    simg = to_sitk(image)
    try:
        sitk.WriteImage(simg, str(Path(path)), bool(compress))
    except RuntimeError as exc:
        raise InvalidInputError(
            f"write_image(): cannot write a {image.ndim}-D {image.dtype} image to '{path}': "
            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc} "
            "Choose a format that supports this pixel type (e.g. .mha or .nii.gz) or convert "
            "the array with image.with_array(image.array.astype(...))."
        ) from exc
