"""WindowConvergenceMonitor against the double-precision formula of itk_design 5.4."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regframe.errors import InvalidInputError
from regframe.optimizers import WindowConvergenceMonitor


def naive_convergence_value(values: list[float], window: int) -> float:
    """Lee-Wolberg-Shin fit of a 2-control-point linear B-spline, written as explicit loops."""
    if len(values) < window:
        return math.inf
    total = 0.0
    for v in values:
        total += abs(v)
    if total == 0.0:
        return 0.0
    last = values[len(values) - window :]
    num0 = den0 = num1 = den1 = 0.0
    for n in range(window):
        t = n / (window - 1)
        if n == window - 1:
            t = 1.0 - 1e-3 * 0.1  # filter epsilon times control-point spacing
        w0, w1 = 1.0 - t, t  # linear B-spline basis on [0, 1]
        z = last[n] / total
        # Per-point control values phi_c = w_k z / sum_l w_l^2, combined with weights w_k^2.
        phi_c0 = w0 * z / (w0 * w0 + w1 * w1)
        phi_c1 = w1 * z / (w0 * w0 + w1 * w1)
        num0 += w0 * w0 * phi_c0
        den0 += w0 * w0
        num1 += w1 * w1 * phi_c1
        den1 += w1 * w1
    phi0, phi1 = num0 / den0, num1 / den1
    return -(phi1 - phi0)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False), min_size=1, max_size=40),
    window=st.integers(2, 12),
)
def test_monitor_matches_naive_formula(values, window):
    monitor = WindowConvergenceMonitor(window)
    for k, v in enumerate(values):
        got = monitor.add(v)
        expected = naive_convergence_value(values[: k + 1], window)
        if math.isinf(expected):
            assert math.isinf(got)
        else:
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert monitor.n_values == len(values)
    assert monitor.total_energy == pytest.approx(sum(abs(v) for v in values), rel=1e-12)


def test_decreasing_energy_gives_positive_values_shrinking_with_the_slope():
    monitor = WindowConvergenceMonitor(5)
    values = [100.0 * 0.8**k for k in range(30)]
    conv = [monitor.add(v) for v in values]
    assert all(math.isinf(c) for c in conv[:4])
    finite = conv[4:]
    assert all(c > 0 for c in finite)
    assert all(b < a for a, b in zip(finite, finite[1:]))
    # Increasing energy gives a negative value (passes ITK's "<= minimum" test).
    up = WindowConvergenceMonitor(3)
    for v in (1.0, 2.0, 3.0):
        c = up.add(v)
    assert c < 0


def test_total_energy_counts_values_before_the_window_and_reset():
    a = WindowConvergenceMonitor(3)
    for v in (1000.0, 3.0, 2.0, 1.0):
        a.add(v)
    b = WindowConvergenceMonitor(3)
    for v in (3.0, 2.0, 1.0):
        b.add(v)
    # Same window, larger cumulative energy => value scaled by the energy ratio.
    assert a.convergence_value == pytest.approx(b.convergence_value * 6.0 / 1006.0, rel=1e-12)
    a.reset()
    assert a.n_values == 0 and a.total_energy == 0.0 and math.isinf(a.convergence_value)
    zero = WindowConvergenceMonitor(2)
    zero.add(0.0)
    assert zero.add(0.0) == 0.0
    with pytest.raises(InvalidInputError, match="window"):
        WindowConvergenceMonitor(1)


def test_linear_energy_window_value_by_hand():
    # Window 2: t = (0, 1 - 1e-4); a = (1, 1e-4), b = (0, 1 - 1e-4).
    monitor = WindowConvergenceMonitor(2)
    monitor.add(3.0)
    value = monitor.add(1.0)
    z = np.array([3.0, 1.0]) / 4.0
    a = np.array([1.0, 1e-4])
    b = np.array([0.0, 1.0 - 1e-4])
    q = a**2 + b**2
    phi0 = np.sum(a**3 * z / q) / np.sum(a**2)
    phi1 = np.sum(b**3 * z / q) / np.sum(b**2)
    assert value == pytest.approx(phi0 - phi1, rel=1e-14)
    assert value == pytest.approx(0.5, abs=1e-3)  # slope of z from 0.75 to 0.25
