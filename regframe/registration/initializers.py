"""Transform initializers: centred (geometry or moments) and landmark-based.

Both return a configured *copy* of the transform they are given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_points, check_choice
from ..errors import EmptyMaskError, InvalidInputError, ShapeError
from ..image import Image, as_mask
from ..transforms.base import Transform
from ..transforms.linear import MatrixOffsetTransformBase

__all__ = [
    "image_center",
    "centered_initializer",
    "landmark_initializer",
    "set_translation",
    "rigid_from_points",
    "similarity_from_points",
    "affine_from_points",
]


def _mask_inside(image: Image, mask: Any) -> NDArray[np.bool_] | None:
    """Voxels of ``image`` (numpy order) whose centre lies in ``mask`` (nearest neighbour).

    ``mask`` is an :class:`Image` or an array in ``image``'s geometry (see :func:`as_mask`).
    """
    mask = as_mask(mask, image, "mask", "centered_initializer()")
    if mask is None:
        return None
    if mask.same_geometry(image):
        inside = np.asarray(mask.array) > 0
    else:
        from ..interpolators import NearestNeighborInterpolator

        interp = NearestNeighborInterpolator(default_value=0.0).set_image(mask)
        inside = (interp.evaluate(image.voxel_points())[0] > 0).reshape(image.shape)
    if not np.any(inside):
        raise EmptyMaskError(
            "centered_initializer(): the mask covers no voxel of the image; check that mask and "
            "image share the same physical space."
        )
    return inside


def _index_centroid(weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weighted centroid of voxel indices (ITK order) from separable axis profiles."""
    total = weights.sum()
    ci = np.empty(weights.ndim)
    for axis, n in enumerate(weights.shape):
        others = tuple(a for a in range(weights.ndim) if a != axis)
        profile = weights.sum(axis=others)
        ci[weights.ndim - 1 - axis] = profile @ np.arange(n, dtype=np.float64) / total
    return ci


def image_center(image: Image, *, mode: str = "geometry", mask: Image | None = None) -> NDArray[np.float64]:
    """Centre of an image in physical coordinates.

    ``"geometry"``: the physical point of the centre of the voxel-centre span
    (ITK's GEOMETRY mode; with a mask, the centre of the physical bounding box
    of the voxel centres inside it).  ``"moments"``: the intensity-weighted
    centroid of the voxel centres (optionally within ``mask``), with
    intensities shifted so that their minimum is zero (so CT air at -1000 HU
    weighs nothing; ITK uses the raw intensities).  Non-finite voxels weigh
    nothing.
    """
    check_choice(mode, ("geometry", "moments"), where="image_center()", name="mode")
    if mode == "geometry" and mask is None:
        return image.physical_center()
    inside = _mask_inside(image, mask)
    if mode == "geometry":
        pts = image.voxel_points()[inside.reshape(-1)]
        return 0.5 * (pts.min(axis=0) + pts.max(axis=0))
    values = np.asarray(image.array, dtype=np.float64)
    usable = np.isfinite(values) if inside is None else np.isfinite(values) & inside
    if not np.any(usable):
        raise InvalidInputError(
            "image_center(): no finite voxel to weigh (inside the mask); use mode='geometry' or "
            "check the image for NaNs."
        )
    w = np.where(usable, values - values[usable].min(), 0.0)
    if w.sum() <= 0:
        raise InvalidInputError(
            "image_center(): the image is constant, so it has no intensity centroid; use "
            "mode='geometry'."
        )
    return image.index_to_physical(_index_centroid(w)[None, :])[0]


def set_translation(transform: MatrixOffsetTransformBase, translation: ArrayLike) -> None:
    """Set the translation ``t`` of a linear transform in place, keeping its matrix.

    Works for any :class:`MatrixOffsetTransformBase` whose translation is a
    linear function of parameters that do not affect the matrix (every
    built-in, and any subclass following the usual layout).
    """
    target = np.asarray(translation, dtype=np.float64)
    dt = transform.compute_translation_derivatives()
    da = transform.compute_matrix_derivatives()
    idx = [k for k in range(dt.shape[0]) if np.any(dt[k]) and not np.any(da[k])]
    if not idx:
        raise InvalidInputError(
            f"set_translation(): {type(transform).__name__} has no translation parameters."
        )
    delta = np.linalg.lstsq(dt[idx].T, target - transform.translation, rcond=None)[0]
    params = transform.parameters
    params[idx] += delta
    transform.parameters = params


def centered_initializer(
    fixed: Image,
    moving: Image,
    transform: Transform,
    *,
    mode: str = "geometry",
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
) -> Transform:
    """ITK's ``CenteredTransformInitializer``: align image centres.

    Sets the centre of rotation to the fixed image's centre ``c_f`` and the
    translation to ``c_m - c_f`` (matrix untouched), so ``T(c_f) = c_m``.

    Parameters
    ----------
    fixed, moving : Image
    transform : Transform
        A linear transform (copied, not modified).
    mode : {"geometry", "moments"}
    fixed_mask, moving_mask : Image, optional
        Restrict the centre computation to the masks.

    Returns
    -------
    Transform
        The initialised copy.
    """
    if not isinstance(transform, MatrixOffsetTransformBase):
        raise InvalidInputError(
            f"centered_initializer(): expected a linear transform (MatrixOffsetTransformBase); "
            f"got {type(transform).__name__}."
        )
    cf = image_center(fixed, mode=mode, mask=fixed_mask)
    cm = image_center(moving, mode=mode, mask=moving_mask)
    t = transform.copy()
    if t.fixed_parameters.size >= t.ndim:
        fp = t.fixed_parameters
        fp[: t.ndim] = cf
        t.fixed_parameters = fp
    set_translation(t, cm - cf)
    return t


def _centered(fixed_points: NDArray, moving_points: NDArray, weights: NDArray | None = None):
    """Centroids and centred points (weighted centroids when ``weights`` is given)."""
    if weights is None:
        cf = fixed_points.mean(axis=0)
        cm = moving_points.mean(axis=0)
    else:
        total = weights.sum()
        cf = np.einsum("n,ni->i", weights, fixed_points) / total
        cm = np.einsum("n,ni->i", weights, moving_points) / total
    return cf, cm, fixed_points - cf, moving_points - cm


def _cross(a: NDArray, b: NDArray, weights: NDArray | None) -> NDArray:
    """``sum_n w_n a_n b_n^T`` (einsum: a fixed summation order, no threaded BLAS)."""
    if weights is None:
        return np.einsum("ni,nj->ij", a, b)
    return np.einsum("n,ni,nj->ij", weights, a, b)


def _check_weights(weights: ArrayLike | None, n: int, where: str) -> NDArray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise InvalidInputError(
            f"{where}: 'weights' must be {n} finite non-negative numbers with a positive sum; got "
            f"shape {w.shape}{'' if w.shape != (n,) else ' with negative, non-finite or all-zero values'}."
        )
    return w


def _rotation(h: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """Proper rotation maximising ``trace(R^T h)`` (Kabsch), the singular values and signs."""
    u, sv, vt = np.linalg.svd(h)
    s = np.ones(h.shape[0])
    s[-1] = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag(s) @ vt, sv, s


def rigid_from_points(
    fixed_points: ArrayLike, moving_points: ArrayLike, *, weights: ArrayLike | None = None
) -> tuple[NDArray, NDArray]:
    """Least-squares rotation (Kabsch, reflections excluded): ``y ~ R x + o``.

    ``weights`` (optional, one non-negative number per pair) weigh the squared
    residuals.
    """
    f, m = _check_pairs(fixed_points, moving_points)
    w = _check_weights(weights, f.shape[0], "rigid_from_points()")
    cf, cm, fc, mc = _centered(f, m, w)
    r, _, _ = _rotation(_cross(mc, fc, w))
    return r, cm - r @ cf


def similarity_from_points(
    fixed_points: ArrayLike, moving_points: ArrayLike, *, weights: ArrayLike | None = None
) -> tuple[NDArray, NDArray]:
    """Least-squares similarity (Umeyama): ``y ~ s R x + o`` (optionally weighted)."""
    f, m = _check_pairs(fixed_points, moving_points)
    w = _check_weights(weights, f.shape[0], "similarity_from_points()")
    cf, cm, fc, mc = _centered(f, m, w)
    r, sv, s = _rotation(_cross(mc, fc, w))
    scale = float((sv * s).sum() / np.trace(_cross(fc, fc, w)))
    a = scale * r
    return a, cm - a @ cf


def affine_from_points(
    fixed_points: ArrayLike, moving_points: ArrayLike, *, weights: ArrayLike | None = None
) -> tuple[NDArray, NDArray]:
    """Least-squares affine map ``y ~ A x + o`` (needs ``ndim + 1`` points; optionally weighted)."""
    f, m = _check_pairs(fixed_points, moving_points)
    w = _check_weights(weights, f.shape[0], "affine_from_points()")
    d = f.shape[1]
    if f.shape[0] < d + 1:
        raise InvalidInputError(
            f"affine_from_points(): an affine fit in {d}-D needs at least {d + 1} point pairs; "
            f"got {f.shape[0]}."
        )
    cf, cm, fc, mc = _centered(f, m, w)
    a = np.linalg.lstsq(_cross(fc, fc, w), _cross(fc, mc, w), rcond=None)[0].T
    return a, cm - a @ cf


def _check_pairs(fixed_points: ArrayLike, moving_points: ArrayLike) -> tuple[NDArray, NDArray]:
    f = np.asarray(fixed_points, dtype=np.float64)
    if f.ndim != 2:
        raise ShapeError(f"landmarks: expected an (n, ndim) array; got shape {f.shape}.")
    f = as_points(f, f.shape[1], where="landmark_initializer()", name="fixed_points")
    m = as_points(moving_points, f.shape[1], where="landmark_initializer()", name="moving_points")
    if f.shape != m.shape:
        raise ShapeError(
            f"landmark_initializer(): fixed and moving landmarks must pair up; got {f.shape[0]} "
            f"and {m.shape[0]} points."
        )
    if f.shape[0] == 0:
        raise InvalidInputError("landmark_initializer(): no landmarks given.")
    return f, m


def _gauss_newton(t: Transform, f: NDArray, m: NDArray, iterations: int = 50) -> None:
    """Levenberg-Marquardt fit of ``t`` to ``t(f) ~ m`` in update coordinates (in place)."""
    lam = 1e-9
    cost = float(np.sum((t.transform_points(f) - m) ** 2))
    for _ in range(iterations):
        r = (t.transform_points(f) - m).reshape(-1)
        jac = t.jacobian(f).reshape(-1, t.n_parameters)
        jtj = jac.T @ jac
        g = jac.T @ r
        improved = False
        for _ in range(20):
            step = -np.linalg.lstsq(jtj + lam * np.diag(np.diag(jtj) + 1e-12), g, rcond=None)[0]
            trial = t.copy()
            trial.update_parameters(step)
            new_cost = float(np.sum((trial.transform_points(f) - m) ** 2))
            if new_cost <= cost:
                t.parameters = trial.parameters
                t.fixed_parameters = trial.fixed_parameters
                lam = max(lam / 10, 1e-12)
                improved = cost - new_cost > 1e-15 * max(cost, 1e-300)
                cost = new_cost
                break
            lam *= 10
        if not improved:
            break


def landmark_initializer(
    fixed_points: ArrayLike,
    moving_points: ArrayLike,
    transform: Transform,
) -> Transform:
    """Least-squares fit of a linear transform to paired landmarks.

    ``T(fixed_points[i]) ~ moving_points[i]`` in the least-squares sense, within
    the family of ``transform`` (translation, rigid, similarity, affine, or a
    user subclass).  The centre is set to the fixed centroid; the matrix is
    started from the closed-form rigid fit (Kabsch) via ``set_matrix`` when the
    transform has it, and refined by Levenberg-Marquardt in the transform's own
    parameters (exact for the built-in families).  Unlike ITK's Rigid2D
    initializer there is no ``-pi/2`` special case.

    Returns
    -------
    Transform
        The fitted copy.
    """
    f, m = _check_pairs(fixed_points, moving_points)
    if f.shape[1] != transform.ndim:
        raise ShapeError(
            f"landmark_initializer(): landmarks are {f.shape[1]}-D but the transform is {transform.ndim}-D."
        )
    t = transform.copy()
    if not isinstance(t, MatrixOffsetTransformBase):
        raise InvalidInputError(
            f"landmark_initializer(): expected a linear transform; got {type(t).__name__}."
        )
    cf, cm, _, _ = _centered(f, m)
    if t.fixed_parameters.size >= t.ndim:
        fp = t.fixed_parameters
        fp[: t.ndim] = cf
        t.fixed_parameters = fp
    set_matrix = getattr(t, "set_matrix", None)
    if set_matrix is not None and f.shape[0] >= 2:
        r, _ = rigid_from_points(f, m)
        set_matrix(r)
    set_translation(t, cm - cf)
    _gauss_newton(t, f, m)
    return t
