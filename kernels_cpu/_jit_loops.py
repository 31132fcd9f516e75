"""The numba loops of ``_jit`` (imported only when they are first needed: importing numba
takes about half a second)."""

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)


@_jit
def maxpool_nhwc(x, kh, kw, sh, sw, pt, pl, low, y):
    """y[b, i, j, c]: the maximum of window (i, j)'s in-bounds elements, starting from
    ``low`` and replaced only by a strictly greater element (NaN never is; of 0.0 and -0.0
    the first stays): TF's MaxPool rule."""
    n, h, w, c = x.shape
    oh, ow = y.shape[1], y.shape[2]
    for b in range(n):
        for i in range(oh):
            h0 = i * sh - pt
            for j in range(ow):
                w0 = j * sw - pl
                yr = y[b, i, j]
                for ch in range(c):
                    yr[ch] = low
                for di in range(kh):
                    hh = h0 + di
                    if hh < 0 or hh >= h:
                        continue
                    for dj in range(kw):
                        ww = w0 + dj
                        if ww < 0 or ww >= w:
                            continue
                        xr = x[b, hh, ww]
                        for ch in range(c):
                            v = xr[ch]
                            if v > yr[ch]:
                                yr[ch] = v

@_jit
def maxpool_2x2_nhwc(x, low, y):
    """maxpool_nhwc for 2x2 windows at stride 2 that all lie inside x (no padding): the same
    rule (from ``low``, a tap replaces only when strictly greater) with the four taps of a
    channel in registers, so that LLVM vectorizes over the channels (2-3x the general loop)."""
    n = x.shape[0]
    c = x.shape[3]
    oh, ow = y.shape[1], y.shape[2]
    for b in range(n):
        for i in range(oh):
            r0 = x[b, 2 * i]
            r1 = x[b, 2 * i + 1]
            for j in range(ow):
                a0 = r0[2 * j]
                a1 = r0[2 * j + 1]
                a2 = r1[2 * j]
                a3 = r1[2 * j + 1]
                yr = y[b, i, j]
                for ch in range(c):
                    m = low
                    v = a0[ch]
                    m = v if v > m else m
                    v = a1[ch]
                    m = v if v > m else m
                    v = a2[ch]
                    m = v if v > m else m
                    v = a3[ch]
                    m = v if v > m else m
                    yr[ch] = m


@_jit
def maxpool_2x2_grad(x, g, t, relu, dx, add, sums):
    """MaxPoolGrad (with ``relu``: then ReluGrad with features ``x``) for 2x2 windows at stride
    2 that lie inside x, image by image, in passes that LLVM vectorizes over the channels (one
    loop that reads four x rows and g while it stores four dx rows stays scalar: too many
    pairs of arrays to check for overlap). First, per window and channel, the tap (0-3,
    row-major) that MaxPoolGrad's rule picks (the first, replaced by a later one only when
    strictly greater: a NaN first stays), plus 4 when the picked element is > 0, into the
    image's scratch ``t`` (oh, ow, c). Then dx's elements under the windows: g where the tap
    is picked, else 0; with ``relu`` times 1 where x > 0, else 0 (ReluGrad's mask: NaN and
    inf gradients times 0 stay NaN). Only the picked element can be nonzero, and whether it
    is > 0 is the bit in ``t``: x is read once (measured: the CNN's first pool gradient 0.65 ->
    0.50 ms on one thread, with its bias sums). With ``add``, each window's picked value is
    added to ``sums`` (a row per image: (n, c), zeroed; else unused), per channel: the
    BiasAddGrad of dx (its other elements are 0)."""
    n = x.shape[0]
    c = x.shape[3]
    oh, ow = t.shape[0], t.shape[1]
    zero = dx.dtype.type(0)
    one = dx.dtype.type(1)
    for b in range(n):
        for i in range(oh):
            r0 = x[b, 2 * i]
            r1 = x[b, 2 * i + 1]
            for j in range(ow):
                a0 = r0[2 * j]
                a1 = r0[2 * j + 1]
                a2 = r1[2 * j]
                a3 = r1[2 * j + 1]
                tr = t[i, j]
                for ch in range(c):
                    m = a0[ch]
                    k = np.uint8(0)
                    v = a1[ch]
                    k = np.uint8(1) if v > m else k
                    m = v if v > m else m
                    v = a2[ch]
                    k = np.uint8(2) if v > m else k
                    m = v if v > m else m
                    v = a3[ch]
                    k = np.uint8(3) if v > m else k
                    m = v if v > m else m
                    tr[ch] = k + (np.uint8(4) if m > zero else np.uint8(0))
        for i in range(oh):
            for di in range(2):
                dr = dx[b, 2 * i + di]
                for j in range(ow):
                    gr = g[b, i, j]
                    tr = t[i, j]
                    for dj in range(2):
                        tap = np.uint8(2 * di + dj)
                        dv = dr[2 * j + dj]
                        if relu:
                            for ch in range(c):
                                k = tr[ch]
                                dv[ch] = ((gr[ch] if (k & np.uint8(3)) == tap else zero)
                                          * (one if k >= np.uint8(4) else zero))
                        else:
                            for ch in range(c):
                                dv[ch] = gr[ch] if (tr[ch] & np.uint8(3)) == tap else zero
        if add:  # a window's elements other than the picked one are 0: add the picked ones
            sr = sums[b]
            for i in range(oh):
                for j in range(ow):
                    gr = g[b, i, j]
                    tr = t[i, j]
                    if relu:
                        for ch in range(c):
                            sr[ch] += gr[ch] * (one if tr[ch] >= np.uint8(4) else zero)
                    else:
                        for ch in range(c):
                            sr[ch] += gr[ch]


@_jit
def maxpool_grad_nhwc(x, g, kh, kw, sh, sw, pt, pl, accumulate, relu, dx):
    """Each window's gradient g[b, i, j, c] to its argmax by TF's rule: the first in-bounds
    element (row-major), replaced by a later one only when strictly greater (a NaN first
    element stays). With ``accumulate`` (overlapping windows) dx, zeroed by the caller,
    is added to; without, every element of the windows is written (0 where not the argmax)
    and elements outside every window are left to the caller. With ``relu`` (MaxPoolGrad fused
    with the ReluGrad whose features are ``x``) every element written is then multiplied by
    1 where x > 0, else 0, as ReluGrad does (NaN and inf gradients times 0 stay NaN)."""
    n, h, w, c = x.shape
    oh, ow = g.shape[1], g.shape[2]
    zero = dx.dtype.type(0)
    one = dx.dtype.type(1)
    best = np.empty(c, x.dtype)
    idx = np.empty(c, np.int64)
    for b in range(n):
        for i in range(oh):
            h0 = i * sh - pt
            for j in range(ow):
                w0 = j * sw - pl
                first = True
                for di in range(kh):
                    hh = h0 + di
                    if hh < 0 or hh >= h:
                        continue
                    for dj in range(kw):
                        ww = w0 + dj
                        if ww < 0 or ww >= w:
                            continue
                        xr = x[b, hh, ww]
                        t = di * kw + dj
                        if first:
                            for ch in range(c):
                                best[ch] = xr[ch]
                                idx[ch] = t
                            first = False
                        else:
                            for ch in range(c):
                                v = xr[ch]
                                if v > best[ch]:
                                    best[ch] = v
                                    idx[ch] = t
                if first:
                    continue
                gr = g[b, i, j]
                for di in range(kh):
                    hh = h0 + di
                    if hh < 0 or hh >= h:
                        continue
                    for dj in range(kw):
                        ww = w0 + dj
                        if ww < 0 or ww >= w:
                            continue
                        t = di * kw + dj
                        dr = dx[b, hh, ww]
                        if accumulate:
                            for ch in range(c):
                                dr[ch] += gr[ch] if idx[ch] == t else zero
                        elif relu:
                            xr = x[b, hh, ww]
                            for ch in range(c):
                                dr[ch] = ((gr[ch] if idx[ch] == t else zero)
                                          * (one if xr[ch] > zero else zero))
                        else:
                            for ch in range(c):
                                dr[ch] = gr[ch] if idx[ch] == t else zero
    if relu and accumulate:
        for b in range(n):
            for hh in range(h):
                for ww in range(w):
                    for ch in range(c):
                        dx[b, hh, ww, ch] *= one if x[b, hh, ww, ch] > zero else zero


@_jit
def relu_grad(g, f, out, zero, one):
    """out = g * (1 if f > 0 else 0) over 1-D arrays: TF's ReluGrad, NaN and inf gradients
    times 0 included (no fastmath: x * 0 must stay NaN for NaN and inf x)."""
    for i in range(g.shape[0]):
        out[i] = g[i] * (one if f[i] > zero else zero)


@_jit
def bias_relu(x, bt, relu):
    """x (rows, C), C-contiguous, += the bias in place; then, with ``relu``, every element
    below 0 becomes 0 (NaN and -0.0 stay, as TF's max(x, 0) keeps them). One pass over x as
    one flat run against ``bt``, the bias repeated to a length that is a multiple of C (rows
    of 16 channels are too short a loop to vectorize well: measured 2.7x)."""
    f = x.reshape(-1)
    n = f.shape[0]
    span = bt.shape[0]
    whole = n - n % span
    zero = x.dtype.type(0)
    for i0 in range(0, whole, span):
        v = f[i0:i0 + span]
        if relu:
            for j in range(span):
                t = v[j] + bt[j]
                v[j] = zero if t < zero else t
        else:
            for j in range(span):
                v[j] = v[j] + bt[j]
    for j in range(n - whole):
        t = f[whole + j] + bt[j]
        f[whole + j] = zero if relu and t < zero else t


# The elementwise loops take their arrays first, then scalars (_jit._elementwise slices the
# arrays). In-place forms are loops of their own: LLVM vectorizes a loop over distinct arrays after a
# runtime check that they do not overlap, and takes the scalar loop when out is an input.
@_jit
def relu_grad_inplace(g, f, zero, one):
    """g *= (1 if f > 0 else 0) over 1-D arrays (relu_grad into g)."""
    for i in range(g.shape[0]):
        g[i] = g[i] * (one if f[i] > zero else zero)


@_jit
def sgd(v, g, out, alpha):
    """out = v - g * alpha over 1-D arrays: TF's ApplyGradientDescent, the product rounded
    before the difference as Eigen's ``var -= grad * lr`` rounds it."""
    for i in range(v.shape[0]):
        out[i] = v[i] - g[i] * alpha


@_jit
def sgd_inplace(v, g, alpha):
    """v = v - g * alpha over 1-D arrays (sgd into v)."""
    for i in range(v.shape[0]):
        v[i] = v[i] - g[i] * alpha


@_jit
def momentum(v, acc, g, out_v, out_acc, lr, mom, nesterov):
    """TF's ApplyMomentum over 1-D arrays, each product and sum rounded as its Eigen
    expression rounds them: acc' = acc * mom + g; v' = v - acc' * lr, or with Nesterov
    v - (g * lr + acc' * mom * lr). Outputs may be the inputs (then LLVM's overlap check sends
    the loop to its scalar form: momentum_inplace is the vector one)."""
    for i in range(v.shape[0]):
        a = acc[i] * mom + g[i]
        out_acc[i] = a
        if nesterov:
            out_v[i] = v[i] - (g[i] * lr + a * mom * lr)
        else:
            out_v[i] = v[i] - a * lr


@_jit
def momentum_inplace(v, acc, g, lr, mom, nesterov):
    """momentum with the outputs written over v and acc."""
    for i in range(v.shape[0]):
        a = acc[i] * mom + g[i]
        acc[i] = a
        if nesterov:
            v[i] = v[i] - (g[i] * lr + a * mom * lr)
        else:
            v[i] = v[i] - a * lr


@_jit
def adam(v, m, s, g, out_v, out_m, out_s, alpha, omb1, omb2, b1, eps, nesterov):
    """TF's ApplyAdam over 1-D arrays (``v`` the variable, ``m`` and ``s`` its moments), each
    operation rounded as state_ops._adam_to's numpy passes round it: m' = m + (g - m) *
    (1 - beta1); s' = s + (g * g - s) * (1 - beta2); v' = v - (m' * alpha) / (sqrt(s') + eps),
    or with Nesterov v - ((g * (1 - beta1) + m' * beta1) * alpha) / (sqrt(s') + eps).
    Outputs may be the inputs (adam_inplace is the vector form of that case)."""
    for i in range(v.shape[0]):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * omb1
        si = s[i] + (gi * gi - s[i]) * omb2
        out_m[i] = mi
        out_s[i] = si
        if nesterov:
            num = (gi * omb1 + mi * b1) * alpha
        else:
            num = mi * alpha
        out_v[i] = v[i] - num / (np.sqrt(si) + eps)


@_jit
def adam_inplace(v, m, s, g, alpha, omb1, omb2, b1, eps, nesterov):
    """adam with the outputs written over v, m and s."""
    for i in range(v.shape[0]):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * omb1
        si = s[i] + (gi * gi - s[i]) * omb2
        m[i] = mi
        s[i] = si
        if nesterov:
            num = (gi * omb1 + mi * b1) * alpha
        else:
            num = mi * alpha
        v[i] = v[i] - num / (np.sqrt(si) + eps)


@_jit
def sparse_xent(x, labels, loss, back, zero):
    """SparseSoftmaxCrossEntropyWithLogits of a C-contiguous (batch, classes) ``x`` with
    in-range ``labels``, as the numpy kernel computes it: per row the maximum (NaN if any
    element is NaN), e = exp(x - max), loss = log(sum e) - (x[label] - max), backprop = e /
    sum e, less 1 at the label."""
    n, k = x.shape
    for i in range(n):
        xr = x[i]
        br = back[i]
        m = xr[0]
        for j in range(1, k):
            v = xr[j]
            if not v <= m and m == m:  # greater, or the first NaN (which then stays)
                m = v
        s = zero
        for j in range(k):
            e = np.exp(xr[j] - m)
            br[j] = e
            s += e
        lab = labels[i]
        loss[i] = np.log(s) - (xr[lab] - m)
        for j in range(k):
            br[j] = br[j] / s
        br[lab] -= 1


@_jit
def address(a):
    """The address of ``a``'s first element (_jit.empty_aligned)."""
    return a.ctypes.data
