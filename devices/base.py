"""The Device interface: what the placer, the plan and the executor know of a device.

A Device is one place where tensors live and kernels run: the host CPU (numpy arrays), a GPU
(CuPy arrays, issue 5), the simulated GPU (numpy-backed buffers of a type of its own). Every
device has

- ``name``: TensorFlow's full canonical name, ``/job:localhost/replica:0/task:0/device:CPU:0``;
- ``device_type`` (``"CPU"``, ``"GPU"``), ``index`` (the ``N`` of ``device:GPU:N``), ``job``,
  ``replica``, ``task``, and ``spec``, the same as a ``DeviceSpec``;
- ``xp``: the array module its buffers belong to (``numpy``, ``cupy``);
- ``is_host_memory``: whether its buffers are host (numpy) arrays. True for the CPU. Tensors
  in host memory never need a copy to be read by the CPU, and kernels of other devices read and
  write some arguments in host memory (shapes, int32 scalars, strings, resource handles; see
  ``mgrt.runtime.placer``);
- ``put(host_array) -> buffer``: a host (numpy) array onto this device;
- ``fetch(buffer) -> numpy.ndarray``: a buffer of this device back to the host;
- ``copy_from(buffer, other_device) -> buffer``: a buffer of ``other_device`` onto this one;
- ``synchronize()``: wait until the work queued on this device is done;
- ``activate()``: make the device current for the kernels this thread queues next;
- ``is_buffer(x)``: whether ``x`` is a buffer of this device;
- ``memory_info() -> dict``: ``total``, ``free`` and ``used`` bytes (``None`` where unknown),
  plus whatever else the device knows (``pool_used`` ...).

Devices compare and hash by name: two Device objects with the same name are the same device.
"""

from mgrt.devices.device_spec import DeviceSpec

__all__ = ["Device"]


class Device:
    """A device of this process. Subclasses implement the data movement methods.

    ``Device(device_type, index=0, job="localhost", replica=0, task=0)``.
    """

    #: Whether buffers of this device are host (numpy) arrays. Subclasses set it.
    is_host_memory = False

    def __init__(self, device_type, index=0, job="localhost", replica=0, task=0):
        spec = DeviceSpec(job=job, replica=replica, task=task, device_type=device_type,
                          device_index=index)
        if spec.device_type in (None, "*") or spec.job in (None, "*"):
            raise ValueError(f"A device needs a job and a device type, got {spec.to_string()!r}")
        self._spec = spec
        self._name = spec.to_string()
        self._device_type = spec.device_type
        self._index = spec.device_index
        self._key = (spec.job, spec.replica, spec.task, spec.device_type, spec.device_index)

    # -- identity --------------------------------------------------------------------------

    @property
    def name(self):
        """The full canonical name: ``/job:localhost/replica:0/task:0/device:CPU:0``."""
        return self._name

    @property
    def device_type(self):
        """``"CPU"``, ``"GPU"``."""
        return self._device_type

    @property
    def index(self):
        """The device's number among the devices of its type (``GPU:1`` -> 1)."""
        return self._index

    @property
    def job(self):
        return self._spec.job

    @property
    def replica(self):
        return self._spec.replica

    @property
    def task(self):
        return self._spec.task

    @property
    def spec(self):
        """A DeviceSpec of this device's full name (a fresh copy: DeviceSpecs are mutable)."""
        return DeviceSpec(*self._key)

    @property
    def short_name(self):
        """``/device:GPU:0``: the name without job, replica and task."""
        return f"/device:{self._device_type}:{self._index}"

    @property
    def description(self):
        """One line about the hardware behind the device (model, memory), for listings."""
        return ""

    # -- data ------------------------------------------------------------------------------

    @property
    def xp(self):
        """The array module of this device's buffers (numpy, cupy)."""
        raise NotImplementedError

    def put(self, host_array):
        """A host (numpy) array as a buffer of this device."""
        raise NotImplementedError

    def fetch(self, buffer):
        """A buffer of this device as a numpy array."""
        raise NotImplementedError

    def copy_from(self, buffer, other_device):
        """``buffer``, which lives on ``other_device``, as a buffer of this device.

        The default goes through the host: ``self.put(other_device.fetch(buffer))``. Devices
        with a faster path (GPU to GPU, pinned staging) override it.
        """
        if other_device is self or other_device == self:
            return buffer
        return self.put(other_device.fetch(buffer))

    def synchronize(self):
        """Wait until every piece of work queued on this device has finished."""
        raise NotImplementedError

    def activate(self):
        """Make this device current for the kernels this thread queues next (a GPU: its CUDA
        device and stream). The executor calls it before running the device's steps."""

    def is_buffer(self, x):
        """Whether ``x`` is a buffer of this device (the executor checks kernel outputs of
        simulated devices with it)."""
        return True

    def memory_info(self):
        """``{"total": bytes, "free": bytes, "used": bytes, ...}``; ``None`` where unknown."""
        raise NotImplementedError

    # -- comparison ------------------------------------------------------------------------

    def __eq__(self, other):
        return isinstance(other, Device) and self._key == other._key

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self._key)

    def __lt__(self, other):
        """Listing order: by job, replica, task, then CPU before GPU before other types, then
        by index (numerically: ``GPU:2`` before ``GPU:10``)."""
        return _sort_key(self) < _sort_key(other)

    def __repr__(self):
        return f"<{type(self).__name__} {self._name}>"

    def __str__(self):
        return self._name


_TYPE_LIST_ORDER = {"CPU": 0, "GPU": 1}


def _sort_key(device):
    j, r, t, dt, i = device._key
    return (j, r, t, _TYPE_LIST_ORDER.get(dt, 2), dt, i)
