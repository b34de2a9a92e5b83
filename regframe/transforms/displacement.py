"""Dense displacement-field transform ``T(x) = x + u(x)`` (ITK's DisplacementFieldTransform).

Also holds the helpers shared by the local-support transforms: reading grid
geometry from image-like objects and the damped Newton solver used by the
iterative inverses.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._parallel import CHUNK_SIZE, SCATTER_CHUNK_SIZE
from .._validation import check_choice, check_ndim
from ..errors import InvalidInputError, NotInvertibleError, RegframeWarning, ShapeError
from . import _field_kernels as _k
from .base import Transform

__all__ = ["DisplacementFieldTransform", "grid_geometry"]

#: Chunks per kernel call of the scatter products: bounds the partials memory
#: to ``_SCATTER_BLOCK_CHUNKS * n_parameters`` floats whatever the number of
#: points, while the running sum keeps the global chunk order.
_SCATTER_BLOCK_CHUNKS = 8

OnFailure = Literal["warn", "raise", "ignore"]


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------
def grid_geometry(
    reference: Any, ndim: int | None = None, *, where: str = "grid_geometry()"
) -> tuple[tuple[int, ...], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Geometry ``(size, origin, spacing, direction)`` of an image-like object.

    Parameters
    ----------
    reference : regframe.Image or SimpleITK.Image or object
        Anything with ``size``, ``origin``, ``spacing`` and ``direction``
        attributes in ITK (x, y, z) order (a :class:`regframe.Image`), or a
        SimpleITK image (``GetSize()`` ...).
    ndim : int, optional
        Expected dimension.

    Returns
    -------
    size : tuple of int
    origin, spacing : (d,) ndarray
    direction : (d, d) ndarray (columns = image axes in world coordinates)
    """
    if hasattr(reference, "GetSize") and hasattr(reference, "GetDirection"):
        size = tuple(int(v) for v in reference.GetSize())
        origin = np.array(reference.GetOrigin(), dtype=np.float64)
        spacing = np.array(reference.GetSpacing(), dtype=np.float64)
        direction = np.array(reference.GetDirection(), dtype=np.float64)
    elif all(hasattr(reference, a) for a in ("size", "origin", "spacing", "direction")):
        size = tuple(int(v) for v in np.asarray(reference.size).reshape(-1))
        origin = np.array(reference.origin, dtype=np.float64).reshape(-1)
        spacing = np.array(reference.spacing, dtype=np.float64).reshape(-1)
        direction = np.array(reference.direction, dtype=np.float64)
    else:
        raise InvalidInputError(
            f"{where}: the reference must be an image (regframe.Image or SimpleITK.Image) "
            f"with size, origin, spacing and direction; got {type(reference).__name__}."
        )
    d = len(size)
    if ndim is not None and d != ndim:
        raise ShapeError(f"{where}: the reference must be {ndim}-D; got a {d}-D image.")
    direction = direction.reshape(d, d)
    if np.any(spacing <= 0):
        raise InvalidInputError(f"{where}: the reference spacing must be > 0; got {spacing.tolist()}.")
    return size, origin, spacing, direction


def grid_points(size: tuple[int, ...], origin: NDArray, spacing: NDArray, direction: NDArray) -> NDArray[np.float64]:
    """Physical points of every voxel in raster order (x fastest), ``(n_voxels, d)``."""
    d = len(size)
    axes = [np.arange(s, dtype=np.float64) for s in size]
    mesh = np.meshgrid(*axes[::-1], indexing="ij")  # numpy order (z, y, x)
    idx = np.stack([m.ravel() for m in mesh[::-1]], axis=1) if d else np.zeros((0, 0))
    return origin[None, :] + idx @ (direction @ np.diag(spacing)).T


def _physical_to_index(spacing: NDArray, direction: NDArray, where: str) -> NDArray[np.float64]:
    i2p = direction @ np.diag(spacing)
    try:
        p2i = np.linalg.inv(i2p)
    except np.linalg.LinAlgError as exc:
        raise InvalidInputError(
            f"{where}: the grid direction matrix must be invertible; got {direction.tolist()}."
        ) from exc
    return np.ascontiguousarray(p2i)


def _check_on_failure(on_failure: str, where: str) -> str:
    return check_choice(on_failure, ("warn", "raise", "ignore"), where=where, name="on_failure")


def newton_invert(
    transform: Transform,
    targets: NDArray[np.float64],
    initial: NDArray[np.float64] | None = None,
    *,
    tolerance: float = 1e-8,
    max_iterations: int = 50,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Solve ``T(x) = y`` for every target ``y`` by damped Newton iteration.

    Each step solves ``Jx(x) dx = y - T(x)`` with the transform's position
    Jacobian (falling back to the fixed-point step ``dx = y - T(x)`` where
    ``Jx`` is singular) and halves the step until the residual decreases.

    Parameters
    ----------
    transform : Transform
        Must implement ``_transform_points`` and ``_jacobian_position``.
    targets : (n, d) ndarray
    initial : (n, d) ndarray, optional
        Starting points; default ``y - (T(y) - y)``.
    tolerance : float
        Stop when ``|T(x) - y| <= tolerance`` (physical units).
    max_iterations : int

    Returns
    -------
    x : (n, d) ndarray
    residual : (n,) ndarray
        ``|T(x) - y|`` at the returned points.
    """
    y = targets
    if initial is None:
        x = 2.0 * y - transform._transform_points(y)
    else:
        x = np.array(initial, dtype=np.float64, copy=True)
    r = transform._transform_points(x) - y
    norm = np.sqrt(np.sum(r * r, axis=1))
    for _ in range(max_iterations):
        act = np.nonzero(norm > tolerance)[0]
        if act.size == 0:
            break
        xa = x[act]
        ra = r[act]
        jac = transform._jacobian_position(np.ascontiguousarray(xa))
        det = np.linalg.det(jac)
        ok = np.abs(det) > 1e-12
        step = -ra.copy()
        if np.any(ok):
            step[ok] = -np.linalg.solve(jac[ok], ra[ok][..., None])[..., 0]
        t = np.ones(act.size)
        pending = np.arange(act.size)
        for _halving in range(30):
            if pending.size == 0:
                break
            trial = xa[pending] + t[pending, None] * step[pending]
            rt = transform._transform_points(np.ascontiguousarray(trial)) - y[act[pending]]
            nt = np.sqrt(np.sum(rt * rt, axis=1))
            better = nt < norm[act[pending]]
            sel = act[pending[better]]
            x[sel] = trial[better]
            r[sel] = rt[better]
            norm[sel] = nt[better]
            pending = pending[~better]
            t[pending] *= 0.5
    return x, norm


def report_convergence(residual: float, tolerance: float, on_failure: str, where: str, stacklevel: int = 2) -> None:
    """Warn or raise when an iterative inverse did not reach ``tolerance``.

    ``stacklevel`` counts frames from the caller of this function (1 = the
    caller itself), so that the warning points at user code.
    """
    if residual <= tolerance or on_failure == "ignore":
        return
    msg = (
        f"{where}: the iterative inverse did not converge; expected max |T(T^-1(y)) - y| <= "
        f"{tolerance:.3g}; got {residual:.3g}. The deformation may fold or leave its domain; "
        "increase max_iterations, loosen tolerance or regularise the deformation."
    )
    if on_failure == "raise":
        raise NotInvertibleError(msg)
    warnings.warn(msg, RegframeWarning, stacklevel=stacklevel + 1)


# ---------------------------------------------------------------------------
# the transform
# ---------------------------------------------------------------------------
class DisplacementFieldTransform(Transform):
    """Dense displacement field ``T(x) = x + u(x)`` (ITK ``DisplacementFieldTransform``).

    The field lives on an image grid (size, origin, spacing, direction) with
    ``ndim`` components per voxel and is interpolated vector-linearly, exactly
    as ITK's ``VectorLinearInterpolateImageFunction``: inside the buffer
    (continuous index in ``[-0.5, size - 0.5)`` per axis, the half-voxel
    skirt included with edge-clamped neighbours) and ``u = 0`` outside.

    Parameters
    ----------
    ndim : int
        2 or 3.  The default-constructed transform has an empty field (the
        identity, no parameters); assign ``fixed_parameters`` (or use
        :meth:`from_array` / :meth:`from_image`) to define the grid.

    Attributes
    ----------
    residual : float or None
        Set on transforms returned by :meth:`inverse`: the largest
        ``|T(T^-1(y)) - y|`` over the grid points, in physical units.

    Notes
    -----
    *Fixed parameters* (ITK layout, ``d*(3+d)`` values): size, origin,
    spacing, direction (row-major).  Assigning them resets the field to zero.
    *Parameters*: the field buffer voxel-major with interleaved components,
    ``p[d*v + i] = u_i(voxel v)``, voxels in raster order (x fastest), i.e.
    ``field_array().ravel()``.

    The parameter Jacobian is the true derivative of ``T(x)`` with respect to
    every voxel's displacement: the linear-interpolation overlaps (``2**d``
    non-zeros per point and component; ITK instead reports the identity as a
    per-voxel "local" Jacobian).  :meth:`jacobian_vjp` scatters these overlaps
    and is deterministic.

    The position Jacobian is ``I + du/dx`` of the *linear interpolant*
    (piecewise constant; the right derivative on voxel planes; zero
    derivative in the skirt).  ITK instead uses 4th-order central differences
    of the field on the voxel grid, so the two differ where the field is not
    linear.
    """

    itk_name = "DisplacementFieldTransform"
    has_local_support = True

    def __init__(self, ndim: int = 3) -> None:
        ndim = check_ndim(ndim, where="DisplacementFieldTransform()")
        super().__init__(ndim)
        self._size = np.zeros(ndim, dtype=np.int64)
        self._origin = np.zeros(ndim)
        self._spacing = np.zeros(ndim)
        self._direction = np.zeros((ndim, ndim))
        self._p2i = np.zeros((ndim, ndim))
        self._field = np.zeros(0)
        self.residual: float | None = None

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_array(cls, field: ArrayLike, reference_image: Any) -> DisplacementFieldTransform:
        """Build from a numpy field on the grid of ``reference_image``.

        Parameters
        ----------
        field : array_like, shape ``(ny, nx, 2)`` or ``(nz, ny, nx, 3)``
            Displacements in numpy axis order (like
            ``SimpleITK.GetArrayFromImage`` of a vector image), components in
            (x, y[, z]) order, physical units.
        reference_image : regframe.Image or SimpleITK.Image
            Provides size, origin, spacing and direction.
        """
        where = "DisplacementFieldTransform.from_array()"
        size, origin, spacing, direction = grid_geometry(reference_image, where=where)
        d = len(size)
        arr = np.array(field, dtype=np.float64, copy=True)
        expected = tuple(size[::-1]) + (d,)
        if arr.shape != expected:
            raise ShapeError(
                f"{where}: 'field' must have shape {expected} (numpy order, one {d}-vector per "
                f"voxel of the reference); got an array of shape {arr.shape}."
            )
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError(f"{where}: 'field' must be finite; got non-finite values.")
        t = cls(d)
        t._set_grid(np.array(size, dtype=np.int64), origin, spacing, direction, where)
        t._field = np.ascontiguousarray(arr.reshape(-1))
        return t

    @classmethod
    def from_image(cls, image: Any) -> DisplacementFieldTransform:
        """Build from a vector image.

        Parameters
        ----------
        image : SimpleITK.Image or sequence of regframe.Image
            A SimpleITK image with ``ndim`` components per pixel (any real
            pixel type), or ``ndim`` scalar images (x, y[, z] components)
            sharing one geometry.
        """
        where = "DisplacementFieldTransform.from_image()"
        if hasattr(image, "GetNumberOfComponentsPerPixel"):
            from .._optional import require

            sitk = require("SimpleITK", "DisplacementFieldTransform.from_image")
            d = image.GetDimension()
            if image.GetNumberOfComponentsPerPixel() != d:
                raise ShapeError(
                    f"{where}: the image must have {d} components per pixel; "
                    f"got {image.GetNumberOfComponentsPerPixel()}."
                )
            arr = sitk.GetArrayFromImage(image).astype(np.float64)
            return cls.from_array(arr, image)
        if isinstance(image, (list, tuple)) and image and all(hasattr(im, "array") for im in image):
            arr = np.stack([np.asarray(im.array, dtype=np.float64) for im in image], axis=-1)
            geo = grid_geometry(image[0], where=where)
            for im in image[1:]:
                other = grid_geometry(im, where=where)
                if other[0] != geo[0] or not all(np.allclose(a, b) for a, b in zip(geo[1:], other[1:])):
                    raise InvalidInputError(f"{where}: the component images must share one geometry.")
            return cls.from_array(arr, image[0])
        raise InvalidInputError(
            f"{where}: 'image' must be a SimpleITK vector image or a sequence of ndim "
            f"regframe.Image components; got {type(image).__name__}."
        )

    # ------------------------------------------------------------------ state
    def _set_grid(self, size: NDArray, origin: NDArray, spacing: NDArray, direction: NDArray, where: str) -> None:
        d = self.ndim
        if np.any(size < 0) or np.any(size != np.round(size)):
            raise InvalidInputError(f"{where}: the field size must be non-negative integers; got {size.tolist()}.")
        size = size.astype(np.int64)
        if np.all(size > 0):
            if np.any(spacing <= 0):
                raise InvalidInputError(f"{where}: the field spacing must be > 0; got {spacing.tolist()}.")
            p2i = _physical_to_index(spacing, direction, where)
        elif np.any(size > 0):
            raise InvalidInputError(
                f"{where}: the field size must be all positive (or all zero for an empty "
                f"field); got {size.tolist()}."
            )
        else:
            p2i = np.zeros((d, d))
        self._size = size
        self._origin = np.array(origin, dtype=np.float64)
        self._spacing = np.array(spacing, dtype=np.float64)
        self._direction = np.array(direction, dtype=np.float64).reshape(d, d)
        self._p2i = p2i
        self._field = np.zeros(int(np.prod(size)) * d if np.all(size > 0) else 0)

    def _get_parameters(self) -> NDArray[np.float64]:
        return self._field

    def _set_parameters(self, parameters: NDArray[np.float64]) -> None:
        self._field = np.array(parameters, dtype=np.float64)

    def _get_fixed_parameters(self) -> NDArray[np.float64]:
        return np.concatenate(
            [self._size.astype(np.float64), self._origin, self._spacing, self._direction.reshape(-1)]
        )

    def _set_fixed_parameters(self, fixed_parameters: NDArray[np.float64]) -> None:
        d = self.ndim
        where = "DisplacementFieldTransform.fixed_parameters"
        if fixed_parameters.size != d * (3 + d):
            raise ShapeError(
                f"{where}: expected {d * (3 + d)} values (size, origin, spacing, direction); "
                f"got {fixed_parameters.size}."
            )
        fp = fixed_parameters
        self._set_grid(fp[:d], fp[d : 2 * d], fp[2 * d : 3 * d], fp[3 * d :].reshape(d, d), where)

    @property
    def size(self) -> tuple[int, ...]:
        """Field grid size in ITK order ``(nx, ny[, nz])``."""
        return tuple(int(v) for v in self._size)

    @property
    def origin(self) -> NDArray[np.float64]:
        """Physical position of voxel 0."""
        return self._origin.copy()

    @property
    def spacing(self) -> NDArray[np.float64]:
        """Voxel spacing."""
        return self._spacing.copy()

    @property
    def direction(self) -> NDArray[np.float64]:
        """Direction cosine matrix ``(d, d)`` (columns = grid axes)."""
        return self._direction.copy()

    def field_array(self) -> NDArray[np.float64]:
        """The field as a new array of shape ``(nz, ny, nx, d)`` (numpy order)."""
        return self._field.reshape(tuple(self.size[::-1]) + (self.ndim,)).copy()

    def grid_points(self) -> NDArray[np.float64]:
        """Physical points of every voxel, raster order, ``(n_voxels, d)``."""
        return grid_points(self.size, self._origin, self._spacing, self._direction)

    def _empty(self) -> bool:
        return self._field.size == 0

    # --------------------------------------------------------------- mapping
    def _transform_points(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        if self._empty():
            return points.copy()
        if points.shape[0] <= CHUNK_SIZE:
            return _k.transform_points_serial(points, self._field, self._origin, self._p2i, self._size)
        return _k.transform_points(points, self._field, self._origin, self._p2i, self._size, CHUNK_SIZE)

    def support(self, points: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_]]:
        """Sparse parameter-Jacobian structure.

        Returns
        -------
        indices : (n, 2**d) int64
            Flat voxel number of each interpolation neighbour (parameter
            ``d*index + i`` for component ``i``); clamped neighbours may repeat.
        weights : (n, 2**d) float64
            Linear-interpolation overlaps (0 outside the buffer).
        inside : (n,) bool
        """
        from .._validation import as_points

        pts = as_points(points, self.ndim, where="DisplacementFieldTransform.support")
        if self._empty():
            n = pts.shape[0]
            nn = 2**self.ndim
            return np.zeros((n, nn), np.int64), np.zeros((n, nn)), np.zeros(n, bool)
        return _k.support(pts, self._origin, self._p2i, self._size, CHUNK_SIZE)

    def _jacobian(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        n, d = points.shape
        jac = np.zeros((n, d, self.n_parameters))
        if self._empty() or n == 0:
            return jac
        idx, w, _ = _k.support(points, self._origin, self._p2i, self._size, CHUNK_SIZE)
        rows = np.repeat(np.arange(n), idx.shape[1])
        for i in range(d):
            np.add.at(jac[:, i, :], (rows, (idx * d + i).ravel()), w.ravel())
        return jac

    def _jacobian_vjp(self, points: NDArray[np.float64], vectors: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.zeros(self.n_parameters)
        if self._empty():
            return out
        if points.shape[0] <= SCATTER_CHUNK_SIZE:
            return _k.jacobian_vjp_accumulate_serial(points, vectors, out, self._origin, self._p2i, self._size)
        block = SCATTER_CHUNK_SIZE * _SCATTER_BLOCK_CHUNKS
        for lo in range(0, points.shape[0], block):
            _k.jacobian_vjp_accumulate(
                points[lo : lo + block], vectors[lo : lo + block], out,
                self._origin, self._p2i, self._size, SCATTER_CHUNK_SIZE,
            )
        return out

    def _jacobian_position(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        if self._empty():
            return np.broadcast_to(np.eye(self.ndim), (points.shape[0], self.ndim, self.ndim)).copy()
        if points.shape[0] <= CHUNK_SIZE:
            return _k.jacobian_position_serial(points, self._field, self._origin, self._p2i, self._size)
        return _k.jacobian_position(points, self._field, self._origin, self._p2i, self._size, CHUNK_SIZE)

    # --------------------------------------------------------------- inverse
    def inverse(
        self,
        *,
        tolerance: float = 1e-8,
        max_iterations: int = 50,
        on_failure: OnFailure = "warn",
    ) -> DisplacementFieldTransform:
        """Inverse field on the same grid, by damped Newton iteration per voxel.

        For every grid point ``y`` solves ``x + u(x) = y`` and stores
        ``v(y) = x - y``.  The returned transform's ``residual`` attribute is
        ``max |T(T^-1(y)) - y|`` over the grid points (exact there because
        linear interpolation reproduces voxel values); between grid points the
        inverse is the linear interpolant of ``v``.

        Parameters
        ----------
        tolerance : float
            Target residual in physical units.
        max_iterations : int
            Newton iterations.
        on_failure : {'warn', 'raise', 'ignore'}
            What to do when the residual stays above ``tolerance``: issue a
            :class:`~regframe.errors.RegframeWarning`, raise
            :class:`~regframe.errors.NotInvertibleError`, or nothing.
        """
        where = "DisplacementFieldTransform.inverse()"
        _check_on_failure(on_failure, where)
        inv = DisplacementFieldTransform(self.ndim)
        inv._set_grid(self._size.copy(), self._origin, self._spacing, self._direction, where)
        if self._empty():
            inv.residual = 0.0
            return inv
        y = self.grid_points()
        x, res = newton_invert(self, y, tolerance=tolerance, max_iterations=max_iterations)
        inv._field = np.ascontiguousarray((x - y).reshape(-1))
        inv.residual = float(np.max(res, initial=0.0))
        report_convergence(inv.residual, tolerance, on_failure, where)
        return inv

    def __repr__(self) -> str:
        return (
            f"DisplacementFieldTransform(ndim={self.ndim}, size={self.size}, "
            f"origin={self._origin.tolist()}, spacing={self._spacing.tolist()}, "
            f"max |u|={float(np.max(np.abs(self._field), initial=0.0)):.4g})"
        )
