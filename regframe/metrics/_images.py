"""Kernel-ready views of images and masks used by the metric engine (private)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from .._parallel import CHUNK_SIZE
from ..errors import EmptyMaskError, ShapeError
from ..image import Image, as_mask, check_image
from . import _sample_kernels as _k

__all__ = ["ImagePack", "MaskPack", "as_image", "fold_linear"]


def as_image(image: Any, *, where: str, name: str) -> Image:
    """Check that ``image`` is a 2-D or 3-D :class:`~regframe.Image` (see :func:`regframe.image.check_image`)."""
    return check_image(image, name, where)


@dataclass(frozen=True)
class ImagePack:
    """Flat float64 values and geometry of an image, as the kernels take them."""

    data: NDArray[np.float64]
    size: NDArray[np.int64]
    p2i: NDArray[np.float64]
    origin: NDArray[np.float64]
    spacing: NDArray[np.float64]

    @property
    def size3(self) -> NDArray[np.int64]:
        """Size padded to 3-D with 1 (the kernels' fast path works in 3-D)."""
        out = np.ones(3, dtype=np.int64)
        out[: self.size.shape[0]] = self.size
        return out

    #: The image array the values were copied from (identifies a shared pack).
    source: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_image(cls, image: Image) -> ImagePack:
        """The image's pack, shared with every other holder of a pack of the same image.

        The float64 values are the largest array a metric keeps (twice a
        float32 image), so they are never copied twice: a C-ordered float64
        image (every smoothed pyramid level) is used as it is, and a
        registration that initialises several metrics on the same image (the
        guard's score, each stage, a regularized metric's data term) gets one
        pack, kept in a weak registry while some metric holds it (an
        :class:`Image`'s array is read-only, so the values cannot go stale).
        ``data`` is read-only; kernels only read it.
        """
        key = id(image)
        hit = _SHARED_PACKS.get(key)
        if hit is not None and hit.source is image.array:
            return hit
        arr = image.array
        if arr.dtype == np.float64 and arr.flags.c_contiguous:
            data = arr.reshape(-1)  # (a view of the read-only array, e.g. a pyramid level: no copy)
        else:
            data = np.array(arr, dtype=np.float64, order='C').reshape(-1)
            data.flags.writeable = False  # (read-only either way: one numba specialisation)
        pack = cls(
            data=data,
            size=np.asarray(image.size, dtype=np.int64),
            p2i=np.array(image.physical_to_index_matrix, dtype=np.float64, order='C'),
            origin=np.array(image.origin, dtype=np.float64, order='C'),
            spacing=np.array(image.spacing, dtype=np.float64, order='C'),
            source=image.array,
        )
        _SHARED_PACKS[key] = pack
        return pack

    def args(self) -> tuple:
        return (self.data, self.size, self.p2i, self.origin, self.spacing)


#: Packs alive somewhere, by ``id`` of their image (entries vanish with the last holder).
_SHARED_PACKS: weakref.WeakValueDictionary[int, ImagePack] = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class MaskPack:
    """A binary mask in its own geometry (nearest-voxel lookup, as ITK's mask objects)."""

    data: NDArray[np.uint8]
    size: NDArray[np.int64]
    p2i: NDArray[np.float64]
    origin: NDArray[np.float64]
    present: bool
    image: Image | None

    @classmethod
    def none(cls, ndim: int) -> MaskPack:
        return cls(
            data=np.zeros(1, dtype=np.uint8),
            size=np.ones(ndim, dtype=np.int64),
            p2i=np.eye(ndim),
            origin=np.zeros(ndim),
            present=False,
            image=None,
        )

    @classmethod
    def from_mask(cls, mask: Any, reference: Image, *, where: str, name: str) -> MaskPack:
        """Build from an :class:`Image` (own geometry) or an array shaped like ``reference``.

        Non-zero voxels are inside.  Raises :class:`EmptyMaskError` for an empty mask.
        """
        if mask is None:
            return cls.none(reference.ndim)
        image = as_mask(mask, reference, name, where)
        if image.ndim != reference.ndim:
            raise ShapeError(
                f"{where}: '{name}' must be {reference.ndim}-D like the image it masks; got a "
                f"{image.ndim}-D image."
            )
        values = np.asarray(image.array)
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            values = np.nan_to_num(values, nan=0.0)
        data = np.ascontiguousarray(values != 0, dtype=np.uint8).reshape(-1)
        if not data.any():
            raise EmptyMaskError(
                f"{where}: '{name}' must select at least one voxel; got a mask with no non-zero "
                "voxel. Check the mask file, or pass None to use the whole image."
            )
        return cls(
            data=data,
            size=np.asarray(image.size, dtype=np.int64),
            p2i=np.array(image.physical_to_index_matrix, dtype=np.float64, order='C'),
            origin=np.array(image.origin, dtype=np.float64, order='C'),
            present=True,
            image=image,
        )

    def args(self) -> tuple:
        """Kernel arguments ``(mask, mask_size, mask_p2i, mask_origin, has_mask)``.

        ``has_mask`` is ``True`` or ``None`` (never ``False``): numba prunes a branch on
        ``has_mask is not None`` for a ``None`` argument, so a run without a mask compiles
        no mask test into the fast path of its kernels (as ``physical=None`` does for the
        physical path).
        """
        return (self.data, self.size, self.p2i, self.origin, True if self.present else None)

    def contains(self, points: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Nearest-voxel membership of physical points (all True without a mask)."""
        if not self.present:
            return np.ones(points.shape[0], dtype=np.bool_)
        return _k.mask_contains(
            np.array(points, dtype=np.float64, order='C'), self.data, self.size, self.p2i,
            self.origin, CHUNK_SIZE,
        )


_Pack = TypeVar("_Pack", "ImagePack", "MaskPack")


def fold_linear(pack: _Pack, a: NDArray[np.float64], o: NDArray[np.float64]) -> _Pack:
    """The pack seen through ``y -> a @ y + o``: ``p2i' = p2i a``, ``origin' = a^-1 (origin - o)``.

    Then ``p2i' (y - origin') = p2i (a y + o - origin)`` and a physical gradient
    ``p2i'^T g = a^T (p2i^T g)`` (the chain rule), so kernels that take a pack
    evaluate the image (or mask) at ``a y + o`` unchanged.  ``a`` must be invertible.
    """
    p2i = np.ascontiguousarray(pack.p2i @ a)
    origin = np.ascontiguousarray(np.linalg.solve(a, pack.origin - o))
    return replace(pack, p2i=p2i, origin=origin)
