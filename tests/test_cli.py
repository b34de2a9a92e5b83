"""The ``regframe`` command line and the progress reporter.

Fast tests use tiny phantoms written to a temporary folder; the real-data runs
(elastix brain pair with masks, 3-D lung CT moved by a known affine) are
marked slow.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import regframe as rf

from conftest import Uphill
from regframe import cli
from regframe.datasets import brain_pair
from regframe.progress import ProgressReporter
from regframe.registration import RegistrationState, resample

sitk = pytest.importorskip("SimpleITK")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Fixed/moving phantom files and the true fixed->moving transform."""
    d = tmp_path_factory.mktemp("pair")
    fixed, base = brain_pair(2, 48, seed=2)
    truth = rf.Euler2DTransform()
    truth.fixed_parameters = fixed.physical_center()
    truth.parameters = [np.deg2rad(10.0), 3.0, -2.5]
    moving = resample(base, truth.inverse(), reference=base, interpolator="bspline", dtype=np.float32)
    rf.write_image(fixed, d / "fixed.mha")
    rf.write_image(moving, d / "moving.mha")
    rf.write_transform(truth, d / "truth.tfm")
    return d, fixed, moving, truth


def _error_mm(tfm: Path, truth, fixed) -> float:
    got = rf.read_transform(tfm)
    pts = fixed.voxel_points()
    return float(np.mean(np.linalg.norm(got.transform_points(pts) - truth.transform_points(pts), axis=1)))


# ------------------------------------------------------------------ parser / errors
def test_help_and_usage_errors(capsys):
    assert cli.main(["--help"]) == 0
    assert "register" in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["register", "--levels", "4,x"]) == 2


def test_missing_file_is_a_clear_error(tmp_path):
    code, out, err = run("register", tmp_path / "a.mha", tmp_path / "b.mha", "-o", tmp_path / "x")
    assert code == 1 and "fixed image" in err and "does not exist" in err
    code, out, err = run("--json", "register", tmp_path / "a.mha", tmp_path / "b.mha", "-o", tmp_path / "x")
    assert code == 1 and "does not exist" in json.loads(out)["error"]


def test_unknown_transform_kind_names_the_choices(pair, tmp_path):
    d, *_ = pair
    code, _, err = run("register", d / "fixed.mha", d / "moving.mha", "-t", "warp", "-o", tmp_path / "r")
    assert code == 1 and "'affine'" in err and "'warp'" in err


# ------------------------------------------------------------------------ register
def test_register_writes_outputs_that_open_in_simpleitk(pair, tmp_path):
    d, fixed, moving, truth = pair
    prefix = tmp_path / "sub" / "res"
    code, out, err = run("--json", "register", d / "fixed.mha", d / "moving.mha", "-t", "rigid", "-m", "mse",
                         "--levels", "2,1", "--sigmas", "1,0", "--iterations", "60", "--no-rotation-search",
                         "-o", prefix)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["command"] == "register" and summary["transform_type"] == "Euler2DTransform"
    assert summary["metric_after"] < 0.2 * summary["metric_before"]      # mean squares
    assert len(summary["iterations_per_level"]) == 2
    # progress is visible on stderr (plain lines: not a terminal)
    assert "level 1/" in err or "level 1]" in err
    assert "metric" in err
    for role, suffix in (("transform", ".tfm"), ("resampled", "_resampled.mha"), ("qc", "_qc.png")):
        assert summary["outputs"][role] == str(prefix) + suffix
        assert Path(summary["outputs"][role]).is_file()
    st = sitk.ReadTransform(str(prefix) + ".tfm")
    assert st.GetName() == "Euler2DTransform"
    img = sitk.ReadImage(str(prefix) + "_resampled.mha")
    assert img.GetSize() == tuple(fixed.size)
    assert img.GetPixelID() == sitk.sitkFloat32                # the moving image's pixel type
    png = sitk.ReadImage(str(prefix) + "_qc.png")
    assert png.GetSize()[0] > 400
    assert _error_mm(Path(str(prefix) + ".tfm"), truth, fixed) < 0.2
    # the resampled image is aligned: much closer to the fixed one than the moving image was
    after = sitk.GetArrayFromImage(img).astype(float)
    f = fixed.array.astype(float)
    assert np.mean((after - f) ** 2) < 0.2 * np.mean((moving.array.astype(float) - f) ** 2)


def test_register_quiet_prints_nothing(pair, tmp_path):
    d, *_ = pair
    code, out, err = run("-q", "register", d / "fixed.mha", d / "moving.mha", "-t", "translation", "-m",
                         "mse", "--levels", "1", "--iterations", "5", "--no-qc", "-o", tmp_path / "q")
    assert code == 0 and out == "" and err == ""
    assert (tmp_path / "q.tfm").is_file() and not (tmp_path / "q_qc.png").exists()


def test_register_with_config_and_initial_transform(pair, tmp_path):
    d, fixed, moving, truth = pair
    cfg = tmp_path / "stages.toml"
    cfg.write_text(
        f'[input]\nfixed = "{d / "fixed.mha"}"\nmoving = "{d / "moving.mha"}"\n'
        '[output]\nprefix = "out/staged"\n'
        "[defaults]\nmetric = 'mse'\nn_iterations = 40\nrotation_search = false\n"
        "[[stage]]\ntransform = 'rigid'\nlevels = [2, 1]\n"
        "[[stage]]\ntransform = 'affine'\nlevels = [1]\n"
    )
    code, out, err = run("register", "--config", cfg, "--no-qc")
    assert code == 0, err
    assert "rigid then affine" in err
    tfm = tmp_path / "out" / "staged.tfm"
    assert rf.read_transform(tfm).itk_name == "AffineTransform"
    assert _error_mm(tfm, truth, fixed) < 0.3
    # stage options on the command line clash with --config
    code, _, err = run("register", "--config", cfg, "-t", "rigid")
    assert code == 1 and "cannot be combined with --config" in err
    # an initial transform equal to the truth leaves (almost) nothing to do
    code, out, err = run("--json", "register", d / "fixed.mha", d / "moving.mha", "-t", "translation",
                         "-m", "mse", "--init", "none", "--levels", "1", "--iterations", "20",
                         "--initial-transform", d / "truth.tfm", "--no-qc", "-o", tmp_path / "init")
    assert code == 0, err
    assert _error_mm(tmp_path / "init.tfm", truth, fixed) < 0.1


# ------------------------------------------------------------- resample and points
def test_resample_matches_simpleitk(pair, tmp_path):
    d, fixed, moving, truth = pair
    code, out, err = run("resample", d / "moving.mha", d / "truth.tfm", "-r", d / "fixed.mha",
                         "-o", tmp_path / "warped.mha", "--default-value", "0")
    assert code == 0, err
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "warped.mha")))
    ref = sitk.Resample(sitk.ReadImage(str(d / "moving.mha")), sitk.ReadImage(str(d / "fixed.mha")),
                        sitk.ReadTransform(str(d / "truth.tfm")), sitk.sitkLinear, 0.0)
    theirs = sitk.GetArrayFromImage(ref)
    span = float(np.ptp(theirs))
    assert np.max(np.abs(ours.astype(float) - theirs)) <= 1e-5 * span


def test_transform_points_matches_simpleitk(pair, tmp_path):
    d, fixed, *_ = pair
    pts = np.array([[0.0, 0.0], [10.5, -3.25], [-20.0, 7.0]])
    (tmp_path / "pts.txt").write_text("# x y\n" + "\n".join(f"{x}, {y}" for x, y in pts) + "\n")
    code, out, err = run("transform-points", d / "truth.tfm", tmp_path / "pts.txt", "-p", "1,2")
    assert code == 0, err
    got = np.loadtxt(io.StringIO(out))
    st = sitk.ReadTransform(str(d / "truth.tfm"))
    want = np.array([st.TransformPoint(tuple(p)) for p in [*pts, (1.0, 2.0)]])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)
    # inverse maps back
    code, out, _ = run("--json", "transform-points", d / "truth.tfm", "--inverse", "-p", *[",".join(map(str, want[1]))])
    np.testing.assert_allclose(json.loads(out)["points"][0], pts[1], atol=1e-8)
    # elastix 'index' file needs a reference image
    (tmp_path / "idx.txt").write_text("index\n2\n3 4\n10 20\n")
    code, _, err = run("transform-points", d / "truth.tfm", tmp_path / "idx.txt")
    assert code == 1 and "--reference" in err
    code, out, err = run("transform-points", d / "truth.tfm", tmp_path / "idx.txt", "-r", d / "fixed.mha")
    assert code == 0, err
    phys = fixed.index_to_physical(np.array([[3.0, 4.0], [10.0, 20.0]]))
    want = np.array([st.TransformPoint(tuple(p)) for p in phys])
    np.testing.assert_allclose(np.loadtxt(io.StringIO(out)), want, atol=1e-8)
    code, _, err = run("transform-points", d / "truth.tfm", "-p", "1,2,3")
    assert code == 1 and "2 coordinates" in err


# ------------------------------------------------------------------ check-gradient
def test_check_gradient_metric_and_transform():
    code, out, err = run("--json", "check-gradient", "-t", "rigid", "-m", "mse", "--size", "32")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["passed"] and rep["max_relative_error"] < 1e-5 and len(rep["analytic"]) == 3
    code, out, err = run("check-gradient", "-t", "Euler3DTransform")
    assert code == 0, err
    assert "check_transform(Euler3DTransform): PASSED" in out
    code, out, err = run("check-gradient", "-t", "affine", "-m", "ncc", "--size", "32", "--rtol", "1e-30")
    assert code == 1 and "FAIL" in out.upper()   # an impossible tolerance must fail


# ------------------------------------------------------------------------ progress
def _states(seq=((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (0, 0), (0, 1))):
    for lv, it in seq:
        yield RegistrationState(level=lv, iteration=it, value=1.0 / (it + 1), gradient_norm=0.5,
                                parameters=np.zeros(2), step_norm=0.1)


def test_progress_lines_and_parts():
    buf = io.StringIO()
    rep = ProgressReporter(5, n_levels=2, stream=buf, mode="auto", every=2)
    assert rep.mode == "lines"                     # StringIO is not a terminal
    for s in _states():
        assert rep(s) is None                      # never stops a run
    rep.close()
    text = buf.getvalue()
    assert "[stage 1 level 1/2] iteration    0  metric 1" in text
    assert "[stage 1 level 2/2] done: 2 iterations" in text
    assert "[stage 1 part 2 level 1/2] done: 2 iterations" in text   # level went back: a new part
    assert [lv["iterations"] for lv in rep.levels] == [3, 2, 2]


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_with_tqdm_and_fallback(monkeypatch):
    pytest.importorskip("tqdm")
    buf = _TTY()
    rep = ProgressReporter(10, stream=buf, verbose=True)
    assert rep.mode == "bar"
    rep.start_stage("rigid", n_levels=2)
    for s in _states(((0, 0), (0, 1), (1, 0))):
        rep(s)
    rep.close()
    text = buf.getvalue()
    assert "rigid level 1/2" in text and "metric=" in text and "|g|=" in text
    import regframe.progress as progress

    monkeypatch.setattr(progress, "_tqdm_class", lambda: None)
    rep = ProgressReporter(10, stream=_TTY(), mode="bar")
    assert rep.mode == "lines"                     # tqdm missing: plain lines
    quiet = ProgressReporter(stream=buf, mode="none")
    before = buf.getvalue()
    for s in _states(((0, 0), (1, 0))):
        quiet(s)
    quiet.close()
    assert buf.getvalue() == before and len(quiet.levels) == 2


# --------------------------------------------------------------------------- demo
def test_demo_subcommand_small(tmp_path):
    code, out, err = run("--json", "demo", "-o", tmp_path, "--cases", "2d_rigid_mono", "--iterations", "40")
    assert code == 0, err
    case = json.loads(out)["cases"][0]
    assert case["mean_error_mm"] < 0.1 < case["initial_error_mm"]
    for role in ("fixed", "moving", "resampled", "transform", "truth", "qc"):
        assert Path(case["files"][role]).is_file()
    assert sitk.ReadTransform(case["files"]["transform"]).GetName() == "Euler2DTransform"
    assert (tmp_path / "summary.json").is_file()


# ---------------------------------------------------------------- real data (slow)
@pytest.mark.slow
@pytest.mark.data
def test_register_elastix_example_mattes_affine_with_masks(shared_data, tmp_path):
    d = shared_data("elastix_example")
    code, out, err = run("--json", "register", d / "fixed.mhd", d / "moving.mhd", "-t", "affine",
                         "-m", "mattes", "--fixed-mask", d / "mask_fixed.mhd",
                         "--moving-mask", d / "mask_moving.mhd", "-o", tmp_path / "elx")
    assert code == 0, err
    s = json.loads(out)
    assert s["metric_after"] < s["metric_before"] and "level" in err
    assert sitk.ReadTransform(str(tmp_path / "elx.tfm")).GetName() == "AffineTransform"
    img = sitk.ReadImage(str(tmp_path / "elx_resampled.mha"))
    assert img.GetSize() == (256, 256)
    assert sitk.ReadImage(str(tmp_path / "elx_qc.png")).GetSize()[0] > 400
    # aligned: Mattes MI between fixed and resampled beats fixed and raw moving (inside the mask)
    fixed = rf.read_image(d / "fixed.mhd", dtype=np.float64)
    mask = rf.read_image(d / "mask_fixed.mhd").array > 0
    moved = sitk.GetArrayFromImage(img).astype(float)
    raw = rf.read_image(d / "moving.mhd", dtype=np.float64).array

    def corr(a, b):
        return np.corrcoef(a[mask], b[mask])[0, 1]

    assert abs(corr(fixed.array, moved)) > abs(corr(fixed.array, raw))


def test_register_syn_writes_the_exact_inverse_and_its_qc(shared_data, tmp_path):
    """`register -t syn` on the rat-lung breathing pair: the forward and the inverse .tfm open in SimpleITK as
    composites, map points there and back within half a pixel, and the QC picture has the inverse-consistency
    column (8 columns against the affine result's 5)."""
    d = shared_data("rat_lung")
    code, out, err = run("--json", "register", d / "RatLungSlice1.mha", d / "RatLungSlice2.mha", "-t", "syn",
                         "-o", tmp_path / "syn")
    assert code == 0, err
    s = json.loads(out)
    assert s["metric_after"] < s["metric_before"]
    forward, inverse = (sitk.ReadTransform(str(tmp_path / name)) for name in ("syn.tfm", "syn_inverse.tfm"))
    assert forward.GetName() == inverse.GetName() == "CompositeTransform"
    fixed = rf.read_image(d / "RatLungSlice1.mha", dtype=np.float64)
    pts = fixed.voxel_points()[::37]
    back = np.array([inverse.TransformPoint(forward.TransformPoint(tuple(p))) for p in pts])
    assert np.max(np.linalg.norm(back - pts, axis=1)) / float(np.min(fixed.spacing)) < 0.5
    lin = run("register", d / "RatLungSlice1.mha", d / "RatLungSlice2.mha", "-t", "affine", "-q",
              "-o", tmp_path / "lin")[0]
    assert lin == 0  # 4 panels + the metric; SyN adds the grid, det(dT/dx) and the inverse-consistency map
    w_lin = sitk.ReadImage(str(tmp_path / "lin_qc.png")).GetSize()[0]
    assert sitk.ReadImage(str(tmp_path / "syn_qc.png")).GetSize()[0] == pytest.approx(w_lin * 8 / 5, rel=0.03)


@pytest.mark.slow
@pytest.mark.data
def test_register_lung_ct_recovers_known_affine(shared_data, tmp_path):
    path = shared_data("lung3d", "3DCT_lung_baseline_small.mha")
    fixed = rf.read_image(path, dtype=np.float32)
    truth = rf.AffineTransform(3)
    truth.fixed_parameters = fixed.physical_center()
    a = np.array([[1.03, 0.02, 0.0], [-0.03, 0.98, 0.02], [0.0, 0.01, 1.02]])
    truth.parameters = np.concatenate([a.ravel(), [6.0, -4.0, 5.0]])
    moving = resample(fixed, truth.inverse(), reference=fixed, interpolator="bspline",
                      default_value=float(fixed.array.min()), dtype=np.float32)
    rf.write_image(moving, tmp_path / "moved.mha")
    code, out, err = run("--json", "register", path, tmp_path / "moved.mha", "-t", "affine", "-m", "mse",
                         "-o", tmp_path / "lung")
    assert code == 0, err
    got = rf.read_transform(tmp_path / "lung.tfm")
    body = fixed.array.ravel() > -500
    pts = fixed.voxel_points()[body]
    err_mm = np.linalg.norm(got.transform_points(pts) - truth.transform_points(pts), axis=1)
    before = np.linalg.norm(truth.transform_points(pts) - pts, axis=1)
    # sub-voxel: under half the in-plane voxel (2.7 mm; slices are 5 mm), from ~9.5 mm (seen: 0.6-0.75)
    assert err_mm.mean() < 0.5 * fixed.spacing.min(), (err_mm.mean(), before.mean())
    assert err_mm.mean() < 0.1 * before.mean()
    assert sitk.ReadImage(str(tmp_path / "lung_resampled.mha")).GetSize() == tuple(fixed.size)
    assert sitk.ReadImage(str(tmp_path / "lung_qc.png")).GetSize()[0] > 400


# ------------------------------------------------------------- first-contact papercuts
def test_transform_points_accepts_negative_coordinates(pair):
    d, *_ = pair
    st = sitk.ReadTransform(str(d / "truth.tfm"))
    for argv in (["-p", "-75,-43"], ["--point", "-1.5e1,-2"], ["-p=-7,3"]):
        code, out, err = run("transform-points", d / "truth.tfm", *argv)
        assert code == 0, err
        value = argv[-1].split("=")[-1]
        point = tuple(float(v) for v in value.split(","))
        np.testing.assert_allclose(np.loadtxt(io.StringIO(out)), st.TransformPoint(point), atol=1e-8)


def test_index_points_outside_the_reference_warn(pair, tmp_path):
    d, fixed, *_ = pair
    (tmp_path / "idx.txt").write_text("index\n2\n3 4\n100 -20\n")
    code, out, err = run("transform-points", d / "truth.tfm", tmp_path / "idx.txt", "-r", d / "fixed.mha",
                         "-o", tmp_path / "mapped.txt")
    assert code == 0, err
    assert "warning:" in err and "1 of 2 index points" in err and "outside the reference image" in err
    assert len(np.loadtxt(tmp_path / "mapped.txt")) == 2
    code, out, err = run("transform-points", d / "truth.tfm", "-p", "1,2")   # physical points: no warning
    assert code == 0 and "warning" not in err


def test_register_without_output_writes_next_to_the_moving_image(pair, tmp_path):
    d, *_ = pair
    for name in ("fixed.mha", "moving.mha"):
        (tmp_path / name).write_bytes((d / name).read_bytes())
    code, out, err = run("-q", "register", tmp_path / "fixed.mha", tmp_path / "moving.mha", "-t", "translation",
                         "-m", "mse", "--levels", "1", "--iterations", "3", "--no-qc")
    assert code == 0, err
    assert (tmp_path / "moving_to_fixed.tfm").is_file() and (tmp_path / "moving_to_fixed_resampled.mha").is_file()
    # inputs are checked before anything else: a missing input is reported, not the output
    code, _, err = run("register", tmp_path / "nope.mha", tmp_path / "moving.mha")
    assert code == 1 and "fixed image" in err and "does not exist" in err


def test_register_json_lists_every_stage_and_link(pair, tmp_path):
    d, *_ = pair
    code, out, err = run("--json", "register", d / "fixed.mha", d / "moving.mha", "-t", "bspline", "-m", "mse",
                         "--iterations", "4", "--no-qc", "-o", tmp_path / "bs")
    assert code == 0, err
    s = json.loads(out)
    assert s["requested_stages"] == ["bspline"]
    assert s["stages"][-1] == "bspline" and len(s["stages"]) >= 2      # the linear part is listed too
    links = s["links"]
    assert [link["kind"] for link in links] == s["stages"]
    written = rf.read_transform(tmp_path / "bs.tfm")
    leaves = [t for t in written.transforms] if hasattr(written, "transforms") else [written]
    assert [link["transform_type"] for link in links] == [t.itk_name for t in leaves]
    for link, leaf in zip(links, leaves):
        np.testing.assert_allclose(link["parameters"], leaf.parameters, rtol=1e-12, atol=1e-12)
    assert "StopIteration" not in s["message"] and "callback" not in s["message"]
    assert [r["kind"] for r in s["stage_runs"]][-1] == "bspline"
    assert all("StopIteration" not in r["message"] for r in s["stage_runs"])
    assert {"metric_before", "metric_after", "last_level_cost", "metric_samples"} <= set(s)
    assert "final_value" not in s


def test_full_resolution_metric_uses_a_bounded_seeded_sample(pair, tmp_path, monkeypatch):
    from regframe.commands import register as register_command

    d, fixed, *_ = pair
    argv = ("--json", "register", d / "fixed.mha", d / "moving.mha", "-t", "translation", "-m", "mse",
            "--levels", "1", "--iterations", "20", "--no-qc", "-o", tmp_path / "b")
    full = json.loads(run(*argv)[1])
    assert full["metric_samples"] == fixed.n_voxels
    monkeypatch.setattr(register_command, "SUMMARY_SAMPLES", 500)
    small = json.loads(run(*argv)[1])
    again = json.loads(run(*argv)[1])
    assert small["metric_samples"] == 500
    assert small["metric_after"] == again["metric_after"]                 # seeded: reproducible
    assert small["metric_after"] < 0.5 * small["metric_before"]
    assert small["metric_after"] == pytest.approx(full["metric_after"], rel=0.3)


def test_register_warnings_exit_3_and_compile_notice(pair, tmp_path, monkeypatch):
    """A registration that certainly ends worse (an uphill optimizer) warns and exits with 3."""
    import regframe._numba_cache as cache
    import regframe.registration.stages.linear as linear

    d, *_ = pair
    argv = ("register", d / "fixed.mha", d / "moving.mha", "-t", "translation", "-m", "mse", "--levels", "1",
            "--iterations", "3", "--init", "none", "--no-qc", "-o", tmp_path / "w")
    monkeypatch.setattr(cache, "kernels_cached", lambda: True)
    code, _, err = run(*argv)
    assert code == 0 and "compiling kernels" not in err
    monkeypatch.setattr(cache, "kernels_cached", lambda: False)
    monkeypatch.setattr(linear, "make_optimizer", lambda *a, **k: Uphill.make(30.0))
    code, out, err = run(*argv)
    assert code == 3
    assert "compiling kernels, first run only" in err
    assert "warning: the result is worse than the start" in err
    assert len(set(err.splitlines())) == len(err.splitlines())     # each warning once (result and Python warning)
    code, out, err = run("-q", "--json", *argv)
    summary = json.loads(out)
    assert code == 3 and len(summary["warnings"]) == 1 and "worse than the start" in summary["warnings"][0]


def test_kernel_cache_probe(tmp_path, monkeypatch):
    import importlib

    import regframe._numba_cache as cache

    for name in cache._MAIN_KERNELS:           # the probed modules exist and hold cached kernels
        paths = cache._index_paths(importlib.import_module(name))
        assert paths and all(p.endswith(".nbi") for p in paths), name   # numba's own cache index paths
    # a cache folder without index files: not cached
    monkeypatch.setattr(cache, "_index_paths", lambda module: [str(tmp_path / "k.f-1.py311.nbi")])
    assert not cache.kernels_cached()
    (tmp_path / "k.f-1.py311.nbi").write_bytes(b"")
    assert cache.kernels_cached()
    # fallback when numba's internals are not there: files beside the module
    module = tmp_path / "_kernels.py"
    module.write_text("")
    assert not cache._has_index(module)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "_kernels.f-12.py311.nbi").write_bytes(b"")
    assert cache._has_index(module)


def test_interrupt_is_one_line_and_exit_130(monkeypatch):
    from regframe.commands import demo as demo_command

    def numba_interrupted(args, out):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemError("CPUDispatcher(<function k>) returned a result with an exception set")

    monkeypatch.setattr(demo_command, "run", numba_interrupted)
    code, out, err = run("demo")
    assert code == 130 and err.count("\n") == 1 and "interrupted" in err
    monkeypatch.setattr(demo_command, "run", lambda args, out: (_ for _ in ()).throw(SystemError("other")))
    with pytest.raises(SystemError):     # a SystemError that is not an interrupt is not hidden
        run("demo")


def test_sigint_during_register_leaves_no_partial_files(pair, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    d, *_ = pair
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as errfile:
        proc = subprocess.Popen(
            [sys.executable, "-m", "regframe.cli", "register", str(d / "fixed.mha"), str(d / "moving.mha"),
             "-t", "affine", "-m", "mse", "--levels", "1", "--iterations", "100000", "--optimizer", "regular_step",
             "-o", str(tmp_path / "out" / "r")],
            stdout=subprocess.DEVNULL, stderr=errfile, env=env, cwd=str(root),
        )
        deadline = time.monotonic() + 120
        # as soon as the run announces itself: a small pair registers in well under a second now
        while "regframe register:" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    text = log.read_text()
    assert code == 130, text
    assert text.rstrip().splitlines()[-1].startswith("regframe register: interrupted")
    assert "Traceback" not in text
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert not [f for f in leftovers if f.name.startswith(".~partial") or f.stat().st_size == 0], leftovers


def test_sigint_in_llvmlite_callback_is_deferred_not_swallowed(monkeypatch):
    """CI saw a Ctrl-C land in llvmlite's ctypes callback: printed as "Exception ignored", run exit 0."""
    import signal
    import sys
    from types import SimpleNamespace

    from regframe.commands import _interrupt
    from regframe.commands import demo as demo_command

    code = compile("import sys\nframe = sys._getframe()\n", "/site-packages/llvmlite/binding/executionengine.py", "exec")
    scope: dict = {}
    exec(code, scope)
    with _interrupt.sigint_deferred_in_compiler():
        assert signal.getsignal(signal.SIGINT) is _interrupt._handler
        _interrupt._handler(signal.SIGINT, scope["frame"])      # inside llvmlite: recorded, not raised
        with pytest.raises(KeyboardInterrupt):
            _interrupt.raise_if_interrupted()
        with pytest.raises(KeyboardInterrupt):                   # anywhere else: raised at once
            _interrupt._handler(signal.SIGINT, sys._getframe())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _interrupt.raise_if_interrupted()                            # the flag ends with the command

    def deferred_then_iterates(args, out):                       # the next iteration raises it
        _interrupt._handler(signal.SIGINT, scope["frame"])
        reporter = out.reporter()
        reporter(SimpleNamespace(level=0, iteration=0, value=1.0, stage=None))
        return 0

    monkeypatch.setattr(demo_command, "run", deferred_then_iterates)
    code_, out, err = run("demo")
    assert code_ == 130 and "interrupted" in err
    monkeypatch.setattr(demo_command, "run", lambda args, out: _interrupt._handler(signal.SIGINT, scope["frame"]) or 0)
    code_, out, err = run("demo")                                # deferred after the last iteration
    assert code_ == 130 and "interrupted" in err


def test_check_gradient_bspline_alias_and_demo_time_precision():
    code, out, err = run("check-gradient", "-t", "bspline")
    assert code == 0, err
    assert "check_transform(BSplineTransform): PASSED" in out
    from regframe.demo import DemoCase, format_summary

    case = DemoCase("2d_rigid_mono", 2, "rigid", "mse", 12, 0.0123, 5.0, 0.01, 0.02, {})
    assert " 0.012 " in format_summary([case])


def test_register_without_overlap_fails_and_writes_nothing(pair, tmp_path):
    """A far-away moving image with --init none ended as an identity with an infinite cost, exit 0."""
    d, fixed, moving, _ = pair
    far = rf.Image(moving.array, spacing=moving.spacing, origin=moving.origin + 5000.0)
    rf.write_image(far, tmp_path / "far.mha")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run("register", d / "fixed.mha", tmp_path / "far.mha", "-t", "translation", "-m", "mse",
                         "--levels", "1", "--iterations", "2", "--init", "none", "-o", out_dir / "inf")
    assert code == 1 and "overlap" in err
    assert list(out_dir.iterdir()) == []



def test_pixel_type_and_dtype_options(pair, tmp_path):
    d, fixed, *_ = pair
    grey = np.clip(np.rint(fixed.array * 40), 0, 255).astype(np.uint8)
    rf.write_image(fixed.with_array(grey), tmp_path / "grey.mha")
    code, _, err = run("resample", tmp_path / "grey.mha", d / "truth.tfm", "-o", tmp_path / "keep.mha")
    assert code == 0, err
    assert sitk.ReadImage(str(tmp_path / "keep.mha")).GetPixelID() == sitk.sitkUInt8     # the input's type
    code, _, err = run("resample", tmp_path / "grey.mha", d / "truth.tfm", "--pixel-type", "float32",
                       "-o", tmp_path / "f.mha")
    assert code == 0, err
    assert sitk.ReadImage(str(tmp_path / "f.mha")).GetPixelID() == sitk.sitkFloat32
    code, _, err = run("resample", tmp_path / "grey.mha", d / "truth.tfm", "--dtype", "int16",
                       "-o", tmp_path / "i.mha")
    assert code == 0, err
    assert sitk.ReadImage(str(tmp_path / "i.mha")).GetPixelID() == sitk.sitkInt16


def test_sigint_while_an_output_is_written_leaves_no_partial_file(pair, tmp_path):
    """The issue's case: Ctrl-C during the write used to leave a 0-byte .tfm (11 of 11 tries)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    d, *_ = pair
    root = Path(__file__).resolve().parents[1]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "r.tfm").write_text("an older result\n")
    slow_writer = (
        "import sys, time\n"
        "import regframe.transforms.io as tio\n"
        "from regframe.cli import main\n"
        "def slow(path, text, **kw):\n"
        "    def write_slowly(p, t, **k):\n"
        "        p.write_text(t[:10]); print('writing', flush=True); time.sleep(30)\n"
        "    import regframe._atomic as a\n"
        "    with a.atomic_path(path, where='write_transform()') as tmp:\n"
        "        write_slowly(tmp, text)\n"
        "tio.atomic_write_text = slow\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", slow_writer, "-q", "register", str(d / "fixed.mha"), str(d / "moving.mha"),
         "-t", "translation", "-m", "mse", "--levels", "1", "--iterations", "3", "--no-qc", "-o", str(out_dir / "r")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)},
        cwd=str(root),
    )
    deadline = time.monotonic() + 120
    line = ""
    while "writing" not in line and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("regframe register: interrupted")
    assert (out_dir / "r.tfm").read_text() == "an older result\n"       # untouched, not half-written
    assert not [f for f in out_dir.iterdir() if f.name.startswith(".~partial")]
