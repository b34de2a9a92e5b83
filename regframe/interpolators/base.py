"""The interpolator contract.

An interpolator turns an :class:`~regframe.image.Image` into a function of
physical position::

    interp = LinearInterpolator(default_value=0.0).set_image(image)
    values, inside = interp.evaluate(points)
    values, gradients, inside = interp.evaluate_with_gradient(points)

* ``points`` are physical ``(n, ndim)`` points in (x, y[, z]) order.
* ``inside`` is ITK's buffer rule (``ImageFunction::IsInsideBuffer``): the
  continuous index lies in ``[-0.5, size - 0.5)`` on every axis.  Outside
  points get ``default_value`` and a zero gradient.
* ``gradients`` are physical covariant vectors ``(d/dx, d/dy[, d/dz])`` of the
  interpolant: ``g_phys = image.physical_to_index_matrix.T @ g_index``.
"""

from __future__ import annotations

import copy as _copy
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_points
from ..errors import InvalidInputError, NotInitializedError
from ..image import Image

__all__ = ["Interpolator", "NotInitializedError"]


class Interpolator(ABC):
    """Abstract base class of every interpolator.

    Parameters
    ----------
    default_value : float, default 0.0
        Value returned for points outside the image buffer.

    Notes
    -----
    Subclasses must implement :meth:`_evaluate` and
    :meth:`_evaluate_with_gradient`, which receive validated C-contiguous
    ``(n, ndim)`` float64 points; they may override :meth:`_prepare`
    (called by :meth:`set_image`, e.g. to prefilter).  After
    :meth:`set_image` the following attributes are available to them:

    ``_data`` : (n_voxels,) float64
        Image values in ITK raster order (x fastest) -- ``array.ravel()``.
    ``_size`` : (ndim,) int64, ITK order.
    ``_p2i``, ``_origin``, ``_spacing`` : float64 geometry arrays.
    """

    #: Short name used by :func:`~regframe.interpolators.make_interpolator`.
    name: ClassVar[str] = "interpolator"

    def __init__(self, *, default_value: float = 0.0) -> None:
        try:
            dv = float(default_value)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{type(self).__name__}(): 'default_value' must be a number; got {default_value!r}."
            ) from exc
        self._default_value = dv
        self._image: Image | None = None
        self._data: NDArray[np.float64] | None = None
        self._size = np.zeros(0, dtype=np.int64)
        self._p2i = np.zeros((0, 0))
        self._origin = np.zeros(0)
        self._spacing = np.zeros(0)

    # ------------------------------------------------------------------ state
    @property
    def default_value(self) -> float:
        """Value returned outside the buffer."""
        return self._default_value

    @property
    def image(self) -> Image | None:
        """The image set with :meth:`set_image` (None before)."""
        return self._image

    @property
    def ndim(self) -> int:
        """Spatial dimension of the image (raises before :meth:`set_image`)."""
        return self._require_image("ndim").ndim

    def set_image(self, image: Image) -> Interpolator:
        """Attach ``image`` (and prefilter it if the interpolator needs it).

        The image is not modified; the interpolator keeps a float64 copy of its
        values in ITK raster order.

        Returns
        -------
        self
        """
        if not isinstance(image, Image):
            raise TypeError(
                f"{type(self).__name__}.set_image(): 'image' must be a regframe.Image; got "
                f"{type(image).__name__}. Wrap arrays with regframe.Image(array, spacing, origin, "
                "direction)."
            )
        self._image = image
        self._data = np.array(image.array, dtype=np.float64, order='C').reshape(-1)
        self._size = np.asarray(image.size, dtype=np.int64)
        self._p2i = np.array(image.physical_to_index_matrix, dtype=np.float64, order='C')
        self._origin = np.array(image.origin, dtype=np.float64, order='C')
        self._spacing = np.array(image.spacing, dtype=np.float64, order='C')
        self._prepare(image)
        return self

    def _prepare(self, image: Image) -> None:
        """Hook called at the end of :meth:`set_image`; subclasses may override."""

    # --------------------------------------------------------------- evaluate
    def evaluate(self, points: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Interpolated values at physical points.

        Parameters
        ----------
        points : (n, ndim) array_like of float
            Physical points in (x, y[, z]) order; finite.

        Returns
        -------
        values : (n,) ndarray of float64
            ``default_value`` where ``inside`` is False.
        inside : (n,) ndarray of bool
            ITK buffer rule, continuous index in ``[-0.5, size - 0.5)``.

        Raises
        ------
        NotInitializedError
            :meth:`set_image` was not called.
        ShapeError, NonFiniteError
            ``points`` has the wrong shape or non-finite coordinates.
        """
        pts = self._check_points(points, "evaluate")
        return self._evaluate(pts)

    def evaluate_with_gradient(
        self, points: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """Interpolated values and physical gradients at physical points.

        Returns
        -------
        values : (n,) ndarray of float64
        gradients : (n, ndim) ndarray of float64
            Physical covariant gradient ``(d/dx, d/dy[, d/dz])`` of the
            interpolant; zero where ``inside`` is False.
        inside : (n,) ndarray of bool
        """
        pts = self._check_points(points, "evaluate_with_gradient")
        return self._evaluate_with_gradient(pts)

    @abstractmethod
    def _evaluate(self, points: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Subclasses must implement: values and inside flags."""
        raise NotImplementedError(f"{type(self).__name__}._evaluate()")

    @abstractmethod
    def _evaluate_with_gradient(
        self, points: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """Subclasses must implement: values, physical gradients and inside flags."""
        raise NotImplementedError(f"{type(self).__name__}._evaluate_with_gradient()")

    # ------------------------------------------------------------------ misc
    def copy(self) -> Interpolator:
        """Independent copy (the image itself is immutable and shared)."""
        return _copy.deepcopy(self)

    def __deepcopy__(self, memo: dict) -> Interpolator:
        new = object.__new__(type(self))
        for key, value in self.__dict__.items():
            if isinstance(value, np.ndarray):
                new.__dict__[key] = value.copy()
            elif isinstance(value, Image):
                new.__dict__[key] = value  # immutable: share it
            else:
                new.__dict__[key] = _copy.deepcopy(value, memo)
        return new

    def __repr__(self) -> str:
        img = "None" if self._image is None else f"size={self._image.size}"
        return f"{type(self).__name__}(default_value={self._default_value!r}, image={img})"

    def _require_image(self, method: str) -> Image:
        if self._image is None:
            raise NotInitializedError(
                f"{type(self).__name__}.{method}(): no image is set; call "
                f"set_image(image) first, e.g. {type(self).__name__}().set_image(image)."
            )
        return self._image

    def _check_points(self, points: ArrayLike, method: str) -> NDArray[np.float64]:
        image = self._require_image(method)
        return as_points(points, image.ndim, where=f"{type(self).__name__}.{method}")
