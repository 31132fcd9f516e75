"""Convolution, pooling and resizing kernels on the CPU (numpy).

Ops: Conv2D, Conv2DBackpropInput, Conv2DBackpropFilter; DepthwiseConv2dNative and its two
backprops; MaxPool, MaxPoolV2, AvgPool, MaxPoolGrad, MaxPoolGradV2, AvgPoolGrad,
MaxPoolGradGrad, MaxPoolGradGradV2, MaxPoolWithArgmax, MaxPoolGradWithArgmax,
MaxPoolGradGradWithArgmax; ResizeBilinear, ResizeNearestNeighbor, ResizeBilinearGrad,
ResizeNearestNeighborGrad.

Semantics are TensorFlow's CPU kernels' (checked against recordings of TensorFlow 2.21 in
``tests/fixtures/ops/conv.*``):

- Convolutions: chunked im2col: the windows of a chunk of output rows (a strided view of the
  padded NHWC input) are copied into one scratch buffer of a few MiB and multiplied by the
  filter matrix in one BLAS matmul per chunk (a 1x1 convolution is one plain matmul). The
  filter gradient sums the chunks' patch matrices transposed times out_backprop. The input
  gradient is, per phase of the stride (input rows = a mod stride), a stride-1 convolution of
  out_backprop with that phase's filter taps flipped and transposed; with fewer than 8 input
  channels it is col2im instead (filter matrix times out_backprop, scattered back per tap
  over channel planes). Stride-1 convolutions whose window rows are short (kw * C <= 16: one
  or two input channels) go over "wide rows" instead (forward and filter gradient): the
  zero-padded input as channel planes, every position of the padded width computed (the extra
  columns dropped, or multiplied by zeros), so the patch matrix is a copy of long runs.
  Depthwise convolutions (no reduction over channels) and pooling are
  elementwise passes per window tap over strided views, by cache-sized blocks of output rows
  (optionally on a thread team: MGRT_CONV_THREADS, see "window taps" below).
  Output sizes, SAME padding (the extra row/column goes after) and the "Computed output size
  would be negative" rule (C++ truncating division) are TF's. Grouped convolutions (input
  depth a multiple of the filter's; one unchunked batched matmul over the groups) work forward
  and backward, for every dtype; so do dilations (TF's Eigen backprops refuse groups and
  dilations, and 2.21's oneDNN depthwise backprops get dilations wrong).
- data_format NCHW: computed for every dtype (convolutions copy the input to NHWC while padding
  it and write NCHW output rows from the matmul's; pooling works on NCHW directly; depthwise
  convolutions read NCHW through transposed views). TF 2.21's CPU kernels accept NCHW only
  where oneDNN takes the op (float32/bfloat16 convolutions, MaxPool, AvgPool, AvgPoolGrad) and
  refuse it elsewhere; mgrt does better there. NCHW_VECT_C (a GPU int8 layout) is refused
  (UnimplementedError).
- float16 and bfloat16 compute in float32 and round once at the end (TF's Eigen kernels
  accumulate some float16 sums in float16; results agree to float16's precision). int32 Conv2D
  (and its input backprop) wrap on overflow as TF's do.
- MaxPool: the maximum over the window's in-bounds elements, starting from the dtype's lowest
  finite value, replaced only by a strictly greater element: NaN is skipped (an all-NaN or
  all -inf window gives the lowest value, as TF's CPU kernel does) and of equal values (0.0 and
  -0.0) the first stays. TF 2.21's oneDNN bfloat16 MaxPool starts from -inf instead (all-NaN
  and all -inf windows give -inf there); mgrt keeps the one rule for every dtype.
  MaxPoolGrad, MaxPoolWithArgmax and MaxPoolGradWithArgmax use TF's argmax rule instead: the
  window's first in-bounds element (row-major scan), replaced by a later one only when strictly
  greater, so the first of tied maxima wins and a NaN in the first slot sticks.
  MaxPoolGradGrad routes to the first input element equal to ``orig_output`` (0 where none
  is). MaxPoolGrad* recompute the argmax from ``orig_input`` (``orig_output`` is not used);
  for windows that tile the input (ksize == strides, no padding before: the usual 2x2/2) each
  tap is one strided view of a (N, OH, kh, OW, kw, C) reshape and the gradient is written
  tap by tap, every element once (``_maxpool_grad_tiles``, 3-4x faster than the general pass);
  MaxPool's forward pass takes such windows the same way (``_maxpool_tiles``: fmax over the
  taps, and one pass over the input for a -0.0 only when some maximum is zero, as after ReLU).
  Depth pooling takes numpy's max (NaN propagates; not recorded against TF).
- MaxPool/MaxPoolV2 pool across depth when ksize is 1 in H and W (TF's depthwise max pooling);
  AvgPool refuses depth pooling (TF 2.21's oneDNN float32 AvgPool returns an empty tensor there;
  its Eigen kernel raises the UnimplementedError that mgrt raises for every dtype).
- MaxPoolWithArgmax: argmax is ``(y * width + x) * channels + c`` (plus
  ``b * height * width * channels`` with include_batch_in_index). MaxPoolGradWithArgmax checks
  the indexes (TF aborts the process on a bad one); MaxPoolGradGradWithArgmax has no CPU kernel
  in TF (GPU only); mgrt has one.
- Resize*: TF's float32 source coordinates (legacy ``x * scale``, align_corners scale
  ``(in - 1) / (out - 1)``, half_pixel_centers ``(x + 0.5) * scale - 0.5`` for bilinear and
  ``(x + 0.5) * scale`` for nearest), TF's lerp formula in float32, roundf (half away from zero)
  for align_corners nearest. ResizeBilinearGrad and ResizeNearestNeighborGrad scatter-add
  with the same weights and indexes.
- Errors for bad input are InvalidArgumentError (UnimplementedError where TF's is) with TF's
  message; the executor adds the node's name, op and input shapes. Attr errors (strides or
  dilations in the batch/depth dimensions, a pooling window over the batch) are raised when
  the kernel is built.

Host memory: ``input_sizes`` (Conv2DBackpropInput, DepthwiseConv2dNativeBackpropInput),
``filter_sizes`` (the *BackpropFilter ops), ``ksize`` and ``strides`` (the *V2 pooling ops),
``orig_input_shape`` (AvgPoolGrad) and ``size`` (ResizeBilinear, ResizeNearestNeighbor,
ResizeNearestNeighborGrad). No output aliases an input.
"""

import math

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided

from mgrt.runtime import dtypes
from mgrt.runtime.errors import InvalidArgumentError, UnimplementedError
from mgrt.runtime import kernel_registry
from mgrt.runtime.kernel_registry import register, register_fused
from mgrt.kernels_cpu import _gemm, _jit, _slide, _team, nn_ops
from mgrt.kernels_cpu._dtypes import (BF16 as _BF16, F16 as _F16, F32 as _F32,  # noqa: F401
                                      F64 as _F64, FLOAT_T as _FLOAT_T, HALF_T as _HALF_T,
                                      INDEX_T as _INDEX_T, INT_T as _INT_T, LOW as _LOW,
                                      REAL_T as _REAL_T)


_CONV_T = _FLOAT_T + [dtypes.int32]

_TO_NHWC = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)


# --- small helpers ----------------------------------------------------------------------------
def _quiet(fn):
    """``fn`` with numpy's floating-point warnings off: inf - inf, 0 * inf and NaN inputs give
    NaN as in TF, silently."""
    def run(*args):
        with np.errstate(all="ignore"):
            return fn(*args)
    return run


def _err(msg):
    return InvalidArgumentError(None, None, msg)


def _unimpl(msg):
    return UnimplementedError(None, None, msg)


def _shp(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _str(v, default):
    if v is None:
        return default
    return v.decode() if isinstance(v, bytes) else str(v)


def _out(node, i=0):
    return np.dtype(node.output_types[i].base_dtype.as_numpy_dtype)


def _cdt(dt):
    """The dtype to compute in: float32 for the half types."""
    return _F32 if dt in _LOW else dt


def _as(a, dt):
    return a if a.dtype == dt else a.astype(dt)


def _lowest(dt):
    dt = np.dtype(dt)
    if dt.kind == "f" or dt == _BF16:
        return ml_dtypes.finfo(dt).min if dt == _BF16 else np.finfo(dt).min
    return np.iinfo(dt).min


def _data_format(node):
    fmt = _str(node.attr("data_format"), "NHWC")
    if fmt not in ("NHWC", "NCHW"):
        raise _unimpl(f"{node.op}: data_format {fmt} is not supported on the CPU "
                      "(NCHW_VECT_C is a GPU layout)")
    return fmt


def _trunc_div(a, b):
    return a // b if a >= 0 else -((-a) // b)


def _out_size(n, k, s, d, padding, pb=0, pa=0):
    """TF's GetWindowedOutputSizeVerbose: (output size, pad before, pad after)."""
    eff = (k - 1) * d + 1
    if padding == "SAME":
        out = (n + s - 1) // s
        need = max(0, (out - 1) * s + eff - n)
        return out, need // 2, need - need // 2
    if padding == "VALID":
        pb = pa = 0
    out = _trunc_div(n + pb + pa - eff + s, s)
    if out < 0:
        raise _err(f"Computed output size would be negative: {out} [input_size: {n}, "
                   f"effective_filter_size: {eff}, stride: {s}]")
    return out, pb, pa


def _pad(x, pt, pb, pl, pr, value=0):
    """x (NHWC) padded in H and W; x itself when no padding is needed."""
    if pt == pb == pl == pr == 0:
        return x
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), mode="constant", constant_values=value)


def _patches(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    """A read-only (N, oh, ow, kh, kw, C) view of the windows of the padded NHWC ``xp``."""
    n, _, _, c = xp.shape
    s0, s1, s2, s3 = xp.strides
    return as_strided(xp, (n, oh, ow, kh, kw, c), (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3),
                      writeable=False)


def _tap(xp, i, j, sh, sw, oh, ow):
    """The (N, oh, ow, C) strided view of ``xp`` seen by window tap (i, j) (dilation applied
    by the caller through i, j)."""
    return xp[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]


def _col2im(cols, hp, wp, kh, kw, sh, sw, dh, dw, dt):
    """Scatter-add (N, oh, ow, kh, kw, C) columns into a zero (N, hp, wp, C) array."""
    n, oh, ow, _, _, c = cols.shape
    out = np.zeros((n, hp, wp, c), dt)
    if oh == 0 or ow == 0:
        return out
    for i in range(kh):
        for j in range(kw):
            _tap(out, i * dh, j * dw, sh, sw, oh, ow)[...] += cols[:, :, :, i, j, :]
    return out


def _int_list(v, n, what):
    v = [int(x) for x in (v if v is not None else [])]
    if len(v) != n:
        raise _err(f"Sliding window {what} field must specify {n} dimensions")
    return v


def _nhwc(lst, fmt):
    """A 4-list in ``fmt`` order, in NHWC order."""
    return [lst[0], lst[2], lst[3], lst[1]] if fmt == "NCHW" else list(lst)


# --- convolution attrs ------------------------------------------------------------------------
class _Layout:
    """NCHW <-> NHWC conversions for a class with a ``fmt`` ("NHWC" or "NCHW")."""

    __slots__ = ()

    def to_nhwc(self, a):
        return a.transpose(_TO_NHWC) if self.fmt == "NCHW" else a

    def from_nhwc(self, a):
        return np.ascontiguousarray(a.transpose(_TO_NCHW)) if self.fmt == "NCHW" else a

    def shape_nhwc(self, s):
        return (s[0], s[2], s[3], s[1]) if self.fmt == "NCHW" else tuple(s)


class _ConvAttrs(_Layout):
    """Decoded (once per node) strides, dilations, padding of a 2-D convolution, in NHWC."""

    __slots__ = ("fmt", "sh", "sw", "dh", "dw", "padding", "ep")

    def __init__(self, node):
        self.fmt = _data_format(node)
        st = _nhwc(_int_list(node.attr("strides"), 4, "strides"), self.fmt)
        dil = _nhwc(_int_list(node.attr("dilations", [1, 1, 1, 1]), 4, "dilations"),
                    self.fmt)
        if st[0] != 1 or st[3] != 1:
            raise _unimpl("Current implementation does not yet support strides in the batch and "
                          "depth dimensions.")
        if dil[0] != 1 or dil[3] != 1:
            raise _unimpl("Current implementation does not yet support dilations in the batch and "
                          "depth dimensions.")
        if min(st) <= 0:
            raise _err("Sliding window strides field must have strides larger than 0")
        if min(dil) <= 0:
            raise _err("Dilated rates should be larger than 0.")
        self.sh, self.sw = st[1], st[2]
        self.dh, self.dw = dil[1], dil[2]
        self.padding = _str(node.attr("padding"), "VALID")
        ep = [int(v) for v in (node.attr("explicit_paddings") or [])]
        if self.padding == "EXPLICIT":
            if len(ep) != 8:
                raise _err(f"explicit_paddings attribute must contain 8 values, but got: {len(ep)}")
            if min(ep) < 0:
                raise _err("All elements of explicit_paddings must be nonnegative")
            pairs = [ep[0:2], ep[2:4], ep[4:6], ep[6:8]]
            if self.fmt == "NCHW":
                pairs = [pairs[0], pairs[2], pairs[3], pairs[1]]
            if pairs[0] != [0, 0] or pairs[3] != [0, 0]:
                raise _unimpl("Current implementation does not yet support paddings in the batch "
                              "and depth dimensions.")
            self.ep = (pairs[1][0], pairs[1][1], pairs[2][0], pairs[2][1])
        else:
            self.ep = (0, 0, 0, 0)

    def geometry(self, h, w, kh, kw):
        oh, pt, pb = _out_size(h, kh, self.sh, self.dh, self.padding, self.ep[0], self.ep[1])
        ow, pl, pr = _out_size(w, kw, self.sw, self.dw, self.padding, self.ep[2], self.ep[3])
        return oh, ow, pt, pb, pl, pr



def _padded_extent(n, o, k, s, d, pb, pa):
    """Rows of the padded input that col2im touches, at least the padded size."""
    return max(n + pb + pa, (o - 1) * s + (k - 1) * d + 1 if o > 0 else 0)


# --- chunked im2col ---------------------------------------------------------------------------
# The convolutions copy the windows of a chunk of output rows into one scratch buffer (im2col)
# and run one BLAS matmul per chunk: the matmul sees the whole reduction (kh * kw * C) at once,
# and the extra memory is one chunk, not the kh * kw times input-sized patch matrix. Chunks are
# a few MiB: smaller ones stay in cache, but every matmul call is a synchronization of BLAS's
# threads, which costs much on a busy machine.
_CHUNK_BYTES = 16 << 20      # scratch per chunk at most
_CHUNK_MIN_BYTES = 4 << 20   # ... and at least (when the patch matrix is that big)
_MIN_CHUNK_PIXELS = 256      # at least this many output pixels per matmul
_PHASES_MIN_C = 8
# The filter gradient's matmuls reduce over the chunk's pixels: a thin (K x pixels) @ (pixels x
# O) product whose BLAS threads stall badly on a busy machine when the pixels are many, so
# its chunks are kept to this many pixels (still efficient).
_FILTER_GRAD_PIXELS = 2048
# Thread teams (_team.py): chunks of about a core's L2 (the patch matrix is built and consumed
# there), a few per thread so a busy core does not hold the others up; convolutions under
# _TEAM_MIN_FLOPS stay on the calling thread (handing chunks over costs tens of microseconds).
_TEAM_CHUNK_BYTES = 1 << 20
_TEAM_CHUNKS_PER_THREAD = 4
_TEAM_MIN_FLOPS = 8e6


def _chunks(n, oh, ow, pixel_bytes, data_bytes, max_pixels=None, team=1):
    """Blocks (b0, b1, r0, r1) of ``n`` images of ``oh`` output rows of ``ow`` pixels, each
    needing ``pixel_bytes`` of scratch per pixel; a chunk's scratch is at most twice the op's
    input and output (``data_bytes``), within [_CHUNK_MIN_BYTES, _CHUNK_BYTES], and it has at
    most ``max_pixels`` pixels. Whole images where one fits, else rows of one image. For a
    ``team`` of threads (_team.py) chunks are per-core-cache sized (_TEAM_CHUNK_BYTES) and at
    least _TEAM_CHUNKS_PER_THREAD per thread where the pixels allow."""
    cap = min(_CHUNK_BYTES, max(_CHUNK_MIN_BYTES, 2 * data_bytes))
    if team > 1:
        cap = _TEAM_CHUNK_BYTES
    pix = max(_MIN_CHUNK_PIXELS, cap // max(pixel_bytes, 1))
    if max_pixels:
        pix = min(pix, max_pixels)
    if team > 1:
        pix = min(pix, max(_MIN_CHUNK_PIXELS // 4,
                           -(-n * oh * ow // (team * _TEAM_CHUNKS_PER_THREAD))))
    rows = max(1, pix // max(ow, 1))
    if rows >= oh:
        nb = max(1, rows // max(oh, 1))
        return [(b, min(n, b + nb), 0, oh) for b in range(0, n, nb)]
    return [(b, b + 1, r, min(oh, r + rows)) for b in range(n) for r in range(0, oh, rows)]


def _team_for(flops):
    """Threads for a chunked convolution of ``flops`` multiply-adds (x2): a team (_team.py)
    when the work is worth the hand-over, else 1 (the calling thread, BLAS as it is)."""
    return _team.team_size() if flops >= _TEAM_MIN_FLOPS else 1


def _scratch(chunks, ow, per_pixel, dt):
    """One flat buffer big enough for the largest chunk."""
    most = max((b1 - b0) * (r1 - r0) for b0, b1, r0, r1 in chunks) * ow
    return np.empty(most * per_pixel, dt)


def _team_scratch(chunks, ow, per_pixel, dt):
    """Per-thread flat buffers big enough for the largest chunk (``.get(tid)``)."""
    most = max((b1 - b0) * (r1 - r0) for b0, b1, r0, r1 in chunks) * ow
    return _team.Scratch(most * per_pixel, dt)


def _padded_copy(x, pt, pb, pl, pr, dt, value=0):
    """A C-contiguous NHWC copy of ``x`` (any strides: a transposed NCHW view works) in ``dt``,
    padded with ``value`` in H and W (a negative padding crops); one pass over the data."""
    if min(pt, pb, pl, pr) < 0:
        x = x[:, max(0, -pt):x.shape[1] - max(0, -pb), max(0, -pl):x.shape[2] - max(0, -pr)]
        pt, pb, pl, pr = max(0, pt), max(0, pb), max(0, pl), max(0, pr)
    n, h, w, c = x.shape
    out = np.empty((n, h + pt + pb, w + pl + pr, c), dt)
    if pt:
        out[:, :pt] = value
    if pb:
        out[:, pt + h:] = value
    if pl:
        out[:, pt:pt + h, :pl] = value
    if pr:
        out[:, pt:pt + h, pl + w:] = value
    out[:, pt:pt + h, pl:pl + w] = x
    return out


def _nhwc_input(x, nchw, pads, dt, value=0):
    """``x`` (NCHW when ``nchw``) as a C-contiguous padded NHWC array in ``dt``: ``x`` itself
    when it already is one."""
    xh = x.transpose(_TO_NHWC) if nchw else x
    if not any(pads) and xh.dtype == dt and xh.flags.c_contiguous:
        return xh
    return _padded_copy(xh, *pads, dt, value)


def _rows(a, nchw, b0, b1, r0, r1):
    """Rows r0:r1 of images b0:b1 of a contiguous 4-D array as a 3-D view: (images, pixels,
    channels) for NHWC, (images, channels, pixels) for NCHW (a view: the rows of one channel
    are contiguous, and a row block is taken from one image only or whole images)."""
    if nchw:
        v = a[b0:b1, :, r0:r1, :]
        return v.reshape(b1 - b0, a.shape[1], (r1 - r0) * a.shape[3])
    v = a[b0:b1, r0:r1]
    return v.reshape(b1 - b0, (r1 - r0) * a.shape[2], a.shape[3])


# --- stride-1 convolutions over wide rows (few input channels) ---------------------------------
# With few input channels the im2col copy above moves runs of only kw * C elements (5 for a
# 5x5 filter over one channel), and numpy's per-run cost dominates. A stride-1 convolution
# instead reads the zero-padded input as channel planes (C, N, Hp * Wp) and computes every
# output position of the *padded* width Wp: the window tap (i, j) of output position q (row
# r, column w < Wp) is plane element q + i * dh * Wp + j * dw, so the (taps x positions)
# patch matrix of a block of rows is one strided view with runs of (rows * Wp) elements, and
# its copy is a handful of long moves. Columns w >= ow are computed and dropped (forward), or
# multiply zeros of a widened out_backprop (filter gradient); (Wp / ow - 1) more FLOPs, in a
# matmul that is the same one BLAS call.
_WIDE_MAX_ROW = 16           # window rows of at most this many elements (kw * C) go wide
_WIDE_CHUNK_BYTES = 1 << 20  # patch matrix per chunk (cache-sized)


def _wide_ok(geo, kw, c):
    sh, sw, dh, dw, oh, ow, pt, pb, pl, pr = geo
    return (sh == sw == 1 and kw * c <= _WIDE_MAX_ROW and min(pt, pb, pl, pr) >= 0
            and oh > 0 and ow > 0)


def _wide_planes(x, nchw, geo, kh, kw, cd):
    """(planes, wp): ``x`` zero-padded as channel planes (C, N, Hp * Wp + tail) in ``cd``; the
    tail (zeros) is what the last positions' windows read past the last row. None where the
    geometry is not the stride-1 one (the caller takes the im2col path)."""
    sh, sw, dh, dw, oh, ow, pt, pb, pl, pr = geo
    xc = x.transpose(1, 0, 2, 3) if nchw else x.transpose(3, 0, 1, 2)  # (C, N, H, W) view
    c, n, h, w = xc.shape
    hp, wp = h + pt + pb, w + pl + pr
    if oh != hp - (kh - 1) * dh or ow != wp - (kw - 1) * dw:
        return None
    planes = np.zeros((c, n, hp * wp + (kw - 1) * dw), cd)
    planes[:, :, :hp * wp].reshape(c, n, hp, wp)[:, :, pt:pt + h, pl:pl + w] = xc
    return planes, wp


def _wide_chunks(n, oh, wp, k, cd):
    return _chunks(n, oh, wp, k * np.dtype(cd).itemsize, 0,
                   max(_MIN_CHUNK_PIXELS, _WIDE_CHUNK_BYTES // (k * np.dtype(cd).itemsize)))


def _wide_cols(planes, wp, kh, kw, dh, dw, b0, b1, r0, r1, buf):
    """The patch matrix (kh * kw * C, positions) of rows r0:r1 of images b0:b1 (every column of
    the padded width), copied into ``buf``."""
    c = planes.shape[0]
    nb, m = b1 - b0, (r1 - r0) * wp
    cols = buf[:kh * kw * c * nb * m].reshape(kh, kw, c, nb, m)
    sc, sn, e = planes.strides
    src = planes[:, b0:b1, r0 * wp:]
    np.copyto(cols, as_strided(src, cols.shape, (dh * wp * e, dw * e, sc, sn, e),
                               writeable=False))
    return cols.reshape(kh * kw * c, nb * m)


def _conv_wide(x, nchw, fm, kh, kw, geo, cd, y):
    """Forward stride-1 convolution over wide rows into ``y``; False where not applicable."""
    got = _wide_planes(x, nchw, geo, kh, kw, cd)
    if got is None:
        return False
    planes, wp = got
    n = x.shape[0]
    k, co = fm.shape
    oh, ow = geo[4], geo[5]
    chunks = _wide_chunks(n, oh, wp, k, cd)
    buf = _scratch(chunks, wp, k, cd)
    tmp = _scratch(chunks, wp, co, cd)
    fmt = fm.T
    for b0, b1, r0, r1 in chunks:
        nb, rows = b1 - b0, r1 - r0
        cols = _wide_cols(planes, wp, kh, kw, geo[2], geo[3], b0, b1, r0, r1, buf)
        m = nb * rows * wp
        if nchw:  # (O, K) @ (K, positions): rows of output planes
            t = np.matmul(fmt, cols, out=tmp[:m * co].reshape(co, m))
            y[b0:b1, :, r0:r1, :] = t.reshape(co, nb, rows, wp)[:, :, :, :ow].transpose(1, 0, 2, 3)
        else:
            t = np.matmul(cols.T, fm, out=tmp[:m * co].reshape(m, co))
            y[b0:b1, r0:r1] = t.reshape(nb, rows, wp, co)[:, :, :ow]
    return True


def _conv_filter_grad_wide(x, nchw, dy, kh, kw, geo, cd):
    """Filter gradient (kh * kw * C, O) of a stride-1 convolution over wide rows: per chunk the
    patch matrix times out_backprop widened to Wp columns with zeros; None where not
    applicable, or where ``x`` holds inf or NaN (a dropped column's inf * 0 would be NaN)."""
    got = _wide_planes(x, nchw, geo, kh, kw, cd)
    if got is None:
        return None
    planes, wp = got
    if cd.kind == "f" and not np.isfinite(planes.sum()):
        return None
    n = x.shape[0]
    c = planes.shape[0]
    co = dy.shape[1] if nchw else dy.shape[3]
    k = kh * kw * c
    oh, ow = geo[4], geo[5]
    chunks = _wide_chunks(n, oh, wp, k, cd)
    buf = _scratch(chunks, wp, k, cd)
    acc = np.zeros((co, k) if nchw else (k, co), cd)
    for b0, b1, r0, r1 in chunks:
        nb, rows = b1 - b0, r1 - r0
        cols = _wide_cols(planes, wp, kh, kw, geo[2], geo[3], b0, b1, r0, r1, buf)
        if nchw:  # (O, positions) @ (positions, K)
            d = np.zeros((co, nb, rows, wp), cd)
            d[:, :, :, :ow] = dy[b0:b1, :, r0:r1].transpose(1, 0, 2, 3)
            acc += d.reshape(co, -1) @ cols.T
        else:
            d = np.zeros((nb, rows, wp, co), cd)
            d[:, :, :ow] = dy[b0:b1, r0:r1]
            acc += cols @ d.reshape(-1, co)
    return acc.T if nchw else acc


# --- direct convolutions (kernels_cpu/_gemm.py) ----------------------------------------------
# float32 convolutions with up to _DIRECT_MAX_C input channels and output channels a multiple
# of 8 read the padded input through offsets (no patch matrix): every output pixel's window
# corner (rowoff) plus every tap and channel (koff). The filter gradient is the same product
# with the roles swapped; the input gradient is a convolution of out_backprop (phases), so it
# takes this path when out_backprop has few enough channels.
_DIRECT = True
_DIRECT_MAX_C = 32  # with 64 channels im2col's copies are long runs and BLAS ties (measured)
_offsets_cache = {}


def _direct_offsets(n, hp, wp, c, kh, kw, geo):
    """(pixel corners, tap offsets) into a flat padded NHWC (n, hp, wp, c) input: corners of
    the n * oh * ow output pixels (row-major), offsets of the kh * kw * c taps and channels in
    the filter matrix's row order. Cached by geometry."""
    return _offsets_entry(n, hp, wp, c, kh, kw, geo)[:2]


def _offsets_entry(n, hp, wp, c, kh, kw, geo):
    """(pixel corners, tap offsets, whether each is grouped for _gemm's grouped loops),
    cached by geometry."""
    sh, sw, dh, dw, oh, ow = geo[:6]
    key = (n, hp, wp, c, kh, kw, sh, sw, dh, dw, oh, ow)
    got = _offsets_cache.get(key)
    if got is None:
        rows = ((np.arange(n, dtype=np.intp)[:, None, None] * hp
                 + np.arange(oh, dtype=np.intp)[None, :, None] * sh) * wp
                + np.arange(ow, dtype=np.intp)[None, None, :] * sw) * c
        taps = ((np.arange(kh, dtype=np.intp)[:, None, None] * dh * wp
                 + np.arange(kw, dtype=np.intp)[None, :, None] * dw) * c
                + np.arange(c, dtype=np.intp)[None, None, :])
        rows, taps = rows.reshape(-1), taps.reshape(-1)
        got = rows, taps, _gemm.grouped(rows), _gemm.grouped(taps)
        if len(_offsets_cache) > 64:
            _offsets_cache.clear()
        _offsets_cache[key] = got
    return got


def _check_reach(xp, rowoff, koff):
    """The loops do not check bounds: the last pixel's last tap (both offset lists grow)
    must lie inside the padded input."""
    if rowoff.shape[0] and koff.shape[0] and rowoff[-1] + koff[-1] >= xp.size:
        raise _err(f"internal error: a convolution window reaches past the padded input "
                   f"{_shp(xp.shape)}; please report this with the op's shapes")


def _direct_input(x, nchw, kh, kw, geo, cd):
    """(padded NHWC input, pixel corners, tap offsets, whether the corners are grouped,
    whether the taps are) for a direct product, checked."""
    xp = _nhwc_input(x, nchw, geo[6:], cd)
    n, hp, wp, c = xp.shape
    rowoff, koff, rows_grouped, taps_grouped = _offsets_entry(n, hp, wp, c, kh, kw, geo)
    _check_reach(xp, rowoff, koff)
    return xp, rowoff, koff, rows_grouped, taps_grouped


def _direct_ok(cd, co, c):
    """The direct path where it measured faster (bench/README.md): up to _DIRECT_MAX_C input
    channels (1.3-3x faster than im2col for the benchmark CNN's convolutions, forward and
    both gradients; tied at 64)."""
    return _DIRECT and c <= _DIRECT_MAX_C and _gemm.usable(cd, co)


def _conv_direct(x, nchw, fm, kh, kw, geo, cd, y, post=None):
    """Forward convolution into ``y`` straight from the padded input (_gemm.gather_matmul)."""
    n = x.shape[0]
    k, co = fm.shape
    xp, rowoff, koff, _, taps_grouped = _direct_input(x, nchw, kh, kw, geo, cd)
    team = _team_for(2.0 * y.size * k)
    out = y.reshape(-1, co) if not nchw else np.empty((rowoff.shape[0], co), cd)
    _gemm.gather_matmul(xp, rowoff, koff, fm, out, team, post=post, group=taps_grouped)
    if nchw:
        y[...] = out.reshape(n, geo[4], geo[5], co).transpose(_TO_NCHW)


def _slide_ok(cd, c, co, kw, geo):
    """The sliding-window loops (_slide) where they apply: stride and dilation 1 along the
    width, kw 3 or 5, output channels a multiple of 16, rows of 14 pixels or more; up to
    _DIRECT_MAX_C input channels (1.3-1.6x faster than _gemm's gathered rows for the
    benchmark CNN's second layer, forward and input gradient)."""
    return _DIRECT and c <= _DIRECT_MAX_C and _slide.usable(cd, kw, geo[1], geo[3], geo[5], co)


def _conv_slide(x, nchw, fm, kh, kw, geo, cd, y, post=None):
    """Forward convolution into ``y`` by _slide's loops."""
    n, co = x.shape[0], fm.shape[1]
    team = _team_for(2.0 * y.size * fm.shape[0])
    out = y.reshape(-1, co) if not nchw else np.empty((n * geo[4] * geo[5], co), cd)
    _slide.conv(x, nchw, fm, kh, kw, geo, out, team, post)
    if nchw:
        y[...] = out.reshape(n, geo[4], geo[5], co).transpose(_TO_NCHW)


def _conv_filter_grad_direct(x, nchw, dyc, kh, kw, geo, cd):
    """Filter gradient (kh * kw * C, O) straight from the padded input: taps x pixels."""
    co = dyc.shape[1] if nchw else dyc.shape[3]
    xp, rowoff, koff, rows_grouped, _ = _direct_input(x, nchw, kh, kw, geo, cd)
    d = (dyc.transpose(_TO_NHWC) if nchw else dyc).reshape(-1, co)
    k = koff.shape[0]
    team = _team_for(2.0 * rowoff.shape[0] * k * co)
    out = np.empty((k, co), cd)
    split = "rows" if k >= 16 * _gemm.MB * team else "k"
    return _gemm.gather_matmul(xp, koff, rowoff, d, out, team, split, group=rows_grouped)


def _conv_core(x, nchw, fm, kh, kw, geo, cd, post=None):
    """One-group convolution of ``x`` (NCHW when ``nchw``, else NHWC) with the (kh * kw * C, O)
    filter matrix ``fm`` (dtype ``cd``); geo = (sh, sw, dh, dw, oh, ow, pt, pb, pl, pr).
    Returns the output in ``x``'s layout, dtype ``cd``. ``post`` (NHWC only: a fused bias and
    ReLU) is applied in place to (pixels, O) runs of the output: on the direct and im2col paths
    to each run as it is finished (still in cache), on the others once to the whole output."""
    assert post is None or not nchw
    n = x.shape[0]
    c = x.shape[1] if nchw else x.shape[3]
    k, co = fm.shape
    sh, sw, dh, dw, oh, ow, pt, pb, pl, pr = geo
    y = _jit.empty_aligned((n, co, oh, ow) if nchw else (n, oh, ow, co), cd)  # rows stored whole

    def whole():
        if post is not None and y.size:
            post(y.reshape(-1, co))
        return y
    if y.size == 0:
        return y
    if k == 0:
        y[...] = 0
        return whole()
    if kh == kw == 1 and sh == sw == 1 and not (pt or pb or pl or pr):  # 1x1: a plain matmul
        xc = np.ascontiguousarray(x, dtype=cd)
        if nchw:  # per image: (O, C) @ (C, H*W), no transposes
            np.matmul(fm.T, xc.reshape(n, c, oh * ow), out=y.reshape(n, co, oh * ow))
        else:
            np.matmul(xc.reshape(n * oh * ow, c), fm, out=y.reshape(n * oh * ow, co))
        return whole()
    if _slide_ok(cd, c, co, kw, geo):
        _conv_slide(x, nchw, fm, kh, kw, geo, cd, y, post)
        return y
    if _direct_ok(cd, co, c):
        _conv_direct(x, nchw, fm, kh, kw, geo, cd, y, post)
        return y
    if _wide_ok(geo, kw, c) and _conv_wide(x, nchw, fm, kh, kw, geo, cd, y):
        return whole()
    xp = _nhwc_input(x, nchw, (pt, pb, pl, pr), cd)
    p = _patches(xp, kh, kw, sh, sw, dh, dw, oh, ow)
    team = _team_for(2.0 * y.size * k)
    chunks = _chunks(n, oh, ow, (k + (co if nchw else 0)) * np.dtype(cd).itemsize,
                     xp.nbytes + y.nbytes, None, team)
    bufs = _team_scratch(chunks, ow, k, cd)
    tmps = _team_scratch(chunks, ow, co, cd) if nchw else None

    def chunk(ch, tid):
        b0, b1, r0, r1 = ch
        nb, rows = b1 - b0, r1 - r0
        m = nb * rows * ow
        cols = bufs.get(tid)[:m * k].reshape(nb, rows, ow, kh, kw, c)
        np.copyto(cols, p[b0:b1, r0:r1])
        cols = cols.reshape(m, k)
        if nchw:  # NHWC rows (the faster matmul orientation), then transposed into place
            t = np.matmul(cols, fm, out=tmps.get(tid)[:m * co].reshape(m, co))
            y[b0:b1, :, r0:r1, :] = t.reshape(nb, rows, ow, co).transpose(0, 3, 1, 2)
        else:
            t = np.matmul(cols, fm, out=_rows(y, False, b0, b1, r0, r1).reshape(m, co))
            if post is not None:
                post(t)
    _team.run(chunk, chunks, team)
    return y


def _conv_filter_grad_core(x, nchw, dy, kh, kw, geo, cd):
    """The filter gradient (kh, kw, C, O) of a one-group convolution: per chunk, the chunk's
    patch matrix transposed times its out_backprop rows."""
    n = x.shape[0]
    c = x.shape[1] if nchw else x.shape[3]
    co = dy.shape[1] if nchw else dy.shape[3]
    sh, sw, dh, dw, oh, ow, pt, pb, pl, pr = geo
    k = kh * kw * c
    if n * oh * ow * k * co == 0:
        return np.zeros((kh, kw, c, co), cd)
    dyc = np.ascontiguousarray(dy, dtype=cd)
    if kh == kw == 1 and sh == sw == 1 and not (pt or pb or pl or pr):
        xc = np.ascontiguousarray(x, dtype=cd)
        if nchw:  # sum over images of (O, H*W) @ (H*W, C)
            acc = np.zeros((co, c), cd)
            x3, d3 = xc.reshape(n, c, oh * ow), dyc.reshape(n, co, oh * ow)
            for b in range(n):
                for p in range(0, oh * ow, _FILTER_GRAD_PIXELS):
                    q = p + _FILTER_GRAD_PIXELS
                    acc += d3[b, :, p:q] @ x3[b, :, p:q].T
            return np.ascontiguousarray(acc.T).reshape(1, 1, c, co)
        acc = np.zeros((c, co), cd)
        x2, d2 = xc.reshape(-1, c), dyc.reshape(-1, co)
        for p in range(0, x2.shape[0], _FILTER_GRAD_PIXELS):
            acc += x2[p:p + _FILTER_GRAD_PIXELS].T @ d2[p:p + _FILTER_GRAD_PIXELS]
        return acc.reshape(1, 1, c, co)
    if _DIRECT and c <= _DIRECT_MAX_C and _slide.usable_grad(cd, kw, sw, dw, co):  # _slide
        return _slide.filter_grad(x, nchw, dyc, kh, kw, geo,
                                  _team_for(2.0 * n * oh * ow * k * co))
    if _direct_ok(cd, co, c):
        return _conv_filter_grad_direct(x, nchw, dyc, kh, kw, geo, cd).reshape(kh, kw, c, co)
    if _wide_ok(geo, kw, c):
        df = _conv_filter_grad_wide(x, nchw, dyc, kh, kw, geo, cd)
        if df is not None:
            return np.ascontiguousarray(df).reshape(kh, kw, c, co)
    xp = _nhwc_input(x, nchw, (pt, pb, pl, pr), cd)
    p = _patches(xp, kh, kw, sh, sw, dh, dw, oh, ow)
    team = _team_for(2.0 * n * oh * ow * k * co)
    chunks = _chunks(n, oh, ow, k * np.dtype(cd).itemsize, xp.nbytes + dyc.nbytes,
                     _FILTER_GRAD_PIXELS, team)
    bufs = _team_scratch(chunks, ow, k, cd)
    accs = _team.Scratch((k, co), cd, zeros=True)  # per-thread partial sums

    def chunk(ch, tid):
        b0, b1, r0, r1 = ch
        nb, rows = b1 - b0, r1 - r0
        cols = bufs.get(tid)[:nb * rows * ow * k].reshape(nb, rows, ow, kh, kw, c)
        np.copyto(cols, p[b0:b1, r0:r1])
        cols = cols.reshape(nb, rows * ow, k)
        d = _rows(dyc, nchw, b0, b1, r0, r1)
        if nchw:  # the chunk's out_backprop as NHWC rows (a small copy)
            d = d.transpose(0, 2, 1).copy()
        accs.get(tid)[...] += cols.reshape(-1, k).T @ d.reshape(-1, co)
    _team.run(chunk, chunks, team)
    return accs.total().reshape(kh, kw, c, co)


def _phase_taps(k, d, s, pad, a):
    """The taps i of a filter dimension that reach input positions = a (mod s), in the order
    that makes them a dilated stride-1 window over out_backprop: (taps, first offset, step)
    with tap number t reading out_backprop row q + first + t * step for input row q * s + a."""
    taps = [i for i in range(k) if (i * d - pad - a) % s == 0][::-1]
    if not taps:
        return taps, 0, 1
    first = (a + pad - taps[0] * d) // s
    step = d // math.gcd(d, s)
    return taps, first, step


def _as_slice(taps):
    """The (descending, evenly spaced) tap list of _phase_taps as a slice: a view, not a
    copy."""
    step = taps[1] - taps[0] if len(taps) > 1 else -1
    stop = taps[-1] + step
    return slice(taps[0], stop if stop >= 0 else None, step)


def _conv_input_grad_phases(dy, nchw, f, in_shape, geo, cd):
    """Input gradient as convolutions: the input rows and columns of one phase (= a mod sh,
    b mod sw) receive out_backprop through the filter taps of that phase only, and for them it
    is a stride-1 convolution of out_backprop with those taps flipped and transposed (O -> C).
    Stride 1 is one phase: the convolution of the padded out_backprop with the flipped filter.
    Exactly the FLOPs of the col2im form, without its scatter."""
    n, h, w, c = in_shape
    kh, kw, _, co = f.shape
    sh, sw, dh, dw, oh, ow, pt, pb, pl, pr = geo
    out_shape = (n, c, h, w) if nchw else (n, h, w, c)
    dx = None
    for a in range(min(sh, h)):
        ti, fi, si = _phase_taps(kh, dh, sh, pt, a)
        hq = len(range(a, h, sh))
        for b in range(min(sw, w)):
            tj, fj, sj = _phase_taps(kw, dw, sw, pl, b)
            wq = len(range(b, w, sw))
            if not ti or not tj:
                continue  # no tap reaches this phase: zeros
            if (fi > oh - 1 or fj > ow - 1 or hq - 1 + fi + (len(ti) - 1) * si < 0
                    or wq - 1 + fj + (len(tj) - 1) * sj < 0):
                continue  # its taps read outside out_backprop only
            fs = f[_as_slice(ti), _as_slice(tj)].transpose(0, 1, 3, 2)  # (|ti|, |tj|, O, C)
            fm = np.empty((len(ti), len(tj), co, c), cd)  # one copy of the filter
            fm[...] = fs
            fm = fm.reshape(len(ti) * len(tj) * co, c)
            qt, ql = -fi, -fj
            qb = (hq - 1) + fi + (len(ti) - 1) * si - (oh - 1)
            qr = (wq - 1) + fj + (len(tj) - 1) * sj - (ow - 1)
            part = _conv_core(dy, nchw, fm, len(ti), len(tj),
                              (1, 1, si, sj, hq, wq, qt, qb, ql, qr), cd)
            if sh == sw == 1:
                return part  # the one phase is all of dx
            if dx is None:
                dx = np.zeros(out_shape, cd)
            if nchw:
                dx[:, :, a::sh, b::sw] = part
            else:
                dx[:, a::sh, b::sw] = part
    return dx if dx is not None else np.zeros(out_shape, cd)


def _conv_input_grad_core(dy, nchw, f, in_shape, geo, cd):
    """The input gradient (in ``dy``'s layout) of a one-group convolution with filter ``f``
    (kh, kw, C, O); ``in_shape`` is NHWC. With enough input channels to keep the matmul
    efficient: convolutions of out_backprop (_conv_input_grad_phases). Otherwise per chunk:
    the filter matrix times out_backprop, scattered back (col2im)."""
    n, h, w, c = in_shape
    kh, kw, _, co = f.shape
    sh, sw, dh, dw, oh, ow, pt, pb, pl, pr = geo
    out_shape = (n, c, h, w) if nchw else (n, h, w, c)
    if n * h * w * c == 0:
        return np.zeros(out_shape, cd)
    if n * oh * ow * co == 0:
        return np.zeros(out_shape, cd)
    if c >= _PHASES_MIN_C:
        return _conv_input_grad_phases(dy, nchw, f, in_shape, geo, cd)
    # few input channels: col2im with channel planes (the scatter's inner loop runs along a
    # row of ow pixels, not over C channels)
    k = kh * kw * c
    fm = np.ascontiguousarray(f, dtype=cd).reshape(k, co)
    dyc = np.ascontiguousarray(dy, dtype=cd)
    hp = _padded_extent(h, oh, kh, sh, dh, pt, pb)
    wp = _padded_extent(w, ow, kw, sw, dw, pl, pr)
    dxp = np.zeros((n, c, hp, wp), cd)
    chunks = _chunks(n, oh, ow, k * np.dtype(cd).itemsize, dxp.nbytes + dyc.nbytes)
    buf = _scratch(chunks, ow, k, cd)
    for b0, b1, r0, r1 in chunks:
        nb, rows = b1 - b0, r1 - r0
        d = _rows(dyc, nchw, b0, b1, r0, r1)
        if nchw:  # per image (K, O) @ (O, pixels)
            cols = np.matmul(fm, d, out=buf[:nb * k * rows * ow].reshape(nb, k, rows * ow))
            cols = cols.reshape(nb, kh, kw, c, rows, ow)
        else:  # (K, O) @ (O, pixels of the chunk)
            cols = np.matmul(fm, d.reshape(-1, co).T,
                             out=buf[:k * nb * rows * ow].reshape(k, nb * rows * ow))
            cols = cols.reshape(kh, kw, c, nb, rows, ow).transpose(3, 0, 1, 2, 4, 5)
        dst = dxp[b0:b1, :, r0 * sh:]
        for i in range(kh):
            for j in range(kw):
                t = dst[:, :, i * dh:i * dh + (rows - 1) * sh + 1:sh,
                        j * dw:j * dw + (ow - 1) * sw + 1:sw]
                t += cols[:, i, j]
    dx = dxp[:, :, pt:pt + h, pl:pl + w]
    if nchw:
        return np.ascontiguousarray(dx)
    return np.ascontiguousarray(dx.transpose(_TO_NHWC))


# --- Conv2D -----------------------------------------------------------------------------------
def _conv_checks_fwd(x, f):
    if x.ndim != 4:
        raise _err(f"convolution input must be 4-dimensional: {_shp(x.shape)}")
    if f.ndim != 4:
        raise _err(f"convolution filter must be 4-dimensional: {_shp(f.shape)}")
    if f.size == 0:
        raise _err("filter must not have zero elements (i.e. all dimensions must be non-zero)")


def _groups(in_depth, f_in_depth, out_depth):
    if in_depth % f_in_depth:
        raise _err(f"input depth must be evenly divisible by filter depth: {in_depth} vs "
                   f"{f_in_depth}")
    g = in_depth // f_in_depth
    if out_depth % g:
        raise _err(f"output depth must be evenly divisible by number of groups: {out_depth} vs {g}")
    return g


def _conv2d_grouped_nhwc(x, f, ca, cd, g):
    n, h, w, c = x.shape
    kh, kw, fc, co = f.shape
    oh, ow, pt, pb, pl, pr = ca.geometry(h, w, kh, kw)
    x = _as(x, cd)
    f = _as(f, cd)
    m = n * oh * ow
    xp = _pad(x, pt, pb, pl, pr)
    p = _patches(xp, kh, kw, ca.sh, ca.sw, ca.dh, ca.dw, oh, ow)
    p = p.reshape(n, oh, ow, kh, kw, g, fc).transpose(5, 0, 1, 2, 3, 4, 6)
    cols = p.reshape(g, m, kh * kw * fc)
    fg = f.reshape(kh, kw, fc, g, co // g).transpose(3, 0, 1, 2, 4)
    fg = fg.reshape(g, kh * kw * fc, co // g)
    y = np.matmul(cols, fg).transpose(1, 0, 2)
    return np.ascontiguousarray(y).reshape(n, oh, ow, co)


def _conv2d_fn(node):
    """The Conv2D kernel's function ``run(x, f, post=None)`` (``post``: see _conv_core; only
    for NHWC and a dtype computed as itself, float32 or float64)."""
    ca = _ConvAttrs(node)
    dt = _out(node)
    cd = _cdt(dt)

    nchw = ca.fmt == "NCHW"

    def run(x, f, post=None):
        _conv_checks_fwd(x, f)
        n, h, w, c = ca.shape_nhwc(x.shape)
        kh, kw, fc, co = f.shape
        g = _groups(c, fc, co)
        if g > 1:
            y = _conv2d_grouped_nhwc(ca.to_nhwc(x), f, ca, cd, g)
            y = ca.from_nhwc(_as(y, dt))
            if post is not None and y.size:
                post(y.reshape(-1, co))
            return (y,)
        oh, ow, pt, pb, pl, pr = ca.geometry(h, w, kh, kw)
        fm = np.ascontiguousarray(f, dtype=cd).reshape(kh * kw * fc, co)
        y = _conv_core(x, nchw, fm, kh, kw, (ca.sh, ca.sw, ca.dh, ca.dw, oh, ow, pt, pb, pl, pr),
                       cd, post)
        return (_as(y, dt),)

    return run


@register("Conv2D", "CPU", type_constraints={"T": _CONV_T})
def _conv2d(node, ctx):
    return _quiet(_conv2d_fn(node))


# --- Conv2D + BiasAdd (+ Relu), fused by the plan (runtime/executor.py) ----------------------
# As TensorFlow's grappler remapper fuses them (_FusedConv2D): the bias is added, and the ReLU
# taken, on runs of output rows while they are in cache, instead of two more passes over the
# whole output. The same numpy operations as the BiasAdd and Relu kernels, in the same order:
# the results are theirs bit for bit.
@register_fused(("Conv2D", "BiasAdd", "Relu"), "CPU")
@register_fused(("Conv2D", "BiasAdd"), "CPU")
def _fused_conv2d(nodes, unfused, ctx):
    conv, bias_node = nodes[0], nodes[1]
    dt = _out(conv)
    if (_data_format(conv) != "NHWC" or bias_node.attr("data_format", b"NHWC") != b"NHWC"
            or dt not in (_F32, _F64) or any(_out(nd) != dt for nd in nodes)):
        return None
    run_conv = _conv2d_fn(conv)
    epilogue = nn_ops.bias_relu_epilogue(dt, relu=len(nodes) == 3)

    def run(x, f, b):
        if not (x.ndim == 4 and f.ndim == 4 and b.ndim == 1 and b.shape[0] == f.shape[3]
                and x.dtype == f.dtype == b.dtype == dt):
            # each member's own checks and errors
            return kernel_registry.run_members(unfused, (x, f), (b,))
        try:
            return run_conv(x, f, epilogue(b))
        except Exception as e:  # noqa: BLE001 - named after the Conv2D node
            raise kernel_registry.FusedMemberError(0, e, (x, f)) from None

    return _quiet(run)


def _bp_dims(label, ca, in_shape, f_shape, dy, depthwise=False):
    """TF's ConvBackpropComputeDimensionsV2 checks; returns the geometry."""
    if len(in_shape) != 4:
        raise _err(f"{label}: input must be 4-dimensional")
    if len(f_shape) != 4:
        raise _err(f"{label}: filter must be 4-dimensional")
    if dy.ndim != 4:
        raise _err(f"{label}: out_backprop must be 4-dimensional")
    n, h, w, c = in_shape
    kh, kw, fc, co = f_shape
    dyn = ca.shape_nhwc(dy.shape)
    if n != dyn[0]:
        raise _err(f"{label}: input and out_backprop must have the same batch size. Input batch: "
                   f"{n}, outbackprop batch: {dyn[0]}, batch_dim: 0")
    if depthwise:
        if c != fc:
            raise _err(f"{label}: input and filter must have the same in_depth: {c} vs {fc}")
        if dyn[3] != c * co:
            raise _err(f"{label}: out_backprop must have out_depth = in_depth * depth_multiplier: "
                       f"{dyn[3]} vs {c * co}")
    else:
        if fc <= 0:
            raise _err(f"{label}: filter depth must be strictly greated than zero")
        if c % fc:
            raise _err(f"{label}: input depth must be evenly divisible by filter depth")
        if co != dyn[3]:
            raise _err(f"{label}: filter and out_backprop must have the same out_depth")
    oh, ow, pt, pb, pl, pr = ca.geometry(h, w, kh, kw)
    sdims = (2, 3) if ca.fmt == "NCHW" else (1, 2)
    for k, (o_actual, o, size, kk, s, d) in enumerate(
            ((dyn[1], oh, h, kh, ca.sh, ca.dh), (dyn[2], ow, w, kw, ca.sw, ca.dw))):
        if o_actual != o:
            if depthwise:
                raise _err(f"{label}: Number of {'rows' if k == 0 else 'cols'} of out_backprop "
                           f"doesn't match computed: actual = {o_actual}, computed = {o}")
            raise _err(f"{label}: Size of out_backprop doesn't match computed: actual = "
                       f"{o_actual}, computed = {o} spatial_dim: {sdims[k]} input: {size} "
                       f"filter: {kk} output: {o_actual} stride: {s} dilation: {d}")
    return oh, ow, pt, pb, pl, pr


def _sizes_vec(v, label, what):
    v = np.asarray(v)
    if v.ndim != 1:
        raise _err(f"{label}: {what} input must be 1-dim, not {v.ndim}")
    return [int(s) for s in v.reshape(-1)]


def _bp_input_shape(label, ca, input_sizes, f, dy):
    """Conv2DBackpropInput's checks of its arguments; the input's NHWC shape."""
    sizes = _sizes_vec(input_sizes, label, "input_sizes")
    if f.ndim != 4:
        raise _err(f"{label}: filter must be 4-dimensional")
    if dy.ndim != 4:
        raise _err(f"{label}: out_backprop must be 4-dimensional")
    if len(sizes) == 4:
        in_shape = ca.shape_nhwc(sizes)
    elif len(sizes) == 2:
        in_shape = (ca.shape_nhwc(dy.shape)[0], sizes[0], sizes[1], f.shape[2])
    else:
        raise _err("Conv2DBackpropInput requires input_sizes to contain 4 values or 2 values, "
                   f"but got: {len(sizes)}")
    if min(in_shape) < 0:
        raise _err(f"{label}: input_sizes must be nonnegative, got {_shp(sizes)}")
    return in_shape


def _depthwise_input_shape(label, ca, input_sizes, f):
    """DepthwiseConv2dNativeBackpropInput's checks of its arguments; the input's NHWC shape."""
    sizes = _sizes_vec(input_sizes, label, "input_sizes")
    if len(sizes) != 4:
        raise _err(f"{label}: input_sizes must contain 4 values, but got: {len(sizes)}")
    if f.ndim != 4:
        raise _err(f"{label}: filter must be 4-dimensional")
    if min(sizes) < 0:
        raise _err(f"{label}: input_sizes must be nonnegative, got {_shp(sizes)}")
    return ca.shape_nhwc(sizes)


def _bp_filter_sizes(label, x, filter_sizes, depthwise=False):
    """The filter-gradient ops' checks of their arguments; the filter's shape."""
    fs = _sizes_vec(filter_sizes, label, "filter_sizes")
    if x.ndim != 4:
        raise _err(f"{label}: input must be 4-dimensional")
    if len(fs) != 4:
        raise _err(f"{label}: filter_sizes must contain 4 values, but got: {len(fs)}"
                   if depthwise else f"{label}: filter must be 4-dimensional")
    if min(fs) < 0:
        raise _err(f"{label}: filter_sizes must be nonnegative, got {_shp(fs)}")
    return fs


@register("Conv2DBackpropInput", "CPU", host_memory=("input_sizes",),
          type_constraints={"T": _CONV_T})
def _conv2d_backprop_input(node, ctx):
    ca = _ConvAttrs(node)
    dt = _out(node)
    cd = _cdt(dt)
    label = "Conv2DBackpropInput"

    def run(input_sizes, f, dy):
        in_shape = _bp_input_shape(label, ca, input_sizes, f, dy)
        oh, ow, pt, pb, pl, pr = _bp_dims(label, ca, in_shape, f.shape, dy)
        n, h, w, c = in_shape
        kh, kw, fc, co = f.shape
        g = c // fc
        if g == 1:
            dx = _conv_input_grad_core(dy, ca.fmt == "NCHW", f, in_shape,
                                       (ca.sh, ca.sw, ca.dh, ca.dw, oh, ow, pt, pb, pl, pr), cd)
            return (_as(dx, dt),)
        dyh = _as(ca.to_nhwc(dy), cd)
        f = _as(f, cd)
        m = n * oh * ow
        cg = co // g
        dyg = dyh.reshape(m, g, cg).transpose(1, 0, 2)
        fg = f.reshape(kh, kw, fc, g, cg).transpose(3, 4, 0, 1, 2).reshape(g, cg, kh * kw * fc)
        cols = np.matmul(dyg, fg).reshape(g, m, kh, kw, fc).transpose(1, 2, 3, 0, 4)
        cols = cols.reshape(n, oh, ow, kh, kw, c)
        hp = _padded_extent(h, oh, kh, ca.sh, ca.dh, pt, pb)
        wp = _padded_extent(w, ow, kw, ca.sw, ca.dw, pl, pr)
        dxp = _col2im(cols, hp, wp, kh, kw, ca.sh, ca.sw, ca.dh, ca.dw, cd)
        dx = dxp[:, pt:pt + h, pl:pl + w, :]
        return (ca.from_nhwc(np.ascontiguousarray(_as(dx, dt))),)

    return _quiet(run)


@register("Conv2DBackpropFilter", "CPU", host_memory=("filter_sizes",),
          type_constraints={"T": _FLOAT_T})
def _conv2d_backprop_filter(node, ctx):
    ca = _ConvAttrs(node)
    dt = _out(node)
    cd = _cdt(dt)
    label = "Conv2DBackpropFilter"

    def run(x, filter_sizes, dy):
        fs = _bp_filter_sizes(label, x, filter_sizes)
        xh = ca.to_nhwc(x)
        oh, ow, pt, pb, pl, pr = _bp_dims(label, ca, xh.shape, fs, dy)
        n, h, w, c = xh.shape
        kh, kw, fc, co = fs
        g = c // fc
        if g == 1:
            df = _conv_filter_grad_core(x, ca.fmt == "NCHW", dy, kh, kw,
                                        (ca.sh, ca.sw, ca.dh, ca.dw, oh, ow, pt, pb, pl, pr), cd)
            return (_as(df, dt),)
        xh = _as(xh, cd)
        dyh = _as(ca.to_nhwc(dy), cd)
        m = n * oh * ow
        cg = co // g
        xp = _pad(xh, pt, pb, pl, pr)
        p = _patches(xp, kh, kw, ca.sh, ca.sw, ca.dh, ca.dw, oh, ow)
        p = p.reshape(n, oh, ow, kh, kw, g, fc).transpose(5, 3, 4, 6, 0, 1, 2)
        cols = p.reshape(g, kh * kw * fc, m)
        dyg = dyh.reshape(m, g, cg).transpose(1, 0, 2)
        df = np.matmul(cols, dyg).reshape(g, kh, kw, fc, cg).transpose(1, 2, 3, 0, 4)
        df = df.reshape(kh, kw, fc, co)
        return (np.ascontiguousarray(_as(df, dt)),)

    return _quiet(run)


# --- window taps, by blocks of output rows ----------------------------------------------------
# Depthwise convolutions and pooling have no matmul: they are a few elementwise numpy passes
# per window tap (i, j). Each tap is a strided view of the input; the outputs whose tap falls
# inside the input form a rectangle, so padding never needs a copy, and any layout works as
# it comes (NCHW too). The passes go by blocks of output rows, cache-sized. With
# MGRT_CONV_THREADS=N (N > 1) the blocks run on a team of N threads (_team.run; numpy releases
# the GIL inside its loops: intra-op parallelism as TF's Eigen kernels have); the default is the
# calling thread only, as on a shared 2-core machine the threads measured no faster.
_BLOCK_BYTES = 1 << 20   # per block: the block's share of the arrays it reads and writes
_PARALLEL_MIN_BYTES = 2 << 20  # less work than this stays on the calling thread


def _run_blocks(fn, blocks, work_bytes, scatter=False):
    """``fn(block)`` for every block, in order of the results. On a team when
    MGRT_CONV_THREADS asks for one and there is enough work; with ``scatter`` (blocks whose
    writes reach into the next block's rows) the even-numbered blocks run first, then the odd
    ones, so that no two blocks that run at once write the same rows (a block is at least a
    window high)."""
    workers = _team._FIXED or 1
    if workers < 2 or len(blocks) < 2 or work_bytes < _PARALLEL_MIN_BYTES:
        with np.errstate(all="ignore"):
            return [fn(b) for b in blocks]
    if not scatter:
        return _team.run(lambda b, tid: fn(b), blocks, workers)
    out = [None] * len(blocks)
    for phase in (0, 1):
        idx = range(phase, len(blocks), 2)
        for k, r in zip(idx, _team.run(lambda b, tid: fn(b), [blocks[k] for k in idx],
                                       workers)):
            out[k] = r
    return out


def _tap_span(n, o, off, s):
    """(lo, hi, start): the outputs lo <= r < hi whose tap reads input row r * s + off inside
    [0, n), and the input row of output lo."""
    lo = min(o, max(0, -(off // s)))
    hi = max(lo, min(o, (n - 1 - off) // s + 1))
    return lo, hi, lo * s + off


class _Taps:
    """The window taps of a sliding-window op, between an "output" grid (oh, ow) and an
    "input" grid (h, w): tap (i, j) of output (r, q) reads input (r * sh + i * dh - pt,
    q * sw + j * dw - pl). ``nchw``: the spatial axes are 2 and 3, else 1 and 2 (any trailing
    axes ride along). ``index(block)`` gives each tap's in-bounds rectangle as basic-slice
    indexes (views)."""

    __slots__ = ("nchw", "oh", "ow", "sh", "sw", "spans", "kh", "kw", "ext", "halo", "args")

    def __init__(self, nchw, in_hw, out_hw, ks, st, pads, dil=(1, 1), flip=False):
        self.args = (nchw, in_hw, out_hw, ks, st, pads, dil, flip)
        self.nchw = nchw
        h, w = in_hw
        self.oh, self.ow = out_hw
        self.kh, self.kw = ks
        self.sh, self.sw = st
        pt, pl = pads
        sgn = -1 if flip else 1  # flip: tap offsets pt - i * dh (a transposed convolution)
        self.spans = []
        for i in range(self.kh):
            rs = _tap_span(h, self.oh, sgn * (i * dil[0] - pt), self.sh)
            for j in range(self.kw):
                cs = _tap_span(w, self.ow, sgn * (j * dil[1] - pl), self.sw)
                if rs[1] > rs[0] and cs[1] > cs[0]:
                    self.spans.append((i, j, rs, cs))
        self.ext = ((self.kh - 1) * dil[0], (self.kw - 1) * dil[1])  # window extent - 1
        self.halo = self.ext[0] // self.sh + 1  # output rows a window's input rows reach

    def separable(self):
        """(rows, cols): the taps of the window's rows alone (output grid oh x w) and then of
        its columns alone (input grid oh x w), for reductions done one axis at a time."""
        nchw, (h, w), (oh, ow), (kh, kw), (sh, sw), (pt, pl), (dh, dw), flip = self.args
        return (_Taps(nchw, (h, w), (oh, w), (kh, 1), (sh, 1), (pt, 0), (dh, 1), flip),
                _Taps(nchw, (oh, w), (oh, ow), (1, kw), (1, sw), (0, pl), (1, dw), flip))

    def overlapping(self):
        """Whether two windows may share an input element (conservative)."""
        return self.ext[0] >= self.sh or self.ext[1] >= self.sw

    def _sl(self, b, rows, cols):
        return (b, slice(None), rows, cols) if self.nchw else (b, rows, cols)

    def index(self, block):
        """Per in-bounds tap of the block (b0, b1, r0, r1): (i, j, output index, input index,
        output index relative to the block)."""
        b0, b1, r0, r1 = block
        sh, sw = self.sh, self.sw
        bs, rel = slice(b0, b1), slice(0, b1 - b0)
        for i, j, (lo, hi, start), (c0, c1, ic) in self.spans:
            a, b = max(lo, r0), min(hi, r1)
            if b <= a:
                continue
            ir = start + (a - lo) * sh
            cols = slice(c0, c1)
            yield (i, j, self._sl(bs, slice(a, b), cols),
                   self._sl(bs, slice(ir, ir + (b - a - 1) * sh + 1, sh),
                            slice(ic, ic + (c1 - c0 - 1) * sw + 1, sw)),
                   self._sl(rel, slice(a - r0, b - r0), cols))

    def blocks(self, n, row_bytes):
        """Blocks (b0, b1, r0, r1) of the output rows, about _BLOCK_BYTES each at
        ``row_bytes`` per output row, at least a window high."""
        rows = max(self.halo + 1, _BLOCK_BYTES // max(row_bytes, 1))
        if rows >= self.oh:
            nb = max(1, rows // max(self.oh, 1))
            return [(b, min(n, b + nb), 0, self.oh) for b in range(0, n, nb)]
        return [(b, b + 1, r, min(self.oh, r + rows)) for b in range(n)
                for r in range(0, self.oh, rows)]


# --- depthwise --------------------------------------------------------------------------------
# Depthwise convolutions have no reduction over channels, so a matmul would be C tiny
# matrix-vector products over a transposed copy of the patches; a broadcast multiply and an
# add per filter tap over strided views (by cache-sized blocks of rows, on the worker threads)
# is much faster. Computed in NHWC views (an NCHW input is read through a transposed view).
def _dw_taps(ca, in_hw, out_hw, kh, kw, pt, pl, flip=False):
    return _Taps(False, in_hw, out_hw, (kh, kw), (1, 1) if flip else (ca.sh, ca.sw), (pt, pl),
                 (ca.dh, ca.dw), flip)


def _filter_rows(fm, width):
    """(kh, kw, width, C): each tap's (C,) filter values repeated along an output row, so that
    the products run over whole contiguous rows (a broadcast (C,) operand would cut numpy's
    inner loop to C elements)."""
    kh, kw, c = fm.shape
    return np.ascontiguousarray(np.broadcast_to(fm[:, :, None, :], (kh, kw, width, c)))


def _depthwise_fwd(xh, fc, taps, cd):
    """y (N, oh, ow, C * mult) = the sum over taps of x_tap * f[tap] (x: an NHWC view)."""
    n, _, _, c = xh.shape
    mult = fc.shape[3]
    oh, ow = taps.oh, taps.ow
    y = np.empty((n, oh, ow, c, mult), cd)
    if y.size == 0:
        return y.reshape(n, oh, ow, c * mult)
    rows = [_filter_rows(fc[..., m], ow) for m in range(mult)]

    def block(blk):
        b0, b1, r0, r1 = blk
        shape = (b1 - b0, r1 - r0, ow, c)
        tmp = np.empty(shape, cd)
        acc = y[b0:b1, r0:r1, :, :, 0] if mult == 1 else np.empty(shape, cd)
        for m in range(mult):
            acc.fill(0)
            for i, j, _, ii, ri in taps.index(blk):
                t = tmp[ri]
                np.multiply(xh[ii], rows[m][i, j, ri[2]], out=t)
                a = acc[ri]
                np.add(a, t, out=a)
            if mult > 1:
                y[b0:b1, r0:r1, :, :, m] = acc

    row = ow * c * (mult + 2) * y.itemsize + taps.sh * xh.shape[2] * c * y.itemsize
    _run_blocks(block, taps.blocks(n, row), y.nbytes + xh.size * y.itemsize)
    return y.reshape(n, oh, ow, c * mult)


def _depthwise_input_grad(dyh, fc, ca, in_shape, geo, cd):
    """dx (N, H, W, C) of a depthwise convolution, from out_backprop dyh (an NHWC view).
    Stride 1: a gather (each dx row sums the taps of dy that reach it, with the filter
    flipped); strided: each tap's product scattered back."""
    n, h, w, c = in_shape
    kh, kw, _, mult = fc.shape
    oh, ow, pt, pb, pl, pr = geo
    dy5 = dyh.reshape(n, oh, ow, c, mult)
    gather = ca.sh == ca.sw == 1
    if gather:
        taps = _dw_taps(ca, (oh, ow), (h, w), kh, kw, pt, pl, flip=True)
        dx = np.empty((n, h, w, c), cd)
    else:
        taps = _dw_taps(ca, (h, w), (oh, ow), kh, kw, pt, pl)
        dx = np.zeros((n, h, w, c), cd)
    if dx.size == 0 or dy5.size == 0:
        dx.fill(0)
        return dx
    rows = [_filter_rows(fc[..., m], taps.ow) for m in range(mult)]

    def block(blk):
        b0, b1, r0, r1 = blk
        shape = (b1 - b0, r1 - r0, taps.ow, c)
        tmp = np.empty(shape, cd)
        acc = dx[b0:b1, r0:r1] if gather else None
        if gather:
            acc.fill(0)
        for i, j, oi, ii, ri in taps.index(blk):
            t = tmp[ri]
            src = dy5[ii] if gather else dy5[oi]
            for m in range(mult):
                if m == 0:
                    np.multiply(src[..., 0], rows[0][i, j, ri[2]], out=t)
                else:
                    t += src[..., m] * rows[m][i, j, ri[2]]
            d = acc[ri] if gather else dx[ii]
            np.add(d, t, out=d)

    row = taps.ow * c * (mult + 2) * dx.itemsize + taps.sh * w * c * dx.itemsize
    _run_blocks(block, taps.blocks(n, row), dx.nbytes + dy5.size * dx.itemsize,
                scatter=not gather and taps.overlapping())
    return dx


def _depthwise_filter_grad(xh, dyh, ca, fs, geo, cd):
    """df (kh, kw, C, mult): per tap, the sum over the in-bounds outputs of x_tap * dy (one
    einsum: multiply and sum in one pass), by blocks (partial sums added in block order)."""
    n, h, w, c = xh.shape
    kh, kw, _, mult = fs
    oh, ow, pt, pb, pl, pr = geo
    df = np.zeros((kh, kw, c, mult), cd)
    if n * oh * ow * c * mult == 0:
        return df
    taps = _dw_taps(ca, (h, w), (oh, ow), kh, kw, pt, pl)
    dy5 = dyh.reshape(n, oh, ow, c, mult)

    def block(blk):
        part = np.zeros((kh, kw, c, mult), cd)
        for i, j, oi, ii, _ in taps.index(blk):
            np.einsum("brwc,brwcm->cm", xh[ii], dy5[oi], out=part[i, j])
        return part

    row = ow * c * (mult + 1) * df.itemsize + ca.sh * w * c * df.itemsize
    for part in _run_blocks(block, taps.blocks(n, row), xh.size * df.itemsize * (1 + mult)):
        df += part
    return df


def _check_depthwise(x, f, nchw):
    """DepthwiseConv2dNative's checks on the shapes (the GPU kernel's too)."""
    if x.ndim != 4:
        raise _err(f"input must be 4-dimensional{_shp(x.shape)}")
    if f.ndim != 4:
        raise _err(f"filter must be 4-dimensional: {_shp(f.shape)}")
    c, fc = x.shape[1 if nchw else 3], f.shape[2]
    if c != fc:
        raise _err(f"input and filter must have the same depth: {c} vs {fc}")


@register("DepthwiseConv2dNative", "CPU", type_constraints={"T": _FLOAT_T})
def _depthwise(node, ctx):
    ca = _ConvAttrs(node)
    dt = _out(node)
    cd = _cdt(dt)

    def run(x, f):
        _check_depthwise(x, f, ca.fmt == "NCHW")
        xh = ca.to_nhwc(x)
        n, h, w, c = xh.shape
        kh, kw, fc, mult = f.shape
        oh, ow, pt, pb, pl, pr = ca.geometry(h, w, kh, kw)
        taps = _dw_taps(ca, (h, w), (oh, ow), kh, kw, pt, pl)
        y = _depthwise_fwd(_as(xh, cd), np.ascontiguousarray(f, dtype=cd), taps, cd)
        return (ca.from_nhwc(_as(y, dt)),)

    return _quiet(run)


@register("DepthwiseConv2dNativeBackpropInput", "CPU", host_memory=("input_sizes",),
          type_constraints={"T": _FLOAT_T})
def _depthwise_backprop_input(node, ctx):
    ca = _ConvAttrs(node)
    dt = _out(node)
    cd = _cdt(dt)
    label = "DepthwiseConv2DBackpropInput"

    def run(input_sizes, f, dy):
        in_shape = _depthwise_input_shape(label, ca, input_sizes, f)
        geo = _bp_dims(label, ca, in_shape, f.shape, dy, depthwise=True)
        dx = _depthwise_input_grad(_as(ca.to_nhwc(dy), cd), np.ascontiguousarray(f, dtype=cd),
                                   ca, in_shape, geo, cd)
        return (ca.from_nhwc(_as(dx, dt)),)

    return _quiet(run)


@register("DepthwiseConv2dNativeBackpropFilter", "CPU", host_memory=("filter_sizes",),
          type_constraints={"T": _FLOAT_T})
def _depthwise_backprop_filter(node, ctx):
    ca = _ConvAttrs(node)
    dt = _out(node)
    cd = _cdt(dt)
    label = "DepthwiseConv2DBackpropFilter"

    def run(x, filter_sizes, dy):
        fs = _bp_filter_sizes(label, x, filter_sizes, depthwise=True)
        xh = ca.to_nhwc(x)
        geo = _bp_dims(label, ca, xh.shape, fs, dy, depthwise=True)
        df = _depthwise_filter_grad(_as(xh, cd), _as(ca.to_nhwc(dy), cd), ca, fs, geo, cd)
        return (_as(df, dt),)

    return _quiet(run)


# --- pooling ----------------------------------------------------------------------------------
class _Pool(_Layout):
    """Pooling parameters (NHWC order) from attrs or, for the V2 ops, from inputs."""

    __slots__ = ("op", "fmt", "padding", "ep", "kind")

    def __init__(self, node, kind):
        self.op = node.op
        self.kind = kind  # "max", "avg", "maxgrad" (no depth pooling), "argmax" (NHWC only)
        self.fmt = _data_format(node) if kind != "argmax" else "NHWC"
        self.padding = _str(node.attr("padding"), "VALID")
        ep = [int(v) for v in (node.attr("explicit_paddings") or [])]
        self.ep = (0, 0, 0, 0)
        if self.padding == "EXPLICIT":
            if len(ep) != 8:
                raise _err(f"explicit_paddings attribute must contain 8 values, but got: {len(ep)}")
            pairs = [ep[0:2], ep[2:4], ep[4:6], ep[6:8]]
            if self.fmt == "NCHW":
                pairs = [pairs[0], pairs[2], pairs[3], pairs[1]]
            if min(ep) < 0 or pairs[0] != [0, 0] or pairs[3] != [0, 0]:
                raise _unimpl("Pooling with explicit padding supports only nonnegative paddings "
                              "in the spatial dimensions.")
            self.ep = (pairs[1][0], pairs[1][1], pairs[2][0], pairs[2][1])

    def window(self, ksize, strides):
        """Validated NHWC (ksize, strides)."""
        ks = [int(v) for v in np.asarray(ksize).reshape(-1)]
        st = [int(v) for v in np.asarray(strides).reshape(-1)]
        if len(ks) != 4:
            raise _err("Sliding window ksize field must specify 4 dimensions")
        if len(st) != 4:
            raise _err("Sliding window stride field must specify 4 dimensions")
        ks, st = _nhwc(ks, self.fmt), _nhwc(st, self.fmt)
        for i in range(4):
            if ks[i] <= 0:
                raise _err(f"Sliding window ksize for dimension {i} was zero.")
            if st[i] <= 0:
                raise _err(f"Sliding window stride for dimension {i} was zero.")
        if ks[0] != 1 or st[0] != 1:
            raise _unimpl("Pooling is not yet supported on the batch dimension.")
        if ks[3] != 1 or st[3] != 1:
            if self.kind == "avg":
                raise _unimpl("Non-spatial pooling is not yet supported. Volunteers? :)")
            if self.kind == "maxgrad":
                raise _unimpl("MaxPoolingGrad is not yet supported on the depth dimension.")
            if self.kind == "argmax":
                raise _unimpl("Depthwise max pooling is not supported by MaxPoolWithArgmax.")
            if ks[1] != 1 or ks[2] != 1:
                raise _unimpl("MaxPooling supports exactly one of pooling across depth or pooling "
                              "across width/height.")
            if ks[3] != st[3]:
                raise _unimpl("Depthwise max pooling requires the depth window to equal the depth "
                              "stride.")
        return ks, st

    def geometry(self, shape, ks, st):
        _, h, w, _ = shape
        oh, pt, pb = _out_size(h, ks[1], st[1], 1, self.padding, self.ep[0], self.ep[1])
        ow, pl, pr = _out_size(w, ks[2], st[2], 1, self.padding, self.ep[2], self.ep[3])
        return oh, ow, pt, pb, pl, pr


    def taps(self, shape_nhwc, ks, st):
        """(_Taps in this layout, AvgPool's divisor per output row and column shaped for it)
        for an input of NHWC shape ``shape_nhwc``. NCHW is computed as it comes (measured
        faster than NHWC copies)."""
        n, h, w, c = shape_nhwc
        oh, ow, pt, pb, pl, pr = self.geometry(shape_nhwc, ks, st)
        nchw = self.fmt == "NCHW"
        taps = _Taps(nchw, (h, w), (oh, ow), ks[1:3], st[1:3], (pt, pl))

        def counts(dt):
            cnt = (_avg_counts(h, oh, ks[1], st[1], pt)[:, None]
                   * _avg_counts(w, ow, ks[2], st[2], pl)[None, :]).astype(dt)
            return cnt if nchw else cnt[:, :, None]

        return taps, counts

    def check4(self, a, what="tensor_in"):
        if a.ndim != 4:
            raise _err(f"{what} must be 4-dimensional (2 spatial dimensions), got shape "
                       f"{_shp(a.shape)}")


def _valid_mask(n, o, k_i, s, pb):
    """(o,) bool: whether window tap k_i of each output lies inside the unpadded input."""
    pos = np.arange(o) * s + k_i - pb
    return (pos >= 0) & (pos < n)


def _argmax_taps(x, ks, st, geo):
    """TF's argmax rule over the windows of NHWC ``x``: (cur values, tap index) per output, the
    tap index i * kw + j of the window's first element that no later element strictly exceeds
    (-1 where a window has no in-bounds element)."""
    n, h, w, c = x.shape
    oh, ow, pt, pb, pl, pr = geo
    kh, kw, sh, sw = ks[1], ks[2], st[1], st[2]
    padded = pt or pb or pl or pr
    xp = _pad(x, pt, pb, pl, pr)
    it = np.int16 if kh * kw < 2 ** 15 else np.int64
    if not padded:  # every tap is in bounds: start from the first
        cur = np.array(_tap(xp, 0, 0, sh, sw, oh, ow))
        idx = np.zeros((n, oh, ow, c), it)
    else:
        cur = np.zeros((n, oh, ow, c), x.dtype)
        idx = np.full((n, oh, ow, c), -1, it)
    if cur.size == 0:
        return cur, idx
    upd = np.empty(cur.shape, bool)
    for i in range(kh):
        vr = _valid_mask(h, oh, i, sh, pt) if padded else None
        for j in range(kw):
            if not padded and i == j == 0:
                continue
            v = _tap(xp, i, j, sh, sw, oh, ow)
            np.less(cur, v, out=upd)
            if padded:
                upd |= idx < 0
                upd &= (vr[:, None] & _valid_mask(w, ow, j, sw, pl)[None, :])[None, :, :, None]
            np.copyto(cur, v, where=upd)
            np.copyto(idx, i * kw + j, where=upd)
    return cur, idx


def _scatter_taps(vals, ks, st, geo, in_shape, dt, mask_idx=None):
    """Add (N, oh, ow, C) ``vals`` into an (N, H, W, C) zero array at each window's tap
    ``mask_idx`` (argmax routing), or at every tap (``mask_idx`` None: AvgPoolGrad)."""
    n, h, w, c = in_shape
    oh, ow, pt, pb, pl, pr = geo
    kh, kw, sh, sw = ks[1], ks[2], st[1], st[2]
    hp = _padded_extent(h, oh, kh, sh, 1, pt, pb)
    wp = _padded_extent(w, ow, kw, sw, 1, pl, pr)
    out = np.zeros((n, hp, wp, c), dt)
    if vals.size:
        zero = np.zeros((), dt)
        for i in range(kh):
            for j in range(kw):
                t = _tap(out, i, j, sh, sw, oh, ow)
                if mask_idx is None:
                    t += vals
                else:
                    t += np.where(mask_idx == i * kw + j, vals, zero)
    return np.ascontiguousarray(out[:, pt:pt + h, pl:pl + w, :])


def _maxpool_nhwc(x, ks, st, pool, low):
    n, h, w, c = x.shape
    if ks[3] != 1:  # depth pooling
        d = ks[3]
        if c % d:
            raise _unimpl("Depthwise max pooling requires the depth window to evenly divide the "
                          "input depth.")
        return x.reshape(n, h, w, c // d, d).max(axis=-1)
    oh, ow, pt, pb, pl, pr = pool.geometry(x.shape, ks, st)
    out = np.full((n, oh, ow, c), low, x.dtype)
    if out.size == 0:
        return out
    xp = _pad(x, pt, pb, pl, pr, value=low)
    if x.dtype.kind != "f":
        for i in range(ks[1]):
            for j in range(ks[2]):
                np.maximum(out, _tap(xp, i, j, st[1], st[2], oh, ow), out=out)
        return out
    m = np.empty(out.shape, bool)
    for i in range(ks[1]):
        for j in range(ks[2]):
            # TF's rule: replace only when strictly greater (NaN never is; 0.0 stays before -0.0)
            v = _tap(xp, i, j, st[1], st[2], oh, ow)
            np.less(out, v, out=m)
            np.copyto(out, v, where=m)
    return out


# --- pooling over window taps -----------------------------------------------------------------
def _pooled_shape(x_shape, nchw, oh, ow):
    n = x_shape[0]
    return (n, x_shape[1], oh, ow) if nchw else (n, oh, ow, x_shape[3])


def _rows_of(taps, a, b0, b1, r0, r1):
    """Rows r0:r1 of images b0:b1 of an array on the taps' output grid (a view)."""
    return a[taps._sl(slice(b0, b1), slice(r0, r1), slice(None))]


def _row_bytes(taps, in_w, c, out_itemsize, in_itemsize):
    """Bytes touched per output row: its outputs and its share of the input rows."""
    return taps.ow * c * out_itemsize + taps.sh * in_w * c * in_itemsize


def _has_negative_zero(a):
    """Whether float array ``a`` holds a -0.0 (the bit pattern of the signed integer minimum)."""
    it = np.dtype(f"i{a.dtype.itemsize}")
    if a.size == 0:
        return False
    # -0.0 is the only float whose bits are the integer minimum: one min-reduction, no mask
    return bool(a.view(it).min() == np.iinfo(it).min)


def _pool_reduce(x, taps, op, init, c, post):
    """y = ``op`` (fmax, maximum, add) over each window's in-bounds elements, from ``init``;
    ``post(block, y_block, stage1_taps_or_taps)`` runs on each block after it (its results are
    returned). For windows of 3 x 3 and more: the rows of the window first, over whole
    contiguous rows, then its columns (kh + kw passes instead of kh * kw)."""
    y = np.empty(_pooled_shape(x.shape, taps.nchw, taps.oh, taps.ow), x.dtype)
    if y.size == 0:
        return y, []
    in_w = x.shape[3] if taps.nchw else x.shape[2]
    sep = taps.kh > 1 and taps.kw > 1 and taps.kh * taps.kw > taps.kh + taps.kw
    rows_t, cols_t = taps.separable() if sep else (None, None)

    def block(blk):
        b0, b1, r0, r1 = blk
        yb = _rows_of(taps, y, *blk)
        yb.fill(init)
        if not sep:
            for _, _, oi, ii, _ in taps.index(blk):
                o = y[oi]
                op(o, x[ii], out=o)
            return post(blk, yb, taps)
        nb, nr = b1 - b0, r1 - r0
        t = np.full((nb, c, nr, in_w) if taps.nchw else (nb, nr, in_w, c), init, x.dtype)
        for _, _, _, ii, ri in rows_t.index(blk):
            o = t[ri]
            op(o, x[ii], out=o)
        for _, _, _, ii, ri in cols_t.index((0, nb, 0, nr)):
            o = yb[ri]
            op(o, t[ii], out=o)
        return post(blk, yb, rows_t)

    blocks = taps.blocks(x.shape[0], _row_bytes(taps, in_w, c, 2 * y.itemsize, x.itemsize))
    return y, _run_blocks(block, blocks, x.nbytes + y.nbytes)


def _maxpool_taps(x, taps, low, c):
    """Max pooling of ``x`` (in its layout) with TF's rule: the output starts at the dtype's
    lowest value and takes a window element only when strictly greater. ``fmax`` gives that
    maximum (NaN never wins; -inf loses to the lowest value) except for the sign of a zero
    maximum when the window also holds a -0.0: then returns None (the caller scans in order)."""
    is_float = x.dtype.kind == "f"

    def post(blk, yb, t):
        if is_float and not yb.all():  # a zero output: does a -0.0 take part?
            return any(_has_negative_zero(x[ii]) for _, _, _, ii, _ in t.index(blk))
        return False

    y, neg_zero = _pool_reduce(x, taps, np.fmax if is_float else np.maximum, low, c, post)
    return None if any(neg_zero) else y


def _avgpool_taps(x, taps, cnt, c):
    def post(blk, sb, t):
        sb /= cnt[blk[2]:blk[3]]

    return _pool_reduce(x, taps, np.add, 0, c, post)[0]


def _avgpool_grad_taps(g, taps, cnt, in_shape, c):
    """Each window's gradient over its element count, added to its in-bounds elements (a plain
    copy where windows do not overlap)."""
    dx = np.zeros(in_shape, g.dtype)
    if g.size == 0 or dx.size == 0:
        return dx
    overlap = taps.overlapping()
    in_w = in_shape[3] if taps.nchw else in_shape[2]

    def block(blk):
        vb = _rows_of(taps, g, *blk) / cnt[blk[2]:blk[3]]
        for _, _, oi, ii, ri in taps.index(blk):
            d = dx[ii]
            if overlap:
                np.add(d, vb[ri], out=d)
            else:
                np.copyto(d, vb[ri])

    blocks = taps.blocks(in_shape[0], _row_bytes(taps, in_w, c, 2 * g.itemsize, dx.itemsize))
    _run_blocks(block, blocks, dx.nbytes + g.nbytes, scatter=overlap)
    return dx


def _maxpool_grad_taps(x, g, taps, gd, c):
    """MaxPoolGrad by TF's argmax rule (a window's first in-bounds element, replaced by a later
    one only when strictly greater: without NaN, the first of the window's maxima in row-major
    order): each window's maximum, then per tap in that order, the windows whose maximum it
    holds and that no earlier tap took send their gradient there. None when a window holds a
    NaN (the caller runs TF's scan)."""
    dx = np.zeros(x.shape, gd)
    if dx.size == 0 or g.size == 0:
        return dx
    is_float = x.dtype.kind == "f"
    low = -np.inf if is_float else np.iinfo(x.dtype).min
    overlap = taps.overlapping()
    in_w = x.shape[3] if taps.nchw else x.shape[2]

    def block(blk):
        shape = _rows_of(taps, g, *blk).shape
        m = np.full(shape, low, x.dtype)
        index = list(taps.index(blk))
        for _, _, _, ii, ri in index:
            o = m[ri]
            np.maximum(o, x[ii], out=o)
        if is_float and np.isnan(m).any():
            return False
        taken = np.zeros(shape, bool)
        eq = np.empty(shape, bool)
        tmp = np.empty(shape, gd) if overlap else None
        for k, (_, _, oi, ii, ri) in enumerate(index):
            e = eq[ri]
            np.equal(x[ii], m[ri], out=e)
            if k:
                np.greater(e, taken[ri], out=e)  # and no earlier tap took the window
            if k + 1 < len(index):
                np.logical_or(taken[ri], e, out=taken[ri])
            d = dx[ii]
            if overlap:
                t = tmp[ri]
                np.multiply(g[oi], e, out=t)
                np.add(d, t, out=d)
            else:  # each input element is in one window at most (dx keeps its +0.0 elsewhere)
                np.copyto(d, g[oi], where=e)
        return True

    blocks = taps.blocks(x.shape[0], _row_bytes(taps, in_w, c, g.itemsize + 3, x.itemsize
                                                 + dx.itemsize))
    if not all(_run_blocks(block, blocks, x.nbytes + dx.nbytes, scatter=overlap)):
        return None
    return dx


def _maxpool_grad_tiles(x, g, ks, geo, nchw, gd):
    """MaxPoolGrad for windows that tile the input (ksize == strides in H and W, no padding
    before: VALID, or SAME/EXPLICIT padding only after), in ``x``'s layout: the windows are the
    (kh, kw) blocks of a reshape, so every tap is one strided view of the whole input and
    every input element is in one window at most. Each window's maximum, then per tap in
    row-major order the windows whose maximum it holds and that no earlier tap took: without
    NaN that is TF's argmax rule (the first element, replaced only by a strictly greater one:
    the first of tied maxima). Rows and columns past the last window get 0; padding after the
    input reads as the lowest value, which never comes before an in-bounds element of its
    window that ties with it (a window's first element is in bounds). None when a window holds
    a NaN (the caller runs TF's scan)."""
    kh, kw = ks[1], ks[2]
    oh, ow = geo[0], geo[1]
    if nchw:
        n, c, h, w = x.shape
    else:
        n, h, w, c = x.shape
    hh, ww = oh * kh, ow * kw
    if n == 0 or c == 0 or oh == 0 or ow == 0:
        return np.zeros(x.shape, gd)
    rh, rw = min(h, hh), min(w, ww)  # the input rows and columns some window reads

    def region(a, r, q):
        return a[:, :, :r, :q] if nchw else a[:, :r, :q]

    is_float = x.dtype.kind == "f"
    if hh > h or ww > w:
        low = -np.inf if is_float else np.iinfo(x.dtype).min
        xs = np.full((n, c, hh, ww) if nchw else (n, hh, ww, c), low, x.dtype)
        region(xs, rh, rw)[...] = region(x, rh, rw)
    else:
        xs = region(x, hh, ww)
    if nchw:
        xr = xs.reshape(n, c, oh, kh, ow, kw)
        taps = [xr[:, :, :, i, :, j] for i in range(kh) for j in range(kw)]
    else:
        xr = xs.reshape(n, oh, kh, ow, kw, c)
        taps = [xr[:, :, i, :, j, :] for i in range(kh) for j in range(kw)]
    if len(taps) == 1:
        m = taps[0]
    else:
        m = np.maximum(taps[0], taps[1])
        for t in taps[2:]:
            np.maximum(m, t, out=m)
    if is_float and np.isnan(m).any():
        return None
    dxr = np.empty(xr.shape, gd)  # every element is some tap's
    taken = np.empty(m.shape, bool)
    e = np.empty(m.shape, bool)
    last = len(taps) - 1
    for k, t in enumerate(taps):
        i, j = divmod(k, kw)
        if k == 0:
            np.equal(t, m, out=taken)
            hit = taken
        else:
            np.equal(t, m, out=e)
            np.greater(e, taken, out=e)  # and no earlier tap took the window
            if k < last:
                np.logical_or(taken, e, out=taken)
            hit = e
        np.multiply(g, hit, out=dxr[:, :, :, i, :, j] if nchw else dxr[:, :, i, :, j, :])
    dxs = dxr.reshape(xs.shape)
    if (hh, ww) == (h, w):
        return dxs
    dx = np.zeros(x.shape, gd)
    region(dx, rh, rw)[...] = region(dxs, rh, rw)
    return dx


def _maxpool_tiles(x, ks, geo, nchw, low):
    """MaxPool for windows that tile the input (as ``_maxpool_grad_tiles``), in ``x``'s layout:
    ``fmax`` over the taps (whole strided views), then with the dtype's lowest value (so NaN
    never wins, and an all-NaN or all -inf window gives the lowest value, TF's rule). None when
    a zero maximum meets a -0.0 in the input (the sign then depends on the order: the caller
    scans in order); one pass over ``x`` decides that, only when some maximum is zero."""
    kh, kw = ks[1], ks[2]
    oh, ow = geo[0], geo[1]
    if nchw:
        n, c, h, w = x.shape
    else:
        n, h, w, c = x.shape
    hh, ww = oh * kh, ow * kw
    out_shape = (n, c, oh, ow) if nchw else (n, oh, ow, c)
    if 0 in out_shape:
        return np.empty(out_shape, x.dtype)

    def region(a, r, q):
        return a[:, :, :r, :q] if nchw else a[:, :r, :q]

    if hh > h or ww > w:
        xs = np.full((n, c, hh, ww) if nchw else (n, hh, ww, c), low, x.dtype)
        region(xs, min(h, hh), min(w, ww))[...] = region(x, min(h, hh), min(w, ww))
    else:
        xs = region(x, hh, ww)
    if nchw:
        xr = xs.reshape(n, c, oh, kh, ow, kw)
        taps = [xr[:, :, :, i, :, j] for i in range(kh) for j in range(kw)]
    else:
        xr = xs.reshape(n, oh, kh, ow, kw, c)
        taps = [xr[:, :, i, :, j, :] for i in range(kh) for j in range(kw)]
    is_float = x.dtype.kind == "f"
    op = np.fmax if is_float else np.maximum
    y = np.empty(out_shape, x.dtype)
    if len(taps) == 1:
        op(taps[0], low, out=y)
        return y
    op(taps[0], taps[1], out=y)
    for t in taps[2:]:
        op(y, t, out=y)
    if is_float:
        np.fmax(y, low, out=y)
        if not y.all() and _has_negative_zero(x):
            return None
    return y


def _pool_builder(node, kind, v2):
    pool = _Pool(node, kind)
    fixed = None if v2 else pool.window(node.attr("ksize"), node.attr("strides"))
    return pool, fixed


def _maxpool_kernel(node, v2):
    pool, fixed = _pool_builder(node, "max", v2)
    dt = _out(node)
    cd = _F32 if dt == _BF16 else dt
    low = _lowest(dt)  # the output dtype's (bfloat16's lowest is exact in float32)
    jit = pool.fmt == "NHWC" and _jit.enabled()

    def run(x, ksize=None, strides=None):
        ks, st = fixed if fixed is not None else pool.window(ksize, strides)
        pool.check4(x)
        xc = _as(x, cd)
        y = None
        if ks[3] == 1 and jit:  # one pass in numba, TF's rule exactly
            geo = pool.geometry(x.shape, ks, st)
            y = _jit.maxpool_nhwc(xc, ks, st, geo, low)
        elif ks[3] == 1:
            shape = pool.shape_nhwc(x.shape)
            geo = pool.geometry(shape, ks, st)
            if ks[1:3] == st[1:3] and geo[2] == 0 and geo[4] == 0:  # windows that tile x
                y = _maxpool_tiles(xc, ks, geo, pool.fmt == "NCHW", low)
            else:
                y = _maxpool_taps(xc, pool.taps(shape, ks, st)[0], low, shape[3])
        if y is None:  # depth pooling, or a -0.0 that may decide the sign of a zero output
            y = pool.from_nhwc(_maxpool_nhwc(pool.to_nhwc(xc), ks, st, pool, low))
        return (_as(y, dt),)

    return _quiet(run)


@register("MaxPool", "CPU", type_constraints={"T": _REAL_T})
def _maxpool(node, ctx):
    return _maxpool_kernel(node, False)


@register("MaxPoolV2", "CPU", host_memory=("ksize", "strides"), type_constraints={"T": _REAL_T})
def _maxpool_v2(node, ctx):
    return _maxpool_kernel(node, True)


def _avg_counts(n, o, k, s, pb):
    start = np.arange(o) * s - pb
    return np.minimum(start + k, n) - np.maximum(start, 0)


@register("AvgPool", "CPU", type_constraints={"T": _FLOAT_T})
def _avgpool(node, ctx):
    pool = _Pool(node, "avg")
    ks, st = pool.window(node.attr("ksize"), node.attr("strides"))
    dt = _out(node)
    cd = _cdt(dt)

    def run(x):
        pool.check4(x)
        shape = pool.shape_nhwc(x.shape)
        taps, counts = pool.taps(shape, ks, st)
        s = _avgpool_taps(_as(x, cd), taps, counts(cd), shape[3])
        return (_as(s, dt),)

    return _quiet(run)


def _avgpool_grad_input_shape(pool, orig_input_shape, grad):
    """AvgPoolGrad's checks of its arguments: the input shape (in the data format), a tuple
    (the GPU kernel's too)."""
    shp = np.asarray(orig_input_shape)
    if shp.ndim != 1 or shp.size != 4:
        raise _err("out_backprop must be 1-dimensional and 4 elements")
    pool.check4(grad, "out_backprop")
    in_shape = tuple(int(v) for v in shp)
    if min(in_shape) < 0:
        raise _err(f"orig_input_shape must be nonnegative, got {_shp(in_shape)}")
    return in_shape


def _check_avgpool_grad_pooled(pool, grad, pooled_nhwc, orig_input_shape):
    if pool.shape_nhwc(grad.shape) != pooled_nhwc:
        raise _err(f"out_backprop shape {_shp(grad.shape)} does not match the pooled shape of "
                   f"orig_input_shape {_shp(orig_input_shape)}")


@register("AvgPoolGrad", "CPU", host_memory=("orig_input_shape",), type_constraints={"T": _FLOAT_T})
def _avgpool_grad(node, ctx):
    pool = _Pool(node, "avg")
    ks, st = pool.window(node.attr("ksize"), node.attr("strides"))
    dt = _out(node)
    cd = _cdt(dt)

    def run(orig_input_shape, grad):
        shp = _avgpool_grad_input_shape(pool, orig_input_shape, grad)
        in_shape = pool.shape_nhwc(shp)
        n, h, w, c = in_shape
        taps, counts = pool.taps(in_shape, ks, st)
        _check_avgpool_grad_pooled(pool, grad, (n, taps.oh, taps.ow, c), orig_input_shape)
        dx = _avgpool_grad_taps(_as(grad, cd), taps, counts(cd), shp, c)
        return (_as(dx, dt),)

    return _quiet(run)


def _check_pool_ranks(orig_input, orig_output, grad=None):
    """MaxPoolGrad's (``grad`` given) and MaxPoolGradGrad's rank checks."""
    if orig_input.ndim != 4:
        raise _err("tensor_in must be 4-dimensional")
    if orig_output.ndim != 4:
        raise _err("tensor_out must be 4-dimensional")
    if grad is not None and grad.ndim != 4:
        raise _err("out_backprop must be 4-dimensional")


def _check_pooled(pool, what, a, shape):
    if a.shape != tuple(shape):
        raise _err(f"{what} shape {_shp(a.shape)} does not match the pooled shape {_shp(shape)}")


def _maxpool_grad_kernel(node, v2):
    pool, fixed = _pool_builder(node, "maxgrad", v2)
    dt = _out(node)
    cd = _F32 if dt == _BF16 else dt
    gd = _cdt(dt)
    jit = pool.fmt == "NHWC" and _jit.enabled()

    def run(orig_input, orig_output, grad, ksize=None, strides=None):
        ks, st = fixed if fixed is not None else pool.window(ksize, strides)
        _check_pool_ranks(orig_input, orig_output, grad)
        x = _as(pool.to_nhwc(orig_input), cd)
        g = _as(pool.to_nhwc(grad), gd)
        geo = pool.geometry(x.shape, ks, st)
        pooled = (x.shape[0], geo[0], geo[1], x.shape[3])
        _check_pooled(pool, "out_backprop", g, pooled)
        if jit:  # one pass in numba, TF's argmax rule exactly
            dx = _jit.maxpool_grad_nhwc(x, g, ks, st, geo, gd)
            return (_as(dx, dt),)
        if ks[1:3] == st[1:3] and geo[2] == 0 and geo[4] == 0:  # windows that tile the input
            dx = _maxpool_grad_tiles(_as(orig_input, cd), _as(grad, gd), ks, geo,
                                     pool.fmt == "NCHW", gd)
            if dx is not None:
                return (_as(dx, dt),)
        taps = pool.taps(x.shape, ks, st)[0]
        dx = _maxpool_grad_taps(_as(orig_input, cd), _as(grad, gd), taps, gd, x.shape[3])
        if dx is None:  # a NaN in a window: TF's scan, in order
            _, idx = _argmax_taps(x, ks, st, geo)
            dx = pool.from_nhwc(_scatter_taps(g, ks, st, geo, x.shape, gd, mask_idx=idx))
        return (_as(dx, dt),)

    return _quiet(run)


@register("MaxPoolGrad", "CPU", type_constraints={"T": _REAL_T})
def _maxpool_grad(node, ctx):
    return _maxpool_grad_kernel(node, False)


# MaxPoolGrad + the ReluGrad that alone reads it, fused by the plan (runtime/executor.py) where
# the ReluGrad's features are the pool's input (a ReLU, then a max pool): one numba pass, the
# ReLU's mask taken where the gradient is written, instead of another pass over the gradient.
@register_fused(("MaxPoolGrad", "ReluGrad"), "CPU")
def _fused_maxpool_relu_grad(nodes, unfused, ctx):
    pool_node, relu_node = nodes
    dt = _out(pool_node)
    pool, fixed = _pool_builder(pool_node, "maxgrad", False)
    if pool.fmt != "NHWC" or dt not in (_F32, _F64) or _out(relu_node) != dt \
            or not _jit.enabled():
        return None
    ks, st = fixed

    def grads(orig_input, orig_output, grad, features, bias):
        if not (features is orig_input and orig_input.dtype == grad.dtype == dt
                and orig_input.flags.c_contiguous and grad.flags.c_contiguous):
            return None
        try:
            _check_pool_ranks(orig_input, orig_output, grad)
            geo = pool.geometry(orig_input.shape, ks, st)
            _check_pooled(pool, "out_backprop", grad,
                          (orig_input.shape[0], geo[0], geo[1], orig_input.shape[3]))
        except Exception as e:  # noqa: BLE001 - named after the MaxPoolGrad node
            raise kernel_registry.FusedMemberError(0, e, (orig_input, orig_output, grad)) \
                from None
        return _jit.maxpool_grad_nhwc(orig_input, grad, ks, st, geo, dt, relu=True, bias=bias)

    def run(orig_input, orig_output, grad, features):
        dx = grads(orig_input, orig_output, grad, features, False)
        if dx is None:
            return kernel_registry.run_members(unfused, (orig_input, orig_output, grad),
                                               (features,))
        return (dx,)

    quiet = _quiet(run)

    def with_bias_grad(bias_node, bias_run):
        """This kernel followed by the BiasAddGrad (``bias_node``, its kernel ``bias_run``)
        of its output, as member 2: (dx, bias gradient), the sum in the same pass (executor:
        _bias_into_pool_grads); None where that node's dtype or layout differ."""
        if _out(bias_node) != dt or bias_node.attr("data_format", b"NHWC") != b"NHWC":
            return None

        def run_bias(orig_input, orig_output, grad, features):
            got = grads(orig_input, orig_output, grad, features, True)
            if got is not None:
                return got[0], got[1].astype(dt)
            (dx,) = run(orig_input, orig_output, grad, features)
            try:
                (b,) = bias_run(dx)
            except Exception as e:  # noqa: BLE001 - named after the BiasAddGrad node
                raise kernel_registry.FusedMemberError(2, e, (dx,)) from None
            return dx, b

        return _quiet(run_bias)

    quiet.with_bias_grad = with_bias_grad
    return quiet


@register("MaxPoolGradV2", "CPU", host_memory=("ksize", "strides"), type_constraints={"T": _REAL_T})
def _maxpool_grad_v2(node, ctx):
    return _maxpool_grad_kernel(node, True)


def _maxpool_gradgrad_kernel(node, v2):
    pool, fixed = _pool_builder(node, "maxgrad", v2)
    dt = _out(node)
    cd = _F32 if dt == _BF16 else dt

    def run(orig_input, orig_output, grad, ksize=None, strides=None):
        ks, st = fixed if fixed is not None else pool.window(ksize, strides)
        _check_pool_ranks(orig_input, orig_output)
        x = _as(pool.to_nhwc(orig_input), cd)
        y = _as(pool.to_nhwc(orig_output), cd)
        g = pool.to_nhwc(grad)
        if g.shape != x.shape:
            raise _err(f"grad shape {_shp(grad.shape)} must equal orig_input shape "
                       f"{_shp(orig_input.shape)}")
        n, h, w, c = x.shape
        oh, ow, pt, pb, pl, pr = pool.geometry(x.shape, ks, st)
        _check_pooled(pool, "tensor_out", y, (n, oh, ow, c))
        out = np.zeros((n, oh, ow, c), dt)
        if out.size:
            padded = pt or pb or pl or pr
            xp = _pad(x, pt, pb, pl, pr)
            gp = _pad(g, pt, pb, pl, pr)
            done = np.zeros(out.shape, bool)
            for i in range(ks[1]):
                vr = _valid_mask(h, oh, i, st[1], pt) if padded else None
                for j in range(ks[2]):
                    hit = ~done & (_tap(xp, i, j, st[1], st[2], oh, ow) == y)
                    if padded:
                        vc = _valid_mask(w, ow, j, st[2], pl)
                        hit &= (vr[:, None] & vc[None, :])[None, :, :, None]
                    np.copyto(out, _tap(gp, i, j, st[1], st[2], oh, ow), where=hit)
                    done |= hit
        return (pool.from_nhwc(out),)

    return _quiet(run)


@register("MaxPoolGradGrad", "CPU", type_constraints={"T": _REAL_T})
def _maxpool_gradgrad(node, ctx):
    return _maxpool_gradgrad_kernel(node, False)


@register("MaxPoolGradGradV2", "CPU", host_memory=("ksize", "strides"),
          type_constraints={"T": _REAL_T})
def _maxpool_gradgrad_v2(node, ctx):
    return _maxpool_gradgrad_kernel(node, True)


@register("MaxPoolWithArgmax", "CPU", type_constraints={"T": _REAL_T, "Targmax": _INDEX_T})
def _maxpool_with_argmax(node, ctx):
    pool = _Pool(node, "argmax")
    ks, st = pool.window(node.attr("ksize"), node.attr("strides"))
    dt = _out(node, 0)
    at = _out(node, 1)
    cd = _F32 if dt == _BF16 else dt
    incl = bool(node.attr("include_batch_in_index", False))

    def run(x):
        if x.ndim != 4:
            raise _err(f"tensor_in must be 4-dimensional ({x.ndim})")
        xc = _as(x, cd)
        n, h, w, c = x.shape
        geo = pool.geometry(x.shape, ks, st)
        oh, ow, pt, pb, pl, pr = geo
        cur, idx = _argmax_taps(xc, ks, st, geo)
        i, j = np.divmod(idx, ks[2])
        ys = (np.arange(oh) * st[1] - pt)[None, :, None, None] + i
        xs = (np.arange(ow) * st[2] - pl)[None, None, :, None] + j
        am = (ys * w + xs) * c + np.arange(c)[None, None, None, :]
        if incl:
            am = am + (np.arange(n) * (h * w * c))[:, None, None, None]
        return _as(cur, dt), _as(am, at)

    return _quiet(run)


def _argmax_flat(argmax, incl, in_shape):
    n, h, w, c = in_shape
    a = argmax.astype(np.int64, copy=False).reshape(-1)
    if not incl and a.size:
        per = a.size // n
        a = a + np.arange(a.size, dtype=np.int64) // per * (h * w * c)
    return a


@register("MaxPoolGradWithArgmax", "CPU", type_constraints={"T": _REAL_T, "Targmax": _INDEX_T})
def _maxpool_grad_with_argmax(node, ctx):
    pool = _Pool(node, "argmax")
    ks, st = pool.window(node.attr("ksize"), node.attr("strides"))
    dt = _out(node)
    cd = _cdt(dt)
    incl = bool(node.attr("include_batch_in_index", False))

    def run(x, grad, argmax):
        if x.ndim != 4:
            raise _err(f"tensor_in must be 4-dimensional ({x.ndim})")
        geo = pool.geometry(x.shape, ks, st)
        pooled = (x.shape[0], geo[0], geo[1], x.shape[3])
        _check_pooled(pool, "grad", grad, pooled)
        _check_pooled(pool, "argmax", argmax, pooled)
        a = _argmax_flat(argmax, incl, x.shape)
        out = np.zeros(x.size, cd)
        if a.size:
            if a.min() < 0 or a.max() >= x.size:
                bad = a[(a < 0) | (a >= x.size)][0]
                raise _err(f"Invalid output gradient index: {bad}, 0, {x.size}")
            np.add.at(out, a, _as(grad, cd).reshape(-1))
        return (_as(out.reshape(x.shape), dt),)

    return _quiet(run)


@register("MaxPoolGradGradWithArgmax", "CPU", type_constraints={"T": _REAL_T, "Targmax": _INDEX_T})
def _maxpool_gradgrad_with_argmax(node, ctx):
    pool = _Pool(node, "argmax")
    ks, st = pool.window(node.attr("ksize"), node.attr("strides"))
    dt = _out(node)
    incl = bool(node.attr("include_batch_in_index", False))

    def run(x, grad, argmax):
        if x.ndim != 4:
            raise _err(f"tensor_in must be 4-dimensional ({x.ndim})")
        if grad.shape != x.shape:
            raise _err(f"grad shape {_shp(grad.shape)} must equal input shape {_shp(x.shape)}")
        geo = pool.geometry(x.shape, ks, st)
        pooled = (x.shape[0], geo[0], geo[1], x.shape[3])
        _check_pooled(pool, "argmax", argmax, pooled)
        a = _argmax_flat(argmax, incl, x.shape)
        if a.size and (a.min() < 0 or a.max() >= x.size):
            bad = a[(a < 0) | (a >= x.size)][0]
            raise _err(f"Invalid input gradient index: {bad}, 0, {x.size}")
        out = grad.reshape(-1)[a].reshape(pooled)
        return (_as(out, dt),)

    return _quiet(run)


# --- resizing ---------------------------------------------------------------------------------
def _resize_attrs(node):
    ac = bool(node.attr("align_corners", False))
    hp = bool(node.attr("half_pixel_centers", False))
    return ac, hp


def _resize_scale(in_size, out_size, ac):
    """TF's CalculateResizeScale, in float32."""
    if ac and out_size > 1:
        return np.float32(in_size - 1) / np.float32(out_size - 1)
    return np.float32(in_size) / np.float32(out_size)


def _bilinear_weights(in_size, out_size, ac, hp):
    """(lower, upper, lerp) per output position, TF's compute_interpolation_weights."""
    scale = _resize_scale(in_size, out_size, ac)
    x = np.arange(out_size, dtype=np.float32)
    if hp:
        src = (x + np.float32(0.5)) * scale - np.float32(0.5)
    else:
        src = x * scale
    fl = np.floor(src)
    lower = np.maximum(fl.astype(np.int64), 0)
    upper = np.minimum(np.ceil(src).astype(np.int64), in_size - 1)
    lerp = (src - fl).astype(np.float32)
    return lower, upper, lerp


def _nearest_index(in_size, out_size, ac, hp):
    scale = _resize_scale(in_size, out_size, ac)
    x = np.arange(out_size, dtype=np.float32)
    src = (x + np.float32(0.5)) * scale if hp else x * scale
    if ac:
        fl = np.floor(src)
        idx = fl + (src - fl >= np.float32(0.5))  # roundf: half away from zero (src >= 0)
    else:
        idx = np.floor(src)
    idx = np.minimum(idx.astype(np.int64), in_size - 1)
    if hp:
        idx = np.maximum(idx, 0)
    return idx


def _resize_validate(images, size, ac, hp):
    if hp and ac:
        raise _err("If half_pixel_centers is True, align_corners must be False.")
    if images.ndim != 4:
        raise _err(f"input must be 4-dimensional{_shp(images.shape)}")
    size = np.asarray(size)
    if size.ndim != 1:
        raise _err(f"shape_t must be 1-dimensional{_shp(size.shape)}")
    if size.size != 2:
        raise _err(f"shape_t must have two elements{_shp(size.shape)}")
    oh, ow = int(size[0]), int(size[1])
    if oh <= 0 or ow <= 0:
        raise _err("output dimensions must be positive")
    if images.shape[3] <= 0:
        raise _err("image must have at least one channel")
    if images.shape[1] <= 0 or images.shape[2] <= 0:
        raise _err("input image must be of non-zero size")
    return oh, ow


_RESIZE_T = [dtypes.int8, dtypes.uint8, dtypes.int16, dtypes.uint16, dtypes.int32, dtypes.int64,
             dtypes.float16, dtypes.bfloat16, dtypes.float32, dtypes.float64]


@register("ResizeBilinear", "CPU", host_memory=("size",), type_constraints={"T": _RESIZE_T})
def _resize_bilinear(node, ctx):
    ac, hp = _resize_attrs(node)

    def run(images, size):
        oh, ow = _resize_validate(images, size, ac, hp)
        n, h, w, c = images.shape
        yl, yu, ylerp = _bilinear_weights(h, oh, ac, hp)
        xl, xu, xlerp = _bilinear_weights(w, ow, ac, hp)
        img = _as(images, _F32)
        xlerp = xlerp[None, None, :, None]

        def hlerp(rows):  # TF's top_left + (top_right - top_left) * x_lerp, per source row
            left = np.take(rows, xl, axis=2)
            right = np.take(rows, xu, axis=2)
            right -= left
            right *= xlerp
            left += right
            return left

        if 2 * oh < h:   # downscaling: interpolate only the rows used
            top, bot = hlerp(np.take(img, yl, axis=1)), hlerp(np.take(img, yu, axis=1))
        else:            # every source row once, then pick
            hz = hlerp(img)
            top, bot = np.take(hz, yl, axis=1), np.take(hz, yu, axis=1)
        bot -= top
        bot *= ylerp[None, :, None, None]
        top += bot
        out = top
        return (_as(out, _F32),)

    return _quiet(run)


@register("ResizeNearestNeighbor", "CPU", host_memory=("size",), type_constraints={"T": _RESIZE_T})
def _resize_nearest(node, ctx):
    ac, hp = _resize_attrs(node)
    dt = _out(node)

    def run(images, size):
        oh, ow = _resize_validate(images, size, ac, hp)
        n, h, w, c = images.shape
        iy = _nearest_index(h, oh, ac, hp)
        ix = _nearest_index(w, ow, ac, hp)
        out = np.take(np.take(images, iy, axis=1), ix, axis=2)
        return (_as(out, dt),)

    return _quiet(run)


def _weight_matrix(lower, upper, lerp, in_size, dt):
    """(out, in) matrix of the bilinear weights: row y has 1 - lerp at lower, lerp at upper."""
    o = lower.shape[0]
    m = np.zeros((o, in_size), dt)
    r = np.arange(o)
    lerp = lerp.astype(dt)
    np.add.at(m, (r, lower), 1 - lerp)
    np.add.at(m, (r, upper), lerp)
    return m


def _resize_bilinear_grad_validate(grads, original_image, ac, hp):
    """ResizeBilinearGrad's checks: the (h, w) of the original image (the GPU kernel's too)."""
    if hp and ac:
        raise _err("If half_pixel_centers is True, align_corners must be False.")
    if grads.ndim != 4:
        raise _err(f"input_grad must be 4-dimensional{_shp(grads.shape)}")
    if original_image.ndim != 4:
        raise _err(f"original_image must be 4-dimensional{_shp(original_image.shape)}")
    n, oh, ow, c = grads.shape
    n0, h, w, c0 = original_image.shape
    if n0 != n or c0 != c:
        raise _err("original_image and input_grad must have the same batch size and channels: "
                   f"{_shp(original_image.shape)} vs {_shp(grads.shape)}")
    if h <= 0 or w <= 0:
        raise _err("original_image must be of non-zero size")
    return h, w


def _resize_nearest_grad_validate(grads, size, ac, hp):
    """ResizeNearestNeighborGrad's checks: the output (h, w)."""
    if hp and ac:
        raise _err("If half_pixel_centers is True, align_corners must be False.")
    if grads.ndim != 4:
        raise _err(f"input must be 4-dimensional{_shp(grads.shape)}")
    size = np.asarray(size)
    if size.ndim != 1:
        raise _err(f"shape_t must be 1-dimensional{_shp(size.shape)}")
    if size.size != 2:
        raise _err(f"shape_t must have two elements{_shp(size.shape)}")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise _err("output dimensions must be positive")
    return h, w


@register("ResizeBilinearGrad", "CPU", type_constraints={"T": _FLOAT_T})
def _resize_bilinear_grad(node, ctx):
    ac, hp = _resize_attrs(node)
    dt = _out(node)
    cd = _F64 if dt == _F64 else _F32

    def run(grads, original_image):
        h, w = _resize_bilinear_grad_validate(grads, original_image, ac, hp)
        n, oh, ow, c = grads.shape
        if oh <= 0 or ow <= 0:
            out = np.zeros((n, h, w, c), dt)
            return (out,)
        wy = _weight_matrix(*_bilinear_weights(h, oh, ac, hp), h, cd)   # (oh, h)
        wx = _weight_matrix(*_bilinear_weights(w, ow, ac, hp), w, cd)   # (ow, w)
        g = _as(grads, cd)
        t = np.matmul(wy.T, g.reshape(n, oh, ow * c)).reshape(n * h, ow, c)
        out = np.matmul(wx.T, t).reshape(n, h, w, c)
        return (_as(out, dt),)

    return _quiet(run)


def _segment_sum(a, idx, out_size, axis):
    """Sum the slices of ``a`` along ``axis`` that share a (nondecreasing) index in ``idx``."""
    shape = list(a.shape)
    shape[axis] = out_size
    out = np.zeros(shape, a.dtype)
    if a.shape[axis] == 0 or a.size == 0:
        return out
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    sums = np.add.reduceat(a, starts, axis=axis)
    sl = [slice(None)] * a.ndim
    sl[axis] = idx[starts]
    out[tuple(sl)] = sums
    return out


@register("ResizeNearestNeighborGrad", "CPU", host_memory=("size",),
          type_constraints={"T": [dtypes.uint8, dtypes.int8, dtypes.int16, dtypes.uint16,
                                  dtypes.int32, dtypes.int64] + _FLOAT_T})
def _resize_nearest_grad(node, ctx):
    ac, hp = _resize_attrs(node)
    dt = _out(node)
    cd = _cdt(dt)

    def run(grads, size):
        h, w = _resize_nearest_grad_validate(grads, size, ac, hp)
        n, oh, ow, c = grads.shape
        if oh <= 0 or ow <= 0:
            return (np.zeros((n, h, w, c), dt),)
        iy = _nearest_index(h, oh, ac, hp)
        ix = _nearest_index(w, ow, ac, hp)
        g = _as(grads, cd)
        t = _segment_sum(g, iy, h, 1)
        out = _segment_sum(t, ix, w, 2)
        return (_as(out, dt),)

    return _quiet(run)
