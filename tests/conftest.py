"""Test-wide setup: which GPU the GPU tests run on.

Every test that takes the ``gpu`` fixture (or ``gpus``) runs on the simulated GPU in a normal
run (``pytest``; numba.cuda in its CUDA simulator) and on the real GPUs under ``pytest -m gpu``
(the ``cuda`` parameter carries the ``gpu`` mark). The simulated devices are made by the test,
not through ``MGRT_SIMULATED_GPUS`` unless a test sets it (``gpus`` does, for Sessions).
"""

import os

import pytest


def _real_gpu_run(config):
    expr = (config.getoption("markexpr", "") or "").replace(" ", "")
    return "gpu" in expr and "notgpu" not in expr


def pytest_configure(config):
    if not _real_gpu_run(config):
        # before anything imports numba.cuda
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


@pytest.fixture(params=["sim", pytest.param("cuda", marks=pytest.mark.gpu)])
def gpu(request):
    """One GPU device: the simulated GPU:0, or the real GPU:0 (``pytest -m gpu``)."""
    if request.param == "sim":
        from mgrt.devices.simulated_gpu import simulated_gpus

        dev = simulated_gpus(1)[0]
        dev.stats.reset()
        return dev
    from mgrt.devices.gpu import gpu_devices, gpu_status

    found = gpu_devices()
    if not found:
        pytest.fail(f"pytest -m gpu needs a real GPU: {gpu_status()}")
    return found[0]


@pytest.fixture(params=["sim", pytest.param("cuda", marks=pytest.mark.gpu)])
def gpus(request, monkeypatch):
    """The GPUs Sessions see: MGRT_SIMULATED_GPUS=2 (two simulated GPUs), or the real ones
    (``pytest -m gpu``); a test that needs two checks ``len(gpus)``."""
    if request.param == "sim":
        from mgrt.devices.simulated_gpu import simulated_gpus

        monkeypatch.setenv("MGRT_SIMULATED_GPUS", "2")
        devs = simulated_gpus(2)
        for d in devs:
            d.stats.reset()
        return devs
    from mgrt.devices.gpu import gpu_devices, gpu_status

    found = gpu_devices()
    if not found:
        pytest.fail(f"pytest -m gpu needs a real GPU: {gpu_status()}")
    return found


@pytest.fixture(params=["one thread", "team"])
def conv_threads(request, monkeypatch):
    """The convolution kernels on one thread, or on a team of three at any size."""
    import mgrt.kernels_cpu.conv_ops as conv_ops
    from mgrt.kernels_cpu import _team
    if request.param == "team":  # three threads (more than this machine's cores), any size
        monkeypatch.setattr(conv_ops, "_TEAM_MIN_FLOPS", 0)
        monkeypatch.setattr(_team, "_FIXED", 3)
    else:
        monkeypatch.setattr(_team, "_FIXED", 1)
    return request.param
