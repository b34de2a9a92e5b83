"""Private numba kernels of the dense (voxelwise) metrics used by SyN.

Conventions
-----------
* Images are flat float64 arrays in ITK raster order (x fastest) on one grid
  of size ``size`` (int64, ITK order); ``(k, n_voxels)`` stacks hold ``k``
  channels.
* Every kernel is parallel over independent output lines or voxels (each
  output element is written by exactly one iteration, computed serially), or
  over fixed-size chunks with per-chunk partials reduced in chunk order, so
  results are bit-identical for any number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._parallel import parallel_kernel


# ---------------------------------------------------------------------------
# box sums (separable running sums, windows clipped to the grid)
# ---------------------------------------------------------------------------
@parallel_kernel
def box_sum_axis(data, out, n_outer, n_len, n_inner, radius):
    """Windowed sums along one axis of every channel of ``data`` into ``out``.

    ``data`` and ``out`` are ``(k, n_outer * n_len * n_inner)``; the axis has
    length ``n_len`` and stride ``n_inner``.  ``out[.., j] = sum of
    data[.., i]`` for ``|i - j| <= radius`` inside the axis (clipped).  One
    parallel iteration per (channel, outer) slab; each keeps a running row of
    ``n_inner`` sums.
    """
    k = data.shape[0]
    if n_inner == 1:  # contiguous lines: scalar running sums
        for t in prange(k * n_outer):
            c = t // n_outer
            base = (t - c * n_outer) * n_len
            src = data[c]
            dst = out[c]
            acc = 0.0
            for j in range(min(radius + 1, n_len)):
                acc += src[base + j]
            for j in range(n_len):
                dst[base + j] = acc
                if j + radius + 1 < n_len:
                    acc += src[base + j + radius + 1]
                if j - radius >= 0:
                    acc -= src[base + j - radius]
        return
    for t in prange(k * n_outer):
        c = t // n_outer
        o = t - c * n_outer
        base = o * n_len * n_inner
        src = data[c]
        dst = out[c]
        acc = np.zeros(n_inner)
        for j in range(min(radius + 1, n_len)):
            row = base + j * n_inner
            for q in range(n_inner):
                acc[q] += src[row + q]
        for j in range(n_len):
            row = base + j * n_inner
            for q in range(n_inner):
                dst[row + q] = acc[q]
            jin = j + radius + 1
            if jin < n_len:
                rin = base + jin * n_inner
                for q in range(n_inner):
                    acc[q] += src[rin + q]
            jout = j - radius
            if jout >= 0:
                rout = base + jout * n_inner
                for q in range(n_inner):
                    acc[q] -= src[rout + q]


@njit(cache=True)
def _window_count(v, size, radius):
    """Number of grid voxels in the clipped window around flat voxel ``v``."""
    n = 1.0
    rest = v
    for a in range(size.shape[0]):
        i = rest % size[a]
        rest //= size[a]
        lo = max(0, i - radius)
        hi = min(size[a] - 1, i + radius)
        n *= hi - lo + 1
    return n


# ---------------------------------------------------------------------------
# local normalized cross-correlation (ANTs' CC)
# ---------------------------------------------------------------------------
@parallel_kernel
def cc_window_terms(sums, weights, size, radius, eps, cc, coef):
    """Per-window correlation and derivative coefficients.

    ``sums`` rows: box sums of f, m, f*f, m*m, f*m.  For window ``w`` with
    centred sums ``A = Sfm - Sf Sm / n``, ``B = Sff - Sf^2 / n``, ``C = Smm -
    Sm^2 / n``: ``cc[w] = weights[w] * A^2 / (B C)`` (0 when ``B`` or ``C``
    is below ``eps * n``).  ``coef`` rows (all times ``weights[w]``):
    ``alpha = 2A/(BC)``, ``alpha*mean_f``, ``alpha*mean_m``, ``beta_m =
    2A^2/(B C^2)``, ``beta_m*mean_m``, ``beta_f = 2A^2/(B^2 C)``,
    ``beta_f*mean_f``.
    """
    nv = sums.shape[1]
    for v in prange(nv):
        w = weights[v]
        for r in range(7):
            coef[r, v] = 0.0
        cc[v] = 0.0
        if w == 0.0:
            continue
        n = _window_count(v, size, radius)
        sf = sums[0, v]
        sm = sums[1, v]
        a = sums[4, v] - sf * sm / n
        b = sums[2, v] - sf * sf / n
        c = sums[3, v] - sm * sm / n
        if b <= eps * n or c <= eps * n:
            continue
        bc = b * c
        cc[v] = w * a * a / bc
        mf = sf / n
        mm = sm / n
        alpha = w * 2.0 * a / bc
        beta_m = w * 2.0 * a * a / (bc * c)
        beta_f = w * 2.0 * a * a / (bc * b)
        coef[0, v] = alpha
        coef[1, v] = alpha * mf
        coef[2, v] = alpha * mm
        coef[3, v] = beta_m
        coef[4, v] = beta_m * mm
        coef[5, v] = beta_f
        coef[6, v] = beta_f * mf


@parallel_kernel
def cc_derivatives(f, m, boxed, scale, d_f, d_m):
    """``dE/df`` and ``dE/dm`` per voxel from the box sums of the coefficients.

    With ``E = -scale * sum_w cc_w``, ``d_m = -scale*(box(alpha) f - box(alpha
    mean_f) - box(beta_m) m + box(beta_m mean_m))`` and symmetrically for f.
    """
    nv = f.shape[0]
    for v in prange(nv):
        d_m[v] = -scale * (boxed[0, v] * f[v] - boxed[1, v] - boxed[3, v] * m[v] + boxed[4, v])
        d_f[v] = -scale * (boxed[0, v] * m[v] - boxed[2, v] - boxed[5, v] * f[v] + boxed[6, v])


# ---------------------------------------------------------------------------
# Mattes mutual information with cubic B-spline Parzen windows on both axes
# ---------------------------------------------------------------------------
@njit(cache=True)
def _bspline3(t):
    t = abs(t)
    if t < 1.0:
        return (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0
    if t < 2.0:
        s = 2.0 - t
        return s * s * s / 6.0
    return 0.0


@njit(cache=True)
def _bspline3_derivative(t):
    s = 1.0 if t >= 0.0 else -1.0
    t = abs(t)
    if t < 1.0:
        return s * (-2.0 * t + 1.5 * t * t)
    if t < 2.0:
        u = 2.0 - t
        return -s * 0.5 * u * u
    return 0.0


@parallel_kernel
def mattes_histogram(a, b, weights, n_bins, chunk_size):
    """Per-chunk joint Parzen histograms ``(n_chunks, n_bins * n_bins)``.

    ``a`` and ``b`` are continuous bin coordinates of the fixed and moving
    values (in ``[2, n_bins - 3]``); each voxel adds ``weights[v] *
    beta(i - a) * beta(j - b)`` to bins ``(i, j)``.
    """
    nv = a.shape[0]
    nc = (nv + chunk_size - 1) // chunk_size
    part = np.zeros((nc, n_bins * n_bins))
    for c in prange(nc):
        lo = c * chunk_size
        hi = min(lo + chunk_size, nv)
        row = part[c]
        for v in range(lo, hi):
            w = weights[v]
            if w == 0.0:
                continue
            ia = int(np.floor(a[v]))
            ib = int(np.floor(b[v]))
            for i in range(ia - 1, ia + 3):
                wa = _bspline3(i - a[v])
                if wa == 0.0:
                    continue
                for j in range(ib - 1, ib + 3):
                    wb = _bspline3(j - b[v])
                    if wb != 0.0:
                        row[i * n_bins + j] += w * wa * wb
    return part


@parallel_kernel
def mattes_derivatives(a, b, weights, table, n_bins, d_f, d_m):
    """``d_f[v] = w_v * sum_ij table[i,j] * beta'(a - i) beta(b - j)``, same for ``d_m``.

    ``table`` is ``-(1/W) log(p / (p_f p_m))`` so that the sums are the
    derivatives of ``E = -MI`` with respect to the bin coordinates ``a, b``.
    """
    nv = a.shape[0]
    for v in prange(nv):
        w = weights[v]
        d_f[v] = 0.0
        d_m[v] = 0.0
        if w == 0.0:
            continue
        ia = int(np.floor(a[v]))
        ib = int(np.floor(b[v]))
        ga = 0.0
        gb = 0.0
        for i in range(ia - 1, ia + 3):
            wa = _bspline3(i - a[v])
            da = _bspline3_derivative(a[v] - i)
            for j in range(ib - 1, ib + 3):
                wb = _bspline3(j - b[v])
                if wa == 0.0 and da == 0.0:
                    continue
                db = _bspline3_derivative(b[v] - j)
                t = table[i * n_bins + j]
                ga += t * da * wb
                gb += t * wa * db
        d_f[v] = w * ga
        d_m[v] = w * gb
