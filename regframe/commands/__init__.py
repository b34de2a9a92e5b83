"""The subcommands of the ``regframe`` command line, one module each.

Every public module here (a name not starting with ``_``) is a subcommand and
defines

``ORDER`` : int
    Its place in ``regframe --help`` (smaller first; ties by module name).
``add_parser(subparsers) -> argparse.ArgumentParser``
    Adds its subparser (the global ``--quiet/--verbose/--json`` options are
    added by :func:`regframe.cli.build_parser`).
``run(args, out) -> int``
    Runs it; ``out`` is a :class:`regframe.commands._common.Output`. Returns the
    exit status.

:func:`command_modules` discovers them, so adding a command means adding a
module, nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = ["command_modules"]


def command_modules() -> list[ModuleType]:
    """The subcommand modules, in ``ORDER``."""
    mods = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
