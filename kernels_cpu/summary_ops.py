"""Summary kernels: ScalarSummary, HistogramSummary, TensorSummaryV2, TensorSummary and
MergeSummary produce the serialized ``Summary`` protos TensorFlow's kernels produce.

HistogramSummary uses TensorFlow's default buckets (limits growing by 10% from 1e-12 to 1e20,
mirrored for negative values, 0 between, +-DBL_MAX at the ends; a value falls in the first
bucket whose limit is above it) and encodes them as TensorFlow does: a run of empty buckets is
collapsed into one entry at the run's last limit.
"""

import numpy as np

from mgrt.protos import histogram_pb2, summary_pb2, tensor_pb2
from mgrt.runtime import dtypes
from mgrt.runtime.errors import InvalidArgumentError
from mgrt.runtime.kernel_registry import register

_DBL_MAX = float(np.finfo(np.float64).max)


def _default_bucket_limits():
    pos = []
    v = 1.0e-12
    while v < 1.0e20:
        pos.append(v)
        v *= 1.1
    pos.append(_DBL_MAX)
    neg = [-x for x in reversed(pos)]
    return np.array(neg + [0.0] + pos, dtype=np.float64)


BUCKET_LIMITS = _default_bucket_limits()


def _err(msg):
    return InvalidArgumentError(None, None, msg)


def _shape_str(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _as_text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def _out(serialized):
    out = np.empty((), dtype=object)
    out[()] = serialized
    return (out,)


@register("ScalarSummary")
def _scalar_summary(node, ctx):
    def run(tags, values):
        tags = np.asarray(tags)
        values = np.asarray(values)
        if not (tags.shape == values.shape or (tags.ndim == 0 and values.ndim == 0)):
            single = f" (tag '{_as_text(tags.reshape(-1)[0])}')" if tags.size == 1 else ""
            raise _err(f"tags and values are not the same shape: {_shape_str(tags.shape)} != "
                       f"{_shape_str(values.shape)}{single}")
        s = summary_pb2.Summary()
        for tag, value in zip(tags.reshape(-1), values.reshape(-1)):
            v = s.value.add()
            v.tag = _as_text(tag)
            v.simple_value = float(np.float32(value))
        return _out(s.SerializeToString())
    return run


def histogram_proto(values, name=""):
    """A HistogramProto of ``values`` as TensorFlow's HistogramSummary kernel builds it."""
    x = np.asarray(values).reshape(-1).astype(np.float64)
    if x.size:
        bad = ~np.isfinite(x)
        if bad.any():
            first = x[bad][0]
            if np.isnan(first):
                raise _err(f"Nan in summary histogram for: {name}")
            raise _err(f"Infinity in Histogram for: {name}")
    h = histogram_pb2.HistogramProto()
    if x.size:
        h.min = float(x.min())
        h.max = float(x.max())
        # TensorFlow adds the values one at a time: a sequential sum (not numpy's pairwise)
        h.sum = float(np.cumsum(x)[-1])
        h.sum_squares = float(np.cumsum(x * x)[-1])
    else:
        h.min = _DBL_MAX
        h.max = -_DBL_MAX
    h.num = float(x.size)
    counts = np.bincount(np.searchsorted(BUCKET_LIMITS, x, side="right"),
                         minlength=BUCKET_LIMITS.size).astype(np.float64)
    limits, buckets = [], []
    i, n = 0, BUCKET_LIMITS.size
    while i < n:
        end, count = BUCKET_LIMITS[i], counts[i]
        i += 1
        if count <= 0.0:
            while i < n and counts[i] <= 0.0:
                end, count = BUCKET_LIMITS[i], counts[i]
                i += 1
        limits.append(float(end))
        buckets.append(float(count))
    if not buckets:
        limits, buckets = [_DBL_MAX], [0.0]
    h.bucket_limit.extend(limits)
    h.bucket.extend(buckets)
    return h


@register("HistogramSummary")
def _histogram_summary(node, ctx):
    name = node.name

    def run(tag, values):
        tag = np.asarray(tag)
        if tag.ndim != 0:
            raise _err(f"tags must be scalar: {_shape_str(tag.shape)}")
        s = summary_pb2.Summary()
        v = s.value.add()
        v.tag = _as_text(tag[()])
        v.histo.CopyFrom(histogram_proto(values, name))
        return _out(s.SerializeToString())
    return run


def _tensor_proto(x, dtype):
    """Tensor::AsProtoField for strings, AsProtoTensorContent otherwise."""
    x = np.asarray(x)
    tp = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    tp.tensor_shape.SetInParent()
    for d in x.shape:
        tp.tensor_shape.dim.add(size=int(d))
    if dtype == dtypes.string:
        tp.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8")
                             for v in x.reshape(-1))
    else:
        tp.tensor_content = np.ascontiguousarray(x, dtype=dtype.as_numpy_dtype).tobytes()
    return tp


@register("TensorSummaryV2")
def _tensor_summary_v2(node, ctx):
    dtype = node.attr("T")

    def run(tag, tensor, serialized_summary_metadata):
        tag = np.asarray(tag)
        if tag.ndim != 0:
            raise _err(f"tag must be a scalar: {_shape_str(tag.shape)}")
        s = summary_pb2.Summary()
        v = s.value.add()
        v.tag = _as_text(tag[()])
        v.tensor.CopyFrom(_tensor_proto(tensor, dtype))
        meta = np.asarray(serialized_summary_metadata)[()]
        try:
            v.metadata.ParseFromString(meta if isinstance(meta, bytes) else bytes(meta))
        except Exception:  # noqa: BLE001  (protobuf's DecodeError differs across versions)
            raise _err("Could not parse the serialized summary metadata") from None
        return _out(s.SerializeToString())
    return run


@register("TensorSummary")
def _tensor_summary(node, ctx):
    dtype = node.attr("T")
    a = node.attrs

    def text(k):
        v = a.get(k, b"")
        return _as_text(v) if v is not None else ""

    def run(tensor):
        s = summary_pb2.Summary()
        v = s.value.add()
        v.node_name = node.name
        v.tensor.CopyFrom(_tensor_proto(tensor, dtype))
        if text("description"):
            v.metadata.summary_description = text("description")
        if text("display_name"):
            v.metadata.display_name = text("display_name")
        return _out(s.SerializeToString())
    return run


@register("MergeSummary")
def _merge_summary(node, ctx):
    def run(*inputs):
        s = summary_pb2.Summary()
        tags = set()
        for x in inputs:
            for one in np.asarray(x).reshape(-1):
                part = summary_pb2.Summary()
                try:
                    part.ParseFromString(one if isinstance(one, bytes) else bytes(one))
                except Exception:  # noqa: BLE001
                    raise _err("Could not parse one of the summary inputs") from None
                for v in part.value:
                    # the tag of TensorSummary's values is unused: not checked
                    if v.tag and v.tag in tags:
                        raise _err(f"Duplicate tag {v.tag} found in summary inputs ")
                    tags.add(v.tag)
                    s.value.add().CopyFrom(v)
        return _out(s.SerializeToString())
    return run
