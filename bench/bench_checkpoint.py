#!/usr/bin/env python
"""Checkpoint restore and save: throughput (MiB/s) and peak memory, mgrt against TensorFlow.

    python bench/bench_checkpoint.py [--size-mb 512] [--repeats 5] [--out DIR] [--no-tf]

The model is built with TensorFlow (``tf.compat.v1``, v2 behaviour off, ref variables): large
float32 matrices (4096x4096, 64 MiB each, as many as the size needs), 4096x1024 float32
matrices, float32 biases, and a few other dtypes (int32, int64, float64, float16, bool, an
int64 ``global_step`` scalar), at least ``--size-mb`` MiB in all, their values from seeded
random initializers. ``tf.train.Saver`` saves it (one shard, with its ``.meta``) to a
temporary folder. Then, for each repeat, two fresh worker processes (the same Python), one per
system, the order alternating from one repeat to the next:

- **TF**: ``import tensorflow``; ``tf.compat.v1.train.import_meta_graph(meta)`` into a fresh
  graph; a ``tf.compat.v1.Session``, run once on the Saver's filename constant (its one-time
  setup, out of the restore's time and memory: mgrt places the graph and imports its kernel
  modules then, TF builds its first executor); **timed: ``saver.restore(sess, prefix)``**; then
  **timed: ``saver.save(sess, fresh_prefix, write_meta_graph=False)``**, and separately the
  ``fsync`` of the files it wrote (TensorFlow does not fsync a checkpoint; mgrt does, and
  counts it in its save: its bundles are published with fsync + rename). The worker never
  runs the variables' initializers (TF allocates a ref variable's buffer at its first
  ``Assign``, so the restore allocates every buffer, as mgrt's does).
- **mgrt**: ``import mgrt.compat.v1 as tf`` (no TensorFlow in the process), the same calls.

Peak memory: each worker resets its peak RSS (``/proc/self/clear_refs`` ← 5) right before the
restore and reads ``VmRSS`` then (the **baseline**: interpreter, library, imported graph,
session — no variable buffers in either system) and ``VmHWM`` after it (the **peak**).
**Extra peak = peak − baseline**: the restored variables themselves (the checkpoint's size)
plus whatever the restore held on the side. The goal: extra peak ≤ checkpoint size + largest
tensor (mgrt's restore reads each tensor into its own buffer and keeps it as the variable's).
``retained`` = RSS after the restore − baseline. Where ``clear_refs`` cannot be written, the
peak is the process's ``VmHWM`` since it started (documented in the JSON).

Page cache: the orchestrator reads the checkpoint's files once before every worker (so every
restore reads from a warm cache — this measures the readers, not the disk) and calls
``os.sync()`` after every worker and deletes what it saved (so a save never pays for the
previous one's write-back). Saves go to fresh folders next to the checkpoint (same file
system).

Checks, inside the benchmark (exit status 1 if one fails): a hash (blake2b of the bytes) of
several variables after each restore must be the same in both systems and every repeat; the
bundle mgrt saved is read back by TensorFlow (``tf.train.load_variable``) and TensorFlow's by
mgrt, every checked variable equal to the restored values; and whether the data file mgrt
wrote is byte-identical to TensorFlow's is recorded.

Throughput = checkpoint bytes (data files + index) / seconds, MiB = 2**20 bytes; medians
(and min/max) over the repeats; ratios mgrt / TF (≥ 1: mgrt at least as fast). Also per
CPU-second of the worker process (all its threads): the steadier comparison on a busy
machine. One untimed warm-up worker per system runs first. Both systems run with bytecode
caches, as installed packages do (TensorFlow's from its site-packages; mgrt's, an editable
checkout that may run under PYTHONDONTWRITEBYTECODE, from a folder in the temporary folder).
Before each worker the benchmark waits up to ``--wait-quiet`` seconds (default 10) for a
second in which other processes use < 0.5 cores, and records the cores other processes used
during each timed call (from ``/proc/stat``). Results: ``<out>/checkpoint_<host>_<date>.json``
(every run) and ``<out>/checkpoint_latest.md``.

With ``--no-tf`` (or without TensorFlow) mgrt alone is timed, on the MetaGraph cached in
``bench/models/checkpoint_<size>mb.meta`` by the last run with TensorFlow: mgrt runs its
initializers (seeded: TensorFlow's values) and saves the checkpoint itself, then the workers
run as above; no ratios.
"""

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(ROOT, "bench", "models")
MIB = 1 << 20

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- the model -----------------------------------------------------------------------------------
def model_spec(size_mb):
    """[(name, shape, dtype name)]: ``size_mb`` MiB or a bit more. Large 4096x4096 float32
    matrices (1024x1024 below 256 MiB) make up the bulk; the rest is fixed: 4096x1024 float32
    matrices, biases and other dtypes."""
    side = 4096 if size_mb >= 256 else 1024
    fixed = [
        ("dense/w_a", [4096, 1024], "float32"),
        ("dense/w_b", [4096, 1024], "float32"),
        ("embedding/ids", [2 * 1024 * 1024], "int32"),
        ("embedding/counts", [1024 * 1024], "int64"),
        ("stats/moments", [512, 1024], "float64"),
        ("half/w", [2048, 2048], "float16"),
        ("mask/keep", [1024, 1024], "bool"),
    ]
    fixed += [(f"bias_{i}", [4096], "float32") for i in range(6)]
    fixed.append(("global_step", [], "int64"))

    def nbytes(spec):
        n = 0
        for _, shape, dt in spec:
            k = 1
            for d in shape:
                k *= d
            n += k * {"float32": 4, "int32": 4, "int64": 8, "float64": 8, "float16": 2,
                      "bool": 1}[dt]
        return n

    if size_mb < 128:
        fixed = [(n, [d // 4 for d in s] if len(s) else s, dt) for n, s, dt in fixed]
    target = size_mb * MIB
    large = []
    while nbytes(large + fixed) < target or not large:
        large.append((f"layer{len(large)}/kernel", [side, side], "float32"))
    return large + fixed


CHECK_VARS = ("layer0/kernel", "dense/w_b", "embedding/ids", "embedding/counts",
              "stats/moments", "half/w", "mask/keep", "bias_5", "global_step")


def build_with_tf(tf, spec, prefix):
    """Builds the model's graph, runs its initializers and saves it (with the .meta)."""
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(7)
        for i, (name, shape, dt) in enumerate(spec):
            seed = 100 + i
            if name == "global_step":
                init = tf.constant(12345, dtype=tf.int64)
            elif dt in ("float32", "float64"):
                init = v1.random_normal(shape, dtype=getattr(tf, dt), seed=seed)
            elif dt == "float16":
                init = tf.cast(v1.random_normal(shape, seed=seed), tf.float16)
            elif dt == "int32":
                init = v1.random_uniform(shape, maxval=1 << 30, dtype=tf.int32, seed=seed)
            elif dt == "int64":
                init = tf.cast(v1.random_uniform(shape, maxval=1 << 30, dtype=tf.int32,
                                                 seed=seed), tf.int64) * 3
            elif dt == "bool":
                init = v1.random_uniform(shape, seed=seed) < 0.5
            else:
                raise ValueError(dt)
            v1.Variable(init, name=name, use_resource=False)
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            saver.save(sess, prefix)
    return prefix + ".meta"


def build_with_mgrt(meta, prefix):
    """--no-tf: runs the cached MetaGraph's initializers in mgrt and saves with mgrt."""
    import mgrt.compat.v1 as mtf

    with mtf.Graph().as_default() as g:
        saver = mtf.train.import_meta_graph(meta)
        with mtf.Session(graph=g) as sess:
            sess.run(mtf.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False)
    shutil.copyfile(meta, prefix + ".meta")
    return prefix + ".meta"


def checkpoint_files(prefix):
    d = os.path.dirname(prefix)
    base = os.path.basename(prefix)
    return sorted(os.path.join(d, f) for f in os.listdir(d)
                  if f == base + ".index" or f.startswith(base + ".data-"))


def checkpoint_bytes(prefix):
    return sum(os.path.getsize(f) for f in checkpoint_files(prefix))


def warm_cache(prefix):
    """Reads the checkpoint's files once, so that the restore reads them from the page cache."""
    buf = bytearray(8 * MIB)
    for path in checkpoint_files(prefix):
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def digest(arr):
    import numpy as np

    arr = np.ascontiguousarray(arr)
    return f"{arr.dtype.str}{list(arr.shape)}:" + hashlib.blake2b(
        arr.reshape(-1).view(np.uint8).data if arr.size else b"", digest_size=16).hexdigest()


# --- load of the machine --------------------------------------------------------------------------
def _cpu_jiffies():
    try:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals[:8]) - vals[3] - (vals[4] if len(vals) > 4 else 0)
    except Exception:
        return None


def _others(busy0, busy1, own_cpu_s, wall_s):
    """Cores used by other processes over an interval: all CPU time (/proc/stat) minus this
    process's own, per second (jiffies: 10 ms steps)."""
    if None in (busy0, busy1) or wall_s <= 0:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return round(max(0.0, ((busy1 - busy0) / hz - own_cpu_s) / wall_s), 2)


def wait_quiet(max_s, threshold=0.5, window_s=1.0):
    """Waits (up to ``max_s`` seconds) for a ``window_s`` window in which other processes use
    less than ``threshold`` cores; returns (seconds waited, cores in the last window)."""
    t0 = time.perf_counter()
    cores = None
    while True:
        b0 = _cpu_jiffies()
        time.sleep(window_s)
        cores = _others(b0, _cpu_jiffies(), 0.0, window_s)
        waited = time.perf_counter() - t0
        if cores is None or cores < threshold or waited >= max_s:
            return round(waited, 1), cores


class LoadMeter:
    """The CPU used by processes other than ``pid`` (cores) while it runs, and the load average."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.busy0 = _cpu_jiffies()
        self.load0 = os.getloadavg()

    def stop(self, worker_cpu_s):
        dt = time.perf_counter() - self.t0
        busy1 = _cpu_jiffies()
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        others = None
        if None not in (self.busy0, busy1) and dt > 0 and worker_cpu_s is not None:
            others = max(0.0, ((busy1 - self.busy0) / hz - worker_cpu_s) / dt)
        return {"seconds": round(dt, 2),
                "other_processes_cpu_cores": None if others is None else round(others, 2),
                "loadavg_before": [round(x, 2) for x in self.load0],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


# --- the worker (a fresh process per system and repeat) -----------------------------------------
def _status_kb(field):
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _fsync_files(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(os.path.dirname(paths[0]), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def worker(system, task):
    t_start = time.perf_counter()
    if system == "tf":
        import tensorflow as tf_mod

        tf_mod.get_logger().setLevel("ERROR")
        tf_mod.compat.v1.disable_v2_behavior()
        tf = tf_mod.compat.v1
        version = tf_mod.__version__
    else:
        import mgrt.compat.v1 as tf

        version = None
    import_s = time.perf_counter() - t_start
    out = {"system": system, "import_s": round(import_s, 3), "tf_version": version,
           "tensorflow_in_process": "tensorflow" in sys.modules}
    g = tf.Graph()
    with g.as_default():
        t0 = time.perf_counter()
        saver = tf.train.import_meta_graph(task["meta"])
        out["import_meta_graph_s"] = round(time.perf_counter() - t0, 4)
    sess = tf.Session(graph=g)
    # The session's one-time setup (mgrt: placement of the graph, which imports the kernel
    # modules; TF: its first executor) happens at its first run: one run that reads no variable
    # (the Saver's filename constant) puts it before the baseline, out of the restore's time.
    t0 = time.perf_counter()
    sess.run(saver.saver_def.filename_tensor_name)
    out["session_first_run_s"] = round(time.perf_counter() - t0, 4)
    gc.collect()
    # -- restore
    out["peak_reset"] = _reset_peak()
    rss0 = _status_kb("VmRSS")
    b0 = _cpu_jiffies()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = time.process_time()
    t0 = time.perf_counter()
    saver.restore(sess, task["prefix"])
    t1 = time.perf_counter()
    c1 = time.process_time()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    b1 = _cpu_jiffies()
    hwm = _status_kb("VmHWM")
    rss1 = _status_kb("VmRSS")
    out["restore"] = {"s": t1 - t0, "cpu_s": c1 - c0, "baseline_rss_kb": rss0,
                      "peak_rss_kb": hwm, "rss_after_kb": rss1,
                      "other_processes_cpu_cores": _others(b0, b1, c1 - c0, t1 - t0),
                      "user_s": round(ru1.ru_utime - ru0.ru_utime, 3),
                      "sys_s": round(ru1.ru_stime - ru0.ru_stime, 3),
                      "minor_faults": ru1.ru_minflt - ru0.ru_minflt}
    # -- checks (after the measurement)
    with g.as_default():
        out["digests"] = {n: digest(sess.run(n + ":0")) for n in task["check"]}
    gc.collect()
    # -- save
    _reset_peak()
    rss0 = _status_kb("VmRSS")
    save_prefix = task["save_prefix"]
    b0 = _cpu_jiffies()
    c0 = time.process_time()
    t0 = time.perf_counter()
    saver.save(sess, save_prefix, write_meta_graph=False)
    t1 = time.perf_counter()
    c1 = time.process_time()
    b1 = _cpu_jiffies()
    hwm = _status_kb("VmHWM")
    files = checkpoint_files(save_prefix)
    _fsync_files(files)  # mgrt: already durable, a no-op; TF: its write-back
    t2 = time.perf_counter()
    out["save"] = {"s": t1 - t0, "fsync_after_s": t2 - t1, "cpu_s": c1 - c0,
                   "baseline_rss_kb": rss0, "peak_rss_kb": hwm,
                   "bytes": sum(os.path.getsize(f) for f in files),
                   "other_processes_cpu_cores": _others(b0, b1, c1 - c0, t1 - t0)}
    sess.close()
    out["worker_cpu_s"] = time.process_time()
    print("RESULT " + json.dumps(out), flush=True)


def worker_env(system, pycache):
    """Both systems run with bytecode caches, as installed packages do: TensorFlow from its
    site-packages' ``__pycache__``; mgrt (an editable checkout, which may run with
    PYTHONDONTWRITEBYTECODE set, so that every import compiles its sources) from a cache
    folder under the benchmark's temporary folder, filled by the untimed warm-up worker."""
    env = dict(os.environ)
    if system == "mgrt":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def run_worker(system, task, env):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", system, json.dumps(task)]
    meter = LoadMeter()
    r0 = os.times()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    r1 = os.times()
    child_cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    load = meter.stop(child_cpu)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{system} worker failed (exit {p.returncode}):\n"
                           f"{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    res["load"] = load
    return res


# --- machine / config -----------------------------------------------------------------------------
def machine_info(tf_version):
    import numpy as np

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--"],
                               capture_output=True, timeout=10).returncode == 1
    except Exception:
        commit, dirty = None, None
    try:
        import google_crc32c

        crc_impl = getattr(google_crc32c, "implementation", None)
    except ImportError:
        crc_impl = None
    mem = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            mem = {ln.split(":")[0]: int(ln.split()[1]) // 1024 for ln in f
                   if ln.split(":")[0] in ("MemTotal", "MemAvailable")}
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(),
        "memory_mib": mem, "platform": platform.platform(), "python": platform.python_version(),
        "python_executable": sys.executable, "numpy": np.__version__,
        "google_crc32c_implementation": crc_impl, "tensorflow": tf_version,
        "mgrt_commit": commit, "mgrt_uncommitted_changes": dirty,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- summary and report ---------------------------------------------------------------------------
def _stats(vals):
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "all": [round(v, 4) for v in vals]}


def summarize(runs, ckpt_bytes):
    out = {}
    for system in ("tf", "mgrt"):
        rs = [r for r in runs if r["system"] == system]
        if not rs:
            continue
        mb = ckpt_bytes / MIB
        restore_s = [r["restore"]["s"] for r in rs]
        save_s = [r["save"]["s"] for r in rs]
        durable_s = [r["save"]["s"] + r["save"]["fsync_after_s"] for r in rs]
        extra = [(r["restore"]["peak_rss_kb"] - r["restore"]["baseline_rss_kb"]) / 1024
                 for r in rs]
        out[system] = {
            "restore_s": _stats(restore_s),
            "restore_mib_s": _stats([mb / s for s in restore_s]),
            "restore_cpu_s": _stats([r["restore"]["cpu_s"] for r in rs]),
            "restore_sys_s": _stats([r["restore"]["sys_s"] for r in rs]),
            "restore_mib_per_cpu_s": _stats([mb / r["restore"]["cpu_s"] for r in rs]),
            "save_mib_per_cpu_s": _stats([mb / r["save"]["cpu_s"] for r in rs]),
            "save_s": _stats(save_s),
            "save_mib_s": _stats([mb / s for s in save_s]),
            "save_durable_mib_s": _stats([mb / s for s in durable_s]),
            "save_cpu_s": _stats([r["save"]["cpu_s"] for r in rs]),
            "restore_baseline_rss_mib": _stats([r["restore"]["baseline_rss_kb"] / 1024
                                                for r in rs]),
            "restore_peak_rss_mib": _stats([r["restore"]["peak_rss_kb"] / 1024 for r in rs]),
            "restore_extra_peak_mib": _stats(extra),
            "restore_retained_mib": _stats([(r["restore"]["rss_after_kb"]
                                             - r["restore"]["baseline_rss_kb"]) / 1024
                                            for r in rs]),
            "save_extra_peak_mib": _stats([(r["save"]["peak_rss_kb"]
                                            - r["save"]["baseline_rss_kb"]) / 1024 for r in rs]),
            "import_s": _stats([r["import_s"] for r in rs]),
            "import_meta_graph_s": _stats([r["import_meta_graph_s"] for r in rs]),
            "other_processes_cpu_cores_restore": _stats(
                [r["restore"]["other_processes_cpu_cores"] or 0.0 for r in rs]),
            "other_processes_cpu_cores_save": _stats(
                [r["save"]["other_processes_cpu_cores"] or 0.0 for r in rs]),
        }
    return out


def write_markdown(path, result):
    s = result["summary"]
    info = result["machine"]
    ck = result["checkpoint"]
    mb = ck["bytes"] / MIB
    largest = ck["largest_tensor_bytes"] / MIB
    goal_mem = mb + largest
    lines = ["# Checkpoint restore and save: mgrt against TensorFlow", "",
             f"Written by `bench/bench_checkpoint.py` on {result['date']}: {info['cpu']} "
             f"({info['cores']} cores), Python {info['python']}, numpy {info['numpy']}, "
             f"TensorFlow {info['tensorflow'] or '— (not run)'}, "
             f"google-crc32c {info['google_crc32c_implementation']}; mgrt commit "
             f"{str(info['mgrt_commit'])[:10]}"
             f"{' + uncommitted changes' if info['mgrt_uncommitted_changes'] else ''}; "
             f"{result['repeats']} repeats (each a fresh process per system, the order "
             f"alternating), medians (min–max).", "",
             f"Checkpoint: {ck['variables']} variables, {ck['bytes']:,} bytes "
             f"(**{mb:.1f} MiB**, one data shard), largest tensor {ck['largest_tensor']} "
             f"(**{largest:.1f} MiB**); dtypes {', '.join(ck['dtypes'])}. Restores read a "
             "warm page cache (the files are read once before every worker); saves go to the "
             "same file system, `os.sync()` between workers. MiB = 2^20 bytes.", ""]
    has_tf = "tf" in s

    def cell(d, key, fmt="{:.0f}"):
        x = d[key]
        return f"{fmt.format(x['median'])} ({fmt.format(x['min'])}–{fmt.format(x['max'])})"

    lines += ["| | " + " | ".join(k for k in ("mgrt", "TF") if k == "mgrt" or has_tf)
              + (" | ratio mgrt/TF |" if has_tf else " |"),
              "|---|" + "---:|" * (1 + has_tf) + ("---:|" if has_tf else "")]
    rows = [("restore, MiB/s", "restore_mib_s", True),
            ("save, MiB/s (as each system saves: mgrt fsyncs, TF does not)", "save_mib_s", True),
            ("save + fsync of the files, MiB/s (durable)", "save_durable_mib_s", True),
            ("restore, MiB per CPU-second of the process", "restore_mib_per_cpu_s", True),
            ("save, MiB per CPU-second of the process", "save_mib_per_cpu_s", True),
            ("restore, s", "restore_s", None),
            ("restore CPU, s", "restore_cpu_s", None),
            ("restore CPU in the kernel (page zeroing, copies from the page cache), s",
             "restore_sys_s", None),
            ("save, s", "save_s", None),
            ("restore: baseline RSS, MiB", "restore_baseline_rss_mib", None),
            ("restore: peak RSS, MiB", "restore_peak_rss_mib", None),
            ("restore: **extra peak** (peak − baseline), MiB", "restore_extra_peak_mib", False),
            ("restore: retained (RSS after − baseline), MiB", "restore_retained_mib", None),
            ("save: extra peak, MiB", "save_extra_peak_mib", None),
            ("other processes' CPU during the restore, cores", "other_processes_cpu_cores_restore",
             None),
            ("other processes' CPU during the save, cores", "other_processes_cpu_cores_save",
             None)]
    for label, key, higher_better in rows:
        fmt = "{:.2f}" if (key.endswith("_s") and "mib" not in key) or "cores" in key \
            else "{:.0f}"
        row = f"| {label} | {cell(s['mgrt'], key, fmt)} |"
        if has_tf:
            row += f" {cell(s['tf'], key, fmt)} |"
            ratio = s["mgrt"][key]["median"] / s["tf"][key]["median"] \
                if s["tf"][key]["median"] else float("nan")
            row += f" {ratio:.2f} |" if higher_better is not None else " |"
        lines.append(row)
    lines.append("")
    m = s["mgrt"]
    ok_mem = m["restore_extra_peak_mib"]["max"] <= goal_mem
    goals = [f"- mgrt's extra peak during restore ≤ checkpoint + largest tensor "
             f"({mb:.0f} + {largest:.0f} = {goal_mem:.0f} MiB): "
             f"max {m['restore_extra_peak_mib']['max']:.0f} MiB, "
             f"{'✓' if ok_mem else '✗'}"]
    if has_tf:
        for label, key in (("restore", "restore_mib_s"), ("save (durable: both fsynced)",
                                                          "save_durable_mib_s"),
                           ("save (as each saves)", "save_mib_s")):
            r = m[key]["median"] / s["tf"][key]["median"]
            goals.append(f"- mgrt {label} throughput ≥ TensorFlow's: ratio {r:.2f} "
                         f"{'✓' if r >= 1 else '✗'}")
    lines += ["Goals:", ""] + goals + [""]
    chk = result["checks"]
    lines += ["Checks: " + ("all passed" if chk["ok"] else "**FAILED**") + " — "
              + "; ".join(chk["notes"]) + ".", ""]
    lines += ["How: each worker process imports its runtime, `import_meta_graph(meta)` into a "
              "fresh graph, opens a session and runs it once on the Saver's filename constant "
              "(the session's one-time setup; no initializer runs: no variable buffers in "
              "either), resets its peak RSS (`/proc/self/clear_refs`), reads `VmRSS` (the "
              "baseline), runs `saver.restore(sess, prefix)` (timed) and reads `VmHWM` (the "
              "peak); then `saver.save(sess, new_prefix, write_meta_graph=False)` (timed), "
              "then fsyncs the files it wrote (timed apart: TensorFlow does not fsync a "
              "checkpoint, mgrt fsyncs before it renames the files to their final names). "
              "Before each worker the benchmark waits (up to --wait-quiet seconds) for a "
              "second in which other processes use < 0.5 cores; the rows on other processes' "
              "CPU say how quiet the machine was during the timed calls (the CPU-second rows "
              "are the steadier comparison on a busy machine).", ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


# --- main -----------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=512,
                    help="checkpoint size in MiB (at least; default 512)")
    ap.add_argument("--repeats", type=int, default=5, help="workers per system (default 5)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--no-tf", action="store_true", help="time mgrt only, even if TF is there")
    ap.add_argument("--wait-quiet", type=float, default=10.0,
                    help="before each worker, wait up to S seconds for a second in which "
                         "other processes use < 0.5 cores (default 10; 0: no wait)")
    ap.add_argument("--tmp", default=None, help="folder for the checkpoints (default: a "
                    "temporary folder in $TMPDIR)")
    ap.add_argument("--worker", nargs=2, metavar=("SYSTEM", "TASK_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], json.loads(args.worker[1]))
        return 0

    import numpy as np  # noqa: F401 (machine_info)

    tf = None
    if not args.no_tf:
        try:
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            tf.compat.v1.disable_v2_behavior()
        except ImportError:
            tf = None
    spec = model_spec(args.size_mb)
    cached_meta = os.path.join(MODELS_DIR, f"checkpoint_{args.size_mb}mb.meta")
    tmp = tempfile.mkdtemp(prefix="mgrt_bench_ckpt_", dir=args.tmp)
    started = time.perf_counter()
    try:
        prefix = os.path.join(tmp, "ckpt", "model.ckpt")
        t0 = time.perf_counter()
        if tf is not None:
            meta = build_with_tf(tf, spec, prefix)
            os.makedirs(MODELS_DIR, exist_ok=True)
            shutil.copyfile(meta, cached_meta)
            built_by = "TensorFlow"
        else:
            if not os.path.exists(cached_meta):
                print(f"No TensorFlow and no cached MetaGraph {cached_meta!r}: run once with "
                      "TensorFlow (or another --size-mb).", file=sys.stderr)
                return 2
            meta = build_with_mgrt(cached_meta, prefix)
            built_by = "mgrt (--no-tf)"
        build_s = time.perf_counter() - t0
        os.sync()
        nbytes = checkpoint_bytes(prefix)
        sizes = {}
        for name, shape, dt in spec:
            n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
            sizes[name] = n
        largest = max(sizes, key=sizes.get)
        print(f"checkpoint: {len(spec)} variables, {nbytes / MIB:.1f} MiB, largest "
              f"{largest} {sizes[largest] / MIB:.1f} MiB (built by {built_by} in "
              f"{build_s:.1f} s)", flush=True)
        info = machine_info(tf.__version__ if tf is not None else None)
        systems = ["tf", "mgrt"] if tf is not None else ["mgrt"]
        runs = []
        kept = {}
        envs = {s_: worker_env(s_, os.path.join(tmp, "pycache")) for s_ in systems}
        for system in systems:  # warm-up: bytecode caches, the libraries in the page cache
            save_prefix = os.path.join(tmp, f"warmup_{system}", "model.ckpt")
            warm_cache(prefix)
            res = run_worker(system, {"meta": meta, "prefix": prefix, "save_prefix": save_prefix,
                                      "check": list(CHECK_VARS)}, envs[system])
            shutil.rmtree(os.path.dirname(save_prefix), ignore_errors=True)
            os.sync()
            print(f"  warm-up {system:>4}: restore {res['restore']['s']:.3f} s, save "
                  f"{res['save']['s']:.3f} s (not counted)", flush=True)
        for r in range(args.repeats):
            order = systems if r % 2 == 0 else systems[::-1]
            for system in order:
                save_prefix = os.path.join(tmp, f"save_{system}_{r}", "model.ckpt")
                task = {"meta": meta, "prefix": prefix, "save_prefix": save_prefix,
                        "check": list(CHECK_VARS)}
                warm_cache(prefix)
                waited = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
                res = run_worker(system, task, envs[system])
                res["repeat"] = r
                res["waited_for_quiet"] = waited
                runs.append(res)
                if system not in kept:
                    kept[system] = save_prefix
                else:
                    shutil.rmtree(os.path.dirname(save_prefix), ignore_errors=True)
                os.sync()
                mb = nbytes / MIB
                extra = (res['restore']['peak_rss_kb'] - res['restore']['baseline_rss_kb']) / 1024
                print(f"  repeat {r} {system:>4}: restore {res['restore']['s']:.3f} s "
                      f"({mb / res['restore']['s']:.0f} MiB/s), extra peak {extra:.0f}"
                      f" MiB; save {res['save']['s']:.3f} s ({mb / res['save']['s']:.0f} MiB/s)"
                      f" + fsync {res['save']['fsync_after_s']:.3f} s; other processes "
                      f"{res['restore']['other_processes_cpu_cores']} / "
                      f"{res['save']['other_processes_cpu_cores']} cores", flush=True)
        # -- checks
        notes, ok = [], True
        ref = runs[0]["digests"]
        same = all(r["digests"] == ref for r in runs)
        ok &= same
        notes.append(f"the {len(CHECK_VARS)} checked variables restored identically by "
                     f"{' and '.join(systems)} in every repeat: {'yes' if same else 'NO'}")
        import mgrt.compat.v1 as mtf

        readers = {"mgrt": lambda p, n: mtf.train.load_variable(p, n)}
        if tf is not None:
            readers["tf"] = lambda p, n: tf.train.load_variable(p, n)
        for saved_by, sp in kept.items():
            for read_by, load in readers.items():
                if saved_by == read_by and len(readers) > 1:
                    continue
                bad = [n for n in CHECK_VARS if digest(load(sp, n)) != ref[n]]
                ok &= not bad
                notes.append(f"{read_by} reads back the checkpoint {saved_by} saved: "
                             + ("equal" if not bad else f"DIFFERENT ({', '.join(bad)})"))
        if "tf" in kept and "mgrt" in kept:
            import filecmp

            same_files = all(filecmp.cmp(a, b, shallow=False) for a, b in zip(
                checkpoint_files(kept["tf"]), checkpoint_files(kept["mgrt"])))
            notes.append("mgrt's saved files (.index, .data) byte-identical to TensorFlow's: "
                         + ("yes" if same_files else "no"))
        result = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": info, "repeats": args.repeats, "size_mb_arg": args.size_mb,
            "checkpoint": {"bytes": nbytes, "variables": len(spec), "built_by": built_by,
                           "build_s": round(build_s, 2),
                           "largest_tensor": largest, "largest_tensor_bytes": sizes[largest],
                           "dtypes": sorted({dt for _, _, dt in spec}),
                           "spec": [[n, s, d] for n, s, d in spec]},
            "method": {
                "peak": "VmHWM after the restore, the peak reset by /proc/self/clear_refs=5 "
                        "right before it; baseline: VmRSS then (after imports, "
                        "import_meta_graph and the session; no variable buffers)",
                "page_cache": "checkpoint files read once before every worker (warm cache); "
                              "os.sync() after every worker",
                "save": "saver.save(..., write_meta_graph=False); fsync_after_s: fsync of the "
                        "written files afterwards (TF does not fsync; mgrt already did)",
            },
            "runs": runs,
            "summary": summarize(runs, nbytes),
            "checks": {"ok": bool(ok), "notes": notes},
            "total_s": round(time.perf_counter() - started, 1),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    host = socket.gethostname().split(".")[0] or "host"
    jpath = os.path.join(args.out, f"checkpoint_{host}_{stamp}.json")
    with open(jpath, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    mdpath = os.path.join(args.out, "checkpoint_latest.md")
    write_markdown(mdpath, result)
    with open(mdpath, encoding="utf-8") as f:
        print(f.read())
    print(f"wrote {jpath} and {mdpath} ({result['total_s']} s)")
    return 0 if result["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
