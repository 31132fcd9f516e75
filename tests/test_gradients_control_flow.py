"""``tf.gradients`` through TF1 control flow (cond, case, while_loop, nested) against the
gradients real TensorFlow computed for the same graphs (tests/fixtures/make_build_control_flow.py,
GRAD_CASES) and against central finite differences of mgrt's forward values (themselves checked
against TensorFlow).
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf

HERE = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("make_build_control_flow",
                                               HERE / "make_build_control_flow.py")
cases_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases_mod)
RECORD = json.loads((HERE / "build_control_flow" / "build_control_flow.json").read_text())
CASES = RECORD["cases"]
GRAD = {f.__name__: f for f in cases_mod.GRAD_CASES}


def dec(v):
    return np.asarray(v["data"], dtype=np.dtype(v["dtype"])).reshape(v["shape"])


def build(name):
    g = tf.Graph()
    with g.as_default():
        fetches, feeds = GRAD[name](tf)
        tf.global_variables_initializer()  # as the recording script does (an "init" NoOp)
    return g, fetches, feeds


def run(g, fetches, feed):
    with tf.Session(graph=g) as sess:
        return sess.run(fetches, {g.get_tensor_by_name(k): v for k, v in feed.items()})


@pytest.mark.parametrize("name", sorted(GRAD))
def test_gradient_values_match_tensorflow(name):
    g, fetches, _ = build(name)
    for rec in CASES[name]["runs"]:
        got = run(g, fetches, rec["feed"])
        for k, want in rec["out"].items():
            want = dec(want)
            got_k = np.asarray(got[k])
            assert got_k.shape == want.shape and got_k.dtype == want.dtype, k
            np.testing.assert_allclose(got_k, want, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name}: {k} with feed {rec['feed']}")


@pytest.mark.parametrize("name", sorted(GRAD))
def test_forward_ops_match_tensorflow(name):
    """The forward graph (everything outside ``gradients/``, including the counters and
    stacks a while-loop gradient adds to the forward loop) has TensorFlow's ops."""
    g, _, _ = build(name)
    got = [[o.name, o.type] for o in g.get_operations() if not o.name.startswith("gradients")]
    want = [x for x in CASES[name]["ops"] if not x[0].startswith("gradients")]
    assert got == want


@pytest.mark.parametrize("name", sorted(GRAD))
def test_control_flow_gradient_ops_match_tensorflow(name):
    """The control-flow ops of the gradient graph (Switch/Merge/Enter/Exit/NextIteration/
    LoopCond, the stacks) are the ones TensorFlow builds, by name."""
    kinds = {"Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond", "StackV2",
             "StackPushV2", "StackPopV2", "ControlTrigger"}
    g, _, _ = build(name)
    got = sorted(o.name for o in g.get_operations() if o.type in kinds)
    want = sorted(n for n, t in CASES[name]["ops"] if t in kinds)
    assert got == want


@pytest.mark.parametrize("name", sorted(GRAD))
def test_whole_gradient_graph_matches_tensorflow(name):
    """Every op of the graph, gradient ops included, has TensorFlow's name and type."""
    g, _, _ = build(name)
    assert [[o.name, o.type] for o in g.get_operations()] == CASES[name]["ops"]


@pytest.mark.parametrize("name", sorted(GRAD))
def test_static_shapes_match_tensorflow(name):
    """The static shapes of every output (forward, gradient loops, stacks) are TensorFlow's."""
    g, _, _ = build(name)
    got = [[None if t.shape.rank is None else t.shape.as_list() for t in o.outputs]
           for o in g.get_operations()]
    assert got == CASES[name]["shapes"]


FD_CASES = [
    # (case, the differentiated output, the gradient fetch, the input, feed)
    ("grad_cond", "y", "gx", "x:0", {"x:0": [1.0, 2.0], "w:0": [0.5, -1.0], "p:0": True}),
    ("grad_cond", "y", "gx", "x:0", {"x:0": [1.0, 2.0], "w:0": [0.5, -1.0], "p:0": False}),
    ("grad_cond", "y", "gw", "w:0", {"x:0": [1.0, 2.0], "w:0": [0.5, -1.0], "p:0": True}),
    ("grad_cond_nested", "z", "g", "x:0", {"x:0": 1.5, "p:0": True, "q:0": True}),
    ("grad_cond_nested", "z", "g", "x:0", {"x:0": 1.5, "p:0": False, "q:0": True}),
    ("grad_while", "a", "gw", "w:0", {"x:0": [1.0, 2.0], "w:0": [2.0, 3.0], "n:0": 3}),
    ("grad_while_square", "a", "g", "x:0", {"x:0": 0.5}),
    ("grad_while_nested", "a", "g", "x:0", {"x:0": 1.1}),
    ("grad_cond_in_while", "a", "gx", "x:0", {"x:0": 1.5, "w:0": 2.0}),
    ("grad_cond_in_while", "a", "gw", "w:0", {"x:0": 1.5, "w:0": -0.5}),
]


@pytest.mark.parametrize("name,out,grad,inp,feed", FD_CASES)
def test_gradients_match_finite_differences(name, out, grad, inp, feed):
    g, fetches, _ = build(name)
    feed = {k: np.asarray(v, dtype=np.float64 if isinstance(v, float) or
                          (isinstance(v, list) and isinstance(v[0], float)) else None)
            for k, v in feed.items()}
    base = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in feed.items()}
    analytic = np.asarray(run(g, {grad: fetches[grad]}, base)[grad], dtype=np.float64)
    x0 = feed[inp].astype(np.float64)
    numeric = np.zeros_like(x0)
    eps = 1e-3
    for idx in np.ndindex(x0.shape if x0.shape else ()):
        vals = []
        for s in (+1, -1):
            xp = x0.copy()
            if xp.shape:
                xp[idx] += s * eps
            else:
                xp = xp + s * eps
            f = dict(base)
            f[inp] = xp.astype(np.float32)
            vals.append(np.asarray(run(g, {out: fetches[out]}, f)[out], dtype=np.float64).sum())
        if numeric.shape:
            numeric[idx] = (vals[0] - vals[1]) / (2 * eps)
        else:
            numeric = np.asarray((vals[0] - vals[1]) / (2 * eps))
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", ["grad_cond", "grad_while"])
def test_gradients_of_an_imported_graph(name):
    """Build the forward graph, export it, import it elsewhere (its contexts restored from the
    collections), and take the gradient there: TF's values."""
    g = tf.Graph()
    with g.as_default():
        if name == "grad_cond":
            x = tf.placeholder(tf.float32, [2], name="x")
            w = tf.placeholder(tf.float32, [2], name="w")
            p = tf.placeholder(tf.bool, [], name="p")
            y = tf.cond(p, lambda: x * x * w, lambda: x * 3.0)
        else:
            x = tf.placeholder(tf.float32, [2], name="x")
            w = tf.placeholder(tf.float32, [2], name="w")
            n = tf.placeholder(tf.int32, [], name="n")
            y = tf.while_loop(lambda i, a: tf.less(i, n), lambda i, a: (i + 1, a * w),
                              [tf.constant(0), x])[1]
    mgd = tf.train.export_meta_graph(graph=g)
    g2 = tf.Graph()
    with g2.as_default():
        tf.train.import_meta_graph(mgd, import_scope="m")
        y2 = g2.get_tensor_by_name("m/" + y.name)
        gx, gw = tf.gradients(y2, [g2.get_tensor_by_name("m/x:0"),
                                   g2.get_tensor_by_name("m/w:0")])
    for rec in CASES[name]["runs"]:
        with tf.Session(graph=g2) as sess:
            got = sess.run([gx, gw], {g2.get_tensor_by_name("m/" + k): v
                                      for k, v in rec["feed"].items()})
        np.testing.assert_allclose(got[0], dec(rec["out"]["gx"]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], dec(rec["out"]["gw"]), rtol=1e-5, atol=1e-6)


def test_second_order_while_gradient_is_refused():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [], name="x")
        r = tf.while_loop(lambda i, a: tf.less(i, 3), lambda i, a: (i + 1, a * x),
                          [tf.constant(0), x])
        gx, = tf.gradients(r[1], [x])
        with pytest.raises((TypeError, NotImplementedError, LookupError)):
            tf.gradients(gx, [x])


def test_gradient_of_a_tensor_inside_a_loop_is_refused():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [], name="x")
        inside = []

        def body(i, a):
            b = a * x
            inside.append(b)
            return i + 1, b

        tf.while_loop(lambda i, a: tf.less(i, 3), body, [tf.constant(0), x])
        with pytest.raises(NotImplementedError, match="while loop"):
            tf.gradients(inside[0], [x])
