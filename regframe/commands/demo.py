"""``regframe demo``: the whole pipeline on built-in phantoms."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ._common import Output

ORDER = 50


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subparser."""
    dm = sub.add_parser("demo", help="the whole pipeline on built-in phantoms (no data needed)",
                        description="Register 2-D (mono- and multi-modal) and 3-D phantoms moved by known "
                                    "transforms; write images, .tfm transforms and QC pictures into a "
                                    "folder and print the recovered errors.")
    dm.add_argument("-o", "--output", default="regframe_demo", help="output folder (default regframe_demo)")
    dm.add_argument("--iterations", type=int, default=100, help="maximum iterations per level")
    dm.add_argument("--cases", nargs="+", default=None,
                    choices=("2d_rigid_mono", "2d_rigid_multimodal", "3d_affine"))
    dm.add_argument("--no-pictures", action="store_true", help="skip the PNG pictures")
    return dm


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``regframe demo``."""
    from dataclasses import asdict

    from ..demo import format_summary, run_demo

    out.compile_notice()
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
