"""``regframe register-many``: register the pairs listed in a CSV file, locally or on a dask cluster.

``pairs.csv`` has a header with ``fixed`` and ``moving`` columns (paths,
relative to the CSV's folder) and optionally ``name``, ``fixed_mask`` and
``moving_mask``.  Writes ``OUTPUT/NAME.tfm`` for every pair that succeeded and
``OUTPUT/summary.csv`` (one row per pair: status, metric value, iterations,
error).  Exit status 1 when a pair failed (the others are still written).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text
from ..errors import InvalidInputError
from ..registration.defaults import METRIC_KINDS, TRANSFORM_KINDS
from ._common import read_image_arg

__all__ = ["add_parser", "run", "open_client", "read_pairs"]

ORDER = 61


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``register-many`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "register-many", help="register many pairs from a CSV file (optionally on a dask cluster)",
        description="Register every (fixed, moving) pair of PAIRS.csv with register()'s defaults. With "
                    "--scheduler the pairs run on that dask cluster, each image sent once.")
    p.add_argument("pairs", help="CSV with a header: fixed,moving[,name,fixed_mask,moving_mask]")
    p.add_argument("-t", "--transform", default="rigid", choices=TRANSFORM_KINDS, help="default rigid")
    p.add_argument("-m", "--metric", default="mattes", choices=METRIC_KINDS, help="default mattes")
    p.add_argument("--init", default="moments", choices=("moments", "geometry", "none"))
    p.add_argument("--iterations", type=int, default=None, help="maximum iterations per level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", default=None, help="dask scheduler address, e.g. tcp://10.0.0.1:8786")
    p.add_argument("-o", "--output", required=True, help="output folder")
    return p


def open_client(address: str | None) -> Any:
    """A ``dask.distributed.Client`` connected to ``address`` (None: no client)."""
    if address is None:
        return None
    from .._optional import require

    return require("distributed", "--scheduler").Client(address)


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a pairs CSV with paths resolved against its folder (names checked unique before any image is read)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pairs file '{path}' does not exist.")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"fixed", "moving"} <= set(rows[0]):
        raise InvalidInputError(
            f"pairs file '{path}': expected a header with 'fixed' and 'moving' columns and at least one row; "
            f"got columns {sorted(rows[0]) if rows else []}."
        )
    names = [(row.get("name") or "").strip() or f"pair_{k:04d}" for k, row in enumerate(rows)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInputError(
            f"pairs file '{path}': every pair needs its own name (its outputs are NAME.tfm); got the names "
            f"{repeated} more than once. Make the 'name' column unique, or leave it empty for pair_NNNN."
        )
    cache: dict[Path, Any] = {}

    def image(name: str) -> Any:
        p = (path.parent / name.strip()).resolve()
        if p not in cache:  # an image shared by several pairs is read (and sent) once
            cache[p] = read_image_arg(p, f"pairs file '{path}':")
        return cache[p]

    out = []
    for row, name in zip(rows, names):
        pair: dict[str, Any] = {"fixed": image(row["fixed"]), "moving": image(row["moving"])}
        for key in ("fixed_mask", "moving_mask"):
            if row.get(key):
                pair[key] = image(row[key])
        pair["name"] = name
        out.append(pair)
    return out


def run(args: argparse.Namespace, out: Any) -> int:
    """Run ``register-many``; returns the exit status."""
    from ..registration.batch import PairError, register_many
    from ..transforms import write_transform

    rows = read_pairs(args.pairs)
    names = [row.pop("name") for row in rows]
    kwargs: dict[str, Any] = {"transform": args.transform, "metric": args.metric, "seed": args.seed,
                              "initialization": None if args.init == "none" else args.init}
    if args.iterations is not None:
        kwargs["n_iterations"] = args.iterations
    client = open_client(args.scheduler)
    try:
        results = register_many(rows, client=client, progress="none" if out.quiet else "auto", **kwargs)
    finally:
        if client is not None:
            client.close()
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["index", "name", "status", "final_value", "iterations", "transform", "error"])
    records = []
    for k, (name, res) in enumerate(zip(names, results)):
        if isinstance(res, PairError):
            writer.writerow([k, name, "failed", "", "", "", f"{res.type}: {res.message}"])
            records.append({"name": name, "status": "failed", "error": f"{res.type}: {res.message}"})
            out.info(f"{name}: FAILED {res.type}: {res.message}")
            continue
        tfm = folder / f"{name}.tfm"
        write_transform(res.transform, tfm)
        writer.writerow([k, name, "ok", repr(res.final_value), res.n_iterations, tfm.name, ""])
        records.append({"name": name, "status": "ok", "final_value": res.final_value, "transform": str(tfm)})
        out.info(f"{name}: metric {res.final_value:.6g}, {res.n_iterations} iterations -> {tfm}")
    atomic_write_text(folder / "summary.csv", table.getvalue(), where="register-many")
    n_failed = sum(isinstance(r, PairError) for r in results)
    out.summary({"command": "register-many", "n_pairs": len(results), "n_failed": n_failed, "pairs": records})
    return 1 if n_failed else 0
