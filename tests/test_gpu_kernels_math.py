"""The math kernels on a GPU (kernels_gpu/math_ops.py) against TensorFlow's recordings.

Every case of tests/fixtures/ops/math.{json,npz} whose dtypes a GPU has (float16/32/64, the
integer types, bool) and whose node has a GPU kernel runs through ``gpu_util.run_kernel_gpu`` on
the ``gpu`` fixture (the simulated GPU; the real one under ``pytest -m gpu``): inputs go where
the placement keeps them (int32 and the reduction/axis args in host memory, the rest on the
device), outputs are checked to be where they must be, and the values must match TensorFlow's
as in tests/test_kernels_math.py (error cases: the same error class and key phrase).

Beyond the recordings: bfloat16, complex and string nodes have no GPU kernel; int32-only nodes
run in host memory without a copy; the numba.cuda kernels and the array-module path are both
checked on small inputs against numpy references; and on random inputs (broadcasting, special
functions over wide ranges, reductions over every axis set, Cast with Truncate) the GPU kernels
agree with the CPU kernels, which are TensorFlow-verified.
"""

import base64
import itertools
import json
import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from mgrt.protos import attr_value_pb2, node_def_pb2
from mgrt.runtime import dtypes, errors, kernel_registry
from gpu_util import gpu_kernel_def, has_gpu_kernel, host_flags, run_kernel_gpu
from kernel_util import kernel_node, run_kernel

FIXTURES = Path(__file__).parent / "fixtures" / "ops"
DOC = json.loads((FIXTURES / "math.json").read_text())
CASES = DOC["cases"]
_BF16 = np.dtype(ml_dtypes.bfloat16)

GPU_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
              "uint16", "uint32", "uint64", "bool"}
NO_GPU_DTYPES = {"bfloat16", "complex64", "complex128", "string"}
COMPLEX_ONLY_OPS = {"Real", "Imag", "Conj", "ComplexAbs"}
NUMBA_OPS = {"Sigmoid", "Softplus", "SigmoidGrad", "TanhGrad", "SoftplusGrad"}


def _load_pool():
    with np.load(FIXTURES / "math.npz", allow_pickle=False) as z:
        pool = {k: z[k] for k in z.files}
    if "bfloat16" in pool:
        pool["bfloat16"] = pool["bfloat16"].view(_BF16)
    return pool


POOL = _load_pool()


def _array(spec):
    shape = tuple(spec["shape"])
    if spec["dtype"] == "string":
        vals = [base64.b64decode(s) for s in spec["b64"]]
        a = np.empty(len(vals), dtype=object)
        a[:] = vals
        return a.reshape(shape)
    flat = POOL[spec["dtype"]]
    n = math.prod(shape)
    return flat[spec["offset"]:spec["offset"] + n].reshape(shape).copy()


def _dtypes_of(case):
    return {s["dtype"] for s in case["inputs"]} | {s["dtype"] for s in case["outputs"] or []}


def _node_def(case):
    return base64.b64decode(case["node_def"])


# default tolerances (rtol, atol) by dtype; cases may carry their own
_TOL = {
    "float16": (2e-3, 2e-3), "bfloat16": (1.6e-2, 1.6e-2),
    "float32": (2e-6, 1e-6), "complex64": (2e-6, 1e-6),
    "float64": (1e-12, 1e-13), "complex128": (1e-12, 1e-13),
}

# op types whose values are only checked to a looser tolerance because TensorFlow's Eigen
# kernels (and the GPU's math library) are approximations (a few ulp)
_LOOSE32 = {"Sigmoid", "Tanh", "Expm1", "Log1p", "Softplus", "Pow", "Atan2", "Asinh", "Acosh",
            "Atanh", "Rsqrt", "Sinh", "Cosh", "Tan", "Asin", "Acos", "Atan", "Exp", "Log",
            "Sin", "Cos", "Xlogy", "Xlog1py", "Mean", "EuclideanNorm", "Sum", "Prod",
            "Cumsum", "Cumprod", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3",
            "AddN", "SoftplusGrad", "SigmoidGrad", "SqrtGrad", "RsqrtGrad", "ComplexAbs",
            "SquaredDifference", "Div", "RealDiv", "DivNoNan", "Xdivy", "Reciprocal", "Inv",
            "TanhGrad", "Erf", "Erfc", "Lgamma", "Digamma"}
_LOOSE64 = {"Pow", "Xlogy", "Xlog1py", "Mean", "EuclideanNorm", "Sum", "Prod", "Cumsum",
            "Cumprod", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Erf", "Erfc",
            "Lgamma", "Digamma"}


def _tolerance(case, dtype_name):
    if "rtol" in case:
        return case["rtol"], case.get("atol", case["rtol"])
    rtol, atol = _TOL[dtype_name]
    if dtype_name in ("float32", "complex64") and case["op"] in _LOOSE32:
        rtol, atol = 1e-5, 1e-6
    if dtype_name in ("float64", "complex128") and case["op"] in _LOOSE64:
        rtol, atol = 1e-10, 1e-12
    return rtol, atol


def _cast_defined(x, out_dtype):
    """The elements of a Cast whose result TensorFlow defines (float -> integer of NaN, inf or
    out-of-range values is undefined behaviour; TensorFlow flushes float32 subnormals)."""
    ok = np.ones(x.shape, bool)
    if x.dtype.kind not in "fc" and x.dtype != _BF16:
        return ok
    xr = np.real(x).astype(np.float64)
    if x.dtype in (np.float32, np.complex64):
        ok &= ~((xr != 0) & (np.abs(xr) < np.finfo(np.float32).tiny))
    if out_dtype.kind in "iu":
        info = np.iinfo(out_dtype)
        with np.errstate(invalid="ignore"):
            t = np.trunc(xr)
            ok &= np.isfinite(xr) & (t >= float(info.min)) & (t <= float(info.max))
            if out_dtype.itemsize == 8:  # float(int64 max) rounds up to 2**63
                ok &= t < float(info.max)
    return ok


# Where mgrt deliberately differs from TensorFlow, the test checks a numpy reference instead.
def _reference(case, inputs):
    if case["op"] == "Round" and inputs[0].dtype.kind in "iu":
        # TensorFlow 2.21's CPU Round kernel returns zeros for integers (tf.round itself
        # returns its integer input without a Round node); mgrt returns the input
        return [inputs[0]]
    return None


def _compare(case, i, got, want, inputs=()):
    name = f"{case['name']} output {i}"
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
    if case["op"] == "Cast":
        ok = _cast_defined(inputs[0], want.dtype)
        got, want = got[ok], want[ok]
    if want.dtype == object or want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    rtol, atol = _tolerance(case, want.dtype.name)
    if want.dtype == np.float16:
        got, want = got.astype(np.float32), want.astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    if want.dtype.kind == "f":  # NaN positions agree (above), and so do infinities
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=name)
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=name)
        zero = (want == 0) & (got == 0)
        np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]),
                                      err_msg=name + " (sign of zero)")


def _run_case(case, device):
    node_def = _node_def(case)
    inputs = [_array(s) for s in case["inputs"]]
    if case["error"] is not None:
        cls = getattr(errors, case["error"]["type"])
        with pytest.raises(cls) as info, np.errstate(all="ignore"):
            run_kernel_gpu(node_def, inputs, device)
        assert case["error"]["key"] in str(info.value), (str(info.value), case["error"]["key"])
        return
    originals = [a.copy() for a in inputs]
    with np.errstate(all="ignore"):
        outs = run_kernel_gpu(node_def, inputs, device)
    wants = _reference(case, originals) or [_array(spec) for spec in case["outputs"]]
    assert len(outs) == len(wants)
    for i, (got, want) in enumerate(zip(outs, wants)):
        _compare(case, i, got, want, originals)
    for a, b in zip(inputs, originals):  # host-memory inputs are left alone
        assert a.tobytes() == b.tobytes()


GPU_CASES = [c for c in CASES if _dtypes_of(c) <= GPU_DTYPES and has_gpu_kernel(_node_def(c))]
NO_GPU_CASES = [c for c in CASES if _dtypes_of(c) & NO_GPU_DTYPES]
NUMBA_CASES = [c for c in GPU_CASES if c["op"] in NUMBA_OPS]


@pytest.mark.parametrize("case", GPU_CASES, ids=[c["name"] for c in GPU_CASES])
def test_case(case, gpu):
    _run_case(case, gpu)


@pytest.fixture
def launches(monkeypatch):
    """Counts the numba.cuda launches of kernels_gpu.math_ops."""
    from mgrt.kernels_gpu import math_ops

    count = [0]
    real = math_ops.launch

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(math_ops, "launch", counting)
    return count


@pytest.mark.parametrize("case", NUMBA_CASES, ids=[c["name"] for c in NUMBA_CASES])
def test_numba_op_cases_on_the_array_path(case, gpu, monkeypatch, launches):
    """The ops with a numba.cuda kernel, on their array-module path (test_case takes the numba
    path for these small inputs on the simulated GPU)."""
    monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "0")
    _run_case(case, gpu)
    if getattr(gpu, "is_simulated", False):
        assert launches[0] == 0


def test_numba_kernels_run_on_the_recorded_cases(gpu, launches):
    """On the simulated GPU the recorded float32/float64 cases of the fused ops are small
    enough for the numba kernels: they run there (and match TensorFlow in test_case)."""
    if not getattr(gpu, "is_simulated", False):
        pytest.skip("a real GPU always takes the numba path")
    n = 0
    for case in NUMBA_CASES:
        if case["error"] is None and case["inputs"][0]["dtype"] in ("float32", "float64"):
            size = math.prod(case["inputs"][0]["shape"])
            with np.errstate(all="ignore"):
                run_kernel_gpu(_node_def(case), [_array(s) for s in case["inputs"]], gpu)
            n += size > 0
    assert n > 0 and launches[0] == n


def test_the_recorded_gpu_cases_cover_the_family():
    """Every op of the family but the complex-only ones has recorded cases on a GPU, and every
    recorded case with GPU dtypes has a GPU kernel."""
    family = {c["op"] for c in CASES}
    covered = {c["op"] for c in GPU_CASES}
    assert family - covered == COMPLEX_ONLY_OPS, sorted(family - covered)
    missing = [c["name"] for c in CASES
               if _dtypes_of(c) <= GPU_DTYPES and not has_gpu_kernel(_node_def(c))]
    assert not missing, missing
    assert len(GPU_CASES) > 1300


def test_bfloat16_complex_and_string_nodes_have_no_gpu_kernel():
    assert len(NO_GPU_CASES) > 300
    with_kernel = [c["name"] for c in NO_GPU_CASES if has_gpu_kernel(_node_def(c))]
    assert not with_kernel, with_kernel
    for op in COMPLEX_ONLY_OPS:
        assert kernel_registry.lookup(op, "GPU") is None, op


def test_host_memory_args():
    for op, arg in (("Sum", "reduction_indices"), ("Mean", "reduction_indices"),
                    ("Prod", "reduction_indices"), ("Max", "reduction_indices"),
                    ("Min", "reduction_indices"), ("All", "reduction_indices"),
                    ("Any", "reduction_indices"), ("EuclideanNorm", "reduction_indices"),
                    ("ArgMax", "dimension"), ("ArgMin", "dimension"), ("Cumsum", "axis"),
                    ("Cumprod", "axis")):
        assert arg in kernel_registry.lookup(op, "GPU").host_memory, op


INT32_CASES = [c for c in GPU_CASES if _dtypes_of(c) == {"int32"} and c["error"] is None]


def test_int32_nodes_run_with_host_arrays(gpu):
    """Nodes whose every input and output is int32 live in host memory: their GPU kernel is
    the CPU kernel, run on host arrays, with no copy to or from the device."""
    assert len(INT32_CASES) > 50
    for case in INT32_CASES:
        node = kernel_node(_node_def(case))
        in_host, out_host = host_flags(node, gpu_kernel_def(node))
        assert all(in_host) and all(out_host), case["name"]
    if getattr(gpu, "is_simulated", False):
        gpu.stats.reset()
    for case in INT32_CASES:
        _run_case(case, gpu)
    if getattr(gpu, "is_simulated", False):
        s = gpu.stats.snapshot()
        assert s["puts"] == s["fetches"] == s["implicit_puts"] == 0, s


def test_mixed_host_and_device_nodes_are_recorded():
    """The recordings exercise both kinds of mixed nodes: host inputs with device outputs
    (Equal of int32s, Cast from int32, ArgMax of int32s) and device inputs with host outputs
    (Cast to int32, ArgMax to int32, BatchMatMulV3 int8 -> int32, Select of int32s)."""
    host_in, host_out = set(), set()
    for case in GPU_CASES:
        node = kernel_node(_node_def(case))
        kd = gpu_kernel_def(node)
        ins, outs = host_flags(node, kd)
        if kd.host_memory:  # reduction_indices, dimension, axis: input 1
            ins = ins[:1] + ins[2:]
        if all(ins) and not all(outs):
            host_in.add(case["op"])
        if not all(ins) and any(outs):
            host_out.add(case["op"])
    assert {"Equal", "Less", "Cast", "ArgMax"} <= host_in, host_in
    assert {"Cast", "ArgMax", "BatchMatMulV3", "Select", "SelectV2"} <= host_out, host_out


def test_host_scalars_reach_the_device_without_a_copy(gpu):
    """A host-memory scalar that a device output needs (Cast of an int32 count to float32, as
    gradients of Mean have) goes to the device as a fill kernel's argument, not as a copy;
    a larger host array is copied once."""
    node = _make_node("Cast", SrcT=np.int32, DstT=np.float32)
    sim = getattr(gpu, "is_simulated", False)
    if sim:
        gpu.stats.reset()
    (got,) = run_kernel_gpu(node, [np.array(12, np.int32)], gpu)
    assert got.shape == () and got.dtype == np.float32 and got == 12.0
    if sim:
        assert gpu.stats["implicit_puts"] == 0
    (got,) = run_kernel_gpu(_make_node("Less", T=np.int32),
                            [np.arange(4, dtype=np.int32), np.array(2, np.int32)], gpu)
    assert got.tolist() == [True, True, False, False]
    if sim:
        assert gpu.stats["implicit_puts"] == 1


# --- NodeDefs made here -----------------------------------------------------------------------

def _make_node(op, **attrs):
    nd = node_def_pb2.NodeDef(name="op", op=op)
    for k, v in attrs.items():
        av = attr_value_pb2.AttrValue()
        if isinstance(v, bool):
            av.b = v
        elif isinstance(v, int):
            av.i = v
        elif isinstance(v, float):
            av.f = v
        else:
            av.type = dtypes.as_dtype(np.dtype(v)).as_datatype_enum
        nd.attr[k].CopyFrom(av)
    return nd


def _cpu_and_gpu(nd, inputs, gpu):
    with np.errstate(all="ignore"):
        want = run_kernel(nd, [x.copy() for x in inputs])
        got = run_kernel_gpu(nd, inputs, gpu)
    return got, want


def _agree(got, want, rtol=None, name=""):
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, w.shape, g.dtype)
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            tol = rtol if rtol is not None else {"float16": 1e-3, "float32": 1e-5,
                                                  "float64": 1e-12}[w.dtype.name]
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=tol,
                                       atol=tol, equal_nan=True, err_msg=name)
            np.testing.assert_array_equal(np.isinf(g), np.isinf(w), err_msg=name)


# --- the numba kernels and the array path, against numpy references ---------------------------

def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


_NUMBA_REF = {
    "Sigmoid": (1, lambda x: _sig(x)),
    "Softplus": (1, lambda x: np.logaddexp(0.0, x)),
    "SigmoidGrad": (2, lambda y, dy: dy * y * (1 - y)),
    "TanhGrad": (2, lambda y, dy: dy * (1 - y * y)),
    "SoftplusGrad": (2, lambda g, f: g * _sig(f)),
}


@pytest.mark.parametrize("path", ["numba", "array"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(_NUMBA_REF))
def test_fused_ops_both_paths_numpy_reference(op, dt, path, gpu, monkeypatch, launches):
    if path == "array":
        monkeypatch.setenv("MGRT_SIM_KERNEL_LIMIT", "0")
    n_in, ref = _NUMBA_REF[op]
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-6, 6, 33), [0.0, -0.0, 20.0, -20.0, 40.0, -40.0, np.nan,
                                                 np.inf, -np.inf]]).astype(dt)
    if n_in == 2:
        y = np.tanh(x) if op != "SoftplusGrad" else x
        ins = [y.reshape(6, 7), rng.standard_normal(42).astype(dt).reshape(6, 7)]
        if op == "SoftplusGrad":
            ins = ins[::-1]  # (gradients, features)
    else:
        ins = [x.reshape(6, 7)]
    (got,) = run_kernel_gpu(_make_node(op, T=dt), ins, gpu)
    with np.errstate(all="ignore"):
        want = ref(*[a.astype(np.float64) for a in ins]).astype(dt)
    tol = 1e-6 if dt == np.float32 else 1e-14
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True, err_msg=op)
    if getattr(gpu, "is_simulated", False):
        assert launches[0] == (1 if path == "numba" else 0)


# --- random inputs: the GPU kernels agree with the CPU kernels --------------------------------

_BROADCAST_SHAPES = [((3, 1, 4), (5, 1)), ((), (2, 3)), ((2, 3), ()), ((4,), (4,)),
                     ((0, 3), (1, 3))]
_BINARY_FLOAT = ["Add", "Sub", "Mul", "Div", "RealDiv", "FloorDiv", "FloorMod", "TruncateDiv",
                 "TruncateMod", "Mod", "Maximum", "Minimum", "Pow", "SquaredDifference",
                 "DivNoNan", "MulNoNan", "Xdivy", "Xlogy", "Xlog1py", "Atan2", "Less", "Equal",
                 "GreaterEqual", "NotEqual"]
_BINARY_INT = ["Add", "Sub", "Mul", "Div", "FloorDiv", "FloorMod", "TruncateDiv", "TruncateMod",
               "Maximum", "Minimum", "Pow", "SquaredDifference", "BitwiseAnd", "BitwiseXor",
               "LeftShift", "RightShift", "Greater", "Equal"]


def _rand(rng, shape, dt):
    dt = np.dtype(dt)
    if dt.kind == "f":
        x = rng.uniform(-4, 4, shape)
        if x.size > 2:
            x.flat[0], x.flat[1] = 0.0, np.nan
        return x.astype(dt)
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    info = np.iinfo(dt)
    lo, hi = max(info.min, -9), min(info.max, 9)
    return rng.integers(lo, hi, shape, endpoint=True).astype(dt)


@pytest.mark.parametrize("dt", [np.float16, np.float32, np.float64])
def test_binary_float_broadcasting_agrees_with_cpu(dt, gpu):
    rng = np.random.default_rng(1)
    for op, (sx, sy) in itertools.product(_BINARY_FLOAT, _BROADCAST_SHAPES):
        if op == "Mod" and dt == np.float16:
            continue  # no float16 Mod in TensorFlow
        x, y = _rand(rng, sx, dt), _rand(rng, sy, dt)
        got, want = _cpu_and_gpu(_make_node(op, T=dt), [x, y], gpu)
        _agree(got, want, name=f"{op} {np.dtype(dt).name} {sx} {sy}")


@pytest.mark.parametrize("dt", [np.int8, np.int16, np.int64, np.uint8, np.uint16, np.uint32,
                                np.uint64])
def test_binary_int_broadcasting_agrees_with_cpu(dt, gpu):
    rng = np.random.default_rng(2)
    for op, (sx, sy) in itertools.product(_BINARY_INT, _BROADCAST_SHAPES):
        x, y = _rand(rng, sx, dt), _rand(rng, sy, dt)
        if op in ("Div", "FloorDiv", "FloorMod", "TruncateDiv", "TruncateMod"):
            y = np.where(y == 0, np.ones_like(y), y)
        if op == "Pow":
            y = np.abs(y) % 4
        got, want = _cpu_and_gpu(_make_node(op, T=dt), [x, y], gpu)
        _agree(got, want, name=f"{op} {np.dtype(dt).name} {sx} {sy}")


_DIV_BY_ZERO = [(op, dt) for op in ("Div", "FloorDiv", "FloorMod", "TruncateDiv", "TruncateMod")
                for dt in (np.int8, np.uint16, np.int64, np.uint64)] + [("Mod", np.int64)]


@pytest.mark.parametrize("op,dt", _DIV_BY_ZERO,
                         ids=[f"{op}-{np.dtype(dt).name}" for op, dt in _DIV_BY_ZERO])
def test_integer_division_by_zero_raises_on_the_device(op, dt, gpu):
    x = np.arange(6, dtype=dt).reshape(2, 3)
    y = np.array([1, 0, 2], dtype=dt)
    cls, key = ((errors.InternalError, "only integer div and mod should have errors")
                if op.startswith("Truncate") else
                (errors.InvalidArgumentError, "Integer division by zero"))
    with pytest.raises(cls, match=key):
        run_kernel_gpu(_make_node(op, T=dt), [x, y], gpu)


def test_integer_pow_of_a_negative_exponent_raises_on_the_device(gpu):
    x = np.arange(6, dtype=np.int64)
    with pytest.raises(errors.InvalidArgumentError, match="negative integer powers"):
        run_kernel_gpu(_make_node("Pow", T=np.int64), [x, np.array(-1, np.int64)], gpu)


@pytest.mark.parametrize("dt", [np.float16, np.float32, np.float64])
def test_special_functions_agree_with_cpu_over_wide_ranges(dt, gpu):
    x = np.concatenate([np.linspace(-30, 30, 1201), np.geomspace(1e-6, 30, 100),
                        -np.geomspace(1e-6, 30, 100), [0.0, -0.0, np.inf, -np.inf, np.nan,
                                                       -1.0, -2.0, 1.0, 2.0]]).astype(dt)
    for op in ("Erf", "Erfc", "Lgamma", "Digamma", "Softplus", "Sigmoid", "Softsign", "Expm1",
               "Log1p", "Asinh", "Rsqrt", "Round", "Rint"):
        if op == "Rint" and dt == np.float16:
            continue
        got, want = _cpu_and_gpu(_make_node(op, T=dt), [x], gpu)
        rtol = {np.float16: 1e-3, np.float32: 2e-6, np.float64: 1e-13}[dt]
        _agree(got, want, rtol=rtol, name=f"{op} {np.dtype(dt).name}")


def test_erf_float64_against_libm(gpu):
    x = np.concatenate([np.linspace(-7, 7, 2801), np.geomspace(1e-300, 27, 200)])
    for op, ref in (("Erf", math.erf), ("Erfc", math.erfc)):
        (got,) = run_kernel_gpu(_make_node(op, T=np.float64), [x], gpu)
        want = np.array([ref(float(v)) for v in x])
        rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
        assert rel.max() < 5e-14, op


_REDUCTIONS = ["Sum", "Prod", "Mean", "Max", "Min", "EuclideanNorm"]


@pytest.mark.parametrize("dt", [np.float16, np.float32, np.float64, np.int8, np.int64,
                                np.uint8, np.uint64, np.bool_])
def test_reductions_over_every_axis_set_agree_with_cpu(dt, gpu):
    rng = np.random.default_rng(3)
    ops = ["All", "Any"] if dt == np.bool_ else _REDUCTIONS
    for shape in ((2, 3, 4), (2, 0, 3), ()):
        x = _rand(rng, shape, dt)
        if np.dtype(dt).kind == "f" and x.size > 2:
            x.flat[1] = 0.5  # the NaN case is recorded
        nd = len(shape)
        axis_sets = [list(a) for r in range(nd + 1)
                     for a in itertools.combinations(range(nd), r)] + ([[-1, 0]] if nd else [])
        for op, axes, keep, tidx in itertools.product(ops, axis_sets, (False, True),
                                                      (np.int32, np.int64)):
            node = _make_node(op, T=dt, Tidx=tidx, keep_dims=keep)
            got, want = _cpu_and_gpu(node, [x, np.array(axes, tidx)], gpu)
            rtol = 1e-5 if np.dtype(dt) == np.float32 else None
            _agree(got, want, rtol=rtol, name=f"{op} {shape} {axes} {keep}")


@pytest.mark.parametrize("dt", [np.float16, np.float32, np.float64, np.int8, np.uint32,
                                np.int64])
def test_scans_and_argmax_agree_with_cpu(dt, gpu):
    rng = np.random.default_rng(4)
    x = _rand(rng, (3, 4, 2), dt)
    for op, axis, excl, rev in itertools.product(("Cumsum", "Cumprod"), (0, 1, -1),
                                                 (False, True), (False, True)):
        node = _make_node(op, T=dt, Tidx=np.int32, exclusive=excl, reverse=rev)
        got, want = _cpu_and_gpu(node, [x, np.array(axis, np.int32)], gpu)
        _agree(got, want, rtol=1e-5 if np.dtype(dt) == np.float32 else None, name=op)
    for op, axis, out in itertools.product(("ArgMax", "ArgMin"), (0, 1, -1),
                                           (np.int32, np.int64)):
        node = _make_node(op, T=dt, Tidx=np.int32, output_type=out)
        got, want = _cpu_and_gpu(node, [x, np.array(axis, np.int32)], gpu)
        _agree(got, want, name=op)


def test_cast_with_truncate_agrees_with_cpu(gpu):
    rng = np.random.default_rng(5)
    x64 = np.concatenate([rng.standard_normal(50) * 1e3, [np.nan, np.inf, 1 / 3]])
    for src, dst in ((np.float64, np.float32), (np.float64, np.float16),
                     (np.float32, np.float16)):
        x = x64.astype(src)
        for trunc in (False, True):
            node = _make_node("Cast", SrcT=src, DstT=dst, Truncate=trunc)
            got, want = _cpu_and_gpu(node, [x], gpu)
            np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("n", [1, 3, 5])
def test_add_n_of_several_inputs_numpy_reference(n, gpu):
    rng = np.random.default_rng(n)
    for shape in ((), (2, 3)):
        xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]
        nd = _make_node("AddN", N=n, T=np.float32)
        (got,) = run_kernel_gpu(nd, xs, gpu)
        want = xs[0].copy()
        for x in xs[1:]:
            want = want + x
        assert got.shape == shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_matmul_float16_and_transposes_numpy_reference(gpu):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((5, 3)).astype(np.float16)
    b = rng.standard_normal((4, 3)).astype(np.float16)
    (got,) = run_kernel_gpu(_make_node("MatMul", T=np.float16, transpose_b=True), [a, b], gpu)
    want = (a.astype(np.float32) @ b.astype(np.float32).T).astype(np.float16)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3)
    x = rng.standard_normal((2, 1, 3, 4))
    y = rng.standard_normal((5, 2, 3))
    node = _make_node("BatchMatMulV2", T=np.float64, adj_x=True, adj_y=True)
    (got,) = run_kernel_gpu(node, [x, y], gpu)
    np.testing.assert_allclose(got, np.swapaxes(x, -1, -2) @ np.swapaxes(y, -1, -2),
                               rtol=1e-12)
