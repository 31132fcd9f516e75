"""The Session: ``run(fetches, feed_dict)`` with TensorFlow's fetch structures, plans cached per
(fetches, feeds, targets), variables living in the session.
"""

import collections
import sys
import threading

import numpy as np

from mgrt import devices as devices_lib
from mgrt.runtime import dtypes, errors, executor, placer
from mgrt.runtime import graph as graph_lib


class GPUOptions:
    def __init__(self, allow_growth=False, per_process_gpu_memory_fraction=0.0,
                 visible_device_list=""):
        self.allow_growth = allow_growth
        self.per_process_gpu_memory_fraction = per_process_gpu_memory_fraction
        self.visible_device_list = visible_device_list


class ConfigProto:
    """``tf.compat.v1.ConfigProto``: the options mgrt reads. ``allow_soft_placement`` left unset
    means soft placement (mgrt's default: TensorFlow's is strict); set it to False for
    TensorFlow's strict placement and its errors. ``intra_op_parallelism_threads`` > 0 sizes
    numpy's BLAS thread pool for the process (``mgrt.devices.cpu.limit_intra_op_threads``);
    ``inter_op_parallelism_threads`` is accepted and unused (mgrt runs a graph's ops one at a
    time)."""

    def __init__(self, allow_soft_placement=None, log_device_placement=False, device_count=None,
                 intra_op_parallelism_threads=0, inter_op_parallelism_threads=0,
                 gpu_options=None, **unused):
        self.allow_soft_placement = allow_soft_placement
        self.log_device_placement = log_device_placement
        self.device_count = dict(device_count or {})
        self.intra_op_parallelism_threads = intra_op_parallelism_threads
        self.inter_op_parallelism_threads = inter_op_parallelism_threads
        self.gpu_options = gpu_options or GPUOptions()
        self.unused_options = unused


_CACHEABLE_FETCH = frozenset((graph_lib.Tensor, graph_lib.Operation, str))


class _UpdateGuard:
    """The session's runs in flight, for the optimizer updates that write a variable's buffer in
    place (kernels_cpu/state_ops.py): one does so only while its run is the session's only one
    (``active`` <= 1), holding ``lock``; a run that starts meanwhile waits on ``lock`` before it
    reads anything, so no run ever sees a buffer half updated."""

    __slots__ = ("lock", "active")

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0

    def enter(self):
        with self.lock:
            self.active += 1

    def exit(self):
        with self.lock:
            self.active -= 1


def _string_array(value, t):
    """A feed for a string tensor as an object array of bytes (``str`` encoded as UTF-8, as
    TensorFlow does)."""
    arr = np.array(value, dtype=object)
    flat = arr.reshape(-1)
    for k, x in enumerate(flat):
        if isinstance(x, str):
            flat[k] = x.encode("utf-8")
        elif isinstance(x, (bytes, np.bytes_)):
            flat[k] = bytes(x)
        else:
            raise _FeedError(None, None, f"Cannot feed {type(x).__name__} {x!r} to "
                             f"{t.name} of dtype string: expected bytes or str")
    return arr


class _FeedError(errors.InvalidArgumentError, ValueError):
    """A bad feed: TensorFlow raises ValueError from Python; mgrt's is also an
    InvalidArgumentError naming the placeholder."""


# --- fetch and feed expansions (TensorFlow's _REGISTERED_EXPANSIONS) ---------------------------
# (type, fetch_fn, feed_fn, feed_fn_for_partial_run), as TensorFlow's: fetch_fn(fetch) gives the
# component tensors and a function building the fetched value from theirs; feed_fn(feed, value)
# gives (component tensor, component value) pairs. runtime/api/sparse_ops.py registers
# SparseTensor (fetched as a SparseTensorValue, fed from one or from a tuple).
_REGISTERED_EXPANSIONS = []


def register_session_run_conversion_functions(tensor_type, fetch_function, feed_function=None,
                                              feed_function_for_partial_run=None):
    """TensorFlow's ``register_session_run_conversion_functions``: how ``Session.run`` fetches
    and feeds objects of ``tensor_type``."""
    for entry in _REGISTERED_EXPANSIONS:
        if issubclass(tensor_type, entry[0]):
            raise ValueError(f"{tensor_type} has already been registered so ignore it.")
    _REGISTERED_EXPANSIONS.insert(0, (tensor_type, fetch_function, feed_function,
                                      feed_function_for_partial_run))


_FEEDABLE_CHECKS = []  # fn(tensor) -> bool, applied to the tensors an expansion feeds


def register_feedable_check(fn):
    """``fn(tensor) -> False`` for a tensor that may not be fed (as TensorFlow's
    ``Graph.is_feedable``: a tensor whose value was read at build time, like a SparseTensor's
    constant dense_shape); checked on the component tensors of an expanded feed."""
    _FEEDABLE_CHECKS.append(fn)


def _expansion(x):
    if _REGISTERED_EXPANSIONS and not isinstance(x, (graph_lib.Tensor, graph_lib.Operation,
                                                     str, bytes)):
        for entry in _REGISTERED_EXPANSIONS:
            if isinstance(x, entry[0]):
                return entry
    return None


# --- fetch structures (TensorFlow's _FetchMapper) -----------------------------------------------
def _is_namedtuple(x):
    return isinstance(x, tuple) and hasattr(x, "_fields")


class _Fetches:
    """Flattens a fetch structure to unique graph elements and rebuilds the results."""

    def __init__(self, graph, fetches):
        self.graph = graph
        self.elements = []  # unique Tensors and Operations
        self._index = {}
        self.structure = self._map(fetches)

    def _element(self, fetch):
        if fetch is None:
            raise TypeError(f"Fetch argument {fetch!r} has invalid type {type(fetch)}")
        if isinstance(fetch, (graph_lib.Tensor, graph_lib.Operation)):
            el = self.graph.as_graph_element(fetch)
        elif hasattr(fetch, "_as_graph_element"):
            el = self.graph.as_graph_element(fetch._as_graph_element())
        elif isinstance(fetch, (str, bytes)):
            try:
                el = self.graph.as_graph_element(fetch)
            except KeyError as e:
                raise ValueError(f"Fetch argument {fetch!r} cannot be interpreted as a Tensor. "
                                 f"({e})") from None
        else:
            raise TypeError(f"Fetch argument {fetch!r} has invalid type {type(fetch)}, must be "
                            "a string or Tensor. (Can not convert a "
                            f"{type(fetch).__name__} into a Tensor or Operation.)")
        key = id(el)
        if key not in self._index:
            self._index[key] = len(self.elements)
            self.elements.append(el)
        return self._index[key]

    def _map(self, f):
        if isinstance(f, (list, tuple)) and not _is_namedtuple(f):
            return (type(f), [self._map(x) for x in f])
        if _is_namedtuple(f):
            return ("namedtuple", type(f), [self._map(x) for x in f])
        if isinstance(f, collections.abc.Mapping):
            return ("dict", type(f), [(k, self._map(v)) for k, v in f.items()])
        expansion = _expansion(f)
        if expansion is not None:
            parts, contract = expansion[1](f)
            return ("expand", contract, [self._element(p) for p in parts])
        return self._element(f)

    def build(self, values):
        def rebuild(s):
            if isinstance(s, int):
                return values[s]
            if s[0] == "expand":
                return s[1]([values[i] for i in s[2]])
            if s[0] == "namedtuple":
                return s[1](*[rebuild(x) for x in s[2]])
            if s[0] == "dict":
                cls = s[1]
                items = [(k, rebuild(v)) for k, v in s[2]]
                try:
                    return cls(items)
                except TypeError:
                    return dict(items)
            cls, items = s
            out = [rebuild(x) for x in items]
            return out if cls is list else (tuple(out) if cls is tuple else cls(out))

        return rebuild(self.structure)


# --- the default session ----------------------------------------------------------------------
class _SessionStack(threading.local):
    def __init__(self):
        super().__init__()
        self.stack = []


_default_session_stack = _SessionStack()


def get_default_session():
    stack = _default_session_stack.stack
    return stack[-1] if stack else None


def _eval_using_default_session(tensor, feed_dict, graph, session=None):
    session = session or get_default_session()
    if session is None:
        raise ValueError("Cannot evaluate tensor using `eval()`: No default session is "
                         "registered. Use `with sess.as_default()` or pass an explicit session "
                         "to `eval(session=sess)`")
    if session.graph is not graph:
        raise ValueError("Cannot use the given session to evaluate tensor: the tensor's graph "
                         "is different from the session's graph.")
    return session.run(tensor, feed_dict)


def _run_using_default_session(op, feed_dict, graph, session=None):
    session = session or get_default_session()
    if session is None:
        raise ValueError("Cannot execute operation using `run()`: No default session is "
                         "registered. Use `with sess.as_default():` or pass an explicit session "
                         "to `run(session=sess)`")
    if session.graph is not graph:
        raise ValueError("Cannot use the given session to execute operation: the operation's "
                         "graph is different from the session's graph.")
    session.run(op, feed_dict)


class Session:
    """``tf.compat.v1.Session``."""

    def __init__(self, target="", graph=None, config=None):
        if target not in ("", None, b""):
            raise errors.UnimplementedError(
                None, None, f"mgrt runs graphs in this process only; target {target!r} (a "
                "distributed TensorFlow server) is not supported. Use Session() and soft "
                "placement re-targets /job:... devices to this host.")
        self._graph = graph or graph_lib.get_default_graph()
        self._config = config or ConfigProto()
        self._state = executor.SessionState()
        self._state.update_guard = _UpdateGuard()
        self._plans = {}
        self._closed = False
        self._default_ctx = None
        self._devices = devices_lib.list_devices(self._config)
        if self._config.intra_op_parallelism_threads:
            from mgrt.devices.cpu import limit_intra_op_threads
            limit_intra_op_threads(self._config.intra_op_parallelism_threads)
        self._placement = None
        self._placement_version = None
        self._feed_specs = {}
        self._mappers = {}

    @property
    def graph(self):
        return self._graph

    @property
    def graph_def(self):
        return self._graph.as_graph_def()

    @property
    def sess_str(self):
        return ""

    def list_devices(self):
        return list(self._devices)

    # --- context managers ---------------------------------------------------------------------
    def as_default(self):
        sess = self

        class _Ctx:
            def __enter__(self_inner):
                _default_session_stack.stack.append(sess)
                return sess

            def __exit__(self_inner, *exc):
                _default_session_stack.stack.remove(sess)
                return False

        return _Ctx()

    def __enter__(self):
        self._graph_ctx = self._graph.as_default()
        self._graph_ctx.__enter__()
        self._default_ctx = self.as_default()
        self._default_ctx.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._default_ctx.__exit__(exc_type, exc, tb)
        self._graph_ctx.__exit__(exc_type, exc, tb)
        self.close()
        return False

    def close(self):
        self._closed = True
        self._plans.clear()

    # --- run ----------------------------------------------------------------------------------
    def placement(self):
        """Where each node of the graph runs (a ``runtime.placer.Placement``), placed as this
        session's next ``run`` places it: the whole graph at once, again after the graph grew.
        Strict placement (``ConfigProto(allow_soft_placement=False)``) raises TensorFlow's
        InvalidArgumentError here."""
        version = self._graph.version
        if self._placement is None or self._placement_version != version:
            cfg = self._config
            soft = cfg.allow_soft_placement is not False
            first = self._placement is None
            before = len(self._placement.moved) if self._placement is not None else 0
            p = placer.place(self._graph, self._devices, allow_soft_placement=soft,
                             log_device_placement=bool(cfg.log_device_placement), warn=False)
            # The moved-nodes warning once per session, and again only when more nodes moved.
            if p.moved and (first or len(p.moved) > before):
                sys.stderr.write(p.warning() + "\n")
            self._placement = p
            self._placement_version = version
            self._plans.clear()  # plans of an older graph version are never used again
        return self._placement

    def _plan(self, fetch_tensors, target_ops, feed_tensors):
        key = (tuple(id(t) for t in fetch_tensors), tuple(id(o) for o in target_ops),
               tuple(id(t) for t in feed_tensors), self._graph.version)
        plan = self._plans.get(key)
        if plan is None:
            placement = self.placement()
            plan = executor.Plan(self._graph, fetch_tensors, target_ops, feed_tensors,
                                 self._state, placement)
            self._plans[key] = plan
        return plan

    def _feed_spec(self, key):
        """``(tensor, numpy dtype, dims)`` for a feed_dict key (a Tensor, a name, or anything
        with ``_as_graph_element``); cached, since names never change meaning in a graph."""
        try:
            spec = self._feed_specs.get(key)
        except TypeError:  # an unhashable key: TensorFlow's error below
            spec = None
        if spec is not None:
            return spec
        k = key
        if hasattr(k, "_as_graph_element") and not isinstance(k, graph_lib.Tensor):
            k = k._as_graph_element()
        try:
            t = self._graph.as_graph_element(k, allow_tensor=True, allow_operation=False)
        except (KeyError, ValueError, TypeError) as e:
            msg = e.message if hasattr(e, "message") else str(e)
            raise TypeError(f"Cannot interpret feed_dict key as Tensor: {msg}") from None
        shape = t.shape
        dims = None if shape.rank is None else tuple(
            None if d is None else int(d) for d in shape.as_list())
        spec = (t, np.dtype(t.dtype.base_dtype.as_numpy_dtype), dims)
        try:
            self._feed_specs[key] = spec
        except TypeError:
            pass
        return spec

    @staticmethod
    def _feed_value(spec, value):
        """``value`` as the array fed to ``spec``'s tensor, checked as TensorFlow checks it."""
        t, np_dtype, dims = spec
        if type(value) is np.ndarray and value.dtype == np_dtype:
            arr = value
        elif isinstance(value, graph_lib.Tensor):
            raise TypeError("The value of a feed cannot be a tf.Tensor object. Acceptable "
                            "feed values include Python scalars, strings, lists, numpy "
                            "ndarrays, or TensorHandles.")
        elif np_dtype == object:
            arr = _string_array(value, t)
        else:
            try:
                arr = np.asarray(value, dtype=np_dtype)
            except (TypeError, ValueError) as e:
                raise _FeedError(None, None, f"Cannot feed {type(value).__name__} to "
                                 f"{t.name} of dtype {t.dtype.base_dtype.name}: {e}") from None
        if dims is not None:
            shape = arr.shape
            if len(shape) != len(dims) or any(
                    d is not None and d != n for d, n in zip(dims, shape)):
                raise _FeedError(
                    None, None, f"Cannot feed value of shape {shape} for Tensor {t.name!r}, "
                    f"which has shape {list(dims)!r}")
        return arr

    def _feed(self, feed_dict):
        tensors, values = [], []
        if not feed_dict:
            return tensors, values
        for key, value in feed_dict.items():
            expansion = _expansion(key)
            if expansion is not None:  # a SparseTensor: its component tensors fed
                for sub_key, sub_value in expansion[2](key, value):
                    spec = self._feed_spec(sub_key)
                    tensors.append(spec[0])
                    values.append(self._feed_value(spec, sub_value))
                    if not all(check(spec[0]) for check in _FEEDABLE_CHECKS):
                        raise ValueError(f"Tensor {spec[0].name} may not be fed.")
                continue
            spec = self._feed_spec(key)
            tensors.append(spec[0])
            values.append(self._feed_value(spec, value))
        return tensors, values

    def _fetch_mapper(self, fetches):
        """The flattened fetches; cached for a Tensor, an Operation, or a list or tuple of
        them (the common ``sess.run([train_op, loss])``)."""
        t = type(fetches)
        key = None
        if t is graph_lib.Tensor or t is graph_lib.Operation:
            key = (t, id(fetches))
        elif t is str:
            key = fetches  # a name means one element for the graph's life
        elif (t is list or t is tuple) and all(
                type(f) in _CACHEABLE_FETCH for f in fetches):
            key = (t,) + tuple(f if type(f) is str else id(f) for f in fetches)
        if key is not None:
            cached = self._mappers.get(key)
            if cached is not None:
                return cached[0]
        mapper = _Fetches(self._graph, fetches)
        fetch_tensors = [e for e in mapper.elements if isinstance(e, graph_lib.Tensor)]
        targets = [e for e in mapper.elements if isinstance(e, graph_lib.Operation)]
        # where each element's value is in the plan's output (None: an operation)
        pos = {id(x): i for i, x in enumerate(fetch_tensors)}
        where = [pos.get(id(e)) for e in mapper.elements]
        entry = (mapper, fetch_tensors, targets, where)
        if key is not None:
            if len(self._mappers) > 1024:
                self._mappers.clear()
            # the fetched objects are kept alive with the entry, so their ids stay theirs
            self._mappers[key] = (entry, fetches)
        return entry

    def _results(self, mapper, where, out):
        values = []
        for i in where:
            if i is None:
                values.append(None)
            else:
                v = out[i]
                if type(v) is not np.ndarray:
                    v = executor.to_host(v)
                elif not v.flags.writeable:  # a Const's value, a view of one: TF gives a new
                    v = v.copy()             # array the caller may write
                # TensorFlow returns a scalar as a numpy scalar (bytes for a string)
                values.append(v[()] if v.ndim == 0 else v)
        return mapper.build(values)

    def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
        if self._closed:
            raise RuntimeError("Attempted to use a closed Session.")
        mapper, fetch_tensors, targets, where = self._fetch_mapper(fetches)
        feed_tensors, feed_values = self._feed(feed_dict)
        plan = self._plan(fetch_tensors, targets, feed_tensors)
        guard = self._state.update_guard
        guard.enter()
        try:
            out = plan.run(feed_values)
        finally:
            guard.exit()
        return self._results(mapper, where, out)

    def make_callable(self, fetches, feed_list=None, accept_options=False):
        """A function running ``fetches`` with positional feed values (the plan is built
        once)."""
        if any(_expansion(f) is not None for f in (feed_list or [])):
            # as TensorFlow: a feed list holding a SparseTensor runs through ``run``
            keys = list(feed_list)

            def generic_call(*args, **kwargs):
                if len(args) != len(keys):
                    raise TypeError(f"Expected {len(keys)} feed values, got {len(args)}.")
                return self.run(fetches, feed_dict=dict(zip(keys, args)), **kwargs)

            return generic_call
        mapper, fetch_tensors, targets, where = self._fetch_mapper(fetches)
        specs = [self._feed_spec(f) for f in (feed_list or [])]
        feed_tensors = [spec[0] for spec in specs]
        n = len(specs)
        cached = [None, None]  # graph version, plan
        feed_value = self._feed_value
        graph = self._graph
        guard = self._state.update_guard

        def call(*args, **kwargs):
            if len(args) != n:
                raise TypeError(f"Expected {n} feed values, got {len(args)}.")
            if self._closed:
                raise RuntimeError("Attempted to use a closed Session.")
            values = [feed_value(spec, v) for spec, v in zip(specs, args)]
            if cached[0] != graph.version:
                cached[1] = self._plan(fetch_tensors, targets, feed_tensors)
                cached[0] = graph.version
            guard.enter()
            try:
                out = cached[1].run(values)
            finally:
                guard.exit()
            return self._results(mapper, where, out)

        return call


class InteractiveSession(Session):
    """A Session that makes itself the default session when created."""

    def __init__(self, target="", graph=None, config=None):
        super().__init__(target, graph, config)
        self._graph_ctx = self._graph.as_default()
        self._graph_ctx.__enter__()
        self._default_ctx = self.as_default()
        self._default_ctx.__enter__()

    def close(self):
        if not self._closed and self._default_ctx is not None:
            self._default_ctx.__exit__(None, None, None)
            self._graph_ctx.__exit__(None, None, None)
        super().close()


def _dtype_name(t):
    return dtypes.as_dtype(t).name
