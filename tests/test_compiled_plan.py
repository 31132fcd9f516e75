"""Straight-line plans compiled into one Python function (executor._compile_straight): the
same values, state changes and errors as the step loop, from the run that compiles them on."""

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.runtime import errors, executor


def _graph():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [None, 4], name="x")
        w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, name="w")
        h = tf.matmul(x, w, name="h")
        a, b, c = tf.split(h, 3, axis=1, name="parts")  # three outputs
        s = tf.identity(a + b * c, name="s")  # an Identity: a pass-through
        cols = tf.unstack(h, axis=1, name="cols")
        total = tf.add_n(cols, name="total")
        bump = tf.assign_add(w, tf.ones_like(w) * 0.5, name="bump")
        flat = tf.placeholder(tf.float32, [None], name="flat")
        shaped = tf.reshape(flat, [2, 3], name="shaped")
    return g, x, w, s, total, bump, b, flat, shaped


def _reference(xv, wv):
    h = xv @ wv
    return h[:, :1] + h[:, 1:2] * h[:, 2:], h.sum(axis=1)


@pytest.mark.parametrize("after", [-1, 0, 1, 3])
def test_runs_give_the_loops_values_and_state_changes(after, monkeypatch):
    monkeypatch.setattr(executor, "COMPILE_AFTER", after)
    g, x, w, s, total, bump, b, flat, shaped = _graph()
    xv = np.random.RandomState(0).rand(5, 4).astype(np.float32)
    wv = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    with tf.Session(graph=g) as sess:
        sess.run(w.initializer)
        fetches = [s, total, x, bump]
        for step in range(5):
            out = sess.run(fetches, {x: xv})
            ref_s, ref_total = _reference(xv, wv)
            np.testing.assert_allclose(out[0], ref_s, rtol=1e-5)
            np.testing.assert_allclose(out[1], ref_total, rtol=1e-5)
            np.testing.assert_array_equal(out[2], xv)  # a fed tensor fetched
            wv = wv + np.float32(0.5)
            np.testing.assert_allclose(out[3], wv, rtol=1e-6)
        plan = next(p for p in sess._plans.values() if len(p.fetch_slots) == 4)
        assert (plan._program is not None) == (0 <= after < 5)
        # a fed output of a multi-output op: the op still runs for its other outputs
        feed_b = np.full((5, 1), 2.0, np.float32)
        for _ in range(3):
            got = sess.run(s, {x: xv, b: feed_b})
            h = xv @ wv
            np.testing.assert_allclose(got, h[:, :1] + 2.0 * h[:, 2:], rtol=1e-5)


def _kernel_failure(sess, flat):
    with pytest.raises(errors.InvalidArgumentError) as e:
        sess.run("shaped:0", {flat: np.zeros(5, np.float32)})
    return str(e.value)


def test_a_kernel_failure_in_the_compiled_program_names_its_node_as_the_loop_does(
        monkeypatch):
    messages = []
    for after in (-1, 0):
        monkeypatch.setattr(executor, "COMPILE_AFTER", after)
        g, *_, flat, shaped = _graph()
        with tf.Session(graph=g) as sess:
            for _ in range(3):  # compiled from the first run on when after == 0
                np.testing.assert_array_equal(
                    sess.run(shaped, {flat: np.arange(6, dtype=np.float32)}),
                    np.arange(6, dtype=np.float32).reshape(2, 3))
            messages.append(_kernel_failure(sess, flat))
            plan = next(iter(sess._plans.values()))
            assert (plan._program is not None) == (after == 0)
            # the plan still runs after the failure
            np.testing.assert_array_equal(
                sess.run(shaped, {flat: np.ones(6, np.float32)}), np.ones((2, 3)))
    assert messages[0] == messages[1]
    assert "[[node shaped (Reshape) with input shapes: [5], [2]]]" in messages[1]


def test_an_uninitialized_ref_read_in_the_compiled_program_names_the_variable_once(
        monkeypatch):
    messages = []
    for after in (-1, 0):
        monkeypatch.setattr(executor, "COMPILE_AFTER", after)
        g = tf.Graph()
        with g.as_default():
            v = tf.Variable(tf.zeros([2]), name="v")
            y = tf.add(v, 1.0, name="y")
        with tf.Session(graph=g) as sess:
            with pytest.raises(errors.FailedPreconditionError) as e:
                sess.run(y)
            messages.append(str(e.value))
            sess.run(v.initializer)
            for _ in range(3):
                np.testing.assert_array_equal(sess.run(y), [1.0, 1.0])
    assert messages[0] == messages[1]
    assert messages[1].count("[[node") == 1 and "v" in messages[1]


def test_a_python_exception_in_a_kernel_is_an_unknown_error_naming_the_step(monkeypatch):
    monkeypatch.setattr(executor, "COMPILE_AFTER", 0)
    g, x, w, s, total, *_ = _graph()
    with tf.Session(graph=g) as sess:
        sess.run(w.initializer)
        xv = np.ones((2, 4), np.float32)
        sess.run(total, {x: xv})
        plan, k = next((p, i) for p in sess._plans.values() if p._program is not None
                       for i, step in enumerate(p._prog) if step[-1].op.name == "total")

        def broken(*inputs):
            raise RuntimeError("kernel bug")

        plan._program.__globals__[f"r{k}"] = broken
        with pytest.raises(errors.UnknownError) as e:
            sess.run(total, {x: xv})
    assert "RuntimeError: kernel bug" in str(e.value)
    assert "[[node total (AddN) with input shapes: [2], [2], [2]]]" in str(e.value)


@pytest.mark.parametrize("why", ["too long", "refused"])
def test_a_plan_the_compiler_does_not_take_keeps_running_in_the_loop(why, monkeypatch):
    monkeypatch.setattr(executor, "COMPILE_AFTER", 0)
    if why == "too long":
        monkeypatch.setattr(executor, "COMPILE_MAX_STEPS", 2)
    else:
        def refuse(*args):
            raise RecursionError("maximum recursion depth exceeded during compilation")
        monkeypatch.setattr(executor, "_compile_straight", refuse)
    g, x, w, s, total, *_ = _graph()
    xv = np.arange(8, dtype=np.float32).reshape(2, 4)
    with tf.Session(graph=g) as sess:
        sess.run(w.initializer)
        for _ in range(4):
            got = sess.run(total, {x: xv})
            np.testing.assert_allclose(got, _reference(xv, np.arange(12, dtype=np.float32)
                                                       .reshape(4, 3) / 10)[1], rtol=1e-6)
        plan = next(p for p in sess._plans.values()
                    if any(step[-1].op.name == "total" for step in p._prog))
        assert plan._program is None and len(plan._prog) > 2


def test_a_compiled_program_holds_only_names_and_integers(monkeypatch):
    """Model files stay data: node names never reach the generated source (a ref read's
    positions are its only literal), and a source with anything else is refused."""
    monkeypatch.setattr(executor, "COMPILE_AFTER", 0)
    g = tf.Graph()
    with g.as_default():
        v = tf.Variable(tf.zeros([2]), name="v.with-odd/chars")
        y = tf.add(v, 1.0, name="y.and>more")
    with tf.Session(graph=g) as sess:
        sess.run(v.initializer)
        np.testing.assert_array_equal(sess.run(y), [1.0, 1.0])
        plan = next(p for p in sess._plans.values() if any(st.deref for st in p.steps))
        assert plan._program is not None  # compiled: its source passed the check
    assert executor._PROGRAM_SOURCE.fullmatch("def program(feeds):\n    v1 = r0(v0)[0]\n")
    assert not executor._PROGRAM_SOURCE.fullmatch("    v1 = r0('x')\n")
    assert not executor._PROGRAM_SOURCE.fullmatch("    v1 = os.system(v0)\n")
