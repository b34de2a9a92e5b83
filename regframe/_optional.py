"""Lazy imports of optional dependencies with actionable errors."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

_EXTRAS = {
    "SimpleITK": "io",
    "matplotlib": "viz",
    "tqdm": "progress",
    "PIL.Image": "viz",
    "tifffile": "tiff",
    "distributed": "distributed",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"SimpleITK"``.
    feature : str
        What the caller wanted to do, used in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        extra = _EXTRAS.get(module, "all")
        raise MissingDependencyError(
            f"{feature} needs the optional package '{module}', which is not installed; "
            f"install it with: pip install 'regframe[{extra}]'"
        ) from exc
