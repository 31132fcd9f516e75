"""Fused steps (runtime/executor.py ``_fuse``, kernel_registry.register_fused): a Conv2D whose
output only its BiasAdd reads, and the Relu that alone reads that, run as one step
(_FusedConv2D) in plans without control flow. Checked against float64 numpy references, for
exact agreement with the unfused plan (same numpy operations, same order), for the cases that
must not fuse (a member's value fetched or fed, a second reader, NCHW, float16), and for
errors that name the member node that failed."""

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.kernels_cpu import _team, conv_ops
from mgrt.runtime import errors, executor


def _ref(x, w, b, stride, padding, relu):
    """float64 NHWC convolution (tap by tap) + bias (+ ReLU)."""
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    if padding == "SAME":
        oh, ow = -(-h // stride), -(-wd // stride)
        ph, pw = max(0, (oh - 1) * stride + kh - h), max(0, (ow - 1) * stride + kw - wd)
        xp = np.pad(x.astype(np.float64), ((0, 0), (ph // 2, ph - ph // 2),
                                           (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
        xp = x.astype(np.float64)
    y = np.zeros((n, oh, ow, co))
    for i in range(kh):
        for j in range(kw):
            t = xp[:, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride]
            with np.errstate(invalid="ignore"):  # inf * 0 in the NaN/inf cases
                y += t @ w[i, j].astype(np.float64)
    y += b
    return np.maximum(y, 0) if relu else y


def _graph(xs, ws, dtype=np.float32, relu=True, stride=1, padding="SAME", seed=0):
    rs = np.random.RandomState(seed)
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(dtype, xs, name="x")
        w = tf.Variable((rs.randn(*ws) * 0.3).astype(dtype), name="w")
        b = tf.Variable(rs.randn(ws[3]).astype(dtype), name="b")
        conv = tf.nn.conv2d(x, w, [1, stride, stride, 1], padding, name="conv")
        biased = tf.nn.bias_add(conv, b, name="biased")
        out = tf.nn.relu(biased, name="act") if relu else biased
        init = tf.global_variables_initializer()
    return g, dict(x=x, w=w, b=b, conv=conv, biased=biased, out=out, init=init)


def _session(g, t):
    s = tf.Session(graph=g)
    s.run(t["init"])
    return s


def _step_types(sess):
    plan = list(sess._plans.values())[-1]
    return [st.op.type for st in plan.steps]


@pytest.fixture(params=["one thread", "team"])
def threads(request, monkeypatch):
    if request.param == "team":
        monkeypatch.setattr(conv_ops, "_TEAM_MIN_FLOPS", 0)
        monkeypatch.setattr(_team, "_FIXED", 3)
    else:
        monkeypatch.setattr(_team, "_FIXED", 1)
    return request.param


CASES = [  # x, filter, stride, padding: the direct path (C <= 32) and im2col (C = 64)
    ((3, 14, 14, 16), (5, 5, 16, 32), 1, "SAME"),
    ((4, 12, 11, 1), (3, 3, 1, 16), 2, "VALID"),
    ((2, 9, 9, 64), (3, 3, 64, 24), 1, "SAME"),
    ((2, 8, 8, 3), (1, 1, 3, 12), 1, "VALID"),      # 1x1: a plain matmul, 12 channels
    ((2, 8, 9, 3), (3, 3, 3, 12), 1, "SAME"),       # wide rows (12 channels: not direct)
    ((2, 10, 10, 3), (3, 3, 3, 40), 1, "SAME"),     # 40 = 32 + 8 columns
]


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_against_reference_and_unfused(case, relu, threads, monkeypatch):
    xs, ws, stride, padding = CASES[case]
    g, t = _graph(xs, ws, relu=relu, stride=stride, padding=padding, seed=case)
    x = np.random.RandomState(100 + case).randn(*xs).astype(np.float32)
    x[0, 1, 2, 0] = np.nan
    x[-1, 3, 4, 0] = np.inf
    s = _session(g, t)
    got = s.run(t["out"], {t["x"]: x})
    assert _step_types(s)[-1] == "_FusedConv2D"
    w, b = s.run([t["w"], t["b"]])
    want = _ref(x, w, b, stride, padding, relu)
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    monkeypatch.setattr(executor, "FUSE", False)
    s2 = _session(g, t)
    np.testing.assert_array_equal(s2.run(t["out"], {t["x"]: x}), got)  # bit for bit
    assert "_FusedConv2D" not in _step_types(s2)


def test_an_inference_plan_of_fused_convolutions_holds_blas_for_its_teams():
    g, t = _graph((2, 6, 6, 3), (3, 3, 3, 8))
    s = _session(g, t)
    s.run(t["out"], {t["x"]: np.ones((2, 6, 6, 3), np.float32)})
    plan = list(s._plans.values())[-1]
    assert [st.op.type for st in plan.steps if "Conv" in st.op.type] == ["_FusedConv2D"]
    assert plan._team_hold


def test_float64_fuses():
    g, t = _graph((2, 6, 6, 2), (3, 3, 2, 8), dtype=np.float64)
    s = _session(g, t)
    x = np.random.RandomState(3).randn(2, 6, 6, 2)
    got = s.run(t["out"], {t["x"]: x})
    assert _step_types(s)[-1] == "_FusedConv2D"
    assert got.dtype == np.float64
    w, b = s.run([t["w"], t["b"]])
    np.testing.assert_allclose(got, _ref(x, w, b, 1, "SAME", True), rtol=1e-12, atol=1e-12)


def test_gradients_through_the_fused_step():
    g, t = _graph((2, 8, 8, 4), (3, 3, 4, 8))
    with g.as_default():
        loss = tf.reduce_sum(t["out"] * t["out"])
        gw, gb = tf.gradients(loss, [t["w"], t["b"]])
    x = np.random.RandomState(7).randn(2, 8, 8, 4).astype(np.float32)
    s = _session(g, t)
    dw, db, y = s.run([gw, gb, t["out"]], {t["x"]: x})
    assert "_FusedConv2D" in _step_types(s)
    w, b = s.run([t["w"], t["b"]])
    ref = _ref(x, w, b, 1, "SAME", True)
    dz = 2 * ref * (ref > 0)
    np.testing.assert_allclose(db, dz.sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-3)
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw_ref = np.zeros((3, 3, 4, 8))
    for i in range(3):
        for j in range(3):
            dw_ref[i, j] = xp[:, i:i + 8, j:j + 8].reshape(-1, 4).T @ dz.reshape(-1, 8)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-2)


def _types_for(fetch, feed_extra=None, **kw):
    g, t = _graph((2, 6, 6, 3), (3, 3, 3, 8), **kw)
    s = _session(g, t)
    feeds = {t["x"]: np.ones((2, 6, 6, 3), kw.get("dtype", np.float32))}
    if feed_extra:
        feeds.update(feed_extra(t))
    s.run([t[k] for k in fetch], feeds)
    return _step_types(s)


def test_what_fuses_and_what_does_not():
    assert _types_for(["out"])[-1] == "_FusedConv2D"
    # the conv's value fetched: nothing fuses
    types = _types_for(["out", "conv"])
    assert "_FusedConv2D" not in types and "BiasAdd" in types and "Relu" in types
    # BiasAdd's value fetched: Conv2D + BiasAdd fuse, the Relu runs alone
    types = _types_for(["out", "biased"])
    assert types.count("_FusedConv2D") == 1 and "Relu" in types and "BiasAdd" not in types
    # the conv's value fed: the conv is not run at all
    types = _types_for(["out"], lambda t: {t["conv"]: np.zeros((2, 6, 6, 8), np.float32)})
    assert "Conv2D" not in types and "_FusedConv2D" not in types
    # float16: the unfused kernels (computed in float32, rounded per op)
    types = _types_for(["out"], dtype=np.float16)
    assert "_FusedConv2D" not in types and "Conv2D" in types


def test_a_second_reader_keeps_the_members_apart():
    g, t = _graph((2, 6, 6, 3), (3, 3, 3, 8))
    with g.as_default():
        both = t["out"] + tf.reduce_mean(t["conv"])
    s = _session(g, t)
    s.run(both, {t["x"]: np.ones((2, 6, 6, 3), np.float32)})
    assert "_FusedConv2D" not in _step_types(s)


def test_nchw_bias_is_not_fused():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [1, 6, 6, 2])
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, tf.ones([3, 3, 2, 8]), [1, 1, 1, 1],
                                                    "SAME"), tf.ones([6]),
                                      data_format="NCHW"))
    s = tf.Session(graph=g)
    got = s.run(y, {x: np.ones((1, 6, 6, 2), np.float32)})
    assert "_FusedConv2D" not in _step_types(s)
    assert got.shape == (1, 6, 6, 8)


def test_wrong_bias_size_names_the_bias_add():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [1, 6, 6, 2])
        b = tf.placeholder(tf.float32, [None])
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, tf.ones([3, 3, 2, 8]), [1, 1, 1, 1],
                                                    "SAME"), b, name="add_b"))
    s = tf.Session(graph=g)
    ok = s.run(y, {x: np.ones((1, 6, 6, 2), np.float32), b: np.zeros(8, np.float32)})
    assert ok.shape == (1, 6, 6, 8) and "_FusedConv2D" in _step_types(s)
    with pytest.raises(errors.InvalidArgumentError) as e:
        s.run(y, {x: np.ones((1, 6, 6, 2), np.float32), b: np.zeros(5, np.float32)})
    msg = str(e.value)
    assert "Must provide as many biases as the last dimension" in msg
    assert "[[node add_b (BiasAdd) with input shapes: [1,6,6,8], [5]]]" in msg
    assert "_Fused" not in msg


def test_conv_failure_names_the_conv():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [1, 6, 6, None])
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, tf.ones([3, 3, 2, 8]), [1, 1, 1, 1],
                                                    "SAME", name="the_conv"), tf.ones([8])))
    s = tf.Session(graph=g)
    with pytest.raises(errors.InvalidArgumentError) as e:
        s.run(y, {x: np.ones((1, 6, 6, 3), np.float32)})  # 3 channels, the filter has 2
    msg = str(e.value)
    assert "[[node the_conv (Conv2D) with input shapes: [1,6,6,3], [3,3,2,8]]]" in msg
    assert "_Fused" not in msg


def test_fuse_off_by_environment():
    import os
    import subprocess
    import sys
    code = "import mgrt.runtime.executor as e; print(e.FUSE)"
    for value, want in (("0", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code],
                             env=dict(os.environ, MGRT_FUSE=value),
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == want


# --- MaxPoolGrad + ReluGrad ---------------------------------------------------------------------
def _pool_ref_grad(f, g, k, s, padding, features=None):
    """float64 MaxPoolGrad of input f by TF's argmax rule (first maximum in row-major order,
    NaN first stays), then ReluGrad: dx * (features > 0) (features: f when not given)."""
    n, h, w, c = f.shape
    if padding == "SAME":
        oh, ow = -(-h // s), -(-w // s)
        pt = max(0, (oh - 1) * s + k - h) // 2
        pl = max(0, (ow - 1) * s + k - w) // 2
    else:
        oh, ow, pt, pl = (h - k) // s + 1, (w - k) // s + 1, 0, 0
    dx = np.zeros(f.shape)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    best = None
                    for di in range(k):
                        for dj in range(k):
                            hh, ww = i * s - pt + di, j * s - pl + dj
                            if 0 <= hh < h and 0 <= ww < w:
                                v = f[b, hh, ww, ch]
                                if best is None or v > best[0]:
                                    best = (v, hh, ww)
                    dx[b, best[1], best[2], ch] += g[b, i, j, ch]
    with np.errstate(invalid="ignore"):
        return dx * ((f if features is None else features) > 0)


@pytest.mark.parametrize("k,s,padding", [(2, 2, "VALID"), (3, 2, "SAME"), (2, 2, "SAME"),
                                         (3, 1, "VALID")])
def test_maxpool_relu_grad_fused(k, s, padding, threads, monkeypatch):
    rs = np.random.RandomState(k * 10 + s)
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [3, 9, 10, 8])
        r = tf.nn.relu(x)
        p = tf.nn.max_pool(r, [1, k, k, 1], [1, s, s, 1], padding)
        gp = tf.placeholder(tf.float32, p.shape)
        (dx,) = tf.gradients(p, [x], gp)
    xv = rs.randn(3, 9, 10, 8).astype(np.float32)
    xv[0, 0, 0, :] = 0.0  # ties at zero: ReLU's mask is f > 0
    xv[1, 4, 4, 0] = np.nan
    sess = tf.Session(graph=g)
    gv = rs.randn(*p.shape.as_list()).astype(np.float32)
    gv[2, 1, 1, 3] = np.inf
    from mgrt.kernels_cpu import _jit
    real, fused_calls = _jit.maxpool_grad_nhwc, []

    def counting(*a, **kw):
        fused_calls.append(kw.get("relu", False))
        return real(*a, **kw)
    monkeypatch.setattr(_jit, "maxpool_grad_nhwc", counting)
    got = sess.run(dx, {x: xv, gp: gv})
    assert "_FusedMaxPoolGrad" in _step_types(sess)
    assert fused_calls == [True]  # one pass: the ReLU's mask taken in the pool's loop
    with np.errstate(invalid="ignore"):
        want = _pool_ref_grad(np.maximum(xv, 0).astype(np.float64), gv.astype(np.float64),
                              k, s, padding)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(executor, "FUSE", False)
    s2 = tf.Session(graph=g)
    np.testing.assert_array_equal(s2.run(dx, {x: xv, gp: gv}), got)
    assert "_FusedMaxPoolGrad" not in _step_types(s2)
    assert fused_calls == [True, False]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_2x2_pool_grad_with_relu_mask_from_the_argmax_pass_bit_for_bit(dtype, bias, threads):
    """The 2x2/2 loop takes ReLU's mask from its argmax pass (the picked element > 0) instead
    of reading x again: bit for bit the MaxPoolGrad pass then TF's ReluGrad (g * (x > 0)),
    with NaN first in a window (it sticks: mask 0), NaN later (never picked), ties (the first
    wins), +-0.0 maxima (mask 0), inf and NaN gradients (times 0: NaN), and the BiasAddGrad
    sums those of that dx in float64."""
    from mgrt.kernels_cpu import _jit
    rs = np.random.RandomState(5)
    x = rs.randn(5, 6, 8, 24).astype(dtype)
    x[0, 0, 0, 0] = np.nan          # first of its window: picked, mask 0
    x[0, 0, 1, 1] = np.nan          # second: never picked
    x[1, 2:4, 2:4, 2] = 1.5         # a four-way tie: the first wins
    x[1, 2:4, 4:6, 3] = -0.0        # -0.0 maxima: mask 0
    x[1, 2, 6, 3], x[1, 3, 7, 3] = 0.0, -0.0
    x[2, 4:6, 0:2, 4] = -1.0        # a negative maximum: mask 0
    x[3] = np.maximum(x[3], 0)      # after a ReLU: many zero maxima
    g = rs.randn(5, 3, 4, 24).astype(dtype)
    g[0, 0, 0, 0] = np.inf          # under the NaN-first window: inf * 0 = NaN
    g[2, 2, 0, 4] = np.nan          # under the negative maximum: NaN * 0 = NaN
    g[4, 1, 1, 5] = -np.inf
    ks = st = (1, 2, 2, 1)
    geo = (3, 4, 0, 0, 0, 0)
    plain = _jit.maxpool_grad_nhwc(x, g, ks, st, geo, np.dtype(dtype))
    with np.errstate(invalid="ignore"):
        want = plain * (x > 0).astype(dtype)
    got = _jit.maxpool_grad_nhwc(x, g, ks, st, geo, np.dtype(dtype), relu=True, bias=bias)
    if bias:
        got, sums = got
        with np.errstate(invalid="ignore"):
            ref = want.astype(np.float64).sum(axis=(0, 1, 2))
        assert np.isnan(sums[0]) and sums[5] == -np.inf  # the NaN and -inf gradients
        np.testing.assert_allclose(sums, ref, rtol=1e-12, atol=1e-12)  # (summation order)
    assert np.isnan(got[0, 0, 0, 0]) and np.isnan(got[2, 4:6, 0:2, 4]).sum() == 1
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    # the plain pass: the first of tied maxima, a NaN first sticks, every element written
    assert plain[1, 2, 2, 2] == g[1, 1, 1, 2] and not plain[1, 2:4, 2:4, 2].ravel()[1:].any()
    assert plain[0, 0, 0, 0] == np.inf and plain[0, 0, 1, 1] == 0


def test_maxpool_grad_with_other_features_runs_unfused():
    from mgrt.runtime.ops import apply_op
    g = tf.Graph()
    with g.as_default():
        a = tf.placeholder(tf.float32, [1, 4, 4, 2])
        f = tf.placeholder(tf.float32)
        gp = tf.placeholder(tf.float32)
        pooled = tf.nn.max_pool(a, [1, 2, 2, 1], [1, 2, 2, 1], "VALID")
        win = dict(ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="VALID")
        mg = apply_op("MaxPoolGrad", [a, pooled, gp], win).outputs[0]
        out = apply_op("ReluGrad", [mg, f]).outputs[0]
    rs = np.random.RandomState(0)
    av, fv = rs.randn(1, 4, 4, 2).astype(np.float32), rs.randn(1, 4, 4, 2).astype(np.float32)
    gv = rs.randn(1, 2, 2, 2).astype(np.float32)
    s = tf.Session(graph=g)
    got = s.run(out, {a: av, f: fv, gp: gv})
    assert "_FusedMaxPoolGrad" in _step_types(s)  # fused, and run as its two members
    routed = _pool_ref_grad(av.astype(np.float64), gv.astype(np.float64), 2, 2, "VALID",
                            features=np.ones(av.shape))
    np.testing.assert_allclose(got, routed * (fv > 0), rtol=1e-6, atol=1e-6)
    with pytest.raises(errors.InvalidArgumentError) as e:  # the pool's check, its node named
        s.run(out, {a: av, f: fv, gp: np.zeros((1, 3, 2, 2), np.float32)})
    assert "(MaxPoolGrad) with input shapes: [1,4,4,2], [1,2,2,2], [1,3,2,2]]]" in str(e.value)
    with pytest.raises(errors.InvalidArgumentError) as e:  # ReluGrad's own check
        s.run(out, {a: av, f: np.zeros((1, 4, 4, 3), np.float32), gp: gv})
    assert "(ReluGrad) with input shapes: [1,4,4,2], [1,4,4,3]]]" in str(e.value)


@pytest.mark.parametrize("k,s,padding", [(2, 2, "VALID"), (3, 2, "SAME"), (2, 2, "SAME"),
                                         (3, 1, "VALID")])
def test_bias_grad_of_a_fused_pool_gradient_is_summed_in_its_pass(k, s, padding, threads,
                                                                   monkeypatch):
    rs = np.random.RandomState(k * 7 + s)
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [3, 10, 10, 8])
        bias = tf.placeholder(tf.float32, [8])
        r = tf.nn.relu(tf.nn.bias_add(x, bias))
        p = tf.nn.max_pool(r, [1, k, k, 1], [1, s, s, 1], padding)
        gp = tf.placeholder(tf.float32, p.shape)
        dx, db = tf.gradients(p, [x, bias], gp)
    xv = rs.randn(3, 10, 10, 8).astype(np.float32)
    bv = rs.randn(8).astype(np.float32) * 0.1
    xv[1, 4, 4, 2] = np.nan  # a NaN under a window: its channel's sum is NaN
    gv = rs.randn(*p.shape.as_list()).astype(np.float32)
    sess = tf.Session(graph=g)
    got_dx, got_db = sess.run([dx, db], {x: xv, bias: bv, gp: gv})
    types = _step_types(sess)
    assert "BiasAddGrad" not in types and "_FusedMaxPoolGrad" in types
    with np.errstate(invalid="ignore"):
        f = np.maximum(xv.astype(np.float64) + bv, 0)
        f[np.isnan(xv)] = np.nan
        want_dx = _pool_ref_grad(f, gv.astype(np.float64), k, s, padding)
    want_db = want_dx.sum(axis=(0, 1, 2))
    assert got_db.dtype == np.float32 and got_db.shape == (8,)
    np.testing.assert_array_equal(np.isnan(got_db), np.isnan(want_db))
    okb = ~np.isnan(want_db)
    np.testing.assert_allclose(got_db[okb], want_db[okb], rtol=1e-5, atol=1e-5)
    ok = ~np.isnan(want_dx)
    np.testing.assert_allclose(got_dx[ok], want_dx[ok], rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(executor, "FUSE", False)
    s2 = tf.Session(graph=g)
    dx2, db2 = s2.run([dx, db], {x: xv, bias: bv, gp: gv})
    assert "BiasAddGrad" in _step_types(s2)
    np.testing.assert_array_equal(dx2, got_dx)
    np.testing.assert_allclose(db2[okb], got_db[okb], rtol=1e-5, atol=1e-6)
