"""TF1 control flow built with mgrt (``tf.cond``, ``tf.case``, ``tf.while_loop``, ``tf.group``,
``tf.tuple``, ``tf.Assert``...) against what real TensorFlow builds and computes.

The cases are the functions of tests/fixtures/make_build_control_flow.py, run here with
``mgrt.compat.v1``; that script ran them with TensorFlow (control flow v2 off) and recorded every
op's name and type, the ``cond_context`` / ``while_context`` protos and the fetched values (or the
error class) per feed (tests/fixtures/build_control_flow/build_control_flow.json).
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt import errors
from mgrt.protos import control_flow_pb2
from mgrt.runtime import control_flow_context as cfc

HERE = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("make_build_control_flow",
                                               HERE / "make_build_control_flow.py")
cases_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases_mod)
RECORD = json.loads((HERE / "build_control_flow" / "build_control_flow.json").read_text())
CASES = RECORD["cases"]
BUILD = {f.__name__: f for f in cases_mod.BUILD_CASES}


def dec(v):
    if v["dtype"] == "object":
        return np.asarray([s.encode() for s in v["data"]], dtype=object).reshape(v["shape"])
    return np.asarray(v["data"], dtype=np.dtype(v["dtype"])).reshape(v["shape"])


def assert_same(got, want, what):
    got = np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def build(name, fn=None):
    g = tf.Graph()
    with g.as_default():
        fetches, feeds = (fn or BUILD.get(name) or cases_mod.__dict__[name])(tf)
        init = tf.global_variables_initializer()
    return g, fetches, feeds, init


def run_and_compare(g, fetches, init, rec, scope=""):
    for run in rec["runs"]:
        with tf.Session(graph=g) as sess:
            sess.run(init)
            feed = {g.get_tensor_by_name(scope + k): v for k, v in run["feed"].items()}
            if "error" in run:
                cls = getattr(errors, run["error"])
                with pytest.raises(cls):
                    sess.run(fetches, feed)
                continue
            got = sess.run(fetches, feed)
            for k, want in run["out"].items():
                if want is None:
                    assert got[k] is None, k
                else:
                    assert_same(got[k], dec(want), f"{k} with feed {run['feed']}")


def context_texts(g):
    return {key: [str(c.to_proto()) for c in g.get_collection(key)]
            for key in ("cond_context", "while_context")}


@pytest.mark.parametrize("name", sorted(BUILD))
def test_ops_match_tensorflow(name):
    g, _, _, _ = build(name)
    got = [[o.name, o.type] for o in g.get_operations()]
    want = CASES[name]["ops"]
    assert got == want


@pytest.mark.parametrize("name", sorted(BUILD))
def test_static_shapes_match_tensorflow(name):
    g, _, _, _ = build(name)
    got = [[None if t.shape.rank is None else t.shape.as_list() for t in o.outputs]
           for o in g.get_operations()]
    assert got == CASES[name]["shapes"]


@pytest.mark.parametrize("name", sorted(BUILD))
def test_contexts_match_tensorflow(name):
    g, _, _, _ = build(name)
    assert context_texts(g) == CASES[name]["contexts"]


@pytest.mark.parametrize("name", sorted(BUILD))
def test_values_match_tensorflow(name):
    g, fetches, _, init = build(name)
    run_and_compare(g, fetches, init, CASES[name])


@pytest.mark.parametrize("name", ["cond_basic", "cond_nested", "cond_structures", "case_ops",
                                  "while_basic", "while_nested", "while_max_iter",
                                  "while_in_cond_and_cond_in_while"])
@pytest.mark.parametrize("scope", ["", "imported"])
def test_export_import_round_trip(name, scope):
    """A built graph exported as a MetaGraphDef and imported into a fresh graph (with and
    without an import scope) has the same contexts and computes TF's values."""
    g, fetches, _, _ = build(name)
    mgd = tf.train.export_meta_graph(graph=g)
    assert set(mgd.collection_def) >= {k for k, v in CASES[name]["contexts"].items() if v}
    g2 = tf.Graph()
    with g2.as_default():
        tf.train.import_meta_graph(mgd, import_scope=scope or None)
        init = tf.no_op()
    prefix = scope + "/" if scope else ""
    fetches2 = {k: g2.get_tensor_by_name(prefix + v.name) for k, v in fetches.items()}
    run_and_compare(g2, fetches2, init, CASES[name], scope=prefix)
    # (TensorFlow strips the export scope from the outer context only; strip it everywhere
    # to compare with the contexts of the graph as built)
    strip = lambda n: n[len(prefix):] if prefix and n.startswith(prefix) else n  # noqa: E731
    texts = {"cond_context": [str(cfc._map_cond(c.to_proto(), strip))
                              for c in g2.get_collection("cond_context")],
             "while_context": [str(cfc._map_while(c.to_proto(), strip))
                               for c in g2.get_collection("while_context")]}
    assert texts == CASES[name]["contexts"]
    for ctxt in g2.get_collection("while_context"):
        for e in ctxt.loop_enters:
            assert e.op.get_attr("frame_name") == ctxt.name.encode()
    # every op named in a context's values knows its context again
    for ctxt in g2.get_collection("cond_context"):
        assert ctxt.pivot.op._control_flow_context is ctxt


def test_tensorflow_ran_the_graphs_mgrt_built():
    """The fixture script exported every case built by mgrt and ran it in TensorFlow (the
    graphs are the ones compared op by op above): TensorFlow reproduced its values."""
    runs = RECORD["tf_runs_mgrt_exports"]
    assert set(runs) == set(CASES)
    assert runs == {k: "ok" for k in CASES}


def test_cond_contexts_and_static_shapes():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [2, 3], name="x")
        p = tf.placeholder(tf.bool, [], name="p")
        y = tf.cond(p, lambda: x * 2.0, lambda: x)
        assert y.shape.as_list() == [2, 3]
        ctxt_t, ctxt_f = g.get_collection("cond_context")
        assert isinstance(ctxt_t, cfc.CondContext) and ctxt_t.branch == 1
        assert ctxt_f.branch == 0 and ctxt_t.pred is ctxt_f.pred
        assert g.get_operation_by_name("cond/mul").inputs[0].op.type == "Switch"
        assert g.get_operation_by_name("cond/mul")._control_flow_context is ctxt_t
        assert g._get_control_flow_context() is None
        i, a = tf.while_loop(lambda i, a: tf.less(i, 3), lambda i, a: (i + 1, a * 2.0),
                             [tf.constant(0), x])
        assert a.shape.as_list() == [2, 3] and i.shape.as_list() == []
        w = g.get_collection("while_context")[0]
        assert isinstance(w, cfc.WhileContext) and w.name == "while/while_context"
        assert [t.op.type for t in w.loop_exits] == ["Exit", "Exit"]
        assert isinstance(control_flow_pb2.WhileContextDef.FromString(
            w.to_proto().SerializeToString()), control_flow_pb2.WhileContextDef)


def test_group_devices_build_a_two_level_tree():
    g = tf.Graph()
    with g.as_default():
        with tf.device("/cpu:0"):
            a = tf.constant(1.0, name="a")
        with tf.device("/device:CPU:1"):
            b = tf.constant(2.0, name="b")
        grp = tf.group(a, b, name="grp")
    assert grp.type == "NoOp" and grp.name == "grp"
    inner = grp.control_inputs
    assert sorted(o.name for o in inner) == ["grp/NoOp", "grp/NoOp_1"]
    assert sorted(o.device for o in inner) == ["/device:CPU:0", "/device:CPU:1"]
    assert {c.name for o in inner for c in o.control_inputs} == {"a", "b"}


def test_with_dependencies_colocates_and_orders():
    g = tf.Graph()
    with g.as_default():
        v = tf.Variable(1.0, name="v")
        inc = tf.assign_add(v, 1.0)
        x = tf.constant(5.0, name="x")
        y = tf.with_dependencies([inc], x)
        init = tf.global_variables_initializer()
    assert y.op.name == "control_dependency" and y.op.type == "Identity"
    assert [c.name for c in y.op.control_inputs] == [inc.op.name]
    assert y.op.colocation_groups() == [b"loc:@x"]
    with tf.Session(graph=g) as sess:
        sess.run(init)
        assert sess.run(y) == 5.0
        assert sess.run(v) == 2.0


# --- bad input --------------------------------------------------------------------------------
def test_cond_bad_input():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [], name="x")
        p = tf.placeholder(tf.bool, [], name="p")
        with pytest.raises(TypeError, match="Python bool"):
            tf.cond(True, lambda: x, lambda: x)
        with pytest.raises(TypeError, match="callable"):
            tf.cond(p, x, lambda: x)
        with pytest.raises(TypeError, match="true_fn"):
            tf.cond(p, false_fn=lambda: x)
        with pytest.raises(TypeError, match="bool"):
            tf.cond(x, lambda: x, lambda: x)
        with pytest.raises(ValueError, match="same type"):
            tf.cond(p, lambda: x, lambda: tf.constant(1))
        with pytest.raises(ValueError, match="Incompatible return values"):
            tf.cond(p, lambda: (x, x), lambda: x)
        with pytest.raises(TypeError, match="Incompatible return types"):
            tf.cond(p, lambda: (x, x), lambda: [x, x])
        with pytest.raises(ValueError, match="must have a return value"):
            tf.cond(p, lambda: None, lambda: x)
        with pytest.raises((TypeError, ValueError)):
            tf.cond(tf.placeholder(tf.bool, [2]), lambda: x, lambda: x)
        # a failed build leaves no context set
        assert g._get_control_flow_context() is None


def test_while_loop_bad_input():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [2], name="x")
        i = tf.constant(0)
        with pytest.raises(TypeError, match="'cond' must be callable"):
            tf.while_loop(None, lambda a: a, [x])
        with pytest.raises(TypeError, match="'body' must be callable"):
            tf.while_loop(lambda a: True, 3, [x])
        with pytest.raises(TypeError, match="parallel_iterations"):
            tf.while_loop(lambda a: tf.less(a[0], 1.0), lambda a: a, [x], parallel_iterations=0)
        with pytest.raises(ValueError, match="loop_vars"):
            tf.while_loop(lambda: True, lambda: (), [])
        with pytest.raises(ValueError, match="maximum_iterations"):
            tf.while_loop(lambda a: tf.less(a[0], 1.0), lambda a: a, [x],
                          maximum_iterations=tf.constant([1, 2]))
        with pytest.raises(ValueError, match="after one iteration"):
            tf.while_loop(lambda i, a: tf.less(i, 3), lambda i, a: (i + 1, a[0] * 1.0),
                          [i, x])
        with pytest.raises(ValueError, match="shape invariant"):
            tf.while_loop(lambda i, a: tf.less(i, 3), lambda i, a: (i + 1, a), [i, x],
                          shape_invariants=[tf.TensorShape([]), tf.TensorShape([3])])
        with pytest.raises((TypeError, ValueError)):
            tf.while_loop(lambda i, a: tf.less(i, 3), lambda i, a: (i + 1,), [i, x])
        with pytest.raises(TypeError, match="bool"):
            tf.while_loop(lambda a: a, lambda a: a, [x])
        assert g._get_control_flow_context() is None


def test_case_group_tuple_bad_input():
    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.int32, [], name="x")
        f = lambda: x  # noqa: E731
        with pytest.raises(TypeError, match="pred_fn_pairs"):
            tf.case(x, default=f)
        with pytest.raises(TypeError, match="2-tuple"):
            tf.case([(tf.less(x, 1), f, f)])
        with pytest.raises(TypeError, match="bool"):
            tf.case([(x, f)])
        with pytest.raises(TypeError, match="must be a Tensor"):
            tf.case([(True, f)])
        with pytest.raises(TypeError, match="callable"):
            tf.case([(tf.less(x, 1), 3)])
        with pytest.raises(ValueError, match="Unknown keyword"):
            tf.group(x, nme="oops")
        with pytest.raises(TypeError):
            tf.group(x, 3)
        with pytest.raises(ValueError, match="at least one"):
            tf.tuple([None])
        with pytest.raises(TypeError, match="data"):
            tf.Assert(tf.less(x, 1), x)
