"""The transform contract.

A :class:`Transform` maps points of the *fixed* (virtual) physical space to
points of the *moving* physical space, as ITK's transforms do: the registration
result ``T`` satisfies ``moving(T(x)) ~ fixed(x)`` and resampling the moving
image with ``T`` aligns it to the fixed one.

Parameters are split as in ITK:

* ``parameters`` - the optimisable values, in ITK's order, so that ``.tfm``
  files interoperate;
* ``fixed_parameters`` - configuration that is never optimised (centre of
  rotation, B-spline grid geometry, ...), in ITK's layout.

Derivatives are taken in the coordinates that :meth:`Transform.update_parameters`
consumes: for additive transforms this is the ordinary partial derivative; for
versor-based transforms (whose update composes a rotation) it is the derivative
with respect to a rotation vector applied on the right.  ``regframe.testing.
check_transform`` verifies this against central differences taken *through*
``update_parameters``.
"""

from __future__ import annotations

import copy as _copy
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_float_vector, as_points, as_vectors

__all__ = ["Transform"]

_VJP_BLOCK = 65536


class Transform(ABC):
    """Abstract base class of every transform.

    Subclasses must implement
    :meth:`_get_parameters`, :meth:`_set_parameters`,
    :meth:`_get_fixed_parameters`, :meth:`_set_fixed_parameters`,
    :meth:`_transform_points` and :meth:`_jacobian`; they may override
    :meth:`_jacobian_vjp` (the hot path of every metric; the default builds
    blocks of the dense Jacobian), :meth:`_jacobian_position`,
    :meth:`update_parameters` and :meth:`inverse`.

    The public methods validate their arguments and never modify them; the
    underscore hooks receive validated, C-contiguous float64 arrays.

    Attributes
    ----------
    itk_name : str
        ITK class name without the ``_double_D_D`` suffix (used by
        ``.tfm`` files), e.g. ``"AffineTransform"``.
    is_linear : bool
        True when ``T(x) = A x + o`` (ITK's "Linear" category).
    has_local_support : bool
        True when each parameter influences only a bounded region
        (B-splines, displacement fields).
    """

    itk_name: ClassVar[str] = "Transform"
    is_linear: ClassVar[bool] = False
    has_local_support: ClassVar[bool] = False

    def __init__(self, ndim: int) -> None:
        self._ndim = int(ndim)

    # ------------------------------------------------------------------ state
    @property
    def ndim(self) -> int:
        """Spatial dimension of the input and output points."""
        return self._ndim

    @property
    def parameters(self) -> NDArray[np.float64]:
        """Optimisable parameters in ITK order (a copy)."""
        return np.array(self._get_parameters(), dtype=np.float64, copy=True)

    @parameters.setter
    def parameters(self, value: ArrayLike) -> None:
        arr = as_float_vector(
            value, self.n_parameters, where=f"{type(self).__name__}.parameters", name="parameters"
        )
        self._set_parameters(arr)

    @property
    def fixed_parameters(self) -> NDArray[np.float64]:
        """Fixed (never optimised) parameters in ITK layout (a copy)."""
        return np.array(self._get_fixed_parameters(), dtype=np.float64, copy=True)

    @fixed_parameters.setter
    def fixed_parameters(self, value: ArrayLike) -> None:
        arr = as_float_vector(
            value, None, where=f"{type(self).__name__}.fixed_parameters", name="fixed_parameters"
        )
        self._set_fixed_parameters(arr)

    @property
    def n_parameters(self) -> int:
        """Number of optimisable parameters."""
        return int(np.size(self._get_parameters()))

    # --------------------------------------------------------------- mapping
    def transform_points(self, points: ArrayLike) -> NDArray[np.float64]:
        """Map fixed-space physical points to moving space.

        Parameters
        ----------
        points : (n, ndim) array_like of float
            Physical points in (x, y[, z]) order.

        Returns
        -------
        (n, ndim) ndarray of float64
        """
        pts = as_points(points, self.ndim, where=f"{type(self).__name__}.transform_points")
        return self._transform_points(pts)

    def transform_point(self, point: ArrayLike) -> NDArray[np.float64]:
        """Map a single point; convenience wrapper of :meth:`transform_points`."""
        return self.transform_points(np.asarray(point, dtype=np.float64)[None, :])[0]

    def jacobian(self, points: ArrayLike) -> NDArray[np.float64]:
        """Derivative of the mapped points with respect to the parameters.

        Returns
        -------
        (n, ndim, n_parameters) ndarray
            ``J[s, i, k] = d T_i(x_s) / d p_k`` in update coordinates.
            Dense: avoid it for transforms with many parameters and use
            :meth:`jacobian_vjp` instead.
        """
        pts = as_points(points, self.ndim, where=f"{type(self).__name__}.jacobian")
        return self._jacobian(pts)

    def jacobian_vjp(self, points: ArrayLike, vectors: ArrayLike) -> NDArray[np.float64]:
        """Sum of Jacobian-transpose products, ``sum_s J(x_s)^T v_s``.

        This is the product every image metric needs
        (``dC/dp = sum_s dC/dM_s * grad M(T(x_s))^T J(x_s)``).  Built-in
        transforms compute it without forming the dense Jacobian (a B-spline
        touches only the ``4**ndim`` control points supporting each point) and
        with a deterministic, thread-count-independent summation order.

        Parameters
        ----------
        points : (n, ndim) array_like
            Fixed-space points (the transform's inputs).
        vectors : (n, ndim) array_like
            One moving-space vector per point.

        Returns
        -------
        (n_parameters,) ndarray of float64
        """
        name = f"{type(self).__name__}.jacobian_vjp"
        pts = as_points(points, self.ndim, where=name)
        vec = as_vectors(vectors, pts.shape[0], self.ndim, where=name)
        return self._jacobian_vjp(pts, vec)

    def jacobian_position(self, points: ArrayLike) -> NDArray[np.float64]:
        """Derivative of the mapped points with respect to the input point.

        Returns
        -------
        (n, ndim, ndim) ndarray
            ``Jx[s, i, j] = d T_i(x_s) / d x_j``.
        """
        pts = as_points(points, self.ndim, where=f"{type(self).__name__}.jacobian_position")
        return self._jacobian_position(pts)

    def update_parameters(self, step: ArrayLike, factor: float = 1.0) -> None:
        """Apply an optimizer step (ITK's ``UpdateTransformParameters``).

        The default is additive, ``p <- p + factor * step``.  Optimizers change
        parameters only through this method.
        """
        arr = as_float_vector(
            step, self.n_parameters, where=f"{type(self).__name__}.update_parameters", name="step"
        )
        self._set_parameters(self._get_parameters() + float(factor) * arr)

    def inverse(self) -> Transform:
        """Return the inverse transform (moving space to fixed space)."""
        from ..errors import NotInvertibleError

        raise NotInvertibleError(
            f"{type(self).__name__}.inverse(): this transform has no inverse implementation; "
            "implement inverse() in the subclass."
        )

    def copy(self) -> Transform:
        """Return an independent deep copy."""
        return _copy.deepcopy(self)

    def __repr__(self) -> str:
        p = np.array2string(self.parameters, precision=6, threshold=12)
        return f"{type(self).__name__}(ndim={self.ndim}, parameters={p})"

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def _get_parameters(self) -> NDArray[np.float64]:
        """Return the parameter vector (may be internal storage; callers copy)."""

    @abstractmethod
    def _set_parameters(self, parameters: NDArray[np.float64]) -> None:
        """Store a validated parameter vector of length ``n_parameters``."""

    @abstractmethod
    def _get_fixed_parameters(self) -> NDArray[np.float64]:
        """Return the fixed-parameter vector in ITK layout."""

    @abstractmethod
    def _set_fixed_parameters(self, fixed_parameters: NDArray[np.float64]) -> None:
        """Store fixed parameters; raise :class:`~regframe.errors.ShapeError` on a bad length."""

    @abstractmethod
    def _transform_points(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Map validated ``(n, ndim)`` points."""

    @abstractmethod
    def _jacobian(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Dense ``(n, ndim, P)`` parameter Jacobian at validated points."""

    def _jacobian_vjp(
        self, points: NDArray[np.float64], vectors: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Default ``sum_s J_s^T v_s`` from dense Jacobian blocks (deterministic order)."""
        out = np.zeros(self.n_parameters)
        for start in range(0, points.shape[0], _VJP_BLOCK):
            stop = start + _VJP_BLOCK
            jac = self._jacobian(points[start:stop])
            out += np.einsum("sik,si->k", jac, vectors[start:stop])
        return out

    def _jacobian_position(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        raise NotImplementedError(
            f"{type(self).__name__}.jacobian_position() is not implemented; subclasses that can "
            "sit after an optimised transform in a composite must implement _jacobian_position."
        )
