"""Resampling images through transforms, and dense displacement fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from .._validation import as_points
from ..errors import InvalidInputError
from ..image import Image
from ..interpolators import Interpolator, make_interpolator
from ..transforms.base import Transform

__all__ = ["resample", "transform_points", "displacement_field"]

#: Voxels mapped per block (whole rows of the reference grid): the block's indices, points,
#: mapped points and values (float64) take about 3 MiB whatever the image size.
_BLOCK = 1 << 15

#: Output pixel types :func:`resample` accepts (numpy names).
_DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
           "float32", "float64")


def _row_blocks(reference: Image) -> Iterator[tuple[int, int, NDArray[np.float64]]]:
    """Yield ``(start, stop, points)``: voxel-centre points of consecutive whole rows of ``reference``.

    ``points`` are the rows ``start:stop`` of :meth:`Image.voxel_points` (same
    formula), generated per block instead of for the whole grid at once.
    """
    shape = reference.shape
    row = shape[-1]
    n_rows = int(np.prod(shape[:-1], dtype=np.int64))
    per_block = max(1, _BLOCK // row)
    x = np.arange(row, dtype=np.float64)
    i2p_t = reference.index_to_physical_matrix.T
    for r0 in range(0, n_rows, per_block):
        r1 = min(n_rows, r0 + per_block)
        outer = np.unravel_index(np.arange(r0, r1, dtype=np.int64), shape[:-1])  # numpy order
        idx = np.empty(((r1 - r0) * row, reference.ndim))  # integer indices, exact in float64
        idx[:, 0] = np.tile(x, r1 - r0)
        for axis, values in enumerate(reversed(outer), start=1):
            idx[:, axis] = np.repeat(values, row)
        points = idx @ i2p_t
        points += reference.origin
        yield r0 * row, r1 * row, points


def output_dtype(dtype: DTypeLike | None, image_dtype: DTypeLike, where: str = "resample()") -> np.dtype:
    """The checked output pixel type: ``dtype``, or the image's when None."""
    if dtype is None:
        return np.dtype(image_dtype)
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out is None or out.name not in _DTYPES:
        raise InvalidInputError(
            f"{where}: dtype must be one of {', '.join(_DTYPES)} (or None to keep the input's "
            f"{np.dtype(image_dtype).name}); got {dtype!r}."
        )
    return out


def _cast_into(out: NDArray[Any], values: NDArray[np.float64]) -> None:
    """Store float64 ``values`` in ``out``: rounded and clipped for integers, ``> 0.5`` for bool."""
    if np.issubdtype(out.dtype, np.integer):
        info = np.iinfo(out.dtype)
        out[...] = np.clip(np.rint(values), info.min, info.max)
    elif out.dtype == np.bool_:
        out[...] = values > 0.5
    else:
        out[...] = values


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
        Output pixel type, one of bool, (u)int8-64, float32, float64; defaults
        to ``image.dtype`` (the input's pixel type, as ITK's and the CLI's
        resampling keep it).  Integer outputs are rounded (half to even) and
        clipped to the dtype's range; bool outputs are ``value > 0.5``.

    Returns
    -------
    Image
        New image on the reference grid; the inputs are not modified.

    Raises
    ------
    InvalidInputError
        Dimensions differ, or ``dtype`` is not one of the types above.

    Notes
    -----
    The grid is processed in blocks of whole rows (about 32k voxels), so the
    memory beyond the output and the interpolator's copy of ``image`` is a few
    MiB, whatever the size of the grid.
    """
    reference = image if reference is None else reference
    _check_dims(image, transform, reference, "resample()")
    out_dtype = output_dtype(dtype, image.dtype)
    interp = make_interpolator(interpolator, default_value=default_value)
    interp.set_image(image)
    out = np.empty(reference.shape, dtype=out_dtype)
    flat = out.reshape(-1)
    for start, stop, points in _row_blocks(reference):
        _cast_into(flat[start:stop], interp.evaluate(transform.transform_points(points))[0])
    return reference.with_array(out, copy=False)


def cast_values(values: NDArray[np.floating], dtype: DTypeLike) -> NDArray[Any]:
    """Interpolated values as ``dtype`` (integers rounded and clipped, booleans ``> 0.5``)."""
    out = np.empty(np.shape(values), dtype=np.dtype(dtype))
    _cast_into(out, np.asarray(values, dtype=np.float64))
    return out


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
    out = np.empty((int(np.prod(reference.shape, dtype=np.int64)), reference.ndim))
    for start, stop, points in _row_blocks(reference):
        out[start:stop] = transform.transform_points(points) - points
    return out.reshape(reference.shape + (reference.ndim,))
