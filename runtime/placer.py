"""The placer: which device runs each node, TensorFlow's rules (``placer.cc``,
``colocation_graph.cc``), with mgrt's soft placement of what TensorFlow cannot place.

``place(graph_or_ops, devices, has_kernel=None, allow_soft_placement=True,
log_device_placement=False, job="localhost", replica=0, task=0)`` returns a ``Placement``.

The rules, in TensorFlow's order
--------------------------------
1. **Requested devices.** Each node's ``device`` field is parsed (``DeviceSpec``); what it
   leaves out matches anything, and a node whose job, replica and task are unspecified or those
   of this process (``job``/``replica``/``task``) is local.
2. **Colocation groups** (union-find), first from **reference and resource edges**: a node whose
   input is a ref (its OpDef input ``is_ref``) or a resource handle is colocated with the node
   producing it (``IdentityN`` and the functional ops are exempt, as in TensorFlow). Where the
   two ask for incompatible devices, the consumer's request is dropped for the producer's (the
   variable wins; TensorFlow does this in strict mode too and says "Ignoring device
   specification ... because the input edge from 'v' is a reference connection").
   Then from ``_class`` (``loc:@x``): every node is in the group of its own name and of each
   ``loc:@`` name it lists. Two requests in one group are merged field by field
   (``DeviceNameUtils::MergeDevNames``). On a conflict, strict placement fails with TensorFlow's
   error (``Cannot colocate nodes {{colocation_node b}} and {{colocation_node a}}: Cannot merge
   devices with incompatible types: '/device:GPU:0' and '/device:CPU:0'``); soft placement
   resolves it as TensorFlow does: **neither request wins** -- a conflicting device type drops
   the type and the index (the group goes wherever all its members have kernels, GPU first), a
   conflicting index drops the index (the lowest-numbered device of the type), and a
   conflicting job, replica or task drops the colocation itself (the node is placed on its own).
   A group whose members have no device type in common cannot be formed (strict: TensorFlow's
   error; soft: the colocation is dropped).
3. **Kernels.** A group goes to a device whose type has a kernel for every member
   (``has_kernel(op, device_type)``). Among the devices that match the group's request, the
   preferred type comes first (GPU before CPU, as TensorFlow's device priorities), then the
   lowest index. TensorFlow's two heuristics are kept: a node with no inputs and one (non-ref)
   output (a Const, a Placeholder, a VarHandleOp) is placed last, with its consumers when they
   all share a device; a Shape, Size or Rank node, or an unpinned Identity between two nodes
   that ask for the same device, goes with its input.
4. **Soft placement** (on by default; ``allow_soft_placement=False`` is TensorFlow's strict
   mode and its ``InvalidArgumentError``) re-targets a group whose request cannot be honoured:
   a device this host lacks (``/device:GPU:0`` on a CPU-only host, ``/gpu:3`` on a 2-GPU host),
   a device type without a kernel for a member, or another job, replica or task. It tries, in
   order: the requested type and index on this host, the requested type at any index (the
   lowest: ``/gpu:3`` on a 2-GPU host goes to ``GPU:0``, as in TensorFlow, whose soft placement
   takes the first device of the preferred type), then any device with kernels for the whole
   group (GPU first). It prints one warning line to stderr saying how many nodes moved, from
   where, to where and why.
5. **Host memory.** For every node placed on a device whose buffers are not host memory (a
   GPU), which inputs and outputs live in host memory anyway: the args the kernel lists in
   ``host_memory``, every string and resource value (TensorFlow's ``DataTypeAlwaysOnHost``),
   and int32 values (TensorFlow registers its GPU kernels for int32 with every int32 arg in host
   memory; a kernel that wants an int32 arg on the device names it in ``device_memory``).

Where mgrt differs from TensorFlow, deliberately
------------------------------------------------
- A node pinned to another job, replica or task (``/job:worker/task:3/device:GPU:1``) is
  re-targeted to this host under soft placement. TensorFlow keeps the job when it soft-places
  and fails: "Cannot assign a device for operation X: {{node X}} was explicitly assigned to
  /job:worker/... but available devices are [ ... ]". Strict placement gives that error here.
- Soft placement keeps the requested device type when this host has a device of that type with
  the kernels (``/cpu:1`` on a host with one CPU and a GPU goes to ``CPU:0``); TensorFlow drops
  the type and index together, so it would pick ``GPU:0``. Both pick the lowest index.
- A node with no kernel on any device of this host is not an error here (TensorFlow: "No
  OpKernel was registered to support Op ..."): it is placed with its group as if it had every
  kernel and listed in ``Placement.missing_kernels``; the Plan refuses the ops it needs with one
  error listing them all, and nodes that no fetch needs do not matter.
- ``log_device_placement`` lines go to stderr only (TensorFlow prints them to stdout with
  ``printf`` and again to stderr through its logger with a ``placer.cc`` prefix), in
  TensorFlow's order: the nodes in graph order, then the no-input nodes of rule 3.
- Devices of one type are ordered by index (TensorFlow sorts names as strings, so ``GPU:10``
  comes before ``GPU:2``).
- Placing a list of ops (a pruned subgraph) sees only the edges and ``loc:@`` names among them;
  a Session places its whole graph once, as TensorFlow does, so that a variable and its users
  land on the same device whatever a step fetches.
"""

import gc
import sys
from collections import namedtuple

from mgrt.devices import device_spec
from mgrt.devices.device_spec import DeviceSpec
from mgrt.runtime.errors import InvalidArgumentError

__all__ = ["place", "Placement", "Moved", "registry_has_kernel", "DEVICE_TYPE_PRIORITY"]

#: TensorFlow's device-type priorities (``DeviceFactory``): the higher, the more preferred.
DEVICE_TYPE_PRIORITY = {"GPU": 210, "CPU": 70}

# Ops whose resource inputs are not colocated with their producers (TensorFlow's
# InputColocationExemptionRegistry, the core ones).
_EXEMPT_FROM_RESOURCE_COLOCATION = frozenset({
    "IdentityN", "If", "StatelessIf", "While", "StatelessWhile", "Case", "StatelessCase",
    "PartitionedCall", "StatefulPartitionedCall",
})
_METADATA_OPS = frozenset({"Shape", "Size", "Rank"})
_IDENTITY_OPS = frozenset({"Identity", "RefIdentity"})
_VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp", "TemporaryVariable"})

_DT_INT32, _DT_STRING, _DT_RESOURCE = 3, 7, 20
# The executor runs the control-flow ops itself (no kernels); on a GPU their predicates live in
# host memory, as TensorFlow's GPU registrations of Switch and LoopCond have them.
_CONTROL_FLOW_HOST_MEMORY = {"Switch": ("pred",), "RefSwitch": ("pred",),
                             "LoopCond": ("input", "output")}
_REF = 100

Moved = namedtuple("Moved", ["op", "requested", "assigned", "reason"])
Moved.__doc__ = """A node placed elsewhere than it asked: the Operation, its ``device`` field as
written, the Device it got, and why (``"no such device on this host"``, ``"no GPU kernel for
Foo"``, ``"colocated with 'v', which asks for /device:CPU:0"``)."""


# ---------------------------------------------------------------------------------------------
# kernels


def registry_has_kernel(op, device_type):
    """The default ``has_kernel``: the KernelDef mgrt's kernel registry has for ``op`` on
    ``device_type`` (honouring its type constraints), or None."""
    global _kernel_registry
    kr = _kernel_registry
    if kr is None:
        from mgrt.runtime import kernel_registry as kr
        _kernel_registry = kr
    key = (op.type, device_type)
    kr.load_all()
    lst = kr._REGISTRY.get(key)
    entry = _kernel_cache.get(key)
    if entry is None or entry[0] is not lst or entry[1] != len(lst or ()):
        entry = _kernel_entry(lst, key)
    kds = entry[2]
    if not kds:
        return None
    attr = None
    for kd, constraints in kds:
        if not constraints:
            return kd
        if attr is None:
            attr = op._node_def.attr
        for name, allowed in constraints:
            if name not in attr:
                continue
            value = attr[name]
            which = value.WhichOneof("value")
            if which == "type":
                if _base(value.type) not in allowed:
                    break
            elif which == "list":
                if any(_base(t) not in allowed for t in value.list.type):
                    break
        else:
            return kd
    return None


_kernel_registry = None
_kernel_cache = {}  # (op type, device type) -> (registry list, its length, [(kd, constraints)])


def _base(e):
    return e - _REF if e > _REF else e


def _kernel_entry(lst, key):
    kds = []
    for kd in lst or ():
        constraints = tuple((name, frozenset(_enum(t) for t in allowed))
                            for name, allowed in kd.type_constraints.items())
        kds.append((kd, constraints))
    entry = (lst, len(lst or ()), kds)
    _kernel_cache[key] = entry
    return entry


# ---------------------------------------------------------------------------------------------
# device names as 5-tuples (job, replica, task, type, index); None = unspecified


def _fields(device_string, op_name, cache):
    f = cache.get(device_string)
    if f is None:
        if device_string:
            from mgrt.devices.device_spec import parse_device_for_node

            s = parse_device_for_node(device_string, op_name)
            f = (None if s.job == "*" else s.job, s.replica, s.task,
                 None if s.device_type == "*" else s.device_type, s.device_index)
        else:
            f = (None, None, None, None, None)
        cache[device_string] = f
    return f


def _fmt(f):
    """TensorFlow's ``ParsedNameToString``: device_spec's form, plus ``/device:*:N`` for an
    index without a type."""
    job, replica, task, dtype, index = f
    out = device_spec._to_string(job, replica, task, dtype, index if dtype is not None else None)
    if dtype is None and index is not None:
        out += "/device:*:%d" % index
    return out


def _compatible(a, b):
    for x, y in zip(a, b):
        if x is not None and y is not None and x != y:
            return False
    return True


_FIELD_WORDS = ("jobs", "replicas", "tasks", "types", "ids")


def _merge(target, other, soft):
    """``DeviceNameUtils::MergeDevNames(target, other, soft)`` -> (merged, error or None)."""
    t = list(target)
    for k in range(3):
        if other[k] is not None:
            if t[k] is not None and t[k] != other[k]:
                return None, (f"Cannot merge devices with incompatible {_FIELD_WORDS[k]}: "
                              f"'{_fmt(target)}' and '{_fmt(other)}'")
            t[k] = other[k]
    if other[3] is not None:
        if t[3] is not None and t[3] != other[3]:
            if not soft:
                return None, (f"Cannot merge devices with incompatible types: "
                              f"'{_fmt(target)}' and '{_fmt(other)}'")
            t[3] = t[4] = None
            return tuple(t), None
        t[3] = other[3]
    if other[4] is not None:
        if t[4] is not None and t[4] != other[4]:
            if not soft:
                return None, (f"Cannot merge devices with incompatible ids: "
                              f"'{_fmt(target)}' and '{_fmt(other)}'")
            t[4] = None
            return tuple(t), None
        t[4] = other[4]
    return tuple(t), None


# ---------------------------------------------------------------------------------------------
# op helpers


def _arg_ranges(op, args):
    """{arg name: (start, stop)} over the flat inputs or outputs of ``op`` (None if unknown)."""
    attr = op._node_def.attr
    out, pos = {}, 0
    for arg in args:
        if arg.number_attr:
            n = attr[arg.number_attr].i if arg.number_attr in attr else 0
        elif arg.type_list_attr:
            n = len(attr[arg.type_list_attr].list.type) if arg.type_list_attr in attr else 0
        else:
            n = 1
        out[arg.name] = (pos, pos + n)
        pos += n
    return out


def _input_is_ref(op, k):
    """Whether the OpDef declares the ``k``-th flat input of ``op`` a ref (True if unknown)."""
    op_def = op.op_def
    if op_def is None:
        return True
    for name, (a, b) in _arg_ranges(op, op_def.input_arg).items():
        if a <= k < b:
            for arg in op_def.input_arg:
                if arg.name == name:
                    return bool(arg.is_ref)
    return True


def _enum(dtype):
    try:
        return dtype.as_datatype_enum
    except AttributeError:
        return int(dtype)


def _host_flags(op, enums, names_host, names_device, args, int32_on_host):
    """One bool per flat arg: in host memory on a non-host device."""
    flags = []
    for e in enums:
        base = e - _REF if e > _REF else e
        flags.append(base == _DT_STRING or base == _DT_RESOURCE
                     or (int32_on_host and base == _DT_INT32))
    if (names_host or names_device) and args is not None:
        for name, (a, b) in _arg_ranges(op, args).items():
            if name in names_host:
                for k in range(a, min(b, len(flags))):
                    flags[k] = True
            elif name in names_device:
                for k in range(a, min(b, len(flags))):
                    base = enums[k] - _REF if enums[k] > _REF else enums[k]
                    if base == _DT_INT32:
                        flags[k] = False
    return tuple(flags)


def kernel_host_memory(node_def, op_def, input_dtypes, output_dtypes, kernel_def=None):
    """``(input flags, output flags)``: for a node whose kernel ``kernel_def`` runs on a
    non-host device, which flat inputs and outputs live in host memory (the rule of step 5
    above). For op-level tests and tools that have a NodeDef rather than a placed graph."""
    class _Op:
        _node_def = node_def

    names_host = frozenset(getattr(kernel_def, "host_memory", None) or ())
    names_device = frozenset(getattr(kernel_def, "device_memory", None) or ())
    ins = tuple(_enum(t) for t in input_dtypes)
    outs = tuple(_enum(t) for t in output_dtypes)
    return (_host_flags(_Op, ins, names_host, names_device,
                        op_def.input_arg if op_def is not None else None, True),
            _host_flags(_Op, outs, names_host, names_device,
                        op_def.output_arg if op_def is not None else None, True))


# ---------------------------------------------------------------------------------------------
# the Placement


class Placement:
    """Where every node runs, and what the executor needs to plan copies.

    - ``device_of(op)`` (an Operation, a Tensor or a name) -> Device; ``by_device()``;
      ``group_of(op)``; ``colocation_groups()``;
    - ``moved``: a ``Moved(op, requested, assigned, reason)`` per node placed elsewhere than its
      ``device`` field asks; ``missing_kernels``: nodes with no kernel on any device here;
      ``ignored_colocations``: ``(op, group, message)`` for ``loc:@`` requests soft placement
      dropped; ``info_lines``: TensorFlow's INFO lines about both kinds of dropped requests
      ("Ignoring device specification ...", "Ignoring request to colocate ..."), printed
      before the placement lines with ``log_device_placement``;
    - host memory: ``input_host_memory(op)`` / ``output_host_memory(op)`` (a bool per flat
      input / output), ``input_device(op, i)`` / ``output_device(op, i)`` (the Device whose
      memory holds the value: ``host_device`` for host-memory args);
    - ``order``: the nodes in TensorFlow's placement (and log) order; ``log_lines()``,
      ``warning()``, ``summary()``.
    """

    def __init__(self, ops, assigned, devices, host_device, order, moved, missing, ignored,
                 roots, host_memory, allow_soft_placement, info_lines, requested, local):
        self.ops = ops
        self.devices = list(devices)
        self.host_device = host_device
        self.order = order
        self.moved = moved
        self.missing_kernels = missing
        self.ignored_colocations = ignored
        self.allow_soft_placement = allow_soft_placement
        self._assigned = assigned
        self._roots = roots
        self._host_memory = host_memory  # index -> (in_flags, out_flags), non-host devices only
        self.info_lines = info_lines
        self._requested = requested
        self._local = local
        self._index = {id(op): i for i, op in enumerate(ops)}
        self._by_name = None
        self._groups = None

    # -- lookup ----------------------------------------------------------------------------

    def _i(self, op):
        i = self._index.get(id(op))
        if i is not None:
            return i
        if isinstance(op, str):
            if self._by_name is None:
                self._by_name = {o.name: k for k, o in enumerate(self.ops)}
            name = op[1:] if op.startswith("^") else op
            i = self._by_name.get(name)
            if i is None and ":" in name:
                i = self._by_name.get(name.rsplit(":", 1)[0])
            if i is not None:
                return i
            raise KeyError(f"No node named {op!r} was placed")
        inner = getattr(op, "op", None)  # a Tensor
        if inner is not None and inner is not op:
            return self._i(inner)
        raise KeyError(f"{op!r} was not placed")

    def device_of(self, op):
        """The Device of ``op`` (an Operation, a Tensor or a node name)."""
        return self._assigned[self._i(op)]

    def __getitem__(self, op):
        return self.device_of(op)

    def requested_spec(self, op):
        """What ``op``'s ``device`` field asks for, as a DeviceSpec whose unspecified job,
        replica and task are this process's (``/device:GPU:0`` ->
        ``/job:localhost/replica:0/task:0/device:GPU:0``); type and index stay as written."""
        job, replica, task, dtype, index = self._requested[self._i(op)]
        lj, lr, lt = self._local
        return DeviceSpec(job=lj if job is None else job, replica=lr if replica is None
                          else replica, task=lt if task is None else task, device_type=dtype,
                          device_index=index)

    def as_dict(self):
        """``{node name: device name}`` (for JSON output)."""
        return {op.name: d.name for op, d in zip(self.ops, self._assigned)}

    def __contains__(self, op):
        try:
            self._i(op)
            return True
        except KeyError:
            return False

    def __len__(self):
        return len(self.ops)

    def __iter__(self):
        """``(op, device)`` in graph order."""
        return iter(zip(self.ops, self._assigned))

    def items(self):
        return list(zip(self.ops, self._assigned))

    def by_device(self):
        """``{Device: [ops in graph order]}``, in the order of ``devices`` (empty ones left out)."""
        out = {d: [] for d in self.devices}
        for op, d in zip(self.ops, self._assigned):
            out.setdefault(d, []).append(op)
        return {d: v for d, v in out.items() if v}

    def _group_lists(self):
        if self._groups is None:
            groups = {}
            for i, r in enumerate(self._roots):
                groups.setdefault(r, []).append(i)
            self._groups = groups
        return self._groups

    def group_of(self, op):
        """The ops colocated with ``op`` (itself included), in graph order."""
        i = self._i(op)
        return [self.ops[k] for k in self._group_lists()[self._roots[i]]]

    def colocation_groups(self):
        """Every group of more than one node, as lists of ops in graph order."""
        return [[self.ops[k] for k in members]
                for members in self._group_lists().values() if len(members) > 1]

    # -- host memory -----------------------------------------------------------------------

    def input_host_memory(self, op):
        """A bool per flat input of ``op``: whether its kernel reads it from host memory.
        All True on a host-memory device (the CPU)."""
        i = self._i(op)
        hm = self._host_memory.get(i)
        if hm is None:
            return (True,) * len(self.ops[i].inputs)
        return hm[0]

    def output_host_memory(self, op):
        """A bool per output of ``op``: whether its kernel writes it to host memory."""
        i = self._i(op)
        hm = self._host_memory.get(i)
        if hm is None:
            return (True,) * len(self.ops[i].outputs)
        return hm[1]

    def input_device(self, op, index):
        """The Device whose memory input ``index`` of ``op`` must be in when its kernel runs."""
        i = self._i(op)
        hm = self._host_memory.get(i)
        if hm is not None and hm[0][index]:
            return self.host_device
        return self._assigned[i]

    def output_device(self, op, index):
        """The Device whose memory holds output ``index`` of ``op`` after its kernel ran."""
        i = self._i(op)
        hm = self._host_memory.get(i)
        if hm is not None and hm[1][index]:
            return self.host_device
        return self._assigned[i]

    def needs_copy(self, tensor, consumer, input_index):
        """Whether the value of ``tensor`` must be copied for input ``input_index`` of
        ``consumer``: True when it lives in the memory of another device than the one the
        consumer's kernel reads it from (two host-memory devices share memory)."""
        src = self.output_device(tensor.op, tensor.value_index)
        dst = self.input_device(consumer, input_index)
        if src is dst or src == dst:
            return False
        return not (src.is_host_memory and dst.is_host_memory)

    # -- reports ---------------------------------------------------------------------------

    def log_lines(self):
        """TensorFlow's ``log_device_placement`` lines, ``name: (Op): device``, in its order."""
        a = self._assigned
        return [f"{op.name}: ({op.type}): {a[i].name}"
                for i, op in ((self._index[id(o)], o) for o in self.order)]

    def warning(self):
        """The one-line warning about moved nodes (None when nothing moved)."""
        if not self.moved:
            return None
        buckets = {}
        for m in self.moved:
            key = (m.requested, m.assigned.name, m.reason)
            buckets[key] = buckets.get(key, 0) + 1
        ranked = sorted(buckets.items(), key=lambda kv: -kv[1])
        parts = [f"{n} pinned to {req or '(no device)'} -> {dev} ({why})"
                 for (req, dev, why), n in ranked[:3]]
        if len(ranked) > 3:
            rest = sum(n for _, n in ranked[3:])
            parts.append(f"{rest} more in {len(ranked) - 3} other ways (Placement.moved "
                         f"lists every node)")
        what = "soft placement" if self.allow_soft_placement else "placement"
        tail = ""
        if not any(d.device_type == "GPU" for d in self.devices) and any(
                m.reason == "no such device on this host" and "GPU" in (m.requested or "").upper()
                for m in self.moved):
            from mgrt.devices import gpu_status

            tail = f". GPUs: {gpu_status()}"
        return (f"mgrt: {what} moved {len(self.moved)} of {len(self.ops)} nodes: "
                + "; ".join(parts) + tail)

    def summary(self, verbose=False):
        """Text for ``mgrt inspect --placement``: nodes per device (with op types), the nodes
        moved and why, colocation groups, host-memory args, nodes without kernels; with
        ``verbose``, every node's line."""
        lines = [f"Placement of {len(self.ops)} nodes on {len(self.devices)} device"
                 f"{'s' if len(self.devices) != 1 else ''} "
                 f"(soft placement {'on' if self.allow_soft_placement else 'off'})"]
        for d, ops in self.by_device().items():
            types = {}
            for op in ops:
                types[op.type] = types.get(op.type, 0) + 1
            top = sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{t} {n}" for t, n in top[:8])
            if len(top) > 8:
                shown += f", ... ({len(top) - 8} more op types)"
            lines.append(f"  {d.name}: {len(ops)} nodes ({shown})")
        for d in self.devices:
            if d not in self.by_device():
                lines.append(f"  {d.name}: 0 nodes")
        w = self.warning()
        if w:
            lines.append("Moved: " + w.split(": ", 1)[1])
        groups = self.colocation_groups()
        if groups:
            big = max(groups, key=len)
            head = next((op for op in big if op.type in _VARIABLE_OPS), big[0])
            lines.append(f"Colocation groups: {len(groups)} of more than one node (largest: "
                         f"{len(big)} nodes with '{head.name}')")
        if self.ignored_colocations:
            lines.append(f"Colocations dropped by soft placement: "
                         f"{len(self.ignored_colocations)}")
            for op, group, msg in self.ignored_colocations[:5]:
                lines.append(f"  {op.name} with group '{group}': {msg}")
        n_in = n_out = 0
        for i, (fi, fo) in self._host_memory.items():
            n_in += sum(fi)
            n_out += sum(fo)
        if self._host_memory:
            lines.append(f"Host memory on non-host devices: {n_in} inputs and {n_out} outputs "
                         f"of {len(self._host_memory)} nodes")
        if self.missing_kernels:
            types = sorted({op.type for op in self.missing_kernels})
            lines.append(f"No kernel on any device of this host: {len(self.missing_kernels)} "
                         f"nodes of {len(types)} op types: {', '.join(types)}")
        if verbose:
            lines.append("Nodes:")
            a = self._assigned
            for i, op in enumerate(self.ops):
                extra = ""
                hm = self._host_memory.get(i)
                if hm is not None and (any(hm[0]) or any(hm[1])):
                    ins = [k for k, f in enumerate(hm[0]) if f]
                    outs = [k for k, f in enumerate(hm[1]) if f]
                    extra = f"  [host memory: inputs {ins}, outputs {outs}]"
                lines.append(f"  {op.name}: ({op.type}): {a[i].name}{extra}")
        return "\n".join(lines)

    def __repr__(self):
        counts = ", ".join(f"{d.short_name}: {len(v)}" for d, v in self.by_device().items())
        return f"<Placement {len(self.ops)} nodes ({counts}), {len(self.moved)} moved>"


# ---------------------------------------------------------------------------------------------
# the placer


def _tf_order(n, preds, topo):
    """TensorFlow's node order: its GraphConstructor's (ready nodes, lowest index first; a
    Merge fed by a NextIteration is ready after its other inputs). That is graph order when
    graph order is already topological, as in every graph TensorFlow wrote."""
    if topo:
        return list(range(n))
    from mgrt.runtime.graph import ordered_topological_sort

    succ = [[] for _ in range(n)]
    for i, p in enumerate(preds):
        for j in p:
            succ[j].append(i)
    order = ordered_topological_sort([len(p) for p in preds], succ)
    if len(order) < n:  # a cycle TensorFlow would refuse; place the rest in graph order
        seen = set(order)
        order.extend(i for i in range(n) if i not in seen)
    return order


try:
    from mgrt.runtime.graph import Operation as _Operation
except ImportError:  # pragma: no cover
    _Operation = None


class _Scan:
    """One pass over the ops: requests, edges, and what the heuristics need."""

    __slots__ = ("device", "type", "preds", "topo", "special", "n_in_edges", "out_edges",
                 "data_src", "generator", "name", "classes")

    def __init__(self, ops, index):
        n = len(ops)
        self.device = device = [None] * n
        self.type = types = [None] * n
        self.preds = preds = [None] * n
        self.n_in_edges = n_in = [0] * n
        self.out_edges = out_edges = [[] for _ in range(n)]
        self.data_src = data_src = [None] * n  # producer of input 0
        self.generator = generator = [False] * n
        self.special = special = []  # (consumer, input index, producer, is_ref) in edge order
        self.name = names = [None] * n
        self.classes = classes = {}  # i -> the loc:@ names of its _class attr
        topo = True
        get = index.get
        fast = all(type(op) is _Operation for op in ops)
        next_iteration = ("NextIteration", "RefNextIteration")
        for i, op in enumerate(ops):
            if fast:
                nd = op._node_def
                dev, typ, names[i] = nd.device, nd.op, nd.name
                ins, ctl = op._inputs, op._control_inputs
                attr = nd.attr
            else:
                dev, typ, names[i] = op.device, op.type, op.name
                ins, ctl = op.inputs, op.control_inputs
                nd = getattr(op, "_node_def", None)
                attr = nd.attr if nd is not None else ()
            if "_class" in attr:
                classes[i] = [s[5:].decode("utf-8", "replace") for s in attr["_class"].list.s
                              if s.startswith(b"loc:@")]
            device[i] = dev
            types[i] = typ
            p = []
            merge = typ == "Merge" or typ == "RefMerge"
            k = 0
            for t in ins:
                if fast:
                    j = get(id(t._op))
                    e = t._dtype._type_enum
                else:
                    j = get(id(t.op))
                    e = _enum(t.dtype)
                if j is not None:
                    if e == _DT_RESOURCE or e > _REF:
                        special.append((i, k, j, e > _REF))
                    if k == 0:
                        data_src[i] = j
                    out_edges[j].append(i)
                    if not (merge and types[j] in next_iteration):
                        p.append(j)
                        if j >= i:
                            topo = False
                k += 1
            for c in ctl:
                j = get(id(c))
                if j is not None:
                    out_edges[j].append(i)
                    p.append(j)
                    if j >= i:
                        topo = False
            preds[i] = p
            n_in[i] = k + len(ctl)
            if not k:
                outs = op._outputs if fast else op.outputs
                if len(outs) == 1 and (outs[0]._dtype._type_enum if fast
                                       else _enum(outs[0].dtype)) <= _REF:
                    generator[i] = True
        if not topo:
            # a producer listed after its consumer: types[j] was unknown when the edge was seen
            for i in range(n):
                if types[i] in ("Merge", "RefMerge"):
                    op = ops[i]
                    ins = op._inputs if fast else op.inputs
                    drop = {get(id(t._op if fast else t.op)) for t in ins
                            if (t._op if fast else t.op).type in ("NextIteration",
                                                                  "RefNextIteration")}
                    preds[i] = [j for j in preds[i] if j not in drop]
        self.topo = topo


def place(graph_or_ops, devices, has_kernel=None, allow_soft_placement=True,
          log_device_placement=False, job="localhost", replica=0, task=0, *,
          stream=None, warn=True):
    """Place every node of ``graph_or_ops`` (a Graph, or an iterable of its Operations) on one
    of ``devices`` (mgrt Devices of this process, e.g. ``mgrt.devices.list_devices()``).

    ``has_kernel(op, device_type)`` says whether ``op`` can run on devices of that type; a
    KernelDef-like result (with ``host_memory``, optionally ``device_memory``: arg names) also
    says which of its args live in host memory. The default asks mgrt's kernel registry.
    ``job``/``replica``/``task`` name this process. Messages (the moved-nodes warning when
    ``warn``, the ``log_device_placement`` lines) go to ``stream`` (default: stderr).

    Returns a Placement. Raises InvalidArgumentError with TensorFlow's message where strict
    placement (``allow_soft_placement=False``) cannot honour a request, for a colocation
    conflict under strict placement, and for a reference or resource edge between nodes that
    have no device type in common.
    """
    # Placing allocates a few objects per node, all kept; the cyclic collector would scan the
    # whole graph again and again for nothing (as in the importer), so it is paused meanwhile.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _place(graph_or_ops, devices, has_kernel, allow_soft_placement,
                      log_device_placement, job, replica, task, stream, warn)
    finally:
        if was_enabled:
            gc.enable()


def _place(graph_or_ops, devices, has_kernel, allow_soft_placement, log_device_placement, job,
           replica, task, stream, warn):
    if has_kernel is None:
        has_kernel = registry_has_kernel
    soft = bool(allow_soft_placement)
    if hasattr(graph_or_ops, "get_operations"):
        ops = graph_or_ops.get_operations()
    else:
        ops = list(graph_or_ops)
    devices = list(devices)
    if not devices:
        raise ValueError("place() needs at least one device")
    n = len(ops)
    index = {id(op): i for i, op in enumerate(ops)}

    # -- devices, by preference: type priority, then index ----------------------------------
    def pref(d):
        return (-DEVICE_TYPE_PRIORITY.get(d.device_type, 0), d.device_type, d.index)

    ranked = sorted(devices, key=pref)
    types = []
    for d in ranked:
        if d.device_type not in types:
            types.append(d.device_type)
    bit = {t: 1 << k for k, t in enumerate(types)}
    all_bits = (1 << len(types)) - 1
    host_device = next((d for d in ranked if d.device_type == "CPU"), None) or \
        next((d for d in ranked if getattr(d, "is_host_memory", False)), ranked[0])
    names_sorted = sorted(d.name for d in devices)
    non_host = {d.device_type for d in devices if not getattr(d, "is_host_memory", False)}

    # -- one pass over the graph ------------------------------------------------------------
    scan = _Scan(ops, index)
    dev_str, op_type = scan.device, scan.type
    order = _tf_order(n, scan.preds, scan.topo)

    # -- requests and kernels ---------------------------------------------------------------
    cache = {}
    own = [None] * n
    own_mask = [0] * n  # the types ops[i] itself has kernels for
    mask = [0] * n  # the same, all types where it has none (it does not constrain its group)
    kernels = {}  # (i, type) -> has_kernel's result, for the types of non-host devices
    missing = []
    for i, op in enumerate(ops):
        f = cache.get(dev_str[i])
        own[i] = f if f is not None else _fields(dev_str[i], op.name, cache)
        m = 0
        for t in types:
            k = has_kernel(op, t)
            if k:
                m |= bit[t]
                if t in non_host:
                    kernels[(i, t)] = k
        own_mask[i] = m
        if m == 0:
            missing.append(i)
            m = all_bits
        mask[i] = m

    # -- union-find (TensorFlow's Member::Merge: union by rank, ties to x) --------------------
    parent = list(range(n))
    rank = [0] * n
    req = list(own)
    info_lines = []
    ignored = []

    def find(i):
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def colocate(x, y, soft_merge):
        """ColocateNodes(x, y) -> None or an error message (nothing changed on error)."""
        xr, yr = find(x), find(y)
        if xr == yr:
            return None
        if rank[xr] < rank[yr]:
            new, old = yr, xr
        else:
            new, old = xr, yr
        if req[new] == req[old]:
            merged, err = req[new], None
        else:
            merged, err = _merge(req[new], req[old], soft_merge)
        if err is not None:
            return (f"Cannot colocate nodes {{{{colocation_node {ops[x].name}}}}} and "
                    f"{{{{colocation_node {ops[y].name}}}}}: {err}")
        m = mask[new] & mask[old]
        if m == 0:
            return (f"Cannot colocate nodes {{{{colocation_node {ops[x].name}}}}} and "
                    f"{{{{colocation_node {ops[y].name}}}}} because no device type supports "
                    f"both of those nodes and the other nodes colocated with them.")
        if rank[xr] < rank[yr]:
            parent[xr] = yr
        elif rank[xr] > rank[yr]:
            parent[yr] = xr
        else:
            parent[yr] = xr
            rank[xr] += 1
        req[new] = merged
        mask[new] = m
        return None

    # reference and resource edges (TensorFlow: ColocateResourceAndRefEdges, first), in
    # TensorFlow's edge order
    special = scan.special
    if not scan.topo:
        pos = {i: p for p, i in enumerate(order)}
        special = sorted(special, key=lambda e: (pos[e[0]], e[1]))
    for i, k, j, is_ref in special:
        if op_type[i] in _EXEMPT_FROM_RESOURCE_COLOCATION:
            continue
        if is_ref and not _input_is_ref(ops[i], k):
            continue
        sr, dr = find(j), find(i)
        if sr == dr:
            continue
        if not _compatible(req[sr], req[dr]):
            info_lines.append(
                f"Ignoring device specification {_fmt(req[dr])} for node "
                f"'{ops[i].name}' because the input edge from '{ops[j].name}' is a "
                f"reference connection and already has a device field set to "
                f"{_fmt(req[sr])}")
            req[dr] = req[sr]
        err = colocate(j, i, soft)
        if err is not None:
            raise InvalidArgumentError(
                None, ops[i],
                "Nodes were connected by a reference or resource connection (requiring "
                "them to be on the same device), but the two nodes were assigned two "
                "different devices: " + err)

    # _class colocation groups (TensorFlow: ColocateAllNodes)
    group_root = {}
    op_name, classes = scan.name, scan.classes
    for i in order:
        name = op_name[i]
        if i in classes:
            names = classes[i] + [name]
        else:
            if name not in group_root:
                group_root[name] = i
                continue
            names = (name,)
        for g in names:
            first = group_root.get(g)
            if first is None:
                group_root[g] = i
                continue
            err = colocate(i, first, soft)
            if err is None:
                continue
            op = ops[i]
            if not soft:
                raise InvalidArgumentError(None, op, err)
            ignored.append((op, g, err))
            info_lines.append(
                f"Ignoring request to colocate node '{name}' with nodes in colocation "
                f"group '{g}' because soft placement is on and an attempt at doing so "
                f"resulted in the following error: INVALID_ARGUMENT: {err}")

    roots = [find(i) for i in range(n)]
    group_members = {}

    def members(r):
        """The members of group ``r`` in graph order (the lists built on first use)."""
        if not group_members:
            for k, rk in enumerate(roots):
                group_members.setdefault(rk, []).append(k)
        return group_members[r]

    # -- candidate devices per (request, kernel types) --------------------------------------
    def is_local(f):
        return ((f[0] is None or f[0] == job) and (f[1] is None or f[1] == replica)
                and (f[2] is None or f[2] == task))

    def matching(f, m):
        return [d for d in ranked
                if (f[3] is None or d.device_type == f[3])
                and (f[4] is None or d.index == f[4])
                and (m is None or m & bit[d.device_type])]

    cand_cache = {}

    def candidates(r, i):
        key = (req[r], mask[r])
        c = cand_cache.get(key)
        if c is not None:
            return c
        f, m = key
        c = matching(f, m) if is_local(f) else []
        if not c:
            if not soft:
                raise _strict_error(i, r)
            for relaxed in ((f[3], f[4]), (f[3], None), (None, None)):
                c = matching((None, None, None) + relaxed, m)
                if c:
                    break
        cand_cache[key] = c
        return c

    def _strict_error(i, r):
        op = ops[i]
        f = req[r]
        prefix = f"Cannot assign a device for operation {op.name}: "
        if own[i] == f:
            exists = matching(f, None) if is_local(f) else []
            if not exists:
                msg = (f"{{{{node {op.name}}}}} was explicitly assigned to {op.device} but "
                       f"available devices are [ {', '.join(names_sorted)} ]. Make sure the "
                       f"device specification refers to a valid device.")
                if f[3] is not None and f[3].upper() == "GPU" and "GPU" not in bit:
                    msg += (" The requested device appears to be a GPU, but this host has no "
                            "GPU that mgrt can use.")
                msg += (" (mgrt: with allow_soft_placement=True, its default, the node would "
                        "be placed on this host; or import with clear_devices=True.)")
            elif f[3] is not None:
                b = bit.get(f[3], 0)
                lacking = [ops[k] for k in members(r) if own_mask[k] and not own_mask[k] & b]
                msg = (f"Could not satisfy explicit device specification '{op.device}' because "
                       f"no supported kernel for {f[3]} devices is available.")
                if lacking:
                    msg += ("\nNodes without a kernel for " + f[3] + ": "
                            + ", ".join(f"'{o.name}' ({o.type})" for o in lacking[:10]))
                msg += f"\nOp: {op.type}"
            else:
                msg = f"Could not satisfy explicit device specification '{op.device}'"
        else:
            msg = (f"Could not satisfy explicit device specification '{op.device}' because the "
                   f"node {{{{colocation_node {op.name}}}}} was colocated with a group of nodes "
                   f"that required incompatible device '{_fmt(f)}'. All available devices "
                   f"[{', '.join(d.name for d in devices)}]. ")
        return InvalidArgumentError(None, op, prefix + msg)

    # -- assignment (TensorFlow's Placer::Run) ----------------------------------------------
    out_edges, n_in_edges, data_src = scan.out_edges, scan.n_in_edges, scan.data_src
    generator = scan.generator
    assigned = [None] * n
    group_dev = {}
    log_order = []
    second = []
    for i in order:
        if generator[i]:
            second.append(i)
            continue
        r = roots[i]
        d = group_dev.get(r)
        if d is None:
            c = candidates(r, i)
            d = c[0]
            t = op_type[i]
            src = data_src[i]
            if src is not None and len(c) > 1 and (
                    t in _METADATA_OPS
                    or (t in _IDENTITY_OPS and not dev_str[i] and n_in_edges[i] == 1
                        and len(out_edges[i]) <= 1
                        and dev_str[src] == (dev_str[out_edges[i][0]] if out_edges[i]
                                             else ""))):
                a = assigned[src]
                if a is not None and a in c:
                    d = a
            group_dev[r] = d
        assigned[i] = d
        log_order.append(i)
    for i in second:
        r = roots[i]
        d = group_dev.get(r)
        if d is None:
            c = candidates(r, i)
            d = c[0]
            outs = out_edges[i]
            if outs and len(c) > 1:
                first = assigned[outs[0]]
                if first is not None and first in c and all(assigned[k] is first
                                                            for k in outs):
                    d = first
            group_dev[r] = d
        assigned[i] = d
        log_order.append(i)

    # -- moved nodes and why ----------------------------------------------------------------
    moved = []
    unspecified = (None, None, None, None, None)
    absent = {}
    for i in range(n):
        f = own[i]
        if f == unspecified:
            continue
        d = assigned[i]
        if (is_local(f) and (f[3] is None or f[3] == d.device_type)
                and (f[4] is None or f[4] == d.index)):
            continue
        op = ops[i]
        b = bit.get(f[3], 0)
        r = roots[i]
        no_device = absent.get(f)
        if no_device is None:
            no_device = absent[f] = not (is_local(f) and matching(f, None))
        if no_device:
            if not is_local(f) and matching(f, None):
                why = "another job, replica or task: re-targeted to this host"
            else:
                why = "no such device on this host"
        elif f[3] is not None and own_mask[i] and not own_mask[i] & b:
            why = f"no {f[3]} kernel for {op.type}"
        else:
            why = None
            if f[3] is not None and not mask[r] & b:
                for k in members(r):
                    if own_mask[k] and not own_mask[k] & b:
                        why = (f"colocated with '{ops[k].name}' ({ops[k].type}), which has no "
                               f"{f[3]} kernel")
                        break
            if why is None:
                for k in members(r):
                    if k != i and not _compatible(own[k], f):
                        why = f"colocated with '{ops[k].name}', which asks for {ops[k].device}"
                        break
            if why is None:
                why = f"its colocation group asks for {_fmt(req[r]) or 'any device'}"
        moved.append(Moved(op, op.device, d, why))

    # -- host memory on non-host devices ----------------------------------------------------
    host_memory = {}
    flag_cache = {}
    for i in range(n):
        d = assigned[i]
        if d.device_type not in non_host:
            continue
        op = ops[i]
        kd = kernels.get((i, d.device_type))
        names_host = getattr(kd, "host_memory", None) or _CONTROL_FLOW_HOST_MEMORY.get(op.type, ())
        names_device = getattr(kd, "device_memory", None) or ()
        in_enums = tuple(_enum(t.dtype) for t in op.inputs)
        out_enums = tuple(_enum(t.dtype) for t in op.outputs)
        if not names_host and not names_device:
            key = (in_enums, out_enums)
            hm = flag_cache.get(key)
            if hm is None:
                hm = flag_cache[key] = (_host_flags(op, in_enums, (), (), None, True),
                                        _host_flags(op, out_enums, (), (), None, True))
        else:
            op_def = op.op_def
            hm = (_host_flags(op, in_enums, frozenset(names_host), frozenset(names_device),
                              op_def.input_arg if op_def is not None else None, True),
                  _host_flags(op, out_enums, frozenset(names_host), frozenset(names_device),
                              op_def.output_arg if op_def is not None else None, True))
        host_memory[i] = hm

    placement = Placement(
        ops, assigned, devices, host_device, [ops[i] for i in log_order], moved,
        [ops[i] for i in missing], ignored, roots, host_memory, soft, info_lines, own,
        (job, replica, task))

    out = stream if stream is not None else sys.stderr
    if log_device_placement:
        text = info_lines + placement.log_lines()
        if text:
            out.write("\n".join(text) + "\n")
    if warn and moved:
        out.write(placement.warning() + "\n")
    try:
        out.flush()
    except (AttributeError, ValueError):
        pass
    return placement
