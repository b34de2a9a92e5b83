"""``regframe register-points``: robust ICP between two point files.

Writes ``PREFIX.tfm`` (maps fixed points to moving points),
``PREFIX_fixed_mapped.txt`` (the fixed points mapped into moving space: they
overlay the moving cloud) and ``PREFIX_moving_mapped.txt`` (the moving points
mapped into fixed space by the inverse: they overlay the fixed cloud).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

ORDER = 25


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``register-points`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "register-points", help="register two point clouds (robust ICP with global initialization)",
        description="Register MOVING points to FIXED points (no correspondence by order assumed). Writes "
                    "PREFIX.tfm (maps fixed to moving points), PREFIX_fixed_mapped.txt and "
                    "PREFIX_moving_mapped.txt (each cloud mapped onto the other).",
    )
    p.add_argument("fixed", help="fixed point file: elastix 'point'/'index' file, CSV or plain text")
    p.add_argument("moving", help="moving point file")
    p.add_argument("-t", "--transform", default="rigid", choices=("translation", "rigid", "similarity", "affine"))
    p.add_argument("--method", default="point_to_point", choices=("point_to_point", "point_to_plane"))
    p.add_argument("--robust", default="tukey", choices=("tukey", "huber", "trimmed", "none"))
    p.add_argument("--init", default="global", choices=("global", "centroids", "none"),
                   help="initialization (default global: multi-start over rotations)")
    p.add_argument("--initial-transform", default=None, help=".tfm to start from (a linear transform)")
    p.add_argument("--max-distance", type=float, default=None, help="never match points farther apart")
    p.add_argument("--iterations", type=int, default=50, help="maximum ICP iterations per level")
    p.add_argument("-r", "--reference", default=None, help="image whose voxel indices 'index' files use")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsamples")
    p.add_argument("-o", "--output", default=None, help="output prefix, e.g. out/points")
    return p


def run(args: argparse.Namespace, out: Any) -> int:
    """Run ``register-points``; returns the exit status."""
    from ..io import read_image
    from ..points import register_points
    from ..points.io import read_points, write_points
    from ..transforms.io import read_transform, write_transform

    reference = read_image(args.reference) if args.reference else None
    fixed = read_points(args.fixed, reference=reference)
    moving = read_points(args.moving, ndim=fixed.shape[1], reference=reference)
    initial = read_transform(args.initial_transform) if args.initial_transform else None
    result = register_points(
        fixed, moving, args.transform, method=args.method, robust=args.robust, initialization=args.init,
        initial_transform=initial, n_iterations=args.iterations, max_distance=args.max_distance, seed=args.seed,
    )
    files: dict[str, str] = {}
    if args.output:
        prefix = Path(args.output)
        if prefix.suffix == ".tfm":
            prefix = prefix.with_suffix("")
        paths = {k: prefix.parent / (prefix.name + s) for k, s in
                 (("transform", ".tfm"), ("fixed_mapped", "_fixed_mapped.txt"), ("moving_mapped", "_moving_mapped.txt"))}
        paths["transform"].parent.mkdir(parents=True, exist_ok=True)
        write_transform(result.transform, paths["transform"])
        write_points(paths["fixed_mapped"], result.transform.transform_points(fixed))
        write_points(paths["moving_mapped"], result.transform.inverse().transform_points(moving))
        files = {k: str(v) for k, v in paths.items()}
    out.info(f"register-points: {result.message} ({result.elapsed:.2f} s)")
    for k, v in files.items():
        out.info(f"wrote {k}: {v}")
    if not args.output:
        out.info(f"transform parameters: {result.transform.parameters.tolist()}")
    out.summary({
        "command": "register-points", "transform": args.transform, "method": args.method,
        "parameters": result.transform.parameters, "fixed_parameters": result.transform.fixed_parameters,
        "rms": result.rms, "inlier_fraction": result.inlier_fraction, "final_value": result.final_value,
        "n_iterations": result.n_iterations, "stop_reason": result.stop_reason.name, "elapsed": result.elapsed,
        "warnings": list(result.warnings), "files": files,
    })
    for w in result.warnings:
        out.warn(w)
    return 3 if result.warnings else 0
