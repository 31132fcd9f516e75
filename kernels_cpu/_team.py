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

import itertools
import os
import threading
import time

import numpy as np

_ENV = os.environ.get("MGRT_CONV_THREADS", "").strip()
_FIXED = max(1, min(64, int(_ENV))) if _ENV.isdigit() else None

_lock = threading.Lock()
_state = {"libs": None, "active": 0, "held": 0, "team": 1, "saved": None, "crew": None}


def _after_fork_in_child():
    """A forked child has none of the parent's crew threads (an inherited crew would wait on
    them) and may have been forked while a team held the lock or BLAS at one thread."""
    global _lock
    _lock = threading.Lock()
    if _state["active"] and _state["saved"]:
        for lib, n in zip(_state["libs"] or (), _state["saved"]):
            lib.set_num_threads(n)
    _state.update(active=0, held=0, team=1, saved=None, crew=None)


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


# How long a worker polls for its next job, and the calling thread for the workers to finish,
# before sleeping (_spin.py): the gaps between a step's team ops are shorter than this, and a
# sleeping thread takes about 50 microseconds to wake on the benchmark VM.
_SPIN_S = 0.002


class _Crew:
    """The team's worker threads (tids 1..workers). A job is ``job(tid)``, run by every worker
    whose tid is below the job's thread count; flags[0] is the latest job's number (``current``
    holds it with the job), flags[tid] the number of the last job worker ``tid`` finished.
    Workers poll flags[0] for a new number without the GIL (_spin.wait_change) for _SPIN_S
    after each job, then sleep on ``cond``; the caller polls for the workers' numbers
    (_spin.wait_all), then sleeps on ``done``. A worker stores its number from the polling
    loop itself (_spin.finish_and_wait), after it has let go of the GIL: the polling caller
    then takes the GIL back at once (stored from Python, the caller woke to find the worker
    still holding it: 15-25 us more per team op, measured). Where the polling loops cannot be
    compiled there is no polling: threads sleep at once. One job at a time (``busy``). A
    stopped crew (replaced by a bigger one) finishes the job it was given before its threads
    exit."""

    def __init__(self, workers):
        self.workers = workers
        self.flags = np.zeros(workers + 1, np.int64)
        self.current = (0, None, 1)
        self.cond, self.sleeping = threading.Condition(), 0
        self.done, self.waiting = threading.Condition(), False
        self.busy = threading.Lock()
        self.stopped = False
        try:
            from mgrt.kernels_cpu import _spin
            self.spin = _spin
            self.polls = self._calibrate()
        except Exception:  # noqa: BLE001 - no numba, or it cannot compile the loops: sleep
            self.spin, self.polls = None, 0
        for tid in range(1, workers + 1):
            threading.Thread(target=self._loop, args=(tid,), daemon=True,
                             name=f"mgrt-team-{tid}").start()

    def _calibrate(self):
        """Polls in _SPIN_S (a wait that never ends early, timed)."""
        n = 100_000
        self.spin.wait_change(self.flags, 0, 0, 10)  # compiled (or loaded) first
        t0 = time.perf_counter()
        self.spin.wait_change(self.flags, 0, 0, n)
        return max(1000, int(_SPIN_S * n / max(time.perf_counter() - t0, 1e-9)))

    def _loop(self, tid):
        f, seen, v = self.flags, 0, None
        while True:
            if v is None:
                v = self.spin.wait_change(f, 0, seen, self.polls) if self.spin else seen
            if v == seen:
                with self.cond:
                    while f[0] == seen and not self.stopped:
                        self.sleeping += 1
                        try:
                            self.cond.wait()
                        finally:
                            self.sleeping -= 1
                    v = int(f[0])
            if self.stopped and v == seen:
                return
            seen, job, threads = self.current  # the latest job (v or a later one)
            if tid < threads:
                job(tid)
            job = None  # (a finished job's closure holds its arrays: drop it while waiting)
            if self.spin and not self.waiting:  # the caller polls: done, stored without the
                v = self.spin.finish_and_wait(f, tid, seen, self.polls)  # GIL, then poll
                continue
            with self.done:
                f[tid] = seen
                if self.waiting:
                    self.done.notify_all()
            v = None

    def run(self, job, threads):
        """job(0) here and job(tid) on workers 1..threads-1; returns when all have finished."""
        f = self.flags
        with self.cond:
            n = int(f[0]) + 1
            self.current = (n, job, threads)
            f[0] = n
            if self.sleeping:
                self.cond.notify_all()
        try:
            job(0)
        finally:
            if not (self.spin and self.spin.wait_all(f, 1, threads, n, self.polls)):
                with self.done:
                    self.waiting = True
                    while any(f[t] != n for t in range(1, threads)):
                        # (a worker that read waiting before it was set stores its number
                        # without the lock, and does not notify: look again after a while)
                        self.done.wait(0.001)
                    self.waiting = False
            # every worker of this job has finished it: the crew no longer holds its closure
            # (whose arrays would not be the store's alone, so not updated in place)
            self.current = (n, None, threads)

    def stop(self):
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def _crew(workers):
    """The crew, at least ``workers`` threads."""
    with _lock:
        crew = _state["crew"]
        if crew is None or crew.workers < workers:
            if crew is not None:
                crew.stop()
            crew = _state["crew"] = _Crew(workers)
        return crew


def run(fn, items, threads):
    """[fn(item, tid) for item in items], on ``threads`` threads when there are that many
    items to share (see the module's docstring); the first exception raised is re-raised
    after every thread has stopped. While another thread's team runs (two sessions at once)
    the items run on the calling thread."""
    items = list(items)
    threads = min(threads, len(items))
    if threads < 2:
        return [fn(it, 0) for it in items]
    crew = _crew(threads - 1)
    if not crew.busy.acquire(blocking=False):
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
        crew.run(worker, threads)
    finally:
        _leave()
        crew.busy.release()
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
