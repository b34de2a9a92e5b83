"""Private numba kernels of the FFT candidate searches (:mod:`regframe.registration.global_init`).

The searches evaluate a few hundred small (about 130 x 130) working grids per
call, so these kernels are serial (a parallel launch costs more than the work
on a loaded machine) and fuse the numpy passes they replace into one or two
loops.  Each output element is computed by one iteration and the sums run in a
fixed order, so results never depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._warp_kernels import _linear_at


@njit(cache=True)
def sample_pair_2d(gmat, goff, rows, cols, data_a, data_b, size):
    """Two images of one grid, multilinear (ITK rule), on a ``(rows, cols)`` grid mapped affinely.

    The output voxel ``(r, q)`` (numpy order) reads the images at the
    continuous index ``gmat @ (q, r) + goff`` (ITK order).  The interpolant is
    :class:`~regframe.interpolators.LinearInterpolator`'s: edge-clamped in the
    half-voxel skirt, 0 beyond it.  ``data_a``, ``data_b`` are 2-D arrays of ``size`` (ITK order).
    """
    out_a = np.empty((rows, cols))
    out_b = np.empty((rows, cols))
    nx = size[0]
    ny = size[1]
    for r in range(rows):
        for q in range(cols):
            c0 = gmat[0, 0] * q + gmat[0, 1] * r + goff[0]
            c1 = gmat[1, 0] * q + gmat[1, 1] * r + goff[1]
            if not (c0 >= -0.5 and c0 < nx - 0.5 and c1 >= -0.5 and c1 < ny - 0.5):
                out_a[r, q] = 0.0
                out_b[r, q] = 0.0
                continue
            out_a[r, q] = _linear_at(data_a, c0, c1, nx, ny)
            out_b[r, q] = _linear_at(data_b, c0, c1, nx, ny)
    return out_a, out_b


@njit(cache=True)
def split_tapered(mw, w, min_weight):
    """``(sum w, valid, raw, prepared)`` of a tapered moving image ``mw`` and its taper ``w``.

    ``valid = w > min_weight``; ``raw = mw / w`` there (0 elsewhere); ``prepared
    = mw - (sum mw / sum w) w``, the zero-mean tapered image (when ``sum w > 0``).
    """
    shape = mw.shape
    a = mw.ravel()
    b = w.ravel()
    n = a.size
    total = 0.0
    total_mw = 0.0
    valid = np.empty(n, dtype=np.bool_)
    raw = np.empty(n)
    for i in range(n):
        total += b[i]
        total_mw += a[i]
        valid[i] = b[i] > min_weight
        raw[i] = a[i] / max(b[i], 1e-12) if valid[i] else 0.0
    prepared = np.empty(n)
    mean = total_mw / total if total > 0.0 else 0.0
    for i in range(n):
        prepared[i] = a[i] - mean * b[i]
    return total, valid.reshape(shape), raw.reshape(shape), prepared.reshape(shape)


@njit(cache=True)
def normalized_cross_power(fa, fb, lowpass):
    """``conj(fa) fb / max(|.|, 1e-12 max|.| + 1e-300) * lowpass`` (arrays of one shape)."""
    n = fa.size
    fa_ = fa.ravel()
    fb_ = fb.ravel()
    lp = lowpass.ravel()
    re = np.empty(n)
    im = np.empty(n)
    mag = np.empty(n)
    top = 0.0
    for i in range(n):
        ar, ai = fa_[i].real, -fa_[i].imag
        br, bi = fb_[i].real, fb_[i].imag
        re[i] = ar * br - ai * bi
        im[i] = ar * bi + ai * br
        m = math.sqrt(re[i] * re[i] + im[i] * im[i])
        mag[i] = m
        top = max(top, m)
    floor = 1e-12 * top + 1e-300
    out = np.empty(n, dtype=np.complex128)
    for i in range(n):
        scale = 1.0 / max(mag[i], floor)  # numpy's complex / real: times the reciprocal
        out[i] = complex(re[i] * scale * lp[i], im[i] * scale * lp[i])
    return out.reshape(fa.shape)


@njit(cache=True)
def overlap_ncc_3d(a, ma, b, mb, k0, k1, k2, min_overlap):
    """Overlap-penalised normalized correlation of ``a[n]`` and ``b[n + k]`` over both masks (3-D arrays).

    The shift must keep an overlap along every axis.  Returns ``-inf`` for fewer
    than 8 voxels in both masks or a constant overlap.  Two passes (means, then
    centred sums), in raster order.
    """
    n0, n1, n2 = a.shape
    lo0, hi0 = max(0, -k0), min(n0, n0 - k0)
    lo1, hi1 = max(0, -k1), min(n1, n1 - k1)
    lo2, hi2 = max(0, -k2), min(n2, n2 - k2)
    count = 0
    sx = 0.0
    sy = 0.0
    for i in range(lo0, hi0):
        for j in range(lo1, hi1):
            for k in range(lo2, hi2):
                if ma[i, j, k] and mb[i + k0, j + k1, k + k2]:
                    count += 1
                    sx += a[i, j, k]
                    sy += b[i + k0, j + k1, k + k2]
    if count < 8:
        return -np.inf
    mx = sx / count
    my = sy / count
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for i in range(lo0, hi0):
        for j in range(lo1, hi1):
            for k in range(lo2, hi2):
                if ma[i, j, k] and mb[i + k0, j + k1, k + k2]:
                    x = a[i, j, k] - mx
                    y = b[i + k0, j + k1, k + k2] - my
                    sxx += x * x
                    syy += y * y
                    sxy += x * y
    denom = math.sqrt(sxx * syy)
    if denom <= 0.0:
        return -np.inf
    na = 0
    nb = 0
    for v in ma.ravel():
        na += v
    for v in mb.ravel():
        nb += v
    fraction = count / max(1, min(na, nb))
    return sxy / denom * min(1.0, fraction / min_overlap)
