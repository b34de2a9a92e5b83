"""``register_many()``: many independent registrations, locally or on a dask cluster.

Every pair runs :func:`~regframe.registration.register` with the same keywords
(and its own, if given).  Results come back in input order; a pair that raises
becomes a :class:`PairError` in its slot and the other pairs complete.

With a :class:`dask.distributed.Client` the pairs run as tasks on its cluster
(a ``LocalCluster`` on one machine, or any scheduler address); each image is
scattered once, however many pairs share it, and each task sets numba to one
thread (``numba_threads``) so that single-threaded workers do not
oversubscribe their cores, and lets glibc keep large blocks on its heap
(:func:`keep_large_blocks`: dask's workers start with a setting that returns
every block over 128 KiB to the system, which made each registration 40 %
slower).  Without a client the pairs run one after the other
in this process, each with all numba threads: regframe's kernels are already
parallel, so a local pool of processes would only add pickling and
compilation costs.  Results are bit-identical either way: regframe's kernels
do not depend on the thread count, and every pair gets the same ``seed``.
"""

from __future__ import annotations

import ctypes
import inspect
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .._optional import require
from .._validation import check_choice, check_sampling
from ..errors import InvalidInputError
from ..image import Image
from .method import RegistrationResult

__all__ = ["register_many", "PairError", "PairProgress", "check_register_keywords"]

Pair = tuple[Image, Image] | tuple[Image, Image, Mapping[str, Any]] | Mapping[str, Any]


@dataclass(frozen=True)
class PairError:
    """The failure of one pair of :func:`register_many` (returned in its slot, never raised).

    Attributes
    ----------
    index : int
        Position of the pair in the input.
    type : str
        Exception class name, e.g. ``"NoOverlapError"``.
    message : str
        ``str(exception)``.
    traceback : str
        The formatted traceback (from the worker, for dask runs).
    """

    index: int
    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, index: int, exc: BaseException) -> PairError:
        """Record ``exc`` (with its traceback) as the error of pair ``index``."""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(int(index), type(exc).__name__, str(exc), tb)

    def __str__(self) -> str:
        return f"pair {self.index}: {self.type}: {self.message}"


class PairProgress:
    """Progress over a number of items: a tqdm bar on a terminal, else plain lines.

    Parameters
    ----------
    total : int
        Number of items.
    label : str
        Shown before the counts.
    mode : {"auto", "bar", "lines", "none"}
        As :class:`~regframe.progress.ProgressReporter`.
    stream : text stream, optional
        Default ``sys.stderr``.
    """

    def __init__(self, total: int, label: str = "pairs", *, mode: str = "auto",
                 stream: TextIO | None = None) -> None:
        check_choice(mode, ("auto", "bar", "lines", "none"), where="PairProgress()", name="mode")
        self.total, self.label, self.done, self.failed = int(total), label, 0, 0
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        tty = bool(isatty()) if isatty is not None else False
        tqdm = None
        if mode in ("auto", "bar"):
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:  # pragma: no cover - depends on the environment
                tqdm = None
        self.mode = mode if mode in ("lines", "none") else ("bar" if tqdm is not None and (tty or mode == "bar") else "lines")
        self._bar = tqdm(total=self.total, desc=label, file=self.stream, unit="pair") if self.mode == "bar" else None
        self._every = max(1, self.total // 10)
        self._start = time.perf_counter()

    def update(self, failed: bool = False) -> None:
        """One more item finished (``failed``: it ended in an error)."""
        self.done += 1
        self.failed += int(failed)
        if self._bar is not None:
            self._bar.update(1)
        elif self.mode == "lines" and (self.done % self._every == 0 or self.done == self.total):
            elapsed = time.perf_counter() - self._start
            fail = f", {self.failed} failed" if self.failed else ""
            self.stream.write(f"[{self.label}] {self.done}/{self.total} done{fail} ({elapsed:.1f} s)\n")

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _normalise(pairs: Sequence[Pair]) -> list[tuple[Image, Image, dict[str, Any]]]:
    out = []
    for k, pair in enumerate(pairs):
        if isinstance(pair, Mapping):
            extra = dict(pair)
            try:
                fixed, moving = extra.pop("fixed"), extra.pop("moving")
            except KeyError:
                raise InvalidInputError(
                    f"register_many(): pair {k} is a mapping without 'fixed' and 'moving' keys; got keys "
                    f"{sorted(pair)}."
                ) from None
        elif isinstance(pair, (tuple, list)) and len(pair) in (2, 3):
            fixed, moving = pair[0], pair[1]
            extra = dict(pair[2]) if len(pair) == 3 else {}
        else:
            raise InvalidInputError(
                f"register_many(): pair {k} must be (fixed, moving), (fixed, moving, keywords) or a mapping "
                f"with 'fixed' and 'moving'; got {type(pair).__name__}."
            )
        if not isinstance(fixed, Image) or not isinstance(moving, Image):
            raise InvalidInputError(
                f"register_many(): pair {k} must hold regframe Images; got {type(fixed).__name__} and "
                f"{type(moving).__name__}. Read files with regframe.read_image first."
            )
        out.append((fixed, moving, extra))
    return out


#: glibc's ``mallopt`` parameter number of the mmap threshold.
_M_MMAP_THRESHOLD = -3


def keep_large_blocks(threshold: int = 32 * 2**20) -> bool:
    """Let glibc serve blocks below ``threshold`` bytes from its heap; True when it took the setting.

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``.  Setting
    any ``MALLOC_*`` threshold switches off glibc's dynamic mmap threshold, so
    every array over 128 KiB is then mapped fresh from the system and page-faulted
    in on each allocation; a registration allocates many such temporaries
    (samples, gradients, pyramid levels) and ran 40 % slower in a worker
    (0.21 s instead of 0.15 s for a 256x256 rigid pair).  32 MiB is the cap
    glibc's dynamic threshold would itself reach.  The trim threshold (memory
    returned to the system when the heap's top is free) is left as the worker
    set it.  No effect, and False, outside glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # musl and other C libraries
        return False


def run_pair(index: int, fixed: Image, moving: Image, keywords: Mapping[str, Any],
             numba_threads: int | None = None, worker: bool = False) -> RegistrationResult | PairError:
    """One :func:`~regframe.registration.register` call; exceptions become a :class:`PairError`.

    This is the task :func:`register_many` ships to dask workers (``worker=True``:
    :func:`keep_large_blocks` first).  With ``numba_threads`` it first sets
    numba's thread count for the calling thread (results do not depend on it).
    """
    try:
        if worker:
            keep_large_blocks()
        if numba_threads is not None:
            import numba

            numba.set_num_threads(int(numba_threads))
        from .api import register

        return register(fixed, moving, **keywords)
    except Exception as exc:  # noqa: BLE001 - every failure is returned as the pair's error
        return PairError.from_exception(index, exc)


def check_register_keywords(keywords: Mapping[str, Any], where: str) -> None:
    """Check :func:`~regframe.registration.register` keywords before any pair runs.

    Unknown names (a typo such as ``transfrom=``) and the string options that
    are cheap to check (``transform``, ``metric``, ``optimizer``,
    ``initialization``, ``sampling``) raise the
    :class:`~regframe.errors.InvalidInputError` that every pair would
    otherwise raise on its own.

    Parameters
    ----------
    keywords : mapping
        The keywords given for the pairs.
    where : str
        Names the caller in the messages, e.g. ``"register_many()"``.
    """
    from ..metrics.base import Metric
    from ..optimizers import Optimizer
    from ..transforms.base import Transform
    from .api import register
    from .defaults import LINEAR_KINDS, METRIC_KINDS, OPTIMIZER_KINDS
    from .presets import PRESETS
    from .stages.initialize import INITIALIZATION_MODES

    valid = [name for name in inspect.signature(register).parameters if name not in ("fixed", "moving")]
    unknown = sorted(set(keywords) - set(valid))
    if unknown:
        raise InvalidInputError(
            f"{where}: unknown register() keyword(s) {unknown}; the valid ones are {valid}. Check the spelling."
        )
    if "transform" in keywords and not isinstance(keywords["transform"], Transform):
        check_choice(keywords["transform"], (*LINEAR_KINDS, *PRESETS), where=where, name="transform")
    for name, kinds, instance in (("metric", METRIC_KINDS, Metric), ("optimizer", OPTIMIZER_KINDS, Optimizer)):
        value = keywords.get(name)
        if value is not None and not isinstance(value, instance):
            check_choice(value, kinds, where=where, name=name)
    if keywords.get("initialization") not in INITIALIZATION_MODES:
        named = [m for m in INITIALIZATION_MODES if m is not None]
        raise InvalidInputError(
            f"{where}: 'initialization' must be one of {named} or None; got {keywords['initialization']!r}."
        )
    check_sampling(keywords.get("sampling"), where)


def register_many(
    pairs: Sequence[Pair],
    *,
    client: Any = None,
    numba_threads: int | None = 1,
    progress: str | PairProgress = "auto",
    **register_kwargs: Any,
) -> list[RegistrationResult | PairError]:
    """Register many independent pairs; results in input order.

    Parameters
    ----------
    pairs : sequence
        Each ``(fixed, moving)``, ``(fixed, moving, keywords)`` or a mapping
        with ``"fixed"``, ``"moving"`` and further :func:`register` keywords
        (per-pair keywords override ``register_kwargs``).
    client : dask.distributed.Client, optional
        Run the pairs on this client's cluster (needs ``regframe[distributed]``).
        Default: serially in this process.
    numba_threads : int or None, default 1
        numba threads per dask task (None: leave the workers' setting).  Not
        used without a client.
    progress : {"auto", "bar", "lines", "none"} or PairProgress
        Progress over the pairs on stderr, or a :class:`PairProgress` to
        advance (shared by several calls; not closed here).
    **register_kwargs
        Keywords of :func:`~regframe.registration.register` (``transform``,
        ``metric``, ``seed``, ...), the same for every pair; they must
        pickle for dask runs (callbacks usually do not).

    Returns
    -------
    list of RegistrationResult or PairError
        ``out[k]`` belongs to ``pairs[k]``; a pair that raised holds a
        :class:`PairError` (type, message, traceback) and the others complete.

    Raises
    ------
    InvalidInputError
        Before any pair runs: a malformed pair, or keywords that every pair
        would reject (an unknown name, an unknown transform, metric, optimizer
        or initialization, a bad sampling fraction; see
        :func:`check_register_keywords`).
    """
    items = _normalise(pairs)
    tasks = [(fixed, moving, {**register_kwargs, **extra}) for fixed, moving, extra in items]
    check_register_keywords(register_kwargs, "register_many()")
    for k, (_, _, extra) in enumerate(items):
        if extra:
            check_register_keywords({**register_kwargs, **extra}, f"register_many() pair {k}")
    own = not isinstance(progress, PairProgress)
    bar = PairProgress(len(tasks), "register_many", mode=progress) if own else progress
    try:
        if client is None:
            results: list[RegistrationResult | PairError] = []
            for k, (fixed, moving, kw) in enumerate(tasks):
                results.append(run_pair(k, fixed, moving, kw))
                bar.update(isinstance(results[-1], PairError))
            return results
        return _run_dask(client, tasks, numba_threads, bar)
    finally:
        if own:
            bar.close()


def _run_dask(client: Any, tasks: list[tuple[Image, Image, dict[str, Any]]], numba_threads: int | None,
              bar: PairProgress) -> list[RegistrationResult | PairError]:
    distributed = require("distributed", "register_many(client=...)")
    unique: dict[int, Image] = {}
    for fixed, moving, _ in tasks:
        unique.setdefault(id(fixed), fixed)
        unique.setdefault(id(moving), moving)
    keys = list(unique)
    scattered = dict(zip(keys, client.scatter([unique[k] for k in keys], hash=False)))  # each image once
    futures = [
        client.submit(run_pair, k, scattered[id(fixed)], scattered[id(moving)], kw, numba_threads, True, pure=False)
        for k, (fixed, moving, kw) in enumerate(tasks)
    ]
    slot = {f.key: k for k, f in enumerate(futures)}
    results: list[RegistrationResult | PairError | None] = [None] * len(tasks)
    for future in distributed.as_completed(futures):
        k = slot[future.key]
        try:
            results[k] = future.result()
        except Exception as exc:  # noqa: BLE001 - a lost worker, an unpicklable result, ...
            results[k] = PairError.from_exception(k, exc)
        bar.update(isinstance(results[k], PairError))
    return results  # type: ignore[return-value]
