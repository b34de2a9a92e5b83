"""Resampling images through transforms, and dense displacement fields."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from .._validation import as_points
from ..errors import InvalidInputError
from ..image import Image
from ..interpolators import Interpolator, make_interpolator
from ..transforms.base import Transform

__all__ = ["resample", "transform_points", "displacement_field"]

#: Points mapped per block, bounding temporary memory for large volumes.
_BLOCK = 1 << 21


def _check_dims(image: Image, transform: Transform, reference: Image, where: str) -> None:
    if transform.ndim != reference.ndim or image.ndim != reference.ndim:
        raise InvalidInputError(
            f"{where}: image ({image.ndim}-D), transform ({transform.ndim}-D) and reference "
            f"({reference.ndim}-D) must have the same dimension."
        )


def resample(
    image: Image,
    transform: Transform,
    reference: Image | None = None,
    interpolator: str | Interpolator = "linear",
    default_value: float = 0.0,
    *,
    dtype: DTypeLike | None = None,
) -> Image:
    """Resample ``image`` through ``transform`` onto the grid of ``reference``.

    For every voxel centre ``x`` of ``reference`` the output is
    ``image(T(x))`` (the pull-back convention of ITK's ``ResampleImageFilter``):
    with a registration result ``T`` (fixed -> moving), resampling the moving
    image onto the fixed grid aligns it with the fixed image.

    Parameters
    ----------
    image : Image
        Image to warp (the moving image).
    transform : Transform
        Maps reference-space points to ``image``-space points.
    reference : Image, optional
        Output grid (origin, spacing, direction, size); defaults to ``image``.
    interpolator : {"linear", "nearest", "bspline"} or Interpolator
        ``"nearest"`` for label images.
    default_value : float
        Value of output voxels that map outside ``image``.
    dtype : dtype, optional
        Output dtype; defaults to ``image.dtype`` for ``"nearest"`` and float64
        otherwise.  Integer outputs are rounded and clipped to the dtype range.

    Returns
    -------
    Image
        New image on the reference grid; the inputs are not modified.
    """
    reference = image if reference is None else reference
    _check_dims(image, transform, reference, "resample()")
    interp = make_interpolator(interpolator, default_value=default_value)
    interp.set_image(image)
    points = reference.voxel_points()
    values = np.empty(points.shape[0])
    for start in range(0, points.shape[0], _BLOCK):
        mapped = transform.transform_points(points[start : start + _BLOCK])
        values[start : start + _BLOCK] = interp.evaluate(mapped)[0]
    out_dtype = output_dtype(image.dtype, interpolator, dtype, float_default=np.float64)
    return reference.with_array(cast_values(values.reshape(reference.shape), out_dtype), copy=False)


def output_dtype(image_dtype: DTypeLike, interpolator: str | Interpolator, dtype: DTypeLike | None,
                 *, float_default: DTypeLike) -> np.dtype:
    """Output dtype of a resampling: ``dtype`` if given, the image's for ``"nearest"``, else ``float_default``."""
    if dtype is not None:
        return np.dtype(dtype)
    is_nearest = isinstance(interpolator, str) and interpolator == "nearest"
    return np.dtype(image_dtype) if is_nearest else np.dtype(float_default)


def cast_values(values: NDArray[np.floating], dtype: DTypeLike) -> NDArray:
    """Interpolated values as ``dtype``: integers rounded and clipped to the range, booleans ``> 0.5``."""
    out_dtype = np.dtype(dtype)
    if np.issubdtype(out_dtype, np.integer):
        info = np.iinfo(out_dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    elif out_dtype == np.bool_:
        values = values > 0.5
    return values.astype(out_dtype, copy=False)


def transform_points(transform: Transform, points: ArrayLike) -> NDArray[np.float64]:
    """Map physical points from fixed space to moving space (``transform.transform_points``)."""
    return transform.transform_points(as_points(points, transform.ndim, where="transform_points()"))


def displacement_field(transform: Transform, reference: Image) -> NDArray[np.float64]:
    """Dense displacement ``T(x) - x`` at every voxel centre of ``reference``.

    Returns
    -------
    ndarray, shape ``reference.shape + (ndim,)``
        Numpy axis order for the grid, (x, y, z) order for the vector
        components - the layout of a SimpleITK vector image's array
        (``sitk.GetImageFromArray(field, isVector=True)``).
    """
    if transform.ndim != reference.ndim:
        raise InvalidInputError(
            f"displacement_field(): transform is {transform.ndim}-D but reference is {reference.ndim}-D."
        )
    points = reference.voxel_points()
    out = np.empty_like(points)
    for start in range(0, points.shape[0], _BLOCK):
        block = points[start : start + _BLOCK]
        out[start : start + _BLOCK] = transform.transform_points(block) - block
    return out.reshape(reference.shape + (reference.ndim,))
