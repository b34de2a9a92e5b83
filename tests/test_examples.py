"""Every script in ``examples/`` runs, through its ``main()``, with tiny iteration counts."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))

#: keyword arguments an example's main() may accept, kept small for the test suite
TINY = {"n_iterations": 15, "iterations": 5, "size": 40, "quick": True}
#: names an example's main() may use for its output folder
OUTPUT_NAMES = ("output_dir", "out")


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_exist():
    names = {p.stem for p in EXAMPLES}
    assert {"multimodal_rigid_2d", "affine_3d", "observer_live_plot", "custom_transform"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                     # anything written by default lands here
    module = _load(path)
    assert callable(getattr(module, "main", None)), f"{path.name} must define main()"
    assert module.__doc__, f"{path.name} needs a docstring saying what it shows"
    params = inspect.signature(module.main).parameters
    kwargs = {k: v for k, v in TINY.items() if k in params}
    for name in OUTPUT_NAMES:
        if name in params:
            kwargs[name] = tmp_path
    out = module.main(**kwargs)
    assert capsys.readouterr().out.strip(), f"{path.name} should print what it found"
    # examples with a known answer report their error: even tiny runs must get it right
    if isinstance(out, dict) and "mean_error_mm" in out:
        assert out["mean_error_mm"] < 0.5, (path.name, out["mean_error_mm"])
    if path.stem == "observer_live_plot":
        assert out.n_calls >= 5 and out.n_draws >= 2      # redrawn while the run went on
        png = tmp_path / "observer_live_plot.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if path.stem == "multimodal_rigid_2d":
        assert Path(out["qc"]).is_file()
