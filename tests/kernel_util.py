"""Running one kernel on recorded inputs, for the op-level tests (no executor involved).

Op fixtures (tests/fixtures/ops/*.npz, written by real TensorFlow) hold, per case, the NodeDef
TensorFlow built (serialized), the input arrays and the output arrays TensorFlow computed.
"""

import numpy as np

from mgrt.protos import node_def_pb2
from mgrt.runtime import kernel_registry, op_defs


def kernel_node(node_def):
    if isinstance(node_def, (bytes, bytearray)):
        node_def = node_def_pb2.NodeDef.FromString(bytes(node_def))
    op_def = op_defs.default_registry().get(node_def.op)
    assert op_def is not None, node_def.op
    return kernel_registry.KernelNode.from_node_def(node_def, op_def)


def run_kernel(node_def, inputs, device_type="CPU", ctx=None):
    """Build the node's kernel and run it once on ``inputs``; returns the list of outputs."""
    node = kernel_node(node_def)
    kd = kernel_registry.lookup(node.op, device_type, node.attrs)
    assert kd is not None, f"no {device_type} kernel for {node.op}"
    run = kd.builder(node, ctx)
    outs = run(*[np.asarray(x) if not isinstance(x, np.ndarray) else x for x in inputs])
    assert isinstance(outs, (tuple, list)), f"{node.op}: run must return a tuple or list"
    assert len(outs) == len(node.output_types), (node.op, len(outs), len(node.output_types))
    for o, t in zip(outs, node.output_types):
        assert isinstance(o, np.ndarray), f"{node.op}: output {type(o)} is not an ndarray"
        if t.base_dtype.as_numpy_dtype is not object:
            assert o.dtype == np.dtype(t.base_dtype.as_numpy_dtype), (node.op, o.dtype, t)
    return list(outs)


def conv_node_def(op, **attrs):
    """A NodeDef named "n" for a convolution or pooling op: ``padding``/``data_format`` as
    strings, lists as int lists, the rest as dtypes."""
    from mgrt.runtime import dtypes
    nd = node_def_pb2.NodeDef(name="n", op=op)
    for k, v in attrs.items():
        if k in ("padding", "data_format"):
            nd.attr[k].s = v.encode()
        elif isinstance(v, list):
            nd.attr[k].list.i.extend(v)
        else:
            nd.attr[k].type = dtypes.as_dtype(v).as_datatype_enum
    return nd
