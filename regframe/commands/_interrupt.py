"""Ctrl-C for the command line that is never swallowed.

Python raises ``KeyboardInterrupt`` in whatever Python frame runs when SIGINT
arrives.  During a first run that is often llvmlite's object-cache callback,
which ctypes calls from C: an exception there is printed as "Exception
ignored ..." and dropped, and the command ran on to exit 0.  The handler here
defers the interrupt while llvmlite code runs (it only records it) and raises
it everywhere else; :func:`raise_if_interrupted` is called at every
optimizer iteration and when the command ends, so a deferred interrupt is
raised at the next safe point.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_pending = False


def _in_llvmlite(frame: FrameType | None) -> bool:
    """Whether ``frame`` is llvmlite code (where a raised exception would be ignored)."""
    return frame is not None and "llvmlite" in frame.f_code.co_filename


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True
    if not _in_llvmlite(frame):
        raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C was deferred."""
    if _pending:
        raise KeyboardInterrupt


@contextmanager
def sigint_deferred_in_compiler() -> Iterator[None]:
    """Install the handler for the duration of a command (main thread only)."""
    global _pending
    _pending = False
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # embedded in a program with its own SIGINT handling: leave it alone
        return
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _pending = False
