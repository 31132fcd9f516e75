"""Intra-op parallelism for CPU kernels: thread teams.

A convolution's im2col matmuls are skinny (N = output channels, often 16 or 32): BLAS's own
threads split each call and synchronize after it, and its packing of the patch matrix is paid
per call. Measured on the 2-core benchmark machine (bench/README.md), the CNN's 5x5x16->32
convolution runs at 55-65 GFLOP/s that way, and at about 100 when each core instead takes whole
cache-sized chunks (copy and matmul) with BLAS single-threaded: the patch matrix is built and
consumed in the same core's L2, and nothing waits between calls.

``run(fn, items, threads)`` calls ``fn(item, tid)`` for every item on ``threads`` threads (the
calling thread is tid 0; the others are a process-wide pool), items taken in order by whichever
thread is free, with every BLAS library found by threadpoolctl set to one thread meanwhile and
restored after (by the last to leave, when kernels run at once on several threads).
``split(fn, n, bytes)`` gives memory-bound passes (pooling, ReLU, bias) one block per thread.

Teams run only inside a plan's ``hold()`` (runtime/executor.py holds for plans with a CPU
convolution, TEAM_OPS): BLAS stays single-threaded for the whole run and MatMul splits over
the team too. Outside a hold, OpenBLAS's threads spin for about 0.1 s after each call, and a
team thread would share a core with one: measured, a CNN step with teams but without the hold
was 10-20% slower than with no teams at all, and with the hold 15-25% faster.
``team_size()`` is the team's size: BLAS's thread count when the hold began (which
``ConfigProto(intra_op_parallelism_threads=N)`` sets, devices/cpu.py), 1 outside a hold, or
MGRT_CONV_THREADS=N when set (1 turns teams and holds off).
"""

import concurrent.futures
import itertools
import os
import threading

import numpy as np

_ENV = os.environ.get("MGRT_CONV_THREADS", "").strip()
_FIXED = max(1, min(64, int(_ENV))) if _ENV.isdigit() else None

_lock = threading.Lock()
_state = {"libs": None, "active": 0, "held": 0, "team": 1, "saved": None, "pool": None,
          "pool_size": 0}


def _after_fork_in_child():
    """A forked child has none of the parent's pool threads (an inherited executor would wait
    on them) and may have been forked while a team held the lock or BLAS at one thread."""
    global _lock
    _lock = threading.Lock()
    if _state["active"] and _state["saved"]:
        for lib, n in zip(_state["libs"] or (), _state["saved"]):
            lib.set_num_threads(n)
    _state.update(active=0, held=0, team=1, saved=None, pool=None, pool_size=0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _blas_libs():
    """threadpoolctl's controllers of the loaded BLAS libraries (found once; [] without
    threadpoolctl or BLAS)."""
    libs = _state["libs"]
    if libs is None:
        try:
            import threadpoolctl
            libs = list(threadpoolctl.ThreadpoolController().select(user_api="blas")
                        .lib_controllers)
        except Exception:  # noqa: BLE001 - no controller: kernels stay on the calling thread
            libs = []
        _state["libs"] = libs
    return libs


def team_size():
    """Threads for one kernel: MGRT_CONV_THREADS when set; inside a plan's hold (hold()), the
    BLAS thread count the hold found; else 1. Outside a hold BLAS keeps its own threads, and
    OpenBLAS's spin for about 0.1 s after every call: a team thread would share a core with
    one (measured: the CNN step 10-20% slower than with no team at all)."""
    if _FIXED is not None:
        return _FIXED
    return _state["team"] if _state["held"] else 1


def _enter(hold=False):
    """BLAS to one thread (the first to enter saves its counts and the team size)."""
    with _lock:
        if _state["active"] == 0:
            libs = _blas_libs()
            _state["saved"] = [lib.get_num_threads() for lib in libs]
            _state["team"] = max(1, min(_state["saved"])) if libs else 1
            for lib in libs:
                lib.set_num_threads(1)
        _state["active"] += 1
        if hold:
            _state["held"] += 1


def _leave(hold=False):
    with _lock:
        _state["active"] -= 1
        if hold:
            _state["held"] -= 1
        if _state["active"] == 0:
            for lib, n in zip(_blas_libs(), _state["saved"] or ()):
                lib.set_num_threads(n)
            _state["saved"] = None


def hold():
    """Called by the executor around a run of a plan with team kernels (TEAM_OPS on a CPU):
    BLAS single-threaded for the whole run, the teams sized by BLAS's thread count before,
    and MatMul split over the team (math_ops). Returns whether it held (then release())."""
    if _FIXED == 1 or not _blas_libs():
        return False
    _enter(hold=True)
    if _state["team"] < 2:
        _leave(hold=True)
        return False
    return True


def release():
    _leave(hold=True)


# The op types whose CPU kernels run on teams: a plan with any of them holds BLAS (hold()).
TEAM_OPS = frozenset(["Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
                      "_FusedConv2D"])  # a Conv2D fused with its BiasAdd (runtime/executor.py)


def _pool(workers):
    """The worker pool, at least ``workers`` threads."""
    with _lock:
        if _state["pool"] is None or _state["pool_size"] < workers:
            old = _state["pool"]
            _state["pool"] = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="mgrt-team")
            _state["pool_size"] = workers
            if old is not None:
                old.shutdown(wait=False)
        return _state["pool"]


def run(fn, items, threads):
    """[fn(item, tid) for item in items], on ``threads`` threads when there are that many
    items to share (see the module's docstring); the first exception raised is re-raised
    after every thread has stopped."""
    items = list(items)
    threads = min(threads, len(items))
    if threads < 2:
        return [fn(it, 0) for it in items]
    out = [None] * len(items)
    order = itertools.count()  # next() is atomic under the GIL
    failed = []

    def worker(tid):
        with np.errstate(all="ignore"):  # numpy's error state is per thread
            while not failed:
                k = next(order)
                if k >= len(items):
                    return
                try:
                    out[k] = fn(items[k], tid)
                except BaseException as e:  # noqa: BLE001 - re-raised by the caller below
                    failed.append(e)
                    return

    _enter()
    try:
        pool = _pool(threads - 1)
        futures = [pool.submit(worker, t) for t in range(1, threads)]
        worker(0)
        concurrent.futures.wait(futures)
    finally:
        _leave()
    if failed:
        raise failed[0]
    return out


# Memory-bound passes (pooling, ReLU, bias) split the leading axis into one block per thread
# when they move at least this much (input and output); below it the hand-over costs more.
SPLIT_MIN_BYTES = 1 << 20


def split(fn, n, work_bytes):
    """``fn(lo, hi)`` over [0, n) in one contiguous block per team thread (team_size()) when
    ``work_bytes`` >= SPLIT_MIN_BYTES, else fn(0, n) on the calling thread. For kernels whose
    blocks write disjoint parts of their output."""
    blocks(fn, n, team_size() if work_bytes >= SPLIT_MIN_BYTES else 1)


def blocks(fn, n, threads):
    """``fn(lo, hi)`` over [0, n) in ``threads`` contiguous blocks, one per thread (at most
    one block per element; fn(0, n) on the calling thread for one)."""
    threads = min(threads, n)
    if threads < 2:
        fn(0, n)
        return
    bounds = [n * t // threads for t in range(threads + 1)]
    run(lambda t, tid: fn(bounds[t], bounds[t + 1]), range(threads), threads)


class Scratch:
    """One lazily allocated buffer per thread id: ``get(tid)``. With ``zeros`` the buffers
    start at zero and hold per-thread partial sums: ``total()`` adds them in thread order."""

    def __init__(self, shape, dtype, zeros=False):
        self.shape, self.dtype, self.bufs = shape, dtype, {}
        self._new = np.zeros if zeros else np.empty

    def get(self, tid):
        buf = self.bufs.get(tid)
        if buf is None:
            buf = self.bufs[tid] = self._new(self.shape, self.dtype)
        return buf

    def total(self):
        """The threads' buffers added in thread order (None where no thread took one)."""
        acc = None
        for tid in sorted(self.bufs):
            acc = self.bufs[tid] if acc is None else acc + self.bufs[tid]
        return acc
