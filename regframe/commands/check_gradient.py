"""``regframe check-gradient``: verify a transform's or a metric's derivatives."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ..errors import InvalidInputError, RegframeError
from ._common import Output, read_image_arg

ORDER = 40


#: Kinds of ``register -t`` that name a class rather than a linear kind.
_CLASS_ALIASES = {"bspline": "BSplineTransform", "displacement": "DisplacementFieldTransform"}

#: Most parameters check-gradient differentiates one by one (B-splines have hundreds).
_MAX_CHECKED = 48


def _make_any_transform(name: str, reference: Any) -> Any:
    """A transform to check on ``reference``: a kind or an ITK class name.

    Linear transforms are centred on the image; a B-spline (``bspline`` or
    ``BSplineTransform``) gets a 3-interval mesh over the image (a
    default-constructed one covers only the unit cube at the origin).
    """
    from ..registration.api import LINEAR_KINDS, make_transform
    from ..transforms.bspline import BSplineTransform
    from ..transforms.registry import create_transform

    ndim = reference.ndim
    if name in LINEAR_KINDS:
        transform = make_transform(name, ndim)
    else:
        transform = create_transform(_CLASS_ALIASES.get(name, name), ndim)
    if isinstance(transform, BSplineTransform):
        return BSplineTransform.from_domain(reference, mesh_size=3)
    fp = transform.fixed_parameters
    if fp.size >= ndim and transform.is_linear:
        fp[:ndim] = reference.physical_center()
        transform.fixed_parameters = fp
    return transform


def _class_ndim(name: str, requested: int | None) -> int:
    """Dimension for check-gradient: the requested one, else 2 unless the class is 3-D only."""
    if requested is not None:
        return requested
    from ..transforms.registry import transform_entry

    try:
        dims = transform_entry(_CLASS_ALIASES.get(name, name)).dims
    except RegframeError:
        return 2
    return 2 if 2 in dims else int(min(dims))


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``check-gradient`` subparser."""
    cg = sub.add_parser("check-gradient", help="verify a transform's or metric's derivatives",
                        description="Compare analytic derivatives with central differences and print the "
                                    "error table. Without --metric the transform's Jacobians are checked; "
                                    "with --metric the metric gradient (on phantoms unless --fixed/--moving).")
    cg.add_argument("-t", "--transform", default="rigid",
                    help="kind (translation, rigid, similarity, affine, bspline) or ITK class name "
                         "(Euler3DTransform)")
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
    return cg


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``regframe check-gradient``."""
    from ..datasets import brain_pair
    from ..registration.api import make_metric
    from ..testing import check_transform
    from ..testing.metric_checks import check_metric, physical_shift_steps

    rng = np.random.default_rng(args.seed)
    if args.fixed or args.moving:
        if not (args.fixed and args.moving):
            raise InvalidInputError("check-gradient: give both --fixed and --moving, or neither (phantoms).")
        fixed, moving = read_image_arg(args.fixed, "fixed"), read_image_arg(args.moving, "moving")
    else:
        ndim = _class_ndim(args.transform, args.ndim)
        fixed, moving = brain_pair(ndim, args.size, multimodal=args.metric == "mattes", seed=args.seed)
    transform = _make_any_transform(args.transform, fixed)
    # a small, seeded perturbation away from the identity (derivatives at the identity are special)
    p = transform.parameters
    step = rng.normal(scale=1.0, size=p.size)
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
    indices = None
    if transform.n_parameters > _MAX_CHECKED:  # B-spline: a seeded subset and more random directions
        indices = np.sort(rng.choice(transform.n_parameters, _MAX_CHECKED, replace=False))
        out.info(f"checking {_MAX_CHECKED} of {transform.n_parameters} parameters (seeded choice) "
                 "and 3 random directions")
    report = check_metric(metric, rtol=args.rtol, seed=args.seed, indices=indices,
                          n_directions=1 if indices is None else 3)
    out.info(str(report))
    out.summary({"command": "check-gradient", "kind": "metric", "metric": args.metric,
                 "transform": transform.itk_name, "interpolator": args.interpolator,
                 "passed": report.passed, "value": report.value,
                 "max_relative_error": report.max_relative_error,
                 "direction_error": report.direction_error,
                 "analytic": report.analytic, "numeric": report.numeric,
                 "relative_errors": report.relative_errors, "failures": report.failures})
    return 0 if report.passed else 1
