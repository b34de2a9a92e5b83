"""Atomic output files: write under a temporary name, rename when complete.

Every file regframe writes (images, transforms, pictures, point lists) goes
through :func:`atomic_path`, so a crash, an error or Ctrl-C never leaves a
half-written file under the requested name: the temporary file is removed and
an existing file of that name is left untouched.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

__all__ = ["atomic_path", "atomic_write_text", "PARTIAL_MARK"]

#: Every temporary name starts with this (then a random token and the final name).
PARTIAL_MARK = ".~partial-"


def _fail(where: str, path: Path, exc: OSError) -> OutputError:
    parent = path.parent
    if not parent.exists():
        why = f"the folder '{parent}' does not exist; create it first or choose another path"
    elif not parent.is_dir():
        why = f"'{parent}' is not a folder; choose another path"
    elif path.is_dir():
        why = f"'{path}' is a folder; give a file name"
    elif isinstance(exc, PermissionError):
        why = f"the folder '{parent}' is not writable (permission denied); choose a writable place"
    else:
        why = f"{exc.strerror or exc}; check the disk space and the path"
    return OutputError(f"{where}: cannot write '{path}': {why}.")


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, where: str = "write",
                staging_folder: bool = False) -> Iterator[Path]:
    """A temporary path in the folder of ``path``; renamed to ``path`` on success.

    The temporary name ends with the final file name, so writers that choose
    the format from the extension (SimpleITK, matplotlib) see the same one.
    On any exception (including ``KeyboardInterrupt``) the temporary file is
    removed and the exception propagates; ``path`` is unchanged.

    Parameters
    ----------
    path : str or path-like
        The file to produce.
    where : str
        Names the caller in error messages, e.g. ``"write_image()"``.
    staging_folder : bool, default False
        For formats that write a header and a data file named after it
        (``.mhd`` + ``.raw``): yield ``path``'s name inside a temporary folder;
        on success every file written there is moved beside ``path``, the file
        ``path`` itself last.

    Yields
    ------
    Path
        Where to write (an empty file exists there already unless
        ``staging_folder``).

    Raises
    ------
    OutputError
        The folder is missing or not writable, or ``path`` is a folder.
    """
    final = Path(path)
    if final.is_dir():
        raise _fail(where, final, IsADirectoryError(str(final)))
    tmp = final.with_name(f"{PARTIAL_MARK}{secrets.token_hex(4)}-{final.name}")
    try:
        if staging_folder:
            tmp.mkdir()
        else:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as exc:
        raise _fail(where, final, exc) from exc
    target = tmp / final.name if staging_folder else tmp
    try:
        yield target
        try:
            if staging_folder:
                for f in sorted(tmp.iterdir(), key=lambda f: f.name == final.name):
                    os.replace(f, final.parent / f.name)
            else:
                os.replace(tmp, final)
        except OSError as exc:
            raise _fail(where, final, exc) from exc
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    """Remove a temporary file or staging folder, if still there."""
    try:
        if path.is_dir():
            for f in path.iterdir():
                f.unlink()
            path.rmdir()
        elif path.exists():
            path.unlink()
    except OSError:  # pragma: no cover - nothing more we can do
        pass


def atomic_write_text(path: str | os.PathLike[str], text: str, *, where: str = "write",
                      encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, where=where) as tmp:
        try:
            tmp.write_text(text, encoding=encoding)
        except OSError as exc:
            raise _fail(where, Path(path), exc) from exc
