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


def _compile():
    from mgrt.kernels_cpu import _jit_loops
    _state["maxpool_nhwc"] = _jit_loops.maxpool_nhwc
    _state["maxpool_2x2_nhwc"] = _jit_loops.maxpool_2x2_nhwc
    _state["maxpool_2x2_argmax"] = _jit_loops.maxpool_2x2_argmax
    _state["maxpool_2x2_scatter"] = _jit_loops.maxpool_2x2_scatter
    _state["maxpool_grad_nhwc"] = _jit_loops.maxpool_grad_nhwc
    _state["relu_grad"] = _jit_loops.relu_grad
    _state["bias_relu"] = _jit_loops.bias_relu
    _state["sgd"] = _jit_loops.sgd
    _state["sgd_inplace"] = _jit_loops.sgd_inplace
    _state["momentum"] = _jit_loops.momentum
    _state["momentum_inplace"] = _jit_loops.momentum_inplace
    _state["relu_grad_inplace"] = _jit_loops.relu_grad_inplace


def _native(x):
    """``x`` C-contiguous in a dtype numba compiles for (float16 widens to float32: exact)."""
    if x.dtype == np.float16:
        return x.astype(np.float32)
    return np.ascontiguousarray(x)


def maxpool_nhwc(x, ks, st, geo, low):
    """TF's MaxPool of C-contiguous NHWC ``x`` (window ``ks``, strides ``st`` in NHWC order,
    ``geo`` = (oh, ow, pt, pb, pl, pr))."""
    x = _native(x)
    oh, ow, pt, _, pl, _ = geo
    y = np.empty((x.shape[0], oh, ow, x.shape[3]), x.dtype)
    if y.size:
        low = x.dtype.type(low)
        if (ks[1] == ks[2] == st[1] == st[2] == 2 and pt == pl == 0
                and 2 * oh <= x.shape[1] and 2 * ow <= x.shape[2]):
            loop2 = _state["maxpool_2x2_nhwc"]
            _team.split(lambda b0, b1: loop2(x[b0:b1], low, y[b0:b1]), x.shape[0],
                        x.nbytes + y.nbytes)
            return y
        loop = _state["maxpool_nhwc"]
        _team.split(lambda b0, b1: loop(x[b0:b1], ks[1], ks[2], st[1], st[2], pt, pl, low,
                                        y[b0:b1]),
                    x.shape[0], x.nbytes + y.nbytes)
    return y


def maxpool_grad_nhwc(x, g, ks, st, geo, gd, relu=False):
    """TF's MaxPoolGrad (argmax rule) of C-contiguous NHWC ``x`` and ``g``, in dtype ``gd``;
    with ``relu``, followed by TF's ReluGrad with features ``x`` (in the same pass)."""
    x, g = _native(x), _native(g)
    oh, ow, pt, _, pl, _ = geo
    n, h, w, c = x.shape
    kh, kw, sh, sw = ks[1], ks[2], st[1], st[2]
    overlap = kh > sh or kw > sw
    # windows that do not overlap write every element they cover; the rest must be zero
    covers = (not overlap and kh == sh and kw == sw and pt == 0 and pl == 0
              and oh * kh >= h and ow * kw >= w)
    dx = np.empty(x.shape, gd) if covers else np.zeros(x.shape, gd)
    if dx.size and g.size and kh == kw == sh == sw == 2 and pt == pl == 0 \
            and 2 * oh <= h and 2 * ow <= w:
        arg, scatter = _state["maxpool_2x2_argmax"], _state["maxpool_2x2_scatter"]
        t = np.empty(g.shape, np.uint8)

        def images(b0, b1):
            arg(x[b0:b1], t[b0:b1])
            scatter(x[b0:b1], g[b0:b1], t[b0:b1], relu, dx[b0:b1])
        _team.split(images, n, x.nbytes + g.nbytes + dx.nbytes)
    elif dx.size and g.size:
        loop = _state["maxpool_grad_nhwc"]
        _team.split(lambda b0, b1: loop(x[b0:b1], g[b0:b1], kh, kw, sh, sw, pt, pl, overlap,
                                        relu, dx[b0:b1]),
                    n, x.nbytes + g.nbytes + dx.nbytes)
    return dx


def relu_grad(g, f, out=None):
    """TF's ReluGrad, g * (f > 0) (NaN and inf times 0 are NaN), of same-shape C-contiguous
    float32 or float64 arrays, in one pass; into ``out`` when given (it may be ``g``)."""
    g1, f1 = g.reshape(-1), f.reshape(-1)
    zero, one = g.dtype.type(0), g.dtype.type(1)
    if out is g:
        loop = _state["relu_grad_inplace"]
        _team.split(lambda a, b: loop(g1[a:b], f1[a:b], zero, one), g1.shape[0], 3 * g.nbytes)
        return g
    if out is None:
        out = np.empty(g.shape, g.dtype)
    o1 = out.reshape(-1)
    loop = _state["relu_grad"]
    _team.split(lambda a, b: loop(g1[a:b], f1[a:b], zero, one, o1[a:b]), g1.shape[0],
                3 * out.nbytes)
    return out


def bias_relu(x, b, relu, team=True):
    """``x`` (rows, C), C-contiguous float32 or float64, plus ``b`` (C,) of its dtype in place,
    then the ReLU when ``relu``, in one pass (BiasAdd and Relu fused). On a team when big and
    ``team`` (False: on the calling thread, for a caller that is a team's item itself)."""
    loop = _state["bias_relu"]
    if team:
        _team.split(lambda a, c: loop(x[a:c], b, relu), x.shape[0], 2 * x.nbytes)
    else:
        loop(x, b, relu)


def sgd(var, g, alpha, out):
    """TF's ApplyGradientDescent, out = var - g * alpha (``alpha`` a scalar of their dtype), of
    same-shape C-contiguous float32 or float64 arrays, in one pass; ``out`` may be ``var``."""
    v1, g1 = var.reshape(-1), g.reshape(-1)
    if out is var:
        loop = _state["sgd_inplace"]
        _team.split(lambda a, b: loop(v1[a:b], g1[a:b], alpha), v1.shape[0], 3 * var.nbytes)
        return
    o1 = out.reshape(-1)
    loop = _state["sgd"]
    _team.split(lambda a, b: loop(v1[a:b], g1[a:b], alpha, o1[a:b]), v1.shape[0],
                3 * var.nbytes)


def momentum(var, acc, g, lr, mom, nesterov, out_var, out_acc):
    """TF's ApplyMomentum of same-shape C-contiguous float32 or float64 arrays (``lr``, ``mom``
    scalars of their dtype) into ``out_var`` and ``out_acc`` (either may be its input), in
    one pass."""
    v1, a1, g1 = var.reshape(-1), acc.reshape(-1), g.reshape(-1)
    if out_var is var and out_acc is acc:
        loop = _state["momentum_inplace"]
        _team.split(lambda a, b: loop(v1[a:b], a1[a:b], g1[a:b], lr, mom, nesterov),
                    v1.shape[0], 5 * var.nbytes)
        return
    ov, oa = out_var.reshape(-1), out_acc.reshape(-1)
    loop = _state["momentum"]
    _team.split(lambda a, b: loop(v1[a:b], a1[a:b], g1[a:b], lr, mom, nesterov, ov[a:b],
                                  oa[a:b]),
                v1.shape[0], 5 * var.nbytes)
