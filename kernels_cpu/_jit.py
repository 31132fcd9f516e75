"""numba-compiled CPU loops for kernels that numpy cannot do in one pass.

Max pooling and its gradient scan each window once per output element: numpy needs a pass
over the whole input per window tap (and several per tap for the gradient's argmax), numba one
pass in all (2-3x faster on the benchmark CNN's 2x2 pools). ReluGrad is one pass instead of
numpy's three (compare, cast, multiply). Over big arrays, inside a plan's hold, the loops run
on a thread team (_team.split: blocks of images or elements, one per core; the loops release
the GIL). The pooling loops run NHWC arrays of any real dtype (half types arrive as float32);
every loop compiles on first use, once per dtype, into numba's on-disk cache
(``cache=True``), so a later process loads them in milliseconds.

``enabled()`` says whether they are used: ``MGRT_CPU_JIT=0`` turns them off (the kernels then
take their numpy paths, which give the same results), and so does a numba that fails to
import. numba is imported only when a kernel that uses these loops is first built.
"""

import math
import os

import numpy as np

from mgrt.kernels_cpu import _team

_state = {}


def enabled():
    """Whether the numba loops are used (decided once per process)."""
    on = _state.get("on")
    if on is None:
        on = os.environ.get("MGRT_CPU_JIT", "1").strip().lower() not in ("0", "false", "no",
                                                                          "off")
        if on:
            try:
                _compile()
            except ImportError:
                on = False
        _state["on"] = on
    return on


_LOOPS = ("maxpool_nhwc", "maxpool_2x2_nhwc", "maxpool_2x2_grad",
          "maxpool_grad_nhwc", "relu_grad", "relu_grad_inplace", "bias_relu", "sgd",
          "sgd_inplace", "momentum", "momentum_inplace", "adam", "adam_inplace", "sparse_xent",
          "address")


def _compile():
    from mgrt.kernels_cpu import _jit_loops
    for name in _LOOPS:
        _state[name] = getattr(_jit_loops, name)


def _native(x):
    """``x`` C-contiguous in a dtype numba compiles for (float16 widens to float32: exact)."""
    if x.dtype == np.float16:
        return x.astype(np.float32)
    return np.ascontiguousarray(x)


_ALIGN = 64  # bytes: a cache line, and an AVX-512 vector


def empty_aligned(shape, dt):
    """An uninitialized C-contiguous array that starts on a cache line (numpy's own start
    16 bytes in): for outputs that the direct convolution loops (_gemm) read row by row as
    vectors, where a row split over two cache lines costs about a third more. (Called for
    every convolution: its buffer's address comes from a numba loop when they are on, 0.5 us,
    not ndarray.ctypes, 3-12 us.)"""
    dt = np.dtype(dt)
    shape = tuple(int(d) for d in shape)
    nbytes = math.prod(shape) * dt.itemsize
    buf = np.empty(nbytes + _ALIGN, np.uint8)
    start = -(_state["address"](buf) if enabled() else buf.ctypes.data) % _ALIGN
    return np.ndarray(shape, dt, buf, start)


def _tiles_2x2(ks, st, geo, shape):
    """Whether the windows are 2x2 at stride 2, unpadded, all inside the input (the 2x2 loops)."""
    oh, ow, pt, _, pl, _ = geo
    return (ks[1] == ks[2] == st[1] == st[2] == 2 and pt == pl == 0
            and 2 * oh <= shape[1] and 2 * ow <= shape[2])


def maxpool_nhwc(x, ks, st, geo, low):
    """TF's MaxPool of C-contiguous NHWC ``x`` (window ``ks``, strides ``st`` in NHWC order,
    ``geo`` = (oh, ow, pt, pb, pl, pr))."""
    x = _native(x)
    oh, ow, pt, _, pl, _ = geo
    y = np.empty((x.shape[0], oh, ow, x.shape[3]), x.dtype)
    if y.size:
        low = x.dtype.type(low)
        if _tiles_2x2(ks, st, geo, x.shape):
            loop2 = _state["maxpool_2x2_nhwc"]
            _team.split(lambda b0, b1: loop2(x[b0:b1], low, y[b0:b1]), x.shape[0],
                        x.nbytes + y.nbytes)
            return y
        loop = _state["maxpool_nhwc"]
        _team.split(lambda b0, b1: loop(x[b0:b1], ks[1], ks[2], st[1], st[2], pt, pl, low,
                                        y[b0:b1]),
                    x.shape[0], x.nbytes + y.nbytes)
    return y


def maxpool_grad_nhwc(x, g, ks, st, geo, gd, relu=False, bias=False):
    """TF's MaxPoolGrad (argmax rule) of C-contiguous NHWC ``x`` and ``g``, in dtype ``gd``;
    with ``relu``, followed by TF's ReluGrad with features ``x`` (in the same pass). With
    ``bias``: (dx, the sum of dx over all but the channel axis, in float64: BiasAddGrad),
    where the windows are 2x2 tiles summed in the same loop from the one value per window
    that can be nonzero (its other elements are 0), not from all of dx."""
    x, g = _native(x), _native(g)
    oh, ow, pt, _, pl, _ = geo
    n, h, w, c = x.shape
    kh, kw, sh, sw = ks[1], ks[2], st[1], st[2]
    overlap = kh > sh or kw > sw
    # windows that do not overlap write every element they cover; the rest must be zero
    covers = (not overlap and kh == sh and kw == sw and pt == 0 and pl == 0
              and oh * kh >= h and ow * kw >= w)
    dx = empty_aligned(x.shape, gd)  # out_backprop of the convolution below: _gemm's b
    if not covers:
        dx[...] = 0
    sums = None
    if dx.size and g.size and _tiles_2x2(ks, st, geo, x.shape):
        loop = _state["maxpool_2x2_grad"]
        sums = np.zeros((n if bias else 1, c), np.float64)

        def images(b0, b1):
            t = np.empty(g.shape[1:], np.uint8)  # one image's taps (cache-sized)
            loop(x[b0:b1], g[b0:b1], t, relu, dx[b0:b1], bias, sums[b0:b1] if bias else sums)
        _team.split(images, n, x.nbytes + g.nbytes + dx.nbytes)
    elif dx.size and g.size:
        loop = _state["maxpool_grad_nhwc"]
        _team.split(lambda b0, b1: loop(x[b0:b1], g[b0:b1], kh, kw, sh, sw, pt, pl, overlap,
                                        relu, dx[b0:b1]),
                    n, x.nbytes + g.nbytes + dx.nbytes)
    if not bias:
        return dx
    if sums is None:  # the other loops: a pass over dx
        sums = dx.reshape(-1, c).sum(axis=0, dtype=np.float64)
    else:
        sums = sums.sum(axis=0)
    return dx, sums


def _elementwise(name, arrays, scalars, work_bytes):
    """numba loop ``name`` over same-size C-contiguous ``arrays`` (flat views, in blocks on a
    team when ``work_bytes`` is big), then ``scalars``: loop(*array blocks, *scalars)."""
    loop = _state[name]
    if work_bytes < _team.SPLIT_MIN_BYTES:  # one call on this thread (the common small update)
        loop(*[x.reshape(-1) for x in arrays], *scalars)
        return
    flat = [x.reshape(-1) for x in arrays]
    _team.split(lambda a, b: loop(*[x[a:b] for x in flat], *scalars), flat[0].shape[0],
                work_bytes)


def relu_grad(g, f, out=None):
    """TF's ReluGrad, g * (f > 0) (NaN and inf times 0 are NaN), of same-shape C-contiguous
    float32 or float64 arrays, in one pass; into ``out`` when given (it may be ``g``)."""
    scalars = (g.dtype.type(0), g.dtype.type(1))
    if out is g:
        _elementwise("relu_grad_inplace", (g, f), scalars, 3 * g.nbytes)
        return g
    if out is None:
        out = np.empty(g.shape, g.dtype)
    _elementwise("relu_grad", (g, f, out), scalars, 3 * out.nbytes)
    return out


class BiasRelu:
    """A fused bias (and ReLU) epilogue: ``post(rows)`` adds ``bias`` to a C-contiguous
    (pixels, C) block in place, then takes the ReLU when ``relu`` (bias_relu on the calling
    thread). The direct convolution loops (_gemm) apply it themselves, to the sums before
    they are stored, with the same operations in the same order."""

    def __init__(self, bias, relu):
        self.bias, self.relu = np.ascontiguousarray(bias), bool(relu)
        self.tiled = _tiled(self.bias)

    def __call__(self, rows):
        bias_relu(rows, self.bias, self.relu, team=False, tiled=self.tiled)


_TILE = 256  # elements of the repeated bias that the bias_relu loop runs against


def _tiled(b):
    """``b`` repeated to at least _TILE elements (a whole number of times)."""
    return np.tile(b, max(1, -(-_TILE // max(1, b.shape[0]))))


def bias_relu(x, b, relu, team=True, tiled=None):
    """``x`` (rows, C), C-contiguous float32 or float64, plus ``b`` (C,) of its dtype in place,
    then the ReLU when ``relu``, in one pass (BiasAdd and Relu fused). On a team when big and
    ``team`` (False: on the calling thread, for a caller that is a team's item itself).
    ``tiled``: ``_tiled(b)``, when the caller has it."""
    if x.size == 0:
        return
    loop = _state["bias_relu"]
    bt = _tiled(b) if tiled is None else tiled
    if team:
        _team.split(lambda a, c: loop(x[a:c], bt, relu), x.shape[0], 2 * x.nbytes)
    else:
        loop(x, bt, relu)


def sgd(var, g, alpha, out):
    """TF's ApplyGradientDescent, out = var - g * alpha (``alpha`` a scalar of their dtype), of
    same-shape C-contiguous float32 or float64 arrays, in one pass; ``out`` may be ``var``."""
    if out is var:
        _elementwise("sgd_inplace", (var, g), (alpha,), 3 * var.nbytes)
    else:
        _elementwise("sgd", (var, g, out), (alpha,), 3 * var.nbytes)


def momentum(var, acc, g, lr, mom, nesterov, out_var, out_acc):
    """TF's ApplyMomentum of same-shape C-contiguous float32 or float64 arrays (``lr``, ``mom``
    scalars of their dtype) into ``out_var`` and ``out_acc`` (either may be its input), in
    one pass."""
    scalars = (lr, mom, nesterov)
    if out_var is var and out_acc is acc:
        _elementwise("momentum_inplace", (var, acc, g), scalars, 5 * var.nbytes)
    else:
        _elementwise("momentum", (var, acc, g, out_var, out_acc), scalars, 5 * var.nbytes)


def adam(var, m, v, g, alpha, omb1, omb2, b1, eps, nesterov, out_var, out_m, out_v):
    """TF's ApplyAdam of same-shape C-contiguous float32 or float64 arrays (the scalars of
    their dtype: ``alpha`` the step's learning rate, ``omb1`` = 1 - beta1, ``omb2`` = 1 -
    beta2) into ``out_var``, ``out_m`` and ``out_v`` (each may be its input), in one pass."""
    scalars = (alpha, omb1, omb2, b1, eps, nesterov)
    if out_var is var and out_m is m and out_v is v:
        _elementwise("adam_inplace", (var, m, v, g), scalars, 7 * var.nbytes)
    else:
        _elementwise("adam", (var, m, v, g, out_var, out_m, out_v), scalars, 7 * var.nbytes)


def sparse_xent(x, labels):
    """SparseSoftmaxCrossEntropyWithLogits of a C-contiguous float32 or float64 (batch,
    classes) ``x`` (classes >= 1) and in-range int32 or int64 ``labels`` in one pass (nn_ops has
    checked them): (loss, backprop) of x's dtype."""
    loss = np.empty(x.shape[0], x.dtype)
    back = np.empty(x.shape, x.dtype)
    _state["sparse_xent"](x, labels, loss, back, x.dtype.type(0))
    return loss, back
