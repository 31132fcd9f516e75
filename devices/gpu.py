"""The GPU device: CuPy arrays on one CUDA device, a stream of its own, pinned host staging.

One ``GPUDevice`` per GPU that CuPy sees (``CUDA_VISIBLE_DEVICES`` is honoured by CUDA itself:
``GPU:0`` is the first visible one). CuPy is the optional ``gpu`` extra (``pip install
mgrt[gpu]``); without it, or without a driver or a device, ``gpu_devices()`` is empty and
``gpu_status()`` says why in one line (``mgrt inspect`` and soft-placement warnings print it).

Data movement:

- ``put(host)``: host -> device. Arrays of at least ``_PINNED_MIN`` bytes go through a pinned
  staging buffer (CuPy's pinned memory pool), copied asynchronously on the device's stream; the
  call returns once the copy is done, so the caller may reuse its array at once.
- ``fetch(buf)``: device -> host, on the device's stream, after the work queued before it
  (stream order), into pinned staging and then into a fresh numpy array.
- ``copy_from(buf, other)``: another GPU's buffer, copied device to device (peer access where the
  driver allows, else staged by CUDA), ordered after the source's stream.

Kernels are queued on the device's stream: the executor calls ``activate()`` (make this the
current CUDA device and stream) before it runs the device's steps. Errors: CuPy's
``OutOfMemoryError`` becomes ``ResourceExhaustedError`` naming the node, the bytes asked for and
what the device has free (runtime/executor.py).
"""

import threading

import numpy as np

from mgrt.devices.base import Device

__all__ = ["GPUDevice", "gpu_devices", "gpu_status", "cupy_or_none"]

_PINNED_MIN = 1 << 20

_lock = threading.Lock()
_state = {"probed": False, "cupy": None, "devices": [], "status": None}


def cupy_or_none():
    """The cupy module if it is installed and sees at least one GPU, else None."""
    _probe()
    return _state["cupy"] if _state["devices"] else None


def _probe():
    with _lock:
        if _state["probed"]:
            return
        _state["probed"] = True
        try:
            import cupy
        except ImportError:
            _state["status"] = ("no GPU: CuPy is not installed (pip install 'mgrt[gpu]', or "
                                "cupy-cuda12x / cupy-cuda11x for your CUDA)")
            return
        except Exception as e:  # noqa: BLE001 - a broken CuPy install is reported, not raised
            _state["status"] = f"no GPU: CuPy failed to import: {type(e).__name__}: {e}"
            return
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # noqa: BLE001 - no driver, no device, driver too old
            _state["status"] = (f"no GPU: CuPy {cupy.__version__} finds no usable CUDA device "
                                f"({type(e).__name__}: {e}); check the NVIDIA driver and "
                                "CUDA_VISIBLE_DEVICES")
            return
        if n == 0:
            _state["status"] = (f"no GPU: CuPy {cupy.__version__} sees 0 CUDA devices "
                                "(CUDA_VISIBLE_DEVICES may hide them)")
            return
        _state["cupy"] = cupy
        _state["devices"] = [GPUDevice(i, cupy) for i in range(n)]
        names = ", ".join(d.description for d in _state["devices"])
        _state["status"] = f"{n} GPU(s): {names}"


def gpu_devices(config=None):
    """The real GPUs of this process (a device provider: ``provider(config)``)."""
    _probe()
    return list(_state["devices"])


def gpu_status():
    """One line: how many GPUs CuPy sees, or why there are none."""
    _probe()
    return _state["status"]


class GPUDevice(Device):
    """``GPUDevice(index, cupy)``: CUDA device ``index`` through CuPy."""

    is_host_memory = False
    is_simulated = False

    def __init__(self, index, cupy, job="localhost", replica=0, task=0):
        super().__init__("GPU", index, job, replica, task)
        self._cp = cupy
        self._cuda = cupy.cuda.Device(index)
        with self._cuda:
            self._stream = cupy.cuda.Stream(non_blocking=True)
        try:
            props = cupy.cuda.runtime.getDeviceProperties(index)
            name = props.get("name", b"")
            self._model = name.decode() if isinstance(name, bytes) else str(name)
            self._total = int(props.get("totalGlobalMem", 0)) or None
        except Exception:  # noqa: BLE001 - description only
            self._model, self._total = "CUDA device", None

    @property
    def xp(self):
        return self._cp

    @property
    def stream(self):
        return self._stream

    @property
    def description(self):
        mem = f", {self._total / 2**30:.1f} GiB" if self._total else ""
        return f"{self._model}{mem} (CuPy {self._cp.__version__})"

    def is_buffer(self, x):
        return isinstance(x, self._cp.ndarray) and x.device.id == self._index

    def activate(self):
        """Make this the current CUDA device and its stream the current stream."""
        self._cuda.use()
        self._stream.use()

    def put(self, host_array):
        cp = self._cp
        host = np.ascontiguousarray(host_array)
        if host.dtype == object:
            raise TypeError("String (object) tensors live in host memory; they cannot be put "
                            "on a GPU")
        with self._cuda:
            out = cp.empty(host.shape, dtype=host.dtype)
            if host.nbytes >= _PINNED_MIN:
                mem = cp.cuda.alloc_pinned_memory(host.nbytes)
                staged = np.frombuffer(mem, host.dtype, host.size).reshape(host.shape)
                staged[...] = host
                out.set(staged, stream=self._stream)
            else:
                out.set(host, stream=self._stream)
            self._stream.synchronize()  # the staging buffer and the caller's array are free
        return out

    def fetch(self, buffer):
        cp = self._cp
        if not isinstance(buffer, cp.ndarray):
            raise TypeError(f"fetch() on {self.short_name} takes a CuPy array, got "
                            f"{type(buffer).__name__}")
        with self._cuda:
            if buffer.nbytes >= _PINNED_MIN:
                mem = cp.cuda.alloc_pinned_memory(buffer.nbytes)
                staged = np.frombuffer(mem, buffer.dtype, buffer.size).reshape(buffer.shape)
                buffer.get(stream=self._stream, out=staged)
                self._stream.synchronize()
                return staged.copy()
            out = buffer.get(stream=self._stream)
            self._stream.synchronize()
            return out

    def copy_from(self, buffer, other_device):
        if other_device is self or other_device == self:
            return buffer
        if other_device.is_host_memory:
            return self.put(buffer)
        if isinstance(other_device, GPUDevice):
            other_device._stream.synchronize()  # the source is written
            buffer = self._cp.ascontiguousarray(buffer)
            with self._cuda:
                out = self._cp.empty_like(buffer)
                out.data.copy_from_device_async(buffer.data, buffer.nbytes, self._stream)
                self._stream.synchronize()
            return out
        return self.put(other_device.fetch(buffer))

    def synchronize(self):
        self._stream.synchronize()

    def memory_info(self):
        cp = self._cp
        with self._cuda:
            free, total = cp.cuda.runtime.memGetInfo()
            pool = cp.get_default_memory_pool()
            return {"total": int(total), "free": int(free), "used": int(total - free),
                    "pool_used": int(pool.used_bytes()), "pool_held": int(pool.total_bytes())}
