"""The building API's core against TensorFlow: node names, types, inputs, devices, colocation
and static shapes of what the snippets in fixtures/build_core_cases.py build (recorded by
fixtures/make_build_core.py), and their values in an mgrt Session."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.runtime.ops import apply_op

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import build_core_cases  # noqa: E402

RECORDED = json.loads((FIXTURES / "build_core.json").read_text())


@pytest.mark.parametrize("case", sorted(build_core_cases.CASES))
def test_case_builds_and_computes_as_tensorflow(case):
    rec = RECORDED[case]
    g = tf.Graph()
    with g.as_default():
        if "error" in rec:
            with pytest.raises(getattr(__builtins__, rec["error"], None) or Exception):
                build_core_cases.CASES[case](tf)
            return
        fetches = build_core_cases.CASES[case](tf)
        got = build_core_cases.describe(g)
        assert [n["name"] for n in got] == [n["name"] for n in rec["nodes"]]
        for mine, theirs in zip(got, rec["nodes"]):
            assert mine == theirs, mine["name"]
        if not fetches:
            return
        init = tf.global_variables_initializer()
        with tf.Session() as sess:
            sess.run(init)
            vals = sess.run(fetches)
    for v, want in zip(vals, rec["values"]):
        v = np.asarray(v)
        assert v.dtype.name == want["dtype"]
        np.testing.assert_allclose(v, np.asarray(want["value"], dtype=v.dtype), rtol=1e-6)


def test_apply_op_infers_type_and_length_attrs():
    g = tf.Graph()
    with g.as_default():
        a = tf.constant([1.0, 2.0], dtype=tf.float64)
        op = apply_op("AddN", [[a, a, [3.0, 4.0]]])
        assert op.get_attr("N") == 3 and op.get_attr("T") == tf.float64
        assert op.inputs[2].dtype == tf.float64
        c = apply_op("ConcatV2", [[a, a], 0]).outputs[0]
        assert c.op.get_attr("Tidx") == tf.int32
        with tf.Session() as s:
            np.testing.assert_array_equal(s.run(op.outputs[0]), [5.0, 8.0])


@pytest.mark.parametrize("build, message", [
    (lambda a, b: apply_op("AddV2", [a, b]), "does not match"),
    (lambda a, b: apply_op("MatMul", [a, a]), "Dimensions must be equal"),
    (lambda a, b: apply_op("AddN", [a]), "Expected list"),
    (lambda a, b: apply_op("Relu", [tf.constant("s")]), "not in list of allowed values"),
    (lambda a, b: apply_op("Assign", [a, a]), "mutable tensor"),
    (lambda a, b: apply_op("Relu", [a], {"T": tf.float32, "bogus": 1}), "unexpected attr"),
    (lambda a, b: apply_op("Transpose", [a]), "takes 2 inputs"),
    (lambda a, b: apply_op("NoSuchOp", []), "not registered"),
])
def test_apply_op_errors_name_the_op_and_argument(build, message):
    g = tf.Graph()
    with g.as_default():
        a = tf.constant(np.ones((2, 3), np.float32))
        b = tf.constant(np.ones((2, 3), np.int32))
        with pytest.raises((TypeError, ValueError), match=message):
            build(a, b)


def test_variable_initialized_value_and_errors():
    g = tf.Graph()
    with g.as_default():
        with pytest.raises(ValueError, match="initial_value must be specified"):
            tf.Variable(None)
        with pytest.raises(ValueError, match="must have a shape"):
            tf.Variable(tf.placeholder(tf.float32, [None]))
        v = tf.Variable(tf.placeholder_with_default([1.0, 2.0], [None]), validate_shape=False)
        w = tf.Variable([3.0], collections=["mine"], trainable=False)
        assert tf.get_collection("mine") == [w] and w not in tf.trainable_variables()
        assert v in tf.trainable_variables()
        with tf.Session() as s:
            s.run(v.initializer)
            np.testing.assert_array_equal(s.run(v), [1.0, 2.0])
            with pytest.raises(tf.errors.FailedPreconditionError):
                s.run(w.value())


def test_built_graph_exports_and_imports_back(tmp_path):
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [None, 2], name="x")
        w = tf.Variable([[1.0], [2.0]], name="w")
        y = tf.matmul(x, w, name="y") + 1.0
        tf.add_to_collection("out", y)
        path = str(tmp_path / "m.meta")
        tf.train.export_meta_graph(filename=path)
    g2 = tf.Graph()
    with g2.as_default():
        tf.train.import_meta_graph(path)
        y2 = tf.get_collection("out")[0]
        assert y2.shape.as_list() == [None, 1]
        with tf.Session() as s:
            s.run(tf.global_variables_initializer())
            np.testing.assert_allclose(s.run(y2, {"x:0": [[1.0, 1.0]]}), [[4.0]])
