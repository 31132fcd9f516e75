"""CPU kernels of TensorFlow's SparseTensor ops (``tf.sparse``): SparseToDense,
SparseTensorDenseMatMul, SparseReorder, SparseReshape, SparseAdd / SparseAddGrad,
SparseTensorDenseAdd, SparseReduceSum / SparseReduceMax (and their ``...Sparse`` forms),
SparseConcat, SparseSlice / SparseSliceGrad, SparseSplit, SparseFillEmptyRows /
SparseFillEmptyRowsGrad, SparseSoftmax, SparseSparseMaximum / Minimum,
SparseDenseCwiseMul / Div / Add, Bincount / DenseBincount / SparseBincount and SparseMatMul.

A SparseTensor is ``indices`` (int64 ``[N, rank]``), ``values`` (``[N]``) and ``dense_shape``
(int64 ``[rank]``). Kernels follow TensorFlow's CPU kernels: the same outputs (order of the
entries included: merges of row-major sorted inputs, stable passes where TensorFlow keeps the
input order), the same validation and InvalidArgumentError messages
(tests/fixtures/sparse_tensor_ops/cases.json), the dtypes TensorFlow registers on the CPU.
"""

import numpy as np

from mgrt.kernels_cpu import _dtypes as D
from mgrt.runtime import dtypes
from mgrt.runtime.errors import InternalError, InvalidArgumentError
from mgrt.runtime.kernel_registry import register

_ANY_T = D.NUM_T + [dtypes.bool, dtypes.string]
_SUM_T = D.NUM_T  # real numbers and complex (TF_CALL_NUMBER_TYPES)
_REAL_T = D.REAL_T


def _err(msg):
    return InvalidArgumentError(None, None, msg)


def _dbg(shape):
    """TensorShape::DebugString: ``[2,3]``."""
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def _join(v):
    return ",".join(str(int(d)) for d in v)


def _is_matrix(a):
    return a.ndim == 2


def _is_vector(a):
    return a.ndim == 1


def _is_scalar(a):
    return a.ndim == 0


# --- index helpers ------------------------------------------------------------------------------
def _cmp_rows(ix):
    """Per entry vs the previous one: -1 decreasing, 0 equal, 1 increasing (row-major)."""
    n = ix.shape[0]
    cmp = np.ones(n, np.int8)
    if n > 1 and ix.shape[1] > 0:
        d = ix[1:] - ix[:-1]
        nz = d != 0
        has = nz.any(axis=1)
        first = np.argmax(nz, axis=1)
        sign = np.sign(d[np.arange(n - 1), first])
        cmp[1:] = np.where(has, sign, 0)
    elif n > 1:
        cmp[1:] = 0
    return cmp


def _indices_valid(ix, shape):
    """``SparseTensor::IndicesValid`` in row-major order: the first entry that is out of bounds,
    out of order or repeated fails."""
    n = ix.shape[0]
    if n == 0:
        return
    shape = np.asarray(shape, np.int64)
    oob = np.any((ix < 0) | (ix >= shape), axis=1)
    cmp = _cmp_rows(ix)
    bad = oob | (cmp <= 0)
    bad[0] = oob[0]
    if not bad.any():
        return
    i = int(np.argmax(bad))
    where = f"indices[{i}] = [{_join(ix[i])}]"
    if oob[i]:
        raise _err(f"{where} is out of bounds: need 0 <= index < [{_join(shape)}]")
    if cmp[i] < 0:
        raise _err(f"{where} is out of order. Many sparse ops require sorted indices.\n"
                   f"    Use `tf.sparse.reorder` to create a correctly ordered copy.\n\n")
    raise _err(f"{where} is repeated")


def _is_sorted(ix):
    return ix.shape[0] < 2 or bool(np.all(_cmp_rows(ix)[1:] >= 0))


def _row_major_order(ix, dims=None):
    """A stable permutation sorting ``ix`` (by ``dims``, first most significant)."""
    if ix.shape[0] == 0:
        return np.zeros(0, np.int64)
    cols = range(ix.shape[1]) if dims is None else dims
    keys = [ix[:, d] for d in reversed(list(cols))]
    if not keys:
        return np.arange(ix.shape[0])
    return np.lexsort(keys)


def _cmp(a, b):
    """Compare two index rows (tuples)."""
    return (a > b) - (a < b)


# --- SparseToDense ------------------------------------------------------------------------------
@register("SparseToDense", "CPU",
          type_constraints={"T": D.NUM_T + [dtypes.bool, dtypes.string],
                            "Tindices": D.INDEX_T})
def _sparse_to_dense(node, ctx):
    validate = node.attr("validate_indices", True)
    out_dt = node.output_types[0].as_numpy_dtype

    def run(indices, output_shape, values, default_value):
        if indices.ndim > 2:
            raise _err("sparse_indices should be a scalar, vector, or matrix, got shape "
                       + _dbg(indices.shape))
        num_elems = indices.shape[0] if indices.ndim > 0 else 1
        num_dims = indices.shape[1] if indices.ndim > 1 else 1
        if output_shape.ndim > 1:
            raise _err("output_shape must be rank 0 or 1, got shape " + _dbg(output_shape.shape))
        n_out = output_shape.size
        if n_out != num_dims:
            raise _err(f"output_shape has incorrect number of elements: {n_out} should be: "
                       f"{num_dims}")
        if not (values.ndim == 0 or (values.ndim == 1 and values.shape[0] == num_elems)):
            raise _err(f"sparse_values has incorrect shape {_dbg(values.shape)}, should be [] "
                       f"or [{num_elems}]")
        if default_value.ndim != 0:
            raise _err("default_value should be a scalar.")
        shape = [int(d) for d in output_shape.reshape(-1)]
        for d in shape:
            if d < 0:
                raise _err(f"Dimension {d} must be >= 0")
        ix = indices.astype(np.int64).reshape(num_elems, num_dims)
        if validate:
            _indices_valid(ix, shape)
        out = np.full(shape, default_value, dtype=out_dt)
        if num_elems:
            oob = np.any((ix < 0) | (ix >= np.asarray(shape, np.int64)), axis=1)
            if oob.any():
                i = int(np.argmax(oob))
                raise _err(f"Invalid index: [{_join(ix[i])}] at position {i}")  # (unvalidated)
            vals = np.broadcast_to(values, (num_elems,))
            out[tuple(ix.T)] = vals
        return (out,)
    return run


# --- SparseTensorDenseMatMul --------------------------------------------------------------------
@register("SparseTensorDenseMatMul", "CPU",
          type_constraints={"T": D.FLOAT_T + D.COMPLEX_T + [dtypes.int32],
                            "Tindices": D.INDEX_T}, host_memory=("a_shape",))
def _sparse_dense_matmul(node, ctx):
    adj_a = bool(node.attr("adjoint_a", False))
    adj_b = bool(node.attr("adjoint_b", False))
    out_dt = node.output_types[0].as_numpy_dtype

    def run(a_indices, a_values, a_shape, b):
        if not _is_vector(a_shape):
            raise _err("Tensor 'a_shape' is not a vector")
        if a_shape.size != 2:
            raise _err("Tensor 'a_shape' must have 2 elements")
        if not _is_vector(a_values):
            raise _err("Tensor 'a_values' is not a vector")
        if not _is_matrix(b):
            raise _err("Tensor 'b' is not a matrix")
        if not _is_matrix(a_indices):
            raise _err("Tensor 'a_indices' is not a matrix")
        nnz = a_indices.shape[0]
        if nnz != a_values.shape[0]:
            raise _err("Number of rows of a_indices does not match number of entries in "
                       "a_values")
        if a_indices.shape[1] != a_shape.shape[0]:
            raise _err("Number of columns of a_indices does not match number of entries in "
                       "a_shape")
        outer_left = int(a_shape[1]) if adj_a else int(a_shape[0])
        outer_right = b.shape[0] if adj_b else b.shape[1]
        inner_left = int(a_shape[0]) if adj_a else int(a_shape[1])
        inner_right = b.shape[1] if adj_b else b.shape[0]
        if inner_right != inner_left:
            raise _err(
                f"Cannot multiply A and B because inner dimension does not match: "
                f"{inner_left} vs. {inner_right}.  Did you forget a transpose?  Dimensions of "
                f"A: [{int(a_shape[0])}, {int(a_shape[1])}).  Dimensions of B: "
                f"{_dbg(b.shape)}")
        ix = a_indices.astype(np.int64)
        rows = ix[:, 1] if adj_a else ix[:, 0]
        cols = ix[:, 0] if adj_a else ix[:, 1]
        col_name = 0 if adj_a else 1
        row_name = 1 if adj_a else 0
        for i in range(nnz):
            k = int(cols[i])
            if not 0 <= k < inner_left:
                raise _err(f"k ({k}) from index[{i},{col_name}] out of bounds (>={inner_left})")
            m = int(rows[i])
            if not 0 <= m < outer_left:
                raise _err(f"m ({m}) from index[{i},{row_name}] out of bounds (>={outer_left})")
        vals = a_values
        bb = b.T if adj_b else b
        if adj_a:
            vals = np.conj(vals)
        if adj_b:
            bb = np.conj(bb)
        acc = np.float32 if out_dt in D.LOW else out_dt
        out = np.zeros((outer_left, outer_right), acc)
        if nnz:
            np.add.at(out, rows, vals.astype(acc)[:, None] * bb[cols].astype(acc))
        return (out.astype(out_dt, copy=False),)
    return run


# --- SparseReorder ------------------------------------------------------------------------------
def _check_ivs(indices, values, shape):
    if not _is_matrix(indices):
        raise _err("Input indices should be a matrix but received shape "
                   + _dbg(indices.shape))
    if not _is_vector(values):
        raise _err("Input values should be a vector but received shape "
                   + _dbg(values.shape))
    if not _is_vector(shape):
        raise _err("Input shape should be a vector but received shape " + _dbg(shape.shape))


@register("SparseReorder", "CPU")
def _sparse_reorder(node, ctx):
    def run(indices, values, shape):
        _check_ivs(indices, values, shape)
        if indices.shape[0] != values.shape[0]:
            raise _err(f"Number of elements in indices ({indices.shape[0]}) and values "
                       f"({values.shape[0]}) do not match")
        if indices.shape[1] != shape.shape[0]:
            raise _err(f"Input indices and shape must have the same rank: "
                       f"{indices.shape[1]} vs {shape.shape[0]}")
        if _is_sorted(indices):
            return indices, values
        perm = _row_major_order(indices)
        return indices[perm], values[perm]
    return run


# --- SparseReshape ------------------------------------------------------------------------------
@register("SparseReshape", "CPU")
def _sparse_reshape(node, ctx):
    def run(indices, input_shape, new_shape):
        if not _is_matrix(indices):
            raise _err("Input indices should be a matrix but received shape "
                       + _dbg(indices.shape))
        if not _is_vector(input_shape):
            raise _err("Input shape should be a vector but received shape "
                       + _dbg(input_shape.shape))
        if not _is_vector(new_shape):
            raise _err("Target shape should be a vector but received shape "
                       + _dbg(new_shape.shape))
        in_rank = input_shape.shape[0]
        if indices.shape[1] != in_rank:
            raise _err(f"Input tensor rank must match input shape length: {indices.shape[1]} vs "
                       f"{in_rank}")
        in_dims = [int(d) for d in input_shape]
        dense_size = 1
        for d in in_dims:
            dense_size *= d
        out_dims = [int(d) for d in new_shape]
        product = 1
        unknown = -1
        for d, size in enumerate(out_dims):
            if size == -1:
                if unknown != -1:
                    raise _err(f"only one output dimension may be -1, not both {unknown} and "
                               f"{d}")
                unknown = d
            else:
                if size < 0:
                    raise _err(f"size {d} must be non-negative, not {size}")
                product *= size
        if unknown != -1:
            if product <= 0:
                raise _err("reshape cannot infer the missing input size for an empty tensor "
                           "unless all specified input sizes are non-zero")
            missing = dense_size // product
            if product * missing != dense_size:
                raise _err(f"Input to reshape is a SparseTensor with {dense_size} dense "
                           f"values, but the requested shape requires a multiple of {product}. "
                           f"input_shape={_dbg(in_dims)} output_shape="
                           f"{_dbg(out_dims[:unknown] + [missing] + out_dims[unknown + 1:])}")
            out_dims[unknown] = missing
        out_size = 1
        for d in out_dims:
            out_size *= d
        if out_size != dense_size:
            raise _err(f"Input to reshape is a tensor with {dense_size} dense values, but the "
                       f"requested shape has {out_size}. input_shape={_dbg(in_dims)} "
                       f"output_shape={_dbg(out_dims)}")
        out_shape = np.array(out_dims, np.int64)
        n = indices.shape[0]
        if in_dims == out_dims:
            return indices, out_shape
        if n == 0:
            return np.zeros((0, len(out_dims)), np.int64), out_shape
        in_strides = _strides(in_dims)
        out_strides = _strides(out_dims)
        linear = indices.astype(np.int64) @ np.asarray(in_strides, np.int64) if in_dims else \
            np.zeros(n, np.int64)
        out = np.zeros((n, len(out_dims)), np.int64)
        for j, s in enumerate(out_strides):
            out[:, j] = linear // s
            linear = linear - out[:, j] * s
        return out, out_shape
    return run


def _strides(dims):
    s = [1] * len(dims)
    for i in range(len(dims) - 2, -1, -1):
        s[i] = s[i + 1] * dims[i + 1]
    return s


def _same_shapes(a_shape, b_shape):
    if a_shape.shape[0] != b_shape.shape[0]:
        raise _err(f"Operands do not have the same ranks; got shapes: {_dbg(a_shape)} and "
                   f"{_dbg(b_shape)}")
    for i in range(a_shape.shape[0]):
        if a_shape[i] != b_shape[i]:
            raise _err(f"Operands' shapes do not match: got {int(a_shape[i])} and "
                       f"{int(b_shape[i])} for dimension {i}")


def _check_two_values_and_shapes(a_indices, a_values, a_shape, b_indices, b_values, b_shape):
    """TF's checks shared by the two-operand sparse kernels (SparseAdd, SparseSparseMaximum
    and Minimum): one value per index row, shapes as vectors. Returns the two nnz."""
    a_nnz, b_nnz = a_indices.shape[0], b_indices.shape[0]
    if a_values.shape[0] != a_nnz or b_values.shape[0] != b_nnz:
        raise _err(f"Expected {a_nnz} and {b_nnz} non-empty input values, got "
                   f"{a_values.shape[0]} and {b_values.shape[0]}")
    if not (_is_vector(a_shape) and _is_vector(b_shape)):
        raise _err(f"Input shapes should be a vector but received shapes "
                   f"{_dbg(a_shape.shape)} and {_dbg(b_shape.shape)}")
    return a_nnz, b_nnz


# --- SparseAdd / SparseAddGrad ------------------------------------------------------------------
@register("SparseAdd", "CPU", type_constraints={
    "T": [dtypes.float32, dtypes.float64, dtypes.int64, dtypes.int32, dtypes.int16,
          dtypes.int8, dtypes.complex64, dtypes.complex128]})
def _sparse_add(node, ctx):
    def run(a_indices, a_values, a_shape, b_indices, b_values, b_shape, thresh):
        if not (_is_matrix(a_indices) and _is_matrix(b_indices)):
            raise _err(f"Input indices should be matrices but received shapes: "
                       f"{_dbg(a_indices.shape)} and {_dbg(b_indices.shape)}")
        if not (_is_vector(a_values) and _is_vector(b_values)):
            raise _err(f"Inputs a_values and b_values should be vectors but received shapes: "
                       f"{_dbg(a_values.shape)} and {_dbg(b_values.shape)}")
        a_nnz, b_nnz = _check_two_values_and_shapes(a_indices, a_values, a_shape, b_indices,
                                                    b_values, b_shape)
        if a_shape.shape[0] != a_indices.shape[1]:
            raise _err(f"Input a_indices should have {a_shape.shape[0]} columns but has "
                       f"{a_indices.shape[1]}")  # pragma: no cover
        _same_shapes(a_shape, b_shape)
        if thresh.ndim != 0:
            raise _err(f"The magnitude threshold must be a scalar: got shape "
                       f"{_dbg(thresh.shape)}")
        ndims = a_indices.shape[1]
        if b_indices.shape[1] != ndims:
            raise _err(f"Input a_indices should have {ndims} columns but b_indices has "
                       f"{b_indices.shape[1]}")  # pragma: no cover
        t = thresh.item()
        ai = [tuple(r) for r in a_indices.tolist()]
        bi = [tuple(r) for r in b_indices.tolist()]
        src, vals = [], []
        i = j = 0
        while i < a_nnz and j < b_nnz:
            c = _cmp(ai[i], bi[j])
            if c < 0:
                src.append(ai[i])
                vals.append(a_values[i])
                i += 1
            elif c == 0:
                s = a_values[i] + b_values[j]
                if t <= abs(s):
                    src.append(ai[i])
                    vals.append(s)
                i += 1
                j += 1
            else:
                src.append(bi[j])
                vals.append(b_values[j])
                j += 1
        while i < a_nnz:
            src.append(ai[i])
            vals.append(a_values[i])
            i += 1
        while j < b_nnz:
            src.append(bi[j])
            vals.append(b_values[j])
            j += 1
        out_ix = np.array(src, np.int64).reshape(len(src), ndims)
        out_v = np.array(vals, dtype=a_values.dtype).reshape(len(vals))
        return out_ix, out_v, a_shape.astype(np.int64, copy=True)
    return run


@register("SparseAddGrad", "CPU", type_constraints={
    "T": [dtypes.float32, dtypes.float64, dtypes.int64, dtypes.int32, dtypes.int16,
          dtypes.int8, dtypes.complex64, dtypes.complex128]})
def _sparse_add_grad(node, ctx):
    def run(grad, a_indices, b_indices, sum_indices):
        if not (_is_matrix(a_indices) and _is_matrix(b_indices) and _is_matrix(sum_indices)):
            raise _err(f"Input indices should be matrices but received shapes: "
                       f"{_dbg(a_indices.shape)}, {_dbg(b_indices.shape)}, "
                       f"{_dbg(sum_indices.shape)}")
        if not _is_vector(grad):
            raise _err(f"Input backprop_val_grad should be a vector but received shape: "
                       f"{_dbg(grad.shape)}")
        if not (a_indices.shape[1] == b_indices.shape[1] == sum_indices.shape[1]):
            raise _err(f"The densified operands should have the same ndims; for A, B, sum got: "
                       f"{a_indices.shape[1]}, {b_indices.shape[1]}, {sum_indices.shape[1]}")
        if grad.shape[0] != sum_indices.shape[0]:
            raise _err(f"# elements of backprop_val_grad and # rows of sum_indices should "
                       f"match (#nnz of sum): got {grad.shape[0]} and {sum_indices.shape[0]}")
        a = [tuple(r) for r in a_indices.tolist()]
        b = [tuple(r) for r in b_indices.tolist()]
        s = [tuple(r) for r in sum_indices.tolist()]
        ga = np.zeros(len(a), grad.dtype)
        gb = np.zeros(len(b), grad.dtype)
        i = j = k = 0
        na, nb, ns = len(a), len(b), len(s)
        while i < na and j < nb and k < ns:
            c = _cmp(a[i], b[j])
            if c < 0:
                if a[i] == s[k]:
                    ga[i] = grad[k]
                    k += 1
                i += 1
            elif c == 0:
                if a[i] == s[k]:
                    ga[i] = grad[k]
                    gb[j] = grad[k]
                    k += 1
                i += 1
                j += 1
            else:
                if b[j] == s[k]:
                    gb[j] = grad[k]
                    k += 1
                j += 1
        while i < na and k < ns:
            if a[i] == s[k]:
                ga[i] = grad[k]
                k += 1
            i += 1
        while j < nb and k < ns:
            if b[j] == s[k]:
                gb[j] = grad[k]
                k += 1
            j += 1
        return ga, gb
    return run


# --- SparseTensorDenseAdd -----------------------------------------------------------------------
@register("SparseTensorDenseAdd", "CPU",
          type_constraints={"T": D.NUM_T, "Tindices": D.INDEX_T})
def _sparse_tensor_dense_add(node, ctx):
    def run(a_indices, a_values, a_shape, b):
        if not _is_matrix(a_indices):
            raise _err("Input a_indices should be a matrix but received shape: "
                       + _dbg(a_indices.shape))
        if not (_is_vector(a_values) and _is_vector(a_shape)):
            raise _err(f"Inputs a_values and a_shape should be vectors but received shapes: "
                       f"{_dbg(a_values.shape)} and {_dbg(a_shape.shape)}")
        if a_shape.shape[0] != b.ndim:
            raise _err(f"Two operands have different ranks; received: {a_shape.shape[0]} and "
                       f"{b.ndim}")
        nnz = a_indices.shape[0]
        if a_values.shape[0] != nnz:
            raise _err(f"Expected {nnz} non-empty input values, got {a_values.shape[0]}")
        if a_indices.shape[1] != b.ndim:
            raise _err(f"Expected a_indices to have {b.ndim} columns, got "
                       f"{a_indices.shape[1]}")
        for i in range(b.ndim):
            if int(a_shape[i]) != b.shape[i]:
                raise _err(f"Dimension {i} does not equal (no broadcasting is supported): "
                           f"sparse side {int(a_shape[i])} vs dense side {b.shape[i]}")
        out = np.array(b, copy=True)
        if nnz:
            ix = a_indices.astype(np.int64)
            bad = (ix < 0) | (ix >= np.asarray(b.shape, np.int64))
            if bad.any():
                i = int(np.argmax(bad.any(axis=1)))
                d = int(np.argmax(bad[i]))
                raise _err(f"Sparse tensor has an invalid index on dimension {d}: "
                           f"a_indices({i},{d}) = {int(ix[i, d])}, dense tensor shape: "
                           + " ".join(str(x) for x in b.shape))
            np.add.at(out, tuple(ix.T), a_values)
        return (out,)
    return run


# --- SparseReduceSum / SparseReduceMax ----------------------------------------------------------
def _reduce_setup(indices, values, shape, axes, keep_dims):
    _check_ivs(indices, values, shape)
    ndims = shape.shape[0]
    ax = np.asarray(axes).reshape(-1)
    reduce = [False] * ndims
    for a in ax.tolist():
        a = int(a)
        if not -ndims <= a < ndims:
            raise _err(f"Invalid reduction dimension {a}, for input with {ndims} dimensions.")
        a = (a + ndims) % ndims
        reduce[a] = True
    dims = [int(d) for d in shape]
    kept = [d for d in range(ndims) if not reduce[d]]
    out_dims = [1 if reduce[d] else dims[d] for d in range(ndims)] if keep_dims else \
        [dims[d] for d in kept]
    return kept, reduce, dims, out_dims


def _group(indices, kept):
    """Unique kept-index keys (sorted) and, per entry, its group number."""
    n = indices.shape[0]
    if n == 0:
        return np.zeros((0, len(kept)), np.int64), np.zeros(0, np.int64)
    k = indices[:, kept].astype(np.int64)
    if not kept:
        return np.zeros((1, 0), np.int64), np.zeros(n, np.int64)
    keys, inv = np.unique(k, axis=0, return_inverse=True)
    return keys, inv.reshape(-1)


def _make_sparse_reduce(kind, sparse_out):
    def builder(node, ctx):
        keep_dims = bool(node.attr("keep_dims", False))
        out_dt = node.output_types[1 if sparse_out else 0].as_numpy_dtype

        def run(indices, values, shape, axes):
            kept, reduce, dims, out_dims = _reduce_setup(indices, values, shape, axes,
                                                         keep_dims)
            keys, inv = _group(indices, kept)
            g = keys.shape[0]
            if kind == "sum":
                acc_dt = np.float32 if np.dtype(out_dt) in D.LOW else out_dt
                red = np.zeros(g, acc_dt)
                np.add.at(red, inv, values.astype(acc_dt))
                red = red.astype(out_dt)
            else:
                red = np.full(g, _lowest(np.dtype(out_dt)), out_dt)
                np.maximum.at(red, inv, values)
            if sparse_out:
                if keep_dims:
                    full = np.zeros((g, len(dims)), np.int64)
                    full[:, kept] = keys
                    out_ix = full
                else:
                    out_ix = keys.reshape(g, len(kept))
                return out_ix, red, np.array(out_dims, np.int64)
            out = np.zeros([dims[d] for d in kept], out_dt)
            if g:
                if kept:
                    out[tuple(keys.T)] = red
                else:
                    out[()] = red[0]
            return (out.reshape(out_dims),)
        return run
    return builder


def _lowest(dtype):
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    if dtype.kind == "b":
        return False
    return -np.inf


register("SparseReduceSum", "CPU", type_constraints={"T": D.NUM_T})(
    _make_sparse_reduce("sum", False))
register("SparseReduceSumSparse", "CPU", type_constraints={"T": D.NUM_T})(
    _make_sparse_reduce("sum", True))
register("SparseReduceMax", "CPU", type_constraints={"T": D.REAL_T})(
    _make_sparse_reduce("max", False))
register("SparseReduceMaxSparse", "CPU", type_constraints={"T": D.REAL_T})(
    _make_sparse_reduce("max", True))


# --- SparseConcat -------------------------------------------------------------------------------
@register("SparseConcat", "CPU")
def _sparse_concat(node, ctx):
    concat_dim_attr = int(node.attr("concat_dim"))
    n_in = int(node.attr("N"))

    def run(*args):
        inds, vals, shapes = args[:n_in], args[n_in:2 * n_in], args[2 * n_in:]
        for i in range(n_in):
            if not _is_matrix(inds[i]):
                raise _err(f"Input indices should be a list of rank 2 tensors, but indices[{i}] "
                           f"has shape: {_dbg(inds[i].shape)}")
            if not _is_vector(vals[i]):
                raise _err(f"Input values should be a list of rank 1 tensors, but values[{i}] "
                           f"has shape: {_dbg(vals[i].shape)}")
            if not _is_vector(shapes[i]):
                raise _err(f"Input shapes should be a list of rank 1 tensors, but shapes[{i}] "
                           f"has shape: {_dbg(shapes[i].shape)}")
            if vals[i].shape[0] != inds[i].shape[0]:
                raise _err(f"Expected {inds[i].shape[0]} non-empty input values, got "
                           f"{vals[i].shape[0]}")
        input_shape = shapes[0]
        rank = input_shape.shape[0]
        concat_dim = concat_dim_attr + rank if concat_dim_attr < 0 else concat_dim_attr
        if not 0 <= concat_dim < rank:
            raise _err(f"Concat dimension must be in range [{-rank}, {rank}), got "
                       f"{concat_dim_attr}")
        for i in range(1, n_in):
            cur = shapes[i]
            if cur.shape[0] != rank:
                raise _err(f"Ranks of all input tensors must match: expected {rank} but got "
                           f"{cur.shape[0]} at position {i}")
            for j in range(rank):
                if j != concat_dim and cur[j] != input_shape[j]:
                    raise _err(f"Input shapes must match: expected {int(input_shape[j])} for "
                               f"dimension {j} but got {int(cur[j])} at position {i}")
        for i in range(n_in):
            if inds[i].shape[1] != rank:
                raise _err(f"Expected indices[{i}] to have {rank} columns, got "
                           f"{inds[i].shape[1]}")
        offset = 0
        parts = []
        for i in range(n_in):
            ix = inds[i].astype(np.int64, copy=True)
            # each input in concat-dim-major order (TensorFlow's Reorder before Concat)
            order = [concat_dim] + [d for d in range(rank) if d != concat_dim]
            perm = _row_major_order(ix, order)
            ix = ix[perm]
            ix[:, concat_dim] += offset
            parts.append((ix, vals[i][perm]))
            offset += int(shapes[i][concat_dim])
        out_ix = np.concatenate([p[0] for p in parts], axis=0).reshape(-1, rank)
        out_v = np.concatenate([p[1] for p in parts], axis=0)
        perm = _row_major_order(out_ix)
        out_shape = np.array(input_shape, np.int64, copy=True)
        out_shape[concat_dim] = offset
        return out_ix[perm], out_v[perm], out_shape
    return run


# --- SparseSlice / SparseSliceGrad --------------------------------------------------------------
@register("SparseSlice", "CPU")
def _sparse_slice(node, ctx):
    def run(indices, values, shape, start, size):
        _check_ivs(indices, values, shape)
        if not _is_vector(start):
            raise _err("Input start should be a vector but received shape "
                       + _dbg(start.shape))
        if not _is_vector(size):
            raise _err("Input size should be a vector but received shape " + _dbg(size.shape))
        dims = shape.shape[0]
        if start.shape[0] != dims:
            raise _err(f"Expected start to be a vector of length {dims} but got length "
                       f"{start.shape[0]}")
        if size.shape[0] != dims:
            raise _err(f"Expected size to be a vector of length {dims} but got length "
                       f"{size.shape[0]}")
        if indices.shape[0] != values.shape[0]:
            raise _err(f"Expected {indices.shape[0]} non-empty input values, got "
                       f"{values.shape[0]}")
        out_shape = np.zeros(dims, np.int64)
        for d in range(dims):
            in_size, st, sz = int(shape[d]), int(start[d]), int(size[d])
            if st + sz < in_size:
                out_shape[d] = sz
            elif st < in_size:
                out_shape[d] = in_size - st
            else:
                out_shape[d] = 0
        ix = indices.astype(np.int64)
        st = start.astype(np.int64)
        if ix.shape[0]:
            hit = np.all((ix >= st) & (ix < st + size.astype(np.int64)), axis=1)
        else:
            hit = np.zeros(0, bool)
        return (ix[hit] - st).reshape(-1, dims), values[hit], out_shape
    return run


@register("SparseSliceGrad", "CPU", type_constraints={"T": D.NUM_T})
def _sparse_slice_grad(node, ctx):
    def run(grad, input_indices, input_start, output_indices):
        if not (_is_matrix(input_indices) and _is_matrix(output_indices)):
            raise _err(f"Input and output indices should be matrices but received shapes: "
                       f"{_dbg(input_indices.shape)} and {_dbg(output_indices.shape)}")
        if not _is_vector(grad):
            raise _err(f"Input backprop_val_grad should be a vector but received shape: "
                       f"{_dbg(grad.shape)}")
        if grad.shape[0] != output_indices.shape[0]:
            raise _err(f"Number of output indices ({output_indices.shape[0]}) does not match "
                       f"number of backprop values ({grad.shape[0]})")
        if not _is_vector(input_start):
            raise _err("The input_start should be a vector but received shape "
                       + _dbg(input_start.shape))
        nd = input_indices.shape[1]
        if nd != output_indices.shape[1]:
            raise _err(f"The input and output should have the same ndims: got: {nd} and "
                       f"{output_indices.shape[1]}")
        if output_indices.shape[0] > input_indices.shape[0]:
            raise _err(f"# rows of output_indices should be not greater than of input_indices,"
                       f" got {output_indices.shape[0]} and {input_indices.shape[0]}")
        if input_start.shape[0] != nd:
            raise _err(f"The input_start should have length {nd} but got "
                       f"{input_start.shape[0]}")
        out = np.zeros(input_indices.shape[0], grad.dtype)
        shifted = input_indices.astype(np.int64) - input_start.astype(np.int64)
        oi = output_indices.astype(np.int64)
        j = 0
        k = oi.shape[0]
        for i in range(shifted.shape[0]):
            if j >= k:
                break
            if np.array_equal(shifted[i], oi[j]):
                out[i] = grad[j]
                j += 1
        if j != k:
            raise InternalError(None, None, f"Elements of backprop_val_grad aren't all propagated. Num elements:"
                       f"{k}, used: {j}")
        return (out,)
    return run


# --- SparseSplit --------------------------------------------------------------------------------
@register("SparseSplit", "CPU", host_memory=("split_dim",))
def _sparse_split(node, ctx):
    num_split = int(node.attr("num_split"))

    def run(split_dim, indices, values, shape):
        if split_dim.ndim != 0:
            raise _err("split_dim should be a scalar but received shape "
                       + _dbg(split_dim.shape))
        _check_ivs(indices, values, shape)
        rank = shape.shape[0]
        axis = int(split_dim)
        if not -rank <= axis < rank:
            raise _err(f"Input axis should be in range [{-rank}, {rank}), got {axis}")
        axis = axis + rank if axis < 0 else axis
        dim = int(shape[axis])
        if not 1 <= num_split <= dim:
            raise _err(f"Input num_split should be between 1 and the splitting dimension size "
                       f"({dim}), got {num_split}")
        if indices.shape[0] != values.shape[0]:
            raise _err(f"Expected {indices.shape[0]} non-empty input values, got "
                       f"{values.shape[0]}")
        size = dim // num_split
        residual = dim % num_split
        ix = indices.astype(np.int64)
        # slice of each entry: the first `residual` slices are one larger
        c = ix[:, axis]
        big = residual * (size + 1)
        which = np.where(c < big, c // (size + 1), residual + (c - big) // max(size, 1))
        starts = [i * size + min(i, residual) for i in range(num_split)]
        outs_i, outs_v, outs_s = [], [], []
        for s in range(num_split):
            sel = which == s
            sub = ix[sel].copy()
            sub[:, axis] -= starts[s]
            outs_i.append(sub.reshape(-1, rank))
            outs_v.append(values[sel])
            sh = np.array(shape, np.int64, copy=True)
            sh[axis] = size + (1 if s < residual else 0)
            outs_s.append(sh)
        return outs_i + outs_v + outs_s
    return run


# --- SparseFillEmptyRows / Grad -----------------------------------------------------------------
@register("SparseFillEmptyRows", "CPU")
def _sparse_fill_empty_rows(node, ctx):
    def run(indices, values, dense_shape, default_value):
        if not _is_vector(dense_shape):
            raise _err("dense_shape must be a vector, saw: " + _dbg(dense_shape.shape))
        if not _is_matrix(indices):
            raise _err("indices must be a matrix, saw: " + _dbg(indices.shape))
        if not _is_vector(values):
            raise _err("values must be a vector, saw: " + _dbg(values.shape))
        if indices.shape[0] != values.shape[0]:
            raise _err(f"The length of `values` ({values.shape[0]}) must match the first "
                       f"dimension of `indices` ({indices.shape[0]}).")
        if default_value.ndim != 0:
            raise _err("default_value must be a scalar, saw: " + _dbg(default_value.shape))
        if dense_shape.shape[0] == 0:
            raise _err("Dense shape cannot be empty.")
        if indices.shape[1] != dense_shape.shape[0]:
            raise _err(f"The length of `dense_shape` ({dense_shape.shape[0]}) must match the "
                       f"second dimension of `indices` ({indices.shape[1]}).")
        n = indices.shape[0]
        rank = dense_shape.shape[0]
        dense_rows = int(dense_shape[0])
        if dense_rows == 0:
            if n != 0:
                raise _err(f"Received SparseTensor with dense_shape[0] = 0 but indices.shape[0] "
                           f"= {n}")
            return (np.zeros((0, rank), np.int64), values[:0], np.zeros(0, bool),
                    np.zeros(0, np.int64))
        rows = indices[:, 0].astype(np.int64)
        for i in range(n):
            r = int(rows[i])
            if r < 0 or r >= dense_rows:
                raise _err(f"indices({i}, 0) is invalid: {r} >= {dense_rows}")
        counts = np.bincount(rows, minlength=dense_rows) if n else np.zeros(dense_rows, np.int64)
        empty = counts == 0
        per_row = np.maximum(counts, 1)
        row_start = np.concatenate([[0], np.cumsum(per_row)[:-1]]).astype(np.int64)
        total = int(per_row.sum())
        out_ix = np.zeros((total, rank), np.int64)
        out_v = np.empty(total, values.dtype)
        empty_rows = np.nonzero(empty)[0]
        out_ix[row_start[empty_rows], 0] = empty_rows
        out_v[row_start[empty_rows]] = default_value
        # each row's entries in input order (a stable counting sort)
        order = np.argsort(rows, kind="stable")
        rim = np.zeros(n, np.int64)
        if n:
            sorted_rows = rows[order]
            first = np.cumsum(counts) - counts  # each row's first position among the sorted
            dest = row_start[sorted_rows] + (np.arange(n) - first[sorted_rows])
            rim[order] = dest
            out_ix[dest] = indices[order]
            out_v[dest] = values[order]
        return out_ix, out_v, empty, rim
    return run


@register("SparseFillEmptyRowsGrad", "CPU", type_constraints={"T": D.NUM_T})
def _sparse_fill_empty_rows_grad(node, ctx):
    def run(reverse_index_map, grad_values):
        if not _is_vector(reverse_index_map):
            raise _err("reverse_index_map must be a vector, saw: "
                       + _dbg(reverse_index_map.shape))
        if not _is_vector(grad_values):
            raise _err("grad_values must be a vector, saw: " + _dbg(grad_values.shape))
        m = grad_values.shape[0]
        rim = reverse_index_map.astype(np.int64)
        for i, r in enumerate(rim.tolist()):
            if not 0 <= r < m:
                raise _err(f"Elements in reverse index must be in [0, {m}) but got {r}")
        d_values = grad_values[rim]
        visited = np.zeros(m, bool)
        visited[rim] = True
        acc = np.float32 if grad_values.dtype in D.LOW else grad_values.dtype
        d_default = np.asarray(grad_values[~visited].astype(acc).sum(dtype=acc)).astype(
            grad_values.dtype)
        return d_values, d_default
    return run


# --- SparseSoftmax ------------------------------------------------------------------------------
def _runs(ix, upto):
    """Start offsets of the runs of consecutive entries with the same ``ix[:, :upto]``."""
    n = ix.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if upto == 0:
        return np.array([0]), np.zeros(n, np.int64)
    change = np.any(ix[1:, :upto] != ix[:-1, :upto], axis=1)
    starts = np.concatenate([[0], np.nonzero(change)[0] + 1])
    gid = np.concatenate([[0], np.cumsum(change)])
    return starts, gid


@register("SparseSoftmax", "CPU", type_constraints={"T": [dtypes.float16, dtypes.float32,
                                                         dtypes.float64]})
def _sparse_softmax(node, ctx):
    def run(indices, values, shape):
        if not _is_matrix(indices):
            raise _err("Input should be a matrix but received shape: " + _dbg(indices.shape))
        if not _is_vector(values):
            raise _err("Input should be a vector but received shape: " + _dbg(values.shape))
        if not _is_vector(shape):
            raise _err("Input should be a vector but received shape: " + _dbg(shape.shape))
        if shape.shape[0] < 2:
            raise _err("Input should have rank >= 2, but received shape: "
                       + " ".join(str(int(d)) for d in shape))
        nnz = values.shape[0]
        if indices.shape[0] != nnz:
            raise _err(f"Number of non-zero elements in input indices ({indices.shape[0]}) "
                       f"does not match number of non-zero values ({nnz})")
        rank = shape.shape[0]
        starts, gid = _runs(indices.astype(np.int64), rank - 1)
        if nnz == 0:
            return (values.copy(),)
        # in the values' own precision, step by step (Eigen on T, as TensorFlow's)
        dt = values.dtype
        out = np.empty_like(values)
        bounds = list(starts) + [nnz]
        for a, b in zip(bounds[:-1], bounds[1:]):
            seg = values[a:b]
            e = np.exp((seg - seg.max()).astype(dt)).astype(dt)
            total = e.sum(dtype=dt)
            out[a:b] = (e / total).astype(dt)
        return (out,)
    return run


# --- SparseSparseMaximum / Minimum --------------------------------------------------------------
def _make_sparse_sparse(fn):
    def builder(node, ctx):
        def run(a_indices, a_values, a_shape, b_indices, b_values, b_shape):
            if not (_is_matrix(a_indices) and _is_matrix(b_indices)):
                raise _err(f"Inputs a_indices and b_indices should be matrices but received "
                           f"shapes: {_dbg(a_indices.shape)}, {_dbg(b_indices.shape)}")
            if not (_is_vector(a_values) and _is_vector(b_values)):
                raise _err(f"Inputs a_values and b_values should be vectors but received "
                           f"shapes: {_dbg(a_values.shape)} and {_dbg(b_values.shape)}")
            a_nnz, b_nnz = _check_two_values_and_shapes(a_indices, a_values, a_shape,
                                                        b_indices, b_values, b_shape)
            _same_shapes(a_shape, b_shape)
            ndims = a_indices.shape[1]
            ai = [tuple(r) for r in a_indices.tolist()]
            bi = [tuple(r) for r in b_indices.tolist()]
            zero = np.zeros((), a_values.dtype)
            src, vals = [], []
            i = j = 0
            while i < a_nnz and j < b_nnz:
                c = _cmp(ai[i], bi[j])
                if c < 0:
                    src.append(ai[i])
                    vals.append(fn(a_values[i], zero))
                    i += 1
                elif c == 0:
                    src.append(ai[i])
                    vals.append(fn(a_values[i], b_values[j]))
                    i += 1
                    j += 1
                else:
                    src.append(bi[j])
                    vals.append(fn(zero, b_values[j]))
                    j += 1
            while i < a_nnz:
                src.append(ai[i])
                vals.append(fn(a_values[i], zero))
                i += 1
            while j < b_nnz:
                src.append(bi[j])
                vals.append(fn(zero, b_values[j]))
                j += 1
            return (np.array(src, np.int64).reshape(len(src), ndims),
                    np.array(vals, a_values.dtype).reshape(len(vals)))
        return run
    return builder


register("SparseSparseMaximum", "CPU", type_constraints={"T": D.REAL_T})(
    _make_sparse_sparse(np.maximum))
register("SparseSparseMinimum", "CPU", type_constraints={"T": D.REAL_T})(
    _make_sparse_sparse(np.minimum))


# --- SparseDenseCwise* --------------------------------------------------------------------------
def _div(x, y):
    if x.dtype.kind in "iu":
        q = np.trunc(np.true_divide(x, y))
        return q.astype(x.dtype)
    return x / y


def _make_cwise(fn):
    def builder(node, ctx):
        def run(sp_indices, sp_values, sp_shape, dense):
            if not _is_matrix(sp_indices):
                raise _err("Input sp_indices should be a matrix but received shape: "
                           + _dbg(sp_indices.shape))
            if not (_is_vector(sp_values) and _is_vector(sp_shape)):
                raise _err(f"Inputs sp_values and sp_shape should be vectors but received "
                           f"shapes: {_dbg(sp_values.shape)} and {_dbg(sp_shape.shape)}")
            if sp_values.shape[0] != sp_indices.shape[0]:
                raise _err(f"The first dimension of values and indices should match. "
                           f"({sp_values.shape[0]} vs. {sp_indices.shape[0]})")
            shape = [int(d) for d in sp_shape]
            ndims = len(shape)
            if dense.ndim > ndims or any(
                    dd != 1 and dd != sd for dd, sd in zip(dense.shape[::-1], shape[::-1])):
                raise _err(f"SparseDenseBinaryOpShared broadcasts dense to sparse only; got "
                           f"incompatible shapes: [{_join(shape)}] vs. [{_join(dense.shape)}]")
            if sp_indices.shape[1] != ndims:
                raise _err(f"Expected sp_indices to have {ndims} columns, got "
                           f"{sp_indices.shape[1]}")  # pragma: no cover
            b = np.broadcast_to(dense, shape)
            nnz = sp_indices.shape[0]
            if nnz == 0:
                return (sp_values[:0].copy(),)
            ix = sp_indices.astype(np.int64)
            oob = np.any((ix < 0) | (ix >= np.asarray(shape, np.int64)), axis=1)
            if oob.any():
                raise _err("Provided indices are out-of-bounds w.r.t. dense side with "
                           "broadcasted shape")
            d = b[tuple(ix.T)]
            with np.errstate(all="ignore"):
                return (np.asarray(fn(sp_values, d)).astype(sp_values.dtype, copy=False),)
        return run
    return builder


register("SparseDenseCwiseMul", "CPU", type_constraints={"T": D.REAL_T})(
    _make_cwise(np.multiply))
register("SparseDenseCwiseDiv", "CPU", type_constraints={"T": D.REAL_T})(_make_cwise(_div))
register("SparseDenseCwiseAdd", "CPU", type_constraints={"T": D.REAL_T})(_make_cwise(np.add))


# --- Bincount / DenseBincount / SparseBincount ----------------------------------------------------
def _check_size(size):
    if size.ndim != 0:
        raise _err("Shape must be rank 0 but is rank " + str(size.ndim))
    s = int(size)
    if s < 0:
        raise _err(f"size ({s}) must be non-negative")
    return s


@register("Bincount", "CPU", type_constraints={"T": D.NUM_T}, host_memory=("size",))
def _bincount(node, ctx):
    out_dt = node.output_types[0].as_numpy_dtype

    def run(arr, size, weights):
        s = _check_size(size)
        a = arr.reshape(-1).astype(np.int64)
        if a.size and a.min() < 0:
            raise _err("Input arr must be non-negative!")
        out = np.zeros(s, out_dt)
        keep = a < s
        if weights.size:
            if weights.shape != arr.shape:
                raise _err(f"Input arr and weights must have the same shape: "
                           f"{_dbg(arr.shape)} vs {_dbg(weights.shape)}")  # pragma: no cover
            np.add.at(out, a[keep], weights.reshape(-1)[keep])
        else:
            np.add.at(out, a[keep], np.ones((), out_dt))
        return (out,)
    return run


def _bin_rows(data, weights, s, binary, out_dt, nrows):
    out = np.zeros((nrows, s), out_dt)
    rows, cols, w = data
    keep = cols < s
    rows, cols = rows[keep], cols[keep]
    if binary:
        out[rows, cols] = 1
    elif w is not None:
        np.add.at(out, (rows, cols), w[keep])
    else:
        np.add.at(out, (rows, cols), np.ones((), out_dt))
    return out


@register("DenseBincount", "CPU", type_constraints={"T": D.NUM_T, "Tidx": D.INDEX_T},
          host_memory=("size",))
def _dense_bincount(node, ctx):
    binary = bool(node.attr("binary_output", False))
    out_dt = node.output_types[0].as_numpy_dtype

    def run(inp, size, weights):
        s = _check_size(size)
        if inp.ndim not in (1, 2):
            raise _err(f"Input must be a 1 or 2-dimensional tensor. Got: {inp.ndim}")
        if weights.size and weights.shape != inp.shape:
            raise _err(f"Input and weights must have the same shape. Input shape: "
                       f"{_dbg(inp.shape)}; weights shape: {_dbg(weights.shape)}")
        if inp.size and inp.min() < 0:
            raise _err("Input must be non-negative")
        x = inp.astype(np.int64)
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        rows = np.repeat(np.arange(x2.shape[0]), x2.shape[1])
        w = weights.reshape(-1) if weights.size else None
        out = _bin_rows((rows, x2.reshape(-1), w), weights, s, binary, out_dt, x2.shape[0])
        return (out.reshape(s) if x.ndim == 1 else out,)
    return run


@register("SparseBincount", "CPU", type_constraints={"T": D.NUM_T, "Tidx": D.INDEX_T},
          host_memory=("size",))
def _sparse_bincount(node, ctx):
    binary = bool(node.attr("binary_output", False))
    out_dt = node.output_types[0].as_numpy_dtype

    def run(indices, values, dense_shape, size, weights):
        s = _check_size(size)
        rank = dense_shape.size
        if rank not in (1, 2):
            raise _err(f"Input must be a 1 or 2-dimensional tensor. Got: {rank}")
        if weights.size and weights.shape != values.shape:
            raise _err(f"Weights and values must have the same shape. Weight shape: "
                       f"{_dbg(weights.shape)}; values shape: {_dbg(values.shape)}")
        v = values.astype(np.int64)
        if v.size and v.min() < 0:
            raise _err("Input must be non-negative")
        w = weights if weights.size else None
        if rank == 1:
            rows = np.zeros(v.shape[0], np.int64)
            out = _bin_rows((rows, v, w), weights, s, binary, out_dt, 1)
            return (out.reshape(s),)
        nrows = int(dense_shape[0])
        rows = indices[:, 0].astype(np.int64)
        return (_bin_rows((rows, v, w), weights, s, binary, out_dt, nrows),)
    return run


# --- SparseMatMul -------------------------------------------------------------------------------
@register("SparseMatMul", "CPU", type_constraints={"Ta": [dtypes.float32, dtypes.bfloat16],
                                                   "Tb": [dtypes.float32, dtypes.bfloat16]})
def _sparse_matmul(node, ctx):
    ta = bool(node.attr("transpose_a", False))
    tb = bool(node.attr("transpose_b", False))

    def run(a, b):
        if a.ndim != 2:
            raise _err("a is not a matrix")
        if b.ndim != 2:
            raise _err("b is not a matrix")
        a2 = (a.T if ta else a).astype(np.float32)
        b2 = (b.T if tb else b).astype(np.float32)
        if a2.shape[1] != b2.shape[0]:
            raise _err(f"Matrix size incompatible: a: {_dbg(a.shape)}, b: {_dbg(b.shape)}")
        return (a2 @ b2,)
    return run
