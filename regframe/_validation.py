"""Argument validation helpers shared by the public API.

Messages follow one grammar: ``"<where>: '<name>' must be <expected>; got <actual>."``
plus a hint when there is an obvious fix.
"""

from __future__ import annotations

from typing import Any

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import InvalidInputError, NonFiniteError, ShapeError


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return repr(value)


def as_float_vector(
    value: ArrayLike, length: int | None, *, where: str, name: str, finite: bool = True
) -> NDArray[np.float64]:
    """Return ``value`` as a new 1-D float64 array, checking its length."""
    try:
        arr = np.array(value, dtype=np.float64, copy=True).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{where}: '{name}' must be a sequence of numbers; got {_describe(value)}."
        ) from exc
    if length is not None and arr.size != length:
        raise ShapeError(
            f"{where}: '{name}' must have {length} values; got {arr.size}."
        )
    if finite and not np.all(np.isfinite(arr)):
        raise NonFiniteError(
            f"{where}: '{name}' must be finite; got {arr.tolist()}."
        )
    return arr


def as_points(points: ArrayLike, ndim: int, *, where: str, name: str = "points") -> NDArray[np.float64]:
    """Return ``points`` as a C-contiguous ``(n, ndim)`` float64 array.

    A single point of shape ``(ndim,)`` is accepted and returned as ``(1, ndim)``.
    The input is never modified (a copy is made when a conversion is needed).
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == ndim:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != ndim:
        raise ShapeError(
            f"{where}: '{name}' must be an (n, {ndim}) array of physical points in "
            f"(x, y[, z]) order; got {_describe(arr)}."
        )
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError(
            f"{where}: '{name}' must be finite; got {int(np.sum(~np.isfinite(arr)))} "
            "non-finite coordinate(s)."
        )
    return np.ascontiguousarray(arr)


def as_vectors(vectors: ArrayLike, n: int, ndim: int, *, where: str, name: str = "vectors") -> NDArray[np.float64]:
    """Return ``vectors`` as a C-contiguous ``(n, ndim)`` float64 array."""
    arr = np.ascontiguousarray(np.asarray(vectors, dtype=np.float64))
    if arr.shape != (n, ndim):
        raise ShapeError(
            f"{where}: '{name}' must have shape ({n}, {ndim}) (one vector per point); "
            f"got {_describe(arr)}."
        )
    return arr


def check_choice(value: Any, choices: tuple[str, ...], *, where: str, name: str) -> str:
    """Check that a string option is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise InvalidInputError(
            f"{where}: '{name}' must be one of {allowed}; got {value!r}."
        )
    return value


def check_positive_int(value: Any, *, where: str, name: str, minimum: int = 1) -> int:
    """Check that ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(
            f"{where}: '{name}' must be an integer >= {minimum}; got {value!r}."
        )
    return int(value)


def check_ndim(ndim: Any, *, where: str, allowed: tuple[int, ...] = (2, 3)) -> int:
    """Check a spatial dimension."""
    if isinstance(ndim, bool) or not isinstance(ndim, (int, np.integer)) or int(ndim) not in allowed:
        raise InvalidInputError(
            f"{where}: 'ndim' must be one of {allowed}; got {ndim!r}."
        )
    return int(ndim)


def check_sampling(value: Any, where: str, name: str = "sampling") -> float | None:
    """Check a sampling fraction: ``None`` (the default sampling) or a number in (0, 1].

    NaN, values above 1, zero, negative numbers, booleans and strings are
    rejected (they used to mean full sampling silently, or fail obscurely).
    """
    if value is None:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok and math.isfinite(float(value)) and 0.0 < float(value) <= 1.0:
        return float(value)
    raise InvalidInputError(
        f"{where}: '{name}' must be a fraction of the voxels in (0, 1] (e.g. 0.1 samples 10 %, 1 "
        f"samples every voxel) or None for the default; got {value!r}."
    )
