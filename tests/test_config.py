"""TOML multi-stage configurations: parsing, validation, stage chaining, and a real run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import regframe as rf
from regframe.config import RegistrationConfig, Stage, combine_results, load_config, parse_config
from regframe.datasets import brain_pair
from regframe.errors import InvalidInputError
from regframe.progress import ProgressReporter
from regframe.registration import make_transform, resample
from regframe.registration.pipeline import Link, TransformChain

TOML = """
[input]
fixed = "images/fixed.mha"
moving = "/abs/moving.mha"

[output]
prefix = "out/result"

[defaults]
metric = "mse"
n_iterations = 30
seed = 3

[[stage]]
transform = "rigid"
levels = [2, 1]
sigmas = [1.0, 0.0]

[[stage]]
transform = "affine"
metric = "ncc"
levels = [1]
sampling = 0.5
name = "fine affine"
"""


def test_parse_defaults_stages_and_paths(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    cfg = load_config(path)
    assert isinstance(cfg, RegistrationConfig)
    assert [s.transform for s in cfg.stages] == ["rigid", "affine"]
    assert [s.metric for s in cfg.stages] == ["mse", "ncc"]          # default and override
    assert all(s.n_iterations == 30 and s.seed == 3 for s in cfg.stages)
    sched = cfg.stages[0].schedule()
    assert sched.shrink_factors == (2, 1) and sched.smoothing_sigmas == (1.0, 0.0)
    assert cfg.stages[1].sampling == 0.5 and cfg.stages[1].label == "fine affine"
    assert cfg.fixed == tmp_path.resolve() / "images" / "fixed.mha"   # relative to the file
    assert str(cfg.moving) == "/abs/moving.mha"
    assert cfg.output == tmp_path.resolve() / "out" / "result"
    assert cfg.source == path


def test_automatic_schedule_and_default_sigmas():
    cfg = parse_config('[[stage]]\ntransform = "translation"\n[[stage]]\ntransform="rigid"\nlevels=[4,1]\n')
    assert cfg.stages[0].schedule() is None
    assert cfg.stages[1].schedule().smoothing_sigmas == (1.5, 0.0)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "[[stage]]"),
        ("[[stage]]\nmetric = 'mse'\n", "needs a 'transform'"),
        ("[[stage]]\ntransform = 'rigid'\nn_iteration = 5\n", "unknown keys ['n_iteration']"),
        ("[[stage]]\ntransform = 'rigid'\nsigmas = [1.0]\n", "'sigmas' given without 'levels'"),
        ("[[stage]]\ntransform = 'rigid'\nsampling = 2.0\n", "fraction in (0, 1]"),
        ("[[stage]]\ntransform = 'rigid'\nn_iterations = 0\n", "integer >= 1"),
        ("[[stage]]\ntransform = 'rigid'\nlevels = [2, 1]\nsigmas = [1.0]\n", "same"),
        ("[defaults]\ntransform = 'rigid'\n[[stage]]\ntransform = 'rigid'\n", "not in [defaults]"),
        ("[stages]\nx = 1\n", "unknown top-level keys ['stages']"),
        ("[input]\nfixd = 'a'\n[[stage]]\ntransform = 'rigid'\n", "unknown [input] keys"),
        ("[[stage]\n", "invalid TOML"),
    ],
)
def test_invalid_configurations_say_what_is_wrong(text, fragment):
    with pytest.raises(InvalidInputError) as err:
        parse_config(text)
    assert fragment in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml")


def test_register_keywords_pass_through_options():
    cfg = parse_config("[[stage]]\ntransform = 'rigid'\noptimizer = 'regular_step'\nrotation_search = false\n")
    assert cfg.stages[0].optimizer == "regular_step" and cfg.stages[0].rotation_search is False


_angles = st.floats(-1.2, 1.2)
_coord = st.floats(-50, 50)


@settings(max_examples=25, deadline=None)
@given(theta=_angles, t=st.tuples(_coord, _coord), c=st.tuples(_coord, _coord))
def test_linear_chaining_preserves_the_mapping_2d(theta, t, c):
    rigid = make_transform("rigid", 2)
    rigid.fixed_parameters = c
    rigid.parameters = [theta, *t]
    pts = np.array([[0.0, 0.0], [30.0, -20.0], [-45.0, 12.0]])
    for kind in ("similarity", "affine"):
        conv = _absorb(rigid, kind)
        assert conv.itk_name == make_transform(kind, 2).itk_name
        np.testing.assert_allclose(conv.transform_points(pts), rigid.transform_points(pts), atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(v=st.tuples(_angles, _angles, _angles), t=st.tuples(_coord, _coord, _coord))
def test_linear_chaining_preserves_the_mapping_3d(v, t):
    rigid = make_transform("rigid", 3)
    rigid.fixed_parameters = [5.0, -3.0, 2.0]
    rigid.update_parameters(np.array([*v, *t]) * np.array([0.5, 0.5, 0.5, 1, 1, 1]))
    pts = np.array([[0.0, 0.0, 0.0], [30.0, -20.0, 10.0], [-45.0, 12.0, -7.0]])
    conv = _absorb(rigid, "affine")
    np.testing.assert_allclose(conv.transform_points(pts), rigid.transform_points(pts), atol=1e-9)


def test_no_conversion_to_a_less_general_kind():
    assert _absorb(make_transform("affine", 2), "rigid") is None
    assert _absorb(make_transform("affine", 2), "similarity") is None


def _absorb(previous, kind):
    """What a linear stage of ``kind`` starts from after a stage that produced ``previous``."""
    return TransformChain((Link("previous", previous),)).absorbable(kind)


def test_frozen_initial_transform_is_never_absorbed():
    chain = TransformChain.start(make_transform("rigid", 2))
    assert chain.absorbable("affine") is None


@pytest.fixture(scope="module")
def moved_pair():
    fixed, base = brain_pair(2, 48, seed=1)
    truth = rf.Euler2DTransform()
    truth.fixed_parameters = fixed.physical_center()
    truth.parameters = [np.deg2rad(8.0), 3.0, -2.0]
    moving = resample(base, truth.inverse(), reference=base, interpolator="bspline")
    return fixed, moving, truth


def test_rigid_then_affine_recovers_a_known_transform(moved_pair):
    fixed, moving, truth = moved_pair
    cfg = parse_config(
        "[defaults]\nmetric='mse'\nn_iterations=60\nrotation_search=false\n"
        "[[stage]]\ntransform='rigid'\nlevels=[2,1]\nsigmas=[1.0,0.0]\n"
        "[[stage]]\ntransform='affine'\nlevels=[1]\nsigmas=[0.0]\n"
    )
    reporter = ProgressReporter(mode="none")
    stages = cfg.run_stages(fixed, moving, callbacks=[reporter])
    assert [r.transform.itk_name for r in stages] == ["Euler2DTransform", "AffineTransform"]
    combined = combine_results(stages)
    assert combined.transform.itk_name == "AffineTransform"       # converted, not composed
    assert combined.n_iterations == sum(r.n_iterations for r in stages)
    assert len(combined.history) == sum(len(r.history) for r in stages)
    pts = fixed.voxel_points()
    err = np.linalg.norm(combined.transform.transform_points(pts) - truth.transform_points(pts), axis=1)
    assert err.mean() < 0.2, err.mean()
    # the reporter was told about both stages by name
    assert {lv["stage"] for lv in reporter.levels} == {1, 2}


def test_non_convertible_chain_composes(moved_pair):
    fixed, moving, truth = moved_pair
    cfg = RegistrationConfig(stages=(Stage("affine", "mse", 20, levels=(2,), sigmas=(1.0,)),
                                     Stage("translation", "mse", 10, levels=(1,), sigmas=(0.0,))))
    res = cfg.run(fixed, moving)
    assert res.transform.itk_name == "CompositeTransform"
    pts = fixed.voxel_points()[::7]
    err = np.linalg.norm(res.transform.transform_points(pts) - truth.transform_points(pts), axis=1)
    assert err.mean() < 0.5, err.mean()


def test_bspline_stage_options_are_checked_against_register_bspline():
    cfg = parse_config("[[stage]]\ntransform = 'bspline'\ncontrol_point_spacing = 20.0\nn_grid_levels = 2\n")
    assert dict(cfg.stages[0].options) == {"control_point_spacing": 20.0, "n_grid_levels": 2}
    with pytest.raises(InvalidInputError, match="control_point_spacing"):
        parse_config("[[stage]]\ntransform = 'rigid'\ncontrol_point_spacing = 20.0\n")


def test_bspline_stage_builds_on_the_previous_result(moved_pair):
    fixed, moving, _ = moved_pair
    cfg = parse_config(
        "[defaults]\nmetric = 'mse'\nrotation_search = false\n"
        "[[stage]]\ntransform = 'rigid'\nlevels = [2]\nn_iterations = 20\n"
        "[[stage]]\ntransform = 'bspline'\nlevels = [1]\nn_iterations = 3\nn_grid_levels = 1\n"
    )
    rigid, deformable = cfg.run_stages(fixed, moving)
    final = deformable.transform
    assert final.itk_name == "CompositeTransform"
    kinds = [m.itk_name for m in final.transforms]
    assert kinds[0] == "Euler2DTransform" and kinds[-1] == "BSplineTransform"
    # the rigid stage's result is the fixed linear part: not re-optimised, not replaced
    pts = fixed.voxel_points()[::11]
    np.testing.assert_array_equal(final.transforms[0].transform_points(pts),
                                  rigid.transform.transform_points(pts))
