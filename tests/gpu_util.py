"""Running one GPU kernel on recorded inputs (the GPU twin of kernel_util.run_kernel).

Inputs go where the kernel reads them (device buffers, or host arrays for host-memory args:
int32, strings, resources, the registration's ``host_memory`` names), the outputs are checked
to be where the kernel must leave them, then fetched to numpy for comparison.
"""

import numpy as np

from mgrt.runtime import kernel_registry, op_defs, placer
from kernel_util import kernel_node


def gpu_kernel_def(node):
    return kernel_registry.lookup(node.op, "GPU", node.attrs)


def has_gpu_kernel(node_def):
    node = kernel_node(node_def)
    return gpu_kernel_def(node) is not None


def host_flags(node, kd):
    op_def = op_defs.default_registry().get(node.op)
    return placer.kernel_host_memory(node.node_def, op_def, node.input_types,
                                     node.output_types, kd)


def run_kernel_gpu(node_def, inputs, device, ctx=None):
    """Build the node's GPU kernel for ``device`` and run it once; returns numpy outputs."""
    node = kernel_node(node_def)
    node.device = device
    kd = gpu_kernel_def(node)
    assert kd is not None, f"no GPU kernel for {node.op}"
    in_host, out_host = host_flags(node, kd)
    run = kd.builder(node, ctx)
    args = []
    for x, on_host in zip(inputs, in_host):
        x = np.asarray(x) if not isinstance(x, np.ndarray) else x
        args.append(x if on_host else device.put(x))
    outs = run(*args)
    assert isinstance(outs, (tuple, list)), f"{node.op}: run must return a tuple or list"
    assert len(outs) == len(node.output_types), (node.op, len(outs), len(node.output_types))
    result = []
    for k, (o, t, on_host) in enumerate(zip(outs, node.output_types, out_host)):
        if on_host:
            assert isinstance(o, np.ndarray), \
                f"{node.op}: output {k} lives in host memory, got {type(o).__name__}"
            host = o
        else:
            assert device.is_buffer(o), \
                f"{node.op}: output {k} lives on {device.short_name}, got {type(o).__name__}"
            host = device.fetch(o)
        if t.base_dtype.as_numpy_dtype is not object:
            assert host.dtype == np.dtype(t.base_dtype.as_numpy_dtype), (node.op, host.dtype, t)
        result.append(host)
    return result
