"""The conv-family GPU kernels (kernels_gpu/conv_ops.py: convolutions, pooling, resizing)
against TensorFlow's recordings (tests/fixtures/ops/conv.*, the same cases the CPU kernels
pass) on the ``gpu`` fixture (the simulated GPU; a real one under ``pytest -m gpu``), plus numpy
references and adjoint identities on larger shapes, and the CPU kernels as a second check."""

import base64
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from gpu_util import gpu_kernel_def, run_kernel_gpu
from kernel_util import kernel_node, run_kernel
from mgrt.kernels_gpu import conv_ops as gpu_conv
from mgrt.protos import node_def_pb2
from mgrt.runtime import dtypes, errors, kernel_registry
from mgrt.runtime.errors import InvalidArgumentError

# the simulated GPU computes with numpy, which warns where CuPy is silent (inf - inf, ...)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

OPS = Path(__file__).parent / "fixtures" / "ops"
DOC = json.loads((OPS / "conv.json").read_text())
CASES = DOC["cases"]
with np.load(OPS / "conv.npz", allow_pickle=False) as _z:
    POOLS = {k: _z[k] for k in _z.files}

GPU_OPS = [
    "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
    "DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropInput",
    "DepthwiseConv2dNativeBackpropFilter",
    "MaxPool", "MaxPoolV2", "AvgPool", "MaxPoolGrad", "MaxPoolGradV2", "AvgPoolGrad",
    "MaxPoolGradGrad", "MaxPoolGradGradV2", "MaxPoolWithArgmax", "MaxPoolGradWithArgmax",
    "MaxPoolGradGradWithArgmax",
    "ResizeBilinear", "ResizeNearestNeighbor", "ResizeBilinearGrad", "ResizeNearestNeighborGrad",
]
NOT_GPU_DTYPES = {"bfloat16", "complex64", "complex128"}

# (rtol, atol) by dtype, as in test_kernels_conv.py
_TOL = {"float16": (4e-3, 4e-3), "float32": (2e-6, 1e-6), "float64": (1e-12, 1e-12)}
_SUM_OPS = {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "DepthwiseConv2dNative",
            "DepthwiseConv2dNativeBackpropInput", "DepthwiseConv2dNativeBackpropFilter",
            "AvgPool", "AvgPoolGrad", "ResizeBilinearGrad", "ResizeNearestNeighborGrad",
            "MaxPoolGrad", "MaxPoolGradV2", "MaxPoolGradWithArgmax"}
_SUM_TOL = {"float16": (1e-2, 1e-2), "float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}


def _array(spec):
    pool = POOLS[spec["dtype"]]
    n = int(np.prod(spec["shape"], dtype=np.int64))
    a = pool[spec["offset"]:spec["offset"] + n]
    if spec["dtype"] == "bfloat16":
        a = a.view(ml_dtypes.bfloat16)
    return a.reshape(spec["shape"]).copy()


def _case_dtypes(case):
    return {s["dtype"] for s in case["inputs"] + (case["outputs"] or [])}


def _has_gpu_kernel(case):
    node = kernel_node(base64.b64decode(case["node_def"]))
    return gpu_kernel_def(node) is not None


GPU_CASES = [c for c in CASES if c["op"] in GPU_OPS and _has_gpu_kernel(c)]


def _compare(case, i, got, want):
    name = f"{case['name']} output {i}"
    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    dt = want.dtype.name
    rtol, atol = (_SUM_TOL if case["op"] in _SUM_OPS else _TOL)[dt]
    if case["op"] == "ResizeBilinearGrad" and dt == "float64":
        rtol, atol = _SUM_TOL["float32"]  # float32 grads, TF rounds each term to float32
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


def _run_checked(node_def, inputs, gpu):
    """run_kernel_gpu, checking afterwards that the kernel left its device inputs as they
    were put."""
    made = []
    put = gpu.put

    def recording_put(x):
        b = put(x)
        made.append((b, np.array(x, copy=True)))
        return b

    gpu.put = recording_put  # an instance attribute, removed below
    try:
        outs = run_kernel_gpu(node_def, inputs, gpu)
    finally:
        del gpu.put
    for b, host in made:
        assert gpu.fetch(b).tobytes() == host.tobytes(), "a kernel changed its input"
    return outs


@pytest.mark.parametrize("case", GPU_CASES, ids=[c["name"] for c in GPU_CASES])
def test_recorded(case, gpu):
    node_def = base64.b64decode(case["node_def"])
    inputs = [_array(s) for s in case["inputs"]]
    if case["error"]:
        cls = getattr(errors, case["error"]["type"])
        with pytest.raises(cls) as ei:
            run_kernel_gpu(node_def, inputs, gpu)
        assert case["error"]["key"] in str(ei.value)
        return
    outs = _run_checked(node_def, inputs, gpu)
    for i, (got, want) in enumerate(zip(outs, (_array(s) for s in case["outputs"]))):
        _compare(case, i, got, want)


# int32 variants that would mix host and device memory stay on the CPU, as do int32 argmax
# outputs (TF's GPU kernels have int64 argmax only)
_CPU_ONLY = {("MaxPoolWithArgmax", "int32"), ("MaxPoolGradWithArgmax", "int32"),
             ("MaxPoolGradGradWithArgmax", "int32")}


def test_every_op_registered_and_cases_covered():
    for op in GPU_OPS:
        assert kernel_registry.lookup(op, "GPU") is not None, op
    for c in CASES:
        if c["op"] in GPU_OPS and not _has_gpu_kernel(c):
            ok = _case_dtypes(c) & NOT_GPU_DTYPES or (c["op"], "int32") in _CPU_ONLY \
                or (c["op"] == "MaxPoolGradWithArgmax")  # float types only on a GPU
            assert ok, c["name"]
    assert len(GPU_CASES) > 550


def test_host_memory_args_as_on_cpu():
    for op in GPU_OPS:
        assert kernel_registry.lookup(op, "GPU").host_memory == \
            kernel_registry.lookup(op, "CPU").host_memory, op


# --- hand-built nodes ---------------------------------------------------------------------------
def _nd(op, **attrs):
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


@pytest.mark.parametrize("cols_bytes", [None, 4096])  # one patch block, or many row blocks
def test_conv_larger_than_fixtures_and_gradients(gpu, monkeypatch, cols_bytes):
    if cols_bytes:
        monkeypatch.setattr(gpu_conv, "_COLS_BYTES", cols_bytes)
    rs = np.random.RandomState(0)
    x = rs.randn(2, 17, 15, 8).astype(np.float32)
    f = rs.randn(3, 5, 8, 6).astype(np.float32)
    attrs = dict(T="float32", strides=[1, 2, 1, 1], dilations=[1, 1, 2, 1], padding="SAME")
    (y,) = run_kernel_gpu(_nd("Conv2D", **attrs), [x, f], gpu)
    oh, ow = 9, 15
    ph = (oh - 1) * 2 + 3 - 17
    pw = (ow - 1) * 1 + 9 - 15
    want = _ref_conv(x, f, (2, 1), (1, 2), (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    # backprops are the adjoints of the forward: <conv(x, f), dy> = <x, dx> = <f, df>
    dy = rs.randn(*y.shape).astype(np.float32)
    (dx,) = run_kernel_gpu(_nd("Conv2DBackpropInput", **attrs),
                           [np.array(x.shape, np.int32), f, dy], gpu)
    (df,) = run_kernel_gpu(_nd("Conv2DBackpropFilter", **attrs),
                           [x, np.array(f.shape, np.int32), dy], gpu)
    lhs = float((want * dy).sum())
    np.testing.assert_allclose(float((x.astype(np.float64) * dx).sum()), lhs, rtol=1e-4)
    np.testing.assert_allclose(float((f.astype(np.float64) * df).sum()), lhs, rtol=1e-4)
    # NCHW gives the same numbers
    an = dict(attrs, strides=[1, 1, 2, 1], dilations=[1, 1, 1, 2], data_format="NCHW")
    xn = x.transpose(0, 3, 1, 2).copy()
    (yn,) = run_kernel_gpu(_nd("Conv2D", **an), [xn, f], gpu)
    np.testing.assert_allclose(yn.transpose(0, 2, 3, 1), y, rtol=1e-5, atol=1e-5)
    dyn = dy.transpose(0, 3, 1, 2).copy()
    (dxn,) = run_kernel_gpu(_nd("Conv2DBackpropInput", **an),
                            [np.array(xn.shape, np.int32), f, dyn], gpu)
    np.testing.assert_allclose(dxn.transpose(0, 2, 3, 1), dx, rtol=1e-5, atol=1e-5)
    (dfn,) = run_kernel_gpu(_nd("Conv2DBackpropFilter", **an),
                            [xn, np.array(f.shape, np.int32), dyn], gpu)
    np.testing.assert_allclose(dfn, df, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cols_bytes", [None, 2048])
def test_grouped_and_dilated_float64(gpu, monkeypatch, cols_bytes):
    if cols_bytes:
        monkeypatch.setattr(gpu_conv, "_COLS_BYTES", cols_bytes)
    rs = np.random.RandomState(1)
    x = rs.randn(2, 9, 8, 6)
    f = rs.randn(3, 2, 2, 9)  # 3 groups
    attrs = dict(T="float64", strides=[1, 1, 2, 1], dilations=[1, 2, 1, 1], padding="VALID")
    (y,) = run_kernel_gpu(_nd("Conv2D", **attrs), [x, f], gpu)
    want = np.concatenate([_ref_conv(x[..., 2 * g:2 * g + 2], f[..., 3 * g:3 * g + 3], (1, 2),
                                     (2, 1), (0, 0, 0, 0)) for g in range(3)], axis=-1)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    dy = rs.randn(*y.shape)
    (dx,) = run_kernel_gpu(_nd("Conv2DBackpropInput", **attrs),
                           [np.array(x.shape, np.int32), f, dy], gpu)
    (df,) = run_kernel_gpu(_nd("Conv2DBackpropFilter", **attrs),
                           [x, np.array(f.shape, np.int32), dy], gpu)
    lhs = float((y * dy).sum())
    np.testing.assert_allclose((x * dx).sum(), lhs, rtol=1e-10)
    np.testing.assert_allclose((f * df).sum(), lhs, rtol=1e-10)
    fd = rs.randn(3, 3, 6, 2)
    for st in ([1, 1, 1, 1], [1, 2, 3, 1]):
        da = dict(T="float64", strides=st, dilations=[1, 2, 2, 1] if st[1] == 1 else
                  [1, 1, 1, 1], padding="SAME")
        (yd,) = run_kernel_gpu(_nd("DepthwiseConv2dNative", **da), [x, fd], gpu)
        (yc,) = run_kernel(_nd("DepthwiseConv2dNative", **da), [x, fd])
        np.testing.assert_allclose(yd, yc, rtol=1e-12, atol=1e-12)
        dyd = rs.randn(*yd.shape)
        (dxd,) = run_kernel_gpu(_nd("DepthwiseConv2dNativeBackpropInput", **da),
                                [np.array(x.shape, np.int32), fd, dyd], gpu)
        (dfd,) = run_kernel_gpu(_nd("DepthwiseConv2dNativeBackpropFilter", **da),
                                [x, np.array(fd.shape, np.int32), dyd], gpu)
        lhs = float((yd * dyd).sum())
        np.testing.assert_allclose((x * dxd).sum(), lhs, rtol=1e-10)
        np.testing.assert_allclose((fd * dfd).sum(), lhs, rtol=1e-10)


def _against_cpu(gpu, node_def, inputs, rtol=1e-5, atol=1e-5, exact=False):
    got = run_kernel_gpu(node_def, inputs, gpu)
    want = run_kernel(node_def, inputs)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        if exact:
            assert g.tobytes() == w.tobytes()
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_pooling_against_cpu(gpu, fmt, padding):
    """Pooling on random inputs with ties, NaN, -0.0 and overlapping windows: the GPU kernels
    give the CPU kernels' (TF-verified) results exactly where they select."""
    rs = np.random.RandomState(2)
    x = rs.randint(-3, 4, size=(2, 7, 9, 3)).astype(np.float32)
    x[0, 1, 2, 0] = np.nan
    x[1, 3, :, 1] = -0.0
    if fmt == "NCHW":
        x = x.transpose(0, 3, 1, 2).copy()
    attrs = dict(T="float32", ksize=[1, 3, 2, 1] if fmt == "NHWC" else [1, 1, 3, 2],
                 strides=[1, 2, 1, 1] if fmt == "NHWC" else [1, 1, 2, 1], padding=padding,
                 data_format=fmt)
    (y,) = run_kernel(_nd("MaxPool", **attrs), [x])
    _against_cpu(gpu, _nd("MaxPool", **attrs), [x], exact=True)
    _against_cpu(gpu, _nd("AvgPool", **attrs), [x])
    g = rs.randn(*y.shape).astype(np.float32)
    _against_cpu(gpu, _nd("MaxPoolGrad", **attrs), [x, y, g])
    _against_cpu(gpu, _nd("MaxPoolGradGrad", **attrs), [x, y, rs.randn(*x.shape)
                                                         .astype(np.float32)], exact=True)
    _against_cpu(gpu, _nd("AvgPoolGrad", **attrs), [np.array(x.shape, np.int32), g])


def test_argmax_pooling_against_cpu(gpu):
    rs = np.random.RandomState(3)
    x = rs.randint(-3, 4, size=(2, 5, 6, 3)).astype(np.float32)
    for incl in (False, True):
        attrs = dict(T="float32", Targmax="int64", ksize=[1, 3, 2, 1], strides=[1, 2, 2, 1],
                     padding="SAME", include_batch_in_index=incl)
        _against_cpu(gpu, _nd("MaxPoolWithArgmax", **attrs), [x], exact=True)
        _, am = run_kernel(_nd("MaxPoolWithArgmax", **attrs), [x])
        g = rs.randn(*am.shape).astype(np.float32)
        _against_cpu(gpu, _nd("MaxPoolGradWithArgmax", **attrs), [x, g, am])
        gg = rs.randn(*x.shape).astype(np.float32)
        _against_cpu(gpu, _nd("MaxPoolGradGradWithArgmax", **attrs), [x, gg, am], exact=True)
    bad = am.copy()
    bad.reshape(-1)[3] = 10 ** 6
    with pytest.raises(InvalidArgumentError, match="Invalid output gradient index: 1000000"):
        run_kernel_gpu(_nd("MaxPoolGradWithArgmax", **attrs), [x, g, bad], gpu)
    with pytest.raises(InvalidArgumentError, match="Invalid input gradient index: 1000000"):
        run_kernel_gpu(_nd("MaxPoolGradGradWithArgmax", **attrs), [x, gg, bad], gpu)


def test_maxpool_ties_and_first_max(gpu):
    x = np.array([[1, 3, 3], [3, 2, 3], [0, 3, 1]], np.float64).reshape(1, 3, 3, 1)
    nd = _nd("MaxPoolGrad", T="float64", ksize=[1, 2, 2, 1], strides=[1, 1, 1, 1],
             padding="VALID")
    g = np.array([1.0, 2, 4, 8]).reshape(1, 2, 2, 1)
    (dx,) = run_kernel_gpu(nd, [x, np.zeros((1, 2, 2, 1)), g], gpu)
    want = np.zeros((3, 3))
    want[0, 1] += 1 + 2
    want[1, 0] += 4
    want[1, 2] += 8
    np.testing.assert_array_equal(dx.reshape(3, 3), want)


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8", "int64"])
def test_resize_against_cpu(gpu, dtype):
    rs = np.random.RandomState(4)
    x = (rs.rand(2, 13, 7, 3) * 100).astype(dtype)
    for ac, hp in ((False, False), (True, False), (False, True)):
        for size in ([29, 5], [4, 16]):
            s = np.array(size, np.int32)
            nd = _nd("ResizeBilinear", T=dtype, align_corners=ac, half_pixel_centers=hp)
            _against_cpu(gpu, nd, [x, s], exact=True)
            nd = _nd("ResizeNearestNeighbor", T=dtype, align_corners=ac, half_pixel_centers=hp)
            _against_cpu(gpu, nd, [x, s], exact=True)
            g = (rs.randn(2, size[0], size[1], 3) * 10).astype(dtype if dtype[0] != "u"
                                                                  else "int16")
            nd = _nd("ResizeNearestNeighborGrad", T=g.dtype.name, align_corners=ac,
                     half_pixel_centers=hp)
            _against_cpu(gpu, nd, [g, np.array(x.shape[1:3], np.int32)],
                         rtol=2e-3 if dtype == "float16" else 1e-5,
                         exact=g.dtype.kind == "i")
            if dtype in ("float32", "float16"):
                nd = _nd("ResizeBilinearGrad", T=dtype, align_corners=ac, half_pixel_centers=hp)
                _against_cpu(gpu, nd, [g.astype(np.float32), x],
                             rtol=2e-3 if dtype == "float16" else 1e-5, atol=1e-3)


def test_type_constraints(gpu):
    node = kernel_node(_nd("MaxPoolWithArgmax", T="float32", Targmax="int32",
                           ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="VALID"))
    assert gpu_kernel_def(node) is None  # an int32 argmax would live in host memory
    node = kernel_node(_nd("Conv2D", T="bfloat16", strides=[1, 1, 1, 1], padding="VALID"))
    assert gpu_kernel_def(node) is None
    # int32 convolutions and pooling: everything in host memory, the CPU kernel runs them
    x = np.arange(2 * 4 * 4 * 1, dtype=np.int32).reshape(2, 4, 4, 1)
    nd = _nd("MaxPool", T="int32", ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="VALID")
    _against_cpu(gpu, nd, [x], exact=True)
