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

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from .._validation import as_float_vector
from ..errors import InvalidInputError
from ..image import Image

__all__ = ["Level", "LevelSchedule", "smooth_image", "shrink_geometry", "shrink_image"]


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


def shrink_image(image: Image, factors: Sequence[int] | int) -> Image:
    """Resample ``image`` (linearly) onto its :func:`shrink_geometry` grid.

    With factors of 1 the image is returned unchanged.  Smooth first (the
    caller's job) to avoid aliasing.
    """
    f = np.broadcast_to(np.asarray(factors, dtype=np.int64), (image.ndim,))
    if np.all(f == 1):
        return image
    grid = shrink_geometry(image, f)
    size = np.asarray(image.size)
    new_size = np.asarray(grid.size)
    start = ((size - 1) - f * (new_size - 1)) / 2.0
    # new voxel i sits at old continuous index start + f*i (per axis): separable
    coords = [start[d] + f[d] * np.arange(new_size[d]) for d in range(image.ndim)]
    mesh = np.meshgrid(*[coords[d] for d in reversed(range(image.ndim))], indexing="ij")
    values = ndimage.map_coordinates(
        image.array.astype(np.float64), mesh, order=1, mode="nearest"
    )
    return grid.with_array(values, copy=False)


def level_sigma(level: Level, image: Image) -> NDArray[np.float64]:
    """Per-axis sigma in voxels of ``image`` for ``level``."""
    sigma = as_float_vector(
        np.full(image.ndim, level.smoothing_sigma), image.ndim, where="level_sigma", name="sigma"
    )
    return sigma / image.spacing if level.sigma_in_physical_units else sigma
