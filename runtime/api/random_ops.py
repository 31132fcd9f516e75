"""Random building functions (``tf.random_normal``, ``tf.truncated_normal``,
``tf.random_uniform``, ``tf.random_shuffle``, ``tf.multinomial``, ``tf.random_gamma``) and the
graph-level seed (``tf.set_random_seed``, ``tf.get_seed``), with TensorFlow's node names, attrs
and seed rules.

Seeds follow TensorFlow's ``random_seed.get_seed``: with a graph seed and no op seed, the op seed
is a per-graph counter (0, 1, 2... in the order random ops are built); with an op seed and no
graph seed, the graph seed is ``DEFAULT_GRAPH_SEED`` (87654321); seeds are taken modulo
``2**31 - 1``; ``(0, 0)`` becomes ``(0, 2**31 - 1)`` since the kernels read ``(0, 0)`` as "not
seeded". mgrt's CPU kernels for RandomUniform, RandomUniformInt, RandomStandardNormal and
TruncatedNormal draw TensorFlow's Philox numbers, so a seeded graph gives TensorFlow's values.
"""

import weakref

import numpy as np

from mgrt.runtime import dtypes, tensor_shape
from mgrt.runtime import graph as graph_lib
from mgrt.runtime import shape_inference as si
from mgrt.runtime.graph import Tensor
from mgrt.runtime.ops import apply_op, convert_to_tensor, name_scope

__all__ = ["random_normal", "truncated_normal", "random_uniform", "random_shuffle",
           "multinomial", "random_gamma", "set_random_seed", "get_seed",
           "random"]

DEFAULT_GRAPH_SEED = 87654321
_MAXINT32 = 2 ** 31 - 1
_graph_to_seed_dict = weakref.WeakKeyDictionary()


def _truncate_seed(seed):
    return int(seed) % _MAXINT32


def set_random_seed(seed):
    """``tf.set_random_seed``: the graph-level seed of the default graph."""
    graph_lib.get_default_graph().seed = seed


def get_seed(op_seed):
    """``tf.get_seed``: the ``(seed, seed2)`` attrs an op with seed ``op_seed`` gets in the
    default graph, by TensorFlow's rules; ``(None, None)`` when neither seed is set."""
    g = graph_lib.get_default_graph()
    global_seed = g.seed
    if global_seed is not None:
        if op_seed is None:
            op_seed = _graph_to_seed_dict.setdefault(g, 0)
            _graph_to_seed_dict[g] += 1
        seeds = _truncate_seed(global_seed), _truncate_seed(op_seed)
    elif op_seed is not None:
        seeds = DEFAULT_GRAPH_SEED, _truncate_seed(op_seed)
    else:
        seeds = None, None
    if seeds == (0, 0):
        return 0, _MAXINT32
    return seeds


def _seed_attrs(seed):
    s1, s2 = get_seed(seed)
    return {"seed": s1 or 0, "seed2": s2 or 0}


def _shape_tensor(shape):
    """TensorFlow's ``shape_util.shape_tensor``: an int32 (int64 if needed) Const named
    ``shape``; a tensor as it is."""
    if isinstance(shape, Tensor) or hasattr(shape, "_as_graph_element") or \
            hasattr(shape, "_dense_var_to_tensor"):
        t = convert_to_tensor(shape)
        if t.dtype.base_dtype not in (dtypes.int32, dtypes.int64):
            raise TypeError(f"shape must be an int32 or int64 tensor, got {t.dtype.name}: {t}")
        return t
    dtype = None
    if isinstance(shape, tensor_shape.TensorShape):
        if not shape.is_fully_defined():
            raise ValueError(f"Cannot convert a partially known TensorShape {shape} to a "
                             f"Tensor")
        shape = shape.as_list()
    if isinstance(shape, (tuple, list)):
        if not shape:
            dtype = dtypes.int32
        else:
            shape = [tensor_shape.dimension_value(d) if not isinstance(d, Tensor) else d
                     for d in shape]
            if any(d is None for d in shape):
                raise ValueError(f"Cannot convert a partially known shape {shape} to a Tensor")
    t = convert_to_tensor(shape, dtype=dtype, name="shape")
    if t.dtype.base_dtype not in (dtypes.int32, dtypes.int64):
        raise TypeError(f"Value passed to parameter 'shape' has DataType {t.dtype.name} not in "
                        f"list of allowed values: int32, int64")
    return t


def _check_shape_rank(shape_t, op_name, op_type):
    rank = shape_t.shape.rank
    if rank is not None and rank != 1:
        raise ValueError(f"Shape must be rank 1 but is rank {rank} for '{op_name}' (op: "
                         f"'{op_type}') with input shapes: {shape_t.shape}.")


def _float_dtype(dtype, op):
    dtype = dtypes.as_dtype(dtype)
    if dtype.base_dtype not in (dtypes.float16, dtypes.bfloat16, dtypes.float32,
                                dtypes.float64):
        raise ValueError(f"{op}: dtype must be a floating point type (half, bfloat16, float32 "
                         f"or float64), got {dtype.name}")
    return dtype.base_dtype


def _scaled(op_type, shape, mean, stddev, dtype, seed, name, default_name):
    dtype = _float_dtype(dtype, default_name)
    with name_scope(name, default_name, [shape, mean, stddev]) as scope:
        shape_t = _shape_tensor(shape)
        mean_t = convert_to_tensor(mean, dtype=dtype, name="mean")
        stddev_t = convert_to_tensor(stddev, dtype=dtype, name="stddev")
        _check_shape_rank(shape_t, scope + op_type, op_type)
        attrs = _seed_attrs(seed)
        attrs["dtype"] = dtype
        rnd = apply_op(op_type, [shape_t], attrs, name=op_type).outputs[0]
        mul = apply_op("Mul", [rnd, stddev_t], name="mul").outputs[0]
        return apply_op("AddV2", [mul, mean_t], name=scope).outputs[0]


def random_normal(shape, mean=0.0, stddev=1.0, dtype=dtypes.float32, seed=None, name=None):
    """``tf.random_normal``: ``RandomStandardNormal * stddev + mean`` (nodes
    ``random_normal/RandomStandardNormal``, ``random_normal/mul``, ``random_normal``)."""
    return _scaled("RandomStandardNormal", shape, mean, stddev, dtype, seed, name,
                   "random_normal")


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=dtypes.float32, seed=None, name=None):
    """``tf.truncated_normal``: normal values more than 2 standard deviations from the mean
    dropped and re-drawn (``truncated_normal/TruncatedNormal`` scaled and shifted)."""
    return _scaled("TruncatedNormal", shape, mean, stddev, dtype, seed, name,
                   "truncated_normal")


def random_uniform(shape, minval=0, maxval=None, dtype=dtypes.float32, seed=None, name=None):
    """``tf.random_uniform``: floats in ``[minval, maxval)`` (``RandomUniform``; Python
    ``minval=0, maxval=1`` builds no arithmetic), or integers (``RandomUniformInt``, which
    needs ``maxval``)."""
    dtype = dtypes.as_dtype(dtype).base_dtype
    accepted = (dtypes.float16, dtypes.bfloat16, dtypes.float32, dtypes.float64, dtypes.int32,
                dtypes.int64)
    if dtype not in accepted:
        raise ValueError(f"Argument `dtype` got invalid value {dtype.name}. Accepted dtypes "
                         f"are {', '.join(d.name for d in accepted)}.")
    if maxval is None:
        if dtype.is_integer:
            raise ValueError(f"Must specify maxval for integer dtype {dtype.name!r}")
        maxval = 1
    with name_scope(name, "random_uniform", [shape, minval, maxval]) as scope:
        shape_t = _shape_tensor(shape)
        minval_is_zero = isinstance(minval, int) and not isinstance(minval, bool) and minval == 0
        maxval_is_one = isinstance(maxval, int) and not isinstance(maxval, bool) and maxval == 1
        if not minval_is_zero or not maxval_is_one or dtype.is_integer:
            minval = convert_to_tensor(minval, dtype=dtype, name="min")
            maxval = convert_to_tensor(maxval, dtype=dtype, name="max")
        _check_shape_rank(shape_t, scope[:-1] if dtype.is_integer else scope + "RandomUniform",
                          "RandomUniformInt" if dtype.is_integer else "RandomUniform")
        attrs = _seed_attrs(seed)
        if dtype.is_integer:
            return apply_op("RandomUniformInt", [shape_t, minval, maxval], attrs,
                            name=scope).outputs[0]
        attrs["dtype"] = dtype
        result = apply_op("RandomUniform", [shape_t], attrs, name="RandomUniform").outputs[0]
        if minval_is_zero:
            if not maxval_is_one:
                result = apply_op("Mul", [result, maxval], name="Mul").outputs[0]
            return result
        diff = apply_op("Sub", [maxval, minval], name="sub").outputs[0]
        mul = apply_op("Mul", [result, diff], name="mul").outputs[0]
        return apply_op("AddV2", [mul, minval], name=scope).outputs[0]


def random_shuffle(value, seed=None, name=None):
    """``tf.random_shuffle``: ``value`` shuffled along its first dimension."""
    attrs = _seed_attrs(seed)
    with name_scope(name, "RandomShuffle", [value]) as scope:
        value = convert_to_tensor(value, name="value")
        return apply_op("RandomShuffle", [value], attrs, name=scope).outputs[0]


def _multinomial_impl(logits, num_samples, dtype, seed):
    logits = convert_to_tensor(logits, name="logits")
    dtype = dtypes.as_dtype(dtype).base_dtype if dtype else dtypes.int64
    if dtype not in (dtypes.int32, dtypes.int64):
        raise ValueError(f"Argument `dtype` got invalid value {dtype.name}. Accepted dtypes "
                         f"are int32, int64.")
    if logits.shape.rank is not None and logits.shape.rank != 2:
        raise ValueError(f"Shape must be rank 2 but is rank {logits.shape.rank} for "
                         f"'Multinomial' (op: 'Multinomial') with input shapes: "
                         f"{logits.shape}: logits must be [batch_size, num_classes].")
    attrs = _seed_attrs(seed)
    attrs["output_dtype"] = dtype
    with name_scope(None, "Multinomial", [logits, num_samples]) as scope:
        num_samples = convert_to_tensor(num_samples, dtype=dtypes.int32, name="num_samples")
        return apply_op("Multinomial", [logits, num_samples], attrs, name=scope).outputs[0]


def multinomial(logits, num_samples, seed=None, name=None, output_dtype=None):
    """``tf.multinomial``: ``num_samples`` class indices per row of ``logits`` [batch,
    classes] (``multinomial/Multinomial``)."""
    with name_scope(name, "multinomial", [logits]):
        return _multinomial_impl(logits, num_samples, output_dtype, seed)


def categorical(logits, num_samples, dtype=None, seed=None, name=None):
    """``tf.random.categorical``: ``multinomial`` named ``categorical``."""
    with name_scope(name, "categorical", [logits]):
        return _multinomial_impl(logits, num_samples, dtype, seed)


def random_gamma(shape, alpha, beta=None, dtype=dtypes.float32, seed=None, name=None):
    """``tf.random_gamma``: builds TensorFlow's nodes (``random_gamma/RandomGamma`` divided by
    ``beta``, clipped at the dtype's tiny). mgrt has no CPU kernel for RandomGamma yet: the
    graph runs in TensorFlow, not in mgrt."""
    dtype = _float_dtype(dtype, "random_gamma")
    with name_scope(name, "random_gamma", [shape, alpha, beta]):
        shape = convert_to_tensor(shape, name="shape", dtype=dtypes.int32)
        alpha = convert_to_tensor(alpha, name="alpha", dtype=dtype)
        beta = convert_to_tensor(beta if beta is not None else 1, name="beta", dtype=dtype)
        s_alpha = _shape_of(alpha, "Shape")
        s_beta = _shape_of(beta, "Shape")
        bshape = apply_op("BroadcastArgs", [s_alpha, s_beta], name="BroadcastArgs").outputs[0]
        alpha_b = apply_op("BroadcastTo", [alpha, bshape], name="BroadcastTo").outputs[0]
        attrs = _seed_attrs(seed)
        g = apply_op("RandomGamma", [shape, alpha_b], attrs, name="RandomGamma").outputs[0]
        q = apply_op("RealDiv", [g, beta], name="truediv").outputs[0]
        with name_scope(None, "Maximum", [q]) as mscope:
            tiny = convert_to_tensor(np.finfo(dtype.as_numpy_dtype).tiny, dtype=dtype,
                                     name="x")
            return apply_op("Maximum", [tiny, q], name=mscope).outputs[0]


def _shape_of(t, name):
    """``tf.shape`` as TensorFlow builds it for a statically known shape: a Const."""
    if t.shape.is_fully_defined():
        return convert_to_tensor(np.array(t.shape.as_list(), dtype=np.int32), name=name)
    return apply_op("Shape", [t], {"out_type": dtypes.int32}, name=name).outputs[0]


class _RandomNamespace:
    """``tf.random`` (TF1 names): ``tf.random.normal``, ``tf.random.uniform``..."""

    normal = staticmethod(random_normal)
    truncated_normal = staticmethod(truncated_normal)
    uniform = staticmethod(random_uniform)
    shuffle = staticmethod(random_shuffle)
    multinomial = staticmethod(multinomial)
    categorical = staticmethod(categorical)
    gamma = staticmethod(random_gamma)
    set_random_seed = staticmethod(set_random_seed)
    get_seed = staticmethod(get_seed)


random = _RandomNamespace()


# --- shape functions --------------------------------------------------------------------------
@si.register("RandomUniform", "RandomStandardNormal", "TruncatedNormal", "RandomUniformInt",
             "ParameterizedTruncatedNormal")
def _shape_from_shape_input(op):
    return [si.constant_value_as_shape(op.inputs[0])]


@si.register("RandomShuffle")
def _random_shuffle_shape(op):
    return [op.inputs[0].shape]


@si.register("Multinomial")
def _multinomial_shape(op):
    logits = op.inputs[0].shape
    if logits.rank is not None and logits.rank != 2:
        raise ValueError(f"Shape must be rank 2 but is rank {logits.rank} for "
                         f"'{op.name}' (op: 'Multinomial') with input shapes: {logits}.")
    batch = logits[0] if logits.rank == 2 else None
    n = si.constant_value(op.inputs[1])
    return [tensor_shape.TensorShape([tensor_shape.dimension_value(batch),
                                      None if n is None else int(n)])]


@si.register("RandomGamma")
def _random_gamma_shape(op):
    return [si.constant_value_as_shape(op.inputs[0]).concatenate(op.inputs[1].shape)]
