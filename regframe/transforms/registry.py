"""Map ITK transform class names (as in ``.tfm`` files) to regframe classes.

ITK files name a transform ``<Class>_<scalar>_<Din>_<Dout>``, e.g.
``Euler2DTransform_double_2_2`` or ``AffineTransform_float_3_3``.  Every
registered class is created default-constructed (the identity) and then
configured by assigning ``fixed_parameters`` and then ``parameters``, the
contract every regframe transform keeps.

User transforms can be registered with :func:`register_transform` so that
:func:`regframe.read_transform` understands them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TransformFileError
from .base import Transform

__all__ = [
    "TransformEntry",
    "register_transform",
    "registered_names",
    "transform_entry",
    "create_transform",
    "parse_itk_name",
    "itk_file_name",
]

_NAME_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*?)_(double|float)_(\d+)_(\d+)$")


@dataclass(frozen=True)
class TransformEntry:
    """How to build the regframe transform for one ITK class name.

    Attributes
    ----------
    itk_name : str
        ITK class name without the ``_double_D_D`` suffix.
    factory : callable
        ``factory(ndim) -> Transform`` returning the identity transform.
    dims : tuple of int
        Supported spatial dimensions.
    """

    itk_name: str
    factory: Callable[[int], Transform]
    dims: tuple[int, ...]


_REGISTRY: dict[str, TransformEntry] = {}


def register_transform(
    itk_name: str, factory: Callable[[int], Transform], dims: tuple[int, ...] = (2, 3)
) -> None:
    """Register (or replace) the class used for ITK name ``itk_name``.

    Parameters
    ----------
    itk_name : str
        ITK class name without the ``_double_D_D`` suffix, e.g.
        ``"MyTransform"``.
    factory : callable
        ``factory(ndim)`` returns a default-constructed (identity) transform of
        dimension ``ndim``; it is then configured through ``fixed_parameters``
        and ``parameters``.
    dims : tuple of int
        Spatial dimensions the class supports.
    """
    _REGISTRY[itk_name] = TransformEntry(itk_name, factory, tuple(int(d) for d in dims))


def _lazy(module: str, name: str, takes_ndim: bool) -> Callable[[int], Transform]:
    """Factory importing ``regframe.transforms.<module>.<name>`` on first use."""

    def factory(ndim: int) -> Transform:
        try:
            mod = importlib.import_module(f"regframe.transforms.{module}")
            cls = getattr(mod, name)
        except (ImportError, AttributeError) as exc:
            raise TransformFileError(
                f"{name} is known to regframe but regframe.transforms.{module}.{name} is not "
                f"available in this installation ({exc}); upgrade regframe."
            ) from exc
        return cls(ndim) if takes_ndim else cls()

    return factory


def _builtin() -> None:
    fixed2, fixed3, both = (2,), (3,), (2, 3)
    register_transform("TranslationTransform", _lazy("linear", "TranslationTransform", True), both)
    register_transform("AffineTransform", _lazy("linear", "AffineTransform", True), both)
    # ITK aliases with the affine layout [A row-major, t], fixed = centre.
    register_transform("MatrixOffsetTransformBase", _lazy("linear", "AffineTransform", True), both)
    register_transform("Rigid3DTransform", _lazy("linear", "AffineTransform", True), fixed3)
    register_transform("Euler2DTransform", _lazy("euler", "Euler2DTransform", False), fixed2)
    register_transform("Rigid2DTransform", _lazy("euler", "Euler2DTransform", False), fixed2)
    register_transform("Euler3DTransform", _lazy("euler", "Euler3DTransform", False), fixed3)
    register_transform(
        "Similarity2DTransform", _lazy("similarity", "Similarity2DTransform", False), fixed2
    )
    register_transform(
        "Similarity3DTransform", _lazy("similarity", "Similarity3DTransform", False), fixed3
    )
    register_transform("VersorTransform", _lazy("versor", "VersorTransform", False), fixed3)
    register_transform(
        "VersorRigid3DTransform", _lazy("versor", "VersorRigid3DTransform", False), fixed3
    )
    register_transform("BSplineTransform", _lazy("bspline", "BSplineTransform", True), both)
    register_transform(
        "DisplacementFieldTransform",
        _lazy("displacement", "DisplacementFieldTransform", True),
        both,
    )
    register_transform("CompositeTransform", _lazy("composite", "CompositeTransform", True), both)


_builtin()


def registered_names() -> tuple[str, ...]:
    """ITK class names :func:`create_transform` understands (sorted)."""
    return tuple(sorted(_REGISTRY))


def parse_itk_name(name: str) -> tuple[str, str, int, int]:
    """Split ``"Euler2DTransform_double_2_2"`` into ``("Euler2DTransform", "double", 2, 2)``.

    Raises
    ------
    TransformFileError
        If ``name`` does not have the ``<Class>_<double|float>_<Din>_<Dout>`` form.
    """
    m = _NAME_RE.match(name.strip())
    if m is None:
        raise TransformFileError(
            f"expected an ITK transform name like 'AffineTransform_double_3_3'; got {name!r}."
        )
    return m.group(1), m.group(2), int(m.group(3)), int(m.group(4))


def transform_entry(itk_name: str) -> TransformEntry:
    """Registry entry for a bare ITK class name (no ``_double_D_D`` suffix)."""
    try:
        return _REGISTRY[itk_name]
    except KeyError:
        raise TransformFileError(
            f"unsupported ITK transform type {itk_name!r}; supported: "
            f"{', '.join(registered_names())}. Register others with "
            "regframe.transforms.registry.register_transform()."
        ) from None


def create_transform(name: str, ndim: int | None = None) -> Transform:
    """Default-constructed (identity) transform for an ITK class name.

    Parameters
    ----------
    name : str
        Either a full file name (``"Euler3DTransform_double_3_3"``) or a bare
        class name together with ``ndim``.
    ndim : int, optional
        Dimension when ``name`` is bare.

    Raises
    ------
    TransformFileError
        Unknown name, unsupported dimension, or input and output dimensions
        that differ.
    """
    if _NAME_RE.match(name.strip()):
        base, _scalar, din, dout = parse_itk_name(name)
        if din != dout:
            raise TransformFileError(
                f"transforms between spaces of different dimension are not supported; "
                f"got {name!r} ({din}-D to {dout}-D)."
            )
        if ndim is not None and ndim != din:
            raise TransformFileError(f"{name!r} is {din}-D but ndim={ndim} was requested.")
        ndim = din
    else:
        base = name.strip()
        if ndim is None:
            raise TransformFileError(
                f"create_transform(): a bare class name needs 'ndim'; got {name!r} without it."
            )
    entry = transform_entry(base)
    if ndim not in entry.dims:
        raise TransformFileError(
            f"{base} exists in {', '.join(f'{d}-D' for d in entry.dims)} only; got {ndim}-D."
        )
    return entry.factory(ndim)


def itk_file_name(transform: Transform) -> str:
    """Name written in ``.tfm`` files, e.g. ``"Euler2DTransform_double_2_2"``."""
    d = transform.ndim
    return f"{transform.itk_name}_double_{d}_{d}"
