"""Built-in synthetic phantoms, generated in code (no data files needed).

The phantoms are label maps of smooth, asymmetric "anatomy" (a head with skull,
two tissue classes, ventricles and off-centre lesions) rendered with
modality-specific intensities, so that a pair can be mono-modal (same mapping)
or multi-modal (a non-monotonic mapping between the two, as between T1- and
PD-weighted MR).  Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ._validation import check_choice, check_ndim
from .image import Image

__all__ = ["phantom_labels", "phantom", "brain_pair"]

# intensity per label (background, skull, tissue A, tissue B, ventricles, lesion)
_CONTRASTS = {
    "t1": np.array([0.0, 40.0, 110.0, 160.0, 30.0, 210.0]),
    "pd": np.array([0.0, 150.0, 190.0, 120.0, 230.0, 60.0]),
    "ct": np.array([-1000.0, 900.0, 40.0, 20.0, 5.0, 70.0]),
}


def _grid(shape: tuple[int, ...]) -> list[NDArray[np.float64]]:
    # normalised coordinates in [-1, 1], numpy axis order
    return np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")


def _ellipsoid(coords, centre, radii) -> NDArray[np.bool_]:
    return sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii)) <= 1.0


def phantom_labels(shape: tuple[int, ...], seed: int = 0) -> NDArray[np.int64]:
    """Integer label map of the head phantom (numpy axis order ``shape``)."""
    rng = np.random.default_rng(seed)
    nd = len(shape)
    coords = _grid(shape)
    labels = np.zeros(shape, dtype=np.int64)
    head_r = np.array([0.78, 0.62, 0.7][:nd])[::-1] if nd == 3 else np.array([0.82, 0.66])
    head = _ellipsoid(coords, np.zeros(nd), head_r)
    brain = _ellipsoid(coords, np.zeros(nd), head_r - 0.08)
    labels[head] = 1
    labels[brain] = 2
    # tissue B: a smooth random field thresholded inside the brain
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=[n / 12 for n in shape])
    field += 0.6 * coords[-1] * np.std(field)  # a left-right trend breaks symmetry
    labels[brain & (field > np.quantile(field[brain], 0.55))] = 3
    # ventricles: two asymmetric ellipses
    for sign, size in ((-1.0, 0.16), (1.0, 0.11)):
        centre = np.zeros(nd)
        centre[-1] = sign * 0.14
        centre[0] = -0.05
        radii = np.full(nd, size)
        radii[0] = size * 1.9
        labels[_ellipsoid(coords, centre, radii)] = 4
    # off-centre lesions
    for centre, r in (((0.35, 0.3), 0.08), ((-0.4, -0.25), 0.06), ((0.1, -0.45), 0.05)):
        c = np.zeros(nd)
        c[-1], c[0] = centre[0], centre[1]
        labels[_ellipsoid(coords, c, np.full(nd, r)) & brain] = 5
    return labels


def phantom(
    ndim: int = 2,
    size: int = 128,
    *,
    contrast: str = "t1",
    spacing: float = 1.0,
    noise: float = 0.02,
    seed: int = 0,
) -> Image:
    """A synthetic head image.

    Parameters
    ----------
    ndim : {2, 3}
    size : int
        Voxels along x (y and z are slightly smaller, so the image is not a cube).
    contrast : {"t1", "pd", "ct"}
        Intensity mapping of the tissue labels.
    spacing : float
        Isotropic voxel size in mm (the 3-D phantom gets 1.5x along z).
    noise : float
        Standard deviation of additive Gaussian noise relative to the intensity range.
    seed : int
        Seed for the anatomy and the noise.
    """
    ndim = check_ndim(ndim, where="phantom()")
    check_choice(contrast, tuple(_CONTRASTS), where="phantom()", name="contrast")
    sizes = [size, int(round(size * 0.9)), int(round(size * 0.7))][:ndim]
    shape = tuple(reversed(sizes))
    labels = phantom_labels(shape, seed=seed)
    values = _CONTRASTS[contrast][labels]
    values = ndimage.gaussian_filter(values, sigma=0.8)
    span = float(values.max() - values.min())
    values = values + np.random.default_rng(seed + 1).normal(scale=noise * span, size=shape)
    sp = [spacing] * ndim
    if ndim == 3:
        sp[2] = 1.5 * spacing
    origin = -0.5 * (np.array(sizes) - 1) * np.array(sp)
    return Image(values.astype(np.float32), spacing=sp, origin=origin)


def brain_pair(ndim: int = 2, size: int = 128, *, multimodal: bool = False, seed: int = 0) -> tuple[Image, Image]:
    """A fixed/moving phantom pair on the same grid, not yet misaligned.

    ``multimodal=True`` renders the moving image with the PD-like contrast.
    Apply a known transform with :func:`regframe.resample` to create a
    registration problem with exact ground truth.
    """
    fixed = phantom(ndim, size, contrast="t1", seed=seed)
    moving = phantom(ndim, size, contrast="pd" if multimodal else "t1", seed=seed)
    return fixed, moving
