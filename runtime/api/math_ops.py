"""Math building functions (``tf.add``, ``tf.matmul``, ``tf.reduce_sum``...) and the Tensor
operators (``a + b`` is TensorFlow's ``AddV2`` named ``add``)."""

from mgrt.runtime import dtypes, tensor_shape
from mgrt.runtime import variables as _variables
from mgrt.runtime import shape_inference as si
from mgrt.runtime.graph import Tensor
from mgrt.runtime.ops import apply_op, convert_to_tensor, name_scope


__all__ = ["add", "subtract", "multiply", "floordiv", "floormod", "pow", "truediv", "divide",
           "div", "realdiv", "matmul", "cast", "negative", "abs", "logical_not", "logical_and",
           "logical_or", "logical_xor", "less", "less_equal", "greater", "greater_equal"]


def _out(op_type, inputs, attrs=None, name=None):
    return apply_op(op_type, inputs, attrs, name).outputs[0]


# --- elementwise binary -----------------------------------------------------------------------
def add(x, y, name=None):
    with name_scope(name, "Add", [x, y]) as name:
        x = convert_to_tensor(x, name="x")
        y = convert_to_tensor(y, dtype=x.dtype.base_dtype, name="y")
        if x.dtype.base_dtype == dtypes.string:
            return _out("Add", [x, y], name=name)
        return _out("AddV2", [x, y], name=name)


def _add_v2(x, y, name=None):
    return _out("AddV2", [x, y], name=name)


def subtract(x, y, name=None):
    return _out("Sub", [x, y], name=name)


def multiply(x, y, name=None):
    return _out("Mul", [x, y], name=name)


def floordiv(x, y, name=None):
    with name_scope(name, "floordiv", [x, y]) as name:
        return _out("FloorDiv", [x, y], name=name)


def floormod(x, y, name=None):
    return _out("FloorMod", [x, y], name=name)


def pow(x, y, name=None):  # noqa: A001  (TensorFlow's name)
    with name_scope(name, "Pow", [x, y]) as name:
        return _out("Pow", [x, y], name=name)


_TRUEDIV_INT = {dtypes.int8: dtypes.float32, dtypes.uint8: dtypes.float32,
                dtypes.int16: dtypes.float32, dtypes.uint16: dtypes.float32,
                dtypes.int32: dtypes.float64, dtypes.int64: dtypes.float64}


def truediv(x, y, name=None):
    """``x / y`` with Python 3 semantics: integers are cast to float first (int32 and int64 to
    float64, smaller ints to float32), as TensorFlow does."""
    with name_scope(name, "truediv", [x, y]) as name:
        x = convert_to_tensor(x, name="x")
        y = convert_to_tensor(y, dtype=x.dtype.base_dtype, name="y")
        if x.dtype.base_dtype != y.dtype.base_dtype:
            raise TypeError(f"x and y must have the same dtype, got {x.dtype.base_dtype.name!r} "
                            f"!= {y.dtype.base_dtype.name!r}")
        to = _TRUEDIV_INT.get(x.dtype.base_dtype)
        if to is not None:
            x = cast(x, to)
            y = cast(y, to)
        return _out("RealDiv", [x, y], name=name)


def divide(x, y, name=None):
    if name is not None:
        return truediv(x, y, name=name)
    return x / y


def div(x, y, name=None):
    """TF1's ``tf.div``: Python 2 division (floor for integers)."""
    with name_scope(name, "div", [x, y]) as name:
        x = convert_to_tensor(x, name="x")
        y = convert_to_tensor(y, dtype=x.dtype.base_dtype, name="y")
        if x.dtype.base_dtype.is_floating or x.dtype.base_dtype.is_complex:
            return _out("RealDiv", [x, y], name=name)
        return _out("FloorDiv", [x, y], name=name)


def realdiv(x, y, name=None):
    return _out("RealDiv", [x, y], name=name)


def matmul(a, b, transpose_a=False, transpose_b=False, adjoint_a=False, adjoint_b=False,
           a_is_sparse=False, b_is_sparse=False, name=None):
    """``tf.matmul``: MatMul for rank 2, BatchMatMulV2 above."""
    with name_scope(name, "MatMul", [a, b]) as name:
        a = convert_to_tensor(a, name="a")
        b = convert_to_tensor(b, dtype=a.dtype.base_dtype, name="b")
        transpose_a = transpose_a or adjoint_a
        transpose_b = transpose_b or adjoint_b
        ra, rb = a.shape.rank, b.shape.rank
        if (ra is None or ra > 2) or (rb is None or rb > 2):
            return _out("BatchMatMulV2", [a, b], {"adj_x": transpose_a, "adj_y": transpose_b},
                        name=name)
        return _out("MatMul", [a, b], {"transpose_a": transpose_a, "transpose_b": transpose_b},
                    name=name)


def cast(x, dtype, name=None):
    """``tf.cast`` (a no-op returning ``x`` when it already has ``dtype``)."""
    base = dtypes.as_dtype(dtype).base_dtype
    if isinstance(x, Tensor) and x.dtype.base_dtype == base:
        return x
    with name_scope(name, "Cast", [x]) as name:
        x = convert_to_tensor(x, name="x")
        if x.dtype.base_dtype == base:
            return x
        return _out("Cast", [x], {"DstT": base, "Truncate": False}, name=name)


def negative(x, name=None):
    return _out("Neg", [x], name=name)


def abs(x, name=None):  # noqa: A001
    with name_scope(name, "Abs", [x]) as name:
        return _out("Abs", [x], name=name)


def logical_not(x, name=None):
    return _out("LogicalNot", [x], name=name)


def logical_and(x, y, name=None):
    return _out("LogicalAnd", [x, y], name=name)


def logical_or(x, y, name=None):
    return _out("LogicalOr", [x, y], name=name)


def logical_xor(x, y, name="LogicalXor"):
    return logical_and(logical_or(x, y), logical_not(logical_and(x, y)), name=name)


def less(x, y, name=None):
    return _out("Less", [x, y], name=name)


def less_equal(x, y, name=None):
    return _out("LessEqual", [x, y], name=name)


def greater(x, y, name=None):
    return _out("Greater", [x, y], name=name)


def greater_equal(x, y, name=None):
    return _out("GreaterEqual", [x, y], name=name)


# --- Tensor operators -------------------------------------------------------------------------
def _binary_wrapper(func, op_name):
    def binary(x, y):
        # as TensorFlow 2.x's binary_op_wrapper: ``y`` is converted by the op itself (so a
        # Python ``y`` becomes ``<op>/y`` with ``x``'s dtype); the reflected form converts
        # ``x`` here, with ``y``'s dtype
        with name_scope(None, op_name, [x, y]) as name:
            return func(x, y, name=name)

    def r_binary(y, x):
        with name_scope(None, op_name, [x, y]) as name:
            x = convert_to_tensor(x, dtype=y.dtype.base_dtype, name="x")
            return func(x, y, name=name)

    return binary, r_binary


def _add_op(x, y, name=None):
    if x.dtype.base_dtype == dtypes.string:
        return _out("Add", [x, y], name=name)
    return _out("AddV2", [x, y], name=name)


def _mul_op(x, y, name=None):
    return _out("Mul", [x, y], name=name)


def _matmul_op(x, y, name=None):
    return matmul(x, y, name=name)


def _logical_and_op(x, y, name=None):
    if x.dtype.base_dtype == dtypes.bool:
        return _out("LogicalAnd", [x, y], name=name)
    return _out("BitwiseAnd", [x, y], name=name)


def _logical_or_op(x, y, name=None):
    if x.dtype.base_dtype == dtypes.bool:
        return _out("LogicalOr", [x, y], name=name)
    return _out("BitwiseOr", [x, y], name=name)


def _logical_xor_op(x, y, name=None):
    if x.dtype.base_dtype == dtypes.bool:
        return logical_xor(x, y, name=name)
    return _out("BitwiseXor", [x, y], name=name)


_OPERATORS = {
    "add": (_add_op, "add"), "sub": (subtract, "sub"), "mul": (_mul_op, "mul"),
    "truediv": (truediv, "truediv"), "floordiv": (floordiv, "floordiv"),
    "mod": (floormod, "mod"), "pow": (pow, "pow"), "matmul": (_matmul_op, "matmul"),
    "and": (_logical_and_op, "and"), "or": (_logical_or_op, "or"),
    "xor": (_logical_xor_op, "xor"),
}


def _install_operators(cls):
    """Give ``cls`` (Tensor, and Variable) TensorFlow's Python operators."""
    for key, (func, op_name) in _OPERATORS.items():
        b, rb = _binary_wrapper(func, op_name)
        setattr(cls, f"__{key}__", b)
        setattr(cls, f"__r{key}__", rb)
    cls.__div__ = cls.__truediv__
    cls.__rdiv__ = cls.__rtruediv__
    cls.__neg__ = lambda self: _out("Neg", [self])
    cls.__abs__ = lambda self: abs(self)
    cls.__invert__ = lambda self: (_out("LogicalNot", [self]) if self.dtype.base_dtype ==
                                   dtypes.bool else _out("Invert", [self]))
    # comparisons are the raw ops, as in TensorFlow: ``a < 2`` builds ``Less`` and ``Less/y``
    cls.__lt__ = lambda self, other: less(self, other)
    cls.__le__ = lambda self, other: less_equal(self, other)
    cls.__gt__ = lambda self, other: greater(self, other)
    cls.__ge__ = lambda self, other: greater_equal(self, other)


_install_operators(Tensor)


def _install_variable_operators(cls):
    """A Variable's operators act on its value, read outside the operator's name scope (as
    TensorFlow's ``_OverloadOperator``)."""
    names = [f"__{k}__" for k in _OPERATORS] + [f"__r{k}__" for k in _OPERATORS] + [
        "__div__", "__rdiv__", "__neg__", "__abs__", "__invert__", "__lt__", "__le__",
        "__gt__", "__ge__"]
    for n in names:
        def method(self, *args, _n=n):
            return getattr(Tensor, _n)(self.value(), *args)
        method.__name__ = n
        setattr(cls, n, method)


_install_variable_operators(_variables.Variable)


# --- shape functions of the ops above ---------------------------------------------------------
def broadcast_shape(a, b):
    """The static broadcast of two TensorShapes (TensorFlow's BroadcastBinaryOpShapeFn); raises
    ValueError when the known dims cannot broadcast."""
    a, b = tensor_shape.as_shape(a), tensor_shape.as_shape(b)
    if a.rank is None or b.rank is None:
        return tensor_shape.unknown_shape()
    da = [tensor_shape.dimension_value(d) for d in a.dims]
    db = [tensor_shape.dimension_value(d) for d in b.dims]
    n = max(len(da), len(db))
    da = [1] * (n - len(da)) + da
    db = [1] * (n - len(db)) + db
    out = []
    for x, y in zip(da, db):
        if x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x is None:
            out.append(y if y is not None and y > 1 else None)
        elif y is None:
            out.append(x)
        elif x == y:
            out.append(x)
        else:
            raise ValueError(f"Dimensions must be equal, but are {x} and {y} for shapes "
                             f"{a} and {b} (they do not broadcast)")
    return tensor_shape.TensorShape(out)


_BINARY_CWISE = ("Add", "AddV2", "Sub", "Mul", "RealDiv", "Div", "DivNoNan", "FloorDiv",
                 "FloorMod", "Mod", "TruncateDiv", "TruncateMod", "Pow", "Maximum", "Minimum",
                 "SquaredDifference", "Less", "LessEqual", "Greater", "GreaterEqual", "Equal",
                 "NotEqual", "LogicalAnd", "LogicalOr", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
                 "Atan2", "Xdivy", "Xlogy", "MulNoNan", "SigmoidGrad", "TanhGrad", "RsqrtGrad",
                 "SqrtGrad", "ReciprocalGrad", "ReluGrad", "Relu6Grad", "EluGrad", "SeluGrad",
                 "SoftplusGrad", "SoftsignGrad", "LeakyReluGrad", "InvGrad",
                 "LeftShift", "RightShift", "Igamma", "Igammac", "Zeta", "Polygamma")


@si.register(*_BINARY_CWISE)
def _binary_shape(op):
    if len(op.inputs) != 2:
        return None
    return [broadcast_shape(op.inputs[0].shape, op.inputs[1].shape)]


_UNARY_CWISE = ("Abs", "Neg", "Sign", "Square", "Sqrt", "Rsqrt", "Exp", "Expm1", "Log", "Log1p",
                "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Tanh", "Asinh",
                "Acosh", "Atanh", "Sigmoid", "Reciprocal", "Inv", "Floor", "Ceil", "Round",
                "Rint", "Relu", "Relu6", "Elu", "Selu", "Softplus", "Softsign", "LeakyRelu",
                "LogicalNot", "Invert", "IsNan", "IsInf", "IsFinite", "Cast", "Erf", "Erfc",
                "Lgamma", "Digamma", "Identity", "StopGradient", "PreventGradient", "Snapshot",
                "ZerosLike", "OnesLike", "CheckNumerics", "Real", "Imag", "Conj", "ComplexAbs",
                "Angle", "Softmax", "LogSoftmax", "BiasAdd", "ClipByValue", "Print")


@si.register(*_UNARY_CWISE)
def _unary_shape(op):
    return [op.inputs[0].shape] + [None] * (len(op.outputs) - 1)


@si.register("MatMul")
def _matmul_shape(op):
    a, b = op.inputs[0].shape, op.inputs[1].shape
    if a.rank is None or b.rank is None:
        return None
    a = a.with_rank(2)
    b = b.with_rank(2)
    ta, tb = op.get_attr("transpose_a"), op.get_attr("transpose_b")
    m, ka = (a[1], a[0]) if ta else (a[0], a[1])
    kb, n = (b[1], b[0]) if tb else (b[0], b[1])
    ka_v, kb_v = tensor_shape.dimension_value(ka), tensor_shape.dimension_value(kb)
    if ka_v is not None and kb_v is not None and ka_v != kb_v:
        raise ValueError(f"Dimensions must be equal, but are {ka_v} and {kb_v} for "
                         f"'{op.name}' (op: 'MatMul') with input shapes: {a}, {b}.")
    return [tensor_shape.TensorShape([m, n])]


@si.register("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
def _batch_matmul_shape(op):
    a, b = op.inputs[0].shape, op.inputs[1].shape
    if a.rank is None or b.rank is None:
        return None
    ax, ay = op.get_attr("adj_x"), op.get_attr("adj_y")
    m = a[-1] if ax else a[-2]
    n = b[-2] if ay else b[-1]
    batch = broadcast_shape(a[:-2], b[:-2]) if op.type != "BatchMatMul" else a[:-2]
    return [batch.concatenate([m, n])]


@si.register("Const")
def _const_shape(op):
    return None  # set from the value by shapes_from_attrs
