"""``tf.nn`` of ``tf.compat.v1`` (activations, convolutions, pooling, dropout, normalization,
cross entropies...) with TensorFlow's op types, node names, attrs and static shapes, and the
shape functions of the nn op types.

Every function builds what TensorFlow 2.x's ``tf.compat.v1.nn`` builds for the same call:
the same name scopes (``dropout/random_uniform/RandomUniform``), the same constant folding of
known shapes and ranks (``array_ops.shape`` of a fully defined tensor is a Const), and the same
names for converted Python values (``BiasAdd/bias``: an input converted inside the op's name
scope, named after its ``input_arg``). The private array/math helpers at the top (``_shape``,
``_rank``, ``_range``, ``_reduce``, ``_ones_like``...) reproduce TensorFlow's building
functions of the same names for that purpose; they are used here and by ``losses.py``.

The public functions are exported through ``mgrt.nn`` (``tf.nn``), not at the top level of
``mgrt.compat.v1`` (``__all__`` is empty).
"""

import collections
import numbers

import numpy as np

from mgrt.runtime import dtypes, tensor_shape
from mgrt.runtime import shape_inference as si
from mgrt.runtime.graph import Tensor, get_default_graph
from mgrt.runtime.ops import apply_op, constant, convert_to_tensor, name_scope

__all__ = []  # the nn functions live under tf.nn (mgrt/nn.py)

_NN_NAMES = [
    "relu", "relu6", "elu", "selu", "leaky_relu", "crelu", "sigmoid", "tanh", "softplus",
    "softsign", "softmax", "log_softmax", "bias_add", "conv2d", "depthwise_conv2d",
    "depthwise_conv2d_native", "conv2d_transpose", "max_pool", "avg_pool", "dropout", "moments",
    "batch_normalization", "fused_batch_norm", "sparse_softmax_cross_entropy_with_logits",
    "softmax_cross_entropy_with_logits", "softmax_cross_entropy_with_logits_v2",
    "sigmoid_cross_entropy_with_logits", "l2_loss", "l2_normalize", "in_top_k", "top_k",
    "lrn", "local_response_normalization", "xw_plus_b", "relu_layer",
    "separable_conv2d", "atrous_conv2d", "max_pool_with_argmax",
    "weighted_cross_entropy_with_logits",
]


# =============================================================================================
# Building helpers: TensorFlow's names for converted inputs
# =============================================================================================
def _is_tensor_like(x):
    return isinstance(x, Tensor) or hasattr(x, "_dense_var_to_tensor") or \
        hasattr(x, "_as_graph_element")


def _dtype_of(x):
    dt = getattr(x, "dtype", None)
    return None if dt is None else dtypes.as_dtype(dt).base_dtype


def _graph_tensors(inputs):
    out = []
    for v in inputs:
        if isinstance(v, (list, tuple)):
            out.extend(x for x in v if isinstance(x, Tensor))
        elif isinstance(v, Tensor):
            out.append(v)
    return out


def _op(op_type, inputs, attrs=None, name=None):
    """TensorFlow's generated op wrapper (``op_def_library``): opens the op's name scope,
    converts Python inputs there (named after their ``input_arg``, ``values_0``... for list
    args), and adds the node named after the scope. Returns the Operation."""
    g = get_default_graph()
    tensors = _graph_tensors(inputs)
    if tensors:
        g = tensors[0].graph
    od = g.op_registry.get(op_type)
    if od is None:
        raise ValueError(f"Op type not registered: {op_type!r}.")
    attrs = dict(attrs or {})
    attr_defs = {a.name: a for a in od.attr}
    inputs = list(inputs)
    if len(inputs) != len(od.input_arg):
        raise TypeError(f"{op_type} takes {len(od.input_arg)} inputs, got {len(inputs)}")
    types = {}
    for k, v in attrs.items():
        ad = attr_defs.get(k)
        if ad is not None and ad.type == "type":
            types[k] = dtypes.as_dtype(v).base_dtype
    for arg, v in zip(od.input_arg, inputs):
        if arg.type_attr and arg.type_attr not in types:
            for x in (v if isinstance(v, (list, tuple)) and (arg.number_attr or
                                                            arg.type_list_attr) else [v]):
                if _is_tensor_like(x) and _dtype_of(x) is not None:
                    types[arg.type_attr] = _dtype_of(x)
                    break
    with g.as_default(), name_scope(name, op_type, tensors) as scope:
        conv = []
        for arg, v in zip(od.input_arg, inputs):
            if arg.number_attr or arg.type_list_attr:
                if isinstance(v, Tensor) or not isinstance(v, (list, tuple)):
                    raise TypeError(f"Expected list for '{arg.name}' argument to '{op_type}' "
                                    f"Op, not {v!r}.")
                conv.append([x if isinstance(x, Tensor) else
                             _convert_arg(x, arg, types, attr_defs, op_type, f"{arg.name}_{i}")
                             for i, x in enumerate(v)])
            else:
                conv.append(v if isinstance(v, Tensor) else
                            _convert_arg(v, arg, types, attr_defs, op_type, arg.name))
        return apply_op(op_type, conv, attrs, name=scope)


def _convert_arg(value, arg, types, attr_defs, op_type, name):
    if arg.type:
        dt = dtypes.as_dtype(arg.type)
    else:
        dt = types.get(arg.type_attr)
    preferred = None
    if dt is None and arg.type_attr in attr_defs and \
            attr_defs[arg.type_attr].HasField("default_value"):
        preferred = dtypes.as_dtype(attr_defs[arg.type_attr].default_value.type)
    try:
        t = convert_to_tensor(value, dtype=dt, preferred_dtype=preferred, name=name)
    except (TypeError, ValueError) as e:
        raise TypeError(f"Expected {dt.name if dt else 'a tensor'} passed to parameter "
                        f"'{arg.name}' of op '{op_type}', got {value!r} of type "
                        f"'{type(value).__name__}' instead. Error: {e}") from None
    if dt is None and arg.type_attr:
        types[arg.type_attr] = t.dtype.base_dtype
    return t


def _out(op_type, inputs, attrs=None, name=None):
    return _op(op_type, inputs, attrs, name).outputs[0]


# --- array/math helpers with TensorFlow's names -----------------------------------------------
def _shape(x, name=None, out_type=dtypes.int32, optimize=True):
    """``array_ops.shape`` (a Const when the shape is fully defined)."""
    with name_scope(name, "Shape", [x]) as scope:
        x = convert_to_tensor(x)
        s = x.shape
        if optimize and s.is_fully_defined():
            return constant(s.as_list(), out_type, name=scope)
        return _out("Shape", [x], {"out_type": out_type}, name=scope)


def _shape_internal_default(x):
    """``shape_internal(x)`` with no ``out_type``: ``Shape/shape_as_tensor`` when known."""
    with name_scope(None, "Shape", [x]) as scope:
        x = convert_to_tensor(x)
        s = x.shape
        if s.is_fully_defined():
            dims = s.as_list()
            dt = dtypes.int64 if any(d >= 2 ** 31 for d in dims) else dtypes.int32
            return constant(dims, dt, name="shape_as_tensor")
        return _out("Shape", [x], {"out_type": dtypes.int32}, name=scope)


def _rank(x, name=None):
    with name_scope(name, "Rank", [x]) as scope:
        x = convert_to_tensor(x)
        if x.shape.rank is not None:
            return constant(x.shape.rank, dtypes.int32, name=scope)
        return _out("Rank", [x], name=scope)


def _size(x, name=None, out_type=dtypes.int32):
    with name_scope(name, "Size", [x]) as scope:
        x = convert_to_tensor(x)
        s = x.shape
        if s.is_fully_defined():
            return constant(s.num_elements(), out_type, name=scope)
        if s.rank is not None and any(tensor_shape.dimension_value(d) == 0 for d in s.dims):
            return constant(0, out_type, name=scope)
        return _out("Size", [x], {"out_type": out_type}, name=scope)


_RANGE_TYPES = [dtypes.int32, dtypes.int64, dtypes.float32, dtypes.float64]


def _range(start, limit=None, delta=1, name="range"):
    if limit is None:
        start, limit = 0, start
    with name_scope(name, "Range", [start, limit, delta]) as scope:
        if not isinstance(start, Tensor):
            start = convert_to_tensor(start, name="start")
        if not isinstance(limit, Tensor):
            limit = convert_to_tensor(limit, name="limit")
        if not isinstance(delta, Tensor):
            delta = convert_to_tensor(delta, name="delta")
        dt = max((t.dtype.base_dtype for t in (start, limit, delta)), key=_RANGE_TYPES.index)
        start, limit, delta = (_cast(t, dt) for t in (start, limit, delta))
        return _out("Range", [start, limit, delta], name=scope)


def _concat(values, axis, name="concat"):
    if not isinstance(values, (list, tuple)):
        values = [values]
    if len(values) == 1:
        with name_scope(name) as scope:
            convert_to_tensor(axis, name="concat_dim", dtype=dtypes.int32)
            return _out("Identity", [values[0]], name=scope)
    return _out("ConcatV2", [list(values), axis], name=name)


def _transpose(a, perm, name="transpose"):
    with name_scope(name, "transpose", [a]) as scope:
        if not isinstance(a, Tensor):
            a = convert_to_tensor(a, name="a")
        return _out("Transpose", [a, perm], name=scope)


def _reshape(x, shape, name=None):
    return _out("Reshape", [x, shape], name=name)


def _cast(x, dtype, name=None):
    base = dtypes.as_dtype(dtype).base_dtype
    if isinstance(x, Tensor) and x.dtype.base_dtype == base:
        return x
    with name_scope(name, "Cast", [x]) as scope:
        x = convert_to_tensor(x, name="x")
        if x.dtype.base_dtype == base:
            return x
        return _out("Cast", [x], {"DstT": base, "Truncate": False}, name=scope)


def _reduction_dims(x, axis):
    if axis is not None:
        return axis
    r = x.shape.rank
    if r:
        return constant(np.arange(r, dtype=np.int32))
    return _range(0, _rank(x))


def _reduce(op_type, x, axis=None, keepdims=False, name=None):
    x = convert_to_tensor(x)
    out = _out(op_type, [x, _reduction_dims(x, axis)], {"keep_dims": bool(keepdims)},
               name=name)
    if not keepdims and axis is None and not out.shape.is_fully_defined():
        out.set_shape([])
    return out


def _reduce_sum(x, axis=None, keepdims=False, name=None):
    return _reduce("Sum", x, axis, keepdims, name)


def _reduce_mean(x, axis=None, keepdims=False, name=None):
    return _reduce("Mean", x, axis, keepdims, name)


def _squeeze(x, axis=None, name=None):
    if np.isscalar(axis):
        axis = [axis]
    return _out("Squeeze", [x], {"squeeze_dims": list(axis or [])}, name=name)


def _fill(dims, value, name=None):
    return _out("Fill", [dims, value], name=name)


def _constant_if_small(value, shape, dtype, name):
    try:
        if np.prod(shape) < 1000:
            return constant(value, dtype=dtype, shape=shape, name=name)
    except (TypeError, ValueError, NotImplementedError):
        pass
    return None


def _filled(value_of, shape, dtype, name, default_name):
    dtype = dtypes.as_dtype(dtype).base_dtype
    with name_scope(name, default_name, [shape] if isinstance(shape, Tensor) else None) \
            as scope:
        v = value_of(dtype)
        if not isinstance(shape, Tensor):
            shape = tensor_shape.as_shape(shape)
            out = _constant_if_small(v, shape.as_list(), dtype, scope)
            if out is not None:
                return out
            shape = constant(shape.as_list(), dtypes.int32, name="shape_as_tensor")
        return _fill(shape, constant(v, dtype=dtype), name=scope)


def _zero(dt):
    return False if dt == dtypes.bool else ("" if dt == dtypes.string else 0)


def _one(dt):
    return True if dt == dtypes.bool else 1


def _zeros(shape, dtype=dtypes.float32, name=None):
    return _filled(_zero, shape, dtype, name, "zeros")


def _ones(shape, dtype=dtypes.float32, name=None):
    return _filled(_one, shape, dtype, name, "ones")


def _zeros_like(x, dtype=None, name=None):
    with name_scope(name, "zeros_like", [x]) as scope:
        if not isinstance(x, Tensor):
            x = convert_to_tensor(x, name="tensor")
        if x.shape.is_fully_defined() and x.dtype.base_dtype != dtypes.variant:
            return _zeros(x.shape, dtype=dtype or x.dtype.base_dtype, name=scope)
        if dtype is not None and dtypes.as_dtype(dtype) != x.dtype.base_dtype:
            return _zeros(_shape_internal_default(x), dtype=dtype, name=scope)
        return _out("ZerosLike", [x], name=scope)


def _ones_like(x, dtype=None, name=None):
    with name_scope(name, "ones_like", [x]) as scope:
        x = convert_to_tensor(x, name="tensor")
        shape = _shape_internal_default(x)
        out = _ones(shape, dtype=dtype or x.dtype.base_dtype, name=scope)
        out.set_shape(x.shape)
        return out


def _stop_gradient(x, name=None):
    return _out("StopGradient", [x], name=name)


def _identity(x, name=None):
    return _out("Identity", [x], name=name)


def _sub(x, y, name=None):
    return _out("Sub", [x, y], name=name)


def _mul(x, y, name=None):
    return _out("Mul", [x, y], name=name)


def _equal(x, y, name=None):
    return _out("Equal", [x, y], {"incompatible_shape_error": True}, name=name)


def _select(cond, x, y, name=None):
    return _out("Select", [cond, x, y], name=name)


def _add(x, y, name=None):
    """``math_ops.add``: AddV2 in a scope named ``Add``."""
    with name_scope(name, "Add", [x, y]) as scope:
        x = convert_to_tensor(x, name="x")
        y = convert_to_tensor(y, dtype=x.dtype.base_dtype, name="y")
        return _out("AddV2", [x, y], name=scope)


def _add_n(inputs, name=None):
    if not inputs or not isinstance(inputs, (list, tuple)):
        raise ValueError("Inputs must be an iterable of at least one Tensor/IndexedSlices "
                         "with the same dtype and shape.")
    inputs = [convert_to_tensor(t) for t in inputs]
    if len(inputs) == 1:
        if name:
            return _identity(inputs[0], name=name)
        return inputs[0]
    return _out("AddN", [inputs], name=name)


def _div_no_nan(x, y, name=None):
    with name_scope(name, "div_no_nan", [x, y]) as scope:
        x = convert_to_tensor(x, name="x")
        y = convert_to_tensor(y, name="y", dtype=x.dtype.base_dtype)
        return _out("DivNoNan", [x, y], name=scope)


def _matmul(a, b, name=None):
    from mgrt.runtime.api import math_ops

    return math_ops.matmul(a, b, name=name)


def _lookup(deprecated, new, old_name, new_name):
    if deprecated is not None and new is not None:
        raise ValueError(f"Cannot specify both '{new_name}' and '{old_name}'.")
    return new if new is not None else deprecated


# =============================================================================================
# Activations
# =============================================================================================
def relu(features, name=None):
    return _out("Relu", [features], name=name)


def relu6(features, name=None):
    with name_scope(name, "Relu6", [features]) as scope:
        features = convert_to_tensor(features, name="features")
        return _out("Relu6", [features], name=scope)


def elu(features, name=None):
    return _out("Elu", [features], name=name)


def selu(features, name=None):
    return _out("Selu", [features], name=name)


def crelu(features, name=None, axis=-1):
    with name_scope(name, "CRelu", [features]) as scope:
        features = convert_to_tensor(features, name="features")
        c = _concat([features, -features], axis, name=scope)
        return relu(c)


def leaky_relu(features, alpha=0.2, name=None):
    with name_scope(name, "LeakyRelu", [features, alpha]) as scope:
        features = convert_to_tensor(features, name="features")
        if features.dtype.base_dtype.is_integer:
            features = _cast(features, dtypes.float32)
        if isinstance(alpha, np.ndarray):
            alpha = alpha.item()
        if isinstance(alpha, Tensor):
            raise TypeError("leaky_relu: `alpha` must be a Python float in graph mode, got a "
                            "Tensor")
        return _out("LeakyRelu", [features], {"alpha": float(alpha)}, name=scope)


def sigmoid(x, name=None):
    with name_scope(name, "Sigmoid", [x]) as scope:
        x = convert_to_tensor(x, name="x")
        return _out("Sigmoid", [x], name=scope)


def tanh(x, name=None):
    with name_scope(name, "Tanh", [x]) as scope:
        x = convert_to_tensor(x, name="x")
        return _out("Tanh", [x], name=scope)


def softplus(features, name=None):
    return _out("Softplus", [features], name=name)


def softsign(features, name=None):
    return _out("Softsign", [features], name=name)


def _wrap_2d_function(inputs, op_type, dim=-1, name=None):
    """Softmax/LogSoftmax over ``dim``: the op itself on the last axis, else a transpose that
    swaps ``dim`` with the last axis, the op, and the transpose back (TensorFlow's graph)."""

    def swap_axis(t, dim_index, last_index, name=None):
        return _transpose(t, _concat([_range(dim_index), [last_index],
                                      _range(dim_index + 1, last_index), [dim_index]], 0),
                          name=name)

    inputs = convert_to_tensor(inputs)
    shape = inputs.shape
    if isinstance(dim, Tensor):
        raise TypeError(f"{op_type}: a Tensor `axis` is not supported; pass a Python int")
    if dim == -1 or dim == shape.rank - 1 if shape.rank is not None else dim == -1:
        return _out(op_type, [inputs], name=name)
    if shape.rank is None:
        raise ValueError(f"{op_type} over axis {dim} needs an input of known rank, got "
                         f"{inputs!r}")
    if not -shape.rank <= dim < shape.rank:
        from mgrt.runtime import errors

        raise errors.InvalidArgumentError(
            None, None, f"`dim` must be in the range [{-shape.rank}, {shape.rank}) where "
            f"{shape.rank} is the number of dimensions in the input. Received: dim={dim}")
    _rank(inputs)  # TensorFlow builds (and does not use) this one
    input_rank = _rank(inputs)
    dim_axis = dim % shape.rank
    inputs = swap_axis(inputs, dim_axis, _sub(input_rank, 1))
    out = _out(op_type, [inputs])
    out = swap_axis(out, dim_axis, _sub(input_rank, 1), name=name)
    out.set_shape(shape)
    return out


def softmax(logits, axis=None, name=None, dim=None):
    axis = _lookup(dim, axis, "dim", "axis")
    return _wrap_2d_function(logits, "Softmax", -1 if axis is None else axis, name)


def log_softmax(logits, axis=None, name=None, dim=None):
    axis = _lookup(dim, axis, "dim", "axis")
    return _wrap_2d_function(logits, "LogSoftmax", -1 if axis is None else axis, name)


def bias_add(value, bias, data_format=None, name=None):
    with name_scope(name, "BiasAdd", [value, bias]) as scope:
        if data_format is not None:
            if data_format.startswith("NC"):
                data_format = "NCHW"
            elif data_format.startswith("N") and data_format.endswith("C"):
                data_format = "NHWC"
            else:
                raise ValueError("`data_format` must be of the form `N...C` or `NC...`. "
                                 f"Received: data_format={data_format}")
        value = convert_to_tensor(value, name="input")
        bias = convert_to_tensor(bias, dtype=value.dtype.base_dtype, name="bias")
        attrs = {} if data_format is None else {"data_format": data_format}
        return _out("BiasAdd", [value, bias], attrs, name=scope)


# =============================================================================================
# Convolution and pooling
# =============================================================================================
def _get_sequence(value, n, channel_index, name):
    if value is None:
        return [1] * (n + 2)
    if isinstance(value, list):
        pass
    elif isinstance(value, tuple):
        value = list(value)
    elif isinstance(value, (int, np.integer)):
        value = [value]
    elif not hasattr(value, "__len__"):
        value = [value]
    else:
        value = list(value)
    if len(value) == n + 2:
        return value
    if len(value) == 1:
        value = value * n
    elif len(value) != n:
        raise ValueError(f"{name} should be of length 1, {n} or {n + 2}. Received: "
                         f"{name}={value} of length {len(value)}")
    if channel_index == 1:
        return [1, 1] + value
    return [1] + value + [1]


def _convert_padding(padding, expected_length=4):
    explicit = []
    if padding == "EXPLICIT":
        raise ValueError('"EXPLICIT" is not a valid value for `padding`. To use explicit '
                         'padding, `padding` must be a list.')
    if isinstance(padding, (list, tuple)):
        for i, p in enumerate(padding):
            if not isinstance(p, (list, tuple)):
                raise ValueError("When `padding` is a list, each element of `padding` must be "
                                 f"a list/tuple of size 2. Received: padding={padding} with "
                                 f"element at index {i} of type {type(p)}")
            if len(p) != 2:
                raise ValueError("When `padding` is a list, each element of `padding` must be "
                                 f"a list/tuple of size 2. Received: padding={padding} with "
                                 f"element at index {i} of size {len(p)}")
            explicit.extend(int(v) for v in p)
        if len(padding) != expected_length:
            raise ValueError(f"When padding is a list, it must be of size {expected_length}. "
                             f"Received: padding={padding} of size {len(padding)}")
        padding = "EXPLICIT"
    elif padding not in ("SAME", "VALID"):
        raise ValueError(f"`padding` must be 'SAME', 'VALID' or a list of [before, after] "
                         f"pairs. Received: padding={padding!r}")
    return padding, explicit


def conv2d(input, filter=None, strides=None, padding=None, use_cudnn_on_gpu=True,  # noqa: A002
           data_format="NHWC", dilations=(1, 1, 1, 1), name=None, filters=None):
    """``tf.nn.conv2d`` (TF1 argument names ``input``/``filter``; ``filters`` too)."""
    filter = _lookup(filter, filters, "filter", "filters")  # noqa: A001
    if filter is None:
        raise ValueError("conv2d: the `filter` argument is required")
    if padding is None:
        raise ValueError("conv2d: the `padding` argument is required ('SAME', 'VALID' or a "
                         "list of explicit paddings)")
    return _conv_node("Conv2D", "conv2d", [input, filter], strides, padding, use_cudnn_on_gpu,
                      data_format, dilations, name)


def _conv_node(op_type, label, inputs, strides, padding, use_cudnn_on_gpu, data_format,
               dilations, name):
    """A Conv2D, Conv2DBackpropInput or Conv2DBackpropFilter node with TF's attrs."""
    padding, explicit = _convert_padding(padding)
    if data_format is None:
        data_format = "NHWC"
    if data_format not in ("NHWC", "NCHW"):
        raise ValueError(f"{label}: `data_format` must be 'NHWC' or 'NCHW', got "
                         f"{data_format!r}")
    ci = 1 if data_format.startswith("NC") else 3
    strides = _get_sequence(strides, 2, ci, "strides")
    dilations = _get_sequence(list(dilations) if dilations is not None else None, 2, ci,
                              "dilations")
    return _out(op_type, inputs,
                {"strides": strides, "padding": padding, "use_cudnn_on_gpu": use_cudnn_on_gpu,
                 "explicit_paddings": explicit, "data_format": data_format,
                 "dilations": dilations}, name=name)


def conv2d_backprop_input(input_sizes, filter=None, out_backprop=None, strides=None,  # noqa: A002
                          padding=None, use_cudnn_on_gpu=True, data_format="NHWC",
                          dilations=(1, 1, 1, 1), name=None, filters=None):
    """``tf.compat.v1.nn.conv2d_backprop_input``: a Conv2DBackpropInput node."""
    filter = _lookup(filter, filters, "filter", "filters")  # noqa: A001
    if filter is None or out_backprop is None:
        raise ValueError("conv2d_backprop_input needs `filter` and `out_backprop`")
    if strides is None or padding is None:
        raise ValueError("conv2d_backprop_input: the `strides` and `padding` arguments are "
                         "required")
    return _conv_node("Conv2DBackpropInput", "conv2d_backprop_input",
                          [input_sizes, filter, out_backprop], strides, padding,
                          use_cudnn_on_gpu, data_format, dilations, name)


def conv2d_backprop_filter(input, filter_sizes, out_backprop, strides, padding,  # noqa: A002
                           use_cudnn_on_gpu=True, data_format="NHWC", dilations=(1, 1, 1, 1),
                           name=None):
    """``tf.compat.v1.nn.conv2d_backprop_filter``: a Conv2DBackpropFilter node."""
    return _conv_node("Conv2DBackpropFilter", "conv2d_backprop_filter",
                          [input, filter_sizes, out_backprop], strides, padding,
                          use_cudnn_on_gpu, data_format, dilations, name)


def depthwise_conv2d_native(input, filter, strides, padding, data_format="NHWC",  # noqa: A002
                            dilations=(1, 1, 1, 1), name=None):
    padding, explicit = _convert_padding(padding)
    return _out("DepthwiseConv2dNative", [input, filter],
                {"strides": list(strides), "padding": padding, "explicit_paddings": explicit,
                 "data_format": data_format or "NHWC", "dilations": list(dilations)},
                name=name)


def conv2d_transpose(value=None, filter=None, output_shape=None, strides=None,  # noqa: A002
                     padding="SAME", data_format="NHWC", name=None, input=None, filters=None,
                     dilations=None):
    value = _lookup(value, input, "value", "input")
    filter = _lookup(filter, filters, "filter", "filters")  # noqa: A001
    if value is None or filter is None or output_shape is None:
        raise ValueError("conv2d_transpose needs `value`, `filter` and `output_shape`")
    with name_scope(name, "conv2d_transpose", [value, filter]) as scope:
        with name_scope(scope, "conv2d_transpose", [value, filter]) as scope:
            if data_format is None:
                data_format = "NHWC"
            ci = 1 if data_format.startswith("NC") else 3
            strides = _get_sequence(strides, 2, ci, "strides")
            dilations = _get_sequence(dilations, 2, ci, "dilations")
            padding, explicit = _convert_padding(padding)
            return _out("Conv2DBackpropInput", [output_shape, filter, value],
                        {"strides": strides, "padding": padding,
                         "explicit_paddings": explicit, "data_format": data_format,
                         "dilations": dilations}, name=scope)


def _pool(op_type, default, value, ksize, strides, padding, data_format, name, input):
    value = _lookup(value, input, "value", "input")
    with name_scope(name, default, [value]) as scope:
        if data_format is None:
            data_format = "NHWC"
        if data_format not in ("NHWC", "NCHW"):
            raise ValueError(f"{op_type}: `data_format` must be 'NHWC' or 'NCHW', got "
                             f"{data_format!r}")
        ci = 1 if data_format.startswith("NC") else 3
        ksize = _get_sequence(ksize, 2, ci, "ksize")
        strides = _get_sequence(strides, 2, ci, "strides")
        attrs = {"ksize": ksize, "strides": strides, "data_format": data_format}
        if op_type == "MaxPool":
            padding, explicit = _convert_padding(padding)
            if any(v == 0 for v in ksize):
                raise ValueError(f"`ksize` cannot be zero. Received: ksize={ksize}")
            attrs["explicit_paddings"] = explicit
        elif padding not in ("SAME", "VALID"):
            raise ValueError(f"avg_pool: `padding` must be 'SAME' or 'VALID', got {padding!r}")
        attrs["padding"] = padding
        return _out(op_type, [value], attrs, name=scope)


def max_pool(value, ksize, strides, padding, data_format="NHWC", name=None,
             input=None):  # noqa: A002
    return _pool("MaxPool", "MaxPool", value, ksize, strides, padding, data_format, name, input)


def avg_pool(value, ksize, strides, padding, data_format="NHWC", name=None,
             input=None):  # noqa: A002
    return _pool("AvgPool", "AvgPool", value, ksize, strides, padding, data_format, name, input)


def _with_space_to_batch(input, dilation_rate, padding, op, filter_shape=None,  # noqa: A002
                         data_format=None, num_batch_dims=1):
    """TensorFlow's ``_WithSpaceToBatch`` (``nn_ops.with_space_to_batch``): ``op(input,
    padding)`` itself when every rate is 1, else ``op`` with VALID padding between a
    SpaceToBatchND and a BatchToSpaceND whose paddings and crops are Consts (computed, as
    TensorFlow computes them, from the static spatial shape). A rate above 1 on an input whose
    spatial dims are unknown when building (TensorFlow's dynamic ``required_space_to_batch_
    paddings`` subgraph) raises NotImplementedError."""
    rate_t = convert_to_tensor(dilation_rate, dtypes.int32, name="dilation_rate")
    if rate_t.shape.rank not in (None, 1):
        raise ValueError(f"`dilation_rate.shape.rank` must be 1. Received: "
                         f"dilation_rate={dilation_rate} of rank {rate_t.shape.rank}")
    if not rate_t.shape.is_fully_defined():
        raise ValueError(f"`dilation_rate.shape` must be fully defined. Received: "
                         f"dilation_rate={dilation_rate} with shape {rate_t.shape}")
    m = int(rate_t.shape[0])
    start = num_batch_dims + 1 if data_format is not None and \
        data_format.startswith("NC") else num_batch_dims
    spatial_dims = list(range(start, start + m))
    in_shape = input.shape
    if in_shape.rank is not None and in_shape.rank < spatial_dims[-1]:
        raise ValueError(f"`input.shape.rank` must be at least {spatial_dims[-1]}. Received: "
                         f"input.shape={in_shape} with rank {in_shape.rank}")
    rate = si.constant_value(rate_t)
    if rate is None:
        raise NotImplementedError("a dilation rate that is not a constant is not supported "
                                  "by mgrt's building API")
    rate = np.asarray(rate)
    if np.any(rate < 1):
        raise ValueError(f"`dilation_rate` must be positive. Received: dilation_rate={rate}")
    if np.all(rate == 1):
        return op(input, padding)
    padding, explicit = _convert_padding(padding)
    if padding == "SAME":
        if filter_shape is None:
            raise ValueError("`filter_shape` must be specified for `padding='SAME'`. "
                             f"Received: filter_shape={filter_shape} and padding={padding}")
        if isinstance(filter_shape, tensor_shape.TensorShape):
            fs = filter_shape.as_list() if filter_shape.is_fully_defined() else None
            if fs is not None:
                convert_to_tensor(fs, dtypes.int32, name="filter_shape")
        else:
            fs = si.constant_value(filter_shape)
        if fs is None:
            raise NotImplementedError("depthwise/dilated convolution: a filter of unknown "
                                      "static shape with padding 'SAME' is not supported by "
                                      "mgrt's building API")
        extra = (np.asarray(fs[:m]) - 1) * rate
        lo = extra // 2
        base = convert_to_tensor(np.stack([[lo[i], extra[i] - lo[i]] for i in range(m)])
                                 .astype(np.int32), dtypes.int32, name="stack")
        base_v = si.constant_value(base)
    elif padding == "VALID":
        base = base_v = np.zeros([m, 2], np.int32)
    else:
        pads = np.array(explicit).reshape([m + 2, 2])
        base = base_v = pads[2:] if data_format is not None and \
            data_format.startswith("NC") else pads[1:-1]
    dims = in_shape.as_list() if in_shape.rank is not None else None
    spatial = None if dims is None else [dims[i] for i in spatial_dims]
    if spatial is None or None in spatial:
        raise NotImplementedError("a dilation rate above 1 on an input whose spatial "
                                  "dimensions are not known when building (TensorFlow's "
                                  "dynamic SpaceToBatchND paddings) is not supported by "
                                  "mgrt's building API")
    with name_scope(None, "required_space_to_batch_paddings", [spatial, rate_t]):
        convert_to_tensor(spatial, dtypes.int32, name="input_shape")
        if not isinstance(base, Tensor):
            convert_to_tensor(np.asarray(base, np.int32), dtypes.int32, name="base_paddings")
        base_v = np.asarray(base_v, np.int64)
        pad_start, pad_end0 = base_v[:, 0], base_v[:, 1]
        full = np.asarray(spatial) + pad_start + pad_end0
        extra_end = (rate - full % rate) % rate
        pad_end = pad_end0 + extra_end
        paddings = np.array([[pad_start[i], pad_end[i]] for i in range(m)], np.int32)
        crops = np.array([[0, extra_end[i]] for i in range(m)], np.int32)
        convert_to_tensor(paddings, dtypes.int32, name="paddings")
        convert_to_tensor(crops, dtypes.int32, name="crops")

    def adjust(orig, fill):
        parts, prev = [], 0
        if spatial_dims[0] > 1:
            parts.append(np.full([spatial_dims[0] - 1 - prev] + list(orig.shape[1:]), fill,
                                 orig.dtype))
        parts.append(orig)
        return np.concatenate(parts)

    block = adjust(rate.astype(np.int32), 1)
    converted = _out("SpaceToBatchND", [input, block, adjust(paddings, 0)])
    result = op(converted, "VALID")
    out = _out("BatchToSpaceND", [result, block, adjust(crops, 0)])
    return out


def depthwise_conv2d(input, filter, strides, padding, rate=None, name=None,  # noqa: A002
                     data_format=None, dilations=None):
    """``tf.nn.depthwise_conv2d``: DepthwiseConv2dNative, between SpaceToBatchND and
    BatchToSpaceND when ``rate`` is above 1 (as TensorFlow builds it)."""
    rate = _lookup(rate, dilations, "rate", "dilations")
    with name_scope(name, "depthwise", [input, filter]) as scope:
        input = convert_to_tensor(input, name="tensor_in")  # noqa: A001
        filter = convert_to_tensor(filter, name="filter_in")  # noqa: A001
        if rate is None:
            rate = [1, 1]

        def op(x, pad):
            return depthwise_conv2d_native(x, filter, strides, pad, data_format=data_format,
                                           name=scope)

        return _with_space_to_batch(input, rate, padding, op, filter_shape=_shape(filter),
                                    data_format=data_format)


def separable_conv2d(input, depthwise_filter, pointwise_filter, strides, padding,  # noqa: A002
                     rate=None, name=None, data_format=None, dilations=None):
    """``tf.nn.separable_conv2d``: a depthwise convolution (``<name>/depthwise``, dilated
    through SpaceToBatchND/BatchToSpaceND when ``rate`` is above 1) then a 1x1 Conv2D named
    after the scope."""
    rate = _lookup(rate, dilations, "rate", "dilations")
    with name_scope(name, "separable_conv2d",
                    [input, depthwise_filter, pointwise_filter]) as scope:
        input = convert_to_tensor(input, name="tensor_in")  # noqa: A001
        depthwise_filter = convert_to_tensor(depthwise_filter, name="depthwise_filter")
        pointwise_filter = convert_to_tensor(pointwise_filter, name="pointwise_filter")
        pws = pointwise_filter.shape
        if pws.rank is not None and pws.rank != 4:
            raise ValueError(f"Shape must be rank 4 but is rank {pws.rank}")
        if pws.rank == 4:
            for i in (0, 1):
                d = tensor_shape.dimension_value(pws[i])
                if d is not None and d != 1:
                    raise ValueError(f"Dimensions {d} and 1 are not compatible")
        if rate is None:
            rate = [1, 1]

        def op(x, pad):
            return depthwise_conv2d_native(x, depthwise_filter, strides, pad,
                                           data_format=data_format, name="depthwise")

        depthwise = _with_space_to_batch(input, rate, padding, op,
                                         filter_shape=_shape(depthwise_filter),
                                         data_format=data_format)
        return conv2d(depthwise, pointwise_filter, [1, 1, 1, 1], padding="VALID",
                      data_format=data_format, name=scope)


def atrous_conv2d(value, filters, rate, padding, name=None):
    """``tf.nn.atrous_conv2d``: ``nn.convolution`` with ``dilation_rate=rate``: a Conv2D named
    ``convolution`` (rate 1), or SpaceToBatchND, Conv2D and BatchToSpaceND."""
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"`padding` must be one of 'SAME' or 'VALID'. Received: "
                         f"padding={padding}")
    rates = [int(r) for r in np.broadcast_to(rate, (2,))]
    return _convolution(value, filters, padding, dilation_rate=rates, name=name)


def _convolution(input, filters, padding, strides=None, dilation_rate=None,  # noqa: A002
                 name=None, data_format=None):
    """TensorFlow's ``convolution_internal`` for 2-D convolutions."""
    if not isinstance(filters, Tensor):
        with name_scope("convolution_internal", None, [filters, input]):
            filters = convert_to_tensor(filters, name="filters")
    if not isinstance(input, Tensor):
        with name_scope("convolution_internal", None, [filters, input]):
            input = convert_to_tensor(input, name="input")  # noqa: A001
    ci = 1 if data_format is not None and data_format.startswith("NC") else 3
    dilations = _get_sequence(dilation_rate, 2, ci, "dilations")
    dilated = dilation_rate is not None and any(d != 1 for d in dilations)
    strides = _get_sequence(strides, 2, ci, "strides")
    with name_scope(name, None if name else "convolution", [input, filters]) as scope:
        if not dilated:
            padding_, explicit = _convert_padding(padding)
            return _out("Conv2D", [input, filters],
                        {"strides": strides, "padding": padding_, "use_cudnn_on_gpu": True,
                         "explicit_paddings": explicit,
                         "data_format": data_format or "NHWC", "dilations": dilations},
                        name=scope)
        sp_strides = strides[2:] if ci == 1 else strides[1:-1]
        sp_dil = dilations[2:] if ci == 1 else dilations[1:-1]
        if any(s != 1 for s in sp_strides):
            raise ValueError(f"`strides > 1` not supported in conjunction with "
                             f"`dilation_rate > 1`. Received: strides={sp_strides} and "
                             f"dilation_rate={sp_dil}")

        def op(x, pad):
            padding_, explicit = _convert_padding(pad)
            return _out("Conv2D", [x, filters],
                        {"strides": [1, 1, 1, 1], "padding": padding_,
                         "use_cudnn_on_gpu": True, "explicit_paddings": explicit,
                         "data_format": data_format or "NHWC", "dilations": [1, 1, 1, 1]},
                        name=scope)

        return _with_space_to_batch(input, sp_dil, padding, op, filter_shape=filters.shape,
                                    data_format=data_format)


def max_pool_with_argmax(input, ksize, strides, padding, data_format="NHWC",  # noqa: A002
                         Targmax=None, name=None, output_dtype=None,  # noqa: N803
                         include_batch_in_index=False):
    """``tf.compat.v1.nn.max_pool_with_argmax``: the MaxPoolWithArgmax op, returning
    ``(output, argmax)``."""
    if data_format != "NHWC":
        raise ValueError("`data_format` values other  than 'NHWC' are not supported. "
                         f"Received: data_format={data_format}")
    targmax = _lookup(Targmax, output_dtype, "Targmax", "output_dtype")
    if targmax is None:
        targmax = dtypes.int64
    op = _op("MaxPoolWithArgmax", [input],
             {"ksize": list(ksize), "strides": list(strides), "padding": padding,
              "Targmax": dtypes.as_dtype(targmax),
              "include_batch_in_index": bool(include_batch_in_index)}, name=name)
    return MaxPoolWithArgmax(op.outputs[0], op.outputs[1])


MaxPoolWithArgmax = collections.namedtuple("MaxPoolWithArgmax", ["output", "argmax"])


def weighted_cross_entropy_with_logits(labels=None, logits=None, pos_weight=None, name=None,
                                       targets=None):
    """``tf.nn.weighted_cross_entropy_with_logits`` (TF1 ``targets`` accepted)."""
    labels = _lookup(labels, targets, "labels", "targets")
    with name_scope(name, "logistic_loss", [logits, labels]) as scope:
        logits = convert_to_tensor(logits, name="logits")
        labels = convert_to_tensor(labels, name="labels")
        if not labels.shape.is_compatible_with(logits.shape):
            raise ValueError("`logits` and `labels` must have the same shape, received "
                             f"({logits.shape} vs {labels.shape}).")
        log_weight = 1 + (pos_weight - 1) * labels
        return _add((1 - labels) * logits,
                    log_weight * (_out("Log1p", [_out("Exp", [-_out("Abs", [logits])])]) +
                                  relu(-logits)), name=scope)


# =============================================================================================
# Dropout
# =============================================================================================
def _get_noise_shape(x, noise_shape):
    if noise_shape is None:
        return _shape(x)
    if isinstance(noise_shape, Tensor):
        return noise_shape
    try:
        ns = tensor_shape.as_shape(noise_shape)
    except (TypeError, ValueError):
        return noise_shape
    if x.shape.rank is not None and x.shape.rank == ns.rank:
        dims = []
        for d, n in zip(x.shape.dims, ns.dims):
            dv, nv = tensor_shape.dimension_value(d), tensor_shape.dimension_value(n)
            dims.append(dv if nv is None and dv is not None else nv)
        return tensor_shape.TensorShape(dims)
    return noise_shape


def _random_uniform(shape, dtype, seed):
    try:
        from mgrt.runtime.api import random_ops
    except ImportError:  # pragma: no cover  (engineer C's module is part of the package)
        random_ops = None
    if random_ops is not None and hasattr(random_ops, "random_uniform"):
        return random_ops.random_uniform(shape, dtype=dtype, seed=seed)
    with name_scope(None, "random_uniform", [shape]) as scope:
        if isinstance(shape, tensor_shape.TensorShape):
            shape = shape.as_list()
        if not isinstance(shape, Tensor):
            shape = convert_to_tensor(shape, dtype=dtypes.int32, name="shape")
        s1, s2 = random_ops.get_seed(seed) if random_ops is not None else (None, None)
        out = _out("RandomUniform", [shape], {"dtype": dtype, "seed": s1 or 0,
                                              "seed2": s2 or 0})
        del scope
        return out


def dropout(x, keep_prob=None, noise_shape=None, seed=None, name=None, rate=None):
    """TF1's ``tf.nn.dropout``: ``keep_prob`` (or ``rate``); kept values scaled by
    ``1 / keep_prob``; the mask from ``RandomUniform >= rate``."""
    try:
        rate_from_keep_prob = 1. - keep_prob if keep_prob is not None else None
    except TypeError:
        raise ValueError("`keep_prob` must be a floating point number or Tensor. "
                         f"Received: keep_prob={keep_prob}") from None
    rate = _lookup(rate_from_keep_prob, rate, "keep_prob", "rate")
    if rate is None:
        raise ValueError(f"`rate` must be provided. Received: rate={rate}")
    with name_scope(name, "dropout", [x]) as scope:
        is_number = isinstance(rate, numbers.Real) and not isinstance(rate, bool)
        if is_number and (rate < 0 or rate >= 1):
            raise ValueError("`rate` must be a scalar tensor or a float in the range [0, 1). "
                             f"Received: rate={rate}")
        x = convert_to_tensor(x, name="x")
        xdt = x.dtype.base_dtype
        if not xdt.is_floating:
            raise ValueError("`x.dtype` must be a floating point tensor as `x` will be scaled. "
                             f"Received: x_dtype={xdt.name}")
        if is_number and rate == 0:
            try:
                from mgrt.runtime.api import random_ops

                random_ops.get_seed(seed)
            except (ImportError, AttributeError):  # pragma: no cover
                pass
            return x
        if not isinstance(rate, Tensor):
            if not is_number:
                raise ValueError(f"`rate` must be a scalar or scalar tensor. Received: "
                                 f"rate={rate}")
            scale = convert_to_tensor(1 / (1 - rate), dtype=xdt)
            ret = _mul(x, scale)
        else:
            rate.shape.with_rank(0)
            if rate.dtype.base_dtype != xdt:
                if not rate.dtype.base_dtype.is_floating:
                    raise ValueError("`x.dtype` must be compatible with `rate.dtype`. Received: "
                                     f"x.dtype={xdt.name} and rate.dtype="
                                     f"{rate.dtype.base_dtype.name}")
                rate = _out("Cast", [rate], {"DstT": xdt, "Truncate": False}, name="rate")
            one = constant(1, dtype=xdt)
            ret = _out("RealDiv", [x, _sub(one, rate)])
        ns = _get_noise_shape(x, noise_shape)
        random_tensor = _random_uniform(ns, xdt, seed)
        keep_mask = _out("GreaterEqual", [random_tensor, rate])
        zero = constant(0, dtype=xdt)
        ret = _out("SelectV2", [keep_mask, ret, zero])
        ret.set_shape(x.shape)
        del scope
        return ret


# =============================================================================================
# Normalization
# =============================================================================================
def moments(x, axes, shift=None, name=None, keep_dims=None, keepdims=None):
    keep_dims = _lookup(keep_dims, keepdims, "keep_dims", "keepdims")
    if keep_dims is None:
        keep_dims = False
    with name_scope(name, "moments", [x, axes]):
        x = convert_to_tensor(x)
        y = _cast(x, dtypes.float32) if x.dtype.base_dtype == dtypes.float16 else x
        mean = _reduce_mean(y, axes, keepdims=True, name="mean")
        variance = _reduce_mean(_out("SquaredDifference", [y, _stop_gradient(mean)]), axes,
                                keepdims=True, name="variance")
        if not keep_dims:
            mean = _squeeze(mean, axes)
            variance = _squeeze(variance, axes)
        if x.dtype.base_dtype == dtypes.float16:
            return _cast(mean, dtypes.float16), _cast(variance, dtypes.float16)
        return mean, variance


def batch_normalization(x, mean, variance, offset, scale, variance_epsilon, name=None):
    with name_scope(name, "batchnorm", [x, mean, variance, scale, offset]):
        x = convert_to_tensor(x)
        inv = _out("Rsqrt", [convert_to_tensor(variance) + variance_epsilon])
        if scale is not None:
            inv *= scale
        first = x * _cast(inv, x.dtype.base_dtype)
        mean = convert_to_tensor(mean)
        second = (offset - mean * inv) if offset is not None else -mean * inv
        return first + _cast(second, x.dtype.base_dtype)


def fused_batch_norm(x, scale, offset, mean=None, variance=None, epsilon=0.001,
                     data_format="NHWC", is_training=True, name=None,
                     exponential_avg_factor=1.0):
    """``tf.nn.fused_batch_norm``: FusedBatchNormV3; returns ``(y, mean, variance)`` (batch
    statistics when training, the given ones otherwise)."""
    if (not is_training or exponential_avg_factor != 1.0) and (mean is None or
                                                               variance is None):
        raise ValueError("Both `mean` and `variance` must be a 1D tensor when `is_training` is "
                         "False or `exponential_avg_factor` != 1.0. Received: `mean` "
                         f"{mean!r} and `variance` {variance!r}")
    if data_format not in ("NHWC", "NCHW"):
        raise ValueError(f"fused_batch_norm: `data_format` must be 'NHWC' or 'NCHW', got "
                         f"{data_format!r}")
    x = convert_to_tensor(x, name="input")
    scale = convert_to_tensor(scale, name="scale")
    offset = convert_to_tensor(offset, name="offset")
    if mean is None:
        mean = constant([])
    if variance is None:
        variance = constant([])
    op = _op("FusedBatchNormV3", [x, scale, offset, mean, variance],
             {"epsilon": float(epsilon), "exponential_avg_factor": float(exponential_avg_factor),
              "data_format": data_format, "is_training": bool(is_training)}, name=name)
    return op.outputs[0], op.outputs[1], op.outputs[2]


def l2_normalize(x, axis=None, epsilon=1e-12, name=None, dim=None):
    axis = _lookup(dim, axis, "dim", "axis")
    with name_scope(name, "l2_normalize", [x]) as scope:
        x = convert_to_tensor(x, name="x")
        if x.dtype.base_dtype.is_complex:
            raise TypeError("l2_normalize of complex tensors is not supported by mgrt")
        square_sum = _reduce_sum(_out("Square", [x]), axis, keepdims=True)
        inv = _out("Rsqrt", [_out("Maximum", [square_sum, epsilon])])
        return _mul(x, inv, name=scope)


def lrn(input, depth_radius=5, bias=1, alpha=1, beta=0.5, name=None):  # noqa: A002
    return _out("LRN", [input], {"depth_radius": int(depth_radius), "bias": float(bias),
                                 "alpha": float(alpha), "beta": float(beta)}, name=name)


local_response_normalization = lrn


# =============================================================================================
# Losses and classification
# =============================================================================================
def _ensure_xent_args(name, labels, logits):
    if labels is None or logits is None:
        raise ValueError(f"Both `labels` and `logits` must be provided for {name}. Received: "
                         f"labels={labels} and logits={logits}")


def l2_loss(t, name=None):
    return _out("L2Loss", [t], name=name)


def sparse_softmax_cross_entropy_with_logits(labels=None, logits=None, name=None):
    _ensure_xent_args("sparse_softmax_cross_entropy_with_logits", labels, logits)
    with name_scope(name, "SparseSoftmaxCrossEntropyWithLogits", [labels, logits]):
        labels = convert_to_tensor(labels)
        logits = convert_to_tensor(logits)
        precise = _cast(logits, dtypes.float32) if logits.dtype.base_dtype == \
            dtypes.float16 else logits
        ls = labels.shape
        lgs = logits.shape
        labels_shape = _shape(labels)
        fully = ls.is_fully_defined() and lgs.rank is not None and \
            lgs[:-1].is_fully_defined()
        if lgs.rank == 0:
            raise ValueError(f"`logits` cannot be a scalar. Received logits={logits}`")
        if lgs.rank is not None and ls.rank is not None and ls.rank != lgs.rank - 1:
            raise ValueError("`labels.shape.rank` must equal `logits.shape.rank - 1`. Received: "
                             f"labels.shape={ls} of rank {ls.rank} and logits.shape={lgs} of "
                             f"rank {lgs.rank}")
        if fully and ls != lgs[:-1]:
            raise ValueError("`labels.shape` must equal `logits.shape` except for the last "
                             f"dimension. Received: labels.shape={ls} and logits.shape={lgs}")
        if lgs.rank == 2:
            cost = _op("SparseSoftmaxCrossEntropyWithLogits", [precise, labels],
                       name=name).outputs[0]
            if logits.dtype.base_dtype == dtypes.float16:
                return _cast(cost, dtypes.float16)
            return cost
        # Where the static shapes are not fully defined TensorFlow also adds a runtime
        # assert_equal(shape(labels), shape(logits)[:-1]); mgrt does not build it (the kernel
        # still rejects labels whose batch does not match the logits).
        # num_classes = shape(logits)[rank(logits) - 1], as TensorFlow slices it
        shp = _shape(logits)
        last = _rank(logits) - 1
        end = last + 1
        with name_scope(None, "strided_slice", [shp]) as ss:
            begin_t = _out("Pack", [[last]], {"axis": 0}, name="stack")
            end_t = _out("Pack", [[end]], {"axis": 0}, name="stack")
            strides_t = constant([1], dtypes.int32, name="stack")
            num_classes = _out("StridedSlice", [shp, begin_t, end_t, strides_t],
                               {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0,
                                "new_axis_mask": 0, "shrink_axis_mask": 1}, name=ss)
        with name_scope(None, "Reshape", [precise]) as rs:
            with name_scope(None, "shape") as pack_scope:
                minus_one = constant(-1, dtypes.int32, name="0")
                new_shape = _out("Pack", [[minus_one, num_classes]], {"axis": 0},
                                 name=pack_scope)
            precise = _reshape(precise, new_shape, name=rs)
        labels = _reshape(labels, [-1])
        cost = _op("SparseSoftmaxCrossEntropyWithLogits", [precise, labels],
                   name=name).outputs[0]
        cost = _reshape(cost, labels_shape)
        cost.set_shape(ls)
        if logits.dtype.base_dtype == dtypes.float16:
            return _cast(cost, dtypes.float16)
        return cost


def _flatten_outer_dims(logits):
    rank = _rank(logits)
    last = _out("Slice", [_shape(logits), [_sub(rank, 1)], [1]])
    out = _reshape(logits, _concat([[-1], last], 0))
    s = logits.shape
    if s.rank is not None:
        dims = s.as_list()
        product = 1
        for d in dims[:-1]:
            if d is None:
                product = None
                break
            product *= d
        if product is not None:
            out.set_shape([product, dims[-1]])
    return out


def softmax_cross_entropy_with_logits_v2(labels, logits, axis=None, name=None, dim=None):
    axis = _lookup(dim, axis, "dim", "axis")
    if axis is None:
        axis = -1
    _ensure_xent_args("softmax_cross_entropy_with_logits", labels, logits)
    with name_scope(name, "softmax_cross_entropy_with_logits", [logits, labels]) as scope:
        logits = convert_to_tensor(logits, name="logits")
        labels = convert_to_tensor(labels, name="labels")
        to_f32 = logits.dtype.base_dtype in (dtypes.float16, dtypes.bfloat16)
        precise = _cast(logits, dtypes.float32) if to_f32 else logits
        labels = _cast(labels, precise.dtype.base_dtype)
        input_rank = _rank(precise)
        shape = logits.shape
        if axis != -1:
            if shape.rank is None:
                raise ValueError("softmax_cross_entropy_with_logits over an axis other than -1 "
                                 "needs logits of known rank")

            def move_dim_to_end(t, dim_index, rank):
                return _transpose(t, _concat([_range(dim_index), _range(dim_index + 1, rank),
                                              [dim_index]], 0))

            precise = move_dim_to_end(precise, axis, input_rank)
            labels = move_dim_to_end(labels, axis, input_rank)
        input_shape = _shape(precise)
        precise = _flatten_outer_dims(precise)
        labels = _flatten_outer_dims(labels)
        cost = _op("SoftmaxCrossEntropyWithLogits", [precise, labels], name=scope).outputs[0]
        output_shape = _out("Slice", [input_shape, [0], [_sub(input_rank, 1)]])
        cost = _reshape(cost, output_shape)
        if shape.rank is not None:
            dims = shape.as_list()
            del dims[axis]
            cost.set_shape(dims)
        if to_f32:
            return _cast(cost, logits.dtype.base_dtype)
        return cost


def softmax_cross_entropy_with_logits(labels=None, logits=None, dim=-1, name=None, axis=None):
    """TF1's deprecated form: like ``_v2`` but no gradient flows into ``labels``
    (``labels_stop_gradient``); the scope is ``softmax_cross_entropy_with_logits_sg``."""
    dim = _lookup(dim if dim != -1 else None, axis, "dim", "axis")
    if dim is None:
        dim = -1
    _ensure_xent_args("softmax_cross_entropy_with_logits", labels, logits)
    with name_scope(name, "softmax_cross_entropy_with_logits_sg", [logits, labels]) as scope:
        labels = _stop_gradient(labels, name="labels_stop_gradient")
    return softmax_cross_entropy_with_logits_v2(labels=labels, logits=logits, axis=dim,
                                                name=scope)


def sigmoid_cross_entropy_with_logits(labels=None, logits=None, name=None):
    _ensure_xent_args("sigmoid_cross_entropy_with_logits", labels, logits)
    with name_scope(name, "logistic_loss", [logits, labels]) as scope:
        logits = convert_to_tensor(logits, name="logits")
        labels = convert_to_tensor(labels, name="labels")
        if not labels.shape.is_compatible_with(logits.shape):
            raise ValueError("`logits` and `labels` must have the same shape, received "
                             f"({logits.shape} vs {labels.shape}).")
        if labels.dtype.base_dtype != logits.dtype.base_dtype:
            raise TypeError(f"sigmoid_cross_entropy_with_logits: `labels` ({labels.dtype.name}) "
                            f"and `logits` ({logits.dtype.name}) must have the same dtype")
        zeros = _zeros_like(logits, dtype=logits.dtype.base_dtype)
        cond = _out("GreaterEqual", [logits, zeros])
        relu_logits = _select(cond, logits, zeros)
        neg_abs = _select(cond, -logits, logits)
        return _add(relu_logits - logits * labels,
                    _out("Log1p", [_out("Exp", [neg_abs])]), name=scope)


def in_top_k(predictions, targets, k, name=None):
    with name_scope(name, "in_top_k"):
        return _out("InTopKV2", [predictions, targets, k], name=name)


TopKV2 = collections.namedtuple("TopKV2", ["values", "indices"])


def top_k(input, k=1, sorted=True, index_type=dtypes.int32, name=None):  # noqa: A002
    op = _op("TopKV2", [input, k], {"sorted": bool(sorted), "index_type": index_type},
             name=name)
    return TopKV2(op.outputs[0], op.outputs[1])


def xw_plus_b(x, weights, biases, name=None):
    with name_scope(name, "xw_plus_b", [x, weights, biases]) as scope:
        x = convert_to_tensor(x, name="x")
        weights = convert_to_tensor(weights, name="weights")
        biases = convert_to_tensor(biases, name="biases")
        return bias_add(_matmul(x, weights), biases, name=scope)


def relu_layer(x, weights, biases, name=None):
    with name_scope(name, "relu_layer", [x, weights, biases]) as scope:
        x = convert_to_tensor(x, name="x")
        weights = convert_to_tensor(weights, name="weights")
        biases = convert_to_tensor(biases, name="biases")
        return relu(bias_add(_matmul(x, weights), biases), name=scope)


# =============================================================================================
# Shape functions
# =============================================================================================
def _shape_error(op, msg):
    return ValueError(f"Shapes of node {op.name!r} ({op.type}) are inconsistent: {msg}")


def _dim(d):
    return tensor_shape.dimension_value(d)


def _attr(op, name, default=None):
    try:
        v = op.get_attr(name)
    except (ValueError, KeyError):
        return default
    return v.decode() if isinstance(v, bytes) else v


def _with_rank(op, shape, rank, what):
    if shape.rank is not None and shape.rank != rank:
        raise _shape_error(op, f"{what} must be rank {rank} but is rank {shape.rank} "
                               f"(shape {shape})")
    return shape if shape.rank is not None else tensor_shape.unknown_shape(rank=rank)


def _window_out(op, size, k, s, d, padding, pads):
    if size is None or k is None:
        return None
    eff = (k - 1) * d + 1
    if padding == "VALID":
        out = (size - eff) // s + 1 if size >= eff else None
        if out is None:
            raise _shape_error(op, f"computed output size would be negative: input {size}, "
                                   f"window {eff}, padding VALID")
        return out
    if padding == "SAME":
        return -(-size // s)
    out = (size + pads[0] + pads[1] - eff) // s + 1
    if out < 0:
        raise _shape_error(op, f"computed output size would be negative: input {size}, "
                               f"window {eff}, paddings {pads}")
    return out


def _spatial(op, in_shape, ksizes, strides, dilations, fmt, padding, explicit):
    """(batch, [spatial out], channel index) for a 4-D NHWC/NCHW window op."""
    hw = (1, 2) if fmt == "NHWC" else (2, 3)
    outs = []
    for j, i in enumerate(hw):
        pads = (explicit[2 * i], explicit[2 * i + 1]) if explicit else (0, 0)
        outs.append(_window_out(op, _dim(in_shape[i]), ksizes[j], strides[i], dilations[i],
                                padding, pads))
    return outs


def _assemble(fmt, n, hw, c):
    return [n, hw[0], hw[1], c] if fmt == "NHWC" else [n, c, hw[0], hw[1]]


@si.register("Conv2D", "DepthwiseConv2dNative")
def _conv2d_shape(op):
    x = _with_rank(op, op.inputs[0].shape, 4, "input")
    f = _with_rank(op, op.inputs[1].shape, 4, "filter")
    fmt = _attr(op, "data_format", "NHWC")
    strides = _attr(op, "strides")
    dil = _attr(op, "dilations", [1, 1, 1, 1]) or [1, 1, 1, 1]
    padding = _attr(op, "padding")
    explicit = _attr(op, "explicit_paddings", []) or []
    if len(strides) != 4:
        raise _shape_error(op, f"Conv2D requires the stride attribute to contain 4 values, "
                               f"but got: {len(strides)}")
    ci = 3 if fmt == "NHWC" else 1
    in_depth = _dim(x[ci]) if x.rank else None
    f_in = _dim(f[2]) if f.rank else None
    f_out = _dim(f[3]) if f.rank else None
    if op.type == "Conv2D":
        if in_depth is not None and f_in is not None and f_in and in_depth % f_in != 0:
            raise _shape_error(op, f"Depth of input ({in_depth}) is not a multiple of input "
                                   f"depth of filter ({f_in})")
        out_c = f_out
    else:
        if in_depth is not None and f_in is not None and in_depth != f_in:
            raise _shape_error(op, f"Dimensions must be equal, but are {in_depth} and {f_in} "
                                   f"(input depth and filter in_channels)")
        out_c = None if (f_in is None and in_depth is None) or f_out is None else \
            (in_depth if in_depth is not None else f_in) * f_out
    if x.rank is None:
        return [tensor_shape.TensorShape(_assemble(fmt, None, [None, None], out_c))]
    ks = [_dim(f[0]), _dim(f[1])]
    hw = _spatial(op, x, ks, strides, dil, fmt, padding, explicit)
    return [tensor_shape.TensorShape(_assemble(fmt, _dim(x[0]), hw, out_c))]


@si.register("MaxPool", "AvgPool")
def _pool_shape(op):
    x = _with_rank(op, op.inputs[0].shape, 4, "input")
    fmt = _attr(op, "data_format", "NHWC")
    ksize = _attr(op, "ksize")
    strides = _attr(op, "strides")
    padding = _attr(op, "padding")
    explicit = _attr(op, "explicit_paddings", []) or []
    if len(ksize) != 4 or len(strides) != 4:
        raise _shape_error(op, "ksize and strides must have 4 values")
    if x.rank is None:
        return None
    hw_i = (1, 2) if fmt == "NHWC" else (2, 3)
    ks = [ksize[i] for i in hw_i]
    hw = _spatial(op, x, ks, strides, [1, 1, 1, 1], fmt, padding, explicit)
    ci = 3 if fmt == "NHWC" else 1
    return [tensor_shape.TensorShape(_assemble(fmt, _dim(x[0]), hw, _dim(x[ci])))]


@si.register("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
def _fused_bn_shape(op):
    x = _with_rank(op, op.inputs[0].shape, 4, "x")
    fmt = _attr(op, "data_format", "NHWC")
    ci = 3 if fmt == "NHWC" else 1
    c = _dim(x[ci]) if x.rank else None
    for k in (1, 2):
        v = _with_rank(op, op.inputs[k].shape, 1, ("scale", "offset")[k - 1])
        vc = _dim(v[0]) if v.rank else None
        if c is not None and vc is not None and vc != c:
            raise _shape_error(op, f"Dimensions must be equal, but are {c} and {vc} (channels "
                                   f"of x and {('scale', 'offset')[k - 1]})")
        c = c if c is not None else vc
    vec = tensor_shape.TensorShape([c])
    out = [x, vec, vec, vec, vec]
    if op.type == "FusedBatchNormV3":
        out.append(tensor_shape.unknown_shape())
    return out


@si.register("SoftmaxCrossEntropyWithLogits")
def _softmax_xent_shape(op):
    a, b = op.inputs[0].shape, op.inputs[1].shape
    if a.rank is None or b.rank is None:
        return [tensor_shape.unknown_shape(rank=1), tensor_shape.unknown_shape(rank=2)]
    a = _with_rank(op, a, 2, "logits")
    b = _with_rank(op, b, 2, "labels")
    from mgrt.runtime.api.math_ops import broadcast_shape

    try:
        s = broadcast_shape(a, b)
    except ValueError as e:
        raise _shape_error(op, f"logits and labels must be broadcastable: {e}") from None
    return [tensor_shape.TensorShape([s[0]]), s]


@si.register("SparseSoftmaxCrossEntropyWithLogits")
def _sparse_xent_shape(op):
    f = _with_rank(op, op.inputs[0].shape, 2, "logits")
    l_ = _with_rank(op, op.inputs[1].shape, 1, "labels")
    b = f[0]
    if l_.rank is not None:
        lb = _dim(l_[0])
        if _dim(b) is not None and lb is not None and _dim(b) != lb:
            raise _shape_error(op, f"Dimensions must be equal, but are {_dim(b)} and {lb} "
                                   f"(batch of logits and labels)")
        if _dim(b) is None:
            b = l_[0]
    return [tensor_shape.TensorShape([b]), tensor_shape.TensorShape([b, f[1]])]


@si.register("L2Loss")
def _scalar_shape(op):
    return [tensor_shape.TensorShape([])]


@si.register("InTopK", "InTopKV2")
def _in_top_k_shape(op):
    p = _with_rank(op, op.inputs[0].shape, 2, "predictions")
    t = _with_rank(op, op.inputs[1].shape, 1, "targets")
    b = p[0]
    if _dim(b) is None:
        b = t[0]
    elif _dim(t[0]) is not None and _dim(t[0]) != _dim(b):
        raise _shape_error(op, f"Dimensions must be equal, but are {_dim(b)} and "
                               f"{_dim(t[0])} (batch of predictions and targets)")
    return [tensor_shape.TensorShape([b])]


@si.register("TopKV2", "TopK")
def _top_k_shape(op):
    x = op.inputs[0].shape
    if op.type == "TopK":
        k = _attr(op, "k")
    else:
        kv = si.constant_value(op.inputs[1])
        k = None if kv is None else int(kv)
    if x.rank is None:
        return None
    if x.rank < 1:
        raise _shape_error(op, f"input must be at least rank 1 but is rank {x.rank}")
    n = _dim(x[-1])
    if k is not None and k < 0:
        raise _shape_error(op, f"'k' input must be non-negative, got {k}")
    if k is not None and n is not None and n < k:
        raise _shape_error(op, f"input must have at least k columns. Had {n}, needed {k}")
    s = x[:-1].concatenate([k])
    return [s, s]


@si.register("LRN")
def _lrn_shape(op):
    return [_with_rank(op, op.inputs[0].shape, 4, "input")]


for _n in _NN_NAMES:
    assert _n in globals(), _n
del _n
