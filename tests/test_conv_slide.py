"""The sliding-window convolution loops (kernels_cpu/_slide.py, conv_ops ``_conv_slide``):
float32 convolutions with stride and dilation 1 along the width, kw 3 or 5, output channels
a multiple of 16 and rows of at least 14 pixels, forward and (as a convolution of
out_backprop) input gradient. Checked against float64 tap-by-tap references: row widths that
are a multiple of the block and ones that end in an overlapping block, strides and dilations
along the height, SAME/VALID/EXPLICIT padding, NHWC and NCHW, 16 to 48 output channels, one
to 32 input channels, on one thread and on a team (whole images, and few images split by
rows); the fused bias and ReLU bit for bit against the separate pass."""

import os

import numpy as np
import pytest

from mgrt.kernels_cpu import _jit, _slide
from kernel_util import conv_node_def, run_kernel
from test_conv_direct import _attrs, _ref, _ref_filter_grad, input_grad_case

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def test_generated_loops_are_current():
    path = os.path.join(os.path.dirname(_slide.__file__), "_slide_loops.py")
    with open(path) as f:
        assert f.read() == _slide.source(), \
            "regenerate kernels_cpu/_slide_loops.py from _slide.source()"


def test_block_starts():
    assert _slide._starts(14) == [0]
    assert _slide._starts(28) == [0, 14]
    assert _slide._starts(21) == [0, 7]        # the last block overlaps the first
    assert _slide._starts(30) == [0, 14, 16]


def test_usable():
    f32 = np.float32
    assert _slide.usable(f32, 5, 1, 1, 14, 32)
    assert _slide.usable(f32, 3, 1, 1, 28, 16)
    assert not _slide.usable(np.float64, 5, 1, 1, 14, 32)   # float32 only
    assert not _slide.usable(f32, 4, 1, 1, 14, 32)          # kw 3 or 5
    assert not _slide.usable(f32, 5, 2, 1, 14, 32)          # stride 2 along the width
    assert not _slide.usable(f32, 5, 1, 2, 14, 32)          # dilated along the width
    assert not _slide.usable(f32, 5, 1, 1, 13, 32)          # a row shorter than a block
    assert not _slide.usable(f32, 5, 1, 1, 15, 32)          # 28 pixels computed for 15
    assert not _slide.usable(f32, 5, 1, 1, 14, 24)          # not a multiple of 16
    assert not _slide.usable(f32, 5, 1, 1, 14, 0)


def test_usable_grad():
    f32 = np.float32
    assert _slide.usable_grad(f32, 5, 1, 1, 32)
    assert _slide.usable_grad(f32, 3, 1, 1, 64)
    assert not _slide.usable_grad(f32, 5, 1, 1, 16)           # a multiple of 32
    assert not _slide.usable_grad(np.float64, 5, 1, 1, 32)
    assert not _slide.usable_grad(f32, 2, 1, 1, 32)
    assert not _slide.usable_grad(f32, 5, 2, 1, 32)           # stride 2 along the width
    assert not _slide.usable_grad(f32, 5, 1, 2, 32)


def test_jit_off_turns_the_path_off(monkeypatch):
    monkeypatch.setitem(_jit._state, "on", False)
    assert not _slide.usable(np.float32, 5, 1, 1, 14, 16)
    assert not _slide.usable_grad(np.float32, 5, 1, 1, 32)


@pytest.fixture
def slide_calls(monkeypatch):
    calls = []
    real = _slide.conv

    def counting(*a, **kw):
        calls.append(a[6].shape)
        return real(*a, **kw)
    monkeypatch.setattr(_slide, "conv", counting)
    return calls


@pytest.fixture
def slide_grad_calls(monkeypatch):
    calls = []
    real = _slide.filter_grad

    def counting(*a, **kw):
        out = real(*a, **kw)
        calls.append(out.shape)
        return out
    monkeypatch.setattr(_slide, "filter_grad", counting)
    return calls


CASES = [
    # x NHWC, filter, strides, dilations, padding, explicit pads
    ((3, 14, 14, 16), (5, 5, 16, 32), (1, 1), (1, 1), "SAME", None),   # the benchmark's conv1
    ((4, 28, 28, 1), (5, 5, 1, 16), (1, 1), (1, 1), "SAME", None),     # the benchmark's conv0
    ((2, 9, 21, 3), (3, 3, 3, 48), (1, 1), (1, 1), "SAME", None),      # 21: overlapping block
    ((2, 12, 18, 32), (5, 5, 32, 16), (2, 1), (1, 1), "VALID", None),  # stride 2 along h
    ((1, 16, 28, 8), (3, 5, 8, 32), (1, 1), (2, 1), "SAME", None),     # dilation 2 along h
    ((2, 7, 21, 5), (2, 3, 5, 16), (3, 1), (1, 1), "EXPLICIT", (1, 2, 0, 2)),
]


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_conv_against_reference(case, fmt, conv_threads, slide_calls):
    xs, fs, st, dil, padding, ep = CASES[case]
    rs = np.random.RandomState(case)
    x = rs.randn(*xs).astype(np.float32)
    f = rs.randn(*fs).astype(np.float32)
    want, _ = _ref(x, f, st, dil, padding, ep or (0, 0, 0, 0))
    nchw = fmt == "NCHW"
    (y,) = run_kernel(conv_node_def("Conv2D", **_attrs(padding, st, dil, fmt, ep)),
                      [x.transpose(0, 3, 1, 2) if nchw else x, f])
    assert slide_calls == [(want.shape[0] * want.shape[1] * want.shape[2], fs[3])]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.transpose(0, 2, 3, 1) if nchw else y, want, rtol=1e-4,
                               atol=1e-4)


FILTER_GRAD_CASES = [
    # x NHWC, filter, strides, dilations, padding, explicit pads
    ((3, 14, 14, 16), (5, 5, 16, 32), (1, 1), (1, 1), "SAME", None),   # the benchmark's conv1
    ((2, 9, 10, 3), (3, 3, 3, 64), (1, 1), (1, 1), "SAME", None),      # rows of 10: 4 zeros
    ((2, 12, 18, 32), (5, 5, 32, 32), (2, 1), (1, 1), "VALID", None),  # stride 2 along h
    ((1, 16, 15, 8), (3, 5, 8, 32), (1, 1), (2, 1), "SAME", None),     # dilation 2 along h
    ((2, 7, 21, 5), (2, 3, 5, 32), (3, 1), (1, 1), "EXPLICIT", (1, 2, 0, 2)),
]


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", range(len(FILTER_GRAD_CASES)))
def test_filter_grad_against_reference(case, fmt, conv_threads, slide_grad_calls):
    xs, fs, st, dil, padding, ep = FILTER_GRAD_CASES[case]
    rs = np.random.RandomState(40 + case)
    x = rs.randn(*xs).astype(np.float32)
    want, taps = _ref(x, rs.randn(*fs).astype(np.float32), st, dil, padding, ep or (0,) * 4)
    dy = rs.randn(*want.shape).astype(np.float32)
    nchw = fmt == "NCHW"
    (df,) = run_kernel(conv_node_def("Conv2DBackpropFilter", **_attrs(padding, st, dil, fmt, ep)),
                       [x.transpose(0, 3, 1, 2) if nchw else x, np.array(fs, np.int32),
                        dy.transpose(0, 3, 1, 2) if nchw else dy])
    assert slide_grad_calls == [fs]
    np.testing.assert_allclose(df, _ref_filter_grad(taps, dy, fs), rtol=1e-4, atol=2e-3)


INPUT_GRAD_CASES = [  # stride 1: one phase, a convolution of out_backprop (16 channels out)
    ((3, 14, 14, 16), (5, 5, 16, 32), (1, 1), (1, 1), "SAME", None),   # the benchmark's conv1
    ((2, 10, 21, 32), (3, 3, 32, 8), (1, 1), (1, 1), "VALID", None),   # out_backprop 19 wide
]


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", range(len(INPUT_GRAD_CASES)))
def test_input_grad_against_reference(case, fmt, conv_threads, slide_calls):
    xs = INPUT_GRAD_CASES[case][0]
    got, want = input_grad_case(INPUT_GRAD_CASES[case], 20 + case, fmt)
    assert slide_calls == [(xs[0] * xs[1] * xs[2], xs[3])]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("team", [1, 3])
@pytest.mark.parametrize("n", [1, 5])
def test_bias_relu_in_the_loop_is_the_separate_pass_bit_for_bit(relu, team, n):
    """A _jit.BiasRelu is applied to each team item's rows once the loop has stored them:
    the same float32 additions and comparisons as one bias_relu pass after the whole
    convolution (NaN stays, -0.0 stays), every row once (few images: rows split)."""
    assert _jit.enabled()  # the numba loops load
    rs = np.random.RandomState(n * 10 + team)
    x = rs.randn(n, 6, 17, 3).astype(np.float32)
    x[0, 2, 5, 1] = np.nan
    fm = rs.randn(5 * 5 * 3, 32).astype(np.float32)
    bias = rs.randn(32).astype(np.float32)
    bias[3] = -0.0
    geo = (1, 1, 1, 1, 6, 17, 2, 2, 2, 2)
    fused = np.full((n * 6 * 17, 32), -1, np.float32)
    _slide.conv(x, False, fm, 5, 5, geo, fused, team, _jit.BiasRelu(bias, relu))
    sep = np.full((n * 6 * 17, 32), -1, np.float32)
    _slide.conv(x, False, fm, 5, 5, geo, sep, team,
                lambda rows: _jit.bias_relu(rows, bias, relu, team=False))
    assert np.isnan(fused).any()
    np.testing.assert_array_equal(fused.view(np.int32), sep.view(np.int32))
    want = _ref(x, fm.reshape(5, 5, 3, 32), (1, 1), (1, 1), "SAME", (0,) * 4)[0]
    want = want.reshape(-1, 32) + bias
    if relu:
        want = np.where(want < 0, 0, want)
    ok = ~np.isnan(want)
    np.testing.assert_allclose(fused[ok], want[ok], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.isnan(fused), ~ok)


def test_readonly_and_other_dtype_inputs():
    rs = np.random.RandomState(4)
    x = rs.randn(2, 5, 14, 2)
    fm = rs.randn(3 * 3 * 2, 16).astype(np.float32)
    geo = (1, 1, 1, 1, 3, 14, 0, 0, 1, 1)
    want = _ref(x, fm.reshape(3, 3, 2, 16), (1, 1), (1, 1), "EXPLICIT", (0, 0, 1, 1))[0]
    for xi in (x, x.astype(np.float32)):  # float64: cast; read-only: copied
        xi.flags.writeable = False
        out = np.empty((2 * 3 * 14, 16), np.float32)
        _slide.conv(xi, False, fm, 3, 3, geo, out, 1)
        np.testing.assert_allclose(out.reshape(want.shape), want, rtol=1e-4, atol=1e-4)


def test_only_where_it_applies(slide_calls):
    rs = np.random.RandomState(3)
    nhwc = _attrs("SAME", (1, 1), (1, 1), "NHWC", None)
    for xs, fs, attrs in (
            ((2, 8, 14, 64), (3, 3, 64, 16), nhwc),       # 64 input channels: im2col
            ((2, 8, 14, 4), (3, 3, 4, 24), nhwc),         # 24 output channels: _gemm
            ((2, 8, 13, 4), (3, 3, 4, 16), nhwc),         # rows of 13: _gemm
            ((2, 8, 14, 4), (3, 4, 4, 16), nhwc),         # kw 4: _gemm
            ((2, 8, 28, 4), (3, 3, 4, 16), _attrs("SAME", (1, 2), (1, 1), "NHWC", None))):
        run_kernel(conv_node_def("Conv2D", **attrs), [rs.randn(*xs).astype(np.float32),
                                                      rs.randn(*fs).astype(np.float32)])
    assert slide_calls == []
