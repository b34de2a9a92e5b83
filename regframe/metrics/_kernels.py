"""Private numba kernels of the metric engine.

Conventions shared by every kernel
----------------------------------
* ``points`` ``(n, d)`` float64: fixed-space sample points (physical, ITK order).
* Point map: the kernels evaluate the moving image at ``y = A @ x + o``.  For a
  linear transform ``A``/``o`` are its matrix and offset (the map is fused into
  the kernel); for any other transform the caller passes already-mapped points
  with ``A = I`` and ``o = 0``.
* Moving image: ``data`` (flat float64, ITK raster order, x fastest), ``size``
  ``(d,)`` int64 in ITK order, ``p2i`` ``(d, d)`` physical-to-continuous-index
  matrix, ``origin`` ``(d,)``, ``spacing`` ``(d,)``.  Inside test and linear
  interpolation follow ITK (``LinearInterpolateImageFunction``): continuous
  index in ``[-0.5, size - 0.5)``, edge-clamped (constant) in the half-voxel
  skirt; the exact gradient is the derivative of that interpolant (zero along
  clamped axes, right-sided on grid lines), identical in meaning to
  :func:`regframe.interpolators._kernels.linear_values_gradients`.
* Moving mask: ``mask`` (flat uint8), ``mask_size``, ``mask_p2i``,
  ``mask_origin``; ``has_mask`` False disables it.  A point is in the mask when
  its nearest voxel (ITK ``TransformPhysicalPointToIndex``, round half up) is in
  the mask buffer and non-zero.
* ``mode``: 0 values only, 1 exact gradient of the linear interpolant, 2 ITK's
  ``CentralDifferenceImageFunction`` (world-axis probes ``y -/+ spacing[a]/2``,
  component 0 when a probe is outside the buffer).

Determinism: every reduction runs ``prange`` over fixed-size chunks of
samples; each chunk accumulates in chunk-local storage and writes only its own
row of a partials array, which the caller reduces serially in chunk order
(:func:`regframe._parallel.reduce_in_order`).  Chunking never depends on the
thread count, so results are bit-identical for any number of threads.  No
fastmath, no random numbers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# --------------------------------------------------------------------------- helpers


@njit(cache=True, inline="always")
def _map_point(xs, a, o, y):
    """``y = a @ xs + o``."""
    d = xs.shape[0]
    for i in range(d):
        acc = o[i]
        for j in range(d):
            acc += a[i, j] * xs[j]
        y[i] = acc


@njit(cache=True, inline="always")
def _load_position(points, s, start, dense, grid_size, xs):
    """Position of sample ``s`` into ``xs``.

    ``dense``: sample ``s`` is voxel ``s`` of a grid of ``grid_size`` (ITK raster
    order) and ``xs`` holds its integer index, advanced incrementally from the
    chunk start (the caller folds the grid geometry into the point map).
    Otherwise ``xs = points[s]``.
    """
    d = xs.shape[0]
    if dense:
        if s == start:
            r = s
            for k in range(d):
                xs[k] = float(r % grid_size[k])
                r //= grid_size[k]
        else:
            for k in range(d):
                xs[k] += 1.0
                if xs[k] < grid_size[k]:
                    break
                xs[k] = 0.0
    else:
        for k in range(d):
            xs[k] = points[s, k]


@njit(cache=True, inline="always")
def _cindex_inside(y, p2i, origin, size, ci):
    """``ci = p2i @ (y - origin)``; True when inside ITK's buffer ``[-0.5, size - 0.5)``."""
    d = y.shape[0]
    ok = True
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += p2i[i, j] * (y[j] - origin[j])
        ci[i] = acc
        if not (acc >= -0.5 and acc < size[i] - 0.5):
            ok = False
    return ok


@njit(cache=True, inline="always")
def _in_mask(y, mask, mask_size, mask_p2i, mask_origin):
    """Nearest-voxel mask test (round half up), False outside the mask buffer."""
    d = y.shape[0]
    off = 0
    stride = 1
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += mask_p2i[i, j] * (y[j] - mask_origin[j])
        k = math.floor(acc + 0.5)
        if not (k >= 0.0 and k <= mask_size[i] - 1):
            return False
        off += np.int64(k) * stride
        stride *= mask_size[i]
    return mask[off] != 0


@njit(cache=True, inline="always")
def _linear_setup(ci, size, frac, step):
    """ITK cell: base offset, fractions and upper-neighbour strides (0 = clamped axis)."""
    d = ci.shape[0]
    base = 0
    stride = 1
    for i in range(d):
        c = ci[i]
        b = math.floor(c)
        if b < 0.0:
            # low skirt: constant extrapolation
            base += 0
            frac[i] = 0.0
            step[i] = 0
        else:
            ib = np.int64(b)
            base += ib * stride
            if ib + 1 < size[i]:
                frac[i] = c - b
                step[i] = stride
            else:
                # high skirt or last voxel centre: constant
                frac[i] = 0.0
                step[i] = 0
        stride *= size[i]
    return base


@njit(cache=True, inline="always")
def _gather(data, base, step, corner):
    d = step.shape[0]
    for c in range(1 << d):
        off = base
        for i in range(d):
            if (c >> i) & 1:
                off += step[i]
        corner[c] = data[off]


@njit(cache=True, inline="always")
def _lerp_reduce(corner, buf, frac, diff_axis):
    """Nested lerps along axis 0, 1, ... (ITK's order); ``diff_axis`` takes a difference."""
    d = frac.shape[0]
    n = 1 << d
    for c in range(n):
        buf[c] = corner[c]
    for i in range(d):
        half = n >> 1
        f = frac[i]
        for q in range(half):
            lo = buf[2 * q]
            hi = buf[2 * q + 1]
            if i == diff_axis:
                buf[q] = hi - lo
            else:
                buf[q] = lo + (hi - lo) * f
        n = half
    return buf[0]


@njit(cache=True, inline="always")
def _linear_at(y, data, size, p2i, origin, ci, frac, step, corner, buf):
    """Linear value at physical point ``y``; returns (inside, value)."""
    if not _cindex_inside(y, p2i, origin, size, ci):
        return False, 0.0
    base = _linear_setup(ci, size, frac, step)
    _gather(data, base, step, corner)
    return True, _lerp_reduce(corner, buf, frac, -1)


@njit(cache=True, inline="always")
def _axis(c, n):
    """ITK linear cell along one axis: (index, fraction, has_upper_neighbour)."""
    b = math.floor(c)
    if b < 0.0:
        return np.int64(0), 0.0, False
    ib = np.int64(b)
    if ib + 1 < n:
        return ib, c - b, True
    return ib, 0.0, False


@njit(cache=True, inline="always")
def _sample3(xs, a, o, data, size, p2i, origin,
             mask, mask_size, mask_p2i, mask_origin, has_mask, mode, y, g):
    """3-D specialisation of :func:`_sample` for modes 0 and 1 (scalar code, same arithmetic)."""
    x0 = xs[0]
    x1 = xs[1]
    x2 = xs[2]
    y0 = o[0] + a[0, 0] * x0 + a[0, 1] * x1 + a[0, 2] * x2
    y1 = o[1] + a[1, 0] * x0 + a[1, 1] * x1 + a[1, 2] * x2
    y2 = o[2] + a[2, 0] * x0 + a[2, 1] * x1 + a[2, 2] * x2
    if has_mask:
        y[0] = y0
        y[1] = y1
        y[2] = y2
        if not _in_mask(y, mask, mask_size, mask_p2i, mask_origin):
            return False, 0.0
    r0 = y0 - origin[0]
    r1 = y1 - origin[1]
    r2 = y2 - origin[2]
    c0 = p2i[0, 0] * r0 + p2i[0, 1] * r1 + p2i[0, 2] * r2
    c1 = p2i[1, 0] * r0 + p2i[1, 1] * r1 + p2i[1, 2] * r2
    c2 = p2i[2, 0] * r0 + p2i[2, 1] * r1 + p2i[2, 2] * r2
    nx = size[0]
    ny = size[1]
    nz = size[2]
    if not (c0 >= -0.5 and c0 < nx - 0.5 and c1 >= -0.5 and c1 < ny - 0.5
            and c2 >= -0.5 and c2 < nz - 0.5):
        return False, 0.0
    i0, f0, u0 = _axis(c0, nx)
    i1, f1, u1 = _axis(c1, ny)
    i2, f2, u2 = _axis(c2, nz)
    sxy = nx * ny
    base = i0 + i1 * nx + i2 * sxy
    s0 = 1 if u0 else 0
    s1 = nx if u1 else 0
    s2 = sxy if u2 else 0
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
    if mode == 1:
        d00 = v100 - v000
        d10 = v110 - v010
        d01 = v101 - v001
        d11 = v111 - v011
        e0 = d00 + (d10 - d00) * f1
        e1 = d01 + (d11 - d01) * f1
        gx = e0 + (e1 - e0) * f2 if u0 else 0.0
        h0 = a10 - a00
        h1 = a11 - a01
        gy = h0 + (h1 - h0) * f2 if u1 else 0.0
        gz = b1 - b0 if u2 else 0.0
        g[0] = p2i[0, 0] * gx + p2i[1, 0] * gy + p2i[2, 0] * gz
        g[1] = p2i[0, 1] * gx + p2i[1, 1] * gy + p2i[2, 1] * gz
        g[2] = p2i[0, 2] * gx + p2i[1, 2] * gy + p2i[2, 2] * gz
    return True, value


@njit(cache=True, inline="always")
def _sample2(xs, a, o, data, size, p2i, origin,
             mask, mask_size, mask_p2i, mask_origin, has_mask, mode, y, g):
    """2-D specialisation of :func:`_sample` for modes 0 and 1 (scalar code, same arithmetic)."""
    x0 = xs[0]
    x1 = xs[1]
    y0 = o[0] + a[0, 0] * x0 + a[0, 1] * x1
    y1 = o[1] + a[1, 0] * x0 + a[1, 1] * x1
    if has_mask:
        y[0] = y0
        y[1] = y1
        if not _in_mask(y, mask, mask_size, mask_p2i, mask_origin):
            return False, 0.0
    r0 = y0 - origin[0]
    r1 = y1 - origin[1]
    c0 = p2i[0, 0] * r0 + p2i[0, 1] * r1
    c1 = p2i[1, 0] * r0 + p2i[1, 1] * r1
    nx = size[0]
    ny = size[1]
    if not (c0 >= -0.5 and c0 < nx - 0.5 and c1 >= -0.5 and c1 < ny - 0.5):
        return False, 0.0
    i0, f0, u0 = _axis(c0, nx)
    i1, f1, u1 = _axis(c1, ny)
    base = i0 + i1 * nx
    s0 = 1 if u0 else 0
    s1 = nx if u1 else 0
    v00 = data[base]
    v10 = data[base + s0]
    v01 = data[base + s1]
    v11 = data[base + s0 + s1]
    a0 = v00 + (v10 - v00) * f0
    a1 = v01 + (v11 - v01) * f0
    value = a0 + (a1 - a0) * f1
    if mode == 1:
        d0 = v10 - v00
        d1 = v11 - v01
        gx = d0 + (d1 - d0) * f1 if u0 else 0.0
        gy = a1 - a0 if u1 else 0.0
        g[0] = p2i[0, 0] * gx + p2i[1, 0] * gy
        g[1] = p2i[0, 1] * gx + p2i[1, 1] * gy
    return True, value


@njit(cache=True, inline="always")
def _sample(xs, a, o, data, size, p2i, origin, spacing,
            mask, mask_size, mask_p2i, mask_origin, has_mask, mode,
            y, yp, ci, frac, step, corner, buf, gidx, g):
    """Map the point ``xs`` and interpolate; returns (valid, value), fills ``g`` if mode > 0.

    2-D and 3-D exact/value modes use scalar specialisations (the hot path);
    other dimensions and the central-difference mode use the n-D code below.
    """
    d = xs.shape[0]
    if mode != 2:
        if d == 3:
            return _sample3(xs, a, o, data, size, p2i, origin,
                            mask, mask_size, mask_p2i, mask_origin, has_mask, mode, y, g)
        if d == 2:
            return _sample2(xs, a, o, data, size, p2i, origin,
                            mask, mask_size, mask_p2i, mask_origin, has_mask, mode, y, g)
    _map_point(xs, a, o, y)
    if has_mask and not _in_mask(y, mask, mask_size, mask_p2i, mask_origin):
        return False, 0.0
    if not _cindex_inside(y, p2i, origin, size, ci):
        return False, 0.0
    base = _linear_setup(ci, size, frac, step)
    _gather(data, base, step, corner)
    value = _lerp_reduce(corner, buf, frac, -1)
    if mode == 1:
        for k in range(d):
            if step[k] == 0:
                gidx[k] = 0.0
            else:
                gidx[k] = _lerp_reduce(corner, buf, frac, k)
        for j in range(d):
            acc = 0.0
            for i in range(d):
                acc += p2i[i, j] * gidx[i]
            g[j] = acc
    elif mode == 2:
        for k in range(d):
            yp[k] = y[k]
        for k in range(d):
            g[k] = 0.0
            delta = 0.5 * spacing[k]
            yp[k] = y[k] - delta
            ok_lo, lower = _linear_at(yp, data, size, p2i, origin, ci, frac, step, corner, buf)
            if ok_lo:
                yp[k] = y[k] + delta
                ok_hi, upper = _linear_at(yp, data, size, p2i, origin, ci, frac, step, corner, buf)
                if ok_hi:
                    g[k] = (upper - lower) / (2.0 * delta)
            yp[k] = y[k]
    return True, value


@njit(cache=True, inline="always")
def _add_outer(acc, offset, weight, g, xs, center):
    """``acc[offset:] += weight * (g (x - c)^T flattened, g)``."""
    d = g.shape[0]
    dd = d * d
    for i in range(d):
        wg = weight * g[i]
        for j in range(d):
            acc[offset + i * d + j] += wg * (xs[j] - center[j])
        acc[offset + dd + i] += wg


# --------------------------------------------------------------------------- sampling
#
# Every kernel below takes the sample positions either explicitly (``points``,
# ``dense`` False) or implicitly (``dense`` True: sample ``s`` is voxel ``s`` of
# a grid of ``grid_size``, ``points`` is ignored and ``a``/``o`` already map
# grid indices to moving space), see :func:`_load_position`.


@njit(parallel=True, cache=True)
def sample_moving(points, a, o, data, size, p2i, origin, spacing,
                  mask, mask_size, mask_p2i, mask_origin, has_mask, mode, chunk_size):
    """Moving values (and gradients) at ``A x + o`` for every point.

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
    grid_size = np.ones(d, dtype=np.int64)
    for c in prange(nc):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        frac = np.empty(d)
        step = np.empty(d, dtype=np.int64)
        corner = np.empty(1 << d)
        buf = np.empty(1 << d)
        gidx = np.empty(d)
        g = np.zeros(d)
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        for s in range(start, stop):
            _load_position(points, s, start, False, grid_size, xs)
            ok, v = _sample(xs, a, o, data, size, p2i, origin, spacing,
                            mask, mask_size, mask_p2i, mask_origin, has_mask, mode,
                            y, yp, ci, frac, step, corner, buf, gidx, g)
            if ok:
                valid[s] = True
                values[s] = v
                if mode > 0:
                    for k in range(d):
                        grads[s, k] = g[k]
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


# --------------------------------------------------------------------------- MeanSquares


@njit(parallel=True, cache=True)
def mean_squares_linear(points, dense, grid_size, fixed, a, o, center,
                        data, size, p2i, origin, spacing,
                        mask, mask_size, mask_p2i, mask_origin, has_mask, mode, chunk_size):
    """Fused MeanSquares pass for a linear transform (map, interpolate, accumulate).

    Returns
    -------
    (n_chunks, 2 + d*d + d) float64
        Per chunk: ``sum (m - f)^2``, valid count, then (if ``mode > 0``)
        ``sum 2 (m - f) g (x - c)^T`` (row-major) and ``sum 2 (m - f) g``.
    """
    n = fixed.shape[0]
    d = a.shape[0]
    width = 2 + d * d + d
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, width))
    for c in prange(nc):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        frac = np.empty(d)
        step = np.empty(d, dtype=np.int64)
        corner = np.empty(1 << d)
        buf = np.empty(1 << d)
        gidx = np.empty(d)
        g = np.zeros(d)
        acc = np.zeros(width)
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        for s in range(start, stop):
            _load_position(points, s, start, dense, grid_size, xs)
            ok, m = _sample(xs, a, o, data, size, p2i, origin, spacing,
                            mask, mask_size, mask_p2i, mask_origin, has_mask, mode,
                            y, yp, ci, frac, step, corner, buf, gidx, g)
            if not ok:
                continue
            r = m - fixed[s]
            acc[0] += r * r
            acc[1] += 1.0
            if mode > 0:
                _add_outer(acc, 2, 2.0 * r, g, xs, center)
        for k in range(width):
            part[c, k] = acc[k]
    return part


# --------------------------------------------------------------------------- Correlation


@njit(parallel=True, cache=True)
def correlation_linear(points, dense, grid_size, fixed, fixed_ref, moving_ref, a, o, center,
                       data, size, p2i, origin, spacing,
                       mask, mask_size, mask_p2i, mask_origin, has_mask, mode, chunk_size):
    """Fused NormalizedCorrelation pass for a linear transform.

    With ``f' = f - fixed_ref`` and ``m' = m - moving_ref`` (shifts that keep
    the one-pass sums well conditioned) each chunk row holds: count,
    ``sum f'``, ``sum m'``, ``sum f'^2``, ``sum m'^2``, ``sum f'm'`` and, if
    ``mode > 0``, three blocks of ``d*d + d`` values with
    ``sum w g (x - c)^T`` and ``sum w g`` for ``w = 1, f', m'``.
    """
    n = fixed.shape[0]
    d = a.shape[0]
    blk = d * d + d
    width = 6 + 3 * blk
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, width))
    for c in prange(nc):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        frac = np.empty(d)
        step = np.empty(d, dtype=np.int64)
        corner = np.empty(1 << d)
        buf = np.empty(1 << d)
        gidx = np.empty(d)
        g = np.zeros(d)
        acc = np.zeros(width)
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        for s in range(start, stop):
            _load_position(points, s, start, dense, grid_size, xs)
            ok, m = _sample(xs, a, o, data, size, p2i, origin, spacing,
                            mask, mask_size, mask_p2i, mask_origin, has_mask, mode,
                            y, yp, ci, frac, step, corner, buf, gidx, g)
            if not ok:
                continue
            fs = fixed[s] - fixed_ref
            ms = m - moving_ref
            acc[0] += 1.0
            acc[1] += fs
            acc[2] += ms
            acc[3] += fs * fs
            acc[4] += ms * ms
            acc[5] += fs * ms
            if mode > 0:
                _add_outer(acc, 6, 1.0, g, xs, center)
                _add_outer(acc, 6 + blk, fs, g, xs, center)
                _add_outer(acc, 6 + 2 * blk, ms, g, xs, center)
        for k in range(width):
            part[c, k] = acc[k]
    return part


# --------------------------------------------------------------------------- Mattes


@njit(cache=True, inline="always")
def _b3(u):
    """Cubic B-spline (ITK ``BSplineKernelFunction<3>``)."""
    a = abs(u)
    if a < 1.0:
        return (4.0 - 6.0 * a * a + 3.0 * a * a * a) / 6.0
    if a < 2.0:
        t = 2.0 - a
        return t * t * t / 6.0
    return 0.0


@njit(cache=True, inline="always")
def _b3_derivative(u):
    """Derivative of the cubic B-spline (ITK ``BSplineDerivativeKernelFunction<3>``)."""
    if u >= 0.0 and u < 1.0:
        return -2.0 * u + 1.5 * u * u
    if u > -1.0 and u < 0.0:
        return -2.0 * u - 1.5 * u * u
    if u >= 1.0 and u < 2.0:
        t = 2.0 - u
        return -0.5 * t * t
    if u > -2.0 and u <= -1.0:
        t = 2.0 + u
        return 0.5 * t * t
    return 0.0


@njit(cache=True, inline="always")
def _parzen_index(t, n_bins):
    """``clamp(trunc(t), 2, n_bins - 3)`` (ITK's Parzen window start + 1)."""
    i = np.int64(t)
    if i < 2:
        i = 2
    elif i > n_bins - 3:
        i = n_bins - 3
    return i


@njit(cache=True, inline="always")
def _hist_add(joint, count, c, fbin, m, bin_size, n_min, n_bins):
    t = m / bin_size - n_min
    im = _parzen_index(t, n_bins)
    row = np.int64(fbin) * n_bins
    for k in range(im - 1, im + 3):
        joint[c, row + k] += _b3(k - t)
    count[c, fbin] += 1.0


@njit(cache=True, inline="always")
def _mattes_weight(fbin, m, bin_size, n_min, n_bins, log_ratio):
    """``w = sum_b B3'(k_b - t) R[fbin, k_b]`` for moving value ``m``."""
    t = m / bin_size - n_min
    im = _parzen_index(t, n_bins)
    row = np.int64(fbin) * n_bins
    w = 0.0
    for k in range(im - 1, im + 3):
        w += _b3_derivative(k - t) * log_ratio[row + k]
    return w


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
            _hist_add(joint, count, c, fixed_bins[s], m, bin_size, n_min, n_bins)
            k_used += 1.0
        used[c] = k_used
    return joint, count, used


@njit(parallel=True, cache=True)
def mattes_weights(fixed_bins, moving_values, valid, m_min, m_max, bin_size, n_min,
                   n_bins, log_ratio, chunk_size):
    """Per-sample Mattes weights ``w_s = sum_b B3'(k_b - t_s) R[i_f(s), k_b]``.

    ``log_ratio`` is ``R`` flattened ``(B*B,)``, ``ln(p_ij / pm_j)`` on
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
            w[s] = _mattes_weight(fixed_bins[s], m, bin_size, n_min, n_bins, log_ratio)
    return w


@njit(parallel=True, cache=True)
def mattes_linear_histogram(points, dense, grid_size, fixed_bins, a, o,
                            data, size, p2i, origin, spacing,
                            mask, mask_size, mask_p2i, mask_origin, has_mask,
                            m_min, m_max, bin_size, n_min, n_bins, chunk_size):
    """Fused Mattes pass 1 for a linear transform: map, interpolate, Parzen histogram.

    Same outputs as :func:`mattes_histogram`.
    """
    n = fixed_bins.shape[0]
    d = a.shape[0]
    nc = (n + chunk_size - 1) // chunk_size
    joint = np.zeros((nc, n_bins * n_bins))
    count = np.zeros((nc, n_bins))
    used = np.zeros(nc)
    for c in prange(nc):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        frac = np.empty(d)
        step = np.empty(d, dtype=np.int64)
        corner = np.empty(1 << d)
        buf = np.empty(1 << d)
        gidx = np.empty(d)
        g = np.zeros(d)
        k_used = 0.0
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        for s in range(start, stop):
            _load_position(points, s, start, dense, grid_size, xs)
            ok, m = _sample(xs, a, o, data, size, p2i, origin, spacing,
                            mask, mask_size, mask_p2i, mask_origin, has_mask, 0,
                            y, yp, ci, frac, step, corner, buf, gidx, g)
            if not ok or m < m_min or m > m_max:
                continue
            _hist_add(joint, count, c, fixed_bins[s], m, bin_size, n_min, n_bins)
            k_used += 1.0
        used[c] = k_used
    return joint, count, used


@njit(parallel=True, cache=True)
def mattes_linear_gradient(points, dense, grid_size, fixed_bins, a, o, center,
                           data, size, p2i, origin, spacing,
                           mask, mask_size, mask_p2i, mask_origin, has_mask, mode,
                           m_min, m_max, bin_size, n_min, n_bins, log_ratio, chunk_size):
    """Fused Mattes pass 2 for a linear transform.

    Recomputes value and gradient per sample, forms ``w_s`` (see
    :func:`mattes_weights`) and accumulates ``sum w g (x - c)^T`` and
    ``sum w g``: partials ``(n_chunks, d*d + d)``.
    """
    n = fixed_bins.shape[0]
    d = a.shape[0]
    width = d * d + d
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, width))
    for c in prange(nc):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        frac = np.empty(d)
        step = np.empty(d, dtype=np.int64)
        corner = np.empty(1 << d)
        buf = np.empty(1 << d)
        gidx = np.empty(d)
        g = np.zeros(d)
        acc = np.zeros(width)
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        for s in range(start, stop):
            _load_position(points, s, start, dense, grid_size, xs)
            ok, m = _sample(xs, a, o, data, size, p2i, origin, spacing,
                            mask, mask_size, mask_p2i, mask_origin, has_mask, mode,
                            y, yp, ci, frac, step, corner, buf, gidx, g)
            if not ok or m < m_min or m > m_max:
                continue
            w = _mattes_weight(fixed_bins[s], m, bin_size, n_min, n_bins, log_ratio)
            _add_outer(acc, 0, w, g, xs, center)
        for k in range(width):
            part[c, k] = acc[k]
    return part
