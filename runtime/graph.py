"""The graph model: Graph, Operation, Tensor, name scopes, collections, the default graph.

An Operation holds its NodeDef (the proto TensorFlow wrote, or one mgrt built), so fields mgrt
does not know (a newer TensorFlow's) travel through an import/export round trip untouched. The
NodeDef's ``input`` strings are kept in step with the Operation's input Tensors and control inputs
in TensorFlow's canonical form (``x`` for output 0, ``x:1``, ``^x``).
"""

import contextlib
import difflib
import heapq
import re
import threading

from mgrt.protos import attr_value_pb2, graph_pb2, node_def_pb2, versions_pb2
from mgrt.runtime import dtypes, op_defs, tensor_shape
from mgrt.runtime import errors

# The GraphDef version range mgrt writes and reads; TensorFlow 2.21 writes producer 2xxx, and
# the op definitions table comes from that release (runtime/data/op_defs.version).
GRAPH_DEF_VERSION = 2474
GRAPH_DEF_VERSION_MIN_CONSUMER = 0
GRAPH_DEF_VERSION_MIN_PRODUCER = 0

# A protobuf message cannot be larger than 2 GB; TensorFlow refuses to export a GraphDef as large.
GRAPH_DEF_MAX_BYTES = 1 << 31

_VALID_OP_NAME_REGEX = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_VALID_SCOPE_NAME_REGEX = re.compile(r"^[A-Za-z0-9_.\\/>-]*$")


class GraphKeys:
    """Standard names of collections (TensorFlow's ``tf.GraphKeys``)."""

    GLOBAL_VARIABLES = "variables"
    LOCAL_VARIABLES = "local_variables"
    METRIC_VARIABLES = "metric_variables"
    MODEL_VARIABLES = "model_variables"
    TRAINABLE_VARIABLES = "trainable_variables"
    SUMMARIES = "summaries"
    QUEUE_RUNNERS = "queue_runners"
    TABLE_INITIALIZERS = "table_initializer"
    ASSET_FILEPATHS = "asset_filepaths"
    MOVING_AVERAGE_VARIABLES = "moving_average_variables"
    REGULARIZATION_LOSSES = "regularization_losses"
    CONCATENATED_VARIABLES = "concatenated_variables"
    SAVERS = "savers"
    WEIGHTS = "weights"
    BIASES = "biases"
    ACTIVATIONS = "activations"
    UPDATE_OPS = "update_ops"
    LOSSES = "losses"
    SAVEABLE_OBJECTS = "saveable_objects"
    RESOURCES = "resources"
    LOCAL_RESOURCES = "local_resources"
    TRAINABLE_RESOURCE_VARIABLES = "trainable_resource_variables"
    INIT_OP = "init_op"
    LOCAL_INIT_OP = "local_init_op"
    READY_OP = "ready_op"
    READY_FOR_LOCAL_INIT_OP = "ready_for_local_init_op"
    SUMMARY_OP = "summary_op"
    GLOBAL_STEP = "global_step"
    EVAL_STEP = "eval_step"
    TRAIN_OP = "train_op"
    COND_CONTEXT = "cond_context"
    WHILE_CONTEXT = "while_context"

    _VARIABLE_COLLECTIONS = [
        GLOBAL_VARIABLES, LOCAL_VARIABLES, METRIC_VARIABLES, MODEL_VARIABLES,
        TRAINABLE_VARIABLES, MOVING_AVERAGE_VARIABLES, CONCATENATED_VARIABLES,
        TRAINABLE_RESOURCE_VARIABLES,
    ]
    _STREAMING_MODEL_PORTS = "streaming_model_ports"


class GraphElementKeyError(KeyError):
    """TensorFlow raises KeyError for a name that is not in the graph; mgrt's says which close
    names exist. ``str()`` gives the plain message (a bare KeyError would quote it)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


def _close_names(name, candidates, n=5):
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if close:
        return " Close names in the graph: " + ", ".join(repr(c) for c in close) + "."
    return ""


def ordered_topological_sort(pending, successors):
    """Kahn's algorithm over nodes 0..n-1 that always takes the ready node with the lowest
    index: TensorFlow's GraphConstructor order (graph order where that is topological).
    ``pending[i]`` counts the edges into i (``pending`` is consumed); ``successors[i]`` lists
    the nodes i feeds, once per edge. Nodes left in a cycle are missing from the result."""
    ready = [i for i, c in enumerate(pending) if c == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in successors[i]:
            pending[k] -= 1
            if pending[k] == 0:
                heapq.heappush(ready, k)
    return order


def parse_tensor_name(name):
    """``'x:1'`` -> ``('x', 1)``; ``'x'`` -> ``('x', 0)``. Raises ValueError if malformed."""
    op_name, sep, index = name.rpartition(":")
    if not sep:
        return name, 0
    if not op_name or not index.isdigit():
        raise ValueError(f"Malformed tensor name {name!r}: expected '<op_name>' or '<op_name>:<output_index>'.")
    return op_name, int(index)


def canonical_input(op_name, index):
    return op_name if index == 0 else f"{op_name}:{index}"


class Tensor:
    """One output of an Operation (TensorFlow's graph-mode ``tf.Tensor``)."""

    __slots__ = ("_op", "_value_index", "_dtype", "_shape", "_consumers", "__weakref__")

    def __init__(self, op, value_index, dtype):
        self._op = op
        self._value_index = value_index
        self._dtype = dtype
        self._shape = tensor_shape.unknown_shape()
        self._consumers = []

    @property
    def op(self):
        return self._op

    @property
    def value_index(self):
        return self._value_index

    @property
    def dtype(self):
        return self._dtype

    @property
    def graph(self):
        return self._op.graph

    @property
    def name(self):
        return f"{self._op.name}:{self._value_index}"

    @property
    def device(self):
        return self._op.device

    @property
    def shape(self):
        s = self._shape
        if type(s) is not tensor_shape.TensorShape:
            # a TensorShapeProto from the file's _output_shapes, converted on first use
            s = self._shape = tensor_shape.TensorShape(s)
        return s

    def get_shape(self):
        return self.shape

    def set_shape(self, shape):
        self._shape = self.shape.merge_with(tensor_shape.as_shape(shape))

    def _shape_as_proto(self):
        s = self._shape
        if type(s) is tensor_shape.TensorShape:
            return s.as_proto()
        return s

    def consumers(self):
        return list(self._consumers)

    def _as_node_def_input(self):
        return canonical_input(self._op.name, self._value_index)

    def eval(self, feed_dict=None, session=None):
        from mgrt.runtime import session as session_lib  # the Session comes with issue 3

        return session_lib._eval_using_default_session(self, feed_dict, self.graph, session)

    def __repr__(self):
        shape = self.shape
        shape_str = str(shape) if shape.rank is not None else "<unknown>"
        return f"<tf.Tensor '{self.name}' shape={shape_str} dtype={self._dtype.name}>"

    __str__ = __repr__

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def __bool__(self):
        raise TypeError("Using a `tf.Tensor` as a Python `bool` is not allowed in graph mode. "
                        "Use `if t is not None:` instead of `if t:`.")

    def __iter__(self):
        shape = self.shape
        if shape.rank is None:
            raise TypeError("Cannot iterate over a tensor with unknown shape.")
        if shape.rank == 0:
            raise TypeError("Cannot iterate over a scalar tensor.")
        raise TypeError("Iterating over a symbolic `tf.Tensor` needs the slicing ops of the "
                        "building API (issue 6); index it explicitly instead.")


def _decode_attr(attr_value):
    """TensorFlow's ``Operation.get_attr`` decoding of one AttrValue."""
    which = attr_value.WhichOneof("value")
    if which is None:
        return []
    if which == "list":
        lst = attr_value.list
        for field in ("s", "i", "f", "b", "type", "shape", "tensor", "func"):
            values = getattr(lst, field)
            if len(values):
                if field == "type":
                    return [dtypes.as_dtype(t) for t in values]
                return list(values)
        return []
    if which == "type":
        return dtypes.as_dtype(attr_value.type)
    if which in ("placeholder",):
        return attr_value.placeholder
    return getattr(attr_value, which)


class Operation:
    """A node of the graph (TensorFlow's ``tf.Operation``)."""

    def __init__(self, node_def, graph, inputs, control_inputs, output_types, op_def=None):
        self._node_def = node_def
        self._graph = graph
        self._inputs = list(inputs)
        self._control_inputs = list(control_inputs)
        self._op_def = op_def
        self._id = None
        self._outputs = [Tensor(self, i, dtypes.as_dtype(t)) for i, t in enumerate(output_types)]
        self._control_outputs = []
        self._control_flow_context = None
        for t in self._inputs:
            t._consumers.append(self)
        for c in self._control_inputs:
            c._control_outputs.append(self)

    # --- identity ---------------------------------------------------------------------------
    @property
    def name(self):
        return self._node_def.name

    @property
    def type(self):
        return self._node_def.op

    @property
    def graph(self):
        return self._graph

    @property
    def device(self):
        return self._node_def.device

    @property
    def node_def(self):
        """A copy of this node's NodeDef, in TensorFlow's canonical form."""
        nd = node_def_pb2.NodeDef()
        nd.CopyFrom(self._node_def)
        return nd

    @property
    def op_def(self):
        return self._op_def

    # --- edges --------------------------------------------------------------------------------
    @property
    def inputs(self):
        return tuple(self._inputs)

    @property
    def outputs(self):
        return list(self._outputs)

    def values(self):
        return tuple(self._outputs)

    @property
    def control_inputs(self):
        return list(self._control_inputs)

    @property
    def _control_outputs_list(self):
        return list(self._control_outputs)

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def _rewrite_node_inputs(self):
        nd = self._node_def
        del nd.input[:]
        # control inputs sorted by name, as TensorFlow's C++ graph serializes them
        nd.input.extend([t._as_node_def_input() for t in self._inputs] +
                        sorted("^" + c.name for c in self._control_inputs))

    def _update_input(self, index, tensor):
        old = self._inputs[index]
        old._consumers.remove(self)
        self._inputs[index] = tensor
        tensor._consumers.append(self)
        self._rewrite_node_inputs()

    def _add_control_inputs(self, ops):
        added = False
        for op in ops:
            if not isinstance(op, Operation):
                raise TypeError(f"op must be an Operation: {op!r}")
            if op not in self._control_inputs:
                self._control_inputs.append(op)
                op._control_outputs.append(self)
                added = True
        if added:
            self._rewrite_node_inputs()

    def _add_control_input(self, op):
        self._add_control_inputs([op])

    def _remove_all_control_inputs(self):
        for c in self._control_inputs:
            c._control_outputs.remove(self)
        self._control_inputs = []
        self._rewrite_node_inputs()

    # --- attrs --------------------------------------------------------------------------------
    def get_attr(self, name):
        attr = self._node_def.attr
        if name not in attr:
            raise ValueError(f"Operation {self.name!r} has no attr named {name!r}.")
        return _decode_attr(attr[name])

    def _get_attr_value(self, name):
        attr = self._node_def.attr
        return attr[name] if name in attr else None

    def _get_control_flow_context(self):
        return self._control_flow_context

    def _set_control_flow_context(self, ctx):
        self._control_flow_context = ctx

    def _set_attr(self, name, attr_value):
        self._node_def.attr[name].CopyFrom(attr_value)

    def _clear_attr(self, name):
        if name in self._node_def.attr:
            del self._node_def.attr[name]

    @property
    def attr_names(self):
        return sorted(self._node_def.attr.keys())

    def _set_device(self, device):
        self._node_def.device = device if isinstance(device, str) else device.to_string()

    def colocation_groups(self):
        """The ``loc:@name`` colocation groups of this op (its own name when it has none)."""
        default = [b"loc:@" + self.name.encode()]
        attr = self._node_def.attr
        if "_class" not in attr:
            return default
        groups = [s for s in attr["_class"].list.s if s.startswith(b"loc:@")]
        return groups or default

    def run(self, feed_dict=None, session=None):
        from mgrt.runtime import session as session_lib  # the Session comes with issue 3

        session_lib._run_using_default_session(self, feed_dict, self.graph, session)

    def __repr__(self):
        return f"<tf.Operation '{self.name}' type={self.type}>"

    def __str__(self):
        return str(self._node_def)

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other


class _DefaultStack(threading.local):
    def __init__(self):
        super().__init__()
        self.stack = []


_default_graph_stack = _DefaultStack()
_global_default_graph = None


class Graph:
    """A TensorFlow 1.x graph: operations, name scopes and collections."""

    def __init__(self):
        self._lock = threading.RLock()
        self._nodes_by_name = {}
        self._nodes_by_id = []
        self._names_in_use = {}
        self._name_stack = ""
        self._collections = {}
        self._finalized = False
        self._version = 0
        self._registry = op_defs.default_registry().child()
        self._versions = versions_pb2.VersionDef(producer=GRAPH_DEF_VERSION,
                                                 min_consumer=GRAPH_DEF_VERSION_MIN_CONSUMER)
        self._library = None  # FunctionDefLibrary carried through from an imported GraphDef
        self._graph_def_unknown = b""  # GraphDef fields this mgrt does not know, carried through
        self._seed = None
        self._device_function_stack = []
        self._control_dependencies_stack = []
        self._colocation_stack = []
        self._building_function = False
        self._cf_context = None  # the cond/while context ops are being built in (issue 6)
        self._attr_scope_map = {}  # attrs every op built inside ``_attr_scope`` gets
        self._gradient_override_map = {}

    # --- default graph ------------------------------------------------------------------------
    @contextlib.contextmanager
    def as_default(self):
        _default_graph_stack.stack.append(self)
        try:
            yield self
        finally:
            popped = _default_graph_stack.stack.pop()
            assert popped is self, "nested Graph.as_default() contexts were exited out of order"

    # --- properties ---------------------------------------------------------------------------
    @property
    def version(self):
        return self._version

    @property
    def graph_def_versions(self):
        v = versions_pb2.VersionDef()
        v.CopyFrom(self._versions)
        return v

    @property
    def finalized(self):
        return self._finalized

    def finalize(self):
        self._finalized = True

    def _unsafe_unfinalize(self):
        self._finalized = False

    def _check_not_finalized(self):
        if self._finalized:
            raise RuntimeError("Graph is finalized and cannot be modified.")

    @property
    def seed(self):
        return self._seed

    @seed.setter
    def seed(self, seed):
        self._seed = seed

    @property
    def building_function(self):
        return self._building_function

    @property
    def op_registry(self):
        """The op definitions this graph knows: mgrt's table plus ops learned from imports."""
        return self._registry

    # --- operations ---------------------------------------------------------------------------
    def get_operations(self):
        return list(self._nodes_by_id)

    def _add_op(self, op):
        self._check_not_finalized()
        name = op.name
        if name in self._nodes_by_name:
            raise ValueError(f"Cannot add op with name {name!r} as that name is already used.")
        op._id = len(self._nodes_by_id) + 1
        self._nodes_by_id.append(op)
        self._nodes_by_name[name] = op
        self._version = op._id
        key = name.lower()
        if key not in self._names_in_use:
            self._names_in_use[key] = 1

    def create_op(self, op_type, inputs=(), name=None, attrs=None, control_inputs=(),
                  device=""):
        """Add a node: ``attrs`` maps attr names to AttrValue protos; defaults come from the op
        definition and the node is validated against it. (The graph-building API of issue 6
        builds on this.)"""
        self._check_not_finalized()
        from mgrt.protos import node_def_pb2

        od = self._registry.get(op_type)
        if od is None:
            raise ValueError(f"Op type not registered: {op_type!r}.")
        if name and name.endswith("/"):
            # a name scope's name (``with g.name_scope(None, "MatMul") as scope``): already
            # unique, used as it is, as TensorFlow does
            op_name = name[:-1]
            self._names_in_use.setdefault(op_name.lower(), 1)
        else:
            op_name = self.unique_name(name or op_type)
        nd = node_def_pb2.NodeDef(name=op_name, op=op_type)
        for k, v in (attrs or {}).items():
            nd.attr[k].CopyFrom(v)
        for k, v in self._attr_scope_map.items():
            if v is not None:
                nd.attr[k].CopyFrom(v)
        if op_type in self._gradient_override_map:
            nd.attr["_gradient_op_type"].s = self._gradient_override_map[op_type].encode()
        op_defs.add_default_attrs(nd, od)
        inputs = list(inputs)
        control_inputs = list(control_inputs)
        if self._control_dependencies_stack:
            for c in self._control_dependencies_for_inputs({id(t.op) for t in inputs}):
                if c not in control_inputs:
                    control_inputs.append(c)
        nd.input.extend([t._as_node_def_input() for t in inputs] +
                        sorted("^" + c.name for c in control_inputs))
        op_defs.validate_node(nd, od)
        out_types = op_defs.output_types(od, nd.attr)
        op = Operation(nd, self, inputs, control_inputs, out_types, od)
        if device:
            nd.device = device
        elif self._device_function_stack:
            self._apply_device_functions(op)
        if self._colocation_stack:
            self._apply_colocation(op)
        for controller in self._control_dependencies_stack:
            controller.new_ops.add(id(op))
        ctxt = self._cf_context
        if ctxt is not None:
            op._control_flow_context = ctxt
        shapes_from_attrs(op)
        from mgrt.runtime import shape_inference

        shape_inference.infer(op)
        self._add_op(op)
        if ctxt is not None:
            ctxt.AddOp(op)
        return op

    def _get_control_flow_context(self):
        return self._cf_context

    def _set_control_flow_context(self, ctx):
        self._cf_context = ctx

    @contextlib.contextmanager
    def gradient_override_map(self, op_type_map):
        """TensorFlow's ``gradient_override_map``: ops of these types built inside use the
        gradient function registered under the mapped name (a ``_gradient_op_type`` attr)."""
        for k, v in op_type_map.items():
            if not (isinstance(k, str) and isinstance(v, str)):
                raise TypeError("op_type_map must be a dictionary mapping strings to strings")
        saved = self._gradient_override_map
        self._gradient_override_map = {**saved, **op_type_map}
        try:
            yield
        finally:
            self._gradient_override_map = saved

    @contextlib.contextmanager
    def _attr_scope(self, attr_map):
        """TensorFlow's ``Graph._attr_scope``: ops built inside get these AttrValues."""
        saved = self._attr_scope_map
        self._attr_scope_map = {**saved, **attr_map}
        try:
            yield
        finally:
            self._attr_scope_map = saved

    # --- building contexts (TensorFlow's device, control_dependencies, colocate_with) ---------
    @contextlib.contextmanager
    def device(self, device_name_or_function):
        """Ops created inside get this device: a spec string (merged into outer specs, inner
        fields winning), a DeviceSpec, a function ``op -> device string``, or None (clears the
        outer devices)."""
        self._device_function_stack.append(device_name_or_function)
        try:
            yield
        finally:
            self._device_function_stack.pop()

    def _apply_device_functions(self, op):
        """TensorFlow's order: the innermost entry first; a string spec is merged under the
        device found so far (whose fields win); a function gets the op with that device and
        returns the new one; ``None`` stops the outer entries."""
        from mgrt.devices.device_spec import DeviceSpec

        current = op.device
        for d in reversed(self._device_function_stack):
            if d is None:
                break
            if callable(d) and not isinstance(d, (str, DeviceSpec)):
                op._set_device(current)
                current = d(op) or ""
                if isinstance(current, DeviceSpec):
                    current = current.to_string()
            else:
                spec = d if isinstance(d, DeviceSpec) else DeviceSpec.from_string(d or "")
                current = spec.make_merged_spec(current or "").to_string()
        op._set_device(current)

    class _ControlDependenciesController:
        def __init__(self, control_inputs):
            self.control_inputs = control_inputs
            self.new_ops = set()

    @contextlib.contextmanager
    def control_dependencies(self, control_inputs):
        """Ops created inside run after ``control_inputs`` (ops or tensors; None clears the
        outer contexts). As in TensorFlow, an op whose input was itself created inside the
        context gets no redundant control edge."""
        if control_inputs is None:
            # as in TensorFlow, None also clears the control-flow context (cond/while)
            saved = self._control_dependencies_stack
            saved_ctxt = self._cf_context
            self._control_dependencies_stack = []
            self._cf_context = None
            try:
                yield
            finally:
                self._control_dependencies_stack = saved
                self._cf_context = saved_ctxt
            return
        ops = []
        for c in control_inputs:
            if hasattr(c, "_as_graph_element") and not isinstance(c, (Tensor, Operation)):
                c = c._as_graph_element()
            if isinstance(c, Tensor):
                c = c.op
            if not isinstance(c, Operation):
                raise TypeError(f"Control input must be an Operation or a Tensor: {c!r}")
            if c.graph is not self:
                raise ValueError(f"Control input {c.name!r} is not an element of this graph.")
            if c not in ops:
                ops.append(c)
                # as TensorFlow 2 marks an op used as a manual control dependency
                c._set_attr("_has_manual_control_dependencies", attr_value_pb2.AttrValue(b=True))
        controller = Graph._ControlDependenciesController(ops)
        self._control_dependencies_stack.append(controller)
        try:
            yield
        finally:
            self._control_dependencies_stack.pop()

    def _control_dependencies_for_inputs(self, input_op_ids):
        ret = []
        for controller in self._control_dependencies_stack:
            if any(i in controller.new_ops for i in input_op_ids):
                continue
            ret.extend(c for c in controller.control_inputs if id(c) not in input_op_ids)
        return ret

    @contextlib.contextmanager
    def colocate_with(self, op, ignore_existing=False):
        """Ops created inside are colocated with ``op`` (a ``_class: loc:@name`` attr and its
        device); ``op=None`` with ``ignore_existing=True`` clears the outer colocation."""
        if op is None and not ignore_existing:
            raise ValueError("Trying to reset colocation (op is None) but "
                             "ignore_existing is not True")
        if op is not None:
            if not isinstance(op, (Tensor, Operation)):
                # a variable: its handle (resource) or its ref (VariableV2), as TensorFlow's
                # _op_to_colocate_with
                handle = getattr(op, "handle", None)
                if isinstance(handle, Tensor):
                    op = handle
                elif hasattr(op, "_ref"):
                    op = op._ref()
                elif hasattr(op, "_as_graph_element"):
                    op = op._as_graph_element()
            if isinstance(op, Tensor):
                op = op.op
        saved = self._colocation_stack
        if ignore_existing:
            self._colocation_stack = []
        if op is not None:
            self._colocation_stack = self._colocation_stack + [op]
        try:
            yield
        finally:
            self._colocation_stack = saved

    def _apply_colocation(self, op):
        groups = []
        for c in self._colocation_stack:
            for g in c.colocation_groups():
                if g not in groups:
                    groups.append(g)
        if groups:
            op._set_attr("_class", attr_value_pb2.AttrValue(
                list=attr_value_pb2.AttrValue.ListValue(s=sorted(groups))))
            last = self._colocation_stack[-1]
            if last.device:
                op._set_device(last.device)

    def _get_operation_by_name(self, name):
        return self._nodes_by_name[name]

    def get_operation_by_name(self, name):
        if not isinstance(name, str):
            raise TypeError(f"Operation names are strings (or similar), not {type(name).__name__}.")
        return self.as_graph_element(name, allow_tensor=False, allow_operation=True)

    def get_tensor_by_name(self, name):
        if not isinstance(name, str):
            raise TypeError(f"Tensor names are strings (or similar), not {type(name).__name__}.")
        return self.as_graph_element(name, allow_tensor=True, allow_operation=False)

    def as_graph_element(self, obj, allow_tensor=True, allow_operation=True):
        with self._lock:
            return self._as_graph_element_locked(obj, allow_tensor, allow_operation)

    def _as_graph_element_locked(self, obj, allow_tensor, allow_operation):
        if allow_tensor and allow_operation:
            types_str = "Tensor or Operation"
        elif allow_tensor:
            types_str = "Tensor"
        elif allow_operation:
            types_str = "Operation"
        else:
            raise ValueError("allow_tensor and allow_operation can't both be False.")

        conv = getattr(obj, "_as_graph_element", None)
        if conv is not None and callable(conv):
            obj = conv()

        if isinstance(obj, bytes):
            obj = obj.decode("utf-8")
        if isinstance(obj, str):
            name = obj
            if ":" in name and allow_tensor:
                try:
                    op_name, out_n = parse_tensor_name(name)
                except ValueError:
                    raise ValueError(
                        f"The name {name!r} looks a like a Tensor name, but is not a valid one. "
                        "Tensor names must be of the form \"<op_name>:<output_index>\".") from None
                if op_name in self._nodes_by_name:
                    op = self._nodes_by_name[op_name]
                else:
                    raise GraphElementKeyError(
                        f"The name {name!r} refers to a Tensor which does not exist. The operation, "
                        f"{op_name!r}, does not exist in the graph." +
                        _close_names(op_name, self._nodes_by_name.keys()))
                try:
                    return op.outputs[out_n]
                except IndexError:
                    raise GraphElementKeyError(
                        f"The name {name!r} refers to a Tensor which does not exist. The operation, "
                        f"{op_name!r}, exists but only has {len(op.outputs)} outputs.") from None
            elif ":" in name and not allow_tensor:
                raise ValueError(f"Name {name!r} appears to refer to a Tensor, not a {types_str}.")
            elif ":" not in name and allow_operation:
                if name not in self._nodes_by_name:
                    raise GraphElementKeyError(
                        f"The name {name!r} refers to an Operation not in the graph." +
                        _close_names(name, self._nodes_by_name.keys()))
                return self._nodes_by_name[name]
            else:
                if name in self._nodes_by_name:
                    err = (f"The name {name!r} refers to an Operation, not a {types_str}.")
                else:
                    err = (f"The name {name!r} looks like an (invalid) Operation name, not a "
                           f"{types_str}.")
                raise ValueError(err + " Tensor names must be of the form "
                                 "\"<op_name>:<output_index>\".")
        elif isinstance(obj, Tensor) and allow_tensor:
            if obj.graph is not self:
                raise ValueError(f"Tensor {obj!r} is not an element of this graph.")
            return obj
        elif isinstance(obj, Operation) and allow_operation:
            if obj.graph is not self:
                raise ValueError(f"Operation {obj!r} is not an element of this graph.")
            return obj
        else:
            raise TypeError(f"Can not convert a {type(obj).__name__} into a {types_str}.")

    # --- names --------------------------------------------------------------------------------
    def unique_name(self, name, mark_as_used=True):
        if self._name_stack:
            name = self._name_stack + "/" + name
        name_key = name.lower()
        i = self._names_in_use.get(name_key, 0)
        if mark_as_used:
            self._names_in_use[name_key] = i + 1
        if i > 0:
            base_name_key = name_key
            while name_key in self._names_in_use:
                name_key = f"{base_name_key}_{i}"
                i += 1
            if mark_as_used:
                self._names_in_use[name_key] = 1
            name = f"{name}_{i - 1}"
        return name

    def get_name_scope(self):
        return self._name_stack

    @contextlib.contextmanager
    def name_scope(self, name):
        """TensorFlow's ``Graph.name_scope``: yields the scope string ending in ``/``."""
        if name:
            if isinstance(name, bytes):
                name = name.decode("utf-8")
            if self._name_stack:
                if not _VALID_SCOPE_NAME_REGEX.match(name):
                    raise ValueError(f"{name!r} is not a valid scope name. A scope name has to "
                                     f"match {_VALID_SCOPE_NAME_REGEX.pattern}")
            elif not _VALID_OP_NAME_REGEX.match(name):
                raise ValueError(f"{name!r} is not a valid root scope name. A root scope name "
                                 f"has to match {_VALID_OP_NAME_REGEX.pattern}")
        old_stack = self._name_stack
        if not name:
            new_stack = ""
            returned_scope = ""
        elif name[-1] == "/":
            new_stack = name[:-1]
            returned_scope = name
        else:
            new_stack = self.unique_name(name)
            returned_scope = new_stack + "/"
        self._name_stack = new_stack
        try:
            yield returned_scope
        finally:
            self._name_stack = old_stack

    # --- atomic changes -------------------------------------------------------------------------
    def _snapshot(self):
        """What an import changes, so that a failed one can be undone (``_rollback``)."""
        return {
            "n_ops": len(self._nodes_by_id),
            "names_in_use": dict(self._names_in_use),
            "version": self._version,
            "versions": self._versions.SerializeToString(),
            "library": (None if self._library is None
                        else self._library.SerializeToString(deterministic=True)),
            "graph_def_unknown": self._graph_def_unknown,
            "collections": {k: list(v) for k, v in self._collections.items()},
            "registry_ops": dict(self._registry._ops),
        }

    def _rollback(self, snap):
        """Undo every change made since ``snap = self._snapshot()``: the operations added since
        (and their edges to older ones), names, versions, library, collections (the same list
        objects, so references from get_collection_ref stay valid) and learned op definitions."""
        new_ops = self._nodes_by_id[snap["n_ops"]:]
        new_ids = {id(op) for op in new_ops}
        for op in new_ops:
            for t in getattr(op, "_inputs", ()):
                if id(t.op) not in new_ids:
                    t._consumers[:] = [c for c in t._consumers if id(c) not in new_ids]
            for c in op._control_inputs:
                if id(c) not in new_ids:
                    c._control_outputs[:] = [o for o in c._control_outputs
                                             if id(o) not in new_ids]
            if self._nodes_by_name.get(op.name) is op:
                del self._nodes_by_name[op.name]
        del self._nodes_by_id[snap["n_ops"]:]
        self._names_in_use.clear()
        self._names_in_use.update(snap["names_in_use"])
        self._version = snap["version"]
        self._versions.ParseFromString(snap["versions"])
        if snap["library"] is None:
            self._library = None
        else:
            self._library.Clear()
            self._library.ParseFromString(snap["library"])
        self._graph_def_unknown = snap["graph_def_unknown"]
        saved = snap["collections"]
        for key in list(self._collections):
            if key in saved:
                self._collections[key][:] = saved[key]
            else:
                del self._collections[key]
        for key, items in saved.items():
            if key not in self._collections:
                self._collections[key] = items
        self._registry._ops.clear()
        self._registry._ops.update(snap["registry_ops"])

    # --- collections --------------------------------------------------------------------------
    def add_to_collection(self, name, value):
        self._check_not_finalized()
        with self._lock:
            self._collections.setdefault(name, []).append(value)

    def add_to_collections(self, names, value):
        names = (names,) if isinstance(names, str) else set(names)
        for name in names:
            self.add_to_collection(name, value)

    def get_collection_ref(self, name):
        with self._lock:
            return self._collections.setdefault(name, [])

    def get_collection(self, name, scope=None):
        with self._lock:
            collection = self._collections.get(name)
            if collection is None:
                return []
            if scope is None:
                return list(collection)
            c = []
            regex = re.compile(scope)
            for item in collection:
                try:
                    item_name = item.name
                except AttributeError:
                    continue  # items with no name are left out of a scoped query, as in TF
                try:
                    if regex.match(item_name):
                        c.append(item)
                except TypeError:
                    continue
            return c

    def get_all_collection_keys(self):
        with self._lock:
            return [x for x in self._collections if isinstance(x, str)]

    def clear_collection(self, name):
        self._check_not_finalized()
        with self._lock:
            self._collections.pop(name, None)

    @property
    def collections(self):
        return self.get_all_collection_keys()

    # --- serialization ------------------------------------------------------------------------
    def _node_byte_size(self):
        return sum(op._node_def.ByteSize() for op in self._nodes_by_id)

    def as_graph_def(self, from_version=None, add_shapes=False):
        """The GraphDef of this graph (ops added after ``from_version`` only, if given).

        ``add_shapes=True`` adds the ``_output_shapes`` attr TensorFlow adds (the static shapes
        mgrt knows; unknown ones as unknown rank).
        """
        with self._lock:
            gd = graph_pb2.GraphDef()
            if self._graph_def_unknown:
                gd.MergeFromString(self._graph_def_unknown)
            gd.versions.CopyFrom(self._versions)
            nodes = self._nodes_by_id
            if from_version is not None:
                nodes = [op for op in nodes if op._id > from_version]
            size = 0
            for op in nodes:
                nd = gd.node.add()
                nd.CopyFrom(op._node_def)
                if add_shapes and op._outputs:
                    shapes = nd.attr["_output_shapes"].list.shape
                    del shapes[:]
                    shapes.extend([t._shape_as_proto() for t in op._outputs])
                size += nd.ByteSize()
                if size >= GRAPH_DEF_MAX_BYTES:
                    raise ValueError("GraphDef cannot be larger than 2GB.")
            if self._library is not None:
                gd.library.CopyFrom(self._library)
            return gd

    def _copy_library_to(self, graph_def):
        if self._library is not None:
            graph_def.library.CopyFrom(self._library)

    def __repr__(self):
        return f"<mgrt Graph with {len(self._nodes_by_id)} operations>"


def shapes_from_attrs(op):
    """Static shapes that follow from attrs alone (TensorFlow infers these with shape functions;
    mgrt's general shape inference comes with the building API)."""
    t = op.type
    attr = op._node_def.attr
    try:
        if t in ("Placeholder", "PlaceholderV2") and "shape" in attr:
            op._outputs[0]._shape = tensor_shape.TensorShape(attr["shape"].shape)
        elif t == "Const" and "value" in attr:
            op._outputs[0]._shape = tensor_shape.TensorShape(attr["value"].tensor.tensor_shape)
        elif t in ("VariableV2", "Variable", "TemporaryVariable") and "shape" in attr:
            op._outputs[0]._shape = tensor_shape.TensorShape(attr["shape"].shape)
        elif t in ("VarHandleOp",):
            op._outputs[0]._shape = tensor_shape.TensorShape([])
    except (ValueError, TypeError):
        pass


# --- the default graph ------------------------------------------------------------------------
def get_default_graph():
    global _global_default_graph
    stack = _default_graph_stack.stack
    if stack:
        return stack[-1]
    if _global_default_graph is None:
        _global_default_graph = Graph()
    return _global_default_graph


def reset_default_graph():
    global _global_default_graph
    if _default_graph_stack.stack:
        raise AssertionError("Do not use tf.reset_default_graph() to clear nested graphs. If you "
                             "need a cleared graph, exit the nesting and create a new graph.")
    _global_default_graph = Graph()


def add_to_collection(name, value):
    get_default_graph().add_to_collection(name, value)


def add_to_collections(names, value):
    get_default_graph().add_to_collections(names, value)


def get_collection(key, scope=None):
    return get_default_graph().get_collection(key, scope)


def get_collection_ref(key):
    return get_default_graph().get_collection_ref(key)


def get_all_collection_keys():
    return get_default_graph().get_all_collection_keys()


def name_scope(name):
    return get_default_graph().name_scope(name)


# --- scope helpers (TensorFlow's ops.prepend_name_scope / strip_name_scope) --------------------
def prepend_name_scope(name, import_scope):
    """Prefix ``name`` (also ``^name`` and ``loc:@name``) with ``import_scope``."""
    if import_scope:
        if import_scope[-1] == "/":
            import_scope = import_scope[:-1]
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        if not isinstance(name, str):
            return name  # TensorFlow leaves values it cannot process (numbers) as they are
        return re.sub(r"([\^]|loc:@|^)(.*)", r"\1" + import_scope.replace("\\", r"\\") + r"/\2",
                      name)
    return name


def strip_name_scope(name, export_scope):
    """Remove ``export_scope/`` from the start of ``name`` (also after ``^`` and ``loc:@``).

    As in TensorFlow, ``export_scope`` is used as a regular expression.
    """
    if export_scope:
        if export_scope[-1] == "/":
            export_scope = export_scope[:-1]
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        if not isinstance(name, str):
            return name
        return re.sub(r"([\^]|loc:@|^)" + export_scope + r"[\/]+(.*)", r"\1\2", name, count=1)
    return name


def get_name_scope():
    return get_default_graph().get_name_scope()


def make_attr_value(**kw):
    return attr_value_pb2.AttrValue(**kw)


def _node_not_found(name, graph):
    return errors.NotFoundError(None, None, f"Node {name!r} is not in the graph." +
                                _close_names(name, graph._nodes_by_name.keys()))
