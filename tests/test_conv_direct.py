"""The direct convolution path (kernels_cpu/_gemm.py, conv_ops ``_conv_direct`` and
``_conv_filter_grad_direct``): float32 convolutions with up to 32 input channels and output
channels a multiple of 8 read the padded input through offsets, in generated numba loops
compiled with SLP vectorization; the input gradient takes it as a convolution of out_backprop.
Checked against float64 tap-by-tap references: strides, dilations, SAME/VALID/EXPLICIT
padding, NHWC and NCHW, row counts that leave remainders, reductions longer than one k block,
output channels tiled into 32/16/8 blocks, on one thread and on a team (rows split, and the
filter gradient's pixels split with per-thread partial sums)."""

import os

import numpy as np
import pytest

import mgrt.kernels_cpu.conv_ops as conv_ops
from mgrt.kernels_cpu import _gemm, _jit, _slide
from kernel_util import conv_node_def, run_kernel
from mgrt.runtime.errors import InvalidArgumentError

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def test_generated_loops_are_current():
    path = os.path.join(os.path.dirname(_gemm.__file__), "_gemm_loops.py")
    with open(path) as f:
        assert f.read() == _gemm.source(), "regenerate kernels_cpu/_gemm_loops.py from _gemm.source()"


def test_column_blocks():
    assert _gemm._blocks(8) == [(0, 8)]
    assert _gemm._blocks(40) == [(0, 32), (32, 8)]
    assert _gemm._blocks(56) == [(0, 32), (32, 16), (48, 8)]
    assert _gemm._blocks(64) == [(0, 32), (32, 32)]


def _grouped_offsets(rs, k, high):
    """k offsets (a multiple of GROUP) that run on by one within each group."""
    starts = rs.randint(0, high, size=k // _gemm.GROUP)
    return (starts[:, None] + np.arange(_gemm.GROUP)).reshape(-1)


@pytest.mark.parametrize("m", [1, 3, 8, 15, 25, 64, 65, 257, 1030])
@pytest.mark.parametrize("ncols", [8, 16, 24, 32, 40, 64])
@pytest.mark.parametrize("team,split", [(1, "rows"), (3, "rows"), (3, "k")])
@pytest.mark.parametrize("k", [0, 37, 100])
@pytest.mark.parametrize("group", [False, True])
def test_gather_matmul_against_numpy(m, ncols, team, split, k, group, monkeypatch):
    monkeypatch.setattr(_gemm, "_K_BLOCK", 32)  # k = 37 and 100: two and four blocks
    rs = np.random.RandomState(m * 100 + ncols + k)
    src = rs.randn(5000).astype(np.float32)
    rowoff = rs.randint(0, 2000, size=m)
    if group:  # 36 and 100: groups of 4 (the k split into items of whole groups)
        k -= k % _gemm.GROUP
        koff = _grouped_offsets(rs, k, 2990)
        assert _gemm.grouped(koff) or k == 0
    else:
        koff = rs.randint(0, 3000, size=k)
    b = rs.randn(k, ncols).astype(np.float32)
    out = np.full((m, ncols), np.nan, np.float32)
    _gemm.gather_matmul(src, rowoff, koff, b, out, team, split, group=group)
    a = src.astype(np.float64)[rowoff[:, None] + koff[None, :]]
    np.testing.assert_allclose(out, a @ b.astype(np.float64), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("team,split", [(1, "rows"), (3, "k")])
@pytest.mark.parametrize("m,calls", [(25, 1), (64, 1), (65, 2), (67, 2)])
def test_few_rows_go_as_one_call(m, calls, team, split, monkeypatch):
    """Up to _ONE_CALL_ROWS rows (a filter gradient's taps) run as one loop call per team
    item, the remainder block padded (its extra rows repeat the last offset), so that b is
    streamed once; more rows take whole blocks, then the remainder as a second call."""
    assert _gemm._ONE_CALL_ROWS == 64
    monkeypatch.setattr(_gemm, "_K_BLOCK", 16)
    rs = np.random.RandomState(m)
    src = rs.randn(3000).astype(np.float32)
    rowoff, koff = rs.randint(0, 1500, size=m), rs.randint(0, 1400, size=40)
    b = rs.randn(40, 16).astype(np.float32)
    out = np.full((m, 16), np.nan, np.float32)
    seen = []
    real = _gemm._kernel

    def counting(*a, **kw):
        fn = real(*a, **kw)

        def call(*args):
            seen.append(args[6] - args[5])  # rows m1 - m0 of this call
            return fn(*args)
        return call
    monkeypatch.setattr(_gemm, "_kernel", counting)
    _gemm.gather_matmul(src, rowoff, koff, b, out, team, split)
    items = team if split == "k" else 1
    assert len(seen) == calls * items
    assert all(r % _gemm.MB == 0 for r in seen)
    a = src.astype(np.float64)[rowoff[:, None] + koff[None, :]]
    np.testing.assert_allclose(out, a @ b.astype(np.float64), rtol=1e-5, atol=1e-4)


def test_grouped_offsets():
    g = _gemm.GROUP
    assert _gemm.grouped(np.array([5, 6, 7, 8, 20, 21, 22, 23][:2 * g]))
    assert _gemm.grouped(np.arange(3 * g) * 1)
    assert not _gemm.grouped(np.arange(3 * g) * 2)            # runs on by two
    assert not _gemm.grouped(np.arange(3 * g + 1))            # not whole groups
    assert not _gemm.grouped(np.array([], np.intp))
    odd = np.arange(2 * g)
    odd[g + 1] += 1
    assert not _gemm.grouped(odd)


def test_convolutions_take_the_grouped_loops_where_offsets_run_on():
    # taps: 16 channels run on (grouped); 1 channel, 5 taps a row: runs of 5 (not)
    assert conv_ops._offsets_entry(2, 12, 12, 16, 5, 5, (1, 1, 1, 1, 8, 8))[3]
    assert not conv_ops._offsets_entry(2, 12, 12, 1, 5, 5, (1, 1, 1, 1, 8, 8))[3]
    # pixels (a filter gradient's reduction): one channel, stride 1, rows of 28 (grouped);
    # 16 channels (not); rows of 6 pixels (not whole groups of 4)
    assert conv_ops._offsets_entry(2, 32, 32, 1, 5, 5, (1, 1, 1, 1, 28, 28))[2]
    assert not conv_ops._offsets_entry(2, 32, 32, 16, 5, 5, (1, 1, 1, 1, 28, 28))[2]
    assert not conv_ops._offsets_entry(2, 10, 10, 1, 5, 5, (1, 1, 1, 1, 6, 6))[2]


def test_gather_matmul_readonly_inputs():
    rs = np.random.RandomState(1)
    src = rs.randn(100).astype(np.float32)
    b = rs.randn(5, 8).astype(np.float32)
    src.flags.writeable = False
    b.flags.writeable = False
    out = np.empty((6, 8), np.float32)
    rowoff, koff = np.arange(6) * 10, np.arange(5)
    _gemm.gather_matmul(src, rowoff, koff, b, out)
    np.testing.assert_allclose(out, src[rowoff[:, None] + koff] @ b, rtol=1e-5, atol=1e-5)


def test_usable():
    assert _gemm.usable(np.float32, 16)
    assert not _gemm.usable(np.float32, 12)   # not a multiple of 8
    assert not _gemm.usable(np.float64, 16)   # float32 only
    assert not _gemm.usable(np.float32, 0)


# --- the convolutions --------------------------------------------------------------------------
_nd = conv_node_def


def _dim(n, k, s, d, padding, ep):
    eff = (k - 1) * d + 1
    if padding == "VALID":
        return (n - eff) // s + 1, 0, 0
    if padding == "SAME":
        o = -(-n // s)
        need = max(0, (o - 1) * s + eff - n)
        return o, need // 2, need - need // 2
    return (n + ep[0] + ep[1] - eff) // s + 1, ep[0], ep[1]


def _ref(x, f, st, dil, padding, ep):
    """float64 NHWC convolution (loop over taps), the padded input and the output size."""
    n, h, w, c = x.shape
    kh, kw, _, co = f.shape
    oh, pt, pb = _dim(h, kh, st[0], dil[0], padding, ep[:2])
    ow, pl, pr = _dim(w, kw, st[1], dil[1], padding, ep[2:])
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = np.zeros((n, oh, ow, co))
    taps = {}
    for i in range(kh):
        for j in range(kw):
            t = xp[:, i * dil[0]:i * dil[0] + (oh - 1) * st[0] + 1:st[0],
                   j * dil[1]:j * dil[1] + (ow - 1) * st[1] + 1:st[1], :]
            taps[i, j] = t
            y += t @ f[i, j].astype(np.float64)
    return y, taps


def _ref_filter_grad(taps, dy, shape):
    kh, kw, c, co = shape
    df = np.zeros(shape)
    d2 = dy.astype(np.float64).reshape(-1, co)
    for (i, j), t in taps.items():
        df[i, j] = t.reshape(-1, c).T @ d2
    return df


CASES = [
    # x NHWC, filter, strides, dilations, padding, explicit pads
    ((4, 28, 28, 1), (5, 5, 1, 16), (1, 1), (1, 1), "SAME", None),     # the benchmark's conv0
    ((3, 17, 23, 3), (5, 5, 3, 16), (1, 1), (1, 1), "VALID", None),
    ((2, 19, 16, 3), (3, 3, 3, 8), (2, 2), (1, 1), "SAME", None),
    ((2, 21, 18, 2), (3, 4, 2, 24), (2, 3), (1, 1), "VALID", None),
    ((2, 15, 21, 1), (2, 4, 1, 40), (1, 1), (2, 3), "SAME", None),
    ((3, 12, 13, 4), (3, 4, 4, 32), (1, 2), (1, 1), "EXPLICIT", (1, 2, 0, 3)),
    ((1, 9, 11, 16), (3, 1, 16, 8), (1, 1), (1, 1), "SAME", None),     # kw * C = 16
    ((2, 7, 7, 1), (7, 7, 1, 64), (3, 3), (1, 1), "SAME", None),
    ((3, 14, 14, 16), (5, 5, 16, 32), (1, 1), (1, 1), "SAME", None),   # the benchmark's conv1
    ((2, 9, 10, 32), (3, 3, 32, 24), (2, 1), (1, 2), "VALID", None),   # 32 channels
]


def _attrs(padding, st, dil, fmt, ep):
    if fmt == "NCHW":
        a = dict(T="float32", strides=[1, 1, *st], dilations=[1, 1, *dil])
    else:
        a = dict(T="float32", strides=[1, *st, 1], dilations=[1, *dil, 1])
    a.update(padding=padding, data_format=fmt)
    if padding == "EXPLICIT":
        pairs = [0, 0, ep[0], ep[1], ep[2], ep[3], 0, 0]
        a["explicit_paddings"] = [0, 0, 0, 0] + pairs[2:6] if fmt == "NCHW" else pairs
    return a


@pytest.fixture
def direct_calls(monkeypatch):
    """Counts the direct paths' products, _gemm's gathered rows and _slide's sliding windows
    (so a test knows which path ran): ("gather", "slide" or "slide_grad", output shape)."""
    calls = []
    gather, slide, slide_grad = _gemm.gather_matmul, _slide.conv, _slide.filter_grad

    def counting_gather(*a, **kw):
        calls.append(("gather", a[4].shape))
        return gather(*a, **kw)

    def counting_slide(*a, **kw):
        calls.append(("slide", a[6].shape))
        return slide(*a, **kw)

    def counting_slide_grad(*a, **kw):
        out = slide_grad(*a, **kw)
        calls.append(("slide_grad", out.shape))
        return out
    monkeypatch.setattr(_gemm, "gather_matmul", counting_gather)
    monkeypatch.setattr(_slide, "conv", counting_slide)
    monkeypatch.setattr(_slide, "filter_grad", counting_slide_grad)
    return calls


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_direct_conv_and_filter_grad_against_reference(case, fmt, conv_threads,
                                                        direct_calls):
    xs, fs, st, dil, padding, ep = CASES[case]
    rs = np.random.RandomState(case)
    x = rs.randn(*xs).astype(np.float32)
    f = rs.randn(*fs).astype(np.float32)
    want, taps = _ref(x, f, st, dil, padding, ep or (0, 0, 0, 0))
    attrs = _attrs(padding, st, dil, fmt, ep)
    nchw = fmt == "NCHW"
    xi = x.transpose(0, 3, 1, 2) if nchw else x
    (y,) = run_kernel(_nd("Conv2D", **attrs), [xi, f])
    assert len(direct_calls) == 1
    assert y.dtype == np.float32
    got = y.transpose(0, 2, 3, 1) if nchw else y
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    dy = rs.randn(*want.shape).astype(np.float32)
    dyi = dy.transpose(0, 3, 1, 2) if nchw else dy
    (df,) = run_kernel(_nd("Conv2DBackpropFilter", **attrs), [xi, np.array(fs, np.int32), dyi])
    assert len(direct_calls) == 2
    np.testing.assert_allclose(df, _ref_filter_grad(taps, dy, fs), rtol=1e-4, atol=2e-3)


def _ref_input_grad(dy, f, xs, st, dil, padding, ep):
    """float64 NHWC input gradient: each tap's out_backprop times the tap's filter, added back
    into the padded input's positions, the padding cut off."""
    n, h, w, c = xs
    kh, kw, _, co = f.shape
    oh, pt, pb = _dim(h, kh, st[0], dil[0], padding, ep[:2])
    ow, pl, pr = _dim(w, kw, st[1], dil[1], padding, ep[2:])
    dxp = np.zeros((n, h + pt + pb, w + pl + pr, c))
    for i in range(kh):
        for j in range(kw):
            dxp[:, i * dil[0]:i * dil[0] + (oh - 1) * st[0] + 1:st[0],
                j * dil[1]:j * dil[1] + (ow - 1) * st[1] + 1:st[1], :] += \
                dy.astype(np.float64) @ f[i, j].astype(np.float64).T
    return dxp[:, pt:pt + h, pl:pl + w]


INPUT_GRAD_CASES = [  # out_backprop channels (the filter's O) <= 32, C a multiple of 8
    ((3, 14, 14, 16), (5, 5, 16, 32), (1, 1), (1, 1), "SAME", None),   # the benchmark's conv1
    ((2, 11, 9, 8), (3, 3, 8, 16), (2, 2), (1, 1), "SAME", None),      # four phases
    ((2, 12, 13, 24), (3, 2, 24, 8), (1, 1), (2, 1), "VALID", None),
    ((1, 9, 9, 16), (3, 3, 16, 16), (2, 3), (1, 1), "EXPLICIT", (2, 1, 0, 2)),
]


def input_grad_case(spec, seed, fmt):
    """Runs Conv2DBackpropInput for a case (x shape, filter shape, strides, dilations,
    padding, explicit pads) on random filter and out_backprop: (got, want), NHWC."""
    xs, fs, st, dil, padding, ep = spec
    ep = ep or (0, 0, 0, 0)
    rs = np.random.RandomState(seed)
    f = rs.randn(*fs).astype(np.float32)
    oh = _dim(xs[1], fs[0], st[0], dil[0], padding, ep[:2])[0]
    ow = _dim(xs[2], fs[1], st[1], dil[1], padding, ep[2:])[0]
    dy = rs.randn(xs[0], oh, ow, fs[3]).astype(np.float32)
    nchw = fmt == "NCHW"
    sizes = np.array([xs[0], xs[3], xs[1], xs[2]] if nchw else xs, np.int32)
    (dx,) = run_kernel(_nd("Conv2DBackpropInput", **_attrs(padding, st, dil, fmt, ep)),
                       [sizes, f, dy.transpose(0, 3, 1, 2) if nchw else dy])
    got = dx.transpose(0, 2, 3, 1) if nchw else dx
    return got, _ref_input_grad(dy, f, xs, st, dil, padding, ep)


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", range(len(INPUT_GRAD_CASES)))
def test_direct_input_grad_against_reference(case, fmt, conv_threads, direct_calls):
    got, want = input_grad_case(INPUT_GRAD_CASES[case], 10 + case, fmt)
    assert direct_calls  # one product per phase
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)


def test_direct_path_only_where_it_wins(direct_calls):
    rs = np.random.RandomState(3)
    attrs = _attrs("SAME", (1, 1), (1, 1), "NHWC", None)
    for xs, fs in (((2, 8, 8, 64), (3, 3, 64, 16)),   # 64 input channels: im2col
                   ((2, 8, 8, 1), (3, 3, 1, 12))):    # 12 output channels: not a multiple of 8
        run_kernel(_nd("Conv2D", **attrs), [rs.randn(*xs).astype(np.float32),
                                            rs.randn(*fs).astype(np.float32)])
    attrs64 = dict(attrs, T="float64")
    run_kernel(_nd("Conv2D", **attrs64), [rs.randn(2, 8, 8, 1), rs.randn(3, 3, 1, 8)])
    assert direct_calls == []


def test_direct_path_off_gives_the_same(monkeypatch):
    rs = np.random.RandomState(5)
    x = rs.randn(3, 20, 20, 2).astype(np.float32)
    f = rs.randn(5, 5, 2, 16).astype(np.float32)
    attrs = _attrs("SAME", (1, 1), (1, 1), "NHWC", None)
    (a,) = run_kernel(_nd("Conv2D", **attrs), [x, f])
    monkeypatch.setattr(conv_ops, "_DIRECT", False)
    (b,) = run_kernel(_nd("Conv2D", **attrs), [x, f])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_nan_and_inf_reach_exactly_their_windows(conv_threads):
    x = np.ones((1, 9, 9, 1), np.float32)
    x[0, 2, 3, 0] = np.nan
    x[0, 7, 7, 0] = np.inf
    f = np.full((3, 3, 1, 8), 0.5, np.float32)
    attrs = _attrs("VALID", (1, 1), (1, 1), "NHWC", None)
    (y,) = run_kernel(_nd("Conv2D", **attrs), [x, f])
    nan = np.zeros((7, 7), bool)
    nan[0:3, 1:4] = True
    inf = np.zeros((7, 7), bool)
    inf[5:7, 5:7] = True
    np.testing.assert_array_equal(np.isnan(y[0, :, :, 0]), nan)
    np.testing.assert_array_equal(np.isposinf(y[0, :, :, 0]), inf)
    np.testing.assert_array_equal(y[0][~nan & ~inf], 4.5)


def test_readonly_feeds():
    rs = np.random.RandomState(2)
    x = rs.randn(2, 10, 10, 1).astype(np.float32)
    f = rs.randn(3, 3, 1, 8).astype(np.float32)
    x.flags.writeable = False
    f.flags.writeable = False
    attrs = _attrs("VALID", (1, 1), (1, 1), "NHWC", None)  # no padding: x is read in place
    (y,) = run_kernel(_nd("Conv2D", **attrs), [x, f])
    np.testing.assert_allclose(y, _ref(x, f, (1, 1), (1, 1), "VALID", (0,) * 4)[0],
                               rtol=1e-4, atol=1e-4)


def test_window_past_the_input_is_refused():
    xp = np.zeros((1, 4, 4, 1), np.float32)
    rowoff, koff = conv_ops._direct_offsets(1, 4, 4, 1, 3, 3, (1, 1, 1, 1, 3, 3))
    with pytest.raises(InvalidArgumentError, match="reaches past the padded input"):
        conv_ops._check_reach(xp, rowoff, koff)
    conv_ops._check_reach(np.zeros((1, 5, 5, 1), np.float32), *conv_ops._direct_offsets(
        1, 5, 5, 1, 3, 3, (1, 1, 1, 1, 3, 3)))


def test_jit_off_turns_the_path_off(monkeypatch):
    from mgrt.kernels_cpu import _jit
    monkeypatch.setitem(_jit._state, "on", False)
    assert not _gemm.usable(np.float32, 16)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("ncols", [16, 40])
@pytest.mark.parametrize("team", [1, 3])
@pytest.mark.parametrize("group", [False, True])
def test_bias_relu_in_the_loops_is_the_separate_pass_bit_for_bit(relu, ncols, team, group):
    """A _jit.BiasRelu epilogue is applied by the loops to the sums before they are stored:
    the same float32 additions and comparisons as the bias_relu pass after them (NaN stays)."""
    assert _jit.enabled()  # the numba loops load
    rs = np.random.RandomState(ncols + team)
    m, k = 203, 44  # 203 = 25 blocks of 8 and a remainder of 3
    src = rs.randn(4000).astype(np.float32)
    src[7] = np.nan
    rowoff = rs.randint(0, 2000, size=m)
    koff = _grouped_offsets(rs, k, 1890) if group else rs.randint(0, 1900, size=k)
    rowoff[5], koff[:4] = 4, np.arange(4)  # row 5 reads the NaN (src[4 + 3])
    b = rs.randn(k, ncols).astype(np.float32)
    bias = rs.randn(ncols).astype(np.float32)
    fused = np.full((m, ncols), -1, np.float32)
    _gemm.gather_matmul(src, rowoff, koff, b, fused, team, post=_jit.BiasRelu(bias, relu),
                        group=group)
    sep = np.full((m, ncols), -1, np.float32)
    _gemm.gather_matmul(src, rowoff, koff, b, sep, team, post=lambda rows: _jit.bias_relu(
        rows, bias, relu, team=False), group=group)
    assert np.isnan(fused).any()
    np.testing.assert_array_equal(fused.view(np.int32), sep.view(np.int32))
    a = src.astype(np.float64)[rowoff[:, None] + koff[None, :]]
    want = a @ b.astype(np.float64) + bias
    if relu:
        want = np.where(want < 0, 0, want)
    ok = ~np.isnan(want)
    np.testing.assert_allclose(fused[ok], want[ok], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.isnan(fused), ~ok)


@pytest.mark.parametrize("offset", [0, 4, 16, 48])
def test_unaligned_b_used_in_place_or_copied(offset, monkeypatch):
    """b's rows on any boundary: copied to an aligned buffer when small, read unaligned when
    big (_COPY_MAX_BYTES); the same sums either way."""
    rs = np.random.RandomState(offset)
    k, ncols, m = 70, 16, 30
    buf = np.empty(k * ncols * 4 + 128, np.uint8)
    start = -buf.ctypes.data % 64 + offset
    b = buf[start:start + k * ncols * 4].view(np.float32).reshape(k, ncols)
    b[...] = rs.randn(k, ncols)
    src = rs.randn(500).astype(np.float32)
    rowoff, koff = rs.randint(0, 200, size=m), rs.randint(0, 250, size=k)
    want = src.astype(np.float64)[rowoff[:, None] + koff[None, :]] @ b.astype(np.float64)
    for limit in (1 << 30, 0):
        monkeypatch.setattr(_gemm, "_COPY_MAX_BYTES", limit)
        assert (_gemm._aligned(b) is b) == (offset % 64 == 0 or limit == 0)
        out = np.empty((m, ncols), np.float32)
        _gemm.gather_matmul(src, rowoff, koff, b, out)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)


def test_aligned_outputs():
    """Outputs that the loops read as b start on a cache line (_jit.empty_aligned)."""
    for shape in [(3, 5), (32, 28, 28, 16), (0, 4)]:
        a = _jit.empty_aligned(shape, np.float32)
        assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
        assert a.flags.writeable and (a.size == 0 or a.ctypes.data % 64 == 0)
