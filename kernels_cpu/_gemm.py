"""Gathered-row matrix products in numba: the convolutions' direct path.

``out[m, :] = sum over k of src[rowoff[m] + koff[k]] * b[k, :]``

``src`` is a flat array (a zero-padded NHWC input), ``rowoff`` and ``koff`` are element
offsets into it, and ``b`` is a (K, O) matrix. With ``rowoff`` the output pixels' corners and
``koff`` the window's taps and channels this is a convolution, read straight from the padded
input with no patch matrix (im2col) copied. With the roles swapped (``rowoff`` the taps,
``koff`` the pixels, ``b`` out_backprop) it is the filter gradient.

Why not im2col and BLAS: convolutions with few channels (the first layer of an image model:
one or three channels) copy runs of only kw * C elements into the patch matrix, and BLAS's
kernels are poor at such short reductions. On the benchmark machine this path runs the CNN's
first 5x5x1x16 layer about 3x faster, forward and filter gradient (bench/README.md).

The loops come from ``source()``: each block of MB = 8 rows keeps its MB x NB sums in named
locals, so LLVM's SLP vectorizer turns every k step into MB * NB / 16 AVX-512 vector FMAs (16
sums in registers at NB = 32, each b row loaded once for 8 rows) with each src value a
broadcast load. numba switches SLP vectorization off by default (numba PR #8852, LLVM
miscompilations in other code), so these loops alone are compiled with it on and the loop
vectorizer off (that one would otherwise vectorize the k loop as a reduction); the tests check
them against float64 references. On AVX-512 hosts LLVM's SLP vectorizer is allowed 512-bit
vectors (``-slp-max-reg-size=512``: LLVM's Skylake tuning otherwise caps it at 256; the
option acts on SLP vectorization only, which numba leaves off for every other function). The
offsets are unsigned and the k loop runs over views from 0, so that no negative-index
wraparound code sits in it (that code, with a multiply per step, halved the speed). The
generated loops are the module ``_gemm_loops`` (kept equal to ``source()`` by a test),
compiled once per (NB, dtype) into numba's disk cache. Rows are taken in blocks of MB through
views (constant indices: no wraparound code around the k loop); a remainder of fewer than MB
rows runs as a full block with its last row repeated (alone, a row is one chain of dependent
FMAs: 4x slower per row). A fused bias and ReLU (``_jit.BiasRelu``) is applied to the sums in
registers before they are stored, instead of a second pass over the output (the CNN's first
layer writes 1.6 MB: 0.14 ms for that pass). Where the offsets run on by one in groups of GROUP
= 4 (a convolution's channels; the pixels along a row of a one-channel input, for its filter
gradient: the caller says so, ``group=True``, having checked it with ``grouped``), the grouped
loops (``gatherg_{nb}``, for 16 and 8 columns) read each row through an opaque pointer
(``_ptr.at``) at constant displacements: an FMA with a base + index memory operand is two
micro-ops on Intel cores, with a base + displacement one (the 16-column loop: 10% faster on one
thread). b's rows are copied to cache-line-aligned memory when they are not aligned and the
copy is small; big b's (a filter gradient's out_backprop) are read where they are, and the
kernels that make them allocate them aligned.

On the benchmark machine (one Cascade Lake core) the CNN's second layer (a 400-deep
reduction, 32 columns) runs at about 120 GFLOP/s, against 110 for OpenBLAS's square sgemm and
44 for its skinny im2col product (bench/README.md).

Only float32 (the training dtype) with O a multiple of 8 takes this path (``usable``); other
dtypes and shapes keep the im2col path. ``MGRT_CPU_JIT=0`` turns it off, with the other numba
loops.
"""

import numpy as np

from mgrt.kernels_cpu import _jit, _team

NBS = (32, 16, 8)  # column blocks: out channels are tiled into these
MB = 8             # rows per block: MB x NB sums (16 AVX-512 registers at NB = 32)
GROUP = 4          # k steps per pointer in the grouped loops (8 and 16 measured slower)
GROUPED_NBS = (16, 8)  # column blocks with a grouped loop: at 32 columns it measured no faster
                       # (each broadcast feeds two FMAs there), and it would add 90 s to the
                       # first compile on a fresh machine (gather_32 takes 55 s)
_DTYPES = (np.dtype(np.float32),)
_ITEMS = 1         # team items per thread: each is one numba call over a run of rows, and
                   # each costs a hand-over of the GIL, which a worker asleep on it takes about
                   # 50 us to wake for on the benchmark VM (items of 256 rows cost the CNN's
                   # first layer 4x; two per thread, against one: the CNN step 0.15 ms slower)
_K_BLOCK = 1024    # reduction steps per pass over the rows (a multiple of GROUP): b's rows
                   # for them stay in L2 (a filter gradient's out_backprop, 800 KB in the
                   # CNN, streamed from L3)
_ONE_CALL_ROWS = 64  # products with up to this many rows run as one call (_rows)
_COPY_MAX_BYTES = 256 << 10  # b's above this are used unaligned rather than copied
_ALIGN = _jit._ALIGN  # b's rows start on cache lines (split vector loads cost a third more)

_kernels = {}


def source():
    """The text of ``_gemm_loops.py``: per NB in NBS, the loop over any offsets
    (``gather_{nb}``) and the loop over offsets grouped by GROUP (``gatherg_{nb}``), both over
    blocks of MB rows."""
    out = ['"""Generated by ``mgrt.kernels_cpu._gemm.source()``: do not edit (a test keeps this',
           'file equal to it). The loops are compiled by ``_gemm._kernel``."""', "",
           "from mgrt.kernels_cpu._ptr import at", ""]
    for nb in NBS:
        out += ["", _loop(nb, MB), ""]
        if nb in GROUPED_NBS:
            out += ["", _loop(nb, MB, GROUP), ""]
    return "\n".join(out).rstrip() + "\n"


def _loop(nb, mb, group=None):
    """``gather_{nb}`` (``group`` None): one k step per offset in ``koff``. ``gatherg_{nb}``:
    ``koff`` holds every group-th offset of a list whose offsets run on by one within each
    group (a convolution's channels, or a filter gradient's pixels along a row of a
    one-channel input); per group and row one opaque pointer (_ptr.at), the group's k steps
    reading it at constant displacements."""
    def line(indent, parts):
        return " " * indent + "; ".join(parts)
    rows, cols = range(mb), range(nb)

    def per_row(indent, fmt):  # one line per row r of the block, its statements per column j
        return [line(indent, [fmt.format(r=r, j=j) for j in cols]) for r in rows]
    name = f"gather_{nb}" if group is None else f"gatherg_{nb}"
    text = [f"def {name}(src, rowoff, koff, b, out, m0, m1, acc, z, kb, bias, post, relu):",
            "    nk = koff.shape[0]" if group is None else f"    nk = koff.shape[0] * {group}",
            line(4, [f"q{j} = bias[{j}] if post else z" for j in cols]),
            "    for k0 in range(0, max(nk, 1), kb):",
            # views: the k loop starts at 0, so no negative-index code sits in it
            "        kv = koff[k0:k0 + kb]" if group is None else
            f"        kv = koff[k0 // {group}:(k0 + kb) // {group}]",
            "        bv = b[k0:k0 + kb]",
            "        load = acc or k0 > 0",
            "        last = post and k0 + kb >= nk",
            f"        for m in range(m0, m1, {mb}):",
            f"            rv = rowoff[m:m + {mb}]",
            f"            ov = out[m:m + {mb}]",
            line(12, [f"r{r} = rv[{r}]" for r in rows]),
            "            if load:",
            *per_row(16, "c{r}_{j} = ov[{r}, {j}]"),
            "            else:",
            *per_row(16, "c{r}_{j} = z")]
    fma = per_row(16, "c{r}_{j} += a{r} * b{j}")
    if group is None:
        text += ["            for k in range(kv.shape[0]):",
                 "                o = kv[k]",
                 line(16, [f"a{r} = src[r{r} + o]" for r in rows]),
                 line(16, [f"b{j} = bv[k, {j}]" for j in cols]),
                 *fma]
    else:
        text += ["            for g in range(kv.shape[0]):",
                 "                o = kv[g]",
                 line(16, [f"p{r} = at(src, r{r} + o)" for r in rows])]
        for u in range(group):
            text += [line(16, [f"a{r} = p{r}[{u}]" for r in rows]),
                     line(16, [f"b{j} = bv[g * {group} + {u}, {j}]" for j in cols]),
                     *fma]
    text += ["            if last:",
             *per_row(16, "c{r}_{j} += q{j}"),
             "                if relu:",
             *per_row(20, "c{r}_{j} = z if c{r}_{j} < z else c{r}_{j}"),
             *per_row(12, "ov[{r}, {j}] = c{r}_{j}")]
    return "\n".join(text)


def grouped(offsets):
    """Whether ``offsets`` (1-D) run on by one within each group of GROUP (so the grouped
    loops can take every GROUP-th of them): [o, o + 1, .., o + GROUP - 1, o', o' + 1, ..]."""
    n = offsets.shape[0]
    if n == 0 or n % GROUP:
        return False
    g = np.asarray(offsets).reshape(-1, GROUP)
    return bool((g == g[:, :1] + np.arange(GROUP)).all())


def usable(dt, ncols):
    """Whether products of dtype ``dt`` with ``ncols`` output columns take this path."""
    return ncols > 0 and ncols % NBS[-1] == 0 and np.dtype(dt) in _DTYPES and _jit.enabled()


def _kernel(nb, dt, group=False):
    """The compiled loop for (nb, dt) (the grouped one with ``group``): SLP vectorization on,
    the loop vectorizer off, for its compilation only (under numba's compiler lock), from
    numba's disk cache when there. Of the fast-math flags only contraction (FMA): the fused
    ReLU keeps NaN and -0.0."""
    key = (nb, dt, bool(group))
    fn = _kernels.get(key)
    if fn is None:
        import numba
        from numba.core import config
        from numba.core.compiler_lock import global_compiler_lock

        from mgrt.kernels_cpu import _gemm_loops
        ty = numba.from_dtype(dt)
        sig = numba.void(ty[::1], numba.uintp[::1], numba.uintp[::1], ty[:, ::1], ty[:, ::1],
                         numba.intp, numba.intp, numba.boolean, ty, numba.intp, ty[::1],
                         numba.boolean, numba.boolean)
        with global_compiler_lock:
            _wide_slp()
            saved = config.SLP_VECTORIZE, config.LOOP_VECTORIZE
            config.SLP_VECTORIZE, config.LOOP_VECTORIZE = 1, 0
            try:
                fn = numba.njit([sig], cache=True, nogil=True, fastmath={"contract"},
                                boundscheck=False)(
                    getattr(_gemm_loops, f"gatherg_{nb}" if group else f"gather_{nb}"))
            finally:
                config.SLP_VECTORIZE, config.LOOP_VECTORIZE = saved
        _kernels[key] = fn
    return fn


def _wide_slp():
    """Let SLP vectorization use 512-bit vectors on an AVX-512 host (once per process)."""
    if "slp" not in _kernels:
        import llvmlite.binding as llvm
        if llvm.get_host_cpu_features().get("avx512f"):
            llvm.set_option("mgrt", "-slp-max-reg-size=512")
        _kernels["slp"] = True


def _blocks(ncols):
    """Column blocks (j0, nb) of ``ncols`` (a multiple of 8), widest first."""
    out, j = [], 0
    for nb in NBS:
        while ncols - j >= nb:
            out.append((j, nb))
            j += nb
    return out


def _writable(a):
    return a if a.flags.writeable else a.copy()


def _aligned(a):
    """``a`` (2-D) where it is C-contiguous with every row starting on an aligned boundary
    for its vector loads (_ALIGN bytes, or the row's size when less) or too big to copy
    cheaply (_COPY_MAX_BYTES: its unaligned loads cost less than the copy, measured), else an
    aligned C-contiguous copy."""
    if (a.flags.c_contiguous and a.flags.writeable
            and (a.ctypes.data % min(_ALIGN, a.shape[1] * a.itemsize) == 0
                 or a.nbytes > _COPY_MAX_BYTES)):
        return a
    out = _jit.empty_aligned(a.shape, a.dtype)
    out[...] = a
    return out


def _rows(fn, src, rowoff, koff, b, out, m0, m1, acc, epi):
    """Rows m0:m1 of ``out``: whole MB-row blocks, then the remainder as a full block whose
    extra rows repeat the last one (into a scratch block, copied back): a remainder row on
    its own would be one chain of dependent FMAs. Up to _ONE_CALL_ROWS rows (a filter
    gradient's taps, whose reduction over every pixel streams all of ``b``) go as one call
    over scratch rows padded so, so that ``b`` is streamed once, each k block of it reused by
    every row block while in cache (the CNN's first filter gradient on one thread: 0.43 ->
    0.39 ms, alternating). ``epi``: the loops' trailing arguments."""
    rest = (m1 - m0) % MB
    full = m0 if rest and m1 - m0 <= _ONE_CALL_ROWS else m1 - rest  # rows in place
    if full > m0:
        fn(src, rowoff, koff, b, out, m0, full, acc, *epi)
    if full < m1:  # the rest in a padded scratch block, its extra rows repeating the last
        rest, mm = m1 - full, m1 - full + (MB - rest) % MB
        ro = np.full(mm, rowoff[m1 - 1], np.uintp)
        ro[:rest] = rowoff[full:m1]
        tail = np.zeros((mm, out.shape[1]), out.dtype)
        if acc:
            tail[:rest] = out[full:m1]
        fn(src, ro, koff, b, tail, 0, mm, acc, *epi)
        out[full:m1] = tail[:rest]


def gather_matmul(src, rowoff, koff, b, out, team=1, split="rows", post=None, group=False):
    """``out`` (M, O), C-contiguous, gets sum_k src[rowoff[m] + koff[k]] * b[k, :] (``b``
    (K, O)); every offset must lie inside ``src`` (not checked: the callers build them).
    ``group``: ``koff`` is grouped (``grouped(koff)``, which the caller has checked): the
    column blocks of GROUPED_NBS run the grouped loops.
    On a team of threads the rows are split (``split="rows"``) or, for few rows and a long
    reduction, the k range is (``split="k"``: per-thread partial sums, added in thread order).
    ``post(rows)``, when given, is applied in place to finished rows (2-D views of ``out``): a
    fused bias and activation. A ``_jit.BiasRelu`` is applied by the loops themselves, to the
    sums in registers before they are stored, where the rows are split; any other ``post``
    per team item while its rows are in cache where O is one column block, else once to all
    of ``out``."""
    dt = src.dtype
    src = _writable(np.ascontiguousarray(src).reshape(-1))
    rowoff = np.ascontiguousarray(rowoff, dtype=np.intp).view(np.uintp)  # all >= 0
    koff = np.ascontiguousarray(koff, dtype=np.intp).view(np.uintp)
    z = dt.type(0)
    m = out.shape[0]
    blocks = _blocks(out.shape[1])
    whole = len(blocks) == 1
    nk = koff.shape[0]
    kg = np.ascontiguousarray(koff[::GROUP]) if group else koff  # what the loops take
    fused = (split == "rows" and isinstance(post, _jit.BiasRelu) and post.bias.dtype == dt
             and post.bias.shape == (out.shape[1],))
    rows_post = post if whole and split == "rows" and not fused else None
    for j0, nb in blocks:
        bt = _aligned(b[:, j0:j0 + nb])
        ot = out if whole else np.empty((m, nb), dt)
        grp = group and nb in GROUPED_NBS
        kk = kg if grp else koff
        fn = _kernel(nb, dt, grp)  # compiled here, not on a team thread
        bias = post.bias[j0:j0 + nb] if fused else np.zeros(nb, dt)
        epi = (z, _K_BLOCK, _writable(bias), fused, fused and post.relu)
        if team <= 1 or m == 0 or nk == 0:
            _rows(fn, src, rowoff, kk, bt, ot, 0, m, False, epi)
            if rows_post is not None:
                rows_post(ot)
        elif split == "rows":
            step = -(-m // (team * _ITEMS * MB)) * MB

            def item(it, tid):
                _rows(fn, src, rowoff, kk, bt, ot, it[0], it[1], False, epi)
                if rows_post is not None:
                    rows_post(ot[it[0]:it[1]])
            _team.run(item, [(a, min(m, a + step)) for a in range(0, m, step)], team)
        else:
            unit = GROUP if grp else 1  # items of whole groups
            step = -(-nk // (team * _ITEMS * unit)) * unit
            items = [(a, min(nk, a + step)) for a in range(0, nk, step)]
            parts = _team.Scratch((m, nb), dt, zeros=True)
            _team.run(lambda it, tid: _rows(fn, src, rowoff, kk[it[0] // unit:it[1] // unit],
                                            bt[it[0]:it[1]], parts.get(tid), 0, m, True, epi),
                      items, team)
            ot[...] = parts.total()
        if not whole:
            out[:, j0:j0 + nb] = ot
    if post is not None and rows_post is None and not fused:
        post(out)
    return out
