"""Array building functions (``tf.placeholder``, ``tf.reshape``, ``tf.concat``, slicing...)."""

from mgrt.runtime import dtypes, tensor_shape
from mgrt.runtime import shape_inference as si
from mgrt.runtime.ops import apply_op, convert_to_tensor, name_scope

__all__ = ["placeholder", "placeholder_with_default", "identity"]


def _out(op_type, inputs, attrs=None, name=None):
    return apply_op(op_type, inputs, attrs, name).outputs[0]


def placeholder(dtype, shape=None, name=None):
    """``tf.placeholder``: a Placeholder (unknown shape when ``shape`` is None)."""
    shape = tensor_shape.unknown_shape() if shape is None else tensor_shape.as_shape(shape)
    return _out("Placeholder", [], {"dtype": dtypes.as_dtype(dtype), "shape": shape},
                name=name or "Placeholder")


def placeholder_with_default(input, shape, name=None):  # noqa: A002  (TensorFlow's name)
    with name_scope(name, "PlaceholderWithDefault", [input]) as scope:
        input = convert_to_tensor(input)
        return _out("PlaceholderWithDefault", [input],
                    {"shape": tensor_shape.as_shape(shape)}, name=scope)


def identity(input, name=None):  # noqa: A002
    return _out("Identity", [input], name=name or "Identity")


@si.register("PlaceholderWithDefault")
def _pwd_shape(op):
    return [tensor_shape.TensorShape(op.get_attr("shape"))]
