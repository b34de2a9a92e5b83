"""Similarity transforms (rotation, isotropic scale, translation): ITK ``Similarity2DTransform``, ``Similarity3DTransform``."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_float_vector
from ..errors import InvalidInputError, NotInvertibleError
from .euler import ORTHOGONALITY_TOLERANCE, Euler2DTransform, rotation_2d, rotation_2d_derivative
from .versor import VersorRigid3DTransform, normalize_versor, versor_from_matrix

__all__ = ["Similarity2DTransform", "Similarity3DTransform"]


def _split_similarity(matrix: NDArray[np.float64], *, where: str) -> tuple[float, NDArray[np.float64]]:
    """Return ``(scale, R)`` with ``matrix = scale * R``, or raise if not a similarity."""
    d = matrix.shape[0]
    det = float(np.linalg.det(matrix))
    if not det > 0:
        raise InvalidInputError(
            f"{where}: 'matrix' must be a positive scale times a rotation; got determinant "
            f"{det:.6g}. Use AffineTransform for general matrices."
        )
    scale = det ** (1.0 / d)
    rot = matrix / scale
    err = float(np.max(np.abs(rot.T @ rot - np.eye(d))))
    if err > ORTHOGONALITY_TOLERANCE:
        raise InvalidInputError(
            f"{where}: 'matrix' must be a positive scale times a rotation; got "
            f"max|R^T R - I| = {err:.3g} for R = matrix / det^(1/{d}) (tolerance "
            f"{ORTHOGONALITY_TOLERANCE:g}). Use AffineTransform for general matrices."
        )
    return scale, rot


def _check_scale(scale: float, where: str) -> None:
    if scale == 0.0:
        raise NotInvertibleError(f"{where}: the scale is 0; no inverse exists.")


class Similarity2DTransform(Euler2DTransform):
    """2-D similarity ``T(x) = s R(theta) (x - c) + c + t`` (ITK ``Similarity2DTransform``).

    Parameters (ITK order) are ``[scale, theta, tx, ty]`` (scale first); the
    fixed parameters are the centre.  Updates are additive (the scale too).
    The identity (scale 1) is the default.

    Parameters
    ----------
    center : (2,) array_like, optional
        Centre ``c``.
    scale : float, optional
        Isotropic scale ``s`` (default 1).
    angle : float, optional
        Rotation angle in radians.
    translation : (2,) array_like, optional
        Translation ``t``.
    """

    itk_name = "Similarity2DTransform"
    _angle_index = 1

    def __init__(
        self,
        *,
        center: ArrayLike | None = None,
        scale: float = 1.0,
        angle: float = 0.0,
        translation: ArrayLike | None = None,
    ) -> None:
        super(Euler2DTransform, self).__init__(2, 4)
        self._init_state(center, angle, translation)
        self.scale = scale

    @property
    def scale(self) -> float:
        """Isotropic scale factor."""
        return float(self._params[0])

    @scale.setter
    def scale(self, value: float) -> None:
        self._params[0] = as_float_vector(value, 1, where="Similarity2DTransform.scale", name="scale")[0]

    def set_matrix(self, matrix: ArrayLike) -> None:
        """Set scale and angle from ``s R``, keeping the translation.

        Raises
        ------
        InvalidInputError
            If ``matrix`` is not a positive scale times a rotation.
        """
        where = "Similarity2DTransform.set_matrix"
        a = as_float_vector(matrix, 4, where=where, name="matrix").reshape(2, 2)
        scale, rot = _split_similarity(a, where=where)
        self._params[0] = scale
        self._params[1] = np.arctan2(rot[1, 0] - rot[0, 1], rot[0, 0] + rot[1, 1])

    def compute_matrix(self) -> NDArray[np.float64]:
        return self._params[0] * rotation_2d(self._params[1])

    def compute_translation(self) -> NDArray[np.float64]:
        return self._params[2:4]

    def compute_matrix_derivatives(self) -> NDArray[np.float64]:
        out = np.zeros((4, 2, 2))
        out[0] = rotation_2d(self._params[1])
        out[1] = self._params[0] * rotation_2d_derivative(self._params[1])
        return out

    def compute_translation_derivatives(self) -> NDArray[np.float64]:
        out = np.zeros((4, 2))
        out[2:, :] = np.eye(2)
        return out

    def inverse(self) -> Similarity2DTransform:
        """Closed-form inverse: scale ``1/s``, angle ``-theta``, centre ``c + t``, translation ``-t``."""
        _check_scale(self._params[0], "Similarity2DTransform.inverse()")
        inv = Similarity2DTransform()
        inv.fixed_parameters = self._center + self._params[2:4]
        inv.parameters = np.array(
            [1.0 / self._params[0], -self._params[1], -self._params[2], -self._params[3]]
        )
        return inv


class Similarity3DTransform(VersorRigid3DTransform):
    """3-D similarity ``T(x) = s R(v) (x - c) + c + t`` (ITK ``Similarity3DTransform``).

    Parameters (ITK order) are ``[vx, vy, vz, tx, ty, tz, scale]``; fixed
    parameters the centre.  The rotation is updated by composition exactly as
    in :class:`~regframe.transforms.versor.VersorRigid3DTransform`; translation
    and scale additively.  The rotation columns of the Jacobian are
    ``s R (e_k x (x - c))`` (rotation-vector tangent space, not ITK's
    versor-component Jacobian); the scale column is ``R (x - c)``.

    Parameters
    ----------
    center : (3,) array_like, optional
        Centre ``c``.
    versor : (3,) array_like, optional
        Vector part of the rotation versor.
    translation : (3,) array_like, optional
        Translation ``t``.
    scale : float, optional
        Isotropic scale (default 1).
    """

    itk_name = "Similarity3DTransform"

    def __init__(
        self,
        *,
        center: ArrayLike | None = None,
        versor: ArrayLike | None = None,
        translation: ArrayLike | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__(center=center, versor=versor, translation=translation)
        self.scale = scale

    @classmethod
    def _n_params(cls) -> int:
        return 7

    @classmethod
    def _identity_parameters(cls) -> NDArray[np.float64]:
        p = np.zeros(7)
        p[6] = 1.0
        return p

    @property
    def scale(self) -> float:
        """Isotropic scale factor."""
        return float(self._params[6])

    @scale.setter
    def scale(self, value: float) -> None:
        self._params[6] = as_float_vector(value, 1, where="Similarity3DTransform.scale", name="scale")[0]

    def set_matrix(self, matrix: ArrayLike) -> None:
        """Set versor and scale from ``s R``, keeping the translation.

        Raises
        ------
        InvalidInputError
            If ``matrix`` is not a positive scale times a rotation.
        """
        where = "Similarity3DTransform.set_matrix"
        a = as_float_vector(matrix, 9, where=where, name="matrix").reshape(3, 3)
        scale, rot = _split_similarity(a, where=where)
        self._params[:3] = normalize_versor(versor_from_matrix(rot))
        self._params[6] = scale

    def compute_matrix(self) -> NDArray[np.float64]:
        return self._params[6] * super().compute_matrix()

    def _rotation_derivatives(self) -> NDArray[np.float64]:
        # compute_matrix already carries the scale: s R [e_k]_x.
        return super()._rotation_derivatives()

    def compute_matrix_derivatives(self) -> NDArray[np.float64]:
        out = super().compute_matrix_derivatives()
        out[6] = self.rotation_matrix
        return out

    def inverse(self) -> Similarity3DTransform:
        """Closed-form inverse: conjugate versor, scale ``1/s``, centre ``c + t``, translation ``-t``."""
        _check_scale(self._params[6], "Similarity3DTransform.inverse()")
        inv = super().inverse()
        inv._params[6] = 1.0 / self._params[6]
        return inv  # type: ignore[return-value]
