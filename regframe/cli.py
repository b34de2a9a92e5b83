"""The ``regframe`` command line.

Subcommands (one module each in :mod:`regframe.commands`)::

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
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from .commands import command_modules
from .commands._common import Output, add_common_options
from .errors import RegframeError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``regframe`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="regframe",
        description="ITK-style image registration: register, resample, map points, check derivatives.",
        epilog="Run 'regframe demo' for a tour on built-in phantoms; 'regframe COMMAND -h' for help.",
    )
    parser.add_argument("--version", action="version", version=f"regframe {__version__}")
    add_common_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in command_modules():
        p = module.add_parser(sub)
        add_common_options(p, suppress=True)
        p.set_defaults(func=module.run)
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
    out = Output(args, stdout, stderr)
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
