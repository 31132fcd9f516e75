"""mgrt.runtime.placer against TensorFlow's recorded placements, and mgrt's stated rules.

``tests/fixtures/placer/placer_fixtures.json`` was written by real TensorFlow 2.21 on a CPU-only
host (``make_placer_fixtures.py`` next to it; see its docstring). What TensorFlow can tell there
is compared exactly: its strict errors, its ``log_device_placement`` lines and their order, soft
placement of GPU-pinned nodes and of indexes the host lacks, colocation through ``_class`` and
through reference and resource edges, its placement heuristics, every fixture model. With
``device_count={"CPU": 2}`` TensorFlow has two devices of one type, which stand in for a host
with two GPUs where index rules are concerned.

What TensorFlow cannot show on this host (two device types, GPU preference, GPU index soft
placement, host memory on a GPU) is checked against mgrt's stated rules with fake GPU devices,
and where mgrt deliberately differs from TensorFlow (remote jobs re-targeted under soft
placement) the test says so.
"""

import base64
import io
import json
import os

import numpy as np
import pytest

from mgrt import devices as devices_lib
from mgrt.devices import CPUDevice, Device
from mgrt.protos import graph_pb2
from mgrt.runtime import graph as graph_lib
from mgrt.runtime import placer
from mgrt.runtime.errors import InvalidArgumentError
from mgrt.runtime.importer import import_graph_def
from mgrt.runtime.meta_graph import import_meta_graph

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "fixtures", "placer", "placer_fixtures.json")
with open(FIXTURE) as _f:
    TF = json.load(_f)
CASES = {c["case"]: c for c in TF["cases"]}

CPU0 = "/job:localhost/replica:0/task:0/device:CPU:0"
CPU1 = "/job:localhost/replica:0/task:0/device:CPU:1"
GPU0 = "/job:localhost/replica:0/task:0/device:GPU:0"
GPU1 = "/job:localhost/replica:0/task:0/device:GPU:1"


def every_kernel(op, device_type):
    return True


class Config:
    def __init__(self, **device_count):
        self.device_count = device_count


class FakeGPU(Device):
    """A GPU as the placer sees it: its buffers are not host memory."""

    is_host_memory = False

    def __init__(self, index=0):
        super().__init__("GPU", index)

    @property
    def xp(self):
        return np

    def put(self, host_array):
        return ("gpu", np.array(host_array))

    def fetch(self, buffer):
        return buffer[1]

    def synchronize(self):
        pass

    def memory_info(self):
        return {"total": None, "free": None, "used": None}


def host(n_gpu=2, n_cpu=1):
    return [CPUDevice(i) for i in range(n_cpu)] + [FakeGPU(i) for i in range(n_gpu)]


class Kernel:
    """A KernelDef-like answer of has_kernel."""

    def __init__(self, host_memory=(), device_memory=()):
        self.host_memory = frozenset(host_memory)
        self.device_memory = frozenset(device_memory)

    def __bool__(self):
        return True


def kernels(cpu_only=(), gpu_only=(), nowhere=(), gpu_kernels=None):
    """has_kernel: every op type on CPU and GPU except those listed; ``gpu_kernels`` maps op
    types to the Kernel returned for the GPU."""
    gpu_kernels = gpu_kernels or {}

    def has_kernel(op, device_type):
        if op.type in nowhere:
            return False
        if device_type == "GPU":
            if op.type in cpu_only:
                return False
            return gpu_kernels.get(op.type, True)
        return op.type not in gpu_only

    return has_kernel


def quiet(**kw):
    kw.setdefault("stream", io.StringIO())
    return kw


# --- building small graphs ------------------------------------------------------------------


def _node(gd, name, op, inputs=(), device="", **attrs):
    nd = gd.node.add(name=name, op=op, device=device)
    nd.input.extend(inputs)
    for k, v in attrs.items():
        av = nd.attr[k]
        if isinstance(v, list) and k.startswith("T"):
            av.list.type.extend(v)
        elif k in ("T", "dtype", "out_type", "Tshape", "Tparams", "Tindices", "Taxis"):
            av.type = v
        elif k == "shape":
            av.shape.SetInParent()
            for d in v:
                av.shape.dim.add(size=d)
        elif k == "value":
            dtype, values = v
            av.tensor.dtype = dtype
            if dtype == 1:
                av.tensor.float_val.extend(values)
            elif dtype == 3:
                av.tensor.int_val.extend(values)
            elif dtype == 7:
                av.tensor.string_val.extend(values)
            av.tensor.tensor_shape.SetInParent()
            if len(values) != 1:
                av.tensor.tensor_shape.dim.add(size=len(values))
        elif k == "_class":
            av.list.s.extend(v)
        elif k == "N":
            av.i = v
        else:
            raise KeyError(k)
    return nd


FLOAT, INT32, STRING, RESOURCE = 1, 3, 7, 20


def build(spec):
    """A Graph from ``[(name, op, inputs, device, attrs), ...]`` with a few shorthands."""
    gd = graph_pb2.GraphDef()
    for name, op, inputs, device, attrs in spec:
        _node(gd, name, op, inputs, device, **attrs)
    g = graph_lib.Graph()
    with g.as_default():
        import_graph_def(gd, name="")
    return g


def const(name, device="", value=1.0, dtype=FLOAT, **extra):
    return (name, "Const", [], device, dict(dtype=dtype, value=(dtype, [value]), **extra))


def add(name, a, b, device="", **extra):
    return (name, "AddV2", [a, b], device, dict(T=FLOAT, **extra))


def ident(name, a, device="", **extra):
    return (name, "Identity", [a], device, dict(T=FLOAT, **extra))


def set_devices(g, devices):
    for op in g.get_operations():
        op._set_device(devices.get(op.name, ""))


def lines_of(placement):
    return [line.split(": ") for line in placement.log_lines()]


def tf_lines(placed):
    return [[name, f"({op})", dev] for name, op, dev in placed]


# --- TensorFlow's recordings: small graphs --------------------------------------------------

# Where mgrt deliberately differs from TensorFlow: under soft placement TensorFlow fails on a
# node pinned to another job, replica or task; mgrt re-targets it to this host.
RETARGETED = {
    "remote_job": {"b": CPU0},
    "remote_job_cpu": {"b": CPU0},
    "remote_task": {"b": CPU0},
    "coloc_job_conflict": {"b": CPU0},
}


def _tf_graph(case):
    gd = graph_pb2.GraphDef()
    gd.ParseFromString(base64.b64decode(case["graph_def"]))
    g = graph_lib.Graph()
    with g.as_default():
        import_graph_def(gd, name="")
    set_devices(g, case["devices"])
    return g


def _tf_core(message):
    """TensorFlow's message up to where mgrt's own hint starts (TensorFlow's says that CUDA is
    not enabled in its build; mgrt's that this host has no GPU it can use)."""
    return message.split(" The requested device appears to be a GPU")[0]


@pytest.mark.parametrize("case,mode", [(c["case"], m) for c in TF["cases"] for m in c["runs"]])
def test_tensorflow_case(case, mode):
    c = CASES[case]
    rec = c["runs"][mode]
    g = _tf_graph(c)
    devs = devices_lib.list_devices(Config(CPU=c["cpus"]))
    stream = io.StringIO()
    soft = mode == "soft"
    if case in RETARGETED and soft:
        assert rec["error"] is not None and "was explicitly assigned to" in rec["error"]["message"]
        p = placer.place(g, devs, every_kernel, allow_soft_placement=True,
                         log_device_placement=True, stream=stream)
        for name, dev in RETARGETED[case].items():
            assert p.device_of(name).name == dev
        assert [m.op.name for m in p.moved] == list(RETARGETED[case])
        # a GPU this host lacks, or a device it has but in another job, replica or task
        assert p.moved[0].reason == ("no such device on this host" if case == "remote_job" else
                                     "another job, replica or task: re-targeted to this host")
        # the colocation request TensorFlow drops (and says so) is dropped here too
        info = [ln for ln in stream.getvalue().splitlines() if ln.startswith("Ignoring")]
        assert info == rec["info"]
        return
    if rec["error"] is not None:
        with pytest.raises(InvalidArgumentError) as e:
            placer.place(g, devs, every_kernel, allow_soft_placement=soft, **quiet())
        assert str(e.value).startswith(_tf_core(rec["error"]["message"]))
        return
    p = placer.place(g, devs, every_kernel, allow_soft_placement=soft,
                     log_device_placement=True, stream=stream)
    assert lines_of(p) == tf_lines(rec["placed"])
    out = stream.getvalue().splitlines()
    info = [ln for ln in out if ln.startswith("Ignoring")]
    assert info == rec["info"]
    # the log: the info lines, then one line per node, TensorFlow's format
    assert out[len(info):len(info) + len(rec["placed"])] == [
        f"{n}: ({t}): {d}" for n, t, d in rec["placed"]]


def test_strict_error_text_is_tensorflows():
    c = CASES["gpu_pinned"]
    with pytest.raises(InvalidArgumentError) as e:
        placer.place(_tf_graph(c), devices_lib.list_devices(), every_kernel,
                     allow_soft_placement=False, **quiet())
    msg = str(e.value)
    assert msg.startswith(
        "Cannot assign a device for operation b: {{node b}} was explicitly assigned to "
        "/device:GPU:0 but available devices are [ /job:localhost/replica:0/task:0/device:CPU:0 "
        "]. Make sure the device specification refers to a valid device.")
    assert "this host has no GPU that mgrt can use" in msg
    assert "allow_soft_placement=True" in msg
    assert e.value.op.name == "b"


def test_log_format_matches_tensorflow(capsys):
    """TensorFlow prints ``name: (Op): device`` with printf (stdout) and again through its
    logger; mgrt prints the same lines once, to stderr."""
    rec = TF["log_format"]
    g = _tf_graph(dict(CASES["gpu_partial"], devices={"b": "/device:GPU:0"}))
    placer.place(g, devices_lib.list_devices(), every_kernel, log_device_placement=True)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert "\n".join(lines[:-1]) + "\n" == rec["stdout"]
    for line, tf_line in zip(lines, rec["stderr_placer_lines"]):
        assert tf_line.endswith("placer.cc:162] " + line)
    assert lines[-1].startswith("mgrt: soft placement moved 1 of 4 nodes: 1 pinned to "
                                "/device:GPU:0 -> " + CPU0)


def test_out_of_order_graph_is_ordered_as_tensorflow():
    c = CASES["out_of_order"]
    g = _tf_graph(c)
    gd = graph_pb2.GraphDef()
    gd.ParseFromString(base64.b64decode(c["graph_def"]))
    file_order = [g.get_operation_by_name(nd.name) for nd in gd.node]  # consumers first
    assert file_order[0].name == "c"
    p = placer.place(file_order, devices_lib.list_devices(), every_kernel, **quiet())
    assert lines_of(p) == tf_lines(c["runs"]["soft"]["placed"])


# --- TensorFlow's recordings: the fixture models --------------------------------------------

MODEL_RUNS = [(model, imp, mode) for model, m in sorted(TF["models"].items())
              for imp in m["imports"] for mode in m["imports"][imp]["runs"]]


def _model_graph(model, imp):
    m = TF["models"][model]
    path = os.path.join(HERE, "fixtures", "models", m["folder"], m["meta"])
    if not os.path.exists(path):
        pytest.skip(f"{path} is not in this checkout")
    g = graph_lib.Graph()
    with g.as_default():
        import_meta_graph(path, clear_devices=(imp == "clear_devices"))
    return g


@pytest.mark.parametrize("model,imp,mode", MODEL_RUNS)
def test_fixture_model(model, imp, mode):
    rec = TF["models"][model]["imports"][imp]["runs"][mode]
    g = _model_graph(model, imp)
    soft = mode == "soft"
    devs = devices_lib.list_devices()
    if rec["error"] is not None and soft:
        # gpu_train: every node pinned to /job:worker/...; TensorFlow fails, mgrt re-targets
        assert "/job:worker" in rec["error"]["message"]
        stream = io.StringIO()
        p = placer.place(g, devs, every_kernel, stream=stream)
        assert {d.name for _, d in p} == {CPU0}
        assert len(p.moved) == len(g.get_operations())
        warning = stream.getvalue().strip()
        assert "\n" not in warning
        return
    if rec["error"] is not None:
        with pytest.raises(InvalidArgumentError) as e:
            placer.place(g, devs, every_kernel, allow_soft_placement=False, **quiet())
        assert str(e.value).startswith(_tf_core(rec["error"]["message"]))
        return
    stream = io.StringIO()
    p = placer.place(g, devs, every_kernel, allow_soft_placement=soft, stream=stream)
    assert lines_of(p) == tf_lines(rec["placed"])
    assert not p.moved and stream.getvalue() == ""


def test_gpu_train_warning_line():
    g = _model_graph("gpu_train", "plain")
    stream = io.StringIO()
    p = placer.place(g, devices_lib.list_devices(), every_kernel, stream=stream)
    n = len(g.get_operations())
    worker = "/job:worker/replica:0/task:0/device:"
    n_cpu = sum(1 for op in g.get_operations() if op.device == worker + "CPU:0")
    assert stream.getvalue() == (
        f"mgrt: soft placement moved {n} of {n} nodes: {n - n_cpu} pinned to {worker}GPU:0 -> "
        f"{CPU0} (no such device on this host); {n_cpu} pinned to {worker}CPU:0 -> {CPU0} "
        f"(another job, replica or task: re-targeted to this host). "
        f"GPUs: {devices_lib.gpu_status()}\n")
    assert p.warning() == stream.getvalue().strip()
    assert "no GPU" in devices_lib.gpu_status()  # says why there is none (CuPy, driver ...)


@pytest.mark.parametrize("imp", ["plain", "clear_devices"])
def test_gpu_train_on_a_two_gpu_host(imp):
    """The model was pinned to /job:worker/.../GPU:0: on a host with GPUs it lands on GPU:0,
    except what has no GPU kernel (here: the save ops, pinned to the CPU anyway)."""
    g = _model_graph("gpu_train", imp)
    no_gpu = {"SaveV2", "RestoreV2", "MergeV2Checkpoints", "StringJoin", "ShardedFilename"}
    p = placer.place(g, host(2), kernels(cpu_only=no_gpu), **quiet())
    for op, d in p:
        if op.type in no_gpu:
            assert d.name == CPU0, op.name
    on_gpu = [op for op, d in p if d.name == GPU0]
    assert len(on_gpu) > len(g.get_operations()) // 2
    assert not [op for op, d in p if d.name == GPU1]
    # variables and everything colocated with them share a device
    for group in p.colocation_groups():
        assert len({p.device_of(op) for op in group}) == 1


# --- mgrt's rules with two device types -------------------------------------------------------


def test_gpu_preferred_when_unpinned():
    g = build([const("a"), add("b", "a", "a"), ident("c", "b", device="/cpu:0")])
    p = placer.place(g, host(2), every_kernel, **quiet())
    assert p.device_of("b").name == GPU0
    assert p.device_of("c").name == CPU0
    # the Const has one consumer (on the GPU): it goes with it
    assert p.device_of("a").name == GPU0
    assert not p.moved


def test_cpu_when_no_gpu_kernel():
    g = build([const("a"), add("b", "a", "a"), ident("c", "b")])
    p = placer.place(g, host(2), kernels(cpu_only={"AddV2"}), **quiet())
    # c, an unpinned Identity with one input and no consumer, goes with its input
    # (TensorFlow's MatchIdentityOperation)
    assert [p.device_of(n).name for n in "abc"] == [CPU0, CPU0, CPU0]
    g = build([const("a"), add("b", "a", "a"), ("c", "Neg", ["b"], "", dict(T=FLOAT))])
    p = placer.place(g, host(2), kernels(cpu_only={"AddV2"}), **quiet())
    assert [p.device_of(n).name for n in "abc"] == [CPU0, CPU0, GPU0]


def test_gpu_index_rules():
    g = build([const("a"), add("b", "a", "a", device="/device:GPU:1"),
               add("c", "b", "b", device="/gpu:3"), add("d", "c", "c", device="/device:GPU:*")])
    p = placer.place(g, host(2), every_kernel, **quiet())
    assert p.device_of("b").name == GPU1
    # an index this host lacks: the lowest one of the type (TensorFlow's soft placement picks
    # the first device of the preferred type, the same one)
    assert p.device_of("c").name == GPU0
    assert p.device_of("d").name == GPU0
    assert [(m.op.name, m.requested, m.assigned.name, m.reason) for m in p.moved] == [
        ("c", "/device:GPU:3", GPU0, "no such device on this host")]
    with pytest.raises(InvalidArgumentError) as e:
        placer.place(g, host(2), every_kernel, allow_soft_placement=False, **quiet())
    assert str(e.value).startswith(
        f"Cannot assign a device for operation c: {{{{node c}}}} was explicitly assigned to "
        f"/device:GPU:3 but available devices are [ {CPU0}, {GPU0}, {GPU1} ]. Make sure the "
        f"device specification refers to a valid device.")
    assert "appears to be a GPU" not in str(e.value)


def test_soft_placement_keeps_the_device_type():
    """/cpu:1 on a host with one CPU and GPUs: mgrt keeps the CPU (TensorFlow would drop the
    type with the index and take GPU:0)."""
    g = build([const("a"), add("b", "a", "a", device="/cpu:1")])
    p = placer.place(g, host(2), every_kernel, **quiet())
    assert p.device_of("b").name == CPU0
    assert p.moved[0].reason == "no such device on this host"


def test_no_gpu_kernel_soft_and_strict():
    g = build([const("a"), add("b", "a", "a", device="/device:GPU:0")])
    has = kernels(cpu_only={"AddV2"})
    p = placer.place(g, host(1), has, **quiet())
    assert p.device_of("b").name == CPU0
    assert [(m.op.name, m.reason) for m in p.moved] == [("b", "no GPU kernel for AddV2")]
    with pytest.raises(InvalidArgumentError) as e:
        placer.place(g, host(1), has, allow_soft_placement=False, **quiet())
    assert str(e.value).startswith(
        "Cannot assign a device for operation b: Could not satisfy explicit device "
        "specification '/device:GPU:0' because no supported kernel for GPU devices is "
        "available.")
    assert "'b' (AddV2)" in str(e.value)


def test_remote_job_is_retargeted_keeping_type_and_index():
    g = build([const("a"), add("b", "a", "a", device="/job:worker/replica:0/task:3/device:GPU:1"),
               add("c", "b", "b", device="/job:ps/task:0/device:CPU:0")])
    stream = io.StringIO()
    p = placer.place(g, host(2), every_kernel, stream=stream)
    assert p.device_of("b").name == GPU1
    assert p.device_of("c").name == CPU0
    assert [m.op.name for m in p.moved] == ["b", "c"]
    assert stream.getvalue().startswith("mgrt: soft placement moved 2 of 3 nodes: ")
    assert stream.getvalue().count("\n") == 1
    with pytest.raises(InvalidArgumentError, match="was explicitly assigned to /job:worker"):
        placer.place(g, host(2), every_kernel, allow_soft_placement=False, **quiet())
    # another name for this process is this process
    p = placer.place(g, host(2), every_kernel, job="worker", task=3, **quiet())
    assert [m.op.name for m in p.moved] == ["c"]


def test_colocation_type_conflict_soft_goes_where_all_have_kernels():
    """TensorFlow's MergeDevNames under soft placement: a type conflict drops the type and the
    index, so the group goes to the preferred device with kernels for all (GPU first)."""
    spec = [const("a", device="/device:CPU:0"),
            ident("b", "a", device="/device:GPU:0", _class=[b"loc:@a"])]
    g = build(spec)
    set_devices(g, {"a": "/device:CPU:0", "b": "/device:GPU:0"})  # undo the importer's rewrite
    p = placer.place(g, host(2), every_kernel, **quiet())
    assert p.device_of("a").name == p.device_of("b").name == GPU0
    assert [(m.op.name, m.reason) for m in p.moved] == [
        ("a", "colocated with 'b', which asks for /device:GPU:0")]
    p = placer.place(g, host(2), kernels(cpu_only={"Identity"}), **quiet())
    assert p.device_of("a").name == p.device_of("b").name == CPU0
    assert p.moved[0].op.name == "b"
    assert p.moved[0].reason == "no GPU kernel for Identity"
    with pytest.raises(InvalidArgumentError, match="Cannot merge devices with incompatible types"):
        placer.place(g, host(2), every_kernel, allow_soft_placement=False, **quiet())


def test_colocation_id_conflict_soft_takes_the_lowest_index():
    g = build([const("a"), ident("b", "a", _class=[b"loc:@a"])])
    set_devices(g, {"a": "/device:GPU:1", "b": "/device:GPU:0"})
    p = placer.place(g, host(2), every_kernel, **quiet())
    assert p.device_of("a").name == p.device_of("b").name == GPU0


def test_group_without_common_device_type():
    g = build([const("a"), ident("b", "a", _class=[b"loc:@a"])])
    has = kernels(cpu_only={"Const"}, gpu_only={"Identity"})
    with pytest.raises(InvalidArgumentError, match="no device type supports both"):
        placer.place(g, host(1), has, allow_soft_placement=False, **quiet())
    stream = io.StringIO()
    p = placer.place(g, host(1), has, log_device_placement=True, stream=stream)
    assert p.device_of("a").name == CPU0 and p.device_of("b").name == GPU0
    assert [(op.name, grp) for op, grp, _ in p.ignored_colocations] == [("b", "a")]
    assert "Ignoring request to colocate node 'b' with nodes in colocation group 'a'" in \
        stream.getvalue()


def _variable_graph(var_device="", assign_device="", read_device=""):
    return build([
        ("v", "VariableV2", [], var_device, dict(dtype=FLOAT, shape=[])),
        const("v/initial_value"),
        ("v/Assign", "Assign", ["v", "v/initial_value"], assign_device, dict(T=FLOAT)),
        ident("v/read", "v", device=read_device),
        add("y", "v/read", "v/read"),
    ])


def test_ref_edges_colocate_with_the_variable():
    g = _variable_graph(var_device="/device:GPU:1", assign_device="/device:CPU:0")
    stream = io.StringIO()
    p = placer.place(g, host(2), every_kernel, log_device_placement=True, stream=stream)
    assert p.device_of("v/Assign").name == GPU1
    # Identity reads the ref through a non-ref input: not colocated, GPU:0 preferred
    assert p.device_of("v/read").name == GPU0
    assert "Ignoring device specification /device:CPU:0 for node 'v/Assign' because the input " \
           "edge from 'v' is a reference connection and already has a device field set to " \
           "/device:GPU:1" in stream.getvalue()
    assert [m.op.name for m in p.moved] == ["v/Assign"]
    # the same under strict placement (as TensorFlow)
    p = placer.place(g, host(2), every_kernel, allow_soft_placement=False, **quiet())
    assert p.device_of("v/Assign").name == GPU1


def test_ref_consumer_without_gpu_kernel_takes_the_variable_to_cpu():
    g = _variable_graph(var_device="/device:GPU:0")
    p = placer.place(g, host(1), kernels(cpu_only={"Assign"}), **quiet())
    assert p.device_of("v").name == p.device_of("v/Assign").name == CPU0
    assert [(m.op.name, m.reason) for m in p.moved] == [
        ("v", "colocated with 'v/Assign' (Assign), which has no GPU kernel")]
    with pytest.raises(InvalidArgumentError, match="no supported kernel for GPU devices"):
        placer.place(g, host(1), kernels(cpu_only={"Assign"}), allow_soft_placement=False,
                     **quiet())


def test_ref_edge_without_common_device_type_is_an_error():
    g = _variable_graph()
    with pytest.raises(InvalidArgumentError, match="reference or resource connection"):
        placer.place(g, host(1), kernels(cpu_only={"Assign"}, gpu_only={"VariableV2"}),
                     **quiet())


def test_resource_edges():
    g = build([
        ("h", "VarHandleOp", [], "/device:GPU:1", dict(dtype=FLOAT, shape=[])),
        ("read", "ReadVariableOp", ["h"], "/device:CPU:0", dict(dtype=FLOAT)),
        ("idn", "IdentityN", ["h"], "/device:CPU:0", dict(T=[RESOURCE])),
    ])
    p = placer.place(g, host(2), every_kernel, **quiet())
    assert p.device_of("read").name == GPU1
    assert p.device_of("idn").name == CPU0  # exempt, as in TensorFlow
    assert p.input_host_memory("read") == (True,)  # a resource handle lives in host memory


def test_unknown_kernel_is_not_a_placement_error():
    g = build([const("a"), add("b", "a", "a", device="/device:GPU:0"), ident("c", "b")])
    for soft in (True, False):
        p = placer.place(g, host(1), kernels(nowhere={"AddV2"}), allow_soft_placement=soft,
                         **quiet())
        assert [op.name for op in p.missing_kernels] == ["b"]
        assert p.device_of("b").name == GPU0
    p = placer.place(g, host(0), kernels(nowhere={"AddV2"}), **quiet())
    assert p.device_of("b").name == CPU0
    assert "No kernel on any device of this host: 1 nodes of 1 op types: AddV2" in p.summary()


def test_metadata_and_identity_heuristics_with_gpus():
    g = build([
        ("x", "Placeholder", [], "", dict(dtype=FLOAT)),
        add("y", "x", "x", device="/device:CPU:0"),
        ("shape", "Shape", ["y"], "", dict(T=FLOAT, out_type=INT32)),
        ident("i", "y"),
        ("z", "Neg", ["i"], "/device:CPU:0", dict(T=FLOAT)),
        ident("i2", "y"),
        add("z2", "i2", "i2", device="/device:CPU:0"),
        add("w", "y", "y"),
    ])
    p = placer.place(g, host(2), every_kernel, **quiet())
    assert p.device_of("shape").name == CPU0  # with its input
    assert p.device_of("i").name == CPU0  # an Identity between two CPU nodes
    assert p.device_of("i2").name == GPU0  # two edges out: no heuristic (as TensorFlow)
    assert p.device_of("w").name == GPU0  # no heuristic: GPU preferred
    assert p.device_of("x").name == CPU0  # a generator goes with its consumers


# --- host memory ----------------------------------------------------------------------------


def test_host_memory_on_gpu():
    g = build([
        ("x", "Placeholder", [], "", dict(dtype=FLOAT)),
        ("shape", "Shape", ["x"], "/device:GPU:0", dict(T=FLOAT, out_type=INT32)),
        ("r", "Reshape", ["x", "shape"], "/device:GPU:0", dict(T=FLOAT, Tshape=INT32)),
        const("k", device="/device:GPU:0", value=3, dtype=INT32),
        ("g", "GatherV2", ["x", "k", "k"], "/device:GPU:0",
         dict(Tparams=FLOAT, Tindices=INT32, Taxis=INT32)),
        const("s", device="/device:GPU:0", value=b"a", dtype=STRING),
        ("c", "Const", [], "/device:CPU:0", dict(dtype=FLOAT, value=(FLOAT, [1.0]))),
        add("y", "r", "c", device="/device:GPU:0"),
    ])
    has = kernels(gpu_kernels={"Reshape": Kernel(host_memory={"shape"}),
                               "GatherV2": Kernel(host_memory={"axis"},
                                                  device_memory={"indices"})})
    p = placer.place(g, host(1), has, **quiet())
    cpu, gpu = p.host_device, p.device_of("r")
    assert (cpu.name, gpu.name) == (CPU0, GPU0)
    # int32 outputs of GPU kernels live in host memory
    assert p.output_host_memory("shape") == (True,)
    assert p.input_host_memory("shape") == (False,)
    assert p.input_host_memory("r") == (False, True)  # the kernel's host_memory arg
    assert p.output_host_memory("r") == (False,)
    assert p.output_host_memory("k") == (True,)
    assert p.output_host_memory("s") == (True,)  # strings always live in host memory
    # an int32 arg the kernel wants on the device (device_memory), one it wants on the host
    assert p.input_host_memory("g") == (False, False, True)
    # on the CPU everything is host memory
    assert p.input_host_memory("y") == (False, False)
    assert p.output_host_memory("c") == (True,)
    assert p.output_device(g.get_operation_by_name("shape"), 0) is cpu
    assert p.input_device("r", 1) is cpu and p.input_device("r", 0) is gpu
    shape_t = g.get_tensor_by_name("shape:0")
    x_t = g.get_tensor_by_name("x:0")
    c_t = g.get_tensor_by_name("c:0")
    r_op = g.get_operation_by_name("r")
    assert not p.needs_copy(shape_t, r_op, 1)  # host to host memory
    assert p.needs_copy(c_t, g.get_operation_by_name("y"), 1)  # CPU to GPU
    assert p.device_of("x").name == GPU0 and not p.needs_copy(x_t, r_op, 0)
    assert "host memory: inputs [1], outputs []" in p.summary(verbose=True)


def test_host_memory_only_on_non_host_devices():
    g = build([("shape", "Shape", ["x"], "", dict(T=FLOAT, out_type=INT32)),
               ("x", "Placeholder", [], "", dict(dtype=FLOAT))])
    p = placer.place(g, host(0), every_kernel, **quiet())
    assert p.output_host_memory("shape") == (True,)
    assert p.input_host_memory("shape") == (True,)
    assert p._host_memory == {}


# --- the Placement object -------------------------------------------------------------------


def test_placement_api():
    g = build([const("a"), add("b", "a", "a"), ident("c", "b", _class=[b"loc:@b"]),
               add("d", "c", "c", device="/device:CPU:0")])
    p = placer.place(g, host(1), every_kernel, **quiet())
    b = g.get_operation_by_name("b")
    assert p.device_of(b) is p.device_of("b") is p.device_of("b:0") is p.device_of(b.outputs[0])
    assert p["c"].name == GPU0
    assert "b" in p and "nope" not in p and len(p) == 4
    with pytest.raises(KeyError, match="nope"):
        p.device_of("nope")
    assert [op.name for op in p.group_of("c")] == ["b", "c"]
    assert [[op.name for op in grp] for grp in p.colocation_groups()] == [["b", "c"]]
    assert {d.name: [op.name for op in ops] for d, ops in p.by_device().items()} == {
        CPU0: ["d"], GPU0: ["a", "b", "c"]}
    assert [op.name for op in p.order] == ["b", "c", "d", "a"]
    assert p.log_lines()[0] == f"b: (AddV2): {GPU0}"
    assert p.warning() is None and p.moved == []
    assert p.as_dict() == {"a": GPU0, "b": GPU0, "c": GPU0, "d": CPU0}
    assert p.requested_spec("d").to_string() == CPU0
    assert p.requested_spec("a").to_string() == "/job:localhost/replica:0/task:0"
    text = p.summary()
    assert text.splitlines()[0] == "Placement of 4 nodes on 2 devices (soft placement on)"
    assert f"  {GPU0}: 3 nodes" in text and f"  {CPU0}: 1 nodes (AddV2 1)" in text
    assert "Colocation groups: 1 of more than one node" in text
    assert f"  d: (AddV2): {CPU0}" in p.summary(verbose=True)
    assert repr(p) == "<Placement 4 nodes (/device:CPU:0: 1, /device:GPU:0: 3), 0 moved>"


def test_subset_of_ops():
    g = build([const("a"), add("b", "a", "a", device="/device:GPU:0"), ident("c", "b")])
    ops = [g.get_operation_by_name(n) for n in ("a", "b")]
    p = placer.place(ops, host(1), every_kernel, **quiet())
    assert len(p) == 2 and "c" not in p
    assert p.device_of("a").name == GPU0


def test_malformed_device_names_the_node():
    g = build([const("a")])
    g.get_operation_by_name("a")._node_def.device = "/job:/device:GPU:0"
    with pytest.raises(InvalidArgumentError, match="node 'a'"):
        placer.place(g, host(1), every_kernel, **quiet())


def test_needs_a_device():
    with pytest.raises(ValueError, match="at least one device"):
        placer.place(build([const("a")]), [], every_kernel)


def test_warning_summarises_many_kinds_of_moves():
    spec = [const("a")]
    for k in range(5):
        spec.append(add(f"n{k}", "a", "a", device=f"/job:w{k}/device:CPU:0"))
    stream = io.StringIO()
    p = placer.place(build(spec), host(0), every_kernel, stream=stream)
    w = stream.getvalue()
    assert w.count("\n") == 1 and len(p.moved) == 5
    assert w.strip().endswith("2 more in 2 other ways (Placement.moved lists every node)")
    quiet_stream = io.StringIO()
    placer.place(build(spec), host(0), every_kernel, stream=quiet_stream, warn=False)
    assert quiet_stream.getvalue() == ""


# --- the default has_kernel: mgrt's kernel registry -------------------------------------------


def test_registry_has_kernel(monkeypatch):
    """The registry is replaced by a small one here (the CPU kernels are not loaded)."""
    from mgrt.runtime import dtypes, kernel_registry

    reg = {}
    monkeypatch.setattr(kernel_registry, "_REGISTRY", reg)
    monkeypatch.setattr(kernel_registry, "load_all", lambda: None)
    KD = kernel_registry.KernelDef
    for op_type in ("Const", "AddV2", "Identity"):
        reg[(op_type, "CPU")] = [KD(op_type, "CPU", None)]
    reg[("AddV2", "GPU")] = [KD("AddV2", "GPU", None, type_constraints={"T": {dtypes.float64}})]
    reg[("Identity", "GPU")] = [KD("Identity", "GPU", None, host_memory=("input",))]
    g = build([const("a"), add("b", "a", "a"), ident("c", "b")])
    b, c, a = (g.get_operation_by_name(n) for n in "bca")
    assert placer.registry_has_kernel(b, "GPU") is None  # float32 is not float64
    assert placer.registry_has_kernel(c, "GPU") is reg[("Identity", "GPU")][0]
    assert placer.registry_has_kernel(a, "GPU") is None
    assert placer.registry_has_kernel(a, "CPU") is reg[("Const", "CPU")][0]
    reg[("AddV2", "GPU")].append(KD("AddV2", "GPU", None,
                                    type_constraints={"T": {dtypes.float32}}))
    assert placer.registry_has_kernel(b, "GPU") is reg[("AddV2", "GPU")][1]
    p = placer.place(g, host(1), **quiet())
    assert p.device_of("b").name == GPU0 and p.device_of("c").name == GPU0
    assert p.device_of("a").name == CPU0
    assert p.input_host_memory("c") == (True,)  # the KernelDef's host_memory
    assert p.needs_copy(a.outputs[0], b, 0)
