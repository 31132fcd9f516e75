"""``tf.nn`` graph building against TensorFlow: the same nodes (names, op types, inputs, attrs,
Const values), the same static shapes and the same values in a Session, for the cases of
tests/fixtures/make_build_nn.py; TensorFlow's exception class for bad input."""

import numpy as np
import pytest

from build_nn_util import build, cases, check_case, errors, load

NN_REC, _ = load("nn")


@pytest.mark.parametrize("name", sorted(cases.NN_CASES))
def test_nn_case_matches_tensorflow(name):
    assert name in NN_REC, f"case {name} has no recording: run tests/fixtures/make_build_nn.py"
    check_case("nn", name)


def test_every_nn_case_recorded():
    assert sorted(NN_REC) == sorted(cases.NN_CASES)


NN_ERRORS = [k for k in sorted(cases.ERROR_CASES) if not k.startswith(("loss_", "total_",
                                                                        "sparse_loss"))]


@pytest.mark.parametrize("name", NN_ERRORS)
def test_nn_bad_input_raises_like_tensorflow(name):
    import mgrt.compat.v1 as tf
    from mgrt import errors as mgrt_errors

    want = errors()[name]
    fn = cases.ERROR_CASES[name]
    g = tf.Graph()
    with g.as_default():
        if want is None:
            fn(tf, np)  # TensorFlow accepts it
            return
        cls = {"ValueError": ValueError, "TypeError": TypeError,
               "InvalidArgumentError": mgrt_errors.InvalidArgumentError}[want[0]]
        with pytest.raises(cls) as ei:
            fn(tf, np)
    assert str(ei.value), "error message must not be empty"


def test_error_messages_name_the_problem():
    import mgrt.compat.v1 as tf

    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [1, 5, 5, 3])
        with pytest.raises(ValueError, match=r"Depth of input \(3\) is not a multiple of input "
                                             r"depth of filter \(4\)"):
            tf.nn.conv2d(x, tf.ones([3, 3, 4, 2]), strides=[1, 1, 1, 1], padding="SAME")
        with pytest.raises(ValueError, match="rank 4"):
            tf.nn.max_pool(tf.ones([5, 5, 3]), ksize=2, strides=2, padding="VALID")
        with pytest.raises(TypeError, match="filter"):
            tf.nn.conv2d(x, tf.ones([3, 3, 3, 2], tf.float64), strides=1, padding="SAME")
        with pytest.raises(ValueError, match="at least k columns|>= k"):
            tf.nn.top_k(tf.ones([4, 3]), 5)
        with pytest.raises(ValueError, match="padding"):
            tf.nn.conv2d(x, tf.ones([3, 3, 3, 2]), strides=1, padding=[[0, 0], [1, 1]])


def test_static_shapes_with_unknown_dims():
    import mgrt.compat.v1 as tf

    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, None, None, 3])
        y = tf.nn.conv2d(x, tf.ones([3, 3, 3, 8]), strides=2, padding="SAME")
        assert y.shape.as_list() == [None, None, None, 8]
        p = tf.nn.max_pool(tf.placeholder(tf.float32, [None, 9, 9, 4]), 3, 2, "VALID")
        assert p.shape.as_list() == [None, 4, 4, 4]
        u = tf.placeholder(tf.float32)
        assert tf.nn.relu(u).shape.rank is None
        d = tf.nn.depthwise_conv2d_native(tf.placeholder(tf.float32, [1, 8, 8, 3]),
                                          tf.ones([3, 3, 3, 4]), [1, 1, 1, 1], "VALID")
        assert d.shape.as_list() == [1, 6, 6, 12]
        y, m, v = tf.nn.fused_batch_norm(tf.placeholder(tf.float32, [None, 4, 4, 5]),
                                         tf.ones([5]), tf.zeros([5]))
        assert y.shape.as_list() == [None, 4, 4, 5] and m.shape.as_list() == [5]
        t = tf.nn.top_k(tf.placeholder(tf.float32, [None, 10]), 4)
        assert t.values.shape.as_list() == [None, 4] and t.indices.dtype == tf.int32


def test_softmax_over_axis_against_numpy():
    import mgrt.compat.v1 as tf

    a = np.random.RandomState(0).randn(2, 3, 4).astype(np.float32)
    with tf.Graph().as_default():
        out = tf.nn.softmax(tf.constant(a), axis=1)
        with tf.Session() as sess:
            got = sess.run(out)
    e = np.exp(a - a.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_dropout_scales_kept_values():
    import mgrt.compat.v1 as tf

    with tf.Graph().as_default():
        x = tf.ones([50, 40])
        d = tf.nn.dropout(x, keep_prob=0.25, seed=2)
        with tf.Session() as sess:
            v = sess.run(d)
    assert set(np.unique(v)) <= {0.0, 4.0}
    assert 0.15 < (v > 0).mean() < 0.35


def test_nn_namespace():
    import mgrt.compat.v1 as tf
    from mgrt import nn

    assert tf.nn is nn
    for n in nn.__all__:
        assert callable(getattr(tf.nn, n)), n
    g, f, _ = build(cases.nn_activations)
    assert f["relu"].op.type == "Relu"
