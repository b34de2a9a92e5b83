"""Bad inputs, one table: each gets a typed error saying what was expected, what was got, the fix.

Every row is ``(id, make_call, expected error type, message fragments)``; ``make_call``
receives a small context (tiny images, a temporary folder) and returns the call to make.
Command-line rows expect an exit status and a stderr fragment instead.  Rows marked
``needs_api`` exercise ``register()`` and pass once ``registration/api.py`` calls the
validators named in the reason (the lead wires them).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import regframe as rf
from regframe import cli
from regframe._validation import check_sampling
from regframe.errors import (
    InvalidInputError,
    OutputError,
    ShapeError,
    WrongTypeError,
)
from regframe.image import as_mask, check_image
from regframe.metrics import MeanSquares
from regframe.registration import ImagePyramid, LevelSchedule, RegistrationMethod

sitk = pytest.importorskip("SimpleITK")


class Ctx:
    """Small inputs shared by the rows (2-D 20x16 images, a temporary folder)."""

    def __init__(self, tmp: Path) -> None:
        rng = np.random.default_rng(3)
        self.tmp = tmp
        self.fixed = rf.Image(rng.random((16, 20)), spacing=(1.0, 1.5))
        self.moving = rf.Image(rng.random((16, 20)), spacing=(1.0, 1.5))
        self.series = rf.Image(rng.random((3, 4, 5, 6)))
        rf.write_image(self.fixed.with_array(self.fixed.array.astype(np.float32)), tmp / "f.mha")
        rf.write_transform(rf.TranslationTransform(2), tmp / "t.tfm")
        rf.write_image(self.series, tmp / "series.mha")

    def truncated(self) -> Path:
        data = (self.tmp / "f.mha").read_bytes()
        (self.tmp / "cut.mha").write_bytes(data[: len(data) - 400])
        return self.tmp / "cut.mha"


def _read_only_place() -> Path:
    """A folder nobody (not even root) may create files in: /sys."""
    probe = Path("/sys")
    if not probe.is_dir() or os.access(probe / "x", os.W_OK):
        pytest.skip("no read-only folder on this system")
    return probe


def _method() -> RegistrationMethod:
    return RegistrationMethod(metric=MeanSquares(), optimizer=rf.RegularStepGradientDescent(n_iterations=1),
                              schedule=LevelSchedule.single())


Row = tuple[str, Callable[[Ctx], Callable[[], Any]], type, tuple[str, ...]]

API_ROWS: list[Row] = [
    ("metric-ndarray",
     lambda c: lambda: MeanSquares().initialize(c.fixed.array, c.moving, rf.TranslationTransform(2)),
     WrongTypeError, ("'fixed' must be a regframe.Image", "array of shape (16, 20)", "regframe.Image(array")),
    ("method-ndarray",
     lambda c: lambda: _method().run(c.fixed.array, c.moving.array, rf.TranslationTransform(2)),
     WrongTypeError, ("'fixed' must be a regframe Image or ImagePyramid", "Wrap the array")),
    ("metric-4d",
     lambda c: lambda: MeanSquares().initialize(c.series, c.series, rf.TranslationTransform(3)),
     ShapeError, ("must be a 2-D or 3-D image", "got a 4-D image", "one volume at a time")),
    ("shrink-larger-than-image",
     lambda c: lambda: ImagePyramid(c.fixed, LevelSchedule((32, 1), (0.0, 0.0))),
     InvalidInputError, ("at least 2 voxels", "factor 32 at level 1", "Use factors <= 10")),
    ("method-shrink-larger-than-image",
     lambda c: lambda: RegistrationMethod(metric=MeanSquares(), optimizer=rf.RegularStepGradientDescent(),
                                          schedule=LevelSchedule((4, 1, 12), (0.0,) * 3)
                                          ).run(c.fixed, c.moving, rf.TranslationTransform(2)),
     InvalidInputError, ("factor 12 at level 3", "axis x", "has 20 voxels", "(10, 8)")),
    ("sampling-above-one", lambda c: lambda: check_sampling(1.5, "register()"),
     InvalidInputError, ("'sampling' must be a fraction of the voxels in (0, 1]", "got 1.5")),
    ("sampling-nan", lambda c: lambda: check_sampling(float("nan"), "register()"),
     InvalidInputError, ("(0, 1]", "got nan")),
    ("sampling-negative", lambda c: lambda: check_sampling(-0.5, "register()"),
     InvalidInputError, ("(0, 1]", "got -0.5")),
    ("sampling-string", lambda c: lambda: check_sampling("0.5", "register()"),
     InvalidInputError, ("(0, 1]", "got '0.5'")),
    ("sampling-bool", lambda c: lambda: check_sampling(True, "register()"),
     InvalidInputError, ("got True",)),
    ("sampler-margin-negative", lambda c: lambda: rf.metrics.RandomSampler(0.5, margin=-1),
     InvalidInputError, ("'margin' must be a non-negative integer", "0 for none", "got -1")),
    ("sampler-margin-float", lambda c: lambda: rf.metrics.FullSampler(margin=1.5),
     InvalidInputError, ("'margin' must be a non-negative integer", "1.5")),
    ("image-not-an-image", lambda c: lambda: check_image([[1, 2]], "fixed", "register()"),
     WrongTypeError, ("must be a regframe.Image", "builtins.list", "read_image")),
    ("mask-wrong-shape", lambda c: lambda: as_mask(np.ones((20, 16)), c.fixed, "fixed_mask", "register()"),
     ShapeError, ("shape of its image, (16, 20)", "ITK (x, y, z) order", "transpose")),
    ("read-truncated-mha", lambda c: lambda: rf.read_image(c.truncated()),
     InvalidInputError, ("truncated or corrupt", "cut.mha", "export the file again")),
    ("read-pixel-type-banana", lambda c: lambda: rf.read_image(c.tmp / "f.mha", pixel_type="banana"),
     InvalidInputError, ("'pixel_type' must be a real numeric numpy type", "'banana'")),
    ("write-image-missing-folder", lambda c: lambda: rf.write_image(c.fixed, c.tmp / "nope" / "x.mha"),
     OutputError, ("does not exist", "create it first")),
    ("write-image-read-only", lambda c: lambda: rf.write_image(c.fixed, _read_only_place() / "x.mha"),
     OutputError, ("not writable", "choose a writable place")),
    ("write-image-into-a-folder", lambda c: lambda: rf.write_image(c.fixed, c.tmp),
     OutputError, ("is a folder", "give a file name")),
    ("write-transform-read-only",
     lambda c: lambda: rf.write_transform(rf.TranslationTransform(2), _read_only_place() / "x.tfm"),
     OutputError, ("write_transform()", "not writable")),
    ("write-transform-h5-missing-folder",
     lambda c: lambda: rf.write_transform(rf.TranslationTransform(2), c.tmp / "nope" / "x.h5"),
     OutputError, ("write_transform()", "does not exist")),
    ("write-png-float-volume-names-the-format",
     lambda c: lambda: rf.write_image(rf.Image(c.series.array[0]), c.tmp / "v.png"),
     InvalidInputError, ("this format does not take this pixel type or dimension", ".mha")),
]

REGISTER_ROWS: list[Row] = [
    ("register-shrink-larger-than-image",
     lambda c: lambda: rf.register(c.fixed, c.moving, "translation", "mse",
                                   schedule=LevelSchedule((64, 1), (0.0, 0.0))),
     InvalidInputError, ("at least 2 voxels", "factor 64")),
    ("register-ndarray", lambda c: lambda: rf.register(c.fixed.array, c.moving.array),
     WrongTypeError, ("must be a regframe.Image", "Wrap the array")),
    ("register-4d", lambda c: lambda: rf.register(c.series, c.series, "translation", "mse"),
     ShapeError, ("got a 4-D image",)),
    ("register-sampling-above-one",
     lambda c: lambda: rf.register(c.fixed, c.moving, "translation", "mse", sampling=1.5),
     InvalidInputError, ("(0, 1]", "got 1.5")),
    ("register-sampling-nan",
     lambda c: lambda: rf.register(c.fixed, c.moving, "translation", "mse", sampling=float("nan")),
     InvalidInputError, ("(0, 1]", "got nan")),
]


@pytest.fixture
def ctx(tmp_path: Path) -> Ctx:
    return Ctx(tmp_path)


def _check(ctx: Ctx, make: Callable[[Ctx], Callable[[], Any]], error: type, fragments: tuple[str, ...]) -> None:
    call = make(ctx)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not [f for f in ctx.tmp.iterdir() if f.name.startswith(".~partial")]   # nothing half-written


@pytest.mark.parametrize("make, error, fragments", [r[1:] for r in API_ROWS], ids=[r[0] for r in API_ROWS])
def test_bad_input(ctx, make, error, fragments):
    _check(ctx, make, error, fragments)


@pytest.mark.parametrize("make, error, fragments", [r[1:] for r in REGISTER_ROWS], ids=[r[0] for r in REGISTER_ROWS])
def test_bad_register_input(ctx, make, error, fragments):
    _check(ctx, make, error, fragments)


def test_register_accepts_an_array_mask(ctx):
    """``fixed_mask=np.ones(fixed.shape)`` is taken in the fixed image's geometry (RegistrationMethod)."""
    mask = np.zeros(ctx.fixed.shape)
    mask[2:14, 3:17] = 1
    method = RegistrationMethod(metric=MeanSquares(), optimizer=rf.RegularStepGradientDescent(n_iterations=3),
                                schedule=LevelSchedule((2, 1), (1.0, 0.0)), fixed_mask=mask)
    as_image = RegistrationMethod(metric=MeanSquares(), optimizer=rf.RegularStepGradientDescent(n_iterations=3),
                                  schedule=LevelSchedule((2, 1), (1.0, 0.0)),
                                  fixed_mask=ctx.fixed.with_array(mask))
    a = method.run(ctx.fixed, ctx.moving, rf.TranslationTransform(2))
    b = as_image.run(ctx.fixed, ctx.moving, rf.TranslationTransform(2))
    np.testing.assert_array_equal(a.transform.parameters, b.transform.parameters)
    assert a.final_value == b.final_value


# ------------------------------------------------------------------ command line
CLI_ROWS = [
    ("resample-dtype-banana", ["resample", "{tmp}/f.mha", "{tmp}/t.tfm", "-o", "{tmp}/o.mha", "--dtype", "banana"],
     2, ("expected a numeric pixel type", "'banana'")),
    ("register-pixel-type-banana", ["register", "{tmp}/f.mha", "{tmp}/f.mha", "--pixel-type", "banana"],
     2, ("expected a numeric pixel type",)),
    ("resample-output-read-only", ["resample", "{tmp}/f.mha", "{tmp}/t.tfm", "-o", "/sys/o.mha"],
     1, ("not writable",)),
    ("resample-truncated-input", ["resample", "{tmp}/cut.mha", "{tmp}/t.tfm", "-o", "{tmp}/o.mha"],
     1, ("truncated or corrupt",)),
    ("register-4d-image", ["register", "{tmp}/series.mha", "{tmp}/series.mha", "-o", "{tmp}/r"],
     1, ("'FIXED' must be a 2-D or 3-D image", "got a 4-D image", "one volume at a time")),
    ("register-sampling-above-one", ["register", "{tmp}/f.mha", "{tmp}/f.mha", "--sampling", "1.5"],
     2, ("expected a number in (0, 1]",)),
    ("transform-points-output-missing-folder-is-created-but-read-only-fails",
     ["transform-points", "{tmp}/t.tfm", "-p", "1,2", "-o", "/sys/p.txt"], 1, ("not writable",)),
]


@pytest.mark.parametrize("argv, code, fragments", [r[1:] for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS])
def test_bad_command_line(ctx, argv, code, fragments, capsys):
    if any("/sys/" in a for a in argv):
        _read_only_place()
    ctx.truncated()
    out, err = io.StringIO(), io.StringIO()
    got = cli.main([a.format(tmp=ctx.tmp) for a in argv], stdout=out, stderr=err)
    text = err.getvalue() + capsys.readouterr().err      # argparse writes usage errors to sys.stderr
    assert got == code, text
    assert "Traceback" not in text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_register_accepts_an_array_mask_end_to_end(ctx):
    """``register(f, m, fixed_mask=np.ones(f.shape))`` (used to raise AttributeError)."""
    from regframe.datasets import brain_pair

    fixed, moving = brain_pair(2, 64, seed=1)     # large enough for a coarse level (rotation search)
    res = rf.register(fixed, moving, "rigid", "mse", fixed_mask=np.ones(fixed.shape), n_iterations=2)
    assert np.all(np.isfinite(res.transform.parameters))
