"""More gradient functions (Tan..Atanh, Atan2, Erfc, Lgamma, Xlogy/Xdivy/Xlog1py, the
second-order SigmoidGrad/TanhGrad/SqrtGrad/RsqrtGrad/ReciprocalGrad, Cumprod, EuclideanNorm,
SegmentSum, DynamicStitch) against TensorFlow's recordings
(tests/fixtures/make_gradients_extra.py: values, op types and node names of the gradient graph)
and against central finite differences of mgrt's forward values (numpy, float64)."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.runtime import dtypes
from mgrt.runtime.ops import apply_op

FIX = Path(__file__).parent / "fixtures" / "gradients_extra"
REC = json.loads((FIX / "cases.json").read_text())
CASES = {c["name"]: c for c in REC["cases"]}
VALUES = np.load(FIX / "values.npz")


def build(spec):
    g = tf.Graph()
    t, feed = {}, {}
    with g.as_default():
        for nm, info in spec["inputs"].items():
            val = VALUES[f"{spec['name']}/input/{nm}"]
            if info["kind"] == "ph":
                p = tf.placeholder(dtypes.as_dtype(val.dtype), info["shape"], name=nm)
                t[nm] = p
                feed[p] = val
            else:
                t[nm] = tf.constant(val, name=nm)
        for out, op, ins, attrs in spec["nodes"]:
            inputs = [[t[x] for x in v] if isinstance(v, list) else t[v] for v in ins.values()]
            o = apply_op(op, inputs, dict(attrs), name=out)
            t[out] = o.outputs[0]
        ys = [t[y] for y in spec["ys"]]
        xs = [t[x] for x in spec["xs"]]
        gys = [tf.constant(VALUES[f"{spec['name']}/grad_ys/{i}"], name=f"w{i}")
               for i in range(len(ys))]
    return g, feed, ys, xs, gys


def test_fixture_covers_the_op_types():
    types = {n[1] for c in CASES.values() for n in c["nodes"]}
    for want in ("Tan", "Sinh", "Cosh", "Asin", "Acos", "Atan", "Asinh", "Acosh", "Atanh",
                 "Atan2", "Erfc", "Lgamma", "Xlogy", "Xdivy", "Xlog1py", "SigmoidGrad",
                 "TanhGrad", "SqrtGrad", "RsqrtGrad", "ReciprocalGrad", "Cumprod",
                 "EuclideanNorm", "SegmentSum", "DynamicStitch"):
        assert want in types


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_tensorflow(name):
    spec = CASES[name]
    g, feed, ys, xs, gys = build(spec)
    with g.as_default():
        n0 = len(g.get_operations())
        grads = tf.gradients(ys, xs, grad_ys=gys)
        new_ops = g.get_operations()[n0:]
        assert ["none" if gr is None else "tensor" for gr in grads] == spec["grad_kinds"]
        fetch = [tf.convert_to_tensor(gr) for gr in grads if gr is not None]
        with tf.Session(graph=g) as sess:
            got = sess.run(fetch, feed)
    k = 0
    for i, kind in enumerate(spec["grad_kinds"]):
        if kind == "none":
            continue
        want = VALUES[f"{name}/grad/{i}"]
        assert got[k].dtype == want.dtype
        np.testing.assert_allclose(got[k], want, rtol=1e-10, atol=1e-10, err_msg=f"x {i}")
        k += 1
    types = dict(sorted(Counter(o.type for o in new_ops).items()))
    assert types == spec["op_types"]
    assert sorted(o.name for o in new_ops) == spec["op_names"]


FD_CASES = sorted(n for n, c in CASES.items() if c["fd"])


@pytest.mark.parametrize("name", FD_CASES)
def test_finite_differences(name):
    spec = CASES[name]
    g, feed, ys, xs, gys = build(spec)
    with g.as_default():
        grads = tf.gradients(ys, xs, grad_ys=gys)
        fetch = [tf.convert_to_tensor(gr) for gr in grads]
    with tf.Session(graph=g) as sess:
        sym = sess.run(fetch, feed)
        ws = sess.run(gys)

        def loss(fd):
            return sum(float(np.sum(w * v)) for w, v in zip(ws, sess.run(ys, fd)))

        for x, s in zip(xs, sym):
            base = feed[x]
            num = np.zeros_like(base)
            eps = 1e-6
            for idx in np.ndindex(base.shape):
                fp = dict(feed)
                xp = base.copy()
                xp[idx] += eps
                fp[x] = xp
                lp = loss(fp)
                xm = base.copy()
                xm[idx] -= eps
                fp[x] = xm
                num[idx] = (lp - loss(fp)) / (2 * eps)
            np.testing.assert_allclose(s, num, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}: gradient of {x.name}")


def test_xlogy_gradient_is_zero_where_x_is_zero():
    g, feed, ys, xs, gys = build(CASES["xlogy_zero_x"])
    with g.as_default():
        gx, gy = tf.gradients(ys, xs, grad_ys=gys)
        with tf.Session(graph=g) as sess:
            gxv, gyv = sess.run([gx, gy], feed)
    x = feed[xs[0]]
    assert np.all(gxv[x == 0] == 0) and np.all(gyv[x == 0] == 0)
