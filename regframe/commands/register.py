"""``regframe register``: register MOVING to FIXED; write transform, image and QC picture."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, NonFiniteError, RegframeError
from ..image import check_image
from ._common import Output, floats, fraction, ints, make_parent, pixel_type, read_image_arg, save_resampled

ORDER = 10

_OUTPUT_SUFFIXES = {"transform": ".tfm", "inverse": "_inverse.tfm", "resampled": "_resampled.mha", "qc": "_qc.png"}


def output_paths(prefix: str | Path) -> dict[str, Path]:
    """The files written for output prefix ``prefix``."""
    prefix = Path(prefix)
    if prefix.suffix in (".tfm", ".mha", ".png"):
        prefix = prefix.with_suffix("")
    return {k: prefix.parent / (prefix.name + s) for k, s in _OUTPUT_SUFFIXES.items()}


def _identity(ndim: int) -> Any:
    from ..transforms import TranslationTransform

    return TranslationTransform(ndim)


#: Largest number of voxels the full-resolution metric summary samples (seeded, random).
SUMMARY_SAMPLES = 200_000

_KINDS = (("Translation", "translation"), ("Euler", "rigid"), ("VersorRigid", "rigid"),
          ("Similarity", "similarity"), ("ScaleSkewVersor", "affine"), ("Affine", "affine"),
          ("BSpline", "bspline"), ("DisplacementField", "displacement"))


def _kind(itk_name: str) -> str:
    return next((kind for prefix, kind in _KINDS if itk_name.startswith(prefix)), itk_name)


def _links(transform: Any) -> list[Any]:
    """The leaf transforms of ``transform`` in the order they were added (applied last to first)."""
    from ..transforms import CompositeTransform

    if isinstance(transform, CompositeTransform):
        return [leaf for t in transform.transforms for leaf in _links(t)]
    return [transform]


def _full_resolution_metric(kind: str, fixed: Any, moving: Any, transforms: Sequence[Any], fixed_mask: Any,
                            moving_mask: Any, seed: int) -> list[float]:
    """The data metric on the full-resolution images at each transform (NaN without overlap).

    At most :data:`SUMMARY_SAMPLES` fixed voxels (a seeded random subset, the
    same for every transform) are used, so memory stays bounded on large
    volumes; the B-spline regularization is not included.
    """
    from ..metrics import FullSampler, RandomSampler
    from ..registration.api import make_metric

    n = fixed.n_voxels
    sampler = FullSampler() if n <= SUMMARY_SAMPLES else RandomSampler(SUMMARY_SAMPLES / n, seed=seed)
    values = []
    for transform in transforms:
        try:
            metric = make_metric(kind)
            metric.initialize(fixed, moving, transform.copy(), sampler=sampler, fixed_mask=fixed_mask,
                              moving_mask=moving_mask)
            values.append(float(metric.value()))
        except RegframeError:
            values.append(float("nan"))
    return values


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``register`` subparser."""
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
    r.add_argument("--levels", type=ints, default=None, help="shrink factors, coarse to fine, e.g. 4,2,1")
    r.add_argument("--sigmas", type=floats, default=None, help="smoothing sigmas per level, e.g. 2,1,0")
    r.add_argument("--sigmas-in-mm", action="store_true", help="sigmas in mm instead of voxels")
    r.add_argument("--iterations", type=int, default=None,
                   help="maximum iterations per level (default 200; 50 for bspline)")
    r.add_argument("--sampling", type=fraction, default=None, help="fraction of voxels sampled (seeded)")
    r.add_argument("--optimizer", default=None,
                   help="lbfgs (default of linear stages), lbfgsb (default of bspline), regular_step "
                        "(linear) or gradient_descent (bspline)")
    r.add_argument("--init", default="auto", choices=("auto", "moments", "geometry", "phase", "none"),
                   help="how the first stage starts: auto (default: centres, phase correlation, rotation and "
                        "scale searches, ranked by the refined metric), moments, geometry, phase or none")
    r.add_argument("--no-rotation-search", action="store_true", help="skip the coarse rotation search")
    r.add_argument("--seed", type=int, default=0, help="seed of the random sampling")
    r.add_argument("-c", "--config", default=None, help="TOML file with [[stage]] tables (multi-stage)")
    r.add_argument("-o", "--output", default=None,
                   help="output prefix, e.g. out/result (default: MOVING's folder and name + '_to_' + FIXED's "
                        "name, e.g. scans/moving_to_fixed)")
    r.add_argument("--pixel-type", type=pixel_type, default=None,
                   help="read FIXED and MOVING as this pixel type, e.g. float32 (default: the files')")
    r.add_argument("--interpolator", default="linear", choices=("linear", "bspline", "nearest"),
                   help="interpolator of the resampled output")
    r.add_argument("--default-value", type=float, default=None,
                   help="value outside the moving image (default: its minimum)")
    r.add_argument("--no-qc", action="store_true", help="do not write the QC picture")
    return r


def default_prefix(fixed_path: str | Path, moving_path: str | Path) -> Path:
    """Output prefix when -o is not given: ``<moving folder>/<moving>_to_<fixed>``."""
    def stem(p: str | Path) -> str:
        name = Path(p).name
        for suffix in (".nii.gz", ".mha", ".mhd", ".nii", ".nrrd", ".png", ".tif", ".tiff"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return Path(p).stem

    return Path(moving_path).parent / f"{stem(moving_path)}_to_{stem(fixed_path)}"


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``regframe register``."""
    from .._atomic import atomic_path
    from ..config import RegistrationConfig, Stage, load_config
    from ..registration.presets import DEFAULT_METRICS
    from ..registration import resample
    from ..transforms.io import read_transform, write_transform

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

    def pick(cli: Any, key: str) -> Any:
        if cli is not None:
            return cli
        return getattr(config, key) if config is not None else None

    fixed = check_image(read_image_arg(fixed_path, "fixed", args.pixel_type), "FIXED", "register")
    moving = check_image(read_image_arg(moving_path, "moving", args.pixel_type), "MOVING", "register")
    fm_path, mm_path = pick(args.fixed_mask, "fixed_mask"), pick(args.moving_mask, "moving_mask")
    fixed_mask = read_image_arg(fm_path, "fixed mask") if fm_path is not None else None
    moving_mask = read_image_arg(mm_path, "moving mask") if mm_path is not None else None
    it_path = pick(args.initial_transform, "initial_transform")
    initial = read_transform(it_path) if it_path is not None else None
    prefix = args.output if args.output is not None else (config.output if config else None)
    if prefix is None:
        prefix = default_prefix(fixed_path, moving_path)

    if config is not None:
        stages = config.stages
    else:
        stages = (
            Stage(
                transform=args.transform or "rigid",
                metric=args.metric or DEFAULT_METRICS.get(args.transform or "rigid", "mattes"),
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
    out.note(
        f"regframe register: {Path(moving_path).name} -> {Path(fixed_path).name}: "
        f"{' then '.join(s.transform for s in stages)}, fixed {fixed.ndim}-D size {tuple(fixed.size)}"
    )
    out.compile_notice()
    pipeline = RegistrationConfig(stages=tuple(stages))
    reporter = out.reporter()
    t0 = time.perf_counter()
    result = pipeline.run(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                          initial_transform=initial, callbacks=[reporter])
    reporter.close()
    elapsed = time.perf_counter() - t0
    if not math.isfinite(result.final_value):
        raise NonFiniteError(
            f"register: the registration must end with a finite cost; got {result.final_value} "
            f"({result.message}). The images probably do not overlap at the result: check their "
            "origins and directions, use --init moments or geometry, or give --initial-transform. "
            "Nothing was written."
        )

    paths = output_paths(prefix)
    make_parent(paths["transform"], "register")
    write_transform(result.transform, paths["transform"])
    default = float(np.min(moving.array)) if args.default_value is None else args.default_value
    after = resample(moving, result.transform, reference=fixed, interpolator=args.interpolator,
                     default_value=default)
    save_resampled(after, moving.dtype, paths["resampled"])
    written = {"transform": paths["transform"], "resampled": paths["resampled"]}
    if result.inverse_transform is not None:  # symmetric stages: the exact inverse, moving -> fixed
        write_transform(result.inverse_transform, paths["inverse"])
        written["inverse"] = paths["inverse"]
    before_t = initial if initial is not None else _identity(fixed.ndim)
    if not args.no_qc:
        from ..qc import registration_report

        before = resample(moving, before_t, reference=fixed, default_value=default)
        with atomic_path(paths["qc"], where="register") as tmp:
            registration_report(
                fixed, before, after, tmp,
                history=result.history, transform=result.transform, inverse_transform=result.inverse_transform,
                stage_names={i: rec.kind for i, rec in enumerate(result.stages)},
                title=f"regframe register: {' then '.join(s.transform for s in stages)}, "
                      f"{stages[-1].metric}",
            )
        written["qc"] = paths["qc"]
    metric_before, metric_after = _full_resolution_metric(
        stages[-1].metric, fixed, moving, (before_t, result.transform), fixed_mask, moving_mask, args.seed)
    links = _links(result.transform)
    n_initial = len(_links(initial)) if initial is not None else 0
    warnings = tuple(getattr(result, "warnings", ()))
    summary = {
        "command": "register",
        "fixed": str(fixed_path),
        "moving": str(moving_path),
        "requested_stages": [s.transform for s in stages],
        "stages": [_kind(t.itk_name) for t in links[n_initial:]],
        "stage_runs": [{"kind": r.kind, "kept": r.kept, "final_value": r.final_value,
                        "iterations_per_level": list(r.iterations_per_level), "message": r.message,
                        "elapsed_seconds": r.elapsed} for r in getattr(result, "stages", ())],
        "metric": [s.metric for s in stages],
        "transform_type": result.transform.itk_name,
        "links": [{"role": "initial" if i < n_initial else "optimised", "kind": _kind(t.itk_name),
                   "transform_type": t.itk_name, "parameters": t.parameters,
                   "fixed_parameters": t.fixed_parameters} for i, t in enumerate(links)],
        "metric_before": metric_before,
        "metric_after": metric_after,
        "metric_samples": min(fixed.n_voxels, SUMMARY_SAMPLES),
        "last_level_cost": result.final_value,
        "iterations_per_level": list(result.iterations_per_level),
        "n_iterations": result.n_iterations,
        "stop_reason": result.stop_reason.name,
        "message": result.message,
        "warnings": list(warnings),
        "elapsed_seconds": elapsed,
        "outputs": {k: str(v) for k, v in written.items()},
    }
    out.summary(summary)
    out.info(
        f"registered in {elapsed:.1f} s: {result.n_iterations} iterations "
        f"(per level {', '.join(str(n) for n in result.iterations_per_level)}), "
        f"stop: {result.stop_reason.name.lower()} ({result.message})\n"
        f"{stages[-1].metric} on the full-resolution images (data term, "
        f"{min(fixed.n_voxels, SUMMARY_SAMPLES)} voxels): {metric_before:.6g} before -> "
        f"{metric_after:.6g} after; optimizer cost at the last level: {result.final_value:.6g}"
    )
    for role, p in written.items():
        out.info(f"  {role:<10} {p}")
    for text in warnings:
        out.warn(text)
    return 3 if warnings else 0
