"""The CPU device: buffers are numpy arrays, kernels are numpy (and numba) functions.

``put`` and ``fetch`` hand arrays over as they are (``numpy.asarray``: no copy for an ndarray);
kernels do not change their inputs, and the variable store owns its buffers. Every CPU device
of a process shares host memory, so a copy between two of them is no copy at all.
"""

import os

import numpy as np

from mgrt.devices.base import Device

__all__ = ["CPUDevice", "host_memory_info"]


class CPUDevice(Device):
    """``CPUDevice(index=0, job="localhost", replica=0, task=0)``."""

    is_host_memory = True

    def __init__(self, index=0, job="localhost", replica=0, task=0):
        super().__init__("CPU", index, job, replica, task)

    @property
    def xp(self):
        return np

    @property
    def description(self):
        n = os.cpu_count()
        return f"host CPU, numpy {np.__version__}" + (f", {n} cores" if n else "")

    def put(self, host_array):
        return np.asarray(host_array)

    def fetch(self, buffer):
        return np.asarray(buffer)

    def copy_from(self, buffer, other_device):
        if other_device.is_host_memory:
            return buffer  # host memory is shared by every host-memory device
        return np.asarray(other_device.fetch(buffer))

    def synchronize(self):
        pass

    def is_buffer(self, x):
        return isinstance(x, np.ndarray)

    def memory_info(self):
        return host_memory_info()


def host_memory_info():
    """``{"total", "free", "used"}`` bytes of the host's memory: ``/proc/meminfo`` (``free`` is
    MemAvailable), else ``os.sysconf``; ``None`` where the system does not say."""
    total = free = None
    try:
        with open("/proc/meminfo", "rb") as f:
            fields = {}
            for line in f:
                key, _, rest = line.partition(b":")
                parts = rest.split()
                if parts:
                    fields[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == [b"kB"] else 1)
        total = fields.get(b"MemTotal")
        free = fields.get(b"MemAvailable", fields.get(b"MemFree"))
    except (OSError, ValueError):
        pass
    if total is None:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total = os.sysconf("SC_PHYS_PAGES") * page
            free = os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            pass
    used = total - free if total is not None and free is not None else None
    return {"total": total, "free": free, "used": used}
