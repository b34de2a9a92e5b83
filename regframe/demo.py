"""The whole pipeline on built-in phantoms, with known ground truth.

``regframe demo`` (or :func:`run_demo`) needs no data files: it generates head
phantoms in code (:mod:`regframe.datasets`), moves them by known transforms,
registers them back and measures the error of the recovered mapping in mm.
Three cases:

* ``2d_rigid_mono``: 2-D, same contrast, rigid, mean squares;
* ``2d_rigid_multimodal``: 2-D, T1-like fixed against PD-like moving (a
  non-monotonic intensity relation), rigid, Mattes mutual information;
* ``3d_affine``: 3-D, affine (rigid then affine stages), mean squares.

For each case the output folder receives ``<case>_fixed.mha``,
``<case>_moving.mha``, ``<case>_resampled.mha`` (moving image resampled onto
the fixed grid through the result), ``<case>_result.tfm``,
``<case>_truth.tfm`` (the exact answer) and ``<case>_qc.png``
(checkerboards and overlays before/after and the metric per iteration), plus
``summary.json``.

The ground truth ``G`` maps fixed points to moving points
(``moving(G(x)) = fixed(x)``), the same direction as a registration result,
so the error at a fixed voxel ``x`` is ``|T(x) - G(x)|``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from .datasets import brain_pair
from .image import Image
from .registration import make_metric, register, resample
from .registration.method import RegistrationState
from .transforms import AffineTransform, Euler2DTransform, Transform

__all__ = ["DemoCase", "run_demo", "mapping_error", "format_summary"]


@dataclass(frozen=True)
class DemoCase:
    """Outcome of one demo registration.

    Attributes
    ----------
    name : str
    ndim : int
    transform : str
        Kind registered (``"rigid"``, ``"affine"``).
    metric : str
    iterations : int
        Total optimizer iterations over all stages and levels.
    seconds : float
        Wall time of the registration.
    initial_error_mm, mean_error_mm, max_error_mm : float
        Mean displacement error before registration (identity) and the mean
        and maximum error of the result, over the fixed image's voxels inside
        the head.
    files : dict
        Written files by role.
    """

    name: str
    ndim: int
    transform: str
    metric: str
    iterations: int
    seconds: float
    initial_error_mm: float
    mean_error_mm: float
    max_error_mm: float
    files: dict[str, str]


def mapping_error(result: Transform, truth: Transform, points: np.ndarray) -> np.ndarray:
    """``|result(x) - truth(x)|`` at each point (mm)."""
    return np.linalg.norm(result.transform_points(points) - truth.transform_points(points), axis=1)


def _truth(ndim: int, fixed: Image) -> tuple[Transform, str, str]:
    if ndim == 2:
        # rigid: 12 degrees about the image centre, translation (7, -5) mm (ITK order x, y)
        g = Euler2DTransform()
        g.fixed_parameters = fixed.physical_center()
        g.parameters = [np.deg2rad(12.0), 7.0, -5.0]
        return g, "rigid", "mse"
    g3 = AffineTransform(3)
    g3.fixed_parameters = fixed.physical_center()
    a = np.array([[1.06, 0.05, -0.03], [-0.06, 0.97, 0.04], [0.02, -0.05, 1.03]])
    g3.parameters = np.concatenate([a.ravel(), [4.0, -3.0, 2.5]])
    return g3, "affine", "mse"


def _save(image: Image, path: Path, like: Image | None = None) -> str:
    from .io import write_image

    out = image
    if like is not None and np.issubdtype(like.dtype, np.floating):
        out = image.with_array(np.asarray(image.array, dtype=np.float32), copy=False)
    write_image(out, path)
    return str(path)


def _run_case(
    name: str,
    ndim: int,
    size: int,
    multimodal: bool,
    out: Path,
    *,
    n_iterations: int,
    callbacks: Sequence[Callable[[RegistrationState], Any]],
    pictures: bool,
) -> DemoCase:
    from .transforms.io import write_transform

    fixed, base = brain_pair(ndim, size, multimodal=multimodal, seed=3)
    truth, kind, metric = _truth(ndim, fixed)
    if multimodal:
        metric = "mattes"
    # moving(y) = base(G^-1(y)), so that moving(G(x)) = base(x) = fixed anatomy
    moving = resample(base, truth.inverse(), reference=base, interpolator="bspline", dtype=np.float32)
    t0 = time.perf_counter()
    result = register(fixed, moving, kind, make_metric(metric), n_iterations=n_iterations,
                      callbacks=callbacks)
    seconds = time.perf_counter() - t0

    head = np.asarray(fixed.array).ravel() > 0.15 * float(np.max(fixed.array))
    points = fixed.voxel_points()[head]
    err = mapping_error(result.transform, truth, points)
    initial = float(np.mean(np.linalg.norm(truth.transform_points(points) - points, axis=1)))

    after = resample(moving, result.transform, reference=fixed)
    files = {
        "fixed": _save(fixed, out / f"{name}_fixed.mha", fixed),
        "moving": _save(moving, out / f"{name}_moving.mha", moving),
        "resampled": _save(after, out / f"{name}_resampled.mha", moving),
        "transform": str(out / f"{name}_result.tfm"),
        "truth": str(out / f"{name}_truth.tfm"),
    }
    write_transform(result.transform, files["transform"])
    write_transform(truth, files["truth"])
    if pictures:
        from .qc import registration_report

        before = resample(moving, Euler2DTransform() if ndim == 2 else AffineTransform(3), reference=fixed)
        files["qc"] = str(out / f"{name}_qc.png")
        with atomic_path(files["qc"], where="run_demo()") as tmp:
            registration_report(
                fixed, before, after, tmp,
                values=[h.value for h in result.history], levels=[h.level for h in result.history],
                title=f"regframe demo: {name} ({kind}, {metric}); mean error {np.mean(err):.2f} mm",
            )
    return DemoCase(
        name=name, ndim=ndim, transform=kind, metric=metric, iterations=result.n_iterations,
        seconds=round(seconds, 3), initial_error_mm=initial, mean_error_mm=float(np.mean(err)),
        max_error_mm=float(np.max(err)), files=files,
    )


def format_summary(cases: Sequence[DemoCase]) -> str:
    """A short text table of the demo cases."""
    lines = [
        f"{'case':<22} {'kind':<7} {'metric':<7} {'iters':>5} {'time s':>7} "
        f"{'error before':>13} {'mean error':>11} {'max error':>10}"
    ]
    for c in cases:
        lines.append(
            f"{c.name:<22} {c.transform:<7} {c.metric:<7} {c.iterations:>5} {c.seconds:>7.3f} "
            f"{c.initial_error_mm:>10.2f} mm {c.mean_error_mm:>8.3f} mm {c.max_error_mm:>7.3f} mm"
        )
    return "\n".join(lines)


def run_demo(
    output_dir: str | os.PathLike[str] = "regframe_demo",
    *,
    size_2d: int = 96,
    size_3d: int = 40,
    n_iterations: int = 100,
    cases: Sequence[str] | None = None,
    callbacks: Sequence[Callable[[RegistrationState], Any]] = (),
    pictures: bool = True,
    stream: TextIO | None = None,
) -> list[DemoCase]:
    """Run the demo; returns one :class:`DemoCase` per registration.

    Parameters
    ----------
    output_dir : path-like
        Folder for images, transforms and pictures (created if needed).
    size_2d, size_3d : int
        Phantom sizes along x (small by default so that the whole demo takes
        well under a minute, including numba's first compilation).
    n_iterations : int
        Maximum iterations per level.
    cases : sequence of str, optional
        Subset of ``("2d_rigid_mono", "2d_rigid_multimodal", "3d_affine")``.
    callbacks : sequence of callables
        Registration callbacks, e.g. a :class:`regframe.progress.ProgressReporter`.
    pictures : bool
        Write the QC PNGs (needs matplotlib).
    stream : text stream, optional
        Where to print the summary table; ``None`` prints nothing.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = {
        "2d_rigid_mono": (2, size_2d, False),
        "2d_rigid_multimodal": (2, size_2d, True),
        "3d_affine": (3, size_3d, False),
    }
    chosen = list(table) if cases is None else list(cases)
    bad = [c for c in chosen if c not in table]
    if bad:
        from .errors import InvalidInputError

        raise InvalidInputError(f"run_demo(): 'cases' must be among {list(table)}; got {bad}.")
    results = []
    for name in chosen:
        ndim, size, mm = table[name]
        for cb in callbacks:
            start = getattr(cb, "start_stage", None)
            if start is not None:
                start(name)
        results.append(_run_case(name, ndim, size, mm, out, n_iterations=n_iterations,
                                 callbacks=callbacks, pictures=pictures))
    for cb in callbacks:
        if hasattr(cb, "start_stage") and hasattr(cb, "close"):
            cb.close()
    atomic_write_text(out / "summary.json", json.dumps([asdict(c) for c in results], indent=2) + "\n",
                      where="run_demo()")
    if stream is not None:
        stream.write(format_summary(results) + "\n")
        stream.write(f"outputs in {out.resolve()}\n")
    return results


def main() -> None:  # pragma: no cover - convenience entry point
    """``python -m regframe.demo``."""
    run_demo(stream=sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    main()
