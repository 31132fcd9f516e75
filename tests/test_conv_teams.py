"""Thread teams for the chunked convolutions (kernels_cpu/_team.py, conv_ops ``_conv_core`` and
``_conv_filter_grad_core``): results against float64 references with teams forced on (three
threads, more than this machine's cores, so chunks are taken out of order) over NHWC/NCHW,
strides, dilations and both paddings, BLAS held at one thread during a team and restored after (also
after an error), concurrent kernels, and a forked child. The crew's threads (_team._Crew): woken
from polling and from sleep, waited for by polling and by sleeping, jobs for fewer threads than
the crew has, and a crew busy with another thread's team."""

import os
import threading
import time

import numpy as np
import pytest

import mgrt.kernels_cpu.conv_ops as conv_ops
from mgrt.kernels_cpu import _team
from kernel_util import conv_node_def, run_kernel
from mgrt.protos import node_def_pb2
from mgrt.runtime import dtypes

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


@pytest.fixture
def teams(monkeypatch):
    """Every chunked convolution runs on a team of three threads."""
    monkeypatch.setattr(conv_ops, "_TEAM_MIN_FLOPS", 0)
    monkeypatch.setattr(_team, "_FIXED", 3)
    return 3


_nd = conv_node_def


def _same(n, k, s, d):
    o = -(-n // s)
    need = max(0, (o - 1) * s + (k - 1) * d + 1 - n)
    return o, need // 2, need - need // 2


def _refs(x, f, dy_seed, strides, dil, padding):
    """float64 forward, input gradient and filter gradient of an NHWC convolution, tap by tap
    (each tap a strided slice of the padded input), and the out_backprop used."""
    n, h, w, c = x.shape
    kh, kw, _, co = f.shape
    if padding == "SAME":
        oh, pt, pb = _same(h, kh, strides[0], dil[0])
        ow, pl, pr = _same(w, kw, strides[1], dil[1])
    else:
        oh = (h - (kh - 1) * dil[0] - 1) // strides[0] + 1
        ow = (w - (kw - 1) * dil[1] - 1) // strides[1] + 1
        pt = pb = pl = pr = 0
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    f64 = f.astype(np.float64)
    dy = np.random.RandomState(dy_seed).randn(n, oh, ow, co)
    y = np.zeros((n, oh, ow, co))
    dxp = np.zeros_like(xp)
    df = np.zeros_like(f64)
    for i in range(kh):
        for j in range(kw):
            rs = slice(i * dil[0], i * dil[0] + (oh - 1) * strides[0] + 1, strides[0])
            cs = slice(j * dil[1], j * dil[1] + (ow - 1) * strides[1] + 1, strides[1])
            t = xp[:, rs, cs, :]
            y += t @ f64[i, j]
            dxp[:, rs, cs, :] += dy @ f64[i, j].T
            df[i, j] = t.reshape(-1, c).T @ dy.reshape(-1, co)
    dx = dxp[:, pt:pt + h, pl:pl + w, :]
    return y, dx, df, dy


CASES = [
    # x NHWC, filter, strides, dilations, padding: every one over several chunks
    ((32, 14, 14, 16), (5, 5, 16, 32), (1, 1), (1, 1), "SAME"),   # the benchmark CNN's conv1
    ((6, 19, 17, 9), (3, 4, 9, 7), (2, 1), (1, 1), "SAME"),
    ((5, 16, 21, 8), (3, 3, 8, 5), (1, 2), (2, 1), "VALID"),
    ((3, 33, 30, 12), (2, 2, 12, 10), (2, 2), (1, 1), "VALID"),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_team_convolutions_against_reference(teams, case, fmt, dtype):
    xs, fs, st, dil, padding = CASES[case]
    rs = np.random.RandomState(10 + case)
    x = rs.randn(*xs).astype(dtype)
    f = rs.randn(*fs).astype(dtype)
    y_ref, dx_ref, df_ref, dy = _refs(x, f, 20 + case, st, dil, padding)
    nchw = fmt == "NCHW"
    to, back = ((0, 3, 1, 2), (0, 2, 3, 1)) if nchw else ((0, 1, 2, 3),) * 2
    attrs = dict(T=dtype, padding=padding, data_format=fmt,
                 strides=[1, 1, *st] if nchw else [1, *st, 1],
                 dilations=[1, 1, *dil] if nchw else [1, *dil, 1])
    xi, dyi = x.transpose(to), dy.astype(dtype).transpose(to)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == "float32" else dict(rtol=1e-11, atol=1e-11)
    (y,) = run_kernel(_nd("Conv2D", **attrs), [xi, f])
    np.testing.assert_allclose(y.transpose(back), y_ref, **tol)
    (dx,) = run_kernel(_nd("Conv2DBackpropInput", **attrs),
                       [np.array(xi.shape, np.int32), f, dyi])
    np.testing.assert_allclose(dx.transpose(back), dx_ref, **tol)
    (df,) = run_kernel(_nd("Conv2DBackpropFilter", **attrs),
                       [xi, np.array(fs, np.int32), dyi])
    np.testing.assert_allclose(df, df_ref, **tol)


def test_team_chunks_are_many_and_cache_sized():
    """The CNN's conv1 in chunks of at most ~1 MiB of patches, at least four per thread."""
    n, oh, ow, k = 32, 14, 14, 400
    chunks = conv_ops._chunks(n, oh, ow, k * 4, 0, None, 2)
    assert len(chunks) >= 8
    biggest = max((b1 - b0) * (r1 - r0) * ow for b0, b1, r0, r1 in chunks)
    assert biggest * k * 4 <= conv_ops._TEAM_CHUNK_BYTES
    covered = sorted((b, r) for b0, b1, r0, r1 in chunks for b in range(b0, b1)
                     for r in range(r0, r1))
    assert covered == [(b, r) for b in range(n) for r in range(oh)]


def test_teams_off_below_the_work_threshold(monkeypatch):
    monkeypatch.setattr(_team, "_FIXED", 3)
    assert conv_ops._team_for(conv_ops._TEAM_MIN_FLOPS - 1) == 1
    assert conv_ops._team_for(conv_ops._TEAM_MIN_FLOPS) == 3


def _blas_threads():
    return [lib.get_num_threads() for lib in _team._blas_libs()]


def test_blas_is_single_threaded_inside_a_team_and_restored_after():
    if not _team._blas_libs():
        pytest.skip("no BLAS library that threadpoolctl controls is loaded")
    before = _blas_threads()
    seen = []
    out = _team.run(lambda item, tid: (seen.append(_blas_threads()), item * 2)[1], range(9), 3)
    assert out == [2 * i for i in range(9)]
    assert seen and all(s == [1] * len(before) for s in seen)
    assert _blas_threads() == before

    def boom(item, tid):
        if item == 4:
            raise ValueError("chunk 4 failed")
        return item
    with pytest.raises(ValueError, match="chunk 4 failed"):
        _team.run(boom, range(9), 3)
    assert _blas_threads() == before and _team._state["active"] == 0


def test_every_item_once_and_thread_ids_in_range():
    calls = []
    lock = threading.Lock()

    def fn(item, tid):
        with lock:
            calls.append((item, tid))
        return item
    assert _team.run(fn, range(50), 4) == list(range(50))
    assert sorted(i for i, _ in calls) == list(range(50))
    assert {t for _, t in calls} <= {0, 1, 2, 3}
    # one item, or one thread: the calling thread only
    assert _team.run(lambda item, tid: tid, [7], 4) == [0]
    assert _team.run(lambda item, tid: tid, range(3), 1) == [0, 0, 0]


def test_concurrent_kernels_from_two_threads(teams):
    """Two sessions' convolutions at once: each correct, BLAS restored when both are done."""
    rs = np.random.RandomState(3)
    x = rs.randn(8, 12, 12, 6).astype(np.float64)
    f = rs.randn(3, 3, 6, 8).astype(np.float64)
    want, _, _, _ = _refs(x, f, 0, (1, 1), (1, 1), "SAME")
    attrs = dict(T="float64", padding="SAME", strides=[1, 1, 1, 1])
    before = _blas_threads()
    errors = []

    def work():
        try:
            for _ in range(5):
                (y,) = run_kernel(_nd("Conv2D", **attrs), [x, f])
                np.testing.assert_allclose(y, want, rtol=1e-11, atol=1e-11)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert _blas_threads() == before and _team._state["active"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_team_in_a_forked_child(teams):
    """A child forked after the pool started builds its own pool (the parent's threads do not
    exist there)."""
    _team.run(lambda item, tid: item, range(6), 3)  # the parent's pool exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            got = _team.run(lambda item, tid: item + 1, range(6), 3)
            code = 0 if got == [1, 2, 3, 4, 5, 6] else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    status = os.read(r, 1)
    os.close(r)
    _, st = os.waitpid(pid, 0)
    assert status == b"\x00" and os.WEXITSTATUS(st) == 0


def test_hold_sizes_teams_by_blas_and_restores_it():
    """A plan's hold: BLAS single-threaded inside, the team as big as BLAS's threads were
    before, all restored after; MGRT_CONV_THREADS=1 (teams off) holds nothing."""
    libs = _team._blas_libs()
    if not libs:
        pytest.skip("no BLAS library that threadpoolctl controls is loaded")
    before = _blas_threads()
    assert _team.team_size() == 1 or _team._FIXED is not None  # outside a hold: no team
    held = _team.hold()
    try:
        if min(before) >= 2:
            assert held and _blas_threads() == [1] * len(libs)
            assert _team.team_size() == (_team._FIXED or min(before))
        else:
            assert not held
    finally:
        if held:
            _team.release()
    assert _blas_threads() == before and _team._state["held"] == 0


def test_hold_off_when_teams_are_off(monkeypatch):
    monkeypatch.setattr(_team, "_FIXED", 1)
    before = _blas_threads()
    assert _team.hold() is False
    assert _blas_threads() == before


def test_executor_holds_for_convolution_plans_only():
    """A plan with a CPU convolution holds BLAS for its run (and gives the numpy result); an
    MLP's plan does not (BLAS keeps its own threads there)."""
    import mgrt.compat.v1 as tf
    rs = np.random.RandomState(0)
    x = rs.randn(4, 9, 9, 3).astype(np.float32)
    w = rs.randn(3, 3, 3, 5).astype(np.float32)
    m = rs.randn(6, 7).astype(np.float32)
    seen = []
    real_hold = _team.hold

    def spy():
        seen.append(True)
        return real_hold()
    g = tf.Graph()
    with g.as_default():
        xp = tf.placeholder(tf.float32, [None, 9, 9, 3])
        conv = tf.nn.conv2d(xp, tf.constant(w), strides=[1, 1, 1, 1], padding="VALID")
        mp = tf.placeholder(tf.float32, [None, 7])
        mm = tf.matmul(mp, tf.constant(m.T.copy()))
        with tf.Session() as sess:
            _team.hold = spy
            try:
                got = sess.run(conv, {xp: x})
                assert len(seen) == 1
                sess.run(mm, {mp: m})
                assert len(seen) == 1  # the MatMul plan did not hold
            finally:
                _team.hold = real_hold
    want, _, _, _ = _refs(x, w, 0, (1, 1), (1, 1), "VALID")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert _team._state["held"] == 0 and _team._state["active"] == 0


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
@pytest.mark.parametrize("shape", [(37, 11, 9), (2, 13, 29), (64, 1, 8)])
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_split_over_a_team(teams, monkeypatch, dtype, shape, trans):
    """Inside a hold a big MatMul splits rows (or, with few rows, columns) over the team."""
    import mgrt.kernels_cpu.math_ops as math_ops
    monkeypatch.setattr(math_ops, "_TEAM_MIN_FLOPS", 0)
    m, k, n = shape
    rs = np.random.RandomState(sum(shape))
    a = (rs.randn(m, k) * 4).astype(dtype)
    b = (rs.randn(k, n) * 4).astype(dtype)
    ai = a.T.copy() if trans[0] else a
    bi = b.T.copy() if trans[1] else b
    nd = node_def_pb2.NodeDef(name="mm", op="MatMul")
    nd.attr["T"].type = dtypes.as_dtype(dtype).as_datatype_enum
    nd.attr["transpose_a"].b = trans[0]
    nd.attr["transpose_b"].b = trans[1]
    (got,) = run_kernel(nd, [ai, bi])
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert got.dtype == np.dtype(dtype) and got.shape == (m, n)
    if dtype == "int32":
        np.testing.assert_array_equal(got, (a @ b))
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


# --- the crew: worker threads that poll for jobs, then sleep (_team._Crew, _spin.py) --------
def _crew_job(crew, threads, delay=0.0):
    """Run one job on ``crew``; returns the tids that ran it (the workers' after ``delay``)."""
    ran, lock = [], threading.Lock()

    def job(tid):
        if tid:
            time.sleep(delay)
        with lock:
            ran.append(tid)
    crew.run(job, threads)
    return sorted(ran)


@pytest.mark.parametrize("spin", [True, False])
def test_crew_wakes_sleeping_workers_and_waits_for_slow_ones(spin, monkeypatch):
    monkeypatch.setattr(_team, "_SPIN_S", 1e-4)  # workers sleep 0.1 ms after a job
    crew = _team._Crew(3)
    try:
        if not spin:  # as without numba: no polling, every wait sleeps
            crew.spin = None
        assert _crew_job(crew, 4) == [0, 1, 2, 3]
        time.sleep(0.05)  # every worker asleep now
        assert _crew_job(crew, 4) == [0, 1, 2, 3]
        # the workers outlast the caller's polling: it sleeps until they are done
        assert _crew_job(crew, 4, delay=0.05) == [0, 1, 2, 3]
        # a job for fewer threads: the others skip it, and a later job still finds them
        assert _crew_job(crew, 2) == [0, 1]
        assert _crew_job(crew, 3, delay=0.01) == [0, 1, 2]
        assert crew.flags[0] == 5 and all(crew.flags[t] == 5 for t in (1, 2))
    finally:
        crew.stop()


def test_crew_polls_are_bounded():
    """Each wait polls a bounded number of times: a value that never changes returns."""
    from mgrt.kernels_cpu import _spin
    flags = np.zeros(3, np.int64)
    assert _spin.wait_change(flags, 0, 0, 1000) == 0
    flags[0] = 7
    assert _spin.wait_change(flags, 0, 0, 1000) == 7
    assert not _spin.wait_all(flags, 1, 3, 7, 1000)
    flags[1:] = 7
    assert _spin.wait_all(flags, 1, 3, 7, 1000)
    # a worker's "done" is stored first, then it polls for the next job as wait_change
    assert _spin.finish_and_wait(flags, 2, 9, 1000) == 7 and flags[2] == 9
    assert _spin.finish_and_wait(flags, 1, 7, 1000) == 7 and flags[1] == 7  # none: bounded


def test_a_team_busy_on_another_thread_runs_items_on_the_caller(monkeypatch):
    crew = _team._crew(2)
    assert crew.busy.acquire(blocking=False)  # another thread's team holds the crew
    try:
        assert _team.run(lambda item, tid: (item, tid), range(4), 3) == [(i, 0) for i in range(4)]
    finally:
        crew.busy.release()
    assert {t for _, t in _team.run(lambda item, tid: (item, tid), range(40), 3)} <= {0, 1, 2}


@pytest.mark.parametrize("asleep", [True, False])
def test_a_stopped_crew_finishes_the_job_it_was_given(asleep, monkeypatch):
    """A crew replaced by a bigger one (another thread's team) while a job is posted: its
    workers run that job before they exit, so the caller never waits forever."""
    monkeypatch.setattr(_team, "_SPIN_S", 1e-4)
    crew = _team._Crew(2)
    if asleep:
        time.sleep(0.05)
    crew.stop()
    assert _crew_job(crew, 3) == [0, 1, 2]
    time.sleep(0.05)
    assert crew.flags[1] == crew.flags[2] == 1
