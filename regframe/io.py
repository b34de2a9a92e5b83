"""Image I/O through SimpleITK (optional extra ``io``).

Every format SimpleITK reads and writes works: MetaImage (``.mha``/``.mhd``),
NIfTI (``.nii``/``.nii.gz``), NRRD, PNG, TIFF, ... and DICOM series (pass the
directory).  Geometry is carried over verbatim (ITK order); the array is
SimpleITK's ``GetArrayFromImage`` (numpy order), see :class:`regframe.Image`.

Images are scalar.  :func:`read_image` reads grey pictures stored the way many
tools export them: palette and RGB(A) pictures with equal channels give that
channel, real colour gives the luminance (with an
:class:`~regframe.errors.ImageConversionWarning`), an alpha channel is dropped.
Multi-page TIFF stacks read as 3-D images (with ``tifffile``, extra ``tiff``,
the ImageJ z spacing and x/y resolution are kept) and a folder of numbered 2-D
pictures reads as one 3-D stack.  Every file is written atomically (a
temporary name in the same folder, renamed when complete).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ._atomic import atomic_path
from ._optional import require
from .errors import ImageConversionWarning, InvalidInputError
from .image import Image, cast_pixels

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
            "SimpleITK.VectorIndexSelectionCast(image, 0) or a weighted sum of the channels "
            "(regframe.read_image() converts grey and colour pictures itself)."
        )
    array = sitk.GetArrayFromImage(sitk_image)  # a copy, numpy order
    return Image(array, copy=False, **_geometry(sitk_image))


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


#: Rec. 709 luminance weights (ITK's ``RGBPixel::GetLuminance``).
_LUMINANCE = np.array([0.2125, 0.7154, 0.0721])

#: Suffixes read with tifffile when it is installed.
_TIFF_SUFFIXES = (".tif", ".tiff")

#: Picture suffixes a folder of 2-D slices may hold.
_SLICE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

#: Formats whose header names a separate data file (written into a staging folder).
_DETACHED_SUFFIXES = (".mhd", ".hdr", ".nhdr")


def _pixel_dtype(pixel_type: DTypeLike | None, dtype: DTypeLike | None) -> np.dtype | None:
    """The requested pixel type (``pixel_type`` and its older name ``dtype``)."""
    if pixel_type is not None and dtype is not None and np.dtype(pixel_type) != np.dtype(dtype):
        raise InvalidInputError(
            f"read_image(): give 'pixel_type' or 'dtype' (the same option); got {pixel_type!r} and {dtype!r}."
        )
    want = pixel_type if pixel_type is not None else dtype
    if want is None:
        return None
    try:
        if isinstance(want, (int, np.integer)) and not isinstance(want, bool):  # SimpleITK pixel ID
            probe = _sitk().Image([1, 1], int(want))
            dt = _sitk().GetArrayViewFromImage(probe).dtype if probe.GetNumberOfComponentsPerPixel() == 1 else None
        else:
            dt = np.dtype(want)
    except (TypeError, RuntimeError, ValueError):
        dt = None
    if dt is None or not (np.issubdtype(dt, np.number) or dt == np.bool_) or np.issubdtype(dt, np.complexfloating):
        raise InvalidInputError(
            "read_image(): 'pixel_type' must be a real numeric numpy type such as 'float32', 'uint8' "
            f"or 'int16' (or a scalar SimpleITK pixel ID such as SimpleITK.sitkFloat32); got {want!r}."
        )
    return dt


def _to_scalar(array: NDArray[Any], n_components: int, source: str, kind: str) -> NDArray[Any]:
    """Grey values of a picture whose last axis holds ``n_components`` channels.

    1 or 2 components: grey (and alpha); 3 or 4: RGB (and alpha).  Equal colour
    channels give that channel (pixel type kept); colour gives the luminance
    (float32) with an :class:`ImageConversionWarning`.  Alpha is dropped.
    """
    if n_components not in (2, 3, 4) or not np.issubdtype(array.dtype, np.integer):
        raise InvalidInputError(
            f"read_image(): '{source}' must be a scalar image or a grey/colour picture (1-4 integer "
            f"channels); got {n_components} components per pixel ({kind}). Select one component first, "
            "e.g. SimpleITK.VectorIndexSelectionCast(image, 0), and wrap it with regframe.from_sitk()."
        )
    n_colour = 1 if n_components == 2 else 3
    colour = array[..., :n_colour]
    dropped = []
    if n_components in (2, 4):
        alpha = array[..., -1]
        if np.any(alpha != alpha.flat[0]) or alpha.flat[0] != np.iinfo(array.dtype).max:
            dropped.append("its alpha (transparency) channel, which is not fully opaque, was dropped")
    if n_colour == 1 or (np.array_equal(colour[..., 0], colour[..., 1])
                         and np.array_equal(colour[..., 0], colour[..., 2])):
        grey = np.ascontiguousarray(colour[..., 0])
    else:
        grey = (colour.astype(np.float64) @ _LUMINANCE).astype(np.float32)
        dropped.insert(0, "its colour channels differ, so the luminance 0.2125 R + 0.7154 G + 0.0721 B "
                          "(float32) was taken")
    if dropped:
        warnings.warn(
            f"read_image(): '{source}' is a {n_components}-channel picture ({kind}); "
            + "; ".join(dropped)
            + ". Pass a scalar image to avoid the conversion.",
            ImageConversionWarning,
            stacklevel=3,
        )
    return grey


def _geometry(simg: Any) -> dict[str, Any]:
    ndim = simg.GetDimension()
    return {
        "spacing": simg.GetSpacing(),
        "origin": simg.GetOrigin(),
        "direction": np.asarray(simg.GetDirection(), dtype=np.float64).reshape(ndim, ndim),
    }


def _sitk_message(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if ln.startswith(("sitk::ERROR", "ITK ERROR", "Description"))]
    return (useful or lines or [str(exc)])[-1]


def _unreadable(p: Path, exc: Exception, sitk: Any) -> InvalidInputError:
    """A clear error for a file SimpleITK cannot read (truncated files say so)."""
    size = p.stat().st_size
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return InvalidInputError(
            f"read_image(): cannot read '{p}' ({size} bytes): expected an image file SimpleITK can "
            f"read, but its header cannot be parsed (unsupported or corrupt file; SimpleITK: {_sitk_message(exc)}). "
            "Check the format and the file extension."
        )
    n_pixels = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()
    type_name = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    return InvalidInputError(
        f"read_image(): cannot read '{p}': expected the pixel data its header describes ({n_pixels} values of "
        f"{type_name}, size {reader.GetSize()}); the file ({size} bytes) is truncated or corrupt, so "
        "the data cannot be read. Copy or export the file again."
    )


def _read_picture_with_pil(p: Path) -> NDArray[Any]:
    """Pixels of a picture SimpleITK has no pixel type for (grey+alpha PNG)."""
    pil = require("PIL.Image", "Reading grey+alpha pictures")
    with pil.open(p) as picture:
        return np.asarray(picture)


def _read_file(p: Path) -> Image:
    sitk = _sitk()
    try:
        simg = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        if "Unknown PixelType" in str(exc) and p.suffix.lower() == ".png":
            array = _read_picture_with_pil(p)
            if array.ndim == 3:
                array = _to_scalar(array, array.shape[-1], str(p), "a picture with an alpha channel")
            return Image(array, copy=False)
        raise _unreadable(p, exc, sitk) from exc
    ncomp = simg.GetNumberOfComponentsPerPixel()
    if ncomp == 1:
        return from_sitk(simg)
    array = _to_scalar(sitk.GetArrayFromImage(simg), ncomp, str(p), simg.GetPixelIDTypeAsString())
    return Image(array, copy=False, **_geometry(simg))


def _tiff_spacing(tif: Any, ndim: int) -> tuple[float, ...]:
    """(x, y[, z]) spacing from TIFF resolution tags and ImageJ metadata (1 when absent)."""
    page = tif.pages[0]
    ij = tif.imagej_metadata or {}
    unit = page.tags.get("ResolutionUnit")
    unit = int(unit.value) if unit is not None else 1
    spacing = []
    for name in ("XResolution", "YResolution"):
        tag = page.tags.get(name)
        value = 1.0
        if tag is not None and (unit in (2, 3) or "unit" in ij):
            num, den = tag.value
            if num > 0 and den > 0:
                value = den / num * {2: 25.4, 3: 10.0}.get(unit, 1.0)
        spacing.append(value)
    if ndim == 3:
        spacing.append(float(ij.get("spacing", 1.0)))
    return tuple(spacing)


def _read_tiff(p: Path) -> Image | None:
    """A (multi-page) TIFF through tifffile; ``None`` when tifffile is not installed."""
    try:
        import tifffile
    except ImportError:
        return None
    with tifffile.TiffFile(p) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
        if "S" in axes and axes[-1] == "S":  # samples per pixel (RGB[A])
            array = _to_scalar(array, array.shape[-1], str(p), f"TIFF samples {axes}")
            axes = axes[:-1]
        keep = tuple(i for i, n in enumerate(array.shape) if n > 1 or axes[i] in "YX")
        array = array.reshape(tuple(array.shape[i] for i in keep))
        if array.ndim not in (2, 3):
            raise InvalidInputError(
                f"read_image(): '{p}' must hold a 2-D picture or a stack of 2-D pages; got a TIFF "
                f"series of shape {series.shape} (axes {series.axes}). Split it into one stack per "
                "channel or time point (e.g. with tifffile) and read each."
            )
        spacing = _tiff_spacing(tif, array.ndim)
    return Image(array, spacing=spacing, copy=False)


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _read_slices(p: Path) -> Image | None:
    """A folder of 2-D pictures (same suffix) stacked in natural name order; ``None`` if there are none."""
    everything = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    if any(f.suffix.lower() in (".dcm", ".ima") for f in everything):
        return None  # a DICOM folder (which may hold preview pictures too)
    files = [f for f in everything if f.suffix.lower() in _SLICE_SUFFIXES]
    suffixes = {f.suffix.lower() for f in files}
    if len(files) < 2 or len(suffixes) != 1:
        return None
    files.sort(key=_natural_key)
    slices = [_read_path(f, None) for f in files]
    first = slices[0]
    for f, s in zip(files, slices):
        if s.ndim != 2 or s.shape != first.shape:
            raise InvalidInputError(
                f"read_image(): the pictures in '{p}' must be 2-D and all of size {first.size} to be "
                f"stacked; got '{f.name}' of size {s.size}. Keep one stack per folder."
            )
    array = np.stack([s.array for s in slices])
    if len({s.dtype for s in slices}) > 1:
        array = array.astype(np.float32)
    return Image(array, spacing=(*first.spacing, 1.0), origin=(*first.origin, 0.0), copy=False)


def _read_dicom(p: Path, series_id: str | None) -> Image:
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    ids = list(reader.GetGDCMSeriesIDs(str(p)))
    if not ids:
        raise InvalidInputError(
            f"read_image(): directory '{p}' must hold a DICOM series or numbered 2-D pictures of one "
            f"format ({', '.join(_SLICE_SUFFIXES)}); neither was found. Pass a file path to read a "
            "single image."
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
    return from_sitk(simg)


def _read_path(p: Path, series_id: str | None) -> Image:
    if p.is_dir():
        if series_id is None:
            stack = _read_slices(p)
            if stack is not None:
                return stack
        return _read_dicom(p, series_id)
    if p.suffix.lower() in _TIFF_SUFFIXES:
        image = _read_tiff(p)
        if image is not None:
            return image
    return _read_file(p)


def read_image(
    path: str | os.PathLike[str],
    *,
    pixel_type: DTypeLike | None = None,
    dtype: DTypeLike | None = None,
    series_id: str | None = None,
) -> Image:
    """Read a scalar image file, a TIFF stack, a folder of 2-D slices or a DICOM series.

    Parameters
    ----------
    path : str or path-like
        An image file in any format SimpleITK reads; a multi-page TIFF (a 3-D
        image; read with tifffile when installed, keeping ImageJ's z spacing);
        or a directory holding numbered 2-D pictures of one format (stacked in
        natural name order, z spacing 1) or one DICOM series.
    pixel_type : dtype or SimpleITK pixel ID, optional
        Convert the pixels to this numpy type (e.g. ``"float32"``, ``np.uint8``,
        or ``SimpleITK.sitkFloat32`` as in ``SimpleITK.ReadImage(path, type)``);
        integers are rounded and clipped to the type's range.  Default: keep
        the file's pixel type (float32 for the luminance of colour pictures).
    dtype : dtype, optional
        The same as ``pixel_type`` (older name).
    series_id : str, optional
        DICOM series instance UID to read when the directory holds several.

    Returns
    -------
    Image

    Warns
    -----
    ImageConversionWarning
        A colour picture was converted to its luminance, or a (not fully
        opaque) alpha channel was dropped.  Grey pictures stored as palette or
        RGB with equal channels read silently as their grey values.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    InvalidInputError
        The file cannot be read (unsupported, corrupt or truncated), holds a
        vector image that is not a picture, ``pixel_type`` is not a numeric
        type, or the directory holds neither slices nor (exactly one, without
        ``series_id``) DICOM series.
    """
    want = _pixel_dtype(pixel_type, dtype)
    _sitk()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"read_image(): no such file or directory: '{p}'.")
    image = _read_path(p, series_id)
    if want is not None and want != image.dtype:
        image = image.with_array(cast_pixels(image.array, want), copy=False)
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
    OutputError
        The folder is missing or not writable.

    Notes
    -----
    The file is written under a temporary name in the same folder and renamed
    when complete, so an interrupted write never leaves a partial file.
    """
    sitk = _sitk()
    simg = to_sitk(image)
    p = Path(path)
    detached = p.suffix.lower() in _DETACHED_SUFFIXES
    with atomic_path(p, where="write_image()", staging_folder=detached) as tmp:
        try:
            sitk.WriteImage(simg, str(tmp), bool(compress))
        except RuntimeError as exc:
            raise InvalidInputError(
                f"write_image(): cannot write a {image.ndim}-D {image.dtype} image to '{p}': "
                f"this format does not take this pixel type or dimension (SimpleITK: {_sitk_message(exc)}). "
                "Choose a format that supports it (e.g. .mha or .nii.gz) or convert the array with "
                "image.with_array(image.array.astype(...))."
            ) from exc
