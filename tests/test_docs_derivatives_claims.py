"""docs/derivatives.md says what its own snippet shows, and names where updates happen.

The page used to claim the rotation component is "two orders of magnitude" larger
than the translation components while its snippet printed about 4x and 12x.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np

import regframe as rf
from regframe.datasets import brain_pair
from regframe.metrics import MeanSquares

PAGE = Path(__file__).resolve().parents[1] / "docs" / "derivatives.md"


def test_lever_arm_ratio_in_the_text_matches_the_snippet():
    fixed, moving = brain_pair(ndim=2)
    t = rf.Euler2DTransform()
    t.fixed_parameters = fixed.physical_center()
    t.parameters = [0.05, 2.0, -1.0]               # the snippet's parameters
    metric = MeanSquares()
    metric.initialize(fixed, moving, t)
    _, grad = metric.value_and_gradient()
    r_tx, r_ty = abs(grad[0] / grad[1]), abs(grad[0] / grad[2])
    text = PAGE.read_text()
    assert "two orders of magnitude" not in text
    stated = re.search(r"prints about (\d+)x the \$t_x\$ and (\d+)x the \$t_y\$", text)
    assert stated, "the page must state the snippet's ratios"
    assert abs(r_tx - int(stated.group(1))) < 0.5 and abs(r_ty - int(stated.group(2))) < 0.5


def test_every_optimizer_is_placed_in_the_module_the_page_names():
    text = PAGE.read_text()
    rows = re.findall(r"^\| (`[^|]+`) \| `([a-z_]+)\.py` \|", text, flags=re.M)
    named = {}
    for classes, module in rows:
        for cls in re.findall(r"`(\w+)`", classes):
            named[cls] = module
    import regframe.optimizers as opt

    optimizers = {n for n in dir(opt) if isinstance(getattr(opt, n), type)
                  and issubclass(getattr(opt, n), opt.Optimizer) and getattr(opt, n) is not opt.Optimizer}
    assert optimizers <= set(named), f"not placed on the page: {sorted(optimizers - set(named))}"
    for cls, module in named.items():
        mod = importlib.import_module(f"regframe.optimizers.{module}")
        assert hasattr(mod, cls) and "update_parameters" in Path(mod.__file__).read_text(), (cls, module)
    assert np.all([m in text for m in ("transforms/versor.py", "L-BFGS", "sqrt(s)")])
