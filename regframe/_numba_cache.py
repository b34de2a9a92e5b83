"""Whether numba's on-disk cache already holds regframe's main kernels.

The first call of a ``cache=True`` kernel in a new environment compiles it
(tens of seconds for a registration); later processes load it from the cache
index files (``*.nbi``) numba writes beside the module (``__pycache__``), in
``NUMBA_CACHE_DIR`` or in the user's cache folder.  The command line uses
:func:`kernels_cached` to say "compiling kernels, first run only" instead of
sitting silent.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

__all__ = ["kernels_cached"]

#: Kernel modules every registration uses (tests check that they exist and hold cached kernels).
_MAIN_KERNELS = ("regframe.metrics._sample_kernels", "regframe.interpolators._kernels",
                 "regframe.transforms._linear_kernels")


def _index_paths(module: ModuleType) -> list[str]:
    """Where numba keeps (or would keep) the cache index of each cached kernel of ``module``."""
    paths = []
    for obj in vars(module).values():
        cache_file = getattr(getattr(obj, "_cache", None), "_cache_file", None)
        index = getattr(cache_file, "_index_path", None)   # numba's FunctionCache (private API)
        if isinstance(index, str):
            paths.append(index)
    return paths


def _has_index(module_file: Path) -> bool:
    """Fallback: any ``<module>.*.nbi`` beside ``module_file`` (when numba's internals change)."""
    return any((module_file.parent / "__pycache__").glob(f"{module_file.stem}.*.nbi"))


def kernels_cached() -> bool:
    """True when numba's cache holds compiled code of every main kernel module.

    A heuristic (a module with some cached kernels may still compile others),
    cheap enough to call before every run: it only checks that files exist,
    at the paths numba itself uses for these kernels.
    """
    for name in _MAIN_KERNELS:
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - a renamed module must not break the command line
            continue
        paths = _index_paths(module)
        if paths:
            if not any(os.path.exists(p) for p in paths):
                return False
        elif not _has_index(Path(module.__file__)):
            return False
    return True
