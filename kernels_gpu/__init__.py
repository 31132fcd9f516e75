"""GPU kernels: CuPy on a real GPU, numpy buffers on the simulated GPU, numba.cuda where a
custom kernel wins. The same families as kernels_cpu.

How a GPU kernel is written
---------------------------
A builder registered with ``register_gpu`` (the registry's device type ``"GPU"``) gets the node
(``node.device`` is its Device) and returns ``run(*inputs) -> outputs``, like a CPU kernel, but
written against the device's array module ``xp = node.device.xp`` (``cupy`` on a GPU; on the
simulated GPU numpy seen through CuPy's names, making buffers of its own type):

- inputs and outputs in device memory are ``xp`` arrays; those in host memory (every int32,
  string and resource value, and the args the registration names in ``host_memory``; see
  runtime/placer.py) are numpy arrays, as TensorFlow's GPU kernels have them. An op whose every
  input and output is in host memory (int32 arithmetic, shape math) runs its CPU kernel:
  ``register_gpu(..., host_fallback=True)`` does that by itself;
- allocate with ``xp`` (``xp.empty``, ``xp.zeros``), never with numpy; turn a host value into a
  device one with ``xp.asarray`` (a small constant) and a host-memory shape into a tuple of ints;
- 0-d results are 0-d device arrays; a kernel must not call numpy functions CuPy lacks (the
  simulated GPU refuses them, so the tests catch it);
- a custom numba.cuda kernel is launched with ``launch(device, kernel, n, *args)`` when
  ``use_numba(device, n)`` says so (always on a real GPU; on the simulated GPU only up to
  ``MGRT_SIM_KERNEL_LIMIT`` elements, since numba's simulator runs each thread in Python), and
  the array-module path is used otherwise. Both paths are tested.

The executor checks, on a simulated GPU, that every output is where the placement says it lives
(a device buffer or a host array), so a kernel that returns the wrong kind fails in the tests.
"""

import numpy as np

from mgrt.runtime import dtypes
from mgrt.runtime.kernel_registry import lookup, register

__all__ = ["register_gpu", "cpu_builder", "all_host", "use_numba", "launch", "numba_cuda",
           "GPU_FLOAT", "GPU_INT", "GPU_NUM", "GPU_NUM_BOOL", "host_shape", "xp_of"]

GPU_FLOAT = [dtypes.float16, dtypes.float32, dtypes.float64]
GPU_INT = [dtypes.int8, dtypes.int16, dtypes.int32, dtypes.int64,
           dtypes.uint8, dtypes.uint16, dtypes.uint32, dtypes.uint64]
GPU_NUM = GPU_FLOAT + GPU_INT
GPU_NUM_BOOL = GPU_NUM + [dtypes.bool]

_HOST_TYPES = frozenset((dtypes.int32, dtypes.string, dtypes.resource))


def all_host(node):
    """Whether every input and output of ``node`` lives in host memory on a GPU (int32, string,
    resource values), so that its CPU kernel can run it, as TensorFlow's int32 GPU kernels do."""
    return all(t.base_dtype in _HOST_TYPES for t in node.input_types) and \
        all(t.base_dtype in _HOST_TYPES for t in node.output_types)


def cpu_builder(node):
    """The CPU kernel builder for ``node`` (its type constraints met), or None."""
    kd = lookup(node.op, "CPU", node.attrs)
    return kd.builder if kd is not None else None


def register_gpu(op_types, type_constraints=None, host_memory=(), device_memory=(),
                 host_fallback=False):
    """Register a GPU kernel builder for ``op_types``. With ``host_fallback``, a node whose
    inputs and outputs all live in host memory (``all_host``) runs the CPU kernel."""
    def deco(builder):
        b = builder
        if host_fallback:
            def b(node, ctx, _gpu=builder):
                if all_host(node):
                    cpu = cpu_builder(node)
                    if cpu is not None:
                        return cpu(node, ctx)
                return _gpu(node, ctx)
            b.__name__ = builder.__name__
            b.__doc__ = builder.__doc__
        register(op_types, "GPU", host_memory=host_memory, type_constraints=type_constraints,
                 device_memory=device_memory)(b)
        return builder
    return deco


def xp_of(node, ctx=None):
    """The array module of the node's device."""
    device = node.device if node.device is not None else getattr(ctx, "device", None)
    if device is None:
        raise ValueError(f"GPU kernel for {node.name} ({node.op}) built without a device")
    return device.xp


def host_shape(x):
    """A host-memory shape tensor (numpy int32/int64) as a tuple of Python ints."""
    return tuple(int(d) for d in np.asarray(x).reshape(-1))


# --- numba.cuda -------------------------------------------------------------------------------

_numba = {}


def numba_cuda():
    """``numba.cuda`` (imported on first use; the simulator when ``NUMBA_ENABLE_CUDASIM=1``),
    or None when numba is not installed."""
    if "cuda" not in _numba:
        from mgrt.devices.gpu import gpu_devices

        if not gpu_devices():  # no real GPU: numba's CUDA simulator, unless numba.cuda is
            from mgrt.devices.simulated_gpu import enable_numba_simulator  # already imported

            enable_numba_simulator()
        try:
            from numba import config, cuda

            # kernels are launched on the device's own stream, in order: numba need not
            # synchronize every CuPy array it is handed (its default does, per argument)
            config.CUDA_ARRAY_INTERFACE_SYNC = False
        except ImportError:
            cuda = None
        _numba["cuda"] = cuda
    return _numba["cuda"]


def _simulator_on():
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", False))


def use_numba(device, n):
    """Whether to launch a numba.cuda kernel over ``n`` elements on ``device``."""
    if numba_cuda() is None:
        return False
    if getattr(device, "is_simulated", False):
        from mgrt.devices.simulated_gpu import sim_kernel_limit

        return _simulator_on() and n <= sim_kernel_limit()
    return not _simulator_on()


def launch(device, kernel, n, *args, threads=256):
    """Launch ``kernel`` (a ``numba.cuda.jit`` function) over ``n`` threads on ``device``'s
    stream; device buffers are passed as they are (CuPy arrays through the CUDA array
    interface; simulated-GPU buffers as their numpy arrays, which the simulator writes in
    place)."""
    cuda = numba_cuda()
    blocks = max(1, (n + threads - 1) // threads)
    if getattr(device, "is_simulated", False):
        from mgrt.devices.simulated_gpu import SimArray

        args = tuple(a._a if type(a) is SimArray else a for a in args)
        kernel[blocks, threads](*args)
        return
    stream = cuda.external_stream(device.stream.ptr)
    kernel[blocks, threads, stream](*args)
