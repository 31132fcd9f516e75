"""The CPU kernels' speed paths against references and against the general paths they replace:
stride-1 convolutions over wide rows (few input channels: Conv2D and Conv2DBackpropFilter,
kernels_cpu/conv_ops.py ``_conv_wide``/``_conv_filter_grad_wide``), BiasAdd and Relu over long
rows (kernels_cpu/nn_ops.py ``_wide_rows``), and MaxPool's -0.0 check. Shapes are larger than
the recorded fixtures so that the chunking over images and over rows is exercised."""

import numpy as np
import pytest

import mgrt.kernels_cpu.conv_ops as conv_ops
import mgrt.kernels_cpu.nn_ops as nn_ops
from kernel_util import conv_node_def, run_kernel

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # kernels stay quiet


_nd = conv_node_def


def _geometry(n, k, d, padding, ep):
    eff = (k - 1) * d + 1
    if padding == "SAME":
        need = max(0, eff - 1)
        return n, need // 2, need - need // 2
    if padding == "VALID":
        ep = (0, 0)
    return n + ep[0] + ep[1] - eff + 1, ep[0], ep[1]


def _ref(x, f, dil, padding, ep=(0, 0, 0, 0)):
    """float64 stride-1 NHWC convolution (loop over taps) and its pads."""
    n, h, w, c = x.shape
    kh, kw, _, co = f.shape
    oh, pt, pb = _geometry(h, kh, dil[0], padding, ep[:2])
    ow, pl, pr = _geometry(w, kw, dil[1], padding, ep[2:])
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = np.zeros((n, oh, ow, co))
    for i in range(kh):
        for j in range(kw):
            t = xp[:, i * dil[0]:i * dil[0] + oh, j * dil[1]:j * dil[1] + ow, :]
            y += t @ f[i, j].astype(np.float64)
    return y, xp, (oh, ow)


def _ref_filter_grad(xp, dy, kh, kw, dil):
    oh, ow = dy.shape[1:3]
    df = np.zeros((kh, kw, xp.shape[3], dy.shape[3]))
    d2 = dy.astype(np.float64).reshape(-1, dy.shape[3])
    for i in range(kh):
        for j in range(kw):
            t = xp[:, i * dil[0]:i * dil[0] + oh, j * dil[1]:j * dil[1] + ow, :]
            df[i, j] = t.reshape(-1, xp.shape[3]).T @ d2
    return df


def _attrs(dtype, padding, dil, fmt, ep):
    a = dict(T=dtype, strides=[1, 1, 1, 1], padding=padding, data_format=fmt,
             dilations=[1, 1, *dil] if fmt == "NCHW" else [1, *dil, 1])
    if padding == "EXPLICIT":
        pairs = [0, 0, ep[0], ep[1], ep[2], ep[3], 0, 0]
        a["explicit_paddings"] = [0, 0, 0, 0] + pairs[2:6] if fmt == "NCHW" else pairs
    return a


CASES = [
    # (x shape NHWC, filter shape, dilations, padding, explicit pads)
    ((4, 28, 28, 1), (5, 5, 1, 16), (1, 1), "SAME", None),
    ((3, 17, 23, 2), (3, 5, 2, 6), (1, 1), "VALID", None),
    ((2, 19, 16, 3), (3, 3, 3, 5), (2, 1), "SAME", None),
    ((2, 15, 21, 1), (2, 4, 1, 7), (1, 3), "SAME", None),
    ((3, 12, 13, 4), (3, 4, 4, 3), (1, 1), "EXPLICIT", (1, 2, 0, 3)),
    ((1, 150, 140, 1), (5, 5, 1, 4), (1, 1), "SAME", None),   # chunks of rows
    ((64, 40, 40, 1), (3, 3, 1, 8), (1, 1), "VALID", None),   # chunks of images
]


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_wide_rows_conv_and_filter_grad_against_reference(case, fmt, monkeypatch):
    monkeypatch.setattr(conv_ops, "_DIRECT", False)  # float32 direct path: test_conv_direct.py
    xs, fs, dil, padding, ep = CASES[case]
    rs = np.random.RandomState(case)
    x = rs.randn(*xs).astype(np.float32)
    f = rs.randn(*fs).astype(np.float32)
    kh, kw, c, co = fs
    assert kw * c <= conv_ops._WIDE_MAX_ROW  # the wide path is the one taken
    want, xp, (oh, ow) = _ref(x, f, dil, padding, ep or (0, 0, 0, 0))
    attrs = _attrs("float32", padding, dil, fmt, ep)
    nchw = fmt == "NCHW"
    xi = x.transpose(0, 3, 1, 2) if nchw else x
    (y,) = run_kernel(_nd("Conv2D", **attrs), [xi, f])
    got = y.transpose(0, 2, 3, 1) if nchw else y
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    dy = rs.randn(*want.shape).astype(np.float32)
    dyi = dy.transpose(0, 3, 1, 2) if nchw else dy
    (df,) = run_kernel(_nd("Conv2DBackpropFilter", **attrs), [xi, np.array(fs, np.int32), dyi])
    np.testing.assert_allclose(df, _ref_filter_grad(xp, dy, kh, kw, dil), rtol=1e-4, atol=1e-3)


def _both_paths(monkeypatch, op, inputs, attrs):
    """(wide path result, im2col path result)."""
    (a,) = run_kernel(_nd(op, **attrs), inputs)
    monkeypatch.setattr(conv_ops, "_WIDE_MAX_ROW", 0)
    (b,) = run_kernel(_nd(op, **attrs), inputs)
    monkeypatch.undo()
    return a, b


@pytest.mark.parametrize("dtype", ["float64", "float16", "int32"])
def test_wide_rows_dtypes_match_the_im2col_path(monkeypatch, dtype):
    rs = np.random.RandomState(7)
    if dtype == "int32":
        x = rs.randint(-50, 50, size=(3, 16, 18, 2)).astype(np.int32)
        f = rs.randint(-50, 50, size=(3, 3, 2, 5)).astype(np.int32)
    else:
        x = rs.randn(3, 16, 18, 2).astype(dtype)
        f = rs.randn(3, 3, 2, 5).astype(dtype)
    attrs = dict(T=dtype, strides=[1, 1, 1, 1], padding="SAME")
    a, b = _both_paths(monkeypatch, "Conv2D", [x, f], attrs)
    assert a.dtype == b.dtype == np.dtype(dtype)
    if dtype == "int32":
        np.testing.assert_array_equal(a, b)
    else:
        tol = 1e-12 if dtype == "float64" else 4e-3
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol, atol=tol)
    if dtype != "int32":
        dy = rs.randn(*a.shape).astype(dtype)
        a, b = _both_paths(monkeypatch, "Conv2DBackpropFilter",
                           [x, np.array(f.shape, np.int32), dy], attrs)
        tol = 1e-10 if dtype == "float64" else 1e-2
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol, atol=tol)


def test_wide_rows_filter_grad_with_inf_and_nan_input(monkeypatch):
    """A dropped column would multiply an inf of the input by 0; the wide filter gradient
    leaves such inputs to the im2col path, so both give the same infs and NaNs."""
    rs = np.random.RandomState(3)
    x = rs.randn(2, 9, 11, 1).astype(np.float32)
    x[0, 4, 10, 0] = np.inf
    x[1, 0, 0, 0] = np.nan
    attrs = dict(T="float32", strides=[1, 1, 1, 1], padding="VALID")
    dy = rs.randn(2, 7, 9, 3).astype(np.float32)
    a, b = _both_paths(monkeypatch, "Conv2DBackpropFilter",
                       [x, np.array([3, 3, 1, 3], np.int32), dy], attrs)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # the forward pass drops its extra columns: the same values either way
    f = rs.randn(3, 3, 1, 3).astype(np.float32)
    a, b = _both_paths(monkeypatch, "Conv2D", [x, f], attrs)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(32, 28, 28, 16), (8, 14, 14, 32), (1000, 48), (7, 9, 11, 5),
                                   (3, 4), (64, 10)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
@pytest.mark.parametrize("team", [False, True])
def test_bias_add_and_relu_long_rows_are_exact(shape, dtype, team, monkeypatch):
    """Long rows, on the calling thread or split over a team of three (forced for any size)."""
    if team:
        from mgrt.kernels_cpu import _team
        monkeypatch.setattr(_team, "_FIXED", 3)
        monkeypatch.setattr(_team, "SPLIT_MIN_BYTES", 0)
    rs = np.random.RandomState(1)
    x = (rs.randn(*shape) * 10).astype(dtype)
    b = (rs.randn(shape[-1]) * 10).astype(dtype)
    if dtype != "int32":
        x.reshape(-1)[::97] = np.nan
        x.reshape(-1)[5::89] = -np.inf
    (y,) = run_kernel(_nd("BiasAdd", T=dtype), [x, b])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(y, np.add(x, b))
    assert y.shape == x.shape and y.dtype == x.dtype
    if dtype != "int32":
        (r,) = run_kernel(_nd("Relu", T=dtype), [x])
        np.testing.assert_array_equal(r, np.maximum(x, 0))
        assert r.shape == x.shape and r.dtype == x.dtype


def test_wide_rows_choice():
    assert nn_ops._wide_rows(32 * 28 * 28 * 16, 16) == 8192
    assert nn_ops._wide_rows(100, 4) == 0             # small: the plain broadcast
    assert nn_ops._wide_rows(40009 * 3, 3) == 0       # 40009 is prime: no long row divides it
    for size, c in ((32 * 14 * 14 * 32, 32), (40000 * 3, 3), (2 ** 20, 1), (64 * 1000, 1000)):
        row = nn_ops._wide_rows(size, c)
        assert 256 <= row <= nn_ops._WIDE_ROW and row % c == 0 and size % row == 0, (size, c)


def test_negative_zero_check():
    for dt in (np.float32, np.float64, np.float16):
        a = np.array([0.0, 1.0, -1.0, -np.inf, np.nan], dt)
        assert not conv_ops._has_negative_zero(a)
        a[1] = -0.0
        assert conv_ops._has_negative_zero(a)
        assert conv_ops._has_negative_zero(a[::-1])  # any strides
        assert not conv_ops._has_negative_zero(a[:0])
        # the smallest negative subnormal is not -0.0
        tiny = np.array([0], np.dtype(f"i{a.itemsize}")) + np.iinfo(f"i{a.itemsize}").min + 1
        assert not conv_ops._has_negative_zero(tiny.view(dt))
