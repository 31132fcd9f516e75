"""Optimizer updates inside the gradient's product (runtime/executor.py
``_updates_into_gemm``, kernels_cpu/state_ops.py ``_gemm_apply``, kernels_cpu/_blas.py): an
ApplyGradientDescent or ApplyMomentum (ref or resource) of a MatMul's product that only it
reads is one step; for a variable of 65,536 elements or more whose buffers may be written in
place, BLAS adds the product to the variable (beta = 1) or to momentum's accumulator (beta =
momentum, then one pass for the variable).

Checked against TensorFlow's training of an MLP with each optimizer
(tests/fixtures/make_updates_in_gemm.py), against float64 numpy over the operand layouts,
dtypes, variable kinds and locking, for the fallbacks (a small variable, a buffer something
else still holds, no BLAS, a fetched or shared gradient, Nesterov, momentum 0) and for errors
that name the member node that failed with the variable left as it was."""

from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.kernels_cpu import _blas, _team, state_ops
from mgrt.runtime import errors, executor

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "updates_in_gemm"


def _openblas():
    try:
        import threadpoolctl
    except ImportError:
        return False
    np.ones(1) @ np.ones(1)
    return any(c.internal_api == "openblas" for c in
               threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers)


needs_blas = pytest.mark.skipif(not _blas.available(np.float32),
                                reason="numpy's BLAS is not OpenBLAS: the update stays two steps")


def test_found_wherever_numpy_uses_openblas():
    assert _blas.available(np.float32) == _blas.available(np.float64) == _openblas()


def _types(sess):
    """The step types of every plan the session has built."""
    return [st.op.type for plan in sess._plans.values() for st in plan.steps]


@pytest.fixture
def blas_calls(monkeypatch):
    calls = []
    real = _blas.gemm_update

    def counting(c, a, b, alpha, threads=1, beta=1.0):
        done = real(c, a, b, alpha, threads, beta)
        calls.append(done)
        return done

    monkeypatch.setattr(_blas, "gemm_update", counting)
    return calls


# --- the TensorFlow-trained MLP ---------------------------------------------------------------
def _fixture_module():
    import sys
    sys.path.insert(0, str(FIXTURE.parent))
    try:
        import make_updates_in_gemm
    finally:
        sys.path.pop(0)
    return make_updates_in_gemm


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
@pytest.mark.parametrize("fuse", [True, False])
def test_trains_as_tensorflow(optimizer, fuse, blas_calls, monkeypatch):
    if fuse and not _blas.available(np.float32):
        pytest.skip("numpy's BLAS is not OpenBLAS: the update stays two steps")
    monkeypatch.setattr(executor, "FUSE", fuse)
    want = np.load(FIXTURE / f"{optimizer}.npz")
    init = _fixture_module().initial_values()
    with tf.Graph().as_default():
        tf.train.import_meta_graph(str(FIXTURE / f"{optimizer}.meta"))
        loss = tf.get_collection("loss")[0]
        train = tf.get_collection("train_op")[0]
        variables = {v.op.name: v for v in tf.global_variables()}
        assert sorted("after/" + n for n in init) == sorted(
            k for k in want.files if k.startswith("after/"))
        assert set(init) <= set(variables)
        with tf.Session() as sess:
            for name, v in variables.items():
                if name in init:
                    sess.run(v.initializer, {v.initial_value: init[name]})
                else:  # momentum's accumulators: zeros
                    sess.run(v.initializer)
            feed = {"x:0": want["x"], "y:0": want["y"]}
            losses = [sess.run([loss, train], feed)[0] for _ in range(len(want["losses"]))]
            final = sess.run(loss, feed)
            after = {n: sess.run(variables[n]) for n in init}
            types = _types(sess)
    np.testing.assert_allclose(losses, want["losses"], rtol=2e-6)
    np.testing.assert_allclose(final, want["final_loss"], rtol=2e-6)
    for name, v in after.items():
        np.testing.assert_allclose(v, want["after/" + name], rtol=1e-5, atol=1e-6)
    if fuse:  # the two big layers by BLAS at every step; the small one fused, not by BLAS
        assert blas_calls == [True] * (2 * len(losses))
        assert types.count("_FusedMatMulApply") == 3
    else:
        assert blas_calls == [] and "_FusedMatMulApply" not in types


# --- against numpy ----------------------------------------------------------------------------
def _optimizer(name, use_locking=False):
    if name == "sgd":
        return tf.train.GradientDescentOptimizer(0.05, use_locking=use_locking)
    return tf.train.MomentumOptimizer(0.05, 0.0 if name == "momentum 0" else 0.9,
                                      use_locking=use_locking,
                                      use_nesterov=name == "nesterov")


def _graph(dtype=np.float32, ta=False, tb=False, resource=False, use_locking=False,
           m=300, n=256, k=24, seed=0, optimizer="sgd"):
    rs = np.random.RandomState(seed)
    g = tf.Graph()
    with g.as_default():
        a = tf.placeholder(dtype, [k, m] if ta else [m, k], name="a")
        b = tf.placeholder(dtype, [n, k] if tb else [k, n], name="b")
        w = tf.Variable(rs.randn(m, n).astype(dtype), name="w", use_resource=resource)
        grad = tf.matmul(a, b, transpose_a=ta, transpose_b=tb, name="grad")
        opt = _optimizer(optimizer, use_locking)
        train = opt.apply_gradients([(grad, w)], name="train")
        init = tf.global_variables_initializer()
    feeds = {a: rs.randn(*a.shape.as_list()).astype(dtype),
             b: rs.randn(*b.shape.as_list()).astype(dtype)}
    return g, dict(a=a, b=b, w=w, grad=grad, train=train, init=init, feeds=feeds)


def _want(w0, feeds, t, ta, tb, steps, optimizer="sgd"):
    """The variable after ``steps`` updates, in float64 (the optimizers' hyperparameters are
    float32 tensors, cast to the variable's dtype)."""
    a = feeds[t["a"]].astype(np.float64)
    b = feeds[t["b"]].astype(np.float64)
    p = (a.T if ta else a) @ (b.T if tb else b)
    w = w0.astype(np.float64)
    acc = np.zeros_like(w)
    lr = float(np.float32(0.05))
    mom = 0.0 if optimizer == "momentum 0" else float(np.float32(0.9))
    for _ in range(steps):
        if optimizer == "sgd":
            w = w - lr * p
            continue
        acc = acc * mom + p
        w = w - (p * lr + acc * mom * lr if optimizer == "nesterov" else acc * lr)
    return w


@needs_blas
@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("resource", [False, True])
@pytest.mark.parametrize("use_locking", [False, True])
def test_update_by_blas_against_numpy(optimizer, dtype, ta, tb, resource, use_locking,
                                      blas_calls):
    g, t = _graph(dtype, ta, tb, resource, use_locking, seed=int(ta) + 2 * int(tb),
                  optimizer=optimizer)
    with tf.Session(graph=g) as s:
        s.run(t["init"])
        w0 = s.run(t["w"])
        for _ in range(3):
            s.run(t["train"], t["feeds"])
        got = s.run(t["w"])
        types = _types(s)
    assert "_FusedMatMulApply" in types and "MatMul" not in types
    assert blas_calls == [True] * 3
    assert got.dtype == dtype
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, _want(w0, t["feeds"], t, ta, tb, 3, optimizer), rtol=tol,
                               atol=tol)


@pytest.mark.parametrize("optimizer,fused", [("nesterov", False), ("momentum 0", True)])
def test_momentum_the_product_cannot_take(optimizer, fused, blas_calls):
    """Nesterov's update reads the gradient again: not fused. Momentum 0: fused, but not by
    BLAS (beta = 0 would not read the accumulator: a NaN there would not stay NaN)."""
    g, t = _graph(optimizer=optimizer)
    w0, got, _, types = _train(g, t, 3)
    assert ("_FusedMatMulApply" in types) == (fused and _blas.available(np.float32))
    assert blas_calls == []
    np.testing.assert_allclose(got, _want(w0, t["feeds"], t, False, False, 3, optimizer),
                               rtol=2e-5, atol=2e-5)


@needs_blas
def test_a_two_thread_team_splits_the_rows():
    rs = np.random.RandomState(3)
    c = rs.randn(300, 256).astype(np.float32)
    a = rs.randn(40, 300).astype(np.float32).T  # F-contiguous
    b = rs.randn(40, 256).astype(np.float32)
    want = c.astype(np.float64) - 0.5 * (a.astype(np.float64) @ b)
    whole = c.copy()
    assert _blas.gemm_update(whole, a, b, -0.5)
    split = c.copy()
    assert _blas.gemm_update(split, a, b, -0.5, threads=2)
    np.testing.assert_allclose(split, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(split, whole)  # the same sums, row by row
    assert _team.team_size() >= 1


@needs_blas
@pytest.mark.parametrize("case", ["strided", "overlap", "dtype", "shape", "read-only",
                                  "empty", "3-d"])
def test_refused_operands_change_nothing(case):
    rs = np.random.RandomState(4)
    c = rs.randn(8, 6).astype(np.float32)
    a = rs.randn(8, 5).astype(np.float32)
    b = rs.randn(5, 6).astype(np.float32)
    if case == "strided":
        a = rs.randn(8, 10).astype(np.float32)[:, ::2]
    elif case == "overlap":
        big = rs.randn(8, 11).astype(np.float32)
        c, a = np.ascontiguousarray(big[:, :6]), big[:, 6:]
        a = c[:, :5]
    elif case == "dtype":
        b = b.astype(np.float64)
    elif case == "shape":
        b = rs.randn(5, 7).astype(np.float32)
    elif case == "read-only":
        c.flags.writeable = False
    elif case == "empty":
        a, b = a[:, :0], b[:0]
    else:
        c = c.reshape(2, 4, 6)
    before = c.copy()
    assert _blas.gemm_update(c, a, b, -1.0) is False
    np.testing.assert_array_equal(c, before)


# --- fallbacks ----------------------------------------------------------------------------------
def _train(g, t, steps=1, fetch=()):
    with tf.Session(graph=g) as s:
        s.run(t["init"])
        w0 = s.run(t["w"])
        for _ in range(steps):
            out = s.run([t["train"]] + list(fetch), t["feeds"])
        return w0, s.run(t["w"]), out[1:], _types(s)


def test_a_small_variable_is_fused_without_blas(blas_calls, monkeypatch):
    g, t = _graph(m=30, n=20, k=5)
    w0, fused, _, types = _train(g, t, 2)
    assert "_FusedMatMulApply" in types or not _blas.available(np.float32)
    assert blas_calls == []
    monkeypatch.setattr(executor, "FUSE", False)
    _, unfused, _, types = _train(g, t, 2)
    assert "_FusedMatMulApply" not in types
    np.testing.assert_array_equal(fused, unfused)  # the same kernels, bit for bit
    np.testing.assert_allclose(fused, _want(w0, t["feeds"], t, False, False, 2),
                               rtol=1e-5, atol=1e-5)


def test_without_blas_nothing_is_fused(blas_calls, monkeypatch):
    monkeypatch.setitem(_blas._state, "found", {})
    g, t = _graph()
    w0, got, _, types = _train(g, t, 2)
    assert "_FusedMatMulApply" not in types and "MatMul" in types and blas_calls == []
    np.testing.assert_allclose(got, _want(w0, t["feeds"], t, False, False, 2),
                               rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("how", ["fetched", "read twice"])
def test_a_gradient_something_else_reads_is_not_fused(how, blas_calls):
    g, t = _graph()
    with g.as_default():
        extra = t["grad"] if how == "fetched" else tf.reduce_sum(t["grad"], name="extra")
    w0, got, (value,), types = _train(g, t, 1, [extra])
    assert "_FusedMatMulApply" not in types and "MatMul" in types and blas_calls == []
    a, b = t["feeds"][t["a"]].astype(np.float64), t["feeds"][t["b"]].astype(np.float64)
    p = a @ b
    np.testing.assert_allclose(value, p if how == "fetched" else p.sum(), rtol=1e-4,
                               atol=1e-4 * np.abs(p).max())
    np.testing.assert_allclose(got, w0 - np.float32(0.05) * p, rtol=2e-5, atol=2e-5)


@needs_blas
def test_a_buffer_read_earlier_in_the_run_keeps_its_value(blas_calls):
    """A read of the (ref) variable that a later step uses still holds the buffer when the
    update runs: the update goes to a new buffer (the fallback), the read keeps the value it
    had when it was read."""
    g, t = _graph()
    with g.as_default():
        read = tf.identity(t["w"], name="read")
        with tf.control_dependencies([read]):
            train = tf.train.GradientDescentOptimizer(0.05).apply_gradients([(t["grad"],
                                                                               t["w"])])
        with tf.control_dependencies([train]):
            late = tf.add(read, 0.0, name="late")
    with tf.Session(graph=g) as s:
        s.run(t["init"])
        w0 = s.run(t["w"])
        seen = s.run(late, t["feeds"])
        got = s.run(t["w"])
        types = _types(s)
    assert "_FusedMatMulApply" in types
    assert blas_calls == [False] or blas_calls == []  # (refused before the call: not sole)
    np.testing.assert_array_equal(seen, w0)
    np.testing.assert_allclose(got, _want(w0, t["feeds"], t, False, False, 1),
                               rtol=2e-5, atol=2e-5)


# --- errors name their member; nothing is written ---------------------------------------------
def _open_graph(optimizer):
    g = tf.Graph()
    with g.as_default():
        a = tf.placeholder(tf.float32, [None, None], name="a")
        b = tf.placeholder(tf.float32, [None, None], name="b")
        lr = tf.placeholder(tf.float32, None, name="lr")
        w = tf.Variable(np.ones((300, 256), np.float32), name="w")
        grad = tf.matmul(a, b, name="grad")
        opt = (tf.train.GradientDescentOptimizer(lr) if optimizer == "sgd"
               else tf.train.MomentumOptimizer(lr, 0.9))
        train = opt.apply_gradients([(grad, w)], name="train")
        init = tf.global_variables_initializer()
    return g, a, b, lr, w, train, init


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
@pytest.mark.parametrize("bad", ["operands", "hyperparameter", "product shape"])
def test_errors_name_the_member_and_leave_the_variable(optimizer, bad):
    g, a, b, lr, w, train, init = _open_graph(optimizer)
    feeds = {a: np.ones((300, 7), np.float32), b: np.ones((7, 256), np.float32),
             lr: np.float32(0.1)}
    update = ("train/update_w/ApplyGradientDescent" if optimizer == "sgd"
              else "train/update_w/ApplyMomentum")
    if bad == "operands":
        feeds[b] = np.ones((6, 256), np.float32)
        node, text = "grad", "Matrix size-incompatible: In[0]: [300,7], In[1]: [6,256]"
    elif bad == "hyperparameter":
        feeds[lr] = np.ones(2, np.float32)
        node = update
        text = ("alpha is not a scalar: [2]" if optimizer == "sgd"
                else "lr is not a scalar: [2]")
    else:
        feeds[b] = np.ones((7, 255), np.float32)
        node = update
        text = ("var and delta do not have the same shape[300,256] [300,255]"
                if optimizer == "sgd" else
                "var and grad do not have the same shape[300,256] [300,255]")
    with tf.Session(graph=g) as s:
        s.run(init)
        with pytest.raises(errors.InvalidArgumentError) as e:
            s.run(train, feeds)
        assert "_FusedMatMulApply" in _types(s) or not _blas.available(np.float32)
        np.testing.assert_array_equal(s.run(w), np.ones((300, 256), np.float32))
    msg = str(e.value)
    assert text in msg and f"node {node} (" in msg, msg
    assert state_ops._GEMM_MIN <= 300 * 256


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_two_threads_training_one_variable_with_locking_lose_no_update(optimizer):
    """Two threads run the fused step at once (use_locking): a run that finds another in
    flight takes the allocating path, the other may write in place; every update lands."""
    import threading

    g, t = _graph(use_locking=True, optimizer=optimizer)
    steps = 20
    with tf.Session(graph=g) as s:
        s.run(t["init"])
        w0 = s.run(t["w"])
        s.run(t["train"], t["feeds"])  # (the plan, compiled on its next run)
        failures = []

        def train():
            try:
                for _ in range(steps):
                    s.run(t["train"], t["feeds"])
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(e)

        threads = [threading.Thread(target=train) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        got = s.run(t["w"])
    assert not failures
    if optimizer == "sgd":  # every update subtracts the same product: their order is moot
        np.testing.assert_allclose(got, _want(w0, t["feeds"], t, False, False, 2 * steps + 1),
                                   rtol=1e-4, atol=1e-4)
    else:  # the accumulator's geometric sum, whichever thread went first
        np.testing.assert_allclose(got, _want(w0, t["feeds"], t, False, False, 2 * steps + 1,
                                              "momentum"), rtol=1e-4, atol=1e-3)
