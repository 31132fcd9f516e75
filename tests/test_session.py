"""Session.run: fetch structures, feeds and their errors, ref and resource variables, plans,
the default session. Graphs here are built from state ops only (VariableV2, Assign, ...,
VarHandleOp, ...) with placeholders fed, so nothing depends on the math kernels; expected values
are TensorFlow's rules, written out."""

import collections

import numpy as np
import pytest

from mgrt.protos import attr_value_pb2
from mgrt.runtime import dtypes, errors, executor
from mgrt.runtime import graph as graph_lib
from mgrt.runtime import session as session_lib


def _attr(**kw):
    return attr_value_pb2.AttrValue(**kw)


def _shape_attr(dims):
    av = attr_value_pb2.AttrValue()
    if dims is None:
        av.shape.unknown_rank = True
    else:
        av.shape.SetInParent()
        for d in dims:
            av.shape.dim.add(size=d)
    return av


def _ref_graph():
    g = graph_lib.Graph()
    p = g.create_op("Placeholder", name="p", attrs={"dtype": _attr(type=1), "shape": _shape_attr([2])})
    v = g.create_op("VariableV2", name="v", attrs={"dtype": _attr(type=1), "shape": _shape_attr([2])})
    assign = g.create_op("Assign", [v.outputs[0], p.outputs[0]], name="v/Assign",
                         attrs={"T": _attr(type=1)})
    add = g.create_op("AssignAdd", [v.outputs[0], p.outputs[0]], name="v/AssignAdd",
                      attrs={"T": _attr(type=1)})
    init = g.create_op("IsVariableInitialized", [v.outputs[0]], name="v/IsInit",
                       attrs={"dtype": _attr(type=1)})
    return g, p, v, assign, add, init


def test_ref_variable_lifecycle():
    g, p, v, assign, add, is_init = _ref_graph()
    with session_lib.Session(graph=g) as sess:
        assert sess.run(is_init.outputs[0]) == False  # noqa: E712 (a numpy bool)
        with pytest.raises(errors.FailedPreconditionError, match="uninitialized value v"):
            sess.run(add, {p.outputs[0]: [1.0, 2.0]})
        out = sess.run(assign.outputs[0], {p.outputs[0]: [1.0, 2.0]})
        np.testing.assert_array_equal(out, np.array([1, 2], np.float32))
        assert out.dtype == np.float32
        sess.run(add, {"p:0": np.array([10, 20], np.float32)})
        np.testing.assert_array_equal(sess.run("v:0"), [11, 22])
        assert sess.run(is_init.outputs[0]) == True  # noqa: E712
    # variables live per session
    with session_lib.Session(graph=g) as sess2:
        assert sess2.run(is_init.outputs[0]) == False  # noqa: E712


def test_fetch_structures():
    g, p, v, assign, add, is_init = _ref_graph()
    Pair = collections.namedtuple("Pair", "a b")
    with session_lib.Session(graph=g) as sess:
        feed = {p.outputs[0]: [1.0, 2.0]}
        out = sess.run({"x": [assign.outputs[0], (is_init.outputs[0],)], "op": assign}, feed)
        assert set(out) == {"x", "op"} and out["op"] is None
        assert isinstance(out["x"], list) and isinstance(out["x"][1], tuple)
        np.testing.assert_array_equal(out["x"][0], [1, 2])
        pair = sess.run(Pair(a="v:0", b=is_init.outputs[0]))
        assert isinstance(pair, Pair) and pair.b == True  # noqa: E712
        od = sess.run(collections.OrderedDict([("b", "v:0"), ("a", "v/IsInit:0")]))
        assert list(od) == ["b", "a"]
        assert sess.run([]) == []
        # the same tensor twice is computed once and returned twice
        a, b = sess.run(["v:0", "v:0"])
        np.testing.assert_array_equal(a, b)


def test_fetch_and_feed_errors():
    g, p, v, assign, add, is_init = _ref_graph()
    with session_lib.Session(graph=g) as sess:
        with pytest.raises(TypeError, match="Fetch argument None has invalid type"):
            sess.run(None)
        with pytest.raises(TypeError, match="invalid type"):
            sess.run(3)
        with pytest.raises(ValueError, match="cannot be interpreted as a Tensor"):
            sess.run("nope:0")
        with pytest.raises(errors.InvalidArgumentError) as e:
            sess.run(assign, {p.outputs[0]: [1.0, 2.0, 3.0]})
        assert "Cannot feed value of shape (3,) for Tensor 'p:0', which has shape [2]" in str(e.value)
        assert isinstance(e.value, ValueError)  # TensorFlow raises ValueError here
        with pytest.raises(TypeError, match="Cannot interpret feed_dict key"):
            sess.run(assign, {"nope:0": 1.0})
        with pytest.raises(errors.InvalidArgumentError, match="Cannot feed"):
            sess.run(assign, {p.outputs[0]: ["a", "b"]})


def test_placeholder_not_fed_is_an_error_naming_it():
    g, p, v, assign, add, is_init = _ref_graph()
    with session_lib.Session(graph=g) as sess:
        with pytest.raises(errors.OpError) as e:
            sess.run(assign)
        assert "p" in str(e.value)


def _resource_graph():
    g = graph_lib.Graph()
    p = g.create_op("Placeholder", name="p", attrs={"dtype": _attr(type=1), "shape": _shape_attr([])})
    h = g.create_op("VarHandleOp", name="w", attrs={"dtype": _attr(type=1), "shape": _shape_attr([]),
                                                    "shared_name": _attr(s=b"w")})
    assign = g.create_op("AssignVariableOp", [h.outputs[0], p.outputs[0]], name="w/Assign",
                         attrs={"dtype": _attr(type=1)})
    add = g.create_op("AssignAddVariableOp", [h.outputs[0], p.outputs[0]], name="w/Add",
                      attrs={"dtype": _attr(type=1)})
    read = g.create_op("ReadVariableOp", [h.outputs[0]], name="w/Read",
                       attrs={"dtype": _attr(type=1)})
    is_init = g.create_op("VarIsInitializedOp", [h.outputs[0]], name="w/IsInit")
    destroy = g.create_op("DestroyResourceOp", [h.outputs[0]], name="w/Destroy")
    sgd = g.create_op("ResourceApplyGradientDescent", [h.outputs[0], p.outputs[0], p.outputs[0]],
                      name="w/SGD", attrs={"T": _attr(type=1)})
    return g, p, assign, add, read, is_init, destroy, sgd


def test_resource_variable_lifecycle():
    g, p, assign, add, read, is_init, destroy, sgd = _resource_graph()
    with session_lib.Session(graph=g) as sess:
        assert sess.run(is_init.outputs[0]) == False  # noqa: E712
        with pytest.raises(errors.FailedPreconditionError, match="uninitialized"):
            sess.run(read.outputs[0])
        sess.run(assign, {p.outputs[0]: 3.0})
        sess.run(add, {p.outputs[0]: 0.5})
        assert sess.run(read.outputs[0]) == np.float32(3.5)
        sess.run(sgd, {p.outputs[0]: 2.0})  # w -= 2 * 2
        assert sess.run(read.outputs[0]) == np.float32(-0.5)
        sess.run(destroy)
        assert sess.run(is_init.outputs[0]) == False  # noqa: E712


def test_plans_are_cached_per_fetches_and_feeds():
    g, p, v, assign, add, is_init = _ref_graph()
    with session_lib.Session(graph=g) as sess:
        sess.run(assign, {p.outputs[0]: [1.0, 2.0]})
        sess.run(assign, {p.outputs[0]: [3.0, 4.0]})
        assert len(sess._plans) == 1
        sess.run(is_init.outputs[0])
        assert len(sess._plans) == 2


def test_plan_prunes_to_what_the_fetches_need(monkeypatch):
    monkeypatch.setattr(executor, "FOLD", False)  # (folded, the variable's op is no step)
    g, p, v, assign, add, is_init = _ref_graph()
    with session_lib.Session(graph=g) as sess:
        sess.run(is_init.outputs[0])
        (plan,) = sess._plans.values()
        assert [st.op.name for st in plan.steps] == ["v", "v/IsInit"]


def test_missing_kernels_are_listed_at_plan_time():
    g = graph_lib.Graph()
    p = g.create_op("Placeholder", name="p", attrs={"dtype": _attr(type=1), "shape": _shape_attr([])})
    q = g.create_op("Placeholder", name="q", attrs={"dtype": _attr(type=1), "shape": _shape_attr([])})
    fft = g.create_op("FFT", [g.create_op("Cast", [p.outputs[0]], name="c",
                                          attrs={"SrcT": _attr(type=1), "DstT": _attr(type=8)}).outputs[0]],
                      name="fft", attrs={"Tcomplex": _attr(type=8)})
    assert q and fft
    with session_lib.Session(graph=g) as sess, pytest.raises(errors.NotFoundError) as e:
        sess.run(fft.outputs[0], {p.outputs[0]: 1.0})
    assert "FFT" in str(e.value) and "'fft'" in str(e.value)


def test_default_session_eval_and_run():
    g, p, v, assign, add, is_init = _ref_graph()
    sess = session_lib.Session(graph=g)
    with pytest.raises(ValueError, match="No default session"):
        is_init.outputs[0].eval()
    with sess.as_default():
        assert session_lib.get_default_session() is sess
        assign.run({p.outputs[0]: [5.0, 6.0]})
        np.testing.assert_array_equal(g.get_tensor_by_name("v:0").eval(), [5, 6])
    assert session_lib.get_default_session() is None
    with sess:
        assert graph_lib.get_default_graph() is g
    with pytest.raises(RuntimeError, match="closed Session"):
        sess.run("v:0")


def test_interactive_session_and_make_callable():
    g, p, v, assign, add, is_init = _ref_graph()
    sess = session_lib.InteractiveSession(graph=g)
    try:
        assert session_lib.get_default_session() is sess
        f = sess.make_callable([assign.outputs[0], is_init.outputs[0]], feed_list=[p.outputs[0]])
        val, ok = f([7.0, 8.0])
        np.testing.assert_array_equal(val, [7, 8])
        assert ok == True  # noqa: E712
        with pytest.raises(TypeError, match="Expected 1 feed values"):
            f()
    finally:
        sess.close()
    assert session_lib.get_default_session() is None


def test_config_proto_and_target():
    cfg = session_lib.ConfigProto(allow_soft_placement=False, log_device_placement=True,
                                  device_count={"GPU": 0}, intra_op_parallelism_threads=2)
    assert cfg.allow_soft_placement is False and cfg.device_count == {"GPU": 0}
    with pytest.raises(errors.UnimplementedError, match="distributed"):
        session_lib.Session("grpc://localhost:2222")
    assert dtypes.float32  # the module is importable alongside


def test_scalars_come_back_as_numpy_scalars_and_strings_as_bytes():
    """TensorFlow's Session.run returns a 0-d fetch as a numpy scalar (``bytes`` for a string)
    and encodes ``str`` feeds of string tensors as UTF-8."""
    g = graph_lib.Graph()
    s = g.create_op("Placeholder", name="s", attrs={"dtype": _attr(type=7)})
    s_id = g.create_op("Identity", [s.outputs[0]], name="s_id", attrs={"T": _attr(type=7)})
    f = g.create_op("Placeholder", name="f", attrs={"dtype": _attr(type=1)})
    f_id = g.create_op("Identity", [f.outputs[0]], name="f_id", attrs={"T": _attr(type=1)})
    with session_lib.Session(graph=g) as sess:
        out = sess.run(s_id.outputs[0], {s.outputs[0]: "héllo"})
        assert out == "héllo".encode("utf-8") and type(out) is bytes
        out = sess.run(s_id.outputs[0], {s.outputs[0]: [["a", b"b"], ["", "\u00e9"]]})
        assert out.dtype == object and out.shape == (2, 2)
        assert out.tolist() == [[b"a", b"b"], [b"", "\u00e9".encode()]]
        out = sess.run(f_id.outputs[0], {f.outputs[0]: 2.5})
        assert type(out) is np.float32 and out == 2.5
        out = sess.run(f_id.outputs[0], {f.outputs[0]: [2.5]})
        assert type(out) is np.ndarray and out.shape == (1,)
        with pytest.raises(errors.InvalidArgumentError, match="s:0 of dtype string"):
            sess.run(s_id.outputs[0], {s.outputs[0]: 3})
