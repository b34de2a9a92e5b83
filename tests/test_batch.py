"""register_many: input order, isolated failures, bit-identical to serial register() calls, locally and on dask."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

import regframe as rf
from regframe.errors import InvalidInputError
from regframe.registration.batch import PairError, PairProgress, run_pair

KW = {"transform": "rigid", "initialization": "geometry", "rotation_search": False, "n_iterations": 30}


@pytest.fixture(scope="module")
def pairs():
    """Crops of the real rat-lung slice moved by known small rigid motions (SimpleITK), one shared fixed image."""
    sitk = pytest.importorskip("SimpleITK")
    from conftest import data_path

    img = sitk.ReadImage(str(data_path("rat_lung", "RatLungSlice1.mha")), sitk.sitkFloat32)
    fixed = rf.from_sitk(img)
    centre = fixed.physical_center().tolist()
    out = []
    for k, (angle, tx, ty) in enumerate([(0.05, 1.5, -1.0), (-0.04, -2.0, 0.5), (0.02, 0.7, 2.2)]):
        tr = sitk.Euler2DTransform(centre, angle, (tx, ty))
        out.append((fixed, rf.from_sitk(sitk.Resample(img, img, tr, sitk.sitkBSpline, 0.0))))
    return out


def _broken(pairs):
    fixed = pairs[0][0]
    return (fixed, fixed.with_array(np.zeros(fixed.shape, dtype=np.float32)))  # constant: the metric refuses it


def test_local_results_in_order_and_identical_to_register(pairs):
    items = [pairs[0], _broken(pairs), {"fixed": pairs[1][0], "moving": pairs[1][1], "n_iterations": 20}]
    stream = io.StringIO()
    results = rf.register_many(items, progress=PairProgress(3, "pairs", mode="lines", stream=stream), **KW)
    assert isinstance(results[1], PairError) and results[1].index == 1
    assert results[1].type and "Traceback" in results[1].traceback and str(results[1]).startswith("pair 1:")
    want0 = rf.register(*pairs[0], **KW)
    want2 = rf.register(*pairs[1], **{**KW, "n_iterations": 20})
    assert results[0].transform.parameters.tobytes() == want0.transform.parameters.tobytes()
    assert results[2].transform.parameters.tobytes() == want2.transform.parameters.tobytes()
    assert "3/3 done, 1 failed" in stream.getvalue()


def test_bad_pairs_raise_and_errors_pickle(pairs):
    with pytest.raises(InvalidInputError, match="pair 0"):
        rf.register_many([(pairs[0][0],)])
    with pytest.raises(InvalidInputError, match="'fixed' and 'moving'"):
        rf.register_many([{"fixed": pairs[0][0]}])
    with pytest.raises(InvalidInputError, match="regframe Images"):
        rf.register_many([(np.zeros((4, 4)), pairs[0][1])])
    err = run_pair(4, *_broken(pairs), KW)
    assert isinstance(err, PairError) and pickle.loads(pickle.dumps(err)) == err
    progress = PairProgress(2, mode="none")
    progress.update(), progress.update(True)
    assert (progress.done, progress.failed) == (2, 1)


@pytest.mark.data
@pytest.mark.slow  # ~10 s on an idle machine, ~30 s on a loaded one: two worker processes import numba kernels
def test_dask_local_cluster_bit_identical_and_failure_isolated(pairs):
    distributed = pytest.importorskip("distributed", reason="dask.distributed is in the test extra; install regframe[test]")
    items = [pairs[0], _broken(pairs), pairs[1], pairs[2]]
    serial = [rf.register(*p, **KW) for p in (pairs[0], pairs[1], pairs[2])]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        results = rf.register_many(items, client=client, progress="none", **KW)
    assert isinstance(results[1], PairError) and results[1].index == 1
    for res, want in zip([results[0], results[2], results[3]], serial):
        assert res.transform.parameters.tobytes() == want.transform.parameters.tobytes()
        assert res.final_value == want.final_value


def test_worker_tasks_keep_large_blocks_on_glibc_and_results_do_not_change(pairs):
    import platform
    import sys

    from regframe.registration.batch import keep_large_blocks

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_large_blocks() is glibc
    res = run_pair(0, *pairs[0], KW, 1, True)
    want = rf.register(*pairs[0], **KW)
    assert res.transform.parameters.tobytes() == want.transform.parameters.tobytes()


@pytest.mark.data
def test_dask_in_process_cluster_runs_the_pairs_in_order(pairs):
    """The dask path in the default run (threads, no worker processes: ~1 s); the process cluster is `slow`."""
    distributed = pytest.importorskip("distributed", reason="dask.distributed is in the test extra; install regframe[test]")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        results = rf.register_many([pairs[2], _broken(pairs), pairs[0]], client=client, progress="none", **KW)
    assert isinstance(results[1], PairError) and results[1].index == 1
    for res, pair in zip((results[0], results[2]), (pairs[2], pairs[0])):
        assert res.transform.parameters.tobytes() == rf.register(*pair, **KW).transform.parameters.tobytes()


def test_keywords_checked_before_any_pair_runs(pairs, monkeypatch):
    from regframe.registration import batch

    def no_pair(*args, **kwargs):
        raise AssertionError("a pair ran")

    monkeypatch.setattr(batch, "run_pair", no_pair)
    with pytest.raises(InvalidInputError, match=r"unknown register\(\) keyword\(s\) \['transfrom'\].*'transform'"):
        rf.register_many(pairs, transfrom="affine")
    with pytest.raises(InvalidInputError, match=r"pair 1: unknown .*\['iterations'\]"):
        rf.register_many([pairs[0], {"fixed": pairs[1][0], "moving": pairs[1][1], "iterations": 5}])
    with pytest.raises(InvalidInputError, match="'metric' must be one of"):
        rf.register_many(pairs, metric="foo")
    with pytest.raises(InvalidInputError, match="'transform' must be one of"):
        rf.register_many(pairs, transform="rigd")


#: numba thread counts seen inside the registrations of a task (filled by :func:`_record_threads`).
_THREADS_SEEN: list[int] = []


def _record_threads(state):
    """A register() callback (module level, so dask pickles it by reference) recording numba's thread count."""
    import numba

    _THREADS_SEEN.append(numba.get_num_threads())


@pytest.mark.data
@pytest.mark.parametrize("threads", [1, 2])
def test_numba_threads_apply_inside_the_dask_task(pairs, threads):
    """register_many(numba_threads=n) sets numba's thread count in the task that runs the pair."""
    import numba

    distributed = pytest.importorskip("distributed", reason="dask.distributed is in the test extra; install regframe[test]")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs numba with at least 2 threads to tell 1 from the default")
    _THREADS_SEEN.clear()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        results = rf.register_many(pairs[:1], client=client, numba_threads=threads, progress="none",
                                   callbacks=[_record_threads], **KW)
    assert not isinstance(results[0], PairError), results[0]
    assert _THREADS_SEEN and set(_THREADS_SEEN) == {threads}
