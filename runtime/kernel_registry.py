"""The kernel registry: (op type, device type) -> kernel definition.

A kernel is a *builder*, called once per Plan with the node (its attrs decoded) and the plan's
context; it returns the hot function ``run(*inputs) -> outputs``::

    @register("Relu", "CPU")
    def relu(node, ctx):
        def run(x):
            return (np.maximum(x, 0),)
        return run

Contract of ``run``:
- inputs are the node's regular inputs, in order: numpy arrays on the CPU (0-d arrays for
  scalars; string tensors are object arrays of ``bytes``), the device's array type elsewhere;
- it returns a tuple (or list) with one array per output of the node, of exactly the output's
  dtype (``node.output_types``), never a Python or numpy scalar (use 0-d arrays);
- it does not keep or change its inputs (they may be shared), except where the op's contract
  says so (ref inputs of state ops, through ``ctx``).

``ctx`` (a KernelContext, or None in op-level tests of stateless kernels) gives a stateful
kernel what lives longer than one run: the device, the session's variables and resources, the
random seeds. Stateless kernels ignore it.

``host_memory`` names the input and output args (by their OpDef names) that live in host memory
whatever the device (shape and int32 arguments, as TensorFlow's kernel registrations say);
``type_constraints`` ({attr name: allowed DTypes}) restricts a registration to some dtypes. The
placer asks ``lookup`` whether a node has a kernel on a device type.
"""

import importlib

from mgrt.runtime import dtypes, tensor_shape, tensor_util


class KernelDef:
    __slots__ = ("op_type", "device_type", "builder", "host_memory", "device_memory",
                 "type_constraints")

    def __init__(self, op_type, device_type, builder, host_memory=(), type_constraints=None,
                 device_memory=()):
        self.op_type = op_type
        self.device_type = device_type
        self.builder = builder
        self.host_memory = frozenset(host_memory)
        self.device_memory = frozenset(device_memory)
        self.type_constraints = dict(type_constraints or {})

    def matches(self, attrs):
        """Whether the node's decoded attrs satisfy this kernel's type constraints."""
        for name, allowed in self.type_constraints.items():
            value = attrs.get(name)
            if value is None:
                continue
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, dtypes.DType) and v.base_dtype not in allowed:
                    return False
        return True

    def __repr__(self):
        return f"<KernelDef {self.op_type} on {self.device_type}>"


_REGISTRY = {}  # (op_type, device_type) -> [KernelDef]


def register(op_types, device_type="CPU", host_memory=(), type_constraints=None,
             device_memory=()):
    """Decorator: register ``builder(node, ctx) -> run`` for one or more op types.

    ``host_memory``: arg names read or written in host memory on a non-host device;
    ``device_memory``: int32 arg names kept in device memory (int32 args are otherwise in host
    memory on a GPU, as TensorFlow registers its GPU kernels)."""
    if isinstance(op_types, str):
        op_types = [op_types]
    allowed = None
    if type_constraints:
        allowed = {k: frozenset(dtypes.as_dtype(t) for t in v) for k, v in type_constraints.items()}

    def deco(builder):
        for op_type in op_types:
            _REGISTRY.setdefault((op_type, device_type), []).append(
                KernelDef(op_type, device_type, builder, host_memory, allowed, device_memory))
        return builder

    return deco


def lookup(op_type, device_type, attrs=None):
    """The KernelDef for ``op_type`` on ``device_type`` (whose type constraints the decoded
    ``attrs`` meet), or None."""
    load_all()
    for kd in _REGISTRY.get((op_type, device_type), ()):
        if attrs is None or kd.matches(attrs):
            return kd
    return None


# --- fused kernels ------------------------------------------------------------------------------
# A chain of ops (a Conv2D, the BiasAdd that alone reads its output, the Relu that alone reads
# that), which the executor may run as one step, as TensorFlow's grappler remapper does. The
# builder gets the members' KernelNodes and their own kernels' runs (to fall back on, one after
# another) and returns ``run(*inputs)`` or None (these attrs do not fuse); the inputs are the
# first member's followed by each later member's other inputs.
_FUSED = {}  # (op types, device_type) -> builder


class FusedMemberError(Exception):
    """Raised by a fused kernel for a failure of member ``index`` (whose inputs were
    ``inputs``): the executor names that member's node, as if it had run alone."""

    def __init__(self, index, exc, inputs):
        super().__init__(index, exc)
        self.index, self.exc, self.inputs = index, exc, inputs


def run_members(runs, first_inputs, extra, start=0):
    """A fused kernel's members ``runs[start:]`` one after another, unfused (TensorFlow's order
    of checks and errors): member ``start`` takes ``first_inputs``; each later member i takes
    the previous output and ``extra[i - 1]`` (its other input, where it has one). A failure
    raises FusedMemberError naming the member."""
    inputs = first_inputs
    for i in range(start, len(runs)):
        try:
            (out,) = runs[i](*inputs)
        except Exception as e:  # noqa: BLE001 - named after the member node
            raise FusedMemberError(i, e, inputs) from None
        inputs = (out,) + ((extra[i],) if i < len(extra) else ())
    return (out,)


def register_fused(op_types, device_type="CPU"):
    """Decorator: register ``builder(nodes, runs, ctx) -> run or None`` for a chain of op
    types (``runs``: the members' kernels, built alone)."""
    def deco(builder):
        _FUSED[(tuple(op_types), device_type)] = builder
        return builder
    return deco


def fused_patterns(device_type="CPU"):
    """{op types chain: builder} for ``device_type``, longest chains first."""
    load_all()
    return dict(sorted(((k[0], b) for k, b in _FUSED.items() if k[1] == device_type),
                       key=lambda kv: -len(kv[0])))


def registered_op_types(device_type="CPU"):
    load_all()
    return sorted({op for (op, dev) in _REGISTRY if dev == device_type})


# Kernel modules, imported on first lookup so that registering stays cheap and import-time
# errors in one family name it.
_KERNEL_MODULES = {
    "CPU": [
        "mgrt.kernels_cpu.math_ops",
        "mgrt.kernels_cpu.nn_ops",
        "mgrt.kernels_cpu.conv_ops",
        "mgrt.kernels_cpu.array_ops",
        "mgrt.kernels_cpu.state_ops",
        "mgrt.kernels_cpu.sparse_ops",
        "mgrt.kernels_cpu.data_flow_ops",
        "mgrt.kernels_cpu.random_ops",
        "mgrt.kernels_cpu.io_ops",
        "mgrt.kernels_cpu.summary_ops",
        "mgrt.kernels_cpu.space_batch_ops",
        "mgrt.kernels_cpu.metrics_ops",
        "mgrt.kernels_cpu.set_ops",
        "mgrt.kernels_cpu.sparse_tensor_ops",
    ],
    # GPU kernels (CuPy on a GPU, numpy buffers on the simulated GPU); a family not written
    # yet is simply absent (its ops soft-place to the CPU)
    "GPU": [
        "mgrt.kernels_gpu.math_ops",
        "mgrt.kernels_gpu.nn_ops",
        "mgrt.kernels_gpu.conv_ops",
        "mgrt.kernels_gpu.array_ops",
        "mgrt.kernels_gpu.state_ops",
        "mgrt.kernels_gpu.random_ops",
        "mgrt.kernels_gpu.control_flow_ops",
    ],
}
_loaded = False


def load_all():
    global _loaded
    if _loaded:
        return
    _loaded = True
    for modules in _KERNEL_MODULES.values():
        for name in modules:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name != name:  # a family that is not written yet is simply absent
                    raise


# --- what a builder sees of a node ------------------------------------------------------------
def decode_attr_value(av):
    """An AttrValue as the Python value a kernel wants: bytes, int, float, bool, DType,
    TensorShape, a numpy array (tensor), a NameAttrList (func), or a list of those."""
    which = av.WhichOneof("value")
    if which is None:
        return None
    if which == "list":
        lst = av.list
        if len(lst.type):
            return [dtypes.as_dtype(t) for t in lst.type]
        if len(lst.shape):
            return [tensor_shape.TensorShape(s) for s in lst.shape]
        if len(lst.tensor):
            return [tensor_util.MakeNdarray(t) for t in lst.tensor]
        for field in ("s", "i", "f", "b", "func"):
            values = getattr(lst, field)
            if len(values):
                return list(values)
        return []
    if which == "type":
        return dtypes.as_dtype(av.type)
    if which == "shape":
        return tensor_shape.TensorShape(av.shape)
    if which == "tensor":
        return tensor_util.MakeNdarray(av.tensor)
    return getattr(av, which)


class KernelNode:
    """A node as kernel builders see it: name, op type, decoded attrs, input and output dtypes
    (base types: a ref input is dereferenced unless the kernel is a state kernel), device."""

    __slots__ = ("name", "op", "attrs", "input_types", "output_types", "device", "node_def")

    def __init__(self, name, op, attrs, input_types, output_types, device=None, node_def=None):
        self.name = name
        self.op = op
        self.attrs = attrs
        self.input_types = input_types
        self.output_types = output_types
        self.device = device
        self.node_def = node_def

    def attr(self, name, default=None):
        return self.attrs.get(name, default)

    def __repr__(self):
        return f"<KernelNode {self.name!r} ({self.op})>"

    @classmethod
    def from_node_def(cls, node_def, op_def, device=None):
        """Decode ``node_def`` (defaults filled from ``op_def``) for a builder."""
        from mgrt.protos import node_def_pb2
        from mgrt.runtime import op_defs

        nd = node_def_pb2.NodeDef()
        nd.CopyFrom(node_def)
        op_defs.add_default_attrs(nd, op_def)
        attrs = {k: decode_attr_value(v) for k, v in nd.attr.items() if not k.startswith("_")}
        in_types = [dtypes.as_dtype(t) for t in op_defs.input_types(op_def, nd.attr)]
        out_types = [dtypes.as_dtype(t) for t in op_defs.output_types(op_def, nd.attr)]
        return cls(nd.name, nd.op, attrs, in_types, out_types, device, nd)

    @classmethod
    def from_operation(cls, op, device=None):
        return cls.from_node_def(op._node_def, op.op_def, device)
