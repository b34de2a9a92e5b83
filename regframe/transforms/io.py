"""Read and write ITK transform files (Insight Transform File V1.0 text, and HDF5 via SimpleITK).

The text format, as ITK/SimpleITK write it::

    #Insight Transform File V1.0
    #Transform 0
    Transform: Euler2DTransform_double_2_2
    Parameters: 0.3 4 5
    FixedParameters: 1 2

A composite is written as a ``CompositeTransform_double_D_D`` entry without
parameters followed by its members in insertion order (``T_0`` first; the
last one listed acts first on points).  Numbers are written in the shortest
form that reads back to the same double (ITK's format), so parameters and
fixed parameters round-trip bit-exactly.

``.h5``/``.hdf5`` files are converted through SimpleITK (optional dependency,
``pip install 'regframe[io]'``).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, atomic_write_text
from .._optional import require
from ..errors import RegframeError, RegframeWarning, TransformFileError
from .base import Transform
from .composite import CompositeTransform
from .registry import create_transform, itk_file_name, parse_itk_name

__all__ = [
    "read_transform",
    "write_transform",
    "format_transform",
    "parse_transform",
    "to_sitk_transform",
    "from_sitk_transform",
    "format_number",
]

HEADER = "#Insight Transform File V1.0"
_TEXT_SUFFIXES = (".tfm", ".txt")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------
def format_number(value: float) -> str:
    """Shortest round-trip text of a double, in ITK's (ECMAScript) notation.

    Positional notation for ``1e-6 <= |x| < 1e21`` (``"0.000001"``,
    ``"100000000000000000000"``), exponent notation otherwise
    (``"1e-7"``, ``"1.5e+300"``).  Negative zero is written ``"-0"`` so that
    it survives a round trip (ITK writes ``"0"``).
    """
    x = float(value)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    r = repr(x)
    if "e" not in r and "n" not in r:
        return r[:-2] if r.endswith(".0") else r
    sign = "-" if x < 0 else ""
    _sign, digits_t, exp = Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_t)
    k = len(digits)
    n = int(exp) + k  # value = 0.digits * 10**n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mant = digits[0] + ("." + digits[1:] if k > 1 else "")
        body = f"{mant}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def _format_values(values: np.ndarray) -> str:
    return " ".join(format_number(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))


# ---------------------------------------------------------------------------
# text format
# ---------------------------------------------------------------------------
def _leaves(transform: Transform) -> list[Transform]:
    if isinstance(transform, CompositeTransform):
        out: list[Transform] = []
        for t in transform.transforms:
            out.extend(_leaves(t))
        return out
    return [transform]


def format_transform(transform: Transform) -> str:
    """The Insight Transform File text of ``transform`` (what :func:`write_transform` writes).

    Nested composites are flattened (the mapping is unchanged; ITK files
    hold one level).
    """
    if not isinstance(transform, Transform):
        raise TypeError(
            f"format_transform(): 'transform' must be a regframe Transform; got {type(transform).__name__}."
        )
    lines = [HEADER]
    if isinstance(transform, CompositeTransform):
        lines += ["#Transform 0", f"Transform: {itk_file_name(transform)}"]
        members = _leaves(transform)
        start = 1
    else:
        members = [transform]
        start = 0
    for i, t in enumerate(members, start=start):
        lines += [
            f"#Transform {i}",
            f"Transform: {itk_file_name(t)}",
            f"Parameters: {_format_values(t.parameters)}",
            f"FixedParameters: {_format_values(t.fixed_parameters)}",
        ]
    return "\n".join(lines) + "\n"


def _parse_numbers(text: str, key: str, line_no: int, source: str) -> np.ndarray:
    tokens = text.split()
    try:
        return np.array([float(tok) for tok in tokens], dtype=np.float64)
    except ValueError as exc:
        raise TransformFileError(
            f"{source}, line {line_no}: '{key}' must be a list of numbers; got {text.strip()[:80]!r}."
        ) from exc


def _parse_entries(text: str, source: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise TransformFileError(
                f"{source}, line {line_no}: expected 'Key: value' (Transform, Parameters or "
                f"FixedParameters); got {line[:80]!r}."
            )
        key_l = key.strip().lower()
        if key_l == "transform":
            entries.append({"name": value.strip(), "line": line_no})
        elif key_l in ("parameters", "fixedparameters"):
            if not entries:
                raise TransformFileError(
                    f"{source}, line {line_no}: '{key.strip()}' appears before any 'Transform:' line."
                )
            entries[-1][key_l] = _parse_numbers(value, key.strip(), line_no, source)
        else:
            raise TransformFileError(
                f"{source}, line {line_no}: unknown key {key.strip()!r}; expected Transform, "
                "Parameters or FixedParameters."
            )
    if not entries:
        raise TransformFileError(
            f"{source}: no transform found; expected an Insight Transform File with a "
            "'Transform: <Name>_double_<D>_<D>' line."
        )
    return entries


def _build(entry: dict[str, Any], source: str) -> Transform:
    name = entry["name"]
    where = f"{source}, line {entry['line']}"
    try:
        base, _scalar, din, _dout = parse_itk_name(name)
        if base == "IdentityTransform":
            from .linear import TranslationTransform

            return TranslationTransform(din)
        t = create_transform(name)
        fixed = entry.get("fixedparameters", np.zeros(0))
        params = entry.get("parameters")
        if fixed.size or t.fixed_parameters.size:
            t.fixed_parameters = fixed
        if params is None:
            raise TransformFileError(f"the 'Parameters:' line of {name} is missing.")
        t.parameters = params
    except TransformFileError as exc:
        raise TransformFileError(f"{where}: {exc}") from exc
    except RegframeError as exc:
        raise TransformFileError(f"{where}: cannot configure {name} from the file: {exc}") from exc
    return t


def parse_transform(text: str, source: str = "<string>") -> Transform:
    """Build a transform from Insight Transform File text (see :func:`read_transform`)."""
    entries = _parse_entries(text, source)
    first = parse_itk_name(entries[0]["name"]) if entries else None
    if first is not None and first[0] == "CompositeTransform":
        comp = create_transform(entries[0]["name"])
        assert isinstance(comp, CompositeTransform)
        for entry in entries[1:]:
            if parse_itk_name(entry["name"])[0] == "CompositeTransform":
                raise TransformFileError(
                    f"{source}, line {entry['line']}: nested CompositeTransform entries are not "
                    "supported; the members of a composite follow its header directly."
                )
            comp.add_transform(_build(entry, source))
        return comp
    if len(entries) > 1:
        warnings.warn(
            f"{source} holds {len(entries)} transforms without a CompositeTransform header; "
            "only the first is used (as SimpleITK does). Write a CompositeTransform to keep a chain.",
            RegframeWarning,
            stacklevel=3,
        )
    return _build(entries[0], source)


# ---------------------------------------------------------------------------
# public file API
# ---------------------------------------------------------------------------
def _suffix(path: Path) -> str:
    return path.suffix.lower()


def write_transform(transform: Transform, path: PathLike) -> None:
    """Write ``transform`` to an ITK transform file.

    Parameters
    ----------
    transform : Transform
        Any regframe transform with an ITK name, including composites
        (written flattened, members in insertion order).
    path : str or PathLike
        ``.tfm`` or ``.txt`` for the Insight Transform text format;
        ``.h5``/``.hdf5`` for ITK's HDF5 format (needs SimpleITK).

    Raises
    ------
    TransformFileError
        For an unsupported extension.
    OutputError
        The folder is missing or not writable.

    Notes
    -----
    The file is written under a temporary name in the same folder and renamed
    when complete, so an interrupted write never leaves a partial file.
    """
    p = Path(path)
    suffix = _suffix(p)
    if suffix in _TEXT_SUFFIXES:
        atomic_write_text(p, format_transform(transform), where="write_transform()", encoding="ascii")
    elif suffix in _HDF5_SUFFIXES:
        sitk = require("SimpleITK", "Writing HDF5 transform files")
        st = to_sitk_transform(transform)
        with atomic_path(p, where="write_transform()") as tmp:
            sitk.WriteTransform(st, str(tmp))
    else:
        raise TransformFileError(
            f"write_transform(): the file extension must be one of "
            f"{', '.join(_TEXT_SUFFIXES + _HDF5_SUFFIXES)}; got {p.name!r}."
        )


def read_transform(path: PathLike) -> Transform:
    """Read an ITK transform file.

    Parameters
    ----------
    path : str or PathLike
        An Insight Transform text file (``.tfm``, ``.txt``; other
        extensions are parsed as text too) or an ITK HDF5 transform file
        (``.h5``/``.hdf5``, needs SimpleITK).

    Returns
    -------
    Transform
        The regframe transform of the ITK class named in the file (aliases:
        ``Rigid2DTransform`` -> :class:`Euler2DTransform`,
        ``MatrixOffsetTransformBase``/``Rigid3DTransform`` ->
        :class:`AffineTransform`, ``IdentityTransform`` -> zero
        :class:`TranslationTransform`); a :class:`CompositeTransform` with all
        members flagged to optimise for composite files.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    TransformFileError
        If the file cannot be parsed or names an unsupported transform.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"read_transform(): no file at {str(p)!r}.")
    if _suffix(p) in _HDF5_SUFFIXES:
        sitk = require("SimpleITK", "Reading HDF5 transform files")
        try:
            st = sitk.ReadTransform(str(p))
        except RuntimeError as exc:
            raise TransformFileError(f"{p}: SimpleITK could not read the transform: {exc}") from exc
        return from_sitk_transform(st)
    try:
        text = p.read_text(encoding="latin-1")
    except OSError as exc:  # pragma: no cover - file system errors
        raise TransformFileError(f"{p}: cannot read the file: {exc}") from exc
    return parse_transform(text, source=str(p))


# ---------------------------------------------------------------------------
# SimpleITK bridge
# ---------------------------------------------------------------------------
def to_sitk_transform(transform: Transform) -> Any:
    """Convert to a ``SimpleITK.Transform`` (exact, via the text format)."""
    sitk = require("SimpleITK", "Converting transforms to SimpleITK")
    with tempfile.TemporaryDirectory(prefix="regframe_tfm_") as tmp:
        f = Path(tmp) / "transform.tfm"
        f.write_text(format_transform(transform), encoding="ascii")
        st = sitk.ReadTransform(str(f))
    return _downcast(sitk, st)


def from_sitk_transform(sitk_transform: Any) -> Transform:
    """Convert a ``SimpleITK.Transform`` to the regframe transform of the same ITK class."""
    sitk = require("SimpleITK", "Converting transforms from SimpleITK")
    with tempfile.TemporaryDirectory(prefix="regframe_tfm_") as tmp:
        f = Path(tmp) / "transform.tfm"
        try:
            sitk.WriteTransform(sitk_transform, str(f))
        except (RuntimeError, TypeError) as exc:
            raise TransformFileError(
                f"from_sitk_transform(): SimpleITK could not serialise {sitk_transform!r}: {exc}"
            ) from exc
        text = f.read_text(encoding="latin-1")
    return parse_transform(text, source="<SimpleITK transform>")


def _downcast(sitk: Any, st: Any) -> Any:
    """Return the concrete SimpleITK class (``Transform.Downcast`` when available)."""
    downcast = getattr(st, "Downcast", None)
    if downcast is None:  # pragma: no cover - old SimpleITK
        return st
    try:
        return downcast()
    except (RuntimeError, TypeError):  # pragma: no cover - unknown concrete type
        return st
