"""Multi-resolution schedules: Gaussian smoothing and shrinking of images.

ITK's ``ImageRegistrationMethodv4`` smooths the full-resolution images and
shrinks only the *virtual sampling grid*; regframe does the same geometry
(``shrink_geometry`` reproduces ``ShrinkImageFilter``: size ``floor(n/f)``,
spacing ``s*f``, physical centre preserved) but, by default, also resamples the
smoothed images onto the shrunken grid - a true pyramid that needs a fraction
of the memory and time at coarse levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from .._validation import as_float_vector
from ..errors import InvalidInputError
from ..image import Image

__all__ = ["Level", "LevelSchedule", "ImagePyramid", "level_image", "smooth_image", "shrink_geometry", "shrink_image",
           "check_schedule_fits"]


@dataclass(frozen=True)
class Level:
    """One resolution level.

    Attributes
    ----------
    shrink_factors : tuple of int
        Per-axis shrink factor (ITK x, y, z order).
    smoothing_sigma : float
        Gaussian sigma, in physical units (mm) when
        ``sigma_in_physical_units`` else in voxels of the full-resolution image.
    sigma_in_physical_units : bool
        Unit of ``smoothing_sigma``.
    """

    shrink_factors: tuple[int, ...]
    smoothing_sigma: float
    sigma_in_physical_units: bool = True


@dataclass(frozen=True)
class LevelSchedule:
    """An explicit multi-resolution schedule (never silently reset, unlike ITK).

    Parameters
    ----------
    shrink_factors : sequence of int or of sequences of int
        One entry per level, coarse to fine (e.g. ``(4, 2, 1)``).
    smoothing_sigmas : sequence of float
        One per level (e.g. ``(2.0, 1.0, 0.0)``).
    sigmas_in_physical_units : bool
        ``True``: sigmas in mm (ITK's default); ``False``: in voxels.
    """

    shrink_factors: tuple = (4, 2, 1)
    smoothing_sigmas: tuple = (2.0, 1.0, 0.0)
    sigmas_in_physical_units: bool = False

    def __post_init__(self) -> None:
        if len(self.shrink_factors) != len(self.smoothing_sigmas) or not self.shrink_factors:
            raise InvalidInputError(
                "LevelSchedule(): 'shrink_factors' and 'smoothing_sigmas' must have the same, "
                f"non-zero length; got {len(self.shrink_factors)} and {len(self.smoothing_sigmas)}."
            )
        for f in self.shrink_factors:
            fs = np.atleast_1d(f)
            if np.any(fs < 1) or not np.all(np.equal(np.mod(fs, 1), 0)):
                raise InvalidInputError(
                    f"LevelSchedule(): shrink factors must be integers >= 1; got {f!r}."
                )
        if any(s < 0 for s in self.smoothing_sigmas):
            raise InvalidInputError(
                f"LevelSchedule(): smoothing sigmas must be >= 0; got {self.smoothing_sigmas!r}."
            )

    @property
    def n_levels(self) -> int:
        """Number of levels."""
        return len(self.shrink_factors)

    def level(self, index: int, ndim: int) -> Level:
        """The ``index``-th level with per-axis factors for dimension ``ndim``."""
        f = np.atleast_1d(self.shrink_factors[index]).astype(int)
        factors = tuple(int(v) for v in (np.full(ndim, f[0]) if f.size == 1 else f))
        return Level(factors, float(self.smoothing_sigmas[index]), self.sigmas_in_physical_units)

    @classmethod
    def single(cls) -> LevelSchedule:
        """One full-resolution level without smoothing."""
        return cls((1,), (0.0,))


def smooth_image(image: Image, sigma: float | ArrayLike, *, physical: bool = True) -> Image:
    """Gaussian smoothing with a sigma in mm (``physical=True``) or voxels.

    Uses :func:`scipy.ndimage.gaussian_filter` (exact sampled Gaussian,
    ``mode='nearest'``) in float64; deterministic and single-threaded.
    """
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (image.ndim,))
    if np.all(sig == 0):
        return image
    if physical:
        sig = sig / image.spacing
    # image axes are (x, y, z); numpy axes are reversed
    out = ndimage.gaussian_filter(image.array.astype(np.float64), sigma=sig[::-1], mode="nearest")
    return image.with_array(out, copy=False)


def shrink_geometry(image: Image, factors: Sequence[int] | int) -> Image:
    """Geometry of ITK's ``ShrinkImageFilter`` output (no values resampled).

    ``size = max(1, floor(n/f))``, ``spacing = s*f``; the origin is shifted so
    that the physical centre of the voxel-centre span is preserved.

    Returns
    -------
    Image
        A zero-filled float64 image with the shrunken geometry.
    """
    f = np.broadcast_to(np.asarray(factors, dtype=np.int64), (image.ndim,))
    size = np.asarray(image.size)
    new_size = np.maximum(1, size // f)
    new_spacing = image.spacing * f
    # continuous index (in the old grid) of new voxel 0, preserving the centre
    start = ((size - 1) - f * (new_size - 1)) / 2.0
    new_origin = image.origin + image.index_to_physical_matrix @ start
    return Image(
        np.zeros(tuple(int(v) for v in new_size[::-1])),
        spacing=new_spacing,
        origin=new_origin,
        direction=image.direction,
    )


def _shrink_offsets(n: int, f: int) -> tuple[NDArray[np.int64], bool]:
    """Old-grid indices of the shrunken voxels along one axis, and whether they sit halfway.

    New voxel ``i`` is at continuous index ``start + f*i`` with ``start =
    ((n - 1) - f*(m - 1)) / 2`` (centre preserved): an integer or a
    half-integer, so linear interpolation is a copy or a mean of two neighbours.
    """
    m = max(1, n // f)
    twice_start = (n - 1) - f * (m - 1)
    return np.arange(m, dtype=np.int64) * f + twice_start // 2, bool(twice_start % 2)


def _shrink_axis(array: NDArray[Any], axis: int, f: int) -> NDArray[np.float64]:
    """Shrink one axis; float64 result (taken voxels are converted, exactly, before averaging)."""
    idx, halfway = _shrink_offsets(array.shape[axis], f)
    out = np.take(array, idx, axis=axis).astype(np.float64, copy=False)  # (a new array either way)
    if not halfway:
        return out
    hi = np.take(array, idx + 1, axis=axis).astype(np.float64, copy=False)
    out *= 0.5  # 0.5 * lo + 0.5 * hi, in place (two output-sized arrays at a time)
    hi *= 0.5
    out += hi
    return out


def shrink_image(image: Image, factors: Sequence[int] | int) -> Image:
    """Resample ``image`` (linearly) onto its :func:`shrink_geometry` grid.

    With factors of 1 the image is returned unchanged.  Smooth first (the
    caller's job) to avoid aliasing.
    """
    f = np.broadcast_to(np.asarray(factors, dtype=np.int64), (image.ndim,))
    if np.all(f == 1):
        return image
    grid = shrink_geometry(image, f)
    values = image.array  # (float64 from the first shrink on: no full-size copy)
    for d in range(image.ndim):  # separable: one axis at a time (numpy axes are reversed)
        if f[d] > 1:
            values = _shrink_axis(values, image.ndim - 1 - d, int(f[d]))
    return grid.with_array(np.ascontiguousarray(values), copy=False)


def level_image(image: Image, level: Level) -> Image:
    """``shrink_image(smooth_image(image, sigma), factors)`` of a level, computed axis by axis.

    Smoothing and linear resampling are separable, so each axis is filtered and
    then shrunk before the next axis is filtered: the same image (up to
    rounding) for a fraction of the work at coarse levels.  Computed in
    float64 with one full-size array at a time: the first filter (or shrink)
    reads the image's own values and later filters work in place (scipy's
    1-D filters buffer each line, as its ``gaussian_filter`` relies on), so
    building a full-resolution level costs one float64 copy, not three.
    """
    sigma = level_sigma(level, image)
    f = np.broadcast_to(np.asarray(level.shrink_factors, dtype=np.int64), (image.ndim,))
    if np.all(sigma == 0) and np.all(f == 1):
        return image
    values = image.array
    for d in range(image.ndim):
        axis = image.ndim - 1 - d
        if sigma[d] > 0:
            out = np.float64 if values is image.array else values
            values = ndimage.gaussian_filter1d(values, float(sigma[d]), axis=axis, mode="nearest", output=out)
        if f[d] > 1:
            values = _shrink_axis(values, axis, int(f[d]))
    grid = shrink_geometry(image, f) if np.any(f > 1) else image
    return grid.with_array(np.ascontiguousarray(values), copy=False)


def check_schedule_fits(schedule: LevelSchedule, image: Image, where: str = "check_schedule_fits()") -> None:
    """Check that every level of ``schedule`` leaves at least 2 voxels along each axis of ``image``.

    A shrink factor larger than half the image along an axis leaves a single
    voxel there, and the level registers nothing but noise (axes that have a
    single voxel anyway are exempt).

    Raises
    ------
    InvalidInputError
        A level shrinks an axis to one voxel; the message names the level, the
        axis and the largest factor that fits.
    """
    size = np.asarray(image.size)
    names = "xyzt"
    for index in range(schedule.n_levels):
        factors = np.asarray(schedule.level(index, image.ndim).shrink_factors)
        bad = [d for d in range(image.ndim) if size[d] >= 2 and size[d] // factors[d] < 2]
        if bad:
            d = bad[0]
            raise InvalidInputError(
                f"{where}: the shrink factors must leave at least 2 voxels along every axis; got "
                f"factor {int(factors[d])} at level {index + 1} of {schedule.n_levels} on axis "
                f"{names[d]}, where the image has {int(size[d])} voxels (size {tuple(image.size)}). "
                f"Use factors <= {int(size[d]) // 2} on that axis (per-axis factors such as "
                f"{tuple(min(int(f), max(1, int(n) // 2)) for f, n in zip(factors, size))}) or fewer levels."
            )


class ImagePyramid:
    """The level images of one image under a schedule, computed once, on demand.

    Pass pyramids instead of images to :meth:`RegistrationMethod.run` to share
    the smoothing and shrinking between stages (as :func:`register` does).

    Parameters
    ----------
    image : Image
        Full-resolution image.
    schedule : LevelSchedule
    """

    def __init__(self, image: Image, schedule: LevelSchedule) -> None:
        if not isinstance(image, Image):
            raise InvalidInputError(f"ImagePyramid(): 'image' must be a regframe Image; got {type(image).__name__}.")
        if not isinstance(schedule, LevelSchedule):
            raise InvalidInputError(
                f"ImagePyramid(): 'schedule' must be a LevelSchedule; got {type(schedule).__name__}."
            )
        check_schedule_fits(schedule, image, "ImagePyramid()")
        self.image = image
        self.schedule = schedule
        self._levels: dict[int, Image] = {}

    @property
    def ndim(self) -> int:
        """Dimension of the image."""
        return self.image.ndim

    def level(self, index: int) -> Image:
        """The smoothed and shrunken image of level ``index`` (cached)."""
        if index not in self._levels:
            self._levels[index] = level_image(self.image, self.schedule.level(index, self.image.ndim))
        return self._levels[index]


def level_sigma(level: Level, image: Image) -> NDArray[np.float64]:
    """Per-axis sigma in voxels of ``image`` for ``level``."""
    sigma = as_float_vector(
        np.full(image.ndim, level.smoothing_sigma), image.ndim, where="level_sigma", name="sigma"
    )
    return sigma / image.spacing if level.sigma_in_physical_units else sigma
