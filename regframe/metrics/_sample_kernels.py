"""Private numba kernels of the metric engine: sampling, interpolation and masks.

The fused per-metric kernels live in :mod:`._linear_fused_kernels` (linear
transforms), :mod:`._bspline_kernels` and :mod:`._bspline_grid_kernels`
(B-spline transforms); the Parzen histogram helpers of Mattes in
:mod:`._parzen_kernels`; the B-spline point map in :mod:`._bspline_map_kernels`.
All of them follow the conventions below.

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
Path selection (``physical``: ``None`` or ``True``)
    ``None`` takes the fast path, ``True`` the physical path.  The kernels test
    ``physical is not None``, which numba resolves while compiling (dead-branch
    pruning on the argument's type), so a call compiles only the path it
    takes: a run without mask or central differences never compiles the
    physical path (a third of the first-run compile time).
Physical path (``physical`` True: central differences)
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
    ``has_mask`` ``None`` disables it (numba prunes the branch, so a run without
    a mask compiles no mask test).  A point is inside when its nearest voxel
    (ITK ``TransformPhysicalPointToIndex``, round half up) is in the mask
    buffer and non-zero.  The fast path folds the mask's map like the moving
    image's (:func:`_mask_frame`, from ``a``/``o``: scalars, no physical point),
    so a moving mask costs one more index per sample, not the physical path
    (four to six times slower).
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

from .._parallel import parallel_kernel
#: Width of one gradient-sum block (3x3 outer-product sum + 3-vector sum).
BLOCK = 12

#: Array indices in the hot helpers are cast to unsigned: numba adds a negative-index
#: fix-up (compare and select) to every signed index, ~10-15 % of a B-spline Mattes pass.
_U = np.uint64


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
def _mask_frame(a, o, mask_p2i, mask_origin, mask_size):
    """The fast path's mask map as scalars ``(m00, ..., m22, r0, r1, r2, mx, my, mz)``: the mask's
    continuous index ``mask_p2i (a x + o - mask_origin)`` of position ``x``, and its size (3-D padded).

    Scalar code, called once per chunk (not inlined): it adds no array allocation and little
    code to the kernels, which compile it even when no mask is given (first-run time).
    """
    d = a.shape[0]
    m00 = m01 = m02 = m10 = m11 = m12 = m20 = m21 = m22 = r0 = r1 = r2 = 0.0
    mx = my = mz = 1
    for k in range(d):
        m00 += mask_p2i[0, k] * a[k, 0]
        r0 += mask_p2i[0, k] * (o[k] - mask_origin[k])
        if d > 1:
            m01 += mask_p2i[0, k] * a[k, 1]
            m10 += mask_p2i[1, k] * a[k, 0]
            m11 += mask_p2i[1, k] * a[k, 1]
            r1 += mask_p2i[1, k] * (o[k] - mask_origin[k])
        if d > 2:
            m02 += mask_p2i[0, k] * a[k, 2]
            m12 += mask_p2i[1, k] * a[k, 2]
            m20 += mask_p2i[2, k] * a[k, 0]
            m21 += mask_p2i[2, k] * a[k, 1]
            m22 += mask_p2i[2, k] * a[k, 2]
            r2 += mask_p2i[2, k] * (o[k] - mask_origin[k])
    mx = int(mask_size[0])
    if d > 1:
        my = int(mask_size[1])
    if d > 2:
        mz = int(mask_size[2])
    return m00, m01, m02, m10, m11, m12, m20, m21, m22, r0, r1, r2, mx, my, mz


@njit(cache=True, inline="always")
def _mask_test(mask, frame, x0, x1, x2):
    """Nearest-voxel test (round half up) of the mask at position ``x`` through :func:`_mask_frame`."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22, r0, r1, r2, mx, my, mz = frame
    k0 = math.floor(m00 * x0 + m01 * x1 + m02 * x2 + r0 + 0.5)
    k1 = math.floor(m10 * x0 + m11 * x1 + m12 * x2 + r1 + 0.5)
    k2 = math.floor(m20 * x0 + m21 * x1 + m22 * x2 + r2 + 0.5)
    if not (k0 >= 0.0 and k0 <= mx - 1 and k1 >= 0.0 and k1 <= my - 1 and k2 >= 0.0 and k2 <= mz - 1):
        return False
    return mask[_U((k2 * my + k1) * mx + k0)] != 0


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


@njit(cache=True, inline="always")
def _moving_frame(kmat, kvec, size3):
    """``(k00, ..., k22, q0, q1, q2, nx, ny, nz)``: the moving index map and size as scalars."""
    return (kmat[0, 0], kmat[0, 1], kmat[0, 2], kmat[1, 0], kmat[1, 1], kmat[1, 2], kmat[2, 0],
            kmat[2, 1], kmat[2, 2], kvec[0], kvec[1], kvec[2], size3[0], size3[1], size3[2])


# --------------------------------------------------------------------------- sampling


@parallel_kernel
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
        if has_mask is not None:  # pruned without a mask (no mask code compiled)
            mask_frame = _mask_frame(a, o, mask_p2i, mask_origin, mask_size)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            if physical is not None:
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
            if has_mask is not None:
                ok = ok and _mask_test(mask, mask_frame, x0, x1, x2)
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


@njit(cache=True)
def sample_values(points, kmat, kvec, size3, data):
    """Linear values and inside flags at ``points`` (fast path, no gradient), serially.

    The fixed image at off-grid samples, once per sample set: a serial kernel
    compiles in a fraction of the time of :func:`sample_moving` and costs
    microseconds per thousand samples.  Values equal :func:`sample_moving`'s
    (mode 0, fast path) bit for bit.
    """
    n, d = points.shape
    values = np.zeros(n)
    inside = np.zeros(n, dtype=np.bool_)
    k00, k01, k02 = kmat[0, 0], kmat[0, 1], kmat[0, 2]
    k10, k11, k12 = kmat[1, 0], kmat[1, 1], kmat[1, 2]
    k20, k21, k22 = kmat[2, 0], kmat[2, 1], kmat[2, 2]
    q0, q1, q2 = kvec[0], kvec[1], kvec[2]
    nx, ny, nz = size3[0], size3[1], size3[2]
    for s in range(n):
        x0 = points[s, 0]
        x1 = points[s, 1]
        x2 = points[s, 2] if d == 3 else 0.0
        c0 = k00 * x0 + k01 * x1 + k02 * x2 + q0
        c1 = k10 * x0 + k11 * x1 + k12 * x2 + q1
        c2 = k20 * x0 + k21 * x1 + k22 * x2 + q2
        ok, v, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, False)
        if ok:
            inside[s] = True
            values[s] = v
    return values, inside


@parallel_kernel
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
