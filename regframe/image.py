"""Images with physical geometry (ITK conventions, numpy axis order).

An :class:`Image` couples a numpy array with the geometry ITK attaches to every
image: ``origin``, ``spacing`` and ``direction``.  The array is stored in
**numpy (reversed) order** exactly as :func:`SimpleITK.GetArrayFromImage`
returns it -- shape ``(nz, ny, nx)`` in 3-D, ``(ny, nx)`` in 2-D -- while every
geometric quantity is in **ITK (x, y, z) order**: ``size == (nx, ny, nz)``,
indices ``(i, j, k)`` with ``i`` along x, physical points ``(x, y, z)``.

Index to physical point (ITK ``TransformContinuousIndexToPhysicalPoint``)::

    P = origin + direction @ diag(spacing) @ index

``direction`` columns are the image axes expressed in world coordinates.  This
module is the only place that maps between the two axis orders.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import _describe, as_float_vector, as_points
from .errors import InvalidInputError, NonFiniteError, ShapeError, WrongTypeError

__all__ = ["Image", "cast_pixels", "as_mask", "check_image"]

#: Spatial dimensions an :class:`Image` may have.
SUPPORTED_NDIM: tuple[int, ...] = (2, 3, 4)

#: Largest condition number accepted for a direction matrix.
_MAX_DIRECTION_CONDITION = 1e12


class Image:
    """An N-D scalar image with ITK geometry.

    Parameters
    ----------
    array : array_like, shape ``(ny, nx)`` or ``(nz, ny, nx)``
        Pixel values in numpy (reversed) axis order, like
        ``SimpleITK.GetArrayFromImage``.  Any real numeric or boolean dtype;
        NaN/inf are allowed here (see :meth:`has_nonfinite`), metrics reject them.
    spacing : (ndim,) array_like of float, optional
        Voxel size in ITK (x, y, z) order; finite and > 0.  Default all ones.
    origin : (ndim,) array_like of float, optional
        Physical position of voxel index 0 in (x, y, z) order.  Default zeros.
    direction : (ndim, ndim) array_like of float, optional
        Direction cosine matrix; column ``j`` is the world direction of image
        axis ``j``.  Must be invertible (orthonormal in practice).  A flat
        row-major sequence of ``ndim**2`` numbers (SimpleITK's layout) is also
        accepted.  Default identity.
    copy : bool, default True
        Copy ``array``.  With ``copy=False`` the image keeps a read-only *view*
        of the caller's array (the caller's array itself is not modified, but
        later changes to it show through).

    Notes
    -----
    The stored array is always read-only; use :meth:`with_array` to make an
    image with new values and the same geometry.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.zeros((4, 5)), spacing=(0.5, 2.0))
    >>> img.size
    (5, 4)
    >>> img.index_to_physical([[4, 3]]).tolist()
    [[2.0, 6.0]]
    """

    __slots__ = (
        "_array",
        "_spacing",
        "_origin",
        "_direction",
        "_i2p",
        "_p2i",
    )

    def __init__(
        self,
        array: ArrayLike,
        spacing: ArrayLike | None = None,
        origin: ArrayLike | None = None,
        direction: ArrayLike | None = None,
        *,
        copy: bool = True,
    ) -> None:
        where = "Image()"
        arr = np.array(array, copy=True, order="C") if copy else np.asarray(array)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ) or np.issubdtype(arr.dtype, np.complexfloating):
            raise InvalidInputError(
                f"{where}: 'array' must hold real numbers or booleans; got {_describe(arr)}. "
                "Multi-component (vector/complex) images are not supported."
            )
        if arr.ndim not in SUPPORTED_NDIM:
            raise ShapeError(
                f"{where}: 'array' must be {' or '.join(f'{d}-D' for d in SUPPORTED_NDIM)} "
                f"(numpy order, e.g. (nz, ny, nx)); got {_describe(arr)}."
            )
        if arr.size == 0:
            raise ShapeError(f"{where}: 'array' must have at least one voxel; got {_describe(arr)}.")
        if not copy:
            arr = arr.view()
        arr.flags.writeable = False
        ndim = arr.ndim
        sp = (
            np.ones(ndim)
            if spacing is None
            else as_float_vector(spacing, ndim, where=where, name="spacing")
        )
        if np.any(sp <= 0):
            raise InvalidInputError(
                f"{where}: 'spacing' must be > 0 in every axis; got {sp.tolist()}."
            )
        org = (
            np.zeros(ndim)
            if origin is None
            else as_float_vector(origin, ndim, where=where, name="origin")
        )
        dirm = _as_direction(direction, ndim, where=where)
        self._array = arr
        self._spacing = sp
        self._origin = org
        self._direction = dirm
        self._i2p = dirm @ np.diag(sp)
        self._p2i = np.linalg.inv(self._i2p)
        for a in (self._spacing, self._origin, self._direction, self._i2p, self._p2i):
            a.flags.writeable = False

    # ------------------------------------------------------------ properties
    @property
    def array(self) -> NDArray[Any]:
        """Pixel values in numpy order (read-only view; copy it to modify)."""
        return self._array

    @property
    def ndim(self) -> int:
        """Spatial dimension."""
        return self._array.ndim

    @property
    def size(self) -> tuple[int, ...]:
        """Number of voxels per axis in ITK order, ``(nx, ny[, nz])``."""
        return tuple(int(s) for s in self._array.shape[::-1])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`array` (numpy order, the reverse of :attr:`size`)."""
        return tuple(self._array.shape)

    @property
    def n_voxels(self) -> int:
        """Total number of voxels."""
        return int(self._array.size)

    @property
    def dtype(self) -> np.dtype:
        """Pixel dtype."""
        return self._array.dtype

    @property
    def spacing(self) -> NDArray[np.float64]:
        """Voxel size in (x, y[, z]) order (read-only float64 array)."""
        return self._spacing

    @property
    def origin(self) -> NDArray[np.float64]:
        """Physical point of index 0 in (x, y[, z]) order (read-only)."""
        return self._origin

    @property
    def direction(self) -> NDArray[np.float64]:
        """Direction cosines, ``(ndim, ndim)``; columns are image axes (read-only)."""
        return self._direction

    @property
    def index_to_physical_matrix(self) -> NDArray[np.float64]:
        """``direction @ diag(spacing)``: maps index offsets to physical offsets."""
        return self._i2p

    @property
    def physical_to_index_matrix(self) -> NDArray[np.float64]:
        """Inverse of :attr:`index_to_physical_matrix`.

        Index-space gradients become physical (covariant) gradients with
        ``g_phys = physical_to_index_matrix.T @ g_index``.
        """
        return self._p2i

    # ------------------------------------------------------------- mapping
    def index_to_physical(self, indices: ArrayLike) -> NDArray[np.float64]:
        """Physical points of (continuous) indices.

        Parameters
        ----------
        indices : (n, ndim) array_like of float
            Continuous or integer indices in ITK order ``(i, j[, k])``.

        Returns
        -------
        (n, ndim) ndarray of float64
            ``origin + index_to_physical_matrix @ index`` per row.
        """
        idx = as_points(indices, self.ndim, where="Image.index_to_physical", name="indices")
        return idx @ self._i2p.T + self._origin

    def physical_to_index(self, points: ArrayLike) -> NDArray[np.float64]:
        """Continuous indices ``(i, j[, k])`` of physical points, ``(n, ndim)``."""
        pts = as_points(points, self.ndim, where="Image.physical_to_index")
        return (pts - self._origin) @ self._p2i.T

    def physical_to_nearest_index(
        self, points: ArrayLike
    ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        """Nearest voxel indices, as ITK's ``TransformPhysicalPointToIndex``.

        Each continuous index component is rounded half up
        (``floor(ci + 0.5)``).

        Returns
        -------
        indices : (n, ndim) ndarray of int64
            ITK-order indices (may lie outside the image).
        inside : (n,) ndarray of bool
            True where ``0 <= index < size`` on every axis.
        """
        ci = self.physical_to_index(points)
        idx = np.floor(ci + 0.5).astype(np.int64)
        size = np.asarray(self.size, dtype=np.int64)
        inside = np.all((idx >= 0) & (idx < size), axis=1)
        return idx, inside

    def is_inside(self, points: ArrayLike) -> NDArray[np.bool_]:
        """ITK buffer test: continuous index in ``[-0.5, size - 0.5)`` per axis.

        This is ``ImageFunction::IsInsideBuffer``: a point up to half a voxel
        beyond the outermost voxel centres is inside.
        """
        ci = self.physical_to_index(points)
        size = np.asarray(self.size, dtype=np.float64)
        return np.all((ci >= -0.5) & (ci < size - 0.5), axis=1)

    def voxel_indices(self) -> NDArray[np.int64]:
        """ITK-order indices of every voxel in C-ravel order of :attr:`array`.

        Row ``v`` is the index of ``array.ravel()[v]`` (x varies fastest).
        """
        grids = np.indices(self._array.shape, dtype=np.int64)  # numpy order
        return np.ascontiguousarray(grids.reshape(self.ndim, -1)[::-1].T)

    def voxel_points(self) -> NDArray[np.float64]:
        """Physical points of all voxel centres, ``(n_voxels, ndim)``.

        Row ``v`` is the centre of the voxel holding ``array.ravel()[v]``
        (C order, x fastest), so ``image.array.ravel()`` are the values at
        these points.
        """
        return self.voxel_indices().astype(np.float64) @ self._i2p.T + self._origin

    # ------------------------------------------------------------ geometry
    def bounding_box(self, *, voxel_edges: bool = False) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Axis-aligned physical bounding box of the image.

        Parameters
        ----------
        voxel_edges : bool, default False
            False: box of the voxel *centres* (continuous indices ``0 ..
            size-1``, as ITK's image spatial objects).  True: box of the
            whole buffer including the half-voxel skirt (continuous indices
            ``-0.5 .. size-0.5``), i.e. the region where :meth:`is_inside`
            holds (up to the open upper bound).

        Returns
        -------
        lower, upper : (ndim,) ndarray of float64
            Component-wise min and max over the ``2**ndim`` corners.
        """
        size = np.asarray(self.size, dtype=np.float64)
        lo = np.full(self.ndim, -0.5) if voxel_edges else np.zeros(self.ndim)
        hi = size - 0.5 if voxel_edges else size - 1.0
        corners = np.array(
            [[hi[d] if (c >> d) & 1 else lo[d] for d in range(self.ndim)] for c in range(2**self.ndim)]
        )
        pts = corners @ self._i2p.T + self._origin
        return pts.min(axis=0), pts.max(axis=0)

    def physical_center(self) -> NDArray[np.float64]:
        """Centre of the voxel-centre span, ``index (size - 1) / 2`` in physical space.

        This is the centre used by ITK's ``CenteredTransformInitializer``
        in GEOMETRY mode.
        """
        ci = (np.asarray(self.size, dtype=np.float64) - 1.0) / 2.0
        return self._i2p @ ci + self._origin

    def same_geometry(self, other: Image, tol: float = 1e-6) -> bool:
        """True when ``other`` has the same size, spacing, origin and direction.

        Parameters
        ----------
        other : Image
        tol : float, default 1e-6
            Relative tolerance, as ITK's default coordinate/direction
            tolerance: spacing within ``tol * spacing``, origin within
            ``tol * max(spacing)``, direction entries within ``tol``.
        """
        if not isinstance(other, Image):
            raise TypeError(f"Image.same_geometry(): 'other' must be an Image; got {type(other).__name__}.")
        if other.ndim != self.ndim or other.size != self.size:
            return False
        scale = float(np.max(self._spacing))
        return bool(
            np.all(np.abs(other._spacing - self._spacing) <= tol * self._spacing)
            and np.all(np.abs(other._origin - self._origin) <= tol * scale)
            and np.all(np.abs(other._direction - self._direction) <= tol)
        )

    # --------------------------------------------------------------- values
    def has_nonfinite(self) -> bool:
        """True when the array holds NaN or infinite values."""
        if not np.issubdtype(self._array.dtype, np.floating):
            return False
        return not bool(np.all(np.isfinite(self._array)))

    def with_array(self, array: ArrayLike, *, copy: bool = True) -> Image:
        """New image with ``array`` as values and this image's geometry.

        ``array`` must have the shape of :attr:`array` (numpy order).
        """
        arr = np.asarray(array)
        if arr.shape != self._array.shape:
            raise ShapeError(
                f"Image.with_array(): 'array' must have shape {self._array.shape} (numpy "
                f"order, the same as this image); got {_describe(arr)}."
            )
        return Image(arr, self._spacing, self._origin, self._direction, copy=copy)

    def copy(self) -> Image:
        """Deep copy (array and geometry)."""
        return Image(self._array, self._spacing, self._origin, self._direction, copy=True)

    def __copy__(self) -> Image:
        return self.copy()

    def __deepcopy__(self, memo: dict) -> Image:
        return self.copy()

    def __reduce__(self) -> tuple:
        state = (np.array(self._array), self._spacing.copy(), self._origin.copy(), self._direction.copy())
        return (_rebuild, state)

    def __repr__(self) -> str:
        def fmt(a: NDArray[np.float64]) -> str:
            return "(" + ", ".join(f"{v:.6g}" for v in a) + ")"

        if np.array_equal(self._direction, np.eye(self.ndim)):
            dirs = "identity"
        else:
            dirs = "[" + ", ".join(fmt(r) for r in self._direction) + "]"
        return (
            f"Image(size={self.size}, dtype={self.dtype}, spacing={fmt(self._spacing)}, "
            f"origin={fmt(self._origin)}, direction={dirs})"
        )


def _rebuild(
    array: NDArray[Any],
    spacing: NDArray[np.float64],
    origin: NDArray[np.float64],
    direction: NDArray[np.float64],
) -> Image:
    return Image(array, spacing, origin, direction, copy=False)


def _as_direction(direction: ArrayLike | None, ndim: int, *, where: str) -> NDArray[np.float64]:
    if direction is None:
        return np.eye(ndim)
    try:
        d = np.array(direction, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{where}: 'direction' must be a ({ndim}, {ndim}) matrix of numbers; got {direction!r}."
        ) from exc
    if d.ndim == 1 and d.size == ndim * ndim:
        d = d.reshape(ndim, ndim)  # SimpleITK's flat row-major layout
    if d.shape != (ndim, ndim):
        raise ShapeError(
            f"{where}: 'direction' must be a ({ndim}, {ndim}) matrix (or {ndim * ndim} "
            f"row-major values); got {_describe(d)}."
        )
    if not np.all(np.isfinite(d)):
        raise NonFiniteError(f"{where}: 'direction' must be finite; got {d.tolist()}.")
    cond = np.linalg.cond(d)
    if not np.isfinite(cond) or cond > _MAX_DIRECTION_CONDITION:
        raise InvalidInputError(
            f"{where}: 'direction' must be invertible (its columns are the image axes in "
            f"world coordinates); got {d.tolist()} with condition number {cond:.3g}."
        )
    return d


def cast_pixels(array: ArrayLike, dtype: Any) -> NDArray[Any]:
    """``array`` converted to ``dtype``; values rounded and clipped for integer types.

    Floating-point values cast to an integer type are rounded to the nearest
    integer and clipped to the type's range (no wrap-around); booleans are
    ``value > 0.5``.  A new array is returned; the input is not modified.
    """
    arr = np.asarray(array)
    dt = np.dtype(dtype)
    if dt == np.bool_ and arr.dtype != np.bool_:
        return arr > 0.5
    if np.issubdtype(dt, np.integer) and not np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(dt)
        return np.clip(np.rint(arr), info.min, info.max).astype(dt)
    if np.issubdtype(dt, np.integer) and np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(dt)
        return np.clip(arr, info.min, info.max).astype(dt)
    return arr.astype(dt)


def as_mask(mask: Any, reference: Image, name: str = "mask", where: str = "as_mask()") -> Image | None:
    """``mask`` as an :class:`Image`: arrays are taken in ``reference``'s geometry.

    Parameters
    ----------
    mask : Image, array_like or None
        An :class:`Image` is returned unchanged (its own geometry is used);
        an array (boolean or numbers, non-zero = inside) must have the shape of
        ``reference.array`` (numpy order) and gets ``reference``'s spacing,
        origin and direction; ``None`` gives ``None``.
    reference : Image
        The image the mask belongs to (fixed mask: the fixed image).
    name, where : str
        Name the argument and the caller in error messages.

    Returns
    -------
    Image or None

    Raises
    ------
    ShapeError
        An array of another shape than ``reference.array``.
    InvalidInputError
        Neither an Image nor an array of numbers or booleans.
    """
    if mask is None or isinstance(mask, Image):
        return mask
    try:
        arr = np.asarray(mask)
    except (TypeError, ValueError) as exc:  # pragma: no cover - ragged input
        raise InvalidInputError(
            f"{where}: '{name}' must be a regframe.Image or an array of shape {reference.shape}; "
            f"got {type(mask).__name__}."
        ) from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InvalidInputError(
            f"{where}: '{name}' must be a regframe.Image or an array of booleans or numbers "
            f"(non-zero = inside); got {_describe(arr) if arr.dtype != object else type(mask).__name__}."
        )
    if arr.shape != reference.shape:
        hint = (" It looks like ITK (x, y, z) order; numpy arrays are (z, y, x): transpose it."
                if arr.shape == reference.shape[::-1] and arr.ndim > 1 else "")
        raise ShapeError(
            f"{where}: '{name}' as an array must have the shape of its image, {reference.shape} "
            f"(numpy order), to take that image's geometry; got {_describe(arr)}.{hint} Or pass a "
            "regframe.Image with its own geometry."
        )
    return reference.with_array(arr)


def check_image(obj: Any, name: str, where: str, ndims: tuple[int, ...] = (2, 3), *,
                expected: str = "a regframe.Image") -> Image:
    """Check that ``obj`` is an :class:`Image` of an allowed dimension; return it.

    ``expected`` words the accepted types in the message (e.g. ``"a regframe.Image or
    ImagePyramid"`` for callers that take both).

    Raises
    ------
    WrongTypeError
        ``obj`` is not an :class:`Image` (a numpy array gets a hint how to wrap it).
    ShapeError
        The image's dimension is not in ``ndims`` (e.g. a 4-D series given to a
        registration, which works on 2-D and 3-D images).
    """
    if not isinstance(obj, Image):
        if isinstance(obj, np.ndarray):
            hint = (
                f" Wrap the array with its geometry: regframe.Image(array, spacing=..., origin=...) "
                f"(array in numpy order, e.g. (nz, ny, nx)), or read the file with regframe.read_image()."
            )
            got = _describe(obj)
        else:
            hint = " Read files with regframe.read_image(); convert SimpleITK images with regframe.from_sitk()."
            got = f"a {type(obj).__module__}.{type(obj).__qualname__}"
        raise WrongTypeError(f"{where}: '{name}' must be {expected}; got {got}.{hint}")
    if obj.ndim not in ndims:
        dims = " or ".join(f"{d}-D" for d in ndims)
        hint = ""
        if obj.ndim == 4:
            hint = (" A 4-D image is a series of volumes: register one volume at a time, e.g. "
                    "regframe.Image(image.array[t], spacing=image.spacing[:3], origin=image.origin[:3]).")
        raise ShapeError(f"{where}: '{name}' must be a {dims} image; got a {obj.ndim}-D image of size "
                         f"{obj.size}.{hint}")
    return obj
