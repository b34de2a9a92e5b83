"""Versor (unit quaternion) rotations: ITK ``VersorTransform`` and ``VersorRigid3DTransform``.

Parameter layout and file format are ITK's: the rotation is stored as the
vector part ``v = sin(phi/2) * axis`` of a unit quaternion whose scalar part
``w = +sqrt(1 - |v|^2)`` is implied.

**Update and Jacobian coordinates (differs from ITK on purpose).**
:meth:`VersorRigid3DTransform.update_parameters` composes the rotation exactly
as ITK's ``UpdateTransformParameters``: with ``u = factor * step[:3]`` read as
a rotation vector, ``q_new = q_current (x) q_u`` (Hamilton product), i.e.
``R_new = R_current @ R_u`` (the increment acts in the input frame); the other
components are added.  The Jacobian columns of the rotation part are the
derivatives in *those* coordinates,

    dT/d(omega_k) = R (e_k x (x - c))          (times the scale for Similarity3D),

so that ``T(x; update(delta)) = T(x) + J(x) delta + O(|delta|^2)`` holds, which
is what gradient-based optimisers need.  ITK instead returns the derivative
with respect to additive changes of ``(vx, vy, vz)`` with ``w`` dependent
(twice the above at the identity, a different 3x3 map elsewhere).

One more deliberate difference: when the composed quaternion has ``w < 0``
(total rotation beyond pi) it is negated before its vector part is stored,
so the stored versor represents ``R_current @ R_u``; ITK drops the sign of
``w`` and silently stores a different rotation.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_float_vector
from ..errors import InvalidInputError, ShapeError
from .euler import check_rotation
from .linear import MatrixOffsetTransformBase

__all__ = ["VersorTransform", "VersorRigid3DTransform"]

#: ITK's margin below 1 for the norm of the versor's vector part.
VERSOR_EPSILON: float = 1e-10


def skew(v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cross-product matrix ``[v]_x`` with ``[v]_x a = v x a``."""
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


#: ``[e_k]_x`` for k = 0, 1, 2.
_GENERATORS = np.stack([skew(e) for e in np.eye(3)])


def normalize_versor(v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rescale ``v`` as ITK's ``SetParameters`` does when ``|v| >= 1 - 1e-10``."""
    norm = float(np.sqrt(v @ v))
    if norm >= 1.0 - VERSOR_EPSILON:
        return v / (norm + VERSOR_EPSILON * norm)
    return v


def versor_scalar(v: NDArray[np.float64]) -> float:
    """Implied scalar part ``w = +sqrt(1 - |v|^2)``."""
    return float(np.sqrt(max(0.0, 1.0 - float(v @ v))))


def versor_matrix(v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotation matrix of the versor with vector part ``v`` (ITK ``Versor::GetMatrix``)."""
    x, y, z = (float(c) for c in v)
    w = versor_scalar(v)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, xw, yz, yw, zw = x * y, x * z, x * w, y * z, y * w, z * w
    return np.array(
        [
            [1.0 - 2.0 * (yy + zz), 2.0 * (xy - zw), 2.0 * (xz + yw)],
            [2.0 * (xy + zw), 1.0 - 2.0 * (xx + zz), 2.0 * (yz - xw)],
            [2.0 * (xz - yw), 2.0 * (yz + xw), 1.0 - 2.0 * (xx + yy)],
        ]
    )


def quaternion_multiply(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Hamilton product of quaternions stored as ``(x, y, z, w)`` (ITK ``Versor::operator*``)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx - az * by + ay * bz + ax * bw,
            az * bx + aw * by - ax * bz + ay * bw,
            -ay * bx + ax * by + aw * bz + az * bw,
            -ax * bx - ay * by - az * bz + aw * bw,
        ]
    )


def versor_from_axis_angle(axis: ArrayLike, angle: float, *, where: str) -> NDArray[np.float64]:
    """Vector part of the versor rotating by ``angle`` about ``axis`` (ITK ``Versor::Set(axis, angle)``)."""
    ax = as_float_vector(axis, 3, where=where, name="axis")
    norm = float(np.sqrt(ax @ ax))
    if norm == 0.0:
        raise InvalidInputError(f"{where}: 'axis' must be a non-zero vector; got {ax.tolist()}.")
    q = np.concatenate([ax * (np.sin(angle / 2.0) / norm), [np.cos(angle / 2.0)]])
    if q[3] < 0:
        q = -q
    return q[:3]


def versor_from_matrix(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """Vector part (with ``w >= 0``) of the versor of a rotation matrix.

    Shepperd's method, choosing the largest of ``w, x, y, z`` as pivot (as
    ITK's ``Versor::Set(matrix)``), then normalised.
    """
    m = matrix
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    cand = np.array([m[0, 0], m[1, 1], m[2, 2], tr])
    k = int(np.argmax(cand))
    if k == 3:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    elif k == 0:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
    elif k == 1:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s])
    q = q / np.sqrt(q @ q)
    if q[3] < 0:
        q = -q
    return q[:3]


def compose_versor(v: NDArray[np.float64], u: NDArray[np.float64]) -> NDArray[np.float64]:
    """Vector part of ``q(v) (x) q_u`` where ``q_u`` rotates by ``|u|`` about ``u``.

    ``u`` is a rotation vector (radians).  A zero ``u`` leaves ``v`` unchanged.
    The product is renormalised and negated when its scalar part is negative.
    """
    angle = float(np.sqrt(u @ u))
    if angle == 0.0:
        return v.copy()
    qu = np.concatenate([u * (np.sin(angle / 2.0) / angle), [np.cos(angle / 2.0)]])
    q = quaternion_multiply(np.concatenate([v, [versor_scalar(v)]]), qu)
    q = q / np.sqrt(q @ q)
    if q[3] < 0:
        q = -q
    return q[:3]


class VersorRigid3DTransform(MatrixOffsetTransformBase):
    """3-D rigid transform with a versor rotation (ITK ``VersorRigid3DTransform``).

    ``T(x) = R(v) (x - c) + c + t``.

    Parameters (ITK order) are ``[vx, vy, vz, tx, ty, tz]``, ``v`` the vector
    part of the unit quaternion; fixed parameters are the centre.  Assigning a
    ``v`` with ``|v| >= 1 - 1e-10`` rescales it below 1 exactly as ITK does.

    :meth:`update_parameters` composes the rotation (``R <- R @ R_u`` with the
    rotation vector ``u = factor * step[:3]``) and adds the translation; the
    Jacobian's first three columns are ``R (e_k x (x - c))``, derivatives in
    that rotation-vector tangent space, **not** ITK's versor-component
    Jacobian (see the module docstring).

    Parameters
    ----------
    center : (3,) array_like, optional
        Centre of rotation.
    versor : (3,) array_like, optional
        Vector part of the rotation versor.
    translation : (3,) array_like, optional
        Translation ``t``.
    """

    itk_name = "VersorRigid3DTransform"

    #: Slice of the translation in the parameter vector (``None``: no translation).
    _translation_slice: slice | None = slice(3, 6)

    def __init__(
        self,
        *,
        center: ArrayLike | None = None,
        versor: ArrayLike | None = None,
        translation: ArrayLike | None = None,
    ) -> None:
        super().__init__(3, self._n_params())
        self._params[: self._n_params()] = self._identity_parameters()
        if center is not None:
            self.center = center
        if versor is not None:
            self.versor = versor
        if translation is not None:
            self.set_translation(translation)

    @classmethod
    def _n_params(cls) -> int:
        return 6

    @classmethod
    def _identity_parameters(cls) -> NDArray[np.float64]:
        return np.zeros(cls._n_params())

    # ------------------------------------------------------------- parameters
    def _set_parameters(self, parameters: NDArray[np.float64]) -> None:
        p = np.array(parameters, dtype=np.float64)
        p[:3] = normalize_versor(p[:3])
        self._params = p

    @property
    def versor(self) -> NDArray[np.float64]:
        """The unit quaternion ``(x, y, z, w)`` with ``w >= 0`` (a copy).

        Assign either the vector part ``(x, y, z)`` or a full quaternion
        ``(x, y, z, w)`` (normalised, sign chosen so that ``w >= 0``).
        """
        v = self._params[:3]
        return np.concatenate([v, [versor_scalar(v)]])

    @versor.setter
    def versor(self, value: ArrayLike) -> None:
        where = f"{type(self).__name__}.versor"
        q = as_float_vector(value, None, where=where, name="versor")
        if q.size == 4:
            norm = float(np.sqrt(q @ q))
            if norm == 0.0:
                raise ShapeError(f"{where}: a quaternion (x, y, z, w) must be non-zero; got zeros.")
            q = q / norm
            if q[3] < 0:
                q = -q
            q = q[:3]
        elif q.size != 3:
            raise ShapeError(
                f"{where}: expected the vector part (3 values) or a quaternion (x, y, z, w); "
                f"got {q.size} values."
            )
        self._params[:3] = normalize_versor(q)

    @property
    def angle(self) -> float:
        """Rotation angle in radians, in ``[0, pi]``."""
        v = self._params[:3]
        return float(2.0 * np.arctan2(np.sqrt(v @ v), versor_scalar(v)))

    @property
    def axis(self) -> NDArray[np.float64]:
        """Unit rotation axis (zero for the identity)."""
        v = self._params[:3]
        n = float(np.sqrt(v @ v))
        return v / n if n > 0 else np.zeros(3)

    def set_rotation(self, axis: ArrayLike, angle: float) -> None:
        """Set the rotation to ``angle`` radians about ``axis`` (ITK ``SetRotation``)."""
        self._params[:3] = normalize_versor(
            versor_from_axis_angle(axis, float(angle), where=f"{type(self).__name__}.set_rotation")
        )

    def set_translation(self, translation: ArrayLike) -> None:
        """Set ``t`` (ITK ``SetTranslation``)."""
        if self._translation_slice is None:
            raise ShapeError(f"{type(self).__name__} has no translation parameters.")
        self._params[self._translation_slice] = as_float_vector(
            translation, 3, where=f"{type(self).__name__}.set_translation", name="translation"
        )

    def set_matrix(self, matrix: ArrayLike) -> None:
        """Set the rotation from a 3x3 rotation matrix, keeping the translation.

        Raises
        ------
        InvalidInputError
            If ``matrix`` is not a proper rotation.
        """
        where = f"{type(self).__name__}.set_matrix"
        a = as_float_vector(matrix, 9, where=where, name="matrix").reshape(3, 3)
        check_rotation(a, where=where)
        self._params[:3] = normalize_versor(versor_from_matrix(a))

    @property
    def rotation_matrix(self) -> NDArray[np.float64]:
        """The rotation ``R(v)``."""
        return versor_matrix(self._params[:3])

    # ----------------------------------------------------------------- update
    def update_parameters(self, step: ArrayLike, factor: float = 1.0) -> None:
        """Compose the rotation and add the other components (ITK's update).

        ``R <- R @ R_u`` with the rotation vector ``u = factor * step[:3]``
        (``q <- q (x) q_u``); ``p_k <- p_k + factor * step_k`` for ``k >= 3``.
        """
        arr = as_float_vector(
            step, self.n_parameters, where=f"{type(self).__name__}.update_parameters", name="step"
        )
        f = float(factor)
        p = self._params.copy()
        p[:3] = compose_versor(p[:3], f * arr[:3])
        p[3:] = p[3:] + f * arr[3:]
        self._set_parameters(p)

    # ------------------------------------------------------------ base hooks
    def compute_matrix(self) -> NDArray[np.float64]:
        return versor_matrix(self._params[:3])

    def compute_translation(self) -> NDArray[np.float64]:
        if self._translation_slice is None:
            return np.zeros(3)
        return self._params[self._translation_slice]

    def _rotation_derivatives(self) -> NDArray[np.float64]:
        """``R [e_k]_x`` for k = 0, 1, 2 (right-perturbation tangent space)."""
        return self.compute_matrix() @ _GENERATORS

    def compute_matrix_derivatives(self) -> NDArray[np.float64]:
        out = np.zeros((self.n_parameters, 3, 3))
        out[:3] = self._rotation_derivatives()
        return out

    def compute_translation_derivatives(self) -> NDArray[np.float64]:
        out = np.zeros((self.n_parameters, 3))
        if self._translation_slice is not None:
            out[self._translation_slice, :] = np.eye(3)
        return out

    def inverse(self) -> VersorRigid3DTransform:
        """Closed-form inverse (conjugate versor) of the same class.

        The inverse has centre ``c + t`` and translation ``-t``.
        """
        inv = type(self)()
        t = self.compute_translation()
        inv.center = self._center + t
        p = self._identity_parameters()
        p[:3] = -self._params[:3]
        if self._translation_slice is not None:
            p[self._translation_slice] = -t
        inv._set_parameters(p)
        return inv


class VersorTransform(VersorRigid3DTransform):
    """Pure rotation about a centre (ITK ``VersorTransform``).

    ``T(x) = R(v) (x - c) + c``; parameters ``[vx, vy, vz]``; fixed
    parameters the centre.  Same update rule and Jacobian coordinates as
    :class:`VersorRigid3DTransform`.
    """

    itk_name = "VersorTransform"
    _translation_slice = None

    def __init__(self, *, center: ArrayLike | None = None, versor: ArrayLike | None = None) -> None:
        super().__init__(center=center, versor=versor)

    @classmethod
    def _n_params(cls) -> int:
        return 3

    def inverse(self) -> VersorRigid3DTransform:
        """Closed-form inverse: a :class:`VersorTransform` with the conjugate versor, same centre."""
        inv = VersorTransform(center=self._center)
        inv._set_parameters(-self._params)
        return inv
