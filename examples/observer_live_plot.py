"""An observer: a callback that watches every iteration and keeps a live plot.

Any callable ``callback(state) -> bool | None`` can observe a registration;
``state`` is a frozen :class:`regframe.registration.RegistrationState`
(level, iteration, metric value, gradient norm, parameters).  Returning True
stops the run.  This observer redraws a matplotlib figure of the metric per
level every few iterations - with the Agg backend it writes the figure to a
PNG, so it also works on a headless machine (open the PNG while the run goes
on; with an interactive backend call ``plt.pause`` instead of ``savefig``).

Run: ``python examples/observer_live_plot.py [output_dir]``
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import regframe as rf  # noqa: E402
from regframe.datasets import brain_pair  # noqa: E402
from regframe.registration import RegistrationState, register, resample  # noqa: E402


class LivePlot:
    """Record metric values per level and redraw the plot every ``every`` iterations."""

    def __init__(self, path: str | Path, every: int = 5) -> None:
        self.path = Path(path)
        self.every = every
        self.values: dict[int, list[float]] = {}
        self.n_calls = 0
        self.n_draws = 0
        self.fig, self.ax = plt.subplots(figsize=(5, 3.5))

    def __call__(self, state: RegistrationState) -> bool:
        self.values.setdefault(state.level, []).append(state.value)
        self.n_calls += 1
        if self.n_calls % self.every == 0:
            self.draw()
        return False  # True would stop the registration

    def draw(self) -> None:
        self.ax.clear()
        start = 0
        for level, vals in sorted(self.values.items()):
            self.ax.plot(np.arange(start, start + len(vals)), vals, label=f"level {level}")
            start += len(vals)
        self.ax.set_xlabel("iteration")
        self.ax.set_ylabel("metric value")
        self.ax.legend()
        self.fig.tight_layout()
        self.fig.savefig(self.path, dpi=80)
        self.n_draws += 1

    def close(self) -> None:
        self.draw()
        plt.close(self.fig)


def main(n_iterations: int = 60, output_dir: str | Path = ".", size: int = 80) -> LivePlot:
    fixed, base = brain_pair(ndim=2, size=size)
    truth = rf.Euler2DTransform()
    truth.fixed_parameters = fixed.physical_center()
    truth.parameters = [np.deg2rad(-10.0), -5.0, 3.0]
    moving = resample(base, truth.inverse(), reference=base, interpolator="bspline")

    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    observer = LivePlot(out_dir / "observer_live_plot.png", every=5)
    result = register(fixed, moving, "rigid", "mse", n_iterations=n_iterations, callbacks=[observer])
    observer.close()
    print(f"{observer.n_calls} iterations observed, plot redrawn {observer.n_draws} times: {observer.path}")
    print(f"final metric {result.final_value:.5g}, stop reason {result.stop_reason.name}")
    return observer


if __name__ == "__main__":
    main(output_dir=sys.argv[1] if len(sys.argv) > 1 else ".")
