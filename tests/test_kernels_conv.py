"""The conv-family CPU kernels (convolutions, pooling, resizing) against TensorFlow's recordings
(tests/fixtures/ops/conv.*, written by tests/fixtures/ops/make_conv_fixtures.py with TensorFlow
2.21), plus numpy references for what TensorFlow's CPU kernels refuse or abort on, and for
larger shapes than the fixtures hold."""

import base64
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import mgrt.kernels_cpu.conv_ops  # noqa: F401  (registers the family even if another fails)
from kernel_util import kernel_node, run_kernel
from mgrt.runtime import errors, kernel_registry
from mgrt.runtime.errors import InvalidArgumentError

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # kernels stay quiet

OPS = Path(__file__).parent / "fixtures" / "ops"
DOC = json.loads((OPS / "conv.json").read_text())
CASES = DOC["cases"]
with np.load(OPS / "conv.npz", allow_pickle=False) as _z:
    POOLS = {k: _z[k] for k in _z.files}

CONV_OPS = [
    "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
    "DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropInput",
    "DepthwiseConv2dNativeBackpropFilter",
    "MaxPool", "MaxPoolV2", "AvgPool", "MaxPoolGrad", "MaxPoolGradV2", "AvgPoolGrad",
    "MaxPoolGradGrad", "MaxPoolGradGradV2", "MaxPoolWithArgmax", "MaxPoolGradWithArgmax",
    "ResizeBilinear", "ResizeNearestNeighbor", "ResizeBilinearGrad", "ResizeNearestNeighborGrad",
]
EXTRA_OPS = ["MaxPoolGradGradWithArgmax"]  # no CPU kernel in TF; tested against numpy below

# (rtol, atol) by dtype. Convolutions sum in a different order than TF (oneDNN / Eigen); the
# half types are computed in float32 by mgrt and accumulated in the half type by some of TF's
# kernels, so they get a few of their ulps.
_TOL = {
    "float16": (4e-3, 4e-3), "bfloat16": (2e-2, 2e-2),
    "float32": (2e-6, 1e-6), "float64": (1e-12, 1e-12),
}
_SUM_OPS = {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "DepthwiseConv2dNative",
            "DepthwiseConv2dNativeBackpropInput", "DepthwiseConv2dNativeBackpropFilter",
            "AvgPool", "AvgPoolGrad", "ResizeBilinearGrad", "ResizeNearestNeighborGrad",
            "MaxPoolGrad", "MaxPoolGradV2", "MaxPoolGradWithArgmax"}
_SUM_TOL = {
    "float16": (1e-2, 1e-2), "bfloat16": (4e-2, 4e-2),
    "float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12),
}
_BF16 = np.dtype(ml_dtypes.bfloat16)


def _array(spec):
    pool = POOLS[spec["dtype"]]
    n = int(np.prod(spec["shape"], dtype=np.int64))
    a = pool[spec["offset"]:spec["offset"] + n]
    if spec["dtype"] == "bfloat16":
        a = a.view(ml_dtypes.bfloat16)
    return a.reshape(spec["shape"]).copy()


def _dtype_name(a):
    return "bfloat16" if a.dtype == _BF16 else a.dtype.name


def _compare(case, i, got, want):
    name = f"{case['name']} output {i}"
    assert _dtype_name(got) == _dtype_name(want), (name, got.dtype, want.dtype)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    dt = _dtype_name(want)
    rtol, atol = (_SUM_TOL if case["op"] in _SUM_OPS else _TOL)[dt]
    if case["op"] == "ResizeBilinearGrad" and dt == "float64":
        # grads are float32 and TF rounds each weighted term to float32 before summing in
        # float64; mgrt sums in float64 throughout
        rtol, atol = _SUM_TOL["float32"]
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    if case["op"] in _SUM_OPS:
        atol = atol * max(1.0, float(np.abs(w[np.isfinite(w)]).max(initial=0)))
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{name}: NaN positions")
    if case["op"] not in _SUM_OPS:  # selections and interpolations keep TF's signed zeros
        z = w == 0
        np.testing.assert_array_equal(np.signbit(g[z]), np.signbit(w[z]),
                                      err_msg=f"{name}: sign of zero")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_recorded(case):
    node_def = base64.b64decode(case["node_def"])
    inputs = [_array(s) for s in case["inputs"]]
    before = [x.copy() for x in inputs]
    if case["error"]:
        cls = getattr(errors, case["error"]["type"])
        with pytest.raises(cls) as ei:
            run_kernel(node_def, inputs)
        assert case["error"]["key"] in str(ei.value)
        return
    outs = run_kernel(node_def, inputs)
    for x, b in zip(inputs, before):  # inputs are never changed
        assert x.tobytes() == b.tobytes()
    for i, (got, want) in enumerate(zip(outs, (_array(s) for s in case["outputs"]))):
        _compare(case, i, got, want)


def test_every_op_recorded_and_registered():
    recorded = {c["op"] for c in CASES if not c["error"]}
    assert set(CONV_OPS) <= recorded, set(CONV_OPS) - recorded
    for op in CONV_OPS + EXTRA_OPS:
        assert kernel_registry.lookup(op, "CPU") is not None, op


def test_host_memory_args():
    hm = {"Conv2DBackpropInput": {"input_sizes"}, "Conv2DBackpropFilter": {"filter_sizes"},
          "DepthwiseConv2dNativeBackpropInput": {"input_sizes"},
          "DepthwiseConv2dNativeBackpropFilter": {"filter_sizes"},
          "MaxPoolV2": {"ksize", "strides"}, "MaxPoolGradV2": {"ksize", "strides"},
          "MaxPoolGradGradV2": {"ksize", "strides"}, "AvgPoolGrad": {"orig_input_shape"},
          "ResizeBilinear": {"size"}, "ResizeNearestNeighbor": {"size"},
          "ResizeNearestNeighborGrad": {"size"}}
    for op in CONV_OPS + EXTRA_OPS:
        assert kernel_registry.lookup(op, "CPU").host_memory == hm.get(op, set()), op


def test_nchw_coverage():
    """NCHW is recorded both where TF computes it and where TF refuses it (via NHWC)."""
    nchw = [c for c in CASES if b"NCHW" in base64.b64decode(c["node_def"]) and not c["error"]]
    via = {c["op"] for c in nchw if c.get("via_nhwc")}
    direct = {c["op"] for c in nchw if not c.get("via_nhwc")}
    assert {"Conv2D", "Conv2DBackpropInput", "MaxPoolGrad", "MaxPoolV2", "AvgPool"} <= via
    assert {"Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPoolGrad"} <= direct


# --- numpy references -------------------------------------------------------------------------
def _nd(op, **attrs):
    from mgrt.protos import node_def_pb2
    from mgrt.runtime import dtypes

    nd = node_def_pb2.NodeDef(name=op.lower(), op=op)
    for k, v in attrs.items():
        if isinstance(v, bool):
            nd.attr[k].b = v
        elif isinstance(v, int):
            nd.attr[k].i = v
        elif isinstance(v, (bytes, str)) and k in ("padding", "data_format"):
            nd.attr[k].s = v.encode() if isinstance(v, str) else v
        elif isinstance(v, list):
            nd.attr[k].list.i.extend(v)
        else:
            nd.attr[k].type = dtypes.as_dtype(v).as_datatype_enum
    return nd


def _ref_conv(x, f, stride, dil, pads):
    """Direct (loop over taps) NHWC convolution in float64; pads = (top, bottom, left, right)."""
    n, h, w, c = x.shape
    kh, kw, _, co = f.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), pads[:2], pads[2:], (0, 0)))
    oh = (h + pads[0] + pads[1] - (kh - 1) * dil[0] - 1) // stride[0] + 1
    ow = (w + pads[2] + pads[3] - (kw - 1) * dil[1] - 1) // stride[1] + 1
    y = np.zeros((n, oh, ow, co))
    for i in range(kh):
        for j in range(kw):
            t = xp[:, i * dil[0]::stride[0], j * dil[1]::stride[1], :][:, :oh, :ow, :]
            y += t @ f[i, j].astype(np.float64)
    return y


def test_conv_larger_than_fixtures_and_gradients():
    rs = np.random.RandomState(0)
    x = rs.randn(2, 17, 15, 8).astype(np.float32)
    f = rs.randn(3, 5, 8, 6).astype(np.float32)
    attrs = dict(T="float32", strides=[1, 2, 1, 1], dilations=[1, 1, 2, 1], padding="SAME")
    (y,) = run_kernel(_nd("Conv2D", **attrs), [x, f])
    # SAME: out = ceil(in / stride); pad_total = (out - 1) * s + eff - in, before = total // 2
    oh, ow = 9, 15
    ph = (oh - 1) * 2 + 3 - 17
    pw = (ow - 1) * 1 + 9 - 15
    want = _ref_conv(x, f, (2, 1), (1, 2), (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    # backprops are the adjoints of the forward: <conv(x, f), dy> = <x, dx> = <f, df>
    dy = rs.randn(*y.shape).astype(np.float32)
    (dx,) = run_kernel(_nd("Conv2DBackpropInput", **attrs), [np.array(x.shape, np.int32), f, dy])
    (df,) = run_kernel(_nd("Conv2DBackpropFilter", **attrs), [x, np.array(f.shape, np.int32), dy])
    lhs = float((want * dy).sum())
    np.testing.assert_allclose(float((x.astype(np.float64) * dx).sum()), lhs, rtol=1e-4)
    np.testing.assert_allclose(float((f.astype(np.float64) * df).sum()), lhs, rtol=1e-4)


def test_grouped_and_dilated_backprops_float64():
    """TF's Eigen (float64) backprops refuse groups and dilations; mgrt's are the adjoints."""
    rs = np.random.RandomState(1)
    x = rs.randn(2, 9, 8, 6)
    f = rs.randn(3, 2, 2, 9)  # 3 groups
    attrs = dict(T="float64", strides=[1, 1, 2, 1], dilations=[1, 2, 1, 1], padding="VALID")
    (y,) = run_kernel(_nd("Conv2D", **attrs), [x, f])
    want = np.concatenate([_ref_conv(x[..., 2 * g:2 * g + 2], f[..., 3 * g:3 * g + 3], (1, 2),
                                     (2, 1), (0, 0, 0, 0)) for g in range(3)], axis=-1)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    dy = rs.randn(*y.shape)
    (dx,) = run_kernel(_nd("Conv2DBackpropInput", **attrs), [np.array(x.shape, np.int32), f, dy])
    (df,) = run_kernel(_nd("Conv2DBackpropFilter", **attrs), [x, np.array(f.shape, np.int32), dy])
    lhs = float((y * dy).sum())
    np.testing.assert_allclose((x * dx).sum(), lhs, rtol=1e-10)
    np.testing.assert_allclose((f * df).sum(), lhs, rtol=1e-10)
    # depthwise dilated backprops (oneDNN fails on these in TF 2.21)
    fd = rs.randn(3, 3, 6, 2)
    da = dict(T="float64", strides=[1, 1, 1, 1], dilations=[1, 2, 2, 1], padding="SAME")
    (yd,) = run_kernel(_nd("DepthwiseConv2dNative", **da), [x, fd])
    dyd = rs.randn(*yd.shape)
    (dxd,) = run_kernel(_nd("DepthwiseConv2dNativeBackpropInput", **da),
                        [np.array(x.shape, np.int32), fd, dyd])
    (dfd,) = run_kernel(_nd("DepthwiseConv2dNativeBackpropFilter", **da),
                        [x, np.array(fd.shape, np.int32), dyd])
    lhs = float((yd * dyd).sum())
    np.testing.assert_allclose((x * dxd).sum(), lhs, rtol=1e-10)
    np.testing.assert_allclose((fd * dfd).sum(), lhs, rtol=1e-10)


def test_maxpool_grad_with_argmax_bad_index():
    # TF's CPU kernel aborts the process (CHECK failure); mgrt raises
    x = np.zeros((1, 4, 4, 1), np.float32)
    g = np.ones((1, 2, 2, 1), np.float32)
    am = np.array([0, 1, 2, 1000], np.int64).reshape(1, 2, 2, 1)
    nd = _nd("MaxPoolGradWithArgmax", T="float32", Targmax="int64", ksize=[1, 2, 2, 1],
             strides=[1, 2, 2, 1], padding="VALID")
    with pytest.raises(InvalidArgumentError, match="Invalid output gradient index"):
        run_kernel(nd, [x, g, am])


def test_maxpool_grad_grad_with_argmax_reference():
    rs = np.random.RandomState(2)
    x = rs.randn(2, 5, 6, 3).astype(np.float32)
    for incl in (False, True):
        attrs = dict(ksize=[1, 3, 2, 1], strides=[1, 2, 2, 1], padding="SAME",
                     include_batch_in_index=incl)
        _, am = run_kernel(_nd("MaxPoolWithArgmax", T="float32", Targmax="int64", **attrs), [x])
        g = rs.randn(*x.shape).astype(np.float32)
        (out,) = run_kernel(_nd("MaxPoolGradGradWithArgmax", T="float32", Targmax="int64", **attrs),
                            [x, g, am])
        flat = am.astype(np.int64)
        if not incl:
            flat = flat + np.arange(2).reshape(2, 1, 1, 1) * x[0].size
        np.testing.assert_array_equal(out, g.reshape(-1)[flat])


def test_maxpool_ties_and_first_max(pool_path):
    """The gradient goes to the first maximum of each window (row-major), as in TF."""
    x = np.array([[1, 3, 3], [3, 2, 3], [0, 3, 1]], np.float64).reshape(1, 3, 3, 1)
    nd = _nd("MaxPoolGrad", T="float64", ksize=[1, 2, 2, 1], strides=[1, 1, 1, 1], padding="VALID")
    g = np.array([1.0, 2, 4, 8]).reshape(1, 2, 2, 1)
    (dx,) = run_kernel(nd, [x, np.zeros((1, 2, 2, 1)), g])
    want = np.zeros((3, 3))
    want[0, 1] += 1 + 2   # window (0,0): 3 at (0,1) first; window (0,1): 3 at (0,1) first
    want[1, 0] += 4       # window (1,0): [3,2,0,3] -> (1,0)
    want[1, 2] += 8       # window (1,1): [2,3,3,1] -> (1,2)
    np.testing.assert_array_equal(dx.reshape(3, 3), want)


def _ref_maxpool_grad(x, g, k, s, pads):
    """TF's MaxPoolGrad scan, element by element (NHWC): each window's first in-bounds element,
    replaced by a later one (row-major) only when strictly greater; its gradient goes there."""
    n, h, w, c = x.shape
    _, oh, ow, _ = g.shape
    dx = np.zeros(x.shape, np.float64)
    for b in range(n):
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    best = None
                    for i in range(k[0]):
                        for j in range(k[1]):
                            y, xx = r * s[0] + i - pads[0], q * s[1] + j - pads[1]
                            if 0 <= y < h and 0 <= xx < w:
                                v = x[b, y, xx, ch]
                                if best is None or v > x[b, best[0], best[1], ch]:
                                    best = (y, xx)
                    if best is not None:
                        dx[b, best[0], best[1], ch] += g[b, r, q, ch]
    return dx


def _ref_maxpool(x, k, s, pads, out_hw):
    """TF's CPU MaxPool, element by element (NHWC): from the dtype's lowest finite value, an
    in-bounds element replaces the maximum only when strictly greater (NaN never does; of 0.0
    and -0.0 the first stays)."""
    n, h, w, c = x.shape
    oh, ow = out_hw
    low = np.finfo(x.dtype).min if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    y = np.full((n, oh, ow, c), low, x.dtype)
    for b in range(n):
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    for i in range(k[0]):
                        for j in range(k[1]):
                            yy, xx = r * s[0] + i - pads[0], q * s[1] + j - pads[1]
                            if 0 <= yy < h and 0 <= xx < w and x[b, yy, xx, ch] > y[b, r, q, ch]:
                                y[b, r, q, ch] = x[b, yy, xx, ch]
    return y


@pytest.fixture(params=["numba", "numba-team", "numpy"])
def pool_path(request, monkeypatch):
    """Max pooling NHWC runs numba loops (kernels_cpu/_jit.py) unless MGRT_CPU_JIT=0; then the
    numpy paths. Both are tested (kernels are built per run_kernel call), the numba loops also
    split over images on a team of three threads (_team.split, forced for any size)."""
    from mgrt.kernels_cpu import _jit, _team
    saved = _jit._state.get("on")
    if request.param.startswith("numba"):
        _jit._state.pop("on", None)
        assert _jit.enabled()
        if request.param == "numba-team":
            monkeypatch.setattr(_team, "_FIXED", 3)
            monkeypatch.setattr(_team, "SPLIT_MIN_BYTES", 0)
    else:
        _jit._state["on"] = False
    yield request.param
    if saved is None:
        _jit._state.pop("on", None)
    else:
        _jit._state["on"] = saved


_POOL_CASES = [c for c in CASES if c["op"].startswith("MaxPool")]


@pytest.mark.parametrize("case", _POOL_CASES, ids=[c["name"] for c in _POOL_CASES])
def test_recorded_max_pooling_both_paths(case, pool_path):
    test_recorded(case)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
@pytest.mark.parametrize("ks_st", [((3, 3), (2, 2)), ((2, 2), (1, 1)), ((3, 2), (1, 2))])
def test_maxpool_overlapping_windows_against_scan(dtype, ks_st, pool_path):
    """Overlapping windows (gradients add up), SAME and VALID, ties, signed zeros, -inf, NaN."""
    kk, ss = ks_st
    rs = np.random.RandomState(5)
    pools = [[0.0, 1.0, 2.0], [0.0, -0.0, -1.0], [-np.inf, 1.0], [np.nan, 1.0, 2.0]]
    if dtype == "int32":
        pools = [[0, 1, 2], [np.iinfo(np.int32).min, 3]]
    for shape in [(2, 7, 6, 3), (1, 5, 9, 2)]:
        h, w = shape[1:3]
        for padding in ("VALID", "SAME"):
            if padding == "VALID":
                oh, ow, pads = (h - kk[0]) // ss[0] + 1, (w - kk[1]) // ss[1] + 1, (0, 0)
            else:
                oh, ow = -(-h // ss[0]), -(-w // ss[1])
                pads = (max((oh - 1) * ss[0] + kk[0] - h, 0) // 2,
                        max((ow - 1) * ss[1] + kk[1] - w, 0) // 2)
            for pool in pools:
                x = rs.choice(pool, size=shape).astype(dtype)
                g = rs.randint(1, 9, size=(shape[0], oh, ow, shape[3])).astype(dtype)
                attrs = dict(T=dtype, ksize=[1, *kk, 1], strides=[1, *ss, 1], padding=padding)
                (dx,) = run_kernel(_nd("MaxPoolGrad", **attrs), [x, np.zeros_like(g), g])
                want = _ref_maxpool_grad(x, g, kk, ss, pads).astype(dtype)
                np.testing.assert_array_equal(dx, want, err_msg=f"{shape} {padding} {pool}")
                (y,) = run_kernel(_nd("MaxPool", **attrs), [x])
                want_y = _ref_maxpool(x, kk, ss, pads, (oh, ow))
                assert y.tobytes() == want_y.tobytes(), (shape, padding, pool, y, want_y)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
def test_maxpool_grad_tiling_windows_against_scan(dtype, pool_path):
    """Windows that tile the input (ksize == strides; the fast paths of MaxPoolGrad and
    MaxPool): ties, signed zeros, -inf and NaN, VALID with rows and columns left over, SAME with
    padding after the input, NHWC and NCHW, against the element-by-element scans (bit for bit,
    the sign of a zero included). (Such cases matched TF 2.21's raw_ops.MaxPoolGrad and MaxPool
    bit for bit when this test was written.)"""
    rs = np.random.RandomState(4)
    values = {"ties": [0.0, 1.0, 2.0], "zeros": [0.0, -0.0, -1.0],
              "inf": [-np.inf, -np.inf, 1.0], "nan": [np.nan, 1.0, 2.0, 2.0]}
    if dtype == "int32":
        values = {"ties": [0, 1, 2], "low": [np.iinfo(np.int32).min, 3]}
    for shape in [(2, 4, 6, 3), (3, 7, 5, 2), (2, 5, 9, 1)]:
        for kk in [(2, 2), (3, 3), (2, 3), (1, 1)]:
            for padding in ("VALID", "SAME"):
                for mode, pool in values.items():
                    x = rs.choice(pool, size=shape).astype(dtype)
                    h, w = shape[1:3]
                    if padding == "VALID":
                        oh, ow, pads = h // kk[0], w // kk[1], (0, 0)
                    else:
                        oh, ow = -(-h // kk[0]), -(-w // kk[1])
                        pads = ((oh * kk[0] - h) // 2, (ow * kk[1] - w) // 2)
                    g = rs.randint(1, 9, size=(shape[0], oh, ow, shape[3])).astype(dtype)
                    want = _ref_maxpool_grad(x, g, kk, kk, pads).astype(dtype)
                    attrs = dict(T=dtype, ksize=[1, *kk, 1], strides=[1, *kk, 1], padding=padding)
                    (dx,) = run_kernel(_nd("MaxPoolGrad", **attrs), [x, np.zeros_like(g), g])
                    np.testing.assert_array_equal(dx, want, err_msg=f"{shape} {kk} {padding} {mode}")
                    nchw = dict(attrs, ksize=[1, 1, *kk], strides=[1, 1, *kk], data_format="NCHW")
                    (dxc,) = run_kernel(_nd("MaxPoolGrad", **nchw),
                                        [x.transpose(0, 3, 1, 2), np.zeros_like(g).transpose(0, 3, 1, 2),
                                         g.transpose(0, 3, 1, 2)])
                    np.testing.assert_array_equal(dxc, want.transpose(0, 3, 1, 2),
                                                  err_msg=f"NCHW {shape} {kk} {padding} {mode}")
                    # the forward pass
                    want_y = _ref_maxpool(x, kk, kk, pads, (oh, ow))
                    (y,) = run_kernel(_nd("MaxPool", **attrs), [x])
                    assert y.tobytes() == want_y.tobytes(), (shape, kk, padding, mode, y, want_y)
                    (yc,) = run_kernel(_nd("MaxPool", **nchw), [x.transpose(0, 3, 1, 2)])
                    assert yc.tobytes() == want_y.transpose(0, 3, 1, 2).tobytes(), (
                        "NCHW", shape, kk, padding, mode)


def test_resize_larger_against_separable_reference():
    rs = np.random.RandomState(3)
    x = rs.rand(2, 31, 23, 3).astype(np.float32)
    for ac, hp in ((False, False), (True, False), (False, True)):
        nd = _nd("ResizeBilinear", T="float32", align_corners=ac, half_pixel_centers=hp)
        (y,) = run_kernel(nd, [x, np.array([50, 11], np.int32)])
        # separable float64 reference with TF's coordinates
        def weights(n, o):
            s = (n - 1) / (o - 1) if ac and o > 1 else n / o
            src = (np.arange(o) + 0.5) * s - 0.5 if hp else np.arange(o) * s
            lo = np.maximum(np.floor(src), 0).astype(int)
            up = np.minimum(np.ceil(src), n - 1).astype(int)
            lerp = src - np.floor(src)
            m = np.zeros((o, n))
            np.add.at(m, (np.arange(o), lo), 1 - lerp)
            np.add.at(m, (np.arange(o), up), lerp)
            return m
        wy, wx = weights(31, 50), weights(23, 11)
        want = np.einsum("yh,nhwc,xw->nyxc", wy, x.astype(np.float64), wx)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        # the gradient is the adjoint
        g = rs.randn(*y.shape).astype(np.float32)
        (dx,) = run_kernel(_nd("ResizeBilinearGrad", T="float32", align_corners=ac,
                               half_pixel_centers=hp), [g, x])
        np.testing.assert_allclose((dx.astype(np.float64) * x).sum(), (want * g).sum(), rtol=1e-4)


def test_type_constraints():
    node = kernel_node(_nd("AvgPool", T="int32", ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1],
                           padding="VALID"))
    assert kernel_registry.lookup("AvgPool", "CPU", node.attrs) is None
    node = kernel_node(_nd("MaxPool", T="uint16", ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1],
                           padding="VALID"))
    assert kernel_registry.lookup("MaxPool", "CPU", node.attrs) is not None
