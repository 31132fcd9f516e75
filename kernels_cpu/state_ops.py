"""Variables and their updates: ref variables (VariableV2, Assign, AssignAdd, AssignSub,
IsVariableInitialized), resource variables (VarHandleOp, ReadVariableOp, AssignVariableOp, ...),
the optimizers' updates in every form TensorFlow has (Apply*, ResourceApply*, SparseApply*,
ResourceSparseApply*: GradientDescent, ProximalGradientDescent, Momentum, KerasMomentum, Adam,
AdamWithAmsgrad, AdaMax, RMSProp, CenteredRMSProp, Adagrad, AdagradV2, ProximalAdagrad,
Adadelta, AddSign, PowerSign, AdagradDA, Ftrl, FtrlV2), the Scatter* and ScatterNd* updates
(ref and resource) and ResourceGather / ResourceGatherNd.

Buffers live in the Session's state (``ctx.state``); a ref output is an ``executor.Ref``, a
resource handle a 0-d object array holding a ``ResourceHandle``. A value read from a variable
(a ref input read by value, ReadVariableOp, Identity of a ref) is the store's array itself; a
value read earlier keeps the value it had when it was read because no update writes an array
that anything but the store still holds:

- the dense optimizer updates (Apply* / ResourceApply* GradientDescent, Momentum,
  KerasMomentum, Adam, RMSProp, Adagrad, AdagradV2) and every SparseApply form write a
  variable's buffer (and its slots' buffers) in place when the store holds the only reference
  to it (``_sole``: an array that owns its memory, C-contiguous, writeable, whose reference
  count is the store's alone) and when no other run of the session is in flight (the
  session's ``update_guard``, see ``_enter_in_place``), and into a new buffer otherwise. So an
  array that ``sess.run`` returned (its user holds it), a read whose consumers have not run
  yet (an executor slot holds it), a view of the buffer anywhere: each keeps the buffer shared
  and the update goes to a new one, as TensorFlow's copy-on-write for resource variables does
  (it copies a buffer whose reference count is not one). The dense in-place updates run over
  chunks of 256 KiB (the temporaries stay in cache) and evaluate TensorFlow's expressions op
  by op in its order, so they give the bits the allocating path gives;
- the other updates (Assign*, the scatters, the other optimizers) write a new array into the
  store.

Formulas, argument checks and error messages are TensorFlow's CPU kernels' (training_ops,
scatter_op, scatter_nd_op, resource_variable_ops; recorded in tests/fixtures/ops/state.*). The
SparseApply ops apply the rows in index order, so a repeated index sees the earlier update, as
TensorFlow's loop does. ``use_locking`` makes the read-modify-write of a variable atomic (one
lock per variable; the resource scatters always lock, as TensorFlow's do).

Where mgrt does better than TensorFlow:
- an update that fails (an index out of range, ...) changes nothing; TensorFlow has already
  written the rows before the bad index;
- ResourceScatter* refuses updates whose rows are not the variable's rows (TensorFlow checks
  only the leading dimensions and then writes the updates across rows);
- a slot whose shape TensorFlow does not check (AdamWithAmsgrad's vhat, Adadelta's
  accum_update) is used as TensorFlow uses it when it has the variable's size, and refused
  otherwise (TensorFlow would read past its end).
"""

import sys
import threading

import numpy as np

from mgrt.kernels_cpu import _blas, _jit, _team
from mgrt.kernels_cpu.array_ops import _slice_debug_string
from mgrt.runtime import dtypes, errors
from mgrt.runtime.executor import Ref
from mgrt.runtime.kernel_registry import FusedMemberError, register


def _var_key(node):
    container = node.attr("container", b"") or b""
    shared = node.attr("shared_name", b"") or b""
    name = shared.decode() if shared else node.name
    return (container.decode() if isinstance(container, bytes) else container, name)


# --- ref variables ------------------------------------------------------------------------------
@register(["VariableV2", "Variable"], "CPU")
def _variable(node, ctx):
    ref = Ref(ctx.state.variables, _var_key(node), node.name)

    def run():
        return (ref,)

    return run


def _check_same_shape(op, lhs, rhs):
    if lhs.shape != rhs.shape:
        raise errors.InvalidArgumentError(
            None, None, f"{op} requires shapes of both tensors to match. "
            f"lhs shape= {_shp(lhs.shape)} rhs shape= {_shp(rhs.shape)}")


@register("Assign", "CPU")
def _assign(node, ctx):
    validate = node.attr("validate_shape", True)
    np_dtype = node.output_types[0].base_dtype.as_numpy_dtype

    def run(ref, value):
        if validate and ref.initialized:
            _check_same_shape("Assign", ref.value, value)
        ref.assign(np.array(value, dtype=np_dtype, copy=True))
        return (ref,)

    return run


def _ref_update(op_name, fn):
    def builder(node, ctx):
        def run(ref, value):
            cur = ref.value
            _check_same_shape(op_name, cur, value)
            ref.assign(fn(cur, value).astype(cur.dtype, copy=False))
            return (ref,)

        return run

    return builder


register("AssignAdd", "CPU")(_ref_update("AssignAdd", np.add))
register("AssignSub", "CPU")(_ref_update("AssignSub", np.subtract))


@register("IsVariableInitialized", "CPU")
def _is_initialized(node, ctx):
    def run(ref):
        return (np.asarray(ref.initialized),)

    return run


# --- resource variables -------------------------------------------------------------------------
class ResourceHandle:
    """The value of a resource handle tensor: where the variable lives in the session."""

    __slots__ = ("store", "key", "name", "dtype", "shape")

    def __init__(self, store, key, name, dtype, shape):
        self.store = store
        self.key = key
        self.name = name
        self.dtype = dtype
        self.shape = shape

    def read(self, op="ReadVariableOp"):
        v = self.store.get(self.key)
        if v is None:
            raise errors.FailedPreconditionError(
                None, None, f"Could not find variable {self.name}. This could mean that the "
                "variable has been deleted. In TF1, it can also mean the variable is "
                f"uninitialized. Debug info: container={self.key[0] or 'localhost'}, "
                f"status error message=Resource localhost/{self.name} does not exist.")
        return v

    def __repr__(self):
        return f"<ResourceHandle {self.name}>"


def _handle_box(handle):
    box = np.empty((), dtype=object)
    box[()] = handle
    return box


def _handle(box):
    h = box[()] if isinstance(box, np.ndarray) else box
    if not isinstance(h, ResourceHandle):
        raise errors.InvalidArgumentError(None, None, f"Expected a resource handle, got {type(h).__name__}")
    return h


@register("VarHandleOp", "CPU")
def _var_handle(node, ctx):
    handle = ResourceHandle(ctx.state.resources, _var_key(node), _var_key(node)[1],
                            node.attr("dtype"), node.attr("shape"))
    box = _handle_box(handle)

    def run():
        return (box,)

    return run


@register("ReadVariableOp", "CPU")
def _read_variable(node, ctx):
    dtype = node.attr("dtype")

    def run(box):
        h = _handle(box)
        v = h.read()
        if dtypes.as_dtype(v.dtype) != dtype:
            raise errors.InvalidArgumentError(
                None, None, f"Trying to read variable with wrong dtype. Expected "
                f"{dtypes.as_dtype(v.dtype).name} got {dtype.name}")
        return (v,)

    return run


@register("AssignVariableOp", "CPU")
def _assign_variable(node, ctx):
    dtype = node.attr("dtype")
    np_dtype = dtype.as_numpy_dtype

    def run(box, value):
        h = _handle(box)
        if h.dtype is not None and h.dtype != dtype:
            raise errors.InvalidArgumentError(
                None, None, f"Trying to assign variable with wrong dtype. Expected "
                f"{h.dtype.name} got {dtype.name}")
        h.store[h.key] = np.array(value, dtype=np_dtype, copy=True)
        return ()

    return run


def _resource_update(fn):
    def builder(node, ctx):
        def run(box, value):
            h = _handle(box)
            cur = h.read()
            _check_same_shape(node.op, cur, value)
            h.store[h.key] = fn(cur, value).astype(cur.dtype, copy=False)
            return ()

        return run

    return builder


register("AssignAddVariableOp", "CPU")(_resource_update(np.add))
register("AssignSubVariableOp", "CPU")(_resource_update(np.subtract))


@register("VarIsInitializedOp", "CPU")
def _var_is_initialized(node, ctx):
    def run(box):
        h = _handle(box)
        return (np.asarray(h.store.get(h.key) is not None),)

    return run


@register("DestroyResourceOp", "CPU")
def _destroy_resource(node, ctx):
    ignore_lookup_error = node.attr("ignore_lookup_error", True)

    def run(box):
        h = _handle(box)
        if h.key not in h.store and not ignore_lookup_error:
            raise errors.NotFoundError(None, None, f"Resource {h.name} does not exist.")
        h.store.pop(h.key, None)
        return ()

    return run


# --- access to the variables an update op names --------------------------------------------------
# A state op's variable inputs are Refs (ref forms) or resource handles (Resource* forms). TF's
# messages for a missing value differ by op family: ref inputs say "Attempting to use
# uninitialized value <name>" (Ref.value); resource Apply ops say "Invalid variable reference.";
# resource scatters and gathers look the resource up and say it does not exist.
_INVALID_REF = "Invalid variable reference."


def _missing_resource(h):
    if not h.store:
        msg = (f"Container {h.key[0] or 'localhost'} does not exist. (Could not find resource: "
               f"{h.key[0] or 'localhost'}/{h.name})")
    else:
        msg = f"Resource {h.key[0] or 'localhost'}/{h.name}/N10tensorflow3VarE does not exist."
    return errors.NotFoundError(None, None, msg)


def _read_apply(holders, resource):
    """Current values of an Apply op's variables (ref or resource)."""
    if not resource:
        return [r.value for r in holders]
    out = []
    for b in holders:
        h = _handle(b)
        v = h.store.get(h.key)
        if v is None:
            raise errors.InternalError(
                None, None, f"{_INVALID_REF} (The resource variable {h.name} has no value: "
                "run its initializer first.)")
        out.append(v)
    return out


def _read_lookup(box):
    h = _handle(box)
    v = h.store.get(h.key)
    if v is None:
        raise _missing_resource(h)
    return h, v


def _write(holders, resource, values):
    if resource:
        for b, v in zip(holders, values):
            h = _handle(b)
            h.store[h.key] = v
    else:
        for r, v in zip(holders, values):
            r.assign(v)


# --- in-place updates: is the store's array referenced by the store alone? ------------------------
def _refs(store, key):
    """The reference count of ``store[key]`` as seen from here: the store's own reference plus
    getrefcount's argument when nothing else holds the array."""
    return sys.getrefcount(store.get(key))


def _calibrate():
    if not hasattr(sys, "getrefcount"):  # not CPython: never in place
        return -1
    probe = {0: np.empty(1)}
    return _refs(probe, 0)


# The count of an array only a store holds, measured through the same code path (so it holds
# whatever the interpreter's reference counting does with arguments and temporaries).
_SOLE_REFS = _calibrate()


def _owns(store, key):
    v = store.get(key)
    if type(v) is not np.ndarray:
        return False
    f = v.flags
    return f.owndata and f.c_contiguous and f.writeable


def _sole(store, key):
    """Whether the store holds the only reference to ``store[key]``, an array that owns its
    memory (so every view of it, anywhere, holds a reference to it and shows in the count):
    then nothing else can see a change of it, and an update may write it in place. Call it
    before binding the array to a local name."""
    return _owns(store, key) and _refs(store, key) <= _SOLE_REFS


def _where(holder, resource):
    """(store, key) of a state op's variable input."""
    if resource:
        h = _handle(holder)
        return h.store, h.key
    return holder.store, holder.key


def _sole_all(holders, resource):
    """Per variable input, whether its buffer may be written in place (all False when two
    inputs name the same variable)."""
    places = [_where(b, resource) for b in holders]
    if len(places) > 1 and len({(id(st), k) for st, k in places}) != len(places):
        return [False] * len(places)
    return [_sole(st, k) for st, k in places]


def _guard_of(ctx):
    """The session's update guard (runtime/session.py: ``lock``, and ``active``, the number of
    its runs in flight), or None (a kernel called outside a session)."""
    return getattr(ctx.state, "update_guard", None) if ctx is not None else None


def _enter_in_place(guard):
    """Whether an update may write buffers in place: only while its run is the session's only
    run in flight (another thread's run could be reading the buffer, or could read it half
    written). True holds ``guard.lock`` (the caller releases it after the update), so a run
    that starts meanwhile waits before it reads anything."""
    if guard is None:
        return True
    guard.lock.acquire()
    if guard.active <= 1:
        return True
    guard.lock.release()
    return False


# use_locking: one lock per variable buffer, shared by every locking update of it.
_LOCKS = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(holder):
    if isinstance(holder, Ref):
        store, key = holder.store, holder.key
    else:
        h = _handle(holder)
        store, key = h.store, h.key
    k = (id(store), key)
    lock = _LOCKS.get(k)
    if lock is None:
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(k, threading.RLock())
    return lock


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NO_LOCK = _NoLock()


def _locked(holder, use_locking):
    return _lock_for(holder) if use_locking else _NO_LOCK


def _shp(shape):
    """TensorShape::DebugString: ``[2,3]``, ``[]``."""
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def _err(msg):
    return errors.InvalidArgumentError(None, None, msg)


# --- optimizer updates ----------------------------------------------------------------------------
# Each update takes the attrs, the variable and its slots (current values; for the SparseApply
# forms, the rows being updated), the hyperparameters (a dict of numpy scalars of the variable's
# dtype, by the op's argument names) and the gradient, and returns the new variable and slots.
# The formulas are TensorFlow's training_ops CPU kernels'; the sparse kernels apply the same
# formula to each indexed row.
def _one(x):
    return x.dtype.type(1)


def _sgd(a, s, h, g):
    return [s[0] - g * h["alpha"]]


def _prox_shrink(prox, lr_eff, l1, l2):
    if l1 > 0:
        return np.sign(prox) * np.maximum(np.abs(prox) - lr_eff * l1, 0) / (1 + l2 * lr_eff)
    return prox / (1 + l2 * lr_eff)


def _proximal_sgd(a, s, h, g):
    alpha = h["alpha"]
    prox = s[0] - g * alpha
    return [_prox_shrink(prox, alpha, h["l1"], h["l2"]).astype(prox.dtype, copy=False)]


def _momentum(a, s, h, g):
    var, accum = s
    lr, momentum = h["lr"], h["momentum"]
    accum = accum * momentum + g
    if a.get("use_nesterov"):
        var = var - (g * lr + accum * momentum * lr)
    else:
        var = var - accum * lr
    return [var, accum]


def _keras_momentum(a, s, h, g):
    var, accum = s
    lr, momentum = h["lr"], h["momentum"]
    accum = accum * momentum - g * lr
    if a.get("use_nesterov"):
        var = var + (accum * momentum - g * lr)
    else:
        var = var + accum
    return [var, accum]


def _adam_alpha(h, one):
    """Adam's step size: lr * sqrt(1 - beta2^t) / (1 - beta1^t), in the variable's dtype."""
    return h["lr"] * np.sqrt(one - h["beta2_power"]) / (one - h["beta1_power"])


def _adam(a, s, h, g):
    var, m, v = s
    one = _one(var)
    alpha = _adam_alpha(h, one)
    b1, b2, eps = h["beta1"], h["beta2"], h["epsilon"]
    m = m + (g - m) * (one - b1)
    v = v + (np.square(g) - v) * (one - b2)
    if a.get("use_nesterov"):
        var = var - ((g * (one - b1) + b1 * m) * alpha) / (np.sqrt(v) + eps)
    else:
        var = var - (m * alpha) / (np.sqrt(v) + eps)
    return [var, m, v]


def _adam_amsgrad(a, s, h, g):
    var, m, v, vhat = s
    one = _one(var)
    alpha = _adam_alpha(h, one)
    m = m + (g - m) * (one - h["beta1"])
    v = v + (np.square(g) - v) * (one - h["beta2"])
    vhat = np.maximum(vhat, v)
    var = var - (m * alpha) / (np.sqrt(vhat) + h["epsilon"])
    return [var, m, v, vhat]


def _adamax(a, s, h, g):
    var, m, v = s
    one = _one(var)
    m = m + (g - m) * (one - h["beta1"])
    v = np.maximum(h["beta2"] * v, np.abs(g))
    var = var - h["lr"] / (one - h["beta1_power"]) * (m / (v + h["epsilon"]))
    return [var, m, v]


def _rmsprop(a, s, h, g):
    var, ms, mom = s
    one = _one(var)
    ms = ms + (np.square(g) - ms) * (one - h["rho"])
    mom = mom * h["momentum"] + (g * h["lr"]) / np.sqrt(ms + h["epsilon"])
    return [var - mom, ms, mom]


def _centered_rmsprop(a, s, h, g):
    var, mg, ms, mom = s
    one = _one(var)
    ms = ms + (np.square(g) - ms) * (one - h["rho"])
    mg = mg + (g - mg) * (one - h["rho"])
    denom = (ms - np.square(mg)) + h["epsilon"]
    mom = mom * h["momentum"] + (g * h["lr"]) / np.sqrt(denom)
    return [var - mom, mg, ms, mom]


def _adagrad(a, s, h, g):
    var, accum = s
    if a.get("update_slots", True):
        accum = accum + np.square(g)
    return [var - g * h["lr"] / np.sqrt(accum), accum]


def _adagrad_v2(a, s, h, g):
    var, accum = s
    if a.get("update_slots", True):
        accum = accum + np.square(g)
    return [var - g * h["lr"] / (np.sqrt(accum) + h["epsilon"]), accum]


def _proximal_adagrad(a, s, h, g):
    var, accum = s
    accum = accum + np.square(g)
    lr_eff = h["lr"] / np.sqrt(accum)
    prox = var - g * lr_eff
    return [_prox_shrink(prox, lr_eff, h["l1"], h["l2"]).astype(var.dtype, copy=False), accum]


def _adadelta(a, s, h, g):
    var, accum, accum_update = s
    one = _one(var)
    rho, eps = h["rho"], h["epsilon"]
    accum = accum * rho + np.square(g) * (one - rho)
    update = np.sqrt(accum_update + eps) / np.sqrt(accum + eps) * g
    var = var - update * h["lr"]
    accum_update = accum_update * rho + np.square(update) * (one - rho)
    return [var, accum, accum_update]


def _add_sign(a, s, h, g):
    var, m = s
    one = _one(var)
    m = m * h["beta"] + g * (one - h["beta"])
    sign_gm = np.sign(g) * np.sign(m)
    return [var - h["lr"] * (h["alpha"] + h["sign_decay"] * sign_gm) * g, m]


def _power_sign(a, s, h, g):
    var, m = s
    one = _one(var)
    m = m * h["beta"] + g * (one - h["beta"])
    sign_gm = np.sign(g) * np.sign(m)
    scale = np.exp(h["logbase"] * h["sign_decay"] * sign_gm)
    return [var - h["lr"] * scale * g, m]


def _adagrad_da(a, s, h, g):
    var, ga, gsa = s
    ga = ga + g
    gsa = gsa + np.square(g)
    lr, l1, l2 = h["lr"], h["l1"], h["l2"]
    step = var.dtype.type(float(h["global_step"]))
    denom = l2 * (step * lr) + np.sqrt(gsa)
    if l1 > 0:
        var = lr * -np.sign(ga) * np.maximum(np.abs(ga) - step * l1, 0) / denom
    else:
        var = lr * ga * -1 / denom
    return [var.astype(ga.dtype, copy=False), ga, gsa]


def _ftrl(a, s, h, g):
    var, accum, linear = s
    lr, l1, l2, lr_power = h["lr"], h["l1"], h["l2"], h["lr_power"]
    shrink = h.get("l2_shrinkage")
    g_lin = g if shrink is None else g + 2 * shrink * var
    new_accum = accum + np.square(g)
    if lr_power == -0.5:
        new_p, old_p = np.sqrt(new_accum), np.sqrt(accum)
    else:
        new_p, old_p = np.power(new_accum, -lr_power), np.power(accum, -lr_power)
    if a.get("multiply_linear_by_lr"):
        linear = linear + (g_lin * lr - (new_p - old_p) * var)
        l1_eff = l1 * lr
        y = new_p + 2 * l2 * lr
    else:
        linear = linear + (g_lin - (new_p - old_p) / lr * var)
        l1_eff = l1
        y = new_p / lr + 2 * l2
    x = l1_eff * np.sign(linear) - linear
    var = np.where(np.abs(linear) > l1_eff, x / y, var.dtype.type(0))
    return [var.astype(accum.dtype, copy=False), new_accum, linear]


# --- the same updates written into buffers ----------------------------------------------------------
# ``fn(a, s, d, h, g, t)``: s = the current variable and slots (flat, one chunk), d = where their
# new values go (the same arrays for an in-place update, new buffers otherwise), g = the gradient
# chunk, t = scratch arrays of the chunk's size. The ops are the expressions above, in their
# order and with their operands' dtypes, so each element rounds as it does there; an s[k] is not
# read after d[k] is written.
def _sgd_to(a, s, d, h, g, t):
    np.multiply(g, h["alpha"], out=t[0])
    np.subtract(s[0], t[0], out=d[0])


def _momentum_to(a, s, d, h, g, t):
    lr, momentum = h["lr"], h["momentum"]
    acc = d[1]
    np.multiply(s[1], momentum, out=acc)
    np.add(acc, g, out=acc)
    t0 = t[0]
    if a.get("use_nesterov"):  # var - (g * lr + accum * momentum * lr)
        np.multiply(g, lr, out=t0)
        t1 = t[1]
        np.multiply(acc, momentum, out=t1)
        np.multiply(t1, lr, out=t1)
        np.add(t0, t1, out=t0)
    else:  # var - accum * lr
        np.multiply(acc, lr, out=t0)
    np.subtract(s[0], t0, out=d[0])


def _keras_momentum_to(a, s, d, h, g, t):
    lr, momentum = h["lr"], h["momentum"]
    acc, gl = d[1], t[0]
    np.multiply(g, lr, out=gl)
    np.multiply(s[1], momentum, out=acc)
    np.subtract(acc, gl, out=acc)  # accum * momentum - g * lr
    if a.get("use_nesterov"):  # var + (accum * momentum - g * lr)
        t1 = t[1]
        np.multiply(acc, momentum, out=t1)
        np.subtract(t1, gl, out=t1)
        np.add(s[0], t1, out=d[0])
    else:
        np.add(s[0], acc, out=d[0])


def _adam_to(a, s, d, h, g, t):
    one = _one(s[0])
    alpha = _adam_alpha(h, one)
    b1, b2, eps = h["beta1"], h["beta2"], h["epsilon"]
    m, v, t0, t1 = d[1], d[2], t[0], t[1]
    np.subtract(g, s[1], out=t0)  # m + (g - m) * (1 - beta1)
    np.multiply(t0, one - b1, out=t0)
    np.add(s[1], t0, out=m)
    np.square(g, out=t0)  # v + (g^2 - v) * (1 - beta2)
    np.subtract(t0, s[2], out=t0)
    np.multiply(t0, one - b2, out=t0)
    np.add(s[2], t0, out=v)
    if a.get("use_nesterov"):  # ((g * (1 - beta1) + beta1 * m) * alpha) / (sqrt(v) + eps)
        np.multiply(g, one - b1, out=t0)
        np.multiply(m, b1, out=t1)
        np.add(t0, t1, out=t0)
        np.multiply(t0, alpha, out=t0)
    else:  # (m * alpha) / (sqrt(v) + eps)
        np.multiply(m, alpha, out=t0)
    np.sqrt(v, out=t1)
    np.add(t1, eps, out=t1)
    np.divide(t0, t1, out=t0)
    np.subtract(s[0], t0, out=d[0])


def _rmsprop_to(a, s, d, h, g, t):
    one = _one(s[0])
    ms, mom, t0, t1 = d[1], d[2], t[0], t[1]
    np.square(g, out=t0)  # ms + (g^2 - ms) * (1 - rho)
    np.subtract(t0, s[1], out=t0)
    np.multiply(t0, one - h["rho"], out=t0)
    np.add(s[1], t0, out=ms)
    np.add(ms, h["epsilon"], out=t1)  # mom * momentum + (g * lr) / sqrt(ms + eps)
    np.sqrt(t1, out=t1)
    np.multiply(g, h["lr"], out=t0)
    np.divide(t0, t1, out=t0)
    np.multiply(s[2], h["momentum"], out=mom)
    np.add(mom, t0, out=mom)
    np.subtract(s[0], mom, out=d[0])


def _adagrad_to_fn(eps_name):
    def update(a, s, d, h, g, t):
        acc, t0, t1 = d[1], t[0], t[1]
        if a.get("update_slots", True):  # accum + g^2
            np.square(g, out=t0)
            np.add(s[1], t0, out=acc)
        elif acc is not s[1]:
            np.copyto(acc, s[1])
        np.multiply(g, h["lr"], out=t0)  # var - g * lr / sqrt(accum) [+ epsilon]
        np.sqrt(acc, out=t1)
        if eps_name:
            np.add(t1, h[eps_name], out=t1)
        np.divide(t0, t1, out=t0)
        np.subtract(s[0], t0, out=d[0])
    return update


# family -> (update into buffers, number of scratch arrays)
_TO = {
    "GradientDescent": (_sgd_to, 1),
    "Momentum": (_momentum_to, 2),
    "KerasMomentum": (_keras_momentum_to, 2),
    "Adam": (_adam_to, 2),
    "RMSProp": (_rmsprop_to, 2),
    "Adagrad": (_adagrad_to_fn(None), 2),
    "AdagradV2": (_adagrad_to_fn("epsilon"), 2),
}
# The same updates as one numba pass (_jit), where the loops are on and the arrays are float32 or
# float64 and C-contiguous: ``fn(attrs, s, d, h, g)``, the same roundings as above. They serve
# small variables too (into new buffers): one call instead of a numpy expression per operation.
_JIT_DT = (np.dtype(np.float32), np.dtype(np.float64))


def _adam_jit(a, s, d, h, g):
    one = _one(s[0])  # the scalars as _adam_to computes them
    _jit.adam(s[0], s[1], s[2], g, _adam_alpha(h, one), one - h["beta1"], one - h["beta2"],
              h["beta1"], h["epsilon"], bool(a.get("use_nesterov")), d[0], d[1], d[2])


_JIT_TO = {
    "GradientDescent": lambda a, s, d, h, g: _jit.sgd(s[0], g, h["alpha"], d[0]),
    "Momentum": lambda a, s, d, h, g: _jit.momentum(s[0], s[1], g, h["lr"], h["momentum"],
                                                    bool(a.get("use_nesterov")), d[0], d[1]),
    "Adam": _adam_jit,
}


# Elements per chunk: the chunks of the variable, its slots, the gradient and the scratch arrays
# stay in the core's cache between the ops of a chunk (one pass over memory instead of one per op).
_CHUNK_BYTES = 1 << 18
# Variables smaller than this (elements) take the allocating path: the checks that make an
# in-place update safe cost a few microseconds, more than allocating a small array (measured:
# SGD breaks even at about 20,000 float32 elements).
_MIN_IN_PLACE = 16384
_LEAN = True  # the dense Apply kernels' lean path for small ref variables (_make_apply)


def _update_to(fn, n_tmp, attrs, src, dst, h, g):
    """``fn`` over the arrays (all of ``g``'s shape), chunk by chunk over their flat views.
    ``src`` and ``dst`` are C-contiguous (their flat views write through); ``g`` may be any
    layout (read only)."""
    var = src[0]
    size = var.size
    step = max(1, _CHUNK_BYTES // var.itemsize)
    if size <= step:  # one chunk: the arrays as they are
        fn(attrs, src, dst, h, g, [np.empty(var.shape, var.dtype) for _ in range(n_tmp)])
        return
    s = [x.reshape(-1) for x in src]
    d = [x.reshape(-1) for x in dst]
    gf = g.reshape(-1)
    t = [np.empty(step, var.dtype) for _ in range(n_tmp)]
    for a in range(0, size, step):
        b = min(size, a + step)
        n = b - a
        fn(attrs, [x[a:b] for x in s], [x[a:b] for x in d], h, gf[a:b], [x[:n] for x in t])


# --- argument checks ------------------------------------------------------------------------------
def _not_scalar(label):
    return lambda name, x, attrs: x.ndim != 0 and f"{label}: {_shp(x.shape)}"


def _scalar(name, x, attrs):
    return x.ndim != 0 and f"{name} is not a scalar: {_shp(x.shape)}"


def _scalar_sp(name, x, attrs):  # "lr is not a scalar : [2]" (a space before the colon)
    return x.ndim != 0 and f"{name} is not a scalar : {_shp(x.shape)}"


def _reg(label):
    return lambda name, x, attrs: x.ndim != 0 and \
        f"{label} regularization strength is not a scalar: {_shp(x.shape)}"


def _value_check(label, ok):
    def check(name, x, attrs):
        if x.ndim != 0 or not ok(x[()], attrs):
            return f"{label}: {_shp(x.shape)}"
        return False

    return check


_POSITIVE_LR = _value_check("lr is not a positive scalar", lambda v, a: v > 0)
_NONNEG_L1 = _value_check("l1 regularization strength is not a non-negative scalar",
                          lambda v, a: v >= 0)
_NONNEG_L2 = _value_check("l2 regularization strength is not a non-negative scalar",
                          lambda v, a: v >= 0)
_FTRL_SPARSE_CHECKS = {
    "lr": _value_check("lr is not a positive scalar (or zero if multiply_linear_by_lr is set)",
                       lambda v, a: v > 0 or (a.get("multiply_linear_by_lr") and v == 0)),
    "l1": _NONNEG_L1, "l2": _NONNEG_L2,
    "l2_shrinkage": _value_check(
        "l2 shrinkage regularization strength is not a non-negative scalar", lambda v, a: v >= 0),
    "lr_power": _value_check("lr_power is not a non-positive scalar", lambda v, a: v <= 0),
}
_FTRL_DENSE_CHECKS = {
    "l1": _reg("l1"), "l2": _reg("l2"),
    "l2_shrinkage": lambda n, x, a: x.ndim != 0 and
    f"l2 shrinkage regularization strength is not a scalar: {_shp(x.shape)}",
    "lr_power": lambda n, x, a: x.ndim != 0 and f"lr_power is not a scalar{_shp(x.shape)}",
}


class _Spec:
    """One optimizer op family: its update, the names its shape messages give the slots (None:
    TensorFlow does not check that slot's shape), and per-argument checks that differ from
    ``<name> is not a scalar: <shape>``."""

    def __init__(self, update, slots, checks=None, sparse_checks=None, shape_msg_slot=None,
                 sparse_slots=None, oob="offset"):
        self.update = update
        self.slots = slots
        self.sparse_slots = sparse_slots or slots
        self.checks = checks or {}
        self.sparse_checks = self.checks if sparse_checks is None else sparse_checks
        # CenteredRMSProp's message for a bad ``mg`` shape prints ``ms``'s shape (as TF does)
        self.shape_msg_slot = shape_msg_slot or {}
        self.oob = oob


_ADAM_CHECKS = {"lr": _scalar_sp}
_PROX_ADAGRAD_CHECKS = {"lr": _POSITIVE_LR, "l1": _NONNEG_L1, "l2": _NONNEG_L2}
_SPECS = {
    "GradientDescent": _Spec(_sgd, []),
    "ProximalGradientDescent": _Spec(
        _proximal_sgd, [], {"l1": _reg("l1"), "l2": _reg("l2")},
        sparse_checks={"alpha": _not_scalar("lr is not a scalar"), "l1": _reg("l1"),
                       "l2": _reg("l2")}),
    "Momentum": _Spec(_momentum, ["accum"], sparse_checks={"lr": _scalar_sp}),
    "KerasMomentum": _Spec(_keras_momentum, ["accum"], sparse_checks={"lr": _scalar_sp},
                           oob="slice"),
    "Adam": _Spec(_adam, ["m", "v"], _ADAM_CHECKS),
    "AdamWithAmsgrad": _Spec(_adam_amsgrad, ["m", "v", None], _ADAM_CHECKS),
    "AdaMax": _Spec(_adamax, ["m", "v"], _ADAM_CHECKS),
    "RMSProp": _Spec(_rmsprop, ["ms", "mom"], _ADAM_CHECKS, sparse_checks={}),
    "CenteredRMSProp": _Spec(_centered_rmsprop, ["mg", "ms", "mom"], _ADAM_CHECKS,
                             sparse_checks={}, shape_msg_slot={1: 2}),
    "Adagrad": _Spec(_adagrad, ["accum"]),
    "AdagradV2": _Spec(_adagrad_v2, ["accum"]),
    "ProximalAdagrad": _Spec(_proximal_adagrad, ["accum"], _PROX_ADAGRAD_CHECKS),
    "Adadelta": _Spec(_adadelta, ["accum", None], sparse_slots=["accum_grad", "accum_update"]),
    "AddSign": _Spec(_add_sign, ["m"]),
    "PowerSign": _Spec(_power_sign, ["m"]),
    "AdagradDA": _Spec(_adagrad_da, ["accum", "accum"], {"l1": _reg("l1"), "l2": _reg("l2")}),
    "Ftrl": _Spec(_ftrl, ["accum", "linear"], _FTRL_DENSE_CHECKS, _FTRL_SPARSE_CHECKS),
    "FtrlV2": _Spec(_ftrl, ["accum", "linear"], _FTRL_DENSE_CHECKS, _FTRL_SPARSE_CHECKS),
}
# The SparseApply forms TensorFlow has (and the ResourceSparseApply forms: all of these, and
# KerasMomentum, which exists in resource form only).
_SPARSE = ["ProximalGradientDescent", "Momentum", "KerasMomentum", "RMSProp", "CenteredRMSProp",
           "Adagrad", "AdagradV2", "ProximalAdagrad", "Adadelta", "AdagradDA", "Ftrl", "FtrlV2"]
_RESOURCE_ONLY = {"KerasMomentum", "AdamWithAmsgrad"}
# Ops whose ``grad`` must have var's rank (the others flatten it to rows of var's row size).
_SPARSE_RANK_CHECK = {"Adagrad", "AdagradV2"}


def _arg_names(op_type):
    from mgrt.runtime import op_defs

    od = op_defs.default_registry().get(op_type)
    return [a.name for a in od.input_arg]


def _hyper(spec_checks, names, values, dtype, attrs):
    """The hyperparameters as numpy scalars of ``dtype``, after TF's checks."""
    h = {}
    for name, x in zip(names, values):
        x = np.asarray(x)
        msg = spec_checks.get(name, _scalar)(name, x, attrs)
        if msg:
            raise _err(msg)
        h[name] = x.astype(dtype, copy=False)[()] if name != "global_step" else x[()]
    return h


def _check_slot_shapes(spec, slot_names, cur, dense=True):
    var = cur[0]
    for j, (name, slot) in enumerate(zip(slot_names, cur[1:]), start=1):
        if name is None:
            if slot.size != var.size:  # TensorFlow does not check; it would read past the end
                raise _err(f"var and slot {j} do not have the same number of elements"
                           f"{_shp(var.shape)} {_shp(slot.shape)}")
            continue
        if slot.shape != var.shape:
            shown = cur[spec.shape_msg_slot.get(j, j) if dense else j]
            raise _err(f"var and {name} do not have the same shape{_shp(var.shape)} "
                       f"{_shp(shown.shape)}")


def _make_apply(family, resource):
    spec = _SPECS[family]

    def builder(node, ctx):
        attrs = node.attrs
        names = _arg_names(node.op)
        n_state = len(spec.slots) + 1
        hp_names = names[n_state:]
        grad_name = "delta" if "delta" in hp_names else "grad"
        grad_pos = hp_names.index(grad_name)
        hp_names = hp_names[:grad_pos] + hp_names[grad_pos + 1:]
        use_locking = bool(attrs.get("use_locking", False))
        to, n_tmp = _TO.get(family, (None, 0))
        fast = _JIT_TO.get(family) if _jit.enabled() else None
        guard = _guard_of(ctx) if to is not None else None
        small = [to is None]  # whether the last update was of a small variable (or no _TO)
        last = [None]  # (hyperparameter inputs, dtype, their _hyper) when those are constants

        def hyper(rest, dtype):
            """_hyper, reused while the inputs are the same constant arrays (a Const's
            output: read-only, owning its data), as an optimizer's learning rate usually is."""
            got = last[0]
            if (got is not None and got[1] == dtype
                    and all(a is b for a, b in zip(got[0], rest))):
                return got[2]
            with np.errstate(all="ignore"):  # (casts)
                h = _hyper(spec.checks, hp_names, rest, dtype, attrs)
            if all(type(x) is np.ndarray and not x.flags.writeable and x.base is None
                   for x in rest):
                last[0] = (tuple(rest), dtype, h)
            return h

        def update(holders, rest, grad, sole):
            cur = _read_apply(holders, resource)
            var = cur[0]
            dtype = var.dtype
            h = hyper(rest, dtype)
            _check_slot_shapes(spec, spec.slots, cur)
            if grad.shape != var.shape:
                raise _err(f"var and {grad_name} do not have the same shape"
                           f"{_shp(var.shape)} {_shp(grad.shape)}")
            if grad.dtype != dtype:
                with np.errstate(all="ignore"):
                    grad = grad.astype(dtype)
            g = grad
            if to is not None:
                small[0] = var.size < _MIN_IN_PLACE
            jit = (fast is not None and dtype in _JIT_DT and g.flags.c_contiguous
                   and all(c.flags.c_contiguous for c in cur))
            if sole is None and jit:
                sole = [False] * len(cur)  # new buffers, written by one numba pass
            if sole is not None and all(c.shape == var.shape and c.dtype == dtype for c in cur):
                # the sole buffers in place, the others into new ones
                dst = [c if ok else np.empty(c.shape, dtype) for c, ok in zip(cur, sole)]
                if jit:  # (numba raises no floating-point warnings)
                    fast(attrs, cur, dst, h, g)
                else:
                    with np.errstate(all="ignore"):
                        _update_to(to, n_tmp, attrs, cur, dst, h, g)
                if not all(sole):
                    _write(holders, resource, dst)
                return
            state = [c if c.shape == var.shape else c.reshape(var.shape) for c in cur]
            with np.errstate(all="ignore"):
                new = spec.update(attrs, state, h, g)
            new = [np.asarray(v, dtype=dtype) for v in new]
            # (a reshape to the same shape would store a view: not writable in place later)
            new = [v if v.shape == c.shape else v.reshape(c.shape) for v, c in zip(new, cur)]
            _write(holders, resource, new)

        lean = fast is not None and not resource and not use_locking
        hp_at = [n_state + k for k in range(len(names) - n_state) if k != grad_pos]
        g_at = n_state + grad_pos

        def lean_update(inputs):
            """The common update in fewer steps (the CNN's six momentum updates: 19.6 -> 14.6
            us a call, alternating): a small ref variable, slots and gradient of its shape,
            C-contiguous, a dtype of the numba loops; new buffers written by one pass. None
            where any of that fails: the general path then runs (and raises what it raises)."""
            holders = inputs[:n_state]
            cur = [r.store.get(r.key) for r in holders]
            var, g = cur[0], inputs[g_at]
            if var is None or type(g) is not np.ndarray or var.size >= _MIN_IN_PLACE:
                return None
            dtype, shape = var.dtype, var.shape
            if dtype not in _JIT_DT or g.dtype != dtype or g.shape != shape \
                    or not g.flags.c_contiguous:
                return None
            for c in cur:
                if c is None or c.shape != shape or c.dtype != dtype or not c.flags.c_contiguous:
                    return None
            h = hyper([inputs[i] for i in hp_at], dtype)
            dst = [np.empty(shape, dtype) for _ in cur]
            fast(attrs, cur, dst, h, g)
            for r, d in zip(holders, dst):
                r.store[r.key] = d
            small[0] = True
            return holders[0]

        def run(*inputs):
            if lean and _LEAN:
                done = lean_update(inputs)
                if done is not None:
                    return (done,)
            holders = inputs[:n_state]
            rest = list(inputs[n_state:])
            grad = np.asarray(rest.pop(grad_pos))
            with _locked(holders[0], use_locking):
                if small[0]:
                    update(holders, rest, grad, None)
                elif _enter_in_place(guard):
                    try:
                        # before any local name holds the buffers: which ones only the store holds
                        update(holders, rest, grad, _sole_all(holders, resource))
                    finally:
                        if guard is not None:
                            guard.lock.release()
                else:
                    update(holders, rest, grad, [False] * n_state)
            return () if resource else (holders[0],)

        if family in _GEMM_FAMILIES and _blas.available(np.float32):
            run.with_gemm = lambda mm_node, mm_run: _gemm_apply(
                family, run, mm_node, mm_run, resource, attrs, guard)
            run.gemm_grad_at = g_at
        return run

    return builder


# A variable this big (elements) or bigger takes its update inside the product that computes
# its gradient (_gemm_apply); for smaller ones the ctypes call (~15 us) costs more than the
# pass it saves (measured: about even at 256x256 with 64 rows, 10% faster with 256 rows).
_GEMM_MIN = 65536
_GEMM_FAMILIES = ("GradientDescent", "Momentum")


def _gemm_apply(family, run, mm_node, mm_run, resource, attrs, guard):
    """The kernel of an (Resource)ApplyGradientDescent or ApplyMomentum fused with the
    MatMul whose product, the gradient, only it reads (runtime/executor.py
    ``_updates_into_gemm``), for the update's inputs without the gradient, then the MatMul's
    (a, b). Where the buffers may be written in place (the store holds them alone, no other
    run in flight: ``_sole`` / ``_enter_in_place``) and BLAS serves the operands
    (kernels_cpu/_blas.py), the product is never written alone:

    - gradient descent, one BLAS call: ``var = var + (-alpha) * (op(a) @ op(b))``;
    - momentum (not Nesterov, momentum not 0): ``accum = accum * momentum + op(a) @ op(b)``
      by BLAS (beta = momentum), then ``var - accum * lr`` in one numba pass, TF's rounding.

    The roundings: BLAS adds each float32 sum to the scaled buffer in one step, where
    TensorFlow first rounds the gradient (and gradient descent's ``gradient * alpha``): at
    most an ulp or so of the result apart (the sums' order already differs from TensorFlow's
    GEMM). Otherwise the MatMul, then the update, as unfused; a failure names its member."""
    ta = bool(mm_node.attr("transpose_a", False))
    tb = bool(mm_node.attr("transpose_b", False))
    g_at = run.gemm_grad_at
    use_locking = bool(attrs.get("use_locking", False))
    sgd = family == "GradientDescent"
    if not sgd and (attrs.get("use_nesterov") or not _jit.enabled()):
        return None  # (Nesterov's update reads the gradient again)
    n_state = 1 if sgd else 2

    def scalar(x, dtype):
        return type(x) is np.ndarray and x.shape == () and x.dtype == dtype

    def in_place(inputs, a, b):
        holders = inputs[:n_state]
        if type(a) is not np.ndarray or type(b) is not np.ndarray:
            return False
        aa, bb = (a.T if ta else a), (b.T if tb else b)
        if aa.ndim != 2 or bb.ndim != 2 or aa.shape[0] * bb.shape[1] < _GEMM_MIN:
            return False  # (a small product: no lock taken, no buffer looked at)
        with _locked(holders[0], use_locking):
            if not _enter_in_place(guard):
                return False
            try:
                # before any local name holds the buffers: whether only the store holds them
                if not all(_sole_all(holders, resource)):
                    return False
                cur = _read_apply(holders, resource)
                var = cur[0]
                dt = var.dtype  # (its shape is checked against the product by gemm_update)
                if sgd:
                    alpha = inputs[1]
                    return scalar(alpha, dt) and _blas.gemm_update(
                        var, aa, bb, -float(alpha), _team.team_size())
                acc, lr, mom = cur[1], inputs[2], inputs[3]
                if not (scalar(lr, dt) and scalar(mom, dt) and float(mom) != 0
                        and acc.shape == var.shape and acc.dtype == dt and dt in _JIT_DT
                        and var.flags.c_contiguous):
                    return False
                if not _blas.gemm_update(acc, aa, bb, 1.0, _team.team_size(),
                                         beta=float(mom)):
                    return False
                _jit.sgd(var, acc, lr[()], var)  # var - accum * lr
                return True
            finally:
                if guard is not None:
                    guard.lock.release()

    def fused(*inputs):
        a, b = inputs[-2:]
        rest = inputs[:-2]
        if in_place(rest, a, b):
            return () if resource else (rest[0],)
        try:
            (g,) = mm_run(a, b)
        except Exception as e:  # noqa: BLE001 - named after the MatMul node
            raise FusedMemberError(0, e, (a, b)) from None
        args = rest[:g_at] + (g,) + rest[g_at:]
        try:
            return run(*args)
        except Exception as e:  # noqa: BLE001 - named after the update's node
            raise FusedMemberError(1, e, args) from None

    return fused


def _occurrence_rounds(idx):
    """Positions of ``idx`` split into rounds in which every index appears once: round r holds
    each index's r-th occurrence, so applying the rounds in order is applying the rows one after
    another, as TensorFlow's loop does."""
    n = idx.size
    if n < 2:
        return [np.arange(n)]
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    np.not_equal(s[1:], s[:-1], out=new_run[1:])
    if new_run.all():
        return [np.arange(n)]
    pos = np.arange(n)
    run_start = np.maximum.accumulate(np.where(new_run, pos, 0))
    occ = np.empty(n, dtype=np.int64)
    occ[order] = pos - run_start
    return [np.flatnonzero(occ == r) for r in range(int(occ.max()) + 1)]


def _check_sparse_grad(var, grad, indices, rank_check):
    """A sparse update's checks of ``grad`` and ``indices`` against ``var`` (anything with its
    ``shape`` and ``ndim``): ``(n indices, row shape)`` (the GPU kernels' too)."""
    if indices.ndim != 1:
        raise _err("indices must be one-dimensional")
    if rank_check and grad.ndim != var.ndim:
        raise _err("grad must have the same number of dimensions as var")
    for d in range(1, var.ndim):
        if d >= grad.ndim or grad.shape[d] != var.shape[d]:
            raise _err(f"var and grad must match in dimension {d}")
    n = indices.shape[0]
    if grad.ndim < 1 or grad.shape[0] != n:
        raise _err("grad must be the same size as indices in the first dimension.")
    row = var.shape[1:]
    if grad.size != n * int(np.prod(row, dtype=np.int64)):
        raise _err(f"var and grad must match in dimension {var.ndim}")
    return n, row


def _make_sparse_apply(family, resource):
    spec = _SPECS[family]

    def builder(node, ctx):
        attrs = node.attrs
        names = _arg_names(node.op)
        n_state = len(spec.slots) + 1
        others = names[n_state:]
        g_pos, i_pos = others.index("grad"), others.index("indices")
        hp_names = [n for n in others if n not in ("grad", "indices")]
        use_locking = bool(attrs.get("use_locking", False))
        rank_check = family in _SPARSE_RANK_CHECK
        guard = _guard_of(ctx)
        small = [False]  # whether the last update was of a small variable

        def update(holders, grad, indices, hp_values, sole):
            cur = _read_apply(holders, resource)
            var = cur[0]
            dtype = var.dtype
            small[0] = var.size < _MIN_IN_PLACE
            _check_slot_shapes(spec, spec.sparse_slots, cur, dense=False)
            if var.ndim < 1:
                raise _err("var must be at least 1 dimensional")
            h = _hyper(spec.sparse_checks, hp_names, hp_values, dtype, attrs)
            n, row = _check_sparse_grad(var, grad, indices, rank_check)
            limit = var.shape[0]
            idx = indices.astype(np.int64, copy=False)
            bad = np.flatnonzero((idx < 0) | (idx >= limit))
            if bad.size:
                i = int(bad[0])
                if spec.oob == "slice":
                    raise _err(f"indices[{i}] = {int(idx[i])} is not in [0, {limit})")
                raise _err(f"Index {int(idx[i])} at offset {i} in indices is out of range")
            if n == 0:
                return () if resource else (holders[0],)
            g = grad.reshape((n,) + row).astype(dtype, copy=False)
            # the rows are written into the buffers only the store holds, else into copies
            new = [c.copy() for c in cur] if sole is None else \
                [c if ok else c.copy() for c, ok in zip(cur, sole)]
            for sel in _occurrence_rounds(idx):
                rows = idx[sel]
                out = spec.update(attrs, [c[rows] for c in new], h, g[sel])
                for c, v in zip(new, out):
                    c[rows] = v
            _write(holders, resource, new)
            return () if resource else (holders[0],)

        def run(*inputs):
            holders = inputs[:n_state]
            rest = list(inputs[n_state:])
            grad = np.asarray(rest[g_pos])
            indices = np.asarray(rest[i_pos])
            hp_values = [x for k, x in enumerate(rest) if k not in (g_pos, i_pos)]
            with _locked(holders[0], use_locking), np.errstate(all="ignore"):
                if small[0]:
                    return update(holders, grad, indices, hp_values, None)
                if _enter_in_place(guard):
                    try:
                        # before any local name holds the buffers: which ones only the store holds
                        return update(holders, grad, indices, hp_values,
                                      _sole_all(holders, resource))
                    finally:
                        if guard is not None:
                            guard.lock.release()
                return update(holders, grad, indices, hp_values, None)

        return run

    return builder


for _family in _SPECS:
    if _family not in _RESOURCE_ONLY:
        register("Apply" + _family, "CPU")(_make_apply(_family, resource=False))
    register("ResourceApply" + _family, "CPU")(_make_apply(_family, resource=True))
for _family in _SPARSE:
    if _family not in _RESOURCE_ONLY:
        register("SparseApply" + _family, "CPU")(_make_sparse_apply(_family, resource=False))
    register("ResourceSparseApply" + _family, "CPU")(_make_sparse_apply(_family, resource=True))


# --- Scatter updates ------------------------------------------------------------------------------
def _first_bad(idx, limit):
    bad = np.flatnonzero((idx < 0) | (idx >= limit))
    return int(bad[0]) if bad.size else -1


def _int_div(a, b):
    """C++ integer division (truncating toward zero)."""
    q = np.floor_divide(a, b)
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return q + fix.astype(q.dtype)


_SCATTER_FNS = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum,
}


def _scatter_apply(kind, params, idx, updates):
    """A new array: ``params`` with ``updates`` (one row per flat index, or a scalar) applied
    at the rows ``idx``, the rows one after another as TensorFlow's loop applies them."""
    out = params.copy()
    if idx.size == 0:
        return out
    scalar = updates.ndim == 0
    upd = updates if scalar else updates.reshape((idx.size,) + params.shape[1:])
    if kind == "Update":
        if scalar:
            out[idx] = upd
        else:
            # the last write of a row wins
            rev = idx[::-1]
            _, first = np.unique(rev, return_index=True)
            keep = idx.size - 1 - first
            out[idx[keep]] = upd[keep]
        return out
    if kind == "Div":
        if scalar:
            upd = np.broadcast_to(upd, (idx.size,) + params.shape[1:])
        for sel in _occurrence_rounds(idx):
            rows = idx[sel]
            if out.dtype.kind in "iu":
                out[rows] = _int_div(out[rows], upd[sel])
            else:
                out[rows] = out[rows] / upd[sel]
        return out
    fn = _SCATTER_FNS[kind]
    if scalar:
        upd = np.broadcast_to(upd, (idx.size,) + params.shape[1:])
    fn.at(out, idx, upd)
    return out


def _make_scatter(kind, resource):
    def builder(node, ctx):
        use_locking = bool(node.attrs.get("use_locking", True)) or resource

        def run(holder, indices, updates):
            indices = np.asarray(indices)
            updates = np.asarray(updates)
            with _locked(holder, use_locking):
                if resource:
                    h, params = _read_lookup(holder)
                else:
                    params = holder.value
                orig_shape = params.shape
                if resource:
                    if params.ndim == 0:
                        params = params.reshape(1)
                    if updates.ndim != 0 and updates.ndim != indices.ndim + params.ndim - 1:
                        raise _err(_scatter_shape_msg(updates, indices, orig_shape))
                    if updates.ndim != 0:
                        if updates.shape[:indices.ndim] != indices.shape:
                            raise _err(f"The shape of indices ({_shp(indices.shape)}) must be a "
                                       f"prefix of the shape of updates ({_shp(updates.shape)})")
                        if updates.shape[indices.ndim:] != params.shape[1:]:
                            # TensorFlow reads the updates with the wrong row size here
                            raise _err(_scatter_shape_msg(updates, indices, orig_shape))
                else:
                    if params.ndim < 1:
                        raise _err(f"params must be at least 1-D, got shape {_shp(params.shape)}")
                    if updates.ndim != 0 and \
                            updates.shape != indices.shape + params.shape[1:]:
                        raise _err(_scatter_shape_msg(updates, indices, params.shape))
                idx = indices.reshape(-1).astype(np.int64, copy=False)
                limit = params.shape[0]
                bad = _first_bad(idx, limit)
                if bad >= 0:
                    raise _err(f"indices{_slice_debug_string(indices.shape, bad)} = "
                               f"{int(idx[bad])} is not in [0, {limit})")
                new = _scatter_apply(kind, params, idx,
                                     updates.astype(params.dtype, copy=False)).reshape(orig_shape)
                if resource:
                    h.store[h.key] = new
                    return ()
                holder.assign(new)
                return (holder,)

        return run

    return builder


def _scatter_shape_msg(updates, indices, params_shape):
    return ("Must have updates.shape = indices.shape + params.shape[1:] or updates.shape = [], "
            f"got updates.shape {_shp(updates.shape)}, indices.shape {_shp(indices.shape)}, "
            f"params.shape {_shp(params_shape)}")


for _kind in ("Update", "Add", "Sub", "Mul", "Div", "Max", "Min"):
    register("Scatter" + _kind, "CPU")(_make_scatter(_kind, resource=False))
    register("ResourceScatter" + _kind, "CPU")(_make_scatter(_kind, resource=True))


# --- ScatterNd updates ----------------------------------------------------------------------------
def scatter_nd_rows(shape, indices, updates):
    """TensorFlow's ScatterNd validation (``ValidateUpdateShape`` and the bounds check) for
    ``updates`` at ``indices`` into a tensor of ``shape``: returns (flat row numbers into
    ``shape`` viewed as [rows, slice...], updates as [n, slice...])."""
    shape = tuple(int(d) for d in shape)
    if indices.ndim < 1:
        raise _err(f"Indices shape must have rank at least one. Found:{_shp(indices.shape)}")
    if updates.ndim < 1:
        raise _err(f"Updates shape must have rank at least one. Found:{_shp(updates.shape)}")
    slice_dim = indices.shape[-1] if indices.ndim > 1 else 1
    batch_dim = indices.ndim - 1 if indices.ndim > 1 else 1
    prefix = (f"Dimensions [0,{batch_dim}) of indices[shape={_shp(indices.shape)}] must match "
              f"dimensions [0,{batch_dim}) of updates[shape={_shp(updates.shape)}]")
    suffix = (f"Dimensions [{slice_dim},{len(shape)}) of input[shape={_shp(shape)}] must match "
              f"dimensions [{batch_dim},{updates.ndim}) of updates[shape={_shp(updates.shape)}]")
    if updates.ndim < batch_dim:
        raise _err(prefix)
    if len(shape) < slice_dim + (updates.ndim - batch_dim) or \
            updates.ndim != batch_dim + len(shape) - slice_dim:
        raise _err(suffix)
    if updates.shape[:batch_dim] != indices.shape[:batch_dim]:
        raise _err(prefix)
    if updates.shape[batch_dim:] != shape[slice_dim:]:
        raise _err(suffix)
    depth = indices.shape[-1]
    n = int(np.prod(indices.shape[:-1], dtype=np.int64))
    idx = indices.reshape(n, depth).astype(np.int64, copy=False)
    dims = np.asarray(shape[:depth], dtype=np.int64)
    badmask = ((idx < 0) | (idx >= dims)).any(axis=1)
    if badmask.any():
        b = int(np.argmax(badmask))
        coords = ", ".join(str(int(v)) for v in idx[b])
        raise _err(f"indices{_slice_debug_string(indices.shape[:-1], b)} = [{coords}] does not "
                   f"index into shape {_shp(shape)}")
    flat = np.ravel_multi_index(tuple(idx.T), shape[:depth]) if depth else \
        np.zeros(n, np.int64)
    return flat, updates.reshape((n,) + shape[depth:])


def scatter_nd_apply(kind, tensor, flat, upd):
    """A new array: ``tensor`` with the rows ``upd`` applied at the flat row numbers."""
    depth_shape = tensor.shape
    n_rows = int(np.prod(depth_shape[:len(depth_shape) - (upd.ndim - 1)], dtype=np.int64))
    rows = tensor.reshape((n_rows,) + upd.shape[1:])
    return _scatter_apply(kind, rows, flat, upd.astype(tensor.dtype, copy=False)) \
        .reshape(depth_shape)


def _make_scatter_nd(kind, resource):
    def builder(node, ctx):
        use_locking = bool(node.attrs.get("use_locking", True)) or resource

        def run(holder, indices, updates):
            indices = np.asarray(indices)
            updates = np.asarray(updates)
            with _locked(holder, use_locking):
                if resource:
                    h, params = _read_lookup(holder)
                else:
                    params = holder.value
                flat, upd = scatter_nd_rows(params.shape, indices, updates)
                new = scatter_nd_apply(kind, params, flat, upd)
                if resource:
                    h.store[h.key] = new
                    return ()
                holder.assign(new)
                return (holder,)

        return run

    return builder


for _kind in ("Update", "Add", "Sub", "Max", "Min"):
    register("ScatterNd" + _kind, "CPU")(_make_scatter_nd(_kind, resource=False))
    register("ResourceScatterNd" + _kind, "CPU")(_make_scatter_nd(_kind, resource=True))


# --- gathers from a resource variable -------------------------------------------------------------
@register("ResourceGather", "CPU")
def _resource_gather(node, ctx):
    from mgrt.kernels_cpu import array_ops

    batch_dims = int(node.attrs.get("batch_dims", 0))

    def run(box, indices):
        _, params = _read_lookup(box)
        return (np.ascontiguousarray(
            array_ops._gather(params, np.asarray(indices), batch_dims, batch_dims)),)

    return run


@register("ResourceGatherNd", "CPU")
def _resource_gather_nd(node, ctx):
    from mgrt.kernels_cpu import array_ops

    inner = array_ops._gather_nd(node, ctx)

    def run(box, indices):
        _, params = _read_lookup(box)
        return inner(params, np.asarray(indices))

    return run
