"""The nn-family GPU kernels (kernels_gpu/nn_ops.py) against TensorFlow's recordings
(tests/fixtures/ops/nn.*, the same cases the CPU kernels pass), on the ``gpu`` fixture (the
simulated GPU; a real one under ``pytest -m gpu``), plus the numba.cuda kernels (sparse softmax
cross entropy, BiasAddGrad) on small inputs against numpy references, both paths each."""

import base64
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from gpu_util import gpu_kernel_def, run_kernel_gpu
from kernel_util import kernel_node
from mgrt.kernels_gpu import nn_ops as gpu_nn
from mgrt.protos import node_def_pb2
from mgrt.runtime import dtypes, kernel_registry
from mgrt.runtime.errors import InvalidArgumentError

# the simulated GPU computes with numpy, which warns where CuPy is silent (inf - inf, ...)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

OPS = Path(__file__).parent / "fixtures" / "ops"
DOC = json.loads((OPS / "nn.json").read_text())
CASES = DOC["cases"]
with np.load(OPS / "nn.npz", allow_pickle=False) as _z:
    POOLS = {k: _z[k] for k in _z.files}

GPU_OPS = [
    "BiasAdd", "BiasAddV1", "BiasAddGrad",
    "Relu", "ReluGrad", "Relu6", "Relu6Grad", "Elu", "EluGrad", "Selu", "SeluGrad",
    "LeakyRelu", "LeakyReluGrad",
    "Softmax", "LogSoftmax", "SoftmaxCrossEntropyWithLogits",
    "SparseSoftmaxCrossEntropyWithLogits", "L2Loss", "LRN", "LRNGrad", "TopKV2", "InTopKV2",
    "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3",
    "FusedBatchNormGrad", "FusedBatchNormGradV2", "FusedBatchNormGradV3",
]
NUMBA_OPS = {"SparseSoftmaxCrossEntropyWithLogits", "BiasAddGrad"}
NOT_GPU_DTYPES = {"bfloat16", "complex64", "complex128"}

# (rtol, atol) by dtype, as in test_kernels_nn.py
_TOL = {
    "float16": (2e-3, 1e-3), "float32": (2e-5, 2e-6), "float64": (1e-12, 1e-13),
}
_LOOSE = {
    "float16": (6e-3, 4e-3), "float32": (3e-5, 4e-6), "float64": (1e-12, 1e-13),
}
_LOOSE_OPS = {"L2Loss", "LRN", "LRNGrad", "SoftmaxCrossEntropyWithLogits",
              "SparseSoftmaxCrossEntropyWithLogits", "Softmax", "LogSoftmax",
              "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3",
              "FusedBatchNormGrad", "FusedBatchNormGradV2", "FusedBatchNormGradV3"}


def _array(spec):
    pool = POOLS[spec["dtype"]]
    n = int(np.prod(spec["shape"], dtype=np.int64))
    a = pool[spec["offset"]:spec["offset"] + n]
    if spec["dtype"] == "bfloat16":
        a = a.view(ml_dtypes.bfloat16)
    return a.reshape(spec["shape"]).copy()


def _dtype_name(a):
    return "bfloat16" if a.dtype == np.dtype(ml_dtypes.bfloat16) else a.dtype.name


def _case_dtypes(case):
    return {s["dtype"] for s in case["inputs"] + (case["outputs"] or [])}


def _has_gpu_kernel(case):
    node = kernel_node(base64.b64decode(case["node_def"]))
    return gpu_kernel_def(node) is not None


GPU_CASES = [c for c in CASES if c["op"] in GPU_OPS and _has_gpu_kernel(c)]


def _sort_topk(values, indices):
    v = values.reshape(-1, values.shape[-1]).astype(np.float64)
    i = indices.reshape(-1, indices.shape[-1])
    order = np.lexsort((i, -v), axis=-1) if v.size else np.zeros(v.shape, np.int64)
    return (np.take_along_axis(values.reshape(v.shape), order, -1),
            np.take_along_axis(i, order, -1))


def _compare(case, i, got, want):
    name = f"{case['name']} output {i}"
    assert _dtype_name(got) == _dtype_name(want), (name, got.dtype, want.dtype)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    if i in case["unspecified_outputs"]:
        return
    kind = want.dtype.kind
    if kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    rtol, atol = (_LOOSE if case["op"] in _LOOSE_OPS else _TOL)[_dtype_name(want)]
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    if case["signed_zero"]:
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


def _count_launches(monkeypatch):
    calls = []
    launch = gpu_nn.launch

    def counting(*args, **kwargs):
        calls.append(args[1])
        return launch(*args, **kwargs)

    monkeypatch.setattr(gpu_nn, "launch", counting)
    return calls


def _params():
    out = []
    for c in GPU_CASES:
        # int32 BiasAddGrad lives in host memory: the CPU kernel runs it
        numba = c["op"] in NUMBA_OPS and c["inputs"][0]["dtype"] != "int32"
        for path in (("numba", "xp") if numba else ("xp",)):
            out.append(pytest.param(c, path, id=f"{c['name']}-{path}"))
    return out


@pytest.mark.parametrize("case,path", _params())
def test_recorded(case, path, gpu, monkeypatch):
    node_def = base64.b64decode(case["node_def"])
    inputs = [_array(s) for s in case["inputs"]]
    monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "4096" if path == "numba" else "0")
    if case["error"] and "Received a label value" in case["error"]["message"]:
        # TensorFlow's GPU kernel (and mgrt's) gives NaN rows for labels out of range where
        # its CPU kernel raises: the valid rows against numpy, the others NaN
        logits, labels = inputs
        loss, bp = run_kernel_gpu(node_def, inputs, gpu)
        bad = (labels < 0) | (labels >= logits.shape[1])
        assert bad.any() and np.isnan(loss[bad]).all() and np.isnan(bp[bad]).all()
        if (~bad).any():
            want_loss, want_bp = _xent_ref(logits[~bad].astype(np.float64), labels[~bad])
            np.testing.assert_allclose(loss[~bad], want_loss, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(bp[~bad], want_bp, rtol=1e-3, atol=1e-3)
        return
    if case["error"]:
        assert case["error"]["type"] == "InvalidArgumentError"
        with pytest.raises(InvalidArgumentError) as ei:
            run_kernel_gpu(node_def, inputs, gpu)
        assert case["error"]["message"] in str(ei.value)
        return
    numba = case["op"] in NUMBA_OPS and inputs[0].dtype != np.int32
    launches = _count_launches(monkeypatch) if numba else None
    outs = _run_checked(node_def, inputs, gpu)
    if launches is not None and getattr(gpu, "is_simulated", False):
        # the numba kernel ran (inputs under the limit) or did not (limit 0)
        assert len(launches) == (path == "numba" and inputs[0].size > 0)
    wants = [_array(s) for s in case["outputs"]]
    if case["unordered"]:
        outs = list(_sort_topk(*outs))
        wants = list(_sort_topk(*wants))
        outs[1] = outs[1].astype(wants[1].dtype)
    for i, (got, want) in enumerate(zip(outs, wants)):
        _compare(case, i, got, want)


def test_every_op_registered_and_cases_covered():
    for op in GPU_OPS:
        assert kernel_registry.lookup(op, "GPU") is not None, op
    # every recorded case of these ops runs on the GPU, except those with dtypes GPU kernels
    # do not cover (bfloat16, complex): those nodes soft-place to the CPU
    for c in CASES:
        if c["op"] in GPU_OPS and not _has_gpu_kernel(c):
            assert _case_dtypes(c) & NOT_GPU_DTYPES, c["name"]
    assert len(GPU_CASES) > 500


def test_numba_paths_taken_on_small_inputs(gpu, monkeypatch):
    if not getattr(gpu, "is_simulated", False):
        pytest.skip("the simulator's limit only")
    monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "4096")
    launches = _count_launches(monkeypatch)
    rs = np.random.RandomState(0)
    _run("SparseSoftmaxCrossEntropyWithLogits", [rs.randn(3, 4).astype(np.float32),
                                                 np.array([0, 3, 1], np.int64)], gpu,
         T="float32", Tlabels="int64")
    _run("BiasAddGrad", [rs.randn(3, 4).astype(np.float32)], gpu, T="float32")
    assert len(launches) == 2


# --- helpers for hand-built nodes ---------------------------------------------------------------
def _node(op, **attrs):
    nd = node_def_pb2.NodeDef(name=op.lower(), op=op)
    for k, v in attrs.items():
        if isinstance(v, bool):
            nd.attr[k].b = v
        elif isinstance(v, float):
            nd.attr[k].f = v
        elif isinstance(v, int):
            nd.attr[k].i = v
        elif isinstance(v, bytes):
            nd.attr[k].s = v
        else:
            nd.attr[k].type = dtypes.as_dtype(v).as_datatype_enum
    return nd


def _run(op, inputs, gpu, **attrs):
    return run_kernel_gpu(_node(op, **attrs), inputs, gpu)


def _xent_ref(logits, labels):
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    loss = (np.log(s) - (x - m)[np.arange(len(labels)), labels][:, None])[:, 0]
    bp = e / s
    bp[np.arange(len(labels)), labels] -= 1
    return loss, bp


# --- the numba kernels against numpy, both paths -------------------------------------------------
@pytest.mark.parametrize("path", ["numba", "xp"])
@pytest.mark.parametrize("dtype,tlabels", [("float32", "int64"), ("float32", "int32"),
                                           ("float16", "int64"), ("float64", "int32")])
def test_sparse_xent_reference(gpu, monkeypatch, path, dtype, tlabels):
    monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "4096" if path == "numba" else "0")
    launches = _count_launches(monkeypatch)
    rs = np.random.RandomState(4)
    logits = (rs.randn(6, 5) * 3).astype(dtype)
    logits[2, 1] = 40  # a dominant class
    labels = np.array([0, 4, 1, 2, 3, 4], tlabels)
    loss, bp = _run("SparseSoftmaxCrossEntropyWithLogits", [logits, labels], gpu, T=dtype,
                    Tlabels=tlabels)
    want_loss, want_bp = _xent_ref(logits, labels.astype(np.int64))
    tol = 2e-3 if dtype == "float16" else 1e-5
    np.testing.assert_allclose(loss, want_loss, rtol=tol, atol=tol)
    np.testing.assert_allclose(bp, want_bp, rtol=tol, atol=tol)
    assert loss.dtype == bp.dtype == np.dtype(dtype)
    if getattr(gpu, "is_simulated", False):
        assert len(launches) == (1 if path == "numba" else 0)


@pytest.mark.parametrize("path", ["numba", "xp"])
def test_sparse_xent_nonfinite_rows(gpu, monkeypatch, path):
    """A NaN anywhere in a row makes the row's loss and gradient NaN (numpy's max, as the CPU
    kernel); -inf logits get a zero gradient."""
    monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "4096" if path == "numba" else "0")
    logits = np.array([[1.0, np.nan, 2.0], [np.nan, 0.0, 1.0], [0.0, -np.inf, 1.0]],
                      np.float32)
    labels = np.array([0, 1, 2], np.int32)
    loss, bp = _run("SparseSoftmaxCrossEntropyWithLogits", [logits, labels], gpu,
                    T="float32", Tlabels="int32")
    assert np.isnan(loss[:2]).all() and np.isnan(bp[:2]).all()
    want_loss, want_bp = _xent_ref(logits[2:], labels[2:])
    np.testing.assert_allclose(loss[2:], want_loss, rtol=1e-6)
    np.testing.assert_allclose(bp[2:], want_bp, rtol=1e-6, atol=1e-7)
    assert bp[2, 1] == 0


@pytest.mark.parametrize("path", ["numba", "xp"])
@pytest.mark.parametrize("tlabels", ["int32", "int64"])
def test_sparse_xent_label_out_of_range(gpu, monkeypatch, path, tlabels):
    """As TensorFlow's GPU kernel: a NaN loss and gradient row, no error (no sync)."""
    monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "4096" if path == "numba" else "0")
    rs = np.random.RandomState(3)
    logits = rs.randn(3, 4).astype(np.float32)
    for bad_row, labels in ((1, [0, 4, 1]), (2, [0, 2, -1])):
        labels = np.array(labels, tlabels)
        loss, bp = _run("SparseSoftmaxCrossEntropyWithLogits", [logits, labels],
                        gpu, T="float32", Tlabels=tlabels)
        assert np.isnan(loss[bad_row]) and np.isnan(bp[bad_row]).all()
        ok = np.arange(3) != bad_row
        want_loss, want_bp = _xent_ref(logits[ok], labels[ok].astype(np.int64))
        np.testing.assert_allclose(loss[ok], want_loss, rtol=1e-5)
        np.testing.assert_allclose(bp[ok], want_bp, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", ["numba", "xp"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int8", "uint8", "int64",
                                   "uint64"])
@pytest.mark.parametrize("fmt", [b"NHWC", b"NCHW"])
def test_bias_add_grad_reference(gpu, monkeypatch, path, dtype, fmt):
    monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "4096" if path == "numba" else "0")
    launches = _count_launches(monkeypatch)
    rs = np.random.RandomState(5)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        g = rs.randn(2, 3, 4, 5).astype(dt)
    else:
        info = np.iinfo(dt)
        g = rs.randint(max(info.min, -100), min(info.max, 100) + 1, size=(2, 3, 4, 5)).astype(dt)
        g.reshape(-1)[::7] = info.max  # sums that wrap
    (r,) = _run("BiasAddGrad", [g], gpu, T=dtype, data_format=fmt)
    axes = (0, 1, 2) if fmt == b"NHWC" else (0, 2, 3)
    if dt.kind == "f":
        want = g.astype(np.float64).sum(axis=axes)
        tol = 1e-2 if dtype == "float16" else 1e-5
        np.testing.assert_allclose(r.astype(np.float64), want, rtol=tol, atol=tol)
    else:  # modular sums, exactly
        want = g.astype(np.uint64 if dt.kind == "u" else np.int64).sum(axis=axes).astype(dt)
        np.testing.assert_array_equal(r, want)
    assert r.dtype == dt
    if getattr(gpu, "is_simulated", False):
        assert len(launches) == (1 if path == "numba" else 0)


# --- larger shapes and the CPU kernels as a second check ----------------------------------------
def test_batch_norm_training_reference(gpu):
    rs = np.random.RandomState(0)
    x = (rs.randn(8, 7, 6, 16) * 2 + 3).astype(np.float32)
    scale = rs.rand(16).astype(np.float32) + 0.5
    offset = rs.randn(16).astype(np.float32)
    e = np.zeros([0], np.float32)
    y, rm, rv, sm, sv, r3 = _run("FusedBatchNormV3", [x, scale, offset, e, e], gpu,
                                 T="float32", U="float32", epsilon=0.001, is_training=True)
    x64 = x.astype(np.float64).reshape(-1, 16)
    m, v = x64.mean(0), x64.var(0)
    want = (x64 - m) / np.sqrt(v + 0.001) * scale + offset
    np.testing.assert_allclose(y.reshape(-1, 16), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sm, m, rtol=1e-6)
    np.testing.assert_allclose(sv, v, rtol=1e-5)
    n = x64.shape[0]
    np.testing.assert_allclose(rv, v * n / (n - 1), rtol=1e-5)
    assert r3.shape == () and r3 == 0
    outs = _run("FusedBatchNormV3", [x.transpose(0, 3, 1, 2).copy(), scale, offset, e, e], gpu,
                T="float32", U="float32", epsilon=0.001, is_training=True, data_format=b"NCHW")
    np.testing.assert_allclose(outs[0].transpose(0, 2, 3, 1), y, rtol=1e-5, atol=1e-5)
    dy = rs.randn(*x.shape).astype(np.float32)
    dx, ds, do, _, _ = _run("FusedBatchNormGradV3", [dy, x, scale, sm, sv, e], gpu,
                            T="float32", U="float32", epsilon=0.001, is_training=True)
    dy64 = dy.astype(np.float64).reshape(-1, 16)
    xh = (x64 - m) / np.sqrt(v + 0.001)
    want_dx = (scale / np.sqrt(v + 0.001)) * (dy64 - dy64.mean(0) - xh * (dy64 * xh).mean(0))
    np.testing.assert_allclose(dx.reshape(-1, 16), want_dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds, (dy64 * xh).sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(do, dy64.sum(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint8", "int32", "int64"])
def test_top_k_reference(gpu, dtype):
    rs = np.random.RandomState(3)
    dt = np.dtype(dtype)
    x = rs.randint(-3, 4, size=(6, 64)).astype(dt) if dt.kind != "u" else \
        rs.randint(0, 4, size=(6, 64)).astype(dt)
    if dt.kind == "f":
        x[0, :5] = np.inf
        x[1, 10:] = -np.inf
    for k in (1, 2, 5, 64):
        v, i = _run("TopKV2", [x, np.int32(k)], gpu, T=dtype)
        order = np.lexsort((np.arange(64)[None].repeat(6, 0), -x.astype(np.float64)),
                           axis=-1)[:, :k]
        np.testing.assert_array_equal(i, order)
        assert v.tobytes() == np.take_along_axis(x, order, -1).tobytes()


def test_lrn_reference(gpu):
    rs = np.random.RandomState(2)
    x = rs.randn(2, 3, 3, 40).astype(np.float32)
    r, bias, alpha, beta = 4, 1.5, 0.3, 0.6
    (y,) = _run("LRN", [x], gpu, T="float32", depth_radius=r, bias=bias, alpha=alpha, beta=beta)
    x64 = x.astype(np.float64)
    sq = x64 ** 2
    win = np.stack([sq[..., max(0, d - r):d + r + 1].sum(-1) for d in range(40)], -1)
    np.testing.assert_allclose(y, x64 / (bias + alpha * win) ** beta, rtol=1e-5, atol=1e-6)


def test_in_top_k_int32_targets_on_device(gpu):
    """InTopKV2 keeps its int32 targets in device memory (as TF's GPU kernel)."""
    node = kernel_node(_node("InTopKV2", T="int32"))
    assert "targets" in gpu_kernel_def(node).device_memory
    preds = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.2], [np.nan, 1, 2]], np.float32)
    (ok,) = _run("InTopKV2", [preds, np.array([2, 1, 2], np.int32), np.int32(1)], gpu, T="int32")
    np.testing.assert_array_equal(ok, [False, True, False])
