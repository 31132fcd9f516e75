"""Concurrent pairs (runtime/executor.py ``_pair``): two independent convolution kernels, a
convolution's input gradient and its filter gradient, run side by side on the two threads of
a team instead of one after the other. Checked against float64 numpy references and for
exact agreement with the plan that runs them apart; that nothing is paired across a state
change or a control edge; that a failure names the member's node; that unequal members go
back to running apart."""

import threading
import time

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.kernels_cpu import _team, conv_ops
from mgrt.runtime import errors, executor


@pytest.fixture
def team(monkeypatch):
    """A team of two threads for every convolution, as inside a plan's hold on 2 cores."""
    monkeypatch.setattr(conv_ops, "_TEAM_MIN_FLOPS", 0)
    monkeypatch.setattr(_team, "_FIXED", 2)


def _conv_graph(xs, ws, seed=0):
    """conv -> loss = sum(conv * r); dx and dw by tf.gradients."""
    rs = np.random.RandomState(seed)
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, xs, name="x")
        w = tf.Variable((rs.randn(*ws) * 0.3).astype(np.float32), name="w")
        y = tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME", name="conv")
        r = tf.constant(rs.randn(xs[0], xs[1], xs[2], ws[3]).astype(np.float32), name="r")
        loss = tf.reduce_sum(y * r, name="loss")
        dx, dw = tf.gradients(loss, [x, w])
        init = tf.global_variables_initializer()
    return dict(x=x, w=w, r=r, dx=dx, dw=dw, init=init, g=g)


def _reference(x, w, r):
    """float64 (dx, dw) of loss = sum(conv(x, w) * r), stride 1, SAME."""
    kh, kw = w.shape[:2]
    n, h, wd, c = x.shape
    pt, pl = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, kh - 1 - pt), (pl, kw - 1 - pl), (0, 0)))
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape)
    r64 = r.astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            win = xp[:, i:i + h, j:j + wd]
            dw[i, j] = np.einsum("nhwc,nhwo->co", win, r64)
            dxp[:, i:i + h, j:j + wd] += r64 @ w[i, j].astype(np.float64).T
    return dxp[:, pt:pt + h, pl:pl + wd], dw


def _plan_types(sess):
    plan = list(sess._plans.values())[-1]
    return [st.op.type for st in plan.steps]


CASES = [((4, 14, 14, 16), (5, 5, 16, 32)),   # the CNN's second layer (direct loops)
         ((3, 9, 9, 64), (3, 3, 64, 24)),     # im2col
         ((2, 8, 8, 3), (3, 3, 3, 16))]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_gradients_side_by_side_match_reference_and_the_plan_that_runs_them_apart(
        case, team, monkeypatch):
    xs, ws = CASES[case]
    t = _conv_graph(xs, ws, seed=case)
    x = np.random.RandomState(10 + case).randn(*xs).astype(np.float32)
    with tf.Session(graph=t["g"]) as s:
        s.run(t["init"])
        got = [s.run([t["dx"], t["dw"]], {t["x"]: x}) for _ in range(3)]
        assert "_Concurrent" in _plan_types(s)
        w, r = s.run([t["w"], t["r"]])
    want_dx, want_dw = _reference(x, w, r)
    np.testing.assert_allclose(got[-1][0], want_dx, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[-1][1], want_dw, rtol=1e-4, atol=1e-3)
    monkeypatch.setattr(executor, "PAIR", False)
    with tf.Session(graph=t["g"]) as s:
        s.run(t["init"])
        apart = s.run([t["dx"], t["dw"]], {t["x"]: x})
        assert "_Concurrent" not in _plan_types(s)
    for run in got:  # the input gradient bit for bit, every run; the filter gradient's
        # partial sums per thread are added in another grouping side by side (as they are
        # from run to run on a team: its threads take the chunks in whatever order)
        np.testing.assert_array_equal(run[0], apart[0])
        np.testing.assert_allclose(run[1], apart[1], rtol=1e-5, atol=1e-4)


def test_a_training_step_pairs_the_gradients_and_trains_as_apart(team, monkeypatch):
    def train(pair):
        monkeypatch.setattr(executor, "PAIR", pair)
        t = _conv_graph((4, 10, 10, 8), (3, 3, 8, 16), seed=5)
        with t["g"].as_default():
            w1 = tf.Variable(np.full((3, 3, 8, 8), 0.05, np.float32), name="w1")
            h = tf.nn.relu(tf.nn.conv2d(t["x"], w1, [1, 1, 1, 1], "SAME"))
            y = tf.nn.conv2d(h, t["w"], [1, 1, 1, 1], "SAME")
            loss = tf.reduce_sum(y * y)
            op = tf.train.GradientDescentOptimizer(1e-4).minimize(loss)
            init = tf.global_variables_initializer()
        x = np.random.RandomState(1).randn(4, 10, 10, 8).astype(np.float32)
        with tf.Session(graph=t["g"]) as s:
            s.run(init)
            for _ in range(4):
                s.run(op, {t["x"]: x})
            return _plan_types(s), s.run([w1, t["w"]])
    types, paired = train(True)
    assert types.count("_Concurrent") == 1
    types, apart = train(False)
    assert "_Concurrent" not in types
    for a, b in zip(paired, apart):  # (filter gradients: partial sums grouped otherwise)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert not np.array_equal(a, np.full_like(a, 0.05))  # trained


def _hand_graph(control):
    """In graph order: the input gradient, an AssignAdd, the filter gradient (waiting on the
    AssignAdd through a control edge when ``control``)."""
    rs = np.random.RandomState(3)
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, (2, 8, 8, 16), name="x")
        w = tf.Variable(rs.randn(3, 3, 16, 16).astype(np.float32), name="w")
        dy = tf.placeholder(tf.float32, (2, 8, 8, 16), name="dy")
        counter = tf.Variable(0.0, name="counter")
        dx = tf.nn.conv2d_backprop_input(tf.shape(x), w, dy, [1, 1, 1, 1], "SAME", name="dx")
        bump = tf.assign_add(counter, 1.0, name="bump")
        deps = [bump] if control else []
        with tf.control_dependencies(deps):
            dw = tf.nn.conv2d_backprop_filter(x, tf.constant([3, 3, 16, 16]), dy,
                                              [1, 1, 1, 1], "SAME", name="dw")
        init = tf.global_variables_initializer()
    return g, x, dy, dx, dw, bump, init


@pytest.mark.parametrize("control", [False, True])
def test_nothing_pairs_across_a_state_change_or_a_control_edge(control, team):
    g, x, dy, dx, dw, bump, init = _hand_graph(control)
    feeds = {x: np.ones((2, 8, 8, 16), np.float32), dy: np.ones((2, 8, 8, 16), np.float32)}
    with tf.Session(graph=g) as s:
        s.run(init)
        s.run([dx, dw, bump], feeds)
        types = _plan_types(s)
        assert "_Concurrent" not in types
        assert types.index("Conv2DBackpropInput") < types.index("AssignAdd") < \
            types.index("Conv2DBackpropFilter")
        # without the AssignAdd in the plan the two gradients pair
        s.run([dx, dw], feeds)
        assert "_Concurrent" in _plan_types(s) or control


def test_a_member_failure_names_its_node(team):
    g, x, dy, dx, dw, bump, init = _hand_graph(False)
    sizes = dx.op.inputs[0]
    feeds = {x: np.ones((2, 8, 8, 16), np.float32), dy: np.ones((2, 8, 8, 16), np.float32)}
    with tf.Session(graph=g) as s:
        s.run(init)
        s.run([dx, dw], feeds)
        assert "_Concurrent" in _plan_types(s)
        with pytest.raises(errors.InvalidArgumentError) as e:
            s.run([dx, dw], {**feeds, sizes: np.array([2, 9, 8, 16], np.int32)})
        assert "[[node dx (Conv2DBackpropInput)" in str(e.value)
        assert "_Concurrent" not in str(e.value) and "dw" not in str(e.value).split("[[")[-1]


def test_pair_run_runs_members_on_two_threads_until_they_prove_unequal(monkeypatch):
    monkeypatch.setattr(_team, "_FIXED", 2)
    threads = []

    def member(delay, value):
        def run(*inputs):
            threads.append(threading.get_ident())
            time.sleep(delay)
            return (value + sum(inputs),)
        return run

    run = executor._pair_run(member(0.02, 1), member(0.02, 10), 1)
    for _ in range(3):
        threads.clear()
        assert run(5, 7) == (6, 17)
        assert len(set(threads)) == 2  # side by side
    run = executor._pair_run(member(0.1, 1), member(0.001, 10), 1)
    assert run(0, 0) == (1, 10)  # the first run is not judged
    threads.clear()
    run(0, 0)
    assert len(set(threads)) == 2
    threads.clear()
    assert run(0, 0) == (1, 10)  # 100x apart: one after the other, on the calling thread
    assert set(threads) == {threading.get_ident()}


def test_pair_run_without_a_team_runs_members_in_order(monkeypatch):
    monkeypatch.setattr(_team, "_FIXED", 1)
    order = []
    run = executor._pair_run(lambda a: (order.append("a"), (a,))[1],
                             lambda b: (order.append("b"), (b,))[1], 1)
    assert run(1, 2) == (1, 2) and order == ["a", "b"]
