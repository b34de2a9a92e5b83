"""Anisotropic candidates of the 2-D global search: blocks of the fixed image matched one by one.

A fine texture stretched by 10-20 % correlates as a whole at no rotation and
scale, but each of ``BLOCKS`` x ``BLOCKS`` overlapping blocks of half the fixed
extent still does.  Every rotation ``BLOCK_STEP`` degrees apart at each of the
caller's scales is ranked by the median correlation of its blocks, each at its
own phase-correlation shift; the best ``N_BLOCK_FITS`` distinct ones give affine
least-squares fits of their block shifts (blocks more than ``BLOCK_TOLERANCE``
working voxels off dropped; fits stretching by more than ``MAX_ANISOTROPY``
rejected).  The rotations and scales nearest the best similarity candidates go
first, in chunks of ``BLOCK_CHUNK``; the search ends once a fit correlates
convincingly, or once ``BLOCK_PATIENCE`` chunks in a row fit nothing that
correlates better than every candidate so far: the right cell correlates poorly
as a whole yet better than most, so it ranks early (the 2-D sweep of
``benchmarks/bench_defaults.py`` keeps every stretched pair within 0.07 px with
chunks of 8 as with 16), while on a pair no affine map of blocks explains (two
modalities, whose normalized correlation is low at any pose) matching all 150
cells cost about 0.6 s for nothing, and two chunks of 8 cost 0.05 s.  Every
block's correlation surface of a cell comes from one batched single-precision
inverse FFT.  Used by
:func:`~regframe.registration.global_init.global_candidates` (``anisotropic``)
through its working grid, whose ``block_spectrum``, ``tapered_arrays``,
``peak_shift`` and ``evaluate`` it calls.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray
from scipy import fft as sfft

from ..transforms.euler import rotation_2d
from .rotation_search_3d import distinct

__all__ = ["anisotropic_candidates", "BLOCKS", "BLOCK_STEP", "N_BLOCK_FITS", "BLOCK_TOLERANCE", "MAX_ANISOTROPY",
           "BLOCK_CHUNK", "BLOCK_PATIENCE"]

BLOCKS, BLOCK_STEP, N_BLOCK_FITS, BLOCK_TOLERANCE, MAX_ANISOTROPY, BLOCK_CHUNK = 3, 12.0, 3, 2.0, 2.0, 8
#: Chunks in a row without a better fit that end the search.
BLOCK_PATIENCE = 2


def whitened(spectrum: NDArray[np.complex128]) -> NDArray[np.complex128]:
    """``spectrum / |spectrum|`` (guarded against zeros)."""
    mag = np.abs(spectrum)
    return spectrum / np.maximum(mag, 1e-12 * float(mag.max()) + 1e-300)


class _Blocks:
    """The blocks of a search's fixed working image, with their whitened spectra (one moving FFT serves all)."""

    def __init__(self, search: Any) -> None:
        self.search = search
        mask = search.corr.mask
        index = np.nonzero(mask)
        lo, hi = np.array([i.min() for i in index]), np.array([i.max() + 1 for i in index])
        half = 0.5 * (hi - lo)
        self.blocks: list[tuple[NDArray[np.bool_], NDArray[np.float64]]] = []
        spectra = []
        axes = [np.linspace(a + 0.5 * h, b - 0.5 * h, BLOCKS) for a, b, h in zip(lo, hi, half)]
        for centre in itertools.product(*axes):
            box = tuple(slice(int(round(c - 0.5 * h)), int(round(c + 0.5 * h))) for c, h in zip(centre, half))
            block = np.zeros_like(mask)
            block[box] = mask[box]
            spectrum = search.block_spectrum(block)
            if spectrum is not None:  # an empty or featureless block tells nothing
                self.blocks.append((block, np.asarray(centre)))
                spectra.append(spectrum.astype(np.complex64))
        #: conjugate whitened block spectra, one per block, stacked for one batched inverse FFT
        self.spectra = np.stack(spectra) if spectra else np.zeros((0, 1), dtype=np.complex64)

    def match(self, matrix: NDArray[np.float64], translation: NDArray[np.float64]) -> list[tuple[
            NDArray[np.float64], NDArray[np.float64], float]]:
        """``(centre, shift, score)`` per block (numpy indices): ``fixed[n] ~ moving[n + shift]`` near the centre."""
        arrays = self.search.tapered_arrays(matrix, translation)
        if arrays is None or not np.any(arrays[0]):
            return []
        prepared, raw, valid = arrays
        fft_shape = self.search.corr.fft_shape
        moving_spectrum = whitened(sfft.rfftn(prepared.astype(np.float32), s=fft_shape))
        # every block's surface in one single-precision inverse FFT (peaks move by less than 1e-5 voxels; the
        # scores are double-precision correlations of the raw values)
        surfaces = sfft.irfftn(self.spectra * moving_spectrum, s=fft_shape, axes=tuple(range(1, len(fft_shape) + 1)),
                               workers=numba.get_num_threads())  # blocks spread over threads, each one alike
        out = []
        for surface, (block, centre) in zip(surfaces, self.blocks):
            found = self.search.peak_shift(surface, raw, valid, block)
            if found is not None:
                out.append((centre, *found))
        return out

    def fit(self, matrix: NDArray[np.float64], translation: NDArray[np.float64],
            rows: list) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
        """The affine candidate whose map agrees with the block shifts (weighted least squares), or ``None``.

        The blocks correlating at least as well as their median start; those more than ``BLOCK_TOLERANCE``
        working voxels off the fit are dropped and the fit repeated (twice at most).
        """
        grid, c = self.search.grid, self.search.center
        ndim = grid.ndim
        centres = np.array([r[0] for r in rows])
        shifts = np.array([r[1] for r in rows])
        scores = np.array([r[2] for r in rows])
        to_physical = grid.index_to_physical_matrix
        p = (centres[:, ::-1] @ to_physical.T) + grid.origin - c
        q = p + shifts[:, ::-1] @ to_physical.T
        design = np.hstack([p, np.ones((len(p), 1))])
        keep = (scores >= np.median(scores)) & (scores > 0)
        solution = None
        for _ in range(3):
            if keep.sum() < ndim + 2:
                return None
            w = np.sqrt(scores[keep])[:, None]
            solution = np.linalg.lstsq(design[keep] * w, q[keep] * w, rcond=None)[0]
            residual = np.linalg.norm(design @ solution - q, axis=1) / self.search.voxel
            again = (residual < BLOCK_TOLERANCE) & (scores > 0)
            if np.array_equal(again, keep):
                break
            keep = again
        b, d = solution[:ndim].T, solution[ndim]
        singular = np.linalg.svd(b, compute_uv=False)
        if np.linalg.det(b) <= 0 or singular[-1] <= 0 or singular[0] / singular[-1] > MAX_ANISOTROPY:
            return None
        return matrix @ b, translation + matrix @ d


def nearest_similarity(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """The scaled rotation nearest ``matrix``: its polar rotation times ``sqrt(det)`` (2-D)."""
    u, _, vt = np.linalg.svd(matrix)
    return float(np.sqrt(abs(np.linalg.det(matrix)))) * (u @ vt)


def cells_by_score(start_matrix: NDArray[np.float64], found: list,
                   scales: Sequence[float]) -> list[tuple[float, float]]:
    """``(angle, scale)`` cells (``BLOCK_STEP`` x ``scales``), those nearest the best scored candidates of ``found``
    first (the right cell correlates poorly as a whole, yet better than most)."""
    n_angles = int(round(360.0 / BLOCK_STEP))
    best = np.full((n_angles, len(scales)), -np.inf)
    log_scales = np.log(scales)
    for matrix, _, score in found:
        rel = np.linalg.solve(start_matrix, matrix)
        angle = np.degrees(np.arctan2(rel[1, 0] - rel[0, 1], rel[0, 0] + rel[1, 1]))
        k = int(round(angle / BLOCK_STEP)) % n_angles
        j = int(np.argmin(np.abs(log_scales - 0.5 * np.log(abs(np.linalg.det(rel)) + 1e-300))))
        best[k, j] = max(best[k, j], score)
    order = np.argsort(-best.ravel(), kind="stable")
    return [(k * BLOCK_STEP, scales[j]) for k, j in zip(*np.unravel_index(order, best.shape))]


def anisotropic_candidates(search: Any, found: list, scales: Sequence[float], confident: float,
                           keep_matrix: bool) -> list[tuple[NDArray[np.float64], NDArray[np.float64], float]]:
    """Affine candidates ``(matrix, translation, score)`` of a 2-D search, each with its phase-correlation
    translation and score.

    The cells are matched in the order of :func:`cells_by_score` on ``found`` (the search's scored similarity
    candidates); after every ``BLOCK_CHUNK`` of them the best ``N_BLOCK_FITS`` distinct ones not fitted yet are
    fitted, and the search ends once a fit scores ``confident`` or after ``BLOCK_PATIENCE`` chunks in a row
    whose fits score no better than the best candidate so far (of ``found`` or fitted).  ``keep_matrix=False``
    replaces each matrix by its nearest scaled rotation (keeping the score of the affine fit).
    """
    blocks = _Blocks(search)
    a0, t0 = search.start.matrix, search.start.translation
    cells = cells_by_score(a0, found, scales)
    ranked: list[tuple[NDArray, list, float]] = []
    tried: set[int] = set()
    out: list[tuple[NDArray, NDArray, float]] = []
    best, idle = max((c[2] for c in found), default=-np.inf), 0
    for n, (angle, sc) in enumerate(cells, 1):
        matrix = sc * (a0 @ rotation_2d(np.deg2rad(angle)))
        rows = blocks.match(matrix, t0)
        if len(rows) >= 4:
            ranked.append((matrix, rows, float(np.median([r[2] for r in rows]))))
        if n % BLOCK_CHUNK and n < len(cells):
            continue
        chunk: list[tuple[NDArray, NDArray, float]] = []
        for cell in distinct(ranked, N_BLOCK_FITS):
            if id(cell) not in tried:
                tried.add(id(cell))
                fitted = blocks.fit(cell[0], t0, cell[1])
                chunk += search.evaluate(*fitted, True) if fitted is not None else []
        out += chunk
        top = max((c[2] for c in chunk), default=-np.inf)
        if top >= confident:
            break
        best, idle = (top, 0) if top > best else (best, idle + 1)
        if idle >= BLOCK_PATIENCE:
            break
    return [(m if keep_matrix else nearest_similarity(m), t, score) for m, t, score in out]
