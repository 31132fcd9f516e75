"""Spin-waits without the GIL, for the team's threads (_team.py): a worker waits for the next
job, and the calling thread for the workers to finish, by polling a shared int64 array in a
numba loop (``nogil``) instead of sleeping on a lock.

Why: on the benchmark VM a thread that sleeps takes about 50 microseconds to wake (its vCPU
halts; waking it is an interrupt through the hypervisor), so a team hand-over through a
ThreadPoolExecutor cost about 0.1 ms per team op (a no-op team run: 0.095 ms; with polling
0.04, the rest being the GIL's own hand-over), and the CNN's step makes eight: polling took
0.9 ms off it (bench/README.md). Spinning threads wake in well under a microsecond.
They spin for a bounded time only (_team._SPIN_S) and then sleep as before.

The loads are atomic acquire loads (an LLVM intrinsic): a plain load in a loop may be hoisted
out of it by the optimizer, since nothing in the loop writes the array.
"""

import numba
from numba import types
from numba.extending import intrinsic


@intrinsic
def _load_acquire(typingctx, arr, idx):
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1
            and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.gep(ary.data, [index])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, idx), codegen


@intrinsic
def _store_release(typingctx, arr, idx, val):
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1
            and isinstance(idx, types.Integer) and isinstance(val, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, builder.gep(ary.data, [index]), "release", 8)
        return context.get_dummy_value()

    return types.none(arr, idx, val), codegen


@numba.njit(cache=True, nogil=True)
def finish_and_wait(flags, tid, done, limit):
    """flags[tid] = ``done`` (stored after the GIL is released: the caller, polling without
    it, takes the GIL back uncontended), then as wait_change(flags, 0, done, limit)."""
    _store_release(flags, tid, done)
    for _ in range(limit):
        v = _load_acquire(flags, 0)
        if v != done:
            return v
    return done


@numba.njit(cache=True, nogil=True)
def wait_change(flags, idx, old, limit):
    """Poll flags[idx] until it differs from ``old`` (returns the new value) or ``limit``
    polls have passed (returns ``old``)."""
    for _ in range(limit):
        v = _load_acquire(flags, idx)
        if v != old:
            return v
    return old


@numba.njit(cache=True, nogil=True)
def wait_all(flags, lo, hi, value, limit):
    """Poll until flags[lo:hi] all equal ``value`` (True) or ``limit`` polls have passed
    (False)."""
    for _ in range(limit):
        done = True
        for i in range(lo, hi):
            if _load_acquire(flags, i) != value:
                done = False
                break
        if done:
            return True
    return False
