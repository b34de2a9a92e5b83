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
check), 2 bad usage, 3 finished with warnings (printed on stderr), 130
interrupted (Ctrl-C; no partial output file is left behind).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import TextIO

from .commands import command_modules
from .commands._common import Output, add_common_options
from .commands._interrupt import raise_if_interrupted, sigint_deferred_in_compiler
from .errors import RegframeError, RegframeWarning

__all__ = ["main", "build_parser"]


#: A comma-separated list of numbers starting with a minus sign, e.g. ``-75,-43,-1274``.
_NEGATIVE_LIST = re.compile(r"^-\d*\.?\d+(?:[eE][-+]?\d+)?(?:,\s*[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)+$")


def _attach_negative_lists(argv: Sequence[str]) -> list[str]:
    """Attach values such as ``-75,-43,-1274`` to the option before them.

    argparse takes any word starting with ``-`` (other than a single negative
    number) for an option, so ``-p -75,-43,-1274`` would fail; it becomes
    ``-p-75,-43,-1274`` (``--point=-75,...`` for long options).
    """
    out: list[str] = []
    for token in argv:
        prev = out[-1] if out else ""
        if _NEGATIVE_LIST.match(token) and prev.startswith("-") and prev != "--" and "=" not in prev \
                and not _NEGATIVE_LIST.match(prev):
            out[-1] = f"{prev}={token}" if prev.startswith("--") else f"{prev}{token}"
        else:
            out.append(token)
    return out


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
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage, 3 warnings, 130 Ctrl-C)."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    argv = _attach_negative_lists(sys.argv[1:] if argv is None else [str(a) for a in argv])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    out = Output(args, stdout, stderr)
    try:
        with sigint_deferred_in_compiler():
            code = _run(args, out)
            raise_if_interrupted()  # a Ctrl-C deferred after the last iteration
        return code
    except KeyboardInterrupt:
        return _interrupted(args.command, stderr)
    except SystemError as exc:
        # a SIGINT inside a numba kernel can surface as "SystemError: CPUDispatcher(...) returned a
        # result with an exception set" whose context is the KeyboardInterrupt
        if not _caused_by_interrupt(exc):
            raise
        return _interrupted(args.command, stderr)
    except (RegframeError, FileNotFoundError, ValueError, OSError) as exc:
        if out.verbose:
            traceback.print_exc(file=stderr)
        kind = "" if isinstance(exc, RegframeError) else f"{type(exc).__name__}: "
        stderr.write(f"regframe {args.command}: error: {kind}{exc}\n")
        if out.json:
            stdout.write(json.dumps({"command": args.command, "error": f"{kind}{exc}"}) + "\n")
        return 1


def _run(args: argparse.Namespace, out: Output) -> int:
    """Run the command; regframe warnings become one ``warning:`` line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RegframeWarning)
        try:
            return int(args.func(args, out))
        finally:
            for w in caught:
                if issubclass(w.category, RegframeWarning):
                    out.warn(str(w.message))
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling (or because of) a KeyboardInterrupt."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def _interrupted(command: str, stderr: TextIO) -> int:
    """One line for Ctrl-C; outputs are written atomically, so nothing partial is left."""
    stderr.write(f"regframe {command}: interrupted (Ctrl-C); no partial output files were left\n")
    return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
