"""Writing your own metric in pure Python, in the two extension tiers.

1. ``HuberDifference`` - a :class:`~regframe.metrics.PointwiseMetric`: only the
   per-sample cost ``c(f, m)`` and its derivative with respect to the moving
   intensity.  Sampling, masks, interpolation, the chain rule through the
   transform (``jacobian_vjp``), pyramids and optimizers all come for free.
2. ``CorrelationRatio`` - a general :class:`~regframe.metrics.ImageMetric`:
   ``accumulate`` computes statistics of all valid samples, ``finalize`` turns
   them into the value and the per-sample weights ``u_s = d value / d m_s``.

Both are checked against central differences with
:func:`regframe.testing.metric_checks.check_metric`, exactly as the built-in
metrics are.  Run::

    python examples/custom_metric.py
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from regframe import AffineTransform, Image
from regframe.metrics import ImageMetric, PointwiseMetric, SampleBatch
from regframe.testing.metric_checks import check_metric


class HuberDifference(PointwiseMetric):
    """Mean Huber loss of the intensity difference ``r = m - f`` (robust to outliers).

    ``c(r) = r^2 / 2`` for ``|r| <= delta``, ``delta (|r| - delta / 2)`` beyond.
    """

    def __init__(self, delta: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delta = float(delta)

    def pointwise_value(self, fixed_values: NDArray[np.float64], moving_values: NDArray[np.float64]) -> NDArray[np.float64]:
        r = np.abs(moving_values - fixed_values)
        return np.where(r <= self.delta, 0.5 * r * r, self.delta * (r - 0.5 * self.delta))

    def pointwise_derivative(self, fixed_values: NDArray[np.float64], moving_values: NDArray[np.float64]) -> NDArray[np.float64]:
        r = moving_values - fixed_values
        return np.clip(r, -self.delta, self.delta)


class CorrelationRatio(ImageMetric):
    """``value = 1 - eta^2 = W / V``: within-fixed-bin variance of ``m`` over its total variance.

    Fixed intensities are put into ``n_bins`` equal-width bins once (in
    :meth:`on_initialize`); ``W = (1/N) sum_s (m_s - mean_{bin(s)} m)^2``,
    ``V = (1/N) sum_s (m_s - mean m)^2``.  Minimised (0 when ``m`` is a
    function of ``f``).  Per-sample weight:
    ``d value / d m_s = (2/N) ((m_s - mean_bin) - value (m_s - mean)) / V``.
    """

    requires_variation = True

    def __init__(self, n_bins: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_bins = int(n_bins)

    def on_initialize(self) -> None:
        f = self.fixed_values
        lo, hi = float(f.min()), float(f.max())
        self._bins = np.minimum(((f - lo) / (hi - lo) * self.n_bins).astype(np.int64), self.n_bins - 1)

    def accumulate(self, batch: SampleBatch) -> dict[str, NDArray[np.float64]]:
        bins = self._bins[batch.indices]
        m = batch.moving_values
        count = np.bincount(bins, minlength=self.n_bins).astype(np.float64)
        total = np.bincount(bins, weights=m, minlength=self.n_bins)
        bin_mean = np.divide(total, count, out=np.zeros(self.n_bins), where=count > 0)
        return {"bins": bins, "bin_mean": bin_mean, "mean": np.array(np.mean(m))}

    def finalize(self, stats: dict[str, NDArray[np.float64]], batch: SampleBatch, *, with_gradient: bool):
        m = batch.moving_values
        n = batch.n_valid
        within = m - stats["bin_mean"][stats["bins"]]
        centred = m - float(stats["mean"])
        variance = float(centred @ centred) / n
        value = float(within @ within) / n / variance
        if not with_gradient:
            return value, None
        return value, (2.0 / n) * (within - value * centred) / variance


def _smooth(shape: tuple[int, ...], seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    out = np.zeros(shape)
    for _ in range(4):
        c = [rng.uniform(0.25 * s, 0.75 * s) for s in shape]
        w = [rng.uniform(0.15 * s, 0.3 * s) for s in shape]
        out += rng.uniform(50, 150) * np.exp(-sum(((g - ci) / wi) ** 2 for g, ci, wi in zip(grids, c, w)))
    return out


def main() -> dict[str, float]:
    """Build a small 2-D pair, evaluate both metrics and check their gradients."""
    fixed = Image(_smooth((48, 56), 1), spacing=(1.0, 1.2))
    # A different "modality": a non-linear intensity map of a slightly shifted copy.
    moving_arr = _smooth((48, 56), 1)
    moving = Image(np.sqrt(np.roll(moving_arr, 2, axis=1) + 1.0) * 10.0, spacing=(1.0, 1.2))
    transform = AffineTransform(2)
    transform.center = fixed.physical_center()
    transform.parameters = [1.02, 0.01, -0.02, 0.98, 0.5, -0.3]
    errors = {}
    for metric in (HuberDifference(delta=5.0), CorrelationRatio(n_bins=24)):
        metric.initialize(fixed, moving, transform, interpolator="bspline")
        value, gradient = metric.value_and_gradient()
        report = check_metric(metric, step=1e-4)
        errors[type(metric).__name__] = report.max_relative_error
        print(f"{type(metric).__name__:18s} value {value:.6g}  |gradient| {np.linalg.norm(gradient):.4g}  "
              f"max rel. error vs central differences {report.max_relative_error:.1e}")
    return errors


if __name__ == "__main__":
    main()
