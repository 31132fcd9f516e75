"""Static shape inference for ops built with the graph-building API (TensorFlow's C++ shape
functions, the part a Python user sees as ``Tensor.shape``).

A shape function is registered per op type::

    @shape_inference.register("MatMul")
    def _matmul(op):
        a, b = op.inputs[0].shape, op.inputs[1].shape
        ...
        return [TensorShape([m, n])]

It returns one TensorShape (or anything ``as_shape`` takes) per output, or None when it cannot
say more than "unknown". ``infer`` merges the result into the shapes the op already has (from
``_output_shapes`` or attrs), so a function never loses what is known. An inconsistency a shape
function proves (a MatMul of [2, 3] by [4, 5]) raises ValueError naming the node, as
TensorFlow's ``Dimensions must be equal`` does, at build time.

The functions live next to the building functions of their op family (``runtime/api/``), and
those of gradient op types next to the gradient functions (``runtime/gradients/``); all are
loaded on the first inference, so a shape never depends on which module was imported first. ``constant_value`` is TensorFlow's
``tensor_util.constant_value``: the value of a tensor when it is known at build time.
"""

import numpy as np

from mgrt.runtime import tensor_shape

_SHAPE_FNS = {}
_loaded = False


def register(*op_types):
    def deco(fn):
        for t in op_types:
            _SHAPE_FNS[t] = fn
        return fn
    return deco


def _load():
    global _loaded
    if not _loaded:
        _loaded = True
        import mgrt.runtime.api  # noqa: F401  (registers the shape functions)
        from mgrt.runtime import gradients

        gradients._load()  # and those of the gradient op types (ReluGrad, Conv2DBackprop*...)


def has_shape_fn(op_type):
    _load()
    return op_type in _SHAPE_FNS


def infer(op):
    """Set the static shapes of ``op``'s outputs from its shape function, if it has one."""
    if not _loaded:
        _load()
    fn = _SHAPE_FNS.get(op.type)
    if fn is None:
        return
    try:
        shapes = fn(op)
    except ValueError as e:  # a shape function's proof of bad input: TensorFlow's ValueError
        if str(e).startswith("Shapes of node"):
            raise
        raise ValueError(f"Shapes of node {op.name!r} ({op.type}) are inconsistent: {e}") \
            from None
    if shapes is None:
        return
    if len(shapes) != len(op._outputs):
        raise AssertionError(f"shape function of {op.type} returned {len(shapes)} shapes for "
                             f"{len(op._outputs)} outputs")
    for t, s in zip(op._outputs, shapes):
        if s is None:
            continue
        s = tensor_shape.as_shape(s)
        try:
            t._shape = t.shape.merge_with(s)
        except ValueError as e:
            raise ValueError(f"Shapes of node {op.name!r} ({op.type}) are inconsistent: {e}") \
                from None


# --- constant values ------------------------------------------------------------------------
_CONSTANT_FNS = {}


def register_constant(*op_types):
    def deco(fn):
        for t in op_types:
            _CONSTANT_FNS[t] = fn
        return fn
    return deco


def constant_value(tensor, partial=False):
    """The numpy value of ``tensor`` if it is known while building, else None."""
    from mgrt.runtime.graph import Tensor

    if not isinstance(tensor, Tensor):
        return None
    if not _loaded:
        _load()
    op = tensor.op
    if op.type == "Const":
        from mgrt.runtime.tensor_util import MakeNdarray

        return MakeNdarray(op._node_def.attr["value"].tensor)
    fn = _CONSTANT_FNS.get(op.type)
    if fn is None:
        return None
    try:
        return fn(tensor)
    except (ValueError, TypeError, IndexError):
        return None


@register_constant("Identity", "StopGradient", "Snapshot")
def _cv_identity(t):
    return constant_value(t.op.inputs[0])


@register_constant("Shape")
def _cv_shape(t):
    s = t.op.inputs[0].shape
    if s.is_fully_defined():
        return np.array(s.as_list(), dtype=t.dtype.as_numpy_dtype)
    return None


@register_constant("Size")
def _cv_size(t):
    s = t.op.inputs[0].shape
    if s.is_fully_defined():
        return np.array(s.num_elements(), dtype=t.dtype.as_numpy_dtype)
    return None


@register_constant("Rank")
def _cv_rank(t):
    s = t.op.inputs[0].shape
    if s.rank is not None:
        return np.array(s.rank, dtype=np.int32)
    return None


@register_constant("Pack")
def _cv_pack(t):
    vals = [constant_value(x) for x in t.op.inputs]
    if any(v is None for v in vals):
        return None
    return np.stack(vals, axis=t.op.get_attr("axis"))


@register_constant("Cast")
def _cv_cast(t):
    v = constant_value(t.op.inputs[0])
    return None if v is None else v.astype(t.dtype.as_numpy_dtype)


@register_constant("ConcatV2")
def _cv_concat(t):
    vals = [constant_value(x) for x in t.op.inputs]
    if any(v is None for v in vals):
        return None
    return np.concatenate(vals[:-1], axis=int(vals[-1]))


def constant_value_as_shape(tensor):
    """A shape-valued tensor (``tf.reshape``'s ``shape``) as a TensorShape, as far as known:
    TensorFlow's ``constant_value_as_shape`` (``-1`` and unknown elements are unknown dims)."""
    v = constant_value(tensor)
    if v is not None:
        v = np.asarray(v).reshape(-1)
        return tensor_shape.TensorShape([None if d < 0 else int(d) for d in v])
    op = tensor.op
    if op.type == "Shape":
        return op.inputs[0].shape
    if op.type == "Pack":
        dims = []
        for x in op.inputs:
            xv = constant_value(x)
            dims.append(None if xv is None or int(xv) < 0 else int(xv))
        return tensor_shape.TensorShape(dims)
    if op.type == "ConcatV2":
        out = tensor_shape.TensorShape([])
        for x in op.inputs[:-1]:
            out = out.concatenate(constant_value_as_shape(x))
        return out
    s = tensor.shape
    n = tensor_shape.dimension_value(s[0]) if s.rank == 1 else None
    if n is not None:
        return tensor_shape.unknown_shape(rank=n)
    return tensor_shape.unknown_shape()
