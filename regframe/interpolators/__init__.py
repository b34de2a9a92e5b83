"""Interpolators: values and exact physical gradients at physical points."""

from __future__ import annotations

from ..errors import InvalidInputError
from .base import Interpolator, NotInitializedError
from .bspline import BSplineInterpolator
from .central_difference import central_difference_gradient
from .linear import LinearInterpolator
from .nearest import NearestNeighborInterpolator

__all__ = [
    "Interpolator",
    "NotInitializedError",
    "NearestNeighborInterpolator",
    "LinearInterpolator",
    "BSplineInterpolator",
    "central_difference_gradient",
    "make_interpolator",
]

_BY_NAME: dict[str, type[Interpolator]] = {
    "nearest": NearestNeighborInterpolator,
    "linear": LinearInterpolator,
    "bspline": BSplineInterpolator,
}


def make_interpolator(spec: str | Interpolator, *, default_value: float = 0.0) -> Interpolator:
    """Interpolator from a name or an instance.

    Parameters
    ----------
    spec : {"nearest", "linear", "bspline"} or Interpolator
        A name creates a new interpolator with ``default_value``; an
        instance is returned unchanged (not copied; its own
        ``default_value`` is kept).

    Returns
    -------
    Interpolator
    """
    if isinstance(spec, Interpolator):
        return spec
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec](default_value=default_value)
    allowed = ", ".join(repr(k) for k in _BY_NAME)
    raise InvalidInputError(
        f"make_interpolator(): 'spec' must be one of {allowed} or an Interpolator instance; "
        f"got {spec!r}."
    )
