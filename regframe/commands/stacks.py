"""``regframe align-stack``: align the slices of a stack (multi-page TIFF, image folder or 3-D image).

Writes ``PREFIX_aligned.tif`` (or ``.mha``; in the input's pixel type, integers rounded), one ``.tfm`` per slice in
``PREFIX_transforms/`` (each maps output-frame points into its slice),
``PREFIX_summary.json`` (non-finite numbers as ``null``) and the drift QC picture ``PREFIX_qc.png``.
Warnings go to stderr (also with ``--quiet``/``--json``).  Exit status 0, 3 when the alignment
finished with warnings, 1 when a pairwise registration failed (the outputs are still written).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_text
from ..errors import InvalidInputError, RegistrationWarning
from ..registration.defaults import METRIC_KINDS
from ..registration.stacks import REFERENCES, STACK_TRANSFORMS
from ._common import jsonable, make_parent, read_image_arg

__all__ = ["add_parser", "run", "read_stack", "read_reference"]

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


def read_reference(text: str) -> Any:
    """``--reference``: one of :data:`~regframe.registration.stacks.REFERENCES`, or an anchor stack read from a path."""
    if text in REFERENCES:
        return text
    if not Path(text).exists():
        raise InvalidInputError(
            f"--reference must be one of {', '.join(REFERENCES)} or the path of an anchor stack (multi-page "
            f"TIFF, folder of 2-D images or 3-D image with one slice per stack slice); got {text!r}, which is "
            "neither of those words nor an existing path."
        )
    return read_stack(text, "reference stack")


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


def _output_dtype(input_dtype: np.dtype, fmt: str) -> np.dtype:
    """The input's pixel type (integers are rounded), float32 for float64 in TIFF (which has no float64)."""
    if np.issubdtype(input_dtype, np.integer) or input_dtype == np.float32:
        return np.dtype(input_dtype)
    return np.dtype(np.float32) if fmt == "tif" else np.dtype(np.float64)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``align-stack`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "align-stack", help="align the slices of a stack (serial sections, time series) without drift",
        description="Align every slice of STACK (multi-page TIFF, folder of 2-D images, or 3-D image with "
                    "slices along z). 'previous' registers each slice to its neighbours and solves for "
                    "transforms that agree (no chained drift); 'first'/'mean' register to one target; a "
                    "path registers each slice to its own slice of that anchor stack (e.g. blockface).")
    p.add_argument("stack", help="multi-page TIFF, folder of 2-D images (sorted by name) or 3-D image")
    p.add_argument("-t", "--transform", default="rigid", choices=STACK_TRANSFORMS, help="default rigid")
    p.add_argument("-r", "--reference", default="previous",
                   help=f"{', '.join(REFERENCES)} (default {REFERENCES[0]}), or an anchor stack file/folder with one "
                        "slice per slice (the output is on its grid)")
    p.add_argument("-m", "--metric", default="mattes", choices=METRIC_KINDS, help="default mattes")
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
    from ..registration.resample import cast_values
    from ..registration.stacks import align_stack
    from ..transforms import write_transform
    from .batch import open_client

    reference = read_reference(args.reference)  # a bad word fails before the stack is read
    stack = read_stack(args.stack)
    kwargs: dict[str, Any] = {"initialization": None if args.init == "none" else args.init, "seed": args.seed}
    if args.iterations is not None:
        kwargs["n_iterations"] = args.iterations
    client = open_client(args.scheduler)
    try:
        with warnings.catch_warnings():  # register()'s warnings are in result.warnings, with their pair: say them once
            warnings.simplefilter("ignore", RegistrationWarning)
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
    write_image(result.aligned.with_array(cast_values(result.aligned.array, _output_dtype(stack.dtype, fmt)),
                                          copy=False), aligned_path)
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
    text = json.dumps(jsonable(summary), indent=2, allow_nan=False)
    atomic_write_text(prefix.parent / f"{prefix.name}_summary.json", text, where="align-stack")
    out.info(f"aligned {summary['n_slices']} slices in {result.elapsed:.1f} s: framewise displacement mean "
             f"{summary['framewise_displacement_mean']:.3g}, max {summary['framewise_displacement_max']:.3g}")
    out.info(f"wrote {aligned_path}, {folder}/slice_*.tfm")
    out.summary(summary)
    for w in result.warnings:
        out.warn(w)
    return 1 if summary["n_failed_pairs"] else (3 if result.warnings else 0)
