"""nn kernels on the CPU (numpy): BiasAdd (+V1, Grad), the Relu/Relu6/Elu/Selu/LeakyRelu
activations and their gradients, Softmax, LogSoftmax, the two softmax cross entropies, L2Loss,
LRN (+Grad), TopKV2, InTopKV2, FusedBatchNorm (V1/V2/V3) and FusedBatchNormGrad (V1/V2/V3).

Semantics are TensorFlow's CPU kernels' (checked against recordings of TensorFlow 2.21 in
``tests/fixtures/ops/nn.*``):

- Activation gradients follow TF's exact formulas: ReluGrad and Relu6Grad *multiply* the
  gradient by a 0/1 mask (so an inf or NaN gradient where the mask is 0 gives NaN, as in TF);
  the others *select* (a NaN gradient where the other branch is taken does not leak).
- float16 and bfloat16: single arithmetic ops run in the dtype itself (numpy and ml_dtypes
  round each op once, as Eigen does); exp/log-based ops (Elu, Selu, Softmax, LogSoftmax, the
  cross entropies, L2Loss, LRN) compute in float32 and round once at the end. BiasAddGrad
  accumulates float16 in float32, and bfloat16 (NHWC) in bfloat16 row after row, which is
  what TF's CPU kernel does (the latter loses accuracy on long sums, in TF too); float32 and
  float64 NHWC sums are one BLAS gemv (ones times the rows: blocked sums, as accurate as
  Eigen's tree reduction; not TF's bits).
- FusedBatchNorm* compute in U (float32) whatever T is, as TF's CPU kernel does: batch
  variance is the biased (1/n) variance; the running variance output gets Bessel's factor
  n/(n-1) (1 where n == 1); with exponential_avg_factor f != 1 the outputs are
  (1-f)*running + f*batch. Per-channel sums accumulate in float64 (TF's float32 sums are as
  good on small tensors and drift on large ones). reserve_space_1/2 are the batch mean and
  biased variance in training. TF leaves reserve_space_1/2 *uninitialized* in inference mode
  and for an empty x; mgrt returns zeros there. reserve_space_3 of FusedBatchNormV3 is what
  TF's CPU kernel returns: a 0-d float32 0.0 (cuDNN's workspace has no CPU meaning;
  FusedBatchNormGradV3 ignores it on the CPU). FusedBatchNormGrad* return TF's placeholders
  reserve_space_3/4 (V3: 4/5) as empty [0] float32 tensors.
- TopKV2 sorts descending, ties to the lower index (a stable sort; a partition first where k
  is much smaller than the row). With sorted=False TF returns its heap's
  order; mgrt returns the sorted order (the op leaves the order unspecified). NaN compares as
  larger than every number here; TF's order of NaNs is an accident of its sort.
- InTopKV2: false where the target is out of range or any prediction of the row is not
  finite; otherwise true when fewer than k predictions are strictly greater than the target's.
- Errors for bad input are InvalidArgumentError with TensorFlow's message; the executor adds
  the node's name, op and input shapes.

Host memory: TopKV2 and InTopKV2 take ``k`` in host memory.
"""

import ml_dtypes
import numpy as np

from mgrt.runtime import dtypes
from mgrt.runtime.errors import InvalidArgumentError
from mgrt.runtime.kernel_registry import (FusedMemberError, register, register_fused,
                                         run_members)
from mgrt.kernels_cpu import _jit, _team
from mgrt.kernels_cpu._dtypes import (BF16 as _BF16, F16 as _F16, F32 as _F32,  # noqa: F401
                                      F64 as _F64, FLOAT_T as _FLOAT_T, HALF_T as _HALF_T,
                                      INDEX_T as _INDEX_T, INT_T as _INT_T, LOW as _LOW,
                                      REAL_T as _REAL_T)


from mgrt.kernels_cpu._dtypes import NUM_T as _NUM_T  # noqa: E402


def _out(node, i=0):
    return np.dtype(node.output_types[i].base_dtype.as_numpy_dtype)


def _err(msg):
    return InvalidArgumentError(None, None, msg)


def _shape_str(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _compute_dtype(dt):
    return _F32 if dt in _LOW else dt


def _as(a, dt):
    """``a`` as dtype ``dt``, without a copy when it already is."""
    return a if a.dtype == dt else a.astype(dt)


def _same_shape(node, a, b):
    if a.shape != b.shape:
        raise _err(f"Inputs to operation {node.name} of type {node.op} must have the same size "
                   f"and shape.  Input 0: {_shape_str(a.shape)} != input 1: "
                   f"{_shape_str(b.shape)}")


# --- BiasAdd ----------------------------------------------------------------------------------
def _bias_channel_axis(ndim, nchw):
    return 1 if nchw else ndim - 1  # for a 2-D input both are the last axis


def _bias_add_axis(value, bias, nchw):
    """BiasAdd's checks: the channel axis of ``value`` (the GPU kernel's too)."""
    if value.ndim < 2:
        raise _err(f"Input tensor must be at least 2D: {_shape_str(value.shape)}")
    if bias.ndim != 1:
        raise _err(f"Biases must be 1D: {_shape_str(bias.shape)}")
    axis = _bias_channel_axis(value.ndim, nchw)
    if bias.shape[0] != value.shape[axis]:
        raise _err("Must provide as many biases as the last dimension of the input tensor: "
                   f"{_shape_str(bias.shape)} vs. {_shape_str(value.shape)}")
    return axis


# Elementwise passes over a contiguous array with a short operand broadcast along it (a bias of C
# values, a zero): numpy's loop then runs C elements at a time (or takes its slower scalar path),
# several times slower than over two long rows. The array is viewed as rows of _WIDE_ROW
# elements (a multiple of C dividing its size) and the short operand repeated to one such row.
_WIDE_ROW = 8192
_WIDE_MIN_SIZE = 1 << 15


_wide_row_cache = {}


def _wide_rows(size, c):
    """The row length (a multiple of ``c`` that divides ``size``, at most _WIDE_ROW) for viewing
    a contiguous array of ``size`` elements as rows; 0 where the array is small or no row of at
    least 256 elements fits. Cached by (size, c): a plan's kernels see the same shapes."""
    if size < _WIDE_MIN_SIZE or c <= 0 or size % c:
        return 0
    key = (size, c)
    row = _wide_row_cache.get(key)
    if row is None:
        rows = size // c
        d = min(rows, _WIDE_ROW // c)
        while d > 1 and rows % d:
            d -= 1
        row = d * c if d * c >= 256 else 0
        if len(_wide_row_cache) > 4096:
            _wide_row_cache.clear()
        _wide_row_cache[key] = row
    return row


@register(["BiasAdd", "BiasAddV1"], "CPU", type_constraints={"T": _NUM_T})
def _bias_add(node, ctx):
    nchw = node.op == "BiasAdd" and node.attr("data_format", b"NHWC") == b"NCHW"
    quiet = _out(node).kind not in "iu"  # inf + -inf; integer sums wrap silently

    def run(value, bias):
        axis = _bias_add_axis(value, bias, nchw)
        if axis != value.ndim - 1:
            bias = bias.reshape((-1,) + (1,) * (value.ndim - 2))
        elif value.dtype == bias.dtype and value.flags.c_contiguous:
            row = _wide_rows(value.size, bias.shape[0])
            if row:  # rows of `row` elements plus the bias repeated to a row (same sums)
                tiled = np.tile(bias, row // bias.shape[0])
                v2 = value.reshape(-1, row)
                out = np.empty(v2.shape, value.dtype)

                def rows(a, b):
                    with np.errstate(invalid="ignore", over="ignore"):
                        np.add(v2[a:b], tiled, out=out[a:b])
                _team.split(rows, v2.shape[0], 2 * out.nbytes)
                return (out.reshape(value.shape),)
        if quiet:
            with np.errstate(invalid="ignore", over="ignore"):
                return (np.add(value, bias),)
        return (np.add(value, bias),)

    return run


def bias_relu_epilogue(dt, relu):
    """For a convolution fused with its BiasAdd (and Relu) (conv_ops): ``epilogue(bias)`` gives
    ``post(rows)``, which adds ``bias`` to a C-contiguous (pixels, C) block of dtype ``dt`` in
    place, then takes the ReLU when ``relu``. With the numba loops, one pass (_jit.bias_relu);
    without, the numpy operations of the BiasAdd and Relu kernels above (long rows against a
    repeated bias, a zero row). Either way the sums are the BiasAdd's; the ReLU keeps -0.0 in
    numba, as TensorFlow's max(x, 0) does (numpy's maximum gives +0.0)."""
    if _jit.enabled():
        return lambda bias: _jit.BiasRelu(bias, relu)
    zeros = np.zeros(_WIDE_ROW, dt)

    def epilogue(bias):
        tiles = {}

        def post(rows):
            c = rows.shape[1]
            row = _wide_rows(rows.size, c)
            if row:
                tiled = tiles.get(row)
                if tiled is None:
                    tiled = tiles[row] = np.tile(bias, row // c)
                v = rows.reshape(-1, row)
                np.add(v, tiled, out=v)
            else:
                np.add(rows, bias, out=rows)
            if relu:
                row = _wide_rows(rows.size, 1)
                v = rows.reshape(-1, row) if row else rows
                np.maximum(v, zeros[:row] if row else dt.type(0), out=v)
        return post

    return epilogue


# --- MatMul + BiasAdd (+ Relu), MatMul + ReluGrad, fused by the plan (runtime/executor.py) ----
# As grappler's remapper fuses them (_FusedMatMul): a dense layer's bias and ReLU are applied in
# place to the product, in one pass over it, instead of two more passes that each allocate a
# new output (measured on the benchmark's 256x1024 layer: 0.10 ms against 0.61). The gradient of
# a ReLU layer is likewise masked in place in the product that BLAS just wrote.
def _dense_dt(nodes):
    """The dtype of a fusable dense chain (float32 or float64 throughout, the numba loops on),
    else None."""
    dt = _out(nodes[0])
    if dt not in (_F32, _F64) or any(_out(nd) != dt for nd in nodes) or not _jit.enabled():
        return None
    return dt


def _product(run_matmul, a, b, dt):
    """The MatMul member's product, and whether the fused kernels may write into it: a new
    C-contiguous 2-D array of dtype ``dt`` (else the chain's other members run unfused)."""
    try:
        (r,) = run_matmul(a, b)
    except Exception as e:  # noqa: BLE001 - named after the MatMul node
        raise FusedMemberError(0, e, (a, b)) from None
    return r, (type(r) is np.ndarray and r.dtype == dt and r.ndim == 2 and r.base is None
               and r.flags.c_contiguous and r.flags.writeable and r is not a and r is not b)


@register_fused(("MatMul", "BiasAdd", "Relu"), "CPU")
@register_fused(("MatMul", "BiasAdd"), "CPU")
def _fused_matmul(nodes, runs, ctx):
    dt = _dense_dt(nodes)
    if dt is None or nodes[1].attr("data_format", b"NHWC") != b"NHWC":
        return None
    run_matmul, relu = runs[0], len(nodes) == 3

    def run(a, b, bias):
        r, ok = _product(run_matmul, a, b, dt)
        if not (ok and bias.ndim == 1 and bias.shape[0] == r.shape[1] and bias.dtype == dt):
            return run_members(runs, (r, bias), (), start=1)  # their own checks and errors
        _jit.bias_relu(r, np.ascontiguousarray(bias), relu)
        return (r,)

    return run


@register_fused(("MatMul", "ReluGrad"), "CPU")
def _fused_matmul_relu_grad(nodes, runs, ctx):
    dt = _dense_dt(nodes)
    if dt is None:
        return None
    run_matmul = runs[0]

    def run(a, b, features):
        r, ok = _product(run_matmul, a, b, dt)
        if not (ok and features.shape == r.shape and features.dtype == dt
                and features.flags.c_contiguous):
            return run_members(runs, (r, features), (), start=1)
        _jit.relu_grad(r, features, out=r)
        return (r,)

    return run


@register("BiasAddGrad", "CPU", type_constraints={"T": _NUM_T})
def _bias_add_grad(node, ctx):
    nchw = node.attr("data_format", b"NHWC") == b"NCHW"
    dt = _out(node)
    # TF accumulates float16 in float32, bfloat16 in bfloat16 row after row for NHWC (numpy's
    # sum over axis 0 is the same sequence, so the result is TF's to the bit); for NCHW TF's
    # bfloat16 reduction order is Eigen's tree, which float32 accumulation approximates best.
    acc_nhwc = _F32 if dt == _F16 else dt
    acc_nchw = _compute_dtype(dt)
    # float32/float64 channels-last: a row of ones times the (rows, C) matrix, one BLAS gemv
    # (numpy's sum over axis 0 walks the rows one by one, C elements at a time: ~10x slower for
    # C = 16; the gemv's blocked sums are also closer to the exact sum)
    gemv = dt in (_F32, _F64)
    ones = [np.ones(0, dt)]  # the last row of ones, reused while the row count stays

    def run(g):
        if g.ndim < 2:
            raise _err(f"Input tensor must be at least 2D: {_shape_str(g.shape)}")
        axis = _bias_channel_axis(g.ndim, nchw)
        c = g.shape[axis]
        if g.size == 0:  # (and no rows to reshape for C = 0)
            return (np.zeros(c, dt),)
        with np.errstate(invalid="ignore", over="ignore"):
            if axis == g.ndim - 1 and gemv and g.dtype == dt:
                g2 = g.reshape(-1, c)
                o = ones[0]
                if o.shape[0] != g2.shape[0]:
                    o = ones[0] = np.ones(g2.shape[0], dt)
                r = o @ g2
            elif axis == g.ndim - 1:
                r = g.reshape(-1, c).sum(axis=0, dtype=acc_nhwc)
            else:
                r = g.reshape(g.shape[0], c, -1).sum(axis=(0, 2), dtype=acc_nchw)
        return (_as(r, dt),)

    return run


# --- Relu family ------------------------------------------------------------------------------
# numpy's ufuncs return scalars for 0-d inputs; _nd makes them 0-d arrays again. errstate (where
# an op can warn: NaN comparisons of bfloat16, inf * 0): TF's results are the same quiet NaNs.
def _nd(r, dt):
    return r if type(r) is np.ndarray else np.asarray(r, dtype=dt)


@register("Relu", "CPU", type_constraints={"T": _REAL_T})
def _relu(node, ctx):
    dt = _out(node)
    zero = dt.type(0)
    zeros = np.zeros(_WIDE_ROW, dt) if dt.kind == "f" and dt.itemsize >= 4 else None

    def run(x):
        if zeros is not None and x.dtype == dt and x.flags.c_contiguous:
            row = _wide_rows(x.size, 1)
            if row:  # np.maximum against a zero scalar is numpy's slow path; a zero row is not
                x2 = x.reshape(-1, row)
                out = np.empty(x2.shape, dt)
                _team.split(lambda a, b: np.maximum(x2[a:b], zeros[:row], out=out[a:b]),
                            x2.shape[0], 2 * out.nbytes)
                return (out.reshape(x.shape),)
        return (_nd(np.maximum(x, zero), dt),)

    return run


@register("Relu6", "CPU", type_constraints={"T": _REAL_T})
def _relu6(node, ctx):
    dt = _out(node)
    zero, six = dt.type(0), dt.type(6)

    def run(x):
        return (_nd(np.minimum(np.maximum(x, zero), six), dt),)

    return run


@register("ReluGrad", "CPU", type_constraints={"T": _REAL_T})
def _relu_grad(node, ctx):
    dt = _out(node)
    zero = dt.type(0)
    jit = dt in (_F32, _F64) and _jit.enabled()  # one pass in numba, on a team when big

    def run(g, f):
        _same_shape(node, g, f)
        if (jit and g.dtype == dt and f.dtype == dt and g.flags.c_contiguous
                and f.flags.c_contiguous):
            return (_jit.relu_grad(g, f),)
        with np.errstate(invalid="ignore"):  # NaN compares of bfloat16; inf * 0 is NaN, as in TF
            mask = np.greater(f, zero)
            if type(mask) is np.ndarray:  # the 0/1 mask in the dtype times g, in place
                out = mask.astype(dt)
                np.multiply(out, g, out=out)
                return (out,)
        if dt.kind in "iu":
            return (_nd(np.multiply(g, (f > zero).astype(dt)), dt),)
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in TF
            return (_nd(np.multiply(g, (f > zero).astype(dt)), dt),)

    return run


@register("Relu6Grad", "CPU", type_constraints={"T": _REAL_T})
def _relu6_grad(node, ctx):
    dt = _out(node)
    zero, six = dt.type(0), dt.type(6)

    def run(g, f):
        _same_shape(node, g, f)
        if dt.kind in "iu":
            return (_nd(np.multiply(g, ((f > zero) & (f < six)).astype(dt)), dt),)
        with np.errstate(invalid="ignore"):
            mask = (f > zero) & (f < six)
            return (_nd(np.multiply(g, mask.astype(dt)), dt),)

    return run


def _expm1_neg(x, dt):
    """exp(min(x, 0)) - 1 rounded as TF does (exp in the dtype, then minus 1 in the dtype); the
    min keeps exp from overflowing where the other branch is taken anyway."""
    cdt = _compute_dtype(dt)
    e = np.exp(np.minimum(_as(x, cdt), cdt.type(0)))
    return np.subtract(_as(_nd(e, cdt), dt), dt.type(1))


def _select(cond, a, b, dt):
    return _nd(np.where(cond, a, b), dt)


@register("Elu", "CPU", type_constraints={"T": _FLOAT_T})
def _elu(node, ctx):
    dt = _out(node)
    zero = dt.type(0)

    def run(x):
        with np.errstate(invalid="ignore", over="ignore"):
            return (_select(x < zero, _expm1_neg(x, dt), x, dt),)

    return run


@register("EluGrad", "CPU", type_constraints={"T": _FLOAT_T})
def _elu_grad(node, ctx):
    dt = _out(node)
    zero, one = dt.type(0), dt.type(1)

    def run(g, a):
        _same_shape(node, g, a)
        with np.errstate(invalid="ignore", over="ignore"):
            return (_select(a < zero, (a + one) * g, g, dt),)

    return run


_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_SCALE_ALPHA = 1.7580993408473768599402175208123


@register("Selu", "CPU", type_constraints={"T": _FLOAT_T})
def _selu(node, ctx):
    dt = _out(node)
    zero, scale, scale_alpha = dt.type(0), dt.type(_SELU_SCALE), dt.type(_SELU_SCALE_ALPHA)

    def run(x):
        with np.errstate(invalid="ignore", over="ignore"):
            return (_select(x < zero, scale_alpha * _expm1_neg(x, dt), scale * x, dt),)

    return run


@register("SeluGrad", "CPU", type_constraints={"T": _FLOAT_T})
def _selu_grad(node, ctx):
    dt = _out(node)
    zero, scale, scale_alpha = dt.type(0), dt.type(_SELU_SCALE), dt.type(_SELU_SCALE_ALPHA)

    def run(g, a):
        _same_shape(node, g, a)
        with np.errstate(invalid="ignore", over="ignore"):
            return (_select(a < zero, g * (a + scale_alpha), g * scale, dt),)

    return run


@register("LeakyRelu", "CPU", type_constraints={"T": _FLOAT_T})
def _leaky_relu(node, ctx):
    dt = _out(node)
    zero, alpha = dt.type(0), dt.type(node.attr("alpha", 0.2))

    def run(x):
        with np.errstate(invalid="ignore", over="ignore"):
            return (_select(x > zero, x, x * alpha, dt),)

    return run


@register("LeakyReluGrad", "CPU", type_constraints={"T": _FLOAT_T})
def _leaky_relu_grad(node, ctx):
    dt = _out(node)
    zero, alpha = dt.type(0), dt.type(node.attr("alpha", 0.2))

    def run(g, f):
        _same_shape(node, g, f)
        with np.errstate(invalid="ignore", over="ignore"):
            return (_select(f > zero, g, g * alpha, dt),)

    return run


# --- Softmax, LogSoftmax, L2Loss --------------------------------------------------------------
@register(["Softmax", "LogSoftmax"], "CPU", type_constraints={"T": _FLOAT_T})
def _softmax(node, ctx):
    dt = _out(node)
    cdt = _compute_dtype(dt)
    log = node.op == "LogSoftmax"

    def run(logits):
        if logits.ndim < 1:
            raise _err(f"logits must have >= 1 dimension, got {_shape_str(logits.shape)}")
        if logits.size == 0:
            return (np.empty(logits.shape, dt),)
        x = _as(logits, cdt)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            shifted = x - x.max(axis=-1, keepdims=True)  # TF subtracts the max
            e = np.exp(shifted)
            s = e.sum(axis=-1, keepdims=True)
            if log:
                r = np.subtract(shifted, np.log(s), out=shifted)
            else:
                r = np.divide(e, s, out=e)
        return (_as(r, dt),)

    return run


@register("L2Loss", "CPU", type_constraints={"T": _FLOAT_T})
def _l2_loss(node, ctx):
    dt = _out(node)
    cdt = _compute_dtype(dt)
    half = cdt.type(0.5)

    def run(t):
        x = _as(t, cdt).reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            r = np.dot(x, x) * half
        return (np.asarray(r, dtype=dt),)

    return run


# --- cross entropies --------------------------------------------------------------------------
def _xent_shape(logits, labels):
    """SoftmaxCrossEntropyWithLogits' checks: the broadcast (2-D) shape."""
    shape = logits.shape
    if labels.shape != shape:
        try:
            shape = np.broadcast_shapes(logits.shape, labels.shape)
        except ValueError:
            raise _err(f"logits and labels must be broadcastable: logits_size="
                       f"{_shape_str(logits.shape)} labels_size="
                       f"{_shape_str(labels.shape)}") from None
    if len(shape) != 2:
        raise _err("logits and labels must be either 2-dimensional, or broadcasted to be "
                   "2-dimensional")
    return shape


def _check_sparse_xent(logits, labels):
    """SparseSoftmaxCrossEntropyWithLogits' checks on the shapes."""
    if logits.ndim != 2:
        raise _err(f"logits must be 2-D, but got shape {_shape_str(logits.shape)}")
    if labels.ndim != 1:
        raise _err(f"labels must be 1-D, but got shape {_shape_str(labels.shape)}")
    if logits.shape[0] != labels.shape[0]:
        raise _err("logits and labels must have the same first dimension, got logits "
                   f"shape {_shape_str(logits.shape)} and labels shape "
                   f"{_shape_str(labels.shape)}")
    if logits.shape[1] == 0:
        raise _err("Must have at least one class, but got logits shape "
                   f"{_shape_str(logits.shape)}")


def _label_error(labels_host, bad, classes):
    values = " ".join(str(v) for v in np.asarray(labels_host).tolist())
    return _err(f"Received a label value of {bad} which is outside the valid range of "
                f"[0, {classes}).  Label values: {values}")


@register("SoftmaxCrossEntropyWithLogits", "CPU", type_constraints={"T": _FLOAT_T})
def _softmax_xent(node, ctx):
    dt = _out(node)
    cdt = _compute_dtype(dt)

    def run(logits, labels):
        shape = _xent_shape(logits, labels)
        batch, classes = shape
        if batch == 0 or classes == 0:  # TF: the loss over no classes is 0
            return np.zeros((batch,), dt), np.empty(shape, dt)
        x = np.broadcast_to(_as(logits, cdt), shape)
        y = np.broadcast_to(_as(labels, cdt), shape)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            shifted = x - x.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            s = e.sum(axis=1, keepdims=True)
            # TF: sum(labels * (log(sum_exp) - shifted)): a zero label times an infinite
            # difference is NaN there too
            loss = (y * (np.log(s) - shifted)).sum(axis=1)
            backprop = np.divide(e, s, out=e)
            backprop -= y
        return _as(loss, dt), _as(backprop, dt)

    return run


_JIT_XENT_DT = (np.dtype(np.float32), np.dtype(np.float64))


@register("SparseSoftmaxCrossEntropyWithLogits", "CPU",
          type_constraints={"T": _FLOAT_T, "Tlabels": _INDEX_T})
def _sparse_softmax_xent(node, ctx):
    dt = _out(node)
    cdt = _compute_dtype(dt)
    jit = _jit.enabled()

    def run(logits, labels):
        _check_sparse_xent(logits, labels)
        batch, classes = logits.shape
        if batch == 0:
            return np.zeros((0,), dt), np.empty((0, classes), dt)
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= classes:
            raise _label_error(labels, lo if lo < 0 else hi, classes)
        x = _as(logits, cdt)
        if jit and cdt in _JIT_XENT_DT:  # one numba pass (a dozen numpy calls otherwise)
            loss, back = _jit.sparse_xent(np.ascontiguousarray(x), np.ascontiguousarray(labels))
            return _as(loss, dt), _as(back, dt)
        rows = np.arange(batch)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            shifted = x - x.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            s = e.sum(axis=1)
            loss = np.log(s) - shifted[rows, labels]
            backprop = np.divide(e, s[:, None], out=e)
            backprop[rows, labels] -= cdt.type(1)
        return _as(loss, dt), _as(backprop, dt)

    return run


# --- LRN --------------------------------------------------------------------------------------
class _LRNAttrs:
    """LRN/LRNGrad's attrs, and the depth-window band matrices of the array module ``xp``
    (the GPU kernels pass their device's)."""

    __slots__ = ("radius", "bias", "alpha", "beta", "dt", "cdt", "bands", "xp")

    def __init__(self, node, xp=np):
        self.xp = xp
        self.dt = _out(node)
        self.cdt = _compute_dtype(self.dt)
        f = self.cdt.type
        self.radius = int(node.attr("depth_radius", 5))
        self.bias = f(node.attr("bias", 1.0))
        self.alpha = f(node.attr("alpha", 1.0))
        self.beta = f(node.attr("beta", 0.5))
        self.bands = {}

    def band(self, depth):
        """The [depth, depth] 0/1 matrix with ones where |i - j| <= radius: a product with it
        sums each depth window (what TF's CPU kernel does too); made once per depth."""
        m = self.bands.get(depth)
        if m is None:
            i = np.arange(depth)
            m = self.xp.asarray((np.abs(i[:, None] - i[None, :]) <= self.radius)
                                .astype(self.cdt))
            self.bands[depth] = m
        return m

    def norm(self, x2d):
        """bias + alpha * (sum of squares over each depth window), [rows, depth]."""
        n = (x2d * x2d) @ self.band(x2d.shape[1])
        n *= self.alpha
        n += self.bias
        return n


@register("LRN", "CPU", type_constraints={"T": [dtypes.float16, dtypes.float32]})
def _lrn(node, ctx):
    a = _LRNAttrs(node)

    def run(x):
        if x.ndim != 4:
            raise _err("in must be 4-dimensional")
        x2 = _as(x, a.cdt).reshape(-1, x.shape[3])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            n = a.norm(x2)
            if a.beta == 1:
                r = np.divide(x2, n, out=n)
            elif a.beta == 0.5:
                r = np.divide(x2, np.sqrt(n, out=n), out=n)
            else:
                r = np.multiply(x2, np.power(n, -a.beta, out=n), out=n)
        return (_as(r, a.dt).reshape(x.shape),)

    return run


def _check_lrn_grad(grads, image, out_image):
    if grads.ndim != 4 or image.ndim != 4:
        raise _err("inputs must be 4-dimensional")
    if not (grads.shape == image.shape == out_image.shape):
        raise _err("input_grads, input_image, and out_image should have the same shape")


@register("LRNGrad", "CPU", type_constraints={"T": [dtypes.float16, dtypes.float32]})
def _lrn_grad(node, ctx):
    a = _LRNAttrs(node)
    coef = a.cdt.type(-2) * a.alpha * a.beta

    def run(grads, image, out_image):
        _check_lrn_grad(grads, image, out_image)
        depth = image.shape[3]
        g = _as(grads, a.cdt).reshape(-1, depth)
        x = _as(image, a.cdt).reshape(-1, depth)
        y = _as(out_image, a.cdt).reshape(-1, depth)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            n = a.norm(x)
            # d out[j] / d in[k] = [k == j] n[j]^-beta - 2 alpha beta in[k] out[j] / n[j]
            # for |k - j| <= radius; the band matrix sums over j.
            t = g * y
            t /= n
            s = t @ a.band(depth)
            s *= x
            s *= coef
            r = np.power(n, -a.beta, out=n)
            r *= g
            r += s
        return (_as(r, a.dt).reshape(image.shape),)

    return run


# --- TopKV2, InTopKV2 -------------------------------------------------------------------------
def _descending(key):
    """Column order of each row of ``key``: descending, ties to the lower index (a stable
    ascending sort of the reversed row, read backwards; no negation, so unsigned and int min
    are safe)."""
    n = key.shape[1]
    return (n - 1) - np.argsort(key[:, ::-1], axis=1, kind="stable")[:, ::-1]


def _top_k_indices(key, k):
    n = key.shape[1]
    if k == 1:
        return np.argmax(key, axis=1)[:, None]  # first occurrence of the max
    if 4 * k > n or (key.dtype.kind == "f" and np.isnan(key).any()):
        return _descending(key)[:, :k]
    # k much smaller than a row: select with a partition, then sort only the k winners. All
    # values above the k-th largest are in; of those equal to it, the lowest indexes.
    kth = np.partition(key, n - k, axis=1)[:, n - k:n - k + 1]
    eq = key == kth
    need = k - np.count_nonzero(key > kth, axis=1)[:, None]
    take = (key > kth) | (eq & (np.cumsum(eq, axis=1) <= need))
    cand = np.nonzero(take)[1].reshape(-1, k)  # ascending index in each row
    return np.take_along_axis(cand, _descending(np.take_along_axis(key, cand, axis=1)), axis=1)


def _top_k_args(x, k):
    """TopKV2's checks: ``(k, columns, output shape)``."""
    if k.ndim != 0:
        raise _err(f"k must be scalar, got shape {_shape_str(k.shape)}")
    k = int(k)
    if k < 0:
        raise _err(f"Need k >= 0, got {k}")
    if x.ndim < 1:
        raise _err(f"input must be >= 1-D, got shape {_shape_str(x.shape)}")
    n = x.shape[-1]
    if n < k:
        raise _err(f"input must have at least k columns. Had {n}, needed {k}")
    return k, n, x.shape[:-1] + (k,)


@register("TopKV2", "CPU", host_memory=("k",), type_constraints={"T": _REAL_T})
def _top_k(node, ctx):
    dt = _out(node, 0)
    it = _out(node, 1)
    key_dt = _F32 if dt in _LOW else None  # sort half types on their exact float32 values

    def run(x, k):
        k, n, out_shape = _top_k_args(x, k)
        if k == 0 or x.size == 0:
            return np.empty(out_shape, dt), np.empty(out_shape, it)
        rows = x.reshape(-1, n)
        key = rows if key_dt is None else rows.astype(key_dt)
        idx = _top_k_indices(key, k)
        values = np.take_along_axis(rows, idx, axis=1)
        return values.reshape(out_shape), _as(idx, it).reshape(out_shape)

    return run


def _check_in_top_k(predictions, targets, k):
    if k.ndim != 0:
        raise _err(f"k must be 0-D, got shape {_shape_str(k.shape)}")
    if predictions.ndim != 2:
        raise _err("predictions must be 2-dimensional")
    if targets.ndim != 1:
        raise _err("targets must be 1-dimensional")
    batch = predictions.shape[0]
    if batch != targets.shape[0]:
        raise _err(f"First dimension of predictions {batch} must match length of targets "
                   f"{targets.shape[0]}")


@register("InTopKV2", "CPU", host_memory=("k",), type_constraints={"T": _INDEX_T})
def _in_top_k(node, ctx):
    def run(predictions, targets, k):
        _check_in_top_k(predictions, targets, k)
        batch, classes = predictions.shape
        k = int(k)
        if classes == 0 or batch == 0:
            return (np.zeros((batch,), np.bool_),)
        valid = (targets >= 0) & (targets < classes)
        t = np.where(valid, targets, 0)
        target_pred = predictions[np.arange(batch), t]
        more = np.count_nonzero(predictions > target_pred[:, None], axis=1)
        ok = valid & np.isfinite(predictions).all(axis=1) & (more < k)
        return (ok,)

    return run


# --- FusedBatchNorm ---------------------------------------------------------------------------
_BN_T = {
    "FusedBatchNorm": [dtypes.float32],
    "FusedBatchNormV2": [dtypes.float16, dtypes.bfloat16, dtypes.float32],
    "FusedBatchNormV3": [dtypes.float16, dtypes.bfloat16, dtypes.float32],
}


class _BNLayout:
    """Channel axis and per-channel sums of a 4-D or 5-D tensor in NHWC-like or NCHW-like
    layout. Sums accumulate in float64 and round to float32 once: TF's float32 reductions are
    accurate to a few ulp of float32 on small tensors and drift on large ones; this stays
    within the first and does not drift."""

    __slots__ = ("channels_first",)

    def __init__(self, data_format):
        self.channels_first = data_format in (b"NCHW", b"NCDHW")

    def axis(self, ndim):
        return 1 if self.channels_first else ndim - 1

    def bshape(self, ndim, c):
        """Shape that broadcasts a [C] vector against the tensor."""
        if self.channels_first:
            return (1, c) + (1,) * (ndim - 2)
        return (c,)

    def sum(self, a, c):
        if self.channels_first:
            r = a.reshape(a.shape[0], c, -1).sum(axis=(0, 2), dtype=np.float64)
        else:
            r = a.reshape(-1, c).sum(axis=0, dtype=np.float64)
        return r.astype(_F32)


def _bn_check_common(scale, c):
    if scale.size != c:
        raise _err("scale must have the same number of elements as the channels of x, got "
                   f"{scale.size} and {c}")


def _bn_channels(layout, x, scale, offset, mean, variance, need_running, prefix):
    """FusedBatchNorm's checks: the number of channels (the GPU kernel's too)."""
    if x.ndim not in (4, 5):
        raise _err(f"input must be 4 or 5-dimensional{_shape_str(x.shape)}")
    for name, a in (("scale", scale), ("offset", offset), ("estimated_mean", mean),
                    ("estimated_variance", variance)):
        if a.ndim != 1:
            raise _err(f"{name} must be 1-dimensional{_shape_str(a.shape)}")
    c = x.shape[layout.axis(x.ndim)]
    _bn_check_common(scale, c)
    if offset.size != c:
        raise _err("offset must have the same number of elements as the channels of x, "
                   f"got {offset.size} and {c}")
    if need_running:
        if mean.size != c:
            raise _err(f"{prefix}, mean must have the same number of elements as the "
                       f"channels of x, got {mean.size} and {c}")
        if variance.size != c:
            raise _err(f"{prefix}, variance must have the same number of elements as the "
                       f"channels of x, got {variance.size} and {c}")
    return c


def _bn_grad_channels(layout, dy, x, scale, saved_mean, saved_var):
    """FusedBatchNormGrad's checks: the number of channels (the GPU kernel's too)."""
    for a in (dy, x):
        if a.ndim not in (4, 5):
            raise _err(f"input must be 4 or 5-dimensional{_shape_str(a.shape)}")
    for name, a in (("scale", scale), ("saved mean", saved_mean),
                    ("saved variance", saved_var)):
        if a.ndim != 1:
            raise _err(f"{name} must be 1-dimensional{_shape_str(a.shape)}")
    if x.shape != dy.shape:
        raise _err(f"x and y_backprop must have same shape, but x has shape "
                   f"{_shape_str(x.shape)} and y_backprop has shape {_shape_str(dy.shape)}")
    c = x.shape[layout.axis(x.ndim)]
    _bn_check_common(scale, c)
    for name, a in (("reserve_space_1", saved_mean), ("reserve_space_2", saved_var)):
        if a.size != c:
            raise _err(f"{name} must have the same number of elements as the channels of "
                       f"x, got {a.size} and {c}")
    return c


def _bn_training(xp, layout, xu, c, scale, offset, mean, variance, eps, factor):
    """FusedBatchNorm with is_training: ``(y in U, running mean, running variance, batch
    mean, batch variance)``, with the array module ``xp``."""
    u = _F32
    bshape = layout.bshape(xu.ndim, c)
    n = xu.size // c
    inv = u.type(1.0) / u.type(n)
    adjust = u.type(n) / u.type(n - 1 if n > 1 else 1)  # Bessel's correction
    batch_mean = layout.sum(xu, c) * inv
    centered = xu - batch_mean.reshape(bshape)
    y = xp.multiply(centered, centered)
    batch_var = layout.sum(y, c) * inv
    mul = (u.type(1) / xp.sqrt(batch_var + eps)) * scale
    y = xp.multiply(centered, mul.reshape(bshape), out=y)
    y += offset.reshape(bshape)
    if factor == 1:
        run_mean = batch_mean.copy()
        run_var = batch_var * adjust
    else:
        omf = u.type(1) - factor
        run_mean = omf * mean + factor * batch_mean
        run_var = omf * variance + (factor * adjust) * batch_var
    return y, run_mean, run_var, batch_mean, batch_var


def _bn_inference(xp, layout, xu, c, scale, offset, mean, variance, eps):
    """FusedBatchNorm without is_training: y in U, with the array module ``xp``."""
    u = _F32
    bshape = layout.bshape(xu.ndim, c)
    mul = (u.type(1) / xp.sqrt(variance + eps)) * scale
    y = xu - mean.reshape(bshape)
    y *= mul.reshape(bshape)
    y += offset.reshape(bshape)
    return y


def _bn_grad(xp, layout, dyu, xu, c, scale, saved_mean, saved_var, eps, training):
    """FusedBatchNormGrad: ``(x_backprop in U, scale_backprop, offset_backprop)``, with the
    array module ``xp``."""
    u = _F32
    bshape = layout.bshape(xu.ndim, c)
    coef0 = u.type(1) / xp.sqrt(saved_var + eps)
    centered = xu - saved_mean.reshape(bshape)
    offset_bp = layout.sum(dyu, c)
    buf = xp.multiply(dyu, centered)
    dy_xc = layout.sum(buf, c)
    scale_bp = dy_xc * coef0
    if training:
        # scale * rsqrt(var + eps) * (dy - mean(dy) - (x - mean) * mean(dy * (x - mean))
        # / (var + eps)), as TF's CPU kernel
        n = xu.size // c
        inv = u.type(1.0) / u.type(n)
        coef1 = (scale * coef0).reshape(bshape)
        coef2 = (coef0 * coef0 * (dy_xc / u.type(n))).reshape(bshape)
        centered *= coef2
        r = xp.subtract(dyu, (offset_bp * inv).reshape(bshape), out=buf)
        r -= centered
        r *= coef1
    else:
        r = xp.multiply(dyu, (coef0 * scale).reshape(bshape), out=buf)
    return r, scale_bp, offset_bp


@register(list(_BN_T), "CPU", type_constraints={"T": _BN_T["FusedBatchNormV2"],
                                                 "U": [dtypes.float32]})
def _fused_batch_norm(node, ctx):
    t_dt = _out(node, 0)
    u = _F32
    v3 = node.op == "FusedBatchNormV3"
    eps = u.type(node.attr("epsilon", 1e-4))
    factor = u.type(node.attr("exponential_avg_factor", 1.0))
    training = bool(node.attr("is_training", True))
    layout = _BNLayout(node.attr("data_format", b"NHWC"))
    need_running = (not training) or factor != 1
    prefix = "When exponential_avg_factor != 1" if training else "When is_training=false"

    def run(x, scale, offset, mean, variance):
        c = _bn_channels(layout, x, scale, offset, mean, variance, need_running, prefix)
        extra = (np.zeros((), u),) if v3 else ()
        if x.size == 0:
            nan = np.full(scale.shape, np.nan, u)
            return (np.empty(x.shape, t_dt), nan, nan.copy(), np.zeros(scale.shape, u),
                    np.zeros(scale.shape, u)) + extra
        xu = _as(x, u)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if training:
                y, run_mean, run_var, batch_mean, batch_var = _bn_training(
                    np, layout, xu, c, scale, offset, mean, variance, eps, factor)
                return (_as(y, t_dt), _as(run_mean, u), _as(run_var, u), batch_mean,
                        batch_var) + extra
            y = _bn_inference(np, layout, xu, c, scale, offset, mean, variance, eps)
            # TF leaves reserve_space_1/2 uninitialized in inference mode
            return (_as(y, t_dt), mean.astype(u), variance.astype(u), np.zeros(c, u),
                    np.zeros(c, u)) + extra

    return run


_BNG_T = {
    "FusedBatchNormGrad": [dtypes.float32],
    "FusedBatchNormGradV2": [dtypes.float16, dtypes.bfloat16, dtypes.float32],
    "FusedBatchNormGradV3": [dtypes.float16, dtypes.bfloat16, dtypes.float32],
}


@register(list(_BNG_T), "CPU", type_constraints={"T": _BNG_T["FusedBatchNormGradV2"],
                                                  "U": [dtypes.float32]})
def _fused_batch_norm_grad(node, ctx):
    t_dt = _out(node, 0)
    u = _F32
    eps = u.type(node.attr("epsilon", 1e-4))
    training = bool(node.attr("is_training", True))
    layout = _BNLayout(node.attr("data_format", b"NHWC"))

    def run(dy, x, scale, saved_mean, saved_var, *reserve_space_3):  # V3's is unused on a CPU
        c = _bn_grad_channels(layout, dy, x, scale, saved_mean, saved_var)
        placeholders = (np.empty((0,), u), np.empty((0,), u))
        if x.size == 0:
            return (np.empty(x.shape, t_dt), np.zeros(scale.shape, u),
                    np.zeros(scale.shape, u)) + placeholders
        if not training and layout.channels_first:
            raise _err("The implementation of FusedBatchNormGrad with is_training=False only "
                       "support NHWC tensor format for now.")
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            r, scale_bp, offset_bp = _bn_grad(np, layout, _as(dy, u), _as(x, u), c, scale,
                                              saved_mean, saved_var, eps, training)
        return (_as(r, t_dt), _as(scale_bp, u), _as(offset_bp, u)) + placeholders

    return run
