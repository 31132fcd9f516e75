"""Array building functions (``tf.placeholder``, ``tf.reshape``, ``tf.concat``, slicing...) and
the static shape functions of the array op family.

Each function builds the nodes TensorFlow's ``tf.compat.v1`` function builds for the same call
(op types, attrs, node names, the Const nodes it makes on the way), so that a graph built here
runs in TensorFlow and names line up with checkpoints. ``Tensor.__getitem__`` (and a Variable's)
is TensorFlow's slice helper: ints, slices with steps, ``...``, ``tf.newaxis`` and scalar integer
tensors become one StridedSlice.
"""

import builtins
import numbers

import numpy as np

from mgrt.runtime import dtypes, tensor_shape
from mgrt.runtime import shape_inference as si
from mgrt.runtime import variables as _variables
from mgrt.runtime.graph import Tensor
from mgrt.runtime.ops import apply_op, constant, convert_to_tensor, name_scope

__all__ = ["diag", "diag_part", "placeholder", "placeholder_with_default", "identity", "reshape", "concat", "stack",
           "unstack", "gather", "gather_nd", "batch_gather", "scatter_nd", "one_hot", "size",
           "shape", "shape_n", "rank", "where", "where_v2", "zeros", "ones", "zeros_like",
           "ones_like", "fill", "transpose", "matrix_transpose", "expand_dims", "squeeze",
           "slice", "strided_slice", "tile", "pad", "split", "broadcast_to", "reverse",
           "reverse_v2", "boolean_mask", "sequence_mask", "stop_gradient", "check_numerics",
           "unique", "invert_permutation", "newaxis", "broadcast_dynamic_shape",
           "broadcast_static_shape", "dynamic_stitch", "unsorted_segment_sum", "parallel_stack",
           "identity_n", "rank_internal", "meshgrid", "dynamic_partition",
           "tensor_scatter_nd_update", "tensor_scatter_nd_add", "tensor_scatter_nd_sub",
           "tensor_scatter_nd_max", "tensor_scatter_nd_min", "tensor_scatter_update",
           "tensor_scatter_add", "tensor_scatter_sub"]

newaxis = None


def _out(op_type, inputs, attrs=None, name=None):
    return apply_op(op_type, inputs, attrs, name).outputs[0]


def _dims(shape):
    """A TensorShape as a list of ints / None, or None for an unknown rank."""
    shape = tensor_shape.as_shape(shape)
    if shape.rank is None:
        return None
    return [tensor_shape.dimension_value(d) for d in shape.dims]


def _shape(dims):
    return tensor_shape.unknown_shape() if dims is None else tensor_shape.TensorShape(dims)


def _cvalue(t):
    """The build-time value of ``t`` (numpy) or None."""
    return si.constant_value(t) if isinstance(t, Tensor) else None


def _cvalue_elements(t):
    """The elements of a 1-D int tensor as a list with None where unknown (a Pack of some
    constants gives the known ones), or None if not even the length is known."""
    v = _cvalue(t)
    if v is not None:
        return [int(x) for x in np.asarray(v).reshape(-1)]
    if t.op.type == "Pack" and t.op.get_attr("axis") == 0:
        out = []
        for x in t.op.inputs:
            xv = _cvalue(x)
            out.append(None if xv is None or np.ndim(xv) != 0 else int(xv))
        return out
    s = t.shape
    if s.rank == 1 and tensor_shape.dimension_value(s[0]) is not None:
        return [None] * tensor_shape.dimension_value(s[0])
    return None


def _check_node(op, cond, msg):
    if not cond:
        raise ValueError(f"{msg}; input shapes: "
                         f"{', '.join(str(t.shape) for t in op.inputs)}.")


def _rank_of(op, t, rank):
    r = t.shape.rank
    _check_node(op, r is None or r == rank, f"Shape must be rank {rank} but is rank {r}")


def _merge_dims(op, dims_list):
    """Merge several dim lists elementwise (ValueError naming the node if incompatible)."""
    out = None
    for d in dims_list:
        if d is None:
            continue
        if out is None:
            out = list(d)
            continue
        _check_node(op, len(out) == len(d), f"Shapes must be equal rank, but are {len(out)} "
                                            f"and {len(d)}")
        for i, (a, b) in enumerate(zip(out, d)):
            _check_node(op, a is None or b is None or a == b,
                        f"Dimension {i} in both shapes must be equal, but are {a} and {b}")
            out[i] = a if a is not None else b
    return out


# --- placeholders and identity ------------------------------------------------------------------
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


def identity_n(input, name=None):  # noqa: A002
    return apply_op("IdentityN", [list(input)], name=name or "IdentityN").outputs


def stop_gradient(input, name=None):  # noqa: A002
    return _out("StopGradient", [input], name=name or "StopGradient")


def check_numerics(tensor, message, name=None):
    return _out("CheckNumerics", [tensor], {"message": message}, name=name or "CheckNumerics")


# --- reshape, shape, size, rank -------------------------------------------------------------------
def reshape(tensor, shape, name=None):  # noqa: F811  (``shape`` is TensorFlow's arg name)
    return _out("Reshape", [tensor, shape], name=name or "Reshape")


def _shape_as_tensor(dims, name="shape_as_tensor"):
    """TensorFlow's conversion of a fully known TensorShape to a Const (int64 if it must)."""
    dt = dtypes.int64 if any(d >= 2 ** 31 for d in dims) else dtypes.int32
    return constant(list(dims), dtype=dt, name=name)


def shape_internal(input, name=None, optimize=True, out_type=None):  # noqa: A002
    with name_scope(name, "Shape", [input]) as name:
        input = convert_to_tensor(input)
        s = input.shape
        if optimize and s.is_fully_defined():
            if out_type is None:
                return _shape_as_tensor(s.as_list())
            return constant(s.as_list(), dtype=out_type, name=name)
        return _out("Shape", [input], {"out_type": dtypes.as_dtype(out_type or dtypes.int32)},
                    name=name)


def shape(input, name=None, out_type=dtypes.int32):  # noqa: A002
    """``tf.shape``: a Const when the static shape is fully known, else a Shape node."""
    return shape_internal(input, name, optimize=True, out_type=out_type or dtypes.int32)


def shape_n(input, out_type=dtypes.int32, name=None):  # noqa: A002
    return apply_op("ShapeN", [list(input)], {"out_type": dtypes.as_dtype(out_type)},
                    name=name or "ShapeN").outputs


def size(input, name=None, out_type=dtypes.int32):  # noqa: A002
    with name_scope(name, "Size", [input]) as name:
        input = convert_to_tensor(input)
        s = input.shape
        if s.is_fully_defined():
            return constant(s.num_elements(), dtype=out_type, name=name)
        if s.rank and any(tensor_shape.dimension_value(d) == 0 for d in s.dims):
            return constant(0, dtype=out_type, name=name)  # a zero dim: empty, as TensorFlow
        return _out("Size", [input], {"out_type": dtypes.as_dtype(out_type)}, name=name)


def rank_internal(input, name=None, optimize=True):  # noqa: A002
    with name_scope(name, "Rank", [input]) as name:
        input = convert_to_tensor(input)
        r = input.shape.rank
        if optimize and r is not None:
            return constant(r, dtype=dtypes.int32, name=name)
        return _out("Rank", [input], name=name)


def rank(input, name=None):  # noqa: A002
    return rank_internal(input, name, optimize=True)


# --- concat, stack, unstack, split ------------------------------------------------------------
def concat(values, axis, name="concat"):
    """``tf.concat``: ConcatV2 (one value: its Identity, as TensorFlow does)."""
    if not isinstance(values, (list, tuple)):
        values = [values]
    if len(values) == 1:
        with name_scope(name):
            ax = convert_to_tensor(axis, name="concat_dim", dtype=dtypes.int32)
            if ax.shape.rank not in (None, 0):
                raise ValueError(f"concat axis must be a scalar, got shape {ax.shape}")
            return identity(values[0], name=name)
    return _out("ConcatV2", [list(values), axis], name=name)


def stack(values, axis=0, name="stack"):
    """``tf.stack`` (TF1 ``tf.pack``): a Pack, or a Const when ``values`` holds no tensor."""
    if axis == 0:
        try:
            return convert_to_tensor(values, name=name)
        except (TypeError, ValueError, NotImplementedError):
            pass
    first = convert_to_tensor(values[0], name=name)
    r = first.shape.rank
    if r is not None:
        n = r + 1
        if axis < -n or axis >= n:
            raise ValueError(f"Argument `axis` = {axis} not in range [{-n}, {n})")
    return _out("Pack", [list(values)], {"axis": axis}, name=name)


pack = stack


def parallel_stack(values, name="parallel_stack"):
    return stack(values, 0, name=name)


def unstack(value, num=None, axis=0, name="unstack"):
    """``tf.unstack``: one Unpack, ``num`` inferred from the static shape."""
    if num is None:
        value = convert_to_tensor(value)
        d = _dims(value.shape)
        if d is not None:
            if axis < -len(d) or axis >= len(d):
                raise ValueError(f"Argument `axis` = {axis} not in range [{-len(d)}, {len(d)})")
            num = d[axis]
        if num is None:
            raise ValueError(f"Cannot infer argument `num` from shape {value.shape}")
    return apply_op("Unpack", [value], {"num": num, "axis": axis}, name=name).outputs


unpack = unstack


def split(value, num_or_size_splits, axis=0, num=None, name="split"):
    """``tf.split``: Split for a number of pieces, SplitV for sizes."""
    if isinstance(num_or_size_splits, (numbers.Integral, tensor_shape.Dimension)):
        n = int(tensor_shape.dimension_value(num_or_size_splits))
        return apply_op("Split", [axis, value], {"num_split": n}, name=name).outputs
    size_splits = convert_to_tensor(num_or_size_splits)
    if size_splits.shape.rank == 0:
        v = _cvalue(size_splits)
        if v is not None:
            return apply_op("Split", [axis, value], {"num_split": int(v)}, name=name).outputs
        raise ValueError("Rank-0 tensors are not supported as the num_or_size_splits argument "
                         "to split. Argument provided: " + repr(num_or_size_splits))
    if num is None:
        d = _dims(size_splits.shape)
        num = d[0] if d else None
        if num is None:
            raise ValueError(f"Cannot infer argument `num` from shape {size_splits.shape}")
    return apply_op("SplitV", [value, size_splits, axis], {"num_split": int(num)},
                    name=name).outputs


# --- gather / scatter ---------------------------------------------------------------------------
def gather(params, indices, validate_indices=None, name=None, axis=None, batch_dims=0):
    """TF1 ``tf.gather``: GatherV2 (ResourceGather named ``Gather`` for a resource variable
    gathered on axis 0)."""
    del validate_indices
    if axis is None:
        axis = batch_dims
    axis_value = _cvalue(axis) if isinstance(axis, Tensor) else axis
    if axis_value is not None and int(np.asarray(axis_value)) == 0 and \
            isinstance(params, _variables.Variable) and getattr(params, "_is_resource", False):
        with name_scope("Gather" if name is None else name) as scope:
            return _out("ResourceGather", [params.handle, indices],
                        {"dtype": params.dtype.base_dtype, "batch_dims": batch_dims}, name=scope)
    return _out("GatherV2", [params, indices, axis], {"batch_dims": batch_dims},
                name=name or "GatherV2")


def gather_nd(params, indices, name=None, batch_dims=0, bad_indices_policy=""):
    """TF1 ``tf.gather_nd``: GatherNd (ResourceGatherNd named ``GatherNd`` for a resource
    variable); with ``batch_dims > 0`` TensorFlow's ``batch_gather_nd`` graph (an index grid of
    the batch positions concatenated to the indices, one GatherNd, a Reshape)."""
    bd = _cvalue(batch_dims) if isinstance(batch_dims, Tensor) else batch_dims
    if bd is not None:
        batch_dims = int(bd)
    policy = {"bad_indices_policy": bad_indices_policy}
    if isinstance(batch_dims, int) and batch_dims == 0:
        if bad_indices_policy not in ("", "DEFAULT"):
            return _out("GatherNd", [params, indices], policy, name=name or "GatherNd")
        if isinstance(params, _variables.Variable) and getattr(params, "_is_resource", False):
            with name_scope("GatherNd" if name is None else name) as scope:
                value = _out("ResourceGatherNd", [params.handle, indices],
                             {"dtype": params.dtype.base_dtype}, name=scope)
            return identity(value)
        return _out("GatherNd", [params, indices], policy, name=name or "GatherNd")
    return _batch_gather_nd(params, indices, batch_dims, name, bad_indices_policy)


def _batch_gather_nd(params, indices, batch_dims, name=None, bad_indices_policy=""):
    """TensorFlow's ``array_ops.batch_gather_nd`` (``batch_dims >= 1``), op for op."""
    with name_scope(name, "BatchGatherND", [params, indices]):
        indices = convert_to_tensor(indices, name="indices")
        params = convert_to_tensor(params, name="params")
        if not isinstance(batch_dims, int):
            raise TypeError(f"Argument `batch_dims` must be an int; got {batch_dims}")
        if batch_dims < 0:
            raise ValueError("tf.gather_nd does not allow negative batch_dims.")
        params_ndims, indices_ndims = params.shape.rank, indices.shape.rank
        if indices_ndims is not None and batch_dims >= indices_ndims:
            raise ValueError(f"Argument `batch_dims` = {batch_dims} must be less than "
                             f"rank(`indices`) = {indices_ndims}")
        if params_ndims is not None and batch_dims >= params_ndims:
            raise ValueError(f"Argument `batch_dims` = {batch_dims} must be less than "
                             f"rank(`params`) = {params_ndims}")
        params_shape = shape(params)
        indices_shape = shape(indices)
        batch_shape = params_shape[:batch_dims]
        batch_size = _out("Prod", [batch_shape, [0]], {"keep_dims": False}, name="Prod")
        index_internal_ndims = rank(indices) - batch_dims - 1
        indices_internal_shape = indices_shape[batch_dims:-1]
        batch_dim_list = unstack(batch_shape, axis=0)
        dim_ranges = []
        for x in batch_dim_list:
            lim = _out("Cast", [x], {"DstT": dtypes.int32, "Truncate": False}, name="Cast")
            r = _out("Range", [0, lim, 1], name="Range")
            dim_ranges.append(_out("Cast", [r], {"DstT": indices.dtype.base_dtype,
                                                 "Truncate": False}, name="Cast"))
        mesh_list = meshgrid(*dim_ranges, indexing="ij") if dim_ranges else []
        flat_list = [reshape(x, shape=(-1,)) for x in mesh_list]
        index_grid = transpose(stack(flat_list, axis=0))
        index_grid_shape = shape(index_grid)
        index_grid = reshape(index_grid, concat(
            [index_grid_shape[:1], ones(index_internal_ndims, dtype=index_grid_shape.dtype),
             index_grid_shape[1:]], axis=0))
        tile_shape = concat(((1,), indices_internal_shape, (1,)), axis=0)
        index_grid = tile(index_grid, multiples=tile_shape)
        flat_shape = concat(([batch_size], indices_shape[batch_dims:]), axis=0)
        flat_indices = reshape(indices, shape=flat_shape)
        indices = concat((index_grid, flat_indices), axis=-1)
        out = _out("GatherNd", [params, indices], {"bad_indices_policy": bad_indices_policy},
                   name="GatherNd")
        out_shape = shape(out)
        return reshape(out, shape=concat((batch_shape, out_shape[1:]), axis=0))


def batch_gather(params, indices, name=None):
    with name_scope(name, "BatchGather", [params, indices]):
        indices = convert_to_tensor(indices, name="indices")
        params = convert_to_tensor(params, name="params")
        if indices.shape.rank is None:
            raise ValueError("batch_gather does not allow indices with unknown shape.")
        return gather(params, indices, batch_dims=indices.shape.rank - 1)


def scatter_nd(indices, updates, shape, name=None):  # noqa: F811
    return _out("ScatterNd", [indices, updates, shape], name=name or "ScatterNd")


def dynamic_stitch(indices, data, name=None):
    return _out("DynamicStitch", [list(indices), list(data)], name=name or "DynamicStitch")


def unsorted_segment_sum(data, segment_ids, num_segments, name=None):
    return _out("UnsortedSegmentSum", [data, segment_ids, num_segments],
                name=name or "UnsortedSegmentSum")


def one_hot(indices, depth, on_value=None, off_value=None, axis=None, dtype=None, name=None):
    """``tf.one_hot``: OneHot, the dtype from ``on_value``/``off_value`` or ``dtype``
    (float32 by default)."""
    with name_scope(name, "one_hot", [indices, depth, on_value, off_value, axis, dtype]) \
            as name:
        on_exists, off_exists = on_value is not None, off_value is not None
        if dtype is not None:
            dtype = dtypes.as_dtype(dtype)
        on_dtype = off_dtype = None
        if on_exists:
            on_value = convert_to_tensor(on_value, dtype_hint=dtype)
            on_dtype = on_value.dtype.base_dtype
        if off_exists:
            off_value = convert_to_tensor(off_value, dtype_hint=dtype)
            off_dtype = off_value.dtype.base_dtype
        if on_exists or off_exists:
            if dtype is not None:
                if on_exists and on_dtype != dtype:
                    raise TypeError(f"dtype {dtype.name} of on_value does not match dtype "
                                    f"parameter {on_dtype.name}")
                if off_exists and off_dtype != dtype:
                    raise TypeError(f"dtype {dtype.name} of off_value does not match dtype "
                                    f"parameter {off_dtype.name}")
            else:
                dtype = on_dtype if on_exists else off_dtype
        elif dtype is None:
            dtype = dtypes.float32
        if not on_exists:
            on_value = convert_to_tensor(1, dtype, name="on_value")
            on_dtype = dtype
        if not off_exists:
            off_value = convert_to_tensor(0, dtype, name="off_value")
            off_dtype = dtype
        if on_dtype != off_dtype:
            raise TypeError(f"dtype {on_dtype.name} of on_value does not match dtype "
                            f"{off_dtype.name} of off_value")
        return _out("OneHot", [indices, depth, on_value, off_value],
                    {"axis": -1 if axis is None else axis}, name=name)


# --- where / select -------------------------------------------------------------------------------
def where(condition, x=None, y=None, name=None):
    """TF1 ``tf.where``: Where (indices of true elements) for one argument, Select (which needs
    ``condition`` of ``x``'s shape or of its first dimension) for three."""
    if x is None and y is None:
        with name_scope(name, "Where", [condition]) as name:
            condition = convert_to_tensor(condition, preferred_dtype=dtypes.bool,
                                          name="condition")
            return _out("Where", [condition], name=name)
    if x is not None and y is not None:
        return _out("Select", [condition, x, y], name=name or "Select")
    raise ValueError("x and y must both be non-None or both be None.")


def where_v2(condition, x=None, y=None, name=None):
    """``tf.where_v2``: Where for one argument, SelectV2 (broadcasting) for three."""
    if x is None and y is None:
        with name_scope(name, "Where", [condition]) as name:
            condition = convert_to_tensor(condition, preferred_dtype=dtypes.bool,
                                          name="condition")
            return _out("Where", [condition], name=name)
    if x is not None and y is not None:
        return _out("SelectV2", [condition, x, y], name=name or "SelectV2")
    raise ValueError("x and y must both be non-None or both be None.")


# --- fill, zeros, ones ------------------------------------------------------------------------------
def fill(dims, value, name=None):
    return _out("Fill", [dims, value], name=name or "Fill")


def _has_tensor(x):
    if isinstance(x, Tensor) or hasattr(x, "_as_graph_element"):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(v) for v in x)
    return False


def _filled(shape, dtype, value, default_name, name):
    dtype = dtypes.as_dtype(dtype).base_dtype
    with name_scope(name, default_name, [shape]) as name:
        if dtype == dtypes.bool:
            v = bool(value)
        elif dtype == dtypes.string:
            v = "" if value == 0 else str(value)
        else:
            v = value
        if not isinstance(shape, Tensor):
            if isinstance(shape, tensor_shape.TensorShape):
                shape = shape.as_list() if shape.rank is not None else shape
            if not _has_tensor(shape):
                try:
                    dims = [int(tensor_shape.dimension_value(d)) for d in
                            (list(shape) if isinstance(shape, (list, tuple)) else
                             list(np.asarray(shape).reshape(-1)) if np.ndim(shape) else
                             [shape])]
                except (TypeError, ValueError) as e:
                    raise TypeError(f"Expected a shape for {default_name}, got {shape!r}: "
                                    f"{e}") from None
                if np.ndim(shape) == 0 and not isinstance(shape, (list, tuple)):
                    dims = [int(shape)]
                if int(np.prod(dims)) < 1000:
                    return constant(v, dtype=dtype, shape=dims, name=name)
                shape = _shape_as_tensor(dims)
            else:
                shape = convert_to_tensor(shape, dtype=dtypes.int32)
        if not shape.shape.rank:
            shape = reshape(shape, [-1])
        return fill(shape, constant(v, dtype=dtype), name=name)


def zeros(shape, dtype=dtypes.float32, name=None):  # noqa: F811
    """``tf.zeros``: a Const when small (< 1000 elements) and static, else a Fill."""
    return _filled(shape, dtype, 0, "zeros", name)


def ones(shape, dtype=dtypes.float32, name=None):  # noqa: F811
    return _filled(shape, dtype, 1, "ones", name)


def zeros_like(tensor, dtype=None, name=None, optimize=True):
    with name_scope(name, "zeros_like", [tensor]) as name:
        if not isinstance(tensor, Tensor):
            tensor = convert_to_tensor(tensor, name="tensor")
        s = tensor.shape
        if optimize and s.is_fully_defined() and tensor.dtype.base_dtype != dtypes.variant:
            return zeros(s.as_list(), dtype=dtype or tensor.dtype.base_dtype, name=name)
        if dtype is not None and dtypes.as_dtype(dtype) != tensor.dtype.base_dtype:
            return zeros(shape_internal(tensor, optimize=optimize), dtype=dtype, name=name)
        return _out("ZerosLike", [tensor], name=name)


def ones_like(tensor, dtype=None, name=None, optimize=True):
    with name_scope(name, "ones_like", [tensor]) as name:
        tensor = convert_to_tensor(tensor, name="tensor")
        s = shape_internal(tensor, optimize=optimize)
        out = ones(s, dtype=dtype or tensor.dtype.base_dtype, name=name)
        out.set_shape(tensor.shape)
        return out


# --- transpose, expand_dims, squeeze ---------------------------------------------------------------
def transpose(a, perm=None, name="transpose", conjugate=False):
    """``tf.transpose`` (``perm`` defaults to the reversed dims)."""
    op_type = "ConjugateTranspose" if conjugate and a.dtype.is_complex else "Transpose"
    with name_scope(name, "transpose", [a]) as name:
        if perm is None:
            a = convert_to_tensor(a, name="a")
            r = a.shape.rank
            if r is not None:
                perm = np.arange(r - 1, -1, -1, dtype=np.int32)
            else:
                perm = _out("Range", [_out("Rank", [a]) - 1, -1, -1])
        return _out(op_type, [a, perm], name=name)


def matrix_transpose(a, name="matrix_transpose", conjugate=False):
    with name_scope(name, values=[a]):
        a = convert_to_tensor(a, name="a")
        r = a.shape.rank
        if r is None:
            raise ValueError("matrix_transpose needs an input of known rank")
        if r < 2:
            raise ValueError(f"Argument `a` should be a (batch) matrix with rank >= 2.  "
                             f"Received `a` = {a} with shape: {a.shape}")
        perm = list(range(r - 2)) + [r - 1, r - 2]
        return transpose(a, perm=perm, conjugate=conjugate)


def expand_dims(input, axis=None, name=None, dim=None):  # noqa: A002
    """TF1 ``tf.expand_dims`` (``dim`` is the deprecated name of ``axis``)."""
    if axis is not None and dim is not None:
        raise ValueError("Cannot specify both 'axis' and 'dim'.")
    if axis is None:
        axis = dim
    if axis is None:
        raise ValueError("Must specify an axis argument to tf.expand_dims()")
    return _out("ExpandDims", [input, axis], name=name or "ExpandDims")


def squeeze(input, axis=None, name=None, squeeze_dims=None):  # noqa: A002
    if axis is not None and squeeze_dims is not None:
        raise ValueError("Cannot specify both 'axis' and 'squeeze_dims'.")
    if axis is None:
        axis = squeeze_dims
    if axis is None:
        axis = []
    elif isinstance(axis, numbers.Integral):
        axis = [axis]
    return _out("Squeeze", [input], {"squeeze_dims": list(axis)}, name=name or "Squeeze")


# --- slicing ------------------------------------------------------------------------------------
def slice(input_, begin, size, name=None):  # noqa: A001,F811  (TensorFlow's name)
    return _out("Slice", [input_, begin, size], name=name or "Slice")


def strided_slice(input_, begin, end, strides=None, begin_mask=0, end_mask=0, ellipsis_mask=0,
                  new_axis_mask=0, shrink_axis_mask=0, var=None, name=None):
    if strides is None:
        strides = ones_like(begin)
    t = _out("StridedSlice", [input_, begin, end, strides],
             {"begin_mask": begin_mask, "end_mask": end_mask, "ellipsis_mask": ellipsis_mask,
              "new_axis_mask": new_axis_mask, "shrink_axis_mask": shrink_axis_mask},
             name=name or "StridedSlice")
    return t


_SLICE_TYPE_ERROR = ("Only integers, slices (`:`), ellipsis (`...`), tf.newaxis (`None`) and "
                     "scalar tf.int32/tf.int64 tensors are valid indices")
_SLICE_DTYPES = (dtypes.int16, dtypes.int32, dtypes.int64)


def _check_index(idx):
    if isinstance(idx, (numbers.Integral, tensor_shape.Dimension)) and \
            not isinstance(idx, bool):
        return
    dt = getattr(idx, "dtype", None)
    ok = dt is not None
    if ok:
        try:
            ok = dtypes.as_dtype(dt).base_dtype in _SLICE_DTYPES
        except (TypeError, ValueError):
            ok = False
    if ok:
        s = getattr(idx, "shape", None)
        if s is not None and len(tuple(s)) == 1:
            ok = False
    if not ok:
        raise TypeError(_SLICE_TYPE_ERROR + f", got {idx!r}")


def _slice_part(v, default, dt):
    """(value, missing) for a slice's start, stop or step: ``v`` itself (checked), or the
    ``default`` (a Const of ``dt`` when the slice's tensors gave one) and True."""
    if v is not None and not _undefined_dim(v):
        _check_index(v)
        return v, False
    return (constant(default, dtype=dt) if dt is not None else default), True


def _slice_helper(tensor, slice_spec, var=None):
    """``Tensor.__getitem__``: TensorFlow's slice semantics, one StridedSlice."""
    tensor = convert_to_tensor(tensor)
    if isinstance(slice_spec, bool) or \
            (isinstance(slice_spec, Tensor) and slice_spec.dtype.base_dtype == dtypes.bool) or \
            (isinstance(slice_spec, np.ndarray) and slice_spec.dtype == bool):
        return boolean_mask(tensor, slice_spec)
    if not isinstance(slice_spec, (list, tuple)):
        slice_spec = [slice_spec]
    begin, end, strides = [], [], []
    new_axis_mask = shrink_axis_mask = begin_mask = end_mask = ellipsis_mask = 0
    for index, s in enumerate(slice_spec):
        bit = 1 << index
        if isinstance(s, builtins.slice):
            dt = None
            for t in (s.start, s.stop, s.step):
                if isinstance(t, Tensor):
                    b = t.dtype.base_dtype
                    if b == dtypes.int64:
                        dt = dtypes.int64
                    elif b == dtypes.int32 and dt != dtypes.int64:
                        dt = dtypes.int32
                    elif b == dtypes.int16 and dt is None:
                        dt = dtypes.int16
            v, missing = _slice_part(s.start, 0, dt)
            begin.append(v)
            begin_mask |= bit if missing else 0
            v, missing = _slice_part(s.stop, 0, dt)
            end.append(v)
            end_mask |= bit if missing else 0
            strides.append(_slice_part(s.step, 1, dt)[0])
        elif s is Ellipsis:
            begin.append(0)
            end.append(0)
            strides.append(1)
            ellipsis_mask |= bit
        elif s is None:
            begin.append(0)
            end.append(0)
            strides.append(1)
            new_axis_mask |= bit
        else:
            _check_index(s)
            begin.append(s)
            end.append(s + 1)
            if isinstance(s, Tensor) and s.dtype.base_dtype in (dtypes.int16, dtypes.int64):
                strides.append(constant(1, dtype=s.dtype.base_dtype))
            else:
                strides.append(1)
            shrink_axis_mask |= bit
    with name_scope(None, "strided_slice", [tensor] + begin + end + strides) as name:
        if begin:
            pb, pe, ps = stack(begin), stack(end), stack(strides)
            if dtypes.int64 in (pb.dtype, pe.dtype, ps.dtype):
                pb, pe, ps = [x if x.dtype == dtypes.int64 else
                              _out("Cast", [x], {"DstT": dtypes.int64, "Truncate": False})
                              for x in (pb, pe, ps)]
        else:
            pb = pe = ps = constant([], dtype=dtypes.int32)
        return strided_slice(tensor, pb, pe, ps, begin_mask=begin_mask, end_mask=end_mask,
                             shrink_axis_mask=shrink_axis_mask, new_axis_mask=new_axis_mask,
                             ellipsis_mask=ellipsis_mask, var=var, name=name)


def _undefined_dim(d):
    return isinstance(d, tensor_shape.Dimension) and d.value is None


def _slice_helper_var(var, slice_spec):
    return _slice_helper(var.value(), slice_spec, var)


def _tensor_iter(self):
    """TensorFlow does not iterate over a graph tensor (not even one of known first
    dimension): ``tf.unstack`` it, or index it."""
    raise TypeError("Iterating over a symbolic `tf.Tensor` is not allowed in graph mode (as in "
                    f"TensorFlow): {self!r}. Use tf.unstack(t) or index it (t[0], t[1], ...).")


Tensor.__getitem__ = _slice_helper
Tensor.__iter__ = _tensor_iter
_variables.Variable.__getitem__ = _slice_helper_var


# --- tile, pad, broadcast, reverse -----------------------------------------------------------------
def tile(input, multiples, name=None):  # noqa: A002
    return _out("Tile", [input, multiples], name=name or "Tile")


def pad(tensor, paddings, mode="CONSTANT", name=None, constant_values=0):
    """``tf.pad``: Pad (PadV2 for nonzero ``constant_values``) or MirrorPad."""
    m = mode.upper() if isinstance(mode, str) else mode
    if m == "CONSTANT":
        if not isinstance(constant_values, Tensor) and np.all(np.asarray(constant_values) == 0):
            return _out("Pad", [tensor, paddings], name=name or "Pad")
        return _out("PadV2", [tensor, paddings, constant_values], name=name or "PadV2")
    if m in ("REFLECT", "SYMMETRIC"):
        return _out("MirrorPad", [tensor, paddings], {"mode": m}, name=name or "MirrorPad")
    raise ValueError('Value of argument `mode` expected to be one of "CONSTANT", "REFLECT", or '
                     f'"SYMMETRIC". Received `mode` = {mode}')


def broadcast_to(input, shape, name=None):  # noqa: A002,F811
    return _out("BroadcastTo", [input, shape], name=name or "BroadcastTo")


def broadcast_dynamic_shape(shape_x, shape_y):
    return apply_op("BroadcastArgs", [shape_x, shape_y], name="BroadcastArgs").outputs[0]


def broadcast_static_shape(shape_x, shape_y):
    from mgrt.runtime.api.math_ops import broadcast_shape

    return broadcast_shape(shape_x, shape_y)


def reverse(tensor, axis, name=None):
    """``tf.reverse``: ReverseV2."""
    return _out("ReverseV2", [tensor, axis], name=name or "ReverseV2")


reverse_v2 = reverse


def unique(x, out_idx=dtypes.int32, name=None):
    """``tf.unique``: the (y, idx) pair of one Unique node."""
    op = apply_op("Unique", [x], {"out_idx": dtypes.as_dtype(out_idx)}, name=name or "Unique")
    return _UniqueOutput(op.outputs[0], op.outputs[1])


class _UniqueOutput(tuple):
    def __new__(cls, y, idx):
        return tuple.__new__(cls, (y, idx))

    y = property(lambda self: self[0])
    idx = property(lambda self: self[1])


def invert_permutation(x, name=None):
    return _out("InvertPermutation", [x], name=name or "InvertPermutation")


def meshgrid(*args, **kwargs):
    """``tf.meshgrid``: each input reshaped to its axis and multiplied by ``ones`` of the grid
    shape (``indexing="xy"`` swaps the first two axes), as TensorFlow builds it."""
    indexing = kwargs.pop("indexing", "xy")
    name = kwargs.pop("name", "meshgrid")
    if kwargs:
        key = list(kwargs.keys())[0]
        raise TypeError(f"'{key}' is an invalid keyword argument for this function")
    if indexing not in ("xy", "ij"):
        raise ValueError(f"Argument `indexing` parameter must be either 'xy' or 'ij', got "
                         f"'{indexing}'")
    with name_scope(name, "meshgrid", args):
        ndim = len(args)
        s0 = (1,) * ndim
        if not ndim:
            return []
        output = [reshape(stack(x), s0[:i] + (-1,) + s0[i + 1:]) for i, x in enumerate(args)]
        shapes = [size(x) for x in args]
        output_dtype = convert_to_tensor(args[0]).dtype.base_dtype
        if indexing == "xy" and ndim > 1:
            output[0] = reshape(output[0], (1, -1) + (1,) * (ndim - 2))
            output[1] = reshape(output[1], (-1, 1) + (1,) * (ndim - 2))
            shapes[0], shapes[1] = shapes[1], shapes[0]
        mult_fact = ones(shapes, output_dtype)
        return [x * mult_fact for x in output]


# --- dynamic_partition, tensor_scatter_nd_* ----------------------------------------------------
def dynamic_partition(data, partitions, num_partitions, name=None):
    """``tf.dynamic_partition``: one DynamicPartition node, its ``num_partitions`` outputs."""
    return apply_op("DynamicPartition", [data, partitions],
                    {"num_partitions": num_partitions},
                    name=name or "DynamicPartition").outputs


def _tensor_scatter(op_type):
    def fn(tensor, indices, updates, name=None):
        return _out(op_type, [tensor, indices, updates], name=name or op_type)
    fn.__name__ = "tensor_scatter_nd_" + op_type[len("TensorScatter"):].lower()
    fn.__doc__ = f"``tf.{fn.__name__}``: one {op_type} node."
    return fn


tensor_scatter_nd_update = _tensor_scatter("TensorScatterUpdate")
tensor_scatter_nd_add = _tensor_scatter("TensorScatterAdd")
tensor_scatter_nd_sub = _tensor_scatter("TensorScatterSub")
tensor_scatter_nd_max = _tensor_scatter("TensorScatterMax")
tensor_scatter_nd_min = _tensor_scatter("TensorScatterMin")
# TF1's deprecated names
tensor_scatter_update = tensor_scatter_nd_update
tensor_scatter_add = tensor_scatter_nd_add
tensor_scatter_sub = tensor_scatter_nd_sub


# --- boolean_mask, sequence_mask -----------------------------------------------------------------
def boolean_mask(tensor, mask, name="boolean_mask", axis=None):
    """``tf.boolean_mask``: TensorFlow's Reshape + Where + GatherV2 graph."""
    from mgrt.runtime.api import math_ops

    with name_scope(name, values=[tensor, mask]):
        tensor = convert_to_tensor(tensor, name="tensor")
        mask = convert_to_tensor(mask, name="mask")
        shape_mask = mask.shape
        ndims_mask = shape_mask.rank
        shape_tensor = tensor.shape
        if ndims_mask == 0:
            raise ValueError("mask cannot be scalar.")
        if ndims_mask is None:
            raise ValueError("Number of mask dimensions must be specified, even if some "
                             "dimensions are None.  E.g. shape=[None] is ok, but shape=None "
                             "is not.")
        axis = 0 if axis is None else axis
        axis_value = _cvalue(axis) if isinstance(axis, Tensor) else axis
        if axis_value is not None:
            axis = int(axis_value)
            shape_tensor[axis:axis + ndims_mask].assert_is_compatible_with(shape_mask)
        leading_size = math_ops.reduce_prod(shape(tensor)[axis:axis + ndims_mask], [0])
        tensor = reshape(tensor, concat([shape(tensor)[:axis], [leading_size],
                                         shape(tensor)[axis + ndims_mask:]], 0))
        if axis_value is not None:
            first_dim = shape_tensor[axis:axis + ndims_mask].num_elements()
            tensor.set_shape(tensor_shape.as_shape(shape_tensor[:axis])
                             .concatenate([first_dim])
                             .concatenate(shape_tensor[axis + ndims_mask:]))
        mask = reshape(mask, [-1])
        return _apply_mask_1d(tensor, mask, axis)


def _apply_mask_1d(reshaped_tensor, mask, axis=None):
    indices = squeeze(where(mask), axis=[1])
    return gather(reshaped_tensor, indices, axis=axis)


def sequence_mask(lengths, maxlen=None, dtype=dtypes.bool, name=None):
    from mgrt.runtime.api import math_ops

    with name_scope(name, "SequenceMask", [lengths, maxlen]):
        lengths = convert_to_tensor(lengths)
        if maxlen is None:
            maxlen = _out("Max", [lengths, _axis_all(lengths)], {"keep_dims": False})
            maxlen = math_ops.maximum(constant(0, maxlen.dtype), maxlen)
        else:
            maxlen = convert_to_tensor(maxlen)
        if maxlen.shape.rank is not None and maxlen.shape.rank != 0:
            raise ValueError("Argument `maxlen` must be scalar for sequence_mask, received "
                             f"`maxlen` = {maxlen} with shape '{maxlen.shape}' instead")
        row_vector = _out("Range", [constant(0, maxlen.dtype), maxlen,
                                    constant(1, maxlen.dtype)])
        matrix = _out("Cast", [expand_dims(lengths, -1)], {"DstT": maxlen.dtype.base_dtype,
                                                          "Truncate": False})
        result = row_vector < matrix
        if dtype is None or result.dtype.base_dtype == dtypes.as_dtype(dtype).base_dtype:
            return result
        return _out("Cast", [result], {"DstT": dtypes.as_dtype(dtype).base_dtype,
                                       "Truncate": False})


def _axis_all(x):
    """TensorFlow's ``_ReductionDims(x, None)``: a Const of all axes (or a Range of Rank)."""
    r = x.shape.rank
    if r:
        return constant(np.arange(r, dtype=np.int32))
    from mgrt.runtime.api import math_ops

    return math_ops.range(0, rank(x))


# --- shape functions ---------------------------------------------------------------------------
@si.register("Shape")
def _shape_fn(op):
    r = op.inputs[0].shape.rank
    return [_shape([r])]


@si.register("ShapeN")
def _shape_n_fn(op):
    return [_shape([t.shape.rank]) for t in op.inputs]


@si.register("Size", "Rank")
def _scalar_fn(op):
    return [_shape([])]


@si.register("Reshape")
def _reshape_fn(op):
    x, s = op.inputs
    in_dims = _dims(x.shape)
    target = si.constant_value_as_shape(s)
    out = _dims(target)
    if out is None:
        return None
    sv = _cvalue_elements(s)
    # a known -1 in the shape tensor is inferred from the element count
    n_in = None if in_dims is None or None in in_dims else int(np.prod(in_dims, dtype=np.int64))
    if sv is not None and len(sv) == len(out):
        neg = [i for i, v in enumerate(sv) if v is not None and v < 0]
        _check_node(op, len(neg) <= 1, "Cannot infer multiple unknown dimensions in shape "
                                       f"{sv}")
        if neg:
            known = [d for i, d in enumerate(out) if i != neg[0]]
            if None not in known and n_in is not None:
                prod = int(np.prod(known, dtype=np.int64))
                _check_node(op, prod != 0 and n_in % prod == 0 or (prod == 0 and n_in == 0),
                            f"Cannot reshape a tensor with {n_in} elements to shape "
                            f"{sv} (the known dims do not divide it)")
                out[neg[0]] = n_in // prod if prod else 0
    if None not in out and n_in is not None:
        n_out = int(np.prod(out, dtype=np.int64))
        _check_node(op, n_out == n_in, f"Cannot reshape a tensor with {n_in} elements to "
                                       f"shape {out} ({n_out} elements)")
    return [_shape(out)]


@si.register("Fill")
def _fill_fn(op):
    dims, value = op.inputs
    _rank_of(op, dims, 1)
    _rank_of(op, value, 0)
    return [si.constant_value_as_shape(dims)]


@si.register("BroadcastTo")
def _broadcast_to_fn(op):
    x, s = op.inputs
    target = _dims(si.constant_value_as_shape(s))
    xd = _dims(x.shape)
    if target is None or xd is None:
        return [_shape(target)]
    _check_node(op, len(xd) <= len(target), f"Rank of input ({len(xd)}) must be no greater "
                                            f"than rank of output shape ({len(target)})")
    out = list(target)
    for i in range(1, len(xd) + 1):
        a, b = xd[-i], target[-i]
        if b is None:
            if a is not None and a != 1:
                out[-i] = a
        elif a is not None:
            _check_node(op, a == 1 or a == b, f"Dimensions must be equal, but are {a} and {b}")
    return [_shape(out)]


@si.register("Tile")
def _tile_fn(op):
    x, m = op.inputs
    xd = _dims(x.shape)
    mv = _cvalue_elements(m)
    if mv is None or None in mv:  # TensorFlow's partial multiples (a Concat of known parts)
        ms = _dims(si.constant_value_as_shape(m))
        if ms is not None and (mv is None or len(ms) == len(mv)):
            mv = ms
    r = len(mv) if mv is not None else xd and len(xd)
    if xd is not None and mv is not None:
        _check_node(op, len(mv) == len(xd), f"Shape must be rank {len(xd)} but is rank "
                                            f"{len(mv)}")
    if r is None:
        return None
    xd = xd or [None] * r
    mv = mv or [None] * r
    return [_shape([None if a is None or b is None else a * b for a, b in zip(xd, mv)])]


@si.register("Pack")
def _pack_fn(op):
    dims = _merge_dims(op, [_dims(t.shape) for t in op.inputs])
    if dims is None:
        return None
    axis = op.get_attr("axis")
    n = len(dims) + 1
    _check_node(op, -n <= axis < n, f"Invalid axis: {axis}; must be in [{-n}, {n})")
    if axis < 0:
        axis += n
    return [_shape(dims[:axis] + [len(op.inputs)] + dims[axis:])]


@si.register("Unpack")
def _unpack_fn(op):
    d = _dims(op.inputs[0].shape)
    num = op.get_attr("num")
    if d is None:
        return [None] * num
    axis = op.get_attr("axis")
    _check_node(op, -len(d) <= axis < len(d), f"Invalid axis: {axis}; must be in "
                                              f"[{-len(d)}, {len(d)})")
    if axis < 0:
        axis += len(d)
    _check_node(op, d[axis] is None or d[axis] == num, f"Dimension must be {num} but is "
                                                      f"{d[axis]}")
    return [_shape(d[:axis] + d[axis + 1:])] * num


def _concat_shape(op, values, axis_t):
    dims = [_dims(t.shape) for t in values]
    known = [d for d in dims if d is not None]
    if not known:
        return None
    r = len(known[0])
    for d in known:
        _check_node(op, len(d) == r, f"Shape must be rank {r} but is rank {len(d)}")
    av = _cvalue(axis_t)
    if av is None:
        return [_shape([None] * r)]
    axis = int(av)
    _check_node(op, -r <= axis < r, f"ConcatOp : Expected concatenating dimensions in the "
                                    f"range [{-r}, {r}), but got {axis}")
    if axis < 0:
        axis += r
    out = [None] * r
    total = 0
    for i in range(r):
        if i == axis:
            continue
        out[i] = _merge_dims(op, [[d[i]] for d in known])[0]
    for d in dims:
        if d is None or d[axis] is None or total is None:
            total = None
        else:
            total += d[axis]
    out[axis] = total
    return [_shape(out)]


@si.register("ConcatV2")
def _concat_v2_fn(op):
    return _concat_shape(op, op.inputs[:-1], op.inputs[-1])


@si.register("Concat")
def _concat_fn(op):
    return _concat_shape(op, op.inputs[1:], op.inputs[0])


@si.register("GatherV2")
def _gather_fn(op):
    p, i, a = op.inputs
    pd, idd = _dims(p.shape), _dims(i.shape)
    av = _cvalue(a)
    bd = op.get_attr("batch_dims")
    if pd is None or idd is None:
        return None
    if bd < 0:
        bd += len(idd)
    _check_node(op, len(idd) >= bd, f"Shape must be at least rank {bd} but is rank {len(idd)}")
    if av is None:
        return [_shape([None] * (len(pd) + len(idd) - 1 - bd))]
    axis = int(av)
    _check_node(op, -len(pd) <= axis < len(pd), f"Shape must be at least rank {axis + 1} but "
                                                f"is rank {len(pd)}")
    if axis < 0:
        axis += len(pd)
    return [_shape(pd[:axis] + idd[bd:] + pd[axis + 1:])]


@si.register("Gather")
def _gather_v1_fn(op):
    pd, idd = _dims(op.inputs[0].shape), _dims(op.inputs[1].shape)
    if pd is None or idd is None:
        return None
    return [_shape(idd + pd[1:])]


def _handle_shape(handle):
    """The variable shape behind a resource handle, where the graph says it (VarHandleOp,
    also through Identity / cond / while_loop ops, as TensorFlow's handle data goes)."""
    from mgrt.runtime.control_flow_context import resource_handle_source

    src = resource_handle_source(handle)
    if src.type == "VarHandleOp":
        return _dims(tensor_shape.TensorShape(src.get_attr("shape")))
    return None


@si.register("ResourceGather")
def _resource_gather_fn(op):
    pd, idd = _handle_shape(op.inputs[0]), _dims(op.inputs[1].shape)
    if pd is None or idd is None:
        return None
    bd = op.get_attr("batch_dims")
    return [_shape(pd[:bd] + idd[bd:] + pd[bd + 1:])]


@si.register("GatherNd")
def _gather_nd_fn(op):
    pd, idd = _dims(op.inputs[0].shape), _dims(op.inputs[1].shape)
    if pd is None or idd is None or idd[-1] is None:
        return None
    k = idd[-1]
    _check_node(op, k <= len(pd), f"indices.shape[-1] must be <= params.rank, but saw indices "
                                  f"shape: {idd} and params shape: {pd}")
    return [_shape(idd[:-1] + pd[k:])]


@si.register("ScatterNd")
def _scatter_nd_fn(op):
    idx, upd, s = op.inputs
    out = _dims(si.constant_value_as_shape(s))
    idd, ud = _dims(idx.shape), _dims(upd.shape)
    if out is not None and idd is not None and ud is not None and idd[-1] is not None:
        k = idd[-1]
        outer = len(idd) - 1
        want = out[k:]
        have = ud[outer:]
        _check_node(op, len(want) == len(have) and all(
            a is None or b is None or a == b for a, b in zip(want, have)),
            f"Dimensions [{k},{len(out)}) of input[shape={out}] = {want} must match "
            f"dimensions [{outer},{len(ud)}) of updates[shape={ud}] = {have}")
    return [_shape(out)]


def _scatter_nd_check(op, out, idx, upd):
    """TensorFlow's ScatterNdShapeHelper checks: the outer dims of ``indices`` and
    ``updates``, and the inner dims of the output and ``updates``."""
    idd, ud = _dims(idx.shape), _dims(upd.shape)
    if idd is not None:
        _check_node(op, len(idd) >= 1, f"Shape must be at least rank 1 but is rank {len(idd)}")
    if ud is not None:
        _check_node(op, len(ud) >= 1, f"Shape must be at least rank 1 but is rank {len(ud)}")
    if idd is None or ud is None or idd[-1] is None:
        return
    k, outer = idd[-1], len(idd) - 1
    pre_i, pre_u = idd[:outer], ud[:outer]
    _check_node(op, len(pre_u) == outer and all(
        a is None or b is None or a == b for a, b in zip(pre_i, pre_u)),
        f"Dimensions [0,{outer}) of indices[shape={idd}] = {pre_i} must match dimensions "
        f"[0,{outer}) of updates[shape={ud}] = {pre_u}")
    if out is None:
        return
    _check_node(op, k <= len(out), f"indices.shape[-1] must be <= the rank of the input, "
                                   f"got {k} > {len(out)}")
    want, have = out[k:], ud[outer:]
    _check_node(op, len(want) == len(have) and all(
        a is None or b is None or a == b for a, b in zip(want, have)),
        f"Dimensions [{k},{len(out)}) of input[shape={out}] = {want} must match "
        f"dimensions [{outer},{len(ud)}) of updates[shape={ud}] = {have}")


@si.register("TensorScatterUpdate", "TensorScatterAdd", "TensorScatterSub",
             "TensorScatterMax", "TensorScatterMin")
def _tensor_scatter_fn(op):
    t, idx, upd = op.inputs
    _scatter_nd_check(op, _dims(t.shape), idx, upd)
    return [t.shape]


@si.register("DynamicPartition")
def _dynamic_partition_fn(op):
    data, parts = op.inputs
    n = len(op.outputs)
    pd, dd = _dims(parts.shape), _dims(data.shape)
    if pd is None:
        return [tensor_shape.unknown_shape()] * n
    if dd is not None:
        _check_node(op, len(dd) >= len(pd), f"Shape must be at least rank {len(pd)} but is "
                                            f"rank {len(dd)}")
        for i, (a, b) in enumerate(zip(dd, pd)):
            _check_node(op, a is None or b is None or a == b,
                        f"Dimensions must be equal, but are {a} and {b}")
        return [_shape([None] + dd[len(pd):])] * n
    return [tensor_shape.unknown_shape()] * n


@si.register("ResourceGatherNd")
def _resource_gather_nd_fn(op):
    pd, idd = _handle_shape(op.inputs[0]), _dims(op.inputs[1].shape)
    if pd is None or idd is None or idd[-1] is None:
        return None
    k = idd[-1]
    _check_node(op, k <= len(pd), f"indices.shape[-1] must be <= params.rank, but saw indices "
                                  f"shape: {idd} and params shape: {pd}")
    return [_shape(idd[:-1] + pd[k:])]


@si.register("VariableShape")
def _variable_shape_fn(op):
    pd = _handle_shape(op.inputs[0])
    return [_shape([None if pd is None else len(pd)])]


@si.register("OneHot")
def _one_hot_fn(op):
    idx, depth = op.inputs[0], op.inputs[1]
    d = _dims(idx.shape)
    if d is None:
        return None
    dv = _cvalue(depth)
    dv = None if dv is None else int(dv)
    _check_node(op, dv is None or dv >= 0, f"depth must be non-negative, got: {dv}")
    axis = op.get_attr("axis")
    _check_node(op, -1 <= axis <= len(d), f"Expected axis to be -1 or between [0, {len(d)}]. "
                                         f"But received: {axis}")
    if axis == -1:
        axis = len(d)
    return [_shape(d[:axis] + [dv] + d[axis:])]


@si.register("Where")
def _where_fn(op):
    r = op.inputs[0].shape.rank
    return [_shape([None, r])]


@si.register("Select")
def _select_fn(op):
    c, t, e = op.inputs
    td = _merge_dims(op, [_dims(t.shape), _dims(e.shape)])
    cd = _dims(c.shape)
    if td is None or cd is None:
        return [_shape(td)]
    if len(cd) == len(td):
        td = _merge_dims(op, [td, cd])
    elif len(cd) == 1 and len(td) >= 1:
        _check_node(op, cd[0] is None or td[0] is None or cd[0] == td[0],
                    f"Dimension 0 in both shapes must be equal, but are {cd[0]} and {td[0]}")
    else:
        _check_node(op, len(td) == 0 or False, f"Shape must be rank {len(td)} or 1 but is rank "
                                              f"{len(cd)}")
    return [_shape(td)]


@si.register("SelectV2")
def _select_v2_fn(op):
    from mgrt.runtime.api.math_ops import broadcast_shape

    c, t, e = op.inputs
    try:
        s = broadcast_shape(broadcast_shape(t.shape, e.shape), c.shape)
    except ValueError as err:
        raise ValueError(str(err)) from None
    return [s]


@si.register("Transpose", "ConjugateTranspose")
def _transpose_fn(op):
    x, p = op.inputs
    xd = _dims(x.shape)
    pv = _cvalue(p)
    pd = _dims(p.shape)
    if pd is not None:
        _check_node(op, len(pd) == 1, f"Shape must be rank 1 but is rank {len(pd)}")
    if xd is not None and pd is not None and pd[0] is not None:
        _check_node(op, pd[0] == len(xd), f"Dimension must be {len(xd)} but is {pd[0]}")
    if pv is None:
        r = len(xd) if xd is not None else (pd[0] if pd else None)
        return [_shape(None if r is None else [None] * r)]
    pv = [int(v) for v in np.asarray(pv).reshape(-1)]
    if xd is None:
        return [_shape([None] * len(pv))]
    n = len(xd)
    for v in pv:
        _check_node(op, -n <= v < n, f"perm dim {v} is out of range of input rank {n}")
    return [_shape([xd[v] for v in pv])]


@si.register("InvertPermutation")
def _invert_perm_fn(op):
    _rank_of(op, op.inputs[0], 1)
    return [op.inputs[0].shape]


@si.register("ExpandDims")
def _expand_dims_fn(op):
    x, a = op.inputs
    xd = _dims(x.shape)
    av = _cvalue(a)
    if xd is None or av is None:
        return None
    av = np.asarray(av).reshape(-1)
    _check_node(op, av.size == 1, "'dim' input must be a tensor with a single value")
    axis = int(av[0])
    n = len(xd)
    _check_node(op, -n - 1 <= axis <= n, f"dim {axis} not in the interval [{-n - 1}, {n}].")
    if axis < 0:
        axis += n + 1
    return [_shape(xd[:axis] + [1] + xd[axis:])]


@si.register("Squeeze")
def _squeeze_fn(op):
    xd = _dims(op.inputs[0].shape)
    axes = op.get_attr("squeeze_dims")
    if xd is None:
        return None
    n = len(xd)
    wanted = set()
    for a in axes:
        _check_node(op, -n <= a < n, f"Tried to squeeze dim index {a} for tensor with {n} "
                                     f"dimensions.")
        wanted.add(a + n if a < 0 else a)
    out = []
    for i, d in enumerate(xd):
        if wanted:
            if i in wanted:
                _check_node(op, d is None or d == 1, f"Can not squeeze dim[{i}], expected a "
                                                     f"dimension of 1, got {d}")
                continue
            out.append(d)
        else:
            if d == 1:
                continue
            if d is None:
                return None  # TensorFlow: unknown rank when a dim might be 1
            out.append(d)
    return [_shape(out)]


@si.register("Slice")
def _slice_fn(op):
    x, b, s = op.inputs
    xd = _dims(x.shape)
    _rank_of(op, b, 1)
    _rank_of(op, s, 1)
    bv, sv = _cvalue_elements(b), _cvalue_elements(s)
    n = len(bv) if bv is not None else (len(sv) if sv is not None else None)
    if xd is not None and n is not None:
        _check_node(op, n == len(xd), f"Shape must be rank {n} but is rank {len(xd)}")
    if n is None:
        n = len(xd) if xd is not None else None
    if n is None:
        return None
    bv = bv or [None] * n
    sv = sv or [None] * n
    xd = xd or [None] * n
    out = []
    for i in range(n):
        if sv[i] is None:
            out.append(None)
        elif sv[i] == -1:
            out.append(None if xd[i] is None or bv[i] is None else xd[i] - bv[i])
        else:
            if xd[i] is not None and bv[i] is not None:
                _check_node(op, 0 <= bv[i] and bv[i] + sv[i] <= xd[i],
                            f"Expected size[{i}] in [0, {xd[i] - bv[i]}], but got {sv[i]}")
            out.append(sv[i])
    return [_shape(out)]


def strided_slice_shape(op_name, in_dims, begin, end, strides, begin_mask, end_mask,
                        ellipsis_mask, new_axis_mask, shrink_axis_mask):
    """TensorFlow's ValidateStridedSliceOp for static shapes: ``begin``/``end``/``strides``
    are lists with None for unknown values (``in_dims`` a list with None, known rank). Returns
    the output dims (None entries unknown); ValueError for an index out of range."""
    def err(msg):
        raise ValueError(msg)

    n_sparse = len(begin)
    if not ellipsis_mask & ((1 << n_sparse) - 1):
        ellipsis_mask |= 1 << n_sparse
        begin, end, strides = begin + [0], end + [0], strides + [1]
        n_sparse += 1
    # the dense spec
    dense_n = len(in_dims)
    d_begin, d_end, d_stride = [0] * dense_n, [0] * dense_n, [1] * dense_n
    d_bmask = d_emask = d_shrink = 0
    gather = []  # dense index, "new" or "shrink"
    full = 0
    for i in range(n_sparse):
        bit = 1 << i
        if ellipsis_mask & bit:
            after = sum(1 for j in range(i + 1, n_sparse) if new_axis_mask & (1 << j))
            nxt = min(dense_n - (n_sparse - i) + 1 + after, dense_n)
            while full < nxt:
                d_bmask |= 1 << full
                d_emask |= 1 << full
                gather.append(full)
                full += 1
        elif new_axis_mask & bit:
            gather.append("new")
        else:
            if full == dense_n:
                err(f"Index out of range using input dim {full}; input has only {dense_n} dims")
            d_begin[full], d_end[full], d_stride[full] = begin[i], end[i], strides[i]
            if begin_mask & bit:
                d_bmask |= 1 << full
            if end_mask & bit:
                d_emask |= 1 << full
            if shrink_axis_mask & bit:
                d_shrink |= 1 << full
                gather.append("shrink")
            else:
                gather.append(full)
            full += 1
    sizes = []
    for i in range(dense_n):
        dim = in_dims[i]
        b, e, st = d_begin[i], d_end[i], d_stride[i]
        bm, em, sh = d_bmask >> i & 1, d_emask >> i & 1, d_shrink >> i & 1
        if st is not None and st == 0:
            err(f"strides[{i}] must be non-zero")
        if sh:
            if dim is not None and b is not None:
                x = b + dim if b < 0 else b
                if x < 0 or x >= dim:
                    err(f"slice index {b} of dimension {i} out of bounds.")
            sizes.append(1)
            continue
        if dim is None or st is None or (b is None and not bm) or (e is None and not em):
            sizes.append(None)
            continue

        def canon(x, masked, c):
            if masked:
                return (0 if st > 0 else dim - 1) if c == 0 else (dim if st > 0 else -1)
            x = x + dim if x < 0 else x
            lo, hi = (0, dim) if st > 0 else (-1, dim - 1)
            return min(max(x, lo), hi)

        bb, ee = canon(b, bm, 0), canon(e, em, 1)
        interval = ee - bb
        if interval == 0 or (interval < 0) != (st < 0):
            sizes.append(0)
        else:
            q, r = divmod(abs(interval), abs(st))
            sizes.append(q + (1 if r else 0))
    out = []
    for g in gather:
        if g == "new":
            out.append(1)
        elif g == "shrink":
            continue
        else:
            out.append(sizes[g])
    return out


@si.register("StridedSlice")
def _strided_slice_fn(op):
    x, b, e, s = op.inputs
    xd = _dims(x.shape)
    bv, ev, sv = _cvalue_elements(b), _cvalue_elements(e), _cvalue_elements(s)
    for t in (b, e, s):
        _rank_of(op, t, 1)
    masks = [op.get_attr(k) for k in ("begin_mask", "end_mask", "ellipsis_mask",
                                      "new_axis_mask", "shrink_axis_mask")]
    n = next((len(v) for v in (bv, ev, sv) if v is not None), None)
    if n is None:
        return None
    bv, ev, sv = (v if v is not None else [None] * n for v in (bv, ev, sv))
    if xd is None:
        if masks[2]:
            return None
        # no ellipsis: the dims beyond the spec are unknown in number
        return None
    return [_shape(strided_slice_shape(op.name, xd, bv, ev, sv, *masks))]


@si.register("StridedSliceGrad")
def _strided_slice_grad_fn(op):
    return [si.constant_value_as_shape(op.inputs[0])]


@si.register("Pad", "PadV2", "MirrorPad")
def _pad_fn(op):
    x, p = op.inputs[0], op.inputs[1]
    xd = _dims(x.shape)
    pd = _dims(p.shape)
    if pd is not None:
        _check_node(op, len(pd) == 2, f"Shape must be rank 2 but is rank {len(pd)}")
        _check_node(op, pd[1] is None or pd[1] == 2, f"Dimension 1 in both shapes must be "
                                                     f"equal, but are {pd[1]} and 2")
        if xd is not None and pd[0] is not None:
            _check_node(op, pd[0] == len(xd), f"Shape must be rank {pd[0]} but is rank "
                                              f"{len(xd)}")
    n = len(xd) if xd is not None else (pd[0] if pd is not None else None)
    if n is None:
        return None
    pv = _cvalue(p)
    xd = xd or [None] * n
    if pv is None:
        return [_shape([None] * n)]
    pv = np.asarray(pv).reshape(n, 2)
    return [_shape([None if d is None else d + int(a) + int(b) for d, (a, b) in zip(xd, pv)])]


@si.register("Split")
def _split_fn(op):
    a, x = op.inputs
    num = op.get_attr("num_split")
    xd = _dims(x.shape)
    av = _cvalue(a)
    if xd is None:
        return [None] * num
    if av is None:
        return [_shape([None] * len(xd))] * num
    axis = int(av)
    n = len(xd)
    _check_node(op, -n <= axis < n, f"Dimension {axis} must be in range [{-n}, {n})")
    if axis < 0:
        axis += n
    d = xd[axis]
    if d is not None:
        _check_node(op, d % num == 0, f"Dimension size must be evenly divisible by {num} but "
                                      f"is {d}")
        d //= num
    return [_shape(xd[:axis] + [d] + xd[axis + 1:])] * num


@si.register("SplitV")
def _split_v_fn(op):
    x, sz, a = op.inputs
    num = op.get_attr("num_split")
    xd = _dims(x.shape)
    av = _cvalue(a)
    sv = _cvalue_elements(sz)
    if xd is None:
        return [None] * num
    if av is None:
        return [_shape([None] * len(xd))] * num
    axis = int(av)
    n = len(xd)
    _check_node(op, -n <= axis < n, f"Dimension {axis} must be in range [{-n}, {n})")
    if axis < 0:
        axis += n
    if sv is None:
        sv = [None] * num
    _check_node(op, len(sv) == num, f"Number of split sizes {len(sv)} must equal num_split "
                                    f"{num}")
    neg = [i for i, v in enumerate(sv) if v is not None and v < 0]
    d = xd[axis]
    if len(neg) == 1 and d is not None and None not in sv:
        rest = sum(v for i, v in enumerate(sv) if i != neg[0])
        _check_node(op, rest <= d, f"The specified sizes {sv} exceed the dimension {d}")
        sv = list(sv)
        sv[neg[0]] = d - rest
    elif d is not None and None not in sv and not neg:
        _check_node(op, sum(sv) == d, f"Determined shape must either match input shape along "
                                      f"split_dim exactly if fully specified, or be less than "
                                      f"the size of the input along split_dim if not fully "
                                      f"specified.  Got: {sum(sv)}")
    return [_shape(xd[:axis] + [None if v is None or v < 0 else v] + xd[axis + 1:])
            for v in sv]


@si.register("ConcatOffset")
def _concat_offset_fn(op):
    return [t.shape for t in op.inputs[1:]]


@si.register("ReverseV2")
def _reverse_fn(op):
    return [op.inputs[0].shape]


@si.register("Unique")
def _unique_fn(op):
    _rank_of(op, op.inputs[0], 1)
    return [_shape([None]), op.inputs[0].shape]


@si.register("BroadcastGradientArgs")
def _bga_fn(op):
    return [_shape([None]), _shape([None])]


@si.register("BroadcastArgs")
def _broadcast_args_fn(op):
    a, b = (_dims(t.shape) for t in op.inputs)
    if a is None or b is None or a[0] is None or b[0] is None:
        return [_shape([None])]
    return [_shape([max(a[0], b[0])])]


@si.register("DynamicStitch", "ParallelDynamicStitch")
def _dynamic_stitch_fn(op):
    n = len(op.inputs) // 2
    idx, data = op.inputs[:n], op.inputs[n:]
    extra = None
    for i, d in zip(idx, data):
        idd, dd = _dims(i.shape), _dims(d.shape)
        if idd is None or dd is None:
            continue
        extra = _merge_dims(op, [extra, dd[len(idd):]])
    total = 0
    for i in idx:
        v = _cvalue(i)
        if v is None:
            total = None
            break
        total = max(total, int(np.max(v)) + 1 if np.size(v) else 0)
    if extra is None:
        return None
    return [_shape([total] + extra)]


@si.register("UnsortedSegmentSum", "UnsortedSegmentMax", "UnsortedSegmentMin",
             "UnsortedSegmentProd")
def _unsorted_segment_fn(op):
    data, ids, num = op.inputs
    dd, idd = _dims(data.shape), _dims(ids.shape)
    nv = _cvalue(num)
    if dd is None or idd is None:
        return None
    return [_shape([None if nv is None else int(nv)] + dd[len(idd):])]


@si.register("ZerosLike", "OnesLike", "StopGradient", "CheckNumerics", "Identity",
             "PreventGradient", "Snapshot", "Cast", "ClipByValue")
def _same_shape_fn(op):
    return [op.inputs[0].shape]


@si.register("IdentityN")
def _identity_n_fn(op):
    return [t.shape for t in op.inputs]


@si.register("PlaceholderWithDefault")
def _pwd_shape(op):
    return [tensor_shape.TensorShape(op.get_attr("shape"))]


# --- constant values of small shape computations (TensorFlow folds these while inferring
# shapes: its shape refiner evaluates small constant subgraphs) ----------------------------------
_FOLDABLE = ("StridedSlice", "Slice", "Reshape", "ExpandDims", "Squeeze", "Fill", "GatherV2",
             "Range", "Unpack", "Transpose", "Tile", "Prod", "Sum", "Max", "Min", "AddV2", "Add",
             "Sub", "Mul", "Maximum", "Minimum", "FloorDiv", "FloorMod", "Neg", "Equal",
             "NotEqual", "Less", "Greater", "Select", "SelectV2", "BroadcastArgs",
             "InvertPermutation", "ZerosLike", "OnesLike", "Size", "Shape", "Rank")


def _fold(t):
    op = t.op
    if not t.shape.is_fully_defined() or t.shape.num_elements() > 1000:
        return None
    vals = []
    for x in op.inputs:
        v = si.constant_value(x)
        if v is None:
            return None
        v = np.asarray(v)
        if v.size > 1000:
            return None
        vals.append(v)
    from mgrt.runtime import kernel_registry

    try:
        node = kernel_registry.KernelNode.from_operation(op)
        kd = kernel_registry.lookup(op.type, "CPU", node.attrs)
        if kd is None:
            return None
        run = kd.builder(node, None)
        outs = run(*vals)
    except Exception:  # noqa: BLE001  (a value that cannot be folded is simply unknown)
        return None
    return np.asarray(outs[t.value_index])


def _make_folder(previous):
    def fold(t):
        if previous is not None:
            v = previous(t)
            if v is not None:
                return v
        return _fold(t)
    return fold


for _t in _FOLDABLE:
    si._CONSTANT_FNS[_t] = _make_folder(si._CONSTANT_FNS.get(_t))
del _t


@si.register_constant("Unpack")
def _cv_unpack(t):
    v = si.constant_value(t.op.inputs[0])
    if v is None:
        return None
    return np.take(v, t.value_index, axis=t.op.get_attr("axis"))


def _shape_of_strided_slice_of_shape(tensor):
    """``constant_value_as_shape`` of ``tf.shape(x)[a:b]`` / ``tf.shape(x)[i]`` (TensorFlow
    handles these in constant_value_as_shape)."""
    op = tensor.op
    src = op.inputs[0]
    if src.op.type != "Shape":
        return None
    sd = _dims(src.op.inputs[0].shape)
    if sd is None:
        return None
    bv, ev, sv = (_cvalue(x) for x in op.inputs[1:])
    if bv is None or ev is None or sv is None:
        return None
    masks = {k: op.get_attr(k) for k in ("begin_mask", "end_mask", "ellipsis_mask",
                                         "new_axis_mask", "shrink_axis_mask")}
    if masks["ellipsis_mask"] or masks["new_axis_mask"] or np.size(bv) != 1:
        return None
    b, e, s = int(np.reshape(bv, -1)[0]), int(np.reshape(ev, -1)[0]), int(np.reshape(sv, -1)[0])
    idx = list(range(len(sd)))
    if masks["shrink_axis_mask"] & 1:
        return None
    sl = idx[(None if masks["begin_mask"] & 1 else b):(None if masks["end_mask"] & 1 else e):s]
    return tensor_shape.TensorShape([sd[i] for i in sl])


_orig_cvas = si.constant_value_as_shape


def _constant_value_as_shape(tensor):
    """The core's ``constant_value_as_shape`` plus TensorFlow's StridedSlice-of-Shape case and
    Pack elements that are ``tf.shape(x)[i]``."""
    op = tensor.op
    if op.type == "VariableShape":  # (TensorFlow's shape refiner knows a variable's shape)
        return _shape(_handle_shape(op.inputs[0]))
    if op.type == "StridedSlice":
        s = _shape_of_strided_slice_of_shape(tensor)
        if s is not None:
            return s
    if op.type == "Pack" and si.constant_value(tensor) is None:
        dims = []
        for x in op.inputs:
            xv = si.constant_value(x)
            if xv is not None:
                dims.append(None if int(xv) < 0 else int(xv))
            elif x.op.type == "StridedSlice" and x.op.inputs[0].op.type == "Shape" and \
                    x.op.get_attr("shrink_axis_mask") & 1:
                sd = _dims(x.op.inputs[0].op.inputs[0].shape)
                bv = _cvalue(x.op.inputs[1])
                if sd is not None and bv is not None and np.size(bv) == 1:
                    i = int(np.reshape(bv, -1)[0])
                    dims.append(sd[i] if -len(sd) <= i < len(sd) else None)
                else:
                    dims.append(None)
            else:
                dims.append(None)
        return tensor_shape.TensorShape(dims)
    return _orig_cvas(tensor)


si.constant_value_as_shape = _constant_value_as_shape


def diag(diagonal, name=None):
    """``tf.diag``: the tensor of rank 2k with ``diagonal`` (rank k) on its diagonal."""
    return apply_op("Diag", [diagonal], None, name=name or "Diag").outputs[0]


def diag_part(input, name=None):  # noqa: A002 - TensorFlow's argument name
    """``tf.diag_part``: the diagonal of a rank-2k tensor whose two halves of dims match."""
    return apply_op("DiagPart", [input], None, name=name or "DiagPart").outputs[0]
