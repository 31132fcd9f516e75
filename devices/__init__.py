"""Device names (parse, merge, canonical form) and the devices mgrt places nodes on.

``list_devices(config=None)`` lists the devices of this process: the CPU always (numpy), then
what each registered device provider finds: the real GPUs CuPy sees (``devices/gpu.py``), else
``MGRT_SIMULATED_GPUS`` simulated ones (``devices/simulated_gpu.py``). The GPU devices come from providers
(``register_device_provider``), so that this module works the same whether CuPy is installed
or not; a provider is a callable ``provider(config) -> iterable of Device`` (``config`` is the
session's ConfigProto or None) that returns ``[]`` where its hardware or library is missing.
"""

import threading

from mgrt.devices.base import Device
from mgrt.devices.cpu import CPUDevice
from mgrt.devices.device_spec import (
    DeviceSpec,
    canonical_name,
    is_local,
    matches,
    merge_device_strings,
    parse_device_for_node,
    parse_full_name,
)

__all__ = [
    "Device",
    "CPUDevice",
    "DeviceSpec",
    "list_devices",
    "gpu_status",
    "register_device_provider",
    "unregister_device_provider",
    "device_providers",
    "canonical_name",
    "is_local",
    "matches",
    "merge_device_strings",
    "parse_device_for_node",
    "parse_full_name",
]

_lock = threading.Lock()
_providers = []


def _real_gpus(config):
    from mgrt.devices.gpu import gpu_devices

    return gpu_devices(config)


_warned_sim = []


def _simulated_gpus(config):
    from mgrt.devices import simulated_gpu

    n = simulated_gpu.simulated_gpu_count()
    if not n:
        return []
    from mgrt.devices.gpu import gpu_devices

    if gpu_devices(config):
        if not _warned_sim:
            _warned_sim.append(True)
            import sys

            sys.stderr.write(f"mgrt: {simulated_gpu.ENV_COUNT}={n} is ignored: this host has "
                             "real GPUs\n")
        return []
    simulated_gpu.enable_numba_simulator()
    return simulated_gpu.simulated_gpus(n)


def register_device_provider(provider):
    """Add ``provider(config) -> iterable of Device`` to the providers ``list_devices`` asks
    (in registration order, after the CPU). Registering the same callable twice is a no-op.
    Returns ``provider``, so it can be used as a decorator."""
    if not callable(provider):
        raise TypeError(f"A device provider must be callable, got {provider!r}")
    with _lock:
        if provider not in _providers:
            _providers.append(provider)
    return provider


def unregister_device_provider(provider):
    """Remove a provider added with ``register_device_provider`` (no-op if absent)."""
    with _lock:
        if provider in _providers:
            _providers.remove(provider)


def device_providers():
    """The registered providers, in the order ``list_devices`` asks them."""
    with _lock:
        return list(_providers)


def _device_count(config):
    """``config.device_count`` as ``{type: int}`` (a dict, or a protobuf map), or ``{}``."""
    if config is None:
        return {}
    counts = getattr(config, "device_count", None)
    if not counts:
        return {}
    out = {}
    for key in counts:
        value = counts[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"device_count[{key!r}] must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"device_count[{key!r}] must be >= 0, got {value}")
        key = str(key)
        out[key.upper() if key.lower() in ("cpu", "gpu") else key] = value
    return out


_providers.extend([_real_gpus, _simulated_gpus])


def gpu_status():
    """One line: the GPUs this process sees (real or simulated), or why there are none."""
    from mgrt.devices import simulated_gpu
    from mgrt.devices.gpu import gpu_devices, gpu_status as real_status

    n = simulated_gpu.simulated_gpu_count()
    if n and not gpu_devices():
        return f"{n} simulated GPU(s) ({simulated_gpu.ENV_COUNT}={n}); " + real_status()
    return real_status()


def list_devices(config=None):
    """The devices of this process, as a list: ``CPU:0`` first (always), then those of each
    device provider, sorted by job, type (CPU, GPU, others) and index.

    ``config`` (a ConfigProto, or anything with a ``device_count`` mapping) limits the count of
    each type as TensorFlow's ``device_count`` does: ``{"GPU": 0}`` hides every GPU,
    ``{"GPU": 1}`` keeps ``GPU:0``; ``{"CPU": n}`` gives ``n`` CPU devices ``CPU:0`` ...
    (all numpy; TensorFlow makes n CPU devices too). ``{"CPU": 0}`` still gives ``CPU:0``:
    mgrt always has a host device (TensorFlow fails with "No CPU devices are available in this
    process").
    """
    counts = _device_count(config)
    n_cpu = max(1, counts.get("CPU", 1))
    devices = [CPUDevice(i) for i in range(n_cpu)]
    seen = {d.name for d in devices}
    for provider in device_providers():
        found = provider(config)
        for d in found or ():
            if not isinstance(d, Device):
                raise TypeError(f"Device provider {provider!r} returned {d!r}, which is not "
                                f"an mgrt.devices.Device")
            if d.device_type == "CPU":
                continue  # the host CPU devices are this module's
            if d.name in seen:
                continue
            seen.add(d.name)
            devices.append(d)
    devices.sort()
    if counts:
        kept, per_type = [], {}
        for d in devices:
            limit = counts.get(d.device_type)
            n = per_type.get(d.device_type, 0)
            if limit is not None and n >= limit and d.device_type != "CPU":
                continue
            per_type[d.device_type] = n + 1
            kept.append(d)
        devices = kept
    return devices
