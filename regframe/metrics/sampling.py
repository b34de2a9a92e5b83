"""Sample sets on the fixed image: full grid, regular subset, seeded random subset.

A sampler picks voxels of the fixed image grid, optionally leaving out a border
``margin`` of voxel layers, optionally jitters them (ITK's ``N(0, 1) * spacing / 3``
per world axis), and keeps the points inside the fixed mask (tested at the final, possibly jittered, physical point with the
mask's nearest voxel, as ITK's ``ImageMaskSpatialObject``).  The sample set is
computed once per :meth:`~regframe.metrics.Metric.initialize` and reused for
every evaluation.

Randomness comes only from a seeded :class:`numpy.random.Generator`: the same
sampler (same seed) on the same image and mask gives identical samples.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import _describe
from ..errors import EmptyMaskError, InvalidInputError
from ..image import Image
from ._images import MaskPack, as_image

__all__ = ["SampleSet", "Sampler", "FullSampler", "RegularSampler", "RandomSampler"]


@dataclass(frozen=True)
class SampleSet:
    """Sample points on the fixed image.

    Attributes
    ----------
    points : (n, ndim) ndarray of float64
        Physical points in (x, y[, z]) order, sorted by the voxel they came
        from (ITK raster order).
    voxels : (n,) ndarray of int64
        Flat raster index (``array.ravel()`` position) of the voxel each
        sample came from.
    on_grid : bool
        True when the points are exactly the voxel centres (no jitter), so
        fixed values are the voxel values themselves.
    n_candidates : int
        Voxels that were considered (inside the fixed mask, or all).
    """

    points: NDArray[np.float64]
    voxels: NDArray[np.int64]
    on_grid: bool
    n_candidates: int

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.points.shape[0])


def _check_fraction(value: Any, where: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{where}: 'fraction' must be a number in (0, 1]; got {value!r}."
        ) from exc
    if not (0.0 < f <= 1.0):
        raise InvalidInputError(
            f"{where}: 'fraction' must be in (0, 1] (e.g. 0.2 for 20 % of the voxels); got {value!r}."
        )
    return f


def _check_margin(margin: Any, where: str) -> int:
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise InvalidInputError(
            f"{where}: 'margin' must be a non-negative integer (voxel layers left out at every "
            f"border; 0 for none); got {_describe(margin)}."
        )
    return int(margin)


def _check_seed(seed: Any, where: str) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(
            f"{where}: 'seed' must be a non-negative integer (or None for a fresh, "
            f"non-reproducible seed); got {_describe(seed)}."
        )
    return int(seed)


def _interior(shape: tuple[int, ...], margins: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Boolean array of ``shape`` (numpy order): True outside the border ``margins`` (numpy order)."""
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(int(m), int(n - m)) for n, m in zip(shape, margins))] = True
    return out


class Sampler(ABC):
    """Base class of samplers.

    Parameters
    ----------
    jitter : bool, default False
        Move every chosen voxel centre by ``N(0, 1) * spacing[a] / 3`` along
        each world axis ``a`` (ITK's sampling jitter); needs ``seed`` for
        reproducibility.
    seed : int or None, default 0
        Seed of the :class:`numpy.random.Generator` used for random choices
        and jitter.  ``None`` draws a fresh seed (not reproducible).
    margin : int, default 0
        Leave out the outermost ``margin`` voxel layers at every border of
        the image: only voxels with ``margin <= index <= size - 1 - margin``
        on every axis are candidates, and jittered points are kept only when
        their continuous index is in ``[margin - 0.5, size - 0.5 - margin)``
        (ITK's buffer rule shrunk by ``margin``).  An axis too short for it
        keeps its middle voxel(s): its margin is ``min(margin, (size - 1) // 2)``.
        Linear registration stages use ``margin=1`` (see
        :data:`regframe.registration.defaults.BORDER_MARGIN`).

    Notes
    -----
    Subclasses must implement :meth:`_select`, which chooses among the
    candidate voxels (those whose centre is in the fixed mask and outside the
    border margin).
    """

    def __init__(self, *, jitter: bool = False, seed: int | None = 0, margin: int = 0) -> None:
        where = f"{type(self).__name__}()"
        self.jitter = bool(jitter)
        self.seed = _check_seed(seed, where)
        self.margin = _check_margin(margin, where)

    @abstractmethod
    def _select(self, candidates: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
        """Subclasses must implement: chosen flat voxel indices, sorted ascending."""
        raise NotImplementedError(f"{type(self).__name__}._select()")

    def _select_all(self, n_voxels: int, rng: np.random.Generator) -> NDArray[np.int64]:
        """:meth:`_select` among all ``n_voxels`` voxels (no mask).

        Built-in samplers override it to choose without materialising the
        ``arange(n_voxels)`` candidates (8 bytes per voxel of the fixed image);
        the result must equal ``_select(arange(n_voxels), rng)``.
        """
        return self._select(np.arange(n_voxels, dtype=np.int64), rng)

    def sample(self, image: Image, mask: Image | NDArray[Any] | None = None) -> SampleSet:
        """Draw the sample set on ``image``.

        Parameters
        ----------
        image : Image
            The fixed image (its grid defines the candidate points).
        mask : Image or array, optional
            Fixed mask: an :class:`Image` in its own geometry, or an array
            with the shape of ``image.array``; non-zero means inside.

        Returns
        -------
        SampleSet

        Raises
        ------
        EmptyMaskError
            The mask (or the sampler) leaves no sample.
        """
        where = f"{type(self).__name__}.sample()"
        image = as_image(image, where=where, name="image")
        mpack = MaskPack.from_mask(mask, image, where=where, name="mask")
        rng = np.random.default_rng(self.seed)
        lo = self._margins(image)  # per axis, ITK (x, y, z) order
        box = tuple(int(n - 2 * m) for n, m in zip(image.shape, lo[::-1]))  # interior shape, numpy order
        n_vox = int(np.prod(box))
        if mpack.present:
            centres = image.voxel_points()
            inside = mpack.contains(centres)
            if lo.any():
                inside &= _interior(image.shape, lo[::-1]).ravel()
            candidates = np.flatnonzero(inside).astype(np.int64)
            n_candidates = int(candidates.size)
        else:
            centres = candidates = None
            n_candidates = n_vox
        if n_candidates == 0:
            raise EmptyMaskError(
                f"{where}: the fixed mask contains no voxel centre of the fixed image; got a mask "
                "that does not overlap the image. Check the mask geometry (origin, spacing, "
                "direction) against the fixed image."
            )
        if candidates is not None:
            chosen = np.asarray(self._select(candidates, rng), dtype=np.int64)
        else:
            chosen = np.asarray(self._select_all(n_vox, rng), dtype=np.int64)
            if lo.any():  # interior raster position -> image raster position (order kept)
                sub = np.unravel_index(chosen, box)
                chosen = np.ravel_multi_index(tuple(i + m for i, m in zip(sub, lo[::-1])), image.shape)
                chosen = chosen.astype(np.int64)
        if centres is not None:
            points = centres[chosen]
        else:
            idx = np.stack(np.unravel_index(chosen, image.shape)[::-1], axis=1).astype(np.float64)
            points = idx @ image.index_to_physical_matrix.T + image.origin
        on_grid = True
        if self.jitter and points.shape[0]:
            points = points + rng.standard_normal(points.shape) * (image.spacing / 3.0)
            on_grid = False
            keep = self._inside(image, points, lo) & mpack.contains(points)
            points, chosen = points[keep], chosen[keep]
        if points.shape[0] == 0:
            raise EmptyMaskError(
                f"{where}: no sample point is left (mask and sampling fraction leave nothing); "
                "got 0 samples. Increase the sampling fraction or check the mask."
            )
        return SampleSet(
            points=np.ascontiguousarray(points, dtype=np.float64),
            voxels=np.ascontiguousarray(chosen),
            on_grid=on_grid,
            n_candidates=n_candidates,
        )

    def _margins(self, image: Image) -> NDArray[np.int64]:
        """The border margin per axis (ITK order), at most ``(size - 1) // 2``."""
        size = np.asarray(image.size, dtype=np.int64)
        return np.minimum(self.margin, (size - 1) // 2)

    @staticmethod
    def _inside(image: Image, points: NDArray[np.float64], lo: NDArray[np.int64]) -> NDArray[np.bool_]:
        """ITK's buffer rule (:meth:`Image.is_inside`) shrunk by ``lo`` voxels per axis."""
        if not lo.any():
            return image.is_inside(points)
        ci = image.physical_to_index(points)
        size = np.asarray(image.size, dtype=np.float64)
        return np.all((ci >= lo - 0.5) & (ci < size - 0.5 - lo), axis=1)

    def _extra_repr(self) -> str:
        return f", margin={self.margin}" if self.margin else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(jitter={self.jitter}, seed={self.seed}{self._extra_repr()})"


class FullSampler(Sampler):
    """Every voxel of the fixed image (inside the fixed mask): ITK's dense sampling.

    Parameters
    ----------
    jitter : bool, default False
    seed : int or None, default 0
        Only used for the jitter.
    """

    def _select(self, candidates: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
        return candidates

    def _select_all(self, n_voxels: int, rng: np.random.Generator) -> NDArray[np.int64]:
        return np.arange(n_voxels, dtype=np.int64)


class RegularSampler(Sampler):
    """Every ``step``-th candidate voxel in raster order (ITK's REGULAR sampling).

    Parameters
    ----------
    fraction : float, default 0.25
        Wanted fraction of the candidate voxels; ``step = ceil(1 / fraction)``
        (as ITK, 0.3 gives every 4th voxel).
    jitter : bool, default False
    seed : int or None, default 0
        Only used for the jitter.
    """

    def __init__(self, fraction: float = 0.25, *, jitter: bool = False, seed: int | None = 0,
                 margin: int = 0) -> None:
        super().__init__(jitter=jitter, seed=seed, margin=margin)
        self.fraction = _check_fraction(fraction, "RegularSampler()")
        self.step = int(math.ceil(1.0 / self.fraction - 1e-12))

    def _select(self, candidates: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
        return candidates[:: self.step]

    def _select_all(self, n_voxels: int, rng: np.random.Generator) -> NDArray[np.int64]:
        return np.arange(0, n_voxels, self.step, dtype=np.int64)

    def __repr__(self) -> str:
        return f"RegularSampler(fraction={self.fraction}, jitter={self.jitter}, seed={self.seed}{self._extra_repr()})"


class RandomSampler(Sampler):
    """A seeded random subset of the candidate voxels (without replacement).

    Parameters
    ----------
    fraction : float, default 0.1
        ``floor(fraction * n_candidates)`` voxels (at least one) are drawn.
    seed : int or None, default 0
        Same seed, image and mask give identical samples.  ``None`` draws a
        fresh seed.
    jitter : bool, default False
        Jitter the chosen voxel centres (see :class:`Sampler`).

    Notes
    -----
    Unlike ITK (which draws with replacement from its Mersenne twister) the
    voxels are drawn without replacement with :class:`numpy.random.Generator`
    and sorted into raster order (cache-friendly).
    """

    def __init__(self, fraction: float = 0.1, seed: int | None = 0, *, jitter: bool = False,
                 margin: int = 0) -> None:
        super().__init__(jitter=jitter, seed=seed, margin=margin)
        self.fraction = _check_fraction(fraction, "RandomSampler()")

    def _select(self, candidates: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
        count = max(1, int(math.floor(self.fraction * candidates.size)))
        if count >= candidates.size:
            return candidates
        pick = rng.choice(candidates.size, size=count, replace=False)
        return candidates[np.sort(pick)]

    def _select_all(self, n_voxels: int, rng: np.random.Generator) -> NDArray[np.int64]:
        count = max(1, int(math.floor(self.fraction * n_voxels)))
        if count >= n_voxels:
            return np.arange(n_voxels, dtype=np.int64)
        return np.sort(rng.choice(n_voxels, size=count, replace=False)).astype(np.int64)

    def __repr__(self) -> str:
        return f"RandomSampler(fraction={self.fraction}, seed={self.seed}, jitter={self.jitter}{self._extra_repr()})"
