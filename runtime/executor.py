"""Plans and their execution.

A Plan is built once per (fetches, feeds, targets) and cached on the Session: the graph pruned
to what the fetches and targets need (control dependencies included, stopping at fed tensors),
ordered, each node's kernel bound once (attrs decoded at plan time), every value given a slot,
and the last use of each slot known so its value is dropped as soon as it is dead. Running a
plan is then a loop over prepared steps with no name lookups, no attr decoding, no placement.
A plan without control flow that runs again is compiled into one Python function, a line per
step on local variables (``_compile_straight``): a step then costs its kernel call and little
more (``MGRT_COMPILE_AFTER``: loop runs before compiling, default 1; negative: never).

Reference values: a ref output (VariableV2, Assign, ...) is a ``Ref`` to the variable's buffer in
the session's store; an input the op definition declares as a ref gets the Ref (state kernels
write through it), any other input gets the value (read at that moment), as TensorFlow's
implicit dereference does.

Pass-through steps: in a plan without control flow whose values all live in host memory, an
Identity (StopGradient, PreventGradient, an unfed PlaceholderWithDefault) of a value is no
step at all: its readers and fetches read the value's own slot. The order of the remaining
steps is unchanged, so its control inputs still run before its readers. (An Identity of a ref
reads the variable at that point: it stays a step.) A NoOp is no step either.

Folded and memoized steps (as TensorFlow's grappler folds constants), in a plan without control
flow whose values all live in host memory: a Const, and an op TensorFlow does not mark stateful
whose inputs are all such values, runs once when the plan is built and its (read-only) outputs
are seeded into their slots at every run (``_fold_constants``); the ops whose values depend on
some values' shapes alone (Shape, ShapeN, Size, Rank and such ops of their outputs: a mean's
gradient) run as one step that reruns them only when those shapes change (``_memo_shapes``).
Nothing fetched is folded or memoized (a fetch is a new array each run), and a member that
fails is named as if it had run alone. ``FOLD`` (``MGRT_FOLD=0``) turns both off.

Fused steps: in a plan without control flow, a chain of CPU ops that kernels registered as one
(kernel_registry.register_fused: a Conv2D or MatMul whose output only its BiasAdd reads, and
the Relu that alone reads that; a MatMul whose output only a ReluGrad reads, as its gradient;
a MaxPoolGrad and the ReluGrad that alone reads it) runs as one step, as TensorFlow's grappler
remapper fuses them; nothing fetched or fed is inside a chain, and a member's failure names
that member's node. A BiasAddGrad of such a pool gradient's output is summed by that step in
the same pass (``_bias_into_pool_grads``: a second output). A gradient-descent or momentum
update of a MatMul's product that only it reads is one step with that MatMul, at the update's
position: for a big variable it may write in place, BLAS adds the product to the variable's
(or the accumulator's) buffer (``_updates_into_gemm``; kernels_cpu/state_ops.py
``_gemm_apply``). ``FUSE`` (``MGRT_FUSE=0`` in the environment) turns these rewrites off.

Concurrent pairs: in a plan without control flow that runs CPU convolutions on thread teams,
two independent convolution steps close to each other (a convolution's input and filter
gradients) run side by side, one per team thread, as one step (``_pair``), as TensorFlow's
inter-op threads run them; a member's failure names its node. ``PAIR`` (``MGRT_PAIR=0``)
turns this off.
"""

import operator
import os
import re
import time

import numpy as np

from mgrt.runtime import dtypes, errors, kernel_registry
from mgrt.runtime import graph as graph_lib
from mgrt.kernels_cpu import _team

CONTROL_FLOW_OPS = _CONTROL_FLOW_OPS = frozenset(("Switch", "RefSwitch", "Merge", "RefMerge", "Enter", "RefEnter",
                               "Exit", "RefExit", "NextIteration", "RefNextIteration",
                               "LoopCond"))
_MERGE = frozenset(("Merge", "RefMerge"))
_NEXT_ITERATION = frozenset(("NextIteration", "RefNextIteration"))
_SWITCH = frozenset(("Switch", "RefSwitch"))
_ENTER = frozenset(("Enter", "RefEnter"))
_EXIT = frozenset(("Exit", "RefExit"))
FUSE = os.environ.get("MGRT_FUSE", "1").strip().lower() not in ("0", "false", "no", "off")
PAIR = os.environ.get("MGRT_PAIR", "1").strip().lower() not in ("0", "false", "no", "off")


class Ref:
    """A reference to a ref variable's buffer (the value of a ``*_ref`` tensor)."""

    __slots__ = ("store", "key", "name")

    def __init__(self, store, key, name):
        self.store = store
        self.key = key
        self.name = name

    @property
    def value(self):
        v = self.store.get(self.key)
        if v is None:
            raise errors.FailedPreconditionError(
                None, None, f"Attempting to use uninitialized value {self.name}")
        return v

    @property
    def initialized(self):
        return self.store.get(self.key) is not None

    def assign(self, value):
        self.store[self.key] = value

    def __repr__(self):
        return f"<Ref {self.name}>"


class SessionState:
    """What lives as long as a Session: variable buffers (ref and resource), resources."""

    def __init__(self):
        self.variables = {}  # key -> array (ref variables: container/shared_name or node name)
        self.resources = {}  # handle key -> array (resource variables) or other resource objects
        self.var_devices = {}


class KernelContext:
    """Given to each kernel builder: the device, the session's state, the op's seeds."""

    __slots__ = ("device", "state", "graph_seed", "node_name", "graph")

    def __init__(self, device, state, graph, node_name):
        self.device = device
        self.state = state
        self.graph = graph
        self.graph_seed = graph.seed if graph is not None else None
        self.node_name = node_name


def _shape_str(x):
    if isinstance(x, Ref):
        x = x.store.get(x.key)
        if x is None:
            return "<uninitialized ref>"
    shape = getattr(x, "shape", None)
    if shape is None:
        return type(x).__name__
    return "[" + ",".join(str(d) for d in shape) + "]"


def _wrap_kernel_error(op, exc, inputs, device=None):
    if isinstance(exc, kernel_registry.FusedMemberError):  # as if the member had run alone
        return _wrap_kernel_error(op.members[exc.index], exc.exc, exc.inputs, device)
    shapes = ", ".join(_shape_str(x) for x in inputs)
    where = f"\n\t [[node {op.name} ({op.type}) with input shapes: {shapes}]]"
    if type(exc).__name__ == "OutOfMemoryError":  # CuPy's (cupy.cuda.memory)
        free = ""
        if device is not None:
            try:
                info = device.memory_info()
                free = (f" {device.name} has {info['free'] / 2**20:.1f} MiB free of "
                        f"{info['total'] / 2**20:.1f} MiB"
                        + (f"; mgrt's pool holds {info['pool_held'] / 2**20:.1f} MiB"
                           if "pool_held" in info else "") + ".")
            except Exception:  # noqa: BLE001 - the figures are a courtesy
                pass
        return errors.ResourceExhaustedError(
            op.node_def, op,
            f"OOM when running {op.name} ({op.type}) on "
            f"{device.name if device is not None else 'a GPU'}: {exc}.{free} Use a smaller "
            f"batch, or place some nodes on another device.{where}")
    if isinstance(exc, errors.OpError):
        cls = type(exc)
        return cls(op.node_def, op, exc.message + where)
    return errors.UnknownError(op.node_def, op,
                               f"{type(exc).__name__}: {exc}{where}")


class _Step:
    __slots__ = ("op", "run", "in_slots", "deref", "out_slots", "free_after", "n_out",
                 "device")


class Plan:
    """A pruned, ordered, kernel-bound program for one (fetches, feeds, targets)."""

    def __init__(self, graph, fetch_tensors, target_ops, feed_tensors, state, placement=None):
        """``placement``: the Session's Placement (``device_of``, ``input_device``,
        ``output_device``, ``host_device``), or None to run everything on the CPU."""
        self.graph = graph
        if placement is None:
            placement = _HostPlacement()
        device_of = placement.device_of
        fed = {id(t): t for t in feed_tensors}
        # --- prune: what the fetches and targets need ------------------------------------------
        roots = [t.op for t in fetch_tensors if id(t) not in fed] + list(target_ops)
        # A side-effect-free op that only a control edge asks for (the unused input gradient of
        # a MatMul, grouped into a train op by tf.gradients' tuple) changes nothing when it
        # runs: it is left out, as TensorFlow's graph optimizer does. What is left out never
        # holds a control-flow op, so the slim set has control flow exactly when the full one
        # does; then control edges carry deadness and frames, and nothing is left out.
        needed = _needed(roots, fed, prune_control_only=True)
        self.has_control_flow = any(op.type in _CONTROL_FLOW_OPS for op in needed.values())
        if self.has_control_flow:
            needed = _needed(roots, fed, prune_control_only=False)
        ops = sorted(needed.values(), key=lambda o: o._id)  # graph order

        # --- order: a topological order preferring graph order ---------------------------------
        pos = {id(op): i for i, op in enumerate(ops)}
        pending = [0] * len(ops)
        users = [[] for _ in ops]
        for i, op in enumerate(ops):
            deps = set()
            for t in op._inputs:
                if id(t) not in fed and id(t.op) in needed:
                    if op.type in _MERGE and t.op.type in _NEXT_ITERATION:
                        continue  # a while loop's back edge
                    deps.add(pos[id(t.op)])
            for c in op._control_inputs:
                if id(c) in needed:
                    deps.add(pos[id(c)])
            pending[i] = len(deps)
            for d in deps:
                users[d].append(i)
        order_idx = graph_lib.ordered_topological_sort(pending, users)
        if len(order_idx) != len(ops):
            done = set(order_idx)
            stuck = sorted(op.name for i, op in enumerate(ops) if i not in done)[:10]
            raise errors.InvalidArgumentError(None, None, f"Graph has a cycle among {stuck}")
        order = [ops[i] for i in order_idx]

        # --- kernels ------------------------------------------------------------------------------
        missing = {}
        kernel_defs = []
        nodes = []
        for op in order:
            device = device_of(op)
            node = kernel_registry.KernelNode.from_operation(op, device)
            if op.type in _CONTROL_FLOW_OPS:
                kernel_defs.append(None)
                nodes.append(node)
                continue
            kd = kernel_registry.lookup(op.type, device.device_type if device else "CPU", node.attrs)
            if kd is None:
                missing.setdefault(op.type, []).append(op.name)
            kernel_defs.append(kd)
            nodes.append(node)
        if missing:
            listing = "; ".join(f"{t} (e.g. node {names[0]!r}" +
                                (f", {len(names)} nodes)" if len(names) > 1 else ")")
                                for t, names in sorted(missing.items()))
            raise errors.NotFoundError(
                None, None, f"No kernel for {len(missing)} op type(s) this run needs: {listing}. "
                "mgrt cannot run these ops yet (`mgrt inspect` lists them).")

        # --- slots --------------------------------------------------------------------------------
        slot_of = {}
        n_slots = 0
        self.feed_slots = []
        for t in feed_tensors:
            slot_of[id(t)] = n_slots
            self.feed_slots.append(n_slots)
            n_slots += 1
        out_slots_of = []
        for op in order:  # every output's slot first: a loop's back edge refers forward
            outs = []
            for t in op._outputs:
                if id(t) in slot_of:  # fed: the kernel's value is not used
                    outs.append(-1)
                else:
                    slot_of[id(t)] = n_slots
                    outs.append(n_slots)
                    n_slots += 1
            out_slots_of.append(outs)
        crosses_devices = not all(d.is_host_memory for d in placement.devices)
        # --- copies: where a value lives in another device's memory than its consumer reads it
        # from, one copy step per (value, destination device), placed before its first consumer
        host = placement.host_device
        copy_of = {}  # (slot, destination device) -> slot of the copy
        steps = []
        self.n_copies = 0
        non_host_steps = []  # (step, device) of kernels on devices with memory of their own
        built = {}  # id(step) -> (KernelNode, KernelContext): for fusing
        for op, node, kd, outs in zip(order, nodes, kernel_defs, out_slots_of):
            in_slots = []
            for k, t in enumerate(op._inputs):
                s = slot_of[id(t)]
                if not crosses_devices:
                    in_slots.append(s)
                    continue
                src = host if id(t) in fed else placement.output_device(t.op, t.value_index)
                dst = placement.input_device(op, k)
                if src is dst or src == dst or (src.is_host_memory and dst.is_host_memory):
                    in_slots.append(s)
                    continue
                c = copy_of.get((s, dst))
                if c is None:
                    c = copy_of[(s, dst)] = n_slots
                    n_slots += 1
                    steps.append(_copy_step(t, s, c, src, dst))
                    self.n_copies += 1
                in_slots.append(c)
            st = _Step()
            st.op = op
            st.device = node.device
            ctx = KernelContext(node.device, state, graph, op.name)
            built[id(st)] = (node, ctx)
            if kd is None:
                st.run = None  # a control-flow op: the dataflow runner does it
            else:
                try:
                    st.run = kd.builder(node, ctx)
                except errors.OpError as e:
                    raise _wrap_kernel_error(op, e, []) from None
                except Exception as e:  # noqa: BLE001 - a builder failure names its node
                    raise _wrap_kernel_error(op, e, [], node.device) from None
                dev = node.device
                if dev is not None and not dev.is_host_memory:
                    non_host_steps.append((st, dev))
                    if getattr(dev, "is_simulated", False):
                        st.run = _checked_outputs(
                            st.run, op, [placement.output_device(op, k)
                                         for k in range(len(op._outputs))])
            st.in_slots = in_slots
            expected = op.op_def and _input_is_ref(op)
            # positions of the ref inputs this op reads by value (most steps have none)
            st.deref = tuple(i for i, t in enumerate(op._inputs)
                             if t.dtype.is_ref_dtype and not (expected and expected[i]))
            st.out_slots = outs
            st.n_out = len(outs)
            steps.append(st)
        self.fetch_slots = [slot_of[id(t)] for t in fetch_tensors]
        if FUSE and not self.has_control_flow and not crosses_devices:
            steps = _pass_through(steps, self.fetch_slots)
        self.const_slots = {}
        if FOLD and not self.has_control_flow and not crosses_devices:
            steps, self.const_slots, handles = _fold_constants(steps, set(self.fetch_slots))
            steps = _memo_shapes(steps, set(self.fetch_slots), self.const_slots)
            self.const_slots.update(handles)  # (no value: nothing is folded or memoized of them)
        if FUSE and not self.has_control_flow:
            steps = _fuse(steps, built, set(self.fetch_slots))
            steps = _bias_into_pool_grads(steps, built)
            steps = _updates_into_gemm(
                steps, built, set(self.fetch_slots) | set(self.feed_slots) | set(self.const_slots))
        # CPU kernels that run on thread teams (kernels_cpu/_team.py): the run holds BLAS at
        # one thread, so that no spinning BLAS thread shares a core with a team thread.
        self._team_hold = any(st.op.type in _team.TEAM_OPS
                              and getattr(st.device, "device_type", "CPU") == "CPU"
                              for st in steps)
        if PAIR and self._team_hold and not self.has_control_flow:
            steps = _pair(steps)
        # A device with a queue of its own (a GPU) is made current before its kernels run:
        # once per run when the plan uses one such device, before each of its steps otherwise.
        self._activate = None
        gpu_devices = {d for _, d in non_host_steps}
        if len(gpu_devices) == 1:
            self._activate = next(iter(gpu_devices)).activate
        elif gpu_devices:
            for st, dev in non_host_steps:
                st.run = _activating(st.run, dev.activate)
        self.n_slots = n_slots
        # fetched values that live in a device's memory come back to the host
        self.fetch_devices = []
        for k, t in enumerate(fetch_tensors):
            d = host if id(t) in fed else placement.output_device(t.op, t.value_index)
            if not d.is_host_memory:
                self.fetch_devices.append((k, d))
        # fetches that would hand out an array something else holds (a feed through an
        # Identity, a variable's buffer read by an Identity or ReadVariableOp): TensorFlow
        # returns new arrays there, so these are copied (a Ref is copied by to_host, a
        # read-only array by Session; a fed tensor fetched itself is the feed, in TF too;
        # nothing fetched is folded)
        feed_set = set(self.feed_slots)
        on_device = {k for k, _ in self.fetch_devices}
        self.fetch_copies = tuple(
            k for k, (t, s) in enumerate(zip(fetch_tensors, self.fetch_slots))
            if k not in on_device and id(t) not in fed and (s in feed_set or _reads_state(t)))

        # --- last uses: free dead values -----------------------------------------------------
        last_use = {}
        for i, st in enumerate(steps):
            for s in st.in_slots:
                last_use[s] = i
        keep = set(self.fetch_slots)
        frees = [[] for _ in steps]
        for s, i in last_use.items():
            if s not in keep:
                frees[i].append(s)
        for i, st in enumerate(steps):
            st.free_after = frees[i]
        self.steps = steps
        # The straight-line program: per step a flat tuple, so the loop does no attribute
        # lookups; inputs read through one itemgetter call (a tuple), or directly for one input.
        prog = []
        for st in steps:
            n = len(st.in_slots)
            get = None if n < 2 else operator.itemgetter(*st.in_slots)
            s0 = st.in_slots[0] if n == 1 else -1
            outs = tuple((k, s) for k, s in enumerate(st.out_slots) if s >= 0)
            single = outs[0][1] if len(outs) == 1 and outs[0][0] == 0 and st.n_out == 1 else -1
            prog.append((st.run, n, get, s0, st.deref, single, outs,
                         tuple(st.free_after), st))
        self._prog = prog
        self._program = None  # the compiled program (_compile_straight), from the 2nd run
        self._runs = 0

    def run(self, feed_values):
        # TensorFlow's kernels never warn on inf - inf or log(0); numpy's would, per call.
        token = _quiet_numpy()
        if self._activate is not None:
            self._activate()
        held = self._team_hold and _team.hold()
        try:
            if self.has_control_flow:
                out = _DataflowRun(self).run(feed_values)
            else:
                out = self._run_straight(feed_values)
        finally:
            if held:
                _team.release()
            _restore_numpy(token)
        for k, d in self.fetch_devices:
            v = out[k]
            out[k] = d.fetch(v.value if isinstance(v, Ref) else v)
        for k in self.fetch_copies:
            v = out[k]
            if type(v) is np.ndarray:
                out[k] = v.copy()
        return out

    def _run_straight(self, feed_values):
        program = self._program
        if program is not None:
            try:
                return program(feed_values)
            except Exception as e:  # noqa: BLE001 - every kernel failure names its node
                raise self._program_error(e) from None
        if self._runs >= COMPILE_AFTER >= 0 and len(self._prog) <= COMPILE_MAX_STEPS:
            try:
                self._program, self._program_lines = _compile_straight(
                    self._prog, self.feed_slots, self.fetch_slots, self.const_slots)
            except (SyntaxError, MemoryError, RecursionError, ValueError):
                self._runs = -1 << 62  # the compiler refused it: the loop runs this plan
            else:
                return self._run_straight(feed_values)
        self._runs += 1
        values = [None] * self.n_slots
        for s, v in self.const_slots.items():
            values[s] = v
        for s, v in zip(self.feed_slots, feed_values):
            values[s] = v
        for run, n, get, s0, deref, single, outs, free_after, st in self._prog:
            if deref:
                inputs = _deref([values[s] for s in st.in_slots], deref, st.op)
            elif n == 1:
                inputs = (values[s0],)
            elif n:
                inputs = get(values)
            else:
                inputs = ()
            try:
                out = run(*inputs)
            except Exception as e:  # noqa: BLE001 - every kernel failure names its node
                raise _wrap_kernel_error(st.op, e, inputs, st.device) from None
            if single >= 0:
                values[single] = out[0]
            else:
                for k, s in outs:
                    values[s] = out[k]
            for s in free_after:
                values[s] = None
        return [values[s] for s in self.fetch_slots]

    def _program_error(self, exc):
        """The compiled program's failure ``exc`` as the loop would have raised it: the step
        comes from the program's line in the traceback, its inputs from the frame."""
        tb = exc.__traceback__
        code = self._program.__code__
        while tb is not None and tb.tb_frame.f_code is not code:
            tb = tb.tb_next
        if tb is None or (tb.tb_next is not None
                          and tb.tb_next.tb_frame.f_code is _deref.__code__):
            return exc  # reading a ref input failed: the error names its node already
        st = self._prog[tb.tb_lineno - self._program_lines][-1]
        frame = tb.tb_frame.f_locals
        return _wrap_kernel_error(st.op, exc, [frame.get(f"v{s}") for s in st.in_slots],
                                  st.device)


def _compile_straight(prog, feed_slots, fetch_slots, const_slots):
    """The straight-line program ``prog`` (Plan._prog) as one Python function
    ``program(feed_values) -> fetched values``: each step one line calling its kernel on local
    variables (``v<slot>``), so a step costs the kernel call and little else (the loop's
    per-step unpacking and branching is about 0.3 us). Kernels and constants are the
    function's globals (3.11's specialized global loads; closures of thousands of free
    variables compile in quadratic time). Returns (function, the line number of its first
    step): a failure's traceback line gives its step (Plan._program_error)."""
    g = {"_deref": _deref}
    head = ["def program(feeds):"]
    for s, v in const_slots.items():  # folded constants (_fold_constants)
        g[f"k{s}"] = v
        head.append(f"    v{s} = k{s}")
    if feed_slots:
        head.append("    " + ", ".join(f"v{s}" for s in feed_slots) + ", = feeds")
    lines = []
    for k, (run, n, get, s0, deref, single, outs, free_after, st) in enumerate(prog):
        g[f"r{k}"] = run
        args = ", ".join(f"v{s}" for s in st.in_slots)
        if deref:
            g[f"o{k}"] = st.op
            call = f"r{k}(*_deref([{args}], {deref!r}, o{k}))"
        else:
            call = f"r{k}({args})"
        if single >= 0:
            line = f"v{single} = {call}[0]"
        elif outs:
            line = f"_o = {call}; " + "; ".join(f"v{s} = _o[{j}]" for j, s in outs)
        else:
            line = call
        if free_after:
            line += "; " + ", ".join(f"v{s}" for s in free_after) + " = " + \
                ", ".join("None" for _ in free_after)
        lines.append("    " + line)
    tail = ["    return [" + ", ".join(f"v{s}" for s in fetch_slots) + "]"]
    src = "\n".join(head + lines + tail) + "\n"
    # Model files stay data: the source holds only names made here (v<slot>, r<step>, ...)
    # and integers, never a string from the graph; the objects are bound as globals. Checked:
    if not _PROGRAM_SOURCE.fullmatch(src):
        raise ValueError("a plan's program source holds characters it never should")
    exec(compile(src, "<mgrt plan>", "exec"), g)
    return g["program"], len(head) + 1


# What a compiled plan's source may hold: names, integers, whitespace and = ( ) [ ] , : ; *
# (no quotes, dots or operators: no literal, attribute or expression from anywhere else).
_PROGRAM_SOURCE = re.compile(r"[A-Za-z0-9_\s=()\[\],:;*]*")


# Runs of a plan by the step loop before it is compiled (_compile_straight): a plan run once
# (an initializer, a save) is not worth compiling (about 20 us a step). Negative: never.
COMPILE_AFTER = int(os.environ.get("MGRT_COMPILE_AFTER", "1"))
# Longer plans keep the loop: compiling takes about 20 us a step (a 20,000-step plan 0.4 s).
COMPILE_MAX_STEPS = 20000


class _FusedOp:
    """What a fused step shows of itself: TensorFlow's fused node (_FusedConv2D), named after
    its last member as grappler's remapper names it; ``members`` are the Operations."""

    __slots__ = ("name", "type", "node_def", "members", "_inputs", "_control_inputs")

    def __init__(self, members):
        self.members = members
        self.name = members[-1].name
        self.type = "_Fused" + members[0].type
        self.node_def = members[-1].node_def
        self._inputs = [t for i, m in enumerate(members) for t in m._inputs[1 if i else 0:]]
        self._control_inputs = []


def _stateful(op):
    op_def = getattr(op, "op_def", None)
    return op_def is None or op_def.is_stateful


# Op types without inputs whose kernel returns the same reference to a variable every run (a
# Ref, a resource handle: kernels_cpu/state_ops.py), whatever the variable's state: folded as
# constants (_fold_constants). Reading or writing through them stays in their readers' steps.
_HANDLE_OPS = frozenset(("VariableV2", "Variable", "VarHandleOp"))

# Op types whose kernel returns its input as it is (array_ops._identity).
_PASS_THROUGH = frozenset(("Identity", "StopGradient", "PreventGradient",
                           "PlaceholderWithDefault"))


def _reads_state(t):
    """Whether tensor ``t`` is, through Identity-like ops, a variable's value as a kernel reads
    it (an Identity of a ref, a ReadVariableOp): the variable's own buffer."""
    while True:
        op = t.op
        if op.type == "ReadVariableOp":
            return True
        if op.type not in _PASS_THROUGH or not op._inputs:
            return False
        t = op._inputs[0]
        if t.dtype.is_ref_dtype:
            return True


def _pass_through(steps, fetch_slots):
    """``steps`` without the pass-through steps (module docstring): the slots that their
    readers, later steps and ``fetch_slots`` (rewritten in place) read are their inputs'."""
    alias = {}
    kept = []
    for st in steps:
        if st.op.type == "NoOp" and st.run is not None and not st.out_slots:
            continue  # (its control edges have ordered the steps)
        if alias:
            st.in_slots = [alias.get(s, s) for s in st.in_slots]
        if (st.op.type in _PASS_THROUGH and st.run is not None and not st.deref
                and len(st.in_slots) == 1 and st.n_out == 1 and st.out_slots[0] >= 0):
            alias[st.out_slots[0]] = st.in_slots[0]
            continue
        kept.append(st)
    if alias:
        fetch_slots[:] = [alias.get(s, s) for s in fetch_slots]
    return kept


def _fuse(steps, built, fetched):
    """``steps`` with each chain of CPU steps that a registered fused kernel covers replaced
    by one step at the chain's last position (every input of the chain is ready there). A
    chain link is a value that exactly one step reads, as its first input, on the same
    device, and that is not fetched or fed (a fed value is read from its own slot)."""
    patterns = kernel_registry.fused_patterns("CPU")
    firsts = {p[0] for p in patterns}
    if not firsts:
        return steps
    readers = {}
    for i, st in enumerate(steps):
        for s in st.in_slots:
            readers.setdefault(s, []).append(i)
    longest = max(len(p) for p in patterns)
    removed, fused = set(), {}
    for i, st in enumerate(steps):
        if (st.op.type not in firsts or i in removed or id(st) not in built
                or getattr(st.device, "device_type", "CPU") != "CPU"):
            continue
        chain = [i]
        while len(chain) < longest:
            cur = steps[chain[-1]]
            s = cur.out_slots[0] if cur.n_out == 1 else -1
            r = readers.get(s, ())
            if s < 0 or s in fetched or len(r) != 1:
                break
            nxt = steps[r[0]]
            if (nxt.in_slots[0] != s or s in nxt.in_slots[1:] or nxt.device is not st.device
                    or id(nxt) not in built):
                break
            chain.append(r[0])
        types = tuple(steps[j].op.type for j in chain)
        for pat, builder in patterns.items():
            if types[:len(pat)] != pat:
                continue
            members = [steps[j] for j in chain[:len(pat)]]
            if any(m.deref for m in members) or any(
                    _stateful(steps[j].op) for j in range(i + 1, chain[len(pat) - 1])):
                continue  # ref reads, or a state change between: keep the members' order
            try:
                run = builder([built[id(m)][0] for m in members], [m.run for m in members],
                              built[id(st)][1])
            except Exception:  # noqa: BLE001 - the members, built alone, run unfused
                run = None
            if run is None:
                continue
            f = _Step()
            f.op = _FusedOp([m.op for m in members])
            f.device = st.device
            f.run = run
            f.in_slots = list(st.in_slots)
            deref = list(st.deref)
            for m in members[1:]:
                deref += [len(f.in_slots) + k - 1 for k in m.deref if k >= 1]
                f.in_slots += m.in_slots[1:]
            f.deref = tuple(deref)
            f.out_slots = list(members[-1].out_slots)
            f.n_out = members[-1].n_out
            fused[chain[len(pat) - 1]] = f
            removed.update(chain[:len(pat) - 1])
            break
    if not fused:
        return steps
    return [fused.get(i, st) for i, st in enumerate(steps) if i not in removed]


# Plan-time constant folding and shape memos (_fold_constants, _memo_shapes); MGRT_FOLD=0: off.
FOLD = os.environ.get("MGRT_FOLD", "1").strip().lower() not in ("0", "false", "no", "off")
# A folded value larger than this stays a step (a plan would hold it for its life).
FOLD_MAX_BYTES = 1 << 20
# Ops whose outputs depend on their inputs' shapes alone.
_SHAPE_OPS = frozenset(("Shape", "ShapeN", "Size", "Rank"))


def _foldable(st, fetched):
    """Whether step ``st`` computes a function of its inputs alone (an op TensorFlow does not
    mark stateful, no checks, no control flow, no ref read, no ref input or output: TF does
    not mark Assign or AssignAdd stateful) on a device with host memory, and every output has
    a slot that is not fetched (a fetched value is a new array each run)."""
    op = st.op
    op_def = getattr(op, "op_def", None)
    return (st.run is not None and not st.deref and op_def is not None
            and not op_def.is_stateful and op.type not in _CHECKING_OPS
            and op.type not in _CONTROL_FLOW_OPS
            and (st.device is None or st.device.is_host_memory)
            and all(s >= 0 and s not in fetched for s in st.out_slots)
            and not any(t.dtype.is_ref_dtype for t in op._inputs)
            and not any(t.dtype.is_ref_dtype for t in op._outputs))


def _read_only(v):
    if type(v) is np.ndarray and v.flags.writeable:
        v = v.view()  # (the kernel's own array stays as it was)
        v.flags.writeable = False
    return v


def _fold_constants(steps, fetched):
    """TensorFlow's constant folding, at plan time: each Const step, and each foldable step
    (_foldable) whose inputs are all such values, is run once now and is no step at all; its
    outputs (read-only arrays of at most FOLD_MAX_BYTES) are seeded into their slots at every
    run. A variable's op (_HANDLE_OPS) not fetched is no step either: its Ref or handle is
    seeded the same way (the third value returned: {slot: Ref or handle}; its readers are not
    folded). A step that fails here stays a step (its error comes when the plan runs, as before).
    Returns (steps, {slot: value}, {slot: Ref or handle})."""
    consts, handles = {}, {}
    kept = []
    with np.errstate(all="ignore"):
        for st in steps:
            if (st.op.type in _HANDLE_OPS and st.run is not None and not st.in_slots
                    and st.n_out == 1 and st.out_slots[0] >= 0
                    and st.out_slots[0] not in fetched):
                handles[st.out_slots[0]] = st.run()[0]  # (the same Ref or handle every run)
                continue
            if _foldable(st, fetched) and (st.in_slots or st.op.type == "Const") and all(
                    s in consts for s in st.in_slots):
                try:
                    outs = st.run(*[consts[s] for s in st.in_slots])
                except Exception:  # noqa: BLE001 - it fails again when the plan runs
                    outs = None
                if (outs is not None and len(outs) == st.n_out and all(
                        type(v) is np.ndarray and v.nbytes <= FOLD_MAX_BYTES for v in outs)):
                    for s, v in zip(st.out_slots, outs):
                        consts[s] = _read_only(v)
                    continue
            kept.append(st)
    return kept, consts, handles


class _MemoOp:
    """What a shape memo step shows of itself (_memo_shapes): its members' Operations."""

    __slots__ = ("name", "type", "node_def", "members", "_inputs", "_control_inputs")

    def __init__(self, members):
        self.members = members
        self.name = members[-1].name
        self.type = "_ShapeMemo"
        self.node_def = members[-1].node_def
        self._inputs = []
        self._control_inputs = []


def _memo_shapes(steps, fetched, consts):
    """Steps whose values depend on some values' shapes alone (Shape, ShapeN, Size, Rank, and
    foldable steps of those and constants: a mean's gradient, tf.gradients' shape arithmetic)
    as one step per connected group, placed before the group's first reader: it runs its
    members when the shapes of its inputs differ from the last run's, and otherwise gives the
    last run's (read-only) values, kept when none is larger than FOLD_MAX_BYTES. A group
    whose inputs come after a reader stays as it is."""
    member = {}  # step index -> group (union-find parent)
    shaped = {}  # slot -> step index of the member writing it
    producer = {}
    for i, st in enumerate(steps):
        for s in st.out_slots:
            producer[s] = i

    def find(i):
        while member[i] != i:
            member[i] = member[member[i]]
            i = member[i]
        return i

    for i, st in enumerate(steps):
        if not _foldable(st, fetched):
            continue
        inner = [shaped[s] for s in st.in_slots if s in shaped]
        if st.op.type not in _SHAPE_OPS and not (
                inner and all(s in consts or s in shaped for s in st.in_slots)):
            continue
        member[i] = i
        for j in inner:
            member[find(j)] = i
        for s in st.out_slots:
            shaped[s] = i
    if not member:
        return steps
    groups = {}
    for i in member:
        groups.setdefault(find(i), []).append(i)
    index_of = {id(st.op): i for i, st in enumerate(steps)}
    first_reader = {}  # group -> first step (not a member) that reads it or waits for it
    readers = {}  # group -> slots read outside it
    for j, st in enumerate(steps):
        if j in member:
            continue
        for s in st.in_slots:
            i = shaped.get(s)
            if i is not None:
                g = find(i)
                first_reader.setdefault(g, j)
                readers.setdefault(g, set()).add(s)
        for c in getattr(st.op, "_control_inputs", ()):
            i = index_of.get(id(c))
            if i is not None and i in member:
                first_reader.setdefault(find(i), j)
    placed = {}  # position -> memo steps placed before it
    removed = set()
    for g, idx in groups.items():
        idx.sort()
        roots = []
        for i in idx:
            for s in steps[i].in_slots:
                if s not in shaped and s not in consts and s not in roots:
                    roots.append(s)
        at = first_reader.get(g, len(steps))
        if any(producer.get(s, -1) >= at for s in roots):
            continue  # an input comes after a reader: the members stay in place
        outs = sorted(readers.get(g, ()))
        m = _Step()
        m.op = _MemoOp([steps[i].op for i in idx])
        m.device = steps[idx[0]].device
        m.run = _memo_run([steps[i] for i in idx], roots, consts, outs)
        m.in_slots = roots
        m.deref = ()
        m.out_slots = outs
        m.n_out = len(outs)
        placed.setdefault(at, []).append(m)
        removed.update(idx)
    if not removed:
        return steps
    out = []
    for i, st in enumerate(steps):
        out += placed.get(i, ())
        if i not in removed:
            out.append(st)
    out += placed.get(len(steps), ())
    return out


def _memo_run(members, roots, consts, outs):
    """A shape memo step's kernel (_memo_shapes): ``run(*root values)``."""
    runs = [(st.run, st.in_slots, st.out_slots) for st in members]
    last = [None]  # (the roots' shapes, the outputs), replaced whole (runs in other threads)

    def run(*inputs):
        key = tuple([v.shape if type(v) is np.ndarray else None for v in inputs])
        kept = last[0]
        if kept is not None and key == kept[0] and None not in key:
            return kept[1]
        vals = dict(consts)
        vals.update(zip(roots, inputs))
        for k, (r, ins, o) in enumerate(runs):
            args = [vals[s] for s in ins]
            try:
                got = r(*args)
            except Exception as e:  # noqa: BLE001 - named by the executor
                raise kernel_registry.FusedMemberError(k, e, args) from None
            vals.update(zip(o, got))
        result = tuple([_read_only(vals[s]) for s in outs])
        if all(type(v) is np.ndarray and v.nbytes <= FOLD_MAX_BYTES for v in result):
            last[0] = (key, result)
        else:  # (a value as big as the batch, tf.ones(tf.shape(x)): made anew each run)
            last[0] = None
        return result
    run.kept = last  # (what the memo holds between runs: for inspection)
    return run


def _bias_into_pool_grads(steps, built):
    """``steps`` with each BiasAddGrad of a fused MaxPoolGrad+ReluGrad step's output done by
    that step, in the same pass over the gradient (its kernel's ``with_bias_grad``): the
    fused step gets the BiasAddGrad as its third member and its value as a second output; the
    BiasAddGrad step goes (it only reads that output, which is ready earlier)."""
    makers = {}
    for i, st in enumerate(steps):
        make = getattr(st.run, "with_bias_grad", None)
        if make is not None and st.n_out == 1 and st.out_slots[0] >= 0:
            makers[st.out_slots[0]] = i
    if not makers:
        return steps
    replaced, removed = {}, set()
    for j, st in enumerate(steps):
        i = makers.get(st.in_slots[0]) if len(st.in_slots) == 1 else None
        if (i is None or st.op.type != "BiasAddGrad" or st.deref or id(st) not in built
                or st.n_out != 1 or st.out_slots[0] < 0 or st.device is not steps[i].device):
            continue
        f = steps[i]
        run = f.run.with_bias_grad(built[id(st)][0], st.run)
        if run is None:
            continue
        del makers[st.in_slots[0]]  # one BiasAddGrad per pool gradient
        m = _Step()
        m.op = _FusedOp(list(f.op.members) + [st.op])
        m.op.name = f.op.name
        m.device = f.device
        m.run = run
        m.in_slots = f.in_slots
        m.deref = f.deref
        m.out_slots = list(f.out_slots) + list(st.out_slots)
        m.n_out = 2
        replaced[i] = m
        removed.add(j)
    if not replaced:
        return steps
    return [replaced.get(i, st) for i, st in enumerate(steps) if i not in removed]


def _updates_into_gemm(steps, built, fetched):
    """``steps`` with each optimizer update whose kernel offers ``with_gemm`` (ApplyGradient-
    Descent, ApplyMomentum, their resource forms) and whose gradient is a MatMul's product that
    only it reads (not fetched, fed or folded; the MatMul on the same device, reading no ref)
    done with that MatMul as one step, at the update's position (the MatMul's inputs are
    ready there; the variable is written where it was). The step's inputs are the update's
    without the gradient, then the MatMul's; where it may, its kernel adds the product to the
    variable's (or the accumulator's) buffer inside BLAS (kernels_cpu/state_ops.py
    ``_gemm_apply``)."""
    producer, readers = {}, {}
    for i, st in enumerate(steps):
        for s in st.in_slots:
            readers[s] = readers.get(s, 0) + 1
        if st.n_out == 1 and st.out_slots[0] >= 0:
            producer[st.out_slots[0]] = i
    replaced, removed = {}, set()
    for j, st in enumerate(steps):
        make = getattr(st.run, "with_gemm", None)
        if make is None or id(st) not in built:
            continue
        g_at = st.run.gemm_grad_at
        s = st.in_slots[g_at]
        i = producer.get(s)
        if i is None or s in fetched or readers.get(s) != 1 or i in removed or g_at in st.deref:
            continue
        mm = steps[i]
        if (mm.op.type != "MatMul" or mm.deref or id(mm) not in built or mm.device is not st.device
                or len(mm.in_slots) != 2):
            continue
        run = make(built[id(mm)][0], mm.run)
        if run is None:
            continue
        f = _Step()
        f.op = _FusedOp([mm.op, st.op])
        f.op.type = "_FusedMatMulApply"
        others = [t for k, t in enumerate(st.op._inputs) if k != g_at]
        f.op._inputs = others + list(mm.op._inputs)
        f.device = st.device
        f.run = run
        f.in_slots = [x for k, x in enumerate(st.in_slots) if k != g_at] + list(mm.in_slots)
        f.deref = tuple(k if k < g_at else k - 1 for k in st.deref)
        f.out_slots = list(st.out_slots)
        f.n_out = st.n_out
        replaced[j] = f
        removed.add(i)
    if not replaced:
        return steps
    return [replaced.get(i, st) for i, st in enumerate(steps) if i not in removed]


class _PairOp:
    """What a concurrent pair of steps (_pair) shows of itself; ``members`` are the two steps'
    ops (Operations or _FusedOps), whose failures name their own nodes."""

    __slots__ = ("name", "type", "node_def", "members", "_inputs", "_control_inputs")

    def __init__(self, members):
        self.members = members
        self.name = " + ".join(m.name for m in members)
        self.type = "_Concurrent"
        self.node_def = members[0].node_def
        self._inputs = [t for m in members for t in m._inputs]
        self._control_inputs = []


# Steps looked ahead for a partner (_pair), and how unequal two partners' times may be before
# the pair runs them one after the other again (each on the whole team).
_PAIR_WINDOW = 4
_PAIR_MAX_RATIO = 3.0


def _pair_candidate(st):
    return (st.run is not None and not st.deref and st.op.type in _team.TEAM_OPS
            and getattr(st.device, "device_type", "CPU") == "CPU")


def _members(op):
    return getattr(op, "members", None) or [op]


def _pair(steps):
    """``steps`` with independent team kernels (convolutions) run two at a time, one per
    thread of the team, instead of one after the other, each on the whole team: step j joins
    step i (i < j <= i + _PAIR_WINDOW) when every input and control input of j comes from a
    step before i, or from a step between them that is free of effects and needs nothing from
    i on (a Const: it moves before the pair), and no step between them changes state. A
    convolution's input gradient and filter gradient are such a pair. Measured on the 2-core
    benchmark machine (its two vCPUs share one core's FMA units), the CNN's second layer's
    two gradients take 3.2-3.5 ms side by side against 3.9-4.2 one after the other on two
    threads each: the two kernels fill each other's stalls, and no team hand-over sits
    between their blocks."""
    producer = {}
    step_of = {}
    for i, st in enumerate(steps):
        for s in st.out_slots:
            if s >= 0:
                producer[s] = i
        for m in _members(st.op):
            step_of[id(m)] = i

    def controls_before(st, i):
        return all(step_of.get(id(c), -1) < i for m in _members(st.op)
                   for c in m._control_inputs)

    def ready_before(st, i):
        return all(producer.get(s, -1) < i for s in st.in_slots) and controls_before(st, i)

    taken = set()
    partner, hoist = {}, {}
    for i, st in enumerate(steps):
        if i in taken or not _pair_candidate(st):
            continue
        for j in range(i + 1, min(len(steps), i + 1 + _PAIR_WINDOW)):
            other = steps[j]
            if _stateful_step(other):
                break  # nothing moves across a state change
            if j in taken or not _pair_candidate(other):
                continue
            if not controls_before(other, i):
                continue
            early = sorted({producer[s] for s in other.in_slots if producer.get(s, -1) >= i})
            if any(k == i or k in taken or not ready_before(steps[k], i) for k in early):
                continue
            taken.update((i, j, *early))
            partner[i], hoist[i] = j, early
            break
    if not partner:
        return steps
    out = []
    for i, st in enumerate(steps):
        if i in partner:
            out.extend(steps[k] for k in hoist[i])
            out.append(_pair_step(st, steps[partner[i]]))
        elif i not in taken:
            out.append(st)
    return out


def _stateful_step(st):
    return not all(_effect_free(m) for m in _members(st.op))


def _pair_step(a, b):
    """One step running steps ``a`` and ``b`` side by side (_pair)."""
    p = _Step()
    p.op = _PairOp([a.op, b.op])
    p.device = a.device
    p.in_slots = list(a.in_slots) + list(b.in_slots)
    p.deref = ()
    p.out_slots = list(a.out_slots) + list(b.out_slots)
    p.n_out = a.n_out + b.n_out
    p.run = _pair_run(a.run, b.run, len(a.in_slots))
    return p


def _pair_run(run_a, run_b, n_a):
    """Runs ``run_a(*inputs[:n_a])`` and ``run_b(*inputs[n_a:])`` on two team threads (each
    kernel's own team work then runs on its thread alone), their outputs concatenated; a
    failure raises FusedMemberError naming its member. When one kernel takes more than
    _PAIR_MAX_RATIO times the other's time, later runs put them one after the other, each on
    the whole team (side by side, the long one would run alone on one thread at the end;
    the first run is not judged: it may include compiling)."""
    perf = time.perf_counter
    state = {"apart": False, "runs": 0}

    def member(k, run, inputs, times):
        t0 = perf()
        try:
            out = run(*inputs)
        except Exception as e:  # noqa: BLE001 - named by the executor
            raise kernel_registry.FusedMemberError(k, e, inputs) from None
        times[k] = perf() - t0
        return out

    def run(*inputs):
        ia, ib = inputs[:n_a], inputs[n_a:]
        times = [0.0, 0.0]
        if state["apart"] or _team.team_size() < 2:
            oa = member(0, run_a, ia, times)
            ob = member(1, run_b, ib, times)
            return tuple(oa) + tuple(ob)
        oa, ob = _team.run(lambda k, tid: member(k, run_b if k else run_a, ib if k else ia,
                                                 times), (0, 1), 2)
        state["runs"] += 1
        lo, hi = sorted(times)
        if state["runs"] > 1 and hi > _PAIR_MAX_RATIO * lo:  # (the first run may compile)
            state["apart"] = True
        return tuple(oa) + tuple(ob)
    return run


# Ops that have an effect although their OpDef is not stateful: they raise on bad values.
_CHECKING_OPS = frozenset(("CheckNumerics", "CheckNumericsV2", "Assert", "EnsureShape",
                           "VerifyTensorAllFinite"))
# Stateful by their OpDef, but running them changes nothing (a read, a handle).
_EFFECT_FREE_STATEFUL = frozenset(("VariableV2", "Variable", "VarHandleOp", "ReadVariableOp",
                                   "Placeholder", "PlaceholderV2"))


def _effect_free(op):
    op_def = op.op_def
    if op_def is None or op.type in _CHECKING_OPS or op.type in _CONTROL_FLOW_OPS:
        return False
    if any(arg.is_ref for arg in op_def.input_arg):
        return False  # writes through a ref (Assign, Apply*, Scatter*): not marked stateful
    return not op_def.is_stateful or op.type in _EFFECT_FREE_STATEFUL


def _closure_effect_free(op, fed, memo):
    """Whether running ``op`` and everything it needs (inputs not past fed tensors, control
    inputs) has no effect but its outputs: no state changed, no check that could raise."""
    got = memo.get(id(op))
    if got is not None:
        return got
    stack = [(op, False)]
    while stack:
        o, expanded = stack.pop()
        if id(o) in memo:
            continue
        deps = [t.op for t in o._inputs if id(t) not in fed] + list(o._control_inputs)
        if not expanded:
            if not _effect_free(o):
                memo[id(o)] = False
                continue
            stack.append((o, True))
            stack.extend((d, False) for d in deps if id(d) not in memo)
        else:
            memo[id(o)] = all(memo.get(id(d), False) for d in deps)
    return memo[id(op)]


def _needed(roots, fed, prune_control_only):
    """{id: op} of what ``roots`` need: their inputs (not past fed tensors) and control inputs;
    with ``prune_control_only``, an op reached only through control edges is left out (with
    what only it needs) when running it, and all it needs, has no effect."""
    needed = {}
    memo = {}
    stack = [(op, False) for op in roots]
    while stack:
        op, by_control = stack.pop()
        key = id(op)
        if key in needed:
            continue
        if by_control and prune_control_only and op.op_def is not None and \
                op.op_def.output_arg and _closure_effect_free(op, fed, memo):
            continue  # (a data edge seen later still brings it in)
        needed[key] = op
        for t in op._inputs:
            if id(t) not in fed:
                stack.append((t.op, False))
        for c in op._control_inputs:
            stack.append((c, True))
    return needed


def _activating(run, activate):
    def run_on_device(*inputs):
        activate()
        return run(*inputs)
    return run_on_device


def _checked_outputs(run, op, out_devices):
    """``run`` with a check that each output is where the placement says it lives (a buffer
    of the device, or a host array for a host-memory output): a simulated GPU's kernels run
    under it, so a GPU kernel that returns the wrong kind of array fails in the tests."""
    def run_checked(*inputs):
        outs = run(*inputs)
        for k, (v, d) in enumerate(zip(outs, out_devices)):
            if d.is_host_memory:
                wrong = not isinstance(v, np.ndarray) and hasattr(v, "__array_function__")
            else:
                wrong = isinstance(v, np.ndarray) or (
                    hasattr(v, "__array_function__") and not d.is_buffer(v))
            if wrong:
                where = "host memory" if d.is_host_memory else d.short_name
                raise TypeError(f"The {op.type} kernel returned {type(v).__name__} for output "
                                f"{k}, which lives in {where}")
        return outs
    return run_checked


def _deref(inputs, positions, op):
    """Read the ref inputs at ``positions`` (an uninitialized variable names the node)."""
    for k in positions:
        try:
            inputs[k] = inputs[k].value
        except errors.OpError as e:
            raise type(e)(op.node_def, op,
                          f"{e.message}\n\t [[node {op.name} ({op.type})]]") from None
    return inputs


def _make_quiet():
    """``np.errstate(all="ignore")`` as a (set, reset) pair: numpy 2's context variable
    directly (a fraction of a microsecond), or the public errstate (about 3 us) elsewhere."""
    try:
        from numpy._core import _ufunc_config as cfg

        var = cfg._extobj_contextvar
        with np.errstate(all="ignore"):
            quiet = var.get()
        return (lambda: var.set(quiet)), var.reset
    except (ImportError, AttributeError):
        def enter():
            e = np.errstate(all="ignore")
            e.__enter__()
            return e

        return enter, (lambda e: e.__exit__(None, None, None))


_quiet_numpy, _restore_numpy = _make_quiet()


class _CopyOp:
    """What a copy step shows of itself (in errors and to the dataflow runner): TensorFlow's
    _Send/_Recv pair, as one step."""

    __slots__ = ("name", "type", "node_def", "_inputs", "_control_inputs", "src", "dst")

    def __init__(self, tensor, src, dst):
        self.name = f"{tensor.name} ({src.short_name} -> {dst.short_name})"
        self.type = "_Copy"
        self.node_def = None
        self._inputs = [tensor]
        self._control_inputs = []
        self.src = src
        self.dst = dst


def _copy_step(tensor, in_slot, out_slot, src, dst):
    st = _Step()
    st.op = _CopyOp(tensor, src, dst)
    st.device = dst

    def run(value):
        if isinstance(value, Ref):
            value = value.value
        return (dst.copy_from(value, src),)

    st.run = run
    st.in_slots = [in_slot]
    st.deref = ()
    st.out_slots = [out_slot]
    st.n_out = 1
    return st


class _HostPlacement:
    """Every node on the CPU (a Plan built without a placement)."""

    def __init__(self):
        from mgrt.devices import CPUDevice

        self.host_device = CPUDevice(0)
        self.devices = [self.host_device]

    def device_of(self, op):
        return self.host_device

    def input_device(self, op, index):
        return self.host_device

    def output_device(self, op, index):
        return self.host_device


class _Dead:
    """The value of a dead tensor (the untaken branch of a Switch)."""

    __slots__ = ()

    def __repr__(self):
        return "<dead>"


DEAD = _Dead()
ROOT = ("root", 0)


class _DataflowRun:
    """TensorFlow's dataflow semantics for plans with TF1 control flow.

    Every value is tagged with its frame and iteration: ``(frame, i)`` where the root frame is
    ROOT's and a frame entered from tag T through Enter nodes of frame name F is ``(T, F)``.
    A node runs at a tag once all its inputs (and control inputs) arrived at that tag; if any is
    dead, its outputs are dead and its kernel does not run. Switch sends its input to one
    output and a dead value to the other; Merge fires on its first live input (all dead: dead);
    Enter moves a value into iteration 0 of the child frame (``is_constant``: into every
    iteration); NextIteration into the next iteration (a dead one ends the iteration); Exit back
    to the parent frame. A dead Exit of a frame that never saw a live value goes on at once; in
    a live frame it waits until the frame is done (nothing ready, every Enter fired, child
    frames done) and goes on, dead, only if that Exit never gave its parent a value, as
    TensorFlow's dead_exits do. A fetched tensor inside a loop is returned if computed exactly
    once (TensorFlow's _Retval: InternalError when set twice). Before running, the frames are
    checked as TensorFlow's BuildControlFlowInfo does (a node reached from two frames, e.g. by
    feeding a tensor inside a loop, is an InvalidArgumentError).
    """

    def __init__(self, plan):
        self.plan = plan
        steps = plan.steps
        self.index = {id(st.op): i for i, st in enumerate(steps)}
        # consumers of each slot: (step index, input position); of each step's control edge
        producer = {}
        for i, st in enumerate(steps):
            for s in st.out_slots:
                if s >= 0:
                    producer[s] = i
        self.consumers = [[] for _ in range(plan.n_slots)]
        self.ctrl_consumers = [[] for _ in steps]
        self.n_ctrl = [0] * len(steps)
        for i, st in enumerate(steps):
            for k, s in enumerate(st.in_slots):
                self.consumers[s].append((i, k))
            for c in st.op._control_inputs:
                j = self.index.get(id(c))
                if j is not None:
                    self.ctrl_consumers[j].append(i)
                    self.n_ctrl[i] += 1
        self.feed_slots = set(plan.feed_slots)
        self.n_enters = {}  # frame name -> how many Enter nodes feed each instance of it
        for st in steps:
            if st.op.type in _ENTER:
                name = st.op.get_attr("frame_name")
                self.n_enters[name] = self.n_enters.get(name, 0) + 1
        if not getattr(plan, "_frames_checked", False):
            self._check_frames()
            plan._frames_checked = True

    def _check_frames(self):
        """TensorFlow's static frame check (BuildControlFlowInfo), done before anything runs:
        walking the graph from its roots and the fed tensors (root frame), an Enter's outputs
        are in its child frame, an Exit's in its parent's; a node reached from two frames
        (e.g. a consumer of a tensor fed inside a while loop) is an InvalidArgumentError."""
        steps = self.plan.steps
        root = ("", None)  # frame: (frame name, parent frame)
        frame = [None] * len(steps)
        first = [None] * len(steps)  # what reached each node first (for the message)
        queue = []

        def reach(j, src_name, out_frame):
            op = steps[j].op
            if op.type in _ENTER:
                name = op.get_attr("frame_name")
                f = (name.decode() if isinstance(name, bytes) else name, out_frame)
            else:
                f = out_frame
            if frame[j] is None:
                frame[j] = f
                first[j] = (src_name, out_frame)
                queue.append(j)
            elif frame[j][0] != f[0]:
                name, other = first[j]
                raise errors.InvalidArgumentError(
                    op.node_def, op, f"{{{{node {op.name}}}}} has inputs from different frames. "
                    f"The input {{{{node {src_name}}}}} is in frame '{out_frame[0]}'. The input "
                    f"{{{{node {name}}}}} is in frame '{other[0]}'.")

        for s in self.plan.feed_slots:
            for j, k in self.consumers[s]:
                reach(j, steps[j].op._inputs[k].op.name, root)
        for i, st in enumerate(steps):
            if not st.in_slots and not self.n_ctrl[i] and frame[i] is None:
                frame[i] = root
                queue.append(i)
        q = 0
        while q < len(queue):
            i = queue[q]
            q += 1
            st = steps[i]
            out_frame = frame[i]
            if st.op.type in _EXIT:
                out_frame = out_frame[1] or root
            for s in st.out_slots:
                if s >= 0:
                    for j, _ in self.consumers[s]:
                        reach(j, st.op.name, out_frame)
            for j in self.ctrl_consumers[i]:
                reach(j, st.op.name, out_frame)

    def run(self, feed_values):
        plan = self.plan
        steps = plan.steps
        n_in = [len(st.in_slots) for st in steps]
        pending = {}   # (step, tag) -> [inputs, data count, ctrl count, dead ctrl, made ready]
        ready = []
        fetched = {}
        fetch_slots = set(plan.fetch_slots)
        constants = {}   # frame id -> [(step, value)] of constant Enters
        iterations = {}  # frame id -> set of iteration numbers started
        live_frames = set()
        exits_sent = set()  # (Exit step, frame id): the Exit gave its parent frame a value
        enters_seen = {}    # frame id -> Enter nodes that fired into it (live or dead)
        children = {}       # frame id -> child frame ids started from its iterations
        dead_exits = {}     # frame id -> Exit steps that ran dead in it (a live frame)

        def entry(i, tag):
            key = (i, tag)
            e = pending.get(key)
            if e is None:
                e = pending[key] = [[None] * n_in[i], 0, 0, False, False]
            return e

        def check_ready(i, tag, e):
            st = steps[i]
            if st.op.type in _MERGE:
                if e[2] < self.n_ctrl[i] or e[4]:
                    return
                live = any(v is not None and v is not DEAD for v in e[0])
                possible = 1 if any(steps[self.index[id(t.op)]].op.type in _NEXT_ITERATION
                                    for t in st.op._inputs if id(t.op) in self.index) else n_in[i]
                if live or e[1] >= possible:
                    e[4] = True
                    ready.append((i, tag))
                return
            if e[1] == n_in[i] and e[2] == self.n_ctrl[i] and not e[4]:
                e[4] = True  # ready once, even if an input arrives again
                ready.append((i, tag))

        def deliver(slot, tag, value):
            if slot in fetch_slots:
                # TensorFlow's _Retval runs in its input's frame, once per live value: a tensor
                # fetched from inside a loop is returned if computed exactly once.
                if value is not DEAD:
                    if slot in fetched:
                        raise errors.InternalError(
                            None, None, f"Retval[{plan.fetch_slots.index(slot)}] has already "
                            "been set (a fetched tensor inside a while loop was computed in "
                            "more than one iteration).")
                    fetched[slot] = value
            for i, k in self.consumers[slot]:
                e = entry(i, tag)
                if e[0][k] is None:
                    e[0][k] = value
                    e[1] += 1
                check_ready(i, tag, e)

        def deliver_ctrl(i_from, tag, dead):
            for i in self.ctrl_consumers[i_from]:
                e = entry(i, tag)
                e[2] += 1
                if dead:
                    e[3] = True
                check_ready(i, tag, e)

        def send_constant(i, tag, value):
            for s in steps[i].out_slots:
                if s >= 0:
                    deliver(s, tag, value)
            deliver_ctrl(i, tag, False)

        def entered(fid):
            enters_seen[fid] = enters_seen.get(fid, 0) + 1
            parent = fid[0]
            if parent != ROOT:
                children.setdefault(parent[0], set()).add(fid)

        def frame_done(fid):
            """TensorFlow's test, once nothing is ready: every Enter of the frame has fired
            and its child frames are done (their dead exits given to this frame)."""
            if enters_seen.get(fid, 0) < self.n_enters[fid[1]]:
                return False
            return all(c not in dead_exits and frame_done(c) for c in children.get(fid, ()))

        def flush_dead_exits():
            """A dead Exit of a live frame waits until the frame is done (TensorFlow's
            dead_exits, given to the parent when the frame is deleted): then an Exit that
            never gave its parent a value gives it a dead one. E.g. a loop entered with live
            and dead values (a loop counter inside the untaken branch of a gradient cond):
            its consumers outside the loop see the dead value. True once something is ready."""
            while not ready:
                done = [f for f in dead_exits if frame_done(f)]
                if not done:
                    return False
                for fid in done:
                    for i in sorted(dead_exits.pop(fid)):
                        if (i, fid) in exits_sent:
                            continue
                        exits_sent.add((i, fid))
                        for s in steps[i].out_slots:
                            if s >= 0:
                                deliver(s, fid[0], DEAD)
                        deliver_ctrl(i, fid[0], True)
            return True

        def start_iteration(fid, it):
            seen = iterations.setdefault(fid, set())
            if it in seen:
                return
            seen.add(it)
            for i, value in constants.get(fid, ()):
                send_constant(i, (fid, it), value)

        for s, v in zip(plan.feed_slots, feed_values):
            deliver(s, ROOT, v)
        for i, st in enumerate(steps):
            if n_in[i] == 0 and self.n_ctrl[i] == 0:
                ready.append((i, ROOT))

        while ready or flush_dead_exits():
            i, tag = ready.pop()
            e = pending.pop((i, tag), None) or [[], 0, 0, False, False]
            st = steps[i]
            op = st.op
            t = op.type
            if t in _MERGE and n_in[i] > 1 and e[1] < n_in[i] and not any(
                    x.op.type in _NEXT_ITERATION for x in op._inputs):
                # TensorFlow's Merge fires once per frame iteration: an input that arrives
                # after it fired (a second live one, e.g. a gradient Merge of a cond) is dropped
                pending[(i, tag)] = [[DEAD] * n_in[i], n_in[i], e[2], e[3], True]
            inputs = e[0]
            dead = e[3] or (t not in _MERGE and any(v is DEAD for v in inputs))
            if t == "ControlTrigger":
                dead = False  # TensorFlow: a ControlTrigger is live whatever its inputs
            out_tag = tag
            if t in _MERGE:
                outs = [DEAD, DEAD]
                for k, v in enumerate(inputs):
                    if v is not None and v is not DEAD:
                        outs = [v, np.asarray(k, dtype=np.int32)]
                        break
                dead = outs[0] is DEAD
            elif dead:
                if t in _NEXT_ITERATION:
                    continue  # a dead value ends the iteration
                if t in _EXIT:
                    fid = tag[0]
                    if fid in live_frames:
                        dead_exits.setdefault(fid, set()).add(i)
                        continue
                    if (i, fid) in exits_sent:
                        continue
                    exits_sent.add((i, fid))
                    out_tag = fid[0]
                elif t in _ENTER:
                    fid = (tag, op.get_attr("frame_name"))
                    entered(fid)
                    out_tag = (fid, 0)
                    start_iteration(fid, 0)
                outs = [DEAD] * len(st.out_slots)
            elif t in _SWITCH:
                data, pred = inputs
                p = pred.value if isinstance(pred, Ref) else pred
                if bool(np.asarray(p)):
                    outs = [DEAD, data]
                else:
                    outs = [data, DEAD]
            elif t in _ENTER:
                fid = (tag, op.get_attr("frame_name"))
                entered(fid)
                live_frames.add(fid)
                out_tag = (fid, 0)
                if op.get_attr("is_constant"):
                    # Start iteration 0 first (it gets the constants known so far), then give
                    # this value to every iteration started: each gets it exactly once (a second
                    # delivery would make its consumers ready twice). Like TensorFlow's loop
                    # invariants, its control edge fires in every iteration too.
                    start_iteration(fid, 0)
                    constants.setdefault(fid, []).append((i, inputs[0]))
                    for it in sorted(iterations[fid]):
                        send_constant(i, (fid, it), inputs[0])
                    continue
                start_iteration(fid, 0)
                outs = [inputs[0]]
            elif t in _EXIT:
                exits_sent.add((i, tag[0]))
                out_tag = tag[0][0]
                outs = [inputs[0]]
            elif t in _NEXT_ITERATION:
                fid, it = tag
                out_tag = (fid, it + 1)
                start_iteration(fid, it + 1)
                outs = [inputs[0]]
            elif t == "LoopCond":
                outs = [inputs[0]]
            else:
                args = list(inputs)
                for k in st.deref:
                    try:
                        args[k] = args[k].value
                    except errors.OpError as ex:
                        raise type(ex)(op.node_def, op,
                                       f"{ex.message}\n\t [[node {op.name} ({op.type})]]") from None
                try:
                    outs = st.run(*args)
                except Exception as ex:  # noqa: BLE001
                    raise _wrap_kernel_error(op, ex, args, st.device) from None
            for s, v in zip(st.out_slots, outs):
                if s >= 0:
                    deliver(s, out_tag, v)
            deliver_ctrl(i, out_tag, dead)

        results = []
        for s in plan.fetch_slots:
            v = fetched.get(s)
            if v is None or v is DEAD:
                raise errors.InvalidArgumentError(
                    None, None, "A fetched tensor has no value: it is dead (on the branch of a "
                    "tf.cond that was not taken) or was never computed.")
            results.append(v)
        return results


def _input_is_ref(op):
    """Per regular input: whether the op definition wants the reference (not the value)."""
    od = op.op_def
    flags = []
    for arg in od.input_arg:
        if arg.number_attr:
            n = op._node_def.attr[arg.number_attr].i
        elif arg.type_list_attr:
            n = len(op._node_def.attr[arg.type_list_attr].list.type)
        else:
            n = 1
        flags.extend([arg.is_ref] * n)
    return flags


def to_host(value):
    """A fetched value as numpy (a Ref's value is copied: the variable's buffer stays its)."""
    if isinstance(value, Ref):
        return np.array(value.value)
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(value)


def dtype_of(t):
    return t.dtype.base_dtype if isinstance(t.dtype, dtypes.DType) else t.dtype
