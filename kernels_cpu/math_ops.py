"""Math kernels on the CPU (numpy): elementwise unary and binary ops, comparisons, logical and
bitwise ops, Cast, ClipByValue, reductions, ArgMax/ArgMin, Cumsum/Cumprod, MatMul and the
BatchMatMul family, AddN, Select/SelectV2, and the gradient ops of the unary functions.

Semantics are TensorFlow's CPU kernels' (checked against recordings of TensorFlow 2.21 in
``tests/fixtures/ops/math.*``):

- float16 and bfloat16 are computed in float32 and rounded once to the output type (as Eigen
  does for one scalar op; sums, means and products accumulate in float32). Erfc, Lgamma and
  Digamma are computed in float64 for every float type, Erf in float64 for float64 and with a
  float32 rational approximation otherwise (numpy has none of these functions).
- integer arithmetic wraps as in C (sums, products, powers, Cumsum); integer division by zero
  raises ``Integer division by zero`` (TruncateDiv/TruncateMod: TensorFlow's InternalError);
  Div and TruncateDiv of integers truncate toward zero, FloorDiv and FloorMod floor; float
  FloorMod keeps the sign of the divisor as TensorFlow's ``fmod``-based formula does.
- Maximum/Minimum and the Max/Min reductions propagate NaN; ArgMax/ArgMin never pick a NaN;
  ClipByValue ignores a NaN bound (std::min/std::max).
- errors for bad input are InvalidArgumentError with TensorFlow's message; the executor adds the
  node's name, op and input shapes.

Deliberate differences: Round of an integer tensor returns it (TensorFlow 2.21's kernel returns
zeros; ``tf.round`` never emits that node); float -> integer Cast of NaN, inf or out-of-range
values gives numpy's result (undefined behaviour in TensorFlow, whose results vary with the
types); float32 subnormals are not flushed to zero.

The kernels do not silence numpy's floating-point warnings (``inf - inf``, ``log(0)``): an
``np.errstate`` costs ~5 us a call, so the executor runs a whole plan under one
``np.errstate(all="ignore")`` (TensorFlow never warns).
"""
import math

import ml_dtypes
import numpy as np

from mgrt.runtime import dtypes
from mgrt.runtime.errors import InternalError, InvalidArgumentError
from mgrt.runtime.kernel_registry import register
from mgrt.kernels_cpu import _team
from mgrt.kernels_cpu._dtypes import (BF16 as _BF16, F16 as _F16, F32 as _F32,  # noqa: F401
                                      F64 as _F64, FLOAT_T as _FLOAT_T, HALF_T as _HALF_T,
                                      INDEX_T as _INDEX_T, INT_T as _INT_T, LOW as _LOW,
                                      REAL_T as _REAL_T)
from mgrt.kernels_cpu._dtypes import (COMPLEX_T as _COMPLEX_T, NUM_T as _NUM_T,  # noqa: F401
                                      SINT_T as _SINT_T, UINT_T as _UINT_T)

# --- dtypes -----------------------------------------------------------------------------------

_FC_T = _FLOAT_T + _COMPLEX_T
_CAST_T = _NUM_T + [dtypes.bool]


def _np_dtype(dt):
    return np.dtype(dt.base_dtype.as_numpy_dtype)


def _out(node, i=0):
    return _np_dtype(node.output_types[i])


def _err(msg):
    return InvalidArgumentError(None, None, msg)


def _shape_str(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _check_same_shapes(node, xs):
    """TensorFlow's ValidateInputsAreSameShape: every input has input 0's shape."""
    s0 = xs[0].shape
    for i in range(1, len(xs)):
        if xs[i].shape != s0:
            raise _err(f"Inputs to operation {node.name} of type {node.op} must have the same "
                       f"size and shape.  Input 0: {_shape_str(s0)} != input {i}: "
                       f"{_shape_str(xs[i].shape)}")


_ND = np.ndarray


def _wrap(r, dt):
    """``r`` as an ndarray of dtype ``dt`` (numpy returns scalars for 0-d results)."""
    if type(r) is np.ndarray and r.dtype == dt:
        return r
    return np.asarray(r, dtype=dt)


def _is_complex(dt):
    return dt.kind == "c"


def _is_int(dt):
    return dt.kind in "iu"


def _is_float(dt):
    return dt.kind == "f" or dt == _BF16


def _compute_dtype(dt):
    return _F32 if dt in _LOW else dt


# --- special functions (float64, vectorized) --------------------------------------------------
# Chebyshev interpolants computed once at import from the C library's erf/erfc (math.erf), on
# three intervals: erf(x)/x as a function of x^2 on |x| < 1; exp(x^2) erfc(x) on [1, 4]; and
# x exp(x^2) erfc(x) as a function of 1/x on [4, 26.5] (beyond, erfc underflows).


def _cheb_fit(f, a, b, deg):
    k = np.arange(deg + 1)
    t = np.cos(np.pi * (k + 0.5) / (deg + 1))
    xs = (t + 1.0) * (b - a) / 2.0 + a
    return np.polynomial.chebyshev.chebfit(t, [f(float(v)) for v in xs], deg)


def _clenshaw(c, t):
    t2 = t + t
    b1 = np.full_like(t, c[-1])
    b2 = np.zeros_like(t)
    for ck in c[-2:0:-1]:
        b1, b2 = t2 * b1 - b2 + ck, b1
    return t * b1 - b2 + c[0]


def _erfcx_ref(x):  # exp(x^2) * erfc(x), with x^2 split so exp's argument is exact
    xh = round(x * 4096.0) / 4096.0
    return math.erfc(x) * math.exp(xh * xh) * math.exp((x - xh) * (x + xh))


_ERF_A = _cheb_fit(lambda s: math.erf(math.sqrt(s)) / math.sqrt(s) if s > 0
                   else 2 / math.sqrt(math.pi),
                   0.0, 1.0, 12)
_ERFC_B = _cheb_fit(_erfcx_ref, 1.0, 4.0, 22)
_U_LO, _U_HI = 1.0 / 26.5, 0.25
_ERFC_C = _cheb_fit(lambda u: _erfcx_ref(1.0 / u) / u, _U_LO, _U_HI, 16)


def _expmx2(a):
    """exp(-a*a) without the rounding error of a*a (a <= 30)."""
    ah = np.round(a * 4096.0) / 4096.0
    return np.exp(-ah * ah) * np.exp(-(a - ah) * (a + ah))


def _erf_small(x):  # |x| < 1
    return x * _clenshaw(_ERF_A, 2.0 * x * x - 1.0)


def _erfc_big(a):
    """erfc(a) for a >= 1 (or NaN)."""
    a = np.minimum(a, 30.0)  # erfc(30) == 0 in float64; keeps a*a finite; NaN stays NaN
    r = np.empty_like(a)
    mb = a < 4.0
    if mb.all():
        return _clenshaw(_ERFC_B, (2.0 * a - 5.0) / 3.0) * _expmx2(a)
    ab = a[mb]
    r[mb] = _clenshaw(_ERFC_B, (2.0 * ab - 5.0) / 3.0) * _expmx2(ab)
    mc = ~mb
    ac = a[mc]
    r[mc] = (_clenshaw(_ERFC_C, (2.0 / ac - (_U_LO + _U_HI)) / (_U_HI - _U_LO))
             * _expmx2(ac) / ac)
    return r


def _erf(x):
    x = np.asarray(x, _F64)
    a = np.abs(x)
    small = a < 1.0
    if small.all():
        return _erf_small(x)
    out = np.empty_like(x)
    out[small] = _erf_small(x[small])
    big = ~small
    out[big] = np.copysign(1.0 - _erfc_big(a[big]), x[big])
    return out


def _erfc(x):
    x = np.asarray(x, _F64)
    a = np.abs(x)
    small = a < 1.0
    if small.all():
        return 1.0 - _erf_small(x)
    out = np.empty_like(x)
    out[small] = 1.0 - _erf_small(x[small])
    big = ~small
    xb = x[big]
    e = _erfc_big(np.abs(xb))
    out[big] = np.where(xb < 0, 2.0 - e, e)
    return out


# erf in float32 (also for half and bfloat16): x * P(x^2) / Q(x^2) on |x| <= 4 (beyond, erf
# rounds to +-1 in float32). A rational least-squares fit of erf(x)/x in x^2 made for mgrt:
# relative error 6.5e-8 in exact arithmetic, a few ulp evaluated in float32 (the test checks it
# against math.erf). Four times faster than the float64 path, for GELU-heavy graphs.
_ERF32_P = np.array([1.1283790939629244, 0.2071263237954033, 0.05152502212075575,
                     0.003990615820516317, 0.0001472874281469652, -1.942315201669151e-06,
                     1.9110854450020298e-08], _F32)
_ERF32_Q = np.array([1.0, 0.5168921728963369, 0.1179711881283619, 0.014958159197457412,
                     0.0010211228782530798], _F32)


def _erf32(x):
    a = np.clip(x, -4.0, 4.0).astype(_F32, copy=False)  # NaN stays NaN
    s = a * a
    p = np.full_like(s, _ERF32_P[-1])
    for c in _ERF32_P[-2::-1]:
        p *= s
        p += c
    q = np.full_like(s, _ERF32_Q[-1])
    for c in _ERF32_Q[-2::-1]:
        q *= s
        q += c
    p *= a
    p /= q
    return p


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _lgamma_pos(x):
    """log(gamma(x)) for x > 0: shift to z >= 10, then Stirling's series."""
    z = x.copy()
    p = np.ones_like(x)
    for _ in range(10):
        m = z < 10.0
        if not m.any():
            break
        p = np.where(m, p * z, p)
        z = np.where(m, z + 1.0, z)
    s = 1.0 / z
    s2 = s * s
    series = s * (1.0 / 12 + s2 * (-1.0 / 360 + s2 * (1.0 / 1260 + s2 * (
        -1.0 / 1680 + s2 * (1.0 / 1188 + s2 * (-691.0 / 360360 + s2 / 156.0))))))
    return (z - 0.5) * np.log(z) - z + _HALF_LOG_2PI + series - np.log(p)


def _lgamma(x):
    """log|gamma(x)|; reflection for x <= 0 (inf at the poles); lgamma(+-inf) = inf."""
    x = np.asarray(x, _F64)
    bad = ~np.isfinite(x)
    xs = np.where(bad, 1.0, x) if bad.any() else x
    neg = xs <= 0.0
    if not neg.any():
        r = _lgamma_pos(xs)
    else:
        r = np.empty_like(xs)
        pos = ~neg
        r[pos] = _lgamma_pos(xs[pos])
        xn = xs[neg]
        s = np.abs(np.sin(np.pi * (xn - np.round(xn))))
        r[neg] = np.log(np.pi / s) - _lgamma_pos(1.0 - xn)
    if bad.any():
        r = np.where(bad, np.abs(x), r)
    return np.where((x == 1.0) | (x == 2.0), 0.0, r)  # exact zeros, as the C library's


def _digamma_pos(x):
    """digamma(x) for x > 0: shift to z >= 10, then the asymptotic series."""
    z = x.copy()
    acc = np.zeros_like(x)
    for _ in range(10):
        m = z < 10.0
        if not m.any():
            break
        acc = np.where(m, acc - 1.0 / z, acc)
        z = np.where(m, z + 1.0, z)
    s2 = 1.0 / (z * z)
    series = s2 * (1.0 / 12 - s2 * (1.0 / 120 - s2 * (1.0 / 252 - s2 * (1.0 / 240 - s2 * (
        1.0 / 132 - s2 * (691.0 / 32760 - s2 / 12.0))))))
    return np.log(z) - 0.5 / z - series + acc


def _digamma(x):
    """digamma(x); reflection for x < 0; NaN at the poles (non-positive integers) and at -inf,
    as TensorFlow's."""
    x = np.asarray(x, _F64)
    bad = ~np.isfinite(x)
    xs = np.where(bad, 1.0, x) if bad.any() else x
    neg = xs <= 0.0
    if not neg.any():
        r = _digamma_pos(xs)
    else:
        r = np.empty_like(xs)
        pos = ~neg
        r[pos] = _digamma_pos(xs[pos])
        xn = xs[neg]
        fr = xn - np.round(xn)
        refl = _digamma_pos(1.0 - xn) - np.pi / np.tan(np.pi * fr)
        r[neg] = np.where(fr != 0.0, refl, np.nan)
    if bad.any():
        r = np.where(bad, np.where(x == np.inf, np.inf, np.nan), r)
    return r


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e).astype(x.dtype, copy=False) / (1 + e)


def _sigmoid_complex(x):
    return 1 / (1 + np.exp(-x))


# --- unary ops --------------------------------------------------------------------------------
def _unary_kernel(op_types, fn, types, *, complex_fn=None, int_fn=None, compute64=False):
    """Register an elementwise op. ``fn`` works on floats (float32/float64 arrays: half and
    bfloat16 arrive as float32, or float64 with ``compute64``); ``complex_fn`` on complex and
    ``int_fn`` on integers, where those differ from ``fn``."""

    def builder(node, ctx):
        dt = _out(node)
        if _is_complex(dt):
            f = complex_fn or fn
        elif _is_int(dt) or dt == np.bool_:
            f = int_fn or fn
        else:
            f = fn
        if compute64 and _is_float(dt) and dt != _F64:
            def run(x):
                r = f(x.astype(_F64))
                return (np.asarray(r).astype(dt),)
        elif dt in _LOW:
            def run(x):
                r = f(x.astype(_F32))
                return (np.asarray(r).astype(dt),)
        else:
            def run(x):
                r = f(x)
                if type(r) is not _ND or r.dtype is not dt:  # _wrap, inlined: the common case
                    r = _wrap(r, dt)                          # costs two identity checks
                return (r,)
        return run

    register(op_types, "CPU", type_constraints={"T": types})(builder)


def _copy(x):
    return x.copy()


def _rsqrt(x):
    return 1 / np.sqrt(x)


def _softsign(x):
    return x / (1 + np.abs(x))


_unary_kernel("Abs", np.abs, _FLOAT_T + _SINT_T)
_unary_kernel("Neg", np.negative, _FLOAT_T + _SINT_T + _COMPLEX_T)
_unary_kernel("Sign", np.sign, _FLOAT_T + _SINT_T + _COMPLEX_T)
_unary_kernel("Square", np.square, _NUM_T)
_unary_kernel("Sqrt", np.sqrt, _FC_T)
_unary_kernel("Rsqrt", _rsqrt, _FC_T)
_unary_kernel("Exp", np.exp, _FC_T)
_unary_kernel("Expm1", np.expm1, _FC_T)
_unary_kernel("Log", np.log, _FC_T)
_unary_kernel("Log1p", np.log1p, _FC_T)
_unary_kernel("Sin", np.sin, _FC_T)
_unary_kernel("Cos", np.cos, _FC_T)
_unary_kernel("Tan", np.tan, _FC_T)
_unary_kernel("Asin", np.arcsin, _FC_T)
_unary_kernel("Acos", np.arccos, _FC_T)
_unary_kernel("Atan", np.arctan, _FC_T)
_unary_kernel("Sinh", np.sinh, _FC_T)
_unary_kernel("Cosh", np.cosh, _FC_T)
_unary_kernel("Tanh", np.tanh, _FC_T)
_unary_kernel("Asinh", np.arcsinh, _FC_T)
_unary_kernel("Acosh", np.arccosh, _FC_T)
_unary_kernel("Atanh", np.arctanh, _FC_T)
_unary_kernel("Sigmoid", _sigmoid, _FC_T, complex_fn=_sigmoid_complex)
_unary_kernel("Floor", np.floor, _FLOAT_T)
_unary_kernel("Ceil", np.ceil, _FLOAT_T)
_unary_kernel("Round", np.round, _FLOAT_T + [dtypes.int32, dtypes.int64], int_fn=_copy)
_unary_kernel("Rint", np.rint, _FLOAT_T)
_unary_kernel(["Reciprocal", "Inv"], np.reciprocal, _FC_T)
_unary_kernel("Erfc", _erfc, _FLOAT_T, compute64=True)
_unary_kernel("Lgamma", _lgamma, _FLOAT_T, compute64=True)
_unary_kernel("Digamma", _digamma, _FLOAT_T, compute64=True)
_unary_kernel("Softsign", _softsign, _FLOAT_T)
_unary_kernel("Invert", np.invert, _INT_T)


@register("Erf", "CPU", type_constraints={"T": _FLOAT_T})
def _erf_kernel(node, ctx):
    dt = _out(node)
    if dt == _F64:
        def run(x):
            r = _erf(x)
            # TensorFlow's float64 Erf gives NaN at +-inf (its float32 Erf gives +-1)
            r[np.isinf(x)] = np.nan
            return (_wrap(r, dt),)
    else:
        def run(x):
            return (_wrap(_erf32(x.astype(_F32)).astype(dt, copy=False), dt),)
    return run


@register("Softplus", "CPU", type_constraints={"T": _FLOAT_T})
def _softplus(node, ctx):
    dt = _out(node)
    eps = float(ml_dtypes.finfo(dt).eps) if dt == _BF16 else float(np.finfo(dt).eps)
    thr = math.log(eps) + 2.0  # TensorFlow's thresholds: softplus(x) = x or exp(x) beyond
    cdt = _compute_dtype(dt)

    def run(x):
        xc = x.astype(cdt, copy=False)
        e = np.exp(xc)
        r = np.where(xc > -thr, xc, np.where(xc < thr, e, np.log1p(e)))
        return (_wrap(r, dt) if cdt == dt else r.astype(dt),)

    return run


@register(["IsNan", "IsInf", "IsFinite"], "CPU", type_constraints={"T": _FLOAT_T})
def _isnan(node, ctx):
    f = {"IsNan": np.isnan, "IsInf": np.isinf, "IsFinite": np.isfinite}[node.op]
    low = _np_dtype(node.input_types[0]) in _LOW

    def run(x):
        if low:
            x = x.astype(_F32)
        return (_wrap(f(x), np.bool_),)

    return run


@register("LogicalNot", "CPU")
def _logical_not(node, ctx):
    def run(x):
        return (_wrap(np.logical_not(x), np.bool_),)

    return run


@register(["Real", "Imag", "ComplexAbs"], "CPU", type_constraints={"T": _COMPLEX_T})
def _real(node, ctx):
    f = {"Real": np.real, "Imag": np.imag, "ComplexAbs": np.abs}[node.op]
    dt = _out(node)

    def run(x):
        return (np.asarray(f(x)).astype(dt),)

    return run


@register("Conj", "CPU", type_constraints={"T": _COMPLEX_T})
def _conj(node, ctx):
    dt = _out(node)

    def run(x):
        return (_wrap(np.conj(x), dt),)

    return run


# --- binary ops -------------------------------------------------------------------------------
def _incompatible(x, y):
    return _err(f"Incompatible shapes: {_shape_str(np.shape(x))} vs. {_shape_str(np.shape(y))}")


def _binary_kernel(op_types, fn, types, *, complex_fn=None, int_fn=None, low_native=False):
    """Register a broadcasting binary op. ``fn(x, y)`` works on float32/float64 (half and
    bfloat16 arrive as float32 unless ``low_native``), ``int_fn`` on integers (and bool),
    ``complex_fn`` on complex, where those differ."""

    def builder(node, ctx):
        dt = _out(node)
        it = _np_dtype(node.input_types[0])
        if _is_complex(it):
            f = complex_fn or fn
        elif _is_int(it) or it == np.bool_ or it == object:
            f = int_fn or fn
        else:
            f = fn
        if it in _LOW and not low_native:
            def run(x, y):
                try:
                    r = f(x.astype(_F32), y.astype(_F32))
                except ValueError:
                    raise _incompatible(x, y) from None
                return (np.asarray(r).astype(dt),)
        else:
            def run(x, y):
                try:
                    r = f(x, y)
                except ValueError:
                    raise _incompatible(x, y) from None
                if type(r) is not _ND or r.dtype is not dt:  # _wrap, inlined
                    r = _wrap(r, dt)
                return (r,)
        return run

    register(op_types, "CPU", type_constraints={"T": types})(builder)


def _check_int_divisor(y):
    if not y.all():
        raise _err("Integer division by zero")


def _check_int_divisor_internal(y):
    # TruncateDiv / TruncateMod report a division by zero as an internal error
    if not y.all():
        raise InternalError(None, None, "Unexpected error in binary operator (only integer div "
                            "and mod should have errors)")


def _int_trunc_div(x, y, check=_check_int_divisor):
    check(y)
    if x.dtype.kind == "u":
        return np.floor_divide(x, y)
    q, r = np.divmod(x, y)
    return q + ((r != 0) & ((x < 0) != (y < 0)))


def _int_floor_div(x, y):
    _check_int_divisor(y)
    return np.floor_divide(x, y)


def _int_floor_mod(x, y):
    _check_int_divisor(y)
    return np.remainder(x, y)


def _int_trunc_mod(x, y, check=_check_int_divisor):
    check(y)
    return np.fmod(x, y)


def _float_floor_mod(x, y):
    t = np.fmod(x, y)
    return np.where((t != 0) & ((y < 0) != (t < 0)), t + y, t)


def _int_pow(x, y):
    if (np.asarray(y) < 0).any():
        raise _err("Integers to negative integer powers are not allowed")
    return np.power(x, y)


def _squared_difference(x, y):
    d = x - y
    return d * d


def _squared_difference_c(x, y):
    d = x - y
    return d * np.conj(d)


def _div_no_nan(x, y):
    return np.where(y == 0, 0, x / y).astype(np.result_type(x, y), copy=False)


def _mul_no_nan(x, y):
    return np.where(y == 0, 0, x * y).astype(np.result_type(x, y), copy=False)


def _xdivy(x, y):
    return np.where(x == 0, x, x / y)  # x == 0 gives x (its sign of zero kept)


def _xlogy(x, y):
    return np.where(x == 0, x, x * np.log(y))  # x == 0 gives x (its sign of zero kept)


def _xlog1py(x, y):
    return np.where(x == 0, x, x * np.log1p(y))  # x == 0 gives x (its sign of zero kept)


_ADD_T = _NUM_T + [dtypes.string]
_binary_kernel(["Add", "AddV2"], np.add, _ADD_T, low_native=True)
_binary_kernel("Sub", np.subtract, _NUM_T, low_native=True)
_binary_kernel("Mul", np.multiply, _NUM_T, low_native=True)
_binary_kernel("Div", np.true_divide, _NUM_T, int_fn=_int_trunc_div)
_binary_kernel("RealDiv", np.true_divide, _FC_T)
_binary_kernel("FloorDiv", None, _INT_T, int_fn=_int_floor_div)  # floats: below
_binary_kernel("FloorMod", _float_floor_mod, _REAL_T, int_fn=_int_floor_mod)
_binary_kernel("TruncateDiv", None, _INT_T,
               int_fn=lambda x, y: _int_trunc_div(x, y, _check_int_divisor_internal))  # + below
_binary_kernel("TruncateMod", np.fmod, _REAL_T,
               int_fn=lambda x, y: _int_trunc_mod(x, y, _check_int_divisor_internal))
_binary_kernel("Mod", np.fmod, _REAL_T, int_fn=_int_trunc_mod)
_MAXMIN_T = [t for t in _REAL_T if t != dtypes.bfloat16]
_binary_kernel("Maximum", np.maximum, _MAXMIN_T, low_native=True)
_binary_kernel("Minimum", np.minimum, _MAXMIN_T, low_native=True)


def _max_first(x, y):  # NaN propagates; of two equal values (0 and -0), the first
    return np.where((x >= y) | np.isnan(x), x, y)


def _min_first(x, y):
    return np.where((x <= y) | np.isnan(x), x, y)


# bfloat16: TensorFlow keeps the first of two equal values (ml_dtypes' ufuncs the second)
_binary_kernel("Maximum", _max_first, [dtypes.bfloat16], low_native=True)
_binary_kernel("Minimum", _min_first, [dtypes.bfloat16], low_native=True)
_binary_kernel("Pow", np.power, _NUM_T, int_fn=_int_pow)
_binary_kernel("SquaredDifference", _squared_difference, _NUM_T,
               complex_fn=_squared_difference_c)
_binary_kernel("DivNoNan", _div_no_nan, _FC_T)
_binary_kernel("MulNoNan", _mul_no_nan, _FC_T)
_binary_kernel("Xdivy", _xdivy, _FC_T)
_binary_kernel("Xlogy", _xlogy, _FC_T)
_binary_kernel("Xlog1py", _xlog1py, _FC_T)
_binary_kernel("Atan2", np.arctan2, _FLOAT_T)
_binary_kernel("LogicalAnd", np.logical_and, [dtypes.bool])
_binary_kernel("LogicalOr", np.logical_or, [dtypes.bool])
_binary_kernel("BitwiseAnd", np.bitwise_and, _INT_T)
_binary_kernel("BitwiseOr", np.bitwise_or, _INT_T)
_binary_kernel("BitwiseXor", np.bitwise_xor, _INT_T)
_binary_kernel(["Less"], np.less, _REAL_T, low_native=True)
_binary_kernel(["LessEqual"], np.less_equal, _REAL_T, low_native=True)
_binary_kernel(["Greater"], np.greater, _REAL_T, low_native=True)
_binary_kernel(["GreaterEqual"], np.greater_equal, _REAL_T, low_native=True)


@register(["FloorDiv", "TruncateDiv"], "CPU", type_constraints={"T": _FLOAT_T})
def _float_div_round(node, ctx):
    """Float FloorDiv / TruncateDiv: floor (trunc) of the quotient rounded to the type, as
    TensorFlow computes ``floor(x / y)`` in the type itself."""
    dt = _out(node)
    cdt = _compute_dtype(dt)
    rnd = np.floor if node.op == "FloorDiv" else np.trunc

    def run(x, y):
        try:
            q = np.true_divide(x.astype(cdt, copy=False), y.astype(cdt, copy=False))
        except ValueError:
            raise _incompatible(x, y) from None
        q = np.asarray(q).astype(dt, copy=False)
        if dt in _LOW:
            return (rnd(q.astype(_F32)).astype(dt),)
        return (_wrap(rnd(q), dt),)

    return run


def _shift_kernel(op_type, shift):
    @register(op_type, "CPU", type_constraints={"T": _INT_T})
    def builder(node, ctx):
        dt = _out(node)
        top = dt.itemsize * 8 - 1

        def run(x, y):
            yc = np.clip(y, 0, top).astype(dt, copy=False)
            try:
                r = shift(x, yc)
            except ValueError:
                raise _incompatible(x, y) from None
            return (_wrap(r, dt),)

        return run


_shift_kernel("LeftShift", np.left_shift)
_shift_kernel("RightShift", np.right_shift)


@register(["Equal", "NotEqual"], "CPU")
def _equal(node, ctx):
    f = np.equal if node.op == "Equal" else np.not_equal
    strict = node.attr("incompatible_shape_error", True)
    fallback = node.op == "NotEqual"

    def run(x, y):
        try:
            r = f(x, y)
        except ValueError:
            if strict:
                raise _incompatible(x, y) from None
            return (np.asarray(fallback),)
        return (_wrap(r, np.bool_),)

    return run


def _check_approximate_equal(x, y):
    if x.shape != y.shape:
        raise _err(f"x and y must be of the same shape. x shape: {_shape_str(x.shape)}. "
                   f"y shape: {_shape_str(y.shape)}")


@register("ApproximateEqual", "CPU", type_constraints={"T": _FLOAT_T})
def _approximate_equal(node, ctx):
    dt = _np_dtype(node.input_types[0])
    cdt = _compute_dtype(dt)
    tol = np.asarray(node.attr("tolerance", 1e-5)).astype(dt).astype(cdt)

    def run(x, y):
        _check_approximate_equal(x, y)
        d = np.abs(x.astype(cdt, copy=False) - y.astype(cdt, copy=False))
        if cdt != dt:
            d = d.astype(dt).astype(cdt)
        return (_wrap(d <= tol, np.bool_),)  # TensorFlow compares with <=

    return run


# --- gradient ops of unary functions ----------------------------------------------------------
def _grad_args(node, a, b, same_shape):
    """The checks of a unary function's gradient op (SigmoidGrad, ...): ``b`` in ``a``'s
    shape (the GPU kernels' too)."""
    if a.shape != b.shape:
        if same_shape:
            _check_same_shapes(node, (a, b))
        if a.size != b.size:
            raise _err("The two arguments to a cwise op must have same number of "
                       f"elements, got {a.size} and {b.size}")
        b = b.reshape(a.shape)
    return b


def _grad_kernel(op_type, fn, types, complex_fn=None, same_shape=False):
    @register(op_type, "CPU", type_constraints={"T": types})
    def builder(node, ctx):
        dt = _out(node)
        f = complex_fn if (complex_fn is not None and _is_complex(dt)) else fn
        cdt = _compute_dtype(dt)

        def run(a, b):
            b = _grad_args(node, a, b, same_shape)
            r = f(a.astype(cdt, copy=False), b.astype(cdt, copy=False))
            return (_wrap(r, dt) if cdt == dt else np.asarray(r).astype(dt),)

        return run


# TensorFlow conjugates y for complex SqrtGrad, RsqrtGrad and ReciprocalGrad, not for SigmoidGrad
# and TanhGrad
_grad_kernel("SigmoidGrad", lambda y, dy: dy * (y * (1 - y)), _FC_T)
_grad_kernel("TanhGrad", lambda y, dy: dy * (1 - y * y), _FC_T)
_grad_kernel("SqrtGrad", lambda y, dy: (0.5 * dy) / y, _FC_T,
             lambda y, dy: (0.5 * dy) / np.conj(y))
_grad_kernel("RsqrtGrad", lambda y, dy: (-0.5 * dy) * (y * y * y), _FC_T,
             lambda y, dy: (-0.5 * dy) * np.conj(y * y * y))
_grad_kernel(["ReciprocalGrad", "InvGrad"], lambda y, dy: -dy * (y * y), _FC_T,
             lambda y, dy: -dy * np.conj(y * y))
_grad_kernel("SoftplusGrad", lambda g, f: g / (np.exp(-f) + 1), _FLOAT_T, same_shape=True)
_grad_kernel("SoftsignGrad", lambda g, f: g / np.square(1 + np.abs(f)), _FLOAT_T,
             same_shape=True)


# --- Cast -------------------------------------------------------------------------------------
_MANTISSA = {_F64: 52, _F32: 23, _F16: 10, _BF16: 7}
_COMPLEX_PART = {np.dtype(np.complex64): _F32, np.dtype(np.complex128): _F64}


def _truncate_fn(src, dst):
    """Cast(Truncate=True) as TensorFlow's LSBZeroSetter: zero the mantissa bits of the input
    that the output type lacks (NaN left alone), so that the cast truncates instead of
    rounding. None where it does not apply."""
    sr = _COMPLEX_PART.get(src, src)
    dr = _COMPLEX_PART.get(dst, dst)
    if sr not in (_F32, _F64) or dr not in _MANTISSA or _MANTISSA[dr] >= _MANTISSA[sr]:
        return None
    bits = _MANTISSA[sr] - _MANTISSA[dr]
    uint = np.dtype(np.uint32) if sr == _F32 else np.dtype(np.uint64)
    mask = uint.type(((1 << (8 * uint.itemsize)) - 1) ^ ((1 << bits) - 1))

    def zero(v):
        v = np.ascontiguousarray(v)
        return np.where(np.isnan(v), v, (v.view(uint) & mask).view(sr))

    if src.kind == "c":
        def zero_complex(x):
            r = np.empty(x.shape, src)
            r.real = zero(x.real)
            r.imag = zero(x.imag)
            return r
        return zero_complex
    return zero


def _cast_fn(src, dst, truncate):
    """A function casting an array of dtype ``src`` to ``dst`` as TensorFlow's Cast: complex to
    real keeps the real part, anything to bool is ``!= 0``, half and bfloat16 convert through
    float32 (as Eigen does, so float64 -> half rounds twice), float to integer truncates toward
    zero."""
    if src == dst:
        return lambda x: x.copy()
    if dst == np.bool_:
        if src.kind == "c":
            return lambda x: x.real != 0  # TensorFlow: the real part only
        return lambda x: x != 0
    pre = _truncate_fn(src, dst) if truncate else None
    to_real = src.kind == "c" and dst.kind != "c"
    src_low = src in _LOW
    dst_low = dst in _LOW

    def f(x):
        if pre is not None:
            x = pre(x)
        if to_real:
            x = x.real
        if src_low or (dst_low and x.dtype != _F32):
            x = x.astype(_F32)
        return x.astype(dst)

    return f


@register("Cast", "CPU", type_constraints={"SrcT": _CAST_T, "DstT": _CAST_T})
def _cast(node, ctx):
    src = _np_dtype(node.attr("SrcT"))
    dst = _np_dtype(node.attr("DstT"))
    f = _cast_fn(src, dst, bool(node.attr("Truncate", False)))

    def run(x):
        r = f(x)
        return (_wrap(r, dst),)

    return run


# --- ClipByValue ------------------------------------------------------------------------------
def _clip_std(t, lo, hi):
    """max(min(t, hi), lo) with std::min / std::max: a NaN in t stays, a NaN bound is ignored."""
    r = np.where(hi < t, hi, t)
    return np.where(r < lo, lo, r)


def _check_clip(t, lo, hi):
    if (lo.shape != t.shape and lo.ndim != 0) or (hi.shape != t.shape and hi.ndim != 0):
        raise _err("clip_value_min and clip_value_max must be either of the same shape as "
                   f"input, or a scalar. input shape: {_shape_str(t.shape)}"
                   f"clip_value_min shape: {_shape_str(lo.shape)}"
                   f"clip_value_max shape: {_shape_str(hi.shape)}")


@register("ClipByValue", "CPU", type_constraints={"T": _REAL_T + _COMPLEX_T})
def _clip_by_value(node, ctx):
    """ClipByValue; complex values are clipped part by part, as TensorFlow's CPU kernel does."""
    dt = _out(node)
    cplx = _is_complex(dt)

    def run(t, lo, hi):
        _check_clip(t, lo, hi)
        if cplx:
            r = np.empty(np.broadcast_shapes(t.shape, lo.shape, hi.shape), dt)
            r.real = _clip_std(t.real, lo.real, hi.real)
            r.imag = _clip_std(t.imag, lo.imag, hi.imag)
            return (r,)
        return (_wrap(_clip_std(t, lo, hi), dt),)

    return run


# --- reductions -------------------------------------------------------------------------------
def _reduction_axes(axes, ndim):
    """The (host-memory) reduction axes, checked and wrapped: a sorted tuple."""
    out = set()
    for i in np.asarray(axes).reshape(-1).tolist():
        j = i + ndim if i < 0 else i
        if not 0 <= j < ndim:
            raise _err(f"Invalid reduction dimension ({i} for input with {ndim} dimension(s)")
        if j in out:
            raise _err(f"Invalid reduction arguments: Axes contains duplicate dimension: {j}")
        out.add(j)
    return tuple(sorted(out))


def _reduction_kernel(op_type, types, make):
    """``make(dt) -> f(x, axes_tuple, keepdims)``."""

    @register(op_type, "CPU", host_memory=("reduction_indices",), type_constraints={"T": types})
    def builder(node, ctx):
        dt = _out(node)
        keep = bool(node.attr("keep_dims", False))
        f = make(dt)
        cache = {}

        def run(x, axes):
            key = (x.ndim, axes.tobytes(), axes.shape)
            ax = cache.get(key)
            if ax is None:
                ax = _reduction_axes(axes, x.ndim)
                if len(cache) < 64:
                    cache[key] = ax
            r = f(x, ax, keep)
            return (_wrap(r, dt),)

        return run


def _sum_make(dt):
    if dt in _LOW:
        return lambda x, ax, keep: np.sum(x, axis=ax, dtype=_F32, keepdims=keep).astype(dt)
    return lambda x, ax, keep: np.sum(x, axis=ax, dtype=dt, keepdims=keep)


def _prod_make(dt):
    if dt in _LOW:
        return lambda x, ax, keep: np.prod(x, axis=ax, dtype=_F32, keepdims=keep).astype(dt)
    return lambda x, ax, keep: np.prod(x, axis=ax, dtype=dt, keepdims=keep)


def _count(x, ax):
    n = 1
    for a in ax:
        n *= x.shape[a]
    return n


def _mean_make(dt):
    if _is_int(dt):
        # TensorFlow sums integers in int64 (uint64 for unsigned types), divides by the count
        # truncating, and casts back
        acc = np.dtype(np.uint64) if dt.kind == "u" else np.dtype(np.int64)

        def f(x, ax, keep):
            s = np.sum(x, axis=ax, dtype=acc, keepdims=keep)
            n = _count(x, ax)
            if n == 0:  # TensorFlow divides by zero here
                return np.zeros(s.shape, dt)
            if acc.kind == "u":
                return (s // acc.type(n)).astype(dt)
            q, r = np.divmod(s, acc.type(n))
            return (q + ((r != 0) & (s < 0))).astype(dt)
        return f
    cdt = _compute_dtype(dt)

    def f(x, ax, keep):
        s = np.sum(x, axis=ax, dtype=cdt, keepdims=keep)
        return (s / cdt.type(_count(x, ax))).astype(dt, copy=False)
    return f


def _extreme_make(ufunc, lowest):
    def make(dt):
        if _is_int(dt):
            init = np.iinfo(dt).min if lowest else np.iinfo(dt).max
        else:
            init = -np.inf if lowest else np.inf
        if dt in _LOW:
            return lambda x, ax, keep: ufunc.reduce(x.astype(_F32), axis=ax, keepdims=keep,
                                                    initial=init).astype(dt)
        init = dt.type(init)
        return lambda x, ax, keep: ufunc.reduce(x, axis=ax, keepdims=keep, initial=init)
    return make


def _euclidean_make(dt):
    if _is_complex(dt):
        return lambda x, ax, keep: np.sqrt(np.sum(x * np.conj(x), axis=ax, keepdims=keep))
    if _is_int(dt):
        def f(x, ax, keep):
            s = np.sum(x * x, axis=ax, dtype=dt, keepdims=keep)
            return np.sqrt(s.astype(_F64)).astype(dt)
        return f
    cdt = _compute_dtype(dt)

    def f(x, ax, keep):
        xc = x.astype(cdt, copy=False)
        return np.sqrt(np.sum(xc * xc, axis=ax, keepdims=keep)).astype(dt, copy=False)
    return f


_reduction_kernel("Sum", _NUM_T, _sum_make)
_reduction_kernel("Prod", _NUM_T, _prod_make)
_reduction_kernel("Mean", _NUM_T, _mean_make)
_reduction_kernel("Max", _REAL_T, _extreme_make(np.maximum, True))
_reduction_kernel("Min", _REAL_T, _extreme_make(np.minimum, False))
_reduction_kernel("EuclideanNorm", _NUM_T, _euclidean_make)
_reduction_kernel("All", [dtypes.bool],
                  lambda dt: lambda x, ax, keep: np.all(x, axis=ax, keepdims=keep))
_reduction_kernel("Any", [dtypes.bool],
                  lambda dt: lambda x, ax, keep: np.any(x, axis=ax, keepdims=keep))


# --- ArgMax / ArgMin --------------------------------------------------------------------------
def _arg_axis(x, dim):
    """ArgMax/ArgMin's check of the (host-memory) dimension: the axis in [0, x.ndim)."""
    if dim.ndim != 0:
        raise _err("dim must be a scalar, but received tensor of shape: "
                   f"{_shape_str(dim.shape)}")
    d = int(dim)
    n = x.ndim
    axis = d + n if d < 0 else d
    if not 0 <= axis < n:
        raise _err(f"Expected dimension in the range [{-n}, {n}), but got {d}")
    if x.shape[axis] == 0:
        raise _err(f"Reduction axis {d} is empty in shape {_shape_str(x.shape)}")
    return axis


@register(["ArgMax", "ArgMin"], "CPU", host_memory=("dimension",),
          type_constraints={"T": _REAL_T + [dtypes.bool]})
def _argmax(node, ctx):
    dt = _out(node)
    it = _np_dtype(node.input_types[0])
    low = it in _LOW
    flt = _is_float(it)
    is_max = node.op == "ArgMax"
    f = np.argmax if is_max else np.argmin

    def run(x, dim):
        axis = _arg_axis(x, dim)
        if low:
            x = x.astype(_F32)
        if flt:
            nan = np.isnan(x)
            if nan.any():  # NaN never wins (TensorFlow compares with < and >)
                x = np.where(nan, -np.inf if is_max else np.inf, x)
        return (_wrap(f(x, axis=axis), dt),)

    return run


# --- Cumsum / Cumprod -------------------------------------------------------------------------
def _scan_axis(axis, n):
    """ScanOp's check of the (host-memory) axis of Cumsum/Cumprod; the axis in [0, n)."""
    if axis.ndim != 0:
        raise _err(f"ScanOp: axis must be a scalar, not {_shape_str(axis.shape)}")
    a = int(axis)
    ax = a + n if a < 0 else a
    if not 0 <= ax < n:
        raise _err(f"ScanOp: Expected scan axis in the range [{-n}, {n}), but got {ax}")
    return ax


@register(["Cumsum", "Cumprod"], "CPU", host_memory=("axis",), type_constraints={"T": _NUM_T})
def _cumsum(node, ctx):
    dt = _out(node)
    cdt = _compute_dtype(dt)
    is_sum = node.op == "Cumsum"
    f = np.cumsum if is_sum else np.cumprod
    exclusive = bool(node.attr("exclusive", False))
    reverse = bool(node.attr("reverse", False))

    def run(x, axis):
        ax = _scan_axis(axis, x.ndim)
        if reverse:
            x = np.flip(x, ax)
        if exclusive:
            r = np.empty(x.shape, cdt)
            lead = (slice(None),) * ax
            r[lead + (slice(0, 1),)] = 0 if is_sum else 1
            f(x[lead + (slice(0, -1),)], axis=ax, dtype=cdt, out=r[lead + (slice(1, None),)])
        else:
            r = f(x, axis=ax, dtype=cdt)
        if reverse:
            r = np.flip(r, ax)
        return (np.ascontiguousarray(r, dtype=dt) if cdt == dt else r.astype(dt),)

    return run


# --- MatMul / BatchMatMul ---------------------------------------------------------------------
_MATMUL_T = _FLOAT_T + _COMPLEX_T + [dtypes.int16, dtypes.int32, dtypes.int64]


def _matmul_compute(dt):
    return _F32 if dt in _LOW else dt


def _matmul_operands(a, b, ta, tb):
    """MatMul's checks: the operands, transposed as the attrs say (the GPU kernel's too)."""
    if a.ndim != b.ndim:
        raise _err(f"In[0] and In[1] has different ndims: {_shape_str(a.shape)} vs. "
                   f"{_shape_str(b.shape)}")
    if a.ndim != 2:
        raise _err(f"In[0] and In[1] ndims must be == 2: {a.ndim}")
    aa = a.T if ta else a
    bb = b.T if tb else b
    if aa.shape[1] != bb.shape[0]:
        raise _err(f"Matrix size-incompatible: In[0]: {_shape_str(a.shape)}, "
                   f"In[1]: {_shape_str(b.shape)}")
    return aa, bb


def _check_batch_matmul(x, y, adj_x, adj_y, v1):
    """BatchMatMul(V2, V3)'s checks on the shapes (``v1``: BatchMatMul, no broadcasting)."""
    if v1 and x.ndim != y.ndim:
        raise _err(f"In[0] and In[1] has different ndims: {_shape_str(x.shape)} vs. "
                   f"{_shape_str(y.shape)}")
    if x.ndim < 2:
        raise _err(f"In[0] ndims must be >= 2: {x.ndim}")
    if y.ndim < 2:
        raise _err(f"In[1] ndims must be >= 2: {y.ndim}")
    if v1:
        for i in range(x.ndim - 2):
            if x.shape[i] != y.shape[i]:
                raise _err(f"In[0].dim({i}) and In[1].dim({i}) must be the same: "
                           f"{_shape_str(x.shape)} vs {_shape_str(y.shape)}")
    else:
        try:
            np.broadcast_shapes(x.shape[:-2], y.shape[:-2])  # shapes only (host tuples)
        except ValueError:
            raise _err("In[0] and In[1] must have compatible batch dimensions: "
                       f"{_shape_str(x.shape)} vs. {_shape_str(y.shape)}") from None
    k_x = x.shape[-2] if adj_x else x.shape[-1]
    k_y = y.shape[-1] if adj_y else y.shape[-2]
    if k_x != k_y:
        raise _err(f"Matrix size-incompatible: In[0]: {_shape_str(x.shape)}, "
                   f"In[1]: {_shape_str(y.shape)}")


@register("MatMul", "CPU", type_constraints={"T": _MATMUL_T})
def _matmul(node, ctx):
    dt = _out(node)
    cdt = _matmul_compute(dt)
    ta = bool(node.attr("transpose_a", False))
    tb = bool(node.attr("transpose_b", False))

    def run(a, b):
        aa, bb = _matmul_operands(a, b, ta, tb)
        if cdt != dt:
            r = np.matmul(aa.astype(cdt), bb.astype(cdt)).astype(dt)
        else:
            team = _team.team_size()
            if team > 1 and 2.0 * aa.shape[0] * aa.shape[1] * bb.shape[1] >= _TEAM_MIN_FLOPS:
                return (_matmul_team(aa, bb, dt, team),)
            r = np.matmul(aa, bb)
        return (_wrap(r, dt),)

    return run


# Inside a plan that holds BLAS at one thread (kernels_cpu/_team.py), a big MatMul splits its
# rows (or, for few rows, its columns) over the team: one single-threaded BLAS call per block.
_TEAM_MIN_FLOPS = 8e6


def _matmul_team(aa, bb, dt, team):
    m, n = aa.shape[0], bb.shape[1]
    r = np.empty((m, n), dt)
    if m >= 4 * team:
        _team.blocks(lambda a, b: np.matmul(aa[a:b], bb, out=r[a:b]), m, team)
    else:
        _team.blocks(lambda a, b: np.matmul(aa, bb[:, a:b], out=r[:, a:b]), n, team)
    return r


def _batch_matmul_builder(node, ctx):
    dt = _out(node)
    cdt = _matmul_compute(dt)
    adj_x = bool(node.attr("adj_x", False))
    adj_y = bool(node.attr("adj_y", False))
    v1 = node.op == "BatchMatMul"
    cplx = _is_complex(dt)

    def adj(m):
        m = np.swapaxes(m, -1, -2)
        return np.conj(m) if cplx else m

    def run(x, y):
        _check_batch_matmul(x, y, adj_x, adj_y, v1)
        xx = x.astype(cdt, copy=False)
        yy = y.astype(cdt, copy=False)
        if adj_x:
            xx = adj(xx)
        if adj_y:
            yy = adj(yy)
        r = np.matmul(xx, yy)
        return (_wrap(r, dt) if cdt == dt else r.astype(dt),)

    return run


register(["BatchMatMul", "BatchMatMulV2"], "CPU",
         type_constraints={"T": _MATMUL_T})(_batch_matmul_builder)
register("BatchMatMulV3", "CPU",
         type_constraints={"Ta": _NUM_T, "Tb": _NUM_T, "Tout": _NUM_T})(_batch_matmul_builder)


# --- AddN -------------------------------------------------------------------------------------
@register("AddN", "CPU", type_constraints={"T": _NUM_T})
def _add_n(node, ctx):
    dt = _out(node)

    def run(*xs):
        x0 = xs[0]
        for x in xs:
            if x.shape != x0.shape:
                _check_same_shapes(node, xs)
        if len(xs) == 1:
            return (np.array(x0, dtype=dt),)
        r = np.asarray(np.add(x0, xs[1]))  # an array even for 0-d inputs, so out= works
        for x in xs[2:]:
            np.add(r, x, out=r)
        return (_wrap(r, dt),)

    return run


# --- Select / SelectV2 ------------------------------------------------------------------------
def _check_then_else(t, e):
    if t.shape != e.shape:
        raise _err("'then' and 'else' must have the same size.  but received: "
                   f"{_shape_str(t.shape)} vs. {_shape_str(e.shape)}")


def _select_cond(node, cond, t, e):
    """Select's checks: the condition as ``where`` takes it (a vector condition picks rows,
    reshaped to broadcast over the rest of ``t``)."""
    if cond.ndim == 0:
        _check_then_else(t, e)
        return cond
    if cond.ndim == 1 and t.ndim != 1:
        if t.ndim == 0:
            raise _err("'then' must be at least a vector, but saw shape: "
                       f"{_shape_str(t.shape)}")
        if t.shape[0] != cond.shape[0]:
            raise _err("Number of batches of 'then' must match size of 'cond', but saw: "
                       f"{t.shape[0]} vs. {cond.shape[0]}")
        _check_then_else(t, e)
        return cond.reshape(cond.shape + (1,) * (t.ndim - 1))
    if cond.shape != t.shape or cond.shape != e.shape:
        _check_same_shapes(node, (cond, t, e))
    return cond


def _select_v2_error(cond, t, e):
    return _err(f"condition {_shape_str(cond.shape)}, then {_shape_str(t.shape)}, and "
                f"else {_shape_str(e.shape)} must be broadcastable")


@register("Select", "CPU")
def _select(node, ctx):
    dt = _out(node)

    def run(cond, t, e):
        c = _select_cond(node, cond, t, e)
        if cond.ndim == 0:
            return (np.array(t if cond else e, dtype=dt),)
        return (_wrap(np.where(c, t, e), dt),)

    return run


@register("SelectV2", "CPU")
def _select_v2(node, ctx):
    dt = _out(node)

    def run(cond, t, e):
        try:
            r = np.where(cond, t, e)
        except ValueError:
            raise _select_v2_error(cond, t, e) from None
        return (_wrap(r, dt),)

    return run


# --- Complex, Polygamma, Zeta, SparseSegment*GradV2 (gradient op types of math_grad) ---------
@register("Complex", "CPU", type_constraints={"T": [dtypes.float32, dtypes.float64],
                                              "Tout": _COMPLEX_T})
def _complex_kernel(node, ctx):
    dt = _out(node)

    def run(re, im):
        try:
            r = np.empty(np.broadcast_shapes(re.shape, im.shape), dtype=dt)
        except ValueError:
            raise _incompatible(re, im) from None
        r.real = re
        r.imag = im
        return (r,)

    return run


# (2j)! / B_2j for j = 1..12: the Euler-Maclaurin coefficients of the Hurwitz zeta tail
_ZETA_A = np.array([12.0, -720.0, 30240.0, -1209600.0, 47900160.0,
                    -1.8924375803183791606e9, 7.47242496e10, -2.950130727918164224e12,
                    1.1646782814350067249e14, -4.5979787224074726105e15,
                    1.8152105401943546773e17, -7.1661652561756670113e18])
_EPS64 = float(np.finfo(np.float64).eps) / 2
_EPS32 = float(np.finfo(np.float32).eps) / 2
_TINY32 = float(np.finfo(np.float32).tiny)


def _ftz32(v):
    return np.where(np.abs(v) < _TINY32, v.dtype.type(0.0), v)


def _zeta(x, q, single=False):
    """Hurwitz zeta(x, q) = sum_k (q + k)^-x, computed in float64 by TensorFlow's method (so
    the special values and, for float32, its approximations match): terms summed directly,
    then the Euler-Maclaurin tail, each stopped as soon as a term is below the rounding. inf at
    x = 1; NaN for x < 1; for q <= 0, an integer q gives inf when x is an even integer (or inf)
    and NaN otherwise, a non-integer q needs an integer x.

    ``single``: TensorFlow's float32 kernel, which sums only nine terms before the tail (poor
    for q < 0, as TensorFlow's is), stops at float32's rounding and flushes float32
    subnormals to zero."""
    x, q = np.broadcast_arrays(np.asarray(x, _F64), np.asarray(q, _F64))
    shape = x.shape
    x = x.reshape(-1)
    q = q.reshape(-1)
    out = np.full(x.shape, np.nan)
    with np.errstate(all="ignore"):
        xint = x == np.floor(x)
        qneg = q <= 0.0
        qint = q == np.floor(q)
        even = np.isinf(x) | (xint & (np.fmod(np.where(xint, x, 0.0), 2.0) == 0.0))
        pole = (x == 1.0) | ((x > 1.0) & qneg & qint & even)
        out[pole] = np.inf
        ok = ~pole & (x > 1.0) & ~np.isnan(q) & ~(qneg & qint) & ~(qneg & ~xint)
        if ok.any():
            out[ok] = _zeta_series(x[ok], q[ok], single)
    return out.reshape(shape)


def _zeta_series(x, q, single=False):
    eps = _EPS32 if single else _EPS64
    ftz = _ftz32 if single else (lambda v: v)
    if single:  # TensorFlow's float32 arithmetic (its cancellations for q < 0 included)
        x, q = x.astype(_F32), q.astype(_F32)
    one, half = x.dtype.type(1.0), x.dtype.type(0.5)
    s = ftz(np.power(q, -x))
    a = q.copy()
    b = np.zeros_like(q)
    done = np.zeros(q.shape, dtype=bool)
    i = 0
    # at least nine terms, and on until q + k > 9 (a negative q sums up through its poles)
    while True:
        going = ~done & (i < 9) if single else ~done & ((i < 9) | (a <= 9.0))
        if not going.any():
            break
        i += 1
        a = np.where(going, a + one, a)
        bn = ftz(np.power(a, -x))
        b = np.where(going, bn, b)
        s = np.where(going, s + bn, s)
        done |= going & (np.abs(bn / s) < eps)
    todo = ~done & (b != 0.0)  # a zero term means a zero tail (and avoids inf * 0)
    if not todo.any():
        return s
    xs, w, b, st = x[todo], a[todo], b[todo], s[todo]
    st = st + b * w / (xs - one)
    st = st - half * b
    fac = np.ones_like(xs)
    k = x.dtype.type(0.0)
    fin = np.zeros(xs.shape, dtype=bool)
    for coef in _ZETA_A.astype(x.dtype):
        fac = fac * (xs + k)
        b = b / w
        t = fac * b / coef
        st = np.where(fin, st, st + t)
        fin |= np.abs(t / st) < eps
        k += one
        fac = fac * (xs + k)
        b = b / w
        k += one
    s = s.copy()
    s[todo] = st
    return s


def _polygamma(n, x, single=False):
    """polygamma(n, x) = (-1)^(n+1) n! zeta(n + 1, x); digamma for n = 0; NaN for a
    non-integer n."""
    n, x = np.broadcast_arrays(np.asarray(n, _F64), np.asarray(x, _F64))
    out = np.full(n.shape, np.nan)
    with np.errstate(all="ignore"):
        nint = n == np.floor(n)
        d = nint & (n == 0.0)
        if d.any():
            out[d] = _digamma(x[d])
        m = nint & (n != 0.0)
        if m.any():
            nm = n[m]
            sign = np.where(np.fmod(nm + 1.0, 2.0) == 0.0, 1.0, -1.0)
            fact = np.exp(_lgamma(nm + 1.0))
            out[m] = sign * fact * _zeta(nm + 1.0, x[m], single)
    return out


def _special_binary(fn):
    def builder(node, ctx):
        dt = _out(node)

        def run(a, b):
            try:
                np.broadcast_shapes(a.shape, b.shape)
            except ValueError:
                raise _incompatible(a, b) from None
            with np.errstate(all="ignore"):
                r = np.asarray(fn(a, b, dt == _F32)).astype(dt)
            if dt == _F32:  # TensorFlow's float32 kernel underflows to zero (flush to zero)
                r[np.abs(r) < np.finfo(_F32).tiny] = 0.0
            return (r,)

        return run

    return builder


register("Zeta", "CPU", type_constraints={"T": [dtypes.float32, dtypes.float64]})(
    _special_binary(_zeta))
register("Polygamma", "CPU", type_constraints={"T": [dtypes.float32, dtypes.float64]})(
    _special_binary(_polygamma))


def _sparse_segment_grad_v2(kind):
    def builder(node, ctx):
        idx_dt = _np_dtype(node.input_types[1])

        def run(grad, indices, segment_ids, dense_output_dim0):
            if indices.ndim != 1:
                raise _err("indices should be a vector.")
            if segment_ids.ndim != 1:
                raise _err("segment_ids should be a vector.")
            dim0 = np.asarray(dense_output_dim0)
            if dim0.ndim != 0:
                raise _err("dense_output_dim0 should be a scalar.")
            n = indices.shape[0]
            if segment_ids.shape[0] != n:
                raise _err("segment_ids and indices should have same size.")
            if grad.ndim < 1:
                raise _err("grad must be at least rank 1")
            m = grad.shape[0]
            ids = segment_ids.astype(np.int64, copy=False)
            bad = np.flatnonzero((ids < 0) | (ids >= m))
            if bad.size:
                i = int(bad[0])
                raise _err(f"Segment id {int(ids[i])} out of range [0, {m}).")
            d0 = int(dim0)
            idx = indices.astype(np.int64, copy=False)
            bad = np.flatnonzero((idx < 0) | (idx >= d0))
            if bad.size:
                i = int(bad[0])
                raise _err(f"Index {int(idx[i])} out of range [0, {d0}).")
            unique, pos = np.unique(idx, return_inverse=True)
            out = np.zeros((unique.size,) + grad.shape[1:], dtype=grad.dtype)
            if n:
                rows = grad[ids]
                if kind != "Sum":
                    counts = np.bincount(ids, minlength=m).astype(np.float64)
                    c = counts[ids]
                    scale = 1.0 / (np.sqrt(c) if kind == "SqrtN" else c)
                    rows = rows * scale.astype(grad.dtype).reshape(
                        (-1,) + (1,) * (grad.ndim - 1))
                np.add.at(out, pos.reshape(-1), rows)
            return out, unique.astype(idx_dt)

        return run

    return builder


for _kind in ("Sum", "Mean", "SqrtN"):
    register("SparseSegment" + _kind + "GradV2", "CPU",
             host_memory=("dense_output_dim0",),
             type_constraints={"T": _FLOAT_T})(_sparse_segment_grad_v2(_kind))
