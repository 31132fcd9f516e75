"""Random ops and random initializers built with mgrt, checked statistically against numpy
references (the distributions TensorFlow documents), and their seeding: an op seed or a graph
seed makes values repeat across sessions and graphs; no seed gives new values."""

import math

import numpy as np
import pytest

import mgrt.compat.v1 as tf

N = 20000


def _run(build, init=False):
    g = tf.Graph()
    with g.as_default():
        t = build()
        with tf.Session() as sess:
            if init:
                sess.run(tf.global_variables_initializer())
            return sess.run(t)


def test_random_normal_moments():
    x = _run(lambda: tf.random_normal([N], mean=3.0, stddev=2.0))
    assert x.dtype == np.float32 and x.shape == (N,)
    assert abs(x.mean() - 3.0) < 4 * 2.0 / math.sqrt(N)
    assert abs(x.std() - 2.0) < 0.04
    # a normal puts ~4.55% of its mass beyond 2 standard deviations
    assert 0.035 < np.mean(np.abs(x - 3.0) > 4.0) < 0.056


def test_truncated_normal_bounds_and_spread():
    x = _run(lambda: tf.truncated_normal([N], mean=-1.0, stddev=0.5, dtype=tf.float64))
    assert x.dtype == np.float64
    assert np.all(np.abs(x + 1.0) <= 1.0 + 1e-12)
    # the standard deviation of a unit normal truncated to [-2, 2]
    a = np.linspace(-2, 2, 200001)
    pdf = np.exp(-a * a / 2)
    sd = math.sqrt(np.sum(a * a * pdf) / np.sum(pdf))
    assert abs(x.std() - 0.5 * sd) < 0.01
    assert abs(x.mean() + 1.0) < 0.01


def test_random_uniform_float_and_int_ranges():
    x = _run(lambda: tf.random_uniform([N], minval=-2.0, maxval=6.0))
    assert np.all((x >= -2.0) & (x < 6.0))
    assert abs(x.mean() - 2.0) < 0.1
    assert abs(x.var() - 64 / 12) < 0.2
    u = _run(lambda: tf.random_uniform([N]))
    assert np.all((u >= 0) & (u < 1))
    k = _run(lambda: tf.random_uniform([N], minval=-3, maxval=4, dtype=tf.int64))
    assert k.dtype == np.int64
    counts = np.bincount(k + 3, minlength=7)
    assert counts.shape == (7,) and np.all(np.abs(counts / N - 1 / 7) < 0.02)


def test_random_shuffle_is_a_permutation_of_rows():
    value = np.arange(40, dtype=np.int32).reshape(20, 2)
    x = _run(lambda: tf.random_shuffle(value))
    assert sorted(map(tuple, x.tolist())) == sorted(map(tuple, value.tolist()))
    assert not np.array_equal(x, value)  # 1 chance in 20! of being the identity


def test_multinomial_frequencies():
    p = np.array([0.2, 0.5, 0.3])
    x = _run(lambda: tf.multinomial(np.log([p]).astype(np.float32), N))
    assert x.shape == (1, N) and x.dtype == np.int64
    freq = np.bincount(x[0], minlength=3) / N
    np.testing.assert_allclose(freq, p, atol=0.02)


@pytest.mark.parametrize("shape,init,limit_or_std", [
    ([50, 70], "glorot_uniform", math.sqrt(6 / 120)),
    ([3, 3, 16, 32], "he_uniform", math.sqrt(6 / 144)),
    ([400, 50], "lecun_uniform", math.sqrt(3 / 400)),
])
def test_uniform_variance_scaling_limits(shape, init, limit_or_std):
    make = getattr(tf.initializers, init)
    x = _run(lambda: tf.get_variable("w", shape, initializer=make()), init=True)
    assert x.shape == tuple(shape)
    assert np.all(np.abs(x) <= limit_or_std + 1e-7)
    assert abs(x.var() - limit_or_std ** 2 / 3) < 0.05 * limit_or_std ** 2 / 3


@pytest.mark.parametrize("shape,kwargs,variance", [
    ([400, 50], dict(), 1 / 400),
    ([400, 50], dict(scale=2.0, mode="fan_out"), 2 / 50),
    ([3, 3, 16, 32], dict(scale=2.0), 2 / 144),
    ([300, 100], dict(mode="fan_avg", distribution="untruncated_normal"), 1 / 200),
    ([300, 100], dict(mode="fan_avg", distribution="normal"), 1 / 200),
])
def test_normal_variance_scaling_keeps_the_variance(shape, kwargs, variance):
    x = _run(lambda: tf.get_variable(
        "w", shape, initializer=tf.variance_scaling_initializer(**kwargs)), init=True)
    # TensorFlow divides the truncated normal's stddev by 0.8796..., so the variance of the
    # truncated draw is the requested one
    assert abs(x.var() - variance) < 0.06 * variance
    if kwargs.get("distribution", "truncated_normal") != "untruncated_normal":
        std = math.sqrt(variance) / 0.87962566103423978
        assert np.all(np.abs(x) <= 2 * std * (1 + 1e-6))


def test_glorot_normal_default_get_variable_and_initial_value():
    g = tf.Graph()
    with g.as_default():
        w = tf.get_variable("w", [200, 300], initializer=tf.glorot_normal_initializer())
        with tf.Session() as sess:
            sess.run(w.initializer)
            x = sess.run(w)
    assert abs(x.var() - 2 / 500) < 0.06 * 2 / 500


def _values(graph_seed, op_seed, build_twice=False):
    g = tf.Graph()
    with g.as_default():
        if graph_seed is not None:
            tf.set_random_seed(graph_seed)
        a = tf.random_uniform([8], seed=op_seed)
        b = tf.random_normal([8], seed=op_seed)
        with tf.Session() as s1:
            first = s1.run([a, b])
        with tf.Session() as s2:
            second = s2.run([a, b])
    return first, second


def test_seeded_ops_repeat_across_sessions_and_graphs():
    f1, s1 = _values(3, None)
    f2, _ = _values(3, None)
    for x, y, z in zip(f1, s1, f2):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    f3, s3 = _values(None, 7)
    f4, _ = _values(87654321, 7)  # the default graph seed used when only the op seed is set
    for x, y, z in zip(f3, s3, f4):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    f5, _ = _values(4, None)
    assert not np.array_equal(f1[0], f5[0])


def test_unseeded_ops_differ_across_sessions():
    f, s = _values(None, None)
    assert not np.array_equal(f[0], s[0])
    assert not np.array_equal(f[1], s[1])


def test_seed_counter_is_per_graph():
    g1, g2 = tf.Graph(), tf.Graph()
    with g1.as_default():
        tf.set_random_seed(1)
        assert tf.get_seed(None) == (1, 0)
        assert tf.get_seed(None) == (1, 1)
    with g2.as_default():
        tf.set_random_seed(1)
        assert tf.get_seed(None) == (1, 0)
        tf.random_normal([2])
    op = g2.get_operation_by_name("random_normal/RandomStandardNormal")
    assert (op.get_attr("seed"), op.get_attr("seed2")) == (1, 1)


def test_random_ops_static_shapes_from_shape_tensors():
    g = tf.Graph()
    with g.as_default():
        p = tf.placeholder(tf.int32, [3])
        assert tf.random_normal(p).shape.as_list() == [None, None, None]
        assert tf.random_uniform([2, 5]).shape.as_list() == [2, 5]
        assert tf.random_shuffle(tf.placeholder(tf.float32, [None, 4])).shape.as_list() == \
            [None, 4]
        assert tf.multinomial(tf.placeholder(tf.float32, [6, 3]), 9).shape.as_list() == [6, 9]
