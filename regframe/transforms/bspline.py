"""Cubic B-spline free-form deformation (ITK's ``BSplineTransform``).

``T(x) = x + sum_k w_k(x) c_k``: each point is moved by the ``4**d`` control
points of its support, so the parameter Jacobian has ``4**d`` non-zeros per
component and :meth:`BSplineTransform.jacobian_vjp` costs ``O(n * 4**d)``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._parallel import CHUNK_SIZE, SCATTER_CHUNK_SIZE
from .._validation import as_float_vector, as_points, check_ndim
from ..errors import InvalidInputError, NotInvertibleError, ShapeError
from . import _bspline_kernels as _k
from .base import Transform
from .displacement import (
    _SCATTER_BLOCK_CHUNKS,
    DisplacementFieldTransform,
    OnFailure,
    _check_on_failure,
    _physical_to_index,
    grid_geometry,
    grid_points,
    newton_invert,
    report_convergence,
)

__all__ = ["BSplineTransform", "BSplineSupport", "IterativeInverseTransform"]

_ORDER = 3
#: ITK's BSplineTransformInitializer pads the image box by 1/8 voxel per side.
_DOMAIN_EPSILON = 1.0 / 8.0


class BSplineSupport(NamedTuple):
    """Sparse parameter-Jacobian structure of a B-spline transform.

    Attributes
    ----------
    indices : (n, 4**d) ndarray of int64
        Flat control-point number ``i + gx*(j + gy*k)`` of each support node
        (axis 0 fastest, ITK's order).  Component ``c`` of that node is
        parameter ``c * n_control_points + index``.  0 outside the valid region.
    weights : (n, 4**d) ndarray of float64
        Tensor-product cubic B-spline weights (0 outside the valid region).
    inside : (n,) ndarray of bool
        Whether each point lies in the valid region.
    """

    indices: NDArray[np.int64]
    weights: NDArray[np.float64]
    inside: NDArray[np.bool_]


def _ulp_shift(x: float, n: int) -> float:
    direction = np.inf if n > 0 else -np.inf
    for _ in range(abs(n)):
        x = float(np.nextafter(x, direction))
    return x


def _refinement_matrix(mesh: int, factor: int) -> NDArray[np.float64]:
    """``(factor*mesh + 3, mesh + 3)`` map from coarse to fine cubic coefficients.

    Uses the two-scale relation ``beta(t) = sum_k h_k beta(f t - k)`` with
    ``h = box_f^{*4} / f^3`` (centred), and the index relation
    ``f t_old = t_new + f - 1`` between grids that share the transform domain.
    """
    f = factor
    box = np.ones(f)
    h = np.array([1.0])
    for _ in range(_ORDER + 1):
        h = np.convolve(h, box)
    h /= float(f**_ORDER)
    half = 2 * (f - 1)
    n_old = mesh + _ORDER
    n_new = f * mesh + _ORDER
    r = np.zeros((n_new, n_old))
    for i in range(n_old):
        for k in range(-half, half + 1):
            m = f * (i - 1) + 1 + k
            if 0 <= m < n_new:
                r[m, i] += h[k + half]
    return r



def _b3_derivatives(u: NDArray[np.float64], order: int) -> NDArray[np.float64]:
    """``order``-th derivative (0, 1 or 2) of the cubic B-spline, vectorised."""
    a = np.abs(u)
    inner = a < 1.0
    outer = (a >= 1.0) & (a < 2.0)
    out = np.zeros_like(u)
    if order == 0:
        out[inner] = (4.0 - 6.0 * a[inner] ** 2 + 3.0 * a[inner] ** 3) / 6.0
        out[outer] = (2.0 - a[outer]) ** 3 / 6.0
    elif order == 1:
        out[inner] = u[inner] * (1.5 * a[inner] - 2.0)
        out[outer] = -0.5 * np.sign(u[outer]) * (2.0 - a[outer]) ** 2
    else:
        out[inner] = 3.0 * a[inner] - 2.0
        out[outer] = 2.0 - a[outer]
    return out


@functools.lru_cache(maxsize=32)
def _gram_matrices(grid_size: int) -> dict[tuple[int, int], NDArray[np.float64]]:
    """``G[(m, n)][k, l] = int_1^{grid_size-2} B3^(m)(t - k) B3^(n)(t - l) dt`` (exact).

    The integrand is a polynomial of degree <= 6 on every unit interval, so a
    4-point Gauss-Legendre rule per interval is exact.  Cached per grid size
    (read-only arrays): every cost evaluation of a level uses the same ones.
    """
    xg, wg = np.polynomial.legendre.leggauss(4)
    starts = np.arange(1, grid_size - 2, dtype=np.float64)
    t = (starts[:, None] + 0.5 * (xg[None, :] + 1.0)).ravel()
    wq = np.tile(0.5 * wg, starts.size)
    k = np.arange(grid_size, dtype=np.float64)
    basis = [_b3_derivatives(t[None, :] - k[:, None], m) for m in range(3)]
    out = {(m, n): (basis[m] * wq) @ basis[n].T for m in range(3) for n in range(3)}
    for mat in out.values():
        mat.flags.writeable = False
    return out


def _banded_apply(mat: NDArray[np.float64], arr: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    """``mat`` applied along ``axis`` of ``arr`` for a Gram matrix of cubic B-splines.

    Such a matrix has 7 non-zero diagonals (supports of width 4 overlap when
    ``|k - l| <= 3``), so the product costs ``7 * arr.size`` instead of
    ``grid_size * arr.size`` for the dense product.
    """
    src = np.moveaxis(arr, axis, 0)
    out = np.zeros_like(src)
    n = src.shape[0]
    shape = (-1,) + (1,) * (src.ndim - 1)
    for k in range(-3, 4):
        if abs(k) >= n:
            continue
        band = np.diagonal(mat, k).reshape(shape)
        if k >= 0:
            out[: n - k] += band * src[k:]
        else:
            out[-k:] += band * src[: n + k]
    return np.moveaxis(out, 0, axis)


class BSplineTransform(Transform):
    """Cubic B-spline deformable transform (ITK ``BSplineTransform``, order 3).

    Parameters
    ----------
    ndim : int
        2 or 3.
    order : int
        Spline order; only 3 (cubic) is supported.

    Notes
    -----
    *Fixed parameters* (ITK layout, ``d*(3+d)`` values): grid size
    (``mesh_size + 3`` per axis), grid origin, grid spacing, grid direction
    (row-major).  The default is ITK's: a unit transform domain at the origin
    with a mesh of 1 (grid size 4, origin -1, spacing 1).

    *Parameters*: the ``d`` coefficient images concatenated (all
    x-displacements in grid raster order with x fastest, then all y, ...).
    Coefficients are displacements in physical units.

    *Evaluation* (ITK's rule): with ``ci`` the continuous grid index of ``x``,
    the point is valid iff ``1 <= ci < grid_size - 2`` on every axis (an
    index within 4 ulp of the upper limit is moved 6 ulp inside); outside the
    valid region ``T(x) = x`` and every derivative w.r.t. the parameters is 0.
    The support starts at ``floor(ci + 0.5 - 3/2)``; the weights are products
    of the 1-D cubic B-spline ``B3(ci - start - j)``, ``j = 0..3``.

    The position Jacobian (which ITK does not implement) is analytic, from
    ``B3'``; it is the identity outside the valid region.

    Examples
    --------
    >>> t = BSplineTransform(2)
    >>> t.set_transform_domain(origin=(0, 0), physical_dimensions=(10, 10), mesh_size=(2, 2))
    >>> t.n_parameters
    50
    """

    itk_name = "BSplineTransform"
    has_local_support = True

    def __init__(self, ndim: int = 3, order: int = 3) -> None:
        ndim = check_ndim(ndim, where="BSplineTransform()")
        if isinstance(order, bool) or order != _ORDER:
            raise InvalidInputError(
                f"BSplineTransform(): 'order' must be 3 (only cubic B-splines are implemented); "
                f"got {order!r}."
            )
        super().__init__(ndim)
        self._coeffs = np.zeros(0)
        self.set_transform_domain(np.zeros(ndim), np.ones(ndim), np.ones(ndim, dtype=int))

    # ------------------------------------------------------------ grid state
    @property
    def order(self) -> int:
        """Spline order (3)."""
        return _ORDER

    def _set_grid(
        self, grid_size: NDArray, origin: NDArray, spacing: NDArray, direction: NDArray, where: str
    ) -> None:
        d = self.ndim
        if np.any(grid_size != np.round(grid_size)) or np.any(grid_size < _ORDER + 1):
            raise InvalidInputError(
                f"{where}: the grid size must be integers >= {_ORDER + 1} (mesh size + 3, mesh "
                f">= 1); got {np.asarray(grid_size).tolist()}."
            )
        if np.any(spacing <= 0):
            raise InvalidInputError(f"{where}: the grid spacing must be > 0; got {spacing.tolist()}.")
        direction = np.array(direction, dtype=np.float64).reshape(d, d)
        self._p2i = _physical_to_index(spacing, direction, where)
        self._grid_size = np.array(grid_size, dtype=np.int64)
        self._grid_origin = np.array(origin, dtype=np.float64)
        self._grid_spacing = np.array(spacing, dtype=np.float64)
        self._grid_direction = direction
        max_limit = self._grid_size.astype(np.float64) - 0.5 * (_ORDER - 1) - 1.0
        self._max_limit = max_limit
        self._band_lo = np.array([_ulp_shift(float(v), -4) for v in max_limit])
        self._band_hi = np.array([_ulp_shift(float(v), 4) for v in max_limit])
        self._nudged = np.array([_ulp_shift(float(v), -6) for v in max_limit])
        n_grid = int(np.prod(self._grid_size))
        if self._coeffs.size != d * n_grid:
            self._coeffs = np.zeros(d * n_grid)
        self._n_grid = n_grid

    def _kernel_grid(self) -> tuple:
        return (
            self._grid_origin,
            self._p2i,
            self._grid_size,
            self._max_limit,
            self._band_lo,
            self._band_hi,
            self._nudged,
        )

    def _get_parameters(self) -> NDArray[np.float64]:
        return self._coeffs

    def _set_parameters(self, parameters: NDArray[np.float64]) -> None:
        self._coeffs = np.array(parameters, dtype=np.float64)

    def _get_fixed_parameters(self) -> NDArray[np.float64]:
        return np.concatenate(
            [
                self._grid_size.astype(np.float64),
                self._grid_origin,
                self._grid_spacing,
                self._grid_direction.reshape(-1),
            ]
        )

    def _set_fixed_parameters(self, fixed_parameters: NDArray[np.float64]) -> None:
        """Set the grid; coefficients are kept if their number is unchanged, else zeroed."""
        d = self.ndim
        where = "BSplineTransform.fixed_parameters"
        if fixed_parameters.size != d * (3 + d):
            raise ShapeError(
                f"{where}: expected {d * (3 + d)} values (grid size, origin, spacing, "
                f"direction); got {fixed_parameters.size}."
            )
        fp = fixed_parameters
        self._set_grid(fp[:d], fp[d : 2 * d], fp[2 * d : 3 * d], fp[3 * d :], where)

    # -------------------------------------------------------- grid accessors
    @property
    def grid_size(self) -> tuple[int, ...]:
        """Control-point grid size in ITK order (``mesh_size + 3``)."""
        return tuple(int(v) for v in self._grid_size)

    @property
    def grid_origin(self) -> NDArray[np.float64]:
        """Physical position of control point 0."""
        return self._grid_origin.copy()

    @property
    def grid_spacing(self) -> NDArray[np.float64]:
        """Control-point spacing (physical units)."""
        return self._grid_spacing.copy()

    @property
    def grid_direction(self) -> NDArray[np.float64]:
        """Grid direction cosines ``(d, d)`` (columns = grid axes)."""
        return self._grid_direction.copy()

    @property
    def mesh_size(self) -> tuple[int, ...]:
        """Number of B-spline intervals per axis over the transform domain."""
        return tuple(int(v) - _ORDER for v in self._grid_size)

    @property
    def n_control_points(self) -> int:
        """Control points per component (``prod(grid_size)``)."""
        return self._n_grid

    @property
    def transform_domain_origin(self) -> NDArray[np.float64]:
        """Corner of the valid region (ITK ``TransformDomainOrigin``)."""
        return self._grid_origin + self._grid_direction @ (0.5 * self._grid_spacing * (_ORDER - 1))

    @property
    def transform_domain_physical_dimensions(self) -> NDArray[np.float64]:
        """Extent of the valid region along each grid axis."""
        return self._grid_spacing * np.array(self.mesh_size, dtype=np.float64)

    @property
    def transform_domain_direction(self) -> NDArray[np.float64]:
        """Same as :attr:`grid_direction`."""
        return self.grid_direction

    def set_transform_domain(
        self,
        origin: ArrayLike,
        physical_dimensions: ArrayLike,
        mesh_size: ArrayLike,
        direction: ArrayLike | None = None,
    ) -> None:
        """Define the grid from a transform domain (ITK's ``SetTransformDomain*``).

        ``spacing = physical_dimensions / mesh_size`` and
        ``grid_origin = origin + direction @ (-0.5 * spacing * (order - 1))``
        (one spacing before the domain for cubic splines).  The coefficients
        are reset to zero (the identity).

        Parameters
        ----------
        origin : (d,) array_like
            Corner of the domain (physical).
        physical_dimensions : (d,) array_like
            Extent along each domain axis; > 0.
        mesh_size : (d,) array_like of int
            Intervals per axis; >= 1.
        direction : (d, d) array_like, optional
            Domain axes as columns (or ITK's row-major flat layout); identity
            by default.
        """
        d = self.ndim
        where = "BSplineTransform.set_transform_domain()"
        org = as_float_vector(origin, d, where=where, name="origin")
        dims = as_float_vector(physical_dimensions, d, where=where, name="physical_dimensions")
        mesh = as_float_vector(mesh_size, d, where=where, name="mesh_size")
        if np.any(mesh < 1) or np.any(mesh != np.round(mesh)):
            raise InvalidInputError(f"{where}: 'mesh_size' must be integers >= 1; got {mesh.tolist()}.")
        if np.any(dims <= 0):
            raise InvalidInputError(
                f"{where}: 'physical_dimensions' must be > 0; got {dims.tolist()}."
            )
        dirm = np.eye(d) if direction is None else as_float_vector(direction, d * d, where=where, name="direction").reshape(d, d)
        spacing = dims / mesh
        offset = dirm @ (-0.5 * spacing * (_ORDER - 1))
        self._coeffs = np.zeros(0)
        self._set_grid(mesh + _ORDER, org + offset, spacing, dirm, where)

    @classmethod
    def from_domain(
        cls,
        image_or_domain: Any,
        *,
        mesh_size: ArrayLike | int | None = None,
        control_point_spacing: ArrayLike | float | None = None,
    ) -> BSplineTransform:
        """Identity B-spline transform covering an image (or an explicit domain).

        For an image this reproduces ITK's ``BSplineTransformInitializer``:
        the domain is the bounding box of the voxel *edges* padded by 1/8
        voxel per side (``(size + 0.25) * spacing``); its origin is the image
        corner closest to the minimum of the physical bounding box and its
        axes are the image axes most aligned with each world axis.

        Parameters
        ----------
        image_or_domain : regframe.Image, SimpleITK.Image or dict
            An image, or a mapping with keys ``origin``,
            ``physical_dimensions`` and optionally ``direction``.
        mesh_size : int or (d,) array_like of int, optional
            Intervals per axis.
        control_point_spacing : float or (d,) array_like, optional
            Desired control-point spacing (physical units); the mesh size is
            ``max(1, round(physical_dimensions / control_point_spacing))``.
            Exactly one of ``mesh_size`` and ``control_point_spacing``.

        Returns
        -------
        BSplineTransform
        """
        where = "BSplineTransform.from_domain()"
        if (mesh_size is None) == (control_point_spacing is None):
            raise InvalidInputError(
                f"{where}: give exactly one of 'mesh_size' and 'control_point_spacing'; got "
                f"mesh_size={mesh_size!r}, control_point_spacing={control_point_spacing!r}."
            )
        if isinstance(image_or_domain, dict):
            org = np.asarray(image_or_domain["origin"], dtype=np.float64).reshape(-1)
            d = org.size
            dims = as_float_vector(image_or_domain["physical_dimensions"], d, where=where, name="physical_dimensions")
            dirm = np.asarray(image_or_domain.get("direction", np.eye(d)), dtype=np.float64).reshape(d, d)
        else:
            org, dims, dirm = _initializer_domain(*grid_geometry(image_or_domain, where=where))
            d = org.size
        t = cls(d)
        if mesh_size is not None:
            mesh = np.broadcast_to(np.asarray(mesh_size), (d,)).astype(np.float64)
        else:
            cps = as_float_vector(np.broadcast_to(np.asarray(control_point_spacing, dtype=np.float64), (d,)), d, where=where, name="control_point_spacing")
            if np.any(cps <= 0):
                raise InvalidInputError(f"{where}: 'control_point_spacing' must be > 0; got {cps.tolist()}.")
            mesh = np.maximum(1.0, np.floor(dims / cps + 0.5))
        t.set_transform_domain(org, dims, mesh, dirm)
        return t

    # ------------------------------------------------------ coefficient images
    @property
    def coefficient_images(self) -> tuple[NDArray[np.float64], ...]:
        """The ``d`` coefficient images (copies), numpy order ``(gz, gy, gx)``.

        Image ``i`` holds the i-th (x, y, z) displacement component of every
        control point.  Assign a sequence of ``d`` arrays of that shape to set
        all parameters at once.
        """
        shape = tuple(self.grid_size[::-1])
        n = self._n_grid
        return tuple(self._coeffs[i * n : (i + 1) * n].reshape(shape).copy() for i in range(self.ndim))

    @coefficient_images.setter
    def coefficient_images(self, images: Sequence[ArrayLike]) -> None:
        shape = tuple(self.grid_size[::-1])
        arrs = [np.asarray(im, dtype=np.float64) for im in images]
        if len(arrs) != self.ndim or any(a.shape != shape for a in arrs):
            raise ShapeError(
                f"BSplineTransform.coefficient_images: expected {self.ndim} arrays of shape {shape} "
                f"(numpy order of the grid); got shapes {[a.shape for a in arrs]}."
            )
        self.parameters = np.concatenate([a.reshape(-1) for a in arrs])

    # --------------------------------------------------------------- mapping
    def _transform_points(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        if points.shape[0] <= CHUNK_SIZE:
            return _k.transform_points_serial(points, self._coeffs, self._n_grid, *self._kernel_grid())
        return _k.transform_points(points, self._coeffs, self._n_grid, *self._kernel_grid(), CHUNK_SIZE)

    def support(self, points: ArrayLike) -> BSplineSupport:
        """Sparse Jacobian structure (support indices and weights) of each point.

        Parameters
        ----------
        points : (n, d) array_like

        Returns
        -------
        BSplineSupport
            ``indices (n, 4**d)``, ``weights (n, 4**d)``, ``inside (n,)``; the
            Jacobian is ``J[s, c, c*n_control_points + indices[s, m]] =
            weights[s, m]``.
        """
        pts = as_points(points, self.ndim, where="BSplineTransform.support")
        idx, w, inside = _k.support(pts, *self._kernel_grid(), CHUNK_SIZE)
        return BSplineSupport(idx, w, inside)

    def _jacobian(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        n, d = points.shape
        jac = np.zeros((n, d, self.n_parameters))
        if n == 0:
            return jac
        idx, w, _ = _k.support(points, *self._kernel_grid(), CHUNK_SIZE)
        rows = np.repeat(np.arange(n), idx.shape[1])
        for i in range(d):
            jac[rows, i, (i * self._n_grid + idx).ravel()] = w.ravel()
        return jac

    def _jacobian_vjp(self, points: NDArray[np.float64], vectors: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.zeros(self.n_parameters)
        if points.shape[0] <= SCATTER_CHUNK_SIZE:
            return _k.jacobian_vjp_accumulate_serial(points, vectors, out, self._n_grid, *self._kernel_grid())
        block = SCATTER_CHUNK_SIZE * _SCATTER_BLOCK_CHUNKS
        for lo in range(0, points.shape[0], block):
            _k.jacobian_vjp_accumulate(
                points[lo : lo + block], vectors[lo : lo + block], out, self._n_grid,
                *self._kernel_grid(), SCATTER_CHUNK_SIZE,
            )
        return out

    def _jacobian_position(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        if points.shape[0] <= CHUNK_SIZE:
            return _k.jacobian_position_serial(points, self._coeffs, self._n_grid, *self._kernel_grid())
        return _k.jacobian_position(points, self._coeffs, self._n_grid, *self._kernel_grid(), CHUNK_SIZE)

    # ------------------------------------------------------------ refinement
    def refine(self, factor: int | Sequence[int] = 2) -> BSplineTransform:
        """The same deformation on a mesh ``factor`` times finer (exact).

        The refined transform has the same transform domain, ``mesh_size *
        factor`` intervals, and coefficients obtained from the B-spline
        two-scale relation, so it maps every point of the domain exactly as
        this one does (up to rounding).  Use it between the levels of a
        multi-resolution registration.

        Parameters
        ----------
        factor : int or sequence of int
            Integer refinement factor (per axis or for all axes), >= 1.

        Returns
        -------
        BSplineTransform
            A new transform; ``self`` is unchanged.
        """
        d = self.ndim
        fac = np.broadcast_to(np.asarray(factor), (d,))
        if not np.issubdtype(fac.dtype, np.integer) or np.any(fac < 1):
            raise InvalidInputError(
                f"BSplineTransform.refine(): 'factor' must be an integer >= 1 (or one per axis); "
                f"got {factor!r}."
            )
        mesh = np.array(self.mesh_size)
        new = BSplineTransform(d)
        new.set_transform_domain(
            self.transform_domain_origin,
            self.transform_domain_physical_dimensions,
            mesh * fac,
            self._grid_direction,
        )
        mats = [_refinement_matrix(int(mesh[a]), int(fac[a])) for a in range(d)]
        images = []
        for img in self.coefficient_images:  # numpy order: axis a of ITK is numpy axis d-1-a
            out = img
            for a in range(d):
                out = np.moveaxis(np.tensordot(mats[a], out, axes=([1], [d - 1 - a])), 0, d - 1 - a)
            images.append(out)
        new.coefficient_images = images
        return new

    # ------------------------------------------------------------ regulariser
    def bending_energy_and_gradient(self, normalize: bool = True) -> tuple[float, NDArray[np.float64]]:
        """Thin-plate bending energy of the deformation and its parameter gradient (closed form).

        .. math::

            E = \\int_\\Omega \\sum_i \\sum_{a,b}
                \\left(\\frac{\\partial^2 T_i}{\\partial x_a \\partial x_b}\\right)^2 dx

        over the transform domain ``Omega`` (the valid region), in physical
        coordinates (oblique grids and anisotropic spacing included).  ``E``
        is a quadratic form ``c^T A c`` of the coefficients, evaluated exactly
        on the control grid with separable 1-D Gram matrices of B-spline
        derivatives (7 diagonals each); the gradient is ``2 A c``.  Cost
        ``O(d^5 P)``, independent of any image size.

        Parameters
        ----------
        normalize : bool, default True
            Divide by the domain volume (the mean energy density, comparable
            across grids and with sampled estimates such as elastix's
            ``TransformBendingEnergyPenalty``).

        Returns
        -------
        energy : float
        gradient : (n_parameters,) ndarray
        """
        d = self.ndim
        m = self._p2i  # t = M (x - o)
        gmat = m @ m.T
        inv_det = 1.0 / abs(np.linalg.det(m))  # dx = |det M|^-1 dt
        scale = inv_det
        if normalize:
            volume = inv_det * float(np.prod(self.mesh_size))
            scale /= volume
        grams = [_gram_matrices(int(self._grid_size[a])) for a in range(d)]
        pairs = [(p, q) for p in range(d) for q in range(d)]
        images = self.coefficient_images
        grad_images = []
        energy = 0.0
        for img in images:
            acc = np.zeros_like(img)
            for p, q in pairs:
                for r, s_ in pairs:
                    coef = gmat[s_, p] * gmat[q, r]
                    if coef == 0.0:
                        continue
                    out = img
                    for a in range(d):
                        na = (p == a) + (q == a)
                        nb = (r == a) + (s_ == a)
                        out = _banded_apply(grams[a][(na, nb)], out, d - 1 - a)
                    acc += coef * out
            energy += float(np.sum(img * acc))
            grad_images.append(2.0 * scale * acc)
        grad = np.concatenate([g.reshape(-1) for g in grad_images])
        return energy * scale, grad

    def bending_energy(self, normalize: bool = True) -> float:
        """Bending energy only; see :meth:`bending_energy_and_gradient`."""
        return self.bending_energy_and_gradient(normalize)[0]

    # ------------------------------------------------------------ conversions
    def to_displacement_field(self, reference_image: Any) -> DisplacementFieldTransform:
        """Sample ``u(x) = T(x) - x`` on the grid of ``reference_image``.

        Parameters
        ----------
        reference_image : regframe.Image or SimpleITK.Image

        Returns
        -------
        DisplacementFieldTransform
            Equal to this transform at every voxel centre (linearly
            interpolated in between).
        """
        size, origin, spacing, direction = grid_geometry(
            reference_image, self.ndim, where="BSplineTransform.to_displacement_field()"
        )
        pts = grid_points(size, origin, spacing, direction)
        disp = self._transform_points(pts) - pts
        return DisplacementFieldTransform.from_array(disp.reshape(tuple(size[::-1]) + (self.ndim,)), reference_image)

    def inverse(
        self,
        *,
        tolerance: float = 1e-8,
        max_iterations: int = 50,
        on_failure: OnFailure = "warn",
    ) -> IterativeInverseTransform:
        """Iterative inverse (Newton with the analytic position Jacobian).

        Returns
        -------
        IterativeInverseTransform
            Maps moving-space points back; its ``residual`` attribute holds
            ``max |T(T^-1(y)) - y|`` of its last call.
        """
        return IterativeInverseTransform(
            self, tolerance=tolerance, max_iterations=max_iterations, on_failure=on_failure
        )

    def __repr__(self) -> str:
        return (
            f"BSplineTransform(ndim={self.ndim}, mesh_size={self.mesh_size}, "
            f"grid_origin={self._grid_origin.tolist()}, grid_spacing={self._grid_spacing.tolist()}, "
            f"max |c|={float(np.max(np.abs(self._coeffs), initial=0.0)):.4g})"
        )


def _initializer_domain(
    size: tuple[int, ...], origin: NDArray, spacing: NDArray, direction: NDArray
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Transform domain ``(origin, physical_dimensions, direction)`` of ITK's BSplineTransformInitializer."""
    d = len(size)
    i2p = direction @ np.diag(spacing)
    start = -0.5 - _DOMAIN_EPSILON
    corners = np.empty((1 << d, d))
    for c in range(1 << d):
        idx = np.array([start + ((c >> i) & 1) * (size[i] + 2.0 * _DOMAIN_EPSILON) for i in range(d)])
        corners[c] = origin + i2p @ idx
    bmin = corners.min(axis=0)
    dist = np.sum((corners - bmin) ** 2, axis=1)
    origin_id = int(np.argmin(dist))  # first minimum, as ITK's strict '<'
    dom_origin = corners[origin_id]
    chosen: list[int] = []
    for a in range(d):
        best, best_angle = -1, np.inf
        for i in range(d):
            opp = (1 << i) ^ origin_id
            vec = corners[opp] - dom_origin
            vec = vec / np.linalg.norm(vec)
            theta = float(np.arccos(np.clip(vec[a], -1.0, 1.0)))
            if theta < best_angle and opp not in chosen:
                best, best_angle = opp, theta
        chosen.append(best)
    dims = np.empty(d)
    dom_dir = np.empty((d, d))
    for a in range(d):
        vec = corners[chosen[a]] - dom_origin
        dims[a] = np.linalg.norm(vec)
        dom_dir[:, a] = vec / dims[a]
    return dom_origin, dims, dom_dir


class IterativeInverseTransform(Transform):
    """Inverse of a transform computed point by point by damped Newton iteration.

    ``transform_points(y)`` solves ``forward(x) = y`` with the forward
    transform's analytic position Jacobian.  The attribute ``residual`` holds
    ``max |forward(x) - y|`` of the last call; when it exceeds ``tolerance``
    the call warns (:class:`~regframe.errors.RegframeWarning`), raises
    :class:`~regframe.errors.NotInvertibleError` or stays silent, according to
    ``on_failure``.  The transform has no parameters.

    Parameters
    ----------
    forward : Transform
        Must implement ``jacobian_position``; a copy is kept.
    tolerance : float
    max_iterations : int
    on_failure : {'warn', 'raise', 'ignore'}
    """

    itk_name = "IterativeInverseTransform"

    def __init__(
        self,
        forward: Transform,
        *,
        tolerance: float = 1e-8,
        max_iterations: int = 50,
        on_failure: OnFailure = "warn",
    ) -> None:
        where = "IterativeInverseTransform()"
        if not isinstance(forward, Transform):
            raise InvalidInputError(f"{where}: 'forward' must be a Transform; got {type(forward).__name__}.")
        _check_on_failure(on_failure, where)
        if not (tolerance > 0):
            raise InvalidInputError(f"{where}: 'tolerance' must be > 0; got {tolerance!r}.")
        super().__init__(forward.ndim)
        self.forward = forward.copy()
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        self.on_failure = on_failure
        self.residual: float | None = None

    def _get_parameters(self) -> NDArray[np.float64]:
        return np.zeros(0)

    def _set_parameters(self, parameters: NDArray[np.float64]) -> None:
        if parameters.size:
            raise ShapeError("IterativeInverseTransform.parameters: expected no values.")

    def _get_fixed_parameters(self) -> NDArray[np.float64]:
        return np.zeros(0)

    def _set_fixed_parameters(self, fixed_parameters: NDArray[np.float64]) -> None:
        if fixed_parameters.size:
            raise ShapeError("IterativeInverseTransform.fixed_parameters: expected no values.")

    def _solve(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        x, res = newton_invert(
            self.forward, points, tolerance=self.tolerance, max_iterations=self.max_iterations
        )
        self.residual = float(np.max(res, initial=0.0))
        report_convergence(
            self.residual, self.tolerance, self.on_failure, "IterativeInverseTransform.transform_points()", stacklevel=4
        )
        return x

    def _transform_points(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        return self._solve(points)

    def _jacobian(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.zeros((points.shape[0], self.ndim, 0))

    def _jacobian_position(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        x = self._solve(points)
        jac = self.forward._jacobian_position(np.ascontiguousarray(x))
        try:
            return np.linalg.inv(jac)
        except np.linalg.LinAlgError as exc:
            raise NotInvertibleError(
                "IterativeInverseTransform.jacobian_position(): the forward position Jacobian is "
                "singular at some points (the deformation folds)."
            ) from exc

    def inverse(self) -> Transform:
        """The forward transform (a copy)."""
        return self.forward.copy()
