"""The ``regframe`` command line.

Subcommands::

    regframe register FIXED MOVING --transform affine --metric mattes --output out/result
    regframe resample MOVING TRANSFORM.tfm --reference FIXED --output warped.mha
    regframe transform-points TRANSFORM.tfm POINTS.txt [--inverse]
    regframe check-gradient --transform rigid --metric mattes
    regframe demo --output regframe_demo

Global options (before or after the subcommand): ``--quiet`` (no progress,
no summary), ``--verbose`` (more progress detail, tracebacks on errors) and
``--json`` (a machine-readable summary on stdout).  Progress goes to stderr,
results to stdout.  Exit status: 0 success, 1 failure (error or failed
check), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .errors import InvalidInputError, RegframeError

__all__ = ["main", "build_parser"]

_OUTPUT_SUFFIXES = {"transform": ".tfm", "resampled": "_resampled.mha", "qc": "_qc.png"}


# --------------------------------------------------------------------------- helpers
def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas; got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    vals = _floats(text)
    if not vals or any(v != int(v) or v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected integers >= 1 separated by commas (e.g. 4,2,1); got {text!r}")
    return tuple(int(v) for v in vals)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; got {text!r}")
    return v


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


class _Output:
    """Where the command's results go, honouring --quiet and --json."""

    def __init__(self, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> None:
        self.quiet = bool(args.quiet)
        self.json = bool(args.json)
        self.verbose = bool(args.verbose)
        self.stdout = stdout
        self.stderr = stderr

    def info(self, text: str) -> None:
        """Human-readable result text (suppressed by --quiet and --json)."""
        if not self.quiet and not self.json:
            self.stdout.write(text + "\n")

    def summary(self, data: dict[str, Any]) -> None:
        """The --json summary (printed even with --quiet)."""
        if self.json:
            self.stdout.write(json.dumps(_jsonable(data), indent=2) + "\n")

    def reporter(self, n_iterations: int | None = None, n_levels: int | None = None) -> Any:
        from .progress import ProgressReporter

        return ProgressReporter(
            n_iterations, n_levels=n_levels, stream=self.stderr,
            mode="none" if self.quiet else "auto", verbose=self.verbose,
        )


def _read_image(path: str | Path, what: str) -> Any:
    from .io import read_image

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} image '{p}' does not exist.")
    return read_image(p)


def _output_paths(prefix: str | Path) -> dict[str, Path]:
    prefix = Path(prefix)
    if prefix.suffix in (".tfm", ".mha", ".png"):
        prefix = prefix.with_suffix("")
    return {k: prefix.parent / (prefix.name + s) for k, s in _OUTPUT_SUFFIXES.items()}


def _save_resampled(image: Any, moving: Any, path: Path) -> None:
    from .io import write_image

    dtype = moving.dtype
    arr = np.asarray(image.array)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = np.clip(np.rint(arr), info.min, info.max)
    elif dtype == np.bool_:
        arr = arr > 0.5
    write_image(image.with_array(arr.astype(dtype), copy=False), path)


# ------------------------------------------------------------------------- register
def _identity(ndim: int) -> Any:
    from .transforms import TranslationTransform

    return TranslationTransform(ndim)


def _full_resolution_metric(kind: str, fixed: Any, moving: Any, transform: Any, fixed_mask: Any,
                            moving_mask: Any) -> float:
    """Metric value on the full-resolution images (NaN when the images do not overlap)."""
    from .registration.api import make_metric

    try:
        metric = make_metric(kind)
        metric.initialize(fixed, moving, transform.copy(), fixed_mask=fixed_mask, moving_mask=moving_mask)
        return float(metric.value())
    except RegframeError:
        return float("nan")


def _cmd_register(args: argparse.Namespace, out: _Output) -> int:
    from .config import RegistrationConfig, Stage, load_config
    from .registration import resample
    from .transforms.io import read_transform, write_transform

    config: RegistrationConfig | None = None
    if args.config is not None:
        config = load_config(args.config)
        clash = [name for name in ("transform", "metric", "levels", "sigmas", "iterations", "sampling",
                                   "optimizer") if getattr(args, name) is not None]
        if clash:
            raise InvalidInputError(
                f"register: options {['--' + c for c in clash]} cannot be combined with --config; "
                f"set them in the [[stage]] tables of '{args.config}' instead."
            )
    fixed_path = args.fixed if args.fixed is not None else (config.fixed if config else None)
    moving_path = args.moving if args.moving is not None else (config.moving if config else None)
    if fixed_path is None or moving_path is None:
        raise InvalidInputError(
            "register: FIXED and MOVING images are required (as arguments or in the configuration's "
            "[input] table)."
        )
    prefix = args.output if args.output is not None else (config.output if config else None)
    if prefix is None:
        raise InvalidInputError("register: --output PREFIX is required (or [output] prefix in --config).")

    def pick(cli: Any, key: str) -> Any:
        if cli is not None:
            return cli
        return getattr(config, key) if config is not None else None

    fixed = _read_image(fixed_path, "fixed")
    moving = _read_image(moving_path, "moving")
    fm_path, mm_path = pick(args.fixed_mask, "fixed_mask"), pick(args.moving_mask, "moving_mask")
    fixed_mask = _read_image(fm_path, "fixed mask") if fm_path is not None else None
    moving_mask = _read_image(mm_path, "moving mask") if mm_path is not None else None
    it_path = pick(args.initial_transform, "initial_transform")
    initial = read_transform(it_path) if it_path is not None else None

    if config is not None:
        stages = config.stages
    else:
        stages = (
            Stage(
                transform=args.transform or "rigid",
                metric=args.metric or "mattes",
                n_iterations=args.iterations,
                levels=args.levels,
                sigmas=args.sigmas,
                sigmas_in_mm=args.sigmas_in_mm,
                sampling=args.sampling,
                optimizer=args.optimizer,
                initialization=None if args.init == "none" else args.init,
                rotation_search=False if args.no_rotation_search else None,
                seed=args.seed,
            ),
        )
    if not out.quiet:
        out.stderr.write(
            f"regframe register: {Path(moving_path).name} -> {Path(fixed_path).name}: "
            f"{' then '.join(s.transform for s in stages)}, fixed {fixed.ndim}-D size "
            f"{tuple(fixed.size)}\n"
        )
    run = RegistrationConfig(stages=tuple(stages))
    reporter = out.reporter()
    t0 = time.perf_counter()
    results = run.run_stages(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                             initial_transform=initial, callbacks=[reporter])
    reporter.close()
    from .config import combine_results

    result = combine_results(results)
    elapsed = time.perf_counter() - t0

    paths = _output_paths(prefix)
    paths["transform"].parent.mkdir(parents=True, exist_ok=True)
    write_transform(result.transform, paths["transform"])
    default = float(np.min(moving.array)) if args.default_value is None else args.default_value
    after = resample(moving, result.transform, reference=fixed, interpolator=args.interpolator,
                     default_value=default)
    _save_resampled(after, moving, paths["resampled"])
    written = {"transform": paths["transform"], "resampled": paths["resampled"]}
    before_t = initial if initial is not None else _identity(fixed.ndim)
    if not args.no_qc:
        from .qc import registration_report

        before = resample(moving, before_t, reference=fixed, default_value=default)
        registration_report(
            fixed, before, after, paths["qc"],
            values=[h.value for h in result.history], levels=[h.level for h in result.history],
            title=f"regframe register: {' then '.join(s.transform for s in stages)}, "
                  f"{stages[-1].metric}",
        )
        written["qc"] = paths["qc"]
    metric_before = _full_resolution_metric(stages[-1].metric, fixed, moving, before_t, fixed_mask, moving_mask)
    metric_after = _full_resolution_metric(stages[-1].metric, fixed, moving, result.transform, fixed_mask,
                                           moving_mask)
    summary = {
        "command": "register",
        "fixed": str(fixed_path),
        "moving": str(moving_path),
        "stages": [s.transform for s in stages],
        "metric": [s.metric for s in stages],
        "transform_type": result.transform.itk_name,
        "parameters": result.transform.parameters,
        "fixed_parameters": result.transform.fixed_parameters,
        "metric_before": metric_before,
        "metric_after": metric_after,
        "final_value": result.final_value,
        "iterations_per_level": list(result.iterations_per_level),
        "n_iterations": result.n_iterations,
        "stop_reason": result.stop_reason.name,
        "message": result.message,
        "elapsed_seconds": elapsed,
        "outputs": {k: str(v) for k, v in written.items()},
    }
    out.summary(summary)
    out.info(
        f"registered in {elapsed:.1f} s: {result.n_iterations} iterations "
        f"(per level {', '.join(str(n) for n in result.iterations_per_level)}), "
        f"stop: {result.stop_reason.name.lower()}; {stages[-1].metric} at full resolution "
        f"{metric_before:.6g} before -> {metric_after:.6g} after"
    )
    for role, p in written.items():
        out.info(f"  {role:<10} {p}")
    return 0


# ------------------------------------------------------------------------- resample
def _cmd_resample(args: argparse.Namespace, out: _Output) -> int:
    from .registration import resample
    from .transforms.io import read_transform

    moving = _read_image(args.moving, "moving")
    transform = read_transform(args.transform)
    if args.inverse:
        transform = transform.inverse()
    reference = _read_image(args.reference, "reference") if args.reference else moving
    default = float(np.min(moving.array)) if args.default_value is None else args.default_value
    image = resample(moving, transform, reference=reference, interpolator=args.interpolator,
                     default_value=default)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    if args.dtype is not None:
        from .io import write_image

        write_image(image.with_array(np.asarray(image.array).astype(args.dtype), copy=False), args.output)
    else:
        _save_resampled(image, moving, Path(args.output))
    out.summary({"command": "resample", "moving": args.moving, "transform": args.transform,
                 "reference": args.reference, "output": args.output, "size": list(reference.size)})
    out.info(f"wrote {args.output} ({'x'.join(str(s) for s in reference.size)} voxels)")
    return 0


# ------------------------------------------------------------------ transform-points
def read_points(path: str | Path, ndim: int, reference: Any = None) -> np.ndarray:
    """Points from a text file: rows of numbers, or an elastix/transformix point file.

    Elastix files start with ``point`` (physical) or ``index`` (voxel indices,
    converted with ``reference``), then the number of points, then one point
    per line.  Lines starting with ``#`` are ignored; commas count as spaces.
    """
    text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    lines = [ln.split("#", 1)[0].replace(",", " ").strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    kind = "point"
    if lines and lines[0].lower() in ("point", "index"):
        kind = lines[0].lower()
        lines = lines[2:] if len(lines) > 1 and len(lines[1].split()) == 1 else lines[1:]
    try:
        pts = np.array([[float(v) for v in ln.split()] for ln in lines], dtype=np.float64)
    except ValueError as exc:
        raise InvalidInputError(f"transform-points: '{path}' must hold numbers, one point per line: {exc}.") from exc
    if pts.size == 0:
        return np.zeros((0, ndim))
    if pts.ndim != 2 or pts.shape[1] != ndim:
        raise InvalidInputError(
            f"transform-points: expected {ndim} coordinates per line (the transform is {ndim}-D); "
            f"got rows of {pts.shape[1] if pts.ndim == 2 else 'varying'} numbers in '{path}'."
        )
    if kind == "index":
        if reference is None:
            raise InvalidInputError(
                f"transform-points: '{path}' holds voxel indices; pass --reference IMAGE (the image "
                "they index) to convert them to physical points."
            )
        pts = reference.index_to_physical(pts)
    return pts


def _cmd_transform_points(args: argparse.Namespace, out: _Output) -> int:
    from .transforms.io import read_transform

    transform = read_transform(args.transform)
    if args.inverse:
        transform = transform.inverse()
    reference = _read_image(args.reference, "reference") if args.reference else None
    if args.points is None and not args.point:
        raise InvalidInputError("transform-points: give a POINTS file (or '-' for stdin) or --point x,y[,z].")
    pts = [read_points(args.points, transform.ndim, reference)] if args.points is not None else []
    for p in args.point or ():
        if len(p) != transform.ndim:
            raise InvalidInputError(
                f"transform-points: --point needs {transform.ndim} coordinates; got {len(p)}."
            )
        pts.append(np.asarray(p, dtype=np.float64)[None, :])
    points = np.concatenate(pts, axis=0)
    mapped = transform.transform_points(points) if points.size else points
    text = "\n".join(" ".join(f"{v:.10g}" for v in row) for row in mapped)
    if args.output:
        Path(args.output).write_text(text + ("\n" if text else ""))
        out.info(f"wrote {len(mapped)} points to {args.output}")
    elif not out.json:
        out.stdout.write(text + ("\n" if text else ""))
    out.summary({"command": "transform-points", "transform": args.transform, "inverse": args.inverse,
                 "input": points, "points": mapped})
    return 0


# -------------------------------------------------------------------- check-gradient
def _make_any_transform(name: str, ndim: int) -> Any:
    from .registration.api import TRANSFORM_KINDS, make_transform
    from .transforms.registry import create_transform

    if name in TRANSFORM_KINDS:
        return make_transform(name, ndim)
    return create_transform(name, ndim)


def _class_ndim(name: str, requested: int | None) -> int:
    """Dimension for check-gradient: the requested one, else 2 unless the class is 3-D only."""
    if requested is not None:
        return requested
    from .transforms.registry import transform_entry

    try:
        dims = transform_entry(name).dims
    except RegframeError:
        return 2
    return 2 if 2 in dims else int(min(dims))


def _cmd_check_gradient(args: argparse.Namespace, out: _Output) -> int:
    from .datasets import brain_pair
    from .registration.api import make_metric
    from .testing import check_transform
    from .testing.metric_checks import check_metric

    rng = np.random.default_rng(args.seed)
    if args.fixed or args.moving:
        if not (args.fixed and args.moving):
            raise InvalidInputError("check-gradient: give both --fixed and --moving, or neither (phantoms).")
        fixed, moving = _read_image(args.fixed, "fixed"), _read_image(args.moving, "moving")
    else:
        ndim = _class_ndim(args.transform, args.ndim)
        fixed, moving = brain_pair(ndim, args.size, multimodal=args.metric == "mattes", seed=args.seed)
    transform = _make_any_transform(args.transform, fixed.ndim)
    fp = transform.fixed_parameters
    if fp.size >= fixed.ndim and transform.is_linear:
        fp[: fixed.ndim] = fixed.physical_center()
        transform.fixed_parameters = fp
    # a small, seeded perturbation away from the identity (derivatives at the identity are special)
    p = transform.parameters
    step = rng.normal(scale=1.0, size=p.size)
    from .testing.metric_checks import physical_shift_steps

    pts = fixed.voxel_points()[:: max(1, fixed.n_voxels // 500)]
    scale = physical_shift_steps(transform, pts, 1.0)  # parameter change moving points ~1 mm
    transform.update_parameters(step * scale * args.perturbation)

    if args.metric is None:
        report = check_transform(transform, pts[:: max(1, pts.shape[0] // 20)], rtol=args.rtol,
                                 raise_on_failure=False, seed=args.seed)
        out.info(str(report))
        out.summary({"command": "check-gradient", "kind": "transform", "transform": transform.itk_name,
                     "passed": report.passed, "jacobian_error": report.jacobian_error,
                     "vjp_error": report.vjp_error, "position_error": report.position_error,
                     "inverse_error": report.inverse_error, "failures": report.failures})
        return 0 if report.passed else 1
    metric = make_metric(args.metric)
    metric.initialize(fixed, moving, transform, interpolator=args.interpolator)
    report = check_metric(metric, rtol=args.rtol, seed=args.seed)
    out.info(str(report))
    out.summary({"command": "check-gradient", "kind": "metric", "metric": args.metric,
                 "transform": transform.itk_name, "interpolator": args.interpolator,
                 "passed": report.passed, "value": report.value,
                 "max_relative_error": report.max_relative_error,
                 "direction_error": report.direction_error,
                 "analytic": report.analytic, "numeric": report.numeric,
                 "relative_errors": report.relative_errors, "failures": report.failures})
    return 0 if report.passed else 1


# ----------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace, out: _Output) -> int:
    from dataclasses import asdict

    from .demo import format_summary, run_demo

    reporter = out.reporter(args.iterations)
    t0 = time.perf_counter()
    cases = run_demo(args.output, n_iterations=args.iterations, cases=args.cases,
                     callbacks=[reporter], pictures=not args.no_pictures, stream=None)
    elapsed = time.perf_counter() - t0
    out.summary({"command": "demo", "output": args.output, "elapsed_seconds": elapsed,
                 "cases": [asdict(c) for c in cases]})
    out.info(format_summary(cases))
    out.info(f"finished in {elapsed:.1f} s; images, .tfm transforms and QC pictures in "
             f"{Path(args.output).resolve()}")
    return 0


# --------------------------------------------------------------------------- parser
def _add_common(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else False
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", default=d, help="no progress and no summary")
    g.add_argument("-v", "--verbose", action="store_true", default=d,
                   help="more progress detail; tracebacks on errors")
    p.add_argument("--json", action="store_true", default=d, help="print a machine-readable JSON summary")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``regframe`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="regframe",
        description="ITK-style image registration: register, resample, map points, check derivatives.",
        epilog="Run 'regframe demo' for a tour on built-in phantoms; 'regframe COMMAND -h' for help.",
    )
    parser.add_argument("--version", action="version", version=f"regframe {__version__}")
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("register", help="register MOVING to FIXED; write transform, image, QC picture",
                       description="Register MOVING to FIXED. Writes PREFIX.tfm (maps fixed to moving "
                                   "points), PREFIX_resampled.mha (moving on the fixed grid) and "
                                   "PREFIX_qc.png (checkerboards/overlays before and after, metric curve).")
    r.add_argument("fixed", nargs="?", help="fixed image (any format SimpleITK reads)")
    r.add_argument("moving", nargs="?", help="moving image")
    r.add_argument("-t", "--transform", default=None,
                   help="translation, rigid, similarity, affine or bspline (affine, then a B-spline "
                        "deformation); default rigid")
    r.add_argument("-m", "--metric", default=None, help="mattes (default), mse or ncc")
    r.add_argument("--fixed-mask", default=None, help="binary mask in the fixed image's space")
    r.add_argument("--moving-mask", default=None, help="binary mask in the moving image's space")
    r.add_argument("--initial-transform", default=None, help=".tfm applied first (moving-initial transform)")
    r.add_argument("--levels", type=_ints, default=None, help="shrink factors, coarse to fine, e.g. 4,2,1")
    r.add_argument("--sigmas", type=_floats, default=None, help="smoothing sigmas per level, e.g. 2,1,0")
    r.add_argument("--sigmas-in-mm", action="store_true", help="sigmas in mm instead of voxels")
    r.add_argument("--iterations", type=int, default=None, help="maximum iterations per level (default 200; 50 for bspline)")
    r.add_argument("--sampling", type=_fraction, default=None, help="fraction of voxels sampled (seeded)")
    r.add_argument("--optimizer", default=None,
                   help="lbfgs (default of linear stages), lbfgsb (default of bspline), regular_step "
                        "(linear) or gradient_descent (bspline)")
    r.add_argument("--init", default="moments", choices=("moments", "geometry", "none"),
                   help="how the first stage is centred (default moments)")
    r.add_argument("--no-rotation-search", action="store_true", help="skip the coarse rotation search")
    r.add_argument("--seed", type=int, default=0, help="seed of the random sampling")
    r.add_argument("-c", "--config", default=None, help="TOML file with [[stage]] tables (multi-stage)")
    r.add_argument("-o", "--output", default=None, help="output prefix, e.g. out/result")
    r.add_argument("--interpolator", default="linear", choices=("linear", "bspline", "nearest"),
                   help="interpolator of the resampled output")
    r.add_argument("--default-value", type=float, default=None,
                   help="value outside the moving image (default: its minimum)")
    r.add_argument("--no-qc", action="store_true", help="do not write the QC picture")
    _add_common(r, suppress=True)
    r.set_defaults(func=_cmd_register)

    s = sub.add_parser("resample", help="resample an image through a transform file",
                       description="Output voxel x gets MOVING(T(x)) (ITK's pull-back convention): "
                                   "with a registration result, this aligns MOVING with the reference.")
    s.add_argument("moving", help="image to resample")
    s.add_argument("transform", help=".tfm/.txt/.h5 transform mapping reference points to moving points")
    s.add_argument("-r", "--reference", default=None, help="output grid (default: the moving image's)")
    s.add_argument("-o", "--output", required=True, help="output image file")
    s.add_argument("--interpolator", default="linear", choices=("linear", "bspline", "nearest"))
    s.add_argument("--default-value", type=float, default=None, help="value outside (default: minimum)")
    s.add_argument("--dtype", default=None, help="output pixel type, e.g. float32 (default: the input's)")
    s.add_argument("--inverse", action="store_true", help="use the inverse of the transform")
    _add_common(s, suppress=True)
    s.set_defaults(func=_cmd_resample)

    tp = sub.add_parser("transform-points", help="map physical points through a transform file",
                        description="Map fixed-space points to moving space (the direction of a "
                                    "registration result); --inverse maps moving to fixed.")
    tp.add_argument("transform", help="transform file")
    tp.add_argument("points", nargs="?", default=None,
                    help="text file: one point per line, or an elastix point file ('point'/'index' header); "
                         "'-' reads stdin")
    tp.add_argument("-p", "--point", type=_floats, action="append", help="a point x,y[,z] (repeatable)")
    tp.add_argument("-r", "--reference", default=None, help="image whose voxel indices an 'index' file uses")
    tp.add_argument("--inverse", action="store_true", help="map through the inverse transform")
    tp.add_argument("-o", "--output", default=None, help="write the mapped points here instead of stdout")
    _add_common(tp, suppress=True)
    tp.set_defaults(func=_cmd_transform_points)

    cg = sub.add_parser("check-gradient", help="verify a transform's or metric's derivatives",
                        description="Compare analytic derivatives with central differences and print the "
                                    "error table. Without --metric the transform's Jacobians are checked; "
                                    "with --metric the metric gradient (on phantoms unless --fixed/--moving).")
    cg.add_argument("-t", "--transform", default="rigid",
                    help="kind (translation, rigid, similarity, affine) or ITK class name (Euler3DTransform)")
    cg.add_argument("-m", "--metric", default=None, help="mse, ncc or mattes")
    cg.add_argument("--ndim", type=int, default=None, choices=(2, 3),
                    help="dimension of the phantoms (default 2, or 3 for 3-D-only transforms)")
    cg.add_argument("--size", type=int, default=48, help="phantom size along x")
    cg.add_argument("--fixed", default=None)
    cg.add_argument("--moving", default=None)
    cg.add_argument("--interpolator", default="bspline", choices=("linear", "bspline"),
                    help="moving interpolator (bspline: smooth, so differences are derivatives)")
    cg.add_argument("--perturbation", type=float, default=0.5,
                    help="size of the random parameter perturbation, in mm of point motion")
    cg.add_argument("--rtol", type=float, default=1e-5, help="tolerance on relative errors")
    cg.add_argument("--seed", type=int, default=0)
    _add_common(cg, suppress=True)
    cg.set_defaults(func=_cmd_check_gradient)

    dm = sub.add_parser("demo", help="the whole pipeline on built-in phantoms (no data needed)",
                        description="Register 2-D (mono- and multi-modal) and 3-D phantoms moved by known "
                                    "transforms; write images, .tfm transforms and QC pictures into a "
                                    "folder and print the recovered errors.")
    dm.add_argument("-o", "--output", default="regframe_demo", help="output folder (default regframe_demo)")
    dm.add_argument("--iterations", type=int, default=100, help="maximum iterations per level")
    dm.add_argument("--cases", nargs="+", default=None,
                    choices=("2d_rigid_mono", "2d_rigid_multimodal", "3d_affine"))
    dm.add_argument("--no-pictures", action="store_true", help="skip the PNG pictures")
    _add_common(dm, suppress=True)
    dm.set_defaults(func=_cmd_demo)

    from .commands import batch as batch_command, stacks as stacks_command  # command modules

    for command in (stacks_command, batch_command):
        cp = command.add_parser(sub)
        _add_common(cp, suppress=True)
        cp.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage)."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    out = _Output(args, stdout, stderr)
    try:
        return int(args.func(args, out))
    except (RegframeError, FileNotFoundError, ValueError, OSError) as exc:
        if out.verbose:
            traceback.print_exc(file=stderr)
        kind = "" if isinstance(exc, RegframeError) else f"{type(exc).__name__}: "
        stderr.write(f"regframe {args.command}: error: {kind}{exc}\n")
        if out.json:
            stdout.write(json.dumps({"command": args.command, "error": f"{kind}{exc}"}) + "\n")
        return 1
    except KeyboardInterrupt:  # pragma: no cover - interactive
        stderr.write("regframe: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
