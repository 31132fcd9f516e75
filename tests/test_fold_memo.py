"""Plan-time constant folding and shape memos (executor._fold_constants, _memo_shapes): the
values, state changes and errors of the plain plan, with fewer steps."""

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.runtime import errors, executor


def _plan(sess, n_fetches=None):
    plans = list(sess._plans.values())
    if n_fetches is not None:
        plans = [p for p in plans if len(p.fetch_slots) == n_fetches]
    return plans[-1]


def _types(plan):
    return [st.op.type for st in plan.steps]


@pytest.fixture(params=[True, False], ids=["fold", "nofold"])
def fold(request, monkeypatch):
    monkeypatch.setattr(executor, "FOLD", request.param)
    return request.param


def test_constant_arithmetic_is_folded_and_gives_the_same_values(fold):
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        a = tf.constant([1.0, 2.0, 3.0])
        b = tf.fill([3], 0.5)  # Fill of two Consts
        scale = tf.reshape(a * b + 1.0, [1, 3], name="scale")
        y = tf.multiply(x, scale, name="y")
    xv = np.arange(6, dtype=np.float32).reshape(2, 3)
    with tf.Session(graph=g) as sess:
        for _ in range(3):
            np.testing.assert_allclose(sess.run(y, {x: xv}),
                                       xv * (np.array([1, 2, 3]) * 0.5 + 1.0))
        types = _types(_plan(sess))
    if fold:
        assert types == ["Mul"]
    else:
        assert {"Const", "Fill", "Mul", "AddV2", "Reshape"} <= set(types)


def test_a_fetched_value_is_not_folded_and_is_a_new_writable_array_each_run(fold):
    g = tf.Graph()
    with g.as_default():
        s = tf.add(tf.constant([1, 2]), tf.constant([10, 20]), name="s")
    with tf.Session(graph=g) as sess:
        first = sess.run(s)
        first[0] = 99  # the caller owns it
        again = sess.run(s)
    np.testing.assert_array_equal(again, [11, 22])
    assert again is not first


def test_a_large_constant_stays_a_step(monkeypatch):
    monkeypatch.setattr(executor, "FOLD", True)
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [600, 600], name="x")
        big = tf.fill([600, 600], 2.0)  # 1.4 MB > FOLD_MAX_BYTES
        small = tf.fill([3], 2.0)
        y = x * big + tf.reduce_sum(small)
    with tf.Session(graph=g) as sess:
        out = sess.run(y, {x: np.ones((600, 600), np.float32)})
        types = _types(_plan(sess))
    np.testing.assert_array_equal(out, np.full((600, 600), 8.0, np.float32))
    assert types.count("Fill") == 1 and "Sum" not in types


def test_a_constant_op_that_fails_fails_when_the_plan_runs_naming_its_node(fold):
    g = tf.Graph()
    with g.as_default():
        bad = tf.gather(tf.constant([1.0, 2.0, 3.0]), tf.constant([0, 5]), name="bad")
        x = tf.placeholder(tf.float32, [], name="x")
        y = tf.add(x, tf.reduce_sum(bad), name="y")
    with tf.Session(graph=g) as sess:
        with pytest.raises(errors.InvalidArgumentError) as e:
            sess.run(y, {x: 1.0})
    assert "[[node bad (GatherV2) with input shapes: [3], [2], []]]" in str(e.value)


@pytest.mark.parametrize("n", [3, 50000])  # small variables and in-place updates
def test_a_folded_value_assigned_to_a_variable_is_updated_as_a_copy(fold, n):
    g = tf.Graph()
    with g.as_default():
        v = tf.Variable(tf.zeros([n]), name="v")
        init = tf.assign(v, tf.fill([n], 1.0) * 2.0, name="init")
        bump = tf.assign_add(v, tf.ones([n]), name="bump")
        step = tf.train.GradientDescentOptimizer(0.5).apply_gradients(
            [(tf.fill([n], 2.0), v)])
        again = tf.fill([n], 1.0) * 2.0
    with tf.Session(graph=g) as sess:
        for _ in range(3):
            sess.run(init)
            sess.run(bump)
            sess.run(step)
            np.testing.assert_array_equal(sess.run(v), np.full(n, 2.0))
        np.testing.assert_array_equal(sess.run(again), np.full(n, 2.0))


def _mean_grad_graph():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        w = tf.constant([[1.0], [2.0], [3.0]])
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w)), name="loss")
        gx, = tf.gradients(loss, [x])
    return g, x, loss, gx


def test_a_means_gradient_is_memoized_by_shape_and_follows_the_batch_size(fold):
    g, x, loss, gx = _mean_grad_graph()
    rng = np.random.RandomState(1)
    w = np.array([[1.0], [2.0], [3.0]])
    with tf.Session(graph=g) as sess:
        for n in (4, 4, 7, 7, 4, 1, 4):
            xv = rng.rand(n, 3).astype(np.float32)
            lv, gv = sess.run([loss, gx], {x: xv})
            h = xv.astype(np.float64) @ w
            np.testing.assert_allclose(lv, np.mean(h ** 2), rtol=1e-5)
            np.testing.assert_allclose(gv, (2 * h / n) @ w.T, rtol=1e-5)
        types = _types(_plan(sess, 2))
    assert ("_ShapeMemo" in types) == fold
    assert ("Shape" in types) != fold


def test_a_memo_member_that_fails_is_named_and_the_plan_runs_on(fold):
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, None, name="x")  # any rank
        r = tf.reshape(tf.shape(x), [1], name="rank_one")  # fails unless x is a vector
        y = tf.cast(r, tf.float32) * 2.0
    with tf.Session(graph=g) as sess:
        np.testing.assert_array_equal(sess.run(y, {x: np.zeros(5)}), [10.0])
        with pytest.raises(errors.InvalidArgumentError) as e:
            sess.run(y, {x: np.zeros((2, 3))})
        np.testing.assert_array_equal(sess.run(y, {x: np.zeros(3)}), [6.0])
        np.testing.assert_array_equal(sess.run(y, {x: np.zeros(3)}), [6.0])
    assert "[[node rank_one (Reshape) with input shapes: [2], [1]]]" in str(e.value)


def test_a_shape_group_with_a_reader_before_its_inputs_stays_in_place(fold):
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [None, None], name="x")
        early = tf.zeros(tf.shape(x), name="early")  # reads shape(x) first
        b = tf.concat([x, early + 1.0], axis=0, name="b")  # computed after the reader
        both = tf.add(tf.shape(x), tf.shape(b), name="both")  # one group with shape(x)
        out = tf.reduce_sum(tf.cast(both, tf.float32)) + tf.reduce_sum(early)
    with tf.Session(graph=g) as sess:
        for shape in ((2, 3), (2, 3), (4, 1)):
            got = sess.run(out, {x: np.ones(shape, np.float32)})
            assert got == shape[0] + shape[1] + 2 * shape[0] + shape[1]


def test_shape_of_a_fed_value_fetched_is_writable_and_current(fold):
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, None, name="x")
        s = tf.shape(x)
        n = tf.size(x) * 2
    with tf.Session(graph=g) as sess:
        for shape in ((2,), (2,), (3, 4)):
            sv, nv = sess.run([s, n], {x: np.zeros(shape)})
            np.testing.assert_array_equal(sv, shape)
            assert nv == 2 * int(np.prod(shape))
            sv[0] = 7  # the caller's own array


def test_fetched_values_are_new_arrays_where_tensorflow_gives_new_arrays(fold):
    """As TensorFlow 2.21 measured: a Const's value, a variable's value (and its read), an
    Identity of a feed are new, writable arrays the caller owns; a fed tensor fetched itself
    is the feed."""
    g = tf.Graph()
    with g.as_default():
        c = tf.constant([1.0, 2.0])
        r = tf.reshape(c, [2, 1])
        v = tf.Variable([1.0, 2.0])
        rv = tf.get_variable("rv", initializer=tf.constant([3.0, 4.0]), use_resource=True)
        x = tf.placeholder(tf.float32, [2])
        ix = tf.identity(x)
        both = tf.identity(x + 0.0)
    xv = np.ones(2, np.float32)
    with tf.Session(graph=g) as sess:
        sess.run([v.initializer, rv.initializer])
        for _ in range(2):  # the loop's run, then the compiled plan's
            got = sess.run([c, r, v, v.read_value(), rv.read_value(), x, ix, both], {x: xv})
            for a in got:
                assert a.flags.writeable
                a[...] = 9.0 if a is not got[5] else a
            assert got[5] is xv or np.shares_memory(got[5], xv)
            assert not np.shares_memory(got[6], xv)
            np.testing.assert_array_equal(sess.run(c), [1.0, 2.0])
            np.testing.assert_array_equal(sess.run(v), [1.0, 2.0])
            np.testing.assert_array_equal(sess.run(rv), [3.0, 4.0])
            np.testing.assert_array_equal(xv, [1.0, 1.0])


def test_a_large_shape_derived_value_is_made_anew_each_run(monkeypatch):
    monkeypatch.setattr(executor, "FOLD", True)
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [None, 600])
        ones = tf.ones(tf.shape(x))  # Fill(Shape(x), 1): shape-derived, 1.4 MB at 600 rows
        y = tf.reduce_sum(x * ones, axis=1)
    with tf.Session(graph=g) as sess:
        for rows, kept in ((600, False), (600, False), (2, True), (2, True), (600, False)):
            xv = np.full((rows, 600), 0.5, np.float32)
            np.testing.assert_array_equal(sess.run(y, {x: xv}), np.full(rows, 300.0))
            plan = next(iter(sess._plans.values()))
            memo = next(st for st in plan.steps if st.op.type == "_ShapeMemo")
            assert (memo.run.kept[0] is not None) == kept


def test_threads_running_one_plan_with_different_shapes_get_their_own_values():
    import threading
    g, x, loss, gx = _mean_grad_graph()
    w = np.array([[1.0], [2.0], [3.0]])
    errors_seen = []
    with tf.Session(graph=g) as sess:
        sess.run(gx, {x: np.ones((2, 3), np.float32)})

        def work(n):
            rng = np.random.RandomState(n)
            try:
                for _ in range(200):
                    xv = rng.rand(n, 3).astype(np.float32)
                    gv = sess.run(gx, {x: xv})
                    h = xv.astype(np.float64) @ w
                    np.testing.assert_allclose(gv, (2 * h / n) @ w.T, rtol=1e-5)
            except Exception as e:  # noqa: BLE001 - reported below
                errors_seen.append(e)
        threads = [threading.Thread(target=work, args=(n,)) for n in (2, 3, 5, 8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors_seen, errors_seen[:1]


@pytest.mark.parametrize("resource", [False, True])
def test_variables_are_no_steps_and_their_updates_run_once_a_run(fold, resource):
    """A variable's op (VariableV2, VarHandleOp) gives the same reference every run: folded,
    it is no step. An update whose every input is then a constant (an AssignAdd of a ref
    variable and a Const: TF does not mark AssignAdd stateful) is not folded: it changes
    the variable once a run, from the plan's first run on."""
    g = tf.Graph()
    with g.as_default():
        v = tf.Variable(1.0, name="v", use_resource=resource)
        bump = tf.assign_add(v, 1.0, name="bump")
        with tf.control_dependencies([bump]):
            seen = tf.identity(v.read_value() if resource else bump, name="seen") * 1.0
        init = tf.global_variables_initializer()
    with tf.Session(graph=g) as sess:
        sess.run(init)
        got = [float(sess.run(seen)) for _ in range(4)]
        plan = _plan(sess)
        assert float(sess.run(v)) == 5.0
    assert got == [2.0, 3.0, 4.0, 5.0]
    handle_ops = {"VariableV2", "VarHandleOp"} & set(_types(plan))
    assert bool(handle_ops) != fold
    assert ("AssignAdd" in _types(plan) or "AssignAddVariableOp" in _types(plan))


def test_a_fetched_variable_op_stays_a_step_and_gives_its_value(fold):
    g = tf.Graph()
    with g.as_default():
        v = tf.Variable([1.0, 2.0], name="v")
        init = tf.global_variables_initializer()
    with tf.Session(graph=g) as sess:
        sess.run(init)
        got = sess.run(v._variable if hasattr(v, "_variable") else v)
        got[0] = 9.0  # a copy: the variable keeps its value
        np.testing.assert_array_equal(sess.run(v), [1.0, 2.0])
        assert "VariableV2" in _types(_plan(sess))
