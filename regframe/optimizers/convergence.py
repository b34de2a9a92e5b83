"""ITK's windowed convergence monitor (``WindowConvergenceMonitoringFunction``)."""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_positive_int

__all__ = ["WindowConvergenceMonitor"]

#: ITK moves the last abscissa to ``1 - epsilon * spacing`` (filter epsilon
#: 1e-3 times the B-spline control-point spacing 0.1).
_LAST_POINT_SHIFT = 1e-4


class WindowConvergenceMonitor:
    """Convergence value of the last ``window`` cost values, as ITK v4 computes it.

    Parameters
    ----------
    window : int
        Number of most recent values fitted (ITK default 50; >= 2).

    Notes
    -----
    Values ``E_1, E_2, ...`` are appended once per iteration.  Until ``window``
    values exist the convergence value is ``inf`` (ITK: ``DBL_MAX``).  Then,
    with the total energy ``S = sum_i |E_i|`` over *all* values added so far
    (not only the window), the last ``W`` values are normalised,
    ``z_n = E_n / S``, placed at ``t_n = n / (W - 1)`` (the last one at
    ``1 - 1e-4``), and a linear B-spline with two control points is fitted by
    the Lee-Wolberg-Shin scattered-data approximation.  With ``a_n = 1 - t_n``,
    ``b_n = t_n`` and ``q_n = a_n^2 + b_n^2``::

        phi0 = sum(a_n^3 z_n / q_n) / sum(a_n^2)
        phi1 = sum(b_n^3 z_n / q_n) / sum(b_n^2)
        convergence_value = phi0 - phi1          (minus the fitted slope)

    This is the double-precision formula; ITK evaluates the weights in float32
    and agrees to about 1e-7 relative.  A decreasing cost gives a positive
    value that shrinks as the cost flattens; an increasing cost gives a
    negative value (which also passes ITK's ``<= minimum`` test).  If ``S`` is
    zero the value is 0.
    """

    def __init__(self, window: int = 50) -> None:
        self._window = check_positive_int(window, where="WindowConvergenceMonitor()", name="window", minimum=2)
        t = np.arange(self._window, dtype=np.float64) / (self._window - 1)
        t[-1] = 1.0 - _LAST_POINT_SHIFT
        a = 1.0 - t
        b = t
        q = a * a + b * b
        self._w0 = a**3 / q / np.sum(a * a)
        self._w1 = b**3 / q / np.sum(b * b)
        self._values: list[float] = []
        self._total_energy = 0.0

    @property
    def window(self) -> int:
        """Window size."""
        return self._window

    @property
    def total_energy(self) -> float:
        """``sum |E_i|`` of every value added since construction or :meth:`reset`."""
        return self._total_energy

    @property
    def n_values(self) -> int:
        """Number of values added so far."""
        return len(self._values)

    def reset(self) -> None:
        """Forget every value (ITK: a new monitor per ``StartOptimization``)."""
        self._values.clear()
        self._total_energy = 0.0

    def add(self, value: float) -> float:
        """Append a cost value and return the new convergence value."""
        v = float(value)
        self._values.append(v)
        self._total_energy += abs(v)
        return self.convergence_value

    @property
    def convergence_value(self) -> float:
        """Current convergence value (``inf`` until ``window`` values were added)."""
        if len(self._values) < self._window:
            return math.inf
        if self._total_energy == 0.0:
            return 0.0
        z = np.asarray(self._values[-self._window :], dtype=np.float64) / self._total_energy
        return float(np.dot(self._w0, z) - np.dot(self._w1, z))
