"""Whether numba's on-disk cache already holds regframe's main kernels.

The first call of a ``cache=True`` kernel in a new environment compiles it
(tens of seconds for a registration); later processes load it from the cache
index files (``*.nbi``) numba writes beside the module (``__pycache__``) or in
``NUMBA_CACHE_DIR``.  The command line uses :func:`kernels_cached` to say
"compiling kernels, first run only" instead of sitting silent.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["kernels_cached"]

#: Kernel modules every registration compiles (relative to the package).
_MAIN_KERNELS = ("metrics/_kernels.py", "interpolators/_kernels.py", "transforms/_linear_kernels.py")


def _has_index(module: Path) -> bool:
    stem = module.stem
    if any((module.parent / "__pycache__").glob(f"{stem}.*.nbi")):
        return True
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    if cache_dir:
        # numba mirrors the module's absolute folder below NUMBA_CACHE_DIR
        mirrored = Path(cache_dir) / str(module.parent.resolve()).lstrip(os.sep)
        return any(mirrored.glob(f"{stem}.*.nbi"))
    return False


def kernels_cached() -> bool:
    """True when numba's cache holds compiled code of every main kernel module.

    A heuristic (a module with some cached kernels may still compile others),
    cheap enough to call before every run: it only lists files.
    """
    root = Path(__file__).resolve().parent
    return all(_has_index(root / rel) for rel in _MAIN_KERNELS)
