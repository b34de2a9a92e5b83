"""Private numba kernels of the metric engine.

Conventions shared by every kernel
----------------------------------
Sample positions
    ``points`` ``(n, d)`` float64 physical points, or, with ``dense`` True,
    implicit: sample ``s`` is voxel ``s`` of a grid of ``grid_size`` (ITK raster
    order, x fastest) and its position is its integer index (``points`` is then
    ignored).  The caller folds the grid geometry into the maps below.
Fast path (``mode`` 0 or 1)
    ``kmat`` ``(3, 3)`` and ``kvec`` ``(3,)`` map a position straight to the
    moving image's continuous index, ``ci = kmat @ x + kvec``; ``size3`` is the
    moving size.  2-D problems are padded to 3-D (third axis of size 1, zero
    rows/columns), which reproduces 2-D bilinear interpolation bit for bit.
    Gradients are produced in *index* space; callers convert sums with
    ``p2i.T`` (the conversion is linear, so it is applied once to the sums).
    The hot loops call only helpers that take scalars (and the image array):
    helpers taking several arrays make numba emit reference-count updates per
    call, which cost more than the interpolation itself.
Physical path (``physical`` True: central differences or a moving mask)
    ``a`` ``(d, d)`` and ``o`` ``(d,)`` map positions to physical moving points
    ``y = a @ x + o`` (ITK's order: matrix product, then offset); ``p2i``,
    ``origin``, ``spacing`` are the moving geometry.  Mode 2 is ITK's
    ``CentralDifferenceImageFunction`` on the linear interpolant (world-axis
    probes ``y -/+ spacing[k]/2``, component 0 when a probe is outside the
    buffer) and yields physical gradients.
Moving image
    ``data`` flat float64 in ITK raster order.  Inside test and interpolation
    follow ITK's ``LinearInterpolateImageFunction``: continuous index in
    ``[-0.5, size - 0.5)``, edge-clamped (constant) in the half-voxel skirt.
    The exact gradient (mode 1) is the derivative of that interpolant (zero
    along clamped axes, right-sided on grid lines), the same definition as
    :mod:`regframe.interpolators` uses.
Moving mask
    ``mask`` (flat uint8), ``mask_size``, ``mask_p2i``, ``mask_origin``;
    ``has_mask`` False disables it.  A point is inside when its nearest voxel
    (ITK ``TransformPhysicalPointToIndex``, round half up) is in the mask
    buffer and non-zero.
Gradient sums
    Blocks of 12 values: ``sum w g (x - c)^T`` (3x3, row-major; rows are
    gradient components) followed by ``sum w g`` (3), 3-D padded.

Determinism: every reduction runs ``prange`` over fixed-size chunks of samples;
each chunk accumulates in chunk-local storage and writes only its own row of a
partials array, which the caller reduces serially in chunk order
(:func:`regframe._parallel.reduce_in_order`).  The chunking never depends on
the thread count, so results are bit-identical for any number of threads.  No
fastmath, no random numbers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..transforms._bspline_kernels import _b3_weights, _row_sum

#: Width of one gradient-sum block (3x3 outer-product sum + 3-vector sum).
BLOCK = 12

#: Array indices in the hot helpers are cast to unsigned: numba adds a negative-index
#: fix-up (compare and select) to every signed index, ~10-15 % of a B-spline Mattes pass.
_U = np.uint64

# --------------------------------------------------------------------------- scalar helpers


@njit(cache=True, inline="always")
def _axis(c, n):
    """ITK linear cell along one axis: (index, fraction, has upper neighbour)."""
    b = math.floor(c)
    i = np.int64(0)
    fr = 0.0
    up = False
    if b >= 0.0:
        i = np.int64(b)
        if i + 1 < n:
            fr = c - b
            up = True
    return i, fr, up


@njit(cache=True, inline="always")
def _lin3(data, c0, c1, c2, nx, ny, nz, with_gradient):
    """Trilinear value and index-space gradient at continuous index ``(c0, c1, c2)``.

    Returns ``(inside, value, g0, g1, g2)``.  Nested lerps along x, y, z (ITK's
    order); single exit (keeps numba from emitting reference counting).
    """
    ok = c0 >= -0.5 and c0 < nx - 0.5 and c1 >= -0.5 and c1 < ny - 0.5 and c2 >= -0.5 and c2 < nz - 0.5
    value = 0.0
    g0 = 0.0
    g1 = 0.0
    g2 = 0.0
    if ok and nz == 1:
        # 2-D image (padded to 3-D): the z lerps are exact no-ops, so skip them; the
        # result is bit-identical to the general branch below
        i0, f0, u0 = _axis(c0, nx)
        i1, f1, u1 = _axis(c1, ny)
        base = _U(i0 + i1 * nx)
        s0 = _U(1 if u0 else 0)
        s1 = _U(nx if u1 else 0)
        v000 = data[base]
        v100 = data[base + s0]
        v010 = data[base + s1]
        v110 = data[base + s0 + s1]
        a00 = v000 + (v100 - v000) * f0
        a10 = v010 + (v110 - v010) * f0
        value = a00 + (a10 - a00) * f1
        if with_gradient:
            if u0:
                d00 = v100 - v000
                d10 = v110 - v010
                g0 = d00 + (d10 - d00) * f1
            if u1:
                g1 = a10 - a00
    elif ok:
        i0, f0, u0 = _axis(c0, nx)
        i1, f1, u1 = _axis(c1, ny)
        i2, f2, u2 = _axis(c2, nz)
        sxy = nx * ny
        base = _U(i0 + i1 * nx + i2 * sxy)
        s0 = _U(1 if u0 else 0)
        s1 = _U(nx if u1 else 0)
        s2 = _U(sxy if u2 else 0)
        v000 = data[base]
        v100 = data[base + s0]
        v010 = data[base + s1]
        v110 = data[base + s0 + s1]
        v001 = data[base + s2]
        v101 = data[base + s0 + s2]
        v011 = data[base + s1 + s2]
        v111 = data[base + s0 + s1 + s2]
        a00 = v000 + (v100 - v000) * f0
        a10 = v010 + (v110 - v010) * f0
        a01 = v001 + (v101 - v001) * f0
        a11 = v011 + (v111 - v011) * f0
        b0 = a00 + (a10 - a00) * f1
        b1 = a01 + (a11 - a01) * f1
        value = b0 + (b1 - b0) * f2
        if with_gradient:
            if u0:
                d00 = v100 - v000
                d10 = v110 - v010
                d01 = v101 - v001
                d11 = v111 - v011
                e0 = d00 + (d10 - d00) * f1
                e1 = d01 + (d11 - d01) * f1
                g0 = e0 + (e1 - e0) * f2
            if u1:
                h0 = a10 - a00
                h1 = a11 - a01
                g1 = h0 + (h1 - h0) * f2
            if u2:
                g2 = b1 - b0
    return ok, value, g0, g1, g2


@njit(cache=True, inline="always")
def _b3(u):
    """Cubic B-spline (ITK ``BSplineKernelFunction<3>``)."""
    a = abs(u)
    r = 0.0
    if a < 1.0:
        r = (4.0 - 6.0 * a * a + 3.0 * a * a * a) / 6.0
    elif a < 2.0:
        t = 2.0 - a
        r = t * t * t / 6.0
    return r


@njit(cache=True, inline="always")
def _b3_derivative(u):
    """Derivative of the cubic B-spline (ITK ``BSplineDerivativeKernelFunction<3>``)."""
    r = 0.0
    if u >= 0.0 and u < 1.0:
        r = -2.0 * u + 1.5 * u * u
    elif u > -1.0 and u < 0.0:
        r = -2.0 * u - 1.5 * u * u
    elif u >= 1.0 and u < 2.0:
        t = 2.0 - u
        r = -0.5 * t * t
    elif u > -2.0 and u <= -1.0:
        t = 2.0 + u
        r = 0.5 * t * t
    return r


@njit(cache=True, inline="always")
def _parzen(m, bin_size, n_min, n_bins):
    """Parzen coordinate ``t = m / bs - n_min`` and first tap ``clamp(trunc(t), 2, B-3) - 1``."""
    t = m / bin_size - n_min
    i = np.int64(t)
    if i < 2:
        i = 2
    elif i > n_bins - 3:
        i = n_bins - 3
    return t, i - 1


@njit(cache=True, inline="always")
def _parzen_weights(t, k):
    """``B3(k + j - t)`` for the four taps ``j = 0..3`` (first tap ``k``).

    Closed-form cubic B-spline weights of the fraction ``u = t - (k + 1)``
    when ``0 <= u < 1`` (every sample except rounding cases at the ends of
    the moving range, which use the piecewise kernel).
    """
    u = t - (k + 1)
    if u >= 0.0 and u < 1.0:
        return _b3_weights(u)
    return _b3(k - t), _b3(k + 1 - t), _b3(k + 2 - t), _b3(k + 3 - t)


@njit(cache=True, inline="always")
def _parzen_derivatives(t, k):
    """``B3'(k + j - t)`` for the four taps ``j = 0..3`` (see :func:`_parzen_weights`)."""
    u = t - (k + 1)
    if u >= 0.0 and u < 1.0:
        v = 1.0 - u
        return (0.5 * v * v, 2.0 * u - 1.5 * u * u, -2.0 * v + 1.5 * v * v, -0.5 * u * u)
    return (_b3_derivative(k - t), _b3_derivative(k + 1 - t), _b3_derivative(k + 2 - t),
            _b3_derivative(k + 3 - t))


# --------------------------------------------------------------------------- array helpers
# (used outside the hot loops, or on the physical path only)


@njit(cache=True, inline="always")
def _parzen_add(joint, count, c, fixed_bin, t, k, n_bins):
    """Add one sample to chunk ``c``'s Parzen joint histogram (4 moving taps) and fixed-bin count."""
    fb = np.int64(fixed_bin)
    row = _U(fb * n_bins + k)
    cu = _U(c)
    p0, p1, p2, p3 = _parzen_weights(t, k)
    joint[cu, row] += p0
    joint[cu, row + _U(1)] += p1
    joint[cu, row + _U(2)] += p2
    joint[cu, row + _U(3)] += p3
    count[cu, _U(fb)] += 1.0


@njit(cache=True, inline="always")
def _cache_sample(cache_t, cache_k, cache_g, s, t, k, g0, g1, g2):
    """Keep a sample's Parzen coordinate, first tap and moving gradient for Mattes pass 2."""
    su = _U(s)
    cache_t[su] = t
    cache_k[su] = k
    cache_g[su, _U(0)] = g0
    cache_g[su, _U(1)] = g1
    cache_g[su, _U(2)] = g2


@njit(cache=True, inline="always")
def _mattes_weight(t, k, fixed_bin, n_bins, log_ratio):
    """``sum_j B3'(k + j - t) R[fixed_bin, k + j]``: a sample's Mattes weight (before ``1/(bs N)``)."""
    d0, d1, d2, d3 = _parzen_derivatives(t, k)
    row = _U(np.int64(fixed_bin) * n_bins + k)
    return (d0 * log_ratio[row] + d1 * log_ratio[row + _U(1)] + d2 * log_ratio[row + _U(2)]
            + d3 * log_ratio[row + _U(3)])


@njit(cache=True, inline="always")
def _in_mask(y, mask, mask_size, mask_p2i, mask_origin):
    """Nearest-voxel mask test (round half up); False outside the mask buffer."""
    d = y.shape[0]
    off = 0
    stride = 1
    ok = True
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += mask_p2i[i, j] * (y[j] - mask_origin[j])
        k = math.floor(acc + 0.5)
        if not (k >= 0.0 and k <= mask_size[i] - 1):
            ok = False
        else:
            off += np.int64(k) * stride
        stride *= mask_size[i]
    if ok:
        ok = mask[off] != 0
    return ok


@njit(cache=True)
def _linear_at(y, data, size, p2i, origin, ci):
    """ITK linear value at physical point ``y`` (n-D); returns (inside, value)."""
    d = y.shape[0]
    inside = True
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += p2i[i, j] * (y[j] - origin[j])
        ci[i] = acc
        if not (acc >= -0.5 and acc < size[i] - 0.5):
            inside = False
    if not inside:
        return False, 0.0
    if d == 2:
        ok, v, g0, g1, g2 = _lin3(data, ci[0], ci[1], 0.0, size[0], size[1], 1, False)
        return ok, v
    ok, v, g0, g1, g2 = _lin3(data, ci[0], ci[1], ci[2], size[0], size[1], size[2], False)
    return ok, v


@njit(cache=True)
def _physical_sample(xs, a, o, data, size, p2i, origin, spacing,
                     mask, mask_size, mask_p2i, mask_origin, has_mask, mode, y, yp, ci, g):
    """Physical path: ``y = a @ xs + o``, mask, value and (mode 1/2) physical gradient.

    Returns (valid, value); ``g[:d]`` receives the gradient.
    """
    d = xs.shape[0]
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += a[i, j] * xs[j]
        y[i] = acc + o[i]
    if has_mask and not _in_mask(y, mask, mask_size, mask_p2i, mask_origin):
        return False, 0.0
    ok, value = _linear_at(y, data, size, p2i, origin, ci)
    if not ok:
        return False, 0.0
    for k in range(g.shape[0]):
        g[k] = 0.0
    if mode == 1:
        if d == 2:
            ok, v, g0, g1, g2 = _lin3(data, ci[0], ci[1], 0.0, size[0], size[1], 1, True)
        else:
            ok, v, g0, g1, g2 = _lin3(data, ci[0], ci[1], ci[2], size[0], size[1], size[2], True)
        for j in range(d):
            acc = p2i[0, j] * g0 + p2i[1, j] * g1
            if d == 3:
                acc += p2i[2, j] * g2
            g[j] = acc
    elif mode == 2:
        for k in range(d):
            yp[k] = y[k]
        for k in range(d):
            delta = 0.5 * spacing[k]
            yp[k] = y[k] - delta
            ok_lo, lower = _linear_at(yp, data, size, p2i, origin, ci)
            if ok_lo:
                yp[k] = y[k] + delta
                ok_hi, upper = _linear_at(yp, data, size, p2i, origin, ci)
                if ok_hi:
                    g[k] = (upper - lower) / (2.0 * delta)
            yp[k] = y[k]
    return True, value


@njit(cache=True, inline="always")
def _next_position(points, s, start, dense, x0, x1, x2, gs0, gs1):
    """Position of sample ``s``: the next grid index in raster order (dense sets, where
    ``(x0, x1, x2)`` holds sample ``s - 1``'s or, at ``s == start``, the chunk's start),
    or the stored point."""
    if dense:
        if s > start:
            x0 += 1.0
            if x0 >= gs0:
                x0 = 0.0
                x1 += 1.0
                if x1 >= gs1:
                    x1 = 0.0
                    x2 += 1.0
        return x0, x1, x2
    return points[s, 0], points[s, 1], points[s, 2] if points.shape[1] == 3 else 0.0


@njit(cache=True)
def _start_position(start, grid_size):
    """Integer grid index (x, y, z) of flat voxel ``start``."""
    r = start
    x0 = float(r % grid_size[0])
    r //= grid_size[0]
    x1 = float(r % grid_size[1])
    r //= grid_size[1]
    x2 = float(r)
    return x0, x1, x2


# --------------------------------------------------------------------------- sampling


@njit(parallel=True, cache=True)
def sample_moving(points, kmat, kvec, size3, a, o, data, size, p2i, origin, spacing,
                  mask, mask_size, mask_p2i, mask_origin, has_mask, physical, mode, chunk_size):
    """Moving values and physical gradients at the (already mapped) ``points``.

    ``kmat``/``kvec`` map the points to continuous indices (fast path, modes 0
    and 1 without mask); ``a``/``o`` map them to physical points (physical
    path).

    Returns
    -------
    values : (n,) float64
        0 where invalid.
    gradients : (n, d) float64
        Physical gradients (zero where invalid or ``mode == 0``).
    valid : (n,) bool
        Inside the moving buffer and the moving mask.
    """
    n, d = points.shape
    values = np.zeros(n)
    grads = np.zeros((n, d))
    valid = np.zeros(n, dtype=np.bool_)
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        g = np.zeros(d)
        k00, k01, k02 = kmat[0, 0], kmat[0, 1], kmat[0, 2]
        k10, k11, k12 = kmat[1, 0], kmat[1, 1], kmat[1, 2]
        k20, k21, k22 = kmat[2, 0], kmat[2, 1], kmat[2, 2]
        q0, q1, q2 = kvec[0], kvec[1], kvec[2]
        nx, ny, nz = size3[0], size3[1], size3[2]
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            if physical:
                for k in range(d):
                    xs[k] = points[s, k]
                ok, v = _physical_sample(xs, a, o, data, size, p2i, origin, spacing, mask,
                                         mask_size, mask_p2i, mask_origin, has_mask, mode,
                                         y, yp, ci, g)
                if ok:
                    valid[s] = True
                    values[s] = v
                    for k in range(d):
                        grads[s, k] = g[k]
                continue
            x0 = points[s, 0]
            x1 = points[s, 1]
            x2 = points[s, 2] if d == 3 else 0.0
            c0 = k00 * x0 + k01 * x1 + k02 * x2 + q0
            c1 = k10 * x0 + k11 * x1 + k12 * x2 + q1
            c2 = k20 * x0 + k21 * x1 + k22 * x2 + q2
            ok, v, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, mode == 1)
            if ok:
                valid[s] = True
                values[s] = v
                if mode == 1:
                    for k in range(d):
                        gk = p2i[0, k] * g0 + p2i[1, k] * g1
                        if d == 3:
                            gk += p2i[2, k] * g2
                        grads[s, k] = gk
    return values, grads, valid


@njit(parallel=True, cache=True)
def mask_contains(points, mask, mask_size, mask_p2i, mask_origin, chunk_size):
    """Nearest-voxel mask test for every point, ``(n,)`` bool."""
    n, d = points.shape
    out = np.zeros(n, dtype=np.bool_)
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        y = np.empty(d)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            for k in range(d):
                y[k] = points[s, k]
            out[s] = _in_mask(y, mask, mask_size, mask_p2i, mask_origin)
    return out


# --------------------------------------------------------------------------- fused kernels
#
# Every fused kernel walks its chunk with the same prologue: the sample position
# (x0, x1, x2) (padded to 3-D), then either the fast path (continuous index from
# kmat/kvec, _lin3, index-space gradient) or the physical path (mode 2 or a
# moving mask: _physical_sample, physical gradient).  ``physical`` must be True
# for mode 2 and for a moving mask; the gradient sums are then physical, else
# in index space.


@njit(parallel=True, cache=True)
def mean_squares_linear(points, dense, grid_size, fixed, kmat, kvec, size3, center3,
                        a, o, data, size, p2i, origin, spacing,
                        mask, mask_size, mask_p2i, mask_origin, has_mask, physical, mode, chunk_size):
    """Fused MeanSquares pass for a linear transform (map, interpolate, accumulate).

    Returns
    -------
    (n_chunks, 2 + 12) float64
        Per chunk: ``sum (m - f)^2``, valid count, then (``mode > 0``) the
        gradient-sum block with weights ``2 (m - f)``.
    """
    n = fixed.shape[0]
    d = a.shape[0]
    width = 2 + BLOCK
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, width))
    with_gradient = mode > 0
    for c in prange(nc):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        g = np.zeros(d)
        k00, k01, k02 = kmat[0, 0], kmat[0, 1], kmat[0, 2]
        k10, k11, k12 = kmat[1, 0], kmat[1, 1], kmat[1, 2]
        k20, k21, k22 = kmat[2, 0], kmat[2, 1], kmat[2, 2]
        q0, q1, q2 = kvec[0], kvec[1], kvec[2]
        nx, ny, nz = size3[0], size3[1], size3[2]
        cx, cy, cz = center3[0], center3[1], center3[2]
        gs0, gs1 = float(grid_size[0]), float(grid_size[1])
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        x0, x1, x2 = _start_position(start, grid_size)
        sq = 0.0
        cnt = 0.0
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = 0.0
        v0 = v1 = v2 = 0.0
        for s in range(start, stop):
            x0, x1, x2 = _next_position(points, s, start, dense, x0, x1, x2, gs0, gs1)
            if physical:
                xs[0] = x0
                xs[1] = x1
                if d == 3:
                    xs[2] = x2
                ok, m = _physical_sample(xs, a, o, data, size, p2i, origin, spacing, mask,
                                         mask_size, mask_p2i, mask_origin, has_mask, mode,
                                         y, yp, ci, g)
                g0 = g[0]
                g1 = g[1]
                g2 = g[2] if d == 3 else 0.0
            else:
                c0 = k00 * x0 + k01 * x1 + k02 * x2 + q0
                c1 = k10 * x0 + k11 * x1 + k12 * x2 + q1
                c2 = k20 * x0 + k21 * x1 + k22 * x2 + q2
                ok, m, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, with_gradient)
            if not ok:
                continue
            r = m - fixed[s]
            sq += r * r
            cnt += 1.0
            if with_gradient:
                w = 2.0 * r
                r0 = x0 - cx
                r1 = x1 - cy
                r2 = x2 - cz
                w0 = w * g0
                w1 = w * g1
                w2 = w * g2
                s00 += w0 * r0
                s01 += w0 * r1
                s02 += w0 * r2
                s10 += w1 * r0
                s11 += w1 * r1
                s12 += w1 * r2
                s20 += w2 * r0
                s21 += w2 * r1
                s22 += w2 * r2
                v0 += w0
                v1 += w1
                v2 += w2
        part[c, 0] = sq
        part[c, 1] = cnt
        part[c, 2] = s00
        part[c, 3] = s01
        part[c, 4] = s02
        part[c, 5] = s10
        part[c, 6] = s11
        part[c, 7] = s12
        part[c, 8] = s20
        part[c, 9] = s21
        part[c, 10] = s22
        part[c, 11] = v0
        part[c, 12] = v1
        part[c, 13] = v2
    return part


@njit(cache=True, inline="always")
def _correlation_add(sums, fs, ms):
    """Add a valid sample to ``(count, sum f', sum m', sum f'^2, sum m'^2, sum f'm')``."""
    sums[0] += 1.0
    sums[1] += fs
    sums[2] += ms
    sums[3] += fs * fs
    sums[4] += ms * ms
    sums[5] += fs * ms
    return fs, ms


@njit(parallel=True, cache=True)
def correlation_linear(points, dense, grid_size, fixed, fixed_ref, moving_ref,
                       kmat, kvec, size3, center3, a, o, data, size, p2i, origin, spacing,
                       mask, mask_size, mask_p2i, mask_origin, has_mask, physical, mode, chunk_size):
    """Fused NormalizedCorrelation pass for a linear transform.

    With ``f' = f - fixed_ref`` and ``m' = m - moving_ref`` (shifts that keep
    the one-pass sums well conditioned) each chunk row holds: count,
    ``sum f'``, ``sum m'``, ``sum f'^2``, ``sum m'^2``, ``sum f'm'`` and, if
    ``mode > 0``, three gradient-sum blocks with weights ``1``, ``f'``, ``m'``.
    """
    n = fixed.shape[0]
    d = a.shape[0]
    width = 6 + 3 * BLOCK
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, width))
    with_gradient = mode > 0
    for c in prange(nc):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        g = np.zeros(d)
        acc = np.zeros(width)
        k00, k01, k02 = kmat[0, 0], kmat[0, 1], kmat[0, 2]
        k10, k11, k12 = kmat[1, 0], kmat[1, 1], kmat[1, 2]
        k20, k21, k22 = kmat[2, 0], kmat[2, 1], kmat[2, 2]
        q0, q1, q2 = kvec[0], kvec[1], kvec[2]
        nx, ny, nz = size3[0], size3[1], size3[2]
        cx, cy, cz = center3[0], center3[1], center3[2]
        gs0, gs1 = float(grid_size[0]), float(grid_size[1])
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        x0, x1, x2 = _start_position(start, grid_size)
        for s in range(start, stop):
            x0, x1, x2 = _next_position(points, s, start, dense, x0, x1, x2, gs0, gs1)
            if physical:
                xs[0] = x0
                xs[1] = x1
                if d == 3:
                    xs[2] = x2
                ok, m = _physical_sample(xs, a, o, data, size, p2i, origin, spacing, mask,
                                         mask_size, mask_p2i, mask_origin, has_mask, mode,
                                         y, yp, ci, g)
                g0 = g[0]
                g1 = g[1]
                g2 = g[2] if d == 3 else 0.0
            else:
                c0 = k00 * x0 + k01 * x1 + k02 * x2 + q0
                c1 = k10 * x0 + k11 * x1 + k12 * x2 + q1
                c2 = k20 * x0 + k21 * x1 + k22 * x2 + q2
                ok, m, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, with_gradient)
            if not ok:
                continue
            fs, ms = _correlation_add(acc, fixed[s] - fixed_ref, m - moving_ref)
            if with_gradient:
                r0 = x0 - cx
                r1 = x1 - cy
                r2 = x2 - cz
                for b in range(3):
                    wb = 1.0 if b == 0 else (fs if b == 1 else ms)
                    off = 6 + b * BLOCK
                    w0 = wb * g0
                    w1 = wb * g1
                    w2 = wb * g2
                    acc[off] += w0 * r0
                    acc[off + 1] += w0 * r1
                    acc[off + 2] += w0 * r2
                    acc[off + 3] += w1 * r0
                    acc[off + 4] += w1 * r1
                    acc[off + 5] += w1 * r2
                    acc[off + 6] += w2 * r0
                    acc[off + 7] += w2 * r1
                    acc[off + 8] += w2 * r2
                    acc[off + 9] += w0
                    acc[off + 10] += w1
                    acc[off + 11] += w2
        for k in range(width):
            part[c, k] = acc[k]
    return part


# --------------------------------------------------------------------------- Mattes


@njit(parallel=True, cache=True)
def mattes_histogram(fixed_bins, moving_values, valid, m_min, m_max, bin_size, n_min,
                     n_bins, chunk_size):
    """Parzen joint histogram partials from sampled values.

    Samples with ``valid`` False or a moving value outside ``[m_min, m_max]``
    are skipped (ITK rejects them).  Returns ``joint (n_chunks, B*B)`` (row =
    fixed bin), ``count (n_chunks, B)`` fixed-bin counts and ``n_used
    (n_chunks,)``.
    """
    n = moving_values.shape[0]
    nc = (n + chunk_size - 1) // chunk_size
    joint = np.zeros((nc, n_bins * n_bins))
    count = np.zeros((nc, n_bins))
    used = np.zeros(nc)
    for c in prange(nc):
        k_used = 0.0
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            if not valid[s]:
                continue
            m = moving_values[s]
            if m < m_min or m > m_max:
                continue
            t, k = _parzen(m, bin_size, n_min, n_bins)
            _parzen_add(joint, count, c, fixed_bins[s], t, k, n_bins)
            k_used += 1.0
        used[c] = k_used
    return joint, count, used


@njit(cache=True)
def mattes_statistics(joint_part, count_part, n_bins, eps):
    """Serial finish of a Mattes evaluation from the histogram partials.

    Reduces the per-chunk partials in chunk order (as
    :func:`regframe._parallel.reduce_in_order`), normalises by the total
    weight and returns ``(value = -MI, log_ratio (B*B,), joint (B*B,))`` with
    ``log_ratio = ln(p_ij / pm_j)`` on bins where ``p_ij``, ``pm_j`` and
    ``pf_i`` all exceed ``eps`` (0 elsewhere).  The caller checks that some
    sample was used (the total is positive).
    """
    b = n_bins
    joint = np.zeros(b * b)
    count = np.zeros(b)
    for c in range(joint_part.shape[0]):
        for k in range(b * b):
            joint[k] += joint_part[c, k]
        for k in range(b):
            count[k] += count_part[c, k]
    total = 0.0
    for k in range(b * b):
        total += joint[k]
    pm = np.zeros(b)
    for i in range(b):
        for j in range(b):
            pm[j] += joint[i * b + j] / total
    log_ratio = np.zeros(b * b)
    mi = 0.0
    for i in range(b):
        pf = count[i] / total
        if pf <= eps:
            continue
        log_pf = np.log(pf)
        for j in range(b):
            p = joint[i * b + j] / total
            if p > eps and pm[j] > eps:
                lr = np.log(p / pm[j])
                log_ratio[i * b + j] = lr
                mi += p * (lr - log_pf)
    return -mi, log_ratio, joint


@njit(parallel=True, cache=True)
def mattes_weights(fixed_bins, moving_values, valid, m_min, m_max, bin_size, n_min,
                   n_bins, log_ratio, chunk_size):
    """Per-sample Mattes weights ``w_s = sum_b B3'(k_b - t_s) R[i_f(s), k_b]``.

    ``log_ratio`` is ``R`` flattened ``(B*B,)``: ``ln(p_ij / pm_j)`` on
    populated bins and 0 elsewhere.  Rejected samples get 0.  Point-wise, no
    reduction.
    """
    n = moving_values.shape[0]
    w = np.zeros(n)
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            if not valid[s]:
                continue
            m = moving_values[s]
            if m < m_min or m > m_max:
                continue
            t, k = _parzen(m, bin_size, n_min, n_bins)
            w[s] = _mattes_weight(t, k, fixed_bins[s], n_bins, log_ratio)
    return w


@njit(parallel=True, cache=True)
def mattes_linear_histogram(points, dense, grid_size, fixed_bins, kmat, kvec, size3,
                            a, o, data, size, p2i, origin, spacing,
                            mask, mask_size, mask_p2i, mask_origin, has_mask, physical, mode,
                            m_min, m_max, bin_size, n_min, n_bins, cache_t, cache_k, cache_g,
                            chunk_size):
    """Fused Mattes pass 1 for a linear transform: map, interpolate, Parzen histogram.

    Same outputs as :func:`mattes_histogram`.  When the caches have one row per
    sample (``cache_k.shape[0] == n``; pass empty arrays otherwise) the moving
    gradient (gradient ``mode`` as in :func:`sample_moving`) is evaluated too and
    every sample's Parzen coordinate ``t``, bin ``k`` (``-1`` for an unused
    sample) and gradient are stored, so that pass 2
    (:func:`mattes_linear_gradient`) does not interpolate again.
    """
    n = fixed_bins.shape[0]
    d = a.shape[0]
    caching = cache_k.shape[0] == n
    nc = (n + chunk_size - 1) // chunk_size
    joint = np.zeros((nc, n_bins * n_bins))
    count = np.zeros((nc, n_bins))
    used = np.zeros(nc)
    for c in prange(nc):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        g = np.zeros(d)
        k00, k01, k02 = kmat[0, 0], kmat[0, 1], kmat[0, 2]
        k10, k11, k12 = kmat[1, 0], kmat[1, 1], kmat[1, 2]
        k20, k21, k22 = kmat[2, 0], kmat[2, 1], kmat[2, 2]
        q0, q1, q2 = kvec[0], kvec[1], kvec[2]
        nx, ny, nz = size3[0], size3[1], size3[2]
        gs0, gs1 = float(grid_size[0]), float(grid_size[1])
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        x0, x1, x2 = _start_position(start, grid_size)
        k_used = 0.0
        for s in range(start, stop):
            x0, x1, x2 = _next_position(points, s, start, dense, x0, x1, x2, gs0, gs1)
            if physical:
                xs[0] = x0
                xs[1] = x1
                if d == 3:
                    xs[2] = x2
                ok, m = _physical_sample(xs, a, o, data, size, p2i, origin, spacing, mask,
                                         mask_size, mask_p2i, mask_origin, has_mask,
                                         mode if caching else 0, y, yp, ci, g)
                g0 = g[0]
                g1 = g[1]
                g2 = g[2] if d == 3 else 0.0
            else:
                c0 = k00 * x0 + k01 * x1 + k02 * x2 + q0
                c1 = k10 * x0 + k11 * x1 + k12 * x2 + q1
                c2 = k20 * x0 + k21 * x1 + k22 * x2 + q2
                ok, m, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, caching)
            if caching:
                cache_k[s] = -1
            if not ok or m < m_min or m > m_max:
                continue
            t, k = _parzen(m, bin_size, n_min, n_bins)
            if caching:
                _cache_sample(cache_t, cache_k, cache_g, s, t, k, g0, g1, g2)
            _parzen_add(joint, count, c, fixed_bins[s], t, k, n_bins)
            k_used += 1.0
        used[c] = k_used
    return joint, count, used


@njit(parallel=True, cache=True)
def mattes_linear_gradient(points, dense, grid_size, fixed_bins, center3,
                           cache_t, cache_k, cache_g, n_bins, log_ratio, chunk_size):
    """Fused Mattes pass 2 for a linear transform, from the caches of pass 1.

    Forms ``w_s`` (see :func:`mattes_weights`) for every used sample and
    accumulates one gradient-sum block with weights ``w_s``: partials
    ``(n_chunks, 12)`` (outer products with ``x - c``, then the plain sums).
    """
    n = fixed_bins.shape[0]
    d = points.shape[1]  # (dense sets pass an empty (0, d) array)
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, BLOCK))
    for c in prange(nc):
        cx, cy, cz = center3[0], center3[1], center3[2]
        gs0, gs1 = float(grid_size[0]), float(grid_size[1])
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        x0, x1, x2 = _start_position(start, grid_size)
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = 0.0
        v0 = v1 = v2 = 0.0
        for s in range(start, stop):
            x0, x1, x2 = _next_position(points, s, start, dense, x0, x1, x2, gs0, gs1)
            k = cache_k[s]
            if k < 0:
                continue
            w = _mattes_weight(cache_t[s], k, fixed_bins[s], n_bins, log_ratio)
            r0 = x0 - cx
            r1 = x1 - cy
            w0 = w * cache_g[s, 0]
            w1 = w * cache_g[s, 1]
            s00 += w0 * r0
            s01 += w0 * r1
            s10 += w1 * r0
            s11 += w1 * r1
            v0 += w0
            v1 += w1
            if d == 3:  # (in 2-D the third row and column are exact zeros)
                r2 = x2 - cz
                w2 = w * cache_g[s, 2]
                s02 += w0 * r2
                s12 += w1 * r2
                s20 += w2 * r0
                s21 += w2 * r1
                s22 += w2 * r2
                v2 += w2
        part[c, 0] = s00
        part[c, 1] = s01
        part[c, 2] = s02
        part[c, 3] = s10
        part[c, 4] = s11
        part[c, 5] = s12
        part[c, 6] = s20
        part[c, 7] = s21
        part[c, 8] = s22
        part[c, 9] = v0
        part[c, 10] = v1
        part[c, 11] = v2
    return part


# --------------------------------------------------------------------------- B-spline transform
#
# Point-map and moving-sample helpers for a cubic ``BSplineTransform`` (exactly
# that class) and the linear interpolator, used by the one-pass metric kernels
# of :mod:`regframe.metrics._bspline_kernels`.  Per sample: locate the point in
# the control grid, map it, sample the moving image (fast path: ``kmat``/``kvec``
# = moving physical-to-index map; with a moving mask: ``p2i @ (y - origin)``, as
# the engine's physical path).
#
# The point map is a scalar, 3-D padded transcription of ``_locate`` +
# ``_displacement`` of :mod:`regframe.transforms._bspline_kernels` with the *same*
# floating-point operations in the same order (the same ``_b3_weights``, ITK's validity
# band and the factorised sum ``sum_j2 w2 (sum_j1 w1 (w0 . c))`` of
# ``_displacement``), so mapped points are bit-identical to
# ``BSplineTransform.transform_points`` (tested through
# :func:`bspline_transform_points`).  Calling those helpers directly costs
# ~2x more per sample (array arguments, ``(d, 4)`` weight arrays and the
# ``4**d`` expansion buffers); a 2-D problem uses the third axis as a single
# node of weight 1 (``x * 1.0 == x`` exactly).


@njit(cache=True, inline="always")
def _bspline_axis(ci, max_limit, band_lo, band_hi, nudged, wa):
    """``_locate`` along one axis: (valid, support start); 1-D weights into ``wa[0:4]``."""
    ok = True
    if ci >= band_lo and ci <= band_hi:
        ci = nudged
    elif ci >= max_limit:
        ok = False
    elif ci < 1.0:
        ok = False
    st = np.floor(ci + 0.5 - 1.5)
    wa[0], wa[1], wa[2], wa[3] = _b3_weights(ci - st - 1.0)
    return ok, st


@njit(cache=True, inline="always")
def _bspline_index(gp2i, a, d, x0, x1, x2, o0, o1, o2):
    """Continuous control-grid index of ``(x0, x1, x2)`` along axis ``a`` (``_locate``'s sum order)."""
    ci = 0.0
    ci += gp2i[a, 0] * (x0 - o0)
    ci += gp2i[a, 1] * (x1 - o1)
    if d == 3:
        ci += gp2i[a, 2] * (x2 - o2)
    return ci


@njit(cache=True, inline="always")
def _bspline_locate(x0, x1, x2, d, o0, o1, o2, gp2i, gx, gxy, max_limit, band_lo, band_hi, nudged,
                    wa, wb, wc):
    """Support of ``(x0, x1, x2)``: ``(inside, base)``; 1-D weights into ``wa``, ``wb``, ``wc``.

    ``base`` is the flat control-point number of the first support node
    (meaningful when ``inside``); ``wc`` is left untouched in 2-D.
    """
    ci0 = _bspline_index(gp2i, 0, d, x0, x1, x2, o0, o1, o2)
    ci1 = _bspline_index(gp2i, 1, d, x0, x1, x2, o0, o1, o2)
    ok0, st0 = _bspline_axis(ci0, max_limit[0], band_lo[0], band_hi[0], nudged[0], wa)
    ok1, st1 = _bspline_axis(ci1, max_limit[1], band_lo[1], band_hi[1], nudged[1], wb)
    inside = ok0 and ok1
    st2 = 0.0
    if d == 3:
        ci2 = _bspline_index(gp2i, 2, d, x0, x1, x2, o0, o1, o2)
        ok2, st2 = _bspline_axis(ci2, max_limit[2], band_lo[2], band_hi[2], nudged[2], wc)
        inside = inside and ok2
    base = np.int64(0)
    if inside:
        base = np.int64(st0) + np.int64(st1) * gx + np.int64(st2) * gxy
    return inside, base


@njit(cache=True, inline="always")
def _bspline_map(x0, x1, x2, d, params, n_grid, o0, o1, o2, gp2i, gx, gxy, max_limit, band_lo,
                 band_hi, nudged, wa, wb, wc):
    """B-spline image of ``(x0, x1, x2)``: ``(inside, base, y0, y1, y2)``.

    ``base`` is the flat control-point number of the first support node; the
    1-D weights are left in ``wa``, ``wb``, ``wc`` (``wc = [1]`` in 2-D).
    """
    inside, base = _bspline_locate(x0, x1, x2, d, o0, o1, o2, gp2i, gx, gxy, max_limit, band_lo,
                                   band_hi, nudged, wa, wb, wc)
    y0 = x0
    y1 = x1
    y2 = x2
    if inside:
        # factorised tensor-product sum, in the order of the transform's _displacement
        a0, a1, a2, a3 = wa[0], wa[1], wa[2], wa[3]
        n2 = 2 * n_grid
        e0 = 0.0
        e1 = 0.0
        e2 = 0.0
        if d == 2:
            for j1 in range(4):
                f = base + j1 * gx
                b1 = wb[j1]
                e0 += b1 * _row_sum(params, f, a0, a1, a2, a3)
                e1 += b1 * _row_sum(params, n_grid + f, a0, a1, a2, a3)
        else:
            for j2 in range(4):
                p0 = 0.0
                p1 = 0.0
                p2 = 0.0
                for j1 in range(4):
                    f = base + j2 * gxy + j1 * gx
                    b1 = wb[j1]
                    p0 += b1 * _row_sum(params, f, a0, a1, a2, a3)
                    p1 += b1 * _row_sum(params, n_grid + f, a0, a1, a2, a3)
                    p2 += b1 * _row_sum(params, n2 + f, a0, a1, a2, a3)
                c2 = wc[j2]
                e0 += c2 * p0
                e1 += c2 * p1
                e2 += c2 * p2
            y2 = e2 + x2
        y0 = e0 + x0
        y1 = e1 + x1
    return inside, base, y0, y1, y2


@njit(parallel=True, cache=True)
def bspline_transform_points(points, params, n_grid, origin, gp2i, grid_size, max_limit, band_lo,
                             band_hi, nudged, chunk_size):
    """The fused kernels' B-spline point map (for tests: equals ``transform_points`` bit for bit)."""
    n, d = points.shape
    out = np.empty((n, d))
    nc = (n + chunk_size - 1) // chunk_size
    gx = grid_size[0]
    gxy = grid_size[0] * grid_size[1]
    o0 = origin[0]
    o1 = origin[1]
    o2 = origin[2] if d == 3 else 0.0
    for c in prange(nc):
        wa = np.empty(4)
        wb = np.empty(4)
        wc = np.ones(4)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            x0 = points[s, 0]
            x1 = points[s, 1]
            x2 = points[s, 2] if d == 3 else 0.0
            inside, base, y0, y1, y2 = _bspline_map(x0, x1, x2, d, params, n_grid, o0, o1, o2,
                                                    gp2i, gx, gxy, max_limit, band_lo, band_hi,
                                                    nudged, wa, wb, wc)
            out[s, 0] = y0
            out[s, 1] = y1
            if d == 3:
                out[s, 2] = y2
    return out


@njit(cache=True, inline="always")
def _moving_frame(kmat, kvec, size3):
    """``(k00, ..., k22, q0, q1, q2, nx, ny, nz)``: the moving index map and size as scalars."""
    return (kmat[0, 0], kmat[0, 1], kmat[0, 2], kmat[1, 0], kmat[1, 1], kmat[1, 2], kmat[2, 0],
            kmat[2, 1], kmat[2, 2], kvec[0], kvec[1], kvec[2], size3[0], size3[1], size3[2])


@njit(cache=True, inline="always")
def _bspline_moving(y0, y1, y2, d, y, data, p2i, morigin, frame, mask, mask_size, mask_p2i,
                    mask_origin, has_mask, with_gradient):
    """Moving value and *physical* gradient at the mapped point; ``(ok, m, g0, g1, g2)``.

    ``frame`` is :func:`_moving_frame` of the moving image (fast path).
    """
    k00, k01, k02, k10, k11, k12, k20, k21, k22, q0, q1, q2, nx, ny, nz = frame
    ok = True
    if has_mask:
        y[0] = y0
        y[1] = y1
        if d == 3:
            y[2] = y2
        ok = _in_mask(y, mask, mask_size, mask_p2i, mask_origin)
        c0 = p2i[0, 0] * (y0 - morigin[0]) + p2i[0, 1] * (y1 - morigin[1])
        c1 = p2i[1, 0] * (y0 - morigin[0]) + p2i[1, 1] * (y1 - morigin[1])
        c2 = 0.0
        if d == 3:
            c0 += p2i[0, 2] * (y2 - morigin[2])
            c1 += p2i[1, 2] * (y2 - morigin[2])
            c2 = (p2i[2, 0] * (y0 - morigin[0]) + p2i[2, 1] * (y1 - morigin[1])
                  + p2i[2, 2] * (y2 - morigin[2]))
    else:
        c0 = k00 * y0 + k01 * y1 + k02 * y2 + q0
        c1 = k10 * y0 + k11 * y1 + k12 * y2 + q1
        c2 = k20 * y0 + k21 * y1 + k22 * y2 + q2
    m = 0.0
    p0 = 0.0
    p1 = 0.0
    p2 = 0.0
    if ok:
        ok, m, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, with_gradient)
        if ok and with_gradient:
            p0 = p2i[0, 0] * g0 + p2i[1, 0] * g1
            p1 = p2i[0, 1] * g0 + p2i[1, 1] * g1
            if d == 3:
                p0 += p2i[2, 0] * g2
                p1 += p2i[2, 1] * g2
                p2 = p2i[0, 2] * g0 + p2i[1, 2] * g1 + p2i[2, 2] * g2
    return ok, m, p0, p1, p2
