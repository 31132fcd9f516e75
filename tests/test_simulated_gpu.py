"""The simulated GPU device (devices/simulated_gpu.py): its buffers refuse host arrays as CuPy's
do, its array module has CuPy's names only, copies are counted, and the provider follows
MGRT_SIMULATED_GPUS."""

import numpy as np
import pytest

import mgrt
import mgrt.compat.v1
from mgrt.devices import gpu_status, list_devices
from mgrt.devices.simulated_gpu import (HostArrayError, SimArray, SimulatedGPUDevice,
                                        simulated_gpu_count, simulated_gpus)


@pytest.fixture
def dev():
    d = SimulatedGPUDevice(0)
    return d


def test_put_fetch_round_trip_copies_and_counts(dev):
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    buf = dev.put(host)
    assert isinstance(buf, SimArray) and dev.is_buffer(buf)
    host[0, 0] = 99  # the buffer is a copy
    back = dev.fetch(buf)
    assert isinstance(back, np.ndarray) and back[0, 0] == 0
    back[1, 1] = -1  # so is the fetched array
    assert dev.fetch(buf)[1, 1] == 5
    s = dev.stats.snapshot()
    assert (s["puts"], s["put_bytes"], s["fetches"], s["fetch_bytes"]) == (1, 48, 2, 96)
    dev.stats.reset()
    assert dev.stats["puts"] == 0


def test_buffers_refuse_host_arrays(dev):
    a = dev.put(np.ones(3, np.float32))
    host = np.ones(3, np.float32)
    for f in (lambda: a + host, lambda: host * a, lambda: np.maximum(a, host),
              lambda: np.concatenate([a, host]), lambda: a.__setitem__(0, host[:1]),
              lambda: dev.xp.add(host, host), lambda: dev.fetch(host)):
        with pytest.raises(HostArrayError):
            f()
    with pytest.raises(HostArrayError, match="Implicit conversion"):
        np.asarray(a)
    # numpy and Python scalars mix, as with CuPy
    assert dev.fetch(a * np.float32(2) + 1).tolist() == [3.0, 3.0, 3.0]


def test_results_are_device_buffers_and_0d_stays_an_array(dev):
    xp = dev.xp
    a = dev.put(np.arange(6, dtype=np.float32).reshape(2, 3))
    for r in (a.sum(), xp.sum(a), a.max(), xp.mean(a, axis=0), a.T, a[0], a[a > 2],
              xp.matmul(a, a.T), xp.zeros((2,), np.float32), xp.where(a > 1, a, 0),
              xp.concatenate([a, a]), xp.stack([a, a]), a.astype(np.float16)):
        assert type(r) is SimArray and r.device is dev, r
    assert a.sum().shape == () and float(a.sum()) == 15.0
    assert xp.asarray(3.0).shape == ()


def test_only_cupy_names(dev):
    xp = dev.xp
    a = dev.put(np.ones((2, 2), np.float32))
    with pytest.raises(AttributeError, match="CuPy"):
        xp.errstate  # numpy has it, CuPy does not
    with pytest.raises(AttributeError, match="cupy.ndarray"):
        a.setflags
    with pytest.raises(TypeError, match="no CuPy .*counterpart"):
        np.busday_count(a, a)


def test_asarray_is_an_implicit_put(dev):
    b = dev.xp.asarray(np.array([1, 2], np.int64))
    assert dev.is_buffer(b)
    s = dev.stats.snapshot()
    assert (s["implicit_puts"], s["implicit_put_bytes"], s["puts"]) == (1, 16, 0)


def test_two_devices_do_not_mix_and_peer_copies_are_counted():
    g0, g1 = SimulatedGPUDevice(0), SimulatedGPUDevice(1)
    a = g0.put(np.ones(4, np.float32))
    b = g1.put(np.ones(4, np.float32))
    with pytest.raises(HostArrayError, match="GPU:0 and /device:GPU:1|GPU:1 and /device:GPU:0"):
        a + b
    c = g1.copy_from(a, g0)
    assert g1.is_buffer(c) and not g0.is_buffer(c)
    assert g1.stats["peer_copies"] == 1 and g1.stats["peer_copy_bytes"] == 16
    assert g1.fetch(c + b).tolist() == [2.0] * 4
    with pytest.raises(HostArrayError):
        g1.put(a)  # a device buffer is not a host array


def test_strings_cannot_go_to_the_gpu(dev):
    with pytest.raises(TypeError, match="host memory"):
        dev.put(np.array([b"a"], dtype=object))


def test_numba_kernel_runs_in_the_simulator(dev):
    from mgrt.kernels_gpu import launch, use_numba

    twice = _twice_kernel()
    x = dev.put(np.arange(5, dtype=np.float32))
    out = dev.xp.empty((5,), np.float32)
    assert use_numba(dev, 5)
    assert not use_numba(dev, 10 ** 6)  # the simulator is far too slow for that
    launch(dev, twice, 5, x, out)
    assert dev.fetch(out).tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


def _twice_kernel():
    # numba's simulator swaps the *global* name ``cuda`` in a kernel's module for its fake
    # module while the kernel runs: kernels refer to a module-level ``cuda``
    global cuda
    from mgrt.kernels_gpu import numba_cuda

    cuda = numba_cuda()

    @cuda.jit
    def twice(x, out):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = 2 * x[i]

    return twice


def test_provider_follows_the_environment(monkeypatch):
    monkeypatch.delenv("MGRT_SIMULATED_GPUS", raising=False)
    assert simulated_gpu_count() == 0
    assert [d.device_type for d in list_devices()] == ["CPU"]
    monkeypatch.setenv("MGRT_SIMULATED_GPUS", "2")
    names = [d.name for d in mgrt.list_devices()]
    assert names == ["/job:localhost/replica:0/task:0/device:CPU:0",
                     "/job:localhost/replica:0/task:0/device:GPU:0",
                     "/job:localhost/replica:0/task:0/device:GPU:1"]
    assert list_devices()[1] is simulated_gpus(2)[0]  # the same objects every time
    assert "2 simulated GPU(s)" in gpu_status()
    # device_count limits them as TensorFlow's does
    assert [d.short_name for d in list_devices(mgrt.compat.v1.ConfigProto(device_count={"GPU": 1}))] == \
        ["/device:CPU:0", "/device:GPU:0"]
    monkeypatch.setenv("MGRT_SIMULATED_GPUS", "two")
    with pytest.raises(ValueError, match="MGRT_SIMULATED_GPUS must be a number"):
        list_devices()


def test_gpu_status_without_cupy_says_why(monkeypatch):
    monkeypatch.delenv("MGRT_SIMULATED_GPUS", raising=False)
    from mgrt.devices.gpu import gpu_devices

    if gpu_devices():
        assert "GPU(s):" in gpu_status()
    else:
        assert gpu_status().startswith("no GPU: ")
