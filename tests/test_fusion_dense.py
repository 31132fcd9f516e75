"""Dense-layer rewrites of a plan (runtime/executor.py): MatMul + BiasAdd (+ Relu) and
MatMul + ReluGrad fused into one step (_FusedMatMul, numba's one pass over the product in
place), Identity-like steps turned into aliases of their input's slot, and the numba pass of
ApplyGradientDescent (kernels_cpu/state_ops.py). Checked against float64 numpy references,
for bit-exact agreement with the unfused plan (MGRT_FUSE=0), for what must not be rewritten
(a value fetched or read twice, an Identity of a ref variable after an update, NCHW), and for
errors that still name the member node that failed."""

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.kernels_cpu import _jit, state_ops
from mgrt.runtime import errors, executor


def _types(sess):
    plan = list(sess._plans.values())[-1]
    return [st.op.type for st in plan.steps]


def _dense(dtype=np.float32, relu=True, ta=False, tb=False, m=33, k=20, n=24, seed=0):
    rs = np.random.RandomState(seed)
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(dtype, [k, m] if ta else [m, k], name="x")
        w = tf.Variable(rs.randn(*([n, k] if tb else [k, n])).astype(dtype), name="w")
        b = tf.Variable(rs.randn(n).astype(dtype), name="b")
        mm = tf.matmul(x, w, transpose_a=ta, transpose_b=tb, name="mm")
        biased = tf.nn.bias_add(mm, b, name="biased")
        out = tf.nn.relu(biased, name="act") if relu else biased
        init = tf.global_variables_initializer()
    return g, dict(x=x, w=w, b=b, mm=mm, biased=biased, out=out, init=init)


def _run(g, t, fetches, feeds):
    s = tf.Session(graph=g)
    s.run(t["init"])
    return s, s.run(fetches, feeds)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_bias_relu_fused(dtype, relu, ta, tb, monkeypatch):
    g, t = _dense(dtype, relu, ta, tb, seed=int(ta) + 2 * int(tb))
    rs = np.random.RandomState(5)
    xv = rs.randn(*t["x"].shape.as_list()).astype(dtype)
    xv[0, 0] = np.nan
    xv[-1, -1] = np.inf
    s, got = _run(g, t, t["out"], {t["x"]: xv})
    assert _types(s)[-1] == "_FusedMatMul" and "BiasAdd" not in _types(s)
    w, b = s.run([t["w"], t["b"]])
    a64 = xv.astype(np.float64).T if ta else xv.astype(np.float64)
    w64 = w.astype(np.float64).T if tb else w.astype(np.float64)
    with np.errstate(invalid="ignore"):
        want = a64 @ w64 + b
    if relu:
        want = np.where(want < 0, 0.0, want)
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[ok], want[ok], rtol=tol, atol=tol)
    monkeypatch.setattr(executor, "FUSE", False)
    s2, unfused = _run(g, t, t["out"], {t["x"]: xv})
    assert "_FusedMatMul" not in _types(s2) and "BiasAdd" in _types(s2)
    np.testing.assert_array_equal(unfused, got)  # bit for bit


def test_relu_keeps_nan_and_zeroes_negatives():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [3, 1])
        b = tf.placeholder(tf.float32, [1])
        y = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, tf.constant([[2.0]])), b))
    s = tf.Session(graph=g)
    got = s.run(y, {x: np.array([[np.nan], [-3.0], [2.0]], np.float32),
                    b: np.array([1.0], np.float32)})
    assert _types(s)[-1] == "_FusedMatMul"
    assert np.isnan(got[0, 0]) and got[1, 0] == 0 and got[2, 0] == 5.0  # TF's max(x, 0)


def test_what_dense_chains_fuse():
    g, t = _dense()
    xv = np.ones((33, 20), np.float32)
    s, _ = _run(g, t, [t["out"], t["mm"]], {t["x"]: xv})  # the product fetched
    assert "_FusedMatMul" not in _types(s) and "BiasAdd" in _types(s)
    s, _ = _run(g, t, [t["out"], t["biased"]], {t["x"]: xv})  # MatMul + BiasAdd only
    assert _types(s).count("_FusedMatMul") == 1 and "Relu" in _types(s)
    g, t = _dense(np.float16)  # half types: the unfused kernels
    s, _ = _run(g, t, t["out"], {t["x"]: xv.astype(np.float16)})
    assert "_FusedMatMul" not in _types(s)
    g = tf.Graph()
    with g.as_default():  # an int32 product is not fused
        x = tf.placeholder(tf.int32, [3, 2])
        y = tf.nn.bias_add(tf.matmul(x, tf.ones([2, 4], tf.int32)), tf.ones([4], tf.int32))
    s = tf.Session(graph=g)
    np.testing.assert_array_equal(s.run(y, {x: np.ones((3, 2), np.int32)}), np.full((3, 4), 3))
    assert "_FusedMatMul" not in _types(s)


def test_jit_off_leaves_dense_chains_unfused(monkeypatch):
    monkeypatch.setattr(_jit, "enabled", lambda: False)
    g, t = _dense()
    s, got = _run(g, t, t["out"], {t["x"]: np.ones((33, 20), np.float32)})
    assert "_FusedMatMul" not in _types(s)
    w, b = s.run([t["w"], t["b"]])
    np.testing.assert_allclose(got, np.maximum(np.ones((33, 20)) @ w + b, 0), rtol=1e-5)


def test_dense_member_errors_name_their_nodes():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [None, None])
        b = tf.placeholder(tf.float32, [None])
        y = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, tf.ones([4, 3]), name="the_mm"), b,
                                      name="the_bias"))
    s = tf.Session(graph=g)
    ok = s.run(y, {x: np.ones((2, 4), np.float32), b: np.zeros(3, np.float32)})
    np.testing.assert_array_equal(ok, np.full((2, 3), 4.0))
    assert _types(s)[-1] == "_FusedMatMul"
    with pytest.raises(errors.InvalidArgumentError) as e:
        s.run(y, {x: np.ones((2, 5), np.float32), b: np.zeros(3, np.float32)})
    msg = str(e.value)
    assert "Matrix size-incompatible" in msg and "_Fused" not in msg
    assert "[[node the_mm (MatMul) with input shapes: [2,5], [4,3]]]" in msg
    with pytest.raises(errors.InvalidArgumentError) as e:
        s.run(y, {x: np.ones((2, 4), np.float32), b: np.zeros(7, np.float32)})
    msg = str(e.value)
    assert "Must provide as many biases as the last dimension" in msg
    assert "[[node the_bias (BiasAdd) with input shapes: [2,3], [7]]]" in msg


# --- MatMul + ReluGrad: a ReLU layer's gradient ------------------------------------------------
def _mlp_grad_graph(dtype=np.float32, seed=1):
    rs = np.random.RandomState(seed)
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(dtype, [16, 12], name="x")
        w0 = tf.Variable(rs.randn(12, 20).astype(dtype) * 0.5, name="w0")
        w1 = tf.Variable(rs.randn(20, 6).astype(dtype) * 0.5, name="w1")
        h = tf.nn.relu(tf.matmul(x, w0), name="h")
        y = tf.matmul(h, w1, name="y")
        loss = tf.reduce_sum(y * y)
        gw0, gw1 = tf.gradients(loss, [w0, w1])
        init = tf.global_variables_initializer()
    return g, dict(x=x, w0=w0, w1=w1, gw0=gw0, gw1=gw1, init=init)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_relu_grad_fused(dtype, monkeypatch):
    g, t = _mlp_grad_graph(dtype)
    xv = np.random.RandomState(2).randn(16, 12).astype(dtype)
    s, (gw0, gw1) = _run(g, t, [t["gw0"], t["gw1"]], {t["x"]: xv})
    types = _types(s)
    assert "ReluGrad" not in types  # the backprop product of h, masked in place
    assert types.count("_FusedMatMul") == 1
    w0, w1 = (v.astype(np.float64) for v in s.run([t["w0"], t["w1"]]))
    x64 = xv.astype(np.float64)
    hpre = x64 @ w0
    h = np.maximum(hpre, 0)
    dy = 2 * (h @ w1)
    dh = (dy @ w1.T) * (hpre > 0)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gw1, h.T @ dy, rtol=tol, atol=tol)
    np.testing.assert_allclose(gw0, x64.T @ dh, rtol=tol, atol=tol)
    monkeypatch.setattr(executor, "FUSE", False)
    s2, (u0, u1) = _run(g, t, [t["gw0"], t["gw1"]], {t["x"]: xv})
    assert "ReluGrad" in _types(s2)
    np.testing.assert_array_equal(u0, gw0)
    np.testing.assert_array_equal(u1, gw1)


def test_training_step_through_the_gradients_tuples(monkeypatch):
    """An optimizer gates each op's gradients (a tuple: Identities under a group's control):
    as aliases they no longer stand between the backprop product and its ReluGrad."""
    results = []
    for fuse in (True, False):
        monkeypatch.setattr(executor, "FUSE", fuse)
        g, t = _mlp_grad_graph()
        with g.as_default():
            loss = tf.get_default_graph().get_tensor_by_name("y:0")
            train = tf.train.GradientDescentOptimizer(0.01).minimize(tf.reduce_sum(loss * loss))
        s = tf.Session(graph=g)
        s.run(t["init"])
        for _ in range(3):
            s.run(train, {t["x"]: np.random.RandomState(6).randn(16, 12).astype(np.float32)})
        types = _types(s)
        if fuse:
            assert "ReluGrad" not in types and types.count("Identity") == 2  # the var reads
        else:
            assert "ReluGrad" in types and types.count("Identity") > 2
        results.append(s.run([t["w0"], t["w1"]]))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_relu_grad_member_error_names_it():
    from mgrt.runtime.ops import apply_op
    g = tf.Graph()
    with g.as_default():
        a = tf.placeholder(tf.float32, [3, 4])
        f = tf.placeholder(tf.float32)
        mm = tf.matmul(a, tf.ones([4, 5]))
        out = apply_op("ReluGrad", [mm, f], name="the_relu_grad").outputs[0]
    s = tf.Session(graph=g)
    fv = np.random.RandomState(0).randn(3, 5).astype(np.float32)
    got = s.run(out, {a: np.ones((3, 4), np.float32), f: fv})
    assert _types(s)[-1] == "_FusedMatMul"
    np.testing.assert_array_equal(got, 4.0 * (fv > 0))
    with pytest.raises(errors.InvalidArgumentError) as e:
        s.run(out, {a: np.ones((3, 4), np.float32), f: np.ones((3, 6), np.float32)})
    assert "[[node the_relu_grad (ReluGrad) with input shapes: [3,5], [3,6]]]" in str(e.value)


# --- pass-through steps --------------------------------------------------------------------------
def test_identities_are_aliases():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [3])
        a = tf.identity(x * 2.0, name="a")
        b = tf.stop_gradient(a + 1.0, name="b")
        c = tf.identity(tf.identity(b), name="c")
        d = c * 3.0
    s = tf.Session(graph=g)
    av, bv, cv, dv = s.run([a, b, c, d], {x: np.array([1, 2, 3], np.float32)})
    np.testing.assert_array_equal(av, [2, 4, 6])
    np.testing.assert_array_equal(bv, [3, 5, 7])
    np.testing.assert_array_equal(cv, [3, 5, 7])
    np.testing.assert_array_equal(dv, [9, 15, 21])
    assert not {"Identity", "StopGradient"} & set(_types(s))
    # fed, an Identity's output is the fed value; its input is not computed
    got = s.run(d, {c: np.array([1, 1, 1], np.float32)})
    np.testing.assert_array_equal(got, [3, 3, 3])


def test_identity_keeps_its_control_dependencies():
    g = tf.Graph()
    with g.as_default():
        v = tf.Variable(1.0)
        init = tf.global_variables_initializer()
        before = v * 1.0
        with tf.control_dependencies([before]):
            upd = tf.assign(v, 5.0)
        with tf.control_dependencies([upd]):
            after = v.read_value()  # an Identity of the ref: reads after the update, a step
            same = tf.identity(before)  # an alias of the value read before
            y = tf.identity(tf.constant(2.0))  # an alias; its reader still runs after upd
        add = tf.assign_add(v, y)
    s = tf.Session(graph=g)
    s.run(init)
    got_after, got_same = s.run([after, same])
    assert got_after == 5.0 and got_same == 1.0
    assert "Identity" in _types(s)
    s.run(init)
    assert s.run(add) == 7.0  # 5 then + 2: not + 2 then 5
    assert s.run(v) == 7.0


def test_placeholder_with_default_passes_its_default_through():
    g = tf.Graph()
    with g.as_default():
        base = tf.placeholder(tf.float32, [2])
        p = tf.placeholder_with_default(base * 2.0, [2])
        y = p + 1.0
    s = tf.Session(graph=g)
    np.testing.assert_array_equal(s.run(y, {base: [1.0, 2.0]}), [3.0, 5.0])
    assert "PlaceholderWithDefault" not in _types(s)
    np.testing.assert_array_equal(s.run(y, {p: [0.0, 0.0]}), [1.0, 1.0])


# --- ApplyGradientDescent in one numba pass ----------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shared", [False, True])
def test_sgd_numba_pass_rounds_as_tensorflow(dtype, shared):
    n = 40000  # above the in-place threshold
    rs = np.random.RandomState(3)
    v0 = rs.randn(n).astype(dtype)
    gv = rs.randn(n).astype(dtype)
    g = tf.Graph()
    with g.as_default():
        v = tf.Variable(v0)
        read = tf.identity(v)  # (before the update in the graph: it runs first)
        grad = tf.placeholder(dtype, [n])
        upd = tf.train.GradientDescentOptimizer(0.1).apply_gradients([(grad, v)])
        init = tf.global_variables_initializer()
    s = tf.Session(graph=g)
    s.run(init)
    held = None
    calls = []
    real = _jit.sgd
    import mgrt.kernels_cpu._jit as jmod

    def counting(var, gg, alpha, out):
        calls.append(out is var)
        return real(var, gg, alpha, out)
    jmod.sgd = counting
    try:
        # shared: a read of the variable in the same run, fetched, holds the old buffer
        held = s.run([read, upd], {grad: gv})[0] if shared else s.run(upd, {grad: gv})
    finally:
        jmod.sgd = real
    assert calls and all(calls) != shared
    lr = dtype(np.float32(0.1))  # TF casts the float32 learning rate to the var's dtype
    want = v0 - gv * lr  # the product rounded, then the difference: Eigen's var -= grad * lr
    np.testing.assert_array_equal(s.run(v), want)
    if shared:
        np.testing.assert_array_equal(held, v0)  # not written through


def test_sgd_without_jit_is_the_same(monkeypatch):
    n = 40000
    rs = np.random.RandomState(4)
    v0, gv = rs.randn(n).astype(np.float32), rs.randn(n).astype(np.float32)
    results = []
    for table in (dict(state_ops._JIT_TO), {}):
        monkeypatch.setattr(state_ops, "_JIT_TO", table)
        g = tf.Graph()
        with g.as_default():
            v = tf.Variable(v0)
            grad = tf.placeholder(tf.float32, [n])
            upd = tf.train.GradientDescentOptimizer(0.3).apply_gradients([(grad, v)])
            init = tf.global_variables_initializer()
        s = tf.Session(graph=g)
        s.run(init)
        s.run(upd, {grad: gv})
        results.append(s.run(v))
    np.testing.assert_array_equal(results[0], results[1])


# --- ApplyMomentum in one numba pass -----------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("n,shared", [(300, False), (40000, False), (40000, True)])
def test_momentum_numba_pass_rounds_as_tensorflow(dtype, nesterov, n, shared):
    """Small variables (new buffers) and big ones (in place, or new buffers while a read of
    the variable in the same run still holds the old one): each product and sum rounded as
    TF's expression."""
    rs = np.random.RandomState(8)
    v0 = rs.randn(n).astype(dtype)
    gs = [rs.randn(n).astype(dtype) for _ in range(3)]
    g = tf.Graph()
    with g.as_default():
        v = tf.Variable(v0)
        read = tf.identity(v)  # (before the update in the graph: it runs first)
        grad = tf.placeholder(dtype, [n])
        opt = tf.train.MomentumOptimizer(0.05, 0.9, use_nesterov=nesterov)
        upd = opt.apply_gradients([(grad, v)])
        acc = opt.get_slot(v, "momentum")
        init = tf.global_variables_initializer()
    s = tf.Session(graph=g)
    s.run(init)
    import mgrt.kernels_cpu._jit as jmod
    calls, real = [], jmod.momentum

    def counting(*a):
        calls.append(a[-2] is a[0])
        return real(*a)
    jmod.momentum = counting
    try:
        held = []
        for gv in gs:  # shared: a read in the same run, fetched, holds the old buffer
            if shared:
                held.append(s.run([read, upd], {grad: gv})[0])
            else:
                s.run(upd, {grad: gv})
    finally:
        jmod.momentum = real
    assert len(calls) == 3 and all(calls) == (n >= 16384 and not shared)
    lr, mom = dtype(np.float32(0.05)), dtype(np.float32(0.9))
    want_v, want_a = v0.copy(), np.zeros(n, dtype)
    for gv in gs:
        want_a = want_a * mom + gv
        if nesterov:
            want_v = want_v - (gv * lr + want_a * mom * lr)
        else:
            want_v = want_v - want_a * lr
    got_v, got_a = s.run([v, acc])
    np.testing.assert_array_equal(got_a, want_a)
    np.testing.assert_array_equal(got_v, want_v)
    if shared:
        np.testing.assert_array_equal(held[0], v0)


# --- ApplyAdam in one numba pass ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("n,shared", [(300, False), (40000, False), (40000, True),
                                      (300000, False)])
def test_adam_numba_pass_rounds_as_the_numpy_passes(dtype, nesterov, n, shared, monkeypatch):
    """Small variables (new buffers), big ones (in place, or new buffers while a read of the
    variable in the same run holds the old one) and ones big enough to split across the
    team: each operation rounded as the numpy passes round it (state_ops._adam_to), which a
    numpy reference of TF's expression checks too."""
    from mgrt.kernels_cpu import _team
    from mgrt.runtime.ops import apply_op
    monkeypatch.setattr(_team, "_FIXED", 2)  # a team, as inside a training plan
    rs = np.random.RandomState(9)
    v0 = rs.randn(n).astype(dtype)
    gs = [rs.randn(n).astype(dtype) for _ in range(3)]
    results = []
    import mgrt.kernels_cpu._jit as jmod
    for table in (dict(state_ops._JIT_TO), {}):
        monkeypatch.setattr(state_ops, "_JIT_TO", table)
        g = tf.Graph()
        with g.as_default():
            v = tf.Variable(v0)
            read = tf.identity(v)  # (before the update in the graph: it runs first)
            m, s_ = tf.Variable(np.zeros(n, dtype)), tf.Variable(np.zeros(n, dtype))
            grad = tf.placeholder(dtype, [n])
            p1, p2 = tf.placeholder(dtype, []), tf.placeholder(dtype, [])
            hyper = [tf.constant(x, dtype) for x in (0.01, 0.9, 0.99, 1e-7)]
            upd = apply_op("ApplyAdam", [v, m, s_, p1, p2] + hyper + [grad],
                           {"use_nesterov": nesterov}).outputs[0]
            init = tf.global_variables_initializer()
        sess = tf.Session(graph=g)
        sess.run(init)
        calls, real = [], jmod.adam

        def counting(*a):
            calls.append(a[-3] is a[0])
            return real(*a)
        monkeypatch.setattr(jmod, "adam", counting)
        held = []
        for k, gv in enumerate(gs):  # shared: a read in the same run holds the old buffer
            feed = {grad: gv, p1: dtype(np.float32(0.9)) ** (k + 1),
                    p2: dtype(np.float32(0.99)) ** (k + 1)}
            if shared:
                held.append(sess.run([read, upd.op], feed)[0])
            else:
                sess.run(upd.op, feed)
        assert len(calls) == (3 if table else 0)
        if table:
            assert all(calls) == (n >= 16384 and not shared)
        results.append(sess.run([v, m, s_]))
        if shared:
            np.testing.assert_array_equal(held[0], v0)
    for jit_value, numpy_value in zip(*results):
        np.testing.assert_array_equal(jit_value, numpy_value)
    # TF's expression in numpy, in the variable's dtype
    one, lr, b1, b2, eps = (dtype(1), dtype(np.float32(0.01)), dtype(np.float32(0.9)),
                            dtype(np.float32(0.99)), dtype(np.float32(1e-7)))
    want_v, want_m, want_s = v0.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    for k, gv in enumerate(gs):
        p1, p2 = b1 ** (k + 1), b2 ** (k + 1)
        alpha = lr * np.sqrt(one - p2) / (one - p1)
        want_m = want_m + (gv - want_m) * (one - b1)
        want_s = want_s + (gv * gv - want_s) * (one - b2)
        num = ((gv * (one - b1) + want_m * b1) * alpha) if nesterov else want_m * alpha
        want_v = want_v - num / (np.sqrt(want_s) + eps)
    np.testing.assert_allclose(results[0][1], want_m, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(results[0][2], want_s, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(results[0][0], want_v, rtol=1e-5, atol=1e-6)
