"""Private numba kernels of Mattes mutual information: cubic B-spline Parzen windows.

The Parzen coordinate of a moving value ``m`` is ``t = m / bin_size - n_min``;
a sample adds ``B3(k + j - t)`` to the four moving bins ``k..k+3`` of its fixed
bin (ITK ``MattesMutualInformationImageToImageMetricv4``).  Chunking and
reductions follow :mod:`._sample_kernels` (fixed-size chunks, ordered
serial reduction of the partials).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..transforms._bspline_kernels import _b3_weights
from ._sample_kernels import _U


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


# --------------------------------------------------------------------------- from sampled values


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
