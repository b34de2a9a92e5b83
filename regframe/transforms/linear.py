"""Linear transforms ``T(x) = A (x - c) + c + t`` (ITK's MatrixOffsetTransformBase)."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._parallel import CHUNK_SIZE, n_chunks, reduce_in_order, run_chunks
from .._validation import as_float_vector, check_ndim
from ..errors import NotInvertibleError, ShapeError
from . import _linear_kernels as _k
from .base import Transform

__all__ = ["MatrixOffsetTransformBase", "AffineTransform", "TranslationTransform"]


class MatrixOffsetTransformBase(Transform):
    """Base of every linear transform, ``T(x) = A (x - c) + c + t = A x + o``.

    ``c`` is the centre (the fixed parameters), ``t`` the translation (as in
    ITK, the parameters hold the translation, not the offset
    ``o = t + c - A c``).

    A subclass only supplies its matrix and translation and their derivatives
    with respect to the parameters; points, Jacobians, the Jacobian-transpose
    product, the position Jacobian and the inverse come for free:

    * :meth:`compute_matrix` -> ``(d, d)``
    * :meth:`compute_translation` -> ``(d,)``
    * :meth:`compute_matrix_derivatives` -> ``(P, d, d)``, ``dA/dp_k``
    * :meth:`compute_translation_derivatives` -> ``(P, d)``, ``dt/dp_k``

    The parameter vector is kept in ``self._params``; the centre in
    ``self._center``.  Subclasses with a non-additive update override
    :meth:`update_parameters` and return derivatives in update coordinates.
    """

    is_linear = True

    def __init__(self, ndim: int, n_parameters: int) -> None:
        super().__init__(ndim)
        self._params = np.zeros(n_parameters)
        self._center = np.zeros(ndim)

    # ------------------------------------------------------------ subclass hooks
    @abstractmethod
    def compute_matrix(self) -> NDArray[np.float64]:
        """Matrix ``A`` at the current parameters, shape ``(d, d)``."""

    @abstractmethod
    def compute_translation(self) -> NDArray[np.float64]:
        """Translation ``t`` at the current parameters, shape ``(d,)``."""

    @abstractmethod
    def compute_matrix_derivatives(self) -> NDArray[np.float64]:
        """``dA/dp_k`` for every parameter, shape ``(P, d, d)``."""

    @abstractmethod
    def compute_translation_derivatives(self) -> NDArray[np.float64]:
        """``dt/dp_k`` for every parameter, shape ``(P, d)``."""

    # ------------------------------------------------------------------ state
    def _get_parameters(self) -> NDArray[np.float64]:
        return self._params

    def _set_parameters(self, parameters: NDArray[np.float64]) -> None:
        self._params = np.array(parameters, dtype=np.float64)

    def _get_fixed_parameters(self) -> NDArray[np.float64]:
        return self._center

    def _set_fixed_parameters(self, fixed_parameters: NDArray[np.float64]) -> None:
        if fixed_parameters.size != self.ndim:
            raise ShapeError(
                f"{type(self).__name__}.fixed_parameters: expected the centre ({self.ndim} "
                f"values); got {fixed_parameters.size}."
            )
        self._center = np.array(fixed_parameters, dtype=np.float64)

    @property
    def center(self) -> NDArray[np.float64]:
        """Centre of rotation/scaling ``c`` (a copy).

        Setting it keeps the translation (ITK's ``SetCenter``), so the mapping
        of a non-identity transform changes.
        """
        return self._center.copy()

    @center.setter
    def center(self, value: ArrayLike) -> None:
        self._center = as_float_vector(value, self.ndim, where=f"{type(self).__name__}.center", name="center")

    @property
    def matrix(self) -> NDArray[np.float64]:
        """The matrix ``A`` (read-only view of the current parameters)."""
        return np.array(self.compute_matrix(), dtype=np.float64)

    @property
    def translation(self) -> NDArray[np.float64]:
        """The translation ``t``."""
        return np.array(self.compute_translation(), dtype=np.float64)

    @property
    def offset(self) -> NDArray[np.float64]:
        """The offset ``o = t + c - A c`` of ``T(x) = A x + o``."""
        a = self.compute_matrix()
        return self.compute_translation() + self._center - a @ self._center

    # --------------------------------------------------------------- mapping
    def _transform_points(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        a = np.ascontiguousarray(self.compute_matrix(), dtype=np.float64)
        n = points.shape[0]
        out = np.empty(points.shape)
        run_chunks(_k.affine_points_chunks, _k.affine_points, n, n_chunks(n), points, a,
                   np.ascontiguousarray(self.offset), CHUNK_SIZE, out)
        return out

    def _jacobian(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        da = self.compute_matrix_derivatives()
        dt = self.compute_translation_derivatives()
        rel = points - self._center
        return np.einsum("kij,sj->sik", da, rel) + dt.T[None, :, :]

    def _jacobian_vjp(
        self, points: NDArray[np.float64], vectors: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        d = self.ndim
        part = _k.outer_sum_partials(points, vectors, self._center, CHUNK_SIZE)
        total = reduce_in_order(part)
        outer = total[: d * d].reshape(d, d)
        vsum = total[d * d :]
        da = self.compute_matrix_derivatives()
        dt = self.compute_translation_derivatives()
        return da.reshape(da.shape[0], -1) @ outer.reshape(-1) + dt @ vsum

    def _jacobian_position(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        a = self.compute_matrix()
        return np.broadcast_to(a, (points.shape[0], self.ndim, self.ndim)).copy()

    def inverse(self) -> Transform:
        """Closed-form inverse as an :class:`AffineTransform`.

        The inverse has matrix ``A^-1``, centre ``c + t`` and translation
        ``-t``.  Subclasses may return their own type instead.
        """
        a = self.compute_matrix()
        try:
            a_inv = np.linalg.inv(a)
        except np.linalg.LinAlgError as exc:
            raise NotInvertibleError(
                f"{type(self).__name__}.inverse(): the matrix is singular "
                f"(determinant {np.linalg.det(a):.3g}); no inverse exists."
            ) from exc
        if not np.all(np.isfinite(a_inv)) or abs(np.linalg.det(a)) < 1e-300:
            raise NotInvertibleError(
                f"{type(self).__name__}.inverse(): the matrix is singular; no inverse exists."
            )
        t = self.compute_translation()
        inv = AffineTransform(self.ndim)
        inv.fixed_parameters = self._center + t
        inv.parameters = np.concatenate([a_inv.reshape(-1), -t])
        return inv


class AffineTransform(MatrixOffsetTransformBase):
    """General affine transform (ITK ``AffineTransform``).

    Parameters are the matrix in row-major order followed by the translation
    (``d*d + d`` values); the fixed parameters are the centre.  The identity is
    the default.

    Parameters
    ----------
    ndim : int
        2 or 3.
    """

    itk_name = "AffineTransform"

    def __init__(self, ndim: int = 3) -> None:
        ndim = check_ndim(ndim, where="AffineTransform()")
        super().__init__(ndim, ndim * ndim + ndim)
        self._params[: ndim * ndim] = np.eye(ndim).reshape(-1)

    def compute_matrix(self) -> NDArray[np.float64]:
        d = self.ndim
        return self._params[: d * d].reshape(d, d)

    def compute_translation(self) -> NDArray[np.float64]:
        return self._params[self.ndim * self.ndim :]

    def compute_matrix_derivatives(self) -> NDArray[np.float64]:
        d = self.ndim
        out = np.zeros((self.n_parameters, d, d))
        for i in range(d):
            for j in range(d):
                out[i * d + j, i, j] = 1.0
        return out

    def compute_translation_derivatives(self) -> NDArray[np.float64]:
        d = self.ndim
        out = np.zeros((self.n_parameters, d))
        out[d * d :, :] = np.eye(d)
        return out

    def set_matrix(self, matrix: ArrayLike) -> None:
        """Set ``A`` keeping the translation (ITK ``SetMatrix``)."""
        d = self.ndim
        a = as_float_vector(matrix, d * d, where="AffineTransform.set_matrix", name="matrix")
        self._params[: d * d] = a

    def set_translation(self, translation: ArrayLike) -> None:
        """Set ``t`` (ITK ``SetTranslation``)."""
        self._params[self.ndim * self.ndim :] = as_float_vector(
            translation, self.ndim, where="AffineTransform.set_translation", name="translation"
        )

    def set_offset(self, offset: ArrayLike) -> None:
        """Set the offset ``o``; the translation is recomputed (ITK ``SetOffset``)."""
        o = as_float_vector(offset, self.ndim, where="AffineTransform.set_offset", name="offset")
        a = self.compute_matrix()
        self.set_translation(o - self._center + a @ self._center)


class TranslationTransform(MatrixOffsetTransformBase):
    """Pure translation ``T(x) = x + t`` (ITK ``TranslationTransform``).

    Parameters are ``t`` (``d`` values); there are no fixed parameters.
    """

    itk_name = "TranslationTransform"

    def __init__(self, ndim: int = 3) -> None:
        ndim = check_ndim(ndim, where="TranslationTransform()")
        super().__init__(ndim, ndim)

    def _get_fixed_parameters(self) -> NDArray[np.float64]:
        return np.zeros(0)

    def _set_fixed_parameters(self, fixed_parameters: NDArray[np.float64]) -> None:
        if fixed_parameters.size not in (0, self.ndim):
            raise ShapeError(
                f"TranslationTransform.fixed_parameters: expected no values; got {fixed_parameters.size}."
            )

    def compute_matrix(self) -> NDArray[np.float64]:
        return np.eye(self.ndim)

    def compute_translation(self) -> NDArray[np.float64]:
        return self._params

    def compute_matrix_derivatives(self) -> NDArray[np.float64]:
        return np.zeros((self.ndim, self.ndim, self.ndim))

    def compute_translation_derivatives(self) -> NDArray[np.float64]:
        return np.eye(self.ndim)

    def inverse(self) -> TranslationTransform:
        inv = TranslationTransform(self.ndim)
        inv.parameters = -self._params
        return inv
