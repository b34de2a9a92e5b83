"""Peaks of correlation surfaces: local maxima and their sub-voxel offsets (shared by the FFT searches)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["find_peaks", "subpixel_offset"]


def find_peaks(surface: NDArray[np.float64], n: int, min_separation: float) -> list[tuple[int, ...]]:
    """Up to ``n`` highest local maxima, at least ``min_separation`` voxels apart (circular)."""
    flat = surface.ravel()
    if n == 1:  # the highest finite value is a local maximum: one pass
        index = int(np.argmax(flat))
        if np.isfinite(flat[index]):
            return [tuple(int(v) for v in np.unravel_index(index, surface.shape))]
    m = min(flat.size, 32 * n)
    top = np.argpartition(-np.where(np.isfinite(flat), flat, -np.inf), m - 1)[:m]
    order = top[np.argsort(-flat[top], kind="stable")]
    shape = np.asarray(surface.shape)
    offsets = np.stack(np.meshgrid(*[(-1, 0, 1)] * surface.ndim, indexing="ij"), -1).reshape(-1, surface.ndim)
    chosen: list[NDArray[np.int64]] = []
    for index in order:
        if not np.isfinite(flat[index]):
            break
        p = np.asarray(np.unravel_index(index, surface.shape))
        if np.any(surface[tuple(((p + offsets) % shape).T)] > flat[index]):
            continue  # not a local maximum
        if all(np.linalg.norm(np.minimum(np.abs(p - q), shape - np.abs(p - q))) >= min_separation for q in chosen):
            chosen.append(p)
            if len(chosen) == n:
                break
    return [tuple(int(v) for v in p) for p in chosen]


def subpixel_offset(surface: NDArray[np.float64], peak: tuple[int, ...]) -> NDArray[np.float64]:
    """Offset of the true maximum from ``peak`` per axis: log-parabola (exact for a Gaussian)."""
    out = np.zeros(surface.ndim)
    centre = surface[peak]
    for axis in range(surface.ndim):
        lo, hi = list(peak), list(peak)
        lo[axis] = (peak[axis] - 1) % surface.shape[axis]
        hi[axis] = (peak[axis] + 1) % surface.shape[axis]
        y = np.array([surface[tuple(lo)], centre, surface[tuple(hi)]])
        if np.all(y > 0):
            y = np.log(y)
        denom = y[0] - 2.0 * y[1] + y[2]
        out[axis] = np.clip(0.5 * (y[0] - y[2]) / denom, -0.5, 0.5) if denom < 0 else 0.0
    return out
