"""The nn-family CPU kernels against TensorFlow's recordings (tests/fixtures/ops/nn.*, written by
tests/fixtures/ops/make_nn_fixtures.py with TensorFlow 2.21), plus numpy references for shapes
larger than the fixtures hold."""

import base64
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from kernel_util import kernel_node, run_kernel
from mgrt.runtime import kernel_registry
from mgrt.runtime.errors import InvalidArgumentError

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # kernels stay quiet

OPS = Path(__file__).parent / "fixtures" / "ops"
DOC = json.loads((OPS / "nn.json").read_text())
CASES = DOC["cases"]
with np.load(OPS / "nn.npz", allow_pickle=False) as _z:
    POOLS = {k: _z[k] for k in _z.files}

NN_OPS = [
    "BiasAdd", "BiasAddV1", "BiasAddGrad",
    "Relu", "ReluGrad", "Relu6", "Relu6Grad", "Elu", "EluGrad", "Selu", "SeluGrad",
    "LeakyRelu", "LeakyReluGrad",
    "Softmax", "LogSoftmax", "SoftmaxCrossEntropyWithLogits",
    "SparseSoftmaxCrossEntropyWithLogits", "L2Loss", "LRN", "LRNGrad", "TopKV2", "InTopKV2",
    "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3",
    "FusedBatchNormGrad", "FusedBatchNormGradV2", "FusedBatchNormGradV3",
]

# (rtol, atol) by dtype; ops listed in _LOOSE get more for half types (values accumulated or
# passed through exp/log in float32 by mgrt, in the half type itself by Eigen).
_TOL = {
    "float16": (2e-3, 1e-3), "bfloat16": (1.6e-2, 1e-2),
    "float32": (2e-5, 2e-6), "float64": (1e-12, 1e-13),
    "complex64": (2e-5, 2e-6), "complex128": (1e-12, 1e-13),
}
_LOOSE = {
    "float16": (6e-3, 4e-3), "bfloat16": (4e-2, 4e-2),
    "float32": (3e-5, 4e-6), "float64": (1e-12, 1e-13),
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


def _sort_topk(values, indices):
    """Rows of a sorted=False TopKV2 in (value desc, index asc) order."""
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
    dt = _dtype_name(want)
    rtol, atol = (_LOOSE if case["op"] in _LOOSE_OPS else _TOL)[dt]
    g = got.astype(np.complex128 if kind == "c" else np.float64)
    w = want.astype(np.complex128 if kind == "c" else np.float64)
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    if case["signed_zero"] and kind != "c":
        z = w == 0
        np.testing.assert_array_equal(np.signbit(g[z]), np.signbit(w[z]),
                                      err_msg=f"{name}: sign of zero")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_recorded(case):
    node_def = base64.b64decode(case["node_def"])
    inputs = [_array(s) for s in case["inputs"]]
    before = [x.copy() for x in inputs]
    if case["error"]:
        assert case["error"]["type"] == "InvalidArgumentError"
        with pytest.raises(InvalidArgumentError) as ei:
            run_kernel(node_def, inputs)
        assert case["error"]["message"] in str(ei.value)
        return
    outs = run_kernel(node_def, inputs)
    for x, b in zip(inputs, before):  # inputs are never changed
        assert x.tobytes() == b.tobytes()
    wants = [_array(s) for s in case["outputs"]]
    if case["unordered"]:
        outs = list(_sort_topk(*outs))
        wants = list(_sort_topk(*wants))
        outs[1] = outs[1].astype(wants[1].dtype)
    for i, (got, want) in enumerate(zip(outs, wants)):
        _compare(case, i, got, want)


_RELU_GRAD_CASES = [c for c in CASES if c["op"] == "ReluGrad"]


@pytest.mark.parametrize("path", ["numba", "numba-team", "numpy"])
@pytest.mark.parametrize("case", _RELU_GRAD_CASES, ids=[c["name"] for c in _RELU_GRAD_CASES])
def test_recorded_relu_grad_every_path(case, path, monkeypatch):
    """float32/float64 ReluGrad is one numba pass (kernels_cpu/_jit.py), split over a team of
    three threads when big (forced here for any size); MGRT_CPU_JIT=0 gives numpy's passes."""
    from mgrt.kernels_cpu import _jit, _team
    monkeypatch.setitem(_jit._state, "on", path != "numpy")
    if path == "numba-team":
        monkeypatch.setattr(_team, "_FIXED", 3)
        monkeypatch.setattr(_team, "SPLIT_MIN_BYTES", 0)
    test_recorded(case)


_SPARSE_XENT_CASES = [c for c in CASES if c["op"] == "SparseSoftmaxCrossEntropyWithLogits"]


@pytest.mark.parametrize("path", ["numba", "numpy"])
@pytest.mark.parametrize("case", _SPARSE_XENT_CASES, ids=[c["name"] for c in _SPARSE_XENT_CASES])
def test_recorded_sparse_xent_every_path(case, path, monkeypatch):
    """float32/float64 SparseSoftmaxCrossEntropyWithLogits is one numba pass
    (kernels_cpu/_jit.py); MGRT_CPU_JIT=0 gives numpy's; both against TensorFlow's outputs
    (-inf, inf, NaN and huge logits; one class; errors)."""
    from mgrt.kernels_cpu import _jit
    assert _jit.enabled()  # the loops load
    monkeypatch.setitem(_jit._state, "on", path != "numpy")
    test_recorded(case)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,c", [(0, 3), (5, 3), (7, 16), (1000, 24), (3, 300), (40, 1)])
def test_bias_relu_loop_against_numpy(rows, c, dtype, relu):
    """_jit.bias_relu runs x as one flat run against the bias repeated (its loop's span a
    multiple of C; a tail of x shorter than the span): BiasAdd's sums, then ReLU's
    max(x, 0) keeping NaN and -0.0, bit for bit."""
    from mgrt.kernels_cpu import _jit
    assert _jit.enabled()
    rs = np.random.RandomState(rows + c)
    x = rs.randn(rows, c).astype(dtype)
    b = rs.randn(c).astype(dtype)
    if x.size:
        x.flat[::7] = np.nan
        x.flat[1::11] = -0.0
        b[0] = -0.0
    with np.errstate(invalid="ignore"):
        want = x + b
        if relu:
            want = np.where(want < 0, np.zeros((), dtype), want)
    for team in (False, True):
        got = x.copy()
        _jit.bias_relu(got, b, relu, team=team)
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_grad_big_on_a_team_against_numpy(dtype):
    """Over SPLIT_MIN_BYTES the one-pass loop runs in blocks on the team: NaN and inf gradients
    times 0 are NaN, -0.0 features are not > 0, every element once."""
    rs = np.random.RandomState(7)
    n = (1 << 20) // np.dtype(dtype).itemsize + 13  # several MiB moved, an odd length
    f = rs.randn(n).astype(dtype)
    g = rs.randn(n).astype(dtype)
    f[::97] = -0.0
    g[::89] = np.nan
    g[::101] = np.inf
    g[1::101] = -np.inf
    f = f.reshape(-1, 1)
    g = g.reshape(-1, 1)
    (got,) = run_kernel(_node_def("ReluGrad", T=dtype), [g, f])
    with np.errstate(invalid="ignore"):
        want = g * (f > 0).astype(dtype)
    assert got.tobytes() == want.tobytes()


def test_every_op_recorded_and_registered():
    recorded = {c["op"] for c in CASES}
    assert set(NN_OPS) <= recorded, set(NN_OPS) - recorded
    for op in NN_OPS:
        assert kernel_registry.lookup(op, "CPU") is not None, op


def test_type_constraints_follow_tf():
    # LRN has no bfloat16 CPU kernel in TF; FusedBatchNorm (V1) is float32 only
    node = kernel_node(_node_def("LRN", T="bfloat16"))
    assert kernel_registry.lookup("LRN", "CPU", node.attrs) is None
    node = kernel_node(_node_def("Relu", T="int8"))
    assert kernel_registry.lookup("Relu", "CPU", node.attrs) is not None
    node = kernel_node(_node_def("Elu", T="int32"))
    assert kernel_registry.lookup("Elu", "CPU", node.attrs) is None


def _node_def(op, **types):
    from mgrt.protos import node_def_pb2
    from mgrt.runtime import dtypes

    nd = node_def_pb2.NodeDef(name=op.lower(), op=op)
    for k, v in types.items():
        nd.attr[k].type = dtypes.as_dtype(v).as_datatype_enum
    return nd


def _run(op, inputs, **attrs):
    from mgrt.protos import node_def_pb2
    from mgrt.runtime import dtypes

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
    return run_kernel(nd, inputs)


# --- numpy references on larger shapes ---------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bias_add_grad_larger_reference(dtype):
    """The BLAS path (channels last): sums over every row, against float64 sums; inf and NaN
    propagate; 0 rows give zeros; NCHW and a 2-D gradient agree."""
    rs = np.random.RandomState(3)
    for shape in [(32, 28, 28, 16), (7, 5, 3), (256, 1024), (1, 1), (0, 4), (3, 0)]:
        g = (rs.randn(*shape) * 3).astype(dtype)
        (r,) = _run("BiasAddGrad", [g], T=dtype)
        want = g.astype(np.float64).sum(axis=tuple(range(g.ndim - 1)))
        assert r.dtype == np.dtype(dtype) and r.shape == (shape[-1],)
        rtol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(r, want, rtol=rtol, atol=rtol * np.sqrt(g.size) * 3)
        if g.ndim == 4:
            (rc,) = _run("BiasAddGrad", [g.transpose(0, 3, 1, 2).copy()], T=dtype,
                         data_format=b"NCHW")
            np.testing.assert_allclose(rc, want, rtol=rtol, atol=rtol * np.sqrt(g.size) * 3)
    g = np.ones((4, 3), dtype)
    g[1, 0], g[2, 1] = np.inf, np.nan
    (r,) = _run("BiasAddGrad", [g], T=dtype)
    assert r[0] == np.inf and np.isnan(r[1]) and r[2] == 4


def test_batch_norm_training_reference():
    rs = np.random.RandomState(0)
    x = (rs.randn(8, 7, 6, 16) * 2 + 3).astype(np.float32)
    scale = rs.rand(16).astype(np.float32) + 0.5
    offset = rs.randn(16).astype(np.float32)
    e = np.zeros([0], np.float32)
    y, rm, rv, sm, sv, r3 = _run("FusedBatchNormV3", [x, scale, offset, e, e], T="float32",
                                 U="float32", epsilon=0.001, is_training=True)
    x64 = x.astype(np.float64).reshape(-1, 16)
    m, v = x64.mean(0), x64.var(0)
    want = (x64 - m) / np.sqrt(v + 0.001) * scale + offset
    np.testing.assert_allclose(y.reshape(-1, 16), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sm, m, rtol=1e-6)
    np.testing.assert_allclose(sv, v, rtol=1e-5)
    n = x64.shape[0]
    np.testing.assert_allclose(rv, v * n / (n - 1), rtol=1e-5)
    assert r3.shape == () and r3 == 0
    # NCHW gives the same numbers
    outs = _run("FusedBatchNormV3", [x.transpose(0, 3, 1, 2).copy(), scale, offset, e, e],
                T="float32", U="float32", epsilon=0.001, is_training=True, data_format=b"NCHW")
    np.testing.assert_allclose(outs[0].transpose(0, 2, 3, 1), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[1], rm, rtol=1e-6)
    # the gradient against finite differences of the numpy reference
    dy = rs.randn(*x.shape).astype(np.float32)
    dx, ds, do, _, _ = _run("FusedBatchNormGradV3", [dy, x, scale, sm, sv, e], T="float32",
                            U="float32", epsilon=0.001, is_training=True)
    dy64 = dy.astype(np.float64).reshape(-1, 16)
    xh = (x64 - m) / np.sqrt(v + 0.001)
    want_dx = (scale / np.sqrt(v + 0.001)) * (dy64 - dy64.mean(0) - xh * (dy64 * xh).mean(0))
    np.testing.assert_allclose(dx.reshape(-1, 16), want_dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds, (dy64 * xh).sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(do, dy64.sum(0), rtol=1e-5, atol=1e-4)


def test_top_k_reference():
    rs = np.random.RandomState(1)
    x = rs.randint(0, 50, size=(5, 300)).astype(np.float32)
    for k in (1, 7, 300):
        v, i = _run("TopKV2", [x, np.int32(k)], T="float32")
        order = np.lexsort((np.arange(300)[None].repeat(5, 0), -x), axis=-1)[:, :k]
        np.testing.assert_array_equal(i, order)
        np.testing.assert_array_equal(v, np.take_along_axis(x, order, -1))


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint8", "int32", "int64"])
def test_top_k_partition_path_reference(dtype):
    # k much smaller than the row takes the partition path: ties at the k-th value go to the
    # lower indexes, extremes of the integer types and signed zeros included
    rs = np.random.RandomState(3)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        x = rs.randint(-3, 4, size=(6, 64)).astype(dt)
        x[x == 0] = np.where(rs.rand(int((x == 0).sum())) < 0.5, -0.0, 0.0)
        x[0, :5] = np.inf
        x[1, 10:] = -np.inf
    else:
        info = np.iinfo(dt)
        x = rs.randint(max(info.min, -3), min(info.max, 4) + 1, size=(6, 64)).astype(dt)
        x[0, [3, 9, 40]] = info.max
        x[2, [7, 8]] = info.min
    for k in (2, 5, 16):
        v, i = _run("TopKV2", [x, np.int64(k)], T=dtype, Tk="int64")
        order = np.lexsort((np.arange(64)[None].repeat(6, 0), -x.astype(np.float64)),
                           axis=-1)[:, :k]
        np.testing.assert_array_equal(i, order)
        assert v.tobytes() == np.take_along_axis(x, order, -1).tobytes()


def test_lrn_reference():
    rs = np.random.RandomState(2)
    x = rs.randn(2, 3, 3, 40).astype(np.float32)
    r, bias, alpha, beta = 4, 1.5, 0.3, 0.6
    (y,) = _run("LRN", [x], T="float32", depth_radius=r, bias=bias, alpha=alpha, beta=beta)
    x64 = x.astype(np.float64)
    sq = x64 ** 2
    win = np.stack([sq[..., max(0, d - r):d + r + 1].sum(-1) for d in range(40)], -1)
    np.testing.assert_allclose(y, x64 / (bias + alpha * win) ** beta, rtol=1e-5, atol=1e-6)
