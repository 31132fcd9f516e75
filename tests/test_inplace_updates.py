"""Optimizer updates that write a variable's buffer in place (kernels_cpu/state_ops.py): they do
so only when the session's store holds the only reference to the buffer and no other run of the
session is in flight, so nothing a user or a pending consumer holds ever changes after it was
handed out. (Variables of every size take the in-place path here; see the autouse fixture.)

- every recorded Apply / SparseApply case (TensorFlow's values, tests/fixtures/ops/state.*) run
  once with buffers only the store holds (written in place) and once with buffers the test also
  holds (left alone, new buffers stored): both give TensorFlow's values;
- variables larger than one chunk of the in-place updates, against numpy references of
  TensorFlow's formulas; the chunked formulas give the allocating expressions' bits;
- whole training graphs TensorFlow exported (tests/fixtures/optimizers): arrays fetched before
  and during training are never changed by later steps, training still gives TensorFlow's
  values, and with nothing else holding them the buffers are reused step after step;
- a read whose consumer runs after the update in the same step (TensorFlow's copy-on-write for
  resource variables, recorded from TensorFlow 2.21 below), and use_locking updates from many
  threads while other threads fetch the variable (the session's update guard).
"""

import base64
import json
import threading
from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from kernel_util import kernel_node
from mgrt.kernels_cpu import state_ops
from mgrt.kernels_cpu.state_ops import ResourceHandle, _handle_box
from mgrt.protos import attr_value_pb2
from mgrt.runtime import dtypes, kernel_registry
from mgrt.runtime import graph as graph_lib
from mgrt.runtime import session as session_lib
from mgrt.runtime.executor import Ref

OPS = Path(__file__).parent / "fixtures" / "ops"
DOC = json.loads((OPS / "state.json").read_text())
NPZ = np.load(OPS / "state.npz", allow_pickle=False)
_UPDATES = ("Apply", "ResourceApply", "SparseApply", "ResourceSparseApply")
CASES = [c for c in DOC["cases"] if c["error"] is None and c["op"].startswith(_UPDATES)
         and c["kind"] is not None]
TOL = {np.dtype(np.float16): (2e-3, 1e-3), np.dtype(np.float32): (1e-5, 1e-6),
       np.dtype(np.float64): (1e-12, 1e-14)}

OPT = Path(__file__).parent / "fixtures" / "optimizers"
OPT_DOC = json.loads((OPT / "optimizers.json").read_text())
OPT_NPZ = np.load(OPT / "optimizers.npz", allow_pickle=False)


@pytest.fixture(autouse=True)
def _in_place_at_every_size(monkeypatch):
    """Variables of every size take the in-place path here (the fixtures' are small; by
    default those below state_ops._MIN_IN_PLACE elements allocate)."""
    monkeypatch.setattr(state_ops, "_MIN_IN_PLACE", 0)


def test_small_variables_allocate(monkeypatch):
    monkeypatch.setattr(state_ops, "_MIN_IN_PLACE", 100)
    store = {("", "v"): np.ones(99, np.float32)}
    ref = Ref(store, ("", "v"), "v")
    nd = kernel_node(_nd("ApplyGradientDescent", T=attr_value_pb2.AttrValue(type=1)))
    run = kernel_registry.lookup("ApplyGradientDescent", "CPU", nd.attrs).builder(nd, None)
    run(ref, np.float32(0.5), np.ones(99, np.float32))  # (the kernel learns the size)
    before = id(store[("", "v")])
    run(ref, np.float32(0.5), np.ones(99, np.float32))
    assert id(store[("", "v")]) != before
    np.testing.assert_array_equal(store[("", "v")], np.zeros(99, np.float32))
    store[("", "v")] = np.ones(100, np.float32)
    run(ref, np.float32(0.5), np.ones(100, np.float32))
    before = id(store[("", "v")])
    run(ref, np.float32(0.5), np.ones(100, np.float32))
    assert id(store[("", "v")]) == before
    np.testing.assert_array_equal(store[("", "v")], np.zeros(100, np.float32))


def _family(op):
    for p in ("ResourceSparseApply", "SparseApply", "ResourceApply", "Apply"):
        if op.startswith(p):
            return op[len(p):], p.endswith("SparseApply")
    raise AssertionError(op)


def _in_place_family(op):
    """Whether the update writes buffers in place (when only the store holds them)."""
    family, sparse = _family(op)
    return sparse or family in state_ops._TO


def _store(case):
    """A store with copies of the case's variables (arrays that own their memory), and the
    kernel's holders for them."""
    store, holders = {}, []
    for k, v in enumerate(case["vars"]):
        key = ("", f"v{k}")
        value = NPZ[v["key"]].copy()
        store[key] = value
        if case["kind"] == "ref":
            holders.append(Ref(store, key, f"v{k}"))
        else:
            holders.append(_handle_box(ResourceHandle(store, key, f"v{k}",
                                                      dtypes.as_dtype(value.dtype), None)))
    return store, holders


def _run_case(case, store, holders):
    node = kernel_node(base64.b64decode(case["node_def"]))
    run = kernel_registry.lookup(node.op, "CPU", node.attrs).builder(node, None)
    inputs = [NPZ[v["key"]] for v in case["inputs"]]
    args = [holders[a["var"]] if "var" in a else inputs[a["in"]] for a in case["args"]]
    run(*args)


def _check_after(case, store):
    for k, w in enumerate(case["vars_after"]):
        got, want = store[("", f"v{k}")], NPZ[w["key"]]
        assert got.shape == want.shape and got.dtype == want.dtype, (case["name"], k)
        rtol, atol = TOL[want.dtype]
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{case['name']} v{k}")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_recorded_updates_with_sole_and_shared_buffers(case):
    # sole: the store's arrays are written in place (same objects afterwards)
    store, holders = _store(case)
    before = {k: id(v) for k, v in store.items()}
    _run_case(case, store, holders)
    _check_after(case, store)
    if _in_place_family(case["op"]):
        assert {k: id(v) for k, v in store.items()} == before, case["name"]
    sole = {k: v.copy() for k, v in store.items()}
    # shared: the arrays the store holds are also held here; they keep their values
    store, holders = _store(case)
    held = dict(store)
    _run_case(case, store, holders)
    _check_after(case, store)
    for k, v in enumerate(case["vars"]):
        key = ("", f"v{k}")
        np.testing.assert_array_equal(held[key], NPZ[v["key"]])
        # both ways evaluate the same expressions in the same order: the same bits
        np.testing.assert_array_equal(store[key], sole[key], err_msg=f"{case['name']} v{k}")


def test_a_view_or_a_second_name_keeps_the_buffer():
    """A view of the buffer (held anywhere) or the same variable given twice: no in-place
    write."""
    case = next(c for c in CASES if c["name"] == "ApplyMomentum/plain")
    store, holders = _store(case)
    view = store[("", "v0")][:1]
    first = view.copy()
    _run_case(case, store, holders)
    np.testing.assert_array_equal(view, first)
    _check_after(case, store)
    # var and accum naming one variable: both updates computed from the old buffer, not mixed
    store = {("", "v"): np.arange(4, dtype=np.float32)}
    ref = Ref(store, ("", "v"), "v")
    nd = kernel_node(_nd("ApplyMomentum", T=attr_value_pb2.AttrValue(type=1)))
    run = kernel_registry.lookup("ApplyMomentum", "CPU", nd.attrs).builder(nd, None)
    old = store[("", "v")]
    run(ref, ref, np.float32(0.5), np.ones(4, np.float32), np.float32(0.25))
    np.testing.assert_array_equal(old, np.arange(4, dtype=np.float32))


def _nd(op, **attrs):
    from mgrt.protos import node_def_pb2

    nd = node_def_pb2.NodeDef(name=op.lower(), op=op)
    for k, v in attrs.items():
        nd.attr[k].CopyFrom(v)
    return nd


# --- larger than a chunk ------------------------------------------------------------------------
def _ref_update(family, nesterov, var, slots, g, hp):
    """TensorFlow's training_ops formulas in float64 (numpy reference)."""
    lr = hp["lr"]
    if family == "GradientDescent":
        return [var - g * lr]
    if family == "Momentum":
        (acc,) = slots
        acc = acc * hp["momentum"] + g
        if nesterov:
            return [var - (g * lr + acc * hp["momentum"] * lr), acc]
        return [var - acc * lr, acc]
    if family == "KerasMomentum":
        (acc,) = slots
        acc = acc * hp["momentum"] - g * lr
        if nesterov:
            return [var + (acc * hp["momentum"] - g * lr), acc]
        return [var + acc, acc]
    if family == "Adam":
        m, v = slots
        b1, b2, eps = hp["beta1"], hp["beta2"], hp["epsilon"]
        alpha = lr * np.sqrt(1 - hp["beta2_power"]) / (1 - hp["beta1_power"])
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        num = (g * (1 - b1) + b1 * m) if nesterov else m
        return [var - num * alpha / (np.sqrt(v) + eps), m, v]
    if family == "RMSProp":
        ms, mom = slots
        ms = ms + (g * g - ms) * (1 - hp["rho"])
        mom = mom * hp["momentum"] + g * lr / np.sqrt(ms + hp["epsilon"])
        return [var - mom, ms, mom]
    if family in ("Adagrad", "AdagradV2"):
        (acc,) = slots
        acc = acc + g * g
        den = np.sqrt(acc) + (hp["epsilon"] if family == "AdagradV2" else 0)
        return [var - g * lr / den, acc]
    raise AssertionError(family)


_LARGE = [("GradientDescent", False), ("Momentum", False), ("Momentum", True),
          ("KerasMomentum", False), ("KerasMomentum", True), ("Adam", False), ("Adam", True),
          ("RMSProp", False), ("Adagrad", False), ("AdagradV2", False)]
_HP = {"lr": 0.01, "alpha": 0.01, "momentum": 0.9, "beta1_power": 0.9 ** 3,
       "beta2_power": 0.999 ** 3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7, "rho": 0.9}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("family,nesterov", _LARGE)
def test_variables_larger_than_a_chunk(family, nesterov, dtype):
    from mgrt.kernels_cpu.state_ops import _SPECS, _arg_names

    rs = np.random.RandomState(5)
    shape = (601, 523)  # 314,323 elements: several chunks and a short last one
    n_slots = len(_SPECS[family].slots)
    var = rs.randn(*shape).astype(dtype)
    slots = [rs.rand(*shape).astype(dtype) + 0.5 for _ in range(n_slots)]
    g = rs.randn(*shape).astype(dtype)
    resource = family == "KerasMomentum"
    op = ("ResourceApply" if resource else "Apply") + family
    attrs = {"T": attr_value_pb2.AttrValue(type=dtypes.as_dtype(dtype).as_datatype_enum)}
    if family in ("Momentum", "KerasMomentum", "Adam"):
        attrs["use_nesterov"] = attr_value_pb2.AttrValue(b=nesterov)
    nd = kernel_node(_nd(op, **attrs))
    run = kernel_registry.lookup(op, "CPU", nd.attrs).builder(nd, None)
    store = {("", f"v{k}"): a.copy() for k, a in enumerate([var] + slots)}
    if resource:
        holders = [_handle_box(ResourceHandle(store, k, k[1], dtypes.as_dtype(dtype), None))
                   for k in store]
    else:
        holders = [Ref(store, k, k[1]) for k in store]
    buffers = [id(v) for v in store.values()]  # (holding the arrays would keep them shared)
    args = []
    for name in _arg_names(op)[n_slots + 1:]:
        args.append(g if name in ("grad", "delta") else np.asarray(_HP[name], dtype))
    run(*holders, *args)
    assert [id(v) for v in store.values()] == buffers  # in place
    want = _ref_update(family, nesterov, var.astype(np.float64),
                       [s.astype(np.float64) for s in slots], g.astype(np.float64),
                       {k: float(np.asarray(v, dtype)) for k, v in _HP.items()})
    rtol, atol = (2e-5, 1e-6) if dtype == "float32" else (1e-12, 1e-14)
    for got, w in zip(store.values(), want):
        np.testing.assert_allclose(got, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "complex64"])
def test_in_place_formulas_are_the_expressions_bit_for_bit(dtype):
    """The chunked in-place updates (state_ops._TO) evaluate the allocating update expressions
    (state_ops._SPECS[...].update, checked against TensorFlow's recordings) op by op: the same
    bits, over several chunks, for every dtype and option."""
    import ml_dtypes

    from mgrt.kernels_cpu.state_ops import _SPECS, _update_to

    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rs = np.random.RandomState(6)
    n = 200_003
    h = {k: np.asarray(v, dt)[()] for k, v in _HP.items()}
    for family, (fn, n_tmp) in state_ops._TO.items():
        for nesterov in (False, True):
            for update_slots in (False, True):
                attrs = {"use_nesterov": nesterov, "update_slots": update_slots}
                state = [(rs.rand(n) + 0.5).astype(dt) for _ in _SPECS[family].slots + [None]]
                g = rs.randn(n).astype(dt)
                want = _SPECS[family].update(attrs, [s.copy() for s in state], h, g)
                _update_to(fn, n_tmp, attrs, state, state, h, g)  # in place
                for k, (got, w) in enumerate(zip(state, want)):
                    w = np.asarray(w, dt)
                    assert got.tobytes() == w.tobytes(), (family, attrs, k)


# --- training graphs TensorFlow exported -----------------------------------------------------------
def _import(case):
    rec = OPT_DOC["cases"][case]
    g = tf.Graph()
    with g.as_default():
        tf.train.import_meta_graph(str(OPT / rec["meta"]))
    variables = {v.name.rsplit(":", 1)[0]: v for v in g.get_collection("variables")}
    return rec, g, variables


def _init(sess, variables, case):
    for name, v in variables.items():
        sess.run(v.initializer, {v.initial_value: OPT_NPZ[f"{case}/init/{name}"]})


def _check_final(sess, variables, case):
    for name, v in variables.items():
        want = OPT_NPZ[f"{case}/final/{name}"]
        rtol, atol = (1e-5, 1e-6) if want.dtype == np.float32 else (0, 0)
        np.testing.assert_allclose(sess.run(v), want, rtol=rtol, atol=atol,
                                   err_msg=f"{case}: {name}")


_GRAPHS = ["gradient_descent_ref", "gradient_descent_resource", "momentum_nesterov_ref",
           "momentum_resource", "adam_ref", "adam_resource", "rmsprop_resource", "adagrad_ref",
           "partitioned_adagrad_resource", "ftrl_l1_l2_shrinkage_ref"]


@pytest.mark.parametrize("case", _GRAPHS)
def test_fetched_values_never_change_afterwards(case):
    """Every variable fetched before training, and fetched in the same run as each train step
    (alone and with the loss): the arrays sess.run handed out keep their values while training
    goes on, and training still ends at TensorFlow's values."""
    rec, g, variables = _import(case)
    feed = {name: OPT_NPZ[key] for name, key in OPT_DOC["feeds"].items()}
    with g.as_default():
        loss = tf.get_collection("loss")[0]
        train_op = tf.get_collection("train_op")[0]
        names = list(variables)
        tensors = [variables[n] for n in names]
        handed, snapshots = [], []

        def keep(values):
            handed.extend(values)
            snapshots.extend(np.array(a, copy=True) for a in values)

        with tf.Session() as sess:
            _init(sess, variables, case)
            keep(sess.run(tensors))
            for _ in range(OPT_DOC["steps"]):
                keep(sess.run(tensors + [loss, train_op], feed)[:-2])
                keep(sess.run(tensors))
            for _ in range(3):  # more steps with the arrays still held
                sess.run(train_op, feed)
            for k, (a, s) in enumerate(zip(handed, snapshots)):
                np.testing.assert_array_equal(a, s, err_msg=f"{case}: {names[k % len(names)]}")
            # the fetched values of the first run are the initial values
            for name, a in zip(names, handed):
                np.testing.assert_array_equal(a, OPT_NPZ[f"{case}/init/{name}"])
    # the same steps with the arrays held all along end where TensorFlow's did
    rec, g, variables = _import(case)
    with g.as_default():
        train_op = tf.get_collection("train_op")[0]
        tensors = list(variables.values())
        with tf.Session() as sess:
            _init(sess, variables, case)
            held = sess.run(tensors)
            for _ in range(OPT_DOC["steps"]):
                held += sess.run(tensors + [train_op], feed)[:-1]
            _check_final(sess, variables, case)


_DENSE = {"gradient_descent": "GradientDescent", "momentum": "Momentum", "adam": "Adam",
          "rmsprop": "RMSProp", "momentum_nesterov": "Momentum"}


@pytest.mark.parametrize("case", [f"{o}_{k}" for o in _DENSE for k in ("ref", "resource")])
def test_training_reuses_the_buffers(case):
    """With nothing else holding them, the dense layer's buffers (weights, bias and their
    slots) are updated in place step after step, and the values are TensorFlow's."""
    rec, g, variables = _import(case)
    feed = {name: OPT_NPZ[key] for name, key in OPT_DOC["feeds"].items()}
    with g.as_default():
        train_op = tf.get_collection("train_op")[0]
        with tf.Session() as sess:
            _init(sess, variables, case)
            store = sess._state.resources if rec["resource"] else sess._state.variables
            dense = [k for k in store if k[1].startswith(("model/w", "model/b"))]
            assert len(dense) >= 2
            ids = {k: id(store[k]) for k in dense}
            for _ in range(OPT_DOC["steps"]):
                sess.run(train_op, feed)
            assert {k: id(store[k]) for k in dense} == ids
            _check_final(sess, variables, case)


# --- order within a step, and threads ----------------------------------------------------------------
def _attr(**kw):
    return attr_value_pb2.AttrValue(**kw)


def _shape(dims):
    av = attr_value_pb2.AttrValue()
    av.shape.SetInParent()
    for d in dims:
        av.shape.dim.add(size=d)
    return av


def _read_then_update_graph(resource):
    """w (2 floats) read, then updated by SGD (lr p, gradient q) after the read, then the read
    value used by an Identity that runs after the update."""
    g = graph_lib.Graph()
    f32 = _attr(type=1)
    p = g.create_op("Placeholder", name="p", attrs={"dtype": f32, "shape": _shape([])})
    q = g.create_op("Placeholder", name="q", attrs={"dtype": f32, "shape": _shape([2])})
    init = g.create_op("Placeholder", name="init", attrs={"dtype": f32, "shape": _shape([2])})
    if resource:
        w = g.create_op("VarHandleOp", name="w", attrs={"dtype": f32, "shape": _shape([2]),
                                                         "shared_name": _attr(s=b"w")})
        assign = g.create_op("AssignVariableOp", [w.outputs[0], init.outputs[0]],
                             name="w/Assign", attrs={"dtype": f32})
        read = g.create_op("ReadVariableOp", [w.outputs[0]], name="w/Read", attrs={"dtype": f32})
        sgd = g.create_op("ResourceApplyGradientDescent", [w.outputs[0], p.outputs[0],
                                                           q.outputs[0]],
                          name="sgd", attrs={"T": f32}, control_inputs=[read])
    else:
        w = g.create_op("VariableV2", name="w", attrs={"dtype": f32, "shape": _shape([2])})
        assign = g.create_op("Assign", [w.outputs[0], init.outputs[0]], name="w/Assign",
                             attrs={"T": f32})
        read = g.create_op("Identity", [w.outputs[0]], name="w/read", attrs={"T": f32})
        sgd = g.create_op("ApplyGradientDescent", [w.outputs[0], p.outputs[0], q.outputs[0]],
                          name="sgd", attrs={"T": f32}, control_inputs=[read])
    late = g.create_op("Identity", [read.outputs[0]], name="late", attrs={"T": f32},
                       control_inputs=[sgd])
    return g, p, q, init, assign, read, sgd, late


def test_resource_read_before_an_update_keeps_its_value_as_in_tensorflow():
    """TensorFlow 2.21 (this graph built with tf.compat.v1 and raw_ops, w = [1, 2], lr 0.5,
    gradient [1, 1]) gave [1, 2], [0.5, 1.5], [0, 1] for ``late`` in three runs (its
    copy-on-write: the update copies a buffer that a read still holds) and w = [-0.5, 0.5]."""
    g, p, q, init, assign, read, sgd, late = _read_then_update_graph(resource=True)
    with session_lib.Session(graph=g) as sess:
        sess.run(assign, {init.outputs[0]: np.array([1, 2], np.float32)})
        feed = {p.outputs[0]: 0.5, q.outputs[0]: np.ones(2, np.float32)}
        outs = [sess.run(late.outputs[0], feed) for _ in range(3)]
        np.testing.assert_array_equal(outs, [[1, 2], [0.5, 1.5], [0, 1]])
        np.testing.assert_array_equal(sess.run(read.outputs[0]), [-0.5, 0.5])


def test_ref_read_before_an_update_keeps_its_value():
    """For a ref variable TensorFlow's Identity shares the buffer and the later consumer sees
    the update ([0.5, 1.5], [0, 1], [-0.5, 0.5] in TF 2.21); mgrt gives a value read before an
    update its value at the read (kernels_cpu/state_ops.py), and still never changes
    an array it handed out."""
    g, p, q, init, assign, read, sgd, late = _read_then_update_graph(resource=False)
    with session_lib.Session(graph=g) as sess:
        sess.run(assign, {init.outputs[0]: np.array([1, 2], np.float32)})
        feed = {p.outputs[0]: 0.5, q.outputs[0]: np.ones(2, np.float32)}
        outs = [sess.run(late.outputs[0], feed) for _ in range(3)]
        np.testing.assert_array_equal(outs, [[1, 2], [0.5, 1.5], [0, 1]])
        np.testing.assert_array_equal(sess.run(read.outputs[0]), [-0.5, 0.5])


@pytest.mark.parametrize("resource", [False, True])
def test_locking_updates_from_threads(resource):
    """SGD with use_locking from 4 threads (50 steps each, w -= 0.5 * 1 in float32: exact)
    while other threads fetch w: no update is lost, and every fetched array keeps its value."""
    g = graph_lib.Graph()
    f32 = _attr(type=1)
    n = 300_000  # more than one chunk
    p = g.create_op("Placeholder", name="p", attrs={"dtype": f32, "shape": _shape([])})
    q = g.create_op("Placeholder", name="q", attrs={"dtype": f32, "shape": _shape([n])})
    init = g.create_op("Placeholder", name="init", attrs={"dtype": f32, "shape": _shape([n])})
    locking = {"T": f32, "use_locking": _attr(b=True)}
    if resource:
        w = g.create_op("VarHandleOp", name="w", attrs={"dtype": f32, "shape": _shape([n]),
                                                         "shared_name": _attr(s=b"w")})
        assign = g.create_op("AssignVariableOp", [w.outputs[0], init.outputs[0]],
                             name="w/Assign", attrs={"dtype": f32})
        read = g.create_op("ReadVariableOp", [w.outputs[0]], name="w/Read", attrs={"dtype": f32})
        sgd = g.create_op("ResourceApplyGradientDescent",
                          [w.outputs[0], p.outputs[0], q.outputs[0]], name="sgd", attrs=locking)
    else:
        w = g.create_op("VariableV2", name="w", attrs={"dtype": f32, "shape": _shape([n])})
        assign = g.create_op("Assign", [w.outputs[0], init.outputs[0]], name="w/Assign",
                             attrs={"T": f32})
        read = g.create_op("Identity", [w.outputs[0]], name="w/read", attrs={"T": f32})
        sgd = g.create_op("ApplyGradientDescent", [w.outputs[0], p.outputs[0], q.outputs[0]],
                          name="sgd", attrs=locking)
    start = np.arange(n, dtype=np.float32) % 1000
    feed = {p.outputs[0]: np.float32(0.5), q.outputs[0]: np.ones(n, np.float32)}
    with session_lib.Session(graph=g) as sess:
        sess.run(assign, {init.outputs[0]: start})
        barrier = threading.Barrier(6)
        fetched = []
        errors = []

        def train():
            try:
                barrier.wait()
                for _ in range(50):
                    sess.run(sgd, feed)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        def watch():
            try:
                barrier.wait()
                for _ in range(30):
                    a = sess.run(read.outputs[0])
                    fetched.append((a, a.copy()))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=train) for _ in range(4)]
        threads += [threading.Thread(target=watch) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        np.testing.assert_array_equal(sess.run(read.outputs[0]), start - np.float32(100))
        for a, snapshot in fetched:
            np.testing.assert_array_equal(a, snapshot)
            if resource:  # a resource read takes the variable's lock: a whole number of steps
                steps = start[:1000] - a[:1000]
                assert np.all(steps == steps[0]) and float(steps[0]) * 2 % 1 == 0


_LEAN_CASES = [c for c in CASES if c["op"].startswith("Apply") and c["kind"] == "ref"
               and _family(c["op"])[0] in state_ops._JIT_TO]


@pytest.mark.parametrize("case", _LEAN_CASES, ids=[c["name"] for c in _LEAN_CASES])
def test_lean_path_is_the_general_path_bit_for_bit(case, monkeypatch):
    """Small ref variables of the numba families take _make_apply's lean path: the same new
    buffers, bit for bit, as the general path writes, and TensorFlow's values."""
    monkeypatch.setattr(state_ops, "_MIN_IN_PLACE", 1 << 30)
    after = {}
    for lean in (True, False):
        monkeypatch.setattr(state_ops, "_LEAN", lean)
        store, holders = _store(case)
        for _ in range(2):  # (the general path learns the size on its first run)
            before = list(store.values())
            _run_case(case, store, holders)
        assert all(v is not b for v, b in zip(store.values(), before))  # new buffers
        after[lean] = [store[("", f"v{k}")].tobytes() for k in range(len(case["vars"]))]
    assert after[True] == after[False]
    store, holders = _store(case)
    _run_case(case, store, holders)
    _check_after(case, store)
