"""Rigid transforms parametrised by Euler angles (ITK ``Euler2DTransform``, ``Euler3DTransform``).

Both map ``T(x) = R (x - c) + c + t`` with ``c`` the centre (fixed
parameters) and additive parameter updates, so their Jacobians are ordinary
partial derivatives.  Points, Jacobians, the Jacobian-transpose product and the
position Jacobian come from :class:`~regframe.transforms.linear.MatrixOffsetTransformBase`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_float_vector
from ..errors import InvalidInputError, ShapeError
from .linear import MatrixOffsetTransformBase

__all__ = ["Euler2DTransform", "Euler3DTransform"]

#: Tolerance on ``|A^T A - I|`` accepted by ``set_matrix`` for rotations.
ORTHOGONALITY_TOLERANCE: float = 1e-6


def rotation_2d(theta: float) -> NDArray[np.float64]:
    """``[[cos, -sin], [sin, cos]]``."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def rotation_2d_derivative(theta: float) -> NDArray[np.float64]:
    """``d R(theta) / d theta``."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[-s, -c], [c, -s]])


def check_rotation(matrix: NDArray[np.float64], *, where: str) -> None:
    """Raise :class:`InvalidInputError` unless ``matrix`` is a proper rotation."""
    d = matrix.shape[0]
    err = float(np.max(np.abs(matrix.T @ matrix - np.eye(d))))
    det = float(np.linalg.det(matrix))
    if err > ORTHOGONALITY_TOLERANCE or det <= 0:
        raise InvalidInputError(
            f"{where}: 'matrix' must be a proper rotation (orthonormal, determinant +1, "
            f"tolerance {ORTHOGONALITY_TOLERANCE:g}); got max|A^T A - I| = {err:.3g} and "
            f"determinant {det:.6g}. Use AffineTransform for general matrices."
        )


def _as_matrix(matrix: ArrayLike, d: int, *, where: str) -> NDArray[np.float64]:
    return as_float_vector(matrix, d * d, where=where, name="matrix").reshape(d, d)


class Euler2DTransform(MatrixOffsetTransformBase):
    """2-D rigid transform (ITK ``Euler2DTransform`` / ``Rigid2DTransform``).

    ``T(x) = R(theta) (x - c) + c + t``.

    Parameters (ITK order) are ``[theta, tx, ty]`` (radians, mm); the fixed
    parameters are the centre ``[cx, cy]``.  Updates are additive.  The
    identity is the default.

    Parameters
    ----------
    center : (2,) array_like, optional
        Centre of rotation ``c`` (default the origin).
    angle : float, optional
        Rotation angle ``theta`` in radians (counter-clockwise from x to y).
    translation : (2,) array_like, optional
        Translation ``t``.
    """

    itk_name = "Euler2DTransform"

    def __init__(
        self,
        *,
        center: ArrayLike | None = None,
        angle: float = 0.0,
        translation: ArrayLike | None = None,
    ) -> None:
        super().__init__(2, 3)
        self._init_state(center, angle, translation)

    def _init_state(
        self, center: ArrayLike | None, angle: float, translation: ArrayLike | None
    ) -> None:
        if center is not None:
            self.center = center
        if translation is not None:
            self.set_translation(translation)
        self.angle = angle

    # ------------------------------------------------------------- parameters
    #: Index of the angle in the parameter vector (the translation is last).
    _angle_index: ClassVar[int] = 0

    @property
    def angle(self) -> float:
        """Rotation angle in radians."""
        return float(self._params[self._angle_index])

    @angle.setter
    def angle(self, value: float) -> None:
        v = as_float_vector(value, 1, where=f"{type(self).__name__}.angle", name="angle")
        self._params[self._angle_index] = v[0]

    def set_translation(self, translation: ArrayLike) -> None:
        """Set ``t`` (ITK ``SetTranslation``)."""
        self._params[-2:] = as_float_vector(
            translation, 2, where=f"{type(self).__name__}.set_translation", name="translation"
        )

    def set_matrix(self, matrix: ArrayLike) -> None:
        """Set the rotation from a 2x2 rotation matrix, keeping the translation.

        Raises
        ------
        InvalidInputError
            If ``matrix`` is not a proper rotation.
        """
        a = _as_matrix(matrix, 2, where=f"{type(self).__name__}.set_matrix")
        check_rotation(a, where=f"{type(self).__name__}.set_matrix")
        self._params[0] = np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])

    # ------------------------------------------------------------ base hooks
    def compute_matrix(self) -> NDArray[np.float64]:
        return rotation_2d(self._params[0])

    def compute_translation(self) -> NDArray[np.float64]:
        return self._params[1:3]

    def compute_matrix_derivatives(self) -> NDArray[np.float64]:
        out = np.zeros((3, 2, 2))
        out[0] = rotation_2d_derivative(self._params[0])
        return out

    def compute_translation_derivatives(self) -> NDArray[np.float64]:
        out = np.zeros((3, 2))
        out[1:, :] = np.eye(2)
        return out

    def inverse(self) -> Euler2DTransform:
        """Closed-form inverse, an :class:`Euler2DTransform` with angle ``-theta``.

        The inverse has centre ``c + t`` and translation ``-t``.
        """
        inv = Euler2DTransform()
        inv.fixed_parameters = self._center + self._params[1:3]
        inv.parameters = np.array([-self._params[0], -self._params[1], -self._params[2]])
        return inv


def _rx(a: float) -> NDArray[np.float64]:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> NDArray[np.float64]:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> NDArray[np.float64]:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _drx(a: float) -> NDArray[np.float64]:
    c, s = np.cos(a), np.sin(a)
    return np.array([[0.0, 0.0, 0.0], [0.0, -s, -c], [0.0, c, -s]])


def _dry(a: float) -> NDArray[np.float64]:
    c, s = np.cos(a), np.sin(a)
    return np.array([[-s, 0.0, c], [0.0, 0.0, 0.0], [-c, 0.0, -s]])


def _drz(a: float) -> NDArray[np.float64]:
    c, s = np.cos(a), np.sin(a)
    return np.array([[-s, -c, 0.0], [c, -s, 0.0], [0.0, 0.0, 0.0]])


def euler_matrix(ax: float, ay: float, az: float, compute_zyx: bool) -> NDArray[np.float64]:
    """ITK's Euler rotation: ``Rz Rx Ry`` (default) or ``Rz Ry Rx`` (``compute_zyx``)."""
    if compute_zyx:
        return _rz(az) @ _ry(ay) @ _rx(ax)
    return _rz(az) @ _rx(ax) @ _ry(ay)


def euler_matrix_derivatives(
    ax: float, ay: float, az: float, compute_zyx: bool
) -> NDArray[np.float64]:
    """``(3, 3, 3)`` array of ``dR/d(ax)``, ``dR/d(ay)``, ``dR/d(az)``."""
    rx, ry, rz = _rx(ax), _ry(ay), _rz(az)
    drx, dry, drz = _drx(ax), _dry(ay), _drz(az)
    if compute_zyx:
        return np.stack([rz @ ry @ drx, rz @ dry @ rx, drz @ ry @ rx])
    return np.stack([rz @ drx @ ry, rz @ rx @ dry, drz @ rx @ ry])


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2.0 * np.pi) - np.pi)


def euler_angles_from_matrix(matrix: NDArray[np.float64], compute_zyx: bool) -> NDArray[np.float64]:
    """Decompose a rotation into ITK Euler angles ``[ax, ay, az]``.

    Follows ITK's ``Euler3DTransform::ComputeMatrixParameters``: the middle
    angle (``ax`` for ZXY, ``ay`` for ZYX) lies in ``[-pi/2, pi/2]``, the
    others come from ``atan2``; at exact gimbal lock the last angle ``az``
    is set to zero (ITK's gimbal-lock branch).  Accuracy fixes over ITK: the
    middle angle uses ``atan2`` (not ``asin``); near gimbal lock, where only
    the sum (or difference) of the outer angles is well determined, that
    combination is taken from the matrix entries proportional to
    ``1 +- sin(middle)`` (ITK's branch is only right at one pole and is off by
    up to ~5e-5 near it).  The angles reproduce ``matrix`` to rounding error.
    """
    m = matrix
    if compute_zyx:
        # R = Rz(az) Ry(ay) Rx(ax); outer angles a = ax, b = az.
        mid = float(np.arctan2(-m[2, 0], np.hypot(m[2, 1], m[2, 2])))
        s = float(np.sin(mid))
        a = float(np.arctan2(m[2, 1], m[2, 2]))
        b = float(np.arctan2(m[1, 0], m[0, 0]))
        if s >= 0:  # (1 + s) [cos, sin](az - ax)
            target = float(np.arctan2(m[1, 2] - m[0, 1], m[1, 1] + m[0, 2]))
            sign = -1.0
        else:  # (1 - s) [cos, -sin](az + ax)
            target = float(np.arctan2(-(m[1, 2] + m[0, 1]), m[1, 1] - m[0, 2]))
            sign = 1.0
        cmid = float(np.hypot(m[2, 1], m[2, 2]))
    else:
        # R = Rz(az) Rx(ax) Ry(ay); outer angles a = ay, b = az.
        mid = float(np.arctan2(m[2, 1], np.hypot(m[0, 1], m[1, 1])))
        s = float(np.sin(mid))
        a = float(np.arctan2(-m[2, 0], m[2, 2]))
        b = float(np.arctan2(-m[0, 1], m[1, 1]))
        if s >= 0:  # (1 + s) [cos, sin](az + ay)
            target = float(np.arctan2(m[1, 0] + m[0, 2], m[0, 0] - m[1, 2]))
            sign = 1.0
        else:  # (1 - s) [cos, sin](az - ay)
            target = float(np.arctan2(m[1, 0] - m[0, 2], m[0, 0] + m[1, 2]))
            sign = -1.0
        cmid = float(np.hypot(m[0, 1], m[1, 1]))
    if cmid < 1e-12:
        # exact gimbal lock (ITK's branch): az = 0, the other outer angle carries it all
        b = 0.0
        a = sign * target
    else:
        # enforce the well-determined combination b + sign * a = target
        d = _wrap(target - (b + sign * a))
        b += 0.5 * d
        a += 0.5 * sign * d
    if compute_zyx:
        return np.array([a, mid, b])
    return np.array([mid, a, b])


class Euler3DTransform(MatrixOffsetTransformBase):
    """3-D rigid transform with Euler angles (ITK ``Euler3DTransform``).

    ``T(x) = R (x - c) + c + t`` with ``R = Rz(az) Rx(ax) Ry(ay)`` (ITK's
    default, "ZXY": ``Ry`` applied first) or, when ``compute_zyx`` is true,
    ``R = Rz(az) Ry(ay) Rx(ax)``.

    Parameters (ITK order) are ``[ax, ay, az, tx, ty, tz]``; the fixed
    parameters are ``[cx, cy, cz, compute_zyx]`` (ITK writes the flag as
    ``0``/``1``; 3 values are accepted and then keep the current order).
    Updates are additive.  The identity is the default.

    Parameters
    ----------
    center : (3,) array_like, optional
        Centre of rotation ``c``.
    angles : (3,) array_like, optional
        ``[ax, ay, az]`` in radians.
    translation : (3,) array_like, optional
        Translation ``t``.
    compute_zyx : bool, optional
        Use ``R = Rz Ry Rx`` instead of ITK's default ``Rz Rx Ry``.
    """

    itk_name = "Euler3DTransform"

    def __init__(
        self,
        *,
        center: ArrayLike | None = None,
        angles: ArrayLike | None = None,
        translation: ArrayLike | None = None,
        compute_zyx: bool = False,
    ) -> None:
        super().__init__(3, 6)
        self._compute_zyx = bool(compute_zyx)
        if center is not None:
            self.center = center
        if angles is not None:
            self.angles = angles
        if translation is not None:
            self.set_translation(translation)

    # ------------------------------------------------------------- parameters
    @property
    def compute_zyx(self) -> bool:
        """Rotation order flag; changing it keeps the angles (and so changes the map)."""
        return self._compute_zyx

    @compute_zyx.setter
    def compute_zyx(self, value: bool) -> None:
        self._compute_zyx = bool(value)

    @property
    def angles(self) -> NDArray[np.float64]:
        """``[ax, ay, az]`` in radians (a copy)."""
        return self._params[:3].copy()

    @angles.setter
    def angles(self, value: ArrayLike) -> None:
        self._params[:3] = as_float_vector(value, 3, where="Euler3DTransform.angles", name="angles")

    def set_rotation(self, angle_x: float, angle_y: float, angle_z: float) -> None:
        """Set the three angles (ITK ``SetRotation``)."""
        self.angles = [angle_x, angle_y, angle_z]

    def set_translation(self, translation: ArrayLike) -> None:
        """Set ``t`` (ITK ``SetTranslation``)."""
        self._params[3:] = as_float_vector(
            translation, 3, where="Euler3DTransform.set_translation", name="translation"
        )

    def set_matrix(self, matrix: ArrayLike) -> None:
        """Set the angles from a rotation matrix, keeping the translation.

        Uses ITK's decomposition (``ComputeMatrixParameters``) for the current
        rotation order, with the gimbal-lock branch; see
        :func:`euler_angles_from_matrix`.

        Raises
        ------
        InvalidInputError
            If ``matrix`` is not a proper rotation.
        """
        a = _as_matrix(matrix, 3, where="Euler3DTransform.set_matrix")
        check_rotation(a, where="Euler3DTransform.set_matrix")
        self._params[:3] = euler_angles_from_matrix(a, self._compute_zyx)

    # ------------------------------------------------------------ base hooks
    def _get_fixed_parameters(self) -> NDArray[np.float64]:
        return np.concatenate([self._center, [1.0 if self._compute_zyx else 0.0]])

    def _set_fixed_parameters(self, fixed_parameters: NDArray[np.float64]) -> None:
        if fixed_parameters.size not in (3, 4):
            raise ShapeError(
                "Euler3DTransform.fixed_parameters: expected the centre and the ZYX flag "
                f"([cx, cy, cz, compute_zyx], 3 or 4 values); got {fixed_parameters.size}."
            )
        self._center = np.array(fixed_parameters[:3], dtype=np.float64)
        if fixed_parameters.size == 4:
            self._compute_zyx = bool(fixed_parameters[3] != 0.0)

    def compute_matrix(self) -> NDArray[np.float64]:
        return euler_matrix(*self._params[:3], self._compute_zyx)

    def compute_translation(self) -> NDArray[np.float64]:
        return self._params[3:6]

    def compute_matrix_derivatives(self) -> NDArray[np.float64]:
        out = np.zeros((6, 3, 3))
        out[:3] = euler_matrix_derivatives(*self._params[:3], self._compute_zyx)
        return out

    def compute_translation_derivatives(self) -> NDArray[np.float64]:
        out = np.zeros((6, 3))
        out[3:, :] = np.eye(3)
        return out

    def inverse(self) -> Euler3DTransform:
        """Closed-form inverse as an :class:`Euler3DTransform` (same rotation order).

        The angles come from decomposing ``R^T`` (:meth:`set_matrix`); the
        inverse has centre ``c + t`` and translation ``-t``.
        """
        inv = Euler3DTransform(compute_zyx=self._compute_zyx)
        inv.center = self._center + self._params[3:]
        inv.set_matrix(self.compute_matrix().T)
        inv.set_translation(-self._params[3:])
        return inv
