"""Global initialization: candidate start transforms from FFT searches.

Local optimizers only find the optimum near their start.  The generators here
look at the whole image pair and propose *candidate* starts, which the caller
refines briefly and ranks on its metric:

- :func:`phase_correlation` - translations from the normalized cross-power
  spectrum (windowed, masked, sub-pixel; 2-D and 3-D);
- :func:`fourier_mellin` - 2-D rotation and isotropic scale from the
  log-polar magnitude spectra (translation invariant);
- :func:`global_candidates` - transforms of a registration kind: phase
  correlation on the start, Fourier-Mellin rotations (2-D) or a rotation (x
  scale) grid (2-D ``search="grid"``), each followed by phase correlation, all
  scored by the normalized correlation over the overlap and pruned to a few
  (for affine registrations also block-matched anisotropic scalings,
  :mod:`regframe.registration._block_search`); in 3-D a rotation search scored by the normalized correlation
  over all shifts (:mod:`regframe.registration.rotation_search_3d`).

Conventions are ITK's: a transform maps fixed points to moving points, so a
translation ``t`` from :func:`phase_correlation` means ``fixed(x) ~ moving(x + t)``.

How the FFT searches are made robust (the choices a user may want to know):

- each image is reduced to zero (weighted) mean and multiplied by a cosine
  taper that falls to zero at the border of the field of view and of the mask
  (``TAPER_FRACTION`` of the smallest extent), so neither the image edges nor
  the mask edges correlate;
- the FFTs are zero-padded to 1.5 times the grid, and every peak is checked
  at both of its wrap-around aliases (shift ``k`` or ``k - L``) by the
  normalized correlation of the raw values over the overlap of the two masks -
  the alias and the peak with the higher correlation win; overlaps below
  ``MIN_OVERLAP`` of the smaller mask are penalised proportionally;
- the normalized cross-power spectrum is multiplied by a Gaussian of
  ``PEAK_SIGMA`` voxels, which shapes the peak into a Gaussian, so a
  three-point log-parabola per axis locates it to a small fraction of a voxel.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import fft as sfft
from scipy import ndimage

from .._validation import check_choice, check_positive_int
from ..errors import ConstantImageError, EmptyMaskError, InvalidInputError, NonFiniteError
from ..image import Image
from ..interpolators import LinearInterpolator
from ..transforms.euler import rotation_2d
from ..transforms.linear import AffineTransform, MatrixOffsetTransformBase
from ..transforms.versor import versor_from_axis_angle, versor_matrix
from .initializers import _mask_inside, set_translation
from .pyramid import Level, level_image
from . import _global_init_kernels as _k
from ._peaks import find_peaks, subpixel_offset
from .rotation_search_3d import WORK_VOXELS, distinct, rotation_grid_3d, rotation_search_3d
from ._block_search import anisotropic_candidates, whitened

__all__ = [
    "phase_correlation",
    "fourier_mellin",
    "global_candidates",
    "rotation_grid_3d",
    "SEARCH_MODES",
]

#: Values of ``search`` in :func:`global_candidates`.
SEARCH_MODES = ("auto", "translation", "rotation", "grid")
_KINDS = ("translation", "rigid", "similarity", "affine")

#: Width of the cosine taper at field-of-view and mask borders (fraction of the smallest extent).
TAPER_FRACTION = 0.12
#: Spatial sigma (voxels) of the Gaussian that shapes the phase-correlation peak.
PEAK_SIGMA = 1.0
#: Overlaps below this fraction of the smaller mask scale the correlation score down.
MIN_OVERLAP = 0.25
#: FFT length per axis relative to the grid (wrap-around aliases resolved by correlation).
PAD_FACTOR = 1.5
#: Working grid size of :func:`global_candidates`: larger images are shrunk by the integer factor
#: nearest to ``size / WORK_SIZE`` per axis (so the grid has 2/3 to 3/2 of this many voxels).
WORK_SIZE = {2: 96, 3: 32}
#: Margin around the fixed working grid (fraction of its size per side), so moving content
#: beyond the fixed field of view still takes part in the correlation.
MARGIN = 0.25
#: Log-polar sampling of Fourier-Mellin: angles over [0, pi) and log-radii.
FM_ANGLES, FM_RADII = 256, 96
#: Range of the scales Fourier-Mellin may return.
SCALE_RANGE = (0.5, 2.0)
#: 2-D ``"auto"`` trusts its phase-correlation and Fourier-Mellin candidates when the best one
#: correlates by ``CONFIDENT_SCORE[1]``, or by ``CONFIDENT_SCORE[0]`` with a Fourier-Mellin peak of
#: at least ``FM_MIN_PEAK`` (measured: 0.03-0.13 for sections and brain slices that overlap fully,
#: 0.01 for EM crops overlapping by half, whose isotropic texture tells no rotation); otherwise
#: it also tries rotations every ``SWEEP_STEP`` degrees (the ``"grid"`` search, about 0.1 s).
CONFIDENT_SCORE, FM_MIN_PEAK, SWEEP_STEP = (0.5, 0.8), 0.02, 6.0
#: The 2-D rotation (x scale) sweep is ranked on a working grid ``PRESCREEN_SHRINK`` times coarser (when it keeps
#: at least ``PRESCREEN_MIN`` voxels per axis); its best ``PRESCREEN_KEEP`` (fraction) are scored on the working grid.
PRESCREEN_SHRINK, PRESCREEN_MIN, PRESCREEN_KEEP = 2, 40, 0.1
#: Scales tried on the best rotations when no Fourier-Mellin scale is available.
SCALE_GRID = (0.7, 0.8, 0.9, 1.1, 1.25, 1.4)
#: 2-D grid search of similarity and affine kinds: every rotation at each of these scales (a texture
#: at the wrong scale correlates at no rotation), then ``FINE_SCALES`` on the best ``N_SCALED``.
SCALE_SWEEP, FINE_SCALES, N_SCALED = (0.7, 0.84, 1.0, 1.19, 1.4), (0.92, 0.96, 1.04, 1.08), 4


# --------------------------------------------------------------------------- array helpers
def _taper(mask: NDArray[np.bool_], spacing_np: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weights in [0, 1]: ``sin^2`` ramp from the border of ``mask`` (and of the grid) inwards.

    The ramp is ``TAPER_FRACTION`` of the smallest physical extent wide (at least two voxels).
    """
    width = max(TAPER_FRACTION * float(np.min(np.asarray(mask.shape) * spacing_np)), 2.0 * float(np.max(spacing_np)))
    if mask.all():  # separable: distance to the grid border per axis
        out = np.ones(mask.shape)
        for axis, (n, h) in enumerate(zip(mask.shape, spacing_np)):
            dist = (np.minimum(np.arange(n), np.arange(n)[::-1]) + 1.0) * h
            shape = [1] * mask.ndim
            shape[axis] = n
            out = out * (np.sin(0.5 * np.pi * np.clip(dist / width, 0.0, 1.0)) ** 2).reshape(shape)
        return out
    padded = np.pad(mask, 1)
    dist = ndimage.distance_transform_edt(padded, sampling=spacing_np)[(slice(1, -1),) * mask.ndim]
    return np.where(mask, np.sin(0.5 * np.pi * np.clip(dist / width, 0.0, 1.0)) ** 2, 0.0)


def _gaussian_lowpass(fft_shape: tuple[int, ...]) -> NDArray[np.float64]:
    """``exp(-2 pi^2 sigma^2 |k|^2)`` on an rfftn grid (k in cycles per voxel)."""
    freqs = [sfft.fftfreq(n) for n in fft_shape[:-1]] + [sfft.rfftfreq(fft_shape[-1])]
    grids = np.meshgrid(*freqs, indexing="ij", sparse=True)
    k2 = sum(g**2 for g in grids)
    return np.exp(-2.0 * np.pi**2 * PEAK_SIGMA**2 * k2)


def _cross_power_surface(fa: NDArray[np.complex128], b: NDArray[np.float64], fft_shape: tuple[int, ...],
                         lowpass: NDArray[np.float64]) -> NDArray[np.float64]:
    """Phase-correlation surface; its peak sits at ``k`` where ``a[n] ~ b[n + k]`` (circularly).

    The moving transform and the surface are single precision (0.4 ms less per search candidate; the peaks
    move by less than 1e-5 voxels, and every score is the double-precision correlation of the raw values).
    """
    fb = sfft.rfftn(b.astype(np.float32), s=fft_shape)
    return sfft.irfftn(_k.normalized_cross_power(fa, fb, lowpass).astype(np.complex64), s=fft_shape)


def _overlap_ncc(a: NDArray[np.float64], ma: NDArray[np.bool_], b: NDArray[np.float64], mb: NDArray[np.bool_],
                 shift: Sequence[int]) -> float:
    """Normalized correlation of ``a[n]`` and ``b[n + shift]`` over both masks, overlap-penalised.

    Returns ``-inf`` without overlap (or a constant overlap).
    """
    for n, k in zip(a.shape, shift):
        if min(n, n - k) - max(0, -k) < 2:
            return -np.inf
    k = [int(v) for v in shift]
    if a.ndim == 2:
        a, ma, b, mb, k = a[None], ma[None], b[None], mb[None], [0, *k]
    return float(_k.overlap_ncc_3d(np.ascontiguousarray(a), np.ascontiguousarray(ma), np.ascontiguousarray(b),
                                   np.ascontiguousarray(mb), k[0], k[1], k[2], MIN_OVERLAP))


class _Correlator:
    """Phase correlation of one fixed array against moving arrays on the same grid.

    ``fixed`` holds raw values (for the correlation score), ``mask`` the voxels
    that count, ``weights`` the taper (zero outside the mask).
    """

    def __init__(self, fixed: NDArray[np.float64], mask: NDArray[np.bool_], weights: NDArray[np.float64]) -> None:
        self.values, self.mask = fixed, mask
        self.fft_shape = tuple(sfft.next_fast_len(int(np.ceil(PAD_FACTOR * n)), real=True) for n in fixed.shape)
        self.lowpass = _gaussian_lowpass(self.fft_shape)
        self.prepared = _zero_mean(fixed, weights, "fixed")
        self.fa = sfft.rfftn(self.prepared, s=self.fft_shape)

    def match(self, moving_prepared: NDArray[np.float64], moving: NDArray[np.float64], moving_mask: NDArray[np.bool_],
              n_peaks: int) -> list[tuple[NDArray[np.float64], float]]:
        """``(shift, score)`` pairs, best score first; ``fixed[n] ~ moving[n + shift]`` (numpy order)."""
        surface = _cross_power_surface(self.fa, moving_prepared, self.fft_shape, self.lowpass)
        out = []
        for peak in find_peaks(surface, n_peaks, 2.0):
            best = (-np.inf, None)
            for alias in _aliases(peak, self.fft_shape, self.values.shape):
                score = _overlap_ncc(self.values, self.mask, moving, moving_mask, alias)
                if score > best[0]:
                    best = (score, alias)
            if best[1] is not None:
                out.append((np.asarray(best[1], dtype=np.float64) + subpixel_offset(surface, peak), best[0]))
        out.sort(key=lambda sc: -sc[1])
        return out


def _aliases(peak: tuple[int, ...], fft_shape: tuple[int, ...], shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shifts ``k`` or ``k - L`` per axis that keep some overlap (``|shift| < n``)."""
    per_axis = [[v for v in (k, k - L) if abs(v) < n] for k, L, n in zip(peak, fft_shape, shape)]
    out: list[tuple[int, ...]] = [()]
    for options in per_axis:
        out = [s + (v,) for s in out for v in options]
    return out


def _zero_mean(values: NDArray[np.float64], weights: NDArray[np.float64], name: str) -> NDArray[np.float64]:
    """``(values - weighted mean) * weights``; raises for an empty or constant weighted image."""
    total = float(weights.sum())
    if total <= 0:
        raise InvalidInputError(f"phase correlation: the {name} mask (or field of view) is empty.")
    mean = float((values * weights).sum()) / total
    out = (values - mean) * weights
    if not np.any(np.abs(out) > 1e-12 * (abs(mean) + 1e-300)):
        raise ConstantImageError(
            f"phase correlation: the {name} image is constant inside its mask; nothing to correlate."
        )
    return out


# --------------------------------------------------------------------------- public: images on one grid
def _mask_array(image: Image, mask: Image | None, where: str) -> NDArray[np.bool_]:
    """Voxels of ``image`` inside ``mask`` (all of them without a mask)."""
    try:
        inside = _mask_inside(image, mask)
    except EmptyMaskError:
        raise EmptyMaskError(
            f"{where}: a mask covers no voxel of its image; check that mask and image share the same "
            "physical space."
        ) from None
    return np.ones(image.shape, dtype=bool) if inside is None else inside


def _same_grid_arrays(fixed: Image, moving: Image, fixed_mask: Image | None, moving_mask: Image | None,
                      where: str) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Float arrays and binary masks of two images that must share a grid."""
    for name, im in (("fixed", fixed), ("moving", moving)):
        if not isinstance(im, Image):
            raise InvalidInputError(f"{where}: '{name}' must be a regframe Image; got {type(im).__name__}.")
        if im.has_nonfinite():
            raise NonFiniteError(f"{where}: the {name} image holds NaN or inf values; replace them first.")
    if not fixed.same_geometry(moving):
        raise InvalidInputError(
            f"{where}: fixed and moving must share one grid (size, spacing, origin, direction); got sizes "
            f"{fixed.size} and {moving.size}. Resample the moving image onto the fixed grid first, e.g. "
            "regframe.resample(moving, start_transform, reference=fixed)."
        )
    return (np.asarray(fixed.array, dtype=np.float64), np.asarray(moving.array, dtype=np.float64),
            _mask_array(fixed, fixed_mask, where), _mask_array(moving, moving_mask, where))


def phase_correlation(
    fixed: Image,
    moving: Image,
    *,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    n_peaks: int = 3,
) -> list[tuple[NDArray[np.float64], float]]:
    """Translations that align two images on the same grid, best first.

    Parameters
    ----------
    fixed, moving : Image
        Two images on one grid (same size, spacing, origin, direction), e.g.
        the moving image resampled onto the fixed grid through a start
        transform.  2-D or 3-D.
    fixed_mask, moving_mask : Image, optional
        Binary masks (any grid; read by nearest neighbour); only voxels inside
        take part.
    n_peaks : int
        Number of correlation peaks examined and returned (at most).

    Returns
    -------
    list of (ndarray, float)
        ``(t, score)``: physical translation ``t`` (x, y[, z] order) with
        ``fixed(x) ~ moving(x + t)`` - a ``TranslationTransform(t)`` maps fixed
        points to moving points - and its score, the normalized correlation of
        the two images over their overlap at the nearest whole-voxel shift
        (scaled down for overlaps below ``MIN_OVERLAP``).  Sorted by score.
    """
    n_peaks = check_positive_int(n_peaks, where="phase_correlation()", name="n_peaks")
    f, m, fm, mm = _same_grid_arrays(fixed, moving, fixed_mask, moving_mask, "phase_correlation()")
    spacing_np = fixed.spacing[::-1]
    corr = _Correlator(f, fm, _taper(fm, spacing_np))
    prepared = _zero_mean(m, _taper(mm, spacing_np), "moving")
    to_physical = fixed.index_to_physical_matrix
    return [(to_physical @ shift[::-1], score) for shift, score in corr.match(prepared, m, mm, n_peaks)]


def _log_polar_magnitude(prepared: NDArray[np.float64], index_to_physical: NDArray[np.float64]) -> tuple[
        NDArray[np.float64], float]:
    """High-pass filtered FFT magnitude on a log-polar grid of physical frequencies.

    Returns ``(values (FM_ANGLES, FM_RADII), log-radius step)``; angles span
    ``[0, pi)`` (the magnitude of a real image's spectrum is point-symmetric).
    """
    fft_shape = tuple(sfft.next_fast_len(n) for n in prepared.shape)
    mag = np.abs(sfft.fftshift(sfft.fftn(prepared, s=fft_shape)))
    freqs = np.meshgrid(*[sfft.fftshift(sfft.fftfreq(n)) for n in fft_shape], indexing="ij", sparse=True)
    x = np.cos(np.pi * freqs[0]) * np.cos(np.pi * freqs[1])
    mag *= (1.0 - x) * (2.0 - x)  # Reddy & Chatterji's high-pass: suppresses the low-frequency cross
    # physical frequency nu (world x, y) -> index frequency (ITK order) kappa = (D S)^T nu
    to_index = index_to_physical.T
    spacing = np.linalg.norm(index_to_physical, axis=0)
    rho_max = 0.45 / float(spacing.max())
    rho_min = 2.0 / float(np.min(np.asarray(fft_shape[::-1]) * spacing))
    log_r = np.linspace(np.log(rho_min), np.log(rho_max), FM_RADII)
    phi = np.arange(FM_ANGLES) * (np.pi / FM_ANGLES)
    nu = np.exp(log_r)[None, :, None] * np.stack([np.cos(phi), np.sin(phi)], axis=-1)[:, None, :]
    kappa = nu @ to_index.T  # (angles, radii, 2) in ITK order
    coords = [kappa[..., 1 - a] * fft_shape[a] + fft_shape[a] // 2 for a in range(2)]  # numpy axes
    values = ndimage.map_coordinates(mag, coords, order=1, mode="constant")
    return np.log1p(values / (values.mean() + 1e-300)), float(log_r[1] - log_r[0])


def fourier_mellin(
    fixed: Image,
    moving: Image,
    *,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    n_candidates: int = 4,
    scale: bool = True,
) -> list[tuple[float, float, float]]:
    """Rotation (and isotropic scale) between two 2-D images on one grid, by Fourier-Mellin.

    The tapered images' FFT magnitudes (translation invariant) are high-pass
    filtered and resampled on a log-polar grid of physical frequencies, where a
    rotation and a scale become shifts, found by phase correlation.

    Parameters
    ----------
    fixed, moving : Image
        2-D images on the same grid (see :func:`phase_correlation`).
    fixed_mask, moving_mask : Image, optional
        Binary masks.
    n_candidates : int
        Number of candidates returned (at most).  Each correlation peak gives
        two: the angle and its 180-degree twin, which the magnitude spectrum
        cannot tell apart (same score; a spatial correlation must decide).
    scale : bool
        Search the scale too (else scale 1 within one log-radius sample).

    Returns
    -------
    list of (float, float, float)
        ``(angle, scale, score)``, best first: a ``Similarity2DTransform`` with
        this scale and angle (radians, in ``(-pi, pi]``) maps fixed points to
        moving points up to a translation; ``score`` is the phase-correlation
        peak height of the log-polar spectra.
    """
    where = "fourier_mellin()"
    n_candidates = check_positive_int(n_candidates, where=where, name="n_candidates")
    if fixed.ndim != 2 or moving.ndim != 2:
        raise InvalidInputError(
            f"{where}: Fourier-Mellin works on 2-D images; got {fixed.ndim}-D and {moving.ndim}-D. "
            "For 3-D use global_candidates(), which searches a rotation grid."
        )
    f, m, fm, mm = _same_grid_arrays(fixed, moving, fixed_mask, moving_mask, where)
    spacing_np = fixed.spacing[::-1]
    fp = _zero_mean(f, _taper(fm, spacing_np), "fixed")
    mp = _zero_mean(m, _taper(mm, spacing_np), "moving")
    return _fourier_mellin_arrays(fp, mp, fixed.index_to_physical_matrix, n_candidates, scale)


def _fourier_mellin_arrays(fp: NDArray[np.float64], mp: NDArray[np.float64], index_to_physical: NDArray[np.float64],
                           n_candidates: int, scale: bool) -> list[tuple[float, float, float]]:
    lf, d_log_r = _log_polar_magnitude(fp, index_to_physical)
    lm, _ = _log_polar_magnitude(mp, index_to_physical)
    radial = np.sin(np.pi * (np.arange(FM_RADII) + 0.5) / FM_RADII) ** 2  # taper along log-radius
    lf, lm = (lf - lf.mean()) * radial, (lm - lm.mean()) * radial
    fft_shape = (FM_ANGLES, sfft.next_fast_len(2 * FM_RADII, real=True))  # angles periodic, radii padded
    lowpass = _gaussian_lowpass(fft_shape)
    surface = _cross_power_surface(sfft.rfftn(lf, s=fft_shape), lm, fft_shape, lowpass)
    # lf(phi, r) = lm(phi + angle, r - log s): peak at (angle / d_phi, -log s / d_log_r)
    k_r = np.arange(fft_shape[1])
    k_r = np.where(k_r < fft_shape[1] // 2, k_r, k_r - fft_shape[1])
    limit = np.log(SCALE_RANGE[1]) / d_log_r if scale else 1.0
    lower = -np.log(SCALE_RANGE[0]) / d_log_r if scale else 1.0
    allowed = (k_r <= lower) & (k_r >= -limit)
    surface[:, ~allowed] = -np.inf
    out: list[tuple[float, float, float]] = []
    n_peaks = (n_candidates + 1) // 2
    for peak in find_peaks(surface, n_peaks, 4.0):
        off = subpixel_offset(np.where(np.isfinite(surface), surface, 0.0), peak)
        angle = (peak[0] + off[0]) * np.pi / FM_ANGLES
        kr = peak[1] if peak[1] < fft_shape[1] // 2 else peak[1] - fft_shape[1]
        s = float(np.exp(-(kr + off[1]) * d_log_r)) if scale else 1.0
        for a in (angle, angle + np.pi):
            out.append((float(np.angle(np.exp(1j * a))), s, float(surface[peak])))
    return out[:n_candidates]


# --------------------------------------------------------------------------- rotation sets
def _axis_rotation(ndim: int, axis: int, angle: float) -> NDArray[np.float64]:
    if ndim == 2:
        return rotation_2d(angle)
    return versor_matrix(versor_from_axis_angle(np.eye(3)[axis], angle, where="_axis_rotation"))


# --------------------------------------------------------------------------- candidate search
class _Search:
    """Working grids and samplers of one :func:`global_candidates` call.

    A candidate is a matrix ``A`` and translation ``t`` about the start's
    centre ``c``: ``T(x) = A (x - c) + c + t``.
    """

    def __init__(self, fixed: Image, moving: Image, start: MatrixOffsetTransformBase,
                 fixed_mask: Image | None, moving_mask: Image | None, coarser: int = 1) -> None:
        ndim = fixed.ndim
        self.inputs = (fixed, moving, start, fixed_mask, moving_mask)
        self.factors = np.maximum(1, np.rint(np.asarray(fixed.size) / WORK_SIZE[ndim]).astype(int)) * coarser
        fixed_w = _shrunk(fixed, self.factors)
        fmask = _mask_array(fixed_w, fixed_mask, "global_candidates()")
        pad = np.ceil(MARGIN * np.asarray(fixed_w.size)).astype(int)  # ITK order
        grid_shape = tuple(int(v) for v in (np.asarray(fixed_w.size) + 2 * pad)[::-1])
        inner = tuple(slice(int(p), int(p) + n) for p, n in zip(pad[::-1], fixed_w.shape))
        values, mask, weights = np.zeros(grid_shape), np.zeros(grid_shape, dtype=bool), np.zeros(grid_shape)
        values[inner] = fixed_w.array
        mask[inner] = fmask
        weights[inner] = _taper(fmask, fixed_w.spacing[::-1])
        self.grid = Image(values, spacing=fixed_w.spacing,
                          origin=fixed_w.origin - fixed_w.index_to_physical_matrix @ pad,
                          direction=fixed_w.direction, copy=False)
        self.points = self.grid.voxel_points()
        self.spacing_np = fixed_w.spacing[::-1]
        self.corr = _Correlator(values, mask, weights)
        # moving: smoothed and shrunk to about the working spacing; its taper travels with it
        ratio = np.floor(float(np.min(fixed_w.spacing)) / moving.spacing).astype(int)
        moving_w = _shrunk(moving, np.maximum(1, ratio))
        mmask = _mask_array(moving_w, moving_mask, "global_candidates()")
        weights = _taper(mmask, moving_w.spacing[::-1])
        m = np.asarray(moving_w.array, dtype=np.float64)
        self.interp_mw = LinearInterpolator().set_image(moving_w.with_array(m * weights, copy=False))
        self.interp_w = LinearInterpolator().set_image(moving_w.with_array(weights, copy=False))
        self.moving_p2i, self.moving_origin = moving_w.physical_to_index_matrix, moving_w.origin
        self.moving_size = np.asarray(moving_w.size, dtype=np.int64)
        self.moving_arrays = (np.ascontiguousarray(m * weights), np.ascontiguousarray(weights))
        self.start = start
        self.center = start.center
        self.voxel = float(np.min(fixed_w.spacing))

    def coarser(self, factor: int) -> _Search | None:
        """The same search on a working grid ``factor`` times coarser (``None`` when it would have fewer than
        ``PRESCREEN_MIN`` voxels along an axis)."""
        if np.any(np.asarray(self.inputs[0].size) // (self.factors * factor) < PRESCREEN_MIN):
            return None
        return _Search(*self.inputs, coarser=factor)

    def _sample(self, matrix: NDArray[np.float64], translation: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
        """Moving image times its taper, and the taper, on the working grid through ``(matrix, translation)``."""
        c = self.center
        offset = c + translation - matrix @ c
        if self.grid.ndim == 2:  # grid index -> moving continuous index, one affine map; both images at once
            gmat = self.moving_p2i @ matrix @ self.grid.index_to_physical_matrix
            goff = self.moving_p2i @ (matrix @ self.grid.origin + offset - self.moving_origin)
            return _k.sample_pair_2d(gmat, goff, *self.grid.shape, self.moving_arrays[0], self.moving_arrays[1],
                                     self.moving_size)
        mapped = self.points @ matrix.T + offset
        mw = self.interp_mw.evaluate(mapped)[0].reshape(self.grid.shape)
        return mw, self.interp_w.evaluate(mapped)[0].reshape(self.grid.shape)

    def evaluate(self, matrix: NDArray[np.float64], translation: NDArray[np.float64], phase: bool,
                 n_peaks: int = 1) -> list[tuple[NDArray[np.float64], NDArray[np.float64], float]]:
        """``(matrix, translation, score)`` for a candidate matrix, translations from phase correlation."""
        mw, w = self._sample(matrix, translation)
        total, valid, raw, prepared = _k.split_tapered(mw, w, 0.05)  # one pass for the four
        if total <= 1e-9 * w.size:
            return []
        if not phase:
            return [(matrix, translation, _overlap_ncc(self.corr.values, self.corr.mask, raw, valid, (0,) * w.ndim))]
        if not np.any(prepared):
            return []
        out = []
        for shift, score in self.corr.match(prepared, raw, valid, n_peaks):
            t_phys = self.grid.index_to_physical_matrix @ shift[::-1]
            out.append((matrix, translation + matrix @ t_phys, score))
        return out

    def moving_on_grid(self, matrix: NDArray[np.float64], translation: NDArray[np.float64]) -> NDArray[np.float64]:
        """Tapered, zero-mean moving image on the working grid (for Fourier-Mellin)."""
        mw, w = self._sample(matrix, translation)
        return mw - (float(mw.sum()) / max(float(w.sum()), 1e-300)) * w

    # ------------------------------------------------------------ for the block search (_block_search.py)
    def tapered_arrays(self, matrix: NDArray[np.float64], translation: NDArray[np.float64]) -> tuple[
            NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]] | None:
        """Tapered zero-mean moving image, its raw values and valid voxels on the working grid (``None`` outside)."""
        mw, w = self._sample(matrix, translation)
        total = float(w.sum())
        if total <= 1e-9 * w.size:
            return None
        valid = w > 0.05
        return mw - (float(mw.sum()) / total) * w, np.where(valid, mw / np.maximum(w, 1e-12), 0.0), valid

    def block_spectrum(self, block: NDArray[np.bool_]) -> NDArray[np.complex128] | None:
        """Conjugate whitened spectrum, times the peak-shaping low-pass, of the fixed image tapered to ``block``
        (``None`` for an empty or constant block)."""
        try:
            prepared = _zero_mean(self.corr.values, _taper(block, self.spacing_np), "fixed")
        except (ConstantImageError, InvalidInputError):
            return None
        return np.conj(whitened(sfft.rfftn(prepared, s=self.corr.fft_shape))) * self.corr.lowpass

    def peak_shift(self, surface: NDArray[np.float64], raw: NDArray[np.float64], valid: NDArray[np.bool_],
                   mask: NDArray[np.bool_]) -> tuple[NDArray[np.float64], float] | None:
        """Sub-voxel shift of the highest peak of a correlation surface at its best alias, scored by the
        normalized correlation over ``mask`` (numpy order; ``None`` without overlap)."""
        for peak in find_peaks(surface, 1, 2.0):
            score, shift = max(((_overlap_ncc(self.corr.values, mask, raw, valid, a), a)
                                for a in _aliases(peak, self.corr.fft_shape, raw.shape)), default=(-np.inf, None))
            if shift is not None and np.isfinite(score):
                return np.asarray(shift, dtype=np.float64) + subpixel_offset(surface, peak), score
        return None


def _shrunk(image: Image, factors: NDArray[np.int64]) -> Image:
    """Smoothed (sigma = (f - 1) / 2 voxels) and shrunk image; unchanged for factors of 1."""
    f = int(np.max(factors))
    if f <= 1:
        return image
    return level_image(image, Level(tuple(int(v) for v in factors), 0.5 * (f - 1), sigma_in_physical_units=False))


def _with_matrix(start: MatrixOffsetTransformBase, matrix: NDArray[np.float64],
                 translation: NDArray[np.float64]) -> MatrixOffsetTransformBase:
    t = start.copy()
    if not np.allclose(matrix, start.matrix, rtol=0, atol=1e-12):
        t.set_matrix(matrix)  # type: ignore[attr-defined]
    set_translation(t, translation)
    return t


def _local_rotations(search: _Search, ndim: int, seeds: list, phase: bool, steps: Sequence[float],
                     max_moves: int = 2) -> list:
    """Hill-climb each seed ``(matrix, translation, score)`` by rotations of ``steps`` about each axis.

    At each step size, up to ``max_moves`` moves to the best neighbour that improves the score.
    Returns every evaluated candidate.
    """
    base = search.start.matrix
    out = []
    for seed in seeds:
        best = seed
        for step in steps:
            for _ in range(max_moves):
                rel = np.linalg.solve(base, best[0])  # rotation (scale) relative to the start's matrix
                trials = []
                for axis in range(1 if ndim == 2 else 3):
                    for sign in (1.0, -1.0):
                        trials += search.evaluate(base @ rel @ _axis_rotation(ndim, axis, sign * step),
                                                  search.start.translation, phase)
                out += trials
                cand = max(trials, key=lambda c: c[2], default=None)
                if cand is None or cand[2] <= best[2]:
                    break
                best = cand
    return out


def global_candidates(
    fixed: Image,
    moving: Image,
    kind: str,
    *,
    start: MatrixOffsetTransformBase,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    max_candidates: int = 8,
    search: str = "auto",
    anisotropic: bool | None = None,
) -> list[MatrixOffsetTransformBase]:
    """Candidate start transforms of a registration kind, best (by a cheap score) first.

    2-D works on a working grid of about ``WORK_SIZE`` voxels per axis (the
    fixed image smoothed and shrunk when larger), extended by ``MARGIN`` on
    every side so that moving content beyond the fixed field of view still
    correlates; the moving image is resampled onto it through each candidate
    rotation.  Every candidate is scored by the normalized correlation over the
    overlap of the masks (after its translation); near-duplicates and the start
    itself are dropped.  The 3-D rotation search works on a grid of about
    ``WORK_VOXELS`` voxels along the largest extent (see
    :mod:`regframe.registration.rotation_search_3d`; about 0.5 s for a lung CT).

    Parameters
    ----------
    fixed, moving : Image
        Any grids (2-D or 3-D).  Larger images are smoothed and shrunk to the
        working grid here, so the full-resolution images or any pyramid level
        will do; the images should keep the structure that identifies the
        rotation: Fourier-Mellin needs about 64 voxels per axis (a 256-pixel
        brain slice at shrink factor 8, 32 x 32, is too coarse; at 64 x 64 it
        works).
    kind : {"translation", "rigid", "similarity", "affine"}
        Registration kind of ``start``.
    start : MatrixOffsetTransformBase
        A centred transform of ``kind`` (``TranslationTransform``,
        ``Euler2DTransform`` / ``VersorRigid3DTransform``, ``Similarity2DTransform``
        / ``Similarity3DTransform``, ``AffineTransform``); not modified.
    fixed_mask, moving_mask : Image, optional
        Binary masks in the images' physical spaces.
    max_candidates : int
        Number of candidates returned at most.
    search : {"auto", "translation", "rotation", "grid"}
        ``"translation"``: phase correlation on the start (its 3 best peaks).
        ``"rotation"``: rotation (+ scale for similarity and affine) candidates
        with the start's translation - Fourier-Mellin in 2-D, the rotation grid
        in 3-D.  ``"grid"``: in 2-D rotations every ``SWEEP_STEP`` degrees
        (for similarity and affine each at the scales ``SCALE_SWEEP``), ranked
        on a working grid ``PRESCREEN_SHRINK`` times coarser whose best
        ``PRESCREEN_KEEP`` are scored on the working grid, the best three
        refined by a hill-climb (steps of 3 and 1.5 degrees) and the
        best ``N_SCALED`` by the scales ``FINE_SCALES``, each with its
        phase-correlation translation; in 3-D the rotation search of
        :func:`~regframe.registration.rotation_search_3d.rotation_search_3d`
        (a hill-climb from the start, enough when it correlates by
        ``CONFIDENT_NCC``; else dense rotations within 50 degrees of the start,
        the cube's rotations, a hill-climb; ``SCALE_GRID`` for similarity and
        affine).  ``"auto"``:
        the phase-correlation translations plus, for rotating kinds,
        Fourier-Mellin rotations (+ scales) with their translations in 2-D - and
        the ``"grid"`` search too unless a candidate is convincing (see
        ``CONFIDENT_SCORE``; 0.1-0.4 s more) - and ``"grid"`` in 3-D.
        Translation kinds always get translations only.
    anisotropic : bool, optional
        2-D similarity and affine kinds, ``"auto"`` and ``"grid"`` searches: when
        no candidate correlates by ``CONFIDENT_SCORE[0]``, also look for
        anisotropic scalings by matching blocks (the rotations every 12 degrees
        at the scales ``SCALE_SWEEP``, those nearest the best candidates first, until
        a fit convinces or two chunks of 8 bring no better one;
        :mod:`regframe.registration._block_search`) -
        for an affine registration that starts from a similarity.  Their
        matrices are replaced by the nearest scaled rotation when ``start``
        cannot hold them (their score stays that of the affine fit).  Default:
        ``kind == "affine"``.

    Returns
    -------
    list of MatrixOffsetTransformBase
        Copies of ``start`` (same class and centre), without ``start`` itself.
    """
    where = "global_candidates()"
    check_choice(kind, _KINDS, where=where, name="kind")
    check_choice(search, SEARCH_MODES, where=where, name="search")
    max_candidates = check_positive_int(max_candidates, where=where, name="max_candidates")
    if not isinstance(start, MatrixOffsetTransformBase):
        raise InvalidInputError(f"{where}: 'start' must be a linear transform; got {type(start).__name__}.")
    ndim = fixed.ndim
    if moving.ndim != ndim or start.ndim != ndim:
        raise InvalidInputError(
            f"{where}: fixed, moving and start must have one dimension; got {fixed.ndim}-D, {moving.ndim}-D "
            f"and a {start.ndim}-D transform."
        )
    for name, im in (("fixed", fixed), ("moving", moving)):
        if im.has_nonfinite():
            raise NonFiniteError(f"{where}: the {name} image holds NaN or inf values; replace them first.")
    rotating = kind != "translation" and hasattr(start, "set_matrix")
    with_scale = kind in ("similarity", "affine")
    a0, t0 = start.matrix, start.translation
    if ndim == 3 and rotating and search in ("auto", "grid"):
        found, voxel = _search_3d(fixed, moving, start, fixed_mask, moving_mask, with_scale)
        return _prune(found, start, voxel, max_candidates)
    s = _Search(fixed, moving, start, fixed_mask, moving_mask)
    found: list[tuple[NDArray, NDArray, float]] = []
    if search in ("auto", "translation") or not rotating:
        found += s.evaluate(a0, t0, True, n_peaks=3)
    if rotating and search != "translation":
        phase = search != "rotation"
        if search == "grid" or ndim == 3:
            found = _grid_candidates(s, ndim, phase, with_scale, found)
        else:
            moving_grid = s.moving_on_grid(a0, t0)
            fm = _fourier_mellin_arrays(s.corr.prepared, moving_grid, s.grid.index_to_physical_matrix, 4, with_scale)
            for angle, sc, _ in fm:
                found += s.evaluate(a0 @ (sc * rotation_2d(angle)), t0, phase)
            best = max((c[2] for c in found), default=-np.inf)
            fm_peak = fm[0][2] if fm else 0.0
            confident = best >= CONFIDENT_SCORE[1] or (fm_peak >= FM_MIN_PEAK and best >= CONFIDENT_SCORE[0])
            if search == "auto" and not confident:
                found = _grid_candidates(s, ndim, phase, with_scale, found)
        if (kind == "affine" if anisotropic is None else anisotropic) and with_scale and search != "rotation" \
                and max((c[2] for c in found), default=-np.inf) < CONFIDENT_SCORE[0]:
            found += anisotropic_candidates(s, found, SCALE_SWEEP, CONFIDENT_SCORE[0],
                                            isinstance(start, AffineTransform))
    return _prune(found, start, s.voxel, max_candidates)


def _search_3d(fixed: Image, moving: Image, start: MatrixOffsetTransformBase, fixed_mask: Image | None,
               moving_mask: Image | None, with_scale: bool) -> tuple[list, float]:
    """:func:`rotation_search_3d` on working images of about ``WORK_VOXELS`` voxels along the largest extent."""
    where = "global_candidates()"
    voxel = float(np.max(np.asarray(fixed.size) * fixed.spacing)) / WORK_VOXELS
    fixed_w = _shrunk(fixed, np.maximum(1, np.rint(voxel / fixed.spacing)).astype(int))
    moving_w = _shrunk(moving, np.maximum(1, np.floor(float(np.min(fixed_w.spacing)) / moving.spacing)).astype(int))
    return rotation_search_3d(fixed_w, _mask_array(fixed_w, fixed_mask, where), moving_w,
                              _mask_array(moving_w, moving_mask, where), start.matrix, start.translation,
                              start.center, SCALE_GRID if with_scale else ())


def _grid_candidates(s: _Search, ndim: int, phase: bool, with_scale: bool, seeds: list) -> list:
    """Rotation (x scale) grid, hill-climb of the best 3, finer scales on the best ``N_SCALED``; each with its
    translation.  The 2-D sweep is ranked on the coarser grid first (a quarter of the FFT work per rotation;
    on the two-modality brain pair 0.24 -> 0.14 s, and the 180 cases of ``benchmarks/bench_defaults.py --only 2d``
    keep their worst error of 0.066 px).

    2-D: every ``SWEEP_STEP`` degrees (at the scales ``SCALE_SWEEP`` for similarity and affine), hill-climb
    steps of a half and a quarter of it, ``FINE_SCALES``; 3-D (``search="rotation"`` only):
    :func:`rotation_grid_3d`, steps of 20, 10 and 5 degrees, ``SCALE_GRID``.
    """
    a0, t0 = s.start.matrix, s.start.translation
    if ndim == 2:
        rotations = [rotation_2d(a) for a in np.deg2rad(np.arange(SWEEP_STEP, 360.0, SWEEP_STEP))]
        steps = np.deg2rad([0.5 * SWEEP_STEP, 0.25 * SWEEP_STEP])
    else:
        rotations, steps = list(rotation_grid_3d()), np.deg2rad([20.0, 10.0, 5.0])
    scored = list(seeds)
    sweep, fine = (SCALE_SWEEP, FINE_SCALES) if with_scale and ndim == 2 else ((1.0,), SCALE_GRID)
    matrices = [sc * (a0 @ r) for r, sc in itertools.product(rotations, sweep)]
    coarse = s.coarser(PRESCREEN_SHRINK) if ndim == 2 else None
    if coarse is not None:  # rank the sweep on the coarser grid; only its best go on, scored on the working grid
        pre = [(k, c[2]) for k, m in enumerate(matrices) for c in coarse.evaluate(m, t0, phase)]
        best = sorted(pre, key=lambda kc: -kc[1])[:max(1, int(PRESCREEN_KEEP * len(matrices)))]
        matrices = [matrices[k] for k in sorted({k for k, _ in best})]
    for matrix in matrices:
        scored += s.evaluate(matrix, t0, phase)
    out = scored + _local_rotations(s, ndim, distinct(scored, 3), phase, steps)
    if with_scale:
        for matrix, translation, _ in distinct(out, N_SCALED):
            for sc in fine:
                out += s.evaluate(sc * matrix, translation, phase)
    return out


def _prune(found: list, start: MatrixOffsetTransformBase, voxel: float, max_candidates: int) -> list:
    """Best-first, without near-duplicates (within about 5 degrees or 5 % and one working voxel) or the start."""
    kept: list[tuple[NDArray, NDArray, float]] = [(start.matrix, start.translation, np.inf)]
    for matrix, translation, score in sorted(found, key=lambda c: -c[2]):
        if not np.isfinite(score):
            continue
        if any(np.max(np.abs(matrix - m)) < 0.08 and np.linalg.norm(translation - t) < voxel for m, t, _ in kept):
            continue
        kept.append((matrix, translation, score))
        if len(kept) > max_candidates:
            break
    return [_with_matrix(start, m, t) for m, t, _ in kept[1:]]
