"""Stacks of 2-D slices: their geometry, and :func:`warp_stack` (one 2-D transform per slice).

A *stack* is either a 3-D :class:`~regframe.image.Image` whose first numpy
axis indexes the slices (ITK's z; its direction must keep z apart from x and
y) or a sequence of 2-D images of one geometry.  Slice ``k`` is the 2-D image
with the stack's in-plane spacing, origin and direction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike, NDArray
from scipy import ndimage

from .._validation import check_choice
from ..errors import InvalidInputError, ShapeError
from ..image import Image
from ..transforms.base import Transform
from ..transforms.composite import CompositeTransform
from ..transforms.linear import MatrixOffsetTransformBase
from . import _warp_kernels as _k
from .resample import cast_values, output_dtype, resample

__all__ = ["warp_stack", "stack_slices", "slice_image", "reference_slices", "StackLike"]

StackLike = Image | Sequence[Image]

#: Output rows per parallel task (fixed: results never depend on the thread count).
ROWS_PER_TASK = 8
#: Slices warped per block when the output needs a float scratch buffer (integer outputs, B-splines).
_SLICE_BLOCK = 8
_KINDS = {"nearest": _k.NEAREST, "linear": _k.LINEAR, "bspline": _k.BSPLINE}


def stack_slices(stack: StackLike, *, where: str = "stack") -> tuple[NDArray, Image]:
    """The slices of a stack as one ``(nz, ny, nx)`` array and a 2-D image of their geometry.

    Parameters
    ----------
    stack : Image or sequence of Image
        A 3-D image (slices along the first numpy axis) or 2-D images of one
        size, spacing, origin and direction.

    Returns
    -------
    array : (nz, ny, nx) ndarray
        A read-only view for a 3-D image; a new array for a sequence.
    template : Image
        A 2-D image (the first slice) carrying the in-plane geometry.
    """
    if isinstance(stack, Image):
        if stack.ndim != 3:
            raise ShapeError(
                f"{where}: a stack image must be 3-D (slices along the first numpy axis); got a "
                f"{stack.ndim}-D image. Pass 2-D slices as a list of Images."
            )
        d = stack.direction
        if np.any(np.abs(d[:2, 2]) > 1e-9) or np.any(np.abs(d[2, :2]) > 1e-9):
            raise InvalidInputError(
                f"{where}: the stack's direction must keep the slice axis (z) apart from x and y; "
                f"got direction {d.tolist()}. Resample the volume to axis-aligned slices first."
            )
        arr = stack.array
        template = Image(arr[0], stack.spacing[:2], stack.origin[:2], d[:2, :2], copy=False)
        return arr, template
    slices = list(stack)
    if not slices or not all(isinstance(s, Image) and s.ndim == 2 for s in slices):
        raise InvalidInputError(
            f"{where}: expected a 3-D Image or a non-empty sequence of 2-D Images; got "
            f"{[type(s).__name__ if not isinstance(s, Image) else f'{s.ndim}-D Image' for s in slices][:4]}."
        )
    first = slices[0]
    for k, s in enumerate(slices):
        if s.shape != first.shape or not s.same_geometry(first):
            raise InvalidInputError(
                f"{where}: every slice must have the first slice's size and geometry; slice {k} has "
                f"size {s.size}, spacing {s.spacing.tolist()}, origin {s.origin.tolist()} but slice 0 "
                f"has size {first.size}, spacing {first.spacing.tolist()}, origin {first.origin.tolist()}. "
                "Resample the slices onto one grid first."
            )
    return np.stack([s.array for s in slices]), first


def slice_image(array: NDArray, template: Image, k: int) -> Image:
    """Slice ``k`` of a stack array as a 2-D image with the template's geometry (no copy)."""
    return Image(array[k], template.spacing, template.origin, template.direction, copy=False)


def _stack_image(out: NDArray, stack: StackLike, template: Image, reference: StackLike | None = None) -> Image:
    """The output as a 3-D image: the reference stack's geometry, else the template's in-plane one.

    Along z it keeps a 3-D input's spacing, origin and direction (unit spacing for a sequence).
    """
    source = stack if reference is None else reference
    if isinstance(source, Image) and source.ndim == 3:
        return source.with_array(out, copy=False)
    along_z = (stack.spacing[2], stack.origin[2], stack.direction[2, 2]) if isinstance(stack, Image) else (1.0, 0.0, 1.0)
    d = np.eye(3)
    d[:2, :2], d[2, 2] = template.direction, along_z[2]
    return Image(out, (*template.spacing, along_z[0]), (*template.origin, along_z[1]), d, copy=False)


def reference_slices(reference: StackLike, nz: int, *, where: str, hint: str = "") -> tuple[NDArray, Image]:
    """:func:`stack_slices` of a reference stack that must have ``nz`` slices (one per stack slice)."""
    array, template = stack_slices(reference, where=f"{where}(reference=...)")
    if array.shape[0] != nz:
        raise InvalidInputError(
            f"{where}: the reference stack must have one slice per stack slice ({nz}); got {array.shape[0]}.{hint}"
        )
    return array, template


def _output_grid(reference: StackLike, nz: int) -> Image:
    """The 2-D grid of every output slice: a 2-D image, or the slice geometry of a stack of ``nz`` slices."""
    if isinstance(reference, Image) and reference.ndim == 2:
        return reference
    return reference_slices(reference, nz, where="warp_stack()",
                            hint=" Pass a 2-D image to use one grid for every slice.")[1]


def _check_transforms(transforms: Transform | Sequence[Transform], nz: int) -> list[Transform]:
    if isinstance(transforms, Transform):
        transforms = [transforms] * nz
    transforms = list(transforms)
    if len(transforms) != nz:
        raise InvalidInputError(
            f"warp_stack(): expected one transform for all slices or one per slice ({nz}); got "
            f"{len(transforms)}."
        )
    for k, t in enumerate(transforms):
        if not isinstance(t, Transform) or t.ndim != 2:
            raise InvalidInputError(
                f"warp_stack(): transform {k} must be a 2-D regframe Transform; got "
                f"{t!r}. Slices are 2-D, so their transforms are too."
            )
    return transforms


def linear_parts(transform: Transform) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """``(A, o)`` with ``T(x) = A x + o`` for linear transforms (and composites of them), else None."""
    if isinstance(transform, MatrixOffsetTransformBase):
        return transform.matrix, transform.offset
    if isinstance(transform, CompositeTransform):
        a, o = np.eye(transform.ndim), np.zeros(transform.ndim)
        for member in transform.transforms:  # T = T_0(T_1(...)): compose left to right
            parts = linear_parts(member)
            if parts is None:
                return None
            o = a @ parts[1] + o
            a = a @ parts[0]
        return a, o
    return None


def _index_map(grid: Image, template: Image, matrix: NDArray[np.float64],
               offset: NDArray[np.float64]) -> NDArray[np.float64]:
    """Output index (of ``grid``) -> input continuous index (of ``template``) for ``x -> matrix @ x + offset``."""
    p2i = template.physical_to_index_matrix
    m = np.empty((2, 3))
    m[:, :2] = p2i @ matrix @ grid.index_to_physical_matrix
    m[:, 2] = p2i @ (matrix @ grid.origin + offset - template.origin)
    return m


def warp_stack(
    stack: StackLike,
    transforms: Transform | Sequence[Transform],
    *,
    interpolator: str = "linear",
    default_value: float = 0.0,
    dtype: DTypeLike | None = None,
    reference: StackLike | None = None,
) -> Image:
    """Resample every slice of a stack through its own 2-D transform.

    Slice ``k`` of the output is ``resample(slice_k, transforms[k],
    reference=grid_k)``: output voxel ``x`` gets ``slice_k(T_k(x))`` (ITK's
    pull-back convention; a registration result of fixed ``F`` and moving
    ``slice_k`` aligns the slice with ``F``).  ``grid_k`` is the slice's own
    grid unless ``reference`` is given.

    Parameters
    ----------
    stack : Image or sequence of Image
        A 3-D image with the slices along the first numpy axis, or 2-D images
        of one geometry.
    transforms : Transform or sequence of Transform
        One 2-D transform for all slices, or one per slice.  Linear transforms
        (and composites of them) are fused into a per-slice index map and
        warped by one numba kernel, parallel over slices and rows in
        fixed-size blocks; other transforms map the points of one slice at a
        time.
    interpolator : {"linear", "nearest", "bspline"}
    default_value : float
        Value of output voxels mapping outside their slice.
    dtype : dtype, optional
        Output pixel type.  Default: the input's (as :func:`~regframe.registration.resample`);
        integer outputs are rounded and clipped.
    reference : Image or sequence of Image, optional
        Output grid: a 2-D image (the grid of every output slice) or a stack
        of as many slices (its slice geometry, e.g. the anchor stack slice
        ``k`` was registered to).  Default: the stack's own slice grid.

    Returns
    -------
    Image
        A 3-D image with one output slice per input slice: the geometry of
        ``reference`` if it is a 3-D image, else of the stack (for a
        sequence: unit z spacing) with the in-plane grid of ``reference``
        when given.  The inputs are not modified.

    Notes
    -----
    Memory is the output plus, for B-splines or integer outputs, a float
    buffer of a few slices.  Results equal per-slice
    :func:`~regframe.registration.resample` up to rounding (the fused index
    map sums in another order) and are bit-identical for any number of numba
    threads.
    """
    check_choice(interpolator, tuple(_KINDS), where="warp_stack()", name="interpolator")
    array, template = stack_slices(stack, where="warp_stack()")
    nz = array.shape[0]
    transforms = _check_transforms(transforms, nz)
    grid = template if reference is None else _output_grid(reference, nz)
    out_dtype = output_dtype(dtype, array.dtype, where="warp_stack()")
    direct = out_dtype in (np.float32, np.float64) and interpolator != "bspline"
    out = np.empty((nz, *grid.shape), dtype=out_dtype)
    parts = [linear_parts(t) for t in transforms]
    linear = [k for k, p in enumerate(parts) if p is not None]
    for start in range(0, len(linear), nz if direct else _SLICE_BLOCK):
        ks = linear[start : start + (nz if direct else _SLICE_BLOCK)]
        maps = np.stack([_index_map(grid, template, *parts[k]) for k in ks])
        data = _kernel_input(array, ks, interpolator, len(ks) == nz)
        target = out if direct and len(ks) == nz else \
            np.empty((len(ks), *grid.shape), dtype=out_dtype if direct else np.float64)
        _k.warp_slices(data, target, maps, _KINDS[interpolator], float(default_value), ROWS_PER_TASK)
        if target is not out:
            out[ks] = cast_values(target, out_dtype)
    for k in (k for k, p in enumerate(parts) if p is None):
        warped = resample(slice_image(array, template, k), transforms[k], grid, interpolator=interpolator,
                          default_value=default_value, dtype=np.float64)
        out[k] = cast_values(warped.array, out_dtype)
    return _stack_image(out, stack, grid, reference)


def _kernel_input(array: NDArray, ks: list[int], interpolator: str, whole: bool) -> NDArray:
    """Slices ``ks`` as the kernel reads them: float32/float64 values, or B-spline coefficients."""
    if interpolator == "bspline":
        return np.stack([ndimage.spline_filter(np.asarray(array[k], dtype=np.float64), order=3,
                                               output=np.float64, mode="mirror") for k in ks])
    data = array if whole else array[ks]
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    return np.ascontiguousarray(data)
