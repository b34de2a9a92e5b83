"""Point files (elastix point/index, CSV, text; atomic writes) and the register-points command."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import regframe as rf
from regframe.cli import main
from regframe.errors import InvalidInputError, ShapeError
from regframe.points.io import parse_points, read_points, write_points


def test_read_elastix_index_file_with_reference(shared_data):
    ref = rf.read_image(shared_data("lung3d", "3DCT_lung_baseline_mask.mha"))
    path = shared_data("lung3d", "3DCT_lung_baseline.txt")
    pts = read_points(path, reference=ref)
    assert pts.shape == (10, 3)
    assert np.allclose(pts[0], ref.index_to_physical(np.array([[94.0, 92.0, 114.0]]))[0])
    with pytest.raises(InvalidInputError, match="reference"):
        read_points(path)


def test_read_elastix_point_file(shared_data):
    pts = read_points(shared_data("lung3d", "3DCT_lung_baseline_landmarks.txt"))
    assert pts.shape == (100, 3)
    assert np.allclose(pts[0], [-36.351, -36.974, -1204.5])


def test_parse_formats():
    expected = np.array([[1.0, 2.0, 3.0], [4.5, -5.0, 6e-3]])
    for text in (
        "1 2 3\n4.5 -5 6e-3\n",
        "x,y,z\n1,2,3\n4.5,-5,6e-3\n",
        "# comment\npoint\n2\n1 2 3   # first\n4.5 -5 6e-3\n",
        "1;2;3\n4.5;-5;6e-3",
    ):
        assert np.array_equal(parse_points(text), expected)
    with pytest.raises(ShapeError):
        parse_points("1 2 3\n", ndim=2)
    with pytest.raises(ShapeError):
        parse_points("1 2 3 4\n")
    with pytest.raises(InvalidInputError):
        parse_points("point\n3\n1 2 3\n")
    with pytest.raises(InvalidInputError):
        parse_points("1 2 x\n3 4 5\n")


@pytest.mark.parametrize("name,fmt", [("p.txt", None), ("p.csv", None), ("p.dat", "text")])
def test_write_read_round_trip_is_exact_and_atomic(tmp_path, name, fmt):
    pts = np.random.default_rng(0).normal(size=(50, 3)) * 1e3
    path = tmp_path / "sub" / name
    write_points(path, pts, format=fmt)
    assert np.array_equal(read_points(path), pts)
    assert sorted(p.name for p in path.parent.iterdir()) == [name]  # no temporary left behind
    with pytest.raises(ShapeError):
        write_points(path, pts[:, :1])
    assert np.array_equal(read_points(path), pts)  # a failed write leaves the old file


def test_register_points_command(tmp_path):
    rng = np.random.default_rng(1)
    fixed = rng.uniform(0, 50, (800, 3)) * [1.0, 0.7, 0.4]
    rot = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    moving = fixed @ rot.T + [5.0, -2.0, 1.0]
    write_points(tmp_path / "fixed.txt", fixed, format="text")
    write_points(tmp_path / "moving.csv", moving[rng.permutation(800)])
    out = io.StringIO()
    code = main(["register-points", str(tmp_path / "fixed.txt"), str(tmp_path / "moving.csv"), "--transform",
                 "rigid", "--output", str(tmp_path / "out" / "points"), "--json"], stdout=out, stderr=io.StringIO())
    assert code == 0
    summary = json.loads(out.getvalue())
    assert summary["stop_reason"] == "CONVERGED"
    t = rf.read_transform(tmp_path / "out" / "points.tfm")
    assert np.allclose(t.compute_matrix(), rot, atol=1e-8)
    assert np.allclose(read_points(tmp_path / "out" / "points_fixed_mapped.txt"), moving, atol=1e-6)
    mapped_back = read_points(tmp_path / "out" / "points_moving_mapped.txt")
    assert np.allclose(np.sort(mapped_back, axis=0), np.sort(fixed, axis=0), atol=1e-6)  # overlays the fixed cloud
    err = io.StringIO()
    assert main(["register-points", str(tmp_path / "nope.txt"), str(tmp_path / "moving.csv")],
                stdout=io.StringIO(), stderr=err) == 1
    assert "does not exist" in err.getvalue()
