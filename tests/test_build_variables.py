"""Variables, initializers, variable scopes and random ops built with mgrt against what
TensorFlow built for the same code (tests/fixtures/make_build_variables.py): every op's name,
type, inputs, attrs and static shapes, the collections, the VariableDefs, the values after
``global_variables_initializer`` (random initializers too, with seeds: mgrt's Philox kernels
draw TensorFlow's numbers), TensorFlow's error types and messages, and checkpoints both ways."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import mgrt.compat.v1 as tf
from mgrt.runtime import graph as graph_lib
from mgrt.runtime.tensor_util import MakeNdarray

FIX = Path(__file__).parent / "fixtures" / "build_variables"
DOC = json.loads((FIX / "cases.json").read_text())
CASES = DOC["cases"]
ERRORS = DOC["errors"]


def _describe_ops(g):
    ops = []
    for op in g.get_operations():
        nd = op.node_def
        attrs = {}
        for k in sorted(nd.attr):
            av = nd.attr[k]
            if k == "value" and op.type == "Const":
                arr = MakeNdarray(av.tensor)
                attrs[k] = {"dtype": str(arr.dtype), "shape": list(arr.shape),
                            "values": arr.reshape(-1).tolist()[:64]}
            else:
                attrs[k] = str(av).strip()
        shapes = [t.shape.as_list() if t.shape.ndims is not None else None for t in op.outputs]
        ops.append({"name": op.name, "type": op.type, "inputs": list(nd.input),
                    "device": op.device, "attrs": attrs, "shapes": shapes})
    return ops


def _describe_collections(g):
    out = {}
    for key in ("variables", "trainable_variables", "local_variables", "global_step",
                "regularization_losses", "model_variables", "custom"):
        out[key] = [getattr(x, "name", str(x)) for x in g.get_collection(key)]
    return out


def _variable_defs(g):
    return {v.name: text_format.MessageToString(v.to_proto())
            for v in g.get_collection("variables") + g.get_collection("local_variables")}


class _TrainWithGlobalStep:
    """``tf.train`` with the global-step functions of runtime/api/variable_scope.py where
    mgrt.train does not re-export them (yet)."""

    def __getattr__(self, name):
        from mgrt.runtime.api import variable_scope

        if hasattr(tf.train, name):
            return getattr(tf.train, name)
        return getattr(variable_scope, name)


class _TF:
    train = _TrainWithGlobalStep()

    def __getattr__(self, name):
        return getattr(tf, name)


TF = _TF()


def _build(code):
    g = tf.Graph()
    ns = {"tf": TF, "np": np}
    with g.as_default():
        exec(code, ns)  # noqa: S102  (the recorded snippet)
    return g, ns


def _ops_diff(expected, got):
    """The first difference, said plainly."""
    en = [o["name"] for o in expected]
    gn = [o["name"] for o in got]
    if en != gn:
        missing = [n for n in en if n not in gn]
        extra = [n for n in gn if n not in en]
        return f"op names differ: missing {missing[:8]}, extra {extra[:8]}; order TF {en}"
    for e, o in zip(expected, got):
        if e != o:
            for k in e:
                if e[k] != o.get(k):
                    return f"op {e['name']!r} differs in {k}: TF {e[k]!r}, mgrt {o.get(k)!r}"
    return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_graph_matches_tensorflow(name):
    rec = CASES[name]
    g, ns = _build(rec["code"])
    diff = _ops_diff(rec["ops"], _describe_ops(g))
    assert diff is None, diff
    assert _describe_collections(g) == rec["collections"]
    assert _variable_defs(g) == rec["variable_defs"]
    info = json.loads(json.dumps(ns.get("info", {})))
    assert info == rec["info"]


@pytest.mark.parametrize("name", sorted(n for n in CASES if CASES[n].get("values")))
def test_values_match_tensorflow(name):
    rec = CASES[name]
    g, ns = _build(rec["code"])
    with g.as_default():
        init = [tf.global_variables_initializer(), tf.local_variables_initializer()]
        with tf.Session() as sess:
            sess.run(init)
            vals = sess.run(ns["fetch"])
    assert sorted(vals) == sorted(rec["values"])
    for k, exp in rec["values"].items():
        got = np.asarray(vals[k])
        want = np.array(exp["values"], dtype=exp["dtype"]).reshape(exp["shape"])
        assert got.dtype == want.dtype, k
        assert got.shape == want.shape, k
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=rec["rtol"], atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(got, want, err_msg=k)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_match_tensorflow(name):
    spec = ERRORS[name]
    exc = {"ValueError": ValueError, "TypeError": TypeError}[spec["type"]]
    g = tf.Graph()
    with g.as_default(), pytest.raises(exc) as ei:
        exec(spec["code"], {"tf": TF, "np": np})  # noqa: S102
    assert re.search(spec["pattern"], str(ei.value)), str(ei.value)


# --- checkpoints --------------------------------------------------------------------------------
CK = DOC["checkpoint"]


def test_restores_tensorflow_checkpoint_of_built_graph():
    g, ns = _build(CK["code"])
    with g.as_default():
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, str(FIX / "tf_ckpt" / "model.ckpt"))
            vals = sess.run(ns["fetch"])
    for k, exp in CK["values"].items():
        want = np.array(exp["values"], dtype=exp["dtype"]).reshape(exp["shape"])
        np.testing.assert_array_equal(np.asarray(vals[k]), want, err_msg=k)


def test_saved_checkpoint_has_tensorflows_names(tmp_path):
    g, ns = _build(CK["code"])
    with g.as_default():
        saver = tf.train.Saver()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(ns["bump"])
            vals = sess.run(ns["fetch"])
            prefix = saver.save(sess, str(tmp_path / "m.ckpt"))
    names = sorted(tf.train.NewCheckpointReader(prefix).get_variable_to_shape_map())
    assert names == CK["checkpoint_names"]
    # the values TF drew for the same seeds, saved by mgrt
    for k in ("w", "b", "r", "plain", "gs"):
        exp = CK["values"][k]
        want = np.array(exp["values"], dtype=exp["dtype"]).reshape(exp["shape"])
        np.testing.assert_allclose(np.asarray(vals[k]), want, rtol=2e-6, err_msg=k)


def test_tensorflow_restored_mgrt_checkpoint_when_recorded():
    rec = CK.get("mgrt_checkpoint_in_tf")
    assert rec is not None, "make_build_variables.py did not run the mgrt half"
    assert rec["ok"], rec
    assert rec["names_equal_tf"]
