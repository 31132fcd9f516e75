"""nn kernels on a GPU (CuPy; numpy buffers on the simulated GPU): BiasAdd (+V1, Grad), the
Relu/Relu6/Elu/Selu/LeakyRelu activations and their gradients, Softmax, LogSoftmax, the two
softmax cross entropies, L2Loss, LRN (+Grad), TopKV2, InTopKV2, FusedBatchNorm (V1/V2/V3) and
FusedBatchNormGrad (V1/V2/V3).

The semantics are those of the CPU kernels (kernels_cpu/nn_ops.py, checked against TensorFlow's
recordings): the same formulas, the same compute dtypes (float16 computed in float32 where the
CPU kernel does, rounded once), the same errors for bad input. Dtypes: float16, float32,
float64 and the integer types where the op has them; bfloat16 and complex nodes have no GPU
kernel (they soft-place to the CPU). Ops whose every input and output is int32 (host memory on
a GPU) run their CPU kernel.

numba.cuda kernels (used where ``use_numba`` says so; the array-module path otherwise):

- SparseSoftmaxCrossEntropyWithLogits: loss and gradient in one kernel, one thread per row
  (max, sum of exponentials, then the row's loss and gradient), instead of ~8 array passes;
- BiasAddGrad: per-channel column sums for NHWC and NCHW, each thread summing a chunk of one
  channel's column (neighbouring threads read neighbouring channels: coalesced for NHWC) and
  adding it atomically (float sums are thus in no fixed order on a real GPU, as with TF's
  atomics).

Host memory: ``k`` of TopKV2 and InTopKV2. The labels of the sparse cross entropy live in device
memory, int32 too, and a label outside ``[0, classes)`` gives a NaN loss and a NaN gradient row,
as TensorFlow's GPU kernel does (its CPU kernel raises "Received a label value of ..."; checking
on the device would cost a device-to-host sync every training step). TopKV2's ``indices`` and
InTopKV2's ``targets`` stay in device memory even when int32 (as in TensorFlow's GPU kernels).
"""

import math

import numpy as np

from mgrt.kernels_cpu.nn_ops import _SELU_SCALE, _SELU_SCALE_ALPHA
from mgrt.kernels_gpu import (GPU_FLOAT, GPU_NUM, launch, numba_cuda, register_gpu, use_numba,
                              xp_of)
from mgrt.runtime import dtypes
from mgrt.runtime.errors import InvalidArgumentError

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_INDEX_T = [dtypes.int32, dtypes.int64]


def _out(node, i=0):
    return np.dtype(node.output_types[i].base_dtype.as_numpy_dtype)


def _err(msg):
    return InvalidArgumentError(None, None, msg)


def _shape_str(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _compute_dtype(dt):
    return _F32 if dt == _F16 else dt


def _as(a, dt):
    return a if a.dtype == dt else a.astype(dt)


def _dev(xp, a):
    """A host-memory (numpy) value as a device array; a device array as it is."""
    return xp.asarray(a) if isinstance(a, np.ndarray) else a


def _same_shape(node, a, b):
    if a.shape != b.shape:
        raise _err(f"Inputs to operation {node.name} of type {node.op} must have the same size "
                   f"and shape.  Input 0: {_shape_str(a.shape)} != input 1: "
                   f"{_shape_str(b.shape)}")


def _simulated(device):
    return bool(getattr(device, "is_simulated", False))


def _threads(n):
    """Threads per block for ``n`` threads: small launches get one small block (numba's
    simulator runs every thread of a block, idle or not, as a Python thread)."""
    return 256 if n >= 256 else max(1, n)


# --- numba.cuda kernels ---------------------------------------------------------------------
# The kernels are compiled on first use; their bodies name ``cuda`` as a global of this module
# (numba's simulator swaps a module global bound to numba.cuda for its fake module while a
# kernel runs; a closure variable it would not see).
cuda = None
_KERNELS = {}


def _kernel(name):
    global cuda
    k = _KERNELS.get(name)
    if k is None:
        cuda = numba_cuda()
        k = _KERNELS[name] = _MAKERS[name]()
    return k


def _make_sparse_xent():
    @cuda.jit
    def sparse_xent(logits, labels, loss, backprop):
        """One thread per row: loss[i] = log(sum_j exp(x_ij - m_i)) - (x_i,label - m_i),
        backprop[i, j] = exp(x_ij - m_i) / sum - [j == label] (m_i: the row's maximum; a NaN in
        the row makes it NaN, as numpy's max does)."""
        i = cuda.grid(1)
        if i < logits.shape[0]:
            classes = logits.shape[1]
            m = logits[i, 0]
            for j in range(1, classes):
                v = logits[i, j]
                if v > m or v != v:
                    if m == m:
                        m = v
            s = 0.0
            for j in range(classes):
                e = math.exp(logits[i, j] - m)
                backprop[i, j] = e
                s += e
            lab = labels[i]
            if lab < 0 or lab >= classes:  # TensorFlow's GPU kernel: a NaN row
                loss[i] = math.nan
                for j in range(classes):
                    backprop[i, j] = math.nan
                return
            loss[i] = math.log(s) - (logits[i, lab] - m)
            for j in range(classes):
                backprop[i, j] = backprop[i, j] / s
            backprop[i, lab] = backprop[i, lab] - 1.0

    return sparse_xent


def _make_column_sums():
    @cuda.jit
    def column_sums(g, out, zero, per):
        """out[c] += the sum over (a, b) of g[a, c, b] (out holds zeros): thread t takes
        channel t % C and the ``per`` elements of its chunk t // C of the flattened (a, b)
        range, sums them in the accumulation dtype (``zero``'s) and adds the partial sum to
        out[c] atomically. Neighbouring threads read neighbouring channels (coalesced for
        NHWC, where g is (rows, C, 1))."""
        t = cuda.grid(1)
        channels = g.shape[1]
        inner = g.shape[2]
        total = g.shape[0] * inner
        c = t % channels
        k0 = (t // channels) * per
        if k0 < total:
            acc = zero[0]
            a = k0 // inner
            b = k0 - a * inner
            for _ in range(min(per, total - k0)):
                acc += g[a, c, b]
                b += 1
                if b == inner:
                    b = 0
                    a += 1
            cuda.atomic.add(out, c, acc)

    return column_sums


_MAKERS = {"sparse_xent": _make_sparse_xent, "column_sums": _make_column_sums}


# --- BiasAdd ----------------------------------------------------------------------------------
def _bias_channel_axis(ndim, nchw):
    return 1 if nchw else ndim - 1


@register_gpu(["BiasAdd", "BiasAddV1"], type_constraints={"T": GPU_NUM}, host_fallback=True)
def _bias_add(node, ctx):
    nchw = node.op == "BiasAdd" and node.attr("data_format", b"NHWC") == b"NCHW"
    xp = xp_of(node, ctx)

    def run(value, bias):
        if value.ndim < 2:
            raise _err(f"Input tensor must be at least 2D: {_shape_str(value.shape)}")
        if bias.ndim != 1:
            raise _err(f"Biases must be 1D: {_shape_str(bias.shape)}")
        axis = _bias_channel_axis(value.ndim, nchw)
        if bias.shape[0] != value.shape[axis]:
            raise _err("Must provide as many biases as the last dimension of the input tensor: "
                       f"{_shape_str(bias.shape)} vs. {_shape_str(value.shape)}")
        if axis != value.ndim - 1:
            bias = bias.reshape((-1,) + (1,) * (value.ndim - 2))
        return (xp.add(value, bias),)

    return run


def _acc_dtype_int(dt):
    return np.dtype(np.uint64) if dt == np.uint64 else np.dtype(np.int64)


@register_gpu("BiasAddGrad", type_constraints={"T": GPU_NUM}, host_fallback=True)
def _bias_add_grad(node, ctx):
    nchw = node.attr("data_format", b"NHWC") == b"NCHW"
    dt = _out(node)
    xp = xp_of(node, ctx)
    device = node.device
    acc = _F32 if dt == _F16 else dt  # TF: float16 sums accumulate in float32
    # the numba kernel reads float32/float64 or any integer type, accumulating integers in
    # 64 bits (the sum wraps to the same value once cast back)
    k_in = _F32 if dt == _F16 else dt
    k_acc = _acc_dtype_int(dt) if dt.kind in "iu" else acc

    def run(g):
        if g.ndim < 2:
            raise _err(f"Input tensor must be at least 2D: {_shape_str(g.shape)}")
        axis = _bias_channel_axis(g.ndim, nchw)
        c = g.shape[axis]
        lead = int(np.prod(g.shape[:axis], dtype=np.int64))
        trail = int(np.prod(g.shape[axis + 1:], dtype=np.int64))
        g3 = g.reshape(lead, c, trail)
        if g.size and use_numba(device, g.size):
            total = lead * trail
            # chunks per channel: enough threads to fill a GPU; two in the simulator (which
            # runs every thread as Python), so that the partial sums are exercised
            chunks = min(total, 2 if _simulated(device) else max(1, (1 << 17) // c))
            per = -(-total // chunks)
            chunks = -(-total // per)
            out = xp.zeros((c,), k_acc)
            launch(device, _kernel("column_sums"), c * chunks, _as(g3, k_in), out,
                   xp.zeros((1,), k_acc), per, threads=_threads(c * chunks))
            return (_as(out, dt),)
        if trail == 1:
            r = g3.reshape(lead, c).sum(axis=0, dtype=acc)
        else:
            r = g3.sum(axis=(0, 2), dtype=acc)
        return (_as(r, dt),)

    return run


# --- Relu family ------------------------------------------------------------------------------
@register_gpu("Relu", type_constraints={"T": GPU_NUM}, host_fallback=True)
def _relu(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero = dt.type(0)

    def run(x):
        return (xp.maximum(x, zero),)

    return run


@register_gpu("Relu6", type_constraints={"T": GPU_NUM}, host_fallback=True)
def _relu6(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero, six = dt.type(0), dt.type(6)

    def run(x):
        return (xp.minimum(xp.maximum(x, zero), six),)

    return run


@register_gpu("ReluGrad", type_constraints={"T": GPU_NUM}, host_fallback=True)
def _relu_grad(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero = dt.type(0)

    def run(g, f):
        _same_shape(node, g, f)
        # TF multiplies by the 0/1 mask: inf or NaN gradients where f <= 0 give NaN
        return (xp.multiply(g, (f > zero).astype(dt)),)

    return run


@register_gpu("Relu6Grad", type_constraints={"T": GPU_NUM}, host_fallback=True)
def _relu6_grad(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero, six = dt.type(0), dt.type(6)

    def run(g, f):
        _same_shape(node, g, f)
        return (xp.multiply(g, ((f > zero) & (f < six)).astype(dt)),)

    return run


def _expm1_neg(xp, x, dt):
    """exp(min(x, 0)) - 1 as the CPU kernel rounds it (exp in the compute dtype, rounded to
    ``dt``, minus 1 in ``dt``)."""
    cdt = _compute_dtype(dt)
    e = xp.exp(xp.minimum(_as(x, cdt), cdt.type(0)))
    return xp.subtract(_as(e, dt), dt.type(1))


@register_gpu("Elu", type_constraints={"T": GPU_FLOAT})
def _elu(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero = dt.type(0)

    def run(x):
        return (xp.where(x < zero, _expm1_neg(xp, x, dt), x),)

    return run


@register_gpu("EluGrad", type_constraints={"T": GPU_FLOAT})
def _elu_grad(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero, one = dt.type(0), dt.type(1)

    def run(g, a):
        _same_shape(node, g, a)
        return (xp.where(a < zero, (a + one) * g, g),)

    return run


@register_gpu("Selu", type_constraints={"T": GPU_FLOAT})
def _selu(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero, scale, scale_alpha = dt.type(0), dt.type(_SELU_SCALE), dt.type(_SELU_SCALE_ALPHA)

    def run(x):
        return (xp.where(x < zero, scale_alpha * _expm1_neg(xp, x, dt), scale * x),)

    return run


@register_gpu("SeluGrad", type_constraints={"T": GPU_FLOAT})
def _selu_grad(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero, scale, scale_alpha = dt.type(0), dt.type(_SELU_SCALE), dt.type(_SELU_SCALE_ALPHA)

    def run(g, a):
        _same_shape(node, g, a)
        return (xp.where(a < zero, g * (a + scale_alpha), g * scale),)

    return run


@register_gpu("LeakyRelu", type_constraints={"T": GPU_FLOAT})
def _leaky_relu(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero, alpha = dt.type(0), dt.type(node.attr("alpha", 0.2))

    def run(x):
        return (xp.where(x > zero, x, x * alpha),)

    return run


@register_gpu("LeakyReluGrad", type_constraints={"T": GPU_FLOAT})
def _leaky_relu_grad(node, ctx):
    dt = _out(node)
    xp = xp_of(node, ctx)
    zero, alpha = dt.type(0), dt.type(node.attr("alpha", 0.2))

    def run(g, f):
        _same_shape(node, g, f)
        return (xp.where(f > zero, g, g * alpha),)

    return run


# --- Softmax, LogSoftmax, L2Loss --------------------------------------------------------------
@register_gpu(["Softmax", "LogSoftmax"], type_constraints={"T": GPU_FLOAT})
def _softmax(node, ctx):
    dt = _out(node)
    cdt = _compute_dtype(dt)
    xp = xp_of(node, ctx)
    log = node.op == "LogSoftmax"

    def run(logits):
        if logits.ndim < 1:
            raise _err(f"logits must have >= 1 dimension, got {_shape_str(logits.shape)}")
        if logits.size == 0:
            return (xp.empty(logits.shape, dt),)
        x = _as(logits, cdt)
        shifted = x - x.max(axis=-1, keepdims=True)  # TF subtracts the max
        e = xp.exp(shifted)
        s = e.sum(axis=-1, keepdims=True)
        if log:
            r = xp.subtract(shifted, xp.log(s), out=shifted)
        else:
            r = xp.divide(e, s, out=e)
        return (_as(r, dt),)

    return run


@register_gpu("L2Loss", type_constraints={"T": GPU_FLOAT})
def _l2_loss(node, ctx):
    dt = _out(node)
    cdt = _compute_dtype(dt)
    xp = xp_of(node, ctx)
    half = cdt.type(0.5)

    def run(t):
        x = _as(t, cdt).reshape(-1)
        if x.size == 0:
            return (xp.zeros((), dt),)
        r = xp.dot(x, x) * half
        return (_as(r, dt).reshape(()),)

    return run


# --- cross entropies --------------------------------------------------------------------------
@register_gpu("SoftmaxCrossEntropyWithLogits", type_constraints={"T": GPU_FLOAT})
def _softmax_xent(node, ctx):
    dt = _out(node)
    cdt = _compute_dtype(dt)
    xp = xp_of(node, ctx)

    def run(logits, labels):
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
        batch, classes = shape
        if batch == 0 or classes == 0:  # TF: the loss over no classes is 0
            return xp.zeros((batch,), dt), xp.empty(shape, dt)
        x = xp.broadcast_to(_as(logits, cdt), shape)
        y = xp.broadcast_to(_as(labels, cdt), shape)
        shifted = x - x.max(axis=1, keepdims=True)
        e = xp.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        loss = (y * (xp.log(s) - shifted)).sum(axis=1)
        backprop = xp.divide(e, s, out=e)
        backprop -= y
        return _as(loss, dt), _as(backprop, dt)

    return run


def _label_error(labels_host, bad, classes):
    values = " ".join(str(v) for v in np.asarray(labels_host).tolist())
    return _err(f"Received a label value of {bad} which is outside the valid range of "
                f"[0, {classes}).  Label values: {values}")


@register_gpu("SparseSoftmaxCrossEntropyWithLogits",
              type_constraints={"T": GPU_FLOAT, "Tlabels": _INDEX_T},
              device_memory=("labels",))
def _sparse_softmax_xent(node, ctx):
    dt = _out(node)
    cdt = _compute_dtype(dt)
    xp = xp_of(node, ctx)
    device = node.device

    def run(logits, labels):
        if logits.ndim != 2:
            raise _err(f"logits must be 2-D, but got shape {_shape_str(logits.shape)}")
        if labels.ndim != 1:
            raise _err(f"labels must be 1-D, but got shape {_shape_str(labels.shape)}")
        if logits.shape[0] != labels.shape[0]:
            raise _err("logits and labels must have the same first dimension, got logits "
                       f"shape {_shape_str(logits.shape)} and labels shape "
                       f"{_shape_str(labels.shape)}")
        batch, classes = logits.shape
        if classes == 0:
            raise _err("Must have at least one class, but got logits shape "
                       f"{_shape_str(logits.shape)}")
        if batch == 0:
            return xp.zeros((0,), dt), xp.empty((0, classes), dt)
        x = _as(logits, cdt)
        if use_numba(device, logits.size):
            loss = xp.empty((batch,), cdt)
            backprop = xp.empty((batch, classes), cdt)
            launch(device, _kernel("sparse_xent"), batch, xp.ascontiguousarray(x), labels,
                   loss, backprop, threads=_threads(batch))
            return _as(loss, dt), _as(backprop, dt)
        shifted = x - x.max(axis=1, keepdims=True)
        e = xp.exp(shifted)
        s = e.sum(axis=1)
        lab = labels.astype(np.int64).reshape(batch, 1)
        valid = (lab >= 0) & (lab < classes)
        lab = xp.where(valid, lab, 0)
        loss = xp.log(s) - xp.take_along_axis(shifted, lab, axis=1).reshape(batch)
        backprop = xp.divide(e, s.reshape(batch, 1), out=e)
        backprop[xp.arange(batch), lab.reshape(batch)] -= cdt.type(1)
        nan = cdt.type(np.nan)
        loss = xp.where(valid.reshape(batch), loss, nan)
        backprop = xp.where(valid, backprop, nan)
        return _as(loss, dt), _as(backprop, dt)

    return run


# --- LRN --------------------------------------------------------------------------------------
class _LRNAttrs:
    __slots__ = ("radius", "bias", "alpha", "beta", "dt", "cdt", "bands", "xp")

    def __init__(self, node, xp):
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
        """The [depth, depth] 0/1 matrix with ones where |i - j| <= radius, on the device
        (made once per depth)."""
        m = self.bands.get(depth)
        if m is None:
            i = np.arange(depth)
            m = self.xp.asarray((np.abs(i[:, None] - i[None, :]) <= self.radius)
                                .astype(self.cdt))
            self.bands[depth] = m
        return m

    def norm(self, x2d):
        n = (x2d * x2d) @ self.band(x2d.shape[1])
        n *= self.alpha
        n += self.bias
        return n


@register_gpu("LRN", type_constraints={"T": [dtypes.float16, dtypes.float32]})
def _lrn(node, ctx):
    xp = xp_of(node, ctx)
    a = _LRNAttrs(node, xp)

    def run(x):
        if x.ndim != 4:
            raise _err("in must be 4-dimensional")
        if x.size == 0:
            return (xp.empty(x.shape, a.dt),)
        x2 = _as(x, a.cdt).reshape(-1, x.shape[3])
        n = a.norm(x2)
        if a.beta == 1:
            r = xp.divide(x2, n, out=n)
        elif a.beta == 0.5:
            r = xp.divide(x2, xp.sqrt(n, out=n), out=n)
        else:
            r = xp.multiply(x2, xp.power(n, -a.beta, out=n), out=n)
        return (_as(r, a.dt).reshape(x.shape),)

    return run


@register_gpu("LRNGrad", type_constraints={"T": [dtypes.float16, dtypes.float32]})
def _lrn_grad(node, ctx):
    xp = xp_of(node, ctx)
    a = _LRNAttrs(node, xp)
    coef = a.cdt.type(-2) * a.alpha * a.beta

    def run(grads, image, out_image):
        if grads.ndim != 4 or image.ndim != 4:
            raise _err("inputs must be 4-dimensional")
        if not (grads.shape == image.shape == out_image.shape):
            raise _err("input_grads, input_image, and out_image should have the same shape")
        if image.size == 0:
            return (xp.empty(image.shape, a.dt),)
        depth = image.shape[3]
        g = _as(grads, a.cdt).reshape(-1, depth)
        x = _as(image, a.cdt).reshape(-1, depth)
        y = _as(out_image, a.cdt).reshape(-1, depth)
        n = a.norm(x)
        t = g * y
        t /= n
        s = t @ a.band(depth)
        s *= x
        s *= coef
        r = xp.power(n, -a.beta, out=n)
        r *= g
        r += s
        return (_as(r, a.dt).reshape(image.shape),)

    return run


# --- TopKV2, InTopKV2 -------------------------------------------------------------------------
@register_gpu("TopKV2", host_memory=("k",), device_memory=("indices",),
              type_constraints={"T": GPU_NUM})
def _top_k(node, ctx):
    dt = _out(node, 0)
    it = _out(node, 1)
    xp = xp_of(node, ctx)
    key_dt = _F32 if dt == _F16 else None  # sort float16 on its exact float32 values

    def run(x, k):
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
        out_shape = x.shape[:-1] + (k,)
        host = isinstance(x, np.ndarray)  # int32 values live in host memory
        if k == 0 or x.size == 0:
            values = np.empty(out_shape, dt) if host else xp.empty(out_shape, dt)
            return values, xp.empty(out_shape, it)
        rows = _dev(xp, x).reshape(-1, n)
        key = rows if key_dt is None else rows.astype(key_dt)
        if k == 1:
            idx = xp.argmax(key, axis=1).reshape(-1, 1)  # the first of the maxima
        else:
            # descending, ties to the lower index: a stable ascending sort of the reversed
            # row, read backwards (NaN sorts last ascending, so first here, as on the CPU)
            order = xp.argsort(key[:, ::-1], axis=1, kind="stable")[:, ::-1]
            idx = (n - 1) - order[:, :k]
        values = xp.take_along_axis(rows, idx, axis=1).reshape(out_shape)
        indices = _as(idx, it).reshape(out_shape)
        if host:
            values = values.get()
        return values, indices

    return run


@register_gpu("InTopKV2", host_memory=("k",), device_memory=("targets",),
              type_constraints={"T": _INDEX_T})
def _in_top_k(node, ctx):
    xp = xp_of(node, ctx)

    def run(predictions, targets, k):
        if k.ndim != 0:
            raise _err(f"k must be 0-D, got shape {_shape_str(k.shape)}")
        if predictions.ndim != 2:
            raise _err("predictions must be 2-dimensional")
        if targets.ndim != 1:
            raise _err("targets must be 1-dimensional")
        batch, classes = predictions.shape
        if batch != targets.shape[0]:
            raise _err(f"First dimension of predictions {batch} must match length of targets "
                       f"{targets.shape[0]}")
        k = int(k)
        if classes == 0 or batch == 0:
            return (xp.zeros((batch,), np.bool_),)
        valid = (targets >= 0) & (targets < classes)
        t = xp.where(valid, targets, 0).astype(np.int64).reshape(batch, 1)
        target_pred = xp.take_along_axis(predictions, t, axis=1)
        more = xp.count_nonzero(predictions > target_pred, axis=1)
        ok = valid & xp.isfinite(predictions).all(axis=1) & (more < k)
        return (ok,)

    return run


# --- FusedBatchNorm ---------------------------------------------------------------------------
_BN_T = {
    "FusedBatchNorm": [dtypes.float32],
    "FusedBatchNormV2": [dtypes.float16, dtypes.float32],
    "FusedBatchNormV3": [dtypes.float16, dtypes.float32],
}


class _BNLayout:
    """Channel axis and per-channel sums (accumulated in float64, rounded to float32 once, as
    on the CPU) of a 4-D or 5-D tensor in NHWC-like or NCHW-like layout."""

    __slots__ = ("channels_first",)

    def __init__(self, data_format):
        self.channels_first = data_format in (b"NCHW", b"NCDHW")

    def axis(self, ndim):
        return 1 if self.channels_first else ndim - 1

    def bshape(self, ndim, c):
        if self.channels_first:
            return (1, c) + (1,) * (ndim - 2)
        return (c,)

    def sum(self, a, c):
        if self.channels_first:
            r = a.reshape(a.shape[0], c, -1).sum(axis=(0, 2), dtype=_F64)
        else:
            r = a.reshape(-1, c).sum(axis=0, dtype=_F64)
        return r.astype(_F32)


def _bn_check_common(scale, c):
    if scale.size != c:
        raise _err("scale must have the same number of elements as the channels of x, got "
                   f"{scale.size} and {c}")


@register_gpu(list(_BN_T), type_constraints={"T": _BN_T["FusedBatchNormV2"],
                                             "U": [dtypes.float32]})
def _fused_batch_norm(node, ctx):
    t_dt = _out(node, 0)
    u = _F32
    xp = xp_of(node, ctx)
    v3 = node.op == "FusedBatchNormV3"
    eps = u.type(node.attr("epsilon", 1e-4))
    factor = u.type(node.attr("exponential_avg_factor", 1.0))
    training = bool(node.attr("is_training", True))
    layout = _BNLayout(node.attr("data_format", b"NHWC"))
    need_running = (not training) or factor != 1
    prefix = "When exponential_avg_factor != 1" if training else "When is_training=false"

    def run(x, scale, offset, mean, variance):
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
        extra = (xp.zeros((), u),) if v3 else ()
        if x.size == 0:
            return (xp.empty(x.shape, t_dt), xp.full(scale.shape, np.nan, u),
                    xp.full(scale.shape, np.nan, u), xp.zeros(scale.shape, u),
                    xp.zeros(scale.shape, u)) + extra
        bshape = layout.bshape(x.ndim, c)
        xu = _as(x, u)
        if training:
            n = x.size // c
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
            return (_as(y, t_dt), _as(run_mean, u), _as(run_var, u), batch_mean,
                    batch_var) + extra
        mul = (u.type(1) / xp.sqrt(variance + eps)) * scale
        y = xu - mean.reshape(bshape)
        y *= mul.reshape(bshape)
        y += offset.reshape(bshape)
        # TF leaves reserve_space_1/2 uninitialized in inference mode: zeros here, as on the CPU
        return (_as(y, t_dt), mean.astype(u), variance.astype(u), xp.zeros(c, u),
                xp.zeros(c, u)) + extra

    return run


_BNG_T = {
    "FusedBatchNormGrad": [dtypes.float32],
    "FusedBatchNormGradV2": [dtypes.float16, dtypes.float32],
    "FusedBatchNormGradV3": [dtypes.float16, dtypes.float32],
}


@register_gpu(list(_BNG_T), type_constraints={"T": _BNG_T["FusedBatchNormGradV2"],
                                              "U": [dtypes.float32]})
def _fused_batch_norm_grad(node, ctx):
    t_dt = _out(node, 0)
    u = _F32
    xp = xp_of(node, ctx)
    eps = u.type(node.attr("epsilon", 1e-4))
    training = bool(node.attr("is_training", True))
    layout = _BNLayout(node.attr("data_format", b"NHWC"))

    def run(dy, x, scale, saved_mean, saved_var, *reserve_space_3):
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
        placeholders = (xp.empty((0,), u), xp.empty((0,), u))
        if x.size == 0:
            return (xp.empty(x.shape, t_dt), xp.zeros(scale.shape, u),
                    xp.zeros(scale.shape, u)) + placeholders
        if not training and layout.channels_first:
            raise _err("The implementation of FusedBatchNormGrad with is_training=False only "
                       "support NHWC tensor format for now.")
        bshape = layout.bshape(x.ndim, c)
        dyu = _as(dy, u)
        coef0 = u.type(1) / xp.sqrt(saved_var + eps)
        centered = _as(x, u) - saved_mean.reshape(bshape)
        offset_bp = layout.sum(dyu, c)
        buf = xp.multiply(dyu, centered)
        dy_xc = layout.sum(buf, c)
        scale_bp = dy_xc * coef0
        if training:
            n = x.size // c
            inv = u.type(1.0) / u.type(n)
            coef1 = (scale * coef0).reshape(bshape)
            coef2 = (coef0 * coef0 * (dy_xc / u.type(n))).reshape(bshape)
            centered *= coef2
            r = xp.subtract(dyu, (offset_bp * inv).reshape(bshape), out=buf)
            r -= centered
            r *= coef1
        else:
            r = xp.multiply(dyu, (coef0 * scale).reshape(bshape), out=buf)
        return (_as(r, t_dt), _as(scale_bp, u), _as(offset_bp, u)) + placeholders

    return run
