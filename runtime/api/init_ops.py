"""TF1 initializers (``tf.zeros_initializer``, ``tf.glorot_uniform_initializer``,
``tf.variance_scaling_initializer``... and the ``tf.initializers`` namespace).

An initializer is an object called as ``init(shape, dtype=None, partition_info=None)`` that
builds the nodes of the initial value, with TensorFlow's names: inside ``tf.get_variable`` they
land under ``<var>/Initializer/`` (``w/Initializer/random_uniform/RandomUniform``...).
"""

import math

import numpy as np

from mgrt.runtime import dtypes, tensor_shape
from mgrt.runtime import variables as _variables
from mgrt.runtime.graph import Tensor
from mgrt.runtime.ops import apply_op, constant, name_scope
from mgrt.runtime.api import random_ops

__all__ = ["zeros_initializer", "ones_initializer", "constant_initializer",
           "random_normal_initializer", "truncated_normal_initializer",
           "random_uniform_initializer", "uniform_unit_scaling_initializer",
           "variance_scaling_initializer", "glorot_uniform_initializer",
           "glorot_normal_initializer", "initializers"]


# --- helpers: TensorFlow's array_ops.zeros / ones for a static shape -------------------------
def _as_shape_list(shape):
    if isinstance(shape, tensor_shape.TensorShape):
        if not shape.is_fully_defined():
            raise ValueError(f"Cannot build an initial value of partially known shape {shape}")
        return shape.as_list()
    if isinstance(shape, (int, np.integer)):
        return [int(shape)]
    if isinstance(shape, Tensor):
        raise TypeError("initializers here take a static shape (a list of ints or a "
                        "TensorShape), not a Tensor")
    out = []
    for d in shape:
        d = tensor_shape.dimension_value(d)
        if d is None:
            raise ValueError(f"Cannot build an initial value of partially known shape {shape}")
        out.append(int(d))
    return out


def _filled(value, shape, dtype, default_name):
    """``tf.zeros``/``tf.ones`` of a static shape: a Const named ``zeros`` under 1000 elements,
    else ``Fill(zeros/shape_as_tensor, zeros/Const)``, as TensorFlow builds them."""
    dtype = dtypes.as_dtype(dtype).base_dtype
    shape = _as_shape_list(shape)
    if dtype == dtypes.bool:
        value = bool(value)
    elif dtype == dtypes.string:
        value = "" if value == 0 else value
    with name_scope(None, default_name, []) as scope:
        if int(np.prod(shape, dtype=np.int64)) < 1000:
            return constant(value, dtype=dtype, shape=shape, name=scope)
        sdt = np.int64 if any(d >= 2 ** 31 for d in shape) else np.int32
        shape_t = constant(np.array(shape, dtype=sdt), name="shape_as_tensor")
        fill_value = constant(value, dtype=dtype, name="Const")
        out = apply_op("Fill", [shape_t, fill_value], name=scope).outputs[0]
        out._shape = out.shape.merge_with(tensor_shape.TensorShape(shape))
        return out


def _assert_float_dtype(dtype):
    dtype = dtypes.as_dtype(dtype)
    if not dtype.is_floating:
        raise ValueError(f"Argument `dtype` is expected to be floating point. Received: "
                         f"{dtype!r}.")
    return dtype


def _compute_fans(shape):
    """TensorFlow's fans: [in, out] for a matrix; for a conv kernel [..., in, out] times the
    receptive field size."""
    shape = list(shape)
    if len(shape) < 1:
        fan_in = fan_out = 1
    elif len(shape) == 1:
        fan_in = fan_out = shape[0]
    elif len(shape) == 2:
        fan_in, fan_out = shape
    else:
        receptive = 1
        for d in shape[:-2]:
            receptive *= d
        fan_in = shape[-2] * receptive
        fan_out = shape[-1] * receptive
    return int(fan_in), int(fan_out)


# --- the initializer classes ------------------------------------------------------------------
class Initializer:
    """Base of the TF1 initializers: ``init(shape, dtype=None, partition_info=None)``."""

    def __call__(self, shape, dtype=None, partition_info=None):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    """``tf.zeros_initializer``: all zeros (``Initializer/zeros``)."""

    def __init__(self, dtype=dtypes.float32):
        self.dtype = dtypes.as_dtype(dtype)

    def __call__(self, shape, dtype=None, partition_info=None):
        return _filled(0, shape, dtype or self.dtype, "zeros")

    def get_config(self):
        return {"dtype": self.dtype.name}


class Ones(Initializer):
    """``tf.ones_initializer``: all ones (``Initializer/ones``)."""

    def __init__(self, dtype=dtypes.float32):
        self.dtype = dtypes.as_dtype(dtype)

    def __call__(self, shape, dtype=None, partition_info=None):
        return _filled(1, shape, dtype or self.dtype, "ones")

    def get_config(self):
        return {"dtype": self.dtype.name}


class Constant(Initializer):
    """``tf.constant_initializer(value)``: a Const of ``value`` (a scalar is broadcast; a list
    with as many elements as the shape is reshaped; fewer elements are padded with the last,
    as ``tf.constant`` does in TF1)."""

    def __init__(self, value=0, dtype=dtypes.float32, verify_shape=False):
        if not (np.isscalar(value) or isinstance(value, (list, tuple, np.ndarray))):
            raise TypeError(f"Invalid type for initial value={value} of type: "
                            f"{type(value).__name__}. Expected Python scalar, list or tuple of "
                            f"values, or numpy.ndarray.")
        self.value = value
        self.dtype = dtypes.as_dtype(dtype)
        self._verify_shape = verify_shape

    def __call__(self, shape, dtype=None, partition_info=None, verify_shape=None):
        dtype = dtypes.as_dtype(dtype or self.dtype)
        if verify_shape is None:
            verify_shape = self._verify_shape
        shape = _as_shape_list(shape)
        value = np.asarray(self.value)
        if verify_shape and list(value.shape) != shape:
            raise TypeError(f"Expected Tensor's shape: {tuple(shape)}, but got "
                            f"{tuple(value.shape)}.")
        n = int(np.prod(shape, dtype=np.int64))
        if value.ndim > 0 and value.size != n:
            flat = value.reshape(-1)
            if flat.size > n:
                raise ValueError(f"Too many elements provided. Takes at most {n}, but got "
                                 f"{flat.size}.")
            if flat.size == 0:
                raise ValueError(f"No values to fill a tensor of shape {shape}")
            # TF1's constant: fewer values than elements are padded with the last value
            value = np.concatenate([flat, np.repeat(flat[-1:], n - flat.size)])
        if value.ndim > 0:
            value = value.reshape(shape)
        return constant(value, dtype=dtype, shape=shape, name="Const")

    def get_config(self):
        return {"value": self.value, "dtype": self.dtype.name}


class RandomUniform(Initializer):
    """``tf.random_uniform_initializer(minval=0, maxval=None)`` (floats in [0, 1) by
    default)."""

    def __init__(self, minval=0.0, maxval=None, seed=None, dtype=dtypes.float32):
        self.minval = minval
        self.maxval = maxval
        self.seed = seed
        self.dtype = dtypes.as_dtype(dtype)

    def __call__(self, shape, dtype=None, partition_info=None):
        return random_ops.random_uniform(_as_shape_list(shape), self.minval, self.maxval,
                                         dtype or self.dtype, seed=self.seed)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed,
                "dtype": self.dtype.name}


class _Normal(Initializer):
    """The (mean, stddev) initializers; ``_sample`` is the random op that draws them."""

    def __init__(self, mean=0.0, stddev=1.0, seed=None, dtype=dtypes.float32):
        self.mean = mean
        self.stddev = stddev
        self.seed = seed
        self.dtype = _assert_float_dtype(dtype)

    def __call__(self, shape, dtype=None, partition_info=None):
        return self._sample(_as_shape_list(shape), self.mean, self.stddev,
                            dtype or self.dtype, seed=self.seed)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed,
                "dtype": self.dtype.name}


class RandomNormal(_Normal):
    """``tf.random_normal_initializer(mean=0.0, stddev=1.0)``."""

    _sample = staticmethod(random_ops.random_normal)


class TruncatedNormal(_Normal):
    """``tf.truncated_normal_initializer(mean=0.0, stddev=1.0)``."""

    _sample = staticmethod(random_ops.truncated_normal)


class UniformUnitScaling(Initializer):
    """``tf.uniform_unit_scaling_initializer(factor=1.0)`` (deprecated in TensorFlow):
    uniform in ``±sqrt(3 / input_size) * factor``."""

    def __init__(self, factor=1.0, seed=None, dtype=dtypes.float32):
        self.factor = factor
        self.seed = seed
        self.dtype = _assert_float_dtype(dtype)

    def __call__(self, shape, dtype=None, partition_info=None):
        shape = _as_shape_list(shape)
        scale_shape = partition_info.full_shape if partition_info is not None else shape
        input_size = 1.0
        for d in scale_shape[:-1]:
            input_size *= float(d)
        input_size = max(input_size, 1.0)
        max_val = math.sqrt(3 / input_size) * self.factor
        return random_ops.random_uniform(shape, -max_val, max_val, dtype or self.dtype,
                                         seed=self.seed)

    def get_config(self):
        return {"factor": self.factor, "seed": self.seed, "dtype": self.dtype.name}


# the standard deviation of a unit normal truncated to [-2, 2]: dividing by it keeps the
# variance of a truncated_normal draw at ``scale``
_TRUNCATED_STDDEV = .87962566103423978


class VarianceScaling(Initializer):
    """``tf.variance_scaling_initializer(scale=1.0, mode="fan_in",
    distribution="truncated_normal")``: variance ``scale / n`` with ``n`` the fan in, the fan
    out or their mean; "truncated_normal" (alias "normal") divides the standard deviation by
    0.8796... so that the truncated draw keeps that variance; "untruncated_normal"; "uniform"
    in ``±sqrt(3 * scale / n)``."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None,
                 dtype=dtypes.float32):
        if scale <= 0.:
            raise ValueError(f"Argument `scale` must be a positive float. Received: {scale}")
        if mode not in {"fan_in", "fan_out", "fan_avg"}:
            raise ValueError(f"Argument `mode` should be one of ('fan_in', 'fan_out', "
                             f"'fan_avg'). Received: {mode}")
        distribution = str(distribution).lower()
        if distribution not in {"normal", "uniform", "truncated_normal", "untruncated_normal"}:
            raise ValueError(f"Argument `distribution` should be one of ('normal', 'uniform', "
                             f"'truncated_normal', 'untruncated_normal'). Received: "
                             f"{distribution}")
        self.scale = scale
        self.mode = mode
        self.distribution = distribution
        self.seed = seed
        self.dtype = _assert_float_dtype(dtype)

    def __call__(self, shape, dtype=None, partition_info=None):
        shape = _as_shape_list(shape)
        dtype = dtype or self.dtype
        scale = self.scale
        scale_shape = partition_info.full_shape if partition_info is not None else shape
        fan_in, fan_out = _compute_fans(scale_shape)
        if self.mode == "fan_in":
            scale /= max(1., fan_in)
        elif self.mode == "fan_out":
            scale /= max(1., fan_out)
        else:
            scale /= max(1., (fan_in + fan_out) / 2.)
        if self.distribution in ("normal", "truncated_normal"):
            stddev = math.sqrt(scale) / _TRUNCATED_STDDEV
            return random_ops.truncated_normal(shape, 0.0, stddev, dtype, seed=self.seed)
        if self.distribution == "untruncated_normal":
            return random_ops.random_normal(shape, 0.0, math.sqrt(scale), dtype,
                                            seed=self.seed)
        limit = math.sqrt(3.0 * scale)
        return random_ops.random_uniform(shape, -limit, limit, dtype, seed=self.seed)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed, "dtype": self.dtype.name}


class GlorotUniform(VarianceScaling):
    """``tf.glorot_uniform_initializer``: uniform in ``±sqrt(6 / (fan_in + fan_out))`` (the
    default initializer of ``tf.get_variable`` for floats)."""

    def __init__(self, seed=None, dtype=dtypes.float32):
        super().__init__(scale=1.0, mode="fan_avg", distribution="uniform", seed=seed,
                         dtype=dtype)

    def get_config(self):
        return {"seed": self.seed, "dtype": self.dtype.name}


class GlorotNormal(VarianceScaling):
    """``tf.glorot_normal_initializer``: truncated normal with variance
    ``2 / (fan_in + fan_out)``."""

    def __init__(self, seed=None, dtype=dtypes.float32):
        super().__init__(scale=1.0, mode="fan_avg", distribution="truncated_normal", seed=seed,
                         dtype=dtype)

    def get_config(self):
        return {"seed": self.seed, "dtype": self.dtype.name}


def lecun_normal(seed=None):
    return VarianceScaling(scale=1., mode="fan_in", distribution="truncated_normal", seed=seed)


def lecun_uniform(seed=None):
    return VarianceScaling(scale=1., mode="fan_in", distribution="uniform", seed=seed)


def he_normal(seed=None):
    return VarianceScaling(scale=2., mode="fan_in", distribution="truncated_normal", seed=seed)


def he_uniform(seed=None):
    return VarianceScaling(scale=2., mode="fan_in", distribution="uniform", seed=seed)


zeros_initializer = Zeros
ones_initializer = Ones
constant_initializer = Constant
random_uniform_initializer = RandomUniform
random_normal_initializer = RandomNormal
truncated_normal_initializer = TruncatedNormal
uniform_unit_scaling_initializer = UniformUnitScaling
variance_scaling_initializer = VarianceScaling
glorot_uniform_initializer = GlorotUniform
glorot_normal_initializer = GlorotNormal


class _InitializersNamespace:
    """``tf.initializers``: the initializer classes under their short names, and
    ``tf.initializers.global_variables()`` / ``local_variables()`` / ``variables(var_list)``."""

    Initializer = Initializer
    zeros = Zeros
    ones = Ones
    constant = Constant
    random_uniform = RandomUniform
    random_normal = RandomNormal
    truncated_normal = TruncatedNormal
    uniform_unit_scaling = UniformUnitScaling
    variance_scaling = VarianceScaling
    glorot_uniform = GlorotUniform
    glorot_normal = GlorotNormal
    lecun_normal = staticmethod(lecun_normal)
    lecun_uniform = staticmethod(lecun_uniform)
    he_normal = staticmethod(he_normal)
    he_uniform = staticmethod(he_uniform)
    global_variables = staticmethod(_variables.global_variables_initializer)
    local_variables = staticmethod(_variables.local_variables_initializer)
    variables = staticmethod(_variables.variables_initializer)

    def __repr__(self):
        return "<module 'tf.initializers' (mgrt)>"


initializers = _InitializersNamespace()
