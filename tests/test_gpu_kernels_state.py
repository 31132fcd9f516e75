"""The state kernels on a GPU (kernels_gpu/state_ops.py) against TensorFlow's recordings.

Every stateful case of tests/fixtures/ops/state.{json,npz} (the optimizers' Apply / SparseApply
ops in ref and resource form, Scatter*, ScatterNd*, ResourceGather[Nd]) whose node has a GPU
kernel runs on the ``gpu`` fixture: the variables' buffers are put on the device and held in a
store of the test's own (Refs or resource handles into it, as tests/test_kernels_state.py does
for the CPU), the other inputs go where the placement keeps them (int32 indices in host memory,
the rest on the device), and outputs, variables after the run and errors must be TensorFlow's
(error cases: the same class and message, and no variable changed). The dense optimizer updates
run twice, through their numba.cuda kernel and through the array-module path.

Beyond the recordings: the variable ops through a Session on simulated GPUs (ref and resource
lifecycles, where the buffers live, a fetched read keeps its value when the update runs in the
same step); in-place updates and copy-on-write when a value read earlier still holds the
buffer; which dtypes have GPU kernels; and on random inputs the GPU kernels agree with the CPU
kernels (TensorFlow-verified) on both paths, float16 included.
"""

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from mgrt.kernels_cpu.state_ops import ResourceHandle, _handle_box
from mgrt.kernels_gpu import state_ops as gpu_state
from mgrt.protos import attr_value_pb2
from mgrt.runtime import dtypes, errors, kernel_registry
from mgrt.runtime import graph as graph_lib
from mgrt.runtime import session as session_lib
from mgrt.runtime.executor import Ref
from gpu_util import gpu_kernel_def, host_flags, run_kernel_gpu
from kernel_util import kernel_node

# numba's simulator runs the kernels as Python: nan and inf come with numpy's warnings
pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|divide by zero|overflow) encountered:RuntimeWarning")

OPS = Path(__file__).parent / "fixtures" / "ops"
DOC = json.loads((OPS / "state.json").read_text())
NPZ = np.load(OPS / "state.npz", allow_pickle=False)
ALL_CASES = DOC["cases"]

# TensorFlow writes rows across each other here; mgrt refuses (as its CPU kernels do).
REFUSED = {f"ResourceScatter{k}/err_shape_inner"
           for k in ("Update", "Add", "Sub", "Mul", "Div", "Max", "Min")}

TOL = {np.dtype(np.float16): (2e-3, 1e-3), np.dtype(np.float32): (1e-5, 1e-6),
       np.dtype(np.float64): (1e-12, 1e-14)}


def _value(v):
    return NPZ[v["key"]]


def _node(case):
    return kernel_node(base64.b64decode(case["node_def"]))


def _has_gpu_kernel(case):
    node = _node(case)
    return gpu_kernel_def(node) is not None


CASES = [c for c in ALL_CASES if c["kind"] is not None and _has_gpu_kernel(c)]
DENSE = [c for c in CASES if "Apply" in c["op"] and "Sparse" not in c["op"]]
OTHER = [c for c in CASES if c not in DENSE]


def _check(name, got, want):
    assert isinstance(got, np.ndarray), (name, type(got))
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
    if want.dtype.kind in "biu":
        assert got.reshape(-1).tolist() == want.reshape(-1).tolist(), (name, got, want)
        return
    rtol, atol = TOL[want.dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


class _Vars:
    """A store holding the case's variables as buffers of ``device``, and the holders (Refs
    or resource handles) the kernel gets for them."""

    def __init__(self, case, device):
        self.kind = case["kind"]
        self.device = device
        self.store = {}
        self.initial = [_value(v) for v in case["vars"]]
        self.buffers = []
        self.holders = []
        for k, value in enumerate(self.initial):
            key = ("", f"v{k}")
            if k not in case.get("uninit", []):
                self.store[key] = device.put(value)
            self.buffers.append(self.store.get(key))
            if self.kind == "ref":
                self.holders.append(Ref(self.store, key, f"v{k}"))
            else:
                self.holders.append(_handle_box(ResourceHandle(
                    self.store, key, f"v{k}", dtypes.as_dtype(value.dtype), None)))

    def raw(self, k):
        return self.store.get(("", f"v{k}"))

    def value(self, k):
        b = self.raw(k)
        return None if b is None else self.device.fetch(b)


def _prepare(case, device, ctx=None):
    node = _node(case)
    node.device = device
    kd = gpu_kernel_def(node)
    assert kd is not None
    in_host, _ = host_flags(node, kd)
    vs = _Vars(case, device)
    inputs = [_value(v) for v in case["inputs"]]
    args = []
    for pos, a in enumerate(case["args"]):
        if "var" in a:
            args.append(vs.holders[a["var"]])
        else:
            x = inputs[a["in"]]
            args.append(x if in_host[pos] else device.put(x))
    run = kd.builder(node, ctx)
    return vs, inputs, node, run, args


def _run_case(case, device):
    err = case["error"]
    vs, inputs, node, run, args = _prepare(case, device)
    if case["name"] in REFUSED:
        assert err is None
        with pytest.raises(errors.InvalidArgumentError, match="Must have updates.shape"):
            run(*args)
        _check_unchanged(case, vs)
        return
    if err is not None:
        with pytest.raises(errors.OpError) as ei, np.errstate(all="ignore"):
            run(*args)
        assert type(ei.value) is getattr(errors, err["type"]), (type(ei.value), err)
        assert err["message"] in str(ei.value), (str(ei.value), err["message"])
        _check_unchanged(case, vs)
        return
    with np.errstate(all="ignore"):
        outs = run(*args)
    assert isinstance(outs, (tuple, list))
    assert len(outs) == len(node.output_types) == len(case["outputs"])
    for i, (o, w) in enumerate(zip(outs, case["outputs"])):
        if isinstance(o, Ref):
            assert o is args[0]
            o = device.fetch(o.value)
        else:
            assert device.is_buffer(o), (case["name"], type(o))
            o = device.fetch(o)
        _check(f"{case['name']} output {i}", o, _value(w))
    for k, w in enumerate(case["vars_after"]):
        if w is None:
            assert vs.raw(k) is None
            continue
        assert device.is_buffer(vs.raw(k)), (case["name"], k, type(vs.raw(k)))
        _check(f"{case['name']} v{k}", vs.value(k), _value(w))
    for x, v in zip(inputs, case["inputs"]):
        _check(case["name"] + " (input)", x, _value(v))


def _check_unchanged(case, vs):
    for k, v in enumerate(case["vars"]):
        if k in case.get("uninit", []):
            assert vs.raw(k) is None
        else:
            assert vs.raw(k) is vs.buffers[k], f"{case['name']}: v{k} was replaced"
            _check(f"{case['name']} v{k}", vs.value(k), _value(v))


@pytest.fixture
def launches(monkeypatch):
    """Counts numba kernel launches from the state kernels."""
    calls = []
    real = gpu_state.launch

    def counting(device, kernel, n, *args, **kw):
        calls.append(n)
        return real(device, kernel, n, *args, **kw)

    monkeypatch.setattr(gpu_state, "launch", counting)
    return calls


@pytest.mark.parametrize("path", ["numba", "xp"])
@pytest.mark.parametrize("case", DENSE, ids=[c["name"] for c in DENSE])
def test_dense_updates_against_tensorflow(case, path, gpu, launches, monkeypatch):
    if path == "xp":
        monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "0")
    elif getattr(gpu, "is_simulated", False):
        monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "4096")
    _run_case(case, gpu)
    dtype = np.dtype(case["vars"][0]["dtype"])
    numba_case = case["error"] is None and dtype != np.float16 and \
        case["name"] not in REFUSED and _value(case["vars"][0]).size > 0
    if path == "numba" and numba_case:
        assert launches, "the numba kernel did not run"
    if path == "xp" and getattr(gpu, "is_simulated", False):
        assert not launches


@pytest.mark.parametrize("case", OTHER, ids=[c["name"] for c in OTHER])
def test_sparse_scatter_gather_against_tensorflow(case, gpu):
    _run_case(case, gpu)


SEGMENT = [c for c in ALL_CASES if c["kind"] is None and c["op"].startswith("UnsortedSegment")
           and _has_gpu_kernel(c)]


@pytest.mark.parametrize("case", SEGMENT, ids=[c["name"] for c in SEGMENT])
def test_unsorted_segment_reductions_against_tensorflow(case, gpu):
    node_def = base64.b64decode(case["node_def"])
    inputs = [_value(v) for v in case["inputs"]]
    err = case["error"]
    if err is not None:
        with pytest.raises(errors.OpError) as ei:
            run_kernel_gpu(node_def, inputs, gpu)
        assert type(ei.value) is getattr(errors, err["type"]), (type(ei.value), err)
        assert err["message"] in str(ei.value), (str(ei.value), err["message"])
        return
    outs = run_kernel_gpu(node_def, inputs, gpu)
    for i, (o, w) in enumerate(zip(outs, case["outputs"])):
        _check(f"{case['name']} output {i}", o, _value(w))


@pytest.mark.parametrize("op", ["UnsortedSegmentSum", "UnsortedSegmentMax"])
def test_unsorted_segment_many_repeats_use_the_scatter(op, gpu, monkeypatch):
    """Ids repeated more than _MAX_ROUNDS times go through ufunc.at; the numpy reference."""
    rng = np.random.default_rng(3)
    ids = np.concatenate([np.zeros(40, np.int32), rng.integers(-1, 5, 30).astype(np.int32)])
    data = rng.standard_normal((ids.size, 3)).astype(np.float32)
    from mgrt.protos import node_def_pb2

    nd = node_def_pb2.NodeDef(name="s", op=op, input=["d", "i", "n"])
    nd.attr["T"].type = dtypes.float32.as_datatype_enum
    nd.attr["Tindices"].type = dtypes.int32.as_datatype_enum
    nd.attr["Tnumsegments"].type = dtypes.int32.as_datatype_enum
    (out,) = run_kernel_gpu(nd, [data, ids, np.int32(6)], gpu)
    ufunc = np.add if op.endswith("Sum") else np.maximum
    want = np.full((6, 3), 0 if op.endswith("Sum") else np.finfo(np.float32).min, np.float32)
    keep = ids >= 0
    ufunc.at(want, ids[keep], data[keep])
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ScatterDiv/int_div", "ResourceScatterDiv/int_div",
                                  "ScatterAdd/int32", "ResourceScatterMin/int32"])
def test_integer_scatters_agree_with_the_cpu(name, gpu):
    """The recordings' integer scatters are int32 (whose variables stay on the CPU): the same
    as int64 variables on the GPU (C++ truncating division), against the CPU kernel."""
    from mgrt.protos import node_def_pb2

    case = _dense_case(name)
    nd = node_def_pb2.NodeDef.FromString(base64.b64decode(case["node_def"]))
    nd.attr["dtype" if "dtype" in nd.attr else "T"].type = dtypes.int64.as_datatype_enum
    case = dict(case, node_def=base64.b64encode(nd.SerializeToString()).decode())
    results = []
    for device in (None, gpu):
        node = kernel_node(nd)
        node.device = device
        kd = kernel_registry.lookup(node.op, "CPU" if device is None else "GPU", node.attrs)
        assert kd is not None
        store = {}
        value = _value(case["vars"][0]).astype(np.int64)
        store[("", "v0")] = value.copy() if device is None else device.put(value)
        holder = Ref(store, ("", "v0"), "v0") if case["kind"] == "ref" else _handle_box(
            ResourceHandle(store, ("", "v0"), "v0", dtypes.int64, None))
        inputs = [_value(v) for v in case["inputs"]]
        args = []
        for a in case["args"]:
            if "var" in a:
                args.append(holder)
                continue
            x = inputs[a["in"]]
            if x.dtype == np.int32 and a["in"] == case["args"][2]["in"]:
                x = x.astype(np.int64)  # the updates
            args.append(x if device is None or x.dtype == np.int32 else device.put(x))
        with np.errstate(all="ignore"):
            kd.builder(node, None)(*args)
        out = store[("", "v0")]
        results.append(out if device is None else gpu.fetch(out))
    assert results[1].dtype == np.int64
    np.testing.assert_array_equal(results[1], results[0])
    if "int_div" in name:
        assert (results[0] < 0).any()  # truncation toward zero was exercised


# --- coverage ---------------------------------------------------------------------------------
GPU_OPS = """VariableV2 Variable Assign AssignAdd AssignSub IsVariableInitialized VarHandleOp
ReadVariableOp AssignVariableOp AssignAddVariableOp AssignSubVariableOp VarIsInitializedOp
DestroyResourceOp ResourceGather ResourceGatherNd
ScatterUpdate ScatterAdd ScatterSub ScatterMul ScatterDiv ScatterMax ScatterMin
ResourceScatterUpdate ResourceScatterAdd ResourceScatterSub ResourceScatterMul ResourceScatterDiv
ResourceScatterMax ResourceScatterMin ScatterNdUpdate ScatterNdAdd ScatterNdSub ScatterNdMax
ScatterNdMin ResourceScatterNdUpdate ResourceScatterNdAdd ResourceScatterNdSub
ResourceScatterNdMax ResourceScatterNdMin
ApplyGradientDescent ApplyProximalGradientDescent ApplyMomentum ApplyAdam ApplyAdaMax
ApplyRMSProp ApplyCenteredRMSProp ApplyAdagrad ApplyAdagradV2 ApplyProximalAdagrad ApplyAdadelta
ApplyAddSign ApplyPowerSign ApplyFtrl ApplyFtrlV2
ResourceApplyGradientDescent ResourceApplyProximalGradientDescent ResourceApplyMomentum
ResourceApplyKerasMomentum ResourceApplyAdam ResourceApplyAdamWithAmsgrad ResourceApplyAdaMax
ResourceApplyRMSProp ResourceApplyCenteredRMSProp ResourceApplyAdagrad ResourceApplyAdagradV2
ResourceApplyProximalAdagrad ResourceApplyAdadelta ResourceApplyAddSign ResourceApplyPowerSign
ResourceApplyFtrl ResourceApplyFtrlV2
SparseApplyProximalGradientDescent SparseApplyMomentum SparseApplyRMSProp
SparseApplyCenteredRMSProp SparseApplyAdagrad SparseApplyAdagradV2 SparseApplyProximalAdagrad
SparseApplyAdadelta SparseApplyFtrl SparseApplyFtrlV2
ResourceSparseApplyProximalGradientDescent ResourceSparseApplyMomentum
ResourceSparseApplyKerasMomentum ResourceSparseApplyRMSProp ResourceSparseApplyCenteredRMSProp
ResourceSparseApplyAdagrad ResourceSparseApplyAdagradV2 ResourceSparseApplyProximalAdagrad
ResourceSparseApplyAdadelta ResourceSparseApplyFtrl ResourceSparseApplyFtrlV2
UnsortedSegmentSum UnsortedSegmentProd UnsortedSegmentMax UnsortedSegmentMin""".split()


def test_every_state_op_has_a_gpu_kernel():
    missing = [op for op in GPU_OPS if kernel_registry.lookup(op, "GPU") is None]
    assert not missing, missing
    # AdagradDA has no GPU kernel (nor has TensorFlow): it soft-places to the CPU
    for op in ("ApplyAdagradDA", "ResourceApplyAdagradDA", "SparseApplyAdagradDA"):
        assert kernel_registry.lookup(op, "GPU") is None


def test_recorded_cases_cover_the_gpu_ops():
    ran = {c["op"] for c in CASES}
    for op in GPU_OPS:
        if "Apply" in op or "Scatter" in op or "Gather" in op:
            assert op in ran, op
    assert len(DENSE) > 150 and len(OTHER) > 250


def _attrs(**kw):
    return {k: dtypes.as_dtype(v) for k, v in kw.items()}


def test_gpu_dtypes():
    look = kernel_registry.lookup
    for dt in ("float16", "float32", "float64", "int64", "uint8", "bool"):
        assert look("VariableV2", "GPU", _attrs(dtype=dt)) is not None, dt
        assert look("ReadVariableOp", "GPU", _attrs(dtype=dt)) is not None, dt
    # int32 variables stay in host memory, on the CPU, as in TensorFlow; so do bfloat16,
    # complex and string ones
    for dt in ("int32", "bfloat16", "complex64", "string"):
        assert look("VariableV2", "GPU", _attrs(dtype=dt)) is None, dt
        assert look("VarHandleOp", "GPU", _attrs(dtype=dt)) is None, dt
    for dt in ("float16", "float32", "float64"):
        assert look("ApplyAdam", "GPU", _attrs(T=dt)) is not None
    for dt in ("bfloat16", "complex64", "int64"):
        assert look("ApplyAdam", "GPU", _attrs(T=dt)) is None
    assert look("AssignAdd", "GPU", _attrs(T="bool")) is None
    assert look("ScatterAdd", "GPU", _attrs(T="int64", Tindices="int64")) is not None


# --- in place, and copy-on-write --------------------------------------------------------------
def _dense_case(name):
    return next(c for c in ALL_CASES if c["name"] == name)


@pytest.mark.parametrize("path", ["numba", "xp"])
@pytest.mark.parametrize("name", ["ApplyAdam/float32", "ResourceApplyAdam/float32",
                                  "ApplyMomentum/nesterov", "ResourceApplyAdadelta/float32"])
def test_updates_in_place_unless_a_read_value_holds_the_buffer(name, path, gpu, monkeypatch):
    """numba path: the kernel writes the variable's and slots' buffers in place (no new buffer)
    when nothing else holds them. Both paths: a value read earlier and still alive (here: the
    test holds the variable's buffer, or a view of it) keeps what it read, and the store gets
    the updated values."""
    monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "0" if path == "xp" else "4096")
    case = _dense_case(name)
    want_after = [_value(w) for w in case["vars_after"]]
    # nothing holds the buffers
    vs, inputs, node, run, args = _prepare(case, gpu)
    ids = [id(vs.raw(k)) for k in range(len(case["vars"]))]
    vs.buffers = None
    run(*args)
    for k, w in enumerate(want_after):
        _check(f"{name} v{k}", vs.value(k), w)
    if path == "numba":
        assert [id(vs.raw(k)) for k in range(len(ids))] == ids
    # a read value of the variable (and a view of a slot) is alive during the update
    vs, inputs, node, run, args = _prepare(case, gpu)
    read = vs.raw(0)
    slot_view = vs.raw(1).reshape(-1)
    vs.buffers = None
    run(*args)
    np.testing.assert_array_equal(gpu.fetch(read), _value(case["vars"][0]))
    np.testing.assert_array_equal(gpu.fetch(slot_view), _value(case["vars"][1]).reshape(-1))
    assert vs.raw(0) is not read
    for k, w in enumerate(want_after):
        _check(f"{name} v{k}", vs.value(k), w)


def test_scatter_and_assign_in_place_or_copy_on_write(gpu):
    case = _dense_case("ScatterAdd/basic")
    vs, inputs, node, run, args = _prepare(case, gpu)
    vid = id(vs.raw(0))
    vs.buffers = None
    run(*args)
    assert id(vs.raw(0)) == vid
    _check("ScatterAdd", vs.value(0), _value(case["vars_after"][0]))
    vs, inputs, node, run, args = _prepare(case, gpu)
    held = vs.raw(0)
    vs.buffers = None
    run(*args)
    assert vs.raw(0) is not held
    np.testing.assert_array_equal(gpu.fetch(held), _value(case["vars"][0]))
    _check("ScatterAdd", vs.value(0), _value(case["vars_after"][0]))


@pytest.mark.parametrize("name", ["ApplyAdam/float32", "ScatterAdd/basic",
                                  "SparseApplyMomentum/plain"])
def test_no_in_place_update_while_another_run_is_in_flight(name, gpu, monkeypatch):
    """On the simulated GPU (kernels run at once in the calling thread) an update writes in place
    only while its run is the session's only one in flight, as the CPU kernels do; a real GPU
    orders every kernel in its stream instead."""
    from mgrt.runtime.executor import KernelContext, SessionState
    from mgrt.runtime.session import Session

    if not getattr(gpu, "is_simulated", False):
        pytest.skip("the guard is for the simulated GPU")
    monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "4096")
    guard = Session()._state.update_guard
    state = SessionState()
    state.update_guard = guard
    ctx = KernelContext(gpu, state, None, name)
    case = _dense_case(name)
    for active, in_place in ((1, True), (2, False)):
        guard.active = active
        vs, inputs, node, run, args = _prepare(case, gpu, ctx)
        before = [id(vs.raw(k)) for k in range(len(case["vars"]))]
        vs.buffers = None
        run(*args)
        after = [id(vs.raw(k)) for k in range(len(case["vars"]))]
        assert (before == after) is in_place, (name, active)
        assert not guard.lock.locked()
        for k, w in enumerate(case["vars_after"]):
            _check(f"{name} v{k}", vs.value(k), _value(w))


def test_shared_detection(gpu):
    store = {"k": gpu.put(np.zeros(3, np.float32))}
    cur = store["k"]
    assert not gpu_state._shared(store, "k")
    other = cur
    assert gpu_state._shared(store, "k")
    del other
    assert not gpu_state._shared(store, "k")
    view = cur[1:]
    assert gpu_state._shared(store, "k")
    del view
    assert not gpu_state._shared(store, "k")
    lst = [cur]
    del cur
    assert not gpu_state._shared(lst, 0)  # the list element is the caller's reference


# --- through a Session on simulated GPUs --------------------------------------------------------
def _attr(**kw):
    return attr_value_pb2.AttrValue(**kw)


def _shape_attr(dims):
    av = attr_value_pb2.AttrValue()
    av.shape.SetInParent()
    for d in dims:
        av.shape.dim.add(size=d)
    return av


def _ref_graph(dtype=1):
    g = graph_lib.Graph()
    p = g.create_op("Placeholder", name="p", attrs={"dtype": _attr(type=dtype),
                                                    "shape": _shape_attr([2])})
    v = g.create_op("VariableV2", name="v", attrs={"dtype": _attr(type=dtype),
                                                   "shape": _shape_attr([2])})
    ops = {
        "assign": g.create_op("Assign", [v.outputs[0], p.outputs[0]], name="v/Assign",
                              attrs={"T": _attr(type=dtype)}),
        "add": g.create_op("AssignAdd", [v.outputs[0], p.outputs[0]], name="v/AssignAdd",
                           attrs={"T": _attr(type=dtype)}),
        "sub": g.create_op("AssignSub", [v.outputs[0], p.outputs[0]], name="v/AssignSub",
                           attrs={"T": _attr(type=dtype)}),
        "init": g.create_op("IsVariableInitialized", [v.outputs[0]], name="v/IsInit",
                            attrs={"dtype": _attr(type=dtype)}),
        "read": g.create_op("Identity", [v.outputs[0]], name="v/read",
                            attrs={"T": _attr(type=dtype)}),
    }
    return g, p, v, ops


def test_ref_variable_on_a_gpu(gpus):
    g, p, v, ops = _ref_graph()
    with session_lib.Session(graph=g) as sess:
        pl = sess.placement()
        for name in ("v", "v/Assign", "v/AssignAdd", "v/AssignSub", "v/IsInit"):
            assert pl.device_of(name).device_type == "GPU", name
        assert sess.run(ops["init"].outputs[0]) == False  # noqa: E712
        with pytest.raises(errors.FailedPreconditionError, match="uninitialized value v"):
            sess.run(ops["add"], {p.outputs[0]: [1.0, 2.0]})
        out = sess.run(ops["assign"].outputs[0], {p.outputs[0]: [1.0, 2.0]})
        np.testing.assert_array_equal(out, np.array([1, 2], np.float32))
        assert gpus[0].is_buffer(sess._state.variables[("", "v")])
        buf = id(sess._state.variables[("", "v")])  # (holding the buffer would be a live read)
        sess.run(ops["add"], {"p:0": np.array([10, 20], np.float32)})
        sess.run(ops["sub"], {"p:0": np.array([0.5, 0.5], np.float32)})
        np.testing.assert_array_equal(sess.run("v:0"), [10.5, 21.5])
        assert id(sess._state.variables[("", "v")]) == buf  # updated in place
        assert sess.run(ops["init"].outputs[0]) == True  # noqa: E712
        sess.run(ops["assign"], {p.outputs[0]: [3.0, 4.0]})
        assert id(sess._state.variables[("", "v")]) == buf
        np.testing.assert_array_equal(sess.run(ops["read"].outputs[0]), [3, 4])


def test_assign_validate_shape_on_a_gpu(gpus):
    g = graph_lib.Graph()
    p = g.create_op("Placeholder", name="p", attrs={"dtype": _attr(type=1)})
    v = g.create_op("VariableV2", name="v", attrs={"dtype": _attr(type=1),
                                                   "shape": _shape_attr([2])})
    a = g.create_op("Assign", [v.outputs[0], p.outputs[0]], name="a",
                    attrs={"T": _attr(type=1)})
    b = g.create_op("Assign", [v.outputs[0], p.outputs[0]], name="b",
                    attrs={"T": _attr(type=1), "validate_shape": _attr(b=False)})
    with session_lib.Session(graph=g) as sess:
        sess.run(a, {p.outputs[0]: np.ones(2, np.float32)})
        with pytest.raises(errors.InvalidArgumentError,
                           match=r"Assign requires shapes of both tensors to match. "
                                 r"lhs shape= \[2\] rhs shape= \[3\]"):
            sess.run(a, {p.outputs[0]: np.ones(3, np.float32)})
        sess.run(b, {p.outputs[0]: np.arange(3, dtype=np.float32)})
        np.testing.assert_array_equal(sess.run("v:0"), [0, 1, 2])


def test_int32_variable_stays_on_the_cpu(gpus):
    g, p, v, ops = _ref_graph(dtype=3)
    with session_lib.Session(graph=g) as sess:
        assert sess.placement().device_of("v").device_type == "CPU"
        sess.run(ops["assign"], {p.outputs[0]: np.array([1, 2], np.int32)})
        sess.run(ops["add"], {p.outputs[0]: np.array([1, 2], np.int32)})
        np.testing.assert_array_equal(sess.run("v:0"), [2, 4])


def _resource_graph():
    g = graph_lib.Graph()
    p = g.create_op("Placeholder", name="p", attrs={"dtype": _attr(type=1),
                                                    "shape": _shape_attr([2])})
    lr = g.create_op("Placeholder", name="lr", attrs={"dtype": _attr(type=1),
                                                      "shape": _shape_attr([])})
    h = g.create_op("VarHandleOp", name="w", attrs={"dtype": _attr(type=1),
                                                    "shape": _shape_attr([2]),
                                                    "shared_name": _attr(s=b"w")})
    t = _attr(type=1)
    ops = {
        "assign": g.create_op("AssignVariableOp", [h.outputs[0], p.outputs[0]], name="w/Assign",
                              attrs={"dtype": t}),
        "add": g.create_op("AssignAddVariableOp", [h.outputs[0], p.outputs[0]], name="w/Add",
                           attrs={"dtype": t}),
        "sub": g.create_op("AssignSubVariableOp", [h.outputs[0], p.outputs[0]], name="w/Sub",
                           attrs={"dtype": t}),
        "read": g.create_op("ReadVariableOp", [h.outputs[0]], name="w/Read",
                            attrs={"dtype": t}),
        "init": g.create_op("VarIsInitializedOp", [h.outputs[0]], name="w/IsInit"),
        "destroy": g.create_op("DestroyResourceOp", [h.outputs[0]], name="w/Destroy"),
    }
    read = ops["read"]
    ops["sgd"] = g.create_op("ResourceApplyGradientDescent",
                             [h.outputs[0], lr.outputs[0], p.outputs[0]], name="w/SGD",
                             attrs={"T": t}, control_inputs=[read])
    return g, p, lr, ops


def test_resource_variable_on_a_gpu(gpus):
    g, p, lr, ops = _resource_graph()
    with session_lib.Session(graph=g) as sess:
        pl = sess.placement()
        for name in ("w", "w/Assign", "w/Add", "w/Sub", "w/Read", "w/SGD"):
            assert pl.device_of(name).device_type == "GPU", name
        assert sess.run(ops["init"].outputs[0]) == False  # noqa: E712
        with pytest.raises(errors.FailedPreconditionError, match="uninitialized"):
            sess.run(ops["read"].outputs[0])
        sess.run(ops["assign"], {p.outputs[0]: [3.0, 1.0]})
        assert gpus[0].is_buffer(sess._state.resources[("", "w")])
        buf = id(sess._state.resources[("", "w")])
        sess.run(ops["add"], {p.outputs[0]: [0.5, 0.5]})
        sess.run(ops["sub"], {p.outputs[0]: [1.0, 0.0]})
        np.testing.assert_array_equal(sess.run(ops["read"].outputs[0]), [2.5, 1.5])
        assert id(sess._state.resources[("", "w")]) == buf  # in place
        sess.run(ops["sgd"], {p.outputs[0]: [2.0, 1.0], lr.outputs[0]: 0.5})
        np.testing.assert_array_equal(sess.run(ops["read"].outputs[0]), [1.5, 1.0])
        assert id(sess._state.resources[("", "w")]) == buf  # nothing held it: in place
        # the read runs before the update (a control edge) and is fetched with it: it keeps the
        # value it read, as TensorFlow's resource variables do
        got, _ = sess.run([ops["read"].outputs[0], ops["sgd"]],
                          {p.outputs[0]: [2.0, 2.0], lr.outputs[0]: 0.25})
        np.testing.assert_array_equal(got, [1.5, 1.0])
        np.testing.assert_array_equal(sess.run(ops["read"].outputs[0]), [1.0, 0.5])
        sess.run(ops["destroy"])
        assert sess.run(ops["init"].outputs[0]) == False  # noqa: E712


# --- against the CPU kernels on random inputs -------------------------------------------------
def _node_def(op, n_slots, t, **attrs):
    from mgrt.protos import node_def_pb2
    from mgrt.runtime import op_defs

    od = op_defs.default_registry().get(op)
    nd = node_def_pb2.NodeDef(name=op, op=op)
    for a in od.input_arg:
        nd.input.append(a.name)
    nd.attr["T"].type = t
    for k, v in attrs.items():
        nd.attr[k].b = v
    return nd


_HYPER = {"lr": 0.05, "alpha": 0.1, "l1": 0.01, "l2": 0.02, "momentum": 0.9, "beta1": 0.9,
          "beta2": 0.999, "epsilon": 1e-3, "beta1_power": 0.9 ** 3, "beta2_power": 0.999 ** 3,
          "rho": 0.95, "sign_decay": 0.5, "beta": 0.9, "logbase": 0.7, "l2_shrinkage": 0.03,
          "lr_power": -0.5}
_FAMILY_ATTRS = {"Momentum": {"use_nesterov": True}, "Adam": {"use_nesterov": True},
                 "Ftrl": {"multiply_linear_by_lr": True}}


def _run_family(op, device_type, device, dtype, values, attrs, rows=None):
    from mgrt.kernels_cpu import state_ops as cpu_state
    from mgrt.runtime import op_defs

    t = dtypes.as_dtype(dtype).as_datatype_enum
    nd = _node_def(op, 0, t, **attrs)
    if rows is not None:
        nd.attr["Tindices"].type = dtypes.int32.as_datatype_enum
    node = kernel_node(nd)
    node.device = device
    kd = kernel_registry.lookup(op, device_type, node.attrs)
    names = [a.name for a in op_defs.default_registry().get(op).input_arg]
    family = op.replace("ResourceSparseApply", "").replace("SparseApply", "") \
        .replace("ResourceApply", "").replace("Apply", "")
    n_state = len(cpu_state._SPECS[family].slots) + 1
    store = {}
    args = []
    put = (lambda x: x) if device_type == "CPU" else device.put
    for k, name in enumerate(names):
        if k < n_state:
            store[("", name)] = put(values[name])
            args.append(Ref(store, ("", name), name))
        elif name == "indices":
            args.append(rows)
        else:
            args.append(put(values[name]))
    with np.errstate(all="ignore"):
        kd.builder(node, None)(*args)
    get = (lambda x: x) if device_type == "CPU" else device.fetch
    return [get(store[("", n)]) for n in names[:n_state]]


FAMILIES = ["GradientDescent", "ProximalGradientDescent", "Momentum", "Adam", "AdaMax",
            "RMSProp", "CenteredRMSProp", "Adagrad", "AdagradV2", "ProximalAdagrad", "Adadelta",
            "AddSign", "PowerSign", "Ftrl", "FtrlV2"]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("family", FAMILIES)
def test_dense_updates_agree_with_the_cpu(family, dtype, gpu, monkeypatch):
    from mgrt.runtime import op_defs

    op = "Apply" + family
    names = [a.name for a in op_defs.default_registry().get(op).input_arg]
    rng = np.random.default_rng(len(family))
    npdt = np.dtype(dtype)
    shape = (3, 5)
    values = {}
    for name in names:
        if name in _HYPER:
            values[name] = np.asarray(_HYPER[name], npdt)
        elif name in ("accum", "ms", "v", "accum_update", "vhat"):
            values[name] = rng.uniform(0.1, 1.0, shape).astype(npdt)
        else:
            values[name] = rng.standard_normal(shape).astype(npdt)
    attrs = {} if family not in _FAMILY_ATTRS else _FAMILY_ATTRS[family]
    if family == "FtrlV2":
        attrs = {}
    if dtype == "float16":
        # float16 computes in float32 and rounds once: the CPU kernel in float32, rounded
        # (the CPU's float16 kernel rounds after every operation)
        as32 = {k: v.astype(np.float32) for k, v in values.items()}
        want = [w.astype(np.float16) for w in
                _run_family(op, "CPU", None, np.float32, as32, attrs)]
    else:
        want = _run_family(op, "CPU", None, npdt, values, attrs)
    rtol = {"float16": 1e-3, "float32": 2e-5, "float64": 1e-12}[dtype]
    for limit in ("4096", "0"):  # the numba kernel (float32/64), then the array-module path
        monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", limit)
        got = _run_family(op, "GPU", gpu, npdt, values, attrs)
        for g_, w in zip(got, want):
            assert g_.dtype == w.dtype
            np.testing.assert_allclose(g_.astype(np.float64), w.astype(np.float64), rtol=rtol,
                                       atol=rtol, err_msg=f"{op} {dtype} limit {limit}")


@pytest.mark.parametrize("family", ["Momentum", "RMSProp", "Adagrad", "Adadelta", "FtrlV2"])
def test_sparse_updates_with_repeated_rows_agree_with_the_cpu(family, gpu):
    from mgrt.runtime import op_defs

    op = "SparseApply" + family
    names = [a.name for a in op_defs.default_registry().get(op).input_arg]
    rng = np.random.default_rng(7)
    rows = np.array([3, 0, 3, 5, 3, 0], np.int32)
    values = {}
    for name in names:
        if name in _HYPER:
            values[name] = np.asarray(_HYPER[name], np.float32)
        elif name == "grad":
            values[name] = rng.standard_normal((rows.size, 4)).astype(np.float32)
        elif name in ("accum", "ms", "accum_update"):
            values[name] = rng.uniform(0.1, 1.0, (6, 4)).astype(np.float32)
        elif name != "indices":
            values[name] = rng.standard_normal((6, 4)).astype(np.float32)
    want = _run_family(op, "CPU", None, np.float32, values, {}, rows=rows)
    got = _run_family(op, "GPU", gpu, np.float32, values, {}, rows=rows)
    for g_, w in zip(got, want):
        np.testing.assert_allclose(g_, w, rtol=2e-5, atol=1e-6)
