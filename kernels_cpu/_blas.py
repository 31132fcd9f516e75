"""BLAS's general matrix product with its ``beta``: ``C = alpha * op(A) @ op(B) + C``, written
into ``C`` in place, which numpy's matmul cannot do (it always writes a new product).

The executor folds a gradient-descent or momentum update of a variable into the product that
computes its gradient (runtime/executor.py ``_updates_into_gemm``): ``var -= lr * (x^T @ dy)``
becomes one BLAS call with ``alpha = -lr``, ``beta = 1``, ``C = var``, and momentum's
``accum = accum * momentum + x^T @ dy`` one with ``beta = momentum``, ``C = accum`` (no
gradient array written and read back).

The library is the OpenBLAS that numpy itself loaded (found through threadpoolctl, which
mgrt already uses to size BLAS's threads), called through ctypes (which releases the GIL):
its ``cblas_sgemm`` / ``cblas_dgemm`` under the symbol prefix and suffix of its build
(``scipy_`` and ``64_`` for the wheels' scipy-openblas) and with 64-bit integers where its
configuration says USE64BITINT. Where numpy's BLAS is not OpenBLAS, or its symbols are not
found, ``available`` says so, ``gemm_update`` does nothing and returns False, and the update
stays the MatMul and then the update.
"""

import ctypes

import numpy as np

from mgrt.kernels_cpu import _team

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_PREFIXES = ("", "scipy_")
_SUFFIXES = ("", "64_", "_64")
_state = {"found": None}


def _find():
    """{dtype: cblas ?gemm function} of numpy's OpenBLAS, or {} (found once)."""
    try:
        import threadpoolctl

        np.ones(1) @ np.ones(1)  # (numpy loads its BLAS with its first product)
        libs = [c for c in threadpoolctl.ThreadpoolController().select(user_api="blas")
                .lib_controllers if c.internal_api == "openblas"]
        if len(libs) != 1:  # none, or two OpenBLAS builds: which one numpy uses is unknown
            return {}
        lib = ctypes.CDLL(libs[0].filepath)
    except Exception:  # noqa: BLE001 - no threadpoolctl, no library: the update stays 2 steps
        return {}
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            s = getattr(lib, f"{prefix}cblas_sgemm{suffix}", None)
            d = getattr(lib, f"{prefix}cblas_dgemm{suffix}", None)
            config = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
            if s is None or d is None or config is None:
                continue
            config.restype = ctypes.c_char_p
            config.argtypes = ()
            wide = b"USE64BITINT" in (config() or b"")
            i = ctypes.c_int64 if wide else ctypes.c_int32
            p = ctypes.c_void_p
            for fn, real in ((s, ctypes.c_float), (d, ctypes.c_double)):
                fn.restype = None
                fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int, i, i, i, real, p, i,
                               p, i, real, p, i)
            return {np.dtype(np.float32): s, np.dtype(np.float64): d}
    return {}


def _functions():
    found = _state["found"]
    if found is None:
        found = _state["found"] = _find()
    return found


def available(dtype):
    """Whether ``gemm_update`` serves arrays of ``dtype``."""
    return np.dtype(dtype) in _functions()


def _operand(x):
    """(transpose flag, leading dimension) of a 2-D operand as BLAS reads it in row-major
    order, or None (neither C- nor F-contiguous)."""
    f = x.flags
    if f.c_contiguous:
        return _NO_TRANS, max(1, x.shape[1])
    if f.f_contiguous:
        return _TRANS, max(1, x.shape[0])
    return None


def gemm_update(c, a, b, alpha, threads=1, beta=1.0):
    """``c = beta * c + alpha * (a @ b)`` in place by BLAS (``beta`` not 0: BLAS would not
    read ``c``, and a NaN in it would not stay NaN) (``threads`` > 1: the rows in that many
    blocks, one single-threaded BLAS call each on a team, for a plan that holds BLAS at one
    thread: kernels_cpu/_team.py). ``c`` a C-contiguous writeable 2-D array of a served
    dtype; ``a`` (M x K) and ``b`` (K x N) 2-D arrays of its dtype, C- or F-contiguous (a
    transposed view is read as it lies), not overlapping ``c``; ``alpha`` a Python float.
    Returns False (nothing done) where any of that does not hold."""
    fn = _functions().get(c.dtype)
    if (fn is None or beta == 0 or type(c) is not np.ndarray or type(a) is not np.ndarray
            or type(b) is not np.ndarray or a.dtype != c.dtype or b.dtype != c.dtype
            or c.ndim != 2 or a.ndim != 2 or b.ndim != 2 or not c.flags.c_contiguous
            or not c.flags.writeable):
        return False
    m, n = c.shape
    k = a.shape[1]
    if a.shape[0] != m or b.shape != (k, n) or m == 0 or n == 0 or k == 0:
        return False
    oa, ob = _operand(a), _operand(b)
    if oa is None or ob is None or np.may_share_memory(c, a) or np.may_share_memory(c, b):
        return False
    ta, lda = oa
    tb, ldb = ob
    pa, pb, pc = a.ctypes.data, b.ctypes.data, c.ctypes.data
    size = c.itemsize
    a_row = lda * size if ta == _NO_TRANS else size  # bytes from one row of op(a) to the next

    def rows(r0, r1):
        fn(_ROW_MAJOR, ta, tb, r1 - r0, n, k, alpha, pa + r0 * a_row, lda, pb, ldb, beta,
           pc + r0 * n * size, n)

    if threads > 1 and m >= 4 * threads:
        _team.blocks(rows, m, threads)
    else:
        rows(0, m)
    return True
