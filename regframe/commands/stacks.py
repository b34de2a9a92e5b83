"""``regframe align-stack``: align the slices of a stack (multi-page TIFF, image folder or 3-D image).

Writes ``PREFIX_aligned.tif`` (or ``.mha``), one ``.tfm`` per slice in
``PREFIX_transforms/`` (each maps output-frame points into its slice),
``PREFIX_summary.json`` and the drift QC picture ``PREFIX_qc.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text
from ..errors import InvalidInputError
from ._common import make_parent, read_image_arg

__all__ = ["add_parser", "run", "read_stack"]

ORDER = 60


def read_stack(path: str | Path, what: str = "stack") -> Any:
    """A 3-D image from a multi-page TIFF, a folder of 2-D pictures or a 3-D image file."""
    image = read_image_arg(path, what)
    if image.ndim != 3:
        raise InvalidInputError(
            f"{what} '{path}': expected a stack (multi-page TIFF, folder of 2-D pictures or 3-D image with the "
            f"slices along z); got a {image.ndim}-D image."
        )
    return image


def _window(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of slices > 0 or 'none'; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of slices > 0 or 'none'; got {text!r}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``align-stack`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "align-stack", help="align the slices of a stack (serial sections, time series) without drift",
        description="Align every slice of STACK (multi-page TIFF, folder of 2-D images, or 3-D image with "
                    "slices along z). 'previous' registers each slice to its neighbours and solves for "
                    "transforms that agree (no chained drift); 'first'/'mean' register to one target; a "
                    "path registers each slice to its own slice of that anchor stack (e.g. blockface).")
    p.add_argument("stack", help="multi-page TIFF, folder of 2-D images (sorted by name) or 3-D image")
    p.add_argument("-t", "--transform", default="rigid",
                   choices=("translation", "rigid", "similarity", "affine", "bspline"))
    p.add_argument("-r", "--reference", default="previous",
                   help="previous (default), first, mean, or an anchor stack file/folder with one slice per slice")
    p.add_argument("-m", "--metric", default="mattes", help="mattes (default), mse or ncc")
    p.add_argument("--neighbours", type=int, default=2, help="predecessors per slice for 'previous' (default 2)")
    p.add_argument("--drift-window", type=_window, default=8.0,
                   help="slices over which slow motion is kept as anatomy ('previous'); 'none' corrects "
                        "all drift (time series). Default 8")
    p.add_argument("--init", default="moments", choices=("moments", "geometry", "none"),
                   help="how each pair is centred (default moments)")
    p.add_argument("--iterations", type=int, default=None, help="maximum iterations per level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", default=None, help="dask scheduler address: run the pairs on that cluster")
    p.add_argument("-o", "--output", required=True, help="output prefix, e.g. out/s")
    p.add_argument("--format", default=None, choices=("tif", "mha"),
                   help="aligned stack format (default tif for a TIFF input, else mha)")
    p.add_argument("--no-qc", action="store_true", help="do not write the QC picture")
    return p


def run(args: argparse.Namespace, out: Any) -> int:
    """Run ``align-stack``; returns the exit status."""
    from ..io import write_image
    from ..registration.stacks import align_stack
    from ..transforms import write_transform
    from .batch import open_client

    stack = read_stack(args.stack)
    reference: Any = args.reference
    if reference not in ("previous", "first", "mean"):
        reference = read_stack(reference, "reference stack")
    kwargs: dict[str, Any] = {"initialization": None if args.init == "none" else args.init, "seed": args.seed}
    if args.iterations is not None:
        kwargs["n_iterations"] = args.iterations
    client = open_client(args.scheduler)
    try:
        result = align_stack(stack, args.transform, reference, metric=args.metric, neighbours=args.neighbours,
                             drift_window=args.drift_window, client=client,
                             progress="none" if out.quiet else "auto", **kwargs)
    finally:
        if client is not None:
            client.close()
    prefix = Path(args.output)
    make_parent(prefix, "--output")
    fmt = args.format or ("tif" if Path(args.stack).suffix.lower() in (".tif", ".tiff") else "mha")
    aligned_path = prefix.parent / f"{prefix.name}_aligned.{fmt}"
    write_image(result.aligned, aligned_path)
    folder = prefix.parent / f"{prefix.name}_transforms"
    folder.mkdir(parents=True, exist_ok=True)
    for k, t in enumerate(result.transforms):
        write_transform(t, folder / f"slice_{k:04d}.tfm")
    summary = {"command": "align-stack", "aligned": str(aligned_path), "transforms": str(folder),
               **result.summary(), "metric_values": result.metric_values.tolist(),
               "framewise_displacement": result.framewise_displacement.tolist()}
    if not args.no_qc:
        summary["qc"] = str(prefix.parent / f"{prefix.name}_qc.png")
        result.plot(summary["qc"])
    text = json.dumps(summary, indent=2, default=lambda v: None)
    atomic_write_text(prefix.parent / f"{prefix.name}_summary.json", text, where="align-stack")
    out.info(f"aligned {summary['n_slices']} slices in {result.elapsed:.1f} s: framewise displacement mean "
             f"{summary['framewise_displacement_mean']:.3g}, max {summary['framewise_displacement_max']:.3g}")
    out.info(f"wrote {aligned_path}, {folder}/slice_*.tfm")
    for w in result.warnings:
        out.info(f"warning: {w}")
    out.summary(summary)
    return 0
