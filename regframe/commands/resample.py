"""``regframe resample``: resample an image through a transform file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Output, make_parent, pixel_type, read_image_arg, save_resampled

ORDER = 20


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``resample`` subparser."""
    s = sub.add_parser("resample", help="resample an image through a transform file",
                       description="Output voxel x gets MOVING(T(x)) (ITK's pull-back convention): "
                                   "with a registration result, this aligns MOVING with the reference.")
    s.add_argument("moving", help="image to resample")
    s.add_argument("transform", help=".tfm/.txt/.h5 transform mapping reference points to moving points")
    s.add_argument("-r", "--reference", default=None, help="output grid (default: the moving image's)")
    s.add_argument("-o", "--output", required=True, help="output image file")
    s.add_argument("--interpolator", default="linear", choices=("linear", "bspline", "nearest"))
    s.add_argument("--default-value", type=float, default=None, help="value outside (default: minimum)")
    s.add_argument("--dtype", type=pixel_type, default=None,
                   help="output pixel type, e.g. float32 (default: the input's)")
    s.add_argument("--pixel-type", type=pixel_type, default=None,
                   help="read the input images as this pixel type, e.g. float32 (default: the file's)")
    s.add_argument("--inverse", action="store_true", help="use the inverse of the transform")
    return s


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``regframe resample``."""
    from ..registration import resample
    from ..transforms.io import read_transform

    moving = read_image_arg(args.moving, "moving", args.pixel_type)
    transform = read_transform(args.transform)
    if args.inverse:
        transform = transform.inverse()
    reference = read_image_arg(args.reference, "reference", args.pixel_type) if args.reference else moving
    out.compile_notice()
    default = float(np.min(moving.array)) if args.default_value is None else args.default_value
    image = resample(moving, transform, reference=reference, interpolator=args.interpolator,
                     default_value=default)
    make_parent(args.output, "resample")
    save_resampled(image, args.dtype if args.dtype is not None else moving.dtype, Path(args.output))
    out.summary({"command": "resample", "moving": args.moving, "transform": args.transform,
                 "reference": args.reference, "output": args.output, "size": list(reference.size)})
    out.info(f"wrote {args.output} ({'x'.join(str(s) for s in reference.size)} voxels)")
    return 0
